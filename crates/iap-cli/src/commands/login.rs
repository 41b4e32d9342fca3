//! `iap login` / `iap logout`: the desktop loopback flow, and forgetting it.
//!
//! The flow itself (state, PKCE, the one-shot receiver on 127.0.0.1, the code
//! exchange) is `iap_token::login`; this command shows the URL, opens the
//! browser, and saves the resulting `authorized_user` credentials in the
//! config folder (see [`crate::config`]).

use std::time::Duration;

use iap_token::Audience;
use iap_token::login::DesktopLogin;

use crate::browser;
use crate::cli::LoginArgs;
use crate::config;
use crate::failure::{CliResult, Failure};

/// Runs `iap login`.
pub async fn run(args: LoginArgs) -> CliResult {
    // Fail before the user signs in if there is nowhere to save the result.
    let path = config::credentials_path()?;
    let mut login = DesktopLogin::new(args.client_id, args.client_secret)
        .port(args.port)
        .timeout(Duration::from_secs(args.timeout.max(1)));
    if let Some(aud) = &args.audience {
        login = login.audience(Audience::new(aud));
    }
    if let Some(uri) = args.auth_uri {
        login = login.auth_uri(uri);
    }
    if let Some(uri) = args.token_uri {
        login = login.token_uri(uri);
    }
    let pending = login.start()?;
    let url = pending.authorization_url().to_string();
    if args.no_browser {
        eprintln!("Open this URL in a browser to sign in:\n\n    {url}\n");
    } else {
        eprintln!("Opening your browser to sign in. If it does not open, visit:\n\n    {url}\n");
        browser::open(&url);
    }
    eprintln!(
        "Waiting for the browser to come back to {} ...",
        pending.redirect_uri()
    );
    let outcome = pending.finish().await?;
    outcome
        .credentials
        .save(&path)
        .map_err(|e| Failure::from(e).context("signed in, but cannot save the credentials"))?;
    let who = outcome
        .id_token
        .claims()
        .email
        .as_deref()
        .unwrap_or("(no email claim)");
    eprintln!(
        "Signed in as {who}. Credentials saved to {}.",
        path.display()
    );
    eprintln!(
        "iap uses them when neither --credentials nor GOOGLE_APPLICATION_CREDENTIALS is given; `iap logout` removes them."
    );
    Ok(())
}

/// Runs `iap logout`: removes the saved credentials.
pub fn logout() -> CliResult {
    let (removed, path) = config::remove_credentials()?;
    if removed {
        eprintln!("Removed {}.", path.display());
    } else {
        eprintln!("Not logged in ({} does not exist).", path.display());
    }
    Ok(())
}
