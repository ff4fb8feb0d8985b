//! The controller role: the [`Controller`] itself, the admin API above it, and the ingress's
//! CONNECT proxy, all started here and stopped by one shutdown signal.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

use crate::config::ControllerConfig;
use crate::controller::Controller;
use crate::shutdown::Shutdown;

/// A running controller: its mesh endpoint, admin API and CONNECT proxy.
pub struct ControllerHandle {
    controller: Arc<Controller>,
    mesh_addr: SocketAddr,
    admin_addr: SocketAddr,
    connect_addr: Option<SocketAddr>,
    /// Taken by the first stop.
    shutdown: Option<Shutdown>,
}

/// Start a controller from its configuration (its store on redb: see [`start_with`]).
pub async fn start(config: ControllerConfig) -> anyhow::Result<ControllerHandle> {
    start_with(config, None).await
}

/// Start a controller from its configuration; `etcd` connects to etcd when the binary has it
/// (`[store] kind = "etcd"`).
pub async fn start_with(
    config: ControllerConfig,
    etcd: Option<&dyn crate::store::open::Connect>,
) -> anyhow::Result<ControllerHandle> {
    let token = crate::admin::read_token(&config.admin.token_file)?;
    // Bind the listeners before anything starts, so a busy port fails fast and cleanly.
    let admin_listener = tokio::net::TcpListener::bind(config.admin.listen)
        .await
        .with_context(|| format!("cannot bind the admin API on {}", config.admin.listen))?;
    let admin_addr = admin_listener.local_addr()?;
    let connect_listener = match config.ingress.connect_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot bind the CONNECT proxy on {addr}"))?,
        ),
        None => None,
    };
    let opened = crate::store::open::open(&config.store, etcd).await?;
    let group = opened.group.clone();
    let shutdown = Shutdown::new();
    let (controller, mesh_addr) = Controller::start(&config, opened, &shutdown).await?;
    controller.take_place(group, mesh_addr, admin_addr).await?;
    controller.start_ownership().await?;
    if controller.in_group() {
        controller.spawner().spawn(crate::ingress::follow_group(Arc::clone(&controller)));
    }
    // What the previous run kept: the policy set at runtime, then the bindings.
    if let Err(e) = controller.restore_policy().await {
        tracing::error!("cannot put the policy set at runtime back in force; the configuration's is: {e}");
    }
    let restoring = crate::ingress::restore(&controller).await.context("restoring the kept bindings")?;
    if restoring > 0 {
        tracing::info!(bindings = restoring, "restoring the bindings the previous run kept");
    }
    let mut connect_addr = None;
    if let Some(listener) = connect_listener {
        connect_addr = Some(listener.local_addr()?);
        let digest = Arc::new(crate::secret::digest(&token));
        tokio::spawn(crate::ingress::connect_proxy::serve(
            Arc::clone(&controller),
            listener,
            digest,
            shutdown.signal(),
        ));
    }
    tokio::spawn(crate::admin::serve(admin_listener, Arc::clone(&controller), token, shutdown.signal()));
    tracing::info!(controller = %config.name, %mesh_addr, %admin_addr, "controller serving");
    Ok(ControllerHandle { controller, mesh_addr, admin_addr, connect_addr, shutdown: Some(shutdown) })
}

impl ControllerHandle {
    /// The controller.
    pub fn controller(&self) -> &Arc<Controller> {
        &self.controller
    }
    /// The QUIC address nodes connect to.
    pub fn mesh_addr(&self) -> SocketAddr {
        self.mesh_addr
    }
    /// The admin API's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }
    /// The CONNECT proxy's address, if it runs.
    pub fn connect_addr(&self) -> Option<SocketAddr> {
        self.connect_addr
    }

    /// Stop everything: every listener (admin, CONNECT, each binding's), every connection and
    /// task, the mesh endpoint; then close the store. Returns once all of it is gone, so the
    /// same store file can be opened again at once.
    pub async fn shutdown(mut self) {
        self.stop().await;
    }

    /// [`ControllerHandle::shutdown`] through a reference; a second call does nothing.
    pub async fn stop(&mut self) {
        let Some(shutdown) = self.shutdown.take() else { return };
        // Bindings' listeners and connections first: they watch their binding's signal too.
        self.controller.bindings().cancel_all();
        shutdown.run().await;
        // Its listeners are closed: the others may take over at once.
        self.controller.leave_group().await;
        self.controller.close().await;
        tracing::info!(controller = %self.controller.name(), "controller stopped");
    }
}
