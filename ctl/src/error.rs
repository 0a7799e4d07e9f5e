//! The errors of a command, classified by who caused them, because that
//! decides the exit code: a usage mistake is 2, anything else is 1.
//!
//! No variant ever carries a password or a token: the client builds its
//! messages from the server's URL, the route and the server's error text.

use std::time::Duration;

use http::StatusCode;

/// Why a command could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The command line was wrong in a way clap cannot check (exit 2).
    #[error("{0}")]
    Usage(String),
    /// No token: neither `FLEETGATE_TOKEN` nor a token file.
    #[error("not logged in: run `fleetgate-ctl login` (or set FLEETGATE_TOKEN)")]
    NotLoggedIn,
    /// The server could not be reached, or the connection broke.
    #[error("cannot reach {server}: {reason}")]
    Unreachable { server: String, reason: String },
    /// The server did not answer within the deadline.
    #[error("no answer from {server} within {}", humantime::format_duration(*.deadline))]
    Timeout { server: String, deadline: Duration },
    /// The server answered with an error status. `message` is its `error`
    /// field (escaped for the terminal), or a summary of the body.
    #[error("{message} (HTTP {})", .status.as_u16())]
    Api { status: StatusCode, message: String },
    /// The server's answer was not what the API documents (not JSON, a
    /// missing field, larger than the cap).
    #[error("unexpected answer from the server: {0}")]
    BadReply(String),
    /// A local file (token, names, CA certificate) could not be used.
    #[error("{0}")]
    Local(String),
}

impl CtlError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Usage(_) => 2,
            _ => 1,
        }
    }

    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            CtlError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}
