//! Token sources: one module per kind of credential.
//!
//! A [`TokenSource`] turns a credential into an [`IdToken`] for an audience.
//! Sources do not cache; wrap them in a [`TokenCache`](crate::TokenCache)
//! (which [`IapAuth`](crate::IapAuth) does for you).

pub mod authorized_user;
pub mod external_account;
pub mod impersonated;
pub mod metadata;
pub mod self_signed;
pub mod service_account;
pub mod sign_jwt;
pub mod static_token;

use std::fmt;

use crate::{Audience, IdToken, Result};

/// A boxed, `Send` future, the return type of [`TokenSource::id_token`].
pub use futures_util::future::BoxFuture;

/// Where ID tokens come from. Object safe: `Arc<dyn TokenSource>` is the
/// common currency, and users can plug in their own.
///
/// ```
/// use iap_token::{Audience, IdToken, Result, source::{BoxFuture, TokenSource}};
///
/// #[derive(Debug)]
/// struct FromVault;
///
/// impl TokenSource for FromVault {
///     fn id_token<'a>(&'a self, audience: &'a Audience) -> BoxFuture<'a, Result<IdToken>> {
///         Box::pin(async move { todo!("fetch a token for {audience}") })
///     }
/// }
/// ```
pub trait TokenSource: fmt::Debug + Send + Sync + 'static {
    /// Fetches a fresh ID token for `audience`. No caching here.
    fn id_token<'a>(&'a self, audience: &'a Audience) -> BoxFuture<'a, Result<IdToken>>;

    /// How this source wants the audience derived from a request's URL when
    /// the caller gave none: IAP client IDs by default; a self-signed
    /// service-account JWT wants the URL itself.
    fn audience_kind(&self) -> AudienceKind {
        AudienceKind::ClientId
    }

    /// The endpoint this source asks for tokens (a URL without query), for
    /// errors that must say where: a fetch that passes its deadline
    /// ([`TokenCacheBuilder::fetch_deadline`](crate::cache::TokenCacheBuilder::fetch_deadline))
    /// names it. `None` (the default) for a source that calls no endpoint
    /// (a static token, a JWT signed locally); errors then name the source
    /// by its `Debug`.
    fn endpoint(&self) -> Option<String> {
        None
    }
}

/// What kind of audience a source mints tokens for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AudienceKind {
    /// An OAuth client ID (the IAP client, or an allowlisted one).
    ClientId,
    /// The exact request URL (scheme, host, port, path; no query).
    RequestUrl,
    /// `https://HOST/*`: one token for every path of a host.
    HostWildcard,
}
