//! `skybridge controller | relay | site --config FILE`: run a node until Ctrl-C / SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use skybridge_gateway::node::config::{self, ControllerConfig, RelayConfig, SiteConfig};
use skybridge_gateway::node::relay::Relay;
use skybridge_gateway::node::site::Site;
use skybridge_gateway::runtime::{self, RuntimeOptions};

/// Where a node's configuration lives.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The node's TOML configuration (commented examples in `examples/`).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
    /// Worker threads (default: one per CPU core). Fewer suit a node that shares its machine
    /// with other busy processes.
    #[arg(long, value_name = "N", env = "SKYBRIDGE_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
    /// After its last event, how long (µs) the node keeps polling for the next one before it
    /// sleeps (needs --threads 1). On a virtual machine, whose idle CPUs halt, it saves waking
    /// the node and its CPU on every packet (tens of µs) for CPU time spent polling; 200 suits
    /// a relay chain. No help where idle CPUs already poll. 0 never polls.
    #[arg(long, value_name = "MICROSECONDS", env = "SKYBRIDGE_IDLE_POLL_US", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub idle_poll_us: u32,
}

/// Which role to run.
#[derive(Debug, Clone, Copy)]
pub enum RoleToRun {
    /// `skybridge controller`.
    Controller,
    /// `skybridge relay`.
    Relay,
    /// `skybridge site`.
    Site,
}

/// Start the node and run until a shutdown signal.
pub fn run(role: RoleToRun, args: NodeArgs) -> anyhow::Result<ExitCode> {
    let runtime = runtime::build(RuntimeOptions {
        threads: args.threads.map(usize::from),
        idle_poll: Duration::from_micros(u64::from(args.idle_poll_us)),
    })?;
    runtime.block_on(async {
        match role {
            RoleToRun::Controller => {
                let config = config::load::<ControllerConfig>(&args.config)?;
                let c = skybridge_gateway::node::controller::start_with(config, etcd()).await?;
                eprintln!("controller: mesh on {}, admin API on http://{}", c.mesh_addr(), c.admin_addr());
                shutdown_signal().await;
                c.shutdown().await;
            }
            RoleToRun::Relay => {
                let r = Relay::start(config::load::<RelayConfig>(&args.config)?)?;
                eprintln!("relay: listening on {}", r.local_addr());
                if let Some(addr) = r.metrics_addr() {
                    eprintln!("relay: metrics on http://{addr}/metrics");
                }
                shutdown_signal().await;
                r.shutdown();
            }
            RoleToRun::Site => {
                let s = Site::start(config::load::<SiteConfig>(&args.config)?)?;
                eprintln!("site {}: started", s.name());
                if let Some(addr) = s.metrics_addr() {
                    eprintln!("site {}: metrics on http://{addr}/metrics", s.name());
                }
                shutdown_signal().await;
                s.shutdown();
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutting down");
}

/// How this build reaches etcd (`[store] kind = "etcd"`), if it can.
#[cfg(feature = "etcd")]
fn etcd() -> Option<&'static dyn skybridge_gateway::store::open::Connect> {
    Some(&skybridge_store_etcd::Connector)
}

/// This build cannot reach etcd: a configuration that asks for it is refused, saying how to
/// build one that can.
#[cfg(not(feature = "etcd"))]
fn etcd() -> Option<&'static dyn skybridge_gateway::store::open::Connect> {
    None
}
