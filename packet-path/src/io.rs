//! Safe batched UDP: one [`BatchSocket`] per port, `recvmmsg` with GRO and
//! `sendmmsg` with GSO underneath, over arrays allocated once in
//! [`BatchSocket::bind`].
//!
//! # Receiving
//! [`BatchSocket::recv`] fills up to `batch` caller buffers in one system
//! call. With GRO on, the kernel may coalesce several datagrams of one flow
//! into one buffer: [`RecvMeta::stride`] is then the size of each datagram
//! (the last may be shorter) and [`RecvMeta::datagrams`] splits the buffer.
//! Such buffers should be [`GRO_BUFFER_BYTES`] long; a shorter buffer gets a
//! truncated train.
//!
//! # Sending
//! A [`Transmit`] is one datagram, or with `segment_size: Some(s)` a train of
//! datagrams of `s` bytes (the last may be shorter) to one destination. With
//! GSO on, a train goes to the kernel as one message per at most
//! [`MAX_GSO_SEGMENTS`] segments and [`MAX_GSO_BYTES`] bytes; with GSO off it
//! is split into one message per datagram. Both give the receiver the same
//! datagrams.
//!
//! # GSO fallback
//! If `setsockopt(UDP_SEGMENT)` fails at bind (a kernel without UDP GSO),
//! the socket sends without segmentation for the rest of its life and counts
//! one [`BatchSocket::gso_fallbacks`]; [`BatchSocket::gso_enabled`] is then
//! false.
//!
//! A segmented send the kernel refuses at run time — `EIO` (the route's
//! device cannot checksum-offload), `EINVAL` or `EMSGSIZE` (segments
//! larger than the path MTU, e.g. a subscriber behind a small-MTU route;
//! kernels 6.x answer `EMSGSIZE`) — concerns that
//! message's destination, not the socket: the destination goes into a
//! table of refused destinations, the refused message is resent at once
//! without segmentation (no data is lost), and that destination alone gets
//! plain sends until its back-off expires: [`GSO_RETRY_AFTER`] (10 s) after
//! the first refusal, doubled on each refused probe up to [`GSO_RETRY_MAX`]
//! times that (320 s).
//! After the back-off the next train to it is sent segmented again (a
//! probe); if the kernel accepts it, the destination leaves the table.
//! Every other destination keeps its GSO trains. The table holds
//! [`GSO_REFUSED_DESTINATIONS`] entries allocated at bind; when it is full,
//! the entry refused longest ago is replaced. Counters:
//! [`BatchSocket::gso_refusals`], [`BatchSocket::gso_fallback_destinations`],
//! [`BatchSocket::gso_sends`].
//!
//! If `UDP_GRO` cannot be enabled, the socket receives one datagram per
//! buffer.
//!
//! # Zero-copy trains (crate-internal)
//! The worker sends trains whose segments live in separate pool buffers: it
//! pushes one message with one iovec per segment plus `UDP_SEGMENT`, and the
//! kernel concatenates the iovecs before cutting segments, so nothing is
//! copied in user space (see [`SendPool::flush`](crate::pool::SendPool::flush)).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

pub use crate::datagram::{GRO_BUFFER_BYTES, MAX_GSO_BYTES, MAX_GSO_SEGMENTS, RecvMeta};
use crate::sys::{self, RecvScratch, SendBatch, SendScratch};

/// How long a destination whose segmented send the kernel refused gets plain
/// sends before GSO is tried again (the default of
/// [`BatchSocket::set_gso_retry_after`]); doubled on each refused retry.
pub const GSO_RETRY_AFTER: Duration = Duration::from_secs(10);
/// Longest back-off of a destination that keeps refusing GSO, as a multiple
/// of the first one: 32 × [`GSO_RETRY_AFTER`] = 320 s by default.
pub const GSO_RETRY_MAX: u32 = 32;
/// Destinations a socket remembers as refusing GSO (allocated at bind). The
/// table is searched linearly for each message while it is not empty, so it
/// stays small.
pub const GSO_REFUSED_DESTINATIONS: usize = 64;

/// How [`BatchSocket::bind`] sets up a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketOptions {
    /// `SO_RCVBUF` and `SO_SNDBUF` (the `FORCE` variants when the process
    /// may use them, so `net.core.rmem_max` does not cap it). 0 keeps the
    /// kernel default. Default 4 MiB.
    pub buffer_bytes: usize,
    /// Try UDP GRO on receive. Default true.
    pub gro: bool,
    /// Try UDP GSO on send. Default true.
    pub gso: bool,
    /// How long [`BatchSocket::recv`] waits for the first datagram before
    /// returning `WouldBlock`. `None` waits forever; `Some(Duration::ZERO)`
    /// makes the socket non-blocking (sends too: a full send buffer then
    /// ends a send early). Default 100 ms.
    pub read_timeout: Option<Duration>,
    /// Set `SO_REUSEPORT` before binding. Default false.
    pub reuse_port: bool,
}

impl Default for SocketOptions {
    fn default() -> Self {
        Self {
            buffer_bytes: 4 << 20,
            gro: true,
            gso: true,
            read_timeout: Some(Duration::from_millis(100)),
            reuse_port: false,
        }
    }
}

/// One datagram, or a train of equal-size datagrams, to one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit<'a> {
    /// Where the datagrams go.
    pub dst: SocketAddr,
    /// The payload: one datagram, or the concatenated train.
    pub contents: &'a [u8],
    /// With `Some(s)`, `contents` is a train of `s`-byte datagrams (the last
    /// may be shorter). `None` (or `s >= contents.len()`) is one datagram.
    pub segment_size: Option<usize>,
}

/// A message position for [`BatchSocket::send_messages`]: (item, offset
/// within the item). What an item is belongs to the caller.
pub(crate) type Pos = (usize, usize);

/// Why [`BatchSocket::send_messages`] stopped: the message from `at` to
/// `next` failed with `error`; everything before `at` was sent.
#[derive(Debug)]
pub(crate) struct SendFailure {
    pub(crate) at: Pos,
    pub(crate) next: Pos,
    pub(crate) error: io::Error,
}

/// Which destinations may get a segmented message in the batch being
/// built: none if the socket has no GSO, else those not backing off in the
/// refused-destination table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GsoPolicy<'t> {
    on: bool,
    refused: &'t RefusedTable,
    /// Set whenever the table is not empty.
    now: Option<Instant>,
}

impl GsoPolicy<'_> {
    /// Whether a message to `dst` may be segmented.
    pub(crate) fn allows(&self, dst: &SocketAddr) -> bool {
        if !self.on {
            return false;
        }
        match self.now {
            Some(now) => self.refused.allows(dst, now),
            None => true,
        }
    }
}

/// One destination whose segmented send the kernel refused.
#[derive(Debug, Clone, Copy)]
struct Refused {
    dst: SocketAddr,
    refused_at: Instant,
    retry_at: Instant,
    backoff: Duration,
}

/// The destinations backing off from GSO: at most
/// [`GSO_REFUSED_DESTINATIONS`], in a vector allocated once.
#[derive(Debug)]
pub(crate) struct RefusedTable {
    entries: Vec<Refused>,
    first_backoff: Duration,
}

impl RefusedTable {
    fn new(first_backoff: Duration) -> Self {
        Self {
            entries: Vec::with_capacity(GSO_REFUSED_DESTINATIONS),
            first_backoff,
        }
    }

    fn position(&self, dst: &SocketAddr) -> Option<usize> {
        self.entries.iter().position(|e| e.dst == *dst)
    }

    /// Whether `dst` may be sent a segmented message at `now`: it is not in
    /// the table, or its back-off has expired (a probe).
    fn allows(&self, dst: &SocketAddr, now: Instant) -> bool {
        match self.position(dst) {
            Some(i) => now >= self.entries[i].retry_at,
            None => true,
        }
    }

    /// Records a refusal for `dst` at `now`: a new entry backs off for the
    /// first back-off, a known one for twice its last (capped). Replaces
    /// the entry refused longest ago when the table is full. No allocation.
    fn refuse(&mut self, dst: SocketAddr, now: Instant) {
        let max = self.first_backoff.saturating_mul(GSO_RETRY_MAX);
        if let Some(i) = self.position(&dst) {
            let e = &mut self.entries[i];
            e.backoff = e.backoff.saturating_mul(2).min(max);
            e.refused_at = now;
            e.retry_at = now + e.backoff;
            return;
        }
        let entry = Refused {
            dst,
            refused_at: now,
            retry_at: now + self.first_backoff,
            backoff: self.first_backoff,
        };
        if self.entries.len() < GSO_REFUSED_DESTINATIONS {
            self.entries.push(entry);
        } else if let Some(oldest) = self.entries.iter_mut().min_by_key(|e| e.refused_at) {
            *oldest = entry;
        }
    }

    /// The kernel accepted a segmented message to `dst`: it leaves the table.
    fn accepted(&mut self, dst: &SocketAddr) {
        if let Some(i) = self.position(dst) {
            self.entries.swap_remove(i);
        }
    }
}

/// A UDP socket with preallocated `recvmmsg`/`sendmmsg` arrays.
#[derive(Debug)]
pub struct BatchSocket {
    socket: Socket,
    recv: RecvScratch,
    send: SendScratch,
    /// Start position of each message of the batch being sent.
    origins: Box<[Pos]>,
    gro: bool,
    gso: bool,
    gso_fallbacks: u64,
    refused: RefusedTable,
    gso_refusals: u64,
    gso_sends: u64,
}

impl BatchSocket {
    /// Creates, configures and binds a UDP socket, and allocates arrays for
    /// batches of `batch` messages (clamped to 1..=1024). An IPv6 wildcard
    /// address is bound dual-stack.
    pub fn bind(addr: SocketAddr, batch: usize, opts: &SocketOptions) -> io::Result<Self> {
        let batch = batch.clamp(1, sys::MAX_BATCH);
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if let SocketAddr::V6(a) = addr
            && a.ip().is_unspecified()
        {
            socket.set_only_v6(false)?;
        }
        if opts.reuse_port {
            socket.set_reuse_port(true)?;
        }
        if opts.buffer_bytes > 0
            && sys::set_buffers_force(socket.as_fd(), opts.buffer_bytes).is_err()
        {
            socket.set_recv_buffer_size(opts.buffer_bytes)?;
            socket.set_send_buffer_size(opts.buffer_bytes)?;
        }
        socket.bind(&addr.into())?;
        match opts.read_timeout {
            Some(Duration::ZERO) => socket.set_nonblocking(true)?,
            t => socket.set_read_timeout(t)?,
        }
        let gro = opts.gro && sys::set_udp_gro(socket.as_fd(), true).is_ok();
        let mut gso_fallbacks = 0;
        let gso = opts.gso
            && match sys::probe_udp_gso(socket.as_fd()) {
                Ok(()) => true,
                Err(_) => {
                    gso_fallbacks += 1;
                    false
                }
            };
        Ok(Self {
            socket,
            recv: RecvScratch::new(batch),
            send: SendScratch::new(batch, addr.is_ipv6()),
            origins: vec![(0, 0); batch].into_boxed_slice(),
            gro,
            gso,
            gso_fallbacks,
            refused: RefusedTable::new(GSO_RETRY_AFTER),
            gso_refusals: 0,
            gso_sends: 0,
        })
    }

    /// Sets how long a destination that refused GSO gets plain sends before
    /// the first retry (default [`GSO_RETRY_AFTER`], at least 1 ms); later
    /// refusals double it up to [`GSO_RETRY_MAX`] times this value.
    pub fn set_gso_retry_after(&mut self, first: Duration) {
        self.refused.first_backoff = first.max(Duration::from_millis(1));
    }

    /// The address the socket is bound to (with the real port if 0 was asked).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("socket has no IP address"))
    }

    /// Whether received buffers may hold GRO trains.
    pub fn gro_enabled(&self) -> bool {
        self.gro
    }

    /// Whether the socket can send GSO trains: false if GSO was not asked
    /// for or `UDP_SEGMENT` could not be set at bind. A destination that
    /// refused GSO does not change it (see [`gso_fallback_destinations`]).
    ///
    /// [`gso_fallback_destinations`]: Self::gso_fallback_destinations
    pub fn gso_enabled(&self) -> bool {
        self.gso
    }

    /// 1 if GSO was asked for but the kernel refused `UDP_SEGMENT` at bind,
    /// else 0.
    pub fn gso_fallbacks(&self) -> u64 {
        self.gso_fallbacks
    }

    /// Segmented sends the kernel refused (each then resent without
    /// segmentation), since bind.
    pub fn gso_refusals(&self) -> u64 {
        self.gso_refusals
    }

    /// Destinations currently sent without GSO after a refusal (backing
    /// off, or waiting for their retry).
    pub fn gso_fallback_destinations(&self) -> usize {
        self.refused.entries.len()
    }

    /// Segmented messages (GSO trains) the kernel accepted, since bind.
    pub fn gso_sends(&self) -> u64 {
        self.gso_sends
    }

    /// Most messages per system call.
    pub fn batch(&self) -> usize {
        self.origins.len()
    }

    /// The socket's descriptor (to wait for it to become readable).
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// `recvmmsg` into `bufs` (each ideally [`GRO_BUFFER_BYTES`] long when
    /// GRO is on); fills `meta[..n]` and returns `n` ≥ 1. A blocking socket
    /// waits up to its read timeout for the first datagram, then returns
    /// `WouldBlock` (or `TimedOut`); a non-blocking one (the workers')
    /// returns `WouldBlock` at once. Does not allocate.
    pub fn recv(&mut self, bufs: &mut [&mut [u8]], meta: &mut [RecvMeta]) -> io::Result<usize> {
        self.recv.recv(self.socket.as_fd(), bufs, meta)
    }

    /// `sendmmsg` of `transmits`, splitting trains as GSO or the lack of it
    /// requires. Blocks while the send buffer is full (unless the socket is
    /// non-blocking). Returns how many transmits were fully sent: all of
    /// them, or fewer if an error stopped the send after some progress
    /// (retry the rest; the error shows again then). An error before any
    /// transmit completed is returned as `Err`; a train that was partly sent
    /// is resent in full on retry. Does not allocate.
    pub fn send(&mut self, transmits: &[Transmit<'_>]) -> io::Result<usize> {
        send_transmits(self, transmits)
    }

    /// The descriptor and the `recvmmsg` arrays, for the io_uring backend's
    /// receives (which use the same headers one `RecvMsg` each).
    pub(crate) fn recv_parts(&mut self) -> (BorrowedFd<'_>, &mut RecvScratch) {
        (self.socket.as_fd(), &mut self.recv)
    }

    /// The engine under [`send`](Self::send) and the worker's flush: sends
    /// the messages from `start` to `end`, where `build(pos, gso, batch)`
    /// pushes the one message starting at `pos` (segmented only if
    /// `gso.allows` its destination) and returns the position after it, or
    /// returns `pos` unchanged if the batch has no room. Handles partial
    /// sends, `EINTR`, and GSO refusals (the destination goes into the
    /// refused table and the refused message is rebuilt from its start,
    /// now unsegmented). On another error returns the failed message.
    pub(crate) fn send_messages<'a>(
        &mut self,
        start: Pos,
        end: Pos,
        build: impl FnMut(Pos, &GsoPolicy<'_>, &mut SendBatch<'_, 'a>) -> Pos,
    ) -> Result<(), SendFailure> {
        self.send_messages_via(start, end, build, |batch, fd, from| batch.send(fd, from))
    }

    /// [`send_messages`](Self::send_messages) with the system call left to
    /// `transport(batch, fd, from)`, which sends messages `from..` of the
    /// batch and returns how many leading ones the kernel took (at least
    /// one), or the error of message `from`: `sendmmsg` for this socket,
    /// linked `SendMsg` operations for the io_uring backend.
    pub(crate) fn send_messages_via<'a>(
        &mut self,
        start: Pos,
        end: Pos,
        mut build: impl FnMut(Pos, &GsoPolicy<'_>, &mut SendBatch<'_, 'a>) -> Pos,
        mut transport: impl FnMut(&mut SendBatch<'_, 'a>, BorrowedFd<'_>, usize) -> io::Result<usize>,
    ) -> Result<(), SendFailure> {
        let fd = self.socket.as_fd();
        let mut batch = self.send.batch();
        let mut pos = start;
        // Read once per call, and only while some destination is backing
        // off: a refused message is rebuilt against the same instant, so it
        // cannot be segmented again.
        let mut now = None;
        'batches: while pos != end {
            batch.clear();
            if now.is_none() && !self.refused.entries.is_empty() {
                now = Some(Instant::now());
            }
            let gso = GsoPolicy {
                on: self.gso,
                refused: &self.refused,
                now,
            };
            while pos != end && !batch.is_full() {
                self.origins[batch.len()] = pos;
                let next = build(pos, &gso, &mut batch);
                if next == pos {
                    break;
                }
                pos = next;
            }
            if batch.len() == 0 {
                // `build` could not place a message in an empty batch.
                let error = io::Error::from(io::ErrorKind::InvalidInput);
                return Err(SendFailure {
                    at: pos,
                    next: pos,
                    error,
                });
            }
            let mut done = 0;
            while done < batch.len() {
                match transport(&mut batch, fd, done) {
                    Ok(n) => {
                        let sent = done..(done + n).min(batch.len());
                        for k in sent.filter(|&k| batch.is_segmented(k)) {
                            self.gso_sends += 1;
                            if !self.refused.entries.is_empty()
                                && let Some(dst) = batch.dst(k)
                            {
                                self.refused.accepted(&dst);
                            }
                        }
                        done += n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if batch.is_segmented(done) && sys::is_gso_refusal(&e) => {
                        let Some(dst) = batch.dst(done) else {
                            return Err(failure(&self.origins, &batch, done, pos, e));
                        };
                        let at = *now.get_or_insert_with(Instant::now);
                        self.refused.refuse(dst, at);
                        self.gso_refusals += 1;
                        pos = self.origins[done];
                        continue 'batches;
                    }
                    Err(e) => return Err(failure(&self.origins, &batch, done, pos, e)),
                }
            }
        }
        Ok(())
    }
}

/// The crate's senders of preassembled messages: [`BatchSocket`], the
/// io_uring backend and [`Backend`](crate::backend::Backend), each with
/// [`BatchSocket::send_messages`]'s contract. The pool's flush and
/// [`send_transmits`] are written once over it.
pub(crate) trait SendMessages {
    /// See [`BatchSocket::send_messages`].
    fn send_messages<'a>(
        &mut self,
        start: Pos,
        end: Pos,
        build: impl FnMut(Pos, &GsoPolicy<'_>, &mut SendBatch<'_, 'a>) -> Pos,
    ) -> Result<(), SendFailure>;
}

impl SendMessages for BatchSocket {
    fn send_messages<'a>(
        &mut self,
        start: Pos,
        end: Pos,
        build: impl FnMut(Pos, &GsoPolicy<'_>, &mut SendBatch<'_, 'a>) -> Pos,
    ) -> Result<(), SendFailure> {
        BatchSocket::send_messages(self, start, end, build)
    }
}

/// [`BatchSocket::send`] over any sender.
pub(crate) fn send_transmits(
    sender: &mut impl SendMessages,
    transmits: &[Transmit<'_>],
) -> io::Result<usize> {
    let end = (transmits.len(), 0);
    let r = sender.send_messages((0, 0), end, |(t, off), gso, batch| {
        let tr = &transmits[t];
        let remaining = tr.contents.len() - off;
        let (chunk, seg) = plan_message(remaining, tr.segment_size, gso.allows(&tr.dst));
        if !batch.push(&tr.dst, seg, [&tr.contents[off..off + chunk]].into_iter()) {
            return (t, off);
        }
        let next = off + chunk;
        if next >= tr.contents.len() {
            (t + 1, 0)
        } else {
            (t, next)
        }
    });
    match r {
        Ok(()) => Ok(transmits.len()),
        Err(SendFailure {
            at: (0, _), error, ..
        }) => Err(error),
        Err(SendFailure { at: (t, _), .. }) => Ok(t),
    }
}

/// The failure of message `i` of `batch`, whose messages start at
/// `origins` and whose last message ends at `pos`.
fn failure(
    origins: &[Pos],
    batch: &SendBatch<'_, '_>,
    i: usize,
    pos: Pos,
    error: io::Error,
) -> SendFailure {
    let next = if i + 1 < batch.len() {
        origins[i + 1]
    } else {
        pos
    };
    SendFailure {
        at: origins[i],
        next,
        error,
    }
}

/// Size and segmentation of the next message of a transmit with
/// `remaining` bytes left: `(bytes, Some(segment size) if GSO applies)`.
fn plan_message(remaining: usize, segment_size: Option<usize>, gso: bool) -> (usize, Option<u16>) {
    let s = match segment_size {
        Some(s) if s > 0 && s < remaining => s,
        _ => return (remaining, None),
    };
    let seg = match u16::try_from(s) {
        Ok(seg) if gso => seg,
        _ => return (s, None),
    };
    let per_msg = (MAX_GSO_BYTES / s).clamp(1, MAX_GSO_SEGMENTS);
    let chunk = remaining.min(per_msg * s);
    (chunk, (chunk > s).then_some(seg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_message_cases() {
        // (remaining, segment_size, gso) -> (bytes, segment)
        let cases = [
            (1200, None, true, (1200, None)),
            (0, Some(1200), true, (0, None)),
            (12_000, Some(1200), true, (12_000, Some(1200))),
            (12_000, Some(1200), false, (1200, None)),
            (1000, Some(1200), true, (1000, None)),
            (1200, Some(1200), true, (1200, None)),
            (1201, Some(1200), true, (1201, Some(1200))),
            // 65507 / 1200 = 54 segments per message.
            (100 * 1200, Some(1200), true, (54 * 1200, Some(1200))),
            // 64 segments of 100 bytes.
            (10_000, Some(100), true, (6400, Some(100))),
            (10, Some(0), true, (10, None)),
        ];
        for (remaining, seg, gso, want) in cases {
            assert_eq!(
                plan_message(remaining, seg, gso),
                want,
                "{remaining} {seg:?} {gso}"
            );
        }
    }

    /// With `SO_NO_CHECK` the kernel refuses GSO sends (`EINVAL`): the
    /// destination must get plain sends, counted once, with nothing lost,
    /// while the socket keeps its GSO capability.
    #[test]
    fn refused_gso_falls_back_at_runtime() {
        let opts = SocketOptions {
            read_timeout: Some(Duration::from_millis(500)),
            ..SocketOptions::default()
        };
        let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut tx = BatchSocket::bind(lo, 8, &opts).unwrap();
        let mut rx = BatchSocket::bind(lo, 64, &opts).unwrap();
        sys::set_no_check(tx.socket.as_fd()).unwrap();
        assert!(tx.gso_enabled());
        let payload: Vec<u8> = (0..12_000u32).map(|i| (i / 7) as u8).collect();
        let dst = rx.local_addr().unwrap();
        let trains = [Transmit {
            dst,
            contents: &payload,
            segment_size: Some(1200),
        }; 2];
        assert_eq!(tx.send(&trains).unwrap(), 2);
        assert!(tx.gso_enabled());
        assert_eq!(tx.gso_fallbacks(), 0);
        assert_eq!(tx.gso_refusals(), 1);
        assert_eq!(tx.gso_fallback_destinations(), 1);
        assert_eq!(tx.gso_sends(), 0);

        let mut storage = vec![0u8; 64 * 2048];
        let mut bufs: Vec<&mut [u8]> = storage.chunks_mut(2048).collect();
        let mut meta = [RecvMeta::default(); 64];
        let mut got = Vec::new();
        while got.len() < 20 {
            let n = rx.recv(&mut bufs, &mut meta).unwrap();
            for (m, b) in meta[..n].iter().zip(&bufs) {
                got.push(b[..m.len].to_vec());
            }
        }
        let want: Vec<Vec<u8>> = payload
            .chunks(1200)
            .chain(payload.chunks(1200))
            .map(<[u8]>::to_vec)
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn refused_table_backs_off_doubles_and_evicts_the_oldest() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let a: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:1".parse().unwrap();
        let mut t = RefusedTable::new(Duration::from_secs(10));
        assert!(t.allows(&a, t0));
        t.refuse(a, t0);
        assert!(!t.allows(&a, t0 + 9 * s));
        assert!(t.allows(&b, t0 + 9 * s));
        assert!(t.allows(&a, t0 + 10 * s), "retried after 10 s");
        // Refused again: 20 s, 40 s, ... capped at 320 s.
        let mut at = t0 + 10 * s;
        for backoff in [20, 40, 80, 160, 320, 320] {
            t.refuse(a, at);
            assert!(!t.allows(&a, at + (backoff - 1) * s), "{backoff}");
            assert!(t.allows(&a, at + backoff * s), "{backoff}");
            at += backoff * s;
        }
        t.accepted(&a);
        assert!(t.entries.is_empty());
        // Full: the entry refused longest ago makes room.
        for i in 0..GSO_REFUSED_DESTINATIONS {
            let dst = SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 1));
            t.refuse(dst, t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(t.entries.capacity(), GSO_REFUSED_DESTINATIONS);
        t.refuse(b, t0 + s);
        assert_eq!(t.entries.len(), GSO_REFUSED_DESTINATIONS);
        assert!(!t.allows(&b, t0 + s));
        assert!(t.allows(&SocketAddr::from(([10, 1, 0, 0], 1)), t0 + s));
        assert!(!t.allows(&SocketAddr::from(([10, 1, 0, 1], 1)), t0 + s));
    }

    #[test]
    fn recv_meta_splits_by_stride() {
        let buf = [7u8; 100];
        let m = RecvMeta {
            len: 25,
            stride: 10,
            ..Default::default()
        };
        let lens: Vec<usize> = m.datagrams(&buf).map(<[u8]>::len).collect();
        assert_eq!(lens, [10, 10, 5]);
        assert_eq!(m.segments(), 3);
        assert_eq!(RecvMeta::default().segments(), 0);
    }
}
