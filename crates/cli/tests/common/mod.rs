//! Shared by the CLI integration tests: a `holdfast serve` process on
//! loopback, stopped (SIGTERM, by PID) when dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running server and its port.
pub struct Served(pub Child, pub u16);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

/// Starts `holdfast serve` on `127.0.0.1:port` (0: any) with API key `k` and
/// a short drain window, plus `extra` flags; waits for its address line.
pub fn serve(port: u16, extra: &[&str]) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--api-key", "k", "--drain-window", "500ms"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first = BufReader::new(child.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    let port = first.rsplit(':').next().unwrap().parse().unwrap();
    Served(child, port)
}
