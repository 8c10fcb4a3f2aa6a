//! The packet path of the SFU: UDP sockets, batches, GSO/GRO, send-buffer
//! pools and the pinned worker threads that drive `sfu-core`'s router.
//!
//! # Design
//! * [`io`] — [`io::BatchSocket`], a safe batched UDP socket: `recvmmsg` with
//!   UDP GRO and `sendmmsg` with UDP GSO over arrays allocated once at bind,
//!   with a fallback to plain sends for a destination whose GSO train the
//!   kernel refuses (e.g. a small path MTU), retried after a back-off, so
//!   one such subscriber does not cost the others their trains. The
//!   worker and the load generator (`sfu-loadgen`) both use it.
//! * [`pool`] — [`pool::SendPool`], the send buffers of one worker (one
//!   allocation of `pool_buffers` × 2048 bytes, a free list, a send queue),
//!   the router's [`Transmit`](sfu_core::router::Transmit). Its flush groups
//!   the queue by destination into GSO trains sent without copying (one iovec
//!   per buffer).
//! * [`Node`] — starts the workers; [`WorkerHandle`] sends them commands and
//!   reads their counters ([`WorkerStats`]: the router's [`Counter`](sfu_core::router::Counter)
//!   table and the packet path's own [`PathCounter`] and [`PathGauge`], each
//!   counter declared once).
//!
//! # Run loop
//! Each worker thread owns one socket, one [`Router`](sfu_core::router::Router)
//! and one pool, and loops:
//!
//! 1. `recvmmsg` up to `batch` buffers, non-blocking (64 KiB each with GRO;
//!    a GRO buffer is split into `stride`-sized datagrams);
//! 2. takes `Instant::now()` once, publishes it as the worker's heartbeat
//!    (an atomic), and passes every datagram to
//!    `Router::handle_input`, which decrypts it in place and writes each
//!    egress copy into a pool buffer (the pool is flushed early if the queue
//!    reaches half its buffers); runs `Router::handle_timeout` when
//!    `Router::poll_timeout` is due (only the endpoints whose deadline came);
//! 3. flushes the pool: sorts the queue by (destination, queueing order),
//!    sends each destination's equal-size datagrams as GSO trains with
//!    `sendmmsg` (one datagram per message for a destination backing off
//!    after a GSO refusal), and frees the buffers;
//! 4. runs up to 64 queued control commands (`crossbeam-channel`
//!    `try_recv`; each request carries its reply channel);
//! 5. hands the router's events (`Router::poll_event`) to the node's bounded
//!    event channel ([`Node::events`], [`WorkerEvent`]);
//! 6. publishes its counters to atomics (thread CPU time every 100 ms);
//! 7. returns if the stop flag is set;
//! 8. if nothing was received, sleeps in `ppoll` on the socket and an
//!    `eventfd` until a datagram, a command or stop (the handle notifies the
//!    eventfd), the router's next deadline, or [`IDLE_WAIT`] (20 ms).
//!
//! So an idle worker answers a command in microseconds, its heartbeat
//! ([`WorkerHandle::heartbeat_age`]) is at most about [`IDLE_WAIT`] old,
//! and a busy worker never sleeps. Nothing in the loop allocates after
//! start-up (`tests/zero_alloc_worker.rs` counts allocations over a
//! million packets).
//!
//! # Threading: one port per worker
//! A worker is one thread, pinned with `core_affinity` to
//! `cpus[i % cpus.len()]` when CPUs are given, and worker `i` binds its own
//! port `base_port + i`. There is no `SO_REUSEPORT`: a room lives on exactly
//! one worker, whose router alone holds the room's SRTP contexts, sequence
//! rewriters and fan-out lists, with no locks. The control plane advertises
//! that worker's address to every endpoint of the room, so each packet lands
//! directly on the thread owning its state. With `SO_REUSEPORT` the kernel
//! would hash each 5-tuple to an arbitrary socket of the group, scattering one
//! room's endpoints (and one endpoint's flows) over workers that know nothing
//! of them.
//!
//! Workers share nothing but their counters ([`WorkerHandle::stats`] reads
//! relaxed atomics) and their command channel.
//!
//! # Rooms larger than one core
//! A room lives on one worker. When it has `cluster.relay_after` endpoints
//! there, the control plane (`control::state::shard`) gives it a shard on
//! another worker that holds only subscribers, fed by a trunk: the room's
//! worker sends each publisher packet once, re-protected with the trunk's
//! key, from its socket to the shard worker's socket, as it would to a
//! subscriber, and the shard fans it out to its own subscribers. The same
//! trunks link nodes (`control::cluster::relay`). Nothing here changes:
//! each worker still owns its state alone, and a trunk is an endpoint to
//! both routers.
//!
//! # Panics
//! Nothing received from the network can make this crate panic: datagrams go
//! to the router (which never panics on input) as slices bounded by the
//! received length, and address families the code does not know are mapped
//! to `0.0.0.0:0`. Socket errors are counted ([`PathCounter::SendErrors`],
//! [`PathCounter::RecvErrors`]), never unwrapped. [`Node::start`] returns an
//! error, not a panic, for bad configuration or a busy port.
//!
//! Should a worker panic all the same (a bug), the thread body catches the
//! panic and records its message; the other workers go on.
//! [`WorkerHandle::health`] then answers [`WorkerHealth::Dead`] (and
//! [`WorkerHealth::Stalled`] for a worker whose loop has not come round for
//! [`NodeConfig::stall_after`], 2 s by default), and requests to it fail with
//! [`RequestError::Stopped`]. The rooms of a dead worker are lost, and it is
//! not restarted in place: the control plane reports it and exits so that
//! the service manager restarts the node. [`Node::shutdown`] waits at most
//! [`JOIN_TIMEOUT`] for the threads, leaving a stalled one detached.
//!
//! With the `test-hooks` feature (tests only), `test_hooks` datagrams make
//! a worker panic or stall on purpose.
//!
//! # Unsafe
//! All `unsafe` code lives in the private `sys` module: the `recvmmsg`,
//! `sendmmsg`, `setsockopt`, `clock_gettime`, `eventfd` and `ppoll` calls, control-message
//! encoding and decoding, and `sockaddr` conversion, each block with a
//! `// SAFETY:` comment. The rest of the crate, including [`io`], is safe
//! code over `sys`'s safe functions. The layering is one-way: `io` uses
//! `sys`, both use the private `datagram` module (the GSO/GRO limits and
//! [`io::RecvMeta`], re-exported from `io`), and `sys` knows nothing of `io`.

mod counters;
mod datagram;
pub mod io;
mod node;
pub mod pool;
mod sys;
#[cfg(feature = "test-hooks")]
pub mod test_hooks;
mod worker;

pub use counters::{PathCounter, PathGauge};
pub use node::{
    EVENT_CHANNEL, JOIN_TIMEOUT, Node, NodeConfig, REQUEST_TIMEOUT, RequestError, STALL_AFTER,
    WorkerHandle, WorkerHealth, WorkerStats,
};
pub use worker::{IDLE_WAIT, WorkerEvent};
