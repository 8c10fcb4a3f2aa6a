//! Raw Linux UDP system calls: `recvmmsg` with UDP GRO, `sendmmsg` with UDP
//! GSO, socket options the `socket2` crate does not cover, and the thread
//! CPU clock, and the `eventfd` + `ppoll` an idle worker sleeps in.
//!
//! This module and `uring` (the io_uring backend's submissions) are the
//! only modules of the workspace with `unsafe` code.
//! Every array the kernel reads or writes (`mmsghdr`, `iovec`,
//! `sockaddr_storage`, control-message buffers) is allocated once, when a
//! [`RecvScratch`] or [`SendScratch`] is created for a socket; no function
//! here allocates per call.
//!
//! Pointers into caller data live in those arrays only between the moment a
//! call fills them and the moment the system call returns: [`RecvScratch::recv`]
//! borrows its buffers for the duration of the call, and a [`SendBatch`] carries
//! the lifetime of the data its messages point at, so the borrow checker keeps
//! that data alive until the batch (and with it every `sendmmsg`) is gone.
#![allow(unsafe_code)]

use std::io;
use std::marker::PhantomData;
use std::mem::{self, size_of};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr;
use std::time::Duration;

use crate::datagram::{MAX_GSO_SEGMENTS, RecvMeta};

/// `sendmmsg`/`recvmmsg` take at most `UIO_MAXIOV` messages per call.
pub(crate) const MAX_BATCH: usize = 1024;

/// Room for the control messages of one datagram: a `UDP_GRO` or
/// `UDP_SEGMENT` cmsg needs 24 bytes; 64 leaves space for one more.
const CMSG_BYTES: usize = 64;

/// A control-message buffer, aligned for `cmsghdr`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct CmsgBuf([u8; CMSG_BYTES]);

/// An all-zero C struct: null pointers, zero lengths.
pub(crate) fn zeroed<T: ZeroValid>() -> T {
    // SAFETY: `ZeroValid` is implemented only for the plain C structs below,
    // for which all-zero bytes are a valid value (integers and null pointers).
    unsafe { mem::zeroed() }
}

/// Marker for C structs whose all-zero bit pattern is a valid value.
pub(crate) trait ZeroValid {}
impl ZeroValid for libc::mmsghdr {}
impl ZeroValid for libc::iovec {}
impl ZeroValid for libc::sockaddr_storage {}
impl ZeroValid for libc::msghdr {}
impl ZeroValid for libc::xdp_mmap_offsets {}
impl ZeroValid for libc::xdp_statistics {}
impl ZeroValid for libc::xdp_umem_reg {}
impl ZeroValid for libc::sockaddr_xdp {}
impl ZeroValid for libc::ifreq {}

/// A read-write mapping made with `MAP_POPULATE` (anonymous, or of a
/// descriptor's memory at `offset`), unmapped on drop: AF_XDP's UMEM and
/// rings, io_uring's provided-buffer ring. Page-aligned.
pub(crate) struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    /// `mmap`: private and anonymous when `fd` is `None`, else shared.
    pub(crate) fn new(len: usize, fd: Option<BorrowedFd<'_>>, offset: i64) -> io::Result<Self> {
        let (flags, raw) = match fd {
            Some(fd) => (libc::MAP_SHARED, fd.as_raw_fd()),
            None => (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1),
        };
        // SAFETY: a fresh mapping at an address of the kernel's choice.
        let ptr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags | libc::MAP_POPULATE,
                raw,
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            ptr: ptr.cast(),
            len,
        })
    }

    /// The first byte.
    pub(crate) fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Bytes mapped.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our mapping, unmapped once; nothing borrows it any more.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

fn setsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `fd` is a live socket (borrowed), the option value points at a
    // c_int on our stack and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            ptr::from_ref(&value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Enables or disables UDP GRO on a socket (Linux 5.0+).
pub(crate) fn set_udp_gro(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    setsockopt_int(fd, libc::SOL_UDP, libc::UDP_GRO, libc::c_int::from(on))
}

/// Checks that the kernel knows UDP GSO (Linux 4.18+) by setting the
/// socket's default segment size to 0 (= no segmentation unless a send
/// carries a `UDP_SEGMENT` cmsg).
pub(crate) fn probe_udp_gso(fd: BorrowedFd<'_>) -> io::Result<()> {
    setsockopt_int(fd, libc::SOL_UDP, libc::UDP_SEGMENT, 0)
}

/// Sets both socket buffers with `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE`, which
/// ignore `net.core.rmem_max`/`wmem_max` but need `CAP_NET_ADMIN`.
pub(crate) fn set_buffers_force(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<()> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, v)?;
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, v)
}

/// Sets `SO_NO_CHECK` (no UDP checksums on send), which makes the kernel
/// refuse GSO sends with `EINVAL`: the tests use it to force the fallback.
#[cfg(test)]
pub(crate) fn set_no_check(fd: BorrowedFd<'_>) -> io::Result<()> {
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_NO_CHECK, 1)
}

/// CPU time (user + system) consumed so far by the calling thread.
pub(crate) fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant
    // the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// Whether the error of a segmented send means "the kernel refuses GSO for
/// this message's route" (quinn-udp's rule, extended): EIO when the device
/// cannot checksum-offload; EINVAL or, on recent kernels (6.x), EMSGSIZE
/// when a segment does not fit the path MTU or segmentation is otherwise
/// unsupported. Only ever asked about segmented messages.
pub(crate) fn is_gso_refusal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO) | Some(libc::EINVAL) | Some(libc::EMSGSIZE)
    )
}

// ---------------------------------------------------------------- addresses

/// Writes `addr` into `ss` and returns the length to pass to the kernel. On
/// an IPv6 socket, IPv4 destinations are written as v4-mapped addresses.
fn encode_addr(
    addr: &SocketAddr,
    v6_socket: bool,
    ss: &mut libc::sockaddr_storage,
) -> libc::socklen_t {
    let v6 = match (addr, v6_socket) {
        (SocketAddr::V4(a), false) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and at least as aligned
            // as sockaddr_in; we write a whole, initialised value.
            unsafe { ptr::from_mut(ss).cast::<libc::sockaddr_in>().write(sin) };
            return size_of::<libc::sockaddr_in>() as libc::socklen_t;
        }
        (SocketAddr::V4(a), true) => SocketAddrV6::new(a.ip().to_ipv6_mapped(), a.port(), 0, 0),
        (SocketAddr::V6(a), _) => *a,
    };
    let sin6 = libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: v6.port().to_be(),
        sin6_flowinfo: v6.flowinfo().to_be(),
        sin6_addr: libc::in6_addr {
            s6_addr: v6.ip().octets(),
        },
        sin6_scope_id: v6.scope_id(),
    };
    // SAFETY: sockaddr_storage is larger than and at least as aligned as
    // sockaddr_in6; we write a whole, initialised value.
    unsafe { ptr::from_mut(ss).cast::<libc::sockaddr_in6>().write(sin6) };
    size_of::<libc::sockaddr_in6>() as libc::socklen_t
}

/// Reads the source address the kernel wrote; v4-mapped IPv6 addresses are
/// returned as IPv4 so that one peer has one key in every table.
fn decode_addr(ss: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match libc::c_int::from(ss.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the kernel wrote a sockaddr_in, the
            // length covers it, and sockaddr_storage is aligned for it.
            let sin = unsafe { &*ptr::from_ref(ss).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says the kernel wrote a sockaddr_in6, the
            // length covers it, and sockaddr_storage is aligned for it.
            let sin6 = unsafe { &*ptr::from_ref(ss).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                None => SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    port,
                    u32::from_be(sin6.sin6_flowinfo),
                    sin6.sin6_scope_id,
                )),
            })
        }
        _ => None,
    }
}

// ------------------------------------------------------------------ receive

/// Preallocated `recvmmsg` arrays for up to `batch` datagrams.
pub(crate) struct RecvScratch {
    hdrs: Box<[libc::mmsghdr]>,
    iovs: Box<[libc::iovec]>,
    addrs: Box<[libc::sockaddr_storage]>,
    cmsgs: Box<[CmsgBuf]>,
}

// SAFETY: the raw pointers inside the arrays are written at the start of each
// `recv` call and only dereferenced (by the kernel) during it; between calls
// they are dead values. The scratch owns no shared state, so moving it to
// another thread is sound.
unsafe impl Send for RecvScratch {}

impl std::fmt::Debug for RecvScratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvScratch")
            .field("batch", &self.hdrs.len())
            .finish()
    }
}

impl RecvScratch {
    /// Arrays for `batch` messages (clamped to 1..=1024).
    pub(crate) fn new(batch: usize) -> Self {
        let batch = batch.clamp(1, MAX_BATCH);
        Self {
            hdrs: (0..batch).map(|_| zeroed()).collect(),
            iovs: (0..batch).map(|_| zeroed()).collect(),
            addrs: (0..batch).map(|_| zeroed()).collect(),
            cmsgs: vec![CmsgBuf([0; CMSG_BYTES]); batch].into_boxed_slice(),
        }
    }

    /// One `recvmmsg(MSG_WAITFORONE)`: blocks (up to the socket's receive
    /// timeout) for the first datagram, then takes whatever else is queued,
    /// up to `min(bufs.len(), meta.len(), batch)` datagrams. Fills `meta`
    /// and returns the count.
    pub(crate) fn recv(
        &mut self,
        fd: BorrowedFd<'_>,
        bufs: &mut [&mut [u8]],
        meta: &mut [RecvMeta],
    ) -> io::Result<usize> {
        let n = self.prepare(bufs, meta);
        if n == 0 {
            return Ok(0);
        }
        let rc = loop {
            // SAFETY: `prepare` pointed the first `n` headers at `n` iovecs
            // covering buffers exclusively borrowed for this call, at `n`
            // address slots and `n` cmsg buffers, all with their true
            // lengths; the arrays outlive the call. A null timeout means
            // "use SO_RCVTIMEO".
            let rc = unsafe {
                libc::recvmmsg(
                    fd.as_raw_fd(),
                    self.hdrs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_WAITFORONE as _,
                    ptr::null_mut(),
                )
            };
            if rc >= 0 {
                break rc as usize;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        for (i, m) in meta.iter_mut().enumerate().take(rc) {
            *m = self.finish(i, self.hdrs[i].msg_len as usize, bufs);
        }
        Ok(rc)
    }

    /// Points the first `min(bufs.len(), meta.len(), batch)` headers at
    /// `bufs` and at this scratch's address and cmsg slots, with their full
    /// lengths, and returns that count. The pointers stay valid while `bufs`
    /// is borrowed: the caller must finish every receive using them before
    /// it gives `bufs` back (as `recv` and the io_uring backend do).
    pub(crate) fn prepare(&mut self, bufs: &mut [&mut [u8]], meta: &[RecvMeta]) -> usize {
        let n = bufs.len().min(meta.len()).min(self.hdrs.len());
        for (i, buf) in bufs.iter_mut().take(n).enumerate() {
            self.iovs[i] = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            let h = &mut self.hdrs[i];
            h.msg_len = 0;
            h.msg_hdr.msg_name = ptr::from_mut(&mut self.addrs[i]).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = ptr::from_mut(&mut self.iovs[i]);
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = self.cmsgs[i].0.as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = CMSG_BYTES as _;
            h.msg_hdr.msg_flags = 0;
        }
        n
    }

    /// The `msghdr` of message `i` (prepared by [`prepare`](Self::prepare)),
    /// for a single `recvmsg` (the io_uring backend's `RecvMsg`).
    pub(crate) fn msghdr(&mut self, i: usize) -> *mut libc::msghdr {
        ptr::from_mut(&mut self.hdrs[i].msg_hdr)
    }

    /// What the kernel reported for message `i`, which received `len`
    /// bytes into `bufs[i]`: length, GRO stride, source address. Reads the
    /// `msg_namelen` and `msg_controllen` the kernel wrote back.
    pub(crate) fn finish(&self, i: usize, len: usize, bufs: &[&mut [u8]]) -> RecvMeta {
        let h = &self.hdrs[i];
        let len = len.min(bufs.get(i).map_or(0, |b| b.len()));
        let stride = gro_stride(&h.msg_hdr).unwrap_or(len);
        let addr = decode_addr(&self.addrs[i], h.msg_hdr.msg_namelen)
            .unwrap_or(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)));
        RecvMeta { len, stride, addr }
    }
}

/// The segment size from a `UDP_GRO` control message, if the kernel sent one.
fn gro_stride(hdr: &libc::msghdr) -> Option<usize> {
    // SAFETY: `hdr` was filled by recvmmsg: msg_control points at our cmsg
    // buffer and msg_controllen is the number of valid bytes in it; the
    // CMSG_* macros stay within that length.
    let mut cm = unsafe { libc::CMSG_FIRSTHDR(hdr) };
    while !cm.is_null() {
        // SAFETY: `cm` is non-null and points at a cmsghdr inside the buffer.
        let c = unsafe { &*cm };
        // SAFETY: CMSG_LEN is a pure size computation.
        let need = unsafe { libc::CMSG_LEN(size_of::<libc::c_int>() as u32) } as usize;
        if c.cmsg_level == libc::SOL_UDP
            && c.cmsg_type == libc::UDP_GRO
            && c.cmsg_len as usize >= need
        {
            // SAFETY: a UDP_GRO cmsg carries one c_int after the header;
            // read_unaligned tolerates any alignment of the data pointer.
            let v = unsafe { ptr::read_unaligned(libc::CMSG_DATA(cm).cast::<libc::c_int>()) };
            return usize::try_from(v).ok().filter(|&s| s > 0);
        }
        // SAFETY: same buffer and header as above; returns null at the end.
        cm = unsafe { libc::CMSG_NXTHDR(hdr, cm) };
    }
    None
}

// --------------------------------------------------------------------- send

/// Preallocated `sendmmsg` arrays: `batch` messages and up to
/// [`MAX_GSO_SEGMENTS`] iovecs per message.
pub(crate) struct SendScratch {
    hdrs: Box<[libc::mmsghdr]>,
    iovs: Box<[libc::iovec]>,
    addrs: Box<[libc::sockaddr_storage]>,
    cmsgs: Box<[CmsgBuf]>,
    segmented: Box<[bool]>,
    /// The `UDP_SEGMENT` size of each segmented message.
    seg_sizes: Box<[u16]>,
    v6_socket: bool,
}

// SAFETY: as for RecvScratch: the pointers are only meaningful while a
// `SendBatch` (which borrows the scratch and the data) is alive on one thread.
unsafe impl Send for SendScratch {}

impl std::fmt::Debug for SendScratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendScratch")
            .field("batch", &self.hdrs.len())
            .finish()
    }
}

impl SendScratch {
    /// Arrays for `batch` messages (clamped to 1..=1024) for a socket of the
    /// given family.
    pub(crate) fn new(batch: usize, v6_socket: bool) -> Self {
        let batch = batch.clamp(1, MAX_BATCH);
        let iovs = batch * MAX_GSO_SEGMENTS;
        Self {
            hdrs: (0..batch).map(|_| zeroed()).collect(),
            iovs: (0..iovs).map(|_| zeroed()).collect(),
            addrs: (0..batch).map(|_| zeroed()).collect(),
            cmsgs: vec![CmsgBuf([0; CMSG_BYTES]); batch].into_boxed_slice(),
            segmented: vec![false; batch].into_boxed_slice(),
            seg_sizes: vec![0; batch].into_boxed_slice(),
            v6_socket,
        }
    }

    /// An empty batch whose messages may point at data living for `'a`.
    pub(crate) fn batch<'a>(&mut self) -> SendBatch<'_, 'a> {
        SendBatch {
            s: self,
            msgs: 0,
            iovs: 0,
            _data: PhantomData,
        }
    }
}

/// Messages being assembled for `sendmmsg`. The iovecs point at data
/// borrowed for `'a`, which therefore outlives the batch.
pub(crate) struct SendBatch<'s, 'a> {
    s: &'s mut SendScratch,
    msgs: usize,
    iovs: usize,
    _data: PhantomData<&'a [u8]>,
}

impl<'a> SendBatch<'_, 'a> {
    /// Messages pushed so far.
    pub(crate) fn len(&self) -> usize {
        self.msgs
    }

    /// Whether no further message fits.
    pub(crate) fn is_full(&self) -> bool {
        self.msgs == self.s.hdrs.len()
    }

    /// Whether message `i` carries a `UDP_SEGMENT` control message.
    pub(crate) fn is_segmented(&self, i: usize) -> bool {
        i < self.msgs && self.s.segmented.get(i).copied().unwrap_or(false)
    }

    /// The destination of message `i` (`None` past the pushed messages).
    pub(crate) fn dst(&self, i: usize) -> Option<SocketAddr> {
        if i >= self.msgs {
            return None;
        }
        decode_addr(&self.s.addrs[i], self.s.hdrs[i].msg_hdr.msg_namelen)
    }

    /// Appends one message to `dst` whose payload is the concatenation of
    /// `parts`; with `segment_size` the kernel cuts it into datagrams of that
    /// size (GSO). Returns false, pushing nothing, if the batch has no room
    /// for another message or for `parts.len()` iovecs.
    pub(crate) fn push(
        &mut self,
        dst: &SocketAddr,
        segment_size: Option<u16>,
        parts: impl ExactSizeIterator<Item = &'a [u8]>,
    ) -> bool {
        let n_iov = parts.len();
        if self.is_full() || self.iovs + n_iov > self.s.iovs.len() {
            return false;
        }
        let i = self.msgs;
        let iov_start = self.iovs;
        for (k, part) in parts.enumerate() {
            self.s.iovs[iov_start + k] = libc::iovec {
                // sendmsg only reads through iov_base.
                iov_base: part.as_ptr().cast_mut().cast(),
                iov_len: part.len(),
            };
        }
        let namelen = encode_addr(dst, self.s.v6_socket, &mut self.s.addrs[i]);
        let h = &mut self.s.hdrs[i];
        h.msg_len = 0;
        h.msg_hdr.msg_name = ptr::from_mut(&mut self.s.addrs[i]).cast();
        h.msg_hdr.msg_namelen = namelen;
        h.msg_hdr.msg_iov = self.s.iovs[iov_start..].as_mut_ptr();
        h.msg_hdr.msg_iovlen = n_iov as _;
        h.msg_hdr.msg_flags = 0;
        match segment_size {
            Some(seg) => {
                let buf = &mut self.s.cmsgs[i];
                h.msg_hdr.msg_control = buf.0.as_mut_ptr().cast();
                // SAFETY: CMSG_SPACE is a pure size computation.
                h.msg_hdr.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as _;
                // SAFETY: msg_control points at our 8-aligned CMSG_BYTES
                // buffer and msg_controllen (24) fits in it, so the first
                // header is non-null and its data (2 bytes) is in bounds.
                unsafe {
                    let cm = libc::CMSG_FIRSTHDR(&h.msg_hdr);
                    (*cm).cmsg_level = libc::SOL_UDP;
                    (*cm).cmsg_type = libc::UDP_SEGMENT;
                    (*cm).cmsg_len = libc::CMSG_LEN(2) as _;
                    ptr::write_unaligned(libc::CMSG_DATA(cm).cast::<u16>(), seg);
                }
                self.s.segmented[i] = true;
                self.s.seg_sizes[i] = seg;
            }
            None => {
                h.msg_hdr.msg_control = ptr::null_mut();
                h.msg_hdr.msg_controllen = 0;
                self.s.segmented[i] = false;
            }
        }
        self.msgs += 1;
        self.iovs += n_iov;
        true
    }

    /// The segment size of message `i` if it is segmented (a GSO train).
    pub(crate) fn segment_size(&self, i: usize) -> Option<u16> {
        self.is_segmented(i).then(|| self.s.seg_sizes[i])
    }

    /// The payload parts of message `i` (pushed), in order: the slices
    /// given to [`push`](Self::push), borrowed for `'a`.
    pub(crate) fn parts(&self, i: usize) -> impl Iterator<Item = &'a [u8]> + '_ {
        let h = &self.s.hdrs[i.min(self.msgs.saturating_sub(1))].msg_hdr;
        let n = if i < self.msgs { h.msg_iovlen } else { 0 };
        (0..n).map(move |k| {
            // SAFETY: message i was filled by `push`: `msg_iov` points at
            // `msg_iovlen` iovecs of the scratch array, each made from a
            // slice borrowed for 'a (which outlives this batch), so reading
            // the iovec and rebuilding that slice is sound.
            unsafe {
                let iov = *h.msg_iov.add(k);
                std::slice::from_raw_parts(iov.iov_base.cast::<u8>().cast_const(), iov.iov_len)
            }
        })
    }

    /// One `sendmsg` of message `i` alone (pushed).
    pub(crate) fn send_one(&self, fd: BorrowedFd<'_>, i: usize) -> io::Result<()> {
        if i >= self.msgs {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        // SAFETY: header i was filled by `push` (see `send`).
        let rc = unsafe { libc::sendmsg(fd.as_raw_fd(), self.msghdr(i), 0) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// The `msghdr` of message `i` (pushed), for a single `sendmsg` (the
    /// io_uring backend's `SendMsg`). It points at data borrowed for `'a`.
    pub(crate) fn msghdr(&self, i: usize) -> *const libc::msghdr {
        ptr::from_ref(&self.s.hdrs[i].msg_hdr)
    }

    /// One `sendmmsg` of messages `start..len()`; returns how many the
    /// kernel took (at least one), or the error of message `start`.
    pub(crate) fn send(&mut self, fd: BorrowedFd<'_>, start: usize) -> io::Result<usize> {
        if start >= self.msgs {
            return Ok(0);
        }
        // SAFETY: headers start..msgs were filled by `push`: they point at
        // address slots, iovecs and cmsg buffers in the scratch arrays and
        // at caller data borrowed for 'a, which outlives this batch.
        let rc = unsafe {
            libc::sendmmsg(
                fd.as_raw_fd(),
                self.s.hdrs.as_mut_ptr().add(start),
                (self.msgs - start) as libc::c_uint,
                0,
            )
        };
        match rc {
            n if n > 0 => Ok(n as usize),
            0 => Err(io::ErrorKind::WriteZero.into()),
            _ => Err(io::Error::last_os_error()),
        }
    }

    /// Empties the batch for reuse.
    pub(crate) fn clear(&mut self) {
        self.msgs = 0;
        self.iovs = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip() {
        let cases: [(SocketAddr, bool); 4] = [
            ("127.0.0.1:7882".parse().unwrap(), false),
            ("[::1]:9".parse().unwrap(), true),
            ("[fe80::1%3]:5000".parse().unwrap(), true),
            // An IPv4 peer seen by a dual-stack socket comes back as IPv4.
            ("10.1.2.3:40000".parse().unwrap(), true),
        ];
        for (addr, v6) in cases {
            let mut ss = zeroed();
            let len = encode_addr(&addr, v6, &mut ss);
            assert_eq!(decode_addr(&ss, len), Some(addr), "{addr} v6={v6}");
        }
    }

    #[test]
    fn unknown_family_is_none() {
        let ss: libc::sockaddr_storage = zeroed();
        assert_eq!(decode_addr(&ss, 128), None);
    }

    #[test]
    fn thread_cpu_time_advances() {
        let a = thread_cpu_time();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = std::hint::black_box(x.wrapping_add(i * i));
        }
        assert!(thread_cpu_time() > a, "{x}");
    }
}

/// An `eventfd` that wakes a worker waiting in [`wait_readable`] (a
/// command or the stop flag is waiting). Any thread may notify it.
#[derive(Debug)]
pub(crate) struct EventFd(OwnedFd);

impl EventFd {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: plain system call; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Makes the next (or current) [`wait_readable`] return. Never blocks:
    /// a counter already at its maximum means a wake-up is pending anyway.
    pub(crate) fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live `u64` to a descriptor we own.
        let _ = unsafe {
            libc::write(
                self.0.as_raw_fd(),
                ptr::from_ref(&one).cast::<libc::c_void>(),
                size_of::<u64>(),
            )
        };
    }

    /// Resets the counter after a wake-up.
    fn drain(&self) {
        let mut value: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live `u64`; the descriptor
        // is non-blocking, so an empty counter returns EAGAIN at once.
        let _ = unsafe {
            libc::read(
                self.0.as_raw_fd(),
                ptr::from_mut(&mut value).cast::<libc::c_void>(),
                size_of::<u64>(),
            )
        };
    }
}

/// Waits until `socket` (or `extra`, the AF_XDP backend's kernel socket)
/// is readable, `wake` was notified, or `timeout` passed (`ppoll`,
/// nanosecond timeout). An interrupted wait returns early.
pub(crate) fn wait_readable(
    socket: BorrowedFd<'_>,
    extra: Option<BorrowedFd<'_>>,
    wake: &EventFd,
    timeout: Duration,
) -> io::Result<()> {
    let mut fds = [
        libc::pollfd {
            fd: wake.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: socket.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            // A negative descriptor is ignored by poll.
            fd: extra.map_or(-1, |fd| fd.as_raw_fd()),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: three initialised pollfds, a live timespec, no signal mask.
    let rc = unsafe { libc::ppoll(fds.as_mut_ptr(), 3, &ts, ptr::null()) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::Interrupted => Ok(()),
            _ => Err(e),
        };
    }
    if fds[0].revents != 0 {
        wake.drain();
    }
    Ok(())
}

/// Moves the calling thread into the network namespace at `path` (a
/// `/var/run/netns/NAME` file): sockets it makes, and threads it starts,
/// live there. Other threads are not affected.
pub(crate) fn enter_network_namespace(path: &std::path::Path) -> io::Result<()> {
    let ns = std::fs::File::open(path)?;
    // SAFETY: setns(2) with a namespace descriptor we hold open; it
    // changes the calling thread's namespace only.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The source address in `name` (a `sockaddr` as the kernel wrote it into
/// an io_uring provided buffer), if it is IPv4 or IPv6.
pub(crate) fn addr_from_bytes(name: &[u8]) -> Option<SocketAddr> {
    let mut ss: libc::sockaddr_storage = zeroed();
    let n = name.len().min(size_of::<libc::sockaddr_storage>());
    // SAFETY: copies n ≤ size_of::<sockaddr_storage>() bytes into it.
    unsafe { ptr::copy_nonoverlapping(name.as_ptr(), ptr::from_mut(&mut ss).cast::<u8>(), n) };
    decode_addr(&ss, n as libc::socklen_t)
}

/// The `UDP_GRO` segment size in `control` (control messages as the
/// kernel wrote them into an io_uring provided buffer).
pub(crate) fn gro_stride_from_bytes(control: &[u8]) -> Option<usize> {
    // An aligned copy for the CMSG_* walk.
    let mut buf = CmsgBuf([0; CMSG_BYTES]);
    let n = control.len().min(CMSG_BYTES);
    buf.0[..n].copy_from_slice(&control[..n]);
    let mut hdr: libc::msghdr = zeroed();
    hdr.msg_control = buf.0.as_mut_ptr().cast();
    hdr.msg_controllen = n as _;
    gro_stride(&hdr)
}
