//! Who is calling. The auth layer puts a [`Principal`] in every request's extensions; handlers
//! learn the caller only from there (never from headers or the request body), e.g. to record
//! the actor of a revision.

use std::fmt;

/// What a principal may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads, Validate, Watch and plans.
    Reader,
    /// Also Set, Delete, Rollback and the proxy binding writes.
    Writer,
    /// Everything, including admin RPCs to come.
    Admin,
}

impl Role {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "reader" => Some(Self::Reader),
            "writer" => Some(Self::Writer),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Reader => "reader",
            Self::Writer => "writer",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An authenticated caller (a token's or a certificate's name), or [`Principal::anonymous`]
/// when the server runs without authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

/// The name of the caller when authentication is off.
pub const ANONYMOUS: &str = "anonymous";

impl Principal {
    pub fn anonymous() -> Self {
        Self {
            name: ANONYMOUS.to_owned(),
            role: Role::Admin,
        }
    }

    /// The caller of a request: its principal's name, `anonymous` when there is none.
    pub fn name_of<T>(request: &tonic::Request<T>) -> String {
        request
            .extensions()
            .get::<Principal>()
            .map_or_else(|| ANONYMOUS.to_owned(), |principal| principal.name.clone())
    }
}
