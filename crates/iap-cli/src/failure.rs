//! How a command fails: one line on stderr naming the cause and what to do,
//! and an exit code (1, or curl's 22 for `iap curl -f`).
//!
//! Library errors already say what went wrong and usually what to do; this
//! module flattens their source chain into the same line (keeping only the
//! innermost cause, which is the informative one for network errors) and adds
//! a hint where the library's message has none.

use std::error::Error as StdError;
use std::fmt;
use std::process::ExitCode;

/// A command's failure: the message printed after `error: ` and the exit code.
#[derive(Debug)]
pub struct Failure {
    message: String,
    code: u8,
}

/// Shorthand for a command's result.
pub type CliResult<T = ()> = Result<T, Failure>;

impl Failure {
    /// A failure with exit code 1.
    pub fn new(message: impl Into<String>) -> Self {
        Failure {
            message: one_line(&message.into()),
            code: 1,
        }
    }

    /// The same failure with another exit code.
    pub fn with_code(mut self, code: u8) -> Self {
        self.code = code;
        self
    }

    /// Prefixes the message with what we were doing (`reading FILE: ...`).
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }

    /// The exit code.
    #[cfg(test)]
    pub fn code(&self) -> u8 {
        self.code
    }

    /// Prints the line on stderr and returns the exit code.
    pub fn report(&self) -> ExitCode {
        eprintln!("error: {}", self.message);
        ExitCode::from(self.code)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<iap_token::Error> for Failure {
    fn from(err: iap_token::Error) -> Self {
        Failure::from_token_error(&err)
    }
}

impl Failure {
    /// The failure for a library error: its message, innermost cause and a hint.
    pub fn from_token_error(err: &iap_token::Error) -> Self {
        let mut message = describe(err);
        if let Some(hint) = hint_for(err) {
            message.push_str(": ");
            message.push_str(hint);
        }
        Failure::new(message)
    }
}

impl From<std::io::Error> for Failure {
    fn from(err: std::io::Error) -> Self {
        Failure::new(describe(&err))
    }
}

/// What to do about errors whose library message says only what happened.
fn hint_for(err: &iap_token::Error) -> Option<&'static str> {
    use iap_token::Error as E;
    match err {
        E::Transport { .. } => Some(
            "check that the endpoint is up and reachable (network, proxy settings, URL), then try again",
        ),
        E::Endpoint {
            status, hint: None, ..
        } if *status >= 500 => Some("the endpoint is having trouble; try again in a moment"),
        E::Endpoint {
            status: 400 | 401 | 403,
            hint: None,
            ..
        } => Some("check the credentials, the audience and the account's permissions"),
        E::ReadFile { .. } => Some("check the path and the file's permissions"),
        E::InvalidCredentials { .. } => Some(
            "fix the file, or download a fresh one (a service-account key, or `gcloud auth application-default login`)",
        ),
        E::Protocol { .. } => Some("check that the URL points at the right service"),
        E::MalformedToken(_) => Some("the token source returned something that is not an ID token"),
        _ => None,
    }
}

/// The error's message followed by its innermost cause, when that adds
/// something (`request to X failed: Connection refused (os error 111)`).
pub fn describe(err: &(dyn StdError + 'static)) -> String {
    let top = err.to_string();
    let mut innermost = None;
    let mut cause = err.source();
    while let Some(c) = cause {
        innermost = Some(c);
        cause = c.source();
    }
    match innermost.map(|c| c.to_string()) {
        Some(inner) if !inner.is_empty() && !top.contains(&inner) => {
            one_line(&format!("{top}: {inner}"))
        }
        _ => one_line(&top),
    }
}

/// Collapses whitespace runs (newlines included) so a message stays one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line() {
        let f = Failure::new("bad\nthing  happened\n");
        assert_eq!(f.to_string(), "bad thing happened");
        assert_eq!(f.code(), 1);
    }

    #[test]
    fn transport_errors_keep_the_innermost_cause_and_a_hint() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let err = iap_token::Error::Transport {
            endpoint: "http://127.0.0.1:9/token".into(),
            source: std::sync::Arc::new(io),
        };
        let f = Failure::from(err);
        let msg = f.to_string();
        assert!(
            msg.starts_with(
                "request to http://127.0.0.1:9/token failed: Connection refused: check"
            ),
            "{msg}"
        );
    }
}
