//! `holdfast`: the command-line entry point. Parses arguments and hands off
//! to the library crates; no protocol logic lives here.

mod config;
mod pubsub;

use anyhow::Context;
use clap::{Parser, Subcommand};
use holdfast_core::{MemoryBroker, Node, SessionRegistry};
use holdfast_server::Metrics;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// The allocator for the whole binary (server and bench alike): jemalloc.
/// An idle WebSocket connection is a few small long-lived allocations,
/// made while thousands of short-lived handshake buffers come and go;
/// glibc's malloc kept the pages those left behind: 10,000 idle
/// connections cost 6.2 KB of RSS each with it, 5.0 KB with jemalloc, for
/// the same heap (docs/PERFORMANCE.md, 2026-12-07). Why not mimalloc: v3
/// kept 5.9 KB, and with v2 (5.1 KB) the load generator's fan-out p99
/// went from ~0.1 s to 0.7 s. Built without the `jemalloc` feature, the
/// binary uses the system's malloc (for valgrind's massif, which sees
/// only that one).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A real-time WebSocket gateway that survives production.
#[derive(Parser)]
#[command(name = "holdfast", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (embedded broker, demo page at /).
    Serve(Box<config::ServeArgs>),
    /// Work with config files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Diagnose a WebSocket endpoint (any server) and name the fix.
    Doctor(holdfast_doctor::DoctorArgs),
    /// Subscribe to channels and print their messages (events on stderr).
    Sub(pubsub::SubArgs),
    /// Publish one message over the HTTP API.
    Pub(pubsub::PubArgs),
    /// Print an nginx config that proxies WebSockets correctly.
    Nginx(holdfast_doctor::nginx::NginxArgs),
    /// Print a config for nginx, HAProxy, Apache, Caddy, Varnish, Traefik or ingress-nginx that proxies WebSockets correctly.
    ProxyConfig(holdfast_doctor::proxy_config::ProxyConfigArgs),
    /// Load-test a holdfast server (idle memory, fan-out latency).
    Bench(holdfast_bench::BenchArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a TOML config file: every unknown key and bad value, with its line.
    Check {
        /// The file to check.
        file: PathBuf,
    },
    /// Print a sample config file: every key, with its default.
    Sample,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("holdfast: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Config { command: ConfigCommand::Check { file } } => {
            let problems = config::check_file(&file);
            if problems.is_empty() {
                println!("{}: ok", file.display());
                return Ok(ExitCode::SUCCESS);
            }
            for p in &problems {
                eprintln!("{p}");
            }
            Ok(ExitCode::FAILURE)
        }
        Command::Config { command: ConfigCommand::Sample } => {
            print!("{}", config::SAMPLE);
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor(args) => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            Ok(ExitCode::from(rt.block_on(holdfast_doctor::run(args))))
        }
        Command::Sub(args) => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(pubsub::sub(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Pub(args) => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(pubsub::publish(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Nginx(args) => {
            print!("{}", holdfast_doctor::nginx::generate(&args));
            Ok(ExitCode::SUCCESS)
        }
        Command::ProxyConfig(args) => {
            print!("{}", holdfast_doctor::proxy_config::generate(&args));
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(args) => {
            // One thread per load process (more cores: --processes): two
            // workers pinned to one core spent the core handing work over.
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(holdfast_bench::run(args))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn serve(args: config::ServeArgs) -> anyhow::Result<ExitCode> {
    let cfg = args.resolve()?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOLDFAST_LOG").unwrap_or_else(|_| "info".into());
    // Colours only for a person at a terminal: in a file or a journal the
    // escape codes are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match cfg.log_format {
        config::LogFormat::Text => logs.init(),
        config::LogFormat::Json => logs.json().with_current_span(true).init(),
    }
    // One single-threaded runtime per thread (holdfast_server::Workers
    // says why): this one accepts and runs the node's own tasks, the rest
    // only serve connections.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let workers = holdfast_server::Workers::start(cfg.threads - 1)?;
    rt.block_on(async move {
        let listener =
            listen(cfg.listen, cfg.reuse_port).with_context(|| format!("cannot listen on {}", cfg.listen))?;
        let addr = listener.local_addr()?;
        let sessions = Arc::new(SessionRegistry::default());
        let broker = start_broker(&cfg, &sessions).await?;
        let mut node =
            Node::new(broker, cfg.session, cfg.node_name).with_namespaces(cfg.namespaces).with_sessions(sessions);
        node = node.with_journal_limits(cfg.journal);
        if let Some(auth) = cfg.auth {
            node = node.with_auth(Arc::new(auth));
        }
        let metrics = Arc::new(Metrics::default());
        if let Some(backend) = cfg.backend {
            node = node.with_backend(Arc::new(holdfast_server::HttpBackend::new(backend, metrics.clone())));
        }
        let node = Arc::new(node);
        print_banner(addr, &cfg.api_key, cfg.log_format);
        // The /doctor page's verdicts come from the CLI doctor's own rules.
        let explain: holdfast_server::Explainer = Arc::new(|report| holdfast_doctor::explain(report).map(|r| r.json()));
        // And so do the words for the patterns /api/diagnosis finds.
        let finding_words: holdfast_server::FindingWords = Arc::new(|finding| {
            let verdict = holdfast_doctor::fleet::explain(finding);
            (verdict.summary, verdict.fix)
        });
        let server = holdfast_server::ServerConfig {
            explain: Some(explain),
            finding_words: Some(finding_words),
            workers,
            ..cfg.server
        };
        holdfast_server::run(listener, node, server, metrics, shutdown_signal()).await?;
        tracing::info!("drained; bye");
        Ok(ExitCode::SUCCESS)
    })
}

/// Binds the listen address; with `reuse_port`, several processes share it
/// and the kernel balances new connections between them.
fn listen(addr: std::net::SocketAddr, reuse_port: bool) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(4096)
}

/// The embedded broker, or Redis (waiting briefly for it: a node that
/// starts while Redis is down serves local clients and reports not-ready).
/// Redis refusing this node's credentials or certificate ends the start:
/// that is a setting to fix, not an outage to wait out.
async fn start_broker(
    cfg: &config::Resolved,
    sessions: &Arc<SessionRegistry>,
) -> anyhow::Result<Arc<dyn holdfast_core::Broker>> {
    if cfg.broker == "memory" {
        return Ok(Arc::new(MemoryBroker::with_limits(cfg.namespaces.clone(), cfg.node_limits)));
    }
    let mut options = holdfast_redis::RedisOptions::new(&cfg.broker);
    options.ca_pem = cfg.broker_ca.clone();
    if let Some(ttl) = cfg.presence_ttl {
        options.presence_ttl = ttl;
    }
    options.history_budget = cfg.node_limits.history_bytes as u64;
    let broker = holdfast_redis::RedisBroker::start(options, cfg.namespaces.clone(), sessions.clone())
        .map_err(anyhow::Error::msg)?;
    if !broker.wait_ready(std::time::Duration::from_secs(3)).await.map_err(anyhow::Error::msg)? {
        use holdfast_core::Broker;
        tracing::warn!(broker = broker.shown_url(), "starting without Redis: {}", broker.readiness().unwrap_err());
    }
    Ok(Arc::new(broker))
}

/// The start banner: plain lines on stdout for people (the first one,
/// "holdfast listening on http://ADDR", is what tests and scripts read), or
/// with `--log-format json` one log record on the log writer (stderr) like
/// every other line, carrying the key only when it was generated.
fn print_banner(addr: std::net::SocketAddr, (key, generated): &(String, bool), format: config::LogFormat) {
    if format == config::LogFormat::Json {
        let (demo_url, ws_url) = (format!("http://{addr}/"), format!("ws://{addr}/ws"));
        let subprotocol = "holdfast.v1.json";
        if *generated {
            tracing::info!(%addr, %demo_url, %ws_url, subprotocol, api_key_generated = true, api_key = %key,
                "holdfast listening on http://{addr}");
        } else {
            tracing::info!(%addr, %demo_url, %ws_url, subprotocol, api_key_generated = false,
                "holdfast listening on http://{addr}");
        }
        return;
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "holdfast listening on http://{addr}");
    let _ = writeln!(out, "  demo page   http://{addr}/");
    let _ = writeln!(out, "  WebSocket   ws://{addr}/ws  (subprotocol holdfast.v1.json)");
    if *generated {
        let _ = writeln!(out, "  API key     {key}  (generated; set --api-key or HOLDFAST_API_KEY to keep one)");
    } else {
        let _ = writeln!(out, "  API key     (from your settings)");
    }
    // A key from the settings is not printed: the line reads it from the
    // shell (double quotes, so the variable expands when pasted).
    let (auth, note) = match generated {
        true => (format!("'Authorization: Bearer {key}'"), ""),
        false => {
            ("\"Authorization: Bearer $HOLDFAST_API_KEY\"".to_owned(), "  (export HOLDFAST_API_KEY=<your key> first)")
        }
    };
    let _ = writeln!(
        out,
        "try: curl -H {auth} -H 'Content-Type: application/json' \\\n       -d '{{\"channel\":\"demo:lobby\",\"data\":{{\"text\":\"hello\"}}}}' http://{addr}/api/publish{note}"
    );
    let _ = out.flush();
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("can install a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
