//! The site role: a platform's agent. It probes the relays it can reach (so the controller
//! can pick the nearest), registers with the controller, and asks it for connections.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::relay::{dial_and_watch, expire_tunnels};
use super::uplink::Uplink;
use crate::config::SiteConfig;
use crate::mesh::identity::Role;
use crate::mesh::messages::Control;
use crate::mesh::probe::Prober;
use crate::mesh::stream as control;
use crate::mesh::transport::MeshEndpoint;
use crate::path::DecisionRecord;
use crate::tunnel::hop::HopTable;

/// A running site.
pub struct Site {
    name: String,
    endpoint: Arc<MeshEndpoint>,
    controller: watch::Receiver<Option<quinn::Connection>>,
    tasks: JoinSet<()>,
}

impl Site {
    /// Bind, then run in the background: probe the relays, keep the controller session.
    pub fn start(config: SiteConfig) -> anyhow::Result<Site> {
        let identity = config.tls.load(&config.name, Role::Site)?;
        let endpoint = Arc::new(MeshEndpoint::bind(config.listen, identity, &[Role::Relay])?);
        let prober = Prober::new(&config.name, false);
        let endpoints = config.endpoints.iter().map(|e| (e.name.clone(), e.addr)).collect();
        let tunnels = HopTable::new(&config.name, endpoints, Arc::clone(prober.peers()));
        let mut tasks = JoinSet::new();
        tasks.spawn(expire_tunnels(Arc::clone(&tunnels)));
        dial_and_watch(&mut tasks, &endpoint, &prober, &tunnels, config.relays, config.probing);
        let (connection, controller) = watch::channel(None);
        let uplink = Uplink {
            endpoint: Arc::clone(&endpoint),
            role: Role::Site,
            listen: None,
            controller: config.controller,
            prober,
            tunnels,
            report_every: config.probing.report(),
            connection,
        };
        tasks.spawn(uplink.run());
        tracing::info!(site = %config.name, "site started");
        Ok(Site { name: config.name, endpoint, controller, tasks })
    }

    /// The site's (and its platform's) name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Wait until registered with the controller, at most `timeout`.
    pub async fn registered(&self, timeout: Duration) -> anyhow::Result<()> {
        let mut rx = self.controller.clone();
        tokio::time::timeout(timeout, rx.wait_for(Option::is_some))
            .await
            .context("not registered with the controller in time")?
            .context("site stopped")?;
        Ok(())
    }

    /// Ask the controller to connect this platform to `target`; returns the path decision.
    pub async fn connect(&self, target: &str) -> anyhow::Result<DecisionRecord> {
        let conn = self.controller.borrow().clone().context("not connected to the controller")?;
        match control::request(&conn, &Control::Connect { target: target.to_owned() }).await? {
            Control::Connected { decision } => Ok(*decision),
            other => bail!("unexpected answer to a connection request: {other:?}"),
        }
    }

    /// Stop: close every connection and end all tasks.
    pub fn shutdown(mut self) {
        self.endpoint.close();
        self.tasks.abort_all();
    }

    /// Run until the task set ends (it does not, unless shut down).
    pub async fn wait(&mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}
