//! [`Environment`]: where environment variables come from. A leaf: every
//! part of the crate that reads a variable takes one, so tests (and callers
//! with their own configuration) need not touch the process environment.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Where environment variables come from: the process environment, or a
/// lookup of your own.
///
/// Empty values count as unset, as in Google's libraries. `Debug` shows
/// no values.
///
/// ```
/// # use iap_token::adc::Environment;
/// let env = Environment::from_vars([("CLOUDSDK_CONFIG", "/tmp/gcloud")]);
/// assert_eq!(env.var("CLOUDSDK_CONFIG").as_deref(), Some("/tmp/gcloud"));
/// assert_eq!(env.var("HOME"), None);
/// ```
#[derive(Clone, Default)]
pub struct Environment {
    lookup: Option<Lookup>,
}

type Lookup = Arc<dyn Fn(&str) -> Option<OsString> + Send + Sync>;

impl Environment {
    /// The process environment (`std::env::var_os`).
    pub fn process() -> Self {
        Environment { lookup: None }
    }

    /// Variables from `lookup`.
    pub fn from_fn(lookup: impl Fn(&str) -> Option<OsString> + Send + Sync + 'static) -> Self {
        Environment {
            lookup: Some(Arc::new(lookup)),
        }
    }

    /// Exactly these variables, nothing from the process.
    pub fn from_vars<I, K, V>(vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<OsString>,
    {
        let map: std::collections::HashMap<String, OsString> = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Self::from_fn(move |name| map.get(name).cloned())
    }

    /// A variable's value; `None` when unset or empty.
    pub fn var_os(&self, name: &str) -> Option<OsString> {
        let value = match &self.lookup {
            None => std::env::var_os(name),
            Some(lookup) => lookup(name),
        };
        value.filter(|v| !v.is_empty())
    }

    /// A variable's value as UTF-8; `None` when unset, empty or not UTF-8.
    pub fn var(&self, name: &str) -> Option<String> {
        self.var_os(name).and_then(|v| v.into_string().ok())
    }

    pub(crate) fn home(&self) -> Option<PathBuf> {
        let var = if cfg!(windows) { "USERPROFILE" } else { "HOME" };
        match (&self.lookup, self.var_os(var)) {
            (_, Some(home)) => Some(PathBuf::from(home)),
            (None, None) => std::env::home_dir(),
            (Some(_), None) => None,
        }
    }
}

impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.lookup.is_some() {
            "Environment(custom)"
        } else {
            "Environment(process)"
        })
    }
}
