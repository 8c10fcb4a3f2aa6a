//! The AF_XDP backend: the node's XDP program and one AF_XDP socket per
//! worker, beside the worker's kernel UDP socket.
//!
//! * [`XdpProgram`] (one per node): an `XSKMAP` and the XDP program of
//!   [`ether::program`](crate::ether::program), loaded with the `bpf`
//!   system call and attached to the interface that holds the media
//!   address with a BPF link (native mode, else generic mode). Closing the
//!   link (dropping the program, or the process ending) detaches it, so a
//!   crashed node leaves no program behind.
//! * [`XdpSocket`] (one per worker): an AF_XDP socket bound to receive
//!   queue `worker` of that interface (zero-copy where the driver can,
//!   else copy mode), its UMEM (20,480 frames of 2 KiB: 16,384 for
//!   receiving, 4096 for sending; 40 MiB of locked memory per worker) and
//!   its four rings,
//!   plus the worker's ordinary [`BatchSocket`] bound to the same address,
//!   which receives what the program passes to the kernel (datagrams that
//!   arrived on another queue, IPv6, frames on another interface) and
//!   sends what the AF_XDP socket cannot (a peer whose next-hop MAC is not
//!   learnt yet, IPv6, datagrams larger than a frame, and loopback
//!   destinations: the kernel drops a frame injected on `lo` towards 127/8
//!   as a martian, since it carries no route as its own loopback traffic
//!   does; so on the embedded defaults' loopback address the node receives
//!   through AF_XDP, in generic mode, and sends through the kernel).
//!
//! A next-hop MAC is learnt from a received frame only once the router
//! has accepted its datagram as proving its source
//! ([`Backend::accepted`](crate::Backend::accepted)): SRTP that verified
//! with the keys of the endpoint at that address, an ICE check after which
//! the address is its endpoint's; never DTLS. A forged frame that claims a
//! peer's address from another MAC is dropped like any unauthenticated
//! datagram and teaches nothing. (A replayed ICE check sent from the
//! link with another MAC is not detected: STUN has no replay protection;
//! such an attacker could spoof ARP for the kernel's traffic as well.)
//!
//! Receiving copies each payload from its UMEM frame into the worker's
//! buffer and returns the frame to the fill ring at once; sending copies
//! each datagram of a message (a GSO train is cut here, in software) into
//! a free transmit frame behind headers written by [`ether`](crate::ether),
//! then kicks the kernel with one `sendto` per batch (in copy mode the
//! kernel transmits 32 descriptors per call, so a large batch loops). The
//! worker's buffers never alias UMEM, so `sfu-core` sees byte slices as on
//! the other backends, and nothing allocates after set-up.

#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::marker::PhantomData;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::datagram::RecvMeta;
use crate::ether::{self, HEADERS, Mac, Neighbours, Route};
use crate::io::{BatchSocket, GsoPolicy, Pos, SendFailure, SendMessages};
use crate::sys::{Mapping, SendBatch, ZeroValid, zeroed};

/// Bytes per UMEM frame.
pub(crate) const FRAME_SIZE: usize = 2048;
/// Entries of the receive and fill rings, and frames for receiving: the
/// ring is the only buffer in front of the worker (the socket backend has
/// 32 MiB of socket buffer), so it holds 32 MiB too: 16,384 datagrams
/// (with 8192, the million-packet test's bursts overflowed it once).
const RX_RING: u32 = 16384;
/// Entries of the transmit and completion rings, and frames for sending.
const TX_RING: u32 = 4096;
const RX_FRAMES: usize = RX_RING as usize;
const TX_FRAMES: usize = TX_RING as usize;
/// The kernel socket is read when the AF_XDP ring is empty, and on every
/// this many receives otherwise (it only gets what the program passes).
const KERNEL_POLL_EVERY: u32 = 16;
/// Next-hop MAC addresses remembered per worker.
const NEIGHBOURS: usize = 4096;
/// `sendto` kicks per transmit call at most (copy mode sends 32
/// descriptors per kick: 128 cover the whole ring).
const MAX_KICKS: usize = TX_FRAMES / 32;

// The `bpf` system call.
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

#[repr(C)]
#[derive(Default)]
struct MapUpdateAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// `bpf(cmd, attr)`; the result as a descriptor when `cmd` makes one.
///
/// # Safety
/// `attr` must be the attribute struct of `cmd`, and every pointer in it
/// must be valid for the call.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: the caller's contract; the size is that of `T`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            ptr::from_mut(attr).cast::<libc::c_void>(),
            size_of::<T>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: the kernel just returned this descriptor to us alone.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// The interface holding an IPv4 address: name, index.
fn interface_of(addr: Ipv4Addr) -> io::Result<(String, u32)> {
    let mut list: *mut libc::ifaddrs = ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut found = None;
    let mut p = list;
    while !p.is_null() {
        // SAFETY: p is a node of the list getifaddrs returned, alive
        // until freeifaddrs; an AF_INET address is a sockaddr_in.
        unsafe {
            let a = (*p).ifa_addr;
            if !a.is_null() && i32::from((*a).sa_family) == libc::AF_INET {
                let sin = &*a.cast::<libc::sockaddr_in>();
                if Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)) == addr {
                    let name = CStr::from_ptr((*p).ifa_name);
                    let index = libc::if_nametoindex(name.as_ptr());
                    found = Some((name.to_string_lossy().into_owned(), index));
                    break;
                }
            }
            p = (*p).ifa_next;
        }
    }
    // SAFETY: the list getifaddrs allocated, freed once.
    unsafe { libc::freeifaddrs(list) };
    match found {
        Some((name, index)) if index != 0 => Ok((name, index)),
        _ => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface holds {addr}"),
        )),
    }
}

/// `ETHTOOL_GCHANNELS`: an interface's queue counts.
const ETHTOOL_GCHANNELS: u32 = 0x3c;

/// `struct ethtool_channels`.
#[repr(C)]
#[derive(Default)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

/// What the node needs of its media interface.
struct InterfaceFacts {
    mac: Mac,
    mtu: usize,
    /// Receive queues: ethtool's receive-only plus combined channels; for
    /// a device without channels (loopback, many virtual ones), the
    /// `rx-*` queues in sysfs if sysfs shows this very interface, else 1.
    queues: u32,
}

/// Asks the kernel, through ioctls on a socket made in the calling
/// thread's network namespace, for interface `name`'s MAC, MTU and queues.
/// (`/sys/class/net` shows the namespace sysfs was mounted in, which is
/// not the thread's after `setns`.)
fn interface_facts(name: &str, ifindex: u32) -> io::Result<InterfaceFacts> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    let fd = socket.as_raw_fd();
    let mut req: libc::ifreq = zeroed();
    if name.len() >= req.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    let ioctl = |request: libc::Ioctl, req: &mut libc::ifreq| {
        // SAFETY: each request below reads a named ifreq and writes into
        // it (or, for SIOCETHTOOL, into the struct its data points to).
        if unsafe { libc::ioctl(fd, request, ptr::from_mut(req)) } < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    ioctl(libc::SIOCGIFHWADDR, &mut req)?;
    // SAFETY: SIOCGIFHWADDR filled the union's hardware address.
    let family = unsafe { req.ifr_ifru.ifru_hwaddr.sa_family };
    if family != libc::ARPHRD_ETHER && family != libc::ARPHRD_LOOPBACK {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "not an Ethernet interface (hardware type {family}): the node writes Ethernet headers"
            ),
        ));
    }
    let mut mac = [0u8; 6];
    // SAFETY: SIOCGIFHWADDR filled the union's hardware address.
    let hw = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    for (m, b) in mac.iter_mut().zip(hw) {
        *m = b as u8;
    }
    ioctl(libc::SIOCGIFMTU, &mut req)?;
    // SAFETY: SIOCGIFMTU filled the union's MTU.
    let mtu = usize::try_from(unsafe { req.ifr_ifru.ifru_mtu }).unwrap_or(0);
    let mut channels = EthtoolChannels {
        cmd: ETHTOOL_GCHANNELS,
        ..Default::default()
    };
    req.ifr_ifru.ifru_data = ptr::from_mut(&mut channels).cast();
    let queues = match ioctl(libc::SIOCETHTOOL, &mut req) {
        Ok(()) => channels.rx_count + channels.combined_count,
        Err(_) => sysfs_rx_queues(name, ifindex).unwrap_or(1),
    };
    Ok(InterfaceFacts {
        mac,
        mtu,
        queues: queues.max(1),
    })
}

/// The `rx-*` queues sysfs lists for `name`, if sysfs shows the interface
/// of index `ifindex` under that name.
fn sysfs_rx_queues(name: &str, ifindex: u32) -> Option<u32> {
    let dir = format!("/sys/class/net/{name}");
    let index: u32 = std::fs::read_to_string(format!("{dir}/ifindex"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if index != ifindex {
        return None;
    }
    let n = std::fs::read_dir(format!("{dir}/queues"))
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    u32::try_from(n).ok()
}

/// The XDP program of a node, attached to its media interface.
#[derive(Debug)]
pub struct XdpProgram {
    ifname: String,
    ifindex: u32,
    mac: Mac,
    /// Largest UDP payload a frame carries (MTU and frame size).
    max_payload: usize,
    queues: u32,
    native: bool,
    map: OwnedFd,
    _prog: OwnedFd,
    _link: OwnedFd,
}

impl XdpProgram {
    /// Loads and attaches the program for workers on ports `base_port`,
    /// `base_port + 1`, ... of `addr` (worker `i` on receive queue `i`).
    /// Errors say why the host cannot (the node then runs the socket
    /// backend): no interface holds `addr`, no `CAP_NET_ADMIN`/`CAP_BPF`
    /// (`EPERM`), another XDP program on the interface (`EBUSY`), ...
    pub fn attach(addr: SocketAddr, workers: usize) -> io::Result<Self> {
        let invalid = |m: &str| io::Error::new(io::ErrorKind::InvalidInput, m.to_owned());
        let SocketAddr::V4(v4) = addr else {
            return Err(invalid("AF_XDP serves an IPv4 media address only"));
        };
        if v4.ip().is_unspecified() {
            return Err(invalid(
                "AF_XDP needs the media address of one interface, not 0.0.0.0",
            ));
        }
        if v4.port() == 0 {
            return Err(invalid(
                "AF_XDP needs fixed worker ports (base_port), not ephemeral ones",
            ));
        }
        let (ifname, ifindex) = interface_of(*v4.ip())?;
        let InterfaceFacts { mac, mtu, queues } = interface_facts(&ifname, ifindex)
            .map_err(|e| io::Error::new(e.kind(), format!("reading {ifname}: {e}")))?;
        let mut mattr = MapCreateAttr {
            map_type: BPF_MAP_TYPE_XSKMAP,
            key_size: 4,
            value_size: 4,
            max_entries: queues.max(workers as u32),
            ..Default::default()
        };
        mattr.map_name[..8].copy_from_slice(b"sfu_xsks");
        // SAFETY: a BPF_MAP_CREATE attribute without pointers.
        let map = owned(unsafe { bpf(BPF_MAP_CREATE, &mut mattr) }?);
        let insns = ether::program(map.as_raw_fd(), Some(*v4.ip()), v4.port());
        let prog = load(&insns)?;
        let mut native = true;
        let link = link(&prog, ifindex, XDP_FLAGS_DRV_MODE).or_else(|e| {
            native = false;
            link(&prog, ifindex, XDP_FLAGS_SKB_MODE).map_err(|e2| {
                io::Error::new(
                    e2.kind(),
                    format!("attaching the XDP program to {ifname}: native: {e}; generic: {e2}"),
                )
            })
        })?;
        Ok(Self {
            ifname,
            ifindex,
            mac,
            max_payload: (FRAME_SIZE - HEADERS).min(mtu.saturating_sub(28)),
            queues,
            native,
            map,
            _prog: prog,
            _link: link,
        })
    }

    /// The interface the program is attached to.
    pub fn interface(&self) -> &str {
        &self.ifname
    }

    /// Whether it runs in the driver (native XDP) rather than generic mode.
    pub fn native(&self) -> bool {
        self.native
    }

    /// Receive queues of the interface.
    pub fn queues(&self) -> u32 {
        self.queues
    }

    /// The interface's MAC address (the source of every frame sent).
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The largest UDP payload one frame carries: the interface's MTU
    /// less the IPv4 and UDP headers, at most what a UMEM frame holds.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }
}

fn load(insns: &[u64]) -> io::Result<OwnedFd> {
    let license = c"Dual MIT/GPL";
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        expected_attach_type: BPF_XDP,
        ..Default::default()
    };
    attr.prog_name[..7].copy_from_slice(b"sfu_xdp");
    // SAFETY: insns and license outlive the call.
    match unsafe { bpf(BPF_PROG_LOAD, &mut attr) } {
        Ok(fd) => Ok(owned(fd)),
        Err(e) => {
            // Again with the verifier's log, for the error message.
            let mut log = vec![0u8; 64 * 1024];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            // SAFETY: as above; the log buffer outlives the call.
            if let Ok(fd) = unsafe { bpf(BPF_PROG_LOAD, &mut attr) } {
                return Ok(owned(fd));
            }
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            Err(io::Error::new(
                e.kind(),
                format!("loading the XDP program: {e}: {}", text.trim()),
            ))
        }
    }
}

fn link(prog: &OwnedFd, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags,
    };
    // SAFETY: a BPF_LINK_CREATE attribute without pointers.
    Ok(owned(unsafe { bpf(BPF_LINK_CREATE, &mut attr) }?))
}

/// One of the four rings shared with the kernel. We are the producer of
/// the fill and transmit rings and the consumer of the receive and
/// completion rings; `head` is our index (producer or consumer).
struct Ring<T> {
    _map: Mapping,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    desc: *mut T,
    mask: u32,
    head: u32,
    _t: PhantomData<T>,
}

impl<T: Copy> Ring<T> {
    fn map(
        fd: BorrowedFd<'_>,
        off: &libc::xdp_ring_offset,
        size: u32,
        pgoff: i64,
        producer_side: bool,
    ) -> io::Result<Self> {
        let len = off.desc as usize + size as usize * size_of::<T>();
        let map = Mapping::new(len, Some(fd), pgoff)?;
        // SAFETY: the kernel's offsets lie within the mapping it sized
        // (desc + size entries); producer, consumer and flags are u32
        // words it updates atomically.
        let (producer, consumer, flags, desc) = unsafe {
            (
                map.ptr()
                    .add(off.producer as usize)
                    .cast::<AtomicU32>()
                    .cast_const(),
                map.ptr()
                    .add(off.consumer as usize)
                    .cast::<AtomicU32>()
                    .cast_const(),
                map.ptr()
                    .add(off.flags as usize)
                    .cast::<AtomicU32>()
                    .cast_const(),
                map.ptr().add(off.desc as usize).cast::<T>(),
            )
        };
        let mut ring = Self {
            _map: map,
            producer,
            consumer,
            flags,
            desc,
            mask: size - 1,
            head: 0,
            _t: PhantomData,
        };
        ring.head = if producer_side {
            ring.producer().load(Ordering::Relaxed)
        } else {
            ring.consumer().load(Ordering::Relaxed)
        };
        Ok(ring)
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into the live mapping (see `map`).
        unsafe { &*self.producer }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as `producer`.
        unsafe { &*self.consumer }
    }

    fn needs_wakeup(&self) -> bool {
        // SAFETY: as `producer`.
        let flags = unsafe { &*self.flags };
        flags.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    // Producer side.

    /// Entries produced that the kernel has not consumed.
    fn pending(&self) -> u32 {
        self.head
            .wrapping_sub(self.consumer().load(Ordering::Acquire))
    }

    /// Writes the next entry; the caller checked [`free`](Self::free).
    fn push(&mut self, v: T) {
        // SAFETY: the index is masked into the ring's `size` entries, which
        // the kernel does not read until `publish`.
        unsafe { self.desc.add((self.head & self.mask) as usize).write(v) };
        self.head = self.head.wrapping_add(1);
    }

    fn publish(&self) {
        self.producer().store(self.head, Ordering::Release);
    }

    // Consumer side.

    /// Entries the kernel produced that we have not consumed.
    fn ready(&self) -> u32 {
        self.producer()
            .load(Ordering::Acquire)
            .wrapping_sub(self.head)
    }

    /// Reads the next entry; the caller checked [`ready`](Self::ready).
    fn pop(&mut self) -> T {
        // SAFETY: a masked index of an entry the kernel published (the
        // acquire load in `ready` orders its write before this read).
        let v = unsafe { self.desc.add((self.head & self.mask) as usize).read() };
        self.head = self.head.wrapping_add(1);
        v
    }

    fn release(&self) {
        self.consumer().store(self.head, Ordering::Release);
    }
}

/// Counters of one AF_XDP socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpStats {
    /// Datagrams received through the AF_XDP ring.
    pub rx_frames: u64,
    /// Datagrams sent through the AF_XDP ring.
    pub tx_frames: u64,
    /// Datagrams the kernel socket received (passed by the program).
    pub kernel_receives: u64,
    /// Messages sent through the kernel socket (no learnt next hop, IPv6,
    /// larger than a frame).
    pub kernel_sends: u64,
    /// Frames dropped as malformed (lengths, IPv4 checksum) or too large.
    pub rx_malformed: u64,
    /// Datagrams that found no free transmit frame (sent through the
    /// kernel socket instead).
    pub tx_no_frame: u64,
    /// The kernel's count of frames dropped for this socket: receive ring
    /// full, fill ring empty, invalid descriptors (`XDP_STATISTICS`).
    pub kernel_dropped: u64,
}

/// A worker's AF_XDP socket and its kernel UDP socket; see the module doc.
pub struct XdpSocket {
    socket: BatchSocket,
    xsk: Box<Xsk>,
}

struct Xsk {
    // Field order is drop order: the rings and UMEM are unmapped before
    // the socket closes.
    fill: Ring<u64>,
    comp: Ring<u64>,
    rx: Ring<libc::xdp_desc>,
    tx: Ring<libc::xdp_desc>,
    umem: Mapping,
    fd: OwnedFd,
    tx_free: Box<[u64]>,
    tx_free_len: usize,
    zerocopy: bool,
    local: SocketAddrV4,
    mac: Mac,
    max_payload: usize,
    neighbours: Neighbours,
    /// The source address and MAC of each message of the last receive
    /// that came through the ring (the first `rx_ring_count`), learnt
    /// once the router accepts the message.
    rx_sources: Box<[(Ipv4Addr, Mac)]>,
    rx_ring_count: usize,
    ip_id: u16,
    calls: u32,
    stats: XdpStats,
    program: Arc<XdpProgram>,
}

// SAFETY: the raw pointers point into mappings this struct owns; the
// kernel is the only other party, through the ring protocol. The socket
// moves to its worker thread once and is used there alone.
unsafe impl Send for Xsk {}

impl std::fmt::Debug for XdpSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpSocket")
            .field("socket", &self.socket)
            .field("interface", &self.xsk.program.ifname)
            .field("zerocopy", &self.xsk.zerocopy)
            .finish_non_exhaustive()
    }
}

fn setsockopt<T>(fd: BorrowedFd<'_>, opt: i32, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live `T`, the option's argument type.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            opt,
            ptr::from_ref(value).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn getsockopt<T: ZeroValid>(fd: BorrowedFd<'_>, opt: i32) -> io::Result<T> {
    let mut value: T = zeroed();
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `value`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            opt,
            ptr::from_mut(&mut value).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(value)
    }
}

impl XdpSocket {
    /// An AF_XDP socket on `program`'s interface, receive queue `queue`,
    /// beside `socket` (bound to the program's address). Gives the socket
    /// back with the reason if the host cannot (no such queue, no
    /// AF_XDP, locked-memory limit, ...).
    #[allow(clippy::result_large_err)]
    pub fn new(
        socket: BatchSocket,
        program: &Arc<XdpProgram>,
        queue: u32,
    ) -> Result<Self, (BatchSocket, io::Error)> {
        let local = match socket.local_addr() {
            Ok(SocketAddr::V4(a)) => a,
            Ok(_) => {
                let e = io::Error::new(io::ErrorKind::InvalidInput, "not IPv4");
                return Err((socket, e));
            }
            Err(e) => return Err((socket, e)),
        };
        if queue >= program.queues {
            let e = io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} has {} receive queue(s), none for worker {queue}",
                    program.ifname, program.queues
                ),
            );
            return Err((socket, e));
        }
        match Xsk::new(program, queue, local, socket.batch()) {
            Ok(xsk) => Ok(Self {
                socket,
                xsk: Box::new(xsk),
            }),
            Err(e) => Err((socket, e)),
        }
    }

    /// The kernel socket beside the AF_XDP socket.
    pub fn socket(&self) -> &BatchSocket {
        &self.socket
    }

    /// The kernel socket, to change its settings.
    pub fn socket_mut(&mut self) -> &mut BatchSocket {
        &mut self.socket
    }

    /// Whether the socket runs in zero-copy mode (the driver's DMA goes
    /// straight to UMEM), not copy mode.
    pub fn zerocopy(&self) -> bool {
        self.xsk.zerocopy
    }

    /// Whether the program runs in the driver (native XDP).
    pub fn native(&self) -> bool {
        self.xsk.program.native
    }

    /// The counters.
    pub fn stats(&self) -> XdpStats {
        self.xsk.stats
    }

    /// Reads the kernel's drop counters (a system call: call it now and
    /// then, not per batch).
    pub fn refresh_kernel_stats(&mut self) {
        if let Ok(s) = getsockopt::<libc::xdp_statistics>(self.xsk.fd.as_fd(), libc::XDP_STATISTICS)
        {
            // A full receive ring or an empty fill ring is also counted in
            // rx_dropped (the kernel counts such a frame twice).
            self.xsk.stats.kernel_dropped = s
                .rx_dropped
                .max(s.rx_ring_full + s.rx_fill_ring_empty_descs)
                + s.rx_invalid_descs
                + s.tx_invalid_descs;
        }
    }

    /// Learns the next-hop MAC of message `index` of the last
    /// [`recv`](Self::recv), which the router accepted; nothing for a
    /// message the kernel socket received.
    pub fn accepted(&mut self, index: usize) {
        let xsk = &mut *self.xsk;
        if index < xsk.rx_ring_count {
            let (ip, mac) = xsk.rx_sources[index];
            xsk.neighbours.learn(ip, mac);
        }
    }

    /// The AF_XDP socket's descriptor (readable when its receive ring is
    /// not empty).
    pub(crate) fn xsk_fd(&self) -> BorrowedFd<'_> {
        self.xsk.fd.as_fd()
    }

    /// Receives into `bufs`: the AF_XDP ring first, then the kernel socket
    /// when the ring gave nothing or every 16 calls.
    /// `WouldBlock` when both are empty. Does not allocate.
    pub fn recv(&mut self, bufs: &mut [&mut [u8]], meta: &mut [RecvMeta]) -> io::Result<usize> {
        self.xsk.calls = self.xsk.calls.wrapping_add(1);
        let room = bufs.len().min(meta.len());
        let kernel_turn = self.xsk.calls.is_multiple_of(KERNEL_POLL_EVERY);
        // On the kernel socket's turn an eighth of the batch is kept for
        // it, so that a flood through the ring cannot starve it.
        let ring_room = if kernel_turn { room - room / 8 } else { room };
        let mut n = self
            .xsk
            .recv(&mut bufs[..ring_room], &mut meta[..ring_room]);
        // Messages from the kernel socket carry no MAC to learn.
        if n < room && (n == 0 || kernel_turn) {
            match self.socket.recv(&mut bufs[n..], &mut meta[n..]) {
                Ok(k) => {
                    self.xsk.stats.kernel_receives += meta[n..n + k]
                        .iter()
                        .map(|m| m.segments().max(1) as u64)
                        .sum::<u64>();
                    n += k;
                }
                Err(e) if n == 0 => return Err(e),
                Err(_) => {}
            }
        }
        Ok(n)
    }
}

impl SendMessages for XdpSocket {
    fn send_messages<'a>(
        &mut self,
        start: Pos,
        end: Pos,
        build: impl FnMut(Pos, &GsoPolicy<'_>, &mut SendBatch<'_, 'a>) -> Pos,
    ) -> Result<(), SendFailure> {
        let xsk = &mut self.xsk;
        self.socket
            .send_messages_via(start, end, build, |batch, fd, from| {
                xsk.transmit(batch, fd, from)
            })
    }
}

/// A transmit frame's descriptor.
fn desc(addr: u64, len: usize) -> libc::xdp_desc {
    libc::xdp_desc {
        addr,
        len: len as u32,
        options: 0,
    }
}

impl Xsk {
    fn new(
        program: &Arc<XdpProgram>,
        queue: u32,
        local: SocketAddrV4,
        batch: usize,
    ) -> io::Result<Self> {
        let context = |what: &'static str| {
            move |e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"))
        };
        // SAFETY: a plain socket(2) call.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(context("AF_XDP socket")(io::Error::last_os_error()));
        }
        let fd = owned(libc::c_long::from(raw));
        let frames = RX_FRAMES + TX_FRAMES;
        let umem = Mapping::new(frames * FRAME_SIZE, None, 0).map_err(context("UMEM"))?;
        let mut reg: libc::xdp_umem_reg = zeroed();
        reg.addr = umem.ptr() as u64;
        reg.len = umem.len() as u64;
        reg.chunk_size = FRAME_SIZE as u32;
        setsockopt(fd.as_fd(), libc::XDP_UMEM_REG, &reg)
            .map_err(context("registering UMEM (locked-memory limit?)"))?;
        for (opt, size) in [
            (libc::XDP_UMEM_FILL_RING, RX_RING),
            (libc::XDP_UMEM_COMPLETION_RING, TX_RING),
            (libc::XDP_RX_RING, RX_RING),
            (libc::XDP_TX_RING, TX_RING),
        ] {
            setsockopt(fd.as_fd(), opt, &size).map_err(context("ring sizes"))?;
        }
        let off: libc::xdp_mmap_offsets =
            getsockopt(fd.as_fd(), libc::XDP_MMAP_OFFSETS).map_err(context("ring offsets"))?;
        let b = fd.as_fd();
        let mut fill = Ring::map(
            b,
            &off.fr,
            RX_RING,
            libc::XDP_UMEM_PGOFF_FILL_RING as i64,
            true,
        )
        .map_err(context("fill ring"))?;
        let comp = Ring::map(
            b,
            &off.cr,
            TX_RING,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING as i64,
            false,
        )
        .map_err(context("completion ring"))?;
        let rx = Ring::map(b, &off.rx, RX_RING, libc::XDP_PGOFF_RX_RING, false)
            .map_err(context("receive ring"))?;
        let tx = Ring::map(b, &off.tx, TX_RING, libc::XDP_PGOFF_TX_RING, true)
            .map_err(context("transmit ring"))?;
        // Receive frames first, transmit frames after them.
        for i in 0..RX_FRAMES {
            fill.push((i * FRAME_SIZE) as u64);
        }
        fill.publish();
        let tx_free: Box<[u64]> = (RX_FRAMES..frames)
            .map(|i| (i * FRAME_SIZE) as u64)
            .collect();
        let mut zerocopy = true;
        let bind = |flags: u16| {
            let mut sa: libc::sockaddr_xdp = zeroed();
            sa.sxdp_family = libc::AF_XDP as u16;
            sa.sxdp_flags = flags | libc::XDP_USE_NEED_WAKEUP;
            sa.sxdp_ifindex = program.ifindex;
            sa.sxdp_queue_id = queue;
            // SAFETY: a live sockaddr_xdp of the size given.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    ptr::from_ref(&sa).cast(),
                    size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
                )
            };
            if rc < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        if bind(libc::XDP_ZEROCOPY).is_err() {
            zerocopy = false;
            bind(libc::XDP_COPY).map_err(context("binding the AF_XDP socket"))?;
        }
        let key = queue;
        let value = fd.as_raw_fd() as u32;
        let mut attr = MapUpdateAttr {
            map_fd: program.map.as_raw_fd() as u32,
            key: ptr::from_ref(&key) as u64,
            value: ptr::from_ref(&value) as u64,
            ..Default::default()
        };
        // SAFETY: key and value outlive the call.
        unsafe { bpf(BPF_MAP_UPDATE_ELEM, &mut attr) }.map_err(context("XSKMAP update"))?;
        Ok(Self {
            fill,
            comp,
            rx,
            tx,
            umem,
            fd,
            tx_free_len: tx_free.len(),
            tx_free,
            zerocopy,
            local,
            mac: program.mac,
            max_payload: program.max_payload,
            neighbours: Neighbours::new(NEIGHBOURS),
            rx_sources: vec![(Ipv4Addr::UNSPECIFIED, [0; 6]); batch].into_boxed_slice(),
            rx_ring_count: 0,
            ip_id: 0,
            calls: 0,
            stats: XdpStats::default(),
            program: Arc::clone(program),
        })
    }

    /// The UMEM bytes `addr..addr + len`, if within UMEM.
    fn frame(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(addr).ok()?;
        let end = start.checked_add(len)?;
        if end > self.umem.len() {
            return None;
        }
        // SAFETY: in bounds of the live UMEM mapping; the kernel does not
        // write a frame it handed us until we return it to the fill ring.
        Some(unsafe { std::slice::from_raw_parts(self.umem.ptr().add(start), len) })
    }

    /// A whole transmit frame (from the free list: the kernel has it not).
    fn frame_mut(&mut self, addr: u64) -> &mut [u8] {
        let start = (addr as usize).min(self.umem.len() - FRAME_SIZE);
        // SAFETY: in bounds; a free transmit frame is ours alone.
        unsafe { std::slice::from_raw_parts_mut(self.umem.ptr().add(start), FRAME_SIZE) }
    }

    fn recv(&mut self, bufs: &mut [&mut [u8]], meta: &mut [RecvMeta]) -> usize {
        let room = bufs.len().min(meta.len()).min(self.rx_sources.len());
        let ready = (self.rx.ready() as usize).min(room);
        let mut n = 0;
        for _ in 0..ready {
            let d = self.rx.pop();
            let parsed = self
                .frame(d.addr, d.len as usize)
                .map(|f| (ether::parse(f), f));
            match parsed {
                Some((Ok(udp), f)) if udp.len <= bufs[n].len() => {
                    bufs[n][..udp.len].copy_from_slice(&f[udp.offset..udp.offset + udp.len]);
                    meta[n] = RecvMeta {
                        len: udp.len,
                        stride: udp.len,
                        addr: SocketAddr::V4(udp.src),
                    };
                    self.rx_sources[n] = (*udp.src.ip(), udp.src_mac);
                    n += 1;
                }
                _ => self.stats.rx_malformed += 1,
            }
            // The fill ring holds every receive frame: there is room.
            self.fill.push(d.addr & !(FRAME_SIZE as u64 - 1));
        }
        if ready > 0 {
            self.rx.release();
            self.fill.publish();
        }
        if n == 0 && self.fill.needs_wakeup() {
            // A zero-copy driver waits for this to refill its queue.
            // SAFETY: a zero-length receive that only wakes the driver.
            unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    ptr::null_mut(),
                    0,
                    libc::MSG_DONTWAIT,
                    ptr::null_mut(),
                    ptr::null_mut(),
                )
            };
        }
        self.stats.rx_frames += n as u64;
        self.rx_ring_count = n;
        n
    }

    /// Returns completed transmit frames to the free list.
    fn reap(&mut self) {
        let n = self.comp.ready();
        for _ in 0..n {
            let addr = self.comp.pop() & !(FRAME_SIZE as u64 - 1);
            if self.tx_free_len < self.tx_free.len() {
                self.tx_free[self.tx_free_len] = addr;
                self.tx_free_len += 1;
            }
        }
        if n > 0 {
            self.comp.release();
        }
    }

    /// Publishes the transmit ring and makes the kernel send: in copy mode
    /// `sendto` transmits (32 descriptors a call), so it is repeated until
    /// the ring is consumed; in zero-copy mode it only wakes the driver,
    /// when the driver asks for it.
    fn kick(&mut self) {
        self.tx.publish();
        let mut last = u32::MAX;
        for _ in 0..MAX_KICKS {
            let pending = self.tx.pending();
            // Done, or the kernel took nothing since the last kick.
            if pending == 0 || pending == last || (self.zerocopy && !self.tx.needs_wakeup()) {
                break;
            }
            last = pending;
            // SAFETY: a zero-length send that only starts transmission.
            let rc = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    ptr::null(),
                    0,
                )
            };
            if rc < 0 {
                let e = io::Error::last_os_error();
                let again = matches!(
                    e.raw_os_error(),
                    Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::EINTR)
                );
                if !again {
                    break;
                }
            }
            if self.zerocopy {
                break;
            }
        }
        self.reap();
    }

    /// At least `n` free transmit frames, kicking the kernel if needed.
    fn reserve(&mut self, n: usize) -> bool {
        if self.tx_free_len >= n {
            return true;
        }
        self.reap();
        for _ in 0..4 {
            if self.tx_free_len >= n {
                return true;
            }
            self.kick();
        }
        self.tx_free_len >= n
    }

    /// The transport of [`BatchSocket::send_messages_via`]: messages
    /// `from..` of `batch`, each through the ring when its destination's
    /// next hop is known and its datagrams fit a frame, else through the
    /// kernel socket `fd`. Returns how many leading messages went (at
    /// least one), or the error of message `from`.
    fn transmit(
        &mut self,
        batch: &mut SendBatch<'_, '_>,
        fd: BorrowedFd<'_>,
        from: usize,
    ) -> io::Result<usize> {
        let mut k = from;
        let mut queued = false;
        let mut result = Ok(());
        while k < batch.len() {
            let total: usize = batch.parts(k).map(<[u8]>::len).sum();
            let seg = batch
                .segment_size(k)
                .map_or(total, usize::from)
                .clamp(1, usize::MAX);
            let route = match batch.dst(k) {
                // The kernel drops frames injected on the loopback towards
                // 127/8 as martians (they carry no route, unlike its own
                // loopback traffic): those go through the kernel socket.
                Some(SocketAddr::V4(dst)) if seg <= self.max_payload && !dst.ip().is_loopback() => {
                    self.neighbours.get(*dst.ip()).map(|dst_mac| Route {
                        src_mac: self.mac,
                        dst_mac,
                        src: self.local,
                        dst,
                    })
                }
                _ => None,
            };
            let Some(route) = route else {
                if let Err(e) = batch.send_one(fd, k) {
                    result = Err(e);
                    break;
                }
                self.stats.kernel_sends += 1;
                k += 1;
                continue;
            };
            let count = total.div_ceil(seg).max(1);
            if !self.reserve(count) {
                // No free frame: the kernel socket sends it instead.
                self.stats.tx_no_frame += count as u64;
                if let Err(e) = batch.send_one(fd, k) {
                    result = Err(e);
                    break;
                }
                self.stats.kernel_sends += 1;
                k += 1;
                continue;
            }
            let mut parts = batch.parts(k);
            let mut cur: &[u8] = &[];
            let mut left = total;
            for _ in 0..count {
                let len = seg.min(left);
                self.ip_id = self.ip_id.wrapping_add(1);
                let id = self.ip_id;
                self.tx_free_len -= 1;
                let addr = self.tx_free[self.tx_free_len];
                let frame = self.frame_mut(addr);
                let mut w = 0;
                while w < len {
                    if cur.is_empty() {
                        match parts.next() {
                            Some(p) => cur = p,
                            None => break,
                        }
                    }
                    let c = (len - w).min(cur.len());
                    frame[HEADERS + w..HEADERS + w + c].copy_from_slice(&cur[..c]);
                    cur = &cur[c..];
                    w += c;
                }
                let n = ether::write_headers(frame, &route, id, len);
                self.tx.push(desc(addr, n));
                left -= len;
            }
            self.stats.tx_frames += count as u64;
            queued = true;
            k += 1;
        }
        if queued {
            self.kick();
        }
        match result {
            Err(e) if k == from => Err(e),
            _ => Ok(k - from),
        }
    }
}
