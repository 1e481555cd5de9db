//! `bench-bare`: a benchmark peer for holdfast. A bare broadcast server on
//! the WebSocket stack holdfast uses (tokio + tokio-tungstenite) and no
//! holdfast crate; the protocol subset, the channels and the command line
//! are the crate's ([`holdfast_bench_bare`]).
//!
//! Usage: `bench-bare [--port P] [--pad-to BYTES]` (or `PORT=P`,
//! `PAD_TO=BYTES`; default port 8080, no padding). It listens on 127.0.0.1,
//! serves WebSocket on `/ws` and prints `listening on http://127.0.0.1:PORT`
//! once bound. `--pad-to` pads every `message` frame shorter than BYTES to
//! BYTES ([`holdfast_bench_bare::message`]).

use futures_util::{SinkExt, StreamExt};
use holdfast_bench_bare::{Queue, Session, MAX_MESSAGE_SIZE, WS_PATH};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

#[tokio::main]
async fn main() {
    holdfast_bench_bare::run("bench-bare", serve).await;
}

/// Accepts `/ws` only, and answers the holdfast subprotocol when offered.
#[expect(clippy::result_large_err, reason = "the signature of tungstenite's handshake Callback")]
fn handshake(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    if req.uri().path() != WS_PATH {
        let mut not_found = ErrorResponse::new(Some(format!("WebSocket is on {WS_PATH}\n")));
        *not_found.status_mut() = StatusCode::NOT_FOUND;
        return Err(not_found);
    }
    let offered = req.headers().get_all("sec-websocket-protocol").iter().filter_map(|v| v.to_str().ok());
    if let Some(protocol) = holdfast_bench_bare::subprotocol(offered) {
        resp.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static(protocol));
    }
    Ok(resp)
}

async fn serve(stream: TcpStream, mut session: Session<Utf8Bytes>, mut queue: Queue<Utf8Bytes>) {
    // The settings holdfast uses: a 2 KiB read buffer, 16 KiB write buffer.
    let config = WebSocketConfig::default()
        .read_buffer_size(2048)
        .write_buffer_size(16 * 1024)
        .max_message_size(Some(MAX_MESSAGE_SIZE))
        .max_frame_size(Some(MAX_MESSAGE_SIZE));
    let Ok(ws) = tokio_tungstenite::accept_hdr_async_with_config(stream, handshake, Some(config)).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let writer = tokio::spawn(async move {
        while let Some(frame) = queue.recv().await {
            sink.feed(Message::Text(frame)).await?;
            // Whatever else is queued goes out with the same flush.
            while let Ok(frame) = queue.try_recv() {
                sink.feed(Message::Text(frame)).await?;
            }
            sink.flush().await?;
        }
        sink.close().await
    });
    while let Some(Ok(msg)) = stream.next().await {
        if let Message::Text(frame) = msg {
            if !session.run(&frame).await {
                break;
            }
        }
    }
    // Leaving the channels drops the last senders of the queue: the writer ends.
    drop(session);
    let _ = writer.await;
}
