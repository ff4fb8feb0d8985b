//! `skybridge plugin …`: inspect a plugin and try it out from the command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};
use skybridge_gateway::plugin::{
    Description, EngineOptions, Format, ImportStatus, Plugin, PluginEngine, PluginLimits, PluginSpec, World,
    authorization, scoring, types,
};

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Write a new plugin crate: the SDK dependency, the plugin build profile, an
    /// implementation of the kind's trait with native tests, and a README with the commands
    /// that test, build and load it.
    #[command(
        after_help = "Example:\n  skybridge plugin new scorer fewest-hops\n  cd fewest-hops && cargo test\n  cargo build --profile plugin --target wasm32-unknown-unknown\n  skybridge plugin inspect target/wasm32-unknown-unknown/plugin/fewest_hops.wasm"
    )]
    New {
        /// What the plugin is.
        #[arg(value_enum)]
        kind: super::plugin_new::Kind,
        /// The crate's name: lower-case letters, digits and dashes (`fewest-hops`).
        name: String,
        /// The folder to write it to (must not exist or be empty) [default: ./NAME].
        #[arg(long)]
        path: Option<PathBuf>,
        /// The `plugin-sdk` folder of a Skybridge checkout [default: the one this binary was
        /// built from].
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Show a plugin's world, self-description, exports, imports, size and SHA-256.
    Inspect {
        /// The component (.wasm).
        file: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    /// Score one path with a scorer plugin and print the preference value and explanation.
    #[command(
        after_help = "Example:\n  skybridge plugin score --plugin target/plugins/weighted_scorer.wasm \\\n      --latency-ms 30 --loss 0.01 --jitter-ms 2 --hops 3 --weight latency=2"
    )]
    Score {
        /// The scorer component (.wasm).
        #[arg(long)]
        plugin: PathBuf,
        /// Path round-trip latency in milliseconds.
        #[arg(long)]
        latency_ms: f64,
        /// Path loss ratio, 0 to 1.
        #[arg(long, default_value_t = 0.0)]
        loss: f64,
        /// Path jitter in milliseconds.
        #[arg(long, default_value_t = 0.0)]
        jitter_ms: f64,
        /// Relay hops on the path.
        #[arg(long, default_value_t = 1)]
        hops: u32,
        /// An extra metric, NAME=VALUE (repeatable).
        #[arg(long = "extra", value_name = "NAME=VALUE", value_parser = parse_number_pair)]
        extra: Vec<(String, f64)>,
        /// A weight, NAME=VALUE (repeatable); unset weights take the scorer's defaults.
        #[arg(long = "weight", value_name = "NAME=VALUE", value_parser = parse_number_pair)]
        weights: Vec<(String, f64)>,
        #[command(flatten)]
        common: CallArgs,
    },
    /// Ask an authorizer plugin to decide one capability request. Exit 0 granted, 1 refused.
    #[command(
        after_help = "Example:\n  skybridge plugin authorize --plugin target/plugins/allowlist_authorizer.wasm \\\n      --set 'allow.ops=acme-* aws-* object-storage/*' \\\n      --account acme-ops --platform aws-east --capability object-storage/logs"
    )]
    Authorize {
        /// The authorizer component (.wasm).
        #[arg(long)]
        plugin: PathBuf,
        /// The requesting account.
        #[arg(long)]
        account: String,
        /// The platform offering the capability.
        #[arg(long)]
        platform: String,
        /// The capability, KIND/NAME.
        #[arg(long, value_name = "KIND/NAME")]
        capability: String,
        /// A capability attribute, KEY=VALUE (repeatable).
        #[arg(long = "attr", value_name = "KEY=VALUE", value_parser = parse_text_pair)]
        attributes: Vec<(String, String)>,
        #[command(flatten)]
        common: CallArgs,
    },
}

/// How the plugin is sandboxed and cached.
#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// CPU deadline per call, in milliseconds.
    #[arg(long, default_value_t = PluginLimits::default().deadline_ms)]
    deadline_ms: u64,
    /// Memory limit per instance, in MiB.
    #[arg(long, default_value_t = PluginLimits::default().memory_mib)]
    memory_mib: usize,
    /// Where compiled plugins are cached [default: $XDG_CACHE_HOME/skybridge/plugins].
    #[arg(long, env = "SKYBRIDGE_PLUGIN_CACHE")]
    cache_dir: Option<PathBuf>,
    /// Compile every time; do not read or write the cache.
    #[arg(long, conflicts_with = "cache_dir")]
    no_cache: bool,
}

/// Options shared by the commands that call a plugin.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// A configuration value for the plugin, KEY=VALUE (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_text_pair)]
    config: Vec<(String, String)>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    sandbox: SandboxArgs,
}

pub fn run(cmd: PluginCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PluginCommand::New { kind, name, path, sdk } => {
            let dir = super::plugin_new::run(kind, &name, path, sdk)?;
            out!("wrote {} (see its README.md): cd {} && cargo test", dir.display(), dir.display());
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Inspect { file, json, sandbox } => {
            let plugin = load(&file, &[], &sandbox)?;
            if json {
                out!("{}", serde_json::to_string_pretty(plugin.info())?);
            } else {
                print_inspect(&file, &plugin);
            }
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Score { plugin, latency_ms, loss, jitter_ms, hops, extra, weights, common } => {
            let plugin = load(&plugin, &common.config, &common.sandbox)?;
            expect_world(&plugin, World::Scorer)?;
            let metrics = scoring::PathMetrics {
                rtt_ms: latency_ms,
                loss,
                jitter_ms,
                hops,
                extra: named_values(extra),
            };
            let preference = plugin.score(&metrics, &named_values(weights))?;
            if common.json {
                out!("{}", serde_json::to_string_pretty(&preference)?);
            } else {
                out!("preference  {}", preference.value);
                out!("explanation {}", preference.explanation);
            }
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Authorize { plugin, account, platform, capability, attributes, common } => {
            let plugin = load(&plugin, &common.config, &common.sandbox)?;
            expect_world(&plugin, World::Authorizer)?;
            let Some((kind, name)) = capability.split_once('/') else {
                bail!("--capability must be KIND/NAME, got `{capability}`");
            };
            let request = authorization::AuthorizationRequest {
                account,
                platform,
                capability: types::Capability {
                    kind: kind.to_owned(),
                    name: name.to_owned(),
                    attributes: pairs(attributes),
                },
                context: vec![types::Pair { key: "source".into(), value: "skybridge-cli".into() }],
            };
            let decision = plugin.authorize(&request)?;
            if common.json {
                out!("{}", serde_json::to_string_pretty(&decision)?);
            } else {
                match &decision {
                    authorization::Decision::Grant(why) => out!("granted: {why}"),
                    authorization::Decision::Refuse(why) => out!("refused: {why}"),
                }
            }
            Ok(match decision {
                authorization::Decision::Grant(_) => ExitCode::SUCCESS,
                authorization::Decision::Refuse(_) => ExitCode::from(1),
            })
        }
    }
}

fn load(file: &Path, config: &[(String, String)], sandbox: &SandboxArgs) -> anyhow::Result<Plugin> {
    let engine = PluginEngine::new(EngineOptions {
        cache_dir: if sandbox.no_cache {
            None
        } else {
            sandbox.cache_dir.clone().or_else(skybridge_gateway::plugin::default_cache_dir)
        },
        ..EngineOptions::default()
    })?;
    let name = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "plugin".into());
    let mut spec = PluginSpec::new(name, file).with_limits(PluginLimits {
        deadline_ms: sandbox.deadline_ms,
        memory_mib: sandbox.memory_mib,
        ..PluginLimits::default()
    });
    for (k, v) in config {
        spec = spec.with_config(k, v);
    }
    Ok(engine.load(&spec)?)
}

fn expect_world(plugin: &Plugin, world: World) -> anyhow::Result<()> {
    if plugin.world() != world {
        let article = |w: World| if w == World::Authorizer || w == World::Adapter { "an" } else { "a" };
        bail!(
            "{} is {} {} plugin, not {} {world}",
            plugin.info().name,
            article(plugin.world()),
            plugin.world(),
            article(world)
        );
    }
    Ok(())
}

fn print_inspect(file: &Path, plugin: &Plugin) {
    let info = plugin.info();
    let (name, version) = info.description.name_version();
    out!("file     {}", file.display());
    out!("world    {}", info.world);
    out!("plugin   {name} {version}");
    out!("size     {} bytes", info.size);
    out!(
        "format   {}",
        match info.format {
            Format::Component => "component",
            Format::CoreModule => "core module with WIT metadata (wrapped into a component on load)",
        }
    );
    out!("sha256   {}", info.sha256);
    for (i, export) in info.exports.iter().enumerate() {
        out!("{:<8} {export}", if i == 0 { "exports" } else { "" });
    }
    if info.imports.is_empty() {
        out!("imports  none");
    }
    for (i, (import, status)) in info.imports.iter().enumerate() {
        let status = match status {
            ImportStatus::Provided => "provided",
            ImportStatus::WithheldTraps => "withheld: traps if called",
        };
        out!("{:<8} {import:<40} {status}", if i == 0 { "imports" } else { "" });
    }
    match &info.description {
        Description::Scorer(s) => {
            for (i, w) in s.weights.iter().enumerate() {
                out!(
                    "{:<8} {:<12} default {:<6} {}",
                    if i == 0 { "weights" } else { "" },
                    w.name,
                    w.default_value,
                    w.description
                );
            }
        }
        Description::Adapter(a) => {
            out!("cloud    {}", a.cloud_kind);
            out!("body     {}", if a.needs_body_sha256 { "needs SHA-256" } else { "streamed unhashed" });
        }
        Description::Authorizer(_) => {}
    }
}

fn named_values(pairs: Vec<(String, f64)>) -> Vec<types::NamedValue> {
    pairs.into_iter().map(|(name, value)| types::NamedValue { name, value }).collect()
}

fn pairs(pairs: Vec<(String, String)>) -> Vec<types::Pair> {
    pairs.into_iter().map(|(key, value)| types::Pair { key, value }).collect()
}

fn parse_text_pair(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("expected KEY=VALUE, got `{s}`"))?;
    if k.is_empty() {
        return Err(format!("empty key in `{s}`"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

fn parse_number_pair(s: &str) -> Result<(String, f64), String> {
    let (k, v) = parse_text_pair(s)?;
    let n: f64 = v.parse().map_err(|_| format!("`{v}` is not a number (in `{s}`)"))?;
    Ok((k, n))
}
