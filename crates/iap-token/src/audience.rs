//! [`Audience`]: whom an ID token is for, and how a request's URL maps to one.

use std::fmt;
use std::sync::Arc;

/// The `aud` an ID token is minted for: for IAP, the IAP OAuth client ID
/// (`NNN-xxx.apps.googleusercontent.com`), an allowlisted programmatic
/// client ID, or (for a self-signed service-account JWT) a URL.
///
/// Cheap to clone. Also usable as a per-request override: insert an
/// `Audience` into a request's `http::Extensions` and the adapters use it
/// for that request instead of the configured one.
///
/// ```
/// # use iap_token::Audience;
/// let aud = Audience::new("123-abc.apps.googleusercontent.com");
/// assert_eq!(aud.as_str(), "123-abc.apps.googleusercontent.com");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Audience(Arc<str>);

impl Audience {
    /// An audience from any string.
    pub fn new(aud: impl AsRef<str>) -> Self {
        Audience(Arc::from(aud.as_ref()))
    }

    /// The audience text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Audience {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Audience {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Audience {
    fn from(s: &str) -> Self {
        Audience::new(s)
    }
}

impl From<String> for Audience {
    fn from(s: String) -> Self {
        Audience(Arc::from(s))
    }
}

impl AsRef<str> for Audience {
    fn as_ref(&self) -> &str {
        &self.0
    }
}
