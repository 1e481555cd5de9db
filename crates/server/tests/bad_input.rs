//! Bad input gets a clear answer, loses nothing, and leaves the server
//! working for the next command and the next client.

mod common;

use common::{Client, Setup, TestServer};
use futures_util::SinkExt;
use holdfast_server::ServerConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

/// Sends one line and returns the `error` it must produce.
async fn error_for(c: &mut Client, line: &str) -> serde_json::Value {
    c.send(line).await;
    let r = c.recv().await;
    assert_eq!(r["op"], "error", "{line} → {r}");
    r
}

/// The connection still works: a subscribe succeeds.
async fn still_works(c: &mut Client, channel: &str) {
    c.send(&format!(r#"{{"id":99,"op":"subscribe","channel":"{channel}"}}"#)).await;
    let r = c.recv().await;
    assert_eq!((r["op"].as_str(), r["id"].as_u64()), (Some("subscribed"), Some(99)), "{r}");
}

#[tokio::test]
async fn malformed_commands_get_errors_and_the_connection_stays_open() {
    let server = TestServer::default().await;
    let mut c = server.connected().await;

    let r = error_for(&mut c, "{not json").await;
    assert_eq!(r["code"], "bad_json");
    assert!(r.get("id").is_none());

    let r = error_for(&mut c, "[1, 2, 3]").await;
    assert_eq!(r["code"], "bad_request");
    assert!(r["message"].as_str().unwrap().contains("object"));

    let r = error_for(&mut c, r#"{"id":4,"op":"teleport"}"#).await;
    assert_eq!((r["code"].as_str(), r["id"].as_u64()), (Some("unknown_op"), Some(4)));

    let r = error_for(&mut c, r#"{"id":5,"op":"publish","channel":"c"}"#).await;
    assert_eq!((r["code"].as_str(), r["id"].as_u64()), (Some("bad_request"), Some(5)));
    assert!(r["message"].as_str().unwrap().contains("`data`"), "{r}");

    let r = error_for(&mut c, r#"{"id":6,"op":"subscribe","channel":42}"#).await;
    assert_eq!((r["code"].as_str(), r["id"].as_u64()), (Some("bad_request"), Some(6)));
    assert!(r["message"].as_str().unwrap().contains("`channel`"), "{r}");

    let r = error_for(&mut c, r#"{"id":"seven","op":"connect"}"#).await;
    assert!(r["message"].as_str().unwrap().contains("`id`"), "{r}");

    let r = error_for(&mut c, r#"{"id":8,"op":"subscribe","channel":""}"#).await;
    assert_eq!((r["code"].as_str(), r["id"].as_u64()), (Some("invalid_channel"), Some(8)));
    let long = "x".repeat(256);
    let r = error_for(&mut c, &format!(r#"{{"id":9,"op":"subscribe","channel":"{long}"}}"#)).await;
    assert_eq!(r["code"], "invalid_channel");
    assert!(r["message"].as_str().unwrap().contains("255"), "{r}");

    let r = error_for(&mut c, r#"{"id":10,"op":"connect"}"#).await;
    assert_eq!(r["code"], "already_connected");

    still_works(&mut c, "after-errors").await;
    let r = error_for(&mut c, r#"{"id":11,"op":"subscribe","channel":"after-errors"}"#).await;
    assert_eq!((r["code"].as_str(), r["id"].as_u64()), (Some("already_subscribed"), Some(11)));
    let r = error_for(&mut c, r#"{"id":12,"op":"unsubscribe","channel":"never"}"#).await;
    assert_eq!((r["code"].as_str(), r["id"].as_u64()), (Some("not_subscribed"), Some(12)));

    // Nothing was lost: a publication still arrives.
    server.publish("after-errors", "1").await;
    assert_eq!(c.recv().await["offset"], 1);
    assert!(server.metrics.render(0, 0).contains("holdfast_command_errors_total 11"));
    server.stop().await;
}

#[tokio::test]
async fn commands_before_connect_are_refused() {
    let server = TestServer::default().await;
    let mut c = server.client().await;
    for (id, line) in [
        (1, r#"{"id":1,"op":"subscribe","channel":"a"}"#),
        (2, r#"{"id":2,"op":"publish","channel":"a","data":1}"#),
        (3, r#"{"id":3,"op":"unsubscribe","channel":"a"}"#),
    ] {
        let r = error_for(&mut c, line).await;
        assert_eq!((r["code"].as_str(), r["id"].as_u64()), (Some("not_connected"), Some(id)));
    }
    c.send(r#"{"id":4,"op":"connect"}"#).await;
    assert_eq!(c.recv().await["op"], "connected");
    server.stop().await;
}

#[tokio::test]
async fn several_commands_in_one_frame_each_get_their_reply_in_order() {
    let server = TestServer::default().await;
    let mut c = server.client().await;
    c.send("{\"id\":1,\"op\":\"connect\"}\n{\"id\":2,\"op\":\"subscribe\",\"channel\":\"m\"}\n\n{oops\n{\"id\":3,\"op\":\"publish\",\"channel\":\"m\",\"data\":{\"k\":true}}")
        .await;
    let mut got = Vec::new();
    for _ in 0..5 {
        let r = c.recv().await;
        got.push((r["op"].as_str().unwrap().to_string(), r["id"].as_u64()));
    }
    // The publication reaches the subscribed sender too; its reply and the
    // message may come in either order after the error.
    assert_eq!(got[0], ("connected".into(), Some(1)));
    assert_eq!(got[1], ("subscribed".into(), Some(2)));
    assert_eq!(got[2], ("error".into(), None));
    let mut tail = got[3..].to_vec();
    tail.sort();
    assert_eq!(tail, vec![("message".into(), None), ("published".into(), Some(3))]);
    server.stop().await;
}

#[tokio::test]
async fn an_oversized_frame_closes_with_1009_and_others_carry_on() {
    let setup =
        Setup { server: ServerConfig { max_message_size: 1024, ..Setup::default().server }, ..Setup::default() };
    let server = TestServer::start(setup).await;
    let mut c = server.connected().await;
    let big = format!(r#"{{"id":2,"op":"publish","channel":"c","data":"{}"}}"#, "x".repeat(2000));
    c.send(&big).await;
    let (disconnect, code) = c.closed().await;
    assert_eq!(code, Some(1009));
    let d = disconnect.expect("a disconnect message precedes the close");
    assert_eq!((d["code"].as_u64(), d["reconnect"].as_bool()), (Some(1009), Some(false)));
    let mut other = server.connected().await;
    still_works(&mut other, "c").await;
    server.stop().await;
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    let server = TestServer::default().await;
    let mut c = server.connected().await;
    let frame = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    c.ws.send(Message::Frame(frame)).await.unwrap();
    let (_, code) = c.closed().await;
    assert_eq!(code, Some(1007));
    still_works(&mut server.connected().await, "ok").await;
    server.stop().await;
}

#[tokio::test]
async fn binary_frames_close_with_1003_and_a_reason() {
    let server = TestServer::default().await;
    let mut c = server.connected().await;
    c.ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    let (disconnect, code) = c.closed().await;
    assert_eq!(code, Some(1003));
    assert!(disconnect.unwrap()["reason"].as_str().unwrap().contains("text"));
    server.stop().await;
}

#[tokio::test]
async fn http_requests_on_ws_get_an_explanation() {
    let server = TestServer::default().await;
    let r = server.http("GET", "/ws", &[], "").await;
    assert_eq!(r.status, 426);
    assert!(r.body.contains("Upgrade"), "{}", r.body);

    let r = server.http("GET", "/ws", &[("X-Forwarded-For", "10.0.0.1")], "").await;
    assert_eq!(r.status, 426);
    assert!(r.body.contains("proxy") && r.body.contains("holdfast nginx"), "{}", r.body);

    let r = server.http("GET", "/ws", &[("Accept", "text/html")], "").await;
    assert!(r.body.contains("new WebSocket"), "{}", r.body);

    let upgrade = [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13")];
    let r = server.http("GET", "/ws", &[upgrade[0], upgrade[1], ("Sec-WebSocket-Version", "8")], "").await;
    assert_eq!((r.status, r.header("sec-websocket-version")), (426, Some("13")));

    let r = server.http("GET", "/ws", &upgrade, "").await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("Sec-WebSocket-Key"), "{}", r.body);

    let r = server.http("POST", "/ws", &upgrade, "").await;
    assert_eq!((r.status, r.header("allow")), (405, Some("GET")));

    let r =
        common::raw_http(server.addr, "GET /ws HTTP/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n").await;
    assert_eq!(r.status, 426);
    assert!(r.body.contains("HTTP/1.0"), "{}", r.body);

    let mut with_key = upgrade.to_vec();
    with_key.push(("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="));
    with_key.push(("Sec-WebSocket-Protocol", "mqtt, stomp"));
    let r = server.http("GET", "/ws", &with_key, "").await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("holdfast.v1.json") && r.body.contains("mqtt"), "{}", r.body);
    server.stop().await;
}

#[tokio::test]
async fn subprotocol_is_optional() {
    let server = TestServer::default().await;
    let with = server.client().await;
    assert_eq!(with.protocol.as_deref(), Some("holdfast.v1.json"));
    let mut without = Client::open(&server.ws_url(), None).await;
    assert_eq!(without.protocol, None);
    without.send(r#"{"id":1,"op":"connect"}"#).await;
    assert_eq!(without.recv().await["op"], "connected");
    let both = Client::open(&server.ws_url(), Some("v0.legacy, holdfast.v1.json")).await;
    assert_eq!(both.protocol.as_deref(), Some("holdfast.v1.json"));
    server.stop().await;
}
