//! The layer's hot path allocates nothing of its own: with the token
//! cached, a request goes through `IapService` (plan, cached token, header,
//! call, response) allocating exactly what the floors allocate for the
//! same request: tower-http's `SetRequestHeader` with a static header for
//! `RetryPolicy::Never` (nothing at all when the header map has room), and
//! tower's `Retry` keeping a copy of the request head, over the same
//! header, for the retry-capable default.
//!
//! Its own binary: it installs a counting global allocator.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response, Uri};
use iap_test_support::token::{APP, JWT, warm_auth};
use iap_test_support::{CountingAlloc, allocations};
use iap_token::policy::RetryPolicy;
use iap_tower::IapLayer;
use tower::retry::{Policy, RetryLayer};
use tower::{Layer, Service, ServiceBuilder};
use tower_http::set_header::SetRequestHeaderLayer;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc::new();

/// Answers at once, telling whether the request carried a token.
#[derive(Clone, Copy)]
struct Answer;

impl Service<Request<()>> for Answer {
    type Response = Response<bool>;
    type Error = Infallible;
    type Future = Ready<Result<Response<bool>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<()>) -> Self::Future {
        ready(Ok(Response::new(req.headers().contains_key(AUTHORIZATION))))
    }
}

/// One request through `service`, start to end (the inner service answers at once).
fn send<S>(service: &mut S, request: Request<()>) -> bool
where
    S: Service<Request<()>, Response = Response<bool>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    let Poll::Ready(Ok(())) = service.poll_ready(&mut cx) else {
        panic!("the service is always ready")
    };
    let future = pin!(service.call(request));
    match future.poll(&mut cx) {
        Poll::Ready(Ok(response)) => *response.body(),
        _ => panic!("the response is ready at once"),
    }
}

fn request(uri: &Uri, header_room: bool) -> Request<()> {
    let mut request = Request::new(());
    *request.uri_mut() = uri.clone();
    if header_room {
        request.headers_mut().reserve(4);
    }
    request
}

#[tokio::test]
async fn without_retries_a_cached_token_costs_no_allocation() {
    let mut service = IapLayer::new(warm_auth(RetryPolicy::Never).await).layer(Answer);
    let app: Uri = format!("{APP}/items?page=2").parse().unwrap();
    let elsewhere: Uri = "https://other.example.com/items".parse().unwrap();
    let (to_app, to_elsewhere) = (request(&app, true), request(&elsewhere, true));

    // The first copy of a header value may allocate, once, to share it.
    assert!(send(&mut service, request(&app, true)));

    let mut authorized = Vec::with_capacity(2);
    let counted = allocations(|| {
        authorized.push(send(&mut service, to_app));
        authorized.push(send(&mut service, to_elsewhere));
    });

    assert_eq!(authorized, [true, false], "token for the app only");
    assert_eq!(counted, 0);
}

/// The retry floor's policy: keeps a copy of the request head (and its
/// empty body), never retries.
#[derive(Clone, Copy)]
struct CopyHead;

impl<Res, E> Policy<Request<()>, Res, E> for CopyHead {
    type Future = Ready<()>;

    fn retry(&mut self, _: &mut Request<()>, _: &mut Result<Res, E>) -> Option<Ready<()>> {
        None
    }

    fn clone_request(&mut self, req: &Request<()>) -> Option<Request<()>> {
        let mut copy = Request::new(());
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        *copy.extensions_mut() = req.extensions().clone();
        Some(copy)
    }
}

/// A request as applications send them: a query, four headers.
fn realistic(uri: &Uri) -> Request<()> {
    let mut request = request(uri, false);
    let headers = request.headers_mut();
    headers.insert("user-agent", HeaderValue::from_static("app/1.0"));
    headers.insert("accept", HeaderValue::from_static("application/json"));
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("x-request-id", HeaderValue::from_static("0123456789abcdef"));
    request
}

#[tokio::test]
async fn without_retries_a_realistic_request_allocates_what_a_static_header_allocates() {
    let mut service = IapLayer::new(warm_auth(RetryPolicy::Never).await).layer(Answer);
    let value = HeaderValue::from_str(&format!("Bearer {JWT}")).unwrap();
    let mut floor = SetRequestHeaderLayer::overriding(AUTHORIZATION, value).layer(Answer);
    let app: Uri = format!("{APP}/api/v1/items?page=2&sort=name")
        .parse()
        .unwrap();
    assert!(send(&mut service, realistic(&app)) && send(&mut floor, realistic(&app)));
    let (first, second) = (realistic(&app), realistic(&app));

    let mut authorized = false;
    let ours = allocations(|| authorized = send(&mut service, first));
    let theirs = allocations(|| assert!(send(&mut floor, second)));

    assert!(authorized);
    assert_eq!(ours, theirs);
}

#[tokio::test]
async fn a_retry_capable_request_allocates_what_keeping_its_head_allocates() {
    let mut service = IapLayer::new(warm_auth(RetryPolicy::default()).await).layer(Answer);
    let value = HeaderValue::from_str(&format!("Bearer {JWT}")).unwrap();
    let mut floor = ServiceBuilder::new()
        .layer(RetryLayer::new(CopyHead))
        .layer(SetRequestHeaderLayer::overriding(AUTHORIZATION, value))
        .service(Answer);
    let app: Uri = format!("{APP}/api/v1/items?page=2&sort=name")
        .parse()
        .unwrap();
    assert!(send(&mut service, realistic(&app)) && send(&mut floor, realistic(&app)));

    for (name, make) in [
        (
            "minimal",
            (|uri: &Uri| request(uri, false)) as fn(&Uri) -> Request<()>,
        ),
        ("realistic", realistic),
    ] {
        let (first, second) = (make(&app), make(&app));
        let mut authorized = false;
        let ours = allocations(|| authorized = send(&mut service, first));
        let theirs = allocations(|| assert!(send(&mut floor, second)));

        assert!(authorized, "{name}");
        // Copying a head with headers allocates: the counter sees it.
        assert!(theirs > 0 || name == "minimal", "{name}");
        assert_eq!(ours, theirs, "{name}: allocations beyond keeping the head");
    }
}

#[tokio::test]
async fn a_retry_capable_request_allocates_no_more_than_a_static_header() {
    let mut service = IapLayer::new(warm_auth(RetryPolicy::AnyUnauthorized).await).layer(Answer);
    let value = HeaderValue::from_str(&format!("Bearer {JWT}")).unwrap();
    let mut floor = SetRequestHeaderLayer::overriding(AUTHORIZATION, value).layer(Answer);
    let app: Uri = format!("{APP}/items?page=2").parse().unwrap();
    // The first copy of a header value may allocate, once, to share it.
    assert!(send(&mut service, request(&app, false)) && send(&mut floor, request(&app, false)));
    let (first, second) = (request(&app, false), request(&app, false));

    let mut authorized = false;
    let ours = allocations(|| authorized = send(&mut service, first));
    let theirs = allocations(|| assert!(send(&mut floor, second)));

    assert!(authorized);
    // The counter sees the header map's growth.
    assert!(theirs > 0);
    assert_eq!(ours, theirs);
}
