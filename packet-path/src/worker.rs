//! The worker loop: one thread, one socket, one router, one send pool.
//!
//! ```text
//! loop {
//!     receive a batch, non-blocking (GRO buffers split into datagrams):
//!         recvmmsg, io_uring completions, or the AF_XDP ring (Backend)
//!     now = Instant::now()                       // once per batch
//!     heartbeat = now                            // an atomic the handles read
//!     router.handle_input(now, src, datagram, &mut pool) for each datagram
//!         (flushing early when the queue holds half the pool); accepted?
//!         -> backend.accepted(i) (AF_XDP learns the sender's next hop)
//!     router.handle_timeout(now) if router.poll_timeout() <= now
//!     pool.flush_backend(): GSO trains per destination via sendmmsg or
//!         linked io_uring SendMsgs (all reaped), buffers freed
//!     drain up to 64 control requests (try_recv) -> router.handle_command
//!     router.poll_event() -> the node's event channel (try_send)
//!     publish counters to the shared atomics
//!     stop flag set? -> return
//!     nothing received? -> ppoll(socket, wake eventfd) until the router's
//!                          next deadline, at most IDLE_WAIT
//! }
//! ```
//!
//! A busy worker never sleeps: `recvmmsg` returns data and the loop goes
//! round. An idle one sleeps in `ppoll` until a datagram arrives, a
//! handle notifies its `eventfd` (a command was queued, or stop), the
//! router's next timer is due ([`Router::poll_timeout`]), or [`IDLE_WAIT`]
//! passes (which bounds the heartbeat's age). So a command on an idle node
//! is answered in microseconds, not after a read timeout. Nothing in the
//! loop allocates.
//!
//! The thread body ([`Worker::run_supervised`]) catches a panic of the loop
//! and records it in [`Shared`] with its message, so the handles report the
//! worker dead instead of silently answering `Stopped`.

use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::AtomicU8;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use sfu_core::router::{
    Command, Counter, DropReason, Event, Outcome, RemovalReason, Router, RouterError,
};

use crate::backend::{Backend, UringSocket, XdpSocket};
use crate::counters::{PathCounter, PathGauge};
use crate::io::{GRO_BUFFER_BYTES, RecvMeta};
use crate::pool::{BUFFER_BYTES, SendPool};
use crate::sys::{self, EventFd};

/// Longest sleep of an idle worker: bounds its heartbeat's age.
pub const IDLE_WAIT: Duration = Duration::from_millis(20);
/// Most control requests handled between two batches.
const COMMANDS_PER_LOOP: usize = 64;
/// How often the thread's CPU time (a system call) is read.
const CPU_CLOCK_PERIOD: Duration = Duration::from_millis(100);

/// An event of one worker's router, for the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerEvent {
    /// The worker's index.
    pub worker: usize,
    /// What happened.
    pub event: Event,
}

/// A control request and where its answer goes.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) cmd: Command,
    pub(crate) reply: Sender<Result<Outcome, RouterError>>,
}

/// [`Shared::exit`]: the thread still runs.
pub(crate) const RUNNING: u8 = 0;
/// [`Shared::exit`]: the loop returned (stop flag, or every handle gone).
pub(crate) const RETURNED: u8 = 1;
/// [`Shared::exit`]: the loop panicked; [`Shared::panic`] holds the message.
pub(crate) const PANICKED: u8 = 2;

/// Counters one worker publishes and any thread reads.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) stop: AtomicBool,
    /// The clock origin of `heartbeat`.
    pub(crate) epoch: Instant,
    /// Nanoseconds from `epoch` to the start of the latest loop iteration.
    pub(crate) heartbeat: AtomicU64,
    /// [`RUNNING`], [`RETURNED`] or [`PANICKED`].
    pub(crate) exit: AtomicU8,
    /// The panic message, once `exit` is [`PANICKED`].
    pub(crate) panic: Mutex<Option<String>>,
    /// Heartbeat age beyond which the worker counts as stalled.
    pub(crate) stall_after: Duration,
    /// The CPU the worker is pinned to, or -1.
    pub(crate) cpu: AtomicI64,
    /// The router's counters, by [`Counter::index`].
    pub(crate) counters: [AtomicU64; Counter::COUNT],
    /// Endpoints the router removed by itself, by reason index.
    pub(crate) removed: [AtomicU64; RemovalReason::COUNT],
    pub(crate) drops: [AtomicU64; DropReason::COUNT],
    /// The packet path's counters, by [`PathCounter::index`].
    pub(crate) path: [AtomicU64; PathCounter::COUNT],
    /// The packet path's gauges, by [`PathGauge::index`].
    pub(crate) gauges: [AtomicU64; PathGauge::COUNT],
    pub(crate) cpu_nanos: AtomicU64,
    /// Wakes the worker from its idle wait.
    pub(crate) wake: EventFd,
    /// The backend the worker runs ([`Backend::name`]); fixed at start.
    pub(crate) io_backend: &'static str,
    /// Why the configured backend could not run, if it could not.
    pub(crate) io_fallback: Option<String>,
}

impl Shared {
    pub(crate) fn new(
        cpu: Option<usize>,
        socket: &Backend,
        io_fallback: Option<String>,
        pool_capacity: usize,
        stall_after: Duration,
    ) -> io::Result<Self> {
        Ok(Self {
            stop: AtomicBool::new(false),
            epoch: Instant::now(),
            heartbeat: AtomicU64::new(0),
            exit: AtomicU8::new(RUNNING),
            panic: Mutex::new(None),
            stall_after,
            cpu: AtomicI64::new(cpu.map_or(-1, |c| c as i64)),
            counters: std::array::from_fn(|_| AtomicU64::new(0)),
            removed: std::array::from_fn(|_| AtomicU64::new(0)),
            drops: std::array::from_fn(|_| AtomicU64::new(0)),
            path: std::array::from_fn(|_| AtomicU64::new(0)),
            gauges: std::array::from_fn(|i| {
                AtomicU64::new(match PathGauge::ALL[i] {
                    PathGauge::PoolCapacity => pool_capacity as u64,
                    g => backend_gauge(socket, g).unwrap_or(0),
                })
            }),
            cpu_nanos: AtomicU64::new(0),
            wake: EventFd::new()?,
            io_backend: socket.name(),
            io_fallback,
        })
    }
}

/// Everything a worker thread owns.
#[derive(Debug)]
pub(crate) struct Worker {
    pub(crate) socket: Backend,
    pub(crate) router: Router,
    pub(crate) pool: SendPool,
    pub(crate) commands: Receiver<Request>,
    pub(crate) events: Sender<WorkerEvent>,
    pub(crate) index: usize,
    pub(crate) shared: Arc<Shared>,
    pub(crate) cpu: Option<usize>,
}

impl Worker {
    /// The thread body: [`run`](Self::run), with a panic caught and
    /// recorded (message included) for the handles' health.
    pub(crate) fn run_supervised(self) {
        let shared = Arc::clone(&self.shared);
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.run())) {
            Ok(()) => shared.exit.store(RETURNED, Ordering::Release),
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic with a non-string payload".to_owned());
                *shared.panic.lock().unwrap_or_else(PoisonError::into_inner) = Some(message);
                shared.exit.store(PANICKED, Ordering::Release);
            }
        }
    }

    /// The loop: pins, allocates the receive buffers, then loops until the
    /// stop flag is set or every handle is gone.
    pub(crate) fn run(mut self) {
        self.pin();
        let buf_len = if self.socket.gro_enabled() {
            GRO_BUFFER_BYTES
        } else {
            BUFFER_BYTES
        };
        let batch = self.socket.batch();
        let mut storage = vec![0u8; batch * buf_len];
        let mut bufs: Vec<&mut [u8]> = storage.chunks_mut(buf_len).collect();
        let mut meta = vec![RecvMeta::default(); batch];
        // Flush early rather than starve the fan-out of the rest of a batch.
        let flush_at = (self.pool.capacity() / 2).max(1);
        let mut send_errors = 0u64;
        let mut recv_errors = 0u64;
        let mut next_cpu_read = Instant::now();
        let mut events_lost = 0u64;
        loop {
            let received = self.socket.recv(&mut bufs, &mut meta);
            let mut idle = false;
            let now = Instant::now();
            let beat = now.saturating_duration_since(self.shared.epoch).as_nanos();
            self.shared
                .heartbeat
                .store(u64::try_from(beat).unwrap_or(u64::MAX), Ordering::Relaxed);
            match received {
                Ok(n) => {
                    for (i, (buf, m)) in bufs.iter_mut().zip(&meta).take(n).enumerate() {
                        let len = m.len.min(buf.len());
                        let stride = if m.stride == 0 { len } else { m.stride };
                        // An empty datagram is still one datagram (counted, dropped).
                        let stride = stride.max(1);
                        let datagrams = buf[..len].chunks_mut(stride);
                        let empty = (len == 0).then_some(&mut [][..]);
                        for datagram in datagrams.chain(empty) {
                            #[cfg(feature = "test-hooks")]
                            crate::test_hooks::on_datagram(datagram);
                            if self
                                .router
                                .handle_input(now, m.addr, datagram, &mut self.pool)
                            {
                                self.socket.accepted(i);
                            }
                            if self.pool.queued() >= flush_at {
                                send_errors += self.pool.flush_backend(&mut self.socket).failed;
                            }
                        }
                    }
                }
                Err(e) if is_timeout(&e) => idle = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    recv_errors += 1;
                    // A persistent error must not spin the core.
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            if self.router.poll_timeout().is_some_and(|t| t <= now) {
                // DTLS retransmissions, consent, deadlines, transport-cc:
                // only the endpoints that are due.
                self.router.handle_timeout(now, &mut self.pool);
            }
            send_errors += self.pool.flush_backend(&mut self.socket).failed;
            let disconnected = self.handle_commands(now);
            events_lost += self.forward_events();
            if now >= next_cpu_read {
                self.socket.refresh_kernel_stats();
                let cpu = sys::thread_cpu_time().as_nanos();
                self.shared
                    .cpu_nanos
                    .store(u64::try_from(cpu).unwrap_or(u64::MAX), Ordering::Relaxed);
                next_cpu_read = now + CPU_CLOCK_PERIOD;
            }
            self.publish(send_errors, recv_errors, events_lost);
            if disconnected || self.shared.stop.load(Ordering::Relaxed) {
                return;
            }
            if idle {
                let wait = self
                    .router
                    .poll_timeout()
                    .map_or(IDLE_WAIT, |t| t.saturating_duration_since(now))
                    .min(IDLE_WAIT);
                let (fd, extra) = self.socket.wait_fds();
                if sys::wait_readable(fd, extra, &self.shared.wake, wait).is_err() {
                    recv_errors += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    /// Hands the router's events to the node's channel; returns how many
    /// found it full (they are counted, not retried: removals are also
    /// kept for `Command::TakeRemoved`).
    fn forward_events(&mut self) -> u64 {
        let mut lost = 0;
        while let Some(event) = self.router.poll_event() {
            let event = WorkerEvent {
                worker: self.index,
                event,
            };
            match self.events.try_send(event) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                Err(TrySendError::Full(_)) => lost += 1,
            }
        }
        lost
    }

    fn pin(&self) {
        let Some(cpu) = self.cpu else {
            return;
        };
        let pinned = core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
        let value = if pinned { cpu as i64 } else { -1 };
        self.shared.cpu.store(value, Ordering::Relaxed);
    }

    /// Runs queued control requests; true if no handle can send any more.
    fn handle_commands(&mut self, now: Instant) -> bool {
        for _ in 0..COMMANDS_PER_LOOP {
            match self.commands.try_recv() {
                Ok(req) => {
                    let result = self.router.handle_command(now, req.cmd);
                    // The requester may have timed out and left: nothing to do.
                    let _ = req.reply.send(result);
                }
                Err(TryRecvError::Empty) => return false,
                Err(TryRecvError::Disconnected) => return true,
            }
        }
        false
    }

    fn publish(&self, send_errors: u64, recv_errors: u64, events_lost: u64) {
        let s = &self.shared;
        let r = self.router.stats();
        let set = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
        for (a, &v) in s.counters.iter().zip(&r.counters) {
            set(a, v);
        }
        for (a, &v) in s.removed.iter().zip(&r.removed) {
            set(a, v);
        }
        for (a, &v) in s.drops.iter().zip(&r.drops) {
            set(a, v);
        }
        let socket = self.socket.socket();
        let xdp = self.socket.xdp().map(XdpSocket::stats).unwrap_or_default();
        for (a, &c) in s.path.iter().zip(PathCounter::ALL) {
            set(
                a,
                match c {
                    PathCounter::PoolExhausted => self.pool.exhausted(),
                    PathCounter::GsoFallbacks => socket.gso_fallbacks(),
                    PathCounter::GsoRefusals => socket.gso_refusals(),
                    PathCounter::GsoSends => socket.gso_sends(),
                    PathCounter::SendErrors => send_errors,
                    PathCounter::RecvErrors => recv_errors,
                    PathCounter::EventsLost => events_lost,
                    PathCounter::UringBuffersExhausted => self
                        .socket
                        .uring()
                        .map_or(0, UringSocket::buffers_exhausted),
                    PathCounter::XdpRxFrames => xdp.rx_frames,
                    PathCounter::XdpTxFrames => xdp.tx_frames,
                    PathCounter::XdpKernelReceives => xdp.kernel_receives,
                    PathCounter::XdpKernelSends => xdp.kernel_sends,
                    PathCounter::XdpRxMalformed => xdp.rx_malformed,
                    PathCounter::XdpTxNoFrame => xdp.tx_no_frame,
                    PathCounter::XdpKernelDropped => xdp.kernel_dropped,
                },
            );
        }
        for (a, &g) in s.gauges.iter().zip(PathGauge::ALL) {
            set(
                a,
                match g {
                    PathGauge::PoolInUse => self.pool.in_use() as u64,
                    PathGauge::PoolCapacity => self.pool.capacity() as u64,
                    PathGauge::GsoFallbackDestinations => socket.gso_fallback_destinations() as u64,
                    PathGauge::Rooms => self.router.rooms() as u64,
                    PathGauge::Endpoints => self.router.endpoints() as u64,
                    g => backend_gauge(&self.socket, g).unwrap_or(0),
                },
            );
        }
    }
}

/// The gauges that describe the backend itself (what it is and can do),
/// the same at start and in every publication; `None` for the others.
fn backend_gauge(socket: &Backend, gauge: PathGauge) -> Option<u64> {
    let on = match gauge {
        PathGauge::GsoEnabled => socket.gso_enabled(),
        PathGauge::GroEnabled => socket.gro_enabled(),
        PathGauge::IoUring => socket.is_uring(),
        PathGauge::IoUringMultishot => socket.uring().is_some_and(UringSocket::multishot),
        PathGauge::IoAfXdp => socket.xdp().is_some(),
        PathGauge::XdpZeroCopy => socket.xdp().is_some_and(XdpSocket::zerocopy),
        PathGauge::XdpNative => socket.xdp().is_some_and(XdpSocket::native),
        _ => return None,
    };
    Some(u64::from(on))
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
