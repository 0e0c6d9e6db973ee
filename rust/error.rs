//! The one error type of the engine. `py.rs` converts it to Python exceptions in one place.

use std::fmt;

/// JPush code for an illegal parameter value (seed 001 error table).
pub const ILLEGAL_VALUE: u32 = 1003;

/// Everything the engine can refuse. No variant leaves the registry half-changed: every
/// operation validates before it mutates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A request the vendor would refuse, with the vendor's error code.
    Invalid { code: u32, message: String },
    /// A bulk load refused; `line` is 1-based for JSON Lines, a row index for arrays.
    Load { line: usize, message: String },
    /// A snapshot file that is corrupt, truncated or of another format.
    Snapshot(String),
    /// An operating-system error (file not found, disk full, ...).
    Io(String),
}

impl Error {
    /// An illegal-parameter refusal (JPush 1003).
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::Invalid {
            code: ILLEGAL_VALUE,
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Invalid { code, message } => write!(f, "[{code}] {message}"),
            Error::Load { line, message } => write!(f, "line {line}: {message}"),
            Error::Snapshot(m) => write!(f, "bad snapshot: {m}"),
            Error::Io(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Error>;
