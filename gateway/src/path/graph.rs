//! The link-state graph and k-shortest loop-free paths over it (Yen's algorithm on Dijkstra).
//!
//! Nodes are relays named by string; links are undirected and weighted by their measured
//! latency in milliseconds. Nodes or links that are down are simply absent from the graph.
//! Everything here is deterministic: equal-cost paths are ordered by their node names.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashSet};

/// A relay's name in the mesh.
pub type NodeId = String;

/// A loop-free path through the graph, from the first to the last node, with its total cost.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Path {
    /// The relays in order, endpoints included.
    pub nodes: Vec<NodeId>,
    /// Sum of the link costs (ms of latency).
    pub cost_ms: f64,
}

impl Path {
    /// Number of relay-to-relay hops.
    pub fn hops(&self) -> u32 {
        u32::try_from(self.nodes.len().saturating_sub(1)).unwrap_or(u32::MAX)
    }
}

/// Why a path query failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError {
    /// A node named in the query is not in the graph (unknown, or down).
    #[error("relay `{0}` is not in the link-state graph (unknown or down)")]
    UnknownNode(NodeId),
    /// The two nodes are not connected.
    #[error("no path from `{from}` to `{to}` over the current links")]
    Unreachable {
        /// Start.
        from: NodeId,
        /// End.
        to: NodeId,
    },
    /// A link cost must be finite and non-negative.
    #[error("link {a} – {b} has an invalid cost {cost}")]
    InvalidCost {
        /// One end.
        a: NodeId,
        /// Other end.
        b: NodeId,
        /// The cost given.
        cost: f64,
    },
}

/// An undirected, weighted graph of relays.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    index: BTreeMap<NodeId, usize>,
    names: Vec<NodeId>,
    /// Adjacency lists, sorted by neighbour index for determinism.
    adjacent: Vec<Vec<(usize, f64)>>,
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a node (no-op if present). Returns its index.
    pub fn add_node(&mut self, name: &str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.names.len();
        self.index.insert(name.to_owned(), i);
        self.names.push(name.to_owned());
        self.adjacent.push(Vec::new());
        i
    }

    /// Add or update the undirected link `a – b` with `cost_ms`.
    pub fn set_link(&mut self, a: &str, b: &str, cost_ms: f64) -> Result<(), GraphError> {
        if !cost_ms.is_finite() || cost_ms < 0.0 {
            return Err(GraphError::InvalidCost { a: a.to_owned(), b: b.to_owned(), cost: cost_ms });
        }
        let (ia, ib) = (self.add_node(a), self.add_node(b));
        if ia == ib {
            return Ok(());
        }
        for (from, to) in [(ia, ib), (ib, ia)] {
            let list = &mut self.adjacent[from];
            match list.binary_search_by_key(&to, |&(n, _)| n) {
                Ok(pos) => list[pos].1 = cost_ms,
                Err(pos) => list.insert(pos, (to, cost_ms)),
            }
        }
        Ok(())
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.names.len()
    }

    /// Whether `name` is a node.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Up to `k` loop-free paths from `from` to `to`, cheapest first (Yen's algorithm).
    pub fn k_shortest_paths(&self, from: &str, to: &str, k: usize) -> Result<Vec<Path>, GraphError> {
        let source = self.node(from)?;
        let target = self.node(to)?;
        if k == 0 {
            return Ok(Vec::new());
        }
        let mut banned = Bans::new(self.names.len());
        let Some(first) = self.dijkstra(source, target, &banned) else {
            return Err(GraphError::Unreachable { from: from.to_owned(), to: to.to_owned() });
        };
        let mut found: Vec<(f64, Vec<usize>)> = vec![first];
        // Candidates not yet taken, ordered by (cost, node names), deduplicated.
        let mut pending: BTreeSet<Candidate> = BTreeSet::new();
        let mut seen: HashSet<Vec<usize>> = HashSet::new();
        seen.insert(found[0].1.clone());

        while found.len() < k {
            let (_, last) = &found[found.len() - 1];
            for spur_at in 0..last.len().saturating_sub(1) {
                let spur = last[spur_at];
                let root = &last[..=spur_at];
                banned.clear(spur);
                // Links that previous paths took out of this root may not be taken again.
                for (_, p) in &found {
                    if p.len() > spur_at + 1 && p[..=spur_at] == *root {
                        banned.spur_next.push(p[spur_at + 1]);
                    }
                }
                // The root's nodes (before the spur) may not be revisited: paths stay loop-free.
                for &n in &root[..spur_at] {
                    banned.nodes[n] = true;
                }
                if let Some((_, spur_path)) = self.dijkstra(spur, target, &banned) {
                    let mut nodes = root[..spur_at].to_vec();
                    nodes.extend(spur_path);
                    if seen.insert(nodes.clone()) {
                        let cost = self.cost(&nodes);
                        pending.insert(Candidate { cost, names: self.names_of(&nodes), nodes });
                    }
                }
            }
            let Some(best) = pending.pop_first() else { break };
            found.push((best.cost, best.nodes));
        }
        Ok(found.into_iter().map(|(cost_ms, nodes)| Path { nodes: self.names_of(&nodes), cost_ms }).collect())
    }

    fn node(&self, name: &str) -> Result<usize, GraphError> {
        self.index.get(name).copied().ok_or_else(|| GraphError::UnknownNode(name.to_owned()))
    }

    fn names_of(&self, nodes: &[usize]) -> Vec<NodeId> {
        nodes.iter().map(|&n| self.names[n].clone()).collect()
    }

    fn cost(&self, nodes: &[usize]) -> f64 {
        nodes
            .windows(2)
            .map(|w| {
                let list = &self.adjacent[w[0]];
                list.binary_search_by_key(&w[1], |&(n, _)| n).map(|i| list[i].1).unwrap_or(f64::INFINITY)
            })
            .sum()
    }

    /// Cheapest path avoiding `banned`, ties broken by the lower node index at each step.
    fn dijkstra(&self, source: usize, target: usize, banned: &Bans) -> Option<(f64, Vec<usize>)> {
        if banned.nodes[source] || banned.nodes[target] {
            return None;
        }
        let n = self.names.len();
        let mut dist = vec![f64::INFINITY; n];
        let mut prev = vec![usize::MAX; n];
        let mut heap = BinaryHeap::new();
        dist[source] = 0.0;
        heap.push(HeapItem { cost: 0.0, node: source });
        while let Some(HeapItem { cost, node }) = heap.pop() {
            if node == target {
                break;
            }
            if cost > dist[node] {
                continue;
            }
            for &(next, w) in &self.adjacent[node] {
                if banned.nodes[next] || (node == banned.spur && banned.spur_next.contains(&next)) {
                    continue;
                }
                let c = cost + w;
                if c < dist[next] || (c == dist[next] && node < prev[next]) {
                    dist[next] = c;
                    prev[next] = node;
                    heap.push(HeapItem { cost: c, node: next });
                }
            }
        }
        if dist[target].is_infinite() {
            return None;
        }
        let mut path = vec![target];
        let mut at = target;
        while at != source {
            at = prev[at];
            path.push(at);
        }
        path.reverse();
        Some((dist[target], path))
    }
}

/// Nodes a spur search may not visit, and links it may not take. In Yen's algorithm every
/// banned link leaves the spur node, so only those next hops are kept.
struct Bans {
    nodes: Vec<bool>,
    spur: usize,
    spur_next: Vec<usize>,
}

impl Bans {
    fn new(n: usize) -> Self {
        Bans { nodes: vec![false; n], spur: usize::MAX, spur_next: Vec::new() }
    }

    fn clear(&mut self, spur: usize) {
        self.nodes.iter_mut().for_each(|b| *b = false);
        self.spur = spur;
        self.spur_next.clear();
    }
}

#[derive(Debug, PartialEq)]
struct HeapItem {
    cost: f64,
    node: usize,
}

impl Eq for HeapItem {}

impl Ord for HeapItem {
    fn cmp(&self, other: &Self) -> Ordering {
        // Min-heap on cost, then on node index.
        other.cost.total_cmp(&self.cost).then_with(|| other.node.cmp(&self.node))
    }
}

impl PartialOrd for HeapItem {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Debug, PartialEq)]
struct Candidate {
    cost: f64,
    names: Vec<NodeId>,
    nodes: Vec<usize>,
}

impl Eq for Candidate {}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.cost.total_cmp(&other.cost).then_with(|| self.names.cmp(&other.names))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(links: &[(&str, &str, f64)]) -> Graph {
        let mut g = Graph::new();
        for (a, b, c) in links {
            g.set_link(a, b, *c).unwrap();
        }
        g
    }

    fn names(p: &Path) -> String {
        p.nodes.join("-")
    }

    #[test]
    fn diamond_yields_both_branches_cheapest_first() {
        let g = graph(&[("R1", "R2", 30.0), ("R2", "R4", 30.0), ("R1", "R3", 5.0), ("R3", "R4", 5.0)]);
        let paths = g.k_shortest_paths("R1", "R4", 4).unwrap();
        let got: Vec<(String, f64)> = paths.iter().map(|p| (names(p), p.cost_ms)).collect();
        assert_eq!(got, [("R1-R3-R4".to_owned(), 10.0), ("R1-R2-R4".to_owned(), 60.0)]);
        assert_eq!(paths[0].hops(), 2);
    }

    #[test]
    fn yen_on_the_classic_example_graph_undirected() {
        // The graph of the usual Yen's example, taken as undirected (checked by hand): the
        // second-cheapest paths tie at 7 and are ordered by node names; 8s come after.
        let g = graph(&[
            ("C", "D", 3.0),
            ("C", "E", 2.0),
            ("D", "F", 4.0),
            ("E", "D", 1.0),
            ("E", "F", 2.0),
            ("E", "G", 3.0),
            ("F", "G", 2.0),
            ("F", "H", 1.0),
            ("G", "H", 2.0),
        ]);
        let paths = g.k_shortest_paths("C", "H", 3).unwrap();
        let got: Vec<(String, f64)> = paths.iter().map(|p| (names(p), p.cost_ms)).collect();
        assert_eq!(
            got,
            [("C-E-F-H".to_owned(), 5.0), ("C-D-E-F-H".to_owned(), 7.0), ("C-E-G-H".to_owned(), 7.0)]
        );
    }

    #[test]
    fn paths_are_loop_free_distinct_and_sorted() {
        // A 4×4 grid with varied costs.
        let mut g = Graph::new();
        for r in 0..4 {
            for c in 0..4 {
                let me = format!("n{r}{c}");
                if c + 1 < 4 {
                    g.set_link(&me, &format!("n{r}{}", c + 1), f64::from(1 + (r * 3 + c) % 5)).unwrap();
                }
                if r + 1 < 4 {
                    g.set_link(&me, &format!("n{}{c}", r + 1), f64::from(1 + (r + c * 2) % 4)).unwrap();
                }
            }
        }
        let paths = g.k_shortest_paths("n00", "n33", 12).unwrap();
        assert_eq!(paths.len(), 12);
        let mut seen = HashSet::new();
        for w in paths.windows(2) {
            assert!(w[0].cost_ms <= w[1].cost_ms, "sorted by cost");
        }
        for p in &paths {
            assert!(seen.insert(p.nodes.clone()), "distinct");
            let unique: HashSet<_> = p.nodes.iter().collect();
            assert_eq!(unique.len(), p.nodes.len(), "loop-free: {}", names(p));
            assert_eq!((p.nodes[0].as_str(), p.nodes[p.nodes.len() - 1].as_str()), ("n00", "n33"));
            // The reported cost is the sum of the links.
            let sum: f64 = p.nodes.windows(2).map(|w| g.cost(&[g.index[&w[0]], g.index[&w[1]]])).sum();
            assert_eq!(sum, p.cost_ms);
        }
        // Repeated queries give identical answers (determinism).
        assert_eq!(paths, g.k_shortest_paths("n00", "n33", 12).unwrap());
    }

    #[test]
    fn fewer_paths_than_k_when_the_graph_has_fewer() {
        let g = graph(&[("A", "B", 1.0), ("B", "C", 1.0)]);
        assert_eq!(g.k_shortest_paths("A", "C", 5).unwrap().len(), 1);
        assert_eq!(g.k_shortest_paths("A", "C", 0).unwrap().len(), 0);
    }

    #[test]
    fn errors_name_the_problem() {
        let mut g = graph(&[("A", "B", 1.0)]);
        g.add_node("Z");
        assert_eq!(g.k_shortest_paths("A", "Q", 1), Err(GraphError::UnknownNode("Q".into())));
        assert!(matches!(g.k_shortest_paths("A", "Z", 1), Err(GraphError::Unreachable { .. })));
        assert!(matches!(g.set_link("A", "B", f64::NAN), Err(GraphError::InvalidCost { .. })));
        assert!(matches!(g.set_link("A", "B", -1.0), Err(GraphError::InvalidCost { .. })));
    }

    #[test]
    fn updating_a_link_changes_the_best_path() {
        let mut g = graph(&[("R1", "R2", 10.0), ("R2", "R4", 10.0), ("R1", "R3", 12.0), ("R3", "R4", 12.0)]);
        assert_eq!(names(&g.k_shortest_paths("R1", "R4", 1).unwrap()[0]), "R1-R2-R4");
        g.set_link("R2", "R4", 50.0).unwrap();
        assert_eq!(names(&g.k_shortest_paths("R1", "R4", 1).unwrap()[0]), "R1-R3-R4");
    }
}
