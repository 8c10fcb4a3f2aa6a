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

// SR, RR, SDES, BYE, NACK and REMB have no view (they are `RtcpPacket::Other`);
// their vectors stay to walk compounds of every packet type.
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
    assert_eq!(others, 8);

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
    check_writer(|b| write_pli(b, 1, 2));
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
