//! Application Default Credentials: find the credential this process should
//! use, the way Google's client libraries do (see `docs/adc.md`).
//!
//! 1. `GOOGLE_APPLICATION_CREDENTIALS`: a credentials file (a named file
//!    that does not exist is an error, not a reason to look further);
//! 2. `$CLOUDSDK_CONFIG/application_default_credentials.json`, else
//!    `~/.config/gcloud/application_default_credentials.json`
//!    (`%APPDATA%\gcloud\...` on Windows), as written by
//!    `gcloud auth application-default login` or `iap login`;
//! 3. the metadata server, when [detection](MetadataSource::detect) finds one.
//!
//! Files of `type` `service_account` and `authorized_user` become a
//! [`ServiceAccountSource`] and an [`AuthorizedUserSource`];
//! `impersonated_service_account` and `external_account` (with a
//! `service_account_impersonation_url`) become an [`ImpersonatedSource`].
//! Errors name the file and the field at fault.
//!
//! Environment variables are read through an [`Environment`], so tests (and
//! callers with their own configuration) need not touch the process
//! environment.
//!
//! ```
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let emu = iap_emulator::Emulator::start().await?;
//! # let dir = tempfile::tempdir()?;
//! # let key_file = dir.path().join("key.json");
//! # emu.create_service_account("runner").await?.write_key_file(&key_file)?;
//! use iap_token::{Audience, adc};
//!
//! // `adc::find()` reads the process environment; `find_with` reads these
//! // variables only.
//! let env = adc::Environment::from_vars([("GOOGLE_APPLICATION_CREDENTIALS", &key_file)]);
//! let found = adc::find_with(&env).await?;
//! println!("using {}", found.origin);
//! let token = found.source.id_token(&Audience::new("123-abc.apps.googleusercontent.com")).await?;
//! # assert!(matches!(found.origin, adc::CredentialOrigin::EnvVar(_)));
//! # assert_eq!(token.claims().aud.as_deref(), Some("123-abc.apps.googleusercontent.com"));
//! # Ok(()) }
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::access_token::AccessTokenSource;
use crate::credentials_json::{CredentialsJson, is_not_found, read_file};
use crate::source::TokenSource;
use crate::source::authorized_user::{AuthorizedUser, AuthorizedUserSource};
use crate::source::external_account::ExternalAccount;
use crate::source::impersonated::ImpersonatedSource;
use crate::source::metadata::MetadataSource;
use crate::source::service_account::{ServiceAccountKey, ServiceAccountSource};
use crate::{Error, Result};

pub use crate::environment::Environment;

/// Env var naming a credentials file.
pub(crate) const GOOGLE_APPLICATION_CREDENTIALS: &str = "GOOGLE_APPLICATION_CREDENTIALS";
/// Env var naming gcloud's configuration folder.
pub(crate) const CLOUDSDK_CONFIG: &str = "CLOUDSDK_CONFIG";
/// The file name gcloud (and `iap login`) write ADC user credentials to.
pub(crate) const WELL_KNOWN_FILE: &str = "application_default_credentials.json";

/// Where discovered credentials came from (their provenance; not to be
/// confused with the HTTP origin a token is sent to).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialOrigin {
    /// The file named by `GOOGLE_APPLICATION_CREDENTIALS`.
    EnvVar(PathBuf),
    /// gcloud's well-known ADC file.
    WellKnownFile(PathBuf),
    /// The metadata server.
    MetadataServer,
}

impl fmt::Display for CredentialOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialOrigin::EnvVar(p) => {
                write!(f, "{} (from {GOOGLE_APPLICATION_CREDENTIALS})", p.display())
            }
            CredentialOrigin::WellKnownFile(p) => write!(f, "{}", p.display()),
            CredentialOrigin::MetadataServer => f.write_str("the metadata server"),
        }
    }
}

/// Credentials found by [`find`]: the source and where it came from.
#[derive(Clone, Debug)]
pub struct Discovered {
    /// The token source built from the credentials.
    pub source: Arc<dyn TokenSource>,
    /// Where they came from.
    pub origin: CredentialOrigin,
}

/// Application Default Credentials from the process environment; see the
/// [module docs](self). [`Error::NoCredentials`] when nothing is found.
pub async fn application_default() -> Result<Arc<dyn TokenSource>> {
    Ok(find().await?.source)
}

/// Like [`application_default`], also telling where the credentials came from.
pub async fn find() -> Result<Discovered> {
    find_with(&Environment::process()).await
}

/// Application Default Credentials, reading variables from `env`.
pub async fn find_with(env: &Environment) -> Result<Discovered> {
    if let Some(path) = env
        .var_os(GOOGLE_APPLICATION_CREDENTIALS)
        .map(PathBuf::from)
    {
        let bytes = match read_file(&path) {
            Ok(b) => b,
            Err(e) if is_not_found(&e) => {
                return Err(Error::EnvVar {
                    name: GOOGLE_APPLICATION_CREDENTIALS.into(),
                    problem: format!(
                        "names {}, which does not exist: fix the path or unset the variable",
                        path.display()
                    ),
                });
            }
            Err(e) => return Err(e),
        };
        let source = source_from_json(&CredentialsJson::parse(&bytes, Some(&path))?, env, None)?;
        tracing::debug!(path = %path.display(), "ADC: credentials from {GOOGLE_APPLICATION_CREDENTIALS}");
        return Ok(Discovered {
            source,
            origin: CredentialOrigin::EnvVar(path),
        });
    }
    if let Some(path) = well_known_file(env) {
        match read_file(&path) {
            Ok(bytes) => {
                let source =
                    source_from_json(&CredentialsJson::parse(&bytes, Some(&path))?, env, None)?;
                tracing::debug!(path = %path.display(), "ADC: credentials from the well-known file");
                return Ok(Discovered {
                    source,
                    origin: CredentialOrigin::WellKnownFile(path),
                });
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e),
        }
    }
    if MetadataSource::detect(env, None).await {
        tracing::debug!("ADC: the metadata server");
        let source = MetadataSource::from_env(env)?;
        return Ok(Discovered {
            source: Arc::new(source),
            origin: CredentialOrigin::MetadataServer,
        });
    }
    Err(Error::NoCredentials)
}

/// gcloud's ADC file: `$CLOUDSDK_CONFIG/application_default_credentials.json`,
/// else `~/.config/gcloud/...` (`%APPDATA%\gcloud\...` on Windows). Whether
/// or not it exists; `None` when no home folder is known.
pub fn well_known_file(env: &Environment) -> Option<PathBuf> {
    let dir = if let Some(dir) = env.var_os(CLOUDSDK_CONFIG) {
        PathBuf::from(dir)
    } else if cfg!(windows) {
        PathBuf::from(env.var_os("APPDATA")?).join("gcloud")
    } else {
        env.home()?.join(".config").join("gcloud")
    };
    Some(dir.join(WELL_KNOWN_FILE))
}

/// A token source from a credentials file (`--credentials FILE`), whatever
/// its `type`. Variables that sources read (e.g. `GCE_METADATA_HOST`) come
/// from the process environment.
pub fn from_file(path: impl AsRef<Path>) -> Result<Arc<dyn TokenSource>> {
    source_from_json(
        &CredentialsJson::read(path.as_ref())?,
        &Environment::process(),
        None,
    )
}

/// Like [`from_file`], with every request the credential makes (token
/// endpoints, STS, IAM Credentials, nested `source_credentials` included)
/// sent through `client`: extra root certificates (see
/// [`RootCertificates::http_client`](crate::RootCertificates::http_client)),
/// a fixed proxy. Configure it not to follow redirects.
pub fn from_file_with_http_client(
    path: impl AsRef<Path>,
    client: reqwest::Client,
) -> Result<Arc<dyn TokenSource>> {
    source_from_json(
        &CredentialsJson::read(path.as_ref())?,
        &Environment::process(),
        Some(&client),
    )
}

/// A token source from the JSON text of a credentials file.
pub fn from_json(json: impl AsRef<[u8]>) -> Result<Arc<dyn TokenSource>> {
    source_from_json(
        &CredentialsJson::parse(json.as_ref(), None)?,
        &Environment::process(),
        None,
    )
}

/// The one dispatch on a credentials file's `type`: each credential type is
/// one arm. With `http`, every source sends its requests through it.
fn source_from_json(
    json: &CredentialsJson,
    env: &Environment,
    http: Option<&reqwest::Client>,
) -> Result<Arc<dyn TokenSource>> {
    match json.kind()? {
        "service_account" => {
            let source = ServiceAccountSource::new(ServiceAccountKey::from_credentials_json(json)?);
            Ok(Arc::new(with_http(
                source,
                http,
                ServiceAccountSource::with_http_client,
            )))
        }
        "authorized_user" => {
            let source = AuthorizedUserSource::new(AuthorizedUser::from_credentials_json(json)?);
            Ok(Arc::new(with_http(
                source,
                http,
                AuthorizedUserSource::with_http_client,
            )))
        }
        "impersonated_service_account" => Ok(Arc::new(impersonated(json, env, http)?)),
        "external_account" => {
            let account = ExternalAccount::from_credentials_json(json, env)?;
            let account = with_http(account, http, ExternalAccount::with_http_client);
            Ok(Arc::new(account.id_token_source()?))
        }
        other => Err(unknown_type(json, other)),
    }
}

/// An access-token source (the source credential of impersonation) from
/// the JSON text of a `service_account`, `authorized_user` or
/// `external_account` file.
pub fn access_token_source_from_json(json: impl AsRef<[u8]>) -> Result<Arc<dyn AccessTokenSource>> {
    access_token_source(
        &CredentialsJson::parse(json.as_ref(), None)?,
        &Environment::process(),
        None,
    )
}

/// An access-token source from credentials JSON (e.g. the
/// `source_credentials` of an `impersonated_service_account` file).
pub(crate) fn access_token_source(
    json: &CredentialsJson,
    env: &Environment,
    http: Option<&reqwest::Client>,
) -> Result<Arc<dyn AccessTokenSource>> {
    match json.kind()? {
        "service_account" => {
            let source = ServiceAccountSource::new(ServiceAccountKey::from_credentials_json(json)?);
            Ok(Arc::new(with_http(source, http, ServiceAccountSource::with_http_client)))
        }
        "authorized_user" => {
            let source = AuthorizedUserSource::new(AuthorizedUser::from_credentials_json(json)?);
            Ok(Arc::new(with_http(source, http, AuthorizedUserSource::with_http_client)))
        }
        "external_account" => {
            let account = ExternalAccount::from_credentials_json(json, env)?;
            Ok(Arc::new(with_http(account, http, ExternalAccount::with_http_client)))
        }
        other => Err(json.invalid(
            "type",
            format!(
                "is `{other}`; the source credentials of impersonation are `service_account`, `authorized_user` \
                 or `external_account`"
            ),
        )),
    }
}

/// An `impersonated_service_account` file: its `source_credentials` go
/// through [`access_token_source`] (the one dispatch, nested), the rest is
/// read by [`ImpersonatedSource`].
fn impersonated(
    json: &CredentialsJson,
    env: &Environment,
    http: Option<&reqwest::Client>,
) -> Result<ImpersonatedSource> {
    json.expect_type("impersonated_service_account")?;
    // The file's own fields first: its errors come before the nested ones.
    let url = json.required("service_account_impersonation_url")?;
    crate::iam_credentials::ImpersonationUrl::parse(url)
        .map_err(|why| json.invalid("service_account_impersonation_url", why))?;
    let source_json = json
        .object("source_credentials")?
        .ok_or_else(|| json.invalid("source_credentials", "is missing".into()))?;
    if source_json.kind().is_err() {
        return Err(json.invalid("source_credentials", "has no `type`".into()));
    }
    let source = access_token_source(&source_json, env, http)?;
    let source = ImpersonatedSource::from_credentials_json(json, source)?;
    Ok(with_http(
        source,
        http,
        ImpersonatedSource::with_http_client,
    ))
}

/// `source` sending its requests through `http`, when one is given.
fn with_http<S>(source: S, http: Option<&reqwest::Client>, set: fn(S, reqwest::Client) -> S) -> S {
    match http {
        Some(client) => set(source, client.clone()),
        None => source,
    }
}

fn unknown_type(json: &CredentialsJson, kind: &str) -> Error {
    json.invalid(
        "type",
        format!(
            "is `{kind}`, which is not a Google credentials type (expected `service_account`, `authorized_user`, \
             `impersonated_service_account` or `external_account`)"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_file_prefers_cloudsdk_config() {
        let env = Environment::from_vars([
            ("CLOUDSDK_CONFIG", "/cfg"),
            ("HOME", "/home/u"),
            ("APPDATA", "C:\\a"),
        ]);
        assert_eq!(
            well_known_file(&env),
            Some(PathBuf::from("/cfg/application_default_credentials.json"))
        );
        if cfg!(unix) {
            let env = Environment::from_vars([("HOME", "/home/u")]);
            assert_eq!(
                well_known_file(&env),
                Some(PathBuf::from(
                    "/home/u/.config/gcloud/application_default_credentials.json"
                ))
            );
            assert_eq!(well_known_file(&Environment::from_vars([("X", "y")])), None);
        }
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let env = Environment::from_vars([("GOOGLE_APPLICATION_CREDENTIALS", "")]);
        assert_eq!(env.var_os(GOOGLE_APPLICATION_CREDENTIALS), None);
    }

    #[test]
    fn fields_are_named_in_errors() {
        let json =
            CredentialsJson::parse(br#"{"type": 5, "a": ""}"#, Some(Path::new("/x/key.json")))
                .unwrap();
        let err = json.kind().unwrap_err().to_string();
        assert_eq!(
            err,
            "credentials file /x/key.json: field `type` must be a string"
        );
        let err = json.required("a").unwrap_err().to_string();
        assert_eq!(err, "credentials file /x/key.json: field `a` is missing");
        let err = CredentialsJson::parse(b"{", None)
            .err()
            .unwrap()
            .to_string();
        assert_eq!(err, "credentials: not valid JSON (line 1, column 1)");
    }

    #[test]
    fn nested_fields_are_named_with_their_path() {
        let json = CredentialsJson::parse(
            br#"{"outer": {"inner": {"x": 1}}, "s": 2}"#,
            Some(Path::new("/x/key.json")),
        )
        .unwrap();
        let inner = json.object("outer").unwrap().unwrap();
        let innermost = inner.object("inner").unwrap().unwrap();
        assert_eq!(
            innermost.required("x").unwrap_err().to_string(),
            "credentials file /x/key.json: field `outer.inner.x` must be a string"
        );
        assert_eq!(
            inner.invalid("", "is odd".into()).to_string(),
            "credentials file /x/key.json: field `outer` is odd"
        );
        assert_eq!(
            json.object("s").err().unwrap().to_string(),
            "credentials file /x/key.json: field `s` must be a JSON object"
        );
        assert!(json.object("absent").unwrap().is_none());
        let err = from_json(
            r#"{"type": "impersonated_service_account",
                "service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/t@p.iam.gserviceaccount.com:generateAccessToken",
                "source_credentials": {"type": "service_account", "private_key": "x"}}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("field `source_credentials.client_email` is missing"),
            "{err}"
        );
    }

    #[test]
    fn unknown_types_and_incomplete_files_are_clear_errors() {
        let err = from_json(r#"{"type":"external_account"}"#).unwrap_err();
        assert!(
            err.to_string().contains("field `audience` is missing"),
            "{err}"
        );
        let err = from_json(r#"{"type":"banana"}"#).unwrap_err();
        assert!(
            err.to_string().contains("field `type` is `banana`"),
            "{err}"
        );
    }
}
