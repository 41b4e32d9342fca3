//! Audience discovery: find an app's IAP OAuth client ID from its URL.
//!
//! IAP answers a browser-like request that carries no credentials (a `GET`
//! with `Accept: text/html`) with a 302 to Google's sign-in page, marked
//! `X-Goog-IAP-Generated-Response: true`; the `client_id` query parameter
//! of that redirect is the audience a client needs. Redirects are never
//! followed and no credential is sent.
//!
//! ```
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let emu = iap_emulator::Emulator::start().await?;
//! # let app = emu.app();
//! # let app_url = app.url().as_str();
//! // app_url: e.g. "https://app.example.com/"
//! let audience = iap_token::discovery::discover_audience(app_url).await?;
//! println!("IAP client ID: {audience}");
//! # assert_eq!(audience.as_str(), app.client_id());
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
use crate::origin::Origin;
use crate::policy::IAP_GENERATED_HEADER;
use crate::source::BoxFuture;
use crate::transport::{Transport, endpoint_name, scrub};
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
        let Some(location) = answer
            .headers()
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
        else {
            return Err(not_iap(format!(
                "it answered {status} with no `Location` header, so there is no sign-in redirect to read"
            )));
        };
        if !iap_generated {
            let target = Url::parse(location)
                .map(|l| endpoint_name(&l))
                .unwrap_or_else(|_| location.to_owned());
            return Err(not_iap(format!(
                "it answered {status} to {target} without the {IAP_GENERATED_HEADER} header, so the redirect is not IAP's"
            )));
        }
        // Only Google's sign-in names an audience: an origin that redirects
        // elsewhere would choose which token we mint (and then receive it).
        let sign_in = Url::parse(location).ok().filter(|l| {
            l.scheme() == "https" && l.host_str() == Some(crate::endpoints::GOOGLE_SIGN_IN_HOST)
        });
        let Some(sign_in) = sign_in else {
            let target = Url::parse(location)
                .map(|l| endpoint_name(&l))
                .unwrap_or_else(|_| scrub(location));
            return Err(not_iap(format!(
                "its {status} redirects to {target}, not to Google's sign-in (https://{}/)",
                crate::endpoints::GOOGLE_SIGN_IN_HOST
            )));
        };
        let client_id = Some(sign_in)
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
