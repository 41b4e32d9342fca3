//! STS token exchange and the OIDC issuer of subject tokens.

use crate::state::State;

/// Mints a subject token from the emulator's OIDC issuer.
pub(crate) fn mint_subject_token(_state: &State, _audience: &str, _subject: &str) -> String {
    todo!()
}
