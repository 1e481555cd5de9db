//! Verdicts once the upgrade got its `101`: the handshake's checks, a
//! session the server refused, and how the connection then ended.

use super::*;

/// The upgrade went through without any of the offered subprotocols; how
/// the server then ended the session (often at once, with 1002 or 1008)
/// is the evidence that it wanted one.
fn unanswered_subprotocol(h: &Handshake, end: Option<&End>) -> Verdict {
    let then = match end {
        Some(End::Closed { code, reason, after }) => format!(
            ", then closed the connection {:.1} s later with code {code}{}",
            after.as_secs_f64(),
            if reason.is_empty() { String::new() } else { format!(" ({reason:?})") }
        ),
        Some(End::Dropped { after }) => {
            format!(", then dropped the connection {:.1} s later without a close frame", after.as_secs_f64())
        }
        None => String::new(),
    };
    verdict(
        Cause::SubprotocolMismatch,
        format!(
            "The client offered subprotocol {}; the server upgraded without answering any (no \
             Sec-WebSocket-Protocol){then}. Browsers and Node's ws client fail such a connection at once \
             (\"Sent non-empty 'Sec-WebSocket-Protocol' header but no response was received\"); a server that \
             checks the protocol only after the upgrade (a ws handleProtocols that finds no match) closes it.",
            h.offered.join(", ")
        ),
        "Offer a subprotocol the server supports (for holdfast: holdfast.v1.json), or make the server answer the \
         one it accepts in Sec-WebSocket-Protocol, or refuse the handshake with HTTP 400 naming the ones it \
         supports instead of upgrading without one.",
    )
}

pub(super) fn handshake_verdict(h: &Handshake) -> Option<Verdict> {
    if !h.accept_ok || !h.upgrade_ok || !h.connection_ok {
        let mut broken = Vec::new();
        if !h.accept_ok {
            broken.push("Sec-WebSocket-Accept does not match the key");
        }
        if !h.upgrade_ok {
            broken.push("Upgrade: websocket is missing");
        }
        if !h.connection_ok {
            broken.push("Connection: upgrade is missing");
        }
        return Some(verdict(
            Cause::Unknown,
            format!(
                "The server answered 101 but the handshake is invalid: {}. Browsers fail such a connection.",
                broken.join("; ")
            ),
            "Fix the server's handshake (RFC 6455 §4.2.2), or the proxy that rewrites these headers.",
        ));
    }
    if h.chose_unoffered() {
        return Some(verdict(
            Cause::SubprotocolMismatch,
            format!(
                "The server chose subprotocol {:?}, which the client did not offer; browsers fail the connection.",
                h.chosen.as_deref().unwrap_or_default()
            ),
            "Make the server choose only among offered subprotocols (or none), or offer that one.",
        ));
    }
    None
}

pub(super) fn session_verdict(o: &Observations) -> Verdict {
    if let Some(h) = o.handshake.as_ref().filter(|h| h.answered_no_offer()) {
        return unanswered_subprotocol(h, o.end.as_ref());
    }
    // Before how the connection ended: a refused session is closed next.
    if let Some(RoundTrip::Refused { code, message }) = &o.round_trip {
        return refused_session(code, message);
    }
    let idle = o.idle_requested;
    match &o.end {
        Some(End::Dropped { after }) if idle.is_some() => {
            let secs = whole_seconds(*after);
            return verdict(
                Cause::IdleTimeout,
                format!(
                    "After {secs} s of silence the connection was dropped without a close frame: something in between \
                     cuts idle connections, and {}. Browsers see 1006.",
                    idle_limits_clause(secs)
                ),
                with_platform(&idle_fix(Some(secs)), answered_by(o)),
            );
        }
        Some(End::Dropped { after }) => {
            return verdict(
                Cause::AbnormalClosure,
                format!(
                    "The connection dropped {} s after the handshake without a close frame (TCP FIN or RST); browsers see 1006.",
                    whole_seconds(*after)
                ),
                "Check the server's logs around that time (a crash, a restart, a proxy reload), and make \
                 clients reconnect with backoff.",
            )
        }
        Some(End::Closed { code, reason, after }) => {
            let meaning = CloseCode::from_code(*code).map(|c| c.meaning()).unwrap_or("an application-defined code");
            let reconnect = if CloseCode::advice_for(*code) { "should reconnect" } else { "should not reconnect" };
            return verdict(
                Cause::ServerClosed,
                format!(
                    "The server closed the connection {} s after the handshake with code {code}{}: {meaning} A client {reconnect}.",
                    whole_seconds(*after),
                    if reason.is_empty() { String::new() } else { format!(" ({reason:?})") }
                ),
                "See the close code's meaning; if it is unexpected, check the server's logs for this session.",
            );
        }
        None => {}
    }
    let how = match &o.round_trip {
        Some(RoundTrip::Holdfast { .. }) => "and it speaks the holdfast protocol",
        Some(RoundTrip::Echo) => "and it echoes messages",
        Some(RoundTrip::Refused { .. }) => "but it refused the session",
        Some(RoundTrip::OtherReply(_)) => "and it answered the probe message",
        Some(RoundTrip::NoReply) | None => {
            "(it did not answer the probe message, which is fine for endpoints that only push)"
        }
    };
    let idle_note = match idle {
        Some(i) => format!(" It stayed open through {} s of client silence.", i.as_secs()),
        None => String::from(" To find proxy idle timeouts, run again with --idle 75s."),
    };
    verdict(
        Cause::Healthy,
        format!("The endpoint completed a valid WebSocket handshake {how}.{idle_note}"),
        "Nothing to fix.",
    )
}

/// A holdfast server opened the WebSocket and refused the session: every
/// client without what this one lacked fails the same way, although the
/// handshake works.
fn refused_session(code: &str, message: &str) -> Verdict {
    let said = format!("The WebSocket opened, but the server refused the session: {code} ({message}).");
    match code {
        "token_required" | "token_invalid" | "token_expired" | "permission_denied" | "refused" => verdict(
            Cause::AuthRejected,
            format!("{said} Clients without valid credentials cannot connect, though the handshake works."),
            match code {
                "token_required" => "Clients must send a connect token: pass the one your application issues                                      (--token JWT; holdfast clients send it in connect).",
                "token_expired" => "The token has expired: issue a fresh one (clients should refresh before exp).",
                "refused" => "The connect proxy (your backend) refused this session: send what it expects                               (--header 'Cookie: session=…' for a cookie session), or check its logs.",
                _ => "Check the token: signed with the server's key (jwt_secret / jwt_public_key), not                       expired, naming the user (sub).",
            },
        ),
        "backend_unavailable" => verdict(
            Cause::BackendUnavailable,
            format!("{said} The application's backend that decides sessions (the connect proxy) failed, so no session can open."),
            "Start or fix the connect proxy (connect_proxy); the server's log names its error.",
        ),
        "rate_limited" => verdict(
            Cause::RateLimited,
            said,
            "Slow down, or raise the server's limits (commands_per_second, connect_rate_per_ip).",
        ),
        _ => verdict(Cause::ServerError, said, "Check the server's logs for this session."),
    }
}

fn answered_by(o: &Observations) -> Option<Proxy> {
    match &o.http {
        Some(Http::Response(r)) => proxy_in_front(r),
        _ => None,
    }
}

/// The platform defaults a cut after `secs` of silence matches, as a
/// clause: "it matches X; or Y", or that none does.
pub(crate) fn idle_limits_clause(secs: u64) -> String {
    let matches = idle_limits_matching(secs);
    if matches.is_empty() {
        String::from("no common platform default matches it exactly")
    } else {
        format!("it matches {}", matches.join("; or "))
    }
}

/// What to change when something cuts connections after `secs` of
/// silence (`None`: a silence of unknown length).
pub(crate) fn idle_fix(secs: Option<u64>) -> String {
    let every = match secs {
        Some(secs) => format!("every {secs} s"),
        None => String::from("the proxy's idle limit"),
    };
    format!(
        "Send traffic more often than {every} (holdfast pings every 25 s by default; --ping-interval), \
         and raise the proxy's idle timeout:\n{NGINX_IDLE}"
    )
}

const NGINX_IDLE: &str = "nginx:   proxy_read_timeout 3600s; proxy_send_timeout 3600s;
HAProxy: timeout tunnel 1h
Apache:  ProxyPass /ws http://backend/ws upgrade=websocket timeout=3600
AWS ALB: idle_timeout.timeout_seconds = 3600";
