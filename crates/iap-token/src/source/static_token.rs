//! Tokens obtained elsewhere (by a mobile app, a CI step, another tool):
//! from a string, an environment variable, or a file that is re-read when
//! it changes.
//!
//! This source does not mint tokens, so it cannot honour the audience it is
//! asked for: the audience is **not checked** (IAP will refuse a token for
//! another app). The expiry is the token's `exp`; an expired token is an
//! error asking for a fresh one.
//!
//! The file is looked at on every fetch (its modification time and length,
//! no background watcher): a cache that refreshes ahead of expiry, or after
//! a 401, picks up a token that another process wrote in the meantime.
//!
//! ```
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let emu = iap_emulator::Emulator::start().await?;
//! # let dir = tempfile::tempdir()?;
//! # let token_file = dir.path().join("iap-token");
//! # std::fs::write(&token_file, emu.mint_id_token("123-abc.apps.googleusercontent.com", "ci@example.com"))?;
//! use iap_token::{Audience, TokenSource, source::static_token::StaticTokenSource};
//!
//! let source = StaticTokenSource::from_file(&token_file); // e.g. "/run/secrets/iap-token"
//! let token = source.id_token(&Audience::new("ignored")).await?;
//! assert_eq!(token.claims().aud.as_deref(), Some("123-abc.apps.googleusercontent.com"));
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::environment::Environment;
use crate::source::{BoxFuture, TokenSource};
use crate::{Audience, Error, IdToken, Result};

/// A token from a string, an env var or a file. See the [module docs](self).
#[derive(Debug)]
pub struct StaticTokenSource {
    from: From,
}

#[derive(Debug)]
enum From {
    Fixed(IdToken),
    Env {
        name: String,
        env: Environment,
    },
    File {
        path: PathBuf,
        last: Mutex<Option<Seen>>,
    },
}

/// What the file looked like when it was last read.
#[derive(Debug)]
struct Seen {
    modified: Option<SystemTime>,
    len: u64,
    token: IdToken,
}

impl StaticTokenSource {
    /// This very token (a compact JWT). Fails when it is malformed.
    pub fn new(jwt: impl Into<String>) -> Result<Self> {
        Ok(StaticTokenSource {
            from: From::Fixed(IdToken::parse(jwt)?),
        })
    }

    /// The token in the process environment variable `name`, read at each fetch.
    pub fn from_env_var(name: impl Into<String>) -> Self {
        Self::from_env_var_in(name, Environment::process())
    }

    /// The token in variable `name` of `env`, read at each fetch.
    pub fn from_env_var_in(name: impl Into<String>, env: Environment) -> Self {
        StaticTokenSource {
            from: From::Env {
                name: name.into(),
                env,
            },
        }
    }

    /// The token in the file at `path` (surrounding whitespace ignored),
    /// re-read whenever its modification time or length changes.
    pub fn from_file(path: impl Into<PathBuf>) -> Self {
        StaticTokenSource {
            from: From::File {
                path: path.into(),
                last: Mutex::new(None),
            },
        }
    }

    /// The current token.
    pub async fn fetch(&self) -> Result<IdToken> {
        let token = match &self.from {
            From::Fixed(token) => token.clone(),
            From::Env { name, env } => {
                let value = env.var(name).ok_or_else(|| Error::EnvVar {
                    name: name.clone(),
                    problem: "is not set (or not UTF-8): put an ID token in it".into(),
                })?;
                IdToken::parse(value).map_err(|e| Error::EnvVar {
                    name: name.clone(),
                    problem: format!("does not hold a usable ID token ({e})"),
                })?
            }
            From::File { path, last } => read_file(path, last).await?,
        };
        if token.remaining(SystemTime::now()).is_zero() {
            return Err(Error::InvalidCredentials {
                path: match &self.from {
                    From::File { path, .. } => Some(path.clone()),
                    _ => None,
                },
                field: "exp".into(),
                problem: format!(
                    "is in the past: the token expired (or this system's clock is wrong: clock skew); {}",
                    self.what_to_do()
                ),
            });
        }
        Ok(token)
    }

    fn what_to_do(&self) -> String {
        match &self.from {
            From::Fixed(_) => "supply a fresh one".into(),
            From::Env { name, .. } => format!("put a fresh one in {name}"),
            From::File { path, .. } => format!("write a fresh one to {}", path.display()),
        }
    }
}

async fn read_file(path: &Path, last: &Mutex<Option<Seen>>) -> Result<IdToken> {
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|source| Error::ReadFile {
            path: path.into(),
            source: std::sync::Arc::new(source),
        })?;
    let (modified, len) = (meta.modified().ok(), meta.len());
    if let Some(seen) = lock(last).as_ref()
        && seen.modified == modified
        && seen.len == len
    {
        return Ok(seen.token.clone());
    }
    let text = crate::credentials_json::read_text_file(path)?;
    let token = IdToken::parse(text).map_err(|e| Error::InvalidCredentials {
        path: Some(path.into()),
        field: String::new(),
        problem: format!("does not hold a usable ID token ({e})"),
    })?;
    tracing::debug!(path = %path.display(), "read a new token from the file");
    // The metadata read before the contents: a write in between makes the
    // next fetch read again, never keep a stale token.
    *lock(last) = Some(Seen {
        modified,
        len,
        token: token.clone(),
    });
    Ok(token)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl TokenSource for StaticTokenSource {
    /// Returns the token whatever `audience` is: it is not checked.
    fn id_token<'a>(&'a self, _audience: &'a Audience) -> BoxFuture<'a, Result<IdToken>> {
        Box::pin(self.fetch())
    }
}
