//! Workload identity federation (`external_account`) against the emulator:
//! subject tokens from a file, a URL and an executable, the STS exchange,
//! generateAccessToken and generateIdToken, and every documented error.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use iap_emulator::{
    Adc, Emulator, Grant, ServiceAccount, SubjectTokenSource, WorkloadPool, counter,
};
use iap_token::adc::{self, Environment};
use iap_token::source::external_account::ExternalAccount;

const ALLOW_EXECUTABLES: &str = "GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES";
const WORKLOAD_IDENTITY_USER_ROLE: &str = "roles/iam.workloadIdentityUser";
const OPENID_TOKEN_CREATOR_ROLE: &str = "roles/iam.serviceAccountOpenIdTokenCreator";
use iap_token::source::impersonated::ImpersonatedSource;
use iap_token::{Audience, Error, IdToken, TokenSource};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const AUD: &str = "123-iap.apps.googleusercontent.com";
const SUBJECT: &str = "repo:acme/app:ref:refs/heads/main";
const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// An emulator with a pool, a service account the pool's subject may
/// impersonate, and that account's grant on itself (for generateIdToken).
struct Federation {
    emu: Emulator,
    pool: WorkloadPool,
    sa: ServiceAccount,
    dir: tempfile::TempDir,
}

impl Federation {
    async fn start() -> Self {
        Self::start_with(true, true).await
    }

    async fn start_with(pool_grant: bool, self_grant: bool) -> Self {
        let emu = Emulator::start().await.unwrap();
        let pool = emu.create_workload_pool("ci-pool", "github");
        let sa = emu.create_service_account("wif-runner").await.unwrap();
        if pool_grant {
            emu.allow_impersonation(&pool.principal(SUBJECT), sa.email());
        }
        if self_grant {
            emu.allow_impersonation(sa.email(), sa.email());
        }
        Federation {
            emu,
            pool,
            sa,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// An ADC file with a `file` credential source, written by the emulator.
    fn file_adc(&self, impersonate: bool) -> PathBuf {
        let path = self.path("wif.json");
        let adc = Adc::ExternalAccount {
            pool: self.pool.clone(),
            subject: SUBJECT.into(),
            source: SubjectTokenSource::File(self.path("subject-token")),
            impersonate: impersonate.then(|| self.sa.email().to_string()),
        };
        self.emu.write_adc(&adc, &path).unwrap();
        path
    }

    /// The emulator's `external_account` JSON with `credential_source` replaced.
    fn config_with_source(&self, credential_source: Value) -> Value {
        let adc = Adc::ExternalAccount {
            pool: self.pool.clone(),
            subject: SUBJECT.into(),
            source: SubjectTokenSource::Url,
            impersonate: Some(self.sa.email().to_string()),
        };
        let mut config = self.emu.adc_json(&adc);
        config["credential_source"] = credential_source;
        config
    }

    /// An ID token for `audience` through the ADC file of [`file_adc`](Self::file_adc)
    /// with impersonation: subject token file, STS, generateAccessToken, generateIdToken.
    async fn id_token_through_adc(&self, audience: &str) -> iap_token::Result<IdToken> {
        adc::from_file(self.file_adc(true))?
            .id_token(&Audience::new(audience))
            .await
    }

    fn subject_token(&self) -> String {
        self.emu.mint_subject_token(&self.pool, SUBJECT)
    }

    fn sts_calls(&self) -> u64 {
        self.emu.counter(counter::ACCESS_TOKENS, Grant::Sts.name())
    }

    fn generate_access_token_calls(&self) -> u64 {
        self.emu
            .counter(counter::ACCESS_TOKENS, Grant::GenerateAccessToken.name())
    }

    fn id_tokens(&self) -> u64 {
        self.emu
            .counter_total(&counter::id_tokens_by(Grant::GenerateIdToken))
    }
}

/// The ID-token source of an `external_account` file, with executables allowed.
fn executables_allowed(config: &Value) -> ImpersonatedSource {
    ExternalAccount::from_json(config.to_string())
        .unwrap()
        .with_environment(Environment::from_vars([(ALLOW_EXECUTABLES, "1")]))
        .id_token_source()
        .unwrap()
}

#[tokio::test]
async fn a_file_subject_token_becomes_the_service_accounts_id_token() {
    let fed = Federation::start().await;
    let path = fed.file_adc(true);

    let token = adc::from_file(&path)
        .unwrap()
        .id_token(&Audience::new(AUD))
        .await
        .unwrap();

    assert_eq!(token.claims().aud.as_deref(), Some(AUD));
    assert_eq!(token.claims().email.as_deref(), Some(fed.sa.email()));
    assert_eq!(
        (
            fed.sts_calls(),
            fed.generate_access_token_calls(),
            fed.id_tokens()
        ),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn the_federation_chain_runs_once_per_access_token_lifetime_not_per_id_token() {
    let fed = Federation::start().await;
    let source = adc::from_file(fed.file_adc(true)).unwrap();

    for i in 0..4 {
        source
            .id_token(&Audience::new(format!("aud-{i}")))
            .await
            .unwrap();
    }

    assert_eq!(fed.id_tokens(), 4);
    assert_eq!(fed.sts_calls(), 1);
    assert_eq!(fed.generate_access_token_calls(), 1);
}

#[tokio::test]
async fn an_access_token_already_past_its_expiry_is_not_reused() {
    let fed = Federation::start().await;
    // The emulator's clock runs behind ours: the service account's access
    // token (`expireTime`) is already expired by this machine's clock.
    fed.emu.set_clock_offset(-4000);
    let source = adc::from_file(fed.file_adc(true)).unwrap();

    source.id_token(&Audience::new("a")).await.unwrap();
    source.id_token(&Audience::new("b")).await.unwrap();

    assert_eq!(fed.sts_calls(), 2);
    assert_eq!(fed.generate_access_token_calls(), 2);
}

#[tokio::test]
async fn the_emulators_url_source_with_json_format_works() {
    let fed = Federation::start().await;
    let path = fed.path("wif.json");
    let adc_file = Adc::ExternalAccount {
        pool: fed.pool.clone(),
        subject: SUBJECT.into(),
        source: SubjectTokenSource::Url,
        impersonate: Some(fed.sa.email().into()),
    };
    fed.emu.write_adc(&adc_file, &path).unwrap();

    let token = adc::from_file(&path)
        .unwrap()
        .id_token(&Audience::new(AUD))
        .await
        .unwrap();

    assert_eq!(token.claims().email.as_deref(), Some(fed.sa.email()));
    assert_eq!(fed.sts_calls(), 1);
}

/// A stand-in for a third-party token endpoint (e.g. GitHub's or Azure's):
/// answers every GET with `body` and records each request's head.
async fn serve_subject_token(body: String) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            seen.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&head).to_ascii_lowercase());
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(answer.as_bytes()).await;
        }
    });
    (url, heads)
}

#[tokio::test]
async fn a_url_source_sends_the_configured_headers_and_reads_text() {
    let fed = Federation::start().await;
    let (url, heads) = serve_subject_token(fed.subject_token()).await;
    let config = fed.config_with_source(json!({
        "url": url,
        "headers": {"Metadata": "True", "X-Request-Token": "req-secret-123"},
        "format": {"type": "text"},
    }));

    let account = ExternalAccount::from_json(config.to_string()).unwrap();
    let token = account
        .id_token_source()
        .unwrap()
        .id_token(&Audience::new(AUD))
        .await
        .unwrap();

    assert_eq!(token.claims().email.as_deref(), Some(fed.sa.email()));
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 1);
    assert!(heads[0].contains("metadata: true\r\n"), "{}", heads[0]);
    assert!(
        heads[0].contains("x-request-token: req-secret-123\r\n"),
        "{}",
        heads[0]
    );
    assert!(
        !format!("{account:?}").contains("req-secret-123"),
        "{account:?}"
    );
}

#[tokio::test]
async fn a_url_source_reads_the_named_json_field() {
    let fed = Federation::start().await;
    let (url, _) =
        serve_subject_token(json!({"count": 1, "value": fed.subject_token()}).to_string()).await;
    let config = fed.config_with_source(json!({
        "url": url,
        "format": {"type": "json", "subject_token_field_name": "value"},
    }));

    let token = adc::from_json(config.to_string())
        .unwrap()
        .id_token(&Audience::new(AUD))
        .await
        .unwrap();

    assert_eq!(token.claims().email.as_deref(), Some(fed.sa.email()));
}

#[tokio::test]
async fn a_json_answer_without_the_named_field_is_an_error_naming_it() {
    let fed = Federation::start().await;
    let (url, _) = serve_subject_token(json!({"access_token": "x"}).to_string()).await;
    let config = fed.config_with_source(json!({
        "url": url,
        "format": {"type": "json", "subject_token_field_name": "value"},
    }));

    let err = adc::from_json(config.to_string())
        .unwrap()
        .id_token(&Audience::new(AUD))
        .await
        .unwrap_err();

    assert!(err.to_string().contains("no string field `value`"), "{err}");
    assert_eq!(fed.sts_calls(), 0);
}

#[tokio::test]
async fn without_an_impersonation_url_id_tokens_are_refused_with_the_fix() {
    let fed = Federation::start().await;
    let path = fed.file_adc(false);

    let err = adc::from_file(&path).unwrap_err();

    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("service_account_impersonation_url"), "{text}");
    assert!(
        text.contains("gcloud iam workload-identity-pools create-cred-config"),
        "{text}"
    );
    assert!(text.contains("--service-account="), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
}

#[tokio::test]
async fn without_an_impersonation_url_the_federated_token_can_still_be_a_source_credential() {
    let fed = Federation::start().await;
    let target = fed.emu.create_service_account("target").await.unwrap();
    fed.emu
        .allow_impersonation(&fed.pool.principal(SUBJECT), target.email());
    let account = ExternalAccount::from_file(fed.file_adc(false)).unwrap();

    let token = ImpersonatedSource::new(target.email(), account)
        .unwrap()
        .with_iam_endpoint(fed.emu.url())
        .unwrap()
        .id_token(&Audience::new(AUD))
        .await
        .unwrap();

    assert_eq!(token.claims().email.as_deref(), Some(target.email()));
    assert_eq!((fed.sts_calls(), fed.generate_access_token_calls()), (1, 0));
}

#[tokio::test]
async fn a_subject_token_sts_refuses_is_an_invalid_grant_with_a_hint() {
    let fed = Federation::start().await;
    let path = fed.file_adc(true);
    std::fs::write(
        fed.path("subject-token"),
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.c2ln",
    )
    .unwrap();

    let err = adc::from_file(&path)
        .unwrap()
        .id_token(&Audience::new(AUD))
        .await
        .unwrap_err();

    assert!(matches!(err, Error::Endpoint { status: 400, .. }), "{err}");
    assert!(!err.is_transient());
    let text = err.to_string();
    assert!(text.contains("invalid_grant"), "{text}");
    assert!(text.contains(&fed.pool.audience()), "{text}");
    assert!(
        text.contains("subject-token"),
        "names the source file: {text}"
    );
    assert!(!text.contains("eyJhbGciOiJub25lIn0"), "{text}");
}

#[tokio::test]
async fn a_missing_workload_identity_user_grant_is_a_403_naming_the_role_and_the_pool() {
    let fed = Federation::start_with(false, true).await;

    let err = fed.id_token_through_adc(AUD).await.unwrap_err();

    assert!(matches!(err, Error::Endpoint { status: 403, .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(WORKLOAD_IDENTITY_USER_ROLE), "{text}");
    assert!(
        text.contains("principalSet://iam.googleapis.com/projects/"),
        "{text}"
    );
    assert!(text.contains("workloadIdentityPools/ci-pool/*"), "{text}");
    assert!(text.contains(fed.sa.email()), "{text}");
}

#[tokio::test]
async fn a_service_account_without_a_grant_on_itself_gets_a_403_saying_so() {
    let fed = Federation::start_with(true, false).await;

    let err = fed.id_token_through_adc(AUD).await.unwrap_err();

    assert!(matches!(err, Error::Endpoint { status: 403, .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(OPENID_TOKEN_CREATOR_ROLE) && text.contains("on itself"),
        "{text}"
    );
    assert!(
        text.contains(&format!("--member=serviceAccount:{}", fed.sa.email())),
        "{text}"
    );
}

#[tokio::test]
async fn the_federated_token_passes_the_gate() {
    let fed = Federation::start().await;
    let app = fed.emu.app();
    let token = fed.id_token_through_adc(app.client_id()).await.unwrap();

    let answer = common::get_with_token(app.url().clone(), &token).await;

    assert_eq!(answer.status(), 200);
}

#[test]
fn bad_files_name_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wif.json");
    let base = json!({
        "type": "external_account",
        "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/x",
        "subject_token_type": JWT_TYPE,
        "token_url": "https://sts.googleapis.com/v1/token",
        "service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/sa@p.iam.gserviceaccount.com:generateAccessToken",
        "credential_source": {"file": "/tmp/token"},
    });
    let with = |field: &str, value: Value| {
        let mut v = base.clone();
        if value.is_null() {
            v.as_object_mut().unwrap().remove(field);
        } else {
            v[field] = value;
        }
        v
    };
    let cases = [
        (with("audience", Value::Null), "field `audience` is missing"),
        (
            with("subject_token_type", Value::Null),
            "field `subject_token_type` is missing",
        ),
        (
            with("token_url", json!("http://sts.example.com/v1/token")),
            "field `token_url` must be an https URL",
        ),
        (
            with(
                "service_account_impersonation_url",
                json!("https://iamcredentials.googleapis.com/v1/whatever"),
            ),
            "field `service_account_impersonation_url` is `https://iamcredentials.googleapis.com/v1/whatever`",
        ),
        (
            with("credential_source", Value::Null),
            "field `credential_source` is missing",
        ),
        (
            with(
                "credential_source",
                json!({"file": "/a", "url": "https://b"}),
            ),
            "must have exactly one of `file`, `url` or `executable`",
        ),
        (
            with(
                "credential_source",
                json!({"url": "http://idp.example.com/token"}),
            ),
            "field `credential_source.url` must be an https URL",
        ),
        (
            with(
                "credential_source",
                json!({"file": "/a", "format": {"type": "json"}}),
            ),
            "field `credential_source.format.subject_token_field_name` is missing",
        ),
        (
            with(
                "credential_source",
                json!({"file": "/a", "format": {"type": "xml"}}),
            ),
            "field `credential_source.format.type` is `xml`",
        ),
        (
            with(
                "credential_source",
                json!({"url": "https://b", "headers": {"Bad Name": "x"}}),
            ),
            "field `credential_source.headers` `Bad Name` is not a valid header",
        ),
        (
            with(
                "credential_source",
                json!({"executable": {"command": "/bin/x", "timeout_millis": 1000}}),
            ),
            "field `credential_source.executable.timeout_millis` must be a number of milliseconds from 5000 to 120000",
        ),
        (
            with(
                "credential_source",
                json!({"executable": {"timeout_millis": 5000}}),
            ),
            "field `credential_source.executable.command` is missing",
        ),
    ];
    for (config, expected) in cases {
        std::fs::write(&path, config.to_string()).unwrap();
        let err = adc::from_file(&path).unwrap_err().to_string();
        assert!(err.contains(expected), "expected `{expected}`\n=> {err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
    }

    let aws = with(
        "credential_source",
        json!({"environment_id": "aws1", "region_url": "http://169.254.169.254/latest/meta-data/placement/availability-zone"}),
    );
    std::fs::write(&path, aws.to_string()).unwrap();
    let err = adc::from_file(&path).unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    assert!(
        err.to_string().contains("`aws1` credential source"),
        "{err}"
    );
}

#[tokio::test]
async fn a_missing_subject_token_file_is_an_error_naming_it() {
    let fed = Federation::start().await;
    let path = fed.file_adc(true);
    std::fs::remove_file(fed.path("subject-token")).unwrap();

    let err = adc::from_file(&path)
        .unwrap()
        .id_token(&Audience::new(AUD))
        .await
        .unwrap_err();

    assert!(matches!(err, Error::ReadFile { .. }), "{err}");
    assert!(err.to_string().contains("subject-token"), "{err}");
}

#[tokio::test]
async fn an_empty_subject_token_file_is_an_unexpected_answer_naming_it() {
    let fed = Federation::start().await;
    let path = fed.file_adc(true);
    std::fs::write(fed.path("subject-token"), "").unwrap();

    let err = adc::from_file(&path)
        .unwrap()
        .id_token(&Audience::new(AUD))
        .await
        .unwrap_err();

    assert!(matches!(err, Error::Protocol { .. }), "{err:?}");
    assert!(
        err.to_string().contains("subject-token") && err.to_string().contains("empty"),
        "{err}"
    );
    assert_eq!(fed.sts_calls(), 0);
}

// ---- executables -----------------------------------------------------------

/// Writes an executable shell script that records its runs and environment
/// in `dir` and then runs `body`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    let text = format!(
        "#!/bin/sh\n\
         echo run >> '{runs}'\n\
         printf '%s\\n' \"$GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE\" \"$GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE\" \
         \"$GOOGLE_EXTERNAL_ACCOUNT_INTERACTIVE\" \"$GOOGLE_EXTERNAL_ACCOUNT_IMPERSONATED_EMAIL\" \
         \"$GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE\" > '{env}'\n\
         {body}\n",
        runs = dir.join("runs").display(),
        env = dir.join("env").display(),
    );
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn runs(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("runs"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

fn response(token: &str, expiration_time: u64) -> String {
    json!({
        "version": 1,
        "success": true,
        "token_type": "urn:ietf:params:oauth:token-type:id_token",
        "id_token": token,
        "expiration_time": expiration_time,
    })
    .to_string()
}

fn in_an_hour() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600
}

#[tokio::test]
async fn executables_do_not_run_unless_allowed() {
    let fed = Federation::start().await;
    let exe = script(
        fed.dir.path(),
        "token.sh",
        &format!("echo '{}'", response(&fed.subject_token(), in_an_hour())),
    );
    let config =
        fed.config_with_source(json!({"executable": {"command": exe.display().to_string()}}));

    let source = ExternalAccount::from_json(config.to_string())
        .unwrap()
        .with_environment(Environment::from_vars([(ALLOW_EXECUTABLES, "0")]))
        .id_token_source()
        .unwrap();
    let err = source.id_token(&Audience::new(AUD)).await.unwrap_err();

    assert!(matches!(err, Error::EnvVar { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES must be `1`"),
        "{err}"
    );
    assert_eq!(runs(fed.dir.path()), 0);
    assert_eq!(fed.sts_calls(), 0);
}

#[tokio::test]
async fn an_allowed_executable_gets_googles_variables_and_its_token_is_exchanged() {
    let fed = Federation::start().await;
    let output_file = fed.path("cache.json");
    let exe = script(
        fed.dir.path(),
        "token.sh",
        &format!("echo '{}'", response(&fed.subject_token(), in_an_hour())),
    );
    let config = fed.config_with_source(json!({"executable": {
        "command": format!("{} --flag value", exe.display()),
        "timeout_millis": 5000,
        "output_file": output_file.display().to_string(),
    }}));

    let source = executables_allowed(&config);
    let token = source.id_token(&Audience::new(AUD)).await.unwrap();

    assert_eq!(token.claims().email.as_deref(), Some(fed.sa.email()));
    assert_eq!(runs(fed.dir.path()), 1);
    let env = std::fs::read_to_string(fed.path("env")).unwrap();
    let env: Vec<&str> = env.lines().collect();
    assert_eq!(
        env,
        [
            fed.pool.audience().as_str(),
            JWT_TYPE,
            "0",
            fed.sa.email(),
            output_file.display().to_string().as_str()
        ]
    );
}

#[tokio::test]
async fn an_executable_found_through_adc_runs_when_the_environment_allows_it() {
    let fed = Federation::start().await;
    let exe = script(
        fed.dir.path(),
        "token.sh",
        &format!("echo '{}'", response(&fed.subject_token(), in_an_hour())),
    );
    let path = fed.path("wif.json");
    let config =
        fed.config_with_source(json!({"executable": {"command": exe.display().to_string()}}));
    std::fs::write(&path, config.to_string()).unwrap();
    let env = Environment::from_vars([
        ("GOOGLE_APPLICATION_CREDENTIALS", path.display().to_string()),
        (ALLOW_EXECUTABLES, "1".into()),
    ]);

    let found = adc::find_with(&env).await.unwrap();
    found.source.id_token(&Audience::new(AUD)).await.unwrap();

    assert_eq!(runs(fed.dir.path()), 1);
}

#[tokio::test]
async fn a_valid_output_file_is_used_without_running_the_executable() {
    let fed = Federation::start().await;
    let output_file = fed.path("cache.json");
    std::fs::write(&output_file, response(&fed.subject_token(), in_an_hour())).unwrap();
    let exe = script(fed.dir.path(), "token.sh", "exit 1");
    let config = fed.config_with_source(json!({"executable": {
        "command": exe.display().to_string(),
        "output_file": output_file.display().to_string(),
    }}));

    let source = executables_allowed(&config);
    source.id_token(&Audience::new(AUD)).await.unwrap();

    assert_eq!(runs(fed.dir.path()), 0);
    assert_eq!(fed.sts_calls(), 1);
}

#[tokio::test]
async fn an_expired_output_file_runs_the_executable_again() {
    let fed = Federation::start().await;
    let output_file = fed.path("cache.json");
    std::fs::write(&output_file, response("stale-token", 1_000)).unwrap();
    let exe = script(
        fed.dir.path(),
        "token.sh",
        &format!("echo '{}'", response(&fed.subject_token(), in_an_hour())),
    );
    let config = fed.config_with_source(json!({"executable": {
        "command": exe.display().to_string(),
        "output_file": output_file.display().to_string(),
    }}));

    let source = executables_allowed(&config);
    source.id_token(&Audience::new(AUD)).await.unwrap();

    assert_eq!(runs(fed.dir.path()), 1);
}

#[tokio::test]
async fn an_executable_that_fails_is_reported_with_its_status_and_message() {
    let fed = Federation::start().await;
    let exe = script(
        fed.dir.path(),
        "token.sh",
        "echo 'gh: not logged in' >&2; exit 3",
    );
    let config =
        fed.config_with_source(json!({"executable": {"command": exe.display().to_string()}}));

    let err = executables_allowed(&config)
        .id_token(&Audience::new(AUD))
        .await
        .unwrap_err();

    let text = err.to_string();
    assert!(
        text.contains("token.sh") && text.contains("exit status: 3"),
        "{text}"
    );
    assert!(text.contains("gh: not logged in"), "{text}");
}

#[tokio::test]
async fn an_unsuccessful_executable_response_is_reported() {
    let fed = Federation::start().await;
    let failure =
        json!({"version": 1, "success": false, "code": "401", "message": "Caller not authorized."});
    let exe = script(fed.dir.path(), "token.sh", &format!("echo '{failure}'"));
    let config =
        fed.config_with_source(json!({"executable": {"command": exe.display().to_string()}}));

    let err = executables_allowed(&config)
        .id_token(&Audience::new(AUD))
        .await
        .unwrap_err();

    assert!(
        err.to_string().contains("401: Caller not authorized."),
        "{err}"
    );
    assert_eq!(fed.sts_calls(), 0);
}

#[tokio::test]
async fn an_executable_that_hangs_is_killed_at_its_timeout() {
    let fed = Federation::start().await;
    // The script replaces itself with the sleep, so the kill reaches it.
    let exe = script(fed.dir.path(), "token.sh", "exec sleep 120");
    let config = fed.config_with_source(json!({"executable": {
        "command": exe.display().to_string(),
        "timeout_millis": 5000,
    }}));

    let err = executables_allowed(&config)
        .id_token(&Audience::new(AUD))
        .await
        .unwrap_err();

    assert!(matches!(err, Error::Transport { .. }), "{err}");
    assert!(err.is_transient());
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.contains("within 5000 ms (timeout_millis)"), "{chain}");
}

#[tokio::test]
async fn a_command_that_does_not_exist_is_a_configuration_mistake_naming_it() {
    let fed = Federation::start().await;
    let missing = fed.path("no-such-helper");
    let config = fed.config_with_source(json!({"executable": {
        "command": missing.display().to_string(),
        "timeout_millis": 5000,
    }}));

    let err = executables_allowed(&config)
        .id_token(&Audience::new(AUD))
        .await
        .unwrap_err();

    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(err.is_configuration() && !err.is_transient());
    assert!(
        err.to_string().contains("no-such-helper")
            && err
                .to_string()
                .contains("credential_source.executable.command"),
        "{err}"
    );
    assert_eq!(fed.sts_calls(), 0);
}

#[tokio::test]
async fn debug_of_the_account_holds_no_secret() {
    let fed = Federation::start().await;
    let mut config = fed.config_with_source(json!({
        "url": "https://idp.example.com/token",
        "headers": {"Authorization": "Bearer idp-secret-value"},
    }));
    config["client_id"] = json!("wif-client");
    config["client_secret"] = json!("wif-client-secret");

    let account = ExternalAccount::from_json(config.to_string()).unwrap();
    let source = account.id_token_source().unwrap();
    let text = format!("{account:?} {source:?}");

    assert!(
        !text.contains("idp-secret-value") && !text.contains("wif-client-secret"),
        "{text}"
    );
    assert!(
        text.contains("authorization") && text.contains("wif-client"),
        "{text}"
    );
}
