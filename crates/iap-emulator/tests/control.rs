//! Control and observation over real loopback HTTP: fault injection,
//! counters, token lifetime, clock, revocation, provisioning, ADC files,
//! the `/_emulator/` API, and shutdown on drop.

use std::time::{Duration, Instant};

mod common;

use common::{
    claims, control, get_json, http, metadata_access_token, metadata_identity, start_without_app,
};
use iap_emulator::{Adc, Emulator, Endpoint, Fault, Grant, SubjectTokenSource, counter};
use serde_json::{Value, json};

/// The claims of a metadata-server ID token (`format=full`) for `audience`.
async fn metadata_claims(emu: &Emulator, audience: &str) -> Value {
    claims(
        &metadata_identity(emu, audience, "full")
            .await
            .text()
            .await
            .unwrap(),
    )
}

/// IAM Credentials `generateIdToken` for `target` (audience `a`), authenticated with `bearer`.
async fn generate_id_token(emu: &Emulator, target: &str, bearer: &str) -> reqwest::Response {
    http()
        .post(emu.iam_credentials_url(target, "generateIdToken"))
        .bearer_auth(bearer)
        .json(&json!({"audience": "a"}))
        .send()
        .await
        .unwrap()
}

/// The STS exchange an `external_account` ADC file describes, for `subject_token`.
async fn sts_exchange(adc: &Value, subject_token: &str) -> reqwest::Response {
    http()
        .post(adc["token_url"].as_str().unwrap())
        .form(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            (
                "requested_token_type",
                "urn:ietf:params:oauth:token-type:access_token",
            ),
            (
                "subject_token_type",
                adc["subject_token_type"].as_str().unwrap(),
            ),
            ("audience", adc["audience"].as_str().unwrap()),
            ("subject_token", subject_token),
        ])
        .send()
        .await
        .unwrap()
}

// ---- faults -----------------------------------------------------------------

#[tokio::test]
async fn injected_status_fails_the_next_n_answers_then_the_endpoint_recovers() {
    let emu = start_without_app().await;
    emu.inject(Endpoint::Token, Fault::status(503), 2);
    let unsupported_grant = || async {
        http()
            .post(emu.token_uri())
            .form(&[("grant_type", "password")])
            .send()
            .await
            .unwrap()
    };
    for _ in 0..2 {
        let resp = unsupported_grant().await;
        assert_eq!(resp.status(), 503);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "temporarily_unavailable");
    }
    let resp = unsupported_grant().await;
    assert_eq!(resp.status(), 400, "the endpoint itself answers again");
    assert_eq!(emu.requests(Endpoint::Token), 3);
    assert_eq!(emu.counter(counter::FAULTS, "token"), 2);
    assert_eq!(emu.counter(counter::ERRORS, "token"), 1);
    assert_eq!(emu.pending_faults(Endpoint::Token), 0);
}

#[tokio::test]
async fn faults_speak_each_endpoints_error_dialect() {
    let emu = start_without_app().await;
    emu.inject(Endpoint::GenerateIdToken, Fault::status(429), 1);
    let resp = http()
        .post(emu.iam_credentials_url("x@y.iam.gserviceaccount.com", "generateIdToken"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], 429);
    assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");

    emu.inject(
        Endpoint::MetadataIdentity,
        Fault::error(500, "internal", "metadata is down"),
        1,
    );
    let resp = metadata_identity(&emu, "a", "full").await;
    assert_eq!(resp.status(), 500);
    assert_eq!(resp.headers()["metadata-flavor"], "Google");
    assert_eq!(resp.text().await.unwrap(), "metadata is down");
}

#[tokio::test]
async fn malformed_fault_answers_200_with_an_unparseable_body() {
    let emu = start_without_app().await;
    emu.inject(Endpoint::Token, Fault::Malformed, 1);
    let resp = http()
        .post(emu.token_uri())
        .form(&[("grant_type", "refresh_token")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.json::<Value>().await.is_err());
}

#[tokio::test]
async fn reset_fault_drops_the_connection_without_an_answer() {
    let emu = start_without_app().await;
    emu.inject(Endpoint::MetadataIdentity, Fault::Reset, 1);
    let err = http()
        .get(format!(
            "{}computeMetadata/v1/instance/service-accounts/default/identity?audience=a",
            emu.url()
        ))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .unwrap_err();
    assert!(err.status().is_none(), "no HTTP answer: {err}");
    assert_eq!(
        metadata_identity(&emu, "a", "full").await.status(),
        200,
        "next request is served"
    );
    assert_eq!(emu.counter(counter::FAULTS, "metadata.identity"), 1);
}

#[tokio::test]
async fn delay_fault_postpones_a_normal_answer() {
    let emu = start_without_app().await;
    emu.inject(Endpoint::Jwks, Fault::delay(Duration::from_millis(300)), 1);
    let started = Instant::now();
    let resp = http().get(emu.jwks_url()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn faults_can_be_injected_and_cleared_over_http() {
    let emu = start_without_app().await;
    let (status, body) = control(
        &emu,
        reqwest::Method::POST,
        "faults",
        json!({"endpoint": "metadata.token", "times": 3, "fault": {"kind": "status", "status": 503}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["pending"], 3);
    let (status, body) = control(
        &emu,
        reqwest::Method::POST,
        "faults",
        json!({"endpoint": "nope", "fault": {"kind": "reset"}}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("metadata.token"));
    let (status, _) = control(&emu, reqwest::Method::DELETE, "faults", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(emu.pending_faults(Endpoint::MetadataToken), 0);
}

#[tokio::test]
async fn a_rate_of_one_faults_every_request_with_faults_drawn_from_the_list() {
    let emu = start_without_app().await;
    emu.inject(Endpoint::Jwks, Fault::Malformed, 1);
    emu.inject_at_rate(
        Endpoint::Jwks,
        1.0,
        [Fault::status(503), Fault::status(429)],
    );
    let first = http().get(emu.jwks_url()).send().await.unwrap();
    assert_eq!(first.status(), 200, "the queued fault goes first");
    assert!(first.json::<Value>().await.is_err());
    for _ in 0..100 {
        let status = http().get(emu.jwks_url()).send().await.unwrap().status();
        assert!(status == 503 || status == 429, "{status}");
    }
    let (s503, s429) = (
        emu.counter(&counter::faults_by(&Fault::status(503)), "jwks"),
        emu.counter(&counter::faults_by(&Fault::status(429)), "jwks"),
    );
    assert_eq!(s503 + s429, 100);
    assert!(s503 > 0 && s429 > 0, "both are drawn: {s503} / {s429}");
    assert_eq!(
        emu.counter(&counter::faults_by(&Fault::Malformed), "jwks"),
        1
    );
    assert_eq!(emu.counter(counter::FAULTS, "jwks"), 101);
    assert_eq!(
        emu.pending_faults(Endpoint::Jwks),
        0,
        "a rate queues nothing"
    );
}

#[tokio::test]
async fn a_fault_rate_faults_about_that_share_of_requests() {
    let emu = start_without_app().await;
    emu.inject_at_rate(Endpoint::Jwks, 0.3, [Fault::status(500)]);
    let n = 1000;
    let mut failed = 0;
    for _ in 0..n {
        if http().get(emu.jwks_url()).send().await.unwrap().status() == 500 {
            failed += 1;
        }
    }
    // Binomial(1000, 0.3): mean 300, standard deviation about 14.5.
    assert!((200..=400).contains(&failed), "{failed} of {n}");
    assert_eq!(emu.counter(counter::FAULTS, "jwks"), failed);
    assert_eq!(emu.requests(Endpoint::Jwks), n);
}

#[tokio::test]
async fn random_faults_reset_and_delay_like_queued_ones() {
    let emu = start_without_app().await;
    emu.inject_at_rate(Endpoint::Jwks, 1.0, [Fault::Reset]);
    let err = http().get(emu.jwks_url()).send().await.unwrap_err();
    assert!(err.status().is_none(), "no HTTP answer: {err}");
    emu.inject_at_rate(
        Endpoint::Jwks,
        1.0,
        [Fault::delay(Duration::from_millis(200))],
    );
    let started = Instant::now();
    let resp = http().get(emu.jwks_url()).send().await.unwrap();
    assert_eq!(resp.status(), 200, "a delay answers normally");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(emu.counter(&counter::faults_by(&Fault::Reset), "jwks"), 1);
    assert_eq!(
        emu.counter(&counter::faults_by(&Fault::delay(Duration::ZERO)), "jwks"),
        1
    );
}

#[tokio::test]
async fn a_rate_of_zero_or_clear_faults_turns_random_faults_off() {
    let emu = start_without_app().await;
    emu.inject_at_rate(Endpoint::Jwks, 1.0, [Fault::status(503)]);
    emu.inject_at_rate(Endpoint::Jwks, 0.0, [Fault::status(503)]);
    assert_eq!(
        http().get(emu.jwks_url()).send().await.unwrap().status(),
        200
    );
    emu.inject_at_rate(Endpoint::Jwks, 1.0, [Fault::status(503)]);
    emu.clear_faults();
    assert_eq!(
        http().get(emu.jwks_url()).send().await.unwrap().status(),
        200
    );
    assert_eq!(emu.counter(counter::FAULTS, "jwks"), 0);
}

#[tokio::test]
async fn fault_rates_can_be_set_over_http() {
    let emu = start_without_app().await;
    let (status, body) = control(
        &emu,
        reqwest::Method::POST,
        "faults/rate",
        json!({"endpoint": "jwks", "rate": 1.0, "faults": [{"kind": "status", "status": 503}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rate"], 1.0);
    assert_eq!(
        http().get(emu.jwks_url()).send().await.unwrap().status(),
        503
    );
    for bad in [
        json!({"endpoint": "jwks", "rate": 1.5, "faults": [{"kind": "reset"}]}),
        json!({"endpoint": "nope", "rate": 0.5, "faults": [{"kind": "reset"}]}),
    ] {
        let (status, body) = control(&emu, reqwest::Method::POST, "faults/rate", bad).await;
        assert_eq!(status, 400, "{body}");
    }
    let (status, _) = control(&emu, reqwest::Method::DELETE, "faults", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(
        http().get(emu.jwks_url()).send().await.unwrap().status(),
        200
    );
}

// ---- counters -----------------------------------------------------------------

#[tokio::test]
async fn counters_are_exact_under_concurrent_requests() {
    let emu = start_without_app().await;
    let n = 200;
    let mut tasks = tokio::task::JoinSet::new();
    let url = format!(
        "{}computeMetadata/v1/instance/service-accounts/default/token",
        emu.url()
    );
    for _ in 0..n {
        let url = url.clone();
        tasks.spawn(async move {
            http()
                .get(url)
                .header("Metadata-Flavor", "Google")
                .send()
                .await
                .unwrap()
                .status()
        });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    assert_eq!(emu.requests(Endpoint::MetadataToken), n);
    assert_eq!(
        emu.counter(counter::ACCESS_TOKENS, Grant::Metadata.name()),
        n
    );
}

#[tokio::test]
async fn counters_read_over_http_match_rust_and_reset() {
    let emu = start_without_app().await;
    metadata_identity(&emu, "aud-h", "full").await;
    let (_, v) = control(
        &emu,
        reqwest::Method::GET,
        "counter?name=id_tokens&label=aud-h",
        json!({}),
    )
    .await;
    assert_eq!(v["value"], 1);
    let (_, all) = control(&emu, reqwest::Method::GET, "counters", json!({})).await;
    assert_eq!(all["id_tokens.metadata"]["aud-h"], 1);
    assert_eq!(all["requests"]["metadata.identity"], 1);
    control(&emu, reqwest::Method::POST, "counters/reset", json!({})).await;
    assert_eq!(emu.id_tokens_issued("aud-h"), 0);
}

// ---- lifetime, clock, revocation ------------------------------------------------

#[tokio::test]
async fn token_lifetime_sets_exp_of_new_tokens() {
    let emu = start_without_app().await;
    emu.set_token_lifetime(Duration::from_secs(2));
    let c = metadata_claims(&emu, "short").await;
    assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 2);
    let (_, v) = control(
        &emu,
        reqwest::Method::POST,
        "lifetime",
        json!({"seconds": 5}),
    )
    .await;
    assert_eq!(v["seconds"], 5);
    let c = metadata_claims(&emu, "short").await;
    assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 5);
}

#[tokio::test]
async fn clock_offset_dates_new_tokens() {
    let emu = start_without_app().await;
    let real = emu.now();
    emu.set_clock_offset(10_000);
    let c = metadata_claims(&emu, "clock").await;
    let iat = c["iat"].as_u64().unwrap();
    assert!(iat >= real + 10_000, "iat {iat} real {real}");
    let (_, v) = control(
        &emu,
        reqwest::Method::POST,
        "clock",
        json!({"advance_seconds": 5}),
    )
    .await;
    assert_eq!(v["offset_seconds"], 10_005);
    assert_eq!(emu.clock_offset(), 10_005);
}

#[tokio::test]
async fn revoking_a_token_over_http_names_its_jti() {
    let emu = start_without_app().await;
    let token = emu.mint_id_token("rv", "r@example.com");
    let (status, v) = control(
        &emu,
        reqwest::Method::POST,
        "revoke",
        json!({"token": token}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["revoked"], claims(&token)["jti"]);
}

#[tokio::test]
async fn revoked_access_token_no_longer_authenticates_to_iam() {
    let emu = start_without_app().await;
    let target = emu.create_service_account("rt").await.unwrap();
    let email = emu.metadata_service_account().unwrap();
    emu.allow_impersonation(&email, target.email());
    let body = metadata_access_token(&emu).await;
    let bearer = body["access_token"].as_str().unwrap();
    let call = || generate_id_token(&emu, target.email(), bearer);
    assert_eq!(call().await.status(), 200);
    emu.revoke(bearer);
    assert_eq!(call().await.status(), 401);
}

#[tokio::test]
async fn expired_access_token_no_longer_authenticates_to_iam() {
    let emu = start_without_app().await;
    let target = emu.create_service_account("exp").await.unwrap();
    let email = emu.metadata_service_account().unwrap();
    emu.allow_impersonation(&email, target.email());
    emu.set_token_lifetime(Duration::from_secs(60));
    let body = metadata_access_token(&emu).await;
    assert_eq!(body["expires_in"], 60);
    emu.advance_clock(Duration::from_secs(61));
    let resp =
        generate_id_token(&emu, target.email(), body["access_token"].as_str().unwrap()).await;
    assert_eq!(resp.status(), 401);
}

// ---- provisioning over HTTP ------------------------------------------------------

#[tokio::test]
async fn http_provisioning_mints_keys_clients_users_and_grants() {
    let emu = start_without_app().await;
    let (status, key) = control(
        &emu,
        reqwest::Method::POST,
        "service-accounts",
        json!({"name": "peer"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        key["client_email"],
        "peer@iap-emulator.iam.gserviceaccount.com"
    );
    assert_eq!(key["token_uri"], emu.token_uri());
    let (_, client) = control(&emu, reqwest::Method::POST, "clients", json!({})).await;
    let (status, user) = control(
        &emu,
        reqwest::Method::POST,
        "users",
        json!({"client_id": client["client_id"], "email": "p@example.com"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(user["type"], "authorized_user");
    assert_eq!(user["client_secret"], client["client_secret"]);
    let (status, _) = control(
        &emu,
        reqwest::Method::POST,
        "impersonation",
        json!({"caller": "a@example.com", "target": "peer@iap-emulator.iam.gserviceaccount.com"}),
    )
    .await;
    assert_eq!(status, 200);
    let (_, tok) = control(
        &emu,
        reqwest::Method::POST,
        "id-tokens",
        json!({"audience": "q", "email": "p@example.com"}),
    )
    .await;
    assert_eq!(claims(tok["token"].as_str().unwrap())["aud"], "q");
    let (_, info) = control(&emu, reqwest::Method::GET, "info", json!({})).await;
    assert_eq!(info["token_uri"], emu.token_uri());
    assert_eq!(info["metadata_host"], emu.metadata_host());
    let (status, _) = control(
        &emu,
        reqwest::Method::POST,
        "users",
        json!({"client_id": "nope", "email": "x"}),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn metadata_service_account_can_be_removed_over_http() {
    let emu = start_without_app().await;
    let (_, v) = control(
        &emu,
        reqwest::Method::POST,
        "metadata-service-account",
        json!({"email": null}),
    )
    .await;
    assert_eq!(v["email"], Value::Null);
    assert_eq!(metadata_identity(&emu, "a", "full").await.status(), 404);
}

// ---- ADC files ---------------------------------------------------------------------

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test]
async fn adc_files_of_every_type_point_at_the_emulator() {
    let emu = start_without_app().await;
    let dir = tempfile::tempdir().unwrap();
    let sa = emu.create_service_account("adc").await.unwrap();
    let client = emu.create_desktop_client(emu.project_id());
    let user = emu.create_user(&client, "adc@example.com");
    let pool = emu.create_workload_pool("pool", "prov");

    let p = dir.path().join("sa.json");
    emu.write_adc(&Adc::ServiceAccount(sa.clone()), &p).unwrap();
    assert_eq!(read_json(&p)["token_uri"], emu.token_uri());
    #[cfg(unix)]
    assert_eq!(mode(&p), 0o600);

    let p = dir.path().join("user.json");
    emu.write_adc(&Adc::AuthorizedUser(user.clone()), &p)
        .unwrap();
    let v = read_json(&p);
    assert_eq!(v["type"], "authorized_user");
    assert_eq!(v["refresh_token"], user.refresh_token());

    let p = dir.path().join("imp.json");
    emu.write_adc(
        &Adc::Impersonated {
            source: Box::new(Adc::AuthorizedUser(user.clone())),
            target: sa.email().to_owned(),
            delegates: vec!["d@iap-emulator.iam.gserviceaccount.com".into()],
        },
        &p,
    )
    .unwrap();
    let v = read_json(&p);
    assert_eq!(v["type"], "impersonated_service_account");
    assert_eq!(
        v["service_account_impersonation_url"],
        emu.iam_credentials_url(sa.email(), "generateAccessToken")
    );
    assert_eq!(v["source_credentials"]["type"], "authorized_user");
    assert_eq!(
        v["delegates"][0],
        "projects/-/serviceAccounts/d@iap-emulator.iam.gserviceaccount.com"
    );

    let token_file = dir.path().join("subject.jwt");
    let p = dir.path().join("wif-file.json");
    emu.write_adc(
        &Adc::ExternalAccount {
            pool: pool.clone(),
            subject: "ci".into(),
            source: SubjectTokenSource::File(token_file.clone()),
            impersonate: Some(sa.email().to_owned()),
        },
        &p,
    )
    .unwrap();
    let v = read_json(&p);
    assert_eq!(v["type"], "external_account");
    assert_eq!(v["audience"], pool.audience());
    assert_eq!(v["token_url"], emu.sts_url());
    assert_eq!(v["credential_source"]["file"], token_file.to_str().unwrap());
    let subject = std::fs::read_to_string(&token_file).unwrap();
    assert_eq!(claims(&subject)["sub"], "ci");

    let p = dir.path().join("wif-url.json");
    emu.write_adc(
        &Adc::ExternalAccount {
            pool: pool.clone(),
            subject: "web".into(),
            source: SubjectTokenSource::Url,
            impersonate: None,
        },
        &p,
    )
    .unwrap();
    let v = read_json(&p);
    assert!(v.get("service_account_impersonation_url").is_none());
    let url = v["credential_source"]["url"].as_str().unwrap();
    let got: Value = get_json(url).await;
    let field = v["credential_source"]["format"]["subject_token_field_name"]
        .as_str()
        .unwrap();
    // The fetched subject token is accepted by STS.
    let resp = sts_exchange(&v, got[field].as_str().unwrap()).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn secrets_stay_out_of_debug_output() {
    let emu = start_without_app().await;
    let sa = emu.create_service_account("dbg").await.unwrap();
    let client = emu.create_desktop_client("p");
    let user = emu.create_user(&client, "dbg@example.com");
    let text = format!("{sa:?} {client:?} {user:?} {emu:?}");
    assert!(!text.contains("PRIVATE KEY"));
    assert!(!text.contains(client.client_secret()));
    assert!(!text.contains(user.refresh_token()));
    assert!(text.contains("dbg@example.com"));
}

// ---- lifecycle -------------------------------------------------------------------------

#[tokio::test]
async fn dropping_the_emulator_stops_its_listener() {
    let emu = start_without_app().await;
    let addr = emu.addr();
    assert_eq!(http().get(emu.url()).send().await.unwrap().status(), 200);
    drop(emu);
    // The abort lands on the server task at its next poll; wait for it
    // by retrying the connection, bounded.
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(refused.is_ok(), "listener still accepting after drop");
}

#[tokio::test]
async fn builder_listens_on_the_chosen_address() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let emu = Emulator::builder()
        .listen(addr)
        .without_default_app()
        .start()
        .await
        .unwrap();
    assert_eq!(emu.addr(), addr);
    assert_eq!(emu.url(), format!("http://{addr}/"));
    assert_eq!(emu.metadata_host(), addr.to_string());
}

#[tokio::test]
async fn adc_file_set_has_every_type_and_working_grants() {
    let emu = start_without_app().await;
    let dir = tempfile::tempdir().unwrap();
    let files = emu.write_adc_files(dir.path()).await.unwrap();
    let types: Vec<Value> = [
        &files.service_account,
        &files.authorized_user,
        &files.impersonated_service_account,
        &files.impersonated_from_service_account,
        &files.external_account_file,
        &files.external_account_url,
    ]
    .iter()
    .map(|p| read_json(p)["type"].clone())
    .collect();
    assert_eq!(
        types,
        [
            "service_account",
            "authorized_user",
            "impersonated_service_account",
            "impersonated_service_account",
            "external_account",
            "external_account"
        ]
    );
    // The workload's federated token may act as the target.
    let wif = read_json(&files.external_account_file);
    let subject =
        std::fs::read_to_string(wif["credential_source"]["file"].as_str().unwrap()).unwrap();
    let sts: Value = sts_exchange(&wif, subject.trim())
        .await
        .json()
        .await
        .unwrap();
    let resp = http()
        .post(wif["service_account_impersonation_url"].as_str().unwrap())
        .bearer_auth(sts["access_token"].as_str().unwrap())
        .json(&json!({"scope": ["https://www.googleapis.com/auth/cloud-platform"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[test]
fn emulator_handle_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Emulator>();
    assert_send_sync::<iap_emulator::ServiceAccount>();
    assert_send_sync::<iap_emulator::User>();
}

#[tokio::test]
async fn apps_created_over_http_serve_until_the_emulator_drops() {
    let emu = start_without_app().await;
    let (status, app) = control(
        &emu,
        reqwest::Method::POST,
        "apps",
        json!({"allow_clients": ["first-allowed"]}),
    )
    .await;
    assert_eq!(status, 200, "{app}");
    let url = app["url"].as_str().unwrap().to_owned();
    let client_id = app["client_id"].as_str().unwrap().to_owned();
    assert_eq!(app["allowed_clients"], json!(["first-allowed"]));
    let status_with = |token: String| {
        let req = http().get(&url).bearer_auth(token);
        async move { req.send().await.unwrap().status() }
    };
    // Served after the control request (and its handle) is gone.
    assert_eq!(http().get(&url).send().await.unwrap().status(), 401);
    let token = emu.mint_id_token(&client_id, "h@example.com");
    assert_eq!(status_with(token).await, 200);
    let other = emu.mint_id_token("later-allowed", "h@example.com");
    assert_eq!(status_with(other.clone()).await, 401);
    let (status, v) = control(
        &emu,
        reqwest::Method::POST,
        "apps/allow",
        json!({"app": client_id, "client_id": "later-allowed"}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(status_with(other).await, 200);

    let addr: std::net::SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    drop(emu);
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(refused.is_ok(), "app listener still accepting after drop");
}
