//! Audience discovery: find an app's IAP OAuth client ID from its URL.
//!
//! IAP answers a browser-like request that carries no credentials (a `GET`
//! with `Accept: text/html`) with a 302 to Google's sign-in page, marked
//! `X-Goog-IAP-Generated-Response: true`; the `client_id` query parameter
//! of that redirect is the audience a client needs. Redirects are never
//! followed and no credential is sent.
//!
//! ```no_run
//! # async fn run() -> iap_token::Result<()> {
//! let audience = iap_token::discovery::discover_audience("https://app.example.com/").await?;
//! println!("IAP client ID: {audience}");
//! # Ok(()) }
//! ```
//!
//! Results are cached per origin (scheme, host, port) for the life of the
//! [`AudienceDiscovery`] (for [`discover_audience`], of the process), and
//! concurrent discoveries of one origin share one request.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use arc_swap::ArcSwap;
use futures_util::FutureExt as _;
use futures_util::future::Shared;
use http::{StatusCode, Uri, header};
use url::Url;

use crate::cache::share_error;
use crate::policy::IAP_GENERATED_HEADER;
use crate::source::BoxFuture;
use crate::transport::{Transport, endpoint_name};
use crate::{Audience, Error, Result};

/// Discovers the IAP audience of `url` (see the [module docs](self)), with a
/// process-wide cache per origin.
///
/// Fails with a message saying why when the URL does not look like an app
/// behind IAP (it answers 200, redirects elsewhere, or IAP answers without a
/// sign-in redirect).
pub async fn discover_audience(url: &str) -> Result<Audience> {
    static GLOBAL: OnceLock<AudienceDiscovery> = OnceLock::new();
    let url = Url::parse(url).map_err(|e| {
        Error::config(format!(
            "cannot discover the IAP audience of {url:?}: not a URL ({e})"
        ))
    })?;
    GLOBAL
        .get_or_init(AudienceDiscovery::new)
        .discover(&url)
        .await
}

/// Audience discovery with its own cache per origin. Cheap to clone; clones
/// share the cache.
#[derive(Clone, Default)]
pub struct AudienceDiscovery {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    transport: Transport,
    /// Discovered audiences, read without locks (few origins: a scan).
    known: ArcSwap<Vec<(Origin, Audience)>>,
    /// One discovery per origin at a time.
    flights: Mutex<HashMap<Origin, DiscoveryFlight>>,
}

type DiscoveryFlight = Shared<BoxFuture<'static, Result<Audience, Arc<Error>>>>;

impl fmt::Debug for AudienceDiscovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AudienceDiscovery")
            .field("known", &**self.inner.known.load())
            .finish_non_exhaustive()
    }
}

impl AudienceDiscovery {
    /// Discovery through the shared HTTP client (redirects never followed).
    pub fn new() -> Self {
        Self::default()
    }

    /// Discovery through `client` instead of the shared one. It must not
    /// follow redirects (discovery reads IAP's redirect itself).
    pub fn with_http_client(client: reqwest::Client) -> Self {
        Self::with_transport(Transport::new(client))
    }

    /// Discovery through `transport`.
    pub(crate) fn with_transport(transport: Transport) -> Self {
        AudienceDiscovery {
            inner: Arc::new(Inner {
                transport,
                ..Inner::default()
            }),
        }
    }

    /// The audience already discovered for `uri`'s origin. No allocation.
    pub fn cached(&self, uri: &Uri) -> Option<Audience> {
        self.inner
            .known
            .load()
            .iter()
            .find(|(origin, _)| origin.matches(uri))
            .map(|(_, aud)| aud.clone())
    }

    /// The audience of `url`'s origin: cached, or discovered by one request
    /// shared by concurrent callers.
    pub async fn discover(&self, url: &Url) -> Result<Audience> {
        let origin = Origin::of_url(url).ok_or_else(|| Error::config(format!(
                "cannot discover the IAP audience of {}: only http and https URLs with a host have one",
                endpoint_name(url)
            )))?;
        if let Some((_, aud)) = self.inner.known.load().iter().find(|(o, _)| *o == origin) {
            return Ok(aud.clone());
        }
        let flight = {
            let mut flights = self
                .inner
                .flights
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // Re-check under the lock: a flight that just ended recorded its result first.
            if let Some((_, aud)) = self.inner.known.load().iter().find(|(o, _)| *o == origin) {
                return Ok(aud.clone());
            }
            flights
                .entry(origin.clone())
                .or_insert_with(|| {
                    let inner = self.inner.clone();
                    let (url, origin) = (url.clone(), origin.clone());
                    async move {
                        let result = probe(&inner.transport, &url).await;
                        let mut flights = inner.flights.lock().unwrap_or_else(PoisonError::into_inner);
                        if let Ok(aud) = &result {
                            tracing::debug!(%origin, audience = %aud, "discovered the IAP audience");
                            inner.known.rcu(|known| {
                                let mut known = Vec::clone(known);
                                known.push((origin.clone(), aud.clone()));
                                known
                            });
                        }
                        flights.remove(&origin);
                        result.map_err(Arc::new)
                    }
                    .boxed()
                    .shared()
                })
                .clone()
        };
        flight.await.map_err(|e| share_error(&e))
    }
}

/// One browser-like unauthenticated GET, and what its answer says.
async fn probe(transport: &Transport, url: &Url) -> Result<Audience> {
    let not_iap = |why: String| {
        Error::config(format!(
            "cannot discover the IAP audience of {}: {why}; if the app is behind IAP, pass its audience \
             (the IAP OAuth client ID) explicitly",
            endpoint_name(url)
        ))
    };
    let request = transport
        .client_for(url)?
        .get(url.clone())
        .header(
            header::ACCEPT,
            "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8",
        )
        .header(
            header::USER_AGENT,
            "Mozilla/5.0 (compatible; iap-rs audience discovery)",
        );
    let answer = transport.send_raw(url, request).await?;
    let status = answer.status();
    let iap_generated = answer
        .headers()
        .get(IAP_GENERATED_HEADER)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    if status.is_redirection() {
        let location = answer
            .headers()
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .unwrap_or("");
        if !iap_generated {
            let target = Url::parse(location)
                .map(|l| endpoint_name(&l))
                .unwrap_or_else(|_| location.to_owned());
            return Err(not_iap(format!(
                "it answered {status} to {target} without the {IAP_GENERATED_HEADER} header, so the redirect is not IAP's"
            )));
        }
        let client_id = Url::parse(location)
            .ok()
            .and_then(|l| {
                l.query_pairs()
                    .find(|(k, _)| k == "client_id")
                    .map(|(_, v)| v.into_owned())
            })
            .filter(|id| !id.is_empty());
        return client_id
            .map(Audience::from)
            .ok_or_else(|| Error::Protocol {
                endpoint: endpoint_name(url),
                problem: format!(
                    "IAP answered {status} but its Location has no `client_id` parameter"
                ),
            });
    }
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        return Err(Error::Endpoint {
            endpoint: endpoint_name(url),
            status: status.as_u16(),
            error: status.canonical_reason().unwrap_or("error").to_owned(),
            description: Some("while discovering the IAP audience".into()),
            transient: true,
            hint: None,
        });
    }
    Err(not_iap(match (status, iap_generated) {
        (s, _) if s.is_success() => {
            format!("it answered {s} to a request without credentials, so it is not behind IAP")
        }
        (s, true) => format!("IAP answered {s} instead of redirecting a browser to sign in"),
        (s, false) => format!("it answered {s}, not IAP's redirect to sign in"),
    }))
}

/// An origin: scheme, host and port (the default port filled in).
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Origin {
    scheme: Box<str>,
    host: Box<str>,
    port: u16,
}

impl Origin {
    /// Parses `https://host[:port]` (a trailing `/` is allowed; nothing else).
    pub(crate) fn parse(s: &str) -> Result<Origin> {
        let bad = |why: &str| {
            Error::config(format!(
                "{s:?} is not an origin ({why}): write it as https://host or https://host:port"
            ))
        };
        let url = Url::parse(s).map_err(|e| bad(&e.to_string()))?;
        if url.path() != "/"
            || url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
        {
            return Err(bad("it has a path, query, fragment or user"));
        }
        Origin::of_url(&url)
            .ok_or_else(|| bad("only http and https origins with a host are supported"))
    }

    pub(crate) fn of_url(url: &Url) -> Option<Origin> {
        let scheme = url.scheme();
        if scheme != "http" && scheme != "https" {
            return None;
        }
        Some(Origin {
            scheme: scheme.into(),
            host: url.host_str()?.to_ascii_lowercase().into(),
            port: url.port_or_known_default()?,
        })
    }

    /// Whether `uri` is on this origin. No allocation.
    #[inline]
    pub(crate) fn matches(&self, uri: &Uri) -> bool {
        let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
            return false;
        };
        let port = uri.port_u16().or(match scheme.len() {
            4 if scheme.eq_ignore_ascii_case("http") => Some(80),
            5 if scheme.eq_ignore_ascii_case("https") => Some(443),
            _ => None,
        });
        port == Some(self.port)
            && scheme.eq_ignore_ascii_case(&self.scheme)
            && host.trim_end_matches('.').eq_ignore_ascii_case(&self.host)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let default = matches!((&*self.scheme, self.port), ("http", 80) | ("https", 443));
        if default {
            write!(f, "{}://{}", self.scheme, self.host)
        } else {
            write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
        }
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_uris_with_default_ports_and_any_case() {
        let o = Origin::parse("https://App.Example.com").unwrap();
        assert_eq!(o.to_string(), "https://app.example.com");
        for yes in [
            "https://app.example.com/x?y",
            "HTTPS://APP.example.com:443/",
            "https://app.example.com./",
        ] {
            assert!(o.matches(&yes.parse().unwrap()), "{yes}");
        }
        for no in [
            "http://app.example.com/",
            "https://app.example.com:8443/",
            "https://evil.com/",
            "/relative",
        ] {
            assert!(!o.matches(&no.parse().unwrap()), "{no}");
        }
        let local = Origin::parse("http://127.0.0.1:8080/").unwrap();
        assert!(local.matches(&"http://127.0.0.1:8080/a".parse().unwrap()));
        assert!(Origin::parse("https://a.example.com/path").is_err());
        assert!(Origin::parse("not a url").is_err());
    }
}
