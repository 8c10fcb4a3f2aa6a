//! Simulcast per subscriber on a virtual clock: one track with three
//! layers, each consumer on one layer, switches only at a keyframe of the
//! target layer, with continuous sequence numbers and VP8 PictureIDs.

use std::time::Duration;

use super::tests::{Peer, Sink, addr, consumers, endpoint};
use super::*;
use crate::codec::vp8::Vp8Descriptor;
use crate::wire::rtcp::{RtcpIter, RtcpPacket};
use crate::wire::rtp::{RtpHeader, RtpPacket, write_header};

const PUB: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5000);
/// The layers' SSRCs, ascending quality.
const LAYERS: [u32; 3] = [0x100, 0x200, 0x300];

struct Publisher {
    peer: Peer,
    seq: [u16; 3],
    picture: [u16; 3],
}

impl Publisher {
    /// One VP8 packet (a whole picture) of layer `l` at frame `frame`,
    /// `size` payload bytes tagged with the layer.
    fn frame(&mut self, l: usize, frame: u32, keyframe: bool, size: usize) -> Vec<u8> {
        let mut buf = [0u8; 1500];
        let h = write_header(
            &mut buf,
            &RtpHeader {
                marker: true,
                payload_type: 96,
                sequence_number: self.seq[l],
                timestamp: frame.wrapping_mul(4500),
                ssrc: LAYERS[l],
            },
            &[],
        )
        .unwrap();
        self.seq[l] = self.seq[l].wrapping_add(1);
        let pid = self.picture[l];
        self.picture[l] = (pid + 1) & 0x7fff;
        // X, S, PID 0; I with a 15-bit PictureID; the VP8 header's P bit.
        let d = [
            0x90,
            0x80,
            0x80 | (pid >> 8) as u8,
            pid as u8,
            u8::from(!keyframe),
        ];
        buf[h..h + 5].copy_from_slice(&d);
        buf[h + 5..h + size].fill(0xa0 + l as u8);
        let n = self.peer.tx.protect_rtp(&mut buf, h + size).unwrap();
        buf[..n].to_vec()
    }
}

struct Room {
    router: Router,
    t0: Instant,
    publisher: Publisher,
    subs: Vec<(Peer, ConsumerInfo)>,
}

/// One VP8 track (payload type 96) of the given layers, ascending quality:
/// every layer after the first is `layer_of` the first.
pub(super) fn vp8_layers(ssrcs: &[u32]) -> Vec<TrackConfig> {
    ssrcs
        .iter()
        .map(|&ssrc| TrackConfig {
            kind: MediaKind::Video,
            ssrc,
            payload_type: 96,
            codec: crate::codec::Codec::Vp8,
            rtx: None,
            layer_of: ssrcs.first().copied().filter(|&first| first != ssrc),
            red_payload_type: None,
            source: TrackSource::Camera,
        })
        .collect()
}

fn room(subscribers: u16) -> Room {
    let t0 = Instant::now();
    let mut router = Router::new(RouterConfig::default());
    router
        .handle_command(t0, Command::CreateRoom(RoomId(1)))
        .unwrap();
    let (peer, pm, pl) = Peer::new(1);
    let tracks = vp8_layers(&LAYERS);
    router
        .handle_command(
            t0,
            endpoint(
                1,
                Role::Publish,
                pm,
                pl,
                tracks,
                Some(PUB),
                Subscription::All,
            ),
        )
        .unwrap();
    let mut subs = Vec::new();
    for i in 0..subscribers {
        let (peer, m, l) = Peer::new(10 + i as u8);
        let c = consumers(
            router
                .handle_command(
                    t0,
                    endpoint(
                        100 + u64::from(i),
                        Role::Subscribe,
                        m,
                        l,
                        vec![],
                        Some(addr(6000 + i)),
                        Subscription::All,
                    ),
                )
                .unwrap(),
        );
        assert_eq!(c.len(), 1, "one consumer for the three layers");
        assert_eq!(c[0].producer_ssrc, Some(LAYERS[0]));
        subs.push((peer, c[0]));
    }
    Room {
        router,
        t0,
        publisher: Publisher {
            peer,
            seq: [100, 2000, 30000],
            picture: [5, 700, 32760],
        },
        subs,
    }
}

/// What subscriber `i` got: (layer tag, sequence number, PictureID, keyframe).
fn received(r: &mut Room, sink: &mut Sink, i: usize) -> Vec<(u8, u16, u16, bool)> {
    let to = addr(6000 + i as u16);
    let (peer, info) = &mut r.subs[i];
    let mut out = Vec::new();
    for (d, dst) in &sink.sent {
        if *dst != to || wire::classify(d) != DatagramKind::Rtp {
            continue;
        }
        let plain = peer.open(d);
        let p = RtpPacket::new_checked(&plain).unwrap();
        assert_eq!(p.ssrc(), info.ssrc);
        let desc = Vp8Descriptor::parse(p.payload()).unwrap();
        let (pid, _) = desc.picture_id.unwrap();
        let tag = *p.payload().last().unwrap();
        out.push((
            tag - 0xa0,
            p.sequence_number(),
            pid,
            desc.is_keyframe(p.payload()),
        ));
    }
    out
}

/// PLIs sent to the publisher, by media SSRC.
fn plis(r: &mut Room, sink: &Sink) -> Vec<u32> {
    let mut out = Vec::new();
    for (d, dst) in &sink.sent {
        if *dst != PUB {
            continue;
        }
        let mut b = d.clone();
        let n = r.publisher.peer.rx.unprotect_rtcp(&mut b).unwrap();
        for item in RtcpIter::new(&b[..n]) {
            if let Ok(RtcpPacket::Pli(p)) = item {
                out.push(p.media_ssrc());
            }
        }
    }
    out
}

/// Sends frames `frames` of every layer (50 ms apart from `start`), with
/// keyframes where `key(layer, frame)` says.
fn run(
    r: &mut Room,
    sink: &mut Sink,
    frames: std::ops::Range<u32>,
    key: impl Fn(usize, u32) -> bool,
) {
    for f in frames {
        let now = r.t0 + Duration::from_millis(u64::from(f) * 50);
        for l in 0..3 {
            // Bitrates rise with the layer: 200, 500, 1100 bytes a frame.
            let size = [200, 500, 1100][l];
            let mut pkt = r.publisher.frame(l, f, key(l, f), size);
            r.router.handle_input(now, PUB, &mut pkt, sink);
        }
    }
}

#[test]
fn each_consumer_forwards_one_layer_from_its_keyframe() {
    let mut r = room(2);
    // Subscriber 1 is capped to the lowest layer.
    r.router
        .handle_command(
            r.t0,
            Command::SetMaxLayer {
                endpoint: EndpointId(101),
                slot: 0,
                max_layer: Some(0),
            },
        )
        .unwrap();
    let mut sink = Sink::new();
    // Keyframes: the top layer at frame 3, the low one at frame 5.
    run(&mut r, &mut sink, 0..10, |l, f| {
        (l, f) == (2, 3) || (l, f) == (0, 5)
    });
    let top = received(&mut r, &mut sink, 0);
    let low = received(&mut r, &mut sink, 1);
    // Nothing before the target layer's keyframe, then that layer only.
    assert_eq!(top.len(), 7, "{top:?}");
    assert!(top[0].3 && top.iter().all(|p| p.0 == 2));
    assert_eq!(low.len(), 5, "{low:?}");
    assert!(low[0].3 && low.iter().all(|p| p.0 == 0));
    for w in top.windows(2).chain(low.windows(2)) {
        assert_eq!(w[1].1, w[0].1.wrapping_add(1), "sequence continuous");
    }
    // The router asked the target layers for keyframes.
    let asked = plis(&mut r, &sink);
    assert!(
        asked.contains(&LAYERS[2]) && asked.contains(&LAYERS[0]),
        "{asked:?}"
    );
}

#[test]
fn a_switch_waits_for_the_new_layers_keyframe_and_keeps_numbering_continuous() {
    let mut r = room(1);
    let mut sink = Sink::new();
    run(&mut r, &mut sink, 0..6, |l, f| f == 0 && l == 2);
    let before = received(&mut r, &mut sink, 0);
    assert_eq!(before.len(), 6);
    assert!(before.iter().all(|p| p.0 == 2));
    sink.sent.clear();
    // Capped to the middle layer: the top layer keeps flowing until the
    // middle layer's keyframe (frame 9), then only the middle one.
    let at = r.t0 + Duration::from_millis(300);
    r.router
        .handle_command(
            at,
            Command::SetMaxLayer {
                endpoint: EndpointId(100),
                slot: 0,
                max_layer: Some(1),
            },
        )
        .unwrap();
    run(&mut r, &mut sink, 6..14, |l, f| l == 1 && f == 9);
    assert!(plis(&mut r, &sink).contains(&LAYERS[1]));
    let after = received(&mut r, &mut sink, 0);
    let tags: Vec<u8> = after.iter().map(|p| p.0).collect();
    assert_eq!(
        tags,
        [2, 2, 2, 1, 1, 1, 1, 1],
        "no old-layer frame after the switch"
    );
    assert!(after[3].3, "the switch is at a keyframe");
    let all: Vec<_> = before.iter().chain(&after).collect();
    for w in all.windows(2) {
        assert_eq!(w[1].1, w[0].1.wrapping_add(1), "sequence continuous");
        assert_eq!(w[1].2, (w[0].2 + 1) & 0x7fff, "PictureID continuous");
    }
    assert_eq!(r.router.stats().get(Counter::LayerSwitches), 2);
}

#[test]
fn the_layer_follows_bitrate_and_a_paused_layer_is_left() {
    let mut r = room(1);
    let mut sink = Sink::new();
    // Two seconds of all layers: the top one is the target.
    run(&mut r, &mut sink, 0..40, |_, f| f % 20 == 0);
    let got = received(&mut r, &mut sink, 0);
    assert!(got.iter().all(|p| p.0 == 2), "{got:?}");
    sink.sent.clear();
    // The publisher stops the top layer (bandwidth): after it has been idle
    // the consumer moves to the middle layer at its next keyframe.
    for f in 40..120u32 {
        let now = r.t0 + Duration::from_millis(u64::from(f) * 50);
        for l in 0..2 {
            let mut pkt = r.publisher.frame(l, f, f % 20 == 0, [200, 500][l]);
            r.router.handle_input(now, PUB, &mut pkt, &mut sink);
        }
    }
    let got = received(&mut r, &mut sink, 0);
    assert_eq!(got.last().map(|p| p.0), Some(1), "on the middle layer");
    assert!(got.iter().skip_while(|p| p.0 == 2).all(|p| p.0 == 1));
}

#[test]
fn producers_report_rates_and_ranks_and_consumers_read_without_change() {
    let mut r = room(1);
    let list = |r: &mut Room, at: Instant| match r
        .router
        .handle_command(at, Command::Producers(RoomId(1)))
        .unwrap()
    {
        Outcome::Producers(p) => p
            .into_iter()
            .map(|p| (p.ssrc, p.bitrate.is_some(), p.layer_rank))
            .collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    // Before a packet: no measured rate, ranked in declaration order.
    let t0 = r.t0;
    assert_eq!(
        list(&mut r, t0),
        [
            (LAYERS[0], false, Some(0)),
            (LAYERS[1], false, Some(1)),
            (LAYERS[2], false, Some(2))
        ]
    );
    let mut sink = Sink::new();
    run(&mut r, &mut sink, 0..40, |_, f| f % 20 == 0);
    // The top layer pauses: after two idle seconds it has no rank.
    for f in 40..90u32 {
        let now = r.t0 + Duration::from_millis(u64::from(f) * 50);
        for l in 0..2 {
            let mut pkt = r.publisher.frame(l, f, false, [200, 500][l]);
            r.router.handle_input(now, PUB, &mut pkt, &mut sink);
        }
    }
    let at = r.t0 + Duration::from_millis(90 * 50);
    assert_eq!(
        list(&mut r, at),
        [
            (LAYERS[0], true, Some(0)),
            (LAYERS[1], true, Some(1)),
            (LAYERS[2], true, None)
        ]
    );
    let Outcome::Producers(p) = r
        .router
        .handle_command(at, Command::Producers(RoomId(1)))
        .unwrap()
    else {
        panic!("a producer list");
    };
    // 500-byte frames every 50 ms, and their headers: about 80 kbit/s.
    let mid = p[1].bitrate.expect("measured");
    assert!((80_000..90_000).contains(&mid), "{mid}");

    // The consumers' query answers what the subscription made, and
    // refuses an unknown endpoint.
    let got = r
        .router
        .handle_command(at, Command::Consumers(EndpointId(100)))
        .unwrap();
    assert_eq!(got, Outcome::Consumers(vec![r.subs[0].1]));
    assert_eq!(
        r.router
            .handle_command(at, Command::Consumers(EndpointId(999))),
        Err(RouterError::UnknownEndpoint)
    );
}

impl Publisher {
    /// A padding-only packet of layer `l` (a bandwidth probe on the media
    /// SSRC): no payload, 200 bytes of padding.
    fn padding(&mut self, l: usize, frame: u32) -> Vec<u8> {
        let mut buf = [0u8; 1500];
        let h = write_header(
            &mut buf,
            &RtpHeader {
                marker: false,
                payload_type: 96,
                sequence_number: self.seq[l],
                timestamp: frame.wrapping_mul(4500),
                ssrc: LAYERS[l],
            },
            &[],
        )
        .unwrap();
        self.seq[l] = self.seq[l].wrapping_add(1);
        buf[0] |= 0x20;
        buf[h + 199] = 200;
        let n = self.peer.tx.protect_rtp(&mut buf, h + 200).unwrap();
        buf[..n].to_vec()
    }
}

/// Padding-only packets on every layer, before and after a switch: the
/// ones of the layer forwarded are dropped from the numbering, the others
/// never counted; the subscriber's numbering and PictureIDs run on
/// without a gap and no padding reaches it.
#[test]
fn padding_across_a_layer_switch_leaves_no_gap() {
    let mut r = room(1);
    let mut sink = Sink::new();
    // (frame, layer, padding packets after that frame's pictures).
    let pads = [
        (2, 2, 3),
        (2, 1, 1),
        (4, 0, 2),
        (8, 1, 2),
        (10, 2, 4),
        (11, 1, 3),
    ];
    for f in 0..14u32 {
        if f == 6 {
            // Capped to the middle layer: switched at its keyframe (9).
            r.router
                .handle_command(
                    r.t0 + Duration::from_millis(300),
                    Command::SetMaxLayer {
                        endpoint: EndpointId(100),
                        slot: 0,
                        max_layer: Some(1),
                    },
                )
                .unwrap();
        }
        let now = r.t0 + Duration::from_millis(u64::from(f) * 50);
        for l in 0..3 {
            let key = (l, f) == (2, 0) || (l, f) == (1, 9);
            let mut pkt = r.publisher.frame(l, f, key, [200, 500, 1100][l]);
            r.router.handle_input(now, PUB, &mut pkt, &mut sink);
        }
        for &(at, l, n) in &pads {
            if at == f {
                for _ in 0..n {
                    let mut pkt = r.publisher.padding(l, f);
                    r.router.handle_input(now, PUB, &mut pkt, &mut sink);
                }
            }
        }
    }
    // Every packet received parses as VP8 (no padding came through).
    let got = received(&mut r, &mut sink, 0);
    let tags: Vec<u8> = got.iter().map(|p| p.0).collect();
    assert_eq!(tags, [2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1], "{got:?}");
    for w in got.windows(2) {
        assert_eq!(w[1].1, w[0].1.wrapping_add(1), "sequence continuous");
        assert_eq!(w[1].2, (w[0].2 + 1) & 0x7fff, "PictureID continuous");
    }
    let padding: usize = pads.iter().map(|p| p.2).sum();
    assert_eq!(
        r.router.stats().dropped(DropReason::PaddingOnly),
        padding as u64
    );
}

/// A NACK answered after a switch down to the track's first layer: the
/// RTX copy carries the PictureID the forwarded packet carried (rewritten
/// for every layer of a layered track; resends of the first layer once
/// went out with its raw PictureID, which broke the frames they repaired).
#[test]
fn a_resend_on_the_first_layer_carries_the_rewritten_picture_id() {
    let mut r = room(0);
    let (mut peer, m, l) = Peer::new(30);
    let mut cmd = endpoint(
        100,
        Role::Subscribe,
        m,
        l,
        vec![],
        Some(addr(6000)),
        Subscription::All,
    );
    if let Command::AddEndpoint(cfg) = &mut cmd {
        cfg.rtx_payload_types.video = Some(97);
    }
    let info = consumers(r.router.handle_command(r.t0, cmd).unwrap())[0];
    let rtx_ssrc = info.rtx_ssrc.expect("an RTX stream");
    r.subs.push((Peer::new(31).0, info));
    let mut sink = Sink::new();
    run(&mut r, &mut sink, 0..6, |l, f| f == 0 && l == 2);
    let at = r.t0 + Duration::from_millis(300);
    r.router
        .handle_command(
            at,
            Command::SetMaxLayer {
                endpoint: EndpointId(100),
                slot: 0,
                max_layer: Some(0),
            },
        )
        .unwrap();
    run(&mut r, &mut sink, 6..14, |l, f| l == 0 && f == 9);
    // The last packet forwarded, from the first layer.
    let mut last = None;
    for (d, dst) in &sink.sent {
        if *dst != addr(6000) || wire::classify(d) != DatagramKind::Rtp {
            continue;
        }
        let plain = peer.open(d);
        let p = RtpPacket::new_checked(&plain).unwrap();
        let desc = Vp8Descriptor::parse(p.payload()).unwrap();
        last = Some((
            p.sequence_number(),
            desc.picture_id.unwrap().0,
            *p.payload().last().unwrap(),
        ));
    }
    let (seq, pid, tag) = last.expect("media forwarded");
    assert_eq!(tag, 0xa0, "on the first layer");
    sink.sent.clear();
    let mut plain = [0u8; 200];
    let n = crate::wire::rtcp::write_nack(&mut plain, 0x5eed, info.ssrc, &[seq]).unwrap();
    let len = peer.tx.protect_rtcp(&mut plain, n).unwrap();
    let at = r.t0 + Duration::from_millis(700);
    r.router
        .handle_input(at, addr(6000), &mut plain[..len].to_vec(), &mut sink);
    let rtx: Vec<Vec<u8>> = sink
        .sent
        .iter()
        .filter(|(d, dst)| *dst == addr(6000) && wire::classify(d) == DatagramKind::Rtp)
        .map(|(d, _)| peer.open(d))
        .collect();
    assert_eq!(rtx.len(), 1, "one resend");
    let p = RtpPacket::new_checked(&rtx[0]).unwrap();
    assert_eq!(p.ssrc(), rtx_ssrc);
    let payload = p.payload();
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), seq, "the OSN");
    let desc = Vp8Descriptor::parse(&payload[2..]).unwrap();
    assert_eq!(desc.picture_id.unwrap().0, pid, "the forwarded PictureID");
}
