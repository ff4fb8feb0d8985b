//! The layering rules of the crate docs, checked on the source: each offending line is named
//! with its file and line number.
//!
//! - sans-IO modules import no tokio, quinn or hyper;
//! - `path` imports nothing of the crate but `time`;
//! - `mesh` imports none of `node`, `controller`, `tunnel`, `ingress`, `admin`, `session`, `store`;
//! - `tunnel` imports neither `node` nor `controller`;
//! - `catalog` (sans-IO rules) imports none of the IO layers; `discovery` (the site's side)
//!   none of the controller's;
//! - `controller` imports neither `admin` nor `ingress`;
//! - only the test kit itself imports `testkit` (it is not part of the default API);
//! - no circles between the crate's top-level modules.
//!
//! A file's unit tests (from its `#[cfg(test)]` module on) are not scanned: tests may do IO
//! and use the test kit.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Files (relative to `src/`) or folders (ending in `/`) that must stay sans-IO.
const SANS_IO: &[&str] = &[
    "path/",
    "catalog/",
    "time.rs",
    "mesh/membership.rs",
    "tunnel/grant.rs",
    "tunnel/setup.rs",
    "controller/view.rs",
    "session/translate.rs",
    "session/tokens.rs",
    "session/records.rs",
    "session/client_auth.rs",
    "session/throttle.rs",
    "session/replay.rs",
    "metrics/",
];

/// Crates an IO-free module may not name.
const IO_CRATES: &[&str] = &["tokio", "quinn", "hyper", "hyper_util"];

/// (module, modules of the crate it may not import); `*` means every other module but these.
const FORBIDDEN: &[(&str, &[&str])] = &[
    ("mesh", &["node", "controller", "tunnel", "ingress", "admin", "session", "store"]),
    ("tunnel", &["node", "controller", "ingress", "admin"]),
    ("controller", &["admin", "ingress"]),
    ("session", &["controller", "ingress", "admin", "node"]),
    ("store", &["controller", "ingress", "admin", "node"]),
    (
        "catalog",
        &[
            "controller",
            "ingress",
            "admin",
            "node",
            "mesh",
            "tunnel",
            "store",
            "session",
            "plugin",
            "discovery",
        ],
    ),
    ("discovery", &["controller", "ingress", "admin", "node", "tunnel", "store"]),
];

/// What `path` may import of the crate.
const PATH_MAY_IMPORT: &[&str] = &["path", "time"];

struct Source {
    /// Relative to `src/`.
    rel: String,
    /// The crate module it belongs to (`lib.rs` and `main.rs` belong to none).
    module: Option<String>,
    text: String,
}

fn sources() -> Vec<Source> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&src, &mut files);
    files
        .into_iter()
        .filter_map(|path| {
            let rel = path.strip_prefix(&src).ok()?.to_string_lossy().into_owned();
            // The binary's command line sits on top of everything.
            if rel.starts_with("cli/") || rel == "main.rs" {
                return None;
            }
            let module = match rel.split_once('/') {
                Some((dir, _)) => Some(dir.to_owned()),
                None if rel == "lib.rs" => None,
                None => Some(rel.trim_end_matches(".rs").to_owned()),
            };
            let text = std::fs::read_to_string(&path).expect("readable source");
            // Unit tests sit at the end of a file, from `#[cfg(test)]` on.
            let text = match text.find("\n#[cfg(test)]") {
                Some(end) => text[..end].to_owned(),
                None => text,
            };
            Some(Source { rel, module, text })
        })
        .collect()
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable folder") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a line: comments (and so doc comments and their links) removed.
fn code(line: &str) -> &str {
    line.split("//").next().unwrap_or("")
}

/// The crate modules a line names (`crate::X`).
fn crate_modules(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code(line);
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `some_crate::`
        }
        let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        if !name.is_empty() {
            found.push(name);
        }
    }
    found
}

/// Whether a line names one of `crates` as a path root (`tokio::…`, `use quinn…`).
fn names_crate(line: &str, krate: &str) -> bool {
    let code = code(line);
    code.match_indices(krate).any(|(i, _)| {
        let before = code[..i].chars().last();
        let after = &code[i + krate.len()..];
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
            && (after.starts_with("::") || after.starts_with(';') || after.starts_with(" as "))
    })
}

#[test]
fn sans_io_modules_import_no_io_crate() {
    let mut offences = Vec::new();
    for s in sources() {
        if !SANS_IO.iter().any(|p| if p.ends_with('/') { s.rel.starts_with(p) } else { s.rel == *p }) {
            continue;
        }
        for (n, line) in s.text.lines().enumerate() {
            for krate in IO_CRATES {
                if names_crate(line, krate) {
                    offences.push(format!(
                        "src/{}:{}: sans-IO, names {krate}: {}",
                        s.rel,
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(offences.is_empty(), "sans-IO modules doing IO:\n{}", offences.join("\n"));
}

#[test]
fn modules_import_only_what_their_layer_allows() {
    let mut offences = Vec::new();
    for s in sources() {
        let Some(module) = &s.module else { continue };
        for (n, line) in s.text.lines().enumerate() {
            for used in crate_modules(line) {
                let forbidden = if module == "path" {
                    !PATH_MAY_IMPORT.contains(&used.as_str())
                } else if used == "testkit" {
                    module != "testkit"
                } else {
                    FORBIDDEN.iter().any(|(m, deny)| m == module && deny.contains(&used.as_str()))
                };
                if forbidden {
                    offences.push(format!(
                        "src/{}:{}: {module} imports {used}: {}",
                        s.rel,
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(offences.is_empty(), "layering broken:\n{}", offences.join("\n"));
}

#[test]
fn no_circles_between_top_level_modules() {
    // module → (module it names → the first line that names it)
    let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for s in sources() {
        let Some(module) = &s.module else { continue };
        for (n, line) in s.text.lines().enumerate() {
            for used in crate_modules(line) {
                if &used != module {
                    edges
                        .entry(module.clone())
                        .or_default()
                        .entry(used)
                        .or_insert_with(|| format!("src/{}:{}: {}", s.rel, n + 1, line.trim()));
                }
            }
        }
    }
    // A depth-first search for a back edge; the circle is reported with a line per step.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeMap<String, String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = stack.iter().position(|m| m == node) {
            let mut circle = stack[start..].to_vec();
            circle.push(node.to_owned());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in edges.get(node).map(|e| e.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
            if let Some(circle) = visit(&next, edges, stack, done) {
                return Some(circle);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for module in edges.keys() {
        if let Some(circle) = visit(module, &edges, &mut Vec::new(), &mut done) {
            let steps: Vec<String> = circle.windows(2).map(|w| edges[&w[0]][&w[1]].clone()).collect();
            panic!("modules in a circle: {}\n{}", circle.join(" → "), steps.join("\n"));
        }
    }
}

#[test]
fn the_checks_see_what_they_look_for() {
    // The scanners themselves: a check that cannot fail checks nothing.
    assert_eq!(crate_modules("use crate::plugin::{Plugin};"), ["plugin"]);
    assert_eq!(crate_modules("x = crate::time::now_unix_ms() + crate::path::X;"), ["time", "path"]);
    assert!(crate_modules("/// see [`crate::tunnel`]").is_empty(), "comments are not imports");
    assert!(crate_modules("use some_crate::x;").is_empty());
    assert!(names_crate("use tokio::sync::watch;", "tokio"));
    assert!(names_crate("    let t = tokio::spawn(f);", "tokio"));
    assert!(!names_crate("// tokio::spawn", "tokio"));
    assert!(!names_crate("use my_tokio::x;", "tokio"));
    assert!(!names_crate("let tokio_thing = 1;", "tokio"));
    assert!(names_crate("use hyper_util::rt;", "hyper_util"));
    assert!(!names_crate("use hyper_util::rt;", "hyper"));
    let files = sources();
    assert!(files.iter().any(|s| s.rel == "controller/view.rs"), "the scan finds the sources");
    assert!(files.iter().all(|s| !s.rel.starts_with("cli/")));
}
