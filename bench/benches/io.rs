//! One batch through each packet I/O backend over loopback: 64 datagrams
//! of 1200 bytes sent and received, either as 64 plain messages (no GSO,
//! no GRO: a message per datagram, as to 64 subscribers) or as 8 GSO
//! trains of 8 to one destination (received as GRO buffers). The socket
//! backend does it with one `sendmmsg` and `recvmmsg` calls; the io_uring
//! backend with linked `SendMsg`/`RecvMsg` operations, one submit each.
//! Throughput is in datagrams, so criterion's time per element is the
//! kernel path's cost per datagram (send and receive, both on this core).
//!
//! `cargo bench -p bench --bench io`

use std::hint::black_box;
use std::io::ErrorKind;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
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

fn batch(c: &mut Criterion) {
    let mut group = c.benchmark_group("io_batch");
    group.throughput(Throughput::Elements(DATAGRAMS as u64));
    let payload = vec![0x5au8; DATAGRAMS * LEN];
    for (io, name) in [
        (IoBackend::Socket, "socket"),
        (IoBackend::Uring, "io_uring"),
    ] {
        for offload in [false, true] {
            let mut tx = backend(io, offload);
            let mut rx = backend(io, offload);
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

criterion_group!(benches, batch);
criterion_main!(benches);
