//! `zero_alloc_worker.rs` over the io_uring backend: the real worker loop
//! forwards a million SRTP packets over loopback — linked `RecvMsg`
//! operations with GRO in, decrypt once, fan out to four subscribers,
//! encrypt, GSO trains out as linked `SendMsg` operations, one submit per
//! batch — and no thread of the process allocates while it does. The
//! worker must really run io_uring (this host allows it): a fallback to
//! the socket backend fails the test (on a host whose
//! `/proc/sys/kernel/io_uring_disabled` is 2 too, saying so).

mod common;
#[path = "common/million.rs"]
mod million;

use packet_path::IoBackend;

#[global_allocator]
static GLOBAL: common::Counting = common::Counting;

#[test]
fn zero_alloc_uring_worker_forwards_a_million_packets() {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .is_ok_and(|s| s.trim() == "2");
    assert!(
        !disabled,
        "io_uring is disabled on this host (kernel.io_uring_disabled = 2); the io_uring backend's tests need it: sysctl -w kernel.io_uring_disabled=0"
    );
    million::forward_a_million(IoBackend::Uring, "io_uring");
}
