//! Service-account key files: ID tokens by the JWT-bearer grant.
//!
//! The key signs an assertion (`iss` = `sub` = the account's email, `aud` =
//! the key's `token_uri`, `target_audience` = the IAP client ID, `iat`
//! back-dated 10 s for clock skew, `exp` = `iat` + 1 h, header `kid` = the
//! key's ID) and posts it to the key's `token_uri`, which answers
//! `{"id_token": ...}` (see `docs/service-account.md`).
//!
//! [`ServiceAccountKey::sign`] signs any claims with the key (the
//! self-signed JWTs that IAP accepts), and
//! [`ServiceAccountSource::fetch_access_token`] gets an OAuth access token
//! (the source credential of impersonation).
//!
//! ```
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let emu = iap_emulator::Emulator::start().await?;
//! # let dir = tempfile::tempdir()?;
//! # let key_file = dir.path().join("key.json");
//! # emu.create_service_account("runner").await?.write_key_file(&key_file)?;
//! use iap_token::{Audience, TokenSource, source::service_account::ServiceAccountSource};
//!
//! let source = ServiceAccountSource::from_file(&key_file)?; // e.g. "key.json"
//! let token = source.id_token(&Audience::new("123-abc.apps.googleusercontent.com")).await?;
//! assert_eq!(token.claims().aud.as_deref(), Some("123-abc.apps.googleusercontent.com"));
//! # Ok(()) }
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::access_token::{AccessToken, AccessTokenAnswer, AccessTokenSource};
use crate::credentials_json::CredentialsJson;
use crate::source::{BoxFuture, TokenSource};
use crate::transport::Transport;
use crate::{Audience, Error, IdToken, Result};

pub(crate) use crate::endpoints::GOOGLE_TOKEN_URI;
/// The JWT-bearer grant type.
pub(crate) const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// How far `iat` is back-dated, for clocks slightly ahead of Google's.
pub(crate) const CLOCK_SKEW: Duration = Duration::from_secs(10);
/// The lifetime of assertions (Google's maximum).
pub(crate) const ASSERTION_LIFETIME: Duration = Duration::from_secs(3600);

/// A service-account key file (`type: "service_account"`), parsed and its
/// private key checked. `Debug` never shows the private key.
#[derive(Clone)]
pub struct ServiceAccountKey {
    client_email: String,
    private_key_id: Option<String>,
    project_id: Option<String>,
    client_id: Option<String>,
    token_uri: Url,
    universe_domain: Option<String>,
    path: Option<PathBuf>,
    key: EncodingKey,
}

impl ServiceAccountKey {
    /// Reads and parses a key file. Errors name the file and the field.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_credentials_json(&CredentialsJson::read(path.as_ref())?)
    }

    /// Parses the JSON text of a key file.
    pub fn from_json(json: impl AsRef<[u8]>) -> Result<Self> {
        Self::from_credentials_json(&CredentialsJson::parse(json.as_ref(), None)?)
    }

    pub(crate) fn from_credentials_json(json: &CredentialsJson) -> Result<Self> {
        json.expect_type("service_account")?;
        let client_email = json.required("client_email")?.to_string();
        let pem = json.required_or(
            "private_key",
            "download a new JSON key for the service account",
        )?;
        let not_a_key = || {
            json.invalid(
                "private_key",
                "is not a PEM-encoded RSA private key (`-----BEGIN PRIVATE KEY-----`): download a new JSON key".into(),
            )
        };
        if pem.contains("ENCRYPTED") {
            return Err(json.invalid(
                "private_key",
                "is an encrypted PEM key; service-account keys are not encrypted: download a new JSON key \
                 (or decrypt it with `openssl pkcs8 -topk8 -nocrypt`)"
                    .into(),
            ));
        }
        if pem.contains("\\n") && !pem.contains('\n') {
            return Err(json.invalid(
                "private_key",
                "holds a literal `\\n` where the PEM needs line breaks (the JSON was escaped twice): \
                 write `\\n` in the JSON file itself, or download a new JSON key"
                    .into(),
            ));
        }
        let key = EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|_| not_a_key())?;
        // Catch a broken key now rather than at the first signature.
        aws_lc_rs::signature::RsaKeyPair::from_der(key.inner()).map_err(|_| {
            json.invalid(
                "private_key",
                "is not a usable RSA key: keys shorter than 2048 bits (512, 1024) are refused, and Google \
                 issues 2048-bit keys: download a new JSON key"
                    .into(),
            )
        })?;
        Ok(ServiceAccountKey {
            client_email,
            private_key_id: json.optional("private_key_id")?.map(Into::into),
            project_id: json.optional("project_id")?.map(Into::into),
            client_id: json.optional("client_id")?.map(Into::into),
            token_uri: json.url_or("token_uri", GOOGLE_TOKEN_URI)?,
            universe_domain: json.optional("universe_domain")?.map(Into::into),
            path: json.path().map(Into::into),
            key,
        })
    }

    /// The service account's email (`client_email`).
    pub fn client_email(&self) -> &str {
        &self.client_email
    }

    /// The key's ID (`private_key_id`), sent as the JWT header's `kid`.
    pub fn private_key_id(&self) -> Option<&str> {
        self.private_key_id.as_deref()
    }

    /// The project the account belongs to.
    pub fn project_id(&self) -> Option<&str> {
        self.project_id.as_deref()
    }

    /// The account's numeric OAuth client ID.
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }

    /// The token endpoint (`token_uri`, default `https://oauth2.googleapis.com/token`).
    pub fn token_uri(&self) -> &Url {
        &self.token_uri
    }

    /// The key's universe domain (`googleapis.com` when absent).
    pub fn universe_domain(&self) -> &str {
        self.universe_domain.as_deref().unwrap_or("googleapis.com")
    }

    /// The file the key came from.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Signs `claims` as an RS256 JWT with header `kid` = the key's ID.
    ///
    /// ```
    /// # fn demo(key: &iap_token::source::service_account::ServiceAccountKey) -> iap_token::Result<()> {
    /// #[derive(serde::Serialize)]
    /// struct SelfSigned<'a> { iss: &'a str, sub: &'a str, aud: &'a str, iat: u64, exp: u64 }
    /// let jwt = key.sign(&SelfSigned {
    ///     iss: key.client_email(), sub: key.client_email(),
    ///     aud: "https://app.example.com/*", iat: 1_700_000_000, exp: 1_700_003_600,
    /// })?;
    /// # Ok(()) }
    /// ```
    pub fn sign<C: Serialize>(&self, claims: &C) -> Result<String> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = self.private_key_id.clone();
        jsonwebtoken::encode(&header, claims, &self.key).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                // The key parsed but cannot sign: the key file is at fault.
                ErrorKind::InvalidRsaKey(_)
                | ErrorKind::InvalidKeyFormat
                | ErrorKind::RsaFailedSigning => Error::InvalidCredentials {
                    path: self.path.clone(),
                    field: "private_key".into(),
                    problem: format!(
                        "cannot sign a JWT with it ({e}): create a new key for {}",
                        self.client_email
                    ),
                },
                _ => Error::Other {
                    context: format!("cannot sign a JWT with the key of {}", self.client_email),
                    source: Some(std::sync::Arc::new(e)),
                },
            }
        })
    }

    /// The assertion of the JWT-bearer grant: `target_audience` for an ID
    /// token, or `scope` for an access token.
    fn assertion(&self, target_audience: Option<&str>, scope: Option<&str>) -> Result<String> {
        #[derive(Serialize)]
        struct Grant<'a> {
            iss: &'a str,
            sub: &'a str,
            aud: &'a str,
            iat: u64,
            exp: u64,
            #[serde(skip_serializing_if = "Option::is_none")]
            target_audience: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            scope: Option<&'a str>,
        }
        let iat = unix_now().saturating_sub(CLOCK_SKEW.as_secs());
        self.sign(&Grant {
            iss: &self.client_email,
            sub: &self.client_email,
            aud: self.token_uri.as_str(),
            iat,
            exp: iat + ASSERTION_LIFETIME.as_secs(),
            target_audience,
            scope,
        })
    }

    /// What the token endpoint's errors mean for this key.
    fn explain(&self, err: Error) -> Error {
        let email = &self.client_email;
        let kid = self
            .private_key_id
            .as_deref()
            .unwrap_or("(no private_key_id)");
        err.with_endpoint_hint(|code, description| {
            let description = description.unwrap_or_default();
            match code {
                "invalid_grant" if description.contains("Signature") => Some(format!(
                    "the key {kid} of {email} was deleted or disabled, or is not this account's: create a new key"
                )),
                "invalid_grant" if description.contains("timeframe") || description.contains("iat") => {
                    Some("check this machine's clock".into())
                }
                "invalid_grant" => Some(format!("the token endpoint refused the assertion of {email}")),
                "invalid_client" | "unauthorized_client" | "access_denied" => Some(format!(
                    "the service account {email} may have been deleted or disabled, or the key may not belong to it"
                )),
                _ => None,
            }
        })
    }
}

impl fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("project_id", &self.project_id)
            .field("token_uri", &self.token_uri.as_str())
            .field("path", &self.path)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

/// ID tokens (and access tokens) from a service-account key. See the
/// [module docs](self).
#[derive(Clone, Debug)]
pub struct ServiceAccountSource {
    key: Arc<ServiceAccountKey>,
    transport: Transport,
}

impl ServiceAccountSource {
    /// A source signing with `key`.
    pub fn new(key: ServiceAccountKey) -> Self {
        ServiceAccountSource {
            key: Arc::new(key),
            transport: Transport::default(),
        }
    }

    /// A source from a key file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        Ok(Self::new(ServiceAccountKey::from_file(path)?))
    }

    /// Sends requests through `client` instead of the shared one (extra
    /// root certificates, a fixed proxy). Configure it not to follow
    /// redirects: token endpoints never redirect, and a redirect must not
    /// carry credentials elsewhere.
    pub fn with_http_client(mut self, client: reqwest::Client) -> Self {
        self.transport = Transport::new(client);
        self
    }

    /// The key.
    pub fn key(&self) -> &ServiceAccountKey {
        &self.key
    }

    /// Fetches an ID token for `audience` (JWT-bearer grant with `target_audience`).
    pub async fn fetch_id_token(&self, audience: &Audience) -> Result<IdToken> {
        #[derive(Deserialize)]
        struct Answer {
            id_token: Option<String>,
        }
        let assertion = self.key.assertion(Some(audience.as_str()), None)?;
        let answer: Answer = self.grant(&assertion).await?;
        let Some(jwt) = answer.id_token else {
            return Err(Error::Protocol {
                endpoint: crate::transport::endpoint_name(&self.key.token_uri),
                problem: "the answer has no `id_token`".into(),
            });
        };
        IdToken::parse(jwt)
    }

    /// Fetches an OAuth access token for `scopes` (JWT-bearer grant with `scope`).
    pub async fn fetch_access_token(&self, scopes: &[&str]) -> Result<AccessToken> {
        let assertion = self.key.assertion(None, Some(&scopes.join(" ")))?;
        self.grant::<AccessTokenAnswer>(&assertion)
            .await?
            .into_token()
    }

    async fn grant<T: serde::de::DeserializeOwned>(&self, assertion: &str) -> Result<T> {
        self.transport
            .post_form(
                &self.key.token_uri,
                &[("grant_type", JWT_BEARER_GRANT), ("assertion", assertion)],
            )
            .await
            .map_err(|e| self.key.explain(e))
    }
}

impl TokenSource for ServiceAccountSource {
    fn endpoint(&self) -> Option<String> {
        Some(crate::transport::endpoint_name(self.key.token_uri()))
    }

    fn id_token<'a>(&'a self, audience: &'a Audience) -> BoxFuture<'a, Result<IdToken>> {
        Box::pin(self.fetch_id_token(audience))
    }
}

impl AccessTokenSource for ServiceAccountSource {
    fn access_token<'a>(&'a self, scopes: &'a [&'a str]) -> BoxFuture<'a, Result<AccessToken>> {
        Box::pin(self.fetch_access_token(scopes))
    }

    fn principal(&self) -> Option<String> {
        Some(self.key.client_email().to_string())
    }
}

/// Seconds since the Unix epoch (0 for a clock before 1970).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    /// A key file with a fresh RSA key.
    fn key_json(token_uri: &str) -> String {
        use aws_lc_rs::encoding::AsDer as _;
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let der: aws_lc_rs::encoding::Pkcs8V1Der<'_> = pair.as_der().unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        );
        serde_json::json!({
            "type": "service_account",
            "private_key_id": "kid-1",
            "private_key": pem,
            "client_email": "sa@p.iam.gserviceaccount.com",
            "token_uri": token_uri,
        })
        .to_string()
    }

    fn decode(part: &str) -> serde_json::Value {
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn id_token_assertion_has_google_s_claims_with_a_back_dated_iat() {
        let key =
            ServiceAccountKey::from_json(key_json("https://oauth2.example.com/token")).unwrap();
        let before = unix_now();

        let jwt = key.assertion(Some("aud-client-id"), None).unwrap();

        let parts: Vec<&str> = jwt.split('.').collect();
        let (header, claims) = (decode(parts[0]), decode(parts[1]));
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["kid"], "kid-1");
        assert_eq!(claims["iss"], "sa@p.iam.gserviceaccount.com");
        assert_eq!(claims["sub"], "sa@p.iam.gserviceaccount.com");
        assert_eq!(claims["aud"], "https://oauth2.example.com/token");
        assert_eq!(claims["target_audience"], "aud-client-id");
        assert!(claims.get("scope").is_none());
        let (iat, exp) = (
            claims["iat"].as_u64().unwrap(),
            claims["exp"].as_u64().unwrap(),
        );
        assert!(
            iat + 10 >= before && iat + 10 <= unix_now(),
            "iat {iat} is back-dated 10 s"
        );
        assert_eq!(exp - iat, 3600);
    }

    #[test]
    fn access_token_assertion_carries_the_scopes_instead() {
        let key = ServiceAccountKey::from_json(key_json(GOOGLE_TOKEN_URI)).unwrap();

        let jwt = key.assertion(None, Some("a b")).unwrap();

        let claims = decode(jwt.split('.').nth(1).unwrap());
        assert_eq!(claims["scope"], "a b");
        assert!(claims.get("target_audience").is_none());
        assert!(!format!("{key:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn key_errors_name_the_field() {
        let cases = [
            (
                r#"{"type":"authorized_user"}"#,
                "field `type` is `authorized_user`, expected `service_account`",
            ),
            (
                r#"{"type":"service_account","private_key":"x"}"#,
                "field `client_email` is missing",
            ),
            (
                r#"{"type":"service_account","client_email":"a@b"}"#,
                "field `private_key` is missing",
            ),
            (
                r#"{"type":"service_account","client_email":"a@b","private_key":"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}"#,
                "field `private_key` is not a PEM-encoded RSA private key",
            ),
        ];
        for (json, want) in cases {
            let err = ServiceAccountKey::from_json(json).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
            assert!(!err.contains("AAAA"), "{err}");
        }
    }
}
