//! Helpers shared by the workspace's tests and benches: a dev-dependency
//! only, never published, no part of any crate's API.
//!
//! # Counting allocations
//!
//! [`CountingAlloc`] forwards every call to the system allocator and
//! counts, per thread, the allocations (`alloc`, `alloc_zeroed`, `realloc`;
//! frees are not counted). A test or bench binary installs it as its global
//! allocator (the `static` must be in that binary) and measures a piece of
//! code with [`allocations`] or [`allocations_of`]:
//!
//! ```
//! use iap_test_support::{CountingAlloc, allocations, allocations_of};
//!
//! #[global_allocator]
//! static GLOBAL: CountingAlloc = CountingAlloc::new();
//!
//! fn main() {
//!     assert_eq!(allocations(|| drop(vec![0u8; 16])), 1);
//!     let (sum, n) = allocations_of(|| [1, 2, 3].iter().sum::<i32>());
//!     assert_eq!((sum, n), (6, 0));
//! }
//! ```
//!
//! Only the calling thread's allocations are counted, so other threads (a
//! runtime's workers, the test harness) do not disturb a measurement; the
//! code measured must run on the calling thread (poll futures in place,
//! e.g. with `FutureExt::now_or_never`). Without [`CountingAlloc`]
//! installed, every count is 0.
//!
//! # A cached token
//!
//! With the `token` feature, `token::warm_auth`: an `IapAuth` whose
//! token for `token::APP` is already cached, for measuring the path a
//! request takes when nothing needs fetching.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, counting each thread's allocations; see the
/// [crate docs](crate#counting-allocations).
#[derive(Clone, Copy, Debug, Default)]
pub struct CountingAlloc(());

impl CountingAlloc {
    /// The allocator, for `#[global_allocator] static GLOBAL: CountingAlloc = CountingAlloc::new();`.
    pub const fn new() -> Self {
        CountingAlloc(())
    }
}

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the thread's counter may already be gone while the
    // thread shuts down, and an allocator must not panic.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's guarantees are `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// How many allocations the calling thread has made so far (0 without
/// [`CountingAlloc`] installed).
pub fn allocations_so_far() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// How many allocations `f` made on the calling thread.
pub fn allocations(f: impl FnOnce()) -> u64 {
    allocations_of(f).1
}

/// What `f` returned, and how many allocations it made on the calling thread.
pub fn allocations_of<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = allocations_so_far();
    let value = f();
    (value, allocations_so_far() - before)
}

/// An `IapAuth` whose token is cached before the test starts (feature `token`).
#[cfg(feature = "token")]
pub mod token {
    use iap_token::IapAuth;
    use iap_token::policy::RetryPolicy;
    use iap_token::source::static_token::StaticTokenSource;

    /// An unsigned ID token (`alg: none`): `aud` `client-id`, `email`
    /// `a@b`, `exp` in 2100. Nothing verifies it; it is what gets attached.
    pub const JWT: &str = "eyJhbGciOiJub25lIn0.eyJhdWQiOiJjbGllbnQtaWQiLCJlbWFpbCI6ImFAYiIsImV4cCI6NDEwMjQ0NDgwMH0.c2ln";

    /// The one origin [`warm_auth`] sends [`JWT`] to.
    pub const APP: &str = "https://app.example.com";

    /// An `IapAuth` that attaches [`JWT`] to requests for [`APP`] with the
    /// retry policy `policy`, the token already in its cache.
    ///
    /// # Panics
    ///
    /// Never with the constants above: a test helper, it unwraps.
    pub async fn warm_auth(policy: RetryPolicy) -> IapAuth {
        let auth = IapAuth::builder()
            .source(StaticTokenSource::new(JWT).unwrap())
            .audience("client-id")
            .allow_origin(APP)
            .retry_policy(policy)
            .build()
            .unwrap();
        auth.token_for(&APP.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        auth
    }
}
