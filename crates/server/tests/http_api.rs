//! The HTTP API for backends, its errors, and the operational endpoints.

mod common;

use common::{TestServer, API_KEY};
use serde_json::json;

#[tokio::test]
async fn publish_broadcast_and_history() {
    let server = TestServer::default().await;
    let mut sub = server.connected().await;
    sub.send(r#"{"id":2,"op":"subscribe","channel":"b2"}"#).await;
    assert_eq!(sub.recv().await["op"], "subscribed");

    let first = server.api("POST", "/api/publish", r#"{"channel":"a","data":{"n":1}}"#).await;
    assert_eq!(first.status, 200);
    let first = first.json();
    assert_eq!((first["channel"].as_str(), first["offset"].as_u64()), (Some("a"), Some(1)));
    let second = server.api("POST", "/api/publish", r#"{"channel":"a","data":[2]}"#).await.json();
    assert_eq!((second["offset"].as_u64(), &second["epoch"]), (Some(2), &first["epoch"]));

    let r = server.api("POST", "/api/broadcast", r#"{"channels":["b1","b2","b3"],"data":"hi"}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let results = r.json()["results"].as_array().unwrap().clone();
    let names: Vec<&str> = results.iter().map(|r| r["channel"].as_str().unwrap()).collect();
    assert_eq!(names, ["b1", "b2", "b3"]);
    assert!(results.iter().all(|r| r["offset"] == 1));
    let m = sub.recv().await;
    assert_eq!((m["channel"].as_str(), m["data"].as_str()), (Some("b2"), Some("hi")));

    for n in 3..=6 {
        server.api("POST", "/api/publish", &format!(r#"{{"channel":"a","data":{n}}}"#)).await;
    }
    let h = server.api("GET", "/api/history?channel=a&since=2&limit=3", "").await.json();
    assert_eq!(h["offset"], 6);
    assert_eq!(h["epoch"], first["epoch"]);
    assert_eq!(h["messages"], json!([{"offset":3,"data":3},{"offset":4,"data":4},{"offset":5,"data":5}]));
    let all = server.api("GET", "/api/history?channel=a", "").await.json();
    assert_eq!(all["messages"].as_array().unwrap().len(), 6);
    assert_eq!(all["messages"][0], json!({"offset":1,"data":{"n":1}}));
    server.stop().await;
}

#[tokio::test]
async fn presence_channels_and_disconnect() {
    let server = TestServer::default().await;
    let mut a = server.client().await;
    a.send(r#"{"id":1,"op":"connect","client":"app/2"}"#).await;
    let session = a.recv().await["session"].as_str().unwrap().to_string();
    a.send(r#"{"id":2,"op":"subscribe","channel":"room"}"#).await;
    a.recv().await;
    let mut b = server.connected().await;
    for (i, ch) in ["room", "lobby"].iter().enumerate() {
        b.send(&format!(r#"{{"id":{},"op":"subscribe","channel":"{ch}"}}"#, i + 2)).await;
        b.recv().await;
    }

    let p = server.api("GET", "/api/presence?channel=room", "").await.json();
    let subs = p["subscribers"].as_array().unwrap();
    assert_eq!(subs.len(), 2);
    assert!(subs.iter().any(|s| s["session"] == session.as_str() && s["client"] == "app/2"), "{p}");

    let c = server.api("GET", "/api/channels", "").await.json();
    assert_eq!(c["channels"], json!([{"channel":"lobby","subscribers":1},{"channel":"room","subscribers":2}]));
    let metrics = server.http("GET", "/metrics", &[], "").await.body;
    assert!(metrics.contains("holdfast_subscriptions 3"), "{metrics}");
    assert!(metrics.contains("holdfast_connections{transport=\"websocket\"} 2"), "{metrics}");

    let r = server.api("POST", "/api/disconnect", &format!(r#"{{"session":"{session}"}}"#)).await;
    assert_eq!(r.json(), json!({"disconnected": 1}));
    let (d, code) = a.closed().await;
    assert_eq!(code, Some(4500));
    let d = d.unwrap();
    assert_eq!((d["code"].as_u64(), d["reconnect"].as_bool()), (Some(4500), Some(false)));
    let r = server.api("POST", "/api/disconnect", r#"{"user":"nobody"}"#).await;
    assert_eq!(r.json(), json!({"disconnected": 0}));
    let r = server.api("POST", "/api/disconnect", r#"{}"#).await;
    assert_eq!(r.status, 400);

    // Presence follows: only b is left in the room.
    let mut left = 2;
    for _ in 0..100 {
        left =
            server.api("GET", "/api/presence?channel=room", "").await.json()["subscribers"].as_array().unwrap().len();
        if left == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(left, 1);
    let metrics = server.http("GET", "/metrics", &[], "").await.body;
    assert!(metrics.contains("holdfast_close_codes_total{code=\"4500\"} 1"), "{metrics}");
    server.stop().await;
}

#[tokio::test]
async fn errors_are_json_with_fitting_statuses() {
    let server = TestServer::default().await;
    let json = ("Content-Type", "application/json");
    let body = r#"{"channel":"a","data":1}"#;

    let r = server.http("POST", "/api/publish", &[json], body).await;
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (401, Some("unauthorized")));
    let r = server.http("POST", "/api/publish", &[json, ("Authorization", "Bearer wrong")], body).await;
    assert_eq!((r.status, r.json()["error"]["message"].as_str()), (401, Some("wrong API key")));
    let r = server.http("GET", "/api/channels", &[("Authorization", "Basic abc")], "").await;
    assert_eq!(r.status, 401);

    let auth = format!("Bearer {API_KEY}");
    let auth = ("Authorization", auth.as_str());
    let r = server.http("POST", "/api/publish", &[auth, ("Content-Type", "text/plain")], body).await;
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (415, Some("unsupported_media_type")));

    let huge = format!(r#"{{"channel":"a","data":"{}"}}"#, "x".repeat(200_000));
    let r = server.http("POST", "/api/publish", &[auth, json], &huge).await;
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (413, Some("message_too_big")));

    let r = server.api("POST", "/api/publish", r#"{"channel":"a"}"#).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("`data`"), "{}", r.body);
    let r = server.api("POST", "/api/publish", r#"{"channel":"a b","data":1}"#).await;
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (400, Some("invalid_channel")));
    let r = server.api("POST", "/api/publish", "not json").await;
    assert_eq!(r.status, 400);
    let r = server.api("GET", "/api/history?channel=a&since=minus", "").await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("`since`"), "{}", r.body);
    let r = server.api("GET", "/api/history", "").await;
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("`channel`"), "{}", r.body);

    let r = server.api("GET", "/api/nope", "").await;
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (404, Some("not_found")));
    let r = server.api("GET", "/api/publish", "").await;
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (405, Some("method_not_allowed")));
    server.stop().await;
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let server = TestServer::default().await;
    assert_eq!(server.http("GET", "/healthz", &[], "").await.status, 200);
    assert_eq!(server.http("GET", "/readyz", &[], "").await.status, 200);
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
    let mut c = server.connected().await;
    c.send(r#"{"id":2,"op":"publish","channel":"m","data":1}"#).await;
    c.recv().await;
    let after = server.http("GET", "/metrics", &[], "").await.body;
    assert!(after.contains("holdfast_messages_in_total 2"), "{after}");
    assert!(after.contains("holdfast_messages_out_total 2"), "{after}");
    assert!(after.contains("holdfast_publications_total 1"), "{after}");
    assert!(after.contains("holdfast_connections{transport=\"websocket\"} 1"), "{after}");
    assert!(after.contains("holdfast_commands_total{op=\"publish\",result=\"ok\"} 1"), "{after}");
    assert!(after.contains("holdfast_commands_total{op=\"connect\",result=\"ok\"} 1"), "{after}");
    assert!(after.contains("holdfast_fanout_seconds_count 1"), "{after}");
    assert!(after.contains("holdfast_fanout_seconds_bucket{le=\"+Inf\"} 1"), "{after}");
    c.send(r#"{"id":3,"op":"subscribe","channel":"m"}"#).await;
    c.recv().await;
    server.publish("m", "2").await;
    c.recv().await;
    c.send(r#"{"id":4,"op":"nope"}"#).await;
    c.recv().await;
    let after = server.http("GET", "/metrics", &[], "").await.body;
    assert!(after.contains("holdfast_messages_delivered_total 1"), "{after}");
    assert!(after.contains("holdfast_publications_total 2"), "{after}");
    assert!(after.contains("holdfast_commands_total{op=\"invalid\",result=\"error\"} 1"), "{after}");
    assert!(after.contains("holdfast_broker_errors_total 0"), "{after}");
    server.stop().await;
}
