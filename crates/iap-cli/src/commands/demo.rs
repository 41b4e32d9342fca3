//! `iap demo`: the whole toolkit against an in-process emulator.

use crate::failure::{CliResult, Failure};

/// Runs `iap demo`.
pub async fn run() -> CliResult {
    Err(Failure::new("not yet"))
}
