//! The OAuth 2.0 token endpoint (`POST /token`, see `docs/service-account.md`, `docs/user-credentials.md`) and
//! the authorization endpoint (`GET /o/oauth2/v2/auth`, section 3).
//!
//! Grants: JWT-bearer (a service account's signed assertion; `target_audience`
//! gives an `id_token`, `scope` an `access_token`), `refresh_token` (with an
//! optional `audience`) and `authorization_code` (with `redirect_uri` and
//! PKCE checks). Bodies may be urlencoded forms or JSON. Errors are Google's
//! `{"error","error_description"}` JSON.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{RawQuery, State as Ax};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{StatusCode, header};
use serde_json::{Value, json};

use super::OAuthParams;
use crate::fault::{json_response, oauth_error_response};
use crate::keys::random_b64;
use crate::locks::{lock, read, write};
use crate::provision::Grant;
use crate::state::{ClientKind, CodeRecord, IdTokenSpec, RefreshRecord, State};

/// The audiences a JWT-bearer assertion may carry besides the emulator's
/// own token URL: what Google accepts (google-auth always sends the first).
const GOOGLE_TOKEN_AUDIENCES: [&str; 3] = [
    "https://oauth2.googleapis.com/token",
    "https://www.googleapis.com/oauth2/v4/token",
    "https://accounts.google.com/o/oauth2/token",
];

/// How far in the future an assertion's `iat` may be (clock skew).
const IAT_SKEW: u64 = 300;

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const BAD_SIGNATURE: &str = "Invalid JWT Signature.";
const BAD_TIMES: &str = "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.";

fn invalid_grant(description: &str) -> Response {
    oauth_error_response(400, "invalid_grant", description)
}

fn missing(name: &str) -> Response {
    oauth_error_response(
        400,
        "invalid_request",
        &format!("Missing required parameter: {name}"),
    )
}

/// `POST /token`.
pub(crate) async fn token(Ax(state): Ax<Arc<State>>, OAuthParams(p): OAuthParams) -> Response {
    let grant_type = p.get("grant_type").map(String::as_str).unwrap_or_default();
    match grant_type {
        JWT_BEARER => jwt_bearer(&state, &p),
        "refresh_token" => refresh(&state, &p),
        "authorization_code" => authorization_code(&state, &p),
        "" => missing("grant_type"),
        other => oauth_error_response(
            400,
            "unsupported_grant_type",
            &format!("Invalid grant_type: {other}"),
        ),
    }
}

fn jwt_bearer(state: &State, p: &HashMap<String, String>) -> Response {
    let Some(assertion) = p.get("assertion").filter(|a| !a.is_empty()) else {
        return missing("assertion");
    };
    let Ok(header) = jsonwebtoken::decode_header(assertion) else {
        return invalid_grant(BAD_SIGNATURE);
    };
    let Some(claims) = crate::state::jwt_claims(assertion) else {
        return invalid_grant(BAD_SIGNATURE);
    };
    let Some(iss) = claims["iss"].as_str() else {
        return invalid_grant("Invalid JWT: No issuer (iss) claim.");
    };
    let unique_id = match read(&state.service_accounts).get(iss) {
        Some(r) => r.unique_id.clone(),
        None => return invalid_grant("Invalid grant: account not found"),
    };
    let key = header
        .kid
        .as_deref()
        .and_then(|kid| state.service_account_decoding_key(iss, kid));
    let Some(key) = key else {
        return invalid_grant(BAD_SIGNATURE);
    };
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    if header.alg != jsonwebtoken::Algorithm::RS256
        || jsonwebtoken::decode::<Value>(assertion, &key, &validation).is_err()
    {
        return invalid_grant(BAD_SIGNATURE);
    }
    let own = format!("{}/token", state.base_url);
    let aud_ok = claims["aud"]
        .as_str()
        .is_some_and(|a| a == own || GOOGLE_TOKEN_AUDIENCES.contains(&a));
    if !aud_ok {
        return invalid_grant(&format!(
            "Invalid JWT: Failed audience check. The right audience is {}",
            GOOGLE_TOKEN_AUDIENCES[0]
        ));
    }
    let (Some(iat), Some(exp)) = (claims["iat"].as_f64(), claims["exp"].as_f64()) else {
        return invalid_grant(BAD_TIMES);
    };
    let (iat, exp) = (iat as u64, exp as u64);
    let now = state.now();
    if exp <= iat || exp - iat > 3600 || iat > now + IAT_SKEW || exp <= now {
        return invalid_grant(BAD_TIMES);
    }
    let target_audience = claims["target_audience"].as_str().filter(|a| !a.is_empty());
    let scope = claims["scope"].as_str().filter(|s| !s.is_empty());
    if let Some(aud) = target_audience {
        let id_token = state.mint_id_token(
            Grant::JwtBearer,
            IdTokenSpec {
                aud: aud.to_owned(),
                sub: unique_id,
                azp: Some(iss.to_owned()),
                email: Some(iss.to_owned()),
                extra: None,
            },
        );
        return json_response(200, json!({ "id_token": id_token }).to_string());
    }
    if scope.is_some() {
        let (access_token, expires_in) = state.mint_access_token(Grant::JwtBearer, iss, None);
        return json_response(
            200,
            json!({"access_token": access_token, "expires_in": expires_in, "token_type": "Bearer"})
                .to_string(),
        );
    }
    oauth_error_response(
        400,
        "invalid_scope",
        "Invalid OAuth scope or ID token audience provided.",
    )
}

/// An OAuth client that proved itself with its secret.
struct Client<'a> {
    id: &'a str,
    project_id: String,
}

/// Checks `client_id` / `client_secret`.
fn authenticate_client<'a>(
    state: &State,
    p: &'a HashMap<String, String>,
) -> Result<Client<'a>, Box<Response>> {
    let client_id = p.get("client_id").map(String::as_str).unwrap_or_default();
    let Some(client) = read(&state.clients).get(client_id).cloned() else {
        return Err(Box::new(oauth_error_response(
            401,
            "invalid_client",
            "The OAuth client was not found.",
        )));
    };
    if p.get("client_secret").map(String::as_str) != Some(client.secret.as_str()) {
        return Err(Box::new(oauth_error_response(
            401,
            "invalid_client",
            "Unauthorized",
        )));
    }
    Ok(Client {
        id: client_id,
        project_id: client.project_id,
    })
}

/// The `aud` of a user's ID token: `audience` when given (a client of the
/// same project), else the client itself.
fn user_audience(
    state: &State,
    p: &HashMap<String, String>,
    client: &Client<'_>,
) -> Result<String, Box<Response>> {
    let Some(audience) = p.get("audience").filter(|a| !a.is_empty()) else {
        return Ok(client.id.to_owned());
    };
    if audience == client.id {
        return Ok(audience.clone());
    }
    let same_project = read(&state.clients)
        .get(audience.as_str())
        .is_some_and(|c| c.project_id == client.project_id);
    if same_project {
        Ok(audience.clone())
    } else {
        Err(Box::new(oauth_error_response(
            400,
            "invalid_audience",
            "The audience client and the client need to be in the same project.",
        )))
    }
}

/// The answer to a user's grant: an access token, an ID token when the
/// scope has `openid` (for [`user_audience`]), and with `new_refresh_token`
/// a refresh token for `user`.
fn user_tokens(
    state: &State,
    grant: Grant,
    client: &Client<'_>,
    p: &HashMap<String, String>,
    user: RefreshRecord,
    new_refresh_token: bool,
) -> Response {
    let aud = match user_audience(state, p, client) {
        Ok(a) => a,
        Err(resp) => return *resp,
    };
    let (email, scope) = (user.email.as_str(), user.scope.as_str());
    let sub = read(&state.users)
        .get(email)
        .cloned()
        .unwrap_or_else(|| crate::keys::random_digits(21));
    let (access_token, expires_in) = state.mint_access_token(grant, email, None);
    let mut body = json!({
        "access_token": access_token,
        "expires_in": expires_in,
        "scope": scope,
        "token_type": "Bearer",
    });
    if scope.split(' ').any(|s| s == "openid") {
        body["id_token"] = json!(state.mint_id_token(
            grant,
            IdTokenSpec {
                aud,
                sub,
                azp: Some(client.id.to_owned()),
                email: Some(email.to_owned()),
                extra: None,
            },
        ));
    }
    if new_refresh_token {
        let refresh_token = format!("1//emu-{}", random_b64(40));
        body["refresh_token"] = json!(refresh_token);
        write(&state.refresh_tokens).insert(refresh_token, user);
    }
    json_response(200, body.to_string())
}

fn refresh(state: &State, p: &HashMap<String, String>) -> Response {
    let client = match authenticate_client(state, p) {
        Ok(c) => c,
        Err(resp) => return *resp,
    };
    let Some(rt) = p.get("refresh_token").filter(|t| !t.is_empty()) else {
        return missing("refresh_token");
    };
    if state.is_revoked(rt) {
        return invalid_grant("Token has been expired or revoked.");
    }
    let Some(record) = read(&state.refresh_tokens).get(rt.as_str()).cloned() else {
        return invalid_grant("Bad Request");
    };
    if record.client_id != client.id {
        return oauth_error_response(401, "unauthorized_client", "Unauthorized");
    }
    user_tokens(state, Grant::RefreshToken, &client, p, record, false)
}

fn pkce_matches(challenge: &str, method: &str, verifier: &str) -> bool {
    match method {
        "S256" => {
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
            URL_SAFE_NO_PAD.encode(digest.as_ref()) == challenge
        }
        _ => verifier == challenge,
    }
}

fn authorization_code(state: &State, p: &HashMap<String, String>) -> Response {
    let client = match authenticate_client(state, p) {
        Ok(c) => c,
        Err(resp) => return *resp,
    };
    let Some(code) = p.get("code").filter(|c| !c.is_empty()) else {
        return missing("code");
    };
    let Some(redirect_uri) = p.get("redirect_uri") else {
        return missing("redirect_uri");
    };
    // Codes are single use: taken out whatever happens next.
    let Some(record) = lock(&state.codes).remove(code.as_str()) else {
        return invalid_grant("Malformed auth code.");
    };
    if record.client_id != client.id {
        return oauth_error_response(401, "unauthorized_client", "Unauthorized");
    }
    if record.expires <= state.now() {
        return invalid_grant("Bad Request");
    }
    if &record.redirect_uri != redirect_uri {
        return oauth_error_response(400, "redirect_uri_mismatch", "Bad Request");
    }
    if let Some((challenge, method)) = &record.challenge {
        let Some(verifier) = p.get("code_verifier").filter(|v| !v.is_empty()) else {
            return invalid_grant("Missing code verifier.");
        };
        if !pkce_matches(challenge, method, verifier) {
            return invalid_grant("Invalid code verifier.");
        }
    }
    let user = RefreshRecord {
        client_id: client.id.to_owned(),
        email: record.email,
        scope: record.scope,
    };
    user_tokens(state, Grant::AuthorizationCode, &client, p, user, true)
}

fn consent_error(status: u16, error: &str, detail: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (
        code,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        format!(
            "<html><body><h1>Access blocked: authorization error</h1><p>Error {status}: {error}</p><p>{detail}</p></body></html>"
        ),
    )
        .into_response()
}

fn is_loopback_redirect(uri: &url::Url) -> bool {
    uri.scheme() == "http"
        && matches!(
            uri.host(),
            Some(url::Host::Domain("localhost"))
                | Some(url::Host::Ipv4(_))
                | Some(url::Host::Ipv6(_))
        )
        && match uri.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            _ => true,
        }
}

/// `GET /o/oauth2/v2/auth`: a user consents at once; 302 to
/// `redirect_uri?code=..&scope=..&state=..`.
pub(crate) async fn authorize(Ax(state): Ax<Arc<State>>, RawQuery(q): RawQuery) -> Response {
    let p: HashMap<String, String> =
        serde_urlencoded::from_str(q.as_deref().unwrap_or_default()).unwrap_or_default();
    let client_id = p.get("client_id").map(String::as_str).unwrap_or_default();
    let Some(client) = read(&state.clients).get(client_id).cloned() else {
        return consent_error(401, "invalid_client", "The OAuth client was not found.");
    };
    let Some(redirect) = p.get("redirect_uri").and_then(|r| url::Url::parse(r).ok()) else {
        return consent_error(
            400,
            "invalid_request",
            "Missing required parameter: redirect_uri",
        );
    };
    let redirect_ok = match client.kind {
        ClientKind::Desktop => is_loopback_redirect(&redirect),
        ClientKind::Iap => redirect.scheme() == "https" || is_loopback_redirect(&redirect),
    };
    if !redirect_ok {
        return consent_error(
            400,
            "redirect_uri_mismatch",
            "You can't sign in to this app because it doesn't comply with Google's OAuth 2.0 policy.",
        );
    }
    if p.get("response_type").map(String::as_str) != Some("code") {
        return consent_error(
            400,
            "unsupported_response_type",
            "Only response_type=code is supported.",
        );
    }
    let Some(scope) = p.get("scope").filter(|s| !s.is_empty()) else {
        return consent_error(400, "invalid_request", "Missing required parameter: scope");
    };
    let challenge = match p.get("code_challenge").filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => {
            let method = p
                .get("code_challenge_method")
                .map_or("plain", String::as_str);
            if method != "S256" && method != "plain" {
                return consent_error(
                    400,
                    "invalid_request",
                    "Invalid code_challenge_method: must be S256 or plain.",
                );
            }
            Some((c.clone(), method.to_owned()))
        }
    };
    let email = p
        .get("login_hint")
        .filter(|h| h.contains('@'))
        .cloned()
        .or(client.consenting_user)
        .unwrap_or_else(|| "user@example.com".to_owned());
    write(&state.users)
        .entry(email.clone())
        .or_insert_with(|| crate::keys::random_digits(21));
    // Google hands back the scopes in their long form.
    let granted: Vec<&str> = scope
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(|s| match s {
            "email" => "https://www.googleapis.com/auth/userinfo.email",
            "profile" => "https://www.googleapis.com/auth/userinfo.profile",
            other => other,
        })
        .collect();
    let granted = granted.join(" ");
    let code = format!("4/emu-{}", random_b64(30));
    lock(&state.codes).insert(
        code.clone(),
        CodeRecord {
            client_id: client_id.to_owned(),
            email,
            redirect_uri: p.get("redirect_uri").cloned().unwrap_or_default(),
            challenge,
            scope: granted.clone(),
            expires: state.now() + 600,
        },
    );
    let mut location = redirect;
    {
        let mut qp = location.query_pairs_mut();
        if let Some(s) = p.get("state") {
            qp.append_pair("state", s);
        }
        qp.append_pair("code", &code);
        qp.append_pair("scope", &granted);
        qp.append_pair("authuser", "0");
        qp.append_pair("prompt", "consent");
    }
    (
        StatusCode::FOUND,
        [(header::LOCATION, location.to_string())],
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc7636_example() {
        assert!(pkce_matches(
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "S256",
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
        ));
        assert!(!pkce_matches("x", "S256", "dBjftJeZ4CVP"));
        assert!(pkce_matches("abc", "plain", "abc"));
    }

    #[test]
    fn loopback_redirects_only() {
        let ok = |s: &str| is_loopback_redirect(&url::Url::parse(s).unwrap());
        assert!(ok("http://127.0.0.1:8080/"));
        assert!(ok("http://localhost:1234"));
        assert!(ok("http://[::1]:9/cb"));
        assert!(!ok("https://127.0.0.1/"));
        assert!(!ok("http://example.com/"));
        assert!(!ok("http://10.0.0.1/"));
    }
}
