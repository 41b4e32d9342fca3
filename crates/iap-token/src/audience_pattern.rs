//! [`AudiencePattern`]: the URL patterns a service-account JWT can be
//! addressed to, and the rule that picks one for a request.
//!
//! IAP accepts a service-account JWT whose `aud` is the exact request URL
//! (no query), `https://HOST/*`, or a path prefix `https://HOST/PREFIX/*`
//! (wire facts: `docs/service-account-jwts.md`). One JWT per pattern serves
//! every request it covers, so the broadest pattern the app accepts costs
//! the fewest signatures.
//!
//! **The rule**: among the patterns configured for a request's origin, the
//! most specific one that covers the request's path applies (an exact URL
//! before any prefix, a longer prefix before a shorter one); when none
//! does, the source's [`AudienceKind`](crate::source::AudienceKind) decides
//! (`https://HOST/*` or the exact URL).
//!
//! ```
//! use iap_token::AudiencePattern;
//! use url::Url;
//!
//! let patterns = [
//!     AudiencePattern::parse("https://app.example.com/*")?,
//!     AudiencePattern::parse("https://app.example.com/api/*")?,
//! ];
//! let url = Url::parse("https://app.example.com/api/v1/items?page=2").unwrap();
//! let chosen = AudiencePattern::choose(&patterns, &url).unwrap();
//! assert_eq!(chosen.as_str(), "https://app.example.com/api/*");
//! let other = Url::parse("https://app.example.com/admin").unwrap();
//! assert_eq!(AudiencePattern::choose(&patterns, &other).unwrap().as_str(), "https://app.example.com/*");
//! # Ok::<(), iap_token::Error>(())
//! ```

use std::fmt;

use url::Url;

use crate::{Audience, Error, Result};

/// A URL pattern a service-account JWT is signed for: an exact URL,
/// `https://HOST/*`, or `https://HOST/PREFIX/*`. See the [module docs](self).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AudiencePattern {
    /// The pattern as IAP compares it (`aud`).
    text: String,
    /// `scheme://host[:port]`, default port left out.
    origin: String,
    /// Lower case.
    scheme: String,
    /// Lower case, no trailing dot.
    host: String,
    /// The port, the scheme's default when none is written.
    port: u16,
    /// The path part: `/exact/path`, or `/PREFIX/` for a wildcard.
    path: String,
    wildcard: bool,
}

impl AudiencePattern {
    /// Parses `https://HOST/*`, `https://HOST/PREFIX/*` or an exact URL
    /// (`http` too, for loopback apps). Fails, saying which shapes are
    /// accepted, on anything else: no scheme or host, a query or fragment,
    /// a `*` that is not the whole last segment.
    pub fn parse(text: impl AsRef<str>) -> Result<Self> {
        let text = text.as_ref().trim();
        let bad = |why: &str| {
            Error::config(format!(
                "`{text}` is not a service-account JWT audience ({why}): use an exact URL, \
                 https://HOST/* or https://HOST/PREFIX/*"
            ))
        };
        let url = Url::parse(text).map_err(|_| bad("not a URL"))?;
        if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
            return Err(bad("not an http(s) URL with a host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("IAP compares no query or fragment"));
        }
        let path = url.path();
        let (path, wildcard) = match path.strip_suffix('*') {
            Some(prefix) if prefix.ends_with('/') && !prefix.contains('*') => (prefix, true),
            Some(_) => return Err(bad("`*` must be the whole last path segment")),
            None if path.contains('*') => {
                return Err(bad("`*` must be the whole last path segment"));
            }
            None => (path, false),
        };
        Ok(Self::build(&url, path, wildcard))
    }

    fn build(url: &Url, path: &str, wildcard: bool) -> Self {
        let origin = url.origin().ascii_serialization();
        AudiencePattern {
            text: format!("{origin}{path}{}", if wildcard { "*" } else { "" }),
            origin,
            scheme: url.scheme().to_ascii_lowercase(),
            host: url
                .host_str()
                .unwrap_or_default()
                .trim_end_matches('.')
                .to_ascii_lowercase(),
            port: url.port_or_known_default().unwrap_or(0),
            path: path.to_string(),
            wildcard,
        }
    }

    /// `https://HOST/*` of `url`: every path of its origin.
    pub fn host_of(url: &Url) -> Self {
        Self::build(url, "/", true)
    }

    /// The pattern text, as it goes into `aud`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The pattern as an [`Audience`].
    pub fn audience(&self) -> Audience {
        Audience::new(&self.text)
    }

    /// `scheme://host[:port]` the pattern is for.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Whether IAP accepts a JWT for this pattern on a request to `url`.
    pub fn covers(&self, url: &Url) -> bool {
        url.host_str()
            .is_some_and(|host| self.covers_parts(url.scheme(), host, url.port(), url.path()))
    }

    /// [`covers`](Self::covers) on a request's parts as they are written
    /// (`port` `None`: the scheme's default), without allocating.
    pub(crate) fn covers_parts(
        &self,
        scheme: &str,
        host: &str,
        port: Option<u16>,
        path: &str,
    ) -> bool {
        let port = port.or(match scheme.len() {
            5 if scheme.eq_ignore_ascii_case("https") => Some(443),
            4 if scheme.eq_ignore_ascii_case("http") => Some(80),
            _ => None,
        });
        scheme.eq_ignore_ascii_case(&self.scheme)
            && host.trim_end_matches('.').eq_ignore_ascii_case(&self.host)
            && port == Some(self.port)
            && if self.wildcard {
                path.starts_with(&self.path)
            } else {
                path == self.path
            }
    }

    /// How specific the pattern is: exact URLs first, then longer prefixes.
    fn specificity(&self) -> (bool, usize) {
        (!self.wildcard, self.path.len())
    }

    /// The rule of the [module docs](self): the most specific of `patterns`
    /// that covers `url`, if any.
    pub fn choose<'a>(patterns: &'a [AudiencePattern], url: &Url) -> Option<&'a AudiencePattern> {
        patterns
            .iter()
            .filter(|p| p.covers(url))
            .max_by_key(|p| p.specificity())
    }
}

/// Patterns with what goes with each (for [`IapAuth`](crate::IapAuth): the
/// cache entry of the pattern's audience), most specific first, so that the
/// first covering one is the rule's choice.
pub(crate) struct PatternTable<T> {
    entries: Vec<(AudiencePattern, T)>,
}

impl<T> PatternTable<T> {
    pub(crate) fn new(mut entries: Vec<(AudiencePattern, T)>) -> Self {
        entries.sort_by_key(|(p, _)| std::cmp::Reverse(p.specificity()));
        entries.dedup_by(|a, b| a.0 == b.0);
        PatternTable { entries }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry of the most specific pattern covering a request with these
    /// parts. No allocation.
    pub(crate) fn choose(
        &self,
        scheme: &str,
        host: &str,
        port: Option<u16>,
        path: &str,
    ) -> Option<&T> {
        self.entries
            .iter()
            .find(|(p, _)| p.covers_parts(scheme, host, port, path))
            .map(|(_, t)| t)
    }
}

impl fmt::Debug for AudiencePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

impl fmt::Display for AudiencePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn the_three_shapes_parse_and_cover_what_iap_accepts() {
        let host = AudiencePattern::parse("https://app.example.com/*").unwrap();
        let prefix = AudiencePattern::parse("https://app.example.com/api/*").unwrap();
        let exact = AudiencePattern::parse("https://app.example.com/api/v1").unwrap();
        let u = url("https://app.example.com/api/v1?x=1");
        assert!(host.covers(&u) && prefix.covers(&u) && exact.covers(&u));
        assert!(!prefix.covers(&url("https://app.example.com/apis/x")));
        assert!(!prefix.covers(&url("https://app.example.com/api")));
        assert!(!exact.covers(&url("https://app.example.com/api/v1/x")));
        assert!(!host.covers(&url("https://other.example.com/")));
        assert!(!host.covers(&url("http://app.example.com/")));
    }

    #[test]
    fn default_ports_are_left_out_like_iap_compares_them() {
        let p = AudiencePattern::parse("https://app.example.com:443/*").unwrap();
        assert_eq!(p.as_str(), "https://app.example.com/*");
        assert!(p.covers(&url("https://app.example.com/x")));
        let local = AudiencePattern::parse("http://127.0.0.1:8080/a/*").unwrap();
        assert!(local.covers(&url("http://127.0.0.1:8080/a/b")));
        assert_eq!(
            AudiencePattern::host_of(&url("https://h.example.com:8443/x?q")).as_str(),
            "https://h.example.com:8443/*"
        );
    }

    #[test]
    fn bad_patterns_say_which_shapes_work() {
        for bad in [
            "app.example.com/*",
            "123-abc.apps.googleusercontent.com",
            "https://app.example.com/a*",
            "https://app.example.com/*/x",
            "https://app.example.com/x?y=1",
            "ftp://app.example.com/*",
        ] {
            let err = AudiencePattern::parse(bad).unwrap_err().to_string();
            assert!(err.contains("https://HOST/PREFIX/*"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_table_chooses_like_choose_on_request_parts() {
        let patterns: Vec<_> = [
            "https://a.example.com/*",
            "https://a.example.com/api/*",
            "http://127.0.0.1:8080/x",
        ]
        .iter()
        .map(|p| (AudiencePattern::parse(p).unwrap(), p.to_string()))
        .collect();
        let table = PatternTable::new(patterns);
        let pick =
            |scheme, host, port, path| table.choose(scheme, host, port, path).map(String::as_str);
        assert_eq!(
            pick("https", "a.example.com", None, "/api/v1"),
            Some("https://a.example.com/api/*")
        );
        assert_eq!(
            pick("HTTPS", "A.example.com.", Some(443), "/x"),
            Some("https://a.example.com/*")
        );
        assert_eq!(pick("https", "a.example.com", Some(8443), "/x"), None);
        assert_eq!(
            pick("http", "127.0.0.1", Some(8080), "/x"),
            Some("http://127.0.0.1:8080/x")
        );
        assert_eq!(pick("http", "127.0.0.1", None, "/x"), None);
    }

    #[test]
    fn the_most_specific_covering_pattern_is_chosen() {
        let patterns: Vec<_> = [
            "https://a.example.com/*",
            "https://a.example.com/api/*",
            "https://a.example.com/api/v1/*",
            "https://a.example.com/api/v1/health",
            "https://b.example.com/*",
        ]
        .iter()
        .map(|p| AudiencePattern::parse(p).unwrap())
        .collect();
        let pick =
            |u: &str| AudiencePattern::choose(&patterns, &url(u)).map(|p| p.as_str().to_owned());
        assert_eq!(
            pick("https://a.example.com/api/v1/health").as_deref(),
            Some("https://a.example.com/api/v1/health")
        );
        assert_eq!(
            pick("https://a.example.com/api/v1/x").as_deref(),
            Some("https://a.example.com/api/v1/*")
        );
        assert_eq!(
            pick("https://a.example.com/api/v2").as_deref(),
            Some("https://a.example.com/api/*")
        );
        assert_eq!(
            pick("https://a.example.com/").as_deref(),
            Some("https://a.example.com/*")
        );
        assert_eq!(
            pick("https://b.example.com/z").as_deref(),
            Some("https://b.example.com/*")
        );
        assert_eq!(pick("https://c.example.com/"), None);
    }
}
