//! Which credential a command uses (see [`crate::cli::CREDENTIALS_HELP`]).
//!
//! First match wins: `--credentials FILE`; `$GOOGLE_APPLICATION_CREDENTIALS`;
//! the credentials saved by `iap login`; the rest of Application Default
//! Credentials (gcloud's file, then the metadata server). The saved login
//! comes after the environment variable, an explicit choice for this shell,
//! and before gcloud's file, a machine-wide default that `iap login` was run
//! to override. `--impersonate-service-account` then wraps the credential.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use iap_token::TokenSource;

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
    Adc(iap_token::adc::Origin),
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
        Some(email) => impersonate(source, email)?,
        None => source,
    };
    Ok(Resolved { source, origin })
}

async fn base(args: &CredentialArgs) -> CliResult<(Arc<dyn TokenSource>, Origin)> {
    if let Some(path) = &args.credentials {
        let source = iap_token::adc::from_file(path)?;
        return Ok((source, Origin::Flag(path.clone())));
    }
    let env_var_set = std::env::var_os(iap_token::adc::GOOGLE_APPLICATION_CREDENTIALS).is_some_and(|v| !v.is_empty());
    if !env_var_set && let Some(path) = config::saved_credentials() {
        let source = iap_token::adc::from_file(&path).map_err(|e| {
            Failure::from(e).context("the credentials saved by `iap login` are unusable (run `iap login` again or `iap logout`)")
        })?;
        return Ok((source, Origin::SavedLogin(path)));
    }
    let found = iap_token::adc::find().await?;
    Ok((found.source, Origin::Adc(found.origin)))
}

fn impersonate(_source: Arc<dyn TokenSource>, email: &str) -> CliResult<Arc<dyn TokenSource>> {
    Err(Failure::new(format!(
        "cannot impersonate {email}: service-account impersonation is not available in this build of iap yet; \
         use a key file or ADC for that account instead"
    )))
}
