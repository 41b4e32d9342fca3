//! Per-request cost of `IapService` over a service that answers at once,
//! side by side in one run with the two floors it is measured against:
//!
//! - `bare`: the inner service alone (what every overhead is taken over);
//! - `attach_floor`: tower-http's `SetRequestHeader` with a static,
//!   sensitive value: the cheapest possible "put a header in";
//! - `retry_floor`: tower's `Retry` with a policy whose `clone_request`
//!   clones the request head and its (cheap) body, over the same
//!   `SetRequestHeader`: the cheapest way to be able to send a request
//!   again with a header;
//! - `attach_shared`, `retry_shared`: the two floors with a value made at
//!   run time (a shared `Bytes`, as a token's header value must be): what
//!   tower-http costs for a credential that is not a compile-time constant;
//! - `iap_never`: `IapLayer` with `RetryPolicy::Never` (compare with the
//!   attach floors);
//! - `iap_default`: `IapLayer` with the default, retry-capable policy
//!   (compare with the retry floors).
//!
//! Each iteration: build a request, `poll_ready`, `call`, poll the response
//! future to completion (it is ready at once), drop the response. The token
//! cache is warm (a stub source that is never called again). Two requests:
//! `minimal` (`https://app.example.com/`, no header, an `IapAuth` for any
//! origin) and `realistic` (an https URL with a query, four headers, an
//! `IapAuth` scoped to the app's origin). Two schedules: `1thread` (the
//! bench thread) and `2x64` (a tokio runtime with 2 workers running 64
//! tasks, each on its own clone of one service built from one shared
//! layer; the time is wall time per request over all of them).
//!
//! After the run it prints the overheads over `bare` and their ratios to
//! the floors, static and shared (`docs/performance.md` explains them):
//!
//! ```text
//! cargo bench -p iap-tower --bench overhead -- --warm-up-time 1 --measurement-time 3
//! ```

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, measurement::WallTime};
use http::{HeaderValue, Request, Response, Uri, header};
use iap_token::policy::RetryPolicy;
use iap_token::source::{BoxFuture, TokenSource};
use iap_token::{Audience, IapAuth, IdToken};
use iap_tower::IapLayer;
use tower::retry::{Policy, Retry, RetryLayer};
use tower::{Layer, Service};
use tower_http::set_header::{SetRequestHeader, SetRequestHeaderLayer};

const JWT: &str = concat!(
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImJlbmNoIiwidHlwIjoiSldUIn0.",
    // {"aud":"123-abc.apps.googleusercontent.com","email":"bench@example.com","exp":4102444800,"iss":"https://accounts.google.com"}
    "eyJhdWQiOiIxMjMtYWJjLmFwcHMuZ29vZ2xldXNlcmNvbnRlbnQuY29tIiwiZW1haWwiOiJiZW5jaEBleGFtcGxlLmNvbSIsImV4cCI6NDEwMjQ0NDgwMCwiaXNzIjoiaHR0cHM6Ly9hY2NvdW50cy5nb29nbGUuY29tIn0.",
    "c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmUtc2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmU"
);

const PATHS: [&str; 7] = [
    "bare",
    "attach_floor",
    "retry_floor",
    "attach_shared",
    "retry_shared",
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
    // Warm the cache.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(auth.token_for(&"https://app.example.com/".parse().unwrap()))
        .unwrap();
    auth
}

/// The floors' header: a static value (no reference count to take), sensitive.
fn static_header() -> HeaderValue {
    let text: &'static str = Box::leak(format!("Bearer {JWT}").into_boxed_str());
    let mut value = HeaderValue::from_static(text);
    value.set_sensitive(true);
    value
}

/// The shared floors' header: the same text made at run time, sensitive.
/// Cloning it takes a reference count, as cloning any header value that is
/// not a compile-time constant does (a token's included).
fn shared_header() -> HeaderValue {
    let text = bytes::Bytes::from(format!("Bearer {JWT}"));
    let mut value = HeaderValue::from_maybe_shared(text).unwrap();
    value.set_sensitive(true);
    value
}

/// An attach floor: tower-http's `SetRequestHeader` putting in `value`.
fn attach_floor(value: HeaderValue) -> SetRequestHeader<Answer, HeaderValue> {
    SetRequestHeaderLayer::overriding(header::AUTHORIZATION, value).layer(Answer)
}

/// A retry floor: tower's `Retry` keeping a copy of the request, over the
/// attach floor with `value`.
fn retry_floor(value: HeaderValue) -> Retry<CopyHead, SetRequestHeader<Answer, HeaderValue>> {
    RetryLayer::new(CopyHead).layer(attach_floor(value))
}

/// Runs `$body` once for every path of [`PATHS`], in that order, with
/// `$name` its name and `$svc` its service (each a type of its own).
macro_rules! for_each_path {
    ($shape:expr, |$name:ident, $svc:ident| $body:expr) => {{
        let scoped = matches!($shape, Shape::Realistic);
        for_each_path!(@run $name, $svc, $body,
            "bare" => Answer,
            "attach_floor" => attach_floor(static_header()),
            "retry_floor" => retry_floor(static_header()),
            "attach_shared" => attach_floor(shared_header()),
            "retry_shared" => retry_floor(shared_header()),
            "iap_never" => IapLayer::new(auth(RetryPolicy::Never, scoped)).layer(Answer),
            "iap_default" => IapLayer::new(auth(RetryPolicy::default(), scoped)).layer(Answer),
        );
    }};
    (@run $name:ident, $svc:ident, $body:expr, $($path:literal => $make:expr,)*) => {
        $({
            let ($name, $svc) = ($path, $make);
            $body;
        })*
    };
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

/// The retry floor's policy: keeps a copy of every request (head and body),
/// never retries (the answer is always a 200).
#[derive(Clone, Copy)]
struct CopyHead;

impl<B: Clone, Res, E> Policy<Request<B>, Res, E> for CopyHead {
    type Future = Ready<()>;

    fn retry(&mut self, _req: &mut Request<B>, _result: &mut Result<Res, E>) -> Option<Ready<()>> {
        None
    }

    fn clone_request(&mut self, req: &Request<B>) -> Option<Request<B>> {
        let mut copy = Request::new(req.body().clone());
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        *copy.extensions_mut() = req.extensions().clone();
        Some(copy)
    }
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

    fn uri(self) -> Uri {
        match self {
            // Static: cloning it takes no reference count that tasks share.
            Shape::Minimal => Uri::from_static("https://app.example.com/"),
            Shape::Realistic => {
                Uri::from_static("https://app.example.com/api/v1/items?page=2&sort=name")
            }
        }
    }

    fn request(self, uri: &Uri) -> Request<()> {
        let mut req = Request::new(());
        *req.uri_mut() = uri.clone();
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

/// One path, timed on the bench thread.
fn single<S>(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, mut svc: S, shape: Shape)
where
    S: Service<Request<()>>,
    S::Error: std::fmt::Debug,
{
    let uri = shape.uri();
    group.bench_function(name, |b| b.iter(|| once(&mut svc, shape.request(&uri))));
}

/// One path, timed as wall time per request over `TASKS` tasks on a
/// runtime of `WORKERS` threads, each task on its own clone of `svc`.
fn multi<S>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    svc: S,
    shape: Shape,
) where
    S: Service<Request<()>> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
    S::Future: Send,
{
    let uri = shape.uri();
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let per_task = iters.div_ceil(TASKS);
            rt.block_on(async {
                let start = Instant::now();
                let tasks: Vec<_> = (0..TASKS)
                    .map(|_| {
                        let (mut svc, uri) = (svc.clone(), uri.clone());
                        tokio::spawn(async move {
                            for _ in 0..per_task {
                                black_box(once(&mut svc, shape.request(&uri)));
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
    format!("tower_{schedule}_{}", shape.name())
}

fn overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .unwrap();
    for shape in [Shape::Minimal, Shape::Realistic] {
        let mut group = c.benchmark_group(group_name(shape, "1thread"));
        for_each_path!(shape, |name, svc| single(&mut group, name, svc, shape));
        group.finish();

        let mut group = c.benchmark_group(group_name(shape, "2x64"));
        for_each_path!(shape, |name, svc| multi(&mut group, &rt, name, svc, shape));
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
    println!("\noverhead over bare (ns, criterion medians), ratios to the floors:");
    table_head();
    for shape in [Shape::Minimal, Shape::Realistic] {
        for schedule in ["1thread", "2x64"] {
            let group = group_name(shape, schedule);
            let m: Option<Vec<f64>> = PATHS.iter().map(|p| median_ns(&dir, &group, p)).collect();
            if let Some(m) = m {
                table_row(&group, &m);
            }
        }
    }
}

/// The head of [`table_row`]'s table.
fn table_head() {
    println!(
        "{:<24} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8}",
        "group",
        "bare",
        "+attach",
        "+retry",
        "+att.sh",
        "+ret.sh",
        "+never",
        "+default",
        "nev/att",
        "def/ret",
        "nev/a.sh",
        "def/r.sh",
    );
}

/// One line of the table: `m` holds a time per path of [`PATHS`], in ns;
/// printed as overheads over `bare`, then `iap_never` over the attach
/// floors and `iap_default` over the retry floors (static, then shared).
fn table_row(group: &str, m: &[f64]) {
    let bare = m[0];
    let o: Vec<f64> = m[1..].iter().map(|t| t - bare).collect();
    let [attach, retry, attach_shared, retry_shared, never, default] = o[..] else {
        unreachable!("one time per path")
    };
    println!(
        "{group:<24} {bare:>6.1} {attach:>7.1} {retry:>7.1} {attach_shared:>7.1} {retry_shared:>7.1} {never:>7.1} {default:>7.1} {:>7.2}x {:>7.2}x {:>7.2}x {:>7.2}x",
        never / attach,
        default / retry,
        never / attach_shared,
        default / retry_shared,
    );
}

/// `IAP_BENCH_COUNT=<minimal|realistic>/<path>`: no criterion, just
/// `IAP_BENCH_CALLS` (default 100,000) requests through one path on this
/// thread, for an instruction count (`valgrind --tool=callgrind`) that the
/// machine's load does not disturb. Every path's service is built either
/// way, so runs differ only in the requests.
fn count(which: &str) {
    let calls: u64 = std::env::var("IAP_BENCH_CALLS").map_or(100_000, |n| n.parse().unwrap());
    let (shape, path) = which
        .split_once('/')
        .expect("IAP_BENCH_COUNT=<shape>/<path>");
    let shape = match shape {
        "minimal" => Shape::Minimal,
        "realistic" => Shape::Realistic,
        other => panic!("no request shape {other:?}"),
    };
    let uri = shape.uri();
    fn run<S: Service<Request<()>>>(mut svc: S, shape: Shape, uri: &Uri, calls: u64)
    where
        S::Error: std::fmt::Debug,
    {
        eprintln!(
            "response future: {} bytes",
            std::mem::size_of::<S::Future>()
        );
        for _ in 0..calls {
            black_box(once(&mut svc, shape.request(uri)));
        }
    }
    let mut found = false;
    for_each_path!(shape, |name, svc| if name == path {
        run(svc, shape, &uri, calls);
        found = true;
    });
    assert!(found, "no path {path:?}: one of {PATHS:?}");
}

type Timer = Box<dyn Fn(u64) -> f64>;

/// Times `calls` requests through a clone of `svc` on this thread, and
/// over `TASKS` tasks on `rt`; per request.
fn timers<S>(svc: S, shape: Shape, rt: &Arc<tokio::runtime::Runtime>) -> (Timer, Timer)
where
    S: Service<Request<()>> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
    S::Future: Send,
{
    let uri = shape.uri();
    let (one, rt) = (svc.clone(), rt.clone());
    let single = Box::new(move |calls: u64| {
        let mut svc = one.clone();
        let start = Instant::now();
        for _ in 0..calls {
            black_box(once(&mut svc, shape.request(&uri)));
        }
        start.elapsed().as_secs_f64() * 1e9 / calls as f64
    });
    let uri = shape.uri();
    let multi = Box::new(move |calls: u64| {
        let per_task = calls.div_ceil(TASKS);
        rt.block_on(async {
            let start = Instant::now();
            let tasks: Vec<_> = (0..TASKS)
                .map(|_| {
                    let (mut svc, uri) = (svc.clone(), uri.clone());
                    tokio::spawn(async move {
                        for _ in 0..per_task {
                            black_box(once(&mut svc, shape.request(&uri)));
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
            start.elapsed().as_secs_f64() * 1e9 / (per_task * TASKS) as f64
        })
    });
    (single, multi)
}

/// `IAP_BENCH_ROUNDS=<n>`: no criterion; `n` rounds, each timing
/// `IAP_BENCH_CALLS` (default 200,000) requests through every path in
/// turn, so that a change in the machine's load hits all paths alike;
/// prints the medians over the rounds, the overheads and the ratios.
fn rounds(n: usize) {
    let calls: u64 = std::env::var("IAP_BENCH_CALLS").map_or(200_000, |n| n.parse().unwrap());
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKERS)
            .enable_all()
            .build()
            .unwrap(),
    );
    println!(
        "medians of {n} rounds of {calls} requests per path, paths interleaved (ns per request)"
    );
    table_head();
    for shape in [Shape::Minimal, Shape::Realistic] {
        let mut paths = Vec::new();
        for_each_path!(shape, |_name, svc| paths.push(timers(svc, shape, &rt)));
        let mut single = vec![Vec::new(); PATHS.len()];
        let mut multi = vec![Vec::new(); PATHS.len()];
        for _ in 0..n {
            for (i, (one, many)) in paths.iter().enumerate() {
                single[i].push(one(calls));
                multi[i].push(many(calls));
            }
        }
        for (schedule, times) in [("1thread", single), ("2x64", multi)] {
            let m: Vec<f64> = times
                .into_iter()
                .map(|mut t| {
                    t.sort_by(f64::total_cmp);
                    t[t.len() / 2]
                })
                .collect();
            table_row(&group_name(shape, schedule), &m);
        }
    }
}

fn main() {
    if let Ok(which) = std::env::var("IAP_BENCH_COUNT") {
        return count(&which);
    }
    if let Ok(n) = std::env::var("IAP_BENCH_ROUNDS") {
        return rounds(n.parse().expect("IAP_BENCH_ROUNDS=<number of rounds>"));
    }
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args();
    overhead(&mut criterion);
    criterion.final_summary();
    summary();
}
