//! The node: worker threads, their handles and their counters.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sfu_core::dtls::DtlsCert;
use sfu_core::router::{
    Command, Counter, DropReason, Outcome, RemovalReason, Router, RouterConfig, RouterError,
};

use crate::backend::{Backend, IoBackend, XdpProgram};
use crate::counters::{PathCounter, PathGauge};
use crate::io::{BatchSocket, SocketOptions};
use crate::pool::SendPool;
use crate::worker::{PANICKED, RETURNED, Request, Shared, Worker, WorkerEvent};

/// How long [`WorkerHandle::request`] waits for the router's answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Router events the node's event channel ([`Node::events`]) holds; a
/// worker that finds it full counts the event lost
/// ([`PathCounter::EventsLost`]).
pub const EVENT_CHANNEL: usize = 65_536;

/// Default [`NodeConfig::stall_after`].
pub const STALL_AFTER: Duration = Duration::from_secs(2);

/// How long [`Node::shutdown`] waits for the worker threads to end; a
/// thread still running then (a stalled worker) is left detached.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether a worker thread is alive and looping
/// ([`WorkerHandle::health`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkerHealth {
    /// The loop ran within the stall threshold.
    Running,
    /// The thread is alive but its loop has not come round for `since`,
    /// longer than [`NodeConfig::stall_after`].
    Stalled {
        /// Age of the latest heartbeat.
        since: Duration,
    },
    /// The thread has ended: it panicked (`reason` is the panic message),
    /// or it was stopped.
    Dead {
        /// Why: `"panicked: <message>"` or `"stopped"`.
        reason: String,
    },
}

impl WorkerHealth {
    /// Whether the worker is [`WorkerHealth::Running`].
    pub fn is_running(&self) -> bool {
        matches!(self, Self::Running)
    }
}

/// How a [`Node`] is laid out.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Number of worker threads (at least 1).
    pub workers: usize,
    /// The core of worker `i` is `cpus[i % cpus.len()]`; empty: don't pin.
    pub cpus: Vec<usize>,
    /// Address the media sockets bind to. Default 127.0.0.1.
    pub bind: IpAddr,
    /// Worker `i` binds `base_port + i`; 0 gives every worker an ephemeral
    /// port (see [`WorkerHandle::local_addr`]). Default 7882.
    pub base_port: u16,
    /// Send buffers per worker, allocated at start. Default 4096.
    pub pool_buffers: usize,
    /// Most datagrams per `recvmmsg`/`sendmmsg`. Default 64.
    pub batch: usize,
    /// `SO_RCVBUF`/`SO_SNDBUF` (the `FORCE` variants when permitted).
    /// Default 32 MiB.
    pub socket_buffer_bytes: usize,
    /// Try UDP GSO (per-destination fallback when refused). Default true.
    pub gso: bool,
    /// Try UDP GRO. Default true.
    pub gro: bool,
    /// The packet I/O backend of every worker: `recvmmsg`/`sendmmsg`
    /// ([`IoBackend::Socket`], the default) or io_uring, which falls back
    /// to the socket backend, with the reason recorded
    /// ([`WorkerHandle::io_backend`]), where the host cannot run it.
    pub io: IoBackend,
    /// Limits of each worker's router.
    pub router: RouterConfig,
    /// The node's DTLS certificate, shared by every worker's router; WebRTC
    /// endpoints are refused without one.
    pub dtls_cert: Option<DtlsCert>,
    /// A worker whose loop has not come round for longer than this is
    /// [`WorkerHealth::Stalled`] (an idle loop comes round every [`IDLE_WAIT`](crate::IDLE_WAIT), 20 ms).
    /// Default [`STALL_AFTER`] (2 s).
    pub stall_after: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            workers: 1,
            cpus: Vec::new(),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            base_port: 7882,
            pool_buffers: 4096,
            batch: 64,
            socket_buffer_bytes: 32 << 20,
            gso: true,
            gro: true,
            io: IoBackend::Socket,
            router: RouterConfig::default(),
            dtls_cert: None,
            stall_after: STALL_AFTER,
        }
    }
}

/// Why [`WorkerHandle::request`] got no answer from the router.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The router refused the command.
    #[error(transparent)]
    Router(#[from] RouterError),
    /// No answer within [`REQUEST_TIMEOUT`].
    #[error("worker did not answer in time")]
    Timeout,
    /// The worker has stopped.
    #[error("worker stopped")]
    Stopped,
}

/// A snapshot of one worker's counters.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerStats {
    /// The router's counters, by [`Counter::index`]; read one with
    /// [`WorkerStats::get`].
    pub counters: [u64; Counter::COUNT],
    /// Endpoints the router removed by itself, by reason label
    /// ([`RemovalReason::as_str`]).
    pub removed: Vec<(&'static str, u64)>,
    /// Drops by reason label ([`DropReason::as_str`]).
    pub drops: Vec<(&'static str, u64)>,
    /// The packet path's counters, by [`PathCounter::index`]; read one
    /// with [`WorkerStats::path`].
    pub path: [u64; PathCounter::COUNT],
    /// The packet path's gauges, by [`PathGauge::index`]; read one with
    /// [`WorkerStats::gauge`].
    pub gauges: [u64; PathGauge::COUNT],
    /// The worker thread's own CPU time (user + system), in seconds.
    pub cpu_seconds: f64,
}

impl Default for WorkerStats {
    // By hand: `Default` is derived for arrays of at most 32 elements.
    fn default() -> Self {
        Self {
            counters: [0; Counter::COUNT],
            removed: Vec::new(),
            drops: Vec::new(),
            path: [0; PathCounter::COUNT],
            gauges: [0; PathGauge::COUNT],
            cpu_seconds: 0.0,
        }
    }
}

impl WorkerStats {
    /// One router counter.
    pub fn get(&self, counter: Counter) -> u64 {
        self.counters[counter.index()]
    }

    /// One packet-path counter.
    pub fn path(&self, counter: PathCounter) -> u64 {
        self.path[counter.index()]
    }

    /// One packet-path gauge (a boolean as 0 or 1).
    pub fn gauge(&self, gauge: PathGauge) -> u64 {
        self.gauges[gauge.index()]
    }
}

/// Controls one worker thread: send it commands, read its counters.
#[derive(Debug, Clone)]
pub struct WorkerHandle {
    index: usize,
    local_addr: SocketAddr,
    commands: crossbeam_channel::Sender<Request>,
    shared: Arc<Shared>,
}

impl WorkerHandle {
    /// The worker's index, 0-based.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The media address of this worker (with the real port when the
    /// config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The core the worker is pinned to; `None` if unpinned or pinning failed.
    pub fn cpu(&self) -> Option<usize> {
        usize::try_from(self.shared.cpu.load(Ordering::Relaxed)).ok()
    }

    /// The packet I/O backend the worker runs (`"socket"` or
    /// `"io_uring"`, also exported as the gauge [`PathGauge::IoUring`]) and,
    /// if it is not the one [`NodeConfig::io`] asked for, why (e.g.
    /// `"io_uring set-up failed: Operation not permitted (os error 1)"`).
    pub fn io_backend(&self) -> (&'static str, Option<String>) {
        (self.shared.io_backend, self.shared.io_fallback.clone())
    }

    /// Sends a command to the worker and waits (up to [`REQUEST_TIMEOUT`])
    /// for the router's answer. An idle worker answers in microseconds (the
    /// request wakes it, see [`IDLE_WAIT`](crate::IDLE_WAIT)); a busy one after its current
    /// batch. A command whose request timed out stays queued and may still
    /// run later.
    pub fn request(&self, cmd: Command) -> Result<Outcome, RequestError> {
        if self.shared.stop.load(Ordering::Relaxed) {
            return Err(RequestError::Stopped);
        }
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.commands
            .send(Request { cmd, reply })
            .map_err(|_| RequestError::Stopped)?;
        // An idle worker sleeps in ppoll: wake it to answer now.
        self.shared.wake.notify();
        match answer.recv_timeout(REQUEST_TIMEOUT) {
            Ok(result) => result.map_err(RequestError::Router),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(RequestError::Timeout),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(RequestError::Stopped),
        }
    }

    /// Whether the worker thread is alive and looping: [`Dead`] once it
    /// has panicked (or was stopped), [`Stalled`] while its heartbeat is
    /// older than [`NodeConfig::stall_after`], else [`Running`].
    ///
    /// [`Dead`]: WorkerHealth::Dead
    /// [`Stalled`]: WorkerHealth::Stalled
    /// [`Running`]: WorkerHealth::Running
    pub fn health(&self) -> WorkerHealth {
        let s = &self.shared;
        match s.exit.load(Ordering::Acquire) {
            PANICKED => {
                let message = s
                    .panic
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone()
                    .unwrap_or_default();
                WorkerHealth::Dead {
                    reason: format!("panicked: {message}"),
                }
            }
            RETURNED => WorkerHealth::Dead {
                reason: "stopped".to_owned(),
            },
            _ => {
                let since = self.heartbeat_age();
                if since > s.stall_after {
                    WorkerHealth::Stalled { since }
                } else {
                    WorkerHealth::Running
                }
            }
        }
    }

    /// Time since the worker loop last came round (its heartbeat); about
    /// [`IDLE_WAIT`](crate::IDLE_WAIT) (20 ms) at most while idle and healthy.
    pub fn heartbeat_age(&self) -> Duration {
        let s = &self.shared;
        let beat = Duration::from_nanos(s.heartbeat.load(Ordering::Relaxed));
        s.epoch.elapsed().saturating_sub(beat)
    }

    /// The counters the worker published after its last batch.
    pub fn stats(&self) -> WorkerStats {
        let s = &self.shared;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        WorkerStats {
            counters: std::array::from_fn(|i| get(&s.counters[i])),
            removed: RemovalReason::ALL
                .iter()
                .zip(&s.removed)
                .map(|(r, a)| (r.as_str(), get(a)))
                .collect(),
            drops: DropReason::ALL
                .iter()
                .zip(&s.drops)
                .map(|(r, a)| (r.as_str(), get(a)))
                .collect(),
            path: std::array::from_fn(|i| get(&s.path[i])),
            gauges: std::array::from_fn(|i| get(&s.gauges[i])),
            cpu_seconds: get(&s.cpu_nanos) as f64 / 1e9,
        }
    }
}

/// The packet path of one node: its worker threads.
#[derive(Debug)]
pub struct Node {
    workers: Vec<WorkerHandle>,
    threads: Vec<JoinHandle<()>>,
    events: crossbeam_channel::Receiver<WorkerEvent>,
}

impl Node {
    /// Binds every worker's socket first (so a port in use fails here, with
    /// no thread started), then spawns and pins one thread per worker.
    pub fn start(config: NodeConfig) -> io::Result<Node> {
        if config.workers == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "workers must be at least 1",
            ));
        }
        let opts = SocketOptions {
            buffer_bytes: config.socket_buffer_bytes,
            gro: config.gro,
            gso: config.gso,
            // Non-blocking: an idle worker sleeps in ppoll instead, so a
            // command can wake it.
            read_timeout: Some(Duration::ZERO),
            reuse_port: false,
        };
        let mut sockets = Vec::with_capacity(config.workers);
        // AF_XDP: one program for the node, attached before any socket.
        let xdp = (config.io == IoBackend::Xdp).then(|| {
            XdpProgram::attach(
                SocketAddr::new(config.bind, config.base_port),
                config.workers,
            )
            .map(Arc::new)
            .map_err(|e| format!("AF_XDP unavailable: {e}"))
        });
        for i in 0..config.workers {
            let port = if config.base_port == 0 {
                0
            } else {
                u16::try_from(i)
                    .ok()
                    .and_then(|i| config.base_port.checked_add(i))
                    .ok_or_else(|| {
                        io::Error::new(io::ErrorKind::InvalidInput, "worker port beyond 65535")
                    })?
            };
            let addr = SocketAddr::new(config.bind, port);
            sockets.push(match &xdp {
                Some(program) => {
                    let socket = BatchSocket::bind(addr, config.batch, &opts)?;
                    Backend::xdp_or_socket(
                        socket,
                        program.as_ref().map_err(String::as_str),
                        i as u32,
                    )
                }
                None => Backend::bind(addr, config.batch, &opts, config.io)?,
            });
        }
        let (events_tx, events) = crossbeam_channel::bounded(EVENT_CHANNEL);
        let mut node = Node {
            workers: Vec::with_capacity(config.workers),
            threads: Vec::with_capacity(config.workers),
            events,
        };
        for (index, (socket, io_fallback)) in sockets.into_iter().enumerate() {
            let cpu = (!config.cpus.is_empty()).then(|| config.cpus[index % config.cpus.len()]);
            let local_addr = socket.local_addr()?;
            let shared = Arc::new(Shared::new(
                cpu,
                &socket,
                io_fallback,
                config.pool_buffers.max(1),
                config.stall_after,
            )?);
            let (commands, requests) = crossbeam_channel::unbounded();
            let mut worker = Worker {
                socket,
                router: Router::new(config.router),
                pool: SendPool::new(config.pool_buffers),
                commands: requests,
                events: events_tx.clone(),
                index,
                shared: Arc::clone(&shared),
                cpu,
            };
            if let Some(cert) = &config.dtls_cert {
                worker.router.set_dtls_cert(cert.clone());
            }
            // On error `node` is dropped, which stops the workers started so far.
            let thread = std::thread::Builder::new()
                .name(format!("sfu-worker-{index}"))
                .spawn(move || worker.run_supervised())?;
            node.threads.push(thread);
            node.workers.push(WorkerHandle {
                index,
                local_addr,
                commands,
                shared,
            });
        }
        Ok(node)
    }

    /// One handle per worker, in index order.
    pub fn workers(&self) -> &[WorkerHandle] {
        &self.workers
    }

    /// The workers' router events ([`sfu_core::router::Event`]), in the
    /// order each worker produced them. One consumer should drain it all
    /// the time: a worker that finds it full drops the event and counts it
    /// ([`PathCounter::EventsLost`]).
    pub fn events(&self) -> crossbeam_channel::Receiver<WorkerEvent> {
        self.events.clone()
    }

    /// Stops every worker and waits (up to [`JOIN_TIMEOUT`]) for its
    /// thread to end; a stalled thread is left detached.
    pub fn shutdown(self) {
        drop(self);
    }

    fn stop_and_join(&mut self) {
        for w in &self.workers {
            w.shared.stop.store(true, Ordering::Relaxed);
            w.shared.wake.notify();
        }
        let deadline = Instant::now() + JOIN_TIMEOUT;
        while Instant::now() < deadline && !self.threads.iter().all(|t| t.is_finished()) {
            std::thread::sleep(Duration::from_millis(1));
        }
        for t in self.threads.drain(..) {
            if t.is_finished() {
                // A panic was caught and recorded by the thread body.
                let _ = t.join();
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}
