//! Hostile input: 100,000 random and mutated datagrams through every view and
//! through `unprotect`. Nothing may panic, and no mutated SRTP/SRTCP packet
//! may authenticate.

use std::net::SocketAddr;

use sfu_core::srtp::{Profile, SrtpConfig, SrtpContext};
use sfu_core::wire::rtcp::{self, RtcpIter, RtcpPacket};
use sfu_core::wire::rtp::{ExtensionMap, RtpHeader, RtpPacket, RtpPacketMut, write_header};
use sfu_core::wire::stun::{self, StunMessage, StunWriter};
use sfu_core::wire::{DatagramKind, classify};

const DATAGRAMS: usize = 100_000;

/// splitmix64: a seeded, dependency-free generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const MAP: ExtensionMap = ExtensionMap {
    mid: Some(1),
    rid: Some(2),
    repaired_rid: Some(3),
    abs_send_time: Some(4),
    transport_cc: Some(5),
    audio_level: Some(6),
};

/// Valid datagrams of every kind, to mutate.
fn seeds(srtp_tx: &mut [SrtpContext]) -> Vec<(Vec<u8>, bool)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 1500];
    // Plain RTP with one-byte and two-byte extensions.
    for (i, ext) in [
        &[(1u8, &b"0"[..]), (5, &[0, 1][..]), (6, &[0x85][..])][..],
        &[(15, &[9u8; 20][..]), (2, &b"hi"[..])][..],
        &[][..],
    ]
    .into_iter()
    .enumerate()
    {
        let h = RtpHeader {
            payload_type: 96,
            sequence_number: i as u16,
            ssrc: 42,
            ..Default::default()
        };
        let n = write_header(&mut buf, &h, ext).unwrap();
        out.push(([&buf[..n], &[7u8; 100][..]].concat(), false));
    }
    // SRTP and SRTCP from each profile (flagged: must never authenticate
    // once mutated).
    for tx in srtp_tx.iter_mut() {
        for seq in 0..4u16 {
            let h = RtpHeader {
                payload_type: 111,
                sequence_number: seq,
                ssrc: 7,
                ..Default::default()
            };
            let n = write_header(&mut buf, &h, &[(1, b"a")]).unwrap();
            let n = tx.protect_rtp(&mut buf, n + 60).unwrap();
            out.push((buf[..n].to_vec(), true));
        }
        let n = rtcp::write_pli(&mut buf, 7, 9).unwrap();
        let n = tx.protect_rtcp(&mut buf, n).unwrap();
        out.push((buf[..n].to_vec(), true));
    }
    // RTCP: a compound of every packet the SFU writes (SR, SDES, RR, NACK,
    // PLI, transport-cc) and of the FIR and REMB a browser sends.
    let block = rtcp::ReportBlockData {
        ssrc: 2,
        fraction_lost: 10,
        cumulative_lost: -3,
        highest_seq: 70_000,
        jitter: 5,
        last_sr: 6,
        delay_since_last_sr: 7,
    };
    let mut n = rtcp::write_sender_report(&mut buf, 1, 1 << 40, 9, 10, 11, &[block]).unwrap();
    n += rtcp::write_sdes_cname(&mut buf[n..], 1, b"sfu-room-1").unwrap();
    n += rtcp::write_receiver_report(&mut buf[n..], 1, &[block, block]).unwrap();
    n += rtcp::write_nack(&mut buf[n..], 1, 2, &[65_534, 65_535, 0, 3, 40]).unwrap();
    n += rtcp::write_pli(&mut buf[n..], 1, 2).unwrap();
    n += rtcp::write_fir(&mut buf[n..], 1, &[(2, 3)]).unwrap();
    n += rtcp::write_remb(&mut buf[n..], 1, 2_500_000, &[2, 3]).unwrap();
    n += rtcp::write_transport_cc(
        &mut buf[n..],
        1,
        2,
        100,
        5,
        0,
        &[(100, Some(250)), (101, None), (103, Some(70_000))],
    )
    .unwrap();
    out.push((buf[..n].to_vec(), false));
    // STUN binding request and response with integrity and fingerprint.
    for (typ, addr) in [
        (stun::BINDING_REQUEST, None),
        (
            stun::BINDING_SUCCESS,
            Some("[2001:db8::1]:5000".parse::<SocketAddr>().unwrap()),
        ),
    ] {
        let mut w = StunWriter::new(&mut buf, typ, &[3; 12]).unwrap();
        w.add_username(b"abcd:efgh").unwrap();
        w.add_priority(1234).unwrap();
        w.add_use_candidate().unwrap();
        if let Some(a) = addr {
            w.add_xor_mapped_address(a).unwrap();
        }
        w.add_message_integrity(b"password").unwrap();
        w.add_fingerprint().unwrap();
        let n = w.finish();
        out.push((buf[..n].to_vec(), false));
    }
    out
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(6) {
            0 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] ^= 1 << rng.below(8);
            }
            1 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] = rng.next() as u8;
            }
            2 => d.truncate(rng.below(d.len() + 1)),
            3 => d.extend((0..rng.below(40)).map(|_| rng.next() as u8)),
            // Length fields: RTP extension length, RTCP length, STUN length.
            4 if d.len() >= 4 => {
                let at = [2, 14, 16, 18, 22].get(rng.below(5)).copied().unwrap_or(2);
                if at + 1 < d.len() {
                    d[at] = rng.next() as u8;
                    d[at + 1] = rng.next() as u8;
                }
            }
            _ => {
                // Swap in a first byte from another kind's range.
                if let Some(b) = d.first_mut() {
                    *b = [0u8, 1, 22, 0x80, 0x90, 0xa0, 0xbf, 0x81][rng.below(8)];
                }
            }
        }
    }
    d
}

fn random(rng: &mut Rng) -> Vec<u8> {
    let len = rng.below(1500);
    let mut d: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
    if let Some(b) = d.first_mut() {
        *b = [0u8, 1, 22, 0x80, 0x90, 0xa0, 0xb0, *b][rng.below(8)];
    }
    d
}

#[derive(Default, Debug)]
struct Seen {
    rtp_ok: usize,
    rtcp_ok: usize,
    stun_ok: usize,
    integrity_ok: usize,
    unprotect_ok: usize,
}

fn exercise(d: &[u8], rx: &mut [SrtpContext], seen: &mut Seen) {
    let _ = classify(d);
    if let Ok(p) = RtpPacket::new_checked(d) {
        seen.rtp_ok += 1;
        let _ = (
            p.marker(),
            p.payload_type(),
            p.sequence_number(),
            p.timestamp(),
        );
        let _ = (
            p.ssrc(),
            p.csrcs().count(),
            p.payload().len(),
            p.padding_len(),
        );
        let _ = (
            p.extension_profile(),
            p.extensions().count(),
            p.mid(&MAP),
            p.rid(&MAP),
        );
        let _ = (
            p.repaired_rid(&MAP),
            p.abs_send_time(&MAP),
            p.transport_cc_seq(&MAP),
        );
        let _ = p.audio_level(&MAP);
    }
    let mut owned = d.to_vec();
    if let Ok(mut m) = RtpPacketMut::new_checked(&mut owned) {
        m.set_sequence_number(1);
        m.set_timestamp(2);
        m.set_ssrc(3);
        m.set_payload_type(4);
        m.set_marker(true);
        m.set_transport_cc_seq(&MAP, 5);
        m.set_extension(1, b"x");
    }
    for item in RtcpIter::new(d) {
        let Ok(pkt) = item else { break };
        seen.rtcp_ok += 1;
        let _ = pkt.packet_type();
        match pkt {
            RtcpPacket::SenderReport(sr) => {
                let _ = (sr.ssrc(), sr.ntp_time(), sr.rtp_time(), sr.packet_count());
                let _ = (sr.octet_count(), sr.extension().len());
                sr.report_blocks().for_each(|b| {
                    let _ = b.to_data();
                });
            }
            RtcpPacket::ReceiverReport(rr) => {
                let _ = (rr.ssrc(), rr.extension().len());
                rr.report_blocks().for_each(|b| {
                    let _ = (b.ssrc(), b.fraction_lost(), b.cumulative_lost(), b.jitter());
                    let _ = (b.highest_seq(), b.last_sr(), b.delay_since_last_sr());
                });
            }
            RtcpPacket::Sdes(s) => s.chunks().for_each(|c| {
                let _ = c.ssrc();
                c.items().for_each(drop);
            }),
            RtcpPacket::Bye(b) => {
                let _ = (b.ssrcs().count(), b.reason());
            }
            RtcpPacket::Nack(n) => {
                let _ = (
                    n.sender_ssrc(),
                    n.media_ssrc(),
                    n.pairs().count(),
                    n.lost().count(),
                );
            }
            RtcpPacket::Pli(p) => {
                let _ = (p.sender_ssrc(), p.media_ssrc());
            }
            RtcpPacket::Fir(f) => {
                let _ = (f.sender_ssrc(), f.entries().count());
            }
            RtcpPacket::Remb(r) => {
                let _ = (r.sender_ssrc(), r.bitrate_bps(), r.ssrcs().count());
            }
            RtcpPacket::TransportCc(t) => {
                let _ = (t.base_seq(), t.packet_status_count(), t.reference_time_us());
                let _ = (t.fb_pkt_count(), t.packets().count());
            }
            _ => {}
        }
    }
    if let Ok(m) = StunMessage::new_checked(d) {
        seen.stun_ok += 1;
        let _ = (
            m.method(),
            m.class(),
            m.transaction_id(),
            m.attributes().count(),
        );
        let _ = (
            m.username(),
            m.priority(),
            m.use_candidate(),
            m.ice_controlling(),
        );
        let _ = (m.ice_controlled(), m.xor_mapped_address(), m.error_code());
        if m.verify_integrity(b"password").is_ok() {
            seen.integrity_ok += 1;
        }
        let _ = m.verify_fingerprint();
    }
    for ctx in rx.iter_mut() {
        let mut b = d.to_vec();
        if ctx.unprotect_rtp(&mut b).is_ok() {
            seen.unprotect_ok += 1;
        }
        let mut b = d.to_vec();
        if ctx.unprotect_rtcp(&mut b).is_ok() {
            seen.unprotect_ok += 1;
        }
    }
}

#[test]
fn random_and_mutated_datagrams_never_panic_and_never_authenticate() {
    let profiles = [Profile::AeadAes128Gcm, Profile::Aes128CmHmacSha1_80];
    let ctx = |p: Profile| {
        SrtpContext::new(p, &[5; 16], &[6; 14][..p.salt_len()], SrtpConfig::default()).unwrap()
    };
    let mut tx: Vec<_> = profiles.iter().map(|&p| ctx(p)).collect();
    let mut rx: Vec<_> = profiles.iter().map(|&p| ctx(p)).collect();
    let seeds = seeds(&mut tx);
    let mut rng = Rng(0x5eed_f00d);
    let mut seen = Seen::default();
    let mut kinds = [0usize; 5];
    for i in 0..DATAGRAMS {
        let (d, check_auth) = if i % 4 == 0 {
            (random(&mut rng), false)
        } else {
            let (seed, srtp) = &seeds[rng.below(seeds.len())];
            let d = mutate(&mut rng, seed);
            let changed = d != *seed;
            (d, *srtp && changed)
        };
        kinds[match classify(&d) {
            DatagramKind::Stun => 0,
            DatagramKind::Dtls => 1,
            DatagramKind::Rtp => 2,
            DatagramKind::Rtcp => 3,
            _ => 4,
        }] += 1;
        let before = seen.unprotect_ok;
        exercise(&d, &mut rx, &mut seen);
        if check_auth {
            assert_eq!(
                seen.unprotect_ok, before,
                "a mutated SRTP/SRTCP packet authenticated: {d:02x?}"
            );
        }
    }
    // The mutations must reach the accessors, not only the early rejections.
    assert!(seen.rtp_ok > 5_000, "{seen:?}");
    assert!(seen.rtcp_ok > 5_000, "{seen:?}");
    assert!(seen.stun_ok > 1_000, "{seen:?}");
    assert!(
        kinds.iter().all(|&k| k > 100),
        "every kind was generated: {kinds:?}"
    );
    println!("{DATAGRAMS} datagrams: {seen:?}, kinds (stun, dtls, rtp, rtcp, other) {kinds:?}");
}
