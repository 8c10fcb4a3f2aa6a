//! Graceful drain: how a node leaves service without cutting a call.
//!
//! The first stop request (SIGTERM or SIGINT, passed in by the binary as
//! messages on a channel) or `POST /v1/drain` puts the node in `draining`:
//! `/healthz` answers 503 so the load balancer sends no new rooms, the
//! cluster registry says `draining` so placement skips the node, new rooms
//! are refused (503 `draining`), and existing rooms keep running and keep
//! taking joins. [`until_drained`] then returns when the last endpoint has
//! left, after [`Config::drain_timeout_secs`](crate::config::Config), or at
//! the next stop request, whichever comes first; the caller stops the node
//! ([`crate::Running::run_until`]).
//!
//! # Threads and panics
//! One future on the runtime, polling the node's endpoint count every
//! [`POLL`]; it never panics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedReceiver;

use crate::state::AppState;

/// How often a drain looks at the endpoint count and the API's drain.
pub const POLL: Duration = Duration::from_millis(100);

/// Why a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// The last endpoint left.
    Empty,
    /// The drain timeout passed with endpoints left.
    Timeout {
        /// Endpoints left.
        endpoints: usize,
    },
    /// A second stop request.
    Forced {
        /// Endpoints left.
        endpoints: usize,
    },
}

/// Waits for a stop request on `requests` (each message names its signal)
/// or the API's drain, drains for at most `timeout`, and says how it
/// ended. A closed `requests` channel asks nothing.
pub async fn until_drained(
    state: Arc<AppState>,
    timeout: Duration,
    mut requests: UnboundedReceiver<&'static str>,
) -> Drained {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut open = true;
    loop {
        tokio::select! {
            r = requests.recv(), if open => match r {
                Some(signal) => {
                    tracing::info!(signal, "draining: no new rooms; stopping when the last endpoint leaves");
                    break;
                }
                None => open = false,
            },
            _ = tick.tick() => {
                if state.draining() {
                    tracing::info!("draining (asked through the API): stopping when the last endpoint leaves");
                    break;
                }
            }
        }
    }
    state.set_draining();
    crate::notify::stopping(&state);
    let started = Instant::now();
    loop {
        let (_, endpoints) = state.totals();
        if endpoints == 0 {
            tracing::info!(
                after_ms = started.elapsed().as_millis() as u64,
                "drained: no endpoint left"
            );
            return Drained::Empty;
        }
        if started.elapsed() >= timeout {
            tracing::warn!(
                endpoints,
                ?timeout,
                "drain timeout: stopping with endpoints left"
            );
            return Drained::Timeout { endpoints };
        }
        tokio::select! {
            r = requests.recv(), if open => match r {
                Some(signal) => {
                    tracing::warn!(signal, endpoints, "second stop request: stopping now");
                    return Drained::Forced { endpoints };
                }
                None => open = false,
            },
            _ = tick.tick() => crate::notify::status(&format!("draining: {endpoints} endpoints left")),
        }
    }
}
