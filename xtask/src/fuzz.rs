//! `cargo xtask fuzz`: the coverage-guided fuzz targets of `fuzz/` (cargo-fuzz, libFuzzer),
//! built offline with the stable toolchain (`RUSTC_BOOTSTRAP=1`, no sanitizer: the code is
//! safe Rust, so what fuzzing finds are panics, overflows — debug assertions are on — and
//! runaway allocations, which libFuzzer reports at 2 GiB).
//!
//! Each target starts from its committed corpus (`fuzz/corpus/TARGET/`) and, unless
//! `--no-save`, adds the inputs that reach new code to it and then minimizes it (libFuzzer's
//! merge), to be committed after long runs. A
//! crash stops the run with the input saved under `target/fuzz/artifacts/TARGET/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{run_cmd, target_dir, workspace_root};

/// The cargo-fuzz release this task installs when missing.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// What a run asks for.
struct Options {
    seconds: u64,
    save: bool,
    targets: Vec<String>,
}

fn options(args: &[String]) -> Result<Options> {
    let mut options = Options { seconds: 60, save: true, targets: Vec::new() };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => {
                let value = args.next().context("--seconds needs a number")?;
                options.seconds =
                    value.parse().with_context(|| format!("--seconds `{value}` is not a number"))?;
            }
            "--no-save" => options.save = false,
            other if other.starts_with('-') => bail!("unknown fuzz option `{other}`"),
            target => options.targets.push(target.to_owned()),
        }
    }
    if options.seconds == 0 {
        bail!("--seconds must be at least 1");
    }
    Ok(options)
}

/// The targets `fuzz/Cargo.toml` declares, in order.
fn declared_targets(fuzz: &Path) -> Result<Vec<String>> {
    let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).context("reading fuzz/Cargo.toml")?;
    let mut targets = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin && let Some(name) = line.strip_prefix("name = ") {
            targets.push(name.trim_matches('"').to_owned());
        }
    }
    Ok(targets)
}

fn ensure_cargo_fuzz() -> Result<()> {
    let installed =
        Command::new("cargo").args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success());
    if !installed {
        run_cmd(Command::new("cargo").args([
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            CARGO_FUZZ_VERSION,
        ]))?;
    }
    Ok(())
}

/// What one target's run reported.
struct Report {
    target: String,
    executions: u64,
    per_second: u64,
    corpus: usize,
}

/// Run `cargo xtask fuzz [--seconds N] [--no-save] [TARGET…]`.
pub fn fuzz(args: &[String]) -> Result<()> {
    let options = options(args)?;
    let fuzz = workspace_root().join("fuzz");
    let declared = declared_targets(&fuzz)?;
    let targets = if options.targets.is_empty() { declared.clone() } else { options.targets.clone() };
    if let Some(unknown) = targets.iter().find(|t| !declared.contains(t)) {
        bail!("no fuzz target `{unknown}` (targets: {})", declared.join(", "));
    }
    ensure_cargo_fuzz()?;
    let out = target_dir().join("fuzz");
    run_cmd(
        Command::new("cargo")
            .current_dir(&fuzz)
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["fuzz", "build", "-O", "--sanitizer", "none", "--debug-assertions", "--target-dir"])
            .arg(&out),
    )?;
    let mut reports = Vec::new();
    for target in &targets {
        reports.push(run_target(&fuzz, &out, target, &options)?);
    }
    println!("\n{:<16} {:>14} {:>10} {:>8}", "target", "executions", "exec/s", "corpus");
    for r in &reports {
        println!("{:<16} {:>14} {:>10} {:>8}", r.target, r.executions, r.per_second, r.corpus);
    }
    Ok(())
}

/// Keep in the committed corpus only the inputs that together reach all its coverage
/// (libFuzzer's merge), so that long runs leave a small corpus to commit.
fn minimize(binary: &Path, seeds: &Path, out: &Path, target: &str) -> Result<()> {
    let merged = out.join("merged").join(target);
    if merged.exists() {
        std::fs::remove_dir_all(&merged)?;
    }
    std::fs::create_dir_all(&merged)?;
    let output = Command::new(binary).arg("-merge=1").arg(&merged).arg(seeds).output()?;
    if !output.status.success() {
        bail!("minimizing the {target} corpus failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    std::fs::remove_dir_all(seeds)?;
    std::fs::rename(&merged, seeds).or_else(|_| {
        // Across file systems: copy.
        std::fs::create_dir_all(seeds)?;
        for entry in std::fs::read_dir(&merged)? {
            let entry = entry?;
            std::fs::copy(entry.path(), seeds.join(entry.file_name()))?;
        }
        std::fs::remove_dir_all(&merged)
    })?;
    Ok(())
}

fn run_target(fuzz: &Path, out: &Path, target: &str, options: &Options) -> Result<Report> {
    let binary = out.join("x86_64-unknown-linux-gnu/release").join(target);
    let seeds = fuzz.join("corpus").join(target);
    std::fs::create_dir_all(&seeds).with_context(|| format!("creating {}", seeds.display()))?;
    // New inputs go first in the list of corpus folders: the committed one, or a scratch one.
    let scratch = out.join("corpus").join(target);
    std::fs::create_dir_all(&scratch)?;
    let artifacts = out.join("artifacts").join(target);
    std::fs::create_dir_all(&artifacts)?;
    let mut cmd = Command::new(&binary);
    cmd.arg(format!("-max_total_time={}", options.seconds))
        .arg("-print_final_stats=1")
        .arg("-rss_limit_mb=2048")
        .arg("-max_len=65536")
        .arg(format!("-artifact_prefix={}/", artifacts.display()));
    let first: PathBuf = if options.save { seeds.clone() } else { scratch.clone() };
    cmd.arg(&first);
    if !options.save {
        cmd.arg(&seeds);
    }
    eprintln!("xtask: fuzzing {target} for {} s", options.seconds);
    let output = cmd.output().with_context(|| format!("running {}", binary.display()))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "fuzz target {target} failed ({}); the input is in {}:\n{}",
            output.status,
            artifacts.display(),
            tail.join("\n")
        );
    }
    let stat = |name: &str| {
        stderr
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!("stat::{name}:")).map(|v| v.trim().parse::<u64>().unwrap_or(0))
            })
            .unwrap_or(0)
    };
    let executions = stat("number_of_executed_units");
    if options.save {
        minimize(&binary, &seeds, out, target)?;
    }
    let corpus = std::fs::read_dir(&first).map(|d| d.count()).unwrap_or(0);
    Ok(Report { target: target.to_owned(), executions, per_second: stat("average_exec_per_sec"), corpus })
}
