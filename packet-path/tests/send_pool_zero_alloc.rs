//! `SendPool` allocates nothing after `SendPool::new`: five hundred rounds of
//! filling the pool through the router's `Transmit` trait (one exhaustion
//! each) and flushing it to loopback, under a counting global allocator.
//! Counts the allocations of the test's own thread, where the pool runs;
//! libtest's main thread allocates at varying moments while it waits.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::THREAD_ALLOCATIONS;
use packet_path::io::{BatchSocket, SocketOptions};
use packet_path::pool::SendPool;
use sfu_core::router::Transmit as _;

#[global_allocator]
static GLOBAL: common::Counting = common::Counting;

fn socket(gro: bool) -> BatchSocket {
    let opts = SocketOptions {
        gro,
        read_timeout: Some(Duration::from_millis(500)),
        ..SocketOptions::default()
    };
    BatchSocket::bind("127.0.0.1:0".parse().unwrap(), 64, &opts).unwrap()
}

fn write(pool: &mut SendPool, len: usize, fill: u8, dst: SocketAddr) -> bool {
    let Some(buf) = pool.buffer() else {
        return false;
    };
    buf[..len].fill(fill);
    pool.send(len, dst);
    true
}

#[test]
fn send_pool_zero_alloc_after_new() {
    let mut tx = socket(true);
    let rx = socket(false);
    let dst = [
        rx.local_addr().unwrap(),
        SocketAddr::from(([127, 0, 0, 1], 9)),
    ];
    let mut pool = SendPool::new(256);
    // The pool runs on this thread alone: count this thread's allocations.
    let before = THREAD_ALLOCATIONS.with(|n| n.get());
    assert!(before > 0, "the counter is live");
    let mut sent = 0;
    for round in 0..500 {
        // Fill the pool (and one exhaustion), then flush.
        let mut k = 0;
        while write(&mut pool, 100 + (k % 3) * 10, round as u8, dst[k % 2]) {
            k += 1;
        }
        sent += pool.flush(&mut tx).datagrams;
    }
    let allocations = THREAD_ALLOCATIONS.with(|n| n.get()) - before;
    assert_eq!(allocations, 0);
    assert_eq!(sent, 500 * 256);
    assert_eq!(pool.exhausted(), 500);
}
