//! The command line: every command, flag and its help text.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

/// Credential precedence, shown in `iap --help` and documented in the crate
/// docs: keep the two in step.
pub const CREDENTIALS_HELP: &str = "\
Credentials, first match wins:
  1. --credentials FILE (any Google credentials JSON)
  2. $GOOGLE_APPLICATION_CREDENTIALS
  3. the credentials saved by `iap login` (in $IAP_CONFIG_DIR, else $XDG_CONFIG_HOME/iap, else ~/.config/iap)
  4. gcloud's application default credentials ($CLOUDSDK_CONFIG or ~/.config/gcloud)
  5. the metadata server, when running on Google Cloud ($GCE_METADATA_HOST overrides it)
--impersonate-service-account EMAIL then uses that credential to mint ID tokens for EMAIL.
--self-signed sends a service-account JWT instead of an ID token: signed locally with a
  service-account key file, otherwise by IAM signJwt as the metadata server's service account
  or as --impersonate-service-account EMAIL (the caller needs roles/iam.serviceAccountTokenCreator).
--token-file FILE / --token - use a token obtained elsewhere (a file re-read when it changes, or stdin).
";

/// Call apps behind Google Cloud Identity-Aware Proxy from a terminal.
#[derive(Debug, Parser)]
#[command(name = "iap", version, about, after_long_help = CREDENTIALS_HELP)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,

    /// Also trust the CA certificates in this PEM file, for every connection the command makes
    /// (token endpoints and the app); SSL_CERT_FILE replaces the system's roots instead.
    #[arg(long, global = true, value_name = "FILE", env = "IAP_CACERT")]
    pub cacert: Option<PathBuf>,

    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print an ID token for an IAP app (the JWT, its claims, or a header line).
    #[command(after_long_help = CREDENTIALS_HELP)]
    Token(TokenArgs),
    /// Send one request to an IAP app, like curl, with a token attached.
    #[command(after_long_help = CREDENTIALS_HELP)]
    Curl(CurlArgs),
    /// Sign in as a user (desktop OAuth client, browser, loopback redirect) and save the credentials.
    Login(LoginArgs),
    /// Remove the credentials saved by `iap login`.
    Logout,
    /// Run a local reverse proxy that adds a token to every request to an IAP app.
    #[command(after_long_help = CREDENTIALS_HELP)]
    Proxy(ProxyArgs),
    /// Verify an IAP signed header (x-goog-iap-jwt-assertion) as a service behind IAP would.
    Verify(VerifyArgs),
    /// Run the IAP emulator (Google's token endpoints, metadata server and a gated app) locally.
    Emulator(iap_emulator::standalone::Options),
    /// Walk through everything against an in-process emulator; exits 0 when every step works.
    Demo,
    /// Walk a request to an IAP app step by step and say what to change when IAP refuses it.
    #[command(after_long_help = CREDENTIALS_HELP)]
    Doctor(DoctorArgs),
}

/// Where credentials come from, shared by the commands that need a token.
#[derive(Debug, Clone, Default, Args)]
pub struct CredentialArgs {
    /// The most getting a token may take, every retry included, in seconds
    /// (a token endpoint that never answers fails after this).
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub timeout: u64,

    /// A Google credentials JSON file (service-account key, authorized_user, ...) instead of ADC.
    #[arg(long, value_name = "FILE")]
    pub credentials: Option<PathBuf>,

    /// Mint ID tokens for this service account, using the credentials above as the caller
    /// (with --self-signed: have IAM sign service-account JWTs as this account).
    #[arg(long, value_name = "EMAIL")]
    pub impersonate_service_account: Option<String>,

    /// Send a service-account JWT (audience: the app's URL, `https://HOST/*` unless --audience
    /// names a pattern), signed with the key file found, else by IAM signJwt.
    #[arg(long)]
    pub self_signed: bool,

    /// Use the token in FILE (obtained elsewhere), re-read whenever the file changes.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["credentials", "impersonate_service_account", "self_signed", "token"])]
    pub token_file: Option<PathBuf>,

    /// Use a token obtained elsewhere: `-` reads it from stdin (never pass a token itself on the command line).
    #[arg(long, value_name = "-", conflicts_with_all = ["credentials", "impersonate_service_account", "self_signed"])]
    pub token: Option<String>,

    /// Do not send `audience` in the refresh grant of user credentials: the token's audience is then
    /// the OAuth client itself (an allowlisted desktop client, or gcloud's own).
    #[arg(long, conflicts_with_all = ["self_signed", "token_file", "token"])]
    pub no_audience_param: bool,

    /// The IAM Credentials endpoint for impersonation (the emulator's for tests).
    #[arg(long, env = "IAP_IAM_ENDPOINT", value_name = "URL", hide = true)]
    pub iam_endpoint: Option<String>,
}

/// How requests to an IAP app get their token, shared by `iap curl` and `iap proxy`.
#[derive(Debug, Clone, Default, Args)]
pub struct AppAuthArgs {
    /// The audience (IAP OAuth client ID); found from IAP's redirect when omitted. With
    /// --self-signed, the URL pattern to sign for: an exact URL, `https://HOST/*` (the default,
    /// from the URL) or `https://HOST/PREFIX/*`.
    #[arg(long, value_name = "AUD")]
    pub audience: Option<String>,

    /// Send the token in `Proxy-Authorization`, leaving `Authorization` to the app's own scheme.
    #[arg(long)]
    pub proxy_authorization: bool,

    #[command(flatten)]
    pub creds: CredentialArgs,
}

/// How `iap token` prints the token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum TokenFormat {
    /// The JWT alone on one line.
    #[default]
    Token,
    /// A JSON object: token, claims, expires_at, expires_in.
    Json,
    /// `Authorization: Bearer <JWT>`.
    Header,
}

/// `iap token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The audience: the IAP OAuth client ID (`NNN-xxx.apps.googleusercontent.com`); with
    /// --self-signed, the URL pattern (exact URL, `https://HOST/*` or `https://HOST/PREFIX/*`).
    #[arg(
        long,
        value_name = "AUD",
        conflicts_with = "url",
        required_unless_present = "url"
    )]
    pub audience: Option<String>,

    /// An app URL: the audience is found from IAP's sign-in redirect.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,

    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: TokenFormat,

    #[command(flatten)]
    pub creds: CredentialArgs,
}

/// `iap curl`.
#[derive(Debug, Args)]
pub struct CurlArgs {
    /// The URL of the IAP app.
    pub url: String,

    /// HTTP method (default GET, or POST when data is given).
    #[arg(short = 'X', long = "request", value_name = "METHOD")]
    pub method: Option<String>,

    /// An extra request header, `Name: value`; repeatable.
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    pub headers: Vec<String>,

    /// Request body; `@FILE` reads it from a file (`@-`: stdin). Sets POST and a form content type.
    #[arg(
        short = 'd',
        long = "data",
        value_name = "DATA",
        conflicts_with = "data_binary"
    )]
    pub data: Option<String>,

    /// Request body sent as is; `@FILE` reads it from a file (`@-`: stdin).
    #[arg(long = "data-binary", value_name = "DATA")]
    pub data_binary: Option<String>,

    /// Print the status line and response headers before the body.
    #[arg(short = 'i', long = "include")]
    pub include: bool,

    /// Fail with exit code 22 when the app answers with HTTP 400 or above.
    #[arg(short = 'f', long = "fail")]
    pub fail: bool,

    #[command(flatten)]
    pub auth: AppAuthArgs,
}

/// `iap login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The desktop OAuth client ID.
    #[arg(long, env = "IAP_CLIENT_ID", value_name = "ID")]
    pub client_id: String,

    /// The desktop OAuth client secret (better passed as $IAP_CLIENT_SECRET than on the command line).
    #[arg(
        long,
        env = "IAP_CLIENT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub client_secret: String,

    /// Ask for an ID token for this IAP client ID during login (checks access right away).
    #[arg(long, value_name = "AUD")]
    pub audience: Option<String>,

    /// Do not open a browser; print the URL to open instead.
    #[arg(long)]
    pub no_browser: bool,

    /// Port of the loopback redirect receiver on 127.0.0.1 (default: any free port).
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    pub port: u16,

    /// Google's authorization endpoint (the emulator's for tests).
    #[arg(long, env = "IAP_AUTH_URI", value_name = "URL", hide = true)]
    pub auth_uri: Option<String>,

    /// Google's token endpoint (the emulator's for tests).
    #[arg(long, env = "IAP_TOKEN_URI", value_name = "URL", hide = true)]
    pub token_uri: Option<String>,

    /// How long to wait for the browser to come back, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub timeout: u64,
}

/// `iap verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The audience IAP signs for the service (repeatable):
    /// /projects/NUMBER/global/backendServices/ID, /projects/NUMBER/apps/PROJECT_ID
    /// or /projects/NUMBER/locations/REGION/services/NAME.
    #[arg(long, value_name = "AUD", required = true)]
    pub audience: Vec<String>,

    /// IAP's key set, a JWK Set (default: Google's, https://www.gstatic.com/iap/verify/public_key-jwk).
    #[arg(long, value_name = "URL")]
    pub jwks_url: Option<String>,

    /// The assertion; `-` or nothing reads it from stdin.
    #[arg(value_name = "ASSERTION")]
    pub assertion: Option<String>,
}

/// `iap proxy`.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// The IAP app to forward to (scheme and host, optionally a base path).
    #[arg(long, value_name = "URL")]
    pub target: String,

    /// Where to listen (loopback unless you mean to share your identity).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub auth: AppAuthArgs,
}

/// `iap doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The URL of the IAP app to try.
    pub url: String,

    #[command(flatten)]
    pub auth: AppAuthArgs,
}
