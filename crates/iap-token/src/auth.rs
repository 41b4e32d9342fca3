//! [`IapAuth`]: the handle the adapters hold. It decides, per request,
//! whether a token goes along and for which audience ([`IapAuth::plan`]),
//! where it goes ([`IapAuth::apply`]), and whether the answer refused it
//! ([`IapAuth::verdict`]).
//!
//! ```no_run
//! # async fn run(source: std::sync::Arc<dyn iap_token::TokenSource>) -> iap_token::Result<()> {
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
//! # Ok(()) }
//! ```
//!
//! # Which audience a request gets
//! 1. `policy::NoAuth` in the request's extensions: no token at all.
//! 2. Scope: when origins are configured ([`IapAuthBuilder::allow_origin`],
//!    [`IapAuthBuilder::origin_audience`]), a request to any other origin
//!    gets no token. **When none is configured, every origin gets one**:
//!    fine for a client that only calls IAP apps, a leak for a shared client.
//! 3. An [`Audience`] in the request's extensions.
//! 4. The audience mapped to the request's origin.
//! 5. The configured audience, or the discovered one
//!    ([`IapAuthBuilder::discover_audience`]).
//! 6. For sources whose tokens name a URL (a self-signed service-account
//!    JWT, [`AudienceKind::RequestUrl`] / [`AudienceKind::HostWildcard`]):
//!    derived from the request's URL.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use http::{Extensions, HeaderMap, StatusCode, Uri};

use crate::cache::{Entry, TokenCacheBuilder};
use crate::discovery::{AudienceDiscovery, Origin};
use crate::policy::{NoAuth, Placement, RetryPolicy, Verdict};
use crate::source::{AudienceKind, BoxFuture};
use crate::{Audience, Error, IdToken, Result, TokenCache, TokenSource};

/// The handle adapters hold: a [`TokenCache`], the audience rules, the
/// origin scope, the header placement and the retry policy. Cheap to clone
/// (an `Arc` inside). `Debug` shows the configuration, never a token.
#[derive(Clone)]
pub struct IapAuth {
    inner: Arc<AuthInner>,
}

struct AuthInner {
    cache: TokenCache,
    default: DefaultAudience,
    /// Origins that get the default audience.
    allowed: Vec<Origin>,
    /// Origins with their own audience, pre-resolved.
    mapped: Vec<(Origin, Attach)>,
    placement: Placement,
    retry_policy: RetryPolicy,
}

enum DefaultAudience {
    /// One audience, pre-resolved: `plan` clones it.
    Fixed(Attach),
    /// Discovered per origin, then pre-resolved per origin.
    Discover {
        discovery: AudienceDiscovery,
        resolved: AttachTable<Origin>,
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

/// What to do for one request; from [`IapAuth::plan`].
#[derive(Clone, Debug)]
pub enum Plan {
    /// Send the request as is: out of scope, or `NoAuth` asked for.
    Skip,
    /// Attach a token for this audience.
    Attach(Attach),
}

/// The token a request needs: [`Attach::cached`] on the hot path,
/// [`Attach::fetch`] when that returns `None`. Cheap to clone, `'static`.
#[derive(Clone)]
pub struct Attach {
    target: Target,
}

#[derive(Clone)]
enum Target {
    Entry {
        cache: TokenCache,
        entry: Arc<Entry>,
    },
    /// The origin's audience is not known yet.
    Discover { auth: IapAuth, uri: Uri },
    /// No token can be had for this request; `fetch` says why.
    Invalid(Arc<str>),
}

impl Attach {
    fn entry(cache: &TokenCache, entry: Arc<Entry>) -> Attach {
        Attach {
            target: Target::Entry {
                cache: cache.clone(),
                entry,
            },
        }
    }

    /// The hot path: the cached token, if usable. Lock-free, no allocation.
    /// `None` means: call [`Attach::fetch`].
    #[inline]
    pub fn cached(&self) -> Option<IdToken> {
        match &self.target {
            Target::Entry { cache, entry } => cache.cached_entry(entry),
            Target::Discover { .. } | Target::Invalid(_) => None,
        }
    }

    /// The slow path: a token from the cache's single fetch for this
    /// audience, discovering the audience first if needed.
    pub fn fetch(&self) -> BoxFuture<'static, Result<IdToken>> {
        match &self.target {
            Target::Entry { cache, entry } => cache.fetch_entry(entry.clone()),
            Target::Discover { auth, uri } => {
                let (auth, uri) = (auth.clone(), uri.clone());
                Box::pin(async move {
                    let attach = auth.discover_for(&uri).await?;
                    attach.fetch().await
                })
            }
            Target::Invalid(why) => {
                let why = why.clone();
                Box::pin(async move {
                    Err(Error::Other {
                        context: why.to_string(),
                        source: None,
                    })
                })
            }
        }
    }

    /// The audience, when known before fetching.
    pub fn audience(&self) -> Option<&Audience> {
        match &self.target {
            Target::Entry { entry, .. } => Some(entry.audience()),
            Target::Discover { .. } | Target::Invalid(_) => None,
        }
    }
}

impl fmt::Debug for Attach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Target::Entry { entry, .. } => f.debug_tuple("Attach").field(entry.audience()).finish(),
            Target::Discover { uri, .. } => f
                .debug_struct("Attach")
                .field("discover_for", &uri.authority())
                .finish(),
            Target::Invalid(why) => f.debug_struct("Attach").field("invalid", why).finish(),
        }
    }
}

impl IapAuth {
    /// A handle for `audience` from Application Default Credentials
    /// ([`crate::adc`]), with default cache options and no origin scope
    /// (every origin gets a token: see the [module docs](self)).
    pub async fn from_adc(audience: impl Into<Audience>) -> Result<IapAuth> {
        let source = crate::adc::application_default().await?;
        IapAuth::builder()
            .source_arc(source)
            .audience(audience)
            .build()
    }

    /// A builder: a source, an audience (or discovery), a scope, options.
    pub fn builder() -> IapAuthBuilder {
        IapAuthBuilder::default()
    }

    /// The cache behind the handle.
    pub fn cache(&self) -> &TokenCache {
        &self.inner.cache
    }

    /// Which header carries the token.
    pub fn placement(&self) -> Placement {
        self.inner.placement
    }

    /// Which answers count as a refused token.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.inner.retry_policy
    }

    /// Decides for one request: [`Plan::Skip`] (out of scope, or `NoAuth`
    /// in `extensions`) or [`Plan::Attach`] with the audience chosen by the
    /// rules in the [module docs](self). Sync; no allocation for a
    /// configured, mapped or discovered audience, nor for a host-wildcard
    /// audience of a host seen before (exact-URL audiences are built per
    /// request).
    pub fn plan(&self, uri: &Uri, extensions: &Extensions) -> Plan {
        if extensions.get::<NoAuth>().is_some() {
            return Plan::Skip;
        }
        let inner = &*self.inner;
        let mut mapped = None;
        if !inner.allowed.is_empty() || !inner.mapped.is_empty() {
            mapped = inner
                .mapped
                .iter()
                .find(|(origin, _)| origin.matches(uri))
                .map(|(_, a)| a);
            if mapped.is_none() && !inner.allowed.iter().any(|origin| origin.matches(uri)) {
                tracing::trace!(authority = ?uri.authority(), "origin out of scope: no IAP token");
                return Plan::Skip;
            }
        }
        if let Some(audience) = extensions.get::<Audience>() {
            return Plan::Attach(Attach::entry(&inner.cache, inner.cache.entry(audience)));
        }
        if let Some(attach) = mapped {
            return Plan::Attach(attach.clone());
        }
        match &inner.default {
            DefaultAudience::Fixed(attach) => Plan::Attach(attach.clone()),
            DefaultAudience::Discover { resolved, .. } => {
                match resolved.find(|origin| origin.matches(uri)) {
                    Some(attach) => Plan::Attach(attach),
                    None => Plan::Attach(Attach {
                        target: Target::Discover {
                            auth: self.clone(),
                            uri: uri.clone(),
                        },
                    }),
                }
            }
            DefaultAudience::FromUrl {
                kind: AudienceKind::HostWildcard,
                hosts,
            } => Plan::Attach(match hosts.find(|host| host.matches(uri)) {
                Some(attach) => attach,
                None => match HostKey::of(uri) {
                    Some(host) => hosts.get_or_insert(host, MAX_REMEMBERED_HOSTS, || {
                        self.attach_from_url(AudienceKind::HostWildcard, uri)
                    }),
                    None => self.attach_from_url(AudienceKind::HostWildcard, uri),
                },
            }),
            DefaultAudience::FromUrl { kind, .. } => Plan::Attach(self.attach_from_url(*kind, uri)),
            DefaultAudience::None => Plan::Skip,
        }
    }

    /// The entry of the audience a URL-minting source needs for `uri`.
    fn attach_from_url(&self, kind: AudienceKind, uri: &Uri) -> Attach {
        let cache = &self.inner.cache;
        match audience_from_url(kind, uri) {
            Ok(audience) => Attach::entry(cache, cache.entry(&audience)),
            Err(why) => Attach {
                target: Target::Invalid(why.into()),
            },
        }
    }

    /// Puts `token` in the placement's header, replacing any value there.
    /// The value is the token's pre-built sensitive `HeaderValue`.
    #[inline]
    pub fn apply(&self, headers: &mut HeaderMap, token: &IdToken) {
        headers.insert(
            self.inner.placement.header_name(),
            token.header_value().clone(),
        );
    }

    /// Whether a response to a request that carried a token refused it
    /// (see [`Verdict::of`] and the handle's [`RetryPolicy`]).
    #[inline]
    pub fn verdict(&self, status: StatusCode, headers: &HeaderMap) -> Verdict {
        Verdict::of(self.inner.retry_policy, status, headers)
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

    /// Discovers `uri`'s audience and records it for the origin.
    async fn discover_for(&self, uri: &Uri) -> Result<Attach> {
        let DefaultAudience::Discover {
            discovery,
            resolved,
        } = &self.inner.default
        else {
            return Err(Error::Other {
                context: "audience discovery is not configured".into(),
                source: None,
            });
        };
        let url = url::Url::parse(&uri.to_string()).map_err(|e| Error::Other {
            context: format!(
                "cannot discover the IAP audience of {uri:?}: not an absolute URL ({e})"
            ),
            source: None,
        })?;
        let audience = discovery.discover(&url).await?;
        let origin = Origin::of_url(&url).ok_or_else(|| Error::Other {
            context: format!(
                "cannot discover the IAP audience of {uri:?}: it has no http(s) origin"
            ),
            source: None,
        })?;
        let cache = &self.inner.cache;
        Ok(resolved.get_or_insert(origin, usize::MAX, || {
            Attach::entry(cache, cache.entry(&audience))
        }))
    }
}

/// A small copy-on-write table of pre-resolved audiences: lock-free,
/// allocation-free lookups on the hot path; writers take turns and copy.
struct AttachTable<K> {
    list: ArcSwap<Vec<(K, Attach)>>,
    writer: Mutex<()>,
}

impl<K: Clone + PartialEq> AttachTable<K> {
    fn new() -> Self {
        AttachTable {
            list: ArcSwap::from_pointee(Vec::new()),
            writer: Mutex::new(()),
        }
    }

    /// The entry of the first key that `hit` accepts.
    #[inline]
    fn find(&self, hit: impl Fn(&K) -> bool) -> Option<Attach> {
        self.list
            .load()
            .iter()
            .find(|(key, _)| hit(key))
            .map(|(_, attach)| attach.clone())
    }

    /// The entry of `key`, else a new one from `make`, recorded while the
    /// table holds fewer than `limit` entries.
    fn get_or_insert(&self, key: K, limit: usize, make: impl FnOnce() -> Attach) -> Attach {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let list = self.list.load();
        if let Some((_, attach)) = list.iter().find(|(k, _)| *k == key) {
            return attach.clone();
        }
        let attach = make();
        if list.len() < limit {
            let mut grown = Vec::clone(&list);
            grown.push((key, attach.clone()));
            self.list.store(Arc::new(grown));
        }
        attach
    }
}

/// How many hosts' wildcard audiences [`IapAuth::plan`] remembers; a
/// client calling more hosts derives the others' audiences per request
/// (and their cache entries may then be dropped once unused).
const MAX_REMEMBERED_HOSTS: usize = 64;

/// The request parts a host-wildcard audience is made of, exactly as
/// [`audience_from_url`] reads them: equal keys give equal audiences.
#[derive(Clone, PartialEq, Eq)]
struct HostKey {
    scheme: Box<str>,
    host: Box<str>,
    port: Option<Box<str>>,
}

impl HostKey {
    fn of(uri: &Uri) -> Option<HostKey> {
        let authority = uri.authority()?;
        Some(HostKey {
            scheme: uri.scheme_str()?.into(),
            host: authority.host().into(),
            port: authority.port().map(|p| p.as_str().into()),
        })
    }

    /// Whether `uri` has exactly these parts. No allocation.
    #[inline]
    fn matches(&self, uri: &Uri) -> bool {
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return false;
        };
        *self.scheme == *scheme
            && *self.host == *authority.host()
            && self.port.as_deref() == authority.port().as_ref().map(|p| p.as_str())
    }
}

/// The audience a URL-minting source needs for `uri`.
fn audience_from_url(kind: AudienceKind, uri: &Uri) -> Result<Audience, String> {
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(format!(
            "cannot derive a token audience from {uri:?}: it has no scheme and host"
        ));
    };
    let host = authority.host();
    let port = authority
        .port()
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    Ok(Audience::from(match kind {
        AudienceKind::HostWildcard => format!("{scheme}://{host}{port}/*"),
        _ => format!("{scheme}://{host}{port}{}", uri.path()),
    }))
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
            .field("placement", &inner.placement)
            .field("retry_policy", &inner.retry_policy)
            .field("cache", &inner.cache)
            .finish()
    }
}

/// Builds an [`IapAuth`]; from [`IapAuth::builder`].
#[derive(Default)]
pub struct IapAuthBuilder {
    source: Option<Arc<dyn TokenSource>>,
    audience: Option<Audience>,
    discover: Option<AudienceDiscovery>,
    allowed: Vec<String>,
    mapped: Vec<(String, Audience)>,
    placement: Placement,
    retry_policy: Option<RetryPolicy>,
    cache: Option<TokenCacheBuilder>,
}

impl fmt::Debug for IapAuthBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IapAuthBuilder")
            .field("source", &self.source)
            .field("audience", &self.audience)
            .field("discover", &self.discover.is_some())
            .field("allowed", &self.allowed)
            .field("mapped", &self.mapped)
            .field("placement", &self.placement)
            .field("retry_policy", &self.retry_policy)
            .finish_non_exhaustive()
    }
}

impl IapAuthBuilder {
    /// Where tokens come from.
    pub fn source(self, source: impl TokenSource) -> Self {
        self.source_arc(Arc::new(source))
    }

    /// Where tokens come from, already shared.
    pub fn source_arc(mut self, source: Arc<dyn TokenSource>) -> Self {
        self.source = Some(source);
        self
    }

    /// The audience (IAP OAuth client ID) for requests that get no other.
    pub fn audience(mut self, audience: impl Into<Audience>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Discover each origin's audience from IAP's sign-in redirect (see
    /// [`crate::discovery`]) instead of configuring one. The first request
    /// to an origin pays one extra unauthenticated round trip.
    pub fn discover_audience(self) -> Self {
        self.discovery(AudienceDiscovery::new())
    }

    /// Like [`IapAuthBuilder::discover_audience`], with a given discovery
    /// (its HTTP client, or a cache shared with other handles).
    pub fn discovery(mut self, discovery: AudienceDiscovery) -> Self {
        self.discover = Some(discovery);
        self
    }

    /// Only send tokens to these origins (call once per origin), e.g.
    /// `https://app.example.com` or `http://127.0.0.1:8080`.
    pub fn allow_origin(mut self, origin: impl Into<String>) -> Self {
        self.allowed.push(origin.into());
        self
    }

    /// Send tokens for `audience` to `origin` (which is thereby allowed).
    pub fn origin_audience(
        mut self,
        origin: impl Into<String>,
        audience: impl Into<Audience>,
    ) -> Self {
        self.mapped.push((origin.into(), audience.into()));
        self
    }

    /// Which header carries the token (default `Authorization`).
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// Which answers count as a refused token (default:
    /// [`Placement::default_retry_policy`] of the placement).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry_policy = Some(policy);
        self
    }

    /// Cache options, e.g. `TokenCacheBuilder::options().refresh_ahead(..)`.
    pub fn cache(mut self, options: TokenCacheBuilder) -> Self {
        self.cache = Some(options);
        self
    }

    /// Builds the handle. Needs no running runtime. Fails when no source is
    /// set, an origin does not parse, or no audience can be had (no
    /// audience, no discovery, no origin map, and a source minting tokens
    /// for client IDs).
    pub fn build(self) -> Result<IapAuth> {
        let config_error = |context: String| Error::Other {
            context,
            source: None,
        };
        let source = self
            .source
            .ok_or_else(|| config_error("IapAuth needs a token source: call .source(..)".into()))?;
        let kind = source.audience_kind();
        let cache = self
            .cache
            .unwrap_or_else(TokenCacheBuilder::options)
            .source(source)
            .build();
        let allowed = self
            .allowed
            .iter()
            .map(|o| Origin::parse(o))
            .collect::<Result<Vec<_>>>()?;
        let mapped = self
            .mapped
            .iter()
            .map(|(o, aud)| Ok((Origin::parse(o)?, Attach::entry(&cache, cache.entry(aud)))))
            .collect::<Result<Vec<_>>>()?;
        let default = match (self.audience, self.discover) {
            (Some(_), Some(_)) => {
                return Err(config_error(
                    "IapAuth: choose either .audience(..) or .discover_audience(), not both".into(),
                ));
            }
            (Some(aud), None) => DefaultAudience::Fixed(Attach::entry(&cache, cache.entry(&aud))),
            (None, Some(_)) if kind != AudienceKind::ClientId => {
                return Err(config_error(format!(
                    "IapAuth: .discover_audience() finds IAP client IDs, but this source mints tokens for URLs ({kind:?}); drop it"
                )));
            }
            (None, Some(discovery)) => DefaultAudience::Discover {
                discovery,
                resolved: AttachTable::new(),
            },
            (None, None) if kind != AudienceKind::ClientId => DefaultAudience::FromUrl {
                kind,
                hosts: AttachTable::new(),
            },
            (None, None) if !mapped.is_empty() && allowed.is_empty() => DefaultAudience::None,
            (None, None) => {
                return Err(config_error(
                    "IapAuth needs an audience: call .audience(IAP_CLIENT_ID), .discover_audience() or .origin_audience(..)"
                        .into(),
                ));
            }
        };
        if allowed.is_empty() && mapped.is_empty() {
            tracing::debug!(
                "IapAuth: no origin configured, so every origin gets a token; scope it with .allow_origin(..)"
            );
        }
        Ok(IapAuth {
            inner: Arc::new(AuthInner {
                cache,
                default,
                allowed,
                mapped,
                retry_policy: self
                    .retry_policy
                    .unwrap_or_else(|| self.placement.default_retry_policy()),
                placement: self.placement,
            }),
        })
    }
}
