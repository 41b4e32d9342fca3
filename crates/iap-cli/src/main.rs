//! `iap`: call apps behind Google Cloud Identity-Aware Proxy from a terminal.
//!
//! Commands: `token`, `curl`, `login` / `logout`, `proxy`, `verify`, `doctor`,
//! `emulator` and `demo` (see `iap --help`).
//!
//! Exit codes: 0 success; 1 failure, with one line on stderr naming the cause
//! and what to do; 2 usage error; 22 for `iap curl -f` on an HTTP error.
//!
//! Credentials, first match wins: `--credentials FILE`;
//! `$GOOGLE_APPLICATION_CREDENTIALS`; the credentials saved by `iap login`;
//! gcloud's application default credentials; the metadata server. The saved
//! login sits after the environment variable (an explicit choice for this
//! shell) and before gcloud's file (a machine-wide default that `iap login`
//! was run to override for IAP). `--impersonate-service-account` wraps
//! whichever credential was found.

mod browser;
mod cli;
mod commands;
mod config;
mod credentials;
mod failure;
mod output;
mod tls;

use std::process::ExitCode;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command};
use crate::failure::{CliResult, Failure};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Usage errors exit 2; --help and --version exit 0.
        Err(e) => e.exit(),
    };
    init_logging(cli.verbose);
    if let Err(failure) = tls::init(cli.cacert.as_deref()) {
        return failure.report();
    }
    if matches!(cli.command, Command::Demo) {
        commands::demo::prepare_environment();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Failure::new(format!("cannot start the async runtime: {e}")).report(),
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

async fn run(command: Command) -> CliResult {
    match command {
        Command::Token(args) => commands::token::run(args).await,
        Command::Curl(args) => commands::curl::run(args).await,
        Command::Login(args) => commands::login::run(args).await,
        Command::Logout => commands::login::logout(),
        Command::Proxy(args) => commands::proxy::run(args).await,
        Command::Verify(args) => commands::verify::run(args).await,
        Command::Emulator(args) => commands::emulator::run(args).await,
        Command::Demo => commands::demo::run().await,
        Command::Doctor(args) => commands::doctor::run(args).await,
    }
}

/// Logs go to stderr. Default: warnings, plus the proxy's request lines;
/// `-v` info, `-vv` debug, `-vvv` trace; `RUST_LOG` overrides all of it.
fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn,iap::proxy=info",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(verbose > 0)
        .try_init();
}
