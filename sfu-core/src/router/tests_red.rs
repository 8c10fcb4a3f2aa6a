//! Redundant audio (RED, RFC 2198) through the router: passed on to a
//! subscriber that negotiated RED, cut to its primary block for one that
//! did not, plain Opus of a RED publisher untouched, malformed RED counted.

use super::tests::{Peer, Sink, addr, consumers, endpoint};
use super::*;
use crate::wire::rtp::RtpPacket;

const OPUS: u8 = 111;
const RED: u8 = 63;
const SUB_RED: u8 = 100;
const AUDIO_SSRC: u32 = 222;

/// One redundant block (2 bytes, 960 ticks old) and a 3-byte primary.
const RED_PAYLOAD: [u8; 10] = [
    0x80 | OPUS,
    0x0f,
    0x00,
    0x02,
    OPUS,
    0xa1,
    0xa2,
    0xb1,
    0xb2,
    0xb3,
];

struct RedRoom {
    router: Router,
    now: Instant,
    publisher: Peer,
    /// Subscribers with RED (6000) and without (6001).
    subs: [(Peer, ConsumerInfo); 2],
}

fn with_red(cmd: Command, red: Option<u8>) -> Command {
    let Command::AddEndpoint(mut cfg) = cmd else {
        unreachable!("endpoint() builds AddEndpoint");
    };
    cfg.red_payload_type = red;
    Command::AddEndpoint(cfg)
}

fn red_room() -> RedRoom {
    red_room_numbered(None)
}

/// As [`red_room`], the subscribers' copies numbered with transport-wide
/// sequence number extension `twcc` (their headers grow).
fn red_room_numbered(twcc: Option<u8>) -> RedRoom {
    let now = Instant::now();
    let mut router = Router::new(RouterConfig::default());
    router
        .handle_command(now, Command::CreateRoom(RoomId(1)))
        .unwrap();
    let (publisher, pm, pl) = Peer::new(1);
    let track = TrackConfig {
        kind: MediaKind::Audio,
        ssrc: AUDIO_SSRC,
        payload_type: OPUS,
        rtx: None,
        codec: crate::codec::Codec::Opus,
        layer_of: None,
        red_payload_type: Some(RED),
        source: TrackSource::Camera,
    };
    let publish = endpoint(
        1,
        Role::Publish,
        pm,
        pl,
        vec![track],
        None,
        Subscription::All,
    );
    router.handle_command(now, publish).unwrap();
    let mut sub = |i: u16, red: Option<u8>| {
        let (peer, m, l) = Peer::new(10 + i as u8);
        let cmd = endpoint(
            100 + u64::from(i),
            Role::Subscribe,
            m,
            l,
            vec![],
            Some(addr(6000 + i)),
            Subscription::All,
        );
        let Command::AddEndpoint(mut cfg) = with_red(cmd, red) else {
            unreachable!("with_red keeps AddEndpoint");
        };
        cfg.twcc_send_extension = twcc;
        let c = consumers(
            router
                .handle_command(now, Command::AddEndpoint(cfg))
                .unwrap(),
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].producer_ssrc, Some(AUDIO_SSRC));
        assert_eq!(c[0].payload_type, OPUS);
        (peer, c[0])
    };
    let subs = [sub(0, Some(SUB_RED)), sub(1, None)];
    RedRoom {
        router,
        now,
        publisher,
        subs,
    }
}

impl RedRoom {
    /// Sends one packet from the publisher; the plaintexts each subscriber
    /// got (RED subscriber first).
    fn send(&mut self, pt: u8, payload: &[u8]) -> [Vec<Vec<u8>>; 2] {
        let mut sink = Sink::new();
        let mut pkt = self.publisher.rtp(AUDIO_SSRC, pt, payload);
        self.router
            .handle_input(self.now, addr(5000), &mut pkt, &mut sink);
        let mut got = [Vec::new(), Vec::new()];
        for (k, (peer, info)) in self.subs.iter_mut().enumerate() {
            for (srtp, _) in sink
                .sent
                .iter()
                .filter(|(_, d)| *d == addr(6000 + k as u16))
            {
                let plain = peer.open(srtp);
                let p = RtpPacket::new_checked(&plain).expect("valid RTP");
                assert_eq!(p.ssrc(), info.ssrc);
                got[k].push(plain);
            }
        }
        got
    }
}

fn view(plain: &[u8]) -> RtpPacket<'_> {
    RtpPacket::new_checked(plain).expect("valid RTP")
}

#[test]
fn red_is_passed_on_or_unwrapped_per_subscriber() {
    let mut r = red_room();
    let [red, plain] = r.send(RED, &RED_PAYLOAD);
    // The RED subscriber: the payload as sent, under its RED number.
    assert_eq!(red.len(), 1);
    assert_eq!(view(&red[0]).payload_type(), SUB_RED);
    assert_eq!(view(&red[0]).payload(), RED_PAYLOAD);
    // The other: the primary block only, as Opus.
    assert_eq!(plain.len(), 1);
    assert_eq!(view(&plain[0]).payload_type(), OPUS);
    assert_eq!(view(&plain[0]).payload(), [0xb1, 0xb2, 0xb3]);
    assert!(!view(&plain[0]).has_padding());
    assert_eq!(r.router.stats().dropped(DropReason::RedMalformed), 0);
}

#[test]
fn red_in_numbered_copies() {
    // The copy's header has a transport-wide number the original lacks:
    // the payload moves, and RED is rewritten where it now lies.
    let mut r = red_room_numbered(Some(5));
    let [red, plain] = r.send(RED, &RED_PAYLOAD);
    for got in [&red, &plain] {
        assert_eq!(got.len(), 1);
        assert!(view(&got[0]).extension(5).is_some(), "numbered");
    }
    assert_eq!(view(&red[0]).payload_type(), SUB_RED);
    assert_eq!(view(&red[0]).payload(), RED_PAYLOAD);
    assert_eq!(view(&plain[0]).payload_type(), OPUS);
    assert_eq!(view(&plain[0]).payload(), [0xb1, 0xb2, 0xb3]);
}

#[test]
fn plain_opus_of_a_red_publisher_passes_as_plain() {
    let mut r = red_room();
    // Chrome switched RED off: Opus with the track's own number.
    let opus = [0xc1, 0xc2, 0xc3, 0xc4];
    let [red, plain] = r.send(OPUS, &opus);
    for got in [&red, &plain] {
        assert_eq!(got.len(), 1);
        assert_eq!(view(&got[0]).payload_type(), OPUS);
        assert_eq!(view(&got[0]).payload(), opus);
    }
    // Numbering stays continuous across RED and plain packets.
    let [red2, plain2] = r.send(RED, &RED_PAYLOAD);
    for (a, b) in [(&red, &red2), (&plain, &plain2)] {
        let (a, b) = (view(&a[0]), view(&b[0]));
        assert_eq!(b.sequence_number(), a.sequence_number().wrapping_add(1));
    }
}

#[test]
fn malformed_red_is_counted_and_not_forwarded() {
    let mut r = red_room();
    let hostile: [&[u8]; 3] = [
        // Truncated redundant header.
        &[0x80 | OPUS, 0x00],
        // Block length past the end.
        &[0x80 | OPUS, 0, 0x03, 0xff, OPUS, 1, 2],
        // No primary header.
        &[0x80 | OPUS, 0, 0, 0],
    ];
    for (i, payload) in hostile.iter().enumerate() {
        let [red, plain] = r.send(RED, payload);
        assert!(red.is_empty() && plain.is_empty(), "{payload:02x?}");
        assert_eq!(
            r.router.stats().dropped(DropReason::RedMalformed),
            2 * (i as u64 + 1),
            "one drop per consumer"
        );
    }
    // An empty payload is nothing to forward, RED or not: dropped once, as
    // padding only.
    let [red, plain] = r.send(RED, &[]);
    assert!(red.is_empty() && plain.is_empty());
    assert_eq!(r.router.stats().dropped(DropReason::RedMalformed), 6);
    assert_eq!(r.router.stats().dropped(DropReason::PaddingOnly), 1);
    // A primary block that is not Opus is not unwrapped into Opus; the RED
    // subscriber still gets it as sent.
    let cn = [0x80 | OPUS, 0, 0, 1, 13, 0xa1, 0xb1];
    let [red, plain] = r.send(RED, &cn);
    assert_eq!(red.len(), 1);
    assert_eq!(view(&red[0]).payload(), cn);
    assert!(plain.is_empty());
    assert_eq!(r.router.stats().dropped(DropReason::RedMalformed), 7);
    // Well-formed RED flows again.
    let [red, plain] = r.send(RED, &RED_PAYLOAD);
    assert_eq!((red.len(), plain.len()), (1, 1));
}

#[test]
fn red_payload_types_are_checked() {
    let now = Instant::now();
    let mut router = Router::new(RouterConfig::default());
    router
        .handle_command(now, Command::CreateRoom(RoomId(1)))
        .unwrap();
    let track = |kind, red| TrackConfig {
        kind,
        ssrc: 5,
        payload_type: OPUS,
        rtx: None,
        codec: crate::codec::Codec::Opus,
        layer_of: None,
        red_payload_type: red,
        source: TrackSource::Camera,
    };
    for (t, sub_red) in [
        (track(MediaKind::Video, Some(RED)), None),
        (track(MediaKind::Audio, Some(OPUS)), None),
        (track(MediaKind::Audio, Some(128)), None),
        (track(MediaKind::Audio, None), Some(200)),
    ] {
        let (_, m, l) = Peer::new(1);
        let cmd = endpoint(1, Role::Both, m, l, vec![t], None, Subscription::All);
        assert!(
            matches!(
                router.handle_command(now, with_red(cmd, sub_red)),
                Err(RouterError::Invalid(_))
            ),
            "{t:?} {sub_red:?}"
        );
    }
    assert_eq!(router.endpoints(), 0);
}
