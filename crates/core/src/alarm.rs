//! `Alarms`: one timer that wakes many tasks, each at its own deadline.
//!
//! Every connection has a deadline (its next ping, the pong it waits for,
//! its token's expiry). A tokio `Sleep` per connection is 112 bytes kept
//! for the connection's whole life, more than anything else in an idle
//! connection but its task and its socket. Here a connection keeps a
//! [`Tick`] (8 bytes), and the alarms keep its waker (24 bytes with its
//! id) in a map from tick to wakers, read by one task ([`Alarms::fire`],
//! which the server runs beside the node) that sleeps until the first
//! tick. Pings fall due on a shared grid ([`crate::heartbeat::ping_grid`]),
//! so a tick holds the wakers of hundreds of connections and the map stays
//! small.
//!
//! Invariants:
//! - a task is never woken before its deadline: a deadline is rounded up
//!   to the next millisecond, and a tick is fired only once it has passed;
//! - an id has at most one waker in the map, at the tick its owner holds
//!   (a new deadline moves it; [`Alarms::cancel`] removes it), so a task
//!   that ended leaves no waker (which would keep its memory) behind.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{ready, Context, Poll, Waker};
use std::time::Instant;
use tokio::sync::Notify;

use crate::clock::Stamp;

/// Where a session's alarm is set: a deadline to the millisecond, or
/// [`Tick::NONE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tick(Stamp);

impl Tick {
    /// No alarm set.
    pub const NONE: Tick = Tick(Stamp(u64::MAX));
}

/// The wakers due at each tick; see the module docs.
pub struct Alarms {
    /// Wakers by tick, each with its owner's id.
    due: Mutex<BTreeMap<Stamp, Vec<(u64, Waker)>>>,
    /// Every tick up to this one (a `Stamp`) has been fired.
    fired_through: AtomicU64,
    /// The tick (a `Stamp`) the firing task sleeps until; `u64::MAX`: none.
    armed: AtomicU64,
    /// Tells the firing task that an earlier tick was set.
    earlier: Notify,
}

impl Default for Alarms {
    fn default() -> Alarms {
        Alarms {
            due: Mutex::default(),
            fired_through: AtomicU64::new(0),
            armed: AtomicU64::new(u64::MAX),
            earlier: Notify::new(),
        }
    }
}

impl Alarms {
    /// Whether `deadline` has passed; if not, the task is woken when it
    /// does. `set` is the tick the caller's alarm is at, kept by the caller
    /// and updated here: the alarm moves when the deadline does, and
    /// `deadline: None` cancels it.
    ///
    /// Cheap when nothing changed (an atomic load): a connection calls this
    /// every time its task wakes. Registers the task's waker once per
    /// deadline, so the task must keep one waker (tokio's tasks do).
    pub fn poll(&self, id: u64, set: &mut Tick, deadline: Option<Instant>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(deadline) = deadline else {
            self.cancel(id, set);
            return Poll::Pending;
        };
        let tick = Stamp::ceil(deadline);
        if tick.0 <= self.fired_through.load(Ordering::Acquire) {
            // Passed: the next deadline is the caller's to set. Within the
            // task's budget, as tokio's own timers: a caller that failed to
            // move its deadline on yields now and then instead of spinning.
            ready!(tokio::task::coop::poll_proceed(cx)).made_progress();
            return Poll::Ready(());
        }
        if Tick(tick) != *set {
            let mut due = self.lock();
            remove(&mut due, id, *set);
            due.entry(tick).or_default().push((id, cx.waker().clone()));
            *set = Tick(tick);
            // Under the lock, which the firing task holds to arm itself. A
            // tick it already fired is fired again at once: it is first.
            if tick.0 < self.armed.load(Ordering::Acquire) {
                self.earlier.notify_one();
            }
        }
        Poll::Pending
    }

    /// Removes the alarm at `set`, if any.
    pub fn cancel(&self, id: u64, set: &mut Tick) {
        if *set != Tick::NONE {
            remove(&mut self.lock(), id, *set);
            *set = Tick::NONE;
        }
    }

    /// Fires the alarms: sleeps until the first tick, wakes every task
    /// due, and so on for ever. One task per node runs this; without it no
    /// alarm goes off.
    pub async fn fire(&self) {
        let mut woken = Vec::new();
        loop {
            let earlier = self.earlier.notified();
            let first = {
                let due = self.lock();
                let first = due.keys().next().copied();
                self.armed.store(first.map_or(u64::MAX, |t| t.0), Ordering::Release);
                first
            };
            match first {
                Some(tick) => tokio::select! {
                    () = tokio::time::sleep_until(tick.instant().into()) => {}
                    () = earlier => continue,
                },
                None => {
                    earlier.await;
                    continue;
                }
            }
            {
                let mut due = self.lock();
                let now = Stamp::floor(Instant::now());
                let later = due.split_off(&Stamp(now.0 + 1));
                let passed = std::mem::replace(&mut *due, later);
                // Never backwards, even with a second firing task: a
                // session whose tick was fired must see it as passed.
                self.fired_through.fetch_max(now.0, Ordering::Release);
                woken.extend(passed.into_values().flatten().map(|(_, waker)| waker));
            }
            // Outside the lock: a woken task may set its next alarm at once.
            woken.drain(..).for_each(Waker::wake);
        }
    }

    /// How many alarms are set.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<Stamp, Vec<(u64, Waker)>>> {
        self.due.lock().expect("alarms poisoned")
    }
}

fn remove(due: &mut BTreeMap<Stamp, Vec<(u64, Waker)>>, id: u64, at: Tick) {
    if let Some(wakers) = due.get_mut(&at.0) {
        if let Some(i) = wakers.iter().position(|(owner, _)| *owner == id) {
            wakers.swap_remove(i);
        }
        if wakers.is_empty() {
            due.remove(&at.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::sync::Arc;
    use std::time::Duration;

    /// Alarms with their firing task running.
    fn started() -> Arc<Alarms> {
        let alarms = Arc::new(Alarms::default());
        let firing = alarms.clone();
        tokio::spawn(async move { firing.fire().await });
        alarms
    }

    /// Waits on one alarm as a connection does, moving it to `deadline`.
    async fn wait(alarms: &Alarms, id: u64, set: &mut Tick, deadline: Instant) {
        poll_fn(|cx| alarms.poll(id, set, Some(deadline), cx)).await
    }

    #[tokio::test]
    async fn wakes_at_the_deadline_never_before() {
        let alarms = started();
        let mut set = Tick::NONE;
        let start = Instant::now();
        let deadline = start + Duration::from_micros(25_300);
        wait(&alarms, 1, &mut set, deadline).await;
        assert!(Instant::now() >= deadline, "{:?}", Instant::now() - start);
        // Late by the firing task's turn at most (a loaded machine is slow).
        assert!(Instant::now() < deadline + Duration::from_millis(250), "{:?}", Instant::now() - start);
        assert!(alarms.len() == 0, "fired alarms leave the map");
    }

    #[tokio::test]
    async fn a_moved_deadline_leaves_one_waker() {
        let alarms = started();
        let mut set = Tick::NONE;
        let start = Instant::now();
        let mut cx = Context::from_waker(Waker::noop());
        for ms in [300, 200, 500] {
            let deadline = Some(start + Duration::from_millis(ms));
            assert_eq!(alarms.poll(7, &mut set, deadline, &mut cx), Poll::Pending);
        }
        assert_eq!(alarms.len(), 1);
        // Moved once more, with this task's waker (the one waker a task has).
        wait(&alarms, 7, &mut set, start + Duration::from_millis(600)).await;
        assert!(Instant::now() >= start + Duration::from_millis(600));
        assert!(alarms.len() == 0);
        // None cancels.
        assert_eq!(alarms.poll(7, &mut set, Some(start + Duration::from_secs(9)), &mut cx), Poll::Pending);
        assert_eq!(alarms.poll(7, &mut set, None, &mut cx), Poll::Pending);
        assert!(alarms.len() == 0 && set == Tick::NONE);
    }

    #[tokio::test]
    async fn many_deadlines_fire_in_order_each_once() {
        let alarms = started();
        let start = Instant::now();
        let fired = Arc::new(Mutex::new(Vec::new()));
        let tasks: Vec<_> = (0..50u64)
            .map(|id| {
                let (alarms, fired) = (alarms.clone(), fired.clone());
                // Deadlines spread over 0..=98 ms, pairs sharing a tick.
                let deadline = start + Duration::from_millis(id / 2 * 4);
                tokio::spawn(async move {
                    let mut set = Tick::NONE;
                    wait(&alarms, id, &mut set, deadline).await;
                    assert!(Instant::now() >= deadline);
                    fired.lock().unwrap().push(id);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let fired = fired.lock().unwrap();
        assert_eq!(fired.len(), 50);
        assert!(fired.windows(2).all(|w| w[0] / 2 <= w[1] / 2), "{fired:?}");
        assert!(alarms.len() == 0);
    }

    #[tokio::test]
    async fn a_deadline_already_past_is_ready_once_fired_through() {
        let alarms = started();
        let mut set = Tick::NONE;
        let start = Instant::now();
        wait(&alarms, 1, &mut set, start + Duration::from_millis(10)).await;
        // An earlier deadline than what was fired is ready at once.
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(alarms.poll(2, &mut { Tick::NONE }, Some(start), &mut cx), Poll::Ready(()));
    }
}
