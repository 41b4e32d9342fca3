//! [`Origin`]: the one HTTP origin type (scheme, host, port).

use std::fmt;

use http::Uri;
use url::Url;

use crate::{Error, Result};

/// An HTTP origin: scheme (`http` or `https`), host (lower case) and port
/// (the scheme's default filled in). What the token scope, audience
/// discovery and the adapters' "did the answer come from where the token
/// went" check compare.
///
/// ```
/// use iap_token::Origin;
///
/// let origin = Origin::parse("https://App.Example.com")?;
/// assert_eq!(origin.to_string(), "https://app.example.com");
/// assert_eq!(origin.port(), 443);
/// assert_eq!(Origin::of("https://app.example.com:443/api?x=1")?, origin);
/// assert!(origin.matches(&"https://app.example.com/x".parse().unwrap()));
/// assert!(!origin.matches(&"http://app.example.com/x".parse().unwrap()));
/// # Ok::<(), iap_token::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    scheme: Box<str>,
    host: Box<str>,
    port: u16,
}

impl Origin {
    /// Parses `https://host[:port]` (a trailing `/` is allowed; nothing else).
    pub fn parse(s: &str) -> Result<Origin> {
        let bad = |why: &str| {
            Error::config(format!(
                "{s:?} is not an origin ({why}): write it as https://host or https://host:port"
            ))
        };
        let url = Url::parse(s).map_err(|e| bad(&e.to_string()))?;
        if url.path() != "/"
            || url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
        {
            return Err(bad("it has a path, query, fragment or user"));
        }
        Origin::of_url(&url)
            .ok_or_else(|| bad("only http and https origins with a host are supported"))
    }

    /// The origin of any `http`/`https` URL (its path, query and user are ignored).
    pub fn of(url: &str) -> Result<Origin> {
        let bad = |why: String| {
            Error::config(format!(
                "{url:?} has no http(s) origin ({why}): write it as https://host[:port]/..."
            ))
        };
        let parsed = Url::parse(url).map_err(|e| bad(e.to_string()))?;
        Origin::of_url(&parsed)
            .ok_or_else(|| bad("only http and https URLs with a host have one".into()))
    }

    /// The origin of `url`, if it is an `http`/`https` URL with a host.
    pub fn of_url(url: &Url) -> Option<Origin> {
        let scheme = url.scheme();
        if scheme != "http" && scheme != "https" {
            return None;
        }
        Some(Origin {
            scheme: scheme.into(),
            host: url.host_str()?.to_ascii_lowercase().into(),
            port: url.port_or_known_default()?,
        })
    }

    /// Whether `uri` is on this origin. No allocation.
    #[inline]
    pub fn matches(&self, uri: &Uri) -> bool {
        let (Some(scheme), Some(host)) = (uri.scheme_str(), uri.host()) else {
            return false;
        };
        let port = uri.port_u16().or(match scheme.len() {
            4 if scheme.eq_ignore_ascii_case("http") => Some(80),
            5 if scheme.eq_ignore_ascii_case("https") => Some(443),
            _ => None,
        });
        port == Some(self.port)
            && scheme.eq_ignore_ascii_case(&self.scheme)
            && host.trim_end_matches('.').eq_ignore_ascii_case(&self.host)
    }
}

impl Origin {
    /// `http` or `https`.
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The host, lower case (IPv6 addresses in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, the scheme's default filled in.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether `url` is on this origin. No allocation.
    #[inline]
    pub fn matches_url(&self, url: &Url) -> bool {
        url.scheme() == &*self.scheme
            && url.port_or_known_default() == Some(self.port)
            && url
                .host_str()
                .is_some_and(|host| host.trim_end_matches('.').eq_ignore_ascii_case(&self.host))
    }

    /// Whether two URLs share an origin (e.g. where a token went and where
    /// the answer came from, after redirects). No allocation.
    #[inline]
    pub fn same(a: &Url, b: &Url) -> bool {
        a.scheme() == b.scheme()
            && a.port_or_known_default() == b.port_or_known_default()
            && match (a.host_str(), b.host_str()) {
                (Some(x), Some(y)) => x
                    .trim_end_matches('.')
                    .eq_ignore_ascii_case(y.trim_end_matches('.')),
                _ => false,
            }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let default = matches!((&*self.scheme, self.port), ("http", 80) | ("https", 443));
        if default {
            write!(f, "{}://{}", self.scheme, self.host)
        } else {
            write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
        }
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_uris_with_default_ports_and_any_case() {
        let o = Origin::parse("https://App.Example.com").unwrap();
        assert_eq!(o.to_string(), "https://app.example.com");
        for yes in [
            "https://app.example.com/x?y",
            "HTTPS://APP.example.com:443/",
            "https://app.example.com./",
        ] {
            assert!(o.matches(&yes.parse().unwrap()), "{yes}");
        }
        for no in [
            "http://app.example.com/",
            "https://app.example.com:8443/",
            "https://evil.com/",
            "/relative",
        ] {
            assert!(!o.matches(&no.parse().unwrap()), "{no}");
        }
        let local = Origin::parse("http://127.0.0.1:8080/").unwrap();
        assert!(local.matches(&"http://127.0.0.1:8080/a".parse().unwrap()));
        assert!(Origin::parse("https://a.example.com/path").is_err());
        assert!(Origin::parse("not a url").is_err());
    }
}
