//! Per-core copies of what every request reads: which copy this thread
//! uses.
//!
//! A value that every request clones (a token, the handle the adapters
//! keep per request) has one reference count; requests on several cores
//! then all write to that one cache line, and each write waits for the
//! line to come over from the core that wrote it last. So the cache keeps
//! a few copies of each token ([`crate::cache`]) and [`crate::IapAuth`] a
//! few reference-counted handles, and each thread clones its own: the
//! copies are equal, only their counters differ. The copy is read-only
//! once made; nothing here locks.

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many copies to keep: twice the cores (threads are numbered in the
/// order they first ask, so a few more copies than cores keep the busy
/// threads apart), a power of two, at most 16: a token's copy is about
/// 2.5 KiB, and a source of URL-audience JWTs may hold many tokens.
pub(crate) fn copies() -> usize {
    static COPIES: OnceLock<usize> = OnceLock::new();
    *COPIES.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (2 * cores).next_power_of_two().min(16)
    })
}

/// This thread's copy among `len` (a power of two, as [`copies`] gives).
#[inline]
pub(crate) fn index(len: usize) -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static THIS: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    let this = THIS.with(|this| {
        let mut n = this.get();
        if n == usize::MAX {
            n = NEXT.fetch_add(1, Ordering::Relaxed);
            this.set(n);
        }
        n
    });
    this & (len - 1)
}
