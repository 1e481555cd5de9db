//! Channel namespaces: the part of a channel name before the first `:`
//! (`chat:room1` → `chat`) picks the rules that apply to it. Channels
//! without a `:` follow the default rules.

use holdfast_protocol::{ChannelName, DeltaFormat};
use std::collections::HashMap;

use crate::history::HistoryLimits;

/// What clients may do on a namespace's channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NamespaceRules {
    /// Clients may `publish` (the HTTP API always may).
    pub allow_publish: bool,
    /// `/api/presence` answers for these channels.
    pub presence: bool,
    /// `subscribe` needs a subscribe token: a JWT whose `channel` claim names
    /// the channel (and whose `sub` is the session's user, if it has one).
    pub private: bool,
    /// Sessions without a user may subscribe.
    pub allow_anonymous: bool,
    /// History bounds for these channels.
    pub history: HistoryLimits,
    /// `subscribe` and `publish` here go to the backend's subscribe and
    /// publish proxies, when those are configured (a namespace of public
    /// channels may skip the round trip).
    pub ask_backend: bool,
    /// Subscribers hear `join` and `leave` when other sessions subscribe
    /// to a channel here or leave it (off by default: on a busy channel
    /// every subscribe and unsubscribe becomes a push to every member).
    pub join_leave: bool,
    /// Every `subscribe` here gets the channel's newest publication in its
    /// reply, as if it asked with `latest` (state channels: scores, prices,
    /// documents).
    pub latest: bool,
    /// The delta format subscribers here may ask for (`None`: plain
    /// messages only; deltas cost the server a diff per publication).
    pub delta: Option<DeltaFormat>,
}

impl Default for NamespaceRules {
    fn default() -> Self {
        NamespaceRules {
            allow_publish: false,
            presence: true,
            private: false,
            allow_anonymous: true,
            history: HistoryLimits::default(),
            ask_backend: true,
            join_leave: false,
            latest: false,
            delta: None,
        }
    }
}

/// The rules of every namespace.
#[derive(Clone, Debug, Default)]
pub struct Namespaces {
    default: NamespaceRules,
    named: HashMap<String, NamespaceRules>,
}

impl Namespaces {
    /// `default` for channels outside the named namespaces.
    pub fn new(default: NamespaceRules, named: HashMap<String, NamespaceRules>) -> Namespaces {
        Namespaces { default, named }
    }

    /// The namespace of a channel: what comes before the first `:`, if anything.
    pub fn namespace_of(channel: &ChannelName) -> Option<&str> {
        Namespaces::namespace_of_name(channel.as_str())
    }

    /// [`Namespaces::namespace_of`] for a name already checked (a lifecycle
    /// event's `channel`).
    pub fn namespace_of_name(channel: &str) -> Option<&str> {
        channel.split_once(':').map(|(ns, _)| ns)
    }

    /// The rules for a channel.
    pub fn rules(&self, channel: &ChannelName) -> &NamespaceRules {
        Namespaces::namespace_of(channel).and_then(|ns| self.named.get(ns)).unwrap_or(&self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_rules_by_prefix() {
        let locked = NamespaceRules { allow_publish: false, private: true, ..NamespaceRules::default() };
        let ns = Namespaces::new(NamespaceRules::default(), HashMap::from([("admin".to_string(), locked)]));
        let ch = |n| ChannelName::new(n).unwrap();
        assert_eq!(ns.rules(&ch("admin:audit")), &locked);
        assert_eq!(ns.rules(&ch("admin")), &NamespaceRules::default(), "no colon: the default namespace");
        assert_eq!(ns.rules(&ch("chat:admin:x")), &NamespaceRules::default());
        assert_eq!(Namespaces::namespace_of(&ch("a:b:c")), Some("a"));
    }
}
