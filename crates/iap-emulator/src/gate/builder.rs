//! Making apps behind the gate: [`AppBuilder`] picks an app's identity, then
//! serves it on its own listener (echo, reverse proxy, your service) or
//! registers one you host yourself.

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response};
use tokio::net::TcpListener;
use tower_service::Service;
use url::Url;

use super::app::{App, AppConfig};
use super::echo;
use super::proxy::ReverseProxy;
use super::service::{Gate, IapGate};
use crate::Emulator;
use crate::keys::{random_digits, random_hex};
use crate::state::State;

/// Makes a new [`App`]: pick its identity, then how it is served.
///
/// ```
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use iap_emulator::Emulator;
///
/// let emu = Emulator::start().await?;
/// // An echo app whose IAP also accepts a desktop client's tokens.
/// let app = emu
///     .create_app()
///     .allow_client("123-desktop.apps.googleusercontent.com")
///     .echo()
///     .await?;
/// // The gate in front of another server.
/// let proxied = emu.create_app().proxy_to("http://127.0.0.1:8080/".parse()?).await?;
/// // The gate in front of your own axum router or tonic server.
/// let own = emu.create_app().serve(axum::Router::new()).await?;
/// # assert!(app.allowed_clients().iter().any(|c| c == "123-desktop.apps.googleusercontent.com"));
/// # assert_ne!(proxied.url(), own.url());
/// # Ok(()) }
/// ```
#[must_use = "an AppBuilder does nothing until echo(), proxy_to(), serve() or hosted_at()"]
pub struct AppBuilder<'a> {
    emulator: &'a Emulator,
    client_id: Option<String>,
    project_id: Option<String>,
    backend_service_id: Option<String>,
    shape: AudienceShape,
    allowed_clients: Vec<String>,
    google_managed_client: bool,
    public_url: Option<Url>,
    listen: SocketAddr,
    signed_in_as: Option<String>,
    access_levels: Vec<String>,
}

/// Which product IAP protects, as the assertion's `aud` shows it.
#[derive(Debug, Clone)]
enum AudienceShape {
    BackendService,
    AppEngine,
    CloudRun { region: String, service: String },
}

impl fmt::Debug for AppBuilder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppBuilder")
            .field("client_id", &self.client_id)
            .field("project_id", &self.project_id)
            .field("public_url", &self.public_url)
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

impl<'a> AppBuilder<'a> {
    pub(crate) fn new(emulator: &'a Emulator) -> Self {
        Self {
            emulator,
            client_id: None,
            project_id: None,
            backend_service_id: None,
            shape: AudienceShape::BackendService,
            allowed_clients: Vec::new(),
            google_managed_client: false,
            public_url: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            signed_in_as: None,
            access_levels: Vec::new(),
        }
    }

    /// The IAP OAuth client ID (default: a fresh
    /// `NUMBER-xxxx.apps.googleusercontent.com` of the app's project).
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    /// The project (default: the emulator's project).
    pub fn project_id(mut self, project_id: impl Into<String>) -> Self {
        self.project_id = Some(project_id.into());
        self
    }

    /// The backend service ID in the assertion's audience (default: random,
    /// 19 digits).
    pub fn backend_service_id(mut self, id: impl Into<String>) -> Self {
        self.backend_service_id = Some(id.into());
        self
    }

    /// The app is an App Engine app: the assertion's `aud` is
    /// `/projects/NUMBER/apps/PROJECT_ID`.
    pub fn app_engine(mut self) -> Self {
        self.shape = AudienceShape::AppEngine;
        self
    }

    /// The app is Cloud Run service `service` in `region` with IAP enabled
    /// on the service itself: the assertion's `aud` is
    /// `/projects/NUMBER/locations/REGION/services/NAME`.
    pub fn cloud_run(mut self, region: impl Into<String>, service: impl Into<String>) -> Self {
        self.shape = AudienceShape::CloudRun {
            region: region.into(),
            service: service.into(),
        };
        self
    }

    /// Requests that carry no token pass as `email`, with a correctly
    /// signed assertion, as if a browser had signed in to IAP (its session
    /// cookie): for running an app behind a local IAP by hand
    /// (`iap emulator --front URL --as EMAIL`). Requests with a token are
    /// still judged by it.
    pub fn signed_in_as(mut self, email: impl Into<String>) -> Self {
        self.signed_in_as = Some(email.into());
        self
    }

    /// The access levels IAP reports for every request, in the assertion's
    /// `google.access_levels` (e.g. `accessPolicies/123/accessLevels/corp`).
    pub fn access_levels<I, T>(mut self, levels: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.access_levels = levels.into_iter().map(Into::into).collect();
        self
    }

    /// Also accept ID tokens whose `aud` is this programmatic client ID.
    pub fn allow_client(mut self, client_id: impl Into<String>) -> Self {
        self.allowed_clients.push(client_id.into());
        self
    }

    /// Puts the app on a Google-managed OAuth client, IAP's default when it
    /// is enabled directly on a Cloud Run service: ID tokens for the app's
    /// [client ID](App::client_id) are refused, since only Google could
    /// mint them; ID tokens of an [allowlisted](Self::allow_client)
    /// programmatic client and service-account JWTs pass. The refusal has
    /// its own reason, `managed_client` (see
    /// [what IAP answers itself](super#what-iap-answers-itself)).
    pub fn google_managed_client(mut self) -> Self {
        self.google_managed_client = true;
        self
    }

    /// The URL IAP believes it serves, e.g. `https://app.example.com/`.
    ///
    /// Only its scheme, host and port matter: a service-account JWT must
    /// have `aud` = `SCHEME://HOST[:PORT]/request/path`,
    /// `SCHEME://HOST[:PORT]/*` or `SCHEME://HOST[:PORT]/PREFIX/*` built
    /// from it. Default: the app's own
    /// listener URL (`http://127.0.0.1:PORT/`), which is what a client
    /// building `aud` from the URL it calls produces.
    pub fn public_url(mut self, url: Url) -> Self {
        self.public_url = Some(url);
        self
    }

    /// The address the app listens on (default `127.0.0.1:0`).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Serves the built-in [echo app](super#the-echo-app) behind the gate.
    pub async fn echo(self) -> std::io::Result<App> {
        self.serve(echo::router()).await
    }

    /// Serves a reverse proxy to `upstream` behind the gate: bodies stream
    /// both ways, HTTP/2 requests go upstream over h2c (so a gRPC server
    /// works), `Host` is kept.
    pub async fn proxy_to(self, upstream: Url) -> std::io::Result<App> {
        let proxy = ReverseProxy::new(&upstream);
        self.serve(proxy).await
    }

    /// Serves `service` behind the gate on the app's own port, HTTP/1.1 and
    /// h2c: an axum `Router`, tonic `Routes`, or any tower service over
    /// `http::Request<axum::body::Body>` that never fails.
    ///
    /// The request body is axum's (wrapping hyper's `Incoming`, streamed)
    /// because the app's listener is the emulator's own accept loop, which
    /// also lets a `reset` fault drop the connection.
    pub async fn serve<S, B>(self, service: S) -> std::io::Result<App>
    where
        S: Service<Request<Body>, Response = Response<B>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let listener = TcpListener::bind(self.listen).await?;
        let addr = listener.local_addr()?;
        let emulator = self.emulator;
        let state = emulator.state.clone();
        let scheme = if state.tls.is_some() { "https" } else { "http" };
        let url = Url::parse(&format!("{scheme}://{addr}/")).map_err(std::io::Error::other)?;
        let app = self.build(&state, url, Some(addr));
        let gated = IapGate::new(service, Gate::new(&state, app.clone()));
        let task = crate::server::serve(
            listener,
            Router::new().fallback_service(gated),
            state.clone(),
            crate::server::Security::for_app(&state),
        );
        state.gate.register(app.clone());
        emulator.own_task(task);
        Ok(app)
    }

    /// An app served by you at `url` (where clients send requests): the
    /// emulator runs no listener; put [`Emulator::gate_layer`] in front of
    /// your service.
    pub fn hosted_at(self, url: Url) -> App {
        let state = self.emulator.state.clone();
        let app = self.build(&state, url, None);
        state.gate.register(app.clone());
        app
    }

    fn build(self, state: &Arc<State>, url: Url, local_addr: Option<SocketAddr>) -> App {
        let project_id = self.project_id.unwrap_or_else(|| state.project.id.clone());
        let project_number = state.project_number(&project_id);
        let client_id = self.client_id.unwrap_or_else(|| {
            format!(
                "{project_number}-{}.apps.googleusercontent.com",
                random_hex(16)
            )
        });
        let backend_service_id = self.backend_service_id.unwrap_or_else(|| random_digits(19));
        let public_url = self.public_url.unwrap_or_else(|| url.clone());
        let public_origin = public_url.origin().ascii_serialization();
        state.register_iap_client(&client_id, &project_id);
        let assertion_audience = match &self.shape {
            AudienceShape::BackendService => {
                format!("/projects/{project_number}/global/backendServices/{backend_service_id}")
            }
            AudienceShape::AppEngine => format!("/projects/{project_number}/apps/{project_id}"),
            AudienceShape::CloudRun { region, service } => {
                format!("/projects/{project_number}/locations/{region}/services/{service}")
            }
        };
        App {
            config: Arc::new(AppConfig {
                assertion_audience,
                signed_in_as: self.signed_in_as,
                access_levels: self.access_levels,
                url,
                public_url,
                public_origin,
                client_id,
                project_id,
                project_number,
                backend_service_id,
                allowed_clients: RwLock::new(self.allowed_clients),
                google_managed_client: self.google_managed_client,
                local_addr,
            }),
        }
    }
}
