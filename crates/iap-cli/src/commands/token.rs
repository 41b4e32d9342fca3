//! `iap token`: print an ID token, its claims, or a header line.

use std::io::Write as _;
use std::time::SystemTime;

use serde_json::json;

use crate::cli::{TokenArgs, TokenFormat};
use crate::credentials;
use crate::failure::{CliResult, Failure};
use crate::output;

/// Runs `iap token`.
pub async fn run(args: TokenArgs) -> CliResult {
    let audience = match (&args.audience, &args.url) {
        (Some(aud), _) => iap_token::Audience::new(aud),
        (None, Some(url)) => super::audience_for(None, url).await?,
        (None, None) => return Err(Failure::new("pass --audience AUD or --url URL").with_code(2)),
    };
    let creds = credentials::resolve(&args.creds).await?;
    let token = creds.source.id_token(&audience).await?;
    let text = match args.format {
        TokenFormat::Token => token.as_str().to_owned(),
        TokenFormat::Header => format!("Authorization: Bearer {}", token.as_str()),
        TokenFormat::Json => {
            let value = json!({
                "token": token.as_str(),
                "claims": output::claims_json(token.as_str()),
                "expires_at": output::rfc3339(token.expires_at()),
                "expires_in": token.remaining(SystemTime::now()).as_secs(),
                "audience": audience.as_str(),
                "credentials": creds.origin.to_string(),
            });
            serde_json::to_string_pretty(&value).unwrap_or_default()
        }
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}").and_then(|()| stdout.flush())?;
    Ok(())
}
