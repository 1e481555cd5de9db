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
    let Some(route) = run.route.as_ref() else { return false };
    let Ok(Ok(mut tcp)) = timeout(run.args.timeout, TcpStream::connect(route.addr)).await else { return false };
    if let Some(p) = &route.proxy {
        match open_tunnel(tcp, target, p, run.args.timeout).await {
            Ok(t) => tcp = t,
            Err(_) => return false,
        }
    }
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
async fn open_tunnel(
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
    let route = run.route.as_ref()?;
    let mut tcp = TcpStream::connect(route.addr).await.ok()?;
    if let Some(p) = &route.proxy {
        tcp = open_tunnel(tcp, target, p, run.args.timeout).await.ok()?;
    }
    if target.tls {
        Some(Box::new(tls_connect(run.args, target, tcp).await.ok()?))
    } else {
        Some(Box::new(tcp))
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

/// The client config, with the verifier that records what the server
/// sent (see [`crate::certificate`]).
fn tls_config(args: &DoctorArgs) -> Result<(rustls::ClientConfig, Arc<TrustingVerifier>), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let mut user = Vec::new();
    if let Some(path) = &args.ca_file {
        let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read --ca-file {}: {e}", path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
        for cert in certs {
            roots.add(cert.clone()).map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
            user.push(cert);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let verifier = Arc::new(TrustingVerifier::new(webpki, user));
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((config, verifier))
}

async fn tls_connect(
    args: &DoctorArgs,
    target: &Target,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, (std::io::Error, Option<Tls>)> {
    let (config, verifier) = tls_config(args).map_err(|e| (std::io::Error::other(e), None))?;
    let name = rustls::pki_types::ServerName::try_from(target.host.clone())
        .map_err(|e| (std::io::Error::other(format!("{}: {e}", target.host)), None))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let e = match timeout(args.timeout, connector.connect(name, tcp)).await {
        Ok(Ok(stream)) => return Ok(stream),
        Ok(Err(e)) => e,
        Err(_) => std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"),
    };
    // A refused certificate is named from the certificate itself.
    let chain = verifier.seen.lock().expect("seen lock poisoned").clone();
    let trusted = *verifier.trusted.lock().expect("trusted lock poisoned");
    let refused = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let named = match (refused, trusted) {
        (Some(rustls::Error::InvalidCertificate(_)), Some(trusted)) if !chain.is_empty() => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            Some(certificate::diagnose(&chain, &target.host, now, trusted, &e.to_string()))
        }
        _ => None,
    };
    Err((e, named))
}

async fn tls_handshake(
    run: &mut Run<'_>,
    target: &Target,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ()> {
    let t = Instant::now();
    match tls_connect(run.args, target, tcp).await {
        Ok(stream) => {
            let (_, conn) = stream.get_ref();
            let version = conn.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default().replace('_', ".");
            let alpn = conn.alpn_protocol().map(|a| String::from_utf8_lossy(a).into_owned());
            let leaf = conn.peer_certificates().and_then(|c| c.first()).cloned();
            let (expires_in_days, subject) = leaf.map(|c| leaf_facts(&c)).unwrap_or((None, String::new()));
            let mut detail = format!("{version}, ALPN {}", alpn.as_deref().unwrap_or("none"));
            if !subject.is_empty() {
                detail.push_str(&format!(", certificate {subject}"));
            }
            let status = match expires_in_days {
                Some(d) if d < 14 => {
                    detail.push_str(&format!(", EXPIRES in {d} days"));
                    Status::Warn
                }
                Some(d) => {
                    detail.push_str(&format!(", expires in {d} days"));
                    Status::Ok
                }
                None => Status::Ok,
            };
            run.stage("tls", status, t, detail);
            run.o.tls = Some(Tls::Ok { version, alpn, expires_in_days });
            Ok(stream)
        }
        Err((e, named)) => {
            let tls = named.unwrap_or_else(|| classify_tls_error(&e));
            let detail = match &tls {
                Tls::Untrusted(d) | Tls::NameMismatch(d) | Tls::Expired(d) => d.clone(),
                _ => e.to_string(),
            };
            run.stage("tls", Status::Failed, t, detail);
            run.o.tls = Some(tls);
            Err(())
        }
    }
}

fn leaf_facts(cert: &rustls::pki_types::CertificateDer<'_>) -> (Option<i64>, String) {
    match x509_parser::parse_x509_certificate(cert.as_ref()) {
        Ok((_, c)) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            let days = (c.validity().not_after.timestamp() - now) / 86_400;
            let names: Vec<String> = c
                .subject_alternative_name()
                .ok()
                .flatten()
                .map(|san| san.value.general_names.iter().map(|n| n.to_string()).collect())
                .unwrap_or_default();
            let subject = if names.is_empty() { c.subject().to_string() } else { names.join(" ") };
            (Some(days), subject)
        }
        Err(_) => (None, String::new()),
    }
}

fn classify_tls_error(e: &std::io::Error) -> Tls {
    use rustls::{CertificateError, Error};
    if e.kind() == std::io::ErrorKind::TimedOut {
        return Tls::Timeout;
    }
    let text = e.to_string();
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(Error::InvalidCertificate(c)) => match c {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => Tls::Untrusted(text),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                Tls::NameMismatch(text)
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => Tls::Expired(text),
            _ => Tls::Failed(text),
        },
        Some(Error::InvalidMessage(_)) => Tls::NotTls(format!("the server did not answer in TLS ({text})")),
        _ if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Tls::NotTls("the server closed the connection on the TLS ClientHello".into())
        }
        _ => Tls::Failed(text),
    }
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

fn parse_head(head: &str) -> Option<Response> {
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

type Ws = WebSocketStream<Box<dyn Io>>;

/// What came in while waiting.
enum Incoming {
    Msg(Message),
    Ended(End),
    Quiet,
}

async fn next(ws: &mut Ws, wait: Duration, opened: Instant) -> Incoming {
    match timeout(wait, ws.next()).await {
        Err(_) => Incoming::Quiet,
        Ok(Some(Ok(Message::Close(frame)))) => Incoming::Ended(End::Closed {
            code: frame.as_ref().map(|f| u16::from(f.code)).unwrap_or(1005),
            reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
            after: opened.elapsed(),
        }),
        Ok(Some(Ok(m))) => Incoming::Msg(m),
        Ok(Some(Err(_))) | Ok(None) => Incoming::Ended(End::Dropped { after: opened.elapsed() }),
    }
}

/// A holdfast server's answer to the probe's `connect` (id 1): `connected`,
/// or an `error` refusing the session.
fn holdfast_answer(text: &str) -> Option<RoundTrip> {
    text.split('\n').find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        match v["op"].as_str()? {
            "connected" => Some(RoundTrip::Holdfast {
                session: v["session"].as_str().unwrap_or_default().to_string(),
                ping_interval_ms: v["ping_interval_ms"].as_u64().unwrap_or(0),
            }),
            "error" if v["id"] == 1 => Some(RoundTrip::Refused {
                code: v["code"].as_str().unwrap_or_default().to_string(),
                message: v["message"].as_str().unwrap_or_default().chars().take(200).collect(),
            }),
            _ => None,
        }
    })
}

/// Answers a holdfast protocol ping, as every holdfast client does.
async fn answer_protocol_ping(ws: &mut Ws, m: &Message) -> bool {
    if let Message::Text(t) = m {
        if t.split('\n').any(|l| l.trim() == r#"{"op":"ping"}"#) {
            let _ = ws.send(Message::text(r#"{"op":"pong"}"#)).await;
            return true;
        }
    }
    false
}

async fn session(run: &mut Run<'_>, ws: &mut Ws, opened: Instant) {
    // Round trip: one message that a holdfast server answers with
    // `connected` and an echo server returns unchanged.
    let t = Instant::now();
    // The token goes in `connect`, where holdfast's clients send it (it
    // also went in the upgrade's Authorization header, for other servers).
    let mut probe = serde_json::json!({"id": 1, "op": "connect", "client": "holdfast-doctor"});
    if let Some(token) = &run.args.token {
        probe["token"] = token.as_str().into();
    }
    let probe = probe.to_string();
    let wait = run.args.timeout.min(Duration::from_secs(3));
    if ws.send(Message::text(probe.as_str())).await.is_err() {
        run.o.end = Some(End::Dropped { after: opened.elapsed() });
    }
    let mut round_trip = RoundTrip::NoReply;
    while run.o.end.is_none() && t.elapsed() < wait {
        match next(ws, wait.saturating_sub(t.elapsed()), opened).await {
            Incoming::Msg(m) if answer_protocol_ping(ws, &m).await => continue,
            Incoming::Msg(Message::Text(text)) => {
                round_trip = if text.as_str() == probe {
                    RoundTrip::Echo
                } else {
                    holdfast_answer(&text).unwrap_or_else(|| RoundTrip::OtherReply(text.chars().take(120).collect()))
                };
                break;
            }
            Incoming::Msg(Message::Binary(b)) => {
                round_trip = RoundTrip::OtherReply(format!("{} binary bytes", b.len()));
                break;
            }
            Incoming::Msg(_) => continue,
            Incoming::Ended(end) => run.o.end = Some(end),
            Incoming::Quiet => break,
        }
    }
    let (status, detail) = match (&round_trip, &run.o.end) {
        (_, Some(_)) => (Status::Failed, "the connection ended during the round trip".to_string()),
        (RoundTrip::Holdfast { session, ping_interval_ms }, _) => (
            Status::Ok,
            format!(
                "holdfast protocol: connected, session {}…, server pings every {} ms",
                &session[..session.len().min(8)],
                ping_interval_ms
            ),
        ),
        (RoundTrip::Refused { code, message }, _) => {
            (Status::Failed, format!("holdfast protocol: connect refused: {code}: {message}"))
        }
        (RoundTrip::Echo, _) => (Status::Ok, "the server echoed the message".into()),
        (RoundTrip::OtherReply(r), _) => (Status::Ok, format!("the server answered: {r}")),
        (RoundTrip::NoReply, _) => (Status::Ok, format!("no reply within {wait:?} (fine for push-only endpoints)")),
    };
    run.stage("round_trip", status, t, detail);
    run.o.round_trip = Some(round_trip);
    if run.o.end.is_some() {
        return close_stage(run, ws).await;
    }

    // Ping/pong.
    let t = Instant::now();
    let payload = b"holdfast-doctor".to_vec();
    let mut rtt = Err(format!("no pong within {wait:?}"));
    if ws.send(Message::Ping(payload.clone().into())).await.is_ok() {
        while t.elapsed() < wait {
            match next(ws, wait.saturating_sub(t.elapsed()), opened).await {
                Incoming::Msg(Message::Pong(p)) if p.as_ref() == payload.as_slice() => {
                    rtt = Ok(t.elapsed());
                    break;
                }
                Incoming::Msg(m) => {
                    answer_protocol_ping(ws, &m).await;
                }
                Incoming::Ended(end) => {
                    run.o.end = Some(end);
                    break;
                }
                Incoming::Quiet => break,
            }
        }
    }
    match &rtt {
        Ok(d) => run.stage("ping", Status::Ok, t, format!("pong in {:.1} ms", d.as_secs_f64() * 1000.0)),
        Err(e) => run.stage("ping", Status::Warn, t, e.clone()),
    }
    run.o.ping_rtt = Some(rtt);

    // Idle survival.
    match run.args.idle {
        Some(idle) if run.o.end.is_none() => {
            let t = Instant::now();
            run.o.idle_requested = Some(idle);
            eprintln_progress(run.args, &format!("staying idle for {} s to find idle timeouts…", idle.as_secs()));
            // A line every 15 s, so a long wait does not look like a hang.
            let mut note_at = IDLE_PROGRESS_EVERY;
            while t.elapsed() < idle {
                match next(ws, idle.min(note_at).saturating_sub(t.elapsed()), opened).await {
                    Incoming::Msg(m) => {
                        answer_protocol_ping(ws, &m).await;
                    }
                    Incoming::Ended(end) => {
                        run.o.end = Some(end);
                        break;
                    }
                    Incoming::Quiet if t.elapsed() >= note_at && t.elapsed() < idle => {
                        let note = format!("{} s of {} s, still open", whole_seconds(t.elapsed()), idle.as_secs());
                        eprintln_progress(run.args, &note);
                        note_at += IDLE_PROGRESS_EVERY;
                    }
                    Incoming::Quiet => {}
                }
            }
            let detail = match &run.o.end {
                None => format!("survived {} s without client traffic", idle.as_secs()),
                Some(End::Dropped { after }) => {
                    format!("dropped without a close frame after {} s", whole_seconds(*after))
                }
                Some(End::Closed { code, after, .. }) => {
                    format!("closed with code {code} after {} s", whole_seconds(*after))
                }
            };
            let status = if run.o.end.is_none() { Status::Ok } else { Status::Failed };
            run.stage("idle", status, t, detail);
        }
        Some(_) => run.skip("idle", "the connection had already ended"),
        None => run.skip("idle", "use --idle 75s to find proxy idle timeouts"),
    }
    close_stage(run, ws).await
}

async fn close_stage(run: &mut Run<'_>, ws: &mut Ws) {
    let t = Instant::now();
    if let Some(end) = run.o.end.clone() {
        let detail = match end {
            End::Closed { code, reason, .. } => {
                format!("the server closed with {code}{}: {}", reason_suffix(&reason), meaning(code))
            }
            End::Dropped { .. } => "the connection dropped without a close frame (1006)".into(),
        };
        run.stage("close", Status::Failed, t, detail);
        return;
    }
    let frame = CloseFrame { code: WsCode::Normal, reason: "holdfast doctor done".into() };
    let _ = ws.send(Message::Close(Some(frame))).await;
    let mut reply = None;
    while let Ok(Some(msg)) = timeout(Duration::from_secs(2), ws.next()).await {
        match msg {
            Ok(Message::Close(f)) => {
                reply = Some(f.map(|f| u16::from(f.code)).unwrap_or(1005));
                break;
            }
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    run.o.close_reply = reply;
    match reply {
        Some(code) => {
            run.stage("close", Status::Ok, t, format!("clean close: the server answered {code}: {}", meaning(code)))
        }
        None => run.stage("close", Status::Warn, t, "the server did not answer the close frame within 2 s"),
    }
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(" ({reason:?})")
    }
}

/// A close code's meaning from the table, or its range.
pub fn meaning(code: u16) -> String {
    match holdfast_protocol::CloseCode::from_code(code) {
        Some(c) => format!("{} — {}", c.name(), c.meaning()),
        None => match code {
            1005 => "no status code in the close frame".into(),
            1006 => "abnormal closure: no close frame".into(),
            1012 => "service restart".into(),
            3000..=3999 => "a library or framework code".into(),
            4000..=4499 => "an application code (holdfast: reconnect)".into(),
            4500..=4999 => "an application code (holdfast: do not reconnect)".into(),
            _ => "a code outside the ones holdfast knows".into(),
        },
    }
}

/// How often a long `--idle` wait says it is still waiting.
const IDLE_PROGRESS_EVERY: Duration = Duration::from_secs(15);

fn eprintln_progress(args: &DoctorArgs, text: &str) {
    if !args.json {
        eprintln!("  … {text}");
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
