//! The desktop login end to end: the emulator's consent endpoint redirects
//! to the loopback receiver (a reqwest GET stands in for the browser), the
//! code is exchanged, and the credentials are saved with mode 0600. Also:
//! what no `Debug` or `Display` may ever show.

use std::time::Duration;

use iap_emulator::{Emulator, OAuthClient};
use iap_token::login::DesktopLogin;
use iap_token::source::authorized_user::{AuthorizedUser, AuthorizedUserSource};
use iap_token::{Audience, Error, TokenSource};
use url::Url;

fn login(emu: &Emulator, client: &OAuthClient) -> DesktopLogin {
    DesktopLogin::new(client.client_id(), client.client_secret())
        .auth_uri(emu.authorize_url())
        .token_uri(emu.token_uri())
        .timeout(Duration::from_secs(30))
}

fn param(url: &Url, name: &str) -> String {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The browser: follows the consent redirect to the receiver and returns
/// the page it shows.
async fn browse(url: Url) -> (u16, String) {
    let resp = reqwest::get(url).await.expect("the browser gets an answer");
    (
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default(),
    )
}

#[tokio::test]
async fn desktop_login_end_to_end_saves_working_credentials_with_mode_0600() {
    let emu = Emulator::start().await.unwrap();
    let app = emu.app();
    let client = emu.create_desktop_client(app.project_id());
    emu.create_user(&client, "alice@example.com");
    let pending = login(&emu, &client)
        .audience(Audience::new(app.client_id()))
        .start()
        .unwrap();
    let url = pending.authorization_url().clone();
    assert_eq!(param(&url, "code_challenge_method"), "S256");
    assert_eq!(param(&url, "redirect_uri"), pending.redirect_uri());
    assert!(param(&url, "state").len() >= 32 && param(&url, "code_challenge").len() == 43);
    assert!(param(&url, "scope").contains("openid"));

    let (outcome, (status, page)) = tokio::join!(pending.finish(), browse(url));

    let outcome = outcome.unwrap();
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("signed in"), "{page}");
    assert_eq!(
        outcome.id_token.claims().aud.as_deref(),
        Some(app.client_id())
    );
    assert_eq!(
        outcome.id_token.claims().email.as_deref(),
        Some("alice@example.com")
    );
    assert_eq!(outcome.credentials.account(), Some("alice@example.com"));
    let shown = format!("{outcome:?}");
    assert!(
        !shown.contains(client.client_secret()) && !shown.contains(outcome.id_token.as_str()),
        "{shown}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir
        .path()
        .join("gcloud")
        .join("application_default_credentials.json");
    outcome.credentials.save(&path).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    // The saved refresh token works.
    let token = AuthorizedUserSource::from_file(&path)
        .unwrap()
        .id_token(&Audience::new(app.client_id()))
        .await
        .unwrap();
    assert_eq!(token.claims().email.as_deref(), Some("alice@example.com"));
}

#[tokio::test]
async fn a_mismatched_state_is_refused_and_the_browser_told() {
    let emu = Emulator::start().await.unwrap();
    let client = emu.create_desktop_client(emu.app().project_id());
    let pending = login(&emu, &client).start().unwrap();
    let forged = Url::parse(&format!(
        "{}?code=stolen&state=forged",
        pending.redirect_uri()
    ))
    .unwrap();

    let (outcome, (status, page)) = tokio::join!(pending.finish(), browse(forged));

    let err = outcome.unwrap_err();
    assert!(
        matches!(&err, Error::Login(m) if m.contains("state")),
        "{err:?}"
    );
    assert_eq!(status, 400);
    assert!(page.contains("state"), "{page}");
    assert_eq!(
        emu.requests(iap_emulator::Endpoint::Token),
        0,
        "no code exchange"
    );
}

#[tokio::test]
async fn access_denied_in_the_browser_ends_the_login_with_that_reason() {
    let emu = Emulator::start().await.unwrap();
    let client = emu.create_desktop_client(emu.app().project_id());
    let pending = login(&emu, &client).start().unwrap();
    let state = param(pending.authorization_url(), "state");
    let denied = Url::parse(&format!(
        "{}?error=access_denied&state={state}",
        pending.redirect_uri()
    ))
    .unwrap();

    let (outcome, (status, _)) = tokio::join!(pending.finish(), browse(denied));

    let err = outcome.unwrap_err();
    assert!(
        matches!(&err, Error::Login(m) if m.contains("access denied")),
        "{err:?}"
    );
    assert_eq!(status, 400);
}

#[tokio::test]
async fn other_requests_to_the_receiver_do_not_end_the_login() {
    let emu = Emulator::start().await.unwrap();
    let client = emu.create_desktop_client(emu.app().project_id());
    emu.create_user(&client, "bob@example.com");
    let pending = login(&emu, &client).start().unwrap();
    let base = Url::parse(pending.redirect_uri()).unwrap();
    let url = pending.authorization_url().clone();
    let browser = async {
        // A speculative connection that never sends anything, a favicon
        // request and a bare visit, then the real redirect.
        let idle = tokio::net::TcpStream::connect(base.socket_addrs(|| None).unwrap()[0])
            .await
            .unwrap();
        let favicon = browse(base.join("favicon.ico").unwrap()).await;
        let bare = browse(base.clone()).await;
        let real = browse(url).await;
        drop(idle);
        (favicon.0, bare.0, real.0)
    };

    let (outcome, statuses) = tokio::join!(pending.finish(), browser);

    assert_eq!(statuses, (404, 400, 200));
    assert_eq!(
        outcome.unwrap().id_token.claims().email.as_deref(),
        Some("bob@example.com")
    );
}

#[tokio::test]
async fn no_browser_answer_times_out() {
    let emu = Emulator::start().await.unwrap();
    let client = emu.create_desktop_client(emu.app().project_id());
    let pending = login(&emu, &client)
        .timeout(Duration::from_millis(100))
        .start()
        .unwrap();

    let err = pending.finish().await.unwrap_err();

    assert!(
        matches!(&err, Error::Login(m) if m.contains("no answer from the browser")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_failed_login_leaves_existing_credentials_untouched() {
    let emu = Emulator::start().await.unwrap();
    let client = emu.create_desktop_client(emu.app().project_id());
    let user = emu.create_user(&client, "carol@example.com");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("adc.json");
    std::fs::write(&path, user.authorized_user_json()).unwrap();
    let pending = login(&emu, &client).start().unwrap();
    // A code the token endpoint does not know: the exchange fails.
    let state = param(pending.authorization_url(), "state");
    let bogus = Url::parse(&format!(
        "{}?code=unknown-code&state={state}",
        pending.redirect_uri()
    ))
    .unwrap();

    let (outcome, _) = tokio::join!(pending.finish(), browse(bogus));

    let err = outcome.unwrap_err();
    assert!(
        matches!(&err, Error::Endpoint { error, .. } if error == "invalid_grant"),
        "{err:?}"
    );
    assert!(err.to_string().contains("sign in again"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        user.authorized_user_json()
    );
}

#[test]
fn saved_credentials_replace_atomically_with_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("creds.json");
    std::fs::write(&path, "old").unwrap();
    let user = AuthorizedUser::new("client-id", "client-secret", "refresh-token");

    user.save(&path).unwrap();

    let new = std::fs::read_to_string(&path).unwrap();
    assert_eq!(new, user.to_json());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // A path whose parent is a file cannot be written; the error names it.
    let err = user.save(path.join("child.json")).unwrap_err();
    assert!(
        matches!(err, Error::WriteFile { .. }) && err.to_string().contains("child.json"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), new);
}

#[tokio::test]
async fn debug_and_display_of_credentials_sources_and_errors_hold_no_secret() {
    let emu = Emulator::start().await.unwrap();
    let client = emu.create_desktop_client("other-project");
    let user = emu.create_user(&client, "dave@example.com");
    let sa = emu.create_service_account("secretive").await.unwrap();
    let sa_json: serde_json::Value = serde_json::from_str(sa.key_json()).unwrap();
    let pem = sa_json["private_key"].as_str().unwrap().to_string();
    let pem_body: String = pem.lines().nth(1).unwrap().to_string();
    let jwt = emu.mint_id_token(emu.app().client_id(), "dave@example.com");
    let secrets = [
        client.client_secret().to_string(),
        user.refresh_token().to_string(),
        pem_body,
        jwt.clone(),
    ];

    let key =
        iap_token::source::service_account::ServiceAccountKey::from_json(sa.key_json()).unwrap();
    let sa_source = iap_token::source::service_account::ServiceAccountSource::new(key.clone());
    let au = AuthorizedUser::from_json(user.authorized_user_json()).unwrap();
    let au_source = AuthorizedUserSource::new(au.clone());
    let static_source =
        iap_token::source::static_token::StaticTokenSource::new(jwt.clone()).unwrap();
    let token = iap_token::IdToken::parse(jwt.clone()).unwrap();
    let access =
        iap_token::access_token::AccessToken::new(user.refresh_token(), Duration::from_secs(60))
            .unwrap();
    let desktop = login(&emu, &client);
    let pending = desktop.clone().start().unwrap();
    // Errors from the endpoints that received the secrets.
    let invalid_audience = au_source
        .id_token(&Audience::new(emu.app().client_id()))
        .await
        .unwrap_err();
    emu.revoke(user.refresh_token());
    let invalid_grant = au_source.id_token(&Audience::new("x")).await.unwrap_err();
    let static_mismatch =
        iap_token::source::static_token::StaticTokenSource::new(format!("{jwt}.extra"))
            .unwrap_err();
    let insecure = AuthorizedUserSource::new(
        au.clone()
            .with_token_uri(Url::parse("http://example.com/t").unwrap()),
    )
    .id_token(&Audience::new("x"))
    .await
    .unwrap_err();

    let rendered = [
        format!("{key:?}"),
        format!("{sa_source:?}"),
        format!("{au:?}"),
        format!("{au_source:?}"),
        format!("{static_source:?}"),
        format!("{token:?}"),
        format!("{access:?}"),
        format!("{desktop:?}"),
        format!("{pending:?}"),
        format!("{invalid_audience} {invalid_audience:?}"),
        format!("{invalid_grant} {invalid_grant:?}"),
        format!("{static_mismatch} {static_mismatch:?}"),
        format!("{insecure} {insecure:?}"),
    ];
    for text in &rendered {
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "a secret leaked into: {text}"
            );
        }
    }
    assert!(
        rendered[2].contains(client.client_id()),
        "the non-secret parts are shown"
    );
}
