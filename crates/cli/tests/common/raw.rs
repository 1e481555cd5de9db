//! A raw protocol client for the tests: what the server sends, with no
//! library between, so duplicates and gaps would show.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A raw protocol client: what the server sends, with no library between
/// (so duplicates and gaps would show).
pub struct Raw {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pending: VecDeque<Value>,
    pub session: String,
}

impl Raw {
    pub async fn connect(port: u16) -> Raw {
        let mut req = format!("ws://127.0.0.1:{port}/ws").into_client_request().unwrap();
        req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("holdfast.v1.json"));
        let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        let mut raw = Raw { ws, pending: VecDeque::new(), session: String::new() };
        raw.send(json!({"id": 1, "op": "connect", "client": "raw-test-client"})).await;
        let connected = raw.next().await;
        assert_eq!(connected["op"], "connected", "{connected}");
        raw.session = connected["session"].as_str().unwrap().to_string();
        raw
    }

    pub async fn subscribe(&mut self, channel: &str) -> Value {
        self.send(json!({"id": 2, "op": "subscribe", "channel": channel})).await;
        let reply = self.next().await;
        assert_eq!(reply["op"], "subscribed", "{reply}");
        reply
    }

    pub async fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }

    /// The next object other than `ping` (answered), within 10 s.
    pub async fn next(&mut self) -> Value {
        loop {
            if let Some(v) = self.pending.pop_front() {
                if v["op"] == "ping" {
                    self.send(json!({"op": "pong"})).await;
                    continue;
                }
                return v;
            }
            let msg =
                tokio::time::timeout(Duration::from_secs(10), self.ws.next()).await.expect("a message within 10 s");
            // A connection that ends without a close frame (a crashed node).
            let Some(Ok(msg)) = msg else {
                return json!({"op": "closed", "code": 1006});
            };
            match msg {
                Message::Text(t) => self
                    .pending
                    .extend(t.split('\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_str(l).unwrap())),
                Message::Close(f) => return json!({"op": "closed", "code": f.map(|f| u16::from(f.code))}),
                _ => {}
            }
        }
    }

    /// Message offsets until `last` arrives.
    pub async fn offsets_until(&mut self, last: u64) -> Vec<u64> {
        let mut got = Vec::new();
        loop {
            let v = self.next().await;
            assert_eq!(v["op"], "message", "{v}");
            let offset = v["offset"].as_u64().unwrap();
            got.push(offset);
            if offset >= last {
                return got;
            }
        }
    }
}
