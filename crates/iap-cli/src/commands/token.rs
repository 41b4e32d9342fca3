//! `iap token`: print an ID token, its claims, or a header line.

use std::io::Write as _;
use std::time::SystemTime;

use iap_token::policy::Placement;
use serde_json::json;
use url::Url;

use crate::cli::{TokenArgs, TokenFormat};
use crate::credentials;
use crate::failure::{CliResult, Failure};
use crate::output;

/// Runs `iap token`.
pub async fn run(args: TokenArgs) -> CliResult {
    let creds = credentials::resolve(&args.creds).await?;
    let (token, audience) = match (&args.audience, &args.url) {
        (Some(aud), _) => {
            let audience = iap_token::Audience::new(aud);
            let token = tokio::time::timeout(creds.deadline, creds.source.id_token(&audience))
                .await
                .map_err(|_| {
                    let endpoint = creds
                        .source
                        .endpoint()
                        .unwrap_or_else(|| "the token endpoint".into());
                    Failure::new(format!(
                        "no ID token for {audience} within --timeout {} s: {endpoint} did not answer \
                         in time ({})",
                        creds.deadline.as_secs(),
                        creds.origin
                    ))
                })??;
            (token, audience)
        }
        (None, Some(url)) => {
            let url = Url::parse(url).map_err(|e| {
                Failure::new(format!("--url {url:?} is not a URL ({e})")).with_code(2)
            })?;
            let (auth, _) = super::auth_for(&creds, None, &url, Placement::Authorization).await?;
            let uri: http::Uri = url.as_str().parse().map_err(|e| {
                Failure::new(format!("--url {url} is not an HTTP URL ({e})")).with_code(2)
            })?;
            let token = auth
                .token_for(&uri)
                .await?
                .ok_or_else(|| Failure::new(format!("no token applies to {url}")))?;
            let audience = iap_token::Audience::new(token.claims().aud.clone().unwrap_or_default());
            (token, audience)
        }
        (None, None) => return Err(Failure::new("pass --audience AUD or --url URL").with_code(2)),
    };
    if token.remaining(SystemTime::now()).is_zero() {
        return Err(Failure::new(format!(
            "the ID token for {audience} has already expired (exp {}, {}): refusing to print it; \
             the system clock may be wrong (clock skew): check it (e.g. `timedatectl`), or the token \
             source handed out a stale token",
            token.claims().exp,
            output::rfc3339(token.expires_at()),
        ))
        .with_code(1));
    }
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
