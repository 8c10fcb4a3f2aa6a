//! The packet I/O backends behind one interface: [`Backend`], an enum
//! dispatched with a `match` (no allocation, no `dyn`) over
//! [`BatchSocket`] (`recvmmsg`/`sendmmsg`) and [`UringSocket`] (io_uring
//! `RecvMsg`/`SendMsg`, one submit per batch). Both receive a batch into the
//! caller's buffers with [`RecvMeta`] (length, GRO stride, source), send
//! [`Transmit`]s and the [`SendPool`](crate::pool::SendPool)'s GSO trains
//! with the same per-destination GSO fallback, expose the descriptor an idle
//! worker waits on, and report their capabilities.
//!
//! # Choice and fallback
//! [`Backend::bind`] binds the socket, then with [`IoBackend::Uring`] sets
//! up a ring for it. If the host cannot run io_uring —
//! `/proc/sys/kernel/io_uring_disabled` is 2, or the set-up fails (`ENOSYS`
//! on a kernel without io_uring, `EPERM` when a seccomp profile or
//! `io_uring_disabled = 1` forbids it, a ring without `RECVMSG`/`SENDMSG`)
//! — the same socket is used with the socket backend and the reason is
//! returned, for the node to record ([`WorkerHandle::io_backend`](crate::WorkerHandle::io_backend)).

use std::io;
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;

use crate::datagram::RecvMeta;
use crate::io::{BatchSocket, GsoPolicy, Pos, SendFailure, SendMessages, SocketOptions, Transmit};
use crate::sys::SendBatch;
pub use crate::uring::UringSocket;
pub use crate::xdp::{XdpProgram, XdpSocket, XdpStats};

/// Where `/proc` tells whether io_uring may be used (Linux 6.6+).
const IO_URING_DISABLED: &str = "/proc/sys/kernel/io_uring_disabled";

/// Which backend a worker asks for ([`NodeConfig::io`](crate::NodeConfig::io)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum IoBackend {
    /// `recvmmsg`/`sendmmsg` ([`BatchSocket`]). The default.
    #[default]
    Socket,
    /// io_uring ([`UringSocket`]), falling back to [`IoBackend::Socket`]
    /// where the host cannot run it.
    Uring,
    /// AF_XDP ([`XdpSocket`]) beside the socket backend, falling back to
    /// [`IoBackend::Socket`] where the host cannot run it.
    Xdp,
}

/// One worker's packet I/O: a socket driven by system calls or by io_uring.
#[derive(Debug)]
#[non_exhaustive]
pub enum Backend {
    /// `recvmmsg`/`sendmmsg`.
    Socket(BatchSocket),
    /// io_uring `RecvMsg`/`SendMsg`.
    Uring(UringSocket),
    /// An AF_XDP socket and the kernel socket beside it.
    Xdp(XdpSocket),
}

impl Backend {
    /// Binds a socket ([`BatchSocket::bind`]) and drives it with `io`.
    /// Returns the backend and, if `io` could not be honoured, why (the
    /// socket backend then runs).
    pub fn bind(
        addr: SocketAddr,
        batch: usize,
        opts: &SocketOptions,
        io: IoBackend,
    ) -> io::Result<(Self, Option<String>)> {
        let socket = BatchSocket::bind(addr, batch, opts)?;
        Ok(Self::new(socket, io))
    }

    /// Drives `socket` with `io`; see [`bind`](Self::bind).
    pub fn new(socket: BatchSocket, io: IoBackend) -> (Self, Option<String>) {
        match io {
            IoBackend::Socket => (Self::Socket(socket), None),
            IoBackend::Xdp => (
                Self::Socket(socket),
                Some("AF_XDP needs the node's XDP program (Backend::xdp_or_socket)".to_owned()),
            ),
            IoBackend::Uring => {
                let sysctl = std::fs::read_to_string(IO_URING_DISABLED).ok();
                Self::uring_or_socket(socket, sysctl.as_deref(), None)
            }
        }
    }

    /// The io_uring backend unless `sysctl` (the contents of
    /// `io_uring_disabled`) forbids it or the ring set-up fails; `entries`
    /// overrides the ring size (tests force a set-up failure with 0).
    pub(crate) fn uring_or_socket(
        socket: BatchSocket,
        sysctl: Option<&str>,
        entries: Option<u32>,
    ) -> (Self, Option<String>) {
        if let Some(reason) = crate::uring::disabled_reason(sysctl) {
            return (Self::Socket(socket), Some(reason));
        }
        let ring = match entries {
            Some(n) => UringSocket::with_entries(socket, n),
            None => UringSocket::new(socket),
        };
        match ring {
            Ok(u) => (Self::Uring(u), None),
            Err((socket, e)) => (
                Self::Socket(socket),
                Some(format!("io_uring set-up failed: {e}")),
            ),
        }
    }

    /// The AF_XDP backend on receive queue `queue` of `program`'s
    /// interface, or the socket backend with the reason when `program`
    /// could not be attached (its error) or the socket cannot be set up.
    pub fn xdp_or_socket(
        socket: BatchSocket,
        program: Result<&std::sync::Arc<XdpProgram>, &str>,
        queue: u32,
    ) -> (Self, Option<String>) {
        let program = match program {
            Ok(p) => p,
            Err(reason) => return (Self::Socket(socket), Some(reason.to_owned())),
        };
        match XdpSocket::new(socket, program, queue) {
            Ok(x) => (Self::Xdp(x), None),
            Err((socket, e)) => (
                Self::Socket(socket),
                Some(format!("AF_XDP socket set-up failed: {e}")),
            ),
        }
    }

    /// `"socket"`, `"io_uring"` or `"af_xdp"`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Socket(_) => "socket",
            Self::Uring(_) => "io_uring",
            Self::Xdp(_) => "af_xdp",
        }
    }

    /// The io_uring socket, if this is the io_uring backend.
    pub fn uring(&self) -> Option<&UringSocket> {
        match self {
            Self::Uring(u) => Some(u),
            _ => None,
        }
    }

    /// The AF_XDP socket, if this is the AF_XDP backend.
    pub fn xdp(&self) -> Option<&XdpSocket> {
        match self {
            Self::Xdp(x) => Some(x),
            _ => None,
        }
    }

    /// Reads the kernel's counters of the AF_XDP socket, if any (a system
    /// call: now and then).
    pub(crate) fn refresh_kernel_stats(&mut self) {
        if let Self::Xdp(x) = self {
            x.refresh_kernel_stats();
        }
    }

    /// Whether this is the io_uring backend.
    pub fn is_uring(&self) -> bool {
        matches!(self, Self::Uring(_))
    }

    /// The socket underneath: address, GSO/GRO capabilities and counters
    /// ([`BatchSocket::gso_enabled`], [`BatchSocket::gro_enabled`],
    /// [`BatchSocket::gso_sends`], ...), the same for both backends.
    pub fn socket(&self) -> &BatchSocket {
        match self {
            Self::Socket(s) => s,
            Self::Uring(u) => u.socket(),
            Self::Xdp(x) => x.socket(),
        }
    }

    /// The socket underneath, to change its settings.
    pub fn socket_mut(&mut self) -> &mut BatchSocket {
        match self {
            Self::Socket(s) => s,
            Self::Uring(u) => u.socket_mut(),
            Self::Xdp(x) => x.socket_mut(),
        }
    }

    /// [`BatchSocket::local_addr`].
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket().local_addr()
    }

    /// Whether received buffers may hold GRO trains.
    pub fn gro_enabled(&self) -> bool {
        self.socket().gro_enabled()
    }

    /// Whether the socket can send GSO trains.
    pub fn gso_enabled(&self) -> bool {
        self.socket().gso_enabled()
    }

    /// Most messages per batch.
    pub fn batch(&self) -> usize {
        self.socket().batch()
    }

    /// The descriptors to wait on for readability (an idle worker's
    /// `ppoll`): the socket, and for AF_XDP its kernel socket too.
    pub(crate) fn wait_fds(&self) -> (BorrowedFd<'_>, Option<BorrowedFd<'_>>) {
        match self {
            Self::Xdp(x) => (x.xsk_fd(), Some(x.socket().fd())),
            Self::Uring(u) => u.wait_fds(),
            Self::Socket(s) => (s.fd(), None),
        }
    }

    /// Receives a batch into `bufs`: [`BatchSocket::recv`] or
    /// [`UringSocket::recv`]. Does not allocate.
    pub fn recv(&mut self, bufs: &mut [&mut [u8]], meta: &mut [RecvMeta]) -> io::Result<usize> {
        match self {
            Self::Socket(s) => s.recv(bufs, meta),
            Self::Uring(u) => u.recv(bufs, meta),
            Self::Xdp(x) => x.recv(bufs, meta),
        }
    }

    /// Tells the backend that message `index` of the last [`recv`](Self::recv)
    /// was accepted (authenticated) by the router. AF_XDP learns its
    /// sender's next-hop MAC only then, so a spoofed frame cannot redirect
    /// a peer's media; the other backends have nothing to learn.
    #[inline]
    pub fn accepted(&mut self, index: usize) {
        if let Self::Xdp(x) = self {
            x.accepted(index);
        }
    }

    /// Sends `transmits`: [`BatchSocket::send`] or [`UringSocket::send`].
    /// Does not allocate.
    pub fn send(&mut self, transmits: &[Transmit<'_>]) -> io::Result<usize> {
        crate::io::send_transmits(self, transmits)
    }
}

impl SendMessages for Backend {
    fn send_messages<'a>(
        &mut self,
        start: Pos,
        end: Pos,
        build: impl FnMut(Pos, &GsoPolicy<'_>, &mut SendBatch<'_, 'a>) -> Pos,
    ) -> Result<(), SendFailure> {
        match self {
            Self::Socket(s) => s.send_messages(start, end, build),
            Self::Uring(u) => u.send_messages(start, end, build),
            Self::Xdp(x) => x.send_messages(start, end, build),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn socket() -> BatchSocket {
        let opts = SocketOptions {
            read_timeout: Some(Duration::ZERO),
            ..SocketOptions::default()
        };
        BatchSocket::bind("127.0.0.1:0".parse().unwrap(), 8, &opts).unwrap()
    }

    #[test]
    fn io_uring_disabled_falls_back_to_the_socket_backend() {
        let (b, reason) = Backend::uring_or_socket(socket(), Some("2\n"), None);
        assert_eq!(b.name(), "socket");
        let reason = reason.expect("a reason is recorded");
        assert!(reason.contains("io_uring_disabled = 2"), "{reason}");
    }

    #[test]
    fn uring_setup_failure_falls_back_to_the_socket_backend() {
        // A ring of 0 entries: the kernel answers EINVAL, as it would
        // answer ENOSYS or EPERM on a host without io_uring.
        let (mut b, reason) = Backend::uring_or_socket(socket(), Some("0\n"), Some(0));
        assert_eq!(b.name(), "socket");
        let reason = reason.expect("a reason is recorded");
        assert!(reason.starts_with("io_uring set-up failed"), "{reason}");
        // The socket given back still works.
        let dst = b.local_addr().unwrap();
        let t = [Transmit {
            dst,
            contents: b"x",
            segment_size: None,
        }];
        assert_eq!(b.send(&t).unwrap(), 1);
    }

    #[test]
    fn socket_backend_has_no_reason_and_uring_runs_where_enabled() {
        let (b, reason) = Backend::new(socket(), IoBackend::Socket);
        assert_eq!((b.name(), reason), ("socket", None));
        // Values 0 and 1 (and no switch at all) leave the decision to set-up.
        assert_eq!(crate::uring::disabled_reason(Some("0\n")), None);
        assert_eq!(crate::uring::disabled_reason(Some("1")), None);
        assert_eq!(crate::uring::disabled_reason(None), None);
    }
}
