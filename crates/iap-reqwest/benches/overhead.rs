//! Per-request cost of `IapMiddleware` in a reqwest-middleware client,
//! against a middleware that inserts a static `Authorization` value (the
//! floor). The chain ends in a middleware that answers at once, so no
//! network is timed: only the chain (and building the request).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{Extensions, HeaderValue, header};
use iap_reqwest::IapMiddleware;
use iap_token::policy::RetryPolicy;
use iap_token::source::{BoxFuture, TokenSource};
use iap_token::{Audience, IapAuth, IdToken};
use reqwest::{Method, Request, Response, Url};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};

const JWT: &str = concat!(
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImJlbmNoIiwidHlwIjoiSldUIn0.",
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

/// Answers at once: the end of the chain.
struct Answer;

#[async_trait::async_trait]
impl Middleware for Answer {
    async fn handle(
        &self,
        req: Request,
        _: &mut Extensions,
        _: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        black_box(&req);
        Ok(Response::from(http::Response::new("")))
    }
}

/// The floor: a static header value.
struct StaticHeader(HeaderValue);

#[async_trait::async_trait]
impl Middleware for StaticHeader {
    async fn handle(
        &self,
        mut req: Request,
        ext: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        req.headers_mut()
            .insert(header::AUTHORIZATION, self.0.clone());
        next.run(req, ext).await
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
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(auth.token_for(&"https://app.example.com/".parse().unwrap()))
        .unwrap();
    auth
}

fn once(client: &ClientWithMiddleware, url: &Url) -> Response {
    let req = Request::new(Method::GET, url.clone());
    client
        .execute(req)
        .now_or_never()
        .expect("ready at once")
        .unwrap()
}

fn overhead(c: &mut Criterion) {
    let url = Url::parse("https://app.example.com/api/items?page=2").unwrap();
    let builder = || ClientBuilder::new(reqwest::Client::new());
    let bare = builder().with(Answer).build();
    let floor = builder()
        .with(StaticHeader(
            HeaderValue::from_str(&format!("Bearer {JWT}")).unwrap(),
        ))
        .with(Answer)
        .build();
    let iap = builder()
        .with(IapMiddleware::new(auth(RetryPolicy::AnyUnauthorized)))
        .with(Answer)
        .build();
    let iap_never = builder()
        .with(IapMiddleware::new(auth(RetryPolicy::Never)))
        .with(Answer)
        .build();

    let mut group = c.benchmark_group("reqwest_middleware_per_request");
    group.bench_function("bare_chain", |b| b.iter(|| once(&bare, &url)));
    group.bench_function("static_header_middleware", |b| {
        b.iter(|| once(&floor, &url))
    });
    group.bench_function("iap_middleware_retry_capable", |b| {
        b.iter(|| once(&iap, &url))
    });
    group.bench_function("iap_middleware_retry_never", |b| {
        b.iter(|| once(&iap_never, &url))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
        .sample_size(50);
    targets = overhead
}
criterion_main!(benches);
