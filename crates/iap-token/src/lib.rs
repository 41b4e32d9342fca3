//! # iap-token
//!
//! Google-signed OIDC ID tokens for apps behind Cloud Identity-Aware Proxy,
//! from any credential, cached and refreshed ahead of expiry.
//!
//! The pieces, from the bottom up:
//! - [`IdToken`]: a token, its claims, and its ready `Bearer` header value.
//! - [`source`]: one module per kind of credential, each a [`TokenSource`].
//! - [`adc`]: Application Default Credentials discovery.
//! - [`TokenCache`]: lock-free reads, single-flight fetches, refresh ahead of expiry.
//! - [`IapAuth`]: the handle the adapters (`iap-tower`, `iap-reqwest`) hold.
//! - [`policy`]: header placement and the retry decision, shared by the adapters.

#![warn(missing_docs)]

pub mod access_token;
pub mod adc;
pub mod audience;
pub mod audience_pattern;
pub mod auth;
pub mod cache;
pub(crate) mod clock;
pub(crate) mod credentials_json;
pub mod discovery;
pub(crate) mod endpoints;
pub(crate) mod environment;
pub mod error;
pub mod exchange;
pub(crate) mod iam_credentials;
pub mod login;
pub mod origin;
pub(crate) mod per_core;
pub mod policy;
pub(crate) mod private_file;
pub mod roots;
pub mod source;
pub mod token;
pub(crate) mod transport;

pub use audience::Audience;
pub use audience_pattern::AudiencePattern;
pub use auth::IapAuth;
pub use cache::TokenCache;
pub use error::{Error, Result};
pub use origin::Origin;
pub use roots::RootCertificates;
pub use source::TokenSource;
pub use token::{Claims, IdToken};
