//! [`ResponseFuture`]: one request through [`IapService`](crate::IapService),
//! from token to response, with at most one retry.
//!
//! The states, in order (most requests go straight from `First` to done):
//!
//! ```text
//! Fetching ──> First ──(refused, replayable)──> Refreshing ──> Readying ──> Second
//!  (no cached    │                                 (fresh token)  (retry       │
//!   token)       └──> response                                   service)     └──> response
//! ```
//!
//! `Pass` is the whole story for requests that carry no token or whose
//! retry policy is `Never`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use iap_token::auth::{Attach, IapAuth, Plan};
use iap_token::policy::Verdict;
use iap_token::source::BoxFuture;
use iap_token::{IdToken, Result as TokenResult};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::replay::{BoxError, ReplayableBody, Spare};

pin_project! {
    /// Response future of [`IapService`](crate::IapService).
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
        // The rules; absent on the pass-through path.
        ctx: Option<Ctx>,
    }
}

struct Ctx {
    auth: IapAuth,
    replay_limit: usize,
}

/// A request waiting on a token, with the service that will send it. Boxed:
/// only the cold states hold one, and inline it would make every future,
/// hot ones included, that much bigger.
type Pending<S, B> = Option<Box<(S, Request<B>)>>;

/// What a second attempt needs: a service of its own (not yet ready), the
/// request head and the spare body.
pub(crate) struct Retry<S, B> {
    service: S,
    head: http::request::Parts,
    spare: Spare<B>,
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        // No token to add or nothing to decide: the inner future as is.
        Pass { #[pin] future: S::Future },
        // No cached token: fetching one; the ready service and the request wait.
        Fetching { fetch: BoxFuture<'static, TokenResult<IdToken>>, pending: Pending<S, B> },
        // First attempt in flight with `token`.
        First { #[pin] future: S::Future, token: IdToken, retry: Option<Retry<S, B>> },
        // Token refused: getting a fresh one for the retry.
        Refreshing { fetch: BoxFuture<'static, TokenResult<IdToken>>, retry: Pending<S, B> },
        // Fresh token in hand: waiting for the retry's service to be ready.
        Readying { token: IdToken, retry: Pending<S, B> },
        // Second (last) attempt in flight.
        Second { #[pin] future: S::Future, token: IdToken },
        Done,
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    #[inline(always)]
    pub(crate) fn pass(future: S::Future) -> Self {
        ResponseFuture {
            state: State::Pass { future },
            ctx: None,
        }
    }

    /// The first attempt, sent now on the ready `service`, with what a
    /// retry needs kept. Built in one expression: the retry state is large
    /// and every intermediate move of it is a copy.
    #[inline(always)]
    pub(crate) fn first(
        service: &mut S,
        request: Request<B>,
        token: IdToken,
        auth: &IapAuth,
        replay_limit: usize,
    ) -> Self
    where
        S: Clone,
        B: ReplayableBody,
    {
        let (parts, body) = request.into_parts();
        let head = parts.clone();
        let (body, spare) = body.replayable(replay_limit);
        let mut request = Request::from_parts(parts, body);
        auth.apply(request.headers_mut(), &token);
        let retry = service.clone();
        ResponseFuture {
            state: State::First {
                future: service.call(request),
                token,
                retry: Some(Retry {
                    service: retry,
                    head,
                    spare,
                }),
            },
            ctx: Some(Ctx {
                auth: auth.clone(),
                replay_limit,
            }),
        }
    }

    pub(crate) fn fetching(
        service: S,
        request: Request<B>,
        auth: IapAuth,
        attach: Attach,
        replay_limit: usize,
    ) -> Self {
        ResponseFuture {
            state: State::Fetching {
                fetch: attach.fetch(),
                pending: Some(Box::new((service, request))),
            },
            ctx: Some(Ctx { auth, replay_limit }),
        }
    }
}

/// Sends the first attempt on a ready `service`: keeps what a retry needs
/// (when `retry` is on), puts the token in, calls.
fn send_first<S, B>(
    service: &mut S,
    mut request: Request<B>,
    token: &IdToken,
    auth: &IapAuth,
    retry: bool,
    replay_limit: usize,
) -> (S::Future, Option<Retry<S, B>>)
where
    S: Service<Request<B>> + Clone,
    B: ReplayableBody,
{
    let retry = if retry {
        let (parts, body) = request.into_parts();
        let head = parts.clone();
        let (body, spare) = body.replayable(replay_limit);
        request = Request::from_parts(parts, body);
        Some(Retry {
            service: service.clone(),
            head,
            spare,
        })
    } else {
        None
    };
    auth.apply(request.headers_mut(), token);
    (service.call(request), retry)
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    B: ReplayableBody,
{
    type Output = Result<Response<ResBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let Some(ctx) = this.ctx.as_ref() else {
                // Pass-through: no token, or a policy that never retries.
                return match this.state.as_mut().project() {
                    StateProj::Pass { future } => future.poll(cx).map_err(Into::into),
                    _ => panic!("ResponseFuture polled after completion"),
                };
            };
            match this.state.as_mut().project() {
                StateProj::Fetching { fetch, pending } => {
                    let token = ready!(fetch.as_mut().poll(cx)).map_err(BoxError::from)?;
                    let (mut service, request) = *pending
                        .take()
                        .expect("ResponseFuture polled after completion");
                    // `service` was made ready by `poll_ready` before `call` moved it here.
                    let retry = ctx.auth.retry_policy() != iap_token::policy::RetryPolicy::Never;
                    let (future, retry) = send_first(
                        &mut service,
                        request,
                        &token,
                        &ctx.auth,
                        retry,
                        ctx.replay_limit,
                    );
                    this.state.set(State::First {
                        future,
                        token,
                        retry,
                    });
                }
                StateProj::First {
                    future,
                    token,
                    retry,
                } => {
                    let response = ready!(future.poll(cx)).map_err(Into::into)?;
                    if ctx.auth.verdict(response.status(), response.headers()) == Verdict::Accepted
                    {
                        return Poll::Ready(Ok(response));
                    }
                    ctx.auth.invalidate(token);
                    let Some(Retry {
                        service,
                        head,
                        spare,
                    }) = retry.take()
                    else {
                        tracing::debug!(status = %response.status(), "IAP refused the token; request not replayable, not retried");
                        return Poll::Ready(Ok(response));
                    };
                    let Some(body) = spare.into_body() else {
                        tracing::debug!(status = %response.status(), "IAP refused the token; request body not replayable, not retried");
                        return Poll::Ready(Ok(response));
                    };
                    // The hot path kept no `Attach`: the same request plans the same again.
                    let Plan::Attach(attach) = ctx.auth.plan(&head.uri, &head.extensions) else {
                        return Poll::Ready(Ok(response));
                    };
                    tracing::debug!(status = %response.status(), "IAP refused the token; retrying once with a fresh one");
                    drop(response);
                    let retry = Some(Box::new((service, Request::from_parts(head, body))));
                    match attach.cached() {
                        // Another request already replaced the refused token.
                        Some(fresh) if !fresh.same_as(token) => this.state.set(State::Readying {
                            token: fresh,
                            retry,
                        }),
                        _ => this.state.set(State::Refreshing {
                            fetch: attach.fetch(),
                            retry,
                        }),
                    }
                }
                StateProj::Refreshing { fetch, retry } => {
                    let token = ready!(fetch.as_mut().poll(cx)).map_err(BoxError::from)?;
                    let retry = retry.take();
                    this.state.set(State::Readying { token, retry });
                }
                StateProj::Readying { token, retry } => {
                    let (service, _) = &mut **retry
                        .as_mut()
                        .expect("ResponseFuture polled after completion");
                    ready!(service.poll_ready(cx)).map_err(Into::into)?;
                    let (mut service, mut request) = *retry
                        .take()
                        .expect("ResponseFuture polled after completion");
                    ctx.auth.apply(request.headers_mut(), token);
                    let token = token.clone();
                    let future = service.call(request);
                    this.state.set(State::Second { future, token });
                }
                StateProj::Second { future, token } => {
                    let response = ready!(future.poll(cx)).map_err(Into::into)?;
                    if ctx.auth.verdict(response.status(), response.headers()) == Verdict::Refused {
                        // Only one retry: pass the answer on, but do not keep a refused token.
                        ctx.auth.invalidate(token);
                    }
                    this.state.set(State::Done);
                    return Poll::Ready(Ok(response));
                }
                StateProj::Pass { .. } | StateProj::Done => {
                    panic!("ResponseFuture polled after completion")
                }
            }
        }
    }
}
