use super::*;
use crate::wire::rtp::{RtpHeader, write_header};

const KEY: [u8; 16] = [7; 16];
const SALT: [u8; 14] = [9; 14];

fn pair(profile: Profile) -> (SrtpContext, SrtpContext) {
    let salt = &SALT[..profile.salt_len()];
    let tx = SrtpContext::new(profile, &KEY, salt, SrtpConfig::default()).unwrap();
    let rx = SrtpContext::new(profile, &KEY, salt, SrtpConfig::default()).unwrap();
    (tx, rx)
}

const PROFILES: [Profile; 2] = [Profile::AeadAes128Gcm, Profile::Aes128CmHmacSha1_80];

/// Writes an RTP packet into a junk-filled buffer and returns its length.
fn rtp(buf: &mut [u8], ssrc: u32, seq: u16, payload_len: usize) -> usize {
    buf.fill(0xa5);
    let h = RtpHeader {
        payload_type: 96,
        sequence_number: seq,
        timestamp: u32::from(seq) * 3000,
        ssrc,
        ..Default::default()
    };
    let n = write_header(buf, &h, &[(1, &[0x42])]).unwrap();
    for (i, b) in buf[n..n + payload_len].iter_mut().enumerate() {
        *b = i as u8;
    }
    n + payload_len
}

#[test]
fn rtp_round_trip_both_profiles() {
    for p in PROFILES {
        let (mut tx, mut rx) = pair(p);
        let mut buf = [0u8; 1500];
        for seq in 0..100u16 {
            let len = rtp(&mut buf, 1, seq, 1200);
            let plain = buf[..len].to_vec();
            let slen = tx.protect_rtp(&mut buf, len).unwrap();
            assert_eq!(slen, len + p.rtp_overhead());
            assert_ne!(&buf[..len], &plain[..], "payload encrypted");
            let back = rx.unprotect_rtp(&mut buf[..slen]).unwrap();
            assert_eq!(&buf[..back], &plain[..], "{p:?} seq {seq}");
        }
    }
}

#[test]
fn forged_truncated_and_replayed_are_distinct_errors() {
    for p in PROFILES {
        let (mut tx, mut rx) = pair(p);
        let mut buf = [0u8; 1500];
        let len = rtp(&mut buf, 5, 10, 100);
        let slen = tx.protect_rtp(&mut buf, len).unwrap();
        let srtp = buf[..slen].to_vec();

        // Every single-bit flip in header, payload or tag fails authentication
        // (or, for the version bits, parsing) and leaves no state behind.
        for i in 0..slen {
            let mut forged = srtp.clone();
            forged[i] ^= 0x01;
            let e = rx.unprotect_rtp(&mut forged).unwrap_err();
            assert!(
                matches!(e, SrtpError::AuthFailed | SrtpError::Malformed(_)),
                "{p:?} byte {i}: {e:?}"
            );
        }
        assert_eq!(rx.rtp_index(5), None, "forgeries created no stream");

        let mut short = srtp.clone();
        let hl = crate::wire::rtp::header_len(&short).unwrap();
        assert_eq!(
            rx.unprotect_rtp(&mut short[..hl + p.rtp_overhead() - 1]),
            Err(SrtpError::Truncated)
        );
        let mut ok = srtp.clone();
        assert!(rx.unprotect_rtp(&mut ok).is_ok());
        let mut again = srtp.clone();
        assert_eq!(rx.unprotect_rtp(&mut again), Err(SrtpError::Replayed));
        // A forged packet with the replayed index is still a replay: the
        // window is checked first and costs no crypto.
        let mut wrong_key =
            SrtpContext::new(p, &[1; 16], &SALT[..p.salt_len()], SrtpConfig::default()).unwrap();
        let len = rtp(&mut buf, 5, 11, 100);
        let slen = wrong_key.protect_rtp(&mut buf, len).unwrap();
        assert_eq!(
            rx.unprotect_rtp(&mut buf[..slen]),
            Err(SrtpError::AuthFailed)
        );
    }
}

#[test]
fn too_old_for_the_window() {
    let p = Profile::AeadAes128Gcm;
    let (mut tx, mut rx) = pair(p);
    let mut buf = [0u8; 1500];
    let mut old = Vec::new();
    for seq in 0..2000u16 {
        let len = rtp(&mut buf, 1, seq, 10);
        let slen = tx.protect_rtp(&mut buf, len).unwrap();
        if seq == 900 {
            old = buf[..slen].to_vec();
            continue; // lost, arrives late below
        }
        rx.unprotect_rtp(&mut buf[..slen]).unwrap();
    }
    assert_eq!(rx.unprotect_rtp(&mut old), Err(SrtpError::TooOld));
}

#[test]
fn rollover_counter_follows_wrap_and_reordering() {
    for p in PROFILES {
        let (mut tx, mut rx) = pair(p);
        let mut buf = [0u8; 1500];
        let mut pending = Vec::new();
        // Three wraps; deliver in pairs swapped to reorder across each wrap.
        let mut seq: u16 = 65_000;
        for i in 0..200_000u32 {
            let len = rtp(&mut buf, 3, seq, 20);
            let plain = buf[..len].to_vec();
            let slen = tx.protect_rtp(&mut buf, len).unwrap();
            pending.push((buf[..slen].to_vec(), plain));
            if i % 2 == 1 {
                for (mut s, plain) in pending.drain(..).rev() {
                    let n = rx.unprotect_rtp(&mut s).unwrap();
                    assert_eq!(&s[..n], &plain[..]);
                }
            }
            seq = seq.wrapping_add(1);
        }
        let expected_index = 65_000u64 + 199_999;
        assert_eq!(tx.rtp_index(3), Some(expected_index));
        assert_eq!(rx.rtp_index(3), Some(expected_index));
    }
}

#[test]
fn set_roc_for_a_late_joiner() {
    let p = Profile::Aes128CmHmacSha1_80;
    let (mut tx, mut rx) = pair(p);
    tx.set_roc(8, 5).unwrap();
    rx.set_roc(8, 5).unwrap();
    let mut buf = [0u8; 1500];
    let len = rtp(&mut buf, 8, 100, 50);
    let slen = tx.protect_rtp(&mut buf, len).unwrap();
    assert!(rx.unprotect_rtp(&mut buf[..slen]).is_ok());
    assert_eq!(rx.rtp_index(8), Some(5 << 16 | 100));
}

#[test]
fn buffer_without_room_for_the_tag() {
    for p in PROFILES {
        let (mut tx, _) = pair(p);
        let mut buf = [0u8; 1500];
        let len = rtp(&mut buf, 1, 1, 100);
        assert_eq!(
            tx.protect_rtp(&mut buf[..len + p.rtp_overhead() - 1], len),
            Err(SrtpError::BufferTooSmall)
        );
        assert_eq!(
            tx.protect_rtp(&mut buf[..len], len + 1),
            Err(SrtpError::Truncated)
        );
    }
}

#[test]
fn ssrc_table_is_bounded() {
    let p = Profile::AeadAes128Gcm;
    let cfg = SrtpConfig {
        max_ssrcs: 2,
        ..Default::default()
    };
    let mut tx = SrtpContext::new(p, &KEY, &SALT[..12], cfg).unwrap();
    let mut buf = [0u8; 1500];
    for ssrc in 1..=2 {
        let len = rtp(&mut buf, ssrc, 1, 10);
        tx.protect_rtp(&mut buf, len).unwrap();
    }
    let len = rtp(&mut buf, 3, 1, 10);
    assert_eq!(tx.protect_rtp(&mut buf, len), Err(SrtpError::TooManySsrcs));
}

fn rtcp_rr(buf: &mut [u8], ssrc: u32) -> usize {
    buf.fill(0xa5);
    // RR with one report block: 8 + 24 bytes.
    let rr: [u8; 32] = [
        0x81, 201, 0, 7, 0, 0, 0, 0, 0, 0, 0, 9, 1, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5, 0,
        0, 0, 6,
    ];
    buf[..32].copy_from_slice(&rr);
    buf[4..8].copy_from_slice(&ssrc.to_be_bytes());
    32
}

#[test]
fn rtcp_round_trip_replay_and_unencrypted() {
    for p in PROFILES {
        let (mut tx, mut rx) = pair(p);
        let mut buf = [0u8; 1500];
        for i in 1..=50u32 {
            let len = rtcp_rr(&mut buf, 77);
            let plain = buf[..len].to_vec();
            let slen = tx.protect_rtcp(&mut buf, len).unwrap();
            assert_eq!(slen, len + p.rtcp_overhead());
            let word_at = match p {
                Profile::AeadAes128Gcm => slen - 4,
                Profile::Aes128CmHmacSha1_80 => slen - 14,
            };
            assert_eq!(
                crate::wire::be32(&buf, word_at),
                0x8000_0000 | i,
                "E bit and index"
            );
            let srtcp = buf[..slen].to_vec();
            let mut forged = srtcp.clone();
            forged[10] ^= 0x80;
            assert_eq!(rx.unprotect_rtcp(&mut forged), Err(SrtpError::AuthFailed));
            let n = rx.unprotect_rtcp(&mut buf[..slen]).unwrap();
            assert_eq!(&buf[..n], &plain[..]);
            let mut again = srtcp;
            assert_eq!(rx.unprotect_rtcp(&mut again), Err(SrtpError::Replayed));
        }
        // E = 0: authenticated only; the payload travels in the clear.
        let len = rtcp_rr(&mut buf, 77);
        let plain = buf[..len].to_vec();
        let slen = len + p.rtcp_overhead();
        tx.cipher.seal_rtcp(&mut buf[..slen], len, 77, 1000, false);
        assert_eq!(&buf[..len], &plain[..]);
        let n = rx.unprotect_rtcp(&mut buf[..slen]).unwrap();
        assert_eq!(&buf[..n], &plain[..]);
        let mut buf2 = [0u8; 1500];
        let len = rtcp_rr(&mut buf2, 77);
        tx.cipher.seal_rtcp(&mut buf2[..slen], len, 77, 1001, false);
        buf2[20] ^= 1;
        assert_eq!(
            rx.unprotect_rtcp(&mut buf2[..slen]),
            Err(SrtpError::AuthFailed)
        );
    }
}

#[test]
fn key_lengths_are_checked() {
    assert!(SrtpContext::new(Profile::AeadAes128Gcm, &KEY, &SALT, SrtpConfig::default()).is_err());
    assert!(
        SrtpContext::new(
            Profile::Aes128CmHmacSha1_80,
            &KEY,
            &SALT[..12],
            SrtpConfig::default()
        )
        .is_err()
    );
    assert!(
        SrtpContext::new(
            Profile::Aes128CmHmacSha1_80,
            &KEY[..15],
            &SALT,
            SrtpConfig::default()
        )
        .is_err()
    );
    assert_eq!(
        Profile::from_name("aead_aes_128_gcm"),
        Some(Profile::AeadAes128Gcm)
    );
    assert_eq!(Profile::from_name("AES_CM_128_HMAC_SHA1_32"), None);
}

/// A registered send stream protects exactly as the table lookup does,
/// beyond the table's configured capacity, and refuses another SSRC.
#[test]
fn registered_send_streams_match_protect_rtp() {
    for p in PROFILES {
        let (mut by_lookup, mut rx) = pair(p);
        let (mut by_stream, _) = pair(p);
        let streams: Vec<(u32, usize)> = (0..100u32)
            .map(|ssrc| (ssrc, by_stream.add_rtp_stream(ssrc)))
            .collect();
        assert_eq!(by_stream.add_rtp_stream(5), streams[5].1, "registered once");
        let mut a = [0u8; 1500];
        let mut b = [0u8; 1500];
        for seq in [65_530u16, 65_535, 0, 3] {
            for &(ssrc, stream) in &streams[..32] {
                let len = rtp(&mut a, ssrc, seq, 300);
                rtp(&mut b, ssrc, seq, 300);
                let n = by_lookup.protect_rtp(&mut a, len).unwrap();
                let m = by_stream.protect_rtp_stream(stream, &mut b, len).unwrap();
                assert_eq!(a[..n], b[..m], "{p:?} ssrc {ssrc} seq {seq}");
                assert!(rx.unprotect_rtp(&mut b[..m]).is_ok());
            }
            // Past the 32 the lookup table holds.
            let (ssrc, stream) = streams[99];
            let len = rtp(&mut b, ssrc, seq, 300);
            assert!(by_stream.protect_rtp_stream(stream, &mut b, len).is_ok());
        }
        let len = rtp(&mut b, 7, 1, 300);
        assert_eq!(
            by_stream.protect_rtp_stream(streams[8].1, &mut b, len),
            Err(SrtpError::UnknownStream)
        );
        assert_eq!(
            by_stream.protect_rtp_stream(1_000, &mut b, len),
            Err(SrtpError::UnknownStream)
        );
    }
}
