//! CPU and memory of processes, read from /proc: the server's (by PID)
//! and the load generator's own (`self`), so every report names both.

use std::time::Instant;

/// CPU ticks (user + system) of a process, from /proc (100 per second).
pub fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// CPU use of some processes over a window, in % of one core.
pub struct CpuWindow {
    pids: Vec<String>,
    ticks: u64,
    started: Instant,
}

impl CpuWindow {
    pub fn start(pids: Vec<String>) -> CpuWindow {
        let ticks = pids.iter().filter_map(|p| cpu_ticks(p)).sum();
        CpuWindow { pids, ticks, started: Instant::now() }
    }

    /// CPU-seconds used since the start.
    pub fn cpu_secs(&self) -> f64 {
        let now: u64 = self.pids.iter().filter_map(|p| cpu_ticks(p)).sum();
        now.saturating_sub(self.ticks) as f64 / 100.0
    }

    pub fn percent(&self) -> f64 {
        self.cpu_secs() / self.started.elapsed().as_secs_f64().max(1e-3) * 100.0
    }
}
