//! The doctor against a corpus of real failures: a real holdfast server,
//! real nginx in front of it with the configs the seed articles warn about,
//! TLS with certificates made at test time, and small scripted servers for
//! what no correct server does (black holes, odd closes). For each scenario
//! the doctor must name the right cause and a fix that names the setting.
//!
//! Needs nginx: `apt-get install -y nginx-light` (scripts/test does it).

mod common;

use common::{free_port, wait_for_port};

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

fn holdfast() -> Command {
    Command::new(env!("CARGO_BIN_EXE_holdfast"))
}

/// Accepts connections and never answers.
fn black_hole() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    port
}

/// Completes the WebSocket handshake, then runs `after` on the socket.
fn scripted_ws(after: fn(&mut TcpStream)) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let text = String::from_utf8_lossy(&head);
            let key = text.lines().find_map(|l| l.strip_prefix("Sec-WebSocket-Key: ")).unwrap_or("").trim().to_string();
            let _ = write!(
                s,
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                holdfast_websocket::accept_key(key.as_bytes())
            );
            after(&mut s);
        }
    });
    port
}

struct Certs {
    dir: PathBuf,
}

impl Certs {
    /// A CA, and leaf certificates signed by it: good, wrong name, expired;
    /// plus a self-signed one.
    fn make(dir: &Path) -> Certs {
        use rcgen::{date_time_ymd, BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        std::fs::create_dir_all(dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
        let leaf = |name: &str, names: Vec<String>, expired: bool| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            if expired {
                params.not_before = date_time_ymd(2020, 1, 1);
                params.not_after = date_time_ymd(2021, 1, 1);
            }
            let cert = params.signed_by(&key, &issuer).unwrap();
            std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
        };
        leaf("good", vec!["localhost".into(), "127.0.0.1".into()], false);
        leaf("wrongname", vec!["wrong.example".into()], false);
        leaf("expired", vec!["localhost".into(), "127.0.0.1".into()], true);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.join("selfsigned.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("selfsigned.key"), key.serialize_pem()).unwrap();
        Certs { dir: dir.to_path_buf() }
    }

    fn pair(&self, name: &str) -> String {
        format!(
            "ssl_certificate {}; ssl_certificate_key {};",
            self.dir.join(format!("{name}.pem")).display(),
            self.dir.join(format!("{name}.key")).display()
        )
    }
}

struct Scenario {
    name: &'static str,
    url: String,
    args: Vec<String>,
    cause: &'static str,
    /// Words the fix (or summary) must contain.
    mentions: &'static [&'static str],
}

#[test]
fn the_doctor_names_the_cause_of_each_real_failure() {
    let dir = std::env::temp_dir().join(format!("holdfast-doctor-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let certs = Certs::make(&dir.join("certs"));

    let server = common::serve(0, &["--ping-interval", "30s"]);
    let hf = server.1;
    let down = free_port();
    let hole = black_hole();
    let closes = scripted_ws(|s| {
        // A close frame with 1008 "policy", then the TCP close.
        let _ = s.write_all(&[0x88, 0x08, 0x03, 0xf0, b'p', b'o', b'l', b'i', b'c', b'y']);
        thread::sleep(Duration::from_millis(200));
    });
    let drops = scripted_ws(|s| {
        let _ = s.shutdown(std::net::Shutdown::Both);
    });

    // One nginx, one port per configuration.
    let names = [
        "good",
        "noupgrade",
        "http10",
        "shortread",
        "redirect",
        "spa",
        "down",
        "slow",
        "tls_self",
        "tls_wrong",
        "tls_expired",
        "tls_good",
        "origin",
        "auth",
        "ratelimit",
    ];
    let ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
    let port = |n: &str| ports[names.iter().position(|x| *x == n).unwrap()];
    let upgrade_headers = "proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection $connection_upgrade;";
    let servers = [
        ("good", format!("location /ws {{ proxy_pass http://127.0.0.1:{hf}; {upgrade_headers} }}"), ""),
        ("noupgrade", format!("location /ws {{ proxy_pass http://127.0.0.1:{hf}; proxy_http_version 1.1; }}"), ""),
        ("http10", format!("location /ws {{ proxy_pass http://127.0.0.1:{hf}; }}"), ""),
        ("shortread", format!("location /ws {{ proxy_pass http://127.0.0.1:{hf}; {upgrade_headers} proxy_read_timeout 2s; }}"), ""),
        ("redirect", "location = /ws { return 301 /ws/; }".to_string(), ""),
        ("spa", "location / { default_type text/html; return 200 '<!doctype html><div id=app></div>'; }".to_string(), ""),
        ("down", format!("location /ws {{ proxy_pass http://127.0.0.1:{down}; {upgrade_headers} }}"), ""),
        ("slow", format!("location /ws {{ proxy_pass http://127.0.0.1:{hole}; {upgrade_headers} proxy_read_timeout 1s; }}"), ""),
        ("tls_self", format!("location /ws {{ proxy_pass http://127.0.0.1:{hf}; {upgrade_headers} }}"), "selfsigned"),
        ("tls_wrong", format!("location /ws {{ proxy_pass http://127.0.0.1:{hf}; {upgrade_headers} }}"), "wrongname"),
        ("tls_expired", format!("location /ws {{ proxy_pass http://127.0.0.1:{hf}; {upgrade_headers} }}"), "expired"),
        ("tls_good", format!("location /ws {{ proxy_pass http://127.0.0.1:{hf}; {upgrade_headers} }}"), "good"),
        (
            "origin",
            format!(
                "location /ws {{ if ($http_origin = 'https://evil.example') {{ return 403 'Forbidden'; }} proxy_pass http://127.0.0.1:{hf}; {upgrade_headers} }}"
            ),
            "",
        ),
        ("auth", "location /ws { return 401 'Unauthorized'; }".to_string(), ""),
        ("ratelimit", "location /ws { add_header Retry-After 5 always; return 429 'slow down'; }".to_string(), ""),
    ];
    let mut conf = "  map $http_upgrade $connection_upgrade { default upgrade; '' close; }\n".to_string();
    for (name, location, cert) in &servers {
        let listen = if cert.is_empty() {
            format!("listen 127.0.0.1:{};", port(name))
        } else {
            format!("listen 127.0.0.1:{} ssl; {}", port(name), certs.pair(cert))
        };
        conf.push_str(&format!("  server {{ {listen} server_name localhost; {location} }}\n"));
    }
    let nginx = common::nginx(&dir, &conf);
    for p in &ports {
        wait_for_port(*p);
    }

    let ca = dir.join("certs/ca.pem").display().to_string();
    let s = |name, url: String, args: &[&str], cause, mentions| Scenario {
        name,
        url,
        args: args.iter().map(|a| a.to_string()).collect(),
        cause,
        mentions,
    };
    let ng = |n: &str, path: &str| format!("ws://127.0.0.1:{}{path}", port(n));
    let scenarios = vec![
        s("holdfast /ws, direct", format!("ws://127.0.0.1:{hf}/ws"), &[], "healthy", &["holdfast protocol"]),
        s("holdfast /echo, direct", format!("ws://127.0.0.1:{hf}/echo"), &[], "healthy", &["echoes"]),
        s("nginx configured right", ng("good", "/ws"), &[], "healthy", &[]),
        s(
            "nginx without Upgrade/Connection headers",
            ng("noupgrade", "/ws"),
            &[],
            "proxy_strips_upgrade",
            &["proxy_set_header Upgrade"],
        ),
        s(
            "nginx bare proxy_pass (HTTP/1.0 upstream)",
            ng("http10", "/ws"),
            &[],
            "proxy_http10_upstream",
            &["proxy_http_version 1.1"],
        ),
        s(
            "nginx proxy_read_timeout 2s, client silent",
            ng("shortread", "/ws"),
            &["--idle", "5s"],
            "idle_timeout",
            &["proxy_read_timeout"],
        ),
        s("nginx redirects /ws to /ws/", ng("redirect", "/ws"), &[], "redirect", &["/ws/"]),
        s("nginx: no location for the path", ng("good", "/socket"), &[], "path_not_found", &["nginx answered"]),
        s("SPA fallback serves HTML", ng("spa", "/ws"), &[], "not_a_websocket_endpoint", &["text/html"]),
        s("backend down behind nginx", ng("down", "/ws"), &[], "upstream_unavailable", &["proxy_pass"]),
        s("backend never answers behind nginx", ng("slow", "/ws"), &[], "upstream_timeout", &["backend"]),
        s(
            "self-signed certificate",
            format!("wss://localhost:{}/ws", port("tls_self")),
            &[],
            "tls_untrusted_certificate",
            &["--ca-file"],
        ),
        s(
            "certificate for another name",
            format!("wss://localhost:{}/ws", port("tls_wrong")),
            &["--ca-file", &ca],
            "tls_name_mismatch",
            &["subjectAltName"],
        ),
        s(
            "expired certificate",
            format!("wss://localhost:{}/ws", port("tls_expired")),
            &["--ca-file", &ca],
            "tls_expired",
            &["Renew"],
        ),
        s(
            "valid TLS (private CA passed)",
            format!("wss://localhost:{}/ws", port("tls_good")),
            &["--ca-file", &ca],
            "healthy",
            &[],
        ),
        s("ws:// to the TLS port", ng("tls_good", "/ws"), &[], "plain_on_tls_port", &["wss://"]),
        s("wss:// to a plain port", format!("wss://127.0.0.1:{hf}/ws"), &[], "tls_on_plain_port", &["ws://"]),
        s(
            "ws:// from an https page",
            format!("ws://127.0.0.1:{hf}/ws"),
            &["--page-origin", "https://app.example"],
            "mixed_content",
            &["wss://"],
        ),
        s("Origin refused", ng("origin", "/ws"), &["--origin", "https://evil.example"], "origin_rejected", &["origin"]),
        s("credentials required", ng("auth", "/ws"), &[], "auth_rejected", &["--token"]),
        s("rate limited", ng("ratelimit", "/ws"), &[], "rate_limited", &["Retry-After"]),
        s(
            "unknown subprotocol offered",
            format!("ws://127.0.0.1:{hf}/ws"),
            &["--subprotocol", "mqtt"],
            "subprotocol_mismatch",
            &["holdfast.v1.json"],
        ),
        s("nothing listening", format!("ws://127.0.0.1:{down}/ws"), &[], "connection_refused", &["Start the server"]),
        s(
            "TCP accepted, no HTTP answer",
            format!("ws://127.0.0.1:{hole}/ws"),
            &["--timeout", "1s"],
            "handshake_timeout",
            &["backend"],
        ),
        s("server closes with 1008", format!("ws://127.0.0.1:{closes}/ws"), &[], "server_closed", &["1008"]),
        s(
            "subprotocol checked only after the upgrade, then 1008",
            format!("ws://127.0.0.1:{closes}/ws"),
            &["--subprotocol", "chat.v2"],
            "subprotocol_mismatch",
            &["chat.v2", "1008", "no Sec-WebSocket-Protocol", "HTTP 400"],
        ),
        s("server drops after the handshake", format!("ws://127.0.0.1:{drops}/ws"), &[], "abnormal_closure", &["1006"]),
        s("host does not resolve", "ws://nonexistent.invalid/ws".into(), &[], "dns_failure", &["DNS"]),
        s("not a WebSocket URL", "ftp://127.0.0.1/ws".into(), &[], "invalid_url", &["ws://"]),
    ];

    let mut failures = Vec::new();
    let mut table = String::from("| scenario | cause | verdict (first sentence) |\n|---|---|---|\n");
    for sc in &scenarios {
        let out = holdfast().arg("doctor").arg(&sc.url).args(&sc.args).arg("--json").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let report: serde_json::Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{}: not JSON ({e}): {text}", sc.name));
                continue;
            }
        };
        let cause = report["verdict"]["cause"].as_str().unwrap_or("?");
        let advice = format!("{} {}", report["verdict"]["summary"], report["verdict"]["fix"]);
        let healthy = report["healthy"].as_bool().unwrap_or(false);
        let want_exit = if sc.cause == "healthy" { 0 } else { 1 };
        if cause != sc.cause {
            failures.push(format!("{}: expected {}, got {cause}: {}", sc.name, sc.cause, report["verdict"]["summary"]));
        } else if out.status.code() != Some(want_exit) || healthy != (want_exit == 0) {
            failures.push(format!("{}: exit {:?}, healthy {healthy}", sc.name, out.status.code()));
        } else if let Some(m) = sc.mentions.iter().find(|m| !advice.to_lowercase().contains(&m.to_lowercase())) {
            failures.push(format!("{}: the verdict does not mention {m:?}: {advice}", sc.name));
        }
        // Through nginx and TLS too, a healthy holdfast agrees to compression.
        let compression = stage_detail(&report, "compression");
        if ["holdfast /ws, direct", "nginx configured right", "valid TLS (private CA passed)"].contains(&sc.name)
            && !compression.starts_with("permessage-deflate negotiated (permessage-deflate; server_no_context_takeover")
        {
            failures.push(format!("{}: compression stage says {compression:?}", sc.name));
        }
        let summary = report["verdict"]["summary"].as_str().unwrap_or("");
        let first = summary.split(". ").next().unwrap_or(summary).replace('|', "\\|");
        table.push_str(&format!("| {} | `{cause}` | {first} |\n", sc.name));
    }
    println!("{table}");
    if std::env::var_os("HOLDFAST_BROWSER_TABLE").is_some() {
        // Docs only (not part of the suite): what Chromium shows for the same URLs.
        let page = format!("http://127.0.0.1:{hf}/healthz");
        let cases: Vec<serde_json::Value> = scenarios
            .iter()
            .map(|sc| {
                let mixed = sc.args.iter().any(|a| a == "--page-origin");
                let protocols = sc.args.iter().position(|a| a == "--subprotocol").map(|i| sc.args[i + 1].clone());
                serde_json::json!({
                    "name": sc.name,
                    "page": if mixed { format!("https://localhost:{}/page", port("tls_good")) } else { page.clone() },
                    "ignoreHttpsErrors": mixed,
                    "url": sc.url,
                    "protocols": protocols,
                    "hold": sc.args.iter().any(|a| a == "--idle"),
                })
            })
            .collect();
        let file = dir.join("cases.json");
        std::fs::write(&file, serde_json::to_string(&cases).unwrap()).unwrap();
        let out = Command::new("node")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/browser-ws.cjs"))
            .arg(&file)
            .output()
            .unwrap();
        println!("{}", String::from_utf8_lossy(&out.stdout));
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    }
    drop(nginx);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{} of {} scenarios wrong:\n{}", failures.len(), scenarios.len(), failures.join("\n"));
}

fn stage_detail(report: &serde_json::Value, name: &str) -> String {
    let stages = report["stages"].as_array().cloned().unwrap_or_default();
    let stage = stages.iter().find(|s| s["name"] == name);
    stage.and_then(|s| s["detail"].as_str()).unwrap_or("(no such stage)").to_string()
}

#[test]
fn the_doctor_reports_compression_off_as_a_fact_not_a_failure() {
    let server = common::serve(0, &["--compression", "off"]);
    let out = holdfast().arg("doctor").arg(format!("ws://127.0.0.1:{}/ws", server.1)).arg("--json").output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "still healthy: {report}");
    assert!(stage_detail(&report, "compression").starts_with("permessage-deflate not negotiated"), "{report}");
}

/// Runs `holdfast doctor URL --json ARGS`; the exit code and the report.
fn doctor(url: &str, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let out = holdfast().arg("doctor").arg(url).arg("--json").args(args).output().unwrap();
    let report =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code(), report)
}

/// A holdfast server that opens the WebSocket but refuses the session is
/// not healthy: "my users cannot connect" is most often exactly this. The
/// doctor names it and exits 1; with what a client would send (a token in
/// `connect`, a session cookie), it is healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_refuses_the_session_is_not_called_healthy() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let secret = "doctor-secret";
    let token = |exp: u64, key: &str| {
        let claims = serde_json::json!({"sub": "u1", "exp": exp});
        encode(&Header::default(), &claims, &EncodingKey::from_secret(key.as_bytes())).unwrap()
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let server = common::serve(0, &["--jwt-secret", secret]);
    let url = format!("ws://127.0.0.1:{}/ws", server.1);
    let cases = [
        (vec![], "auth_rejected", "token_required"),
        (vec!["--token".to_string(), token(now + 600, "forged")], "auth_rejected", "token_invalid"),
        (vec!["--token".to_string(), token(now - 600, secret)], "auth_rejected", "token_expired"),
        (vec!["--token".to_string(), token(now + 600, secret)], "healthy", ""),
    ];
    for (args, cause, code) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (exit, report) = tokio::task::block_in_place(|| doctor(&url, &args));
        assert_eq!(report["verdict"]["cause"], cause, "{args:?}: {report}");
        assert_eq!(exit, Some(if cause == "healthy" { 0 } else { 1 }), "{args:?}");
        assert!(stage_detail(&report, "round_trip").contains(code), "{}", stage_detail(&report, "round_trip"));
    }

    // A connect proxy that decides by the session cookie, then one that is down.
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", backend.local_addr().unwrap());
    let decide = axum::routing::post(|body: axum::Json<serde_json::Value>| async move {
        axum::Json(match body["cookies"]["sid"].as_str() {
            Some("ok") => serde_json::json!({"result": {"user": "u1"}}),
            _ => serde_json::json!({"error": {"code": "refused", "message": "not signed in"}}),
        })
    });
    tokio::spawn(async move { axum::serve(backend, axum::Router::new().route("/connect", decide)).await });
    let proxied = common::serve(0, &["--connect-proxy", &format!("{base}/connect")]);
    let url = format!("ws://127.0.0.1:{}/ws", proxied.1);
    let (exit, report) = tokio::task::block_in_place(|| doctor(&url, &[]));
    assert_eq!((exit, report["verdict"]["cause"].as_str()), (Some(1), Some("auth_rejected")), "{report}");
    assert!(report["verdict"]["summary"].as_str().unwrap().contains("not signed in"), "{report}");
    let (exit, report) = tokio::task::block_in_place(|| doctor(&url, &["--header", "Cookie: sid=ok"]));
    assert_eq!((exit, report["verdict"]["cause"].as_str()), (Some(0), Some("healthy")), "{report}");

    let down = common::serve(0, &["--connect-proxy", &format!("http://127.0.0.1:{}/connect", free_port())]);
    let url = format!("ws://127.0.0.1:{}/ws", down.1);
    let (exit, report) = tokio::task::block_in_place(|| doctor(&url, &[]));
    assert_eq!((exit, report["verdict"]["cause"].as_str()), (Some(1), Some("backend_unavailable")), "{report}");
}

/// Behind a corporate forward proxy the doctor goes the way the
/// environment names, as curl does, and names a proxy that refuses the
/// tunnel (issue 26): an endpoint that works directly is not healthy for
/// anyone behind that proxy.
#[test]
fn the_doctor_goes_through_the_forward_proxy_the_environment_names() {
    let server = common::serve(0, &[]);
    let url = format!("ws://127.0.0.1:{}/ws", server.1);
    let (strict, open) = (free_port(), free_port());
    let _squid = common::squid(&common::scratch("squid"), strict, open);
    let run = |vars: &[(&str, String)], args: &[&str]| {
        let mut cmd = holdfast();
        cmd.arg("doctor").arg(&url).arg("--json").args(args);
        for v in
            ["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"]
        {
            cmd.env_remove(v);
        }
        cmd.envs(vars.iter().map(|(k, v)| (*k, v.as_str())));
        let out = cmd.output().unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.code(), report)
    };
    let strict_url = format!("http://127.0.0.1:{strict}");
    let open_url = format!("http://127.0.0.1:{open}");

    // Squid's default: CONNECT to 443 only. Loopback is not exempt.
    let (exit, r) = run(&[("http_proxy", strict_url.clone())], &[]);
    assert_eq!((exit, r["verdict"]["cause"].as_str()), (Some(1), Some("forward_proxy_blocked")), "{r}");
    assert!(stage_detail(&r, "proxy").contains("403"), "{}", stage_detail(&r, "proxy"));
    let summary = r["verdict"]["summary"].as_str().unwrap();
    assert!(summary.contains("Without the proxy the endpoint works"), "{summary}");
    assert!(r["verdict"]["fix"].as_str().unwrap().contains("443"), "{r}");

    // A proxy that tunnels: healthy, through it.
    let (exit, r) = run(&[("HTTP_PROXY", open_url.clone())], &[]);
    assert_eq!((exit, r["verdict"]["cause"].as_str()), (Some(0), Some("healthy")), "{r}");
    assert!(stage_detail(&r, "proxy").contains("opened a tunnel"), "{r}");
    assert!(stage_detail(&r, "proxy").contains("HTTP_PROXY"), "{r}");

    // all_proxy as the fallback; --proxy over the environment; --no-proxy and no_proxy go direct.
    let (_, r) = run(&[("all_proxy", strict_url.clone())], &[]);
    assert_eq!(r["verdict"]["cause"], "forward_proxy_blocked", "{r}");
    let (_, r) = run(&[("http_proxy", strict_url.clone())], &["--proxy", &open_url]);
    assert_eq!(r["verdict"]["cause"], "healthy", "{r}");
    for (vars, args) in [
        (vec![("http_proxy", strict_url.clone())], vec!["--no-proxy"]),
        (vec![("http_proxy", strict_url.clone()), ("no_proxy", "127.0.0.1".to_string())], vec![]),
    ] {
        let (_, r) = run(&vars, &args);
        assert_eq!(r["verdict"]["cause"], "healthy", "{vars:?} {args:?}: {r}");
        assert!(stage_detail(&r, "proxy").contains("direct"), "{r}");
    }

    // A proxy that is not there.
    let (exit, r) = run(&[("http_proxy", format!("http://127.0.0.1:{}", free_port()))], &[]);
    assert_eq!(exit, Some(1));
    assert!(r["verdict"]["summary"].as_str().unwrap().contains("forward proxy"), "{r}");
}

#[test]
fn usage_errors_exit_2() {
    let out = holdfast().args(["doctor"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = holdfast().args(["doctor", "ws://x/", "--idle", "soon"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn nginx_config_round_trips_through_the_lint() {
    let out = holdfast().args(["nginx", "--upstream", "127.0.0.1:9000", "--path", "/live"]).output().unwrap();
    assert!(out.status.success());
    let config = String::from_utf8(out.stdout).unwrap();
    assert!(config.contains("location = /live") && config.contains("server 127.0.0.1:9000;"));
    let dir = std::env::temp_dir().join(format!("holdfast-nginx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.conf");
    std::fs::write(&good, &config).unwrap();
    let out = holdfast().args(["doctor", "--nginx"]).arg(&good).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let bad = dir.join("bad.conf");
    std::fs::write(&bad, "server {\n  listen 80;\n  location /ws {\n    proxy_pass http://127.0.0.1:9000;\n  }\n}\n")
        .unwrap();
    let out = holdfast().args(["doctor", "--nginx"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("bad.conf:3:") && text.contains("Upgrade $http_upgrade"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Ends a server with SIGTERM (so it stops its own worker processes) and
/// waits for it, when dropped.
struct Term(std::process::Child);

impl Drop for Term {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        for _ in 0..50 {
            if self.0.try_wait().ok().flatten().is_some() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &mut Command) -> Term {
    Term(cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap())
}

/// Caddy running `dir/Caddyfile`, its state kept under `dir`.
fn run_caddy(dir: &Path) -> Term {
    spawn(
        Command::new("caddy")
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(dir.join("Caddyfile"))
            .env("HOME", dir)
            .env("XDG_DATA_HOME", dir.join("data"))
            .env("XDG_CONFIG_HOME", dir.join("config")),
    )
}

/// Apache in the foreground from `dir`: the modules a reverse proxy needs,
/// `Listen` on `ports`, then `sites`.
fn run_apache(dir: &Path, ports: &[u16], sites: &str) -> Term {
    let d = dir.display();
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let modules = "/usr/lib/apache2/modules";
    let listen: String = ports.iter().map(|p| format!("Listen 127.0.0.1:{p}\n")).collect();
    let conf = format!(
        "ServerRoot /etc/apache2\nMutex file:{d} default\nPidFile {d}/apache.pid\nErrorLog {d}/apache-error.log\n\
         ServerName localhost\n{}LoadModule mpm_event_module {modules}/mod_mpm_event.so\n\
         LoadModule authz_core_module {modules}/mod_authz_core.so\nLoadModule proxy_module {modules}/mod_proxy.so\n\
         LoadModule proxy_http_module {modules}/mod_proxy_http.so\n{listen}{sites}",
        if root { "User www-data\nGroup www-data\n" } else { "" }
    );
    std::fs::write(dir.join("apache2.conf"), conf).unwrap();
    spawn(Command::new("apache2").arg("-f").arg(dir.join("apache2.conf")).args(["-D", "FOREGROUND"]))
}

/// The proxies people run besides nginx, from Debian's packages, each in
/// front of a backend that is down, slow or refused, the way they answer
/// (issue 26): HAProxy's and Apache's 503 and Varnish's silent pipe are
/// `upstream_unavailable`, Apache's "Error reading from remote server" is
/// `upstream_timeout`, HAProxy denying upgrades only is `websocket_blocked`,
/// and plain ws:// to Caddy's TLS port is `plain_on_tls_port`.
#[test]
fn the_doctor_names_what_haproxy_apache_varnish_and_caddy_say() {
    let server = common::serve(0, &[]);
    let hf = server.1;
    let (dead, hole) = (free_port(), black_hole());
    let dir = common::scratch("proxies");
    let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
    let [hap_dead, hap_deny, apache_dead, apache_slow, varnish, caddy] = ports[..] else { unreachable!() };

    std::fs::write(
        dir.join("haproxy.cfg"),
        format!(
            "defaults\n  mode http\n  timeout connect 1s\n  timeout client 10s\n  timeout server 10s\n  timeout tunnel 1h\n\
             frontend dead\n  bind 127.0.0.1:{hap_dead}\n  default_backend dead\n\
             frontend deny\n  bind 127.0.0.1:{hap_deny}\n  http-request deny if {{ hdr(upgrade) -i websocket }}\n  default_backend live\n\
             backend dead\n  server s1 127.0.0.1:{dead}\nbackend live\n  server s1 127.0.0.1:{hf}\n"
        ),
    )
    .unwrap();
    let _haproxy = spawn(Command::new("haproxy").arg("-db").arg("-f").arg(dir.join("haproxy.cfg")));

    let _apache = run_apache(
        &dir,
        &[apache_dead, apache_slow],
        &format!(
            "<VirtualHost 127.0.0.1:{apache_dead}>\n  ProxyPass /ws http://127.0.0.1:{dead}/ws upgrade=websocket\n</VirtualHost>\n\
             <VirtualHost 127.0.0.1:{apache_slow}>\n  ProxyPass /ws http://127.0.0.1:{hole}/ws upgrade=websocket timeout=1\n</VirtualHost>\n"
        ),
    );

    std::fs::write(
        dir.join("x.vcl"),
        format!(
            "vcl 4.1;\nbackend default {{ .host = \"127.0.0.1\"; .port = \"{dead}\"; }}\n\
             sub vcl_recv {{ if (req.http.upgrade ~ \"(?i)websocket\") {{ return (pipe); }} }}\n\
             sub vcl_pipe {{ if (req.http.upgrade) {{ set bereq.http.upgrade = req.http.upgrade; \
             set bereq.http.connection = req.http.connection; }} }}\n"
        ),
    )
    .unwrap();
    let _varnish = spawn(
        Command::new("varnishd")
            .arg("-F")
            .arg("-n")
            .arg(dir.join("varnish"))
            .args(["-a", &format!("127.0.0.1:{varnish}"), "-T", "none", "-s", "malloc,16m", "-f"])
            .arg(dir.join("x.vcl")),
    );

    std::fs::write(
        dir.join("Caddyfile"),
        format!(
            "{{\n  admin off\n  skip_install_trust\n}}\nhttps://127.0.0.1:{caddy} {{\n  tls internal\n  reverse_proxy 127.0.0.1:{hf}\n}}\n"
        ),
    )
    .unwrap();
    let _caddy = run_caddy(&dir);
    for p in ports {
        wait_for_port(p);
    }

    let cases = [
        (hap_dead, "upstream_unavailable", "HAProxy"),
        (hap_deny, "websocket_blocked", "plain GET"),
        (apache_dead, "upstream_unavailable", "Apache"),
        (apache_slow, "upstream_timeout", "Error reading from remote server"),
        (varnish, "upstream_unavailable", "Varnish"),
        (caddy, "plain_on_tls_port", "TLS handshake"),
    ];
    let mut failures = Vec::new();
    for (port, cause, mention) in cases {
        let url = format!("ws://127.0.0.1:{port}/ws");
        let out = holdfast().args(["doctor", &url, "--json", "--no-proxy", "--timeout", "5s"]).output().unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let summary = report["verdict"]["summary"].as_str().unwrap_or_default();
        if report["verdict"]["cause"] != cause || !summary.contains(mention) || out.status.code() != Some(1) {
            failures.push(format!("{port} (want {cause}, {mention:?}): {} — {summary}", report["verdict"]["cause"]));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `holdfast proxy-config KIND` for each proxy, served by the real proxy in
/// front of holdfast: the doctor says healthy through each (issue 26), and
/// Server-Sent Events come through unbuffered.
#[test]
fn each_generated_proxy_config_works_in_front_of_holdfast() {
    let server = common::serve(0, &[]);
    let hf = server.1;
    let dir = common::scratch("proxy-configs");
    let config = |kind: &str| {
        let out = holdfast().args(["proxy-config", kind, "--upstream", &format!("127.0.0.1:{hf}")]).output().unwrap();
        assert!(out.status.success(), "{kind}");
        String::from_utf8(out.stdout).unwrap()
    };
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let [haproxy, apache, caddy, varnish] = ports[..] else { unreachable!() };

    let haproxy_cfg = config("haproxy").replace("bind :80", &format!("bind 127.0.0.1:{haproxy}"));
    std::fs::write(dir.join("haproxy.cfg"), haproxy_cfg).unwrap();
    let _haproxy = spawn(Command::new("haproxy").arg("-db").arg("-f").arg(dir.join("haproxy.cfg")));

    let site = config("apache").replace("<VirtualHost *:80>", &format!("<VirtualHost 127.0.0.1:{apache}>"));
    let _apache = run_apache(&dir, &[apache], &site);

    let caddyfile = config("caddy").replace("http://example.com", &format!("http://127.0.0.1:{caddy}"));
    std::fs::write(dir.join("Caddyfile"), format!("{{\n  admin off\n}}\n{caddyfile}")).unwrap();
    let _caddy = run_caddy(&dir);

    std::fs::write(dir.join("holdfast.vcl"), config("varnish")).unwrap();
    let _varnish = spawn(
        Command::new("varnishd")
            .arg("-F")
            .arg("-n")
            .arg(dir.join("varnish"))
            .args([
                "-a",
                &format!("127.0.0.1:{varnish}"),
                "-T",
                "none",
                "-s",
                "malloc,16m",
                "-p",
                "pipe_timeout=3600",
                "-f",
            ])
            .arg(dir.join("holdfast.vcl")),
    );
    for p in &ports {
        wait_for_port(*p);
    }

    let mut failures = Vec::new();
    for (name, port) in [("haproxy", haproxy), ("apache", apache), ("caddy", caddy), ("varnish", varnish)] {
        let url = format!("ws://127.0.0.1:{port}/ws");
        let out = holdfast().args(["doctor", &url, "--json", "--no-proxy", "--timeout", "5s"]).output().unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if report["verdict"]["cause"] != "healthy" || out.status.code() != Some(0) {
            failures.push(format!("{name}: {} — {}", report["verdict"]["cause"], report["verdict"]["summary"]));
        }
        // The event stream's first event arrives at once, not when a buffer fills.
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET /sse HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n").unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("\"connected\"") {
            match s.read(&mut chunk) {
                Ok(n) if n > 0 => got.extend_from_slice(&chunk[..n]),
                _ => {
                    failures
                        .push(format!("{name}: no `connected` event within 5 s: {}", String::from_utf8_lossy(&got)));
                    break;
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The lint knows each format: the generated configs are clean, a broken one is not.
    for kind in ["nginx", "haproxy", "apache", "caddy", "varnish"] {
        let file = dir.join(format!("{kind}.lint"));
        std::fs::write(&file, config(kind)).unwrap();
        let out = holdfast().args(["doctor", "--lint"]).arg(&file).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{kind}: {}", String::from_utf8_lossy(&out.stdout));
    }
    let broken = dir.join("broken.cfg");
    std::fs::write(&broken, config("haproxy").replace("    timeout tunnel 1h\n", "")).unwrap();
    let out = holdfast().args(["doctor", "--lint"]).arg(&broken).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("timeout tunnel") && said.contains("HAProxy"), "{said}");
}
