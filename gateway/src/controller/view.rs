//! The controller's view of the mesh, sans-IO: who is registered and up ([`Membership`]),
//! every link as relays report it, what each site measures to the relays it knows and hence
//! its nearest relay, and from those the link-state graph, the routing relays of a
//! connection request and the health of a tunnel's path. Plain data; every call that depends
//! on time takes `now`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::connect::ConnectError;
use crate::mesh::identity::Role;
use crate::mesh::membership::{Membership, MembershipConfig, NodeState};
use crate::mesh::messages::LinkReport;
use crate::path::{Graph, GraphError, Hysteresis, LinkStats, NearestRelay};

/// What the controller knows about a link, as last reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LinkView {
    /// One end (the relay that probes it).
    pub from: String,
    /// The other end.
    pub to: String,
    /// Latest statistics.
    pub stats: LinkStats,
    /// Milliseconds since the report.
    pub age_ms: u64,
    /// Whether the path engine uses it (both ends up, measured, not dead, fresh, not silent).
    pub usable: bool,
    /// One end reported the other silent (its connection closed) within the last
    /// [`SILENT_HOLD`].
    #[serde(default)]
    pub silent: bool,
}

/// A registered node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NodeView {
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Up or down.
    pub state: NodeState,
    /// Where it listens for mesh peers.
    pub listen: Option<SocketAddr>,
    /// Milliseconds since it was last heard from.
    pub last_seen_ms: u64,
    /// Milliseconds since its state (up or down) last changed.
    #[serde(default)]
    pub since_ms: u64,
}

/// A platform (a site) and its relays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PlatformView {
    /// Platform name (the site's name).
    pub name: String,
    /// Up or down.
    pub state: NodeState,
    /// The relay nearest it, if any is measured.
    pub nearest_relay: Option<String>,
    /// What the site measures to each relay it knows.
    pub relays: BTreeMap<String, LinkStats>,
}

/// The quality of the best path between two platforms as the link reports have it, without
/// probing it end to end: what a catalog entry shows for each platform offering it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PathEstimate {
    /// Sum of the RTTs: site → first relay, relay links, last relay → site.
    pub rtt_ms: f64,
    /// Loss over the path (1 − the product of the links' delivery ratios).
    pub loss: f64,
    /// Relay-to-relay hops.
    pub hops: u32,
    /// The relays.
    pub relays: Vec<String>,
}

/// Why a tunnel's path needs another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathProblem {
    /// Dead (a relay down, a link gone) rather than merely degraded (lossy).
    pub dead: bool,
    /// What is wrong, for the log and the re-route record.
    pub reason: String,
}

struct LinkRecord {
    stats: LinkStats,
    at: Instant,
}

/// A link one end reported silent stays out of the graph for this long after the last such
/// report — whatever the other end (perhaps killed, its last report still fresh) said — so
/// that a relay coming and going does not flip paths back and forth.
pub const SILENT_HOLD: Duration = Duration::from_secs(3);

/// A link's key regardless of direction.
fn pair(a: &str, b: &str) -> (String, String) {
    if a <= b { (a.to_owned(), b.to_owned()) } else { (b.to_owned(), a.to_owned()) }
}

struct SiteRecord {
    relays: BTreeMap<String, LinkStats>,
    nearest: NearestRelay,
}

/// The mesh as the controller sees it.
pub struct MeshView {
    membership: Membership,
    /// Links by (prober, neighbour).
    links: BTreeMap<(String, String), LinkRecord>,
    /// When either end last reported a link silent, by [`pair`].
    silent: BTreeMap<(String, String), Instant>,
    sites: BTreeMap<String, SiteRecord>,
    hysteresis: Hysteresis,
    /// Link reports older than this are not used.
    stale_after: Duration,
}

fn ms_between(then: Instant, now: Instant) -> u64 {
    now.saturating_duration_since(then).as_millis().try_into().unwrap_or(u64::MAX)
}

impl MeshView {
    /// An empty view. Link reports count for as long as a silent node counts as up.
    pub fn new(membership: MembershipConfig, hysteresis: Hysteresis) -> MeshView {
        MeshView {
            stale_after: Duration::from_millis(membership.down_after_ms),
            membership: Membership::new(membership),
            links: BTreeMap::new(),
            silent: BTreeMap::new(),
            sites: BTreeMap::new(),
            hysteresis,
        }
    }

    /// Who is registered, up or down.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The membership table, to register nodes and record heartbeats.
    pub fn membership_mut(&mut self) -> &mut Membership {
        &mut self.membership
    }

    /// Whether `node` is registered and up.
    pub fn is_up(&self, node: &str) -> bool {
        self.membership.is_up(node)
    }

    fn relay_up(&self, name: &str) -> bool {
        self.membership.get(name).is_some_and(|n| n.role == Role::Relay && n.state == NodeState::Up)
    }

    /// Take in what `node` (of `role`) measured at `now`: a relay's links, or the relays a
    /// site measures — which may change its nearest relay: then the relay before and after.
    pub fn on_link_report(
        &mut self,
        node: &str,
        role: Role,
        links: Vec<LinkReport>,
        now: Instant,
    ) -> Option<(Option<String>, Option<String>)> {
        match role {
            Role::Relay => {
                for l in links {
                    if l.silent {
                        if !self.is_silent(node, &l.neighbour, now) {
                            tracing::warn!(relay = node, neighbour = %l.neighbour, "link silent: out of the graph");
                        }
                        self.silent.insert(pair(node, &l.neighbour), now);
                    }
                    self.links.insert((node.to_owned(), l.neighbour), LinkRecord { stats: l.stats, at: now });
                }
                None
            }
            Role::Site => {
                let relays: BTreeMap<String, LinkStats> =
                    links.into_iter().map(|l| (l.neighbour, l.stats)).collect();
                // Only relays that are up and answer count for nearness.
                let rtts: BTreeMap<String, f64> = relays
                    .iter()
                    .filter(|(r, s)| s.loss < 1.0 && self.relay_up(r))
                    .filter_map(|(r, s)| s.rtt_ms.map(|rtt| (r.clone(), rtt)))
                    .collect();
                let hysteresis = self.hysteresis;
                let site = self.sites.entry(node.to_owned()).or_insert_with(|| SiteRecord {
                    relays: BTreeMap::new(),
                    nearest: NearestRelay::new(hysteresis),
                });
                let before = site.nearest.current().cloned();
                let after = site.nearest.update(&rtts).cloned();
                site.relays = relays;
                if before == after {
                    return None;
                }
                tracing::info!(platform = node, from = ?before, to = ?after, "nearest relay changed");
                Some((before, after))
            }
            Role::Controller => None,
        }
    }

    /// Whether either end reported the link between `a` and `b` silent within [`SILENT_HOLD`].
    fn is_silent(&self, a: &str, b: &str, now: Instant) -> bool {
        self.silent.get(&pair(a, b)).is_some_and(|at| now.saturating_duration_since(*at) < SILENT_HOLD)
    }

    fn usable(&self, from: &str, to: &str, r: &LinkRecord, now: Instant) -> bool {
        self.relay_up(from)
            && self.relay_up(to)
            && r.stats.rtt_ms.is_some()
            && r.stats.loss < 1.0
            && now.saturating_duration_since(r.at) <= self.stale_after
            && !self.is_silent(from, to, now)
    }

    /// The link-state graph at `now`: relays that are up, and the usable links between them
    /// weighted by their RTT.
    pub fn graph(&self, now: Instant) -> Result<Graph, GraphError> {
        let mut graph = Graph::new();
        for n in self.membership.nodes().filter(|n| n.role == Role::Relay && n.state == NodeState::Up) {
            graph.add_node(&n.name);
        }
        for ((a, b), r) in &self.links {
            if self.usable(a, b, r, now) {
                graph.set_link(a, b, r.stats.rtt_ms.unwrap_or(f64::INFINITY))?;
            }
        }
        Ok(graph)
    }

    /// The relay nearest platform `name`, which must be a registered site that is up and has
    /// measured a relay.
    pub fn nearest_relay(&self, name: &str) -> Result<String, ConnectError> {
        let known = || {
            let names: Vec<&str> =
                self.membership.nodes().filter(|n| n.role == Role::Site).map(|n| n.name.as_str()).collect();
            if names.is_empty() { "none".to_owned() } else { names.join(", ") }
        };
        match self.membership.get(name) {
            Some(n) if n.role == Role::Site => {}
            _ => return Err(ConnectError::UnknownPlatform { name: name.to_owned(), known: known() }),
        }
        if !self.membership.is_up(name) {
            return Err(ConnectError::Unavailable(format!(
                "platform `{name}` is down (its site stopped heartbeating)"
            )));
        }
        self.sites.get(name).and_then(|s| s.nearest.current().cloned()).ok_or_else(|| {
            ConnectError::Unavailable(format!("no relay has been measured from platform `{name}` yet"))
        })
    }

    /// What is wrong with a tunnel's path at `now` (`hops`: relays, then the target site), if
    /// anything: dead when a relay is down or a link between two of them is not usable,
    /// degraded when a link loses more than `max_loss` of its probes.
    pub fn path_problem(&self, hops: &[String], max_loss: f64, now: Instant) -> Option<PathProblem> {
        let relays = &hops[..hops.len().saturating_sub(1)];
        if let Some(down) = relays.iter().find(|r| !self.membership.is_up(r)) {
            return Some(PathProblem { dead: true, reason: format!("relay {down} is down") });
        }
        for pair in relays.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            if self.is_silent(a, b, now) {
                return Some(PathProblem { dead: true, reason: format!("link {a}–{b} fell silent") });
            }
            let link =
                self.links.get(&(a.clone(), b.clone())).or_else(|| self.links.get(&(b.clone(), a.clone())));
            match link {
                Some(r) if self.usable(a, b, r, now) || self.usable(b, a, r, now) => {
                    if r.stats.loss > max_loss {
                        let reason = format!("link {a}–{b} loses {:.0} % of probes", r.stats.loss * 100.0);
                        return Some(PathProblem { dead: false, reason });
                    }
                }
                _ => return Some(PathProblem { dead: true, reason: format!("link {a}–{b} is down") }),
            }
        }
        None
    }

    /// The best path from platform `from` to platform `to` at `now`, from the link reports
    /// (see [`PathEstimate`]); `None` when either platform or a path is missing. A platform to
    /// itself has an empty path.
    pub fn path_estimate(&self, from: &str, to: &str, now: Instant) -> Option<PathEstimate> {
        if from == to {
            return Some(PathEstimate { rtt_ms: 0.0, loss: 0.0, hops: 0, relays: vec![] });
        }
        let (a, b) = (self.nearest_relay(from).ok()?, self.nearest_relay(to).ok()?);
        let edge = |site: &str, relay: &str| self.sites.get(site)?.relays.get(relay).cloned();
        let (first, last) = (edge(from, &a)?, edge(to, &b)?);
        let path = self.graph(now).ok()?.k_shortest_paths(&a, &b, 1).ok()?.into_iter().next()?;
        let mut delivered = (1.0 - first.loss) * (1.0 - last.loss);
        for pair in path.nodes.windows(2) {
            let link = self
                .links
                .get(&(pair[0].clone(), pair[1].clone()))
                .or_else(|| self.links.get(&(pair[1].clone(), pair[0].clone())));
            delivered *= 1.0 - link.map_or(0.0, |l| l.stats.loss);
        }
        Some(PathEstimate {
            rtt_ms: first.rtt_ms? + path.cost_ms + last.rtt_ms?,
            loss: 1.0 - delivered,
            hops: path.hops(),
            relays: path.nodes,
        })
    }

    /// Every registered node, as at `now`.
    pub fn nodes(&self, now: Instant) -> Vec<NodeView> {
        self.membership
            .nodes()
            .map(|n| NodeView {
                name: n.name.clone(),
                role: n.role,
                state: n.state,
                listen: n.listen,
                last_seen_ms: ms_between(n.last_seen, now),
                since_ms: ms_between(n.since, now),
            })
            .collect()
    }

    /// Every reported link, as at `now`.
    pub fn links(&self, now: Instant) -> Vec<LinkView> {
        self.links
            .iter()
            .map(|((from, to), r)| LinkView {
                from: from.clone(),
                to: to.clone(),
                stats: r.stats,
                age_ms: ms_between(r.at, now),
                usable: self.usable(from, to, r, now),
                silent: self.is_silent(from, to, now),
            })
            .collect()
    }

    /// Every platform, with its nearest relay.
    pub fn platforms(&self) -> Vec<PlatformView> {
        self.membership
            .nodes()
            .filter(|n| n.role == Role::Site)
            .map(|n| {
                let site = self.sites.get(&n.name);
                PlatformView {
                    name: n.name.clone(),
                    state: n.state,
                    nearest_relay: site.and_then(|s| s.nearest.current().cloned()),
                    relays: site.map(|s| s.relays.clone()).unwrap_or_default(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(rtt: f64, loss: f64) -> LinkStats {
        LinkStats { rtt_ms: Some(rtt), jitter_ms: 0.0, loss, samples: 20 }
    }

    fn report(neighbour: &str, rtt: f64, loss: f64) -> LinkReport {
        LinkReport { neighbour: neighbour.into(), stats: stats(rtt, loss), silent: false }
    }

    /// r1 — r2 — r3 in a line plus r1 — r3 direct but slow; site-a near r1, site-b near r3.
    fn view(now: Instant) -> MeshView {
        let mut v = MeshView::new(
            MembershipConfig { heartbeat_ms: 100, down_after_ms: 1_000, ..Default::default() },
            Hysteresis::default(),
        );
        for (name, role) in [
            ("r1", Role::Relay),
            ("r2", Role::Relay),
            ("r3", Role::Relay),
            ("site-a", Role::Site),
            ("site-b", Role::Site),
        ] {
            v.membership_mut().register(name, role, None, now).unwrap();
        }
        v.on_link_report("r1", Role::Relay, vec![report("r2", 5.0, 0.0), report("r3", 50.0, 0.0)], now);
        v.on_link_report("r2", Role::Relay, vec![report("r3", 5.0, 0.0)], now);
        v.on_link_report("site-a", Role::Site, vec![report("r1", 1.0, 0.0), report("r3", 9.0, 0.0)], now);
        v.on_link_report("site-b", Role::Site, vec![report("r3", 1.0, 0.0), report("r1", 9.0, 0.0)], now);
        v
    }

    fn hops(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn nearest_relays_and_the_graph_come_from_the_reports() {
        let now = Instant::now();
        let v = view(now);
        assert_eq!(v.nearest_relay("site-a").unwrap(), "r1");
        assert_eq!(v.nearest_relay("site-b").unwrap(), "r3");
        let paths = v.graph(now).unwrap().k_shortest_paths("r1", "r3", 2).unwrap();
        assert_eq!(paths[0].nodes, ["r1", "r2", "r3"]);
        assert_eq!(paths[1].nodes, ["r1", "r3"]);
        let platforms = v.platforms();
        assert_eq!(platforms.len(), 2);
        assert_eq!(platforms[0].nearest_relay.as_deref(), Some("r1"));
        assert_eq!(v.links(now).iter().filter(|l| l.usable).count(), 3);
    }

    #[test]
    fn a_link_reported_silent_by_either_end_leaves_the_graph_at_once_and_for_the_hold() {
        let now = Instant::now();
        let mut v = view(now);
        let path = hops(&["r1", "r2", "r3", "site-b"]);
        let best =
            |v: &MeshView, at| v.graph(at).unwrap().k_shortest_paths("r1", "r3", 1).unwrap()[0].nodes.clone();
        assert_eq!(v.path_problem(&path, 0.2, now), None);
        assert_eq!(best(&v, now), ["r1", "r2", "r3"]);
        // r2 is killed. r3 accepted r2's connection and watched it fall silent: it says so. r2's
        // own report of the link is 100 ms old, still fresh — the silent end wins.
        let t = now + Duration::from_millis(100);
        let silent = LinkReport {
            neighbour: "r2".into(),
            stats: LinkStats { rtt_ms: None, jitter_ms: 0.0, loss: 1.0, samples: 0 },
            silent: true,
        };
        v.on_link_report("r3", Role::Relay, vec![silent], t);
        let problem = v.path_problem(&path, 0.2, t).expect("a problem");
        assert!(problem.dead && problem.reason == "link r2–r3 fell silent", "{problem:?}");
        assert_eq!(best(&v, t), ["r1", "r3"]);
        let link = v.links(t).into_iter().find(|l| l.from == "r2" && l.to == "r3").unwrap();
        assert!(link.silent && !link.usable, "{link:?}");
        // r2 is back and measures the link again; r3 no longer reports it silent. The link
        // stays out until SILENT_HOLD after the last silent report, then comes back.
        let back = t + Duration::from_millis(500);
        v.on_link_report("r2", Role::Relay, vec![report("r3", 5.0, 0.0)], back);
        v.on_link_report("r3", Role::Relay, vec![], back);
        assert_eq!(best(&v, back), ["r1", "r3"]);
        let after = t + SILENT_HOLD + Duration::from_millis(1);
        v.on_link_report("r1", Role::Relay, vec![report("r2", 5.0, 0.0), report("r3", 50.0, 0.0)], after);
        v.on_link_report("r2", Role::Relay, vec![report("r3", 5.0, 0.0)], after);
        assert_eq!(best(&v, after), ["r1", "r2", "r3"]);
        assert_eq!(v.path_problem(&path, 0.2, after), None);
    }

    #[test]
    fn stale_reports_and_down_relays_leave_the_graph() {
        let now = Instant::now();
        let mut v = view(now);
        // Two seconds on, r1's reports are stale (down after 1 s) — r2's is refreshed.
        let later = now + Duration::from_secs(2);
        v.on_link_report("r2", Role::Relay, vec![report("r3", 5.0, 0.0)], later);
        let links = v.links(later);
        assert!(links.iter().filter(|l| l.from == "r1").all(|l| !l.usable && l.age_ms == 2_000));
        let cut = v.graph(later).unwrap().k_shortest_paths("r1", "r3", 2);
        assert!(matches!(cut, Err(GraphError::Unreachable { .. })), "{cut:?}");
        // A relay that went down takes its links with it, fresh or not.
        let mut v = view(now);
        v.membership_mut().disconnected("r2", now);
        let paths = v.graph(now).unwrap().k_shortest_paths("r1", "r3", 2).unwrap();
        assert_eq!(paths.len(), 1);
        assert_eq!(paths[0].nodes, ["r1", "r3"]);
    }

    #[test]
    fn a_platform_must_be_a_known_site_that_is_up_and_measured() {
        let now = Instant::now();
        let mut v = view(now);
        let e = v.nearest_relay("r1").unwrap_err();
        assert!(
            matches!(&e, ConnectError::UnknownPlatform { known, .. } if known == "site-a, site-b"),
            "{e}"
        );
        assert!(matches!(v.nearest_relay("nowhere"), Err(ConnectError::UnknownPlatform { .. })));
        v.membership_mut().register("site-c", Role::Site, None, now).unwrap();
        let e = v.nearest_relay("site-c").unwrap_err();
        assert!(
            matches!(&e, ConnectError::Unavailable(why) if why.contains("no relay has been measured")),
            "{e}"
        );
        v.membership_mut().disconnected("site-a", now);
        let e = v.nearest_relay("site-a").unwrap_err();
        assert!(matches!(&e, ConnectError::Unavailable(why) if why.contains("down")), "{e}");
    }

    #[test]
    fn a_path_estimate_adds_up_the_reported_links() {
        let now = Instant::now();
        let mut v = view(now);
        v.on_link_report("r2", Role::Relay, vec![report("r3", 5.0, 0.5)], now);
        let e = v.path_estimate("site-a", "site-b", now).unwrap();
        assert_eq!(e.relays, ["r1", "r2", "r3"]);
        assert_eq!((e.rtt_ms, e.hops), (1.0 + 10.0 + 1.0, 2));
        assert!((e.loss - 0.5).abs() < 1e-9, "{e:?}");
        assert_eq!(v.path_estimate("site-a", "site-a", now).unwrap().hops, 0);
        assert_eq!(v.path_estimate("site-a", "nowhere", now), None);
    }

    #[test]
    fn a_changed_nearest_relay_is_reported_once() {
        let now = Instant::now();
        let mut v = view(now);
        let same =
            v.on_link_report("site-a", Role::Site, vec![report("r1", 1.0, 0.0), report("r3", 9.0, 0.0)], now);
        assert_eq!(same, None, "no change, nothing to report");
        // r3 becomes far better than r1 (past the hysteresis).
        let moved = v.on_link_report(
            "site-a",
            Role::Site,
            vec![report("r1", 50.0, 0.0), report("r3", 1.0, 0.0)],
            now,
        );
        assert_eq!(moved, Some((Some("r1".into()), Some("r3".into()))));
        assert_eq!(v.on_link_report("r1", Role::Relay, vec![report("r2", 5.0, 0.0)], now), None);
    }

    #[test]
    fn a_site_ignores_relays_that_are_down_or_lose_everything() {
        let now = Instant::now();
        let mut v = view(now);
        v.membership_mut().disconnected("r1", now);
        v.on_link_report("site-a", Role::Site, vec![report("r1", 1.0, 0.0), report("r3", 9.0, 0.0)], now);
        assert_eq!(v.nearest_relay("site-a").unwrap(), "r3", "r1 is down");
        let mut v = view(now);
        v.on_link_report("site-a", Role::Site, vec![report("r1", 1.0, 1.0), report("r2", 20.0, 0.0)], now);
        assert_eq!(v.nearest_relay("site-a").unwrap(), "r2", "r1 answers nothing");
        assert_eq!(v.platforms()[0].relays.len(), 2, "every measurement is still shown");
    }

    #[test]
    fn a_path_is_dead_when_a_relay_or_link_is_gone_and_degraded_when_lossy() {
        let now = Instant::now();
        let mut v = view(now);
        let path = hops(&["r1", "r2", "r3", "site-b"]);
        assert_eq!(v.path_problem(&path, 0.2, now), None);
        // Links count in either direction (r3 → r2 is reported as r2 → r3).
        assert_eq!(v.path_problem(&hops(&["r3", "r2", "site-a"]), 0.2, now), None);
        v.on_link_report("r2", Role::Relay, vec![report("r3", 5.0, 0.3)], now);
        let p = v.path_problem(&path, 0.2, now).unwrap();
        assert!(!p.dead && p.reason.contains("r2–r3 loses 30 %"), "{p:?}");
        assert_eq!(v.path_problem(&path, 0.5, now), None, "under the threshold");
        // The site at the end is not a relay: only relays and their links count.
        assert_eq!(v.path_problem(&hops(&["r1", "r3", "site-b"]), 0.2, now), None);
        let p = v.path_problem(&hops(&["r2", "r1", "r3", "site-b"]), 0.2, now);
        assert_eq!(p, None, "r2–r1 is r1–r2 reversed");
        let p = v.path_problem(&path, 0.2, now + Duration::from_secs(5)).unwrap();
        assert!(p.dead && p.reason.contains("is down"), "stale links are gone: {p:?}");
        v.membership_mut().disconnected("r2", now);
        let p = v.path_problem(&path, 0.2, now).unwrap();
        assert_eq!(p, PathProblem { dead: true, reason: "relay r2 is down".into() });
    }
}
