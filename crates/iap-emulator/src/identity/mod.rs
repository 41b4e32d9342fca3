//! Google's identity endpoints: metadata server, OAuth token and
//! authorization endpoints, IAM Credentials, STS, signing keys, OIDC issuer.
//!
//! Each submodule mirrors one Google service and answers with that
//! service's own error dialect (see [`crate::fault`]).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use http::HeaderMap;
use serde_json::{Value, json};

use crate::endpoint::Endpoint;
use crate::fault::{FaultLayer, oauth_error_response};
use crate::provision::{Adc, SubjectTokenSource};
use crate::state::State;

pub(crate) mod certs;
pub(crate) mod iam;
pub(crate) mod metadata;
pub(crate) mod oauth;
pub(crate) mod sts;

/// The scope a consenting user grants a desktop client.
pub(crate) const USER_SCOPE: &str = "openid https://www.googleapis.com/auth/userinfo.email";

/// Every identity route.
pub(crate) fn routes() -> Router<Arc<State>> {
    let sa = "/computeMetadata/v1/instance/service-accounts/{account}";
    Router::new()
        .route(
            "/",
            any(metadata::root).layer(FaultLayer::new(Endpoint::MetadataRoot)),
        )
        .route(
            &format!("{sa}/identity"),
            any(metadata::identity).layer(FaultLayer::new(Endpoint::MetadataIdentity)),
        )
        .route(
            &format!("{sa}/token"),
            any(metadata::token).layer(FaultLayer::new(Endpoint::MetadataToken)),
        )
        .route(
            "/computeMetadata/{*rest}",
            any(metadata::other).layer(FaultLayer::new(Endpoint::MetadataOther)),
        )
        .route(
            "/token",
            post(oauth::token).layer(FaultLayer::new(Endpoint::Token)),
        )
        .route(
            "/o/oauth2/v2/auth",
            get(oauth::authorize).layer(FaultLayer::new(Endpoint::Authorize)),
        )
        .route(
            "/v1/projects/{project}/serviceAccounts/{account_method}",
            post(iam::call),
        )
        .route(
            "/v1/token",
            post(sts::exchange).layer(FaultLayer::new(Endpoint::Sts)),
        )
        .route(
            "/oauth2/v3/certs",
            get(certs::jwks).layer(FaultLayer::new(Endpoint::Jwks)),
        )
        .route(
            "/oauth2/v1/certs",
            get(certs::x509).layer(FaultLayer::new(Endpoint::CertsV1)),
        )
        .route(
            "/robot/v1/metadata/x509/{email}",
            get(certs::service_account_x509).layer(FaultLayer::new(Endpoint::CertsV1)),
        )
        .route(
            "/service_accounts/v1/jwk/{email}",
            get(certs::service_account_jwks).layer(FaultLayer::new(Endpoint::Jwks)),
        )
        .route(
            "/oidc/.well-known/openid-configuration",
            get(sts::discovery).layer(FaultLayer::new(Endpoint::Oidc)),
        )
        .route(
            "/oidc/jwks",
            get(sts::oidc_jwks).layer(FaultLayer::new(Endpoint::Oidc)),
        )
        .route(
            "/oidc/subject_token",
            get(sts::subject_token).layer(FaultLayer::new(Endpoint::Oidc)),
        )
}

/// Request parameters from an urlencoded form or a JSON object body (or
/// both query and body: the body wins). JSON scalars become strings.
pub(crate) fn params(
    headers: &HeaderMap,
    query: Option<&str>,
    body: &Bytes,
) -> Result<HashMap<String, String>, String> {
    let mut out: HashMap<String, String> = match query {
        Some(q) => serde_urlencoded::from_str(q).unwrap_or_default(),
        None => HashMap::new(),
    };
    let is_json = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("json"));
    if is_json {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| format!("Invalid JSON payload received. {e}"))?;
        let Value::Object(map) = value else {
            return Err("Invalid JSON payload received. Expected an object.".into());
        };
        for (k, v) in map {
            let v = match v {
                Value::String(s) => s,
                Value::Null => continue,
                other => other.to_string(),
            };
            out.insert(k, v);
        }
    } else if !body.is_empty() {
        let form: Vec<(String, String)> =
            serde_urlencoded::from_bytes(body).map_err(|e| format!("Invalid form body: {e}"))?;
        out.extend(form);
    }
    Ok(out)
}

/// The parameters of an OAuth-style request (token endpoint, STS): the query
/// plus a form or JSON body, as [`params`] reads them. A body that is
/// neither is refused with OAuth's `invalid_request`.
pub(crate) struct OAuthParams(pub(crate) HashMap<String, String>);

impl<S: Send + Sync> FromRequest<S> for OAuthParams {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let (parts, body) = req.into_parts();
        let body = Bytes::from_request(Request::from_parts(parts.clone(), body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        params(&parts.headers, parts.uri.query(), &body)
            .map(OAuthParams)
            .map_err(|e| oauth_error_response(400, "invalid_request", &e))
    }
}

/// A JSON bool that may also arrive as a string (`"true"`), as
/// google-auth sends `includeEmail` / `useEmailAzp`.
pub(crate) fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// The JSON of an ADC file.
pub(crate) fn adc_json(state: &State, adc: &Adc) -> Value {
    let base = &state.base_url;
    match adc {
        Adc::ServiceAccount(sa) => serde_json::from_str(sa.key_json()).unwrap_or(Value::Null),
        Adc::AuthorizedUser(user) => user.authorized_user_value(),
        Adc::Impersonated {
            source,
            target,
            delegates,
        } => json!({
            "type": "impersonated_service_account",
            "service_account_impersonation_url":
                format!("{base}/v1/projects/-/serviceAccounts/{target}:generateAccessToken"),
            "source_credentials": adc_json(state, source),
            "delegates": delegates
                .iter()
                .map(|d| format!("projects/-/serviceAccounts/{d}"))
                .collect::<Vec<_>>(),
        }),
        Adc::ExternalAccount {
            pool,
            subject,
            source,
            impersonate,
        } => {
            let audience = pool.audience();
            let credential_source = match source {
                SubjectTokenSource::File(path) => json!({
                    "file": path.to_string_lossy(),
                    "format": {"type": "text"},
                }),
                SubjectTokenSource::Url => {
                    let query = serde_urlencoded::to_string([
                        ("audience", audience.as_str()),
                        ("subject", subject.as_str()),
                    ])
                    .unwrap_or_default();
                    json!({
                        "url": format!("{base}/oidc/subject_token?{query}"),
                        "headers": {"Metadata": "True"},
                        "format": {"type": "json", "subject_token_field_name": "id_token"},
                    })
                }
            };
            let mut v = json!({
                "type": "external_account",
                "audience": audience,
                "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
                "token_url": format!("{base}/v1/token"),
                "credential_source": credential_source,
                "universe_domain": "googleapis.com",
            });
            if let Some(target) = impersonate {
                v["service_account_impersonation_url"] = json!(format!(
                    "{base}/v1/projects/-/serviceAccounts/{target}:generateAccessToken"
                ));
            }
            v
        }
    }
}
