//! Google's public signing keys: the JWKS (`/oauth2/v3/certs`), the
//! kid -> X.509 PEM map (`/oauth2/v1/certs`), and a service account's own
//! public keys (`/robot/v1/metadata/x509/{email}`, `/service_accounts/v1/jwk/{email}`).

use std::sync::Arc;

use axum::extract::{Path, State as Ax};
use axum::response::Response;
use http::HeaderValue;
use serde_json::{Map, Value, json};

use crate::fault::{api_error_for, json_response};
use crate::keys::RsaKey;
use crate::locks::read;
use crate::state::State;

fn cacheable(mut resp: Response) -> Response {
    // Google serves its keys with a cache lifetime of several hours; a short
    // one here keeps rotation visible to well-behaved caches.
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60, must-revalidate, no-transform"),
    );
    resp
}

/// `{"keys": [JWK...]}`.
fn jwks_body(keys: &[Arc<RsaKey>]) -> String {
    let keys: Vec<Value> = keys.iter().map(|k| k.jwk()).collect();
    json!({ "keys": keys }).to_string()
}

/// `{kid: X.509 PEM, ...}`.
fn x509_body(keys: &[Arc<RsaKey>]) -> String {
    let map: Map<String, Value> = keys
        .iter()
        .map(|k| (k.kid().to_owned(), json!(k.x509_pem())))
        .collect();
    Value::Object(map).to_string()
}

/// The public keys of service account `email`, or Google's 404.
fn account_keys(state: &State, email: &str) -> Result<Vec<Arc<RsaKey>>, Box<Response>> {
    match read(&state.service_accounts).get(email) {
        Some(record) => Ok(record.keys.clone()),
        None => Err(Box::new(api_error_for(
            404,
            &format!("Not found; Gaia id not found for email {email}"),
        ))),
    }
}

/// `GET /oauth2/v3/certs`.
pub(crate) async fn jwks(Ax(state): Ax<Arc<State>>) -> Response {
    cacheable(json_response(200, jwks_body(&state.google_keys())))
}

/// `GET /oauth2/v1/certs`.
pub(crate) async fn x509(Ax(state): Ax<Arc<State>>) -> Response {
    cacheable(json_response(200, x509_body(&state.google_keys())))
}

/// `GET /robot/v1/metadata/x509/{email}`.
pub(crate) async fn service_account_x509(
    Ax(state): Ax<Arc<State>>,
    Path(email): Path<String>,
) -> Response {
    account_keys(&state, &email).map_or_else(
        |not_found| *not_found,
        |keys| json_response(200, x509_body(&keys)),
    )
}

/// `GET /service_accounts/v1/jwk/{email}`.
pub(crate) async fn service_account_jwks(
    Ax(state): Ax<Arc<State>>,
    Path(email): Path<String>,
) -> Response {
    account_keys(&state, &email).map_or_else(
        |not_found| *not_found,
        |keys| json_response(200, jwks_body(&keys)),
    )
}
