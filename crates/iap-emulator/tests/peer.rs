//! Google's own Python client (google-auth) against the standalone binary:
//! `tests/peer/peer_check.py` at the workspace root, run as part of
//! `cargo test`. It needs python3 with the packages in
//! `tests/peer/requirements.txt`.

use std::path::{Path, PathBuf};
use std::process::Command;

const INSTALL: &str = "python3 -m pip install -r tests/peer/requirements.txt";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/iap-emulator sits two levels below the workspace root")
        .to_path_buf()
}

/// Fails the test, saying what to install, when python3 or google-auth is missing.
fn require_google_auth(root: &Path) {
    let probe = Command::new("python3")
        .args(["-c", "import google.auth, requests, jwt, cryptography"])
        .current_dir(root)
        .output();
    match probe {
        Err(e) => panic!(
            "the peer check needs python3 ({e}): install Python 3, then run `{INSTALL}` in {}",
            root.display()
        ),
        Ok(out) if !out.status.success() => panic!(
            "the peer check needs google-auth, requests, PyJWT and cryptography ({}): run `{INSTALL}` in {}",
            String::from_utf8_lossy(&out.stderr).trim(),
            root.display()
        ),
        Ok(_) => {}
    }
}

#[test]
fn google_auth_python_client_works_against_the_standalone_emulator() {
    let root = workspace_root();
    require_google_auth(&root);
    let script = root.join("tests/peer/peer_check.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_iap-emulator"))
        .current_dir(&root)
        .output()
        .expect("python3 runs (checked above)");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "{} failed with {}; its output is above",
        script.display(),
        out.status
    );
}
