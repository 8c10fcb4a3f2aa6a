//! What the API handlers ([`crate::api`]) and the WHIP/WHEP handlers
//! ([`crate::whip`]) share: the axum state they extract from and the helper
//! that runs a mutation of the node's state on a blocking thread.
//!
//! Both handler modules import this one and neither imports the other's
//! handlers; `api` only mounts `whip::routes` into the router it builds.

use std::sync::Arc;

use axum::extract::FromRef;

use crate::auth::Authenticator;
use crate::cluster::Cluster;
use crate::error::ApiError;
use crate::http::HttpStats;
use crate::ratelimit::SessionLimiter;
use crate::state::AppState;

/// What every handler may reach: the node's state and the token checker.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub(crate) node: Arc<AppState>,
    pub(crate) auth: Arc<Authenticator>,
    pub(crate) limits: Limits,
    /// The cluster: where each room is served.
    pub(crate) cluster: Arc<Cluster>,
}

/// The HTTP server's counters and the session rate limiter, for the routes
/// and `/metrics`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The server's connection and timeout counters.
    pub http: Arc<HttpStats>,
    /// The session-creation limiter.
    pub sessions: Arc<SessionLimiter>,
    /// The TLS server (its counters), when the API speaks HTTPS.
    pub tls: Option<Arc<crate::tls::ServerTls>>,
}

impl FromRef<ApiState> for Arc<AppState> {
    fn from_ref(state: &ApiState) -> Self {
        Arc::clone(&state.node)
    }
}

impl FromRef<ApiState> for Arc<Authenticator> {
    fn from_ref(state: &ApiState) -> Self {
        Arc::clone(&state.auth)
    }
}

/// Runs a mutation of `state` on a blocking thread and waits for it.
pub(crate) async fn blocking<T, E, F>(state: &Arc<AppState>, f: F) -> Result<T, E>
where
    T: Send + 'static,
    E: From<ApiError> + Send + 'static,
    F: FnOnce(&AppState) -> Result<T, E> + Send + 'static,
{
    let state = Arc::clone(state);
    tokio::task::spawn_blocking(move || f(&state))
        .await
        .map_err(|e| ApiError::Internal(format!("control task failed: {e}")))?
}
