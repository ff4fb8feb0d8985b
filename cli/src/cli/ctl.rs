//! `skybridge ctl …`: the controller's admin API from the command line, as tables or `--json`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::Serialize;
use skybridge_gateway::admin::AdminClient;
use skybridge_gateway::admin::api::{
    AccountView, AuditRecord, Authorization, BindRequest, BindingView, Credentials, DecisionRecord, Deleted,
    EntryView, InventoryRecord, LinkView, Mode, NewAccount, NodeView, PlatformView, PluginView, Policy,
    PolicyUpdate, RefreshRecord, RefreshStarted, SessionRecord, TunnelRecord, Unbound,
};
use skybridge_gateway::admin::client::Watched;
use skybridge_gateway::catalog::Outcome;
use skybridge_gateway::path::LinkStats;

/// Options every `ctl` command shares.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The controller's admin API.
    #[arg(long, env = "SKYBRIDGE_URL", default_value = "http://127.0.0.1:7080", global = true)]
    url: String,
    /// A file holding the admin bearer token (first line).
    #[arg(long, env = "SKYBRIDGE_TOKEN_FILE", value_name = "FILE", global = true)]
    token_file: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Give up on a call the controller does not answer within this many seconds (a catalog
    /// watch gets its wait on top).
    #[arg(long, value_name = "SECONDS", default_value_t = 90, global = true)]
    timeout: u64,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Debug, Subcommand)]
enum CtlCommand {
    /// Registered relays and sites, up or down.
    Nodes,
    /// The controllers of this one's group with their addresses (itself alone when it is in
    /// none); `*` marks the one asked.
    Controllers,
    /// Links between relays with their measured RTT, jitter and loss.
    Links,
    /// Platforms with their nearest relay.
    Platforms,
    /// Request a connection: the controller picks, probes and scores paths, and records why.
    #[command(after_help = "Example:\n  skybridge ctl connect --from aws-east --to azure-west")]
    Connect {
        /// The requesting platform.
        #[arg(long)]
        from: String,
        /// The target platform.
        #[arg(long)]
        to: String,
    },
    /// Show a stored decision record (every candidate, its metrics, score and explanation),
    /// or the latest ones without an id.
    #[command(alias = "connection")]
    Decisions {
        /// The record's id.
        id: Option<u64>,
    },
    /// Plugins in service: world, version, SHA-256, file, calls, mean call time, failures by
    /// kind and rejections.
    Plugins,
    /// Open a binding: a listener on the controller that carries TCP to an endpoint the target
    /// platform's site publishes, over the best path. With `--mode http` it is a reverse proxy
    /// that authenticates each request with a Skybridge account and has the target's adapter
    /// re-sign it with the account's credentials there (`ctl account map`).
    #[command(
        after_help = "Examples:\n  skybridge ctl bind --from site-a --to site-b --endpoint web\n  curl http://LISTEN/\n\n  \
                      skybridge ctl bind --to aws-east --endpoint s3 --mode http --account acme-ops\n  \
                      AWS_ACCESS_KEY_ID=acme-ops AWS_SECRET_ACCESS_KEY=ACCOUNT-SECRET \\\n    \
                      aws --endpoint-url http://LISTEN s3 ls\n\n  \
                      skybridge ctl bind --capability s3/logs --mode http --account acme-ops"
    )]
    Bind {
        /// The requesting platform (default: the ingress's platform, `[ingress] platform`).
        #[arg(long)]
        from: Option<String>,
        /// The target platform (with `--capability`: the offering platform to use, else the
        /// one with the best measured path).
        #[arg(long, required_unless_present = "capability")]
        to: Option<String>,
        /// The endpoint (as the target site's config names it).
        #[arg(long, required_unless_present = "capability", conflicts_with = "capability")]
        endpoint: Option<String>,
        /// Bind to a catalog capability instead: its entry id or `kind/name` (`s3/logs`).
        #[arg(long)]
        capability: Option<String>,
        /// Listen here instead of on any free port of the ingress address.
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Lifetime in seconds (default 3600).
        #[arg(long)]
        ttl_s: Option<u64>,
        /// `tcp` carries any protocol byte for byte; `http` translates sessions (needs an
        /// `[[adapter]]` for the target platform).
        #[arg(long, default_value = "tcp", value_parser = ["tcp", "http"])]
        mode: String,
        /// `http` only: the one account allowed to use the binding (default: any account with
        /// credentials at the target).
        #[arg(long)]
        account: Option<String>,
        /// `tcp` only: allow a listener other hosts can reach (`--listen 0.0.0.0:PORT`). A
        /// `tcp` binding authenticates no one: whoever reaches it uses the tunnel.
        #[arg(long)]
        open: bool,
    },
    /// List bindings, with their paths, re-routes and byte counts; or show one.
    Bindings {
        /// A binding id.
        id: Option<u64>,
    },
    /// Live tunnels (one per binding): their hops, the decision that chose the path, the
    /// account they carry, what the target authorized and when they expire.
    Tunnels,
    /// Close a binding and tear its tunnel down.
    Unbind {
        /// The binding id.
        id: u64,
    },
    /// Recent uses of bindings, each as its three sessions (client, tunnel, target).
    Sessions,
    /// Follow the controller's events as they happen (nodes up and down, decisions, bindings,
    /// re-routes, authorizations), one line each, until interrupted; `--json` prints each as
    /// the API's JSON.
    #[command(
        after_help = "Example:\n  skybridge ctl watch\n  23:57:53.765  node-down         node=r2 silent_ms=505"
    )]
    Watch,
    /// Manage accounts and what they map to at each target platform.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Show or change the path policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The service catalog: capabilities platforms granted, and who offers each.
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// A platform's discovered services and its refreshes.
    #[command(subcommand)]
    Platform(PlatformCommand),
    /// Capability authorizations (pending, granted, refused, revoked, expired), or with
    /// `--audit` the latest decisions: who decided what, and why.
    Authorizations {
        /// Show the audit instead.
        #[arg(long)]
        audit: bool,
    },
}

#[derive(Debug, Subcommand)]
enum CatalogCommand {
    /// List entries (all pages), optionally of one kind or offered by one platform.
    #[command(
        after_help = "Examples:\n  skybridge ctl catalog ls --kind object-store\n  skybridge ctl catalog ls --platform aws-east"
    )]
    Ls {
        /// Only this kind (aliases such as `s3` accepted).
        #[arg(long)]
        kind: Option<String>,
        /// Only entries this platform offers.
        #[arg(long)]
        platform: Option<String>,
        /// Only entries offered in this region.
        #[arg(long)]
        region: Option<String>,
        /// Only `offered` or `orphaned` entries.
        #[arg(long, value_parser = ["offered", "orphaned"])]
        state: Option<String>,
    },
    /// One entry: the platforms offering it, their service, presence and authorization.
    Show {
        /// The entry id.
        id: String,
    },
    /// Show the catalog (its first page of 1,000), then again each time it changes, until
    /// interrupted (a long poll: nothing is asked while nothing changes).
    Watch {
        /// Only this kind.
        #[arg(long)]
        kind: Option<String>,
        /// Only entries this platform offers.
        #[arg(long)]
        platform: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum PlatformCommand {
    /// The services the platform's site discovered, by native id (all pages).
    Inventory {
        /// The platform.
        platform: String,
    },
    /// Ask the platform's site to discover now (joins a run already under way).
    Refresh {
        /// The platform.
        platform: String,
    },
    /// The platform's latest refreshes: when, why, what changed, or why discovery failed.
    Refreshes {
        /// The platform.
        platform: String,
    },
}

#[derive(Debug, Subcommand)]
enum AccountCommand {
    /// List accounts and their credential mappings (secrets are never shown).
    List,
    /// Create an account; its secret is read from a file (or `-` for standard input), so it
    /// stays out of shell history and process lists.
    #[command(after_help = "Example:\n  skybridge ctl account create acme-ops --secret-file acme.secret")]
    Create {
        /// The account id.
        id: String,
        /// A file holding the secret (first line), or `-`.
        #[arg(long, value_name = "FILE")]
        secret_file: PathBuf,
    },
    /// Map an account to credentials at a target platform.
    #[command(
        after_help = "Example:\n  skybridge ctl account map acme-ops --platform aws-east --principal AKIA… \\\n      --secret-file aws.secret --attribute region=us-east-1"
    )]
    Map {
        /// The account id.
        id: String,
        /// The target platform.
        #[arg(long)]
        platform: String,
        /// The identity there (access key id, storage account, user).
        #[arg(long)]
        principal: String,
        /// A file holding its secret (first line), or `-`.
        #[arg(long, value_name = "FILE")]
        secret_file: PathBuf,
        /// An attribute, NAME=VALUE (repeatable): region, project, domain…
        #[arg(long = "attribute", value_name = "NAME=VALUE", value_parser = parse_pair)]
        attributes: Vec<(String, String)>,
    },
    /// Remove an account's mapping at a platform.
    Unmap {
        /// The account id.
        id: String,
        /// The target platform.
        #[arg(long)]
        platform: String,
    },
    /// Delete an account.
    Delete {
        /// The account id.
        id: String,
    },
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    let (name, value) = s.split_once('=').ok_or("expected NAME=VALUE")?;
    Ok((name.to_owned(), value.to_owned()))
}

/// The first line of `path`, or of standard input for `-`.
fn read_secret(path: &std::path::Path) -> anyhow::Result<String> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the secret from standard input")?
    } else {
        use skybridge_gateway::file;
        file::read_to_string(path, file::MAX_SECRET_BYTES, "the secret file")?
    };
    let secret = text.lines().next().unwrap_or("").trim().to_owned();
    if secret.is_empty() {
        bail!("no secret in {}", path.display());
    }
    Ok(secret)
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// The policy in force.
    Show,
    /// Change it; the next decision uses the new policy. Unset fields keep their value.
    #[command(after_help = "Example:\n  skybridge ctl policy set --weight latency=0.2 --weight loss=5 --k 6")]
    Set {
        /// A new scorer plugin file (a path on the controller's machine).
        #[arg(long, value_name = "FILE")]
        scorer: Option<PathBuf>,
        /// A weight, NAME=VALUE (repeatable).
        #[arg(long = "weight", value_name = "NAME=VALUE", value_parser = parse_weight)]
        weights: Vec<(String, f64)>,
        /// Candidate paths to enumerate and probe.
        #[arg(long)]
        k: Option<usize>,
        /// End-to-end probes per candidate.
        #[arg(long)]
        probes: Option<u32>,
        /// Time between probes, ms.
        #[arg(long)]
        probe_interval_ms: Option<u64>,
        /// Re-route live tunnels when a link on their path loses more than this ratio.
        #[arg(long)]
        reroute_loss: Option<f64>,
    },
}

fn parse_weight(s: &str) -> Result<(String, f64), String> {
    let (name, value) = s.split_once('=').ok_or("expected NAME=VALUE")?;
    let value: f64 = value.parse().map_err(|_| format!("`{value}` is not a number"))?;
    Ok((name.to_owned(), value))
}

/// Run a `ctl` command.
pub fn run(args: CtlArgs) -> anyhow::Result<ExitCode> {
    let token = match &args.token_file {
        Some(f) => skybridge_gateway::admin::read_token(f)?,
        None => match std::env::var("SKYBRIDGE_TOKEN") {
            Ok(t) if !t.trim().is_empty() => t.trim().to_owned(),
            _ => bail!(
                "no admin token: pass --token-file FILE, or set SKYBRIDGE_TOKEN_FILE or SKYBRIDGE_TOKEN"
            ),
        },
    };
    let client = AdminClient::new(&args.url, token)?.with_timeout(Duration::from_secs(args.timeout.max(1)));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(execute(&client, &args.command, args.json))?;
    Ok(ExitCode::SUCCESS)
}

/// Print `value` as JSON or with `print`.
/// One event as a line: its time (UTC), its type, then its fields as `key=value`.
fn event_line(stamped: &skybridge_gateway::admin::api::Stamped) -> String {
    let ms = stamped.at_unix_ms % 86_400_000;
    let time =
        format!("{:02}:{:02}:{:02}.{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let value = serde_json::to_value(&stamped.event).unwrap_or_default();
    let kind = value["type"].as_str().unwrap_or("event").to_owned();
    let fields: Vec<String> = value
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| *k != "type")
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect();
    format!("{time}  {kind:<18} {}", fields.join(" "))
}

fn show<T: Serialize + ?Sized>(json: bool, value: &T, print: fn(&T)) -> anyhow::Result<()> {
    if json {
        out!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print(value);
    }
    Ok(())
}

async fn execute(client: &AdminClient, command: &CtlCommand, json: bool) -> anyhow::Result<()> {
    match command {
        CtlCommand::Nodes => show(json, client.nodes().await?.as_slice(), print_nodes),
        CtlCommand::Controllers => show(json, client.controllers().await?.as_slice(), print_controllers),
        CtlCommand::Links => show(json, client.links().await?.as_slice(), print_links),
        CtlCommand::Platforms => show(json, client.platforms().await?.as_slice(), print_platforms),
        CtlCommand::Plugins => show(json, client.plugins().await?.as_slice(), print_plugins),
        CtlCommand::Connect { from, to } => show(json, &client.decide(from, to).await?, print_decision),
        CtlCommand::Decisions { id: Some(id) } => show(json, &client.decision(*id).await?, print_decision),
        CtlCommand::Decisions { id: None } => {
            show(json, client.decisions().await?.as_slice(), print_decisions)
        }
        CtlCommand::Bind { from, to, endpoint, capability, listen, ttl_s, mode, account, open } => {
            let listen = listen
                .as_deref()
                .map(|l| l.parse().with_context(|| format!("--listen `{l}` is not an IP:PORT address")))
                .transpose()?;
            let request = BindRequest {
                from: from.clone(),
                to: to.clone().unwrap_or_default(),
                endpoint: endpoint.clone().unwrap_or_default(),
                mode: if mode == "http" { Mode::Http } else { Mode::Tcp },
                listen,
                ttl_s: *ttl_s,
                account: account.clone(),
                capability: capability.clone(),
                open: *open,
            };
            show(json, &client.bind(&request).await?, print_binding)
        }
        CtlCommand::Bindings { id: Some(id) } => show(json, &client.binding(*id).await?, print_binding),
        CtlCommand::Bindings { id: None } => show(json, client.bindings().await?.as_slice(), print_bindings),
        CtlCommand::Tunnels => {
            let tunnels: Vec<BoundTunnel> = client
                .bindings()
                .await?
                .into_iter()
                .map(|b| BoundTunnel { binding: b.id, tunnel: b.tunnel })
                .collect();
            show(json, tunnels.as_slice(), print_tunnels)
        }
        CtlCommand::Unbind { id } => show(json, &client.unbind(*id).await?, print_unbound),
        CtlCommand::Sessions => show(json, client.sessions().await?.as_slice(), print_sessions),
        CtlCommand::Watch => {
            let mut events = client.events().await?;
            while let Some(watched) = events.next().await? {
                match watched {
                    Watched::Event(stamped) if json => out!("{}", serde_json::to_string(&stamped)?),
                    Watched::Event(stamped) => out!("{}", event_line(&stamped)),
                    Watched::Lagged(missed) => eprintln!("warning: fell behind, {missed} events missed"),
                }
            }
            eprintln!("the controller ended the event stream");
            Ok(())
        }
        CtlCommand::Account(AccountCommand::List) => {
            show(json, client.accounts().await?.as_slice(), print_accounts)
        }
        CtlCommand::Account(AccountCommand::Create { id, secret_file }) => {
            let new = NewAccount { id: id.clone(), secret: read_secret(secret_file)? };
            show(json, &client.create_account(&new).await?, print_account)
        }
        CtlCommand::Account(AccountCommand::Map { id, platform, principal, secret_file, attributes }) => {
            let credentials = Credentials {
                principal: principal.clone(),
                secret: read_secret(secret_file)?,
                attributes: attributes.iter().cloned().collect(),
            };
            show(json, &client.map_credentials(id, platform, &credentials).await?, print_account)
        }
        CtlCommand::Account(AccountCommand::Unmap { id, platform }) => {
            show(json, &client.unmap_credentials(id, platform).await?, print_account)
        }
        CtlCommand::Account(AccountCommand::Delete { id }) => {
            show(json, &client.delete_account(id).await?, print_deleted)
        }
        CtlCommand::Policy(PolicyCommand::Show) => show(json, &client.policy().await?, print_policy),
        CtlCommand::Policy(PolicyCommand::Set {
            scorer,
            weights,
            k,
            probes,
            probe_interval_ms,
            reroute_loss,
        }) => {
            let update = PolicyUpdate {
                scorer: scorer.clone(),
                weights: weights.iter().cloned().collect(),
                k: *k,
                probes: *probes,
                probe_interval_ms: *probe_interval_ms,
                reroute_loss: *reroute_loss,
            };
            if update == PolicyUpdate::default() {
                bail!(
                    "nothing to change: give --scorer, --weight, --k, --probes, --probe-interval-ms or --reroute-loss"
                );
            }
            show(json, &client.set_policy(&update).await?, print_policy)
        }
        CtlCommand::Catalog(CatalogCommand::Ls { kind, platform, region, state }) => {
            let mut query = catalog_query(kind.as_deref(), platform.as_deref());
            for (name, value) in [("region", region), ("state", state)] {
                if let Some(v) = value {
                    query.push_str(&format!("&{name}={}", query_value(v)));
                }
            }
            show(json, client.catalog_all(&query).await?.as_slice(), print_catalog)
        }
        CtlCommand::Catalog(CatalogCommand::Watch { kind, platform }) => {
            let query = catalog_query(kind.as_deref(), platform.as_deref());
            let mut page = client.catalog(&query, None).await?;
            loop {
                let revision = page.revision.unwrap_or_default();
                if !json {
                    out!("revision {revision}:");
                }
                show(json, page.items.as_slice(), print_catalog)?;
                loop {
                    let next = client.watch_catalog(&query, revision, 300).await?;
                    if next.revision != page.revision {
                        page = next;
                        break;
                    }
                }
            }
        }
        CtlCommand::Catalog(CatalogCommand::Show { id }) => {
            show(json, &client.catalog_entry(id).await?, print_entry)
        }
        CtlCommand::Platform(PlatformCommand::Inventory { platform }) => {
            show(json, client.inventory_all(platform).await?.as_slice(), print_inventory)
        }
        CtlCommand::Platform(PlatformCommand::Refresh { platform }) => {
            show(json, &client.refresh(platform).await?, print_refresh_started)
        }
        CtlCommand::Platform(PlatformCommand::Refreshes { platform }) => {
            show(json, client.refreshes(platform).await?.as_slice(), print_refreshes)
        }
        CtlCommand::Authorizations { audit: false } => {
            show(json, client.authorizations().await?.as_slice(), print_authorizations)
        }
        CtlCommand::Authorizations { audit: true } => {
            show(json, client.authorization_audit().await?.as_slice(), print_audit)
        }
    }
}

/// `kind=…&platform=…` for the catalog's filters.
fn catalog_query(kind: Option<&str>, platform: Option<&str>) -> String {
    let mut query = Vec::new();
    if let Some(k) = kind {
        query.push(format!("kind={}", query_value(k)));
    }
    if let Some(p) = platform {
        query.push(format!("platform={}", query_value(p)));
    }
    query.join("&")
}

/// Percent-encode a query value.
fn query_value(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A Unix time in ms as a UTC date and time.
fn when(unix_ms: u64) -> String {
    skybridge_gateway::time::format_utc(unix_ms)
}

fn lower<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

pub(super) fn print_catalog(entries: &[EntryView]) {
    let rows = entries
        .iter()
        .map(|e| {
            let offers: Vec<String> =
                e.offered_by.iter().map(|o| format!("{} ({})", o.platform, o.presence)).collect();
            vec![
                e.entry.id.clone(),
                e.entry.kind.clone(),
                e.entry.name.clone(),
                e.state.clone(),
                offers.join(", "),
            ]
        })
        .collect();
    table(&["ID", "KIND", "NAME", "STATE", "OFFERED BY"], rows);
}

fn print_entry(e: &EntryView) {
    out!("entry      {}", e.entry.id);
    out!("capability {} {}", e.entry.kind, e.entry.name);
    out!("match key  {}", e.entry.match_key);
    out!("created    {}", when(e.entry.created_ms));
    out!("state      {}", e.state);
    let rows = e
        .offered_by
        .iter()
        .map(|o| {
            vec![
                o.platform.clone(),
                o.presence.clone(),
                o.native_id.clone(),
                o.service.as_ref().map(|s| s.endpoint.clone()).unwrap_or_else(|| "-".into()),
                o.first_seen_ms.map(when).unwrap_or_else(|| "-".into()),
                when(o.since_ms),
            ]
        })
        .collect();
    out!();
    table(&["PLATFORM", "PRESENCE", "NATIVE ID", "ENDPOINT", "FIRST SEEN", "GRANTED"], rows);
}

pub(super) fn print_inventory(records: &[InventoryRecord]) {
    let rows = records
        .iter()
        .map(|r| {
            vec![
                r.service.native_id.clone(),
                r.service.kind.clone(),
                r.service.name.clone(),
                lower(&r.presence),
                or_dash(r.service.region.as_ref()),
                when(r.first_seen_ms),
            ]
        })
        .collect();
    table(&["NATIVE ID", "KIND", "NAME", "PRESENCE", "REGION", "FIRST SEEN"], rows);
}

fn print_refresh_started(r: &RefreshStarted) {
    if r.already_running {
        out!("{}: a refresh was already running; this request joined it", r.platform);
    } else {
        out!(
            "{}: refresh started; `skybridge ctl platform refreshes {}` shows its outcome",
            r.platform,
            r.platform
        );
    }
}

fn print_refreshes(records: &[RefreshRecord]) {
    let rows = records
        .iter()
        .map(|r| {
            let outcome = match &r.outcome {
                Outcome::Integrated { summary: s } => format!(
                    "{} services: +{} ~{} ={} missing {} withdrawn {}{}",
                    s.reported,
                    s.added,
                    s.changed,
                    s.unchanged,
                    s.missing,
                    s.withdrawn,
                    if s.held { " (shrink held)" } else { "" }
                ),
                Outcome::DiscoveryFailed { reason } => format!("discovery failed: {reason}"),
                Outcome::Refused { reason } => format!("refused: {reason}"),
            };
            vec![
                r.seq.to_string(),
                when(r.at_ms),
                r.trigger.map(|t| lower(&t)).unwrap_or_else(|| "-".into()),
                r.requests.to_string(),
                format!("{} ms", r.discovery_ms),
                outcome.lines().next().unwrap_or_default().chars().take(160).collect(),
            ]
        })
        .collect();
    table(&["SEQ", "AT", "TRIGGER", "REQUESTS", "DISCOVERY", "OUTCOME"], rows);
}

pub(super) fn print_authorizations(all: &[Authorization]) {
    let rows = all
        .iter()
        .map(|a| {
            vec![
                a.platform.clone(),
                a.match_key.clone(),
                lower(&a.state),
                a.attempts.to_string(),
                when(a.updated_ms),
                a.reason.chars().take(100).collect(),
            ]
        })
        .collect();
    table(&["PLATFORM", "CAPABILITY", "STATE", "ATTEMPTS", "UPDATED", "REASON"], rows);
}

fn print_audit(lines: &[AuditRecord]) {
    let rows = lines
        .iter()
        .map(|l| {
            vec![
                when(l.at_ms),
                l.platform.clone(),
                l.match_key.clone(),
                lower(&l.state),
                l.by.clone(),
                l.reason.chars().take(100).collect(),
            ]
        })
        .collect();
    table(&["AT", "PLATFORM", "CAPABILITY", "STATE", "BY", "REASON"], rows);
}

/// Print rows as aligned columns under a header.
fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}

fn or_dash<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

fn ms(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.1} ms")).unwrap_or_else(|| "-".into())
}

fn pct(x: f64) -> String {
    format!("{:.1} %", x * 100.0)
}

fn path(nodes: &[String]) -> String {
    nodes.join(" → ")
}

fn bytes(b: u64) -> String {
    let b = b as f64;
    match b {
        b if b >= 1e9 => format!("{:.1} GB", b / 1e9),
        b if b >= 1e6 => format!("{:.1} MB", b / 1e6),
        b if b >= 1e3 => format!("{:.1} kB", b / 1e3),
        b => format!("{b} B"),
    }
}

pub(super) fn print_nodes(nodes: &[NodeView]) {
    let rows = nodes
        .iter()
        .map(|n| {
            let seen = format!("{:.1} s ago", n.last_seen_ms as f64 / 1000.0);
            vec![
                n.name.clone(),
                n.role.to_string(),
                format!("{:?}", n.state).to_lowercase(),
                or_dash(n.listen),
                seen,
            ]
        })
        .collect();
    table(&["NAME", "ROLE", "STATE", "LISTEN", "LAST SEEN"], rows);
}

fn print_controllers(members: &[skybridge_gateway::admin::api::MemberView]) {
    let now = skybridge_gateway::time::now_unix_ms();
    let rows = members
        .iter()
        .map(|m| {
            let name = if m.this { format!("{} *", m.name) } else { m.name.clone() };
            let up = format!("{:.0} s", now.saturating_sub(m.since_ms) as f64 / 1000.0);
            vec![name, m.mesh.to_string(), format!("http://{}", m.admin), up]
        })
        .collect();
    table(&["NAME", "MESH", "ADMIN API", "MEMBER FOR"], rows);
}

fn stats_cells(st: &LinkStats) -> [String; 3] {
    [ms(st.rtt_ms), ms(Some(st.jitter_ms)), pct(st.loss)]
}

pub(super) fn print_links(links: &[LinkView]) {
    let rows = links
        .iter()
        .map(|l| {
            let [rtt, jitter, loss] = stats_cells(&l.stats);
            let used = match (l.usable, l.silent) {
                (true, _) => "yes",
                (false, true) => "no (silent)",
                (false, false) => "no",
            };
            vec![l.from.clone(), l.to.clone(), rtt, jitter, loss, used.into()]
        })
        .collect();
    table(&["FROM", "TO", "RTT", "JITTER", "LOSS", "USED"], rows);
}

pub(super) fn print_platforms(platforms: &[PlatformView]) {
    let rows = platforms
        .iter()
        .map(|p| {
            let relays = p
                .relays
                .iter()
                .map(|(r, st)| format!("{r} {}", ms(st.rtt_ms)))
                .collect::<Vec<_>>()
                .join(", ");
            vec![
                p.name.clone(),
                format!("{:?}", p.state).to_lowercase(),
                or_dash(p.nearest_relay.as_ref()),
                relays,
            ]
        })
        .collect();
    table(&["PLATFORM", "STATE", "NEAREST RELAY", "MEASURED RTT"], rows);
}

fn print_plugins(plugins: &[PluginView]) {
    let rows = plugins
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.world.clone(),
                format!("{} {}", p.plugin, p.version),
                p.sha256.chars().take(12).collect(),
                p.calls.to_string(),
                format!("{:.0} µs", p.mean_call_us),
                if p.failures.is_empty() {
                    "0".into()
                } else {
                    p.failures.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
                },
                p.rejections.to_string(),
                p.file.clone(),
            ]
        })
        .collect();
    table(&["NAME", "WORLD", "PLUGIN", "SHA-256", "CALLS", "MEAN", "FAILED", "REJECTED", "FILE"], rows);
}

pub(super) fn print_decision(c: &DecisionRecord) {
    let d = &c.decision;
    let weights = d.weights.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join(" ");
    out!("decision {}: {} → {}  (routing relays {} → {})", c.id, c.from, c.to, c.first_relay, c.second_relay);
    out!("scorer {}  weights {}", d.scorer, if weights.is_empty() { "(defaults)".into() } else { weights });
    let rows = d
        .candidates
        .iter()
        .enumerate()
        .map(|(i, cand)| {
            let [rtt, jitter, loss] = stats_cells(&cand.measured);
            vec![
                if i == d.winner { "*" } else { "" }.into(),
                path(&cand.path),
                cand.hops.to_string(),
                rtt,
                loss,
                jitter,
                cand.score.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into()),
                cand.explanation.clone(),
            ]
        })
        .collect();
    table(&["", "PATH", "HOPS", "RTT", "LOSS", "JITTER", "SCORE", "EXPLANATION"], rows);
}

fn print_decisions(records: &[DecisionRecord]) {
    let rows = records
        .iter()
        .map(|c| {
            let chosen = c.decision.candidates.get(c.decision.winner);
            vec![
                c.id.to_string(),
                c.from.clone(),
                c.to.clone(),
                chosen.map(|w| path(&w.path)).unwrap_or_default(),
                ms(chosen.and_then(|w| w.measured.rtt_ms)),
            ]
        })
        .collect();
    table(&["ID", "FROM", "TO", "CHOSEN PATH", "RTT"], rows);
}

pub(super) fn print_binding(b: &BindingView) {
    let mode =
        serde_json::to_value(b.mode).ok().and_then(|m| m.as_str().map(str::to_owned)).unwrap_or_default();
    out!("binding {}: {} → {}/{} ({mode})  via {}", b.id, b.listen, b.to, b.endpoint, path(&b.tunnel.hops));
    out!(
        "tunnel {} for {}, path from decision {}; {} connections, {} up, {} down",
        b.tunnel.id,
        b.tunnel.account,
        b.tunnel.decision,
        b.connections,
        bytes(b.bytes_up),
        bytes(b.bytes_down)
    );
    if b.mode == Mode::Http {
        match &b.account {
            Some(account) => out!("http: only account {account} may use it"),
            None => out!("http: any account with credentials at {} may use it", b.to),
        }
    }
    for r in &b.reroutes {
        out!("re-routed from {} to {} ({})", path(&r.from_hops), path(&r.to_hops), r.reason);
    }
}

fn print_bindings(bindings: &[BindingView]) {
    let rows = bindings
        .iter()
        .map(|b| {
            let owner = match b.epoch {
                Some(epoch) => format!("{} (epoch {epoch})", b.owner),
                None => b.owner.clone(),
            };
            vec![
                b.id.to_string(),
                b.listen.to_string(),
                format!("{}/{}", b.to, b.endpoint),
                path(&b.tunnel.hops),
                owner,
                b.connections.to_string(),
                bytes(b.bytes_down),
                b.reroutes.len().to_string(),
            ]
        })
        .collect();
    table(&["ID", "LISTEN", "TARGET", "PATH", "OWNER", "CONNS", "BYTES DOWN", "RE-ROUTES"], rows);
}

/// A tunnel and the binding it carries (`ctl tunnels --json` prints these).
#[derive(Serialize)]
struct BoundTunnel {
    binding: u64,
    #[serde(flatten)]
    tunnel: TunnelRecord,
}

fn print_tunnels(tunnels: &[BoundTunnel]) {
    let rows = tunnels
        .iter()
        .map(|BoundTunnel { binding, tunnel: t }| {
            vec![
                t.id.to_string(),
                binding.to_string(),
                t.decision.to_string(),
                path(&t.hops),
                t.endpoint.clone(),
                t.account.clone(),
                or_dash(t.capability.as_ref()),
                when(t.expires_unix_ms),
            ]
        })
        .collect();
    table(&["ID", "BINDING", "DECISION", "HOPS", "ENDPOINT", "ACCOUNT", "CAPABILITY", "EXPIRES"], rows);
}

fn print_unbound(unbound: &Unbound) {
    match unbound {
        Unbound::Closed(b) => out!("binding {} closed; tunnel {} torn down", b.id, b.tunnel.id),
        Unbound::Gone(g) => out!("binding {} {}", g.id, g.closed),
    }
}

pub(super) fn print_sessions(sessions: &[SessionRecord]) {
    let rows = sessions
        .iter()
        .map(|x| {
            vec![
                x.id.to_string(),
                x.account.clone(),
                x.first.client.to_string(),
                format!("{} ({})", x.second.tunnel, path(&x.second.hops)),
                format!("{}/{}", x.third.platform, x.third.endpoint),
                or_dash(x.third.principal.as_ref()),
                bytes(x.bytes_up),
                bytes(x.bytes_down),
                x.outcome.clone().unwrap_or_else(|| "open".into()),
            ]
        })
        .collect();
    table(&["ID", "ACCOUNT", "CLIENT", "TUNNEL", "TARGET", "AS", "UP", "DOWN", "OUTCOME"], rows);
}

fn mappings(a: &AccountView) -> String {
    a.credentials.iter().map(|(p, c)| format!("{p}: {}", c.principal)).collect::<Vec<_>>().join(", ")
}

fn print_accounts(accounts: &[AccountView]) {
    let rows = accounts.iter().map(|a| vec![a.id.clone(), mappings(a)]).collect();
    table(&["ACCOUNT", "MAPPED TO"], rows);
}

pub(super) fn print_account(a: &AccountView) {
    let m = mappings(a);
    out!("account {}: {}", a.id, if m.is_empty() { "no mappings".into() } else { m });
}

fn print_deleted(d: &Deleted) {
    out!("account {} deleted", d.deleted);
}

pub(super) fn print_policy(p: &Policy) {
    out!("scorer             {}", p.scorer.display());
    let weights = p.weights.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join(" ");
    out!("weights            {}", if weights.is_empty() { "(scorer defaults)".into() } else { weights });
    out!("k                  {}", p.k);
    out!("probes             {}", p.probes);
    out!("probe_interval_ms  {}", p.probe_interval_ms);
    out!("reroute_loss       {}", p.reroute_loss);
}
