//! The metadata server of Google Cloud (Compute Engine, GKE, Cloud Run, App
//! Engine, Cloud Functions): ID tokens for the service account the workload
//! runs as, with no key at all.
//!
//! Requests go to `http://$GCE_METADATA_HOST/computeMetadata/v1/...` (older
//! name `GCE_METADATA_ROOT`), else to `169.254.169.254` (the address Go's
//! client uses: no DNS needed), with `Metadata-Flavor: Google`. Identity
//! tokens are asked for with `format=full` by default: IAP rejects tokens
//! without an `email` claim, which `format=standard` omits.
//!
//! ```
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let emu = iap_emulator::Emulator::start().await?;
//! use iap_token::{Audience, TokenSource, source::metadata::MetadataSource};
//!
//! // On Google Cloud, `MetadataSource::new()?` finds the server; here it is
//! // the emulator's (what `GCE_METADATA_HOST` would name).
//! let source = MetadataSource::with_host(&emu.metadata_host())?;
//! let token = source.id_token(&Audience::new("123-abc.apps.googleusercontent.com")).await?;
//! println!("token for {:?}", token.claims().email);
//! # assert!(token.claims().email.is_some());
//! # Ok(()) }
//! ```

use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use url::Url;

use crate::access_token::{AccessToken, AccessTokenAnswer, AccessTokenSource};
use crate::environment::Environment;
use crate::source::{BoxFuture, TokenSource};
use crate::transport::Transport;
use crate::{Audience, Error, IdToken, Result};

use crate::endpoints::DEFAULT_METADATA_HOST;
/// Env var naming the metadata server (`host` or `host:port`).
pub(crate) const GCE_METADATA_HOST: &str = "GCE_METADATA_HOST";
/// Older name of [`GCE_METADATA_HOST`], honoured when that one is unset.
pub(crate) const GCE_METADATA_ROOT: &str = "GCE_METADATA_ROOT";
/// Env var naming the address that detection pings.
pub(crate) const GCE_METADATA_IP: &str = "GCE_METADATA_IP";
/// How long detection waits for the metadata server by default.
pub(crate) const DETECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long detection waits when the machine says it is a Google VM.
const DETECT_TIMEOUT_ON_GOOGLE_HARDWARE: Duration = Duration::from_secs(3);

const FLAVOR: &str = "metadata-flavor";

/// Which claims the metadata server puts in identity tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IdentityFormat {
    /// `format=full`: adds `email`, `email_verified` and the
    /// `google.compute_engine` claims. What IAP needs.
    #[default]
    Full,
    /// `format=standard`: no `email`; IAP rejects such tokens.
    Standard,
}

/// ID tokens (and access tokens) from the metadata server. See the
/// [module docs](self).
#[derive(Clone, Debug)]
pub struct MetadataSource {
    /// `http://HOST/computeMetadata/v1/instance/service-accounts/default/`
    account: Url,
    format: IdentityFormat,
    licenses: bool,
    transport: Transport,
}

impl MetadataSource {
    /// The metadata server named by the process environment
    /// (`GCE_METADATA_HOST`, `GCE_METADATA_ROOT`), else `169.254.169.254`.
    /// Fails only when the variable holds something that is not a host.
    pub fn new() -> Result<Self> {
        Self::from_env(&Environment::process())
    }

    /// Like [`MetadataSource::new`], reading variables from `env`.
    pub fn from_env(env: &Environment) -> Result<Self> {
        match configured_host(env) {
            Some((name, host)) => Self::at(&host).map_err(|_| Error::EnvVar {
                name: name.into(),
                problem: format!(
                    "holds `{host}`, which is not a host or host:port of a metadata server"
                ),
            }),
            None => Self::with_host(DEFAULT_METADATA_HOST),
        }
    }

    /// The metadata server at `host` (`host` or `host:port`, e.g. an
    /// emulator's `127.0.0.1:8080`). Requests to it are plain http: that
    /// host is trusted as the metadata server.
    pub fn with_host(host: &str) -> Result<Self> {
        Self::at(host).map_err(|_| {
            Error::config(format!(
                "`{host}` is not a host or host:port of a metadata server"
            ))
        })
    }

    fn at(host: &str) -> std::result::Result<Self, ()> {
        let root = root_url(host)?;
        let account = root
            .join("computeMetadata/v1/instance/service-accounts/default/")
            .map_err(|_| ())?;
        Ok(MetadataSource {
            account,
            format: IdentityFormat::Full,
            licenses: false,
            transport: Transport::direct(),
        })
    }

    /// Chooses the identity token format (default [`IdentityFormat::Full`]).
    pub fn with_format(mut self, format: IdentityFormat) -> Self {
        self.format = format;
        self
    }

    /// Asks for license codes in identity tokens (`licenses=TRUE`; only with
    /// [`IdentityFormat::Full`]).
    pub fn with_licenses(mut self, licenses: bool) -> Self {
        self.licenses = licenses;
        self
    }

    /// Sends requests through `client` instead of the shared one without proxies (extra
    /// root certificates, a fixed proxy). Configure it not to follow
    /// redirects: token endpoints never redirect, and a redirect must not
    /// carry credentials elsewhere.
    pub fn with_http_client(mut self, client: reqwest::Client) -> Self {
        self.transport = Transport::new(client);
        self
    }

    /// The base URL of the default service account's endpoints.
    pub fn account_url(&self) -> &Url {
        &self.account
    }

    /// Fetches an ID token for `audience` from `.../identity`.
    pub async fn fetch_id_token(&self, audience: &Audience) -> Result<IdToken> {
        let mut url = self.endpoint("identity")?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("audience", audience.as_str());
            q.append_pair(
                "format",
                match self.format {
                    IdentityFormat::Full => "full",
                    IdentityFormat::Standard => "standard",
                },
            );
            if self.licenses {
                q.append_pair("licenses", "TRUE");
            }
        }
        let answer = self
            .get(&url)
            .await
            .map_err(|e| explain(e, Some(audience)))?;
        IdToken::parse(answer.text(&url)?)
    }

    /// Fetches an access token for `scopes` from `.../token` (the source
    /// credential of impersonation). No scopes: the instance's own scopes.
    pub async fn fetch_access_token(&self, scopes: &[&str]) -> Result<AccessToken> {
        let mut url = self.endpoint("token")?;
        if !scopes.is_empty() {
            url.query_pairs_mut()
                .append_pair("scopes", &scopes.join(","));
        }
        let answer = self.get(&url).await.map_err(|e| explain(e, None))?;
        answer.json::<AccessTokenAnswer>(&url)?.into_token()
    }

    /// The email of the instance's service account (`.../email`): who the
    /// metadata server's tokens speak for, e.g. the account a
    /// [`SignJwtSource`](crate::source::sign_jwt::SignJwtSource) signs as.
    pub async fn service_account_email(&self) -> Result<String> {
        let url = self.endpoint("email")?;
        let answer = self.get(&url).await.map_err(|e| explain(e, None))?;
        let email = answer.text(&url)?.trim();
        if email.contains('@') {
            Ok(email.to_string())
        } else {
            Err(Error::Protocol {
                endpoint: crate::transport::endpoint_name(&url),
                problem: "the answer is not a service-account email".into(),
            })
        }
    }

    fn endpoint(&self, name: &str) -> Result<Url> {
        self.account.join(name).map_err(|e| {
            Error::config(format!(
                "cannot build the metadata URL for `{name}` from {}: {e}: check GCE_METADATA_HOST",
                self.account
            ))
        })
    }

    async fn get(&self, url: &Url) -> Result<crate::transport::Answer> {
        let req = self
            .transport
            .client_for(url)?
            .get(url.clone())
            .headers(flavor_header());
        self.transport.send(url, req).await
    }

    /// Whether a metadata server answers, per the process environment. See
    /// [`MetadataSource::detect`].
    pub async fn is_available() -> bool {
        Self::detect(&Environment::process(), None).await
    }

    /// Whether a metadata server answers: a `GET /` with
    /// `Metadata-Flavor: Google` whose answer carries that header.
    ///
    /// With `GCE_METADATA_HOST` (or `GCE_METADATA_ROOT`) set, one probe of
    /// that host; otherwise one probe of `$GCE_METADATA_IP` (default
    /// `169.254.169.254`). `timeout` defaults to 1 s (3 s when
    /// Linux's DMI data says the machine is a Google VM). Never errors: any
    /// failure means "no".
    pub async fn detect(env: &Environment, timeout: Option<Duration>) -> bool {
        let host = match configured_host(env) {
            Some((_, host)) => host,
            None => env
                .var(GCE_METADATA_IP)
                .unwrap_or_else(|| DEFAULT_METADATA_HOST.into()),
        };
        let Ok(root) = root_url(&host) else {
            tracing::debug!(%host, "metadata host is not a host; assuming no metadata server");
            return false;
        };
        let timeout = timeout.unwrap_or_else(|| {
            if on_google_hardware() {
                DETECT_TIMEOUT_ON_GOOGLE_HARDWARE
            } else {
                DETECT_TIMEOUT
            }
        });
        let Ok(client) = Transport::direct().client().cloned() else {
            return false;
        };
        let probe = client
            .get(root.clone())
            .headers(flavor_header())
            .timeout(timeout)
            .send();
        let found = match tokio::time::timeout(timeout, probe).await {
            Ok(Ok(resp)) => {
                resp.status().is_success()
                    && resp
                        .headers()
                        .get(FLAVOR)
                        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"Google"))
            }
            _ => false,
        };
        tracing::debug!(endpoint = %root, found, "metadata server detection");
        found
    }
}

impl TokenSource for MetadataSource {
    fn endpoint(&self) -> Option<String> {
        self.endpoint("identity")
            .ok()
            .map(|url| crate::transport::endpoint_name(&url))
    }

    fn id_token<'a>(&'a self, audience: &'a Audience) -> BoxFuture<'a, Result<IdToken>> {
        Box::pin(self.fetch_id_token(audience))
    }
}

impl AccessTokenSource for MetadataSource {
    fn access_token<'a>(&'a self, scopes: &'a [&'a str]) -> BoxFuture<'a, Result<AccessToken>> {
        Box::pin(self.fetch_access_token(scopes))
    }
}

fn flavor_header() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(FLAVOR, HeaderValue::from_static("Google"));
    h
}

/// `GCE_METADATA_HOST`, else `GCE_METADATA_ROOT`, with the variable's name.
fn configured_host(env: &Environment) -> Option<(&'static str, String)> {
    [GCE_METADATA_HOST, GCE_METADATA_ROOT]
        .into_iter()
        .find_map(|name| env.var(name).map(|v| (name, v)))
}

/// `http://HOST/` from `host`, `host:port`, or (leniently) `http://host/...`.
fn root_url(host: &str) -> std::result::Result<Url, ()> {
    let host = host.trim();
    let host = host.strip_prefix("http://").unwrap_or(host);
    let host = host.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(());
    }
    let url = Url::parse(&format!("http://{host}/")).map_err(|_| ())?;
    if url.host().is_none() || url.path() != "/" || !url.username().is_empty() {
        return Err(());
    }
    Ok(url)
}

/// Linux's hint that this is a Google VM (a positive hint only).
fn on_google_hardware() -> bool {
    std::fs::read_to_string("/sys/class/dmi/id/product_name")
        .is_ok_and(|p| p.trim_start().starts_with("Google"))
}

/// Adds what the metadata server's documented errors mean.
fn explain(err: Error, audience: Option<&Audience>) -> Error {
    let status = match &err {
        Error::Endpoint { status, .. } => *status,
        _ => return err,
    };
    err.with_endpoint_hint(|_, _| match status {
        404 => Some(
            "no service account is attached to this workload: attach one, or use another credential \
             (GOOGLE_APPLICATION_CREDENTIALS or `iap login`)"
                .into(),
        ),
        400 => audience.map(|aud| {
            if aud.as_str().is_empty() {
                "the audience is empty: pass the IAP OAuth client ID".into()
            } else {
                format!("the metadata server refused the audience `{aud}`")
            }
        }),
        403 => Some(
            "the request was refused: the metadata server needs `Metadata-Flavor: Google`; \
             check that GCE_METADATA_HOST names a metadata server and that this workload may use its service account"
                .into(),
        ),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_parsed_leniently_but_not_blindly() {
        assert_eq!(
            root_url("127.0.0.1:8080").unwrap().as_str(),
            "http://127.0.0.1:8080/"
        );
        assert_eq!(
            root_url("metadata.google.internal").unwrap().as_str(),
            "http://metadata.google.internal/"
        );
        assert_eq!(
            root_url("http://[::1]:9/computeMetadata/v1")
                .unwrap()
                .as_str(),
            "http://[::1]:9/"
        );
        for bad in ["", "a b", "user@host", ":80"] {
            assert!(root_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_picks_host_then_root_then_default() {
        let env = Environment::from_vars([("GCE_METADATA_ROOT", "10.1.2.3:80")]);
        assert_eq!(
            MetadataSource::from_env(&env)
                .unwrap()
                .account_url()
                .host_str(),
            Some("10.1.2.3")
        );
        let env = Environment::from_vars([
            ("GCE_METADATA_ROOT", "10.1.2.3"),
            ("GCE_METADATA_HOST", "127.0.0.1:5"),
        ]);
        assert_eq!(
            MetadataSource::from_env(&env)
                .unwrap()
                .account_url()
                .as_str(),
            "http://127.0.0.1:5/computeMetadata/v1/instance/service-accounts/default/"
        );
        let env = Environment::from_vars::<[(&str, &str); 0], _, _>([]);
        assert_eq!(
            MetadataSource::from_env(&env)
                .unwrap()
                .account_url()
                .host_str(),
            Some("169.254.169.254")
        );
        let env = Environment::from_vars([("GCE_METADATA_HOST", "not a host")]);
        let err = MetadataSource::from_env(&env).unwrap_err();
        assert!(err.to_string().contains("GCE_METADATA_HOST"), "{err}");
    }
}
