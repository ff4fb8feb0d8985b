//! Command-line interface: argument types and dispatch. Each command group has its own module.

/// `println!` for what a tool prints: when its reader has gone (`skybridge ctl … | head`), the
/// tool ends quietly, as Unix tools do, instead of panicking on the closed pipe.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            crate::cli::output_failed(e);
        }
    }};
}

mod certs;
mod ctl;
mod demo;
mod node;
mod plugin;
mod plugin_new;

use std::process::ExitCode;

use clap::{ArgAction, Parser, Subcommand};

/// Skybridge — a multi-cloud gateway.
///
/// Exit status: 0 success; 1 a negative answer (e.g. an authorization refused); 2 an error.
#[derive(Debug, Parser)]
#[command(name = "skybridge", version, about, long_about, propagate_version = true)]
pub struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace). `--log-level` and RUST_LOG override it.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Log level: error, warn, info, debug or trace (default: info for nodes, warn for tools,
    /// error for the demo).
    /// RUST_LOG, when set, overrides it with its own per-module filter.
    #[arg(long, value_name = "LEVEL", env = "SKYBRIDGE_LOG_LEVEL", global = true)]
    pub log_level: Option<tracing::Level>,

    /// Log format on stderr: `text` for people, `json` (one object per line, with the spans an
    /// event happened in) for log collectors.
    #[arg(long, value_name = "FORMAT", env = "SKYBRIDGE_LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write, inspect and try out WebAssembly plugins (scorers, authorizers, adapters).
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Make a development CA and node certificates for the mesh's mutual TLS.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Run the controller: membership, path engine, decisions, admin API.
    #[command(after_help = "Example:\n  skybridge controller --config examples/controller.toml")]
    Controller(node::NodeArgs),
    /// Run a relay: a mesh node that probes its links and forwards traffic.
    #[command(after_help = "Example:\n  skybridge relay --config examples/relay.toml")]
    Relay(node::NodeArgs),
    /// Run a site: a platform's agent, which probes relays and requests connections.
    #[command(after_help = "Example:\n  skybridge site --config examples/site.toml")]
    Site(node::NodeArgs),
    /// Talk to a controller's admin API (nodes, links, platforms, connections, policy).
    Ctl(ctl::CtlArgs),
    /// Run a whole mesh in this process over an emulated WAN and show its path decisions.
    Demo(demo::DemoArgs),
    /// Print a shell completion script.
    #[command(after_help = "Examples:\n  skybridge completions bash > /etc/bash_completion.d/skybridge\n  \
                            skybridge completions zsh > \"${fpath[1]}/_skybridge\"\n  \
                            skybridge completions fish > ~/.config/fish/completions/skybridge.fish")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, coloured on a terminal.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, the event's fields, the
    /// `span` it belongs to (node, binding, session, … with their fields) and the `spans` it
    /// happened in, outermost first.
    Json,
}

impl Cli {
    /// Whether the command runs a long-lived node (whose log should say more by default).
    pub fn runs_node(&self) -> bool {
        matches!(self.command, Command::Controller(_) | Command::Relay(_) | Command::Site(_))
    }

    /// Log to stderr at the level asked for: `RUST_LOG`, else `--log-level`, else `-v`'s, else
    /// info for nodes and warnings only for tools.
    pub fn init_logging(&self) {
        let verbose = if self.runs_node() { self.verbose.max(1) } else { self.verbose };
        // The demo's nodes run in its process: their warnings (a relay going dark is one of its
        // steps) would break up the steps it prints, so it shows errors only unless asked.
        let quiet = if matches!(self.command, Command::Demo(_)) {
            tracing::Level::ERROR
        } else {
            tracing::Level::WARN
        };
        let level = self.log_level.unwrap_or(match verbose {
            0 => quiet,
            1 => tracing::Level::INFO,
            2 => tracing::Level::DEBUG,
            _ => tracing::Level::TRACE,
        });
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level.as_str()));
        let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
        match self.log_format {
            LogFormat::Text => fmt.init(),
            LogFormat::Json => {
                fmt.json().flatten_event(true).with_current_span(true).with_span_list(true).init()
            }
        }
    }
}

/// Run the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Plugin(cmd) => plugin::run(cmd),
        Command::Certs(cmd) => certs::run(cmd),
        Command::Controller(args) => node::run(node::RoleToRun::Controller, args),
        Command::Relay(args) => node::run(node::RoleToRun::Relay, args),
        Command::Site(args) => node::run(node::RoleToRun::Site, args),
        Command::Ctl(args) => ctl::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "skybridge", &mut script);
            out!("{}", String::from_utf8_lossy(&script).trim_end());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Stdout could not be written: a reader that went away ends the tool quietly (status 0);
/// anything else is an error.
pub fn output_failed(e: std::io::Error) -> ! {
    if e.kind() != std::io::ErrorKind::BrokenPipe {
        eprintln!("error: cannot write the output: {e}");
        std::process::exit(2);
    }
    std::process::exit(0)
}
