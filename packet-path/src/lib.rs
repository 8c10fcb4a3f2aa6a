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
//! * [`backend`] — [`Backend`], the one packet I/O interface of a worker:
//!   an enum (a `match` per call, no allocation, no `dyn`) over
//!   [`io::BatchSocket`] (`recvmmsg`/`sendmmsg`, the default) and
//!   [`backend::UringSocket`] (io_uring, [`NodeConfig::io`] =
//!   [`IoBackend::Uring`]). Both receive a batch into the worker's buffers
//!   with [`io::RecvMeta`] (length, GRO stride, source), send
//!   [`io::Transmit`]s and the pool's GSO trains with the same
//!   per-destination GSO fallback (the io_uring socket *is* a
//!   `BatchSocket` — bind, GSO/GRO set-up, preallocated `msghdr`s, cmsgs and
//!   counters — driven by another system call), give the descriptor an idle
//!   worker waits on, and report their capabilities ([`Backend::name`],
//!   [`PathGauge::IoUring`], [`PathGauge::IoAfXdp`], `gso_enabled`,
//!   `gro_enabled`). A third implementation, [`backend::XdpSocket`]
//!   ([`IoBackend::Xdp`]), puts an AF_XDP socket beside the kernel socket:
//!   see "AF_XDP" below.
//!   The io_uring backend submits one linked chain of `RecvMsg` (or
//!   `SendMsg`, one per message) operations with `MSG_DONTWAIT` per batch
//!   and reaps every completion before it returns: the first `EAGAIN` (or
//!   send error) cancels the rest of the chain, which gives
//!   `recvmmsg`/`sendmmsg` semantics with one `io_uring_enter`, and no
//!   operation is ever in flight while the worker reads a buffer or the
//!   pool frees one. Where the kernel has it (6.0+), receives come from
//!   a multishot `RecvMsg` into a ring of provided buffers instead, on a
//!   second ring, with no submission per batch (see the `uring` module).
//!   Not built: registered buffers or files, zero-copy send, SQPOLL.
//! * `ether` — what AF_XDP does without the kernel's stack, in safe code:
//!   Ethernet/IPv4/UDP headers read (lengths and IPv4 checksum checked) and
//!   written (IPv4 and UDP checksums), next-hop MACs learnt from ingress
//!   frames in a fixed table, and the XDP program as eBPF instructions.
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
//! 1. receives up to `batch` buffers (one `recvmmsg`, or one io_uring
//!    submit of linked `RecvMsg`s), non-blocking (64 KiB each with GRO;
//!    a GRO buffer is split into `stride`-sized datagrams);
//! 2. takes `Instant::now()` once, publishes it as the worker's heartbeat
//!    (an atomic), and passes every datagram to
//!    `Router::handle_input`, which decrypts it in place and writes each
//!    egress copy into a pool buffer (the pool is flushed early if the queue
//!    reaches half its buffers); runs `Router::handle_timeout` when
//!    `Router::poll_timeout` is due (only the endpoints whose deadline came);
//! 3. flushes the pool: sorts the queue by (destination, queueing order),
//!    sends each destination's equal-size datagrams as GSO trains with
//!    `sendmmsg` or linked io_uring `SendMsg`s whose completions are all
//!    reaped before the flush returns (one datagram per message for a destination backing off
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
//! # AF_XDP
//! With [`IoBackend::Xdp`], [`Node::start`] loads one XDP program for the
//! node ([`backend::XdpProgram`]: an `XSKMAP` and 33 eBPF instructions,
//! through the `bpf` system call, no loader library and no compiled
//! object) and attaches it with a BPF link to the interface holding
//! [`NodeConfig::bind`] (native mode, else generic). The program steers an
//! IPv4/UDP frame without options or fragments, for the bound address and
//! port `base_port + q`, to the AF_XDP socket of receive queue `q`; every
//! other frame (ARP, the control API, SSH, IPv6, media on another queue,
//! frames longer than a UMEM frame holds after the kernel's headroom)
//! goes on to the kernel. Worker `i` binds queue `i` (zero-copy where the
//! driver can, else copy mode) with a UMEM of 20,480 2 KiB frames and keeps
//! its kernel UDP socket on the same address: it receives what the program
//! passes (read when the ring is empty and every 16th batch) and sends what
//! the ring cannot (no learnt next hop yet, IPv6, larger than a frame,
//! loopback destinations). A worker copies each payload out of its frame
//! into its own buffer and returns the frame at once, and copies each
//! egress datagram (a GSO train is cut in software) behind headers it
//! writes; `sfu-core` sees the same slices as on the other backends. On a
//! real NIC, worker `i`'s port must be steered to queue `i` (`ethtool -N
//! ... dst-port P action i`) for its media to take the ring; what is not
//! steered still arrives, through the kernel socket. The link, the
//! program and the sockets close with the node (or the process).
//!
//! # Backend fallback
//! A worker configured with [`IoBackend::Uring`] runs the socket backend
//! instead when the host cannot run io_uring: `/proc/sys/kernel/io_uring_disabled`
//! is 2, or the ring set-up fails (`ENOSYS`, `EPERM` under a seccomp
//! profile or `io_uring_disabled` = 1, no `RECVMSG`/`SENDMSG`). This crate
//! has no logging: the reason is kept for the control plane,
//! [`WorkerHandle::io_backend`] answers `("socket", Some(reason))`, and the
//! gauge [`PathGauge::IoUring`] (`sfu_io_uring{worker}` in `/metrics`) is 0.
//! The choice is made in [`Node::start`], before the threads start.
//! Likewise a worker asked for [`IoBackend::Xdp`] runs the socket backend,
//! with the reason, when the program cannot be loaded or attached (no
//! `CAP_BPF`/`CAP_NET_ADMIN`, another program on the interface, an
//! unspecified or IPv6 bind address, ephemeral ports) or its socket cannot
//! be set up (no receive queue `i` on the interface, locked-memory limit);
//! [`PathGauge::IoAfXdp`] is then 0.
//!
//! With the `test-hooks` feature (tests only), `test_hooks` datagrams make
//! a worker panic or stall on purpose.
//!
//! # Unsafe
//! `unsafe` code lives in three private modules (the workspace denies
//! `unsafe_code`; each of them allows it with a module-level
//! `#![allow(unsafe_code)]`), each block with a `// SAFETY:` comment:
//! * `sys` — the `recvmmsg`, `sendmmsg`, `setsockopt`, `clock_gettime`,
//!   `eventfd` and `ppoll` calls, control-message encoding and decoding,
//!   and `sockaddr` conversion; it hands out the raw `msghdr` pointers of
//!   its preallocated arrays (`RecvScratch::msghdr`, `SendBatch::msghdr`),
//!   which is safe, since only dereferencing them is not;
//! * `xdp` — the `bpf` system call (map, program, link), the AF_XDP socket
//!   options, the UMEM and ring mappings, and the ring protocol (acquire
//!   loads of the kernel's index, release stores of ours; a frame is read
//!   only between its receive descriptor and its return to the fill ring,
//!   written only while on the free list);
//! * `uring` — the submission-queue pushes (`RecvMsg`, `SendMsg`, the
//!   multishot `RecvMsg`, whose template `msghdr` is boxed and outlives
//!   the ring) and the provided-buffer ring (registered before use and
//!   unregistered before it is unmapped; an entry is written only past
//!   the published tail),
//!   sound because every call reaps all the completions of what it pushed
//!   before it returns (it retries `io_uring_enter` rather than return
//!   early), while it still borrows the buffers the operations point at.
//!
//! The rest of the crate, including [`io`] and [`backend`], is safe code
//! over those modules' safe functions. The layering is one-way: `io` uses
//! `sys`, both use the private `datagram` module (the GSO/GRO limits and
//! [`io::RecvMeta`], re-exported from `io`), and `sys` knows nothing of `io`;
//! `uring` uses `io` and `sys`, `xdp` uses `io`, `sys` and `ether`, and
//! `backend` uses `io`, `uring` and `xdp`.

pub mod backend;
mod counters;
mod datagram;
mod ether;
pub mod io;
mod node;
pub mod pool;
mod sys;
#[cfg(feature = "test-hooks")]
pub mod test_hooks;
mod uring;
mod worker;
mod xdp;

pub use backend::{Backend, IoBackend};

/// Runs `f` on a new thread inside the network namespace `name` (made by
/// `ip netns add NAME`): the sockets `f` makes, and the threads it starts
/// (a [`Node`]'s workers), live in that namespace. For the benchmarks and
/// tests that join a node and its peers by a veth pair (the NIC stand-in
/// of the AF_XDP backend); needs `CAP_SYS_ADMIN`.
pub fn in_network_namespace<T: Send>(
    name: &str,
    f: impl FnOnce() -> T + Send,
) -> std::io::Result<T> {
    let path = std::path::Path::new("/var/run/netns").join(name);
    std::thread::scope(|s| {
        s.spawn(|| {
            sys::enter_network_namespace(&path)?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
pub use counters::{PathCounter, PathGauge};
pub use node::{
    EVENT_CHANNEL, JOIN_TIMEOUT, Node, NodeConfig, REQUEST_TIMEOUT, RequestError, STALL_AFTER,
    WorkerHandle, WorkerHealth, WorkerStats,
};
pub use worker::{IDLE_WAIT, WorkerEvent};
