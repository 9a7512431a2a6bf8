//! Config errors. Loading collects every problem it finds and returns them together, so
//! an operator fixes a config in one round instead of one error per restart.

use std::fmt;
use std::path::PathBuf;

/// Which layer set the value an error is about. Built-in defaults have no origin: a
/// default that fails validation is a bug, not an operator error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueOrigin {
    /// The YAML config file.
    File(PathBuf),
    /// An environment variable, e.g. `SPOOR_WAL__FSYNC`.
    EnvVar(String),
    /// A command-line flag.
    CommandLine,
}

impl fmt::Display for ValueOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueOrigin::File(path) => write!(f, "file {}", path.display()),
            ValueOrigin::EnvVar(name) => write!(f, "environment variable {name}"),
            ValueOrigin::CommandLine => f.write_str("command line"),
        }
    }
}

/// One problem in the configuration. Every variant but [`ConfigError::File`] names the
/// full key path (`otlp.grpc.listen_address`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read or is not valid YAML; nothing else is checked.
    #[error("config file {}: {message}", path.display())]
    File {
        /// The path as given.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A key that spoor-server does not know (`deny_unknown_fields`).
    #[error("{key}: unknown key{}{}", suggestion_suffix(.suggestion), origin_suffix(.origin))]
    UnknownKey {
        /// Full key path, e.g. `otlp.grpc.listen_addres`.
        key: String,
        /// The closest known key, when one is close enough to be a likely typo.
        suggestion: Option<String>,
        /// Where the key was set.
        origin: Option<ValueOrigin>,
    },
    /// A value of the wrong type, out of range, or inconsistent with another key.
    #[error("{key}: {message}{}", origin_suffix(.origin))]
    InvalidValue {
        /// Full key path, e.g. `wal.fsync`.
        key: String,
        /// What is wrong and what is accepted.
        message: String,
        /// Where the value was set.
        origin: Option<ValueOrigin>,
    },
}

impl ConfigError {
    /// The full key path the error is about; `None` for errors about the file itself.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::File { .. } => None,
            ConfigError::UnknownKey { key, .. } | ConfigError::InvalidValue { key, .. } => {
                Some(key)
            }
        }
    }
}

fn suggestion_suffix(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(suggestion) => format!(" (did you mean {suggestion}?)"),
        None => String::new(),
    }
}

fn origin_suffix(origin: &Option<ValueOrigin>) -> String {
    match origin {
        Some(origin) => format!(" [{origin}]"),
        None => String::new(),
    }
}

/// Every problem found while loading the configuration; never empty. Displays one error
/// per line, ready for stderr (`--check-config`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    errors: Vec<ConfigError>,
}

impl ConfigErrors {
    pub(crate) fn new(errors: Vec<ConfigError>) -> Self {
        debug_assert!(
            !errors.is_empty(),
            "ConfigErrors must hold at least one error"
        );
        ConfigErrors { errors }
    }

    /// The individual errors, in the order they were found.
    pub fn errors(&self) -> &[ConfigError] {
        &self.errors
    }

    /// Iterates over the individual errors.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.errors.iter()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.errors.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}
