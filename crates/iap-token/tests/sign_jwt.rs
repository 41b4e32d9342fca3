//! `SignJwtSource` against the emulator: service-account JWTs signed by IAM
//! `signJwt` with any access-token source as the caller, accepted by the
//! gate, cached per audience, and refusals that name the missing role.

mod common;

use common::{key_source, origin_of};
use iap_emulator::{Adc, Emulator, Endpoint, counter};
use iap_token::source::AudienceKind;
use iap_token::source::authorized_user::AuthorizedUserSource;
use iap_token::source::metadata::MetadataSource;
use iap_token::source::sign_jwt::SignJwtSource;
use iap_token::{Audience, Error, IapAuth, IdToken, TokenSource};

fn metadata(emu: &Emulator) -> MetadataSource {
    MetadataSource::with_host(&emu.metadata_host()).unwrap()
}

async fn token_for(auth: &IapAuth, url: &str) -> IdToken {
    auth.token_for(&url.parse().unwrap())
        .await
        .unwrap()
        .expect("a token for an in-scope URL")
}

#[tokio::test]
async fn from_the_metadata_server_it_signs_as_its_own_account_and_passes_the_gate() {
    let emu = Emulator::start().await.unwrap();
    let me = emu.metadata_service_account().unwrap();
    emu.allow_impersonation(&me, &me);
    let source = SignJwtSource::from_metadata(metadata(&emu))
        .await
        .unwrap()
        .with_iam_endpoint(emu.url())
        .unwrap();
    assert_eq!(source.email(), me);
    let app = emu.app();
    let base = origin_of(app.url());
    let auth = IapAuth::builder()
        .source(source)
        .any_origin()
        .build()
        .unwrap();

    let token = token_for(&auth, &format!("{base}/a/b?q=1")).await;
    let claims = token.claims();
    assert_eq!(claims.iss.as_deref(), Some(me.as_str()));
    assert_eq!(claims.sub.as_deref(), Some(me.as_str()));
    assert_eq!(claims.aud.as_deref(), Some(format!("{base}/*").as_str()));
    assert!(claims.exp - claims.iat.unwrap() <= 3600);
    let resp = common::get_with_token(format!("{base}/a/b"), &token).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(emu.requests(Endpoint::MetadataToken), 1);
    assert_eq!(emu.requests(Endpoint::MetadataIdentity), 0);
}

#[tokio::test]
async fn after_the_first_token_no_token_endpoint_is_called_within_the_hour() {
    let emu = Emulator::start().await.unwrap();
    let caller = emu.create_service_account("caller").await.unwrap();
    let robot = emu.create_service_account("robot").await.unwrap();
    emu.allow_impersonation(caller.email(), robot.email());
    let source = SignJwtSource::new(robot.email(), key_source(&caller))
        .unwrap()
        .with_iam_endpoint(emu.url())
        .unwrap()
        .with_audience_kind(AudienceKind::RequestUrl);
    let auth = IapAuth::builder()
        .source(source)
        .any_origin()
        .build()
        .unwrap();
    let base = origin_of(emu.app().url());

    for _ in 0..20 {
        token_for(&auth, &format!("{base}/one")).await;
        token_for(&auth, &format!("{base}/two")).await;
    }
    assert_eq!(
        emu.requests(Endpoint::Token),
        1,
        "one access token for the caller"
    );
    assert_eq!(emu.requests(Endpoint::SignJwt), 2, "one JWT per audience");
    assert_eq!(emu.counter(counter::SIGNED_JWTS, robot.email()), 2);

    // Cached: neither endpoint is asked again.
    emu.reset_counters();
    let again = token_for(&auth, &format!("{base}/one")).await;
    assert_eq!(emu.requests(Endpoint::Token), 0);
    assert_eq!(emu.requests(Endpoint::SignJwt), 0);
    let resp = common::get_with_token(format!("{base}/one"), &again).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn through_an_impersonation_chain_each_link_needs_a_grant() {
    let emu = Emulator::start().await.unwrap();
    let caller = emu.create_service_account("caller").await.unwrap();
    let relay = emu.create_service_account("relay").await.unwrap();
    let robot = emu.create_service_account("robot").await.unwrap();
    let source = SignJwtSource::new(robot.email(), key_source(&caller))
        .unwrap()
        .with_delegates([relay.email()])
        .unwrap()
        .with_iam_endpoint(emu.url())
        .unwrap();
    let aud = Audience::new(format!("{}/*", origin_of(emu.app().url())));
    emu.allow_impersonation(caller.email(), relay.email());
    let err = source.id_token(&aud).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, Error::Endpoint { status: 403, .. }),
        "{err:?}"
    );
    assert!(
        text.contains("roles/iam.serviceAccountTokenCreator"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{} -> {} -> {}",
            caller.email(),
            relay.email(),
            robot.email()
        )),
        "{text}"
    );

    emu.allow_impersonation(relay.email(), robot.email());
    let token = source.id_token(&aud).await.unwrap();
    assert_eq!(token.claims().iss.as_deref(), Some(robot.email()));
    let resp = common::get_with_token(emu.app().url().clone(), &token).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn denied_without_the_role_the_error_names_it_and_the_command() {
    let emu = Emulator::start().await.unwrap();
    let caller = emu.create_service_account("caller").await.unwrap();
    let robot = emu.create_service_account("robot").await.unwrap();
    let source = SignJwtSource::new(robot.email(), key_source(&caller))
        .unwrap()
        .with_iam_endpoint(emu.url())
        .unwrap();
    let err = source
        .id_token(&Audience::new("https://app.example.com/*"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "{} needs the role roles/iam.serviceAccountTokenCreator on {}",
            caller.email(),
            robot.email()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "gcloud iam service-accounts add-iam-policy-binding {} --member=serviceAccount:{} --role=roles/iam.serviceAccountTokenCreator",
            robot.email(),
            caller.email()
        )),
        "{text}"
    );
    assert!(!err.is_transient());
}

#[tokio::test]
async fn a_user_can_be_the_caller_and_a_client_id_audience_is_a_clear_error() {
    let emu = Emulator::start().await.unwrap();
    let client = emu.create_desktop_client(emu.project_id());
    let user = emu.create_user(&client, "dev@example.com");
    let robot = emu.create_service_account("robot").await.unwrap();
    emu.allow_impersonation(user.email(), robot.email());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("user.json");
    emu.write_adc(&Adc::AuthorizedUser(user), &path).unwrap();
    let source = SignJwtSource::new(
        robot.email(),
        AuthorizedUserSource::from_file(&path).unwrap(),
    )
    .unwrap()
    .with_iam_endpoint(emu.url())
    .unwrap();

    let app = emu.app();
    let token = source
        .id_token(&Audience::new(format!("{}/*", origin_of(app.url()))))
        .await
        .unwrap();
    assert_eq!(
        common::get_with_token(app.url().clone(), &token)
            .await
            .status(),
        200
    );

    let err = source
        .id_token(&Audience::new(app.client_id()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("addressed to a URL"), "{err}");
    assert_eq!(
        emu.requests(Endpoint::SignJwt),
        1,
        "refused before any call"
    );
    let debug = format!("{source:?}");
    assert!(!debug.contains("1//"), "{debug}");
}

#[tokio::test]
async fn audience_patterns_choose_per_request_one_jwt_per_pattern() {
    let emu = Emulator::start().await.unwrap();
    let me = emu.metadata_service_account().unwrap();
    emu.allow_impersonation(&me, &me);
    let source = SignJwtSource::from_metadata(metadata(&emu))
        .await
        .unwrap()
        .with_iam_endpoint(emu.url())
        .unwrap();
    let base = origin_of(emu.app().url());
    let auth = IapAuth::builder()
        .source(source)
        .allow_origin(&base)
        .audience_pattern(format!("{base}/api/*"))
        .audience_pattern(format!("{base}/api/admin/health"))
        .audience_pattern("https://elsewhere.example.com/*")
        .build()
        .unwrap();

    let mut auds = Vec::new();
    for path in ["/api/a", "/api/b?x=1", "/api/admin/health", "/home", "/api"] {
        let token = token_for(&auth, &format!("{base}{path}")).await;
        let resp = common::get_with_token(format!("{base}{path}"), &token).await;
        assert_eq!(resp.status(), 200, "{path}");
        auds.push(token.claims().aud.clone().unwrap());
    }
    assert_eq!(
        auds,
        [
            format!("{base}/api/*"),
            format!("{base}/api/*"),
            format!("{base}/api/admin/health"),
            format!("{base}/*"),
            format!("{base}/*"),
        ]
    );
    assert_eq!(emu.requests(Endpoint::SignJwt), 3, "one JWT per pattern");

    let err = IapAuth::builder()
        .source(MetadataSource::with_host(&emu.metadata_host()).unwrap())
        .audience("client")
        .audience_pattern(format!("{base}/*"))
        .any_origin()
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("service-account JWTs"), "{err}");
    let err = IapAuth::builder()
        .source(SignJwtSource::new(&me, metadata(&emu)).unwrap())
        .audience_pattern(format!("{base}/a*"))
        .any_origin()
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("https://HOST/PREFIX/*"), "{err}");
}

#[tokio::test]
async fn a_federated_workload_signs_as_the_account_it_impersonates() {
    use iap_emulator::SubjectTokenSource;
    use iap_token::source::external_account::ExternalAccount;
    let emu = Emulator::start().await.unwrap();
    let pool = emu.create_workload_pool("ci-pool", "github");
    let robot = emu.create_service_account("wif-runner").await.unwrap();
    emu.allow_impersonation(&pool.principal("repo:x"), robot.email());
    let json = emu.adc_json(&Adc::ExternalAccount {
        pool,
        subject: "repo:x".into(),
        source: SubjectTokenSource::Url,
        impersonate: Some(robot.email().to_owned()),
    });
    let caller = ExternalAccount::from_json(json.to_string()).unwrap();
    let source = SignJwtSource::new(robot.email(), caller)
        .unwrap()
        .with_iam_endpoint(emu.url())
        .unwrap();
    let aud = Audience::new(format!("{}/*", origin_of(emu.app().url())));

    // The federated access token is the account's own: it signs as itself.
    let err = source.id_token(&aud).await.unwrap_err().to_string();
    assert!(err.contains("on itself"), "{err}");
    emu.allow_impersonation(robot.email(), robot.email());
    let token = source.id_token(&aud).await.unwrap();
    assert_eq!(token.claims().iss.as_deref(), Some(robot.email()));
    assert_eq!(
        common::get_with_token(emu.app().url().clone(), &token)
            .await
            .status(),
        200
    );
}
