//! Errors about data name the file, the record key and the field, so a researcher can find the
//! bad record without a debugger.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
pub struct DataError {
    pub file: PathBuf,
    pub key: Option<String>,
    pub field: Option<String>,
    pub message: String,
}

impl DataError {
    pub fn file(file: impl AsRef<Path>, message: impl Into<String>) -> Self {
        DataError {
            file: file.as_ref().to_path_buf(),
            key: None,
            field: None,
            message: message.into(),
        }
    }
    pub fn record(
        file: impl AsRef<Path>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        DataError {
            key: Some(key.into()),
            ..Self::file(file, message)
        }
    }
    pub fn field(
        file: impl AsRef<Path>,
        key: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        DataError {
            field: Some(field.into()),
            ..Self::record(file, key, message)
        }
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(k) = &self.key {
            write!(f, ": record `{k}`")?;
        }
        if let Some(fd) = &self.field {
            write!(f, ": field `{fd}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for DataError {}
