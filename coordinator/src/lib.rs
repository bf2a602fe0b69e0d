//! vephys coordinator: turns campaigns into jobs, leases them to workers with fencing tokens,
//! and stores what comes back, on Postgres or SQLite.

pub mod auth;
pub mod config;
pub mod error;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod server;
pub mod store;
pub mod testing;
pub mod web;

pub use error::{Error, Result};
pub use store::Store;
