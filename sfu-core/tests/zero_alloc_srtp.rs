//! A counting global allocator over a million protect + unprotect round trips
//! per profile: after the contexts exist, the SRTP hot path allocates nothing.

mod counting;

use sfu_core::srtp::{Profile, SrtpConfig, SrtpContext};
use sfu_core::wire::rtp::{ExtensionMap, RtpHeader, RtpPacket, RtpPacketMut, write_header};
use sfu_core::wire::{DatagramKind, classify};

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

const ROUND_TRIPS: u32 = 1_000_000;

fn round_trips(profile: Profile) -> u64 {
    let key = [0x11; 16];
    let salt = [0x22; 14];
    let salt = &salt[..profile.salt_len()];
    let mut tx = SrtpContext::new(profile, &key, salt, SrtpConfig::default()).unwrap();
    let mut rx = SrtpContext::new(profile, &key, salt, SrtpConfig::default()).unwrap();
    let map = ExtensionMap {
        transport_cc: Some(3),
        ..Default::default()
    };
    let mut buf = [0xa5u8; 1500];
    let header = RtpHeader {
        payload_type: 96,
        ssrc: 0x1000,
        ..Default::default()
    };
    let hl = write_header(&mut buf, &header, &[(3, &[0, 0])]).unwrap();
    let len = hl + 1200;

    // Warm-up: the first packet of each SSRC fills the contexts' tables.
    let n = tx.protect_rtp(&mut buf, len).unwrap();
    rx.unprotect_rtp(&mut buf[..n]).unwrap();

    let before = counting::allocations();
    let mut seq = 1u16;
    for i in 0..ROUND_TRIPS {
        // What a forwarder does per egress copy: rewrite, protect, and on
        // the receiving side classify, unprotect, parse.
        let mut m = RtpPacketMut::new_checked(&mut buf[..len]).unwrap();
        m.set_sequence_number(seq);
        m.set_timestamp(i.wrapping_mul(3000));
        m.set_transport_cc_seq(&map, seq);
        let n = tx.protect_rtp(&mut buf, len).unwrap();
        assert_eq!(classify(&buf[..n]), DatagramKind::Rtp);
        let plain = rx.unprotect_rtp(&mut buf[..n]).unwrap();
        let p = RtpPacket::new_checked(&buf[..plain]).unwrap();
        assert_eq!(p.transport_cc_seq(&map), Some(seq));
        seq = seq.wrapping_add(1);
    }
    counting::allocations() - before
}

#[test]
fn zero_alloc_srtp_round_trips() {
    // One test function so no other test thread allocates meanwhile.
    let before = counting::allocations();
    drop(std::hint::black_box(vec![1u8; 16]));
    assert!(
        counting::allocations() > before,
        "the counting allocator must see allocations"
    );
    for profile in [Profile::AeadAes128Gcm, Profile::Aes128CmHmacSha1_80] {
        let allocations = round_trips(profile);
        assert_eq!(
            allocations, 0,
            "{profile:?}: {allocations} allocations over {ROUND_TRIPS} round trips"
        );
    }
}
