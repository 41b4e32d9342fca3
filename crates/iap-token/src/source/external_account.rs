//! Workload identity federation (`type: "external_account"`): a token from
//! another identity provider (GitHub Actions, AWS, Azure, GitLab, an
//! on-premises OIDC or SAML issuer) exchanged for Google credentials
//! (see `docs/workload-identity.md`).
//!
//! Google issues ID tokens to federated identities only through a service
//! account, so an ID token takes three calls:
//!
//! 1. the **subject token** from the file's `credential_source`: a `file`,
//!    a `url` (with optional `headers`; `format` `text` or `json` with
//!    `subject_token_field_name`), or an `executable` (only when
//!    `GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1`, per Google's
//!    executable-sourced credentials spec);
//! 2. **STS** (`token_url`) exchanges it for a federated access token;
//! 3. **`generateAccessToken`** (`service_account_impersonation_url`) turns
//!    that into the service account's access token, which
//!    [`ImpersonatedSource`] then uses for **`generateIdToken`** on the same
//!    account. Its access token is cached until near its expiry, so steps 1
//!    to 3 run once per access-token lifetime, not once per ID token.
//!
//! A file without `service_account_impersonation_url` can still serve as the
//! source credential of an [`ImpersonatedSource`] you build yourself, but
//! [`ExternalAccount::id_token_source`] (and ADC) refuse it with an error
//! that says how to add one.
//!
//! ```
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let emu = iap_emulator::Emulator::start().await?;
//! # let dir = tempfile::tempdir()?;
//! # let files = emu.write_adc_files(dir.path()).await?;
//! # let wif_config = files.external_account_file;
//! use iap_token::{Audience, TokenSource, source::external_account::ExternalAccount};
//!
//! // e.g. "wif-config.json", written by `gcloud iam workload-identity-pools create-cred-config`
//! let source = ExternalAccount::from_file(&wif_config)?.id_token_source()?;
//! let token = source.id_token(&Audience::new("123-abc.apps.googleusercontent.com")).await?;
//! assert!(token.claims().email.is_some()); // the impersonated service account
//! # Ok(()) }
//! ```
//!
//! # Executables
//! The command (split on whitespace, no shell) runs with the process
//! environment plus `GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE`,
//! `GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE`, `GOOGLE_EXTERNAL_ACCOUNT_INTERACTIVE=0`,
//! `GOOGLE_EXTERNAL_ACCOUNT_IMPERSONATED_EMAIL` (with an impersonation URL)
//! and `GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE` (with an `output_file`), and
//! must print `{"version": 1, "success": true, "token_type": ...,
//! "id_token"|"saml_response": ..., "expiration_time": UNIX_SECONDS}`. It is
//! killed after `timeout_millis` (default 30 s; 5 to 120 s allowed). When an
//! `output_file` is configured and holds an unexpired successful response,
//! the executable is not run at all.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use url::Url;

use crate::access_token::{
    AccessToken, AccessTokenAnswer, AccessTokenSource, CLOUD_PLATFORM_SCOPE,
};
use crate::credentials_json::CredentialsJson;
use crate::endpoints::STS_TOKEN_URL;
use crate::environment::Environment;
use crate::iam_credentials::{ImpersonationUrl, TOKEN_CREATOR_ROLE, generate_access_token};
use crate::source::BoxFuture;
use crate::source::impersonated::ImpersonatedSource;
use crate::transport::{
    METADATA_HOSTS, Transport, endpoint_name, ensure_secure, json_problem, scrub,
};
use crate::{Error, Result};

/// The env var that must be `1` for executable credential sources to run.
pub(crate) const ALLOW_EXECUTABLES: &str = "GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES";
/// The STS grant type.
pub(crate) const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The token type STS is asked for.
pub(crate) const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// The role a federated identity needs on the service account it impersonates.
pub(crate) const WORKLOAD_IDENTITY_USER_ROLE: &str = "roles/iam.workloadIdentityUser";
/// Default time an executable may run.
pub(crate) const EXECUTABLE_TIMEOUT: Duration = Duration::from_secs(30);
const EXECUTABLE_TIMEOUT_RANGE: std::ops::RangeInclusive<u64> = 5_000..=120_000;
/// The newest executable response version understood.
const EXECUTABLE_VERSION: u64 = 1;

/// Workload identity federation credentials: the access-token side (STS,
/// then impersonation when configured). See the [module docs](self).
/// `Debug` shows no header value, client secret or token.
#[derive(Clone)]
pub struct ExternalAccount {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    audience: String,
    subject_token_type: String,
    token_url: Url,
    impersonation: Option<Impersonation>,
    source: CredentialSource,
    /// `client_id` and `client_secret`: HTTP Basic auth at STS.
    client: Option<(String, String)>,
    workforce_user_project: Option<String>,
    transport: Transport,
    env: Environment,
    path: Option<PathBuf>,
}

#[derive(Clone)]
struct Impersonation {
    url: Url,
    endpoint: String,
    target: String,
    lifetime: Option<Duration>,
}

#[derive(Clone)]
enum CredentialSource {
    File {
        path: PathBuf,
        format: Format,
    },
    Url {
        url: Url,
        headers: HeaderMap,
        format: Format,
    },
    Executable(Executable),
}

#[derive(Clone)]
struct Executable {
    command: String,
    timeout: Duration,
    output_file: Option<PathBuf>,
}

#[derive(Clone, Debug)]
enum Format {
    Text,
    Json(String),
}

impl fmt::Debug for ExternalAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.debug_struct("ExternalAccount")
            .field("audience", &inner.audience)
            .field("subject_token_type", &inner.subject_token_type)
            .field("token_url", &inner.token_url.as_str())
            .field(
                "impersonate",
                &inner.impersonation.as_ref().map(|i| &i.target),
            )
            .field("credential_source", &inner.source)
            .field("client_id", &inner.client.as_ref().map(|(id, _)| id))
            .field("path", &inner.path)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialSource::File { path, format } => f
                .debug_struct("File")
                .field("path", path)
                .field("format", format)
                .finish(),
            CredentialSource::Url {
                url,
                headers,
                format,
            } => f
                .debug_struct("Url")
                .field("url", &endpoint_name(url))
                .field(
                    "headers",
                    &headers.keys().map(HeaderName::as_str).collect::<Vec<_>>(),
                )
                .field("format", format)
                .finish(),
            CredentialSource::Executable(exe) => f
                .debug_struct("Executable")
                .field("program", &exe.program())
                .field("timeout", &exe.timeout)
                .field("output_file", &exe.output_file)
                .finish(),
        }
    }
}

impl ExternalAccount {
    /// Reads an `external_account` credentials file. Variables (the
    /// executable gate) come from the process environment.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_credentials_json(
            &CredentialsJson::read(path.as_ref())?,
            &Environment::process(),
        )
    }

    /// Parses the JSON text of an `external_account` credentials file.
    pub fn from_json(json: impl AsRef<[u8]>) -> Result<Self> {
        Self::from_credentials_json(
            &CredentialsJson::parse(json.as_ref(), None)?,
            &Environment::process(),
        )
    }

    pub(crate) fn from_credentials_json(json: &CredentialsJson, env: &Environment) -> Result<Self> {
        json.expect_type("external_account")?;
        let audience = json.required("audience")?.to_string();
        let subject_token_type = json.required("subject_token_type")?.to_string();
        let token_url = json.secure_url_or("token_url", STS_TOKEN_URL)?;
        let impersonation = match json.optional("service_account_impersonation_url")? {
            None => None,
            Some(text) => {
                let parsed = ImpersonationUrl::parse(text)
                    .map_err(|why| json.invalid("service_account_impersonation_url", why))?;
                let url = json.secure_url("service_account_impersonation_url", text)?;
                let lifetime = match json.get("service_account_impersonation") {
                    Some(Value::Object(o)) => match o.get("token_lifetime_seconds") {
                        None | Some(Value::Null) => None,
                        Some(v) => Some(Duration::from_secs(
                            v.as_u64()
                                .filter(|s| (600..=43_200).contains(s))
                                .ok_or_else(|| {
                                    json.invalid(
                                        "service_account_impersonation.token_lifetime_seconds",
                                        "must be a number of seconds from 600 to 43200".into(),
                                    )
                                })?,
                        )),
                    },
                    _ => None,
                };
                Some(Impersonation {
                    url,
                    endpoint: parsed.endpoint,
                    target: parsed.target,
                    lifetime,
                })
            }
        };
        let source = CredentialSource::parse(
            &json
                .object("credential_source")?
                .ok_or_else(|| json.invalid("credential_source", "is missing".into()))?,
        )?;
        let client = match (json.optional("client_id")?, json.optional("client_secret")?) {
            (Some(id), Some(secret)) => Some((id.to_string(), secret.to_string())),
            _ => None,
        };
        let workforce_user_project = json
            .optional("workforce_pool_user_project")?
            .filter(|_| audience.contains("/locations/global/workforcePools/"))
            .map(str::to_string);
        Ok(ExternalAccount {
            inner: Arc::new(Inner {
                audience,
                subject_token_type,
                token_url,
                impersonation,
                source,
                client,
                workforce_user_project,
                transport: Transport::default(),
                env: env.clone(),
                path: json.path().map(Into::into),
            }),
        })
    }

    /// Reads variables (the executable gate, `GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES`) from
    /// `env` instead of the process environment. The executable itself
    /// still inherits the process environment.
    pub fn with_environment(self, env: Environment) -> Self {
        self.map_inner(|inner| inner.env = env)
    }

    /// Sends requests through `client` instead of the shared one (extra
    /// root certificates, a fixed proxy). Configure it not to follow
    /// redirects.
    pub fn with_http_client(self, client: reqwest::Client) -> Self {
        self.map_inner(|inner| inner.transport = Transport::new(client))
    }

    fn map_inner(self, f: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Arc::unwrap_or_clone(self.inner);
        f(&mut inner);
        ExternalAccount {
            inner: Arc::new(inner),
        }
    }

    /// The workload identity pool provider (STS `audience`).
    pub fn audience(&self) -> &str {
        &self.inner.audience
    }

    /// The service account impersonated, from `service_account_impersonation_url`.
    pub fn service_account_email(&self) -> Option<&str> {
        self.inner.impersonation.as_ref().map(|i| i.target.as_str())
    }

    /// An ID-token source: `generateIdToken` on the impersonated service
    /// account, with this account's (cached) access tokens.
    ///
    /// Fails with [`Error::Unsupported`] when the file has no
    /// `service_account_impersonation_url`: Google issues ID tokens to
    /// federated identities only through a service account.
    pub fn id_token_source(&self) -> Result<ImpersonatedSource> {
        let Some(imp) = &self.inner.impersonation else {
            return Err(Error::Unsupported {
                what: "ID tokens from workload identity federation without service-account impersonation".into(),
                path: self.inner.path.clone(),
                hint: "Google issues ID tokens to federated identities only through a service account: the file needs \
                       `service_account_impersonation_url`. Recreate it with `gcloud iam workload-identity-pools \
                       create-cred-config projects/N/locations/global/workloadIdentityPools/POOL/providers/PROVIDER \
                       --service-account=SA_EMAIL --output-file=FILE ...`, and grant the pool's identities \
                       roles/iam.workloadIdentityUser on SA_EMAIL"
                    .into(),
            });
        };
        ImpersonatedSource::new(imp.target.clone(), self.clone())?
            .with_iam_endpoint(imp.endpoint.clone())
            .map(|s| s.with_transport(self.inner.transport.clone()))
    }

    /// Fetches an access token: the subject token, exchanged at STS, then
    /// (with an impersonation URL) turned into the service account's token
    /// by `generateAccessToken`. No caching here (an [`ImpersonatedSource`]
    /// caches it).
    pub async fn fetch_access_token(&self) -> Result<AccessToken> {
        let inner = &*self.inner;
        let subject = self.subject_token().await?;
        let federated = self.exchange(&subject).await?;
        let Some(imp) = &inner.impersonation else {
            return Ok(federated);
        };
        generate_access_token(&inner.transport, &imp.url, &federated, imp.lifetime)
            .await
            .map_err(|e| self.explain_impersonation(e, &imp.target))
    }

    /// STS token exchange.
    async fn exchange(&self, subject: &SubjectToken) -> Result<AccessToken> {
        let inner = &*self.inner;
        let options = inner
            .workforce_user_project
            .as_ref()
            .filter(|_| inner.client.is_none())
            .map(|p| serde_json::json!({ "userProject": p }).to_string());
        let mut form = vec![
            ("grant_type", TOKEN_EXCHANGE_GRANT),
            ("audience", inner.audience.as_str()),
            ("scope", CLOUD_PLATFORM_SCOPE),
            ("requested_token_type", ACCESS_TOKEN_TYPE),
            ("subject_token", subject.0.as_str()),
            ("subject_token_type", inner.subject_token_type.as_str()),
        ];
        if let Some(options) = &options {
            form.push(("options", options));
        }
        let url = &inner.token_url;
        ensure_secure(url)?;
        let mut req = inner
            .transport
            .client_for(url)?
            .post(url.clone())
            .form(&form);
        if let Some((id, secret)) = &inner.client {
            req = req.basic_auth(id, Some(secret));
        }
        let answer = inner
            .transport
            .send(url, req)
            .await
            .map_err(|e| self.explain_sts(e))?;
        answer.json::<AccessTokenAnswer>(url)?.into_token()
    }

    fn explain_sts(&self, err: Error) -> Error {
        let inner = &*self.inner;
        let audience = &inner.audience;
        let source = inner.source.describe();
        err.with_endpoint_hint(|code, _| match code {
            "invalid_grant" => Some(format!(
                "STS refused the subject token from {source}: check that the provider {audience} trusts its issuer, \
                 that its `aud` is what the provider expects, and that the provider's attribute condition accepts it; \
                 or it has expired"
            )),
            "invalid_target" | "invalid_request" => Some(format!(
                "check the file's `audience` ({audience}) and `subject_token_type` ({})",
                inner.subject_token_type
            )),
            "unauthorized_client" | "invalid_client" => {
                Some("check the file's `client_id` and `client_secret`".into())
            }
            _ => None,
        })
    }

    fn explain_impersonation(&self, err: Error, target: &str) -> Error {
        let status = match &err {
            Error::Endpoint { status, .. } => *status,
            _ => return err,
        };
        let members = principal_set(&self.inner.audience)
            .unwrap_or_else(|| "principalSet://iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/POOL/*".into());
        err.with_endpoint_hint(|_, _| match status {
            403 => Some(format!(
                "the federated identity needs the role {WORKLOAD_IDENTITY_USER_ROLE} (or {TOKEN_CREATOR_ROLE}) on {target}: \
                 gcloud iam service-accounts add-iam-policy-binding {target} --member={members} \
                 --role={WORKLOAD_IDENTITY_USER_ROLE}"
            )),
            404 => Some(format!("the service account {target} does not exist: check service_account_impersonation_url")),
            _ => None,
        })
    }

    /// The subject token from the credential source.
    async fn subject_token(&self) -> Result<SubjectToken> {
        let inner = &*self.inner;
        let token = match &inner.source {
            CredentialSource::File { path, format } => {
                let text = crate::credentials_json::read_text_file(path)?;
                format.extract(&text, &path.display().to_string())?
            }
            CredentialSource::Url {
                url,
                headers,
                format,
            } => {
                ensure_secure(url)?;
                // A cloud's metadata server (Azure's IMDS) answers only on
                // the machine's own link: never through a proxy.
                let direct;
                let transport = if url.host_str().is_some_and(|h| METADATA_HOSTS.contains(&h)) {
                    direct = Transport::direct();
                    &direct
                } else {
                    &inner.transport
                };
                let req = transport
                    .client_for(url)?
                    .get(url.clone())
                    .headers(headers.clone());
                let answer = transport.send(url, req).await?;
                format.extract(answer.text(url)?, &endpoint_name(url))?
            }
            CredentialSource::Executable(exe) => exe.subject_token(self).await?,
        };
        if token.is_empty() {
            return Err(Error::Protocol {
                endpoint: inner.source.describe(),
                problem: "the subject token is empty: check credential_source".into(),
            });
        }
        Ok(SubjectToken(token))
    }
}

impl AccessTokenSource for ExternalAccount {
    /// STS always gets the `cloud-platform` scope, whatever is asked.
    fn access_token<'a>(&'a self, _scopes: &'a [&'a str]) -> BoxFuture<'a, Result<AccessToken>> {
        Box::pin(self.fetch_access_token())
    }

    fn principal(&self) -> Option<String> {
        match &self.inner.impersonation {
            Some(imp) => Some(imp.target.clone()),
            None => principal_set(&self.inner.audience),
        }
    }
}

/// `principalSet://iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/*`
/// from a provider audience.
fn principal_set(audience: &str) -> Option<String> {
    let rest = audience.strip_prefix("//iam.googleapis.com/")?;
    let pool = match rest.find("/providers/") {
        Some(at) => &rest[..at],
        None => rest,
    };
    Some(format!("principalSet://iam.googleapis.com/{pool}/*"))
}

/// A subject token. Never shown.
struct SubjectToken(String);

impl CredentialSource {
    /// `json` is the `credential_source` object.
    fn parse(json: &CredentialsJson) -> Result<Self> {
        let string = |name: &str| Ok(json.optional(name)?.map(str::trim));
        if let Some(env_id) = string("environment_id")? {
            return Err(Error::Unsupported {
                what: format!("the `{env_id}` credential source (credential_source.environment_id)"),
                path: json.path().map(Into::into),
                hint: "use a `file`, `url` or `executable` credential source that provides an OIDC token".into(),
            });
        }
        if json.get("certificate").is_some() {
            return Err(Error::Unsupported {
                what: "X.509 certificate credential sources (credential_source.certificate)".into(),
                path: json.path().map(Into::into),
                hint: "use a `file`, `url` or `executable` credential source".into(),
            });
        }
        let file = string("file")?;
        let url = string("url")?;
        let executable = json.get("executable").is_some();
        let kinds =
            usize::from(file.is_some()) + usize::from(url.is_some()) + usize::from(executable);
        if kinds != 1 {
            return Err(json.invalid(
                "",
                "must have exactly one of `file`, `url` or `executable`".into(),
            ));
        }
        if executable {
            let exe = json
                .object("executable")?
                .ok_or_else(|| json.invalid("executable", "must be a JSON object".into()))?;
            return Ok(CredentialSource::Executable(Executable::parse(&exe)?));
        }
        let format = Format::parse(json.object("format")?)?;
        if let Some(path) = file {
            return Ok(CredentialSource::File {
                path: PathBuf::from(path),
                format,
            });
        }
        let url = json.secure_url("url", url.unwrap_or_default())?;
        let mut headers = HeaderMap::new();
        match json.get("headers") {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                for (name, value) in map {
                    let bad = || json.invalid("headers", format!("`{name}` is not a valid header"));
                    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
                    let mut value = value
                        .as_str()
                        .and_then(|v| HeaderValue::from_str(v).ok())
                        .ok_or_else(bad)?;
                    // Headers here often carry a credential (e.g. a request token).
                    value.set_sensitive(true);
                    headers.insert(name, value);
                }
            }
            Some(_) => {
                return Err(json.invalid("headers", "must be a JSON object of strings".into()));
            }
        }
        Ok(CredentialSource::Url {
            url,
            headers,
            format,
        })
    }

    /// What the source is, for messages (no secrets).
    fn describe(&self) -> String {
        match self {
            CredentialSource::File { path, .. } => format!("the file {}", path.display()),
            CredentialSource::Url { url, .. } => format!("the URL {}", endpoint_name(url)),
            CredentialSource::Executable(exe) => format!("the executable `{}`", exe.program()),
        }
    }
}

impl Format {
    /// `format` is the `credential_source.format` object, if any.
    fn parse(format: Option<CredentialsJson>) -> Result<Self> {
        let Some(format) = format else {
            return Ok(Format::Text);
        };
        match format.get("type").and_then(Value::as_str).unwrap_or("text") {
            "text" => Ok(Format::Text),
            "json" => {
                let name = format.required_or(
                    "subject_token_field_name",
                    "a `json` format names the field that holds the token",
                )?;
                Ok(Format::Json(name.trim().to_string()))
            }
            other => {
                Err(format.invalid("type", format!("is `{other}`, expected `text` or `json`")))
            }
        }
    }

    /// The token in `text`, read from `from` (named in errors).
    fn extract(&self, text: &str, from: &str) -> Result<String> {
        match self {
            Format::Text => Ok(text.trim().to_string()),
            Format::Json(field) => {
                let value: Value = serde_json::from_str(text).map_err(|e| Error::Protocol {
                    endpoint: from.to_string(),
                    problem: format!(
                        "the subject token {}",
                        json_problem(&e).trim_start_matches("the answer ")
                    ),
                })?;
                match value.get(field) {
                    Some(Value::String(s)) => Ok(s.trim().to_string()),
                    _ => Err(Error::Protocol {
                        endpoint: from.to_string(),
                        problem: format!(
                            "the JSON has no string field `{field}` (credential_source.format.subject_token_field_name)"
                        ),
                    }),
                }
            }
        }
    }
}

impl Executable {
    /// `json` is the `credential_source.executable` object.
    fn parse(json: &CredentialsJson) -> Result<Self> {
        let command = json
            .required_or("command", "the command that prints the token")?
            .trim()
            .to_string();
        let timeout = match json.get("timeout_millis") {
            None | Some(Value::Null) => EXECUTABLE_TIMEOUT,
            Some(v) => Duration::from_millis(
                v.as_u64()
                    .filter(|ms| EXECUTABLE_TIMEOUT_RANGE.contains(ms))
                    .ok_or_else(|| {
                        json.invalid(
                            "timeout_millis",
                            "must be a number of milliseconds from 5000 to 120000".into(),
                        )
                    })?,
            ),
        };
        let output_file = json
            .optional("output_file")?
            .map(|file| PathBuf::from(file.trim()));
        Ok(Executable {
            command,
            timeout,
            output_file,
        })
    }

    fn program(&self) -> &str {
        self.command.split_whitespace().next().unwrap_or_default()
    }

    async fn subject_token(&self, account: &ExternalAccount) -> Result<String> {
        let inner = &*account.inner;
        if inner.env.var(ALLOW_EXECUTABLES).as_deref() != Some("1") {
            return Err(Error::EnvVar {
                name: ALLOW_EXECUTABLES.into(),
                problem: format!(
                    "must be `1` to run the executable `{}` named by the credentials' credential_source.executable: \
                     set it only if you trust that file",
                    self.program()
                ),
            });
        }
        if let Some(token) = self.cached_response().await? {
            tracing::debug!(output_file = ?self.output_file, "subject token from the executable's output file");
            return Ok(token);
        }
        let mut parts = self.command.split_whitespace();
        let program = parts.next().unwrap_or_default();
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(parts)
            .env("GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE", &inner.audience)
            .env(
                "GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE",
                &inner.subject_token_type,
            )
            .env("GOOGLE_EXTERNAL_ACCOUNT_INTERACTIVE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(imp) = &inner.impersonation {
            cmd.env("GOOGLE_EXTERNAL_ACCOUNT_IMPERSONATED_EMAIL", &imp.target);
        }
        if let Some(out) = &self.output_file {
            cmd.env("GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE", out);
        }
        let what = format!("executable `{program}`");
        let child = cmd.spawn().map_err(|e| match e.kind() {
            // A command that is not there or not executable is a mistake in
            // the credentials file, not trouble at run time.
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                Error::config(format!(
                    "cannot run the {what}: {e}: fix credential_source.executable.command \
                     (an absolute path to an executable file)"
                ))
            }
            _ => Error::Other {
                context: format!("cannot run the {what} (credential_source.executable.command)"),
                source: Some(std::sync::Arc::new(e)),
            },
        })?;
        // Dropping the child on timeout kills it (kill_on_drop).
        let output = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => {
                return Err(Error::Other {
                    context: format!("the {what} failed"),
                    source: Some(std::sync::Arc::new(e)),
                });
            }
            Err(_) => {
                return Err(Error::Transport {
                    endpoint: what,
                    source: std::sync::Arc::new(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "it did not finish within {} ms (timeout_millis)",
                            self.timeout.as_millis()
                        ),
                    )),
                });
            }
        };
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let first = stderr
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or_default();
            let first: String = scrub(first).chars().take(200).collect();
            return Err(Error::Other {
                context: format!(
                    "the {what} exited with {}{}",
                    output.status,
                    if first.is_empty() {
                        String::new()
                    } else {
                        format!(": {first}")
                    }
                ),
                source: None,
            });
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stdout = stdout.trim();
        if stdout.is_empty()
            && let Some(out) = &self.output_file
        {
            let text = crate::credentials_json::read_text_file(out)?;
            return self
                .parse_response(&text, &format!("the output file {}", out.display()))
                .map_err(Rejected::into_error);
        }
        self.parse_response(stdout, &format!("the output of the {what}"))
            .map_err(Rejected::into_error)
    }

    /// A valid, unexpired response in the output file, if any. A missing
    /// or empty file, an expired token or a failure response mean "run the
    /// executable"; a malformed file is an error.
    async fn cached_response(&self) -> Result<Option<String>> {
        let Some(path) = &self.output_file else {
            return Ok(None);
        };
        let text = match tokio::fs::read_to_string(path).await {
            Ok(text) if !text.trim().is_empty() => text,
            _ => return Ok(None),
        };
        match self.parse_response(&text, &format!("the output file {}", path.display())) {
            Ok(token) => Ok(Some(token)),
            Err(Rejected::Stale(_)) => Ok(None),
            Err(Rejected::Invalid(e)) => Err(e),
        }
    }

    /// The executable-sourced credentials response (version 1).
    fn parse_response(&self, text: &str, from: &str) -> std::result::Result<String, Rejected> {
        let invalid = |problem: String| {
            Rejected::Invalid(Error::Protocol {
                endpoint: from.to_string(),
                problem,
            })
        };
        let value: Value = serde_json::from_str(text)
            .map_err(|e| invalid(json_problem(&e).replace("the answer", "the response")))?;
        let missing = |name: &str| invalid(format!("the response has no `{name}` field"));
        let version = value
            .get("version")
            .and_then(Value::as_u64)
            .ok_or_else(|| missing("version"))?;
        let success = value
            .get("success")
            .and_then(Value::as_bool)
            .ok_or_else(|| missing("success"))?;
        if !success {
            let code = value.get("code").and_then(Value::as_str);
            let message = value.get("message").and_then(Value::as_str);
            return Err(match (code, message) {
                (Some(code), Some(message)) => Rejected::Stale(Error::Other {
                    context: format!("{from} reports a failure: {code}: {}", scrub(message)),
                    source: None,
                }),
                _ => invalid("an unsuccessful response must have `code` and `message`".into()),
            });
        }
        if version == 0 || version > EXECUTABLE_VERSION {
            return Err(invalid(format!(
                "the response version {version} is not supported (only 1)"
            )));
        }
        let expiration = value.get("expiration_time").and_then(Value::as_u64);
        if expiration.is_none() && self.output_file.is_some() {
            // Without an expiry a cached response can never be trusted.
            return Err(Rejected::Stale(Error::Protocol {
                endpoint: from.to_string(),
                problem: "the response has no `expiration_time`, required with an `output_file`"
                    .into(),
            }));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        if expiration.is_some_and(|exp| exp < now) {
            return Err(Rejected::Stale(Error::Protocol {
                endpoint: from.to_string(),
                problem: "the token has expired (`expiration_time` is past)".into(),
            }));
        }
        let token_type = value
            .get("token_type")
            .and_then(Value::as_str)
            .ok_or_else(|| missing("token_type"))?;
        let field = match token_type {
            "urn:ietf:params:oauth:token-type:jwt"
            | "urn:ietf:params:oauth:token-type:id_token" => "id_token",
            "urn:ietf:params:oauth:token-type:saml2" => "saml_response",
            other => {
                return Err(invalid(format!(
                    "the response's token_type `{other}` is not supported"
                )));
            }
        };
        match value.get(field).and_then(Value::as_str) {
            Some(token) if !token.trim().is_empty() => Ok(token.trim().to_string()),
            _ => Err(missing(field)),
        }
    }
}

/// Why an executable response was not used.
enum Rejected {
    /// Expired, or a failure report: from the cache, run the executable again.
    Stale(Error),
    /// Malformed: an error either way.
    Invalid(Error),
}

impl Rejected {
    fn into_error(self) -> Error {
        match self {
            Rejected::Stale(e) | Rejected::Invalid(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exe(output_file: bool) -> Executable {
        Executable {
            command: "/bin/true".into(),
            timeout: EXECUTABLE_TIMEOUT,
            output_file: output_file.then(|| PathBuf::from("/tmp/out.json")),
        }
    }

    #[test]
    fn executable_responses_follow_the_spec() {
        let far = 4_102_444_800u64;
        let ok = format!(
            r#"{{"version":1,"success":true,"token_type":"urn:ietf:params:oauth:token-type:id_token","id_token":"tok","expiration_time":{far}}}"#
        );
        assert_eq!(
            exe(true).parse_response(&ok, "x").ok().as_deref(),
            Some("tok")
        );
        let saml = r#"{"version":1,"success":true,"token_type":"urn:ietf:params:oauth:token-type:saml2","saml_response":"PHNhbWw+"}"#;
        assert_eq!(
            exe(false).parse_response(saml, "x").ok().as_deref(),
            Some("PHNhbWw+")
        );
        // Expired and failure responses are stale (a cache is skipped).
        let expired = r#"{"version":1,"success":true,"token_type":"urn:ietf:params:oauth:token-type:jwt","id_token":"t","expiration_time":1}"#;
        assert!(matches!(
            exe(true).parse_response(expired, "x"),
            Err(Rejected::Stale(_))
        ));
        let failed =
            r#"{"version":1,"success":false,"code":"401","message":"Caller not authorized."}"#;
        match exe(false).parse_response(failed, "x") {
            Err(Rejected::Stale(e)) => {
                assert!(e.to_string().contains("401: Caller not authorized."), "{e}")
            }
            _ => panic!("a failure response"),
        }
        // No expiry with an output file: never trusted.
        let no_exp = r#"{"version":1,"success":true,"token_type":"urn:ietf:params:oauth:token-type:jwt","id_token":"t"}"#;
        assert!(matches!(
            exe(true).parse_response(no_exp, "x"),
            Err(Rejected::Stale(_))
        ));
        assert_eq!(
            exe(false).parse_response(no_exp, "x").ok().as_deref(),
            Some("t")
        );
        for bad in [
            "not json",
            r#"{"success":true}"#,
            r#"{"version":2,"success":true}"#,
            r#"{"version":1,"success":false}"#,
            r#"{"version":1,"success":true,"token_type":"urn:x"}"#,
            r#"{"version":1,"success":true,"token_type":"urn:ietf:params:oauth:token-type:jwt"}"#,
        ] {
            assert!(
                matches!(
                    exe(false).parse_response(bad, "x"),
                    Err(Rejected::Invalid(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn principal_sets_come_from_the_audience() {
        assert_eq!(
            principal_set("//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/x").as_deref(),
            Some("principalSet://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/*")
        );
        assert_eq!(principal_set("nope"), None);
    }
}
