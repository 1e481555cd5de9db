//! `holdfast serve` settings: flags, `HOLDFAST_*` environment twins, and a
//! TOML file, in that order of precedence, then the defaults.
//!
//! Each setting is declared once, in [`ServeArgs`] (flag, env twin, help) and
//! mirrored in [`FileConfig`] (file key), and the two are merged in
//! [`ServeArgs::resolve`]. A test checks that every flag has a file key.

use anyhow::{bail, Context};
use clap::Args;
use holdfast_core::{HistoryLimits, JournalLimits, NamespaceRules, Namespaces, NodeLimits, SessionConfig};
use holdfast_server::{Limits, OriginPolicy, ServerConfig};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod check;
mod webhook;

pub use check::{check_file, SAMPLE};

/// Flags of `holdfast serve`; each has an environment twin and a file key.
#[derive(Args, Debug, Default, Clone)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, env = "HOLDFAST_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// API key for the HTTP API; generated and printed at start when unset.
    #[arg(long, env = "HOLDFAST_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Share the listen port with other holdfast processes (SO_REUSEPORT):
    /// the kernel spreads new connections over them, one per core.
    #[arg(long, env = "HOLDFAST_REUSE_PORT")]
    pub reuse_port: Option<bool>,
    /// Threads serving connections, each its own single-threaded runtime
    /// (0: one per core this process may run on).
    #[arg(long, env = "HOLDFAST_THREADS")]
    pub threads: Option<usize>,
    /// Broker: `memory` (embedded, default); `redis[s]://[USER:PASS@]HOST:PORT/DB`;
    /// `redis[s]-sentinel://[USER:PASS@]HOST:PORT,…/MASTER_NAME`;
    /// `redis[s]-cluster://[USER:PASS@]HOST:PORT,…` (`rediss`: TLS).
    #[arg(long, env = "HOLDFAST_BROKER", hide_env_values = true)]
    pub broker: Option<String>,
    /// PEM file of the CA that signed Redis's TLS certificate (instead of
    /// the system's roots), for `rediss…://` brokers.
    #[arg(long, env = "HOLDFAST_BROKER_CA_FILE")]
    pub broker_ca_file: Option<PathBuf>,
    /// With a Redis broker: how long a crashed node's clients stay in
    /// presence, e.g. `15s` (nodes refresh theirs every third of it).
    #[arg(long, env = "HOLDFAST_PRESENCE_TTL", value_parser = parse_duration)]
    pub presence_ttl: Option<Duration>,
    /// TOML file with any of these settings (flags and env override it).
    #[arg(long, env = "HOLDFAST_CONFIG")]
    pub config: Option<PathBuf>,
    /// How often the server pings each client, e.g. `25s`.
    #[arg(long, env = "HOLDFAST_PING_INTERVAL", value_parser = parse_duration)]
    pub ping_interval: Option<Duration>,
    /// How long a client may stay silent after a ping, e.g. `10s`.
    #[arg(long, env = "HOLDFAST_PONG_TIMEOUT", value_parser = parse_duration)]
    pub pong_timeout: Option<Duration>,
    /// Publications kept per channel for recovery (0 disables history).
    #[arg(long, env = "HOLDFAST_HISTORY_SIZE")]
    pub history_size: Option<usize>,
    /// Oldest publication kept per channel, e.g. `5m`.
    #[arg(long, env = "HOLDFAST_HISTORY_TTL", value_parser = parse_duration)]
    pub history_ttl: Option<Duration>,
    /// Largest WebSocket message and publication, in bytes.
    #[arg(long, env = "HOLDFAST_MAX_MESSAGE_SIZE")]
    pub max_message_size: Option<usize>,
    /// permessage-deflate for WebSocket clients that offer it (`on`/`off`;
    /// default on). A publication is compressed once for all its subscribers.
    #[arg(long, env = "HOLDFAST_COMPRESSION", value_parser = parse_on_off)]
    pub compression: Option<bool>,
    /// Messages smaller than this many bytes are sent uncompressed (default 256).
    #[arg(long, env = "HOLDFAST_COMPRESSION_THRESHOLD")]
    pub compression_threshold: Option<usize>,
    /// Bytes queued for one client before it is dropped as a slow consumer.
    #[arg(long, env = "HOLDFAST_OUTBOX_BYTES")]
    pub outbox_bytes: Option<usize>,
    /// Most channels one connection may subscribe to.
    #[arg(long, env = "HOLDFAST_MAX_SUBSCRIPTIONS")]
    pub max_subscriptions: Option<usize>,
    /// MiB of publications all channels' histories may keep together
    /// (with Redis: Redis's used memory above which nothing more is kept;
    /// default 256; 0: no limit).
    #[arg(long, env = "HOLDFAST_HISTORY_BUDGET_MB")]
    pub history_budget_mb: Option<usize>,
    /// Channels this node may hold, with the embedded broker (default 100000; 0: no limit).
    #[arg(long, env = "HOLDFAST_MAX_CHANNELS")]
    pub max_channels: Option<usize>,
    /// MiB of ended-session records this node keeps for timelines and
    /// `/api/sessions` (default 4, some 10,000 sessions; the oldest go first).
    #[arg(long, env = "HOLDFAST_SESSION_LOG_MB")]
    pub session_log_mb: Option<usize>,
    /// Whether clients may publish (over WebSocket, SSE or long-polling)
    /// outside the namespaces that say otherwise (`true`/`false`; default
    /// false: your backend publishes through the HTTP API).
    #[arg(long, env = "HOLDFAST_ALLOW_CLIENT_PUBLISH")]
    pub allow_client_publish: Option<bool>,
    /// The `demo` namespace, where anyone may publish, for the demo page
    /// (`true`/`false`; default true unless the file defines `[namespaces.demo]`).
    #[arg(long, env = "HOLDFAST_DEMO")]
    pub demo: Option<bool>,
    /// Window over which shutdown spreads disconnects and reconnect hints.
    #[arg(long, env = "HOLDFAST_DRAIN_WINDOW", value_parser = parse_duration)]
    pub drain_window: Option<Duration>,
    /// Name of this node, sent to clients in `connected`.
    #[arg(long, env = "HOLDFAST_NODE_NAME")]
    pub node_name: Option<String>,
    /// Browser origins allowed besides the server's own, comma-separated:
    /// `https://app.example.com`, `https://*.example.com`, or `*`.
    #[arg(long, env = "HOLDFAST_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,
    /// Proxies (addresses or CIDRs, comma-separated) whose
    /// `X-Forwarded-For` / `Forwarded` header names the client, for the
    /// per-address limits and the backend proxies; default none.
    #[arg(long, env = "HOLDFAST_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,
    /// Whether clients that send no Origin (non-browser) may connect (`true`/`false`).
    #[arg(long, env = "HOLDFAST_ALLOW_NO_ORIGIN")]
    pub allow_no_origin: Option<bool>,
    /// Whether /sse and /poll answer allowed cross-origin pages with
    /// `Access-Control-Allow-Credentials: true`, so they may send cookies (`true`/`false`).
    #[arg(long, env = "HOLDFAST_CORS_CREDENTIALS")]
    pub cors_credentials: Option<bool>,
    /// Time a client has to finish its TLS handshake and request headers, e.g. `10s`.
    #[arg(long, env = "HOLDFAST_HANDSHAKE_TIMEOUT", value_parser = parse_duration)]
    pub handshake_timeout: Option<Duration>,
    /// PEM certificate chain: serve TLS (wss://, https://) directly.
    #[arg(long, env = "HOLDFAST_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "HOLDFAST_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Commands per second one connection may send after its burst (0: no limit).
    #[arg(long, env = "HOLDFAST_COMMANDS_PER_SECOND")]
    pub commands_per_second: Option<u32>,
    /// Commands one connection may send at once before the rate applies.
    #[arg(long, env = "HOLDFAST_COMMAND_BURST")]
    pub command_burst: Option<u32>,
    /// WebSocket connections this node accepts (0: as many as open files allow).
    #[arg(long, env = "HOLDFAST_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// WebSocket connections accepted from one client address (0: no limit).
    #[arg(long, env = "HOLDFAST_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Resident memory in MB above which new connections are refused (0: no limit).
    #[arg(long, env = "HOLDFAST_MAX_MEMORY_MB")]
    pub max_memory_mb: Option<u64>,
    /// New connections per second from one address, after a burst of twice that (0: no limit).
    #[arg(long, env = "HOLDFAST_CONNECT_RATE_PER_IP")]
    pub connect_rate_per_ip: Option<u32>,
    /// HS256 secret for connect tokens (JWT); tokens are not checked without a key.
    #[arg(long, env = "HOLDFAST_JWT_SECRET", hide_env_values = true, conflicts_with = "jwt_public_key")]
    pub jwt_secret: Option<String>,
    /// PEM public key for RS256 or ES256 connect tokens (the key's kind decides).
    #[arg(long, env = "HOLDFAST_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,
    /// Whether clients without a token may connect (default: yes without a JWT key, no with one).
    #[arg(long, env = "HOLDFAST_ALLOW_ANONYMOUS")]
    pub allow_anonymous: Option<bool>,
    /// Ask your backend before every `connect` (http:// URL; it gets the cookies and decides who the user is).
    #[arg(long, env = "HOLDFAST_CONNECT_PROXY")]
    pub connect_proxy: Option<String>,
    /// Ask your backend before every `subscribe` (http:// URL).
    #[arg(long, env = "HOLDFAST_SUBSCRIBE_PROXY")]
    pub subscribe_proxy: Option<String>,
    /// Ask your backend before every client `publish`; it may rewrite the data (http:// URL).
    #[arg(long, env = "HOLDFAST_PUBLISH_PROXY")]
    pub publish_proxy: Option<String>,
    /// How long the backend may take to answer a proxy request, e.g. `1s` (then: backend_unavailable).
    #[arg(long, env = "HOLDFAST_PROXY_TIMEOUT", value_parser = parse_duration)]
    pub proxy_timeout: Option<Duration>,
    /// Request headers passed to the backend besides the cookies, comma-separated (e.g. `x-request-id`).
    #[arg(long, env = "HOLDFAST_PROXY_HEADERS", value_delimiter = ',')]
    pub proxy_headers: Option<Vec<String>>,
    /// POST lifecycle events (connect, disconnect, user online/offline…) to your backend (http:// URL).
    #[arg(long, env = "HOLDFAST_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// HMAC-SHA256 key of the webhooks' `Holdfast-Signature` header (required with --webhook-url).
    #[arg(long, env = "HOLDFAST_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// MiB of events held for the backend while it is slow or down (default 16; then new events are dropped).
    #[arg(long, env = "HOLDFAST_WEBHOOK_QUEUE_MB")]
    pub webhook_queue_mb: Option<usize>,
    /// How long one webhook POST may take, answer included, e.g. `5s` (then it is sent again).
    #[arg(long, env = "HOLDFAST_WEBHOOK_TIMEOUT", value_parser = parse_duration)]
    pub webhook_timeout: Option<Duration>,
    /// How long user_offline and channel_vacated wait for a comeback, e.g. `5s` (a reload is not offline).
    #[arg(long, env = "HOLDFAST_WEBHOOK_GRACE", value_parser = parse_duration)]
    pub webhook_grace: Option<Duration>,
    /// Log lines as `text` (default) or `json`; the level comes from HOLDFAST_LOG.
    #[arg(long, env = "HOLDFAST_LOG_FORMAT", value_parser = ["text", "json"])]
    pub log_format: Option<String>,
}

/// The TOML file: the same settings as [`ServeArgs`], by the same names.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    listen: Option<SocketAddr>,
    api_key: Option<String>,
    broker: Option<String>,
    broker_ca_file: Option<PathBuf>,
    reuse_port: Option<bool>,
    threads: Option<usize>,
    #[serde(default, deserialize_with = "duration")]
    presence_ttl: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    ping_interval: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    pong_timeout: Option<Duration>,
    history_size: Option<usize>,
    #[serde(default, deserialize_with = "duration")]
    history_ttl: Option<Duration>,
    max_message_size: Option<usize>,
    #[serde(default, deserialize_with = "on_off")]
    compression: Option<bool>,
    compression_threshold: Option<usize>,
    outbox_bytes: Option<usize>,
    max_subscriptions: Option<usize>,
    history_budget_mb: Option<usize>,
    max_channels: Option<usize>,
    session_log_mb: Option<usize>,
    allow_client_publish: Option<bool>,
    demo: Option<bool>,
    #[serde(default, deserialize_with = "duration")]
    drain_window: Option<Duration>,
    node_name: Option<String>,
    allowed_origins: Option<Vec<String>>,
    trusted_proxies: Option<Vec<String>>,
    allow_no_origin: Option<bool>,
    cors_credentials: Option<bool>,
    #[serde(default, deserialize_with = "duration")]
    handshake_timeout: Option<Duration>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    commands_per_second: Option<u32>,
    command_burst: Option<u32>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    max_memory_mb: Option<u64>,
    connect_rate_per_ip: Option<u32>,
    log_format: Option<LogFormat>,
    jwt_secret: Option<String>,
    jwt_public_key: Option<PathBuf>,
    allow_anonymous: Option<bool>,
    connect_proxy: Option<String>,
    subscribe_proxy: Option<String>,
    publish_proxy: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    proxy_timeout: Option<Duration>,
    proxy_headers: Option<Vec<String>>,
    webhook_url: Option<String>,
    webhook_secret: Option<String>,
    webhook_queue_mb: Option<usize>,
    #[serde(default, deserialize_with = "duration")]
    webhook_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    webhook_grace: Option<Duration>,
    /// `[namespaces.NAME]` tables (file only: rules do not fit in flags).
    #[serde(default)]
    namespaces: BTreeMap<String, NamespaceFile>,
}

/// One `[namespaces.NAME]` table; unset keys take the server-wide value.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct NamespaceFile {
    allow_publish: Option<bool>,
    presence: Option<bool>,
    private: Option<bool>,
    allow_anonymous: Option<bool>,
    history_size: Option<usize>,
    #[serde(default, deserialize_with = "duration")]
    history_ttl: Option<Duration>,
    /// Whether the subscribe and publish proxies are asked here.
    proxy: Option<bool>,
    /// Where this namespace's channel events go instead of `webhook_url`.
    webhook_url: Option<String>,
    /// Whether subscribers hear `join` and `leave` (default false).
    join_leave: Option<bool>,
    /// Whether every subscribe gets the newest publication (default false).
    latest: Option<bool>,
    /// The delta format subscribers may ask for (default none).
    delta: Option<holdfast_protocol::DeltaFormat>,
}

/// How log lines look.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people.
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// The namespace the demo page publishes in (see `demo`).
pub const DEMO_NAMESPACE: &str = "demo";

/// Every file key, for the test that keeps flags and keys in step.
#[cfg(test)]
const FILE_KEYS: &[&str] = &[
    "listen",
    "api_key",
    "broker",
    "broker_ca_file",
    "reuse_port",
    "threads",
    "presence_ttl",
    "ping_interval",
    "pong_timeout",
    "history_size",
    "history_ttl",
    "max_message_size",
    "compression",
    "compression_threshold",
    "outbox_bytes",
    "max_subscriptions",
    "history_budget_mb",
    "max_channels",
    "session_log_mb",
    "allow_client_publish",
    "demo",
    "drain_window",
    "node_name",
    "allowed_origins",
    "trusted_proxies",
    "allow_no_origin",
    "cors_credentials",
    "handshake_timeout",
    "tls_cert",
    "tls_key",
    "commands_per_second",
    "command_burst",
    "max_connections",
    "max_connections_per_ip",
    "max_memory_mb",
    "connect_rate_per_ip",
    "log_format",
    "jwt_secret",
    "jwt_public_key",
    "allow_anonymous",
    "connect_proxy",
    "subscribe_proxy",
    "publish_proxy",
    "proxy_timeout",
    "proxy_headers",
    "webhook_url",
    "webhook_secret",
    "webhook_queue_mb",
    "webhook_timeout",
    "webhook_grace",
];

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write durations like `25s`, `500ms`, `5m`)"))
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(format!("`{s}` is neither `on` nor `off`")),
    }
}

/// `compression = "on"` or `compression = true` in the file.
fn on_off<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Switch {
        Bool(bool),
        Word(String),
    }
    match Switch::deserialize(d)? {
        Switch::Bool(b) => Ok(Some(b)),
        Switch::Word(w) => parse_on_off(&w).map(Some).map_err(serde::de::Error::custom),
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    /// A bare number is the common slip (`ping_interval = 25`): name it.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Text(String),
        Number(f64),
    }
    match Written::deserialize(d)? {
        Written::Text(s) => parse_duration(&s).map(Some).map_err(serde::de::Error::custom),
        Written::Number(n) => Err(serde::de::Error::custom(format!(
            "{n} has no unit: write durations as strings, like \"{n}s\" or \"500ms\""
        ))),
    }
}

/// Reads and checks a config file. Errors name the line and the key.
pub fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file: FileConfig = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(file)
}

/// Everything `serve` needs, resolved.
pub struct Resolved {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The API key, and whether it was generated.
    pub api_key: (String, bool),
    /// The broker URL: `memory` or `redis…://…`.
    pub broker: String,
    /// The PEM CA certificates to trust for a TLS broker.
    pub broker_ca: Option<Vec<u8>>,
    /// Presence expiry with a Redis broker.
    pub presence_ttl: Option<Duration>,
    /// Bind with SO_REUSEPORT.
    pub reuse_port: bool,
    /// Threads serving connections (at least 1).
    pub threads: usize,
    /// Network-edge settings.
    pub server: ServerConfig,
    /// Session settings.
    pub session: SessionConfig,
    /// What the embedded broker may hold.
    pub node_limits: NodeLimits,
    /// How many ended-session records the node keeps.
    pub journal: JournalLimits,
    /// Node name.
    pub node_name: Option<String>,
    /// Log format.
    pub log_format: LogFormat,
    /// Connect-token checks, when a JWT key is configured.
    pub auth: Option<holdfast_server::JwtAuth>,
    /// The backend proxies, when any is configured.
    pub backend: Option<holdfast_server::BackendConfig>,
    /// Rules per channel namespace.
    pub namespaces: Namespaces,
}

impl ServeArgs {
    /// Merges flags/env over the file over the defaults, and validates.
    pub fn resolve(self) -> anyhow::Result<Resolved> {
        let file = match &self.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let session_defaults = SessionConfig::default();
        let server_defaults = ServerConfig::default();
        let history_defaults = HistoryLimits::default();
        let session = SessionConfig {
            ping_interval: self.ping_interval.or(file.ping_interval).unwrap_or(session_defaults.ping_interval),
            pong_timeout: self.pong_timeout.or(file.pong_timeout).unwrap_or(session_defaults.pong_timeout),
            outbox_max_bytes: self.outbox_bytes.or(file.outbox_bytes).unwrap_or(session_defaults.outbox_max_bytes),
            max_subscriptions: self
                .max_subscriptions
                .or(file.max_subscriptions)
                .unwrap_or(session_defaults.max_subscriptions),
            allow_client_publish: self
                .allow_client_publish
                .or(file.allow_client_publish)
                .unwrap_or(session_defaults.allow_client_publish),
            commands_per_second: self
                .commands_per_second
                .or(file.commands_per_second)
                .unwrap_or(session_defaults.commands_per_second),
            command_burst: self.command_burst.or(file.command_burst).unwrap_or(session_defaults.command_burst),
        };
        if session.ping_interval < Duration::from_millis(100) {
            bail!("ping_interval must be at least 100ms");
        }
        if session.pong_timeout.is_zero() {
            bail!("pong_timeout must be more than 0");
        }
        let max_message_size =
            self.max_message_size.or(file.max_message_size).unwrap_or(server_defaults.max_message_size);
        if max_message_size < 128 {
            bail!("max_message_size must be at least 128 bytes");
        }
        if session.outbox_max_bytes < max_message_size {
            bail!("outbox_bytes ({}) must be at least max_message_size ({max_message_size})", session.outbox_max_bytes);
        }
        let (api_key, generated) = match self.api_key.or(file.api_key) {
            Some(k) if k.trim().is_empty() => bail!("api_key is empty"),
            // A key read from a mounted secret usually ends in a newline,
            // which no `Authorization` header can carry.
            Some(k) => (k.trim().to_owned(), false),
            None => (generate_key(), true),
        };
        let broker = self.broker.or(file.broker).unwrap_or_else(|| "memory".into());
        if broker != "memory" {
            holdfast_redis::check_url(&broker).map_err(|e| anyhow::anyhow!("{e} (or use `memory` for one process)"))?;
        }
        let broker_ca = match self.broker_ca_file.or(file.broker_ca_file) {
            None => None,
            Some(path) => {
                Some(std::fs::read(&path).with_context(|| format!("cannot read broker_ca_file {}", path.display()))?)
            }
        };
        let presence_ttl = self.presence_ttl.or(file.presence_ttl);
        let secret = self.jwt_secret.or(file.jwt_secret);
        let public_key = self.jwt_public_key.or(file.jwt_public_key);
        let anonymous = self.allow_anonymous.or(file.allow_anonymous);
        let proxy = |flag: Option<String>, key: Option<String>, name: &str| {
            flag.or(key)
                .map(|url| holdfast_server::BackendConfig::url(&url).map_err(|e| anyhow::anyhow!("{name}: {e}")))
                .transpose()
        };
        let connect_proxy = proxy(self.connect_proxy, file.connect_proxy, "connect_proxy")?;
        let subscribe_proxy = proxy(self.subscribe_proxy, file.subscribe_proxy, "subscribe_proxy")?;
        let publish_proxy = proxy(self.publish_proxy, file.publish_proxy, "publish_proxy")?;
        let forward_headers: Vec<String> = self
            .proxy_headers
            .or(file.proxy_headers)
            .unwrap_or_default()
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        let backend = (connect_proxy.is_some() || subscribe_proxy.is_some() || publish_proxy.is_some()).then(|| {
            holdfast_server::BackendConfig {
                connect: connect_proxy,
                subscribe: subscribe_proxy,
                publish: publish_proxy,
                timeout: self.proxy_timeout.or(file.proxy_timeout).unwrap_or(Duration::from_secs(1)),
                headers: forward_headers.clone(),
                max_data: max_message_size,
            }
        });
        let (webhook, webhook_namespaces) = webhook::resolve(webhook::WebhookSettings {
            url: self.webhook_url.or(file.webhook_url),
            secret: self.webhook_secret.or(file.webhook_secret),
            queue_mb: self.webhook_queue_mb.or(file.webhook_queue_mb),
            timeout: self.webhook_timeout.or(file.webhook_timeout),
            grace: self.webhook_grace.or(file.webhook_grace),
            namespace_urls: file
                .namespaces
                .iter()
                .filter_map(|(n, ns)| Some((n.clone(), ns.webhook_url.clone()?)))
                .collect(),
        })?;
        let auth = match (secret, public_key) {
            (Some(_), Some(_)) => bail!("give jwt_secret or jwt_public_key, not both"),
            (Some(secret), None) => {
                Some(holdfast_server::JwtAuth::hs256(secret.as_bytes(), anonymous.unwrap_or(false)))
            }
            (None, Some(path)) => {
                let pem =
                    std::fs::read(&path).with_context(|| format!("cannot read jwt_public_key {}", path.display()))?;
                let auth = holdfast_server::JwtAuth::from_public_key_pem(&pem, anonymous.unwrap_or(false))
                    .map_err(|e| anyhow::anyhow!("jwt_public_key {}: {e}", path.display()))?;
                Some(auth)
            }
            (None, None) if anonymous == Some(false) => {
                bail!("allow_anonymous = false needs a JWT key (jwt_secret or jwt_public_key)")
            }
            (None, None) => None,
        };
        let history = HistoryLimits {
            max_len: self.history_size.or(file.history_size).unwrap_or(history_defaults.max_len),
            max_age: self.history_ttl.or(file.history_ttl).unwrap_or(history_defaults.max_age),
        };
        let default_rules =
            NamespaceRules { allow_publish: session.allow_client_publish, history, ..NamespaceRules::default() };
        let mut named = std::collections::HashMap::new();
        for (name, ns) in &file.namespaces {
            if name.is_empty() || name.contains(':') || holdfast_protocol::ChannelName::new(name).is_err() {
                bail!("namespace {name:?}: use the part of channel names before ':' (letters, digits, _ - . @ /)");
            }
            named.insert(
                name.clone(),
                NamespaceRules {
                    allow_publish: ns.allow_publish.unwrap_or(default_rules.allow_publish),
                    presence: ns.presence.unwrap_or(default_rules.presence),
                    private: ns.private.unwrap_or(false),
                    allow_anonymous: ns.allow_anonymous.unwrap_or(default_rules.allow_anonymous),
                    history: HistoryLimits {
                        max_len: ns.history_size.unwrap_or(history.max_len),
                        max_age: ns.history_ttl.unwrap_or(history.max_age),
                    },
                    ask_backend: ns.proxy.unwrap_or(true),
                    join_leave: ns.join_leave.unwrap_or(false),
                    latest: ns.latest.unwrap_or(false),
                    delta: ns.delta,
                },
            );
        }
        // In place of tokens, a connect proxy names users and a subscribe
        // proxy decides private channels.
        let names_users = auth.is_some() || backend.as_ref().is_some_and(|b| b.connect.is_some());
        let decides_private = auth.is_some() || backend.as_ref().is_some_and(|b| b.subscribe.is_some());
        if named.values().any(|r| (r.private && !decides_private) || (!r.allow_anonymous && !names_users)) {
            bail!("private namespaces need a JWT key or a subscribe proxy, and allow_anonymous = false a JWT key or a connect proxy (jwt_secret, jwt_public_key, subscribe_proxy, connect_proxy)");
        }
        // The demo page chats on `demo:lobby` from the browser, so its
        // namespace takes client publishes whatever the default says.
        if self.demo.or(file.demo).unwrap_or(true) {
            named.entry(DEMO_NAMESPACE.to_owned()).or_insert(NamespaceRules { allow_publish: true, ..default_rules });
        }
        let namespaces = Namespaces::new(default_rules, named);
        let tls = match (self.tls_cert.or(file.tls_cert), self.tls_key.or(file.tls_key)) {
            (Some(cert), Some(key)) => Some(holdfast_server::tls_acceptor(&cert, &key).map_err(anyhow::Error::msg)?),
            (None, None) => None,
            _ => bail!("tls_cert and tls_key go together: give both or neither"),
        };
        let allowed_origins = self.allowed_origins.or(file.allowed_origins).unwrap_or_default();
        let trusted_proxies: holdfast_server::TrustedProxies = self
            .trusted_proxies
            .or(file.trusted_proxies)
            .unwrap_or_default()
            .join(",")
            .parse()
            .map_err(|e| anyhow::anyhow!("trusted_proxies: {e}"))?;
        let cors_credentials = self.cors_credentials.or(file.cors_credentials).unwrap_or(false);
        if cors_credentials && allowed_origins.iter().any(|o| o == "*") {
            bail!("cors_credentials needs allowed_origins to name the sites: with `*` any site could send requests with your users' cookies");
        }
        Ok(Resolved {
            listen: self.listen.or(file.listen).unwrap_or_else(|| "127.0.0.1:8080".parse().expect("valid address")),
            api_key: (api_key.clone(), generated),
            broker,
            broker_ca,
            presence_ttl,
            reuse_port: self.reuse_port.or(file.reuse_port).unwrap_or(false),
            threads: match self.threads.or(file.threads).unwrap_or(0) {
                0 => std::thread::available_parallelism().map_or(1, usize::from),
                n => n,
            },
            node_limits: NodeLimits {
                history_bytes: self
                    .history_budget_mb
                    .or(file.history_budget_mb)
                    .map_or(NodeLimits::default().history_bytes, |mb| mb << 20),
                max_channels: self.max_channels.or(file.max_channels).unwrap_or(NodeLimits::default().max_channels),
            },
            journal: JournalLimits {
                record_bytes: self
                    .session_log_mb
                    .or(file.session_log_mb)
                    .map_or(JournalLimits::default().record_bytes, |mb| mb << 20),
            },
            server: ServerConfig {
                api_key,
                max_message_size,
                compression: self.compression.or(file.compression).unwrap_or(server_defaults.compression),
                compression_threshold: self
                    .compression_threshold
                    .or(file.compression_threshold)
                    .unwrap_or(server_defaults.compression_threshold),
                drain_window: self.drain_window.or(file.drain_window).unwrap_or(server_defaults.drain_window),
                origins: OriginPolicy {
                    allowed: allowed_origins,
                    allow_no_origin: self
                        .allow_no_origin
                        .or(file.allow_no_origin)
                        .unwrap_or(server_defaults.origins.allow_no_origin),
                    cors_credentials,
                },
                handshake_timeout: self
                    .handshake_timeout
                    .or(file.handshake_timeout)
                    .unwrap_or(server_defaults.handshake_timeout),
                tls,
                explain: None,
                finding_words: None,
                forward_headers,
                trusted_proxies,
                webhook,
                webhook_namespaces,
                // Started by `serve`, which owns their threads.
                workers: holdfast_server::Workers::default(),
                limits: Limits {
                    max_connections: match self.max_connections.or(file.max_connections).unwrap_or(0) {
                        0 => {
                            open_files_limit().map_or(0, |n| if n > 2 * FD_HEADROOM { n - FD_HEADROOM } else { n / 2 })
                        }
                        n => n,
                    },
                    max_connections_per_ip: self.max_connections_per_ip.or(file.max_connections_per_ip).unwrap_or(0),
                    max_memory_bytes: self.max_memory_mb.or(file.max_memory_mb).unwrap_or(0) * 1_000_000,
                    connect_rate_per_ip: self
                        .connect_rate_per_ip
                        .or(file.connect_rate_per_ip)
                        .unwrap_or(DEFAULT_CONNECT_RATE_PER_IP),
                },
            },
            session,
            node_name: self.node_name.or(file.node_name),
            auth,
            backend,
            namespaces,
            log_format: match self.log_format.as_deref() {
                Some("json") => LogFormat::Json,
                Some(_) => LogFormat::Text,
                None => file.log_format.unwrap_or_default(),
            },
        })
    }
}

/// New connections per second per address: enough for a NAT full of users
/// reconnecting after a deploy (the drain spreads them over its window),
/// far below what a reconnect loop produces.
const DEFAULT_CONNECT_RATE_PER_IP: u32 = 100;

/// File descriptors kept free for listeners, the HTTP API, logs and the
/// broker when `max_connections` is derived from the open-files limit.
const FD_HEADROOM: usize = 256;

/// This process's soft limit on open files (Linux `/proc/self/limits`):
/// past it `accept` fails with EMFILE, so refusing with 503 first is kinder.
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn generate_key() -> String {
    use rand::Rng;
    let bits: u128 = rand::rng().random();
    format!("hf_{bits:032x}")
}

#[cfg(test)]
mod tests;
