//! A soak of both adapters against the emulator: short-lived tokens, many
//! concurrent clients, a token endpoint that fails at a given rate.
//!
//! ```text
//! cargo run --release --example soak -- --seconds 20 --fault-rate 0.1 --clients 32
//! ```
//!
//! Flags (or environment variables): `--seconds` (`SOAK_SECONDS`, default
//! 20) per adapter, `--fault-rate` (`SOAK_FAULT_RATE`, default 0.1),
//! `--clients` (`SOAK_CLIENTS`, default 32) per adapter, `--adapter`
//! (`tower`, `reqwest` or `both`, the default), `--token-lifetime` seconds
//! (default 2) and `--fetch-deadline` seconds (default the token lifetime).
//!
//! For each adapter (`IapLayer` over a hyper-util client, `IapMiddleware`
//! in a reqwest-middleware client) in turn, on its own app behind the
//! emulator's gate and its own token cache (a service-account key, so
//! tokens come from the emulator's OAuth token endpoint):
//!
//! 1. **An app's own 401.** With hour-long tokens and no faults, one
//!    request to fetch a token, then 200 to a path where the app itself
//!    answers 401 (no `X-Goog-IAP-Generated-Response`): they must come back
//!    as is and mint nothing more.
//! 2. **The soak.** Tokens live `--token-lifetime` seconds; every request
//!    to the token endpoint fails with probability `--fault-rate`, the fault
//!    drawn from 503, 429, 500, a delay one second past the fetch deadline,
//!    a connection reset and a malformed 200
//!    ([`Emulator::inject_at_rate`](iap_emulator::Emulator::inject_at_rate)).
//!    `--clients` tasks send requests back to back, one in eight to the
//!    app's own 401.
//!
//! It prints, per adapter: requests, failed requests grouped by reason,
//! expired tokens sent (the gate's `gate.401.expired` counter: requests that
//! reached IAP with an expired token, retried or not), tokens minted
//! against the ideal (one at the start, then one per refresh interval, half
//! the lifetime), the token endpoint's requests and faults by kind, and
//! latencies. Figures, not assertions: `docs/emulator.md` has a run's.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use iap::token::cache::TokenCacheBuilder;
use iap::token::source::service_account::{ServiceAccountKey, ServiceAccountSource};
use iap::{IapAuth, IapLayer};
use iap_emulator::{App, Emulator, Endpoint, Fault, ServiceAccount, counter};
use tower::ServiceExt as _;

type BoxError = Box<dyn StdError + Send + Sync>;

/// One in this many soak requests goes to the app's own 401.
const APP_401_EVERY: u64 = 8;
/// Requests of the app's-own-401 check.
const APP_401_CHECK: u64 = 200;
/// A request that takes longer than this counts as failed.
const REQUEST_LIMIT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
struct Options {
    seconds: f64,
    fault_rate: f64,
    clients: usize,
    adapters: Vec<Adapter>,
    token_lifetime: u64,
    fetch_deadline: f64,
}

impl Options {
    fn parse() -> Result<Options, String> {
        let env = |name: &str| std::env::var(name).ok();
        let mut seconds = env("SOAK_SECONDS");
        let mut fault_rate = env("SOAK_FAULT_RATE");
        let mut clients = env("SOAK_CLIENTS");
        let (mut adapter, mut lifetime, mut deadline) = (None, None, None);
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let slot = match flag.as_str() {
                "--seconds" => &mut seconds,
                "--fault-rate" => &mut fault_rate,
                "--clients" => &mut clients,
                "--adapter" => &mut adapter,
                "--token-lifetime" => &mut lifetime,
                "--fetch-deadline" => &mut deadline,
                "-h" | "--help" => return Err(USAGE.to_owned()),
                other => return Err(format!("unknown flag {other}\n{USAGE}")),
            };
            *slot = Some(args.next().ok_or(format!("{flag} needs a value"))?);
        }
        fn num<T: std::str::FromStr>(
            v: Option<String>,
            name: &str,
            default: T,
        ) -> Result<T, String> {
            v.map_or(Ok(default), |v| {
                v.parse().map_err(|_| format!("{name}: not a number: {v}"))
            })
        }
        let token_lifetime: u64 = num(lifetime, "--token-lifetime", 2)?;
        let options = Options {
            seconds: num(seconds, "--seconds", 20.0)?,
            fault_rate: num(fault_rate, "--fault-rate", 0.1)?,
            clients: num(clients, "--clients", 32)?,
            adapters: match adapter.as_deref().unwrap_or("both") {
                "both" => vec![Adapter::Tower, Adapter::Reqwest],
                "tower" => vec![Adapter::Tower],
                "reqwest" => vec![Adapter::Reqwest],
                other => return Err(format!("--adapter: tower, reqwest or both, not {other}")),
            },
            token_lifetime: token_lifetime.max(1),
            fetch_deadline: num(deadline, "--fetch-deadline", token_lifetime.max(1) as f64)?,
        };
        if !(0.0..=1.0).contains(&options.fault_rate) {
            return Err("--fault-rate must be between 0 and 1".into());
        }
        Ok(options)
    }
}

const USAGE: &str = "usage: soak [--seconds S] [--fault-rate R] [--clients N] \
[--adapter tower|reqwest|both] [--token-lifetime S] [--fetch-deadline S]";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Adapter {
    Tower,
    Reqwest,
}

impl Adapter {
    fn describe(self) -> &'static str {
        match self {
            Adapter::Tower => "tower: IapLayer over a hyper-util client",
            Adapter::Reqwest => "reqwest: IapMiddleware in a reqwest-middleware client",
        }
    }
}

/// One client of the app, through one adapter; clones share the adapter's
/// connection pool and token cache.
#[derive(Clone)]
enum Sender {
    Tower(Box<TowerClient>),
    Reqwest(reqwest_middleware::ClientWithMiddleware),
}

type TowerClient =
    iap::tower::IapService<Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>>;

/// What came back: the status and whether IAP itself answered.
struct Answer {
    status: u16,
    from_iap: bool,
}

impl Sender {
    fn new(adapter: Adapter, auth: IapAuth) -> Result<Sender, BoxError> {
        Ok(match adapter {
            Adapter::Tower => Sender::Tower(Box::new(
                tower::ServiceBuilder::new()
                    .layer(IapLayer::new(auth))
                    .service(Client::builder(TokioExecutor::new()).build_http()),
            )),
            Adapter::Reqwest => Sender::Reqwest(
                reqwest_middleware::ClientBuilder::new(iap::reqwest::client_builder().build()?)
                    .with(iap::reqwest::IapMiddleware::new(auth))
                    .build(),
            ),
        })
    }

    async fn get(&self, url: &str) -> Result<Answer, BoxError> {
        let from_iap = |headers: &http::HeaderMap| {
            headers
                .get("x-goog-iap-generated-response")
                .is_some_and(|v| v == "true")
        };
        match self {
            Sender::Tower(service) => {
                let request = http::Request::get(url).body(Full::default())?;
                let answer = (**service).clone().oneshot(request).await?;
                let (parts, body) = answer.into_parts();
                body.collect().await?;
                Ok(Answer {
                    status: parts.status.as_u16(),
                    from_iap: from_iap(&parts.headers),
                })
            }
            Sender::Reqwest(client) => {
                let answer = client.get(url).send().await?;
                let (status, iap) = (answer.status().as_u16(), from_iap(answer.headers()));
                answer.bytes().await?;
                Ok(Answer {
                    status,
                    from_iap: iap,
                })
            }
        }
    }
}

/// A token cache's IapAuth for `app`, with a service-account key.
fn auth_for(app: &App, sa: &ServiceAccount, options: &Options) -> Result<IapAuth, BoxError> {
    let source = ServiceAccountSource::new(ServiceAccountKey::from_json(sa.key_json())?);
    Ok(IapAuth::builder()
        .source(source)
        .audience(app.client_id())
        .allow_origin(app.url().origin().ascii_serialization())
        .cache(
            TokenCacheBuilder::options()
                .fetch_deadline(Duration::from_secs_f64(options.fetch_deadline)),
        )
        .build()?)
}

/// The chain of an error, one line.
fn reason(e: &(dyn StdError + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        next = cause.source();
    }
    text
}

#[derive(Default)]
struct Tally {
    requests: u64,
    app_401s: u64,
    failed: BTreeMap<String, u64>,
    /// Microseconds per request.
    latencies: Vec<u32>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.requests += other.requests;
        self.app_401s += other.app_401s;
        for (why, n) in other.failed {
            *self.failed.entry(why).or_default() += n;
        }
        self.latencies.extend(other.latencies);
    }

    fn fail(&mut self, why: String) {
        *self.failed.entry(why).or_default() += 1;
    }
}

/// One client's loop: requests back to back until `until`.
async fn client(sender: Sender, app: String, until: Instant, first: u64) -> Tally {
    let mut tally = Tally::default();
    let (ok_url, own_401_url) = (format!("{app}soak"), format!("{app}status/401"));
    let mut n = first;
    while Instant::now() < until {
        n += 1;
        let own_401 = n.is_multiple_of(APP_401_EVERY);
        let started = Instant::now();
        let url = if own_401 { &own_401_url } else { &ok_url };
        let answer = tokio::time::timeout(REQUEST_LIMIT, sender.get(url)).await;
        tally.requests += 1;
        tally
            .latencies
            .push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
        match answer {
            Err(_) => tally.fail(format!("no answer within {} s", REQUEST_LIMIT.as_secs())),
            Ok(Err(e)) => tally.fail(reason(&*e)),
            Ok(Ok(a)) if own_401 && a.status == 401 && !a.from_iap => tally.app_401s += 1,
            Ok(Ok(a)) if !own_401 && a.status == 200 => {}
            Ok(Ok(a)) => tally.fail(format!(
                "{} {}",
                a.status,
                if a.from_iap {
                    "from IAP"
                } else {
                    "from the app"
                }
            )),
        }
    }
    tally
}

struct Own401Check {
    answered_as_is: u64,
    mints: u64,
}

/// An app's own 401s through `adapter`: how many came back as is and how
/// many tokens they cost beyond the first.
async fn own_401_check(
    emu: &Emulator,
    sa: &ServiceAccount,
    adapter: Adapter,
    options: &Options,
) -> Result<Own401Check, BoxError> {
    let app = emu.create_app().echo().await?;
    let sender = Sender::new(adapter, auth_for(&app, sa, options)?)?;
    let first = sender.get(app.url().join("/")?.as_str()).await?;
    if first.status != 200 {
        return Err(format!("the first request answered {}", first.status).into());
    }
    let before = emu.id_tokens_issued(app.client_id());
    let mut answered_as_is = 0;
    let url = app.url().join("/status/401")?;
    for _ in 0..APP_401_CHECK {
        let a = sender.get(url.as_str()).await?;
        if a.status == 401 && !a.from_iap {
            answered_as_is += 1;
        }
    }
    Ok(Own401Check {
        answered_as_is,
        mints: emu.id_tokens_issued(app.client_id()) - before,
    })
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

async fn soak(
    emu: &Emulator,
    sa: &ServiceAccount,
    adapter: Adapter,
    options: &Options,
) -> Result<(), BoxError> {
    println!("\n{}", adapter.describe());

    emu.clear_faults();
    emu.set_token_lifetime(Duration::from_secs(3600));
    let check = own_401_check(emu, sa, adapter, options).await?;

    let app = emu.create_app().echo().await?;
    let sender = Sender::new(adapter, auth_for(&app, sa, options)?)?;
    emu.set_token_lifetime(Duration::from_secs(options.token_lifetime));
    emu.reset_counters();
    let delay = Duration::from_secs_f64(options.fetch_deadline + 1.0);
    emu.inject_at_rate(
        Endpoint::Token,
        options.fault_rate,
        [
            Fault::status(503),
            Fault::status(429),
            Fault::status(500),
            Fault::delay(delay),
            Fault::Reset,
            Fault::Malformed,
        ],
    );
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(options.seconds);
    let base = app.url().to_string();
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..options.clients {
        // Spread the app's own 401s over the clients' sequences.
        clients.spawn(client(sender.clone(), base.clone(), until, i as u64));
    }
    let mut tally = Tally::default();
    while let Some(done) = clients.join_next().await {
        tally.merge(done?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    emu.clear_faults();
    tally.latencies.sort_unstable();

    let client_id = app.client_id();
    let failed: u64 = tally.failed.values().sum();
    let minted = emu.id_tokens_issued(client_id);
    let interval = options.token_lifetime as f64 / 2.0;
    let ideal = 1.0 + elapsed / interval;
    let faults: Vec<String> = emu
        .counters()
        .iter()
        .filter(|(name, _)| name.starts_with("faults."))
        .filter_map(|(name, labels)| {
            let n = labels.get(Endpoint::Token.name())?;
            Some(format!("{} x{n}", &name["faults.".len()..]))
        })
        .collect();
    println!(
        "  requests              {} in {elapsed:.1} s ({:.0}/s); {} of them the app's own 401, returned as is",
        tally.requests,
        tally.requests as f64 / elapsed,
        tally.app_401s
    );
    println!("  failed                {failed}");
    for (why, n) in &tally.failed {
        println!("    {n:>8}  {why}");
    }
    println!(
        "  expired tokens sent   {} (IAP's 401s in all: {})",
        emu.counter(&counter::gate_401_by("expired"), client_id),
        emu.counter(counter::GATE_401, client_id)
    );
    println!(
        "  tokens minted         {minted} vs ideal {ideal:.1} (1 + {elapsed:.1} s / {interval:.1} s refresh interval)"
    );
    println!(
        "  token endpoint        {} requests, {} faulted: {}",
        emu.requests(Endpoint::Token),
        emu.counter(counter::FAULTS, Endpoint::Token.name()),
        if faults.is_empty() {
            "-".to_owned()
        } else {
            faults.join(", ")
        }
    );
    println!(
        "  latency               p50 {:.2} ms, p99 {:.2} ms, p99.99 {:.1} ms, max {:.1} ms",
        percentile(&tally.latencies, 0.5),
        percentile(&tally.latencies, 0.99),
        percentile(&tally.latencies, 0.9999),
        percentile(&tally.latencies, 1.0)
    );
    println!(
        "  app's own 401         {} requests, {} returned as is, {} tokens minted for them",
        APP_401_CHECK, check.answered_as_is, check.mints
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let options = match Options::parse() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let emu = Emulator::start().await?;
    let sa = emu.create_service_account("soak").await?;
    println!(
        "soak: {} s per adapter, {} clients each, {} s tokens, fetch deadline {} s; \
         token endpoint faults at {:.0} % (503, 429, 500, delay {} s, reset, malformed 200)",
        options.seconds,
        options.clients,
        options.token_lifetime,
        options.fetch_deadline,
        options.fault_rate * 100.0,
        options.fetch_deadline + 1.0,
    );
    for adapter in options.adapters.clone() {
        soak(&emu, &sa, adapter, &options).await?;
    }
    Ok(())
}
