//! provisiond: a gRPC service that stores and validates the provision policies of app
//! entitlements. See DESIGN.md for the contract; `server::serve` is the one entry point.
pub mod cli;
pub mod config;
pub mod error;
pub mod pb;
pub mod policy;
pub mod server;
pub mod service;
pub mod store;
