//! The real worker loop (socket backend: `recvmmsg`/`sendmmsg`) forwards a million SRTP packets over loopback —
//! `recvmmsg` + GRO in, decrypt once, fan out to four subscribers, encrypt,
//! GSO trains out — and no thread of the process allocates while it does.
//!
//! A counting `#[global_allocator]` (`common::Counting`) counts every
//! `alloc`/`alloc_zeroed`/`realloc` of every thread. The test thread (sender) and the receiver thread allocate all
//! they need before the measured phase; the node's worker allocated its
//! buffers at start. This is the only test in this binary, so the harness
//! is idle while it runs.

mod common;
#[path = "common/million.rs"]
mod million;

use packet_path::IoBackend;

#[global_allocator]
static GLOBAL: common::Counting = common::Counting;

#[test]
fn zero_alloc_worker_forwards_a_million_packets() {
    million::forward_a_million(IoBackend::Socket, "socket");
}
