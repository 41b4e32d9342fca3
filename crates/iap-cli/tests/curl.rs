//! `iap curl` end to end against the emulator's gated echo app.

mod common;

use common::{World, closed_port};

fn echo(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout)
        .unwrap_or_else(|e| panic!("not the echo app's JSON ({e}): {stdout}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn get_prints_the_apps_body_with_the_caller_authenticated() {
    let w = World::new().await;
    let out = w.ok_for_app(&["curl", &w.url("/hello?x=1")]).await;
    let e = echo(&out);
    assert_eq!(e["method"], "GET");
    assert_eq!(e["path"], "/hello");
    assert_eq!(
        e["headers"]["x-goog-authenticated-user-email"],
        format!("accounts.google.com:{}", w.sa.email())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_audience_it_is_discovered() {
    let w = World::new().await;
    let out = w.ok_with_key(&["curl", &w.url("/discover")]).await;
    assert_eq!(echo(&out)["path"], "/discover");
    assert_eq!(
        w.tokens_minted(),
        1,
        "the token was minted for the discovered audience"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn include_prints_status_line_and_headers_first() {
    let w = World::new().await;
    let out = w.ok_for_app(&["curl", "-i", &w.url("/inc")]).await;
    let (head, body) = out
        .split_once("\r\n\r\n")
        .expect("a blank line after the headers");
    let mut lines = head.lines();
    assert_eq!(lines.next(), Some("HTTP/1.1 200 OK"));
    assert!(
        lines.any(|l| l
            .to_ascii_lowercase()
            .starts_with("content-type: application/json")),
        "{head}"
    );
    assert_eq!(echo(body)["path"], "/inc");
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_exits_22_on_an_http_error_from_the_app() {
    let w = World::new().await;
    let args = [
        "curl",
        "-f",
        &w.url("/status/404"),
        "--audience",
        w.audience(),
        "--credentials",
        w.key(),
    ];
    let out = w.sandbox.run(&args).await;
    assert_eq!(out.code(), 22, "{out:#?}");
    assert!(out.stdout.is_empty());
    assert!(out.error_line().contains("404"), "{out:#?}");

    // Without -f, like curl: the body, exit 0.
    let out = w
        .sandbox
        .run(
            &args[..1]
                .iter()
                .chain(&args[2..])
                .copied()
                .collect::<Vec<_>>(),
        )
        .await;
    assert_eq!(out.code(), 0, "{out:#?}");
    assert_eq!(echo(&out.stdout)["path"], "/status/404");
}

#[tokio::test(flavor = "multi_thread")]
async fn method_headers_and_data_reach_the_app() {
    let w = World::new().await;
    let out = w
        .ok_for_app(&[
            "curl",
            &w.url("/things"),
            "-X",
            "PUT",
            "-H",
            "X-Custom: one",
            "-H",
            "Content-Type: text/plain",
            "-d",
            "hello=world",
        ])
        .await;
    let e = echo(&out);
    assert_eq!(e["method"], "PUT");
    assert_eq!(e["headers"]["x-custom"], "one");
    assert_eq!(e["headers"]["content-type"], "text/plain");
    assert_eq!(e["body_len"], 11);
}

#[tokio::test(flavor = "multi_thread")]
async fn data_alone_posts_a_form() {
    let w = World::new().await;
    let out = w.ok_for_app(&["curl", &w.url("/form"), "-d", "a=1"]).await;
    let e = echo(&out);
    assert_eq!(e["method"], "POST");
    assert_eq!(
        e["headers"]["content-type"],
        "application/x-www-form-urlencoded"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn data_binary_from_a_file_is_sent_byte_for_byte() {
    let w = World::new().await;
    let file = w.sandbox.path("upload.bin");
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &bytes).unwrap();
    let at = format!("@{}", file.display());
    let out = w
        .ok_for_app(&["curl", &w.url("/upload"), "--data-binary", &at])
        .await;
    let e = echo(&out);
    assert_eq!(e["method"], "POST");
    assert_eq!(e["body_len"], bytes.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_authorization_leaves_the_apps_authorization_alone() {
    let w = World::new().await;
    let out = w
        .ok_for_app(&[
            "curl",
            &w.url("/pa"),
            "--proxy-authorization",
            "-H",
            "Authorization: Bearer app-own",
        ])
        .await;
    let e = echo(&out);
    assert_eq!(e["headers"]["authorization"], "Bearer app-own");
    assert!(e["headers"].get("proxy-authorization").is_none());
    assert_eq!(
        w.emu.counter(
            iap_emulator::counter::GATE_PROXY_AUTHORIZATION,
            w.audience()
        ),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_audience_is_one_line_naming_the_fix() {
    let w = World::new().await;
    let wrong = "999-wrong.apps.googleusercontent.com";
    let out = w
        .run_with_key(&["curl", &w.url("/x"), "--audience", wrong])
        .await;
    assert_eq!(out.code(), 1, "{out:#?}");
    let line = out.error_line();
    assert!(line.contains("IAP refused the request (401"), "{line}");
    assert!(line.contains("Invalid JWT audience"), "{line}");
    assert!(line.contains("--audience"), "says what to do: {line}");
    assert!(out.stdout.is_empty());
    assert_eq!(
        w.emu.counter(iap_emulator::counter::APP_HITS, w.audience()),
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_app_names_the_url() {
    let w = World::new().await;
    let url = format!("http://127.0.0.1:{}/", closed_port());
    let out = w.run_for_app(&["curl", &url]).await;
    assert_eq!(out.code(), 1, "{out:#?}");
    let line = out.error_line();
    assert!(
        line.starts_with(&format!("error: cannot reach {url}")),
        "{line}"
    );
    assert!(line.contains("refused"), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_iap_401_is_retried_once_with_a_fresh_token() {
    let w = World::new().await;
    w.emu.inject(
        iap_emulator::Endpoint::Gate,
        iap_emulator::Fault::status(401),
        1,
    );
    let out = w.ok_for_app(&["curl", &w.url("/retry")]).await;
    assert_eq!(echo(&out)["path"], "/retry");
    assert_eq!(
        w.tokens_minted(),
        2,
        "the refused token was replaced by exactly one fresh token"
    );
    assert_eq!(
        w.emu.counter(iap_emulator::counter::APP_HITS, w.audience()),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_header_is_a_usage_error() {
    let w = World::new().await;
    let out = w
        .run_with_key(&["curl", &w.url("/"), "-H", "no-colon", "--audience", "a"])
        .await;
    assert_eq!(out.code(), 2, "{out:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn self_signed_jwts_reach_the_app_without_any_token_endpoint() {
    let w = World::new().await;
    let out = w
        .ok_with_key(&["curl", &w.url("/self"), "--self-signed"])
        .await;
    assert_eq!(
        echo(&out)["headers"]["x-goog-authenticated-user-email"],
        format!("accounts.google.com:{}", w.sa.email())
    );
    assert_eq!(
        w.emu.requests(iap_emulator::Endpoint::Token),
        0,
        "no token endpoint call"
    );
    assert_eq!(w.tokens_minted(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_never_reaches_the_logs_even_at_trace_level() {
    let w = World::new().await;
    let out = w.run_for_app(&["-vvv", "curl", &w.url("/quiet")]).await;
    assert!(out.status.success(), "{out:#?}");
    assert!(
        out.stderr.contains("TRACE") || out.stderr.contains("DEBUG"),
        "trace logging was on"
    );
    let echo = echo(&out.stdout);
    let jwt = echo["headers"]["authorization"]
        .as_str()
        .expect("the app saw the token")
        .trim_start_matches("Bearer ");
    let signature = jwt.rsplit('.').next().unwrap();
    assert!(
        !out.stderr.contains(signature),
        "the token's signature appeared in the logs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_apps_own_401_mints_no_extra_token() {
    let w = World::new().await;
    let out = w.ok_for_app(&["curl", &w.url("/status/401")]).await;
    assert_eq!(echo(&out)["path"], "/status/401");
    assert_eq!(
        w.tokens_minted(),
        1,
        "the app's own 401 is not IAP's refusal"
    );
    assert_eq!(
        w.emu.counter(iap_emulator::counter::APP_HITS, w.audience()),
        1,
        "not retried"
    );
}
