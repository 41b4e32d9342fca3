//! Per-request cost of `IapVerifyLayer` over a service that answers at
//! once, against the bare service (the floor), in the same run; and the
//! cost of a first verification (ES256 and the claims), which a
//! remembered assertion skips.
//!
//! Each layer iteration: build a request carrying the assertion, then
//! `poll_ready`, `call`, poll the response future to completion (it is
//! ready at once), drop the response. IAP's keys come from an emulator
//! started for the run and are fetched before measuring.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderValue, Request, Response};
use iap_verify::{ASSERTION_HEADER, IapIdentity, IapVerifier, IapVerifyLayer};
use tower::{Layer, Service};

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
        black_box(req.extensions().get::<IapIdentity>());
        black_box(&req);
        ready(Ok(Response::new(())))
    }
}

fn request(assertion: &HeaderValue) -> Request<()> {
    let mut req = Request::new(());
    *req.uri_mut() = http::Uri::from_static("/api/items?page=2");
    req.headers_mut()
        .insert(ASSERTION_HEADER, assertion.clone());
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
        _ => panic!("not ready at once: the assertion was not remembered"),
    }
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let emulator = rt.block_on(iap_emulator::Emulator::start()).unwrap();
    let app = emulator.app();
    let assertion = emulator.mint_assertion(&app, "bench@example.com");
    let header = HeaderValue::from_str(&assertion).unwrap();
    let build = |remembered| {
        IapVerifier::builder()
            .audience(app.assertion_audience())
            .jwks_url(emulator.iap_jwks_url())
            .remembered_assertions(remembered)
            .build()
            .unwrap()
    };
    let verifier = build(1024);
    let forgetful = build(0);
    rt.block_on(async {
        verifier.verify(&assertion).await.unwrap();
        forgetful.verify(&assertion).await.unwrap();
    });

    let mut group = c.benchmark_group("per_request");
    let mut bare = Answer;
    group.bench_function("bare_service", |b| {
        b.iter(|| once(&mut bare, request(&header)))
    });
    let mut layered = IapVerifyLayer::new(verifier.clone()).layer(Answer);
    group.bench_function("iap_verify_layer_remembered", |b| {
        b.iter(|| once(&mut layered, request(&header)))
    });
    group.finish();

    let mut group = c.benchmark_group("verify");
    group.bench_function("remembered", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(verifier.verify(black_box(&assertion)).await.unwrap()) })
    });
    group.bench_function("first_es256", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(forgetful.verify(black_box(&assertion)).await.unwrap()) })
    });
    group.finish();
}

criterion_group! {
    name = layer;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
        .sample_size(50);
    targets = benches
}
criterion_main!(layer);
