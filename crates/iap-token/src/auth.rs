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
//!    [`AudiencePattern`]).
//! 5. The audience mapped to the request's origin.
//! 6. The configured audience, or the discovered one
//!    ([`IapAuthBuilder::discover_audience`]).
//! 7. For sources whose tokens name a URL (a service-account JWT,
//!    [`AudienceKind::RequestUrl`] / [`AudienceKind::HostWildcard`]):
//!    derived from the request's URL.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use http::{Extensions, HeaderMap, StatusCode, Uri};
use url::Url;

use crate::audience_pattern::{AudiencePattern, PatternTable};
use crate::cache::{CachedToken, Entry, TokenCacheBuilder};
use crate::discovery::AudienceDiscovery;
use crate::origin::Origin;
use crate::policy::{NoAuth, Placement, RetryPolicy, Verdict};
use crate::source::{AudienceKind, BoxFuture};
use crate::{Audience, Error, IdToken, Result, TokenCache, TokenSource};

/// The handle adapters hold: a [`TokenCache`], the audience rules, the
/// origin scope, the header placement and the retry policy. Cheap to clone
/// (an `Arc` inside). `Debug` shows the configuration, never a token.
#[derive(Clone)]
pub struct IapAuth {
    inner: Arc<AuthInner>,
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
    /// ```no_run
    /// # async fn run() -> iap_token::Result<()> {
    /// let auth = iap_token::IapAuth::for_app(
    ///     "https://app.example.com",
    ///     "123-abc.apps.googleusercontent.com",
    /// ).await?;
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

struct AuthInner {
    cache: TokenCache,
    default: DefaultAudience,
    /// Origins that get the default audience.
    allowed: Vec<OriginKey>,
    /// Origins with their own audience, pre-resolved.
    mapped: Vec<(OriginKey, Attach)>,
    /// Service-account JWT audience patterns, pre-resolved.
    patterns: PatternTable<Attach>,
    /// Whether a request without an origin under a scope was reported.
    warned_no_origin: AtomicBool,
}

enum DefaultAudience {
    /// One audience, pre-resolved: `plan` clones it.
    Fixed(Attach),
    /// Discovered per origin, then pre-resolved per origin.
    Discover {
        discovery: AudienceDiscovery,
        resolved: AttachTable<OriginKey>,
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

/// What [`IapAuth::plan_cached`] found for one request.
#[derive(Debug)]
pub enum Planned {
    /// Send the request as is: out of scope, or `NoAuth` asked for.
    Skip,
    /// Attach this token, borrowed from the cache (clone it to keep it).
    Cached(CachedToken),
    /// No usable token is cached: fetch one with [`Attach::fetch`].
    Fetch(Attach),
}

/// [`IapAuth::plan_for`]'s answer: the `Attach` borrowed from the handle
/// where it lives there, so the hot path need not clone it.
enum Found<'a> {
    Skip,
    Here(&'a Attach),
    Made(Attach),
}

impl Found<'_> {
    #[inline]
    fn into_plan(self) -> Plan {
        match self {
            Found::Skip => Plan::Skip,
            Found::Here(attach) => Plan::Attach(attach.clone()),
            Found::Made(attach) => Plan::Attach(attach),
        }
    }

    #[inline]
    fn cached(self) -> Planned {
        let attach = match self {
            Found::Skip => return Planned::Skip,
            Found::Here(attach) => match attach.cached_ref() {
                Some(token) => return Planned::Cached(token),
                None => attach.clone(),
            },
            Found::Made(attach) => attach,
        };
        match attach.cached_ref() {
            Some(token) => Planned::Cached(token),
            None => Planned::Fetch(attach),
        }
    }
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
    Discover { auth: IapAuth, url: Arc<Url> },
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
        self.cached_ref().map(|cached| IdToken::clone(&cached))
    }

    /// [`Attach::cached`], borrowed: no reference count taken.
    #[inline]
    fn cached_ref(&self) -> Option<CachedToken> {
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
            Target::Discover { auth, url } => {
                let (auth, url) = (auth.clone(), url.clone());
                Box::pin(async move {
                    let attach = auth.discover_for(&url).await?;
                    attach.fetch().await
                })
            }
            Target::Invalid(why) => {
                let why = why.clone();
                Box::pin(async move { Err(Error::config(why.to_string())) })
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
            Target::Discover { url, .. } => f
                .debug_struct("Attach")
                .field("discover_for", &&url[..url::Position::BeforePath])
                .finish(),
            Target::Invalid(why) => f.debug_struct("Attach").field("invalid", why).finish(),
        }
    }
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

    /// Decides for one request: [`Plan::Skip`] (out of scope, or `NoAuth`
    /// in `extensions`) or [`Plan::Attach`] with the audience chosen by the
    /// rules in the [module docs](self). Sync; no allocation for a
    /// configured, mapped or discovered audience, nor for a host-wildcard
    /// audience of a host seen before (exact-URL audiences are built per
    /// request).
    #[inline]
    pub fn plan(&self, uri: &Uri, extensions: &Extensions) -> Plan {
        self.plan_for(uri, extensions).into_plan()
    }

    /// [`IapAuth::plan`] for a [`url::Url`] (reqwest's), read as it is: not
    /// converted to an `http::Uri` first.
    #[inline]
    pub fn plan_url(&self, url: &Url, extensions: &Extensions) -> Plan {
        self.plan_for(url, extensions).into_plan()
    }

    /// [`IapAuth::plan`], then [`Attach::cached`], in one step: the hot path
    /// of an adapter that needs the [`Attach`] only when no token is cached
    /// (a refused token's retry can plan again). Cheaper than the two steps:
    /// a configured or mapped audience's `Attach` is not cloned.
    #[inline]
    pub fn plan_cached(&self, uri: &Uri, extensions: &Extensions) -> Planned {
        self.plan_for(uri, extensions).cached()
    }

    /// [`IapAuth::plan_cached`] for a [`url::Url`] (reqwest's).
    #[inline]
    pub fn plan_url_cached(&self, url: &Url, extensions: &Extensions) -> Planned {
        self.plan_for(url, extensions).cached()
    }

    /// The rules of [`IapAuth::plan`], once for both kinds of URL.
    fn plan_for<U: RequestUrl + ?Sized>(&self, uri: &U, extensions: &Extensions) -> Found<'_> {
        if extensions.get::<NoAuth>().is_some() {
            return Found::Skip;
        }
        let inner = &*self.inner;
        let mut mapped = None;
        if !inner.allowed.is_empty() || !inner.mapped.is_empty() {
            mapped = inner
                .mapped
                .iter()
                .find(|(origin, _)| uri.on_origin(origin))
                .map(|(_, a)| a);
            if mapped.is_none() && !inner.allowed.iter().any(|origin| uri.on_origin(origin)) {
                if uri.host().is_none() && !inner.warned_no_origin.swap(true, Ordering::Relaxed) {
                    // A tonic `Channel` adds the origin below the layer: without
                    // a word, every call would silently go out without a token.
                    tracing::warn!(
                        "a request URI without scheme and host is never in an origin scope, so it gets no IAP token; \
                         give the layer the origin (`IapLayer::new(auth).origin(\"https://host\")`, or tonic's `Client::with_origin(channel, uri)`)"
                    );
                }
                tracing::trace!(host = ?uri.host(), "origin out of scope: no IAP token");
                return Found::Skip;
            }
        }
        if let Some(audience) = extensions.get::<Audience>() {
            return Found::Made(Attach::entry(&inner.cache, inner.cache.entry(audience)));
        }
        if !inner.patterns.is_empty()
            && let Some((scheme, host, port)) = uri.parts()
            && let Some(attach) = inner.patterns.choose(scheme, host, port, uri.path())
        {
            return Found::Here(attach);
        }
        if let Some(attach) = mapped {
            return Found::Here(attach);
        }
        match &inner.default {
            DefaultAudience::Fixed(attach) => Found::Here(attach),
            DefaultAudience::Discover { resolved, .. } => {
                match resolved.find(|origin| uri.on_origin(origin)) {
                    Some(attach) => Found::Made(attach),
                    None => Found::Made(match uri.to_url() {
                        Ok(url) => Attach {
                            target: Target::Discover {
                                auth: self.clone(),
                                url: Arc::new(url),
                            },
                        },
                        Err(why) => Attach {
                            target: Target::Invalid(
                                format!("cannot discover the IAP audience of {why}").into(),
                            ),
                        },
                    }),
                }
            }
            DefaultAudience::FromUrl {
                kind: AudienceKind::HostWildcard,
                hosts,
            } => Found::Made(match hosts.find(|host| host.matches(uri)) {
                Some(attach) => attach,
                None => match HostKey::of(uri) {
                    Some(host) => hosts.get_or_insert(host, MAX_REMEMBERED_HOSTS, || {
                        self.attach_from_url(AudienceKind::HostWildcard, uri)
                    }),
                    None => self.attach_from_url(AudienceKind::HostWildcard, uri),
                },
            }),
            DefaultAudience::FromUrl { kind, .. } => Found::Made(self.attach_from_url(*kind, uri)),
            DefaultAudience::None => Found::Skip,
        }
    }

    /// The entry of the audience a URL-minting source needs for `uri`.
    fn attach_from_url<U: RequestUrl + ?Sized>(&self, kind: AudienceKind, uri: &U) -> Attach {
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

    /// Discovers `url`'s audience and records it for the origin.
    async fn discover_for(&self, url: &Url) -> Result<Attach> {
        let DefaultAudience::Discover {
            discovery,
            resolved,
        } = &self.inner.default
        else {
            return Err(Error::config("audience discovery is not configured"));
        };
        let audience = discovery.discover(url).await?;
        let origin = OriginKey::of_url(url).ok_or_else(|| {
            Error::config(format!(
                "cannot discover the IAP audience of {}: it has no http(s) origin",
                &url[..url::Position::BeforePath]
            ))
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
    port: Option<u16>,
}

impl HostKey {
    fn of<U: RequestUrl + ?Sized>(uri: &U) -> Option<HostKey> {
        let (scheme, host, port) = uri.parts()?;
        Some(HostKey {
            scheme: scheme.into(),
            host: host.into(),
            port,
        })
    }

    /// Whether `uri` has exactly these parts. No allocation.
    #[inline]
    fn matches<U: RequestUrl + ?Sized>(&self, uri: &U) -> bool {
        uri.parts().is_some_and(|(scheme, host, port)| {
            *self.scheme == *scheme && *self.host == *host && self.port == port
        })
    }
}

/// The audience a URL-minting source needs for `uri`.
fn audience_from_url<U: RequestUrl + ?Sized>(
    kind: AudienceKind,
    uri: &U,
) -> Result<Audience, String> {
    let Some((scheme, host, port)) = uri.parts() else {
        return Err(format!(
            "cannot derive a token audience from {uri:?}: it has no scheme, host and valid port"
        ));
    };
    let port = port.map(|p| format!(":{p}")).unwrap_or_default();
    Ok(Audience::from(match kind {
        AudienceKind::HostWildcard => format!("{scheme}://{host}{port}/*"),
        _ => format!("{scheme}://{host}{port}{}", uri.path()),
    }))
}

/// A request's URL as the rules read it: an [`http::Uri`] (tower, hyper)
/// or a [`url::Url`] (reqwest), through the same few accessors, each cheap
/// on its type.
trait RequestUrl: sealed::UrlParts {}

use sealed::OriginKey;

impl RequestUrl for Uri {}
impl RequestUrl for Url {}

mod sealed {
    use crate::origin::Origin;

    /// An allowed origin with what a request's URL is compared with, worked out
    /// once: a request on it then costs a comparison or two of short strings,
    /// not a parse of its authority.
    #[derive(Clone)]
    pub struct OriginKey {
        pub(super) origin: Origin,
        pub(super) scheme: Box<str>,
        /// Lower case, no trailing dot.
        pub(super) host: Box<str>,
        pub(super) port: u16,
        /// `host:port`, the authority as most requests spell it...
        pub(super) host_port: Box<str>,
        /// ... or just `host`, when `port` is the scheme's default.
        pub(super) default_port: bool,
    }

    /// What the rules read from a request's URL. No accessor allocates but
    /// `to_url`, which only audience discovery needs (once per origin).
    pub trait UrlParts: std::fmt::Debug {
        /// Scheme, host (as written; brackets kept for IPv6) and the port
        /// when one is given; `None` without a scheme or host, or with a
        /// port that is not a number.
        fn parts(&self) -> Option<(&str, &str, Option<u16>)>;
        fn host(&self) -> Option<&str>;
        fn path(&self) -> &str;
        fn on_origin(&self, origin: &OriginKey) -> bool;
        /// The URL, for audience discovery; `Err` says which URL is unfit.
        fn to_url(&self) -> Result<url::Url, String>;
    }
}

impl sealed::UrlParts for Uri {
    #[inline]
    fn parts(&self) -> Option<(&str, &str, Option<u16>)> {
        let (scheme, authority) = (self.scheme_str()?, self.authority()?);
        Some((scheme, authority.host(), authority.port_u16()))
    }

    fn host(&self) -> Option<&str> {
        Uri::host(self)
    }

    fn path(&self) -> &str {
        Uri::path(self)
    }

    #[inline]
    fn on_origin(&self, origin: &OriginKey) -> bool {
        origin.matches_uri(self)
    }

    fn to_url(&self) -> Result<Url, String> {
        Url::parse(&self.to_string()).map_err(|e| format!("{self:?}: not an absolute URL ({e})"))
    }
}

impl sealed::UrlParts for Url {
    #[inline]
    fn parts(&self) -> Option<(&str, &str, Option<u16>)> {
        Some((self.scheme(), self.host_str()?, self.port()))
    }

    fn host(&self) -> Option<&str> {
        self.host_str()
    }

    fn path(&self) -> &str {
        Url::path(self)
    }

    #[inline]
    fn on_origin(&self, origin: &OriginKey) -> bool {
        origin.matches_url(self)
    }

    fn to_url(&self) -> Result<Url, String> {
        Ok(self.clone())
    }
}

impl OriginKey {
    fn parse(s: &str) -> Result<OriginKey> {
        let origin = Origin::parse(s)?;
        Url::parse(s)
            .ok()
            .and_then(|url| OriginKey::of_url(&url))
            .filter(|key| key.origin == origin)
            .ok_or_else(|| {
                Error::config(format!(
                    "{s:?} is not an origin: write it as https://host or https://host:port"
                ))
            })
    }

    fn of_url(url: &Url) -> Option<OriginKey> {
        let origin = Origin::of_url(url)?;
        let host = url.host_str()?.trim_end_matches('.').to_ascii_lowercase();
        let port = url.port_or_known_default()?;
        Some(OriginKey {
            origin,
            scheme: url.scheme().into(),
            host_port: format!("{host}:{port}").into(),
            default_port: url.port().is_none(),
            host: host.into(),
            port,
        })
    }

    /// Whether `uri` is on this origin: its scheme, then its authority's
    /// text. Spellings that differ from the text yet name the origin (user
    /// info, a trailing dot, a zero-padded port) go the slow way.
    #[inline]
    fn matches_uri(&self, uri: &Uri) -> bool {
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(&self.scheme) {
            return false;
        }
        let text = authority.as_str();
        // Exact (lower-case) spellings first: a plain memcmp.
        if (self.default_port && text == &*self.host)
            || text == &*self.host_port
            || text.eq_ignore_ascii_case(&self.host_port)
            || (self.default_port && text.eq_ignore_ascii_case(&self.host))
        {
            return true;
        }
        let unusual =
            text.contains('@') || text.ends_with('.') || text.contains(".:") || text.contains(":0");
        unusual && self.origin.matches(uri)
    }

    /// Whether `url` is on this origin (`url` keeps its parts apart, and
    /// lower-cases scheme and host).
    #[inline]
    fn matches_url(&self, url: &Url) -> bool {
        url.scheme() == &*self.scheme
            && url.port_or_known_default() == Some(self.port)
            && url
                .host_str()
                .is_some_and(|host| host.trim_end_matches('.').eq_ignore_ascii_case(&self.host))
    }
}

impl PartialEq for OriginKey {
    fn eq(&self, other: &OriginKey) -> bool {
        self.origin == other.origin
    }
}

impl fmt::Debug for OriginKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.origin.fmt(f)
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

/// Builds an [`IapAuth`]; from [`IapAuth::builder`].
#[derive(Default)]
pub struct IapAuthBuilder {
    source: Option<Arc<dyn TokenSource>>,
    audience: Option<Audience>,
    discover: Option<AudienceDiscovery>,
    allowed: Vec<String>,
    mapped: Vec<(String, Audience)>,
    patterns: Vec<String>,
    placement: Placement,
    retry_policy: RetryPolicy,
    any_origin: bool,
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
            .field("patterns", &self.patterns)
            .field("placement", &self.placement)
            .field("retry_policy", &self.retry_policy)
            .field("any_origin", &self.any_origin)
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

    /// Sends the token to every origin the client calls. Without it, a
    /// builder given no origin ([`IapAuthBuilder::allow_origin`],
    /// [`IapAuthBuilder::origin_audience`]) fails to build: a shared client
    /// would hand a credential that opens the IAP app to any host it
    /// calls. Ignored when origins are given.
    pub fn any_origin(mut self) -> Self {
        self.any_origin = true;
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

    /// For a source of service-account JWTs (a key file's or IAM
    /// `signJwt`'s): sign for `pattern` on the requests it covers, an exact
    /// URL, `https://HOST/*` or `https://HOST/PREFIX/*` (call once per
    /// pattern; patterns of several origins mix). For each request the most
    /// specific covering pattern applies; a request no pattern covers gets
    /// the audience its URL gives (see [`AudiencePattern`]). Patterns do not
    /// widen the scope: [`allow_origin`](Self::allow_origin) still decides
    /// which origins get a token.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let emulator = iap_emulator::Emulator::start().await?;
    /// # let key_json = emulator.create_service_account("robot").await?.key_json().to_owned();
    /// use iap_token::IapAuth;
    /// use iap_token::source::self_signed::SelfSignedJwtSource;
    ///
    /// let auth = IapAuth::builder()
    ///     .source(SelfSignedJwtSource::from_json(key_json)?)
    ///     .allow_origin("https://app.example.com")
    ///     // One JWT for the API, one for everything else on the host.
    ///     .audience_pattern("https://app.example.com/api/*")
    ///     .build()?;
    /// let api = auth.token_for(&"https://app.example.com/api/v1/items".parse()?).await?.unwrap();
    /// assert_eq!(api.claims().aud.as_deref(), Some("https://app.example.com/api/*"));
    /// let home = auth.token_for(&"https://app.example.com/home".parse()?).await?.unwrap();
    /// assert_eq!(home.claims().aud.as_deref(), Some("https://app.example.com/*"));
    /// # Ok(()) }
    /// ```
    pub fn audience_pattern(mut self, pattern: impl Into<String>) -> Self {
        self.patterns.push(pattern.into());
        self
    }

    /// Which header carries the token (default `Authorization`).
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// Which answers count as a refused token (default
    /// [`RetryPolicy::IapGenerated`], whatever the placement).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry_policy = policy;
        self
    }

    /// Cache options, e.g. `TokenCacheBuilder::options().refresh_ahead(..)`.
    pub fn cache(mut self, options: TokenCacheBuilder) -> Self {
        self.cache = Some(options);
        self
    }

    /// Builds the handle. Needs no running runtime. Fails when no source is
    /// set, an origin does not parse, no origin is given without
    /// [`IapAuthBuilder::any_origin`], or no audience can be had (no
    /// audience, no discovery, no origin map, and a source minting tokens
    /// for client IDs).
    pub fn build(self) -> Result<IapAuth> {
        let config_error = |context: String| Error::config(context);
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
            .map(|o| OriginKey::parse(o))
            .collect::<Result<Vec<_>>>()?;
        let mapped = self
            .mapped
            .iter()
            .map(|(o, aud)| {
                Ok((
                    OriginKey::parse(o)?,
                    Attach::entry(&cache, cache.entry(aud)),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        if kind == AudienceKind::ClientId && !self.patterns.is_empty() {
            return Err(config_error(
                "IapAuth: .audience_pattern(..) is for sources of service-account JWTs (self-signed, signJwt); \
                 this source mints ID tokens for client IDs"
                    .into(),
            ));
        }
        let patterns = PatternTable::new(
            self.patterns
                .iter()
                .map(|p| {
                    let pattern = AudiencePattern::parse(p)?;
                    let attach = Attach::entry(&cache, cache.entry(&pattern.audience()));
                    Ok((pattern, attach))
                })
                .collect::<Result<Vec<_>>>()?,
        );
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
        if allowed.is_empty() && mapped.is_empty() && !self.any_origin {
            return Err(config_error(
                "IapAuth has no origin scope: give the app's origin with .allow_origin(\"https://app.example.com\") \
                 (or use IapAuth::for_app), or call .any_origin() to send the token to every origin"
                    .into(),
            ));
        }
        Ok(IapAuth {
            inner: Arc::new(AuthInner {
                cache,
                default,
                allowed,
                mapped,
                patterns,
                warned_no_origin: AtomicBool::new(false),
            }),
            placement: self.placement,
            retry_policy: self.retry_policy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(origin: &str, url: &str) -> (bool, Option<bool>) {
        let key = OriginKey::parse(origin).unwrap();
        let uri: Uri = url.parse().unwrap();
        let by_url = Url::parse(url).ok().map(|u| key.matches_url(&u));
        (key.matches_uri(&uri), by_url)
    }

    #[test]
    fn default_port_written_or_not_is_the_same_origin() {
        for (origin, url) in [
            ("https://app.example.com", "https://app.example.com:443/x"),
            ("https://app.example.com:443", "https://app.example.com/x"),
            ("http://app.example.com", "http://app.example.com:80/"),
            ("http://app.example.com:80/", "http://app.example.com/"),
        ] {
            assert_eq!(on(origin, url), (true, Some(true)), "{origin} {url}");
        }
    }

    #[test]
    fn hosts_and_schemes_match_in_any_case() {
        for url in [
            "https://APP.Example.COM/x",
            "HTTPS://app.example.com:443/",
            "https://App.example.com./y",
            "https://user@app.example.com/",
            "https://app.example.com:0443/",
        ] {
            assert_eq!(
                on("https://App.EXAMPLE.com", url),
                (true, Some(true)),
                "{url}"
            );
        }
    }

    #[test]
    fn other_schemes_hosts_and_ports_are_other_origins() {
        for url in [
            "http://app.example.com/",
            "https://app.example.com:8443/",
            "https://app.example.com:80/",
            "https://app.example.com.evil.com/",
            "https://evil.com/app.example.com",
            "https://app.example.com@evil.com/",
        ] {
            assert_eq!(
                on("https://app.example.com", url),
                (false, Some(false)),
                "{url}"
            );
        }
        assert_eq!(
            on("http://127.0.0.1:8080", "http://127.0.0.1:8080/a"),
            (true, Some(true))
        );
        assert_eq!(
            on("http://127.0.0.1:8080", "http://127.0.0.1/a"),
            (false, Some(false))
        );
        assert_eq!(
            on("http://[::1]:8080", "http://[::1]:8080/"),
            (true, Some(true))
        );
        assert_eq!(on("https://app.example.com", "/relative"), (false, None));
    }

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
