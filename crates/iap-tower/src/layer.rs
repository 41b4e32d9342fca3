//! [`IapLayer`]: builds [`IapService`]s.

use iap_token::auth::IapAuth;
use tower_layer::Layer;

use crate::replay::DEFAULT_REPLAY_LIMIT;
use crate::service::IapService;

/// A [`Layer`] that authorizes requests for IAP: adds the cached ID token,
/// and retries once with a fresh token when IAP refuses it.
///
/// Where the token goes (`Authorization` or `Proxy-Authorization`), which
/// answers count as a refusal, and which requests get a token at all are
/// decided by the [`IapAuth`] it is built from.
///
/// ```
/// # fn run(auth: iap_token::IapAuth) {
/// use iap_tower::IapLayer;
///
/// let layer = IapLayer::new(auth).replay_limit(16 * 1024);
/// # let _ = layer; }
/// ```
#[derive(Clone, Debug)]
pub struct IapLayer {
    auth: IapAuth,
    replay_limit: usize,
}

impl IapLayer {
    /// Authorize requests with `auth`.
    pub fn new(auth: IapAuth) -> Self {
        IapLayer { auth, replay_limit: DEFAULT_REPLAY_LIMIT }
    }

    /// Keeps at most `bytes` of a streaming request body for a retry (default
    /// 64 KiB); larger bodies are not retried. `0` turns recording off
    /// (bodies that are cheap to clone are still retried).
    pub fn replay_limit(mut self, bytes: usize) -> Self {
        self.replay_limit = bytes;
        self
    }

    /// The authorization handle.
    pub fn auth(&self) -> &IapAuth {
        &self.auth
    }
}

impl<S> Layer<S> for IapLayer {
    type Service = IapService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IapService::with_replay_limit(inner, self.auth.clone(), self.replay_limit)
    }
}
