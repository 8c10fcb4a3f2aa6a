//! The zero-allocation guarantee of `zero_alloc_worker.rs`, with WebRTC
//! endpoints: the publisher and the four subscribers are ICE-lite + DTLS-SRTP
//! endpoints. Each one's socket first sends an ICE check (STUN binding
//! request with USE-CANDIDATE, MESSAGE-INTEGRITY and FINGERPRINT) to the
//! worker, then runs a DTLS client handshake against the worker's router and
//! takes the exported SRTP keys. Everything up to here, and a warm-up, may
//! allocate. Then the real worker loop forwards a million SRTP packets over
//! loopback — keyed by DTLS, with the worker's 10 ms timer running over its
//! WebRTC endpoints — and no thread of the process allocates while it does.
//!
//! A counting `#[global_allocator]` (`common::Counting`) counts every
//! `alloc`/`alloc_zeroed`/`realloc` of every thread. This is the only test in this binary, so the harness is idle
//! while it runs.

mod common;
#[path = "common/dtls.rs"]
mod dtls;

use packet_path::IoBackend;

#[global_allocator]
static GLOBAL: common::Counting = common::Counting;

#[test]
fn zero_alloc_worker_forwards_a_million_dtls_keyed_packets() {
    dtls::forward_dtls_keyed(IoBackend::Socket, "socket");
}
