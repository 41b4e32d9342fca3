//! The hot path allocates nothing for a host-wildcard audience of a host
//! seen before: `IapAuth::plan` finds the host's entry, `Attach::cached`
//! its token.
//!
//! Its own binary: it installs a counting global allocator.

use http::{Extensions, Uri};
use iap_emulator::Emulator;
use iap_test_support::{CountingAlloc, allocations};
use iap_token::IapAuth;
use iap_token::auth::Plan;
use iap_token::source::self_signed::SelfSignedJwtSource;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc::new();

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
    let counted = allocations(|| {
        for uri in [&seen, &other_path] {
            if let Plan::Attach(attach) = auth.plan(uri, &none) {
                cached += usize::from(attach.cached().is_some());
            }
        }
    });

    assert_eq!(cached, 2, "both paths find the host's cached token");
    assert_eq!(counted, 0);
    // A new host does cost its audience (the counter can see allocations).
    assert!(allocations(|| drop(auth.plan(&unseen, &none))) > 0);
}
