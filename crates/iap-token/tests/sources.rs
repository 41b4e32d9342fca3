//! Every credential source against the emulator over loopback: the happy
//! path (a token whose `aud` is the audience, with an email, that the gate
//! accepts) and the documented errors.

mod common;

use std::path::Path;
use std::time::Duration;

use common::key_source;
use iap_emulator::{Emulator, Endpoint, Grant, ServiceAccount};
use iap_token::access_token::AccessTokenSource;

const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
use iap_token::adc::Environment;
use iap_token::source::authorized_user::{AuthorizedUser, AuthorizedUserSource};
use iap_token::source::metadata::{IdentityFormat, MetadataSource};
use iap_token::source::service_account::{ServiceAccountKey, ServiceAccountSource};
use iap_token::source::static_token::StaticTokenSource;
use iap_token::{Audience, Error, IdToken, TokenSource};

async fn emulator() -> Emulator {
    Emulator::start().await.expect("the emulator starts")
}

/// The gate of the emulator's default app accepts `token`.
async fn gate_accepts(emu: &Emulator, token: &IdToken) -> bool {
    common::get_with_token(emu.app().url().clone(), token)
        .await
        .status()
        .is_success()
}

fn write(dir: &Path, name: &str, contents: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// The key JSON with one field replaced (or removed, with `None`).
fn key_with(sa: &ServiceAccount, field: &str, value: Option<&str>) -> String {
    let mut json: serde_json::Value = serde_json::from_str(sa.key_json()).unwrap();
    match value {
        Some(v) => json[field] = serde_json::Value::String(v.into()),
        None => {
            json.as_object_mut().unwrap().remove(field);
        }
    }
    json.to_string()
}

fn endpoint_error(err: &Error) -> (&str, u16, bool) {
    match err {
        Error::Endpoint {
            error,
            status,
            transient,
            ..
        } => (error.as_str(), *status, *transient),
        other => panic!("expected an endpoint error, got {other:?}"),
    }
}

// ---- service account -------------------------------------------------------

#[tokio::test]
async fn service_account_key_mints_a_token_for_the_audience_that_the_gate_accepts() {
    let emu = emulator().await;
    let sa = emu.create_service_account("runner").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key.json");
    sa.write_key_file(&path).unwrap();
    let aud = Audience::new(emu.app().client_id());

    let source = ServiceAccountSource::from_file(&path).unwrap();
    assert_eq!(source.key().client_email(), sa.email());
    assert_eq!(source.key().private_key_id(), Some(sa.private_key_id()));
    assert_eq!(source.key().token_uri().as_str(), emu.token_uri());
    let token = source.id_token(&aud).await.unwrap();

    assert_eq!(token.claims().aud.as_deref(), Some(aud.as_str()));
    assert_eq!(token.claims().email.as_deref(), Some(sa.email()));
    assert_eq!(emu.id_tokens_issued_by(Grant::JwtBearer, aud.as_str()), 1);
    assert!(gate_accepts(&emu, &token).await);
}

#[tokio::test]
async fn service_account_assertion_signed_by_another_key_is_invalid_grant_naming_the_cause() {
    let emu = emulator().await;
    let sa = emu.create_service_account("runner").await.unwrap();
    let other = emu.create_service_account("other").await.unwrap();
    let other_pem: serde_json::Value = serde_json::from_str(other.key_json()).unwrap();
    // The kid of `runner`'s key, signed with `other`'s private key.
    let key = ServiceAccountKey::from_json(key_with(
        &sa,
        "private_key",
        other_pem["private_key"].as_str(),
    ))
    .unwrap();

    let err = ServiceAccountSource::new(key)
        .id_token(&Audience::new(emu.app().client_id()))
        .await
        .unwrap_err();

    let (code, status, transient) = endpoint_error(&err);
    assert_eq!((code, status, transient), ("invalid_grant", 400, false));
    let text = err.to_string();
    assert!(
        text.contains(sa.private_key_id()) && text.contains("create a new key"),
        "{text}"
    );
    assert!(!err.is_transient());
}

#[tokio::test]
async fn service_account_access_token_uses_the_scope_claim() {
    let emu = emulator().await;
    let sa = emu.create_service_account("runner").await.unwrap();
    let source = key_source(&sa);

    let token = source.access_token(&[CLOUD_PLATFORM_SCOPE]).await.unwrap();

    assert!(!token.as_str().is_empty());
    assert!(token.remaining(std::time::SystemTime::now()) > Duration::from_secs(60));
    assert_eq!(
        emu.counter(
            iap_emulator::counter::ACCESS_TOKENS,
            Grant::JwtBearer.name()
        ),
        1
    );
    assert_eq!(emu.counter_total(iap_emulator::counter::ID_TOKENS), 0);
}

#[tokio::test]
async fn http_token_uri_that_is_not_loopback_is_refused_before_anything_is_sent() {
    let emu = emulator().await;
    let sa = emu.create_service_account("runner").await.unwrap();
    let key = ServiceAccountKey::from_json(key_with(
        &sa,
        "token_uri",
        Some("http://oauth2.example.com/token"),
    ))
    .unwrap();

    let err = ServiceAccountSource::new(key)
        .id_token(&Audience::new("aud"))
        .await
        .unwrap_err();

    assert!(
        matches!(&err, Error::InsecureEndpoint { url } if url == "http://oauth2.example.com/token"),
        "{err:?}"
    );
    assert!(!err.is_transient());
}

#[tokio::test]
async fn malformed_key_files_name_the_file_and_the_field() {
    let emu = emulator().await;
    let sa = emu.create_service_account("runner").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bad_pem = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n";
    let cases = [
        (
            "no-key.json",
            key_with(&sa, "private_key", None),
            "field `private_key` is missing",
        ),
        (
            "bad-pem.json",
            key_with(&sa, "private_key", Some(bad_pem)),
            "field `private_key` is not a PEM-encoded RSA private key",
        ),
        (
            "no-email.json",
            key_with(&sa, "client_email", None),
            "field `client_email` is missing",
        ),
        (
            "wrong-type.json",
            key_with(&sa, "type", Some("authorized_user")),
            "field `type` is `authorized_user`",
        ),
        (
            "bad-uri.json",
            key_with(&sa, "token_uri", Some("not a url")),
            "field `token_uri` is not a URL",
        ),
        (
            "not-json.json",
            "{\"type\": \"service_account\",".into(),
            "not valid JSON",
        ),
    ];
    for (name, contents, want) in cases {
        let path = write(dir.path(), name, &contents);
        let err = ServiceAccountKey::from_file(&path).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, Error::InvalidCredentials { .. }),
            "{name}: {err:?}"
        );
        assert!(text.contains(&path.display().to_string()), "{name}: {text}");
        assert!(text.contains(want), "{name}: {text}");
        assert!(!text.contains("bm90IGEga2V5"), "{name}: {text}");
    }
    let missing = dir.path().join("absent.json");
    let err = ServiceAccountKey::from_file(&missing).unwrap_err();
    assert!(
        matches!(err, Error::ReadFile { .. }) && err.to_string().contains("absent.json"),
        "{err}"
    );
}

// ---- authorized user -------------------------------------------------------

#[tokio::test]
async fn authorized_user_sends_the_audience_and_gets_a_token_for_the_iap_client() {
    let emu = emulator().await;
    let app = emu.app();
    let client = emu.create_desktop_client(app.project_id());
    let user = emu.create_user(&client, "alice@example.com");
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "adc.json", &user.authorized_user_json());
    let aud = Audience::new(app.client_id());

    let source = AuthorizedUserSource::from_file(&path).unwrap();
    let token = source.id_token(&aud).await.unwrap();

    assert_eq!(token.claims().aud.as_deref(), Some(app.client_id()));
    assert_eq!(token.claims().email.as_deref(), Some("alice@example.com"));
    assert_eq!(
        emu.id_tokens_issued_by(Grant::RefreshToken, app.client_id()),
        1
    );
    assert!(gate_accepts(&emu, &token).await);
}

#[tokio::test]
async fn authorized_user_without_audience_gets_a_token_for_the_desktop_client() {
    let emu = emulator().await;
    let client = emu.create_desktop_client(emu.app().project_id());
    let user = emu.create_user(&client, "bob@example.com");
    let source =
        AuthorizedUserSource::new(AuthorizedUser::from_json(user.authorized_user_json()).unwrap())
            .with_send_audience(false);

    let token = source
        .id_token(&Audience::new(emu.app().client_id()))
        .await
        .unwrap();

    assert_eq!(token.claims().aud.as_deref(), Some(client.client_id()));
    assert_eq!(token.claims().email.as_deref(), Some("bob@example.com"));
}

#[tokio::test]
async fn audience_of_another_project_is_invalid_audience_with_advice() {
    let emu = emulator().await;
    let client = emu.create_desktop_client("some-other-project");
    let user = emu.create_user(&client, "carol@example.com");
    let source =
        AuthorizedUserSource::new(AuthorizedUser::from_json(user.authorized_user_json()).unwrap());
    let aud = Audience::new(emu.app().client_id());

    let err = source.id_token(&aud).await.unwrap_err();

    let (code, status, transient) = endpoint_error(&err);
    assert_eq!((code, status, transient), ("invalid_audience", 400, false));
    let text = err.to_string();
    assert!(
        text.contains("same project"),
        "Google's description is kept: {text}"
    );
    assert!(
        text.contains(aud.as_str()) && text.contains("IAP OAuth client ID"),
        "{text}"
    );
}

#[tokio::test]
async fn revoked_refresh_token_is_invalid_grant_naming_the_cause_and_the_fix() {
    let emu = emulator().await;
    let client = emu.create_desktop_client(emu.app().project_id());
    let user = emu.create_user(&client, "dave@example.com");
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "adc.json", &user.authorized_user_json());
    emu.revoke(user.refresh_token());

    let err = AuthorizedUserSource::from_file(&path)
        .unwrap()
        .id_token(&Audience::new(emu.app().client_id()))
        .await
        .unwrap_err();

    let (code, status, transient) = endpoint_error(&err);
    assert_eq!((code, status, transient), ("invalid_grant", 400, false));
    let text = err.to_string();
    assert!(
        text.contains("revoked or has expired") && text.contains("iap login"),
        "{text}"
    );
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(
        !text.contains(user.refresh_token()) && !format!("{err:?}").contains(user.refresh_token())
    );
}

#[tokio::test]
async fn authorized_user_access_token_comes_from_the_refresh_grant() {
    let emu = emulator().await;
    let client = emu.create_desktop_client(emu.app().project_id());
    let user = emu.create_user(&client, "erin@example.com");
    let source =
        AuthorizedUserSource::new(AuthorizedUser::from_json(user.authorized_user_json()).unwrap());

    let token = source.access_token(&[]).await.unwrap();

    assert!(!token.as_str().is_empty());
    assert_eq!(
        emu.counter(
            iap_emulator::counter::ACCESS_TOKENS,
            Grant::RefreshToken.name()
        ),
        1
    );
}

#[tokio::test]
async fn transient_token_endpoint_errors_are_classified_transient() {
    let emu = emulator().await;
    let sa = emu.create_service_account("runner").await.unwrap();
    let source = key_source(&sa);
    let aud = Audience::new(emu.app().client_id());
    emu.inject(Endpoint::Token, iap_emulator::Fault::status(503), 1);
    emu.inject(Endpoint::Token, iap_emulator::Fault::Reset, 1);
    emu.inject(Endpoint::Token, iap_emulator::Fault::Malformed, 1);

    let unavailable = source.id_token(&aud).await.unwrap_err();
    let reset = source.id_token(&aud).await.unwrap_err();
    let malformed = source.id_token(&aud).await.unwrap_err();
    let ok = source.id_token(&aud).await.unwrap();

    assert!(
        unavailable.is_transient() && endpoint_error(&unavailable).1 == 503,
        "{unavailable:?}"
    );
    assert!(
        matches!(&reset, Error::Transport { endpoint, .. } if *endpoint == emu.token_uri()),
        "{reset:?}"
    );
    assert!(reset.is_transient());
    assert!(matches!(malformed, Error::Protocol { .. }), "{malformed:?}");
    assert_eq!(ok.claims().aud.as_deref(), Some(aud.as_str()));
}

// ---- metadata server -------------------------------------------------------

#[tokio::test]
async fn metadata_server_mints_full_format_tokens_that_the_gate_accepts() {
    let emu = emulator().await;
    let aud = Audience::new(emu.app().client_id());
    let env = Environment::from_vars([("GCE_METADATA_HOST", emu.metadata_host())]);

    let source = MetadataSource::from_env(&env).unwrap();
    let token = source.id_token(&aud).await.unwrap();

    assert_eq!(token.claims().aud.as_deref(), Some(aud.as_str()));
    assert_eq!(token.claims().email, emu.metadata_service_account());
    assert!(token.claims().email.is_some());
    assert_eq!(emu.id_tokens_issued_by(Grant::Metadata, aud.as_str()), 1);
    assert!(gate_accepts(&emu, &token).await);
}

#[tokio::test]
async fn metadata_standard_format_has_no_email() {
    let emu = emulator().await;
    let source = MetadataSource::with_host(&emu.metadata_host())
        .unwrap()
        .with_format(IdentityFormat::Standard);

    let token = source
        .id_token(&Audience::new(emu.app().client_id()))
        .await
        .unwrap();

    assert_eq!(token.claims().email, None);
}

/// The token's claims as JSON, for claims `Claims` does not model.
fn raw_claims(token: &IdToken) -> serde_json::Value {
    use base64::Engine as _;
    let payload = token.as_str().split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn metadata_licenses_option_adds_license_codes_to_full_tokens() {
    let emu = emulator().await;
    let aud = Audience::new(emu.app().client_id());
    let plain = MetadataSource::with_host(&emu.metadata_host()).unwrap();
    let licensed = plain.clone().with_licenses(true);

    let without = raw_claims(&plain.id_token(&aud).await.unwrap());
    let with = raw_claims(&licensed.id_token(&aud).await.unwrap());

    assert!(
        without["google"]["compute_engine"]["project_id"].is_string(),
        "{without}"
    );
    assert!(
        without["google"]["compute_engine"]
            .get("license_id")
            .is_none(),
        "{without}"
    );
    assert!(
        with["google"]["compute_engine"]["license_id"].is_array(),
        "{with}"
    );
}

#[tokio::test]
async fn metadata_without_a_service_account_is_404_saying_so() {
    let emu = Emulator::builder()
        .without_metadata_service_account()
        .start()
        .await
        .unwrap();
    let source = MetadataSource::with_host(&emu.metadata_host()).unwrap();

    let err = source
        .id_token(&Audience::new(emu.app().client_id()))
        .await
        .unwrap_err();

    assert_eq!(endpoint_error(&err).1, 404);
    assert!(!err.is_transient());
    assert!(
        err.to_string().contains("no service account is attached"),
        "{err}"
    );
}

#[tokio::test]
async fn metadata_empty_audience_is_400_saying_so() {
    let emu = emulator().await;
    let source = MetadataSource::with_host(&emu.metadata_host()).unwrap();

    let err = source.id_token(&Audience::new("")).await.unwrap_err();

    assert_eq!(endpoint_error(&err).1, 400);
    assert!(err.to_string().contains("the audience is empty"), "{err}");
}

#[tokio::test]
async fn metadata_403_points_at_the_flavor_header_and_the_host() {
    let emu = emulator().await;
    emu.inject(
        Endpoint::MetadataIdentity,
        iap_emulator::Fault::status(403),
        1,
    );
    let source = MetadataSource::with_host(&emu.metadata_host()).unwrap();

    let err = source
        .id_token(&Audience::new(emu.app().client_id()))
        .await
        .unwrap_err();

    assert_eq!(endpoint_error(&err), ("Forbidden", 403, false));
    let text = err.to_string();
    assert!(
        text.contains("Metadata-Flavor: Google") && text.contains("GCE_METADATA_HOST"),
        "{text}"
    );
}

#[tokio::test]
async fn metadata_access_token_comes_from_the_token_endpoint() {
    let emu = emulator().await;
    let source = MetadataSource::with_host(&emu.metadata_host()).unwrap();

    let token = source.access_token(&[CLOUD_PLATFORM_SCOPE]).await.unwrap();

    assert!(!token.as_str().is_empty());
    assert_eq!(emu.requests(Endpoint::MetadataToken), 1);
}

#[tokio::test]
async fn metadata_detection_probes_the_configured_host() {
    let emu = emulator().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };

    let found = MetadataSource::detect(
        &Environment::from_vars([("GCE_METADATA_HOST", emu.metadata_host())]),
        None,
    )
    .await;
    let via_ip = MetadataSource::detect(
        &Environment::from_vars([("GCE_METADATA_IP", emu.metadata_host())]),
        None,
    )
    .await;
    let absent = MetadataSource::detect(
        &Environment::from_vars([("GCE_METADATA_HOST", closed)]),
        None,
    )
    .await;

    assert!(found && via_ip && !absent);
    assert_eq!(emu.requests(Endpoint::MetadataRoot), 2);
}

#[tokio::test]
async fn metadata_detection_gives_up_after_its_timeout() {
    let emu = emulator().await;
    emu.inject(
        Endpoint::MetadataRoot,
        iap_emulator::Fault::delay(Duration::from_secs(30)),
        1,
    );
    let env = Environment::from_vars([("GCE_METADATA_HOST", emu.metadata_host())]);

    let found = MetadataSource::detect(&env, Some(Duration::from_millis(200))).await;

    assert!(!found);
}

// ---- static token ----------------------------------------------------------

#[tokio::test]
async fn static_token_from_a_string_or_env_var_is_returned_whatever_the_audience() {
    let emu = emulator().await;
    let jwt = emu.mint_id_token(emu.app().client_id(), "mobile@example.com");

    let fixed = StaticTokenSource::new(jwt.clone()).unwrap();
    let from_env = StaticTokenSource::from_env_var_in(
        "IAP_TOKEN",
        Environment::from_vars([("IAP_TOKEN", jwt.clone())]),
    );
    let unset =
        StaticTokenSource::from_env_var_in("IAP_TOKEN", Environment::from_vars([("OTHER", "x")]));

    for source in [&fixed, &from_env] {
        let token = source
            .id_token(&Audience::new("not-checked"))
            .await
            .unwrap();
        assert_eq!(token.as_str(), jwt);
    }
    let err = unset.id_token(&Audience::new("a")).await.unwrap_err();
    assert!(
        matches!(err, Error::EnvVar { ref name, .. } if name == "IAP_TOKEN"),
        "{err:?}"
    );
    assert!(matches!(
        StaticTokenSource::new("garbage"),
        Err(Error::MalformedToken(_))
    ));
}

#[tokio::test]
async fn static_token_file_is_reread_when_it_changes() {
    let emu = emulator().await;
    let aud = Audience::new(emu.app().client_id());
    let first = emu.mint_id_token(aud.as_str(), "mobile@example.com");
    let second = emu.mint_id_token(aud.as_str(), "mobile@example.com");
    assert_ne!(first, second, "every minted token has its own jti");
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "token", &format!("{first}\n"));
    let source = StaticTokenSource::from_file(&path);

    let a = source.id_token(&aud).await.unwrap();
    let a_again = source.id_token(&aud).await.unwrap();
    // Same length, so the change must be noticed by modification time (or length).
    let file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut &file, format!("  {second}  \n").as_bytes()).unwrap();
    file.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    drop(file);
    let b = source.id_token(&aud).await.unwrap();

    assert_eq!(a.as_str(), first);
    assert_eq!(a_again.as_str(), first);
    assert_eq!(b.as_str(), second);
    assert!(gate_accepts(&emu, &b).await);
}

#[tokio::test]
async fn expired_static_token_asks_for_a_fresh_one() {
    let emu = emulator().await;
    emu.set_clock_offset(-7200);
    let old = emu.mint_id_token("aud", "mobile@example.com");
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "token", &old);

    let err = StaticTokenSource::from_file(&path)
        .id_token(&Audience::new("aud"))
        .await
        .unwrap_err();

    let text = err.to_string();
    assert!(
        text.contains("expired") && text.contains(&path.display().to_string()),
        "{text}"
    );
    assert!(!text.contains(&old));
}
