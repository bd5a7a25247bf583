//! The server's expensive, session-independent part: `k · H(y)` for all of Y and the
//! encrypted labels, built once per (contract, epoch, dataset version) and shared by
//! every session (design.md computation 1: "S sends its tag set ... cacheable per
//! (contract, epoch, dataset version)").

use std::collections::HashMap;
use std::fmt;

use xmcredit_crypto::group::ElementBytes;
use xmcredit_crypto::oprf::OprfKey;
use xmcredit_crypto::set::{evaluate_own_batch, TagContext, UnblindedElement, MAX_TAG_BITS};
use xmcredit_crypto::{ContractId, Epoch};

use super::messages::{EncryptedLabels, MAX_LABEL_LEN};
use crate::{ProtocolError, SessionBinding};

/// The version of a dataset as the node's store numbers it; a re-import is a new
/// version, so a cached [`ServerSet`] of the old data is never used for the new.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DatasetVersion(pub u64);

/// What a [`ServerSet`] was built for: the node's cache key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServerSetId {
    pub contract: ContractId,
    pub epoch: Epoch,
    pub dataset: DatasetVersion,
}

/// `N_y = k · H(y)` for every `y` in Y, in Y's order, and (labels form) each label
/// encrypted as `label XOR pad(N_y)`.
///
/// A session only adds the cheap part: one SHA-512 per element for its tags (their
/// length depends on the client's set size). Share it between sessions with an `Arc`.
///
/// The elements are as sensitive as the key (with them, anyone could test a guessed
/// `x` against Y once they hold one OPRF output), so `Debug` shows only sizes.
pub struct ServerSet {
    id: ServerSetId,
    /// `pkS = k · G` of the key the set was built with, so a session can refuse a set
    /// made under another key (a rotated master secret, a mix-up in the cache).
    key_public: ElementBytes,
    elements: Vec<UnblindedElement>,
    labels: Option<EncryptedLabels>,
}

impl ServerSet {
    /// Evaluates the OPRF on every element of Y (in parallel, inside crypto).
    ///
    /// Refuses a repeated element: its two tags would be equal, telling every client
    /// that Y holds a duplicate (import reports duplicate codes, design.md "Entities").
    pub fn build<I: AsRef<[u8]> + Sync>(
        key: &OprfKey,
        id: ServerSetId,
        elements: &[I],
    ) -> Result<Self, ProtocolError> {
        refuse_duplicates("server", elements)?;
        let evaluated = evaluate_own_batch(key, elements).map_err(|e| ProtocolError::Crypto(e.source))?;
        Ok(Self { id, key_public: key.public_key(), elements: evaluated, labels: None })
    }

    /// Like [`ServerSet::build`], with one label per element for the labels form.
    ///
    /// Every label must have the same length (at most [`MAX_LABEL_LEN`]): a client sees
    /// the ciphertext of every label, matched or not, and ciphertexts of different
    /// lengths would tell it something about the labels of elements it does not hold.
    /// Encode labels at a fixed width before building.
    ///
    /// Pads do not depend on the tag length (crypto::set: `pad = SHA-512("xmcredit pad"
    /// || context || N || I2OSP(block, 4))`), so the ciphertexts are made here, once.
    pub fn build_with_labels<I: AsRef<[u8]> + Sync, L: AsRef<[u8]>>(
        key: &OprfKey,
        id: ServerSetId,
        elements: &[I],
        labels: &[L],
    ) -> Result<Self, ProtocolError> {
        if labels.len() != elements.len() {
            return Err(ProtocolError::InvalidLabels {
                reason: format!("{} labels for {} elements", labels.len(), elements.len()),
            });
        }
        let label_len = labels.first().map_or(0, |label| label.as_ref().len());
        if label_len > MAX_LABEL_LEN {
            return Err(ProtocolError::InvalidLabels {
                reason: format!("labels of {label_len} bytes, the limit is {MAX_LABEL_LEN}"),
            });
        }
        if let Some(index) = labels.iter().position(|label| label.as_ref().len() != label_len) {
            return Err(ProtocolError::InvalidLabels {
                reason: format!(
                    "label {index} has {} bytes, label 0 has {label_len}; all labels must have one length",
                    labels[index].as_ref().len()
                ),
            });
        }
        let mut set = Self::build(key, id, elements)?;
        let context = TagContext::new(&set.id.contract, set.id.epoch, MAX_TAG_BITS)?;
        let mut encrypted = EncryptedLabels::with_capacity(labels.len(), labels.len() * label_len);
        for (element, label) in set.elements.iter().zip(labels) {
            context.xor_pad(element, encrypted.push_for_encryption(label.as_ref()));
        }
        set.labels = Some(encrypted);
        Ok(set)
    }

    pub fn id(&self) -> &ServerSetId {
        &self.id
    }

    /// `m = |Y|`.
    pub fn len(&self) -> usize {
        self.elements.len()
    }

    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    pub fn has_labels(&self) -> bool {
        self.labels.is_some()
    }

    pub(crate) fn elements(&self) -> &[UnblindedElement] {
        &self.elements
    }

    pub(crate) fn labels(&self) -> Option<&EncryptedLabels> {
        self.labels.as_ref()
    }

    /// Refuses to serve a session of another contract or epoch, or with another key.
    pub(crate) fn check_serves(&self, binding: &SessionBinding, key: &OprfKey) -> Result<(), ProtocolError> {
        if self.id.contract != binding.contract || self.id.epoch != binding.epoch {
            return Err(ProtocolError::ServerSetMismatch {
                reason: format!(
                    "built for contract {} epoch {}, the session is contract {} epoch {}",
                    self.id.contract, self.id.epoch, binding.contract, binding.epoch
                ),
            });
        }
        if key.public_key() != self.key_public {
            return Err(ProtocolError::ServerSetMismatch { reason: "built with another OPRF key".into() });
        }
        Ok(())
    }
}

impl ServerSet {
    /// Bytes held by the set (elements and encrypted labels): what a cache of sets
    /// counts against its budget.
    pub fn heap_bytes(&self) -> usize {
        self.elements.len() * std::mem::size_of::<UnblindedElement>()
            + self.labels.as_ref().map_or(0, EncryptedLabels::total_bytes)
    }
}

/// Builds a [`ServerSet`] from elements streamed in batches (a store read block by
/// block), so the only thing that grows is the evaluated set itself.
///
/// Elements must come in strictly increasing byte order across all batches: that
/// refuses a repeated element (as [`ServerSet::build`] does) without a map of all of
/// them. Labels, when the set has them, all have `label_len` bytes.
pub struct ServerSetBuilder<'k> {
    key: &'k OprfKey,
    id: ServerSetId,
    elements: Vec<UnblindedElement>,
    labels: Option<(usize, EncryptedLabels, TagContext)>,
    last: Option<Vec<u8>>,
}

impl fmt::Debug for ServerSetBuilder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSetBuilder")
            .field("id", &self.id)
            .field("len", &self.elements.len())
            .finish_non_exhaustive()
    }
}

impl<'k> ServerSetBuilder<'k> {
    /// `capacity` is the expected number of elements; `label_len` is `Some` for the
    /// labels form.
    pub fn new(
        key: &'k OprfKey,
        id: ServerSetId,
        capacity: usize,
        label_len: Option<usize>,
    ) -> Result<Self, ProtocolError> {
        let labels = match label_len {
            None => None,
            Some(len) if len > MAX_LABEL_LEN => {
                return Err(ProtocolError::InvalidLabels {
                    reason: format!("labels of {len} bytes, the limit is {MAX_LABEL_LEN}"),
                })
            }
            Some(len) => Some((
                len,
                EncryptedLabels::with_capacity(capacity, capacity.saturating_mul(len)),
                TagContext::new(&id.contract, id.epoch, MAX_TAG_BITS)?,
            )),
        };
        Ok(Self { key, id, elements: Vec::with_capacity(capacity), labels, last: None })
    }

    /// Evaluates one batch (in parallel, inside crypto) and appends it. `labels` must
    /// be given exactly when the builder was made with a label length.
    pub fn push_batch<I: AsRef<[u8]> + Sync, L: AsRef<[u8]>>(
        &mut self,
        elements: &[I],
        labels: Option<&[L]>,
    ) -> Result<(), ProtocolError> {
        let base = self.elements.len();
        for (offset, element) in elements.iter().enumerate() {
            let element = element.as_ref();
            let previous =
                if offset == 0 { self.last.as_deref() } else { Some(elements[offset - 1].as_ref()) };
            if let Some(previous) = previous {
                let index = base + offset;
                match previous.cmp(element) {
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Equal => {
                        return Err(ProtocolError::DuplicateElement {
                            whose: "server",
                            first: index - 1,
                            second: index,
                        })
                    }
                    std::cmp::Ordering::Greater => {
                        return Err(ProtocolError::UnsortedElement { whose: "server", index })
                    }
                }
            }
        }
        match (&mut self.labels, labels) {
            (None, None) => {}
            (Some((len, _, _)), Some(labels)) => {
                if labels.len() != elements.len() {
                    return Err(ProtocolError::InvalidLabels {
                        reason: format!("{} labels for {} elements", labels.len(), elements.len()),
                    });
                }
                if let Some(index) = labels.iter().position(|label| label.as_ref().len() != *len) {
                    return Err(ProtocolError::InvalidLabels {
                        reason: format!(
                            "label {} has {} bytes, not {len}; all labels must have one length",
                            base + index,
                            labels[index].as_ref().len()
                        ),
                    });
                }
            }
            _ => {
                return Err(ProtocolError::InvalidLabels {
                    reason: "labels given to a set built without them, or missing from one built with them"
                        .into(),
                })
            }
        }
        let evaluated =
            evaluate_own_batch(self.key, elements).map_err(|e| ProtocolError::Crypto(e.source))?;
        if let (Some((_, encrypted, context)), Some(labels)) = (&mut self.labels, labels) {
            for (element, label) in evaluated.iter().zip(labels) {
                context.xor_pad(element, encrypted.push_for_encryption(label.as_ref()));
            }
        }
        self.elements.extend(evaluated);
        if let Some(last) = elements.last() {
            self.last = Some(last.as_ref().to_vec());
        }
        Ok(())
    }

    pub fn finish(self) -> ServerSet {
        ServerSet {
            id: self.id,
            key_public: self.key.public_key(),
            elements: self.elements,
            labels: self.labels.map(|(_, labels, _)| labels),
        }
    }
}

impl fmt::Debug for ServerSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSet")
            .field("id", &self.id)
            .field("len", &self.elements.len())
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

/// Refuses a set with a repeated element, naming both positions. Used for the client's
/// set too: with one blind per session, two equal inputs give two equal blinded
/// elements, which would show the server that X holds a duplicate.
pub(crate) fn refuse_duplicates<I: AsRef<[u8]>>(
    whose: &'static str,
    elements: &[I],
) -> Result<(), ProtocolError> {
    let mut seen: HashMap<&[u8], usize> = HashMap::with_capacity(elements.len());
    for (index, element) in elements.iter().enumerate() {
        if let Some(first) = seen.insert(element.as_ref(), index) {
            return Err(ProtocolError::DuplicateElement { whose, first, second: index });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> ServerSetId {
        ServerSetId {
            contract: ContractId::new("stream-build").unwrap_or_else(|e| panic!("{e}")),
            epoch: Epoch(3),
            dataset: DatasetVersion(1),
        }
    }

    #[test]
    fn a_set_streamed_in_batches_equals_the_set_built_at_once() {
        let key = OprfKey::random(&mut rand::rngs::OsRng);
        let elements: Vec<Vec<u8>> = (0..37u32).map(|i| format!("K{i:04}").into_bytes()).collect();
        let labels: Vec<Vec<u8>> = (0..37u32).map(|i| format!("label{i:04}").into_bytes()).collect();
        let whole =
            ServerSet::build_with_labels(&key, id(), &elements, &labels).unwrap_or_else(|e| panic!("{e}"));
        let mut builder = ServerSetBuilder::new(&key, id(), 0, Some(9)).unwrap_or_else(|e| panic!("{e}"));
        for (elements, labels) in elements.chunks(10).zip(labels.chunks(10)) {
            builder.push_batch(elements, Some(labels)).unwrap_or_else(|e| panic!("{e}"));
        }
        let streamed = builder.finish();
        assert!(streamed.elements() == whole.elements());
        assert_eq!(streamed.labels(), whole.labels());
        assert_eq!(streamed.heap_bytes(), 37 * 32 + 37 * 9);
    }

    #[test]
    fn a_repeated_or_unsorted_element_across_batches_is_refused() {
        let key = OprfKey::random(&mut rand::rngs::OsRng);
        let mut builder = ServerSetBuilder::new(&key, id(), 0, None).unwrap_or_else(|e| panic!("{e}"));
        builder.push_batch::<_, &[u8]>(&[b"A", b"B"], None).unwrap_or_else(|e| panic!("{e}"));
        let repeated = builder.push_batch::<_, &[u8]>(&[b"B"], None);
        assert!(
            matches!(repeated, Err(ProtocolError::DuplicateElement { first: 1, second: 2, .. })),
            "{repeated:?}"
        );
        let unsorted = builder.push_batch::<_, &[u8]>(&[b"C", b"A"], None);
        assert!(matches!(unsorted, Err(ProtocolError::UnsortedElement { index: 3, .. })), "{unsorted:?}");
        let unlabelled = ServerSetBuilder::new(&key, id(), 0, Some(4))
            .and_then(|mut b| b.push_batch::<_, &[u8]>(&[b"Z"], None));
        assert!(matches!(unlabelled, Err(ProtocolError::InvalidLabels { .. })));
    }
}
