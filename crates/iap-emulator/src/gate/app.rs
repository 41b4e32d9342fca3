//! Apps behind the gate: their identity (IAP client ID, backend service,
//! allowlist). The builder that makes and serves them is in `builder.rs`.
//!
//! A leaf of the gate: it imports neither `state.rs` nor `server.rs`, so the
//! gate's registry in the shared state can hold apps without a cycle.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use url::Url;

use crate::locks::{read, write};

/// An app behind the emulator's IAP gate: where it is, and who IAP thinks it
/// is.
///
/// Cheap to clone; all clones are the same app. Get the default one with
/// [`Emulator::app`](crate::Emulator::app), make more with
/// [`Emulator::create_app`](crate::Emulator::create_app).
#[derive(Clone)]
pub struct App {
    pub(super) config: Arc<AppConfig>,
}

pub(crate) struct AppConfig {
    pub(super) url: Url,
    pub(super) public_url: Url,
    /// `scheme://host[:port]` of `public_url`.
    pub(super) public_origin: String,
    pub(super) client_id: String,
    pub(super) project_id: String,
    pub(super) project_number: String,
    pub(super) backend_service_id: String,
    pub(super) assertion_audience: String,
    pub(super) allowed_clients: RwLock<Vec<String>>,
    pub(super) google_managed_client: bool,
    pub(super) local_addr: Option<SocketAddr>,
    pub(super) signed_in_as: Option<String>,
    pub(super) access_levels: Vec<String>,
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("url", &self.config.url.as_str())
            .field("client_id", &self.config.client_id)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Where to send requests: the app's own listener
    /// (`http://127.0.0.1:PORT/`), or the URL given to
    /// [`AppBuilder::hosted_at`](crate::AppBuilder::hosted_at).
    pub fn url(&self) -> &Url {
        &self.config.url
    }

    /// The URL IAP believes it serves (by default [`url`](App::url)): the
    /// base of the `aud` of self-signed service-account JWTs.
    pub fn public_url(&self) -> &Url {
        &self.config.public_url
    }

    /// The app's IAP OAuth client ID, `NUMBER-xxxx.apps.googleusercontent.com`:
    /// the audience of the ID tokens it accepts, and the `client_id` of IAP's
    /// 302 to Google's sign-in.
    pub fn client_id(&self) -> &str {
        &self.config.client_id
    }

    /// The project the app belongs to.
    pub fn project_id(&self) -> &str {
        &self.config.project_id
    }

    /// The project number (the `NUMBER` of the assertion audience).
    pub fn project_number(&self) -> &str {
        &self.config.project_number
    }

    /// The backend service ID (the `ID` of the assertion audience).
    pub fn backend_service_id(&self) -> &str {
        &self.config.backend_service_id
    }

    /// The `aud` of the `x-goog-iap-jwt-assertion` the app receives, in
    /// the shape its builder chose: `/projects/NUMBER/global/backendServices/ID`
    /// (a load balancer's backend service, the default),
    /// `/projects/NUMBER/apps/PROJECT_ID`
    /// ([App Engine](crate::AppBuilder::app_engine))
    /// or `/projects/NUMBER/locations/REGION/services/NAME`
    /// ([Cloud Run](crate::AppBuilder::cloud_run)).
    pub fn assertion_audience(&self) -> &str {
        &self.config.assertion_audience
    }

    /// The user that requests without a token pass as, if the app was made
    /// with [`AppBuilder::signed_in_as`](crate::AppBuilder::signed_in_as).
    pub fn signed_in_as(&self) -> Option<&str> {
        self.config.signed_in_as.as_deref()
    }

    /// The access levels IAP reports in the assertion
    /// (`google.access_levels`), if any
    /// ([`AppBuilder::access_levels`](crate::AppBuilder::access_levels)).
    pub fn access_levels(&self) -> &[String] {
        &self.config.access_levels
    }

    /// The programmatic client IDs the app also accepts as `aud` (IAP's
    /// "programmatic access" allowlist).
    pub fn allowed_clients(&self) -> Vec<String> {
        read(&self.config.allowed_clients).clone()
    }

    /// Adds a client ID to the programmatic-access allowlist, at once for
    /// every request that follows.
    pub fn allow_client(&self, client_id: impl Into<String>) {
        let client_id = client_id.into();
        let mut allowed = write(&self.config.allowed_clients);
        if !allowed.contains(&client_id) {
            allowed.push(client_id);
        }
    }

    /// Whether the app is on a Google-managed OAuth client (see
    /// [`AppBuilder::google_managed_client`](crate::AppBuilder::google_managed_client)).
    pub fn is_google_managed_client(&self) -> bool {
        self.config.google_managed_client
    }

    /// Removes a client ID from the allowlist.
    pub fn disallow_client(&self, client_id: &str) {
        write(&self.config.allowed_clients).retain(|c| c != client_id);
    }

    /// The app's WebSocket echo: [`url`](App::url) with scheme `ws`
    /// (`wss` over TLS) and path `/ws`. Every [echo app](crate::AppBuilder::echo)
    /// answers a WebSocket upgrade on any path by echoing each message;
    /// the gate checks the handshake only, as IAP does.
    pub fn ws_url(&self) -> Url {
        let mut url = self.config.url.clone();
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        let _ = url.set_scheme(scheme);
        url.set_path("/ws");
        url
    }

    /// The address of the app's own listener; `None` for an app
    /// [hosted elsewhere](crate::AppBuilder::hosted_at).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.config.local_addr
    }
}

impl AppConfig {
    /// Whether an ID token for `aud` is one of the app's: its own IAP
    /// client (never, on a Google-managed client: nobody outside Google
    /// mints tokens for it) or an allowlisted programmatic client.
    pub(crate) fn accepts_client_audience(&self, aud: &str) -> bool {
        (aud == self.client_id && !self.google_managed_client) || self.allows_client(aud)
    }

    pub(crate) fn allows_client(&self, aud: &str) -> bool {
        read(&self.allowed_clients).iter().any(|c| c == aud)
    }

    pub(crate) fn google_managed_client(&self) -> bool {
        self.google_managed_client
    }

    /// Service-account JWT `aud`, all built on the origin of the public
    /// URL: the exact request URL (request path, no query), the origin's
    /// wildcard `ORIGIN/*`, or a path prefix `ORIGIN/PREFIX/*`, which
    /// covers the paths below `/PREFIX/` (not `/PREFIX` itself, nor
    /// `/PREFIXother`).
    pub(crate) fn accepts_url_audience(&self, aud: &str, path: &str) -> bool {
        let Some(rest) = aud.strip_prefix(self.public_origin.as_str()) else {
            return false;
        };
        if rest == path {
            return true;
        }
        match rest.strip_suffix('*') {
            // `/*`, `/api/*`: the path must start with everything before `*`.
            Some(prefix) if prefix.ends_with('/') && !prefix.contains('*') => {
                path.starts_with(prefix)
            }
            _ => false,
        }
    }
}

impl App {
    pub(crate) fn config(&self) -> &AppConfig {
        &self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(public_url: &str) -> AppConfig {
        let public_url: Url = public_url.parse().unwrap();
        AppConfig {
            url: public_url.clone(),
            public_origin: public_url.origin().ascii_serialization(),
            public_url,
            client_id: "1-abc.apps.googleusercontent.com".into(),
            project_id: "p".into(),
            project_number: "1".into(),
            backend_service_id: "2".into(),
            assertion_audience: "/projects/1/global/backendServices/2".into(),
            allowed_clients: RwLock::new(vec!["desktop".into()]),
            google_managed_client: false,
            local_addr: None,
            signed_in_as: None,
            access_levels: Vec::new(),
        }
    }

    #[test]
    fn url_audience_may_be_a_path_prefix_wildcard() {
        let app = config("https://app.example.com/");
        assert!(app.accepts_url_audience("https://app.example.com/api/*", "/api/v1/x"));
        assert!(app.accepts_url_audience("https://app.example.com/api/*", "/api/"));
        assert!(app.accepts_url_audience("https://app.example.com/api/v1/*", "/api/v1/x"));
        // The prefix ends at a path segment.
        assert!(!app.accepts_url_audience("https://app.example.com/api/*", "/apix/y"));
        assert!(!app.accepts_url_audience("https://app.example.com/api/*", "/api"));
        assert!(!app.accepts_url_audience("https://app.example.com/api/*", "/other/api/x"));
        // A `*` anywhere but at the end of a segment is no wildcard.
        assert!(!app.accepts_url_audience("https://app.example.com/a*", "/abc"));
        assert!(!app.accepts_url_audience("https://app.example.com/*/x/*", "/y/x/z"));
    }

    #[test]
    fn a_google_managed_client_accepts_only_allowlisted_clients() {
        let mut app = config("http://127.0.0.1:8080/");
        app.google_managed_client = true;
        assert!(!app.accepts_client_audience("1-abc.apps.googleusercontent.com"));
        assert!(app.accepts_client_audience("desktop"));
    }

    #[test]
    fn url_audience_is_the_exact_request_url_or_the_origin_wildcard() {
        let app = config("http://127.0.0.1:8080/");
        assert!(app.accepts_url_audience("http://127.0.0.1:8080/a/b", "/a/b"));
        assert!(app.accepts_url_audience("http://127.0.0.1:8080/*", "/a/b"));
        assert!(!app.accepts_url_audience("http://127.0.0.1:8080/a", "/a/b"));
        assert!(!app.accepts_url_audience("http://127.0.0.1:8080/a/b?x=1", "/a/b"));
        // A longer port is another origin, not a prefix match.
        assert!(!app.accepts_url_audience("http://127.0.0.1:80801/*", "/"));
        assert!(!app.accepts_url_audience("https://127.0.0.1:8080/*", "/"));
    }

    #[test]
    fn default_ports_are_left_out_of_the_origin() {
        let app = config("https://app.example.com:443/base/");
        assert!(app.accepts_url_audience("https://app.example.com/*", "/x"));
        assert!(app.accepts_url_audience("https://app.example.com/x", "/x"));
        assert!(!app.accepts_url_audience("https://app.example.com:443/*", "/x"));
    }

    #[test]
    fn client_audience_is_the_client_id_or_an_allowlisted_client() {
        let app = config("http://127.0.0.1:8080/");
        assert!(app.accepts_client_audience("1-abc.apps.googleusercontent.com"));
        assert!(app.accepts_client_audience("desktop"));
        assert!(!app.accepts_client_audience("other"));
    }
}
