//! A relay's or site's side of tunnels: the table of tunnels the controller set up through this
//! node, and (at a site) the streams that arrive on them.
//!
//! Setting a hop up installs its part of the data plane in the node's [`LabelSwitch`]: a relay
//! forwards the tunnel's labelled packets between its granted neighbours, unread; a site takes
//! them as the far end of the tunnel's end-to-end QUIC connection, whose streams
//! ([`serve_streams`]) it admits only from the controller that set the tunnel up, and carries
//! to the endpoint the grant names.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::grant::{HopGrant, HopKey, Next};
use super::splice::{self, Side};
use crate::mesh::frame::{DEFAULT_MAX_FRAME, encode};
use crate::mesh::messages::{Control, Fence, Refusal, RefusalCode};
use crate::mesh::socket::LabelSwitch;
use crate::mesh::stream::{read_frame, write_frame};

/// How long a hop waits for the rest of the path (or the endpoint) to connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

struct Entry {
    grant: HopGrant,
    /// The controller that set it up: the one end-to-end streams may come from.
    set_up_by: String,
    /// Set to true when the last tunnel holding it is torn down: every stream of the tunnel
    /// is aborted. A re-routed binding's new tunnel shares its predecessor's (`replaces`), so
    /// the streams under way outlive the old tunnel.
    cancel: Arc<watch::Sender<bool>>,
}

/// This node's tunnels.
pub struct HopTable {
    me: String,
    key: Mutex<Option<HopKey>>,
    tunnels: Mutex<HashMap<u64, Entry>>,
    /// For each binding of a group seen here: the newest owner epoch, and until when a grant
    /// for it may still be valid (then it is forgotten).
    epochs: Mutex<HashMap<u64, (u64, u64)>>,
    /// The endpoints a site publishes, by name; empty on relays.
    endpoints: BTreeMap<String, SocketAddr>,
    /// The node's label switch: forwarding entries (relays) and tunnel ends (sites).
    switch: Arc<LabelSwitch>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl HopTable {
    /// A table for node `me`, which publishes `endpoints` (sites) or none (relays), with the
    /// label switch of its mesh socket.
    pub fn new(me: &str, endpoints: BTreeMap<String, SocketAddr>, switch: Arc<LabelSwitch>) -> Arc<HopTable> {
        Arc::new(HopTable {
            me: me.to_owned(),
            switch,
            key: Mutex::new(None),
            tunnels: Mutex::new(HashMap::new()),
            epochs: Mutex::new(HashMap::new()),
            endpoints,
        })
    }

    /// Install the key the controller sent at registration.
    ///
    /// Returns whether it replaced a different key: controllers of one group hand out the
    /// same key, so a different one means grants of the others will be refused.
    pub fn set_key(&self, key: HopKey) -> bool {
        lock(&self.key).replace(key.clone()).is_some_and(|old| old != key)
    }

    /// The node's label switch (its forwarding entries and tunnel ends, and their counters).
    pub fn switch(&self) -> &Arc<LabelSwitch> {
        &self.switch
    }

    /// The tunnels set up here, by id.
    pub fn tunnels(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = lock(&self.tunnels).keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Set up a tunnel hop, as controller `set_up_by` asks, at `now_unix_ms`; `neighbour`
    /// gives the address a neighbour's packets come from (and go to).
    pub fn setup(
        &self,
        grant: HopGrant,
        token: &str,
        now_unix_ms: u64,
        set_up_by: &str,
        neighbour: impl Fn(&str) -> Option<SocketAddr>,
    ) -> Result<(), Refusal> {
        self.check(&grant, token, now_unix_ms)?;
        let address = |name: &str| {
            neighbour(name).ok_or_else(|| {
                let reason = format!("{name} is not connected to {}", self.me);
                Refusal { code: RefusalCode::NotReady, retry: true, reason }
            })
        };
        let prev = address(&grant.prev)?;
        let (tunnel, expires) = (grant.tunnel, grant.expires_unix_ms);
        match &grant.next {
            Next::Node(next) => {
                let next = address(next)?;
                self.switch.update(|s| s.forward(tunnel, prev, next, expires));
            }
            Next::Endpoint(_) => {
                let virtual_addr = self.switch.virtual_addr(tunnel).ok_or_else(|| {
                    Refusal::new(RefusalCode::BadRequest, format!("tunnel id {tunnel} is too large"))
                })?;
                self.switch.update(|s| s.route(virtual_addr, tunnel, prev, expires));
            }
        }
        if let Some(fence) = grant.fence {
            self.newer_epoch(fence, grant.expires_unix_ms);
        }
        let mut tunnels = lock(&self.tunnels);
        // Only the controller that set the replaced tunnel up may hand its streams on.
        let carried_on = grant
            .replaces
            .and_then(|old| tunnels.get(&old))
            .filter(|old| old.set_up_by == set_up_by)
            .map(|old| Arc::clone(&old.cancel));
        let cancel = carried_on.unwrap_or_else(|| Arc::new(watch::channel(false).0));
        let entry = Entry { grant, set_up_by: set_up_by.to_owned(), cancel };
        if let Some(old) = tunnels.insert(tunnel, entry) {
            cancel_if_last(old);
        }
        drop(tunnels);
        tracing::info!(node = %self.me, tunnel, "tunnel hop set up");
        Ok(())
    }

    /// Whether a setup request may be served at `now_unix_ms`: the grant is this hop's, signed
    /// with its key, unexpired, and leads somewhere this hop can send it.
    pub fn check(&self, grant: &HopGrant, token: &str, now_unix_ms: u64) -> Result<(), Refusal> {
        let key = lock(&self.key)
            .clone()
            .ok_or_else(|| Refusal::new(RefusalCode::NotReady, "no hop key yet (not registered)"))?;
        if grant.hop != self.me {
            let reason = format!("the grant is for {}, this is {}", grant.hop, self.me);
            return Err(Refusal::new(RefusalCode::Forbidden, reason));
        }
        if !key.verifies(grant, token) {
            return Err(Refusal::new(RefusalCode::Forbidden, "the grant's token does not verify"));
        }
        if grant.expires_unix_ms <= now_unix_ms {
            return Err(Refusal::new(RefusalCode::Forbidden, "the grant has expired"));
        }
        if let Some(stale) = grant.fence.and_then(|f| self.stale(f)) {
            return Err(stale);
        }
        match &grant.next {
            Next::Endpoint(e) if self.endpoint(e).is_none() => {
                let published: Vec<&str> = self.endpoints.keys().map(String::as_str).collect();
                let reason = format!(
                    "{} does not publish endpoint `{e}` (published: {})",
                    self.me,
                    if published.is_empty() { "none".into() } else { published.join(", ") }
                );
                Err(Refusal::new(RefusalCode::NotFound, reason))
            }
            _ => Ok(()),
        }
    }

    /// Why a grant fenced with `fence` is refused: another controller has owned its binding
    /// since (a newer epoch was seen here).
    fn stale(&self, fence: Fence) -> Option<Refusal> {
        let newest = lock(&self.epochs).get(&fence.binding).map(|(epoch, _)| *epoch)?;
        (fence.epoch < newest).then(|| {
            let reason = format!(
                "binding {}'s owner changed: epoch {} is older than {newest}, the one in force here",
                fence.binding, fence.epoch
            );
            Refusal::new(RefusalCode::Forbidden, reason)
        })
    }

    /// `fence`'s epoch is in force for its binding until at least `until_ms`: the binding's
    /// tunnels of older epochs go (their owner lost the binding).
    fn newer_epoch(&self, fence: Fence, until_ms: u64) {
        {
            let mut epochs = lock(&self.epochs);
            let entry = epochs.entry(fence.binding).or_insert((fence.epoch, until_ms));
            if fence.epoch < entry.0 {
                return;
            }
            *entry = (fence.epoch, entry.1.max(until_ms));
        }
        let older: Vec<u64> = lock(&self.tunnels)
            .iter()
            .filter(|(_, e)| {
                e.grant.fence.is_some_and(|f| f.binding == fence.binding && f.epoch < fence.epoch)
            })
            .map(|(id, _)| *id)
            .collect();
        for tunnel in older {
            tracing::warn!(
                node = %self.me, tunnel, binding = fence.binding,
                "a newer owner of the binding set a tunnel up: the older owner's tunnel goes"
            );
            self.teardown(tunnel);
        }
    }

    /// A published endpoint by name — or by port number, when exactly one published endpoint
    /// has that port (so `CONNECT site:8080` works for clients that need numeric ports).
    pub fn endpoint(&self, name: &str) -> Option<SocketAddr> {
        if let Some(addr) = self.endpoints.get(name) {
            return Some(*addr);
        }
        let port: u16 = name.parse().ok()?;
        let mut by_port = self.endpoints.values().filter(|a| a.port() == port);
        match (by_port.next(), by_port.next()) {
            (Some(addr), None) => Some(*addr),
            _ => None,
        }
    }

    /// Tear a tunnel down, aborting its streams. Whether it existed.
    pub fn teardown(&self, tunnel: u64) -> bool {
        self.switch.update(|s| s.remove(tunnel));
        // Under the table's lock, so that of two tunnels sharing their streams torn down at
        // once, exactly the last one aborts them.
        let existed = {
            let mut tunnels = lock(&self.tunnels);
            tunnels.remove(&tunnel).map(cancel_if_last).is_some()
        };
        if existed {
            tracing::info!(node = %self.me, tunnel, "tunnel hop torn down");
        }
        existed
    }

    /// Drop tunnels whose grants have expired by `now_unix_ms` (their streams are aborted).
    pub fn expire(&self, now_unix_ms: u64) {
        let now = now_unix_ms;
        let expired: Vec<u64> = lock(&self.tunnels)
            .iter()
            .filter(|(_, e)| e.grant.expires_unix_ms <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.teardown(id);
        }
        self.switch.update(|s| s.expire(now));
        // An epoch is kept as long as a grant of its binding may be valid.
        lock(&self.epochs).retain(|_, (_, until)| *until > now);
    }

    /// Check a `TunnelOpen` from `peer` on an end-to-end connection: the tunnel must be set up
    /// here, end here (lead to an endpoint), have been set up by `peer`, and the token must be
    /// this hop's own, the grant unexpired at `now_unix_ms`. The endpoint, and the tunnel's
    /// cancellation.
    fn admit(
        &self,
        peer: &str,
        tunnel: u64,
        token: &str,
        now_unix_ms: u64,
    ) -> Result<(String, watch::Receiver<bool>), Refusal> {
        let refuse = |code, reason: String| Err(Refusal::new(code, reason));
        let Some(key) = lock(&self.key).clone() else {
            return refuse(RefusalCode::NotReady, format!("{} is not registered", self.me));
        };
        let tunnels = lock(&self.tunnels);
        let Some(entry) = tunnels.get(&tunnel) else {
            return refuse(RefusalCode::NotFound, format!("no tunnel {tunnel} at {}", self.me));
        };
        let endpoint = match &entry.grant.next {
            Next::Endpoint(endpoint) if entry.set_up_by == peer => endpoint.clone(),
            _ => {
                let reason = format!("tunnel {tunnel} is not open to {peer} at {}", self.me);
                return refuse(RefusalCode::Forbidden, reason);
            }
        };
        if let Some(stale) = entry.grant.fence.and_then(|f| self.stale(f)) {
            return Err(stale);
        }
        if !key.verifies(&entry.grant, token) {
            return refuse(
                RefusalCode::Forbidden,
                format!("invalid token for tunnel {tunnel} at {}", self.me),
            );
        }
        if entry.grant.expires_unix_ms <= now_unix_ms {
            return refuse(RefusalCode::Forbidden, format!("tunnel {tunnel} has expired"));
        }
        Ok((endpoint, entry.cancel.subscribe()))
    }

    /// Carry a tunnel stream that `peer` opened with `TunnelOpen { tunnel, token }` (already
    /// read): connect to the endpoint, answer, then splice until the stream ends.
    pub async fn carry(
        &self,
        peer: &str,
        tunnel: u64,
        token: &str,
        mut up_send: quinn::SendStream,
        mut up_recv: quinn::RecvStream,
    ) {
        let onward = match self.admit(peer, tunnel, token, crate::time::now_unix_ms()) {
            Ok((endpoint, cancel)) => {
                // Whatever the client sent in the first flight goes to the endpoint as soon as
                // it is connected. (An end of stream seen here stays for the splice to see.)
                let mut early = Vec::new();
                if let Err(e) = splice::take_arrived(&mut up_recv, &mut early, EARLY_MAX) {
                    tracing::debug!(node = %self.me, %peer, tunnel, "tunnel stream failed at once: {e}");
                    return;
                }
                self.connect_endpoint(&endpoint, early)
                    .await
                    .map(|s| (s, cancel))
                    .map_err(|reason| Refusal::new(RefusalCode::Unavailable, reason))
            }
            Err(refusal) => Err(refusal),
        };
        let (onward, cancel) = match onward {
            Ok(ok) => ok,
            Err(refusal) => {
                tracing::warn!(node = %self.me, %peer, tunnel, "tunnel stream refused: {refusal}");
                let _ = write_frame(&mut up_send, &refusal.to_control()).await;
                let _ = up_send.finish();
                return;
            }
        };
        if write_frame(&mut up_send, &Control::TunnelOpened).await.is_err() {
            return;
        }
        if let (_, Err(e)) = splice::splice(Side::Quic(up_send, up_recv), onward, cancel, None).await {
            tracing::debug!(node = %self.me, tunnel, "tunnel stream ended with an error: {e}");
        }
    }

    /// Connect to published endpoint `endpoint` and send it the client's `early` bytes.
    async fn connect_endpoint(&self, endpoint: &str, early: Vec<bytes::Bytes>) -> Result<Side, String> {
        let addr =
            self.endpoint(endpoint).ok_or_else(|| format!("{} does not publish `{endpoint}`", self.me))?;
        let mut tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| format!("{}: endpoint `{endpoint}` ({addr}) did not accept in time", self.me))?
            .map_err(|e| format!("{}: endpoint `{endpoint}` ({addr}): {e}", self.me))?;
        let _ = tcp.set_nodelay(true);
        for chunk in early {
            tcp.write_all(&chunk)
                .await
                .map_err(|e| format!("{}: endpoint `{endpoint}` ({addr}): {e}", self.me))?;
        }
        Ok(Side::Tcp(tcp))
    }
}

/// Abort a removed tunnel's streams, unless a tunnel that replaced it (or that it replaced)
/// still carries them. Called under the table's lock.
fn cancel_if_last(entry: Entry) {
    if Arc::strong_count(&entry.cancel) == 1 {
        entry.cancel.send_replace(true);
    }
}

/// Most bytes of a client's first flight sent on with a tunnel stream's opening frame.
pub const EARLY_MAX: usize = 16 * 1024;

/// Open a tunnel stream on `conn` (a binding's end-to-end connection) presenting the site's
/// `token`, with the client's `early` bytes in the same flight, and wait until the site
/// answers (once the endpoint is connected). On success the stream is ready for raw bytes.
/// (Early bytes spare a client that speaks first a round trip; if the site refuses, they are
/// dropped with the stream.)
pub async fn open(
    conn: &quinn::Connection,
    tunnel: u64,
    token: String,
    early: Vec<bytes::Bytes>,
) -> anyhow::Result<(quinn::SendStream, quinn::RecvStream)> {
    let (mut send, mut recv) = conn.open_bi().await?;
    let mut flight = Vec::with_capacity(1 + early.len());
    flight.push(bytes::Bytes::from(encode(&Control::TunnelOpen { tunnel, token }, DEFAULT_MAX_FRAME)?));
    flight.extend(early);
    send.write_all_chunks(&mut flight).await.context("sending the opening frame")?;
    match read_frame(&mut recv, CONNECT_TIMEOUT).await? {
        Control::TunnelOpened => Ok((send, recv)),
        Control::Refused { code, retry, reason } => Err(Refusal { code, retry, reason }.into()),
        other => anyhow::bail!("unexpected answer {other:?}"),
    }
}

/// Serve the tunnel streams controller `peer` opens on its end-to-end connection `conn`, until
/// it closes. Nothing else may be opened there.
pub async fn serve_streams(table: Arc<HopTable>, conn: quinn::Connection, peer: String) {
    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
        let (table, peer) = (Arc::clone(&table), peer.clone());
        tokio::spawn(async move {
            let reason = match read_frame(&mut recv, CONNECT_TIMEOUT).await {
                Ok(Control::TunnelOpen { tunnel, token }) => {
                    return table.carry(&peer, tunnel, &token, send, recv).await;
                }
                Ok(other) => format!("only tunnel streams are opened here, not {other:?}"),
                Err(e) => format!("{e:#}"),
            };
            tracing::warn!(node = %table.me, %peer, "stream refused: {reason}");
            let _ = write_frame(&mut send, &Control::refused(RefusalCode::BadRequest, reason)).await;
            let _ = send.finish();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::switch::{Dropped, Verdict};
    use crate::tunnel::setup;

    const SECRET: [u8; 32] = [3u8; 32];

    /// Every neighbour at one address.
    fn anywhere(_: &str) -> Option<SocketAddr> {
        Some(SocketAddr::from(([127, 0, 0, 1], 9)))
    }

    /// r2's table, registered (it has its key), and a tunnel r1 → r2 → site-b planned.
    fn table() -> (Arc<HopTable>, setup::SetupPlan) {
        let table = HopTable::new("r2", BTreeMap::new(), LabelSwitch::new(false));
        table.set_key(HopKey::derive(&SECRET, "r2"));
        let path: Vec<String> = ["r1", "r2", "site-b"].map(String::from).into();
        let plan = setup::plan(
            7,
            "controller",
            &path,
            setup::Target { endpoint: "web", account: "acme", capability: None, fence: None, replaces: None },
            10_000,
            |n| HopKey::derive(&SECRET, n),
        );
        (table, plan)
    }

    fn set_up(table: &HopTable, plan: &setup::SetupPlan, now: u64) -> Result<(), Refusal> {
        let hop = &plan.hops[1];
        table.setup(hop.grant.clone(), &hop.token, now, "controller", anywhere)
    }

    /// site-b's table, registered, publishing `web`.
    fn site() -> Arc<HopTable> {
        let endpoints: BTreeMap<String, SocketAddr> = [("web".to_owned(), anywhere("").unwrap())].into();
        let site = HopTable::new("site-b", endpoints, LabelSwitch::new(false));
        site.set_key(HopKey::derive(&SECRET, "site-b"));
        site
    }

    /// Set `plan`'s last hop up at `site`, as `controller` asks.
    fn set_up_end(site: &HopTable, plan: &setup::SetupPlan, now: u64) -> Result<(), Refusal> {
        let end = &plan.hops[2];
        site.setup(end.grant.clone(), &end.token, now, "controller", anywhere)
    }

    /// Binding 4's tunnel `tunnel` through r1 → r2 → site-b, as its owner of `epoch` plans it.
    fn fenced(tunnel: u64, epoch: u64) -> setup::SetupPlan {
        let path: Vec<String> = ["r1", "r2", "site-b"].map(String::from).into();
        let fence = Some(Fence { binding: 4, epoch });
        let target =
            setup::Target { endpoint: "web", account: "acme", capability: None, fence, replaces: None };
        setup::plan(tunnel, "c1", &path, target, 10_000, |n| HopKey::derive(&SECRET, n))
    }

    #[test]
    fn a_newer_owner_epoch_drops_the_bindings_older_tunnels_and_refuses_older_grants() {
        let (table, unrelated) = table();
        let (old, new) = (fenced(20, 5), fenced(21, 9));
        set_up(&table, &old, 1).unwrap();
        set_up(&table, &unrelated, 1).unwrap();
        assert_eq!(table.tunnels(), [7, 20], "the owner's tunnel is set up");
        // The binding's new owner sets its tunnel up: the old owner's tunnel goes, others stay.
        set_up(&table, &new, 3).unwrap();
        assert_eq!(table.tunnels(), [7, 21]);
        // The old owner (paused, then woken) can neither set a tunnel up again nor open one.
        let again = fenced(22, 5);
        let e = set_up(&table, &again, 4).unwrap_err();
        assert!(e.reason.contains("owner changed") && e.code == RefusalCode::Forbidden, "{e}");
        assert!(!table.tunnels().contains(&20), "its tunnel is gone");
        assert!(table.switch.read(|s| !s.labels().contains(&20)), "and forwards nothing");
        // The epoch is kept while a grant of the binding may be valid, then forgotten.
        table.expire(9_999);
        assert!(set_up(&table, &fenced(23, 5), 9_999).is_err(), "still fenced");
        table.expire(10_000);
        assert!(lock(&table.epochs).is_empty());
    }

    #[test]
    fn a_grant_is_taken_until_it_expires_and_refused_after() {
        let (table, plan) = table();
        let site = site();
        set_up(&table, &plan, 9_999).unwrap();
        set_up_end(&site, &plan, 9_999).unwrap();
        assert_eq!(table.tunnels(), [7]);
        let token = &plan.hops[2].token;
        assert!(site.admit("controller", 7, token, 9_999).is_ok());
        let late = site.admit("controller", 7, token, 10_000).unwrap_err();
        assert_eq!((late.code, late.reason.as_str()), (RefusalCode::Forbidden, "tunnel 7 has expired"));
        let at = anywhere("").unwrap();
        assert_eq!(table.switch.read(|s| s.arriving(7, at, 10_000)), Verdict::Drop(Dropped::Expired));
        table.expire(9_999);
        assert_eq!(table.tunnels(), [7], "not yet");
        table.expire(10_000);
        assert!(table.tunnels().is_empty(), "expired grants are dropped");
        assert_eq!(table.switch.read(|s| s.arriving(7, at, 0)), Verdict::Drop(Dropped::UnknownLabel));
        let e = set_up(&table, &plan, 10_000).unwrap_err();
        assert_eq!(e.reason, "the grant has expired");
    }

    #[test]
    fn only_the_controller_that_set_a_tunnel_up_with_the_sites_token_opens_streams_on_it() {
        let (_, plan) = table();
        let site = site();
        set_up_end(&site, &plan, 0).unwrap();
        let token = plan.hops[2].token.clone();
        let stranger = site.admit("c9", 7, &token, 0).unwrap_err();
        assert_eq!(stranger.code, RefusalCode::Forbidden);
        assert!(stranger.reason.contains("not open to c9"), "{stranger}");
        // r2's token is for r2, not the site.
        let wrong = site.admit("controller", 7, &plan.hops[1].token, 0).unwrap_err();
        assert!(wrong.reason.contains("invalid token"), "{wrong}");
        let unknown = site.admit("controller", 8, &token, 0).unwrap_err();
        assert_eq!(unknown.code, RefusalCode::NotFound);
        let (endpoint, _) = site.admit("controller", 7, &token, 0).unwrap();
        assert_eq!(endpoint, "web");
        assert!(site.teardown(7) && !site.teardown(7));
        // A relay is no tunnel's end: nothing is admitted there.
        let (relay, plan) = table();
        set_up(&relay, &plan, 0).unwrap();
        let e = relay.admit("controller", 7, &plan.hops[1].token, 0).unwrap_err();
        assert!(e.reason.contains("not open to controller"), "{e}");
    }

    #[test]
    fn without_a_key_a_setup_is_refused_as_worth_a_retry() {
        let table = HopTable::new("r2", BTreeMap::new(), LabelSwitch::new(false));
        let (_, plan) = self::table();
        let e = set_up(&table, &plan, 0).unwrap_err();
        assert_eq!(e.code, RefusalCode::NotReady);
        assert!(e.retry, "a retry may help once the node has registered");
        // A grant for another node, or a forged token, is refused for good.
        table.set_key(HopKey::derive(&SECRET, "r2"));
        let for_r1 = &plan.hops[0];
        let e = table.setup(for_r1.grant.clone(), &for_r1.token, 0, "c", anywhere).unwrap_err();
        assert!(!e.retry && e.reason.contains("the grant is for r1"), "{e}");
        let e = table.setup(plan.hops[1].grant.clone(), "00", 0, "c", anywhere).unwrap_err();
        assert!(!e.retry && e.code == RefusalCode::Forbidden, "{e}");
    }

    #[test]
    fn a_hop_installs_its_forwarding_entry_and_a_site_its_tunnel_end_admitting_only_its_controller() {
        let at = |last: u8| SocketAddr::from(([127, 0, 0, last], 4000));
        let neighbours = |name: &str| match name {
            "r1" => Some(at(1)),
            "r2" => Some(at(2)),
            "site-b" => Some(at(3)),
            _ => None,
        };
        // r2 forwards tunnel 7 between r1 and site-b.
        let (table, plan) = table();
        let hop = &plan.hops[1];
        table.setup(hop.grant.clone(), &hop.token, 0, "controller", neighbours).unwrap();
        assert_eq!(table.switch.read(|s| s.arriving(7, at(1), 0)), Verdict::Forward(at(3)));
        assert_eq!(table.switch.read(|s| s.arriving(7, at(3), 0)), Verdict::Forward(at(1)));
        table.teardown(7);
        assert!(table.switch.read(|s| s.labels().is_empty()), "torn down with the hop");
        // A neighbour this node has no connection with: worth a retry, nothing installed.
        let e = table.setup(hop.grant.clone(), &hop.token, 0, "c", |_| None).unwrap_err();
        assert!(
            e.code == RefusalCode::NotReady && e.retry && e.reason.contains("r1 is not connected"),
            "{e}"
        );
        assert!(table.tunnels().is_empty() && table.switch.read(|s| s.labels().is_empty()));

        // site-b is tunnel 7's end: its packets from r2 arrive from the tunnel's virtual address.
        let endpoints: BTreeMap<String, SocketAddr> = [("web".to_owned(), at(9))].into();
        let site = HopTable::new("site-b", endpoints, LabelSwitch::new(false));
        site.set_key(HopKey::derive(&SECRET, "site-b"));
        let end = &plan.hops[2];
        site.setup(end.grant.clone(), &end.token, 0, "controller", neighbours).unwrap();
        let virtual_addr = site.switch.virtual_addr(7).unwrap();
        assert_eq!(site.switch.read(|s| s.arriving(7, at(2), 0)), Verdict::Deliver(virtual_addr));
        assert_eq!(site.switch.read(|s| s.departing(virtual_addr)), Some((7, at(2))));
        // Its streams are admitted from the controller that set it up, no other.
        assert!(site.admit("controller", 7, &end.token, 0).is_ok());
        assert!(site.admit("r2", 7, &end.token, 0).is_err());
    }

    #[test]
    fn a_re_routed_tunnel_carries_its_predecessors_streams_on_until_both_are_gone() {
        let site = site();
        let tunnel = |id: u64, replaces: Option<u64>| {
            let path: Vec<String> = ["r1", "site-b"].map(String::from).into();
            let target =
                setup::Target { endpoint: "web", account: "acme", capability: None, fence: None, replaces };
            let plan = setup::plan(id, "controller", &path, target, 10_000, |n| HopKey::derive(&SECRET, n));
            plan.hops[1].clone()
        };
        let set_up = |hop: &setup::HopSetup, by: &str| {
            site.setup(hop.grant.clone(), &hop.token, 0, by, anywhere).unwrap();
        };
        let stream_of =
            |hop: &setup::HopSetup| site.admit("controller", hop.grant.tunnel, &hop.token, 0).unwrap().1;
        // Tunnel 7 carries a stream; 8 replaces it (a re-route), then 7 is torn down.
        let (seven, eight) = (tunnel(7, None), tunnel(8, Some(7)));
        set_up(&seven, "controller");
        let stream = stream_of(&seven);
        set_up(&eight, "controller");
        assert!(site.teardown(7));
        assert!(!*stream.borrow(), "the stream carries on over the new tunnel");
        let later = stream_of(&eight);
        assert!(site.teardown(8));
        assert!(*stream.borrow() && *later.borrow(), "both end with the last tunnel");

        // Another controller cannot take over a tunnel's streams by naming it.
        let (nine, ten) = (tunnel(9, None), tunnel(10, Some(9)));
        set_up(&nine, "controller");
        let stream = stream_of(&nine);
        set_up(&ten, "c2");
        assert!(site.teardown(9));
        assert!(*stream.borrow(), "torn down with its own tunnel");
    }

    #[test]
    fn a_site_refuses_an_endpoint_it_does_not_publish_naming_those_it_does() {
        let endpoints: BTreeMap<String, SocketAddr> =
            [("web".to_owned(), "127.0.0.1:8080".parse().unwrap())].into();
        let site = HopTable::new("site-b", endpoints, LabelSwitch::new(false));
        site.set_key(HopKey::derive(&SECRET, "site-b"));
        let path: Vec<String> = ["r1", "site-b"].map(String::from).into();
        let plan = setup::plan(
            1,
            "controller",
            &path,
            setup::Target { endpoint: "db", account: "acme", capability: None, fence: None, replaces: None },
            10,
            |n| HopKey::derive(&SECRET, n),
        );
        let hop = &plan.hops[1];
        let e = site.setup(hop.grant.clone(), &hop.token, 0, "c", anywhere).unwrap_err();
        assert_eq!(e.code, RefusalCode::NotFound);
        assert_eq!(e.reason, "site-b does not publish endpoint `db` (published: web)");
        assert_eq!(site.endpoint("8080"), site.endpoint("web"), "a unique port names its endpoint");
    }
}
