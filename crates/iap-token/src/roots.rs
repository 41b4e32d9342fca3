//! Extra root certificates: trust a corporate TLS-inspection CA, or the
//! emulator's own CA, on top of the platform's trust store.
//!
//! Every client this crate builds verifies servers with the platform
//! verifier (`rustls-platform-verifier`): the system's trust store, which on
//! Linux also honours `SSL_CERT_FILE` and `SSL_CERT_DIR` (they then replace
//! the system's roots). [`RootCertificates`] adds certificates of your own
//! to that, for every kind of client the toolkit uses:
//!
//! - [`http_client`](RootCertificates::http_client): a `reqwest::Client`
//!   with the token endpoints' settings (timeouts, no redirects), for a
//!   credential source or [`AudienceDiscovery`](crate::discovery::AudienceDiscovery);
//! - [`add_to`](RootCertificates::add_to): your own `reqwest::ClientBuilder`
//!   (for the app client behind `iap-reqwest`'s middleware, start from
//!   `iap_reqwest::client_builder()`, which does not follow IAP's sign-in
//!   redirect);
//! - [`rustls_client_config`](RootCertificates::rustls_client_config): a
//!   rustls configuration for hyper-rustls (`iap-tower` over a hyper-util
//!   client) or tonic.
//!
//! A server whose certificate chains to none of them fails with an error
//! that says `invalid peer certificate` and, from this crate, names the
//! endpoint. Trusting a CA changes nothing about where credentials may go:
//! tokens are still sent over https only, except to loopback and the
//! metadata server.
//!
//! ```
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let emu = iap_emulator::Emulator::builder().tls().start().await?;
//! # let dir = tempfile::tempdir()?;
//! # let ca_file = dir.path().join("corp-ca.pem");
//! # std::fs::write(&ca_file, emu.ca_pem().unwrap())?;
//! use iap_token::RootCertificates;
//!
//! let roots = RootCertificates::from_pem_file(&ca_file)?; // e.g. "/etc/ssl/corp-ca.pem"
//! // With iap-reqwest: roots.add_to(iap_reqwest::client_builder())
//! let app_client = roots.add_to(reqwest::Client::builder()).build()?;
//! let tls = roots.rustls_client_config()?; // for hyper-rustls / tonic
//! # assert!(app_client.get(emu.url()).send().await?.status().is_success());
//! # let _ = tls; Ok(()) }
//! ```

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

use crate::transport::{CONNECT_TIMEOUT, REQUEST_TIMEOUT};
use crate::{Error, Result};

/// Certificate authorities to trust besides the platform's. Cheap to clone.
/// See the [module docs](self).
#[derive(Clone)]
pub struct RootCertificates {
    certs: Arc<[CertificateDer<'static>]>,
    origin: Arc<str>,
}

impl fmt::Debug for RootCertificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootCertificates")
            .field("from", &self.origin)
            .field("certificates", &self.certs.len())
            .finish()
    }
}

impl RootCertificates {
    /// The certificates of a PEM bundle (one or more `BEGIN CERTIFICATE`
    /// blocks; anything else in it is ignored).
    pub fn from_pem(pem: impl AsRef<[u8]>) -> Result<Self> {
        Self::parse(pem.as_ref(), "PEM")
    }

    /// The certificates of a PEM file, e.g. `--cacert FILE`.
    pub fn from_pem_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let pem = std::fs::read(path).map_err(|e| {
            Error::config(format!(
                "cannot read CA certificate file {}: {e}: check the path (--cacert)",
                path.display()
            ))
        })?;
        Self::parse(&pem, &path.display().to_string())
    }

    fn parse(pem: &[u8], origin: &str) -> Result<Self> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| {
                Error::config(format!(
                    "{origin}: not a PEM certificate bundle ({e}): give a file of \
                     -----BEGIN CERTIFICATE----- blocks"
                ))
            })?;
        if certs.is_empty() {
            return Err(Error::config(format!(
                "{origin}: no certificate in it (expected -----BEGIN CERTIFICATE----- blocks)"
            )));
        }
        Ok(RootCertificates {
            certs: certs.into(),
            origin: origin.into(),
        })
    }

    /// How many certificates there are.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// Always false: a bundle without a certificate is refused.
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// The certificates, DER.
    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    /// `builder` trusting these certificates as well as the platform's.
    pub fn add_to(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        let certs = self
            .certs
            .iter()
            .filter_map(|der| reqwest::Certificate::from_der(der).ok());
        builder.tls_certs_merge(certs)
    }

    /// A client for Google's identity endpoints trusting these certificates
    /// as well as the platform's, with the settings of the crate's shared
    /// client: connect timeout 5 s, request timeout 30 s, redirects never
    /// followed, proxies from the environment honoured.
    pub fn http_client(&self) -> Result<reqwest::Client> {
        self.add_to(
            reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(REQUEST_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("iap-rs/", env!("CARGO_PKG_VERSION"))),
        )
        .build()
        .map_err(|e| {
            Error::config(format!(
                "cannot build an HTTP client trusting the certificates of {}: {e}: \
                 check that they are CA certificates",
                self.origin
            ))
        })
    }

    /// A rustls client configuration (aws-lc-rs) verifying servers with the
    /// platform verifier plus these certificates, no ALPN set (hyper-rustls
    /// sets it from `enable_http1`/`enable_http2`).
    pub fn rustls_client_config(&self) -> Result<rustls::ClientConfig> {
        client_config(self.certs.to_vec())
    }
}

/// The platform verifier with `extra` roots; the same as reqwest's.
pub(crate) fn client_config(extra: Vec<CertificateDer<'static>>) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let fail = |e: rustls::Error| Error::Other {
        context: "cannot set up TLS with the platform's certificates".into(),
        source: Some(std::sync::Arc::new(e)),
    };
    let verifier = if extra.is_empty() {
        rustls_platform_verifier::Verifier::new(provider.clone()).map_err(fail)?
    } else {
        // With extra roots, the likely culprit is one of them.
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone()).map_err(
            |e| {
                Error::config(format!(
                    "cannot trust the extra CA certificates: {e}: check that they are \
                     CA certificates (RootCertificates)"
                ))
            },
        )?
    };
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(fail)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// A rustls client configuration with the platform's roots only (what
/// every client of the toolkit uses without [`RootCertificates`]).
pub fn platform_client_config() -> Result<rustls::ClientConfig> {
    client_config(Vec::new())
}
