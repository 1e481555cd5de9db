//! The HTTP API for backends (`/api/*`): publish, broadcast, history,
//! presence, channels, disconnect.
//!
//! Every answer is JSON; every error is `{"error": {"code", "message"}}`
//! with a status that fits and a message that names the bad field. Bodies
//! are read with a size cap before parsing.

use axum::body::{to_bytes, Body};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use holdfast_core::{ClientInfo, Disconnect, Target};
use holdfast_protocol::{encode_history, ChannelName, CloseCode, ErrorCode, Offset, PublishOptions};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;

use crate::AppState;

/// An API error: status, stable code, message.
pub struct ApiError(pub(crate) StatusCode, pub(crate) ErrorCode, pub(crate) String);

impl ApiError {
    pub(crate) fn bad(message: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.1.as_str(), "message": self.2}});
        (self.0, axum::Json(body)).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

/// Checks `Authorization: Bearer <key>` in constant time.
pub fn authorize(headers: &HeaderMap, api_key: &str) -> Result<(), ApiError> {
    let unauthorized = |m: &str| ApiError(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, m.to_string());
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("missing `Authorization: Bearer <api key>` header"))?;
    let presented = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <api key>`"))?;
    if bool::from(presented.trim().as_bytes().ct_eq(api_key.as_bytes())) {
        Ok(())
    } else {
        Err(unauthorized("wrong API key"))
    }
}

/// Reads a JSON body: checks the content type and the size cap.
async fn json_body(state: &AppState, req: Request<Body>) -> Result<bytes::Bytes, ApiError> {
    authorize(req.headers(), &state.config.api_key)?;
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
    if !is_json {
        return Err(ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "send the body as JSON with `Content-Type: application/json`".into(),
        ));
    }
    let limit = state.config.max_message_size + 1024;
    to_bytes(req.into_body(), limit).await.map_err(|_| {
        ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::MessageTooBig,
            format!("the body is larger than {limit} bytes (max_message_size plus 1 KiB)"),
        )
    })
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        // serde names the missing or wrong field ("missing field `channel`").
        ApiError::bad(format!("invalid body: {e}"))
    })
}

fn channel(name: &str, field: &str) -> Result<ChannelName, ApiError> {
    ChannelName::new(name)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, ErrorCode::InvalidChannel, format!("`{field}`: {e}")))
}

/// The `channel` query parameter, present and valid.
fn channel_param(value: Option<&str>) -> Result<ChannelName, ApiError> {
    channel(value.ok_or_else(|| ApiError::bad("query parameter `channel` is missing"))?, "channel")
}

fn check_size(state: &AppState, data: &RawValue) -> Result<(), ApiError> {
    if data.get().len() > state.config.max_message_size {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::MessageTooBig,
            format!("`data` is {} bytes; max_message_size is {}", data.get().len(), state.config.max_message_size),
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody<'a> {
    channel: String,
    #[serde(borrow)]
    data: &'a RawValue,
    idempotency_key: Option<String>,
    version: Option<u64>,
    version_epoch: Option<String>,
}

/// The options a publish or broadcast body carries, checked.
fn publish_options(
    idempotency_key: Option<String>,
    version: Option<u64>,
    version_epoch: Option<String>,
) -> Result<PublishOptions, ApiError> {
    PublishOptions::new(idempotency_key, version, version_epoch).map_err(ApiError::bad)
}

/// The answer for one channel's publish: its position, and `skipped` when
/// nothing was published.
fn published_json(channel: &ChannelName, p: &holdfast_core::Published) -> serde_json::Value {
    let mut answer = json!({"channel": channel.as_str(), "epoch": p.epoch.as_str(), "offset": p.offset.0});
    if let Some(skipped) = p.skipped {
        answer["skipped"] = skipped.as_str().into();
    }
    answer
}

/// `POST /api/publish`.
pub async fn publish(State(state): State<AppState>, req: Request<Body>) -> ApiResult {
    let body = json_body(&state, req).await?;
    let p: PublishBody = parse(&body)?;
    let ch = channel(&p.channel, "channel")?;
    check_size(&state, p.data)?;
    let options = publish_options(p.idempotency_key, p.version, p.version_epoch)?;
    let published = publish_observed(&state, &ch, p.data.get(), &options).await?;
    Ok(axum::Json(published_json(&ch, &published)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BroadcastBody<'a> {
    channels: Vec<String>,
    #[serde(borrow)]
    data: &'a RawValue,
    idempotency_key: Option<String>,
    version: Option<u64>,
    version_epoch: Option<String>,
}

/// `POST /api/broadcast`: one result per channel, in order; a failed channel
/// does not stop the others.
pub async fn broadcast(State(state): State<AppState>, req: Request<Body>) -> ApiResult {
    let body = json_body(&state, req).await?;
    let b: BroadcastBody = parse(&body)?;
    check_size(&state, b.data)?;
    let options = publish_options(b.idempotency_key, b.version, b.version_epoch)?;
    if b.channels.is_empty() {
        return Err(ApiError::bad("`channels` is empty"));
    }
    let channels: Vec<ChannelName> =
        b.channels.iter().enumerate().map(|(i, c)| channel(c, &format!("channels[{i}]"))).collect::<Result<_, _>>()?;
    let mut results = Vec::with_capacity(channels.len());
    for ch in &channels {
        results.push(match publish_observed(&state, ch, b.data.get(), &options).await {
            Ok(p) => published_json(ch, &p),
            Err(e) => json!({"channel": ch.as_str(), "error": {"code": e.1.as_str(), "message": e.2}}),
        });
    }
    Ok(axum::Json(json!({"results": results})).into_response())
}

/// Query of `GET /api/history`; fields are text so a bad one gets a message
/// naming it.
#[derive(Deserialize)]
pub struct HistoryQuery {
    channel: Option<String>,
    since: Option<String>,
    limit: Option<String>,
}

/// `GET /api/history?channel=C&since=OFFSET&limit=N`.
pub async fn history(State(state): State<AppState>, headers: HeaderMap, Query(q): Query<HistoryQuery>) -> ApiResult {
    authorize(&headers, &state.config.api_key)?;
    let ch = channel_param(q.channel.as_deref())?;
    let number = |name: &str, v: &Option<String>| -> Result<Option<u64>, ApiError> {
        v.as_deref()
            .map(|s| {
                s.parse::<u64>().map_err(|_| {
                    ApiError::bad(format!("query parameter `{name}` must be a non-negative integer, got {s:?}"))
                })
            })
            .transpose()
    };
    let since = number("since", &q.since)?.map(Offset);
    let limit = number("limit", &q.limit)?.unwrap_or(u64::MAX).min(10_000) as usize;
    let h = state.node.broker.history(&ch, since, limit).await.map_err(unavailable)?;
    let body = encode_history(&h.epoch, h.offset, h.publications.iter());
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Query of `GET /api/presence`.
#[derive(Deserialize)]
pub struct ChannelQuery {
    channel: Option<String>,
}

/// Query of `GET /api/presence`: the channel, and `by=user` to group it.
#[derive(Deserialize)]
pub struct PresenceQuery {
    channel: Option<String>,
    by: Option<String>,
}

/// The channel's subscribers, when its namespace keeps presence.
async fn subscribers_of(
    state: &AppState,
    headers: &HeaderMap,
    channel: Option<&str>,
) -> Result<(ChannelName, Vec<Arc<ClientInfo>>), ApiError> {
    authorize(headers, &state.config.api_key)?;
    let ch = channel_param(channel)?;
    if !state.node.namespaces.rules(&ch).presence {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            ErrorCode::PermissionDenied,
            format!("presence is off for the namespace of {ch} (namespaces.<name>.presence)"),
        ));
    }
    let subscribers = state.node.broker.presence(&ch).await.map_err(unavailable)?;
    Ok((ch, subscribers))
}

/// Sessions by user (a user with three tabs is one user), users in order;
/// and the sessions of nobody.
fn by_user(subscribers: &[Arc<ClientInfo>]) -> (BTreeMap<&str, Vec<&str>>, usize) {
    let mut users: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut anonymous = 0;
    for c in subscribers {
        match c.user.as_deref() {
            Some(user) => users.entry(user).or_default().push(&c.session),
            None => anonymous += 1,
        }
    }
    (users, anonymous)
}

/// `GET /api/presence?channel=C[&by=user]`.
pub async fn presence(State(state): State<AppState>, headers: HeaderMap, Query(q): Query<PresenceQuery>) -> ApiResult {
    let (ch, subscribers) = subscribers_of(&state, &headers, q.channel.as_deref()).await?;
    match q.by.as_deref() {
        None | Some("session") => {}
        Some("user") => {
            let (users, anonymous) = by_user(&subscribers);
            let users: Vec<_> =
                users.into_iter().map(|(user, sessions)| json!({"user": user, "sessions": sessions})).collect();
            return Ok(axum::Json(json!({"channel": ch.as_str(), "users": users, "anonymous_sessions": anonymous}))
                .into_response());
        }
        Some(other) => {
            return Err(ApiError::bad(format!("query parameter `by` is `session` or `user`, got {other:?}")))
        }
    }
    let list: Vec<_> = subscribers
        .iter()
        .map(|c| {
            let mut entry = json!({"session": c.session, "user": c.user, "client": c.client});
            // Written by this server's backend proxy from valid JSON.
            if let Some(info) = c.info.as_deref().and_then(|i| serde_json::from_str::<serde_json::Value>(i).ok()) {
                entry["info"] = info;
            }
            entry
        })
        .collect();
    Ok(axum::Json(json!({"channel": ch.as_str(), "subscribers": list})).into_response())
}

/// `GET /api/presence/stats?channel=C`: how many sessions and users,
/// without the list.
pub async fn presence_stats(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ChannelQuery>,
) -> ApiResult {
    let (ch, subscribers) = subscribers_of(&state, &headers, q.channel.as_deref()).await?;
    let (users, anonymous) = by_user(&subscribers);
    let body = json!({"channel": ch.as_str(), "sessions": subscribers.len(), "users": users.len(), "anonymous_sessions": anonymous});
    Ok(axum::Json(body).into_response())
}

/// `GET /api/channels`.
pub async fn channels(State(state): State<AppState>, headers: HeaderMap) -> ApiResult {
    authorize(&headers, &state.config.api_key)?;
    let list = state.node.broker.channels().await.map_err(unavailable)?;
    let list: Vec<_> =
        list.iter().map(|c| json!({"channel": c.channel.as_str(), "subscribers": c.subscribers})).collect();
    Ok(axum::Json(json!({"channels": list})).into_response())
}

/// `GET /api/status`: what the `/status` page shows, now.
pub async fn status(State(state): State<AppState>, headers: HeaderMap) -> ApiResult {
    authorize(&headers, &state.config.api_key)?;
    let channels = state.node.broker.channels().await.map_err(unavailable)?;
    let mut body = state.metrics.status();
    body["diagnosis"] = serde_json::to_value(crate::diagnosis::diagnosis(&state)).unwrap_or_default();
    body["channels"] = channels.len().into();
    body["subscriptions"] = channels.iter().map(|c| c.subscribers).sum::<usize>().into();
    body["ready"] = match (state.node.is_draining(), state.node.broker.readiness()) {
        (true, _) => json!("draining for shutdown"),
        (false, Ok(())) => json!(true),
        (false, Err(why)) => json!(format!("broker: {why}")),
    };
    body["node"] = state.node.name.clone().into();
    body["at_ms"] =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64).into();
    Ok(axum::Json(body).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    user: Option<String>,
    session: Option<String>,
    reason: Option<String>,
}

/// What sessions closed by `/api/disconnect` are told when the request
/// gives no `reason`.
const DISCONNECTED_BY_THE_APPLICATION: &str = "disconnected by the application";

/// `POST /api/disconnect {"user"}` (or `{"session"}`, and an optional
/// `"reason"`): closes every session of that user with
/// `disconnected_by_server` (do not reconnect).
pub async fn disconnect(State(state): State<AppState>, req: Request<Body>) -> ApiResult {
    let body = json_body(&state, req).await?;
    let d: DisconnectBody = parse(&body)?;
    let target = match (&d.user, &d.session) {
        (Some(u), None) => Target::User(u),
        (None, Some(s)) => Target::Session(s),
        _ => return Err(ApiError::bad("give exactly one of `user` or `session`")),
    };
    // The reason goes into the close frame, which holds 123 bytes: refused
    // rather than cut, so the words the client reads are the words sent.
    let words = match d.reason {
        Some(r) if r.len() > holdfast_core::MAX_REASON_BYTES => {
            return Err(ApiError::bad("`reason` is longer than 123 bytes, what a WebSocket close frame holds"))
        }
        Some(r) if !r.is_empty() => std::borrow::Cow::Owned(r),
        _ => std::borrow::Cow::Borrowed(DISCONNECTED_BY_THE_APPLICATION),
    };
    let reason = Disconnect::new(CloseCode::DisconnectedByServer, words);
    let n = state.node.sessions.disconnect(target, &reason);
    // Other nodes close theirs when the broker delivers the request; their
    // counts are not waited for.
    let nodes = state.node.broker.disconnect_elsewhere(target, &reason).await.map_err(unavailable)?;
    Ok(axum::Json(json!({"disconnected": n, "other_nodes": nodes})).into_response())
}

/// JSON 404 for unknown `/api/*` paths.
pub async fn not_found() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such API endpoint; see docs/PROTOCOL.md".into())
}

/// JSON 405 for a known path with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError(StatusCode::METHOD_NOT_ALLOWED, ErrorCode::MethodNotAllowed, "method not allowed on this endpoint".into())
}

/// Publishes and tells the metrics, like a client publish does.
async fn publish_observed(
    state: &AppState,
    channel: &ChannelName,
    data: &str,
    options: &PublishOptions,
) -> Result<holdfast_core::Published, ApiError> {
    use holdfast_core::Observer;
    if let Some(why) = state.node.publish_refusal() {
        return Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::BrokerUnavailable, why.into()));
    }
    let started = std::time::Instant::now();
    match state.node.broker.publish_with(channel, data, options).await {
        Ok(p) => {
            if p.skipped.is_none() {
                Observer::published(state.metrics.as_ref(), p.delivered, started.elapsed());
            }
            Ok(p)
        }
        Err(e) => {
            state.metrics.broker_error();
            Err(unavailable(e))
        }
    }
}

fn unavailable(e: holdfast_core::BrokerError) -> ApiError {
    let code = e.code();
    ApiError(StatusCode::SERVICE_UNAVAILABLE, code, e.to_string())
}
