//! What every end-to-end test of the `iap` binary needs: a sandboxed
//! environment (its own HOME, config folders, no metadata server, no proxy
//! settings, nothing from the developer's shell) and an emulator.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use iap_emulator::{App, Emulator, ServiceAccount};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

/// The longest any single command may take before a test gives up on it.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A temporary HOME with its own config folders and no credentials.
pub struct Sandbox {
    pub dir: TempDir,
    /// `host:port` where no metadata server answers.
    pub no_metadata: String,
    /// Extra variables for every command.
    pub vars: Vec<(String, String)>,
}

/// What a finished command left.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    /// The stderr lines starting with `error: `.
    pub fn error_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect()
    }

    /// The one `error: ` line, asserting there is exactly one.
    pub fn error_line(&self) -> &str {
        let lines = self.error_lines();
        assert_eq!(lines.len(), 1, "expected one error line, got: {self:#?}");
        lines[0]
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["home", "config", "gcloud"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        Sandbox {
            dir,
            no_metadata: format!("127.0.0.1:{}", closed_port()),
            vars: Vec::new(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `$IAP_CONFIG_DIR` of every command.
    pub fn config_dir(&self) -> PathBuf {
        self.path("config")
    }

    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.vars.push((name.to_owned(), value.into()));
    }

    /// `iap ARGS` with only the sandbox's environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_iap"));
        cmd.args(args)
            .env_clear()
            .env("HOME", self.path("home"))
            .env("IAP_CONFIG_DIR", self.config_dir())
            .env("CLOUDSDK_CONFIG", self.path("gcloud"))
            .env("GCE_METADATA_HOST", &self.no_metadata)
            .env("GCE_METADATA_IP", &self.no_metadata)
            .env("NO_PROXY", "*")
            // Never open a real browser from a test.
            .env("BROWSER", "/nonexistent/iap-test-browser")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `iap ARGS` to the end.
    pub async fn run(&self, args: &[&str]) -> Output {
        let child = self.command(args).spawn().expect("spawn iap");
        let out = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("iap {args:?} did not finish in {COMMAND_TIMEOUT:?}"))
            .expect("wait");
        Output {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `iap ARGS`, asserting success; its stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(out.status.success(), "iap {args:?} failed: {out:#?}");
        out.stdout
    }
}

/// An emulator, its echo app, and a service account whose key file is in the sandbox.
pub struct World {
    pub emu: Emulator,
    pub app: App,
    pub sa: ServiceAccount,
    pub key_file: PathBuf,
    pub sandbox: Sandbox,
}

impl World {
    pub async fn new() -> World {
        let emu = Emulator::start().await.expect("emulator");
        let app = emu.app();
        let sa = emu
            .create_service_account("cli-test")
            .await
            .expect("service account");
        let sandbox = Sandbox::new();
        let key_file = sandbox.path("key.json");
        sa.write_key_file(&key_file).expect("key file");
        World {
            emu,
            app,
            sa,
            key_file,
            sandbox,
        }
    }

    pub fn key(&self) -> &str {
        self.key_file.to_str().expect("utf-8 path")
    }

    pub fn audience(&self) -> &str {
        self.app.client_id()
    }

    pub fn url(&self, path: &str) -> String {
        self.app.url().join(path).expect("url").to_string()
    }

    /// Runs `iap ARGS --audience AUD --credentials KEY`: a command for the
    /// world's app as its service account.
    pub async fn run_for_app(&self, args: &[&str]) -> Output {
        self.sandbox.run(&self.for_app(args)).await
    }

    /// Like [`run_for_app`](Self::run_for_app), asserting success; its stdout.
    pub async fn ok_for_app(&self, args: &[&str]) -> String {
        self.sandbox.ok(&self.for_app(args)).await
    }

    /// Runs `iap ARGS --credentials KEY`: as the world's service account.
    pub async fn run_with_key(&self, args: &[&str]) -> Output {
        self.sandbox.run(&self.with_key(args)).await
    }

    /// Like [`run_with_key`](Self::run_with_key), asserting success; its stdout.
    pub async fn ok_with_key(&self, args: &[&str]) -> String {
        self.sandbox.ok(&self.with_key(args)).await
    }

    fn for_app<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = args.to_vec();
        all.extend(["--audience", self.audience()]);
        self.with_key(&all)
    }

    fn with_key<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = args.to_vec();
        all.extend(["--credentials", self.key()]);
        all
    }

    /// ID tokens the emulator minted for the app's audience.
    pub fn tokens_minted(&self) -> u64 {
        self.emu.id_tokens_issued(self.audience())
    }
}

/// Sends `request`: its JSON answer, whatever the status (the echo app's
/// account of what it received).
pub async fn json_answer(request: reqwest::RequestBuilder) -> serde_json::Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// Reads lines until one satisfies `pick`, returning what it picked.
pub async fn wait_for_line<R, T>(
    lines: &mut Lines<BufReader<R>>,
    mut pick: impl FnMut(&str) -> Option<T>,
) -> T
where
    R: tokio::io::AsyncRead + Unpin,
{
    let mut seen = Vec::new();
    let read = async {
        while let Some(line) = lines.next_line().await.expect("read line") {
            if let Some(found) = pick(&line) {
                return Some(found);
            }
            seen.push(line);
        }
        None
    };
    match tokio::time::timeout(COMMAND_TIMEOUT, read).await {
        Ok(Some(found)) => found,
        Ok(None) => panic!("the stream ended before the expected line; saw: {seen:#?}"),
        Err(_) => panic!("no expected line within {COMMAND_TIMEOUT:?}; saw: {seen:#?}"),
    }
}

pub fn stdout_lines(out: ChildStdout) -> Lines<BufReader<ChildStdout>> {
    BufReader::new(out).lines()
}

pub fn stderr_lines(err: ChildStderr) -> Lines<BufReader<ChildStderr>> {
    BufReader::new(err).lines()
}

/// Sends SIGINT (Ctrl-C) to a child.
#[cfg(unix)]
pub fn interrupt(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Decodes a JWT's claims without verifying it.
pub fn claims(jwt: &str) -> serde_json::Value {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

pub fn file_mode(path: &Path) -> u32 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        0o600
    }
}

/// Runs `fut`, failing the test instead of hanging when it stalls.
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(COMMAND_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {COMMAND_TIMEOUT:?}"))
}

/// Starts `iap ARGS` (a proxy) in `sandbox` and waits for its "listening
/// on" line; the child and the proxy's `host:port`.
pub async fn start_proxy(sandbox: &Sandbox, args: &[&str]) -> (Child, String) {
    let mut child = sandbox.command(args).spawn().expect("spawn iap proxy");
    let mut out = stdout_lines(child.stdout.take().expect("stdout"));
    let addr = wait_for_line(&mut out, |l| {
        l.strip_prefix("listening on http://")
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
    })
    .await;
    (child, addr)
}

/// Stops a proxy with Ctrl-C and checks it stopped cleanly; its stderr.
pub async fn stop_proxy(child: Child) -> String {
    interrupt(child.id().expect("running"));
    let out = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .expect("the proxy stops on Ctrl-C")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "exit status {:?}: {stderr}",
        out.status
    );
    assert!(stderr.contains("proxy stopped"), "{stderr}");
    stderr
}
