//! `SendPool`: exhaustion is counted, buffers are reused, the flush keeps
//! per-destination order and forms GSO trains. (No allocation after
//! `SendPool::new`: `tests/send_pool_zero_alloc.rs`.)

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use packet_path::io::{BatchSocket, GRO_BUFFER_BYTES, RecvMeta, SocketOptions};
use packet_path::pool::{BUFFER_BYTES, SendPool};
use sfu_core::router::Transmit as _;

fn socket(gro: bool) -> BatchSocket {
    let opts = SocketOptions {
        gro,
        buffer_bytes: 16 << 20,
        read_timeout: Some(Duration::from_millis(500)),
        ..SocketOptions::default()
    };
    BatchSocket::bind("127.0.0.1:0".parse().unwrap(), 64, &opts).unwrap()
}

/// Writes one datagram of `len` bytes of `fill` through the Transmit trait.
fn write(pool: &mut SendPool, len: usize, fill: u8, dst: SocketAddr) -> bool {
    let Some(buf) = pool.buffer() else {
        return false;
    };
    assert_eq!(buf.len(), BUFFER_BYTES);
    buf[..len].fill(fill);
    pool.send(len, dst);
    true
}

#[test]
fn exhaustion_is_counted_and_buffers_are_reused() {
    let mut tx = socket(false);
    let rx = socket(false);
    let dst = rx.local_addr().unwrap();
    let mut pool = SendPool::new(8);
    assert_eq!(pool.capacity(), 8);

    let mut seen = HashSet::new();
    for _ in 0..8 {
        seen.insert(pool.buffer().unwrap().as_ptr() as usize);
        pool.send(100, dst);
    }
    assert_eq!(seen.len(), 8, "eight distinct buffers");
    assert_eq!((pool.in_use(), pool.queued()), (8, 8));
    assert!(pool.buffer().is_none());
    assert!(pool.buffer().is_none());
    assert_eq!(pool.exhausted(), 2);

    let f = pool.flush(&mut tx);
    assert_eq!((f.datagrams, f.failed), (8, 0));
    assert_eq!((pool.in_use(), pool.queued()), (0, 0));
    for _ in 0..8 {
        let p = pool.buffer().unwrap().as_ptr() as usize;
        assert!(seen.contains(&p), "a buffer from the same allocation");
        pool.send(100, dst);
    }
    assert_eq!(pool.exhausted(), 2);
}

#[test]
fn flush_orders_per_destination_and_sends_trains() {
    let mut tx = socket(false);
    let mut rx = [socket(true), socket(true)];
    let dst = [rx[0].local_addr().unwrap(), rx[1].local_addr().unwrap()];
    let mut pool = SendPool::new(64);
    // Interleaved: a1 b1 a2 b2 ... with a: 10 × 1200 then one 300; b: 5 × 900.
    for i in 0..10u8 {
        write(&mut pool, 1200, i, dst[0]);
        if i < 5 {
            write(&mut pool, 900, 100 + i, dst[1]);
        }
    }
    write(&mut pool, 300, 10, dst[0]);
    let f = pool.flush(&mut tx);
    assert_eq!(
        (f.datagrams, f.messages, f.failed),
        (16, 2, 0),
        "one train each"
    );

    let mut storage = vec![0u8; 4 * GRO_BUFFER_BYTES];
    let mut meta = [RecvMeta::default(); 4];
    for (r, (count, size, last, first_fill)) in
        rx.iter_mut().zip([(11, 1200, 300, 0), (5, 900, 900, 100)])
    {
        let mut bufs: Vec<&mut [u8]> = storage.chunks_mut(GRO_BUFFER_BYTES).collect();
        let n = r.recv(&mut bufs, &mut meta).unwrap();
        assert_eq!(n, 1, "one GRO buffer");
        let datagrams: Vec<&[u8]> = meta[0].datagrams(bufs[0]).collect();
        assert_eq!(datagrams.len(), count);
        for (i, d) in datagrams.iter().enumerate() {
            let want = if i + 1 == count { last } else { size };
            assert_eq!(d.len(), want);
            assert!(d.iter().all(|&b| b == first_fill + i as u8), "order kept");
        }
    }
}
