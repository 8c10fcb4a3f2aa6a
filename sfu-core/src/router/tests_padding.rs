//! Padding-only packets of a publisher on a virtual clock: dropped at
//! forwarding, with every consumer's numbering kept gap-free — in order,
//! reordered around the padding, across the sequence wrap and across a
//! slot's switch of source — and subscribers' NACKs after a dropped
//! padding packet answered with the right original packet. (Padding
//! across a simulcast layer switch: `tests_simulcast`.)

use super::tests::{Peer, Sink, addr, consumers};
use super::*;
use crate::wire::rtcp;
use crate::wire::rtp::{RtpHeader, RtpPacket, write_header};

const PUB: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5000);
const PUB2: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5001);
const MEDIA: u32 = 0x1111;
const MEDIA2: u32 = 0x3333;
const SUB_RTX_PT: u8 = 97;

struct Setup {
    router: Router,
    t0: Instant,
    publisher: Peer,
    sub: Peer,
    consumer: ConsumerInfo,
}

fn config(id: u64, role: Role, masters: (Vec<u8>, Vec<u8>)) -> EndpointConfig {
    EndpointConfig {
        id: EndpointId(id),
        room: RoomId(1),
        role,
        profile: super::tests::PROFILE,
        remote_master: masters.0,
        local_master: masters.1,
        tracks: Vec::new(),
        remote: None,
        subscription: Subscription::All,
        rtcp_ssrc: None,
        red_payload_type: None,
        rtx_payload_types: RtxPayloadTypes::default(),
        twcc_send_extension: None,
        participant: None,
        audio_level_extension: None,
    }
}

/// A publisher of one VP8 track `ssrc` at `at`.
fn publisher(router: &mut Router, t0: Instant, id: u64, ssrc: u32, at: SocketAddr) -> Peer {
    let (peer, m, l) = Peer::new(id as u8);
    let mut c = config(id, Role::Publish, (m, l));
    c.tracks = super::tests::video(ssrc);
    c.remote = Some(at);
    router
        .handle_command(t0, Command::AddEndpoint(Box::new(c)))
        .unwrap();
    peer
}

/// A publisher and a subscriber with RTX for video, subscribed to
/// `subscription`.
fn setup(subscription: Subscription) -> Setup {
    let t0 = Instant::now();
    let mut router = Router::new(RouterConfig::default());
    router
        .handle_command(t0, Command::CreateRoom(RoomId(1)))
        .unwrap();
    let publisher = publisher(&mut router, t0, 1, MEDIA, PUB);
    let (sub, m, l) = Peer::new(10);
    let mut c = config(2, Role::Subscribe, (m, l));
    c.remote = Some(addr(6000));
    c.subscription = subscription;
    c.rtcp_ssrc = Some(0x5050);
    c.rtx_payload_types.video = Some(SUB_RTX_PT);
    let c = consumers(
        router
            .handle_command(t0, Command::AddEndpoint(Box::new(c)))
            .unwrap(),
    );
    assert!(c[0].rtx_ssrc.is_some());
    Setup {
        router,
        t0,
        publisher,
        sub,
        consumer: c[0],
    }
}

/// The payload of media packet `seq`: 100 bytes from it.
fn payload(seq: u16) -> Vec<u8> {
    (0..100u16).map(|i| (i ^ seq) as u8).collect()
}

/// Media packet `seq` of `ssrc`.
fn media(p: &mut Peer, ssrc: u32, seq: u16) -> Vec<u8> {
    packet(p, ssrc, seq, false)
}

/// Padding-only packet `seq` of `ssrc` (P bit, no payload, 255 bytes of
/// padding, as Chrome's probes).
fn padding(p: &mut Peer, ssrc: u32, seq: u16) -> Vec<u8> {
    packet(p, ssrc, seq, true)
}

fn packet(p: &mut Peer, ssrc: u32, seq: u16, pad: bool) -> Vec<u8> {
    let mut buf = [0u8; 1500];
    let h = RtpHeader {
        payload_type: 96,
        sequence_number: seq,
        timestamp: u32::from(seq).wrapping_mul(3000),
        ssrc,
        marker: false,
    };
    let n = write_header(&mut buf, &h, &[]).unwrap();
    let len = if pad {
        buf[0] |= 0x20;
        buf[n + 254] = 255;
        n + 255
    } else {
        buf[n..n + 100].copy_from_slice(&payload(seq));
        n + 100
    };
    let len = p.tx.protect_rtp(&mut buf, len).unwrap();
    buf[..len].to_vec()
}

/// The RTP the subscriber got, as (SSRC, sequence number, payload).
fn received(s: &mut Setup, sink: &mut Sink) -> Vec<(u32, u16, Vec<u8>)> {
    let mut out = Vec::new();
    for (d, dst) in sink.sent.drain(..) {
        if dst != addr(6000) || wire::classify(&d) != DatagramKind::Rtp {
            continue;
        }
        let plain = s.sub.open(&d);
        let p = RtpPacket::new_checked(&plain).unwrap();
        out.push((p.ssrc(), p.sequence_number(), p.payload().to_vec()));
    }
    out
}

/// Sends the publisher's packets (`true`: padding) in the given order.
fn send(s: &mut Setup, sink: &mut Sink, packets: &[(u16, bool)]) {
    for &(seq, pad) in packets {
        let mut d = packet(&mut s.publisher, MEDIA, seq, pad);
        s.router.handle_input(s.t0, PUB, &mut d, sink);
    }
}

/// The subscriber NACKs output numbers `lost`.
fn nack(s: &mut Setup, sink: &mut Sink, lost: &[u16]) {
    let mut plain = [0u8; 1200];
    let n = rtcp::write_nack(&mut plain, 0x5050, s.consumer.ssrc, lost).unwrap();
    let n = s.sub.tx.protect_rtcp(&mut plain, n).unwrap();
    let mut d = plain[..n].to_vec();
    s.router.handle_input(s.t0, addr(6000), &mut d, sink);
}

/// The retransmissions the subscriber got, as (original output number,
/// payload).
fn rtx(s: &mut Setup, sink: &mut Sink) -> Vec<(u16, Vec<u8>)> {
    let rtx_ssrc = s.consumer.rtx_ssrc.unwrap();
    received(s, sink)
        .into_iter()
        .map(|(ssrc, _, p)| {
            assert_eq!(ssrc, rtx_ssrc, "only retransmissions");
            (u16::from_be_bytes([p[0], p[1]]), p[2..].to_vec())
        })
        .collect()
}

#[test]
fn padding_in_the_middle_is_dropped_and_numbering_stays_gap_free() {
    let mut s = setup(Subscription::All);
    let mut sink = Sink::new();
    let order: Vec<(u16, bool)> = (1000..=1010)
        .map(|seq| (seq, matches!(seq, 1003 | 1004 | 1008)))
        .collect();
    send(&mut s, &mut sink, &order);
    let got = received(&mut s, &mut sink);
    let media: Vec<u16> = order.iter().filter(|o| !o.1).map(|o| o.0).collect();
    assert_eq!(got.len(), media.len(), "padding is not forwarded");
    for (i, ((ssrc, out, p), &seq)) in got.iter().zip(&media).enumerate() {
        assert_eq!(*ssrc, s.consumer.ssrc);
        assert_eq!(*out, got[0].1.wrapping_add(i as u16), "gap-free");
        assert_eq!(*p, payload(seq), "packet {seq}");
    }
    let st = s.router.stats();
    assert_eq!(st.dropped(DropReason::PaddingOnly), 3);
    assert_eq!(st.get(Counter::RtpIn), 11, "padding is authenticated");
}

/// Late media around a dropped padding packet keeps the number it would
/// have had; a padding packet that comes after later media was numbered
/// leaves its number unused, and the subscriber's NACK for that number is
/// answered with the padding packet as an empty retransmission, which
/// fills the hole.
#[test]
fn reordered_packets_around_padding_keep_their_numbers() {
    let mut s = setup(Subscription::All);
    let mut sink = Sink::new();
    send(
        &mut s,
        &mut sink,
        &[
            (1000, false),
            (1002, true),
            (1003, false),
            (1001, false),
            (1005, false),
            (1004, true), // late: 1005 is out already
            (1006, false),
        ],
    );
    let got = received(&mut s, &mut sink);
    let o = got[0].1;
    let seen: Vec<(u16, Vec<u8>)> = got
        .into_iter()
        .map(|g| (g.1.wrapping_sub(o), g.2))
        .collect();
    assert_eq!(
        seen,
        [
            (0, payload(1000)),
            (2, payload(1003)),
            (1, payload(1001)),
            (4, payload(1005)),
            (5, payload(1006)),
        ]
    );
    assert_eq!(s.router.stats().dropped(DropReason::PaddingOnly), 2);
    // The subscriber misses number 3 (the late padding's) and asks for it,
    // with the others around it.
    nack(&mut s, &mut sink, &[o + 1, o + 2, o + 3, o + 4]);
    let resent = rtx(&mut s, &mut sink);
    assert_eq!(
        resent,
        [
            (o + 1, payload(1001)),
            (o + 2, payload(1003)),
            (o + 3, Vec::new()),
            (o + 4, payload(1005)),
        ]
    );
}

#[test]
fn a_nack_after_dropped_padding_is_answered_with_the_right_packet() {
    let mut s = setup(Subscription::All);
    let mut sink = Sink::new();
    let order: Vec<(u16, bool)> = (1000..=1020)
        .map(|seq| (seq, (1005..=1009).contains(&seq) || seq == 1015))
        .collect();
    send(&mut s, &mut sink, &order);
    let got = received(&mut s, &mut sink);
    assert_eq!(got.len(), 15);
    let out_of = |seq: u16| {
        let i = order.iter().filter(|o| !o.1 && o.0 < seq).count();
        got[0].1.wrapping_add(i as u16)
    };
    for seq in [1004, 1010, 1016, 1020] {
        assert_eq!(
            got.iter().find(|g| g.2 == payload(seq)).unwrap().1,
            out_of(seq)
        );
    }
    let lost: Vec<u16> = [1004, 1010, 1016, 1020].map(out_of).to_vec();
    nack(&mut s, &mut sink, &lost);
    let resent = rtx(&mut s, &mut sink);
    assert_eq!(
        resent,
        [1004, 1010, 1016, 1020].map(|seq| (out_of(seq), payload(seq)))
    );
    let st = s.router.stats();
    assert_eq!(st.get(Counter::RtxSent), 4);
    assert_eq!(st.get(Counter::RtxUnanswerable), 0);
    assert_eq!(st.get(Counter::RtxNotCached), 0);
    // A number not sent yet (the next one) maps to nothing.
    nack(&mut s, &mut sink, &[out_of(1021)]);
    assert!(rtx(&mut s, &mut sink).is_empty());
    assert_eq!(s.router.stats().get(Counter::RtxUnanswerable), 1);
}

#[test]
fn padding_across_the_sequence_wrap() {
    let mut s = setup(Subscription::All);
    let mut sink = Sink::new();
    let order: Vec<(u16, bool)> = (65_528u16..=65_535)
        .chain(0..=6)
        .map(|seq| (seq, matches!(seq, 65_534 | 65_535 | 0 | 3)))
        .collect();
    send(&mut s, &mut sink, &order);
    let got = received(&mut s, &mut sink);
    let media: Vec<u16> = order.iter().filter(|o| !o.1).map(|o| o.0).collect();
    assert_eq!(got.len(), media.len());
    for (i, ((_, out, p), &seq)) in got.iter().zip(&media).enumerate() {
        assert_eq!(*out, got[0].1.wrapping_add(i as u16), "gap-free");
        assert_eq!(*p, payload(seq));
    }
    // NACKs on both sides of the wrap.
    let pick = [5usize, 6, 9];
    let lost: Vec<u16> = pick.iter().map(|&i| got[i].1).collect();
    nack(&mut s, &mut sink, &lost);
    let resent = rtx(&mut s, &mut sink);
    let want: Vec<(u16, Vec<u8>)> = pick
        .iter()
        .map(|&i| (got[i].1, payload(media[i])))
        .collect();
    assert_eq!(resent, want);
}

/// A slot re-pointed to another publisher (SSRC rewriting onto the slot):
/// the old source's padding before the switch and the new source's
/// padding before and after its first packet leave no gap.
#[test]
fn padding_around_a_slots_switch_of_source() {
    let mut s = setup(Subscription::Explicit {
        video: vec![MEDIA],
        audio: vec![],
    });
    let mut second = publisher(&mut s.router, s.t0, 3, MEDIA2, PUB2);
    let mut sink = Sink::new();
    send(
        &mut s,
        &mut sink,
        &[(10, false), (11, true), (12, false), (13, true)],
    );
    let c = consumers(
        s.router
            .handle_command(
                s.t0,
                Command::SetSubscription(
                    EndpointId(2),
                    Subscription::Explicit {
                        video: vec![MEDIA2],
                        audio: vec![],
                    },
                ),
            )
            .unwrap(),
    );
    assert_eq!(c[0].ssrc, s.consumer.ssrc, "the slot keeps its SSRC");
    let now = s.t0 + std::time::Duration::from_millis(40);
    for (seq, pad) in [
        (500, true),
        (501, false),
        (502, true),
        (503, true),
        (504, false),
    ] {
        let mut d = if pad {
            padding(&mut second, MEDIA2, seq)
        } else {
            media(&mut second, MEDIA2, seq)
        };
        s.router.handle_input(now, PUB2, &mut d, &mut sink);
    }
    // The first source's padding after the switch changes nothing.
    let mut d = padding(&mut s.publisher, MEDIA, 14);
    s.router.handle_input(now, PUB, &mut d, &mut sink);
    let mut d = media(&mut second, MEDIA2, 505);
    s.router.handle_input(now, PUB2, &mut d, &mut sink);
    let got = received(&mut s, &mut sink);
    let payloads: Vec<Vec<u8>> = got.iter().map(|g| g.2.clone()).collect();
    assert_eq!(
        payloads,
        [10, 12, 501, 504, 505].map(payload),
        "media only, in order"
    );
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g.0, s.consumer.ssrc);
        assert_eq!(g.1, got[0].1.wrapping_add(i as u16), "gap-free: {got:?}");
    }
    assert_eq!(s.router.stats().dropped(DropReason::PaddingOnly), 6);
}
