//! What a node actually received and sent in one job, counted by class (issue 10, the
//! measured observation report). The counts are taken from the protocol messages as
//! they cross this node's streams (decoded, so a count is what the bytes held, not what
//! the state machine meant to send), plus what the node wrote to its outputs. The job
//! record keeps them; `status` returns them; the simulator compares them with what the
//! contract grants each node.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use xmcredit_protocol::lookup::LookupMessage;
use xmcredit_protocol::overthreshold::OverthresholdMessage;
use xmcredit_protocol::psi::PsiMessage;
use xmcredit_protocol::secagg::SecAggMessage;

/// Items of each class in one direction. Field names are the report's and stable.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counts {
    /// OPRF inputs blinded by their owner (`r·H(x)`).
    pub blinded_elements: u64,
    /// OPRF evaluations (`k·r·H(x)`).
    pub evaluated_elements: u64,
    /// Truncated tags (a PSI server's set; a both-form client's matches).
    pub tags: u64,
    /// Labels encrypted under per-element pads (PSI labels form).
    pub encrypted_labels: u64,
    /// SecAgg masked input vectors.
    pub masked_vectors: u64,
    /// SecAgg share pairs sealed under pairwise keys.
    pub sealed_shares: u64,
    /// SecAgg shares revealed in round 4 (of self masks, or of a dropped node's mask key).
    pub revealed_shares: u64,
    /// SecAgg signed public keys (advertised, or listed by the coordinator).
    pub public_keys: u64,
    /// Unmasked results: a SecAgg sum the coordinator reconstructed.
    pub unmasked_outputs: u64,
    /// Entries of a lookup's padded vector.
    pub padded_entries: u64,
    /// Set sizes announced (a PSI, lookup or overthreshold Hello, a PSI HelloAck).
    pub set_sizes_announced: u64,
    /// Overthreshold result entries: a contributor's own tags with their multiplicity.
    pub multiplicities: u64,
    /// Dummy replies a PSI server announced in a noisy cardinality session (its
    /// HelloAck): evaluated elements that are not evaluations of the client's elements.
    pub noise_dummies: u64,
}

impl Counts {
    /// The classes with a non-zero count, by report name.
    pub fn nonzero(&self) -> BTreeMap<&'static str, u64> {
        [
            ("blinded_elements", self.blinded_elements),
            ("evaluated_elements", self.evaluated_elements),
            ("tags", self.tags),
            ("encrypted_labels", self.encrypted_labels),
            ("masked_vectors", self.masked_vectors),
            ("sealed_shares", self.sealed_shares),
            ("revealed_shares", self.revealed_shares),
            ("public_keys", self.public_keys),
            ("unmasked_outputs", self.unmasked_outputs),
            ("padded_entries", self.padded_entries),
            ("set_sizes_announced", self.set_sizes_announced),
            ("multiplicities", self.multiplicities),
            ("noise_dummies", self.noise_dummies),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect()
    }

    fn psi(&mut self, message: &PsiMessage) {
        match message {
            PsiMessage::Hello(_) => self.set_sizes_announced += 1,
            PsiMessage::HelloAck(ack) => {
                self.set_sizes_announced += 1;
                self.noise_dummies += u64::from(ack.dummies.unwrap_or(0));
            }
            PsiMessage::BlindedChunk(chunk) => self.blinded_elements += chunk.elements.len() as u64,
            PsiMessage::EvaluatedChunk(chunk) => self.evaluated_elements += chunk.elements.len() as u64,
            PsiMessage::TagChunk(chunk) => {
                self.tags += chunk.tags.len() as u64;
                self.encrypted_labels += chunk.labels.len() as u64;
            }
            PsiMessage::MatchReport(report) => self.tags += report.tags.len() as u64,
            PsiMessage::ServerDone(_) => {}
        }
    }

    fn secagg(&mut self, message: &SecAggMessage) {
        match message {
            SecAggMessage::AdvertiseKeys(_) => self.public_keys += 1,
            SecAggMessage::KeyList(list) => self.public_keys += list.entries.len() as u64,
            SecAggMessage::EncryptedShares(shares) => self.sealed_shares += shares.shares.len() as u64,
            SecAggMessage::ShareRelay(relay) => self.sealed_shares += relay.shares.len() as u64,
            SecAggMessage::MaskedInput(_) => self.masked_vectors += 1,
            SecAggMessage::UnmaskRequest(_) => {}
            SecAggMessage::UnmaskResponse(response) => {
                self.revealed_shares +=
                    (response.self_mask_shares.len() + response.mask_key_shares.len()) as u64
            }
        }
    }

    fn lookup(&mut self, message: &LookupMessage) {
        match message {
            LookupMessage::Hello(_) => self.set_sizes_announced += 1,
            LookupMessage::BlindedChunk(chunk) => self.blinded_elements += chunk.elements.len() as u64,
            LookupMessage::EvaluatedChunk(chunk) => self.evaluated_elements += chunk.elements.len() as u64,
            LookupMessage::VectorChunk(chunk) => self.padded_entries += chunk.entries.len() as u64,
        }
    }

    fn overthreshold(&mut self, message: &OverthresholdMessage) {
        match message {
            OverthresholdMessage::Announce(_) => {}
            OverthresholdMessage::Hello(_) => self.set_sizes_announced += 1,
            OverthresholdMessage::BlindedChunk(chunk) => self.blinded_elements += chunk.elements.len() as u64,
            OverthresholdMessage::EvaluatedChunk(chunk) => {
                self.evaluated_elements += chunk.elements.len() as u64
            }
            OverthresholdMessage::TagChunk(chunk) => self.tags += chunk.tags.len() as u64,
            OverthresholdMessage::ResultChunk(chunk) => self.multiplicities += chunk.entries.len() as u64,
        }
    }
}

/// One job's observation: both directions and the outputs written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Observed {
    pub received: Counts,
    pub sent: Counts,
    /// Output form (`intersection`, `cardinality`, `labels`, `sum`, `scores`,
    /// `own_matches`, `histogram`) → entries this node wrote to its outputs (file or report to its own operator).
    pub written: BTreeMap<String, u64>,
}

/// Which way a message crossed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Received,
    Sent,
}

impl Observed {
    fn side(&mut self, direction: Direction) -> &mut Counts {
        match direction {
            Direction::Received => &mut self.received,
            Direction::Sent => &mut self.sent,
        }
    }

    /// Counts a PSI message's bytes; bytes that do not decode count nothing (the
    /// protocol refuses them).
    pub fn psi_bytes(&mut self, direction: Direction, bytes: &[u8]) {
        if let Ok(message) = PsiMessage::from_bytes(bytes) {
            self.side(direction).psi(&message);
        }
    }

    pub fn psi(&mut self, direction: Direction, message: &PsiMessage) {
        self.side(direction).psi(message);
    }

    pub fn secagg(&mut self, direction: Direction, message: &SecAggMessage) {
        self.side(direction).secagg(message);
    }

    pub fn lookup_bytes(&mut self, direction: Direction, bytes: &[u8]) {
        if let Ok(message) = LookupMessage::from_bytes(bytes) {
            self.side(direction).lookup(&message);
        }
    }

    pub fn lookup(&mut self, direction: Direction, message: &LookupMessage) {
        self.side(direction).lookup(message);
    }

    pub fn overthreshold_bytes(&mut self, direction: Direction, bytes: &[u8]) {
        if let Ok(message) = OverthresholdMessage::from_bytes(bytes) {
            self.side(direction).overthreshold(&message);
        }
    }

    /// `entries` of output `form` written.
    pub fn wrote(&mut self, form: &str, entries: u64) {
        *self.written.entry(form.to_string()).or_default() += entries;
    }
}
