//! `skybridge certs …`: a development CA and node certificates for the mesh.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use skybridge_gateway::mesh::identity::{self, Role};

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create a development CA in DIR (ca.pem, and ca.key readable by you only).
    #[command(after_help = "Example:\n  skybridge certs init ./pki")]
    Init {
        /// The folder for the CA; must not hold one already.
        dir: PathBuf,
    },
    /// Issue a node certificate carrying the node's name and role, signed by the CA.
    #[command(
        after_help = "Example:\n  skybridge certs issue --ca ./pki --name r1 --role relay --out ./pki/nodes"
    )]
    Issue {
        /// The CA folder made by `skybridge certs init`.
        #[arg(long)]
        ca: PathBuf,
        /// The node's name: lower-case letters, digits and '-'.
        #[arg(long)]
        name: String,
        /// What the node acts as: controller, relay or site.
        #[arg(long)]
        role: Role,
        /// Where to write NAME.pem and NAME.key [default: the CA folder].
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub fn run(cmd: CertsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        CertsCommand::Init { dir } => {
            let cert = identity::init_ca(&dir)?;
            out!("CA created: {} (key: {})", cert.display(), dir.join("ca.key").display());
        }
        CertsCommand::Issue { ca, name, role, out } => {
            let out = out.unwrap_or_else(|| ca.clone());
            let (cert, key) = identity::issue(&ca, &name, role, &out)?;
            out!("{role} `{name}`: {} (key: {})", cert.display(), key.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
