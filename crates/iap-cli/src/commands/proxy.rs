//! `iap proxy`: a local reverse proxy that adds an IAP token to every request.
//!
//! Built from hyper-util's server (HTTP/1.1 and h2c on one port) in front of
//! an [`IapLayer`] over hyper-util's client (HTTP/1.1, or HTTP/2 when the
//! target offers it over TLS). Bodies stream both ways; a request body small
//! enough for the layer's replay buffer is sent again when IAP refuses a
//! token. An answer that comes while the client is still sending (IAP
//! refusing the token of an upload) is passed on, not turned into a 502;
//! the rest of that body is read and thrown away (up to 1 MiB), and the
//! answer says `Connection: close`. One log line per request. Ctrl-C (or
//! SIGTERM) stops accepting and lets requests in flight finish.
//!
//! A WebSocket (any HTTP/1.1 `Upgrade`) keeps its upgrade headers and goes
//! upstream over HTTP/1.1 with the token on the handshake (IAP checks the
//! handshake only; a refused token is refreshed and the handshake sent once
//! more). After `101 Switching Protocols` the two connections are joined
//! both ways until either side closes, with one log line per socket (its
//! duration and bytes each way). Ctrl-C closes open sockets.
//!
//! Upstream requests carry `Forwarded` and `X-Forwarded-For`/`-Host`/`-Proto`
//! (appended to what the client sent) and the `Host` of the target, which
//! is what IAP and the app behind it route on.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use iap_emulator::standalone::shutdown_signal;
use iap_token::IapAuth;
use iap_tower::replay::{RecordBody, ReplayBody};
use iap_tower::{BoxError, IapLayer, IapService};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;
use tower_layer::Layer as _;
use url::Url;

use crate::cli::ProxyArgs;
use crate::failure::{CliResult, Failure};

mod early_answers;

use early_answers::{AnswerFirst, DrainedBody};

/// Response bodies inside the proxy.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// The upstream client: the client's request bodies go through as they
/// arrive, recorded (up to the layer's replay limit) so a request whose
/// token IAP refused is sent again; an answer that comes before the body is
/// sent is read (see [`early_answers`]).
type Upstream = IapService<
    Client<hyper_rustls::HttpsConnector<AnswerFirst>, ReplayBody<DrainedBody>>,
    RecordBody,
>;

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
    /// HTTP/1.1 only: upgrades (WebSockets) cannot ride an h2 connection.
    upgrades: Upstream,
    /// The joined sockets, closed on shutdown.
    tunnels: TaskTracker,
    stop: CancellationToken,
}

impl Proxy {
    /// A proxy to `target` authorizing requests with `auth`.
    pub fn new(target: Url, auth: IapAuth) -> CliResult<Self> {
        let tls = crate::tls::client_config()?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(AnswerFirst::new());
        let http1 = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(AnswerFirst::new());
        let client: Client<_, ReplayBody<DrainedBody>> =
            Client::builder(TokioExecutor::new()).build(https);
        let upgrade_client: Client<_, ReplayBody<DrainedBody>> =
            Client::builder(TokioExecutor::new()).build(http1);
        let upstream = IapLayer::new(auth.clone()).record_body().layer(client);
        let upgrades = IapLayer::new(auth).record_body().layer(upgrade_client);
        Ok(Proxy {
            inner: Arc::new(Inner {
                target,
                upstream,
                upgrades,
                tunnels: TaskTracker::new(),
                stop: CancellationToken::new(),
            }),
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
            "stopping: no new connections; waiting for {} open connection(s), closing {} socket(s)",
            graceful.count(),
            self.inner.tunnels.len()
        );
        self.inner.stop.cancel();
        self.inner.tunnels.close();
        let drained = async {
            tokio::join!(graceful.shutdown(), self.inner.tunnels.wait());
        };
        if tokio::time::timeout(DRAIN_TIMEOUT, drained).await.is_err() {
            tracing::warn!("requests still in flight after {DRAIN_TIMEOUT:?}; stopping anyway");
        }
    }

    /// Forwards one request; never fails (upstream trouble becomes a 502).
    async fn forward(&self, mut req: Request<Incoming>, peer: SocketAddr) -> Response<ProxyBody> {
        let started = Instant::now();
        let upgrade =
            upgrade_protocol(&req).map(|protocol| (protocol, hyper::upgrade::on(&mut req)));
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
        let forwarded = Forwarded {
            peer,
            host: local.clone(),
        };
        let mut response = match (self.upstream_request(req, &forwarded), upgrade) {
            (Ok(upstream_req), None) => {
                let body = upstream_req.body().end();
                let mut response = self.send(upstream_req).await;
                if version < Version::HTTP_2 && !body.reached() {
                    // Answered while the client is still sending: the rest
                    // is read and thrown away (`DrainedBody`), then the
                    // connection closes, so the client must not reuse it.
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                response
            }
            (Ok(upstream_req), Some((protocol, client))) => {
                self.upgrade(upstream_req, protocol, client, peer, &path, started)
                    .await
            }
            (Err(message), _) => error_response(StatusCode::BAD_REQUEST, message),
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

    fn upstream_request(
        &self,
        req: Request<Incoming>,
        forwarded: &Forwarded,
    ) -> Result<Request<DrainedBody>, String> {
        let (mut parts, body) = req.into_parts();
        let uri = join(&self.inner.target, &parts.uri)
            .ok_or_else(|| format!("iap proxy: cannot forward {}\n", parts.uri))?;
        parts.uri = uri;
        // The client picks the upstream protocol; the Host header follows the URI.
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::HOST);
        forwarded.add_to(&mut parts.headers);
        Ok(Request::from_parts(parts, DrainedBody::new(body)))
    }

    async fn send(&self, req: Request<DrainedBody>) -> Response<ProxyBody> {
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

impl Proxy {
    /// Sends an upgrade request (HTTP/1.1, upgrade headers put back) and,
    /// on `101`, joins the client's connection with the upstream one in a
    /// task of its own.
    async fn upgrade(
        &self,
        mut req: Request<DrainedBody>,
        protocol: HeaderValue,
        client: hyper::upgrade::OnUpgrade,
        peer: SocketAddr,
        path: &str,
        started: Instant,
    ) -> Response<ProxyBody> {
        req.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        req.headers_mut().insert(header::UPGRADE, protocol);
        let call: UpstreamFuture = Box::pin(self.inner.upgrades.clone().oneshot(req));
        let mut response = match call.await {
            Ok(response) => response,
            Err(e) => {
                let cause = describe_boxed(&*e);
                tracing::warn!("upstream upgrade failed: {cause}");
                return error_response(StatusCode::BAD_GATEWAY, format!("iap proxy: {cause}\n"));
            }
        };
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            return Response::from_parts(parts, body.map_err(BoxError::from).boxed_unsync());
        }
        let upstream = hyper::upgrade::on(&mut response);
        let (mut parts, _) = response.into_parts();
        let agreed = parts.headers.get(header::UPGRADE).cloned();
        strip_hop_by_hop(&mut parts.headers);
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(agreed) = agreed {
            parts.headers.insert(header::UPGRADE, agreed);
        }
        let stop = self.inner.stop.clone();
        let path = path.to_owned();
        self.inner.tunnels.spawn(async move {
            let (up, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
            let outcome = match tokio::join!(client, upstream) {
                (Ok(client), Ok(upstream)) => {
                    let mut client = Counted::new(TokioIo::new(client), up.clone());
                    let mut upstream = Counted::new(TokioIo::new(upstream), down.clone());
                    tokio::select! {
                        joined = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match joined {
                            Ok(_) => "closed".to_owned(),
                            Err(e) => format!("ended: {e}"),
                        },
                        () = stop.cancelled() => "closed by the proxy stopping".to_owned(),
                    }
                }
                (Err(e), _) | (_, Err(e)) => format!("not joined: {e}"),
            };
            tracing::info!(
                target: "iap::proxy",
                "{peer} websocket {path} {outcome} after {}ms, {} bytes up, {} bytes down",
                started.elapsed().as_millis(),
                up.load(Ordering::Relaxed),
                down.load(Ordering::Relaxed),
            );
        });
        Response::from_parts(
            parts,
            http_body_util::Empty::new()
                .map_err(|e| match e {})
                .boxed_unsync(),
        )
    }
}

/// The protocol of an HTTP/1.1 upgrade request (`Connection: upgrade` and
/// an `Upgrade` header), e.g. `websocket`.
fn upgrade_protocol<B>(req: &Request<B>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let asks = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| req.headers().get(header::UPGRADE).cloned())
        .flatten()
}

/// Counts the bytes read through an IO object (one direction of a socket).
struct Counted<T> {
    io: T,
    read: Arc<AtomicU64>,
}

impl<T> Counted<T> {
    fn new(io: T, read: Arc<AtomicU64>) -> Self {
        Counted { io, read }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// What a reverse proxy tells the upstream about the original request.
struct Forwarded {
    peer: SocketAddr,
    /// The `Host` the client used to reach the proxy.
    host: Option<String>,
}

impl Forwarded {
    /// Appends `Forwarded` (RFC 7239) and `X-Forwarded-For`, and sets
    /// `X-Forwarded-Host` and `X-Forwarded-Proto` (the proxy is plain http).
    fn add_to(&self, headers: &mut HeaderMap) {
        let ip = self.peer.ip();
        let node = match ip {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("\"[{v6}]\""),
        };
        let mut element = format!("for={node};proto=http");
        if let Some(host) = self.host.as_deref().filter(|h| is_token_safe(h)) {
            element.push_str(";host=");
            element.push_str(host);
        }
        let append = |headers: &mut HeaderMap, name: HeaderName, value: String| {
            let joined = match headers.get(&name).and_then(|v| v.to_str().ok()) {
                Some(prior) => format!("{prior}, {value}"),
                None => value,
            };
            if let Ok(v) = HeaderValue::try_from(joined) {
                headers.insert(name, v);
            }
        };
        append(headers, header::FORWARDED, element);
        append(
            headers,
            HeaderName::from_static("x-forwarded-for"),
            ip.to_string(),
        );
        if let Some(host) = self
            .host
            .as_deref()
            .and_then(|h| HeaderValue::try_from(h).ok())
        {
            headers.insert(HeaderName::from_static("x-forwarded-host"), host);
        }
        headers.insert(
            HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static("http"),
        );
    }
}

/// Whether a `host` value can stand unquoted in `Forwarded`.
fn is_token_safe(host: &str) -> bool {
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b))
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
