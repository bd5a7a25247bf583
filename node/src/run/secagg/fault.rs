//! The SecAgg contributor's fault points (the mechanism is `run::fault`): with
//! `XMCREDIT_TEST_EXIT_AT=<point>` a contributor exits at that point of a session, which
//! makes "a bank drops out at round r" exact and repeatable.

pub use crate::run::fault::{EXIT_AT_VAR, EXIT_STATUS};

/// Where a contributor can be made to exit, in session order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitPoint {
    /// Session accepted, before advertising keys: drops at round 0.
    BeforeKeys,
    /// Key list received, before sending shares: drops at round 1.
    BeforeShares,
    /// Share relay received, before sending the masked input: drops at round 2, and its
    /// input is not in the sum.
    BeforeMaskedInput,
    /// Masked input sent and the unmask request received, before answering it: drops at
    /// round 4, and its input is in the sum (its self-mask is rebuilt from the others'
    /// shares).
    AfterMaskedInput,
}

impl ExitPoint {
    pub const ALL: [ExitPoint; 4] =
        [Self::BeforeKeys, Self::BeforeShares, Self::BeforeMaskedInput, Self::AfterMaskedInput];

    /// The value of [`EXIT_AT_VAR`] that selects this point.
    pub fn name(self) -> &'static str {
        match self {
            Self::BeforeKeys => "secagg-before-keys",
            Self::BeforeShares => "secagg-before-shares",
            Self::BeforeMaskedInput => "secagg-before-masked-input",
            Self::AfterMaskedInput => "secagg-after-masked-input",
        }
    }

    /// The protocol round at which a node exiting here drops out.
    pub fn round(self) -> xmcredit_protocol::secagg::Round {
        use xmcredit_protocol::secagg::Round;
        match self {
            Self::BeforeKeys => Round::AdvertiseKeys,
            Self::BeforeShares => Round::ShareKeys,
            Self::BeforeMaskedInput => Round::MaskedInputCollection,
            Self::AfterMaskedInput => Round::Unmasking,
        }
    }
}

/// Exits the process if [`EXIT_AT_VAR`] names `point`.
pub(crate) fn exit_if_asked(point: ExitPoint) {
    crate::run::fault::exit_if_asked(point.name());
}
