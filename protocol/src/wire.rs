//! Length-checked binary encoding shared by the protocols' wire messages.
//!
//! Every message is `version (1) || kind (1) || binding || body`, integers big-endian
//! (I2OSP), the binding the same bytes as [`SessionBinding::to_bytes`]:
//! `I2OSP(len(contract), 2) || contract || I2OSP(epoch, 8) || session (16)`.
//!
//! The [`Reader`] never reads past the end, never allocates from a count it has not
//! checked against the bytes that are actually left, and refuses trailing bytes, all
//! with [`ProtocolError::Malformed`] naming the message and what was wrong. It checks
//! shape only; the states check binding, sender and meaning.

use xmcredit_crypto::{ContractId, Epoch, SessionId};

use crate::{ProtocolError, SessionBinding};

/// Builds one message. Writing cannot fail: counts the caller passes are bounded by the
/// protocol's limits, which the receiving [`Reader`] checks again.
pub(crate) struct Writer(Vec<u8>);

impl Writer {
    /// Starts a message with its header and binding, reserving `body_capacity` bytes.
    pub(crate) fn new(version: u8, kind: u8, binding: &SessionBinding, body_capacity: usize) -> Self {
        let contract = binding.contract.as_bytes();
        let mut out = Vec::with_capacity(2 + 2 + contract.len() + 8 + 16 + body_capacity);
        out.push(version);
        out.push(kind);
        out.extend_from_slice(&binding.to_bytes());
        Self(out)
    }

    pub(crate) fn u8(&mut self, value: u8) {
        self.0.push(value);
    }

    pub(crate) fn u16(&mut self, value: u16) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }

    pub(crate) fn u32(&mut self, value: u32) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }

    pub(crate) fn u64(&mut self, value: u64) {
        self.0.extend_from_slice(&value.to_be_bytes());
    }

    /// A list count as I2OSP(count, 4). A count above `u32::MAX` is a local bug; it is
    /// written as `u32::MAX`, which every receiver refuses as over its limit.
    pub(crate) fn count(&mut self, count: usize) {
        self.u32(u32::try_from(count).unwrap_or(u32::MAX));
    }

    pub(crate) fn bytes(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// Reads one message front to back.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader whose errors name `what` (e.g. "PSI message").
    pub(crate) fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Self { rest: bytes, what }
    }

    /// Names the message in later errors, once its kind byte is known.
    pub(crate) fn rename(&mut self, what: &'static str) {
        self.what = what;
    }

    pub(crate) fn malformed(&self, reason: impl Into<String>) -> ProtocolError {
        ProtocolError::Malformed { what: self.what, reason: reason.into() }
    }

    /// Reads the version byte and refuses any other than `version`.
    pub(crate) fn version(&mut self, version: u8) -> Result<(), ProtocolError> {
        let got = self.u8()?;
        if got != version {
            return Err(self.malformed(format!("wire version {got}, this node speaks {version}")));
        }
        Ok(())
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.rest.len() < n {
            return Err(self.malformed(format!("truncated: {n} more bytes needed, {} left", self.rest.len())));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtocolError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, ProtocolError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, ProtocolError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, ProtocolError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// The session binding, with the contract id checked against its syntax.
    pub(crate) fn binding(&mut self) -> Result<SessionBinding, ProtocolError> {
        let len = usize::from(self.u16()?);
        let raw = self.take(len)?;
        let text = std::str::from_utf8(raw).map_err(|_| self.malformed("contract id is not UTF-8"))?;
        let contract = ContractId::new(text).map_err(|e| self.malformed(e.to_string()))?;
        let epoch = Epoch(self.u64()?);
        let session = SessionId(self.array()?);
        Ok(SessionBinding { contract, epoch, session })
    }

    /// An I2OSP(count, 4) list count, refused above `max` or when the bytes left cannot
    /// hold `count` entries of at least `min_entry_len` bytes, so a forged count can
    /// neither make the receiver allocate nor loop past the message.
    pub(crate) fn count(&mut self, max: usize, min_entry_len: usize) -> Result<usize, ProtocolError> {
        let raw = self.u32()?;
        let count = usize::try_from(raw).map_err(|_| self.malformed(format!("count {raw} too large")))?;
        if count > max {
            return Err(self.malformed(format!("count {count} exceeds the limit of {max}")));
        }
        if count.saturating_mul(min_entry_len) > self.rest.len() {
            return Err(self.malformed(format!(
                "truncated: {count} entries of {min_entry_len} bytes cannot fit in the {} bytes left",
                self.rest.len()
            )));
        }
        Ok(count)
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Refuses bytes after the last field.
    pub(crate) fn finish(self) -> Result<(), ProtocolError> {
        if !self.rest.is_empty() {
            return Err(self.malformed(format!("{} trailing bytes", self.rest.len())));
        }
        Ok(())
    }
}
