//! The emulator as a standalone process, for shells and non-Rust clients.
//!
//! What the `iap-emulator` binary and `iap emulator` both run: start an
//! [`Emulator`], mint a service-account key for the caller into a private
//! temporary directory (removed when the [`Standalone`] drops), optionally
//! write an ADC file of every type, optionally put the gate in front of a
//! local app (`--front URL [--as EMAIL]`: a developer runs their app behind
//! a local IAP), print `export NAME=value` lines that point a client at all
//! of it, then serve until asked to stop.
//!
//! ```
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::io::Write as _;
//! use iap_emulator::standalone::{self, Options, Standalone};
//!
//! let emulator = Standalone::start(&Options::default()).await?;
//! # let key_path = emulator.key_path().to_path_buf();
//! # assert!(key_path.exists());
//! let shutdown = standalone::shutdown_signal(); // Ctrl-C or SIGTERM
//! # // Here: stop at once instead of waiting for a signal.
//! # let shutdown = { drop(shutdown); std::future::ready(()) };
//! let mut out = std::io::stdout().lock();
//! out.write_all(emulator.export_lines().as_bytes())?;
//! out.flush()?;
//! emulator.serve_until(shutdown).await; // the key's directory is gone after this
//! # assert!(!key_path.exists());
//! # Ok(()) }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{App, Emulator, KeyError, ServiceAccount, StartError};

/// How to start a [`Standalone`] emulator; also the command-line flags of
/// both binaries (`#[command(flatten)]` it into a clap parser).
#[derive(Debug, Clone, clap::Args)]
#[non_exhaustive]
pub struct Options {
    /// Address of the main server (Google's endpoints, metadata server, control API).
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:0",
        env = "IAP_EMULATOR_LISTEN"
    )]
    pub listen: SocketAddr,

    /// Lifetime of minted tokens, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    pub token_lifetime: u64,

    /// Also write one ADC file of every type into this directory (exported as
    /// IAP_EMULATOR_ADC_DIR).
    #[arg(long, value_name = "DIR")]
    pub adc_dir: Option<PathBuf>,

    /// Serve https (HTTP/2 by ALPN) with a certificate authority generated at
    /// start, its PEM written to a file exported as IAP_EMULATOR_CA_FILE;
    /// the exported URLs are then https and wss.
    #[arg(long)]
    pub tls: bool,

    /// Put IAP's gate in front of a local app at this URL (e.g.
    /// http://localhost:3000): requests to the gate (exported as
    /// IAP_EMULATOR_FRONT_URL) reach the app with IAP's signed header.
    #[arg(long, value_name = "URL")]
    pub front: Option<url::Url>,

    /// With --front: let requests that carry no token through as this user,
    /// with a correctly signed assertion (for a browser).
    #[arg(long = "as", value_name = "EMAIL", requires = "front")]
    pub as_user: Option<String>,

    /// With --front: where the gate listens (default: a free port on 127.0.0.1).
    #[arg(long, value_name = "ADDR", requires = "front")]
    pub front_listen: Option<SocketAddr>,
}

impl Default for Options {
    /// `127.0.0.1:0` (a free port), 3600 s tokens, no ADC files, plain http, no front.
    fn default() -> Self {
        Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            token_lifetime: 3600,
            adc_dir: None,
            tls: false,
            front: None,
            as_user: None,
            front_listen: None,
        }
    }
}

/// Why a [`Standalone`] emulator could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StandaloneError {
    /// The emulator itself did not start (e.g. the address is taken).
    #[error("cannot start the emulator: {0}")]
    Start(#[from] StartError),
    /// The private directory for the key file could not be created.
    #[error("cannot create a private temporary folder for the key file: {0}")]
    TempDir(#[source] std::io::Error),
    /// The caller's service account could not be created.
    #[error("cannot provision the emulator's service account: {0}")]
    ServiceAccount(#[source] KeyError),
    /// The gate in front of `--front` could not start.
    #[error("cannot start the gate in front of {url}: {source}")]
    Front {
        /// The app's URL.
        url: url::Url,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A running emulator with a service-account key for its caller. Dropping it
/// stops the emulator and removes the key's directory.
#[derive(Debug)]
pub struct Standalone {
    emulator: Emulator,
    runner: ServiceAccount,
    key_path: PathBuf,
    ca_path: Option<PathBuf>,
    adc_dir: Option<PathBuf>,
    front: Option<App>,
    // Last, so it is removed after the emulator has stopped.
    _key_dir: tempfile::TempDir,
}

impl Standalone {
    /// The name of the service account whose key is exported
    /// (`iap-emulator-runner@PROJECT.iam.gserviceaccount.com`).
    pub const SERVICE_ACCOUNT: &'static str = "iap-emulator-runner";

    /// Starts the emulator, writes the runner's key file (mode 0600, in a
    /// new directory only the user can read) and, with
    /// [`Options::adc_dir`], the ADC files.
    pub async fn start(options: &Options) -> Result<Standalone, StandaloneError> {
        let mut builder = Emulator::builder()
            .listen(options.listen)
            .token_lifetime(Duration::from_secs(options.token_lifetime));
        if options.tls {
            builder = builder.tls();
        }
        let emulator = builder.start().await?;
        let key_dir = private_dir().map_err(StandaloneError::TempDir)?;
        let ca_path = match emulator.ca_pem() {
            Some(pem) => {
                let path = key_dir.path().join("ca.pem");
                std::fs::write(&path, pem).map_err(|source| StandaloneError::Write {
                    path: path.clone(),
                    source,
                })?;
                Some(path)
            }
            None => None,
        };
        let runner = emulator
            .create_service_account(Self::SERVICE_ACCOUNT)
            .await
            .map_err(StandaloneError::ServiceAccount)?;
        let key_path = key_dir.path().join("service-account.json");
        runner
            .write_key_file(&key_path)
            .map_err(|source| StandaloneError::Write {
                path: key_path.clone(),
                source,
            })?;
        let adc_dir = match &options.adc_dir {
            Some(dir) => {
                let write = |source| StandaloneError::Write {
                    path: dir.clone(),
                    source,
                };
                emulator.write_adc_files(dir).await.map_err(write)?;
                Some(std::path::absolute(dir).map_err(write)?)
            }
            None => None,
        };
        let front = match &options.front {
            Some(url) => {
                let mut app = emulator.create_app();
                if let Some(addr) = options.front_listen {
                    app = app.listen(addr);
                }
                if let Some(email) = &options.as_user {
                    app = app.signed_in_as(email);
                }
                let app =
                    app.proxy_to(url.clone())
                        .await
                        .map_err(|source| StandaloneError::Front {
                            url: url.clone(),
                            source,
                        })?;
                Some(app)
            }
            None => None,
        };
        Ok(Standalone {
            emulator,
            runner,
            key_path,
            ca_path,
            adc_dir,
            front,
            _key_dir: key_dir,
        })
    }

    /// The running emulator, for provisioning and control.
    pub fn emulator(&self) -> &Emulator {
        &self.emulator
    }

    /// The service account whose key [`key_path`](Self::key_path) holds.
    pub fn service_account(&self) -> &ServiceAccount {
        &self.runner
    }

    /// The gate in front of [`Options::front`], if one was asked for.
    pub fn front(&self) -> Option<&App> {
        self.front.as_ref()
    }

    /// The key file exported as `GOOGLE_APPLICATION_CREDENTIALS`.
    pub fn key_path(&self) -> &Path {
        &self.key_path
    }

    /// The CA certificate file (PEM) exported as `IAP_EMULATOR_CA_FILE`,
    /// with [`Options::tls`].
    pub fn ca_path(&self) -> Option<&Path> {
        self.ca_path.as_deref()
    }

    /// The variables a client needs, in order: `GCE_METADATA_HOST`,
    /// `GCE_METADATA_IP`, `GOOGLE_APPLICATION_CREDENTIALS`,
    /// `IAP_EMULATOR_URL`, `IAP_EMULATOR_APP_URL`, `IAP_EMULATOR_WS_URL`
    /// (the default app's WebSocket echo), `IAP_EMULATOR_AUDIENCE`,
    /// `IAP_EMULATOR_JWKS_URL`, `IAP_EMULATOR_IAP_JWKS_URL` (IAP's assertion
    /// keys), `IAP_EMULATOR_CA_FILE` with [`Options::tls`],
    /// `IAP_EMULATOR_ADC_DIR` (absolute) when ADC files were written,
    /// and with [`Options::front`]: `IAP_EMULATOR_FRONT_URL` (the gate in
    /// front of the app), `IAP_EMULATOR_FRONT_AUDIENCE` (its IAP client ID,
    /// for tokens) and `IAP_EMULATOR_FRONT_ASSERTION_AUDIENCE` (the `aud` of
    /// the assertions the app receives, for its verifier). The other app
    /// variables name the default echo app.
    pub fn exports(&self) -> Vec<(&'static str, String)> {
        let emu = &self.emulator;
        let app = emu.app();
        let mut exports = vec![
            ("GCE_METADATA_HOST", emu.metadata_host()),
            ("GCE_METADATA_IP", emu.metadata_host()),
            (
                "GOOGLE_APPLICATION_CREDENTIALS",
                self.key_path.to_string_lossy().into_owned(),
            ),
            ("IAP_EMULATOR_URL", emu.url()),
            ("IAP_EMULATOR_APP_URL", app.url().to_string()),
            ("IAP_EMULATOR_WS_URL", app.ws_url().to_string()),
            ("IAP_EMULATOR_AUDIENCE", app.client_id().to_owned()),
            ("IAP_EMULATOR_JWKS_URL", emu.jwks_url()),
            ("IAP_EMULATOR_IAP_JWKS_URL", emu.iap_jwks_url()),
        ];
        if let Some(ca) = &self.ca_path {
            exports.push(("IAP_EMULATOR_CA_FILE", ca.to_string_lossy().into_owned()));
        }
        if let Some(dir) = &self.adc_dir {
            exports.push(("IAP_EMULATOR_ADC_DIR", dir.to_string_lossy().into_owned()));
        }
        if let Some(front) = &self.front {
            exports.extend([
                ("IAP_EMULATOR_FRONT_URL", front.url().to_string()),
                ("IAP_EMULATOR_FRONT_AUDIENCE", front.client_id().to_owned()),
                (
                    "IAP_EMULATOR_FRONT_ASSERTION_AUDIENCE",
                    front.assertion_audience().to_owned(),
                ),
            ]);
        }
        exports
    }

    /// [`exports`](Self::exports) as shell lines, `export NAME=value\n` each,
    /// values single-quoted where a POSIX shell needs it.
    pub fn export_lines(&self) -> String {
        self.exports()
            .into_iter()
            .map(|(name, value)| format!("export {name}={}\n", shell_quote(&value)))
            .collect()
    }

    /// Serves until `shutdown` resolves, then stops the emulator and
    /// removes the key's directory.
    pub async fn serve_until(self, shutdown: impl Future<Output = ()>) {
        shutdown.await;
        drop(self);
    }
}

/// A new directory under the system's temporary one, readable by the user alone.
fn private_dir() -> std::io::Result<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("iap-emulator-");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        builder.permissions(std::fs::Permissions::from_mode(0o700));
    }
    builder.tempdir()
}

/// Single-quotes a value for a POSIX shell when it needs it.
fn shell_quote(v: &str) -> String {
    if v.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./:@%+=,".contains(c))
    {
        v.to_owned()
    } else {
        format!("'{}'", v.replace('\'', r"'\''"))
    }
}

/// Resolves when the process is asked to stop: Ctrl-C, or SIGTERM on Unix.
/// The handlers are installed by this call, not when the future is first
/// polled, so a signal sent right after the caller prints its export lines
/// is not lost. Call it inside the runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{Signal, SignalKind, signal};
        async fn recv(signal: Option<Signal>) {
            match signal {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        let interrupt = signal(SignalKind::interrupt()).ok();
        let terminate = signal(SignalKind::terminate()).ok();
        async move {
            tokio::select! {
                () = recv(interrupt) => {}
                () = recv(terminate) => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn values_are_quoted_only_when_needed() {
        assert_eq!(shell_quote("http://127.0.0.1:80/"), "http://127.0.0.1:80/");
        assert_eq!(shell_quote("/tmp/a b/it's"), r"'/tmp/a b/it'\''s'");
    }
}
