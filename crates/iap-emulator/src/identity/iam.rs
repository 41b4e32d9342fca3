//! IAM Credentials: `generateIdToken`, `generateAccessToken` and `signJwt`,
//! with a permission model (wire facts: `docs/service-account-jwts.md`).
//!
//! The caller is the principal behind the `Authorization: Bearer` access
//! token (minted by this emulator). It may act as a target service account
//! when [`Emulator::allow_impersonation`](crate::Emulator::allow_impersonation)
//! granted it; with `delegates` `[D1, D2]` every link of caller -> D1 -> D2
//! -> target needs a grant, as with Google's delegation chains. The same
//! grants cover all three methods; only the permission a refusal names
//! differs.
//!
//! `signJwt` signs the caller's claims (`payload`, a JSON object as a
//! string) with the target's Google-managed key, made on first use and
//! published beside its user-managed keys, so the gate verifies the result
//! like any self-signed service-account JWT. An `exp` in the past or more
//! than 12 hours ahead is refused, as Google does.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State as Ax};
use axum::response::Response;
use http::HeaderMap;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::endpoint::Endpoint;
use crate::fault::{api_error_for, api_error_response, json_response};
use crate::keys::RsaKey;
use crate::locks::{read, write};
use crate::provision::Grant;
use crate::server::ConnControl;
use crate::state::{IdTokenSpec, State};

const UNAUTHENTICATED: &str = "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.";

/// `POST /v1/projects/{project}/serviceAccounts/{email}:{method}`.
pub(crate) async fn call(
    Ax(state): Ax<Arc<State>>,
    Path((_project, account_method)): Path<(String, String)>,
    headers: HeaderMap,
    conn: Option<axum::Extension<ConnControl>>,
    body: Bytes,
) -> Response {
    let Some((target, method)) = account_method.rsplit_once(':') else {
        return api_error_for(404, "Method not found.");
    };
    let (endpoint, permission) = match method {
        "generateIdToken" => (
            Endpoint::GenerateIdToken,
            "iam.serviceAccounts.getOpenIdToken",
        ),
        "generateAccessToken" => (
            Endpoint::GenerateAccessToken,
            "iam.serviceAccounts.getAccessToken",
        ),
        "signJwt" => (Endpoint::SignJwt, "iam.serviceAccounts.signJwt"),
        _ => return api_error_for(404, "Method not found."),
    };
    let conn = conn.map(|c| c.0);
    if let Some(answer) = crate::fault::intercept(&state, endpoint, conn.as_ref()).await {
        return answer;
    }
    let resp = match endpoint {
        Endpoint::SignJwt => sign_jwt(&state, target, &headers, &body).await,
        _ => answer(&state, endpoint, permission, target, &headers, &body),
    };
    if resp.status().is_client_error() || resp.status().is_server_error() {
        state.count(crate::counter::ERRORS, endpoint.name());
    }
    resp
}

/// What an authorized call may act on.
struct Authorized {
    request: Value,
    /// The target service account's email.
    target: String,
    unique_id: String,
}

/// Who calls (the access token's principal), whether the body is a JSON
/// object, whether the target exists, and whether every link of the chain
/// is granted; the first failure is the answer.
fn authorize(
    state: &State,
    permission: &str,
    target: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Authorized, Box<Response>> {
    let caller = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .and_then(|t| state.access_token_principal(t.trim()));
    let Some(caller) = caller else {
        return Err(Box::new(api_error_for(401, UNAUTHENTICATED)));
    };
    let request: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return Err(Box::new(api_error_for(
                400,
                "Invalid JSON payload received. Expected an object.",
            )));
        }
    };
    let target = target
        .strip_prefix("projects/-/serviceAccounts/")
        .unwrap_or(target);
    let Some(unique_id) = read(&state.service_accounts)
        .get(target)
        .map(|r| r.unique_id.clone())
    else {
        return Err(Box::new(api_error_for(
            404,
            &format!("Not found; Gaia id not found for email {target}"),
        )));
    };
    let delegates: Vec<String> = match &request["delegates"] {
        Value::Array(ds) => ds
            .iter()
            .filter_map(Value::as_str)
            .map(|d| {
                d.rsplit_once("/serviceAccounts/")
                    .map_or(d, |(_, email)| email)
                    .to_owned()
            })
            .collect(),
        _ => Vec::new(),
    };
    let mut chain = vec![caller.as_str()];
    chain.extend(delegates.iter().map(String::as_str));
    chain.push(target);
    let allowed = {
        let grants = read(&state.impersonation);
        let accounts = read(&state.service_accounts);
        chain.windows(2).all(|link| {
            accounts.contains_key(link[1])
                && grants.contains(&(link[0].to_owned(), link[1].to_owned()))
        })
    };
    if !allowed {
        return Err(Box::new(permission_denied(permission)));
    }
    Ok(Authorized {
        request,
        target: target.to_owned(),
        unique_id,
    })
}

/// The longest `exp` ahead of now that `signJwt` signs.
const SIGN_JWT_MAX_AHEAD: u64 = 12 * 3600;

/// `signJwt`: the caller's claims signed with the target's Google-managed key.
async fn sign_jwt(state: &State, target: &str, headers: &HeaderMap, body: &Bytes) -> Response {
    let Authorized {
        request, target, ..
    } = match authorize(state, "iam.serviceAccounts.signJwt", target, headers, body) {
        Ok(authorized) => authorized,
        Err(refusal) => return *refusal,
    };
    let claims = match request["payload"]
        .as_str()
        .map(serde_json::from_str::<Value>)
    {
        Some(Ok(claims @ Value::Object(_))) => claims,
        _ => {
            return api_error_for(
                400,
                "Invalid JWT payload: `payload` must be a JSON object serialized as a string.",
            );
        }
    };
    if let Some(exp) = claims.get("exp") {
        let now = state.now();
        match exp.as_u64() {
            Some(exp) if exp > now && exp <= now + SIGN_JWT_MAX_AHEAD => {}
            _ => {
                return api_error_for(
                    400,
                    "Invalid JWT payload: `exp` must be an integer timestamp in the future and at most 12 hours ahead.",
                );
            }
        }
    }
    let key = match system_key(state, &target).await {
        Some(key) => key,
        None => return api_error_for(500, "Internal error encountered."),
    };
    let signed = key.sign_jwt(&claims);
    state.count(crate::counter::SIGNED_JWTS, &target);
    json_response(
        200,
        json!({"keyId": key.kid(), "signedJwt": signed}).to_string(),
    )
}

/// The Google-managed key of `email`, made (off the async threads) and
/// published on first use. `None` when the key cannot be made or the
/// account vanished meanwhile.
async fn system_key(state: &State, email: &str) -> Option<Arc<RsaKey>> {
    if let Some(key) = read(&state.service_accounts).get(email)?.system_key.clone() {
        return Some(key);
    }
    let fresh = Arc::new(RsaKey::generate_async().await.ok()?);
    let mut accounts = write(&state.service_accounts);
    let record = accounts.get_mut(email)?;
    // Two first calls at once: the first key stored wins.
    if let Some(key) = &record.system_key {
        return Some(key.clone());
    }
    record.keys.push(fresh.clone());
    record.system_key = Some(fresh.clone());
    Some(fresh)
}

fn answer(
    state: &State,
    endpoint: Endpoint,
    permission: &str,
    target: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let Authorized {
        request,
        target,
        unique_id,
    } = match authorize(state, permission, target, headers, body) {
        Ok(authorized) => authorized,
        Err(refusal) => return *refusal,
    };
    let target = target.as_str();
    match endpoint {
        Endpoint::GenerateIdToken => {
            let Some(audience) = request["audience"].as_str().filter(|a| !a.is_empty()) else {
                return api_error_for(400, "Request contains an invalid argument.");
            };
            let include_email = super::truthy(request.get("includeEmail"));
            let email_azp = super::truthy(request.get("useEmailAzp"));
            let token = state.mint_id_token(
                Grant::GenerateIdToken,
                IdTokenSpec {
                    aud: audience.to_owned(),
                    sub: unique_id.clone(),
                    azp: Some(if email_azp {
                        target.to_owned()
                    } else {
                        unique_id
                    }),
                    email: include_email.then(|| target.to_owned()),
                    extra: None,
                },
            );
            json_response(200, json!({ "token": token }).to_string())
        }
        _ => {
            let has_scope = match &request["scope"] {
                Value::Array(s) => !s.is_empty(),
                Value::String(s) => !s.is_empty(),
                _ => false,
            };
            if !has_scope {
                return api_error_for(400, "Scope required.");
            }
            let lifetime = match request["lifetime"].as_str() {
                None => None,
                Some(l) => match l.strip_suffix('s').and_then(|n| n.parse::<f64>().ok()) {
                    Some(secs) if secs > 0.0 && secs <= 43_200.0 => Some(secs as u64),
                    _ => {
                        return api_error_for(
                            400,
                            &format!(
                                "Invalid value at 'lifetime' ({l}): must be a duration like \"3600s\", at most 43200s."
                            ),
                        );
                    }
                },
            };
            let (token, expires_in) =
                state.mint_access_token(Grant::GenerateAccessToken, target, lifetime);
            let expire_time = rfc3339(state.now() + expires_in);
            json_response(
                200,
                json!({"accessToken": token, "expireTime": expire_time}).to_string(),
            )
        }
    }
}

fn permission_denied(permission: &str) -> Response {
    let mut resp = api_error_response(
        403,
        "PERMISSION_DENIED",
        &format!("Permission '{permission}' denied on resource (or it may not exist)."),
    );
    // Google adds an ErrorInfo detail naming the permission.
    let body = json!({"error": {
        "code": 403,
        "message": format!("Permission '{permission}' denied on resource (or it may not exist)."),
        "status": "PERMISSION_DENIED",
        "details": [{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "IAM_PERMISSION_DENIED",
            "domain": "iam.googleapis.com",
            "metadata": {"permission": permission},
        }],
    }});
    *resp.body_mut() = axum::body::Body::from(body.to_string());
    resp
}

/// Unix seconds as RFC 3339 UTC (`2026-11-27T15:00:00Z`); past year 9999,
/// `9999-12-31T23:59:59Z`.
pub(crate) fn rfc3339(secs: u64) -> String {
    // The last second with a four-digit year.
    let secs = i64::try_from(secs).map_or(253_402_300_799, |s| s.min(253_402_300_799));
    OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_798_761_599), "2026-12-31T23:59:59Z");
        assert_eq!(rfc3339(253_402_300_800), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59Z");
    }
}
