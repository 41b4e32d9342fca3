//! Control and observation over HTTP under `/_emulator/` (JSON in and out),
//! so peers in any language can drive the emulator as Rust tests do.
//!
//! The routes are listed in the crate docs ("Control over HTTP"), next to
//! the Rust methods they mirror.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State as Ax};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Emulator;
use crate::endpoint::{Endpoint, Fault};
use crate::locks::read;
use crate::state::State;

/// The `/_emulator/` routes.
pub(crate) fn routes() -> Router<Arc<State>> {
    Router::new()
        .route("/_emulator/info", get(info))
        .route("/_emulator/counters", get(counters))
        .route("/_emulator/counter", get(counter))
        .route("/_emulator/counters/reset", post(reset_counters))
        .route("/_emulator/lifetime", post(lifetime))
        .route("/_emulator/clock", post(clock))
        .route("/_emulator/revoke", post(revoke))
        .route("/_emulator/faults", post(inject).delete(clear_faults))
        .route("/_emulator/faults/rate", post(inject_at_rate))
        .route("/_emulator/rotate-keys", post(rotate_keys))
        .route("/_emulator/service-accounts", post(service_account))
        .route("/_emulator/clients", post(client))
        .route("/_emulator/users", post(user))
        .route(
            "/_emulator/impersonation",
            post(allow_impersonation).delete(deny_impersonation),
        )
        .route("/_emulator/pools", post(pool))
        .route("/_emulator/subject-tokens", post(subject_token))
        .route("/_emulator/id-tokens", post(id_token))
        .route(
            "/_emulator/metadata-service-account",
            post(metadata_service_account),
        )
        .route("/_emulator/apps", post(create_app))
}

fn bad(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({"error": msg.into()}))).into_response()
}

/// JSON body, or a 400 naming the problem.
fn body<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, Box<Response>> {
    let bytes = if bytes.is_empty() {
        b"{}".as_slice()
    } else {
        bytes
    };
    serde_json::from_slice(bytes)
        .map_err(|e| Box::new(bad(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}"))))
}

macro_rules! parse {
    ($bytes:expr) => {
        match body(&$bytes) {
            Ok(v) => v,
            Err(resp) => return *resp,
        }
    };
}

async fn info(Ax(state): Ax<Arc<State>>) -> Response {
    let emu = Emulator::view(state.clone());
    let apps: Vec<Value> = emu
        .apps()
        .iter()
        .map(|a| json!({"url": a.url().as_str(), "client_id": a.client_id(), "project_id": a.project_id()}))
        .collect();
    Json(json!({
        "url": emu.url(),
        "token_uri": emu.token_uri(),
        "metadata_host": emu.metadata_host(),
        "jwks_url": emu.jwks_url(),
        "certs_v1_url": emu.certs_v1_url(),
        "iap_jwks_url": emu.iap_jwks_url(),
        "sts_url": emu.sts_url(),
        "oidc_issuer": emu.oidc_issuer(),
        "authorize_url": emu.authorize_url(),
        "project_id": emu.project_id(),
        "project_number": emu.project_number(),
        "metadata_service_account": emu.metadata_service_account(),
        "token_lifetime_seconds": state.lifetime(),
        "clock_offset_seconds": state.clock_offset(),
        "now": state.now(),
        "signing_key_ids": emu.signing_key_ids(),
        "apps": apps,
    }))
    .into_response()
}

async fn counters(Ax(state): Ax<Arc<State>>) -> Response {
    Json(state.counters.snapshot()).into_response()
}

#[derive(Deserialize)]
struct CounterQuery {
    name: String,
    #[serde(default)]
    label: String,
}

async fn counter(Ax(state): Ax<Arc<State>>, Query(q): Query<CounterQuery>) -> Response {
    let value = state.counters.get(&q.name, &q.label);
    Json(json!({"name": q.name, "label": q.label, "value": value})).into_response()
}

async fn reset_counters(Ax(state): Ax<Arc<State>>) -> Response {
    state.counters.reset();
    Json(json!({})).into_response()
}

#[derive(Deserialize)]
struct Lifetime {
    seconds: u64,
}

async fn lifetime(Ax(state): Ax<Arc<State>>, bytes: axum::body::Bytes) -> Response {
    let l: Lifetime = parse!(bytes);
    state.set_lifetime(l.seconds);
    Json(json!({"seconds": state.lifetime()})).into_response()
}

#[derive(Deserialize)]
struct Clock {
    offset_seconds: Option<i64>,
    advance_seconds: Option<i64>,
}

async fn clock(Ax(state): Ax<Arc<State>>, bytes: axum::body::Bytes) -> Response {
    let c: Clock = parse!(bytes);
    match (c.offset_seconds, c.advance_seconds) {
        (Some(o), None) => state.set_clock_offset(o),
        (None, Some(a)) => state.advance_clock(a),
        _ => {
            return bad(
                StatusCode::BAD_REQUEST,
                "give exactly one of offset_seconds, advance_seconds",
            );
        }
    }
    Json(json!({"offset_seconds": state.clock_offset(), "now": state.now()})).into_response()
}

#[derive(Deserialize)]
struct Revoke {
    token: Option<String>,
    jti: Option<String>,
}

async fn revoke(Ax(state): Ax<Arc<State>>, bytes: axum::body::Bytes) -> Response {
    let r: Revoke = parse!(bytes);
    let revoked = match (r.token, r.jti) {
        (Some(t), None) => state.revoke_token(&t),
        (None, Some(j)) => {
            state.revoke_id(&j);
            j
        }
        _ => return bad(StatusCode::BAD_REQUEST, "give exactly one of token, jti"),
    };
    Json(json!({ "revoked": revoked })).into_response()
}

#[derive(Deserialize)]
struct Inject {
    endpoint: String,
    fault: Fault,
    #[serde(default = "one")]
    times: usize,
}

fn one() -> usize {
    1
}

fn endpoint_named(name: &str) -> Result<Endpoint, Box<Response>> {
    Endpoint::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = Endpoint::ALL.iter().map(|e| e.name()).collect();
        Box::new(bad(
            StatusCode::BAD_REQUEST,
            format!("unknown endpoint {name:?}; one of {names:?}"),
        ))
    })
}

async fn inject(Ax(state): Ax<Arc<State>>, bytes: axum::body::Bytes) -> Response {
    let i: Inject = parse!(bytes);
    let endpoint = match endpoint_named(&i.endpoint) {
        Ok(endpoint) => endpoint,
        Err(answer) => return *answer,
    };
    state.inject(endpoint, i.fault, i.times);
    Json(json!({"pending": state.pending_faults(endpoint)})).into_response()
}

#[derive(Deserialize)]
struct InjectAtRate {
    endpoint: String,
    rate: f64,
    faults: Vec<Fault>,
}

async fn inject_at_rate(Ax(state): Ax<Arc<State>>, bytes: axum::body::Bytes) -> Response {
    let i: InjectAtRate = parse!(bytes);
    let endpoint = match endpoint_named(&i.endpoint) {
        Ok(endpoint) => endpoint,
        Err(answer) => return *answer,
    };
    if !(0.0..=1.0).contains(&i.rate) {
        return bad(
            StatusCode::BAD_REQUEST,
            format!("rate must be between 0 and 1, got {}", i.rate),
        );
    }
    let rate = if i.faults.is_empty() { 0.0 } else { i.rate };
    state.inject_at_rate(endpoint, rate, i.faults);
    Json(json!({ "rate": rate })).into_response()
}

async fn clear_faults(Ax(state): Ax<Arc<State>>) -> Response {
    state.clear_faults();
    Json(json!({})).into_response()
}

async fn rotate_keys(Ax(state): Ax<Arc<State>>) -> Response {
    let emu = Emulator::view(state);
    match emu.rotate_signing_key().await {
        Ok(()) => Json(json!({"kids": emu.signing_key_ids()})).into_response(),
        Err(e) => bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Deserialize)]
struct NewServiceAccount {
    name: String,
    project_id: Option<String>,
}

async fn service_account(Ax(state): Ax<Arc<State>>, bytes: axum::body::Bytes) -> Response {
    let n: NewServiceAccount = parse!(bytes);
    if n.name.is_empty() || n.name.contains(['@', '/', ' ']) {
        return bad(
            StatusCode::BAD_REQUEST,
            "name must be a bare account ID like \"runner\"",
        );
    }
    let emu = Emulator::view(state.clone());
    let project = n.project_id.unwrap_or_else(|| state.project.id.clone());
    match emu.create_service_account_in(&n.name, &project).await {
        Ok(sa) => (
            [(http::header::CONTENT_TYPE, "application/json")],
            sa.key_json().to_owned(),
        )
            .into_response(),
        Err(e) => bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Deserialize)]
struct NewClient {
    project_id: Option<String>,
}

async fn client(Ax(state): Ax<Arc<State>>, bytes: axum::body::Bytes) -> Response {
    let n: NewClient = parse!(bytes);
    let project = n.project_id.unwrap_or_else(|| state.project.id.clone());
    let c = Emulator::view(state).create_desktop_client(&project);
    Json(json!({
        "client_id": c.client_id(),
        "client_secret": c.client_secret(),
        "project_id": c.project_id(),
    }))
    .into_response()
}

#[derive(Deserialize)]
struct NewUser {
    client_id: String,
    email: String,
}

async fn user(Ax(state): Ax<Arc<State>>, bytes: axum::body::Bytes) -> Response {
    let n: NewUser = parse!(bytes);
    let Some(record) = read(&state.clients).get(&n.client_id).cloned() else {
        return bad(StatusCode::NOT_FOUND, format!("no client {}", n.client_id));
    };
    let client = crate::OAuthClient {
        client_id: n.client_id,
        client_secret: record.secret,
        project_id: record.project_id,
    };
    let user = Emulator::view(state).create_user(&client, &n.email);
    let mut v = user.authorized_user_value();
    v["sub"] = json!(user.sub());
    Json(v).into_response()
}

#[derive(Deserialize)]
struct Impersonation {
    caller: String,
    target: String,
}

async fn allow_impersonation(Ax(state): Ax<Arc<State>>, bytes: axum::body::Bytes) -> Response {
    let i: Impersonation = parse!(bytes);
    Emulator::view(state).allow_impersonation(&i.caller, &i.target);
    Json(json!({})).into_response()
}

async fn deny_impersonation(Ax(state): Ax<Arc<State>>, bytes: axum::body::Bytes) -> Response {
    let i: Impersonation = parse!(bytes);
    Emulator::view(state).deny_impersonation(&i.caller, &i.target);
    Json(json!({})).into_response()
}

#[derive(Deserialize)]
struct NewPool {
    pool_id: String,
    provider_id: String,
}

async fn pool(Ax(state): Ax<Arc<State>>, bytes: axum::body::Bytes) -> Response {
    let n: NewPool = parse!(bytes);
    let pool = Emulator::view(state).create_workload_pool(&n.pool_id, &n.provider_id);
    Json(json!({"audience": pool.audience(), "principal_example": pool.principal("SUBJECT")}))
        .into_response()
}

#[derive(Deserialize)]
struct SubjectTokenRequest {
    audience: String,
    subject: String,
}

async fn subject_token(Ax(state): Ax<Arc<State>>, bytes: axum::body::Bytes) -> Response {
    let r: SubjectTokenRequest = parse!(bytes);
    let token = crate::identity::sts::mint_subject_token(&state, &r.audience, &r.subject);
    Json(json!({ "token": token })).into_response()
}

#[derive(Deserialize)]
struct IdTokenRequest {
    audience: String,
    email: String,
}

async fn id_token(Ax(state): Ax<Arc<State>>, bytes: axum::body::Bytes) -> Response {
    let r: IdTokenRequest = parse!(bytes);
    let token = Emulator::view(state).mint_id_token(&r.audience, &r.email);
    Json(json!({ "token": token })).into_response()
}

#[derive(Deserialize)]
struct MetadataAccount {
    email: Option<String>,
}

async fn metadata_service_account(Ax(state): Ax<Arc<State>>, bytes: axum::body::Bytes) -> Response {
    let m: MetadataAccount = parse!(bytes);
    let emu = Emulator::view(state);
    emu.set_metadata_service_account(m.email.as_deref());
    Json(json!({"email": emu.metadata_service_account()})).into_response()
}

#[derive(Deserialize)]
struct NewApp {
    client_id: Option<String>,
    project_id: Option<String>,
    #[serde(default)]
    allow_clients: Vec<String>,
    #[serde(default)]
    google_managed_client: bool,
    /// `"app_engine"`, `"cloud_run"` (with `region` and `service`), or
    /// `"backend_service"` (the default).
    audience_shape: Option<String>,
    region: Option<String>,
    service: Option<String>,
    signed_in_as: Option<String>,
    #[serde(default)]
    access_levels: Vec<String>,
}

fn app_json(app: &crate::App) -> Value {
    json!({
        "url": app.url().as_str(),
        "client_id": app.client_id(),
        "project_id": app.project_id(),
        "assertion_audience": app.assertion_audience(),
        "allowed_clients": app.allowed_clients(),
        "google_managed_client": app.is_google_managed_client(),
    })
}

async fn create_app(Ax(state): Ax<Arc<State>>, bytes: axum::body::Bytes) -> Response {
    let n: NewApp = parse!(bytes);
    let emu = Emulator::view(state);
    let mut builder = emu.create_app();
    if let Some(c) = n.client_id {
        builder = builder.client_id(c);
    }
    if let Some(p) = n.project_id {
        builder = builder.project_id(p);
    }
    for c in n.allow_clients {
        builder = builder.allow_client(c);
    }
    if n.google_managed_client {
        builder = builder.google_managed_client();
    }
    builder = match (n.audience_shape.as_deref(), n.region, n.service) {
        (None | Some("backend_service"), None, None) => builder,
        (Some("app_engine"), None, None) => builder.app_engine(),
        (Some("cloud_run"), Some(region), Some(service)) => builder.cloud_run(region, service),
        _ => {
            return bad(
                StatusCode::BAD_REQUEST,
                "audience_shape is \"backend_service\", \"app_engine\", or \"cloud_run\" with region and service",
            );
        }
    };
    if let Some(email) = n.signed_in_as {
        builder = builder.signed_in_as(email);
    }
    if !n.access_levels.is_empty() {
        builder = builder.access_levels(n.access_levels);
    }
    match builder.echo().await {
        Ok(app) => Json(app_json(&app)).into_response(),
        Err(e) => bad(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
