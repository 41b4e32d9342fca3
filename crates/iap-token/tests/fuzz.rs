//! A fuzz-style run over every public parser: credentials files (each
//! type), ID tokens, and access-token answers. Bounded in CI
//! (`IAP_FUZZ_CASES`, default 2000, seed from `IAP_FUZZ_SEED`); the only
//! assertion is the one that matters: no input panics. Run longer with
//! `IAP_FUZZ_CASES=1000000 cargo test -p iap-token --test fuzz --release`.

use base64::Engine as _;
use iap_token::IdToken;
use iap_token::adc;
use iap_token::source::authorized_user::AuthorizedUser;
use iap_token::source::external_account::ExternalAccount;
use iap_token::source::service_account::ServiceAccountKey;

const SEEDS: &[&str] = &[
    r#"{"type":"service_account","client_email":"a@p.iam.gserviceaccount.com","private_key":"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n","token_uri":"https://oauth2.googleapis.com/token"}"#,
    r#"{"type":"authorized_user","client_id":"c","client_secret":"GOCSPX-x","refresh_token":"1//r","token_uri":"http://127.0.0.1:1/token"}"#,
    r#"{"type":"impersonated_service_account","service_account_impersonation_url":"https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/t@p.iam.gserviceaccount.com:generateAccessToken","source_credentials":{"type":"authorized_user","client_id":"c","client_secret":"s","refresh_token":"r"},"delegates":["d@p.iam.gserviceaccount.com"]}"#,
    r#"{"type":"external_account","audience":"//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/x","subject_token_type":"urn:ietf:params:oauth:token-type:jwt","credential_source":{"url":"http://127.0.0.1:1/t","headers":{"a":"b"},"format":{"type":"json","subject_token_field_name":"v"}},"service_account_impersonation_url":"https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/t@p.iam.gserviceaccount.com:generateAccessToken","service_account_impersonation":{"token_lifetime_seconds":3600}}"#,
    r#"{"aud":["a","b"],"exp":18446744073709551615,"iat":9223372036854775808,"email":"e"}"#,
    r#"{"access_token":"ya29.x","expires_in":18446744073709551615}"#,
];

fn mutate(rng: &mut fastrand::Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.usize(1..8) {
        let at = rng.usize(..=out.len());
        match rng.u8(..6) {
            0 if !out.is_empty() => {
                out.remove(at.min(out.len() - 1));
            }
            1 => out.insert(at, rng.u8(..)),
            2 => {
                let alphabet = b"{}[]\":,\\0123456789-eE.nul";
                out.insert(at, alphabet[rng.usize(..alphabet.len())]);
            }
            3 => out.truncate(at),
            4 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] = rng.u8(..);
            }
            _ => {
                let numbers: [&[u8]; 4] = [
                    b"18446744073709551616",
                    b"-1",
                    b"1e308",
                    b"9223372036854775808",
                ];
                out.splice(at..at, numbers[rng.usize(..4)].iter().copied());
            }
        }
    }
    out
}

#[test]
fn no_input_makes_a_public_parser_panic() {
    let cases: usize = std::env::var("IAP_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let seed: u64 = std::env::var("IAP_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x1a9_f022);
    let mut rng = fastrand::Rng::with_seed(seed);
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    for case in 0..cases {
        let seed_doc = SEEDS[case % SEEDS.len()].as_bytes();
        let input = mutate(&mut rng, seed_doc);
        let _ = adc::from_json(&input);
        let _ = adc::access_token_source_from_json(&input);
        let _ = ServiceAccountKey::from_json(&input);
        let _ = AuthorizedUser::from_json(&input);
        let _ = ExternalAccount::from_json(&input);
        let jwt = format!(
            "{}.{}.{}",
            b64(br#"{"alg":"RS256"}"#),
            b64(&input),
            b64(&input[..input.len().min(8)])
        );
        let _ = IdToken::parse(jwt);
        let _ = IdToken::parse(String::from_utf8_lossy(&input).into_owned());
    }
    eprintln!("fuzz: {cases} cases, seed {seed}, no panic");
}
