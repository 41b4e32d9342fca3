//! `iap doctor URL`: one request to an IAP app, walked the way a user
//! debugging a refusal would, each step on its own line:
//!
//! 1. which credential was found and where;
//! 2. which audience was used and how it was found;
//! 3. the token's claims (`aud`, `email`, issuer, `exp`, lifetime left);
//! 4. what IAP answered and, read from IAP's reason, what to change.
//!
//! Exit 0 when the request got through IAP (whatever the app itself
//! answered), 1 otherwise. The token itself is never printed.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header;
use iap_token::policy::IAP_GENERATED_HEADER;
use iap_token::{Audience, IdToken};
use url::Url;

use crate::cli::DoctorArgs;
use crate::credentials::{self, Kind, Resolved};
use crate::failure::{CliResult, Failure, describe};

/// Runs `iap doctor`.
pub async fn run(args: DoctorArgs) -> CliResult {
    let url = Url::parse(&args.url)
        .map_err(|e| Failure::new(format!("{:?} is not a URL ({e})", args.url)).with_code(2))?;
    let mut out = Report::default();
    out.line(format!("Checking {url}"));

    // 1. The credential.
    let creds = match credentials::resolve(&args.auth.creds).await {
        Ok(creds) => creds,
        Err(failure) => {
            out.step("credentials", format!("none usable: {failure}"));
            out.todo(
                "pass --credentials FILE, set GOOGLE_APPLICATION_CREDENTIALS, run `iap login`, \
                 or run on Google Cloud (metadata server)",
            );
            out.print();
            return Err(Failure::new("no usable credentials"));
        }
    };
    out.step("credentials", describe_credentials(&creds));

    // 2. The audience, and how it was found.
    let (audience, how) = match audience(&creds, args.auth.audience.as_deref(), &url).await {
        Ok(found) => found,
        Err(failure) => {
            out.step("audience", format!("not found: {failure}"));
            out.todo("pass --audience AUD (the app's IAP OAuth client ID)");
            out.print();
            return Err(Failure::new("cannot tell which audience to use"));
        }
    };
    out.step("audience", format!("{audience} ({how})"));

    // 3. The token and its claims.
    let token = match creds.source.id_token(&audience).await {
        Ok(token) => token,
        Err(err) => {
            let failure = Failure::from(err);
            out.step("token", format!("not obtained: {failure}"));
            out.print();
            return Err(Failure::new("cannot obtain a token"));
        }
    };
    out.step("token", describe_token(&token));

    // 4. IAP's answer.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("iap/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Failure::new(format!("cannot set up the HTTP client: {}", describe(&e))))?;
    let name = if args.auth.proxy_authorization {
        header::PROXY_AUTHORIZATION
    } else {
        header::AUTHORIZATION
    };
    let response = match client
        .get(url.clone())
        .header(name, token.header_value().clone())
        .send()
        .await
    {
        Ok(response) => response,
        Err(e) => {
            out.step("IAP", format!("no answer: {}", describe(&e)));
            out.todo("check that the URL is right and reachable from here");
            out.print();
            return Err(Failure::new(format!("{url} did not answer")));
        }
    };
    let status = response.status();
    let by_iap = response
        .headers()
        .get(IAP_GENERATED_HEADER)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    let location = response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.text().await.unwrap_or_default();
    let refused = by_iap && (status.is_client_error() || status.is_redirection());
    if !refused {
        out.step(
            "IAP",
            format!(
                "let the request through: the app answered {status}{}",
                if by_iap { " (through IAP)" } else { "" }
            ),
        );
        out.line("OK: the request got through IAP.");
        out.print();
        return Ok(());
    }
    let reason = first_line(&body);
    out.step(
        "IAP",
        match (&location, reason.is_empty()) {
            (Some(to), _) => format!("refused with {status}, redirecting to sign-in ({to})"),
            (None, true) => format!("refused with {status}"),
            (None, false) => format!("refused with {status}: {reason}"),
        },
    );
    for advice in advise(&creds, &token, &audience, &url, status.as_u16(), &body).await {
        out.todo(advice);
    }
    out.print();
    Err(Failure::new(format!("IAP refused the request ({status})")))
}

/// Lines on stdout, built first so that an early return prints them all.
#[derive(Default)]
struct Report {
    text: String,
}

impl Report {
    fn line(&mut self, line: impl AsRef<str>) {
        let _ = writeln!(self.text, "{}", line.as_ref());
    }

    fn step(&mut self, what: &str, detail: impl AsRef<str>) {
        let _ = writeln!(self.text, "  {what:<12} {}", detail.as_ref());
    }

    fn todo(&mut self, advice: impl AsRef<str>) {
        let _ = writeln!(self.text, "  {:<12} {}", "to do", advice.as_ref());
    }

    fn print(&self) {
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(self.text.as_bytes());
        let _ = stdout.flush();
    }
}

fn describe_credentials(creds: &Resolved) -> String {
    let what = match &creds.kind {
        Kind::IdToken => "Google-signed ID tokens".to_owned(),
        Kind::SelfSignedKey => "service-account JWTs signed with the key file".to_owned(),
        Kind::SignJwt(email) => format!("service-account JWTs of {email}, signed by IAM signJwt"),
        Kind::Static => "a token obtained elsewhere, sent as is".to_owned(),
    };
    format!("{what}, from {}", creds.origin)
}

/// The audience the request gets, and a phrase saying how it was found.
async fn audience(
    creds: &Resolved,
    given: Option<&str>,
    url: &Url,
) -> CliResult<(Audience, String)> {
    if let Some(aud) = given {
        return Ok((Audience::new(aud), "given with --audience".into()));
    }
    if let Some(aud) = &creds.implied_audience {
        let how = match creds.kind {
            Kind::Static => "the token's own `aud`: a token obtained elsewhere is sent as is",
            _ => "the OAuth client's own ID: --no-audience-param sends no audience",
        };
        return Ok((aud.clone(), how.into()));
    }
    if matches!(creds.kind, Kind::SelfSignedKey | Kind::SignJwt(_)) {
        return Ok((
            iap_token::AudiencePattern::host_of(url).audience(),
            "https://HOST/* of the URL, for a service-account JWT".into(),
        ));
    }
    let aud = super::audience_for(None, url.as_str()).await?;
    Ok((
        aud,
        "discovered: the client_id of IAP's sign-in redirect".into(),
    ))
}

fn describe_token(token: &IdToken) -> String {
    let claims = token.claims();
    let now = SystemTime::now();
    let exp = UNIX_EPOCH + Duration::from_secs(claims.exp.min(u64::from(u32::MAX) * 4));
    let left = match exp.duration_since(now) {
        Ok(left) => format!("{}s left", left.as_secs()),
        Err(e) => format!("EXPIRED {}s ago", e.duration().as_secs()),
    };
    let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
    // A service-account JWT names its account in `iss`/`sub` and has no `email`.
    let who = match (&claims.email, &claims.iss) {
        (None, Some(iss)) if iss.contains('@') => format!("sub={}", show(&claims.sub)),
        _ => format!("email={}", show(&claims.email)),
    };
    format!(
        "aud={} {who} iss={} exp={} ({left})",
        show(&claims.aud),
        show(&claims.iss),
        crate::output::rfc3339(exp),
    )
}

fn first_line(body: &str) -> String {
    body.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect()
}

/// What to change, read from IAP's reason.
async fn advise(
    creds: &Resolved,
    token: &IdToken,
    audience: &Audience,
    url: &Url,
    status: u16,
    body: &str,
) -> Vec<String> {
    let reason = body.to_ascii_lowercase();
    let claims = token.claims();
    let service_account_jwt = matches!(creds.kind, Kind::SelfSignedKey | Kind::SignJwt(_))
        || claims.iss.as_deref().is_some_and(|iss| iss.contains('@'));
    let mut advice = Vec::new();
    if reason.contains("google-managed") {
        let desktop = claims
            .azp
            .clone()
            .filter(|azp| azp.ends_with(".apps.googleusercontent.com"));
        advice.push(match desktop {
            Some(client) => format!(
                "the app is on a Google-managed OAuth client: ordinary ID tokens pass only for allowlisted clients. \
                 Either add the OAuth client {client} to the app's programmatic-access allowlist (IAP settings, \
                 accessSettings.oauthSettings.programmaticClients) and run with --no-audience-param, \
                 or send a service-account JWT: add --self-signed"
            ),
            None => "the app is on a Google-managed OAuth client: ordinary ID tokens pass only for allowlisted clients. \
                 Either pass --audience with a client ID on the app's programmatic-access allowlist (IAP settings, \
                 accessSettings.oauthSettings.programmaticClients), or send a service-account JWT: add --self-signed"
                .to_owned(),
        });
    } else if reason.contains("audience") {
        let covers =
            iap_token::AudiencePattern::parse(audience.as_str()).is_ok_and(|p| p.covers(url));
        if service_account_jwt && covers {
            advice.push(format!(
                "the JWT's aud `{audience}` covers {url}, but IAP refuses it: the app may expect another host \
                 (its public URL behind a load balancer), or may not accept path wildcards; try the exact URL"
            ));
        } else if service_account_jwt {
            advice.push(format!(
                "the JWT's aud `{audience}` does not cover {}: use https://HOST/* of the URL (the default), \
                 the exact URL, or a prefix https://HOST/PREFIX/* above its path",
                url.path()
            ));
        } else {
            match iap_token::discovery::discover_audience(url.as_str()).await {
                Ok(iap_client) if iap_client != *audience => advice.push(format!(
                    "the token is for `{audience}`, but the app's IAP client ID is `{iap_client}`: pass --audience {iap_client} \
                     (or have `{audience}` added to the app's programmatic-access allowlist)"
                )),
                _ => advice.push(format!(
                    "the token is for `{audience}`, which the app does not accept: pass --audience with the app's IAP \
                     OAuth client ID, or have this client added to the app's programmatic-access allowlist"
                )),
            }
        }
    } else if reason.contains("email") {
        advice.push(
            "the token has no `email` claim: mint it with the email included (metadata server: `format=full`; \
             IAM generateIdToken: `includeEmail: true`; iap-token always asks for both). A token obtained elsewhere \
             must be minted that way"
                .into(),
        );
    } else if reason.contains("expired") {
        let minted_now = !matches!(creds.kind, Kind::Static);
        advice.push(if minted_now {
            "IAP says the token expired although it was just minted: the clock here or IAP's is off (clock skew). \
             Sync this machine's clock (NTP) and try again"
                .into()
        } else {
            "the token expired: obtain a fresh one (write it to the --token-file, or pipe it to --token -); if it \
             was fresh, check this machine's clock (clock skew)"
                .into()
        });
    } else if reason.contains("signature") || reason.contains("parse") || reason.contains("issuer")
    {
        advice.push(
            "IAP cannot verify the token: it must be a Google-signed ID token or a JWT signed by a service \
             account's own key; check where the token comes from"
                .into(),
        );
    } else if status == 403 {
        let who = claims
            .email
            .clone()
            .or_else(|| claims.iss.clone().filter(|_| service_account_jwt))
            .unwrap_or_else(|| "the principal".into());
        advice.push(format!(
            "IAP accepted the token but {who} may not use the app: grant it roles/iap.httpsResourceAccessor on the app"
        ));
    } else if (300..400).contains(&status) {
        advice.push("IAP wants a browser sign-in: the token was not recognised; check --proxy-authorization and the URL".into());
    } else {
        advice.push("see IAP's answer above".into());
    }
    advice
}
