//! A node's diagnosis in the terminal, in the checklist's style
//! (`report.rs`): a header with the counts, then each finding with its
//! figures, when it was seen, example sessions, the summary and the fix.

use std::fmt::Write;

use holdfast_protocol::{Diagnosis, Finding};

use super::{needs_action, percent, seconds, utc};
use crate::report::{indent, paint, wrap};

/// The terminal form of `d`, fetched from `server`; `now_ms` (Unix
/// milliseconds) is what "3 min ago" counts from.
pub(crate) fn text(d: &Diagnosis, server: &str, now_ms: u64, colour: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "holdfast doctor --server {server}\n");
    let e = &d.ended;
    let header = format!(
        "{}, counting since {}: {} sessions ended ({} WebSocket, {} SSE, {} long-polling), {} dropped without a \
         close frame, {} client reports ({} unreadable).",
        d.node.as_deref().map_or_else(|| String::from("this node"), |n| format!("node {n}")),
        when(d.since_ms, now_ms),
        e.total(),
        e.websocket,
        e.sse,
        e.poll,
        d.dropped,
        d.reports,
        d.unreadable_reports,
    );
    let _ = writeln!(out, "{}", wrap(&header, 78));
    if d.findings.is_empty() {
        let _ = writeln!(
            out,
            "\n{} in how sessions ended: no idle cuts, mass drops or fallback reasons stand out.",
            paint(colour, "32;1", "No patterns found")
        );
        return out;
    }
    for f in &d.findings {
        finding(&mut out, f, now_ms, colour);
    }
    out
}

fn finding(out: &mut String, f: &Finding, now_ms: u64, colour: bool) {
    let style = if needs_action(f.cause) { "31;1" } else { "33;1" };
    let mut headline = format!("{} {}", f.count, if f.count == 1 { "session" } else { "sessions" });
    if let Some(peer) = &f.peer {
        let _ = write!(headline, " through {peer}");
    }
    if let Some(ms) = f.silence_ms {
        let _ = write!(headline, ", cut after {} s of silence", seconds(ms));
    }
    if let Some(share) = f.fallback_share {
        let _ = write!(headline, ", {} of sessions on a fallback", percent(share));
    }
    let _ = writeln!(out, "\n{}  {headline}", paint(colour, style, f.cause.id()));
    let _ = writeln!(out, "  first seen {}, last seen {}", when(f.first_seen_ms, now_ms), when(f.last_seen_ms, now_ms));
    if !f.examples.is_empty() {
        let _ = writeln!(out, "  examples: {} (look each up at /api/sessions/ID)", f.examples.join(", "));
    }
    let _ = writeln!(out, "\n{}", indent(&wrap(&f.summary, 76)));
    if !f.fix.trim().is_empty() {
        let _ = writeln!(out, "\n  {}\n{}", paint(colour, "1", "fix:"), indent(&indent(&wrap_prose(&f.fix, 74))));
    }
}

/// Wraps the long prose lines of a fix; config lines (indented, or short)
/// keep their layout.
fn wrap_prose(fix: &str, width: usize) -> String {
    let lines =
        fix.lines().map(|l| if l.len() <= width || l.starts_with(' ') { l.to_string() } else { wrap(l, width) });
    lines.collect::<Vec<_>>().join("\n")
}

/// A moment for people: "3 min ago (10:57:12 UTC)" within a day, the UTC
/// date and time before that (or when the server's clock is ahead).
fn when(ms: u64, now_ms: u64) -> String {
    if ms == 0 {
        return String::from("(not recorded)");
    }
    let full = utc(ms);
    let ago = now_ms.checked_sub(ms).map(|d| d / 1000);
    let ago = match ago {
        Some(s) if s < 60 => format!("{s} s ago"),
        Some(s) if s < 3600 => format!("{} min ago", s / 60),
        Some(s) if s < 86_400 => format!("{} h ago", s / 3600),
        _ => return full,
    };
    // "2024-05-01 10:57:12 UTC" → "10:57:12 UTC"
    format!("{ago} ({})", full.split_once(' ').map_or(full.as_str(), |(_, time)| time))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cause;
    use holdfast_protocol::TransportCounts;

    const NOW: u64 = 1_714_557_600_000; // 2024-05-01 10:00:00 UTC

    fn diagnosis(findings: Vec<Finding>) -> Diagnosis {
        Diagnosis {
            node: Some("eu-1".into()),
            since_ms: NOW - 2 * 3_600_000,
            opened: TransportCounts { websocket: 910, sse: 80, poll: 20 },
            ended: TransportCounts { websocket: 900, sse: 80, poll: 20 },
            dropped: 61,
            reports: 140,
            unreadable_reports: 3,
            findings,
        }
    }

    fn idle() -> Finding {
        let mut f = Finding {
            cause: Cause::IdleTimeout,
            seen_in: holdfast_protocol::Evidence::Sessions,
            count: 37,
            first_seen_ms: NOW - 90 * 60_000,
            last_seen_ms: NOW - 3 * 60_000,
            peer: Some("10.0.0.5".into()),
            silence_ms: Some(60_200),
            fallback_share: None,
            examples: vec!["s-41".into(), "s-97".into()],
            summary: String::new(),
            fix: String::new(),
        };
        let v = super::super::explain(&f);
        (f.summary, f.fix) = (v.summary, v.fix);
        f
    }

    #[test]
    fn the_header_gives_the_counts() {
        let out = text(&diagnosis(vec![]), "https://rt.example.com", NOW, false);
        assert!(out.starts_with("holdfast doctor --server https://rt.example.com\n\n"), "{out}");
        let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.contains(
                "node eu-1, counting since 2 h ago (08:00:00 UTC): 1000 sessions ended (900 WebSocket, 80 SSE, \
                 20 long-polling), 61 dropped without a close frame, 140 client reports (3 unreadable)."
            ),
            "{out}"
        );
        assert!(out.contains("No patterns found in how sessions ended"), "{out}");
        assert!(!out.contains('\x1b'), "no colour unless asked: {out}");
    }

    #[test]
    fn each_finding_shows_its_figures_examples_and_fix() {
        let share = Finding {
            cause: Cause::ProxyStripsUpgrade,
            seen_in: holdfast_protocol::Evidence::ClientReports,
            count: 1,
            fallback_share: Some(0.081),
            peer: None,
            silence_ms: None,
            first_seen_ms: NOW - 3 * 86_400_000,
            last_seen_ms: NOW + 5_000,
            examples: vec![],
            summary: "one said so".into(),
            fix: String::new(),
        };
        let out = text(&diagnosis(vec![idle(), share]), "http://127.0.0.1:8080", NOW, false);
        assert!(out.contains("\nidle_timeout  37 sessions through 10.0.0.5, cut after 60 s of silence\n"), "{out}");
        assert!(out.contains("first seen 1 h ago (08:30:00 UTC), last seen 3 min ago (09:57:00 UTC)"), "{out}");
        assert!(out.contains("examples: s-41, s-97 (look each up at /api/sessions/ID)"), "{out}");
        assert!(out.contains("  37 connections through 10.0.0.5 were cut after 60 s"), "{out}");
        assert!(out.contains("\n  fix:\n    Send traffic more often than every 60 s"), "{out}");
        assert!(out.lines().all(|l| l.len() <= 78 || l.contains("ProxyPass")), "{out}");
        // Old, or ahead of our clock: the date itself.
        assert!(out.contains("\nproxy_strips_upgrade  1 session, 8.1 % of sessions on a fallback\n"), "{out}");
        assert!(out.contains("first seen 2024-04-28 10:00:00 UTC, last seen 2024-05-01 10:00:05 UTC"), "{out}");
        assert_eq!(out.matches("examples:").count(), 1, "{out}");
        assert_eq!(out.matches("fix:").count(), 1, "no fix, no heading: {out}");
    }

    #[test]
    fn colour_marks_what_needs_action() {
        let calm = Finding { cause: Cause::AbnormalClosure, ..idle() };
        let out = text(&diagnosis(vec![idle(), calm]), "http://h", NOW, true);
        assert!(out.contains("\x1b[31;1midle_timeout\x1b[0m"), "{out}");
        assert!(out.contains("\x1b[33;1mabnormal_closure\x1b[0m"), "{out}");
        assert!(text(&diagnosis(vec![]), "http://h", NOW, true).contains("\x1b[32;1mNo patterns found"));
    }

    #[test]
    fn fixes_wrap_prose_and_keep_config_lines() {
        let fix = format!("{} {}\n    proxy_set_header Upgrade $http_upgrade;   # as it is", "word ".repeat(20), "end");
        let wrapped = wrap_prose(&fix, 40);
        assert!(wrapped.lines().take(3).all(|l| l.len() <= 40), "{wrapped}");
        assert!(wrapped.ends_with("\n    proxy_set_header Upgrade $http_upgrade;   # as it is"), "{wrapped}");
    }
}
