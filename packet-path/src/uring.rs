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
//! No call allocates: the completion results go into an array allocated
//! with the ring.
#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use io_uring::{IoUring, opcode, squeue, types};

use crate::datagram::RecvMeta;
use crate::io::{BatchSocket, GsoPolicy, Pos, SendFailure, SendMessages, Transmit};
use crate::sys::SendBatch;

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
        Ok(Self {
            socket,
            ring,
            results,
            enter_errors: 0,
        })
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
