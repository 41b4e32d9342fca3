//! Set-up shared by the emulator's integration tests: an emulator, an HTTP
//! client that shows redirects instead of following them, and the requests
//! and decodings every test file makes.
#![allow(dead_code)] // each test file uses a part of it

use iap_emulator::{Emulator, ServiceAccount};
use jsonwebtoken::EncodingKey;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// An emulator with no gated app (most identity and control tests need none).
pub async fn start_without_app() -> Emulator {
    Emulator::builder()
        .without_default_app()
        .start()
        .await
        .unwrap()
}

/// A client that never follows redirects: IAP's and the consent page's
/// 302s are answers to look at.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A JWT's claims, unverified.
pub fn claims(jwt: &str) -> Value {
    jsonwebtoken::dangerous::insecure_decode::<Value>(jwt)
        .unwrap()
        .claims
}

/// `GET .../service-accounts/default/identity?audience=&format=` with the
/// flavor header, as a GCE workload asks.
pub async fn metadata_identity(emu: &Emulator, audience: &str, format: &str) -> reqwest::Response {
    http()
        .get(format!(
            "{}computeMetadata/v1/instance/service-accounts/default/identity",
            emu.url()
        ))
        .query(&[("audience", audience), ("format", format)])
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .unwrap()
}

/// Sends `request`: its JSON answer, whatever the status (the echo app's
/// account of a request, an endpoint's token answer).
pub async fn json_answer(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// The metadata server's access token answer (JSON), as a GCE workload
/// asks for it.
pub async fn metadata_access_token(emu: &Emulator) -> Value {
    json_answer(
        http()
            .get(format!(
                "{}computeMetadata/v1/instance/service-accounts/default/token",
                emu.url()
            ))
            .header("Metadata-Flavor", "Google"),
    )
    .await
}

/// The signing key of a service account's key file.
pub fn private_key(sa: &ServiceAccount) -> EncodingKey {
    let key: Value = serde_json::from_str(sa.key_json()).unwrap();
    EncodingKey::from_rsa_pem(key["private_key"].as_str().unwrap().as_bytes()).unwrap()
}

/// A form `POST`; the status and the JSON answer.
pub async fn post_form(url: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let resp = http().post(url).form(form).send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

/// A `GET` that must answer 200 with JSON (keys, discovery documents).
pub async fn get_json<T: DeserializeOwned>(url: &str) -> T {
    http()
        .get(url)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A call to the `/_emulator/` control API; the status and the JSON answer.
pub async fn control(
    emu: &Emulator,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let resp = http()
        .request(method, format!("{}_emulator/{path}", emu.url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// Google's OAuth error body.
pub fn oauth_error(error: &str, description: &str) -> Value {
    json!({"error": error, "error_description": description})
}
