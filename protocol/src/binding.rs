//! Every protocol message is bound to the contract, the epoch and the session it
//! belongs to; the sender is the peer the transport authenticated (mutual TLS). A
//! message whose binding differs from the receiving state's is refused, which is what
//! makes a message of another run (a replay) useless.

use xmcredit_crypto::{ContractId, Epoch, SessionId};

use crate::ProtocolError;

/// The (contract, epoch, session) a protocol run is bound to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionBinding {
    pub contract: ContractId,
    pub epoch: Epoch,
    pub session: SessionId,
}

impl SessionBinding {
    /// Refuses a message bound to anything else, naming the first field that differs.
    pub fn check(&self, received: &SessionBinding) -> Result<(), ProtocolError> {
        if self.contract != received.contract {
            return Err(ProtocolError::WrongBinding {
                field: "contract",
                expected: self.contract.to_string(),
                got: received.contract.to_string(),
            });
        }
        if self.epoch != received.epoch {
            return Err(ProtocolError::WrongBinding {
                field: "epoch",
                expected: self.epoch.to_string(),
                got: received.epoch.to_string(),
            });
        }
        if self.session != received.session {
            return Err(ProtocolError::WrongBinding {
                field: "session",
                expected: self.session.to_string(),
                got: received.session.to_string(),
            });
        }
        Ok(())
    }

    /// Canonical bytes of the binding, for signatures and associated data:
    /// `I2OSP(len(contract), 2) || contract || I2OSP(epoch, 8) || session (16 bytes)`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let contract = self.contract.as_bytes();
        let mut out = Vec::with_capacity(2 + contract.len() + 8 + 16);
        out.extend_from_slice(&(contract.len() as u16).to_be_bytes());
        out.extend_from_slice(contract);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(self.session.as_bytes());
        out
    }
}
