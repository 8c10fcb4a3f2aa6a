//! Speakers and last-N slots on a virtual clock: publishers send RFC 6464
//! audio levels every 20 ms (one video packet with each), viewers
//! subscribe with [`Subscription::Slots`]; the dominant speaker is
//! published, slots follow the speakers with a keyframe request and one
//! continuous numbering per slot, and never show a viewer its own media.

use std::time::Duration;

use super::tests::{Peer, Sink, addr};
use super::*;
use crate::codec::Codec;
use crate::wire::rtp::{RtpHeader, RtpPacket, write_header};

/// The audio-level extension id every publisher here uses.
const LEVEL_EXT: u8 = 1;
/// Everyone's level when not talking, in -dBov.
const FLOOR: u8 = 70;
const STEP: Duration = Duration::from_millis(20);

/// Speech between -22 and -34 dBov with an 80 ms pause every second.
fn speech(frame: u64) -> u8 {
    if frame % 50 < 4 {
        FLOOR
    } else {
        22 + (frame * 7 % 13) as u8
    }
}

struct Publisher {
    peer: Peer,
    id: u64,
    addr: SocketAddr,
    audio: u32,
    video: u32,
    seq: [u16; 2],
}

impl Publisher {
    /// One packet of `ssrc` tagged with the publisher's id in every
    /// payload byte; `ext` is the header extension elements.
    fn packet(&mut self, kind: MediaKind, ext: &[(u8, &[u8])], frame: u64) -> Vec<u8> {
        let (ssrc, pt, k) = match kind {
            MediaKind::Audio => (self.audio, 111, 0),
            MediaKind::Video => (self.video, 96, 1),
        };
        let mut buf = [0u8; 1500];
        let h = RtpHeader {
            payload_type: pt,
            sequence_number: self.seq[k],
            timestamp: (frame as u32).wrapping_mul(960),
            ssrc,
            marker: kind == MediaKind::Video,
        };
        self.seq[k] = self.seq[k].wrapping_add(1);
        let n = write_header(&mut buf, &h, ext).unwrap();
        buf[n..n + 40].fill(self.id as u8);
        let n = self.peer.tx.protect_rtp(&mut buf, n + 40).unwrap();
        buf[..n].to_vec()
    }
}

struct Viewer {
    peer: Peer,
    addr: SocketAddr,
}

/// What a viewer received in one step: (SSRC, sequence number, the
/// publisher id its payload is tagged with, kind by payload type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Got {
    ssrc: u32,
    seq: u16,
    from: u64,
    video: bool,
}

struct Sim {
    router: Router,
    t0: Instant,
    frame: u64,
    pubs: Vec<Publisher>,
    viewers: Vec<Viewer>,
    events: Vec<(Duration, Event)>,
    /// Per viewer, everything it received, with the time.
    got: Vec<Vec<(Duration, Got)>>,
}

fn slots(video: u16, audio: u16, pinned: Vec<u64>) -> Subscription {
    Subscription::Slots {
        video,
        audio,
        pinned,
        exclude: None,
    }
}

impl Sim {
    fn new() -> Self {
        Self::with_config(RouterConfig::default())
    }

    fn with_config(config: RouterConfig) -> Self {
        let t0 = Instant::now();
        let mut router = Router::new(config);
        router
            .handle_command(t0, Command::CreateRoom(RoomId(1)))
            .unwrap();
        Self {
            router,
            t0,
            frame: 0,
            pubs: Vec::new(),
            viewers: Vec::new(),
            events: Vec::new(),
            got: Vec::new(),
        }
    }

    fn now(&self) -> Instant {
        self.t0 + self.elapsed()
    }

    fn elapsed(&self) -> Duration {
        STEP * self.frame as u32
    }

    /// Publisher `id` (participant `10 + id`) with one audio and one
    /// video track.
    fn publish(&mut self, id: u64) {
        let (peer, m, l) = Peer::new(id as u8);
        let (audio, video) = (1000 + id as u32, 2000 + id as u32);
        let track = |kind, ssrc, payload_type, codec| TrackConfig {
            kind,
            ssrc,
            payload_type,
            codec,
            rtx: None,
            layer_of: None,
            red_payload_type: None,
            source: TrackSource::Camera,
        };
        let addr = addr(5000 + id as u16);
        let cfg = EndpointConfig {
            id: EndpointId(id),
            room: RoomId(1),
            role: Role::Publish,
            profile: super::tests::PROFILE,
            remote_master: m,
            local_master: l,
            tracks: vec![
                track(MediaKind::Audio, audio, 111, Codec::Opus),
                track(MediaKind::Video, video, 96, Codec::Vp8),
            ],
            remote: Some(addr),
            subscription: Subscription::All,
            rtcp_ssrc: None,
            red_payload_type: None,
            rtx_payload_types: Default::default(),
            twcc_send_extension: None,
            participant: Some(10 + id),
            audio_level_extension: Some(LEVEL_EXT),
        };
        let now = self.now();
        self.router
            .handle_command(now, Command::AddEndpoint(Box::new(cfg)))
            .unwrap();
        self.pubs.push(Publisher {
            peer,
            id,
            addr,
            audio,
            video,
            seq: [100, 5000],
        });
    }

    /// A viewer endpoint `id` of participant `participant`.
    fn view(&mut self, id: u64, participant: u64, sub: Subscription) -> Vec<ConsumerInfo> {
        let (peer, m, l) = Peer::new(50 + id as u8);
        let addr = addr(6000 + id as u16);
        let cfg = EndpointConfig {
            id: EndpointId(id),
            room: RoomId(1),
            role: Role::Subscribe,
            profile: super::tests::PROFILE,
            remote_master: m,
            local_master: l,
            tracks: Vec::new(),
            remote: Some(addr),
            subscription: sub,
            rtcp_ssrc: None,
            red_payload_type: None,
            rtx_payload_types: Default::default(),
            twcc_send_extension: None,
            participant: Some(participant),
            audio_level_extension: None,
        };
        let now = self.now();
        let out = self
            .router
            .handle_command(now, Command::AddEndpoint(Box::new(cfg)))
            .unwrap();
        self.viewers.push(Viewer { peer, addr });
        self.got.push(Vec::new());
        match out {
            Outcome::Consumers(c) => c,
            other => panic!("{other:?}"),
        }
    }

    /// Runs `ms` of 20 ms steps; `level(publisher id, frame)` is the level
    /// each sends with its audio packet.
    fn run(&mut self, ms: u64, level: impl Fn(u64, u64) -> u8) {
        for _ in 0..ms / 20 {
            self.frame += 1;
            let (now, frame) = (self.now(), self.frame);
            let mut sink = Sink::new();
            for p in &mut self.pubs {
                let l = [level(p.id, frame)];
                let mut a = p.packet(MediaKind::Audio, &[(LEVEL_EXT, &l)], frame);
                self.router.handle_input(now, p.addr, &mut a, &mut sink);
                let mut v = p.packet(MediaKind::Video, &[], frame);
                self.router.handle_input(now, p.addr, &mut v, &mut sink);
            }
            self.collect(&sink);
        }
    }

    /// Runs `ms` with publisher `talker` speaking, the others at the floor.
    fn talk(&mut self, ms: u64, talker: u64) {
        self.run(ms, |id, f| if id == talker { speech(f) } else { FLOOR });
    }

    fn collect(&mut self, sink: &Sink) {
        let at = self.elapsed();
        for (bytes, dst) in &sink.sent {
            let Some(v) = self.viewers.iter().position(|v| v.addr == *dst) else {
                continue;
            };
            let plain = self.viewers[v].peer.open(bytes);
            let p = RtpPacket::new_checked(&plain).unwrap();
            self.got[v].push((
                at,
                Got {
                    ssrc: p.ssrc(),
                    seq: p.sequence_number(),
                    from: u64::from(p.payload()[0]),
                    video: p.payload_type() == 96,
                },
            ));
        }
        while let Some(e) = self.router.poll_event() {
            self.events.push((at, e));
        }
    }

    /// Who viewer `v` saw on its video slots in the last step it received
    /// video, by slot SSRC order.
    fn showing(&self, v: usize, video: bool) -> Vec<u64> {
        let last = self.got[v].iter().rev().find(|(_, g)| g.video == video);
        let Some(&(at, _)) = last else {
            return Vec::new();
        };
        let mut seen: Vec<(u32, u64)> = self.got[v]
            .iter()
            .filter(|(t, g)| *t == at && g.video == video)
            .map(|(_, g)| (g.ssrc, g.from))
            .collect();
        seen.sort_unstable();
        seen.dedup();
        seen.into_iter().map(|(_, from)| from).collect()
    }

    /// When viewer `v` first got video from `from` on or after `start`.
    fn first_video_from(&self, v: usize, from: u64, start: Duration) -> Option<Duration> {
        self.got[v]
            .iter()
            .find(|(t, g)| *t >= start && g.video && g.from == from)
            .map(|(t, _)| *t - start)
    }

    fn dominant_events(&self) -> Vec<(Duration, Option<EndpointId>, Option<u64>)> {
        self.events
            .iter()
            .filter_map(|(at, e)| match e {
                Event::DominantSpeaker {
                    endpoint,
                    participant,
                    ..
                } => Some((*at, *endpoint, *participant)),
                _ => None,
            })
            .collect()
    }

    fn keyframe_requests(&self, ssrc: u32, since: Duration) -> usize {
        self.events
            .iter()
            .filter(|(at, e)| {
                *at >= since && matches!(e, Event::KeyframeRequested { ssrc: s, .. } if *s == ssrc)
            })
            .count()
    }
}

/// Every SSRC viewer `v` received keeps one gapless numbering.
fn assert_continuous(got: &[(Duration, Got)]) {
    let mut last: HashMap<u32, u16> = HashMap::new();
    for (at, g) in got {
        if let Some(prev) = last.insert(g.ssrc, g.seq) {
            assert_eq!(g.seq, prev.wrapping_add(1), "SSRC {:#x} at {at:?}", g.ssrc);
        }
    }
}

#[test]
fn dominant_speaker_is_published_when_one_talks() {
    let mut sim = Sim::new();
    for id in 1..=3 {
        sim.publish(id);
    }
    sim.talk(1000, 0);
    assert!(sim.dominant_events().is_empty(), "nobody spoke");
    let start = sim.elapsed();
    sim.talk(2000, 2);
    let events = sim.dominant_events();
    assert_eq!(events.len(), 1, "{events:?}");
    let (at, endpoint, participant) = events[0];
    assert_eq!((endpoint, participant), (Some(EndpointId(2)), Some(12)));
    eprintln!("dominant speaker event after {:?}", at - start);
    assert!(at - start <= Duration::from_secs(1));
    let active: Vec<_> = sim
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::ActiveSpeakers { speakers, .. } => Some(speakers.as_slice().to_vec()),
            _ => None,
        })
        .collect();
    assert_eq!(
        active.first().map(|s| s[0]),
        Some(ActiveSpeaker {
            endpoint: EndpointId(2),
            participant: Some(12)
        })
    );
    assert!(active.len() <= 3, "on change only: {active:?}");
    let stats = sim.router.stats();
    assert!(stats.get(Counter::SpeakerDecisions) >= 9);
    assert_eq!(stats.get(Counter::DominantSpeakerChanges), 1);
    assert_eq!(stats.get(Counter::AudioLevelsMissing), 0);
    assert_eq!(stats.get(Counter::AudioLevels), 3 * 150);
}

#[test]
fn slots_follow_the_speaker_with_a_keyframe_and_one_numbering() {
    let mut sim = Sim::new();
    for id in 1..=3 {
        sim.publish(id);
    }
    let c = sim.view(100, 99, slots(1, 1, Vec::new()));
    assert_eq!(c.len(), 2);
    assert_eq!((c[0].kind, c[1].kind), (MediaKind::Video, MediaKind::Audio));
    // Nobody spoke: the first publisher to join fills the slots.
    assert_eq!(c[0].producer_ssrc, Some(2001));
    sim.talk(500, 0);
    assert_eq!(sim.showing(0, true), [1]);

    let mut latencies = Vec::new();
    for talker in [2, 3, 1, 2] {
        let start = sim.elapsed();
        sim.talk(2000, talker);
        let latency = sim
            .first_video_from(0, talker, start)
            .unwrap_or_else(|| panic!("never switched to {talker}"));
        assert!(latency <= Duration::from_secs(1), "{talker}: {latency:?}");
        assert!(
            sim.keyframe_requests(2000 + talker as u32, start) >= 1,
            "PLI to {talker}"
        );
        assert_eq!(sim.showing(0, true), [talker]);
        assert_eq!(sim.showing(0, false), [talker], "audio slot: the loudest");
        latencies.push(latency);
    }
    eprintln!("video slot switch latencies (talk start to first packet): {latencies:?}");
    // One SSRC per slot throughout, numbering without a gap.
    let ssrcs: std::collections::HashSet<u32> = sim.got[0].iter().map(|(_, g)| g.ssrc).collect();
    assert_eq!(ssrcs, [c[0].ssrc, c[1].ssrc].into_iter().collect());
    assert_continuous(&sim.got[0]);
    assert!(sim.router.stats().get(Counter::SlotSwitches) >= 8);
}

#[test]
fn own_media_never_fills_a_viewers_slots() {
    let mut sim = Sim::new();
    for id in 1..=3 {
        sim.publish(id);
    }
    // Participant 12 (publisher 2) watching with enough slots for everyone.
    sim.view(100, 12, slots(3, 3, Vec::new()));
    // Another viewer excluding participant 13 explicitly.
    sim.view(
        101,
        98,
        Subscription::Slots {
            video: 3,
            audio: 3,
            pinned: Vec::new(),
            exclude: Some(13),
        },
    );
    for talker in [2, 3, 1] {
        sim.talk(1500, talker);
    }
    let from = |v: usize| -> std::collections::BTreeSet<u64> {
        sim.got[v].iter().map(|(_, g)| g.from).collect()
    };
    assert_eq!(from(0), [1, 3].into_iter().collect());
    assert_eq!(from(1), [1, 2].into_iter().collect());
    assert_continuous(&sim.got[0]);
}

#[test]
fn pinned_participants_keep_their_slot() {
    let mut sim = Sim::new();
    for id in 1..=3 {
        sim.publish(id);
    }
    sim.view(100, 99, slots(2, 1, vec![13]));
    for talker in [1, 2, 1] {
        sim.talk(1500, talker);
        let showing = sim.showing(0, true);
        assert!(showing.contains(&3), "pinned 13 shown: {showing:?}");
        assert!(showing.contains(&talker), "{showing:?}");
    }
    // Re-pinning by command moves the pin without a new subscription
    // shape: the slot SSRCs stay.
    let now = sim.now();
    let before = sim.got[0].last().map(|(_, g)| g.ssrc);
    let c = match sim
        .router
        .handle_command(
            now,
            Command::SetSubscription(EndpointId(100), slots(2, 1, vec![12])),
        )
        .unwrap()
    {
        Outcome::Consumers(c) => c,
        other => panic!("{other:?}"),
    };
    assert!(c.iter().any(|c| c.producer_ssrc == Some(2002)));
    sim.talk(1000, 1);
    let showing = sim.showing(0, true);
    assert!(showing.contains(&2) && showing.contains(&1), "{showing:?}");
    assert!(sim.got[0].iter().any(|(_, g)| Some(g.ssrc) == before));
    assert_continuous(&sim.got[0]);
}

#[test]
fn a_viewer_before_any_publisher_receives_once_one_publishes() {
    let mut sim = Sim::new();
    let c = sim.view(100, 99, slots(2, 2, Vec::new()));
    assert_eq!(c.len(), 4);
    assert!(c.iter().all(|c| c.producer_ssrc.is_none()));
    sim.run(200, |_, _| FLOOR);
    assert!(sim.got[0].is_empty());
    sim.publish(1);
    let start = sim.elapsed();
    sim.run(100, |_, _| FLOOR);
    assert_eq!(sim.showing(0, true), [1]);
    assert_eq!(sim.showing(0, false), [1]);
    assert_eq!(sim.first_video_from(0, 1, start), Some(STEP));
    // A second publisher fills the second slots without a new subscription.
    sim.publish(2);
    sim.run(100, |_, _| FLOOR);
    assert_eq!(sim.showing(0, true), [1, 2]);
    // The first leaves: its slot empties, the other keeps its own.
    let now = sim.now();
    sim.router
        .handle_command(now, Command::RemoveEndpoint(EndpointId(1)))
        .unwrap();
    sim.pubs.remove(0);
    sim.run(100, |_, _| FLOOR);
    assert_eq!(sim.showing(0, true), [2]);
    assert_continuous(&sim.got[0]);
}

#[test]
fn hostile_slot_counts_and_levels() {
    let config = RouterConfig {
        max_consumers_per_endpoint: 8,
        ..RouterConfig::default()
    };
    let mut sim = Sim::with_config(config);
    sim.publish(1);
    let now = sim.now();
    sim.view(100, 99, slots(1, 1, Vec::new()));
    for bad in [
        slots(5, 4, Vec::new()),
        slots(u16::MAX, u16::MAX, Vec::new()),
        slots(1, 1, (0..9).collect()),
    ] {
        assert!(matches!(
            sim.router
                .handle_command(now, Command::SetSubscription(EndpointId(100), bad)),
            Err(RouterError::TooMany(_))
        ));
    }
    // A refused command changed nothing.
    assert_eq!(
        sim.router
            .consumer_infos(sim.router.by_id[&EndpointId(100)])
            .len(),
        2
    );

    // Levels absent, empty (a two-byte element of length 0), longer than
    // a byte, or under another id: forwarded all the same, counted.
    let (start, frame) = (sim.elapsed(), sim.frame);
    let mut sink = Sink::new();
    let p = &mut sim.pubs[0];
    let odd: [&[(u8, &[u8])]; 4] = [
        &[],
        &[(LEVEL_EXT, &[])],
        &[(
            LEVEL_EXT,
            &[30, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16],
        )],
        &[(7, &[30])],
    ];
    for ext in odd {
        let mut a = p.packet(MediaKind::Audio, ext, frame);
        sim.router.handle_input(now, p.addr, &mut a, &mut sink);
    }
    sim.collect(&sink);
    let stats = sim.router.stats();
    assert_eq!(stats.get(Counter::AudioLevelsMissing), 3);
    assert_eq!(stats.get(Counter::AudioLevels), 1, "the long one is read");
    assert_eq!(
        sim.got[0]
            .iter()
            .filter(|(t, g)| *t >= start && !g.video)
            .count(),
        4
    );
}
