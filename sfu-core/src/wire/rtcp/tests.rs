use super::*;

use rtcp::packet::Packet;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Marshals one packet with the `rtcp` crate (webrtc-rs).
fn oracle<P: Packet + Send + Sync + 'static>(packet: P) -> Vec<u8> {
    rtcp::packet::marshal(&[Box::new(packet)]).unwrap().to_vec()
}

/// Parses `buf` with the `rtcp` crate.
fn oracle_parse(buf: &[u8]) -> Vec<Box<dyn Packet + Send + Sync>> {
    rtcp::packet::unmarshal(&mut &buf[..]).unwrap()
}

/// Counts the packets of a compound, failing with the first error (the
/// walk [`RtcpIter`] does, as a `Result`).
fn validate(buf: &[u8]) -> Result<usize, WireError> {
    if buf.is_empty() {
        return Err(WireError::Truncated);
    }
    RtcpIter::new(buf).try_fold(0, |n, p| p.map(|_| n + 1))
}

fn only(buf: &[u8]) -> RtcpPacket<'_> {
    let mut it = RtcpIter::new(buf);
    let packet = it.next().unwrap().unwrap();
    assert!(it.next().is_none());
    assert_eq!(validate(buf), Ok(1));
    packet
}

fn twcc_list(t: &TransportCc<'_>) -> Vec<(u16, PacketStatus, Option<i64>)> {
    t.packets().collect()
}

/// Reads every field of every packet; must never panic.
fn exercise(buf: &[u8]) -> u64 {
    let mut acc = 0u64;
    let mut add = |v: u64| acc = acc.wrapping_mul(31).wrapping_add(v);
    for packet in RtcpIter::new(buf) {
        let Ok(packet) = packet else {
            add(1);
            continue;
        };
        add(u64::from(packet.packet_type()));
        match packet {
            RtcpPacket::SenderReport(sr) => {
                add(sr.ntp_time() ^ u64::from(sr.ssrc() ^ sr.rtp_time()));
                add(u64::from(sr.packet_count() ^ sr.octet_count()));
                add(sr.extension().len() as u64 + u64::from(sr.report_count()));
                for b in sr.report_blocks() {
                    add(u64::from(b.ssrc()) ^ b.cumulative_lost() as u64);
                    add(u64::from(b.to_data().jitter));
                }
            }
            RtcpPacket::ReceiverReport(rr) => {
                add(u64::from(rr.ssrc()) + rr.extension().len() as u64);
                for b in rr.report_blocks() {
                    let d = b.to_data();
                    add(u64::from(d.fraction_lost) + u64::from(d.highest_seq));
                    add(u64::from(d.last_sr ^ d.delay_since_last_sr));
                }
            }
            RtcpPacket::Sdes(sdes) => {
                add(u64::from(sdes.chunk_count()));
                for c in sdes.chunks() {
                    add(u64::from(c.ssrc()));
                    for (t, v) in c.items() {
                        add(u64::from(t) + v.len() as u64);
                    }
                }
            }
            RtcpPacket::Bye(bye) => {
                add(bye.ssrcs().map(u64::from).fold(0, u64::wrapping_add));
                add(bye.reason().map_or(0, |r| r.len() as u64));
            }
            RtcpPacket::Nack(nack) => {
                add(u64::from(nack.sender_ssrc() ^ nack.media_ssrc()));
                for (pid, blp) in nack.pairs() {
                    add(u64::from(pid) + u64::from(blp));
                }
                add(nack.lost().map(u64::from).fold(0, u64::wrapping_add));
            }
            RtcpPacket::Remb(remb) => {
                add(remb.bitrate_bps() ^ u64::from(remb.sender_ssrc() ^ remb.media_ssrc()));
                add(u64::from(remb.exponent()) + u64::from(remb.mantissa()));
                add(remb.ssrcs().map(u64::from).fold(0, u64::wrapping_add));
            }
            RtcpPacket::Pli(pli) => add(u64::from(pli.sender_ssrc() ^ pli.media_ssrc())),
            RtcpPacket::Fir(fir) => {
                add(u64::from(fir.sender_ssrc() ^ fir.media_ssrc()));
                for (ssrc, seq) in fir.entries() {
                    add(u64::from(ssrc) + u64::from(seq));
                }
            }
            RtcpPacket::TransportCc(t) => {
                add(u64::from(t.sender_ssrc() ^ t.media_ssrc()));
                add(u64::from(t.base_seq()) + u64::from(t.packet_status_count()));
                add(t.reference_time_us() as u64 ^ u64::from(t.fb_pkt_count()));
                let mut n = 0u32;
                for (seq, status, delta) in t.packets() {
                    n += 1;
                    add(u64::from(seq) ^ status as u64 ^ delta.unwrap_or(7) as u64);
                }
                assert!(n <= u32::from(t.packet_status_count()));
            }
            RtcpPacket::Other { fmt, body, .. } => add(u64::from(fmt) + body.len() as u64),
        }
    }
    let _ = validate(buf);
    acc
}

// webrtc-rs `SenderReport` with one report block (cumulative lost -2).
const SR: &str = "81c8000c902f9e2eda8bd1fcdddda05aaaf4edd50000000100000002\
                  bc5e9a4012fffffe000046e10000011109f3643200024a79";
// webrtc-rs `ReceiverReport` with two report blocks.
const RR: &str = "82c9000d902f9e2ebc5e9a4012fffffe000046e10000011109f3643200024a79\
                  0000000712fffffe000046e10000011109f3643200024a79";
// RFC 3550 SDES, two chunks, null-padded: CNAME "abcd"; CNAME "x" + TOOL "sfu".
const SDES: &str = "82ca000710000000010461626364000020000000010178060373667500000000";
// webrtc-rs SDES of the same content: pads chunks with a count byte, not nulls.
const SDES_WEBRTC_RS: &str = "82ca000710000000010461626364000120000000010178060373667500000003";
const BYE: &str = "82cb0003010203040506070803464f4f";
// webrtc-rs BYE without reason: zero reason length, then RTCP padding.
const BYE_PADDED: &str = "a1cb00020102030400000003";
const NACK: &str = "81cd0004902f9e2e902f9e2eaaaa5555ffff0003";
const PLI: &str = "81ce0002902f9e2e902f9e2f";
const FIR: &str = "84ce000600000000000000004bc4fcb47f0000001234567802000000";
const REMB: &str = "8fce0006000000010000000052454d42021a20df4874ed1611223344";
// Chrome captures from webrtc-rs tests: two run-length chunks, large deltas.
const TWCC_RUNS: &str = "8fcd0007fa17fa17193dd8bb0174000645b15a40400220041ffe1f9ad000d000";
// 2-bit status vector + run-length chunk past the status count, padding bit.
const TWCC_VECTOR: &str = "afcd00079b74f61f9371dcbc853c000963f916b3d55200309baa6aaa7b010901";
// 1-bit status vector, padding bit. (The webrtc-rs test vector this comes
// from ends in `0003`, a padding count one too large; see below.)
const TWCC_ONE_BIT: &str = "afcd0006fa17fa17193dd8bb0001000e10636d00ba00100c0c100002";

fn all_fixed() -> Vec<Vec<u8>> {
    [
        SR,
        RR,
        SDES,
        SDES_WEBRTC_RS,
        BYE,
        BYE_PADDED,
        NACK,
        PLI,
        FIR,
        REMB,
        TWCC_RUNS,
        TWCC_VECTOR,
        TWCC_ONE_BIT,
    ]
    .iter()
    .map(|s| hex(s))
    .collect()
}

#[test]
fn sender_report_fixed() {
    let rb = rtcp::reception_report::ReceptionReport {
        ssrc: 0xbc5e9a40,
        fraction_lost: 0x12,
        total_lost: 0xfffffe,
        last_sequence_number: 0x46e1,
        jitter: 273,
        last_sender_report: 0x9f36432,
        delay: 150137,
    };
    let buf = hex(SR);
    assert_eq!(
        oracle(rtcp::sender_report::SenderReport {
            ssrc: 0x902f9e2e,
            ntp_time: 0xda8bd1fcdddda05a,
            rtp_time: 0xaaf4edd5,
            packet_count: 1,
            octet_count: 2,
            reports: vec![rb],
            profile_extensions: Default::default(),
        }),
        buf
    );
    let RtcpPacket::SenderReport(sr) = only(&buf) else {
        panic!("not an SR")
    };
    assert_eq!(SenderReport::new_checked(&buf), Ok(sr));
    assert_eq!(sr.ssrc(), 0x902f9e2e);
    assert_eq!(sr.ntp_time(), 0xda8bd1fcdddda05a);
    assert_eq!(sr.rtp_time(), 0xaaf4edd5);
    assert_eq!((sr.packet_count(), sr.octet_count()), (1, 2));
    assert_eq!(sr.report_count(), 1);
    assert!(sr.extension().is_empty());
    let blocks: Vec<_> = sr.report_blocks().map(|b| b.to_data()).collect();
    assert_eq!(
        blocks,
        [ReportBlockData {
            ssrc: 0xbc5e9a40,
            fraction_lost: 0x12,
            cumulative_lost: -2,
            highest_seq: 0x46e1,
            jitter: 273,
            last_sr: 0x9f36432,
            delay_since_last_sr: 150137,
        }]
    );
    assert_eq!(
        ReceiverReport::new_checked(&buf),
        Err(WireError::UnknownType)
    );
}

#[test]
fn receiver_report_fixed() {
    let buf = hex(RR);
    let RtcpPacket::ReceiverReport(rr) = only(&buf) else {
        panic!("not an RR")
    };
    assert_eq!(rr.ssrc(), 0x902f9e2e);
    assert_eq!(rr.report_count(), 2);
    let ssrcs: Vec<_> = rr.report_blocks().map(|b| b.ssrc()).collect();
    assert_eq!(ssrcs, [0xbc5e9a40, 7]);
    let b = rr.report_blocks().nth(1).unwrap();
    assert_eq!((b.fraction_lost(), b.cumulative_lost()), (0x12, -2));
    assert_eq!((b.highest_seq(), b.jitter()), (0x46e1, 273));
    assert_eq!((b.last_sr(), b.delay_since_last_sr()), (0x9f36432, 150137));
    // RC claiming a third block that the length does not hold.
    let mut bad = buf.clone();
    bad[0] = 0x83;
    assert_eq!(ReceiverReport::new_checked(&bad), Err(WireError::Length));
}

#[test]
fn sdes_fixed() {
    for vector in [SDES, SDES_WEBRTC_RS] {
        let buf = hex(vector);
        let RtcpPacket::Sdes(sdes) = only(&buf) else {
            panic!("not SDES")
        };
        assert_eq!(sdes.chunk_count(), 2);
        type Items<'a> = Vec<(u8, &'a [u8])>;
        let chunks: Vec<(u32, Items<'_>)> = sdes
            .chunks()
            .map(|c| (c.ssrc(), c.items().collect()))
            .collect();
        assert_eq!(
            chunks,
            [
                (0x1000_0000, vec![(SDES_CNAME, b"abcd".as_slice())]),
                (
                    0x2000_0000,
                    vec![
                        (SDES_CNAME, b"x".as_slice()),
                        (SDES_TOOL, b"sfu".as_slice())
                    ]
                ),
            ]
        );
    }
    // An item running past the packet end.
    let mut bad = hex(SDES);
    bad[9] = 0x20;
    assert_eq!(Sdes::new_checked(&bad), Err(WireError::Attribute));
    // A chunk without END item.
    let bad = hex("81ca000210000000010261620000");
    assert_eq!(Sdes::new_checked(&bad[..12]), Err(WireError::Attribute));
    // An empty SDES is fine.
    assert_eq!(
        Sdes::new_checked(&hex("80ca0000"))
            .unwrap()
            .chunks()
            .count(),
        0
    );
}

#[test]
fn bye_fixed() {
    let buf = hex(BYE);
    let RtcpPacket::Bye(bye) = only(&buf) else {
        panic!("not BYE")
    };
    assert_eq!(bye.ssrcs().collect::<Vec<_>>(), [0x01020304, 0x05060708]);
    assert_eq!(bye.reason(), Some(b"FOO".as_slice()));

    let buf = hex(BYE_PADDED);
    let bye = Bye::new_checked(&buf).unwrap();
    assert_eq!(bye.ssrcs().collect::<Vec<_>>(), [0x01020304]);
    assert_eq!(bye.reason(), None);

    // Reason length past the end.
    let mut bad = hex(BYE);
    bad[12] = 4;
    assert_eq!(Bye::new_checked(&bad), Err(WireError::Length));
}

#[test]
fn nack_fixed() {
    use rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
    let buf = hex(NACK);
    assert_eq!(
        oracle(TransportLayerNack {
            sender_ssrc: 0x902f9e2e,
            media_ssrc: 0x902f9e2e,
            nacks: vec![
                NackPair {
                    packet_id: 0xaaaa,
                    lost_packets: 0x5555,
                },
                NackPair {
                    packet_id: 0xffff,
                    lost_packets: 0x0003,
                },
            ],
        }),
        buf
    );
    let RtcpPacket::Nack(nack) = only(&buf) else {
        panic!("not NACK")
    };
    assert_eq!(
        (nack.sender_ssrc(), nack.media_ssrc()),
        (0x902f9e2e, 0x902f9e2e)
    );
    assert_eq!(
        nack.pairs().collect::<Vec<_>>(),
        [(0xaaaa, 0x5555), (0xffff, 3)]
    );
    let mut expected: Vec<u16> = vec![0xaaaa];
    expected.extend((0..16).step_by(2).map(|i| 0xaaab + i));
    expected.extend([0xffff, 0, 1]);
    assert_eq!(nack.lost().collect::<Vec<_>>(), expected);
    assert_eq!(Nack::new_checked(&buf[..11]), Err(WireError::Length));
}

#[test]
fn pli_fixed() {
    let buf = hex(PLI);
    assert_eq!(
        oracle(
            rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
                sender_ssrc: 0x902f9e2e,
                media_ssrc: 0x902f9e2f,
            }
        ),
        buf
    );
    let RtcpPacket::Pli(pli) = only(&buf) else {
        panic!("not PLI")
    };
    assert_eq!(
        (pli.sender_ssrc(), pli.media_ssrc()),
        (0x902f9e2e, 0x902f9e2f)
    );
    assert_eq!(
        Pli::new_checked(&hex("81ce0001902f9e2e")),
        Err(WireError::Truncated)
    );
    assert_eq!(Fir::new_checked(&buf), Err(WireError::UnknownType));
}

#[test]
fn fir_fixed() {
    use rtcp::payload_feedbacks::full_intra_request::{FirEntry, FullIntraRequest};
    let buf = hex(FIR);
    assert_eq!(
        oracle(FullIntraRequest {
            sender_ssrc: 0,
            media_ssrc: 0,
            fir: vec![
                FirEntry {
                    ssrc: 0x4bc4fcb4,
                    sequence_number: 0x7f,
                },
                FirEntry {
                    ssrc: 0x12345678,
                    sequence_number: 2,
                },
            ],
        }),
        buf
    );
    let RtcpPacket::Fir(fir) = only(&buf) else {
        panic!("not FIR")
    };
    assert_eq!((fir.sender_ssrc(), fir.media_ssrc()), (0, 0));
    assert_eq!(
        fir.entries().collect::<Vec<_>>(),
        [(0x4bc4fcb4, 0x7f), (0x12345678, 2)]
    );
}

#[test]
fn remb_fixed() {
    use rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
    let buf = hex(REMB);
    assert_eq!(
        oracle(ReceiverEstimatedMaximumBitrate {
            sender_ssrc: 1,
            bitrate: 8_927_168.0,
            ssrcs: vec![1215622422, 0x11223344],
        }),
        buf
    );
    let RtcpPacket::Remb(remb) = only(&buf) else {
        panic!("not REMB")
    };
    assert_eq!((remb.sender_ssrc(), remb.media_ssrc()), (1, 0));
    assert_eq!((remb.exponent(), remb.mantissa()), (6, 139_487));
    assert_eq!(remb.bitrate_bps(), 8_927_168);
    assert_eq!(remb.ssrcs().collect::<Vec<_>>(), [1215622422, 0x11223344]);
    // Other application-layer feedback is not REMB.
    let mut other = buf.clone();
    other[12] = b'X';
    assert!(matches!(
        only(&other),
        RtcpPacket::Other {
            packet_type: PT_PSFB,
            fmt: FMT_AFB,
            ..
        }
    ));
    assert_eq!(Remb::new_checked(&other), Err(WireError::UnknownType));
    // More SSRCs claimed than present.
    let mut bad = buf.clone();
    bad[16] = 3;
    assert_eq!(Remb::new_checked(&bad), Err(WireError::Length));
    // Largest exponent saturates instead of overflowing.
    let mut big = buf;
    big[17] = 0xff;
    assert_eq!(Remb::new_checked(&big).unwrap().bitrate_bps(), u64::MAX);
}

#[test]
fn transport_cc_fixed_runs() {
    let buf = hex(TWCC_RUNS);
    let RtcpPacket::TransportCc(t) = only(&buf) else {
        panic!("not transport-cc")
    };
    assert_eq!((t.sender_ssrc(), t.media_ssrc()), (4195875351, 423483579));
    assert_eq!((t.base_seq(), t.packet_status_count()), (372, 6));
    assert_eq!((t.reference_time(), t.fb_pkt_count()), (4567386, 64));
    assert_eq!(t.reference_time_us(), 4567386 * 64_000);
    use PacketStatus::*;
    assert_eq!(
        twcc_list(&t),
        [
            (372, ReceivedLargeDelta, Some(2_047_500)),
            (373, ReceivedLargeDelta, Some(2_022_500)),
            (374, ReceivedSmallDelta, Some(52_000)),
            (375, ReceivedSmallDelta, Some(0)),
            (376, ReceivedSmallDelta, Some(52_000)),
            (377, ReceivedSmallDelta, Some(0)),
        ]
    );
}

#[test]
fn transport_cc_fixed_vectors() {
    use PacketStatus::*;
    let buf = hex(TWCC_VECTOR);
    let t = TransportCc::new_checked(&buf).unwrap();
    assert_eq!((t.base_seq(), t.packet_status_count()), (34108, 9));
    assert_eq!((t.reference_time(), t.fb_pkt_count()), (6551830, 179));
    assert_eq!(
        twcc_list(&t),
        [
            (34108, ReceivedSmallDelta, Some(38_750)),
            (34109, ReceivedSmallDelta, Some(42_500)),
            (34110, ReceivedSmallDelta, Some(26_500)),
            (34111, ReceivedSmallDelta, Some(42_500)),
            (34112, ReceivedSmallDelta, Some(30_750)),
            (34113, NotReceived, None),
            (34114, ReceivedLargeDelta, Some(66_250)),
            (34115, NotReceived, None),
            (34116, NotReceived, None),
        ]
    );

    let buf = hex(TWCC_ONE_BIT);
    let t = TransportCc::new_checked(&buf).unwrap();
    assert_eq!((t.base_seq(), t.packet_status_count()), (1, 14));
    let list = twcc_list(&t);
    assert_eq!(list.len(), 14);
    assert_eq!(
        list[..5],
        [
            (1, ReceivedSmallDelta, Some(4000)),
            (2, ReceivedSmallDelta, Some(3000)),
            (3, ReceivedSmallDelta, Some(3000)),
            (4, NotReceived, None),
            (5, ReceivedSmallDelta, Some(4000)),
        ]
    );
    assert!(list[5..].iter().all(|p| p.1 == NotReceived));

    // With the padding count one too large, the last delta is cut off.
    let mut bad = hex(TWCC_ONE_BIT);
    bad[27] = 3;
    assert_eq!(TransportCc::new_checked(&bad), Err(WireError::Truncated));
}

#[test]
fn transport_cc_rejects_malformed() {
    // Status count needs a second chunk that is missing.
    let mut buf = hex(TWCC_RUNS);
    buf[15] = 7;
    assert_eq!(TransportCc::new_checked(&buf), Err(WireError::Truncated));
    // Deltas cut short: claim 7 packets of a 6-long run.
    let mut buf = hex("8fcd0006fa17fa17193dd8bb0174000645b15a40400220041ffe1f9ad000");
    assert_eq!(TransportCc::new_checked(&buf), Err(WireError::Truncated));
    // Reserved symbol 3.
    buf[20] = 0x60;
    assert_eq!(TransportCc::new_checked(&buf), Err(WireError::Attribute));
    // Negative reference time, zero packets.
    let buf = hex("8fcd0004000000010000000200000000fffffe09");
    let t = TransportCc::new_checked(&buf).unwrap();
    assert_eq!((t.reference_time(), t.fb_pkt_count()), (-2, 9));
    assert_eq!(t.packets().count(), 0);
}

#[test]
fn compound_iteration_and_errors() {
    let mut compound = Vec::new();
    for packet in all_fixed() {
        compound.extend_from_slice(&packet);
    }
    assert_eq!(validate(&compound), Ok(13));
    let types: Vec<u8> = RtcpIter::new(&compound)
        .map(|p| p.unwrap().packet_type())
        .collect();
    assert_eq!(
        types,
        [
            200, 201, 202, 202, 203, 203, 205, 206, 206, 206, 205, 205, 205
        ]
    );
    let others = RtcpIter::new(&compound)
        .filter(|p| matches!(p, Ok(RtcpPacket::Other { .. })))
        .count();
    assert_eq!(others, 0);

    // Trailing garbage: packets before it, then one error, then nothing.
    compound.extend_from_slice(&[0x80, 0xc9]);
    let mut it = RtcpIter::new(&compound);
    assert_eq!(it.by_ref().take(13).filter(Result::is_ok).count(), 13);
    assert_eq!(it.next(), Some(Err(WireError::Truncated)));
    assert_eq!(it.next(), None);
    assert_eq!(it.next(), None);
    assert_eq!(validate(&compound), Err(WireError::Truncated));
    assert_eq!(validate(&[]), Err(WireError::Truncated));

    let pli = hex(PLI);
    let mut bad = pli.clone();
    bad[0] = 0x41;
    assert_eq!(validate(&bad), Err(WireError::Version));
    let mut bad = pli.clone();
    bad[3] = 3;
    assert_eq!(validate(&bad), Err(WireError::Length));
    // Padding bit with a zero or oversized count.
    let mut bad = pli.clone();
    bad[0] |= 0x20;
    bad[11] = 0;
    assert_eq!(validate(&bad), Err(WireError::Padding));
    bad[11] = 9;
    assert_eq!(validate(&bad), Err(WireError::Padding));
    // Padding eating into a PLI's SSRCs leaves it too short.
    bad[11] = 4;
    assert_eq!(validate(&bad), Err(WireError::Truncated));

    // APP and unknown types are passed through.
    let app = hex("80cc000211223344616263640000");
    let RtcpPacket::Other {
        packet_type,
        fmt,
        body,
    } = RtcpPacket::new_checked(&app).unwrap()
    else {
        panic!("not Other")
    };
    assert_eq!((packet_type, fmt, body), (PT_APP, 0, &app[4..12]));
}

#[test]
fn receiver_report_round_trip() {
    let blocks = [
        ReportBlockData {
            ssrc: 1,
            fraction_lost: 255,
            cumulative_lost: -0x80_0000,
            highest_seq: 0x0001_ffff,
            jitter: 9,
            last_sr: 0xdead_beef,
            delay_since_last_sr: 65536,
        },
        ReportBlockData {
            ssrc: 2,
            cumulative_lost: 0x7f_ffff,
            ..Default::default()
        },
    ];
    let mut buf = [0u8; 64];
    let n = write_receiver_report(&mut buf, 0xabcd, &blocks).unwrap();
    assert_eq!(n, 56);
    let RtcpPacket::ReceiverReport(rr) = only(&buf[..n]) else {
        panic!("not RR")
    };
    assert_eq!(rr.ssrc(), 0xabcd);
    let back: Vec<_> = rr.report_blocks().map(|b| b.to_data()).collect();
    assert_eq!(back, blocks);
    // The oracle agrees.
    let parsed = oracle_parse(&buf[..n]);
    let o = parsed[0]
        .as_any()
        .downcast_ref::<rtcp::receiver_report::ReceiverReport>()
        .unwrap();
    assert_eq!(o.reports[0].total_lost, 0x80_0000);
    assert_eq!(o.reports[1].total_lost, 0x7f_ffff);
    assert_eq!(o.reports[0].last_sender_report, 0xdead_beef);

    // Out-of-range losses are clamped.
    let clamp = [ReportBlockData {
        cumulative_lost: i32::MIN,
        ..Default::default()
    }];
    let n = write_receiver_report(&mut buf, 0, &clamp).unwrap();
    let rr = ReceiverReport::new_checked(&buf[..n]).unwrap();
    assert_eq!(
        rr.report_blocks().next().unwrap().cumulative_lost(),
        -0x80_0000
    );
    // No blocks, and too many.
    assert_eq!(write_receiver_report(&mut buf, 5, &[]), Ok(8));
    assert_eq!(&buf[..8], hex("80c9000100000005"));
    let many = [ReportBlockData::default(); 32];
    let mut big = [0u8; 1024];
    assert_eq!(
        write_receiver_report(&mut big, 0, &many),
        Err(WireError::OutOfRange)
    );
    assert_eq!(
        write_receiver_report(&mut big, 0, &many[..31]),
        Ok(8 + 31 * 24)
    );
}

fn nack_lost(buf: &[u8]) -> Vec<u16> {
    Nack::new_checked(buf).unwrap().lost().collect()
}

#[test]
fn nack_round_trip_and_packing() {
    let mut buf = [0u8; 256];
    let n = write_nack(&mut buf, 1, 2, &[10, 11, 13, 26, 27, 27, 100]).unwrap();
    let nack = Nack::new_checked(&buf[..n]).unwrap();
    assert_eq!((nack.sender_ssrc(), nack.media_ssrc()), (1, 2));
    assert_eq!(
        nack.pairs().collect::<Vec<_>>(),
        [(10, 0b1000_0000_0000_0101), (27, 0), (100, 0)]
    );
    assert_eq!(nack_lost(&buf[..n]), [10, 11, 13, 26, 27, 100]);
    assert_eq!(write_nack(&mut buf, 1, 2, &[]), Err(WireError::OutOfRange));
    // Agrees with the oracle's parser.
    let parsed = oracle_parse(&buf[..n]);
    let o = parsed[0]
        .as_any()
        .downcast_ref::<rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack>()
        .unwrap();
    let pairs: Vec<_> = o
        .nacks
        .iter()
        .map(|p| (p.packet_id, p.lost_packets))
        .collect();
    assert_eq!(pairs, [(10, 0b1000_0000_0000_0101), (27, 0), (100, 0)]);
}

#[test]
fn nack_packs_across_wrap() {
    let mut buf = [0u8; 64];
    let lost = [65530, 65533, 65535, 0, 0, 1, 10, 11, 12];
    let n = write_nack(&mut buf, 7, 8, &lost).unwrap();
    let nack = Nack::new_checked(&buf[..n]).unwrap();
    // 65530 + 17 = 11 (wrapped) is the first number outside the first pair.
    let blp = (1 << 2) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 15);
    assert_eq!(nack.pairs().collect::<Vec<_>>(), [(65530, blp), (11, 1)]);
    assert_eq!(
        nack_lost(&buf[..n]),
        [65530, 65533, 65535, 0, 1, 10, 11, 12]
    );
    // Unsorted input still reports every number.
    let n = write_nack(&mut buf, 7, 8, &[50, 3, 51, 2]).unwrap();
    let mut got = nack_lost(&buf[..n]);
    got.sort_unstable();
    assert_eq!(got, [2, 3, 50, 51]);
}

#[test]
fn sender_report_round_trip() {
    let mut buf = [0xa5u8; 128];
    // No blocks: the 28-byte sender info only.
    let n = write_sender_report(
        &mut buf,
        0x1234,
        0xdead_beef_0123_4567,
        90_000,
        7,
        1400,
        &[],
    )
    .unwrap();
    assert_eq!(n, 28);
    assert_eq!(
        &buf[..n],
        hex("80c8000600001234deadbeef0123456700015f900000000700000578")
    );
    let RtcpPacket::SenderReport(sr) = only(&buf[..n]) else {
        panic!("not an SR")
    };
    assert_eq!(sr.ssrc(), 0x1234);
    assert_eq!(sr.ntp_time(), 0xdead_beef_0123_4567);
    assert_eq!(sr.rtp_time(), 90_000);
    assert_eq!((sr.packet_count(), sr.octet_count()), (7, 1400));
    assert_eq!(sr.report_blocks().count(), 0);
    assert!(sr.extension().is_empty());
    let parsed = oracle_parse(&buf[..n]);
    let o = parsed[0]
        .as_any()
        .downcast_ref::<rtcp::sender_report::SenderReport>()
        .unwrap();
    assert_eq!(
        (o.ssrc, o.ntp_time, o.rtp_time),
        (0x1234, 0xdead_beef_0123_4567, 90_000)
    );
    assert_eq!((o.packet_count, o.octet_count), (7, 1400));
    assert!(o.reports.is_empty());

    // Two blocks, one with a negative loss.
    let blocks = [
        ReportBlockData {
            ssrc: 0xbc5e9a40,
            fraction_lost: 0x12,
            cumulative_lost: -2,
            highest_seq: 0x46e1,
            jitter: 273,
            last_sr: 0x9f36432,
            delay_since_last_sr: 150137,
        },
        ReportBlockData {
            ssrc: 7,
            fraction_lost: 255,
            cumulative_lost: 0x7f_ffff,
            highest_seq: 0x0002_0001,
            jitter: 0,
            last_sr: 1,
            delay_since_last_sr: 2,
        },
    ];
    let n = write_sender_report(&mut buf, 5, 6, 7, 8, 9, &blocks).unwrap();
    assert_eq!(n, 28 + 2 * 24);
    let RtcpPacket::SenderReport(sr) = only(&buf[..n]) else {
        panic!("not an SR")
    };
    assert_eq!(sr.report_count(), 2);
    let back: Vec<_> = sr.report_blocks().map(|b| b.to_data()).collect();
    assert_eq!(back, blocks);
    // The oracle agrees, and writes the same bytes.
    let parsed = oracle_parse(&buf[..n]);
    let o = parsed[0]
        .as_any()
        .downcast_ref::<rtcp::sender_report::SenderReport>()
        .unwrap();
    assert_eq!(o.reports.len(), 2);
    assert_eq!(o.reports[0].total_lost, 0xff_fffe);
    assert_eq!(o.reports[1].last_sequence_number, 0x0002_0001);
    assert_eq!(oracle(o.clone()), &buf[..n]);
    // The webrtc-rs vector, written by us.
    let n = write_sender_report(
        &mut buf,
        0x902f9e2e,
        0xda8bd1fcdddda05a,
        0xaaf4edd5,
        1,
        2,
        &blocks[..1],
    )
    .unwrap();
    assert_eq!(&buf[..n], hex(SR));

    let many = [ReportBlockData::default(); 32];
    let mut big = [0u8; 1024];
    assert_eq!(
        write_sender_report(&mut big, 0, 0, 0, 0, 0, &many),
        Err(WireError::OutOfRange)
    );
    assert_eq!(
        write_sender_report(&mut big, 0, 0, 0, 0, 0, &many[..31]),
        Ok(28 + 31 * 24)
    );
    assert_eq!(
        SenderReport::new_checked(&big[..28 + 31 * 24])
            .unwrap()
            .report_blocks()
            .count(),
        31
    );
}

#[test]
fn sdes_cname_round_trip_and_alignment() {
    use rtcp::source_description::{SdesType, SourceDescription};
    let cname = b"sfu-room-42-7";
    for len in 0..=cname.len() {
        let cname = &cname[..len];
        let mut buf = [0xa5u8; 64];
        let n = write_sdes_cname(&mut buf, 0xcafe, cname).unwrap();
        assert_eq!(n, 8 + (3 + len).next_multiple_of(4), "{len}");
        assert_eq!(n % 4, 0);
        // No padding bit, count 1, length field in words minus one.
        assert_eq!(buf[..4], [0x81, 202, 0, (n / 4 - 1) as u8]);
        assert_eq!(buf[4..10], [0, 0, 0xca, 0xfe, SDES_CNAME, len as u8]);
        assert_eq!(&buf[10..10 + len], cname);
        // END and the null octets up to the 32-bit boundary: 1 to 4 of them.
        let nulls = &buf[10 + len..n];
        assert!((1..=4).contains(&nulls.len()), "{len}");
        assert!(nulls.iter().all(|&b| b == 0));
        let RtcpPacket::Sdes(sdes) = only(&buf[..n]) else {
            panic!("not SDES")
        };
        assert_eq!(sdes.chunk_count(), 1);
        let chunk = sdes.chunks().next().unwrap();
        assert_eq!(chunk.ssrc(), 0xcafe);
        assert_eq!(chunk.items().collect::<Vec<_>>(), [(SDES_CNAME, cname)]);
        // The oracle reads the same CNAME (it pads differently when writing,
        // see `SDES_WEBRTC_RS`).
        let parsed = oracle_parse(&buf[..n]);
        let o = parsed[0]
            .as_any()
            .downcast_ref::<SourceDescription>()
            .unwrap();
        assert_eq!(o.chunks.len(), 1);
        assert_eq!(o.chunks[0].source, 0xcafe);
        assert_eq!(o.chunks[0].items.len(), 1);
        assert_eq!(o.chunks[0].items[0].sdes_type, SdesType::SdesCname);
        assert_eq!(o.chunks[0].items[0].text.as_ref(), cname);
    }
    let mut big = [0u8; 512];
    let n = write_sdes_cname(&mut big, 1, &[b'c'; 255]).unwrap();
    assert_eq!(n, 8 + 260);
    assert_eq!(
        write_sdes_cname(&mut big, 1, &[b'c'; 256]),
        Err(WireError::OutOfRange)
    );
}

#[test]
fn compound_sender_report_and_sdes() {
    let block = ReportBlockData {
        ssrc: 0x2222,
        fraction_lost: 3,
        cumulative_lost: 10,
        highest_seq: 65_600,
        jitter: 40,
        last_sr: 0x1234_5678,
        delay_since_last_sr: 0x8000,
    };
    let mut buf = [0xa5u8; 256];
    let mut n = write_sender_report(&mut buf, 0x1111, 1 << 32, 3000, 10, 12_000, &[block]).unwrap();
    n += write_sdes_cname(&mut buf[n..], 0x1111, b"abcde").unwrap();
    n += write_pli(&mut buf[n..], 0x1111, 0x3333).unwrap();
    let packets: Vec<_> = RtcpIter::new(&buf[..n]).map(Result::unwrap).collect();
    assert_eq!(packets.len(), 3);
    let RtcpPacket::SenderReport(sr) = packets[0] else {
        panic!("not an SR")
    };
    assert_eq!((sr.ssrc(), sr.ntp_time()), (0x1111, 1 << 32));
    assert_eq!(sr.report_blocks().next().map(|b| b.to_data()), Some(block));
    let RtcpPacket::Sdes(sdes) = packets[1] else {
        panic!("not SDES")
    };
    let chunk = sdes.chunks().next().unwrap();
    assert_eq!(chunk.ssrc(), 0x1111);
    assert_eq!(
        chunk.items().collect::<Vec<_>>(),
        [(SDES_CNAME, b"abcde".as_slice())]
    );
    assert!(matches!(packets[2], RtcpPacket::Pli(_)));
    assert_eq!(oracle_parse(&buf[..n]).len(), 3);
}

#[test]
fn nack_wraps_and_splits_into_pairs() {
    let mut buf = [0xa5u8; 128];
    type Case<'a> = (&'a [u16], &'a [(u16, u16)]);
    let cases: &[Case<'_>] = &[
        (&[65534, 65535, 0, 1], &[(65534, 0b111)]),
        (&[65535, 0], &[(65535, 1)]),
        (&[7], &[(7, 0)]),
        (&[0, 16], &[(0, 0x8000)]),
        (&[0, 17], &[(0, 0), (17, 0)]),
        (
            &[0, 16, 17, 40, 100, 116, 117],
            &[(0, 0x8000), (17, 0), (40, 0), (100, 0x8000), (117, 0)],
        ),
        (
            &[65520, 65535, 0, 1, 1000],
            &[(65520, 0xc000), (1, 0), (1000, 0)],
        ),
    ];
    for &(lost, pairs) in cases {
        let n = write_nack(&mut buf, 0xa, 0xb, lost).unwrap();
        assert_eq!(n, 12 + 4 * pairs.len(), "{lost:?}");
        let RtcpPacket::Nack(nack) = only(&buf[..n]) else {
            panic!("not NACK")
        };
        assert_eq!((nack.sender_ssrc(), nack.media_ssrc()), (0xa, 0xb));
        assert_eq!(nack.pairs().collect::<Vec<_>>(), pairs, "{lost:?}");
        assert_eq!(nack.lost().collect::<Vec<_>>(), lost, "{lost:?}");
        let parsed = oracle_parse(&buf[..n]);
        let o = parsed[0]
            .as_any()
            .downcast_ref::<rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack>()
            .unwrap();
        let theirs: Vec<_> = o
            .nacks
            .iter()
            .map(|p| (p.packet_id, p.lost_packets))
            .collect();
        assert_eq!(theirs, pairs);
    }
    // A buffer too short for the header, for the SSRCs, or for the last pair.
    for short in [0, 3, 11, 12, 15] {
        let mut buf = vec![0u8; short];
        assert_eq!(
            write_nack(&mut buf, 1, 2, &[1]),
            Err(WireError::BufferTooSmall),
            "{short}"
        );
    }
    let mut buf = [0u8; 19];
    assert_eq!(
        write_nack(&mut buf, 1, 2, &[1, 100]),
        Err(WireError::BufferTooSmall)
    );
}

/// Property tests of the NACK and report writers against their views.
mod props {
    use super::*;
    use proptest::prelude::*;

    /// A report block with a cumulative loss in the 24-bit signed range.
    fn block() -> impl Strategy<Value = ReportBlockData> {
        (
            any::<(u32, u8, u32, u32, u32, u32)>(),
            -0x80_0000i32..=0x7f_ffff,
        )
            .prop_map(
                |((ssrc, fraction_lost, highest_seq, jitter, last_sr, dlsr), lost)| {
                    ReportBlockData {
                        ssrc,
                        fraction_lost,
                        cumulative_lost: lost,
                        highest_seq,
                        jitter,
                        last_sr,
                        delay_since_last_sr: dlsr,
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Any ascending (wrapping) set of sequence numbers comes back exactly.
        #[test]
        fn nack_round_trips_any_ascending_set(
            base: u16,
            mut offsets in prop::collection::vec(0u16..40_000, 1..200),
        ) {
            offsets.sort_unstable();
            offsets.dedup();
            let lost: Vec<u16> = offsets.iter().map(|&o| base.wrapping_add(o)).collect();
            let mut buf = vec![0xa5u8; 12 + 4 * lost.len()];
            let n = write_nack(&mut buf, 1, 2, &lost).unwrap();
            let nack = Nack::new_checked(&buf[..n]).unwrap();
            prop_assert_eq!(nack.lost().collect::<Vec<_>>(), lost);
            // Packed as tightly as the input allows: no two PIDs within 16.
            let pids: Vec<u16> = nack.pairs().map(|p| p.0).collect();
            for w in pids.windows(2) {
                prop_assert!(w[1].wrapping_sub(w[0]) > 16);
            }
        }

        /// Report blocks survive a write and a read, in an SR and in an RR.
        #[test]
        fn report_blocks_round_trip(
            blocks in prop::collection::vec(block(), 0..=31),
            ntp: u64,
        ) {
            let mut buf = [0u8; 28 + 31 * 24];
            let n = write_sender_report(&mut buf, 1, ntp, 2, 3, 4, &blocks).unwrap();
            let sr = SenderReport::new_checked(&buf[..n]).unwrap();
            prop_assert_eq!(sr.ntp_time(), ntp);
            let back: Vec<_> = sr.report_blocks().map(|b| b.to_data()).collect();
            prop_assert_eq!(&back, &blocks);
            let n = write_receiver_report(&mut buf, 1, &blocks).unwrap();
            let rr = ReceiverReport::new_checked(&buf[..n]).unwrap();
            let back: Vec<_> = rr.report_blocks().map(|b| b.to_data()).collect();
            prop_assert_eq!(&back, &blocks);
        }
    }
}

#[test]
fn hostile_reports_sdes_bye_nack_remb_are_errors() {
    /// The error of the first packet, which must be the same through the
    /// compound walk (yielded once, then nothing).
    fn error(buf: &[u8]) -> WireError {
        let e = RtcpPacket::new_checked(buf).unwrap_err();
        let mut it = RtcpIter::new(buf);
        assert_eq!(it.next(), Some(Err(e)));
        assert_eq!(it.next(), None);
        e
    }
    let sr = hex(SR);
    // Truncated in the sender info (length field agrees), and cut short of
    // what the length field says.
    let mut short = hex("80c80005");
    short.extend_from_slice(&sr[4..24]);
    assert_eq!(error(&short), WireError::Truncated);
    assert_eq!(SenderReport::new_checked(&short), Err(WireError::Truncated));
    assert_eq!(error(&sr[..sr.len() - 1]), WireError::Length);
    assert_eq!(error(&sr[..3]), WireError::Truncated);
    // Length field one word too long, and far too long.
    let mut bad = sr.clone();
    bad[3] += 1;
    assert_eq!(error(&bad), WireError::Length);
    bad[2] = 0xff;
    assert_eq!(error(&bad), WireError::Length);
    // Report count larger than the body (2 and 31 claimed, 1 present).
    let mut bad = sr.clone();
    bad[0] = 0x82;
    assert_eq!(error(&bad), WireError::Length);
    bad[0] = 0x9f;
    assert_eq!(SenderReport::new_checked(&bad), Err(WireError::Length));
    // An RR with the report count of 31 and no blocks, or too short for its SSRC.
    assert_eq!(error(&hex("9fc9000100000001")), WireError::Length);
    assert_eq!(error(&hex("80c90000")), WireError::Truncated);
    // Padding eating into the report block.
    let mut bad = hex(RR);
    bad[0] |= 0x20;
    *bad.last_mut().unwrap() = 8;
    assert_eq!(error(&bad), WireError::Length);
    // SDES: two chunks claimed, one present; item length past the end.
    let mut sdes = [0u8; 16];
    let n = write_sdes_cname(&mut sdes, 1, b"abcd").unwrap();
    let mut bad = sdes[..n].to_vec();
    bad[0] = 0x82;
    assert!(error(&bad) == WireError::Length || error(&bad) == WireError::Attribute);
    let mut bad = sdes[..n].to_vec();
    bad[9] = 200;
    assert_eq!(error(&bad), WireError::Attribute);
    // BYE: more sources than the body holds.
    assert_eq!(error(&hex("9fcb000100000001")), WireError::Length);
    // NACK: without the two SSRCs, and with a partial pair.
    assert_eq!(error(&hex("81cd000100000001")), WireError::Truncated);
    assert_eq!(
        error(&hex("a1cd00030000000100000002000a0002")),
        WireError::Length
    );
    // REMB: more SSRCs claimed than present, and cut before the bitrate.
    let mut bad = hex(REMB);
    bad[16] = 3;
    assert_eq!(error(&bad), WireError::Length);
    let bad = hex("8fce0003000000010000000052454d42");
    assert_eq!(error(&bad), WireError::Truncated);
}

#[test]
fn pli_round_trip() {
    let mut buf = [0u8; 12];
    assert_eq!(write_pli(&mut buf, 0x1111, 0x2222), Ok(12));
    assert_eq!(buf.as_slice(), hex("81ce00020000111100002222"));
    let RtcpPacket::Pli(pli) = only(&buf) else {
        panic!("not PLI")
    };
    assert_eq!((pli.sender_ssrc(), pli.media_ssrc()), (0x1111, 0x2222));
    oracle_parse(&buf);
}

#[test]
fn fir_round_trip() {
    let mut buf = [0u8; 64];
    let entries = [(0x4bc4fcb4, 0x7f), (0x12345678, 2)];
    let n = write_fir(&mut buf, 0, &entries).unwrap();
    assert_eq!(&buf[..n], hex(FIR));
    let n = write_fir(&mut buf, 0xfeed, &entries[..1]).unwrap();
    let RtcpPacket::Fir(fir) = only(&buf[..n]) else {
        panic!("not FIR")
    };
    assert_eq!((fir.sender_ssrc(), fir.media_ssrc()), (0xfeed, 0));
    assert_eq!(fir.entries().collect::<Vec<_>>(), entries[..1]);
    assert_eq!(write_fir(&mut buf, 0, &[]), Err(WireError::OutOfRange));
}

#[test]
fn remb_round_trip() {
    use rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
    let mut buf = [0u8; 64];
    let n = write_remb(&mut buf, 1, 8_927_168, &[1215622422, 0x11223344]).unwrap();
    assert_eq!(&buf[..n], hex(REMB));
    let cases: [(u64, u64, u8); 7] = [
        (0, 0, 0),
        (1, 1, 0),
        (0x3_ffff, 0x3_ffff, 0),
        (0x4_0000, 0x4_0000, 1),
        (0x4_0001, 0x4_0000, 1),
        (1_000_000_007, 1_000_000_007 >> 12 << 12, 12),
        (u64::MAX, 0x3_ffff << 46, 46),
    ];
    for (bps, expect, exp) in cases {
        let n = write_remb(&mut buf, 9, bps, &[]).unwrap();
        assert_eq!(n, 20);
        let RtcpPacket::Remb(remb) = only(&buf[..n]) else {
            panic!("not REMB")
        };
        assert_eq!(
            (remb.bitrate_bps(), remb.exponent()),
            (expect, exp),
            "{bps}"
        );
        assert_eq!(remb.ssrcs().count(), 0);
    }
    let n = write_remb(&mut buf, 1, 2_500_000, &[5, 6]).unwrap();
    let parsed = oracle_parse(&buf[..n]);
    let o = parsed[0]
        .as_any()
        .downcast_ref::<ReceiverEstimatedMaximumBitrate>()
        .unwrap();
    assert_eq!(o.bitrate, 2_500_000.0);
    assert_eq!(o.ssrcs, [5, 6]);
    let many = [0u32; 256];
    let mut big = [0u8; 2048];
    assert_eq!(
        write_remb(&mut big, 0, 1, &many),
        Err(WireError::OutOfRange)
    );
}

/// Writes `packets`, parses them back and checks the oracle parses them too.
fn twcc_round_trip(
    base_seq: u16,
    packets: &[(u16, Option<i64>)],
) -> Vec<(u16, PacketStatus, Option<i64>)> {
    let mut buf = vec![0u8; 4 * packets.len() + 64];
    let n = write_transport_cc(&mut buf, 0xaa, 0xbb, base_seq, -3, 17, packets).unwrap();
    assert_eq!(n % 4, 0);
    let RtcpPacket::TransportCc(t) = only(&buf[..n]) else {
        panic!("not transport-cc")
    };
    assert_eq!((t.sender_ssrc(), t.media_ssrc()), (0xaa, 0xbb));
    assert_eq!(
        (t.base_seq(), t.reference_time(), t.fb_pkt_count()),
        (base_seq, -3, 17)
    );
    let list = twcc_list(&t);
    assert_eq!(list.len(), usize::from(t.packet_status_count()));

    let parsed = oracle_parse(&buf[..n]);
    let o = parsed[0]
        .as_any()
        .downcast_ref::<rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc>()
        .unwrap();
    assert_eq!(o.packet_status_count, t.packet_status_count());
    let ours: Vec<i64> = list.iter().filter_map(|p| p.2).collect();
    let theirs: Vec<i64> = o.recv_deltas.iter().map(|d| d.delta).collect();
    assert_eq!(ours, theirs);
    list
}

#[test]
fn transport_cc_round_trips() {
    use PacketStatus::*;
    // Mixed small, large and negative deltas, a gap and an explicit loss.
    let packets = [
        (65534, Some(1000)),
        (65535, Some(70_000)),
        (0, None),
        (2, Some(-250)),
        (3, Some(250)),
    ];
    assert_eq!(
        twcc_round_trip(65533, &packets),
        [
            (65533, NotReceived, None),
            (65534, ReceivedSmallDelta, Some(1000)),
            (65535, ReceivedLargeDelta, Some(70_000)),
            (0, NotReceived, None),
            (1, NotReceived, None),
            (2, ReceivedLargeDelta, Some(-250)),
            (3, ReceivedSmallDelta, Some(250)),
        ]
    );

    // Long runs (run-length chunks, including one longer than 8191),
    // 1-bit and 2-bit vectors.
    let mut packets = Vec::new();
    for i in 0..20_000u16 {
        let delta = match i {
            0..=29 => Some(500),
            30..=9_000 => None,
            9_001..=9_020 => Some(i64::from(i % 2) * 250),
            9_021..=9_040 => (i % 3 == 0).then_some(100_000),
            _ => Some(i64::from(i % 5) * 1000),
        };
        packets.push((i.wrapping_add(40_000), delta));
    }
    let list = twcc_round_trip(40_000, &packets);
    assert_eq!(list.len(), packets.len());
    for (got, want) in list.iter().zip(&packets) {
        assert_eq!((got.0, got.2), *want);
    }

    // Every status pattern of 9 packets.
    for mask in 0..3u32.pow(9) {
        let mut m = mask;
        let packets: Vec<_> = (0..9u16)
            .map(|i| {
                let d = match m % 3 {
                    0 => None,
                    1 => Some(750),
                    _ => Some(-1000),
                };
                m /= 3;
                (i, d)
            })
            .collect();
        let list = twcc_round_trip(0, &packets);
        let back: Vec<_> = list.iter().map(|p| (p.0, p.2)).collect();
        assert_eq!(back, packets);
    }
}

#[test]
fn transport_cc_rounding_does_not_drift() {
    // 1 ms + 100 µs per packet: rounded per packet this would lose 100 µs each.
    let packets: Vec<_> = (0..100u16).map(|i| (i, Some(1100))).collect();
    let list = twcc_round_trip(0, &packets);
    let total: i64 = list.iter().filter_map(|p| p.2).sum();
    assert_eq!(total, 110_000);
    assert!(list.iter().all(|p| p.2 == Some(1000) || p.2 == Some(1250)));
}

#[test]
fn transport_cc_writer_rejects_bad_input() {
    let mut buf = [0u8; 256];
    let mut w =
        |base: u16, p: &[(u16, Option<i64>)]| write_transport_cc(&mut buf, 1, 2, base, 0, 0, p);
    assert_eq!(w(0, &[]), Err(WireError::OutOfRange));
    assert_eq!(w(0, &[(5, None), (5, None)]), Err(WireError::OutOfRange));
    assert_eq!(w(0, &[(5, None), (4, None)]), Err(WireError::OutOfRange));
    assert_eq!(w(1, &[(0, None)]), Err(WireError::OutOfRange));
    assert_eq!(w(0, &[(0, Some(8_192_000))]), Err(WireError::OutOfRange));
    assert_eq!(w(0, &[(0, Some(-8_192_250))]), Err(WireError::OutOfRange));
    assert!(w(0, &[(0, Some(8_191_750))]).is_ok());
    assert!(w(0, &[(0, Some(-8_192_000))]).is_ok());
    assert_eq!(
        w(0, &[(0, Some(i64::MAX)), (1, Some(i64::MAX))]),
        Err(WireError::OutOfRange)
    );
    // Only the low 24 bits of the reference time are sent.
    let n = write_transport_cc(&mut buf, 1, 2, 0, 0x0180_0001, 0, &[(0, None)]).unwrap();
    let t = TransportCc::new_checked(&buf[..n]).unwrap();
    assert_eq!(t.reference_time(), -0x7f_ffff);
}

#[test]
fn transport_cc_reads_zero_padded_fci() {
    // libwebrtc-style: pad with zeros inside the FCI, no padding bit.
    let buf = hex("8fcd0006fa17fa17193dd8bb0001000e10636d00ba00100c0c10000000");
    let t = TransportCc::new_checked(&buf[..28]).unwrap();
    assert_eq!(t.packets().filter(|p| p.2.is_some()).count(), 4);
}

/// Runs `write` on a zeroed and on a 0xa5-filled buffer and on every
/// shorter buffer; returns the output.
fn check_writer(write: impl Fn(&mut [u8]) -> Result<usize, WireError>) -> Vec<u8> {
    let mut zero = vec![0u8; 4096];
    let mut dirty = vec![0xa5u8; 4096];
    let n = write(&mut zero).unwrap();
    assert_eq!(write(&mut dirty), Ok(n));
    assert_eq!(zero[..n], dirty[..n]);
    assert!(
        dirty[n..].iter().all(|&b| b == 0xa5),
        "wrote past its length"
    );
    for short in 0..n {
        let mut buf = vec![0xa5u8; short];
        assert_eq!(write(&mut buf), Err(WireError::BufferTooSmall), "{short}");
    }
    assert_eq!(validate(&zero[..n]), Ok(1));
    zero.truncate(n);
    zero
}

#[test]
fn writers_fill_every_byte_and_check_space() {
    let blocks = [ReportBlockData {
        ssrc: 3,
        cumulative_lost: -1,
        ..Default::default()
    }; 3];
    check_writer(|b| write_receiver_report(b, 1, &blocks));
    check_writer(|b| write_receiver_report(b, 1, &[]));
    check_writer(|b| write_sender_report(b, 1, u64::MAX, 2, 3, 4, &blocks));
    check_writer(|b| write_sender_report(b, 1, 0, 0, 0, 0, &[]));
    for len in 0..=8 {
        check_writer(|b| write_sdes_cname(b, 1, &b"abcdefgh"[..len]));
    }
    check_writer(|b| write_sdes_cname(b, 1, &[b'x'; 255]));
    check_writer(|b| write_nack(b, 1, 2, &[1, 2, 3, 40, 41, 1000]));
    check_writer(|b| write_nack(b, 1, 2, &[7]));
    check_writer(|b| write_pli(b, 1, 2));
    check_writer(|b| write_fir(b, 1, &[(5, 6), (7, 8)]));
    check_writer(|b| write_remb(b, 1, 123_456_789, &[1, 2, 3]));
    // Status-count lengths giving every amount of padding.
    for count in 1..=8u16 {
        let packets: Vec<_> = (0..count).map(|i| (i, Some(250))).collect();
        let out = check_writer(|b| write_transport_cc(b, 1, 2, 0, 5, 6, &packets));
        assert_eq!(out[0] & 0x20 != 0, (18 + usize::from(count)) % 4 != 0);
    }
    let packets = [(0, Some(-250)), (20, Some(100)), (21, None), (40, Some(1))];
    check_writer(|b| write_transport_cc(b, 1, 2, 0, -5, 6, &packets));
}

#[test]
fn truncation_and_corruption_never_panic() {
    let mut inputs = all_fixed();
    let mut compound = Vec::new();
    for packet in &inputs {
        compound.extend_from_slice(packet);
    }
    inputs.push(compound);
    let mut buf = [0u8; 512];
    let packets: Vec<_> = (0..40u16)
        .map(|i| (i * 2, Some(i64::from(i) * 3000 - 40_000)))
        .collect();
    let n = write_transport_cc(&mut buf, 1, 2, 0, 5, 6, &packets).unwrap();
    inputs.push(buf[..n].to_vec());
    let n = write_nack(&mut buf, 1, 2, &[1, 5, 30, 31, 60]).unwrap();
    inputs.push(buf[..n].to_vec());
    let block = ReportBlockData {
        ssrc: 9,
        cumulative_lost: -5,
        ..Default::default()
    };
    let mut n = write_sender_report(&mut buf, 1, 2, 3, 4, 5, &[block; 2]).unwrap();
    n += write_sdes_cname(&mut buf[n..], 1, b"cname").unwrap();
    inputs.push(buf[..n].to_vec());

    for input in &inputs {
        for len in 0..=input.len() {
            exercise(&input[..len]);
        }
        let mut mutated = input.clone();
        for i in 0..input.len() {
            for flip in [0xff, 0x01, 0x80, 0x20, 0x10] {
                mutated[i] ^= flip;
                exercise(&mutated);
                mutated[i] ^= flip;
            }
            for value in [0x00, 0xff, 0x7f, 0x81] {
                let saved = mutated[i];
                mutated[i] = value;
                exercise(&mutated);
                mutated[i] = saved;
            }
        }
    }
}

#[test]
fn random_input_never_panics() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut buf = [0u8; 96];
    for _ in 0..200_000 {
        let len = (next() % 96) as usize;
        for b in &mut buf[..len] {
            *b = next() as u8;
        }
        // Make most inputs look like RTCP so they get past the header.
        if len >= 4 {
            buf[0] = 0x80 | (buf[0] & 0x3f);
            buf[1] = 200 + (buf[1] % 7);
            buf[2] = 0;
            buf[3] %= (len / 4) as u8 + 1;
        }
        exercise(&buf[..len]);
    }
}
