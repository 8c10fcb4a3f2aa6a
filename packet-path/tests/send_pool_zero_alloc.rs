//! `SendPool` allocates nothing after `SendPool::new`: five hundred rounds of
//! filling the pool through the router's `Transmit` trait (one exhaustion
//! each) and flushing it to loopback, under a counting global allocator.
//! The only test in its binary, so no other test thread allocates meanwhile.

#![allow(unsafe_code)] // The counting allocator is the one unsafe item here.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use packet_path::io::{BatchSocket, SocketOptions};
use packet_path::pool::SendPool;
use sfu_core::router::Transmit as _;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

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
    let before = ALLOCATIONS.load(Ordering::Relaxed);
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
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(allocations, 0);
    assert_eq!(sent, 500 * 256);
    assert_eq!(pool.exhausted(), 500);
}
