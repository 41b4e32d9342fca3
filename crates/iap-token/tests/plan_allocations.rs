//! The hot path allocates nothing for a host-wildcard audience of a host
//! seen before: `IapAuth::plan` finds the host's entry, `Attach::cached`
//! its token.
//!
//! Its own binary: it installs a counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use http::{Extensions, Uri};
use iap_emulator::Emulator;
use iap_token::IapAuth;
use iap_token::auth::Plan;
use iap_token::source::self_signed::SelfSignedJwtSource;

/// Counts the allocations of the current thread.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// How many allocations `f` made on this thread.
fn allocations_in(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[tokio::test]
async fn a_host_seen_before_costs_no_allocation_to_plan_and_find_its_cached_token() {
    let emu = Emulator::start().await.unwrap();
    let sa = emu.create_service_account("hot-path").await.unwrap();
    let auth = IapAuth::builder()
        .source(SelfSignedJwtSource::from_json(sa.key_json()).unwrap())
        .any_origin()
        .build()
        .unwrap();
    let seen: Uri = "https://app.example.com/a".parse().unwrap();
    let other_path: Uri = "https://app.example.com/b/c?d=e".parse().unwrap();
    let unseen: Uri = "https://new.example.com/a".parse().unwrap();
    let none = Extensions::new();
    auth.token_for(&seen).await.unwrap().unwrap();

    let mut cached = 0;
    let allocations = allocations_in(|| {
        for uri in [&seen, &other_path] {
            if let Plan::Attach(attach) = auth.plan(uri, &none) {
                cached += usize::from(attach.cached().is_some());
            }
        }
    });

    assert_eq!(cached, 2, "both paths find the host's cached token");
    assert_eq!(allocations, 0);
    // A new host does cost its audience (the counter can see allocations).
    assert!(allocations_in(|| drop(auth.plan(&unseen, &none))) > 0);
}
