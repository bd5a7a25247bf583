//! What the operator's console shows beyond jobs and the audit log: each finished job's
//! summary (set sizes, transcript digest, duration) and the last import reports with
//! their rejected rows. Kept in their own trees (`job_summaries`, `import_reports`),
//! opened on first use, so a store written by an older node needs no migration.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{from_json, to_json, Store};
use crate::NodeError;

/// Import reports kept; older ones are dropped (the audit log keeps every import).
pub const IMPORT_REPORTS_KEPT: usize = 50;
/// Rejected rows kept per stored report: a file of a million bad rows must not grow the
/// store by as much; the operator who ran the import got the whole list.
pub const REJECTED_ROWS_KEPT: usize = 200;

/// What a finished job recorded next to its job record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobSummary {
    pub job_id: u64,
    pub set_sizes: BTreeMap<String, u64>,
    /// Hex SHA-256 of the run's transcript, if the run got that far.
    pub transcript_digest: Option<String>,
    /// Milliseconds from start to finish.
    #[serde(default)]
    pub duration_ms: u64,
    /// Bytes this node sent in the job, as its run report counts them; absent for
    /// drivers that do not count them and in summaries written before they were kept.
    #[serde(default)]
    pub bytes_sent: Option<u64>,
    /// Bytes this node received in the job (see `bytes_sent`).
    #[serde(default)]
    pub bytes_received: Option<u64>,
    /// Names of the files the job wrote under `<data_dir>/outputs/`.
    #[serde(default)]
    pub output_files: Vec<String>,
}

/// One stored import report (the JSON `import` prints), with when it was made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredImportReport {
    pub seq: u64,
    pub time_unix: u64,
    pub report: serde_json::Value,
}

impl Store {
    fn console_tree(&self, name: &str) -> Result<sled::Tree, NodeError> {
        self.db.open_tree(name).map_err(|e| NodeError::store("open tree", e))
    }

    /// Records a finished job's summary.
    pub fn save_job_summary(&self, summary: &JobSummary) -> Result<(), NodeError> {
        self.console_tree("job_summaries")?
            .insert(summary.job_id.to_be_bytes(), to_json(summary)?)
            .map_err(|e| NodeError::store("save job summary", e))?;
        Ok(())
    }

    /// The summary of job `id`, if it finished on a node that records them.
    pub fn job_summary(&self, id: u64) -> Result<Option<JobSummary>, NodeError> {
        match self.console_tree("job_summaries")?.get(id.to_be_bytes()) {
            Ok(Some(bytes)) => Ok(Some(from_json(&bytes, "job summary")?)),
            Ok(None) => Ok(None),
            Err(e) => Err(NodeError::store("read job summary", e)),
        }
    }

    /// Keeps an import report (its rejected rows and warnings each cut to
    /// [`REJECTED_ROWS_KEPT`]), dropping
    /// the oldest beyond [`IMPORT_REPORTS_KEPT`].
    pub fn save_import_report(&self, time_unix: u64, mut report: serde_json::Value) -> Result<(), NodeError> {
        if let Some(rejected) = report.get_mut("rejected").and_then(|r| r.as_array_mut()) {
            if rejected.len() > REJECTED_ROWS_KEPT {
                let total = rejected.len();
                rejected.truncate(REJECTED_ROWS_KEPT);
                report["rejected_rows_not_kept"] = serde_json::json!(total - REJECTED_ROWS_KEPT);
            }
        }
        // Warnings are cut the same way: a file written all in lower case warns on
        // every row.
        if let Some(warnings) = report.get_mut("warnings").and_then(|w| w.as_array_mut()) {
            if warnings.len() > REJECTED_ROWS_KEPT {
                let total = warnings.len();
                warnings.truncate(REJECTED_ROWS_KEPT);
                report["warnings_not_kept"] = serde_json::json!(total - REJECTED_ROWS_KEPT);
            }
        }
        let tree = self.console_tree("import_reports")?;
        let seq = self.db.generate_id().map_err(|e| NodeError::store("import report id", e))?;
        let stored = StoredImportReport { seq, time_unix, report };
        tree.insert(seq.to_be_bytes(), to_json(&stored)?)
            .map_err(|e| NodeError::store("save import report", e))?;
        while tree.len() > IMPORT_REPORTS_KEPT {
            match tree.pop_min() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => return Err(NodeError::store("drop an old import report", e)),
            }
        }
        Ok(())
    }

    /// The kept import reports, newest first.
    pub fn import_reports(&self) -> Result<Vec<StoredImportReport>, NodeError> {
        self.console_tree("import_reports")?
            .iter()
            .values()
            .rev()
            .map(|v| from_json(&v.map_err(|e| NodeError::store("scan import reports", e))?, "import report"))
            .collect()
    }

    /// Number of jobs recorded (running and finished).
    pub fn job_count(&self) -> usize {
        self.jobs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_reports_keep_the_newest_and_cut_rejected_rows() -> Result<(), NodeError> {
        let dir = tempfile::tempdir().map_err(|e| NodeError::Internal(e.to_string()))?;
        let store = Store::open(dir.path())?;
        for i in 0..IMPORT_REPORTS_KEPT + 3 {
            let rejected: Vec<_> =
                (0..REJECTED_ROWS_KEPT + 5).map(|r| serde_json::json!({ "row": r })).collect();
            store.save_import_report(
                i as u64,
                serde_json::json!({ "dataset": format!("d{i}"), "rejected": rejected }),
            )?;
        }
        let reports = store.import_reports()?;
        assert_eq!(reports.len(), IMPORT_REPORTS_KEPT);
        assert_eq!(reports[0].report["dataset"], format!("d{}", IMPORT_REPORTS_KEPT + 2), "newest first");
        assert_eq!(reports[0].report["rejected"].as_array().map(Vec::len), Some(REJECTED_ROWS_KEPT));
        assert_eq!(reports[0].report["rejected_rows_not_kept"], 5);
        Ok(())
    }
}
