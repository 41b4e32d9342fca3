//! Google's identity endpoints: metadata server, OAuth token and
//! authorization endpoints, IAM Credentials, STS, signing keys, OIDC issuer.

use std::sync::Arc;

use axum::Router;

use crate::provision::Adc;
use crate::state::State;

pub(crate) mod sts;

/// The scope a consenting user grants a desktop client.
pub(crate) const USER_SCOPE: &str = "openid https://www.googleapis.com/auth/userinfo.email";

/// Every identity route.
pub(crate) fn routes() -> Router<Arc<State>> {
    Router::new()
}

/// The JSON of an ADC file.
pub(crate) fn adc_json(_state: &State, _adc: &Adc) -> serde_json::Value {
    todo!()
}
