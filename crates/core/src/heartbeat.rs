//! `Heartbeat`: when to ping and when a silent peer is dead. Pure timing
//! logic over `Instant`s the caller passes in, so it is tested without
//! clocks or sockets.
//!
//! The server pings every `interval`. Any inbound traffic proves the peer is
//! alive (a pong, a command, a WebSocket pong frame): what we detect is a
//! dead peer, not a rude one. A peer silent for `timeout` after a ping is dead.
//!
//! Pings fall due on a grid every connection shares ([`ping_grid`]): the
//! pings of connections opened apart are sent in one wake-up of the
//! runtime, and their pongs read in a few, instead of one timer firing,
//! one write and one poll of the sockets for each. At 100,000 idle
//! connections that is most of what keeping them costs the server.

use std::time::{Duration, Instant};

use crate::clock::Stamp;

/// What the connection should do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Beat {
    /// Nothing is due.
    Wait,
    /// Send a ping now.
    Ping,
    /// The peer did not answer in time: close the connection.
    Dead,
}

/// Heartbeat state of one connection.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    /// Milliseconds, not `Duration`s or `Instant`s (16 bytes each): every
    /// connection's task holds its heartbeat for its whole life.
    interval_ms: u32,
    timeout_ms: u32,
    last_heard: Stamp,
    next_ping: Stamp,
    /// When the unanswered ping went out; 0 when none is.
    ping_sent: Stamp,
}

impl Heartbeat {
    /// Starts the clock at `now`.
    pub fn new(interval: Duration, timeout: Duration, now: Instant) -> Heartbeat {
        Heartbeat {
            interval_ms: millis(interval),
            timeout_ms: millis(timeout),
            last_heard: Stamp::floor(now),
            next_ping: next_due(now, interval),
            ping_sent: Stamp::NONE,
        }
    }

    /// Pings every `interval` from now on (a client asked for a shorter one).
    pub fn set_interval(&mut self, interval: Duration, now: Instant) {
        self.interval_ms = millis(interval);
        self.next_ping = self.next_ping.min(next_due(now, interval));
    }

    /// The peer sent something.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = Stamp::floor(now);
        self.ping_sent = Stamp::NONE;
    }

    /// When the peer last sent something (to the millisecond).
    pub fn last_heard(&self) -> Instant {
        self.last_heard.instant()
    }

    /// When [`Heartbeat::poll`] next has something to say.
    pub fn deadline(&self) -> Instant {
        self.deadline_stamp().instant()
    }

    fn deadline_stamp(&self) -> Stamp {
        match self.ping_sent {
            Stamp::NONE => self.next_ping,
            sent => sent.after(self.timeout_ms),
        }
    }

    /// Advances the state to `now`.
    pub fn poll(&mut self, now: Instant) -> Beat {
        let at = Stamp::floor(now);
        if self.ping_sent != Stamp::NONE {
            // Hearing anything clears `ping_sent`: still set, the peer has
            // said nothing since the ping.
            if at < self.deadline_stamp() {
                return Beat::Wait;
            }
            return Beat::Dead;
        }
        if at >= self.next_ping {
            // Never 0 (that means none): the origin is before any ping.
            self.ping_sent = Stamp(at.0.max(1));
            self.next_ping = next_due(now, self.interval());
            return Beat::Ping;
        }
        Beat::Wait
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.into())
    }
}

/// How far apart the instants pings may fall due on: a hundredth of the
/// interval in whole milliseconds, at most 250 ms (at 25 s, 1,000 pings a
/// burst for 100,000 connections, a few milliseconds of writing). A ping
/// is at most that much late; a short interval (tests, a client's
/// `ping_interval_ms`) keeps a fine grid.
pub fn ping_grid(interval: Duration) -> Duration {
    Duration::from_millis((millis(interval) / 100).clamp(1, 250).into())
}

/// When the ping after `now` is due: `interval` on, rounded up onto the
/// grid, which counts from the process's clock origin like every stamp.
fn next_due(now: Instant, interval: Duration) -> Stamp {
    let grid = ping_grid(interval).as_millis() as u64;
    Stamp(Stamp::ceil(now + interval).0.div_ceil(grid) * grid)
}

/// A duration in whole milliseconds, at most `u32::MAX` (49 days).
fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    /// The grid for the tests' 10 s interval.
    const GRID: Duration = Duration::from_millis(100);

    #[test]
    fn pings_on_interval_while_the_peer_answers() {
        let t = Instant::now();
        let mut h = Heartbeat::new(10 * S, 3 * S, t);
        assert_eq!(h.poll(t + 5 * S), Beat::Wait);
        let first = h.deadline();
        assert!(first >= t + 10 * S && first < t + 10 * S + GRID, "{:?}", first - t);
        assert_eq!(h.poll(first), Beat::Ping);
        assert_eq!(h.deadline(), first + 3 * S);
        h.heard(first + S);
        let second = h.deadline();
        assert!(second >= first + 10 * S && second < first + 10 * S + GRID, "{:?}", second - first);
        assert_eq!(h.poll(first + 3 * S), Beat::Wait);
        assert_eq!(h.poll(second), Beat::Ping);
    }

    #[test]
    fn a_silent_peer_is_dead_after_the_timeout() {
        let t = Instant::now();
        let mut h = Heartbeat::new(10 * S, 3 * S, t);
        let due = h.deadline();
        assert_eq!(h.poll(due), Beat::Ping);
        assert_eq!(h.poll(due + 2 * S), Beat::Wait);
        assert_eq!(h.poll(due + 3 * S), Beat::Dead);
    }

    #[test]
    fn connections_opened_apart_are_pinged_together() {
        let t = Instant::now();
        let grid = ping_grid(10 * S);
        let opened = [t, t + grid / 3, t + grid / 2, t + grid - Duration::from_nanos(1)];
        let due: Vec<Instant> = opened.iter().map(|&at| Heartbeat::new(10 * S, 3 * S, at).deadline()).collect();
        // Four instants within one grid step fall due on at most two
        // grid points (the step may straddle one), each at most a step late.
        let mut points = due.clone();
        points.dedup();
        assert!(points.len() <= 2, "{due:?}");
        for (at, d) in opened.iter().zip(&due) {
            assert!(*d >= *at + 10 * S && *d < *at + 10 * S + grid);
        }
        assert_eq!(points[points.len() - 1] - points[0], if points.len() == 2 { grid } else { Duration::ZERO });
    }

    #[test]
    fn the_grid_is_fine_for_short_intervals_and_capped_for_long_ones() {
        assert_eq!(ping_grid(Duration::from_millis(200)), Duration::from_millis(2));
        assert_eq!(ping_grid(25 * S), Duration::from_millis(250));
        assert_eq!(ping_grid(600 * S), Duration::from_millis(250));
        assert_eq!(ping_grid(Duration::from_millis(10)), Duration::from_millis(1));
    }
}
