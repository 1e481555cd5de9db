//! `GET /api/diagnosis`: one HTTP/1.1 request with `Connection: close`,
//! written and read by hand over the probe's own layers (the forward proxy
//! the environment names, rustls for `https://`), because the doctor
//! carries no HTTP client and one GET needs none.
//!
//! Every way it can fail is a [`FetchError`] whose message says what to do.

use std::fmt;

use holdfast_protocol::Diagnosis;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::observe::Response;
use crate::probe::{open_tunnel, parse_head, tls_connect, Io};
use crate::target::{self, Target};
use crate::{proxy, DoctorArgs};

/// The API path; the URL's own path is ignored, as `holdfast pub` does.
const PATH: &str = "/api/diagnosis";

/// The most of an answer read: a diagnosis is a few kilobytes.
const MAX_ANSWER: usize = 4 << 20;

/// Why there is no diagnosis to show.
#[derive(Debug)]
pub(crate) enum FetchError {
    /// The URL (or the proxy setting) cannot be used.
    Url(String),
    /// No HTTP answer: DNS, TCP, the proxy's tunnel, TLS or a timeout.
    Unreachable(String),
    /// 401 or 403: the key is wrong, or none was given.
    KeyRefused { sent: bool, status: u16 },
    /// Another status than 200.
    Status { status: u16, reason: String, body: String },
    /// A 200 whose body is not a diagnosis.
    NotADiagnosis(String),
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Url(e) => write!(f, "{e}"),
            FetchError::Unreachable(e) => write!(f, "cannot reach the server: {e}"),
            FetchError::KeyRefused { sent: true, status } => write!(
                f,
                "the API key was refused (HTTP {status}): pass the server's api_key with --api-key or \
                 HOLDFAST_API_KEY"
            ),
            FetchError::KeyRefused { sent: false, status } => {
                write!(f, "the server wants its API key (HTTP {status}): pass it with --api-key or HOLDFAST_API_KEY")
            }
            FetchError::Status { status: 404, .. } => write!(
                f,
                "the server has no {PATH} (HTTP 404): it is not holdfast, or a holdfast too old to diagnose its \
                 sessions"
            ),
            FetchError::Status { status, reason, body } => {
                write!(f, "the server answered {status} {reason} to GET {PATH}")?;
                let line = body.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
                if !line.is_empty() {
                    write!(f, ": {}", line.chars().take(200).collect::<String>())?;
                }
                Ok(())
            }
            FetchError::NotADiagnosis(e) => {
                write!(f, "the answer to GET {PATH} is not a diagnosis ({e}): is this a holdfast server?")
            }
        }
    }
}

/// Fetches and reads the diagnosis of the node at `server` (http(s):// or
/// ws(s)://; the path is ignored).
pub(crate) async fn fetch(args: &DoctorArgs, server: &str, key: Option<&str>) -> Result<Diagnosis, FetchError> {
    let target = target::parse(server).map_err(|e| FetchError::Url(format!("--server {server}: {e}")))?;
    let mut io = connect(args, &target).await?;
    let mut request = format!(
        "GET {PATH} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nUser-Agent: holdfast-doctor/{}\r\n\
         Connection: close\r\n",
        target.host_header(),
        env!("CARGO_PKG_VERSION")
    );
    if let Some(key) = key {
        request.push_str(&format!("Authorization: Bearer {key}\r\n"));
    }
    request.push_str("\r\n");
    let answer = async {
        io.write_all(request.as_bytes()).await?;
        // Up to the end of the body, or the close: a server that keeps
        // the connection open anyway is not waited for.
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        while buf.len() < MAX_ANSWER && !complete(&buf) {
            match io.read(&mut chunk).await? {
                0 => break,
                n => buf.extend_from_slice(&chunk[..n]),
            }
        }
        Ok::<_, std::io::Error>(buf)
    };
    let answer = match timeout(args.timeout, answer).await {
        Ok(Ok(buf)) => buf,
        Ok(Err(e)) => return Err(FetchError::Unreachable(format!("{}: {e}", target.host_header()))),
        Err(_) => {
            return Err(FetchError::Unreachable(format!(
                "{} did not answer within {:?}",
                target.host_header(),
                args.timeout
            )))
        }
    };
    read_answer(&answer, key.is_some())
}

/// A connection to the target: through the forward proxy if one applies,
/// then TLS for `https://` and `wss://`.
async fn connect(args: &DoctorArgs, target: &Target) -> Result<Box<dyn Io>, FetchError> {
    let unreachable = FetchError::Unreachable;
    let proxy = proxy::choose(target, args.proxy.as_deref(), args.no_proxy, |n| std::env::var(n).ok())
        .map_err(FetchError::Url)?;
    let (host, port) = match &proxy {
        Some(p) => (p.host.as_str(), p.port),
        None => (target.host.as_str(), target.port),
    };
    let via = proxy.as_ref().map(|p| format!(" (the proxy {}, from {})", p.shown, p.source)).unwrap_or_default();
    let tcp = match timeout(args.timeout, TcpStream::connect((host, port))).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(unreachable(format!("{host}:{port}{via}: {e}"))),
        Err(_) => return Err(unreachable(format!("{host}:{port}{via}: no answer within {:?}", args.timeout))),
    };
    let tcp = match &proxy {
        Some(p) => open_tunnel(tcp, target, p, args.timeout).await.map_err(|answer| {
            unreachable(format!(
                "the proxy {} (from {}) refused to open a tunnel: {} {}",
                p.shown, p.source, answer.status, answer.reason
            ))
        })?,
        None => tcp,
    };
    if !target.tls {
        return Ok(Box::new(tcp));
    }
    match tls_connect(args, target, tcp).await {
        Ok(tls) => Ok(Box::new(tls)),
        Err((e, _)) => Err(unreachable(format!(
            "TLS with {}: {e} (for a private CA, pass --ca-file CA.pem)",
            target.host_header()
        ))),
    }
}

/// The answer's head, parsed, and the bytes after it.
fn split_head(raw: &[u8]) -> Option<(Response, &[u8])> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    Some((parse_head(&String::from_utf8_lossy(&raw[..head_end]))?, &raw[head_end..]))
}

/// The body's length as the head declares it, when it does.
fn content_length(r: &Response) -> Option<usize> {
    r.header("content-length").and_then(|l| l.trim().parse().ok())
}

/// Whether `raw` holds a whole answer (so far as its head says).
fn complete(raw: &[u8]) -> bool {
    match split_head(raw) {
        None => false,
        Some((r, rest)) if r.header_has_token("transfer-encoding", "chunked") => dechunk(rest).is_some(),
        Some((r, rest)) => content_length(&r).is_some_and(|len| rest.len() >= len),
    }
}

/// Reads the raw answer: status, then the body (`Content-Length`,
/// chunked, or up to the close).
fn read_answer(raw: &[u8], key_sent: bool) -> Result<Diagnosis, FetchError> {
    let (response, rest) = split_head(raw)
        .ok_or_else(|| FetchError::NotADiagnosis(format!("not an HTTP answer: {:?}", first_bytes(raw))))?;
    let body = if response.header_has_token("transfer-encoding", "chunked") {
        dechunk(rest).ok_or_else(|| FetchError::NotADiagnosis("a broken chunked body".into()))?
    } else {
        match content_length(&response) {
            Some(len) => rest[..len.min(rest.len())].to_vec(),
            None => rest.to_vec(),
        }
    };
    match response.status {
        200 => serde_json::from_slice(&body)
            .map_err(|e| FetchError::NotADiagnosis(format!("{e}; the body begins {:?}", first_bytes(&body)))),
        401 | 403 => Err(FetchError::KeyRefused { sent: key_sent, status: response.status }),
        status => Err(FetchError::Status {
            status,
            reason: response.reason,
            body: String::from_utf8_lossy(&body).chars().take(2048).collect(),
        }),
    }
}

/// A chunked body's data; `None` when the framing is broken.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size..)?.strip_prefix(b"\r\n")?;
    }
}

fn first_bytes(b: &[u8]) -> String {
    String::from_utf8_lossy(b).chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::net::TcpListener;

    fn args() -> DoctorArgs {
        DoctorArgs { no_proxy: true, timeout: Duration::from_secs(5), ..DoctorArgs::default() }
    }

    /// A server that answers one connection with `answer` and hands back
    /// the request it read.
    async fn answering(answer: Vec<u8>) -> (String, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/ws", listener.local_addr().unwrap());
        let served = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut chunk = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = tcp.read(&mut chunk).await.unwrap();
                assert!(n > 0, "the request ended early");
                request.extend_from_slice(&chunk[..n]);
            }
            tcp.write_all(&answer).await.unwrap();
            String::from_utf8(request).unwrap()
        });
        (url, served)
    }

    fn http(status: &str, headers: &str, body: &str) -> Vec<u8> {
        format!("HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
    }

    const DIAGNOSIS: &str = r#"{"node":"n1","since_ms":1714557600000,"ended":{"websocket":9,"sse":1,"poll":0},
        "dropped":4,"reports":2,"unreadable_reports":0,"findings":[{"cause":"idle_timeout","count":4,
        "first_seen_ms":1714557600000,"last_seen_ms":1714557660000,"peer":"10.0.0.5","silence_ms":60000,
        "examples":["a","b"]}]}"#;

    #[tokio::test]
    async fn reads_a_diagnosis_and_sends_the_key() {
        let (url, served) = answering(http("200 OK", "Content-Type: application/json\r\n", DIAGNOSIS)).await;
        let d = fetch(&args(), &url, Some("sekrit")).await.unwrap();
        let request = served.await.unwrap();
        assert!(request.starts_with("GET /api/diagnosis HTTP/1.1\r\n"), "{request}");
        assert!(request.contains("\r\nAuthorization: Bearer sekrit\r\n"), "{request}");
        assert_eq!((d.node.as_deref(), d.ended.total(), d.findings.len()), (Some("n1"), 10, 1));
        assert_eq!(d.findings[0].silence_ms, Some(60_000));
        assert!(d.findings[0].summary.is_empty(), "filling it is the caller's job");
    }

    #[tokio::test]
    async fn reads_a_chunked_body_from_a_ws_url() {
        let (half, rest) = DIAGNOSIS.split_at(40);
        let body = format!("{:x}\r\n{half}\r\n{:x};ext=1\r\n{rest}\r\n0\r\n\r\n", half.len(), rest.len());
        let answer = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{body}").into_bytes();
        let (url, _served) = answering(answer).await;
        let url = url.replace("http://", "ws://");
        let d = fetch(&args(), &url, None).await.unwrap();
        assert_eq!(d.findings[0].examples, ["a", "b"]);
    }

    #[tokio::test]
    async fn a_refused_key_says_so() {
        let body = r#"{"error":{"code":"unauthorized","message":"wrong API key"}}"#;
        let (url, _served) = answering(http("401 Unauthorized", "", body)).await;
        let e = fetch(&args(), &url, Some("wrong")).await.unwrap_err();
        assert!(e.to_string().starts_with("the API key was refused (HTTP 401)"), "{e}");

        let (url, _served) = answering(http("401 Unauthorized", "", body)).await;
        let e = fetch(&args(), &url, None).await.unwrap_err();
        assert!(e.to_string().contains("wants its API key") && e.to_string().contains("--api-key"), "{e}");
    }

    #[tokio::test]
    async fn garbage_and_other_statuses_say_what_came() {
        let (url, _served) = answering(http("200 OK", "Content-Type: text/html\r\n", "<html>hello</html>")).await;
        let e = fetch(&args(), &url, Some("k")).await.unwrap_err();
        assert!(matches!(e, FetchError::NotADiagnosis(_)), "{e:?}");
        assert!(e.to_string().contains("not a diagnosis") && e.to_string().contains("<html>hello"), "{e}");

        let (url, _served) = answering(b"SSH-2.0-OpenSSH_9.6\r\n".to_vec()).await;
        let e = fetch(&args(), &url, Some("k")).await.unwrap_err();
        assert!(e.to_string().contains("not an HTTP answer") && e.to_string().contains("SSH-2.0"), "{e}");

        let (url, _served) = answering(http("404 Not Found", "", "")).await;
        let e = fetch(&args(), &url, Some("k")).await.unwrap_err();
        assert!(e.to_string().contains("no /api/diagnosis (HTTP 404)"), "{e}");

        let (url, _served) = answering(http("502 Bad Gateway", "Server: nginx\r\n", "<h1>502 Bad Gateway</h1>")).await;
        let e = fetch(&args(), &url, Some("k")).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "the server answered 502 Bad Gateway to GET /api/diagnosis: <h1>502 Bad Gateway</h1>"
        );
    }

    #[tokio::test]
    async fn unreachable_and_bad_urls_say_so() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let e = fetch(&args(), &format!("http://{addr}"), Some("k")).await.unwrap_err();
        assert!(matches!(e, FetchError::Unreachable(_)), "{e:?}");
        assert!(e.to_string().starts_with(&format!("cannot reach the server: {addr}: ")), "{e}");

        let e = fetch(&args(), "ftp://example.com", Some("k")).await.unwrap_err();
        assert!(matches!(e, FetchError::Url(_)) && e.to_string().contains("--server ftp://example.com"), "{e}");
    }
}
