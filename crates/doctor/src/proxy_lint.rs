//! `holdfast doctor --lint FILE`: recognises which proxy a config is for
//! (nginx, HAProxy, Apache, Caddy, Varnish, Traefik, ingress-nginx) and finds what breaks
//! WebSockets in it: upgrades not forwarded or refused, idle limits at or
//! below the heartbeat, Server-Sent Events buffered, the client's address
//! not forwarded. The nginx rules live in [`crate::nginx`]; these are the
//! others, read line by line (comments dropped), as the nginx one is.

use crate::nginx::Finding;
use crate::proxy_config::ProxyKind;

/// Which proxy `text` configures, from the words only it uses.
pub fn recognise(text: &str) -> Option<ProxyKind> {
    let words = |w: &str| lines(text).any(|(_, l)| l.split_whitespace().next() == Some(w));
    if text.contains("kind: Ingress") {
        Some(ProxyKind::IngressNginx)
    } else if text.contains("loadBalancer") && (text.contains("routers") || text.contains("[http.")) {
        Some(ProxyKind::Traefik)
    } else if text.contains("vcl 4") || text.contains("sub vcl_recv") {
        Some(ProxyKind::Varnish)
    } else if words("frontend") || words("backend") || (words("listen") && words("bind")) {
        Some(ProxyKind::Haproxy)
    } else if text.contains("<VirtualHost") || words("ProxyPass") {
        Some(ProxyKind::Apache)
    } else if words("location") || words("proxy_pass") || text.contains("server {") {
        Some(ProxyKind::Nginx)
    } else if text.contains("reverse_proxy") {
        Some(ProxyKind::Caddy)
    } else {
        None
    }
}

/// The findings for `text` in `format`; `heartbeat` is the server's ping
/// interval in seconds.
pub fn lint(text: &str, format: ProxyKind, heartbeat: u64) -> Vec<Finding> {
    match format {
        ProxyKind::Nginx => crate::nginx::lint(text, heartbeat),
        ProxyKind::Haproxy => haproxy(text, heartbeat),
        ProxyKind::Apache => apache(text, heartbeat),
        ProxyKind::Caddy => caddy(text, heartbeat),
        ProxyKind::Varnish => varnish(text),
        ProxyKind::Traefik => traefik(text),
        ProxyKind::IngressNginx => ingress_nginx(text, heartbeat),
    }
}

/// Lines without comments, numbered from 1, blank ones left out.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, raw)| {
        let line = raw.split('#').next().unwrap_or("").trim();
        (!line.is_empty()).then_some((i + 1, line))
    })
}

fn finding(line: usize, message: impl Into<String>) -> Finding {
    Finding { line, message: message.into() }
}

/// `30s`, `1h`, `5000` (milliseconds, HAProxy's unit without a suffix
/// when `ms_default`), in seconds.
fn seconds(word: &str, ms_default: bool) -> Option<u64> {
    let split = word.find(|c: char| !c.is_ascii_digit()).unwrap_or(word.len());
    let (n, unit) = word.split_at(split);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "" if ms_default => n / 1000,
        "" | "s" => n,
        "ms" => n / 1000,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return None,
    })
}

fn haproxy(text: &str, heartbeat: u64) -> Vec<Finding> {
    let mut out = Vec::new();
    let (mut tunnel, mut client, mut server) = (None, None, None);
    let mut forwardfor = false;
    let mut sections = 0;
    for (n, line) in lines(text) {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["frontend" | "backend" | "listen" | "defaults", ..] => sections += 1,
            ["timeout", "tunnel", v, ..] => tunnel = seconds(v, true).map(|s| (s, n)),
            ["timeout", "client", v, ..] => client = seconds(v, true).map(|s| (s, n)),
            ["timeout", "server", v, ..] => server = seconds(v, true).map(|s| (s, n)),
            ["option", "forwardfor", ..] => forwardfor = true,
            ["http-request", "deny", ..] if line.to_ascii_lowercase().contains("websocket") => out.push(finding(
                n,
                "refuses WebSocket upgrades (`http-request deny` on Upgrade: websocket): browsers fail with 1006",
            )),
            _ => {}
        }
    }
    // An upgraded connection is idle-limited by `timeout tunnel`, else by
    // the client and server timeouts.
    let limit = tunnel.or_else(|| match (client, server) {
        (Some(c), Some(s)) => Some(if c.0 <= s.0 { c } else { s }),
        (one, other) => one.or(other),
    });
    if let Some((secs, n)) = limit.filter(|(s, _)| *s <= heartbeat) {
        out.push(finding(
            n,
            format!(
                "upgraded connections are cut after {secs} s idle, at or below the heartbeat ({heartbeat} s): add \
                 `timeout tunnel 1h`"
            ),
        ));
    } else if tunnel.is_none() && limit.is_some() {
        let n = limit.map_or(1, |(_, n)| n);
        out.push(finding(
            n,
            "no `timeout tunnel`: upgraded connections take the client/server timeouts; add `timeout tunnel 1h`",
        ));
    }
    if sections > 0 && !forwardfor {
        out.push(finding(1, "no `option forwardfor`: the backend sees HAProxy's address for every client"));
    }
    out
}

fn apache(text: &str, heartbeat: u64) -> Vec<Finding> {
    let mut out = Vec::new();
    let wstunnel = text.contains("proxy_wstunnel") || text.contains("RewriteRule");
    let mut forwards_upgrades = false;
    let mut passes = Vec::new();
    for (n, line) in lines(text) {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["ProxyPass", path, target, params @ ..] if *target != "!" => {
                let upgrade = params.iter().any(|p| p.eq_ignore_ascii_case("upgrade=websocket"))
                    || target.starts_with("ws://")
                    || target.starts_with("wss://");
                forwards_upgrades |= upgrade;
                passes.push((n, path.to_string(), upgrade, params.iter().map(|p| p.to_string()).collect::<Vec<_>>()));
            }
            ["ProxyTimeout" | "Timeout", v] => {
                if let Some(secs) = seconds(v, false).filter(|s| *s <= heartbeat) {
                    out.push(finding(
                        n,
                        format!(
                            "{} {secs} s is at or below the heartbeat ({heartbeat} s): idle WebSockets are cut",
                            w[0]
                        ),
                    ));
                }
            }
            _ => {}
        }
    }
    for (n, path, upgrade, params) in &passes {
        let ws = path.contains("ws") || path.contains("socket") || (path == "/" && !forwards_upgrades);
        if ws && !upgrade && !wstunnel {
            out.push(finding(
                *n,
                format!(
                    "ProxyPass {path} does not forward WebSocket upgrades: add `upgrade=websocket` (Apache 2.4.47+), \
                     or proxy to ws:// with mod_proxy_wstunnel"
                ),
            ));
        }
        let timeout = params.iter().find_map(|p| p.strip_prefix("timeout=")).and_then(|v| seconds(v, false));
        if let Some(secs) = timeout.filter(|s| *s <= heartbeat && (ws || *upgrade)) {
            out.push(finding(
                *n,
                format!(
                    "ProxyPass {path} timeout={secs} is at or below the heartbeat ({heartbeat} s): use timeout=3600"
                ),
            ));
        }
        let sse = path.contains("sse") || path.contains("events");
        if sse && !params.iter().any(|p| p.eq_ignore_ascii_case("flushpackets=on")) {
            out.push(finding(*n, format!("ProxyPass {path}: Server-Sent Events are buffered; add `flushpackets=on`")));
        }
    }
    out
}

fn caddy(text: &str, heartbeat: u64) -> Vec<Finding> {
    let mut out = Vec::new();
    for (n, line) in lines(text) {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["flush_interval", v] if *v != "-1" => out.push(finding(
                n,
                format!("flush_interval {v}: Server-Sent Events arrive late or in bursts; use `flush_interval -1`"),
            )),
            ["stream_timeout", v] => {
                if let Some(secs) = seconds(v, false).filter(|s| *s <= heartbeat) {
                    out.push(finding(n, format!("stream_timeout {secs} s closes WebSockets before a heartbeat ({heartbeat} s) could keep them")));
                }
            }
            _ => {}
        }
    }
    out
}

fn varnish(text: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let recv = lines(text).find(|(_, l)| l.starts_with("sub vcl_recv")).map_or(1, |(n, _)| n);
    let pipes_upgrades = text.contains("return (pipe)") || text.contains("return(pipe)");
    if !pipes_upgrades {
        out.push(finding(
            recv,
            "WebSocket upgrades are not piped: Varnish handles them as cacheable HTTP and the upgrade fails; in \
             vcl_recv `if (req.http.upgrade ~ \"(?i)websocket\") { return (pipe); }`",
        ));
    } else if !text.contains("bereq.http.upgrade") {
        let pipe = lines(text).find(|(_, l)| l.starts_with("sub vcl_pipe")).map_or(recv, |(n, _)| n);
        out.push(finding(
            pipe,
            "piped upgrades lose their Upgrade header: in vcl_pipe `set bereq.http.upgrade = req.http.upgrade;` and \
             `set bereq.http.connection = req.http.connection;`",
        ));
    }
    out
}

/// Traefik forwards upgrades and streams event streams by itself; what
/// breaks them is a `buffering` middleware, which holds whole responses.
fn traefik(text: &str) -> Vec<Finding> {
    lines(text)
        .filter(|(_, l)| l.trim_start_matches('[').starts_with("buffering") || l.contains(".buffering"))
        .map(|(n, _)| finding(n, "a `buffering` middleware holds whole responses: Server-Sent Events never arrive; keep it off the holdfast router"))
        .collect()
}

/// ingress-nginx annotations: read/send timeouts (60 s by default) and
/// buffering.
fn ingress_nginx(text: &str, heartbeat: u64) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut read = None;
    for (n, line) in lines(text) {
        let Some((key, value)) = line.split_once(':') else { continue };
        let value = value.trim().trim_matches('"');
        match key.trim().strip_prefix("nginx.ingress.kubernetes.io/") {
            Some("proxy-read-timeout") => read = Some((seconds(value, false), n)),
            Some("proxy-send-timeout") => {
                if let Some(secs) = seconds(value, false).filter(|s| *s <= heartbeat) {
                    out.push(finding(
                        n,
                        format!(
                            "proxy-send-timeout {secs} s is at or below the heartbeat ({heartbeat} s): use \"3600\""
                        ),
                    ));
                }
            }
            Some("proxy-buffering") if value == "on" => {
                out.push(finding(n, "proxy-buffering \"on\": Server-Sent Events arrive late or in bursts; use \"off\""))
            }
            _ => {}
        }
    }
    match read {
        Some((Some(secs), n)) if secs <= heartbeat => out.push(finding(
            n,
            format!("proxy-read-timeout {secs} s is at or below the heartbeat ({heartbeat} s): idle WebSockets are cut; use \"3600\""),
        )),
        None => out.push(finding(
            1,
            format!(
                "no nginx.ingress.kubernetes.io/proxy-read-timeout: ingress-nginx cuts WebSockets idle for 60 s; fine \
                 only while the server pings more often (holdfast: every {heartbeat} s) — consider \"3600\""
            ),
        )),
        _ => {}
    }
    out
}

/// `holdfast doctor --lint FILE` (and `--nginx FILE`, which reads it as
/// nginx): prints findings as `file:line: message`; 0 clean, 1 findings,
/// 2 unreadable or unrecognised.
pub fn lint_command(path: &std::path::Path, format: Option<ProxyKind>) -> u8 {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("holdfast doctor: cannot read {}: {e}", path.display());
            return 2;
        }
    };
    let Some(format) = format.or_else(|| recognise(&text)) else {
        eprintln!(
            "holdfast doctor: {} is not a config the lint knows (nginx, HAProxy, Apache, Caddy, Varnish, Traefik, ingress-nginx)",
            path.display()
        );
        return 2;
    };
    let mut findings = lint(&text, format, 25);
    findings.sort_by_key(|f| f.line);
    for f in &findings {
        println!("{}:{}: {}", path.display(), f.line, f.message);
    }
    if findings.is_empty() {
        println!("{}: {} config, no WebSocket problems found", path.display(), format.name());
        0
    } else {
        println!(
            "{} finding(s) in this {} config; `holdfast proxy-config` prints one without them",
            findings.len(),
            format.name()
        );
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nginx::NginxArgs;
    use crate::proxy_config::{generate, ProxyConfigArgs};

    fn generated(kind: ProxyKind) -> String {
        let common = NginxArgs {
            upstream: vec!["127.0.0.1:8080".into()],
            path: "/ws".into(),
            server_name: "example.com".into(),
            tls: false,
            ping_interval: 25,
        };
        generate(&ProxyConfigArgs { kind, common })
    }

    #[test]
    fn each_generated_config_is_recognised_and_clean() {
        use clap::ValueEnum;
        for &kind in ProxyKind::value_variants() {
            let text = generated(kind);
            assert_eq!(recognise(&text), Some(kind), "{text}");
            assert_eq!(lint(&text, kind, 25), vec![], "{text}");
        }
    }

    #[test]
    fn broken_variants_are_found() {
        let has = |text: &str, format, needle: &str| {
            let f = lint(text, format, 25);
            assert!(f.iter().any(|x| x.message.contains(needle)), "{needle}: {f:#?}\n{text}");
        };
        let haproxy = generated(ProxyKind::Haproxy);
        has(
            &haproxy.replace("timeout tunnel 1h", "timeout tunnel 20s"),
            ProxyKind::Haproxy,
            "at or below the heartbeat",
        );
        has(&haproxy.replace("    timeout tunnel 1h\n", ""), ProxyKind::Haproxy, "no `timeout tunnel`");
        has(&haproxy.replace("    option forwardfor\n", ""), ProxyKind::Haproxy, "option forwardfor");
        let deny = haproxy.replace(
            "    default_backend holdfast\n",
            "    http-request deny if { hdr(upgrade) -i websocket }\n    default_backend holdfast\n",
        );
        has(&deny, ProxyKind::Haproxy, "refuses WebSocket upgrades");
        let apache = generated(ProxyKind::Apache);
        has(&apache.replace(" upgrade=websocket", ""), ProxyKind::Apache, "does not forward WebSocket upgrades");
        has(
            &apache.replace("/ws upgrade=websocket timeout=3600", "/ws upgrade=websocket timeout=20"),
            ProxyKind::Apache,
            "timeout=20",
        );
        has(&apache.replace(" flushpackets=on", ""), ProxyKind::Apache, "flushpackets=on");
        let catch_all = "<VirtualHost *:80>\n  ProxyPass / http://127.0.0.1:8080/\n</VirtualHost>\n";
        has(catch_all, ProxyKind::Apache, "ProxyPass / does not forward WebSocket upgrades");
        has(
            &generated(ProxyKind::Caddy).replace("flush_interval -1", "flush_interval 1s"),
            ProxyKind::Caddy,
            "flush_interval",
        );
        let varnish = generated(ProxyKind::Varnish);
        has(&varnish.replace("return (pipe);", "return (pass);"), ProxyKind::Varnish, "not piped");
        let no_copy = varnish.replace("set bereq.http.upgrade = req.http.upgrade;", "");
        has(&no_copy, ProxyKind::Varnish, "lose their Upgrade header");
        let ingress = generated(ProxyKind::IngressNginx);
        has(
            &ingress.replace("proxy-read-timeout: \"3600\"", "proxy-read-timeout: \"20\""),
            ProxyKind::IngressNginx,
            "at or below",
        );
        let no_timeout = ingress.replace("    nginx.ingress.kubernetes.io/proxy-read-timeout: \"3600\"\n", "");
        has(&no_timeout, ProxyKind::IngressNginx, "60 s");
        has(
            &ingress.replace("proxy-buffering: \"off\"", "proxy-buffering: \"on\""),
            ProxyKind::IngressNginx,
            "proxy-buffering",
        );
        let buffered = generated(ProxyKind::Traefik).replace(
            "      service: holdfast\n",
            "      service: holdfast\n      middlewares: [\"buf\"]\n  middlewares:\n    buf:\n      buffering: {}\n",
        );
        has(&buffered, ProxyKind::Traefik, "buffering");
    }
}
