//! `bench-tokio-websockets`: a benchmark peer for holdfast. A bare broadcast
//! server on tokio-websockets (tokio-util codecs, vectored writes of shared
//! payloads: the leanest of tokio's WebSocket libraries) and no holdfast
//! crate; the protocol subset, the channels and the command line are the
//! crate's ([`holdfast_bench_bare`]), the same as `bench-bare`'s.
//!
//! Usage: `bench-tokio-websockets [--port P] [--pad-to BYTES]` (or `PORT=P`,
//! `PAD_TO=BYTES`; default port 8080, no padding). It listens on 127.0.0.1,
//! serves WebSocket on `/ws` and prints `listening on http://127.0.0.1:PORT`
//! once bound. `--pad-to` pads every `message` frame shorter than BYTES to
//! BYTES ([`holdfast_bench_bare::message`]).

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use holdfast_bench_bare::{Queue, Session, MAX_MESSAGE_SIZE, WS_PATH};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_websockets::{Config, Limits, Message, Payload, ServerBuilder};

/// The longest upgrade request accepted, headers included.
const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// What RFC 6455 appends to the client's key before hashing it into `Sec-WebSocket-Accept`.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

const BAD_REQUEST: &str = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

#[tokio::main]
async fn main() {
    holdfast_bench_bare::run("bench-tokio-websockets", serve).await;
}

async fn serve(mut stream: TcpStream, mut session: Session<Payload>, mut queue: Queue<Payload>) {
    if !upgrade(&mut stream).await {
        return;
    }
    // Flushed at 16 KiB queued at the latest, as holdfast's write buffer.
    let ws = ServerBuilder::new()
        .config(Config::default().flush_threshold(16 * 1024))
        .limits(Limits::default().max_payload_len(Some(MAX_MESSAGE_SIZE)))
        .serve(stream);
    let (mut sink, mut stream) = ws.split();
    let writer = tokio::spawn(async move {
        while let Some(frame) = queue.recv().await {
            sink.feed(Message::text(frame)).await?;
            // Whatever else is queued goes out with the same flush.
            while let Ok(frame) = queue.try_recv() {
                sink.feed(Message::text(frame)).await?;
            }
            sink.flush().await?;
        }
        sink.close().await
    });
    while let Some(Ok(msg)) = stream.next().await {
        if let Some(frame) = msg.as_text() {
            if !session.run(frame).await {
                break;
            }
        }
    }
    // Leaving the channels drops the last senders of the queue: the writer ends.
    drop(session);
    let _ = writer.await;
}

/// Reads the HTTP upgrade request and answers it; true once the connection
/// speaks WebSocket. tokio-websockets' own `ServerBuilder::accept` writes
/// response headers fixed before the request is read, so it can neither
/// answer the subprotocol only to clients that offer it nor refuse other
/// paths: the handshake is done here and the socket handed to `serve`.
async fn upgrade(stream: &mut TcpStream) -> bool {
    let mut head = Vec::with_capacity(1024);
    let answer = loop {
        match stream.read_buf(&mut head).await {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&head) {
            Ok(httparse::Status::Partial) if head.len() < MAX_REQUEST_HEAD => continue,
            // A client sends nothing after the request before it has the answer
            // (RFC 6455, 4.1): anything more would be lost to the codec.
            Ok(httparse::Status::Complete(len)) if len == head.len() => break answer(&request),
            _ => break Err(BAD_REQUEST.to_owned()),
        }
    };
    let upgraded = answer.is_ok();
    let response = answer.unwrap_or_else(|refusal| refusal);
    stream.write_all(response.as_bytes()).await.is_ok() && upgraded
}

/// The answer to a complete request: `Ok` with the 101 response, or `Err`
/// with a 404 (a path other than `/ws`) or a 400 (no WebSocket upgrade).
fn answer(request: &httparse::Request) -> Result<String, String> {
    let path = request.path.unwrap_or_default();
    if path.split('?').next() != Some(WS_PATH) {
        let body = format!("WebSocket is on {WS_PATH}\n");
        let len = body.len();
        return Err(format!("HTTP/1.1 404 Not Found\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n{body}"));
    }
    let values = |name: &'static str| {
        request
            .headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
    };
    let lists =
        |name, token: &str| values(name).flat_map(|v| v.split(',')).any(|v| v.trim().eq_ignore_ascii_case(token));
    let upgrade = request.method == Some("GET")
        && lists("upgrade", "websocket")
        && lists("connection", "upgrade")
        && lists("sec-websocket-version", "13");
    let (true, Some(key)) = (upgrade, values("sec-websocket-key").next()) else {
        return Err(BAD_REQUEST.to_owned());
    };
    let digest = Sha1::new().chain_update(key.trim()).chain_update(ACCEPT_GUID).finalize();
    let accept = base64::engine::general_purpose::STANDARD.encode(digest);
    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
    );
    if let Some(protocol) = holdfast_bench_bare::subprotocol(values("sec-websocket-protocol")) {
        response += &format!("Sec-WebSocket-Protocol: {protocol}\r\n");
    }
    response += "\r\n";
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer_to(head: &str) -> Result<String, String> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        assert!(request.parse(head.as_bytes()).expect("a valid request").is_complete());
        answer(&request)
    }

    const UPGRADE: &str = "Host: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
        Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

    #[test]
    fn an_upgrade_on_ws_is_answered_with_the_rfc_accept_key_and_the_offered_subprotocol() {
        let plain = answer_to(&format!("GET /ws HTTP/1.1\r\n{UPGRADE}\r\n")).expect("upgraded");
        // The example of RFC 6455, 1.3.
        assert!(plain.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"), "{plain}");
        assert!(!plain.contains("Sec-WebSocket-Protocol"), "{plain}");
        let offered = answer_to(&format!(
            "GET /ws?x=1 HTTP/1.1\r\n{UPGRADE}Sec-WebSocket-Protocol: chat, holdfast.v1.json\r\n\r\n"
        ))
        .expect("upgraded");
        assert!(offered.ends_with("Sec-WebSocket-Protocol: holdfast.v1.json\r\n\r\n"), "{offered}");
    }

    #[test]
    fn other_paths_and_other_requests_are_refused() {
        assert!(answer_to(&format!("GET /other HTTP/1.1\r\n{UPGRADE}\r\n")).unwrap_err().starts_with("HTTP/1.1 404"));
        assert!(answer_to("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n").unwrap_err().starts_with("HTTP/1.1 400"));
        assert!(answer_to(&format!("POST /ws HTTP/1.1\r\n{UPGRADE}\r\n")).unwrap_err().starts_with("HTTP/1.1 400"));
    }
}
