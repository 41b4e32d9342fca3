//! The config folder, where `iap login` keeps the user's credentials.
//!
//! `$IAP_CONFIG_DIR`, else `$XDG_CONFIG_HOME/iap`, else `~/.config/iap`
//! (`%APPDATA%\iap` on Windows). The credentials are an `authorized_user`
//! JSON file (the same format as gcloud's ADC file), written atomically with
//! mode 0600.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};

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

/// Writes `contents` to `path` atomically (a temporary file in the same
/// folder, then a rename) with mode 0600, creating the folder (0700).
pub fn write_secret_file(path: &Path, contents: &[u8]) -> CliResult {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let failed = |what: &str, e: std::io::Error| Failure::new(format!("cannot {what} {}: {e}", dir.display()));
    create_private_dir(dir).map_err(|e| failed("create the folder", e))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("credentials");
    let tmp = dir.join(format!(".{name}.{}.{}.tmp", std::process::id(), unique_suffix()));
    let result = (|| {
        let mut file = private_file(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Failure::new(format!("cannot write {}: {e}", path.display())));
    }
    Ok(())
}

/// Removes the saved credentials; `Ok(false)` when there were none.
pub fn remove_credentials() -> CliResult<(bool, PathBuf)> {
    let path = credentials_path()?;
    match std::fs::remove_file(&path) {
        Ok(()) => Ok((true, path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((false, path)),
        Err(e) => Err(Failure::new(format!("cannot remove {}: {e}", path.display()))),
    }
}

fn unique_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}

#[cfg(not(unix))]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().write(true).create_new(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| OsString::from(v))
    }

    #[test]
    fn iap_config_dir_wins_over_xdg_and_home() {
        let dir = resolve(env(&[("IAP_CONFIG_DIR", "/a"), ("XDG_CONFIG_HOME", "/b"), ("HOME", "/c")])).unwrap();
        assert_eq!(dir, PathBuf::from("/a"));
    }

    #[cfg(unix)]
    #[test]
    fn xdg_then_home() {
        assert_eq!(resolve(env(&[("XDG_CONFIG_HOME", "/b"), ("HOME", "/c")])).unwrap(), PathBuf::from("/b/iap"));
        assert_eq!(resolve(env(&[("HOME", "/c"), ("IAP_CONFIG_DIR", "")])).unwrap(), PathBuf::from("/c/.config/iap"));
        assert!(resolve(env(&[])).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn secret_files_are_0600_and_replace_atomically() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("credentials.json");
        write_secret_file(&path, b"one").unwrap();
        write_secret_file(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary files left behind");
    }
}
