//! A deadline for requests that carry a body (`POST /api/*`, `/sse`,
//! `/poll`, `/doctor/explain`).
//!
//! hyper cuts a client that is slow with its headers
//! (`header_read_timeout`), but a handler reading the body waits for it as
//! long as the client likes: 1,195 connections that each sent headers and
//! then nothing held every descriptor of the process. So the body, and the
//! handling of it, must be done within `handshake_timeout` of the headers;
//! a request that is not gets 408 and its connection is closed. Requests
//! without a body (`GET`) pass untouched: a long-poll or an SSE stream
//! waits on purpose, and bounds itself.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, Method, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;

/// Middleware: see the module docs.
pub async fn body_deadline(State(state): State<AppState>, req: Request<Body>, next: Next) -> Response {
    if req.method() == Method::GET || req.method() == Method::HEAD || req.method() == Method::OPTIONS {
        return next.run(req).await;
    }
    let limit = state.config.handshake_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            state.metrics.request_timed_out();
            let body = format!("the request was not complete within {limit:?} (handshake_timeout)\n");
            // Unread body bytes may still come: the connection cannot be reused.
            (StatusCode::REQUEST_TIMEOUT, [(header::CONNECTION, "close")], body).into_response()
        }
    }
}
