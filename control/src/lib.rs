//! Control plane of the SFU and the `sfu` binary: configuration, the HTTP
//! control API, load reporting and metrics.
//!
//! # Design
//! * [`config`] folds the embedded defaults, a TOML file, `SFU_*` variables
//!   and command-line flags into a [`Config`].
//! * [`start`] starts a [`packet_path::Node`] (its worker threads own the
//!   media sockets and one [`sfu_core::router::Router`] each), then serves
//!   [`api::app`] with its own HTTP/1.1 accept loop over hyper ([`http`]) on
//!   the tokio runtime it is called from, and starts the rate sampler task
//!   and the worker supervisor ([`supervise`]). [`Running::shutdown`] stops
//!   them in the reverse order.
//! * [`http`] bounds what a client can hold without a token: header,
//!   request and idle timeouts, head and body sizes, and a connection cap
//!   ([`config::HttpConfig`]) at which the connection idle longest is
//!   closed, so idle connections cannot lock out a load balancer's
//!   `/healthz` probe. The cap is lowered at start to fit under the
//!   open-file limit, whose soft limit the `sfu` binary raises to the hard
//!   limit. [`ratelimit`] limits session and room creation per client
//!   address and per token (429 with `Retry-After`).
//! * Rooms come and go by themselves ([`state::RoomPolicy`]): a token for a
//!   missing room creates it with its first endpoint or session, and the
//!   sampler task closes rooms left empty for `empty_room_timeout_secs`.
//!   Endpoints the workers remove by themselves (sessions that never
//!   connected, lost ICE consent, or whose DTLS ended) leave the model as
//!   soon as their router's `Removed` event arrives ([`pump`]); the
//!   sampler's once-a-second reap (`Command::TakeRemoved`) catches any
//!   whose event was lost.
//! * [`limits`] bounds the state clients can create (rooms, endpoints,
//!   tracks, consumers, unconnected WebRTC sessions); the routers enforce
//!   most of them, placement skips full workers.
//! * [`state::AppState`] is shared by every HTTP handler behind an `Arc`.
//! * [`events`] publishes what happens to rooms, participants and workers
//!   (in `seq` order) to `GET /v1/events` subscribers (server-sent events)
//!   and, when `webhook.url` is set, to a signed webhook delivered by a
//!   thread of its own; the mutations of [`state::AppState`] publish as
//!   they change the model, and [`pump`] publishes what only the routers
//!   see (connected, producer bound, keyframe requested, consent lost,
//!   removed). A live event stream keeps its connection busy
//!   ([`http::Streaming`]) until the client leaves or the node shuts down.
//! * [`whep_events`] gives each WHEP session the draft's extensions:
//!   its own server-sent event streams (tracks active and inactive, video
//!   layers, viewer count, speakers and slots, found by asking the room's
//!   worker after node events and once a second) and layer selection.
//! * [`cluster`] makes the node one of many sharing rooms through Redis
//!   (with no Redis URL, a cluster of one): its registry entry every
//!   heartbeat, room owners set by compare-and-set, a middleware that
//!   passes a request for a room owned elsewhere to the owner and places
//!   new rooms, failover of dead nodes' rooms, drain, serving alone
//!   through a Redis outage, and relay nodes for rooms larger than a node
//!   ([`cluster::relay`]); [`state::shard`] spreads a big room over the
//!   node's own workers first.
//! * [`drain`] is how the node leaves service: the first stop request or
//!   `POST /v1/drain` drains, and the node stops when its last endpoint
//!   leaves, after the drain timeout, or at a second request; [`notify`]
//!   speaks systemd's notify protocol (READY, STATUS, STOPPING, and the
//!   watchdog, pinged only while every worker runs).
//! * [`auth`] mints and verifies the HS256 bearer tokens every API route
//!   but `/healthz` needs; [`api`] decides what each route needs. The
//!   secret is [`Config::api_secret`]; the public development default only
//!   serves loopback addresses. The `sfu token` subcommand mints tokens.
//!
//! # Threads
//! * The tokio runtime runs the HTTP accept loop, one task per connection
//!   (timers, eviction), the handlers, the sampler task, the supervisor
//!   task and one task per event stream; the blocking pool runs the
//!   mutations (see below).
//! * With a Redis URL, one task runs the cluster's heartbeat, registry
//!   read, reconciliation and failover ([`cluster::Cluster::run`]);
//!   forwarded requests run on their connection's task (hyper client);
//!   each room relayed here has a task keeping its trunk in step with the
//!   origin.
//! * The shard task follows the producers of rooms spread over workers
//!   every 250 ms ([`state::AppState::sync_shards`], on the blocking pool).
//! * With webhooks on, the `sfu-webhook` thread delivers them (blocking
//!   HTTP, one request at a time).
//! * The `sfu-events` thread ([`pump`]) blocks on the workers' event
//!   channel ([`packet_path::Node::events`]) and applies each event.
//! * The workers are `packet-path`'s threads, pinned to CPUs. The control
//!   plane never touches their state directly: it sends a
//!   [`sfu_core::router::Command`] through [`packet_path::WorkerHandle::request`],
//!   which wakes an idle worker and waits (up to 2 s) for the router's
//!   answer (microseconds on an idle node), and reads the counters
//!   the workers publish with [`packet_path::WorkerHandle::stats`].
//!
//! # State
//! * The routers (one per worker) hold the forwarding state: rooms,
//!   endpoints, SRTP contexts, consumers.
//! * [`state::AppState`] mirrors what the control plane needs to validate a
//!   request before sending a command: room names → (room id, worker),
//!   endpoint ids → (room, worker, SSRCs, remote), the node-wide SSRC set
//!   and the per-worker load used for placement. A mutation holds its
//!   room's lock (64 stripes by name hash) from validation to the model
//!   update, so a room's changes apply in order while other rooms proceed;
//!   SSRCs and addresses shared across rooms are reserved atomically under
//!   the model's write lock, so concurrent requests cannot both pass
//!   validation for the same name or SSRC; the model is updated only
//!   after the worker accepted the command, so a refused request changes
//!   nothing. If a worker times out, a compensating command (delete the
//!   room, remove the endpoint) is queued behind the original so the worker
//!   converges on the model.
//! * Rates for `/v1/load` are sampled once a second ([`RATE_INTERVAL`]) by a
//!   task that keeps the previous snapshot ([`metrics`]).
//!
//! # Panics, errors and unwraps
//! Nothing a client sends can make this crate panic, nor hold a connection
//! or a descriptor longer than the [`config::HttpConfig`] timeouts allow
//! (shutdown closes idle connections at once): request bodies are
//! parsed with serde into types that are then checked (lengths, ranges,
//! key sizes), and every failure is an [`ApiError`] answered as JSON with a
//! 4xx status. Locks recover from poisoning. The library returns typed
//! errors ([`ConfigError`], [`StartError`], [`ApiError`], [`RunError`]);
//! only the binary uses `anyhow`.
//!
//! A worker that panics or stalls (a bug) is not hidden: `/healthz`
//! answers 503 naming it, `sfu_worker_up{worker}` drops to 0, placement
//! stops giving it rooms, and the supervisor makes [`Running::run_until`]
//! return [`RunError::WorkerFailed`] after [`supervise::FAILURE_GRACE`]; the
//! `sfu` binary then exits with status 70 for the service manager to
//! restart the node (see [`supervise`]).
#![forbid(unsafe_code)]

pub mod agent;
pub mod api;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod drain;
pub mod error;
pub mod events;
mod handler;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod notify;
pub mod pump;
pub mod ratelimit;
pub mod state;
pub mod supervise;
pub mod tls;
pub mod whep_events;
pub mod whip;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::{Config, ConfigError};
pub use error::ApiError;
use packet_path::{Node, NodeConfig};
use state::AppState;

/// How often the sampler task snapshots worker counters for the rates of
/// `/v1/load`.
pub const RATE_INTERVAL: Duration = Duration::from_secs(1);

/// How long [`Running::shutdown`] lets open HTTP requests finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is inconsistent.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The media sockets or worker threads could not be set up.
    #[error("cannot start the packet path: {0}")]
    Media(std::io::Error),
    /// The node's DTLS certificate could not be generated.
    #[error("cannot generate the DTLS certificate: {0}")]
    Certificate(sfu_core::dtls::DtlsError),
    /// The control API's certificate, key or `tls_ca` could not be used.
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    /// The control API address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Http {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// Why [`Running::run_until`] returned before its signal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The HTTP server stopped.
    #[error("the HTTP server failed: {0}")]
    Http(std::io::Error),
    /// A worker died or stalled; the node was shut down.
    #[error("{0}")]
    WorkerFailed(supervise::WorkerFailure),
}

impl RunError {
    /// The exit status the `sfu` binary ends with: 70 (`EX_SOFTWARE`) for a
    /// failed worker, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::WorkerFailed(_) => 70,
            Self::Http(_) => 1,
        }
    }
}

/// A started node: workers, HTTP server, sampler and supervisor. Stop it
/// with [`Running::shutdown`]; dropping it instead aborts the HTTP server
/// and the tasks and drops the node.
#[derive(Debug)]
pub struct Running {
    http_addr: SocketAddr,
    state: Arc<AppState>,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
    sampler: JoinHandle<()>,
    shard_sync: JoinHandle<()>,
    /// The systemd watchdog task, when systemd asked for one.
    watchdog: Option<JoinHandle<()>>,
    /// The load balancer agent's task and address, when configured.
    agent: Option<JoinHandle<()>>,
    agent_addr: Option<SocketAddr>,
    /// The control API's TLS server, when `tls_cert` is set.
    tls: Option<Arc<tls::ServerTls>>,
    supervisor: JoinHandle<()>,
    /// Keeps the WHEP sessions' event streams current.
    whep_events: JoinHandle<()>,
    /// This node's part in the cluster, and its heartbeat task.
    cluster: Arc<cluster::Cluster>,
    cluster_task: JoinHandle<()>,
    failed: oneshot::Receiver<supervise::WorkerFailure>,
    node: Option<Node>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.server.abort();
        self.sampler.abort();
        self.shard_sync.abort();
        if let Some(w) = &self.watchdog {
            w.abort();
        }
        if let Some(a) = &self.agent {
            a.abort();
        }
        self.supervisor.abort();
        self.whep_events.abort();
        self.cluster_task.abort();
    }
}

/// Starts the packet path, then the HTTP API; must be called within a
/// multi-threaded tokio runtime.
pub async fn start(config: Config) -> Result<Running, StartError> {
    config.validate()?;
    let resolved = config.resolve();
    // Certificates first: a bad pair must not leave workers started.
    let server_tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(Arc::new(tls::ServerTls::load(cert, key)?)),
        _ => None,
    };
    let peer_tls = tls::peer_client_config(config.tls_ca.as_deref())?;
    let dtls_cert = sfu_core::dtls::DtlsCert::generate().map_err(StartError::Certificate)?;
    let node = Node::start(NodeConfig {
        workers: resolved.workers,
        cpus: resolved.cpus.clone(),
        bind: config.media_ip,
        base_port: config.media_port,
        pool_buffers: config.pool_buffers,
        socket_buffer_bytes: config.socket_buffer_bytes,
        io: config.io.backend(),
        router: config.limits.router_config(),
        dtls_cert: Some(dtls_cert.clone()),
        ..NodeConfig::default()
    })
    .map_err(StartError::Media)?;

    let listener = match tokio::net::TcpListener::bind(config.control_addr).await {
        Ok(l) => l,
        Err(source) => {
            node.shutdown();
            return Err(StartError::Http {
                addr: config.control_addr,
                source,
            });
        }
    };
    let http_addr = listener.local_addr().map_err(|source| StartError::Http {
        addr: config.control_addr,
        source,
    })?;
    let agent_listener = match config.agent_addr {
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => Some(l),
            Err(source) => {
                node.shutdown();
                return Err(StartError::Http { addr, source });
            }
        },
        None => None,
    };
    let agent_addr = agent_listener.as_ref().and_then(|l| l.local_addr().ok());

    let webhook = config.webhook.url.clone().map(|url| events::WebhookTarget {
        url,
        secret: config.api_secret.as_bytes().to_vec(),
        timeout: Duration::from_millis(config.webhook.timeout_ms),
        retries: config.webhook.retries,
    });
    let events = events::Events::new(resolved.node_id.clone(), webhook);
    let state = Arc::new(
        AppState::new(
            resolved.node_id.clone(),
            resolved.advertised_ip,
            node.workers().to_vec(),
            dtls_cert,
            config.limits,
            state::RoomPolicy {
                on_demand: config.rooms_on_demand,
                empty_timeout: (config.empty_room_timeout_secs > 0)
                    .then(|| Duration::from_secs(config.empty_room_timeout_secs)),
            },
        )
        .with_events(events),
    );
    for (i, w) in node.workers().iter().enumerate() {
        let stats = w.stats();
        let (io, fallback) = w.io_backend();
        if let Some(why) = fallback {
            tracing::warn!(worker = i, asked = ?config.io, "io backend fell back to socket: {why}");
        }
        tracing::info!(
            worker = i,
            cpu = ?w.cpu(),
            io,
            media = %w.local_addr(),
            gso = stats.gauge(packet_path::PathGauge::GsoEnabled) != 0,
            gro = stats.gauge(packet_path::PathGauge::GroEnabled) != 0,
            pool_buffers = stats.gauge(packet_path::PathGauge::PoolCapacity),
            "worker started"
        );
    }
    tracing::info!(
        node_id = %resolved.node_id,
        workers = resolved.workers,
        cpus = %config::CpuList(resolved.cpus.clone()),
        control = %http_addr,
        advertised_ip = %resolved.advertised_ip,
        "sfu started"
    );
    if config.api_secret.is_development() {
        tracing::warn!(
            "the API secret is the public development secret; set api_secret before serving anything but loopback"
        );
    }
    if let Some(url) = &config.webhook.url {
        tracing::info!(url, "webhooks on");
        if config.webhook.is_unencrypted_remote() {
            tracing::warn!(
                url,
                "webhook.url is plain http to a remote host: events travel unencrypted (only their signature protects them); prefer https"
            );
        }
    }
    if resolved.advertised_ip.is_unspecified() {
        tracing::warn!("advertised address is unspecified; set advertised_ip for API answers");
    }
    log_host_checks(&config, &resolved);

    let max_connections = fit_connection_cap(config.http.max_connections);
    let (stop, stopped) = oneshot::channel::<()>();
    let auth = Arc::new(auth::Authenticator::new(config.api_secret.as_bytes()));
    let limits = api::Limits {
        http: Arc::new(http::HttpStats::default()),
        sessions: Arc::new(ratelimit::SessionLimiter::new(&config.http)),
        tls: server_tls.clone(),
    };
    let http_stats = Arc::clone(&limits.http);
    let control_url = config.cluster.control_url.clone().unwrap_or_else(|| {
        let ip = resolved.advertised_ip;
        let host = if ip.is_ipv6() {
            format!("[{ip}]")
        } else {
            ip.to_string()
        };
        let scheme = if server_tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{host}:{}", http_addr.port())
    });
    let cluster = match cluster::Cluster::new(
        Arc::clone(&state),
        config.cluster.clone(),
        control_url,
        config.api_secret.as_bytes(),
        peer_tls,
        server_tls.is_some(),
    ) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            node.shutdown();
            return Err(StartError::Config(ConfigError::Invalid(format!(
                "cluster.redis: {e}"
            ))));
        }
    };
    if let Some(url) = &config.cluster.redis {
        tracing::info!(redis = %url, cluster = %config.cluster.name, "cluster on");
    }
    let app = api::app(Arc::clone(&state), auth, limits, Arc::clone(&cluster));
    let http_config = config.http;
    let server_tls_for_serve = server_tls.clone();
    if let Some(cert) = &config.tls_cert {
        tracing::info!(cert = %cert.display(), "control API on HTTPS (HTTP/2 and HTTP/1.1; SIGHUP reloads the certificate)");
    }
    // A dropped sender also stops the server.
    let server = tokio::spawn(async move {
        http::serve(
            listener,
            app,
            &http_config,
            max_connections,
            http_stats,
            server_tls_for_serve,
            stopped,
        )
        .await
    });
    // Big rooms spread over the workers: shards follow their rooms'
    // producers.
    state.set_spread_after(config.cluster.relay_after as usize);
    let shard_state = Arc::clone(&state);
    let shard_sync = tokio::spawn(async move {
        let mut tick = tokio::time::interval(state::shard::SHARD_SYNC);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let state = Arc::clone(&shard_state);
            let _ = tokio::task::spawn_blocking(move || state.sync_shards()).await;
        }
    });
    let sampler_state = Arc::clone(&state);
    let sampler = tokio::spawn(async move {
        let mut tick = tokio::time::interval(RATE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            sampler_state.sample_rates();
            let state = Arc::clone(&sampler_state);
            // Blocks on each worker: off the runtime's threads.
            let _ = tokio::task::spawn_blocking(move || {
                state.reap_removed();
                state.close_empty_rooms(std::time::Instant::now());
                state.sample_room_traffic();
            })
            .await;
        }
    });
    // The routers' events: model changes and node events as they happen.
    pump::spawn(Arc::clone(&state), node.events()).map_err(StartError::Media)?;
    let (failure, failed) = oneshot::channel();
    let supervisor = tokio::spawn(supervise::supervise(Arc::clone(&state), failure));
    let whep_events = tokio::spawn(whep_events::run(Arc::clone(&state)));
    let cluster_task = tokio::spawn(Arc::clone(&cluster).run());
    let agent = agent_listener
        .map(|l| tokio::spawn(agent::serve(l, Arc::clone(&state), Arc::clone(&cluster))));
    // systemd (Type=notify): ready now; the watchdog pings while every
    // worker runs.
    let watchdog = notify::watchdog_interval()
        .map(|interval| tokio::spawn(notify::watchdog(Arc::clone(&state), interval)));
    notify::ready(&state);
    Ok(Running {
        watchdog,
        agent,
        agent_addr,
        tls: server_tls,
        cluster,
        cluster_task,
        http_addr,
        state,
        stop: Some(stop),
        server,
        sampler,
        shard_sync,
        supervisor,
        whep_events,
        failed,
        node: Some(node),
    })
}

/// `wanted`, lowered (with a warning) so that the connections fit under
/// the process's open-file soft limit with [`http::RESERVED_FDS`] to spare.
fn fit_connection_cap(wanted: usize) -> usize {
    let soft = match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, _)) => soft,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read RLIMIT_NOFILE; keeping http.max_connections");
            return wanted;
        }
    };
    let (cap, lowered) = http::fit_connection_cap(wanted, soft);
    if lowered {
        tracing::warn!(
            max_connections = wanted,
            nofile = soft,
            lowered_to = cap,
            "http.max_connections does not fit under the open-file limit; raise LimitNOFILE"
        );
    }
    cap
}

/// Runs `sfu-tune check` ([`tuning::check`]) against this host and the
/// node's workers, CPUs and socket buffers, and logs every setting that
/// fails as a warning (with the reason and the fix) and every one that
/// warns at info; `sfu-tune apply` (or `sfu-tune.service`) fixes most.
fn log_host_checks(config: &Config, resolved: &config::Resolved) {
    let host = tuning::Host::system();
    let mut target = tuning::Target::for_host(&host);
    target.workers = resolved.workers;
    if !resolved.cpus.is_empty() {
        target.cpus = resolved.cpus.clone();
    }
    target.socket_buffer_bytes = config.socket_buffer_bytes;
    if let IpAddr::V4(ip) = config.media_ip
        && let Some(iface) = host.route_iface(Some(ip))
    {
        target.iface = Some(iface);
    }
    let checks = tuning::check(&host, &target);
    let failed = checks
        .iter()
        .filter(|c| c.status == tuning::Status::Fail)
        .count();
    for c in &checks {
        match c.status {
            tuning::Status::Fail => tracing::warn!(
                check = c.id,
                value = %c.value,
                want = %c.want,
                fix = %c.fix,
                "host check failed: {}",
                c.reason
            ),
            tuning::Status::Warn => tracing::info!(
                check = c.id,
                value = %c.value,
                want = %c.want,
                fix = %c.fix,
                "host check: {}",
                c.reason
            ),
            tuning::Status::Ok | tuning::Status::Unknown => {}
        }
    }
    if failed > 0 {
        tracing::warn!(
            failed,
            "{failed} host settings fail the node's needs; run `sfu-tune check` for the list, `sfu-tune apply` to fix what can be"
        );
    }
}

impl Running {
    /// The address the HTTP API listens on (the bound port when 0 was asked).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The workers' media addresses (bound, not advertised), by index.
    pub fn media_addrs(&self) -> Vec<SocketAddr> {
        self.node
            .iter()
            .flat_map(|n| n.workers())
            .map(|w| w.local_addr())
            .collect()
    }

    /// The load balancer agent's address (the bound port), if configured.
    pub fn agent_addr(&self) -> Option<SocketAddr> {
        self.agent_addr
    }

    /// The control API's TLS server (to [`tls::ServerTls::reload`] its
    /// certificate), when `tls_cert` is set.
    pub fn tls(&self) -> Option<&Arc<tls::ServerTls>> {
        self.tls.as_ref()
    }

    /// The API's shared state.
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Serves until `signal` completes, the HTTP server fails or a worker
    /// fails, then shuts down. After a worker failure it keeps serving for
    /// [`supervise::FAILURE_GRACE`] first (`/healthz` answers 503 naming the
    /// worker) and returns [`RunError::WorkerFailed`]; after a server
    /// failure, [`RunError::Http`].
    pub async fn run_until<F: Future<Output = ()>>(mut self, signal: F) -> Result<(), RunError> {
        enum Ended {
            Signal,
            Server(Result<std::io::Result<()>, tokio::task::JoinError>),
            Worker(supervise::WorkerFailure),
        }
        let ended = tokio::select! {
            () = signal => Ended::Signal,
            result = &mut self.server => Ended::Server(result),
            Ok(failure) = &mut self.failed => Ended::Worker(failure),
        };
        match ended {
            Ended::Signal => {
                self.shutdown().await;
                Ok(())
            }
            Ended::Server(result) => {
                tracing::error!("HTTP server stopped unexpectedly");
                self.stop_rest().await;
                match result {
                    Ok(Ok(())) => Err(RunError::Http(std::io::Error::other(
                        "the HTTP server stopped",
                    ))),
                    Ok(Err(e)) => Err(RunError::Http(e)),
                    Err(e) => Err(RunError::Http(std::io::Error::other(e))),
                }
            }
            Ended::Worker(failure) => {
                tokio::time::sleep(supervise::FAILURE_GRACE).await;
                tracing::error!("{failure}: shutting the node down");
                self.shutdown().await;
                Err(RunError::WorkerFailed(failure))
            }
        }
    }

    /// Stops accepting HTTP requests, lets open ones finish (at most
    /// [`SHUTDOWN_GRACE`]), stops the sampler, then stops and joins the
    /// workers.
    pub async fn shutdown(mut self) {
        self.state.set_draining();
        // Event streams would otherwise hold their connections open.
        self.state.events().close();
        self.state.whep_events().close_all();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut self.server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server ended with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server task failed"),
            Err(_) => {
                tracing::warn!("HTTP requests still open after the grace period; aborting them");
                self.server.abort();
            }
        }
        self.stop_rest().await;
    }

    async fn stop_rest(mut self) {
        // Survivors take the rooms over at their next heartbeat.
        self.cluster_task.abort();
        self.cluster.leave().await;
        self.state.events().close();
        self.state.whep_events().close_all();
        self.whep_events.abort();
        self.sampler.abort();
        self.shard_sync.abort();
        if let Some(w) = &self.watchdog {
            w.abort();
        }
        if let Some(a) = &self.agent {
            a.abort();
        }
        self.supervisor.abort();
        if let Some(node) = self.node.take() {
            let joined = tokio::task::spawn_blocking(move || node.shutdown()).await;
            if let Err(e) = joined {
                tracing::warn!(error = %e, "stopping the workers failed");
            }
        }
        tracing::info!("sfu stopped");
    }
}
