//! `iap login` / `iap logout` end to end: the desktop loopback flow driven
//! without a browser (the test GETs the printed URL; the emulator's consent
//! redirect lands on the CLI's receiver), and the saved credentials'
//! place in the precedence.

mod common;

use common::{World, claims, file_mode, stderr_lines, wait_for_line};

const USER: &str = "dev@example.com";

/// Runs `iap login` as a person would, following the URL it prints.
async fn login(w: &World, client: &iap_emulator::OAuthClient, secret: &str) -> common::Output {
    login_with(w, client, secret, "--no-browser").await
}

/// Like [`login`], with `flag` in place of `--no-browser`.
async fn login_with(
    w: &World,
    client: &iap_emulator::OAuthClient,
    secret: &str,
    flag: &str,
) -> common::Output {
    let port = common::closed_port().to_string();
    let mut child = w
        .sandbox
        .command(&[
            "login",
            "--port",
            &port,
            "--client-id",
            client.client_id(),
            flag,
            "--audience",
            w.audience(),
        ])
        .env("IAP_CLIENT_SECRET", secret)
        .env("IAP_AUTH_URI", w.emu.authorize_url())
        .env("IAP_TOKEN_URI", w.emu.token_uri())
        .spawn()
        .expect("spawn iap login");
    let mut stderr = stderr_lines(child.stderr.take().expect("stderr"));
    let mut seen = Vec::new();
    let url = wait_for_line(&mut stderr, |line| {
        seen.push(line.to_owned());
        line.trim()
            .starts_with("http://")
            .then(|| line.trim().to_owned())
    })
    .await;
    assert!(
        url.contains(&format!("redirect_uri=http%3A%2F%2F127.0.0.1%3A{port}%2F")),
        "--port picks the receiver's port: {url}"
    );
    assert!(
        url.contains("code_challenge_method=S256") && url.contains("state="),
        "{url}"
    );
    let landed = reqwest::get(&url)
        .await
        .expect("follow the consent redirect");
    assert_eq!(landed.status(), 200, "the receiver answered the browser");
    let mut rest = Vec::new();
    while let Some(line) = stderr.next_line().await.expect("stderr") {
        rest.push(line);
    }
    let status = tokio::time::timeout(common::COMMAND_TIMEOUT, child.wait())
        .await
        .expect("login finishes")
        .unwrap();
    seen.extend(rest);
    common::Output {
        status,
        stdout: String::new(),
        stderr: seen.join("\n"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn login_saves_credentials_that_later_commands_use_until_logout() {
    let w = World::new().await;
    let client = w.emu.create_desktop_client(w.emu.project_id());
    let user = w.emu.create_user(&client, USER);

    let out = login(&w, &client, client.client_secret()).await;
    assert!(out.status.success(), "{out:#?}");
    assert!(
        out.stderr.contains(&format!("Signed in as {USER}")),
        "{out:#?}"
    );
    assert!(
        !out.stderr.contains(client.client_secret()),
        "the secret is never printed"
    );

    let saved = w.sandbox.config_dir().join("credentials.json");
    assert_eq!(file_mode(&saved), 0o600);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    assert_eq!(json["type"], "authorized_user");
    assert_ne!(
        json["refresh_token"],
        user.refresh_token(),
        "a new refresh token from this login"
    );

    // With nothing else given, the saved login is used ...
    let jwt = w.sandbox.ok(&["token", "--audience", w.audience()]).await;
    assert_eq!(claims(jwt.trim())["email"], USER);
    let body = w
        .sandbox
        .ok(&["curl", &w.url("/me"), "--audience", w.audience()])
        .await;
    assert!(
        body.contains(&format!("accounts.google.com:{USER}")),
        "{body}"
    );

    // ... but GOOGLE_APPLICATION_CREDENTIALS and --credentials come first.
    let mut with_env = common::Sandbox::new();
    with_env.set("IAP_CONFIG_DIR", w.sandbox.config_dir().to_string_lossy());
    with_env.set("GOOGLE_APPLICATION_CREDENTIALS", w.key());
    let jwt = with_env.ok(&["token", "--audience", w.audience()]).await;
    assert_eq!(claims(jwt.trim())["email"], w.sa.email());
    let jwt = w.ok_for_app(&["token"]).await;
    assert_eq!(claims(jwt.trim())["email"], w.sa.email());

    let out = w.sandbox.run(&["logout"]).await;
    assert!(
        out.status.success() && out.stderr.contains("Removed"),
        "{out:#?}"
    );
    assert!(!saved.exists());
    let out = w.sandbox.run(&["logout"]).await;
    assert!(
        out.status.success() && out.stderr.contains("Not logged in"),
        "{out:#?}"
    );
    let out = w.sandbox.run(&["token", "--audience", w.audience()]).await;
    assert_eq!(out.code(), 1);
    assert!(
        out.error_line().contains("no Google credentials found"),
        "{out:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_client_secret_fails_in_one_line_and_saves_nothing() {
    let w = World::new().await;
    let client = w.emu.create_desktop_client(w.emu.project_id());
    w.emu.create_user(&client, USER);
    let wrong = "GOCSPX-definitely-not-the-secret";
    let out = login(&w, &client, wrong).await;
    assert_eq!(out.status.code(), Some(1), "{out:#?}");
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{out:#?}");
    assert!(
        errors[0].contains("/token"),
        "names the endpoint: {}",
        errors[0]
    );
    assert!(!out.stderr.contains(wrong), "the secret is never printed");
    assert!(!w.sandbox.config_dir().join("credentials.json").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn login_needs_client_id_and_secret() {
    let w = World::new().await;
    assert_eq!(w.sandbox.run(&["login", "--no-browser"]).await.code(), 2);
    assert_eq!(
        w.sandbox
            .run(&["login", "--client-id", "x", "--no-browser"])
            .await
            .code(),
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_browser_to_open_the_url_is_printed_and_login_completes() {
    // $BROWSER names no command, so no browser starts: the URL on stderr is the way.
    let mut w = World::new().await;
    w.sandbox.set("BROWSER", "/nonexistent/iap-test-browser");
    let client = w.emu.create_desktop_client(w.emu.project_id());
    w.emu.create_user(&client, USER);
    let out = login_with(&w, &client, client.client_secret(), "--verbose").await;
    assert!(out.status.success(), "{out:#?}");
    assert!(out.stderr.contains("Opening your browser"), "{out:#?}");
    assert!(w.sandbox.config_dir().join("credentials.json").exists());
}
