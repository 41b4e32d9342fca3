//! What the adapters share: where the token goes ([`Placement`]), when a
//! response means "your token was refused" ([`RetryPolicy`],
//! [`Verdict`]), and the per-request switches carried in `http::Extensions`.
//!
//! Both `iap-tower` and `iap-reqwest` call into this module rather than
//! keeping their own copies of these rules.

use http::{HeaderMap, HeaderName, StatusCode, header};

/// The response header IAP puts on answers it generates itself.
pub const IAP_GENERATED_HEADER: &str = "x-goog-iap-generated-response";

/// Which request header carries the ID token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Placement {
    /// `Authorization: Bearer <token>` (replaces any `Authorization` the caller set).
    #[default]
    Authorization,
    /// `Proxy-Authorization: Bearer <token>`: IAP authorizes with it and
    /// passes the caller's own `Authorization` to the app untouched.
    ProxyAuthorization,
}

impl Placement {
    /// The header this placement writes.
    pub fn header_name(self) -> HeaderName {
        match self {
            Placement::Authorization => header::AUTHORIZATION,
            Placement::ProxyAuthorization => header::PROXY_AUTHORIZATION,
        }
    }
}

/// Which answers count as "the token was refused": the token is then
/// invalidated and, when the request can be replayed, sent once more with a
/// fresh token.
///
/// The default, whatever the [`Placement`], is [`RetryPolicy::IapGenerated`]:
/// an app's own 401 is about the app's credentials, so it is returned as
/// is and costs no token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetryPolicy {
    /// Any 401, and IAP's own 302 to the Google sign-in page. An explicit
    /// choice: every 401 of the app then costs a token fetch.
    AnyUnauthorized,
    /// Only 401s and 302s that IAP generated (`X-Goog-IAP-Generated-Response: true`).
    #[default]
    IapGenerated,
    /// Never invalidate or retry.
    Never,
}

/// What to do with a response, as decided by [`Verdict::of`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The token was accepted (or the answer is not about it): pass it on.
    Accepted,
    /// The token was refused: invalidate it and, if possible, retry once.
    Refused,
}

impl Verdict {
    /// Classifies a response to a request that carried a token.
    ///
    /// ```
    /// # use iap_token::policy::{RetryPolicy, Verdict};
    /// # use http::{HeaderMap, StatusCode};
    /// let mut h = HeaderMap::new();
    /// assert_eq!(Verdict::of(RetryPolicy::AnyUnauthorized, StatusCode::UNAUTHORIZED, &h), Verdict::Refused);
    /// assert_eq!(Verdict::of(RetryPolicy::IapGenerated, StatusCode::UNAUTHORIZED, &h), Verdict::Accepted);
    /// h.insert("x-goog-iap-generated-response", "true".parse().unwrap());
    /// assert_eq!(Verdict::of(RetryPolicy::IapGenerated, StatusCode::UNAUTHORIZED, &h), Verdict::Refused);
    /// ```
    pub fn of(policy: RetryPolicy, status: StatusCode, headers: &HeaderMap) -> Verdict {
        let iap_generated = || {
            headers
                .get(IAP_GENERATED_HEADER)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"))
        };
        let refused = match status {
            StatusCode::UNAUTHORIZED => match policy {
                RetryPolicy::AnyUnauthorized => true,
                RetryPolicy::IapGenerated => iap_generated(),
                RetryPolicy::Never => false,
            },
            // IAP sends browsers (and clients whose token it ignores) to sign in.
            StatusCode::FOUND => {
                policy != RetryPolicy::Never
                    && iap_generated()
                    && redirects_to_google_sign_in(headers)
            }
            _ => false,
        };
        if refused {
            Verdict::Refused
        } else {
            Verdict::Accepted
        }
    }
}

/// Whether `Location` points at Google's sign-in (`accounts.google.com`).
pub fn redirects_to_google_sign_in(headers: &HeaderMap) -> bool {
    headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|l| url::Url::parse(l).ok())
        .is_some_and(|u| is_google_sign_in(&u))
}

/// Whether `url` is Google's sign-in (`accounts.google.com`), where IAP
/// sends requests it will not authorize: for a client, an authentication
/// failure rather than a page to follow.
pub fn is_google_sign_in(url: &url::Url) -> bool {
    url.host_str() == Some("accounts.google.com")
}

/// Per-request switch: insert into a request's `http::Extensions` to send
/// that request without an IAP token.
///
/// ```
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(iap_token::policy::NoAuth);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoAuth;
