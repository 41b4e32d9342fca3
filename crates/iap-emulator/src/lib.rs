//! A faithful local emulator of Google identity and Identity-Aware Proxy.
//!
//! One HTTP server on loopback serves every Google endpoint an IAP client
//! talks to, under one base URL, mirroring Google's paths:
//!
//! | Path | Stands in for |
//! |---|---|
//! | `GET /` | metadata-server detection (`Metadata-Flavor: Google`) |
//! | `GET\|POST /computeMetadata/v1/instance/service-accounts/default/{identity,token,email}` | the metadata server |
//! | `POST /token` | `oauth2.googleapis.com/token` (JWT-bearer, refresh, authorization code) |
//! | `GET /o/oauth2/v2/auth` | `accounts.google.com` consent, answered at once with a redirect |
//! | `POST /v1/projects/-/serviceAccounts/{email}:generateIdToken` / `:generateAccessToken` / `:signJwt` | IAM Credentials |
//! | `POST /v1/token` | STS (workload identity federation) |
//! | `GET /oauth2/v3/certs`, `GET /oauth2/v1/certs` | Google's signing keys (JWKS, X.509 PEM map) |
//! | `GET /iap/verify/public_key-jwk`, `GET /iap/verify/public_key` | IAP's ES256 keys (JWKS, kid -> PEM map) |
//! | `/oidc/...` | an OIDC issuer for workload-identity subject tokens |
//! | `/_emulator/...` | control and observation over HTTP (JSON) |
//!
//! Each gated app gets its own listener (its own origin) with the IAP gate
//! in front of it; a default echo app starts with the emulator.
//!
//! ```
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use iap_emulator::{Emulator, Endpoint, Fault};
//! let emu = Emulator::start().await?;
//! let sa = emu.create_service_account("runner").await?;
//! // Point a client at emu.token_uri() / emu.metadata_host() / a key file...
//! emu.inject(Endpoint::Token, Fault::status(503), 1);
//! assert_eq!(emu.counter(iap_emulator::counter::ID_TOKENS, "my-audience"), 0);
//! # let _ = sa; Ok(()) }
//! ```
//!
//! Dropping the [`Emulator`] stops every listener and every connection.
//! [`standalone`] runs it as a process for shells and other languages (the
//! `iap-emulator` binary and `iap emulator`), printing `export` lines.
//!
//! # Behaviours worth knowing
//!
//! - **One clock.** [`Emulator::set_clock_offset`] / [`Emulator::advance_clock`]
//!   move Google's clock: it dates every minted token and judges every
//!   expiry (access tokens at IAM, subject tokens at STS, codes, the gate),
//!   including the `iat`/`exp` window of a client's JWT-bearer assertion,
//!   which a client signs with its own (real) clock: an offset beyond a few
//!   minutes makes service-account key files fail with `invalid_grant`, as
//!   clock skew does at Google.
//! - **Token lifetime** ([`Emulator::set_token_lifetime`]) applies to tokens
//!   minted from then on.
//! - **The metadata server caches** identity tokens like GCE: it answers
//!   with the same token until 300 s before its expiry; changing the clock
//!   or the lifetime empties the cache. `requests` counts every call,
//!   `id_tokens` only mints.
//! - **Every token has a unique `jti`**; revoking a token string revokes its
//!   `jti` (JWTs) or the token itself (opaque access and refresh tokens).
//! - **Impersonation is explicit**: [`Emulator::allow_impersonation`] per
//!   link, including an account acting as itself.
//! - **Key rotation** keeps the previous Google key published; so does the
//!   rotation of IAP's assertion key ([`Emulator::rotate_assertion_key`]).
//!
//! # Control over HTTP
//!
//! Non-Rust peers drive the same controls under `/_emulator/` on the main
//! server (JSON in and out; paths below are relative to it):
//!
//! | Method and path | Body | Answer |
//! |---|---|---|
//! | `GET info` | | URLs, project, metadata account, lifetime, clock, apps |
//! | `GET counters` | | `{name: {label: value}}` |
//! | `GET counter?name=&label=` | | `{"name","label","value"}` |
//! | `POST counters/reset` | | `{}` |
//! | `POST lifetime` | `{"seconds"}` | `{"seconds"}` |
//! | `POST clock` | `{"offset_seconds"}` or `{"advance_seconds"}` | `{"offset_seconds","now"}` |
//! | `POST revoke` | `{"token"}` or `{"jti"}` | `{"revoked"}` (the jti or token) |
//! | `POST faults` | `{"endpoint","fault","times"}` (`times` defaults to 1) | `{"pending"}` |
//! | `POST faults/rate` | `{"endpoint","rate","faults"}` ([`Emulator::inject_at_rate`]) | `{"rate"}` (as clamped) |
//! | `DELETE faults` | | `{}` (queued faults and rates) |
//! | `POST rotate-keys` | | `{"kids"}` current first |
//! | `POST service-accounts` | `{"name","project_id"?}` | the key file JSON |
//! | `POST clients` | `{"project_id"?}` | `{"client_id","client_secret","project_id"}` |
//! | `POST users` | `{"client_id","email"}` | the `authorized_user` JSON plus `sub` |
//! | `POST impersonation` / `DELETE impersonation` | `{"caller","target"}` | `{}` |
//! | `POST pools` | `{"pool_id","provider_id"}` | `{"audience"}` |
//! | `POST subject-tokens` | `{"audience","subject"}` | `{"token"}` |
//! | `POST id-tokens` | `{"audience","email"}` | `{"token"}` |
//! | `POST metadata-service-account` | `{"email"}` (`null` removes it) | `{"email"}` |
//! | `POST apps` | `{"client_id"?, "project_id"?, "allow_clients"?, "audience_shape"?, "region"?, "service"?, "signed_in_as"?, "access_levels"?, "google_managed_client"?}` | a new echo app behind the gate: `{"url","client_id","project_id","assertion_audience","allowed_clients","google_managed_client"}` |
//!
//! `audience_shape` is `backend_service` (default), `app_engine`, or
//! `cloud_run` with `region` and `service` ([`AppBuilder::app_engine`],
//! [`AppBuilder::cloud_run`]). The gate adds `GET apps`, `POST apps/allow`,
//! `POST apps/disallow`, `POST rotate-assertion-keys`,
//! `POST assertion-keys/max-age` and `POST assertions` (see its docs). Errors answer 400 or 404 with `{"error": "..."}`.
#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::task::JoinHandle;

mod control;
mod endpoint;
mod fault;
pub mod gate;
mod identity;
mod keys;
mod locks;
mod provision;
mod server;
pub mod standalone;
pub(crate) mod state;
mod tls;

pub use endpoint::{Endpoint, Fault};
pub use gate::{App, AppBuilder, IapGate, IapGateLayer};
pub use keys::KeyError;
pub use provision::{
    Adc, AdcFiles, Grant, OAuthClient, ServiceAccount, SubjectTokenSource, User, WorkloadPool,
};

use keys::{RsaKey, random_b64, random_digits};
use locks::{lock, read, write};
use state::{ClientKind, IdTokenSpec, Project, ServiceAccountRecord, State};

pub mod counter {
    //! Counter names. Read them with [`Emulator::counter`](crate::Emulator::counter) or
    //! `GET /_emulator/counter?name=..&label=..`.
    //!
    //! | Name | Label | Counts |
    //! |---|---|---|
    //! | [`REQUESTS`] | [`Endpoint::name`](crate::Endpoint::name) | every request that reached the endpoint (faulted ones too) |
    //! | [`FAULTS`] | [`Endpoint::name`](crate::Endpoint::name) | injected faults applied |
    //! | `faults.<kind>` ([`faults_by`]) | [`Endpoint::name`](crate::Endpoint::name) | injected faults of that kind applied ([`Fault::label`](crate::Fault::label): `503`, `delay`, `malformed`, `reset`) |
    //! | [`ID_TOKENS`] | audience | ID tokens minted, any grant |
    //! | `id_tokens.<grant>` ([`id_tokens_by`]) | audience | ID tokens minted by that [`Grant`] |
    //! | [`ACCESS_TOKENS`] | [`Grant::name`] | access tokens minted |
    //! | [`SIGNED_JWTS`] | service-account email | JWTs signed by IAM `signJwt` |
    //! | [`ERRORS`] | [`Endpoint::name`](crate::Endpoint::name) | error answers the endpoint gave on its own (not faults) |
    //!
    //! The IAP gate adds its own: `gate.401`, `gate.401.<reason>`, `gate.302`,
    //! `app.hits`, `gate.accepted`, `gate.proxy_authorization` (re-exported here).

    use crate::{Fault, Grant};

    // The IAP gate's counters (documented in `crate::gate`).
    pub use crate::gate::counter::*;

    /// Requests per endpoint; label [`Endpoint::name`](crate::Endpoint::name).
    pub const REQUESTS: &str = "requests";
    /// Faults applied per endpoint; label [`Endpoint::name`](crate::Endpoint::name).
    pub const FAULTS: &str = "faults";
    /// ID tokens minted, any grant; label = audience.
    pub const ID_TOKENS: &str = "id_tokens";
    /// Access tokens minted; label [`Grant::name`].
    pub const ACCESS_TOKENS: &str = "access_tokens";
    /// JWTs signed by IAM Credentials `signJwt`; label = the signing
    /// service account's email.
    pub const SIGNED_JWTS: &str = "signed_jwts";
    /// Error answers (4xx/5xx) the endpoint gave on its own; label
    /// [`Endpoint::name`](crate::Endpoint::name).
    pub const ERRORS: &str = "errors";

    /// The name of the counter of applied faults of `fault`'s kind, by
    /// endpoint: `faults.503`, `faults.delay`, `faults.malformed`,
    /// `faults.reset` ([`Fault::label`]).
    pub fn faults_by(fault: &Fault) -> String {
        format!("{FAULTS}.{}", fault.label())
    }

    /// The name of the counter of ID tokens minted by `grant`, by audience:
    /// `id_tokens.jwt_bearer`, `id_tokens.metadata`, ...
    pub fn id_tokens_by(grant: Grant) -> String {
        format!("{ID_TOKENS}.{}", grant.name())
    }
}

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A signing key could not be generated.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The default echo app could not start.
    #[error("cannot start the default echo app: {0}")]
    App(#[source] std::io::Error),
    /// The certificate authority or the server certificate of
    /// [`EmulatorBuilder::tls`] could not be made.
    #[error("cannot set up the emulator's TLS: {0}")]
    Tls(String),
}

/// Configures an [`Emulator`] before it starts.
#[derive(Debug, Clone)]
pub struct EmulatorBuilder {
    listen: SocketAddr,
    project_id: String,
    project_number: String,
    lifetime: Duration,
    metadata_account: bool,
    default_app: bool,
    tls: bool,
}

impl Default for EmulatorBuilder {
    fn default() -> Self {
        EmulatorBuilder {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            project_id: "iap-emulator".into(),
            project_number: "123456789012".into(),
            lifetime: Duration::from_secs(3600),
            metadata_account: true,
            default_app: true,
            tls: false,
        }
    }
}

impl EmulatorBuilder {
    /// The main server's address (default `127.0.0.1:0`, a free port).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// The emulator's own project (default `iap-emulator`, number `123456789012`).
    pub fn project(mut self, id: impl Into<String>, number: impl Into<String>) -> Self {
        self.project_id = id.into();
        self.project_number = number.into();
        self
    }

    /// Lifetime of every minted token (default 3600 s, Google's).
    pub fn token_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// Start with no service account on the metadata server (its identity
    /// and token endpoints then answer 404, as on an instance without one).
    pub fn without_metadata_service_account(mut self) -> Self {
        self.metadata_account = false;
        self
    }

    /// Do not start the default echo app behind the gate.
    pub fn without_default_app(mut self) -> Self {
        self.default_app = false;
        self
    }

    /// Serve https: the main server (every identity endpoint, the control
    /// API) and every app present a certificate for `127.0.0.1`, `::1` and
    /// `localhost` signed by a certificate authority the emulator generates
    /// at start ([`Emulator::ca_pem`]); ALPN offers HTTP/2 and HTTP/1.1.
    /// Every URL the emulator hands out is then `https://` (`wss://` for
    /// WebSockets), and minted key files' `token_uri` with them. The main
    /// server still answers plain http on the same port (it tells the two
    /// apart by the first byte), because the metadata server is plain http
    /// by nature; apps answer TLS only.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Binds, generates Google's signing keys and starts serving.
    pub async fn start(self) -> Result<Emulator, StartError> {
        let listener = tokio::net::TcpListener::bind(self.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: self.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: self.listen,
            source,
        })?;
        let (google, oidc) = tokio::join!(RsaKey::generate_async(), RsaKey::generate_async());
        let project = Project {
            id: self.project_id,
            number: self.project_number,
        };
        let tls = if self.tls {
            let tls = tokio::task::spawn_blocking(tls::Tls::generate)
                .await
                .map_err(|e| StartError::Tls(e.to_string()))?
                .map_err(StartError::Tls)?;
            Some(tls)
        } else {
            None
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base_url = format!("{scheme}://{addr}");
        let mut state = State::new(
            base_url,
            project,
            self.lifetime.as_secs().max(1),
            google?,
            oidc?,
        );
        state.tls = tls;
        let state = Arc::new(state);
        if self.metadata_account {
            let email = format!(
                "{}-compute@developer.gserviceaccount.com",
                state.project.number
            );
            register_service_account(&state, &email, None);
            *write(&state.metadata_account) = Some(email);
        }
        let router = identity::routes()
            .merge(control::routes())
            .merge(gate::routes())
            .with_state(state.clone());
        let security = match &state.tls {
            Some(tls) => server::Security::TlsOrPlain(tls.clone()),
            None => server::Security::Plain,
        };
        let task = server::serve(listener, router, state.clone(), security);
        let emu = Emulator {
            state,
            addr,
            owner: true,
        };
        emu.own_task(task);
        if self.default_app {
            gate::start_default_app(&emu)
                .await
                .map_err(StartError::App)?;
        }
        Ok(emu)
    }
}

fn register_service_account(state: &State, email: &str, key: Option<Arc<RsaKey>>) -> String {
    let mut accounts = write(&state.service_accounts);
    let rec = accounts
        .entry(email.to_owned())
        .or_insert_with(|| ServiceAccountRecord {
            unique_id: random_digits(21),
            keys: Vec::new(),
            system_key: None,
        });
    if let Some(key) = key {
        rec.keys.push(key);
    }
    rec.unique_id.clone()
}

/// A running emulator. Dropping it stops every listener and connection.
#[derive(Debug)]
pub struct Emulator {
    pub(crate) state: Arc<State>,
    addr: SocketAddr,
    /// Whether dropping this handle stops the emulator (false for views).
    owner: bool,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if self.owner {
            for task in lock(&self.state.tasks).drain(..) {
                task.abort();
            }
        }
    }
}

impl Emulator {
    /// Starts an emulator with the defaults (`127.0.0.1:0`, project
    /// `iap-emulator`, 3600 s tokens, a metadata service account, the echo
    /// app).
    pub async fn start() -> Result<Emulator, StartError> {
        EmulatorBuilder::default().start().await
    }

    /// A builder to configure the emulator first.
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder::default()
    }

    /// A handle on a running emulator's state whose drop stops nothing: for
    /// the HTTP control endpoints, which reuse the Rust API. Tasks started
    /// through a view (apps) still end with the owning handle.
    pub(crate) fn view(state: Arc<State>) -> Emulator {
        let addr = state
            .base_url
            .split_once("://")
            .map_or("", |(_, addr)| addr)
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        Emulator {
            state,
            addr,
            owner: false,
        }
    }

    /// Ties a server task's life to the emulator (aborted when the owning
    /// handle drops).
    pub(crate) fn own_task(&self, task: JoinHandle<()>) {
        lock(&self.state.tasks).push(task);
    }

    // ---- addresses -------------------------------------------------------

    /// The PEM of the certificate authority that signed the emulator's
    /// server certificate, when it was started with
    /// [`tls`](EmulatorBuilder::tls); `None` for plain http. Trust it in a
    /// client (e.g. `iap_token::RootCertificates::from_pem`, `--cacert`) to
    /// reach the emulator over https.
    pub fn ca_pem(&self) -> Option<&str> {
        self.state.tls.as_ref().map(tls::Tls::ca_pem)
    }

    /// Whether the emulator serves https ([`EmulatorBuilder::tls`]).
    pub fn is_tls(&self) -> bool {
        self.state.tls.is_some()
    }

    /// The main server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL with a trailing slash: `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("{}/", self.state.base_url)
    }

    /// The OAuth token endpoint: `http://127.0.0.1:PORT/token`.
    pub fn token_uri(&self) -> String {
        format!("{}/token", self.state.base_url)
    }

    /// The value for `GCE_METADATA_HOST` / `GCE_METADATA_IP`: `127.0.0.1:PORT`.
    pub fn metadata_host(&self) -> String {
        self.addr.to_string()
    }

    /// Google's JWKS: `http://127.0.0.1:PORT/oauth2/v3/certs`.
    pub fn jwks_url(&self) -> String {
        format!("{}/oauth2/v3/certs", self.state.base_url)
    }

    /// Google's kid -> X.509 PEM map: `http://127.0.0.1:PORT/oauth2/v1/certs`.
    pub fn certs_v1_url(&self) -> String {
        format!("{}/oauth2/v1/certs", self.state.base_url)
    }

    /// The authorization endpoint: `http://127.0.0.1:PORT/o/oauth2/v2/auth`.
    pub fn authorize_url(&self) -> String {
        format!("{}/o/oauth2/v2/auth", self.state.base_url)
    }

    /// The IAM Credentials URL of `method` (`generateIdToken` or
    /// `generateAccessToken`) on service account `email`.
    pub fn iam_credentials_url(&self, email: &str, method: &str) -> String {
        format!(
            "{}/v1/projects/-/serviceAccounts/{email}:{method}",
            self.state.base_url
        )
    }

    /// The STS token-exchange endpoint: `http://127.0.0.1:PORT/v1/token`.
    pub fn sts_url(&self) -> String {
        format!("{}/v1/token", self.state.base_url)
    }

    /// The issuer of workload-identity subject tokens: `http://127.0.0.1:PORT/oidc`.
    pub fn oidc_issuer(&self) -> String {
        format!("{}/oidc", self.state.base_url)
    }

    /// IAP's ES256 JWKS: `http://127.0.0.1:PORT/iap/verify/public_key-jwk`.
    pub fn iap_jwks_url(&self) -> String {
        format!("{}/iap/verify/public_key-jwk", self.state.base_url)
    }

    /// The emulator's project ID.
    pub fn project_id(&self) -> &str {
        &self.state.project.id
    }

    /// The emulator's project number.
    pub fn project_number(&self) -> &str {
        &self.state.project.number
    }

    // ---- provisioning ----------------------------------------------------

    /// Creates service account `name@PROJECT.iam.gserviceaccount.com` in
    /// the emulator's project with a fresh RSA 2048 key (generated off the
    /// async threads). Creating an existing account adds a key to it.
    pub async fn create_service_account(&self, name: &str) -> Result<ServiceAccount, KeyError> {
        let project = self.state.project.id.clone();
        self.create_service_account_in(name, &project).await
    }

    /// Like [`create_service_account`](Self::create_service_account), in `project_id`.
    pub async fn create_service_account_in(
        &self,
        name: &str,
        project_id: &str,
    ) -> Result<ServiceAccount, KeyError> {
        let key = Arc::new(RsaKey::generate_async().await?);
        let email = format!("{name}@{project_id}.iam.gserviceaccount.com");
        let unique_id = register_service_account(&self.state, &email, Some(key.clone()));
        let key_json = json!({
            "type": "service_account",
            "project_id": project_id,
            "private_key_id": key.kid(),
            "private_key": key.private_key_pem(),
            "client_email": email,
            "client_id": unique_id,
            "auth_uri": self.authorize_url(),
            "token_uri": self.token_uri(),
            "auth_provider_x509_cert_url": self.certs_v1_url(),
            "client_x509_cert_url": format!("{}/robot/v1/metadata/x509/{email}", self.state.base_url),
            "universe_domain": "googleapis.com",
        });
        Ok(ServiceAccount {
            email,
            unique_id,
            project_id: project_id.to_owned(),
            private_key_id: key.kid().to_owned(),
            key_json: serde_json::to_string_pretty(&key_json).unwrap_or_default(),
        })
    }

    /// The metadata server's service account email, if it has one.
    pub fn metadata_service_account(&self) -> Option<String> {
        read(&self.state.metadata_account).clone()
    }

    /// Sets (or, with `None`, removes) the metadata server's service
    /// account. The account is registered (keyless) if new.
    pub fn set_metadata_service_account(&self, email: Option<&str>) {
        if let Some(email) = email {
            register_service_account(&self.state, email, None);
        }
        *write(&self.state.metadata_account) = email.map(str::to_owned);
    }

    /// Creates a desktop OAuth client in `project_id` (any project ID; the
    /// refresh grant's `audience` must be a client of the same project).
    pub fn create_desktop_client(&self, project_id: &str) -> OAuthClient {
        let number = self.state.project_number(project_id);
        let client_id = format!(
            "{number}-{}.apps.googleusercontent.com",
            keys::random_hex(16)
        );
        let client_secret = format!("GOCSPX-{}", random_b64(21));
        self.state
            .register_client(&client_id, &client_secret, project_id, ClientKind::Desktop);
        OAuthClient {
            client_id,
            client_secret,
            project_id: project_id.to_owned(),
        }
    }

    /// Signs `email` in to `client` (consent for `openid email`) and returns
    /// the user with a fresh refresh token. The same email always gets the
    /// same `sub`. The user also becomes a consenting user of the
    /// authorization endpoint for this client.
    pub fn create_user(&self, client: &OAuthClient, email: &str) -> User {
        let sub = write(&self.state.users)
            .entry(email.to_owned())
            .or_insert_with(|| random_digits(21))
            .clone();
        let refresh_token = format!("1//emu-{}", random_b64(40));
        if let Some(c) = write(&self.state.clients).get_mut(&client.client_id) {
            c.consenting_user = Some(email.to_owned());
        }
        write(&self.state.refresh_tokens).insert(
            refresh_token.clone(),
            state::RefreshRecord {
                client_id: client.client_id.clone(),
                email: email.to_owned(),
                scope: identity::USER_SCOPE.to_owned(),
            },
        );
        User {
            email: email.to_owned(),
            sub,
            client: client.clone(),
            refresh_token,
            token_uri: self.token_uri(),
        }
    }

    /// Lets `caller` (a service-account or user email, or a
    /// [`WorkloadPool::principal`]) mint tokens for service account
    /// `target` through IAM Credentials (the roles Token Creator and OpenID
    /// Token Creator). Delegation chains need a grant per link. As at
    /// Google, an account acting as itself needs a grant on itself too.
    pub fn allow_impersonation(&self, caller: &str, target: &str) {
        write(&self.state.impersonation).insert((caller.to_owned(), target.to_owned()));
    }

    /// Withdraws a grant made with [`allow_impersonation`](Self::allow_impersonation).
    pub fn deny_impersonation(&self, caller: &str, target: &str) {
        write(&self.state.impersonation).remove(&(caller.to_owned(), target.to_owned()));
    }

    /// Creates a workload identity pool provider in the emulator's project
    /// trusting the emulator's OIDC issuer.
    pub fn create_workload_pool(&self, pool_id: &str, provider_id: &str) -> WorkloadPool {
        let pool = WorkloadPool {
            project_number: self.state.project.number.clone(),
            pool_id: pool_id.to_owned(),
            provider_id: provider_id.to_owned(),
        };
        write(&self.state.pools).insert(
            pool.audience(),
            state::PoolRecord {
                project_number: pool.project_number.clone(),
                pool_id: pool.pool_id.clone(),
            },
        );
        pool
    }

    /// Mints a subject token for `subject` from the emulator's OIDC issuer,
    /// for `pool` (its `aud` is the pool's audience). Not counted as an ID
    /// token: it is not Google's.
    pub fn mint_subject_token(&self, pool: &WorkloadPool, subject: &str) -> String {
        identity::sts::mint_subject_token(&self.state, &pool.audience(), subject)
    }

    /// Mints a Google ID token for `email` with audience `audience` directly
    /// (counted under grant [`Grant::Direct`]).
    pub fn mint_id_token(&self, audience: &str, email: &str) -> String {
        let sub = read(&self.state.users)
            .get(email)
            .cloned()
            .or_else(|| {
                read(&self.state.service_accounts)
                    .get(email)
                    .map(|r| r.unique_id.clone())
            })
            .unwrap_or_else(|| random_digits(21));
        self.state.mint_id_token(
            Grant::Direct,
            IdTokenSpec {
                aud: audience.to_owned(),
                sub,
                azp: Some(email.to_owned()),
                email: Some(email.to_owned()),
                extra: None,
            },
        )
    }

    /// The JSON of an ADC file.
    pub fn adc_json(&self, adc: &Adc) -> serde_json::Value {
        identity::adc_json(&self.state, adc)
    }

    /// Writes an ADC file to `path` (atomically, mode 0600). For an
    /// `external_account` with a file source, the subject token file is
    /// written too.
    pub fn write_adc(&self, adc: &Adc, path: impl AsRef<Path>) -> std::io::Result<()> {
        if let Adc::ExternalAccount {
            pool,
            subject,
            source: SubjectTokenSource::File(token_path),
            ..
        } = adc
        {
            let token = self.mint_subject_token(pool, subject);
            provision::write_secret_file(token_path, token.as_bytes())?;
        }
        let json = serde_json::to_string_pretty(&self.adc_json(adc)).unwrap_or_default();
        provision::write_secret_file(path.as_ref(), json.as_bytes())
    }

    /// Writes one ADC file of every type into `dir` (created if missing),
    /// provisioning what they need: service accounts `adc-runner` and
    /// `adc-target`, user `adc-user@example.com` of a desktop client in the
    /// emulator's project, workload pool `adc-pool` / provider `adc-provider`
    /// with subject `adc-workload`, and the grants that let the user, the
    /// runner and the workload impersonate `adc-target`.
    pub async fn write_adc_files(&self, dir: impl AsRef<Path>) -> std::io::Result<AdcFiles> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)?;
        let (runner, target) = tokio::join!(
            self.create_service_account("adc-runner"),
            self.create_service_account("adc-target")
        );
        let runner = runner.map_err(std::io::Error::other)?;
        let target = target.map_err(std::io::Error::other)?;
        let client = self.create_desktop_client(&self.state.project.id.clone());
        let user = self.create_user(&client, "adc-user@example.com");
        let pool = self.create_workload_pool("adc-pool", "adc-provider");
        let workload = "adc-workload";
        for caller in [
            user.email().to_owned(),
            runner.email().to_owned(),
            pool.principal(workload),
        ] {
            self.allow_impersonation(&caller, target.email());
        }
        // Google requires the role even to act as oneself: a client that
        // goes generateAccessToken -> generateIdToken with the target's own
        // token needs this grant.
        self.allow_impersonation(target.email(), target.email());
        let files = AdcFiles {
            service_account: dir.join("service_account.json"),
            authorized_user: dir.join("authorized_user.json"),
            impersonated_service_account: dir.join("impersonated_service_account.json"),
            impersonated_from_service_account: dir.join("impersonated_from_service_account.json"),
            external_account_file: dir.join("external_account_file.json"),
            external_account_url: dir.join("external_account_url.json"),
        };
        let impersonate = |source: Adc| Adc::Impersonated {
            source: Box::new(source),
            target: target.email().to_owned(),
            delegates: Vec::new(),
        };
        let external = |source: SubjectTokenSource| Adc::ExternalAccount {
            pool: pool.clone(),
            subject: workload.to_owned(),
            source,
            impersonate: Some(target.email().to_owned()),
        };
        self.write_adc(&Adc::ServiceAccount(runner.clone()), &files.service_account)?;
        self.write_adc(&Adc::AuthorizedUser(user.clone()), &files.authorized_user)?;
        self.write_adc(
            &impersonate(Adc::AuthorizedUser(user)),
            &files.impersonated_service_account,
        )?;
        self.write_adc(
            &impersonate(Adc::ServiceAccount(runner)),
            &files.impersonated_from_service_account,
        )?;
        self.write_adc(
            &external(SubjectTokenSource::File(dir.join("subject_token.jwt"))),
            &files.external_account_file,
        )?;
        self.write_adc(
            &external(SubjectTokenSource::Url),
            &files.external_account_url,
        )?;
        Ok(files)
    }

    // ---- control ---------------------------------------------------------

    /// Lifetime of tokens minted from now on (ID and access tokens).
    /// Sub-second parts are dropped; the minimum is 1 s.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.state.set_lifetime(lifetime.as_secs());
    }

    /// The current token lifetime.
    pub fn token_lifetime(&self) -> Duration {
        Duration::from_secs(self.state.lifetime())
    }

    /// Sets the emulator's clock to real time plus `offset_secs` (negative
    /// goes back). It dates minted tokens and judges expiry everywhere.
    pub fn set_clock_offset(&self, offset_secs: i64) {
        self.state.set_clock_offset(offset_secs);
    }

    /// Moves the emulator's clock forward by `by`.
    pub fn advance_clock(&self, by: Duration) {
        self.state
            .advance_clock(i64::try_from(by.as_secs()).unwrap_or(i64::MAX));
    }

    /// The clock offset in seconds.
    pub fn clock_offset(&self) -> i64 {
        self.state.clock_offset()
    }

    /// The emulator's time, unix seconds (real time plus the offset).
    pub fn now(&self) -> u64 {
        self.state.now()
    }

    /// Revokes a token: a JWT (ID token) by its `jti`, so a byte-identical
    /// twin is revoked too but a later token is not; an access or refresh
    /// token as itself. The gate then answers 401, and the token endpoint
    /// refuses revoked refresh tokens.
    pub fn revoke(&self, token: &str) {
        self.state.revoke_token(token);
    }

    /// Revokes by `jti`.
    pub fn revoke_jti(&self, jti: &str) {
        self.state.revoke_id(jti);
    }

    /// Makes the next `times` requests to `endpoint` fail with `fault`
    /// (queued after any faults already pending).
    pub fn inject(&self, endpoint: Endpoint, fault: Fault, times: usize) {
        self.state.inject(endpoint, fault, times);
    }

    /// From now on, each request to `endpoint` that finds no queued fault
    /// ([`inject`](Self::inject) goes first) fails with probability `rate`
    /// (clamped to `0.0..=1.0`), with a fault drawn uniformly from `faults`
    /// (list one twice to weigh it double). Replaces the endpoint's previous
    /// rate; a rate of 0 or no faults turns it off, as does
    /// [`clear_faults`](Self::clear_faults). Each applied fault counts in
    /// [`counter::FAULTS`] and [`counter::faults_by`].
    ///
    /// ```
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use iap_emulator::{Emulator, Endpoint, Fault, counter};
    /// let emu = Emulator::start().await?;
    /// // Three token requests in ten fail: a 503, a 5 s delay or a garbled 200.
    /// emu.inject_at_rate(
    ///     Endpoint::Token,
    ///     0.3,
    ///     [Fault::status(503), Fault::delay(Duration::from_secs(5)), Fault::Malformed],
    /// );
    /// // A rate of 1 faults every request: here always with a 503.
    /// emu.inject_at_rate(Endpoint::Token, 1.0, [Fault::status(503)]);
    /// let answer = reqwest::Client::new().post(emu.token_uri()).send().await?;
    /// assert_eq!(answer.status(), 503);
    /// assert_eq!(emu.counter(&counter::faults_by(&Fault::status(503)), "token"), 1);
    /// # Ok(()) }
    /// ```
    pub fn inject_at_rate(
        &self,
        endpoint: Endpoint,
        rate: f64,
        faults: impl IntoIterator<Item = Fault>,
    ) {
        self.state
            .inject_at_rate(endpoint, rate, faults.into_iter().collect());
    }

    /// Faults still queued for `endpoint`.
    pub fn pending_faults(&self, endpoint: Endpoint) -> usize {
        self.state.pending_faults(endpoint)
    }

    /// Drops every queued fault and turns off every random rate.
    pub fn clear_faults(&self) {
        self.state.clear_faults();
    }

    /// Rotates Google's signing key: a new key signs from now on; the
    /// previous one stays in the JWKS (tokens it signed still verify), the
    /// one before it is retired.
    pub async fn rotate_signing_key(&self) -> Result<(), KeyError> {
        let key = RsaKey::generate_async().await?;
        self.state.rotate_google_key(key);
        Ok(())
    }

    /// The `kid`s in Google's JWKS, current signing key first.
    pub fn signing_key_ids(&self) -> Vec<String> {
        self.state
            .google_keys()
            .iter()
            .map(|k| k.kid().to_owned())
            .collect()
    }

    // ---- observation -----------------------------------------------------

    /// The value of counter (`name`, `label`); 0 if never counted. See
    /// [`counter`] for the names.
    pub fn counter(&self, name: &str, label: &str) -> u64 {
        self.state.counters.get(name, label)
    }

    /// The sum of counter `name` over all labels.
    pub fn counter_total(&self, name: &str) -> u64 {
        self.state.counters.total(name)
    }

    /// Every counter: name -> label -> value.
    pub fn counters(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        self.state.counters.snapshot()
    }

    /// Resets every counter to 0.
    pub fn reset_counters(&self) {
        self.state.counters.reset();
    }

    /// Requests that reached `endpoint` (counter `requests`).
    pub fn requests(&self, endpoint: Endpoint) -> u64 {
        self.counter(counter::REQUESTS, endpoint.name())
    }

    /// ID tokens minted for `audience`, any grant (counter `id_tokens`).
    pub fn id_tokens_issued(&self, audience: &str) -> u64 {
        self.counter(counter::ID_TOKENS, audience)
    }

    /// ID tokens minted for `audience` by `grant`.
    pub fn id_tokens_issued_by(&self, grant: Grant, audience: &str) -> u64 {
        self.counter(&counter::id_tokens_by(grant), audience)
    }
}
