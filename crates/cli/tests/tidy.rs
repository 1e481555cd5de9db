//! Keeps the crate layout honest: what each crate must never depend on
//! (docs/ARCHITECTURE.md, "Code map"). A failure here means a layer is
//! leaking; move the code to the crate that owns that concern instead.

use std::path::Path;

/// (crate directory, forbidden dependencies, why).
const RULES: &[(&str, &[&str], &str)] = &[
    (
        "protocol",
        &["tokio", "hyper", "axum", "tokio-tungstenite", "redis", "tracing-subscriber", "anyhow", "holdfast-core"],
        "protocol is pure: the wire format only, no I/O, no runtime",
    ),
    (
        "core",
        &["axum", "hyper", "http", "tokio-tungstenite", "redis", "serde_json", "anyhow", "holdfast-server"],
        "core does no I/O and no JSON of its own (it encodes through protocol)",
    ),
    (
        "redis",
        &["holdfast-server", "axum", "hyper", "clap", "anyhow"],
        "the Redis broker implements core's Broker trait and never reaches into HTTP or the CLI",
    ),
    (
        "websocket",
        &["tokio", "hyper", "axum", "tokio-tungstenite", "holdfast-core", "holdfast-protocol", "serde_json"],
        "websocket is the wire format without I/O: the caller owns sockets and buffers",
    ),
    ("server", &["redis", "clap", "holdfast-bench"], "server receives an Arc<dyn Broker> and never parses arguments"),
    (
        "server",
        &["tokio-tungstenite", "tungstenite"],
        "server frames its own WebSocket traffic with holdfast-websocket (one compressed frame shared by every subscriber)",
    ),
    ("bench", &["holdfast-core", "holdfast-server"], "bench must see the gateway the way a user does"),
    (
        "bench",
        &["tokio-tungstenite", "tungstenite"],
        "bench reads frames with holdfast-websocket, which inflates permessage-deflate (tungstenite cannot)",
    ),
];

/// tokio features core may use: synchronisation, the timer its alarms
/// sleep on (`Alarms::fire`) and the task budget they keep (`rt`'s
/// `task::coop`), never sockets.
const CORE_TOKIO_FEATURES: &[&str] = &["sync", "macros", "time", "rt"];

fn manifest(name: &str) -> toml::Table {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name).join("Cargo.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.parse().unwrap()
}

#[test]
fn crates_never_import_what_their_layer_forbids() {
    for (name, forbidden, why) in RULES {
        let m = manifest(name);
        let deps = m.get("dependencies").and_then(|d| d.as_table()).cloned().unwrap_or_default();
        for dep in deps.keys() {
            assert!(
                !forbidden.contains(&dep.as_str()),
                "crates/{name} depends on `{dep}`, which it must not: {why} (docs/ARCHITECTURE.md)"
            );
        }
    }
}

#[test]
fn core_uses_no_tokio_io() {
    let m = manifest("core");
    let tokio = &m["dependencies"]["tokio"];
    let features: Vec<&str> = tokio
        .get("features")
        .and_then(|f| f.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    for f in features {
        assert!(CORE_TOKIO_FEATURES.contains(&f), "crates/core enables tokio feature `{f}`; core does no I/O");
    }
}
