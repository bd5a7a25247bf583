//! PSI between two nodes (design.md computation 1): the client's job (`run psi`,
//! [`client`]) and the server's session handler ([`server`]), both driving
//! `xmcredit_protocol::psi` over one bidirectional gRPC stream of frames.
//!
//! The server decides everything that could leak from its side before answering: the
//! contract (verified now, this epoch), the caller's role, the output form, the session
//! id never seen before (replay), the client's minimum set size, its own size limit and
//! the client's daily quota.

mod client;
mod server;

pub use client::run_client;
pub use server::{codes_digest, serve_session, SESSION_FRAMES_BUFFERED};

use std::sync::Arc;

use xmcredit_contracts::{Computation, OutputForm, PsiOutput, VerifiedContract};
use xmcredit_crypto::{ContractId, Epoch, NodeId};
use xmcredit_protocol::psi::{OutgoingMessage, PsiOutputForm, ServerSet};

use crate::proto;
use crate::store::DatasetRow;
use crate::NodeError;

/// A session's deadline, in round timeouts.
pub(super) const SESSION_DEADLINE_ROUNDS: u32 = 30;

/// Elements per chunk on the wire: 8192 × 32 bytes = 256 KiB frames.
pub(super) const CHUNK_SIZE: u32 = 8192;

/// The cache key of an evaluated server set: (contract, epoch, dataset name, version).
pub type ServerSetKey = (ContractId, Epoch, String, u64);
/// An evaluated server set and the rows it was built from (to name the both form's
/// matches).
pub type CachedServerSet = (Arc<ServerSet>, Arc<Vec<DatasetRow>>);

pub(super) fn form_of(output: PsiOutput) -> PsiOutputForm {
    match output {
        PsiOutput::Intersection => PsiOutputForm::Intersection,
        PsiOutput::Cardinality => PsiOutputForm::Cardinality,
        PsiOutput::Both => PsiOutputForm::Both,
        PsiOutput::Labels => PsiOutputForm::Labels,
    }
}

/// The output form the contract grants `node` as a receiver.
pub(super) fn receiver_form(output: PsiOutput) -> OutputForm {
    match output {
        PsiOutput::Cardinality => OutputForm::Cardinality,
        PsiOutput::Labels => OutputForm::Labels,
        PsiOutput::Intersection | PsiOutput::Both => OutputForm::Intersection,
    }
}

pub(super) fn psi_parameters(verified: &VerifiedContract) -> Result<(PsiOutput, Vec<String>), NodeError> {
    match &verified.contract().computation {
        Computation::Psi { output, label_columns } => Ok((*output, label_columns.clone())),
        other => {
            Err(NodeError::Refused(format!("contract {} is for {}, not psi", verified.id(), other.kind())))
        }
    }
}

pub(super) fn min_set_size(verified: &VerifiedContract, node: &NodeId) -> u64 {
    verified.contract().limits.min_set_size.get(node).copied().unwrap_or(1).max(1)
}

pub(super) fn frame(message: &OutgoingMessage) -> proto::Frame {
    proto::Frame { payload: message.bytes.clone() }
}
