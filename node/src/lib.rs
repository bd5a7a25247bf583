//! The xmcredit node: one process per bank or credit center.
//!
//! This crate owns everything with side effects: sockets (gRPC over mutual TLS), files
//! (keys, certificates, CSV imports), the sled store, clocks, threads and the operator's
//! command line. It drives the sans-I/O protocol state machines of `xmcredit-protocol`
//! under contracts verified by `xmcredit-contracts`.
//!
//! It must never send a raw record to another node: only blinded points, tags, masked
//! vectors, encrypted shares and contract documents leave the process. Every
//! computation runs under a verified contract and is audited.
#![forbid(unsafe_code)]
// gRPC handlers return tonic::Status (176 bytes) by the trait's signature; boxing it in
// our helpers would only add conversions at every call site.
#![allow(clippy::result_large_err)]

pub mod admin_socket;
pub mod cli;
pub mod config;
pub mod console;
pub mod context;
mod error;
pub mod identity;
pub mod import;
pub mod logging;
pub mod pki;
pub mod revocation;
pub mod run;
pub mod server;
pub mod service;
pub mod store;
pub mod transport;
pub mod witness;

pub use error::NodeError;

/// The generated gRPC types (from `proto/xmcredit.proto`).
pub mod proto {
    #![allow(clippy::all, missing_debug_implementations, unreachable_pub)]
    tonic::include_proto!("xmcredit.v1");
}
