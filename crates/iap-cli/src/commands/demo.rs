//! `iap demo`: the whole toolkit against an in-process emulator, step by
//! step, with the emulator's counters as the proof of each claim.
//!
//! Nothing here touches the user's credentials or config folder: the demo
//! provisions its own service account and desktop user in the emulator and
//! hands them to the library directly.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use iap_emulator::{App, Emulator, counter};
use iap_reqwest::IapMiddleware;
use iap_token::login::DesktopLogin;
use iap_token::policy::Placement;
use iap_token::source::authorized_user::AuthorizedUserSource;
use iap_token::{Audience, IapAuth, TokenSource};
use serde_json::Value;
use tower::ServiceExt as _;
use tower_layer::Layer as _;

use super::proxy::Proxy;
use crate::failure::{CliResult, Failure};
use crate::output;

/// How many requests the cache step sends through each adapter.
const CACHE_ROUNDS: usize = 10;

/// How long the demo's login waits for its redirect.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Makes the demo independent of proxy settings: everything it talks to is
/// on loopback. Call before any thread starts (it changes the environment).
pub fn prepare_environment() {
    let mut no_proxy = std::env::var("NO_PROXY").unwrap_or_default();
    if !no_proxy.is_empty() {
        no_proxy.push(',');
    }
    no_proxy.push_str("127.0.0.1,localhost,::1");
    // SAFETY: called from `main` before the runtime (or any other thread) starts.
    unsafe {
        std::env::set_var("NO_PROXY", &no_proxy);
        std::env::set_var("no_proxy", &no_proxy);
    }
}

/// What a step found: a one-line detail for the summary, or why it failed.
type StepResult = Result<String, String>;

/// Runs `iap demo`.
pub async fn run() -> CliResult {
    let started = Instant::now();
    println!("iap demo: every part of the toolkit against a local IAP emulator\n");
    let emu = Emulator::start()
        .await
        .map_err(|e| Failure::new(format!("cannot start the emulator: {e}")))?;
    let app = emu.app();
    let audience = Audience::new(app.client_id());
    println!("emulator   {}", emu.url());
    println!("gated app  {} (echo app behind the IAP gate)", app.url());
    println!("audience   {audience} (the app's IAP OAuth client ID)");

    let sa = emu
        .create_service_account("demo-runner")
        .await
        .map_err(|e| Failure::new(format!("cannot provision a service account: {e}")))?;
    let source = iap_token::adc::from_json(sa.key_json())?;
    println!(
        "caller     {} (service-account key, token_uri = {})\n",
        sa.email(),
        emu.token_uri()
    );

    let auth = IapAuth::builder()
        .source_arc(source.clone())
        .audience(audience.clone())
        .allow_origin(origin(app.url()))
        .build()?;
    let mut demo = Demo {
        emu: &emu,
        app: &app,
        audience: &audience,
        sa_email: sa.email(),
        auth: &auth,
        baseline: 0,
    };

    let mut steps = Steps {
        total: 8,
        done: Vec::new(),
    };
    steps
        .run(
            "An ID token from the service-account key",
            "token",
            demo.token(&source),
        )
        .await;
    // From here on, every token is fetched by the adapters' shared cache.
    demo.baseline = emu.id_tokens_issued(audience.as_str());
    steps
        .run(
            "A request through iap-reqwest (IapMiddleware)",
            "iap-reqwest",
            demo.reqwest(),
        )
        .await;
    steps
        .run(
            "A request through iap-tower (IapLayer on a hyper-util client)",
            "iap-tower",
            demo.tower(),
        )
        .await;
    steps
        .run("Cache hits against token fetches", "cache", demo.cache())
        .await;
    steps
        .run(
            "A revoked token: IAP 401 -> refresh -> retry",
            "revoked token",
            demo.revoked(),
        )
        .await;
    let title = "Proxy-Authorization: the app keeps its own Authorization";
    steps
        .run(
            title,
            "Proxy-Authorization",
            demo.proxy_authorization(&source),
        )
        .await;
    steps
        .run(
            "Desktop login through the consent redirect (no browser)",
            "desktop login",
            demo.login(),
        )
        .await;
    steps
        .run(
            "iap proxy: a plain client through the local proxy",
            "iap proxy",
            demo.local_proxy(&source),
        )
        .await;
    let steps = steps.done;

    let failed = steps.iter().filter(|(_, r)| r.is_err()).count();
    println!("Summary ({:.1} s)", started.elapsed().as_secs_f64());
    let width = steps
        .iter()
        .map(|(name, _)| name.chars().count())
        .max()
        .unwrap_or(0);
    for (name, result) in &steps {
        let (mark, detail) = match result {
            Ok(d) => ("ok  ", d),
            Err(d) => ("FAIL", d),
        };
        println!("  {name:<width$}  {mark}  {detail}");
    }
    if failed == 0 {
        println!("\nAll {} steps did what they should.", steps.len());
        Ok(())
    } else {
        Err(Failure::new(format!(
            "{failed} of {} demo steps failed (see above)",
            steps.len()
        )))
    }
}

/// The steps run so far and what they found.
struct Steps {
    total: usize,
    done: Vec<(&'static str, StepResult)>,
}

impl Steps {
    async fn run(
        &mut self,
        title: &str,
        name: &'static str,
        step: impl Future<Output = StepResult>,
    ) {
        println!("[{}/{}] {title}", self.done.len() + 1, self.total);
        let outcome = step.await;
        match &outcome {
            Ok(detail) => println!("      ✓ {detail}\n"),
            Err(why) => println!("      ✗ {why}\n"),
        }
        self.done.push((name, outcome));
    }
}

/// What every step needs.
struct Demo<'a> {
    emu: &'a Emulator,
    app: &'a App,
    audience: &'a Audience,
    sa_email: &'a str,
    auth: &'a IapAuth,
    /// Tokens minted before the adapters started (by the token step).
    baseline: u64,
}

/// Prints a progress line under the current step.
fn say(line: impl AsRef<str>) {
    println!("      {}", line.as_ref());
}

fn check(ok: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(why()) }
}

/// A client for the emulator on loopback: no proxy from the environment.
fn loopback_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap_or_default()
}

fn origin(url: &url::Url) -> String {
    url.origin().ascii_serialization()
}

impl Demo<'_> {
    fn id_tokens(&self) -> u64 {
        self.emu.id_tokens_issued(self.audience.as_str())
    }

    fn counter(&self, name: &str) -> u64 {
        self.emu.counter(name, self.app.client_id())
    }

    fn reqwest_client(&self, auth: &IapAuth) -> reqwest_middleware::ClientWithMiddleware {
        reqwest_middleware::ClientBuilder::new(loopback_client())
            .with(IapMiddleware::new(auth.clone()))
            .build()
    }

    /// GET `path` on the app through iap-reqwest; the echo JSON on 200.
    async fn get_reqwest(
        &self,
        auth: &IapAuth,
        path: &str,
        extra: Option<(&str, &str)>,
    ) -> Result<Value, String> {
        let url = self.app.url().join(path).map_err(|e| e.to_string())?;
        let mut req = self.reqwest_client(auth).get(url);
        if let Some((name, value)) = extra {
            req = req.header(name, value);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("request failed: {e:#}"))?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| e.to_string())?;
        check(status == 200, || {
            format!("the app answered {status}: {}", body.trim())
        })?;
        serde_json::from_str(&body).map_err(|e| format!("the echo app's answer is not JSON: {e}"))
    }

    /// GET `path` on the app through an IapLayer over a hyper-util client.
    async fn get_tower(&self, path: &str) -> Result<Value, String> {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
        let service = iap_tower::IapLayer::new(self.auth.clone()).layer(client);
        let uri = self.app.url().join(path).map_err(|e| e.to_string())?;
        let request = http::Request::get(uri.as_str())
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let response = service
            .oneshot(request)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        check(status == 200, || {
            format!(
                "the app answered {status}: {}",
                String::from_utf8_lossy(&body).trim()
            )
        })?;
        serde_json::from_slice(&body).map_err(|e| format!("the echo app's answer is not JSON: {e}"))
    }

    fn caller_seen(&self, echo: &Value) -> String {
        echo["headers"]["x-goog-authenticated-user-email"]
            .as_str()
            .unwrap_or("(none)")
            .to_owned()
    }

    async fn token(&self, source: &Arc<dyn TokenSource>) -> StepResult {
        let token = source
            .id_token(self.audience)
            .await
            .map_err(|e| Failure::from(e).to_string())?;
        let claims = output::claims_json(token.as_str());
        say(format!("token   {}", output::abbreviate(token.as_str())));
        for name in ["iss", "aud", "email", "sub", "iat", "exp"] {
            if let Some(v) = claims.get(name) {
                say(format!("{name:<7} {v}"));
            }
        }
        let left = token.remaining(SystemTime::now()).as_secs();
        say(format!(
            "expires {} (in {left} s)",
            output::rfc3339(token.expires_at())
        ));
        check(
            token.claims().aud.as_deref() == Some(self.audience.as_str()),
            || "aud is not the app's client ID".into(),
        )?;
        check(
            token.claims().email.as_deref() == Some(self.sa_email),
            || "email is not the service account".into(),
        )?;
        Ok(format!(
            "aud = IAP client ID, email = {}, valid {left} s",
            self.sa_email
        ))
    }

    async fn reqwest(&self) -> StepResult {
        let echo = self
            .get_reqwest(self.auth, "/hello?from=reqwest", None)
            .await?;
        let who = self.caller_seen(&echo);
        say(format!(
            "GET {} -> 200, the app saw {who}",
            self.app.url().join("/hello").map_err(|e| e.to_string())?
        ));
        check(
            who == format!("accounts.google.com:{}", self.sa_email),
            || format!("the app saw {who}"),
        )?;
        check(
            echo["headers"]["x-goog-iap-jwt-assertion"].is_string(),
            || "no IAP assertion reached the app".into(),
        )?;
        Ok(format!("200 from the app as {}", self.sa_email))
    }

    async fn tower(&self) -> StepResult {
        let echo = self.get_tower("/hello?from=tower").await?;
        let who = self.caller_seen(&echo);
        say(format!(
            "GET /hello -> 200 ({}), the app saw {who}",
            echo["version"].as_str().unwrap_or("?")
        ));
        check(
            who == format!("accounts.google.com:{}", self.sa_email),
            || format!("the app saw {who}"),
        )?;
        Ok("200 from the app, same cached token as iap-reqwest".into())
    }

    async fn cache(&self) -> StepResult {
        let (fetches_before, hits_before) = (self.id_tokens(), self.counter(counter::APP_HITS));
        for _ in 0..CACHE_ROUNDS {
            self.get_reqwest(self.auth, "/cached", None).await?;
            self.get_tower("/cached").await?;
        }
        let requests = self.counter(counter::APP_HITS) - hits_before;
        let fetched = self.id_tokens() - fetches_before;
        let total_requests = self.counter(counter::APP_HITS);
        let total_fetches = self.id_tokens() - self.baseline;
        say(format!(
            "{requests} more requests ({CACHE_ROUNDS} per adapter): {fetched} token fetches"
        ));
        say(format!(
            "adapters so far: {total_requests} requests, {total_fetches} token fetch(es) (emulator counters app.hits, id_tokens)"
        ));
        check(fetched == 0, || {
            format!("{fetched} extra token fetches; expected every request to hit the cache")
        })?;
        check(total_fetches == 1, || {
            format!("{total_fetches} tokens fetched by the cache; expected 1")
        })?;
        Ok(format!(
            "{total_requests} requests, {total_fetches} token fetch, {} cache hits",
            total_requests - total_fetches
        ))
    }

    async fn revoked(&self) -> StepResult {
        let token = self
            .auth
            .cache()
            .token(self.audience)
            .await
            .map_err(|e| e.to_string())?;
        self.emu.revoke(token.as_str());
        say(format!(
            "revoked {} in the emulator",
            output::abbreviate(token.as_str())
        ));
        let (fetches, refusals) = (
            self.id_tokens(),
            self.counter(&counter::gate_401_by("revoked")),
        );
        let echo = self
            .get_reqwest(self.auth, "/after-revocation", None)
            .await?;
        let new_fetches = self.id_tokens() - fetches;
        let new_refusals = self.counter(&counter::gate_401_by("revoked")) - refusals;
        say(format!(
            "IAP answered 401 ({new_refusals}x, reason: revoked); tokens fetched: {new_fetches}; retry -> 200"
        ));
        check(new_refusals == 1, || {
            format!("{new_refusals} IAP 401s for the revoked token; expected 1")
        })?;
        check(new_fetches == 1, || {
            format!("{new_fetches} new tokens; expected exactly 1 refresh")
        })?;
        check(self.caller_seen(&echo).ends_with(self.sa_email), || {
            "the retry did not reach the app".into()
        })?;
        let fresh = self.auth.cache().cached(self.audience);
        check(fresh.is_some_and(|t| !t.same_as(&token)), || {
            "the cache still holds the revoked token".into()
        })?;
        Ok("1 IAP 401 -> 1 refresh -> retried -> 200".into())
    }

    async fn proxy_authorization(&self, source: &Arc<dyn TokenSource>) -> StepResult {
        let auth = IapAuth::builder()
            .source_arc(source.clone())
            .audience(self.audience.clone())
            .allow_origin(origin(self.app.url()))
            .placement(Placement::ProxyAuthorization)
            .build()
            .map_err(|e| e.to_string())?;
        let before = self.counter(counter::GATE_PROXY_AUTHORIZATION);
        let echo = self
            .get_reqwest(
                &auth,
                "/with-own-auth",
                Some(("authorization", "Bearer app-session-123")),
            )
            .await?;
        let seen = echo["headers"]["authorization"]
            .as_str()
            .unwrap_or("(none)");
        say(format!(
            "token in Proxy-Authorization; the app received Authorization: {seen}"
        ));
        check(seen == "Bearer app-session-123", || {
            format!("the app received Authorization: {seen}")
        })?;
        check(echo["headers"].get("proxy-authorization").is_none(), || {
            "Proxy-Authorization reached the app".into()
        })?;
        let used = self.counter(counter::GATE_PROXY_AUTHORIZATION) - before;
        check(used == 1, || {
            format!("IAP authorized {used} requests by Proxy-Authorization; expected 1")
        })?;
        let fetches = self.id_tokens();
        let own = self.get_reqwest(&auth, "/status/401", None).await;
        let app_401 = matches!(&own, Err(e) if e.starts_with("the app answered 401"));
        let refreshed = self.id_tokens() - fetches;
        say(format!(
            "the app's own 401 comes back as is; tokens fetched for it: {refreshed} (only IAP's answers count)"
        ));
        check(app_401, || {
            format!("the app's own 401 was not passed through: {own:?}")
        })?;
        check(refreshed == 0, || {
            format!("the app's own 401 caused {refreshed} token refreshes; expected none")
        })?;
        Ok(
            "IAP authorized by Proxy-Authorization; the app's Authorization arrived untouched"
                .into(),
        )
    }

    async fn login(&self) -> StepResult {
        let client = self.emu.create_desktop_client(self.emu.project_id());
        let user = self.emu.create_user(&client, "ada@example.com");
        say(format!(
            "desktop client {} and user {}",
            client.client_id(),
            user.email()
        ));
        let pending = DesktopLogin::new(client.client_id(), client.client_secret())
            .audience(self.audience.clone())
            .auth_uri(self.emu.authorize_url())
            .token_uri(self.emu.token_uri())
            .timeout(LOGIN_TIMEOUT)
            .start()
            .map_err(|e| e.to_string())?;
        say(format!("loopback receiver at {}", pending.redirect_uri()));
        let url = pending.authorization_url().clone();
        let mut short = url.clone();
        short.set_query(None);
        say(format!(
            "following the consent page {short} ... (state + PKCE S256)"
        ));
        let browser = async {
            let resp = loopback_client()
                .get(url)
                .send()
                .await
                .map_err(|e| format!("the consent redirect failed: {e}"))?;
            Ok::<_, String>(resp.status())
        };
        // The receiver must run while the "browser" follows the redirect;
        // if the browser fails, stop waiting for it at once.
        let finish = pending.finish();
        tokio::pin!(browser, finish);
        let (landed, outcome) = tokio::select! {
            landed = &mut browser => (landed?, finish.await),
            outcome = &mut finish => (browser.await?, outcome),
        };
        let outcome = outcome.map_err(|e| Failure::from(e).to_string())?;
        say(format!(
            "the redirect landed on the receiver ({landed}); code exchanged"
        ));
        let email = outcome.id_token.claims().email.clone().unwrap_or_default();
        say(format!(
            "ID token {} for {email}",
            output::abbreviate(outcome.id_token.as_str())
        ));
        check(email == user.email(), || {
            format!("signed in as {email}, not {}", user.email())
        })?;
        let source: Arc<dyn TokenSource> = Arc::new(AuthorizedUserSource::new(outcome.credentials));
        let auth = IapAuth::builder()
            .source_arc(source)
            .audience(self.audience.clone())
            .allow_origin(origin(self.app.url()))
            .build()
            .map_err(|e| e.to_string())?;
        let echo = self.get_reqwest(&auth, "/as-user", None).await?;
        let who = self.caller_seen(&echo);
        say(format!(
            "with the saved refresh token: GET /as-user -> 200, the app saw {who}"
        ));
        check(
            who == format!("accounts.google.com:{}", user.email()),
            || format!("the app saw {who}"),
        )?;
        Ok(format!(
            "signed in as {email}; refresh token works against the app"
        ))
    }

    async fn local_proxy(&self, source: &Arc<dyn TokenSource>) -> StepResult {
        let auth = IapAuth::builder()
            .source_arc(source.clone())
            .audience(self.audience.clone())
            .allow_origin(origin(self.app.url()))
            .build()
            .map_err(|e| e.to_string())?;
        let proxy = Proxy::new(self.app.url().clone(), auth).map_err(|e| e.to_string())?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            proxy
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await;
        });
        say(format!(
            "iap proxy listening on http://{addr} -> {}",
            self.app.url()
        ));
        let result = async {
            let resp = loopback_client()
                .get(format!("http://{addr}/through-proxy"))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = resp.status();
            let echo: Value = resp.json().await.map_err(|e| e.to_string())?;
            let who = self.caller_seen(&echo);
            say(format!(
                "plain GET http://{addr}/through-proxy (no token) -> {status}, the app saw {who}"
            ));
            check(status == 200 && who.ends_with(self.sa_email), || {
                format!("{status}, the app saw {who}")
            })?;
            Ok("a client without IAP support reached the app".to_owned())
        }
        .await;
        let _ = stop.send(());
        let _ = server.await;
        result
    }
}
