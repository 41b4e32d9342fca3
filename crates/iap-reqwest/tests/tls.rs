//! `IapMiddleware` over https: a reqwest client trusting the emulator's CA
//! through `RootCertificates::add_to` calls an https app (HTTP/2 by ALPN);
//! a client trusting another CA is refused with a certificate error.

use iap_emulator::Emulator;
use iap_reqwest::IapMiddleware;
use iap_token::source::metadata::MetadataSource;
use iap_token::{IapAuth, RootCertificates};
use reqwest_middleware::ClientBuilder;

fn auth_for(emu: &Emulator) -> IapAuth {
    let app = emu.app();
    IapAuth::builder()
        .source(MetadataSource::with_host(&emu.metadata_host()).unwrap())
        .audience(app.client_id())
        .allow_origin(app.url().origin().ascii_serialization())
        .build()
        .unwrap()
}

fn client(emu: &Emulator, roots: &RootCertificates) -> reqwest_middleware::ClientWithMiddleware {
    let http = roots.add_to(reqwest::Client::builder()).build().unwrap();
    ClientBuilder::new(http)
        .with(IapMiddleware::new(auth_for(emu)))
        .build()
}

#[tokio::test]
async fn an_https_app_with_the_emulators_ca() {
    let emu = Emulator::builder().tls().start().await.unwrap();
    let app = emu.app();
    let roots = RootCertificates::from_pem(emu.ca_pem().unwrap()).unwrap();
    let answer = client(&emu, &roots)
        .get(app.url().join("/reqwest").unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.version(), reqwest::Version::HTTP_2);
    let echo: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(echo["path"], "/reqwest");
    assert_eq!(emu.app_hits(&app), 1);
}

#[tokio::test]
async fn another_ca_is_refused_naming_the_certificate() {
    let emu = Emulator::builder().tls().start().await.unwrap();
    let other = Emulator::builder()
        .tls()
        .without_default_app()
        .start()
        .await
        .unwrap();
    let roots = RootCertificates::from_pem(other.ca_pem().unwrap()).unwrap();
    let err = client(&emu, &roots)
        .get(emu.app().url().clone())
        .send()
        .await
        .unwrap_err();
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(e) = source {
        chain.push_str(&format!(": {e}"));
        source = e.source();
    }
    assert!(chain.contains("certificate"), "{chain}");
    assert_eq!(emu.app_hits(&emu.app()), 0);
}

#[test]
fn a_file_without_certificates_is_refused_naming_it() {
    let dir = std::env::temp_dir().join(format!("iap-roots-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("empty.pem");
    std::fs::write(&path, "not a certificate\n").unwrap();
    let err = RootCertificates::from_pem_file(&path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("empty.pem") && err.contains("no certificate"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
