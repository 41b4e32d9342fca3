//! Python's `websockets` client through `iap proxy` to `iap emulator`'s
//! WebSocket echo: `tests/peer/ws_peer_check.py` at the workspace root. It
//! needs python3 with the packages in `tests/peer/requirements.txt`.

use std::path::{Path, PathBuf};
use std::process::Command;

const INSTALL: &str = "python3 -m pip install -r tests/peer/requirements.txt";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/iap-cli sits two levels below the workspace root")
        .to_path_buf()
}

#[test]
fn python_websockets_through_iap_proxy() {
    let root = workspace_root();
    let probe = Command::new("python3")
        .args(["-c", "import websockets"])
        .output();
    match probe {
        Err(e) => panic!("the peer check needs python3 ({e}); then run `{INSTALL}`"),
        Ok(out) if !out.status.success() => panic!(
            "the peer check needs websockets ({}): run `{INSTALL}` in {}",
            String::from_utf8_lossy(&out.stderr).trim(),
            root.display()
        ),
        Ok(_) => {}
    }
    let script = root.join("tests/peer/ws_peer_check.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_iap"))
        .current_dir(&root)
        .output()
        .expect("python3 runs (checked above)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        out.status
    );
    assert!(stdout.contains("websockets peer check: ok"), "{stdout}");
    // The proxy logged one line per socket: 2 + 20.
    let sockets = stderr
        .lines()
        .filter(|l| l.contains(" websocket /ws "))
        .count();
    assert_eq!(sockets, 22, "{stderr}");
}
