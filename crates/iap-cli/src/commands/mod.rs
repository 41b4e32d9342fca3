//! One module per command.

pub mod curl;
pub mod demo;
pub mod doctor;
pub mod emulator;
pub mod login;
pub mod proxy;
pub mod token;
pub mod verify;

use iap_token::policy::Placement;
use iap_token::source::AudienceKind;
use iap_token::{Audience, IapAuth};
use url::Url;

use crate::cli::AppAuthArgs;
use crate::credentials::Resolved;
use crate::failure::{CliResult, Failure};

/// The audience given, or the one IAP's sign-in redirect for `url` names.
pub async fn audience_for(given: Option<&str>, url: &str) -> CliResult<Audience> {
    match given {
        Some(aud) => Ok(Audience::new(aud)),
        None => {
            let aud = discover(url).await.map_err(|e| {
                Failure::from(e).context("cannot find the audience (pass --audience AUD)")
            })?;
            tracing::info!(audience = %aud, "discovered the IAP audience");
            Ok(aud)
        }
    }
}

/// IAP's audience for `url`, over a client trusting `--cacert` when given.
async fn discover(url: &str) -> iap_token::Result<Audience> {
    let Some(roots) = crate::tls::roots() else {
        return iap_token::discovery::discover_audience(url).await;
    };
    let parsed = Url::parse(url).map_err(|e| {
        iap_token::Error::Config(format!(
            "cannot discover the IAP audience of {url:?}: not a URL ({e})"
        ))
    })?;
    iap_token::discovery::AudienceDiscovery::with_http_client(roots.http_client()?)
        .discover(&parsed)
        .await
}

/// The [`IapAuth`] `iap curl` / `iap proxy` put on requests to `url`'s
/// origin: credentials, audience and placement from the flags (see
/// [`auth_for`]).
pub async fn app_auth(args: &AppAuthArgs, url: &Url) -> CliResult<(IapAuth, Option<Audience>)> {
    let creds = crate::credentials::resolve(&args.creds).await?;
    let placement = if args.proxy_authorization {
        Placement::ProxyAuthorization
    } else {
        Placement::Authorization
    };
    auth_for(&creds, args.audience.as_deref(), url, placement).await
}

/// An [`IapAuth`] for requests to `url`'s origin (and no other), with the
/// token in `placement`. The audience is the one given, else the one the
/// credential implies (a static token's, a desktop client's), else
/// discovered; for a service-account JWT (whose audience is a URL pattern)
/// it is `https://HOST/*` of each request's URL unless given. Also returns
/// the fixed audience, if any.
pub async fn auth_for(
    creds: &Resolved,
    given: Option<&str>,
    url: &Url,
    placement: Placement,
) -> CliResult<(IapAuth, Option<Audience>)> {
    let mut builder = IapAuth::builder()
        .source_arc(creds.source.clone())
        .cache(iap_token::cache::TokenCacheBuilder::options().fetch_deadline(creds.deadline))
        .allow_origin(url.origin().ascii_serialization())
        .placement(placement);
    if let Some(pattern) = given
        && creds.source.audience_kind() != AudienceKind::ClientId
    {
        // A service-account JWT: the pattern is checked here, not by IAP.
        iap_token::AudiencePattern::parse(pattern)
            .map_err(|e| Failure::from(e).context("--audience").with_code(2))?;
    }
    let implied = given
        .is_none()
        .then(|| creds.implied_audience.clone())
        .flatten();
    let audience = if let Some(audience) = implied {
        builder = builder.audience(audience.clone());
        Some(audience)
    } else if creds.source.audience_kind() == AudienceKind::ClientId || given.is_some() {
        let audience = audience_for(given, url.as_str()).await?;
        builder = builder.audience(audience.clone());
        Some(audience)
    } else {
        None
    };
    Ok((builder.build()?, audience))
}
