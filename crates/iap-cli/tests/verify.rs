//! `iap verify` end to end: assertions the emulator's IAP signed, checked
//! against its key set; JSON on success, one `error:` line naming the
//! failed check otherwise.

mod common;

use std::process::Stdio;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Output, Sandbox, World, json_answer};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;

/// `iap verify --audience AUD --jwks-url URL [ASSERTION]`.
async fn verify(w: &World, audience: &str, assertion: Option<&str>) -> Output {
    let jwks = w.emu.iap_jwks_url();
    let mut args = vec!["verify", "--audience", audience, "--jwks-url", &jwks];
    args.extend(assertion);
    w.sandbox.run(&args).await
}

/// The same with the assertion on stdin.
async fn verify_stdin(sandbox: &Sandbox, args: &[&str], input: &str) -> Output {
    let mut child = sandbox
        .command(args)
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn iap");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The assertion the gate adds for `email`.
async fn via_gate(w: &World, email: &str) -> String {
    let token = w.emu.mint_id_token(w.app.client_id(), email);
    let echo = json_answer(
        reqwest::Client::new()
            .get(w.app.url().clone())
            .bearer_auth(token),
    )
    .await;
    echo["headers"]["x-goog-iap-jwt-assertion"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn part(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn claims(w: &World) -> Value {
    let now = w.emu.now();
    json!({
        "iss": "https://cloud.google.com/iap",
        "aud": w.app.assertion_audience(),
        "email": "alice@example.com",
        "sub": "accounts.google.com:42",
        "iat": now,
        "exp": now + 600,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_valid_assertion_prints_the_identity_as_json() {
    let w = World::new().await;
    let assertion = via_gate(&w, "alice@example.com").await;
    let out = verify(&w, w.app.assertion_audience(), Some(&assertion)).await;
    assert_eq!(out.code(), 0, "{out:#?}");
    let who: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(who["email"], "alice@example.com");
    assert!(
        who["sub"]
            .as_str()
            .unwrap()
            .starts_with("accounts.google.com:")
    );
    assert_eq!(who["aud"], w.app.assertion_audience());
    assert!(who["exp"].as_u64().unwrap() > w.emu.now());
    assert!(who.get("hd").is_none());

    // hd when the assertion has one.
    let mut with_hd = claims(&w);
    with_hd["hd"] = json!("example.com");
    let out = verify(
        &w,
        w.app.assertion_audience(),
        Some(&w.emu.sign_assertion(&with_hd)),
    )
    .await;
    let who: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(who["hd"], "example.com");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_assertion_can_come_on_stdin() {
    let w = World::new().await;
    let assertion = via_gate(&w, "bob@example.com").await;
    let jwks = w.emu.iap_jwks_url();
    let aud = w.app.assertion_audience();
    for args in [
        vec!["verify", "--audience", aud, "--jwks-url", &jwks, "-"],
        vec!["verify", "--audience", aud, "--jwks-url", &jwks],
    ] {
        let out = verify_stdin(&w.sandbox, &args, &format!("{assertion}\n")).await;
        assert_eq!(out.code(), 0, "{out:#?}");
        assert!(out.stdout.contains("bob@example.com"));
    }
    let out = verify_stdin(
        &w.sandbox,
        &["verify", "--audience", aud, "--jwks-url", &jwks],
        "",
    )
    .await;
    assert_eq!(out.code(), 1);
    assert!(
        out.error_line()
            .starts_with("error: malformed: no assertion given")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn each_refusal_is_one_error_line_naming_the_check() {
    let w = World::new().await;
    let aud = w.app.assertion_audience().to_owned();
    let good = via_gate(&w, "alice@example.com").await;
    let kid = w.emu.assertion_key_ids()[0].clone();

    w.emu.set_clock_offset(-3600);
    let expired = via_gate(&w, "alice@example.com").await;
    w.emu.set_clock_offset(0);

    let mut tampered_claims = claims(&w);
    tampered_claims["email"] = json!("mallory@example.com");
    let mut parts = good.split('.');
    let header = parts.next().unwrap();
    let signature = good.rsplit('.').next().unwrap();
    let tampered = format!("{header}.{}.{signature}", part(&tampered_claims));

    let stranger = iap_emulator::Emulator::builder()
        .without_default_app()
        .start()
        .await
        .unwrap();
    let unknown = stranger.sign_assertion(&claims(&w));
    let none = format!(
        "{}.{}.",
        part(&json!({"alg": "none", "kid": kid})),
        part(&claims(&w))
    );
    let mut other_issuer = claims(&w);
    other_issuer["iss"] = json!("https://accounts.google.com");
    let other_issuer = w.emu.sign_assertion(&other_issuer);

    let cases = [
        (aud.as_str(), expired.as_str(), "error: expired: "),
        (
            "/projects/1/apps/other",
            good.as_str(),
            "error: wrong audience: ",
        ),
        (aud.as_str(), tampered.as_str(), "error: bad signature: "),
        (aud.as_str(), unknown.as_str(), "error: unknown key: "),
        (aud.as_str(), none.as_str(), "error: wrong algorithm: "),
        (aud.as_str(), other_issuer.as_str(), "error: wrong issuer: "),
        (aud.as_str(), "not-a-jwt", "error: malformed: "),
    ];
    for (audience, assertion, prefix) in cases {
        let out = verify(&w, audience, Some(assertion)).await;
        assert_eq!(out.code(), 1, "{prefix}: {out:#?}");
        assert!(out.stdout.is_empty(), "{prefix}: {out:#?}");
        let line = out.error_line();
        assert!(line.starts_with(prefix), "{line}");
        // Never the assertion itself.
        for piece in assertion.split('.').filter(|p| p.len() > 8) {
            assert!(!line.contains(piece), "{line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plain_http_key_set_off_loopback_is_refused() {
    let sandbox = Sandbox::new();
    let out = sandbox
        .run(&[
            "verify",
            "--audience",
            "/projects/1/apps/p",
            "--jwks-url",
            "http://keys.example.com/jwk",
            "x.y.z",
        ])
        .await;
    assert_eq!(out.code(), 1);
    assert!(out.error_line().contains("loopback"), "{out:#?}");
    let out = sandbox.run(&["verify", "x.y.z"]).await;
    assert_eq!(out.code(), 2, "--audience is required");
}
