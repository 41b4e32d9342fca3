//! `iap emulator` end to end: its export lines point clients at a working emulator.

mod common;

use std::collections::HashMap;

use common::{Sandbox, interrupt, stdout_lines, wait_for_line};

#[tokio::test(flavor = "multi_thread")]
async fn export_lines_point_at_a_working_emulator_until_ctrl_c() {
    let sandbox = Sandbox::new();
    let mut child = sandbox
        .command(&["emulator"])
        .spawn()
        .expect("spawn iap emulator");
    let mut out = stdout_lines(child.stdout.take().unwrap());
    let mut vars = HashMap::new();
    while vars.len() < 7 {
        let (k, v) = wait_for_line(&mut out, |l| {
            let (k, v) = l.strip_prefix("export ")?.split_once('=')?;
            Some((k.to_owned(), v.trim_matches('\'').to_owned()))
        })
        .await;
        vars.insert(k, v);
    }
    let metadata = reqwest::get(format!("http://{}/", vars["GCE_METADATA_HOST"]))
        .await
        .unwrap();
    assert_eq!(metadata.headers()["metadata-flavor"], "Google");

    // A client configured from the lines alone reaches the gated app.
    let mut client = Sandbox::new();
    client.set(
        "GOOGLE_APPLICATION_CREDENTIALS",
        vars["GOOGLE_APPLICATION_CREDENTIALS"].clone(),
    );
    let body = client
        .ok(&[
            "curl",
            &vars["IAP_EMULATOR_APP_URL"],
            "--audience",
            &vars["IAP_EMULATOR_AUDIENCE"],
        ])
        .await;
    assert!(body.contains("iap-emulator-runner@"), "{body}");

    interrupt(child.id().unwrap());
    let status = tokio::time::timeout(common::COMMAND_TIMEOUT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    assert!(
        !std::path::Path::new(&vars["GOOGLE_APPLICATION_CREDENTIALS"]).exists(),
        "key file removed on exit"
    );
}
