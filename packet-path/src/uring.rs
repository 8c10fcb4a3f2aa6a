//! The io_uring backend: a [`BatchSocket`] whose receives and sends go
//! through an io_uring instead of `recvmmsg`/`sendmmsg`.
//!
//! Everything but the system calls is the socket's: bind, GRO/GSO set-up,
//! the preallocated `msghdr`/`iovec`/`sockaddr`/cmsg arrays (one `msghdr` of
//! the `mmsghdr` arrays per operation), the `UDP_SEGMENT` cmsg of each GSO
//! train, the GRO cmsg decoding and the per-destination GSO fallback.
//!
//! # One submit per batch, nothing in flight between calls
//! A receive prepares up to `batch` `RecvMsg` operations into the caller's
//! buffers, linked (`IOSQE_IO_LINK`) and with `MSG_DONTWAIT`, and submits
//! them with one `io_uring_enter` that waits for all their completions: the
//! first operation that finds the socket empty fails with `EAGAIN` and
//! cancels the rest of the chain, so one call takes every queued datagram,
//! as `recvmmsg(MSG_WAITFORONE)` does on a non-blocking socket. A send does
//! the same with linked `SendMsg` operations, one per message (a GSO train
//! is one message), so a failure cancels the messages after it and the
//! caller sees `sendmmsg`'s "n messages sent, then an error" and retries
//! from the failed one (GSO refusals included).
//!
//! Every call reaps the completions of all it submitted before it returns,
//! so no operation is in flight while the worker reads a receive buffer or
//! the pool frees a send buffer, and the borrow of the buffers for the call
//! is what keeps them alive (as for `recvmmsg`). `MSG_DONTWAIT` makes each
//! operation complete during the submit instead of waiting in the kernel:
//! the io_uring backend never blocks in a receive or a send (an idle worker
//! waits for readiness in `ppoll`, as with the socket backend).
//!
//! # Multishot receive (kernel 6.0+)
//! Where the kernel has it, receives do not use the linked `RecvMsg`
//! chain: a second ring holds one multishot `RecvMsg` (`RecvMsgMulti`)
//! armed on the socket, with a ring of 256 provided buffers registered as
//! buffer group 0 (each sized for a GRO buffer, or a datagram without GRO,
//! plus the kernel's header, the source address and the control
//! messages). The kernel completes it once per datagram (or GRO buffer)
//! without any submission; a receive copies each completed payload into
//! the caller's buffer, decodes its address and `UDP_GRO` segment size,
//! and gives the provided buffer back at once (tail store with release).
//! It enters the kernel only when the completion queue is empty (to run
//! the kernel's pending completion work), and arms the receive again when
//! it ended (`ENOBUFS` when the buffers ran out: the socket keeps the
//! data; or an error). Multishot completions live on their own ring, so
//! the send path's "reap everything I submitted" never meets them, and an
//! idle worker polls that ring's descriptor as well as the socket. The
//! copy out of the provided buffer is the price of keeping the worker's
//! buffers and interface the same for every backend.
//! [`UringSocket::multishot`] and the gauge `sfu_io_uring_multishot` say
//! which receive runs. Dropping the socket cancels the receive and waits
//! (up to 1 s) for its last completion, so the port is free at once and
//! the kernel never writes into the buffers freed after it (a receive that
//! did not end in time keeps its buffers: they are leaked, not freed).
//!
//! No call allocates: the completion results go into an array allocated
//! with the ring, the provided buffers are allocated at set-up.
#![allow(unsafe_code)]

use std::io;
use std::mem::ManuallyDrop;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use io_uring::{IoUring, opcode, squeue, types};

use crate::datagram::RecvMeta;
use crate::io::{BatchSocket, GsoPolicy, Pos, SendFailure, SendMessages, Transmit};
use crate::sys::{Mapping, SendBatch, zeroed};

/// A UDP socket driven through an io_uring: [`BatchSocket`]'s batches,
/// GSO/GRO and counters, with `RecvMsg`/`SendMsg` operations (one submit
/// per batch) instead of `recvmmsg`/`sendmmsg`. Never blocks.
pub struct UringSocket {
    socket: BatchSocket,
    /// Boxed: the ring's handles are large, and [`Backend`](crate::Backend)
    /// holds a socket or this by value.
    ring: Box<IoUring>,
    /// Result of operation `i` of the current call (by its `user_data`).
    results: Box<[i32]>,
    /// `io_uring_enter` calls that failed (other than `EINTR`/`EAGAIN`/`EBUSY`).
    enter_errors: u64,
    /// The multishot receive into provided buffers, where the kernel has
    /// it (6.0+); else receives are linked `RecvMsg` operations.
    multishot: Option<Box<Multishot>>,
}

impl std::fmt::Debug for UringSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringSocket")
            .field("socket", &self.socket)
            .field("entries", &self.results.len())
            .finish_non_exhaustive()
    }
}

impl UringSocket {
    /// Sets up a ring for `socket`'s batches (one entry per message of a
    /// batch). Gives the socket back, with the reason, if the kernel cannot
    /// (no io_uring: `ENOSYS`; forbidden: `EPERM`; no `RECVMSG`/`SENDMSG`).
    // The error hands the socket back (once, at set-up): its size is no cost.
    #[allow(clippy::result_large_err)]
    pub fn new(socket: BatchSocket) -> Result<Self, (BatchSocket, io::Error)> {
        let entries = u32::try_from(socket.batch()).unwrap_or(u32::MAX);
        Self::with_entries(socket, entries)
    }

    /// [`new`](Self::new) with a ring of `entries` submission entries; too
    /// few for a batch, or 0 (the kernel's `EINVAL`, which the tests use
    /// to force a set-up failure), is an error.
    #[allow(clippy::result_large_err)]
    pub(crate) fn with_entries(
        socket: BatchSocket,
        entries: u32,
    ) -> Result<Self, (BatchSocket, io::Error)> {
        let ring = match IoUring::new(entries) {
            Ok(ring) => Box::new(ring),
            Err(e) => return Err((socket, e)),
        };
        if (ring.params().sq_entries() as usize) < socket.batch() {
            let e = io::Error::new(
                io::ErrorKind::InvalidInput,
                "io_uring submission queue smaller than a batch",
            );
            return Err((socket, e));
        }
        let mut probe = io_uring::Probe::new();
        if let Err(e) = ring.submitter().register_probe(&mut probe) {
            return Err((socket, e));
        }
        if !probe.is_supported(opcode::RecvMsg::CODE) || !probe.is_supported(opcode::SendMsg::CODE)
        {
            let e = io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring without RECVMSG/SENDMSG",
            );
            return Err((socket, e));
        }
        let results = vec![0; socket.batch()].into_boxed_slice();
        let payload = if socket.gro_enabled() {
            crate::io::GRO_BUFFER_BYTES
        } else {
            crate::pool::BUFFER_BYTES
        };
        let multishot = Multishot::new(socket.fd(), payload).ok().map(Box::new);
        Ok(Self {
            socket,
            ring,
            results,
            enter_errors: 0,
            multishot,
        })
    }

    /// The same socket with linked `RecvMsg` receives instead of the
    /// multishot receive (to compare them; see the `io` bench).
    pub fn without_multishot(mut self) -> Self {
        self.multishot = None;
        self
    }

    /// Times the multishot receive ran out of provided buffers.
    pub fn buffers_exhausted(&self) -> u64 {
        self.multishot.as_ref().map_or(0, |m| m.exhausted)
    }

    /// Whether receives come from a multishot `RecvMsg` into provided
    /// buffers (else linked `RecvMsg` operations, one per message).
    pub fn multishot(&self) -> bool {
        self.multishot.is_some()
    }

    /// The descriptors an idle worker waits on: with the multishot
    /// receive, its ring (readable when completions wait: the socket may
    /// already be empty) and the socket (data left when it ran out of
    /// buffers); else the socket.
    pub(crate) fn wait_fds(&self) -> (BorrowedFd<'_>, Option<BorrowedFd<'_>>) {
        match &self.multishot {
            Some(m) => (m.fd(), Some(self.socket.fd())),
            None => (self.socket.fd(), None),
        }
    }

    /// [`BatchSocket::local_addr`].
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The socket underneath (its address, GSO/GRO state and counters).
    pub fn socket(&self) -> &BatchSocket {
        &self.socket
    }

    /// The socket underneath, to change its settings.
    pub fn socket_mut(&mut self) -> &mut BatchSocket {
        &mut self.socket
    }

    /// `io_uring_enter` calls that failed and were retried, since set-up.
    pub fn enter_errors(&self) -> u64 {
        self.enter_errors
    }

    /// Receives into `bufs` (each ideally [`GRO_BUFFER_BYTES`] long when
    /// GRO is on), as [`BatchSocket::recv`] does on a non-blocking socket:
    /// fills `meta[..n]` and returns `n` ≥ 1, or `WouldBlock` at once if
    /// nothing is queued. One `io_uring_enter`. Does not allocate.
    ///
    /// [`GRO_BUFFER_BYTES`]: crate::io::GRO_BUFFER_BYTES
    pub fn recv(&mut self, bufs: &mut [&mut [u8]], meta: &mut [RecvMeta]) -> io::Result<usize> {
        if let Some(m) = &mut self.multishot {
            return m.recv(self.socket.fd(), bufs, meta);
        }
        let (fd, scratch) = self.socket.recv_parts();
        let fd = types::Fd(fd.as_raw_fd());
        let n = scratch.prepare(bufs, meta).min(self.results.len());
        if n == 0 {
            return Ok(0);
        }
        {
            let mut sq = self.ring.submission();
            for i in 0..n {
                let link = if i + 1 < n {
                    squeue::Flags::IO_LINK
                } else {
                    squeue::Flags::empty()
                };
                let entry = opcode::RecvMsg::new(fd, scratch.msghdr(i))
                    .flags(libc::MSG_DONTWAIT as u32)
                    .build()
                    .flags(link)
                    .user_data(i as u64);
                // SAFETY: the msghdr points at the scratch's iovec, address
                // and cmsg slots and (through the iovec) at `bufs[i]`, which
                // this call borrows exclusively; `complete` below reaps the
                // completion of every pushed operation before we return, so
                // the kernel is done with all of them before the borrow ends.
                // The queue is empty at entry (every call reaps all it
                // pushed) and holds `results.len()` ≥ n entries, so the push
                // cannot fail; should it, the operation is simply not sent.
                if unsafe { sq.push(&entry) }.is_err() {
                    break;
                }
            }
        }
        let pushed = self.ring.submission().len();
        complete(
            &mut self.ring,
            &mut self.results,
            pushed,
            &mut self.enter_errors,
        );
        let (_, scratch) = self.socket.recv_parts();
        let mut got = 0;
        for (i, &res) in self.results.iter().take(pushed).enumerate() {
            if res < 0 {
                break;
            }
            meta[i] = scratch.finish(i, res as usize, bufs);
            got += 1;
        }
        if got == 0 {
            return Err(io::Error::from_raw_os_error(-self.results[0]));
        }
        Ok(got)
    }

    /// Sends `transmits` as [`BatchSocket::send`] does (GSO trains split to
    /// the kernel's limits, per-destination GSO fallback); never blocks: a
    /// full socket buffer ends the send early (`WouldBlock`). Does not
    /// allocate.
    pub fn send(&mut self, transmits: &[Transmit<'_>]) -> io::Result<usize> {
        crate::io::send_transmits(self, transmits)
    }
}

impl SendMessages for UringSocket {
    fn send_messages<'a>(
        &mut self,
        start: Pos,
        end: Pos,
        build: impl FnMut(Pos, &GsoPolicy<'_>, &mut SendBatch<'_, 'a>) -> Pos,
    ) -> Result<(), SendFailure> {
        let ring = &mut self.ring;
        let results = &mut self.results;
        let enter_errors = &mut self.enter_errors;
        self.socket
            .send_messages_via(start, end, build, |batch, fd, from| {
                send_batch(ring, results, enter_errors, batch, fd, from)
            })
    }
}

/// Sends messages `from..` of `batch` as linked `SendMsg` operations with
/// one submit; returns how many leading ones succeeded (at least one), or
/// the error of message `from`.
fn send_batch(
    ring: &mut IoUring,
    results: &mut [i32],
    enter_errors: &mut u64,
    batch: &mut SendBatch<'_, '_>,
    fd: BorrowedFd<'_>,
    from: usize,
) -> io::Result<usize> {
    let n = batch.len().saturating_sub(from).min(results.len());
    if n == 0 {
        return Ok(0);
    }
    let fd = types::Fd(fd.as_raw_fd());
    {
        let mut sq = ring.submission();
        for k in 0..n {
            let link = if k + 1 < n {
                squeue::Flags::IO_LINK
            } else {
                squeue::Flags::empty()
            };
            let entry = opcode::SendMsg::new(fd, batch.msghdr(from + k))
                .flags(libc::MSG_DONTWAIT as u32)
                .build()
                .flags(link)
                .user_data(k as u64);
            // SAFETY: the msghdr was filled by `SendBatch::push`: it points
            // at the scratch's address, iovec and cmsg slots and at payload
            // borrowed for the batch's data lifetime, all of which outlive
            // this call; `complete` below reaps every pushed operation's
            // completion before we return, so the kernel is done reading
            // them before the pool frees a buffer. The queue is empty at
            // entry and holds ≥ n entries; a failed push is not sent.
            if unsafe { sq.push(&entry) }.is_err() {
                break;
            }
        }
    }
    let pushed = ring.submission().len();
    complete(ring, results, pushed, enter_errors);
    let sent = results[..pushed].iter().take_while(|&&r| r >= 0).count();
    match sent {
        0 => Err(io::Error::from_raw_os_error(
            -results.first().copied().unwrap_or(-libc::EIO),
        )),
        _ => Ok(sent),
    }
}

/// Submits the `pushed` queued operations and waits for all their
/// completions, storing each result by its `user_data` in `results`. Does
/// not return before every one has completed: an `io_uring_enter` error is
/// counted and retried (after 1 ms unless it is `EINTR`/`EAGAIN`/`EBUSY`),
/// so a buffer is never given back while the kernel may still use it.
fn complete(ring: &mut IoUring, results: &mut [i32], pushed: usize, enter_errors: &mut u64) {
    let mut reaped = 0;
    while reaped < pushed {
        if let Err(e) = ring.submit_and_wait(pushed - reaped) {
            match e.raw_os_error() {
                Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY) => {}
                _ => {
                    *enter_errors += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        for cqe in ring.completion() {
            if let Some(r) = usize::try_from(cqe.user_data())
                .ok()
                .and_then(|i| results.get_mut(i))
            {
                *r = cqe.result();
            }
            reaped += 1;
        }
    }
}

/// Why the io_uring backend cannot run, from the contents of
/// `/proc/sys/kernel/io_uring_disabled` (`None` when the file is missing:
/// a kernel older than 6.6 has no such switch, set-up then decides).
pub(crate) fn disabled_reason(sysctl: Option<&str>) -> Option<String> {
    match sysctl.map(str::trim) {
        Some("2") => Some("io_uring disabled by kernel.io_uring_disabled = 2".to_owned()),
        _ => None,
    }
}

/// `user_data` of the armed multishot receive.
const MULTISHOT: u64 = u64::MAX;
/// `user_data` of the cancellation of the multishot receive.
const CANCEL: u64 = u64::MAX - 1;
/// Longest a dropped multishot socket waits for its receive to end.
const CANCEL_WAIT: Duration = Duration::from_secs(1);
/// Provided buffers of the multishot receive (a power of two).
const PROVIDED_BUFFERS: u16 = 256;
/// The provided-buffer group id.
const BUFFER_GROUP: u16 = 0;
/// Room in front of each provided buffer's payload: the kernel's
/// `io_uring_recvmsg_out` (16 bytes), the source address and the control
/// messages, as the template `msghdr` sizes them.
const NAME_BYTES: usize = size_of::<libc::sockaddr_storage>();
const CONTROL_BYTES: usize = 64;
const OUT_HEADER: usize = 16;

/// One entry of a provided-buffer ring (`struct io_uring_buf`); the
/// `resv` field of entry 0 is the ring's tail.
#[repr(C)]
struct BufEntry {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}

/// A multishot `RecvMsg` on its own ring, receiving into a ring of
/// provided buffers: armed once, it completes once per datagram (or GRO
/// buffer) with no submission, until the buffers run out (`ENOBUFS`) or an
/// error ends it; then it is armed again. Each completion's payload is
/// copied into the worker's buffer and its provided buffer goes back to
/// the ring at once.
pub(crate) struct Multishot {
    ring: IoUring,
    /// The buffer ring: `PROVIDED_BUFFERS` entries, page-aligned (an
    /// anonymous mapping), shared with the kernel. Unmapped by `drop` once
    /// unregistered, and only if the receive has ended.
    entries: ManuallyDrop<Mapping>,
    /// The buffers themselves, one allocation (`PROVIDED_BUFFERS` ×
    /// `buf_len` bytes) that the kernel writes into at any time: held as a
    /// raw pointer, and a slice is only ever made of one completed buffer.
    buffers: *mut u8,
    buf_len: usize,
    tail: u16,
    /// The template the kernel lays each buffer out by (name and control
    /// lengths); boxed so that its address stays fixed while armed.
    template: Box<libc::msghdr>,
    armed: bool,
    /// Multishot completions that ended with an error (not `ENOBUFS`).
    pub(crate) errors: u64,
    /// Times the buffers ran out (the socket kept the data; re-armed).
    pub(crate) exhausted: u64,
}

// SAFETY: the raw pointer is into a mapping this struct owns; the kernel
// is the only other party. Used on its worker's thread alone.
unsafe impl Send for Multishot {}

impl Drop for Multishot {
    fn drop(&mut self) {
        // End the receive first: left armed, it would hold the socket
        // (and its port) until the ring's asynchronous teardown, and the
        // kernel could still pick one of the buffers freed below.
        self.cancel();
        if self.armed {
            // The cancellation could not be queued or did not end the
            // receive within CANCEL_WAIT: the kernel may still write into
            // the buffers and read the buffer ring, so both are leaked
            // (the ring's own teardown ends the receive later).
            return;
        }
        // Unregister before the mapping is unmapped; the ring's own drop
        // (a field, after this body) closes it.
        let _ = self.ring.submitter().unregister_buf_ring(BUFFER_GROUP);
        // SAFETY: dropped once, here; never used after.
        unsafe { ManuallyDrop::drop(&mut self.entries) };
        let len = usize::from(PROVIDED_BUFFERS) * self.buf_len;
        // SAFETY: the allocation `new` leaked with this length, freed once.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.buffers, len)) });
    }
}

impl Multishot {
    /// Sets up the ring and its provided buffers (`payload` bytes each:
    /// a GRO buffer or one datagram) and arms the receive on `fd`. `Err`
    /// where the kernel lacks multishot receive or buffer rings (< 6.0).
    pub(crate) fn new(fd: BorrowedFd<'_>, payload: usize) -> io::Result<Self> {
        let n = usize::from(PROVIDED_BUFFERS);
        let ring = IoUring::builder()
            .setup_cqsize(2 * u32::from(PROVIDED_BUFFERS))
            .build(8)?;
        // Anonymous, hence page-aligned, as the kernel requires of a
        // buffer ring.
        let entries_map = Mapping::new(n * size_of::<BufEntry>(), None, 0)?;
        let buf_len = OUT_HEADER + NAME_BYTES + CONTROL_BYTES + payload;
        let mut template: Box<libc::msghdr> = Box::new(zeroed());
        template.msg_namelen = NAME_BYTES as libc::socklen_t;
        template.msg_controllen = CONTROL_BYTES as _;
        let mut me = Self {
            ring,
            entries: ManuallyDrop::new(entries_map),
            buffers: Box::into_raw(vec![0u8; n * buf_len].into_boxed_slice()).cast::<u8>(),
            buf_len,
            tail: 0,
            template,
            armed: false,
            errors: 0,
            exhausted: 0,
        };
        // SAFETY: the ring memory is ours, page-aligned, `n` entries, and
        // outlives the registration (unregistered in drop before unmap).
        unsafe {
            me.ring.submitter().register_buf_ring_with_flags(
                me.entries.ptr() as u64,
                PROVIDED_BUFFERS,
                BUFFER_GROUP,
                0,
            )?;
        }
        for bid in 0..PROVIDED_BUFFERS {
            me.provide(bid);
        }
        me.publish_tail();
        me.arm(fd)?;
        Ok(me)
    }

    /// The ring's descriptor: readable when completions wait.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the ring's descriptor, alive as long as `self`.
        unsafe { BorrowedFd::borrow_raw(self.ring.as_raw_fd()) }
    }

    /// Puts buffer `bid` at the tail (published by `publish_tail`).
    fn provide(&mut self, bid: u16) {
        let mask = PROVIDED_BUFFERS - 1;
        let i = usize::from(self.tail & mask);
        // In bounds: bid < PROVIDED_BUFFERS.
        let addr = self.buffers.wrapping_add(usize::from(bid) * self.buf_len) as u64;
        // SAFETY: `i` < PROVIDED_BUFFERS entries of our mapping; the
        // kernel reads only entries before the published tail, and this
        // one is past it. `resv` of entry 0 is the tail itself: leave it.
        unsafe {
            let e = self.entries.ptr().cast::<BufEntry>().add(i);
            std::ptr::addr_of_mut!((*e).addr).write(addr);
            std::ptr::addr_of_mut!((*e).len).write(self.buf_len as u32);
            std::ptr::addr_of_mut!((*e).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish_tail(&self) {
        // SAFETY: the tail is the u16 at byte 14 of entry 0 (the `resv`
        // field), which the kernel reads with an acquire load.
        let tail = unsafe {
            &*std::ptr::addr_of!((*self.entries.ptr().cast::<BufEntry>()).resv)
                .cast::<std::sync::atomic::AtomicU16>()
        };
        tail.store(self.tail, std::sync::atomic::Ordering::Release);
    }

    /// Cancels the armed receive and reaps completions until its last one
    /// (no `MORE` flag), for at most [`CANCEL_WAIT`].
    fn cancel(&mut self) {
        if !self.armed {
            return;
        }
        let entry = opcode::AsyncCancel::new(MULTISHOT)
            .build()
            .user_data(CANCEL);
        // SAFETY: a cancellation carries no buffer.
        if unsafe { self.ring.submission().push(&entry) }.is_err() {
            return;
        }
        let wait = types::Timespec::new().nsec(10_000_000);
        let args = types::SubmitArgs::new().timespec(&wait);
        let deadline = std::time::Instant::now() + CANCEL_WAIT;
        while self.armed && std::time::Instant::now() < deadline {
            // ETIME after 10 ms without a completion: look again.
            let _ = self.ring.submitter().submit_with_args(1, &args);
            for cqe in self.ring.completion() {
                if cqe.user_data() == MULTISHOT && !io_uring::cqueue::more(cqe.flags()) {
                    self.armed = false;
                }
            }
        }
    }

    /// Submits the multishot receive.
    fn arm(&mut self, fd: BorrowedFd<'_>) -> io::Result<()> {
        let entry = opcode::RecvMsgMulti::new(
            types::Fd(fd.as_raw_fd()),
            std::ptr::from_ref(&*self.template),
            BUFFER_GROUP,
        )
        .build()
        .user_data(MULTISHOT);
        // SAFETY: the template is boxed and lives as long as the ring (the
        // kernel copies it at submission in any case); buffers come from
        // the registered ring.
        unsafe { self.ring.submission().push(&entry) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        // Pushed: it will be submitted (now, or by the next enter) and
        // must not be pushed twice.
        self.armed = true;
        self.ring.submit()?;
        Ok(())
    }

    /// Copies the completed datagrams into `bufs`/`meta` (at most their
    /// length); re-arms the receive if it ended. `WouldBlock` when nothing
    /// completed. One `io_uring_enter` when the completion queue is empty
    /// (to run the kernel's pending completion work), none otherwise.
    pub(crate) fn recv(
        &mut self,
        fd: BorrowedFd<'_>,
        bufs: &mut [&mut [u8]],
        meta: &mut [RecvMeta],
    ) -> io::Result<usize> {
        let room = bufs.len().min(meta.len());
        if self.ring.completion().is_empty() {
            let _ = self.ring.submit();
        }
        let mut n = 0;
        let mut returned = false;
        while n < room {
            let Some(cqe) = self.ring.completion().next() else {
                break;
            };
            let flags = cqe.flags();
            if !io_uring::cqueue::more(flags) {
                self.armed = false;
            }
            let res = cqe.result();
            if res < 0 {
                if -res == libc::ENOBUFS {
                    self.exhausted += 1;
                } else {
                    self.errors += 1;
                }
                continue;
            }
            let Some(bid) = io_uring::cqueue::buffer_select(flags) else {
                continue;
            };
            if bid >= PROVIDED_BUFFERS {
                continue;
            }
            let len = (res as usize).min(self.buf_len);
            // SAFETY: buffer `bid` lies within the allocation, and the
            // kernel completed it: it writes it no more until we provide
            // it again below.
            let data = unsafe {
                std::slice::from_raw_parts(self.buffers.add(usize::from(bid) * self.buf_len), len)
            };
            let parsed = types::RecvMsgOut::parse(data, &self.template)
                .ok()
                .filter(|out| !out.is_payload_truncated() && !out.is_name_data_truncated());
            if let Some(out) = parsed {
                let payload = out.payload_data();
                let k = payload.len().min(bufs[n].len());
                bufs[n][..k].copy_from_slice(&payload[..k]);
                let stride = crate::sys::gro_stride_from_bytes(out.control_data()).unwrap_or(k);
                let addr = crate::sys::addr_from_bytes(out.name_data())
                    .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
                meta[n] = RecvMeta {
                    len: k,
                    stride,
                    addr,
                };
                n += 1;
            } else {
                self.errors += 1;
            }
            self.provide(bid);
            returned = true;
        }
        if returned {
            self.publish_tail();
        }
        if !self.armed && self.arm(fd).is_err() {
            self.errors += 1;
        }
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::SocketOptions;

    /// A GSO train the kernel refuses (`SO_NO_CHECK`: `EINVAL`) through
    /// io_uring takes the socket backend's per-destination fallback: resent
    /// unsegmented, counted once, nothing lost.
    #[test]
    fn refused_gso_falls_back_over_io_uring() {
        if disabled_reason(
            std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
                .ok()
                .as_deref(),
        )
        .is_some()
        {
            panic!(
                "io_uring is disabled on this host (kernel.io_uring_disabled = 2); the io_uring backend's tests need it: sysctl -w kernel.io_uring_disabled=0"
            );
        }
        let opts = SocketOptions {
            read_timeout: Some(Duration::ZERO),
            ..SocketOptions::default()
        };
        let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let bind = || BatchSocket::bind(lo, 8, &opts).unwrap();
        let mut tx = UringSocket::new(bind()).map_err(|(_, e)| e).unwrap();
        let mut rx = UringSocket::new(bind()).map_err(|(_, e)| e).unwrap();
        crate::sys::set_no_check(tx.socket().fd()).unwrap();
        let payload: Vec<u8> = (0..12_000u32).map(|i| (i / 7) as u8).collect();
        let dst = rx.local_addr().unwrap();
        let trains = [Transmit {
            dst,
            contents: &payload,
            segment_size: Some(1200),
        }; 2];
        assert_eq!(tx.send(&trains).unwrap(), 2);
        assert_eq!(tx.socket().gso_refusals(), 1);
        assert_eq!(tx.socket().gso_fallback_destinations(), 1);
        assert_eq!(tx.socket().gso_sends(), 0);

        let mut storage = vec![0u8; 8 * 2048];
        let mut meta = [RecvMeta::default(); 8];
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while got.len() < 20 && std::time::Instant::now() < deadline {
            let mut bufs: Vec<&mut [u8]> = storage.chunks_mut(2048).collect();
            match rx.recv(&mut bufs, &mut meta) {
                Ok(n) => got.extend(
                    meta[..n]
                        .iter()
                        .zip(&bufs)
                        .map(|(m, b)| b[..m.len].to_vec()),
                ),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        let want: Vec<Vec<u8>> = payload
            .chunks(1200)
            .chain(payload.chunks(1200))
            .map(<[u8]>::to_vec)
            .collect();
        assert_eq!(got, want);
    }
}
