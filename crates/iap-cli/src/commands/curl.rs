//! `iap curl`: one request to an IAP app through the reqwest middleware.

use crate::cli::CurlArgs;
use crate::failure::{CliResult, Failure};

/// Runs `iap curl`.
pub async fn run(_args: CurlArgs) -> CliResult {
    Err(Failure::new("not yet"))
}
