//! `iap demo` end to end.

mod common;

use common::Sandbox;

#[tokio::test(flavor = "multi_thread")]
async fn demo_runs_every_step_and_exits_0() {
    let out = Sandbox::new().run(&["demo"]).await;
    assert!(out.status.success(), "{out:#?}");
    assert!(
        out.stdout.contains("All 8 steps did what they should."),
        "{}",
        out.stdout
    );
    let summary = out.stdout.split("Summary").nth(1).expect("a summary table");
    for step in [
        "token",
        "iap-reqwest",
        "iap-tower",
        "cache",
        "revoked token",
        "Proxy-Authorization",
        "desktop login",
        "iap proxy",
    ] {
        let row = summary
            .lines()
            .find(|l| l.trim_start().starts_with(step))
            .unwrap_or_else(|| panic!("no row {step}"));
        assert!(row.contains(" ok "), "{row}");
    }
    assert!(summary.contains("1 token fetch"), "{summary}");
    // Tokens are shown abbreviated, never whole.
    let jwt_like = out
        .stdout
        .split_whitespace()
        .any(|w| w.matches('.').count() == 2 && w.len() > 200);
    assert!(!jwt_like, "a whole token was printed:\n{}", out.stdout);
    assert!(out.stdout.contains("eyJhbGci…("), "{}", out.stdout);
}
