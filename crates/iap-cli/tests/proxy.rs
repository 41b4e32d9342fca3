//! `iap proxy` end to end: concurrent clients, a streamed upload, h2c, one
//! log line per request, and a clean stop on Ctrl-C.

mod common;

use std::time::Duration;

use common::{World, closed_port, interrupt, json_answer, wait_for_line};
use futures_util::StreamExt as _;
use tokio::process::Child;

/// Starts `iap proxy` and waits for its "listening on" line; the child and
/// the proxy's base URL.
async fn start(w: &World, target: &str, extra: &[&str]) -> (Child, String) {
    let mut args = vec![
        "proxy",
        "--target",
        target,
        "--listen",
        "127.0.0.1:0",
        "--credentials",
        w.key(),
    ];
    args.extend_from_slice(extra);
    let (child, addr) = common::start_proxy(&w.sandbox, &args).await;
    (child, format!("http://{addr}"))
}

/// A world and `iap proxy` whose target is the test itself (a listener on
/// loopback), so the test sees exactly what reaches the upstream and
/// decides what it answers, and when: the world, the proxy, its base URL
/// and the listener.
async fn start_before_the_test() -> (World, Child, String, tokio::net::TcpListener) {
    let w = World::new().await;
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("http://{}/", upstream.local_addr().unwrap());
    let (child, base) = start(&w, &target, &["--audience", w.audience()]).await;
    (w, child, base, upstream)
}

/// Reads from `conn` onto `seen` until `seen` holds `marker`.
async fn read_until(conn: &mut tokio::net::TcpStream, seen: &mut Vec<u8>, marker: &[u8]) {
    use tokio::io::AsyncReadExt as _;
    while !seen.windows(marker.len()).any(|w| w == marker) {
        let mut buf = [0u8; 1024];
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "the proxy closed the upstream connection");
        seen.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_clients_share_one_token_and_each_request_logs_one_line() {
    let w = World::new().await;
    let (child, base) = start(&w, w.app.url().as_str(), &["--audience", w.audience()]).await;
    let client = reqwest::Client::new();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let (client, url) = (client.clone(), format!("{base}/c/{i}?q={i}"));
        tasks.spawn(async move {
            let resp = client.get(url).send().await.expect("request");
            (
                i,
                resp.status(),
                resp.json::<serde_json::Value>().await.expect("echo JSON"),
            )
        });
    }
    while let Some(done) = tasks.join_next().await {
        let (i, status, echo) = done.unwrap();
        assert_eq!(status, 200);
        assert_eq!(echo["path"], format!("/c/{i}"));
        assert_eq!(echo["query"], format!("q={i}"));
        assert_eq!(
            echo["headers"]["x-goog-authenticated-user-email"],
            format!("accounts.google.com:{}", w.sa.email())
        );
    }
    assert_eq!(w.tokens_minted(), 1, "one token for every request");
    assert_eq!(
        w.emu.counter(iap_emulator::counter::APP_HITS, w.audience()),
        40
    );
    let stderr = common::stop_proxy(child).await;
    let logged = stderr
        .lines()
        .filter(|l| l.contains("\"GET /c/") && l.contains(" 200 "))
        .count();
    assert_eq!(logged, 40, "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_upload_arrives_whole() {
    let w = World::new().await;
    let (child, base) = start(&w, w.app.url().as_str(), &["--audience", w.audience()]).await;
    const CHUNK: usize = 16 * 1024;
    const CHUNKS: usize = 64;
    let chunks =
        (0..CHUNKS).map(|i| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![i as u8; CHUNK])));
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let resp = reqwest::Client::new()
        .post(format!("{base}/upload"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let echo: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body_len"], CHUNK * CHUNKS);
    common::stop_proxy(child).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn h2c_clients_are_served() {
    let w = World::new().await;
    let (child, base) = start(&w, w.app.url().as_str(), &["--audience", w.audience()]).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = client.get(format!("{base}/h2")).send().await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let echo: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(echo["path"], "/h2");
    common::stop_proxy(child).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_authorization_mode_passes_the_clients_authorization() {
    let w = World::new().await;
    let (child, base) = start(
        &w,
        w.app.url().as_str(),
        &["--audience", w.audience(), "--proxy-authorization"],
    )
    .await;
    let resp = reqwest::Client::new()
        .get(format!("{base}/pa"))
        .bearer_auth("client-own")
        .send()
        .await
        .unwrap();
    let echo: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(echo["headers"]["authorization"], "Bearer client-own");
    assert_eq!(
        w.emu.counter(
            iap_emulator::counter::GATE_PROXY_AUTHORIZATION,
            w.audience()
        ),
        1
    );
    common::stop_proxy(child).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audience_is_discovered_when_not_given() {
    let w = World::new().await;
    let (child, base) = start(&w, w.app.url().as_str(), &[]).await;
    let resp = reqwest::get(format!("{base}/d")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(w.tokens_minted(), 1);
    common::stop_proxy(child).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_target_is_a_502_naming_the_cause() {
    let w = World::new().await;
    let dead = format!("http://127.0.0.1:{}/", closed_port());
    let (child, base) = start(&w, &dead, &["--audience", w.audience()]).await;
    let resp = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
        .get(format!("{base}/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let text = resp.text().await.unwrap();
    assert!(
        text.starts_with("iap proxy: ") && text.to_lowercase().contains("refused"),
        "{text}"
    );
    let stderr = common::stop_proxy(child).await;
    assert!(stderr.contains("\"GET /x HTTP/1.1\" 502"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_listen_address_is_one_line() {
    let w = World::new().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = w
        .run_with_key(&[
            "proxy",
            "--target",
            w.app.url().as_str(),
            "--listen",
            &addr,
            "--audience",
            "a",
        ])
        .await;
    assert_eq!(out.code(), 1, "{out:#?}");
    assert!(
        out.error_line()
            .contains(&format!("cannot listen on {addr}")),
        "{out:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_never_reaches_the_proxys_logs_even_at_trace_level() {
    let w = World::new().await;
    let (child, base) = start(
        &w,
        w.app.url().as_str(),
        &["--audience", w.audience(), "-vvv"],
    )
    .await;
    let echo: serde_json::Value = reqwest::get(format!("{base}/quiet"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwt = echo["headers"]["authorization"]
        .as_str()
        .expect("the app saw the token")
        .trim_start_matches("Bearer ");
    let signature = jwt.rsplit('.').next().unwrap().to_owned();
    let stderr = common::stop_proxy(child).await;
    assert!(
        stderr.contains("TRACE") || stderr.contains("DEBUG"),
        "trace logging was on"
    );
    assert!(
        !stderr.contains(&signature),
        "the token's signature appeared in the logs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_lets_a_request_in_flight_finish() {
    common::within("the request in flight", async {
        use tokio::io::AsyncWriteExt as _;
        // The upstream is the test itself, so it decides when the answer comes.
        let (_w, mut child, base, upstream) = start_before_the_test().await;
        let mut stderr = common::stderr_lines(child.stderr.take().unwrap());

        let request = tokio::spawn(async move {
            let resp = reqwest::get(format!("{base}/slow"))
                .await
                .expect("answer despite Ctrl-C");
            (resp.status(), resp.text().await.unwrap())
        });
        let (mut conn, _) = upstream.accept().await.unwrap();
        let mut head = Vec::new();
        read_until(&mut conn, &mut head, b"\r\n\r\n").await;
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(head.starts_with("get /slow http/1.1"), "{head}");
        assert!(head.contains("authorization: bearer "), "{head}");

        interrupt(child.id().unwrap());
        wait_for_line(&mut stderr, |l| {
            l.contains("stopping: no new connections").then_some(())
        })
        .await;
        conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\ndone")
            .await
            .unwrap();
        drop(conn);

        let (status, body) = request.await.unwrap();
        assert_eq!((status.as_u16(), body.as_str()), (200, "done"));
        let status = tokio::time::timeout(common::COMMAND_TIMEOUT, child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_right_after_the_listening_line_stops_cleanly() {
    let w = World::new().await;
    let (child, _) = start(&w, w.app.url().as_str(), &["--audience", w.audience()]).await;
    common::stop_proxy(child).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_stream_both_ways_without_buffering() {
    common::within("streaming through the proxy", async {
        use tokio::io::AsyncWriteExt as _;
        // The upstream is the test itself, so it sees exactly when bytes arrive.
        let (_w, child, base, upstream) = start_before_the_test().await;

        // Upload: the second half is only sent once the upstream has the first.
        let (more_tx, more_rx) = tokio::sync::oneshot::channel::<()>();
        let body = futures_util::stream::unfold((0, Some(more_rx)), |(step, more)| async move {
            match step {
                0 => Some((
                    Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"first-half;")),
                    (1, more),
                )),
                1 => {
                    more?.await.ok()?;
                    Some((Ok(bytes::Bytes::from_static(b"second-half")), (2, None)))
                }
                _ => None,
            }
        });
        let client = tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{base}/stream"))
                .body(reqwest::Body::wrap_stream(body))
                .send()
                .await
                .expect("response head")
        });

        let (mut conn, _) = upstream.accept().await.unwrap();
        let mut seen = Vec::new();
        read_until(&mut conn, &mut seen, b"first-half;").await;
        more_tx.send(()).unwrap();
        read_until(&mut conn, &mut seen, b"second-half").await;
        read_until(&mut conn, &mut seen, b"0\r\n\r\n").await;

        // Download: the client reads the first chunk before the rest exists.
        conn.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n6\r\nhello \r\n")
            .await
            .unwrap();
        let mut resp = client.await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.chunk().await.unwrap().unwrap(), "hello ");
        conn.write_all(b"5\r\nworld\r\n0\r\n\r\n").await.unwrap();
        assert_eq!(resp.chunk().await.unwrap().unwrap(), "world");
        assert!(resp.chunk().await.unwrap().is_none());
        common::stop_proxy(child).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_apps_own_401s_mint_no_extra_token() {
    let w = World::new().await;
    let (child, base) = start(&w, w.app.url().as_str(), &["--audience", w.audience()]).await;
    let client = reqwest::Client::new();
    for _ in 0..10 {
        let resp = client
            .get(format!("{base}/status/401"))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 401);
    }
    assert_eq!(w.tokens_minted(), 1, "10 app 401s cost one token, not 19");
    assert_eq!(
        w.emu.counter(iap_emulator::counter::APP_HITS, w.audience()),
        10,
        "none retried"
    );
    common::stop_proxy(child).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_whose_token_iap_refused_is_sent_again_with_its_body() {
    let w = World::new().await;
    let (child, base) = start(&w, w.app.url().as_str(), &["--audience", w.audience()]).await;
    let client = reqwest::Client::new();
    revoke_the_proxys_token(&w, &client, &base).await;

    let resp = client
        .post(format!("{base}/upload"))
        .body("a small POST body")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "retried with a fresh token");
    let echo: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(echo["body_len"], 17, "the retry carried the whole body");
    assert_eq!(w.emu.gate_401s(&w.app), 1);
    assert_eq!(w.tokens_minted(), 2, "exactly one extra token");

    common::stop_proxy(child).await;
}

/// Sends one GET through the proxy at `base` and revokes the token the app
/// saw there (the one the proxy has cached; `Authorization` goes through),
/// as if revoked at Google.
async fn revoke_the_proxys_token(w: &World, client: &reqwest::Client, base: &str) {
    let echo = json_answer(client.get(format!("{base}/first"))).await;
    let sent = echo["headers"]["authorization"].as_str().expect("a token");
    w.emu
        .revoke(sent.strip_prefix("Bearer ").expect("a bearer token"));
}

/// A chunked request body (no `Content-Length`): `chunks` chunks of
/// `chunk_len` bytes, each handed over only when the previous one was taken.
fn chunked(chunk_len: usize, chunks: usize) -> reqwest::Body {
    let body = futures_util::stream::iter(0..chunks).then(move |i| async move {
        // Hand control back between chunks, so the body really streams.
        tokio::task::yield_now().await;
        Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'a' + (i % 26) as u8; chunk_len]))
    });
    reqwest::Body::wrap_stream(body)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunked_post_whose_token_iap_refused_is_sent_again_whole() {
    let w = World::new().await;
    let (child, base) = start(&w, w.app.url().as_str(), &["--audience", w.audience()]).await;
    let client = reqwest::Client::new();
    revoke_the_proxys_token(&w, &client, &base).await;
    let hits_before = w.emu.app_hits(&w.app);

    let resp = client
        .post(format!("{base}/upload"))
        .body(chunked(1000, 8))
        .send()
        .await
        .unwrap();

    assert_eq!(resp.status(), 200, "refreshed and sent again");
    let echo: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body_len"], 8000, "the recorded body, whole");
    assert_eq!(w.emu.gate_401s(&w.app), 1, "one refusal");
    assert_eq!(w.emu.app_hits(&w.app) - hits_before, 1, "one app hit");
    assert_eq!(w.tokens_minted(), 2, "exactly one extra token");
    common::stop_proxy(child).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunked_post_over_the_replay_limit_gets_iaps_own_401_not_a_502() {
    let w = World::new().await;
    let (child, base) = start(&w, w.app.url().as_str(), &["--audience", w.audience()]).await;
    let client = reqwest::Client::new();
    revoke_the_proxys_token(&w, &client, &base).await;
    let hits_before = w.emu.app_hits(&w.app);

    // 256 KiB: more than the 64 KiB a retry may keep, less than the 1 MiB
    // the gate reads before it answers. Then 2.5 MiB: the gate answers after
    // 1 MiB and closes the connection while the proxy is still sending.
    for (round, chunks) in [(1, 16), (2, 160)] {
        let resp = client
            .post(format!("{base}/upload"))
            .body(chunked(16 * 1024, chunks))
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}: no answer: {e}"));
        let (status, generated, closes) = (
            resp.status(),
            resp.headers().get("x-goog-iap-generated-response").cloned(),
            resp.headers()
                .get("connection")
                .is_some_and(|c| c == "close"),
        );
        let text = resp.text().await.unwrap();
        assert_eq!(status, 401, "round {round}: IAP's refusal, as is: {text}");
        assert_eq!(generated.unwrap(), "true", "round {round}");
        if round == 1 {
            assert!(!closes, "the body was read whole: the connection stays");
        }
        assert!(text.contains("revoked"), "round {round}: {text}");
        assert_eq!(w.emu.gate_401s(&w.app), round, "round {round}");
        // The refused token was invalidated: the next request (a GET) gets a
        // fresh one, which is then revoked for the next round.
        revoke_the_proxys_token(&w, &client, &base).await;
    }
    assert_eq!(
        w.emu.app_hits(&w.app) - hits_before,
        2,
        "the app saw only the GETs in between"
    );
    common::stop_proxy(child).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_before_the_upload_ends_reaches_the_client_which_must_not_reuse_the_connection() {
    common::within("the early answer", async {
        use tokio::io::AsyncWriteExt as _;
        // The upstream is the test itself: it answers as soon as it has the
        // request head, and never reads the body.
        let (_w, child, base, upstream) = start_before_the_test().await;
        let upload = tokio::spawn(async move {
            // 8 MiB: more than any socket buffers between here and there.
            let resp = reqwest::Client::new()
                .post(format!("{base}/upload"))
                .body(chunked(16 * 1024, 512))
                .send()
                .await
                .expect("the early answer, not an error");
            let closes = resp.headers().get("connection").cloned();
            (resp.status(), closes, resp.text().await.unwrap())
        });

        let (mut conn, _) = upstream.accept().await.unwrap();
        read_until(&mut conn, &mut Vec::new(), b"\r\n\r\n").await;
        conn.write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\n\r\ntoo long")
            .await
            .unwrap();

        let (status, closes, text) = upload.await.unwrap();
        assert_eq!((status.as_u16(), text.as_str()), (413, "too long"));
        assert_eq!(
            closes.expect("Connection: close"),
            "close",
            "the client is still sending: the proxy will close this connection"
        );
        drop(conn);
        common::stop_proxy(child).await;
    })
    .await;
}
