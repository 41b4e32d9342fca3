//! The IAP gate: Identity-Aware Proxy in front of apps, on loopback.
//!
//! Every app gets its own listener on `127.0.0.1` (its own origin) and its
//! own IAP identity: an OAuth client ID (`NUMBER-xxxx.apps.googleusercontent.com`,
//! the audience clients need), a project number, a backend service ID and
//! an allowlist of programmatic client IDs. The gate in front of it does
//! what IAP does (see `docs/iap-gate.md`), in three forms:
//!
//! - a tower layer, [`IapGateLayer`] / [`IapGate`], for a server you run
//!   yourself (axum, hyper, tonic; HTTP/1.1 and HTTP/2): [`Emulator::gate_layer`];
//! - a reverse proxy in front of a URL: [`AppBuilder::proxy_to`];
//! - the built-in echo app: [`Emulator::app`] (started with the emulator)
//!   and [`AppBuilder::echo`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use iap_emulator::Emulator;
//!
//! let emu = Emulator::start().await?;
//! let app = emu.app();
//! let token = emu.mint_id_token(app.client_id(), "alice@example.com");
//! let answer = reqwest::Client::new()
//!     .get(app.url().join("/hello")?)
//!     .bearer_auth(&token)
//!     .send()
//!     .await?;
//! assert_eq!(answer.status(), 200);
//! let echo: serde_json::Value = answer.json().await?;
//! assert_eq!(
//!     echo["headers"]["x-goog-authenticated-user-email"],
//!     "accounts.google.com:alice@example.com"
//! );
//! # Ok(()) }
//! ```
//!
//! # What passes
//!
//! A bearer token that is either
//! - a Google ID token from the emulator (RS256, a published `kid`), `iss`
//!   `https://accounts.google.com` or `accounts.google.com`, `aud` the app's
//!   [client ID](App::client_id) or one of its
//!   [allowlisted clients](App::allow_client), a string `email`; or
//! - a self-signed service-account JWT: `iss` = `sub` = the account's email,
//!   signed with a key the emulator minted for it (`kid` = `private_key_id`),
//!   `aud` = the exact request URL `SCHEME://HOST[:PORT]/path` (no query) or
//!   `SCHEME://HOST[:PORT]/*`, `exp <= iat + 3600`. The scheme and authority
//!   are those of the app's [public URL](AppBuilder::public_url), by default
//!   the app's own `http://127.0.0.1:PORT` (apps here are plain HTTP on
//!   loopback), so a client that builds `aud` from the URL it calls is
//!   accepted; set a public URL to test `https://app.example.com/*`.
//!
//! and, for both, unexpired by the emulator's clock (`now < exp`, no
//! leeway, [`Emulator::advance_clock`] moves it) and not
//! [revoked](Emulator::revoke) (by `jti`).
//!
//! # Where the token goes
//!
//! When `Proxy-Authorization: Bearer T` holds a valid token, the gate
//! authorizes with it and passes `Authorization` to the app untouched.
//! Otherwise it decides on `Authorization: Bearer T`. `Proxy-Authorization`
//! never reaches the app. Other schemes (`Basic ...`) count as no token.
//! With an invalid `Proxy-Authorization` and no `Authorization`, the 401
//! names what is wrong with the `Proxy-Authorization` token.
//!
//! # What IAP answers itself
//!
//! Every such answer carries `X-Goog-IAP-Generated-Response: true`.
//!
//! - No token, and the request looks like a browser's (`GET` with `Accept`
//!   containing `text/html`): `302` to
//!   `https://accounts.google.com/o/oauth2/v2/auth?client_id=CLIENT_ID&response_type=code&scope=openid+email&redirect_uri=https%3A%2F%2Fiap.googleapis.com%2Fv1%2Foauth%2FclientIds%2FCLIENT_ID%3AhandleRedirect&state=...`.
//! - Otherwise `401`, `Content-Type: text/html; charset=UTF-8`, with one of
//!   these bodies:
//!
//! | Reason (counter suffix) | Body |
//! |---|---|
//! | `empty_token` | `Invalid IAP credentials: empty token` |
//! | `unparsable` | `Invalid IAP credentials: Unable to parse JWT` |
//! | `issuer` | `Invalid IAP credentials: Invalid JWT issuer.` (unconfirmed wording) |
//! | `signature` | `Invalid IAP credentials: JWT signature is invalid` (also: unknown `kid`, not RS256) |
//! | `expired` | `OpenID Connect token expired: JWT has expired` (seen from real IAP, kubeflow/pipelines#4321) |
//! | `revoked` | `Invalid IAP credentials: JWT has been revoked` (the emulator's own: IAP cannot revoke ID tokens) |
//! | `lifetime` | `Invalid IAP credentials: JWT lifetime is longer than one hour` (unconfirmed wording) |
//! | `audience` | `Invalid IAP credentials: Invalid bearer token. Invalid JWT audience.` |
//! | `email` | `Invalid IAP credentials: JWT 'email' claim isn't a string` |
//!
//! Checks run in the order of the table (issuer before signature), and the
//! first failure answers.
//!
//! To a gRPC request (`Content-Type: application/grpc...`) these answers
//! also carry `grpc-status` (401 -> 16 `UNAUTHENTICATED`, 503 -> 14
//! `UNAVAILABLE`, ..., gRPC's HTTP mapping) and `grpc-message` (the body
//! text), a trailers-only gRPC response: without them tonic reads the text
//! body as a gRPC frame and reports `Internal`. Whether real IAP does this
//! is unconfirmed.
//!
//! # What the app receives
//!
//! The request as sent, minus `Proxy-Authorization` and minus every
//! `x-goog-*` header the client sent, plus:
//! - `x-goog-iap-jwt-assertion`: ES256 JWT, header `kid`, keys at
//!   [`Emulator::iap_jwks_url`] (`/iap/verify/public_key-jwk`), claims `iss`
//!   `https://cloud.google.com/iap`, `aud` [`App::assertion_audience`]
//!   (`/projects/NUMBER/global/backendServices/ID`), `email` and `sub`
//!   prefixed `accounts.google.com:`, `iat`, `exp` = `iat + 600`;
//! - `x-goog-authenticated-user-email: accounts.google.com:EMAIL`;
//! - `x-goog-authenticated-user-id: accounts.google.com:SUB` (the token's
//!   `sub`; for a self-signed JWT, the service account's numeric unique ID).
//!
//! # The echo app
//!
//! Answers `200` with JSON `{"method","path","query","version","headers","body_len"}`:
//! the headers it received (IAP's included; repeated headers joined with
//! `", "`), the body's length (read to the end). `/status/CODE` answers
//! with that status and the same JSON, as the app's own answer (no
//! `X-Goog-IAP-Generated-Response`): `/status/401` is "the app's own 401".
//!
//! # Counters
//!
//! Read with [`Emulator::counter`]`(name, label)`:
//!
//! | Name | Label | Counts |
//! |---|---|---|
//! | [`GATE_401`](crate::counter::GATE_401) `gate.401` | app client ID | IAP 401s |
//! | `gate.401.<reason>` ([`gate_401_by`](crate::counter::gate_401_by)) | app client ID | IAP 401s for that reason (table above) |
//! | [`GATE_302`](crate::counter::GATE_302) `gate.302` | app client ID | IAP redirects to sign-in |
//! | [`APP_HITS`](crate::counter::APP_HITS) `app.hits` | app client ID | requests passed to the app |
//! | [`GATE_ACCEPTED`](crate::counter::GATE_ACCEPTED) `gate.accepted` | token `jti` (else `sha256:` + 16 hex digits of the token's SHA-256) | requests let through with that token |
//! | [`GATE_PROXY_AUTHORIZATION`](crate::counter::GATE_PROXY_AUTHORIZATION) `gate.proxy_authorization` | app client ID | requests authorized by `Proxy-Authorization` |
//!
//! plus the emulator-wide `requests` and `faults` with label `gate`.
//!
//! # Over HTTP
//!
//! For non-Rust peers, on the main server: `GET /_emulator/apps` lists the
//! apps (`url`, `public_url`, `client_id`, `project_id`, `project_number`,
//! `backend_service_id`, `assertion_audience`, `allowed_clients`,
//! `default`); `POST /_emulator/apps/allow` and `/_emulator/apps/disallow`
//! with `{"app": IAP_CLIENT_ID, "client_id": PROGRAMMATIC_CLIENT_ID}` edit an
//! app's allowlist (404 for an unknown app).
//!
//! # Faults
//!
//! Faults injected for [`Endpoint::Gate`] apply to
//! every app's gate: a status answers in the app's place (with
//! `X-Goog-IAP-Generated-Response: true`), a delay postpones the gate's
//! answer, `malformed` answers 200 with garbage, and `reset` drops the
//! connection (in a server you run yourself, where the gate cannot reach
//! the connection, an empty 502 instead).

use std::sync::{Arc, OnceLock, RwLock};

use axum::Router;
use axum::extract::{Request, State as AxumState};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

mod app;
mod assertion;
mod echo;
mod future;
mod layer;
mod proxy;
mod service;
mod verify;

pub use app::{App, AppBuilder};
pub use future::ResponseFuture;
pub use layer::IapGateLayer;
pub use service::IapGate;

use crate::Emulator;
use crate::fault::Endpoint;
use crate::server::ConnControl;
use crate::state::{State, read, write};

/// The response body of an [`IapGate`]: the app's own body
/// ([`Left`](http_body_util::Either::Left)) or the gate's answer
/// ([`Right`](http_body_util::Either::Right)).
pub type GateBody<B> = http_body_util::Either<B, axum::body::Body>;

/// The gate's counter names (re-exported in [`crate::counter`]).
pub(crate) mod counter {
    /// IAP 401s; label = app client ID.
    pub const GATE_401: &str = "gate.401";
    /// IAP 302s to Google's sign-in; label = app client ID.
    pub const GATE_302: &str = "gate.302";
    /// Requests passed to the app; label = app client ID.
    pub const APP_HITS: &str = "app.hits";
    /// Requests let through, by token; label = the token's `jti` (else
    /// `sha256:` and 16 hex digits of its SHA-256).
    pub const GATE_ACCEPTED: &str = "gate.accepted";
    /// Requests authorized by `Proxy-Authorization`; label = app client ID.
    pub const GATE_PROXY_AUTHORIZATION: &str = "gate.proxy_authorization";

    /// The counter of IAP 401s for one reason, by app client ID:
    /// `gate.401.expired`, `gate.401.audience`, ... (reasons in the
    /// [gate docs](crate::gate#what-iap-answers-itself)).
    pub fn gate_401_by(reason: &str) -> String {
        format!("{GATE_401}.{reason}")
    }
}

/// The gate's part of the emulator state: IAP's signing key and the apps.
#[derive(Debug, Default)]
pub(crate) struct GateRegistry {
    signer: OnceLock<Option<assertion::AssertionSigner>>,
    apps: RwLock<Vec<App>>,
    default_app: OnceLock<App>,
}

impl GateRegistry {
    /// IAP's assertion signing key, made on first use.
    pub(crate) fn signer(&self) -> Option<&assertion::AssertionSigner> {
        self.signer
            .get_or_init(assertion::AssertionSigner::generate)
            .as_ref()
    }

    pub(crate) fn register(&self, app: App) {
        write(&self.apps).push(app);
    }

    /// Every app, in creation order (the default app first).
    pub(crate) fn apps(&self) -> Vec<App> {
        read(&self.apps).clone()
    }

    /// The default echo app, if the emulator started one.
    pub(crate) fn default_app(&self) -> Option<App> {
        self.default_app.get().cloned()
    }
}

/// The gate's routes on the main server: IAP's public keys, and the apps
/// over HTTP for non-Rust peers.
pub(crate) fn routes() -> Router<Arc<State>> {
    Router::new()
        .route("/iap/verify/public_key-jwk", get(public_keys))
        .route("/_emulator/apps", get(list_apps))
        .route("/_emulator/apps/allow", post(allow_client))
        .route("/_emulator/apps/disallow", post(disallow_client))
}

fn app_json(app: &App, default: bool) -> serde_json::Value {
    serde_json::json!({
        "url": app.url().as_str(),
        "public_url": app.public_url().as_str(),
        "client_id": app.client_id(),
        "project_id": app.project_id(),
        "project_number": app.project_number(),
        "backend_service_id": app.backend_service_id(),
        "assertion_audience": app.assertion_audience(),
        "allowed_clients": app.allowed_clients(),
        "default": default,
    })
}

/// `GET /_emulator/apps`: every app, the default one marked.
async fn list_apps(AxumState(state): AxumState<Arc<State>>) -> Response {
    let default = state.gate.default_app();
    let apps: Vec<_> = state
        .gate
        .apps()
        .iter()
        .map(|app| {
            let is_default = default
                .as_ref()
                .is_some_and(|d| d.client_id() == app.client_id());
            app_json(app, is_default)
        })
        .collect();
    axum::Json(apps).into_response()
}

/// Body of `POST /_emulator/apps/allow` and `/disallow`.
#[derive(serde::Deserialize)]
struct AllowRequest {
    /// The app, by its IAP client ID.
    app: String,
    /// The programmatic client ID to allow or disallow.
    client_id: String,
}

fn find_app(state: &State, client_id: &str) -> Option<App> {
    state
        .gate
        .apps()
        .into_iter()
        .find(|app| app.client_id() == client_id)
}

fn no_such_app(client_id: &str) -> Response {
    crate::fault::api_error_for(404, &format!("no app with IAP client ID {client_id}"))
}

/// `POST /_emulator/apps/allow {"app","client_id"}`: adds to the allowlist.
async fn allow_client(
    AxumState(state): AxumState<Arc<State>>,
    axum::Json(body): axum::Json<AllowRequest>,
) -> Response {
    match find_app(&state, &body.app) {
        Some(app) => {
            app.allow_client(body.client_id);
            axum::Json(app_json(&app, false)).into_response()
        }
        None => no_such_app(&body.app),
    }
}

/// `POST /_emulator/apps/disallow {"app","client_id"}`: removes from it.
async fn disallow_client(
    AxumState(state): AxumState<Arc<State>>,
    axum::Json(body): axum::Json<AllowRequest>,
) -> Response {
    match find_app(&state, &body.app) {
        Some(app) => {
            app.disallow_client(&body.client_id);
            axum::Json(app_json(&app, false)).into_response()
        }
        None => no_such_app(&body.app),
    }
}

async fn public_keys(AxumState(state): AxumState<Arc<State>>, req: Request) -> Response {
    let conn = req.extensions().get::<ConnControl>();
    if let Some(answer) = crate::fault::intercept(&state, Endpoint::IapJwks, conn).await {
        return answer;
    }
    let keys = match state.gate.signer() {
        Some(signer) => signer.jwks(),
        None => serde_json::json!({ "keys": [] }),
    };
    axum::Json(keys).into_response()
}

/// Starts the default echo app (called by the emulator's builder).
pub(crate) async fn start_default_app(emulator: &Emulator) -> std::io::Result<App> {
    let app = emulator.create_app().echo().await?;
    let _ = emulator.state.gate.default_app.set(app.clone());
    Ok(app)
}

impl Emulator {
    /// The default echo app behind the gate, started with the emulator.
    ///
    /// # Panics
    ///
    /// If the emulator was started
    /// [`without_default_app`](crate::EmulatorBuilder::without_default_app).
    pub fn app(&self) -> App {
        match self.state.gate.default_app() {
            Some(app) => app,
            None => panic!("this emulator was started without_default_app(): use create_app()"),
        }
    }

    /// Every app behind the gate, in creation order.
    pub fn apps(&self) -> Vec<App> {
        self.state.gate.apps()
    }

    /// Makes another app behind the gate: choose its identity, then
    /// [`echo`](AppBuilder::echo), [`proxy_to`](AppBuilder::proxy_to),
    /// [`serve`](AppBuilder::serve) or [`hosted_at`](AppBuilder::hosted_at).
    pub fn create_app(&self) -> AppBuilder<'_> {
        AppBuilder::new(self)
    }

    /// The gate of `app` as a tower layer, for a server you run yourself.
    pub fn gate_layer(&self, app: &App) -> IapGateLayer {
        IapGateLayer::new(self, app)
    }

    /// IAP 401s `app`'s gate answered (counter `gate.401`).
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let emulator = iap_emulator::Emulator::start().await?;
    /// let app = emulator.app();
    /// reqwest::get(app.url().clone()).await?; // no token
    /// assert_eq!(emulator.gate_401s(&app), 1);
    /// assert_eq!(emulator.gate_401s_for(&app, "empty_token"), 1);
    /// assert_eq!(emulator.app_hits(&app), 0);
    /// # Ok(()) }
    /// ```
    pub fn gate_401s(&self, app: &App) -> u64 {
        self.counter(counter::GATE_401, app.client_id())
    }

    /// IAP 401s of `app`'s gate for one reason (`empty_token`, `expired`,
    /// `revoked`, `audience`, ...; see [what IAP answers itself](crate::gate#what-iap-answers-itself)).
    pub fn gate_401s_for(&self, app: &App, reason: &str) -> u64 {
        self.counter(&counter::gate_401_by(reason), app.client_id())
    }

    /// IAP 302s to Google's sign-in that `app`'s gate answered (counter `gate.302`).
    pub fn gate_302s(&self, app: &App) -> u64 {
        self.counter(counter::GATE_302, app.client_id())
    }

    /// Requests the gate let through to `app` on a `Proxy-Authorization`
    /// token (counter `gate.proxy_authorization`).
    pub fn proxy_authorization_passes(&self, app: &App) -> u64 {
        self.counter(counter::GATE_PROXY_AUTHORIZATION, app.client_id())
    }

    /// Requests that reached `app` itself (counter `app.hits`).
    pub fn app_hits(&self, app: &App) -> u64 {
        self.counter(counter::APP_HITS, app.client_id())
    }
}
