//! `iap proxy`: a local reverse proxy that adds an IAP token to every request.
//!
//! Built from hyper-util's server (HTTP/1.1 and h2c on one port) in front of
//! an [`IapLayer`] over hyper-util's client (HTTP/1.1, or HTTP/2 when the
//! target offers it over TLS). Bodies stream both ways; a request body small
//! enough for the layer's replay buffer is sent again when IAP refuses a
//! token. One log line per request. Ctrl-C (or SIGTERM) stops accepting and
//! lets requests in flight finish.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use iap_emulator::standalone::shutdown_signal;
use iap_token::IapAuth;
use iap_tower::{BoxError, IapLayer, IapService};
use tokio::net::TcpListener;
use tower::ServiceExt as _;
use tower_layer::Layer as _;
use url::Url;

use crate::cli::ProxyArgs;
use crate::failure::{CliResult, Failure};

/// Request and response bodies inside the proxy.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

type Upstream = IapService<Client<hyper_rustls::HttpsConnector<HttpConnector>, ProxyBody>>;

type UpstreamFuture =
    std::pin::Pin<Box<dyn Future<Output = Result<Response<Incoming>, BoxError>> + Send + 'static>>;

/// How long requests in flight may take to finish after Ctrl-C.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `iap proxy` until Ctrl-C.
pub async fn run(args: ProxyArgs) -> CliResult {
    let target = parse_target(&args.target)?;
    let (auth, _) = super::app_auth(&args.auth, &target).await?;
    let listener = TcpListener::bind(args.listen).await.map_err(|e| {
        Failure::new(format!(
            "cannot listen on {}: {e}: choose another address with --listen",
            args.listen
        ))
    })?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        tracing::warn!(
            "listening on {addr}, not loopback: anyone who can reach it calls {target} as you"
        );
    }
    let proxy = Proxy::new(target.clone(), auth)?;
    let shutdown = shutdown_signal();
    println!("listening on http://{addr} -> {target}");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    proxy.serve(listener, shutdown).await;
    eprintln!("proxy stopped");
    Ok(())
}

fn parse_target(target: &str) -> CliResult<Url> {
    let url = Url::parse(target).map_err(|e| {
        Failure::new(format!(
            "--target {target:?} is not a URL ({e}): give e.g. https://app.example.com"
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(Failure::new(format!(
            "--target {target:?} must be an http or https URL with a host"
        )));
    }
    Ok(url)
}

/// The proxy: forwards every request to `target` through an [`IapLayer`].
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    target: Url,
    upstream: Upstream,
}

impl Proxy {
    /// A proxy to `target` authorizing requests with `auth`.
    pub fn new(target: Url, auth: IapAuth) -> CliResult<Self> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .try_with_platform_verifier()
            .map_err(|e| {
                Failure::new(format!(
                    "cannot set up TLS with the system's certificates: {e}"
                ))
            })?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        let client: Client<_, ProxyBody> = Client::builder(TokioExecutor::new()).build(https);
        let upstream = IapLayer::new(auth).layer(client);
        Ok(Proxy {
            inner: Arc::new(Inner { target, upstream }),
        })
    }

    /// Serves connections from `listener` until `shutdown` resolves, then
    /// waits (up to 10 s) for requests in flight.
    pub async fn serve(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let graceful = GracefulShutdown::new();
        let server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let proxy = self.clone();
            let service = hyper::service::service_fn(move |req| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(proxy.forward(req, peer).await) }
            });
            let conn = server
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, "connection ended: {e}");
                }
            });
        }
        drop(listener);
        tracing::info!(
            target: "iap::proxy",
            "stopping: no new connections; waiting for {} open connection(s)",
            graceful.count()
        );
        if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("requests still in flight after {DRAIN_TIMEOUT:?}; stopping anyway");
        }
    }

    /// Forwards one request; never fails (upstream trouble becomes a 502).
    async fn forward(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<ProxyBody> {
        let started = Instant::now();
        let method = req.method().clone();
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        let version = req.version();
        // Where the client reached us (HTTP/1.1 Host, or the h2 authority).
        let local = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| req.uri().authority().map(|a| a.to_string()));
        let mut response = match self.upstream_request(req) {
            Ok(upstream_req) => self.send(upstream_req).await,
            Err(message) => error_response(StatusCode::BAD_REQUEST, message),
        };
        if let Some(local) = local {
            rewrite_location(response.headers_mut(), &self.inner.target, &local);
        }
        tracing::info!(
            target: "iap::proxy",
            "{peer} \"{method} {path} {version:?}\" {} {}ms",
            response.status().as_u16(),
            started.elapsed().as_millis()
        );
        response
    }

    fn upstream_request(&self, req: Request<Incoming>) -> Result<Request<ProxyBody>, String> {
        let (mut parts, body) = req.into_parts();
        let uri = join(&self.inner.target, &parts.uri)
            .ok_or_else(|| format!("iap proxy: cannot forward {}\n", parts.uri))?;
        parts.uri = uri;
        // The client picks the upstream protocol; the Host header follows the URI.
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::HOST);
        Ok(Request::from_parts(
            parts,
            body.map_err(BoxError::from).boxed_unsync(),
        ))
    }

    async fn send(&self, req: Request<ProxyBody>) -> Response<ProxyBody> {
        // Boxed as `Send` here, where the future's type is concrete: through
        // an `async` block the compiler cannot prove it.
        let call: UpstreamFuture = Box::pin(self.inner.upstream.clone().oneshot(req));
        let result = call.await;
        match result {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, body.map_err(BoxError::from).boxed_unsync())
            }
            Err(e) => {
                let cause = describe_boxed(&*e);
                tracing::warn!("upstream request failed: {cause}");
                error_response(StatusCode::BAD_GATEWAY, format!("iap proxy: {cause}\n"))
            }
        }
    }
}

/// The message of a boxed error: an `iap_token::Error` as the CLI shows it,
/// anything else with its innermost cause.
fn describe_boxed(e: &(dyn std::error::Error + Send + Sync + 'static)) -> String {
    match e.downcast_ref::<iap_token::Error>() {
        Some(err) => crate::failure::describe(err),
        None => crate::failure::describe(e),
    }
}

fn error_response(status: StatusCode, message: String) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(message))
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Points a redirect to the target's own origin back at the proxy, so a
/// browser stays on the proxy (and keeps getting tokens) across the app's
/// redirects. Other redirects (IAP's sign-in page, other hosts) are left alone.
fn rewrite_location(headers: &mut HeaderMap, target: &Url, local: &str) {
    let origin = target.origin().ascii_serialization();
    let Some(location) = headers.get(header::LOCATION).and_then(|l| l.to_str().ok()) else {
        return;
    };
    let Some(rest) = location.strip_prefix(&origin) else {
        return;
    };
    if !(rest.is_empty() || rest.starts_with('/') || rest.starts_with('?')) {
        return; // e.g. https://app.example.com.evil.test
    }
    if let Ok(value) = HeaderValue::try_from(format!("http://{local}{rest}")) {
        headers.insert(header::LOCATION, value);
    }
}

/// The target URL with the request's path appended to the target's base
/// path, and the request's query.
fn join(target: &Url, incoming: &Uri) -> Option<Uri> {
    let base = target.path().trim_end_matches('/');
    let path = incoming.path();
    let mut uri = format!("{}{}{}", target.origin().ascii_serialization(), base, path);
    if let Some(q) = incoming.query() {
        uri.push('?');
        uri.push_str(q);
    }
    uri.parse().ok()
}

/// Headers that describe one connection, not the message (RFC 9110 7.6.1),
/// plus those named in `Connection`.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_onto_the_target_base() {
        let target = Url::parse("https://app.example.com/base/").unwrap();
        let uri: Uri = "/api/x?q=1".parse().unwrap();
        assert_eq!(
            join(&target, &uri).unwrap(),
            "https://app.example.com/base/api/x?q=1"
        );
        let root = Url::parse("http://127.0.0.1:9/").unwrap();
        assert_eq!(
            join(&root, &"/".parse().unwrap()).unwrap(),
            "http://127.0.0.1:9/"
        );
    }

    #[test]
    fn redirects_to_the_target_come_back_to_the_proxy() {
        let target = Url::parse("https://app.example.com/").unwrap();
        let rewrite = |location: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::LOCATION, HeaderValue::try_from(location).unwrap());
            rewrite_location(&mut h, &target, "127.0.0.1:8080");
            h[header::LOCATION].to_str().unwrap().to_owned()
        };
        assert_eq!(
            rewrite("https://app.example.com/next?a=1"),
            "http://127.0.0.1:8080/next?a=1"
        );
        assert_eq!(rewrite("https://app.example.com"), "http://127.0.0.1:8080");
        assert_eq!(
            rewrite("https://app.example.com.evil.test/"),
            "https://app.example.com.evil.test/"
        );
        let sign_in = "https://accounts.google.com/o/oauth2/v2/auth?client_id=x";
        assert_eq!(rewrite(sign_in), sign_in);
        assert_eq!(rewrite("/relative"), "/relative");
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::ACCEPT));
    }
}
