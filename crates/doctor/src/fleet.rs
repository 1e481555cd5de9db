//! The doctor turned on a whole fleet (issue 27): a server records how its
//! sessions end and finds patterns (`/api/diagnosis`); [`explain`] gives
//! each pattern its words, from the same phrases and fixes as the probe's
//! rules, so `holdfast serve` (`/status`, the JSON API) and
//! `holdfast doctor --server` say one thing.
//!
//! `explain` is pure: every figure it names comes from the [`Finding`],
//! none from the clock, so a server can fill a finding's text once and
//! store it.
//!
//! `holdfast doctor --server URL` fetches a node's diagnosis
//! (`fleet/fetch.rs`), fills any text the server left empty (an older or
//! foreign server) and prints it (`fleet/text.rs`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use holdfast_protocol::{Diagnosis, Evidence, Finding};

use crate::rules::{
    idle_fix, idle_limits_clause, Verdict, HANDSHAKE_TIMEOUT_FIX, LET_UPGRADES_THROUGH, MIXED_CONTENT_FIX,
    NGINX_UPGRADE, UPGRADE_FILTERS,
};
use crate::{Cause, DoctorArgs};

mod fetch;
mod text;

/// The words for one finding: the cause, a paragraph with the finding's
/// figures, and the fix.
pub fn explain(finding: &Finding) -> Verdict {
    let f = finding;
    let (summary, fix) = match f.cause {
        _ if f.seen_in == Evidence::RefusedHandshakes => refused_upgrades(f),
        Cause::IdleTimeout => idle_timeout(f),
        Cause::MassDrop => mass_drop(f),
        Cause::AbnormalClosure => abnormal_closure(f),
        Cause::ProxyStripsUpgrade | Cause::WebsocketBlocked | Cause::HandshakeTimeout | Cause::MixedContent => {
            fallback(f)
        }
        _ if f.fallback_share.is_some() => fallback(f),
        _ => other(f),
    };
    Verdict { cause: f.cause, summary, fix }
}

/// Fills the summary and fix of every finding that came without them.
pub fn fill(diagnosis: &mut Diagnosis) {
    for f in &mut diagnosis.findings {
        if f.summary.trim().is_empty() || f.fix.trim().is_empty() {
            let v = explain(f);
            if f.summary.trim().is_empty() {
                f.summary = v.summary;
            }
            if f.fix.trim().is_empty() {
                f.fix = v.fix;
            }
        }
    }
}

/// Whether a finding names something to change. Sessions dropped without
/// a pattern (`abnormal_closure`) are the weather of every fleet with
/// mobile users, not a fault.
pub fn needs_action(cause: Cause) -> bool {
    !matches!(cause, Cause::AbnormalClosure | Cause::Healthy)
}

/// `holdfast doctor --server URL`: prints the node's diagnosis and returns
/// the exit status: 0 nothing to act on (no findings, or only
/// `abnormal_closure`), 1 at least one finding that names a fix, 2 no
/// diagnosis (a bad URL, unreachable, the key refused, not a diagnosis).
pub(crate) async fn command(args: &DoctorArgs, server: &str) -> u8 {
    let mut diagnosis = match fetch::fetch(args, server, args.api_key.as_deref()).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("holdfast doctor: {e}");
            return 2;
        }
    };
    fill(&mut diagnosis);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&diagnosis).expect("diagnoses serialize"));
    } else {
        print!("{}", text::text(&diagnosis, server, now_ms(), crate::report::colour_stdout()));
    }
    exit_status(&diagnosis)
}

fn exit_status(d: &Diagnosis) -> u8 {
    u8::from(d.findings.iter().any(|f| needs_action(f.cause)))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// What to do when the figures alone do not say: ask from the users' side.
const ASK_A_USER: &str = "Have one of these users open this server's /doctor page (it shows what their browser and \
     the server each saw), or run `holdfast doctor` against this server from their network; the examples' \
     records (/api/sessions/ID) carry what their clients reported.";

/// Clients come back by themselves and lose nothing.
const CLIENTS_RECOVER: &str = "Clients should reconnect with jittered backoff and resume each channel from the last \
     position they saw, so nothing is lost; holdfast clients do both.";

fn idle_timeout(f: &Finding) -> (String, String) {
    let n = count(f.count, "connection", "connections");
    let via = through(f);
    let were = if f.count == 1 { "was" } else { "were" };
    match f.silence_ms.map(seconds) {
        Some(secs) => (
            format!(
                "{n}{via} {were} cut after {secs} s without traffic either way, with no close frame: something \
                 between the clients and this server cuts idle connections, and {}. Browsers see 1006, and \
                 clients reconnect each time.",
                idle_limits_clause(secs)
            ),
            idle_fix(Some(secs)),
        ),
        None => (
            format!(
                "{n}{via} {were} cut after the same silence without traffic either way, with no close frame: \
                 something between the clients and this server cuts idle connections. Browsers see 1006."
            ),
            idle_fix(None),
        ),
    }
}

fn mass_drop(f: &Finding) -> (String, String) {
    let n = count(f.count, "connection", "connections");
    let via = through(f);
    let when = if f.last_seen_ms.saturating_sub(f.first_seen_ms) > 1000 {
        format!("in bursts (each within one second) between {} and {}", utc(f.first_seen_ms), utc(f.last_seen_ms))
    } else {
        format!("within one second at {}", utc(f.first_seen_ms))
    };
    (
        format!(
            "{n}{via} ended {when}, none with a close frame: the proxy or load balancer in front reloaded or \
             restarted (or was replaced), and its clients all reconnected at once."
        ),
        format!(
            "nginx keeps a reload's old workers serving open WebSockets until worker_shutdown_timeout, then \
             cuts them all: set it as long as you can afford (worker_shutdown_timeout 10m;) and reload no more \
             often than needed.\ningress-nginx reloads nginx on Ingress and ConfigMap changes and cuts after \
             its worker-shutdown-timeout (240 s by default): batch changes, raise it.\nA restart or a deploy \
             of the proxy drops everything at once: take it out of rotation and let connections drain \
             first.\n{CLIENTS_RECOVER}"
        ),
    )
}

fn abnormal_closure(f: &Finding) -> (String, String) {
    let n = count(f.count, "connection", "connections");
    (
        format!(
            "{n}{} ended without a close frame, with no pattern in when or after how long: mobile networks \
             that change or sleep, laptops closed, clients that vanish. Browsers see 1006.",
            through(f)
        ),
        format!(
            "Nothing to fix unless it grows. {CLIENTS_RECOVER} If it grows, look for what the examples \
             (/api/sessions/ID) share: one peer, one lifetime, one time of day."
        ),
    )
}

/// Upgrade requests that reached the server without their headers: the
/// proxy in front of it does not forward them (the server's own evidence;
/// browsers only see their WebSocket fail).
fn refused_upgrades(f: &Finding) -> (String, String) {
    let requests = count(f.count, "WebSocket upgrade request", "WebSocket upgrade requests");
    let share = match f.fallback_share {
        Some(share) => format!("; {} of sessions are on SSE or long-polling", percent(share)),
        None => String::new(),
    };
    match f.cause {
        Cause::ProxyHttp10Upstream => (
            format!(
                "{requests} reached this server over HTTP/1.0: the proxy in front talks HTTP/1.0 upstream, which \
                 cannot upgrade (`{}`){share}.",
                f.cause.id()
            ),
            format!("Make the proxy talk HTTP/1.1 to this server:\n{NGINX_UPGRADE}"),
        ),
        _ => (
            format!(
                "{requests} reached this server without their Upgrade or Connection headers: the proxy in front \
                 of it does not forward WebSocket upgrades (`{}`), so browsers see their WebSocket fail and \
                 fall back{share}.",
                f.cause.id()
            ),
            format!("Make the proxy forward the upgrade:\n{NGINX_UPGRADE}"),
        ),
    }
}

/// A reason clients gave for using SSE or long-polling.
fn fallback(f: &Finding) -> (String, String) {
    let share = match f.fallback_share {
        Some(share) => format!("{} of sessions are on SSE or long-polling", percent(share)),
        None => String::from("Some sessions are on SSE or long-polling"),
    };
    let said = count(f.count, "client said", "clients said");
    let id = f.cause.id();
    let (reason, fix) = match f.cause {
        Cause::ProxyStripsUpgrade => {
            let whose = if f.fallback_share.is_some_and(|s| s >= 0.9) {
                format!(
                    "Nearly every session falls back, so the likely one is the proxy in front of this server{}.",
                    through(f)
                )
            } else {
                String::from(
                    "Most sessions keep their WebSocket, so it is a proxy on those users' side (a corporate \
                     proxy), and the fallback is doing its job.",
                )
            };
            (
                format!("a proxy did not forward their WebSocket upgrade (`{id}`). {whose}"),
                format!(
                    "If it is the proxy in front of this server, make it forward the upgrade:\n{NGINX_UPGRADE}\n\
                     If it is on the users' side: {LET_UPGRADES_THROUGH}."
                ),
            )
        }
        Cause::WebsocketBlocked => (
            format!(
                "their WebSocket never got through while plain HTTP did (`{id}`): something on their side \
                 ({UPGRADE_FILTERS}) stops upgrades."
            ),
            format!(
                "{LET_UPGRADES_THROUGH}; meanwhile SSE and long-polling keep these users connected (holdfast \
                 clients switch, and try WebSocket again, by themselves). {ASK_A_USER}"
            ),
        ),
        Cause::HandshakeTimeout => (
            format!(
                "their WebSocket handshake got no answer in time (`{id}`): something between them and this \
                 server holds upgrade requests (a proxy waiting on its upstream, a filtering network)."
            ),
            format!("{ASK_A_USER}\nIf it happens to everyone: {HANDSHAKE_TIMEOUT_FIX}"),
        ),
        Cause::MixedContent => (
            format!("their page is https: and the WebSocket URL ws:, which browsers refuse (`{id}`)."),
            MIXED_CONTENT_FIX.to_string(),
        ),
        Cause::Unknown => {
            (format!("their WebSocket failed in a way they could not name (`{id}`)."), ASK_A_USER.to_string())
        }
        _ => (
            format!("`{id}` (docs/DOCTOR.md, section `{id}`, explains it)."),
            format!("See docs/DOCTOR.md, section `{id}`. {ASK_A_USER}"),
        ),
    };
    (format!("{share}; {said} {reason}"), fix)
}

/// Any other cause: its id, the count, and where to look.
fn other(f: &Finding) -> (String, String) {
    let id = f.cause.id();
    (
        format!("{}{} ended as `{id}`.", count(f.count, "session", "sessions"), through(f)),
        format!(
            "See docs/DOCTOR.md, section `{id}`, for what it means; look up an example with /api/sessions/ID, \
             and run `holdfast doctor` against this server from where those users are."
        ),
    )
}

/// " through PEER", or nothing when the pattern is not one peer's.
fn through(f: &Finding) -> String {
    f.peer.as_deref().map(|p| format!(" through {p}")).unwrap_or_default()
}

fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Whole seconds, rounded.
fn seconds(ms: u64) -> u64 {
    ms.saturating_add(500) / 1000
}

/// A share as a percentage: one decimal below 10 %.
fn percent(share: f64) -> String {
    let p = (share * 100.0).clamp(0.0, 100.0);
    if p < 10.0 && p.fract() != 0.0 {
        format!("{p:.1} %")
    } else {
        format!("{p:.0} %")
    }
}

/// Unix milliseconds as UTC, to the second: `2024-05-01 10:00:00 UTC`.
pub(crate) fn utc(ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    let s = humantime::format_rfc3339_seconds(t).to_string();
    format!("{} UTC", s.trim_end_matches('Z').replace('T', " "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A finding with what every cause has; tests set the rest.
    fn finding(cause: Cause, count: u64) -> Finding {
        Finding {
            cause,
            seen_in: Evidence::Sessions,
            count,
            first_seen_ms: 1_714_557_600_000,
            last_seen_ms: 1_714_557_600_400,
            peer: None,
            silence_ms: None,
            fallback_share: None,
            examples: vec!["s1".into()],
            summary: String::new(),
            fix: String::new(),
        }
    }

    #[test]
    fn idle_timeout_names_the_figure_the_peer_and_the_platforms() {
        let f = Finding { peer: Some("10.0.0.5".into()), silence_ms: Some(60_400), ..finding(Cause::IdleTimeout, 37) };
        let v = explain(&f);
        assert_eq!(v.cause, Cause::IdleTimeout);
        assert!(v.summary.starts_with("37 connections through 10.0.0.5 were cut after 60 s"), "{}", v.summary);
        assert!(v.summary.contains("proxy_read_timeout"), "the platform table: {}", v.summary);
        assert!(v.fix.contains("more often than every 60 s"), "{}", v.fix);
        assert!(v.fix.contains("--ping-interval") && v.fix.contains("proxy_read_timeout 3600s"), "{}", v.fix);

        let odd = explain(&Finding { silence_ms: Some(13_000), ..finding(Cause::IdleTimeout, 1) });
        assert!(odd.summary.starts_with("1 connection was cut after 13 s"), "{}", odd.summary);
        assert!(odd.summary.contains("no common platform default"), "{}", odd.summary);

        let unknown = explain(&finding(Cause::IdleTimeout, 4));
        assert!(unknown.summary.contains("the same silence") && unknown.fix.contains("idle limit"));
    }

    #[test]
    fn mass_drop_names_count_peer_and_time() {
        let f = Finding { peer: Some("10.0.0.9".into()), ..finding(Cause::MassDrop, 200) };
        let v = explain(&f);
        assert!(v.summary.contains("200 connections through 10.0.0.9"), "{}", v.summary);
        assert!(v.summary.contains("within one second at 2024-05-01 10:00:00 UTC"), "{}", v.summary);
        assert!(v.fix.contains("worker_shutdown_timeout") && v.fix.contains("ingress-nginx"), "{}", v.fix);
        assert!(v.fix.contains("jitter") && v.fix.contains("holdfast clients do"), "{}", v.fix);

        let again = Finding { last_seen_ms: f.first_seen_ms + 3_600_000, ..f };
        let v = explain(&again);
        assert!(v.summary.contains("between 2024-05-01 10:00:00 UTC and 2024-05-01 11:00:00 UTC"), "{}", v.summary);
    }

    #[test]
    fn upgrades_the_server_saw_stripped_are_named_from_its_side() {
        let f = Finding {
            seen_in: Evidence::RefusedHandshakes,
            fallback_share: Some(1.0),
            ..finding(Cause::ProxyStripsUpgrade, 7)
        };
        let v = explain(&f);
        assert!(v.summary.starts_with("7 WebSocket upgrade requests reached this server without"), "{}", v.summary);
        assert!(v.summary.contains("100 % of sessions"), "{}", v.summary);
        assert!(!v.summary.contains("clients said"), "the server saw it, no client said it: {}", v.summary);
        assert!(v.fix.contains(NGINX_UPGRADE), "{}", v.fix);
        let v = explain(&Finding { seen_in: Evidence::RefusedHandshakes, ..finding(Cause::ProxyHttp10Upstream, 1) });
        assert!(v.summary.contains("HTTP/1.0") && v.fix.contains("HTTP/1.1"), "{v:?}");
    }

    #[test]
    fn fallback_reasons_give_the_share_and_the_count() {
        let at = |cause, share| explain(&Finding { fallback_share: share, ..finding(cause, 12) });

        let v = at(Cause::ProxyStripsUpgrade, Some(0.125));
        assert!(v.summary.starts_with("12 % of sessions are on SSE or long-polling; 12 clients said"), "{}", v.summary);
        assert!(v.summary.contains("on those users' side"), "{}", v.summary);
        assert!(v.fix.contains(NGINX_UPGRADE), "{}", v.fix);
        let all = at(Cause::ProxyStripsUpgrade, Some(0.97));
        assert!(all.summary.contains("97 %") && all.summary.contains("in front of this server"), "{}", all.summary);

        let v = at(Cause::WebsocketBlocked, Some(0.034));
        assert!(v.summary.starts_with("3.4 % of sessions"), "{}", v.summary);
        assert!(v.summary.contains("antivirus") && v.fix.contains("/doctor"), "{v:?}");

        let v = at(Cause::HandshakeTimeout, Some(0.05));
        assert!(v.summary.contains("5 % of sessions") && v.summary.contains("no answer in time"), "{}", v.summary);
        assert!(v.fix.contains(HANDSHAKE_TIMEOUT_FIX), "{}", v.fix);

        let v = at(Cause::MixedContent, Some(0.01));
        assert!(v.summary.contains("1 % of sessions") && v.summary.contains("https:"), "{}", v.summary);
        assert_eq!(v.fix, MIXED_CONTENT_FIX);

        let v = at(Cause::Unknown, Some(0.2));
        assert!(v.summary.contains("20 %") && v.summary.contains("`unknown`"), "{}", v.summary);
        assert!(v.fix.contains("/doctor"), "{}", v.fix);

        // A reason this version has no words for, and one without a share.
        let v = at(Cause::TlsUntrustedCertificate, Some(0.02));
        assert!(v.summary.contains("`tls_untrusted_certificate`") && v.summary.contains("2 %"), "{}", v.summary);
        let v = at(Cause::WebsocketBlocked, None);
        assert!(v.summary.starts_with("Some sessions are on SSE"), "{}", v.summary);
    }

    #[test]
    fn abnormal_closure_asks_for_nothing() {
        let v = explain(&Finding { peer: Some("10.0.0.5".into()), ..finding(Cause::AbnormalClosure, 1) });
        assert!(v.summary.starts_with("1 connection through 10.0.0.5 ended without a close frame"), "{}", v.summary);
        assert!(v.fix.starts_with("Nothing to fix unless it grows"), "{}", v.fix);
        assert!(!needs_action(Cause::AbnormalClosure) && needs_action(Cause::IdleTimeout));
    }

    #[test]
    fn any_other_cause_is_named_by_its_id() {
        let v = explain(&finding(Cause::ServerClosed, 3));
        assert_eq!(v.summary, "3 sessions ended as `server_closed`.");
        assert!(v.fix.contains("section `server_closed`"), "{}", v.fix);
        for cause in Cause::ALL {
            let v = explain(&finding(cause, 2));
            assert!(v.summary.contains('2') && !v.fix.is_empty(), "{cause:?}: {v:?}");
        }
    }

    #[test]
    fn fill_keeps_what_the_server_wrote() {
        let mut d = Diagnosis {
            findings: vec![
                Finding { summary: "the server's words".into(), fix: "its fix".into(), ..finding(Cause::MassDrop, 5) },
                Finding { summary: "only a summary".into(), ..finding(Cause::AbnormalClosure, 5) },
                finding(Cause::ServerClosed, 5),
            ],
            ..Diagnosis::default()
        };
        fill(&mut d);
        assert_eq!((d.findings[0].summary.as_str(), d.findings[0].fix.as_str()), ("the server's words", "its fix"));
        assert_eq!(d.findings[1].summary, "only a summary");
        assert!(d.findings[1].fix.starts_with("Nothing to fix"));
        assert!(d.findings[2].summary.contains("`server_closed`"));
        assert_eq!(exit_status(&d), 1);
        d.findings.retain(|f| f.cause == Cause::AbnormalClosure);
        assert_eq!(exit_status(&d), 0);
        assert_eq!(exit_status(&Diagnosis::default()), 0);
    }
}
