//! Provisioning: service accounts, OAuth clients and users, workload
//! identity pools, and ADC files of every type.
//!
//! ```
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use iap_emulator::{Adc, Emulator};
//! let emu = Emulator::start().await?;
//! let sa = emu.create_service_account("runner").await?;
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("sa.json");
//! emu.write_adc(&Adc::ServiceAccount(sa), &path)?;
//! // GOOGLE_APPLICATION_CREDENTIALS=path now mints tokens at the emulator.
//! # let key: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
//! # assert_eq!(key["token_uri"], emu.token_uri());
//! # Ok(()) }
//! ```

use std::fmt;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use serde_json::json;

/// How a token was obtained: the label dimension of the token counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Grant {
    /// `POST /token`, `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`.
    JwtBearer,
    /// `POST /token`, `grant_type=refresh_token`.
    RefreshToken,
    /// `POST /token`, `grant_type=authorization_code`.
    AuthorizationCode,
    /// The metadata server (`identity` or `token`).
    Metadata,
    /// IAM Credentials `generateIdToken`.
    GenerateIdToken,
    /// IAM Credentials `generateAccessToken`.
    GenerateAccessToken,
    /// STS token exchange.
    Sts,
    /// Minted directly through [`Emulator::mint_id_token`](crate::Emulator::mint_id_token).
    Direct,
}

impl Grant {
    /// The grant's name as used in counter names and labels.
    pub fn name(self) -> &'static str {
        match self {
            Grant::JwtBearer => "jwt_bearer",
            Grant::RefreshToken => "refresh_token",
            Grant::AuthorizationCode => "authorization_code",
            Grant::Metadata => "metadata",
            Grant::GenerateIdToken => "generate_id_token",
            Grant::GenerateAccessToken => "generate_access_token",
            Grant::Sts => "sts",
            Grant::Direct => "direct",
        }
    }
}

/// A provisioned service account with one key.
#[derive(Clone)]
pub struct ServiceAccount {
    pub(crate) email: String,
    pub(crate) unique_id: String,
    pub(crate) project_id: String,
    pub(crate) private_key_id: String,
    pub(crate) key_json: String,
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("email", &self.email)
            .field("private_key_id", &self.private_key_id)
            .finish_non_exhaustive()
    }
}

impl ServiceAccount {
    /// `NAME@PROJECT.iam.gserviceaccount.com`.
    pub fn email(&self) -> &str {
        &self.email
    }

    /// The numeric unique ID (`client_id` of the key file, `sub` of its tokens).
    pub fn unique_id(&self) -> &str {
        &self.unique_id
    }

    /// The project the account belongs to.
    pub fn project_id(&self) -> &str {
        &self.project_id
    }

    /// The key's ID (`private_key_id`, the `kid` of assertions).
    pub fn private_key_id(&self) -> &str {
        &self.private_key_id
    }

    /// The key file JSON (`type: service_account`, `token_uri` = the
    /// emulator's `/token`). Contains the private key.
    pub fn key_json(&self) -> &str {
        &self.key_json
    }

    /// Writes the key file to `path` atomically with mode 0600.
    pub fn write_key_file(&self, path: impl AsRef<Path>) -> io::Result<()> {
        write_secret_file(path.as_ref(), self.key_json.as_bytes())
    }
}

/// A desktop (installed-app) OAuth client.
#[derive(Clone)]
pub struct OAuthClient {
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    pub(crate) project_id: String,
}

impl fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthClient")
            .field("client_id", &self.client_id)
            .field("project_id", &self.project_id)
            .finish_non_exhaustive()
    }
}

impl OAuthClient {
    /// `NUMBER-RANDOM.apps.googleusercontent.com`.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The client secret (`GOCSPX-...`).
    pub fn client_secret(&self) -> &str {
        &self.client_secret
    }

    /// The project the client belongs to.
    pub fn project_id(&self) -> &str {
        &self.project_id
    }
}

/// A user who consented to a desktop client, with a refresh token.
#[derive(Clone)]
pub struct User {
    pub(crate) email: String,
    pub(crate) sub: String,
    pub(crate) client: OAuthClient,
    pub(crate) refresh_token: String,
    pub(crate) token_uri: String,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("email", &self.email)
            .field("sub", &self.sub)
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl User {
    /// The user's email.
    pub fn email(&self) -> &str {
        &self.email
    }

    /// The user's numeric ID (`sub` claim).
    pub fn sub(&self) -> &str {
        &self.sub
    }

    /// The client the refresh token belongs to.
    pub fn client(&self) -> &OAuthClient {
        &self.client
    }

    /// The refresh token.
    pub fn refresh_token(&self) -> &str {
        &self.refresh_token
    }

    /// The `authorized_user` JSON, as `gcloud auth application-default
    /// login` writes it (plus `token_uri` pointing at the emulator).
    pub fn authorized_user_json(&self) -> String {
        self.authorized_user_value().to_string()
    }

    pub(crate) fn authorized_user_value(&self) -> serde_json::Value {
        json!({
            "type": "authorized_user",
            "client_id": self.client.client_id,
            "client_secret": self.client.client_secret,
            "refresh_token": self.refresh_token,
            "token_uri": self.token_uri,
            "account": self.email,
            "universe_domain": "googleapis.com",
        })
    }
}

/// A workload identity pool provider backed by the emulator's OIDC issuer.
#[derive(Debug, Clone)]
pub struct WorkloadPool {
    pub(crate) project_number: String,
    pub(crate) pool_id: String,
    pub(crate) provider_id: String,
}

impl WorkloadPool {
    /// The STS audience:
    /// `//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/providers/X`.
    pub fn audience(&self) -> String {
        format!(
            "//iam.googleapis.com/projects/{}/locations/global/workloadIdentityPools/{}/providers/{}",
            self.project_number, self.pool_id, self.provider_id
        )
    }

    /// The IAM principal of a federated `subject`, the caller to name in
    /// [`Emulator::allow_impersonation`](crate::Emulator::allow_impersonation).
    pub fn principal(&self, subject: &str) -> String {
        format!(
            "principal://iam.googleapis.com/projects/{}/locations/global/workloadIdentityPools/{}/subject/{}",
            self.project_number, self.pool_id, subject
        )
    }
}

/// Where an `external_account` file finds its subject token.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SubjectTokenSource {
    /// `credential_source.file`: [`Emulator::write_adc`](crate::Emulator::write_adc)
    /// writes a freshly minted subject token to this path.
    File(PathBuf),
    /// `credential_source.url`: the emulator's `/oidc/subject_token` endpoint,
    /// JSON format (`subject_token_field_name: id_token`), which mints a
    /// fresh token on every call.
    Url,
}

/// An Application Default Credentials file to write.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Adc {
    /// `type: service_account`: the account's key file.
    ServiceAccount(ServiceAccount),
    /// `type: authorized_user`: a user's refresh token.
    AuthorizedUser(User),
    /// `type: impersonated_service_account`.
    Impersonated {
        /// `source_credentials`: an `AuthorizedUser` or `ServiceAccount`.
        source: Box<Adc>,
        /// The target service account's email.
        target: String,
        /// Delegate service-account emails, in chain order.
        delegates: Vec<String>,
    },
    /// `type: external_account` (workload identity federation).
    ExternalAccount {
        /// The pool provider.
        pool: WorkloadPool,
        /// The subject its tokens carry.
        subject: String,
        /// Where the subject token comes from.
        source: SubjectTokenSource,
        /// `service_account_impersonation_url` target, if any.
        impersonate: Option<String>,
    },
}

/// One ADC file of every type, written by
/// [`Emulator::write_adc_files`](crate::Emulator::write_adc_files); each one,
/// set as `GOOGLE_APPLICATION_CREDENTIALS`, yields ID tokens (for the
/// default app's audience, or any other).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AdcFiles {
    /// `service_account.json`: account `adc-runner`'s key file.
    pub service_account: PathBuf,
    /// `authorized_user.json`: user `adc-user@example.com` of a desktop
    /// client in the emulator's project.
    pub authorized_user: PathBuf,
    /// `impersonated_service_account.json`: that user impersonating
    /// `adc-target` (what `gcloud auth application-default login
    /// --impersonate-service-account` writes).
    pub impersonated_service_account: PathBuf,
    /// `impersonated_from_service_account.json`: `adc-runner` impersonating
    /// `adc-target`.
    pub impersonated_from_service_account: PathBuf,
    /// `external_account_file.json`: workload identity federation with a
    /// `file` credential source (`subject_token.jwt` beside it), impersonating
    /// `adc-target`.
    pub external_account_file: PathBuf,
    /// `external_account_url.json`: the same with a `url` credential source.
    pub external_account_url: PathBuf,
}

/// Writes `bytes` to `path` atomically (temp file in the same directory,
/// then rename) with mode 0600.
pub(crate) fn write_secret_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = dir.unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        crate::keys::random_hex(6)
    ));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
