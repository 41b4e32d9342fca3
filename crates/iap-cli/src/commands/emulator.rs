//! `iap emulator`: run the IAP emulator and print its `export` lines.
//!
//! The same lines as the emulator's own binary (`iap-emulator`): the
//! metadata host, a service-account key file (in a private temporary folder
//! removed on exit), the emulator's URL, the gated echo app's URL and
//! audience, and the JWKS URL. `eval "$(iap emulator &)"`-style scripts, or a
//! parent process reading stdout, point clients at it; then it serves until
//! Ctrl-C or SIGTERM.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use iap_emulator::Emulator;

use super::proxy::shutdown_signal;
use crate::cli::EmulatorArgs;
use crate::failure::{CliResult, Failure};

/// Runs `iap emulator` until Ctrl-C.
pub async fn run(args: EmulatorArgs) -> CliResult {
    let listen = args
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let emu = Emulator::builder()
        .listen(listen)
        .token_lifetime(Duration::from_secs(args.token_lifetime.max(1)))
        .start()
        .await
        .map_err(|e| {
            Failure::new(format!(
                "cannot start the emulator: {e}: choose another address with --listen"
            ))
        })?;
    let dir = tempfile::Builder::new()
        .prefix("iap-emulator-")
        .tempdir()
        .map_err(|e| {
            Failure::new(format!(
                "cannot create a private temporary folder for the key file: {e}"
            ))
        })?;
    let sa = emu
        .create_service_account("iap-emulator-runner")
        .await
        .map_err(|e| {
            Failure::new(format!(
                "cannot provision the emulator's service account: {e}"
            ))
        })?;
    let key_path = dir.path().join("service-account.json");
    sa.write_key_file(&key_path)
        .map_err(|e| Failure::new(format!("cannot write {}: {e}", key_path.display())))?;
    let shutdown = shutdown_signal();
    let mut out = std::io::stdout().lock();
    for (name, value) in exports(&emu, &key_path.to_string_lossy()) {
        writeln!(out, "export {name}={}", shell_quote(&value))?;
    }
    out.flush()?;
    drop(out);
    eprintln!(
        "iap emulator: serving on {} (service account {}); Ctrl-C to stop",
        emu.url(),
        sa.email()
    );
    shutdown.await;
    drop(emu);
    drop(dir);
    eprintln!("iap emulator: stopped");
    Ok(())
}

/// The variables a client needs, as `iap-emulator` prints them.
// TODO: use the emulator crate's own list once it exposes one (today it
// lives inside its binary); until then these mirror it name for name.
fn exports(emu: &Emulator, key_path: &str) -> Vec<(&'static str, String)> {
    let app = emu.app();
    vec![
        ("GCE_METADATA_HOST", emu.metadata_host()),
        ("GCE_METADATA_IP", emu.metadata_host()),
        ("GOOGLE_APPLICATION_CREDENTIALS", key_path.to_owned()),
        ("IAP_EMULATOR_URL", emu.url()),
        ("IAP_EMULATOR_APP_URL", app.url().to_string()),
        ("IAP_EMULATOR_AUDIENCE", app.client_id().to_owned()),
        ("IAP_EMULATOR_JWKS_URL", emu.jwks_url()),
    ]
}

/// Single-quotes a value for a POSIX shell when it needs it.
fn shell_quote(v: &str) -> String {
    if v.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./:@%+=,".contains(c))
    {
        v.to_owned()
    } else {
        format!("'{}'", v.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn values_are_quoted_only_when_needed() {
        assert_eq!(shell_quote("http://127.0.0.1:80/"), "http://127.0.0.1:80/");
        assert_eq!(shell_quote("/tmp/a b/it's"), r"'/tmp/a b/it'\''s'");
    }
}
