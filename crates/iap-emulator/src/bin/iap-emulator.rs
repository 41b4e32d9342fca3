//! The emulator as a standalone process.
//!
//! Prints `export NAME=value` lines for a shell (`eval "$(iap-emulator)"`
//! from a script that backgrounds it, or read by a parent process), flushes
//! stdout, then serves until Ctrl-C or SIGTERM. The minted service-account
//! key lives in a private temporary directory removed on exit. See
//! [`iap_emulator::standalone`].

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;
use iap_emulator::standalone::{self, Options, Standalone};

/// A local emulator of Google identity and Identity-Aware Proxy.
#[derive(Parser, Debug)]
#[command(name = "iap-emulator", version)]
struct Args {
    #[command(flatten)]
    options: Options,
}

async fn run(options: Options) -> Result<(), Box<dyn std::error::Error>> {
    let emulator = Standalone::start(&options).await?;
    let shutdown = standalone::shutdown_signal();
    let mut out = std::io::stdout().lock();
    out.write_all(emulator.export_lines().as_bytes())?;
    out.flush()?;
    drop(out);
    eprintln!(
        "iap-emulator: serving on {} (service account {}); Ctrl-C to stop",
        emulator.emulator().url(),
        emulator.service_account().email()
    );
    emulator.serve_until(shutdown).await;
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("iap-emulator: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args.options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iap-emulator: {e}");
            ExitCode::FAILURE
        }
    }
}
