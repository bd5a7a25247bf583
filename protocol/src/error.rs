use thiserror::Error;
use xmcredit_crypto::group::BatchElementError;
use xmcredit_crypto::{CryptoError, NodeId};

/// Why a protocol role refused a message or could not go on. Variants that describe what
/// a peer did wrong are kept apart from local faults so the node can log and answer
/// with the right status.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProtocolError {
    // ---- Common to every protocol -------------------------------------------------
    /// A message bound to another contract, epoch or session (a replay or a mix-up).
    #[error("message bound to {field} {got}, this run is {expected}")]
    WrongBinding { field: &'static str, expected: String, got: String },
    /// A message from a node that is not the peer this state expects.
    #[error("message from {got}, expected {expected}")]
    UnexpectedSender { expected: String, got: NodeId },
    /// A message that does not fit the state the role is in (out of order or repeated).
    #[error("unexpected message {got} while {state}")]
    UnexpectedMessage { state: &'static str, got: &'static str },
    /// A peer's group element failed the checked decoder.
    #[error("invalid element from peer: {0}")]
    InvalidElement(#[from] BatchElementError),
    /// A cryptographic operation failed on a peer's data.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// A message field with the wrong length or shape.
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    /// A set smaller than the contract allows, refused by the party that would leak.
    #[error("{whose} set has {got} elements, the contract requires at least {min}")]
    SetTooSmall { whose: &'static str, got: u64, min: u64 },
    /// A set larger than the contract or the node allows.
    #[error("{whose} set has {got} elements, the limit is {max}")]
    SetTooLarge { whose: &'static str, got: u64, max: u64 },

    // ---- Set protocols: chunked streams, quota (PSI, lookup, overthreshold) ---------
    /// A chunk whose number is not the next one of its direction and kind (design.md
    /// computations 1, 2 and 4; chunks are numbered 0, 1, 2, … in each session). A
    /// repeated number is a replay inside the session, a skipped one a lost or reordered
    /// message; either would break the order that maps replies back to the set.
    /// `protocol` names the protocol ("PSI", "lookup", "overthreshold"), `what` the
    /// message.
    #[error("{protocol} {what}: chunk {got} out of order, expected chunk {expected}")]
    ChunkOutOfOrder { protocol: &'static str, what: &'static str, expected: u32, got: u32 },
    /// More items (blinded or evaluated elements, tags, matched tags) than the peer
    /// declared (Hello's n, HelloAck's m, the MatchReport total, the ResultChunk
    /// total). Refused before the extra items are evaluated or counted.
    #[error("{protocol}: {got} {what}, more than the {declared} declared")]
    TooManyElements { protocol: &'static str, what: &'static str, declared: u64, got: u64 },
    /// A chunk with another number of items than the session's chunking gives: every
    /// chunk holds the chunk size from Hello, the last one the rest.
    #[error("{protocol} {what}: chunk {seq} holds {got}, the chunking gives {expected}")]
    ChunkLength { protocol: &'static str, what: &'static str, seq: u32, expected: u64, got: u64 },
    /// An EvaluatedChunk for a blinded chunk this side has not sent: the evaluator cannot
    /// have evaluated it.
    #[error("evaluated chunk {seq} arrived before blinded chunk {seq} was sent")]
    UnrequestedChunk { seq: u32 },
    /// Tags of another length than the session's (PSI: `tag_bits_for(n, m, 40)`;
    /// overthreshold: the announced length): shorter tags would let false matches
    /// through (design.md: at least 40 + log2 n + log2 m bits).
    #[error("tags of {got_bits} bits, the session requires {expected_bits}")]
    TagLengthMismatch { expected_bits: u32, got_bits: u32 },
    /// A local chunk size of 0 or above `MAX_CHUNK_ELEMENTS` (the bound a receiver holds
    /// for one message).
    #[error("chunk size {got} must be between 1 and {max}")]
    InvalidChunkSize { got: u32, max: usize },
    /// A Hello asking for more evaluations than its sender has left in today's quota
    /// (design.md trust model: the evaluating side of a set protocol enforces its
    /// peer's quota; the lookup provider for the querier, each overthreshold committee
    /// member for the contributor). Refused before a single element is evaluated; the
    /// peer is the Hello's sender.
    #[error("quota exceeded: {requested} evaluations requested, {remaining} left in today's quota")]
    QuotaExceeded { requested: u64, remaining: u64 },

    // ---- PSI ------------------------------------------------------------------------
    /// The client asked for an output form the contract does not grant (e.g. the
    /// intersection under a cardinality-only contract). Refused by the server at Hello.
    #[error("PSI: client asked for the {requested} form, the contract grants {allowed}")]
    FormNotAllowed { requested: crate::psi::PsiOutputForm, allowed: crate::psi::PsiOutputForm },
    /// The noise of a cardinality session does not match the contract's: a Hello
    /// without a noise anchor where the contract adds noise (the client would learn the
    /// exact count), an anchor where it adds none, or a HelloAck whose dummy count is
    /// not the one the contract's ε gives. Refused by whichever side sees it first.
    #[error("PSI cardinality noise: {reason}")]
    NoiseMismatch { reason: String },
    /// ServerDone came before all m tags, or names another total than HelloAck's m.
    #[error("PSI: the server declared {declared} tags, got {got}")]
    TagCountMismatch { declared: u64, got: u64 },
    /// A TagChunk with labels outside the labels form, or without one label per tag in
    /// it.
    #[error("PSI {form} form: a tag chunk with {tags} tags and {labels} labels")]
    LabelsMismatch { form: crate::psi::PsiOutputForm, tags: usize, labels: usize },
    /// A MatchReport chunk whose total differs from the one chunk 0 declared.
    #[error("PSI MatchReport: total {got} differs from the {first} declared in chunk 0")]
    MatchTotalChanged { first: u64, got: u64 },
    /// A MatchReport naming one tag twice.
    #[error("PSI MatchReport: a tag is reported twice")]
    DuplicateMatch,
    /// A MatchReport naming tags that are not this session's tags of Y (not a match the
    /// client could have found).
    #[error("PSI MatchReport: {unknown} reported tags are not in the server's tag set")]
    UnknownMatch { unknown: usize },
    /// A local set with a repeated element, refused before anything is sent: one blind
    /// per session turns equal inputs into equal blinded elements (and equal `y` into
    /// equal tags), which would show the peer that the set holds a duplicate.
    #[error("PSI {whose} set: element {second} repeats element {first}")]
    DuplicateElement { whose: &'static str, first: usize, second: usize },
    /// Local fault: a set streamed into [`crate::psi::ServerSetBuilder`] out of order
    /// (the builder refuses duplicates by requiring strictly increasing elements).
    #[error(
        "PSI {whose} set: element {index} sorts before the element before it; stream the set in key order"
    )]
    UnsortedElement { whose: &'static str, index: usize },
    /// Local fault: the cached server set was built for another contract, epoch or OPRF
    /// key, or lacks the labels the contract's form needs.
    #[error("PSI server set does not fit this session: {reason}")]
    ServerSetMismatch { reason: String },
    /// Local fault: labels that cannot be sent (count differs from the elements, lengths
    /// differ, or longer than `MAX_LABEL_LEN`).
    #[error("PSI labels refused: {reason}")]
    InvalidLabels { reason: String },

    // ---- Secure aggregation -----------------------------------------------------------
    /// Fewer than `t` contributors are left in a round (Bonawitz et al. 2017, Figure 4:
    /// every round aborts when `|U_i| < t`; rounds 0, 1, 2 and 4). Whoever returns it
    /// sends nothing further, so nothing more is revealed.
    #[error("secure aggregation {round}: {got} contributors left, the threshold is {threshold}; aborted")]
    BelowThreshold { round: crate::secagg::Round, got: usize, threshold: usize },
    /// Round 4 (Unmasking): the coordinator asked for both the self-mask share and the
    /// mask-key share of one peer, which would unmask that peer's input on its own.
    #[error("secure aggregation round 4: the coordinator asked for both shares of {peer}")]
    BothSharesRequested { peer: NodeId },
    /// Round 0 (AdvertiseKeys): a key advertisement whose signature does not verify under
    /// the roster's identity key over this session's binding (forged, altered, or
    /// replayed from another session).
    #[error("secure aggregation round 0: the key advertisement of {from} has a bad signature")]
    BadKeySignature { from: NodeId },
    /// Round 0 (AdvertiseKeys): a DH public key already advertised (by another node, or
    /// as the node's other key); the paper requires all key pairs to differ.
    #[error("secure aggregation round 0: {from} advertised a DH key that is already in use")]
    DuplicateKey { from: NodeId },
    /// Round 0 (AdvertiseKeys): the key list leaves out or changes this contributor's own
    /// keys.
    #[error("secure aggregation round 0: the key list leaves out or alters this node's own keys")]
    OwnKeysAltered,
    /// Round 2 (MaskedInputCollection) input, checked before round 0 starts: an element
    /// above `2^bits - 1`. The value is this node's own and is never sent.
    #[error("secure aggregation input element {index} is {value}, above the declared width of {bits} bits")]
    InputTooWide { index: usize, value: u64, bits: u32 },
    /// Setup, before round 0: `n` contributors' `bits`-bit elements could sum past
    /// `2^64 - 1`, so the mod 2^64 sum (round 2) would not be exact.
    #[error("secure aggregation of {n} contributors at {bits} bits per element could wrap past 2^64 - 1")]
    SumCouldWrap { n: usize, bits: u32 },
    /// Round 1 (ShareKeys) pair, opened on arrival in round 2: it did not authenticate
    /// under the pairwise key and associated data, or did not hold two canonical scalars.
    #[error("secure aggregation round 2: the share pair from {from} does not open")]
    ShareDecryption { from: NodeId },
    /// Any round: a node id that is not in the session's roster.
    #[error("secure aggregation: {who} is not a party of this session")]
    UnknownParticipant { who: NodeId },
    /// Any round after 0: a party outside the set this round is restricted to
    /// (U1 ⊇ U2 ⊇ U3 ⊇ U5 in the paper), e.g. a node that sent no shares in round 1
    /// sending a masked input in round 2.
    #[error("secure aggregation {round}: {who} did not take part in the previous round")]
    NotInRound { who: NodeId, round: crate::secagg::Round },
    /// Any round: a second message from one party in one round.
    #[error("secure aggregation {round}: a second message from {from}")]
    DuplicateMessage { from: NodeId, round: crate::secagg::Round },
    /// Round 4 (Unmasking): survivor and dropped lists that are not this contributor's
    /// U2 split in two, or that list the contributor itself as dropped.
    #[error("secure aggregation round 4: inconsistent unmask request: {reason}")]
    InconsistentUnmaskRequest { reason: String },
    /// Round 2 (MaskedInputCollection): a vector (input or masked input) of another
    /// length than the session's.
    #[error("secure aggregation round 2: vector of {got} elements, the session's is {expected}")]
    VectorLength { expected: usize, got: usize },
    /// Setup, before round 0: a roster or parameters that cannot run the protocol.
    #[error("secure aggregation setup refused: {reason}")]
    InvalidSetup { reason: String },
    /// Round 4 (Unmasking), coordinator: the shares rebuilt a mask key that is not the
    /// advertised one, or the unmasked sum is out of range (a wrong share). No sum is
    /// output.
    #[error("secure aggregation round 4: reconstruction failed: {reason}")]
    Reconstruction { reason: String },

    // ---- Lookup -----------------------------------------------------------------------
    /// A universe whose entries are not strictly increasing (unsorted or repeated), or
    /// an entry that is empty or longer than 65535 bytes.
    #[error("lookup universe entry {index}: {reason}")]
    InvalidUniverse { index: u64, reason: String },
    /// A message, reply or vector bound to another universe than this run's (hex
    /// digests).
    #[error("lookup: bound to universe {got}, this run's is {expected}")]
    UniverseMismatch { expected: String, got: String },
    /// A vector of another output width than the contract's.
    #[error("lookup: vector of {got} bits per entry, the contract's width is {expected}")]
    WidthMismatch { expected: u32, got: u32 },
    /// A vector that does not fit this run: another contract, epoch or length, vectors
    /// that cannot be combined, or a download whose digest does not match its entries.
    #[error("lookup vector refused: {reason}")]
    VectorMismatch { reason: String },
    /// Local fault: contributions whose count is not the universe's.
    #[error("lookup: {got} contributions for a universe of {expected} entries")]
    ContributionLength { expected: usize, got: usize },
    /// The provider replies handed to the querier's last step are not exactly one
    /// complete reply from each provider of the contract, for this run.
    #[error("lookup: provider replies refused: {reason}")]
    ProviderReplies { reason: String },
    /// Local fault: a bit layout that does not fit the width, or a provider's mask
    /// wider than its rules.
    #[error("lookup bit layout: {reason}")]
    BitLayout { reason: String },

    // ---- Overthreshold (duplicate detection) ------------------------------------------
    /// Parameters that cannot run the protocol (design.md computation 2: at least two
    /// contributors, a committee of at least one, 2 <= t <= min_contributors <=
    /// contributors, tags that fit in 128 bits).
    #[error("overthreshold setup refused: {reason}")]
    OverthresholdSetup { reason: String },
    /// Contributor: a committee member did not reply to every chunk (it dropped out, or
    /// the node's timer fired). Without every member's evaluation the sum key's value
    /// cannot be formed, so the contributor aborts and sends no tags.
    #[error("overthreshold: committee member {member} failed after {replied} of {expected} chunks")]
    CommitteeMemberFailed { member: NodeId, replied: u32, expected: u32 },
    /// Contributor: element `index` (in the whole set) of a committee member's
    /// evaluations failed crypto's checked decoder (RFC 9497 §4.1 DeserializeElement).
    #[error("overthreshold: committee member {member} sent an invalid element at index {index}: {source}")]
    InvalidEvaluation {
        member: NodeId,
        index: u64,
        #[source]
        source: CryptoError,
    },
    /// A message from a node that is neither a contributor nor a committee member this
    /// role exchanges messages with.
    #[error("overthreshold: {who} is not a {role} of this session")]
    NotAParticipant { who: NodeId, role: &'static str },
    /// Coordinator: a second tag set from a contributor whose set is complete.
    #[error("overthreshold: a second tag set from {from}")]
    DuplicateTagSet { from: NodeId },
    /// Coordinator: a contributor's tag set names one tag twice (so it cannot count once
    /// per bank), or is not in ascending order (the order every honest set is sent in).
    /// The contributor's set is dropped and the contributor named missing at close.
    #[error("overthreshold: tag set of {from} is refused at tag {position}: {reason}")]
    BadTagSet { from: NodeId, position: u64, reason: &'static str },
    /// Coordinator, at close: fewer complete tag sets than the contract's
    /// `min_contributors`; nothing is counted or answered.
    #[error("overthreshold: {got} contributors' tag sets arrived, the contract requires {min}; missing: {missing}")]
    TooFewContributors { got: usize, min: usize, missing: String },
    /// Contributor: the coordinator's result breaks a rule an honest coordinator keeps
    /// (a position out of range or not ascending, a multiplicity below the threshold or
    /// above the contributors counted, fewer contributors than the contract's minimum).
    #[error("overthreshold: the coordinator's result is refused: {reason}")]
    BadResult { reason: String },
}
