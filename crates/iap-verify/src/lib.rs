//! Verify the header Google Cloud Identity-Aware Proxy signs for the
//! services behind it: `x-goog-iap-jwt-assertion`.
//!
//! A service behind IAP must not trust a request just because it arrived:
//! [`IapVerifier`] checks IAP's assertion (ES256 only, IAP's key by `kid`,
//! issuer, audience, expiry, an optional [`Policy`]) and tells who the
//! caller is ([`IapIdentity`]). IAP's keys are fetched on first use and
//! cached for as long as Google says, refreshed in the background; an
//! assertion already verified is remembered until it expires, so a request
//! costs a lookup, not a signature check.
//!
//! - [`IapVerifyLayer`]: a tower layer for axum, hyper or tonic servers.
//! - With the `axum` feature, [`IapIdentity`] is an extractor (also as
//!   `Option<IapIdentity>`), behind the layer or on its own with an
//!   `Extension(IapVerifier)` (see `IapRejection`).
//! - [`audience`]: the three shapes of `aud` (load balancer, App Engine,
//!   Cloud Run).
//!
//! ```
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The emulator's IAP stands in for Google's here.
//! let emulator = iap_emulator::Emulator::start().await?;
//! let app = emulator.app();
//! let assertion = emulator.mint_assertion(&app, "alice@example.com");
//!
//! let verifier = iap_verify::IapVerifier::builder()
//!     .audience(iap_verify::audience::backend_service(
//!         app.project_number(),
//!         app.backend_service_id(),
//!     ))
//!     .jwks_url(emulator.iap_jwks_url())
//!     .build()?;
//! let who = verifier.verify(&assertion).await?;
//! assert_eq!(who.email(), Some("alice@example.com"));
//! assert!(who.subject().starts_with("accounts.google.com:"));
//!
//! let forged = format!("{}x", assertion);
//! let refused = verifier.verify(&forged).await.unwrap_err();
//! assert_eq!(refused.check(), "malformed"); // or "signature", "expired", ...
//! # Ok(()) }
//! ```
//!
//! What IAP sends and what is checked is described in the repository's
//! `docs/iap-signed-header.md`.
#![warn(missing_docs)]

pub mod audience;
mod error;
#[cfg(feature = "axum")]
mod extract;
mod identity;
mod keys;
mod layer;
mod policy;
mod remembered;
mod verifier;

pub use error::{BuildError, VerifyError};
#[cfg(feature = "axum")]
pub use extract::IapRejection;
pub use identity::IapIdentity;
pub use layer::{IapVerify, IapVerifyLayer, ResponseFuture};
pub use policy::Policy;
pub use verifier::{ASSERTION_HEADER, GOOGLE_JWKS_URL, ISSUER, IapVerifier, IapVerifierBuilder};
