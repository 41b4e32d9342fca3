//! STS token exchange (`POST /v1/token`, see `docs/workload-identity.md`) and the OIDC
//! issuer whose tokens it accepts as subject tokens (`/oidc/...`).
//!
//! The issuer is `BASE/oidc`, with discovery at
//! `/oidc/.well-known/openid-configuration`, keys at `/oidc/jwks`, and
//! `GET /oidc/subject_token?audience=&subject=[&format=text]` minting a fresh
//! subject token (JSON `{"id_token"}` by default: the `url` credential
//! source of an `external_account` file points here). A subject token's
//! `aud` is the pool provider's audience in its `https:` form.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{RawQuery, State as Ax};
use axum::response::Response;
use serde_json::{Value, json};

use super::OAuthParams;
use crate::fault::{json_response, metadata_text, oauth_error_response};
use crate::keys::random_hex;
use crate::locks::read;
use crate::provision::Grant;
use crate::state::State;

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const SUBJECT_TYPES: [&str; 2] = [
    "urn:ietf:params:oauth:token-type:jwt",
    "urn:ietf:params:oauth:token-type:id_token",
];

fn issuer(state: &State) -> String {
    format!("{}/oidc", state.base_url)
}

/// Mints a subject token for `subject`, audience the `https:` form of the
/// provider `audience`.
pub(crate) fn mint_subject_token(state: &State, audience: &str, subject: &str) -> String {
    let iat = state.now();
    let aud = match audience.strip_prefix("//") {
        Some(rest) => format!("https://{rest}"),
        None => audience.to_owned(),
    };
    state.oidc_key.sign_jwt(&json!({
        "iss": issuer(state),
        "aud": aud,
        "sub": subject,
        "iat": iat,
        "exp": iat + state.lifetime(),
        "jti": random_hex(16),
    }))
}

/// `GET /oidc/.well-known/openid-configuration`.
pub(crate) async fn discovery(Ax(state): Ax<Arc<State>>) -> Response {
    let iss = issuer(&state);
    json_response(
        200,
        json!({
            "issuer": iss,
            "jwks_uri": format!("{iss}/jwks"),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        })
        .to_string(),
    )
}

/// `GET /oidc/jwks`.
pub(crate) async fn oidc_jwks(Ax(state): Ax<Arc<State>>) -> Response {
    json_response(200, json!({ "keys": [state.oidc_key.jwk()] }).to_string())
}

/// `GET /oidc/subject_token?audience=&subject=[&format=text]`.
pub(crate) async fn subject_token(Ax(state): Ax<Arc<State>>, RawQuery(q): RawQuery) -> Response {
    let p: HashMap<String, String> =
        serde_urlencoded::from_str(q.as_deref().unwrap_or_default()).unwrap_or_default();
    let (Some(audience), Some(subject)) = (p.get("audience"), p.get("subject")) else {
        return json_response(
            400,
            json!({"error": "invalid_request", "error_description": "audience and subject are required"})
                .to_string(),
        );
    };
    let token = mint_subject_token(&state, audience, subject);
    if p.get("format").map(String::as_str) == Some("text") {
        metadata_text(200, token)
    } else {
        json_response(200, json!({ "id_token": token }).to_string())
    }
}

/// `POST /v1/token`: subject token -> federated access token.
pub(crate) async fn exchange(Ax(state): Ax<Arc<State>>, OAuthParams(p): OAuthParams) -> Response {
    let get = |k: &str| p.get(k).map(String::as_str).unwrap_or_default();
    if get("grant_type") != TOKEN_EXCHANGE {
        return oauth_error_response(
            400,
            "unsupported_grant_type",
            &format!("Invalid value for \"grant_type\": {}", get("grant_type")),
        );
    }
    let requested = get("requested_token_type");
    if !requested.is_empty() && requested != ACCESS_TOKEN_TYPE {
        return oauth_error_response(
            400,
            "invalid_request",
            &format!("Invalid value for \"requested_token_type\": {requested}"),
        );
    }
    if !SUBJECT_TYPES.contains(&get("subject_token_type")) {
        return oauth_error_response(
            400,
            "invalid_request",
            &format!(
                "Invalid value for \"subject_token_type\": {}",
                get("subject_token_type")
            ),
        );
    }
    let audience = get("audience");
    let Some(pool) = read(&state.pools).get(audience).cloned() else {
        return oauth_error_response(
            400,
            "invalid_target",
            "The target service indicated by the \"audience\" parameters is invalid. This might either be because the pool or provider is disabled or deleted or because it doesn't exist.",
        );
    };
    let subject_token = get("subject_token");
    if subject_token.is_empty() {
        return oauth_error_response(
            400,
            "invalid_request",
            "Missing required parameter: subject_token",
        );
    }
    let header = jsonwebtoken::decode_header(subject_token).ok();
    let kid_ok = header
        .as_ref()
        .and_then(|h| h.kid.as_deref())
        .is_some_and(|kid| kid == state.oidc_key.kid());
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = kid_ok
        .then(|| {
            jsonwebtoken::decode::<Value>(
                subject_token,
                &state.oidc_key.decoding_key(),
                &validation,
            )
            .ok()
        })
        .flatten()
        .map(|d| d.claims);
    let Some(claims) = claims else {
        return oauth_error_response(
            400,
            "invalid_grant",
            "Invalid value for \"subject_token\": the ID Token signature could not be verified.",
        );
    };
    if claims["iss"].as_str() != Some(issuer(&state).as_str()) {
        return oauth_error_response(
            400,
            "invalid_grant",
            "The issuer in ID Token does not match the expected issuer.",
        );
    }
    let https_form = audience
        .strip_prefix("//")
        .map(|r| format!("https://{r}"))
        .unwrap_or_default();
    let aud = claims["aud"].as_str().unwrap_or_default();
    if aud != https_form && aud != audience {
        return oauth_error_response(
            400,
            "invalid_grant",
            &format!("The audience in ID Token [{aud}] does not match the expected audience."),
        );
    }
    let exp = claims["exp"].as_f64().unwrap_or(0.0) as u64;
    if exp <= state.now() || claims["jti"].as_str().is_some_and(|j| state.is_revoked(j)) {
        return oauth_error_response(400, "invalid_grant", "ID Token expired or revoked.");
    }
    let Some(subject) = claims["sub"].as_str().filter(|s| !s.is_empty()) else {
        return oauth_error_response(400, "invalid_grant", "ID Token has no subject.");
    };
    let principal = format!(
        "principal://iam.googleapis.com/projects/{}/locations/global/workloadIdentityPools/{}/subject/{subject}",
        pool.project_number, pool.pool_id
    );
    let (token, expires_in) = state.mint_access_token(Grant::Sts, &principal, None);
    json_response(
        200,
        json!({
            "access_token": token,
            "issued_token_type": ACCESS_TOKEN_TYPE,
            "token_type": "Bearer",
            "expires_in": expires_in,
        })
        .to_string(),
    )
}
