//! The IAP gate: Identity-Aware Proxy in front of apps, on loopback.
//!
//! Every app gets its own listener on `127.0.0.1` (its own origin) and its
//! own IAP identity: an OAuth client ID (`NUMBER-xxxx.apps.googleusercontent.com`,
//! the audience clients need), a project number, a backend service ID and
//! an allowlist of programmatic client IDs. The gate in front of it does
//! what IAP does (`docs/iap-signed-header.md` has the assertion), in three forms:
//!
//! - a tower layer, [`IapGateLayer`] / [`IapGate`], for a server you run
//!   yourself (axum, hyper, tonic; HTTP/1.1 and HTTP/2): [`Emulator::gate_layer`];
//! - a reverse proxy in front of a URL: [`AppBuilder::proxy_to`];
//! - the built-in echo app: [`Emulator::app`] (started with the emulator)
//!   and [`AppBuilder::echo`].
//!
//! ```
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
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
//! // The signed assertion beside it names the plain address.
//! assert!(echo["headers"]["x-goog-iap-jwt-assertion"].is_string());
//! # Ok(()) }
//! ```
//!
//! # What passes
//!
//! A bearer token that is either
//! - a Google ID token from the emulator (RS256, a published `kid`), `iss`
//!   `https://accounts.google.com` or `accounts.google.com`, `aud` the app's
//!   [client ID](App::client_id) (unless the app is on a
//!   [Google-managed client](AppBuilder::google_managed_client)) or one of
//!   its [allowlisted clients](App::allow_client), a string `email`; or
//! - a service-account JWT: `iss` = `sub` = the account's email, signed
//!   with one of its keys (a key file's, `kid` = `private_key_id`, or the
//!   Google-managed key IAM `signJwt` uses), `aud` = the exact request URL
//!   `SCHEME://HOST[:PORT]/path` (no query), `SCHEME://HOST[:PORT]/*`, or a
//!   path prefix `SCHEME://HOST[:PORT]/PREFIX/*` covering the paths below
//!   `/PREFIX/`, `exp <= iat + 3600`. The scheme and authority
//!   are those of the app's [public URL](AppBuilder::public_url), by default
//!   the app's own `http://127.0.0.1:PORT` (`https://` with [`EmulatorBuilder::tls`](crate::EmulatorBuilder::tls); apps are on
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
//! | `managed_client` | `Invalid IAP credentials: This application uses a Google-managed OAuth client: ID tokens are accepted only from programmatic clients on its allowlist, or use a service-account JWT.` (the emulator's own wording; in place of `audience` on a [Google-managed client](AppBuilder::google_managed_client)) |
//!
//! Checks run in the order of the table (issuer before signature), and the
//! first failure answers.
//!
//! Before any such answer to an HTTP/1.1 request, the gate reads the
//! request body to its end (and throws it away), as Google's front end
//! does, so a client still sending an upload sees the answer instead of a
//! reset connection; a body longer than [`MAX_DRAINED_BODY`] (1 MiB) is
//! answered once that much is read, with `Connection: close`. HTTP/2
//! bodies and those of requests sent with `Expect: 100-continue` are not
//! read. Counters count the request once, as it arrives.
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
//!   [`Emulator::iap_jwks_url`] (`/iap/verify/public_key-jwk`, served with
//!   `Cache-Control: public, max-age=3600`, see
//!   [`Emulator::set_assertion_keys_max_age`]) and
//!   [`Emulator::iap_public_key_url`] (the PEM map), claims `iss`
//!   `https://cloud.google.com/iap`, `aud` = `azp` = [`App::assertion_audience`]
//!   (`/projects/NUMBER/global/backendServices/ID`, or the
//!   [App Engine](AppBuilder::app_engine) or [Cloud Run](AppBuilder::cloud_run)
//!   shape), `email` the plain address, `sub` = `accounts.google.com:` and
//!   the user ID, `identity_source` `GOOGLE`, `google.access_levels` when
//!   the app [has some](AppBuilder::access_levels), `iat`, `exp` = `iat + 600`;
//! - `x-goog-authenticated-user-email: accounts.google.com:EMAIL`;
//! - `x-goog-authenticated-user-id: accounts.google.com:SUB` (the token's
//!   `sub`; for a self-signed JWT, the service account's numeric unique ID).
//!
//! An app made [`signed_in_as`](AppBuilder::signed_in_as) a user lets
//! requests without any token through as that user (a browser's IAP
//! session, for `iap emulator --front`); counted in `gate.accepted` under
//! `signed-in:EMAIL`.
//!
//! IAP's assertion key rotates with [`Emulator::rotate_assertion_key`]
//! (`POST /_emulator/rotate-assertion-keys`, answering `{"kids"}`, current
//! first): the previous key stays published, the one before is retired.
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
//! `google_managed_client`, `default`); `POST /_emulator/apps/allow` and `/_emulator/apps/disallow`
//! with `{"app": IAP_CLIENT_ID, "client_id": PROGRAMMATIC_CLIENT_ID}` edit an
//! app's allowlist (404 for an unknown app). IAP's assertions:
//!
//! | Method and path | Body | Answer |
//! |---|---|---|
//! | `POST /_emulator/rotate-assertion-keys` | | `{"kids"}` current first |
//! | `POST /_emulator/assertion-keys/max-age` | `{"seconds"}` | `{"seconds"}` |
//! | `POST /_emulator/assertions` | `{"email", "app"?}` (an IAP client ID; default app) or `{"claims"}` | `{"assertion"}`: [`Emulator::mint_assertion`] / [`Emulator::sign_assertion`] |
//!
//! # Faults
//!
//! Faults injected for [`Endpoint::Gate`] apply to
//! every app's gate: a status answers in the app's place (with
//! `X-Goog-IAP-Generated-Response: true`), a delay postpones the gate's
//! answer, `malformed` answers 200 with garbage, and `reset` drops the
//! connection (in a server you run yourself, where the gate cannot reach
//! the connection, an empty 502 instead).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State as AxumState};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

mod app;
mod assertion;
mod builder;
pub(crate) mod counter;
mod echo;
mod future;
mod layer;
mod proxy;
pub(crate) mod registry;
mod service;
mod verify;

pub use app::App;
pub use builder::AppBuilder;
pub use future::{GateBody, MAX_DRAINED_BODY, ResponseFuture};
pub use layer::IapGateLayer;
pub use service::IapGate;

use crate::endpoint::Endpoint;
use crate::server::ConnControl;
use crate::state::State;
use crate::{Emulator, KeyError};

/// The gate's routes on the main server: IAP's public keys, and the apps
/// over HTTP for non-Rust peers.
pub(crate) fn routes() -> Router<Arc<State>> {
    Router::new()
        .route("/iap/verify/public_key-jwk", get(public_keys))
        .route("/iap/verify/public_key", get(public_keys_pem))
        .route("/_emulator/apps", get(list_apps))
        .route("/_emulator/apps/allow", post(allow_client))
        .route("/_emulator/apps/disallow", post(disallow_client))
        .route(
            "/_emulator/rotate-assertion-keys",
            post(rotate_assertion_keys),
        )
        .route(
            "/_emulator/assertion-keys/max-age",
            post(assertion_keys_max_age),
        )
        .route("/_emulator/assertions", post(mint_assertion))
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
        "google_managed_client": app.is_google_managed_client(),
        "signed_in_as": app.signed_in_as(),
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

/// `POST /_emulator/rotate-assertion-keys`: `{"kids"}`, current first.
async fn rotate_assertion_keys(AxumState(state): AxumState<Arc<State>>) -> Response {
    let emulator = Emulator::view(state);
    match emulator.rotate_assertion_key() {
        Ok(()) => {
            axum::Json(serde_json::json!({"kids": emulator.assertion_key_ids()})).into_response()
        }
        Err(e) => crate::fault::api_error_for(500, &e.to_string()),
    }
}

#[derive(serde::Deserialize)]
struct MaxAge {
    seconds: u64,
}

/// `POST /_emulator/assertion-keys/max-age {"seconds"}`.
async fn assertion_keys_max_age(
    AxumState(state): AxumState<Arc<State>>,
    axum::Json(body): axum::Json<MaxAge>,
) -> Response {
    state.gate.set_keys_max_age(body.seconds);
    axum::Json(serde_json::json!({"seconds": state.gate.keys_max_age()})).into_response()
}

/// Body of `POST /_emulator/assertions`: an app and a user, or raw claims.
#[derive(serde::Deserialize)]
struct NewAssertion {
    /// The app, by its IAP client ID (default: the default app).
    app: Option<String>,
    email: Option<String>,
    claims: Option<serde_json::Value>,
}

/// `POST /_emulator/assertions`: `{"email", "app"?}` as the gate would sign
/// it now, or `{"claims"}` signed as they are; answers `{"assertion"}`.
async fn mint_assertion(
    AxumState(state): AxumState<Arc<State>>,
    axum::Json(body): axum::Json<NewAssertion>,
) -> Response {
    let emulator = Emulator::view(state.clone());
    let assertion = match (body.claims, body.email) {
        (Some(claims), None) => emulator.sign_assertion(&claims),
        (None, Some(email)) => {
            let app = match &body.app {
                Some(client_id) => find_app(&state, client_id),
                None => state.gate.default_app(),
            };
            let Some(app) = app else {
                return no_such_app(body.app.as_deref().unwrap_or("(default app)"));
            };
            emulator.mint_assertion(&app, &email)
        }
        _ => {
            return crate::fault::api_error_for(400, "give exactly one of email, claims");
        }
    };
    axum::Json(serde_json::json!({ "assertion": assertion })).into_response()
}

async fn public_keys(AxumState(state): AxumState<Arc<State>>, req: Request) -> Response {
    published_keys(&state, req, assertion::jwks).await
}

async fn public_keys_pem(AxumState(state): AxumState<Arc<State>>, req: Request) -> Response {
    published_keys(&state, req, assertion::pem_map).await
}

/// IAP's keys in one of their two forms, with `Cache-Control: max-age`.
async fn published_keys(
    state: &State,
    req: Request,
    form: fn(&[Arc<assertion::AssertionSigner>]) -> serde_json::Value,
) -> Response {
    let conn = req.extensions().get::<ConnControl>();
    if let Some(answer) = crate::fault::intercept(state, Endpoint::IapJwks, conn).await {
        return answer;
    }
    let mut response = axum::Json(form(&state.gate.assertion_keys())).into_response();
    if let Ok(value) =
        http::HeaderValue::try_from(format!("public, max-age={}", state.gate.keys_max_age()))
    {
        response
            .headers_mut()
            .insert(http::header::CACHE_CONTROL, value);
    }
    response
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

    /// IAP's key set as a `kid -> PEM public key` map (what Google serves at
    /// `https://www.gstatic.com/iap/verify/public_key`):
    /// `http://127.0.0.1:PORT/iap/verify/public_key`. The JWK form is
    /// [`iap_jwks_url`](Emulator::iap_jwks_url). Both count as endpoint
    /// [`IapJwks`](Endpoint::IapJwks).
    pub fn iap_public_key_url(&self) -> String {
        format!("{}/iap/verify/public_key", self.state.base_url)
    }

    /// Rotates IAP's assertion signing key: a new key signs from now on, the
    /// previous one stays published (assertions it signed still verify),
    /// the one before it is retired.
    pub fn rotate_assertion_key(&self) -> Result<(), KeyError> {
        if self.state.gate.rotate_assertion_key() {
            Ok(())
        } else {
            Err(KeyError)
        }
    }

    /// The `kid`s of IAP's published assertion keys, current first.
    pub fn assertion_key_ids(&self) -> Vec<String> {
        self.state
            .gate
            .assertion_keys()
            .iter()
            .map(|k| k.kid().to_owned())
            .collect()
    }

    /// The `Cache-Control: max-age` IAP's keys are served with (default
    /// 3600 s); whole seconds.
    pub fn set_assertion_keys_max_age(&self, max_age: Duration) {
        self.state.gate.set_keys_max_age(max_age.as_secs());
    }

    /// The assertion the gate would add for `email` on a request to `app`
    /// now (by the emulator's clock), signed with IAP's current key (empty
    /// only if the system's random source failed to make a key).
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let emulator = iap_emulator::Emulator::start().await?;
    /// let assertion = emulator.mint_assertion(&emulator.app(), "alice@example.com");
    /// assert_eq!(assertion.split('.').count(), 3);
    /// # Ok(()) }
    /// ```
    pub fn mint_assertion(&self, app: &App, email: &str) -> String {
        let sub = self.state.user_id(email);
        self.state
            .gate
            .signer()
            .and_then(|signer| {
                signer.sign(
                    self.state.now(),
                    &assertion::Subject {
                        audience: app.assertion_audience(),
                        email,
                        sub: &sub,
                        access_levels: app.access_levels(),
                    },
                )
            })
            .unwrap_or_default()
    }

    /// Any claims, signed as an assertion with IAP's current key (header
    /// `{"alg":"ES256","kid":..,"typ":"JWT"}`): for testing a verifier
    /// against claims the gate would never send (another issuer, `hd`, ...).
    pub fn sign_assertion(&self, claims: &serde_json::Value) -> String {
        self.state
            .gate
            .signer()
            .and_then(|signer| signer.sign_claims(claims))
            .unwrap_or_default()
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
