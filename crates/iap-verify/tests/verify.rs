//! `IapVerifier` against the emulator's IAP over real loopback HTTP:
//! assertions the gate signed, each refusal with its reason, and the key
//! cache (max-age, rotation, unknown-kid refetch, single flight, last good
//! set).

mod common;

use std::time::{Duration, Instant};

use common::{World, claims_of, header_of, jwt};
use iap_emulator::{Emulator, Endpoint, Fault};
use iap_verify::{IapVerifier, Policy, VerifyError};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// Claims as the gate would sign them for the default app, now.
fn good_claims(w: &World) -> Value {
    let now = w.emu.now();
    json!({
        "iss": "https://cloud.google.com/iap",
        "aud": w.app.assertion_audience(),
        "email": "alice@example.com",
        "sub": "accounts.google.com:1234567890",
        "iat": now,
        "exp": now + 600,
    })
}

async fn refusal(verifier: &IapVerifier, assertion: &str) -> VerifyError {
    let error = verifier
        .verify(assertion)
        .await
        .expect_err("the assertion must be refused");
    // No error message ever carries the assertion or its parts.
    let shown = format!("{error} {error:?}");
    for part in assertion.split('.').filter(|p| p.len() > 8) {
        assert!(!shown.contains(part), "{shown}");
    }
    error
}

// ---- what passes -----------------------------------------------------------

#[tokio::test]
async fn an_assertion_from_the_gate_is_accepted_with_its_identity() {
    let w = World::start().await;
    let verifier = w.verifier();
    let assertion = w.assertion_via_gate(&w.app, "alice@example.com").await;
    let who = verifier.verify(&assertion).await.unwrap();

    assert_eq!(who.email(), Some("alice@example.com"));
    assert_eq!(who.subject(), claims_of(&assertion)["sub"]);
    assert!(who.subject().starts_with("accounts.google.com:"));
    assert_eq!(who.audience(), w.app.assertion_audience());
    assert_eq!(who.identity_source(), Some("GOOGLE"));
    assert_eq!(who.hosted_domain(), None);
    assert!(who.access_levels().is_empty());
    assert_eq!(who.claims()["iss"], "https://cloud.google.com/iap");
    let exp = claims_of(&assertion)["exp"].as_u64().unwrap();
    assert_eq!(
        who.expires_at(),
        std::time::UNIX_EPOCH + Duration::from_secs(exp)
    );
    // Debug tells who, never the assertion.
    let debug = format!("{who:?}");
    assert!(debug.contains("alice@example.com"));
    for part in assertion.split('.') {
        assert!(!debug.contains(part));
    }
}

#[tokio::test]
async fn every_accepted_audience_and_every_audience_shape_verifies() {
    let w = World::start().await;
    let gae = w.emu.create_app().app_engine().echo().await.unwrap();
    let run = w
        .emu
        .create_app()
        .cloud_run("europe-west1", "hello")
        .echo()
        .await
        .unwrap();
    let verifier = IapVerifier::builder()
        .audience(iap_verify::audience::backend_service(
            w.app.project_number(),
            w.app.backend_service_id(),
        ))
        .audience(iap_verify::audience::app_engine(
            gae.project_number(),
            gae.project_id(),
        ))
        .audience(iap_verify::audience::cloud_run(
            run.project_number(),
            "europe-west1",
            "hello",
        ))
        .jwks_url(w.emu.iap_jwks_url())
        .build()
        .unwrap();
    for app in [&w.app, &gae, &run] {
        let assertion = w.assertion_via_gate(app, "bob@example.com").await;
        let who = verifier.verify(&assertion).await.unwrap();
        assert_eq!(who.audience(), app.assertion_audience());
    }
}

// ---- each refusal, with its reason ----------------------------------------------

#[tokio::test]
async fn a_tampered_assertion_is_refused_as_a_bad_signature() {
    let w = World::start().await;
    let verifier = w.verifier();
    let assertion = w.assertion_via_gate(&w.app, "alice@example.com").await;
    let mut claims = claims_of(&assertion);
    claims["email"] = json!("mallory@example.com");
    let signature = assertion.rsplit('.').next().unwrap();
    let tampered = jwt(&header_of(&assertion), &claims, signature);
    let error = refusal(&verifier, &tampered).await;
    assert!(matches!(error, VerifyError::BadSignature { .. }), "{error}");
    assert!(error.to_string().starts_with("bad signature"));
}

#[tokio::test]
async fn an_expired_assertion_is_refused_as_expired() {
    let w = World::start().await;
    let verifier = w.verifier();
    // The emulator's IAP an hour behind: the assertion expired 50 minutes ago.
    w.emu.set_clock_offset(-3600);
    let assertion = w.assertion_via_gate(&w.app, "alice@example.com").await;
    w.emu.set_clock_offset(0);
    let error = refusal(&verifier, &assertion).await;
    assert!(matches!(error, VerifyError::Expired { .. }), "{error}");
    assert_eq!(error.check(), "expired");
}

#[tokio::test]
async fn the_leeway_covers_small_skew_and_is_configurable() {
    let w = World::start().await;
    // Expired 10 s ago by the emulator's clock: within the default 30 s.
    w.emu.set_clock_offset(-610);
    let assertion = w.assertion_via_gate(&w.app, "alice@example.com").await;
    w.emu.set_clock_offset(0);
    w.verifier().verify(&assertion).await.unwrap();
    let strict = w.builder().leeway(Duration::ZERO).build().unwrap();
    let error = refusal(&strict, &assertion).await;
    assert!(matches!(error, VerifyError::Expired { .. }), "{error}");
}

#[tokio::test]
async fn an_assertion_issued_in_the_future_is_refused() {
    let w = World::start().await;
    let verifier = w.verifier();
    w.emu.set_clock_offset(3600);
    let assertion = w.assertion_via_gate(&w.app, "alice@example.com").await;
    w.emu.set_clock_offset(0);
    let error = refusal(&verifier, &assertion).await;
    assert!(
        matches!(error, VerifyError::IssuedInTheFuture { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn an_assertion_for_another_audience_is_refused() {
    let w = World::start().await;
    let other = w.emu.create_app().echo().await.unwrap();
    let verifier = w.verifier();
    let assertion = w.assertion_via_gate(&other, "alice@example.com").await;
    let error = refusal(&verifier, &assertion).await;
    assert!(
        matches!(&error, VerifyError::WrongAudience { aud } if aud == other.assertion_audience()),
        "{error}"
    );
}

#[tokio::test]
async fn an_assertion_from_another_issuer_is_refused_even_signed_by_iap_keys() {
    let w = World::start().await;
    let verifier = w.verifier();
    let mut claims = good_claims(&w);
    claims["iss"] = json!("https://accounts.google.com");
    let assertion = w.emu.sign_assertion(&claims);
    let error = refusal(&verifier, &assertion).await;
    assert!(matches!(error, VerifyError::WrongIssuer { .. }), "{error}");
}

#[tokio::test]
async fn an_assertion_without_exp_is_refused() {
    let w = World::start().await;
    let mut claims = good_claims(&w);
    claims.as_object_mut().unwrap().remove("exp");
    let error = refusal(&w.verifier(), &w.emu.sign_assertion(&claims)).await;
    assert!(matches!(error, VerifyError::MissingClaim("exp")), "{error}");
}

#[tokio::test]
async fn alg_none_is_refused_as_the_wrong_algorithm() {
    let w = World::start().await;
    let verifier = w.verifier();
    let kid = w.emu.assertion_key_ids()[0].clone();
    let assertion = jwt(&json!({"alg": "none", "kid": kid}), &good_claims(&w), "");
    let error = refusal(&verifier, &assertion).await;
    assert!(
        matches!(&error, VerifyError::WrongAlgorithm { alg } if alg == "none"),
        "{error}"
    );
    assert_eq!(w.key_fetches(), 0, "garbage costs no key fetch");
}

#[tokio::test]
async fn hs256_keyed_with_the_public_key_set_is_refused() {
    let w = World::start().await;
    let verifier = w.verifier();
    let jwks = reqwest::get(w.emu.iap_jwks_url())
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(w.emu.assertion_key_ids()[0].clone());
    let assertion =
        jsonwebtoken::encode(&header, &good_claims(&w), &EncodingKey::from_secret(&jwks)).unwrap();
    let error = refusal(&verifier, &assertion).await;
    assert!(
        matches!(&error, VerifyError::WrongAlgorithm { alg } if alg == "HS256"),
        "{error}"
    );
}

#[tokio::test]
async fn rs256_is_refused_as_the_wrong_algorithm() {
    let w = World::start().await;
    let verifier = w.verifier();
    let sa = w.emu.create_service_account("forger").await.unwrap();
    let key: Value = serde_json::from_str(sa.key_json()).unwrap();
    let pem = key["private_key"].as_str().unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(w.emu.assertion_key_ids()[0].clone());
    let assertion = jsonwebtoken::encode(
        &header,
        &good_claims(&w),
        &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap();
    let error = refusal(&verifier, &assertion).await;
    assert!(
        matches!(&error, VerifyError::WrongAlgorithm { alg } if alg == "RS256"),
        "{error}"
    );
}

#[tokio::test]
async fn an_assertion_signed_by_a_key_iap_never_published_is_an_unknown_key() {
    let w = World::start().await;
    let verifier = w.verifier();
    // Another emulator's IAP: a valid ES256 signature, by a stranger.
    let stranger = Emulator::builder()
        .without_default_app()
        .start()
        .await
        .unwrap();
    let assertion = stranger.sign_assertion(&good_claims(&w));
    let error = refusal(&verifier, &assertion).await;
    assert!(matches!(error, VerifyError::UnknownKey { .. }), "{error}");
}

#[tokio::test]
async fn malformed_assertions_are_refused_as_malformed() {
    let w = World::start().await;
    let verifier = w.verifier();
    for garbage in ["", "abc", "a.b", "a.b.c.d", "!!!.???.###", "e30.e30.e30"] {
        let error = verifier.verify(garbage).await.unwrap_err();
        assert!(
            matches!(error.check(), "malformed" | "missing"),
            "{garbage:?}: {error}"
        );
    }
    assert_eq!(w.key_fetches(), 0);
}

// ---- policy -------------------------------------------------------------------

#[tokio::test]
async fn policy_checks_hosted_domain_email_domain_and_access_levels() {
    let w = World::start().await;
    let corp = "accessPolicies/1/accessLevels/corp";
    let app = w
        .emu
        .create_app()
        .access_levels([corp])
        .echo()
        .await
        .unwrap();
    let verifier = |policy: Policy| {
        IapVerifier::builder()
            .audience(app.assertion_audience())
            .audience(w.app.assertion_audience())
            .jwks_url(w.emu.iap_jwks_url())
            .policy(policy)
            .build()
            .unwrap()
    };

    // Access levels, as the gate reports them.
    let with_levels = w.assertion_via_gate(&app, "alice@example.com").await;
    let who = verifier(Policy::new().access_levels([corp]))
        .verify(&with_levels)
        .await
        .unwrap();
    assert_eq!(who.access_levels(), [corp]);
    let without = w.assertion_via_gate(&w.app, "alice@example.com").await;
    let error = refusal(&verifier(Policy::new().access_levels([corp])), &without).await;
    assert!(
        matches!(&error, VerifyError::Policy(why) if why.contains("access level")),
        "{error}"
    );

    // Email domains, without regard to case.
    let emails = verifier(Policy::new().email_domains(["EXAMPLE.com"]));
    emails.verify(&with_levels).await.unwrap();
    let outsider = w.assertion_via_gate(&w.app, "eve@evil.test").await;
    let error = refusal(&emails, &outsider).await;
    assert_eq!(error.check(), "policy");

    // Workspace domain (hd).
    let mut claims = good_claims(&w);
    claims["hd"] = json!("example.com");
    let workspace = w.emu.sign_assertion(&claims);
    let domains = verifier(Policy::new().hosted_domains(["example.com"]));
    let who = domains.verify(&workspace).await.unwrap();
    assert_eq!(who.hosted_domain(), Some("example.com"));
    let error = refusal(&domains, &without).await;
    assert!(
        matches!(&error, VerifyError::Policy(why) if why.contains("hosted domain")),
        "{error}"
    );
}

// ---- keys -----------------------------------------------------------------------

#[tokio::test]
async fn keys_are_fetched_once_and_a_verified_assertion_is_remembered() {
    let w = World::start().await;
    let verifier = w.verifier();
    assert_eq!(w.key_fetches(), 0, "build() fetches nothing");
    for i in 0..10 {
        let assertion = w
            .assertion_via_gate(&w.app, &format!("u{i}@example.com"))
            .await;
        verifier.verify(&assertion).await.unwrap();
        verifier.verify(&assertion).await.unwrap();
    }
    assert_eq!(w.key_fetches(), 1);
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_without_a_restart() {
    let w = World::start().await;
    let verifier = w.verifier();
    let before = w.assertion_via_gate(&w.app, "alice@example.com").await;
    verifier.verify(&before).await.unwrap();
    assert_eq!(w.key_fetches(), 1);

    w.emu.rotate_assertion_key().unwrap();
    let after = w.assertion_via_gate(&w.app, "alice@example.com").await;
    assert_ne!(header_of(&after)["kid"], header_of(&before)["kid"]);
    let who = verifier.verify(&after).await.unwrap();
    assert_eq!(who.email(), Some("alice@example.com"));
    assert_eq!(w.key_fetches(), 2, "one refetch for the new kid");
    // The previous key stays published: older assertions still verify.
    let again = w.verifier();
    again.verify(&before).await.unwrap();
}

#[tokio::test]
async fn unknown_kid_refetches_are_rate_limited() {
    let w = World::start().await;
    let verifier = w.verifier();
    let good = w.assertion_via_gate(&w.app, "alice@example.com").await;
    verifier.verify(&good).await.unwrap();
    assert_eq!(w.key_fetches(), 1);

    for i in 0..20 {
        let garbage = jwt(
            &json!({"alg": "ES256", "kid": format!("garbage-{i}")}),
            &good_claims(&w),
            good.rsplit('.').next().unwrap(),
        );
        let error = refusal(&verifier, &garbage).await;
        assert!(matches!(error, VerifyError::UnknownKey { .. }), "{error}");
    }
    assert_eq!(w.key_fetches(), 2, "one refetch for twenty unknown kids");
    // The good assertion is still fine.
    verifier.verify(&good).await.unwrap();
}

#[tokio::test]
async fn concurrent_first_verifications_share_one_key_fetch() {
    let w = World::start().await;
    let verifier = w.verifier();
    let mut assertions = Vec::new();
    for i in 0..16 {
        assertions.push(
            w.assertion_via_gate(&w.app, &format!("u{i}@example.com"))
                .await,
        );
    }
    // Hold the key server's answer so that every verification waits for it.
    w.emu
        .inject(Endpoint::IapJwks, Fault::Delay { millis: 300 }, 1);
    let tasks: Vec<_> = assertions
        .into_iter()
        .map(|a| {
            let verifier = verifier.clone();
            tokio::spawn(async move {
                verifier
                    .verify(&a)
                    .await
                    .map(|who| who.email().map(str::to_owned))
            })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap().unwrap().is_some());
    }
    assert_eq!(w.key_fetches(), 1);
}

#[tokio::test]
async fn the_last_good_key_set_is_kept_when_a_refetch_fails() {
    let w = World::start().await;
    // Nothing remembered: every verification below checks the signature
    // against the key set in hand.
    let verifier = w.builder().remembered_assertions(0).build().unwrap();
    let good = w.assertion_via_gate(&w.app, "alice@example.com").await;
    verifier.verify(&good).await.unwrap();

    w.emu.rotate_assertion_key().unwrap();
    w.emu.inject(Endpoint::IapJwks, Fault::status(503), 1);
    let rotated = w.assertion_via_gate(&w.app, "bob@example.com").await;
    let error = refusal(&verifier, &rotated).await;
    assert!(matches!(error, VerifyError::UnknownKey { .. }), "{error}");
    assert_eq!(
        w.emu.pending_faults(Endpoint::IapJwks),
        0,
        "the refetch was tried"
    );
    assert_eq!(w.key_fetches(), 2);

    // The set fetched before is still in use.
    let again = verifier.verify(&good).await.unwrap();
    assert_eq!(again.email(), Some("alice@example.com"));
    assert_eq!(w.key_fetches(), 2);
}

#[tokio::test]
async fn a_key_server_that_fails_from_the_start_is_a_transient_error() {
    let w = World::start().await;
    let verifier = w.verifier();
    w.emu.inject(Endpoint::IapJwks, Fault::status(500), 1);
    let good = w.assertion_via_gate(&w.app, "alice@example.com").await;
    let error = refusal(&verifier, &good).await;
    assert!(error.is_transient(), "{error}");
    assert_eq!(error.check(), "keys");
    assert!(error.to_string().contains(&w.emu.iap_jwks_url()), "{error}");
    // The next request fetches again and passes.
    verifier.verify(&good).await.unwrap();
    assert_eq!(w.key_fetches(), 2);
}

#[tokio::test]
async fn keys_are_refreshed_in_the_background_ahead_of_their_max_age() {
    let w = World::start().await;
    // A short cache lifetime (the verifier honours at least 2 s).
    w.emu.set_assertion_keys_max_age(Duration::from_secs(2));
    let verifier = w.verifier();
    let good = w.assertion_via_gate(&w.app, "alice@example.com").await;
    verifier.verify(&good).await.unwrap();
    assert_eq!(w.key_fetches(), 1);

    // Rotate: the background refresh (at 3/4 of max-age) must publish the
    // new key to the verifier without any request asking for it.
    w.emu.rotate_assertion_key().unwrap();
    // A third fetch means the second one (after the rotation) completed:
    // the refresh task fetches one set after the other.
    let deadline = Instant::now() + Duration::from_secs(60);
    while w.key_fetches() < 3 {
        assert!(Instant::now() < deadline, "no background refresh in 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fetches = w.key_fetches();
    let rotated = w.assertion_via_gate(&w.app, "bob@example.com").await;
    verifier.verify(&rotated).await.unwrap();
    assert_eq!(w.key_fetches(), fetches, "the new key was already known");
}
