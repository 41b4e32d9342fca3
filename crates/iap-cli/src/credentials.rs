//! Which credential a command uses (see [`crate::cli::CREDENTIALS_HELP`]).
//!
//! First match wins: `--credentials FILE`; `$GOOGLE_APPLICATION_CREDENTIALS`;
//! the credentials saved by `iap login`; the rest of Application Default
//! Credentials (gcloud's file, then the metadata server). The saved login
//! comes after the environment variable, an explicit choice for this shell,
//! and before gcloud's file, a machine-wide default that `iap login` was run
//! to override. `--impersonate-service-account` then wraps the credential;
//! `--self-signed` signs with the service-account key found instead.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use iap_token::TokenSource;
use iap_token::access_token::AccessTokenSource;

use crate::cli::CredentialArgs;
use crate::config;
use crate::failure::{CliResult, Failure};

/// Where the credential came from, for logs and messages.
#[derive(Debug, Clone)]
pub enum Origin {
    /// `--credentials FILE`.
    Flag(PathBuf),
    /// Saved by `iap login`.
    SavedLogin(PathBuf),
    /// Application Default Credentials.
    Adc(iap_token::adc::CredentialOrigin),
    /// `--token-file FILE`: a token obtained elsewhere.
    TokenFile(PathBuf),
    /// `--token -`: a token read from stdin.
    Stdin,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(p) => write!(f, "{} (from --credentials)", p.display()),
            Origin::SavedLogin(p) => write!(f, "{} (saved by `iap login`)", p.display()),
            Origin::Adc(o) => write!(f, "{o}"),
            Origin::TokenFile(p) => write!(f, "the token in {} (from --token-file)", p.display()),
            Origin::Stdin => f.write_str("the token read from stdin (--token -)"),
        }
    }
}

impl Origin {
    /// The credentials file, if the credential is one.
    fn file(&self) -> Option<&PathBuf> {
        use iap_token::adc::CredentialOrigin as Adc;
        match self {
            Origin::Flag(path)
            | Origin::SavedLogin(path)
            | Origin::Adc(Adc::EnvVar(path) | Adc::WellKnownFile(path)) => Some(path),
            _ => None,
        }
    }
}

/// What kind of token a command sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A Google-signed ID token, minted by the credential.
    IdToken,
    /// A service-account JWT signed locally with a key file.
    SelfSignedKey,
    /// A service-account JWT signed by IAM signJwt as this account.
    SignJwt(String),
    /// A token obtained elsewhere, sent as is.
    Static,
}

/// A command's token source and where it came from.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The source, impersonation applied.
    pub source: Arc<dyn TokenSource>,
    /// Where the underlying credential came from.
    pub origin: Origin,
    /// What the source sends.
    pub kind: Kind,
    /// The audience to use when none is given, known without asking IAP:
    /// a static token's own `aud`; the client ID of user credentials
    /// refreshed without `audience`.
    pub implied_audience: Option<iap_token::Audience>,
    /// `--timeout`: the most one token fetch may take.
    pub deadline: std::time::Duration,
}

/// Finds the credential for a command; see the module docs for the order.
pub async fn resolve(args: &CredentialArgs) -> CliResult<Resolved> {
    if let Some(found) = static_token(args).await? {
        return Ok(found);
    }
    let (source, origin) = base(args).await?;
    tracing::info!(credentials = %origin, "using credentials");
    let (source, kind) = match (&args.impersonate_service_account, args.self_signed) {
        (Some(email), true) => (
            Arc::new(sign_jwt(&origin, Some(email), args.iam_endpoint.as_deref()).await?)
                as Arc<dyn TokenSource>,
            Kind::SignJwt(email.clone()),
        ),
        (Some(email), false) => (
            impersonate(&origin, email, args.iam_endpoint.as_deref())?,
            Kind::IdToken,
        ),
        (None, true) if is_key_file(&origin) => (self_signed(&origin)?, Kind::SelfSignedKey),
        (None, true) => {
            let source = sign_jwt(&origin, None, args.iam_endpoint.as_deref()).await?;
            let email = source.email().to_owned();
            (
                Arc::new(source) as Arc<dyn TokenSource>,
                Kind::SignJwt(email),
            )
        }
        (None, false) if args.no_audience_param => {
            let (source, client_id) = without_audience_param(&origin)?;
            return Ok(Resolved {
                source,
                origin,
                kind: Kind::IdToken,
                implied_audience: Some(iap_token::Audience::new(client_id)),
                deadline: std::time::Duration::from_secs(args.timeout),
            });
        }
        (None, false) => (source, Kind::IdToken),
    };
    Ok(Resolved {
        source,
        origin,
        kind,
        implied_audience: None,
        deadline: std::time::Duration::from_secs(args.timeout),
    })
}

/// `--token-file FILE` or `--token -`.
async fn static_token(args: &CredentialArgs) -> CliResult<Option<Resolved>> {
    use iap_token::source::static_token::StaticTokenSource;
    if let Some(path) = &args.token_file {
        let source = StaticTokenSource::from_file(path.clone());
        let token = source.fetch().await?;
        return Ok(Some(Resolved {
            source: Arc::new(source),
            origin: Origin::TokenFile(path.clone()),
            kind: Kind::Static,
            implied_audience: token.claims().aud.as_deref().map(iap_token::Audience::new),
            deadline: std::time::Duration::from_secs(args.timeout),
        }));
    }
    match args.token.as_deref() {
        None => Ok(None),
        Some("-") => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map_err(|e| Failure::new(format!("cannot read the token from stdin: {e}")))?;
            let source = StaticTokenSource::new(text.trim()).map_err(|e| {
                Failure::from(e).context("--token -: stdin does not hold an ID token")
            })?;
            let token = source.fetch().await?;
            Ok(Some(Resolved {
                source: Arc::new(source),
                origin: Origin::Stdin,
                kind: Kind::Static,
                implied_audience: token.claims().aud.as_deref().map(iap_token::Audience::new),
                deadline: std::time::Duration::from_secs(args.timeout),
            }))
        }
        Some(_) => Err(Failure::new(
            "--token takes `-` (read the token from stdin) or use --token-file FILE: \
             a token on the command line is visible to every user of this machine",
        )
        .with_code(2)),
    }
}

async fn base(args: &CredentialArgs) -> CliResult<(Arc<dyn TokenSource>, Origin)> {
    if let Some(path) = &args.credentials {
        let source = from_file(path)?;
        return Ok((source, Origin::Flag(path.clone())));
    }
    let env_var_set =
        std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").is_some_and(|v| !v.is_empty());
    if !env_var_set && let Some(path) = config::saved_credentials() {
        let source = from_file(&path).map_err(|e| {
            Failure::from(e).context("the credentials saved by `iap login` are unusable (run `iap login` again or `iap logout`)")
        })?;
        return Ok((source, Origin::SavedLogin(path)));
    }
    let found = iap_token::adc::find().await?;
    let origin = Origin::Adc(found.origin);
    // With --cacert, a file found by ADC is read again so that its token
    // endpoint trusts the extra roots too.
    let source = match (crate::tls::roots(), origin.file()) {
        (Some(_), Some(path)) => from_file(path)?,
        _ => found.source,
    };
    Ok((source, origin))
}

/// A source from a credentials file; with `--cacert`, every endpoint it
/// calls (nested source credentials included) is reached through a client
/// trusting it.
fn from_file(path: &std::path::Path) -> iap_token::Result<Arc<dyn TokenSource>> {
    match crate::tls::roots() {
        Some(roots) => iap_token::adc::from_file_with_http_client(path, roots.http_client()?),
        None => iap_token::adc::from_file(path),
    }
}

/// The `type` of the credentials file at `origin`, if it is a readable file.
fn file_type(origin: &Origin) -> Option<String> {
    let bytes = std::fs::read(origin.file()?).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("type")?.as_str().map(str::to_owned)
}

fn is_key_file(origin: &Origin) -> bool {
    file_type(origin).as_deref() == Some("service_account")
}

/// `--no-audience-param`: the user credential at `origin`, refreshing
/// without `audience`.
fn without_audience_param(origin: &Origin) -> CliResult<(Arc<dyn TokenSource>, String)> {
    use iap_token::source::authorized_user::AuthorizedUserSource;
    match (origin.file(), file_type(origin).as_deref()) {
        (Some(path), Some("authorized_user")) => {
            let source = AuthorizedUserSource::from_file(path)?.with_send_audience(false);
            let client_id = source.user().client_id().to_owned();
            Ok((Arc::new(source), client_id))
        }
        _ => Err(Failure::new(format!(
            "--no-audience-param applies to user credentials (`authorized_user`, from `iap login` or \
             `gcloud auth application-default login`), but the credentials are {origin}"
        ))
        .with_code(2)),
    }
}

/// A self-signed JWT source from the service-account key found at `origin`.
fn self_signed(origin: &Origin) -> CliResult<Arc<dyn TokenSource>> {
    use iap_token::source::self_signed::SelfSignedJwtSource;
    let path = origin
        .file()
        .ok_or_else(|| Failure::new("--self-signed: no service-account key file"))?;
    let source = SelfSignedJwtSource::from_file(path)
        .map_err(|e| Failure::from(e).context("--self-signed needs a service-account key file"))?;
    Ok(Arc::new(source))
}

/// The caller's access tokens for IAM: the credential found at `origin`.
fn caller(origin: &Origin, doing: &str) -> CliResult<Arc<dyn AccessTokenSource>> {
    use iap_token::adc::CredentialOrigin as Adc;
    if let Some(path) = origin.file() {
        let bytes = std::fs::read(path).map_err(|e| {
            Failure::new(format!(
                "cannot read credentials file {}: {e}",
                path.display()
            ))
        })?;
        return iap_token::adc::access_token_source_from_json(bytes).map_err(|e| {
            Failure::from(e).context(format!("cannot {doing} with {}", path.display()))
        });
    }
    match origin {
        Origin::Adc(Adc::MetadataServer) => Ok(Arc::new(
            iap_token::source::metadata::MetadataSource::from_env(
                &iap_token::adc::Environment::process(),
            )?,
        )),
        other => Err(Failure::new(format!(
            "cannot {doing} with the credentials from {other}"
        ))),
    }
}

/// A signJwt source: as `email` with the credential at `origin` as the
/// caller, or (no email) as the metadata server's own service account, or
/// as the service account the credential itself is.
async fn sign_jwt(
    origin: &Origin,
    email: Option<&str>,
    iam_endpoint: Option<&str>,
) -> CliResult<iap_token::source::sign_jwt::SignJwtSource> {
    use iap_token::adc::CredentialOrigin as Adc;
    use iap_token::source::metadata::MetadataSource;
    use iap_token::source::sign_jwt::SignJwtSource;
    let context = |e: iap_token::Error| Failure::from(e).context("--self-signed");
    let endpoint = |source: SignJwtSource| match iam_endpoint {
        Some(e) => source.with_iam_endpoint(e).map_err(context),
        None => Ok(source),
    };
    if email.is_none() && matches!(origin, Origin::Adc(Adc::MetadataServer)) {
        let metadata = MetadataSource::from_env(&iap_token::adc::Environment::process())?;
        return endpoint(
            SignJwtSource::from_metadata(metadata)
                .await
                .map_err(context)?,
        );
    }
    if email.is_none() && file_type(origin).as_deref() == Some("impersonated_service_account") {
        return impersonated_file(origin, iam_endpoint);
    }
    let caller = caller(origin, "sign service-account JWTs")?;
    let email = match email.map(str::to_owned).or_else(|| {
        caller
            .principal()
            .filter(|p| p.ends_with(".gserviceaccount.com"))
    }) {
        Some(email) => email,
        None => {
            return Err(Failure::new(format!(
                "--self-signed with the credentials {origin} needs the service account to sign as: \
                 add --impersonate-service-account EMAIL (the caller needs roles/iam.serviceAccountTokenCreator on it)"
            ))
            .with_code(2));
        }
    };
    endpoint(SignJwtSource::from_arc(email, caller).map_err(context)?)
}

/// An impersonation source for `email`, calling IAM with access tokens of
/// the credential found at `origin`.
fn impersonate(
    origin: &Origin,
    email: &str,
    iam_endpoint: Option<&str>,
) -> CliResult<Arc<dyn TokenSource>> {
    use iap_token::source::impersonated::ImpersonatedSource;
    let caller = caller(origin, &format!("impersonate {email}"))?;
    let context = |e| Failure::from(e).context("--impersonate-service-account");
    let mut source = ImpersonatedSource::from_arc(email, caller).map_err(context)?;
    if let Some(endpoint) = iam_endpoint {
        source = source.with_iam_endpoint(endpoint).map_err(context)?;
    }
    Ok(Arc::new(source))
}

/// A signJwt source from an `impersonated_service_account` file: JWTs of
/// its target, its `source_credentials` as the caller, its delegates, and
/// the IAM endpoint of its `service_account_impersonation_url` (unless
/// `iam_endpoint` overrides it).
fn impersonated_file(
    origin: &Origin,
    iam_endpoint: Option<&str>,
) -> CliResult<iap_token::source::sign_jwt::SignJwtSource> {
    use iap_token::source::sign_jwt::SignJwtSource;
    let path = origin
        .file()
        .ok_or_else(|| Failure::new("--self-signed: no credentials file"))?;
    let unusable = |why: &str| {
        Failure::new(format!(
            "--self-signed: {} is not a usable impersonated_service_account file ({why})",
            path.display()
        ))
    };
    let bytes = std::fs::read(path).map_err(|e| unusable(&e.to_string()))?;
    let json: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| unusable(&e.to_string()))?;
    let url = json["service_account_impersonation_url"]
        .as_str()
        .ok_or_else(|| unusable("no service_account_impersonation_url"))?;
    let (endpoint, rest) = url
        .split_once("/v1/projects/")
        .ok_or_else(|| unusable("service_account_impersonation_url has no /v1/projects/"))?;
    let target = rest
        .split_once("/serviceAccounts/")
        .and_then(|(_, t)| t.split(':').next())
        .map(|t| t.replace("%40", "@"))
        .filter(|t| t.contains('@'))
        .ok_or_else(|| unusable("service_account_impersonation_url names no service account"))?;
    let source = json
        .get("source_credentials")
        .filter(|v| v.is_object())
        .ok_or_else(|| unusable("no source_credentials"))?;
    let caller = iap_token::adc::access_token_source_from_json(source.to_string())
        .map_err(|e| Failure::from(e).context(format!("--self-signed with {}", path.display())))?;
    let delegates: Vec<&str> = json["delegates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d.as_str())
        .collect();
    SignJwtSource::from_arc(target, caller)
        .and_then(|s| s.with_iam_endpoint(iam_endpoint.unwrap_or(endpoint)))
        .and_then(|s| s.with_delegates(delegates))
        .map_err(|e| Failure::from(e).context("--self-signed"))
}
