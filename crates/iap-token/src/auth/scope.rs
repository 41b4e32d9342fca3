//! Which requests are in scope: [`OriginMatcher`], the matcher of a
//! configured [`Origin`], and the few accessors the rules read from a
//! request's URL, for both kinds of URL.

use std::fmt;

use http::Uri;
use url::Url;

use crate::origin::Origin;
use crate::{Error, Result};

/// The request parts a host-wildcard audience is made of, exactly as
/// `plan::audience_from_url` reads them: equal keys give equal audiences.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct HostKey {
    scheme: Box<str>,
    host: Box<str>,
    port: Option<u16>,
}

impl HostKey {
    pub(super) fn of<U: RequestUrl + ?Sized>(uri: &U) -> Option<HostKey> {
        let (scheme, host, port) = uri.parts()?;
        Some(HostKey {
            scheme: scheme.into(),
            host: host.into(),
            port,
        })
    }

    /// Whether `uri` has exactly these parts. No allocation.
    #[inline]
    pub(super) fn matches<U: RequestUrl + ?Sized>(&self, uri: &U) -> bool {
        uri.parts().is_some_and(|(scheme, host, port)| {
            *self.scheme == *scheme && *self.host == *host && self.port == port
        })
    }
}

/// An allowed origin with what a request's URL is compared with, worked
/// out once: the matcher of an [`Origin`]. A request on it then costs a
/// comparison or two of short strings, not a parse of its authority; the
/// unusual spellings go to [`Origin::matches`].
#[derive(Clone)]
pub(super) struct OriginMatcher {
    origin: Origin,
    /// Lower case.
    scheme: Box<str>,
    /// `scheme://host[:port]` as `url` serializes a URL on this origin (the
    /// default port left out): the text a reqwest URL on it starts with.
    url_prefix: Box<str>,
    /// Lower case, no trailing dot.
    host: Box<str>,
    port: u16,
    /// `host:port`, the authority as most requests spell it...
    host_port: Box<str>,
    /// ... or just `host`, when `port` is the scheme's default.
    default_port: bool,
}

/// A request's URL as the rules read it: an [`http::Uri`] (tower, hyper)
/// or a [`url::Url`] (reqwest), through the same few accessors, each cheap
/// on its type. No accessor allocates but `to_url`, which only audience
/// discovery needs (once per origin).
pub(super) trait RequestUrl: fmt::Debug {
    /// Scheme, host (as written; brackets kept for IPv6) and the port
    /// when one is given; `None` without a scheme or host, or with a
    /// port that is not a number.
    fn parts(&self) -> Option<(&str, &str, Option<u16>)>;
    fn host(&self) -> Option<&str>;
    fn path(&self) -> &str;
    fn on_origin(&self, origin: &OriginMatcher) -> bool;
    /// The URL, for audience discovery; `Err` says which URL is unfit.
    fn to_url(&self) -> Result<Url, String>;
}

impl RequestUrl for Uri {
    #[inline]
    fn parts(&self) -> Option<(&str, &str, Option<u16>)> {
        let (scheme, authority) = (self.scheme_str()?, self.authority()?);
        Some((scheme, authority.host(), authority.port_u16()))
    }

    fn host(&self) -> Option<&str> {
        Uri::host(self)
    }

    fn path(&self) -> &str {
        Uri::path(self)
    }

    #[inline(always)]
    fn on_origin(&self, origin: &OriginMatcher) -> bool {
        origin.matches_uri(self)
    }

    fn to_url(&self) -> Result<Url, String> {
        Url::parse(&self.to_string()).map_err(|e| format!("{self:?}: not an absolute URL ({e})"))
    }
}

impl RequestUrl for Url {
    #[inline]
    fn parts(&self) -> Option<(&str, &str, Option<u16>)> {
        Some((self.scheme(), self.host_str()?, self.port()))
    }

    fn host(&self) -> Option<&str> {
        self.host_str()
    }

    fn path(&self) -> &str {
        Url::path(self)
    }

    #[inline]
    fn on_origin(&self, origin: &OriginMatcher) -> bool {
        origin.matches_url(self)
    }

    fn to_url(&self) -> Result<Url, String> {
        Ok(self.clone())
    }
}

impl OriginMatcher {
    pub(super) fn parse(s: &str) -> Result<OriginMatcher> {
        let origin = Origin::parse(s)?;
        Url::parse(s)
            .ok()
            .and_then(|url| OriginMatcher::of_url(&url))
            .filter(|key| key.origin == origin)
            .ok_or_else(|| {
                Error::config(format!(
                    "{s:?} is not an origin: write it as https://host or https://host:port"
                ))
            })
    }

    pub(super) fn of_url(url: &Url) -> Option<OriginMatcher> {
        let origin = Origin::of_url(url)?;
        let host = url.host_str()?.trim_end_matches('.').to_ascii_lowercase();
        let port = url.port_or_known_default()?;
        let url_prefix = match url.port() {
            None => format!("{}://{host}", url.scheme()),
            Some(port) => format!("{}://{host}:{port}", url.scheme()),
        };
        Some(OriginMatcher {
            origin,
            scheme: url.scheme().into(),
            url_prefix: url_prefix.into(),
            host_port: format!("{host}:{port}").into(),
            default_port: url.port().is_none(),
            host: host.into(),
            port,
        })
    }

    /// Whether `uri` is on this origin: its scheme, then its authority's
    /// text. Spellings that differ from the text yet name the origin (user
    /// info, a trailing dot, a zero-padded port) go the slow way.
    #[inline(always)]
    fn matches_uri(&self, uri: &Uri) -> bool {
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return false;
        };
        // `http` keeps `http` and `https` as an enum and gives them back as
        // these literals: matched here, they cost a comparison of lengths
        // and of a few bytes, no call.
        let same_scheme = match scheme {
            "https" => &*self.scheme == "https",
            "http" => &*self.scheme == "http",
            other => other.eq_ignore_ascii_case(&self.scheme),
        };
        if !same_scheme {
            return false;
        }
        let text = authority.as_str();
        // Exact (lower-case) spellings first: a plain memcmp.
        (self.default_port && text == &*self.host)
            || text == &*self.host_port
            || self.matches_uri_spelled_otherwise(text, uri)
    }

    /// [`OriginMatcher::matches_uri`] for an authority not written as
    /// `host` or `host:port` in lower case.
    #[cold]
    #[inline(never)]
    fn matches_uri_spelled_otherwise(&self, text: &str, uri: &Uri) -> bool {
        if text.eq_ignore_ascii_case(&self.host_port)
            || (self.default_port && text.eq_ignore_ascii_case(&self.host))
        {
            return true;
        }
        let unusual =
            text.contains('@') || text.ends_with('.') || text.contains(".:") || text.contains(":0");
        unusual && self.origin.matches(uri)
    }

    /// Whether `url` is on this origin (`url` keeps its parts apart, and
    /// lower-cases scheme and host).
    #[inline]
    fn matches_url(&self, url: &Url) -> bool {
        // `url` serializes scheme and host in lower case and leaves a
        // default port out, and an http(s) URL's path starts with `/`: a
        // URL on this origin, spelled as most are, starts with the prefix
        // and then `/`. (User info, another port or a longer host put
        // something else there.) Anything else is compared part by part.
        let (text, prefix) = (url.as_str().as_bytes(), self.url_prefix.as_bytes());
        if text.len() > prefix.len() && text[prefix.len()] == b'/' && text.starts_with(prefix) {
            return true;
        }
        let Some(host) = url.host_str() else {
            return false;
        };
        // The host first, as written (already lower case): a plain memcmp;
        // then the spellings with trailing dots.
        let host_matches =
            host == &*self.host || host.trim_end_matches('.').eq_ignore_ascii_case(&self.host);
        host_matches
            && url.scheme() == &*self.scheme
            && url.port_or_known_default() == Some(self.port)
    }
}

impl PartialEq for OriginMatcher {
    fn eq(&self, other: &OriginMatcher) -> bool {
        self.origin == other.origin
    }
}

impl fmt::Debug for OriginMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.origin.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(origin: &str, url: &str) -> (bool, Option<bool>) {
        let key = OriginMatcher::parse(origin).unwrap();
        let uri: Uri = url.parse().unwrap();
        let by_url = Url::parse(url).ok().map(|u| key.matches_url(&u));
        (key.matches_uri(&uri), by_url)
    }

    #[test]
    fn default_port_written_or_not_is_the_same_origin() {
        for (origin, url) in [
            ("https://app.example.com", "https://app.example.com:443/x"),
            ("https://app.example.com:443", "https://app.example.com/x"),
            ("http://app.example.com", "http://app.example.com:80/"),
            ("http://app.example.com:80/", "http://app.example.com/"),
        ] {
            assert_eq!(on(origin, url), (true, Some(true)), "{origin} {url}");
        }
    }

    #[test]
    fn hosts_and_schemes_match_in_any_case() {
        for url in [
            "https://APP.Example.COM/x",
            "HTTPS://app.example.com:443/",
            "https://App.example.com./y",
            "https://user@app.example.com/",
            "https://app.example.com:0443/",
        ] {
            assert_eq!(
                on("https://App.EXAMPLE.com", url),
                (true, Some(true)),
                "{url}"
            );
        }
    }

    #[test]
    fn other_schemes_hosts_and_ports_are_other_origins() {
        for url in [
            "http://app.example.com/",
            "https://app.example.com:8443/",
            "https://app.example.com:80/",
            "https://app.example.com.evil.com/",
            "https://evil.com/app.example.com",
            "https://app.example.com@evil.com/",
        ] {
            assert_eq!(
                on("https://app.example.com", url),
                (false, Some(false)),
                "{url}"
            );
        }
        assert_eq!(
            on("http://127.0.0.1:8080", "http://127.0.0.1:8080/a"),
            (true, Some(true))
        );
        assert_eq!(
            on("http://127.0.0.1:8080", "http://127.0.0.1/a"),
            (false, Some(false))
        );
        assert_eq!(
            on("http://[::1]:8080", "http://[::1]:8080/"),
            (true, Some(true))
        );
        assert_eq!(on("https://app.example.com", "/relative"), (false, None));
    }

    #[test]
    fn a_url_that_starts_like_the_origin_is_not_on_it() {
        // reqwest's URLs are matched by the text they start with first.
        for (origin, url) in [
            ("http://[::1]:808", "http://[::1]:8080/"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:80/"),
            ("https://app.example.com", "https://app.example.com:444/"),
            ("https://app.example.com", "https://app.example.community/"),
            ("https://app.example.com:8443", "https://app.example.com/"),
        ] {
            assert_eq!(on(origin, url), (false, Some(false)), "{origin} {url}");
        }
        for (origin, url) in [
            (
                "https://app.example.com:443",
                "https://app.example.com/?q=1",
            ),
            (
                "https://app.example.com:8443",
                "https://app.example.com:8443/a",
            ),
            ("HTTP://LOCALHOST:3000", "http://localhost:3000/"),
        ] {
            assert_eq!(on(origin, url), (true, Some(true)), "{origin} {url}");
        }
    }
}
