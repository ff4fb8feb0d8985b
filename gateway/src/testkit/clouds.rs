//! How the cloud emulators are started, shared by the tests' peers (`skybridge-tests`) and the
//! demo (`skybridge demo`), so that both run them the same way.

use std::path::Path;
use std::process::Command;

/// Azurite's blob service on a free port of 127.0.0.1, keeping its data in `data`, serving the
/// one storage account `account` whose key (base64) only it and its caller know, telemetry off.
/// It says where it listens on stdout: see [`azurite_port`].
pub fn azurite(program: &Path, data: &Path, account: &str, key: &str) -> Command {
    let mut command = Command::new(program);
    command
        .args(["--blobHost", "127.0.0.1", "--blobPort", "0", "--disableTelemetry", "--skipApiVersionCheck"])
        .arg("--location")
        .arg(data)
        .env("AZURITE_ACCOUNTS", format!("{account}:{key}"));
    command
}

/// The port in Azurite's "… listens on http://127.0.0.1:PORT" line, if `line` is that one.
pub fn azurite_port(line: &str) -> Option<u16> {
    line.split("listens on http://127.0.0.1:").nth(1)?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn azurites_port_is_read_from_its_listening_line() {
        let line = "Azurite Blob service is successfully listening at http://127.0.0.1:41235";
        assert_eq!(super::azurite_port(line), None, "another wording");
        assert_eq!(
            super::azurite_port("Azurite Blob service listens on http://127.0.0.1:41235"),
            Some(41235)
        );
    }
}
