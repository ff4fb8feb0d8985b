//! Mutual TLS for the mesh (rustls, ring provider, TLS 1.3 only).
//!
//! Both sides present a certificate from the mesh CA. Each side's verifier wraps webpki's
//! (chain to the CA, validity, signatures) and then requires the peer's certificate to grant
//! a role the endpoint accepts — a relay-to-relay listener refuses a site certificate — so a
//! wrong CA or a wrong role fails the handshake itself. A client also checks that the server
//! certificate names the node it meant to reach.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::identity::{NodeIdentity, Role};

/// ALPN protocol id of the mesh.
pub const ALPN: &[u8] = b"skybridge/1";

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("TLS setup: {0}")]
pub struct TlsError(pub String);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(identity: &NodeIdentity) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.add(identity.ca.clone()).map_err(|e| TlsError(format!("CA certificate: {e}")))?;
    Ok(Arc::new(roots))
}

/// Which of `roles` the certificate grants (the first that matches).
pub fn granted_role(cert: &CertificateDer<'_>, roles: &[Role]) -> Result<Role, rustls::Error> {
    let ee = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| rustls::Error::General(format!("unreadable certificate: {e}")))?;
    for role in roles {
        let name = ServerName::try_from(role.dns_name())
            .map_err(|e| rustls::Error::General(format!("role name: {e}")))?;
        if ee.verify_is_valid_for_subject_name(&name).is_ok() {
            return Ok(*role);
        }
    }
    let accepted: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    Err(rustls::Error::General(format!(
        "peer certificate grants none of the roles this endpoint accepts ({})",
        accepted.join(", ")
    )))
}

/// Whether the certificate names node `name`.
pub fn names_node(cert: &CertificateDer<'_>, name: &str) -> bool {
    let (Ok(ee), Ok(name)) = (webpki::EndEntityCert::try_from(cert), ServerName::try_from(name.to_owned()))
    else {
        return false;
    };
    ee.verify_is_valid_for_subject_name(&name).is_ok()
}

/// The node name a (verified) certificate carries: its DNS name that is not a role name.
pub fn node_name(cert: &CertificateDer<'_>) -> Option<String> {
    let ee = webpki::EndEntityCert::try_from(cert).ok()?;
    ee.valid_dns_names().find(|n| !n.ends_with(".role.skybridge.invalid")).map(str::to_owned)
}

/// Check that a node's own certificate is issued by the configured CA, valid now, and grants
/// the name and role it is configured with, so a misconfigured node fails at start with a
/// clear message instead of at every handshake (where its peers would refuse it).
pub fn check_own_identity(identity: &NodeIdentity) -> Result<(), TlsError> {
    let leaf = &identity.chain[0];
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(identity)?, provider())
        .build()
        .map_err(|e| TlsError(format!("client verifier: {e}")))?;
    verifier.verify_client_cert(leaf, &identity.chain[1..], UnixTime::now()).map_err(|e| {
        TlsError(format!(
            "the node's certificate does not verify against the configured CA ({e}): it was \
             issued by another CA, or has expired"
        ))
    })?;
    if !names_node(leaf, &identity.name) {
        return Err(TlsError(format!("the certificate does not name node `{}`", identity.name)));
    }
    granted_role(leaf, &[identity.role]).map_err(|_| {
        TlsError(format!(
            "the certificate does not grant role `{}` to node `{}`",
            identity.role, identity.name
        ))
    })?;
    Ok(())
}

/// The handshake-signature checks, which both verifiers leave to webpki's unchanged.
macro_rules! delegate_signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.inner.supported_verify_schemes()
        }
    };
}

#[derive(Debug)]
struct RoleClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    accept: Vec<Role>,
}

impl ClientCertVerifier for RoleClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner.verify_client_cert(end_entity, intermediates, now)?;
        granted_role(end_entity, &self.accept)?;
        Ok(ClientCertVerified::assertion())
    }

    delegate_signature_checks!();
}

#[derive(Debug)]
struct RoleServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    expect: Vec<Role>,
}

impl ServerCertVerifier for RoleServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Chain, validity and the node name (`server_name`) are webpki's job.
        self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        granted_role(end_entity, &self.expect)?;
        Ok(ServerCertVerified::assertion())
    }

    delegate_signature_checks!();
}

/// Server side: present `identity`, require a client certificate from the CA granting one of
/// `accept`.
pub fn server_config(identity: &NodeIdentity, accept: &[Role]) -> Result<rustls::ServerConfig, TlsError> {
    let provider = provider();
    let inner = WebPkiClientVerifier::builder_with_provider(roots(identity)?, provider.clone())
        .build()
        .map_err(|e| TlsError(format!("client verifier: {e}")))?;
    let verifier = Arc::new(RoleClientVerifier { inner, accept: accept.to_vec() });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|e| TlsError(format!("node certificate or key: {e}")))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// Client side: present `identity`; require the server to be the named node (checked per
/// connection by the server name) with a certificate granting one of `expect`.
pub fn client_config(identity: &NodeIdentity, expect: &[Role]) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let inner = WebPkiServerVerifier::builder_with_provider(roots(identity)?, provider.clone())
        .build()
        .map_err(|e| TlsError(format!("server verifier: {e}")))?;
    let verifier = Arc::new(RoleServerVerifier { inner, expect: expect.to_vec() });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|e| TlsError(format!("node certificate or key: {e}")))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}
