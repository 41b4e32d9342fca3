//! Set-up shared by the integration tests: the emulator with an app behind
//! its gate and an `IapAuth` on its metadata server scoped to that app, the
//! middleware in a reqwest-middleware client, and the emulator's counters.

// Each test binary compiles this module and uses a part of it.
#![allow(dead_code)]

use iap_emulator::{App, Emulator};
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
