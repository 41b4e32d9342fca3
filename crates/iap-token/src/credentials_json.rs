//! Reading credentials files: bounded, regular files only, and a JSON
//! object read field by field with errors naming the file and the field.
//! Shared by every credential type (a leaf: it knows no source).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};
use url::Url;

use crate::transport::ensure_secure;
use crate::{Error, Result};

/// The largest credentials file read: real ones are a few KiB.
pub(crate) const MAX_CREDENTIALS_FILE: u64 = 1024 * 1024;

/// Reads a credentials (or token) file: a regular file of at most
/// [`MAX_CREDENTIALS_FILE`] bytes. A FIFO, a device or a directory is
/// refused before it is opened (reading one could block forever or never
/// end). A missing file is an [`Error::ReadFile`] of kind `NotFound`.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    let read_error = |source: std::io::Error| Error::ReadFile {
        path: path.into(),
        source: Arc::new(source),
    };
    let invalid = |problem: String| Error::InvalidCredentials {
        path: Some(path.into()),
        field: String::new(),
        problem,
    };
    let meta = std::fs::metadata(path).map_err(read_error)?;
    if !meta.is_file() {
        let what = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file (a FIFO, socket or device)"
        };
        return Err(invalid(format!("is {what}: name a credentials JSON file")));
    }
    let too_big = || {
        invalid(format!(
            "is larger than {} KiB, which no credentials file is: check the path",
            MAX_CREDENTIALS_FILE / 1024
        ))
    };
    if meta.len() > MAX_CREDENTIALS_FILE {
        return Err(too_big());
    }
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_CREDENTIALS_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_CREDENTIALS_FILE {
        return Err(too_big());
    }
    Ok(bytes)
}

/// Like [`read_file`], as UTF-8 text (for token files and credential
/// sources). The file is bounded and regular, so reading it inline does not
/// block a runtime for long.
pub(crate) fn read_text_file(path: &Path) -> Result<String> {
    String::from_utf8(read_file(path)?).map_err(|_| Error::InvalidCredentials {
        path: Some(path.into()),
        field: String::new(),
        problem: "is not UTF-8 text".into(),
    })
}

/// Whether `err` is [`read_file`]'s "no such file".
pub(crate) fn is_not_found(err: &Error) -> bool {
    matches!(err, Error::ReadFile { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}

/// A credentials file's JSON object, read field by field with errors that
/// name the file and the field. Shared by every credential type. A nested
/// object ([`object`](Self::object)) names its fields with their path
/// (`credential_source.url`).
#[derive(Clone)]
pub(crate) struct CredentialsJson {
    obj: Map<String, Value>,
    path: Option<PathBuf>,
    /// Where a nested object sits in the file (`credential_source`).
    at: Option<String>,
}

impl CredentialsJson {
    /// Reads and parses the credentials file at `path`.
    pub(crate) fn read(path: &Path) -> Result<Self> {
        Self::parse(&read_file(path)?, Some(path))
    }

    /// Parses `bytes` (the contents of `path`, if from a file).
    pub(crate) fn parse(bytes: &[u8], path: Option<&Path>) -> Result<Self> {
        let invalid = |problem: String| Error::InvalidCredentials {
            path: path.map(Into::into),
            field: String::new(),
            problem,
        };
        if bytes.starts_with(b"\xEF\xBB\xBF") {
            return Err(invalid(
                "starts with a UTF-8 byte-order mark (BOM), which JSON does not allow: save the file as UTF-8 \
                 without BOM"
                    .into(),
            ));
        }
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            invalid(format!(
                "not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        match value {
            Value::Object(obj) => Ok(CredentialsJson {
                obj,
                path: path.map(Into::into),
                at: None,
            }),
            _ => Err(invalid("not a JSON object".into())),
        }
    }

    /// The file the JSON came from.
    pub(crate) fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The `type` field.
    pub(crate) fn kind(&self) -> Result<&str> {
        self.required("type")
    }

    /// Checks that the `type` field is `expected`: for the parser of one
    /// credential type, handed a file of another.
    pub(crate) fn expect_type(&self, expected: &str) -> Result<()> {
        match self.kind()? {
            kind if kind == expected => Ok(()),
            kind => Err(self.invalid("type", format!("is `{kind}`, expected `{expected}`"))),
        }
    }

    /// A field's raw value.
    pub(crate) fn get(&self, field: &str) -> Option<&Value> {
        self.obj.get(field)
    }

    /// An optional JSON-object field (`None` when absent or null), read
    /// like the file with errors naming `field.inner`.
    pub(crate) fn object(&self, field: &str) -> Result<Option<CredentialsJson>> {
        match self.obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(obj)) => Ok(Some(CredentialsJson {
                obj: obj.clone(),
                path: self.path.clone(),
                at: Some(self.name(field)),
            })),
            Some(_) => Err(self.invalid(field, "must be a JSON object".into())),
        }
    }

    /// A required, non-empty string field.
    pub(crate) fn required(&self, field: &str) -> Result<&str> {
        self.optional(field)?
            .ok_or_else(|| self.invalid(field, "is missing".into()))
    }

    /// Like [`required`](Self::required), with what to do when the field is
    /// missing (e.g. "download a new JSON key").
    pub(crate) fn required_or(&self, field: &str, remedy: &str) -> Result<&str> {
        self.optional(field)?
            .ok_or_else(|| self.invalid(field, format!("is missing: {remedy}")))
    }

    /// An optional string field; empty counts as absent; a non-string is an error.
    pub(crate) fn optional(&self, field: &str) -> Result<Option<&str>> {
        match self.obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(self.invalid(field, "must be a string".into())),
        }
    }

    /// An optional URL field, `default` when absent.
    pub(crate) fn url_or(&self, field: &str, default: &str) -> Result<Url> {
        self.parse_url(field, self.optional(field)?.unwrap_or(default))
    }

    /// Like [`url_or`](Self::url_or), for a URL that credentials are sent
    /// to (see [`secure_url`](Self::secure_url)).
    pub(crate) fn secure_url_or(&self, field: &str, default: &str) -> Result<Url> {
        self.secure_url(field, self.optional(field)?.unwrap_or(default))
    }

    /// `text`, the value of `field` (nested fields included), as a URL.
    pub(crate) fn parse_url(&self, field: &str, text: &str) -> Result<Url> {
        Url::parse(text.trim()).map_err(|e| self.invalid(field, format!("is not a URL ({e})")))
    }

    /// Like [`parse_url`](Self::parse_url), for a URL that credentials are
    /// sent to: it must pass [`ensure_secure`], which is checked here so
    /// that the error names the field rather than surfacing at the first
    /// request.
    pub(crate) fn secure_url(&self, field: &str, text: &str) -> Result<Url> {
        let url = self.parse_url(field, text)?;
        ensure_secure(&url).map_err(|_| {
            self.invalid(
                field,
                "must be an https URL (plain http only for loopback and the metadata server)"
                    .into(),
            )
        })?;
        Ok(url)
    }

    /// An [`Error::InvalidCredentials`] for `field` (empty: this object).
    pub(crate) fn invalid(&self, field: &str, problem: String) -> Error {
        Error::InvalidCredentials {
            path: self.path.clone(),
            field: self.name(field),
            problem,
        }
    }

    /// `field` as errors name it: with the path of a nested object.
    fn name(&self, field: &str) -> String {
        match &self.at {
            Some(at) if field.is_empty() => at.clone(),
            Some(at) => format!("{at}.{field}"),
            None => field.into(),
        }
    }
}
