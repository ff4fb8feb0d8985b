//! What happened in the controller, as it happens: nodes joining, going down and coming back,
//! platforms' nearest relays changing, decisions, bindings opening, closing and re-routing,
//! policy changes. Published on a broadcast channel; anyone may subscribe (tests, and the
//! dashboard and metrics to come). A subscriber that falls more than [`CAPACITY`] events behind
//! loses the oldest and is told how many.

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::mesh::identity::Role;
use crate::mesh::membership::MembershipEvent;

/// Events kept for a subscriber that is behind.
pub const CAPACITY: usize = 1024;

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Event {
    /// A node registered for the first time.
    NodeJoined {
        /// The node.
        node: String,
        /// Its role.
        role: Role,
    },
    /// A node that was down is heard from again.
    NodeUp {
        /// The node.
        node: String,
    },
    /// A node went down: silent too long, or its connection ended.
    NodeDown {
        /// The node.
        node: String,
        /// How long it had been silent, ms (0 when its connection ended).
        silent_ms: u64,
    },
    /// A platform's nearest relay changed.
    NearestRelay {
        /// The platform.
        platform: String,
        /// The relay before, if any.
        from: Option<String>,
        /// The relay now, if any.
        to: Option<String>,
    },
    /// A connection request was decided.
    Decided {
        /// The decision record.
        decision: u64,
        /// The requesting platform.
        from: String,
        /// The target platform.
        to: String,
        /// The chosen path.
        path: Vec<String>,
    },
    /// A platform's report was integrated into its inventory.
    InventoryChanged {
        /// The platform.
        platform: String,
        /// What the report changed.
        summary: crate::catalog::ReportSummary,
    },
    /// A platform granted a capability: it is in the catalog, associated with the platform.
    CapabilityGranted {
        /// The platform.
        platform: String,
        /// The capability's match key.
        capability: String,
        /// The catalog entry.
        entry: String,
    },
    /// A platform revoked a capability it had granted.
    CapabilityRevoked {
        /// The platform.
        platform: String,
        /// The capability's match key.
        capability: String,
        /// The bindings closed for it.
        bindings_closed: Vec<u64>,
    },
    /// A binding opened.
    BindingOpened {
        /// The binding.
        binding: u64,
        /// Its tunnel's hops.
        hops: Vec<String>,
    },
    /// A binding closed.
    BindingClosed {
        /// The binding.
        binding: u64,
        /// Why: `requested`, `expired`, `platform … went down`.
        reason: String,
    },
    /// A binding's tunnel moved to a new path.
    Rerouted {
        /// The binding.
        binding: u64,
        /// Why.
        reason: String,
        /// The old hops.
        from_hops: Vec<String>,
        /// The new hops.
        to_hops: Vec<String>,
    },
    /// The path policy changed.
    PolicyChanged,
}

impl From<&MembershipEvent> for Event {
    fn from(e: &MembershipEvent) -> Event {
        match e {
            MembershipEvent::Joined { name, role } => Event::NodeJoined { node: name.clone(), role: *role },
            MembershipEvent::Up { name } => Event::NodeUp { node: name.clone() },
            MembershipEvent::Down { name, silent_for } => Event::NodeDown {
                node: name.clone(),
                silent_ms: silent_for.as_millis().try_into().unwrap_or(u64::MAX),
            },
        }
    }
}

/// An event with when it happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stamped {
    /// When (Unix ms).
    pub at_unix_ms: u64,
    /// What.
    #[serde(flatten)]
    pub event: Event,
}

/// The controller's event channel.
pub struct Events {
    tx: broadcast::Sender<Stamped>,
    /// The latest [`RECENT`] events, for a subscriber that wants what happened just before it
    /// came (a dashboard opened after a re-route still shows it).
    recent: std::sync::Mutex<std::collections::VecDeque<Stamped>>,
}

/// Events kept for [`Events::subscribe_with_recent`].
pub const RECENT: usize = 100;

impl Default for Events {
    fn default() -> Self {
        Events { tx: broadcast::channel(CAPACITY).0, recent: Default::default() }
    }
}

impl Events {
    fn recent(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<Stamped>> {
        self.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Publish `event` (nobody listening is fine).
    pub fn publish(&self, event: Event) {
        tracing::debug!(?event, "event");
        let stamped = Stamped { at_unix_ms: crate::time::now_unix_ms(), event };
        // Kept and sent under one lock: a subscriber taking the recent ones and subscribing
        // under the same lock sees each event exactly once.
        let mut recent = self.recent();
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(stamped.clone());
        let _ = self.tx.send(stamped);
    }

    /// Every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Stamped> {
        self.tx.subscribe()
    }

    /// The latest `n` events (at most [`RECENT`]), oldest first, and every event after them.
    pub fn subscribe_with_recent(&self, n: usize) -> (Vec<Stamped>, broadcast::Receiver<Stamped>) {
        let recent = self.recent();
        let skip = recent.len().saturating_sub(n);
        (recent.iter().skip(skip).cloned().collect(), self.tx.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_late_subscriber_gets_the_recent_events_then_the_new_ones_each_once() {
        let events = Events::default();
        let policy = |k: usize| Event::NodeUp { node: format!("r{k}") };
        for k in 0..RECENT + 5 {
            events.publish(policy(k));
        }
        let (recent, mut rx) = events.subscribe_with_recent(3);
        let ks: Vec<String> = recent.iter().map(|s| format!("{:?}", s.event)).collect();
        assert_eq!(
            ks,
            [policy(RECENT + 2), policy(RECENT + 3), policy(RECENT + 4)].map(|e| format!("{e:?}"))
        );
        events.publish(policy(999));
        assert_eq!(format!("{:?}", rx.try_recv().unwrap().event), format!("{:?}", policy(999)));
        assert!(rx.try_recv().is_err(), "nothing twice");
        assert_eq!(events.subscribe_with_recent(usize::MAX).0.len(), RECENT, "bounded");
    }

    #[test]
    fn subscribers_get_what_is_published_after_they_subscribe() {
        let events = Events::default();
        events.publish(Event::PolicyChanged);
        let mut rx = events.subscribe();
        events.publish(Event::NodeUp { node: "r1".into() });
        let got = rx.try_recv().unwrap();
        assert_eq!(got.event, Event::NodeUp { node: "r1".into() });
        assert!(got.at_unix_ms > 0);
        assert!(rx.try_recv().is_err(), "nothing from before the subscription");
        let down = MembershipEvent::Down { name: "r2".into(), silent_for: Duration::from_millis(1500) };
        assert_eq!(Event::from(&down), Event::NodeDown { node: "r2".into(), silent_ms: 1500 });
        let json = serde_json::to_value(&got).unwrap();
        assert_eq!(json["type"], "node-up");
        assert_eq!(json["node"], "r1");
    }
}
