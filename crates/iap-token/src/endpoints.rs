//! Google's endpoints, in one place: the defaults every source and the
//! login fall back to when a credentials file names none. Wire facts about
//! each are in `docs/` (see `docs/README.md`).

/// OAuth 2.0 token endpoint (JWT-bearer and refresh grants, the login's
/// code exchange).
pub(crate) const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// OAuth 2.0 authorization endpoint (the desktop login's browser step).
pub(crate) const GOOGLE_AUTH_URI: &str = "https://accounts.google.com/o/oauth2/v2/auth";
/// The host of Google's sign-in, where IAP redirects a browser without a
/// session: audience discovery reads `client_id` only from a redirect there.
pub(crate) const GOOGLE_SIGN_IN_HOST: &str = "accounts.google.com";
/// Security Token Service: workload identity federation's exchange.
pub(crate) const STS_TOKEN_URL: &str = "https://sts.googleapis.com/v1/token";
/// IAM Credentials: impersonation's `generateIdToken` and `generateAccessToken`.
pub(crate) const IAM_CREDENTIALS_ENDPOINT: &str = "https://iamcredentials.googleapis.com";
/// The metadata server's link-local address, when no variable names another.
pub(crate) const DEFAULT_METADATA_HOST: &str = "169.254.169.254";
/// Hosts of the metadata server that may be reached over plain http.
pub(crate) const METADATA_HOSTS: &[&str] = &[
    "metadata.google.internal",
    "169.254.169.254",
    "fd20:ce::254",
];
