//! # iap-tower
//!
//! A [tower] layer for calling apps behind Google Cloud Identity-Aware
//! Proxy: [`IapLayer`] adds a cached ID token to every request in scope and,
//! when IAP refuses a token (revoked, expired early, wrong key), invalidates
//! exactly that token and sends the request once more with a fresh one.
//! Works for hyper-util clients, tonic `Channel`s (gRPC calls are retried
//! too: see [`replay`]) and anything else that is a
//! `Service<http::Request<B>>`.
//!
//! [tower]: https://docs.rs/tower
#![warn(missing_docs)]

pub mod future;
pub mod layer;
pub mod replay;
pub mod service;

pub use layer::IapLayer;
pub use replay::{BoxError, ReplayableBody};
pub use service::IapService;
