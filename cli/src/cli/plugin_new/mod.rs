//! `skybridge plugin new KIND NAME`: write a plugin crate that tests green, builds to wasm and
//! loads as it is — the starting point of "write your own plugin".

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::ValueEnum;

/// The kinds of plugin the gateway loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Scores candidate paths (the controller's policy).
    Scorer,
    /// Decides which of a platform's capabilities an account may use (a site's policy).
    Authorizer,
    /// Knows one cloud: discovers its services and re-signs requests for it (a site's cloud).
    Adapter,
}

const CARGO_TOML: &str = include_str!("templates/Cargo.toml.tmpl");
const README: &str = include_str!("templates/README.md.tmpl");
const GITIGNORE: &str = include_str!("templates/gitignore.tmpl");
const SCORER: &str = include_str!("templates/scorer.rs.tmpl");
const AUTHORIZER: &str = include_str!("templates/authorizer.rs.tmpl");
const ADAPTER: &str = include_str!("templates/adapter.rs.tmpl");

/// The SDK of the source tree this binary was built from, when it is still there.
const BUILT_FROM_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugin-sdk");

/// The longest crate name accepted (crates.io's limit).
const MAX_NAME: usize = 64;

/// Why `name` cannot name a plugin crate, if it cannot.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok_chars = name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if name.is_empty()
        || name.len() > MAX_NAME
        || !ok_chars
        || !name.starts_with(|c: char| c.is_ascii_lowercase())
        || name.ends_with('-')
        || name.contains("--")
    {
        bail!(
            "`{name}` cannot name a plugin: use 1 to {MAX_NAME} lower-case letters, digits and single \
             dashes, starting with a letter (like `fewest-hops`)"
        );
    }
    Ok(())
}

/// `fewest-hops` → `FewestHops`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect()
}

/// The files of a new plugin crate: (path relative to its folder, contents).
pub fn files(kind: Kind, name: &str, sdk: &Path) -> anyhow::Result<Vec<(&'static str, String)>> {
    check_name(name)?;
    let krate = name.replace('-', "_");
    let wasm = format!("target/wasm32-unknown-unknown/plugin/{krate}.wasm");
    let (source, kind_name, trait_name, export, try_it, configure) = match kind {
        Kind::Scorer => (
            SCORER,
            "scorer",
            "Scorer",
            "export_scorer",
            format!("Try it: `skybridge plugin score --plugin {wasm} --latency-ms 30 --loss 0.01`."),
            "the controller's `policy = { scorer = \"…/NAME.wasm\" }`, or at run time \
             `skybridge ctl policy set --scorer …/NAME.wasm`"
                .replace("NAME", &krate),
        ),
        Kind::Authorizer => (
            AUTHORIZER,
            "authorizer",
            "Authorizer",
            "export_authorizer",
            format!(
                "Try it: `skybridge plugin authorize --plugin {wasm} --account acme --platform aws-east \
                 --capability object-store/logs` (exit 0: granted, 1: refused)."
            ),
            "a site's `authorizer = { path = \"…/NAME.wasm\", config = { kinds = \"object-store\" } }`"
                .replace("NAME", &krate),
        ),
        Kind::Adapter => (
            ADAPTER,
            "adapter",
            "Adapter",
            "export_adapter",
            "`inspect` shows the worlds it exports (`adapting`, `discovering`).".to_owned(),
            "a site's `[cloud]` table: `adapter = { path = \"…/NAME.wasm\" }`".replace("NAME", &krate),
        ),
    };
    let sdk = sdk.to_str().context("the SDK's path is not UTF-8")?;
    if sdk.contains('"') || sdk.contains('\\') {
        bail!("the SDK's path {sdk} holds a quote or a backslash; move it or pass --sdk another path");
    }
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{crate}}", &krate)
            .replace("{{Type}}", &type_name(name))
            .replace("{{kind}}", kind_name)
            .replace("{{Trait}}", trait_name)
            .replace("{{export}}", export)
            .replace("{{try}}", &try_it)
            .replace("{{configure}}", &configure)
            .replace("{{sdk}}", sdk)
    };
    Ok(vec![
        ("Cargo.toml", fill(CARGO_TOML)),
        ("README.md", fill(README)),
        (".gitignore", fill(GITIGNORE)),
        ("src/lib.rs", fill(source)),
    ])
}

/// The SDK to depend on: `--sdk`, or the one this binary was built from.
fn find_sdk(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let sdk = given.unwrap_or_else(|| PathBuf::from(BUILT_FROM_SDK));
    let manifest = sdk.join("Cargo.toml");
    let is_sdk =
        std::fs::read_to_string(&manifest).is_ok_and(|m| m.contains("name = \"skybridge-plugin-sdk\""));
    if !is_sdk {
        bail!(
            "no Skybridge plugin SDK at {}: pass --sdk with the `plugin-sdk` folder of a Skybridge checkout",
            sdk.display()
        );
    }
    sdk.canonicalize().with_context(|| format!("resolving {}", sdk.display()))
}

/// Write the crate into `dir` (default `./NAME`), which must not exist or be empty.
pub fn run(kind: Kind, name: &str, dir: Option<PathBuf>, sdk: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    check_name(name)?;
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() && std::fs::read_dir(&dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} exists and is not an empty folder: choose another --path", dir.display());
    }
    let files = files(kind, name, &find_sdk(sdk)?)?;
    for (file, contents) in files {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_become_types() {
        for bad in ["", "Fewest", "9lives", "a_b", "a--b", "a-", "-a", "a b", &"a".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["fewest-hops", "acl2", "x"] {
            check_name(good).unwrap();
        }
        assert_eq!(type_name("fewest-hops"), "FewestHops");
        assert_eq!(type_name("acl2-v2"), "Acl2V2");
    }

    #[test]
    fn every_placeholder_is_filled() {
        for kind in [Kind::Scorer, Kind::Authorizer, Kind::Adapter] {
            for (file, contents) in files(kind, "my-plugin", Path::new("/opt/sdk")).unwrap() {
                assert!(!contents.contains("{{"), "{kind:?} {file}: {contents}");
            }
        }
    }
}
