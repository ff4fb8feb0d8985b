//! Node identities: a development CA, node certificates that carry the node's name and role,
//! and loading them for TLS.
//!
//! A node certificate has two DNS names: the node's name (`r1`), which peers verify like a
//! host name, and `ROLE.role.skybridge.invalid`, which says what the node may act as. The
//! `.invalid` top-level domain is reserved, so the role name can never collide with a real
//! host. Both are checked with webpki's own name matching (see [`super::tls`]).

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// What a node acts as in the mesh.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The controller: admin API, path engine, orchestration.
    Controller,
    /// A relay: forwards tunnels, probes links.
    Relay,
    /// A site agent beside a cloud platform.
    Site,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [Role::Controller, Role::Relay, Role::Site];

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Controller => "controller",
            Role::Relay => "relay",
            Role::Site => "site",
        }
    }

    /// The DNS name a certificate carries to grant this role.
    pub fn dns_name(self) -> String {
        format!("{}.role.skybridge.invalid", self.as_str())
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role `{s}` (expected controller, relay or site)"))
    }
}

/// Why an identity operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A node name that cannot be used.
    #[error(
        "invalid node name `{0}`: use 1–63 lower-case letters, digits and '-', not starting or ending with '-'"
    )]
    BadName(String),
    /// The CA folder already holds a CA.
    #[error("{0} already holds a CA; refusing to overwrite it")]
    CaExists(PathBuf),
    /// Certificate generation or parsing failed.
    #[error("{context}: {reason}")]
    Certificate {
        /// What was being done.
        context: String,
        /// Why it failed.
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io { path: path.to_owned(), source }
}

fn cert_err(context: impl Into<String>) -> impl FnOnce(rcgen::Error) -> IdentityError {
    let context = context.into();
    move |e| IdentityError::Certificate { context, reason: e.to_string() }
}

/// Check a node name: a DNS label.
pub fn validate_name(name: &str) -> Result<(), IdentityError> {
    let ok = (1..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok { Ok(()) } else { Err(IdentityError::BadName(name.to_owned())) }
}

/// Where a CA lives in its folder.
pub fn ca_paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("ca.pem"), dir.join("ca.key"))
}

/// Create a development CA in `dir` (`ca.pem`, and `ca.key` readable by the owner only).
pub fn init_ca(dir: &Path) -> Result<PathBuf, IdentityError> {
    let (cert_path, key_path) = ca_paths(dir);
    if cert_path.exists() || key_path.exists() {
        return Err(IdentityError::CaExists(dir.to_owned()));
    }
    fs::create_dir_all(dir).map_err(io(dir))?;
    let key = KeyPair::generate().map_err(cert_err("generating the CA key"))?;
    let cert = ca_params()?.self_signed(&key).map_err(cert_err("signing the CA"))?;
    write_private(&key_path, &key.serialize_pem())?;
    fs::write(&cert_path, cert.pem()).map_err(io(&cert_path))?;
    Ok(cert_path)
}

/// The CA's parameters. `issue` rebuilds the issuer from these and the CA key instead of
/// parsing `ca.pem` (which would need an X.509 parser): the issuer name must, and does, match
/// byte for byte, as the transport tests' handshakes show.
fn ca_params() -> Result<CertificateParams, IdentityError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err("CA parameters"))?;
    params.distinguished_name.push(DnType::CommonName, "Skybridge development CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

/// Issue a certificate for node `name` acting as `role`, signed by the CA in `ca_dir`; writes
/// `NAME.pem` and `NAME.key` into `out_dir`. Returns their paths.
pub fn issue(
    ca_dir: &Path,
    name: &str,
    role: Role,
    out_dir: &Path,
) -> Result<(PathBuf, PathBuf), IdentityError> {
    validate_name(name)?;
    let (ca_cert_path, ca_key_path) = ca_paths(ca_dir);
    // The certificate must be there (peers need it), though only the key is used to sign.
    fs::metadata(&ca_cert_path).map_err(io(&ca_cert_path))?;
    let ca_key =
        crate::file::read_to_string(&ca_key_path, crate::file::MAX_PEM_BYTES, "the CA key").map_err(|e| {
            IdentityError::Certificate { context: "reading the CA key".into(), reason: e.to_string() }
        })?;
    let ca_key =
        KeyPair::from_pem(&ca_key).map_err(cert_err(format!("reading {}", ca_key_path.display())))?;
    let issuer = Issuer::new(ca_params()?, ca_key);

    let key = KeyPair::generate().map_err(cert_err("generating the node key"))?;
    let mut params = CertificateParams::new(vec![name.to_owned(), role.dns_name()])
        .map_err(cert_err("node certificate parameters"))?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.distinguished_name.push(DnType::OrganizationalUnitName, role.as_str());
    let cert = params.signed_by(&key, &issuer).map_err(cert_err("signing the node certificate"))?;

    fs::create_dir_all(out_dir).map_err(io(out_dir))?;
    let cert_path = out_dir.join(format!("{name}.pem"));
    let key_path = out_dir.join(format!("{name}.key"));
    write_private(&key_path, &key.serialize_pem())?;
    fs::write(&cert_path, cert.pem()).map_err(io(&cert_path))?;
    Ok((cert_path, key_path))
}

/// Write a secret file readable by the owner only.
fn write_private(path: &Path, contents: &str) -> Result<(), IdentityError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f =
        fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io(path))?;
    f.write_all(contents.as_bytes()).map_err(io(path))
}

/// What a node presents and trusts: its certificate chain and key, and the CA.
#[derive(Debug)]
pub struct NodeIdentity {
    /// The node's name.
    pub name: String,
    /// The role it acts as.
    pub role: Role,
    /// Its certificate chain (leaf first).
    pub chain: Vec<CertificateDer<'static>>,
    /// Its private key.
    pub key: PrivateKeyDer<'static>,
    /// The CA it trusts.
    pub ca: CertificateDer<'static>,
}

impl NodeIdentity {
    /// Load `cert` and `key` (PEM) and the CA certificate `ca` (PEM). The node's name and role
    /// are what it claims; the TLS layer checks the certificate grants them.
    pub fn load(
        name: &str,
        role: Role,
        cert: &Path,
        key: &Path,
        ca: &Path,
    ) -> Result<NodeIdentity, IdentityError> {
        validate_name(name)?;
        let pem_err = |path: &Path| {
            let path = path.to_owned();
            move |e: rustls_pki_types::pem::Error| IdentityError::Certificate {
                context: format!("reading {}", path.display()),
                reason: e.to_string(),
            }
        };
        let pem = |path: &Path| {
            crate::file::read(path, crate::file::MAX_PEM_BYTES, "the PEM file").map_err(|e| {
                IdentityError::Certificate {
                    context: format!("reading {}", path.display()),
                    reason: e.to_string(),
                }
            })
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem(cert)?)
            .map(|c| c.map(CertificateDer::into_owned))
            .collect::<Result<_, _>>()
            .map_err(pem_err(cert))?;
        if chain.is_empty() {
            return Err(IdentityError::Certificate {
                context: format!("reading {}", cert.display()),
                reason: "no certificate in the file".into(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(&pem(key)?).map_err(pem_err(key))?;
        let ca = CertificateDer::from_pem_slice(&pem(ca)?).map_err(pem_err(ca))?.into_owned();
        Ok(NodeIdentity { name: name.to_owned(), role, chain, key, ca })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_roles_are_validated() {
        for ok in ["r1", "site-a", "a", "controller"] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "R1", "-r", "r-", "r_1", "r.1", &"x".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        assert_eq!("relay".parse::<Role>(), Ok(Role::Relay));
        assert!("router".parse::<Role>().unwrap_err().contains("unknown role"));
        assert_eq!(Role::Site.dns_name(), "site.role.skybridge.invalid");
    }

    #[test]
    fn a_ca_issues_loadable_node_identities_and_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        init_ca(&ca).unwrap();
        assert!(matches!(init_ca(&ca), Err(IdentityError::CaExists(_))));
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(ca.join("ca.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let (cert, key) = issue(&ca, "r1", Role::Relay, dir.path()).unwrap();
        let id = NodeIdentity::load("r1", Role::Relay, &cert, &key, &ca.join("ca.pem")).unwrap();
        assert_eq!(id.chain.len(), 1);
        assert!(matches!(issue(&ca, "Bad_Name", Role::Relay, dir.path()), Err(IdentityError::BadName(_))));
        // Re-issuing over an existing key is refused rather than silently replacing it.
        assert!(matches!(issue(&ca, "r1", Role::Relay, dir.path()), Err(IdentityError::Io { .. })));
    }
}
