//! What the examples share: the emulator standing in for Google.

use iap_emulator::Emulator;

/// Starts the emulator and points Application Default Credentials at it,
/// as a key file would on your machine: a key of one of its service
/// accounts becomes `GOOGLE_APPLICATION_CREDENTIALS`, so
/// `IapAuth::for_app` finds it. The key lives in the returned directory.
///
/// On Google Cloud (the metadata server), with a key file of your own, or
/// after `gcloud auth application-default login`, skip this: `for_app`
/// finds those credentials by itself.
pub async fn emulator_as_google()
-> Result<(Emulator, tempfile::TempDir), Box<dyn std::error::Error + Send + Sync>> {
    let emulator = Emulator::start().await?;
    let dir = tempfile::tempdir()?;
    let key_file = dir.path().join("key.json");
    emulator
        .create_service_account("example-runner")
        .await?
        .write_key_file(&key_file)?;
    // SAFETY: nothing else reads the environment meanwhile: the emulator is
    // idle and the example has made no request yet.
    unsafe { std::env::set_var("GOOGLE_APPLICATION_CREDENTIALS", &key_file) };
    Ok((emulator, dir))
}
