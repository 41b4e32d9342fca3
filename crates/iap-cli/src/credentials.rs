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
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(p) => write!(f, "{} (from --credentials)", p.display()),
            Origin::SavedLogin(p) => write!(f, "{} (saved by `iap login`)", p.display()),
            Origin::Adc(o) => write!(f, "{o}"),
        }
    }
}

/// A command's token source and where it came from.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The source, impersonation applied.
    pub source: Arc<dyn TokenSource>,
    /// Where the underlying credential came from.
    pub origin: Origin,
}

/// Finds the credential for a command; see the module docs for the order.
pub async fn resolve(args: &CredentialArgs) -> CliResult<Resolved> {
    let (source, origin) = base(args).await?;
    tracing::info!(credentials = %origin, "using credentials");
    let source = match &args.impersonate_service_account {
        Some(email) => impersonate(&origin, email, args.iam_endpoint.as_deref())?,
        None if args.self_signed => self_signed(&origin)?,
        None => source,
    };
    Ok(Resolved { source, origin })
}

async fn base(args: &CredentialArgs) -> CliResult<(Arc<dyn TokenSource>, Origin)> {
    if let Some(path) = &args.credentials {
        let source = iap_token::adc::from_file(path)?;
        return Ok((source, Origin::Flag(path.clone())));
    }
    let env_var_set =
        std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").is_some_and(|v| !v.is_empty());
    if !env_var_set && let Some(path) = config::saved_credentials() {
        let source = iap_token::adc::from_file(&path).map_err(|e| {
            Failure::from(e).context("the credentials saved by `iap login` are unusable (run `iap login` again or `iap logout`)")
        })?;
        return Ok((source, Origin::SavedLogin(path)));
    }
    let found = iap_token::adc::find().await?;
    Ok((found.source, Origin::Adc(found.origin)))
}

/// A self-signed JWT source from the service-account key found at `origin`.
fn self_signed(origin: &Origin) -> CliResult<Arc<dyn TokenSource>> {
    use iap_token::adc::CredentialOrigin as Adc;
    use iap_token::source::self_signed::SelfSignedJwtSource;
    match origin {
        Origin::Flag(path)
        | Origin::SavedLogin(path)
        | Origin::Adc(Adc::EnvVar(path) | Adc::WellKnownFile(path)) => {
            let source = SelfSignedJwtSource::from_file(path).map_err(|e| {
                Failure::from(e).context("--self-signed needs a service-account key file")
            })?;
            Ok(Arc::new(source))
        }
        other => Err(Failure::new(format!(
            "--self-signed needs a service-account key file, but the credentials are {other}: pass --credentials KEY.json"
        ))),
    }
}

/// An impersonation source for `email`, calling IAM with access tokens of
/// the credential found at `origin`.
fn impersonate(
    origin: &Origin,
    email: &str,
    iam_endpoint: Option<&str>,
) -> CliResult<Arc<dyn TokenSource>> {
    use iap_token::adc::CredentialOrigin as Adc;
    use iap_token::source::impersonated::ImpersonatedSource;
    let caller: Arc<dyn AccessTokenSource> = match origin {
        Origin::Flag(path)
        | Origin::SavedLogin(path)
        | Origin::Adc(Adc::EnvVar(path) | Adc::WellKnownFile(path)) => {
            let bytes = std::fs::read(path).map_err(|e| {
                Failure::new(format!(
                    "cannot read credentials file {}: {e}",
                    path.display()
                ))
            })?;
            iap_token::adc::access_token_source_from_json(bytes).map_err(|e| {
                Failure::from(e).context(format!(
                    "cannot impersonate {email} with {}",
                    path.display()
                ))
            })?
        }
        Origin::Adc(Adc::MetadataServer) => {
            Arc::new(iap_token::source::metadata::MetadataSource::from_env(
                &iap_token::adc::Environment::process(),
            )?)
        }
        Origin::Adc(other) => {
            return Err(Failure::new(format!(
                "cannot impersonate {email} with the credentials from {other}"
            )));
        }
    };
    let context = |e| Failure::from(e).context("--impersonate-service-account");
    let mut source = ImpersonatedSource::from_arc(email, caller).map_err(context)?;
    if let Some(endpoint) = iam_endpoint {
        source = source.with_iam_endpoint(endpoint).map_err(context)?;
    }
    Ok(Arc::new(source))
}
