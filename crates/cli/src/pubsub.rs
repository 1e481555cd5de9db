//! `holdfast sub` and `holdfast pub`: the client crate and the HTTP API
//! from a terminal.

use anyhow::{bail, Context};
use clap::Args;
use holdfast_client::{Client, Config, Event};
use http_body_util::{BodyExt, Full};
use std::io::Write;

/// `holdfast sub URL CHANNEL...`
#[derive(Args, Debug)]
pub struct SubArgs {
    /// The WebSocket endpoint, e.g. ws://127.0.0.1:8080/ws.
    pub url: String,
    /// Channels to subscribe to.
    #[arg(required = true)]
    pub channels: Vec<String>,
    /// Print each message as one JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Connect token (JWT).
    #[arg(long, env = "HOLDFAST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// `holdfast pub URL CHANNEL DATA`
#[derive(Args, Debug)]
pub struct PubArgs {
    /// The server: its ws:// or http:// URL (the path is ignored).
    pub url: String,
    /// The channel.
    pub channel: String,
    /// The data: JSON, or any other text (sent as a JSON string).
    pub data: String,
    /// API key.
    #[arg(long, env = "HOLDFAST_API_KEY", hide_env_values = true)]
    pub api_key: String,
}

/// Prints messages to stdout and connection events to stderr until the
/// client stops for good (a do-not-reconnect close) or Ctrl-C.
pub async fn sub(args: SubArgs) -> anyhow::Result<()> {
    let mut config = Config::new(args.url);
    config.token = args.token;
    let mut client = Client::start(config);
    for channel in &args.channels {
        // Subscriptions made before the first connection are queued, so a
        // server that is not up yet is waited for rather than an error.
        let _ = tokio::time::timeout(std::time::Duration::from_millis(50), client.subscribe(channel)).await;
    }
    let mut out = std::io::stdout();
    while let Some(event) = client.next_event().await {
        match event {
            Event::Message { channel, offset, data } => {
                if args.json {
                    writeln!(out, "{}", serde_json::json!({"channel": channel, "offset": offset, "data": data}))?;
                } else {
                    writeln!(out, "{channel} #{offset} {data}")?;
                }
                out.flush()?;
            }
            Event::Closed { code, meaning, reconnect_in: None } => {
                eprintln!("closed {code} ({meaning}); not reconnecting");
                bail!("the server closed the connection with {code}");
            }
            other => eprintln!("{}", describe(&other)),
        }
    }
    Ok(())
}

fn describe(e: &Event) -> String {
    match e {
        Event::Connecting => "connecting".into(),
        Event::Open { session, transport } => {
            format!("open over {transport} (session {})", &session[..session.len().min(8)])
        }
        Event::Upgraded { from } => format!("WebSocket works again: leaving {from}"),
        Event::Recovered { channel } => format!("{channel}: recovered every missed message"),
        Event::RecoveryFailed { channel } => {
            format!("{channel}: recovery impossible (server restarted or history window passed)")
        }
        Event::SubscribeFailed { channel, code, message } => {
            format!("{channel}: the server refused the subscription ({code}: {message}); no longer subscribed")
        }
        Event::Join { channel, member } => format!("{channel}: {} joined", who(member)),
        Event::Leave { channel, member } => format!("{channel}: {} left", who(member)),
        Event::Watchdog => "no ping from the server: replacing the connection".into(),
        Event::TokenUnavailable { error } => format!("could not get a token: {error}"),
        Event::PingShortened { to, silence } => {
            format!("cut after {} s of silence: asking for pings every {} s", silence.as_secs(), to.as_secs())
        }
        Event::Unreadable { line, error } => format!("unreadable line from the server ({error}): {line}"),
        Event::DeltaFailed { channel, offset, error } => {
            format!("{channel}: message {offset} could not be rebuilt ({error}); resubscribing from the last good one")
        }
        Event::Closed { code, meaning, reconnect_in } => {
            format!("closed {code} ({meaning}); reconnecting in {} ms", reconnect_in.map_or(0, |d| d.as_millis()))
        }
        Event::Message { .. } => String::new(),
    }
}

/// A member as `holdfast sub` shows it: the user, else the session.
fn who(member: &holdfast_client::Member) -> String {
    // What a server sends is not trusted to be ASCII: cut by characters.
    let session: String = member.session.chars().take(8).collect();
    match &member.user {
        Some(user) => format!("user {user} (session {session})"),
        None => format!("session {session}"),
    }
}

/// Publishes over the HTTP API and prints the offset.
pub async fn publish(args: PubArgs) -> anyhow::Result<()> {
    let rest = args
        .url
        .split_once("://")
        .filter(|(scheme, _)| matches!(*scheme, "ws" | "http"))
        .map(|(_, rest)| rest)
        .context("holdfast pub speaks ws:// or http:// (plain); for TLS, publish from your backend")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let data: serde_json::Value = serde_json::from_str(&args.data).unwrap_or(serde_json::Value::String(args.data));
    let body = serde_json::json!({"channel": args.channel, "data": data}).to_string();
    let tcp =
        tokio::net::TcpStream::connect(authority).await.with_context(|| format!("cannot connect to {authority}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let request = hyper::Request::post("/api/publish")
        .header("host", authority)
        .header("authorization", format!("Bearer {}", args.api_key))
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body)))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let text = String::from_utf8_lossy(&response.into_body().collect().await?.to_bytes()).into_owned();
    if !status.is_success() {
        bail!("{status}: {}", text.trim());
    }
    println!("{}", text.trim());
    Ok(())
}
