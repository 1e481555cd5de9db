//! Records of ended sessions, kept in Redis so that any node answers a
//! user's timeline and `/api/sessions/ID` for sessions every node held.
//!
//! - `hf:s:ID` — the record as JSON, for [`RECORD_TTL`];
//! - `hf:u:USER` — the user's last [`USER_RECORDS`] records as JSON, newest
//!   pushed first, for [`RECORD_TTL`] after the last one.
//!
//! Each key is written with its own commands (a record's two keys are in
//! different slots of a Cluster). Bounded by keys' age and the per-user
//! count; they count towards `history_budget_mb` like everything in Redis.

use futures_util::{StreamExt, TryStreamExt};
use holdfast_core::{newest_end_first, BrokerError};
use holdfast_protocol::SessionRecord;

use crate::Shared;

/// How long records stay.
pub const RECORD_TTL_SECS: u64 = 24 * 3600;
/// Records kept per user.
pub const USER_RECORDS: isize = 100;

fn session_key(id: &str) -> String {
    format!("hf:s:{id}")
}

fn user_key(user: &str) -> String {
    format!("hf:u:{user}")
}

impl Shared {
    pub(crate) async fn record_sessions(&self, records: &[SessionRecord]) -> Result<(), BrokerError> {
        // A mass drop completes thousands at once: written side by side,
        // not one round trip after another.
        let writes: Vec<_> = records.iter().map(|record| self.record_session(record)).collect();
        futures_util::stream::iter(writes).buffer_unordered(32).try_collect::<Vec<()>>().await?;
        Ok(())
    }

    async fn record_session(&self, record: &SessionRecord) -> Result<(), BrokerError> {
        let json = serde_json::to_string(record).expect("records serialize");
        let mut set = redis::cmd("SET");
        set.arg(session_key(&record.session)).arg(&json).arg("EX").arg(RECORD_TTL_SECS);
        self.query::<()>("record session", set).await?;
        let Some(user) = &record.user else { return Ok(()) };
        let key = user_key(user);
        let mut pipe = redis::pipe();
        pipe.lpush(&key, &json).ignore().ltrim(&key, 0, USER_RECORDS - 1).ignore();
        pipe.expire(&key, RECORD_TTL_SECS as i64).ignore();
        let pipe = &pipe;
        self.commands
            .call("record session", |mut c: crate::Conn| async move { pipe.query_async::<()>(&mut c).await })
            .await
    }

    pub(crate) async fn session_record(&self, id: &str) -> Result<Option<SessionRecord>, BrokerError> {
        let mut get = redis::cmd("GET");
        get.arg(session_key(id));
        let json: Option<String> = self.query("session record", get).await?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    pub(crate) async fn user_sessions(&self, user: &str, limit: usize) -> Result<Vec<SessionRecord>, BrokerError> {
        let mut range = redis::cmd("LRANGE");
        range.arg(user_key(user)).arg(0).arg(USER_RECORDS - 1);
        let list: Vec<String> = self.query("user sessions", range).await?;
        // Pushed as each node completed them: put in order of their ends.
        let mut records: Vec<SessionRecord> = list.iter().filter_map(|j| serde_json::from_str(j).ok()).collect();
        newest_end_first(&mut records);
        records.truncate(limit);
        Ok(records)
    }
}
