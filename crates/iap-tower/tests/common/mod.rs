//! Set-up shared by the integration tests: the emulator with an app behind
//! its gate and an `IapAuth` on its metadata server scoped to that app, the
//! layer over a hyper-util client, requests, and the emulator's counters.

// Each test binary compiles this module and uses a part of it.
#![allow(dead_code)]

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use iap_emulator::{App, Emulator};
use iap_token::auth::IapAuthBuilder;
use iap_token::policy::Placement;
use iap_token::source::metadata::MetadataSource;
use iap_token::{IapAuth, IdToken};
use iap_tower::{BoxError, IapLayer, IapService};
use tower::{Service, ServiceBuilder, ServiceExt};

/// A hyper-util client behind the layer.
pub type Http<B> = IapService<Client<HttpConnector, B>>;

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

/// The layer for `auth` over a hyper-util client (HTTP/2 only if `http2`).
pub fn client<B>(auth: &IapAuth, http2: bool) -> Http<B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let client = Client::builder(TokioExecutor::new())
        .http2_only(http2)
        .build_http();
    ServiceBuilder::new()
        .layer(IapLayer::new(auth.clone()))
        .service(client)
}

/// `layer` (configured by the test) over a hyper-util HTTP/1 client.
pub fn client_with<B>(layer: IapLayer) -> Http<B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    ServiceBuilder::new()
        .layer(layer)
        .service(Client::builder(TokioExecutor::new()).build_http())
}

/// A GET to `path` of `app`.
pub fn get(app: &App, path: &str) -> Request<Full<Bytes>> {
    Request::get(app.url().join(path).unwrap().as_str())
        .body(Full::default())
        .unwrap()
}

/// A POST of `body` to `path` of `app`.
pub fn post<B>(app: &App, path: &str, body: B) -> Request<B> {
    Request::post(app.url().join(path).unwrap().as_str())
        .body(body)
        .unwrap()
}

/// `req` carrying the app's own credentials, `Authorization: Bearer the-apps-own`.
pub fn with_apps_own_authorization<B>(mut req: Request<B>) -> Request<B> {
    req.headers_mut().insert(
        header::AUTHORIZATION,
        "Bearer the-apps-own".parse().unwrap(),
    );
    req
}

/// `body` as the boxed body type a client for any body takes.
pub fn boxed<B>(body: B) -> UnsyncBoxBody<Bytes, BoxError>
where
    B: http_body::Body<Data = Bytes, Error = Infallible> + Send + 'static,
{
    body.map_err(|e: Infallible| match e {}).boxed_unsync()
}

/// Sends `req` through `svc`: the status and the echo app's JSON (null if
/// the body is not JSON).
pub async fn send<B>(svc: &mut Http<B>, req: Request<B>) -> (StatusCode, serde_json::Value)
where
    Http<B>:
        Service<Request<B>, Response = http::Response<hyper::body::Incoming>, Error = BoxError>,
{
    let response = svc.ready().await.unwrap().call(req).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// Sends `n` GETs to `app` through clones of `svc` at once: their statuses.
pub async fn burst(svc: &Http<Full<Bytes>>, app: &App, n: usize) -> Vec<StatusCode> {
    let calls = (0..n).map(|_| svc.clone().oneshot(get(app, "/")));
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|response| response.unwrap().status())
        .collect()
}

/// The token the layer would attach now.
pub async fn current_token(auth: &IapAuth, app: &App) -> IdToken {
    auth.token_for(&app.url().as_str().parse().unwrap())
        .await
        .unwrap()
        .unwrap()
}

/// Revokes the token the layer would attach now; returns it.
pub async fn revoke_current_token(emu: &Emulator, auth: &IapAuth, app: &App) -> IdToken {
    let token = current_token(auth, app).await;
    emu.revoke(token.as_str());
    token
}

/// A chunked body (no size known ahead): `chunks` chunks of `chunk_len`
/// bytes, each made only when the previous one was taken.
pub fn chunked(chunk_len: usize, chunks: usize) -> UnsyncBoxBody<Bytes, BoxError> {
    use futures_util::StreamExt as _;
    let frames = futures_util::stream::iter(0..chunks).then(move |i| async move {
        // Hand control back between chunks, so the body really streams.
        tokio::task::yield_now().await;
        Ok::<_, BoxError>(http_body::Frame::data(Bytes::from(vec![
            b'a' + (i % 26)
                as u8;
            chunk_len
        ])))
    });
    http_body_util::StreamBody::new(frames).boxed_unsync()
}
