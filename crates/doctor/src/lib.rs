//! `holdfast doctor`: diagnoses any WebSocket endpoint, ours or not, and
//! names the fix. Browsers report every failure as `error` + 1006, so the
//! doctor builds the connection itself, layer by layer (URL, DNS, TCP,
//! TLS, the HTTP upgrade, the handshake, a round trip, ping, an optional
//! idle test, the close), keeps the raw evidence, and hands it to pure
//! rules that pick one cause.
//!
//! It sees servers only from the outside: no dependency on the gateway's
//! core or server crates.

mod certificate;
mod explain;
pub mod fleet;
pub mod nginx;
mod observe;
mod platform;
mod probe;
mod proxy;
pub mod proxy_config;
mod proxy_lint;
mod report;
mod rules;
mod target;

use std::path::PathBuf;
use std::time::Duration;

pub use explain::explain;
pub use holdfast_protocol::Cause;
pub use observe::{End, Handshake, Http, Observations, Response, RoundTrip, Tcp, Tls};
pub use report::{Report, Stage, Status};
pub use rules::{diagnose, Verdict};

/// Arguments of `holdfast doctor`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DoctorArgs {
    /// The endpoint, e.g. `wss://example.com/ws` (http(s):// is taken as ws(s)://).
    #[arg(required_unless_present_any = ["nginx", "explain", "lint", "server"])]
    pub url: Option<String>,
    /// Origin header to send (what a page on that origin would send).
    #[arg(long)]
    pub origin: Option<String>,
    /// The origin of the page that will open the WebSocket (checks ws: from https:).
    #[arg(long)]
    pub page_origin: Option<String>,
    /// Subprotocol to offer (repeatable).
    #[arg(long)]
    pub subprotocol: Vec<String>,
    /// Extra request header, `'Name: value'` (repeatable).
    #[arg(long)]
    pub header: Vec<String>,
    /// Token: sent as `Authorization: Bearer` with the upgrade, and in the
    /// holdfast `connect` (where holdfast's clients send it).
    #[arg(long)]
    pub token: Option<String>,
    /// Go through this forward proxy (`http://[user:pass@]host:port`)
    /// instead of the one https_proxy / http_proxy / all_proxy name.
    #[arg(long, value_name = "URL", conflicts_with = "no_proxy")]
    pub proxy: Option<String>,
    /// Connect directly, whatever the proxy variables say.
    #[arg(long)]
    pub no_proxy: bool,
    /// PEM file of extra CA certificates to trust.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Stay silent this long after the handshake to find idle timeouts, e.g. `75s`.
    #[arg(long, value_parser = parse_duration)]
    pub idle: Option<Duration>,
    /// Time limit for each network step.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Print one JSON object instead of the checklist.
    #[arg(long)]
    pub json: bool,
    /// Show the raw request and response head.
    #[arg(long)]
    pub verbose: bool,
    /// Lint an nginx config file instead of probing a URL.
    #[arg(long, value_name = "FILE")]
    pub nginx: Option<PathBuf>,
    /// Lint a proxy config instead of probing a URL: nginx, HAProxy,
    /// Apache, Caddy, Varnish, Traefik or ingress-nginx, recognised from
    /// its contents.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["nginx", "explain"])]
    pub lint: Option<PathBuf>,
    /// Explain a report copied from the `/doctor` page (what the user's
    /// browser and the server saw) instead of probing from here.
    #[arg(long, value_name = "FILE", conflicts_with = "nginx")]
    pub explain: Option<PathBuf>,
    /// Ask a holdfast server what its users hit (`GET /api/diagnosis`:
    /// idle cuts, mass drops, the reasons clients fell back) instead of
    /// probing from here; http(s):// or ws(s)://, the path is ignored.
    #[arg(long, value_name = "URL", conflicts_with_all = ["url", "nginx", "lint", "explain"])]
    pub server: Option<String>,
    /// The server's API key, for --server.
    #[arg(long, env = "HOLDFAST_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write durations like 75s, 500ms, 2m)"))
}

/// Probes `url` and diagnoses it.
pub async fn examine(args: &DoctorArgs, url: &str) -> Report {
    let probe = probe::probe(args, url).await;
    let verdict = diagnose(&probe.observations);
    let raw = if args.verbose { probe.raw } else { None };
    Report::new(probe.stages, &probe.observations, verdict, raw)
}

/// Runs the command and prints its output; returns the exit status:
/// 0 healthy, 1 broken, 2 usage error (with `--server`: 0 nothing to act
/// on, 1 a finding names a fix, 2 no diagnosis; see [`fleet`]).
pub async fn run(args: DoctorArgs) -> u8 {
    if let Some(server) = &args.server {
        return fleet::command(&args, server).await;
    }
    if let Some(path) = &args.nginx {
        return proxy_lint::lint_command(path, Some(proxy_config::ProxyKind::Nginx));
    }
    if let Some(path) = &args.lint {
        return proxy_lint::lint_command(path, None);
    }
    let (report, url) = if let Some(path) = &args.explain {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("holdfast doctor: cannot read {}: {e}", path.display());
                return 2;
            }
        };
        match explain(&text) {
            Ok(r) => (r, format!("the browser report {}", path.display())),
            Err(e) => {
                eprintln!("holdfast doctor: {}: {e}", path.display());
                return 2;
            }
        }
    } else {
        let Some(url) = args.url.clone() else {
            eprintln!("holdfast doctor: give a URL (or --lint FILE, --explain REPORT, --server URL)");
            return 2;
        };
        (examine(&args, &url).await, url)
    };
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text(&url, report::colour_stdout()));
    }
    if report.healthy {
        0
    } else {
        1
    }
}
