//! `iap verify`: check one `x-goog-iap-jwt-assertion`, as a service behind
//! IAP would, with `iap-verify`.
//!
//! Exit 0 with the identity as JSON on stdout (`email`, `sub`, `aud`, `exp`,
//! and `hd` when present); exit 1 with one `error:` line that starts with
//! the failed check (`expired`, `wrong audience`, `bad signature`,
//! `unknown key`, `wrong algorithm`, `wrong issuer`, `malformed`).

use std::io::{Read as _, Write as _};

use iap_verify::IapVerifier;
use serde_json::json;

use crate::cli::VerifyArgs;
use crate::failure::{CliResult, Failure};

/// Runs `iap verify`.
pub async fn run(args: VerifyArgs) -> CliResult {
    let mut builder = IapVerifier::builder();
    for audience in &args.audience {
        builder = builder.audience(audience);
    }
    if let Some(url) = &args.jwks_url {
        builder = builder.jwks_url(url);
    }
    let verifier = builder.build().map_err(|e| Failure::new(e.to_string()))?;
    let assertion = match args.assertion.as_deref() {
        None | Some("-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| Failure::from(e).context("reading the assertion from stdin"))?;
            text
        }
        Some(given) => given.to_owned(),
    };
    let assertion = assertion.trim();
    if assertion.is_empty() {
        return Err(Failure::new(
            "malformed: no assertion given: pass it as an argument, or on stdin with `-`",
        ));
    }
    let identity = verifier
        .verify(assertion)
        .await
        .map_err(|e| Failure::new(e.to_string()))?;
    let exp = identity
        .expires_at()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut out = json!({
        "email": identity.email(),
        "sub": identity.subject(),
        "aud": identity.audience(),
        "exp": exp,
    });
    if let Some(hd) = identity.hosted_domain() {
        out["hd"] = json!(hd);
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{out}")?;
    stdout.flush()?;
    Ok(())
}
