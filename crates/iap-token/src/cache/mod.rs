//! [`TokenCache`]: ID tokens per audience, read lock-free, fetched once,
//! refreshed ahead of expiry in the background.
//!
//! ```
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let emu = iap_emulator::Emulator::start().await?;
//! # let source: std::sync::Arc<dyn iap_token::TokenSource> = std::sync::Arc::new(
//! #     iap_token::source::metadata::MetadataSource::with_host(&emu.metadata_host())?,
//! # );
//! use iap_token::{Audience, TokenCache};
//!
//! let cache = TokenCache::new(source); // no runtime needed to build it
//! let aud = Audience::new("123-abc.apps.googleusercontent.com");
//! let token = cache.token(&aud).await?; // first call fetches, concurrent callers share it
//! assert!(cache.cached(&aud).is_some()); // then: a lock-free read, no allocation
//! # Ok(()) }
//! ```
//!
//! # How it works
//!
//! - **Lock-free reads.** Each audience has an entry whose current token
//!   sits in an [`ArcSwapOption`]; the audience -> entry table is a
//!   copy-on-write snapshot in an [`ArcSwap`] (a linear scan by pointer,
//!   then by text, for a handful of audiences; a hash index beyond). A
//!   reader first checks its thread's note of the entry's token (entry,
//!   generation, deadline; see `local`), else loads the slot, checks two
//!   deadlines against the wall clock, notes the token and clones it.
//!   Handles with a fixed audience ([`IapAuth`](crate::IapAuth)'s `Attach`) keep the entry itself
//!   and skip the table.
//! - **No shared write per read.** A stored token comes with a few equal
//!   copies (twice the cores, at most 16, each with its own reference counts and its
//!   own header bytes); a thread's note holds its copy, and a reader
//!   clones that copy (or only its header value), so readers on several
//!   cores do not bounce one counter between them. The copies are made
//!   once per token, when it arrives.
//! - **Single flight.** A fetch is a shared future stored in the entry;
//!   every caller that needs a token while it runs awaits the same one, so
//!   10,000 cold callers cause one request. The future does not depend on
//!   any one caller: if the caller driving it is dropped, the others drive it.
//!   Each caller still gets its own retry budget: one that joined after some
//!   of the fetch's attempts had failed waits for one more fetch (still one
//!   at a time) when that one fails with a retryable error.
//! - **Refresh ahead.** When a reader sees the token inside its refresh
//!   window it spawns the fetch on the current tokio runtime (once: an
//!   atomic flag) and keeps returning the current token. With no runtime on
//!   the thread, nothing is spawned and the next [`TokenCache::token`] call
//!   refreshes inline. A failed background refresh keeps the current token
//!   and waits (exponential backoff with jitter, at most half the token's
//!   remaining usable time) before the next attempt.
//! - **Task lifetime.** Background refreshes hold only the entry and the
//!   source, never the cache; dropping the last clone of the cache cancels
//!   them.
//!
//! # Deadlines, and short-lived tokens
//!
//! For a token with lifetime `L` (`exp - iat`; without `iat`, from receipt to `exp`):
//! - it is handed out until `exp - margin`, with
//!   `margin = min(expiry_margin, L / 10)` (default `expiry_margin` 10 s);
//! - its refresh starts when less than `ahead - U(0, jitter')` remains, with
//!   `ahead = min(refresh_ahead, L / 2)` (default `refresh_ahead` 240 s) and
//!   the jitter scaled alike (`jitter' = refresh_jitter * ahead / refresh_ahead`,
//!   default `refresh_jitter` 30 s).
//!
//! So an hour-long Google token refreshes between 4 minutes and 3.5
//! minutes before expiry and is never used in its last 10 s, while a 5 s
//! token refreshes from its midpoint and is never used in its last 0.5 s.
//! A token that arrives already inside its refresh window (a source that
//! caches, a skewed clock) is used, and the next refresh waits a quarter of
//! its usable time (at most 30 s) rather than starting on every read.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use futures_util::FutureExt as _;
use futures_util::future::Shared;
use tokio_util::sync::CancellationToken;

use crate::source::BoxFuture;
use crate::{Audience, Error, IdToken, Result, TokenSource};

mod local;

/// Below this many audiences, lookups scan the table instead of hashing.
const LINEAR_SCAN_MAX: usize = 8;

/// A cache of ID tokens per audience in front of a [`TokenSource`].
///
/// Cheap to clone (an `Arc` inside); clones share the tokens. Dropping the
/// last clone cancels any background refresh. See the [module
/// docs](self) for the design and the deadline rules.
#[derive(Clone)]
pub struct TokenCache {
    inner: Arc<CacheInner>,
}

struct CacheInner {
    core: Arc<Core>,
    table: ArcSwap<Table>,
    /// Serialises writers of `table` (readers never take it).
    table_writer: Mutex<()>,
}

/// What an entry's fetches need: never the table, so a spawned refresh
/// does not keep the cache alive.
pub(crate) struct Core {
    source: Arc<dyn TokenSource>,
    config: Config,
    /// Cancelled when the cache is dropped; every fetch watches it.
    dropped: CancellationToken,
}

#[derive(Default)]
struct Table {
    entries: Vec<Arc<Entry>>,
    /// Built only past `LINEAR_SCAN_MAX` entries.
    index: HashMap<Audience, usize>,
}

type Flight = Shared<BoxFuture<'static, Result<IdToken, Arc<Error>>>>;

/// One audience: its current token and its fetch in flight, if any.
pub(crate) struct Entry {
    audience: Audience,
    current: ArcSwapOption<Slot>,
    /// Changes (after `current`) whenever `current` does: what a thread's
    /// note of the token is checked against (see [`local`]).
    generation: AtomicU64,
    flight: Mutex<Option<(Flight, Arc<AtomicU32>)>>,
    /// A background refresh has been started and has not finished.
    refreshing: AtomicBool,
    /// No background refresh before this (ms since the epoch): backoff after failures.
    retry_after_ms: AtomicU64,
    /// Failed background refreshes in a row.
    failures: AtomicU32,
}

/// What a caller that needs a fetch gets.
enum Next {
    /// A token stored since the caller looked, outside its refresh window.
    Fresh(IdToken),
    /// The one fetch in flight for the entry, and how many of its attempts
    /// had failed when the caller joined it.
    Flight(Flight, u32),
}

impl Next {
    /// The token, or the flight's error. A caller that joined a flight
    /// after some of its attempts had failed was not given its whole retry
    /// budget: when that flight fails with a retryable error it waits for
    /// one more flight (joining a running one, still one at a time).
    async fn wait(self, entry: &Arc<Entry>, core: &Arc<Core>) -> Result<IdToken, Arc<Error>> {
        match self {
            Next::Fresh(token) => Ok(token),
            Next::Flight(flight, 0) => flight.await,
            Next::Flight(flight, failed_before) => match flight.await {
                Err(e) if is_retryable(&e) => {
                    tracing::debug!(audience = %entry.audience, failed_before, "joined a failing fetch late; fetching again with a whole retry budget");
                    match entry.flight_or_start(core) {
                        Next::Fresh(token) => Ok(token),
                        Next::Flight(flight, _) => flight.await,
                    }
                }
                other => other,
            },
        }
    }
}

/// A token with its deadlines, computed once when it arrives.
struct Slot {
    token: IdToken,
    /// Per-core copies of `token` (empty on a single core), so that the
    /// hot path's clones of the token and of its header value write to a
    /// counter of this core's own.
    copies: Box<[IdToken]>,
    /// Start a refresh from here (ms since the epoch).
    refresh_at_ms: u64,
    /// Never hand the token out from here (ms since the epoch).
    usable_until_ms: u64,
}

impl Slot {
    /// This thread's copy of the token.
    #[inline]
    fn local(&self) -> &IdToken {
        match self.copies.len() {
            0 => &self.token,
            n => &self.copies[crate::per_core::index(n)],
        }
    }
}

#[derive(Clone, Debug)]
struct Config {
    refresh_ahead: Duration,
    refresh_jitter: Duration,
    expiry_margin: Duration,
    max_retries: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    fetch_deadline: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            refresh_ahead: Duration::from_secs(240),
            refresh_jitter: Duration::from_secs(30),
            expiry_margin: Duration::from_secs(10),
            max_retries: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            fetch_deadline: Duration::from_secs(30),
        }
    }
}

/// Options of a [`TokenCache`]; from [`TokenCache::builder`].
///
/// ```
/// # use std::{sync::Arc, time::Duration};
/// # fn f(source: Arc<dyn iap_token::TokenSource>) {
/// let cache = iap_token::TokenCache::builder(source)
///     .refresh_ahead(Duration::from_secs(300))
///     .expiry_margin(Duration::from_secs(30))
///     .max_retries(5)
///     .build();
/// # }
/// ```
#[derive(Clone)]
pub struct TokenCacheBuilder {
    source: Arc<dyn TokenSource>,
    config: Config,
}

impl fmt::Debug for TokenCacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCacheBuilder")
            .field("source", &self.source)
            .field("config", &self.config)
            .finish()
    }
}

impl TokenCacheBuilder {
    /// Options without a source yet, for
    /// [`IapAuthBuilder::cache`](crate::auth::IapAuthBuilder::cache), which
    /// supplies the source. (A cache built from it without
    /// [`TokenCacheBuilder::source`] answers every fetch with an error
    /// saying so.)
    pub fn options() -> Self {
        TokenCacheBuilder {
            source: Arc::new(NoSource),
            config: Config::default(),
        }
    }

    /// Start refreshing when less than this remains before `exp`
    /// (default 240 s; at most half the token's lifetime is used).
    pub fn refresh_ahead(mut self, ahead: Duration) -> Self {
        self.config.refresh_ahead = ahead;
        self
    }

    /// Random spread subtracted from `refresh_ahead`, so that many
    /// processes started together do not refresh together (default 30 s).
    pub fn refresh_jitter(mut self, jitter: Duration) -> Self {
        self.config.refresh_jitter = jitter;
        self
    }

    /// Never hand out a token that expires within this margin (default
    /// 10 s; at most a tenth of the token's lifetime is used), so it does
    /// not expire on its way to IAP or under clock skew.
    pub fn expiry_margin(mut self, margin: Duration) -> Self {
        self.config.expiry_margin = margin;
        self
    }

    /// How many times a fetch that failed transiently
    /// ([`Error::is_transient`]) is retried (default 3). Permanent errors
    /// are never retried.
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.config.max_retries = retries;
        self
    }

    /// Exponential backoff between retries: starts at `initial`, doubles,
    /// capped at `max`, each delay jittered down by up to half (defaults
    /// 100 ms and 5 s).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.config.initial_backoff = initial;
        self.config.max_backoff = max.max(initial);
        self
    }

    /// The most one fetch may take, all its attempts and backoffs together
    /// (default 30 s): a token endpoint that never answers fails the
    /// fetch's callers after this, with an [`Error::Transport`] naming
    /// [`TokenSource::endpoint`], instead of hanging them. Each attempt gets
    /// an equal share of what is left among the attempts left (the last
    /// one all of it; 7.5 s for the first of the default 4), so an attempt
    /// that hangs is abandoned and tried again within the deadline.
    pub fn fetch_deadline(mut self, deadline: Duration) -> Self {
        self.config.fetch_deadline = deadline;
        self
    }

    /// Sets (or replaces) the source.
    pub fn source(mut self, source: Arc<dyn TokenSource>) -> Self {
        self.source = source;
        self
    }

    /// Builds the cache. Needs no running runtime.
    pub fn build(self) -> TokenCache {
        TokenCache {
            inner: Arc::new(CacheInner {
                core: Arc::new(Core {
                    source: self.source,
                    config: self.config,
                    dropped: CancellationToken::new(),
                }),
                table: ArcSwap::from_pointee(Table::default()),
                table_writer: Mutex::new(()),
            }),
        }
    }
}

/// The source of [`TokenCacheBuilder::options`] until one is given.
#[derive(Debug)]
struct NoSource;

impl TokenSource for NoSource {
    fn id_token<'a>(&'a self, _: &'a Audience) -> BoxFuture<'a, Result<IdToken>> {
        Box::pin(async {
            Err(Error::config(
                "this TokenCache has no token source: build it with TokenCache::builder(source) \
                          or call TokenCacheBuilder::source",
            ))
        })
    }
}

impl TokenCache {
    /// A cache with the default options. Needs no running runtime.
    pub fn new(source: Arc<dyn TokenSource>) -> Self {
        Self::builder(source).build()
    }

    /// A builder to set refresh-ahead, jitter, expiry margin and retries.
    pub fn builder(source: Arc<dyn TokenSource>) -> TokenCacheBuilder {
        TokenCacheBuilder::options().source(source)
    }

    /// The source behind the cache.
    pub fn source(&self) -> &Arc<dyn TokenSource> {
        &self.inner.core.source
    }

    /// The hot path: the current token for `audience`, if there is one that
    /// is not within the expiry margin. Lock-free, no allocation. Inside
    /// the refresh window it starts one background refresh and still
    /// returns the current token.
    #[inline]
    pub fn cached(&self, audience: &Audience) -> Option<IdToken> {
        let table = self.inner.table.load();
        table
            .find(audience)?
            .cached_with(&self.inner.core, IdToken::clone)
    }

    /// A usable token for `audience`: the cached one, or the result of the
    /// one fetch in flight for it (started if needed). Transient errors are
    /// retried with backoff; permanent ones are returned at once.
    pub async fn token(&self, audience: &Audience) -> Result<IdToken> {
        if let Some(token) = self.cached(audience) {
            return Ok(token);
        }
        let entry = self.entry(audience);
        self.token_for(&entry).await
    }

    /// Drops `token` if it is still the current token of its audience, so
    /// that the next call fetches a new one. Returns whether it did: of many
    /// concurrent invalidations of one token, exactly one returns `true`.
    pub fn invalidate(&self, token: &IdToken) -> bool {
        let table = self.inner.table.load();
        // The entry keyed by the token's own `aud` first; a source may mint
        // tokens whose `aud` differs from the audience asked for.
        if let Some(entry) = token
            .claims()
            .aud
            .as_deref()
            .and_then(|aud| table.find_str(aud))
            && entry.invalidate(token)
        {
            return true;
        }
        table.entries.iter().any(|entry| entry.invalidate(token))
    }

    /// The entry for `audience`, created if needed (the slow path: may allocate).
    pub(crate) fn entry(&self, audience: &Audience) -> Arc<Entry> {
        if let Some(entry) = self.inner.table.load().find(audience) {
            return entry.clone();
        }
        let _writer = self
            .inner
            .table_writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let table = self.inner.table.load();
        if let Some(entry) = table.find(audience) {
            return entry.clone();
        }
        let entry = Arc::new(Entry::new(audience.clone()));
        let now = now_ms();
        // Entries of URL-derived audiences come and go: drop the dead ones
        // nobody else holds (no usable token, no fetch running).
        let mut entries: Vec<Arc<Entry>> = table
            .entries
            .iter()
            .filter(|e| Arc::strong_count(e) > 1 || !e.is_dead(now))
            .cloned()
            .collect();
        entries.push(entry.clone());
        self.inner.table.store(Arc::new(Table::new(entries)));
        entry
    }

    /// The hot path for a pre-resolved entry: `take` applied to its
    /// usable token (see [`Entry::cached_with`]).
    #[inline(always)]
    pub(crate) fn cached_entry_with<T>(
        &self,
        entry: &Arc<Entry>,
        take: impl FnOnce(&IdToken) -> T,
    ) -> Option<T> {
        entry.cached_with(&self.inner.core, take)
    }

    /// A usable token for a pre-resolved entry (see [`TokenCache::token`]).
    pub(crate) async fn token_for(&self, entry: &Arc<Entry>) -> Result<IdToken> {
        let core = &self.inner.core;
        let now = now_ms();
        if let Some(slot) = entry.current.load_full()
            && now < slot.usable_until_ms
        {
            if now < slot.refresh_at_ms || !entry.refresh_due(now) || entry.start_background(core) {
                return Ok(slot.token.clone());
            }
            // No runtime to refresh in the background: refresh inline, and
            // keep the current token if that fails.
            return match entry.flight_or_start(core).wait(entry, core).await {
                Ok(token) => Ok(token),
                Err(e) if now_ms() < slot.usable_until_ms => {
                    tracing::warn!(audience = %entry.audience, error = %e, "refreshing the ID token failed; keeping the current one");
                    Ok(slot.token.clone())
                }
                Err(e) => Err(share_error(&e)),
            };
        }
        entry
            .flight_or_start(core)
            .wait(entry, core)
            .await
            .map_err(|e| share_error(&e))
    }

    /// A `'static` future for [`TokenCache::token_for`].
    pub(crate) fn fetch_entry(&self, entry: Arc<Entry>) -> BoxFuture<'static, Result<IdToken>> {
        let cache = self.clone();
        Box::pin(async move { cache.token_for(&entry).await })
    }
}

impl Drop for CacheInner {
    fn drop(&mut self) {
        self.core.dropped.cancel();
    }
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = self.inner.table.load();
        f.debug_struct("TokenCache")
            .field("source", &self.inner.core.source)
            .field("config", &self.inner.core.config)
            .field("entries", &table.entries)
            .finish()
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.current.load();
        f.debug_struct("Entry")
            .field("audience", &self.audience)
            // `IdToken`'s Debug shows claims, never the JWT.
            .field("token", &current.as_ref().map(|slot| &slot.token))
            .field("refreshing", &self.refreshing.load(Ordering::Relaxed))
            .finish()
    }
}

impl Table {
    fn new(entries: Vec<Arc<Entry>>) -> Self {
        let index = if entries.len() > LINEAR_SCAN_MAX {
            entries
                .iter()
                .enumerate()
                .map(|(i, e)| (e.audience.clone(), i))
                .collect()
        } else {
            HashMap::new()
        };
        Table { entries, index }
    }

    #[inline]
    fn find(&self, audience: &Audience) -> Option<&Arc<Entry>> {
        if self.entries.len() <= LINEAR_SCAN_MAX {
            let wanted = audience.as_str();
            // Callers usually pass the very `Audience` the entry was made
            // from: compare pointers before bytes.
            self.entries.iter().find(|e| {
                let have = e.audience.as_str();
                std::ptr::eq(have, wanted) || have == wanted
            })
        } else {
            self.index.get(audience).map(|&i| &self.entries[i])
        }
    }

    fn find_str(&self, audience: &str) -> Option<&Arc<Entry>> {
        self.entries
            .iter()
            .find(|e| e.audience.as_str() == audience)
    }
}

impl Entry {
    fn new(audience: Audience) -> Self {
        Entry {
            audience,
            current: ArcSwapOption::empty(),
            generation: AtomicU64::new(0),
            flight: Mutex::new(None),
            refreshing: AtomicBool::new(false),
            retry_after_ms: AtomicU64::new(0),
            failures: AtomicU32::new(0),
        }
    }

    /// The audience of this entry.
    pub(crate) fn audience(&self) -> &Audience {
        &self.audience
    }

    /// The hot path: `take` applied to a usable token, this thread's copy
    /// (see [`Slot`]). This thread's note of it first (see [`local`]), else
    /// the shared slot.
    #[inline(always)]
    fn cached_with<T>(
        self: &Arc<Self>,
        core: &Arc<Core>,
        take: impl FnOnce(&IdToken) -> T,
    ) -> Option<T> {
        let now = now_ms();
        match local::get_with(self, now, take) {
            Ok(value) => Some(value),
            Err(take) => self.cached_shared(core, now).map(|token| take(&token)),
        }
    }

    /// The token from the shared slot; starts the refresh when due, notes
    /// the token for this thread while it is outside its refresh window.
    #[cold]
    #[inline(never)]
    fn cached_shared(self: &Arc<Self>, core: &Arc<Core>, now: u64) -> Option<IdToken> {
        // Read before the slot: a token stored in between is noted with the
        // older generation, and the next read asks again.
        let generation = self.generation.load(Ordering::Acquire);
        let current = self.current.load();
        let slot = current.as_ref()?;
        if now >= slot.usable_until_ms {
            return None;
        }
        if now >= slot.refresh_at_ms {
            if self.refresh_due(now) {
                self.start_background(core);
            }
        } else {
            let until = slot.refresh_at_ms.min(slot.usable_until_ms);
            local::put(self, generation, until, slot.local());
        }
        Some(slot.local().clone())
    }

    /// Whether a background refresh may start now: none running, backoff over.
    #[inline]
    fn refresh_due(&self, now: u64) -> bool {
        !self.refreshing.load(Ordering::Relaxed)
            && now >= self.retry_after_ms.load(Ordering::Relaxed)
    }

    /// Spawns the refresh on the current runtime unless one runs already.
    /// Returns `false` when there is no runtime (the caller refreshes inline).
    #[cold]
    fn start_background(self: &Arc<Self>, core: &Arc<Core>) -> bool {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return true;
        }
        match self.flight_or_start(core) {
            Next::Flight(flight, _) => {
                tracing::debug!(audience = %self.audience, "refreshing the ID token ahead of expiry");
                // Detached: the flight ends when done or when the cache is dropped.
                drop(runtime.spawn(flight));
            }
            // A refresh finished between the caller's read and our claim.
            Next::Fresh(_) => self.refreshing.store(false, Ordering::Release),
        }
        true
    }

    /// The fetch in flight, or a new one, or (when a flight completed
    /// since the caller looked) the fresh token it left. Decided under the
    /// lock; a flight stores its token before it clears itself.
    fn flight_or_start(self: &Arc<Self>, core: &Arc<Core>) -> Next {
        let mut flight = self.flight.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((running, failed)) = flight.as_ref() {
            return Next::Flight(running.clone(), failed.load(Ordering::Acquire));
        }
        if let Some(slot) = self.current.load_full()
            && now_ms() < slot.refresh_at_ms
        {
            return Next::Fresh(slot.token.clone());
        }
        let failed = Arc::new(AtomicU32::new(0));
        let new = run_flight(core.clone(), self.clone(), failed.clone())
            .boxed()
            .shared();
        *flight = Some((new.clone(), failed));
        Next::Flight(new, 0)
    }

    fn invalidate(&self, token: &IdToken) -> bool {
        let current = self.current.load();
        let Some(slot) = current.as_ref() else {
            return false;
        };
        if !slot.token.same_as(token) {
            return false;
        }
        let previous = self.current.compare_and_swap(&current, None);
        let swapped = match (&*previous, &*current) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        if swapped {
            self.generation.fetch_add(1, Ordering::Release);
            tracing::debug!(audience = %self.audience, "ID token invalidated");
        }
        swapped
    }

    fn is_dead(&self, now: u64) -> bool {
        let usable = self
            .current
            .load()
            .as_ref()
            .is_some_and(|s| now < s.usable_until_ms);
        let flying = self
            .flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        !usable && !flying
    }

    fn store(&self, token: IdToken, config: &Config, refreshed: bool) {
        let now = now_ms();
        let exp = ms_since_epoch(token.expires_at());
        // The token's own lifetime (`exp - iat`), not what is left of it:
        // a token that arrives half-used is still refreshed `refresh_ahead`
        // before its end. Without `iat`, what is left.
        let lifetime = match token.claims().iat {
            Some(iat) if iat < token.claims().exp => (token.claims().exp - iat) * 1000,
            _ => exp.saturating_sub(now),
        };
        let margin = (config.expiry_margin.as_millis() as u64).min(lifetime / 10);
        let ahead_cfg = config.refresh_ahead.as_millis() as u64;
        let ahead = ahead_cfg.min(lifetime / 2);
        let jitter = ((config.refresh_jitter.as_millis() as u64).min(ahead_cfg) * ahead)
            .checked_div(ahead_cfg)
            .unwrap_or(0);
        let ahead = ahead - (fastrand::f64() * jitter as f64) as u64;
        let copies = match crate::per_core::copies() {
            1 => Box::default(),
            n => (0..n).map(|_| token.separate_copy()).collect(),
        };
        let slot = Slot {
            token,
            copies,
            refresh_at_ms: exp.saturating_sub(ahead),
            usable_until_ms: exp.saturating_sub(margin),
        };
        // A refresh whose token arrives already inside its refresh window (a
        // source caching tokens, or a skewed clock) must not make every read
        // start another refresh: wait a while before the next.
        if refreshed && slot.refresh_at_ms <= now {
            let pause = slot.usable_until_ms.saturating_sub(now) / 4;
            self.retry_after_ms
                .store(now + pause.min(30_000), Ordering::Relaxed);
        }
        self.current.store(Some(Arc::new(slot)));
        self.generation.fetch_add(1, Ordering::Release);
    }
}

/// One fetch with retries; stores its token in the entry and clears the
/// flight. Cancelled when the cache is dropped.
async fn run_flight(
    core: Arc<Core>,
    entry: Arc<Entry>,
    failed: Arc<AtomicU32>,
) -> Result<IdToken, Arc<Error>> {
    let result = tokio::select! {
        biased;
        () = core.dropped.cancelled() => Err(Error::Other {
            context: format!("the token cache was dropped while fetching an ID token for {}", entry.audience),
            source: None,
        }),
        result = fetch_with_retries(&core, &entry.audience, &failed) => result,
    };
    let result = result.map_err(Arc::new);
    match &result {
        Ok(token) => {
            entry.retry_after_ms.store(0, Ordering::Relaxed);
            entry.failures.store(0, Ordering::Relaxed);
            let refreshed = entry.current.load().is_some();
            entry.store(token.clone(), &core.config, refreshed);
        }
        Err(e) => {
            let failures = entry.failures.fetch_add(1, Ordering::Relaxed);
            let now = now_ms();
            // Wait before the next background attempt, but try again
            // well before the current token becomes unusable.
            let usable_left = entry
                .current
                .load()
                .as_ref()
                .map_or(0, |s| s.usable_until_ms.saturating_sub(now));
            let wait = (backoff(Duration::from_secs(1), Duration::from_secs(60), failures)
                .as_millis() as u64)
                .min(usable_left / 2);
            entry.retry_after_ms.store(now + wait, Ordering::Relaxed);
            tracing::warn!(audience = %entry.audience, error = %e, retry_in_ms = wait, "fetching an ID token failed");
        }
    }
    // Token first, then clear the flight (and the flag): a caller that finds
    // no flight finds the new token.
    *entry.flight.lock().unwrap_or_else(PoisonError::into_inner) = None;
    entry.refreshing.store(false, Ordering::Release);
    result
}

/// Counts its failed attempts in `failed` (read by callers joining late).
///
/// Bounded by the fetch deadline: each attempt gets an equal share of the
/// time left among the attempts left (the last one all of it), so an
/// attempt that hangs is abandoned and retried rather than spending the
/// whole deadline; no backoff runs past the deadline.
async fn fetch_with_retries(
    core: &Core,
    audience: &Audience,
    failed: &AtomicU32,
) -> Result<IdToken> {
    let config = &core.config;
    let now = tokio::time::Instant::now();
    // A deadline beyond what the clock can hold: as good as none.
    let deadline = now
        .checked_add(config.fetch_deadline)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400));
    let attempts = config.max_retries.saturating_add(1);
    let mut attempt = 0;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let share = left / attempts.saturating_sub(attempt).max(1);
        let result = tokio::time::timeout(share, fetch_once(core, audience))
            .await
            .unwrap_or_else(|_| Err(timed_out(core, audience, share, attempt + 1 == attempts)));
        match result {
            Ok(token) if token.remaining(SystemTime::now()).is_zero() => {
                return Err(Error::MalformedToken(format!(
                    "the token source returned an ID token for {audience} that has already expired \
                     (`exp` {}); the system clock may be wrong (clock skew)",
                    token.claims().exp
                )));
            }
            Ok(token) => return Ok(token),
            Err(e) if is_retryable(&e) && attempt < config.max_retries => {
                failed.fetch_add(1, Ordering::AcqRel);
                let delay = backoff(config.initial_backoff, config.max_backoff, attempt);
                if tokio::time::Instant::now() + delay >= deadline {
                    return Err(e);
                }
                tracing::debug!(%audience, error = %e, attempt, ?delay, "transient error fetching an ID token; retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The error of an attempt that did not finish in its share of the fetch
/// deadline (the whole deadline's error when it was the last attempt),
/// naming the endpoint the source asks.
fn timed_out(core: &Core, audience: &Audience, waited: Duration, last: bool) -> Error {
    let why = if last {
        format!(
            "no ID token for {audience} within the fetch deadline ({} s, every attempt included)",
            core.config.fetch_deadline.as_secs_f64()
        )
    } else {
        format!(
            "no answer within {:.3} s (each attempt gets an equal share of what is left of the fetch deadline)",
            waited.as_secs_f64()
        )
    };
    Error::Transport {
        endpoint: core.source.endpoint().unwrap_or_else(|| {
            crate::transport::scrub(&format!("the token source {:?}", core.source))
        }),
        source: Arc::new(std::io::Error::new(std::io::ErrorKind::TimedOut, why)),
    }
}

/// Worth another attempt: a transient error, or a garbled 200 (cut off,
/// not the expected shape), which is retried like one within the same
/// budget and reported as it is (malformed) if it persists.
fn is_retryable(e: &Error) -> bool {
    e.is_transient() || matches!(e, Error::Protocol { .. } | Error::MalformedToken(_))
}

/// One call of the source. A panic inside it (ours or a user's source)
/// becomes an error for the callers of this fetch instead of poisoning the
/// shared flight: the next call tries again.
async fn fetch_once(core: &Core, audience: &Audience) -> Result<IdToken> {
    use std::panic::AssertUnwindSafe;
    let panicked = |payload: Box<dyn std::any::Any + Send>| {
        let why = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        tracing::error!(%audience, "the token source panicked: {why}");
        Error::Other {
            context: format!(
                "the token source panicked while fetching an ID token for {audience}: {}",
                crate::transport::scrub(&why)
            ),
            source: None,
        }
    };
    let future = match std::panic::catch_unwind(AssertUnwindSafe(|| core.source.id_token(audience)))
    {
        Ok(future) => future,
        Err(payload) => return Err(panicked(payload)),
    };
    match AssertUnwindSafe(future).catch_unwind().await {
        Ok(result) => result,
        Err(payload) => Err(panicked(payload)),
    }
}

/// `initial * 2^attempt`, capped at `max`, minus up to half at random.
fn backoff(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let full = initial
        .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
        .min(max);
    full.mul_f64(1.0 - fastrand::f64() / 2.0)
}

/// The wall clock in ms since the epoch, compared with `exp`-based
/// deadlines (a monotonic clock would not count time suspended).
///
/// On Linux the coarse clock (`CLOCK_REALTIME_COARSE`: one read of the vDSO
/// page, ~6 ns against ~30-40 ns for `SystemTime::now`, which reads the
/// TSC) keeps the hot path cheap. Its resolution (a scheduler tick, 1-4
/// ms) is far below every deadline's granularity: margins are at least a
/// tenth of a token's lifetime.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[inline]
fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the call writes only it.
    let failed = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } != 0;
    if failed || ts.tv_sec < 0 {
        return ms_since_epoch(SystemTime::now());
    }
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// The wall clock in ms since the epoch, compared with `exp`-based
/// deadlines (a monotonic clock would not count time suspended).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[inline]
fn now_ms() -> u64 {
    ms_since_epoch(SystemTime::now())
}

#[inline]
fn ms_since_epoch(t: SystemTime) -> u64 {
    crate::clock::unix_millis(t)
}

/// The error of a shared fetch, for one of its waiters: a clone, chain and
/// classification included.
pub(crate) fn share_error(e: &Arc<Error>) -> Error {
    (**e).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coarse_clock_agrees_with_the_system_clock() {
        let (before, now, after) = (
            ms_since_epoch(SystemTime::now()),
            now_ms(),
            ms_since_epoch(SystemTime::now()),
        );
        assert!(
            now + 20 >= before && now <= after + 20,
            "{before} {now} {after}"
        );
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let (i, m) = (Duration::from_millis(100), Duration::from_secs(1));
        for attempt in 0..40 {
            let d = backoff(i, m, attempt);
            let full = (i * 2u32.saturating_pow(attempt.min(20))).min(m);
            assert!(d <= full && d >= full / 2, "attempt {attempt}: {d:?}");
        }
    }

    #[test]
    fn shared_errors_keep_message_and_classification() {
        let e = Arc::new(Error::Endpoint {
            endpoint: "https://oauth2.googleapis.com/token".into(),
            status: 400,
            error: "invalid_grant".into(),
            description: Some("Invalid JWT Signature.".into()),
            transient: false,
            hint: None,
        });
        let shared = share_error(&e);
        assert_eq!(shared.to_string(), e.to_string());
        assert!(!shared.is_transient());
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let e = Arc::new(Error::Transport {
            endpoint: "http://127.0.0.1:1/token".into(),
            source: Arc::new(io),
        });
        let shared = share_error(&e);
        assert!(shared.is_transient());
        assert_eq!(
            std::error::Error::source(&shared)
                .map(|s| s.to_string())
                .as_deref(),
            Some("reset by peer")
        );
    }
}
