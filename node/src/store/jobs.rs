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
    /// Records a new running job and returns it with its id: one more than the last
    /// stored job's, so ids stay consecutive across restarts (sled's `generate_id`
    /// jumps by its persistence interval after every restart, which operators read as
    /// lost jobs).
    pub fn start_job(&self, mut job: JobRecord) -> Result<JobRecord, NodeError> {
        job.state = JobState::Running;
        loop {
            job.id = self.next_job_id()?;
            // Insert only if the id is still free: a job started concurrently may have
            // taken it between the read and here, and then we try the next one.
            let claimed = self
                .jobs
                .compare_and_swap(job.id.to_be_bytes(), None as Option<&[u8]>, Some(to_json(&job)?))
                .map_err(|e| NodeError::store("start job", e))?;
            if claimed.is_ok() {
                break;
            }
        }
        self.flush()?;
        Ok(job)
    }

    /// The id after the last stored job's (keys are big-endian, so the last key is the
    /// highest id); 0 in an empty store, as `generate_id` started.
    fn next_job_id(&self) -> Result<u64, NodeError> {
        let Some((key, _)) = self.jobs.last().map_err(|e| NodeError::store("last job", e))? else {
            return Ok(0);
        };
        let last = <[u8; 8]>::try_from(key.as_ref())
            .map(u64::from_be_bytes)
            .map_err(|_| NodeError::Internal(format!("job key of {} bytes", key.len())))?;
        last.checked_add(1).ok_or_else(|| NodeError::Internal("job ids exhausted".into()))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> JobRecord {
        JobRecord {
            id: 0,
            computation: "psi".into(),
            contract_id: "c".into(),
            role: "client".into(),
            session: "s".into(),
            peers: Vec::new(),
            state: JobState::Running,
            detail: String::new(),
            started_unix: 0,
            finished_unix: None,
            observed: None,
        }
    }

    /// Ids continue from the last stored job after the store is reopened, and jobs
    /// started at the same time never share an id.
    #[test]
    fn job_ids_are_consecutive_across_reopening_and_distinct_when_concurrent() -> Result<(), NodeError> {
        let dir = tempfile::tempdir().map_err(|e| NodeError::Internal(e.to_string()))?;
        let first = {
            let store = Store::open(dir.path())?;
            store.start_job(job())?.id
        };
        let store = crate::store::once_released(|| Store::open(dir.path()))?;
        assert_eq!(store.start_job(job())?.id, first + 1);
        let mut ids: Vec<u64> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8).map(|_| scope.spawn(|| store.start_job(job()))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| panic!("thread panicked")))
                .collect::<Vec<_>>()
        })
        .into_iter()
        .map(|r| r.map(|j| j.id))
        .collect::<Result<_, _>>()?;
        ids.sort_unstable();
        assert_eq!(ids, (first + 2..first + 10).collect::<Vec<_>>());
        Ok(())
    }
}
