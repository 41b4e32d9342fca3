//! The config folder, where `iap login` keeps the user's credentials.
//!
//! `$IAP_CONFIG_DIR`, else `$XDG_CONFIG_HOME/iap`, else `~/.config/iap`
//! (`%APPDATA%\iap` on Windows). The credentials are an `authorized_user`
//! JSON file (the same format as gcloud's ADC file), written atomically with
//! mode 0600 by `iap_token`'s `AuthorizedUser::save`.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::failure::{CliResult, Failure};

/// The name of the saved credentials file inside the config folder.
pub const CREDENTIALS_FILE: &str = "credentials.json";

/// The config folder, from the environment (see the module docs).
pub fn config_dir() -> CliResult<PathBuf> {
    resolve(|name| std::env::var_os(name))
}

fn resolve(var: impl Fn(&str) -> Option<OsString>) -> CliResult<PathBuf> {
    let set = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set("IAP_CONFIG_DIR") {
        return Ok(dir);
    }
    if let Some(dir) = set("XDG_CONFIG_HOME") {
        return Ok(dir.join("iap"));
    }
    if cfg!(windows) {
        if let Some(dir) = set("APPDATA") {
            return Ok(dir.join("iap"));
        }
    } else if let Some(home) = set("HOME") {
        return Ok(home.join(".config").join("iap"));
    }
    Err(Failure::new(
        "cannot find a config folder: set IAP_CONFIG_DIR (or HOME / XDG_CONFIG_HOME) to a folder iap may write to",
    ))
}

/// Where `iap login` saves the credentials.
pub fn credentials_path() -> CliResult<PathBuf> {
    Ok(config_dir()?.join(CREDENTIALS_FILE))
}

/// The saved credentials file, if there is one.
pub fn saved_credentials() -> Option<PathBuf> {
    credentials_path().ok().filter(|p| p.is_file())
}

/// Removes the saved credentials; `Ok(false)` when there were none.
pub fn remove_credentials() -> CliResult<(bool, PathBuf)> {
    let path = credentials_path()?;
    match std::fs::remove_file(&path) {
        Ok(()) => Ok((true, path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((false, path)),
        Err(e) => Err(Failure::new(format!(
            "cannot remove {}: {e}",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn iap_config_dir_wins_over_xdg_and_home() {
        let dir = resolve(env(&[
            ("IAP_CONFIG_DIR", "/a"),
            ("XDG_CONFIG_HOME", "/b"),
            ("HOME", "/c"),
        ]))
        .unwrap();
        assert_eq!(dir, PathBuf::from("/a"));
    }

    #[cfg(unix)]
    #[test]
    fn xdg_then_home() {
        assert_eq!(
            resolve(env(&[("XDG_CONFIG_HOME", "/b"), ("HOME", "/c")])).unwrap(),
            PathBuf::from("/b/iap")
        );
        assert_eq!(
            resolve(env(&[("HOME", "/c"), ("IAP_CONFIG_DIR", "")])).unwrap(),
            PathBuf::from("/c/.config/iap")
        );
        assert!(resolve(env(&[])).is_err());
    }
}
