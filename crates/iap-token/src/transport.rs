//! The HTTP side of every credential source: one shared client, requests to
//! Google's token endpoints, and Google's error answers turned into
//! [`Error`]s.
//!
//! A [`Transport`] is cheap to clone. [`Transport::default`] uses one
//! process-wide `reqwest::Client` (rustls, connect timeout 5 s, request
//! timeout 30 s, redirects never followed), built on first use, so creating
//! a source needs no running runtime; it honours `HTTPS_PROXY`/`NO_PROXY`,
//! except for loopback hosts (`127.0.0.0/8`, `::1`, `localhost`) and the
//! metadata server, which it always reaches directly (a proxy cannot reach
//! this machine's own ports; see [`Transport::client_for`]).
//! [`Transport::direct`] never uses a proxy, for the metadata server. Bring
//! your own client (extra root certificates, a fixed proxy) with each
//! source's `with_http_client`.
//!
//! Errors follow one rule (Google's client libraries'; see `docs/errors.md`): HTTP 500, 503,
//! 504, 408 and 429, and the codes `internal_failure`, `server_error` and
//! `temporarily_unavailable`, are transient; every other answer is
//! permanent. Failures before an answer ([`Error::Transport`]) are
//! transient. Errors name the endpoint (the URL without its query) and never
//! carry what was sent.
//!

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use http::HeaderMap;
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

use crate::{Error, Result};

/// How long connecting to an endpoint may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole request may take, answer included.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer body read from an endpoint.
const MAX_BODY: usize = 1024 * 1024;
pub(crate) use crate::endpoints::METADATA_HOSTS;

/// Sends requests to Google's identity endpoints. See the [module docs](self).
#[derive(Clone, Default)]
pub(crate) struct Transport {
    client: Which,
}

#[derive(Clone, Default)]
enum Which {
    /// The process-wide client (proxies from the environment honoured).
    #[default]
    Shared,
    /// The process-wide client that never uses a proxy.
    Direct,
    /// The caller's own.
    Custom(reqwest::Client),
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.client {
            Which::Shared => "Transport(shared)",
            Which::Direct => "Transport(direct)",
            Which::Custom(_) => "Transport(custom)",
        })
    }
}

type Built = OnceLock<std::result::Result<reqwest::Client, String>>;
static SHARED: Built = OnceLock::new();
static DIRECT: Built = OnceLock::new();

fn build(cell: &'static Built, proxies: bool) -> Result<&'static reqwest::Client> {
    cell.get_or_init(|| {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("iap-rs/", env!("CARGO_PKG_VERSION")));
        if !proxies {
            builder = builder.no_proxy();
        }
        builder.build().map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| Error::Other {
        context: format!("cannot build the HTTP client: {e}"),
        source: None,
    })
}

/// The client every default [`Transport`] uses for remote hosts, built on
/// first call. It honours `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY`.
pub(crate) fn shared_client() -> Result<&'static reqwest::Client> {
    build(&SHARED, true)
}

/// An answer read in full. `Debug` shows the status and the body's length
/// only: bodies hold tokens.
#[derive(Clone)]
pub(crate) struct Answer {
    status: http::StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Answer")
            .field("status", &self.status)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// A transport using `client` instead of the shared one. Configure the
    /// client not to follow redirects: token endpoints never redirect, and a
    /// redirect must not carry credentials elsewhere.
    pub(crate) fn new(client: reqwest::Client) -> Self {
        Transport {
            client: Which::Custom(client),
        }
    }

    /// The shared settings without any proxy: for the metadata server, which
    /// only answers on the machine's own link (Go's client does the same).
    /// The default transport of [`MetadataSource`](crate::source::metadata::MetadataSource).
    pub(crate) fn direct() -> Self {
        Transport {
            client: Which::Direct,
        }
    }

    /// The client requests to remote hosts go through. Build requests on
    /// [`client_for`](Self::client_for) instead, which knows about loopback.
    pub(crate) fn client(&self) -> Result<&reqwest::Client> {
        match &self.client {
            Which::Shared => shared_client(),
            Which::Direct => build(&DIRECT, false),
            Which::Custom(c) => Ok(c),
        }
    }

    /// The client a request to `url` goes through. The default transport
    /// reaches loopback hosts (`127.0.0.0/8`, `::1`, `localhost`) and the
    /// metadata server without any proxy from the environment: a proxy
    /// elsewhere cannot reach this machine's own ports (a local emulator,
    /// `iap proxy`), and the metadata server answers only on the machine's
    /// own link. A client of your own ([`Transport::new`]) is used as is.
    pub(crate) fn client_for(&self, url: &Url) -> Result<&reqwest::Client> {
        match &self.client {
            Which::Shared if is_loopback_or_metadata(url) => build(&DIRECT, false),
            _ => self.client(),
        }
    }

    /// POSTs `form` (`application/x-www-form-urlencoded`) to `url` and
    /// decodes a 2xx JSON answer. `url` must pass [`ensure_secure`].
    pub(crate) async fn post_form<T: DeserializeOwned>(
        &self,
        url: &Url,
        form: &[(&str, &str)],
    ) -> Result<T> {
        ensure_secure(url)?;
        let req = self.client_for(url)?.post(url.clone()).form(form);
        self.send(url, req).await?.json(url)
    }

    /// POSTs `body` as JSON with `headers` (e.g. a sensitive `Authorization`)
    /// to `url` and decodes a 2xx JSON answer. `url` must pass [`ensure_secure`].
    pub(crate) async fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        url: &Url,
        headers: HeaderMap,
        body: &B,
    ) -> Result<T> {
        ensure_secure(url)?;
        let req = self
            .client_for(url)?
            .post(url.clone())
            .headers(headers)
            .json(body);
        self.send(url, req).await?.json(url)
    }

    /// Sends a request built on [`Transport::client_for`] and reads the answer
    /// (at most 1 MiB). A non-2xx status becomes [`Error::Endpoint`] (see
    /// [`endpoint_error`]); a failure before the answer becomes
    /// [`Error::Transport`]. `url` is the request's URL, named in errors
    /// without its query.
    ///
    /// Unlike the other methods this does not call [`ensure_secure`]: the
    /// caller decides (the metadata server is plain http by design).
    pub(crate) async fn send(&self, url: &Url, req: reqwest::RequestBuilder) -> Result<Answer> {
        let answer = self.send_raw(url, req).await?;
        if answer.status.is_success() {
            Ok(answer)
        } else {
            Err(endpoint_error(url, answer.status.as_u16(), &answer.body))
        }
    }

    /// Like [`Transport::send`], but any status is returned as an answer.
    pub(crate) async fn send_raw(&self, url: &Url, req: reqwest::RequestBuilder) -> Result<Answer> {
        let transport_err = |e: reqwest::Error| Error::Transport {
            endpoint: endpoint_name(url),
            // The endpoint is named above; the URL in reqwest's error may carry a query.
            source: std::sync::Arc::new(e.without_url()),
        };
        let mut response = req.send().await.map_err(transport_err)?;
        let status = response.status();
        tracing::debug!(endpoint = %endpoint_name(url), status = status.as_u16(), "identity endpoint answered");
        let headers = std::mem::take(response.headers_mut());
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport_err)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(Error::Protocol {
                    endpoint: endpoint_name(url),
                    problem: format!("the answer is larger than {MAX_BODY} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

impl Answer {
    /// The HTTP status.
    pub(crate) fn status(&self) -> http::StatusCode {
        self.status
    }

    /// The response headers.
    pub(crate) fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// Decodes the body as JSON into `T`. The error names `url`'s endpoint
    /// and where the JSON went wrong, never the body itself.
    pub(crate) fn json<T: DeserializeOwned>(&self, url: &Url) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| Error::Protocol {
            endpoint: endpoint_name(url),
            problem: json_problem(&e),
        })
    }

    /// The body as UTF-8 text, trimmed.
    pub(crate) fn text(&self, url: &Url) -> Result<&str> {
        std::str::from_utf8(&self.body)
            .map(str::trim)
            .map_err(|_| Error::Protocol {
                endpoint: endpoint_name(url),
                problem: "the answer is not UTF-8 text".into(),
            })
    }
}

/// Describes a JSON decoding error without quoting the input (which may be
/// a token): serde's messages can include string values.
pub(crate) fn json_problem(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let at = format!("line {}, column {}", e.line(), e.column());
    match e.classify() {
        Category::Io => format!("the answer could not be read ({at})"),
        Category::Eof => format!("the answer is cut off: truncated JSON ({at})"),
        Category::Syntax => format!("the answer is not valid JSON ({at})"),
        Category::Data => {
            // serde's text may quote a value (a token): keep only the shape.
            let text = e.to_string();
            if let Some(field) = text
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next())
            {
                format!("the answer has no `{field}` field ({at})")
            } else if let Some(expected) = text
                .split(", expected ")
                .nth(1)
                .map(|rest| rest.split(" at line ").next().unwrap_or(rest))
                .filter(|_| text.starts_with("invalid type: "))
            {
                let found = text
                    .trim_start_matches("invalid type: ")
                    .split([' ', ','])
                    .next()
                    .unwrap_or("value");
                format!("the answer has a {found} where {expected} belongs ({at})")
            } else {
                format!("the answer does not have the expected fields ({at})")
            }
        }
    }
}

/// The URL without its query or fragment, as errors and logs name it.
pub(crate) fn endpoint_name(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.to_string()
}

/// Whether an HTTP status is worth retrying (500, 503, 504, 408, 429).
pub(crate) fn is_transient_status(status: u16) -> bool {
    matches!(status, 500 | 503 | 504 | 408 | 429)
}

/// Whether a Google `error` code (or description) is worth retrying.
pub(crate) fn is_transient_code(code: &str) -> bool {
    matches!(
        code,
        "internal_failure" | "server_error" | "temporarily_unavailable"
    )
}

/// Turns a non-2xx answer into [`Error::Endpoint`]: Google's OAuth error
/// JSON (`{"error","error_description"}`), IAM's
/// (`{"error":{"code","message","status"}}`), or else the status reason
/// and the first line of a text body (with anything token-like removed).
pub(crate) fn endpoint_error(url: &Url, status: u16, body: &[u8]) -> Error {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum GoogleError {
        OAuth {
            error: String,
            error_description: Option<String>,
        },
        Iam {
            error: IamError,
        },
    }
    #[derive(serde::Deserialize)]
    struct IamError {
        message: Option<String>,
        status: Option<String>,
    }
    let (error, description) = match serde_json::from_slice::<GoogleError>(body) {
        Ok(GoogleError::OAuth {
            error,
            error_description,
        }) => (error, error_description),
        Ok(GoogleError::Iam { error }) => (
            error.status.unwrap_or_else(|| reason(status)),
            error.message,
        ),
        Err(_) => (reason(status), text_summary(body)),
    };
    let transient = is_transient_status(status)
        || is_transient_code(&error)
        || description.as_deref().is_some_and(is_transient_code);
    Error::Endpoint {
        endpoint: endpoint_name(url),
        status,
        error: scrub(&error),
        description: description.map(|d| scrub(&d)),
        transient,
        hint: None,
    }
}

fn reason(status: u16) -> String {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("error")
        .to_string()
}

/// The first non-empty line of a text body, at most 200 characters.
fn text_summary(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    if line.starts_with('<') {
        return None; // an HTML page says nothing useful in one line
    }
    let mut s: String = line.chars().take(200).collect();
    if s.len() < line.len() {
        s.push('…');
    }
    Some(s)
}

/// Replaces every secret in `text` with `<redacted>`, wherever it sits: in
/// a query string, a JSON document, a form body or plain words. Found:
/// JWTs and signed assertions (`eyJ...`), access tokens (`ya29.`), refresh
/// tokens (`1//`), OAuth client secrets (`GOCSPX-`), PEM blocks (from
/// `-----BEGIN` to the end of the matching `-----END ...-----`), and the
/// values of sensitive fields (`assertion=...`, `"refresh_token": "..."`).
/// Every error text built from an endpoint's answer passes through it.
pub(crate) fn scrub(text: &str) -> String {
    const REDACTED: &str = "<redacted>";
    const PREFIXES: &[&str] = &["eyJ", "ya29.", "1//", "GOCSPX-"];
    const FIELDS: &[&str] = &[
        "assertion",
        "refresh_token",
        "client_secret",
        "access_token",
        "id_token",
        "subject_token",
        "private_key",
        "code_verifier",
        "token",
        "code",
        "signedJwt",
        "accessToken",
    ];
    let bytes = text.as_bytes();
    let token_char = |b: u8| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b);
    let starts = |at: usize, p: &str| bytes[at..].starts_with(p.as_bytes());
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let boundary = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        // A PEM block, to its END line (or the end of the text).
        if starts(i, "-----BEGIN") {
            let end = text[i..]
                .find("-----END")
                .and_then(|e| {
                    let after = i + e + "-----END".len();
                    text[after..].find("-----").map(|c| after + c + 5)
                })
                .unwrap_or(bytes.len());
            out.push_str(&text[copied..i]);
            out.push_str(REDACTED);
            copied = end;
            i = end;
            continue;
        }
        // A token by its shape.
        if boundary && PREFIXES.iter().any(|p| starts(i, p)) {
            let mut end = i;
            while end < bytes.len() && token_char(bytes[end]) {
                end += 1;
            }
            out.push_str(&text[copied..i]);
            out.push_str(REDACTED);
            copied = end;
            i = end;
            continue;
        }
        // The value of a sensitive field: `name=value` or `"name": "value"`.
        if boundary
            && let Some(name) = FIELDS.iter().find(|f| {
                starts(i, f)
                    && !bytes
                        .get(i + f.len())
                        .copied()
                        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
            })
        {
            let mut j = i + name.len();
            if bytes.get(j) == Some(&b'"') {
                j += 1;
            }
            while bytes.get(j).is_some_and(|b| *b == b' ') {
                j += 1;
            }
            let value = match bytes.get(j) {
                Some(b'=') => Some((j + 1, false)),
                Some(b':') => {
                    let mut k = j + 1;
                    while bytes.get(k).is_some_and(|b| *b == b' ') {
                        k += 1;
                    }
                    (bytes.get(k) == Some(&b'"')).then_some((k + 1, true))
                }
                _ => None,
            };
            if let Some((start, quoted)) = value {
                let mut end = start;
                while end < bytes.len() {
                    let b = bytes[end];
                    if quoted && b == b'\\' {
                        end += 2;
                        continue;
                    }
                    let stop = if quoted {
                        b == b'"'
                    } else {
                        b == b'&' || b == b'"' || b == b',' || b.is_ascii_whitespace()
                    };
                    if stop {
                        break;
                    }
                    end += 1;
                }
                let end = end.min(bytes.len());
                if end > start {
                    out.push_str(&text[copied..start]);
                    out.push_str(REDACTED);
                    copied = end;
                }
                i = end.max(i + 1);
                continue;
            }
        }
        i += 1;
    }
    if copied == 0 {
        return text.to_string();
    }
    out.push_str(&text[copied..]);
    out
}

/// Checks that credentials may be sent to `url`: `https`, or plain `http`
/// to a loopback host (`127.0.0.0/8`, `::1`, `localhost`) or to the
/// metadata server ([`METADATA_HOSTS`]). Anything else is
/// [`Error::InsecureEndpoint`].
pub(crate) fn ensure_secure(url: &Url) -> Result<()> {
    let allowed = match url.scheme() {
        "https" => true,
        "http" => is_loopback_or_metadata(url),
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(Error::InsecureEndpoint {
            url: endpoint_name(url),
        })
    }
}

fn is_loopback_or_metadata(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => {
            ip.is_loopback() || METADATA_HOSTS.contains(&ip.to_string().as_str())
        }
        Some(url::Host::Ipv6(ip)) => {
            ip.is_loopback()
                || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
                || METADATA_HOSTS.contains(&ip.to_string().as_str())
        }
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || METADATA_HOSTS.contains(&d.as_str())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_problems_name_the_shape_never_the_value() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Answer {
            id_token: String,
        }
        let problem = |body: &str| json_problem(&serde_json::from_str::<Answer>(body).unwrap_err());
        let p = problem(r#"{"id_token": 5}"#);
        assert!(p.contains("integer where a string belongs"), "{p}");
        let p = problem(r#"{"x": "eyJsecret"}"#);
        assert!(
            p.contains("no `id_token` field") && !p.contains("eyJ"),
            "{p}"
        );
        let p = problem(r#"{"id_token": "eyJab"#);
        assert!(p.contains("cut off"), "{p}");
        let p = problem(r#"{"id_token": ["eyJsecret"]}"#);
        assert!(!p.contains("eyJ"), "{p}");
    }

    #[test]
    fn the_scrubber_finds_secrets_anywhere() {
        let pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n";
        let cases = [
            (
                "grant_type=jwt-bearer&assertion=eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2ln&x=1",
                "eyJhbGci",
            ),
            (
                "bad request: refresh_token=1//0gAbCdEf-ghIJ&client_id=c",
                "1//0gAb",
            ),
            (
                r#"{"client_secret": "GOCSPX-abcdef123", "a": 1}"#,
                "GOCSPX-abc",
            ),
            (r#"{"client_secret":"not-shaped-like-one"}"#, "not-shaped"),
            ("echo: ya29.a0AfH6SMBx and more", "ya29.a0"),
            (pem, "MIIEvQ"),
            (
                r#"{"private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQ\n-----END PRIVATE KEY-----\n"}"#,
                "MIIEvQ",
            ),
            ("https://x/token?code=4/0Adeu5BW&state=s", "4/0Adeu5BW"),
            ("(eyJabc.def.ghi)", "eyJabc"),
        ];
        for (text, secret) in cases {
            let scrubbed = scrub(text);
            assert!(!scrubbed.contains(secret), "{text:?} => {scrubbed:?}");
            assert!(scrubbed.contains("<redacted>"), "{scrubbed}");
        }
        assert_eq!(
            scrub("invalid_grant: Bad Request"),
            "invalid_grant: Bad Request"
        );
        assert_eq!(scrub("tokens: none; keyJoe"), "tokens: none; keyJoe");
        // Whatever the input, no panic (multi-byte text, cut-off fields).
        for text in [
            "token=",
            "\"token\": \"é\\",
            "-----BEGIN",
            "ü1//é",
            "code=é&",
        ] {
            let _ = scrub(text);
        }
    }

    #[test]
    fn credentials_go_over_https_loopback_or_the_metadata_server_only() {
        let ok = |s: &str| ensure_secure(&Url::parse(s).unwrap()).is_ok();
        assert!(ok("https://oauth2.googleapis.com/token"));
        assert!(ok("http://127.0.0.1:8080/token"));
        assert!(ok("http://[::1]:8080/token"));
        assert!(ok("http://metadata.google.internal/computeMetadata/v1/"));
        assert!(!ok("http://oauth2.googleapis.com/token"));
        assert!(!ok("ftp://127.0.0.1/token"));
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn oauth_error_json_is_parsed_and_classified() {
        let e = endpoint_error(
            &url("https://oauth2.googleapis.com/token?x=1"),
            400,
            br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
        );
        match &e {
            Error::Endpoint {
                endpoint,
                status,
                error,
                description,
                transient,
                ..
            } => {
                assert_eq!(endpoint, "https://oauth2.googleapis.com/token");
                assert_eq!(*status, 400);
                assert_eq!(error, "invalid_grant");
                assert_eq!(description.as_deref(), Some("Invalid JWT Signature."));
                assert!(!transient);
            }
            other => panic!("{other:?}"),
        }
        assert!(!e.is_transient());
    }

    #[test]
    fn iam_error_json_is_parsed() {
        let e = endpoint_error(
            &url("https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/a@b:generateIdToken"),
            403,
            br#"{"error":{"code":403,"message":"Permission 'iam.serviceAccounts.getOpenIdToken' denied","status":"PERMISSION_DENIED"}}"#,
        );
        let text = e.to_string();
        assert!(
            text.contains(
                "403: PERMISSION_DENIED: Permission 'iam.serviceAccounts.getOpenIdToken' denied"
            ),
            "{text}"
        );
        assert!(!e.is_transient());
    }

    #[test]
    fn transient_by_status_or_code() {
        let u = url("https://x/token");
        for status in [500, 503, 504, 408, 429] {
            assert!(endpoint_error(&u, status, b"").is_transient(), "{status}");
        }
        for status in [400, 401, 403, 404, 502] {
            assert!(
                !endpoint_error(&u, status, b"nope").is_transient(),
                "{status}"
            );
        }
        assert!(endpoint_error(&u, 400, br#"{"error":"internal_failure"}"#).is_transient());
        assert!(
            endpoint_error(
                &u,
                400,
                br#"{"error":"x","error_description":"temporarily_unavailable"}"#
            )
            .is_transient()
        );
    }

    #[test]
    fn text_bodies_are_summarized_and_scrubbed() {
        let e = endpoint_error(
            &url("http://127.0.0.1:1/identity"),
            400,
            b"non-empty audience parameter required\nmore",
        );
        assert!(
            e.to_string()
                .ends_with("400: Bad Request: non-empty audience parameter required"),
            "{e}"
        );
        let e = endpoint_error(
            &url("http://127.0.0.1:1/x"),
            401,
            b"bad token eyJhbGciOi.eyJzdWIi.c2ln here",
        );
        assert!(!e.to_string().contains("eyJ"), "{e}");
        let e = endpoint_error(
            &url("http://127.0.0.1:1/x"),
            400,
            br#"{"error":"bad","error_description":"got 1//0abc"}"#,
        );
        assert!(!e.to_string().contains("1//0abc"), "{e}");
    }

    #[test]
    fn insecure_endpoints_are_refused() {
        for bad in [
            "http://example.com/token",
            "http://10.0.0.1/token",
            "file:///etc/passwd",
            "http://localhost.evil.com/",
            "http://app.localhost/",
        ] {
            let err = ensure_secure(&url(bad)).unwrap_err();
            assert!(matches!(err, Error::InsecureEndpoint { .. }), "{bad}");
        }
        for good in [
            "https://example.com/",
            "http://127.0.0.2:9/",
            "http://LOCALHOST:1/",
            "http://169.254.169.254/",
        ] {
            ensure_secure(&url(good)).unwrap();
        }
    }

    #[test]
    fn endpoint_name_drops_query_and_userinfo() {
        assert_eq!(endpoint_name(&url("https://u:p@h/a?b=c#d")), "https://h/a");
    }
}
