//! The network side: builds the connection layer by layer, as a browser
//! would, and writes down what each layer did. The HTTP upgrade is written
//! and read by hand, because the raw response (status, headers, body) is
//! the evidence browsers hide.

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::certificate::{self, TrustingVerifier};
use crate::observe::{whole_seconds, End, Handshake, Http, Observations, Response, RoundTrip, Tcp, Tls};
use crate::proxy::{self, Proxy};
use crate::report::{Stage, Status};
use crate::target::{self, Target};
use crate::DoctorArgs;

mod session;
mod tls;

pub use session::meaning;
use session::session;
pub(crate) use tls::tls_connect;
use tls::tls_handshake;

/// A byte stream, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What the probe produced.
pub struct Probe {
    /// The checklist.
    pub stages: Vec<Stage>,
    /// The evidence for the rules.
    pub observations: Observations,
    /// The request as sent and the response head as received, for --verbose.
    pub raw: Option<(String, String)>,
}

struct Run<'a> {
    args: &'a DoctorArgs,
    stages: Vec<Stage>,
    o: Observations,
    raw: Option<(String, String)>,
    /// How the first connection got through, for the later ones.
    route: Option<Route>,
}

/// The address connected to, and the proxy tunnelled through (then the
/// address is the proxy's).
#[derive(Clone)]
struct Route {
    addr: SocketAddr,
    proxy: Option<Proxy>,
}

impl Run<'_> {
    fn stage(&mut self, name: &'static str, status: Status, started: Instant, detail: impl Into<String>) {
        let ms = (started.elapsed().as_secs_f64() * 100_000.0).round() / 100.0;
        self.stages.push(Stage { name, status, ms, detail: detail.into() });
    }

    fn skip(&mut self, name: &'static str, detail: impl Into<String>) {
        self.stages.push(Stage { name, status: Status::Skipped, ms: 0.0, detail: detail.into() });
    }
}

const STAGES: [&str; 12] =
    ["url", "dns", "tcp", "proxy", "tls", "upgrade", "handshake", "round_trip", "ping", "idle", "close", "compression"];

/// What a browser offers on every handshake (Chromium, Firefox).
const DEFLATE_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// Runs every stage it can; stops at the first layer that fails and marks
/// the rest skipped.
pub async fn probe(args: &DoctorArgs, url: &str) -> Probe {
    let mut run = Run { args, stages: Vec::new(), o: Observations::default(), raw: None, route: None };
    let _ = probe_layers(&mut run, url).await;
    let done: Vec<&str> = run.stages.iter().map(|s| s.name).collect();
    for name in STAGES {
        if !done.contains(&name) {
            run.skip(name, "not reached");
        }
    }
    run.stages.sort_by_key(|s| STAGES.iter().position(|n| *n == s.name));
    Probe { stages: run.stages, observations: run.o, raw: run.raw }
}

/// `Err(())` means "stop here": the failure is already recorded.
async fn probe_layers(run: &mut Run<'_>, url: &str) -> Result<(), ()> {
    let t = Instant::now();
    let target = match target::parse(url) {
        Ok(target) => target,
        Err(e) => {
            run.stage("url", Status::Failed, t, e.clone());
            run.o.url_error = Some(e);
            return Err(());
        }
    };
    let page_https = run.args.page_origin.as_deref().is_some_and(|p| p.starts_with("https:"));
    if page_https && !target.tls {
        run.o.mixed_content = true;
        run.stage(
            "url",
            Status::Failed,
            t,
            format!("{} is ws:// but the page origin is https: browsers block it", target.url()),
        );
    } else {
        let mut detail = format!("{} (port {}, path {})", target.url(), target.port, target.path);
        if let Some(w) = &target.warning {
            detail.push_str("; ");
            detail.push_str(w);
        }
        let status = if target.warning.is_some() { Status::Warn } else { Status::Ok };
        run.stage("url", status, t, detail);
    }

    let t = Instant::now();
    let chosen = proxy::choose(&target, run.args.proxy.as_deref(), run.args.no_proxy, |n| std::env::var(n).ok());
    let proxy = match chosen {
        Ok(p) => p,
        Err(e) => {
            run.stage("proxy", Status::Failed, t, e.clone());
            run.o.url_error = Some(e);
            return Err(());
        }
    };
    if let Some(p) = &proxy {
        run.o.via_proxy = Some((p.shown.clone(), p.source.clone()));
    }
    let addr = match &proxy {
        // The proxy resolves the endpoint's name; here only its own.
        Some(p) => {
            let proxy_target =
                Target { tls: false, host: p.host.clone(), port: p.port, path: "/".into(), warning: None };
            let addr = resolve(run, &proxy_target).await?;
            if let Some(dns) = run.stages.last_mut() {
                dns.detail = format!("the proxy {}: {}", p.host, dns.detail);
            }
            addr
        }
        None => resolve(run, &target).await?,
    };
    let tcp = connect(run, addr).await;
    if let (Some(p), Some(stage)) = (&proxy, run.stages.last_mut()) {
        stage.detail = format!("{} (the proxy {})", stage.detail, p.shown);
    }
    let tcp = tcp?;
    let tcp = match &proxy {
        Some(p) => tunnel_stage(run, tcp, &target, p).await?,
        None => {
            let why = if run.args.no_proxy { "--no-proxy: direct" } else { "none: direct (no proxy variable applies)" };
            run.skip("proxy", why);
            tcp
        }
    };
    run.route = Some(Route { addr, proxy });
    let io: Box<dyn Io> = if target.tls {
        Box::new(tls_handshake(run, &target, tcp).await?)
    } else {
        run.skip("tls", "plain ws://");
        Box::new(tcp)
    };

    let origin = run.args.origin.clone();
    let t = Instant::now();
    let (io, response, leftover, key) = match upgrade(run, &target, io, origin.as_deref(), true, None).await {
        Ok(x) => x,
        Err(http) => {
            let detail = match &http {
                Http::Timeout => format!("no answer within {:?}", run.args.timeout),
                Http::ClosedWithoutAnswer => "the server closed the connection without answering".into(),
                Http::TlsBytes => "the server answered with TLS bytes: this port speaks TLS".into(),
                Http::Response(_) => unreachable!("responses are Ok"),
            };
            // Closed without a word: what does a plain request get there?
            if matches!(http, Http::ClosedWithoutAnswer) {
                run.o.plain_get = plain_get(run, &target).await;
            }
            if !target.tls && matches!(http, Http::Timeout | Http::ClosedWithoutAnswer) {
                run.o.tls_on_same_port = speaks_tls(run, &target).await;
            }
            run.o.http = Some(http);
            run.stage("upgrade", Status::Failed, t, detail);
            return Err(());
        }
    };
    let status_line = format!("{} {} {}", response.version, response.status, response.reason);
    let switched = response.status == 101;
    let mut detail = status_line.clone();
    if !switched {
        for (k, v) in response.headers.iter().filter(|(k, _)| {
            ["server", "location", "content-type", "retry-after", "connection", "via"]
                .contains(&k.to_ascii_lowercase().as_str())
        }) {
            detail.push_str(&format!("; {k}: {v}"));
        }
        let body: String = response.body.chars().take(160).collect();
        if !body.trim().is_empty() {
            detail.push_str(&format!("; body: {:?}", body.trim()));
        }
    }
    run.stage("upgrade", if switched { Status::Ok } else { Status::Failed }, t, detail);
    run.o.http = Some(Http::Response(response.clone()));
    if !switched && !target.tls && response.status == 400 {
        run.o.tls_on_same_port = speaks_tls(run, &target).await;
    }
    if !switched && response.status == 403 {
        run.o.plain_get = plain_get(run, &target).await;
    }
    if !switched {
        if response.status == 403 {
            // Does another Origin get in? Then the Origin is what was refused.
            let other = match &origin {
                Some(_) => None,
                None => Some(target.own_origin()),
            };
            if let Some(io) = reconnect(run, &target).await {
                if let Ok((_, r, _, _)) = upgrade(run, &target, io, other.as_deref(), false, None).await {
                    run.o.origin_retry_status = Some(r.status);
                }
            }
        }
        return Err(());
    }

    let t = Instant::now();
    let handshake = check_handshake(&response, &key, &run.args.subprotocol);
    let ok = handshake.accept_ok && handshake.upgrade_ok && handshake.connection_ok && !handshake.chose_unoffered();
    let detail = format!(
        "Sec-WebSocket-Accept {}; Upgrade {}; Connection {}; subprotocol {} (offered {}); extensions {}",
        if handshake.accept_ok { "valid" } else { "INVALID" },
        if handshake.upgrade_ok { "ok" } else { "MISSING" },
        if handshake.connection_ok { "ok" } else { "MISSING" },
        handshake.chosen.as_deref().unwrap_or("none"),
        if handshake.offered.is_empty() { "none".to_string() } else { handshake.offered.join(", ") },
        handshake.extensions.as_deref().unwrap_or("none"),
    );
    let status = match (ok, handshake.answered_no_offer()) {
        (false, _) => Status::Failed,
        // Go on: how the server ends the session tells why.
        (true, true) => Status::Warn,
        (true, false) => Status::Ok,
    };
    run.stage("handshake", status, t, detail);
    run.o.handshake = Some(handshake);
    if !ok {
        return Err(());
    }

    let mut ws = WebSocketStream::from_partially_read(io, leftover, Role::Client, None).await;
    let opened = Instant::now();
    session(run, &mut ws, opened).await;
    drop(ws);
    compression(run, &target, origin.as_deref()).await;
    Ok(())
}

/// A plain GET of the target's path (no upgrade), the way the first
/// connection went: its answer, if any.
async fn plain_get(run: &Run<'_>, target: &Target) -> Option<Response> {
    let mut io = reconnect(run, target).await?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: holdfast-doctor/{}\r\nConnection: close\r\n\r\n",
        target.path,
        target.host_header(),
        env!("CARGO_PKG_VERSION")
    );
    io.write_all(request.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        while buf.len() < 8192 {
            match io.read(&mut chunk).await {
                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => break,
            }
        }
    };
    let _ = timeout(run.args.timeout, read).await;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut response = parse_head(head)?;
    response.body = body.chars().take(2048).collect();
    Some(response)
}

/// Whether the target's port completes a TLS handshake (a certificate
/// came back, trusted or not): for a `ws://` URL, it wanted `wss://`.
async fn speaks_tls(run: &Run<'_>, target: &Target) -> bool {
    let Some(tcp) = route_tcp(run, target).await else { return false };
    let as_tls = Target { tls: true, ..target.clone() };
    match tls_connect(run.args, &as_tls, tcp).await {
        Ok(_) => true,
        Err((_, seen)) => seen.is_some(),
    }
}

/// Opens the tunnel through `proxy` on `tcp` (connected to the proxy) and
/// records the proxy's answer as a stage; a refusal ends the probe, after
/// asking whether the direct way works.
async fn tunnel_stage(run: &mut Run<'_>, tcp: TcpStream, target: &Target, proxy: &Proxy) -> Result<TcpStream, ()> {
    let t = Instant::now();
    let authority = authority(target);
    match open_tunnel(tcp, target, proxy, run.args.timeout).await {
        Ok(tunnel) => {
            let detail = format!("{} (from {}) opened a tunnel: CONNECT {authority}", proxy.shown, proxy.source);
            run.stage("proxy", Status::Ok, t, detail);
            Ok(tunnel)
        }
        Err(answer) => {
            let server = answer.header("server").map(|s| format!("; Server: {s}")).unwrap_or_default();
            let detail = format!(
                "{} (from {}) refused CONNECT {authority}: {} {}{server}",
                proxy.shown, proxy.source, answer.status, answer.reason
            );
            run.stage("proxy", Status::Failed, t, detail);
            run.o.proxy_refused = Some(answer);
            run.o.direct_status = direct_status(run, target).await;
            Err(())
        }
    }
}

/// `host:port` as CONNECT names it.
fn authority(target: &Target) -> String {
    let host = if target.host.contains(':') { format!("[{}]", target.host) } else { target.host.clone() };
    format!("{host}:{}", target.port)
}

/// Asks `proxy` (connected on `tcp`) for a tunnel to the target: the
/// tunnel, or the proxy's answer when it is not a 2xx (status 0 when it
/// gave none).
pub(crate) async fn open_tunnel(
    mut tcp: TcpStream,
    target: &Target,
    proxy: &Proxy,
    wait: Duration,
) -> Result<TcpStream, Response> {
    let authority = authority(target);
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(c) = &proxy.credentials {
        let basic = base64::engine::general_purpose::STANDARD.encode(c);
        request.push_str(&format!("Proxy-Authorization: Basic {basic}\r\n"));
    }
    request.push_str(&format!("User-Agent: holdfast-doctor/{}\r\n\r\n", env!("CARGO_PKG_VERSION")));
    let silent = |reason: &str| Response { status: 0, reason: reason.into(), ..Response::default() };
    if tcp.write_all(request.as_bytes()).await.is_err() {
        return Err(silent("(the proxy closed the connection)"));
    }
    // Byte by byte up to the blank line: what follows a 200 is the
    // endpoint's, and must stay in the socket.
    let mut head = Vec::new();
    let read = async {
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
            if tcp.read(&mut byte).await.ok().filter(|n| *n == 1).is_none() {
                break;
            }
            head.push(byte[0]);
        }
    };
    if timeout(wait, read).await.is_err() {
        return Err(silent("(no answer in time)"));
    }
    let Some(mut answer) = parse_head(&String::from_utf8_lossy(&head)) else {
        return Err(silent("(no HTTP answer)"));
    };
    if (200..300).contains(&answer.status) {
        return Ok(tcp);
    }
    let mut body = vec![0u8; 2048];
    if let Ok(Ok(n)) = timeout(Duration::from_millis(300), tcp.read(&mut body)).await {
        answer.body = String::from_utf8_lossy(&body[..n]).into_owned();
    }
    Err(answer)
}

/// After the proxy refused: what a direct upgrade gets, if anything.
async fn direct_status(run: &mut Run<'_>, target: &Target) -> Option<u16> {
    let addr = tokio::net::lookup_host((target.host.as_str(), target.port)).await.ok()?.next()?;
    let tcp = timeout(run.args.timeout, TcpStream::connect(addr)).await.ok()?.ok()?;
    let io: Box<dyn Io> = match target.tls {
        true => Box::new(tls_connect(run.args, target, tcp).await.ok()?),
        false => Box::new(tcp),
    };
    let origin = run.args.origin.clone();
    upgrade(run, target, io, origin.as_deref(), false, None).await.ok().map(|(_, r, _, _)| r.status)
}

/// Another connection the way the first one went (through the proxy,
/// through TLS when the target uses it): for a second question the first
/// connection cannot ask.
async fn reconnect(run: &Run<'_>, target: &Target) -> Option<Box<dyn Io>> {
    let tcp = route_tcp(run, target).await?;
    if target.tls {
        Some(Box::new(tls_connect(run.args, target, tcp).await.ok()?))
    } else {
        Some(Box::new(tcp))
    }
}

/// A TCP connection to the target the way the first one went: to the
/// address connected to before, through the proxy's tunnel if there was one.
async fn route_tcp(run: &Run<'_>, target: &Target) -> Option<TcpStream> {
    let route = run.route.as_ref()?;
    let tcp = timeout(run.args.timeout, TcpStream::connect(route.addr)).await.ok()?.ok()?;
    match &route.proxy {
        Some(p) => open_tunnel(tcp, target, p, run.args.timeout).await.ok(),
        None => Some(tcp),
    }
}

/// Whether the endpoint agrees to permessage-deflate, asked on a connection
/// of its own with the offer browsers make: the session above offers no
/// extension, because the library it reads frames with cannot inflate them.
/// Either answer is a fact for the report, not a failure: compression saves
/// bandwidth but nothing breaks without it. A proxy that strips the header
/// shows up here as "not negotiated".
async fn compression(run: &mut Run<'_>, target: &Target, origin: Option<&str>) {
    let t = Instant::now();
    let Some(io) = reconnect(run, target).await else {
        run.stage("compression", Status::Skipped, t, "could not open a second connection to ask");
        return;
    };
    let (mut io, response) = match upgrade(run, target, io, origin, false, Some(DEFLATE_OFFER)).await {
        Ok((io, response, _, _)) if response.status == 101 => (io, response),
        Ok((_, response, _, _)) => {
            let detail = format!("a second handshake offering permessage-deflate got {}", response.status);
            run.stage("compression", Status::Skipped, t, detail);
            return;
        }
        Err(_) => {
            run.stage(
                "compression",
                Status::Skipped,
                t,
                "a second handshake offering permessage-deflate got no answer",
            );
            return;
        }
    };
    let agreed = response.header("sec-websocket-extensions").map(str::to_string);
    let detail = match &agreed {
        Some(e) if e.trim_start().starts_with("permessage-deflate") => format!("permessage-deflate negotiated ({e})"),
        Some(e) => format!("permessage-deflate not negotiated (the server answered with {e})"),
        None => "permessage-deflate not negotiated: messages travel uncompressed (the server, or a proxy in \
                 front of it, answered the browser's offer without it)"
            .to_string(),
    };
    run.stage("compression", Status::Ok, t, detail);
    // A masked close 1000, then hang up.
    let _ = timeout(Duration::from_secs(1), io.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8])).await;
}

async fn resolve(run: &mut Run<'_>, target: &Target) -> Result<SocketAddr, ()> {
    let t = Instant::now();
    if let Ok(ip) = target.host.parse::<std::net::IpAddr>() {
        run.o.dns = Some(Ok(vec![ip.to_string()]));
        run.stage("dns", Status::Ok, t, format!("{ip} (an IP address, no lookup)"));
        return Ok(SocketAddr::new(ip, target.port));
    }
    match timeout(run.args.timeout, tokio::net::lookup_host((target.host.as_str(), target.port))).await {
        Ok(Ok(addrs)) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            match addrs.first() {
                Some(first) => {
                    let list: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
                    run.stage("dns", Status::Ok, t, list.join(", "));
                    run.o.dns = Some(Ok(list));
                    Ok(*first)
                }
                None => {
                    run.stage("dns", Status::Failed, t, "no addresses");
                    run.o.dns = Some(Err(format!("{} has no addresses", target.host)));
                    Err(())
                }
            }
        }
        Ok(Err(e)) => {
            run.stage("dns", Status::Failed, t, e.to_string());
            run.o.dns = Some(Err(format!("{}: {e}", target.host)));
            Err(())
        }
        Err(_) => {
            run.stage("dns", Status::Failed, t, "lookup timed out");
            run.o.dns = Some(Err(format!("looking up {} timed out", target.host)));
            Err(())
        }
    }
}

async fn connect(run: &mut Run<'_>, addr: SocketAddr) -> Result<TcpStream, ()> {
    let t = Instant::now();
    let (result, detail) = match timeout(run.args.timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            run.o.tcp = Some(Tcp::Connected);
            run.stage("tcp", Status::Ok, t, format!("connected to {addr}"));
            return Ok(s);
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            (Tcp::Refused, format!("{addr}: connection refused"))
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => (Tcp::Timeout, format!("{addr}: timed out")),
        Ok(Err(e)) => (Tcp::Failed(e.to_string()), format!("{addr}: {e}")),
        Err(_) => (Tcp::Timeout, format!("{addr}: no answer within {:?}", run.args.timeout)),
    };
    run.o.tcp = Some(result);
    run.stage("tcp", Status::Failed, t, detail);
    Err(())
}

/// Sends the upgrade request and reads the raw answer. `Ok` carries the
/// stream, the parsed response, bytes already read past the head, and the key.
async fn upgrade(
    run: &mut Run<'_>,
    target: &Target,
    mut io: Box<dyn Io>,
    origin: Option<&str>,
    record: bool,
    extensions: Option<&str>,
) -> Result<(Box<dyn Io>, Response, Vec<u8>, String), Http> {
    let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: holdfast-doctor/{}\r\n",
        target.path,
        target.host_header(),
        env!("CARGO_PKG_VERSION")
    );
    if let Some(o) = origin {
        request.push_str(&format!("Origin: {o}\r\n"));
    }
    if !run.args.subprotocol.is_empty() {
        request.push_str(&format!("Sec-WebSocket-Protocol: {}\r\n", run.args.subprotocol.join(", ")));
    }
    if let Some(offer) = extensions {
        request.push_str(&format!("Sec-WebSocket-Extensions: {offer}\r\n"));
    }
    if let Some(token) = &run.args.token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    for h in &run.args.header {
        request.push_str(h.trim());
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    if io.write_all(request.as_bytes()).await.is_err() {
        return Err(Http::ClosedWithoutAnswer);
    }
    let mut buf = Vec::with_capacity(4096);
    let deadline = tokio::time::Instant::now() + run.args.timeout;
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() >= 2 && buf[0] == 0x15 && buf[1] == 0x03 {
            return Err(Http::TlsBytes);
        }
        if buf.len() > 32 * 1024 {
            break buf.len();
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, io.read(&mut chunk)).await {
            Err(_) => return Err(Http::Timeout),
            Ok(Ok(0)) | Ok(Err(_)) if buf.is_empty() => return Err(Http::ClosedWithoutAnswer),
            Ok(Ok(0)) | Ok(Err(_)) => break buf.len(),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    if buf.starts_with(&[0x15, 0x03]) || buf.starts_with(&[0x16, 0x03]) {
        return Err(Http::TlsBytes);
    }
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut response = parse_head(&head).ok_or(Http::ClosedWithoutAnswer)?;
    let mut leftover = buf[head_end..].to_vec();
    if response.status != 101 {
        // Read a little of the body: error pages say who answered and why.
        let want = response.header("content-length").and_then(|l| l.parse::<usize>().ok()).unwrap_or(2048).min(2048);
        let body_deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        while leftover.len() < want {
            let mut chunk = [0u8; 2048];
            match tokio::time::timeout_at(body_deadline, io.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => leftover.extend_from_slice(&chunk[..n]),
                _ => break,
            }
        }
        response.body = String::from_utf8_lossy(&leftover[..leftover.len().min(2048)]).into_owned();
        leftover.clear();
    }
    if record {
        run.raw = Some((request, head));
    }
    Ok((io, response, leftover, key))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

pub(crate) fn parse_head(head: &str) -> Option<Response> {
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next()?.to_string();
    if !version.starts_with("HTTP/") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    let reason = parts.next().unwrap_or("").to_string();
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    Some(Response { version, status, reason, headers, body: String::new() })
}

fn check_handshake(r: &Response, key: &str, offered: &[String]) -> Handshake {
    Handshake {
        accept_ok: r.header("sec-websocket-accept") == Some(holdfast_websocket::accept_key(key.as_bytes()).as_str()),
        upgrade_ok: r.header_has_token("upgrade", "websocket"),
        connection_ok: r.header_has_token("connection", "upgrade"),
        offered: offered.to_vec(),
        chosen: r.header("sec-websocket-protocol").map(str::to_string),
        extensions: r.header("sec-websocket-extensions").map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_response_head() {
        let r = parse_head("HTTP/1.1 426 Upgrade Required\r\nServer: nginx\r\nConnection: close\r\n\r\n").unwrap();
        assert_eq!((r.status, r.reason.as_str(), r.header("server")), (426, "Upgrade Required", Some("nginx")));
        assert!(r.header_has_token("Connection", "close"));
        assert!(parse_head("SSH-2.0-OpenSSH\r\n\r\n").is_none());
    }
}
