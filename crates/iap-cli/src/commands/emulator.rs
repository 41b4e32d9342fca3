//! `iap emulator`: run the IAP emulator and print its `export` lines.
//!
//! The same process as the emulator's own binary (`iap-emulator`), both
//! built on [`iap_emulator::standalone`]: the metadata host, a
//! service-account key file (in a private temporary folder removed on exit),
//! the emulator's URL, the gated echo app's URL and audience, and the JWKS
//! URL. With `--front URL [--as EMAIL]` the gate also stands in front of
//! a local app, so a developer runs it behind a local IAP.
//! `eval "$(iap emulator &)"`-style scripts, or a parent process reading
//! stdout, point clients at it; then it serves until Ctrl-C or SIGTERM.

use std::io::Write as _;

use iap_emulator::standalone::{Options, Standalone, StandaloneError, shutdown_signal};

use crate::failure::{CliResult, Failure};

/// Runs `iap emulator` until Ctrl-C.
pub async fn run(options: Options) -> CliResult {
    let options_front = options.front.clone();
    let emulator = Standalone::start(&options).await.map_err(|e| {
        let hint = match e {
            StandaloneError::Start(_) => ": choose another address with --listen",
            StandaloneError::Front { .. } => ": choose another address with --front-listen",
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
    if let (Some(front), Some(target)) = (emulator.front(), &options_front) {
        let who = match front.signed_in_as() {
            Some(email) => format!("; requests without a token pass as {email}"),
            None => String::new(),
        };
        eprintln!(
            "iap emulator: IAP in front of {target} at {}{who}",
            front.url()
        );
    }
    emulator.serve_until(shutdown).await;
    eprintln!("iap emulator: stopped");
    Ok(())
}
