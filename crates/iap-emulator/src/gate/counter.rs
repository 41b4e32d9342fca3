//! The gate's counter names (re-exported in [`crate::counter`]).
//!
//! A leaf of the gate: plain names, so the gate's service counts with them
//! without importing its parent module.

/// IAP 401s; label = app client ID.
pub const GATE_401: &str = "gate.401";
/// IAP 302s to Google's sign-in; label = app client ID.
pub const GATE_302: &str = "gate.302";
/// Requests passed to the app; label = app client ID.
pub const APP_HITS: &str = "app.hits";
/// Requests let through, by token; label = the token's `jti` (else
/// `sha256:` and 16 hex digits of its SHA-256).
pub const GATE_ACCEPTED: &str = "gate.accepted";
/// Requests authorized by `Proxy-Authorization`; label = app client ID.
pub const GATE_PROXY_AUTHORIZATION: &str = "gate.proxy_authorization";

/// The counter of IAP 401s for one reason, by app client ID:
/// `gate.401.expired`, `gate.401.audience`, ... (reasons in the
/// [gate docs](crate::gate#what-iap-answers-itself)).
pub fn gate_401_by(reason: &str) -> String {
    format!("{GATE_401}.{reason}")
}
