//! The protocols of xmcredit as sans-I/O state machines.
//!
//! Each role of each protocol is a chain of states; a transition consumes the state and
//! one message and returns the next state plus the messages to send. This crate owns the
//! message types, their binding to (contract, epoch, session, sender), and every check a
//! role makes on what a peer sent.
//!
//! It must never open a socket or a file, read a clock, or spawn a task: the node drives
//! these machines over gRPC, the simulator and the tests drive them in memory. Randomness
//! is passed in.
#![forbid(unsafe_code)]

mod binding;
mod chunks;
mod error;
pub mod lookup;
pub mod overthreshold;
pub mod psi;
pub mod secagg;
mod wire;

pub use binding::SessionBinding;
pub use error::ProtocolError;
