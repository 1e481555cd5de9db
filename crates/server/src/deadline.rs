//! A deadline for requests that carry a body (`POST /api/*`, `/sse`,
//! `/poll`, `/doctor/explain`).
//!
//! hyper cuts a client that is slow with its headers
//! (`header_read_timeout`), but a handler reading the body waits for it as
//! long as the client likes: 1,195 connections that each sent headers and
//! then nothing held every descriptor of the process. So the body must have
//! arrived within `handshake_timeout` of the headers; a request whose body
//! has not, and whose handler has not answered, gets 408 and its
//! connection is closed. Requests
//! without a body (`GET`) pass untouched: a long-poll or an SSE stream
//! waits on purpose, and bounds itself.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, Method, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::AppState;

/// Middleware: see the module docs.
pub async fn body_deadline(State(state): State<AppState>, req: Request<Body>, next: Next) -> Response {
    if req.method() == Method::GET || req.method() == Method::HEAD || req.method() == Method::OPTIONS {
        return next.run(req).await;
    }
    // Only the body's arrival is timed: a handler that has it may take as
    // long as its own work takes (a slow broker), since cutting it then
    // would answer 408 for publications already made.
    let arrived = Arc::new(AtomicBool::new(false));
    let (parts, body) = req.into_parts();
    let at_end = arrived.clone();
    let end = futures_util::stream::once(async move {
        at_end.store(true, Ordering::Relaxed);
        None
    });
    let body = body.into_data_stream().map(Some).chain(end).filter_map(std::future::ready);
    let run = next.run(Request::from_parts(parts, Body::from_stream(body)));
    tokio::pin!(run);
    let limit = state.config.handshake_timeout;
    if let Ok(response) = tokio::time::timeout(limit, &mut run).await {
        return response;
    }
    if arrived.load(Ordering::Relaxed) {
        return run.await;
    }
    state.metrics.request_timed_out();
    let body = format!("the request was not complete within {limit:?} (handshake_timeout)\n");
    // Unread body bytes may still come: the connection cannot be reused.
    (StatusCode::REQUEST_TIMEOUT, [(header::CONNECTION, "close")], body).into_response()
}
