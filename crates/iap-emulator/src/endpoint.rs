//! The emulator's endpoints and the faults they can be made to answer with:
//! plain data, queued in the shared state, rendered and applied in `fault.rs`.
//!
//! A leaf: it imports nothing of the crate, so `state.rs` can hold the fault
//! queues without reaching back to the code that applies them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// An endpoint of the emulator, the unit of fault injection and of the
/// `requests` counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Endpoint {
    /// `GET /`: metadata-server detection.
    #[serde(rename = "metadata.root")]
    MetadataRoot,
    /// `/computeMetadata/v1/instance/service-accounts/default/identity`.
    #[serde(rename = "metadata.identity")]
    MetadataIdentity,
    /// `/computeMetadata/v1/instance/service-accounts/default/token`.
    #[serde(rename = "metadata.token")]
    MetadataToken,
    /// Any other `/computeMetadata/v1/...` path (email, project ID, ...).
    #[serde(rename = "metadata.other")]
    MetadataOther,
    /// `POST /token`: the OAuth token endpoint.
    #[serde(rename = "token")]
    Token,
    /// `GET /o/oauth2/v2/auth`: the authorization (consent) endpoint.
    #[serde(rename = "authorize")]
    Authorize,
    /// IAM Credentials `:generateIdToken`.
    #[serde(rename = "iam.generateIdToken")]
    GenerateIdToken,
    /// IAM Credentials `:generateAccessToken`.
    #[serde(rename = "iam.generateAccessToken")]
    GenerateAccessToken,
    /// IAM Credentials `:signJwt`.
    #[serde(rename = "iam.signJwt")]
    SignJwt,
    /// `POST /v1/token`: STS token exchange.
    #[serde(rename = "sts")]
    Sts,
    /// `GET /oauth2/v3/certs`: Google's JWKS.
    #[serde(rename = "jwks")]
    Jwks,
    /// `GET /oauth2/v1/certs`: Google's kid -> X.509 PEM map.
    #[serde(rename = "certs.v1")]
    CertsV1,
    /// `/oidc/...`: the emulator's own OIDC issuer for workload identity.
    #[serde(rename = "oidc")]
    Oidc,
    /// `GET /iap/verify/public_key-jwk`: IAP's ES256 JWKS.
    #[serde(rename = "iap.jwks")]
    IapJwks,
    /// The IAP gate in front of the apps.
    #[serde(rename = "gate")]
    Gate,
}

impl Endpoint {
    /// Every endpoint, for listings.
    pub const ALL: [Endpoint; 15] = [
        Endpoint::MetadataRoot,
        Endpoint::MetadataIdentity,
        Endpoint::MetadataToken,
        Endpoint::MetadataOther,
        Endpoint::Token,
        Endpoint::Authorize,
        Endpoint::GenerateIdToken,
        Endpoint::GenerateAccessToken,
        Endpoint::SignJwt,
        Endpoint::Sts,
        Endpoint::Jwks,
        Endpoint::CertsV1,
        Endpoint::Oidc,
        Endpoint::IapJwks,
        Endpoint::Gate,
    ];

    /// The endpoint's name: the label of the `requests` counter and the
    /// `endpoint` field of `POST /_emulator/faults`.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::MetadataRoot => "metadata.root",
            Endpoint::MetadataIdentity => "metadata.identity",
            Endpoint::MetadataToken => "metadata.token",
            Endpoint::MetadataOther => "metadata.other",
            Endpoint::Token => "token",
            Endpoint::Authorize => "authorize",
            Endpoint::GenerateIdToken => "iam.generateIdToken",
            Endpoint::GenerateAccessToken => "iam.generateAccessToken",
            Endpoint::SignJwt => "iam.signJwt",
            Endpoint::Sts => "sts",
            Endpoint::Jwks => "jwks",
            Endpoint::CertsV1 => "certs.v1",
            Endpoint::Oidc => "oidc",
            Endpoint::IapJwks => "iap.jwks",
            Endpoint::Gate => "gate",
        }
    }

    /// Parses [`Endpoint::name`].
    pub fn from_name(name: &str) -> Option<Endpoint> {
        Endpoint::ALL.into_iter().find(|e| e.name() == name)
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the next answer of an endpoint does instead of its normal work.
///
/// Over HTTP (`POST /_emulator/faults`) a fault is JSON:
/// `{"kind":"status","status":503}` (optional `error`, `message`),
/// `{"kind":"delay","millis":1500}`, `{"kind":"malformed"}`, `{"kind":"reset"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Fault {
    /// Answer with this HTTP status and Google's error body for the endpoint.
    Status {
        /// HTTP status code.
        status: u16,
        /// OAuth `error` code, or the API `status` (`UNAVAILABLE`); a default
        /// matching the status code when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// `error_description` / `message`; a default when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// Wait this long, then answer normally.
    Delay {
        /// Milliseconds to wait.
        millis: u64,
    },
    /// Answer 200 with a truncated, unparseable body.
    Malformed,
    /// Drop the connection (TCP reset) without answering.
    Reset,
}

impl Fault {
    /// A failure with this status and the default Google error body for it
    /// (e.g. 503 -> `temporarily_unavailable` / `UNAVAILABLE`).
    pub fn status(status: u16) -> Fault {
        Fault::Status {
            status,
            error: None,
            message: None,
        }
    }

    /// A failure with this status, error code and message.
    pub fn error(status: u16, error: impl Into<String>, message: impl Into<String>) -> Fault {
        Fault::Status {
            status,
            error: Some(error.into()),
            message: Some(message.into()),
        }
    }

    /// A delay before the normal answer.
    pub fn delay(delay: Duration) -> Fault {
        Fault::Delay {
            millis: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// What kind of fault this is, as counted in
    /// [`faults_by`](crate::counter::faults_by): the status code for
    /// [`Fault::Status`] (`"503"`), else the JSON `kind` (`"delay"`,
    /// `"malformed"`, `"reset"`).
    pub fn label(&self) -> String {
        match self {
            Fault::Status { status, .. } => status.to_string(),
            Fault::Delay { .. } => "delay".into(),
            Fault::Malformed => "malformed".into(),
            Fault::Reset => "reset".into(),
        }
    }
}

#[cfg(test)]
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_names_round_trip() {
        for e in Endpoint::ALL {
            assert_eq!(Endpoint::from_name(e.name()), Some(e));
            let json = serde_json::to_string(&e).unwrap();
            assert_eq!(json, format!("\"{}\"", e.name()));
        }
    }

    #[test]
    fn fault_json_forms_parse() {
        let f: Fault = serde_json::from_str(r#"{"kind":"status","status":503}"#).unwrap();
        assert_eq!(f, Fault::status(503));
        let f: Fault = serde_json::from_str(r#"{"kind":"delay","millis":5}"#).unwrap();
        assert_eq!(f, Fault::delay(Duration::from_millis(5)));
        let f: Fault = serde_json::from_str(r#"{"kind":"reset"}"#).unwrap();
        assert_eq!(f, Fault::Reset);
    }

    #[test]
    fn fault_labels_name_the_status_or_the_kind() {
        assert_eq!(Fault::status(503).label(), "503");
        assert_eq!(Fault::error(429, "x", "y").label(), "429");
        assert_eq!(Fault::delay(Duration::from_secs(1)).label(), "delay");
        assert_eq!(Fault::Malformed.label(), "malformed");
        assert_eq!(Fault::Reset.label(), "reset");
    }
}
