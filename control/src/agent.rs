//! The load balancer agent: HAProxy's `agent-check` protocol on a TCP port
//! of its own ([`Config::agent_addr`](crate::config::Config)). Each
//! connection gets one ASCII line and is closed: `up N%` where `N` is 100
//! minus the node's load in percent of its capacity (the larger of its room
//! and endpoint shares, as the cluster registry reports it), at least 1, so
//! HAProxy weights the node down as it fills; `drain` while the node drains
//! (no new requests; `/healthz` answers 503 too).
//!
//! # Threads and panics
//! One task accepts; each answer is one write with a 1 s timeout, on its
//! own task. A failed accept or write is logged at debug level; nothing
//! here panics.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::cluster::Cluster;
use crate::state::AppState;

/// The line the agent answers now.
pub fn answer(state: &AppState, cluster: &Cluster) -> String {
    if state.draining() {
        return "drain\n".to_owned();
    }
    let load = cluster.entry().load.clamp(0.0, 1.0);
    let weight = ((1.0 - load) * 100.0).round().max(1.0) as u32;
    format!("up {weight}%\n")
}

/// Answers every connection to `listener` until dropped.
pub async fn serve(listener: TcpListener, state: Arc<AppState>, cluster: Arc<Cluster>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "agent accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let line = answer(&state, &cluster);
        tokio::spawn(async move {
            // One short line: a fresh socket's buffer takes it whole.
            let sent = tokio::time::timeout(Duration::from_secs(1), async {
                stream.writable().await?;
                stream.try_write(line.as_bytes())
            })
            .await;
            if !matches!(sent, Ok(Ok(n)) if n == line.len()) {
                tracing::debug!(%peer, "agent answer not delivered");
            }
        });
    }
}
