//! What went wrong, as a kind every interface maps at its own edge: the HTTP API to a
//! status, MCP to an error code, the CLI to a message and an exit code.

use std::fmt;

/// The kind of an [`Error`]: what the caller can do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request cannot be read (malformed, not the expected shape).
    BadRequest,
    /// The request is well-formed, but a field is invalid; the message names it.
    Invalid,
    /// No such memory, collection or member.
    NotFound,
    /// It conflicts with what is stored (a name taken, a name that means two things).
    Conflict,
    /// Not allowed: the collection is read-only here, or this node does not own it.
    Forbidden,
    /// Not ready yet, or the index is behind; trying again later may work.
    Unavailable,
    /// A service the node relies on (a chat endpoint, a running `mnemon serve`) failed.
    Upstream,
    /// The node itself failed.
    Internal,
}

impl ErrorKind {
    /// Every kind.
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::BadRequest,
        ErrorKind::Invalid,
        ErrorKind::NotFound,
        ErrorKind::Conflict,
        ErrorKind::Forbidden,
        ErrorKind::Unavailable,
        ErrorKind::Upstream,
        ErrorKind::Internal,
    ];

    /// A stable, machine-readable code, e.g. `not_found`.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Invalid => "invalid_field",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Upstream => "upstream",
            ErrorKind::Internal => "internal",
        }
    }

    /// The kind whose [`code`](ErrorKind::code) is `code`.
    pub fn from_code(code: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|kind| kind.code() == code)
    }

    /// Whether the caller's request was at fault (as opposed to the node or a service
    /// it relies on): asking again unchanged will fail again.
    pub fn is_callers(self) -> bool {
        matches!(
            self,
            ErrorKind::BadRequest
                | ErrorKind::Invalid
                | ErrorKind::NotFound
                | ErrorKind::Conflict
                | ErrorKind::Forbidden
        )
    }
}

/// An error from the application: its kind and what was wrong, for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// What kind of failure it is.
    pub kind: ErrorKind,
    /// What was wrong, naming the field, memory or collection.
    pub message: String,
}

impl Error {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }
    /// The request cannot be read.
    pub fn bad_request(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::BadRequest, message)
    }
    /// A field is invalid.
    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Invalid, message)
    }
    /// No such thing.
    pub fn not_found(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::NotFound, message)
    }
    /// Conflicts with what is stored.
    pub fn conflict(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Conflict, message)
    }
    /// Not allowed.
    pub fn forbidden(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Forbidden, message)
    }
    /// Not ready.
    pub fn unavailable(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Unavailable, message)
    }
    /// A service the node relies on failed.
    pub fn upstream(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Upstream, message)
    }
    /// The node failed.
    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Internal, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.kind.code())
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_code_that_names_it_back() {
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(ErrorKind::from_code("remote"), None);
    }
}
