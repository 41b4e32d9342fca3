//! The standalone binary: export lines on stdout, serving, clean exit on SIGTERM.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

const NAMES: [&str; 6] = [
    "GCE_METADATA_HOST",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "IAP_EMULATOR_URL",
    "IAP_EMULATOR_APP_URL",
    "IAP_EMULATOR_AUDIENCE",
    "IAP_EMULATOR_JWKS_URL",
];

#[tokio::test]
async fn binary_prints_exports_serves_and_cleans_up_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_iap-emulator"))
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Reading blocks until the binary has flushed its lines.
    let vars = tokio::task::spawn_blocking(move || {
        let mut vars = HashMap::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let (name, value) = line
                .strip_prefix("export ")
                .and_then(|l| l.split_once('='))
                .expect("an export line");
            vars.insert(name.to_owned(), value.to_owned());
            if NAMES.iter().all(|n| vars.contains_key(*n)) {
                break;
            }
        }
        vars
    })
    .await
    .unwrap();
    for name in NAMES {
        assert!(vars.contains_key(name), "{name} missing from {vars:?}");
    }
    let http = reqwest::Client::new();
    let root = http.get(&vars["IAP_EMULATOR_URL"]).send().await.unwrap();
    assert_eq!(root.headers()["metadata-flavor"], "Google");
    let metadata = http
        .get(format!(
            "http://{}/computeMetadata/v1/instance/service-accounts/default/identity?audience=a&format=full",
            vars["GCE_METADATA_HOST"]
        ))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .unwrap();
    assert_eq!(metadata.status(), 200);
    let jwks = http
        .get(&vars["IAP_EMULATOR_JWKS_URL"])
        .send()
        .await
        .unwrap();
    assert_eq!(jwks.status(), 200);
    // The echo app is behind the gate: no token, IAP's 401.
    let app = http
        .get(&vars["IAP_EMULATOR_APP_URL"])
        .send()
        .await
        .unwrap();
    assert_eq!(app.status(), 401);
    let key_path = std::path::PathBuf::from(&vars["GOOGLE_APPLICATION_CREDENTIALS"]);
    let key: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&key_path).unwrap()).unwrap();
    assert_eq!(
        key["token_uri"],
        format!("{}token", vars["IAP_EMULATOR_URL"])
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(
        !key_path.exists(),
        "the key's temporary directory is removed"
    );
}
