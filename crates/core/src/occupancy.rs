//! Occupancy: which users are online and which channels have subscribers,
//! as transitions the application's backend hears once each
//! (`user_online`, `user_offline`, `channel_occupied`, `channel_vacated`).
//!
//! A user is a group whose members are their sessions; a channel is a
//! group whose members are its subscribing sessions. The first member to
//! join an empty group makes it occupied at once. The last to leave starts
//! a grace delay: the group is vacated only if it is still empty when the
//! delay ends, so a page reload, a network blip or a deploy's drain is not
//! "offline". The decision is the tracker's: the in-process
//! [`LocalOccupancy`] here for one node, and the Redis broker's for a fleet,
//! where every transition is decided by one script so that two nodes never
//! both report it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use holdfast_protocol::{ChannelName, LifecycleEvent};

use crate::broker::BrokerError;

/// What is occupied: a user (by their sessions) or a channel (by its
/// subscribers).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Group {
    User(String),
    Channel(ChannelName),
}

/// What [`Occupancy::settle`] found.
#[derive(Clone, Debug, PartialEq)]
pub enum Settled {
    /// The group stayed empty through the grace delay.
    Vacated(Group),
    /// A session whose node stopped answering: its `connect` event, as the
    /// node recorded it. Reported once, by whichever node found it.
    Lost(LifecycleEvent),
}

/// Decides occupancy transitions; see the module docs. Members are session
/// ids. Calls must not be made for a member twice in a row (join, join):
/// sessions join a group once and leave it once.
#[async_trait]
pub trait Occupancy: Send + Sync {
    /// `member` joined `group`. `Ok(true)` when this made the group
    /// occupied: it was empty and not within a grace delay.
    async fn join(&self, group: &Group, member: &str) -> Result<bool, BrokerError>;

    /// `member` left `group`. When it was the last, the group is vacated
    /// after the grace delay unless someone joins meanwhile.
    async fn leave(&self, group: &Group, member: &str) -> Result<(), BrokerError>;

    /// Keeps a session's `connect` event where other nodes find it if this
    /// node dies, so its end is reported anyway. Nothing for one node.
    async fn hold(&self, _connect: &LifecycleEvent) -> Result<(), BrokerError> {
        Ok(())
    }

    /// The session ended here: nothing to report for it if the node dies.
    async fn release(&self, _session: &str) -> Result<(), BrokerError> {
        Ok(())
    }

    /// Groups whose grace ran out empty and sessions of lost nodes, each
    /// returned to exactly one caller. Call about once a second.
    async fn settle(&self) -> Result<Vec<Settled>, BrokerError>;
}

/// Occupancy on one node: counts in memory.
pub struct LocalOccupancy {
    grace: Duration,
    groups: Mutex<Groups>,
}

#[derive(Default)]
struct Groups {
    /// Members of each group that has any.
    members: HashMap<Group, usize>,
    /// Occupied groups: with members, or empty within their grace delay.
    occupied: HashMap<Group, Option<Instant>>,
}

impl LocalOccupancy {
    /// Vacates groups `grace` after their last member left.
    pub fn new(grace: Duration) -> LocalOccupancy {
        LocalOccupancy { grace, groups: Mutex::new(Groups::default()) }
    }

    fn groups(&self) -> std::sync::MutexGuard<'_, Groups> {
        self.groups.lock().expect("occupancy lock poisoned")
    }

    /// [`Occupancy::settle`] at `now`.
    fn settle_at(&self, now: Instant) -> Vec<Settled> {
        let mut groups = self.groups();
        let due: Vec<Group> = groups
            .occupied
            .iter()
            .filter(|(_, empty_until)| empty_until.is_some_and(|t| t <= now))
            .map(|(g, _)| g.clone())
            .collect();
        for group in &due {
            groups.occupied.remove(group);
        }
        due.into_iter().map(Settled::Vacated).collect()
    }

    fn leave_at(&self, group: &Group, now: Instant) {
        let mut groups = self.groups();
        let Some(count) = groups.members.get_mut(group) else { return };
        *count -= 1;
        if *count == 0 {
            groups.members.remove(group);
            if let Some(empty_until) = groups.occupied.get_mut(group) {
                *empty_until = Some(now + self.grace);
            }
        }
    }
}

#[async_trait]
impl Occupancy for LocalOccupancy {
    async fn join(&self, group: &Group, _member: &str) -> Result<bool, BrokerError> {
        let mut groups = self.groups();
        *groups.members.entry(group.clone()).or_default() += 1;
        // Back within the grace: still occupied, nothing to tell.
        Ok(groups.occupied.insert(group.clone(), None).is_none())
    }

    async fn leave(&self, group: &Group, _member: &str) -> Result<(), BrokerError> {
        self.leave_at(group, Instant::now());
        Ok(())
    }

    async fn settle(&self) -> Result<Vec<Settled>, BrokerError> {
        Ok(self.settle_at(Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Group {
        Group::User(name.into())
    }

    #[tokio::test]
    async fn a_group_is_occupied_once_and_vacated_after_the_grace() {
        let occ = LocalOccupancy::new(Duration::from_secs(5));
        let t0 = Instant::now();
        assert!(occ.join(&user("ann"), "s1").await.unwrap());
        assert!(!occ.join(&user("ann"), "s2").await.unwrap(), "a second tab is not a new arrival");
        occ.leave_at(&user("ann"), t0);
        assert!(occ.settle_at(t0 + Duration::from_secs(10)).is_empty(), "one tab is still open");
        occ.leave_at(&user("ann"), t0);
        assert!(occ.settle_at(t0 + Duration::from_secs(4)).is_empty(), "within the grace");
        assert_eq!(occ.settle_at(t0 + Duration::from_secs(5)), vec![Settled::Vacated(user("ann"))]);
        assert!(occ.settle_at(t0 + Duration::from_secs(9)).is_empty(), "vacated once");
        assert!(occ.join(&user("ann"), "s3").await.unwrap(), "back after being vacated");
    }

    #[tokio::test]
    async fn coming_back_within_the_grace_is_no_transition() {
        let occ = LocalOccupancy::new(Duration::from_secs(5));
        let t0 = Instant::now();
        let lobby = Group::Channel(ChannelName::new("lobby").unwrap());
        assert!(occ.join(&lobby, "s1").await.unwrap());
        occ.leave_at(&lobby, t0);
        assert!(!occ.join(&lobby, "s2").await.unwrap(), "a reload is not a new occupation");
        assert!(occ.settle_at(t0 + Duration::from_secs(60)).is_empty());
        // The grace counts from the last leave.
        occ.leave_at(&lobby, t0 + Duration::from_secs(3));
        assert!(occ.settle_at(t0 + Duration::from_secs(7)).is_empty());
        assert_eq!(occ.settle_at(t0 + Duration::from_secs(8)), vec![Settled::Vacated(lobby)]);
    }

    #[tokio::test]
    async fn leaving_a_group_never_joined_changes_nothing() {
        let occ = LocalOccupancy::new(Duration::ZERO);
        occ.leave_at(&user("bob"), Instant::now());
        assert!(occ.settle_at(Instant::now() + Duration::from_secs(1)).is_empty());
        assert!(occ.groups().members.is_empty() && occ.groups().occupied.is_empty());
    }
}
