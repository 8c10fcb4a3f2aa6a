//! One batch through each packet I/O backend over loopback: 64 datagrams
//! of 1200 bytes sent and received, either as 64 plain messages (no GSO,
//! no GRO: a message per datagram, as to 64 subscribers) or as 8 GSO
//! trains of 8 to one destination (received as GRO buffers). The socket
//! backend does it with one `sendmmsg` and `recvmmsg` calls; the io_uring
//! backend with linked `SendMsg` operations (one submit) and its multishot
//! `RecvMsg` into provided buffers (`io_uring`) or linked `RecvMsg`
//! operations, one submit (`io_uring_linked_recv`).
//! Throughput is in datagrams, so criterion's time per element is the
//! kernel path's cost per datagram (send and receive, both on this core).
//!
//! `io_veth_batch` runs every backend, AF_XDP included, on the host end of
//! a veth pair (AF_XDP needs an interface of its own: native XDP on veth,
//! copy mode) against a socket peer in a network namespace at the other
//! end: the backend sends 64 plain datagrams of 1200 bytes, the peer
//! receives them and sends 64 back, which the backend receives. Needs root
//! (`ip netns`, XDP); criterion's time per element is per datagram, both
//! directions and both ends (the peer's cost is the same for every
//! backend).
//!
//! `cargo bench -p bench --bench io`

use std::hint::black_box;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use packet_path::backend::XdpProgram;
use packet_path::io::{BatchSocket, GRO_BUFFER_BYTES, RecvMeta, SocketOptions, Transmit};
use packet_path::{Backend, IoBackend};

const DATAGRAMS: usize = 64;
const LEN: usize = 1200;

fn backend(io: IoBackend, offload: bool) -> Backend {
    let opts = SocketOptions {
        gso: offload,
        gro: offload,
        read_timeout: Some(Duration::ZERO),
        ..SocketOptions::default()
    };
    let socket = BatchSocket::bind("127.0.0.1:0".parse().expect("address"), 64, &opts)
        .expect("a loopback socket");
    let (b, fallback) = Backend::new(socket, io);
    assert!(fallback.is_none(), "{io:?} fell back: {fallback:?}");
    b
}

/// The io_uring backend with linked `RecvMsg` receives instead of its
/// multishot receive.
fn linked(b: Backend) -> Backend {
    match b {
        Backend::Uring(u) => Backend::Uring(u.without_multishot()),
        other => other,
    }
}

fn batch(c: &mut Criterion) {
    let mut group = c.benchmark_group("io_batch");
    group.throughput(Throughput::Elements(DATAGRAMS as u64));
    let payload = vec![0x5au8; DATAGRAMS * LEN];
    for (io, name) in [
        (IoBackend::Socket, "socket"),
        (IoBackend::Uring, "io_uring"),
        (IoBackend::Uring, "io_uring_linked_recv"),
    ] {
        for offload in [false, true] {
            let mut tx = backend(io, offload);
            let mut rx = backend(io, offload);
            if name == "io_uring_linked_recv" {
                rx = linked(rx);
            } else if io == IoBackend::Uring {
                assert!(rx.uring().is_some_and(|u| u.multishot()));
            }
            let dst = rx.local_addr().expect("bound");
            let transmits: Vec<Transmit<'_>> = if offload {
                payload
                    .chunks(8 * LEN)
                    .map(|train| Transmit {
                        dst,
                        contents: train,
                        segment_size: Some(LEN),
                    })
                    .collect()
            } else {
                payload
                    .chunks(LEN)
                    .map(|d| Transmit {
                        dst,
                        contents: d,
                        segment_size: None,
                    })
                    .collect()
            };
            let mut storage = vec![0u8; 64 * GRO_BUFFER_BYTES];
            let mut meta = vec![RecvMeta::default(); 64];
            let label = if offload { "gso_gro_8x8" } else { "plain_64" };
            group.bench_function(BenchmarkId::new(name, label), |b| {
                b.iter(|| {
                    let mut sent = 0;
                    while sent < transmits.len() {
                        sent += tx.send(&transmits[sent..]).expect("send");
                    }
                    let mut got = 0;
                    while got < DATAGRAMS {
                        let mut bufs: Vec<&mut [u8]> =
                            storage.chunks_mut(GRO_BUFFER_BYTES).collect();
                        match rx.recv(&mut bufs, &mut meta) {
                            Ok(n) => {
                                got += meta[..n]
                                    .iter()
                                    .map(|m| {
                                        let stride = if m.stride == 0 { m.len } else { m.stride };
                                        m.len.div_ceil(stride.max(1))
                                    })
                                    .sum::<usize>();
                            }
                            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                            Err(e) => panic!("recv: {e}"),
                        }
                    }
                    black_box(got)
                });
            });
        }
    }
    group.finish();
}

/// The veth pair of `io_veth_batch`: host end `HOST` here, peer end
/// `PEER` in namespace `NS`. Removed on drop.
struct Veth;

const NS: &str = "sfubenchio";
const HOST_IF: &str = "sfubio0";
const PEER_IF: &str = "sfubio1";
const HOST: Ipv4Addr = Ipv4Addr::new(10, 211, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 211, 0, 2);

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("`ip` (iproute2) is needed for io_veth_batch: {e}"));
    assert!(
        out.status.success(),
        "ip {}: {} (io_veth_batch needs root for network namespaces and XDP)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

impl Veth {
    fn new() -> Self {
        drop(Veth);
        ip(&["netns", "add", NS]);
        ip(&[
            "link", "add", HOST_IF, "type", "veth", "peer", "name", PEER_IF,
        ]);
        ip(&["link", "set", PEER_IF, "netns", NS]);
        ip(&["addr", "add", "10.211.0.1/30", "dev", HOST_IF]);
        ip(&["link", "set", HOST_IF, "up"]);
        ip(&["-n", NS, "addr", "add", "10.211.0.2/30", "dev", PEER_IF]);
        ip(&["-n", NS, "link", "set", PEER_IF, "up"]);
        Veth
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", HOST_IF]).output();
        let _ = Command::new("ip").args(["netns", "del", NS]).output();
    }
}

fn socket_at(addr: SocketAddr) -> BatchSocket {
    let opts = SocketOptions {
        gso: false,
        gro: false,
        read_timeout: Some(Duration::ZERO),
        ..SocketOptions::default()
    };
    BatchSocket::bind(addr, 64, &opts).expect("a socket on the veth pair")
}

/// Receives until `want` datagrams have arrived.
fn recv_all(b: &mut Backend, storage: &mut [u8], meta: &mut [RecvMeta], want: usize) {
    let mut got = 0;
    while got < want {
        let mut bufs: Vec<&mut [u8]> = storage.chunks_mut(2048).collect();
        match b.recv(&mut bufs, meta) {
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("recv: {e}"),
        }
    }
}

fn send_all(b: &mut Backend, transmits: &[Transmit<'_>]) {
    let mut sent = 0;
    while sent < transmits.len() {
        match b.send(&transmits[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("send: {e}"),
        }
    }
}

fn veth_batch(c: &mut Criterion) {
    let _veth = Veth::new();
    let mut group = c.benchmark_group("io_veth_batch");
    group.throughput(Throughput::Elements(2 * DATAGRAMS as u64));
    let payload = vec![0x5au8; LEN];
    for (k, (io, name)) in [
        (IoBackend::Socket, "socket"),
        (IoBackend::Uring, "io_uring"),
        (IoBackend::Xdp, "af_xdp"),
    ]
    .into_iter()
    .enumerate()
    {
        let addr = SocketAddr::from((HOST, 7890 + k as u16));
        let socket = socket_at(addr);
        let program;
        let (mut node, fallback) = match io {
            IoBackend::Xdp => {
                program = Arc::new(XdpProgram::attach(addr, 1).expect("the XDP program attaches"));
                Backend::xdp_or_socket(socket, Ok(&program), 0)
            }
            _ => Backend::new(socket, io),
        };
        assert!(fallback.is_none(), "{io:?} fell back: {fallback:?}");
        let mut peer = packet_path::in_network_namespace(NS, || {
            Backend::new(socket_at(SocketAddr::from((PEER, 0))), IoBackend::Socket).0
        })
        .expect("entering the namespace (needs root)");
        let peer_addr = peer.local_addr().expect("bound");
        let to_peer = vec![
            Transmit {
                dst: peer_addr,
                contents: &payload,
                segment_size: None,
            };
            DATAGRAMS
        ];
        let to_node = vec![
            Transmit {
                dst: addr,
                contents: &payload,
                segment_size: None,
            };
            DATAGRAMS
        ];
        let mut storage = vec![0u8; 64 * 2048];
        let mut meta = vec![RecvMeta::default(); 64];
        // The AF_XDP backend learns the peer's MAC from its first datagram
        // once the router accepts it: this bench stands in for the router.
        send_all(&mut peer, &to_node[..1]);
        recv_all(&mut node, &mut storage, &mut meta, 1);
        node.accepted(0);
        group.bench_function(BenchmarkId::new(name, "plain_64_each_way"), |b| {
            b.iter(|| {
                send_all(&mut node, &to_peer);
                recv_all(&mut peer, &mut storage, &mut meta, DATAGRAMS);
                send_all(&mut peer, &to_node);
                recv_all(&mut node, &mut storage, &mut meta, DATAGRAMS);
                black_box(&meta);
            });
        });
        if let Some(x) = node.xdp() {
            let s = x.stats();
            assert!(s.tx_frames > 0 && s.rx_frames > 0, "{s:?}");
        }
    }
    group.finish();
}

criterion_group!(benches, batch, veth_batch);
criterion_main!(benches);
