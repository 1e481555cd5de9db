//! `Heartbeat`: when to ping and when a silent peer is dead. Pure timing
//! logic over `Instant`s the caller passes in, so it is tested without
//! clocks or sockets.
//!
//! The server pings every `interval`. Any inbound traffic proves the peer is
//! alive (a pong, a command, a WebSocket pong frame): what we detect is a
//! dead peer, not a rude one. A peer silent for `timeout` after a ping is dead.

use std::time::{Duration, Instant};

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
    /// Milliseconds, not `Duration`s (16 bytes each): every connection's
    /// task holds its heartbeat for its whole life.
    interval_ms: u32,
    timeout_ms: u32,
    last_heard: Instant,
    next_ping: Instant,
    ping_sent: Option<Instant>,
}

impl Heartbeat {
    /// Starts the clock at `now`.
    pub fn new(interval: Duration, timeout: Duration, now: Instant) -> Heartbeat {
        Heartbeat {
            interval_ms: millis(interval),
            timeout_ms: millis(timeout),
            last_heard: now,
            next_ping: now + interval,
            ping_sent: None,
        }
    }

    /// Pings every `interval` from now on (a client asked for a shorter one).
    pub fn set_interval(&mut self, interval: Duration, now: Instant) {
        self.interval_ms = millis(interval);
        self.next_ping = self.next_ping.min(now + interval);
    }

    /// The peer sent something.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = now;
        self.ping_sent = None;
    }

    /// When the peer last sent something.
    pub fn last_heard(&self) -> Instant {
        self.last_heard
    }

    /// When [`Heartbeat::poll`] next has something to say.
    pub fn deadline(&self) -> Instant {
        match self.ping_sent {
            Some(sent) => sent + self.timeout(),
            None => self.next_ping,
        }
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.into())
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.into())
    }

    /// Advances the state to `now`.
    pub fn poll(&mut self, now: Instant) -> Beat {
        if let Some(sent) = self.ping_sent {
            if self.last_heard < sent && now >= sent + self.timeout() {
                return Beat::Dead;
            }
            if now < sent + self.timeout() {
                return Beat::Wait;
            }
            self.ping_sent = None;
        }
        if now >= self.next_ping {
            self.ping_sent = Some(now);
            self.next_ping = now + self.interval();
            return Beat::Ping;
        }
        Beat::Wait
    }
}

/// A duration in whole milliseconds, at most `u32::MAX` (49 days).
fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn pings_on_interval_while_the_peer_answers() {
        let t = Instant::now();
        let mut h = Heartbeat::new(10 * S, 3 * S, t);
        assert_eq!(h.poll(t + 5 * S), Beat::Wait);
        assert_eq!(h.deadline(), t + 10 * S);
        assert_eq!(h.poll(t + 10 * S), Beat::Ping);
        assert_eq!(h.deadline(), t + 13 * S);
        h.heard(t + 11 * S);
        assert_eq!(h.deadline(), t + 20 * S);
        assert_eq!(h.poll(t + 13 * S), Beat::Wait);
        assert_eq!(h.poll(t + 20 * S), Beat::Ping);
    }

    #[test]
    fn a_silent_peer_is_dead_after_the_timeout() {
        let t = Instant::now();
        let mut h = Heartbeat::new(10 * S, 3 * S, t);
        assert_eq!(h.poll(t + 10 * S), Beat::Ping);
        assert_eq!(h.poll(t + 12 * S), Beat::Wait);
        assert_eq!(h.poll(t + 13 * S), Beat::Dead);
    }
}
