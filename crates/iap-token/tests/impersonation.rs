//! Service-account impersonation against the emulator's IAM Credentials:
//! every kind of source credential, delegation chains, the access token's
//! lifetime, ADC files, and the errors.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::key_source;
use iap_emulator::{
    Adc, Emulator, Endpoint, Fault, Grant, ServiceAccount, SubjectTokenSource, counter,
};
use iap_token::access_token::AccessTokenSource;
use iap_token::source::authorized_user::{AuthorizedUser, AuthorizedUserSource};
use iap_token::source::impersonated::ImpersonatedSource;

const OPENID_TOKEN_CREATOR_ROLE: &str = "roles/iam.serviceAccountOpenIdTokenCreator";
const TOKEN_CREATOR_ROLE: &str = "roles/iam.serviceAccountTokenCreator";
use iap_token::source::metadata::MetadataSource;
use iap_token::{Audience, Error, TokenCache, TokenSource, adc};

const AUD: &str = "123-iap.apps.googleusercontent.com";

fn impersonate(
    emu: &Emulator,
    source: impl AccessTokenSource,
    target: &ServiceAccount,
) -> ImpersonatedSource {
    ImpersonatedSource::new(target.email(), source)
        .unwrap()
        .with_iam_endpoint(emu.url())
        .unwrap()
}

fn access_tokens(emu: &Emulator, grant: Grant) -> u64 {
    emu.counter(counter::ACCESS_TOKENS, grant.name())
}

fn id_tokens(emu: &Emulator, audience: &str) -> u64 {
    emu.id_tokens_issued_by(Grant::GenerateIdToken, audience)
}

async fn two_accounts(emu: &Emulator) -> (ServiceAccount, ServiceAccount) {
    let (caller, target) = tokio::join!(
        emu.create_service_account("caller"),
        emu.create_service_account("target")
    );
    (caller.unwrap(), target.unwrap())
}

/// A caller and a target, the caller granted the right to impersonate the target.
async fn caller_granted_on_target(emu: &Emulator) -> (ServiceAccount, ServiceAccount) {
    let (caller, target) = two_accounts(emu).await;
    emu.allow_impersonation(caller.email(), target.email());
    (caller, target)
}

/// Two relays for a delegation chain, `relay-one` and `relay-two`.
async fn two_relays(emu: &Emulator) -> (ServiceAccount, ServiceAccount) {
    let (d1, d2) = tokio::join!(
        emu.create_service_account("relay-one"),
        emu.create_service_account("relay-two")
    );
    (d1.unwrap(), d2.unwrap())
}

#[tokio::test]
async fn service_account_key_mints_the_targets_id_token_with_its_email() {
    let emu = Emulator::start().await.unwrap();
    let (caller, target) = caller_granted_on_target(&emu).await;

    let token = impersonate(&emu, key_source(&caller), &target)
        .id_token(&Audience::new(AUD))
        .await
        .unwrap();

    assert_eq!(token.claims().aud.as_deref(), Some(AUD));
    assert_eq!(
        token.claims().email.as_deref(),
        Some(target.email()),
        "includeEmail: true was sent"
    );
    assert_eq!(id_tokens(&emu, AUD), 1);
    assert_eq!(
        access_tokens(&emu, Grant::JwtBearer),
        1,
        "the key's JWT-bearer grant asked for an access token"
    );
}

#[tokio::test]
async fn the_access_token_is_fetched_once_per_its_lifetime_not_per_id_token() {
    let emu = Emulator::start().await.unwrap();
    let (caller, target) = caller_granted_on_target(&emu).await;
    let source = Arc::new(impersonate(&emu, key_source(&caller), &target));

    // A cold burst while the token endpoint is slow: every caller waits for
    // the one access-token fetch. Then sequential ID tokens reuse it.
    emu.inject(Endpoint::Token, Fault::delay(Duration::from_millis(300)), 1);
    let burst: Vec<_> = (0..16)
        .map(|i| {
            let source = source.clone();
            tokio::spawn(async move { source.id_token(&Audience::new(format!("burst-{i}"))).await })
        })
        .collect();
    for task in burst {
        task.await.unwrap().unwrap();
    }
    for i in 0..3 {
        source
            .id_token(&Audience::new(format!("aud-{i}")))
            .await
            .unwrap();
    }

    assert_eq!(emu.requests(Endpoint::Token), 1);
    assert_eq!(
        emu.counter_total(&counter::id_tokens_by(Grant::GenerateIdToken)),
        19
    );
    assert_eq!(access_tokens(&emu, Grant::JwtBearer), 1);
}

#[tokio::test]
async fn a_cache_refresh_of_the_id_token_reuses_the_access_token() {
    let emu = Emulator::start().await.unwrap();
    let (caller, target) = caller_granted_on_target(&emu).await;
    let cache = TokenCache::new(Arc::new(impersonate(&emu, key_source(&caller), &target)));
    let aud = Audience::new(AUD);

    let first = cache.token(&aud).await.unwrap();
    assert!(cache.invalidate(&first));
    let second = cache.token(&aud).await.unwrap();

    assert!(!first.same_as(&second));
    assert_eq!(id_tokens(&emu, AUD), 2);
    assert_eq!(access_tokens(&emu, Grant::JwtBearer), 1);
}

#[tokio::test]
async fn an_access_token_refused_by_iam_is_replaced_once() {
    let emu = Emulator::start().await.unwrap();
    let (caller, target) = caller_granted_on_target(&emu).await;
    let source = impersonate(&emu, key_source(&caller), &target);
    source.id_token(&Audience::new("warm-up")).await.unwrap();

    emu.inject(Endpoint::GenerateIdToken, Fault::status(401), 1);
    let token = source.id_token(&Audience::new(AUD)).await.unwrap();

    assert_eq!(token.claims().email.as_deref(), Some(target.email()));
    assert_eq!(
        access_tokens(&emu, Grant::JwtBearer),
        2,
        "one new access token after the 401"
    );
    assert_eq!(emu.requests(Endpoint::GenerateIdToken), 3);
}

#[tokio::test]
async fn a_second_401_is_an_error_not_a_loop() {
    let emu = Emulator::start().await.unwrap();
    let (caller, target) = caller_granted_on_target(&emu).await;
    emu.inject(Endpoint::GenerateIdToken, Fault::status(401), 5);

    let err = impersonate(&emu, key_source(&caller), &target)
        .id_token(&Audience::new(AUD))
        .await
        .unwrap_err();

    assert!(matches!(err, Error::Endpoint { status: 401, .. }), "{err}");
    assert_eq!(emu.requests(Endpoint::GenerateIdToken), 2);
    assert_eq!(access_tokens(&emu, Grant::JwtBearer), 2);
}

#[tokio::test]
async fn a_missing_grant_is_a_403_naming_the_role_the_principal_and_the_target() {
    let emu = Emulator::start().await.unwrap();
    let (caller, target) = two_accounts(&emu).await;

    let err = impersonate(&emu, key_source(&caller), &target)
        .id_token(&Audience::new(AUD))
        .await
        .unwrap_err();

    assert!(matches!(err, Error::Endpoint { status: 403, .. }), "{err}");
    assert!(!err.is_transient());
    let text = err.to_string();
    assert!(text.contains(OPENID_TOKEN_CREATOR_ROLE), "{text}");
    assert!(
        text.contains(&format!("--member=serviceAccount:{}", caller.email())),
        "{text}"
    );
    assert!(
        text.contains(&format!("add-iam-policy-binding {}", target.email())),
        "{text}"
    );
    assert!(
        text.contains("iam.serviceAccounts.getOpenIdToken"),
        "Google's own message is kept: {text}"
    );
}

#[tokio::test]
async fn a_delegation_chain_with_every_link_granted_mints_the_token() {
    let emu = Emulator::start().await.unwrap();
    let (caller, target) = two_accounts(&emu).await;
    let (d1, d2) = two_relays(&emu).await;
    emu.allow_impersonation(caller.email(), d1.email());
    emu.allow_impersonation(d1.email(), d2.email());
    emu.allow_impersonation(d2.email(), target.email());

    let source = ImpersonatedSource::new(target.email(), key_source(&caller))
        .unwrap()
        .with_delegates([
            d1.email().to_string(),
            format!("projects/-/serviceAccounts/{}", d2.email()),
        ])
        .unwrap()
        .with_iam_endpoint(emu.url())
        .unwrap();
    assert_eq!(
        source.delegates(),
        [
            format!("projects/-/serviceAccounts/{}", d1.email()),
            format!("projects/-/serviceAccounts/{}", d2.email())
        ]
    );
    let token = source.id_token(&Audience::new(AUD)).await.unwrap();

    assert_eq!(token.claims().email.as_deref(), Some(target.email()));
}

#[tokio::test]
async fn a_delegation_chain_with_a_missing_link_is_denied_and_the_chain_explained() {
    let emu = Emulator::start().await.unwrap();
    let (caller, target) = two_accounts(&emu).await;
    let (d1, d2) = two_relays(&emu).await;
    emu.allow_impersonation(caller.email(), d1.email());
    // d1 -> d2 is missing.
    emu.allow_impersonation(d2.email(), target.email());

    let err = ImpersonatedSource::new(target.email(), key_source(&caller))
        .unwrap()
        .with_delegates([d1.email(), d2.email()])
        .unwrap()
        .with_iam_endpoint(emu.url())
        .unwrap()
        .id_token(&Audience::new(AUD))
        .await
        .unwrap_err();

    assert!(matches!(err, Error::Endpoint { status: 403, .. }), "{err}");
    let text = err.to_string();
    let chain = format!(
        "{} -> {} -> {} -> {}",
        caller.email(),
        d1.email(),
        d2.email(),
        target.email()
    );
    assert!(text.contains(&chain), "{text}");
    assert!(
        text.contains(TOKEN_CREATOR_ROLE) && text.contains(OPENID_TOKEN_CREATOR_ROLE),
        "{text}"
    );
    assert_eq!(id_tokens(&emu, AUD), 0);
}

#[tokio::test]
async fn an_authorized_user_can_impersonate() {
    let emu = Emulator::start().await.unwrap();
    let target = emu.create_service_account("target").await.unwrap();
    let client = emu.create_desktop_client(emu.project_id());
    let user = emu.create_user(&client, "dev@example.com");
    emu.allow_impersonation(user.email(), target.email());
    let source =
        AuthorizedUserSource::new(AuthorizedUser::from_json(user.authorized_user_json()).unwrap());

    let token = impersonate(&emu, source, &target)
        .id_token(&Audience::new(AUD))
        .await
        .unwrap();

    assert_eq!(token.claims().email.as_deref(), Some(target.email()));
    assert_eq!(access_tokens(&emu, Grant::RefreshToken), 1);
}

#[tokio::test]
async fn an_authorized_user_without_a_grant_is_named_in_the_403() {
    let emu = Emulator::start().await.unwrap();
    let target = emu.create_service_account("target").await.unwrap();
    let client = emu.create_desktop_client(emu.project_id());
    let user = emu.create_user(&client, "dev@example.com");
    let source =
        AuthorizedUserSource::new(AuthorizedUser::from_json(user.authorized_user_json()).unwrap());

    let err = impersonate(&emu, source, &target)
        .id_token(&Audience::new(AUD))
        .await
        .unwrap_err();

    assert!(
        err.to_string().contains("--member=user:dev@example.com"),
        "{err}"
    );
}

#[tokio::test]
async fn the_metadata_servers_account_can_impersonate() {
    let emu = Emulator::start().await.unwrap();
    let target = emu.create_service_account("target").await.unwrap();
    emu.allow_impersonation(&emu.metadata_service_account().unwrap(), target.email());
    let source = MetadataSource::with_host(&emu.metadata_host()).unwrap();

    let token = impersonate(&emu, source, &target)
        .id_token(&Audience::new(AUD))
        .await
        .unwrap();

    assert_eq!(token.claims().email.as_deref(), Some(target.email()));
    assert_eq!(access_tokens(&emu, Grant::Metadata), 1);
    assert_eq!(emu.requests(Endpoint::MetadataToken), 1);
}

#[tokio::test]
async fn an_unknown_target_is_a_404_saying_so() {
    let emu = Emulator::start().await.unwrap();
    let caller = emu.create_service_account("caller").await.unwrap();

    let err = ImpersonatedSource::new(
        "ghost@iap-emulator.iam.gserviceaccount.com",
        key_source(&caller),
    )
    .unwrap()
    .with_iam_endpoint(emu.url())
    .unwrap()
    .id_token(&Audience::new(AUD))
    .await
    .unwrap_err();

    assert!(matches!(err, Error::Endpoint { status: 404, .. }), "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[tokio::test]
async fn the_impersonated_token_passes_the_gate() {
    let emu = Emulator::start().await.unwrap();
    let (caller, target) = caller_granted_on_target(&emu).await;
    let app = emu.app();
    let token = impersonate(&emu, key_source(&caller), &target)
        .id_token(&Audience::new(app.client_id()))
        .await
        .unwrap();

    let answer = common::get_with_token(app.url().clone(), &token).await;

    assert_eq!(answer.status(), 200);
    let echo: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(
        echo["headers"]["x-goog-authenticated-user-email"],
        format!("accounts.google.com:{}", target.email())
    );
}

#[tokio::test]
async fn an_impersonated_adc_file_takes_endpoint_target_and_delegates_from_the_file() {
    let emu = Emulator::start().await.unwrap();
    let (caller, target) = two_accounts(&emu).await;
    let relay = emu.create_service_account("relay").await.unwrap();
    emu.allow_impersonation(caller.email(), relay.email());
    emu.allow_impersonation(relay.email(), target.email());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("adc.json");
    let file = Adc::Impersonated {
        source: Box::new(Adc::ServiceAccount(caller.clone())),
        target: target.email().into(),
        delegates: vec![relay.email().into()],
    };
    emu.write_adc(&file, &path).unwrap();

    let source = adc::from_file(&path).unwrap();
    let token = source.id_token(&Audience::new(AUD)).await.unwrap();

    assert_eq!(token.claims().email.as_deref(), Some(target.email()));
    assert_eq!(
        id_tokens(&emu, AUD),
        1,
        "generateIdToken at the file's (emulator) endpoint"
    );

    // adc owns the dispatch (the nested source credential included); the
    // source it builds names its target, endpoint and chain in `Debug`.
    let direct = format!("{:?}", adc::from_file(&path).unwrap());
    assert!(direct.contains(target.email()), "{direct}");
    assert!(
        direct.contains(&emu.iam_credentials_url(target.email(), "generateIdToken")),
        "{direct}"
    );
    assert!(
        direct.contains(&format!("projects/-/serviceAccounts/{}", relay.email())),
        "{direct}"
    );
}

#[tokio::test]
async fn an_impersonated_adc_file_with_user_source_credentials_works() {
    let emu = Emulator::start().await.unwrap();
    let target = emu.create_service_account("target").await.unwrap();
    let client = emu.create_desktop_client(emu.project_id());
    let user = emu.create_user(&client, "dev@example.com");
    emu.allow_impersonation(user.email(), target.email());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("adc.json");
    let file = Adc::Impersonated {
        source: Box::new(Adc::AuthorizedUser(user.clone())),
        target: target.email().into(),
        delegates: vec![],
    };
    emu.write_adc(&file, &path).unwrap();

    let token = adc::from_file(&path)
        .unwrap()
        .id_token(&Audience::new(AUD))
        .await
        .unwrap();

    assert_eq!(token.claims().email.as_deref(), Some(target.email()));
    assert_eq!(access_tokens(&emu, Grant::RefreshToken), 1);
}

#[test]
fn bad_impersonated_files_name_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("adc.json");
    let cases = [
        (
            r#"{"type":"impersonated_service_account","source_credentials":{}}"#,
            "service_account_impersonation_url` is missing",
        ),
        (
            r#"{"type":"impersonated_service_account","service_account_impersonation_url":"https://iamcredentials.googleapis.com/v1/nope","source_credentials":{"type":"authorized_user"}}"#,
            "service_account_impersonation_url` is `https://iamcredentials.googleapis.com/v1/nope`, expected",
        ),
        (
            r#"{"type":"impersonated_service_account","service_account_impersonation_url":"https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/t@p.iam.gserviceaccount.com:generateAccessToken"}"#,
            "field `source_credentials` is missing",
        ),
        (
            r#"{"type":"impersonated_service_account","service_account_impersonation_url":"https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/t@p.iam.gserviceaccount.com:generateAccessToken","source_credentials":{"type":"authorized_user","client_id":"c","client_secret":"s","refresh_token":"r"},"delegates":"x"}"#,
            "field `delegates` must be a list",
        ),
        (
            r#"{"type":"impersonated_service_account","service_account_impersonation_url":"http://iam.example.com/v1/projects/-/serviceAccounts/t@p.iam.gserviceaccount.com:generateAccessToken","source_credentials":{"type":"authorized_user","client_id":"c","client_secret":"s","refresh_token":"r"}}"#,
            "refusing to send credentials to http://iam.example.com/",
        ),
    ];
    for (json, expected) in cases {
        std::fs::write(&path, json).unwrap();
        let err = adc::from_file(&path).unwrap_err().to_string();
        assert!(err.contains(expected), "{json}\n=> {err}");
        if !expected.starts_with("refusing") {
            assert!(err.contains(&path.display().to_string()), "{err}");
        }
    }
}

#[test]
fn the_builder_refuses_bad_configuration() {
    let user = AuthorizedUser::new("cid", "secret", "1//refresh");
    let err = ImpersonatedSource::new("not-an-email", AuthorizedUserSource::new(user.clone()))
        .unwrap_err();
    assert!(err.is_configuration(), "{err:?}");
    assert!(
        err.to_string()
            .contains("`not-an-email` is not a service-account email"),
        "{err}"
    );
    let err = ImpersonatedSource::new(
        "t@p.iam.gserviceaccount.com",
        AuthorizedUserSource::new(user.clone()),
    )
    .unwrap()
    .with_iam_endpoint("http://iam.example.com")
    .unwrap_err();
    assert!(matches!(err, Error::InsecureEndpoint { .. }), "{err}");
    let source = ImpersonatedSource::new(
        "t@p.iam.gserviceaccount.com",
        AuthorizedUserSource::new(user),
    )
    .unwrap();
    assert_eq!(
        source.id_token_url().as_str(),
        "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/t@p.iam.gserviceaccount.com:generateIdToken"
    );
}

#[tokio::test]
async fn debug_of_sources_and_errors_holds_no_secret() {
    let emu = Emulator::start().await.unwrap();
    let (caller, target) = two_accounts(&emu).await;
    let client = emu.create_desktop_client(emu.project_id());
    let user = emu.create_user(&client, "dev@example.com");
    let by_key = impersonate(&emu, key_source(&caller), &target);
    let by_user = ImpersonatedSource::new(
        target.email(),
        AuthorizedUserSource::new(AuthorizedUser::from_json(user.authorized_user_json()).unwrap()),
    )
    .unwrap();
    let err = by_key.id_token(&Audience::new(AUD)).await.unwrap_err();

    let text = format!("{by_key:?} {by_user:?} {err:?} {err}");
    let key: serde_json::Value = serde_json::from_str(caller.key_json()).unwrap();
    let pem = key["private_key"].as_str().unwrap();
    let pem_body = pem.lines().nth(1).unwrap();
    for secret in [
        pem_body,
        user.refresh_token(),
        client.client_secret(),
        "ya29.",
    ] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    assert!(text.contains(target.email()), "{text}");
}

#[tokio::test]
async fn an_impersonated_adc_file_may_have_federated_source_credentials() {
    let emu = Emulator::start().await.unwrap();
    let target = emu.create_service_account("target").await.unwrap();
    let pool = emu.create_workload_pool("ci-pool", "github");
    emu.allow_impersonation(&pool.principal("ci"), target.email());
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("subject-token");
    std::fs::write(&token_file, emu.mint_subject_token(&pool, "ci")).unwrap();
    let path = dir.path().join("adc.json");
    let federated = Adc::ExternalAccount {
        pool,
        subject: "ci".into(),
        source: SubjectTokenSource::File(token_file),
        impersonate: None,
    };
    let file = Adc::Impersonated {
        source: Box::new(federated),
        target: target.email().into(),
        delegates: vec![],
    };
    std::fs::write(&path, emu.adc_json(&file).to_string()).unwrap();

    let token = adc::from_file(&path)
        .unwrap()
        .id_token(&Audience::new(AUD))
        .await
        .unwrap();

    assert_eq!(token.claims().email.as_deref(), Some(target.email()));
    assert_eq!(access_tokens(&emu, Grant::Sts), 1);
}
