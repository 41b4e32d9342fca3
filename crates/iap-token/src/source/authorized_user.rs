//! User credentials (`type: "authorized_user"`): a desktop OAuth client and
//! a refresh token, as written by `gcloud auth application-default login`
//! or `iap login`.
//!
//! An ID token comes from the refresh grant (see `docs/user-credentials.md`). By default
//! it sends `audience=<IAP client ID>`, so the token's `aud` is the IAP
//! client, as IAP's desktop-app flow wants. For a desktop client on the
//! app's programmatic-access allowlist, [`AuthorizedUserSource::with_send_audience`]
//! turns that off: the token's `aud` is then the desktop client ID, whatever
//! audience is asked for.
//!
//! ```
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let emu = iap_emulator::Emulator::start().await?;
//! # let dir = tempfile::tempdir()?;
//! # let credentials_file = dir.path().join("credentials.json");
//! # emu.create_app().client_id("123-abc.apps.googleusercontent.com").echo().await?;
//! # let client = emu.create_desktop_client(emu.project_id());
//! # std::fs::write(&credentials_file, emu.create_user(&client, "dev@example.com").authorized_user_json())?;
//! use iap_token::{Audience, TokenSource, source::authorized_user::AuthorizedUserSource};
//!
//! let source = AuthorizedUserSource::from_file(&credentials_file)?; // e.g. "credentials.json"
//! let token = source.id_token(&Audience::new("123-abc.apps.googleusercontent.com")).await?;
//! assert_eq!(token.claims().email.as_deref(), Some("dev@example.com"));
//! # Ok(()) }
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use url::Url;

use crate::access_token::{AccessToken, AccessTokenAnswer, AccessTokenSource};
use crate::credentials_json::CredentialsJson;
use crate::source::service_account::GOOGLE_TOKEN_URI;
use crate::source::{BoxFuture, TokenSource};
use crate::transport::{Transport, endpoint_name};
use crate::{Audience, Error, IdToken, Result};

/// User credentials: a desktop OAuth client and a refresh token. `Debug`
/// never shows the client secret or the refresh token.
#[derive(Clone)]
pub struct AuthorizedUser {
    client_id: String,
    client_secret: String,
    refresh_token: String,
    token_uri: Url,
    quota_project_id: Option<String>,
    account: Option<String>,
    universe_domain: Option<String>,
    path: Option<PathBuf>,
}

impl AuthorizedUser {
    /// Credentials from their parts, with Google's token endpoint.
    pub fn new(
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        refresh_token: impl Into<String>,
    ) -> Self {
        AuthorizedUser {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            refresh_token: refresh_token.into(),
            token_uri: Url::parse(GOOGLE_TOKEN_URI).expect("a valid constant URL"),
            quota_project_id: None,
            account: None,
            universe_domain: None,
            path: None,
        }
    }

    /// Reads and parses an `authorized_user` file. Errors name the file and the field.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_credentials_json(&CredentialsJson::read(path.as_ref())?)
    }

    /// Parses the JSON text of an `authorized_user` file.
    pub fn from_json(json: impl AsRef<[u8]>) -> Result<Self> {
        Self::from_credentials_json(&CredentialsJson::parse(json.as_ref(), None)?)
    }

    pub(crate) fn from_credentials_json(json: &CredentialsJson) -> Result<Self> {
        json.expect_type("authorized_user")?;
        let relogin = |field| {
            json.required_or(
                field,
                "sign in again with `iap login` or `gcloud auth application-default login`",
            )
        };
        Ok(AuthorizedUser {
            client_id: relogin("client_id")?.into(),
            client_secret: relogin("client_secret")?.into(),
            refresh_token: relogin("refresh_token")?.into(),
            token_uri: json.url_or("token_uri", GOOGLE_TOKEN_URI)?,
            quota_project_id: json.optional("quota_project_id")?.map(Into::into),
            account: json.optional("account")?.map(Into::into),
            universe_domain: json.optional("universe_domain")?.map(Into::into),
            path: json.path().map(Into::into),
        })
    }

    /// Uses `token_uri` instead of the file's (or Google's).
    pub fn with_token_uri(mut self, token_uri: Url) -> Self {
        self.token_uri = token_uri;
        self
    }

    /// Records the signed-in account's email (`account`).
    pub fn with_account(mut self, account: impl Into<String>) -> Self {
        self.account = Some(account.into());
        self
    }

    /// The desktop OAuth client ID.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The token endpoint.
    pub fn token_uri(&self) -> &Url {
        &self.token_uri
    }

    /// The signed-in account's email, when recorded.
    pub fn account(&self) -> Option<&str> {
        self.account.as_deref()
    }

    /// The quota project, when set.
    pub fn quota_project_id(&self) -> Option<&str> {
        self.quota_project_id.as_deref()
    }

    /// The file the credentials came from.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The credentials as the JSON of an `authorized_user` file. It holds
    /// the client secret and the refresh token: write it only with
    /// [`AuthorizedUser::save`] or an equally careful writer.
    pub fn to_json(&self) -> String {
        let mut obj = serde_json::Map::new();
        let mut put = |k: &str, v: &str| {
            obj.insert(k.into(), serde_json::Value::String(v.into()));
        };
        put("type", "authorized_user");
        put("client_id", &self.client_id);
        put("client_secret", &self.client_secret);
        put("refresh_token", &self.refresh_token);
        put("token_uri", self.token_uri.as_str());
        for (k, v) in [
            ("quota_project_id", &self.quota_project_id),
            ("account", &self.account),
            ("universe_domain", &self.universe_domain),
        ] {
            if let Some(v) = v {
                put(k, v);
            }
        }
        serde_json::to_string_pretty(&serde_json::Value::Object(obj)).unwrap_or_default() + "\n"
    }

    /// Writes the credentials to `path` atomically with mode 0600 (a
    /// temporary file in the same folder, renamed over it): an existing
    /// file is replaced only by a complete new one.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::private_file::write_private_file(path.as_ref(), self.to_json().as_bytes())
    }

    fn origin(&self) -> String {
        match &self.path {
            Some(p) => format!("the refresh token in {}", p.display()),
            None => "the refresh token".into(),
        }
    }
}

impl fmt::Debug for AuthorizedUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizedUser")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .field("token_uri", &self.token_uri.as_str())
            .field("account", &self.account)
            .field("path", &self.path)
            .finish()
    }
}

/// ID tokens (and access tokens) from user credentials. See the
/// [module docs](self).
#[derive(Clone, Debug)]
pub struct AuthorizedUserSource {
    user: Arc<AuthorizedUser>,
    send_audience: bool,
    transport: Transport,
}

impl AuthorizedUserSource {
    /// A source refreshing `user`'s token, sending the audience.
    pub fn new(user: AuthorizedUser) -> Self {
        AuthorizedUserSource {
            user: Arc::new(user),
            send_audience: true,
            transport: Transport::default(),
        }
    }

    /// A source from an `authorized_user` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Self::new(AuthorizedUser::from_file(path)?))
    }

    /// Whether to send `audience` with the refresh grant (default: yes).
    /// Turn it off for a desktop client on the app's programmatic-access
    /// allowlist: tokens then have the desktop client ID as `aud`.
    pub fn with_send_audience(mut self, send: bool) -> Self {
        self.send_audience = send;
        self
    }

    /// Sends requests through `client` instead of the shared one (extra
    /// root certificates, a fixed proxy). Configure it not to follow
    /// redirects: token endpoints never redirect, and a redirect must not
    /// carry credentials elsewhere.
    pub fn with_http_client(mut self, client: reqwest::Client) -> Self {
        self.transport = Transport::new(client);
        self
    }

    /// The credentials.
    pub fn user(&self) -> &AuthorizedUser {
        &self.user
    }

    /// Fetches an ID token for `audience` (ignored when
    /// [`with_send_audience`](Self::with_send_audience) is off).
    pub async fn fetch_id_token(&self, audience: &Audience) -> Result<IdToken> {
        #[derive(Deserialize)]
        struct Answer {
            id_token: Option<String>,
        }
        let audience = self.send_audience.then_some(audience);
        let answer: Answer = self.refresh(audience, None).await?;
        let Some(jwt) = answer.id_token else {
            return Err(Error::Protocol {
                endpoint: endpoint_name(&self.user.token_uri),
                problem: format!(
                    "the answer has no `id_token`: {} was granted without the `openid` scope; sign in again with `iap login`",
                    self.user.origin()
                ),
            });
        };
        IdToken::parse(jwt)
    }

    /// Fetches an OAuth access token (`scopes` empty: the scopes granted at sign-in).
    pub async fn fetch_access_token(&self, scopes: &[&str]) -> Result<AccessToken> {
        let scope = scopes.join(" ");
        let scope = (!scope.is_empty()).then_some(scope.as_str());
        self.refresh::<AccessTokenAnswer>(None, scope)
            .await?
            .into_token()
    }

    async fn refresh<T: serde::de::DeserializeOwned>(
        &self,
        audience: Option<&Audience>,
        scope: Option<&str>,
    ) -> Result<T> {
        let user = &self.user;
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("client_id", user.client_id.as_str()),
            ("client_secret", user.client_secret.as_str()),
            ("refresh_token", user.refresh_token.as_str()),
        ];
        if let Some(aud) = audience {
            form.push(("audience", aud.as_str()));
        }
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        self.transport
            .post_form(&user.token_uri, &form)
            .await
            .map_err(|e| self.explain(e, audience))
    }

    fn explain(&self, err: Error, audience: Option<&Audience>) -> Error {
        let user = &self.user;
        err.with_endpoint_hint(|code, _| match code {
            "invalid_grant" => Some(format!(
                "{} was revoked or has expired: run `iap login` (or `gcloud auth application-default login`) again",
                user.origin()
            )),
            "invalid_audience" => Some(format!(
                "the audience `{}` is not an OAuth client of the desktop client `{}`'s project: use the IAP OAuth client ID \
                 of the app, or stop sending an audience if the desktop client is on the app's programmatic-access allowlist",
                audience.map(Audience::as_str).unwrap_or_default(),
                user.client_id
            )),
            "invalid_client" | "unauthorized_client" => Some(format!(
                "the OAuth client `{}` was refused: it may have been deleted, or its secret changed; sign in again",
                user.client_id
            )),
            _ => None,
        })
    }
}

impl TokenSource for AuthorizedUserSource {
    fn endpoint(&self) -> Option<String> {
        Some(crate::transport::endpoint_name(self.user.token_uri()))
    }

    fn id_token<'a>(&'a self, audience: &'a Audience) -> BoxFuture<'a, Result<IdToken>> {
        Box::pin(self.fetch_id_token(audience))
    }
}

impl AccessTokenSource for AuthorizedUserSource {
    fn access_token<'a>(&'a self, scopes: &'a [&'a str]) -> BoxFuture<'a, Result<AccessToken>> {
        Box::pin(self.fetch_access_token(scopes))
    }

    fn principal(&self) -> Option<String> {
        self.user.account().map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_errors_hold_no_secret() {
        let user = AuthorizedUser::from_json(
            r#"{"type":"authorized_user","client_id":"cid","client_secret":"s3cret-value","refresh_token":"1//refresh-value"}"#,
        )
        .unwrap();
        let dbg = format!("{user:?} {:?}", AuthorizedUserSource::new(user.clone()));
        assert!(
            !dbg.contains("s3cret-value") && !dbg.contains("refresh-value"),
            "{dbg}"
        );
        let round = AuthorizedUser::from_json(user.to_json()).unwrap();
        assert_eq!(round.to_json(), user.to_json());
        assert_eq!(round.token_uri().as_str(), GOOGLE_TOKEN_URI);
    }

    #[test]
    fn missing_refresh_token_says_sign_in_again() {
        let err = AuthorizedUser::from_json(
            r#"{"type":"authorized_user","client_id":"c","client_secret":"s"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("field `refresh_token` is missing: sign in again"),
            "{err}"
        );
    }
}
