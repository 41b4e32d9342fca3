//! The middleware's hot path allocates nothing of its own: with the token
//! cached, a request through `IapMiddleware` allocates exactly what the
//! same chain allocates with a middleware that inserts a static header
//! (for `RetryPolicy::Never`), or one that also keeps a copy of the request
//! with `Request::try_clone` first, as a retrying middleware does (for the
//! retry-capable default).
//!
//! Its own binary: it installs a counting global allocator. The chain ends
//! in a middleware that answers at once, so no network is involved and
//! everything runs on the test's thread.

use futures_util::FutureExt as _;
use http::{Extensions, HeaderValue, header};
use iap_reqwest::IapMiddleware;
use iap_test_support::token::{APP, JWT, warm_auth};
use iap_test_support::{CountingAlloc, allocations};
use iap_token::policy::RetryPolicy;
use reqwest::{Method, Request, Response, Url};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc::new();

/// Answers at once; the answer's status says whether a token came along
/// (200) or not (204).
struct Answer;

#[async_trait::async_trait]
impl Middleware for Answer {
    async fn handle(
        &self,
        req: Request,
        _: &mut Extensions,
        _: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let status = if req.headers().contains_key(header::AUTHORIZATION) {
            200
        } else {
            204
        };
        let answer = http::Response::builder().status(status).body("").unwrap();
        Ok(Response::from(answer))
    }
}

/// The floors: a static header; with `keep_copy`, a copy of the request
/// is kept first.
struct StaticHeader {
    value: HeaderValue,
    keep_copy: bool,
}

#[async_trait::async_trait]
impl Middleware for StaticHeader {
    async fn handle(
        &self,
        mut req: Request,
        ext: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let copy = if self.keep_copy {
            req.try_clone()
        } else {
            None
        };
        req.headers_mut()
            .insert(header::AUTHORIZATION, self.value.clone());
        let response = next.run(req, ext).await;
        drop(copy);
        response
    }
}

fn chain(first: impl Middleware) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(first)
        .with(Answer)
        .build()
}

/// A request as applications send them: a query, four headers.
fn realistic() -> Request {
    let url = Url::parse(&format!("{APP}/api/v1/items?page=2&sort=name")).unwrap();
    let mut req = Request::new(Method::GET, url);
    let headers = req.headers_mut();
    headers.insert(header::USER_AGENT, HeaderValue::from_static("app/1.0"));
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert("x-request-id", HeaderValue::from_static("0123456789abcdef"));
    req
}

/// One request through `client`, start to end; whether it carried a token.
fn send(client: &ClientWithMiddleware, req: Request) -> bool {
    let response = client
        .execute(req)
        .now_or_never()
        .expect("the chain answers at once")
        .unwrap();
    response.status() == 200
}

/// Allocations of one realistic request through `ours` and through `floor`.
fn compare(ours: &ClientWithMiddleware, floor: &ClientWithMiddleware) -> (u64, u64) {
    // The first request through a chain may set up what later ones reuse.
    assert!(send(ours, realistic()) && send(floor, realistic()));
    let (first, second) = (realistic(), realistic());
    let mut authorized = false;
    let ours = allocations(|| authorized = send(ours, first));
    let theirs = allocations(|| assert!(send(floor, second)));
    assert!(authorized, "the request carried the token");
    (ours, theirs)
}

fn static_value() -> HeaderValue {
    let mut value = HeaderValue::from_str(&format!("Bearer {JWT}")).unwrap();
    value.set_sensitive(true);
    value
}

#[tokio::test]
async fn without_retries_a_request_allocates_what_a_static_header_allocates() {
    let ours = chain(IapMiddleware::new(warm_auth(RetryPolicy::Never).await));
    let floor = chain(StaticHeader {
        value: static_value(),
        keep_copy: false,
    });

    let (ours, theirs) = compare(&ours, &floor);

    assert_eq!(ours, theirs);
}

#[tokio::test]
async fn a_retry_capable_request_allocates_what_keeping_a_copy_allocates() {
    let ours = chain(IapMiddleware::new(warm_auth(RetryPolicy::default()).await));
    let floor = chain(StaticHeader {
        value: static_value(),
        keep_copy: true,
    });

    let (ours, theirs) = compare(&ours, &floor);

    // The copy of a request with a URL and headers allocates: the counter sees it.
    assert!(theirs > 0);
    assert_eq!(ours, theirs, "allocations beyond the copy of the request");
}
