//! Per-request cost of `IapService` over a service that answers at once,
//! against tower-http's `SetRequestHeader` with a static value (the floor:
//! the cheapest possible "put a header in").
//!
//! Each iteration: build a request, `poll_ready`, `call`, poll the response
//! future to completion (it is ready at once), drop the response. The token
//! cache is warm (a stub source that is never called again).

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderValue, Request, Response, Uri, header};
use iap_token::policy::RetryPolicy;
use iap_token::source::{BoxFuture, TokenSource};
use iap_token::{Audience, IapAuth, IdToken};
use iap_tower::IapLayer;
use tower::{Layer, Service};
use tower_http::set_header::SetRequestHeaderLayer;

const JWT: &str = concat!(
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImJlbmNoIiwidHlwIjoiSldUIn0.",
    // {"aud":"123-abc.apps.googleusercontent.com","email":"bench@example.com","exp":4102444800,"iss":"https://accounts.google.com"}
    "eyJhdWQiOiIxMjMtYWJjLmFwcHMuZ29vZ2xldXNlcmNvbnRlbnQuY29tIiwiZW1haWwiOiJiZW5jaEBleGFtcGxlLmNvbSIsImV4cCI6NDEwMjQ0NDgwMCwiaXNzIjoiaHR0cHM6Ly9hY2NvdW50cy5nb29nbGUuY29tIn0.",
    "c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmUtc2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmU"
);

#[derive(Debug)]
struct Stub;

impl TokenSource for Stub {
    fn id_token<'a>(
        &'a self,
        _audience: &'a Audience,
    ) -> BoxFuture<'a, iap_token::Result<IdToken>> {
        Box::pin(async { IdToken::parse(JWT) })
    }
}

fn auth(policy: RetryPolicy) -> IapAuth {
    let auth = IapAuth::builder()
        .source(Stub)
        .audience("123-abc.apps.googleusercontent.com")
        .allow_origin("https://app.example.com")
        .retry_policy(policy)
        .build()
        .unwrap();
    // Warm the cache.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(auth.token_for(&"https://app.example.com/".parse().unwrap()))
        .unwrap();
    auth
}

#[derive(Clone, Copy)]
struct Answer;

impl<B> Service<Request<B>> for Answer {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        black_box(&req);
        ready(Ok(Response::new(())))
    }
}

fn request(uri: &Uri, headers: bool) -> Request<()> {
    let mut req = Request::new(());
    *req.uri_mut() = uri.clone();
    if headers {
        let h = req.headers_mut();
        h.insert(header::USER_AGENT, HeaderValue::from_static("bench/1.0"));
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert("x-request-id", HeaderValue::from_static("0123456789abcdef"));
    }
    req
}

fn once<S: Service<Request<()>>>(svc: &mut S, req: Request<()>) -> S::Response
where
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    let Poll::Ready(Ok(())) = svc.poll_ready(&mut cx) else {
        panic!("not ready")
    };
    let mut future = pin!(svc.call(req));
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(response)) => response,
        _ => panic!("not ready"),
    }
}

fn overhead(c: &mut Criterion) {
    let uri: Uri = "https://app.example.com/api/items?page=2".parse().unwrap();
    let retrying = IapLayer::new(auth(RetryPolicy::AnyUnauthorized));
    let never = IapLayer::new(auth(RetryPolicy::Never));
    let floor = SetRequestHeaderLayer::overriding(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {JWT}")).unwrap(),
    );

    for (name, headers) in [("no_headers", false), ("four_headers", true)] {
        let mut group = c.benchmark_group(format!("per_request/{name}"));
        let mut bare = Answer;
        group.bench_function("bare_service", |b| {
            b.iter(|| once(&mut bare, request(&uri, headers)))
        });
        let mut set_header = floor.layer(Answer);
        group.bench_function("set_request_header_static", |b| {
            b.iter(|| once(&mut set_header, request(&uri, headers)))
        });
        let mut iap = retrying.layer(Answer);
        group.bench_function("iap_layer_retry_capable", |b| {
            b.iter(|| once(&mut iap, request(&uri, headers)))
        });
        let mut iap_never = never.layer(Answer);
        group.bench_function("iap_layer_retry_never", |b| {
            b.iter(|| once(&mut iap_never, request(&uri, headers)))
        });
        group.finish();
    }
}

/// Where the time goes: the core calls the layer makes on every request.
fn parts(c: &mut Criterion) {
    use iap_token::auth::Plan;
    let uri: Uri = "https://app.example.com/api/items?page=2".parse().unwrap();
    let auth = auth(RetryPolicy::AnyUnauthorized);
    let extensions = http::Extensions::new();
    let Plan::Attach(attach) = auth.plan(&uri, &extensions) else {
        panic!("in scope")
    };
    let token = attach.cached().unwrap();
    let mut group = c.benchmark_group("parts");
    group.bench_function("IapAuth::plan", |b| {
        b.iter(|| black_box(auth.plan(black_box(&uri), &extensions)))
    });
    group.bench_function("IapAuth::plan_cached", |b| {
        b.iter(|| black_box(auth.plan_cached(black_box(&uri), &extensions)))
    });
    let unscoped = IapAuth::builder()
        .source(Stub)
        .audience("123-abc.apps.googleusercontent.com")
        .any_origin()
        .build()
        .unwrap();
    group.bench_function("IapAuth::plan_unscoped", |b| {
        b.iter(|| black_box(unscoped.plan(black_box(&uri), &extensions)))
    });
    group.bench_function("Uri::host_port_scheme", |b| {
        b.iter(|| {
            let uri = black_box(&uri);
            black_box((uri.scheme_str(), uri.host(), uri.port_u16()))
        })
    });
    group.bench_function("Attach::cached", |b| b.iter(|| black_box(attach.cached())));
    group.bench_function("IapAuth::apply", |b| {
        b.iter(|| {
            let mut headers = http::HeaderMap::new();
            auth.apply(&mut headers, &token);
            headers
        })
    });
    group.bench_function("IapAuth::clone", |b| b.iter(|| black_box(auth.clone())));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
        .sample_size(50);
    targets = overhead, parts
}
criterion_main!(benches);
