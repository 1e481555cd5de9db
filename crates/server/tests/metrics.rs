//! `/metrics`: the exposition parses as the Prometheus text format, and
//! every metric the Grafana dashboard (`docs/grafana-dashboard.json`)
//! queries is exported.

mod common;

use common::TestServer;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn name_len(s: &str) -> usize {
    let n = s.bytes().take_while(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b':').count();
    assert!(n > 0 && !s.as_bytes()[0].is_ascii_digit(), "no metric name at {s:?}");
    n
}

/// Parses `{k="v",...}`, returning the labels and the rest.
fn labels(s: &str, line: &str) -> (Vec<(String, String)>, usize) {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 1;
    while b[i] != b'}' {
        let n = name_len(&s[i..]);
        let key = s[i..i + n].to_owned();
        i += n;
        assert_eq!(&s[i..i + 2], "=\"", "label {key} without a quoted value: {line}");
        i += 2;
        let mut value = String::new();
        loop {
            match b.get(i) {
                Some(b'"') => break,
                Some(b'\\') => {
                    value.push(match b[i + 1] {
                        b'n' => '\n',
                        c @ (b'\\' | b'"') => c as char,
                        c => panic!("bad escape \\{} in {line}", c as char),
                    });
                    i += 2;
                }
                Some(_) => {
                    let c = s[i..].chars().next().unwrap();
                    value.push(c);
                    i += c.len_utf8();
                }
                None => panic!("unterminated label value: {line}"),
            }
        }
        i += 1;
        out.push((key, value));
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => {}
            _ => panic!("labels not closed: {line}"),
        }
    }
    (out, i + 1)
}

/// Checks the text format line by line and returns the sample names.
fn parse_exposition(text: &str) -> BTreeSet<String> {
    assert!(text.ends_with('\n'), "the last line ends with a newline");
    let mut families: BTreeMap<String, String> = BTreeMap::new();
    let mut help: Option<String> = None;
    let mut family: Option<(String, String)> = None;
    let mut samples = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let n = name_len(rest);
            assert!(rest[n..].starts_with(' ') && rest.len() > n + 1, "HELP without text: {line}");
            help = Some(rest[..n].to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("TYPE without type: {line}"));
            assert_eq!(name_len(name), name.len(), "{line}");
            assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind), "{line}");
            assert_eq!(help.take().as_deref(), Some(name), "TYPE {name} follows its HELP");
            assert!(families.insert(name.to_owned(), kind.to_owned()).is_none(), "{name} listed twice");
            family = Some((name.to_owned(), kind.to_owned()));
        } else if line.starts_with('#') {
            panic!("a comment the classic text format does not have (OpenMetrics?): {line}");
        } else {
            assert!(!line.is_empty(), "an empty line in:\n{text}");
            let n = name_len(line);
            let name = &line[..n];
            let (labels, used) = if line[n..].starts_with('{') { labels(&line[n..], line) } else { (Vec::new(), 0) };
            let value = line[n + used..].strip_prefix(' ').unwrap_or_else(|| panic!("no ' value': {line}"));
            assert!(
                value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
                "value {value:?} is not a number (and no timestamp is expected): {line}"
            );
            let (fam, kind) = family.as_ref().unwrap_or_else(|| panic!("sample before any TYPE: {line}"));
            let suffix = name.strip_prefix(fam.as_str()).unwrap_or_else(|| panic!("{name} is not in family {fam}"));
            match kind.as_str() {
                "histogram" => {
                    assert!(["_bucket", "_sum", "_count"].contains(&suffix), "{line}");
                    assert_eq!(
                        suffix == "_bucket",
                        labels.iter().any(|(k, _)| k == "le"),
                        "le on buckets only: {line}"
                    );
                }
                _ => assert_eq!(suffix, "", "{line}"),
            }
            let mut keys: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
            keys.sort_unstable();
            assert!(keys.windows(2).all(|w| w[0] != w[1]), "a label twice: {line}");
            samples.insert(name.to_owned());
        }
    }
    assert!(help.is_none(), "a HELP without its TYPE");
    samples
}

/// The metric names (`holdfast_…`) in a PromQL expression.
fn names_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("holdfast_") {
        let before = rest[..at].bytes().last();
        let after = &rest[at..];
        let n = after.bytes().take_while(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b':').count();
        if !before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':') {
            out.push(after[..n].to_owned());
        }
        rest = &after[n..];
    }
    out
}

fn exprs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", Value::String(e)) => out.push(e),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_exposition_parses_and_has_every_metric_the_dashboard_queries() {
    let server = TestServer::default().await;
    let mut c = server.connected().await;
    c.send(r#"{"id":2,"op":"subscribe","channel":"m"}"#).await;
    assert_eq!(c.recv().await["op"], "subscribed");
    server.publish("m", "1").await;
    assert_eq!(c.recv().await["op"], "message");
    c.ws.close(None).await.unwrap(); // a series in the close codes' family too
    let mut body = String::new();
    for _ in 0..200 {
        let r = server.http("GET", "/metrics", &[], "").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
        body = r.body;
        if body.contains("holdfast_close_codes_total{code=") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(body.contains("holdfast_close_codes_total{code="), "the close is counted:\n{body}");
    let samples = parse_exposition(&body);
    for name in ["holdfast_resident_memory_bytes", "holdfast_subscriptions", "holdfast_fanout_seconds_bucket"] {
        assert!(samples.contains(name), "{name} missing:\n{body}");
    }

    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/grafana-dashboard.json");
    let text = std::fs::read_to_string(path).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"));
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36), "schemaVersion");
    assert_eq!(dashboard["__inputs"][0]["name"], "DS_PROMETHEUS");
    let panels = dashboard["panels"].as_array().unwrap();
    let ids: BTreeSet<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    for p in panels {
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", p["title"]);
    }
    let mut found = Vec::new();
    exprs(&dashboard, &mut found);
    assert!(found.len() >= 8, "{found:?}");
    let mut used = BTreeSet::new();
    for expr in found {
        let names = names_in(expr);
        assert!(!names.is_empty(), "an expression without a holdfast metric: {expr}");
        for name in names {
            assert!(samples.contains(&name), "the dashboard queries {name}, which /metrics does not export: {expr}");
            used.insert(name);
        }
    }
    for name in [
        "holdfast_connections",
        "holdfast_messages_delivered_total",
        "holdfast_publications_total",
        "holdfast_fanout_seconds_bucket",
        "holdfast_handshake_rejections_total",
        "holdfast_slow_consumer_disconnects_total",
        "holdfast_broker_errors_total",
        "holdfast_backend_requests_total",
    ] {
        assert!(used.contains(name), "the dashboard has no panel on {name}");
    }
    server.stop().await;
}

#[test]
fn the_parser_rejects_what_prometheus_would() {
    for bad in [
        "# HELP a x\n# TYPE a counter\na_total 1\n",
        "# HELP a x\n# TYPE a gauge\na{b=\"1} 1\n",
        "# HELP a x\n# TYPE a gauge\na 1\n# EOF\n",
        "# HELP a x\n# TYPE a gauge\na one\n",
    ] {
        assert!(std::panic::catch_unwind(|| parse_exposition(bad)).is_err(), "accepted {bad:?}");
    }
    let ok = "# HELP a x\n# TYPE a histogram\na_bucket{le=\"+Inf\",q=\"\\\"\"} 1\na_sum 0.5\na_count 1\n";
    assert_eq!(parse_exposition(ok).len(), 3);
    assert_eq!(
        names_in("sum(rate(holdfast_a_total[5m])) / xholdfast_b + holdfast_c"),
        ["holdfast_a_total", "holdfast_c"]
    );
}
