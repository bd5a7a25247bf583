//! Job records: every protocol run this node takes part in, from start to outcome.

use serde::{Deserialize, Serialize};

use super::{from_json, to_json, Store};
use crate::NodeError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
    Refused,
    /// The node stopped (crash, kill, shutdown) while the job ran.
    Interrupted,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Refused => "refused",
            JobState::Interrupted => "interrupted",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: u64,
    pub computation: String,
    pub contract_id: String,
    pub role: String,
    pub session: String,
    pub peers: Vec<String>,
    pub state: JobState,
    pub detail: String,
    pub started_unix: u64,
    pub finished_unix: Option<u64>,
    /// What the node received, sent and wrote in this job, by class (issue 10); absent
    /// in records written before it was counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<crate::run::observed::Observed>,
}

impl Store {
    /// Records a new running job and returns its id.
    pub fn start_job(&self, mut job: JobRecord) -> Result<JobRecord, NodeError> {
        job.id = self.db.generate_id().map_err(|e| NodeError::store("job id", e))?;
        job.state = JobState::Running;
        self.jobs
            .insert(job.id.to_be_bytes(), to_json(&job)?)
            .map_err(|e| NodeError::store("start job", e))?;
        self.flush()?;
        Ok(job)
    }

    /// Records a job's outcome.
    pub fn finish_job(
        &self,
        job: &mut JobRecord,
        state: JobState,
        detail: String,
        now_unix: u64,
    ) -> Result<(), NodeError> {
        job.state = state;
        job.detail = detail;
        job.finished_unix = Some(now_unix);
        self.jobs
            .insert(job.id.to_be_bytes(), to_json(job)?)
            .map_err(|e| NodeError::store("finish job", e))?;
        self.flush()
    }

    /// The most recent `limit` jobs, newest first.
    pub fn recent_jobs(&self, limit: usize) -> Result<Vec<JobRecord>, NodeError> {
        self.jobs
            .iter()
            .values()
            .rev()
            .take(limit)
            .map(|v| from_json(&v.map_err(|e| NodeError::store("scan jobs", e))?, "job"))
            .collect()
    }

    /// Marks every job still `running` as `interrupted` (called at startup, when no job
    /// can be running yet); returns them so they can be audited.
    pub fn interrupt_running_jobs(&self, now_unix: u64) -> Result<Vec<JobRecord>, NodeError> {
        let mut interrupted = Vec::new();
        for value in self.jobs.iter().values() {
            let mut job: JobRecord = from_json(&value.map_err(|e| NodeError::store("scan jobs", e))?, "job")?;
            if job.state == JobState::Running {
                self.finish_job(
                    &mut job,
                    JobState::Interrupted,
                    "node stopped while the job ran".into(),
                    now_unix,
                )?;
                interrupted.push(job);
            }
        }
        Ok(interrupted)
    }
}
