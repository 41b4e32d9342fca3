//! One module per command.

pub mod curl;
pub mod demo;
pub mod emulator;
pub mod login;
pub mod proxy;
pub mod token;

use iap_token::Audience;

use crate::failure::CliResult;

/// The audience given, or the one IAP's sign-in redirect for `url` names.
pub async fn audience_for(given: Option<&str>, url: &str) -> CliResult<Audience> {
    match given {
        Some(aud) => Ok(Audience::new(aud)),
        None => {
            let aud = iap_token::discovery::discover_audience(url)
                .await
                .map_err(|e| {
                    crate::failure::Failure::from(e)
                        .context("cannot find the audience (pass --audience AUD)")
                })?;
            tracing::info!(audience = %aud, "discovered the IAP audience");
            Ok(aud)
        }
    }
}
