//! Contract exchange between nodes: proposals, signatures, fetches and revocations
//! travel over the peers' mutual-TLS gRPC, so parties sign without copying files. The
//! caller's node id comes from its certificate; a node only ever submits its own
//! signature, a proposal must carry the proposer's own valid signature, and every
//! signature and revocation is verified against the key the contract lists. Every
//! change to a stored contract is a locked merge (`Store::update_contract`).

use std::sync::Arc;

use xmcredit_contracts::audit::{AuditEvent, Outcome};
use xmcredit_contracts::{
    Computation, ComputationKind, Contract, CountNoise, Revocation, Role, SignedContract,
};
use xmcredit_crypto::sign::{IdentityPublicKey, Signature};
use xmcredit_crypto::NodeId;

use crate::context::NodeContext;
use crate::proto::{self, node_client::NodeClient};
use crate::store::{ContractState, StoredContract};
use crate::transport::PeerIdentity;
use crate::NodeError;

/// The computations this node can run; contracts for others are refused at proposal,
/// so nobody signs a contract that can never run.
const RUNNABLE: [ComputationKind; 4] =
    [ComputationKind::Psi, ComputationKind::Secagg, ComputationKind::Lookup, ComputationKind::Overthreshold];

fn require_runnable(document: &Contract) -> Result<(), NodeError> {
    if !RUNNABLE.contains(&document.kind()) {
        return Err(NodeError::Refused(format!(
            "contract {} is for {}; this node runs psi, secagg, lookup and overthreshold only",
            document.id,
            document.kind()
        )));
    }
    if document.kind() == ComputationKind::Lookup {
        crate::run::lookup::require_runnable(document)?;
    }
    if document.kind() == ComputationKind::Overthreshold {
        if let Some(both) =
            document.parties_with(Role::Coordinator).find(|p| p.roles.contains(&Role::Contributor))
        {
            return Err(NodeError::Refused(format!(
                "contract {}: {} would be both coordinator and contributor of an overthreshold computation, which this node does not run",
                document.id, both.node
            )));
        }
    }
    Ok(())
}

/// The acknowledgement a contract call returns.
pub fn ack(ctx: &NodeContext, stored: &StoredContract) -> proto::ContractAck {
    let state = stored.state(ctx.now_unix());
    proto::ContractAck {
        contract_id: stored.id(),
        state: state.label().to_string(),
        missing_signatures: state.missing(),
        unreached: Vec::new(),
    }
}

/// The wire form of a stored contract: canonical bytes, signatures, revocations.
pub fn to_message(stored: &StoredContract) -> proto::SignedContractMsg {
    proto::SignedContractMsg {
        canonical: stored.signed.canonical_bytes().to_vec(),
        signatures: stored
            .signed
            .signatures()
            .iter()
            .map(|(node, sig)| proto::PartySignature { node_id: node.to_string(), signature: sig.0.to_vec() })
            .collect(),
        revocations_json: stored.revocations.iter().filter_map(|r| serde_json::to_vec(r).ok()).collect(),
    }
}

fn parse_signature(message: &proto::PartySignature) -> Result<(NodeId, Signature), NodeError> {
    let node = NodeId::new(message.node_id.clone())?;
    let signature = Signature::from_bytes(&message.signature)?;
    Ok((node, signature))
}

/// Adds every signature of `incoming` not yet held; each is verified by
/// `add_signature` against the contract's key for its party.
/// Adds every signature of `incoming` not yet held; returns the signers added (what
/// the audit log records as received).
fn merge_signatures(
    stored: &mut StoredContract,
    incoming: &[proto::PartySignature],
) -> Result<Vec<NodeId>, NodeError> {
    let mut added = Vec::new();
    for signature in incoming {
        let (node, signature) = parse_signature(signature)?;
        if !stored.signed.signatures().iter().any(|(n, _)| *n == node) {
            stored.signed.add_signature(node.clone(), signature)?;
            added.push(node);
        }
    }
    Ok(added)
}

/// Adds every revocation of `incoming` not yet held, each verified against the
/// contract (signed by a party, over this document's digest); returns those added.
fn merge_revocations(
    stored: &mut StoredContract,
    incoming: &[Vec<u8>],
) -> Result<Vec<Revocation>, NodeError> {
    let mut added = Vec::new();
    for json in incoming {
        let revocation: Revocation = serde_json::from_slice(json)
            .map_err(|e| NodeError::Refused(format!("malformed revocation: {e}")))?;
        revocation.verify(&stored.signed)?;
        if !stored.revocations.contains(&revocation) {
            stored.revocations.push(revocation.clone());
            added.push(revocation);
        }
    }
    Ok(added)
}

/// A peer proposes a contract (or sends a copy with more signatures): the caller and
/// this node must be parties, the caller must have signed these bytes, and every
/// signature must verify; the result is merged with what is stored.
pub fn receive_proposal(
    ctx: &NodeContext,
    caller: &PeerIdentity,
    message: proto::SignedContractMsg,
) -> Result<proto::ContractAck, NodeError> {
    let from = &caller.node_id;
    let mut incoming = SignedContract::from_parts(message.canonical, Vec::new())?;
    let document = incoming.contract().clone();
    document
        .party(from)
        .ok_or_else(|| NodeError::Refused(format!("{from} is not a party to contract {}", document.id)))?;
    // The sender must hold the identity key the contract pins for it, not only a
    // certificate for its name, and the contract must not re-key anyone this node knows.
    ctx.check_contract_key(caller, &document)?;
    check_party_keys(ctx, &document)?;
    document
        .party(ctx.node_id())
        .ok_or_else(|| NodeError::Refused(format!("this node is not a party to contract {}", document.id)))?;
    require_runnable(&document)?;
    // The id is scoped by its proposer, who vouches for the document with its own
    // signature: a party cannot take (squat) an id in another party's scope.
    let proposer = document
        .proposer()
        .cloned()
        .ok_or_else(|| NodeError::Refused(format!("contract id {} is not scoped by a party", document.id)))?;
    let own = message.signatures.iter().find(|s| s.node_id == proposer.as_str()).ok_or_else(|| {
        NodeError::Refused(format!(
            "contract {} is in {proposer}'s scope, and the copy {from} sent carries no signature of {proposer}",
            document.id
        ))
    })?;
    let (_, signature) = parse_signature(own)?;
    incoming.add_signature(proposer.clone(), signature)?;
    let mut auto_signed = false;
    let stored = ctx.store.update_contract(document.id.as_str(), |existing| {
        let mut stored = match existing {
            Some(existing) => {
                if existing.signed.canonical_bytes() != incoming.canonical_bytes() {
                    // Only a party of the held contract learns its digest: anyone else
                    // learns no more than that the id is taken (no probing).
                    let detail = if existing.signed.contract().party(from).is_some() {
                        format!(" (digest {})", hex::encode(existing.signed.digest()))
                    } else {
                        String::new()
                    };
                    return Err(NodeError::Refused(format!(
                        "contract id {} is not available with this content{detail}; a changed contract needs a new id",
                        document.id
                    )));
                }
                existing
            }
            None => StoredContract {
                signed: incoming.clone(),
                revocations: Vec::new(),
                received_from: from.to_string(),
                received_unix: ctx.now_unix(),
            },
        };
        merge_signatures(&mut stored, &message.signatures)?;
        merge_revocations(&mut stored, &message.revocations_json)?;
        let auto_sign = !ctx.config.policy.require_operator_approval
            && !stored.signed.signatures().iter().any(|(n, _)| n == ctx.node_id());
        if auto_sign {
            match signing_checks(ctx, stored.signed.contract()) {
                Ok(()) => {
                    stored.signed.sign(ctx.node_id(), &ctx.secrets.identity)?;
                    auto_signed = true;
                }
                // Stored unsigned: the operator sees why in `contract sign`.
                Err(e) => tracing::warn!(contract = %document.id, error = %e, "not signing automatically"),
            }
        }
        Ok(stored)
    })?;
    tracing::info!(contract = %document.id, from = %from, "contract proposal received");
    ctx.audit(
        AuditEvent::ProposalReceived { from: from.clone() },
        Some(&document.id),
        Some(document.kind()),
        vec![from.clone()],
        Default::default(),
        Outcome::Ok,
        Some(stored.signed.digest()),
    );
    if auto_signed {
        audit_contract(ctx, &stored, AuditEvent::Sign { automatic: true }, Outcome::Ok);
    }
    Ok(ack(ctx, &stored))
}

/// Audits a contract action: the contract, its kind, the other parties and its digest.
fn audit_contract(ctx: &NodeContext, stored: &StoredContract, event: AuditEvent, outcome: Outcome) {
    let document = stored.signed.contract();
    ctx.audit(
        event,
        Some(&document.id),
        Some(document.kind()),
        other_parties(ctx, &stored.signed),
        Default::default(),
        outcome,
        Some(stored.signed.digest()),
    );
}

/// A peer sends its own signature over a contract this node holds.
pub fn receive_signature(
    ctx: &NodeContext,
    caller: &PeerIdentity,
    message: proto::ContractSignatureMsg,
) -> Result<proto::ContractAck, NodeError> {
    let from = &caller.node_id;
    let signature = message.signature.ok_or_else(|| NodeError::Refused("no signature in message".into()))?;
    let (node, signature) = parse_signature(&signature)?;
    let mut added = false;
    if &node != from {
        return Err(NodeError::Refused(format!("{from} may only submit its own signature, not {node}'s")));
    }
    let stored = ctx.store.update_contract(&message.contract_id, |existing| {
        let mut stored = existing
            .filter(|stored| stored.signed.contract().party(from).is_some())
            .ok_or_else(|| NodeError::NotFound { what: "contract", id: message.contract_id.clone() })?;
        ctx.check_contract_key(caller, stored.signed.contract())?;
        if message.contract_digest != stored.signed.digest() {
            return Err(NodeError::Refused(format!(
                "signature is for contract digest {}, this node holds {}",
                hex::encode(&message.contract_digest),
                hex::encode(stored.signed.digest())
            )));
        }
        if !stored.signed.signatures().iter().any(|(n, _)| *n == node) {
            stored.signed.add_signature(node.clone(), signature)?;
            added = true;
        }
        Ok(stored)
    })?;
    tracing::info!(contract = %message.contract_id, from = %from, "contract signature received");
    // A repeated signature changes nothing and is not recorded again.
    if added {
        let event = AuditEvent::SignatureReceived { signer: node, from: from.clone() };
        audit_contract(ctx, &stored, event, Outcome::Ok);
    }
    Ok(ack(ctx, &stored))
}

/// A party asks for this node's copy (to pick up signatures or revocations it missed).
/// An unknown id and a contract the caller is not a party to get the same answer, so a
/// peer cannot probe which contracts exist (issue 9).
pub fn fetch(
    ctx: &NodeContext,
    caller: &PeerIdentity,
    id: &str,
) -> Result<proto::SignedContractMsg, NodeError> {
    let not_found = || NodeError::NotFound { what: "contract", id: crate::context::bounded(id) };
    let stored = ctx
        .store
        .contract(id)?
        .filter(|stored| stored.signed.contract().party(&caller.node_id).is_some())
        .ok_or_else(not_found)?;
    ctx.check_contract_key(caller, stored.signed.contract())?;
    Ok(to_message(&stored))
}

/// A party revokes a contract: the revocation must be signed by the caller.
pub fn receive_revocation(
    ctx: &NodeContext,
    caller: &PeerIdentity,
    message: proto::RevocationMsg,
) -> Result<proto::ContractAck, NodeError> {
    let from = &caller.node_id;
    let revocation: Revocation = serde_json::from_slice(&message.revocation_json)
        .map_err(|e| NodeError::Refused(format!("malformed revocation: {e}")))?;
    if &revocation.by != from {
        return Err(NodeError::Refused(format!("{from} sent a revocation signed by {}", revocation.by)));
    }
    let mut added = false;
    let stored = ctx.store.update_contract(revocation.contract_id.as_str(), |existing| {
        let mut stored =
            existing.filter(|stored| stored.signed.contract().party(from).is_some()).ok_or_else(|| {
                NodeError::NotFound { what: "contract", id: revocation.contract_id.to_string() }
            })?;
        ctx.check_contract_key(caller, stored.signed.contract())?;
        added = !merge_revocations(&mut stored, std::slice::from_ref(&message.revocation_json))?.is_empty();
        Ok(stored)
    })?;
    ctx.evict_inactive_psi_sets();
    // A revocation sent again is not recorded again.
    if added {
        let event = AuditEvent::RevocationReceived { from: from.clone(), reason: revocation.reason.clone() };
        audit_contract(ctx, &stored, event, Outcome::Ok);
    }
    Ok(ack(ctx, &stored))
}

/// The contract keys this node's datasets as they are keyed (issue 14): signing a
/// contract that names another key column or key definition would let the other side
/// match its identifiers against keys of another kind. Every dataset the contract names
/// for this node counts (a lookup provider that also queries names two). A dataset not
/// imported yet, or re-imported after signing, is checked when the contract runs
/// (`require_schema`).
fn check_key_definition(ctx: &NodeContext, document: &Contract) -> Result<(), NodeError> {
    for used in document.datasets.iter().filter(|d| &d.party == ctx.node_id()) {
        let Some(meta) = ctx.store.current_dataset(&used.name)? else { continue };
        if used.key != meta.schema.key() {
            return Err(NodeError::Refused(format!(
                "contract {} keys dataset {} by column {}, but the dataset is keyed by column {}",
                document.id,
                used.name,
                used.key,
                meta.schema.key()
            )));
        }
        if &used.key_kind != meta.schema.key_kind() {
            return Err(xmcredit_contracts::ContractError::KeyDefinitionMismatch {
                contract: document.id.clone(),
                dataset: used.name.clone(),
                contract_definition: used.key_kind.definition(),
                dataset_definition: meta.schema.key_kind().definition(),
            }
            .into());
        }
    }
    Ok(())
}

/// Refuses a contract that names, for this node or for a peer whose key the
/// configuration pins, another identity key: a party must not redirect contract
/// traffic for a third party to a key of its choosing.
fn check_party_keys(ctx: &NodeContext, document: &Contract) -> Result<(), NodeError> {
    for party in &document.parties {
        let pinned = if &party.node == ctx.node_id() {
            Some((ctx.secrets.public_key(), "this node's own key"))
        } else {
            // Every pin this node holds: configuration, a contract it signed, first sight.
            ctx.pinned_key(&party.node)?
        };
        if let Some((key, source)) = pinned {
            if key != party.public_key {
                return Err(NodeError::Refused(format!(
                    "contract {} names identity key {} for {}, but {source} says {key}",
                    document.id, party.public_key, party.node
                )));
            }
        }
    }
    Ok(())
}

/// What this node checks before it signs, however the signature comes about (proposing,
/// the operator's `sign`, or signing a peer's proposal automatically).
fn signing_checks(ctx: &NodeContext, document: &Contract) -> Result<(), NodeError> {
    check_quota_ceiling(ctx, document)?;
    check_count_noise(ctx, document)?;
    check_secagg_overlap(ctx, document)?;
    check_key_definition(ctx, document)
}

/// The contracts this node has signed that are neither revoked nor expired, other than
/// `document`, in which it serves `dataset`.
fn live_signed_over<'a>(
    ctx: &NodeContext,
    held: &'a [StoredContract],
    document: &Contract,
    dataset: &str,
) -> impl Iterator<Item = &'a Contract> + 'a {
    let me = ctx.node_id().clone();
    let now = ctx.now_unix();
    let id = document.id.clone();
    let dataset = dataset.to_string();
    held.iter().filter_map(move |stored| {
        let other = stored.signed.contract();
        let signed_by_me = stored.signed.signatures().iter().any(|(n, _)| n == &me);
        let live = !matches!(stored.state(now), ContractState::Revoked { .. }) && other.not_after >= now;
        let same_dataset = other.datasets.iter().any(|d| d.party == me && d.name == dataset);
        (other.id != id && signed_by_me && live && same_dataset).then_some(other)
    })
}

/// What a contract in which this node answers for one of its datasets gives away about
/// that dataset: exact answers, or a count under noise; and to whom.
struct Answers<'a> {
    noise: Option<CountNoise>,
    dataset: String,
    learners: Vec<&'a NodeId>,
}

/// A PSI contract this node serves (its client learns) or a lookup it provides for (its
/// queriers learn, exactly: a provider's rules score 0 for an entity it has no row for,
/// so the totals say which applicants are in the dataset).
fn answers<'a>(me: &NodeId, c: &'a Contract) -> Option<Answers<'a>> {
    let roles = &c.party(me)?.roles;
    let (noise, serving, learning) = match &c.computation {
        Computation::Psi { noise, .. } if roles.contains(&Role::Server) => {
            (*noise, Role::Server, Role::Client)
        }
        Computation::Lookup { .. } if roles.contains(&Role::Provider) => {
            (None, Role::Provider, Role::Querier)
        }
        _ => return None,
    };
    let dataset = c.dataset_for(me, serving)?.name.clone();
    Some(Answers { noise, dataset, learners: c.parties_with(learning).map(|p| &p.node).collect() })
}

/// ε (in thousandths) a noisy contract lets its client spend in any 24 hours: one run
/// per epoch, and a window of a day can hold `ceil(86 400 / epoch_seconds) + 1` epochs'
/// runs (epochs start at `not_before`, not at the quota day's midnight).
fn epsilon_milli_in_a_day(c: &Contract, noise: &CountNoise) -> u64 {
    let runs = 86_400u64.div_ceil(c.epoch_seconds.max(1)) + 1;
    u64::from(noise.epsilon_milli()).saturating_mul(runs)
}

/// Refuses to sign a contract that would make count noise pointless or multiply it
/// (issue 10):
///
/// - a noisy PSI cardinality beside an exact contract (PSI of any form, or a lookup this
///   node provides for) over the same dataset for the same client, or the exact one
///   beside the noisy one: the exact answers hold what the noise hides;
/// - a noisy PSI cardinality that, with the noisy ones this node signed over the same
///   dataset for the same client, would let the client spend more ε in 24 hours than
///   `limits.dataset_epsilon_milli_per_day` ([`epsilon_milli_in_a_day`]).
fn check_count_noise(ctx: &NodeContext, document: &Contract) -> Result<(), NodeError> {
    let me = ctx.node_id();
    let Some(own) = answers(me, document) else { return Ok(()) };
    let held = ctx.store.contracts()?;
    let mut total = own.noise.as_ref().map_or(0, |n| epsilon_milli_in_a_day(document, n));
    let mut others = Vec::new();
    for other in live_signed_over(ctx, &held, document, &own.dataset) {
        let Some(theirs) = answers(me, other) else { continue };
        if theirs.dataset != own.dataset || !theirs.learners.iter().any(|l| own.learners.contains(l)) {
            continue;
        }
        match (&own.noise, &theirs.noise) {
            (Some(_), None) | (None, Some(_)) => {
                let (noisy, exact) =
                    if own.noise.is_some() { (&document.id, &other.id) } else { (&other.id, &document.id) };
                return Err(NodeError::Refused(format!(
                    "contract {noisy} adds noise to a count over dataset {} that contract {exact} gives the same bank exactly; this node does not sign both (revoke one first)",
                    own.dataset
                )));
            }
            (Some(_), Some(other_noise)) => {
                let milli = epsilon_milli_in_a_day(other, other_noise);
                total = total.saturating_add(milli);
                others.push(format!("{} ({milli})", other.id));
            }
            (None, None) => {}
        }
    }
    let ceiling = ctx.config.limits.dataset_epsilon_milli_per_day;
    if let (Some(noise), true) = (&own.noise, total > ceiling) {
        return Err(NodeError::Refused(format!(
            "signing {} would let its client spend ε {total}/1000 in 24 hours on dataset {} (this contract {}{}), above this node's ceiling of {ceiling}/1000 (limits.dataset_epsilon_milli_per_day)",
            document.id,
            own.dataset,
            epsilon_milli_in_a_day(document, noise),
            if others.is_empty() { String::new() } else { format!(", already signed: {}", others.join(", ")) }
        )));
    }
    Ok(())
}

/// Refuses to sign a contract that, with the contracts this node has already signed,
/// would let one querier have more lookups a day over one of this node's datasets than
/// `limits.dataset_lookups_per_day` (issue 10: quotas that cannot be multiplied by
/// signing a second contract). Only contracts where this node serves (PSI server,
/// lookup provider) count; revoked and expired ones do not.
fn check_quota_ceiling(ctx: &NodeContext, document: &Contract) -> Result<(), NodeError> {
    let me = ctx.node_id();
    let serves = |c: &Contract| {
        c.party(me).is_some_and(|p| p.roles.iter().any(|r| matches!(r, Role::Server | Role::Provider)))
    };
    if !serves(document) {
        return Ok(());
    }
    let serving = if document.kind() == ComputationKind::Psi { Role::Server } else { Role::Provider };
    let Some(dataset) = document.dataset_for(me, serving).map(|d| d.name.clone()) else {
        return Ok(());
    };
    let ceiling = ctx.config.limits.dataset_lookups_per_day;
    let held = ctx.store.contracts()?;
    for (querier, quota) in &document.limits.lookups_per_day {
        let mut total = *quota;
        let mut others = Vec::new();
        for other in live_signed_over(ctx, &held, document, &dataset).filter(|c| serves(c)) {
            if let Some(q) = other.limits.lookups_per_day.get(querier) {
                total = total.saturating_add(*q);
                others.push(format!("{} ({q})", other.id));
            }
        }
        if total > ceiling {
            return Err(NodeError::Refused(format!(
                "signing {} would let {querier} have {total} lookups a day over dataset {dataset} (this contract {quota}{}), above this node's ceiling of {ceiling} (limits.dataset_lookups_per_day)",
                document.id,
                if others.is_empty() { String::new() } else { format!(", already signed: {}", others.join(", ")) }
            )));
        }
    }
    Ok(())
}

/// Refuses to sign a second SecAgg contract in which this node contributes the same
/// column of the same dataset as in a contract it already signed, but with another set
/// of contributors (issue 10): the coordinator of both could subtract the two sums and
/// recover the inputs of the banks in one set and not the other. Unless either contract
/// declares noise: the difference then carries that noise (ARCHITECTURE.md, "Privacy
/// limits", for what repeated noisy releases compose to).
fn check_secagg_overlap(ctx: &NodeContext, document: &Contract) -> Result<(), NodeError> {
    let me = ctx.node_id();
    let contributes = |c: &Contract| c.party(me).is_some_and(|p| p.roles.contains(&Role::Contributor));
    let column_of = |c: &Contract| match &c.computation {
        Computation::Secagg { value_column, .. } => Some(value_column.clone()),
        _ => None,
    };
    let noisy = |c: &Contract| matches!(&c.computation, Computation::Secagg { noise: Some(_), .. });
    let (Some(column), true) = (column_of(document), contributes(document)) else { return Ok(()) };
    let dataset_of = |c: &Contract| c.datasets.iter().find(|d| &d.party == me).map(|d| d.name.clone());
    // As sets: the order parties are listed in does not change what is summed.
    let contributors = |c: &Contract| -> std::collections::BTreeSet<NodeId> {
        c.parties_with(Role::Contributor).map(|p| p.node.clone()).collect()
    };
    let dataset = dataset_of(document);
    let set = contributors(document);
    // Every contract this node ever signed counts, expired or revoked too: the
    // coordinator keeps the sums they produced.
    for stored in ctx.store.contracts()? {
        let other = stored.signed.contract();
        let signed_by_me = stored.signed.signatures().iter().any(|(n, _)| n == me);
        if other.id == document.id || !signed_by_me || !contributes(other) {
            continue;
        }
        if column_of(other).as_ref() == Some(&column)
            && dataset_of(other) == dataset
            && contributors(other) != set
            && !noisy(document)
            && !noisy(other)
        {
            let names = |v: &std::collections::BTreeSet<NodeId>| {
                v.iter().map(NodeId::as_str).collect::<Vec<_>>().join(", ")
            };
            return Err(NodeError::Refused(format!(
                "{} sums column {column} of dataset {} over contributors [{}], and {} (already signed) sums it over [{}]: the coordinator could subtract the two sums; refused",
                document.id,
                dataset.as_deref().unwrap_or("-"),
                names(&set),
                other.id,
                names(&contributors(other))
            )));
        }
    }
    Ok(())
}

/// The other parties of a contract.
fn other_parties(ctx: &NodeContext, signed: &SignedContract) -> Vec<NodeId> {
    signed.contract().parties.iter().map(|p| p.node.clone()).filter(|n| n != ctx.node_id()).collect()
}

/// The other parties of a contract with the identity keys it pins for them: contract
/// traffic goes only to a peer that proves that key.
fn other_party_keys(ctx: &NodeContext, signed: &SignedContract) -> Vec<(NodeId, IdentityPublicKey)> {
    signed
        .contract()
        .parties
        .iter()
        .filter(|p| &p.node != ctx.node_id())
        .map(|p| (p.node.clone(), p.public_key))
        .collect()
}

/// Sends `f` to every other party concurrently; returns the failures by peer.
async fn broadcast<F, Fut>(
    ctx: &Arc<NodeContext>,
    peers: Vec<(NodeId, IdentityPublicKey)>,
    f: F,
) -> Vec<(NodeId, String)>
where
    F: Fn(NodeClient<tonic::transport::Channel>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send,
{
    let mut tasks = tokio::task::JoinSet::new();
    for (peer, key) in peers {
        let ctx = ctx.clone();
        let f = f.clone();
        tasks.spawn(async move {
            let result = match ctx.channel_expecting(&peer, Some(key)).await {
                Ok(channel) => {
                    f(crate::service::peer_client(channel)).await.map_err(|s| s.message().to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            (peer, result)
        });
    }
    let mut failures = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((_, Ok(()))) => {}
            Ok((peer, Err(reason))) => failures.push((peer, reason)),
            Err(e) => failures.push((ctx.node_id().clone(), format!("task failed: {e}"))),
        }
    }
    failures
}

fn note_failures(ack: &mut proto::ContractAck, failures: &[(NodeId, String)]) {
    for (peer, reason) in failures {
        tracing::warn!(peer = %peer, reason = %reason, "could not reach party");
        ack.unreached.push(format!("{peer}: {reason}"));
    }
}

/// The operator proposes a contract from TOML: this node signs it, stores it and sends
/// it to every other party.
pub async fn propose(ctx: &Arc<NodeContext>, toml_text: &str) -> Result<proto::ContractAck, NodeError> {
    let document = Contract::from_toml_str(toml_text)?;
    if document.party(ctx.node_id()).is_none() {
        return Err(NodeError::Refused(format!("this node is not a party to contract {}", document.id)));
    }
    check_party_keys(ctx, &document)?;
    if document.proposer() != Some(ctx.node_id()) {
        return Err(NodeError::Refused(format!(
            "contract id {} is not in this node's scope: ids this node proposes start with \"{}.\"",
            document.id,
            ctx.node_id()
        )));
    }
    require_runnable(&document)?;
    let mut signed = SignedContract::new(&document)?;
    signed.sign(ctx.node_id(), &ctx.secrets.identity)?;
    let stored = ctx.store.update_contract(document.id.as_str(), |existing| {
        if existing.is_some() {
            return Err(NodeError::Refused(format!(
                "contract {} exists; a changed contract needs a new id",
                document.id
            )));
        }
        // Under the contract lock, like `sign`: no concurrent signature slips between
        // these checks and this one.
        signing_checks(ctx, &document)?;
        Ok(StoredContract {
            signed: signed.clone(),
            revocations: Vec::new(),
            received_from: ctx.node_id().to_string(),
            received_unix: ctx.now_unix(),
        })
    })?;
    audit_contract(ctx, &stored, AuditEvent::Propose, Outcome::Ok);
    let message = to_message(&stored);
    let failures = broadcast(ctx, other_party_keys(ctx, &signed), move |mut client| {
        let message = message.clone();
        async move { client.propose_contract(message).await.map(|_| ()) }
    })
    .await;
    let stored = sync_signatures(ctx, document.id.as_str()).await?;
    let mut reply = ack(ctx, &stored);
    note_failures(&mut reply, &failures);
    Ok(reply)
}

/// The operator approves a contract this node holds: sign it and send the signature to
/// every other party.
pub async fn sign(ctx: &Arc<NodeContext>, id: &str) -> Result<proto::ContractAck, NodeError> {
    let mut signed_now = false;
    let stored = ctx.store.update_contract(id, |existing| {
        let mut stored =
            existing.ok_or_else(|| NodeError::NotFound { what: "contract", id: id.to_string() })?;
        if !stored.signed.signatures().iter().any(|(n, _)| n == ctx.node_id()) {
            signing_checks(ctx, stored.signed.contract())?;
            stored.signed.sign(ctx.node_id(), &ctx.secrets.identity)?;
            signed_now = true;
        }
        Ok(stored)
    })?;
    // Signing again only re-sends the signature: recorded once, when it was made. The
    // console's Sign comes through here too (the admin RPC), so it records the same.
    if signed_now {
        audit_contract(ctx, &stored, AuditEvent::Sign { automatic: false }, Outcome::Ok);
    }
    let signature = stored
        .signed
        .signatures()
        .iter()
        .find(|(n, _)| n == ctx.node_id())
        .map(|(n, s)| proto::PartySignature { node_id: n.to_string(), signature: s.0.to_vec() });
    let message = proto::ContractSignatureMsg {
        contract_id: id.to_string(),
        contract_digest: stored.signed.digest().to_vec(),
        signature,
    };
    let failures = broadcast(ctx, other_party_keys(ctx, &stored.signed), move |mut client| {
        let message = message.clone();
        async move { client.submit_signature(message).await.map(|_| ()) }
    })
    .await;
    let stored = sync_signatures(ctx, id).await?;
    let mut reply = ack(ctx, &stored);
    note_failures(&mut reply, &failures);
    Ok(reply)
}

/// Picks up signatures and revocations this node missed from the other parties'
/// copies. Copies are fetched first, then merged under the contract lock.
pub async fn sync_signatures(ctx: &Arc<NodeContext>, id: &str) -> Result<StoredContract, NodeError> {
    let held = ctx.store.require_contract(id)?;
    // All parties at once: a run waits for one connect timeout at most, not one per
    // unreachable party.
    let mut fetches = tokio::task::JoinSet::new();
    for (peer, key) in other_party_keys(ctx, &held.signed) {
        let ctx = ctx.clone();
        let request = proto::ContractQuery { contract_id: id.to_string() };
        fetches.spawn(async move {
            let channel = ctx.channel_expecting(&peer, Some(key)).await.ok()?;
            let reply = crate::service::peer_client(channel).fetch_contract(request).await.ok()?;
            Some((peer, reply.into_inner()))
        });
    }
    let mut copies = Vec::new();
    while let Some(joined) = fetches.join_next().await {
        let Ok(Some((peer, copy))) = joined else { continue };
        if copy.canonical != held.signed.canonical_bytes() {
            tracing::warn!(peer = %peer, contract = id, "peer holds different contract bytes; ignored");
            continue;
        }
        copies.push((peer, copy));
    }
    let mut received = Vec::new();
    let stored = ctx.store.update_contract(id, |existing| {
        let mut stored = existing.ok_or_else(|| NodeError::NotFound { what: "contract", id: id.to_string() })?;
        for (peer, copy) in &copies {
            // One bad entry in a peer's copy is that peer's problem, not a reason to
            // drop the good ones.
            for signature in &copy.signatures {
                match merge_signatures(&mut stored, std::slice::from_ref(signature)) {
                    Ok(added) => received.extend(
                        added.into_iter().map(|signer| AuditEvent::SignatureReceived { signer, from: peer.clone() }),
                    ),
                    Err(e) => {
                        tracing::warn!(peer = %peer, contract = id, error = %e, "bad signature in a peer's copy; ignored")
                    }
                }
            }
            for revocation in &copy.revocations_json {
                match merge_revocations(&mut stored, std::slice::from_ref(revocation)) {
                    Ok(added) => received.extend(
                        added.into_iter().map(|r| AuditEvent::RevocationReceived { from: r.by, reason: r.reason }),
                    ),
                    Err(e) => {
                        tracing::warn!(peer = %peer, contract = id, error = %e, "bad revocation in a peer's copy; ignored")
                    }
                }
            }
        }
        Ok(stored)
    })?;
    // Signatures and revocations picked up here are recorded as those pushed to this
    // node are: each once, when it first arrives.
    for event in received {
        audit_contract(ctx, &stored, event, Outcome::Ok);
    }
    Ok(stored)
}

/// The operator revokes a contract: sign a revocation, store it, send it to all.
pub async fn revoke(ctx: &Arc<NodeContext>, id: &str, reason: &str) -> Result<proto::ContractAck, NodeError> {
    let mut revocation = None;
    let stored = ctx.store.update_contract(id, |existing| {
        let mut stored =
            existing.ok_or_else(|| NodeError::NotFound { what: "contract", id: id.to_string() })?;
        let signed =
            Revocation::sign(&stored.signed, ctx.node_id(), &ctx.secrets.identity, reason, ctx.now_unix())?;
        stored.revocations.push(signed.clone());
        revocation = Some(signed);
        Ok(stored)
    })?;
    let revocation = revocation.ok_or_else(|| NodeError::Internal("revocation not made".into()))?;
    ctx.evict_inactive_psi_sets();
    audit_contract(ctx, &stored, AuditEvent::Revoke { reason: reason.to_string() }, Outcome::Ok);
    let revocation_json = serde_json::to_vec(&revocation).map_err(|e| NodeError::Internal(e.to_string()))?;
    let failures = broadcast(ctx, other_party_keys(ctx, &stored.signed), move |mut client| {
        let message = proto::RevocationMsg { revocation_json: revocation_json.clone() };
        async move { client.revoke_contract(message).await.map(|_| ()) }
    })
    .await;
    let mut reply = ack(ctx, &stored);
    note_failures(&mut reply, &failures);
    Ok(reply)
}
