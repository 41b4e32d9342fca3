//! The emulator's own certificate authority, for [`EmulatorBuilder::tls`](crate::EmulatorBuilder::tls).
//!
//! At start a fresh CA (ECDSA P-256) is generated, and with it one server
//! certificate for `127.0.0.1`, `::1` and `localhost` that every listener
//! (the main server and each app) presents. ALPN offers `h2` then
//! `http/1.1`. Nothing is written to disk here: the CA's PEM is handed out
//! by [`Emulator::ca_pem`](crate::Emulator::ca_pem), and the private keys
//! never leave the process.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// The emulator's TLS material: the CA's certificate (PEM) and the
/// acceptor presenting the server certificate it signed.
#[derive(Clone)]
pub(crate) struct Tls {
    ca_pem: String,
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

impl Tls {
    /// Generates the CA and the server certificate.
    pub(crate) fn generate() -> Result<Tls, String> {
        let err = |what: &str, e: &dyn std::fmt::Display| format!("{what}: {e}");
        let mut ca =
            CertificateParams::new(Vec::<String>::new()).map_err(|e| err("CA parameters", &e))?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "iap-emulator local CA");
        ca.distinguished_name
            .push(DnType::OrganizationName, "iap-emulator");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().map_err(|e| err("CA key", &e))?;
        let ca_cert = ca
            .self_signed(&ca_key)
            .map_err(|e| err("CA certificate", &e))?;
        let issuer = Issuer::new(ca, ca_key);

        let mut leaf = CertificateParams::new(vec![
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
            "localhost".to_owned(),
        ])
        .map_err(|e| err("server certificate parameters", &e))?;
        leaf.distinguished_name
            .push(DnType::CommonName, "iap-emulator");
        leaf.use_authority_key_identifier_extension = true;
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate().map_err(|e| err("server key", &e))?;
        let leaf_cert = leaf
            .signed_by(&leaf_key, &issuer)
            .map_err(|e| err("server certificate", &e))?;

        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| err("TLS versions", &e))?
            .with_no_client_auth()
            .with_single_cert(vec![leaf_cert.der().clone(), ca_cert.der().clone()], key)
            .map_err(|e| err("TLS server configuration", &e))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            ca_pem: ca_cert.pem(),
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// The CA's certificate, PEM.
    pub(crate) fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}
