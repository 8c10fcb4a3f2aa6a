//! Worker supervision: which workers are unhealthy, what `/healthz` says
//! about them, and the task that stops the node when one fails.
//!
//! Each worker publishes a heartbeat once per loop iteration and records a
//! panic ([`packet_path::WorkerHandle::health`]). The supervisor task looks
//! every [`SUPERVISE_INTERVAL`]; on the first dead or stalled worker it logs
//! an error naming it and reports it to [`Running::run_until`], which keeps
//! serving for [`FAILURE_GRACE`] (`/healthz` answers 503 naming the worker,
//! `/metrics` shows `sfu_worker_up 0`) and then shuts the node down and
//! returns [`RunError::WorkerFailed`]; the `sfu` binary exits with
//! [`RunError::exit_code`] 70 so the service manager restarts it. A worker
//! is never restarted in place: its rooms' state (keys, sequence
//! rewriters, fan-out lists) is gone with it. Meanwhile placement gives new
//! rooms only to running workers.
//!
//! [`Running::run_until`]: crate::Running::run_until
//! [`RunError::WorkerFailed`]: crate::RunError::WorkerFailed
//! [`RunError::exit_code`]: crate::RunError::exit_code

use std::sync::Arc;
use std::time::Duration;

use packet_path::{WorkerHandle, WorkerHealth};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::state::AppState;

/// How often the supervisor task looks at the workers' health.
pub const SUPERVISE_INTERVAL: Duration = Duration::from_millis(250);

/// How long the node keeps serving (with `/healthz` at 503) after a worker
/// failed, before it shuts down.
pub const FAILURE_GRACE: Duration = Duration::from_secs(1);

/// A worker found dead or stalled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerFailure {
    /// The worker's index.
    pub worker: usize,
    /// Its health when found.
    pub health: WorkerHealth,
}

impl std::fmt::Display for WorkerFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.health {
            WorkerHealth::Dead { reason } => write!(f, "worker {} is dead ({reason})", self.worker),
            WorkerHealth::Stalled { since } => write!(
                f,
                "worker {} is stalled (no loop iteration for {:.1} s)",
                self.worker,
                since.as_secs_f64()
            ),
            h => write!(f, "worker {} is {h:?}", self.worker),
        }
    }
}

/// The workers that are not running, with their health, by index.
pub fn unhealthy(workers: &[WorkerHandle]) -> Vec<WorkerFailure> {
    workers
        .iter()
        .enumerate()
        .filter_map(|(worker, w)| {
            let health = w.health();
            (!health.is_running()).then_some(WorkerFailure { worker, health })
        })
        .collect()
}

/// The `/healthz` entry of an unhealthy worker.
pub fn describe(failure: &WorkerFailure) -> Value {
    match &failure.health {
        WorkerHealth::Dead { reason } => {
            json!({"worker": failure.worker, "state": "dead", "reason": reason})
        }
        WorkerHealth::Stalled { since } => json!({
            "worker": failure.worker,
            "state": "stalled",
            "heartbeat_age_s": since.as_secs_f64(),
        }),
        h => json!({"worker": failure.worker, "state": format!("{h:?}")}),
    }
}

/// The supervisor task: sends the first failure it sees to `failed` and
/// ends.
pub(crate) async fn supervise(state: Arc<AppState>, failed: oneshot::Sender<WorkerFailure>) {
    let mut tick = tokio::time::interval(SUPERVISE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Some(failure) = unhealthy(state.workers()).into_iter().next() {
            tracing::error!(
                worker = failure.worker,
                health = ?failure.health,
                "{failure}; the node will exit so that it is restarted"
            );
            state.publish(crate::events::NodeEvent::WorkerStalled {
                worker: failure.worker,
                health: match failure.health {
                    WorkerHealth::Dead { .. } => "dead",
                    _ => "stalled",
                }
                .into(),
            });
            // `run_until` may not be waiting (an embedding that never calls
            // it): then nobody is told, but /healthz still answers 503.
            let _ = failed.send(failure);
            return;
        }
    }
}
