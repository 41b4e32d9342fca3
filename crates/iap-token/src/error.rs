//! The one error type of the toolkit, with transient/permanent classification.
//!
//! Messages name the file, field or endpoint at fault and say what to do.
//! They never contain a token, refresh token, client secret or private key.

use std::path::PathBuf;
use std::sync::Arc;

/// A shared error kept as the `source` of an [`Error`], so the chain
/// survives and [`Error`] stays cheap to clone.
pub type BoxError = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong getting or using an IAP ID token.
///
/// `Clone` (causes are shared), so every caller waiting on one token fetch
/// gets the same error with its whole chain ([`std::error::Error::source`]).
/// Use [`Error::is_transient`] to decide whether trying again later may
/// help, and [`Error::is_configuration`] to tell a mistake in what the
/// program was given (a file, a variable, an argument) from trouble at run
/// time.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A credentials file could not be read.
    #[error("cannot read credentials file {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: Arc<std::io::Error>,
    },

    /// A file holding credentials could not be written.
    #[error("cannot write credentials file {path}: {source}")]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: Arc<std::io::Error>,
    },

    /// A credentials file (or value) is not what it should be.
    #[error("{}{}{problem}", .path.as_ref().map(|p| format!("credentials file {}: ", p.display())).unwrap_or_else(|| "credentials: ".into()), if .field.is_empty() { String::new() } else { format!("field `{}` ", .field) })]
    InvalidCredentials {
        /// The file, when the credentials came from one.
        path: Option<PathBuf>,
        /// The JSON field at fault (`type`, `private_key`, ...); empty when
        /// the problem is the whole document (e.g. not JSON at all).
        field: String,
        /// What is wrong and what to do about it.
        problem: String,
    },

    /// The credential type is known to Google but not supported by this source or release.
    #[error("{what} is not supported{}: {hint}", .path.as_ref().map(|p| format!(" (in {})", p.display())).unwrap_or_default())]
    Unsupported {
        /// What is not supported.
        what: String,
        /// The file it came from.
        path: Option<PathBuf>,
        /// What to do instead.
        hint: String,
    },

    /// No credentials were found by Application Default Credentials discovery.
    #[error(
        "no Google credentials found: set GOOGLE_APPLICATION_CREDENTIALS to a key file, run `gcloud auth application-default login` or `iap login`, or run on Google Cloud"
    )]
    NoCredentials,

    /// An endpoint that would receive credentials is not `https` (nor loopback, nor the metadata server).
    #[error(
        "refusing to send credentials to {url}: use an https URL (plain http is only allowed for loopback and the metadata server)"
    )]
    InsecureEndpoint {
        /// The offending URL.
        url: String,
    },

    /// An endpoint answered with an error (Google's `error` / `error_description`, or the status).
    #[error("{endpoint} answered {status}: {error}{}{}", .description.as_ref().map(|d| format!(": {d}")).unwrap_or_default(), .hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
    Endpoint {
        /// The endpoint (URL without query).
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// Google's `error` code (e.g. `invalid_grant`), or the status reason.
        error: String,
        /// Google's `error_description` or message, if any.
        description: Option<String>,
        /// Whether trying again may succeed (see `docs/errors.md`).
        transient: bool,
        /// What the error most likely means for this credential and what to
        /// do, added by the source that called the endpoint.
        hint: Option<String>,
    },

    /// The request to an endpoint failed before an answer (connect, timeout, reset).
    #[error("request to {endpoint} failed")]
    Transport {
        /// The endpoint (URL without query).
        endpoint: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },

    /// An endpoint answered 2xx with a body we could not understand.
    #[error("unexpected answer from {endpoint}: {problem}")]
    Protocol {
        /// The endpoint (URL without query).
        endpoint: String,
        /// What was wrong.
        problem: String,
    },

    /// An environment variable that should hold a value does not.
    #[error("environment variable {name} {problem}")]
    EnvVar {
        /// The variable.
        name: String,
        /// What is wrong and what to do about it.
        problem: String,
    },

    /// A mistake in how the toolkit was configured: an argument, a URL, a
    /// builder setting that cannot work. Fix the program or its flags;
    /// trying again does not help.
    #[error("{0}")]
    Config(String),

    /// A token is not a well-formed JWT with an `exp` claim.
    #[error("malformed ID token: {0}")]
    MalformedToken(String),

    /// A desktop login did not complete.
    #[error("login failed: {0}")]
    Login(String),

    /// Anything else, with its cause kept.
    #[error("{context}")]
    Other {
        /// What we were doing.
        context: String,
        /// Why it failed.
        #[source]
        source: Option<BoxError>,
    },
}

impl Error {
    /// Whether trying again later may succeed (network trouble, 5xx, 408,
    /// 429, `internal_failure`...). Permanent errors need a fix of the
    /// configuration or credentials.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Endpoint { transient, .. } => *transient,
            Error::Transport { .. } => true,
            _ => false,
        }
    }

    /// Whether the error is a configuration mistake: [`Error::Config`], and
    /// the credential and environment problems ([`Error::InvalidCredentials`],
    /// [`Error::Unsupported`], [`Error::NoCredentials`],
    /// [`Error::InsecureEndpoint`], [`Error::EnvVar`]). These need a fix of
    /// what the program was given, never a retry.
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            Error::Config(_)
                | Error::InvalidCredentials { .. }
                | Error::Unsupported { .. }
                | Error::NoCredentials
                | Error::InsecureEndpoint { .. }
                | Error::EnvVar { .. }
        )
    }

    /// An [`Error::Config`].
    pub(crate) fn config(problem: impl Into<String>) -> Self {
        Error::Config(problem.into())
    }

    /// Adds a hint to an [`Error::Endpoint`] when `hint` finds one for its
    /// `error` code and description; other errors pass through unchanged.
    pub(crate) fn with_endpoint_hint(
        mut self,
        hint: impl FnOnce(&str, Option<&str>) -> Option<String>,
    ) -> Self {
        if let Error::Endpoint {
            error,
            description,
            hint: slot,
            ..
        } = &mut self
            && slot.is_none()
        {
            *slot = hint(error, description.as_deref());
        }
        self
    }
}

/// Shorthand for `Result<T, iap_token::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
