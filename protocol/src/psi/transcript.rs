//! The transcript digest a node writes to its audit log (design.md, "Contracts": every
//! run is logged with the digest of its transcript).
//!
//! Each direction of the channel is ordered, but the two directions interleave
//! differently at the two ends (the client may send chunk 2 before it sees the reply to
//! chunk 0). So each direction is hashed on its own and the two are combined:
//!
//! ```text
//! D_cs   = SHA-256( for each message C → S, in order: I2OSP(len, 8) || message bytes )
//! D_sc   = SHA-256( for each message S → C, in order: I2OSP(len, 8) || message bytes )
//! digest = SHA-256( "xmcredit psi transcript v1" || D_cs || D_sc )
//! ```
//!
//! Both parties of an honest run compute the same digest, so two nodes' audit logs can
//! be compared entry by entry. The lookup query session uses the same construction
//! under its own label, `"xmcredit lookup transcript v1"` (the querier is the client
//! side, the provider the server side).

use sha2::{Digest, Sha256};

const LABEL: &[u8] = b"xmcredit psi transcript v1";

/// Which end of the channel this transcript is kept at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Server,
}

#[derive(Clone, Debug)]
pub(crate) struct Transcript {
    label: &'static [u8],
    side: Side,
    client_to_server: Sha256,
    server_to_client: Sha256,
    bytes_sent: u64,
    bytes_received: u64,
}

/// What a finished transcript reports.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TranscriptSummary {
    pub(crate) digest: [u8; 32],
    pub(crate) bytes_sent: u64,
    pub(crate) bytes_received: u64,
}

impl Transcript {
    pub(crate) fn new(side: Side) -> Self {
        Self::with_label(LABEL, side)
    }

    /// A transcript of another protocol, domain-separated by its own `label`.
    pub(crate) fn with_label(label: &'static [u8], side: Side) -> Self {
        Self {
            label,
            side,
            client_to_server: Sha256::new(),
            server_to_client: Sha256::new(),
            bytes_sent: 0,
            bytes_received: 0,
        }
    }

    pub(crate) fn sent(&mut self, message: &[u8]) {
        self.bytes_sent += message.len() as u64;
        let to_server = self.side == Side::Client;
        self.absorb(to_server, message);
    }

    pub(crate) fn received(&mut self, message: &[u8]) {
        self.bytes_received += message.len() as u64;
        let to_server = self.side == Side::Server;
        self.absorb(to_server, message);
    }

    fn absorb(&mut self, to_server: bool, message: &[u8]) {
        let hasher = if to_server { &mut self.client_to_server } else { &mut self.server_to_client };
        hasher.update((message.len() as u64).to_be_bytes());
        hasher.update(message);
    }

    pub(crate) fn finish(self) -> TranscriptSummary {
        let mut hasher = Sha256::new();
        hasher.update(self.label);
        hasher.update(self.client_to_server.finalize());
        hasher.update(self.server_to_client.finalize());
        TranscriptSummary {
            digest: hasher.finalize().into(),
            bytes_sent: self.bytes_sent,
            bytes_received: self.bytes_received,
        }
    }
}
