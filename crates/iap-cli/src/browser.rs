//! Opening a URL in the user's browser without a dependency: spawn
//! `$BROWSER` (a `:`-separated list of commands, as Python's `webbrowser`
//! and `xdg-open` read it) or else the platform's opener, and do not wait
//! for it. Failure is not an error: the caller always prints the URL too.

use std::process::{Command, Stdio};

/// Tries to open `url` in the default browser; `true` when an opener started.
pub fn open(url: &str) -> bool {
    if let Some(browsers) = std::env::var_os("BROWSER").filter(|b| !b.is_empty()) {
        let browsers = browsers.to_string_lossy().into_owned();
        return browsers
            .split(':')
            .filter(|b| !b.trim().is_empty())
            .any(|b| {
                let mut cmd = Command::new(b.trim());
                cmd.arg(url);
                spawn(cmd)
            });
    }
    let cmd = if cfg!(target_os = "macos") {
        let mut c = Command::new("open");
        c.arg(url);
        c
    } else if cfg!(windows) {
        // `start` is a cmd built-in; the empty string is the window title.
        let mut c = Command::new("cmd");
        c.args(["/C", "start", ""]).arg(url.replace('&', "^&"));
        c
    } else {
        let mut c = Command::new("xdg-open");
        c.arg(url);
        c
    };
    spawn(cmd)
}

fn spawn(mut cmd: Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match cmd.spawn() {
        Ok(mut child) => {
            // Reap it in the background so it does not linger as a zombie.
            std::thread::spawn(move || child.wait());
            true
        }
        Err(_) => false,
    }
}
