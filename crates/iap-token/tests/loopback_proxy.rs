//! With a proxy configured in the environment, the default transport still
//! reaches loopback endpoints (a local emulator, `iap proxy`) directly,
//! while remote hosts go through the proxy.
//!
//! The only test of its binary: it sets `HTTP(S)_PROXY` for the whole
//! process, which no other test may see.

mod common;

use iap_emulator::{Emulator, Endpoint};
use iap_token::source::authorized_user::{AuthorizedUser, AuthorizedUserSource};
use iap_token::{Audience, Error, TokenSource};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

/// A "proxy" that reports the first line of every connection and then hangs up.
async fn recording_proxy() -> (String, mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (seen, lines) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let mut line = String::new();
            let _ = BufReader::new(stream).read_line(&mut line).await;
            let _ = seen.send(line.trim_end().to_string());
        }
    });
    (url, lines)
}

#[tokio::test]
async fn loopback_endpoints_bypass_the_environments_proxy_and_remote_hosts_use_it() {
    let (proxy, mut proxied) = recording_proxy().await;
    // SAFETY: the only test of this binary, before any client is built;
    // nothing else reads the environment concurrently.
    unsafe {
        for var in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
        ] {
            std::env::set_var(var, &proxy);
        }
        std::env::remove_var("NO_PROXY");
        std::env::remove_var("no_proxy");
    }
    let emu = Emulator::start().await.unwrap();
    let sa = emu.create_service_account("proxy-test").await.unwrap();
    let source = common::key_source(&sa);

    // The emulator's token endpoint is on 127.0.0.1: reached directly.
    let token = source.id_token(&Audience::new("aud")).await.unwrap();
    assert_eq!(token.claims().aud.as_deref(), Some("aud"));
    assert_eq!(emu.requests(Endpoint::Token), 1);

    // The same default transport sends a remote host to the proxy, so the
    // proxy setting is really in effect in this process.
    let remote = url::Url::parse("https://iap-rs-proxy-test.invalid/token").unwrap();
    let user =
        AuthorizedUser::new("client-id", "client-secret", "refresh-token").with_token_uri(remote);
    let err = AuthorizedUserSource::new(user)
        .id_token(&Audience::new("aud"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    let first = proxied.recv().await.unwrap();
    assert!(
        first.starts_with("CONNECT iap-rs-proxy-test.invalid:443"),
        "{first}"
    );
    assert!(
        proxied.try_recv().is_err(),
        "only the remote request went through the proxy"
    );
}
