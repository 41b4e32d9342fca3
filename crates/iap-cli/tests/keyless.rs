//! Keyless service-account JWTs (`--self-signed` through IAM signJwt),
//! audience patterns, tokens obtained elsewhere (`--token-file`,
//! `--token -`), `--no-audience-param` and `iap doctor`, end to end against
//! the emulator.

mod common;

use common::{World, claims, stdout_lines, wait_for_line};
use iap_emulator::{Adc, Endpoint, Grant, counter};
use tokio::io::AsyncWriteExt as _;

fn echo(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout)
        .unwrap_or_else(|e| panic!("not the echo app's JSON ({e}): {stdout}"))
}

/// A world whose commands see the emulator's metadata server (as on GCE)
/// and IAM endpoint.
async fn on_gce() -> World {
    let mut w = World::new().await;
    let host = w.emu.metadata_host();
    w.sandbox.set("GCE_METADATA_HOST", host.clone());
    w.sandbox.set("GCE_METADATA_IP", host);
    w.sandbox.set("IAP_IAM_ENDPOINT", w.emu.url());
    w
}

#[tokio::test(flavor = "multi_thread")]
async fn self_signed_on_the_metadata_server_signs_through_iam_and_names_the_missing_role() {
    let w = on_gce().await;
    let me = w.emu.metadata_service_account().unwrap();

    let out = w
        .sandbox
        .run(&["curl", "--self-signed", &w.url("/keyless")])
        .await;
    assert_eq!(out.code(), 1, "{out:#?}");
    let line = out.error_line();
    assert!(
        line.contains("roles/iam.serviceAccountTokenCreator"),
        "{line}"
    );
    assert!(
        line.contains(&format!(
            "gcloud iam service-accounts add-iam-policy-binding {me}"
        )),
        "{line}"
    );

    w.emu.allow_impersonation(&me, &me);
    let out = w
        .sandbox
        .ok(&["curl", "--self-signed", &w.url("/keyless")])
        .await;
    assert_eq!(
        echo(&out)["headers"]["x-goog-authenticated-user-email"],
        format!("accounts.google.com:{me}")
    );
    assert_eq!(w.emu.counter(counter::SIGNED_JWTS, &me), 1);
    assert_eq!(
        w.emu.requests(Endpoint::Token),
        0,
        "no token endpoint at all"
    );
    assert_eq!(w.tokens_minted(), 0, "no ID token minted");
}

#[tokio::test(flavor = "multi_thread")]
async fn self_signed_with_impersonation_signs_as_the_target_with_the_key_as_caller() {
    let mut w = World::new().await;
    w.sandbox.set("IAP_IAM_ENDPOINT", w.emu.url());
    let target = w.emu.create_service_account("robot").await.unwrap();
    w.emu.allow_impersonation(w.sa.email(), target.email());
    let out = w
        .sandbox
        .ok(&[
            "token",
            "--self-signed",
            "--impersonate-service-account",
            target.email(),
            "--url",
            &w.url("/"),
            "--credentials",
            w.key(),
            "--format",
            "json",
        ])
        .await;
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let c = claims(json["token"].as_str().unwrap());
    assert_eq!(c["iss"], target.email());
    assert_eq!(c["sub"], target.email());
    assert_eq!(
        c["aud"],
        format!("{}/*", w.app.url().origin().ascii_serialization())
    );
    let lifetime = c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap();
    assert!(lifetime <= 3600, "{lifetime}");
    assert_eq!(w.emu.counter(counter::SIGNED_JWTS, target.email()), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn self_signed_with_an_impersonated_adc_file_signs_as_its_target() {
    let w = World::new().await;
    let target = w.emu.create_service_account("deployer").await.unwrap();
    let relay = w.emu.create_service_account("relay").await.unwrap();
    w.emu.allow_impersonation(w.sa.email(), relay.email());
    w.emu.allow_impersonation(relay.email(), target.email());
    let file = w.sandbox.path("impersonated.json");
    w.emu
        .write_adc(
            &Adc::Impersonated {
                source: Box::new(Adc::ServiceAccount(w.sa.clone())),
                target: target.email().to_owned(),
                delegates: vec![relay.email().to_owned()],
            },
            &file,
        )
        .unwrap();
    let out = w
        .sandbox
        .ok(&[
            "curl",
            "--self-signed",
            "--credentials",
            file.to_str().unwrap(),
            &w.url("/chain"),
        ])
        .await;
    assert_eq!(
        echo(&out)["headers"]["x-goog-authenticated-user-email"],
        format!("accounts.google.com:{}", target.email())
    );
    assert_eq!(w.emu.counter(counter::SIGNED_JWTS, target.email()), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn self_signed_audience_takes_a_path_prefix_pattern() {
    let w = World::new().await;
    let origin = w.app.url().origin().ascii_serialization();
    let pattern = format!("{origin}/api/*");
    let args = |path: &str| {
        vec![
            "curl".to_owned(),
            "--self-signed".to_owned(),
            "--audience".to_owned(),
            pattern.clone(),
            "--credentials".to_owned(),
            w.key().to_owned(),
            w.url(path),
        ]
    };
    let inside = args("/api/items");
    let inside: Vec<&str> = inside.iter().map(String::as_str).collect();
    let out = w.sandbox.ok(&inside).await;
    assert_eq!(echo(&out)["path"], "/api/items");

    let outside = args("/admin");
    let outside: Vec<&str> = outside.iter().map(String::as_str).collect();
    let out = w.sandbox.run(&outside).await;
    assert_eq!(out.code(), 1, "{out:#?}");
    assert!(out.error_line().contains("audience"), "{out:#?}");
    assert!(w.emu.gate_401s_for(&w.app, "audience") >= 1);
    assert_eq!(
        w.emu.app_hits(&w.app),
        1,
        "only the request inside the prefix got through"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn token_file_replaced_on_disk_is_picked_up_by_a_running_proxy() {
    let w = World::new().await;
    let file = w.sandbox.path("token.jwt");
    let first = w.emu.mint_id_token(w.audience(), "mobile@example.com");
    std::fs::write(&file, &first).unwrap();
    let mut child = w
        .sandbox
        .command(&[
            "proxy",
            "--target",
            w.app.url().as_str(),
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            file.to_str().unwrap(),
        ])
        .spawn()
        .unwrap();
    let mut out = stdout_lines(child.stdout.take().unwrap());
    let base = wait_for_line(&mut out, |l| {
        l.strip_prefix("listening on ")
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
    })
    .await;
    let client = reqwest::Client::new();
    let resp = client.get(format!("{base}/one")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let jti = |t: &str| claims(t)["jti"].as_str().unwrap().to_owned();
    assert_eq!(w.emu.counter(counter::GATE_ACCEPTED, &jti(&first)), 1);

    // Another process writes a fresh token; the old one stops working.
    let second = w.emu.mint_id_token(w.audience(), "mobile@example.com");
    std::fs::write(&file, format!("{second}\n")).unwrap();
    w.emu.revoke(&first);
    let resp = client.get(format!("{base}/two")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(w.emu.counter(counter::GATE_ACCEPTED, &jti(&second)), 1);
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn token_from_stdin_is_sent_as_is_and_a_literal_token_is_refused() {
    let w = World::new().await;
    let token = w.emu.mint_id_token(w.audience(), "pipe@example.com");
    let mut child = w
        .sandbox
        .command(&["curl", "--token", "-", &w.url("/piped")])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(token.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "{out:#?}");
    let e = echo(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        e["headers"]["x-goog-authenticated-user-email"],
        "accounts.google.com:pipe@example.com"
    );

    let out = w
        .sandbox
        .run(&["curl", "--token", &token, &w.url("/")])
        .await;
    assert_eq!(out.code(), 2);
    assert!(!out.stderr.contains(&token), "the token is not echoed");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_audience_param_sends_no_audience_for_an_allowlisted_desktop_client() {
    let w = World::new().await;
    let desktop = w.emu.create_desktop_client(w.emu.project_id());
    let user = w.emu.create_user(&desktop, "dev@example.com");
    let adc = w.sandbox.path("user.json");
    w.emu.write_adc(&Adc::AuthorizedUser(user), &adc).unwrap();
    w.app.allow_client(desktop.client_id());

    let out = w
        .sandbox
        .ok(&[
            "curl",
            "--no-audience-param",
            "--credentials",
            adc.to_str().unwrap(),
            &w.url("/desktop"),
        ])
        .await;
    assert_eq!(
        echo(&out)["headers"]["x-goog-authenticated-user-email"],
        "accounts.google.com:dev@example.com"
    );
    assert_eq!(
        w.emu
            .id_tokens_issued_by(Grant::RefreshToken, desktop.client_id()),
        1,
        "the token's audience is the desktop client itself"
    );
    assert_eq!(w.tokens_minted(), 0, "no token for the IAP client");

    // Only user credentials refresh with an audience.
    let out = w
        .sandbox
        .run(&[
            "curl",
            "--no-audience-param",
            "--credentials",
            w.key(),
            &w.url("/"),
        ])
        .await;
    assert_eq!(out.code(), 2, "{out:#?}");
    assert!(out.error_line().contains("authorized_user"), "{out:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_explains_a_managed_client_refusal_then_passes_with_self_signed() {
    let w = World::new().await;
    let app = w
        .emu
        .create_app()
        .google_managed_client()
        .echo()
        .await
        .unwrap();
    let url = app.url().join("/doctor").unwrap().to_string();

    let out = w
        .sandbox
        .run(&["doctor", &url, "--credentials", w.key()])
        .await;
    assert_eq!(out.code(), 1, "{out:#?}");
    let report = &out.stdout;
    assert!(report.contains("credentials"), "{report}");
    assert!(
        report.contains(w.key()),
        "names where the credential is: {report}"
    );
    assert!(
        report.contains(&format!("{} (discovered", app.client_id())),
        "{report}"
    );
    assert!(
        report.contains(&format!("email={}", w.sa.email())),
        "{report}"
    );
    assert!(report.contains("Google-managed"), "{report}");
    assert!(
        report.contains("--self-signed"),
        "says what to do: {report}"
    );
    assert!(report.contains("programmaticClients"), "{report}");

    let out = w
        .sandbox
        .run(&["doctor", &url, "--self-signed", "--credentials", w.key()])
        .await;
    assert_eq!(out.code(), 0, "{out:#?}");
    assert!(out.stdout.contains("OK"), "{}", out.stdout);
    assert!(
        out.stdout.contains("https://HOST/* of the URL"),
        "{}",
        out.stdout
    );
    assert_eq!(w.emu.app_hits(&app), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_names_the_client_id_to_use_for_a_wrong_audience() {
    let w = World::new().await;
    let out = w
        .sandbox
        .run(&[
            "doctor",
            &w.url("/"),
            "--audience",
            "123-wrong.apps.googleusercontent.com",
            "--credentials",
            w.key(),
        ])
        .await;
    assert_eq!(out.code(), 1, "{out:#?}");
    assert!(
        out.stdout.contains("given with --audience"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains(&format!("pass --audience {}", w.audience())),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("eyJ"), "the token is never printed");

    let out = w
        .sandbox
        .run(&["doctor", &w.url("/"), "--credentials", w.key()])
        .await;
    assert_eq!(out.code(), 0, "{out:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_tells_an_expired_static_token_apart() {
    let w = World::new().await;
    let file = w.sandbox.path("old.jwt");
    w.emu
        .set_token_lifetime(std::time::Duration::from_secs(120));
    let token = w.emu.mint_id_token(w.audience(), "late@example.com");
    std::fs::write(&file, &token).unwrap();
    // IAP's clock is ahead: the token has expired for IAP, not for us.
    w.emu.advance_clock(std::time::Duration::from_secs(600));
    let out = w
        .sandbox
        .run(&[
            "doctor",
            &w.url("/"),
            "--token-file",
            file.to_str().unwrap(),
        ])
        .await;
    assert_eq!(out.code(), 1, "{out:#?}");
    assert!(
        out.stdout.contains("the token's own `aud`"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("expired"), "{}", out.stdout);
    assert!(out.stdout.contains("clock skew"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_says_how_to_get_an_email_claim() {
    let w = World::new().await;
    // A metadata token in the standard format: no `email`.
    let token = reqwest::Client::new()
        .get(format!(
            "{}computeMetadata/v1/instance/service-accounts/default/identity?audience={}&format=standard",
            w.emu.url(),
            w.audience()
        ))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let file = w.sandbox.path("standard.jwt");
    std::fs::write(&file, &token).unwrap();
    let out = w
        .sandbox
        .run(&[
            "doctor",
            &w.url("/"),
            "--token-file",
            file.to_str().unwrap(),
        ])
        .await;
    assert_eq!(out.code(), 1, "{out:#?}");
    assert!(out.stdout.contains("email=(none)"), "{}", out.stdout);
    assert!(out.stdout.contains("format=full"), "{}", out.stdout);
    assert!(out.stdout.contains("includeEmail"), "{}", out.stdout);
}
