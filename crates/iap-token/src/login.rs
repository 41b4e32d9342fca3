//! The desktop login, as a library: a browser signs the user in to a desktop
//! OAuth client and comes back to a one-shot receiver on 127.0.0.1; the
//! code is exchanged for an ID token and a refresh token, which are saved as
//! `authorized_user` credentials (the wire facts: `docs/user-credentials.md`).
//!
//! The authorization URL carries a random `state` and a PKCE S256
//! challenge; the receiver answers the browser with a small page, refuses a
//! mismatched `state`, and gives up after a timeout. The exchange sends
//! `audience` so that the ID token is for the IAP client.
//!
//! Here the emulator's consent page stands in for Google's, and a plain GET
//! for the user's browser:
//!
//! ```
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let emu = iap_emulator::Emulator::start().await?;
//! # emu.create_app().client_id("123-abc.apps.googleusercontent.com").echo().await?;
//! # let client = emu.create_desktop_client(emu.project_id());
//! # emu.create_user(&client, "dev@example.com");
//! # let (client_id, client_secret) = (client.client_id(), client.client_secret());
//! # let dir = tempfile::tempdir()?;
//! # let credentials_file = dir.path().join("credentials.json");
//! use iap_token::{Audience, login::DesktopLogin};
//!
//! let pending = DesktopLogin::new(client_id, client_secret) // your desktop OAuth client
//!     .audience(Audience::new("123-abc.apps.googleusercontent.com"))
//! #   .auth_uri(emu.authorize_url())
//! #   .token_uri(emu.token_uri())
//!     .start()?;
//! println!("open {}", pending.authorization_url());
//! # let browser = tokio::spawn(reqwest::get(pending.authorization_url().clone()));
//! let outcome = pending.finish().await?;
//! outcome.credentials.save(&credentials_file)?; // e.g. "credentials.json"
//! # assert!(browser.await?.is_ok());
//! # assert_eq!(outcome.id_token.claims().email.as_deref(), Some("dev@example.com"));
//! # Ok(()) }
//! ```

use std::fmt;

use std::net::{Ipv4Addr, SocketAddr};

use std::time::Duration;

use base64::Engine as _;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use serde::Deserialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use url::Url;

use crate::endpoints::{GOOGLE_AUTH_URI, GOOGLE_TOKEN_URI};
use crate::source::authorized_user::AuthorizedUser;
use crate::transport::{Transport, ensure_secure};
use crate::{Audience, Error, IdToken, Result};

/// How long the receiver waits for the browser by default.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long one browser connection may take to send its request.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head the receiver reads.
const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// A desktop login to configure, then [`start`](DesktopLogin::start).
/// `Debug` never shows the client secret.
#[derive(Clone)]
pub struct DesktopLogin {
    client_id: String,
    client_secret: String,
    auth_uri: String,
    token_uri: String,
    audience: Option<Audience>,
    scopes: Vec<String>,
    port: u16,
    timeout: Duration,
    login_hint: Option<String>,
    transport: Transport,
}

impl fmt::Debug for DesktopLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DesktopLogin")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("auth_uri", &self.auth_uri)
            .field("token_uri", &self.token_uri)
            .field("audience", &self.audience)
            .field("scopes", &self.scopes)
            .field("port", &self.port)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl DesktopLogin {
    /// A login to the desktop OAuth client `client_id` (its secret is not
    /// secret for a desktop client, but is kept out of logs all the same).
    pub fn new(client_id: impl Into<String>, client_secret: impl Into<String>) -> Self {
        DesktopLogin {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            auth_uri: GOOGLE_AUTH_URI.into(),
            token_uri: GOOGLE_TOKEN_URI.into(),
            audience: None,
            scopes: vec!["openid".into(), "email".into()],
            port: 0,
            timeout: DEFAULT_TIMEOUT,
            login_hint: None,
            transport: Transport::default(),
        }
    }

    /// The IAP client ID to send as `audience` in the code exchange, so the
    /// ID token is for IAP. Without it, the token's `aud` is the desktop
    /// client ID (fine for a client on the app's programmatic allowlist).
    pub fn audience(mut self, audience: Audience) -> Self {
        self.audience = Some(audience);
        self
    }

    /// The authorization endpoint (default `https://accounts.google.com/o/oauth2/v2/auth`).
    pub fn auth_uri(mut self, uri: impl Into<String>) -> Self {
        self.auth_uri = uri.into();
        self
    }

    /// The token endpoint (default `https://oauth2.googleapis.com/token`); it is also saved
    /// in the credentials.
    pub fn token_uri(mut self, uri: impl Into<String>) -> Self {
        self.token_uri = uri.into();
        self
    }

    /// The scopes to ask for (default `openid email`; `openid` is needed
    /// for ID tokens and `email` for IAP).
    pub fn scopes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, scopes: I) -> Self {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// The loopback port to receive the browser on (default 0: any free port).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// How long to wait for the browser (default 5 minutes).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The account to suggest on the sign-in page (`login_hint`).
    pub fn login_hint(mut self, email: impl Into<String>) -> Self {
        self.login_hint = Some(email.into());
        self
    }

    /// Sends the code exchange through `client` instead of the shared one.
    /// Configure it not to follow redirects.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.transport = Transport::new(client);
        self
    }

    /// Binds the receiver on `127.0.0.1` and builds the authorization URL.
    /// Needs no runtime; [`PendingLogin::finish`] does.
    pub fn start(self) -> Result<PendingLogin> {
        let auth_uri = parse_endpoint(&self.auth_uri, "authorization endpoint")?;
        let token_uri = parse_endpoint(&self.token_uri, "token endpoint")?;
        let listener =
            std::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)))
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|e| {
                    let context = format!(
                        "cannot listen on 127.0.0.1:{} for the browser's answer",
                        self.port
                    );
                    if self.port == 0 {
                        Error::Other {
                            context,
                            source: Some(std::sync::Arc::new(e)),
                        }
                    } else {
                        // A port the user chose that is taken or not allowed.
                        Error::config(format!("{context}: {e}: choose another port, or 0 for any"))
                    }
                })?;
        let port = listener.local_addr().map_err(|e| Error::Other {
            context: "cannot read the receiver's port".into(),
            source: Some(std::sync::Arc::new(e)),
        })?;
        let redirect_uri = format!("http://127.0.0.1:{}/", port.port());
        let state = random_base64url(24)?;
        let verifier = random_base64url(48)?; // 64 characters, within RFC 7636's 43..=128
        let challenge = base64url(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()).as_ref(),
        );
        let mut url = auth_uri;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("client_id", &self.client_id)
                .append_pair("response_type", "code")
                .append_pair("scope", &self.scopes.join(" "))
                .append_pair("access_type", "offline")
                // Without a fresh consent Google sends no refresh token to a
                // client the user approved before.
                .append_pair("prompt", "consent")
                .append_pair("redirect_uri", &redirect_uri)
                .append_pair("state", &state)
                .append_pair("code_challenge", &challenge)
                .append_pair("code_challenge_method", "S256")
                .append_pair("cred_ref", "true");
            if let Some(hint) = &self.login_hint {
                q.append_pair("login_hint", hint);
            }
        }
        Ok(PendingLogin {
            login: self,
            token_uri,
            listener,
            redirect_uri,
            state,
            verifier,
            url,
        })
    }
}

fn parse_endpoint(uri: &str, what: &str) -> Result<Url> {
    let url = Url::parse(uri)
        .map_err(|e| Error::config(format!("the {what} `{uri}` is not a URL ({e})")))?;
    ensure_secure(&url)?;
    Ok(url)
}

/// A login waiting for the browser: show [`authorization_url`](Self::authorization_url)
/// to the user (or open it), then [`finish`](Self::finish).
pub struct PendingLogin {
    login: DesktopLogin,
    token_uri: Url,
    listener: std::net::TcpListener,
    redirect_uri: String,
    state: String,
    verifier: String,
    url: Url,
}

impl fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingLogin")
            .field("login", &self.login)
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

/// What a successful login yields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LoginOutcome {
    /// The ID token from the exchange (for the audience, when one was set).
    pub id_token: IdToken,
    /// The credentials to save (`account` is the token's email).
    pub credentials: AuthorizedUser,
}

impl PendingLogin {
    /// The URL to open in a browser.
    pub fn authorization_url(&self) -> &Url {
        &self.url
    }

    /// Where the browser comes back to (`http://127.0.0.1:PORT/`).
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// Waits for the browser (up to the timeout), checks `state`, and
    /// exchanges the code for tokens.
    pub async fn finish(self) -> Result<LoginOutcome> {
        let code = self.receive_code().await?;
        self.exchange(&code).await
    }

    async fn receive_code(&self) -> Result<String> {
        let listener = self
            .listener
            .try_clone()
            .and_then(tokio::net::TcpListener::from_std)
            .map_err(|e| Error::Other {
                context: "cannot use the loopback receiver".into(),
                source: Some(std::sync::Arc::new(e)),
            })?;
        let timeout = self.login.timeout;
        let wait = async {
            // Browsers open speculative connections that never send a
            // request: serve every connection concurrently, in this task.
            let mut connections = FuturesUnordered::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => connections.push(self.serve(stream)),
                        Err(e) => tracing::debug!(error = %e, "login receiver: accept failed"),
                    },
                    Some(done) = connections.next(), if !connections.is_empty() => {
                        if let Some(result) = done {
                            return result;
                        }
                    }
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.unwrap_or_else(|_| {
            Err(Error::Login(format!(
                "no answer from the browser within {} s: open the sign-in URL and complete the sign-in, then try again",
                timeout.as_secs()
            )))
        })
    }

    /// Serves one browser connection: `None` when it was not the redirect
    /// (e.g. `/favicon.ico`), else the login's outcome.
    async fn serve(&self, mut stream: TcpStream) -> Option<Result<String>> {
        let head = match tokio::time::timeout(REQUEST_READ_TIMEOUT, read_head(&mut stream)).await {
            Ok(Some(head)) => head,
            _ => return None,
        };
        let target = head.lines().next()?.split(' ').nth(1)?.to_string();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        if path != "/" {
            respond(
                &mut stream,
                "404 Not Found",
                "Not found",
                "This is the iap login receiver.",
            )
            .await;
            return None;
        }
        let mut code = None;
        let mut state = None;
        let mut error = None;
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "code" => code = Some(v.into_owned()),
                "state" => state = Some(v.into_owned()),
                "error" => error = Some(v.into_owned()),
                _ => {}
            }
        }
        if code.is_none() && error.is_none() {
            respond(
                &mut stream,
                "400 Bad Request",
                "Not a sign-in answer",
                "Waiting for the sign-in answer.",
            )
            .await;
            return None;
        }
        let outcome = if state.as_deref() != Some(self.state.as_str()) {
            Err(Error::Login(
                "the browser came back with a `state` that does not match this login (a stale or forged answer): sign in again"
                    .into(),
            ))
        } else if let Some(error) = error {
            let error: String = error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            Err(Error::Login(if error == "access_denied" {
                "access denied: the sign-in or the consent was refused in the browser (error=access_denied)".into()
            } else {
                format!("the authorization server answered error={error}")
            }))
        } else {
            code.ok_or_else(|| Error::Login("no code in the answer".into()))
        };
        match &outcome {
            Ok(_) => {
                respond(
                    &mut stream,
                    "200 OK",
                    "Signed in",
                    "You are signed in. You can close this tab and return to the terminal.",
                )
                .await
            }
            Err(e) => {
                respond(
                    &mut stream,
                    "400 Bad Request",
                    "Sign-in failed",
                    &e.to_string(),
                )
                .await
            }
        }
        Some(outcome)
    }

    async fn exchange(&self, code: &str) -> Result<LoginOutcome> {
        #[derive(Deserialize)]
        struct Answer {
            id_token: Option<String>,
            refresh_token: Option<String>,
        }
        let login = &self.login;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("client_id", login.client_id.as_str()),
            ("client_secret", login.client_secret.as_str()),
            ("code", code),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("code_verifier", self.verifier.as_str()),
        ];
        if let Some(aud) = &login.audience {
            form.push(("audience", aud.as_str()));
        }
        let answer: Answer = login.transport.post_form(&self.token_uri, &form).await.map_err(|e| {
            e.with_endpoint_hint(|code, _| match code {
                "invalid_grant" => Some("the sign-in code expired or was already used: sign in again".into()),
                "invalid_audience" => Some(format!(
                    "the audience `{}` is not an OAuth client of the desktop client's project: use the app's IAP client ID",
                    login.audience.as_ref().map(Audience::as_str).unwrap_or_default()
                )),
                "invalid_client" => Some(format!("the OAuth client `{}` or its secret was refused", login.client_id)),
                _ => None,
            })
        })?;
        let endpoint = crate::transport::endpoint_name(&self.token_uri);
        let id_token = IdToken::parse(answer.id_token.ok_or_else(|| Error::Protocol {
            endpoint: endpoint.clone(),
            problem: "the answer has no `id_token`: ask for the `openid` scope".into(),
        })?)?;
        let refresh_token = answer.refresh_token.ok_or_else(|| {
            Error::Login(
                "Google sent no refresh token: remove this app's access at https://myaccount.google.com/permissions and sign in again"
                    .into(),
            )
        })?;
        let mut credentials =
            AuthorizedUser::new(&login.client_id, &login.client_secret, refresh_token)
                .with_token_uri(self.token_uri.clone());
        if let Some(email) = &id_token.claims().email {
            credentials = credentials.with_account(email);
        }
        Ok(LoginOutcome {
            id_token,
            credentials,
        })
    }
}

/// Reads an HTTP request head (up to the blank line); `None` when the
/// connection closes first or the head is too large.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return String::from_utf8(buf).ok();
        }
        if buf.len() > MAX_REQUEST_HEAD {
            return None;
        }
    }
}

async fn respond(stream: &mut TcpStream, status: &str, title: &str, message: &str) {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body style=\"font-family:sans-serif;margin:3em\"><h1>{t}</h1><p>{m}</p></body></html>\n",
        t = escape(title),
        m = escape(message)
    );
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // The browser may already be gone; the login's outcome does not depend on it.
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn base64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn random_base64url(len: usize) -> Result<String> {
    use aws_lc_rs::rand::SecureRandom as _;
    let mut bytes = vec![0u8; len];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Other {
            context: "the system's random generator failed".into(),
            source: None,
        })?;
    Ok(base64url(&bytes))
}
