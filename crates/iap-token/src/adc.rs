//! Application Default Credentials: find the credential this process should
//! use, the way Google's client libraries do (PROTOCOLS section 6).
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
//! ```no_run
//! # async fn demo() -> iap_token::Result<()> {
//! use iap_token::{Audience, adc};
//!
//! let found = adc::find().await?;
//! println!("using {}", found.origin);
//! let token = found.source.id_token(&Audience::new("123-abc.apps.googleusercontent.com")).await?;
//! # Ok(()) }
//! ```

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};
use url::Url;

use crate::access_token::AccessTokenSource;
use crate::source::TokenSource;
use crate::source::authorized_user::{AuthorizedUser, AuthorizedUserSource};
use crate::source::external_account::ExternalAccount;
use crate::source::impersonated::ImpersonatedSource;
use crate::source::metadata::MetadataSource;
use crate::source::service_account::{ServiceAccountKey, ServiceAccountSource};
use crate::transport::ensure_secure;
use crate::{Error, Result};

/// Env var naming a credentials file.
pub const GOOGLE_APPLICATION_CREDENTIALS: &str = "GOOGLE_APPLICATION_CREDENTIALS";
/// Env var naming gcloud's configuration folder.
pub const CLOUDSDK_CONFIG: &str = "CLOUDSDK_CONFIG";
/// The file name gcloud (and `iap login`) write ADC user credentials to.
pub const WELL_KNOWN_FILE: &str = "application_default_credentials.json";

/// Where environment variables come from: the process environment, or a
/// lookup of your own.
///
/// Empty values count as unset, as in Google's libraries. `Debug` shows
/// no values.
///
/// ```
/// # use iap_token::adc::Environment;
/// let env = Environment::from_vars([("CLOUDSDK_CONFIG", "/tmp/gcloud")]);
/// assert_eq!(env.var("CLOUDSDK_CONFIG").as_deref(), Some("/tmp/gcloud"));
/// assert_eq!(env.var("HOME"), None);
/// ```
#[derive(Clone, Default)]
pub struct Environment {
    lookup: Option<Lookup>,
}

type Lookup = Arc<dyn Fn(&str) -> Option<OsString> + Send + Sync>;

impl Environment {
    /// The process environment (`std::env::var_os`).
    pub fn process() -> Self {
        Environment { lookup: None }
    }

    /// Variables from `lookup`.
    pub fn from_fn(lookup: impl Fn(&str) -> Option<OsString> + Send + Sync + 'static) -> Self {
        Environment {
            lookup: Some(Arc::new(lookup)),
        }
    }

    /// Exactly these variables, nothing from the process.
    pub fn from_vars<I, K, V>(vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<OsString>,
    {
        let map: std::collections::HashMap<String, OsString> = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Self::from_fn(move |name| map.get(name).cloned())
    }

    /// A variable's value; `None` when unset or empty.
    pub fn var_os(&self, name: &str) -> Option<OsString> {
        let value = match &self.lookup {
            None => std::env::var_os(name),
            Some(lookup) => lookup(name),
        };
        value.filter(|v| !v.is_empty())
    }

    /// A variable's value as UTF-8; `None` when unset, empty or not UTF-8.
    pub fn var(&self, name: &str) -> Option<String> {
        self.var_os(name).and_then(|v| v.into_string().ok())
    }

    fn home(&self) -> Option<PathBuf> {
        let var = if cfg!(windows) { "USERPROFILE" } else { "HOME" };
        match (&self.lookup, self.var_os(var)) {
            (_, Some(home)) => Some(PathBuf::from(home)),
            (None, None) => std::env::home_dir(),
            (Some(_), None) => None,
        }
    }
}

impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.lookup.is_some() {
            "Environment(custom)"
        } else {
            "Environment(process)"
        })
    }
}

/// Where discovered credentials came from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// The file named by `GOOGLE_APPLICATION_CREDENTIALS`.
    EnvVar(PathBuf),
    /// gcloud's well-known ADC file.
    WellKnownFile(PathBuf),
    /// The metadata server.
    MetadataServer,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::EnvVar(p) => {
                write!(f, "{} (from {GOOGLE_APPLICATION_CREDENTIALS})", p.display())
            }
            Origin::WellKnownFile(p) => write!(f, "{}", p.display()),
            Origin::MetadataServer => f.write_str("the metadata server"),
        }
    }
}

/// Credentials found by [`find`]: the source and where it came from.
#[derive(Clone, Debug)]
pub struct Discovered {
    /// The token source built from the credentials.
    pub source: Arc<dyn TokenSource>,
    /// Where they came from.
    pub origin: Origin,
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
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::EnvVar {
                    name: GOOGLE_APPLICATION_CREDENTIALS.into(),
                    problem: format!(
                        "names {}, which does not exist: fix the path or unset the variable",
                        path.display()
                    ),
                });
            }
            Err(source) => return Err(Error::ReadFile { path, source }),
        };
        let source = source_from_json(&CredentialsJson::parse(&bytes, Some(&path))?, env)?;
        tracing::debug!(path = %path.display(), "ADC: credentials from {GOOGLE_APPLICATION_CREDENTIALS}");
        return Ok(Discovered {
            source,
            origin: Origin::EnvVar(path),
        });
    }
    if let Some(path) = well_known_file(env) {
        match std::fs::read(&path) {
            Ok(bytes) => {
                let source = source_from_json(&CredentialsJson::parse(&bytes, Some(&path))?, env)?;
                tracing::debug!(path = %path.display(), "ADC: credentials from the well-known file");
                return Ok(Discovered {
                    source,
                    origin: Origin::WellKnownFile(path),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error::ReadFile { path, source }),
        }
    }
    if MetadataSource::detect(env, None).await {
        tracing::debug!("ADC: the metadata server");
        let source = MetadataSource::from_env(env)?;
        return Ok(Discovered {
            source: Arc::new(source),
            origin: Origin::MetadataServer,
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
    )
}

/// A token source from the JSON text of a credentials file.
pub fn from_json(json: impl AsRef<[u8]>) -> Result<Arc<dyn TokenSource>> {
    source_from_json(
        &CredentialsJson::parse(json.as_ref(), None)?,
        &Environment::process(),
    )
}

/// The one dispatch on a credentials file's `type`: each credential type is
/// one arm.
fn source_from_json(json: &CredentialsJson, env: &Environment) -> Result<Arc<dyn TokenSource>> {
    match json.kind()? {
        "service_account" => Ok(Arc::new(ServiceAccountSource::new(
            ServiceAccountKey::from_credentials_json(json)?,
        ))),
        "authorized_user" => Ok(Arc::new(AuthorizedUserSource::new(
            AuthorizedUser::from_credentials_json(json)?,
        ))),
        "impersonated_service_account" => Ok(Arc::new(ImpersonatedSource::from_credentials_json(
            json, env,
        )?)),
        "external_account" => Ok(Arc::new(
            ExternalAccount::from_credentials_json(json, env)?.id_token_source()?,
        )),
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
    )
}

/// An access-token source from credentials JSON (e.g. the
/// `source_credentials` of an `impersonated_service_account` file).
pub(crate) fn access_token_source(
    json: &CredentialsJson,
    env: &Environment,
) -> Result<Arc<dyn AccessTokenSource>> {
    match json.kind()? {
        "service_account" => Ok(Arc::new(ServiceAccountSource::new(ServiceAccountKey::from_credentials_json(json)?))),
        "authorized_user" => Ok(Arc::new(AuthorizedUserSource::new(AuthorizedUser::from_credentials_json(json)?))),
        "external_account" => Ok(Arc::new(ExternalAccount::from_credentials_json(json, env)?)),
        other => Err(json.invalid(
            "type",
            format!(
                "is `{other}`; the source credentials of impersonation are `service_account`, `authorized_user` \
                 or `external_account`"
            ),
        )),
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

/// A credentials file's JSON object, read field by field with errors that
/// name the file and the field. Shared by every credential type. A nested
/// object ([`object`](Self::object)) names its fields with their path
/// (`credential_source.url`).
#[derive(Clone)]
pub(crate) struct CredentialsJson {
    obj: Map<String, Value>,
    path: Option<PathBuf>,
    /// Where a nested object sits in the file (`credential_source`).
    at: Option<String>,
}

impl CredentialsJson {
    /// Reads and parses the credentials file at `path`.
    pub(crate) fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::ReadFile {
            path: path.into(),
            source,
        })?;
        Self::parse(&bytes, Some(path))
    }

    /// Parses `bytes` (the contents of `path`, if from a file).
    pub(crate) fn parse(bytes: &[u8], path: Option<&Path>) -> Result<Self> {
        let invalid = |problem: String| Error::InvalidCredentials {
            path: path.map(Into::into),
            field: String::new(),
            problem,
        };
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            invalid(format!(
                "not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        match value {
            Value::Object(obj) => Ok(CredentialsJson {
                obj,
                path: path.map(Into::into),
                at: None,
            }),
            _ => Err(invalid("not a JSON object".into())),
        }
    }

    /// The file the JSON came from.
    pub(crate) fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The `type` field.
    pub(crate) fn kind(&self) -> Result<&str> {
        self.required("type")
    }

    /// Checks that the `type` field is `expected`: for the parser of one
    /// credential type, handed a file of another.
    pub(crate) fn expect_type(&self, expected: &str) -> Result<()> {
        match self.kind()? {
            kind if kind == expected => Ok(()),
            kind => Err(self.invalid("type", format!("is `{kind}`, expected `{expected}`"))),
        }
    }

    /// A field's raw value.
    pub(crate) fn get(&self, field: &str) -> Option<&Value> {
        self.obj.get(field)
    }

    /// An optional JSON-object field (`None` when absent or null), read
    /// like the file with errors naming `field.inner`.
    pub(crate) fn object(&self, field: &str) -> Result<Option<CredentialsJson>> {
        match self.obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(obj)) => Ok(Some(CredentialsJson {
                obj: obj.clone(),
                path: self.path.clone(),
                at: Some(self.name(field)),
            })),
            Some(_) => Err(self.invalid(field, "must be a JSON object".into())),
        }
    }

    /// A required, non-empty string field.
    pub(crate) fn required(&self, field: &str) -> Result<&str> {
        self.optional(field)?
            .ok_or_else(|| self.invalid(field, "is missing".into()))
    }

    /// Like [`required`](Self::required), with what to do when the field is
    /// missing (e.g. "download a new JSON key").
    pub(crate) fn required_or(&self, field: &str, remedy: &str) -> Result<&str> {
        self.optional(field)?
            .ok_or_else(|| self.invalid(field, format!("is missing: {remedy}")))
    }

    /// An optional string field; empty counts as absent; a non-string is an error.
    pub(crate) fn optional(&self, field: &str) -> Result<Option<&str>> {
        match self.obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(self.invalid(field, "must be a string".into())),
        }
    }

    /// An optional URL field, `default` when absent.
    pub(crate) fn url_or(&self, field: &str, default: &str) -> Result<Url> {
        self.parse_url(field, self.optional(field)?.unwrap_or(default))
    }

    /// Like [`url_or`](Self::url_or), for a URL that credentials are sent
    /// to (see [`secure_url`](Self::secure_url)).
    pub(crate) fn secure_url_or(&self, field: &str, default: &str) -> Result<Url> {
        self.secure_url(field, self.optional(field)?.unwrap_or(default))
    }

    /// `text`, the value of `field` (nested fields included), as a URL.
    pub(crate) fn parse_url(&self, field: &str, text: &str) -> Result<Url> {
        Url::parse(text.trim()).map_err(|e| self.invalid(field, format!("is not a URL ({e})")))
    }

    /// Like [`parse_url`](Self::parse_url), for a URL that credentials are
    /// sent to: it must pass [`ensure_secure`], which is checked here so
    /// that the error names the field rather than surfacing at the first
    /// request.
    pub(crate) fn secure_url(&self, field: &str, text: &str) -> Result<Url> {
        let url = self.parse_url(field, text)?;
        ensure_secure(&url).map_err(|_| {
            self.invalid(
                field,
                "must be an https URL (plain http only for loopback and the metadata server)"
                    .into(),
            )
        })?;
        Ok(url)
    }

    /// An [`Error::InvalidCredentials`] for `field` (empty: this object).
    pub(crate) fn invalid(&self, field: &str, problem: String) -> Error {
        Error::InvalidCredentials {
            path: self.path.clone(),
            field: self.name(field),
            problem,
        }
    }

    /// `field` as errors name it: with the path of a nested object.
    fn name(&self, field: &str) -> String {
        match &self.at {
            Some(at) if field.is_empty() => at.clone(),
            Some(at) => format!("{at}.{field}"),
            None => field.into(),
        }
    }
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
