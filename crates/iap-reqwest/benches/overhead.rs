//! Per-request cost of `IapMiddleware` in a reqwest-middleware chain, side
//! by side in one run with a static-header middleware in the same chain:
//!
//! - `bare`: the chain's end alone (a middleware that answers at once, so
//!   no network is timed: only the chain and building the request);
//! - `attach_floor`: a middleware inserting a static, sensitive
//!   `Authorization` value;
//! - `retry_floor`: the same, after keeping a copy of the request with
//!   `Request::try_clone` (what a retrying middleware such as
//!   reqwest-retry needs);
//! - `iap_never` / `iap_default`: `IapMiddleware` with
//!   `RetryPolicy::Never` / the default, retry-capable policy.
//!
//! Requests `minimal` (`https://app.example.com/`, no header, an `IapAuth`
//! for any origin) and `realistic` (an https URL with a query, four
//! headers, an `IapAuth` scoped to the app's origin); schedules `1thread`
//! and `2x64` (2 tokio workers, 64 tasks sharing one client). After the run
//! it prints overheads over `bare` and their ratios to the floors:
//!
//! ```text
//! cargo bench -p iap-reqwest --bench overhead -- --warm-up-time 1 --measurement-time 3
//! ```

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, measurement::WallTime};
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

const PATHS: [&str; 5] = [
    "bare",
    "attach_floor",
    "retry_floor",
    "iap_never",
    "iap_default",
];
const TASKS: u64 = 64;
const WORKERS: usize = 2;

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

/// The floors: a static, sensitive header value; with `keep_copy`, a copy
/// of the request is kept first, as a retrying middleware keeps one.
struct StaticHeader {
    value: HeaderValue,
    keep_copy: bool,
}

impl StaticHeader {
    fn new(keep_copy: bool) -> Self {
        let text: &'static str = Box::leak(format!("Bearer {JWT}").into_boxed_str());
        let mut value = HeaderValue::from_static(text);
        value.set_sensitive(true);
        StaticHeader { value, keep_copy }
    }
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
        drop(black_box(copy));
        response
    }
}

fn auth(policy: RetryPolicy, scoped: bool) -> IapAuth {
    let builder = IapAuth::builder()
        .source(Stub)
        .audience("123-abc.apps.googleusercontent.com")
        .retry_policy(policy);
    let builder = if scoped {
        builder.allow_origin("https://app.example.com")
    } else {
        builder.any_origin()
    };
    let auth = builder.build().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(auth.token_for(&"https://app.example.com/".parse().unwrap()))
        .unwrap();
    auth
}

#[derive(Clone, Copy)]
enum Shape {
    Minimal,
    Realistic,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Minimal => "minimal",
            Shape::Realistic => "realistic",
        }
    }

    fn url(self) -> Url {
        match self {
            Shape::Minimal => Url::parse("https://app.example.com/").unwrap(),
            Shape::Realistic => {
                Url::parse("https://app.example.com/api/v1/items?page=2&sort=name").unwrap()
            }
        }
    }

    fn request(self, url: &Url) -> Request {
        let mut req = Request::new(Method::GET, url.clone());
        if let Shape::Realistic = self {
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
}

fn once(client: &ClientWithMiddleware, req: Request) -> Response {
    client
        .execute(req)
        .now_or_never()
        .expect("ready at once")
        .unwrap()
}

fn single(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    client: &ClientWithMiddleware,
    shape: Shape,
) {
    let url = shape.url();
    group.bench_function(name, |b| b.iter(|| once(client, shape.request(&url))));
}

/// Wall time per request over `TASKS` tasks sharing `client` on a runtime
/// of `WORKERS` threads.
fn multi(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    client: &ClientWithMiddleware,
    shape: Shape,
) {
    let url = shape.url();
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let per_task = iters.div_ceil(TASKS);
            rt.block_on(async {
                let start = Instant::now();
                let tasks: Vec<_> = (0..TASKS)
                    .map(|_| {
                        let (client, url) = (client.clone(), url.clone());
                        tokio::spawn(async move {
                            for _ in 0..per_task {
                                black_box(once(&client, shape.request(&url)));
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
                start
                    .elapsed()
                    .mul_f64(iters as f64 / (per_task * TASKS) as f64)
            })
        })
    });
}

fn group_name(shape: Shape, schedule: &str) -> String {
    format!("reqwest_{schedule}_{}", shape.name())
}

fn overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    let chain = |first: Option<std::sync::Arc<dyn Middleware>>| {
        let builder = ClientBuilder::new(client.clone());
        let builder = match first {
            Some(m) => builder.with_arc(m),
            None => builder,
        };
        builder.with(Answer).build()
    };
    for shape in [Shape::Minimal, Shape::Realistic] {
        let scoped = matches!(shape, Shape::Realistic);
        let clients = [
            chain(None),
            chain(Some(std::sync::Arc::new(StaticHeader::new(false)))),
            chain(Some(std::sync::Arc::new(StaticHeader::new(true)))),
            chain(Some(std::sync::Arc::new(IapMiddleware::new(auth(
                RetryPolicy::Never,
                scoped,
            ))))),
            chain(Some(std::sync::Arc::new(IapMiddleware::new(auth(
                RetryPolicy::default(),
                scoped,
            ))))),
        ];
        let mut group = c.benchmark_group(group_name(shape, "1thread"));
        for (name, client) in PATHS.iter().zip(&clients) {
            single(&mut group, name, client, shape);
        }
        group.finish();
        let mut group = c.benchmark_group(group_name(shape, "2x64"));
        for (name, client) in PATHS.iter().zip(&clients) {
            multi(&mut group, &rt, name, client, shape);
        }
        group.finish();
    }
}

/// Criterion's median estimate of one benchmark of this run, in ns.
fn median_ns(dir: &std::path::Path, group: &str, path: &str) -> Option<f64> {
    let file = dir.join(group).join(path).join("new/estimates.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(file).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}

/// The table of the issue: overheads over `bare`, ratios to the floors.
fn summary() {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            Some(exe.ancestors().nth(3)?.to_path_buf())
        })
        .map(|target| target.join("criterion"));
    let Some(dir) = dir else { return };
    println!("\noverhead over bare (ns, criterion medians), ratio to the floor:");
    println!(
        "{:<24} {:>7} {:>7} {:>7} {:>7} {:>7} {:>13} {:>13}",
        "group", "bare", "+attach", "+retry", "+never", "+default", "never/attach", "default/retry"
    );
    for shape in [Shape::Minimal, Shape::Realistic] {
        for schedule in ["1thread", "2x64"] {
            let group = group_name(shape, schedule);
            let m: Vec<Option<f64>> = PATHS.iter().map(|p| median_ns(&dir, &group, p)).collect();
            let [
                Some(bare),
                Some(attach),
                Some(retry),
                Some(never),
                Some(default),
            ] = m[..]
            else {
                continue;
            };
            let (attach, retry, never, default) =
                (attach - bare, retry - bare, never - bare, default - bare);
            println!(
                "{group:<24} {bare:>7.1} {attach:>7.1} {retry:>7.1} {never:>7.1} {default:>7.1} {:>12.2}x {:>12.2}x",
                never / attach,
                default / retry,
            );
        }
    }
}

fn main() {
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args();
    overhead(&mut criterion);
    criterion.final_summary();
    summary();
}
