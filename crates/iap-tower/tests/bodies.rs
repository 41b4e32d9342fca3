//! Any request body through the layer, over real loopback HTTP to the
//! emulator's gate: servers that forward the requests they receive (an axum
//! handler with axum's `Body`, a hyper `service_fn` with `Incoming`), a
//! body too large to keep, and `reqwest::Body`.

mod common;

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use iap_emulator::{App, Emulator};
use iap_token::IapAuth;
use iap_token::policy::Placement;
use iap_tower::replay::{RecordBody, ReplayBody};
use iap_tower::{IapLayer, IapService};
use tokio::net::TcpListener;
use tower::{Layer, Service, ServiceExt};

use common::{chunked, client_with, gated_app, post, revoke_current_token};

/// `uri` with its scheme and authority replaced by `app`'s.
fn to_app(app: &App, uri: &Uri) -> Uri {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    app.url().join(path).unwrap().as_str().parse().unwrap()
}

/// An axum app whose every route forwards the request, axum's `Body` and
/// all, to `app` through a hyper-util client behind `IapLayer` (the
/// default replay policy). Its address.
async fn axum_forwarder(app: &App, auth: &IapAuth) -> SocketAddr {
    type Upstream = IapService<Client<HttpConnector, axum::body::Body>>;
    let upstream: Upstream =
        IapLayer::new(auth.clone()).layer(Client::builder(TokioExecutor::new()).build_http());
    let app = app.clone();
    let forward = move |req: Request<axum::body::Body>| {
        let (upstream, app) = (upstream.clone(), app.clone());
        async move {
            let (mut parts, body) = req.into_parts();
            parts.uri = to_app(&app, &parts.uri);
            parts.headers.remove(http::header::HOST);
            match upstream.oneshot(Request::from_parts(parts, body)).await {
                Ok(response) => response.map(axum::body::Body::new),
                Err(e) => Response::builder()
                    .status(StatusCode::BAD_GATEWAY)
                    .body(axum::body::Body::from(e.to_string()))
                    .unwrap(),
            }
        }
    };
    let router = axum::Router::new().fallback(forward);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// A hyper server whose `service_fn` forwards each request, `Incoming` body
/// and all, to `app` through `upstream` (a layer over a hyper-util client).
/// Its address.
async fn serve_forwarding<S, B>(app: &App, upstream: S) -> SocketAddr
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = iap_tower::BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: http_body::Body<Data = Bytes, Error: Into<iap_tower::BoxError>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = app.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (upstream, app) = (upstream.clone(), app.clone());
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (upstream, app) = (upstream.clone(), app.clone());
                async move {
                    let (mut parts, body) = req.into_parts();
                    parts.uri = to_app(&app, &parts.uri);
                    parts.headers.remove(http::header::HOST);
                    upstream.oneshot(Request::from_parts(parts, body)).await
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

/// [`serve_forwarding`] through a hyper-util client behind
/// `IapLayer::record_body()`.
async fn hyper_forwarder(app: &App, auth: &IapAuth) -> SocketAddr {
    let client: Client<HttpConnector, ReplayBody<Incoming>> =
        Client::builder(TokioExecutor::new()).build_http();
    let upstream: IapService<_, RecordBody> =
        IapLayer::new(auth.clone()).record_body().layer(client);
    serve_forwarding(app, upstream).await
}

/// POSTs `body` to `/upload` of the forwarder at `addr`: the status and the
/// echo app's JSON (null if the answer is not JSON).
async fn post_to(addr: SocketAddr, body: Vec<u8>) -> (StatusCode, serde_json::Value) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let req = Request::post(format!("http://{addr}/upload"))
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = client.request(req).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// What the emulator saw: refusals at the gate, requests that reached the
/// app, tokens minted for it.
fn seen(emu: &Emulator, app: &App) -> (u64, u64, u64) {
    (
        emu.gate_401s(app),
        emu.app_hits(app),
        emu.id_tokens_issued(app.client_id()),
    )
}

/// Needs the `axum` feature (on by default): axum's body is rebuilt for the retry.
#[cfg(feature = "axum")]
#[tokio::test]
async fn axum_handler_forwarding_its_body_is_retried_on_a_revoked_token() {
    let (emu, app, auth) = gated_app(Placement::Authorization).await;
    let forwarder = axum_forwarder(&app, &auth).await;
    revoke_current_token(&emu, &auth, &app).await;

    let (status, echo) = post_to(forwarder, b"a small POST body".to_vec()).await;

    assert_eq!(status, StatusCode::OK, "retried with a fresh token");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body_len"], 17, "the retry carried the whole body");
    assert_eq!(
        seen(&emu, &app),
        (1, 1, 2),
        "one refusal, the app reached once, exactly one extra token"
    );
}

#[tokio::test]
async fn hyper_service_fn_forwarding_incoming_is_retried_with_record_body() {
    let (emu, app, auth) = gated_app(Placement::Authorization).await;
    let forwarder = hyper_forwarder(&app, &auth).await;
    revoke_current_token(&emu, &auth, &app).await;

    let (status, echo) = post_to(forwarder, b"an Incoming body".to_vec()).await;

    assert_eq!(status, StatusCode::OK, "retried with a fresh token");
    assert_eq!(echo["body_len"], 16, "the retry carried the whole body");
    assert_eq!(seen(&emu, &app), (1, 1, 2));

    // With the fresh token cached, the next one goes straight through.
    let (status, echo) = post_to(forwarder, vec![b'x'; 1000]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echo["body_len"], 1000);
    assert_eq!(seen(&emu, &app), (1, 2, 2));

    // An empty body is retried too (nothing recorded: an empty one is sent).
    revoke_current_token(&emu, &auth, &app).await;
    let (status, echo) = post_to(forwarder, Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echo["body_len"], 0);
    assert_eq!(seen(&emu, &app), (2, 3, 3));
}

#[tokio::test]
async fn body_larger_than_the_replay_limit_is_sent_once_and_its_refusal_returned() {
    let (emu, app, auth) = gated_app(Placement::Authorization).await;
    let axum = axum_forwarder(&app, &auth).await;
    let hyper = hyper_forwarder(&app, &auth).await;
    revoke_current_token(&emu, &auth, &app).await;

    // 100 KiB with a Content-Length: more than the 64 KiB a retry may keep.
    let (status, _) = post_to(axum, vec![b'x'; 100 * 1024]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "IAP's refusal, as is");
    assert_eq!(
        seen(&emu, &app),
        (1, 0, 1),
        "sent once, never reached the app, no token fetched for a retry that cannot happen"
    );

    // The refused token was invalidated: the next request fetches a fresh one.
    let (status, _) = post_to(hyper, vec![b'x'; 100 * 1024]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen(&emu, &app), (1, 1, 2));

    revoke_current_token(&emu, &auth, &app).await;
    let (status, _) = post_to(hyper, vec![b'x'; 100 * 1024]).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "record_body keeps no more either"
    );
    assert_eq!(seen(&emu, &app), (2, 1, 2));
}

#[tokio::test]
async fn a_chunked_stream_over_the_replay_limit_gets_iaps_own_401_not_an_error() {
    let (emu, app, auth) = gated_app(Placement::Authorization).await;
    let svc = client_with(IapLayer::new(auth.clone()));
    revoke_current_token(&emu, &auth, &app).await;

    // 256 KiB with no Content-Length: the layer learns it is too large to
    // keep only while sending it.
    let response = svc
        .oneshot(post(&app, "/upload", chunked(16 * 1024, 16)))
        .await
        .expect("IAP's answer, not an error");

    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["x-goog-iap-generated-response"], "true");
    let text = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&text).contains("revoked"));
    assert_eq!(
        seen(&emu, &app),
        (1, 0, 1),
        "sent once, never reached the app, no token fetched for a retry"
    );
}

#[tokio::test]
async fn a_body_type_the_layer_does_not_know_is_sent_once() {
    let (emu, app, auth) = gated_app(Placement::Authorization).await;
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build_http();
    // Compiles without `record_body`: `Incoming` simply cannot be kept.
    let upstream = IapLayer::new(auth.clone()).layer(client);
    let addr = serve_forwarding(&app, upstream).await;
    revoke_current_token(&emu, &auth, &app).await;

    let (status, _) = post_to(addr, b"small".to_vec()).await;

    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(seen(&emu, &app), (1, 0, 1));
}

#[cfg(feature = "reqwest")]
#[tokio::test]
async fn reqwest_bodies_are_retried_through_the_layer() {
    let (emu, app, auth) = gated_app(Placement::Authorization).await;
    let client: Client<HttpConnector, reqwest::Body> =
        Client::builder(TokioExecutor::new()).build_http();
    let upstream = IapLayer::new(auth.clone()).layer(client);
    let send = |body: reqwest::Body| {
        let req = Request::post(app.url().join("/upload").unwrap().as_str())
            .body(body)
            .unwrap();
        let upstream = upstream.clone();
        async move {
            let response = upstream.oneshot(req).await.unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
            (status, echo["body_len"].clone())
        }
    };

    revoke_current_token(&emu, &auth, &app).await;
    let (status, len) = send(reqwest::Body::from("bytes in memory")).await;
    assert_eq!((status, len), (StatusCode::OK, 15.into()));
    assert_eq!(seen(&emu, &app), (1, 1, 2));

    revoke_current_token(&emu, &auth, &app).await;
    let chunks = ["a ", "streamed ", "body"]
        .map(|c| Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(c))));
    let stream = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
    let (status, len) = send(reqwest::Body::wrap(stream)).await;
    assert_eq!((status, len), (StatusCode::OK, 15.into()));
    assert_eq!(seen(&emu, &app), (2, 2, 3));
}

/// A body type of the user's own, which the layer cannot know.
#[derive(Clone)]
struct Json(Option<Bytes>);

impl http_body::Body for Json {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(
            self.get_mut()
                .0
                .take()
                .map(|b| Ok(http_body::Frame::data(b))),
        )
    }
}

#[tokio::test]
async fn clone_body_retries_a_body_type_of_your_own_and_no_replay_never_does() {
    let (emu, app, auth) = gated_app(Placement::Authorization).await;
    let client = || Client::builder(TokioExecutor::new()).build_http::<Json>();
    let cloning = IapLayer::new(auth.clone())
        .clone_body(|json: &Json| Some(json.clone()))
        .layer(client());
    let never = IapLayer::new(auth.clone()).no_replay().layer(client());
    let post = || {
        Request::post(app.url().join("/upload").unwrap().as_str())
            .body(Json(Some(Bytes::from_static(b"{\"a\":1}"))))
            .unwrap()
    };

    revoke_current_token(&emu, &auth, &app).await;
    let response = cloning.oneshot(post()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "retried with the clone");
    assert_eq!(seen(&emu, &app), (1, 1, 2));

    revoke_current_token(&emu, &auth, &app).await;
    let response = never.oneshot(post()).await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "returned as is"
    );
    assert_eq!(seen(&emu, &app), (2, 1, 2), "no token fetched for a retry");
}
