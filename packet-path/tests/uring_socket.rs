//! The io_uring backend's socket over loopback: a batch of datagrams comes
//! in with one receive call, GSO trains go out and come back as GRO
//! buffers with their stride, and an empty socket answers `WouldBlock` at
//! once. Fails, saying why, on a host whose `io_uring_disabled` is 2.

use std::io;
use std::time::{Duration, Instant};

use packet_path::backend::UringSocket;
use packet_path::io::{BatchSocket, GRO_BUFFER_BYTES, RecvMeta, SocketOptions, Transmit};

fn uring(gro: bool) -> UringSocket {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .is_ok_and(|s| s.trim() == "2");
    assert!(
        !disabled,
        "io_uring is disabled on this host (kernel.io_uring_disabled = 2); the io_uring backend's tests need it: sysctl -w kernel.io_uring_disabled=0"
    );
    let opts = SocketOptions {
        gro,
        read_timeout: Some(Duration::ZERO),
        ..SocketOptions::default()
    };
    let s = BatchSocket::bind("127.0.0.1:0".parse().unwrap(), 32, &opts).unwrap();
    UringSocket::new(s)
        .map_err(|(_, e)| e)
        .expect("io_uring set-up")
}

/// Receives until `want` datagrams arrived (2 s at most); returns each
/// receive call's (meta, bytes) buffers.
fn drain(rx: &mut UringSocket, want: usize) -> Vec<Vec<(RecvMeta, Vec<u8>)>> {
    let mut storage = vec![0xa5u8; 32 * GRO_BUFFER_BYTES];
    let mut meta = [RecvMeta::default(); 32];
    let mut calls = Vec::new();
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(2);
    while got < want && Instant::now() < deadline {
        let mut bufs: Vec<&mut [u8]> = storage.chunks_mut(GRO_BUFFER_BYTES).collect();
        match rx.recv(&mut bufs, &mut meta) {
            Ok(n) => {
                let call: Vec<(RecvMeta, Vec<u8>)> = meta[..n]
                    .iter()
                    .zip(&bufs)
                    .map(|(m, b)| (*m, b[..m.len].to_vec()))
                    .collect();
                got += call.iter().map(|(m, _)| m.segments()).sum::<usize>();
                calls.push(call);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("{e}"),
        }
    }
    calls
}

#[test]
fn uring_receives_a_batch_in_one_call() {
    let (mut tx, mut rx) = (uring(false), uring(false));
    let dst = rx.local_addr().unwrap();
    let mut storage = vec![0u8; GRO_BUFFER_BYTES];
    let mut meta = [RecvMeta::default(); 1];
    let mut bufs: Vec<&mut [u8]> = vec![&mut storage[..]];
    let e = rx.recv(&mut bufs, &mut meta).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "an empty socket");

    let payloads: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 100 + i as usize]).collect();
    let transmits: Vec<Transmit<'_>> = payloads
        .iter()
        .map(|p| Transmit {
            dst,
            contents: p,
            segment_size: None,
        })
        .collect();
    assert_eq!(tx.send(&transmits).unwrap(), 20);
    let calls = drain(&mut rx, 20);
    assert_eq!(calls.len(), 1, "one receive call took all 20 datagrams");
    let got: Vec<Vec<u8>> = calls[0].iter().map(|(_, b)| b.clone()).collect();
    assert_eq!(got, payloads);
    let src = tx.local_addr().unwrap();
    assert!(
        calls[0]
            .iter()
            .all(|(m, _)| m.addr == src && m.stride == m.len)
    );
}

#[test]
fn uring_sends_gso_trains_and_receives_gro_strides() {
    let (mut tx, mut rx) = (uring(true), uring(true));
    assert!(tx.socket().gso_enabled() && rx.socket().gro_enabled());
    let dst = rx.local_addr().unwrap();
    // 10 segments of 1200 bytes and a short last one.
    let payload: Vec<u8> = (0..12_500u32).map(|i| (i / 3) as u8).collect();
    let t = [Transmit {
        dst,
        contents: &payload,
        segment_size: Some(1200),
    }];
    assert_eq!(tx.send(&t).unwrap(), 1);
    assert_eq!(tx.socket().gso_sends(), 1, "one segmented message");
    let calls = drain(&mut rx, 11);
    let mut datagrams = Vec::new();
    for (m, b) in calls.iter().flatten() {
        assert_eq!(m.stride, 1200, "GRO stride from the cmsg");
        datagrams.extend(m.datagrams(b).map(<[u8]>::to_vec));
    }
    let want: Vec<Vec<u8>> = payload.chunks(1200).map(<[u8]>::to_vec).collect();
    assert_eq!(datagrams, want);
}

/// Dropping an io_uring socket ends its multishot receive at once: the
/// port is free for the next bind (a receive left armed would hold the
/// socket until the ring's asynchronous teardown: `EADDRINUSE`).
#[test]
fn a_dropped_uring_socket_frees_its_port_at_once() {
    for _ in 0..200 {
        let s = uring(true);
        assert!(
            s.multishot(),
            "the kernel here (6.x) has the multishot receive"
        );
        let addr = s.local_addr().unwrap();
        drop(s);
        BatchSocket::bind(addr, 32, &SocketOptions::default())
            .unwrap_or_else(|e| panic!("rebinding {addr} right after the drop: {e}"));
    }
}
