//! [`IapAuth`]: the handle the adapters hold. It decides, per request,
//! whether a token goes along and for which audience ([`IapAuth::plan`]),
//! where it goes ([`IapAuth::apply`]), and whether the answer refused it
//! ([`IapAuth::verdict`]).
//!
//! ```
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let emu = iap_emulator::Emulator::start().await?;
//! # let source: std::sync::Arc<dyn iap_token::TokenSource> = std::sync::Arc::new(
//! #     iap_token::source::metadata::MetadataSource::with_host(&emu.metadata_host())?,
//! # );
//! use iap_token::{IapAuth, auth::Plan};
//!
//! let auth = IapAuth::builder()
//!     .source_arc(source)
//!     .audience("123-abc.apps.googleusercontent.com")
//!     .allow_origin("https://app.example.com")
//!     .build()?;
//!
//! let uri: http::Uri = "https://app.example.com/api".parse().unwrap();
//! let mut headers = http::HeaderMap::new();
//! if let Plan::Attach(attach) = auth.plan(&uri, &http::Extensions::new()) {
//!     let token = match attach.cached() {
//!         Some(token) => token,          // hot path: lock-free, no allocation
//!         None => attach.fetch().await?, // slow path: fetch (or discovery)
//!     };
//!     auth.apply(&mut headers, &token);
//! }
//! # assert!(headers[http::header::AUTHORIZATION].is_sensitive());
//! # Ok(()) }
//! ```
//!
//! # Which audience a request gets
//! 1. `policy::NoAuth` in the request's extensions: no token at all.
//! 2. Scope: a request to an origin that is not configured
//!    ([`IapAuth::for_app`], [`IapAuthBuilder::allow_origin`],
//!    [`IapAuthBuilder::origin_audience`]) gets no token and goes out
//!    untouched. Sending to every origin takes an explicit
//!    [`IapAuthBuilder::any_origin`]: fine for a client that only calls IAP
//!    apps, a leak for a shared client.
//! 3. An [`Audience`] in the request's extensions.
//! 4. For sources whose tokens name a URL (service-account JWTs): the
//!    most specific [audience pattern](IapAuthBuilder::audience_pattern)
//!    configured for the request's origin that covers its path (the rule of
//!    [`AudiencePattern`](crate::AudiencePattern)).
//! 5. The audience mapped to the request's origin.
//! 6. The configured audience, or the discovered one
//!    ([`IapAuthBuilder::discover_audience`]).
//! 7. For sources whose tokens name a URL (a service-account JWT,
//!    [`AudienceKind::RequestUrl`] / [`AudienceKind::HostWildcard`]):
//!    derived from the request's URL.
//!
//! # Where the code is
//! `builder` makes the handle; `scope` matches requests against the
//! configured [`Origin`]s; `plan` applies the rules above and holds the
//! [`Attach`] a request needs; this file holds the handle and what the
//! adapters call around a request ([`IapAuth::apply`],
//! [`IapAuth::verdict`], [`IapAuth::invalidate`]).

mod builder;
mod plan;
mod scope;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use http::{Extensions, HeaderMap, StatusCode, Uri};

use crate::audience_pattern::PatternTable;
use crate::discovery::AudienceDiscovery;
use crate::origin::Origin;
use crate::policy::{Placement, RetryPolicy, Verdict};
use crate::source::AudienceKind;
use crate::{Audience, IdToken, Result, TokenCache};

pub use builder::IapAuthBuilder;
#[doc(hidden)]
pub use plan::Planned;
pub use plan::{Attach, Lookup, Plan};

use plan::AttachTable;
use scope::{HostKey, OriginMatcher};

/// The handle adapters hold: a [`TokenCache`], the audience rules, the
/// origin scope, the header placement and the retry policy. Cheap to clone
/// (an `Arc` inside); [`IapAuth::clone_local`] is the clone to keep per
/// request. `Debug` shows the configuration, never a token.
#[derive(Clone)]
pub struct IapAuth {
    inner: Arc<Handle>,
    // Beside the `Arc`, so that `with_placement` shares everything else.
    placement: Placement,
    retry_policy: RetryPolicy,
}

impl IapAuth {
    /// THE one-liner: a handle for the IAP app at `app_url` (its origin is
    /// the scope: no other origin ever gets the token), with tokens for
    /// `audience` (the app's IAP OAuth client ID) from Application Default
    /// Credentials ([`crate::adc`]), default cache options, `Authorization`
    /// placement and retries on IAP's own refusals only.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let emu = iap_emulator::Emulator::start().await?;
    /// # let dir = tempfile::tempdir()?;
    /// # let key_file = dir.path().join("key.json");
    /// # emu.create_service_account("runner").await?.write_key_file(&key_file)?;
    /// # // SAFETY: a doctest runs in a process of its own, and no other
    /// # // thread of this one reads the environment.
    /// # unsafe { std::env::set_var("GOOGLE_APPLICATION_CREDENTIALS", &key_file) };
    /// let auth = iap_token::IapAuth::for_app(
    ///     "https://app.example.com",
    ///     "123-abc.apps.googleusercontent.com",
    /// ).await?;
    /// # let _ = auth;
    /// # Ok(()) }
    /// ```
    ///
    /// For anything else (another source, several origins, discovery, the
    /// `Proxy-Authorization` header) use [`IapAuth::builder`].
    pub async fn for_app(
        app_url: impl AsRef<str>,
        audience: impl Into<Audience>,
    ) -> Result<IapAuth> {
        let origin = Origin::of(app_url.as_ref())?;
        let source = crate::adc::application_default().await?;
        IapAuth::builder()
            .source_arc(source)
            .audience(audience)
            .allow_origin(origin.to_string())
            .build()
    }
}

/// One reference count on the configuration. The handle the builder
/// makes also holds a few more, one per core or so (`replicas`), which
/// [`IapAuth::clone_local`] hands out; a replica holds none (no cycle).
/// Aligned so that no two counters share a cache line.
#[repr(align(128))]
struct Handle {
    auth: Arc<AuthInner>,
    replicas: Box<[Arc<Handle>]>,
}

impl Handle {
    fn new(auth: AuthInner) -> Arc<Handle> {
        let auth = Arc::new(auth);
        let replicas = match crate::per_core::copies() {
            1 => Box::default(),
            n => (0..n)
                .map(|_| {
                    Arc::new(Handle {
                        auth: auth.clone(),
                        replicas: Box::default(),
                    })
                })
                .collect(),
        };
        Arc::new(Handle { auth, replicas })
    }
}

impl std::ops::Deref for Handle {
    type Target = AuthInner;

    #[inline]
    fn deref(&self) -> &AuthInner {
        &self.auth
    }
}

struct AuthInner {
    cache: TokenCache,
    /// The configuration most handles have, when this one has it: checked
    /// before the general rules below.
    common: Option<Common>,
    default: DefaultAudience,
    /// Origins that get the default audience.
    allowed: Vec<OriginMatcher>,
    /// Origins with their own audience, pre-resolved.
    mapped: Vec<(OriginMatcher, Attach)>,
    /// Service-account JWT audience patterns, pre-resolved.
    patterns: PatternTable<Attach>,
    /// Whether a request without an origin under a scope was reported.
    warned_no_origin: AtomicBool,
}

/// One audience for every request in scope, and one origin or any: what
/// [`IapAuth::for_app`] builds. The same rules as the general ones for
/// such a handle, in fewer steps.
struct Common {
    /// `None`: any origin.
    origin: Option<OriginMatcher>,
    attach: Attach,
}

enum DefaultAudience {
    /// One audience, pre-resolved: `plan` clones it.
    Fixed(Attach),
    /// Discovered per origin, then pre-resolved per origin.
    Discover {
        discovery: AudienceDiscovery,
        resolved: AttachTable<OriginMatcher>,
    },
    /// From the request's URL; host-wildcard audiences are remembered per
    /// host, so a host seen before costs no allocation.
    FromUrl {
        kind: AudienceKind,
        hosts: AttachTable<HostKey>,
    },
    /// Only mapped origins get a token.
    None,
}

impl IapAuth {
    /// A builder: a source, an audience (or discovery), a scope, options.
    pub fn builder() -> IapAuthBuilder {
        IapAuthBuilder::default()
    }

    /// The cache behind the handle.
    pub fn cache(&self) -> &TokenCache {
        &self.inner.cache
    }

    /// Which header carries the token.
    #[inline]
    pub fn placement(&self) -> Placement {
        self.placement
    }

    /// Which answers count as a refused token.
    #[inline]
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry_policy
    }

    /// A clone to keep for one request (an adapter's response future keeps
    /// one until the answer is in): the same handle, but the reference
    /// count it takes is this thread's, one of a few the handle keeps, so
    /// requests on several cores do not all write to one counter. Equal in
    /// every other way to [`Clone::clone`].
    ///
    /// ```
    /// # fn run(auth: iap_token::IapAuth) {
    /// let kept = auth.clone_local();
    /// assert_eq!(kept.retry_policy(), auth.retry_policy());
    /// # }
    /// ```
    #[inline]
    pub fn clone_local(&self) -> IapAuth {
        let inner = match self.inner.replicas.len() {
            0 => self.inner.clone(),
            n => self.inner.replicas[crate::per_core::index(n)].clone(),
        };
        IapAuth {
            inner,
            placement: self.placement,
            retry_policy: self.retry_policy,
        }
    }

    /// The same handle (same cache, audiences, scope and retry policy) with
    /// the token in another header. Cheap: nothing is copied but an `Arc`.
    ///
    /// ```
    /// # fn run(auth: iap_token::IapAuth) {
    /// use iap_token::policy::{Placement, RetryPolicy};
    ///
    /// // Behind a proxy that takes `Authorization` for itself, e.g. the
    /// // app's own login: IAP reads `Proxy-Authorization` too.
    /// let proxy = auth.with_placement(Placement::ProxyAuthorization);
    /// assert_eq!(proxy.placement(), Placement::ProxyAuthorization);
    /// # }
    /// ```
    pub fn with_placement(&self, placement: Placement) -> IapAuth {
        IapAuth {
            inner: self.inner.clone(),
            placement,
            retry_policy: self.retry_policy,
        }
    }
    /// Puts `token` in the placement's header, replacing any value there.
    /// The value is the token's pre-built sensitive `HeaderValue`.
    #[inline]
    pub fn apply(&self, headers: &mut HeaderMap, token: &IdToken) {
        headers.insert(self.placement.header_name(), token.header_value().clone());
    }

    /// Whether a response to a request that carried a token refused it
    /// (see [`Verdict::of`] and the handle's [`RetryPolicy`]).
    #[inline]
    pub fn verdict(&self, status: StatusCode, headers: &HeaderMap) -> Verdict {
        Verdict::of(self.retry_policy, status, headers)
    }

    /// Drops `token` from the cache if it is still current (see
    /// [`TokenCache::invalidate`]). Of a burst of refusals of one token,
    /// exactly one call returns `true` and one new token is fetched.
    pub fn invalidate(&self, token: &IdToken) -> bool {
        self.inner.cache.invalidate(token)
    }

    /// A token for a request to `uri`, or `None` when the plan is to skip it.
    pub async fn token_for(&self, uri: &Uri) -> Result<Option<IdToken>> {
        match self.plan(uri, &Extensions::new()) {
            Plan::Skip => Ok(None),
            Plan::Attach(attach) => match attach.cached() {
                Some(token) => Ok(Some(token)),
                None => attach.fetch().await.map(Some),
            },
        }
    }
}

impl fmt::Debug for IapAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        let audience: &dyn fmt::Debug = match &inner.default {
            DefaultAudience::Fixed(attach) => attach,
            DefaultAudience::Discover { .. } => &"<discovered per origin>",
            DefaultAudience::FromUrl { kind, .. } => kind,
            DefaultAudience::None => &"<mapped origins only>",
        };
        f.debug_struct("IapAuth")
            .field("audience", audience)
            .field("allowed", &inner.allowed)
            .field("mapped", &inner.mapped)
            .field("placement", &self.placement)
            .field("retry_policy", &self.retry_policy)
            .field("cache", &inner.cache)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::plan::Planned;

    const JWT: &str = "eyJhbGciOiJub25lIn0.eyJhdWQiOiJjbGllbnQtaWQiLCJlbWFpbCI6ImFAYiIsImV4cCI6NDEwMjQ0NDgwMH0.c2ln";

    fn builder() -> IapAuthBuilder {
        IapAuth::builder()
            .source(crate::source::static_token::StaticTokenSource::new(JWT).unwrap())
            .audience("client-id")
            .any_origin()
    }

    #[tokio::test]
    async fn with_placement_shares_the_cache_and_keeps_the_retry_policy() {
        let auth = builder().build().unwrap();
        let token = auth
            .token_for(&"https://a/".parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        let proxy = auth.with_placement(Placement::ProxyAuthorization);
        assert_eq!(proxy.placement(), Placement::ProxyAuthorization);
        assert_eq!(proxy.retry_policy(), RetryPolicy::IapGenerated);
        assert_eq!(auth.retry_policy(), RetryPolicy::IapGenerated);
        let Planned::Cached(shared) =
            proxy.plan_cached(&"https://a/".parse().unwrap(), &Extensions::new())
        else {
            panic!("the token cached through `auth` is cached for `proxy`")
        };
        assert!(shared.same_as(&token));
        let back = proxy.with_placement(Placement::Authorization);
        assert_eq!(back.retry_policy(), RetryPolicy::IapGenerated);

        let never = builder().retry_policy(RetryPolicy::Never).build().unwrap();
        let moved = never.with_placement(Placement::ProxyAuthorization);
        assert_eq!(
            moved.retry_policy(),
            RetryPolicy::Never,
            "a chosen policy stays"
        );
    }
}
