//! End to end through a real worker, with GSO/GRO on and off: every packet a
//! publisher sends reaches every subscriber once, in order, decryptable with
//! the subscriber's key, with its payload intact — including packets of
//! mixed sizes, which break the worker's GSO trains. Each case runs over
//! the three I/O backends: `recvmmsg`/`sendmmsg` and io_uring on loopback,
//! AF_XDP over a veth pair into a network namespace (the clients' side).
//! One more case forges frames on that link: AF_XDP learns a next-hop MAC
//! only from datagrams the router accepted.

mod common;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use packet_path::backend::XdpProgram;
use packet_path::io::{BatchSocket, GRO_BUFFER_BYTES, RecvMeta, SocketOptions, Transmit};
use packet_path::{IoBackend, Node, NodeConfig, PathCounter, PathGauge, WorkerHandle};
use sfu_core::router::{
    Command, Counter, EndpointConfig, EndpointId, MediaKind, Role, RoomId, Subscription,
    TrackConfig,
};
use sfu_core::srtp::{Profile, SrtpConfig, SrtpContext};
use sfu_core::wire::rtp::{RtpHeader, RtpPacket, write_header};

const PACKETS: u64 = 3000;
const SUBSCRIBERS: usize = 3;
const SSRC: u32 = 0xabcd;

fn master(profile: Profile, seed: u8) -> Vec<u8> {
    (0..profile.key_len() + profile.salt_len())
        .map(|i| seed.wrapping_mul(13).wrapping_add(i as u8))
        .collect()
}

fn context(profile: Profile, m: &[u8]) -> SrtpContext {
    let (key, salt) = m.split_at(profile.key_len());
    SrtpContext::new(profile, key, salt, SrtpConfig::default()).unwrap()
}

/// Payload of packet `n`: its number, then a pattern; every 7th is short.
fn payload(n: u64) -> Vec<u8> {
    let len = if n % 7 == 3 { 300 } else { 1100 };
    let mut p: Vec<u8> = (0..len).map(|i| (i as u64 * 5 + n) as u8).collect();
    p[..8].copy_from_slice(&n.to_be_bytes());
    p
}

/// Packet `n` of the publisher's stream (sequence number `n + seq_offset`,
/// wrapping), protected with `tx`.
fn srtp_packet(tx: &mut SrtpContext, n: u64, seq_offset: u64) -> Vec<u8> {
    let mut buf = vec![0u8; 1500];
    let h = RtpHeader {
        marker: false,
        payload_type: 100,
        sequence_number: (n + seq_offset) as u16,
        timestamp: n as u32 * 3000,
        ssrc: SSRC,
    };
    let hl = write_header(&mut buf, &h, &[]).unwrap();
    let p = payload(n);
    buf[hl..hl + p.len()].copy_from_slice(&p);
    let len = tx.protect_rtp(&mut buf, hl + p.len()).unwrap();
    buf.truncate(len);
    buf
}

/// Room 1 with publisher 1 at `publisher` and subscribers 10, 11, ... at
/// the `subs`' addresses.
fn join_room(w: &WorkerHandle, profile: Profile, publisher: SocketAddr, subs: &[BatchSocket]) {
    w.request(Command::CreateRoom(RoomId(1))).unwrap();
    add_endpoint(w, profile, 1, Role::Publish, publisher);
    for (i, s) in subs.iter().enumerate() {
        add_endpoint(
            w,
            profile,
            10 + i as u64,
            Role::Subscribe,
            s.local_addr().unwrap(),
        );
    }
}

fn add_endpoint(w: &WorkerHandle, profile: Profile, id: u64, role: Role, remote: SocketAddr) {
    let tracks = match role {
        Role::Publish => vec![TrackConfig {
            kind: MediaKind::Video,
            ssrc: SSRC,
            payload_type: 100,
            rtx: None,
            codec: sfu_core::codec::Codec::Vp8,
            layer_of: None,
            red_payload_type: None,
            source: sfu_core::router::TrackSource::Camera,
        }],
        _ => Vec::new(),
    };
    w.request(Command::AddEndpoint(Box::new(EndpointConfig {
        id: EndpointId(id),
        room: RoomId(1),
        role,
        profile,
        remote_master: master(profile, id as u8),
        local_master: master(profile, id as u8 + 100),
        tracks,
        remote: Some(remote),
        subscription: Subscription::All,
        rtcp_ssrc: None,
        red_payload_type: None,
        rtx_payload_types: Default::default(),
        twcc_send_extension: None,
        participant: None,
        audio_level_extension: None,
    })))
    .unwrap();
}

/// The worker runs the backend asked for: io_uring really runs (no
/// silent fallback; a host that disables io_uring fails the test and says
/// so), and the gauge says so.
fn assert_backend(w: &WorkerHandle, io: IoBackend) {
    let (name, reason) = w.io_backend();
    match io {
        IoBackend::Uring => assert_eq!(
            (name, reason.as_deref()),
            ("io_uring", None),
            "the io_uring backend did not run; kernel.io_uring_disabled = {:?}",
            std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        ),
        IoBackend::Xdp => assert_eq!(
            (name, reason.as_deref()),
            ("af_xdp", None),
            "the AF_XDP backend did not run"
        ),
        _ => assert_eq!((name, reason.as_deref()), ("socket", None)),
    }
    assert_eq!(w.stats().gauge(PathGauge::IoUring) != 0, name == "io_uring");
    // The kernel here (6.x) has the multishot receive: it must run.
    assert_eq!(
        w.stats().gauge(PathGauge::IoUringMultishot) != 0,
        name == "io_uring"
    );
    assert_eq!(w.stats().gauge(PathGauge::IoAfXdp) != 0, name == "af_xdp");
}

fn forward(profile: Profile, gso: bool, gro: bool) {
    for io in [IoBackend::Socket, IoBackend::Uring, IoBackend::Xdp] {
        forward_over(io, profile, gso, gro, false);
    }
}

/// AF_XDP on the embedded defaults' loopback address (generic XDP: the
/// loopback has no driver mode), in a namespace of its own so that no
/// other test's program is on that loopback.
#[test]
fn forwards_over_af_xdp_on_loopback() {
    forward_over(IoBackend::Xdp, Profile::AeadAes128Gcm, true, true, true);
}

fn forward_over(io: IoBackend, profile: Profile, gso: bool, gro: bool, loopback_ns: bool) {
    // AF_XDP needs a fixed port, and an interface of its own: the host end
    // of a veth pair (native XDP), or a namespace's own loopback.
    let lo_ns = loopback_ns.then(common::netns::LoopbackNs::new);
    let veth = (io == IoBackend::Xdp && !loopback_ns).then(|| common::netns::VethPair::new(1));
    let (bind, base_port) = match (&veth, &lo_ns) {
        (Some(v), _) => (IpAddr::V4(v.host_ip), 7882),
        (None, Some(_)) => (IpAddr::from([127, 0, 0, 1]), 7882),
        (None, None) => (IpAddr::from([127, 0, 0, 1]), 0),
    };
    let start = || {
        Node::start(NodeConfig {
            workers: 1,
            bind,
            base_port,
            gso,
            gro,
            io,
            ..NodeConfig::default()
        })
        .unwrap()
    };
    let node = match &lo_ns {
        Some(ns) => common::netns::in_namespace(&ns.ns, start),
        None => start(),
    };
    let w = node.workers()[0].clone();
    assert_backend(&w, io);
    let opts = SocketOptions {
        gso,
        gro,
        buffer_bytes: 16 << 20,
        read_timeout: Some(Duration::from_millis(100)),
        ..SocketOptions::default()
    };
    let make = || {
        let local = match &veth {
            Some(v) => SocketAddr::from((v.peer_ip, 0)),
            None => "127.0.0.1:0".parse().unwrap(),
        };
        let publisher = BatchSocket::bind(local, 32, &opts).unwrap();
        let subs: Vec<BatchSocket> = (0..SUBSCRIBERS)
            .map(|_| BatchSocket::bind(local, 32, &opts).unwrap())
            .collect();
        (publisher, subs)
    };
    let (mut publisher, mut subs) = match (&veth, &lo_ns) {
        (Some(v), _) => v.in_peer(make),
        (None, Some(ns)) => common::netns::in_namespace(&ns.ns, make),
        (None, None) => make(),
    };
    join_room(&w, profile, publisher.local_addr().unwrap(), &subs);

    // Publish in bursts of 30 single-datagram transmits; the sequence
    // number wraps mid-run.
    let mut tx = context(profile, &master(profile, 1));
    let packets: Vec<Vec<u8>> = (0..PACKETS)
        .map(|n| srtp_packet(&mut tx, n, 60_000))
        .collect();
    let media = w.local_addr();
    for burst in packets.chunks(30) {
        let transmits: Vec<Transmit<'_>> = burst
            .iter()
            .map(|p| Transmit {
                dst: media,
                contents: p,
                segment_size: None,
            })
            .collect();
        assert_eq!(publisher.send(&transmits).unwrap(), transmits.len());
        // Stay well inside the socket buffers.
        std::thread::sleep(Duration::from_micros(300));
    }

    let mut storage = vec![0u8; 8 * GRO_BUFFER_BYTES];
    let mut meta = [RecvMeta::default(); 8];
    for (i, s) in subs.iter_mut().enumerate() {
        let mut rx = context(profile, &master(profile, 10 + i as u8 + 100));
        let mut next = 0u64;
        let mut last_seq: Option<u16> = None;
        let deadline = Instant::now() + Duration::from_secs(5);
        while next < PACKETS && Instant::now() < deadline {
            let mut bufs: Vec<&mut [u8]> = storage.chunks_mut(GRO_BUFFER_BYTES).collect();
            let n = match s.recv(&mut bufs, &mut meta) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("{e}"),
            };
            for (m, b) in meta[..n].iter().zip(&bufs) {
                if !gro {
                    assert_eq!(m.stride, m.len);
                }
                for d in m.datagrams(b) {
                    let mut d = d.to_vec();
                    let len = rx
                        .unprotect_rtp(&mut d)
                        .expect("decrypts with the subscriber's key");
                    let p = RtpPacket::new_checked(&d[..len]).unwrap();
                    assert_eq!(p.payload(), &payload(next)[..], "sub {i} packet {next}");
                    if let Some(prev) = last_seq {
                        assert_eq!(p.sequence_number(), prev.wrapping_add(1));
                    }
                    last_seq = Some(p.sequence_number());
                    next += 1;
                }
            }
        }
        assert_eq!(next, PACKETS, "{io:?}: subscriber {i} got every packet");
    }
    let st = w.stats();
    assert_eq!(
        (
            (st.gauge(PathGauge::GsoEnabled) != 0),
            (st.gauge(PathGauge::GroEnabled) != 0)
        ),
        (gso, gro)
    );
    assert_eq!(st.get(Counter::RxPackets), PACKETS);
    assert_eq!(st.path(PathCounter::SendErrors), 0);
    if io == IoBackend::Xdp {
        // Through the rings, not the kernel socket beside them.
        let copies = PACKETS * SUBSCRIBERS as u64;
        assert_eq!(st.path(PathCounter::XdpRxFrames), PACKETS, "{st:?}");
        if loopback_ns {
            // Loopback destinations go through the kernel socket.
            // (in GSO trains: messages, not datagrams, are counted).
            assert!(st.path(PathCounter::XdpKernelSends) > 0, "{st:?}");
            assert_eq!(st.path(PathCounter::XdpTxFrames), 0, "{st:?}");
        } else {
            assert!(st.path(PathCounter::XdpTxFrames) >= copies, "{st:?}");
        }
        assert_eq!(st.path(PathCounter::XdpRxMalformed), 0);
        eprintln!("{}", common::xdp_summary(&st));
    }
    node.shutdown();
}

#[test]
fn forwards_in_order_with_gso_and_gro() {
    forward(Profile::AeadAes128Gcm, true, true);
}

#[test]
fn forwards_in_order_without_gso_or_gro() {
    forward(Profile::AeadAes128Gcm, false, false);
}

#[test]
fn forwards_aes_cm_hmac_sha1_80() {
    forward(Profile::Aes128CmHmacSha1_80, true, true);
}

/// AF_XDP learns a peer's next-hop MAC only from datagrams the router
/// accepted. The subscribers sit on an address of their own that never
/// sends, so the node reaches them through its kernel socket (the kernel
/// resolves their MAC). Between the publisher's bursts a forged frame
/// claims the subscribers' address from a MAC nobody has: had the node
/// learnt it, their media would leave the ring towards that MAC and be
/// lost. The forged frames come through the ring and are dropped.
#[test]
fn af_xdp_learns_next_hops_only_from_accepted_datagrams() {
    let profile = Profile::AeadAes128Gcm;
    let veth = common::netns::VethPair::new(1);
    let subs_ip = veth.add_peer_address();
    let node = Node::start(NodeConfig {
        workers: 1,
        bind: IpAddr::V4(veth.host_ip),
        base_port: 7882,
        io: IoBackend::Xdp,
        ..NodeConfig::default()
    })
    .unwrap();
    let w = node.workers()[0].clone();
    assert_backend(&w, IoBackend::Xdp);
    let opts = SocketOptions {
        read_timeout: Some(Duration::from_millis(100)),
        buffer_bytes: 16 << 20,
        ..SocketOptions::default()
    };
    let (mut publisher, mut subs, forger) = veth.in_peer(|| {
        let publisher = BatchSocket::bind(SocketAddr::from((veth.peer_ip, 0)), 32, &opts).unwrap();
        let subs: Vec<BatchSocket> = (0..2)
            .map(|_| BatchSocket::bind(SocketAddr::from((subs_ip, 0)), 32, &opts).unwrap())
            .collect();
        (publisher, subs, RawLink::open(&veth.peer_if))
    });
    join_room(&w, profile, publisher.local_addr().unwrap(), &subs);
    let node_mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", veth.host_if))
        .unwrap()
        .trim()
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect::<Vec<u8>>();
    const FORGED_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x66, 0x66];
    let media = w.local_addr();
    let mut tx = context(profile, &master(profile, 1));
    let mut forged = 0u64;
    const SENT: u64 = 600;
    for burst in 0..SENT / 20 {
        for n in burst * 20..(burst + 1) * 20 {
            let packet = srtp_packet(&mut tx, n, 0);
            let t = Transmit {
                dst: media,
                contents: &packet,
                segment_size: None,
            };
            assert_eq!(publisher.send(&[t]).unwrap(), 1);
        }
        for s in &subs {
            let SocketAddr::V4(from) = s.local_addr().unwrap() else {
                unreachable!("IPv4")
            };
            let SocketAddr::V4(to) = media else {
                unreachable!("IPv4")
            };
            forger.send(&udp_frame(&node_mac, &FORGED_MAC, from, to, &[0x80; 200]));
            forged += 1;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut storage = vec![0u8; 8 * GRO_BUFFER_BYTES];
    let mut meta = [RecvMeta::default(); 8];
    for (i, s) in subs.iter_mut().enumerate() {
        let mut got = 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        while got < SENT && Instant::now() < deadline {
            let mut bufs: Vec<&mut [u8]> = storage.chunks_mut(GRO_BUFFER_BYTES).collect();
            match s.recv(&mut bufs, &mut meta) {
                Ok(n) => got += meta[..n].iter().map(|m| m.segments() as u64).sum::<u64>(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, SENT, "subscriber {i} lost media to a forged MAC");
    }
    // The forged frames reached the node through the ring (the last ones
    // may still be in the worker's batch: wait for its counters), and were
    // dropped as what they are: RTP from a subscriber, for whom the node
    // knows no stream.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut st = w.stats();
    while st.get(Counter::RxPackets) < SENT + forged && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        st = w.stats();
    }
    assert_eq!(st.path(PathCounter::XdpRxFrames), SENT + forged, "{st:?}");
    assert_eq!(st.get(Counter::RxPackets), SENT + forged);
    let dropped: Vec<(&str, u64)> = st.drops.iter().copied().filter(|(_, n)| *n > 0).collect();
    eprintln!("forged frames dropped: {dropped:?}");
    assert_eq!(dropped, [("unknown_source", forged)]);
    // The subscribers' address was never learnt: the kernel socket sent
    // their copies.
    assert!(st.path(PathCounter::XdpKernelSends) > 0, "{st:?}");
    node.shutdown();
}

/// An `AF_PACKET` socket on one interface, for writing whole frames.
struct RawLink {
    fd: std::os::fd::OwnedFd,
    ifindex: i32,
}

impl RawLink {
    #[allow(unsafe_code)] // socket(2), if_nametoindex(3) and sendto(2).
    fn open(ifname: &str) -> Self {
        use std::os::fd::FromRawFd;
        let name = std::ffi::CString::new(ifname).unwrap();
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert_ne!(ifindex, 0, "no interface {ifname}");
        // SAFETY: plain socket(2).
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(raw >= 0, "AF_PACKET: {}", io::Error::last_os_error());
        Self {
            // SAFETY: a descriptor just opened, owned here alone.
            fd: unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) },
            ifindex: ifindex as i32,
        }
    }

    #[allow(unsafe_code)]
    fn send(&self, frame: &[u8]) {
        use std::os::fd::AsRawFd;
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_ifindex = self.ifindex;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: frame and address outlive the call; the lengths are theirs.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                std::ptr::from_ref(&to).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(n, frame.len() as isize, "{}", io::Error::last_os_error());
    }
}

/// An Ethernet/IPv4/UDP frame (IPv4 checksum set, UDP checksum 0).
fn udp_frame(
    dst_mac: &[u8],
    src_mac: &[u8],
    from: std::net::SocketAddrV4,
    to: std::net::SocketAddrV4,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(dst_mac);
    f.extend_from_slice(src_mac);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&from.ip().octets());
    ip[16..20].copy_from_slice(&to.ip().octets());
    let mut sum: u32 = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&from.port().to_be_bytes());
    f.extend_from_slice(&to.port().to_be_bytes());
    f.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// AF_XDP's set-up asks the kernel about its interface in the namespace
/// the node runs in, not through sysfs (which shows the namespace it was
/// mounted in): here the clients' end of a veth pair, which this test's
/// own namespace does not have, with 2 queues, MTU 1400 and a set MAC.
#[test]
fn af_xdp_reads_its_interface_in_the_namespace_it_runs_in() {
    let veth = common::netns::VethPair::new(2);
    let (ns, dev) = (veth.ns.as_str(), veth.peer_if.as_str());
    common::netns::ip(&["-n", ns, "link", "set", dev, "mtu", "1400"]);
    common::netns::ip(&["-n", ns, "link", "set", dev, "address", "02:11:22:33:44:55"]);
    assert!(
        !std::path::Path::new(&format!("/sys/class/net/{dev}")).exists(),
        "this namespace's sysfs must not show {dev}"
    );
    let program = veth
        .in_peer(|| XdpProgram::attach(SocketAddr::from((veth.peer_ip, 7890)), 2))
        .expect("the XDP program attaches in the namespace");
    assert_eq!(program.interface(), dev);
    assert_eq!(program.queues(), 2);
    assert_eq!(program.max_payload(), 1400 - 28);
    assert_eq!(program.mac(), [0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
}
