//! `iap login` / `iap logout`: the desktop loopback flow, and forgetting it.

use crate::cli::LoginArgs;
use crate::config;
use crate::failure::{CliResult, Failure};

/// Runs `iap login`.
pub async fn run(_args: LoginArgs) -> CliResult {
    Err(Failure::new("not yet"))
}

/// Runs `iap logout`: removes the saved credentials.
pub fn logout() -> CliResult {
    let (removed, path) = config::remove_credentials()?;
    if removed {
        eprintln!("removed {}", path.display());
    } else {
        eprintln!("not logged in ({} does not exist)", path.display());
    }
    Ok(())
}
