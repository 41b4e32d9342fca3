//! Application Default Credentials discovery, in order, with temporary
//! folders and an injected environment (the process environment is never
//! touched, so these tests run in parallel).

use std::path::{Path, PathBuf};

use iap_emulator::Emulator;
use iap_token::adc::{self, CredentialOrigin as Origin, Environment};
use iap_token::{Audience, Error};

struct Setup {
    emu: Emulator,
    dir: tempfile::TempDir,
    sa_email: String,
    sa_key: PathBuf,
    user_file: PathBuf,
}

/// An emulator, a service-account key file and an `authorized_user` file
/// (for alice) in a temporary folder.
async fn setup() -> Setup {
    let emu = Emulator::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sa = emu.create_service_account("adc").await.unwrap();
    let sa_key = dir.path().join("sa.json");
    sa.write_key_file(&sa_key).unwrap();
    let client = emu.create_desktop_client(emu.app().project_id());
    let user = emu.create_user(&client, "alice@example.com");
    let user_file = dir.path().join("user.json");
    std::fs::write(&user_file, user.authorized_user_json()).unwrap();
    Setup {
        sa_email: sa.email().into(),
        emu,
        dir,
        sa_key,
        user_file,
    }
}

fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// `folder/application_default_credentials.json` holding a copy of `from`.
fn well_known_in(folder: &Path, from: &Path) -> PathBuf {
    std::fs::create_dir_all(folder).unwrap();
    let path = folder.join("application_default_credentials.json");
    std::fs::copy(from, &path).unwrap();
    path
}

async fn email_of(found: &adc::Discovered, emu: &Emulator) -> Option<String> {
    let token = found
        .source
        .id_token(&Audience::new(emu.app().client_id()))
        .await
        .unwrap();
    assert_eq!(token.claims().aud.as_deref(), Some(emu.app().client_id()));
    token.claims().email.clone()
}

#[tokio::test]
async fn google_application_credentials_comes_first() {
    let s = setup().await;
    let gcloud = s.dir.path().join("gcloud");
    well_known_in(&gcloud, &s.user_file);
    let env = Environment::from_vars([
        (
            "GOOGLE_APPLICATION_CREDENTIALS",
            s.sa_key.clone().into_os_string(),
        ),
        ("CLOUDSDK_CONFIG", gcloud.into_os_string()),
        ("GCE_METADATA_HOST", s.emu.metadata_host().into()),
    ]);

    let found = adc::find_with(&env).await.unwrap();

    assert_eq!(found.origin, Origin::EnvVar(s.sa_key.clone()));
    assert_eq!(
        email_of(&found, &s.emu).await.as_deref(),
        Some(s.sa_email.as_str())
    );
}

#[tokio::test]
async fn missing_file_named_by_google_application_credentials_is_an_error_naming_it() {
    let s = setup().await;
    let gcloud = s.dir.path().join("gcloud");
    well_known_in(&gcloud, &s.user_file);
    let absent = s.dir.path().join("absent.json");
    let env = Environment::from_vars([
        (
            "GOOGLE_APPLICATION_CREDENTIALS",
            absent.clone().into_os_string(),
        ),
        ("CLOUDSDK_CONFIG", gcloud.into_os_string()),
    ]);

    let err = adc::find_with(&env).await.unwrap_err();

    let text = err.to_string();
    assert!(
        text.contains("GOOGLE_APPLICATION_CREDENTIALS")
            && text.contains(&absent.display().to_string()),
        "{text}"
    );
}

#[tokio::test]
async fn cloudsdk_config_file_comes_next() {
    let s = setup().await;
    let gcloud = s.dir.path().join("gcloud");
    let expected = well_known_in(&gcloud, &s.user_file);
    let home = s.dir.path().join("home");
    well_known_in(&home.join(".config/gcloud"), &s.sa_key);
    let env = Environment::from_vars([
        ("CLOUDSDK_CONFIG", gcloud.into_os_string()),
        ("HOME", home.into_os_string()),
        ("GCE_METADATA_HOST", s.emu.metadata_host().into()),
    ]);

    let found = adc::find_with(&env).await.unwrap();

    assert_eq!(found.origin, Origin::WellKnownFile(expected));
    assert_eq!(
        email_of(&found, &s.emu).await.as_deref(),
        Some("alice@example.com")
    );
}

#[cfg(unix)]
#[tokio::test]
async fn home_config_gcloud_file_without_cloudsdk_config() {
    let s = setup().await;
    let home = s.dir.path().join("home");
    let expected = well_known_in(&home.join(".config/gcloud"), &s.sa_key);
    let env = Environment::from_vars([
        ("HOME", home.into_os_string()),
        ("GCE_METADATA_HOST", s.emu.metadata_host().into()),
    ]);

    let found = adc::find_with(&env).await.unwrap();

    assert_eq!(found.origin, Origin::WellKnownFile(expected));
    assert_eq!(
        email_of(&found, &s.emu).await.as_deref(),
        Some(s.sa_email.as_str())
    );
}

#[tokio::test]
async fn metadata_server_when_no_file_is_found() {
    let s = setup().await;
    let env = Environment::from_vars([
        ("HOME", s.dir.path().join("empty-home").into_os_string()),
        (
            "CLOUDSDK_CONFIG",
            s.dir.path().join("empty-gcloud").into_os_string(),
        ),
        ("GCE_METADATA_HOST", s.emu.metadata_host().into()),
    ]);

    let found = adc::find_with(&env).await.unwrap();

    assert_eq!(found.origin, Origin::MetadataServer);
    assert_eq!(
        email_of(&found, &s.emu).await,
        s.emu.metadata_service_account()
    );
    assert_eq!(s.emu.requests(iap_emulator::Endpoint::MetadataRoot), 1);
}

#[tokio::test]
async fn nothing_found_is_no_credentials() {
    let s = setup().await;
    let env = Environment::from_vars([
        ("HOME", s.dir.path().join("empty-home").into_os_string()),
        ("GCE_METADATA_HOST", closed_port().into()),
    ]);

    let err = adc::find_with(&env).await.unwrap_err();

    assert!(matches!(err, Error::NoCredentials), "{err:?}");
    assert!(err.to_string().contains("iap login"), "{err}");
}

#[tokio::test]
async fn a_broken_well_known_file_is_an_error_not_a_reason_to_look_further() {
    let s = setup().await;
    let gcloud = s.dir.path().join("gcloud");
    std::fs::create_dir_all(&gcloud).unwrap();
    let path = gcloud.join("application_default_credentials.json");
    std::fs::write(
        &path,
        r#"{"type":"authorized_user","client_id":"c","client_secret":"s"}"#,
    )
    .unwrap();
    let env = Environment::from_vars([
        ("CLOUDSDK_CONFIG", gcloud.into_os_string()),
        ("GCE_METADATA_HOST", s.emu.metadata_host().into()),
    ]);

    let err = adc::find_with(&env).await.unwrap_err();

    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string())
            && text.contains("field `refresh_token` is missing"),
        "{text}"
    );
    assert_eq!(s.emu.requests(iap_emulator::Endpoint::MetadataRoot), 0);
}

#[tokio::test]
async fn explicit_files_and_json_build_the_source_of_their_type() {
    let s = setup().await;
    let aud = Audience::new(s.emu.app().client_id());

    let from_sa_file = adc::from_file(&s.sa_key)
        .unwrap()
        .id_token(&aud)
        .await
        .unwrap();
    let from_user_json = adc::from_json(std::fs::read(&s.user_file).unwrap())
        .unwrap()
        .id_token(&aud)
        .await
        .unwrap();

    assert_eq!(
        from_sa_file.claims().email.as_deref(),
        Some(s.sa_email.as_str())
    );
    assert_eq!(
        from_user_json.claims().email.as_deref(),
        Some("alice@example.com")
    );
    let err = adc::from_json(r#"{"type":"gdch_service_account"}"#).unwrap_err();
    assert!(
        err.to_string()
            .contains("field `type` is `gdch_service_account`"),
        "{err}"
    );
}
