//! The cached hot path: `TokenCache::cached` (table lookup) and
//! `Attach::cached` (pre-resolved entry), single-threaded and from 2 / 8 /
//! 64 concurrent tasks on a 2-worker runtime.
//!
//! Run with `cargo bench -p iap-token --bench hot_path`. The concurrent
//! figures are wall time per call over all tasks: flat or falling means no
//! contention cost.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{Extensions, Uri};
use iap_token::auth::{Attach, Plan};
use iap_token::source::static_token::StaticTokenSource;
use iap_token::{Audience, IapAuth, TokenCache};

const AUD: &str = "123456789012-abcdefghijklmnopqrstuvwxyz012345.apps.googleusercontent.com";

/// A token valid until 2100, so the bench never enters the refresh window.
fn jwt() -> String {
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let claims = format!(
        r#"{{"aud":"{AUD}","email":"bench@example.com","iat":4102440000,"exp":4102444800}}"#
    );
    format!(
        "{}.{}.{}",
        b64(r#"{"alg":"RS256","kid":"k"}"#),
        b64(&claims),
        b64(&"s".repeat(256))
    )
}

fn setup(rt: &tokio::runtime::Runtime) -> (TokenCache, Audience, Attach) {
    let source = Arc::new(StaticTokenSource::new(jwt()).expect("a valid JWT"));
    let auth = IapAuth::builder()
        .source_arc(source)
        .audience(AUD)
        .any_origin()
        .build()
        .expect("config");
    let Plan::Attach(attach) = auth.plan(
        &Uri::from_static("https://app.example.com/"),
        &Extensions::new(),
    ) else {
        unreachable!("no scope configured: every origin is attached")
    };
    rt.block_on(attach.fetch()).expect("the static token");
    (auth.cache().clone(), Audience::new(AUD), attach)
}

fn hot_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (cache, aud, attach) = setup(&rt);
    assert!(cache.cached(&aud).is_some() && attach.cached().is_some());

    let mut single = c.benchmark_group("single_thread");
    single.bench_function("TokenCache::cached", |b| {
        b.iter(|| black_box(cache.cached(black_box(&aud))))
    });
    single.bench_function("Attach::cached", |b| {
        b.iter(|| black_box(black_box(&attach).cached()))
    });
    single.finish();

    let mut concurrent = c.benchmark_group("concurrent");
    concurrent.measurement_time(Duration::from_secs(4));
    for tasks in [2u64, 8, 64] {
        concurrent.bench_with_input(
            BenchmarkId::new("TokenCache::cached", tasks),
            &tasks,
            |b, &tasks| {
                b.to_async(&rt).iter_custom(|iters| {
                    let (cache, aud) = (cache.clone(), aud.clone());
                    run_tasks(tasks, iters, move || {
                        let (cache, aud) = (cache.clone(), aud.clone());
                        move || black_box(cache.cached(black_box(&aud))).is_some()
                    })
                })
            },
        );
        concurrent.bench_with_input(
            BenchmarkId::new("Attach::cached", tasks),
            &tasks,
            |b, &tasks| {
                b.to_async(&rt).iter_custom(|iters| {
                    let attach = attach.clone();
                    run_tasks(tasks, iters, move || {
                        let attach = attach.clone();
                        move || black_box(&attach).cached().is_some()
                    })
                })
            },
        );
    }
    concurrent.finish();
}

/// Spreads `iters` calls over `tasks` spawned tasks; returns the wall time.
async fn run_tasks<M, F>(tasks: u64, iters: u64, make: M) -> Duration
where
    M: Fn() -> F,
    F: FnMut() -> bool + Send + 'static,
{
    let per_task = iters.div_ceil(tasks);
    let barrier = Arc::new(tokio::sync::Barrier::new(tasks as usize + 1));
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let mut call = make();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                for _ in 0..per_task {
                    assert!(call());
                }
            })
        })
        .collect();
    barrier.wait().await;
    let start = Instant::now();
    for handle in handles {
        handle.await.unwrap();
    }
    start.elapsed()
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
