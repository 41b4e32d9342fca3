//! The emulator as a standalone process.
//!
//! Prints `export NAME=value` lines for a shell (`eval "$(iap-emulator)"`
//! from a script that backgrounds it, or read by a parent process), flushes
//! stdout, then serves until Ctrl-C or SIGTERM. The minted service-account
//! key lives in a private temporary directory removed on exit.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use iap_emulator::Emulator;

/// A local emulator of Google identity and Identity-Aware Proxy.
#[derive(Parser, Debug)]
#[command(name = "iap-emulator", version)]
struct Args {
    /// Address of the main server (Google's endpoints, metadata server, control API).
    #[arg(long, default_value = "127.0.0.1:0", env = "IAP_EMULATOR_LISTEN")]
    listen: SocketAddr,
    /// Also write one ADC file of every type into this directory (exported as
    /// IAP_EMULATOR_ADC_DIR).
    #[arg(long)]
    adc_dir: Option<PathBuf>,
    /// Lifetime of minted tokens, in seconds.
    #[arg(long, default_value_t = 3600)]
    token_lifetime: u64,
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

fn private_dir() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "iap-emulator-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(&dir)?;
    Ok(dir)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let args = &args;
    let emu = Emulator::builder()
        .listen(args.listen)
        .token_lifetime(std::time::Duration::from_secs(args.token_lifetime))
        .start()
        .await?;
    let dir = private_dir()?;
    let result = async {
        let sa = emu.create_service_account("iap-emulator-runner").await?;
        let key_path = dir.join("service-account.json");
        sa.write_key_file(&key_path)?;
        if let Some(adc_dir) = &args.adc_dir {
            emu.write_adc_files(adc_dir).await?;
        }
        let app = emu.app();
        let mut exports = vec![
            ("GCE_METADATA_HOST", emu.metadata_host()),
            ("GCE_METADATA_IP", emu.metadata_host()),
            (
                "GOOGLE_APPLICATION_CREDENTIALS",
                key_path.to_string_lossy().into_owned(),
            ),
            ("IAP_EMULATOR_URL", emu.url()),
            ("IAP_EMULATOR_APP_URL", app.url().to_string()),
            ("IAP_EMULATOR_AUDIENCE", app.client_id().to_owned()),
            ("IAP_EMULATOR_JWKS_URL", emu.jwks_url()),
        ];
        if let Some(adc_dir) = &args.adc_dir {
            let adc_dir = std::path::absolute(adc_dir).unwrap_or_else(|_| adc_dir.clone());
            exports.push((
                "IAP_EMULATOR_ADC_DIR",
                adc_dir.to_string_lossy().into_owned(),
            ));
        }
        let mut out = std::io::stdout().lock();
        for (name, value) in exports {
            writeln!(out, "export {name}={}", shell_quote(&value))?;
        }
        out.flush()?;
        drop(out);
        eprintln!(
            "iap-emulator: serving on {} (service account {}); Ctrl-C to stop",
            emu.url(),
            sa.email()
        );
        shutdown_signal().await;
        Ok::<(), Box<dyn std::error::Error>>(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("iap-emulator: cannot start the tokio runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iap-emulator: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
