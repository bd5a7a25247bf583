//! Peer reachability for the overview page and `/metrics`: every configured peer is
//! probed (a health request over mutual TLS, as `status` does) in the background, so a
//! page or a scrape never waits for a connect timeout.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::context::NodeContext;
use crate::proto;

/// Seconds between probe rounds.
pub const PROBE_PERIOD: Duration = Duration::from_secs(30);

/// The last probe of one peer.
#[derive(Debug, Clone)]
pub struct Probe {
    pub status: proto::PeerStatus,
    pub at_unix: u64,
}

/// The latest probe of each peer.
#[derive(Debug, Default)]
pub struct Probes {
    latest: Mutex<BTreeMap<String, Probe>>,
}

impl Probes {
    /// Starts probing every `PROBE_PERIOD` (first round at once); the task ends with the
    /// runtime.
    pub fn start(ctx: Arc<NodeContext>) -> Arc<Self> {
        let probes = Arc::new(Self::default());
        let held = probes.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(PROBE_PERIOD);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                held.probe_all(&ctx).await;
            }
        });
        probes
    }

    /// Probes every peer at once and records the answers.
    pub async fn probe_all(&self, ctx: &Arc<NodeContext>) {
        let mut tasks = tokio::task::JoinSet::new();
        for peer in ctx.config.peers.clone() {
            let ctx = ctx.clone();
            tasks.spawn(async move { crate::service::admin::peer_status(&ctx, &peer).await });
        }
        while let Some(joined) = tasks.join_next().await {
            let Ok(status) = joined else { continue };
            let probe = Probe { at_unix: ctx.now_unix(), status };
            if let Ok(mut latest) = self.latest.lock() {
                latest.insert(probe.status.node_id.clone(), probe);
            }
        }
    }

    /// The latest probes, by peer id.
    pub fn latest(&self) -> BTreeMap<String, Probe> {
        self.latest.lock().map(|l| l.clone()).unwrap_or_default()
    }
}
