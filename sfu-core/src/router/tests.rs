use super::*;
use crate::srtp::SrtpConfig;
use crate::srtp::SrtpContext;
use crate::wire::rtcp::{self, RtcpIter, RtcpPacket};
use crate::wire::rtp::{RtpHeader, RtpPacket, write_header};

pub(super) const PROFILE: Profile = Profile::AeadAes128Gcm;

/// Collects egress datagrams; `limit` buffers before it reports exhaustion.
pub(super) struct Sink {
    buf: [u8; 1500],
    pub(super) sent: Vec<(Vec<u8>, SocketAddr)>,
    limit: usize,
}

impl Sink {
    pub(super) fn new() -> Self {
        Self {
            buf: [0xa5; 1500],
            sent: Vec::new(),
            limit: usize::MAX,
        }
    }
}

impl Transmit for Sink {
    fn buffer(&mut self) -> Option<&mut [u8]> {
        if self.sent.len() >= self.limit {
            return None;
        }
        self.buf.fill(0xa5);
        Some(&mut self.buf)
    }
    fn send(&mut self, len: usize, dst: SocketAddr) {
        self.sent.push((self.buf[..len].to_vec(), dst));
    }
}

impl Sink {
    pub(super) fn count_to(&self, dst: SocketAddr) -> usize {
        self.sent.iter().filter(|(_, d)| *d == dst).count()
    }
}

pub(super) fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub(super) fn master(seed: u8) -> Vec<u8> {
    (0..28)
        .map(|i| seed.wrapping_mul(31).wrapping_add(i))
        .collect()
}

/// A peer: the SRTP contexts an endpoint holds on its side.
pub(super) struct Peer {
    pub(super) tx: SrtpContext,
    pub(super) rx: SrtpContext,
    pub(super) seq: u16,
}

impl Peer {
    pub(super) fn new(seed: u8) -> (Self, Vec<u8>, Vec<u8>) {
        let ours = master(seed);
        let theirs = master(seed.wrapping_add(100));
        let ctx = |m: &[u8]| {
            SrtpContext::new(PROFILE, &m[..16], &m[16..], SrtpConfig::default()).unwrap()
        };
        (
            Self {
                tx: ctx(&ours),
                rx: ctx(&theirs),
                seq: 1000,
            },
            ours,
            theirs,
        )
    }

    pub(super) fn rtp(&mut self, ssrc: u32, pt: u8, payload: &[u8]) -> Vec<u8> {
        let mut buf = [0u8; 1500];
        let h = RtpHeader {
            payload_type: pt,
            sequence_number: self.seq,
            timestamp: u32::from(self.seq) * 3000,
            ssrc,
            marker: false,
        };
        self.seq = self.seq.wrapping_add(1);
        let n = write_header(&mut buf, &h, &[]).unwrap();
        buf[n..n + payload.len()].copy_from_slice(payload);
        let n = self.tx.protect_rtp(&mut buf, n + payload.len()).unwrap();
        buf[..n].to_vec()
    }

    pub(super) fn open(&mut self, srtp: &[u8]) -> Vec<u8> {
        let mut b = srtp.to_vec();
        let n = self.rx.unprotect_rtp(&mut b).unwrap();
        b.truncate(n);
        b
    }
}

pub(super) fn endpoint(
    id: u64,
    role: Role,
    remote_master: Vec<u8>,
    local_master: Vec<u8>,
    tracks: Vec<TrackConfig>,
    remote: Option<SocketAddr>,
    subscription: Subscription,
) -> Command {
    Command::AddEndpoint(Box::new(EndpointConfig {
        id: EndpointId(id),
        room: RoomId(1),
        role,
        profile: PROFILE,
        remote_master,
        local_master,
        tracks,
        remote,
        subscription,
        rtcp_ssrc: None,
        red_payload_type: None,
        rtx_payload_types: Default::default(),
        twcc_send_extension: None,
        participant: None,
        audio_level_extension: None,
    }))
}

pub(super) fn video(ssrc: u32) -> Vec<TrackConfig> {
    vec![TrackConfig {
        kind: MediaKind::Video,
        ssrc,
        payload_type: 96,
        rtx: None,
        codec: crate::codec::Codec::Vp8,
        layer_of: None,
        red_payload_type: None,
        source: TrackSource::Camera,
    }]
}

pub(super) fn consumers(o: Outcome) -> Vec<ConsumerInfo> {
    match o {
        Outcome::Consumers(c) => c,
        other => panic!("expected consumers, got {other:?}"),
    }
}

pub(super) struct Room1 {
    pub(super) router: Router,
    pub(super) now: Instant,
    pub(super) publisher: Peer,
    pub(super) subs: Vec<(Peer, ConsumerInfo)>,
}

/// One publisher (comedia, SSRC 111) and `n` subscribers with known addresses.
pub(super) fn room_with(n: u16) -> Room1 {
    let now = Instant::now();
    let mut router = Router::new(RouterConfig::default());
    router
        .handle_command(now, Command::CreateRoom(RoomId(1)))
        .unwrap();
    let (publisher, pm, pl) = Peer::new(1);
    router
        .handle_command(
            now,
            endpoint(
                1,
                Role::Publish,
                pm,
                pl,
                video(111),
                None,
                Subscription::All,
            ),
        )
        .unwrap();
    let mut subs = Vec::new();
    for i in 0..n {
        let (peer, m, l) = Peer::new(10 + i as u8);
        let c = consumers(
            router
                .handle_command(
                    now,
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
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].producer_ssrc, Some(111));
        subs.push((peer, c[0]));
    }
    Room1 {
        router,
        now,
        publisher,
        subs,
    }
}

#[test]
fn fans_out_decrypted_once_and_reencrypted_per_subscriber() {
    let mut r = room_with(3);
    let mut sink = Sink::new();
    for i in 0..50u8 {
        let mut pkt = r.publisher.rtp(111, 96, &[i; 900]);
        r.router
            .handle_input(r.now, addr(5000), &mut pkt, &mut sink);
    }
    // 150 copies, and one PLI to the publisher: new subscribers need a keyframe.
    assert_eq!(sink.sent.len(), 151);
    assert_eq!(sink.count_to(addr(5000)), 1);
    for (k, (peer, info)) in r.subs.iter_mut().enumerate() {
        let mine: Vec<_> = sink
            .sent
            .iter()
            .filter(|(_, d)| *d == addr(6000 + k as u16))
            .collect();
        assert_eq!(mine.len(), 50);
        let mut last_seq = None;
        for (i, (srtp, _)) in mine.iter().enumerate() {
            let plain = peer.open(srtp);
            let p = RtpPacket::new_checked(&plain).unwrap();
            assert_eq!(p.ssrc(), info.ssrc);
            assert_eq!(p.payload(), &[i as u8; 900][..]);
            if let Some(l) = last_seq {
                assert_eq!(p.sequence_number(), u16::wrapping_add(l, 1));
            }
            last_seq = Some(p.sequence_number());
        }
    }
    let s = r.router.stats();
    assert_eq!(
        (
            s.get(Counter::RtpIn),
            s.get(Counter::TxPackets),
            s.get(Counter::PliSent)
        ),
        (50, 151, 1)
    );
    assert_eq!(s.drops.iter().sum::<u64>(), 0);
    // The room's traffic: 50 in, 150 media copies out (the PLI is not
    // media), bytes as sent.
    let copy_bytes: u64 = sink
        .sent
        .iter()
        .filter(|(_, d)| *d != addr(5000))
        .map(|(p, _)| p.len() as u64)
        .sum();
    let Ok(Outcome::Traffic(rooms)) = r.router.handle_command(r.now, Command::Traffic) else {
        panic!("no traffic");
    };
    assert_eq!(rooms.len(), 1);
    let (_, endpoints, t) = rooms[0];
    assert_eq!(endpoints, 4);
    assert_eq!(
        (t.rx_packets, t.tx_packets, t.tx_bytes),
        (50, 150, copy_bytes)
    );
    assert!(t.rx_bytes >= 50 * 900);
}

#[test]
fn comedia_learns_only_from_an_authentic_packet() {
    let mut r = room_with(1);
    let mut sink = Sink::new();
    // A forged packet (wrong key) from an attacker's address.
    let (mut attacker, _, _) = Peer::new(99);
    let mut forged = attacker.rtp(111, 96, b"evil");
    r.router
        .handle_input(r.now, addr(6666), &mut forged, &mut sink);
    assert_eq!(r.router.stats().dropped(DropReason::SrtpAuthFailed), 1);
    // The real publisher is learnt from its first authentic packet...
    let mut pkt = r.publisher.rtp(111, 96, b"ok");
    r.router
        .handle_input(r.now, addr(5000), &mut pkt, &mut sink);
    assert_eq!(sink.count_to(addr(6000)), 1);
    // ...after which even an authentic copy from elsewhere is refused.
    let mut pkt = r.publisher.rtp(111, 96, b"moved");
    r.router
        .handle_input(r.now, addr(6666), &mut pkt, &mut sink);
    assert_eq!(r.router.stats().dropped(DropReason::AddressMismatch), 1);
    assert_eq!(sink.count_to(addr(6000)), 1);
}

#[test]
fn replayed_and_unknown_and_other_protocols_are_counted() {
    let mut r = room_with(1);
    let mut sink = Sink::new();
    let pkt = r.publisher.rtp(111, 96, b"x");
    r.router
        .handle_input(r.now, addr(5000), &mut pkt.clone(), &mut sink);
    r.router
        .handle_input(r.now, addr(5000), &mut pkt.clone(), &mut sink);
    let mut unknown = r.publisher.rtp(222, 96, b"x");
    r.router
        .handle_input(r.now, addr(5000), &mut unknown, &mut sink);
    r.router
        .handle_input(r.now, addr(5000), &mut [0, 1, 0, 0], &mut sink);
    r.router
        .handle_input(r.now, addr(5000), &mut [22, 254, 253], &mut sink);
    r.router.handle_input(r.now, addr(5000), &mut [], &mut sink);
    r.router
        .handle_input(r.now, addr(5000), &mut [0x80, 96, 0], &mut sink);
    let s = r.router.stats();
    assert_eq!(s.dropped(DropReason::SrtpReplayed), 1);
    assert_eq!(s.dropped(DropReason::UnknownSource), 1);
    // [0, 1, 0, 0] looks like STUN but is too short to be a message.
    assert_eq!(s.dropped(DropReason::DtlsUnhandled), 1);
    assert_eq!(s.dropped(DropReason::UnknownProtocol), 1);
    assert_eq!(s.dropped(DropReason::Malformed), 2);
    assert_eq!(s.get(Counter::RxPackets), 7);
    assert_eq!(sink.count_to(addr(6000)), 1);
}

#[test]
fn pool_exhaustion_is_counted_per_copy() {
    let mut r = room_with(3);
    let mut sink = Sink::new();
    sink.limit = 2;
    let mut pkt = r.publisher.rtp(111, 96, b"x");
    r.router
        .handle_input(r.now, addr(5000), &mut pkt, &mut sink);
    assert_eq!(sink.sent.len(), 2);
    // The third copy, and the keyframe request after the fan-out, found no buffer.
    assert_eq!(r.router.stats().dropped(DropReason::PoolExhausted), 2);
}

#[test]
fn subscriber_without_address_is_unreachable_until_comedia_via_rtcp() {
    let now = Instant::now();
    let mut router = Router::new(RouterConfig::default());
    router
        .handle_command(now, Command::CreateRoom(RoomId(1)))
        .unwrap();
    let (mut publisher, pm, pl) = Peer::new(1);
    router
        .handle_command(
            now,
            endpoint(
                1,
                Role::Publish,
                pm,
                pl,
                video(111),
                None,
                Subscription::All,
            ),
        )
        .unwrap();
    let (mut sub, sm, sl) = Peer::new(2);
    let Command::AddEndpoint(mut cfg) =
        endpoint(2, Role::Subscribe, sm, sl, vec![], None, Subscription::All)
    else {
        unreachable!()
    };
    cfg.rtcp_ssrc = Some(0xabc);
    let c = consumers(
        router
            .handle_command(now, Command::AddEndpoint(cfg))
            .unwrap(),
    );
    let mut sink = Sink::new();
    let mut pkt = publisher.rtp(111, 96, b"a");
    router.handle_input(now, addr(5000), &mut pkt, &mut sink);
    assert_eq!(router.stats().dropped(DropReason::SubscriberUnreachable), 1);

    // The subscriber's PLI (SRTCP from its rtcp_ssrc) teaches its address and
    // asks the publisher for a keyframe.
    let mut buf = [0u8; 1500];
    let n = rtcp::write_pli(&mut buf, 0xabc, c[0].ssrc).unwrap();
    let n = sub.tx.protect_rtcp(&mut buf, n).unwrap();
    router.handle_input(now, addr(7000), &mut buf[..n], &mut sink);
    assert_eq!(router.stats().get(Counter::RtcpIn), 1);

    let later = now + KEYFRAME_REQUEST_INTERVAL;
    let mut pkt = publisher.rtp(111, 96, b"b");
    router.handle_input(later, addr(5000), &mut pkt, &mut sink);
    let to_sub: Vec<_> = sink.sent.iter().filter(|(_, d)| *d == addr(7000)).collect();
    assert_eq!(to_sub.len(), 1);
    assert_eq!(sub.open(&to_sub[0].0)[12..], *b"b");
    // And a PLI went back to the publisher, protected with its key.
    let to_pub: Vec<_> = sink.sent.iter().filter(|(_, d)| *d == addr(5000)).collect();
    assert_eq!(
        to_pub.len(),
        2,
        "one PLI when the consumer attached, one for the subscriber's PLI"
    );
    let mut pli = to_pub[1].0.clone();
    let n = publisher.rx.unprotect_rtcp(&mut pli).unwrap();
    match RtcpIter::new(&pli[..n]).next() {
        Some(Ok(RtcpPacket::Pli(p))) => assert_eq!(p.media_ssrc(), 111),
        other => panic!("expected a PLI, got {other:?}"),
    }
    assert_eq!(router.stats().get(Counter::PliSent), 2);
}

#[test]
fn explicit_slot_switches_source_with_continuous_numbering() {
    let now = Instant::now();
    let mut router = Router::new(RouterConfig::default());
    router
        .handle_command(now, Command::CreateRoom(RoomId(1)))
        .unwrap();
    let (mut a, am, al) = Peer::new(1);
    let (mut b, bm, bl) = Peer::new(2);
    b.seq = 40_000; // unrelated numbering
    router
        .handle_command(
            now,
            endpoint(
                1,
                Role::Publish,
                am,
                al,
                video(111),
                None,
                Subscription::All,
            ),
        )
        .unwrap();
    router
        .handle_command(
            now,
            endpoint(
                2,
                Role::Publish,
                bm,
                bl,
                video(222),
                None,
                Subscription::All,
            ),
        )
        .unwrap();
    let (mut sub, sm, sl) = Peer::new(3);
    let explicit = |v| Subscription::Explicit {
        video: vec![v],
        audio: vec![],
    };
    let c = consumers(
        router
            .handle_command(
                now,
                endpoint(
                    3,
                    Role::Subscribe,
                    sm,
                    sl,
                    vec![],
                    Some(addr(7000)),
                    explicit(111),
                ),
            )
            .unwrap(),
    );
    assert_eq!((c.len(), c[0].producer_ssrc), (1, Some(111)));
    let mut sink = Sink::new();
    for _ in 0..3 {
        router.handle_input(now, addr(5001), &mut a.rtp(111, 96, b"A"), &mut sink);
        router.handle_input(now, addr(5002), &mut b.rtp(222, 96, b"B"), &mut sink);
    }
    let c2 = consumers(
        router
            .handle_command(now, Command::SetSubscription(EndpointId(3), explicit(222)))
            .unwrap(),
    );
    assert_eq!(c2[0].ssrc, c[0].ssrc, "the slot keeps its SSRC");
    assert_eq!(c2[0].producer_ssrc, Some(222));
    let t = now + Duration::from_millis(100);
    for _ in 0..3 {
        router.handle_input(t, addr(5001), &mut a.rtp(111, 96, b"A"), &mut sink);
        router.handle_input(t, addr(5002), &mut b.rtp(222, 96, b"B"), &mut sink);
    }
    let got: Vec<(u16, u32, u8)> = sink
        .sent
        .iter()
        .filter(|(_, d)| *d == addr(7000))
        .map(|(s, _)| {
            let p = sub.open(s);
            let r = RtpPacket::new_checked(&p).unwrap();
            assert_eq!(r.ssrc(), c[0].ssrc);
            (r.sequence_number(), r.timestamp(), r.payload()[0])
        })
        .collect();
    assert_eq!(got.len(), 6);
    assert_eq!(
        got.iter().map(|g| g.2).collect::<Vec<_>>(),
        b"AAABBB".to_vec()
    );
    for w in got.windows(2) {
        assert_eq!(
            w[1].0,
            w[0].0.wrapping_add(1),
            "continuous sequence: {got:?}"
        );
        assert!(
            w[1].1.wrapping_sub(w[0].1) as i32 > 0,
            "timestamps advance: {got:?}"
        );
    }
    // The switch asked B's publisher for a keyframe.
    let to_b = sink.sent.iter().filter(|(_, d)| *d == addr(5002)).count();
    assert_eq!(to_b, 1);
}

#[test]
fn all_subscription_reuses_a_freed_slot_for_the_next_producer() {
    let mut r = room_with(1);
    let mut sink = Sink::new();
    r.router.handle_input(
        r.now,
        addr(5000),
        &mut r.publisher.rtp(111, 96, b"1"),
        &mut sink,
    );
    r.router
        .handle_command(r.now, Command::RemoveEndpoint(EndpointId(1)))
        .unwrap();
    let (mut p2, m, l) = Peer::new(7);
    r.router
        .handle_command(
            r.now,
            endpoint(7, Role::Publish, m, l, video(333), None, Subscription::All),
        )
        .unwrap();
    r.router
        .handle_input(r.now, addr(5007), &mut p2.rtp(333, 96, b"2"), &mut sink);
    let (peer, info) = &mut r.subs[0];
    let seqs: Vec<u16> = sink
        .sent
        .iter()
        .filter(|(_, d)| *d == addr(6000))
        .map(|(s, _)| {
            let p = peer.open(s);
            let r = RtpPacket::new_checked(&p).unwrap();
            assert_eq!(r.ssrc(), info.ssrc);
            r.sequence_number()
        })
        .collect();
    assert_eq!(seqs.len(), 2);
    assert_eq!(seqs[1], seqs[0].wrapping_add(1));
}

#[test]
fn refused_commands_change_nothing() {
    let mut r = room_with(1);
    let now = r.now;
    let before = (r.router.rooms(), r.router.endpoints());
    let (_, m, l) = Peer::new(50);
    let cases: Vec<(Command, RouterError)> = vec![
        (Command::CreateRoom(RoomId(1)), RouterError::RoomExists),
        (Command::DeleteRoom(RoomId(9)), RouterError::UnknownRoom),
        (
            Command::RemoveEndpoint(EndpointId(9)),
            RouterError::UnknownEndpoint,
        ),
        (
            endpoint(
                1,
                Role::Publish,
                m.clone(),
                l.clone(),
                video(5),
                None,
                Subscription::All,
            ),
            RouterError::EndpointExists,
        ),
        (
            endpoint(
                50,
                Role::Publish,
                m.clone(),
                l.clone(),
                video(111),
                None,
                Subscription::All,
            ),
            RouterError::DuplicateSsrc(111),
        ),
        (
            endpoint(
                50,
                Role::Subscribe,
                m.clone(),
                l.clone(),
                video(5),
                None,
                Subscription::All,
            ),
            RouterError::Invalid("a subscribe-only endpoint publishes no tracks"),
        ),
        (
            endpoint(
                50,
                Role::Both,
                m[..20].to_vec(),
                l.clone(),
                video(5),
                None,
                Subscription::All,
            ),
            RouterError::BadKey(KeyLengthError { profile: PROFILE }),
        ),
        (
            endpoint(
                50,
                Role::Subscribe,
                m.clone(),
                l.clone(),
                vec![],
                Some(addr(6000)),
                Subscription::All,
            ),
            RouterError::Invalid("another endpoint has this remote address"),
        ),
        (
            Command::SetSubscription(EndpointId(1), Subscription::All),
            RouterError::Invalid("a publish-only endpoint has no subscription"),
        ),
    ];
    for (cmd, want) in cases {
        let shown = format!("{cmd:?}");
        assert_eq!(r.router.handle_command(now, cmd), Err(want), "{shown}");
        assert_eq!((r.router.rooms(), r.router.endpoints()), before, "{shown}");
    }
    // Still forwarding as before.
    let mut sink = Sink::new();
    r.router.handle_input(
        now,
        addr(5000),
        &mut r.publisher.rtp(111, 96, b"x"),
        &mut sink,
    );
    assert_eq!(sink.count_to(addr(6000)), 1);
}

#[test]
fn deleting_a_room_removes_its_endpoints_and_producers() {
    let mut r = room_with(2);
    r.router
        .handle_command(r.now, Command::DeleteRoom(RoomId(1)))
        .unwrap();
    assert_eq!((r.router.rooms(), r.router.endpoints()), (0, 0));
    let mut sink = Sink::new();
    r.router.handle_input(
        r.now,
        addr(5000),
        &mut r.publisher.rtp(111, 96, b"x"),
        &mut sink,
    );
    assert_eq!(r.router.stats().dropped(DropReason::UnknownSource), 1);
    // Ids and SSRCs are free again.
    r.router
        .handle_command(r.now, Command::CreateRoom(RoomId(1)))
        .unwrap();
    let (_, m, l) = Peer::new(1);
    r.router
        .handle_command(
            r.now,
            endpoint(1, Role::Publish, m, l, video(111), None, Subscription::All),
        )
        .unwrap();
}
