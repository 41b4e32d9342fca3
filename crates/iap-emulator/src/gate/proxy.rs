//! The reverse proxy: the gate in front of an app at another URL.
//!
//! Requests that pass the gate are forwarded to the upstream URL with their
//! path and query appended to the upstream's path, bodies streamed both ways
//! (nothing is buffered). HTTP/2 requests (gRPC) go to the upstream over
//! h2c with prior knowledge, everything else over HTTP/1.1. The `Host`
//! header is kept, as Google's load balancer keeps it; hop-by-hop headers
//! are dropped in both directions (`te: trailers` is kept, gRPC needs it).
//! An upstream that cannot be reached gives `502 Bad Gateway`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use http::header::{CONNECTION, HeaderMap, HeaderName, TE};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use url::Url;

/// What the proxy answers with: the upstream's body, or its own 502.
pub(crate) type ProxyBody = Either<Incoming, Full<Bytes>>;

/// A tower service forwarding every request to one upstream URL.
#[derive(Clone)]
pub(crate) struct ReverseProxy {
    /// `scheme://authority/path` of the upstream, without a trailing `/`.
    base: Arc<str>,
    http1: Client<HttpConnector, Body>,
    http2: Client<HttpConnector, Body>,
}

impl std::fmt::Debug for ReverseProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReverseProxy")
            .field("upstream", &self.base)
            .finish_non_exhaustive()
    }
}

impl ReverseProxy {
    /// A proxy to `upstream` (an `http://` URL; its path is a prefix).
    pub(crate) fn new(upstream: &Url) -> Self {
        let mut base = upstream.clone();
        base.set_query(None);
        base.set_fragment(None);
        let base = base.as_str().trim_end_matches('/').into();
        let client = |h2: bool| {
            Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .http2_only(h2)
                .build_http()
        };
        Self {
            base,
            http1: client(false),
            http2: client(true),
        }
    }

    fn upstream_uri(&self, uri: &Uri) -> Option<Uri> {
        let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
        format!("{}{}", self.base, path_and_query).parse().ok()
    }
}

/// Headers that describe one hop, not the message (RFC 9110 section 7.6.1).
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if headers.get(TE).is_some_and(|te| te != "trailers") {
        headers.remove(TE);
    }
}

fn bad_gateway(message: String) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::from(message)));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

impl tower_service::Service<Request<Body>> for ReverseProxy {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The client pools connections itself; it is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let Some(uri) = self.upstream_uri(req.uri()) else {
            let message = format!(
                "iap-emulator proxy: cannot build an upstream URI from {}",
                self.base
            );
            return Box::pin(async move { Ok(bad_gateway(message)) });
        };
        *req.uri_mut() = uri;
        strip_hop_by_hop(req.headers_mut());
        let client = if req.version() == Version::HTTP_2 {
            self.http2.clone()
        } else {
            *req.version_mut() = Version::HTTP_11;
            self.http1.clone()
        };
        let base = self.base.clone();
        Box::pin(async move {
            match client.request(req).await {
                Ok(response) => {
                    let mut response = response.map(Either::Left);
                    strip_hop_by_hop(response.headers_mut());
                    Ok(response)
                }
                Err(e) => Ok(bad_gateway(format!(
                    "iap-emulator proxy: upstream {base} failed: {e}"
                ))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_uri_appends_path_and_query_to_the_upstream_prefix() {
        let proxy = ReverseProxy::new(&"http://127.0.0.1:9/api/".parse().unwrap());
        let uri = proxy.upstream_uri(&"/v1/x?a=1".parse().unwrap()).unwrap();
        assert_eq!(uri, "http://127.0.0.1:9/api/v1/x?a=1");
    }

    #[test]
    fn hop_by_hop_headers_are_dropped_but_te_trailers_is_kept() {
        let mut headers = HeaderMap::new();
        headers.insert("connection", "close, x-hop".parse().unwrap());
        headers.insert("x-hop", "1".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert("te", "trailers".parse().unwrap());
        headers.insert("x-end", "2".parse().unwrap());
        strip_hop_by_hop(&mut headers);
        assert!(headers.get("x-hop").is_none());
        assert!(headers.get("keep-alive").is_none());
        assert_eq!(headers["te"], "trailers");
        assert_eq!(headers["x-end"], "2");
    }
}
