//! Fuzz-style: random bytes and mutated assertions never panic, never
//! pass, and never make the verifier hammer the key server.

mod common;

use common::World;

#[tokio::test]
async fn random_bytes_and_mutated_assertions_are_refused_without_panicking() {
    let w = World::start().await;
    let verifier = w.builder().remembered_assertions(0).build().unwrap();
    let good = w.assertion_via_gate(&w.app, "alice@example.com").await;
    verifier.verify(&good).await.unwrap();
    let mut rng = fastrand::Rng::with_seed(0x1a9_5eed);

    // Random bytes, of every length up to twice an assertion's.
    for _ in 0..2000 {
        let len = rng.usize(..good.len() * 2);
        let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        assert!(verifier.verify(&bytes).await.is_err());
    }

    // Mutations of a good assertion: flipped, inserted, deleted bytes and
    // swapped parts. Some mutations change nothing that is signed (base64
    // padding bits, trailing whitespace): such a mutant may verify, but
    // only as the same identity.
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \x00\xff";
    for _ in 0..3000 {
        let mut mutant = good.as_bytes().to_vec();
        for _ in 0..rng.usize(1..4) {
            match rng.u8(..4) {
                0 if !mutant.is_empty() => {
                    let i = rng.usize(..mutant.len());
                    mutant[i] = alphabet[rng.usize(..alphabet.len())];
                }
                1 => {
                    let i = rng.usize(..=mutant.len());
                    mutant.insert(i, alphabet[rng.usize(..alphabet.len())]);
                }
                2 if !mutant.is_empty() => {
                    let i = rng.usize(..mutant.len());
                    mutant.remove(i);
                }
                _ => {
                    let text = String::from_utf8_lossy(&mutant).into_owned();
                    let mut parts: Vec<&str> = text.split('.').collect();
                    let n = parts.len();
                    parts.swap(rng.usize(..n), rng.usize(..n));
                    mutant = parts.join(".").into_bytes();
                }
            }
        }
        if let Ok(who) = verifier.verify(&mutant).await {
            assert_eq!(who.email(), Some("alice@example.com"));
        }
    }
    // Garbage kids among the mutants cost at most one refetch (rate limit).
    assert!(w.key_fetches() <= 2, "{} key fetches", w.key_fetches());
}
