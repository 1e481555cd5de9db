//! `Backoff`: exponential with full jitter, as in the browser module.
//! Pure: the random draw is passed in, so bounds and spread are tested.

use std::time::Duration;

/// Reconnect delays: the n-th is uniform in `[0, min(max, min * factor^n))`.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    factor: f64,
    attempt: i32,
}

impl Default for Backoff {
    /// 0.5 s doubling up to 20 s.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(500), Duration::from_secs(20), 2.0)
    }
}

impl Backoff {
    /// A backoff between `min` and `max`, growing by `factor`.
    pub fn new(min: Duration, max: Duration, factor: f64) -> Backoff {
        Backoff { min, max, factor, attempt: 0 }
    }

    /// The next delay for a uniform draw `u` in `[0, 1)`.
    pub fn next_with(&mut self, u: f64) -> Duration {
        let ceiling = (self.min.as_secs_f64() * self.factor.powi(self.attempt)).min(self.max.as_secs_f64());
        self.attempt = self.attempt.saturating_add(1);
        Duration::from_secs_f64(ceiling * u.clamp(0.0, 1.0))
    }

    /// The next delay, drawn at random.
    pub fn next_delay(&mut self) -> Duration {
        self.next_with(rand::random::<f64>())
    }

    /// Back to the first step (after a connection that stayed healthy).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_resets() {
        let mut b = Backoff::default();
        let tops: Vec<u128> = (0..8).map(|_| b.next_with(1.0).as_millis()).collect();
        assert_eq!(tops, [500, 1000, 2000, 4000, 8000, 16000, 20000, 20000]);
        assert_eq!(b.next_with(0.0), Duration::ZERO);
        b.reset();
        assert_eq!(b.next_with(0.5).as_millis(), 250);
        let mut spread = Backoff::new(Duration::from_secs(1), Duration::from_secs(1), 2.0);
        let draws: Vec<Duration> = (0..500).map(|_| spread.next_delay()).collect();
        assert!(
            draws.iter().any(|d| *d < Duration::from_millis(100))
                && draws.iter().any(|d| *d > Duration::from_millis(900))
        );
    }
}
