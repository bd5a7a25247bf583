//! Fault injection for tests and the simulator, not a feature: a node whose process
//! environment has `XMCREDIT_TEST_EXIT_AT=<point>` exits the whole process with status
//! [`EXIT_STATUS`] when a run reaches that named point, with no cleanup, as a crash or
//! a kill would. It makes "a bank dies at exactly this step" repeatable. Anyone who can
//! set a node's environment can stop it anyway, so the hook gives no one a new power.
//!
//! Points: PSI, both roles, before sending each message kind
//! (`psi-client-before-<kind>`, `psi-server-before-<kind>`, kinds in [`psi_point`]),
//! `psi-client-after-first-reply`, and the SecAgg contributor's
//! (`run::secagg::fault::ExitPoint`).

/// The environment variable read at each point.
pub const EXIT_AT_VAR: &str = "XMCREDIT_TEST_EXIT_AT";
/// The process exit status at a fault point.
pub const EXIT_STATUS: i32 = 86;

/// The PSI client's point: once the server has answered its first chunk, mid-protocol.
pub const PSI_CLIENT_AFTER_FIRST_REPLY: &str = "psi-client-after-first-reply";

/// The SecAgg coordinator's points, one before each message it sends per round (the
/// contributor's are `run::secagg::fault::ExitPoint`).
pub const SECAGG_COORDINATOR_POINTS: [&str; 4] = [
    "secagg-coordinator-before-key-list",
    "secagg-coordinator-before-share-relay",
    "secagg-coordinator-before-unmask-request",
    "secagg-coordinator-before-sum",
];

/// The PSI message kinds a node can be made to exit before sending, per role.
pub const PSI_CLIENT_KINDS: [&str; 3] = ["hello", "blinded-chunk", "match-report"];
pub const PSI_SERVER_KINDS: [&str; 4] = ["hello-ack", "evaluated-chunk", "tag-chunk", "server-done"];

/// The point name for `role` ("client" or "server") about to send `kind`.
pub fn psi_point(role: &str, kind: &str) -> String {
    format!("psi-{role}-before-{kind}")
}

/// The kebab-case name of a PSI message kind, as fault points use it.
pub(crate) fn psi_kind_name(kind: xmcredit_protocol::psi::PsiMessageKind) -> &'static str {
    use xmcredit_protocol::psi::PsiMessageKind as K;
    match kind {
        K::Hello => "hello",
        K::HelloAck => "hello-ack",
        K::BlindedChunk => "blinded-chunk",
        K::EvaluatedChunk => "evaluated-chunk",
        K::TagChunk => "tag-chunk",
        K::ServerDone => "server-done",
        K::MatchReport => "match-report",
    }
}

/// Exits if the point "psi-`role`-before-`kind`" is asked for (checked only when the
/// variable is set, so a run without it pays one environment read per message).
pub(crate) fn exit_before_psi_send(role: &str, kind: xmcredit_protocol::psi::PsiMessageKind) {
    if std::env::var_os(EXIT_AT_VAR).is_some() {
        exit_if_asked(&psi_point(role, psi_kind_name(kind)));
    }
}

/// Exits the process if [`EXIT_AT_VAR`] names `point`.
pub(crate) fn exit_if_asked(point: &str) {
    if std::env::var(EXIT_AT_VAR).is_ok_and(|v| v.trim() == point) {
        tracing::warn!(point, "{EXIT_AT_VAR}: exiting the process (fault injection)");
        std::process::exit(EXIT_STATUS);
    }
}
