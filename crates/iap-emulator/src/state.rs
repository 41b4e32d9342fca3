//! The emulator's shared state: keys, registries, counters, clock, faults.
//!
//! One `State` lives behind an `Arc` shared by the [`Emulator`](crate::Emulator)
//! handle and every server task. Locks are std locks held only for short,
//! non-async sections; counters are atomics so they are exact under any
//! concurrency.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::DecodingKey;
use serde::Serialize;

use crate::endpoint::{Endpoint, Fault};
use crate::gate::registry::GateRegistry;
use crate::keys::{RsaKey, random_b64, random_hex};
use crate::locks::{lock, read, write};
use crate::provision::Grant;

/// A Google Cloud project.
#[derive(Debug, Clone)]
pub(crate) struct Project {
    pub(crate) id: String,
    pub(crate) number: String,
}

/// A service account and its keys.
#[derive(Debug)]
pub(crate) struct ServiceAccountRecord {
    pub(crate) unique_id: String,
    /// Every published key: user-managed keys (key files) and the
    /// Google-managed one, once made.
    pub(crate) keys: Vec<Arc<RsaKey>>,
    /// The Google-managed key IAM `signJwt` signs with (also in `keys`),
    /// made on first use: no key file ever holds it.
    pub(crate) system_key: Option<Arc<RsaKey>>,
}

/// What an OAuth client is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientKind {
    /// An installed-app client: loopback redirects, refresh tokens.
    Desktop,
    /// An IAP OAuth client (the audience of a gated app).
    Iap,
}

/// An OAuth client.
#[derive(Debug, Clone)]
pub(crate) struct ClientRecord {
    pub(crate) secret: String,
    pub(crate) project_id: String,
    pub(crate) kind: ClientKind,
    /// Who the authorization endpoint signs in when no `login_hint` is given.
    pub(crate) consenting_user: Option<String>,
}

/// A refresh token's grant.
#[derive(Debug, Clone)]
pub(crate) struct RefreshRecord {
    pub(crate) client_id: String,
    pub(crate) email: String,
    pub(crate) scope: String,
}

/// An authorization code waiting to be exchanged.
#[derive(Debug, Clone)]
pub(crate) struct CodeRecord {
    pub(crate) client_id: String,
    pub(crate) email: String,
    pub(crate) redirect_uri: String,
    pub(crate) challenge: Option<(String, String)>,
    pub(crate) scope: String,
    pub(crate) expires: u64,
}

/// An issued access token.
#[derive(Debug, Clone)]
pub(crate) struct AccessRecord {
    /// Who holds it: a service-account or user email, or a `principal://` URI.
    pub(crate) principal: String,
    pub(crate) exp: u64,
}

/// A workload identity pool provider.
#[derive(Debug, Clone)]
pub(crate) struct PoolRecord {
    pub(crate) project_number: String,
    pub(crate) pool_id: String,
}

/// Claims of a Google ID token, before `iss`/`iat`/`exp`/`jti` are added.
#[derive(Debug, Clone)]
pub(crate) struct IdTokenSpec {
    pub(crate) aud: String,
    pub(crate) sub: String,
    pub(crate) azp: Option<String>,
    pub(crate) email: Option<String>,
    /// `google.compute_engine` and the like (metadata `format=full`).
    pub(crate) extra: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Exact counters keyed by (name, label).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    map: RwLock<HashMap<String, HashMap<String, Arc<AtomicU64>>>>,
}

impl Counters {
    pub(crate) fn add(&self, name: &str, label: &str, n: u64) {
        if let Some(c) = read(&self.map).get(name).and_then(|m| m.get(label)) {
            c.fetch_add(n, Ordering::SeqCst);
            return;
        }
        let mut map = write(&self.map);
        map.entry(name.to_owned())
            .or_default()
            .entry(label.to_owned())
            .or_default()
            .fetch_add(n, Ordering::SeqCst);
    }

    pub(crate) fn get(&self, name: &str, label: &str) -> u64 {
        read(&self.map)
            .get(name)
            .and_then(|m| m.get(label))
            .map_or(0, |c| c.load(Ordering::SeqCst))
    }

    pub(crate) fn total(&self, name: &str) -> u64 {
        read(&self.map)
            .get(name)
            .map_or(0, |m| m.values().map(|c| c.load(Ordering::SeqCst)).sum())
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        read(&self.map)
            .iter()
            .map(|(name, labels)| {
                let labels = labels
                    .iter()
                    .map(|(l, c)| (l.clone(), c.load(Ordering::SeqCst)))
                    .collect();
                (name.clone(), labels)
            })
            .collect()
    }

    pub(crate) fn reset(&self) {
        write(&self.map).clear();
    }
}

/// The random faults of one endpoint ([`State::inject_at_rate`]).
#[derive(Debug)]
struct RandomFaults {
    /// The probability that a request is faulted, in (0, 1].
    rate: f64,
    /// What a faulted request gets, one drawn uniformly; never empty.
    faults: Vec<Fault>,
}

/// Everything the emulator knows; shared by all its servers.
pub(crate) struct State {
    /// `http://127.0.0.1:PORT` or, with TLS, `https://127.0.0.1:PORT` (no
    /// trailing slash).
    pub(crate) base_url: String,
    pub(crate) project: Project,
    clock_offset: AtomicI64,
    lifetime: AtomicU64,
    /// Google's signing keys; `[0]` signs, all are published.
    google_keys: RwLock<Vec<Arc<RsaKey>>>,
    /// The key of the emulator's own OIDC issuer (WIF subject tokens).
    pub(crate) oidc_key: Arc<RsaKey>,
    pub(crate) service_accounts: RwLock<HashMap<String, ServiceAccountRecord>>,
    pub(crate) clients: RwLock<HashMap<String, ClientRecord>>,
    /// User email -> numeric `sub`.
    pub(crate) users: RwLock<HashMap<String, String>>,
    pub(crate) refresh_tokens: RwLock<HashMap<String, RefreshRecord>>,
    pub(crate) codes: Mutex<HashMap<String, CodeRecord>>,
    pub(crate) access_tokens: RwLock<HashMap<String, AccessRecord>>,
    /// (caller principal, target service account) pairs allowed to impersonate.
    pub(crate) impersonation: RwLock<HashSet<(String, String)>>,
    /// Provider audience (`//iam.googleapis.com/...`) -> pool.
    pub(crate) pools: RwLock<HashMap<String, PoolRecord>>,
    pub(crate) metadata_account: RwLock<Option<String>>,
    /// The metadata server's identity-token cache: key -> (token, exp).
    pub(crate) metadata_cache: Mutex<HashMap<String, (String, u64)>>,
    revoked: RwLock<HashSet<String>>,
    pub(crate) counters: Counters,
    faults: Mutex<HashMap<Endpoint, VecDeque<Fault>>>,
    /// Faults drawn at random per request, after the queued ones.
    random_faults: Mutex<HashMap<Endpoint, RandomFaults>>,
    /// The IAP gate's registry of apps (owned by `crate::gate`).
    pub(crate) gate: GateRegistry,
    /// Every server task (main server, app listeners), aborted when the
    /// owning [`Emulator`](crate::Emulator) drops. Kept here rather than in
    /// the handle so apps created over HTTP live as long as the emulator.
    pub(crate) tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The emulator's CA and server certificate when it serves https.
    pub(crate) tls: Option<crate::tls::Tls>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl State {
    pub(crate) fn new(
        base_url: String,
        project: Project,
        lifetime: u64,
        google_key: RsaKey,
        oidc_key: RsaKey,
    ) -> State {
        State {
            base_url,
            project,
            clock_offset: AtomicI64::new(0),
            lifetime: AtomicU64::new(lifetime),
            google_keys: RwLock::new(vec![Arc::new(google_key)]),
            oidc_key: Arc::new(oidc_key),
            service_accounts: RwLock::default(),
            clients: RwLock::default(),
            users: RwLock::default(),
            refresh_tokens: RwLock::default(),
            codes: Mutex::default(),
            access_tokens: RwLock::default(),
            impersonation: RwLock::default(),
            pools: RwLock::default(),
            metadata_account: RwLock::default(),
            metadata_cache: Mutex::default(),
            revoked: RwLock::default(),
            counters: Counters::default(),
            faults: Mutex::default(),
            random_faults: Mutex::default(),
            gate: Default::default(),
            tasks: Mutex::default(),
            tls: None,
        }
    }

    // ---- clock and lifetime ----------------------------------------------

    /// Unix seconds, including the clock offset.
    pub(crate) fn now(&self) -> u64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let off = self.clock_offset.load(Ordering::SeqCst);
        (i64::try_from(real).unwrap_or(i64::MAX))
            .saturating_add(off)
            .max(0) as u64
    }

    pub(crate) fn clock_offset(&self) -> i64 {
        self.clock_offset.load(Ordering::SeqCst)
    }

    pub(crate) fn set_clock_offset(&self, secs: i64) {
        self.clock_offset.store(secs, Ordering::SeqCst);
        lock(&self.metadata_cache).clear();
    }

    pub(crate) fn advance_clock(&self, secs: i64) {
        self.clock_offset.fetch_add(secs, Ordering::SeqCst);
        lock(&self.metadata_cache).clear();
    }

    /// Lifetime in seconds of every token minted from now on.
    pub(crate) fn lifetime(&self) -> u64 {
        self.lifetime.load(Ordering::SeqCst)
    }

    pub(crate) fn set_lifetime(&self, secs: u64) {
        self.lifetime.store(secs.max(1), Ordering::SeqCst);
        lock(&self.metadata_cache).clear();
    }

    // ---- keys ------------------------------------------------------------

    /// The key Google signs ID tokens with now.
    pub(crate) fn google_signing_key(&self) -> Arc<RsaKey> {
        read(&self.google_keys)[0].clone()
    }

    /// All published Google keys, current first.
    pub(crate) fn google_keys(&self) -> Vec<Arc<RsaKey>> {
        read(&self.google_keys).clone()
    }

    /// Makes `key` the signing key; the previous one stays published (as
    /// Google does during a rotation), older ones are retired.
    pub(crate) fn rotate_google_key(&self, key: RsaKey) {
        let mut keys = write(&self.google_keys);
        keys.insert(0, Arc::new(key));
        keys.truncate(2);
    }

    /// The verification key of a published Google key (current or
    /// rotated-out but still published).
    pub(crate) fn google_decoding_key(&self, kid: &str) -> Option<DecodingKey> {
        read(&self.google_keys)
            .iter()
            .find(|k| k.kid() == kid)
            .map(|k| k.decoding_key())
    }

    /// The verification key `kid` of service account `email` (for
    /// JWT-bearer assertions and self-signed JWTs).
    pub(crate) fn service_account_decoding_key(
        &self,
        email: &str,
        kid: &str,
    ) -> Option<DecodingKey> {
        read(&self.service_accounts)
            .get(email)?
            .keys
            .iter()
            .find(|k| k.kid() == kid)
            .map(|k| k.decoding_key())
    }

    // ---- revocation ------------------------------------------------------

    /// Whether a token's `jti` (or an opaque token itself) was revoked.
    pub(crate) fn is_revoked(&self, jti: &str) -> bool {
        read(&self.revoked).contains(jti)
    }

    pub(crate) fn revoke_id(&self, jti_or_token: &str) {
        write(&self.revoked).insert(jti_or_token.to_owned());
    }

    /// Revokes a token string: a JWT by its `jti`, an opaque token
    /// (access or refresh token) as itself. Returns what was revoked.
    pub(crate) fn revoke_token(&self, token: &str) -> String {
        let id = jwt_claims(token)
            .and_then(|c| c.get("jti").and_then(|j| j.as_str()).map(str::to_owned))
            .unwrap_or_else(|| token.to_owned());
        self.revoke_id(&id);
        id
    }

    // ---- counters --------------------------------------------------------

    /// Adds one to counter (`name`, `label`).
    pub(crate) fn count(&self, name: &str, label: &str) {
        self.counters.add(name, label, 1);
    }

    // ---- faults ----------------------------------------------------------

    /// Queues `fault` for the next `times` requests to `endpoint`.
    pub(crate) fn inject(&self, endpoint: Endpoint, fault: Fault, times: usize) {
        let mut faults = lock(&self.faults);
        let q = faults.entry(endpoint).or_default();
        q.extend(std::iter::repeat_n(fault, times));
    }

    /// From now on, each request to `endpoint` that finds no queued fault
    /// fails with probability `rate` (clamped to 0..=1), with a fault drawn
    /// uniformly from `faults`. A rate of 0 or no faults turns it off.
    pub(crate) fn inject_at_rate(&self, endpoint: Endpoint, rate: f64, faults: Vec<Fault>) {
        let mut random = lock(&self.random_faults);
        let rate = if rate.is_nan() {
            0.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        if rate == 0.0 || faults.is_empty() {
            random.remove(&endpoint);
        } else {
            random.insert(endpoint, RandomFaults { rate, faults });
        }
    }

    /// Takes the next queued fault of `endpoint`, else draws one at the
    /// endpoint's random rate, if it has one.
    pub(crate) fn take_fault(&self, endpoint: Endpoint) -> Option<Fault> {
        if let Some(fault) = lock(&self.faults)
            .get_mut(&endpoint)
            .and_then(VecDeque::pop_front)
        {
            return Some(fault);
        }
        let random = lock(&self.random_faults);
        let drawn = random.get(&endpoint)?;
        (fastrand::f64() < drawn.rate)
            .then(|| drawn.faults[fastrand::usize(..drawn.faults.len())].clone())
    }

    /// Drops every queued fault and every random rate.
    pub(crate) fn clear_faults(&self) {
        lock(&self.faults).clear();
        lock(&self.random_faults).clear();
    }

    pub(crate) fn pending_faults(&self, endpoint: Endpoint) -> usize {
        lock(&self.faults).get(&endpoint).map_or(0, VecDeque::len)
    }

    // ---- minting ---------------------------------------------------------

    /// Mints a Google-signed ID token and counts it under `id_tokens`
    /// (by audience) and `id_tokens.<grant>` (by audience).
    pub(crate) fn mint_id_token(&self, grant: Grant, spec: IdTokenSpec) -> String {
        #[derive(Serialize)]
        struct Claims<'a> {
            iss: &'static str,
            aud: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            azp: Option<&'a str>,
            sub: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            email: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            email_verified: Option<bool>,
            iat: u64,
            exp: u64,
            jti: String,
            #[serde(flatten, skip_serializing_if = "Option::is_none")]
            extra: Option<&'a serde_json::Map<String, serde_json::Value>>,
        }
        let iat = self.now();
        let claims = Claims {
            iss: "https://accounts.google.com",
            aud: &spec.aud,
            azp: spec.azp.as_deref(),
            sub: &spec.sub,
            email: spec.email.as_deref(),
            email_verified: spec.email.as_ref().map(|_| true),
            iat,
            exp: iat + self.lifetime(),
            jti: random_hex(16),
            extra: spec.extra.as_ref(),
        };
        let token = self.google_signing_key().sign_jwt(&claims);
        self.count(crate::counter::ID_TOKENS, &spec.aud);
        self.count(&crate::counter::id_tokens_by(grant), &spec.aud);
        token
    }

    /// Mints an opaque access token for `principal`; returns it and its
    /// lifetime in seconds (the configured lifetime, or `lifetime` when
    /// shorter). Counted under `access_tokens` by grant.
    pub(crate) fn mint_access_token(
        &self,
        grant: Grant,
        principal: &str,
        lifetime: Option<u64>,
    ) -> (String, u64) {
        let lifetime = lifetime.map_or(self.lifetime(), |l| l.min(self.lifetime()).max(1));
        let token = format!("ya29.emu-{}", random_b64(32));
        write(&self.access_tokens).insert(
            token.clone(),
            AccessRecord {
                principal: principal.to_owned(),
                exp: self.now() + lifetime,
            },
        );
        self.count(crate::counter::ACCESS_TOKENS, grant.name());
        (token, lifetime)
    }

    /// The principal behind a live, unrevoked access token.
    pub(crate) fn access_token_principal(&self, token: &str) -> Option<String> {
        if self.is_revoked(token) {
            return None;
        }
        let rec = read(&self.access_tokens).get(token)?.clone();
        (rec.exp > self.now()).then_some(rec.principal)
    }

    /// Registers an OAuth client (GATE registers its apps' IAP clients here
    /// so the refresh grant's `audience` check knows their project).
    pub(crate) fn register_client(
        &self,
        client_id: &str,
        secret: &str,
        project_id: &str,
        kind: ClientKind,
    ) {
        write(&self.clients).insert(
            client_id.to_owned(),
            ClientRecord {
                secret: secret.to_owned(),
                project_id: project_id.to_owned(),
                kind,
                consenting_user: None,
            },
        );
    }

    /// The numeric user ID of `email`: a user's, else a service account's
    /// unique ID, else a new one, remembered as a user's from then on.
    pub(crate) fn user_id(&self, email: &str) -> String {
        if let Some(sub) = read(&self.users).get(email) {
            return sub.clone();
        }
        if let Some(account) = read(&self.service_accounts).get(email) {
            return account.unique_id.clone();
        }
        write(&self.users)
            .entry(email.to_owned())
            .or_insert_with(|| crate::keys::random_digits(21))
            .clone()
    }

    /// Registers the IAP OAuth client of a gated app in `project_id`.
    pub(crate) fn register_iap_client(&self, client_id: &str, project_id: &str) {
        self.register_client(client_id, &random_b64(18), project_id, ClientKind::Iap);
    }

    /// The project number of a project ID (the emulator's own, or a stable
    /// number derived from the ID for others).
    pub(crate) fn project_number(&self, project_id: &str) -> String {
        if project_id == self.project.id {
            return self.project.number.clone();
        }
        // FNV-1a: stable across runs, 12 digits like real project numbers.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in project_id.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        format!("{}", 100_000_000_000 + h % 900_000_000_000)
    }
}

/// The claims of a JWT, unverified (for revocation by token string).
pub(crate) fn jwt_claims(token: &str) -> Option<serde_json::Value> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}
