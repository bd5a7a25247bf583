//! The multi-node simulator: a whole alliance of real node processes on 127.0.0.1, fed
//! synthetic but realistic data, running the scenarios and checking every result
//! against the answer computed in the clear.
//!
//! It must never take a shortcut the real deployment could not: nodes are separate
//! processes that talk gRPC over mutual TLS, keep sled stores on disk, and are set up
//! through their own command line.

pub mod alliance;
pub mod bench;
pub mod contracts;
pub mod data;
pub mod datasets;
pub mod demo;
pub mod faults;
pub mod floor;
pub mod html;
pub mod limit_faults;
pub mod load_bench;
pub mod lookup_scenarios;
pub mod observations;
pub mod overthreshold_bench;
pub mod overthreshold_scenarios;
pub mod privacy_faults;
pub mod receivable_scenario;
pub mod scenarios;
pub mod secagg_scenarios;
pub mod supplier_exposure;
pub mod supply_chain;
pub mod trust_faults;
