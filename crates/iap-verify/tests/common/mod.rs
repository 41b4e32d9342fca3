//! Set-up shared by the verifier's tests: an emulator whose gate signs
//! assertions, a verifier for its default app, and assertions obtained
//! through the gate over real HTTP.
#![allow(dead_code)] // each test file uses a part of it

use iap_emulator::{App, Emulator, Endpoint};
use iap_verify::{IapVerifier, IapVerifierBuilder};
use serde_json::Value;

pub struct World {
    pub emu: Emulator,
    pub app: App,
}

impl World {
    pub async fn start() -> Self {
        let emu = Emulator::start().await.unwrap();
        let app = emu.app();
        Self { emu, app }
    }

    /// A builder for the default app's audience and the emulator's keys.
    pub fn builder(&self) -> IapVerifierBuilder {
        IapVerifier::builder()
            .audience(self.app.assertion_audience())
            .jwks_url(self.emu.iap_jwks_url())
    }

    pub fn verifier(&self) -> IapVerifier {
        self.builder().build().unwrap()
    }

    /// The assertion the gate adds to a request from `email` (an ID token
    /// for the app sent through the gate to the echo app).
    pub async fn assertion_via_gate(&self, app: &App, email: &str) -> String {
        let token = self.emu.mint_id_token(app.client_id(), email);
        let echo: Value = reqwest::Client::new()
            .get(app.url().clone())
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        echo["headers"]["x-goog-iap-jwt-assertion"]
            .as_str()
            .expect("the gate added an assertion")
            .to_owned()
    }

    /// How many times IAP's key set was fetched (counter `requests` of
    /// endpoint `iap.jwks`).
    pub fn key_fetches(&self) -> u64 {
        self.emu.requests(Endpoint::IapJwks)
    }
}

/// A compact JWT from raw header and claims JSON and a signature part.
pub fn jwt(header: &Value, claims: &Value, signature: &str) -> String {
    use base64::Engine as _;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.{signature}", b64(header), b64(claims))
}

/// The claims of a JWT, unverified.
pub fn claims_of(jwt: &str) -> Value {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// The header of a JWT, unverified.
pub fn header_of(jwt: &str) -> Value {
    use base64::Engine as _;
    let header = jwt.split('.').next().unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap()
}
