//! The record of each use of a binding — a client connection, or one HTTP request — as its
//! three sessions (DESIGN.md step 6), with bytes both ways and how it ended. The controller
//! keeps the latest [`MAX_SESSIONS`] in memory for `GET /v1/sessions`. Sans-IO: times are
//! passed in.

use std::collections::VecDeque;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Sessions kept in memory, newest last.
pub const MAX_SESSIONS: usize = 1000;

/// One use of a binding — a client connection — as its three sessions (DESIGN.md step 6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SessionRecord {
    /// Its id.
    pub id: u64,
    /// The account it ran for.
    pub account: String,
    /// The binding it used.
    pub binding: u64,
    /// First session, account ↔ controller: the client's connection at the ingress.
    pub first: FirstSession,
    /// Second session, account ↔ transit: the tunnel that carried it.
    pub second: SecondSession,
    /// Third session, account ↔ target: the platform, endpoint and the identity there.
    pub third: ThirdSession,
    /// When it began (Unix ms).
    pub started_unix_ms: u64,
    /// When it ended, if it has.
    pub ended_unix_ms: Option<u64>,
    /// Bytes towards the target.
    pub bytes_up: u64,
    /// Bytes back.
    pub bytes_down: u64,
    /// How it ended: `closed`, or the error.
    pub outcome: Option<String>,
}

/// The first session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct FirstSession {
    /// The client's address.
    pub client: SocketAddr,
    /// The ingress address it connected to.
    pub ingress: SocketAddr,
}

/// The second session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SecondSession {
    /// The tunnel.
    pub tunnel: u64,
    /// Its hops.
    pub hops: Vec<String>,
}

/// The third session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ThirdSession {
    /// The target platform.
    pub platform: String,
    /// The endpoint there.
    pub endpoint: String,
    /// The account's identity there, if it has a credential mapping (never the secret).
    pub principal: Option<String>,
    /// When the target token it carried expires (Unix s), for targets that use tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_expires_unix_s: Option<u64>,
}

/// The latest sessions, oldest first, at most [`MAX_SESSIONS`]; ids increase from 1.
#[derive(Debug)]
pub struct SessionLog {
    sessions: VecDeque<SessionRecord>,
    next_id: u64,
    capacity: usize,
}

impl Default for SessionLog {
    fn default() -> Self {
        SessionLog::with_capacity(MAX_SESSIONS)
    }
}

impl SessionLog {
    /// A log keeping the latest `capacity` sessions.
    pub fn with_capacity(capacity: usize) -> SessionLog {
        SessionLog { sessions: VecDeque::new(), next_id: 1, capacity: capacity.max(1) }
    }

    /// A new session id, not yet recorded (for a use that failed before it began).
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Record `record`, dropping the oldest when full.
    pub fn push(&mut self, record: SessionRecord) {
        if self.sessions.len() >= self.capacity {
            self.sessions.pop_front();
        }
        self.sessions.push_back(record);
    }

    /// Note that session `id` carried a target token expiring at `expires_unix_s`.
    pub fn note_token(&mut self, id: u64, expires_unix_s: u64) {
        if let Some(s) = self.get_mut(id) {
            s.third.token_expires_unix_s = Some(expires_unix_s);
        }
    }

    /// End session `id` at `now_unix_ms` with the bytes carried each way and the outcome.
    pub fn end(&mut self, id: u64, up: u64, down: u64, outcome: String, now_unix_ms: u64) {
        if let Some(s) = self.get_mut(id) {
            s.ended_unix_ms = Some(now_unix_ms);
            s.bytes_up = up;
            s.bytes_down = down;
            s.outcome = Some(outcome);
        }
    }

    /// Every kept session, newest first.
    pub fn newest_first(&self) -> Vec<SessionRecord> {
        self.sessions.iter().rev().cloned().collect()
    }

    fn get_mut(&mut self, id: u64) -> Option<&mut SessionRecord> {
        // Recent sessions end first: search from the back.
        self.sessions.iter_mut().rev().find(|s| s.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64) -> SessionRecord {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        SessionRecord {
            id,
            account: "acme".into(),
            binding: 1,
            first: FirstSession { client: addr, ingress: addr },
            second: SecondSession { tunnel: 1, hops: vec!["r1".into(), "site-b".into()] },
            third: ThirdSession {
                platform: "site-b".into(),
                endpoint: "web".into(),
                principal: None,
                token_expires_unix_s: None,
            },
            started_unix_ms: 10,
            ended_unix_ms: None,
            bytes_up: 0,
            bytes_down: 0,
            outcome: None,
        }
    }

    #[test]
    fn sessions_end_with_their_bytes_and_the_oldest_go_first() {
        let mut log = SessionLog::with_capacity(2);
        for _ in 0..3 {
            let id = log.next_id();
            log.push(record(id));
        }
        let ids: Vec<u64> = log.newest_first().iter().map(|s| s.id).collect();
        assert_eq!(ids, [3, 2], "capacity 2, newest first");
        log.end(2, 5, 7, "closed".into(), 99);
        log.note_token(3, 1_000);
        log.end(1, 1, 1, "gone".into(), 99); // dropped already: nothing happens
        let all = log.newest_first();
        assert_eq!((all[1].bytes_up, all[1].bytes_down, all[1].ended_unix_ms), (5, 7, Some(99)));
        assert_eq!(all[1].outcome.as_deref(), Some("closed"));
        assert_eq!(all[0].third.token_expires_unix_s, Some(1_000));
        assert_eq!(all[0].ended_unix_ms, None);
    }
}
