//! A counting global allocator over a simulated minute of sending, feedback
//! and allocation: after construction, the estimator, the transport-cc
//! round trip and the allocator allocate nothing.

mod counting;

use std::time::{Duration, Instant};

use sfu_core::bwe::allocate::{MediaKind, Priority, StreamRequest, allocate};
use sfu_core::bwe::{Config, Estimator};
use sfu_core::twcc::{MAX_STATUSES, TwccReceiver};
use sfu_core::wire::rtcp::TransportCc;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

#[test]
fn estimator_feedback_and_allocation_do_not_allocate() {
    let t0 = Instant::now();
    let mut est = Estimator::new(Config::default(), t0);
    let mut rx = TwccReceiver::new(t0);
    let mut scratch = Vec::with_capacity(MAX_STATUSES);
    let mut buf = [0xa5u8; 1500];
    let layers = [150_000u64, 500_000, 1_500_000];
    let audio = [40_000u64];
    let streams = [
        StreamRequest {
            kind: MediaKind::Audio,
            priority: Priority::Normal,
            layers_bps: &audio,
            max_layer: None,
            current: None,
        },
        StreamRequest {
            kind: MediaKind::Video,
            priority: Priority::Screen,
            layers_bps: &layers,
            max_layer: None,
            current: Some(1),
        },
    ];
    let mut out = [None; 2];
    let before = counting::allocations();
    let mut seq = 65_000u16;
    let mut used = 0;
    // One packet per ms; every 7th lost; 40 ms one way; feedback every 50 ms.
    for ms in 0..60_000u64 {
        let now = t0 + Duration::from_millis(ms);
        est.on_sent(seq, 1200, now);
        if !seq.is_multiple_of(7) {
            rx.record(seq, 1, now + Duration::from_millis(40));
        }
        seq = seq.wrapping_add(1);
        if rx.due(now) {
            while let Some(n) = rx.write_feedback(now, 1, &mut scratch, &mut buf) {
                let fb = TransportCc::new_checked(&buf[..n]).expect("valid feedback");
                est.on_feedback(&fb, now + Duration::from_millis(40));
            }
            used += allocate(est.target_bps(), &streams, &mut out).used_bps;
        }
    }
    assert_eq!(counting::allocations() - before, 0);
    assert!(used > 0);
}
