//! Google's public signing keys: the JWKS (`/oauth2/v3/certs`), the
//! kid -> X.509 PEM map (`/oauth2/v1/certs`), and a service account's own
//! public keys (`/robot/v1/metadata/x509/{email}`, `/service_accounts/v1/jwk/{email}`).

use std::sync::Arc;

use axum::extract::{Path, State as Ax};
use axum::response::Response;
use http::HeaderValue;
use serde_json::{Map, Value, json};

use crate::fault::{api_error_for, json_response};
use crate::state::{State, read};

fn cacheable(mut resp: Response) -> Response {
    // Google serves its keys with a cache lifetime of several hours; a short
    // one here keeps rotation visible to well-behaved caches.
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60, must-revalidate, no-transform"),
    );
    resp
}

/// `GET /oauth2/v3/certs`.
pub(crate) async fn jwks(Ax(state): Ax<Arc<State>>) -> Response {
    let keys: Vec<Value> = state.google_keys().iter().map(|k| k.jwk()).collect();
    cacheable(json_response(200, json!({ "keys": keys }).to_string()))
}

/// `GET /oauth2/v1/certs`.
pub(crate) async fn x509(Ax(state): Ax<Arc<State>>) -> Response {
    let map: Map<String, Value> = state
        .google_keys()
        .iter()
        .map(|k| (k.kid().to_owned(), json!(k.x509_pem())))
        .collect();
    cacheable(json_response(200, Value::Object(map).to_string()))
}

/// `GET /robot/v1/metadata/x509/{email}`.
pub(crate) async fn service_account_x509(
    Ax(state): Ax<Arc<State>>,
    Path(email): Path<String>,
) -> Response {
    let accounts = read(&state.service_accounts);
    let Some(record) = accounts.get(&email) else {
        return api_error_for(
            404,
            &format!("Not found; Gaia id not found for email {email}"),
        );
    };
    let map: Map<String, Value> = record
        .keys
        .iter()
        .map(|k| (k.kid().to_owned(), json!(k.x509_pem())))
        .collect();
    json_response(200, Value::Object(map).to_string())
}

/// `GET /service_accounts/v1/jwk/{email}`.
pub(crate) async fn service_account_jwks(
    Ax(state): Ax<Arc<State>>,
    Path(email): Path<String>,
) -> Response {
    let accounts = read(&state.service_accounts);
    let Some(record) = accounts.get(&email) else {
        return api_error_for(
            404,
            &format!("Not found; Gaia id not found for email {email}"),
        );
    };
    let keys: Vec<Value> = record.keys.iter().map(|k| k.jwk()).collect();
    json_response(200, json!({ "keys": keys }).to_string())
}
