//! Reading the files that configuration and operators name — configs, plugins, certificates,
//! keys, tokens, secrets: only regular files, and only up to a size cap for each sort, so that
//! a path such as `/dev/zero`, a FIFO or a runaway file cannot make a node read without end
//! (`PUT /v1/policy {"scorer": "/dev/zero"}` once read until the kernel killed the
//! controller). The file is checked before it is opened — a FIFO would block the open — and
//! read through a limit, in case it grows in between. Callers on an async worker run these on
//! a blocking pool.

use std::io::Read;
use std::path::{Path, PathBuf};

/// A node's or the controller's TOML configuration.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// A WebAssembly plugin (the reference plugins are 0.2–2 MiB).
pub const MAX_PLUGIN_BYTES: u64 = 64 << 20;
/// A PEM file: certificates (a chain, a CA bundle) or a private key.
pub const MAX_PEM_BYTES: u64 = 1 << 20;
/// A token or secret file (its first line is used).
pub const MAX_SECRET_BYTES: u64 = 64 << 10;

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The system refused (missing, permissions, I/O).
    #[error("cannot read {what} {}: {source}", path.display())]
    Io {
        /// What the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The system's error.
        source: std::io::Error,
    },
    /// A directory, device, FIFO or socket.
    #[error("{what} {} is not a regular file", path.display())]
    NotRegular {
        /// What the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// Over the cap.
    #[error("{what} {} is larger than the {max} bytes allowed", path.display())]
    TooLarge {
        /// What the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cap.
        max: u64,
    },
    /// Text expected, other bytes found.
    #[error("{what} {} is not UTF-8 text", path.display())]
    NotText {
        /// What the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
}

/// The bytes of `path`, a regular file of at most `max` bytes; `what` names it in errors
/// (`"the config"`, `"the plugin"`, …).
pub fn read(path: &Path, max: u64, what: &'static str) -> Result<Vec<u8>, FileError> {
    let io = |source| FileError::Io { what, path: path.to_owned(), source };
    let too_large = || FileError::TooLarge { what, path: path.to_owned(), max };
    // Follows symlinks, as the open will; refuses before opening what would block or stream.
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(FileError::NotRegular { what, path: path.to_owned() });
    }
    if meta.len() > max {
        return Err(too_large());
    }
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(max.saturating_add(1)).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > max {
        return Err(too_large());
    }
    Ok(bytes)
}

/// The text of `path`, as [`read`] reads it.
pub fn read_to_string(path: &Path, max: u64, what: &'static str) -> Result<String, FileError> {
    String::from_utf8(read(path, max, what)?).map_err(|_| FileError::NotText { what, path: path.to_owned() })
}

/// The first line of a token or secret file, trimmed.
pub fn read_secret(path: &Path, what: &'static str) -> Result<String, FileError> {
    let text = read_to_string(path, MAX_SECRET_BYTES, what)?;
    Ok(text.lines().next().unwrap_or_default().trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_fifos_and_directories_are_refused_without_reading() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        // No writer ever opens the FIFO: a plain open would block here for ever.
        for path in [Path::new("/dev/zero"), fifo.as_path(), dir.path()] {
            let e = read(path, MAX_PLUGIN_BYTES, "the plugin").unwrap_err();
            assert!(matches!(e, FileError::NotRegular { .. }), "{}: {e}", path.display());
            assert!(e.to_string().contains("is not a regular file"), "{e}");
        }
    }

    #[test]
    fn a_file_over_its_cap_is_refused_and_one_at_the_cap_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, vec![b'a'; 100]).unwrap();
        assert_eq!(read(&path, 100, "the token").unwrap().len(), 100);
        let e = read(&path, 99, "the token").unwrap_err();
        assert!(matches!(e, FileError::TooLarge { max: 99, .. }), "{e}");
        assert!(e.to_string().contains("larger than the 99 bytes allowed"), "{e}");
    }

    #[test]
    fn secrets_are_their_first_line_and_text_must_be_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "  s3cr3t \nsecond line\n").unwrap();
        assert_eq!(read_secret(&path, "the secret").unwrap(), "s3cr3t");
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        assert!(matches!(read_secret(&path, "the secret"), Err(FileError::NotText { .. })));
        let missing = read_secret(&dir.path().join("nope"), "the secret").unwrap_err();
        assert!(matches!(missing, FileError::Io { .. }) && missing.to_string().contains("nope"));
    }
}
