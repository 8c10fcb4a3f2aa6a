//! `zero_alloc_dtls.rs` (ICE, DTLS, then a million DTLS-keyed SRTP
//! packets with no allocation) over the AF_XDP backend: the node on the
//! host end of a veth pair, the peers in a namespace at the other end.
//! Needs root; fails, never skips, where AF_XDP cannot run.

mod common;
#[path = "common/dtls.rs"]
mod dtls;

use packet_path::IoBackend;

#[global_allocator]
static GLOBAL: common::Counting = common::Counting;

#[test]
fn zero_alloc_xdp_worker_forwards_a_million_dtls_keyed_packets() {
    dtls::forward_dtls_keyed(IoBackend::Xdp, "af_xdp");
}
