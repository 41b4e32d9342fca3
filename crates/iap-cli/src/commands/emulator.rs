//! `iap emulator`: run the IAP emulator and print its `export` lines.
//!
//! The same process as the emulator's own binary (`iap-emulator`), both
//! built on [`iap_emulator::standalone`]: the metadata host, a
//! service-account key file (in a private temporary folder removed on exit),
//! the emulator's URL, the gated echo app's URL and audience, and the JWKS
//! URL. `eval "$(iap emulator &)"`-style scripts, or a parent process reading
//! stdout, point clients at it; then it serves until Ctrl-C or SIGTERM.

use std::io::Write as _;

use iap_emulator::standalone::{Options, Standalone, StandaloneError, shutdown_signal};

use crate::failure::{CliResult, Failure};

/// Runs `iap emulator` until Ctrl-C.
pub async fn run(options: Options) -> CliResult {
    let emulator = Standalone::start(&options).await.map_err(|e| {
        let hint = match e {
            StandaloneError::Start(_) => ": choose another address with --listen",
            _ => "",
        };
        Failure::new(format!("{e}{hint}"))
    })?;
    let shutdown = shutdown_signal();
    let mut out = std::io::stdout().lock();
    out.write_all(emulator.export_lines().as_bytes())?;
    out.flush()?;
    drop(out);
    eprintln!(
        "iap emulator: serving on {} (service account {}); Ctrl-C to stop",
        emulator.emulator().url(),
        emulator.service_account().email()
    );
    emulator.serve_until(shutdown).await;
    eprintln!("iap emulator: stopped");
    Ok(())
}
