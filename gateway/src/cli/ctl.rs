//! `skybridge ctl …`: the controller's admin API from the command line, as tables or `--json`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

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
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Debug, Subcommand)]
enum CtlCommand {
    /// Registered relays and sites, up or down.
    Nodes,
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
    /// Show a stored decision record, or the latest ones without an id.
    Connection {
        /// The record's id.
        id: Option<u64>,
    },
    /// Open a binding: a listener on the controller that carries TCP to an endpoint the target
    /// platform's site publishes, over the best path. With `--mode http` it is a reverse proxy
    /// that authenticates each request with a Skybridge account and has the target's adapter
    /// re-sign it with the account's credentials there (`ctl account map`).
    #[command(
        after_help = "Examples:\n  skybridge ctl bind --from site-a --to site-b --endpoint web\n  curl http://LISTEN/\n\n  \
                      skybridge ctl bind --to aws-east --endpoint s3 --mode http --account acme-ops\n  \
                      AWS_ACCESS_KEY_ID=acme-ops AWS_SECRET_ACCESS_KEY=ACCOUNT-SECRET \\\n    \
                      aws --endpoint-url http://LISTEN s3 ls"
    )]
    Bind {
        /// The requesting platform (default: the ingress's platform, `[ingress] platform`).
        #[arg(long)]
        from: Option<String>,
        /// The target platform.
        #[arg(long)]
        to: String,
        /// The endpoint (as the target site's config names it).
        #[arg(long)]
        endpoint: String,
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
    },
    /// List bindings, with their paths, re-routes and byte counts; or show one.
    Bindings {
        /// A binding id.
        id: Option<u64>,
    },
    /// Close a binding and tear its tunnel down.
    Unbind {
        /// The binding id.
        id: u64,
    },
    /// Recent uses of bindings, each as its three sessions (client, tunnel, target).
    Sessions,
    /// Manage accounts and what they map to at each target platform.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Show or change the path policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
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
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
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
    let client = Client::new(&args.url, token)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (value, print): (Value, fn(&Value)) = runtime.block_on(async {
        Ok::<(Value, fn(&Value)), anyhow::Error>(match &args.command {
            CtlCommand::Nodes => (client.call(Method::GET, "/v1/nodes", None).await?, print_nodes),
            CtlCommand::Links => (client.call(Method::GET, "/v1/links", None).await?, print_links),
            CtlCommand::Platforms => {
                (client.call(Method::GET, "/v1/platforms", None).await?, print_platforms)
            }
            CtlCommand::Connect { from, to } => {
                let body = json!({ "from": from, "to": to });
                (client.call(Method::POST, "/v1/connections", Some(body)).await?, print_connection)
            }
            CtlCommand::Connection { id: Some(id) } => {
                (client.call(Method::GET, &format!("/v1/connections/{id}"), None).await?, print_connection)
            }
            CtlCommand::Connection { id: None } => {
                (client.call(Method::GET, "/v1/connections", None).await?, print_connections)
            }
            CtlCommand::Bind { from, to, endpoint, listen, ttl_s, mode, account } => {
                let mut body = json!({ "to": to, "endpoint": endpoint, "mode": mode });
                if let Some(a) = account {
                    body["account"] = json!(a);
                }
                if let Some(f) = from {
                    body["from"] = json!(f);
                }
                if let Some(l) = listen {
                    body["listen"] = json!(l);
                }
                if let Some(t) = ttl_s {
                    body["ttl_s"] = json!(t);
                }
                (client.call(Method::POST, "/v1/bindings", Some(body)).await?, print_binding)
            }
            CtlCommand::Bindings { id: Some(id) } => {
                (client.call(Method::GET, &format!("/v1/bindings/{id}"), None).await?, print_binding)
            }
            CtlCommand::Bindings { id: None } => {
                (client.call(Method::GET, "/v1/bindings", None).await?, print_bindings)
            }
            CtlCommand::Unbind { id } => {
                (client.call(Method::DELETE, &format!("/v1/bindings/{id}"), None).await?, print_unbound)
            }
            CtlCommand::Sessions => (client.call(Method::GET, "/v1/sessions", None).await?, print_sessions),
            CtlCommand::Account(AccountCommand::List) => {
                (client.call(Method::GET, "/v1/accounts", None).await?, print_accounts)
            }
            CtlCommand::Account(AccountCommand::Create { id, secret_file }) => {
                let body = json!({ "id": id, "secret": read_secret(secret_file)? });
                (client.call(Method::POST, "/v1/accounts", Some(body)).await?, print_account)
            }
            CtlCommand::Account(AccountCommand::Map { id, platform, principal, secret_file, attributes }) => {
                let attributes: serde_json::Map<String, Value> =
                    attributes.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
                let body =
                    json!({ "principal": principal, "secret": read_secret(secret_file)?, "attributes": attributes });
                let path = format!("/v1/accounts/{id}/credentials/{platform}");
                (client.call(Method::PUT, &path, Some(body)).await?, print_account)
            }
            CtlCommand::Account(AccountCommand::Unmap { id, platform }) => {
                let path = format!("/v1/accounts/{id}/credentials/{platform}");
                (client.call(Method::DELETE, &path, None).await?, print_account)
            }
            CtlCommand::Account(AccountCommand::Delete { id }) => {
                (client.call(Method::DELETE, &format!("/v1/accounts/{id}"), None).await?, print_deleted)
            }
            CtlCommand::Policy(PolicyCommand::Show) => {
                (client.call(Method::GET, "/v1/policy", None).await?, print_policy)
            }
            CtlCommand::Policy(PolicyCommand::Set { scorer, weights, k, probes, probe_interval_ms, reroute_loss }) => {
                let mut body = serde_json::Map::new();
                if let Some(s) = scorer {
                    body.insert("scorer".into(), json!(s));
                }
                if !weights.is_empty() {
                    let w: serde_json::Map<String, Value> =
                        weights.iter().map(|(n, v)| (n.clone(), json!(v))).collect();
                    body.insert("weights".into(), Value::Object(w));
                }
                for (key, value) in [
                    ("k", k.map(|v| v as u64)),
                    ("probes", probes.map(u64::from)),
                    ("probe_interval_ms", *probe_interval_ms),
                ] {
                    if let Some(v) = value {
                        body.insert(key.into(), json!(v));
                    }
                }
                if let Some(r) = reroute_loss {
                    body.insert("reroute_loss".into(), json!(r));
                }
                if body.is_empty() {
                    bail!("nothing to change: give --scorer, --weight, --k, --probes, --probe-interval-ms or --reroute-loss");
                }
                (client.call(Method::PUT, "/v1/policy", Some(Value::Object(body))).await?, print_policy)
            }
        })
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print(&value);
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) struct Client {
    url: String,
    authority: String,
    token: String,
}

impl Client {
    pub(super) fn new(url: &str, token: String) -> anyhow::Result<Client> {
        let uri: Uri = url.parse().with_context(|| format!("`{url}` is not a URL"))?;
        if uri.scheme_str() != Some("http") {
            bail!("`{url}`: the admin API speaks plain http (put it behind a TLS proxy for remote use)");
        }
        let authority = uri.authority().context("the URL has no host")?.to_string();
        Ok(Client { url: url.trim_end_matches('/').to_owned(), authority, token })
    }

    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .with_context(|| format!("cannot reach the admin API at {}", self.url))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let body = body.map(|b| serde_json::to_vec(&b)).transpose()?.unwrap_or_default();
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &self.authority)
            .header(AUTHORIZATION, format!("Bearer {}", self.token))
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let response = sender.send_request(request).await.context("the admin API did not answer")?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        let value: Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("the admin API answered {status} with a body that is not JSON"))?;
        if !status.is_success() {
            bail!("{} (HTTP {status})", value["error"].as_str().unwrap_or("no reason given"));
        }
        Ok(value)
    }
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
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn ms(v: &Value) -> String {
    v.as_f64().map(|x| format!("{x:.1} ms")).unwrap_or_else(|| "-".into())
}

fn pct(v: &Value) -> String {
    v.as_f64().map(|x| format!("{:.1} %", x * 100.0)).unwrap_or_else(|| "-".into())
}

fn rows(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

pub(super) fn print_nodes(v: &Value) {
    let rows = rows(v)
        .iter()
        .map(|n| {
            let seen = n["last_seen_ms"]
                .as_u64()
                .map(|m| format!("{:.1} s ago", m as f64 / 1000.0))
                .unwrap_or_default();
            vec![s(&n["name"]), s(&n["role"]), s(&n["state"]), s(&n["listen"]), seen]
        })
        .collect();
    table(&["NAME", "ROLE", "STATE", "LISTEN", "LAST SEEN"], rows);
}

pub(super) fn print_links(v: &Value) {
    let rows = rows(v)
        .iter()
        .map(|l| {
            let st = &l["stats"];
            let usable = if l["usable"].as_bool() == Some(true) { "yes" } else { "no" };
            vec![
                s(&l["from"]),
                s(&l["to"]),
                ms(&st["rtt_ms"]),
                ms(&st["jitter_ms"]),
                pct(&st["loss"]),
                usable.into(),
            ]
        })
        .collect();
    table(&["FROM", "TO", "RTT", "JITTER", "LOSS", "USED"], rows);
}

pub(super) fn print_platforms(v: &Value) {
    let rows = rows(v)
        .iter()
        .map(|p| {
            let relays = p["relays"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(r, st)| format!("{r} {}", ms(&st["rtt_ms"])))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            vec![s(&p["name"]), s(&p["state"]), s(&p["nearest_relay"]), relays]
        })
        .collect();
    table(&["PLATFORM", "STATE", "NEAREST RELAY", "MEASURED RTT"], rows);
}

pub(super) fn print_connection(c: &Value) {
    let d = &c["decision"];
    let winner = d["winner"].as_u64().unwrap_or(u64::MAX);
    let weights = d["weights"]
        .as_array()
        .map(|w| w.iter().map(|p| format!("{}={}", s(&p[0]), s(&p[1]))).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    println!(
        "connection {}: {} → {}  (routing relays {} → {})",
        s(&c["id"]),
        s(&c["from"]),
        s(&c["to"]),
        s(&c["first_relay"]),
        s(&c["second_relay"])
    );
    println!(
        "scorer {}  weights {}",
        s(&d["scorer"]),
        if weights.is_empty() { "(defaults)".into() } else { weights }
    );
    let rows = rows(&d["candidates"])
        .iter()
        .enumerate()
        .map(|(i, cand)| {
            let path = cand["path"]
                .as_array()
                .map(|p| p.iter().map(s).collect::<Vec<_>>().join(" → "))
                .unwrap_or_default();
            let m = &cand["measured"];
            let mark = if i as u64 == winner { "*" } else { "" };
            vec![
                mark.into(),
                path,
                s(&cand["hops"]),
                ms(&m["rtt_ms"]),
                pct(&m["loss"]),
                ms(&m["jitter_ms"]),
                cand["score"].as_f64().map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into()),
                s(&cand["explanation"]),
            ]
        })
        .collect();
    table(&["", "PATH", "HOPS", "RTT", "LOSS", "JITTER", "SCORE", "EXPLANATION"], rows);
}

fn print_connections(v: &Value) {
    let rows = rows(v)
        .iter()
        .map(|c| {
            let d = &c["decision"];
            let chosen = d["winner"]
                .as_u64()
                .and_then(|w| d["candidates"].get(w as usize))
                .cloned()
                .unwrap_or(Value::Null);
            let path = chosen["path"]
                .as_array()
                .map(|p| p.iter().map(s).collect::<Vec<_>>().join(" → "))
                .unwrap_or_default();
            vec![s(&c["id"]), s(&c["from"]), s(&c["to"]), path, ms(&chosen["measured"]["rtt_ms"])]
        })
        .collect();
    table(&["ID", "FROM", "TO", "CHOSEN PATH", "RTT"], rows);
}

fn hops(v: &Value) -> String {
    v.as_array().map(|p| p.iter().map(s).collect::<Vec<_>>().join(" → ")).unwrap_or_default()
}

fn bytes(v: &Value) -> String {
    let b = v.as_u64().unwrap_or(0) as f64;
    match b {
        b if b >= 1e9 => format!("{:.1} GB", b / 1e9),
        b if b >= 1e6 => format!("{:.1} MB", b / 1e6),
        b if b >= 1e3 => format!("{:.1} kB", b / 1e3),
        b => format!("{b} B"),
    }
}

pub(super) fn print_binding(b: &Value) {
    println!(
        "binding {}: {} → {}/{} ({})  via {}",
        s(&b["id"]),
        s(&b["listen"]),
        s(&b["to"]),
        s(&b["endpoint"]),
        s(&b["mode"]),
        hops(&b["tunnel"]["hops"])
    );
    println!(
        "tunnel {} for {}, path from decision {}; {} connections, {} up, {} down",
        s(&b["tunnel"]["id"]),
        s(&b["tunnel"]["account"]),
        s(&b["tunnel"]["decision"]),
        s(&b["connections"]),
        bytes(&b["bytes_up"]),
        bytes(&b["bytes_down"])
    );
    if b["mode"] == "http" {
        match b["account"].as_str() {
            Some(account) => println!("http: only account {account} may use it"),
            None => println!("http: any account with credentials at {} may use it", s(&b["to"])),
        }
    }
    for r in rows(&b["reroutes"]) {
        println!("re-routed from {} to {} ({})", hops(&r["from_hops"]), hops(&r["to_hops"]), s(&r["reason"]));
    }
}

fn print_bindings(v: &Value) {
    let rows = rows(v)
        .iter()
        .map(|b| {
            vec![
                s(&b["id"]),
                s(&b["listen"]),
                format!("{}/{}", s(&b["to"]), s(&b["endpoint"])),
                hops(&b["tunnel"]["hops"]),
                s(&b["connections"]),
                bytes(&b["bytes_down"]),
                b["reroutes"].as_array().map(Vec::len).unwrap_or(0).to_string(),
            ]
        })
        .collect();
    table(&["ID", "LISTEN", "TARGET", "PATH", "CONNS", "BYTES DOWN", "RE-ROUTES"], rows);
}

fn print_unbound(b: &Value) {
    println!("binding {} closed; tunnel {} torn down", s(&b["id"]), s(&b["tunnel"]["id"]));
}

pub(super) fn print_sessions(v: &Value) {
    let rows = rows(v)
        .iter()
        .map(|x| {
            vec![
                s(&x["id"]),
                s(&x["account"]),
                s(&x["first"]["client"]),
                format!("{} ({})", s(&x["second"]["tunnel"]), hops(&x["second"]["hops"])),
                format!("{}/{}", s(&x["third"]["platform"]), s(&x["third"]["endpoint"])),
                s(&x["third"]["principal"]),
                bytes(&x["bytes_up"]),
                bytes(&x["bytes_down"]),
                x["outcome"].as_str().unwrap_or("open").to_owned(),
            ]
        })
        .collect();
    table(&["ID", "ACCOUNT", "CLIENT", "TUNNEL", "TARGET", "AS", "UP", "DOWN", "OUTCOME"], rows);
}

fn mappings(a: &Value) -> String {
    a["credentials"]
        .as_object()
        .map(|m| m.iter().map(|(p, c)| format!("{p}: {}", s(&c["principal"]))).collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

fn print_accounts(v: &Value) {
    let rows = rows(v).iter().map(|a| vec![s(&a["id"]), mappings(a)]).collect();
    table(&["ACCOUNT", "MAPPED TO"], rows);
}

fn print_account(a: &Value) {
    let m = mappings(a);
    println!("account {}: {}", s(&a["id"]), if m.is_empty() { "no mappings".into() } else { m });
}

fn print_deleted(v: &Value) {
    println!("account {} deleted", s(&v["deleted"]));
}

pub(super) fn print_policy(p: &Value) {
    println!("scorer             {}", s(&p["scorer"]));
    let weights = p["weights"]
        .as_object()
        .map(|w| w.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    println!("weights            {}", if weights.is_empty() { "(scorer defaults)".into() } else { weights });
    println!("k                  {}", s(&p["k"]));
    println!("probes             {}", s(&p["probes"]));
    println!("probe_interval_ms  {}", s(&p["probe_interval_ms"]));
    println!("reroute_loss       {}", s(&p["reroute_loss"]));
}
