//! The report: a checklist with timings, one verdict, the fix; or one JSON
//! object for scripts.

use serde::Serialize;
use std::fmt::Write;
use std::io::IsTerminal;

use crate::observe::{End, Observations};
use crate::rules::Verdict;

/// How a stage went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, with a caveat.
    Warn,
    /// Broke here.
    Failed,
    /// Not run.
    Skipped,
}

/// One line of the checklist.
#[derive(Clone, Debug, Serialize)]
pub struct Stage {
    /// Stage name.
    pub name: &'static str,
    /// Outcome.
    pub status: Status,
    /// Time spent.
    pub ms: f64,
    /// What was seen.
    pub detail: String,
}

/// The whole diagnosis.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Whether a browser could use the endpoint.
    pub healthy: bool,
    /// The conclusion.
    pub verdict: Verdict,
    /// The checklist.
    pub stages: Vec<Stage>,
    /// The close code seen, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close: Option<CloseInfo>,
    /// Raw request and response head (only with --verbose).
    #[serde(skip)]
    pub raw: Option<(String, String)>,
}

/// A close code and its meaning.
#[derive(Clone, Debug, Serialize)]
pub struct CloseInfo {
    /// The code.
    pub code: u16,
    /// What it means.
    pub meaning: String,
}

impl Report {
    /// Builds the report from the probe and the verdict.
    pub fn new(stages: Vec<Stage>, o: &Observations, verdict: Verdict, raw: Option<(String, String)>) -> Report {
        let code = match &o.end {
            Some(End::Closed { code, .. }) => Some(*code),
            Some(End::Dropped { .. }) => Some(1006),
            None => o.close_reply,
        };
        let close = code.map(|code| CloseInfo { code, meaning: crate::probe::meaning(code) });
        Report { healthy: verdict.cause == crate::Cause::Healthy, verdict, stages, close, raw }
    }

    /// The JSON form.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("reports serialize")
    }

    /// The terminal form; `colour` adds ANSI colours.
    pub fn text(&self, url: &str, colour: bool) -> String {
        let paint = |code: &str, s: &str| paint(colour, code, s);
        let mut out = String::new();
        let _ = writeln!(out, "holdfast doctor {url}\n");
        for s in &self.stages {
            let mark = match s.status {
                Status::Ok => paint("32", "ok     "),
                Status::Warn => paint("33", "warn   "),
                Status::Failed => paint("31;1", "FAILED "),
                Status::Skipped => paint("2", "skipped"),
            };
            let ms = if s.status == Status::Skipped { String::new() } else { format!("{:>7.1} ms", s.ms) };
            let _ = writeln!(out, "  {mark} {:<10} {ms:>10}  {}", s.name.replace('_', " "), s.detail);
        }
        if let Some((request, response)) = &self.raw {
            let _ = writeln!(out, "\nrequest:\n{}", indent(request.trim_end()));
            let _ = writeln!(out, "response:\n{}", indent(response.trim_end()));
        }
        let headline = if self.healthy {
            paint("32;1", &format!("verdict: {}", self.verdict.cause.id()))
        } else {
            paint("31;1", &format!("verdict: {}", self.verdict.cause.id()))
        };
        let _ = writeln!(out, "\n{headline}\n{}", wrap(&self.verdict.summary, 78));
        if !self.healthy {
            let _ = writeln!(out, "\n{}\n{}", paint("1", "fix:"), indent(&self.verdict.fix));
        }
        out
    }
}

/// `s` in the ANSI colour `code` when `colour`, else as it is.
pub(crate) fn paint(colour: bool, code: &str, s: &str) -> String {
    if colour {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

/// Whether to colour what goes to stdout: a terminal, and no `NO_COLOR`.
pub(crate) fn colour_stdout() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

pub(crate) fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
}

pub(crate) fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out
}
