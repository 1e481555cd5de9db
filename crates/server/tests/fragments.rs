//! A WebSocket message must arrive whole within `handshake_timeout` of its first
//! bytes, pings or not: a client that starts a message and never ends it
//! (keeping the connection alive with pings) made the server hold the
//! partial message, and twice its size, for as long as it liked.

mod common;

use common::{Client, Setup, TestServer};
use futures_util::{SinkExt, StreamExt};
use holdfast_server::ServerConfig;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

const DEADLINE: Duration = Duration::from_millis(500);

/// A server whose messages must be complete within [`DEADLINE`].
async fn server() -> TestServer {
    TestServer::start(Setup {
        server: ServerConfig { handshake_timeout: DEADLINE, ..Setup::default().server },
        ..Setup::default()
    })
    .await
}

fn fragment(opcode: Data, payload: &[u8], fin: bool) -> Message {
    Message::Frame(Frame::message(payload.to_vec(), OpCode::Data(opcode), fin))
}

/// How a connection that only pinged ended.
struct Ended {
    code: u16,
    reason: String,
    after: Duration,
    pongs: usize,
    disconnect: Option<serde_json::Value>,
}

/// Pings every 100 ms until the server closes (at most 5 s).
async fn ping_until_closed(c: &mut Client) -> Ended {
    let started = Instant::now();
    let (mut pongs, mut disconnect) = (0, None);
    while started.elapsed() < Duration::from_secs(5) {
        c.ws.send(Message::Ping(b"still here".to_vec().into())).await.unwrap();
        let until = tokio::time::Instant::now() + Duration::from_millis(100);
        while let Ok(next) = tokio::time::timeout_at(until, c.ws.next()).await {
            match next.expect("a close frame before the end").expect("no WebSocket error") {
                Message::Pong(_) => pongs += 1,
                Message::Text(t) => disconnect = Some(serde_json::from_str(&t).unwrap()),
                Message::Close(Some(f)) => {
                    let (code, reason) = (u16::from(f.code), f.reason.to_string());
                    return Ended { code, reason, after: started.elapsed(), pongs, disconnect };
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    panic!("still open after 5 s of pings ({pongs} pongs)");
}

/// The security review's connection: an anonymous client sends a 60 KiB
/// first fragment, then only pings. The pings are answered but do not
/// extend the deadline; the connection closes with 4005 (message_timeout)
/// once it has passed. On `/ws` a `disconnect` says so first, advising a
/// reconnect: a client on a slow link is not an attacker.
#[tokio::test]
async fn a_message_left_unfinished_is_closed_with_4005_whatever_the_pings() {
    let server = server().await;
    for path in ["/ws", "/echo"] {
        let subprotocol = (path == "/ws").then_some("holdfast.v1.json");
        let mut c = Client::open(&format!("ws://{}{path}", server.addr), subprotocol).await;
        c.ws.send(fragment(Data::Text, &[b' '; 60 * 1024], false)).await.unwrap();
        let ended = ping_until_closed(&mut c).await;
        assert_eq!((ended.code, ended.reason.as_str()), (4005, "message not completed within 500ms"), "{path}");
        assert!(ended.after >= DEADLINE - Duration::from_millis(50), "{path}: closed after {:?}", ended.after);
        assert!(ended.after < DEADLINE + Duration::from_secs(1), "{path}: closed after {:?}", ended.after);
        assert!(ended.pongs >= 3, "{path}: the pings were read and answered meanwhile ({} pongs)", ended.pongs);
        if path == "/ws" {
            let d = ended.disconnect.expect("a disconnect precedes the close");
            assert_eq!((d["code"].as_u64(), d["reconnect"].as_bool()), (Some(4005), Some(true)), "{d}");
        }
    }
    let line = "holdfast_close_codes_total{code=\"4005\"} 2";
    for _ in 0..200 {
        if server.metrics.render(0, 0, 0).contains(line) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(server.metrics.render(0, 0, 0).contains(line), "{line} never appeared");
    // The server still serves the next client.
    let mut c = server.connected().await;
    c.send(r#"{"id":2,"op":"subscribe","channel":"after"}"#).await;
    assert_eq!(c.recv().await["op"], "subscribed");
    server.stop().await;
}

/// The deadline is per message: fragments spread over most of it, with
/// pings between, are served, and so is the next message sent the same
/// way, though the two together take longer than the deadline.
#[tokio::test]
async fn messages_finished_in_time_are_served_each_with_its_own_deadline() {
    let server = server().await;
    let mut c = Client::open(&format!("ws://{}/echo", server.addr), None).await;
    let started = Instant::now();
    for word in ["first", "second"] {
        c.ws.send(fragment(Data::Text, word.as_bytes(), false)).await.unwrap();
        for last in [false, true] {
            tokio::time::sleep(DEADLINE * 3 / 10).await;
            c.ws.send(Message::Ping(Vec::new().into())).await.unwrap();
            c.ws.send(fragment(Data::Continue, b"!", last)).await.unwrap();
        }
        loop {
            let m = tokio::time::timeout(Duration::from_secs(5), c.ws.next()).await.unwrap().unwrap().unwrap();
            match m {
                Message::Pong(_) => {}
                Message::Text(t) => break assert_eq!(t.as_str(), format!("{word}!!")),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert!(started.elapsed() > DEADLINE, "both messages took {:?}", started.elapsed());
    server.stop().await;
}

/// One large frame that stops halfway (no pings can come between its
/// bytes) is a message not completed either: closed at the same deadline
/// rather than by the heartbeat, 25 s later by default.
#[tokio::test]
async fn a_frame_cut_off_halfway_is_closed_at_the_same_deadline() {
    let server = server().await;
    let mut s = common::raw_echo(server.addr).await;
    // A masked 60 KiB text frame (a zero mask), of which 30 KiB arrive.
    let mut frame = vec![0x81, 0x80 | 126];
    frame.extend_from_slice(&(60u16 * 1024).to_be_bytes());
    frame.extend_from_slice(&[0; 4]);
    frame.extend_from_slice(&[b' '; 30 * 1024]);
    s.write_all(&frame).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await.unwrap().unwrap();
    let waited = started.elapsed();
    assert!(answer.len() >= 4 && answer[0] == 0x88, "a close frame: {answer:?}");
    assert_eq!(u16::from_be_bytes([answer[2], answer[3]]), 4005);
    assert!(waited >= DEADLINE - Duration::from_millis(50) && waited < DEADLINE * 3, "closed after {waited:?}");
    server.stop().await;
}
