//! What the AF_XDP backend does without the kernel's network stack, in
//! safe code: Ethernet/IPv4/UDP frames read and written (with correct IPv4
//! header and UDP checksums), the table of next-hop MAC addresses learnt
//! from ingress frames, and the XDP program, as eBPF instructions, that
//! steers the node's media datagrams to the AF_XDP sockets.
//!
//! Nothing here allocates after construction; every function on frames
//! takes hostile input and returns an error rather than panic.

use std::net::{Ipv4Addr, SocketAddrV4};

/// Ethernet header (no VLAN tag).
pub(crate) const ETH_HLEN: usize = 14;
/// IPv4 header without options.
pub(crate) const IPV4_HLEN: usize = 20;
/// UDP header.
pub(crate) const UDP_HLEN: usize = 8;
/// Everything in front of the UDP payload.
pub(crate) const HEADERS: usize = ETH_HLEN + IPV4_HLEN + UDP_HLEN;
const ETHERTYPE_IPV4: u16 = 0x0800;
const PROTO_UDP: u8 = 17;

/// A MAC address.
pub(crate) type Mac = [u8; 6];

/// Why a received frame was not handed to the router (the XDP program
/// only steers well-formed IPv4/UDP frames for the node's ports, so these
/// count frames that lie about their lengths or checksums).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// Shorter than its headers, or than the lengths they claim.
    Truncated,
    /// Not IPv4/UDP without options and fragments.
    NotUdp,
    /// IPv4 header checksum wrong.
    BadChecksum,
    /// UDP length inconsistent with the IPv4 total length.
    BadLength,
}

/// An IPv4/UDP frame's addresses and where its payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UdpFrame {
    /// The Ethernet source: the peer, or the router in front of it.
    pub(crate) src_mac: Mac,
    pub(crate) src: SocketAddrV4,
    pub(crate) dst: SocketAddrV4,
    /// Payload offset in the frame (always [`HEADERS`]).
    pub(crate) offset: usize,
    pub(crate) len: usize,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Parses an Ethernet/IPv4/UDP frame. The IPv4 header checksum is
/// verified; the UDP checksum is not (every payload the router accepts is
/// authenticated: SRTP/SRTCP tags, STUN message integrity, DTLS records).
pub(crate) fn parse(frame: &[u8]) -> Result<UdpFrame, FrameError> {
    if frame.len() < HEADERS {
        return Err(FrameError::Truncated);
    }
    let ip = &frame[ETH_HLEN..];
    if be16(frame, 12) != ETHERTYPE_IPV4
        || ip[0] != 0x45
        || ip[9] != PROTO_UDP
        || be16(ip, 6) & 0x3fff != 0
    {
        return Err(FrameError::NotUdp);
    }
    if fold(sum(&ip[..IPV4_HLEN], 0)) != 0xffff {
        return Err(FrameError::BadChecksum);
    }
    let total = usize::from(be16(ip, 2));
    if total < IPV4_HLEN + UDP_HLEN {
        return Err(FrameError::BadLength);
    }
    if ETH_HLEN + total > frame.len() {
        return Err(FrameError::Truncated);
    }
    let udp = &ip[IPV4_HLEN..];
    let udp_len = usize::from(be16(udp, 4));
    if udp_len < UDP_HLEN || udp_len > total - IPV4_HLEN {
        return Err(FrameError::BadLength);
    }
    let addr = |at: usize| Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3]);
    let mut src_mac = [0; 6];
    src_mac.copy_from_slice(&frame[6..12]);
    Ok(UdpFrame {
        src_mac,
        src: SocketAddrV4::new(addr(12), be16(udp, 0)),
        dst: SocketAddrV4::new(addr(16), be16(udp, 2)),
        offset: HEADERS,
        len: udp_len - UDP_HLEN,
    })
}

/// The addresses of a frame being written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Route {
    pub(crate) src_mac: Mac,
    pub(crate) dst_mac: Mac,
    pub(crate) src: SocketAddrV4,
    pub(crate) dst: SocketAddrV4,
}

/// Writes the Ethernet, IPv4 and UDP headers in front of the `len`-byte
/// payload already at `frame[HEADERS..HEADERS + len]`, with both checksums.
/// Returns the frame length. `frame` must hold `HEADERS + len` bytes and
/// `len` must fit a datagram (the caller checks both).
pub(crate) fn write_headers(frame: &mut [u8], route: &Route, ip_id: u16, len: usize) -> usize {
    let udp_len = (UDP_HLEN + len) as u16;
    let total = IPV4_HLEN as u16 + udp_len;
    frame[0..6].copy_from_slice(&route.dst_mac);
    frame[6..12].copy_from_slice(&route.src_mac);
    frame[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    let src_ip = route.src.ip().octets();
    let dst_ip = route.dst.ip().octets();
    {
        let ip = &mut frame[ETH_HLEN..ETH_HLEN + IPV4_HLEN];
        ip[0] = 0x45;
        ip[1] = 0;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[4..6].copy_from_slice(&ip_id.to_be_bytes());
        // Don't fragment, as the kernel sends UDP with path MTU discovery.
        ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
        ip[8] = 64;
        ip[9] = PROTO_UDP;
        ip[10..12].copy_from_slice(&[0, 0]);
        ip[12..16].copy_from_slice(&src_ip);
        ip[16..20].copy_from_slice(&dst_ip);
        let c = !fold(sum(ip, 0));
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    }
    let u = ETH_HLEN + IPV4_HLEN;
    frame[u..u + 2].copy_from_slice(&route.src.port().to_be_bytes());
    frame[u + 2..u + 4].copy_from_slice(&route.dst.port().to_be_bytes());
    frame[u + 4..u + 6].copy_from_slice(&udp_len.to_be_bytes());
    frame[u + 6..u + 8].copy_from_slice(&[0, 0]);
    // Pseudo-header: addresses, protocol, UDP length.
    let mut acc = sum(&src_ip, 0);
    acc = sum(&dst_ip, acc);
    acc += u64::from(PROTO_UDP) + u64::from(udp_len);
    acc = sum(&frame[u..u + UDP_HLEN + len], acc);
    let c = match !fold(acc) {
        // 0 means "no checksum" in UDP over IPv4: send its complement.
        0 => 0xffff,
        c => c,
    };
    frame[u + 6..u + 8].copy_from_slice(&c.to_be_bytes());
    HEADERS + len
}

/// Adds `data`, as big-endian 16-bit words (an odd last byte padded with
/// zero), to the one's-complement accumulator `acc`.
pub(crate) fn sum(data: &[u8], mut acc: u64) -> u64 {
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        acc += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds an accumulator to the 16-bit one's-complement sum.
pub(crate) fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Next-hop MAC addresses by peer IPv4 address, learnt from the source of
/// ingress frames whose datagram the router accepted (an ICE-lite node
/// only ever answers: every peer it sends to has sent to it first,
/// through the next hop that reaches it). Only accepted datagrams teach
/// it, so a forged frame claiming a peer's address from another MAC
/// cannot divert that peer's media. A fixed open-addressing table
/// allocated once: many peers in one neighbourhood overwrite entries
/// (their peers then go through the kernel socket until they send
/// again), it never grows.
#[derive(Debug)]
pub(crate) struct Neighbours {
    slots: Box<[Slot]>,
    mask: usize,
    /// 32 - log2(slots): the hash's top bits pick the home slot.
    shift: u32,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// 0: empty (0.0.0.0 is never a peer).
    ip: u32,
    mac: Mac,
}

/// Slots probed from an address's home slot.
const PROBES: usize = 8;

impl Neighbours {
    /// A table of `capacity` (rounded up to a power of two) entries.
    pub(crate) fn new(capacity: usize) -> Self {
        let n = capacity.clamp(PROBES, 1 << 24).next_power_of_two();
        Self {
            slots: vec![Slot::default(); n].into_boxed_slice(),
            mask: n - 1,
            shift: 32 - n.trailing_zeros(),
        }
    }

    fn home(&self, ip: u32) -> usize {
        // Fibonacci hashing, top bits: every address bit reaches the slot.
        (ip.wrapping_mul(0x9e37_79b9) >> self.shift) as usize & self.mask
    }

    /// The MAC that reaches `ip`, if learnt.
    pub(crate) fn get(&self, ip: Ipv4Addr) -> Option<Mac> {
        let ip = u32::from(ip);
        if ip == 0 {
            // 0 marks an empty slot: never a peer.
            return None;
        }
        let home = self.home(ip);
        (0..PROBES)
            .map(|k| &self.slots[(home + k) & self.mask])
            .find(|s| s.ip == ip)
            .map(|s| s.mac)
    }

    /// Records that `ip` is reached through `mac`.
    pub(crate) fn learn(&mut self, ip: Ipv4Addr, mac: Mac) {
        let ip = u32::from(ip);
        if ip == 0 {
            return;
        }
        let home = self.home(ip);
        let mut free = None;
        for k in 0..PROBES {
            let i = (home + k) & self.mask;
            let s = &mut self.slots[i];
            if s.ip == ip {
                s.mac = mac;
                return;
            }
            if s.ip == 0 && free.is_none() {
                free = Some(i);
            }
        }
        // Full neighbourhood: the home slot gives way.
        self.slots[free.unwrap_or(home)] = Slot { ip, mac };
    }
}

// ------------------------------------------------------------ XDP program

/// The longest frame an AF_XDP frame of 2048 bytes holds after the
/// kernel's 256 bytes of headroom: longer ones go to the kernel's stack
/// (the ring would drop them).
pub(crate) const MAX_FRAME: usize = 2048 - 256;

/// `XDP_PASS`: hand the frame to the kernel's stack.
pub(crate) const XDP_PASS: i32 = 2;
/// `bpf_redirect_map` helper number.
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
/// `BPF_PSEUDO_MAP_FD`: a 64-bit immediate that the kernel turns into the map.
const PSEUDO_MAP_FD: u8 = 1;

/// One eBPF instruction, as the kernel's `struct bpf_insn` in a `u64`
/// (little-endian field order: code, dst|src<<4, off, imm).
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | u64::from(dst | (src << 4)) << 8
        | u64::from(off as u16) << 16
        | u64::from(imm as u32) << 32
}

/// The program: steer a frame to the AF_XDP socket of its receive queue
/// (the map's key) if it is IPv4/UDP without options or fragments, to
/// `addr` (any address when `None`), to port `base_port + queue`, that is
/// the port of the worker bound to that queue; pass everything else (ARP,
/// the control API, SSH, IPv6, a media datagram on another worker's
/// queue) to the kernel, where the workers' own UDP sockets take what is
/// theirs. A queue without a socket in the map passes too
/// (`bpf_redirect_map`'s default action).
pub(crate) fn program(map_fd: i32, addr: Option<Ipv4Addr>, base_port: u16) -> Vec<u64> {
    // Opcodes (class | op | source).
    const LDXW: u8 = 0x61;
    const LDXH: u8 = 0x69;
    const LDXB: u8 = 0x71;
    const MOV64X: u8 = 0xbf;
    const MOV64K: u8 = 0xb7;
    const ADD64K: u8 = 0x07;
    const SUB64K: u8 = 0x17;
    const AND64K: u8 = 0x57;
    const BE: u8 = 0xdc;
    const JGTX: u8 = 0x2d;
    const JNEK: u8 = 0x55;
    const JNEX: u8 = 0x5d;
    const JNE32K: u8 = 0x56;
    const LDDW: u8 = 0x18;
    const CALL: u8 = 0x85;
    const EXIT: u8 = 0x95;
    // Jumps to PASS are patched once its index is known.
    let mut p: Vec<(u8, u8, u8, bool, i32)> = Vec::with_capacity(40);
    let jump = |p: &mut Vec<(u8, u8, u8, bool, i32)>, code, dst, src, imm| {
        p.push((code, dst, src, true, imm));
    };
    let op = |p: &mut Vec<(u8, u8, u8, bool, i32)>, code, dst, src, imm| {
        p.push((code, dst, src, false, imm));
    };
    // Loads carry their offset in `imm` here; see the encoding below.
    op(&mut p, MOV64X, 6, 1, 0); // r6 = ctx
    op(&mut p, LDXW, 2, 6, 0); // r2 = ctx->data
    op(&mut p, LDXW, 3, 6, 4); // r3 = ctx->data_end
    op(&mut p, MOV64X, 4, 2, 0); // r4 = data
    op(&mut p, ADD64K, 4, 0, HEADERS as i32); // r4 += 42
    jump(&mut p, JGTX, 4, 3, 0); // data + 42 > data_end: pass
    op(&mut p, MOV64X, 4, 2, 0); // r4 = data
    op(&mut p, ADD64K, 4, 0, MAX_FRAME as i32);
    jump(&mut p, JGTX, 3, 4, 0); // longer than a UMEM frame holds: pass
    op(&mut p, LDXH, 5, 2, 12); // ethertype (network order)
    jump(&mut p, JNEK, 5, 0, i32::from(ETHERTYPE_IPV4.swap_bytes()));
    op(&mut p, LDXB, 5, 2, 14); // version, IHL
    jump(&mut p, JNEK, 5, 0, 0x45);
    op(&mut p, LDXB, 5, 2, 23); // protocol
    jump(&mut p, JNEK, 5, 0, i32::from(PROTO_UDP));
    op(&mut p, LDXH, 5, 2, 20); // flags, fragment offset
    op(&mut p, AND64K, 5, 0, i32::from(0x3fffu16.swap_bytes()));
    jump(&mut p, JNEK, 5, 0, 0);
    if let Some(a) = addr {
        op(&mut p, LDXW, 5, 2, 30); // destination address
        jump(&mut p, JNE32K, 5, 0, i32::from_le_bytes(a.octets()));
    }
    op(&mut p, LDXH, 5, 2, 36); // destination port
    op(&mut p, BE, 5, 0, 16); // to host order
    op(&mut p, SUB64K, 5, 0, i32::from(base_port));
    op(&mut p, LDXW, 7, 6, 16); // r7 = ctx->rx_queue_index
    jump(&mut p, JNEX, 5, 7, 0); // not this queue's worker: pass
    op(&mut p, LDDW, 1, PSEUDO_MAP_FD, map_fd); // r1 = map (two slots)
    op(&mut p, 0, 0, 0, 0);
    op(&mut p, MOV64X, 2, 7, 0); // key = queue
    op(&mut p, MOV64K, 3, 0, XDP_PASS); // flags: action if no socket
    op(&mut p, CALL, 0, 0, BPF_FUNC_REDIRECT_MAP);
    op(&mut p, EXIT, 0, 0, 0);
    let pass = p.len();
    op(&mut p, MOV64K, 0, 0, XDP_PASS);
    op(&mut p, EXIT, 0, 0, 0);
    p.iter()
        .enumerate()
        .map(|(i, &(code, dst, src, is_jump, imm))| {
            let is_load = matches!(code, LDXW | LDXH | LDXB);
            if is_jump {
                let off = (pass - i - 1) as i16;
                insn(code, dst, src, off, imm)
            } else if is_load {
                insn(code, dst, src, imm as i16, 0)
            } else {
                insn(code, dst, src, 0, imm)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route() -> Route {
        Route {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src: "10.201.0.1:7882".parse().unwrap(),
            dst: "10.201.0.2:40000".parse().unwrap(),
        }
    }

    /// The reference: RFC 1071 over 16-bit words, byte by byte.
    fn reference(data: &[u8]) -> u16 {
        let mut acc = 0u32;
        for c in data.chunks(2) {
            let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
            acc += u32::from(w);
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn sum_matches_rfc1071_at_every_length() {
        let data: Vec<u8> = (0..1500u32).map(|i| (i * 7919 % 251) as u8).collect();
        for len in [0, 1, 2, 3, 4, 5, 7, 8, 19, 20, 21, 1199, 1200, 1500] {
            assert_eq!(fold(sum(&data[..len], 0)), reference(&data[..len]), "{len}");
        }
    }

    #[test]
    fn written_frames_parse_back_with_valid_checksums() {
        for len in [0usize, 1, 13, 1200, 1458] {
            let mut frame = vec![0u8; HEADERS + len];
            for (i, b) in frame[HEADERS..].iter_mut().enumerate() {
                *b = i as u8;
            }
            let n = write_headers(&mut frame, &route(), 77, len);
            assert_eq!(n, frame.len());
            let f = parse(&frame).unwrap();
            assert_eq!(f.src, route().src);
            assert_eq!(f.dst, route().dst);
            assert_eq!(f.src_mac, route().src_mac);
            assert_eq!((f.offset, f.len), (HEADERS, len));
            // The UDP checksum over the pseudo-header verifies to 0xffff.
            let udp = &frame[ETH_HLEN + IPV4_HLEN..];
            let mut acc = sum(&[10, 201, 0, 1, 10, 201, 0, 2], 0);
            acc += 17 + (UDP_HLEN + len) as u64;
            assert_eq!(fold(sum(udp, acc)), 0xffff, "{len}");
        }
    }

    /// The worked example of the IPv4 header checksum (RFC 1071 style,
    /// as printed in textbooks): 45 00 00 3c 1c 46 40 00 40 06 [b1 e6]
    /// ac 10 0a 63 ac 10 0a 0c.
    #[test]
    fn header_checksum_matches_the_textbook_example() {
        let mut ip = [
            0x45, 0, 0, 0x3c, 0x1c, 0x46, 0x40, 0, 0x40, 6, 0, 0, 0xac, 0x10, 0x0a, 0x63, 0xac,
            0x10, 0x0a, 0x0c,
        ];
        assert_eq!(!fold(sum(&ip, 0)), 0xb1e6);
        ip[10..12].copy_from_slice(&0xb1e6u16.to_be_bytes());
        assert_eq!(fold(sum(&ip, 0)), 0xffff);
    }

    #[test]
    fn hostile_frames_are_errors_not_panics() {
        let mut good = vec![0u8; HEADERS + 100];
        write_headers(&mut good, &route(), 1, 100);
        assert!(parse(&good).is_ok());
        for cut in 0..good.len() {
            let r = parse(&good[..cut]);
            assert!(r.is_err(), "cut at {cut}");
        }
        let mutate = |at: usize, v: u8| {
            let mut f = good.clone();
            f[at] = v;
            parse(&f)
        };
        assert_eq!(mutate(12, 0x86), Err(FrameError::NotUdp)); // IPv6
        assert_eq!(mutate(14, 0x46), Err(FrameError::NotUdp)); // options
        assert_eq!(mutate(23, 6), Err(FrameError::NotUdp)); // TCP
        assert_eq!(mutate(20, 0x20), Err(FrameError::NotUdp)); // more fragments
        assert_eq!(mutate(22, 1), Err(FrameError::BadChecksum)); // TTL changed
        // A UDP length beyond the IP total.
        assert_eq!(mutate(38, 0xff), Err(FrameError::BadLength));
        // Fuzz: random bytes never panic.
        let mut x = 0x1234_5678u32;
        for _ in 0..20_000 {
            let mut f = good.clone();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let at = x as usize % f.len();
                f[at] = (x >> 8) as u8;
            }
            let _ = parse(&f);
        }
    }

    #[test]
    fn neighbours_learn_overwrite_and_stay_bounded() {
        let mut t = Neighbours::new(64);
        let a = Ipv4Addr::new(10, 0, 0, 1);
        assert_eq!(t.get(a), None);
        t.learn(a, [1; 6]);
        assert_eq!(t.get(a), Some([1; 6]));
        t.learn(a, [2; 6]);
        assert_eq!(t.get(a), Some([2; 6]));
        t.learn(Ipv4Addr::UNSPECIFIED, [3; 6]);
        assert_eq!(t.get(Ipv4Addr::UNSPECIFIED), None);
        // A flood of sources: the table keeps its size, the newest are found.
        for i in 0..100_000u32 {
            t.learn(Ipv4Addr::from(0x0b00_0000 + i), [4; 6]);
            assert_eq!(t.get(Ipv4Addr::from(0x0b00_0000 + i)), Some([4; 6]));
        }
        assert_eq!(t.slots.len(), 64);
    }

    #[test]
    fn program_jumps_land_on_pass_and_the_map_is_loaded() {
        let p = program(5, Some(Ipv4Addr::new(10, 201, 0, 1)), 7882);
        let pass = p.len() - 2;
        assert_eq!(p[pass] & 0xff, 0xb7);
        assert_eq!((p[pass] >> 32) as i32, XDP_PASS);
        assert_eq!(p[pass + 1] & 0xff, 0x95);
        for (i, &x) in p.iter().enumerate() {
            let code = (x & 0xff) as u8;
            if matches!(code, 0x2d | 0x55 | 0x5d | 0x56) {
                let off = ((x >> 16) & 0xffff) as u16 as i16;
                assert_eq!(i as i64 + 1 + i64::from(off), pass as i64, "insn {i}");
            }
            if code == 0x18 {
                assert_eq!((x >> 12) & 0xf, 1, "pseudo map fd");
                assert_eq!((x >> 32) as i32, 5);
            }
        }
        assert_eq!(program(5, None, 7882).len(), p.len() - 2);
        const { assert!(cfg!(target_endian = "little"), "the constants assume it") };
    }
}
