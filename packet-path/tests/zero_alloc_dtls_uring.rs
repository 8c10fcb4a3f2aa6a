//! `zero_alloc_dtls.rs` (ICE, DTLS, then a million DTLS-keyed SRTP
//! packets with no allocation) over the io_uring backend.

mod common;
#[path = "common/dtls.rs"]
mod dtls;

use packet_path::IoBackend;

#[global_allocator]
static GLOBAL: common::Counting = common::Counting;

#[test]
fn zero_alloc_uring_worker_forwards_a_million_dtls_keyed_packets() {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .is_ok_and(|s| s.trim() == "2");
    assert!(
        !disabled,
        "io_uring is disabled on this host (kernel.io_uring_disabled = 2); the io_uring backend's tests need it: sysctl -w kernel.io_uring_disabled=0"
    );
    dtls::forward_dtls_keyed(IoBackend::Uring, "io_uring");
}
