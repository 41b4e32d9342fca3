//! What the shared state holds for the gate: the [`GateRegistry`] of IAP's
//! assertion keys and the apps.
//!
//! A leaf of the gate: it imports neither `state.rs` nor `server.rs` (only
//! the app and key types), so the state can hold it without reaching back
//! into the gate's routes and services.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use super::app::App;
use super::assertion::{AssertionKeys, AssertionSigner};
use crate::locks::{read, write};

/// The gate's part of the emulator state: IAP's signing keys and the apps.
#[derive(Debug)]
pub(crate) struct GateRegistry {
    assertion_keys: RwLock<AssertionKeys>,
    /// `max-age` of the published assertion keys, seconds.
    keys_max_age: AtomicU64,
    apps: RwLock<Vec<App>>,
    pub(super) default_app: OnceLock<App>,
}

impl Default for GateRegistry {
    fn default() -> Self {
        Self {
            assertion_keys: RwLock::new(Vec::new()),
            keys_max_age: AtomicU64::new(DEFAULT_KEYS_MAX_AGE),
            apps: RwLock::default(),
            default_app: OnceLock::new(),
        }
    }
}

/// `Cache-Control: max-age` of IAP's published keys unless set otherwise.
const DEFAULT_KEYS_MAX_AGE: u64 = 3600;

impl GateRegistry {
    /// IAP's current assertion signing key, made on first use. `None` only
    /// if the system's random source fails.
    pub(crate) fn signer(&self) -> Option<Arc<AssertionSigner>> {
        if let Some(current) = read(&self.assertion_keys).first() {
            return Some(current.clone());
        }
        let mut keys = write(&self.assertion_keys);
        if keys.is_empty() {
            keys.push(Arc::new(AssertionSigner::generate()?));
        }
        keys.first().cloned()
    }

    /// The published keys, current first.
    pub(crate) fn assertion_keys(&self) -> AssertionKeys {
        let _ = self.signer();
        read(&self.assertion_keys).clone()
    }

    /// A new key signs from now on; the previous one stays published, the
    /// one before it is retired. `false` if no key could be made.
    pub(crate) fn rotate_assertion_key(&self) -> bool {
        let Some(key) = AssertionSigner::generate() else {
            return false;
        };
        let _ = self.signer();
        let mut keys = write(&self.assertion_keys);
        keys.insert(0, Arc::new(key));
        keys.truncate(2);
        true
    }

    pub(crate) fn set_keys_max_age(&self, secs: u64) {
        self.keys_max_age.store(secs, Ordering::Relaxed);
    }

    pub(crate) fn keys_max_age(&self) -> u64 {
        self.keys_max_age.load(Ordering::Relaxed)
    }

    pub(crate) fn register(&self, app: App) {
        write(&self.apps).push(app);
    }

    /// Every app, in creation order (the default app first).
    pub(crate) fn apps(&self) -> Vec<App> {
        read(&self.apps).clone()
    }

    /// The default echo app, if the emulator started one.
    pub(crate) fn default_app(&self) -> Option<App> {
        self.default_app.get().cloned()
    }
}
