//! # iap
//!
//! Call apps behind Google Cloud Identity-Aware Proxy from Rust: Google ID
//! tokens from any credential, cached and refreshed ahead of expiry, attached
//! to requests by a tower layer or a reqwest middleware, and renewed once
//! when IAP refuses one.
//!
//! One dependency, the parts behind features:
//!
//! | Module | Crate | Feature |
//! |---|---|---|
//! | [`token`] | `iap-token`: sources, ADC, cache, [`IapAuth`] | always |
//! | `tower` | `iap-tower`: `IapLayer` for hyper, tonic, axum | `tower` (default) |
//! | `reqwest` | `iap-reqwest`: `IapMiddleware` for reqwest-middleware | `reqwest` (default) |
//! | `emulator` | `iap-emulator`: Google identity and IAP on loopback, for tests | `emulator` |
//! | `verify` | `iap-verify`: verify IAP's signed header in a service behind IAP (`IapVerifier`, `IapVerifyLayer`) | `verify`; `axum` adds its extractor |
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! # // The emulator stands in for Google and for the app.
//! # let emu = iap_emulator::Emulator::start().await?;
//! # let app = emu.create_app().client_id("123-abc.apps.googleusercontent.com").echo().await?;
//! # let app_url = app.url().as_str().trim_end_matches('/').to_owned();
//! # let dir = tempfile::tempdir()?;
//! # let key_file = dir.path().join("key.json");
//! # emu.create_service_account("runner").await?.write_key_file(&key_file)?;
//! # // SAFETY: a doctest runs in a process of its own, and no other
//! # // thread of this one reads the environment.
//! # unsafe { std::env::set_var("GOOGLE_APPLICATION_CREDENTIALS", &key_file) };
//! // The app's URL (e.g. "https://app.example.com"; its origin is the only one
//! // that gets the token) and its IAP OAuth client ID; credentials from
//! // Application Default Credentials.
//! let auth = iap::IapAuth::for_app(&app_url, "123-abc.apps.googleusercontent.com").await?;
//! // A client that does not follow IAP's sign-in redirect, so a refusal is seen.
//! let client = reqwest_middleware::ClientBuilder::new(iap::reqwest::client_builder().build()?)
//!     .with(iap::reqwest::IapMiddleware::new(auth))
//!     .build();
//! let answer = client.get(format!("{app_url}/api")).send().await?;
//! assert_eq!(answer.status(), 200);
//! # Ok(()) }
//! ```
//!
//! The `examples/` folder has a reqwest client, a hyper-util client, a tonic
//! client and an axum handler, each running against the emulator.
#![warn(missing_docs)]

/// ID tokens: sources, Application Default Credentials, the cache, [`IapAuth`]
/// (the `iap-token` crate).
pub mod token {
    pub use iap_token::*;
}

/// The tower layer (the `iap-tower` crate).
#[cfg(feature = "tower")]
pub mod tower {
    pub use iap_tower::*;
}

/// The reqwest-middleware middleware (the `iap-reqwest` crate).
#[cfg(feature = "reqwest")]
pub mod reqwest {
    pub use iap_reqwest::*;
}

/// The local emulator of Google identity and IAP (the `iap-emulator` crate).
#[cfg(feature = "emulator")]
pub mod emulator {
    pub use iap_emulator::*;
}

/// Verifying IAP's signed header in a service behind IAP (the `iap-verify`
/// crate; with the `axum` feature, `IapIdentity` is an axum extractor).
#[cfg(feature = "verify")]
pub mod verify {
    pub use iap_verify::*;
}

#[cfg(feature = "reqwest")]
pub use iap_reqwest::IapMiddleware;
pub use iap_token::{Audience, Error, IapAuth, IdToken, Result, TokenSource};
#[cfg(feature = "tower")]
pub use iap_tower::IapLayer;
