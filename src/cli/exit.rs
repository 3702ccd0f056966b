//! The exit codes, one place: documented in the README and tested as a matrix.

use std::process::ExitCode;

/// What a run came to. Across files the most severe of 1–5 wins (`max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    Ok = 0,
    /// Invalid input: unreadable, unparsable, violations of severity ERROR (or WARNING with
    /// `--fail-on-warn`), INVALID_ARGUMENT from the server.
    Invalid = 1,
    /// `diff --detailed-exitcode`: changes are pending.
    Changes = 2,
    /// A conflict: an etag mismatch, a stale plan, an entitlement that exists already; nothing
    /// was written.
    Conflict = 3,
    /// The server is unreachable or refused: UNAVAILABLE, DEADLINE_EXCEEDED, UNAUTHENTICATED,
    /// PERMISSION_DENIED, RESOURCE_EXHAUSTED.
    Unreachable = 4,
    /// NOT_FOUND.
    NotFound = 5,
    /// Bad flags or arguments (clap's usage errors).
    Usage = 64,
    /// A bug of provisionctl or an answer it cannot read.
    Internal = 70,
}

impl Exit {
    /// The exit code a gRPC status means.
    pub fn of_code(code: tonic::Code) -> Self {
        use tonic::Code;
        match code {
            Code::Ok => Exit::Ok,
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => Exit::Invalid,
            Code::Aborted | Code::AlreadyExists => Exit::Conflict,
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unauthenticated
            | Code::PermissionDenied
            | Code::ResourceExhausted
            | Code::Cancelled => Exit::Unreachable,
            Code::NotFound => Exit::NotFound,
            Code::Unknown | Code::Internal | Code::Unimplemented | Code::DataLoss => Exit::Internal,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}
