//! [`IapAuthBuilder`]: an [`IapAuth`] from a source, audiences, a scope
//! and options.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::plan::{Attach, AttachTable};
use super::scope::OriginMatcher;
use super::{AuthInner, Common, DefaultAudience, Handle, IapAuth};
use crate::audience_pattern::{AudiencePattern, PatternTable};
use crate::cache::TokenCacheBuilder;
use crate::discovery::AudienceDiscovery;
use crate::policy::{Placement, RetryPolicy};
use crate::source::AudienceKind;
use crate::{Audience, Error, Result, TokenSource};

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
            .map(|o| OriginMatcher::parse(o))
            .collect::<Result<Vec<_>>>()?;
        let mapped = self
            .mapped
            .iter()
            .map(|(o, aud)| {
                Ok((
                    OriginMatcher::parse(o)?,
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
        let common = match &default {
            DefaultAudience::Fixed(attach)
                if mapped.is_empty() && patterns.is_empty() && allowed.len() <= 1 =>
            {
                Some(Common {
                    origin: allowed.first().cloned(),
                    attach: attach.clone(),
                })
            }
            _ => None,
        };
        Ok(IapAuth {
            inner: Handle::new(AuthInner {
                cache,
                common,
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
