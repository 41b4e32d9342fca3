//! Control and observation over HTTP under `/_emulator/`.

use std::sync::Arc;

use axum::Router;

use crate::state::State;

/// The `/_emulator/` routes.
pub(crate) fn routes() -> Router<Arc<State>> {
    Router::new()
}
