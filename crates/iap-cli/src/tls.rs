//! `--cacert FILE`: extra certificate authorities for every connection a
//! command makes (token endpoints, audience discovery, the app itself).
//!
//! Set once at start ([`init`]) and read by whatever builds a client. Without
//! it every client uses the platform verifier alone, which on Linux honours
//! `SSL_CERT_FILE` / `SSL_CERT_DIR`.

use std::path::Path;
use std::sync::OnceLock;

use iap_token::RootCertificates;

use crate::failure::{CliResult, Failure};

static ROOTS: OnceLock<Option<RootCertificates>> = OnceLock::new();

/// Reads `--cacert FILE` (if given); call once, before any command runs.
pub fn init(cacert: Option<&Path>) -> CliResult {
    let roots = match cacert {
        Some(path) => Some(
            RootCertificates::from_pem_file(path)
                .map_err(|e| Failure::from(e).context("--cacert"))?,
        ),
        None => None,
    };
    let _ = ROOTS.set(roots);
    Ok(())
}

/// The extra roots of `--cacert`, if any.
pub fn roots() -> Option<&'static RootCertificates> {
    ROOTS.get().and_then(Option::as_ref)
}

/// `builder` trusting `--cacert` too.
pub fn reqwest(builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    match roots() {
        Some(roots) => roots.add_to(builder),
        None => builder,
    }
}

/// A rustls configuration for hyper clients: the platform verifier plus `--cacert`.
pub fn client_config() -> CliResult<rustls::ClientConfig> {
    let config = match roots() {
        Some(roots) => roots.rustls_client_config(),
        None => iap_token::roots::platform_client_config(),
    };
    config.map_err(|e| Failure::from(e).context("cannot set up TLS"))
}
