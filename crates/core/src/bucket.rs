//! `TokenBucket`: how many commands a client may send. Pure, over
//! `Instant`s passed in.
//!
//! A client may burst up to `burst` commands, then `rate` per second. A
//! command over the limit is refused (the client gets `rate_limited`); a
//! client that keeps going — more than `burst` refusals in a row — is a
//! flood and gets disconnected, so it cannot keep a core busy refusing it.

use std::time::Instant;

/// What to do with one command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Run it.
    Yes,
    /// Refuse it with `rate_limited`.
    Refuse,
    /// Refuse it and disconnect: the client floods.
    Disconnect,
}

/// A token bucket with a flood detector.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    /// As configured, not as `f64`s: every connection's task holds its
    /// bucket for its whole life.
    rate: u32,
    burst: u32,
    tokens: f64,
    last: Instant,
    refused_in_a_row: u32,
}

impl TokenBucket {
    /// `rate` commands per second after a burst of `burst`. A rate of 0
    /// means unlimited.
    pub fn new(rate: u32, burst: u32, now: Instant) -> TokenBucket {
        TokenBucket { rate, burst: burst.max(1), tokens: burst.max(1).into(), last: now, refused_in_a_row: 0 }
    }

    /// When a token was last asked for.
    pub fn last_used(&self) -> Instant {
        self.last
    }

    /// Whether a command now would get a token (without taking it).
    pub fn has_token(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.rate == 0 || self.tokens >= 1.0
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * f64::from(self.rate)).min(self.burst.into());
    }

    /// Takes a token for one command.
    pub fn admit(&mut self, now: Instant) -> Admit {
        if self.rate == 0 {
            return Admit::Yes;
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused_in_a_row = 0;
            return Admit::Yes;
        }
        self.refused_in_a_row += 1;
        if self.refused_in_a_row > self.burst {
            Admit::Disconnect
        } else {
            Admit::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refuses_then_disconnects_a_flood() {
        let t = Instant::now();
        let mut b = TokenBucket::new(10, 3, t);
        assert_eq!([b.admit(t), b.admit(t), b.admit(t)], [Admit::Yes; 3]);
        assert_eq!([b.admit(t), b.admit(t), b.admit(t)], [Admit::Refuse; 3]);
        assert_eq!(b.admit(t), Admit::Disconnect);
    }

    #[test]
    fn refills_at_the_rate_and_forgives_a_pause() {
        let t = Instant::now();
        let mut b = TokenBucket::new(10, 2, t);
        b.admit(t);
        b.admit(t);
        assert_eq!(b.admit(t), Admit::Refuse);
        assert_eq!(b.admit(t + Duration::from_millis(100)), Admit::Yes, "one token per 100 ms");
        assert_eq!(b.admit(t + Duration::from_millis(110)), Admit::Refuse);
        assert_eq!(b.admit(t + Duration::from_secs(5)), Admit::Yes, "refills up to the burst");
        assert_eq!(b.admit(t + Duration::from_secs(5)), Admit::Yes);
        assert_eq!(b.admit(t + Duration::from_secs(5)), Admit::Refuse);
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let t = Instant::now();
        let mut b = TokenBucket::new(0, 0, t);
        assert!((0..10_000).all(|_| b.admit(t) == Admit::Yes));
    }
}
