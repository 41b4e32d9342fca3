//! [`IapGate`]: the service that decides, for each request, what IAP would.

use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION, PROXY_AUTHORIZATION};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use tower_service::Service;

use super::app::App;
use super::assertion::{IDENTITY_PREFIX, Subject};
use super::counter;
use super::future::{GateBody, ResponseFuture};
use super::verify::{self, Identity, Rejection};
use crate::endpoint::{Endpoint, Fault};
use crate::server::ConnControl;
use crate::state::State;

/// The header IAP puts on every answer it gives itself.
pub(crate) const IAP_GENERATED: HeaderName =
    HeaderName::from_static("x-goog-iap-generated-response");
const ASSERTION: HeaderName = HeaderName::from_static("x-goog-iap-jwt-assertion");
const USER_EMAIL: HeaderName = HeaderName::from_static("x-goog-authenticated-user-email");
const USER_ID: HeaderName = HeaderName::from_static("x-goog-authenticated-user-id");

/// The IAP gate in front of an inner service (a tower [`Service`]).
///
/// Made by [`IapGateLayer`](super::IapGateLayer); see the [module
/// docs](super) for what it checks and what the inner service receives.
///
/// Readiness is the inner service's: `poll_ready` asks the inner service,
/// and a request the gate turns away never reaches `inner.call`. Request and
/// response bodies are the inner service's own; the gate's answers use the
/// [`Right`](http_body_util::Either::Right) side of [`GateBody`].
#[derive(Clone, Debug)]
pub struct IapGate<S> {
    inner: S,
    gate: Gate,
}

impl<S> IapGate<S> {
    pub(crate) fn new(inner: S, gate: Gate) -> Self {
        Self { inner, gate }
    }

    /// The app this gate protects.
    pub fn app(&self) -> &App {
        &self.gate.app
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for IapGate<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ReqBody: http_body::Body,
{
    type Response = Response<GateBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        match self.gate.admit(&mut req) {
            Decision::Pass { delay } => ResponseFuture::app(self.inner.call(req), delay),
            Decision::Answer { response, delay } => ResponseFuture::gate(response, delay, req),
            Decision::Hang => ResponseFuture::hang(),
        }
    }
}

/// What the gate does with one request.
pub(crate) enum Decision {
    /// Let it through to the app (after an injected delay).
    Pass { delay: Option<Duration> },
    /// Answer in the app's place.
    Answer {
        response: Response<Body>,
        delay: Option<Duration>,
    },
    /// Never answer: the connection is being reset.
    Hang,
}

/// Everything the gate needs: the app it protects and the emulator's state.
///
/// The state is held weakly: the emulator's own listeners run these gates,
/// and a strong reference would keep the state (and so the listeners)
/// alive forever. A gate that outlives its emulator answers 503.
#[derive(Clone, Debug)]
pub(crate) struct Gate {
    state: Weak<State>,
    app: App,
}

/// Where the accepted token came from.
#[derive(Clone, Copy)]
enum Via {
    Authorization,
    ProxyAuthorization,
    /// No token: the app lets such requests through as its signed-in user.
    SignedIn,
}

enum Deny {
    Reject(Rejection),
    Redirect,
}

impl Gate {
    pub(crate) fn new(state: &Arc<State>, app: App) -> Self {
        Self {
            state: Arc::downgrade(state),
            app,
        }
    }

    pub(crate) fn app(&self) -> &App {
        &self.app
    }

    /// Decides, and on success rewrites the request's headers as IAP does.
    pub(crate) fn admit<B>(&self, req: &mut Request<B>) -> Decision {
        let grpc = is_grpc(req);
        match self.decide(req) {
            Decision::Answer {
                mut response,
                delay,
            } if grpc => {
                add_grpc_status(&mut response);
                Decision::Answer { response, delay }
            }
            decision => decision,
        }
    }

    fn decide<B>(&self, req: &mut Request<B>) -> Decision {
        let Some(state) = self.state.upgrade() else {
            return Decision::Answer {
                response: text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "iap-emulator: the emulator behind this gate has stopped",
                ),
                delay: None,
            };
        };
        let mut delay = None;
        state.count(crate::counter::REQUESTS, Endpoint::Gate.name());
        if let Some(fault) = state.take_fault(Endpoint::Gate) {
            state.count(crate::counter::FAULTS, Endpoint::Gate.name());
            state.count(&crate::counter::faults_by(&fault), Endpoint::Gate.name());
            match fault {
                Fault::Delay { millis } => delay = Some(Duration::from_millis(millis)),
                Fault::Reset => match req.extensions().get::<ConnControl>() {
                    Some(conn) => {
                        conn.reset();
                        return Decision::Hang;
                    }
                    // A layer in someone else's server cannot reset the
                    // connection: the closest thing is an empty 502.
                    None => {
                        return Decision::Answer {
                            response: iap_generated(
                                Response::builder()
                                    .status(StatusCode::BAD_GATEWAY)
                                    .body(Body::empty())
                                    .unwrap_or_default(),
                            ),
                            delay: None,
                        };
                    }
                },
                other => {
                    if let Some(response) = crate::fault::render(Endpoint::Gate, &other) {
                        return Decision::Answer {
                            response: iap_generated(response),
                            delay: None,
                        };
                    }
                }
            }
        }

        let client_id = self.app.client_id();
        let (identity, via) = match self.authenticate(&state, req) {
            Ok(accepted) => accepted,
            Err(Deny::Reject(rejection)) => {
                state.count(counter::GATE_401, client_id);
                state.count(&counter::gate_401_by(rejection.reason()), client_id);
                return Decision::Answer {
                    response: unauthorized(rejection),
                    delay,
                };
            }
            Err(Deny::Redirect) => {
                state.count(counter::GATE_302, client_id);
                return Decision::Answer {
                    response: self.redirect(),
                    delay,
                };
            }
        };

        let Some(signer) = state.gate.signer() else {
            return Decision::Answer {
                response: text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "iap-emulator: IAP's assertion signing key could not be generated",
                ),
                delay,
            };
        };
        let assertion = signer.sign(
            state.now(),
            &Subject {
                audience: self.app.assertion_audience(),
                email: &identity.email,
                sub: &identity.sub,
                access_levels: self.app.access_levels(),
            },
        );
        let headers = req.headers_mut();
        headers.remove(PROXY_AUTHORIZATION);
        strip_goog_headers(headers);
        let values = (
            assertion.and_then(|a| HeaderValue::try_from(a).ok()),
            HeaderValue::try_from(format!("{IDENTITY_PREFIX}{}", identity.email)).ok(),
            HeaderValue::try_from(format!("{IDENTITY_PREFIX}{}", identity.sub)).ok(),
        );
        let (Some(mut assertion), Some(email), Some(id)) = values else {
            // Claims that cannot be header values (control characters).
            state.count(counter::GATE_401, client_id);
            state.count(
                &counter::gate_401_by(Rejection::Unparsable.reason()),
                client_id,
            );
            return Decision::Answer {
                response: unauthorized(Rejection::Unparsable),
                delay,
            };
        };
        assertion.set_sensitive(true);
        headers.insert(ASSERTION, assertion);
        headers.insert(USER_EMAIL, email);
        headers.insert(USER_ID, id);

        state.count(counter::APP_HITS, client_id);
        state.count(counter::GATE_ACCEPTED, &identity.token_id);
        if let Via::ProxyAuthorization = via {
            state.count(counter::GATE_PROXY_AUTHORIZATION, client_id);
        }
        Decision::Pass { delay }
    }

    /// A valid `Proxy-Authorization` wins (and `Authorization` goes to the
    /// app untouched); otherwise `Authorization` decides. With neither, an
    /// app [signed in as](super::AppBuilder::signed_in_as) a user lets the
    /// request through as that user; otherwise a browser-like request is
    /// redirected to Google's sign-in and anything else gets "empty token".
    fn authenticate<B>(&self, state: &State, req: &Request<B>) -> Result<(Identity, Via), Deny> {
        let headers = req.headers();
        let path = req.uri().path();
        let check = |token: &str| verify::verify(state, self.app.config(), token, path);
        let proxy = bearer(headers.get(PROXY_AUTHORIZATION)).map(check);
        let proxy_rejection = match proxy {
            Some(Ok(identity)) => return Ok((identity, Via::ProxyAuthorization)),
            Some(Err(rejection)) => Some(rejection),
            None => None,
        };
        match bearer(headers.get(AUTHORIZATION)) {
            Some(token) => check(token)
                .map(|identity| (identity, Via::Authorization))
                .map_err(Deny::Reject),
            None => match (proxy_rejection, self.app.signed_in_as()) {
                // An invalid Proxy-Authorization and no Authorization: the
                // request did carry a credential, so say what is wrong with it.
                (Some(rejection), _) => Err(Deny::Reject(rejection)),
                (None, Some(email)) => {
                    let identity = Identity {
                        email: email.to_owned(),
                        sub: state.user_id(email),
                        token_id: format!("signed-in:{email}"),
                    };
                    Ok((identity, Via::SignedIn))
                }
                (None, None) if looks_like_a_browser(req) => Err(Deny::Redirect),
                (None, None) => Err(Deny::Reject(Rejection::EmptyToken)),
            },
        }
    }

    /// IAP's 302 to Google's sign-in, naming the app's IAP client ID.
    fn redirect(&self) -> Response<Body> {
        let client_id = self.app.client_id();
        let redirect_uri =
            format!("https://iap.googleapis.com/v1/oauth/clientIds/{client_id}:handleRedirect");
        let state = crate::keys::random_b64(24);
        let location = url::Url::parse_with_params(
            "https://accounts.google.com/o/oauth2/v2/auth",
            [
                ("client_id", client_id),
                ("response_type", "code"),
                ("scope", "openid email"),
                ("redirect_uri", &redirect_uri),
                ("state", &state),
            ],
        );
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::FOUND;
        if let Some(location) = location
            .ok()
            .and_then(|l| HeaderValue::try_from(l.as_str()).ok())
        {
            response.headers_mut().insert(LOCATION, location);
        }
        iap_generated(response)
    }
}

/// The token of a `Bearer` credential; `None` for no header or another
/// scheme. A value that is not visible ASCII is passed on as an
/// unparseable token.
fn bearer(value: Option<&HeaderValue>) -> Option<&str> {
    let value = value?.to_str().unwrap_or("Bearer \u{fffd}");
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// IAP's test for "this client can follow a redirect to a sign-in page".
fn looks_like_a_browser<B>(req: &Request<B>) -> bool {
    req.method() == Method::GET
        && req.headers().get_all(ACCEPT).iter().any(|v| {
            v.as_bytes()
                .windows(9)
                .any(|w| w.eq_ignore_ascii_case(b"text/html"))
        })
}

/// IAP strips every `x-goog-*` header a client sends.
fn strip_goog_headers(headers: &mut HeaderMap) {
    let goog: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-goog-"))
        .cloned()
        .collect();
    for name in goog {
        headers.remove(name);
    }
}

fn iap_generated(mut response: Response<Body>) -> Response<Body> {
    response
        .headers_mut()
        .insert(IAP_GENERATED, HeaderValue::from_static("true"));
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=UTF-8"),
    );
    response
}

/// IAP's 401: a short text body (served as `text/html`, as IAP does).
fn unauthorized(rejection: Rejection) -> Response<Body> {
    let mut response = iap_generated(text(StatusCode::UNAUTHORIZED, rejection.body()));
    response
        .extensions_mut()
        .insert(GateMessage(rejection.body()));
    response
}

/// The text of a gate answer, for `grpc-message`.
#[derive(Clone, Copy)]
struct GateMessage(&'static str);

fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}

/// Makes a gate answer to a gRPC request a "trailers-only" gRPC response
/// too: `grpc-status` from the HTTP status (gRPC's HTTP-to-gRPC mapping)
/// and `grpc-message` with the answer's text.
///
/// Without it tonic reads IAP's text body as a gRPC frame and reports
/// `Internal` ("invalid compression flag") instead of `Unauthenticated`.
/// Whether real IAP does this for gRPC requests is unconfirmed.
fn add_grpc_status(response: &mut Response<Body>) {
    let code = match response.status() {
        StatusCode::BAD_REQUEST => 13,
        StatusCode::UNAUTHORIZED => 16,
        StatusCode::FORBIDDEN => 7,
        StatusCode::NOT_FOUND => 12,
        StatusCode::TOO_MANY_REQUESTS
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => 14,
        _ => 2,
    };
    let message = response.extensions().get::<GateMessage>().map_or_else(
        || {
            response
                .status()
                .canonical_reason()
                .unwrap_or("")
                .to_owned()
        },
        |m| m.0.to_owned(),
    );
    let headers = response.headers_mut();
    headers.insert("grpc-status", HeaderValue::from(code));
    if let Ok(message) = HeaderValue::try_from(percent_encode_grpc(&message)) {
        headers.insert("grpc-message", message);
    }
}

/// gRPC's `grpc-message` encoding: bytes outside `0x20..=0x7e`, and `%`,
/// as `%XX`.
fn percent_encode_grpc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_takes_the_token_of_a_bearer_credential_only() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(bearer(Some(&v("Bearer abc"))), Some("abc"));
        assert_eq!(bearer(Some(&v("bearer  abc "))), Some("abc"));
        assert_eq!(bearer(Some(&v("Bearer"))), Some(""));
        assert_eq!(bearer(Some(&v("Basic dXNlcg=="))), None);
        assert_eq!(bearer(None), None);
    }

    #[test]
    fn a_browser_is_a_get_accepting_html() {
        let req = |method: Method, accept: &'static str| {
            Request::builder()
                .method(method)
                .header(ACCEPT, accept)
                .body(())
                .unwrap()
        };
        assert!(looks_like_a_browser(&req(Method::GET, "text/html,*/*")));
        assert!(looks_like_a_browser(&req(
            Method::GET,
            "application/xhtml+xml, TEXT/HTML"
        )));
        assert!(!looks_like_a_browser(&req(Method::POST, "text/html")));
        assert!(!looks_like_a_browser(&req(Method::GET, "application/json")));
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(
            percent_encode_grpc("JWT 'email' 100%"),
            "JWT 'email' 100%25"
        );
        assert_eq!(percent_encode_grpc("é"), "%C3%A9");
    }

    #[test]
    fn gate_answers_to_grpc_carry_grpc_status() {
        let mut response = unauthorized(Rejection::Revoked);
        add_grpc_status(&mut response);
        assert_eq!(response.headers()["grpc-status"], "16");
        assert_eq!(
            response.headers()["grpc-message"],
            Rejection::Revoked.body()
        );
    }

    #[test]
    fn every_x_goog_header_is_stripped_and_others_kept() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-goog-iap-jwt-assertion",
            HeaderValue::from_static("forged"),
        );
        headers.append(
            "x-goog-authenticated-user-email",
            HeaderValue::from_static("a"),
        );
        headers.append(
            "x-goog-authenticated-user-email",
            HeaderValue::from_static("b"),
        );
        headers.insert("x-google-other", HeaderValue::from_static("kept"));
        strip_goog_headers(&mut headers);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers["x-google-other"], "kept");
    }
}
