//! The accept loop shared by the main server and the gated apps' listeners.
//!
//! Why not `axum::serve`: its connection tasks outlive the listener task, and
//! a fault must be able to reset one connection. Here every connection runs
//! in a [`JoinSet`] owned by the server task, so aborting that task (dropping
//! the [`Emulator`](crate::Emulator)) ends every connection too; and each
//! request carries a [`ConnControl`] that can drop its connection with a TCP
//! reset.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt as _;

use crate::state::State;
use crate::tls::Tls;

/// How a listener speaks: plain HTTP, TLS only, or either (told apart by
/// the first byte, a TLS handshake record being `0x16`), which the main
/// server uses so the metadata server stays plain http as on GCE.
#[derive(Clone, Debug)]
pub(crate) enum Security {
    Plain,
    Tls(Tls),
    TlsOrPlain(Tls),
}

impl Security {
    /// What an app listener speaks under the emulator's `state`.
    pub(crate) fn for_app(state: &State) -> Security {
        match &state.tls {
            Some(tls) => Security::Tls(tls.clone()),
            None => Security::Plain,
        }
    }
}

/// A handle on the connection a request came in on (request extension).
#[derive(Clone, Debug)]
pub(crate) struct ConnControl {
    reset: Arc<Notify>,
}

impl ConnControl {
    /// Drops the connection with a TCP reset, without an answer.
    pub(crate) fn reset(&self) {
        self.reset.notify_one();
    }
}

/// Serves `router` on `listener` until the returned task is aborted.
///
/// Every request gets two extensions: the [`ConnControl`] of its connection
/// and the emulator's `Arc<State>`.
pub(crate) fn serve(
    listener: TcpListener,
    router: Router,
    state: Arc<State>,
    security: Security,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        conns.spawn(connection(stream, router.clone(), state.clone(), security.clone()));
                    }
                    // Out of file descriptors and the like: let others run.
                    Err(_) => tokio::task::yield_now().await,
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    })
}

async fn connection(stream: TcpStream, router: Router, state: Arc<State>, security: Security) {
    let _ = stream.set_nodelay(true);
    let tls = match security {
        Security::Plain => None,
        Security::Tls(tls) => Some(tls),
        Security::TlsOrPlain(tls) => {
            let mut first = [0u8; 1];
            match stream.peek(&mut first).await {
                Ok(1) if first[0] == 0x16 => Some(tls),
                Ok(_) => None,
                Err(_) => return,
            }
        }
    };
    let stream = Arc::new(stream);
    let io = SharedStream(stream.clone());
    match tls {
        None => serve_io(io, stream, router, state).await,
        Some(tls) => {
            // A client that does not trust the CA hangs up here.
            if let Ok(io) = tls.acceptor().accept(io).await {
                serve_io(io, stream, router, state).await;
            }
        }
    }
}

async fn serve_io<I>(io: I, stream: Arc<TcpStream>, router: Router, state: Arc<State>)
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let ctrl = ConnControl {
        reset: Arc::new(Notify::new()),
    };
    let reset = ctrl.reset.clone();
    let svc = router.map_request(move |mut req: http::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ctrl.clone());
        req.extensions_mut().insert(state.clone());
        req
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn =
        builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(svc));
    tokio::select! {
        _ = conn => {}
        _ = reset.notified() => {
            // Zero linger turns the close below into an RST.
            let _ = stream.set_zero_linger();
        }
    }
}

/// A `TcpStream` shared with the connection task, so the task can still
/// reach the socket (to set `SO_LINGER`) while hyper owns the IO object.
struct SharedStream(Arc<TcpStream>);

impl AsyncRead for SharedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The socket closes when the connection task drops both handles.
        Poll::Ready(Ok(()))
    }
}
