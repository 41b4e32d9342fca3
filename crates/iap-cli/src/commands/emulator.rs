//! `iap emulator`: run the IAP emulator and print its `export` lines.

use crate::cli::EmulatorArgs;
use crate::failure::{CliResult, Failure};

/// Runs `iap emulator` until Ctrl-C.
pub async fn run(_args: EmulatorArgs) -> CliResult {
    Err(Failure::new("not yet"))
}
