//! The HTTP API for backends, its errors, and the operational endpoints.

mod common;

use common::{Client, HttpResponse, Setup, TestServer, API_KEY};
use futures_util::{SinkExt, StreamExt};
use holdfast_server::ServerConfig;
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// A connected client subscribed to `channel`.
async fn subscriber(server: &TestServer, channel: &str) -> Client {
    let mut c = server.connected().await;
    c.send(&format!(r#"{{"id":2,"op":"subscribe","channel":"{channel}"}}"#)).await;
    let r = c.recv().await;
    assert_eq!((r["op"].as_str(), r["channel"].as_str()), (Some("subscribed"), Some(channel)), "{r}");
    c
}

/// Checks an API error: the status, `{"error": {"code", "message"}}` and
/// nothing else, JSON content type. Returns the message.
fn api_error(r: &HttpResponse, status: u16, code: &str) -> String {
    assert_eq!(r.status, status, "{}", r.body);
    assert!(r.header("content-type").is_some_and(|t| t.starts_with("application/json")), "{:?}", r.headers);
    let v = r.json();
    let e = v["error"].as_object().unwrap_or_else(|| panic!("no error object: {v}"));
    assert_eq!(v.as_object().unwrap().len(), 1, "{v}");
    assert_eq!(e["code"], code, "{v}");
    let message = e["message"].as_str().unwrap_or_else(|| panic!("no message: {v}"));
    assert!(!message.is_empty());
    message.to_string()
}

/// Reads `/metrics` and returns the value of one sample line.
async fn sample(server: &TestServer, name: &str) -> Option<String> {
    let body = server.http("GET", "/metrics", &[], "").await.body;
    body.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')).map(str::to_string))
}

/// Polls a metric until it has `want` (the server updates some gauges after
/// a connection's task winds down).
async fn sample_becomes(server: &TestServer, name: &str, want: &str) {
    let mut last = None;
    for _ in 0..100 {
        last = sample(server, name).await;
        if last.as_deref() == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{name} is {last:?}, want {want}");
}

#[tokio::test]
async fn publish_returns_channel_epoch_and_offset_and_offsets_increase_by_one() {
    let server = TestServer::default().await;
    let mut sub = subscriber(&server, "a").await;
    let mut epoch = None;
    for n in 1..=3u64 {
        let r = server.api("POST", "/api/publish", &format!(r#"{{"channel":"a","data":{{"n":{n}}}}}"#)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        assert_eq!((v["channel"].as_str(), v["offset"].as_u64()), (Some("a"), Some(n)), "{v}");
        let e = v["epoch"].as_str().expect("an epoch").to_string();
        assert!(!e.is_empty());
        assert_eq!(epoch.get_or_insert_with(|| e.clone()), &e, "one epoch for one channel");
        let m = sub.recv().await;
        assert_eq!((m["op"].as_str(), m["offset"].as_u64()), (Some("message"), Some(n)), "{m}");
        assert_eq!(m["data"], json!({"n": n}));
    }
    // Another channel has its own offsets.
    let r = server.api("POST", "/api/publish", r#"{"channel":"other","data":null}"#).await.json();
    assert_eq!(r["offset"], 1);
    server.stop().await;
}

#[tokio::test]
async fn broadcast_gives_one_result_per_channel_and_reaches_subscribers() {
    let server = TestServer::default().await;
    let mut sub = subscriber(&server, "b2").await;
    server.publish("b3", "0").await;
    let r = server.api("POST", "/api/broadcast", r#"{"channels":["b1","b2","b3"],"data":"hi"}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let results = r.json()["results"].as_array().unwrap().clone();
    let got: Vec<(&str, u64)> =
        results.iter().map(|r| (r["channel"].as_str().unwrap(), r["offset"].as_u64().unwrap())).collect();
    assert_eq!(got, [("b1", 1), ("b2", 1), ("b3", 2)]);
    assert!(results.iter().all(|r| r["epoch"].is_string()), "{results:?}");
    let m = sub.recv().await;
    assert_eq!((m["channel"].as_str(), m["data"].as_str(), m["offset"].as_u64()), (Some("b2"), Some("hi"), Some(1)));
    // One bad channel refuses the whole broadcast, naming it.
    let r = server.api("POST", "/api/broadcast", r#"{"channels":["ok","bad name"],"data":1}"#).await;
    assert!(api_error(&r, 400, "invalid_channel").contains("channels[1]"));
    server.stop().await;
}

#[tokio::test]
async fn history_with_since_and_limit() {
    let server = TestServer::default().await;
    let mut epoch = Value::Null;
    for n in 1..=6 {
        epoch = server.api("POST", "/api/publish", &format!(r#"{{"channel":"a","data":{n}}}"#)).await.json()["epoch"]
            .clone();
    }
    let h = server.api("GET", "/api/history?channel=a&since=2&limit=3", "").await;
    assert_eq!(h.status, 200, "{}", h.body);
    let h = h.json();
    assert_eq!((&h["epoch"], h["offset"].as_u64()), (&epoch, Some(6)));
    assert_eq!(h["messages"], json!([{"offset":3,"data":3},{"offset":4,"data":4},{"offset":5,"data":5}]));
    let h = server.api("GET", "/api/history?channel=a&since=4", "").await.json();
    assert_eq!(h["messages"], json!([{"offset":5,"data":5},{"offset":6,"data":6}]));
    let h = server.api("GET", "/api/history?channel=a&since=6", "").await.json();
    assert_eq!(h["messages"], json!([]));
    let all = server.api("GET", "/api/history?channel=a", "").await.json();
    let offsets: Vec<u64> = all["messages"].as_array().unwrap().iter().map(|m| m["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, [1, 2, 3, 4, 5, 6]);
    server.stop().await;
}

#[tokio::test]
async fn presence_shows_the_subscribed_session_and_channels_count_subscribers() {
    let server = TestServer::default().await;
    let mut a = server.client().await;
    a.send(r#"{"id":1,"op":"connect","client":"app/2"}"#).await;
    let session = a.recv().await["session"].as_str().unwrap().to_string();
    a.send(r#"{"id":2,"op":"subscribe","channel":"room"}"#).await;
    assert_eq!(a.recv().await["op"], "subscribed");
    let mut b = subscriber(&server, "room").await;
    b.send(r#"{"id":3,"op":"subscribe","channel":"lobby"}"#).await;
    assert_eq!(b.recv().await["op"], "subscribed");

    let p = server.api("GET", "/api/presence?channel=room", "").await;
    assert_eq!(p.status, 200, "{}", p.body);
    let p = p.json();
    assert_eq!(p["channel"], "room");
    let subs = p["subscribers"].as_array().unwrap();
    assert_eq!(subs.len(), 2, "{p}");
    assert!(subs.iter().any(|s| s["session"] == session.as_str() && s["client"] == "app/2"), "{p}");
    let p = server.api("GET", "/api/presence?channel=lobby", "").await.json();
    assert!(p["subscribers"].as_array().unwrap().iter().all(|s| s["session"] != session.as_str()), "{p}");

    let c = server.api("GET", "/api/channels", "").await.json();
    assert_eq!(c["channels"], json!([{"channel":"lobby","subscribers":1},{"channel":"room","subscribers":2}]));
    // Counts follow an unsubscribe.
    b.send(r#"{"id":4,"op":"unsubscribe","channel":"room"}"#).await;
    assert_eq!(b.recv().await["op"], "unsubscribed");
    let c = server.api("GET", "/api/channels", "").await.json();
    assert_eq!(c["channels"], json!([{"channel":"lobby","subscribers":1},{"channel":"room","subscribers":1}]));
    server.stop().await;
}

#[tokio::test]
async fn disconnect_by_session_closes_with_4500_and_no_reconnect() {
    let server = TestServer::default().await;
    let mut a = server.client().await;
    a.send(r#"{"id":1,"op":"connect"}"#).await;
    let session = a.recv().await["session"].as_str().unwrap().to_string();
    a.send(r#"{"id":2,"op":"subscribe","channel":"room"}"#).await;
    assert_eq!(a.recv().await["op"], "subscribed");
    let mut b = subscriber(&server, "room").await;

    let r = server.api("POST", "/api/disconnect", &format!(r#"{{"session":"{session}"}}"#)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"disconnected": 1, "other_nodes": 0}));
    let (d, code) = a.closed().await;
    assert_eq!(code, Some(4500));
    let d = d.expect("disconnect before close");
    assert_eq!((d["code"].as_u64(), d["reconnect"].as_bool()), (Some(4500), Some(false)), "{d}");
    // The session is still finishing its closing handshake (the client has
    // not replied yet); asking again disconnects nobody new.
    let r = server.api("POST", "/api/disconnect", &format!(r#"{{"session":"{session}"}}"#)).await;
    assert_eq!(r.json(), json!({"disconnected": 0, "other_nodes": 0}), "already disconnected");
    // Reading on sends the close reply tungstenite queued, as a browser would at once.
    let _ = tokio::time::timeout(Duration::from_secs(1), a.ws.next()).await;
    let r = server.api("POST", "/api/disconnect", r#"{"user":"nobody"}"#).await;
    assert_eq!(r.json(), json!({"disconnected": 0, "other_nodes": 0}));
    let r = server.api("POST", "/api/disconnect", r#"{}"#).await;
    api_error(&r, 400, "bad_request");

    // The other client is untouched, and presence follows.
    sample_becomes(&server, "holdfast_subscriptions", "1").await;
    let p = server.api("GET", "/api/presence?channel=room", "").await.json();
    assert_eq!(p["subscribers"].as_array().unwrap().len(), 1, "{p}");
    server.publish("room", "1").await;
    assert_eq!(b.recv().await["offset"], 1);
    sample_becomes(&server, "holdfast_close_codes_total{code=\"4500\"}", "1").await;
    server.stop().await;
}

#[tokio::test]
async fn errors_are_json_with_fitting_statuses() {
    let setup =
        Setup { server: ServerConfig { max_message_size: 1024, ..Setup::default().server }, ..Setup::default() };
    let server = TestServer::start(setup).await;
    let json = ("Content-Type", "application/json");
    let body = r#"{"channel":"a","data":1}"#;

    let r = server.http("POST", "/api/publish", &[json], body).await;
    assert!(api_error(&r, 401, "unauthorized").contains("Authorization"));
    let r = server.http("POST", "/api/publish", &[json, ("Authorization", "Bearer wrong")], body).await;
    assert_eq!(api_error(&r, 401, "unauthorized"), "wrong API key");
    let r = server.http("GET", "/api/channels", &[("Authorization", "Basic abc")], "").await;
    api_error(&r, 401, "unauthorized");
    let r = server.http("GET", "/api/history?channel=a", &[("Authorization", "Bearer wrong")], "").await;
    api_error(&r, 401, "unauthorized");

    let auth = format!("Bearer {API_KEY}");
    let auth = ("Authorization", auth.as_str());
    let r = server.http("POST", "/api/publish", &[auth, ("Content-Type", "text/plain")], body).await;
    api_error(&r, 415, "unsupported_media_type");
    let r = server.http("POST", "/api/publish", &[auth], body).await;
    api_error(&r, 415, "unsupported_media_type");

    // Over the body cap (max_message_size plus 1 KiB), and `data` over max_message_size.
    let huge = format!(r#"{{"channel":"a","data":"{}"}}"#, "x".repeat(4096));
    let r = server.http("POST", "/api/publish", &[auth, json], &huge).await;
    api_error(&r, 413, "message_too_big");
    let big = format!(r#"{{"channel":"a","data":"{}"}}"#, "x".repeat(1500));
    let r = server.api("POST", "/api/publish", &big).await;
    assert!(api_error(&r, 413, "message_too_big").contains("`data`"));

    let r = server.api("POST", "/api/publish", r#"{"channel":"a"}"#).await;
    assert!(api_error(&r, 400, "bad_request").contains("`data`"), "{}", r.body);
    let r = server.api("POST", "/api/publish", r#"{"data":1}"#).await;
    assert!(api_error(&r, 400, "bad_request").contains("`channel`"), "{}", r.body);
    let r = server.api("POST", "/api/publish", r#"{"channel":"a b","data":1}"#).await;
    api_error(&r, 400, "invalid_channel");
    let r = server.api("POST", "/api/publish", r#"{"channel":"","data":1}"#).await;
    api_error(&r, 400, "invalid_channel");
    let r = server.api("POST", "/api/publish", "not json").await;
    api_error(&r, 400, "bad_request");
    let r = server.api("GET", "/api/history?channel=a&since=minus", "").await;
    assert!(api_error(&r, 400, "bad_request").contains("`since`"), "{}", r.body);
    let r = server.api("GET", "/api/history", "").await;
    assert!(api_error(&r, 400, "bad_request").contains("`channel`"), "{}", r.body);

    let r = server.api("GET", "/api/nope", "").await;
    api_error(&r, 404, "not_found");
    let r = server.api("POST", "/api/publish/extra", body).await;
    api_error(&r, 404, "not_found");
    let r = server.api("GET", "/api/publish", "").await;
    api_error(&r, 405, "method_not_allowed");
    let r = server.api("POST", "/api/history?channel=a", "{}").await;
    api_error(&r, 405, "method_not_allowed");

    // None of it published anything.
    let h = server.api("GET", "/api/history?channel=a", "").await.json();
    assert_eq!(h["offset"], 0, "{h}");
    server.stop().await;
}

#[tokio::test]
async fn health_and_readiness() {
    let server = TestServer::default().await;
    let r = server.http("GET", "/healthz", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = server.http("GET", "/readyz", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("ready"));
    server.stop().await;
}

#[tokio::test]
async fn metrics_are_exposed_and_follow_activity() {
    let server = TestServer::default().await;
    let before = server.http("GET", "/metrics", &[], "").await;
    assert_eq!(before.status, 200);
    assert!(before.header("content-type").unwrap().starts_with("text/plain"));
    for name in [
        "holdfast_connections{transport=\"websocket\"} 0",
        "holdfast_messages_in_total 0",
        "holdfast_messages_out_total 0",
        "holdfast_subscriptions 0",
        "# TYPE holdfast_close_codes_total counter",
    ] {
        assert!(before.body.contains(name), "{name} missing:\n{}", before.body);
    }

    // A connect and a publish: two commands in, two replies out.
    let mut c = server.connected().await;
    c.send(r#"{"id":2,"op":"publish","channel":"m","data":1}"#).await;
    assert_eq!(c.recv().await["op"], "published");
    let after = server.http("GET", "/metrics", &[], "").await.body;
    for line in [
        "holdfast_messages_in_total 2",
        "holdfast_messages_out_total 2",
        "holdfast_publications_total 1",
        "holdfast_connections{transport=\"websocket\"} 1",
        "holdfast_commands_total{op=\"publish\",result=\"ok\"} 1",
        "holdfast_commands_total{op=\"connect\",result=\"ok\"} 1",
        "holdfast_fanout_seconds_count 1",
        "holdfast_fanout_seconds_bucket{le=\"+Inf\"} 1",
    ] {
        assert!(after.contains(line), "{line} missing:\n{after}");
    }

    // The subscriptions gauge equals the number of subscribed clients.
    let mut subs = Vec::new();
    for _ in 0..3 {
        subs.push(subscriber(&server, "m").await);
    }
    assert_eq!(sample(&server, "holdfast_subscriptions").await.as_deref(), Some("3"));
    assert_eq!(sample(&server, "holdfast_connections{transport=\"websocket\"}").await.as_deref(), Some("4"));
    server.publish("m", "2").await;
    for s in &mut subs {
        assert_eq!(s.recv().await["offset"], 2);
    }
    assert_eq!(sample(&server, "holdfast_messages_delivered_total").await.as_deref(), Some("3"));
    c.send(r#"{"id":4,"op":"nope"}"#).await;
    assert_eq!(c.recv().await["code"], "unknown_op");
    assert_eq!(sample(&server, "holdfast_commands_total{op=\"invalid\",result=\"error\"}").await.as_deref(), Some("1"));
    assert_eq!(sample(&server, "holdfast_command_errors_total").await.as_deref(), Some("1"));

    // A client leaves with a normal close: the gauges drop, the code is counted.
    let mut leaving = subs.pop().unwrap();
    leaving.ws.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() }))).await.unwrap();
    assert_eq!(leaving.closed().await.1, Some(1000));
    sample_becomes(&server, "holdfast_subscriptions", "2").await;
    sample_becomes(&server, "holdfast_connections{transport=\"websocket\"}", "3").await;
    sample_becomes(&server, "holdfast_close_codes_total{code=\"1000\"}", "1").await;
    assert_eq!(sample(&server, "holdfast_broker_errors_total").await.as_deref(), Some("0"));
    server.stop().await;
}
