//! What the kernel's UDP offloads define and report, shared by the raw
//! system calls in `sys` (which fill [`RecvMeta`] and size their arrays by
//! [`MAX_GSO_SEGMENTS`]) and the safe [`BatchSocket`](crate::io::BatchSocket)
//! in `io` (which re-exports everything here as `packet_path::io::*`).
//!
//! Neither of those modules is imported here, so `io` → `sys` → `datagram`
//! stays a one-way chain.

use std::net::SocketAddr;

/// Most segments the kernel accepts in one GSO send (`UDP_MAX_SEGMENTS`).
pub const MAX_GSO_SEGMENTS: usize = 64;
/// Most payload bytes in one GSO send: the largest UDP payload over IPv4.
pub const MAX_GSO_BYTES: usize = 65_507;

/// Receive buffer size that holds any GRO train (64 KiB).
pub const GRO_BUFFER_BYTES: usize = 65_536;

/// What [`BatchSocket::recv`](crate::io::BatchSocket::recv) learnt about one
/// filled buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    /// Bytes written into the buffer.
    pub len: usize,
    /// Size of each datagram in the buffer (GRO segment size); equals `len`
    /// when the buffer holds a single datagram.
    pub stride: usize,
    /// Source address (v4-mapped IPv6 addresses are given as IPv4).
    pub addr: SocketAddr,
}

impl Default for RecvMeta {
    fn default() -> Self {
        Self {
            len: 0,
            stride: 0,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        }
    }
}

impl RecvMeta {
    /// The datagrams in `buf` (the buffer this meta describes): `len` bytes
    /// cut into `stride`-sized pieces.
    pub fn datagrams<'b>(&self, buf: &'b [u8]) -> std::slice::Chunks<'b, u8> {
        let len = self.len.min(buf.len());
        buf[..len].chunks(self.stride.max(1))
    }

    /// How many datagrams the buffer holds.
    pub fn segments(&self) -> usize {
        if self.len == 0 {
            return 0;
        }
        self.len.div_ceil(self.stride.max(1))
    }
}
