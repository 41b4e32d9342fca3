//! The per-request decision: [`IapAuth::plan`] and its hot-path variants,
//! [`Plan`], [`Attach`] (the token a request needs) and the tables of
//! pre-resolved audiences.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use http::{Extensions, HeaderMap, Uri};
use url::Url;

use super::scope::{HostKey, OriginMatcher, RequestUrl};
use super::{DefaultAudience, IapAuth};
use crate::cache::Entry;
use crate::policy::NoAuth;
use crate::source::{AudienceKind, BoxFuture};
use crate::{Audience, Error, IdToken, Result, TokenCache};

/// What to do for one request; from [`IapAuth::plan`].
#[derive(Clone, Debug)]
pub enum Plan {
    /// Send the request as is: out of scope, or `NoAuth` asked for.
    Skip,
    /// Attach a token for this audience.
    Attach(Attach),
}

/// What [`IapAuth::plan_cached`] (or [`Lookup::attach_header`]) found for
/// one request. Adapter plumbing (hidden from the docs; not part of the
/// stable surface).
#[doc(hidden)]
#[derive(Debug)]
pub enum Planned<T = IdToken> {
    /// Send the request as is: out of scope, or `NoAuth` asked for.
    Skip,
    /// Attach this: taken from this thread's copy of the cached token (the
    /// token itself, or only its header value).
    Cached(T),
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

    #[inline(always)]
    fn cached_with<T>(self, take: impl FnOnce(&IdToken) -> T) -> Planned<T> {
        match self {
            Found::Skip => Planned::Skip,
            Found::Here(attach) => match attach.cached_with(take) {
                Some(value) => Planned::Cached(value),
                None => Planned::Fetch(attach.clone()),
            },
            Found::Made(attach) => match attach.cached_with(take) {
                Some(value) => Planned::Cached(value),
                None => Planned::Fetch(attach),
            },
        }
    }
}

/// What [`IapAuth::lookup`] found for one request. Adapter plumbing
/// (hidden from the docs; not part of the stable surface).
#[doc(hidden)]
pub struct Lookup<'a> {
    auth: &'a IapAuth,
    found: Found<'a>,
}

impl Lookup<'_> {
    /// Puts the cached token in `headers` as the handle places it
    /// ([`IapAuth::apply`]), copying only its header value, and answers
    /// `Planned::Cached(())`; or says that the request gets no token, or
    /// that one must be fetched first.
    #[inline(always)]
    pub fn attach_header(self, headers: &mut HeaderMap) -> Planned<()> {
        let auth = self.auth;
        self.found.cached_with(|token| auth.apply(headers, token))
    }
}

impl fmt::Debug for Lookup<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let found = match self.found {
            Found::Skip => "skip",
            Found::Here(_) | Found::Made(_) => "attach",
        };
        f.debug_tuple("Lookup").field(&found).finish()
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
    pub(super) fn entry(cache: &TokenCache, entry: Arc<Entry>) -> Attach {
        Attach {
            target: Target::Entry {
                cache: cache.clone(),
                entry,
            },
        }
    }

    /// The hot path: the cached token, if usable. Lock-free, no allocation.
    /// `None` means: call [`Attach::fetch`].
    #[inline(always)]
    pub fn cached(&self) -> Option<IdToken> {
        self.cached_with(IdToken::clone)
    }

    /// `take` applied to the cached token, if usable, in place: what `take`
    /// copies is all the read costs.
    #[inline(always)]
    pub(crate) fn cached_with<T>(&self, take: impl FnOnce(&IdToken) -> T) -> Option<T> {
        match &self.target {
            Target::Entry { cache, entry } => cache.cached_entry_with(entry, take),
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
    /// Decides for one request: [`Plan::Skip`] (out of scope, or `NoAuth`
    /// in `extensions`) or [`Plan::Attach`] with the audience chosen by the
    /// rules in the [module docs](crate::auth). Sync; no allocation for a
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
    #[doc(hidden)]
    #[inline]
    pub fn plan_cached(&self, uri: &Uri, extensions: &Extensions) -> Planned {
        self.plan_for(uri, extensions).cached_with(IdToken::clone)
    }

    /// [`IapAuth::plan_cached`] for a [`url::Url`] (reqwest's).
    #[doc(hidden)]
    #[inline]
    pub fn plan_url_cached(&self, url: &Url, extensions: &Extensions) -> Planned {
        self.plan_for(url, extensions).cached_with(IdToken::clone)
    }

    /// The first half of [`IapAuth::plan_cached`], for a request that will
    /// not be sent again
    /// ([`RetryPolicy::Never`](crate::policy::RetryPolicy::Never)): the
    /// [`Lookup`] borrows the handle, not the request, so that its
    /// [`Lookup::attach_header`] can write to the request's headers.
    #[doc(hidden)]
    #[inline]
    pub fn lookup(&self, uri: &Uri, extensions: &Extensions) -> Lookup<'_> {
        Lookup {
            auth: self,
            found: self.plan_for(uri, extensions),
        }
    }

    /// [`IapAuth::lookup`] for a [`url::Url`] (reqwest's).
    #[doc(hidden)]
    #[inline]
    pub fn lookup_url(&self, url: &Url, extensions: &Extensions) -> Lookup<'_> {
        Lookup {
            auth: self,
            found: self.plan_for(url, extensions),
        }
    }

    /// The rules of [`IapAuth::plan`], once for both kinds of URL: the
    /// common configuration's request in a few steps, inline; anything
    /// else by the general rules.
    #[inline(always)]
    fn plan_for<U: RequestUrl + ?Sized>(&self, uri: &U, extensions: &Extensions) -> Found<'_> {
        if let Some(common) = &self.inner.common
            && common
                .origin
                .as_ref()
                .is_none_or(|origin| uri.on_origin(origin))
            && extensions.get::<NoAuth>().is_none()
            && extensions.get::<Audience>().is_none()
        {
            return Found::Here(&common.attach);
        }
        self.plan_by_rules(uri, extensions)
    }

    /// [`IapAuth::plan_for`] by the general rules (see the
    /// [module docs](crate::auth)).
    #[inline(never)]
    fn plan_by_rules<U: RequestUrl + ?Sized>(&self, uri: &U, extensions: &Extensions) -> Found<'_> {
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
        let origin = OriginMatcher::of_url(url).ok_or_else(|| {
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
pub(super) struct AttachTable<K> {
    list: ArcSwap<Vec<(K, Attach)>>,
    writer: Mutex<()>,
}

impl<K: Clone + PartialEq> AttachTable<K> {
    pub(super) fn new() -> Self {
        AttachTable {
            list: ArcSwap::from_pointee(Vec::new()),
            writer: Mutex::new(()),
        }
    }

    /// The entry of the first key that `hit` accepts.
    #[inline]
    pub(super) fn find(&self, hit: impl Fn(&K) -> bool) -> Option<Attach> {
        self.list
            .load()
            .iter()
            .find(|(key, _)| hit(key))
            .map(|(_, attach)| attach.clone())
    }

    /// The entry of `key`, else a new one from `make`, recorded while the
    /// table holds fewer than `limit` entries.
    pub(super) fn get_or_insert(
        &self,
        key: K,
        limit: usize,
        make: impl FnOnce() -> Attach,
    ) -> Attach {
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
