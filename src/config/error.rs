//! Configuration errors: one [`ConfigError`] per problem, each pointing at a
//! `FILE:LINE:COL`, and [`ConfigErrors`], the list a load returns.
//!
//! Validation collects every problem instead of stopping at the first, so a
//! service team fixes a route file in one round trip (`portico check`).

use std::fmt;
use std::path::PathBuf;

/// A position in a configuration file. Line and column are 1-based, as
/// editors and `FILE:LINE:COL` jump-to-error tooling expect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file, as it was given to the loader (not canonicalized), so the
    /// message matches what the user typed.
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

/// One problem with a configuration file.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The file could not be read at all (missing, permissions, not UTF-8).
    /// The cause is kept as text so the error stays `Clone + Eq`: the live
    /// reloader stores the last error and shows it on `/routes`.
    #[error("{}: cannot read: {message}", path.display())]
    Io { path: PathBuf, message: String },
    /// The file was read but its content is wrong at `location`.
    #[error("{}:{}:{}: {message}", location.file.display(), location.line, location.column)]
    Invalid { location: Location, message: String },
}

impl ConfigError {
    /// Where the error is, when it is about content rather than reading.
    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Io { .. } => None,
            ConfigError::Invalid { location, .. } => Some(location),
        }
    }

    /// The message without the `FILE:LINE:COL: ` prefix.
    pub fn message(&self) -> &str {
        match self {
            ConfigError::Io { message, .. } | ConfigError::Invalid { message, .. } => message,
        }
    }
}

/// Every problem found in one file (never empty when returned as an `Err`).
/// `Display` prints one error per line, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        ConfigErrors(vec![error])
    }
}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_file_line_col_message_one_per_line() {
        let errors = ConfigErrors(vec![
            ConfigError::Invalid {
                location: Location {
                    file: "routes.yaml".into(),
                    line: 3,
                    column: 5,
                },
                message: "bad".into(),
            },
            ConfigError::Io {
                path: "portico.yaml".into(),
                message: "No such file".into(),
            },
        ]);
        assert_eq!(
            errors.to_string(),
            "routes.yaml:3:5: bad\nportico.yaml: cannot read: No such file"
        );
        assert_eq!(errors.len(), 2);
        assert!(!errors.is_empty());
        assert_eq!(errors.iter().next().unwrap().message(), "bad");
        assert_eq!(errors.0[0].location().unwrap().line, 3);
        assert!(errors.0[1].location().is_none());
    }
}
