//! `skybridge demo`: the whole flow in one process — a controller, five relays and four sites
//! on loopback, the WAN emulated in user space, each site fronting a cloud (the real emulators
//! where installed, [`emulators`]; else small built-in fixtures, [`clouds`]) — driven through
//! the real admin API and printed as `skybridge ctl` prints it: the mesh, path decisions, a binding and its tunnel, a relay going dark and the
//! re-route, session translation, then discovery, each platform's consent and the catalog.
//! Then it keeps running for `skybridge ctl` (and Prometheus) until Ctrl-C.

mod clouds;
mod emulators;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use skybridge_gateway::admin::AdminClient;
use skybridge_gateway::admin::api::{
    Authorization, BindRequest, Credentials, Mode, NewAccount, PolicyUpdate,
};
use skybridge_gateway::catalog::{AuthorizationState, Outcome};
use skybridge_gateway::config::PluginFile;
use skybridge_gateway::path::Policy;
use skybridge_gateway::testkit::local::{LocalMesh, Topology};
use skybridge_gateway::testkit::netem::LinkParams;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::ctl;
use clouds::Cloud;
use emulators::{Emulator, Installed};

/// Options of `skybridge demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The scorer plugin (`cargo xtask plugins` builds `target/plugins/weighted-scorer.wasm`).
    #[arg(long, value_name = "FILE", default_value = "target/plugins/weighted-scorer.wasm")]
    scorer: PathBuf,
    /// The AWS adapter plugin, for the session-translation step (default: `aws-adapter.wasm`
    /// beside the scorer).
    #[arg(long, value_name = "FILE")]
    aws_adapter: Option<PathBuf>,
    /// Stop once the steps are shown, instead of keeping the mesh running until Ctrl-C.
    #[arg(long)]
    exit: bool,
    /// While it keeps running: `degrade` makes link r2–r4 lose 30 % of its packets each way
    /// (after `--degrade-after-s`), so that the binding on it re-routes live (watch it with
    /// `skybridge ctl watch` or the dashboard).
    #[arg(long, value_name = "SCENARIO")]
    scenario: Option<Scenario>,
    /// Seconds after the steps before `--scenario degrade` degrades the link.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    degrade_after_s: u64,
    /// What the sites front: `auto` — each cloud's real emulator (moto, Azurite, Keystone,
    /// fake-gcs-server) where it is installed (`cargo xtask demo` installs them under
    /// `target/peers/`; `$SKYBRIDGE_PEERS_PYTHON` and `$SKYBRIDGE_PEERS_BIN` point elsewhere),
    /// else a built-in fixture; `emulators` — the four emulators or fail; `fixtures` — only
    /// the built-in fixtures.
    #[arg(long, value_name = "WHICH", default_value = "auto")]
    clouds: Clouds,
}

/// What the demo's sites front.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Clouds {
    /// The real emulators that are installed, fixtures for the others.
    Auto,
    /// The four real emulators, or fail.
    Emulators,
    /// The built-in fixtures only.
    Fixtures,
}

/// The cloud behind one demo site.
struct SiteCloud {
    cloud: Cloud,
    site: &'static str,
    /// What the site fronts, for people.
    label: String,
    config: skybridge_gateway::config::CloudConfig,
    /// The real emulator, when it is one.
    emulator: Option<Emulator>,
}

/// Start each site's cloud as `which` says: the real emulators (moto, Azurite and
/// fake-gcs-server waited for, side by side; Keystone left starting) or the fixtures.
async fn start_clouds(which: Clouds, plugins: &Path, secrets: &Path) -> anyhow::Result<Vec<SiteCloud>> {
    let installed = match which {
        Clouds::Fixtures => None,
        _ => Some(std::sync::Arc::new(tokio::task::spawn_blocking(Installed::find).await??)),
    };
    let mut starting = Vec::new();
    for (cloud, site) in Cloud::ALL {
        let installed = installed.clone();
        starting.push((
            cloud,
            site,
            tokio::task::spawn_blocking(move || {
                let installed = installed.ok_or_else(|| "fixtures asked for".to_owned())?;
                if let Some(missing) = installed.missing(cloud) {
                    return Err(missing);
                }
                Emulator::start(installed, cloud).map_err(|e| format!("{e:#}"))
            }),
        ));
    }
    let mut clouds = Vec::new();
    for (cloud, site, started) in starting {
        let what = emulators::name(cloud);
        let (label, config, emulator) = match started.await? {
            Ok(e) => {
                let config =
                    cloud.config(&e.url, &e.principal, &e.secret, &attributes(&e), plugins, secrets)?;
                (format!("{what}, a real emulator{}", cloud.enforces()), config, Some(e))
            }
            Err(why) if which == Clouds::Emulators => anyhow::bail!("{what} cannot run: {why}"),
            Err(why) => {
                let config = cloud.fixture_config(cloud.serve().await?, plugins, secrets)?;
                let why = if which == Clouds::Fixtures {
                    String::new()
                } else {
                    format!(" — {what}: {why}; `cargo xtask demo` installs it")
                };
                (format!("a built-in fixture, not the cloud{why}"), config, None)
            }
        };
        clouds.push(SiteCloud { cloud, site, label, config, emulator });
    }
    Ok(clouds)
}

fn attributes(e: &Emulator) -> Vec<(&str, &str)> {
    e.attributes.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// What happens while the demo keeps running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// A link on the binding's path degrades.
    Degrade,
}

const PICTURE: &str = concat!(
    "  site-a ── r1 ──── 15 ms ──── r2 ──── 15 ms ──── r4 ── site-b\n",
    "             └── 3 ms, 5 % loss ── r3 ── 3 ms, 5 % loss ──┘\n",
    "                                 r2 ── 20 ms ── r5 ── 20 ms ── r4\n",
    "                                          site-c ──┘└── site-d\n",
    "  (one-way delays and per-direction loss on each emulated link)"
);

/// Run the demo.
pub fn run(mut args: DemoArgs) -> anyhow::Result<ExitCode> {
    if !args.scorer.is_file() {
        anyhow::bail!(
            "no scorer plugin at {}: build the plugins with `cargo xtask plugins`",
            args.scorer.display()
        );
    }
    let adapter = args.aws_adapter.take().unwrap_or_else(|| args.scorer.with_file_name("aws-adapter.wasm"));
    if !adapter.is_file() {
        anyhow::bail!(
            "no AWS adapter plugin at {}: build the plugins with `cargo xtask plugins`",
            adapter.display()
        );
    }
    args.aws_adapter = Some(std::fs::canonicalize(adapter)?);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(demo(args))
}

fn section(title: &str) {
    out!("\n== {title} ==");
}

async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let lossy = LinkParams { loss: 0.05, ..LinkParams::delay(3.0) };
    let policy = Policy {
        scorer: std::fs::canonicalize(&args.scorer)?,
        weights: [("latency", 1.0), ("loss", 0.01), ("jitter", 0.0), ("hops", 0.0)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        k: 4,
        probes: 100,
        probe_interval_ms: 5,
        reroute_loss: 0.2,
    };
    let files = serve_files().await?;
    let api = serve_echo_auth().await?;
    let adapter = args.aws_adapter.clone().context("the AWS adapter's path")?;
    let plugins = adapter.parent().map(Path::to_path_buf).unwrap_or_default();
    let secrets = tempfile::tempdir()?;
    let mut topology = Topology::new(policy)
        .relays(&["r1", "r2", "r3", "r4", "r5"])
        .link("r1", "r2", LinkParams::delay(15.0))
        .link("r2", "r4", LinkParams::delay(15.0))
        .link("r1", "r3", lossy)
        .link("r3", "r4", lossy)
        .link("r2", "r5", LinkParams::delay(20.0))
        .link("r5", "r4", LinkParams::delay(20.0))
        .site("site-a", &[("r1", LinkParams::delay(1.0))])
        .site("site-b", &[("r4", LinkParams::delay(1.0))])
        .site("site-c", &[("r5", LinkParams::delay(1.0))])
        .site("site-d", &[("r5", LinkParams::delay(1.0))])
        .endpoint("site-b", "files", files)
        .endpoint("site-b", "api", api)
        .adapter("site-b", adapter);
    let authorizer = plugins.join("allowlist-authorizer.wasm");
    anyhow::ensure!(
        authorizer.is_file(),
        "no authorizer plugin at {}: build the plugins with `cargo xtask plugins`",
        authorizer.display()
    );
    let mut clouds = start_clouds(args.clouds, &plugins, secrets.path()).await?;
    for c in &clouds {
        topology = topology.cloud(c.site, c.config.clone()).authorizer(
            c.site,
            PluginFile {
                path: authorizer.clone(),
                // Each platform lets object stores into the catalog, and nothing else; tunnels
                // may reach the endpoints it publishes.
                config: [
                    ("allow.objects".to_owned(), "* * object-store/*".to_owned()),
                    ("allow.endpoints".to_owned(), "* * endpoint/*".to_owned()),
                ]
                .into(),
                limits: Default::default(),
            },
        );
    }

    section("A mesh on loopback: real QUIC + mutual TLS, the WAN emulated in user space");
    out!("{PICTURE}");
    out!("Each site fronts a cloud:");
    for c in &clouds {
        out!("  {}: {} — {}", c.site, c.cloud.label(), c.label);
    }
    let started = Instant::now();
    let mesh = LocalMesh::start(topology, Duration::from_secs(30)).await?;
    out!("controller, 5 relays and 4 sites up and measured in {:.1} s", started.elapsed().as_secs_f64());
    let url = format!("http://{}", mesh.controller.admin_addr());
    let client = AdminClient::new(&url, mesh.token.clone())?;

    section("skybridge ctl nodes");
    ctl::print_nodes(&client.nodes().await?);
    section("skybridge ctl links   (what each relay's continuous probes measure)");
    ctl::print_links(&client.links().await?);
    section("skybridge ctl platforms   (each site's nearest relay)");
    ctl::print_platforms(&client.platforms().await?);

    let connect = || client.decide("site-a", "site-b");
    section("1. A latency-heavy policy: skybridge ctl connect --from site-a --to site-b");
    ctl::print_decision(&connect().await?);

    section("2. A loss-heavy policy: skybridge ctl policy set --weight latency=0.1 --weight loss=0.2");
    let update = PolicyUpdate {
        weights: [("latency".to_owned(), 0.1), ("loss".to_owned(), 0.2)].into(),
        ..PolicyUpdate::default()
    };
    client.set_policy(&update).await?;
    ctl::print_decision(&connect().await?);

    section("3. The lossy links heal: the fast path wins again, under the same loss-heavy policy");
    for (a, b) in [("r1", "r3"), ("r3", "r4")] {
        mesh.set_link(a, b, LinkParams::delay(3.0))?;
    }
    ctl::print_decision(&connect().await?);

    section("4. A binding: skybridge ctl bind --from site-a --to site-b --endpoint files");
    let bind = |endpoint: &str, mode: Mode, account: Option<&str>| BindRequest {
        from: Some("site-a".into()),
        to: "site-b".into(),
        endpoint: endpoint.into(),
        mode,
        listen: None,
        ttl_s: None,
        account: account.map(str::to_owned),
        capability: None,
        open: false,
    };
    let bound = client.bind(&bind("files", Mode::Tcp, None)).await?;
    ctl::print_binding(&bound);
    let listen = bound.listen;
    let (bytes, took) = download(listen).await.context("downloading through the binding")?;
    out!(
        "downloaded {} MiB through the tunnel in {:.2} s ({:.0} Mbit/s over the emulated links)",
        bytes >> 20,
        took.as_secs_f64(),
        bytes as f64 * 8.0 / took.as_secs_f64() / 1e6
    );

    section(
        "5. Relay r3 goes dark mid-download (its links blackholed: no close, no reset, as after kill -9)",
    );
    let mut stream = tokio::net::TcpStream::connect(listen).await?;
    let mut before = vec![0u8; 4 << 20];
    stream.read_exact(&mut before).await?;
    for (a, b) in [("r1", "r3"), ("r3", "r4")] {
        mesh.set_link(a, b, LinkParams { loss: 1.0, ..LinkParams::default() })?;
    }
    let killed = Instant::now();
    let (total, stall) = read_file(&mut stream, before.len()).await.context("the download in flight")?;
    out!(
        "the download in flight carried on: all {} MiB arrived, every byte in order, {:.2} s after r3 went \
         dark; it stalled {:.2} s at most (r3's neighbours heard nothing for 0.5 s, the binding's end-to-end \
         connection moved to the new path)",
        total >> 20,
        killed.elapsed().as_secs_f64(),
        stall.as_secs_f64()
    );
    mesh.wait_until("the binding re-routed", Duration::from_secs(10), |c| {
        c.bindings().list().iter().any(|b| !b.reroutes.is_empty())
    })
    .await?;
    out!("re-routed {:.2} s after r3 went dark:", killed.elapsed().as_secs_f64());
    ctl::print_binding(&client.binding(bound.id).await?);
    let (bytes, took) = download(listen).await.context("downloading after the re-route")?;
    out!("downloaded {} MiB again in {:.2} s, over r2", bytes >> 20, took.as_secs_f64());

    section("6. New decisions leave the dead relay out: skybridge ctl connect --from site-a --to site-b");
    ctl::print_decision(&connect().await?);

    section("7. Session translation: an http binding with the AWS adapter");
    out!("skybridge ctl account create acme-ops …; skybridge ctl account map acme-ops --platform site-b \\");
    out!("    --principal AKIAIOSFODNN7EXAMPLE … --attribute region=us-east-1 --attribute service=s3");
    let account = NewAccount { id: "acme-ops".into(), secret: "acme-ops-demo-secret".into() };
    client.create_account(&account).await?;
    let mapping = Credentials {
        principal: "AKIAIOSFODNN7EXAMPLE".into(),
        secret: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
        attributes: [("region".to_owned(), "us-east-1".to_owned()), ("service".to_owned(), "s3".to_owned())]
            .into(),
    };
    client.map_credentials("acme-ops", "site-b", &mapping).await?;
    out!("skybridge ctl bind --from site-a --to site-b --endpoint api --mode http --account acme-ops");
    let bound = client.bind(&bind("api", Mode::Http, Some("acme-ops"))).await?;
    ctl::print_binding(&bound);
    let listen = bound.listen.to_string();
    let listen = listen.as_str();
    // The client proves it is acme-ops (HTTP Basic here; AWS SDKs sign with SigV4 instead).
    let answer =
        http_get(listen, "/demo-bucket/report.csv", "YWNtZS1vcHM6YWNtZS1vcHMtZGVtby1zZWNyZXQ=").await?;
    out!("the client sent:   Authorization: Basic …  (account acme-ops and its Skybridge secret)");
    out!("the target got:    {}", answer.lines().last().unwrap_or_default());
    section("skybridge ctl sessions");
    ctl::print_sessions(&client.sessions().await?);

    section("Every decision is stored in the controller's redb: skybridge ctl decisions");
    out!("{} decision records", client.decisions().await?.len());

    section("8. Discovery, consent and the catalog");
    out!("Each site discovered its cloud's services through its adapter, with its own credentials");
    out!("(the controller holds none); the controller asked each platform's authorizer about every");
    out!("capability; what a platform granted is in the catalog.");
    seed_and_refresh(&client, &mut clouds).await?;
    let platforms: Vec<&str> = Cloud::ALL.iter().map(|(_, site)| *site).collect();
    let decided = wait_for_consent(&client, &platforms).await?;
    for (cloud, site) in Cloud::ALL {
        let found = client.inventory_all(site).await?;
        let mut kinds: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for r in &found {
            kinds.entry(r.service.kind.as_str()).or_default().push(r.service.name.as_str());
        }
        let kinds: Vec<String> = kinds
            .into_iter()
            .map(|(kind, names)| match names.len() {
                n @ 0..=4 => format!("{n} {kind} ({})", names.join(", ")),
                n => format!("{n} {kind} ({}, …)", names[..3].join(", ")),
            })
            .collect();
        out!("  {site} ({}): {} services — {}", cloud.label(), found.len(), kinds.join("; "));
    }
    section("skybridge ctl authorizations   (each platform's allowlist grants `* * object-store/*`)");
    // moto lists every AWS region as a compute service: show a few refusals per platform.
    let mut shown_refused: std::collections::BTreeMap<&str, usize> = Default::default();
    let shown: Vec<Authorization> = decided
        .iter()
        .filter(|a| {
            a.state != AuthorizationState::Refused || {
                let n = shown_refused.entry(a.platform.as_str()).or_default();
                *n += 1;
                *n <= 3
            }
        })
        .cloned()
        .collect();
    ctl::print_authorizations(&shown);
    if shown.len() < decided.len() {
        out!(
            "… and {} more refused (skybridge ctl authorizations lists every one)",
            decided.len() - shown.len()
        );
    }
    section("skybridge ctl catalog ls");
    ctl::print_catalog(&client.catalog_all("").await?);

    if args.exit {
        return Ok(ExitCode::SUCCESS);
    }
    let token_file = mesh.state.path().join("admin.token");
    section("The mesh keeps running");
    // The token itself, for pasting into the login form: this is a local demo on loopback.
    out!("dashboard:  {url}/ui   (log in with the admin token: {})", mesh.token);
    out!("admin API:  {url}   (token in {})", token_file.display());
    out!(
        "metrics:    {url}/metrics (same token); relay r1: http://{}/metrics",
        mesh.relays["r1"].metrics_addr().map(|a| a.to_string()).unwrap_or_default()
    );
    out!("In another shell:");
    out!("  export SKYBRIDGE_URL={url} SKYBRIDGE_TOKEN_FILE={}", token_file.display());
    out!("  skybridge ctl watch          # events as they happen");
    out!("  skybridge ctl nodes; skybridge ctl catalog ls; skybridge ctl connect --from site-a --to site-c");
    out!("Ctrl-C stops it.");
    if args.scenario == Some(Scenario::Degrade) {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(args.degrade_after_s)) => {
                mesh.set_link("r2", "r4", LinkParams { loss: 0.3, ..LinkParams::delay(15.0) })?;
                out!("\n[degrade] link r2–r4 now loses 30 % of its packets each way: binding 1 re-routes once its");
                out!("          probes see it (skybridge ctl watch; skybridge ctl bindings 1)");
            }
            signal = tokio::signal::ctrl_c() => {
                signal.context("waiting for Ctrl-C")?;
                out!("stopping…");
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    out!("stopping…");
    drop(mesh);
    drop(clouds);
    Ok(ExitCode::SUCCESS)
}

/// Give each real emulator a few services, as its owner would, then have its site report again
/// (the report the site made when it connected came before them, or before Keystone was up).
async fn seed_and_refresh(client: &AdminClient, clouds: &mut [SiteCloud]) -> anyhow::Result<()> {
    for c in clouds.iter_mut() {
        let Some(mut emulator) = c.emulator.take() else { continue };
        let (emulator, made) = tokio::task::spawn_blocking(move || {
            let made = emulator.seed();
            (emulator, made)
        })
        .await?;
        let what = emulators::name(c.cloud);
        c.emulator = Some(emulator);
        let made = made.with_context(|| format!("giving {what} its services"))?;
        out!("  {what} at {}: its owner made {}", c.site, made.join(", "));
        refresh(client, c.site).await?;
    }
    Ok(())
}

/// Ask `platform` to discover and report now; its refresh record once integrated (at most
/// 60 s). A request that joined a run already under way (begun before the services were made)
/// asks again once that run ends.
async fn refresh(client: &AdminClient, platform: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let before = client.refreshes(platform).await?.iter().map(|r| r.seq).max().unwrap_or(0);
        let joined = client.refresh(platform).await?.already_running;
        let record = loop {
            if let Some(r) = client.refreshes(platform).await?.into_iter().find(|r| r.seq > before) {
                break r;
            }
            anyhow::ensure!(Instant::now() < deadline, "{platform} did not report within 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if joined {
            continue;
        }
        return match record.outcome {
            Outcome::Integrated { .. } => Ok(()),
            Outcome::DiscoveryFailed { reason } => {
                Err(anyhow::anyhow!("{platform}'s discovery failed: {reason}"))
            }
            Outcome::Refused { reason } => Err(anyhow::anyhow!("{platform}'s report was refused: {reason}")),
        };
    }
}

/// The authorizations of `platforms` once each has reported and none is pending (at most 60 s).
async fn wait_for_consent(client: &AdminClient, platforms: &[&str]) -> anyhow::Result<Vec<Authorization>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ours: Vec<Authorization> = client
            .authorizations()
            .await?
            .into_iter()
            .filter(|a| platforms.contains(&a.platform.as_str()))
            .collect();
        let reported = platforms.iter().all(|p| ours.iter().any(|a| a.platform == *p));
        if reported && ours.iter().all(|a| a.state != AuthorizationState::Pending) {
            return Ok(ours);
        }
        anyhow::ensure!(Instant::now() < deadline, "the platforms had not all decided after 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the demo's file service sends each client.
const FILE_BYTES: usize = 32 << 20;

/// Byte `i` of the file: a sequence, so that a lost, repeated or reordered piece shows.
fn file_byte(i: usize) -> u8 {
    (i % 251) as u8
}

/// A service at site-b: sends [`FILE_BYTES`] to each client, then closes.
async fn serve_files() -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                // Whole cycles of the sequence, so that block after block it runs on.
                let block: Vec<u8> = (0..251 * 261).map(file_byte).collect();
                let mut left = FILE_BYTES;
                while left > 0 {
                    let n = left.min(block.len());
                    if s.write_all(&block[..n]).await.is_err() {
                        return;
                    }
                    left -= n;
                }
            });
        }
    });
    Ok(addr)
}

/// A service at site-b that answers every HTTP request with the Authorization header it got.
async fn serve_echo_auth() -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && s.read_exact(&mut byte).await.is_ok() {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head);
                let auth = head
                    .lines()
                    .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
                    .unwrap_or("Authorization: (none)")
                    .to_owned();
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{auth}",
                    auth.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
    Ok(addr)
}

/// One HTTP/1.1 GET to `listen` with HTTP Basic credentials `basic`; the whole answer.
async fn http_get(listen: &str, path: &str, basic: &str) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(listen).await?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {listen}\r\nAuthorization: Basic {basic}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    anyhow::ensure!(answer.starts_with("HTTP/1.1 200"), "the http binding answered: {answer}");
    Ok(answer)
}

/// Download everything the binding at `addr` carries; bytes and time.
async fn download(addr: std::net::SocketAddr) -> anyhow::Result<(usize, Duration)> {
    let start = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let (total, _) = read_file(&mut stream, 0).await?;
    Ok((total, start.elapsed()))
}

/// Read the rest of the file from `stream`, from byte `at` on, checking every byte: the whole
/// file's length, and the longest wait for data.
async fn read_file(stream: &mut tokio::net::TcpStream, mut at: usize) -> anyhow::Result<(usize, Duration)> {
    let mut buf = vec![0u8; 1 << 16];
    let mut longest = Duration::ZERO;
    loop {
        let waited = Instant::now();
        let n = stream.read(&mut buf).await?;
        longest = longest.max(waited.elapsed());
        if n == 0 {
            break;
        }
        if let Some(bad) = (0..n).find(|i| buf[*i] != file_byte(at + i)) {
            anyhow::bail!("byte {} of the file is wrong", at + bad);
        }
        at += n;
    }
    anyhow::ensure!(at == FILE_BYTES, "got {at} bytes of {FILE_BYTES}");
    Ok((at, longest))
}
