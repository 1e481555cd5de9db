//! The `holdfast` binary as a user runs it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn holdfast() -> Command {
    Command::new(env!("CARGO_BIN_EXE_holdfast"))
}

/// Spawns a `serve` command (stdout piped here) and returns it with the
/// address it printed.
fn started(mut cmd: Command) -> (std::process::Child, String) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let first = BufReader::new(child.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    let addr = first.rsplit("http://").next().unwrap().to_string();
    (child, addr)
}

/// Spawns a `serve --log-format json` command (stdout and stderr piped) and
/// returns it with the address its start record carries (on stderr, with
/// the other log lines) and the rest of its stderr.
fn started_json(mut cmd: Command) -> (std::process::Child, String, BufReader<std::process::ChildStderr>) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let addr = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "no start record before stderr closed");
        let v: serde_json::Value = serde_json::from_str(&line).expect("one JSON object per line");
        if let Some(addr) = v["fields"]["addr"].as_str() {
            break addr.to_string();
        }
    };
    (child, addr, stderr)
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("holdfast-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("holdfast.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn config_check_names_the_line_and_the_key() {
    let path = temp_file("bad", "listen = \"127.0.0.1:9000\"\nhistory_size = 10\npign_interval = \"5s\"\n");
    let out = holdfast().args(["config", "check"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3") && err.contains("pign_interval"), "{err}");

    let path = temp_file("badvalue", "history_ttl = \"forever\"\n");
    let out = holdfast().args(["config", "check"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 1") && err.contains("history_ttl"), "{err}");

    let path = temp_file("good", "ping_interval = \"20s\"\nhistory_size = 500\n");
    let out = holdfast().args(["config", "check"]).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The sample a new user starts from checks clean.
    let out = holdfast().args(["config", "sample"]).output().unwrap();
    let sample = String::from_utf8(out.stdout).unwrap();
    assert!(sample.contains("# listen = \"127.0.0.1:8080\""), "{sample}");
    let out = holdfast().args(["config", "check"]).arg(temp_file("sample", &sample)).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn serve_prints_the_url_and_a_generated_key() {
    let mut child = holdfast()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("HOLDFAST_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let rest: Vec<String> = lines.by_ref().take(4).map(|l| l.unwrap()).collect();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(first.starts_with("holdfast listening on http://127.0.0.1:"), "{first}");
    let key_line = rest.iter().find(|l| l.contains("API key")).expect("an API key line");
    assert!(key_line.contains("hf_") && key_line.contains("generated"), "{key_line}");
    assert!(rest.iter().any(|l| l.contains("curl")), "says what to try next: {rest:?}");
}

#[test]
fn bad_settings_fail_with_a_message() {
    let out = holdfast().args(["serve", "--listen", "127.0.0.1:0", "--ping-interval", "soon"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("25s"));
    let out = holdfast().args(["serve", "--listen", "127.0.0.1:0", "--broker", "kafka://x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("redis://HOST:PORT/DB"));
}

#[test]
fn sigterm_drains_clients_and_exits_zero_within_the_window() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let mut cmd = holdfast();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--api-key", "k", "--drain-window", "1s"]).stderr(Stdio::null());
    let (mut child, addr) = started(cmd);
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 256];
    let n = s.read(&mut head).unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 101"));
    let started = Instant::now();
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let text = String::from_utf8_lossy(&rest);
    assert!(text.contains(r#""op":"disconnect","code":1001"#), "{text}");
    // The close frame: opcode 0x88, then the code 1001 (0x03e9).
    assert!(rest.windows(2).any(|w| w == [0x03, 0xe9]), "close frame with 1001");
    let exit = child.wait().unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
}

/// At the open-files cap `accept` fails with EMFILE: the server logs it
/// once, does not spin, and serves again as soon as descriptors free up.
#[test]
fn out_of_file_descriptors_is_survived() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "ulimit -n 48 && exec {} serve --listen 127.0.0.1:0 --api-key k --max-connections 1000",
            env!("CARGO_BIN_EXE_holdfast")
        ))
        .stderr(Stdio::piped());
    let (mut child, addr) = started(cmd);
    // Hold more connections than the process has descriptors.
    let held: Vec<std::net::TcpStream> = (0..80).filter_map(|_| std::net::TcpStream::connect(&addr).ok()).collect();
    assert!(held.len() > 48);
    std::thread::sleep(Duration::from_millis(500));
    let cpu_before = cpu_ticks(child.id());
    std::thread::sleep(Duration::from_secs(1));
    let cpu = cpu_ticks(child.id()) - cpu_before;
    assert!(cpu < 50, "the accept loop spins at the cap: {cpu} ticks in 1 s");
    drop(held);
    // Served again once descriptors are free.
    let deadline = Instant::now() + Duration::from_secs(5);
    let ok = loop {
        if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            if out.starts_with("HTTP/1.1 200") {
                break true;
            }
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    child.kill().unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    child.wait().unwrap();
    assert!(ok, "the server answers again after the descriptors free up");
    assert_eq!(stderr.matches("out of file descriptors").count(), 1, "logged once:\n{stderr}");
}

/// utime + stime of a process, in clock ticks (Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn json_logs_carry_the_cause_of_a_refused_handshake() {
    use std::io::{Read, Write};
    let mut cmd = holdfast();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--api-key", "k", "--log-format", "json"]);
    let (mut child, addr, mut child_stderr) = started_json(cmd);
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Forwarded-For: 10.0.0.9\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 426"), "{out}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    child.kill().unwrap();
    let mut stderr = String::new();
    child_stderr.read_to_string(&mut stderr).unwrap();
    child.wait().unwrap();
    let line = stderr.lines().find(|l| l.contains("refused WebSocket handshake")).expect("a log line");
    let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
    assert_eq!(v["level"], "WARN");
    assert_eq!(v["fields"]["cause"], "proxy_dropped_upgrade");
}

/// Text logs written to a pipe or file carry no colour codes; and a request
/// that came through a proxy holdfast does not trust is named once, with
/// the setting that fixes it.
#[test]
fn text_logs_to_a_pipe_are_plain_and_name_an_untrusted_proxy() {
    use std::io::{Read, Write};
    let mut cmd = holdfast();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--api-key", "k"]).stderr(Stdio::piped());
    let (mut child, addr) = started(cmd);
    for _ in 0..2 {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Forwarded-For: 10.0.0.9\r\n\r\n").unwrap();
        s.read_to_string(&mut String::new()).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    child.kill().unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    child.wait().unwrap();
    assert!(!stderr.contains('\x1b'), "no ANSI escapes in a pipe: {stderr:?}");
    let named = stderr.lines().filter(|l| l.contains("not in trusted_proxies")).collect::<Vec<_>>();
    assert_eq!(named.len(), 1, "once: {stderr}");
    assert!(named[0].contains("--trusted-proxies 127.0.0.1"), "{}", named[0]);
}

/// With `--log-format json` every line the process writes is JSON, the start
/// banner included: one record with the addresses, nothing on stdout.
#[test]
fn json_logs_are_all_json_banner_included() {
    use std::io::Read;
    use std::time::Duration;
    let mut child = holdfast()
        .args(["serve", "--log-format", "json", "--listen", "127.0.0.1:0", "--api-key", "k"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let collect = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            pipe.read_to_string(&mut text).unwrap();
            text
        })
    };
    let stdout = collect(Box::new(child.stdout.take().unwrap()));
    let stderr = collect(Box::new(child.stderr.take().unwrap()));
    std::thread::sleep(Duration::from_secs(1));
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    assert!(exit.success(), "exit status {exit:?}; stderr:\n{stderr}");
    let mut records = Vec::new();
    for (stream, text) in [("stdout", &stdout), ("stderr", &stderr)] {
        for line in text.lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{stream} line is not JSON ({e}): {line:?}"));
            records.push(v);
        }
    }
    let banner = records.iter().find(|v| v["fields"]["addr"].is_string()).expect("a record with the listen address");
    let addr = banner["fields"]["addr"].as_str().unwrap();
    let port: u16 = addr.strip_prefix("127.0.0.1:").expect("the loopback address").parse().unwrap();
    assert_ne!(port, 0, "the bound port, not the requested one");
    assert_eq!(banner["level"], "INFO");
    assert_eq!(banner["fields"]["message"], format!("holdfast listening on http://{addr}"));
    assert_eq!(banner["fields"]["ws_url"], format!("ws://{addr}/ws"));
    assert_eq!(banner["fields"]["demo_url"], format!("http://{addr}/"));
    assert_eq!(banner["fields"]["api_key_generated"], false);
    assert!(banner["fields"].get("api_key").is_none(), "a key from the settings is not logged: {banner}");
    assert!(records.iter().any(|v| v["fields"]["message"] == "drained; bye"), "the shutdown is logged too");
}

#[test]
fn several_processes_share_a_port_with_reuse_port() {
    let first = common::serve(0, &["--reuse-port", "true"]);
    let second = common::serve(first.1, &["--reuse-port", "true"]);
    assert_eq!(first.1, second.1, "both listen on the same port");
    let out = holdfast().args(["serve", "--listen", &format!("127.0.0.1:{}", first.1)]).output().unwrap();
    assert!(!out.status.success(), "without --reuse-port the port is taken");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
}
