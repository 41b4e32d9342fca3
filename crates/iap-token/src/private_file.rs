//! Writing secret files (refresh tokens, user credentials): atomically and
//! readable by the owner only. A leaf.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use crate::{Error, Result};

/// Writes `contents` to `path` so that `path` is always either the old file
/// or the complete new one, readable by the owner only (mode 0600 on Unix):
/// a temporary file in the same folder is written, flushed to disk and
/// renamed over `path`. Missing parent folders are created (mode 0700).
pub(crate) fn write_private_file(path: &Path, contents: &[u8]) -> Result<()> {
    let write_err = |source| Error::WriteFile {
        path: path.into(),
        source: Arc::new(source),
    };
    let file_name = path.file_name().ok_or_else(|| {
        write_err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a file path",
        ))
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&dir).map_err(write_err)?;

    let suffix = format!("{:012x}", fastrand::u64(..) & 0xffff_ffff_ffff);
    let tmp = dir.join(format!(".{}.{suffix}.tmp", file_name.to_string_lossy()));
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        #[cfg(unix)]
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(write_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_atomically_and_privately() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("creds.json");
        write_private_file(&path, b"old").unwrap();
        write_private_file(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");
    }

    #[test]
    fn a_path_under_a_file_is_a_write_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = write_private_file(&file.join("child.json"), b"x").unwrap_err();
        assert!(matches!(err, Error::WriteFile { .. }), "{err}");
    }
}
