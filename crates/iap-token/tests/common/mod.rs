//! Set-up shared by the integration tests: sources from the emulator's
//! service accounts, and requests to the apps behind its gate.

// Each test binary compiles this module and uses a part of it.
#![allow(dead_code)]

use http::HeaderMap;
use http::header::AUTHORIZATION;
use iap_emulator::ServiceAccount;
use iap_token::IdToken;
use iap_token::source::service_account::{ServiceAccountKey, ServiceAccountSource};

/// A source signing with the key of an emulator service account (its
/// `token_uri` is the emulator's).
pub fn key_source(sa: &ServiceAccount) -> ServiceAccountSource {
    ServiceAccountSource::new(ServiceAccountKey::from_json(sa.key_json()).unwrap())
}

/// `http://127.0.0.1:PORT` of an app's URL.
pub fn origin_of(url: &url::Url) -> String {
    url.origin().ascii_serialization()
}

/// A GET to `url` (an app behind the emulator's gate) carrying `token` as
/// a bearer token.
pub async fn get_with_token(url: impl reqwest::IntoUrl, token: &IdToken) -> reqwest::Response {
    get_with_headers(url, token_header(token)).await
}

/// A GET to `url` (an app behind the emulator's gate) with `headers`, e.g.
/// as `IapAuth::apply` left them.
pub async fn get_with_headers(url: impl reqwest::IntoUrl, headers: HeaderMap) -> reqwest::Response {
    reqwest::Client::new()
        .get(url)
        .headers(headers)
        .send()
        .await
        .expect("the gate answers")
}

fn token_header(token: &IdToken) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, token.header_value().clone());
    headers
}
