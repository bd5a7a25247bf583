//! Prometheus metrics (text format, `/metrics`). Counters are process-wide and start at
//! zero with the process, as Prometheus expects of counters; gauges (audit length,
//! peer reachability, certificate days left) are read from the store and the probes at
//! each scrape.
//!
//! Label values are bounded: computation kinds, job states and roles are fixed sets,
//! refusal reasons are the error's kind (its enum variant, not its text), datasets and
//! peers are what the operator configured or imported.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    kind: String,
    outcome: String,
    role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ImportLabels {
    dataset: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    certificate: String,
}

/// A label value the text format can carry as is: prometheus-client writes values
/// unescaped, so a quote, backslash or line break would break the exposition. Dataset
/// names and node ids never hold them; anything else is replaced, not trusted.
fn label_value(text: &str) -> String {
    text.chars().map(|c| if c == '"' || c == '\\' || c.is_control() { '_' } else { c }).take(128).collect()
}

type Histograms = Family<KindLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 50 ms to about 14 minutes: a PSI of a few elements up to a large lookup.
    Histogram::new(exponential_buckets(0.05, 2.0, 15))
}

/// Every metric the node exports, and the registry that names them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    jobs: Family<JobLabels, Counter>,
    job_seconds: Histograms,
    bytes_sent: Counter,
    bytes_received: Counter,
    refusals: Family<ReasonLabels, Counter>,
    import_rows: Family<ImportLabels, Counter>,
    audit_records: Gauge,
    peer_reachable: Family<PeerLabels, Gauge>,
    certificate_days_left: Family<CertificateLabels, Gauge>,
    store_open: Gauge,
}

/// What a scrape reads from the node at that moment.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub audit_records: u64,
    pub store_open: bool,
    /// (peer, reachable at the last probe).
    pub peers: Vec<(String, bool)>,
    /// (which certificate, whole days left; negative once expired).
    pub certificates: Vec<(String, i64)>,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("xmcredit");
        let jobs = Family::<JobLabels, Counter>::default();
        registry.register(
            "jobs",
            "Jobs finished, by computation kind, outcome and this node's role",
            jobs.clone(),
        );
        let job_seconds: Histograms = Family::new_with_constructor(duration_histogram);
        registry.register(
            "job_duration_seconds",
            "Wall time of finished jobs, by computation kind",
            job_seconds.clone(),
        );
        let bytes_sent = Counter::default();
        registry.register(
            "peer_bytes_sent",
            "Bytes written to peer connections (inside TLS: gRPC frames and protocol messages)",
            bytes_sent.clone(),
        );
        let bytes_received = Counter::default();
        registry.register(
            "peer_bytes_received",
            "Bytes read from peer connections (inside TLS)",
            bytes_received.clone(),
        );
        let refusals = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "refusals",
            "Requests or runs this node refused, by the kind of reason",
            refusals.clone(),
        );
        let import_rows = Family::<ImportLabels, Counter>::default();
        registry.register(
            "import_rows",
            "CSV rows imported, by dataset and result (accepted or rejected)",
            import_rows.clone(),
        );
        let audit_records = Gauge::default();
        registry.register("audit_records", "Records in this node's audit chain", audit_records.clone());
        let peer_reachable = Family::<PeerLabels, Gauge>::default();
        registry.register(
            "peer_reachable",
            "1 if the peer answered the last health probe over mutual TLS, else 0",
            peer_reachable.clone(),
        );
        let certificate_days_left = Family::<CertificateLabels, Gauge>::default();
        registry.register(
            "certificate_days_left",
            "Whole days until the certificate expires (node: this node's TLS certificate; ca: the alliance CA)",
            certificate_days_left.clone(),
        );
        let store_open = Gauge::default();
        registry.register("store_open", "1 if the store answers reads", store_open.clone());
        Self {
            registry,
            jobs,
            job_seconds,
            bytes_sent,
            bytes_received,
            refusals,
            import_rows,
            audit_records,
            peer_reachable,
            certificate_days_left,
            store_open,
        }
    }

    pub fn job_finished(&self, kind: &str, outcome: &str, role: &str, seconds: f64) {
        self.jobs
            .get_or_create(&JobLabels { kind: kind.into(), outcome: outcome.into(), role: role.into() })
            .inc();
        self.job_seconds.get_or_create(&KindLabels { kind: kind.into() }).observe(seconds);
    }

    pub fn sent(&self, bytes: usize) {
        self.bytes_sent.inc_by(bytes as u64);
    }

    pub fn received(&self, bytes: usize) {
        if bytes > 0 {
            self.bytes_received.inc_by(bytes as u64);
        }
    }

    /// Counts a refusal under the leading identifier of `reason_kind` (the error's
    /// variant: `Refused`, `NotFound`, ...), never its text.
    pub fn refused(&self, reason_kind: &str) {
        let kind = reason_kind.split(|c: char| !c.is_ascii_alphanumeric() && c != '_').next().unwrap_or("");
        let kind = if kind.is_empty() { "other" } else { kind };
        self.refusals.get_or_create(&ReasonLabels { reason: kind.into() }).inc();
    }

    pub fn imported(&self, dataset: &str, accepted: u64, rejected: u64) {
        let dataset = label_value(dataset);
        let labels = |result: &str| ImportLabels { dataset: dataset.clone(), result: result.into() };
        self.import_rows.get_or_create(&labels("accepted")).inc_by(accepted);
        self.import_rows.get_or_create(&labels("rejected")).inc_by(rejected);
    }

    /// The text exposition, with the gauges set from `snapshot`.
    pub fn encode(&self, snapshot: &Snapshot) -> String {
        self.audit_records.set(i64::try_from(snapshot.audit_records).unwrap_or(i64::MAX));
        self.store_open.set(i64::from(snapshot.store_open));
        for (peer, reachable) in &snapshot.peers {
            self.peer_reachable
                .get_or_create(&PeerLabels { peer: label_value(peer) })
                .set(i64::from(*reachable));
        }
        for (certificate, days) in &snapshot.certificates {
            self.certificate_days_left
                .get_or_create(&CertificateLabels { certificate: certificate.clone() })
                .set(*days);
        }
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_cannot_break_the_exposition() {
        assert_eq!(label_value("gov_list"), "gov_list");
        assert_eq!(label_value("a\"} 1\nfake 2"), "a_} 1_fake 2");
        assert_eq!(label_value("back\\slash"), "back_slash");
    }
}
