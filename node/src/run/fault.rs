//! Fault injection for tests and the simulator, not a feature: a node whose process
//! environment has `XMCREDIT_TEST_EXIT_AT=<point>` exits the whole process with status
//! [`EXIT_STATUS`] when a run reaches that named point, with no cleanup, as a crash or
//! a kill would. It makes "a bank dies at exactly this step" repeatable. Anyone who can
//! set a node's environment can stop it anyway, so the hook gives no one a new power.
//!
//! Points: `psi-client-after-first-reply` (run::psi) and the SecAgg contributor's
//! (`run::secagg::fault::ExitPoint`).

/// The environment variable read at each point.
pub const EXIT_AT_VAR: &str = "XMCREDIT_TEST_EXIT_AT";
/// The process exit status at a fault point.
pub const EXIT_STATUS: i32 = 86;

/// The PSI client's point: once the server has answered its first chunk, mid-protocol.
pub const PSI_CLIENT_AFTER_FIRST_REPLY: &str = "psi-client-after-first-reply";

/// Exits the process if [`EXIT_AT_VAR`] names `point`.
pub(crate) fn exit_if_asked(point: &str) {
    if std::env::var(EXIT_AT_VAR).is_ok_and(|v| v.trim() == point) {
        tracing::warn!(point, "{EXIT_AT_VAR}: exiting the process (fault injection)");
        std::process::exit(EXIT_STATUS);
    }
}
