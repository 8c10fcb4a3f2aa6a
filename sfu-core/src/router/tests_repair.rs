//! Loss repair and RTCP reports on a virtual clock: subscribers' NACKs
//! answered with RTX from the cache, gaps in a publisher's stream NACKed
//! and repaired by its RTX, sender reports translated per consumer,
//! receiver reports both ways. Loss is simulated with a seeded generator.

use std::collections::BTreeSet;
use std::time::Duration;

use super::tests::{Peer, Sink, addr, consumers};
use super::*;
use crate::wire::rtcp::{self, RtcpIter, RtcpPacket};
use crate::wire::rtp::{RtpHeader, RtpPacket, write_header};

const PUB: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5000);
const MEDIA: u32 = 0x1111;
const PUB_RTX: u32 = 0x2222;
const SUB_RTX_PT: u8 = 97;

/// xorshift64*: deterministic loss.
struct Rng(u64);

impl Rng {
    fn chance(&mut self, percent: u64) -> bool {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % 100 < percent
    }
}

struct Setup {
    router: Router,
    t0: Instant,
    publisher: Peer,
    sub: Peer,
    consumer: ConsumerInfo,
}

fn sub_addr() -> SocketAddr {
    addr(6000)
}

/// A publisher with an RTX stream (FID) and one subscriber with RTX for
/// video.
fn setup() -> Setup {
    let t0 = Instant::now();
    let mut router = Router::new(RouterConfig::default());
    router
        .handle_command(t0, Command::CreateRoom(RoomId(1)))
        .unwrap();
    let (publisher, pm, pl) = Peer::new(1);
    router
        .handle_command(
            t0,
            Command::AddEndpoint(Box::new(EndpointConfig {
                id: EndpointId(1),
                room: RoomId(1),
                role: Role::Publish,
                profile: super::tests::PROFILE,
                remote_master: pm,
                local_master: pl,
                tracks: vec![TrackConfig {
                    kind: MediaKind::Video,
                    ssrc: MEDIA,
                    payload_type: 96,
                    rtx: Some(RtxStream {
                        ssrc: PUB_RTX,
                        payload_type: 98,
                    }),
                    codec: crate::codec::Codec::Vp8,
                    layer_of: None,
                    red_payload_type: None,
                    source: TrackSource::Camera,
                }],
                remote: Some(PUB),
                subscription: Subscription::All,
                rtcp_ssrc: None,
                red_payload_type: None,
                rtx_payload_types: RtxPayloadTypes::default(),
                twcc_send_extension: None,
                participant: None,
                audio_level_extension: None,
            })),
        )
        .unwrap();
    let (sub, m, l) = Peer::new(10);
    let c = consumers(
        router
            .handle_command(
                t0,
                Command::AddEndpoint(Box::new(EndpointConfig {
                    id: EndpointId(2),
                    room: RoomId(1),
                    role: Role::Subscribe,
                    profile: super::tests::PROFILE,
                    remote_master: m,
                    local_master: l,
                    tracks: vec![],
                    remote: Some(sub_addr()),
                    subscription: Subscription::All,
                    rtcp_ssrc: Some(0x5050),
                    red_payload_type: None,
                    rtx_payload_types: RtxPayloadTypes {
                        video: Some(SUB_RTX_PT),
                        audio: None,
                    },
                    twcc_send_extension: None,
                    participant: None,
                    audio_level_extension: None,
                })),
            )
            .unwrap(),
    );
    assert_eq!(c.len(), 1);
    assert!(c[0].rtx_ssrc.is_some());
    Setup {
        router,
        t0,
        publisher,
        sub,
        consumer: c[0],
    }
}

/// The publisher's packet `seq` (timestamp seq × 3000, payload from seq).
fn media(p: &mut Peer, seq: u16) -> (Vec<u8>, Vec<u8>) {
    let mut buf = [0u8; 1500];
    let h = RtpHeader {
        payload_type: 96,
        sequence_number: seq,
        timestamp: u32::from(seq).wrapping_mul(3000),
        ssrc: MEDIA,
        marker: false,
    };
    let n = write_header(&mut buf, &h, &[]).unwrap();
    let payload: Vec<u8> = (0..400).map(|i| (i as u16 ^ seq) as u8).collect();
    buf[n..n + payload.len()].copy_from_slice(&payload);
    let len = p.tx.protect_rtp(&mut buf, n + payload.len()).unwrap();
    (buf[..len].to_vec(), payload)
}

/// The publisher's RTX packet repairing `seq` (RFC 4588).
fn publisher_rtx(p: &mut Peer, rtx_seq: u16, seq: u16) -> Vec<u8> {
    let mut buf = [0u8; 1500];
    let h = RtpHeader {
        payload_type: 98,
        sequence_number: rtx_seq,
        timestamp: u32::from(seq).wrapping_mul(3000),
        ssrc: PUB_RTX,
        marker: false,
    };
    let n = write_header(&mut buf, &h, &[]).unwrap();
    buf[n..n + 2].copy_from_slice(&seq.to_be_bytes());
    let payload: Vec<u8> = (0..400).map(|i| (i as u16 ^ seq) as u8).collect();
    buf[n + 2..n + 2 + payload.len()].copy_from_slice(&payload);
    let len = p.tx.protect_rtp(&mut buf, n + 2 + payload.len()).unwrap();
    buf[..len].to_vec()
}

fn srtcp(p: &mut Peer, plain: &[u8]) -> Vec<u8> {
    let mut buf = [0u8; 1500];
    buf[..plain.len()].copy_from_slice(plain);
    let n = p.tx.protect_rtcp(&mut buf, plain.len()).unwrap();
    buf[..n].to_vec()
}

fn nack(p: &mut Peer, sender: u32, media: u32, lost: &[u16]) -> Vec<u8> {
    let mut plain = [0u8; 1200];
    let n = rtcp::write_nack(&mut plain, sender, media, lost).unwrap();
    srtcp(p, &plain[..n])
}

/// What a subscriber got: RTP by SSRC (plaintext), and RTCP compounds.
#[derive(Default)]
struct Received {
    rtp: Vec<Vec<u8>>,
    rtcp: Vec<Vec<u8>>,
}

fn open_all(peer: &mut Peer, sink: &mut Sink, to: SocketAddr) -> Received {
    let mut got = Received::default();
    for (d, dst) in sink.sent.drain(..) {
        if dst != to {
            continue;
        }
        let mut b = d.clone();
        if wire::classify(&b) == DatagramKind::Rtcp {
            let n = peer.rx.unprotect_rtcp(&mut b).unwrap();
            b.truncate(n);
            got.rtcp.push(b);
        } else {
            let n = peer.rx.unprotect_rtp(&mut b).unwrap();
            b.truncate(n);
            got.rtp.push(b);
        }
    }
    got
}

#[test]
fn a_subscribers_nack_is_answered_with_rtx_at_most_three_times() {
    let mut s = setup();
    let mut sink = Sink::new();
    let mut payloads = Vec::new();
    for seq in 100..110u16 {
        let (mut pkt, payload) = media(&mut s.publisher, seq);
        payloads.push(payload);
        s.router.handle_input(s.t0, PUB, &mut pkt, &mut sink);
    }
    let got = open_all(&mut s.sub, &mut sink, sub_addr());
    assert_eq!(got.rtp.len(), 10);
    let out_seqs: Vec<u16> = got
        .rtp
        .iter()
        .map(|p| RtpPacket::new_checked(p).unwrap().sequence_number())
        .collect();
    let out_ts: Vec<u32> = got
        .rtp
        .iter()
        .map(|p| RtpPacket::new_checked(p).unwrap().timestamp())
        .collect();
    // The subscriber lost the 3rd and 6th packets.
    let lost = [out_seqs[2], out_seqs[5]];
    let mut n = nack(&mut s.sub, 0x5050, s.consumer.ssrc, &lost);
    s.router.handle_input(s.t0, sub_addr(), &mut n, &mut sink);
    let got = open_all(&mut s.sub, &mut sink, sub_addr());
    assert_eq!(got.rtp.len(), 2);
    let mut rtx_seqs = Vec::new();
    for (i, p) in got.rtp.iter().enumerate() {
        let p = RtpPacket::new_checked(p).unwrap();
        let at = [2, 5][i];
        assert_eq!(p.ssrc(), s.consumer.rtx_ssrc.unwrap());
        assert_eq!(p.payload_type(), SUB_RTX_PT);
        assert_eq!(p.timestamp(), out_ts[at]);
        assert_eq!(&p.payload()[..2], &out_seqs[at].to_be_bytes());
        assert_eq!(&p.payload()[2..], &payloads[at][..]);
        rtx_seqs.push(p.sequence_number());
    }
    assert_eq!(rtx_seqs[1], rtx_seqs[0].wrapping_add(1));
    // Asked again at once: not resent (min(100 ms, 2 RTT) has not passed).
    let mut n = nack(&mut s.sub, 0x5050, s.consumer.ssrc, &lost);
    s.router.handle_input(s.t0, sub_addr(), &mut n, &mut sink);
    assert_eq!(sink.sent.len(), 0);
    // Twice more, 100 ms apart, then never again.
    for k in 1..=3u64 {
        let mut n = nack(&mut s.sub, 0x5050, s.consumer.ssrc, &lost);
        let at = s.t0 + Duration::from_millis(100 * k);
        s.router.handle_input(at, sub_addr(), &mut n, &mut sink);
        let got = open_all(&mut s.sub, &mut sink, sub_addr());
        assert_eq!(got.rtp.len(), if k < 3 { 2 } else { 0 }, "round {k}");
    }
    let st = s.router.stats();
    assert_eq!(st.get(Counter::RtxSent), 6);
    assert_eq!(st.get(Counter::RtxThrottled), 4);
    // A number never sent, and one long gone from the cache.
    let mut n = nack(
        &mut s.sub,
        0x5050,
        s.consumer.ssrc,
        &[out_seqs[9].wrapping_add(5)],
    );
    s.router.handle_input(s.t0, sub_addr(), &mut n, &mut sink);
    assert_eq!(sink.sent.len(), 0);
    assert_eq!(s.router.stats().get(Counter::RtxUnanswerable), 1);
}

#[test]
fn a_nack_for_another_endpoints_consumer_is_ignored() {
    let mut s = setup();
    let mut sink = Sink::new();
    for seq in 100..110u16 {
        let (mut pkt, _) = media(&mut s.publisher, seq);
        s.router.handle_input(s.t0, PUB, &mut pkt, &mut sink);
    }
    sink.sent.clear();
    // The publisher NACKs the subscriber's consumer SSRC: not its own.
    let mut n = nack(&mut s.publisher, MEDIA, s.consumer.ssrc, &[1, 2, 3]);
    s.router.handle_input(s.t0, PUB, &mut n, &mut sink);
    assert_eq!(sink.sent.len(), 0);
    assert_eq!(s.router.stats().get(Counter::RtxSent), 0);
}

/// Publisher → node → subscriber with `loss` % on each hop, for `packets`
/// packets 10 ms apart. The subscriber NACKs every gap every 20 ms (as a
/// browser does) and the publisher answers the node's NACKs with RTX.
/// Returns (packets lost on the way, packets the subscriber never got).
fn lossy_run(loss: u64, packets: u16) -> (usize, usize, RouterStats) {
    let mut s = setup();
    let mut sink = Sink::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut pub_rtx_seq = 0u16;
    let mut lost_on_the_way = 0usize;
    // Output sequence numbers the subscriber has, and the highest.
    let mut have: BTreeSet<u16> = BTreeSet::new();
    let mut first_out: Option<u16> = None;
    let mut last_nack = s.t0;
    let end = packets + 60;
    for i in 0..end {
        let now = s.t0 + Duration::from_millis(u64::from(i) * 10);
        if i < packets {
            let seq = 1000u16.wrapping_add(i);
            let (mut pkt, _) = media(&mut s.publisher, seq);
            if rng.chance(loss) {
                lost_on_the_way += 1;
            } else {
                s.router.handle_input(now, PUB, &mut pkt, &mut sink);
            }
        }
        // Deliver: the node's NACKs to the publisher (answered by RTX
        // unless lost), media to the subscriber (unless lost).
        let out: Vec<(Vec<u8>, SocketAddr)> = sink.sent.drain(..).collect();
        for (mut d, dst) in out {
            if rng.chance(loss) {
                if dst == sub_addr() {
                    lost_on_the_way += 1;
                }
                continue;
            }
            if dst == PUB {
                if wire::classify(&d) != DatagramKind::Rtcp {
                    continue;
                }
                let n = s.publisher.rx.unprotect_rtcp(&mut d).unwrap();
                for item in RtcpIter::new(&d[..n]) {
                    if let Ok(RtcpPacket::Nack(nk)) = item {
                        for seq in nk.lost() {
                            let mut r = publisher_rtx(&mut s.publisher, pub_rtx_seq, seq);
                            pub_rtx_seq = pub_rtx_seq.wrapping_add(1);
                            if !rng.chance(loss) {
                                s.router.handle_input(now, PUB, &mut r, &mut sink);
                            }
                        }
                    }
                }
            } else if dst == sub_addr() && wire::classify(&d) == DatagramKind::Rtp {
                let n = s.sub.rx.unprotect_rtp(&mut d).unwrap();
                let p = RtpPacket::new_checked(&d[..n]).unwrap();
                let seq = if p.ssrc() == s.consumer.ssrc {
                    p.sequence_number()
                } else {
                    assert_eq!(p.ssrc(), s.consumer.rtx_ssrc.unwrap());
                    u16::from_be_bytes([p.payload()[0], p.payload()[1]])
                };
                first_out.get_or_insert(seq);
                have.insert(seq);
            }
        }
        // The subscriber NACKs its gaps every 20 ms.
        if now.saturating_duration_since(last_nack) >= Duration::from_millis(20)
            && let (Some(first), Some(&high)) = (first_out, have.iter().next_back())
        {
            last_nack = now;
            let missing: Vec<u16> = (first..high)
                .filter(|q| !have.contains(q))
                .take(60)
                .collect();
            if !missing.is_empty() {
                let mut n = nack(&mut s.sub, 0x5050, s.consumer.ssrc, &missing);
                if !rng.chance(loss) {
                    s.router.handle_input(now, sub_addr(), &mut n, &mut sink);
                }
            }
        }
    }
    // Every number from the subscriber's first to its highest should be
    // there: a gap is a packet lost and never repaired.
    let first = first_out.unwrap();
    let high = have
        .iter()
        .copied()
        .max_by_key(|s| s.wrapping_sub(first))
        .unwrap();
    let expected = usize::from(high.wrapping_sub(first)) + 1;
    let never = expected.saturating_sub(have.len());
    eprintln!(
        "{loss} % per hop: {lost_on_the_way} packets lost on the way, {never} never repaired, \
         {} NACKs to the publisher, {} RTX sent to the subscriber",
        s.router.stats().get(Counter::NackSent),
        s.router.stats().get(Counter::RtxSent)
    );
    (lost_on_the_way, never, s.router.stats().clone())
}

#[test]
fn three_percent_loss_on_both_hops_is_repaired() {
    let (lost, never, st) = lossy_run(3, 2000);
    // About 6 % of 2,000 packets are lost on the way; nearly all come back.
    assert!(lost > 60, "lost {lost}");
    assert!(
        never * 20 < lost,
        "{never} of {lost} lost packets never repaired"
    );
    assert!(st.get(Counter::NackSent) > 0 && st.get(Counter::RtxIn) > 0);
    assert!(st.get(Counter::NackRepaired) > 0);
    assert!(st.get(Counter::RtxSent) > 0);
    assert_eq!(st.dropped(DropReason::RtxDuplicate), 0);
}

#[test]
fn ten_percent_loss_on_both_hops_is_mostly_repaired() {
    let (lost, never, _) = lossy_run(10, 2000);
    assert!(lost > 250, "lost {lost}");
    assert!(
        never * 10 < lost,
        "{never} of {lost} lost packets never repaired"
    );
}

#[test]
fn a_publishers_rtx_for_a_packet_not_missing_is_a_duplicate() {
    let mut s = setup();
    let mut sink = Sink::new();
    for seq in 100..105u16 {
        let (mut pkt, _) = media(&mut s.publisher, seq);
        s.router.handle_input(s.t0, PUB, &mut pkt, &mut sink);
    }
    sink.sent.clear();
    // RTX of a packet the node has: a duplicate (or a probe), not forwarded.
    let mut r = publisher_rtx(&mut s.publisher, 0, 102);
    s.router.handle_input(s.t0, PUB, &mut r, &mut sink);
    assert_eq!(s.router.stats().dropped(DropReason::RtxDuplicate), 1);
    assert_eq!(sink.sent.len(), 0);
    // Padding-only RTX: a probe.
    let mut buf = [0u8; 200];
    let n = write_header(
        &mut buf,
        &RtpHeader {
            payload_type: 98,
            sequence_number: 10,
            timestamp: 0,
            ssrc: PUB_RTX,
            marker: false,
        },
        &[],
    )
    .unwrap();
    buf[0] |= 0x20;
    buf[n + 99] = 100;
    let len = s.publisher.tx.protect_rtp(&mut buf, n + 100).unwrap();
    s.router
        .handle_input(s.t0, PUB, &mut buf[..len].to_vec(), &mut sink);
    assert_eq!(s.router.stats().dropped(DropReason::RtxPadding), 1);
    // A gap, NACKed at once, and its repair forwarded once.
    let (mut pkt, _) = media(&mut s.publisher, 107);
    s.router.handle_input(s.t0, PUB, &mut pkt, &mut sink);
    assert_eq!(s.router.stats().get(Counter::NackRequested), 2);
    let mut r = publisher_rtx(&mut s.publisher, 11, 105);
    s.router.handle_input(s.t0, PUB, &mut r, &mut sink);
    let mut again = publisher_rtx(&mut s.publisher, 12, 105);
    s.router.handle_input(s.t0, PUB, &mut again, &mut sink);
    let st = s.router.stats();
    assert_eq!(st.get(Counter::RtxIn), 3);
    assert_eq!(st.get(Counter::NackRepaired), 1);
    assert_eq!(st.dropped(DropReason::RtxDuplicate), 2);
}

#[test]
fn sender_reports_are_translated_per_consumer_and_give_the_rtt() {
    let mut s = setup();
    let mut sink = Sink::new();
    let (mut pkt, _) = media(&mut s.publisher, 100);
    s.router.handle_input(s.t0, PUB, &mut pkt, &mut sink);
    let got = open_all(&mut s.sub, &mut sink, sub_addr());
    let first = RtpPacket::new_checked(&got.rtp[0]).unwrap();
    // The publisher's SR maps its timestamp 300,000 (seq 100) to NTP.
    let ntp = 0xe000_0000_8000_0000u64;
    let mut plain = [0u8; 100];
    let n = rtcp::write_sender_report(&mut plain, MEDIA, ntp, 300_000 + 900, 1, 400, &[]).unwrap();
    let mut sr = srtcp(&mut s.publisher, &plain[..n]);
    let at = s.t0 + Duration::from_millis(10);
    s.router.handle_input(at, PUB, &mut sr, &mut sink);
    let got = open_all(&mut s.sub, &mut sink, sub_addr());
    assert_eq!(got.rtcp.len(), 1);
    let Some(Ok(RtcpPacket::SenderReport(t))) = RtcpIter::new(&got.rtcp[0]).next() else {
        panic!("expected an SR");
    };
    assert_eq!(t.ssrc(), s.consumer.ssrc);
    assert_eq!(t.ntp_time(), ntp);
    assert_eq!(t.rtp_time(), first.timestamp().wrapping_add(900));
    assert_eq!((t.packet_count(), t.octet_count()), (1, 400));
    // The subscriber's RR 40 ms later, having held the SR for 15 ms:
    // 25 ms RTT.
    let block = rtcp::ReportBlockData {
        ssrc: s.consumer.ssrc,
        fraction_lost: 3,
        cumulative_lost: 1,
        highest_seq: 1,
        jitter: 7,
        last_sr: (ntp >> 16) as u32,
        delay_since_last_sr: 15 * 65_536 / 1000,
    };
    let n = rtcp::write_receiver_report(&mut plain, 0x5050, &[block]).unwrap();
    let mut rr = srtcp(&mut s.sub, &plain[..n]);
    s.router.handle_input(
        at + Duration::from_millis(40),
        sub_addr(),
        &mut rr,
        &mut sink,
    );
    let rtt = s.router.rtt(EndpointId(2)).unwrap();
    assert!((24..=26).contains(&rtt.as_millis()), "rtt {rtt:?}");
    assert_eq!(s.router.stats().get(Counter::ReportBlocksIn), 1);
}

#[test]
fn publishers_get_receiver_reports_with_their_loss() {
    let mut s = setup();
    let mut sink = Sink::new();
    // 20 packets, 5 of them lost.
    for seq in 100..120u16 {
        let (mut pkt, _) = media(&mut s.publisher, seq);
        if seq % 4 != 1 {
            s.router.handle_input(s.t0, PUB, &mut pkt, &mut sink);
        }
    }
    sink.sent.clear();
    s.router
        .handle_timeout(s.t0 + reports::RTCP_INTERVAL, &mut sink);
    let mut found = None;
    for (mut d, dst) in sink.sent.drain(..) {
        if dst != PUB {
            continue;
        }
        let n = s.publisher.rx.unprotect_rtcp(&mut d).unwrap();
        for item in RtcpIter::new(&d[..n]) {
            if let Ok(RtcpPacket::ReceiverReport(rr)) = item {
                found = rr.report_blocks().next().map(|b| b.to_data());
            }
        }
    }
    let b = found.expect("an RR with a block");
    assert_eq!(b.ssrc, MEDIA);
    assert_eq!(b.highest_seq, 119);
    // 101 is lost before the first received (100)... 100..=119 less 5.
    assert_eq!(b.cumulative_lost, 5);
    assert_eq!(b.fraction_lost, (5 * 256 / 20) as u8);
    assert_eq!(s.router.stats().get(Counter::RrSent), 1);
}
