//! TokenCache against the emulator's token endpoint, over loopback.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use iap_emulator::{Emulator, Endpoint, Fault};
use iap_token::source::metadata::MetadataSource;
use iap_token::source::{BoxFuture, TokenSource};
use iap_token::{Audience, IdToken, Result, TokenCache};
use tokio::sync::{Barrier, mpsc};

const AUD: &str = "1234-cache.apps.googleusercontent.com";

async fn service_account(emu: &Emulator) -> (Arc<dyn TokenSource>, String) {
    let sa = emu.create_service_account("cache-test").await.unwrap();
    (Arc::new(common::key_source(&sa)), sa.key_json().to_owned())
}

/// The real source, reporting when a fetch starts and when its future ends
/// (completes or is dropped).
#[derive(Debug)]
struct Observed {
    inner: Arc<dyn TokenSource>,
    started: mpsc::UnboundedSender<()>,
    ended: mpsc::UnboundedSender<()>,
}

struct OnDrop(mpsc::UnboundedSender<()>);
impl Drop for OnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

impl TokenSource for Observed {
    fn id_token<'a>(&'a self, audience: &'a Audience) -> BoxFuture<'a, Result<IdToken>> {
        let _ = self.started.send(());
        let guard = OnDrop(self.ended.clone());
        Box::pin(async move {
            let _guard = guard;
            self.inner.id_token(audience).await
        })
    }
}

fn observed(
    inner: Arc<dyn TokenSource>,
) -> (
    Arc<dyn TokenSource>,
    mpsc::UnboundedReceiver<()>,
    mpsc::UnboundedReceiver<()>,
) {
    let (started, started_rx) = mpsc::unbounded_channel();
    let (ended, ended_rx) = mpsc::unbounded_channel();
    (
        Arc::new(Observed {
            inner,
            started,
            ended,
        }),
        started_rx,
        ended_rx,
    )
}

/// Every caller's token, once all have finished; each must have succeeded.
async fn tokens_of(callers: tokio::task::JoinSet<Result<IdToken>>) -> Vec<IdToken> {
    callers
        .join_all()
        .await
        .into_iter()
        .collect::<Result<_>>()
        .unwrap()
}

fn unix_ms(t: SystemTime) -> u128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_cold_callers_cause_one_token_request() {
    let emu = Emulator::start().await.unwrap();
    let (source, _) = service_account(&emu).await;
    let cache = TokenCache::new(source);
    let aud = Audience::new(AUD);
    // A slow answer keeps the fetch in flight while every caller arrives.
    emu.inject(Endpoint::Token, Fault::delay(Duration::from_millis(300)), 1);

    let barrier = Arc::new(Barrier::new(10_000));
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..10_000 {
        let (cache, aud, barrier) = (cache.clone(), aud.clone(), barrier.clone());
        callers.spawn(async move {
            barrier.wait().await;
            cache.token(&aud).await
        });
    }
    let tokens = tokens_of(callers).await;

    assert_eq!(emu.id_tokens_issued(AUD), 1);
    assert_eq!(emu.requests(Endpoint::Token), 1);
    assert!(tokens.iter().all(|t| t.same_as(&tokens[0])));
    assert_eq!(tokens[0].claims().aud.as_deref(), Some(AUD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_invalidations_of_one_token_fetch_one_new_token() {
    let emu = Emulator::start().await.unwrap();
    let (source, _) = service_account(&emu).await;
    let cache = TokenCache::new(source);
    let aud = Audience::new(AUD);
    let refused = cache.token(&aud).await.unwrap();

    let barrier = Arc::new(Barrier::new(1_000));
    let dropped = Arc::new(AtomicUsize::new(0));
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..1_000 {
        let (cache, aud, barrier, refused, dropped) = (
            cache.clone(),
            aud.clone(),
            barrier.clone(),
            refused.clone(),
            dropped.clone(),
        );
        callers.spawn(async move {
            barrier.wait().await;
            if cache.invalidate(&refused) {
                dropped.fetch_add(1, Ordering::Relaxed);
            }
            cache.token(&aud).await
        });
    }
    let tokens = tokens_of(callers).await;

    assert_eq!(
        dropped.load(Ordering::Relaxed),
        1,
        "exactly one invalidation takes effect"
    );
    assert_eq!(
        emu.id_tokens_issued(AUD),
        2,
        "the first token and exactly one replacement"
    );
    // Callers that asked before the one effective invalidation may hold the
    // old token; everyone else holds the single replacement.
    let fresh: Vec<_> = tokens.iter().filter(|t| !t.same_as(&refused)).collect();
    assert!(!fresh.is_empty());
    assert!(fresh.iter().all(|t| t.same_as(fresh[0])));
    assert!(cache.cached(&aud).unwrap().same_as(fresh[0]));
    assert!(
        !cache.invalidate(&refused),
        "an old token no longer invalidates anything"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_keep_the_valid_token_while_a_slow_refresh_runs_and_never_get_an_expired_one() {
    let emu = Emulator::builder()
        .token_lifetime(Duration::from_secs(5))
        .start()
        .await
        .unwrap();
    let (source, _) = service_account(&emu).await;
    let cache = TokenCache::new(source);
    let aud = Audience::new(AUD);
    let first = cache.token(&aud).await.unwrap();
    // The refresh (from the token's midpoint) will take 1.5 s to answer.
    emu.inject(
        Endpoint::Token,
        Fault::delay(Duration::from_millis(1_500)),
        1,
    );

    // Steady traffic (a load generator, not synchronisation): every 20 ms a
    // caller asks, until the refreshed token shows up.
    let mut ticks = tokio::time::interval(Duration::from_millis(20));
    let (mut served_during_refresh, mut calls) = (0, 0);
    let refreshed = loop {
        ticks.tick().await;
        calls += 1;
        assert!(calls < 1_000, "the refreshed token never arrived");
        let in_flight_before = emu.requests(Endpoint::Token) == 2 && emu.id_tokens_issued(AUD) == 1;
        let token = cache.token(&aud).await.unwrap();
        let now = SystemTime::now();
        assert!(token.expires_at() > now, "handed out an expired token");
        assert!(
            unix_ms(token.expires_at()) - unix_ms(now) >= 400,
            "handed out a token inside the expiry margin"
        );
        let in_flight_after = emu.requests(Endpoint::Token) == 2 && emu.id_tokens_issued(AUD) == 1;
        if token.same_as(&first) {
            if in_flight_before && in_flight_after {
                served_during_refresh += 1;
            }
        } else {
            break token;
        }
    };

    assert!(
        served_during_refresh > 10,
        "only {served_during_refresh} calls saw the refresh in flight"
    );
    assert_eq!(emu.id_tokens_issued(AUD), 2);
    assert!(refreshed.expires_at() > first.expires_at());
}

#[tokio::test]
async fn transient_503s_are_retried_then_succeed() {
    let emu = Emulator::start().await.unwrap();
    let (source, _) = service_account(&emu).await;
    let cache = TokenCache::builder(source)
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
        .build();
    emu.inject(Endpoint::Token, Fault::status(503), 2);

    let token = cache.token(&Audience::new(AUD)).await.unwrap();

    assert_eq!(token.claims().aud.as_deref(), Some(AUD));
    assert_eq!(emu.requests(Endpoint::Token), 3);
    assert_eq!(emu.id_tokens_issued(AUD), 1);
}

#[tokio::test]
async fn retries_are_bounded() {
    let emu = Emulator::start().await.unwrap();
    let (source, _) = service_account(&emu).await;
    let cache = TokenCache::builder(source)
        .max_retries(2)
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
        .build();
    emu.inject(Endpoint::Token, Fault::status(503), 10);

    let err = cache.token(&Audience::new(AUD)).await.unwrap_err();

    assert!(err.is_transient(), "{err}");
    assert_eq!(emu.requests(Endpoint::Token), 3, "one try and two retries");
}

#[tokio::test]
async fn invalid_grant_is_not_retried_and_its_message_names_the_cause() {
    let emu = Emulator::start().await.unwrap();
    let (source, _) = service_account(&emu).await;
    let cache = TokenCache::new(source);
    emu.inject(
        Endpoint::Token,
        Fault::error(400, "invalid_grant", "Invalid JWT Signature."),
        5,
    );

    let err = cache.token(&Audience::new(AUD)).await.unwrap_err();

    assert!(!err.is_transient());
    let message = err.to_string();
    assert!(
        message.contains("invalid_grant") && message.contains("Invalid JWT Signature."),
        "{message}"
    );
    assert_eq!(emu.requests(Endpoint::Token), 1);
    assert_eq!(emu.pending_faults(Endpoint::Token), 4);
}

/// Tokens minted by an emulator whose clock runs `3600 - remaining`
/// seconds behind arrive with `remaining` seconds left: inside the refresh
/// window at once. The metadata server's tokens need no client assertion,
/// so the skew does not get them refused.
async fn emulator_with_tokens_near_expiry(remaining: i64) -> (Emulator, Arc<dyn TokenSource>) {
    let emu = Emulator::start().await.unwrap();
    emu.set_clock_offset(remaining - 3600);
    let source = Arc::new(MetadataSource::with_host(&emu.metadata_host()).unwrap());
    (emu, source)
}

/// Like GCE, the emulator's metadata server answers from its own cache
/// until 300 s before expiry by *its* clock; setting the clock empties it,
/// so the next request mints a new token.
fn forget_cached_tokens(emu: &Emulator) {
    emu.set_clock_offset(emu.clock_offset());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_cache_ends_its_background_refresh() {
    let (emu, source) = emulator_with_tokens_near_expiry(120).await;
    let (source, mut started, mut ended) = observed(source);
    let cache = TokenCache::new(source);
    let aud = Audience::new(AUD);
    let first = cache.token(&aud).await.unwrap();
    started.recv().await.unwrap();
    ended.recv().await.unwrap();
    // The background refresh would hang for a minute.
    forget_cached_tokens(&emu);
    emu.inject(
        Endpoint::MetadataIdentity,
        Fault::delay(Duration::from_secs(60)),
        1,
    );

    // 120 s left < 240 s: this read starts a background refresh.
    assert!(cache.cached(&aud).unwrap().same_as(&first));
    started.recv().await.unwrap();
    drop(cache);

    tokio::time::timeout(Duration::from_secs(10), ended.recv())
        .await
        .expect("the background refresh outlived the cache")
        .unwrap();
    assert_eq!(
        emu.id_tokens_issued(AUD),
        1,
        "the refresh was cancelled, not completed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_background_refresh_keeps_the_valid_token_and_backs_off() {
    let (emu, source) = emulator_with_tokens_near_expiry(120).await;
    let (source, mut started, mut ended) = observed(source);
    let cache = TokenCache::builder(source).max_retries(0).build();
    let aud = Audience::new(AUD);
    let first = cache.token(&aud).await.unwrap();
    started.recv().await.unwrap();
    ended.recv().await.unwrap();
    emu.inject(Endpoint::MetadataIdentity, Fault::status(503), 1);

    assert!(cache.cached(&aud).unwrap().same_as(&first));
    started.recv().await.unwrap();
    ended.recv().await.unwrap();
    // The failed refresh is over: reads keep the valid token and do not
    // start another fetch during the backoff.
    for _ in 0..1_000 {
        assert!(cache.cached(&aud).unwrap().same_as(&first));
        assert!(cache.token(&aud).await.unwrap().same_as(&first));
    }
    tokio::task::yield_now().await;
    assert!(
        started.try_recv().is_err(),
        "a read started a refresh during the backoff"
    );
    assert_eq!(emu.requests(Endpoint::MetadataIdentity), 2);
}

#[test]
fn without_a_runtime_a_due_refresh_waits_for_the_next_token_call() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (emu, source) = rt.block_on(emulator_with_tokens_near_expiry(120));
    let (source, mut started, mut ended) = observed(source);
    let cache = TokenCache::new(source); // built outside any runtime
    let aud = Audience::new(AUD);
    let first = rt.block_on(cache.token(&aud)).unwrap();
    rt.block_on(async {
        started.recv().await.unwrap();
        ended.recv().await.unwrap();
    });

    // No runtime on this thread: a read inside the refresh window returns
    // the valid token and cannot spawn the refresh.
    assert!(tokio::runtime::Handle::try_current().is_err());
    assert!(cache.cached(&aud).unwrap().same_as(&first));
    assert!(started.try_recv().is_err());

    // The next `token()` call starts it, and still answers with the valid token.
    forget_cached_tokens(&emu);
    assert!(rt.block_on(cache.token(&aud)).unwrap().same_as(&first));
    rt.block_on(async {
        started.recv().await.unwrap();
        ended.recv().await.unwrap();
    });
    assert_eq!(emu.id_tokens_issued(AUD), 2);
    // The flight stores its token just after the source's future ends.
    let refreshed = rt.block_on(async {
        let stored = async {
            loop {
                let token = cache.token(&aud).await.unwrap();
                if !token.same_as(&first) {
                    break token;
                }
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), stored).await
    });
    assert!(refreshed.is_ok(), "the refreshed token was never stored");
    assert_eq!(emu.requests(Endpoint::MetadataIdentity), 2);
}

#[tokio::test]
async fn debug_of_the_cache_shows_no_token_or_key() {
    let emu = Emulator::start().await.unwrap();
    let (source, key_json) = service_account(&emu).await;
    let cache = TokenCache::new(source);
    let token = cache.token(&Audience::new(AUD)).await.unwrap();

    let debug = format!("{cache:?}");
    assert!(debug.contains(AUD), "{debug}");
    assert!(!debug.contains(token.as_str()), "{debug}");
    let key: serde_json::Value = serde_json::from_str(&key_json).unwrap();
    let pem = key["private_key"].as_str().unwrap();
    let pem_body = pem.lines().nth(1).unwrap();
    assert!(!debug.contains(pem_body), "{debug}");
}
