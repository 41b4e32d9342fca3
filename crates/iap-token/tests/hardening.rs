//! Hostile and unlucky inputs: no panic, no hang, no unbounded read.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use base64::Engine as _;
use iap_emulator::{Emulator, Endpoint};
use iap_token::access_token::AccessToken;
use iap_token::source::BoxFuture;
use iap_token::{Audience, Error, IdToken, Result, TokenCache, TokenSource, adc};

fn jwt(claims: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!("{}.{}.c2ln", b64(r#"{"alg":"RS256"}"#), b64(claims))
}

#[test]
fn absurd_exp_values_are_malformed_tokens_naming_the_field() {
    for exp in [1u64 << 63, u64::MAX] {
        let err = IdToken::parse(jwt(&format!(r#"{{"aud":"a","exp":{exp}}}"#))).unwrap_err();
        assert!(matches!(err, Error::MalformedToken(_)), "{err:?}");
        assert!(err.to_string().contains("`exp`"), "{err}");
    }
    // A large but representable one is fine.
    assert!(IdToken::parse(jwt(r#"{"aud":"a","exp":253402300799}"#)).is_ok());
}

#[test]
fn absurd_expires_in_is_an_error_not_a_panic() {
    let err = AccessToken::new("ya29.x", Duration::MAX).unwrap_err();
    assert!(matches!(err, Error::MalformedToken(_)), "{err:?}");
    assert!(err.to_string().contains("expires_in"), "{err}");
    assert!(!err.to_string().contains("ya29.x"), "{err}");
}

/// A user's source that panics on its first call, then asks the emulator.
#[derive(Debug)]
struct PanicsOnce {
    calls: AtomicU32,
    inner: Arc<dyn TokenSource>,
}

impl TokenSource for PanicsOnce {
    fn id_token<'a>(&'a self, audience: &'a Audience) -> BoxFuture<'a, Result<IdToken>> {
        Box::pin(async move {
            if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("boom in a user's source");
            }
            self.inner.id_token(audience).await
        })
    }
}

#[tokio::test]
async fn a_panicking_source_fails_that_fetch_and_the_next_call_tries_again() {
    let emu = Emulator::start().await.unwrap();
    let sa = emu.create_service_account("panicky").await.unwrap();
    let source = Arc::new(PanicsOnce {
        calls: AtomicU32::new(0),
        inner: Arc::new(common::key_source(&sa)),
    });
    let cache = TokenCache::new(source.clone());
    let aud = Audience::new("aud-panic");

    let err = cache.token(&aud).await.unwrap_err();
    assert!(err.to_string().contains("panicked"), "{err}");
    assert!(err.to_string().contains("boom"), "{err}");
    assert_eq!(emu.requests(Endpoint::Token), 0);

    let token = cache.token(&aud).await.unwrap();
    assert_eq!(token.claims().aud.as_deref(), Some("aud-panic"));
    assert_eq!(source.calls.load(Ordering::SeqCst), 2);
    assert_eq!(emu.requests(Endpoint::Token), 1);
}

#[test]
fn credential_files_must_be_small_regular_files() {
    let dir = tempfile::tempdir().unwrap();
    let err = adc::from_file(dir.path()).unwrap_err();
    assert!(err.is_configuration(), "{err:?}");
    assert!(err.to_string().contains("directory"), "{err}");
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );

    #[cfg(unix)]
    {
        let err = adc::from_file("/dev/zero").unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert!(err.to_string().contains("/dev/zero"), "{err}");
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            // Refused at once: opening a FIFO for reading would block.
            let err = adc::from_file(&fifo).unwrap_err();
            assert!(err.to_string().contains("not a regular file"), "{err}");
        }
    }

    let big = dir.path().join("big.json");
    let mut text = String::from(r#"{"type":"service_account","pad":""#);
    text.push_str(&"x".repeat(1024 * 1024 + 1));
    text.push_str(r#""}"#);
    std::fs::write(&big, text).unwrap();
    let err = adc::from_file(&big).unwrap_err();
    assert!(err.to_string().contains("larger than 1024 KiB"), "{err}");
}

#[test]
fn a_bom_and_a_literal_backslash_n_in_the_pem_are_named() {
    let err = adc::from_json(b"\xEF\xBB\xBF{\"type\":\"service_account\"}").unwrap_err();
    assert!(err.to_string().contains("byte-order mark"), "{err}");
}

#[test]
fn bad_private_keys_say_what_is_wrong() {
    let key = |pem: &str| {
        serde_json::json!({
            "type": "service_account",
            "client_email": "a@p.iam.gserviceaccount.com",
            "private_key": pem,
        })
        .to_string()
    };
    let err = adc::from_json(key(
        "-----BEGIN PRIVATE KEY-----\\nMIIE\\n-----END PRIVATE KEY-----\\n",
    ))
    .unwrap_err();
    assert!(err.to_string().contains("literal"), "{err}");
    let err = adc::from_json(key(
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIE\n-----END ENCRYPTED PRIVATE KEY-----\n",
    ))
    .unwrap_err();
    assert!(err.to_string().contains("encrypted"), "{err}");
    // A 512-bit RSA key (test material only).
    let small = "-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEAu1SU1LfVLPHCozMx\nH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTK\nEn5u+QIDAQABAkEAkB1ygn6cDhfBBjGlB3Brz1PZl8cVTP1qYZ1BHm4nzyMCEFB8\nu5Ja7pVzNDuR9bfvOsWVnPvpU4q8XS7CkGZAQIhAPP2RM3a0Hd1RBnFdbDb9k5q\n3oLlgM8IqRk4p1KOxpUpAiEAxJcNJfQV8UrW+zw3hJmm3g3DmBsJ0Rz2RzVjR3yv\nkGkCIQCQmtzOy8r6V/1yo3RlHzHy0l+fr08Xao8rMqjrqXq1SQIgIVv3a+MMZbu5\nlbWOo1ppqFaCTsclTGehDWmVQhWLTnkCIEfPe+c7B1yGVy7jVtoCwnLwRI4M7skc\nWMu+FOnMtFKi\n-----END PRIVATE KEY-----\n";
    let err = adc::from_json(key(small)).unwrap_err();
    assert!(err.is_configuration(), "{err:?}");
    assert!(err.to_string().contains("field `private_key`"), "{err}");
}

/// The cause of an error, one level down.
fn cause(err: &Error) -> String {
    std::error::Error::source(err)
        .map(|s| s.to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_token_endpoint_that_never_answers_fails_at_the_fetch_deadline_naming_it() {
    use iap_emulator::Fault;
    let emu = Emulator::start().await.unwrap();
    let sa = emu.create_service_account("slow").await.unwrap();
    emu.inject(Endpoint::Token, Fault::delay(Duration::from_secs(3600)), 10);
    let cache = TokenCache::builder(Arc::new(common::key_source(&sa)))
        .fetch_deadline(Duration::from_secs(2))
        .backoff(Duration::from_millis(1), Duration::from_millis(1))
        .build();
    let err = cache.token(&Audience::new("aud-slow")).await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(err.to_string().contains(&emu.token_uri()), "{err}");
    assert!(!err.to_string().contains("ServiceAccountSource"), "{err}");
    assert!(cause(&err).contains("fetch deadline"), "{}", cause(&err));
    // Each attempt was abandoned after its share of the deadline and
    // retried: every one of the budget reached the endpoint.
    assert_eq!(emu.requests(Endpoint::Token), 4);
}

#[tokio::test]
async fn a_hung_attempt_is_abandoned_and_retried_within_the_deadline() {
    use iap_emulator::Fault;
    let emu = Emulator::start().await.unwrap();
    let sa = emu.create_service_account("hung-once").await.unwrap();
    emu.inject(Endpoint::Token, Fault::delay(Duration::from_secs(3600)), 1);
    let cache = TokenCache::builder(Arc::new(common::key_source(&sa)))
        .fetch_deadline(Duration::from_secs(2))
        .backoff(Duration::from_millis(1), Duration::from_millis(1))
        .build();
    let token = cache.token(&Audience::new("aud-hung")).await.unwrap();
    assert_eq!(token.claims().aud.as_deref(), Some("aud-hung"));
    assert_eq!(emu.requests(Endpoint::Token), 2);
    assert_eq!(emu.id_tokens_issued("aud-hung"), 1);
}

#[tokio::test]
async fn a_metadata_server_that_never_answers_is_named_at_the_deadline() {
    use iap_emulator::Fault;
    use iap_token::source::metadata::MetadataSource;
    let emu = Emulator::start().await.unwrap();
    emu.inject(
        Endpoint::MetadataIdentity,
        Fault::delay(Duration::from_secs(3600)),
        10,
    );
    let source = MetadataSource::with_host(&emu.metadata_host()).unwrap();
    let cache = TokenCache::builder(Arc::new(source))
        .fetch_deadline(Duration::from_millis(400))
        .max_retries(0)
        .build();
    let err = cache.token(&Audience::new("aud-md")).await.unwrap_err();
    let identity = format!(
        "http://{}/computeMetadata/v1/instance/service-accounts/default/identity",
        emu.metadata_host()
    );
    assert!(err.to_string().contains(&identity), "{err}");
    assert!(cause(&err).contains("fetch deadline"), "{}", cause(&err));
    assert_eq!(emu.requests(Endpoint::MetadataIdentity), 1);
}

/// A user's source that never answers and names no endpoint.
#[derive(Debug)]
struct NeverAnswers;

impl TokenSource for NeverAnswers {
    fn id_token<'a>(&'a self, _: &'a Audience) -> BoxFuture<'a, Result<IdToken>> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test]
async fn a_source_that_names_no_endpoint_is_named_by_its_debug() {
    let cache = TokenCache::builder(Arc::new(NeverAnswers))
        .fetch_deadline(Duration::from_millis(50))
        .build();
    let err = cache.token(&Audience::new("aud-never")).await.unwrap_err();
    assert!(err.to_string().contains("NeverAnswers"), "{err}");
    assert!(cause(&err).contains("fetch deadline"), "{}", cause(&err));
}

#[tokio::test]
async fn every_credential_file_names_its_endpoint() {
    let emu = Emulator::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = emu.write_adc_files(dir.path()).await.unwrap();
    let base = emu.url();
    for (path, path_part) in [
        (&files.service_account, "/token"),
        (&files.authorized_user, "/token"),
        (&files.impersonated_service_account, ":generateIdToken"),
        (&files.impersonated_from_service_account, ":generateIdToken"),
    ] {
        let source = adc::from_file(path).unwrap();
        let endpoint = source.endpoint().unwrap_or_default();
        assert!(
            endpoint.starts_with(&base) && endpoint.ends_with(path_part),
            "{}: {endpoint}",
            path.display()
        );
    }
}

#[tokio::test]
async fn a_garbled_200_is_retried_then_the_next_answer_is_used() {
    use iap_emulator::Fault;
    let emu = Emulator::start().await.unwrap();
    let sa = emu.create_service_account("garbled").await.unwrap();
    emu.inject(Endpoint::Token, Fault::Malformed, 2);
    let cache = TokenCache::builder(Arc::new(common::key_source(&sa)))
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .build();
    let token = cache.token(&Audience::new("aud-garbled")).await.unwrap();
    assert_eq!(token.claims().aud.as_deref(), Some("aud-garbled"));
    assert_eq!(emu.requests(Endpoint::Token), 3);

    // Persistently garbled: reported as malformed, after the budget.
    emu.inject(Endpoint::Token, Fault::Malformed, 100);
    let cache = TokenCache::builder(Arc::new(common::key_source(&sa)))
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .max_retries(2)
        .build();
    let err = cache
        .token(&Audience::new("aud-garbled-2"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
    assert_eq!(emu.requests(Endpoint::Token), 3 + 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_of_a_failing_fetch_gets_its_own_retry_budget() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let sa = emu.create_service_account("late-joiner").await.unwrap();
    // Two attempts per fetch; a second between them (jittered to 0.5-1 s).
    let cache = TokenCache::builder(Arc::new(common::key_source(&sa)))
        .max_retries(1)
        .backoff(Duration::from_secs(1), Duration::from_secs(1))
        .build();
    let audience = Audience::new(app.client_id());
    emu.inject(Endpoint::Token, iap_emulator::Fault::status(503), 2);

    let early = tokio::spawn({
        let (cache, audience) = (cache.clone(), audience.clone());
        async move { cache.token(&audience).await }
    });
    // The first attempt has failed and the second has begun: join now.
    while emu.requests(Endpoint::Token) < 2 {
        tokio::task::yield_now().await;
    }
    let late = cache.token(&audience).await;
    let early = early.await.unwrap();

    // The early caller spent its budget on two 503s; the late one had seen
    // only the second, so it got a fetch of its own, which succeeded.
    assert!(early.is_err(), "{early:?}");
    let token = late.unwrap();
    assert_eq!(token.claims().aud.as_deref(), Some(app.client_id()));
    assert_eq!(emu.requests(Endpoint::Token), 3);
    assert_eq!(emu.id_tokens_issued(app.client_id()), 1);
}
