//! `examples/axum_behind_iap.rs` end to end: a client through the
//! emulator's IAP reaches the service as itself; a request around IAP is
//! refused.

#[allow(dead_code)] // the example's own main
#[path = "../examples/axum_behind_iap.rs"]
mod example;

#[tokio::test]
async fn the_service_behind_iap_answers_with_the_callers_email() {
    let (through_iap, around_iap) = example::run().await.unwrap();
    assert_eq!(through_iap, "hello alice@example.com");
    assert_eq!(around_iap, 401);
}
