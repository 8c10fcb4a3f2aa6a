//! Hostile input through the router with valid keys: an authenticated peer
//! is as much an attacker as anyone on the media port. Every case here is
//! counted and dropped (or forwarded, if valid), never a panic, and the
//! worker keeps forwarding for every room afterwards.

use super::tests::{PROFILE, Peer, Room1, Sink, addr, consumers, endpoint, room_with, video};
use super::*;
use crate::srtp::SrtpContext;

use crate::wire::rtp::RtpPacket;

/// A plaintext RTP packet: `csrcs` CSRCs, an optional extension block
/// (profile, body padded to 32-bit words), a payload, and optional padding
/// (`n` bytes whose last one is `count`).
fn rtp_bytes(
    ssrc: u32,
    seq: u16,
    csrcs: u8,
    ext: Option<(u16, &[u8])>,
    payload: &[u8],
    padding: Option<(usize, u8)>,
) -> Vec<u8> {
    let mut b = vec![0x80 | (csrcs & 0x0f), 96];
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    b.extend_from_slice(&ssrc.to_be_bytes());
    for i in 0..u32::from(csrcs) {
        b.extend_from_slice(&(0xc000 + i).to_be_bytes());
    }
    if let Some((profile, body)) = ext {
        b[0] |= 0x10;
        let words = body.len().div_ceil(4);
        b.extend_from_slice(&profile.to_be_bytes());
        b.extend_from_slice(&(words as u16).to_be_bytes());
        b.extend_from_slice(body);
        b.resize(b.len() + words * 4 - body.len(), 0);
    }
    b.extend_from_slice(payload);
    if let Some((n, count)) = padding {
        b[0] |= 0x20;
        b.resize(b.len() + n.saturating_sub(1), 0);
        b.push(count);
    }
    b
}

/// Protects `plain` with `ctx` as the publisher would.
fn protect(ctx: &mut SrtpContext, plain: &[u8]) -> Vec<u8> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + 64, 0xa5);
    let n = ctx.protect_rtp(&mut buf, plain.len()).expect("protectable");
    buf.truncate(n);
    buf
}

fn protect_rtcp(ctx: &mut SrtpContext, plain: &[u8]) -> Vec<u8> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + 64, 0xa5);
    let n = ctx
        .protect_rtcp(&mut buf, plain.len())
        .expect("protectable");
    buf.truncate(n);
    buf
}

/// Moves an `AddEndpoint` command into another room.
fn in_room(cmd: Command, room: u64) -> Command {
    match cmd {
        Command::AddEndpoint(mut cfg) => {
            cfg.room = RoomId(room);
            Command::AddEndpoint(cfg)
        }
        other => other,
    }
}

/// Room 1 as [`room_with`], plus a bystander room 2 on the same router with
/// publisher SSRC 222 (comedia from port 5100) and one subscriber (7100).
fn with_bystander(n: u16) -> (Room1, Peer, Peer) {
    let mut r = room_with(n);
    r.router
        .handle_command(r.now, Command::CreateRoom(RoomId(2)))
        .unwrap();
    let (publisher, pm, pl) = Peer::new(50);
    let cmd = endpoint(
        50,
        Role::Publish,
        pm,
        pl,
        video(222),
        None,
        Subscription::All,
    );
    r.router.handle_command(r.now, in_room(cmd, 2)).unwrap();
    let (sub, sm, sl) = Peer::new(51);
    let cmd = endpoint(
        51,
        Role::Subscribe,
        sm,
        sl,
        vec![],
        Some(addr(7100)),
        Subscription::All,
    );
    r.router.handle_command(r.now, in_room(cmd, 2)).unwrap();
    (r, publisher, sub)
}

/// A good packet of each room still reaches every subscriber of its room.
fn assert_still_forwarding(r: &mut Room1, bystander: &mut Peer, label: &str) {
    let mut sink = Sink::new();
    let mut pkt = r.publisher.rtp(111, 96, b"still here");
    r.router
        .handle_input(r.now, addr(5000), &mut pkt, &mut sink);
    let mut pkt = bystander.rtp(222, 96, b"bystander");
    r.router
        .handle_input(r.now, addr(5100), &mut pkt, &mut sink);
    for (k, (peer, _)) in r.subs.iter_mut().enumerate() {
        let got: Vec<_> = sink
            .sent
            .iter()
            .filter(|(_, d)| *d == addr(6000 + k as u16))
            .map(|(s, _)| peer.open(s))
            .collect();
        assert_eq!(got.len(), 1, "{label}: subscriber {k} got {}", got.len());
        let p = RtpPacket::new_checked(&got[0]).unwrap();
        assert_eq!(p.payload(), b"still here", "{label}");
    }
    assert_eq!(sink.count_to(addr(7100)), 1, "{label}: bystander room");
}

#[test]
fn authentic_malformed_rtp_is_dropped_and_every_room_keeps_forwarding() {
    let (mut r, mut bystander, _) = with_bystander(2);
    // (case, plaintext builder args, valid? — a valid packet without
    // payload is dropped as padding only, the others are forwarded)
    type Case<'a> = (
        &'a str,
        u8,
        Option<(u16, &'a [u8])>,
        &'a [u8],
        Option<(usize, u8)>,
        bool,
    );
    let cases: &[Case] = &[
        // The reported one: element id 1 says 4 bytes, the block holds 3 after it.
        (
            "one-byte element past its block",
            0,
            Some((0xBEDE, &[0x13, 0, 0, 0])),
            b"x",
            None,
            false,
        ),
        (
            "one-byte element filling its block",
            0,
            Some((0xBEDE, &[0x12, 1, 2, 3])),
            b"x",
            None,
            true,
        ),
        (
            "one-byte element past a two-word block",
            0,
            Some((0xBEDE, &[0x10, 1, 0, 0, 0x2f, 0, 0, 0])),
            b"x",
            None,
            false,
        ),
        (
            "one-byte id 15 stops the block",
            0,
            Some((0xBEDE, &[0xf3, 0, 0, 0])),
            b"x",
            None,
            true,
        ),
        (
            "one-byte padding only",
            0,
            Some((0xBEDE, &[0, 0, 0, 0])),
            b"x",
            None,
            true,
        ),
        (
            "empty one-byte block",
            0,
            Some((0xBEDE, &[])),
            b"x",
            None,
            true,
        ),
        (
            "two-byte element past its block",
            0,
            Some((0x1000, &[1, 5, 9, 9])),
            b"x",
            None,
            false,
        ),
        (
            "two-byte element without its length",
            0,
            Some((0x1000, &[0, 0, 0, 7])),
            b"x",
            None,
            false,
        ),
        (
            "two-byte zero-length element",
            0,
            Some((0x1000, &[1, 0, 0, 0])),
            b"x",
            None,
            true,
        ),
        (
            "two-byte with appbits",
            0,
            Some((0x100f, &[2, 1, 7, 0])),
            b"x",
            None,
            true,
        ),
        (
            "two-byte element of 255 bytes",
            0,
            Some((0x1000, &[3, 255, 1, 2])),
            b"x",
            None,
            false,
        ),
        (
            "unknown extension profile",
            0,
            Some((0xabcd, &[0xff; 8])),
            b"x",
            None,
            true,
        ),
        ("fifteen CSRCs", 15, None, b"x", None, true),
        (
            "fifteen CSRCs and a bad element",
            15,
            Some((0xBEDE, &[0x1f, 0, 0, 0])),
            b"",
            None,
            false,
        ),
        ("header only", 0, None, b"", None, true),
        ("padding count 0", 0, None, b"abcd", Some((4, 0)), false),
        (
            "padding past the payload",
            0,
            None,
            b"abcd",
            Some((4, 200)),
            false,
        ),
        (
            "padding covering the extension",
            0,
            Some((0xBEDE, &[0x10, 1, 0, 0])),
            b"",
            Some((2, 9)),
            false,
        ),
        (
            "padding exactly the payload",
            0,
            None,
            b"",
            Some((4, 4)),
            true,
        ),
        ("padding of 255", 0, None, &[7; 300], Some((255, 255)), true),
    ];
    let (mut malformed, mut padding_only) = (0, 0);
    for &(name, csrcs, ext, payload, padding, valid) in cases {
        let seq = r.publisher.seq;
        r.publisher.seq = seq.wrapping_add(1);
        let plain = rtp_bytes(111, seq, csrcs, ext, payload, padding);
        let mut pkt = protect(&mut r.publisher.tx, &plain);
        let mut sink = Sink::new();
        r.router
            .handle_input(r.now, addr(5000), &mut pkt, &mut sink);
        let copies = (0..r.subs.len())
            .map(|k| sink.count_to(addr(6000 + k as u16)))
            .sum::<usize>();
        if valid && payload.is_empty() {
            // Valid, but nothing to forward: padding only (or nothing).
            padding_only += 1;
            assert_eq!(copies, 0, "{name}: not forwarded");
        } else if valid {
            assert_eq!(
                copies,
                r.subs.len(),
                "{name}: forwarded to every subscriber"
            );
            for (k, (peer, _)) in r.subs.iter_mut().enumerate() {
                let (s, _) = sink
                    .sent
                    .iter()
                    .find(|(_, d)| *d == addr(6000 + k as u16))
                    .unwrap();
                let out = peer.open(s);
                assert_eq!(out.len(), plain.len(), "{name}");
                assert_eq!(
                    out[12..],
                    plain[12..],
                    "{name}: only the fixed header changes"
                );
            }
        } else {
            malformed += 1;
            assert_eq!(copies, 0, "{name}: dropped");
        }
        assert_eq!(
            r.router.stats().dropped(DropReason::Malformed),
            malformed,
            "{name}: counted as malformed"
        );
        assert_eq!(
            r.router.stats().dropped(DropReason::PaddingOnly),
            padding_only,
            "{name}: counted as padding only"
        );
        assert_still_forwarding(&mut r, &mut bystander, name);
    }
}

#[test]
fn authentic_malformed_rtcp_is_dropped_and_every_room_keeps_forwarding() {
    let (mut r, mut bystander, _) = with_bystander(2);
    // The publisher's address is learnt first.
    assert_still_forwarding(&mut r, &mut bystander, "before");
    let pli = |media: u32| {
        let mut p = vec![0x81, 206, 0, 2, 0, 0, 0, 111];
        p.extend_from_slice(&media.to_be_bytes());
        p
    };
    let mut trailing_junk = pli(111);
    trailing_junk.extend_from_slice(&[0x80, 200, 0]);
    let mut length_past_end = pli(111);
    length_past_end.extend_from_slice(&[0x81, 205, 0xff, 0xff, 0, 0, 0, 111]);
    let fir_no_entries = [0x84, 206, 0, 2, 0, 0, 0, 111, 0, 0, 0, 0];
    let sr_count_too_big = [0x9f, 200, 0, 1, 0, 0, 0, 111];
    let padding_zero = [0xa0, 201, 0, 1, 0, 0, 0, 111, 0, 0, 0, 0];
    let version_1_inside = {
        let mut p = pli(111);
        p.extend_from_slice(&[0x41, 206, 0, 2, 0, 0, 0, 111, 0, 0, 0, 1]);
        p
    };
    let bye_with_many_sources = [0x9f, 203, 0, 1, 0, 0, 0, 111];
    let nack_short = [0x81, 205, 0, 2, 0, 0, 0, 111, 0, 0, 0, 111];
    let twcc_garbage = {
        let mut p = vec![0x8f, 205, 0, 6, 0, 0, 0, 111, 0, 0, 0, 111];
        p.extend_from_slice(&[0xff; 12]);
        p
    };
    let cases: &[(&str, &[u8])] = &[
        ("a PLI then a truncated header", &trailing_junk),
        ("length past the datagram", &length_past_end),
        ("FIR without entries", &fir_no_entries),
        ("SR claiming 31 reports", &sr_count_too_big),
        ("padding count 0", &padding_zero),
        ("version 1 packet inside", &version_1_inside),
        ("BYE claiming 31 sources", &bye_with_many_sources),
        ("NACK without its FCI", &nack_short),
        ("transport-cc of garbage", &twcc_garbage),
    ];
    for &(name, plain) in cases {
        let before = r.router.stats().get(Counter::RtcpIn);
        let mut pkt = protect_rtcp(&mut r.publisher.tx, plain);
        let mut sink = Sink::new();
        r.router
            .handle_input(r.now, addr(5000), &mut pkt, &mut sink);
        assert_eq!(
            r.router.stats().get(Counter::RtcpIn),
            before + 1,
            "{name}: authenticated"
        );
        assert_still_forwarding(&mut r, &mut bystander, name);
    }
    assert!(
        r.router.stats().dropped(DropReason::Malformed) >= 4,
        "the malformed ones are counted: {:?}",
        r.router.stats()
    );
}

#[test]
fn a_subscriber_never_receives_another_rooms_producer() {
    let (mut r, mut bystander, mut foreign_sub) = with_bystander(1);
    let explicit = |v: u32| Subscription::Explicit {
        video: vec![v],
        audio: vec![],
    };
    // Room 2's subscriber asks for room 1's producer, then for an SSRC that
    // exists nowhere: the answers are the same (no oracle).
    let foreign = consumers(
        r.router
            .handle_command(
                r.now,
                Command::SetSubscription(EndpointId(51), explicit(111)),
            )
            .unwrap(),
    );
    let unknown = consumers(
        r.router
            .handle_command(
                r.now,
                Command::SetSubscription(EndpointId(51), explicit(999)),
            )
            .unwrap(),
    );
    assert_eq!(foreign, unknown);
    assert_eq!(foreign[0].producer_ssrc, None);
    // And at creation, with a new endpoint.
    let (_, m, l) = Peer::new(52);
    let cmd = endpoint(
        52,
        Role::Subscribe,
        m,
        l,
        vec![],
        Some(addr(7200)),
        explicit(111),
    );
    let created = consumers(r.router.handle_command(r.now, in_room(cmd, 2)).unwrap());
    assert_eq!(created[0].producer_ssrc, None);
    r.router
        .handle_command(
            r.now,
            Command::SetSubscription(EndpointId(51), explicit(111)),
        )
        .unwrap();
    let mut sink = Sink::new();
    for _ in 0..20 {
        let mut pkt = r.publisher.rtp(111, 96, b"room 1 only");
        r.router
            .handle_input(r.now, addr(5000), &mut pkt, &mut sink);
    }
    assert_eq!(sink.count_to(addr(6000)), 20, "room 1's own subscriber");
    assert_eq!(sink.count_to(addr(7100)), 0, "room 2's subscriber");
    assert_eq!(sink.count_to(addr(7200)), 0, "room 2's new subscriber");
    // Room 1's traffic is counted in room 1 only.
    let Ok(Outcome::Traffic(rooms)) = r.router.handle_command(r.now, Command::Traffic) else {
        panic!("no traffic");
    };
    for (room, _, t) in rooms {
        let want = if room == RoomId(1) { (20, 20) } else { (0, 0) };
        assert_eq!((t.rx_packets, t.tx_packets), want, "{room:?}");
    }
    // A PLI from room 2 naming its slot does not reach room 1's publisher.
    let plis_before = r.router.stats().get(Counter::PliSent);
    let mut pli = vec![0x81, 206, 0, 2];
    pli.extend_from_slice(&0x5151u32.to_be_bytes());
    pli.extend_from_slice(&foreign[0].ssrc.to_be_bytes());
    let mut pkt = protect_rtcp(&mut foreign_sub.tx, &pli);
    r.router.handle_input(
        r.now + Duration::from_secs(1),
        addr(7100),
        &mut pkt,
        &mut sink,
    );
    let mut pkt = r.publisher.rtp(111, 96, b"x");
    r.router.handle_input(
        r.now + Duration::from_secs(1),
        addr(5000),
        &mut pkt,
        &mut sink,
    );
    assert_eq!(r.router.stats().get(Counter::PliSent), plis_before);
    // Room 2's own producer still reaches it.
    r.router
        .handle_command(
            r.now,
            Command::SetSubscription(EndpointId(51), explicit(222)),
        )
        .unwrap();
    let mut pkt = bystander.rtp(222, 96, b"mine");
    let mut sink = Sink::new();
    r.router
        .handle_input(r.now, addr(5100), &mut pkt, &mut sink);
    assert_eq!(sink.count_to(addr(7100)), 1);
}

/// Forty publishers of audio and video, two subscribers of "all": every
/// stream reaches both (each SRTP context used to hold 32 SSRCs).
#[test]
fn every_consumer_has_an_outbound_stream() {
    let now = Instant::now();
    let mut router = Router::new(RouterConfig::default());
    router
        .handle_command(now, Command::CreateRoom(RoomId(1)))
        .unwrap();
    let mut pubs = Vec::new();
    for i in 0..40u16 {
        let (peer, m, l) = Peer::new(i as u8 + 1);
        let ssrc = 1000 + u32::from(i) * 2;
        let tracks = vec![
            TrackConfig {
                kind: MediaKind::Video,
                ssrc,
                payload_type: 96,
                rtx: None,
                codec: crate::codec::Codec::Vp8,
                layer_of: None,
                red_payload_type: None,
                source: TrackSource::Camera,
            },
            TrackConfig {
                kind: MediaKind::Audio,
                ssrc: ssrc + 1,
                payload_type: 111,
                rtx: None,
                codec: crate::codec::Codec::Vp8,
                layer_of: None,
                red_payload_type: None,
                source: TrackSource::Camera,
            },
        ];
        let cmd = endpoint(
            u64::from(i) + 1,
            Role::Publish,
            m,
            l,
            tracks,
            None,
            Subscription::All,
        );
        router.handle_command(now, cmd).unwrap();
        pubs.push((peer, ssrc));
    }
    let mut subs = Vec::new();
    for k in 0..2u16 {
        let (peer, m, l) = Peer::new(200 + k as u8);
        let cmd = endpoint(
            500 + u64::from(k),
            Role::Subscribe,
            m,
            l,
            vec![],
            Some(addr(6000 + k)),
            Subscription::All,
        );
        let c = consumers(router.handle_command(now, cmd).unwrap());
        assert_eq!(c.len(), 80);
        // The test's receiving side must hold 80 SSRCs too.
        let mut peer = peer;
        let theirs = super::tests::master((200 + k as u8).wrapping_add(100));
        let config = crate::srtp::SrtpConfig {
            max_ssrcs: 128,
            ..Default::default()
        };
        peer.rx = SrtpContext::new(PROFILE, &theirs[..16], &theirs[16..], config).unwrap();
        subs.push(peer);
    }
    let mut sink = Sink::new();
    for (i, (peer, ssrc)) in pubs.iter_mut().enumerate() {
        for s in [*ssrc, *ssrc + 1] {
            let mut pkt = peer.rtp(s, 96, b"m");
            router.handle_input(now, addr(5000 + i as u16), &mut pkt, &mut sink);
        }
    }
    let s = router.stats();
    assert_eq!(s.dropped(DropReason::ProtectFailed), 0);
    for (k, sub) in subs.iter_mut().enumerate() {
        let mine: Vec<_> = sink
            .sent
            .iter()
            .filter(|(_, d)| *d == addr(6000 + k as u16))
            .collect();
        assert_eq!(mine.len(), 80, "subscriber {k}");
        for (srtp, _) in mine {
            sub.open(srtp);
        }
    }
}

/// A consumer slot dropped and created again with the same SSRC continues
/// its numbering: the subscriber's replay window accepts every packet, so
/// no SRTP index (a GCM nonce) was used twice under its key.
#[test]
fn a_recreated_consumer_never_reuses_an_srtp_index() {
    let mut r = room_with(1);
    let explicit = |v: Vec<u32>| Subscription::Explicit {
        video: v,
        audio: vec![],
    };
    let mut opened = 0;
    for round in 0..3 {
        let c = consumers(
            r.router
                .handle_command(
                    r.now,
                    Command::SetSubscription(EndpointId(100), explicit(vec![111])),
                )
                .unwrap(),
        );
        assert_eq!(c[0].producer_ssrc, Some(111), "round {round}");
        let mut sink = Sink::new();
        for _ in 0..5 {
            let mut pkt = r.publisher.rtp(111, 96, b"v");
            r.router
                .handle_input(r.now, addr(5000), &mut pkt, &mut sink);
        }
        for (s, d) in &sink.sent {
            if *d == addr(6000) {
                r.subs[0].0.open(s);
                opened += 1;
            }
        }
        r.router
            .handle_command(
                r.now,
                Command::SetSubscription(EndpointId(100), explicit(vec![])),
            )
            .unwrap();
    }
    assert_eq!(opened, 15);
}

#[test]
fn client_created_state_is_bounded() {
    let now = Instant::now();
    let config = RouterConfig {
        max_rooms: 2,
        max_endpoints_per_room: 2,
        max_tracks_per_endpoint: 2,
        max_consumers_per_endpoint: 3,
        ..RouterConfig::default()
    };
    config.check().unwrap();
    let mut router = Router::new(config);
    for room in 1..=2 {
        router
            .handle_command(now, Command::CreateRoom(RoomId(room)))
            .unwrap();
    }
    assert_eq!(
        router.handle_command(now, Command::CreateRoom(RoomId(3))),
        Err(RouterError::TooMany("rooms per worker"))
    );
    let track = |ssrc, kind| TrackConfig {
        kind,
        ssrc,
        payload_type: 96,
        rtx: None,
        codec: crate::codec::Codec::Vp8,
        layer_of: None,
        red_payload_type: None,
        source: TrackSource::Camera,
    };
    let three = vec![
        track(1, MediaKind::Video),
        track(2, MediaKind::Video),
        track(3, MediaKind::Audio),
    ];
    let (_, m, l) = Peer::new(1);
    assert_eq!(
        router.handle_command(
            now,
            endpoint(
                1,
                Role::Publish,
                m.clone(),
                l.clone(),
                three,
                None,
                Subscription::All
            )
        ),
        Err(RouterError::TooMany("tracks per endpoint"))
    );
    let two = vec![track(1, MediaKind::Video), track(2, MediaKind::Audio)];
    router
        .handle_command(
            now,
            endpoint(
                1,
                Role::Publish,
                m.clone(),
                l.clone(),
                two,
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
                m.clone(),
                l.clone(),
                video(3),
                None,
                Subscription::All,
            ),
        )
        .unwrap();
    assert_eq!(
        router.handle_command(
            now,
            endpoint(
                3,
                Role::Subscribe,
                m.clone(),
                l.clone(),
                vec![],
                None,
                Subscription::All
            )
        ),
        Err(RouterError::TooMany("endpoints per room"))
    );
    // Room 2: an explicit list beyond the consumer limit is refused; "all"
    // over more producers than the limit is cut and counted.
    let four = Subscription::Explicit {
        video: vec![1, 2, 3],
        audio: vec![4],
    };
    let cmd = endpoint(4, Role::Subscribe, m.clone(), l.clone(), vec![], None, four);
    assert_eq!(
        router.handle_command(now, in_room(cmd, 2)),
        Err(RouterError::TooMany("consumers per endpoint"))
    );
    router
        .handle_command(now, Command::RemoveEndpoint(EndpointId(2)))
        .unwrap();
    let cmd = endpoint(
        5,
        Role::Subscribe,
        m.clone(),
        l.clone(),
        vec![],
        None,
        Subscription::All,
    );
    let c = consumers(router.handle_command(now, cmd).unwrap());
    assert_eq!(c.len(), 2);
    let cmd = endpoint(
        6,
        Role::Publish,
        m,
        l,
        vec![track(7, MediaKind::Video), track(8, MediaKind::Video)],
        None,
        Subscription::All,
    );
    router
        .handle_command(now, Command::RemoveEndpoint(EndpointId(5)))
        .unwrap();
    router.handle_command(now, cmd).unwrap();
    let (_, m, l) = Peer::new(9);
    let cmd = endpoint(9, Role::Subscribe, m, l, vec![], None, Subscription::All);
    assert_eq!(
        router.handle_command(now, cmd),
        Err(RouterError::TooMany("endpoints per room"))
    );
    // Contradictory limits are refused up front.
    let bad = RouterConfig {
        max_tracks_per_endpoint: 64,
        ..RouterConfig::default()
    };
    assert!(bad.check().is_err());
    assert!(
        RouterConfig {
            max_rooms: 0,
            ..RouterConfig::default()
        }
        .check()
        .is_err()
    );
}

#[test]
fn over_limit_all_subscriptions_are_counted_not_silent() {
    let now = Instant::now();
    let mut router = Router::new(RouterConfig {
        max_consumers_per_endpoint: 2,
        ..RouterConfig::default()
    });
    router
        .handle_command(now, Command::CreateRoom(RoomId(1)))
        .unwrap();
    let (_, m, l) = Peer::new(1);
    let (_, sm, sl) = Peer::new(2);
    let cmd = endpoint(1, Role::Subscribe, sm, sl, vec![], None, Subscription::All);
    router.handle_command(now, cmd).unwrap();
    for i in 0..3u32 {
        let cmd = endpoint(
            10 + u64::from(i),
            Role::Publish,
            m.clone(),
            l.clone(),
            video(100 + i),
            None,
            Subscription::All,
        );
        router.handle_command(now, cmd).unwrap();
    }
    assert_eq!(router.stats().get(Counter::ConsumersOverLimit), 1);
}

/// An address learnt from media (comedia) is forgotten after a consent
/// period without an authentic packet from it, like ICE consent; the next
/// authentic packet teaches it again.
#[test]
fn learnt_addresses_expire_without_authentic_traffic() {
    let mut r = room_with(1);
    let mut sink = Sink::new();
    let mut pkt = r.publisher.rtp(111, 96, b"a");
    r.router
        .handle_input(r.now, addr(5000), &mut pkt, &mut sink);
    // Within the period: refreshed, and a copy from elsewhere is refused.
    let t1 = r.now + Duration::from_secs(20);
    r.router.handle_timeout(t1, &mut sink);
    let mut pkt = r.publisher.rtp(111, 96, b"b");
    r.router.handle_input(t1, addr(5000), &mut pkt, &mut sink);
    let t2 = t1 + Duration::from_secs(20);
    r.router.handle_timeout(t2, &mut sink);
    assert_eq!(r.router.stats().get(Counter::ConsentExpired), 0);
    let mut pkt = r.publisher.rtp(111, 96, b"c");
    r.router.handle_input(t2, addr(5001), &mut pkt, &mut sink);
    assert_eq!(r.router.stats().dropped(DropReason::AddressMismatch), 1);
    // Silent for longer than the consent period: forgotten.
    let t3 = t1 + CONSENT_TIMEOUT + Duration::from_secs(1);
    r.router.handle_timeout(t3, &mut sink);
    assert_eq!(r.router.stats().get(Counter::ConsentExpired), 1);
    let before = sink.count_to(addr(6000));
    let mut pkt = r.publisher.rtp(111, 96, b"d");
    r.router.handle_input(t3, addr(5001), &mut pkt, &mut sink);
    assert_eq!(
        sink.count_to(addr(6000)),
        before + 1,
        "re-learnt at the new address"
    );
}
