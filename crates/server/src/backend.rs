//! `HttpBackend`: the connect, subscribe and publish proxies over HTTP.
//! holdfast POSTs one JSON object per question to the application's
//! backend and acts on its answer (see `docs/PROTOCOL.md`, "Backend
//! proxy"):
//!
//! ```text
//! → {"op":"connect","client":"web/1.0","user":null,"address":"203.0.113.7","transport":"websocket",
//!    "cookies":{"sid":"…"},"headers":{"x-request-id":"…"}}
//! ← 200 {"result":{"user":"42","expire_at":1767225600}}      allowed, as user 42 until then
//! ← 200 {"error":{"code":"refused","message":"log in first"}}  refused: the client sees that
//! ```
//!
//! Anything else (no answer within the timeout, a status other than 200,
//! unreadable JSON) fails the command with `backend_unavailable`: nothing
//! is ever allowed silently. One keep-alive connection pool serves all
//! three proxies; each answer's latency and result go to the metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use holdfast_core::{Allowed, Ask, AskKind, Backend, Denied, RequestContext};
use holdfast_protocol::ErrorCode;
use http_body_util::{BodyExt, Full};
use hyper::Uri;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::metrics::Metrics;

/// The largest `info` a subscribe proxy may attach to a subscription.
const MAX_INFO: usize = 4096;

/// Where and how to ask.
#[derive(Clone, Debug)]
pub struct BackendConfig {
    pub connect: Option<Uri>,
    pub subscribe: Option<Uri>,
    pub publish: Option<Uri>,
    /// The longest the backend may take to answer (default 1 s).
    pub timeout: Duration,
    /// Request headers passed to the backend (lowercase names), besides
    /// the cookies.
    pub headers: Vec<String>,
    /// Largest rewritten publication the publish proxy may answer with.
    pub max_data: usize,
}

impl BackendConfig {
    /// Parses a proxy URL; only `http://` (a backend on the same host or
    /// network: TLS to it is not built in).
    pub fn url(text: &str) -> Result<Uri, String> {
        http_url("proxy", text)
    }
}

/// A URL of the application's backend (`what`: which one, for the error):
/// only `http://`, since the shared client has no TLS.
pub(crate) fn http_url(what: &str, text: &str) -> Result<Uri, String> {
    let uri: Uri = text.parse().map_err(|e| format!("{what} URL {text:?}: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(format!("{what} URL {text:?}: use http://HOST[:PORT]/PATH (TLS to the backend is not built in)"));
    }
    Ok(uri)
}

/// The keep-alive client the proxies and the webhooks talk to the
/// application's backend with: plain HTTP (no TLS), no Nagle delay, a
/// connect that gives up after `connect_timeout`.
pub(crate) fn http_client(connect_timeout: Duration) -> Client<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(32)
        .build(connector)
}

/// The HTTP backend; see the module docs.
pub struct HttpBackend {
    config: BackendConfig,
    client: Client<HttpConnector, Full<Bytes>>,
    metrics: Arc<Metrics>,
}

/// What a proxy is sent: the fields of the ask, and a publication's `data`
/// exactly as it will be published.
#[derive(Serialize)]
struct ProxyRequest<'a> {
    #[serde(flatten)]
    fields: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
}

/// How an ask ended, for the metrics.
#[derive(Clone, Copy, Debug)]
pub enum Outcome {
    Allowed = 0,
    Refused = 1,
    Unavailable = 2,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Allowed, Outcome::Refused, Outcome::Unavailable];

    pub const fn label(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Refused => "refused",
            Outcome::Unavailable => "unavailable",
        }
    }
}

impl HttpBackend {
    pub fn new(config: BackendConfig, metrics: Arc<Metrics>) -> HttpBackend {
        let client = http_client(config.timeout);
        HttpBackend { config, client, metrics }
    }

    fn url(&self, kind: AskKind) -> Option<&Uri> {
        match kind {
            AskKind::Connect => self.config.connect.as_ref(),
            AskKind::Subscribe => self.config.subscribe.as_ref(),
            AskKind::Publish => self.config.publish.as_ref(),
        }
    }

    /// The JSON the backend gets.
    fn body(&self, ask: &Ask<'_>, context: &RequestContext) -> Result<String, Denied> {
        let mut data = None;
        let mut body = json!({
            "op": ask.kind().as_str(),
            "address": context.address.map(|a| a.to_string()),
            "transport": context.transport,
            "cookies": cookies(context.cookie.as_deref()),
            "headers": context.headers.iter().filter(|(k, _)| self.config.headers.contains(k))
                .map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect::<serde_json::Map<_, _>>(),
        });
        match *ask {
            Ask::Connect { client, user } => {
                body["client"] = client.into();
                body["user"] = user.into();
            }
            Ask::Subscribe { session, user, channel } => {
                body["session"] = session.into();
                body["user"] = user.into();
                body["channel"] = channel.as_str().into();
            }
            Ask::Publish { session, user, channel, .. } => {
                body["session"] = session.into();
                body["user"] = user.into();
                body["channel"] = channel.as_str().into();
            }
        }
        if let Ask::Publish { data: text, .. } = *ask {
            // Passed as the text that will be published: parsed into a
            // `Value`, numbers past f64 would reach the backend rounded
            // (and `1e400` as null, which it allowed) while the original
            // was published. What is not JSON at all is refused.
            data = Some(serde_json::from_str::<&RawValue>(text).map_err(|e| Denied::Refused {
                code: ErrorCode::BadRequest,
                message: format!("`data` cannot be passed to the publish proxy: {e}"),
            })?);
        }
        Ok(serde_json::to_string(&ProxyRequest { fields: body, data }).expect("a JSON value serializes"))
    }

    /// `cookie`: the user's, as their request sent it, for a backend whose
    /// session middleware reads the `Cookie` header.
    async fn post(&self, url: &Uri, body: String, cookie: Option<&str>) -> Result<Value, String> {
        let mut request = hyper::Request::post(url.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, concat!("holdfast/", env!("CARGO_PKG_VERSION")));
        if let Some(cookie) = cookie {
            request = request.header(hyper::header::COOKIE, cookie);
        }
        let request = request.body(Full::new(Bytes::from(body))).map_err(|e| e.to_string())?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| format!("cannot reach it: {e}"))?;
            let status = response.status();
            let bytes = response.into_body().collect().await.map_err(|e| format!("its answer broke off: {e}"))?;
            if status != hyper::StatusCode::OK {
                return Err(format!("it answered HTTP {status}"));
            }
            serde_json::from_slice::<Value>(&bytes.to_bytes()).map_err(|e| format!("its answer is not JSON: {e}"))
        };
        match tokio::time::timeout(self.config.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", self.config.timeout)),
        }
    }

    /// Reads `{"result": …}` or `{"error": …}`.
    fn decide(&self, ask: &Ask<'_>, answer: &Value) -> Result<Allowed, Denied> {
        let unreadable = |why: &str| Denied::Unavailable(format!("the {} proxy's answer {why}", ask.kind().as_str()));
        if let Some(error) = answer.get("error") {
            let message = error["message"].as_str().unwrap_or("refused by the application").to_owned();
            let code = error["code"]
                .as_str()
                .and_then(|c| ErrorCode::ALL.into_iter().find(|e| e.as_str() == c))
                .unwrap_or(ErrorCode::Refused);
            return Err(Denied::Refused { code, message });
        }
        let Some(result) = answer.get("result").filter(|r| r.is_object()) else {
            return Err(unreadable("has neither \"result\" nor \"error\""));
        };
        let user = match &result["user"] {
            Value::Null => None,
            Value::String(u) if !u.is_empty() => Some(u.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => return Err(unreadable("has a \"user\" that is not a string")),
        };
        let expires_at = match &result["expire_at"] {
            Value::Null => None,
            v => Some(v.as_u64().ok_or_else(|| unreadable("has an \"expire_at\" that is not unix seconds"))?),
        };
        let info = match (ask, result.get("info")) {
            (Ask::Subscribe { .. }, Some(i)) if !i.is_null() => {
                // Copied into the subscription's presence entry (in Redis).
                let text = i.to_string();
                if text.len() > MAX_INFO {
                    // Asking again gets the same answer: a refusal, not an
                    // outage clients would retry forever.
                    return Err(Denied::Refused {
                        code: ErrorCode::Refused,
                        message: "the subscribe proxy's \"info\" is larger than 4 KiB".into(),
                    });
                }
                Some(text)
            }
            _ => None,
        };
        let data = match (ask, result.get("data")) {
            (Ask::Publish { .. }, Some(d)) => {
                let text = d.to_string();
                if text.len() > self.config.max_data {
                    return Err(unreadable("rewrites the data past max_message_size"));
                }
                Some(text)
            }
            _ => None,
        };
        Ok(Allowed { user, expires_at, data, info })
    }
}

/// What a backend may learn of the request that opens a session: only
/// gathered when the node has a backend (an idle connection keeps it;
/// boxed, so a connection's future carries one word for it).
pub fn context_of(
    node: &holdfast_core::Node,
    headers: &hyper::HeaderMap,
    peer: Option<std::net::IpAddr>,
    transport: &'static str,
    forward: &[String],
) -> Option<Box<RequestContext>> {
    node.backend.as_ref()?;
    let text = |v: &hyper::header::HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
    let cookie: Vec<String> = headers.get_all(hyper::header::COOKIE).iter().map(text).collect();
    Some(Box::new(RequestContext {
        address: peer,
        transport,
        cookie: (!cookie.is_empty()).then(|| cookie.join("; ")),
        headers: forward
            .iter()
            .filter_map(|name| headers.get(name.as_str()).map(|v| (name.clone(), text(v))))
            .collect(),
    }))
}

/// `a=1; b=2` as a map (the last of repeated names wins).
fn cookies(header: Option<&str>) -> serde_json::Map<String, Value> {
    header
        .into_iter()
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (!k.is_empty()).then(|| (k.to_owned(), Value::from(v)))
        })
        .collect()
}

#[async_trait]
impl Backend for HttpBackend {
    fn asks(&self, kind: AskKind) -> bool {
        self.url(kind).is_some()
    }

    async fn ask(&self, ask: Ask<'_>, context: &RequestContext) -> Result<Allowed, Denied> {
        let Some(url) = self.url(ask.kind()) else {
            return Ok(Allowed::default());
        };
        let body = self.body(&ask, context)?;
        let started = Instant::now();
        let decided = match self.post(url, body, context.cookie.as_deref()).await {
            Ok(answer) => self.decide(&ask, &answer),
            Err(why) => Err(Denied::Unavailable(format!("the {} proxy: {why}", ask.kind().as_str()))),
        };
        let outcome = match &decided {
            Ok(_) => Outcome::Allowed,
            Err(Denied::Refused { .. }) => Outcome::Refused,
            Err(Denied::Unavailable(why)) => {
                tracing::warn!(proxy = ask.kind().as_str(), "backend unavailable: {why}");
                Outcome::Unavailable
            }
        };
        self.metrics.backend(ask.kind(), outcome, started.elapsed());
        decided
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_protocol::ChannelName;

    fn backend() -> HttpBackend {
        let config = BackendConfig {
            connect: None,
            subscribe: None,
            publish: None,
            timeout: Duration::from_secs(1),
            headers: vec!["x-request-id".into()],
            max_data: 16,
        };
        HttpBackend::new(config, Arc::default())
    }

    #[test]
    fn answers_are_read_strictly() {
        let b = backend();
        let channel = ChannelName::new("c").unwrap();
        let connect = Ask::Connect { client: None, user: None };
        let publish = Ask::Publish { session: "s", user: None, channel: &channel, data: "1" };
        let allowed = b.decide(&connect, &json!({"result": {"user": 42, "expire_at": 1767225600}})).unwrap();
        assert_eq!((allowed.user.as_deref(), allowed.expires_at), (Some("42"), Some(1767225600)));
        assert_eq!(b.decide(&connect, &json!({"result": {}})).unwrap(), Allowed::default(), "anonymous");
        let refused = b.decide(&connect, &json!({"error": {"code": "token_expired", "message": "log in"}}));
        assert_eq!(refused, Err(Denied::Refused { code: ErrorCode::TokenExpired, message: "log in".into() }));
        let refused = b.decide(&connect, &json!({"error": {"code": "made_up"}}));
        assert!(matches!(refused, Err(Denied::Refused { code: ErrorCode::Refused, .. })));
        for bad in
            [json!({}), json!({"result": 1}), json!({"result": {"user": []}}), json!({"result": {"expire_at": "soon"}})]
        {
            assert!(matches!(b.decide(&connect, &bad), Err(Denied::Unavailable(_))), "{bad}: no silent allow");
        }
        let rewritten = b.decide(&publish, &json!({"result": {"data": {"t": "x"}}})).unwrap();
        assert_eq!(rewritten.data.as_deref(), Some(r#"{"t":"x"}"#));
        let too_big = b.decide(&publish, &json!({"result": {"data": "a very long rewritten text"}}));
        assert!(matches!(too_big, Err(Denied::Unavailable(_))));
    }

    #[test]
    fn the_backend_gets_cookies_and_only_allowed_headers() {
        let b = backend();
        let context = RequestContext {
            address: Some("203.0.113.7".parse().unwrap()),
            transport: "websocket",
            cookie: Some("sid=abc; theme=dark".into()),
            headers: vec![("x-request-id".into(), "r1".into()), ("x-secret".into(), "no".into())],
        };
        let body: Value =
            serde_json::from_str(&b.body(&Ask::Connect { client: Some("web"), user: None }, &context).unwrap())
                .unwrap();
        assert_eq!(body["cookies"], json!({"sid": "abc", "theme": "dark"}));
        assert_eq!(body["headers"], json!({"x-request-id": "r1"}));
        assert_eq!((body["op"].as_str(), body["address"].as_str()), (Some("connect"), Some("203.0.113.7")));
        assert!(BackendConfig::url("https://x/auth").is_err() && BackendConfig::url("http://127.0.0.1:9/a").is_ok());
    }

    /// The publish proxy decides on exactly what will be published: data
    /// serde cannot hold as a value used to reach it as `null` (allowed,
    /// then the original published), and big numbers rounded.
    #[test]
    fn the_publish_proxy_sees_data_exactly_as_it_will_be_published() {
        let b = backend();
        let context = RequestContext { address: None, transport: "websocket", cookie: None, headers: Vec::new() };
        let channel = ChannelName::new("c").unwrap();
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let exact = [r#"{"id":12345678901234567890123,"f":0.1000000000000000055511151231257827}"#, "1e400", &deep];
        for data in exact {
            let ask = Ask::Publish { session: "s", user: None, channel: &channel, data };
            let body = b.body(&ask, &context).unwrap();
            assert!(body.contains(&format!(r#""data":{data}"#)), "{}", &body[..80.min(body.len())]);
            assert!(serde_json::from_str::<Box<RawValue>>(&body).is_ok(), "the body is JSON");
        }
        let ask = Ask::Publish { session: "s", user: None, channel: &channel, data: "{not json" };
        match b.body(&ask, &context) {
            Err(Denied::Refused { code: ErrorCode::BadRequest, message }) => {
                assert!(message.contains("publish proxy"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }
}
