//! `BatchSocket` over loopback: GSO trains, GRO coalescing, mixed sizes,
//! IPv6, and the non-GSO path giving the receiver identical datagrams.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use packet_path::io::{BatchSocket, GRO_BUFFER_BYTES, RecvMeta, SocketOptions, Transmit};

fn opts(gro: bool, gso: bool) -> SocketOptions {
    SocketOptions {
        gro,
        gso,
        read_timeout: Some(Duration::from_millis(200)),
        ..SocketOptions::default()
    }
}

fn socket(ip: &str, gro: bool, gso: bool) -> BatchSocket {
    let addr: SocketAddr = format!("{ip}:0").parse().unwrap();
    BatchSocket::bind(addr, 32, &opts(gro, gso))
        .unwrap_or_else(|e| panic!("cannot bind {addr}: {e} (this test needs a loopback address)"))
}

/// A payload whose every byte tells its datagram and position.
fn train(count: usize, size: usize, last: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for d in 0..count {
        let len = if d + 1 == count { last } else { size };
        v.extend((0..len).map(|i| (d * 31 + i) as u8));
    }
    v
}

/// Receives until `want` datagrams arrived (or 2 s passed); returns each
/// buffer's (meta, bytes).
fn drain(rx: &mut BatchSocket, want: usize) -> Vec<(RecvMeta, Vec<u8>)> {
    let mut storage = vec![vec![0xa5u8; GRO_BUFFER_BYTES]; 32];
    let mut meta = [RecvMeta::default(); 32];
    let mut out = Vec::new();
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(2);
    while got < want && Instant::now() < deadline {
        let mut bufs: Vec<&mut [u8]> = storage.iter_mut().map(|b| &mut b[..]).collect();
        match rx.recv(&mut bufs, &mut meta) {
            Ok(n) => {
                for (m, b) in meta[..n].iter().zip(&bufs) {
                    got += m.segments();
                    out.push((*m, b[..m.len].to_vec()));
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("recv: {e}"),
        }
    }
    out
}

/// The datagrams of every received buffer, in order.
fn datagrams(received: &[(RecvMeta, Vec<u8>)]) -> Vec<Vec<u8>> {
    received
        .iter()
        .flat_map(|(m, b)| m.datagrams(b).map(<[u8]>::to_vec).collect::<Vec<_>>())
        .collect()
}

#[test]
fn gso_train_arrives_as_one_gro_buffer() {
    let mut tx = socket("127.0.0.1", false, true);
    let mut rx = socket("127.0.0.1", true, false);
    assert!(tx.gso_enabled(), "loopback supports GSO");
    assert!(rx.gro_enabled(), "loopback supports GRO");
    let payload = train(10, 1200, 1200);
    let dst = rx.local_addr().unwrap();
    let t = Transmit {
        dst,
        contents: &payload,
        segment_size: Some(1200),
    };
    assert_eq!(tx.send(&[t]).unwrap(), 1);
    let got = drain(&mut rx, 10);
    assert_eq!(got.len(), 1, "one coalesced buffer");
    let (m, bytes) = &got[0];
    assert_eq!((m.len, m.stride), (12_000, 1200));
    assert_eq!(m.addr, tx.local_addr().unwrap());
    assert_eq!(bytes, &payload);
    assert_eq!(tx.gso_fallbacks(), 0);
}

#[test]
fn gso_train_without_gro_arrives_as_datagrams() {
    let mut tx = socket("127.0.0.1", false, true);
    let mut rx = socket("127.0.0.1", false, false);
    let payload = train(10, 1200, 700);
    let t = Transmit {
        dst: rx.local_addr().unwrap(),
        contents: &payload,
        segment_size: Some(1200),
    };
    assert_eq!(tx.send(&[t]).unwrap(), 1);
    let got = drain(&mut rx, 10);
    assert_eq!(got.len(), 10);
    for (m, _) in &got {
        assert_eq!(m.stride, m.len);
    }
    let lens: Vec<usize> = got.iter().map(|(m, _)| m.len).collect();
    assert_eq!(
        lens,
        [1200, 1200, 1200, 1200, 1200, 1200, 1200, 1200, 1200, 700]
    );
    assert_eq!(datagrams(&got).concat(), payload);
}

/// Mixed transmits: single datagrams, a long train beyond one GSO message
/// (200 × 1200 B > 65,507 B and > 64 segments), a short tail, and a
/// train of one; sent to two receivers.
fn mixed(ip: &str, gso: bool, gro: bool) -> Vec<Vec<Vec<u8>>> {
    let mut tx = socket(ip, false, gso);
    let mut rx = [socket(ip, gro, false), socket(ip, gro, false)];
    let dst = [rx[0].local_addr().unwrap(), rx[1].local_addr().unwrap()];
    let a = train(1, 100, 100);
    let b = train(200, 1200, 1200);
    let c = train(3, 500, 17);
    let d = train(1, 1500, 1500);
    let transmits = [
        Transmit {
            dst: dst[0],
            contents: &a,
            segment_size: None,
        },
        Transmit {
            dst: dst[1],
            contents: &b,
            segment_size: Some(1200),
        },
        Transmit {
            dst: dst[0],
            contents: &c,
            segment_size: Some(500),
        },
        Transmit {
            dst: dst[0],
            contents: &d,
            segment_size: Some(1500),
        },
    ];
    assert_eq!(tx.send(&transmits).unwrap(), transmits.len());
    assert_eq!(tx.gso_enabled(), gso);
    let r0 = datagrams(&drain(&mut rx[0], 5));
    let r1 = datagrams(&drain(&mut rx[1], 200));
    let want0: Vec<Vec<u8>> = [&a[..], &c[..500], &c[500..1000], &c[1000..], &d[..]]
        .map(<[u8]>::to_vec)
        .to_vec();
    assert_eq!(r0, want0);
    let want1: Vec<Vec<u8>> = b.chunks(1200).map(<[u8]>::to_vec).collect();
    assert_eq!(r1, want1);
    vec![r0, r1]
}

#[test]
fn mixed_sizes_ipv4() {
    mixed("127.0.0.1", true, true);
    mixed("127.0.0.1", true, false);
}

/// The machine this was written on has `::1` on `lo` (checked with
/// `ip -6 addr`); a machine without it fails here with "cannot bind [::1]".
#[test]
fn mixed_sizes_ipv6() {
    mixed("[::1]", true, true);
}

#[test]
fn without_gso_receiver_sees_identical_data() {
    let with = mixed("127.0.0.1", true, false);
    let without = mixed("127.0.0.1", false, false);
    assert_eq!(with, without);
    let with6 = mixed("[::1]", true, true);
    let without6 = mixed("[::1]", false, true);
    assert_eq!(with6, without6);
}

#[test]
fn recv_times_out() {
    let mut rx = socket("127.0.0.1", true, true);
    let mut buf = vec![0u8; GRO_BUFFER_BYTES];
    let mut meta = [RecvMeta::default()];
    let t0 = Instant::now();
    let e = rx.recv(&mut [&mut buf[..]], &mut meta).unwrap_err();
    assert!(
        matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        "{e}"
    );
    assert!(t0.elapsed() >= Duration::from_millis(150));
}

#[test]
fn dual_stack_socket_reaches_ipv4_peer() {
    let mut tx = BatchSocket::bind("[::]:0".parse().unwrap(), 8, &opts(false, true)).unwrap();
    let mut rx = socket("127.0.0.1", true, false);
    let payload = train(4, 1000, 1000);
    let t = Transmit {
        dst: rx.local_addr().unwrap(),
        contents: &payload,
        segment_size: Some(1000),
    };
    assert_eq!(tx.send(&[t]).unwrap(), 1);
    let got = drain(&mut rx, 4);
    assert_eq!(datagrams(&got).concat(), payload);
}
