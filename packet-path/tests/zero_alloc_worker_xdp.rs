//! The million-packet zero-allocation test of `zero_alloc_worker.rs` over
//! the AF_XDP backend: the node on the host end of a veth pair (native
//! XDP, copy mode), publisher and subscribers in a network namespace at
//! the other end. Needs root; fails, never skips, where AF_XDP cannot run.

mod common;
#[path = "common/million.rs"]
mod million;

use packet_path::IoBackend;

#[global_allocator]
static GLOBAL: common::Counting = common::Counting;

#[test]
fn zero_alloc_xdp_worker_forwards_a_million_packets() {
    million::forward_a_million(IoBackend::Xdp, "af_xdp");
}
