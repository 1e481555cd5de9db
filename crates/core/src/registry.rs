//! `SessionRegistry`: every live connection on this node, so the node can
//! reach them all (graceful drain), by user (`/api/disconnect`), or — for
//! sessions on request-based transports (SSE, long-polling), whose commands
//! and reads arrive on separate requests — by session id ([`Route`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::broker::{ClientInfo, SessionKey};
use crate::outbox::{Disconnect, Outbox};

/// Why the identity is the session's own `ClientInfo` and not copies of
/// its id and user: every connection has an entry for its whole life, and
/// the copies cost ~100 bytes each (an `Arc<str>` allocation, and twice
/// the entry in a table sized for all connections).
struct Entry {
    outbox: Arc<Outbox>,
    identity: Option<Arc<ClientInfo>>,
}

/// What a request-based session's task receives.
#[derive(Debug)]
pub enum Input {
    /// One or more commands, as a WebSocket frame would carry them.
    Commands(String),
    /// The client showed it is alive (a poll, a delivered stream chunk).
    Heard,
}

/// How to reach a session whose requests may land anywhere: its task's
/// input (bounded) and its outbox.
#[derive(Clone)]
pub struct Route {
    /// Commands and liveness for the session's task.
    pub input: mpsc::Sender<Input>,
    /// What the session sends.
    pub outbox: Arc<Outbox>,
}

impl Route {
    /// One read (a long-poll): tells the session its client is alive, waits
    /// until it has something to send or `give_up` completes, and takes it
    /// all. A batch that ends the session is acknowledged, so the session's
    /// task can finish at once.
    pub async fn read(&self, give_up: impl std::future::Future<Output = ()>) -> crate::outbox::Batch {
        let _ = self.input.try_send(Input::Heard);
        tokio::select! {
            () = self.outbox.ready() => {}
            () = give_up => {}
        }
        let mut batch = crate::outbox::Batch::default();
        self.outbox.take(&mut batch);
        if batch.disconnect.is_some() {
            let _ = self.input.try_send(Input::Heard);
        }
        batch
    }
}

/// Which sessions [`SessionRegistry::disconnect`] closes.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    /// Every session of a user.
    User(&'a str),
    /// One session, by the id sent in `connected`.
    Session(&'a str),
}

/// The node's live connections.
#[derive(Default)]
pub struct SessionRegistry {
    entries: Mutex<HashMap<SessionKey, Entry>>,
    routes: Mutex<HashMap<Arc<str>, Route>>,
    next_key: AtomicU64,
}

impl SessionRegistry {
    /// Adds a connection and returns its key.
    pub fn register(&self, outbox: Arc<Outbox>) -> SessionKey {
        let key = SessionKey(self.next_key.fetch_add(1, Ordering::Relaxed));
        self.lock().insert(key, Entry { outbox, identity: None });
        key
    }

    /// Records the session id and user of a connection once it connected.
    pub fn set_identity(&self, key: SessionKey, identity: &Arc<ClientInfo>) {
        if let Some(e) = self.lock().get_mut(&key) {
            e.identity = Some(identity.clone());
        }
    }

    /// Removes a connection.
    pub fn unregister(&self, key: SessionKey) {
        if let Some(Entry { identity: Some(info), .. }) = self.lock().remove(&key) {
            self.routes().remove(&*info.session);
        }
    }

    /// Makes a connected session reachable by its id.
    pub fn add_route(&self, session: &str, route: Route) {
        self.routes().insert(Arc::from(session), route);
    }

    /// How to reach a session by id, if it lives on this node.
    pub fn route(&self, session: &str) -> Option<Route> {
        self.routes().get(session).cloned()
    }

    /// Ids of the sessions reachable by id.
    pub fn routed(&self) -> Vec<Arc<str>> {
        self.routes().keys().cloned().collect()
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Route>> {
        self.routes.lock().expect("session routes poisoned")
    }

    /// Live connections.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes the sessions `target` names; returns how many this call
    /// closed (a session already closing, say from an earlier call, still
    /// sits here until its closing handshake ends, and is not counted again).
    pub fn disconnect(&self, target: Target<'_>, disconnect: &Disconnect) -> usize {
        let map = self.lock();
        let hit = |e: &&Entry| match (target, e.identity.as_deref()) {
            (Target::User(u), Some(info)) => info.user.as_deref() == Some(u),
            (Target::Session(s), Some(info)) => &*info.session == s,
            (_, None) => false,
        };
        map.values().filter(hit).filter(|e| e.outbox.start_closing(disconnect.clone())).count()
    }

    /// Every connection's outbox, for draining.
    pub fn outboxes(&self) -> Vec<Arc<Outbox>> {
        self.lock().values().map(|e| e.outbox.clone()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionKey, Entry>> {
        self.entries.lock().expect("session registry poisoned")
    }
}
