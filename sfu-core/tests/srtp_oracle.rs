//! webrtc-srtp 0.17 as the oracle for the in-place SRTP/SRTCP transforms:
//! random RTP and RTCP packets protected here must be byte-identical to
//! `Context::encrypt_rtp`/`encrypt_rtcp` with the same master key and salt,
//! for both profiles, across sequence-number wrap and ROC changes; and each
//! side must decrypt the other's output.

use proptest::prelude::*;
use sfu_core::srtp::{Profile, SrtpConfig, SrtpContext};
use webrtc_srtp::context::Context;
use webrtc_srtp::protection_profile::ProtectionProfile;

fn theirs(profile: Profile) -> ProtectionProfile {
    match profile {
        Profile::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
        Profile::Aes128CmHmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        _ => unreachable!("the tests only use the two profiles above"),
    }
}

/// Four contexts over one key: ours and theirs, each a sender and a receiver.
struct Sides {
    our_tx: SrtpContext,
    our_rx: SrtpContext,
    their_tx: Context,
    their_rx: Context,
}

fn sides(profile: Profile, key: &[u8], salt: &[u8]) -> Sides {
    let salt = &salt[..profile.salt_len()];
    let ours = || SrtpContext::new(profile, key, salt, SrtpConfig::default()).unwrap();
    let theirs = || Context::new(key, salt, theirs(profile), None, None).unwrap();
    Sides {
        our_tx: ours(),
        our_rx: ours(),
        their_tx: theirs(),
        their_rx: theirs(),
    }
}

/// The random parts of an RTP packet; the sequence number is set per packet.
#[derive(Debug, Clone)]
struct RtpShape {
    marker: bool,
    payload_type: u8,
    timestamp: u32,
    csrcs: Vec<u32>,
    /// (id, value) one-byte-header elements, or two-byte ones when `two_byte`.
    extensions: Vec<(u8, Vec<u8>)>,
    two_byte: bool,
    payload: Vec<u8>,
    padding: u8,
}

fn rtp_shape() -> impl Strategy<Value = RtpShape> {
    (
        any::<bool>(),
        0u8..128,
        any::<u32>(),
        prop::collection::vec(any::<u32>(), 0..4),
        prop::collection::vec((1u8..15, prop::collection::vec(any::<u8>(), 1..17)), 0..4),
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..1300),
        prop_oneof![Just(0u8), 1u8..8],
    )
        .prop_map(
            |(marker, payload_type, timestamp, csrcs, extensions, two_byte, payload, padding)| {
                RtpShape {
                    marker,
                    payload_type,
                    timestamp,
                    csrcs,
                    extensions,
                    two_byte,
                    payload,
                    padding,
                }
            },
        )
}

/// Serialises by hand (not with the crate's writer, which is under test too).
fn rtp_bytes(s: &RtpShape, ssrc: u32, seq: u16) -> Vec<u8> {
    let mut b = vec![
        0x80 | (s.csrcs.len() as u8)
            | if s.extensions.is_empty() { 0 } else { 0x10 }
            | if s.padding > 0 { 0x20 } else { 0 },
        s.payload_type | if s.marker { 0x80 } else { 0 },
    ];
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(&s.timestamp.to_be_bytes());
    b.extend_from_slice(&ssrc.to_be_bytes());
    for c in &s.csrcs {
        b.extend_from_slice(&c.to_be_bytes());
    }
    if !s.extensions.is_empty() {
        let mut body = Vec::new();
        for (id, v) in &s.extensions {
            if s.two_byte {
                body.extend_from_slice(&[*id, v.len() as u8]);
            } else {
                body.push(id << 4 | (v.len() as u8 - 1));
            }
            body.extend_from_slice(v);
        }
        while body.len() % 4 != 0 {
            body.push(0);
        }
        let profile: u16 = if s.two_byte { 0x1000 } else { 0xBEDE };
        b.extend_from_slice(&profile.to_be_bytes());
        b.extend_from_slice(&((body.len() / 4) as u16).to_be_bytes());
        b.extend_from_slice(&body);
    }
    b.extend_from_slice(&s.payload);
    if s.padding > 0 {
        b.extend(std::iter::repeat_n(0, usize::from(s.padding) - 1));
        b.push(s.padding);
    }
    b
}

fn profile() -> impl Strategy<Value = Profile> {
    prop_oneof![
        Just(Profile::AeadAes128Gcm),
        Just(Profile::Aes128CmHmacSha1_80)
    ]
}

/// Runs `packets` (plaintext) through both implementations in both
/// directions and checks they agree byte for byte.
fn check_rtp(profile: Profile, key: &[u8], salt: &[u8], packets: &[Vec<u8>]) {
    let mut s = sides(profile, key, salt);
    let mut buf = vec![0xa5u8; 2048];
    for (i, plain) in packets.iter().enumerate() {
        buf.fill(0xa5);
        buf[..plain.len()].copy_from_slice(plain);
        let n = s.our_tx.protect_rtp(&mut buf, plain.len()).unwrap();
        let oracle = s.their_tx.encrypt_rtp(plain).unwrap();
        assert_eq!(
            &buf[..n],
            &oracle[..],
            "{profile:?} packet {i}: protect differs"
        );

        let decrypted = s.their_rx.decrypt_rtp(&buf[..n]).unwrap();
        assert_eq!(
            &decrypted[..],
            &plain[..],
            "{profile:?} packet {i}: theirs decrypts ours"
        );

        let mut theirs = oracle.to_vec();
        let m = s.our_rx.unprotect_rtp(&mut theirs).unwrap();
        assert_eq!(
            &theirs[..m],
            &plain[..],
            "{profile:?} packet {i}: ours decrypts theirs"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn rtp_protect_matches_webrtc_srtp(
        profile in profile(),
        key in prop::array::uniform16(any::<u8>()),
        salt in prop::array::uniform14(any::<u8>()),
        ssrc in any::<u32>(),
        // Start near the wrap half the time so most cases cross 65535 -> 0.
        start in prop_oneof![65_400u16..=65_535, any::<u16>()],
        steps in prop::collection::vec((1u16..3000, rtp_shape()), 1..32),
    ) {
        let mut seq = start;
        let mut packets = Vec::new();
        for (gap, shape) in &steps {
            packets.push(rtp_bytes(shape, ssrc, seq));
            seq = seq.wrapping_add(*gap);
        }
        check_rtp(profile, &key, &salt, &packets);
    }

    #[test]
    fn rtcp_protect_matches_webrtc_srtp(
        profile in profile(),
        key in prop::array::uniform16(any::<u8>()),
        salt in prop::array::uniform14(any::<u8>()),
        ssrc in any::<u32>(),
        packets in prop::collection::vec(
            (prop_oneof![Just(200u8), Just(201u8)], 0u8..32, prop::collection::vec(any::<u32>(), 0..64),
             prop::collection::vec(any::<u32>(), 0..16)),
            1..24,
        ),
    ) {
        let mut s = sides(profile, &key, &salt);
        let mut buf = vec![0u8; 2048];
        for (i, (pt, count, body, tail)) in packets.iter().enumerate() {
            // First sub-packet SR/RR from `ssrc`, then an arbitrary second one.
            let mut plain = vec![0x80 | count, *pt];
            plain.extend_from_slice(&((body.len() + 1) as u16).to_be_bytes());
            plain.extend_from_slice(&ssrc.to_be_bytes());
            body.iter().for_each(|w| plain.extend_from_slice(&w.to_be_bytes()));
            if !tail.is_empty() {
                plain.extend_from_slice(&[0x81, 202]);
                plain.extend_from_slice(&((tail.len()) as u16).to_be_bytes());
                tail.iter().for_each(|w| plain.extend_from_slice(&w.to_be_bytes()));
            }
            buf.fill(0xa5);
            buf[..plain.len()].copy_from_slice(&plain);
            let n = s.our_tx.protect_rtcp(&mut buf, plain.len()).unwrap();
            let oracle = s.their_tx.encrypt_rtcp(&plain).unwrap();
            prop_assert_eq!(&buf[..n], &oracle[..], "{:?} packet {}", profile, i);

            let decrypted = s.their_rx.decrypt_rtcp(&buf[..n]).unwrap();
            prop_assert_eq!(&decrypted[..], &plain[..]);
            let mut theirs = oracle.to_vec();
            let m = s.our_rx.unprotect_rtcp(&mut theirs).unwrap();
            prop_assert_eq!(&theirs[..m], &plain[..]);
        }
    }
}

/// A long run through several ROC increments with steady +1 steps (the ROC
/// is in the IV and, for CM, in the tag: a wrong guess anywhere shows here).
#[test]
fn three_wraps_match_webrtc_srtp() {
    let shape = RtpShape {
        marker: false,
        payload_type: 96,
        timestamp: 1234,
        csrcs: vec![],
        extensions: vec![(3, vec![1, 2])],
        two_byte: false,
        payload: vec![0x5a; 160],
        padding: 0,
    };
    for profile in [Profile::AeadAes128Gcm, Profile::Aes128CmHmacSha1_80] {
        let packets: Vec<_> = (0..3 * 65_536 + 100u32)
            .map(|i| rtp_bytes(&shape, 0xcafe, (65_000 + i) as u16))
            .collect();
        check_rtp(profile, &[3; 16], &[4; 14], &packets);
    }
}
