//! Duplicate financing between nodes (design.md computation 2;
//! `xmcredit_protocol::overthreshold`): the coordinator's job (`run overthreshold
//! --contract X`, [`coordinator`]), the contributor's session ([`contributor`], a bank
//! answering the coordinator's stream) and the committee member's evaluations
//! ([`member`]).
//!
//! # A session
//!
//! 1. The coordinator checks the contract (verified now, its role, `histogram` as its
//!    output), draws a fresh session id, claims it, and opens one `Overthreshold` stream
//!    per contributor whose first frame is the protocol's Announce (tag bits, chunk
//!    size), bound to (contract, epoch, session).
//! 2. Each contributor checks, before it blinds anything: the caller's contract key, the
//!    contract verified now and in the same epoch, its own role `contributor` and
//!    receiver form `own_matches`, the caller being the contract's coordinator, the
//!    session id never seen (replay), and its dataset: the one the contract names, with
//!    the key column the contract fixes for it (the key definition: `KeyColumnMismatch`
//!    otherwise) and at least its `min_set_size` rows. It then opens one
//!    `OverthresholdEval` stream per committee member (a member that is the contributor
//!    itself is run in process, under the same checks) and sends Hello and the blinded
//!    chunks, one blind for the whole session.
//! 3. A committee member checks the caller's contract key, the contract, its own role
//!    `committee`, the caller a contributor, that this contributor has not opened this
//!    session with it before (replay: the claim is SHA-256 of the session and the
//!    contributor, so a member that is also the coordinator or a contributor of the
//!    same session still claims it once per contributor), then the protocol's checks
//!    (`min_set_size <= n <= max_set_size`), and last spends `n` of the contributor's
//!    daily quota (`limits.lookups_per_day`) together with the node's ceiling across
//!    contracts over that dataset (`limits.dataset_lookups_per_day`), in one store
//!    transaction: both fit or nothing is spent and nothing is evaluated.
//! 4. The contributor sums the members' evaluations, unblinds, tags, and sends its tags
//!    sorted to the coordinator on the coordinator's stream. A member that fails,
//!    refuses or does not answer within `timeouts.round_secs` ends the contributor's
//!    session with `CommitteeMemberFailed` naming it; no tag is sent, and the
//!    coordinator sees the contributor's stream end with that reason.
//! 5. The coordinator counts when every contributor's set is in or a round passes,
//!    names the missing ones, aborts below `min_contributors`, and answers each counted
//!    contributor with the positions of its own tags held by `t` or more banks and
//!    their multiplicity. The contributor writes its matches (key, multiplicity) to
//!    `outputs/overthreshold-<contract>-<session>.csv` (mode 0600); the coordinator the
//!    histogram to `outputs/overthreshold-histogram-<contract>-<session>.json`.
//!
//! Every role records a job and an audit record; the member's says "n evaluations for
//! B", the coordinator's names the counted and missing banks.

mod contributor;
mod coordinator;
mod member;

pub use contributor::serve_session;
pub use coordinator::run_coordinator;
pub use member::serve_evaluations;

use sha2::{Digest, Sha256};
use xmcredit_contracts::{Computation, Role, VerifiedContract};
use xmcredit_crypto::NodeId;
use xmcredit_protocol::overthreshold::Parameters;
use xmcredit_protocol::SessionBinding;

use crate::context::NodeContext;
use crate::NodeError;

/// Blinded elements (and tags, results) per chunk: 8192 × 32 bytes = 256 KiB frames.
pub const CHUNK_SIZE: u32 = 8192;

/// A whole session's deadline, in round timeouts.
const SESSION_DEADLINE_ROUNDS: u32 = 60;

/// Frames queued per stream.
const OUTGOING_FRAMES: usize = 16;

/// The fault points of this computation (`XMCREDIT_TEST_EXIT_AT`): a committee member
/// exits after accepting a contributor's Hello and before it answers a chunk; a
/// contributor exits before it sends its tags; the coordinator exits before it answers.
pub const FAULT_MEMBER_BEFORE_EVALUATION: &str = "overthreshold-member-before-evaluated-chunk";
pub const FAULT_CONTRIBUTOR_BEFORE_TAGS: &str = "overthreshold-contributor-before-tag-chunk";
pub const FAULT_COORDINATOR_BEFORE_RESULTS: &str = "overthreshold-coordinator-before-result-chunk";

/// The session [`Parameters`] an overthreshold contract fixes: coordinator, committee
/// and contributors in node order (the contract's order), the threshold, the minimum
/// of contributors and the maximum set size per bank, which this node must also allow
/// (`limits.max_set_size` of its configuration).
pub(crate) fn parameters(ctx: &NodeContext, verified: &VerifiedContract) -> Result<Parameters, NodeError> {
    let contract = verified.contract();
    let Computation::Overthreshold { threshold } = contract.computation else {
        return Err(NodeError::Refused(format!(
            "contract {} is for {}, not overthreshold",
            verified.id(),
            contract.kind()
        )));
    };
    let nodes = |role: Role| contract.parties_with(role).map(|p| p.node.clone()).collect::<Vec<NodeId>>();
    let coordinator = nodes(Role::Coordinator)
        .into_iter()
        .next()
        .ok_or_else(|| NodeError::Refused(format!("contract {} names no coordinator", verified.id())))?;
    let min_contributors = contract
        .limits
        .min_contributors
        .ok_or_else(|| NodeError::Refused(format!("contract {} sets no min_contributors", verified.id())))?;
    let max_set_size = contract
        .limits
        .max_set_size
        .ok_or_else(|| NodeError::Refused(format!("contract {} sets no max_set_size", verified.id())))?;
    let ours = ctx.config.limits.max_set_size;
    if max_set_size > ours {
        return Err(NodeError::Refused(format!(
            "contract {} lets a bank bring {max_set_size} items; this node allows {ours} (limits.max_set_size)",
            verified.id()
        )));
    }
    Ok(Parameters::new(
        coordinator,
        nodes(Role::Committee),
        nodes(Role::Contributor),
        threshold,
        min_contributors,
        max_set_size,
    )?)
}

/// What a committee member claims in its `sessions` tree for one contributor's
/// evaluations: `SHA-256("xmcredit overthreshold member v1" ‖ session (16) ‖
/// I2OSP(len(contributor), 1) ‖ contributor)[0..16]`. Every contributor of a session
/// uses the coordinator's session id, and a member may also be the coordinator or a
/// contributor of it, so the raw id cannot be its claim.
pub(crate) fn member_claim(binding: &SessionBinding, contributor: &NodeId) -> [u8; 16] {
    let mut hasher = Sha256::new();
    hasher.update(b"xmcredit overthreshold member v1");
    hasher.update(binding.session.as_bytes());
    hasher.update([contributor.as_str().len() as u8]);
    hasher.update(contributor.as_str().as_bytes());
    let digest = hasher.finalize();
    let mut claim = [0u8; 16];
    claim.copy_from_slice(&digest[..16]);
    claim
}

/// The name under which a member counts a contributor's evaluations against the
/// node's ceiling (`limits.dataset_lookups_per_day`): every overthreshold evaluation
/// for that contributor, across all contracts and whatever its dataset is called, since
/// each contract's key is another oracle for the same ids. A dataset name has no `:`, so
/// it never meets a count of this node's own datasets.
pub(crate) const QUOTA_DATASET: &str = "overthreshold:evaluations";

/// `list` joined with ", " ("none" when empty), for details and reasons.
pub(crate) fn names(list: &[NodeId]) -> String {
    if list.is_empty() {
        return "none".into();
    }
    list.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}
