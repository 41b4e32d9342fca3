//! [`ResponseFuture`]: one request through [`IapService`](crate::IapService),
//! from token to response, with at most one retry.
//!
//! The decisions are [`iap_token::exchange::Exchange`]'s, shared with
//! `iap-reqwest`; this future only polls the I/O they call for:
//!
//! ```text
//! Fetching ──> First ──(Retry, replayable)──> Refreshing ──> Readying ──> Second
//!  (no cached    │                              (fresh token)  (retry       │
//!   token)       └──> response                                service)     └──> response
//! ```
//!
//! `Pass` is the whole story for requests that carry no token or whose
//! retry policy is `Never`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use iap_token::auth::{Attach, IapAuth, Plan};
use iap_token::exchange::{Exchange, Next, Refresh};
use iap_token::source::BoxFuture;
use iap_token::{IdToken, Result as TokenResult};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::replay::{BoxError, ReplayPolicy, Spare, not_kept_reason};

pin_project! {
    /// Response future of [`IapService`](crate::IapService).
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
    }
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

/// What a retry needs of the request itself: its head, and the spare body.
type Kept<B> = Option<(http::request::Parts, Spare<B>)>;

/// The first attempt waiting on a fetched token.
pub(crate) struct Waiting<S, B> {
    service: S,
    request: Request<B>,
    kept: Kept<B>,
    auth: IapAuth,
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
        Fetching { fetch: BoxFuture<'static, TokenResult<IdToken>>, waiting: Option<Box<Waiting<S, B>>> },
        // First attempt in flight.
        First { #[pin] future: S::Future, exchange: Option<Exchange>, retry: Option<Retry<S, B>> },
        // Token refused: getting a fresh one for the retry.
        Refreshing { fetch: BoxFuture<'static, TokenResult<IdToken>>, exchange: Option<Exchange>, retry: Pending<S, B> },
        // Fresh token in hand: waiting for the retry's service to be ready.
        Readying { exchange: Option<Exchange>, retry: Pending<S, B> },
        // Second (last) attempt in flight.
        Second { #[pin] future: S::Future, exchange: Option<Exchange> },
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
        }
    }

    /// The first attempt, sent now on the ready `service`, with what a
    /// retry needs kept. Built in one expression: the retry state is large
    /// and every intermediate move of it is a copy.
    #[inline(always)]
    pub(crate) fn first<In, P>(
        service: &mut S,
        request: Request<In>,
        token: IdToken,
        auth: &IapAuth,
        policy: &P,
        replay_limit: usize,
    ) -> Self
    where
        S: Clone,
        P: ReplayPolicy<In, Body = B>,
    {
        let (request, kept) = keep(request, policy, replay_limit);
        let (future, retry) = send_first(service, request, kept, &token, auth);
        ResponseFuture {
            state: State::First {
                future,
                exchange: Some(Exchange::new(auth.clone_local(), token)),
                retry,
            },
        }
    }

    /// The first attempt, once `attach` has fetched a token. The body is
    /// split for a retry now, while the policy is at hand.
    pub(crate) fn fetching<In, P>(
        service: S,
        request: Request<In>,
        auth: IapAuth,
        attach: Attach,
        policy: &P,
        replay_limit: usize,
    ) -> Self
    where
        P: ReplayPolicy<In, Body = B>,
    {
        let (request, kept) = if Exchange::may_retry(&auth) {
            keep(request, policy, replay_limit)
        } else {
            (policy.send_once(request), None)
        };
        ResponseFuture {
            state: State::Fetching {
                fetch: attach.fetch(),
                waiting: Some(Box::new(Waiting {
                    service,
                    request,
                    kept,
                    auth,
                })),
            },
        }
    }
}

/// Splits the request for a retry: the request to send now, and a copy of
/// its head with the spare body.
#[inline(always)]
fn keep<In, P: ReplayPolicy<In>>(
    request: Request<In>,
    policy: &P,
    replay_limit: usize,
) -> (Request<P::Body>, Kept<P::Body>) {
    let (parts, body) = request.into_parts();
    let head = parts.clone();
    let (body, spare) = policy.replayable(body, replay_limit);
    (Request::from_parts(parts, body), Some((head, spare)))
}

/// Sends the first attempt on a ready `service`: keeps a service for the
/// retry (when there can be one), puts the token in, calls.
#[inline(always)]
fn send_first<S, B>(
    service: &mut S,
    mut request: Request<B>,
    kept: Kept<B>,
    token: &IdToken,
    auth: &IapAuth,
) -> (S::Future, Option<Retry<S, B>>)
where
    S: Service<Request<B>> + Clone,
{
    let retry = kept.map(|(head, spare)| Retry {
        service: service.clone(),
        head,
        spare,
    });
    auth.apply(request.headers_mut(), token);
    (service.call(request), retry)
}

const DONE: &str = "ResponseFuture polled after completion";

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<ResBody>, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        // The common case, kept small enough to inline: nothing to decide.
        if let StateProj::Pass { future } = state.as_mut().project() {
            return future.poll(cx).map_err(Into::into);
        }
        poll_exchange(state, cx)
    }
}

/// Every state but `Pass` (which `poll` answers first; its arm here only
/// makes the match whole).
fn poll_exchange<S, B, ResBody>(
    mut this: Pin<&mut State<S, B>>,
    cx: &mut Context<'_>,
) -> Poll<Result<Response<ResBody>, BoxError>>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
{
    loop {
        match this.as_mut().project() {
            StateProj::Pass { future } => return future.poll(cx).map_err(Into::into),
            StateProj::Fetching { fetch, waiting } => {
                let token = ready!(fetch.as_mut().poll(cx)).map_err(BoxError::from)?;
                let Waiting {
                    mut service,
                    request,
                    kept,
                    auth,
                } = *waiting.take().expect(DONE);
                // `service` was made ready by `poll_ready` before `call` moved it here.
                let (future, retry) = send_first(&mut service, request, kept, &token, &auth);
                this.set(State::First {
                    future,
                    exchange: Some(Exchange::new(auth, token)),
                    retry,
                });
            }
            StateProj::First {
                future,
                exchange,
                retry,
            } => {
                let response = ready!(future.poll(cx)).map_err(Into::into)?;
                let ex = exchange.as_mut().expect(DONE);
                // Below tower there are no redirects: the answer is from where the token went.
                if ex.first_answer(response.status(), response.headers(), true) == Next::Deliver {
                    return Poll::Ready(Ok(response));
                }
                let Some(Retry {
                    service,
                    head,
                    spare,
                }) = retry.take()
                else {
                    tracing::debug!(status = %response.status(), "request not replayable, not retried");
                    return Poll::Ready(Ok(response));
                };
                let body = match spare.into_retry() {
                    Ok(body) => body,
                    Err(why) => {
                        tracing::debug!(
                            status = %response.status(),
                            body = std::any::type_name::<B>(),
                            "refusal returned as is, the request was not sent again: {}",
                            not_kept_reason(why),
                        );
                        return Poll::Ready(Ok(response));
                    }
                };
                // The hot path kept no `Attach`: the same request plans the same again.
                let Plan::Attach(attach) = ex.auth().plan(&head.uri, &head.extensions) else {
                    return Poll::Ready(Ok(response));
                };
                drop(response);
                let retry = Some(Box::new((service, Request::from_parts(head, body))));
                let exchange = exchange.take();
                match exchange.as_ref().expect(DONE).refresh(&attach) {
                    Refresh::Ready(fresh) => {
                        let mut exchange = exchange;
                        exchange.as_mut().expect(DONE).resend(fresh);
                        this.set(State::Readying { exchange, retry })
                    }
                    Refresh::Fetch(fetch) => this.set(State::Refreshing {
                        fetch,
                        exchange,
                        retry,
                    }),
                }
            }
            StateProj::Refreshing {
                fetch,
                exchange,
                retry,
            } => {
                let token = ready!(fetch.as_mut().poll(cx)).map_err(BoxError::from)?;
                let mut exchange = exchange.take();
                exchange.as_mut().expect(DONE).resend(token);
                let retry = retry.take();
                this.set(State::Readying { exchange, retry });
            }
            StateProj::Readying { exchange, retry } => {
                let (service, _) = &mut **retry.as_mut().expect(DONE);
                ready!(service.poll_ready(cx)).map_err(Into::into)?;
                let (mut service, mut request) = *retry.take().expect(DONE);
                let ex = exchange.take().expect(DONE);
                ex.auth().apply(request.headers_mut(), ex.token());
                let future = service.call(request);
                this.set(State::Second {
                    future,
                    exchange: Some(ex),
                });
            }
            StateProj::Second { future, exchange } => {
                let response = ready!(future.poll(cx)).map_err(Into::into)?;
                let mut ex = exchange.take().expect(DONE);
                ex.second_answer(response.status(), response.headers(), true);
                this.set(State::Done);
                return Poll::Ready(Ok(response));
            }
            StateProj::Done => panic!("{DONE}"),
        }
    }
}
