//! Tracks added to and removed from a publishing endpoint in its room (a
//! cascade trunk's tracks follow the origin's consumers).

use super::tests::*;
use super::*;
use crate::wire::rtp::RtpPacket;

fn audio(ssrc: u32) -> TrackConfig {
    TrackConfig {
        kind: MediaKind::Audio,
        ssrc,
        payload_type: 111,
        rtx: None,
        codec: crate::codec::Codec::Opus,
        layer_of: None,
        red_payload_type: None,
        source: TrackSource::Camera,
    }
}

/// A room with a trunk (publisher 1, no tracks yet, address 5000) and a
/// subscriber of everything (address 6000).
fn trunk_room() -> (Router, Instant, Peer, Peer) {
    let now = Instant::now();
    let mut router = Router::new(RouterConfig::default());
    router
        .handle_command(now, Command::CreateRoom(RoomId(1)))
        .unwrap();
    let (trunk, tm, tl) = Peer::new(1);
    router
        .handle_command(
            now,
            endpoint(
                1,
                Role::Publish,
                tm,
                tl,
                vec![],
                Some(addr(5000)),
                Subscription::All,
            ),
        )
        .unwrap();
    let (sub, sm, sl) = Peer::new(2);
    let c = consumers(
        router
            .handle_command(
                now,
                endpoint(
                    2,
                    Role::Subscribe,
                    sm,
                    sl,
                    vec![],
                    Some(addr(6000)),
                    Subscription::All,
                ),
            )
            .unwrap(),
    );
    assert!(c.is_empty());
    (router, now, trunk, sub)
}

fn add(
    router: &mut Router,
    now: Instant,
    tracks: Vec<TrackConfig>,
) -> Result<Outcome, RouterError> {
    router.handle_command(
        now,
        Command::AddTracks {
            endpoint: EndpointId(1),
            tracks,
        },
    )
}

#[test]
fn added_tracks_reach_the_rooms_subscribers_and_removed_ones_stop() {
    let (mut router, now, mut trunk, mut sub) = trunk_room();
    add(&mut router, now, vec![video(111)[0], audio(222)]).unwrap();
    let c = consumers(
        router
            .handle_command(now, Command::Consumers(EndpointId(2)))
            .unwrap(),
    );
    assert_eq!(c.len(), 2, "{c:?}");
    let v = c.iter().find(|c| c.kind == MediaKind::Video).unwrap();
    assert_eq!(v.producer_ssrc, Some(111));
    assert_eq!(v.codec, Some(crate::codec::Codec::Vp8));
    let a = c.iter().find(|c| c.kind == MediaKind::Audio).unwrap();
    assert_eq!(a.codec, Some(crate::codec::Codec::Opus));

    let mut sink = Sink::new();
    for i in 0..10u8 {
        let mut pkt = trunk.rtp(111, 96, &[i; 300]);
        router.handle_input(now, addr(5000), &mut pkt, &mut sink);
    }
    let to_sub: Vec<_> = sink.sent.iter().filter(|(_, d)| *d == addr(6000)).collect();
    assert_eq!(to_sub.len(), 10);
    let plain = sub.open(&to_sub[0].0);
    assert_eq!(RtpPacket::new_checked(&plain).unwrap().ssrc(), v.ssrc);

    // Removed: its packets are no longer anyone's; the consumer detaches.
    router
        .handle_command(
            now,
            Command::RemoveTracks {
                endpoint: EndpointId(1),
                ssrcs: vec![111],
            },
        )
        .unwrap();
    let mut sink = Sink::new();
    let mut pkt = trunk.rtp(111, 96, &[9; 300]);
    router.handle_input(now, addr(5000), &mut pkt, &mut sink);
    assert_eq!(sink.count_to(addr(6000)), 0);
    assert_eq!(router.stats().dropped(DropReason::UnknownSource), 1);
    let c = consumers(
        router
            .handle_command(now, Command::Consumers(EndpointId(2)))
            .unwrap(),
    );
    let v2 = c.iter().find(|c| c.kind == MediaKind::Video).unwrap();
    assert_eq!(v2.producer_ssrc, None);

    // A new track reuses the detached slot: same SSRC, continuous numbering.
    add(&mut router, now, video(333)).unwrap();
    let c = consumers(
        router
            .handle_command(now, Command::Consumers(EndpointId(2)))
            .unwrap(),
    );
    let v3 = c.iter().find(|c| c.kind == MediaKind::Video).unwrap();
    assert_eq!((v3.ssrc, v3.producer_ssrc), (v.ssrc, Some(333)));
}

#[test]
fn refused_track_changes_change_nothing() {
    let (mut router, now, _trunk, _sub) = trunk_room();
    add(&mut router, now, video(111)).unwrap();
    // An SSRC in use, twice in one command, a layer, a bad payload type.
    assert_eq!(
        add(&mut router, now, video(111)),
        Err(RouterError::DuplicateSsrc(111))
    );
    assert_eq!(
        add(&mut router, now, vec![audio(5), audio(5)]),
        Err(RouterError::DuplicateSsrc(5))
    );
    let mut layer = video(7)[0];
    layer.layer_of = Some(111);
    assert!(add(&mut router, now, vec![layer]).is_err());
    let mut bad = audio(8);
    bad.payload_type = 200;
    assert!(add(&mut router, now, vec![audio(9), bad]).is_err());
    // Over the track limit.
    let many: Vec<TrackConfig> = (0..RouterConfig::default().max_consumers_per_endpoint as u32)
        .map(|i| audio(1000 + i))
        .collect();
    assert_eq!(
        add(&mut router, now, many),
        Err(RouterError::TooMany("tracks per endpoint"))
    );
    // None of those landed: 9 and 1000 are free.
    add(&mut router, now, vec![audio(9), audio(1000)]).unwrap();
    // Removing an unknown SSRC with a known one removes neither.
    assert!(
        router
            .handle_command(
                now,
                Command::RemoveTracks {
                    endpoint: EndpointId(1),
                    ssrcs: vec![9, 4242],
                },
            )
            .is_err()
    );
    assert_eq!(
        add(&mut router, now, vec![audio(9)]),
        Err(RouterError::DuplicateSsrc(9))
    );
    // A subscriber adds no tracks; an unknown endpoint neither.
    assert!(
        router
            .handle_command(
                now,
                Command::AddTracks {
                    endpoint: EndpointId(2),
                    tracks: vec![audio(77)],
                },
            )
            .is_err()
    );
    assert_eq!(
        router.handle_command(
            now,
            Command::AddTracks {
                endpoint: EndpointId(99),
                tracks: vec![audio(77)],
            },
        ),
        Err(RouterError::UnknownEndpoint)
    );
}
