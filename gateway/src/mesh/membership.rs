//! The controller's membership table, sans-IO: which relays and sites are registered, and
//! which are up. Nodes register once and heartbeat; a node silent for longer than
//! `down_after` is marked down by [`Membership::poll`], and marked up again by its next
//! heartbeat or registration. Time is always passed in.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::identity::Role;

/// Heartbeat timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MembershipConfig {
    /// How often nodes are asked to heartbeat, ms (default 1,000).
    pub heartbeat_ms: u64,
    /// Heartbeat silence after which a node is marked down, ms (default 3,000).
    pub down_after_ms: u64,
    /// A node's control connection on which nothing at all arrives for this long is closed,
    /// and the node marked down at once (see `mesh::liveness`); ms (default 500).
    pub silent_after_ms: u64,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            heartbeat_ms: 1_000,
            down_after_ms: 3_000,
            silent_after_ms: super::liveness::DEFAULT_SILENT_AFTER_MS,
        }
    }
}

/// Up or down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Heard from recently.
    Up,
    /// Silent for longer than `down_after`.
    Down,
}

/// One registered node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRecord {
    /// Its name (authenticated by its certificate).
    pub name: String,
    /// Its role (granted by its certificate).
    pub role: Role,
    /// Where it listens for mesh peers, if it does.
    pub listen: Option<SocketAddr>,
    /// Up or down.
    pub state: NodeState,
    /// When it was last heard from.
    pub last_seen: Instant,
    /// When its state last changed.
    pub since: Instant,
}

/// A change worth telling the rest of the controller (path engine, tunnels, logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipEvent {
    /// First registration.
    Joined {
        /// Node.
        name: String,
        /// Its role.
        role: Role,
    },
    /// Heard from again after being down.
    Up {
        /// Node.
        name: String,
    },
    /// Silent for too long.
    Down {
        /// Node.
        name: String,
        /// How long it had been silent.
        silent_for: Duration,
    },
}

/// A message the table refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MembershipError {
    /// A heartbeat from a node that never registered.
    #[error("node `{0}` is not registered")]
    Unknown(String),
    /// A node registering under a name another role holds.
    #[error("node `{name}` is registered as a {registered}, not a {claimed}")]
    RoleConflict {
        /// Node.
        name: String,
        /// The role on record.
        registered: Role,
        /// The role now claimed.
        claimed: Role,
    },
}

/// The membership table.
#[derive(Debug, Clone, Default)]
pub struct Membership {
    config: MembershipConfig,
    nodes: BTreeMap<String, NodeRecord>,
}

impl Membership {
    /// An empty table.
    pub fn new(config: MembershipConfig) -> Self {
        Membership { config, nodes: BTreeMap::new() }
    }

    /// The timing in force.
    pub fn config(&self) -> MembershipConfig {
        self.config
    }

    /// A node (re)registers. A node keeps its role for life: re-registering under another role
    /// is refused.
    pub fn register(
        &mut self,
        name: &str,
        role: Role,
        listen: Option<SocketAddr>,
        now: Instant,
    ) -> Result<Vec<MembershipEvent>, MembershipError> {
        match self.nodes.get_mut(name) {
            Some(node) if node.role != role => Err(MembershipError::RoleConflict {
                name: name.to_owned(),
                registered: node.role,
                claimed: role,
            }),
            Some(node) => {
                node.listen = listen;
                Ok(Self::seen(node, now).into_iter().collect())
            }
            None => {
                let record = NodeRecord {
                    name: name.to_owned(),
                    role,
                    listen,
                    state: NodeState::Up,
                    last_seen: now,
                    since: now,
                };
                self.nodes.insert(name.to_owned(), record);
                Ok(vec![MembershipEvent::Joined { name: name.to_owned(), role }])
            }
        }
    }

    /// A heartbeat from `name`.
    pub fn heartbeat(&mut self, name: &str, now: Instant) -> Result<Vec<MembershipEvent>, MembershipError> {
        let node = self.nodes.get_mut(name).ok_or_else(|| MembershipError::Unknown(name.to_owned()))?;
        Ok(Self::seen(node, now).into_iter().collect())
    }

    fn seen(node: &mut NodeRecord, now: Instant) -> Option<MembershipEvent> {
        node.last_seen = node.last_seen.max(now);
        if node.state == NodeState::Down {
            node.state = NodeState::Up;
            node.since = now;
            return Some(MembershipEvent::Up { name: node.name.clone() });
        }
        None
    }

    /// `name`'s connection closed: mark it down now rather than after `down_after` of silence.
    pub fn disconnected(&mut self, name: &str, now: Instant) -> Vec<MembershipEvent> {
        match self.nodes.get_mut(name) {
            Some(node) if node.state == NodeState::Up => {
                node.state = NodeState::Down;
                node.since = now;
                let silent_for = now.saturating_duration_since(node.last_seen);
                vec![MembershipEvent::Down { name: name.to_owned(), silent_for }]
            }
            _ => vec![],
        }
    }

    /// Mark down every node silent for longer than `down_after`.
    pub fn poll(&mut self, now: Instant) -> Vec<MembershipEvent> {
        let limit = Duration::from_millis(self.config.down_after_ms);
        let mut events = Vec::new();
        for node in self.nodes.values_mut() {
            let silent_for = now.saturating_duration_since(node.last_seen);
            if node.state == NodeState::Up && silent_for > limit {
                node.state = NodeState::Down;
                node.since = now;
                events.push(MembershipEvent::Down { name: node.name.clone(), silent_for });
            }
        }
        events
    }

    /// When [`Membership::poll`] next has something to do (the earliest moment an up node
    /// would be overdue), if any node is up.
    pub fn next_deadline(&self) -> Option<Instant> {
        let limit = Duration::from_millis(self.config.down_after_ms);
        self.nodes.values().filter(|n| n.state == NodeState::Up).map(|n| n.last_seen + limit).min()
    }

    /// A node's record.
    pub fn get(&self, name: &str) -> Option<&NodeRecord> {
        self.nodes.get(name)
    }

    /// Every node, by name.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeRecord> {
        self.nodes.values()
    }

    /// Whether `name` is registered and up.
    pub fn is_up(&self, name: &str) -> bool {
        self.nodes.get(name).is_some_and(|n| n.state == NodeState::Up)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_connection_marks_the_node_down_at_once_and_registration_brings_it_back() {
        let t0 = Instant::now();
        let mut m = Membership::new(MembershipConfig::default());
        m.register("r1", Role::Relay, None, t0).unwrap();
        let events = m.disconnected("r1", t0 + Duration::from_millis(10));
        assert!(matches!(events.as_slice(), [MembershipEvent::Down { name, .. }] if name == "r1"));
        assert!(!m.is_up("r1"));
        assert!(m.disconnected("r1", t0).is_empty(), "already down");
        assert!(m.disconnected("nobody", t0).is_empty());
        let events = m.register("r1", Role::Relay, None, t0 + Duration::from_millis(20)).unwrap();
        assert!(matches!(events.as_slice(), [MembershipEvent::Up { .. }]));
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn silent_nodes_go_down_within_the_limit_and_come_back() {
        let t0 = Instant::now();
        let mut m = Membership::new(MembershipConfig::default());
        assert_eq!(
            m.register("r1", Role::Relay, None, t0).unwrap(),
            [MembershipEvent::Joined { name: "r1".into(), role: Role::Relay }]
        );
        m.register("site-a", Role::Site, None, t0).unwrap();
        // Both heartbeat every second for 5 s: nobody goes down.
        for s in 1..=5 {
            let now = t0 + ms(s * 1000);
            m.heartbeat("r1", now).unwrap();
            m.heartbeat("site-a", now).unwrap();
            assert!(m.poll(now).is_empty());
        }
        // r1 goes silent after 5 s; it is down by 5 s + 3 s (just after the limit), not before.
        for s in 6..=8 {
            m.heartbeat("site-a", t0 + ms(s * 1000)).unwrap();
        }
        assert!(m.poll(t0 + ms(8000)).is_empty(), "exactly at the limit: still up");
        assert_eq!(m.next_deadline(), Some(t0 + ms(8000)));
        let events = m.poll(t0 + ms(8001));
        assert_eq!(events, [MembershipEvent::Down { name: "r1".into(), silent_for: ms(3001) }]);
        assert!(!m.is_up("r1") && m.is_up("site-a"));
        assert!(m.poll(t0 + ms(9000)).is_empty(), "down is reported once");
        // It returns.
        assert_eq!(m.heartbeat("r1", t0 + ms(9500)).unwrap(), [MembershipEvent::Up { name: "r1".into() }]);
        assert!(m.is_up("r1"));
        assert_eq!(m.get("r1").unwrap().since, t0 + ms(9500));
    }

    #[test]
    fn unknown_heartbeats_and_role_changes_are_refused() {
        let t0 = Instant::now();
        let mut m = Membership::new(MembershipConfig::default());
        assert_eq!(m.heartbeat("ghost", t0), Err(MembershipError::Unknown("ghost".into())));
        m.register("r1", Role::Relay, None, t0).unwrap();
        let e = m.register("r1", Role::Site, None, t0).unwrap_err();
        assert_eq!(e.to_string(), "node `r1` is registered as a relay, not a site");
        // Re-registering in the same role is a heartbeat (and updates the address).
        let addr: SocketAddr = "127.0.0.1:4433".parse().unwrap();
        assert!(m.register("r1", Role::Relay, Some(addr), t0 + ms(10)).unwrap().is_empty());
        assert_eq!(m.get("r1").unwrap().listen, Some(addr));
    }

    #[test]
    fn a_late_message_does_not_move_time_backwards() {
        let t0 = Instant::now();
        let mut m = Membership::new(MembershipConfig::default());
        m.register("r1", Role::Relay, None, t0 + ms(2000)).unwrap();
        m.heartbeat("r1", t0 + ms(1000)).unwrap();
        assert_eq!(m.get("r1").unwrap().last_seen, t0 + ms(2000));
    }
}
