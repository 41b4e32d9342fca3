//! Set-up shared by the integration tests: the emulator with an app behind
//! its gate and an `IapAuth` on its metadata server scoped to that app, the
//! middleware in a reqwest-middleware client, and the emulator's counters.

// Each test binary compiles this module and uses a part of it.
#![allow(dead_code)]

use iap_emulator::{App, Emulator, counter};
use iap_reqwest::IapMiddleware;
use iap_token::auth::IapAuthBuilder;
use iap_token::policy::Placement;
use iap_token::source::metadata::MetadataSource;
use iap_token::{IapAuth, IdToken};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};

/// A started emulator, its default app, and an `IapAuth` scoped to it
/// (see [`auth_for`]).
pub async fn gated_app(placement: Placement) -> (Emulator, App, IapAuth) {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let auth = auth_for(&emu, &app, placement);
    (emu, app, auth)
}

/// `http://127.0.0.1:PORT` of `app`.
pub fn origin(app: &App) -> String {
    app.url().origin().ascii_serialization()
}

/// An `IapAuth` builder whose source is the emulator's metadata server.
pub fn metadata_auth(emu: &Emulator) -> IapAuthBuilder {
    IapAuth::builder().source(MetadataSource::with_host(&emu.metadata_host()).unwrap())
}

/// An `IapAuth` on the emulator's metadata server, scoped to `app`.
pub fn auth_for(emu: &Emulator, app: &App, placement: Placement) -> IapAuth {
    metadata_auth(emu)
        .audience(app.client_id())
        .allow_origin(origin(app))
        .placement(placement)
        .build()
        .unwrap()
}

/// A reqwest-middleware client with the middleware for `auth`.
pub fn client(auth: &IapAuth) -> ClientWithMiddleware {
    client_with(IapMiddleware::new(auth.clone()))
}

/// A reqwest-middleware client with `middleware` (configured by the test).
pub fn client_with(middleware: IapMiddleware) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(middleware)
        .build()
}

/// The URL of `path` on `app`.
pub fn url(app: &App, path: &str) -> reqwest::Url {
    app.url().join(path).unwrap()
}

/// The token the middleware would attach now.
pub async fn current_token(auth: &IapAuth, app: &App) -> IdToken {
    auth.token_for(&app.url().as_str().parse().unwrap())
        .await
        .unwrap()
        .unwrap()
}

/// Revokes the token the middleware would attach now; returns it.
pub async fn revoke_current_token(emu: &Emulator, auth: &IapAuth, app: &App) -> IdToken {
    let token = current_token(auth, app).await;
    emu.revoke(token.as_str());
    token
}

/// ID tokens the emulator issued for `app`.
pub fn tokens(emu: &Emulator, app: &App) -> u64 {
    emu.counter(counter::ID_TOKENS, app.client_id())
}

/// The gate's 401s for `app`.
pub fn gate_401s(emu: &Emulator, app: &App) -> u64 {
    emu.counter(counter::GATE_401, app.client_id())
}

/// The gate's 401s for `app` to requests that carried no token.
pub fn empty_token_401s(emu: &Emulator, app: &App) -> u64 {
    emu.counter(&counter::gate_401_by("empty_token"), app.client_id())
}

/// Requests the gate let through to `app` with the token in
/// `Proxy-Authorization`.
pub fn proxy_authorization_passes(emu: &Emulator, app: &App) -> u64 {
    emu.counter(counter::GATE_PROXY_AUTHORIZATION, app.client_id())
}

/// Requests that reached `app` itself.
pub fn app_hits(emu: &Emulator, app: &App) -> u64 {
    emu.counter(counter::APP_HITS, app.client_id())
}
