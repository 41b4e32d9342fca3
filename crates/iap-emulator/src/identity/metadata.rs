//! The GCE metadata server (see `docs/metadata-server.md`).
//!
//! Every `/computeMetadata/v1/...` answer carries `Metadata-Flavor: Google`
//! and needs the request header `Metadata-Flavor: Google` (403 otherwise, and
//! for any request with `X-Forwarded-For`, as GCE does). GET and POST are
//! both accepted. Like GCE, `identity` answers from a cache until 300 s
//! before the cached token's expiry, so refreshing early returns the same
//! token; the cache is emptied when the token lifetime or the clock changes.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State as Ax};
use axum::response::Response;
use http::HeaderMap;
use serde_json::json;

use crate::fault::{json_response, metadata_text};
use crate::locks::{lock, read};
use crate::provision::Grant;
use crate::state::{IdTokenSpec, State};

/// GCE re-mints an identity token only when the cached one has less than
/// this many seconds left.
const CACHE_MARGIN: u64 = 300;

/// `GET /`: detection ping.
pub(crate) async fn root() -> Response {
    metadata_text(200, "computeMetadata/\n")
}

fn check_flavor(headers: &HeaderMap) -> Option<Response> {
    if headers.contains_key("x-forwarded-for") {
        return Some(metadata_text(
            403,
            "Request with X-Forwarded-For header is not allowed",
        ));
    }
    let ok = headers
        .get("metadata-flavor")
        .is_some_and(|v| v.as_bytes() == b"Google");
    (!ok).then(|| metadata_text(403, "Missing required header: Metadata-Flavor"))
}

/// The metadata service account's email and unique ID for a request to
/// `.../service-accounts/{account}/...`: 403 without the flavor header, 404
/// unless `account` names it (`default` or its email).
fn account(
    state: &State,
    headers: &HeaderMap,
    account: &str,
) -> Result<(String, String), Box<Response>> {
    if let Some(denied) = check_flavor(headers) {
        return Err(Box::new(denied));
    }
    let not_found = || Box::new(metadata_text(404, "Not Found"));
    let email = read(&state.metadata_account)
        .clone()
        .ok_or_else(not_found)?;
    if account != "default" && account != email {
        return Err(not_found());
    }
    let unique_id = read(&state.service_accounts)
        .get(&email)
        .map(|r| r.unique_id.clone())
        .ok_or_else(not_found)?;
    Ok((email, unique_id))
}

fn query_params(q: Option<&str>, headers: &HeaderMap, body: &Bytes) -> HashMap<String, String> {
    super::params(headers, q, body).unwrap_or_default()
}

/// `.../service-accounts/{account}/identity?audience=&format=&licenses=`.
pub(crate) async fn identity(
    Ax(state): Ax<Arc<State>>,
    Path(acct): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (email, unique_id) = match account(&state, &headers, &acct) {
        Ok(found) => found,
        Err(resp) => return *resp,
    };
    let p = query_params(q.as_deref(), &headers, &body);
    let audience = p.get("audience").map(String::as_str).unwrap_or_default();
    if audience.is_empty() {
        return metadata_text(400, "non-empty audience parameter required");
    }
    let format = p.get("format").map(String::as_str).unwrap_or("standard");
    let full = match format {
        "standard" | "" => false,
        "full" => true,
        other => {
            return metadata_text(
                400,
                format!("invalid format {other:?}: must be one of standard, full"),
            );
        }
    };
    let licenses = full
        && p.get("licenses")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let cache_key = format!("{email}\n{audience}\n{full}\n{licenses}");
    let now = state.now();
    if let Some((token, exp)) = lock(&state.metadata_cache).get(&cache_key).cloned()
        && exp > now + CACHE_MARGIN
        && !crate::state::jwt_claims(&token)
            .and_then(|c| c["jti"].as_str().map(|j| state.is_revoked(j)))
            .unwrap_or(true)
    {
        return metadata_text(200, token);
    }
    let extra = full.then(|| {
        let mut ce = json!({
            "instance_creation_timestamp": 1_700_000_000u64,
            "instance_id": "4212345678901234567",
            "instance_name": "iap-emulator",
            "project_id": state.project.id,
            "project_number": state.project.number.parse::<u64>().unwrap_or(0),
            "zone": "us-central1-a",
        });
        if licenses {
            ce["license_id"] = json!(["1000010"]);
        }
        let mut m = serde_json::Map::new();
        m.insert("google".into(), json!({ "compute_engine": ce }));
        m
    });
    let token = state.mint_id_token(
        Grant::Metadata,
        IdTokenSpec {
            aud: audience.to_owned(),
            sub: unique_id.clone(),
            azp: Some(unique_id),
            email: full.then_some(email),
            extra,
        },
    );
    let exp = now + state.lifetime();
    lock(&state.metadata_cache).insert(cache_key, (token.clone(), exp));
    metadata_text(200, token)
}

/// `.../service-accounts/{account}/token`: an access token as JSON.
pub(crate) async fn token(
    Ax(state): Ax<Arc<State>>,
    Path(acct): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (email, _) = match account(&state, &headers, &acct) {
        Ok(found) => found,
        Err(resp) => return *resp,
    };
    let (access_token, expires_in) = state.mint_access_token(Grant::Metadata, &email, None);
    let mut resp = json_response(
        200,
        json!({"access_token": access_token, "expires_in": expires_in, "token_type": "Bearer"})
            .to_string(),
    );
    resp.headers_mut()
        .insert("metadata-flavor", http::HeaderValue::from_static("Google"));
    resp
}

/// The rest of `/computeMetadata/v1/`: the few values client libraries read.
pub(crate) async fn other(
    Ax(state): Ax<Arc<State>>,
    Path(rest): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Some(denied) = check_flavor(&headers) {
        return denied;
    }
    let path = rest.trim_start_matches("v1/");
    let recursive = q
        .as_deref()
        .is_some_and(|q| q.contains("recursive=true") || q.contains("recursive=True"));
    let sa = read(&state.metadata_account).clone();
    let text = |s: &str| metadata_text(200, s.to_owned());
    match path {
        "" => text("instance/\nproject/\nuniverse/\n"),
        "project/project-id" => text(&state.project.id),
        "project/numeric-project-id" => text(&state.project.number),
        "universe/universe-domain" => text("googleapis.com"),
        "instance/zone" => text(&format!(
            "projects/{}/zones/us-central1-a",
            state.project.number
        )),
        "instance/id" => text("4212345678901234567"),
        "instance/name" => text("iap-emulator"),
        "instance/service-accounts" | "instance/service-accounts/" => match sa {
            Some(email) => text(&format!("default/\n{email}/\n")),
            None => text(""),
        },
        _ => {
            let Some(rest) = path.strip_prefix("instance/service-accounts/") else {
                return metadata_text(404, "Not Found");
            };
            let (acct, leaf) = rest.split_once('/').unwrap_or((rest, ""));
            let (email, _) = match account(&state, &headers, acct) {
                Ok(found) => found,
                Err(resp) => return *resp,
            };
            let scopes = "https://www.googleapis.com/auth/cloud-platform";
            match leaf {
                "email" => text(&email),
                "scopes" => text(&format!("{scopes}\n")),
                "aliases" => text("default\n"),
                "" if recursive => {
                    let mut resp = json_response(
                        200,
                        json!({"aliases": ["default"], "email": email, "scopes": [scopes]})
                            .to_string(),
                    );
                    resp.headers_mut()
                        .insert("metadata-flavor", http::HeaderValue::from_static("Google"));
                    resp
                }
                "" => text("aliases\nemail\nidentity\nscopes\ntoken\n"),
                _ => metadata_text(404, "Not Found"),
            }
        }
    }
}
