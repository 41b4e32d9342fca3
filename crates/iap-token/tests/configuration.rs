//! Mistakes in what the program was given (an option, a file, a port) are
//! `Error::Config`: matchable, never transient, naming what to fix.

use iap_token::login::DesktopLogin;
use iap_token::{AudiencePattern, Error, RootCertificates};

fn assert_config(err: &Error, names: &[&str]) {
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(err.is_configuration() && !err.is_transient(), "{err:?}");
    let text = err.to_string();
    for name in names {
        assert!(text.contains(name), "{text} does not name {name}");
    }
}

#[test]
fn a_bad_audience_pattern_is_a_configuration_mistake_naming_it() {
    for (text, why) in [
        ("not a url", "not a URL"),
        ("ftp://app.example.com/*", "http(s)"),
        ("https://app.example.com/*?x=1", "query"),
        ("https://app.example.com/a*", "https://HOST/PREFIX/*"),
    ] {
        let err = AudiencePattern::parse(text).unwrap_err();
        assert_config(&err, &[text, why]);
    }
    assert!(AudiencePattern::parse("https://app.example.com/api/*").is_ok());
}

#[test]
fn a_missing_ca_file_is_a_configuration_mistake_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corp-ca.pem");

    let err = RootCertificates::from_pem_file(&path).unwrap_err();

    assert_config(&err, &["corp-ca.pem", "--cacert"]);
}

#[test]
fn a_ca_file_without_certificates_is_a_configuration_mistake_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.pem");
    std::fs::write(&path, "just some text\n").unwrap();

    let err = RootCertificates::from_pem_file(&path).unwrap_err();

    assert_config(&err, &["notes.pem", "BEGIN CERTIFICATE"]);
    let err = RootCertificates::from_pem("").unwrap_err();
    assert_config(&err, &["no certificate"]);
}

#[test]
fn a_login_port_already_taken_is_a_configuration_mistake_naming_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();

    let err = DesktopLogin::new("client.apps.googleusercontent.com", "secret")
        .port(port)
        .start()
        .unwrap_err();

    assert_config(&err, &[&format!("127.0.0.1:{port}"), "another port"]);
    // Port 0 (any free port) still works beside it.
    assert!(
        DesktopLogin::new("client.apps.googleusercontent.com", "secret")
            .start()
            .is_ok()
    );
}
