//! IAP's public keys: fetched on first use, cached for the `max-age` the
//! key set is served with, refreshed in the background ahead of expiry,
//! fetched again at once for an unknown `kid` (at most once a minute), and
//! kept when a refresh fails.
//!
//! Reading the current set is one atomic load ([`ArcSwapOption`]). Every
//! fetch goes through one async mutex: callers that arrive while a fetch is
//! in flight wait for it and use its result (single flight), and the
//! unknown-`kid` rate limit lives under the same mutex.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use jsonwebtoken::DecodingKey;
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::VerifyError;

/// Lifetime of a key set served without `max-age`.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3600);
/// Bounds on the `max-age` honoured: a server saying `0` does not make us
/// fetch on every request, one saying a year does not pin a key forever.
const MIN_MAX_AGE: Duration = Duration::from_secs(2);
const MAX_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// At most one fetch for unknown `kid`s per this interval: garbage `kid`s
/// cannot make us hammer the key server.
pub(crate) const UNKNOWN_KID_INTERVAL: Duration = Duration::from_secs(60);
/// After a failed background refresh, the first retry waits this long,
/// doubling up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(5);
const MAX_RETRY: Duration = Duration::from_secs(300);
/// The largest key set body read.
const MAX_BODY: usize = 1 << 20;

/// One fetched key set.
pub(crate) struct KeySet {
    keys: HashMap<String, DecodingKey>,
    /// When the background task fetches the next set (3/4 of `max-age`).
    refresh_at: Instant,
    generation: u64,
}

impl KeySet {
    pub(crate) fn get(&self, kid: &str) -> Option<&DecodingKey> {
        self.keys.get(kid)
    }
}

struct FetchState {
    generation: u64,
    last_unknown_kid_fetch: Option<Instant>,
    /// The background refresh task (spawned with the first key set).
    refresher: Option<tokio::task::AbortHandle>,
}

pub(crate) struct Keys {
    url: String,
    client: reqwest::Client,
    current: ArcSwapOption<KeySet>,
    fetch: Mutex<FetchState>,
}

impl Drop for Keys {
    fn drop(&mut self) {
        // The background task holds only a weak reference; stop it with its
        // owner.
        if let Some(task) = self.fetch.get_mut().refresher.take() {
            task.abort();
        }
    }
}

/// `{"keys": [JWK, ...]}`, the members we read.
#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: Option<String>,
    crv: Option<String>,
    alg: Option<String>,
    kid: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

impl Keys {
    pub(crate) fn new(url: String, client: reqwest::Client) -> Self {
        Self {
            url,
            client,
            current: ArcSwapOption::empty(),
            fetch: Mutex::new(FetchState {
                generation: 0,
                last_unknown_kid_fetch: None,
                refresher: None,
            }),
        }
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The current key set, fetched first if there is none. A set past its
    /// `max-age` is still used: the background task is fetching the next
    /// one, and keeps the last good set while it cannot.
    pub(crate) async fn current(self: &Arc<Self>) -> Result<Arc<KeySet>, VerifyError> {
        match self.current.load_full() {
            Some(set) => Ok(set),
            None => self.fetch_after(0, false).await,
        }
    }

    /// The key `kid` of `set`, or of a set fetched again because `set` does
    /// not have it (rate-limited).
    pub(crate) async fn find(
        self: &Arc<Self>,
        set: Arc<KeySet>,
        kid: &str,
    ) -> Result<DecodingKey, VerifyError> {
        if let Some(key) = set.get(kid) {
            return Ok(key.clone());
        }
        let unknown = || VerifyError::UnknownKey {
            kid: crate::error::cut(kid, 64),
        };
        let set = match self.fetch_after(set.generation, true).await {
            Ok(newer) => newer,
            Err(e) => {
                tracing::warn!(error = %e, "iap-verify: fetching IAP's keys for an unknown kid failed; keeping the last good set");
                return Err(unknown());
            }
        };
        set.get(kid).cloned().ok_or_else(unknown)
    }

    /// Fetches a set newer than `generation`, or returns the one another
    /// caller fetched meanwhile. With `unknown_kid`, fetches only if the
    /// last such fetch was [`UNKNOWN_KID_INTERVAL`] ago.
    async fn fetch_after(
        self: &Arc<Self>,
        generation: u64,
        unknown_kid: bool,
    ) -> Result<Arc<KeySet>, VerifyError> {
        let mut state = self.fetch.lock().await;
        if state.generation != generation
            && let Some(set) = self.current.load_full()
        {
            return Ok(set);
        }
        if unknown_kid {
            let now = Instant::now();
            if state
                .last_unknown_kid_fetch
                .is_some_and(|last| now.duration_since(last) < UNKNOWN_KID_INTERVAL)
            {
                return self.current.load_full().ok_or_else(|| self.no_keys());
            }
            state.last_unknown_kid_fetch = Some(now);
        }
        let set = Arc::new(self.download(state.generation + 1).await?);
        state.generation = set.generation;
        self.current.store(Some(set.clone()));
        if state.refresher.is_none() {
            state.refresher = self.spawn_refresher();
        }
        Ok(set)
    }

    fn no_keys(&self) -> VerifyError {
        VerifyError::Keys {
            url: self.url.clone(),
            source: Arc::from(Box::<dyn std::error::Error + Send + Sync>::from(
                "no key set fetched yet",
            )),
        }
    }

    /// Starts the task that fetches the next set ahead of expiry. It holds
    /// the keys weakly, so it ends when the verifier is dropped (and
    /// [`Drop`] aborts it while it sleeps).
    fn spawn_refresher(self: &Arc<Self>) -> Option<tokio::task::AbortHandle> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let keys = Arc::downgrade(self);
        Some(runtime.spawn(refresh_loop(keys)).abort_handle())
    }

    async fn download(&self, generation: u64) -> Result<KeySet, VerifyError> {
        let fail = |source: Box<dyn std::error::Error + Send + Sync>| VerifyError::Keys {
            url: self.url.clone(),
            source: Arc::from(source),
        };
        let response = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| fail(e.into()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(fail(format!("the key server answered {status}").into()));
        }
        let max_age = response
            .headers()
            .get_all(http::header::CACHE_CONTROL)
            .iter()
            .find_map(|v| v.to_str().ok().and_then(max_age))
            .unwrap_or(DEFAULT_MAX_AGE)
            .clamp(MIN_MAX_AGE, MAX_MAX_AGE);
        if response
            .content_length()
            .is_some_and(|len| len > MAX_BODY as u64)
        {
            return Err(fail("the key set is larger than 1 MiB".into()));
        }
        let body = response.bytes().await.map_err(|e| fail(e.into()))?;
        if body.len() > MAX_BODY {
            return Err(fail("the key set is larger than 1 MiB".into()));
        }
        let set: JwkSet = serde_json::from_slice(&body)
            .map_err(|e| fail(format!("not a JWK Set: {e}").into()))?;
        let keys: HashMap<String, DecodingKey> =
            set.keys.into_iter().filter_map(es256_key).collect();
        if keys.is_empty() {
            return Err(fail("the key set has no ES256 (P-256) key".into()));
        }
        tracing::debug!(url = %self.url, keys = keys.len(), max_age = max_age.as_secs(), "iap-verify: fetched IAP's keys");
        let now = Instant::now();
        Ok(KeySet {
            keys,
            refresh_at: now + max_age * 3 / 4,
            generation,
        })
    }

    #[cfg(test)]
    pub(crate) async fn refresher(&self) -> Option<tokio::task::AbortHandle> {
        self.fetch.lock().await.refresher.clone()
    }
}

/// A P-256 public key usable for ES256, by `kid`; other keys are skipped.
fn es256_key(jwk: Jwk) -> Option<(String, DecodingKey)> {
    let ec = jwk.kty.as_deref() == Some("EC") && jwk.crv.as_deref() == Some("P-256");
    let es256 = jwk.alg.as_deref().is_none_or(|alg| alg == "ES256");
    if !(ec && es256) {
        return None;
    }
    let key = DecodingKey::from_ec_components(jwk.x.as_deref()?, jwk.y.as_deref()?).ok()?;
    Some((jwk.kid?, key))
}

/// The `max-age` of a `Cache-Control` value; `no-cache` / `no-store` count
/// as 0.
fn max_age(value: &str) -> Option<Duration> {
    value.split(',').find_map(|directive| {
        let directive = directive.trim();
        if directive.eq_ignore_ascii_case("no-cache") || directive.eq_ignore_ascii_case("no-store")
        {
            return Some(Duration::ZERO);
        }
        let (name, secs) = directive.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("max-age") {
            return None;
        }
        secs.trim()
            .trim_matches('"')
            .parse()
            .ok()
            .map(Duration::from_secs)
    })
}

/// Fetches the next key set ahead of the current one's expiry, forever,
/// holding the keys only while fetching.
async fn refresh_loop(keys: Weak<Keys>) {
    let mut retry = FIRST_RETRY;
    loop {
        let wait = {
            let Some(keys) = keys.upgrade() else { return };
            match keys.current.load().as_ref() {
                Some(set) => set.refresh_at.saturating_duration_since(Instant::now()),
                None => retry,
            }
        };
        tokio::time::sleep(wait).await;
        let Some(strong) = keys.upgrade() else { return };
        let generation = strong.current.load().as_ref().map_or(0, |s| s.generation);
        match strong.fetch_after(generation, false).await {
            Ok(_) => retry = FIRST_RETRY,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = retry.as_secs(), "iap-verify: refreshing IAP's keys failed; keeping the last good set");
                drop(strong);
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(MAX_RETRY);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        let secs = |v: &str| max_age(v).map(|d| d.as_secs());
        assert_eq!(secs("public, max-age=3600, must-revalidate"), Some(3600));
        assert_eq!(secs("Max-Age = 5"), Some(5));
        assert_eq!(secs("no-cache"), Some(0));
        assert_eq!(secs("public"), None);
        assert_eq!(secs("max-age=soon"), None);
    }

    #[test]
    fn only_p256_es256_keys_are_kept() {
        let jwk = |kty: &str, crv: &str, alg: Option<&str>| Jwk {
            kty: Some(kty.into()),
            crv: Some(crv.into()),
            alg: alg.map(Into::into),
            kid: Some("k".into()),
            x: Some("AAAA".into()),
            y: Some("AAAA".into()),
        };
        assert!(es256_key(jwk("EC", "P-256", Some("ES256"))).is_some());
        assert!(es256_key(jwk("EC", "P-256", None)).is_some());
        assert!(es256_key(jwk("EC", "P-384", Some("ES384"))).is_none());
        assert!(es256_key(jwk("RSA", "P-256", Some("RS256"))).is_none());
        assert!(es256_key(jwk("EC", "P-256", Some("HS256"))).is_none());
    }
}
