//! Secure aggregation among nodes (design.md computation 3; `xmcredit_protocol::secagg`,
//! Bonawitz et al. CCS 2017): the coordinator's job (`run secagg --contract X`) and the
//! contributor's session handler, both driving the protocol's states over the `SecAgg`
//! bidirectional gRPC stream, one stream per contributor, opened by the coordinator.
//!
//! # The vectors
//!
//! The contract says what each contributor sums (`Computation::Secagg`): entry i of its
//! vector is the sum of `value_column` (integer, or decimal units: fen for yuan with 2
//! places) over its dataset's rows whose `group_column` is `groups[i]`. Values must be
//! `>= 0` and every entry must fit `limits.output_bits`; a contributor checks its own
//! input before it sends anything, and both sides refuse to start when
//! `n × (2^bits - 1)` could pass `2^64 - 1`, so the sum mod 2^64 is the exact sum.
//!
//! **Universe mode** (`groups = []`, `group_column` = the key): one entry per code of
//! the public universe of registered entities (design.md, computation 4: "the sorted
//! list of registered entity codes, published per epoch by the credit center"). The
//! coordinator sends the universe, the sorted keys of one of its datasets (`--dataset`,
//! default `registry`; only the keys leave it), in the opening message of every
//! session. We chose this over having every contributor import the registry as a
//! dataset of its own: the contract names one dataset per contributor, the registry
//! changes every epoch, and keeping copies in step at every bank is an operational
//! burden with no privacy gain, since the codes are public. What keeps a coordinator
//! from abusing its choice is that the session id commits to the universe (see
//! `wire.rs`): contributors that go on together hold the same universe and the same
//! contract bytes, so the coordinator cannot give banks different layouts to single
//! one out. A contributor refuses a universe longer than its `limits.max_set_size`.
//!
//! # A session
//!
//! 1. The coordinator checks the contract (verified now, its role, the sum as its
//!    output, the widths), derives the session from a fresh nonce, the contract digest
//!    and the universe, claims it, and opens a stream to every contributor whose first
//!    message is the opening message of `wire.rs`.
//! 2. Each contributor checks, before it answers: the contract verified now and in the
//!    same epoch, the same contract bytes (digest), its own role `contributor`, the
//!    caller being the contract's coordinator (mutual TLS names the caller), a session
//!    id never seen (replay), no masked input sent before under this contract in this
//!    epoch (below), its input made from the dataset the contract names and
//!    within `output_bits`, and the protocol's setup (no wrap). The caller's role is
//!    checked on the first fragment already, so a stranger cannot make it buffer a
//!    large opening message. A refusal is the gRPC status of the call, with a reason
//!    that names no row, key or value.
//! 3. Then the four rounds. The coordinator collects each round until every member it
//!    waits for has answered, or `timeouts.round_secs` of its configuration passes, and
//!    closes the round; a contributor whose stream fails, closes, times out or sends a
//!    message the state refuses is dropped at that round. Up to the masked inputs the
//!    coordinator goes on with at least `max(t, min_contributors)` contributors (round 4
//!    needs `t` shares) and otherwise aborts, sending nothing more, so nothing is
//!    unmasked. Contributors check the same minimum on every list the coordinator sends
//!    them, before they share, mask or reveal.
//! 4. The coordinator's report has the sum, who is in it, who dropped at which round and
//!    why, seconds per round and bytes per contributor; the full sum goes to a CSV under
//!    `<data_dir>/outputs/`. Every run is a job and an audit record on every node; the
//!    coordinator also writes one `interrupted` audit record per contributor that
//!    dropped, naming the round.
//!
//! # One masked input per contract and epoch
//!
//! A contributor sends a masked input in at most one session per (contract, epoch).
//! Otherwise a coordinator could run the same contract twice, once with every bank and
//! once with one bank dropped (it decides who survives by closing rounds), and subtract
//! the sums to recover that bank's vector. Before its masked input goes out, the
//! contributor claims (contract, epoch) in its store, atomically and flushed to disk
//! (`secagg_inputs` tree, `store/secagg.rs`), and refuses any later session of the same
//! contract and epoch with "already contributed a masked input to contract X in epoch
//! E; a re-run needs a new epoch or a new contract" (checked when the session opens,
//! and again by the claim). A session that ends before the masked input claims nothing,
//! so a run aborted in rounds 0 or 1 can be repeated.
//!
//! Messages are the protocol's byte encodings, cut into 1 MiB fragments (`wire.rs`) so a
//! masked input of 2^20 or more elements crosses the transport's 8 MiB message cap.
//!
//! # Fault injection
//!
//! [`fault`]: when the node process has `XMCREDIT_TEST_EXIT_AT` set to one
//! of the points it names, a contributor exits the process (status 86) at that point, as
//! a crash would. Tests and the simulator use it to drop a bank at an exact round.

mod contributor;
mod coordinator;
pub mod fault;
mod input;
mod wire;

pub use contributor::serve_session;
pub use coordinator::{run_coordinator, run_for_lookup};
pub use wire::sum_digest;

use xmcredit_protocol::secagg::Round;

/// The dataset whose keys are the universe when `run secagg` names none.
pub const DEFAULT_UNIVERSE_DATASET: &str = "registry";

/// Bytes a session's messages other than masked inputs and the opening one may take:
/// key lists and share relays of up to 1024 contributors are well under this.
const SMALL_MESSAGE_BYTES: usize = 1 << 20;

/// The largest message of a session with vectors of `len` elements: a masked input
/// (8 bytes an element) plus room for its header and binding.
fn message_cap(len: usize) -> usize {
    len.saturating_mul(8).saturating_add(SMALL_MESSAGE_BYTES)
}

/// The round after `round` (a contributor that closes its stream after answering one
/// round has dropped out of the next).
fn next_round(round: Round) -> Round {
    match round {
        Round::AdvertiseKeys => Round::ShareKeys,
        Round::ShareKeys => Round::MaskedInputCollection,
        Round::MaskedInputCollection | Round::Unmasking => Round::Unmasking,
    }
}

/// The contract's contributors in contract order (which fixes Shamir indices), the
/// threshold and the coordinator.
fn roster(
    verified: &xmcredit_contracts::VerifiedContract,
    params: &input::Params,
    coordinator: &xmcredit_crypto::NodeId,
) -> Result<xmcredit_protocol::secagg::Roster, crate::NodeError> {
    let contract = verified.contract();
    let parties = if params.lookup {
        // A lookup's providers other than the coordinator (which adds its own vector).
        contract
            .parties_with(xmcredit_contracts::Role::Provider)
            .filter(|p| !p.roles.contains(&xmcredit_contracts::Role::Coordinator))
            .map(|p| (p.node.clone(), p.public_key))
            .collect()
    } else {
        contract
            .parties_with(xmcredit_contracts::Role::Contributor)
            .map(|p| (p.node.clone(), p.public_key))
            .collect()
    };
    Ok(xmcredit_protocol::secagg::Roster::new(parties, params.threshold, coordinator.clone())?)
}

/// The session's setup as the contract fixes it, distributed noise included: every
/// party builds it the same way from the contract, so contributors and coordinator
/// agree on who adds what and how the sum decodes.
fn setup(
    binding: xmcredit_protocol::SessionBinding,
    roster: xmcredit_protocol::secagg::Roster,
    len: usize,
    params: &input::Params,
) -> Result<xmcredit_protocol::secagg::Setup, crate::NodeError> {
    use xmcredit_protocol::secagg::{SessionNoise, Setup, VectorSpec};
    let n = roster.len();
    let setup = Setup::new(binding, roster, VectorSpec { len, bits: params.bits })?;
    Ok(match params.noise {
        None => setup,
        // Sized for the fewest inputs a sum may hold, so any sum that is unmasked carries
        // at least the declared variance (ARCHITECTURE.md, "Privacy limits").
        Some(noise) => {
            setup.with_noise(SessionNoise::skellam(noise.variance(), params.fewest().min(n), n)?)?
        }
    })
}

/// The name of a message's kind, for errors.
fn kind_name(message: &xmcredit_protocol::secagg::SecAggMessage) -> &'static str {
    use xmcredit_protocol::secagg::SecAggMessage;
    match message {
        SecAggMessage::AdvertiseKeys(_) => "AdvertiseKeys",
        SecAggMessage::KeyList(_) => "KeyList",
        SecAggMessage::EncryptedShares(_) => "EncryptedShares",
        SecAggMessage::ShareRelay(_) => "ShareRelay",
        SecAggMessage::MaskedInput(_) => "MaskedInput",
        SecAggMessage::UnmaskRequest(_) => "UnmaskRequest",
        SecAggMessage::UnmaskResponse(_) => "UnmaskResponse",
    }
}

/// Appends one message to a transcript hash: direction, peer, length, bytes.
fn transcribe(hasher: &mut sha2::Sha256, sent: bool, peer: &xmcredit_crypto::NodeId, bytes: &[u8]) {
    use sha2::Digest;
    hasher.update([u8::from(sent)]);
    hasher.update([peer.as_str().len() as u8]);
    hasher.update(peer.as_str().as_bytes());
    hasher.update((bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
}
