//! [`IapGateLayer`]: the gate as a tower layer, for servers you run yourself.

use tower_layer::Layer;

use super::app::App;
use super::service::{Gate, IapGate};
use crate::Emulator;

/// Puts the IAP gate of one [`App`] in front of a service.
///
/// Get one from [`Emulator::gate_layer`] (or [`IapGateLayer::new`]). It works
/// with any service over `http::Request<B>` / `http::Response<B>`: an axum
/// `Router`, a hyper service, a tonic gRPC server (`Server::builder().layer(..)`).
///
/// ```
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use iap_emulator::Emulator;
///
/// let emu = Emulator::start().await?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let url: url::Url = format!("http://{}/", listener.local_addr()?).parse()?;
/// // An app that you serve; the emulator only knows its URL.
/// let app = emu.create_app().hosted_at(url.clone());
/// let router = axum::Router::new()
///     .route("/", axum::routing::get(|| async { "behind IAP" }))
///     .layer(emu.gate_layer(&app));
/// tokio::spawn(async move { axum::serve(listener, router).await });
/// # let client = reqwest::Client::new();
/// # assert_eq!(client.get(url.clone()).send().await?.status(), 401);
/// # let token = emu.mint_id_token(app.client_id(), "alice@example.com");
/// # let answer = client.get(url).bearer_auth(token).send().await?;
/// # assert_eq!(answer.text().await?, "behind IAP");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct IapGateLayer {
    gate: Gate,
}

impl IapGateLayer {
    /// The gate of `app`, checking tokens against `emulator`'s keys, clock
    /// and revocations.
    pub fn new(emulator: &Emulator, app: &App) -> Self {
        Self {
            gate: Gate::new(&emulator.state, app.clone()),
        }
    }

    /// The app this layer's gate protects.
    pub fn app(&self) -> &App {
        self.gate.app()
    }
}

impl<S> Layer<S> for IapGateLayer {
    type Service = IapGate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IapGate::new(inner, self.gate.clone())
    }
}
