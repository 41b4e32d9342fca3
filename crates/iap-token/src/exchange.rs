//! [`Exchange`]: the refused-token protocol, once, without I/O.
//!
//! Both adapters (`iap-tower` polls it, `iap-reqwest` awaits it) drive one
//! [`Exchange`] per request that carries a token. The exchange decides; the
//! adapter only sends requests and fetches tokens:
//!
//! 1. The first attempt goes out with a token ([`Exchange::new`]).
//! 2. Its answer goes to [`Exchange::first_answer`]: [`Next::Deliver`] (the
//!    token was accepted, the answer is not about it, it came from another
//!    origin after a redirect, or the policy never retries) or
//!    [`Next::Retry`]: IAP refused the token, which is invalidated (only if
//!    still current: a burst of refusals costs one fetch).
//! 3. On `Retry`, an adapter that can send the request again asks
//!    [`Exchange::refresh`] for the second token: a fresher one another
//!    request already cached ([`Refresh::Ready`]) or the cache's single
//!    fetch ([`Refresh::Fetch`]), then records it with [`Exchange::resend`].
//!    An adapter that cannot (a body that cannot be replayed) delivers the
//!    refusal as it is.
//! 4. The second answer goes to [`Exchange::second_answer`]: always
//!    delivered; a second refusal invalidates the second token too, and is
//!    never retried again.
//!
//! See `docs/iap-exchange.md` for the wire facts behind it.
//!
//! ```
//! # #[tokio::main] async fn main() -> iap_token::Result<()> {
//! use http::{HeaderMap, StatusCode};
//! use iap_token::exchange::{Exchange, Next, Refresh};
//! use iap_token::{IapAuth, auth::Plan, source::static_token::StaticTokenSource};
//!
//! # let jwt = "eyJhbGciOiJub25lIn0.eyJhdWQiOiJjbGllbnQtaWQiLCJlbWFpbCI6ImFAYiIsImV4cCI6NDEwMjQ0NDgwMH0.c2ln";
//! let auth = IapAuth::builder().source(StaticTokenSource::new(jwt)?).audience("client-id").any_origin().build()?;
//! let uri: http::Uri = "https://app.example.com/".parse().unwrap();
//! let Plan::Attach(attach) = auth.plan(&uri, &http::Extensions::new()) else { unreachable!() };
//! let token = attach.fetch().await?;
//! let mut exchange = Exchange::new(auth.clone(), token);
//!
//! // The app's own 401 is the app's business: delivered, the token kept.
//! assert_eq!(exchange.first_answer(StatusCode::UNAUTHORIZED, &HeaderMap::new(), true), Next::Deliver);
//!
//! // IAP's 401 refuses the token: invalidated, one retry.
//! let mut exchange = Exchange::new(auth.clone(), attach.fetch().await?);
//! let mut iap = HeaderMap::new();
//! iap.insert("x-goog-iap-generated-response", "true".parse().unwrap());
//! assert_eq!(exchange.first_answer(StatusCode::UNAUTHORIZED, &iap, true), Next::Retry);
//! let fresh = match exchange.refresh(&attach) {
//!     Refresh::Ready(token) => token,
//!     Refresh::Fetch(fetch) => fetch.await?,
//! };
//! exchange.resend(fresh);
//! exchange.second_answer(StatusCode::OK, &HeaderMap::new(), true);
//! # Ok(()) }
//! ```

use std::fmt;

use http::{HeaderMap, StatusCode};

use crate::IdToken;
use crate::auth::{Attach, IapAuth};
use crate::policy::{RetryPolicy, Verdict};
use crate::source::BoxFuture;

/// One request's way through the refused-token protocol (see the
/// [module docs](self)). Holds the handle and the token in flight.
pub struct Exchange {
    auth: IapAuth,
    token: IdToken,
    stage: Stage,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    First,
    Refused,
    Second,
    Done,
}

/// What the adapter does with an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Return the answer to the caller.
    Deliver,
    /// IAP refused the token (now invalidated): send the request once
    /// more with the token from [`Exchange::refresh`], if it can be sent
    /// again; otherwise return the answer as is.
    Retry,
}

/// Where the retry's token comes from; from [`Exchange::refresh`].
pub enum Refresh {
    /// Another request already replaced the refused token: use this one.
    Ready(IdToken),
    /// Fetch a new one (the cache's single fetch for the audience).
    Fetch(BoxFuture<'static, crate::Result<IdToken>>),
}

impl fmt::Debug for Refresh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refresh::Ready(token) => f.debug_tuple("Ready").field(token).finish(),
            Refresh::Fetch(_) => f.write_str("Fetch"),
        }
    }
}

impl Exchange {
    /// The first attempt of a request, sent with `token`.
    #[inline]
    pub fn new(auth: IapAuth, token: IdToken) -> Exchange {
        Exchange {
            auth,
            token,
            stage: Stage::First,
        }
    }

    /// Whether any answer can lead to a retry (the policy is not
    /// [`RetryPolicy::Never`]): an adapter keeps a copy of the request
    /// only then.
    #[inline]
    pub fn may_retry(auth: &IapAuth) -> bool {
        auth.retry_policy() != RetryPolicy::Never
    }

    /// The token of the attempt in flight.
    pub fn token(&self) -> &IdToken {
        &self.token
    }

    /// The handle.
    pub fn auth(&self) -> &IapAuth {
        &self.auth
    }

    /// The first attempt's answer. `from_origin`: whether it came from the
    /// origin the token was sent to (`false` after a followed redirect to
    /// another origin, whose answer is not about our token).
    pub fn first_answer(
        &mut self,
        status: StatusCode,
        headers: &HeaderMap,
        from_origin: bool,
    ) -> Next {
        debug_assert_eq!(self.stage, Stage::First, "first_answer called twice");
        if self.stage != Stage::First || !self.refused(status, headers, from_origin) {
            self.stage = Stage::Done;
            return Next::Deliver;
        }
        self.auth.invalidate(&self.token);
        self.stage = Stage::Refused;
        tracing::debug!(%status, "IAP refused the token");
        Next::Retry
    }

    /// The token for the retry, after [`Next::Retry`]: `attach` is the
    /// request's plan (the same request plans the same audience again).
    pub fn refresh(&self, attach: &Attach) -> Refresh {
        match attach.cached() {
            // Another request already replaced the refused token.
            Some(fresh) if !fresh.same_as(&self.token) => Refresh::Ready(fresh),
            _ => Refresh::Fetch(attach.fetch()),
        }
    }

    /// Records the token the second (last) attempt goes out with.
    pub fn resend(&mut self, token: IdToken) {
        debug_assert_eq!(self.stage, Stage::Refused, "resend without a refusal");
        tracing::debug!("retrying once with a fresh token");
        self.token = token;
        self.stage = Stage::Second;
    }

    /// The second attempt's answer: delivered whatever it is; a refused
    /// second token is invalidated too (never retried again).
    pub fn second_answer(&mut self, status: StatusCode, headers: &HeaderMap, from_origin: bool) {
        if self.stage == Stage::Second && self.refused(status, headers, from_origin) {
            self.auth.invalidate(&self.token);
        }
        self.stage = Stage::Done;
    }

    fn refused(&self, status: StatusCode, headers: &HeaderMap, from_origin: bool) -> bool {
        from_origin && self.auth.verdict(status, headers) == Verdict::Refused
    }
}

impl fmt::Debug for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange")
            .field("stage", &self.stage)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::auth::Plan;
    use crate::policy::IAP_GENERATED_HEADER;
    use crate::source::TokenSource;
    use crate::{Audience, Result};

    /// Mints a new unsigned token per fetch, counting them.
    #[derive(Debug, Default)]
    struct Counting(Arc<AtomicUsize>);

    impl TokenSource for Counting {
        fn id_token<'a>(&'a self, audience: &'a Audience) -> BoxFuture<'a, Result<IdToken>> {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            let aud = audience.to_string();
            Box::pin(async move { IdToken::parse(jwt(&aud, n)) })
        }
    }

    fn jwt(aud: &str, n: usize) -> String {
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!(
            "{}.{}.c2ln",
            b64(r#"{"alg":"none"}"#),
            b64(&format!(
                r#"{{"aud":"{aud}","email":"a@b","exp":4102444800,"n":{n}}}"#
            ))
        )
    }

    fn auth(policy: Option<RetryPolicy>) -> (IapAuth, Arc<AtomicUsize>, Attach) {
        let minted = Arc::new(AtomicUsize::new(0));
        let mut builder = IapAuth::builder()
            .source(Counting(minted.clone()))
            .audience("client-id")
            .allow_origin("https://app.example.com");
        if let Some(policy) = policy {
            builder = builder.retry_policy(policy);
        }
        let auth = builder.build().unwrap();
        let uri = "https://app.example.com/x".parse().unwrap();
        let Plan::Attach(attach) = auth.plan(&uri, &http::Extensions::new()) else {
            panic!("in scope")
        };
        (auth, minted, attach)
    }

    fn iap() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(IAP_GENERATED_HEADER, "true".parse().unwrap());
        h
    }

    async fn token(refresh: Refresh) -> IdToken {
        match refresh {
            Refresh::Ready(token) => token,
            Refresh::Fetch(fetch) => fetch.await.unwrap(),
        }
    }

    #[tokio::test]
    async fn an_apps_own_401_is_delivered_and_costs_no_token() {
        let (auth, minted, attach) = auth(None);
        let first = attach.fetch().await.unwrap();
        let mut exchange = Exchange::new(auth.clone(), first.clone());
        let next = exchange.first_answer(StatusCode::UNAUTHORIZED, &HeaderMap::new(), true);
        assert_eq!(next, Next::Deliver);
        assert!(attach.cached().unwrap().same_as(&first), "token kept");
        assert_eq!(minted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn any_401_is_an_explicit_choice() {
        let (auth, _, attach) = auth(Some(RetryPolicy::AnyUnauthorized));
        let mut exchange = Exchange::new(auth.clone(), attach.fetch().await.unwrap());
        let next = exchange.first_answer(StatusCode::UNAUTHORIZED, &HeaderMap::new(), true);
        assert_eq!(next, Next::Retry);
    }

    #[tokio::test]
    async fn iap_refusal_invalidates_exactly_that_token_and_retries_once() {
        let (auth, minted, attach) = auth(None);
        let first = attach.fetch().await.unwrap();
        let mut exchange = Exchange::new(auth.clone(), first.clone());
        assert_eq!(
            exchange.first_answer(StatusCode::UNAUTHORIZED, &iap(), true),
            Next::Retry
        );
        assert!(attach.cached().is_none(), "the refused token is gone");
        let fresh = token(exchange.refresh(&attach)).await;
        assert!(!fresh.same_as(&first));
        exchange.resend(fresh.clone());
        assert!(exchange.token().same_as(&fresh));
        exchange.second_answer(StatusCode::OK, &HeaderMap::new(), true);
        assert!(attach.cached().unwrap().same_as(&fresh));
        assert_eq!(minted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn sign_in_redirect_from_iap_is_a_refusal() {
        let (auth, _, attach) = auth(None);
        let mut exchange = Exchange::new(auth.clone(), attach.fetch().await.unwrap());
        let mut h = iap();
        h.insert(
            http::header::LOCATION,
            "https://accounts.google.com/o/oauth2/v2/auth?client_id=x"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            exchange.first_answer(StatusCode::FOUND, &h, true),
            Next::Retry
        );
    }

    #[tokio::test]
    async fn a_fresher_token_is_reused_not_fetched() {
        let (auth, minted, attach) = auth(None);
        let first = attach.fetch().await.unwrap();
        let mut a = Exchange::new(auth.clone(), first.clone());
        let mut b = Exchange::new(auth.clone(), first.clone());
        assert_eq!(
            a.first_answer(StatusCode::UNAUTHORIZED, &iap(), true),
            Next::Retry
        );
        let fresh = token(a.refresh(&attach)).await;
        // `b` hears its refusal after `a` refreshed: same refused token.
        assert_eq!(
            b.first_answer(StatusCode::UNAUTHORIZED, &iap(), true),
            Next::Retry
        );
        assert!(
            attach.cached().unwrap().same_as(&fresh),
            "b did not drop a's fresh token"
        );
        let Refresh::Ready(reused) = b.refresh(&attach) else {
            panic!("b reuses the fresher token")
        };
        assert!(reused.same_as(&fresh));
        assert_eq!(minted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_answer_from_another_origin_is_not_about_our_token() {
        let (auth, minted, attach) = auth(None);
        let first = attach.fetch().await.unwrap();
        let mut exchange = Exchange::new(auth.clone(), first.clone());
        assert_eq!(
            exchange.first_answer(StatusCode::UNAUTHORIZED, &iap(), false),
            Next::Deliver
        );
        assert!(attach.cached().unwrap().same_as(&first));
        assert_eq!(minted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_second_refusal_is_delivered_and_its_token_dropped() {
        let (auth, minted, attach) = auth(None);
        let mut exchange = Exchange::new(auth.clone(), attach.fetch().await.unwrap());
        assert_eq!(
            exchange.first_answer(StatusCode::UNAUTHORIZED, &iap(), true),
            Next::Retry
        );
        let fresh = token(exchange.refresh(&attach)).await;
        exchange.resend(fresh);
        exchange.second_answer(StatusCode::UNAUTHORIZED, &iap(), true);
        assert!(
            attach.cached().is_none(),
            "a refused second token is not kept"
        );
        assert_eq!(
            minted.load(Ordering::SeqCst),
            2,
            "and not replaced by the exchange"
        );
    }

    #[tokio::test]
    async fn never_never_refuses() {
        let (auth, _, attach) = auth(Some(RetryPolicy::Never));
        assert!(!Exchange::may_retry(&auth));
        let first = attach.fetch().await.unwrap();
        let mut exchange = Exchange::new(auth.clone(), first.clone());
        assert_eq!(
            exchange.first_answer(StatusCode::UNAUTHORIZED, &iap(), true),
            Next::Deliver
        );
        assert!(attach.cached().unwrap().same_as(&first));
    }
}
