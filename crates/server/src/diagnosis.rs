//! What the server saw of its users' failures, over HTTP:
//! `GET /api/diagnosis` (the patterns, in the doctor's words),
//! `GET /api/sessions/{id}` and `GET /api/users/{user}/sessions` (a
//! user's timeline). The journal (core) finds the patterns; the words come
//! from a [`FindingWords`] the binary hands over (the doctor's), so the
//! server never depends on the doctor.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use holdfast_protocol::{Cause, Diagnosis, ErrorCode, Evidence, Finding};
use serde::Deserialize;
use std::sync::Arc;

use crate::api::{authorize, ApiError};
use crate::upgrade::RejectCause;
use crate::AppState;

/// Turns a finding into the doctor's summary and fix.
pub type FindingWords = Arc<dyn Fn(&Finding) -> (String, String) + Send + Sync>;

/// Most sessions a timeline answer lists.
pub const MAX_TIMELINE: usize = 100;

type ApiResult = Result<axum::response::Response, ApiError>;

/// Refused handshakes that show a proxy in front not forwarding upgrades,
/// and the doctor's cause for each: the server's own evidence next to what
/// clients report (a browser only sees that its WebSocket failed).
const PROXY_REFUSALS: [(RejectCause, Cause); 3] = [
    (RejectCause::ProxyDroppedUpgrade, Cause::ProxyStripsUpgrade),
    (RejectCause::NoConnectionUpgrade, Cause::ProxyStripsUpgrade),
    (RejectCause::Http10, Cause::ProxyHttp10Upstream),
];

/// The node's diagnosis, with the doctor's words when the server has them.
pub fn diagnosis(state: &AppState) -> Diagnosis {
    let mut d = state.node.journal.diagnosis(state.node.name.as_deref());
    for (refusal, cause) in PROXY_REFUSALS {
        let Some(seen) = state.metrics.rejections.seen(refusal) else { continue };
        match d.findings.iter_mut().find(|f| f.cause == cause && f.seen_in == Evidence::RefusedHandshakes) {
            Some(f) => {
                f.count += seen.total;
                f.first_seen_ms = f.first_seen_ms.min(seen.first_ms);
                f.last_seen_ms = f.last_seen_ms.max(seen.last_ms);
            }
            None => d.findings.push(Finding {
                cause,
                seen_in: Evidence::RefusedHandshakes,
                count: seen.total,
                first_seen_ms: seen.first_ms,
                last_seen_ms: seen.last_ms,
                peer: None,
                silence_ms: None,
                fallback_share: d.opened.fallback_share(),
                examples: Vec::new(),
                summary: String::new(),
                fix: String::new(),
            }),
        }
    }
    d.order_findings();
    if let Some(words) = &state.config.finding_words {
        for f in &mut d.findings {
            (f.summary, f.fix) = words(f);
        }
    }
    d
}

/// `GET /api/diagnosis`.
pub async fn get(State(state): State<AppState>, headers: HeaderMap) -> ApiResult {
    authorize(&headers, &state.config.api_key)?;
    Ok(axum::Json(diagnosis(&state)).into_response())
}

/// `GET /api/sessions/{id}`: this node's record, else the broker's (every
/// node's, with Redis).
pub async fn session(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    authorize(&headers, &state.config.api_key)?;
    let record = match state.node.journal.session(&id) {
        Some(r) => Some(r),
        None => state.node.broker.session_record(&id).await.map_err(unavailable)?,
    };
    match record {
        Some(r) => Ok(axum::Json(r).into_response()),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownSession,
            format!("no record of session {id:?}: it is still open, or ended longer ago than the session log keeps"),
        )),
    }
}

/// Query of `GET /api/users/{user}/sessions`.
#[derive(Deserialize)]
pub struct TimelineQuery {
    limit: Option<String>,
}

/// `GET /api/users/{user}/sessions?limit=N`: the user's last sessions,
/// newest first.
pub async fn user_sessions(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(user): Path<String>,
    Query(q): Query<TimelineQuery>,
) -> ApiResult {
    authorize(&headers, &state.config.api_key)?;
    let limit = match q.limit.as_deref() {
        None => 20,
        Some(s) => s
            .parse::<usize>()
            .map_err(|_| ApiError::bad(format!("query parameter `limit` must be a non-negative integer, got {s:?}")))?,
    }
    .min(MAX_TIMELINE);
    let sessions = match state.node.broker.user_sessions(&user, limit).await.map_err(unavailable)? {
        Some(shared) => shared,
        None => state.node.journal.user_sessions(&user, limit),
    };
    Ok(axum::Json(serde_json::json!({"user": user, "sessions": sessions})).into_response())
}

fn unavailable(e: holdfast_core::BrokerError) -> ApiError {
    ApiError(StatusCode::SERVICE_UNAVAILABLE, e.code(), e.to_string())
}
