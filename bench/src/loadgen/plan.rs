//! Who publishes what, who receives what, and how many packets each receiver
//! should get: the topology of a run and the expected-count arithmetic, kept
//! free of I/O so it is unit-tested on made-up send counts.
//!
//! Streams whose share a receiver cannot know in advance (the layers of a
//! simulcast track, of which the node forwards one at a time; anything in a
//! last-N slot) are *span-counted*: the receiver expects every output
//! sequence number of the consumer between its first and its last packet
//! ([`Plan::span_counted`]), which [`Plan::expected`] leaves out.

use super::Kind;
use super::media::{AUDIO_PPS, AUDIO_PT, Cadence, VIDEO_FPS, VIDEO_PT};
use super::payload::Marker;

/// The endpoint role in the control API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sends media only.
    Publish,
    /// Receives media only.
    Subscribe,
    /// Both.
    Both,
}

impl Role {
    /// The API's name of the role.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Subscribe => "subscribe",
            Self::Both => "both",
        }
    }
}

/// What a peer receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Receives {
    /// Nothing (a pure publisher).
    Nothing,
    /// Every stream of every other peer of its room (`subscribe: "all"`).
    AllOfRoom,
    /// The audio of the listed peers and, if `follows_speaker`, the video of
    /// the current speaker of the [`SwitchPlan`].
    Explicit {
        /// Peers whose audio it receives.
        audio_from: Vec<usize>,
        /// Receives the rotating speaker's video.
        follows_speaker: bool,
    },
    /// Last-N slots (`{"slots": {"video": N, "audio": M}}`): the node fills
    /// them with the room's recent and loud speakers, never the peer itself.
    Slots {
        /// Video slots.
        video: u16,
        /// Audio slots.
        audio: u16,
    },
}

/// One peer: one endpoint in the node, one UDP socket here.
#[derive(Debug, Clone)]
pub struct PeerPlan {
    /// Index of its room.
    pub room: usize,
    /// Its endpoint role.
    pub role: Role,
    /// The streams it publishes (indices into [`Plan::streams`]).
    pub publishes: Vec<usize>,
    /// What it receives.
    pub receives: Receives,
}

/// One published RTP stream.
#[derive(Debug, Clone, Copy)]
pub struct StreamPlan {
    /// The publishing peer (its index is the marker's publisher index).
    pub peer: usize,
    /// Audio or video.
    pub kind: Kind,
    /// RTP SSRC.
    pub ssrc: u32,
    /// RTP payload type.
    pub payload_type: u8,
    /// When its frames or packets are due.
    pub cadence: Cadence,
    /// Video bitrate in kbit/s (unused for audio).
    pub kbps: u32,
    /// Simulcast layer: 0 = lowest (or the only layer).
    pub layer: u8,
    /// For a simulcast track's upper layers: the SSRC of its first layer
    /// (the API's `layer_of`).
    pub layer_of: Option<u32>,
    /// One of several layers of a simulcast track.
    pub simulcast: bool,
    /// Video with VP8 payload descriptors and keyframes ([`super::vp8`]).
    pub vp8: bool,
    /// Audio carrying the RFC 6464 audio level (extension
    /// [`AUDIO_LEVEL_EXTENSION`]) of the [`TalkPlan`].
    pub audio_level: bool,
}

impl StreamPlan {
    /// A stream of one layer, no VP8 framing, no audio level.
    fn plain(peer: usize, kind: Kind, ssrc: u32, cadence: Cadence, kbps: u32) -> Self {
        Self {
            peer,
            kind,
            ssrc,
            payload_type: match kind {
                Kind::Audio => AUDIO_PT,
                Kind::Video => VIDEO_PT,
            },
            cadence,
            kbps,
            layer: 0,
            layer_of: None,
            simulcast: false,
            vp8: false,
            audio_level: false,
        }
    }
}

/// Header extension id of the RFC 6464 audio level in last-N audio (the
/// endpoint's `audio_level_extension`).
pub const AUDIO_LEVEL_EXTENSION: u8 = 1;

/// Number of layers of a simulcast track.
pub const SIMULCAST_LAYERS: usize = 3;

/// Bitrates of the three layers of a simulcast track whose top layer runs
/// at `kbps`: a tenth, a third and all of it (150/500/1500 for 1500), at
/// least 1 kbit/s each.
pub fn layer_kbps(kbps: u32) -> [u32; SIMULCAST_LAYERS] {
    [(kbps / 10).max(1), (kbps / 3).max(1), kbps.max(1)]
}

/// SSRC of layer `layer` of a simulcast track whose first layer is `first`:
/// bits 29 and 30 flipped by the layer (the RTX SSRC flips bit 31).
pub fn layer_ssrc(first: u32, layer: u8) -> u32 {
    first ^ (u32::from(layer & 3) << 29)
}

/// The whole run's topology.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Number of rooms.
    pub rooms: usize,
    /// Every peer; a peer's index is its publisher index in payload markers.
    pub peers: Vec<PeerPlan>,
    /// Every published stream.
    pub streams: Vec<StreamPlan>,
    /// The active-speaker rotation, if the scenario has one.
    pub switch: Option<SwitchPlan>,
    /// The talkers of a last-N run, if the scenario has them.
    pub talk: Option<TalkPlan>,
}

/// SSRC of stream `kind` of `peer`, offset by a per-run `base` so two runs
/// against one node do not collide.
fn ssrc(base: u32, peer: usize, kind: Kind) -> u32 {
    let n = base
        .wrapping_add(peer as u32 * 2)
        .wrapping_add(u32::from(kind == Kind::Audio));
    if n == 0 { 0x5eed } else { n }
}

impl Plan {
    /// `rooms` rooms, each with `publishers` publishers (a video stream each,
    /// plus audio if `audio`) then `subscribers` subscribers with
    /// `subscribe: "all"`. Streams of each kind are staggered over one period
    /// across all rooms. With `simulcast` each publisher's video is a track
    /// of [`SIMULCAST_LAYERS`] VP8 layers at [`layer_kbps`]`(video_kbps)`
    /// ([`layer_ssrc`]), all on the stagger of the track.
    pub fn rooms(
        rooms: usize,
        publishers: usize,
        subscribers: usize,
        video_kbps: u32,
        audio: bool,
        simulcast: bool,
        ssrc_base: u32,
    ) -> Self {
        let total_publishers = rooms * publishers;
        let mut plan = Self {
            rooms,
            peers: Vec::with_capacity(rooms * (publishers + subscribers)),
            streams: Vec::new(),
            switch: None,
            talk: None,
        };
        let mut publisher_no = 0;
        for room in 0..rooms {
            for _ in 0..publishers {
                let peer = plan.peers.len();
                let mut publishes = Vec::with_capacity(SIMULCAST_LAYERS + 1);
                let video_ssrc = ssrc(ssrc_base, peer, Kind::Video);
                let cadence = Cadence::staggered(0, VIDEO_FPS, publisher_no, total_publishers);
                if simulcast {
                    for (layer, kbps) in (0u8..).zip(layer_kbps(video_kbps)) {
                        publishes.push(plan.streams.len());
                        plan.streams.push(StreamPlan {
                            layer,
                            layer_of: (layer > 0).then_some(video_ssrc),
                            simulcast: true,
                            vp8: true,
                            ..StreamPlan::plain(
                                peer,
                                Kind::Video,
                                layer_ssrc(video_ssrc, layer),
                                cadence,
                                kbps,
                            )
                        });
                    }
                } else {
                    publishes.push(plan.streams.len());
                    plan.streams.push(StreamPlan::plain(
                        peer,
                        Kind::Video,
                        video_ssrc,
                        cadence,
                        video_kbps,
                    ));
                }
                if audio {
                    publishes.push(plan.streams.len());
                    plan.streams.push(StreamPlan::plain(
                        peer,
                        Kind::Audio,
                        ssrc(ssrc_base, peer, Kind::Audio),
                        Cadence::staggered(0, AUDIO_PPS, publisher_no, total_publishers),
                        0,
                    ));
                }
                publisher_no += 1;
                plan.peers.push(PeerPlan {
                    room,
                    role: Role::Publish,
                    publishes,
                    receives: Receives::Nothing,
                });
            }
            for _ in 0..subscribers {
                plan.peers.push(PeerPlan {
                    room,
                    role: Role::Subscribe,
                    publishes: Vec::new(),
                    receives: Receives::AllOfRoom,
                });
            }
        }
        plan
    }

    /// The capacity plan's meeting: one room of `participants` peers with
    /// role `both`; peers `0..speakers` publish video at `video_kbps` and
    /// audio, the others audio only. Peer `i` receives the audio of peers
    /// `i+1`, `i+2`, `i+3` (mod `participants`, never itself) and the video of
    /// the rotating speaker.
    pub fn seed_meeting(
        participants: usize,
        speakers: usize,
        video_kbps: u32,
        ssrc_base: u32,
        switch: SwitchTiming,
        duration_ns: u64,
    ) -> Self {
        let speakers = speakers.min(participants);
        let mut plan = Self {
            rooms: 1,
            peers: Vec::with_capacity(participants),
            streams: Vec::new(),
            switch: None,
            talk: None,
        };
        for peer in 0..participants {
            let mut publishes = Vec::new();
            if peer < speakers {
                publishes.push(plan.streams.len());
                plan.streams.push(StreamPlan::plain(
                    peer,
                    Kind::Video,
                    ssrc(ssrc_base, peer, Kind::Video),
                    Cadence::staggered(0, VIDEO_FPS, peer, speakers),
                    video_kbps,
                ));
            }
            publishes.push(plan.streams.len());
            plan.streams.push(StreamPlan::plain(
                peer,
                Kind::Audio,
                ssrc(ssrc_base, peer, Kind::Audio),
                Cadence::staggered(0, AUDIO_PPS, peer, participants),
                0,
            ));
            let audio_from = (1..=3)
                .map(|d| (peer + d) % participants)
                .filter(|&p| p != peer)
                .collect::<Vec<_>>();
            let mut audio_from_unique = Vec::with_capacity(3);
            for p in audio_from {
                if !audio_from_unique.contains(&p) {
                    audio_from_unique.push(p);
                }
            }
            plan.peers.push(PeerPlan {
                room: 0,
                role: Role::Both,
                publishes,
                receives: Receives::Explicit {
                    audio_from: audio_from_unique,
                    follows_speaker: speakers > 1 || (speakers == 1 && peer != 0),
                },
            });
        }
        plan.switch = Some(SwitchPlan::new(
            switch,
            duration_ns,
            (0..speakers).collect(),
        ));
        plan
    }

    /// The last-N meeting: one room of `participants` peers with role
    /// `both`, each publishing VP8 video at `video_kbps` and audio with the
    /// RFC 6464 level of the [`TalkPlan`] `talk`, each receiving
    /// `video_slots` and `audio_slots` last-N slots.
    pub fn last_n(
        participants: usize,
        video_kbps: u32,
        video_slots: u16,
        audio_slots: u16,
        ssrc_base: u32,
        talk: TalkPlan,
    ) -> Self {
        let mut plan = Self {
            rooms: 1,
            peers: Vec::with_capacity(participants),
            streams: Vec::with_capacity(2 * participants),
            switch: None,
            talk: Some(talk),
        };
        for peer in 0..participants {
            let video = plan.streams.len();
            plan.streams.push(StreamPlan {
                vp8: true,
                ..StreamPlan::plain(
                    peer,
                    Kind::Video,
                    ssrc(ssrc_base, peer, Kind::Video),
                    Cadence::staggered(0, VIDEO_FPS, peer, participants),
                    video_kbps,
                )
            });
            plan.streams.push(StreamPlan {
                audio_level: true,
                ..StreamPlan::plain(
                    peer,
                    Kind::Audio,
                    ssrc(ssrc_base, peer, Kind::Audio),
                    Cadence::staggered(0, AUDIO_PPS, peer, participants),
                    0,
                )
            });
            plan.peers.push(PeerPlan {
                room: 0,
                role: Role::Both,
                publishes: vec![video, video + 1],
                receives: Receives::Slots {
                    video: video_slots,
                    audio: audio_slots,
                },
            });
        }
        plan
    }

    /// Whether `viewer` counts its consumers of `kind` by their sequence
    /// number span rather than by what was sent (see the module doc): every
    /// consumer of a last-N viewer, and video consumers of a subscriber of
    /// simulcast tracks.
    pub fn span_counted(&self, viewer: usize, kind: Kind) -> bool {
        match self.peers.get(viewer).map(|p| &p.receives) {
            Some(Receives::Slots { .. }) => true,
            Some(Receives::AllOfRoom) => {
                kind == Kind::Video && self.streams.iter().any(|s| s.simulcast)
            }
            _ => false,
        }
    }

    /// Re-times every video stream to `fps` frames per second (its stagger
    /// scaled to the new frame period; bitrates unchanged).
    pub fn set_video_fps(&mut self, fps: u64) {
        let fps = fps.max(1);
        for s in self.streams.iter_mut().filter(|s| s.kind == Kind::Video) {
            let c = s.cadence;
            s.cadence = Cadence {
                offset_ns: (u128::from(c.offset_ns) * u128::from(c.per_second) / u128::from(fps))
                    as u64,
                per_second: fps,
            };
        }
    }

    /// The stream of `kind` that `peer` publishes, if any.
    pub fn stream_of(&self, peer: usize, kind: Kind) -> Option<usize> {
        self.peers
            .get(peer)?
            .publishes
            .iter()
            .copied()
            .find(|&s| self.streams[s].kind == kind)
    }

    /// Streams `viewer` receives for the whole run (not the switched video,
    /// not simulcast layers, not slots: see [`Plan::span_counted`]).
    pub fn static_streams(&self, viewer: usize) -> Vec<usize> {
        match &self.peers[viewer].receives {
            Receives::Nothing | Receives::Slots { .. } => Vec::new(),
            Receives::AllOfRoom => {
                let room = self.peers[viewer].room;
                (0..self.streams.len())
                    .filter(|&s| {
                        let p = self.streams[s].peer;
                        p != viewer && self.peers[p].room == room && !self.streams[s].simulcast
                    })
                    .collect()
            }
            Receives::Explicit { audio_from, .. } => audio_from
                .iter()
                .filter_map(|&p| self.stream_of(p, Kind::Audio))
                .collect(),
        }
    }

    /// The explicit subscription of `viewer` during speaker period `k`:
    /// producer SSRCs of (video, audio). `None` for `AllOfRoom`/`Nothing`.
    pub fn subscription(&self, viewer: usize, k: usize) -> Option<(Vec<u32>, Vec<u32>)> {
        let Receives::Explicit {
            follows_speaker, ..
        } = &self.peers[viewer].receives
        else {
            return None;
        };
        let audio = self
            .static_streams(viewer)
            .into_iter()
            .map(|s| self.streams[s].ssrc)
            .collect();
        let video = match (&self.switch, follows_speaker) {
            (Some(sw), true) => self
                .stream_of(sw.speaker(k, viewer), Kind::Video)
                .map(|s| vec![self.streams[s].ssrc])
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        Some((video, audio))
    }

    /// Whether `viewer` receives anything.
    pub fn is_receiver(&self, viewer: usize) -> bool {
        self.peers[viewer].receives != Receives::Nothing
    }

    /// Classifies a decrypted packet `viewer` received, by its marker.
    pub fn attribute(&self, viewer: usize, m: &Marker) -> Attribution {
        let publisher = m.publisher as usize;
        if publisher == viewer || self.stream_of(publisher, m.kind).is_none() {
            return Attribution::Misrouted;
        }
        match &self.peers[viewer].receives {
            Receives::Nothing => Attribution::Misrouted,
            // Anyone but the viewer (checked above) may fill a slot.
            Receives::Slots { .. } => Attribution::Counted,
            Receives::AllOfRoom => {
                if self.peers[publisher].room == self.peers[viewer].room {
                    Attribution::Counted
                } else {
                    Attribution::Misrouted
                }
            }
            Receives::Explicit {
                audio_from,
                follows_speaker,
            } => match (m.kind, &self.switch) {
                (Kind::Audio, _) if audio_from.contains(&publisher) => Attribution::Counted,
                (Kind::Video, Some(sw)) if *follows_speaker => {
                    if sw.excluded(m.sent_ns) {
                        Attribution::Excluded
                    } else if sw.speaker(sw.period_of(m.sent_ns), viewer) == publisher {
                        Attribution::Counted
                    } else {
                        Attribution::Misrouted
                    }
                }
                _ => Attribution::Misrouted,
            },
        }
    }

    /// Packets `viewer` should receive given what was sent: every packet of
    /// its static streams, plus, per speaker period, the packets the period's
    /// speaker sent outside the switch windows.
    pub fn expected(&self, viewer: usize, sent: &Sent) -> u64 {
        let mut n: u64 = self
            .static_streams(viewer)
            .iter()
            .map(|&s| sent.total[s])
            .sum();
        if let (
            Receives::Explicit {
                follows_speaker: true,
                ..
            },
            Some(sw),
        ) = (&self.peers[viewer].receives, &self.switch)
        {
            for k in 0..sw.periods() {
                if let Some(s) = self.stream_of(sw.speaker(k, viewer), Kind::Video) {
                    n += sent
                        .counted
                        .get(s)
                        .and_then(|c| c.get(k))
                        .copied()
                        .unwrap_or(0);
                }
            }
        }
        n
    }
}

/// How a received, decrypted packet counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribution {
    /// A packet the receiver should get: counted against the expectation.
    Counted,
    /// Switched video sent inside a switch window: counted in neither the
    /// received nor the expected packets.
    Excluded,
    /// A packet this receiver should not have got.
    Misrouted,
}

/// What the publishers sent, as the expected-count arithmetic needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sent {
    /// Packets sent per stream.
    pub total: Vec<u64>,
    /// Per stream and speaker period: packets sent outside the switch windows
    /// (empty without a [`SwitchPlan`]).
    pub counted: Vec<Vec<u64>>,
}

/// Timing of the active-speaker rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwitchTiming {
    /// Time between switches.
    pub period_ns: u64,
    /// The time all subscription changes of one switch must be done in.
    pub budget_ns: u64,
    /// Margin excluded before each switch and after its budget.
    pub grace_ns: u64,
}

/// The active-speaker rotation: speaker period `k` covers
/// `[k * period, (k + 1) * period)` since the run's origin; switch `k`
/// (for `k >= 1`) changes every viewer's video subscription starting at
/// `k * period` and must complete within the budget. Video sent in
/// `[k * period - grace, k * period + budget + grace)` is excluded from both
/// sides of the count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchPlan {
    /// The timing.
    pub timing: SwitchTiming,
    /// Number of switches within the run (`k = 1..=switches`).
    pub switches: usize,
    /// Peers publishing video, in rotation order.
    pub speakers: Vec<usize>,
}

impl SwitchPlan {
    /// The rotation over `speakers` for a run of `duration_ns`.
    pub fn new(timing: SwitchTiming, duration_ns: u64, speakers: Vec<usize>) -> Self {
        let period = timing.period_ns.max(1);
        Self {
            timing,
            switches: (duration_ns.saturating_sub(1) / period) as usize,
            speakers,
        }
    }

    /// Number of speaker periods (`switches + 1`).
    pub fn periods(&self) -> usize {
        self.switches + 1
    }

    /// When switch `k` starts, in ns since the origin.
    pub fn switch_at(&self, k: usize) -> u64 {
        k as u64 * self.timing.period_ns
    }

    /// The speaker period of time `t_ns`.
    pub fn period_of(&self, t_ns: u64) -> usize {
        ((t_ns / self.timing.period_ns.max(1)) as usize).min(self.switches)
    }

    /// Whether video sent at `t_ns` falls into a switch window.
    pub fn excluded(&self, t_ns: u64) -> bool {
        let period = self.timing.period_ns.max(1);
        let k = (t_ns / period) as usize;
        let into = t_ns % period;
        let after_switch =
            k >= 1 && k <= self.switches && into < self.timing.budget_ns + self.timing.grace_ns;
        let before_switch =
            k < self.switches && into >= period.saturating_sub(self.timing.grace_ns);
        after_switch || before_switch
    }

    /// The peer whose video `viewer` receives in period `k`: speaker
    /// `k mod speakers`, or the next one when that is the viewer itself.
    pub fn speaker(&self, k: usize, viewer: usize) -> usize {
        let n = self.speakers.len();
        if n == 0 {
            return usize::MAX;
        }
        let s = self.speakers[k % n];
        if s == viewer {
            self.speakers[(k + 1) % n]
        } else {
            s
        }
    }
}

/// The talkers of a last-N run. Period `k` covers `[k × period, (k + 1) ×
/// period)` since the run's origin. In period 0 everybody sends room noise
/// (the node's speaker detection learns each participant's noise floor
/// from it: a participant loud from its first packet would set its floor
/// at its speech); in period `k ≥ 1` the `talkers` peers
/// `P − 1 − ((k − 1) × talkers + j) mod P` (`j < talkers`) send speech
/// levels and everybody else room noise ([`TalkPlan::level_byte`]). Talkers are counted from the end of
/// the join order, so a new talker is never one of the slots the node
/// fills by join order before anyone spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TalkPlan {
    /// Length of a period, ns.
    pub period_ns: u64,
    /// Talkers per period.
    pub talkers: usize,
    /// Participants (peers `0..participants`).
    pub participants: usize,
    /// Length of the run, ns.
    pub duration_ns: u64,
}

impl TalkPlan {
    /// The period of time `t_ns`.
    pub fn period_of(&self, t_ns: u64) -> usize {
        (t_ns / self.period_ns.max(1)) as usize
    }

    /// When period `k` starts, ns since the origin.
    pub fn start_of(&self, k: usize) -> u64 {
        (k as u64).saturating_mul(self.period_ns)
    }

    /// Periods that start within the run.
    pub fn periods(&self) -> usize {
        self.duration_ns.div_ceil(self.period_ns.max(1)) as usize
    }

    /// Whether period `k` has talkers and ends within the run: the periods
    /// whose switches are measured.
    pub fn measured(&self, k: usize) -> bool {
        k >= 1 && self.start_of(k + 1) <= self.duration_ns
    }

    /// Talker `j` of period `k`; `None` in period 0 or for `j ≥ talkers`.
    pub fn talker(&self, k: usize, j: usize) -> Option<usize> {
        let n = self.participants;
        if k == 0 || j >= self.talkers || n == 0 {
            return None;
        }
        let offset = ((k - 1) as u64 * self.talkers as u64 + j as u64) % n as u64;
        Some(n - 1 - offset as usize)
    }

    /// Which talker of period `k` `peer` is, if it talks then.
    pub fn talker_index(&self, k: usize, peer: usize) -> Option<usize> {
        let n = self.participants as u64;
        if k == 0 || n == 0 || peer >= self.participants {
            return None;
        }
        let from_end = (n - 1 - peer as u64) % n;
        let offset = ((k - 1) as u64 * self.talkers as u64) % n;
        let j = ((from_end + n - offset) % n) as usize;
        (j < self.talkers).then_some(j)
    }

    /// Whether `peer` talks at `t_ns`.
    pub fn talking(&self, peer: usize, t_ns: u64) -> bool {
        self.talker_index(self.period_of(t_ns), peer).is_some()
    }

    /// The RFC 6464 byte of audio packet `unit` of a peer: speech at −22 to
    /// −34 dBov with the voice bit when `talking`, else room noise at −70
    /// dBov. Not digital silence (−127 dBov): the node's detector learns a
    /// noise floor only from levels above it, and would take a talker's
    /// first speech for its floor.
    pub fn level_byte(talking: bool, unit: u64) -> u8 {
        if talking {
            0x80 | (22 + (unit * 7 % 13) as u8)
        } else {
            70
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;

    fn timing() -> SwitchTiming {
        SwitchTiming {
            period_ns: 5 * SEC,
            budget_ns: 1000 * MS,
            grace_ns: 200 * MS,
        }
    }

    #[test]
    fn rooms_topology() {
        let plan = Plan::rooms(2, 2, 3, 2000, true, false, 1000);
        assert_eq!(plan.peers.len(), 10);
        assert_eq!(plan.streams.len(), 8);
        assert_eq!(plan.peers[0].role, Role::Publish);
        assert_eq!(plan.peers[2].role, Role::Subscribe);
        assert_eq!(plan.peers[5].room, 1);
        assert_eq!(plan.static_streams(2), vec![0, 1, 2, 3]);
        assert_eq!(plan.static_streams(9), vec![4, 5, 6, 7]);
        assert_eq!(plan.static_streams(0), Vec::<usize>::new());
        let ssrcs: std::collections::HashSet<u32> = plan.streams.iter().map(|s| s.ssrc).collect();
        assert_eq!(ssrcs.len(), 8, "unique SSRCs");
        // Video of the 4 publishers staggered over one frame period.
        let offsets: Vec<u64> = [0, 2, 4, 6]
            .iter()
            .map(|&s| plan.streams[s].cadence.offset_ns)
            .collect();
        assert_eq!(offsets, vec![0, 8_333_333, 16_666_666, 24_999_999]);
        let mut slow = plan.clone();
        slow.set_video_fps(10);
        let offsets: Vec<(u64, u64)> = [0, 2, 4, 6, 1]
            .iter()
            .map(|&s| {
                (
                    slow.streams[s].cadence.offset_ns,
                    slow.streams[s].cadence.per_second,
                )
            })
            .collect();
        assert_eq!(
            offsets,
            vec![
                (0, 10),
                (24_999_999, 10),
                (49_999_998, 10),
                (74_999_997, 10),
                (0, 50)
            ],
            "video staggered over the new frame period, audio untouched"
        );
        assert_eq!(plan.subscription(2, 0), None);
    }

    #[test]
    fn rooms_expected_is_room_tx_times_subscribers() {
        let plan = Plan::rooms(2, 2, 3, 2000, false, false, 1000);
        let sent = Sent {
            total: vec![100, 200, 1000, 2000],
            counted: Vec::new(),
        };
        let total: u64 = (0..plan.peers.len()).map(|v| plan.expected(v, &sent)).sum();
        assert_eq!(total, (100 + 200) * 3 + (1000 + 2000) * 3);
        assert_eq!(plan.expected(0, &sent), 0);
    }

    #[test]
    fn meeting_topology_and_subscriptions() {
        let plan = Plan::seed_meeting(500, 50, 2000, 7, timing(), 60 * SEC);
        assert_eq!(plan.peers.len(), 500);
        assert_eq!(plan.streams.len(), 550);
        assert!(plan.peers.iter().all(|p| p.role == Role::Both));
        assert_eq!(plan.stream_of(49, Kind::Video), Some(49 * 2));
        assert_eq!(plan.stream_of(50, Kind::Video), None);
        let Receives::Explicit { audio_from, .. } = &plan.peers[498].receives else {
            panic!("explicit")
        };
        assert_eq!(audio_from, &vec![499, 0, 1]);
        let sw = plan.switch.as_ref().expect("meeting has a rotation");
        assert_eq!(sw.switches, 11);
        // Viewer 3 in period 3 would see itself: gets speaker 4 instead.
        assert_eq!(sw.speaker(3, 3), 4);
        assert_eq!(sw.speaker(3, 100), 3);
        assert_eq!(sw.speaker(49, 49), 0);
        assert_eq!(sw.speaker(53, 7), 3);
        let (video, audio) = plan.subscription(3, 3).expect("explicit");
        assert_eq!(
            video,
            vec![plan.streams[plan.stream_of(4, Kind::Video).unwrap()].ssrc]
        );
        assert_eq!(audio.len(), 3);
        // Audio-only peers 50.. have audio streams at 100 + (peer - 50).
        assert_eq!(plan.stream_of(60, Kind::Audio), Some(110));
    }

    #[test]
    fn switch_windows() {
        let sw = SwitchPlan::new(timing(), 12 * SEC, vec![0, 1]);
        assert_eq!(sw.switches, 2);
        assert_eq!(sw.periods(), 3);
        assert_eq!(sw.switch_at(2), 10 * SEC);
        let cases = [
            (0, false, 0),
            (4800 * MS - 1, false, 0),
            (4800 * MS, true, 0),
            (5 * SEC, true, 1),
            (6200 * MS - 1, true, 1),
            (6200 * MS, false, 1),
            (9800 * MS, true, 1),
            (11_199 * MS, true, 2),
            (11_200 * MS, false, 2),
            // No switch at 15 s: nothing excluded before it.
            (14_900 * MS, false, 2),
            (16 * SEC, false, 2),
        ];
        for (t, excluded, period) in cases {
            assert_eq!(sw.excluded(t), excluded, "t={t}");
            assert_eq!(sw.period_of(t), period, "t={t}");
        }
        // A 10 s run has one switch, at 5 s.
        assert_eq!(SwitchPlan::new(timing(), 10 * SEC, vec![0]).switches, 1);
    }

    #[test]
    fn meeting_expected_and_attribution() {
        let plan = Plan::seed_meeting(5, 2, 2000, 7, timing(), 12 * SEC);
        // Streams: 0 = video of 0, 1 = audio of 0, 2 = video of 1, 3 = audio of 1,
        // 4.. = audio of 2, 3, 4.
        assert_eq!(plan.stream_of(1, Kind::Video), Some(2));
        let sent = Sent {
            total: vec![1000, 50, 2000, 60, 70, 80, 90],
            counted: vec![
                vec![10, 11, 12],
                vec![0; 3],
                vec![20, 21, 22],
                vec![0; 3],
                vec![0; 3],
                vec![0; 3],
                vec![0; 3],
            ],
        };
        // Viewer 4: audio of 0, 1, 2; video of speaker 0, 1, 0.
        assert_eq!(plan.expected(4, &sent), 50 + 60 + 70 + 10 + 21 + 12);
        // Viewer 0: audio of 1, 2, 3; video 1 (not itself), 1, 1.
        assert_eq!(plan.expected(0, &sent), 60 + 70 + 80 + 20 + 21 + 22);
        let m = |publisher: u32, kind, sent_ns| Marker {
            publisher,
            kind,
            layer: 0,
            seq: 0,
            sent_ns,
        };
        assert_eq!(
            plan.attribute(0, &m(1, Kind::Video, SEC)),
            Attribution::Counted
        );
        assert_eq!(
            plan.attribute(0, &m(0, Kind::Video, SEC)),
            Attribution::Misrouted
        );
        assert_eq!(
            plan.attribute(4, &m(1, Kind::Video, SEC)),
            Attribution::Misrouted
        );
        assert_eq!(
            plan.attribute(4, &m(1, Kind::Video, 7 * SEC)),
            Attribution::Counted
        );
        assert_eq!(
            plan.attribute(4, &m(1, Kind::Video, 5 * SEC)),
            Attribution::Excluded
        );
        assert_eq!(
            plan.attribute(4, &m(2, Kind::Audio, SEC)),
            Attribution::Counted
        );
        assert_eq!(
            plan.attribute(4, &m(3, Kind::Audio, SEC)),
            Attribution::Misrouted
        );
        assert_eq!(
            plan.attribute(4, &m(2, Kind::Video, SEC)),
            Attribution::Misrouted
        );
        assert_eq!(
            plan.attribute(4, &m(99, Kind::Audio, SEC)),
            Attribution::Misrouted
        );
    }

    #[test]
    fn rooms_attribution() {
        let plan = Plan::rooms(2, 1, 1, 2000, false, false, 1);
        let m = |publisher| Marker {
            publisher,
            kind: Kind::Video,
            layer: 0,
            seq: 0,
            sent_ns: 0,
        };
        assert_eq!(plan.attribute(1, &m(0)), Attribution::Counted);
        assert_eq!(plan.attribute(1, &m(2)), Attribution::Misrouted);
        assert_eq!(plan.attribute(1, &m(1)), Attribution::Misrouted);
        let audio = Marker {
            kind: Kind::Audio,
            ..m(0)
        };
        assert_eq!(
            plan.attribute(1, &audio),
            Attribution::Misrouted,
            "no audio published"
        );
    }

    #[test]
    fn simulcast_rooms_span_count_their_video() {
        let plan = Plan::rooms(1, 2, 2, 1500, true, true, 0x1000);
        // Per publisher: three layers then audio.
        assert_eq!(plan.streams.len(), 8);
        let first = plan.streams[0].ssrc;
        let layers: Vec<(u8, u32, Option<u32>, u32)> = plan.streams[..3]
            .iter()
            .map(|s| (s.layer, s.ssrc, s.layer_of, s.kbps))
            .collect();
        assert_eq!(
            layers,
            vec![
                (0, first, None, 150),
                (1, first ^ 0x2000_0000, Some(first), 500),
                (2, first ^ 0x4000_0000, Some(first), 1500),
            ]
        );
        assert!(plan.streams[..3].iter().all(|s| s.simulcast && s.vp8));
        assert!(!plan.streams[3].simulcast && plan.streams[3].kind == Kind::Audio);
        let ssrcs: std::collections::HashSet<u32> = plan.streams.iter().map(|s| s.ssrc).collect();
        assert_eq!(ssrcs.len(), 8, "unique SSRCs");
        // Subscribers expect the audio by count, the video by span.
        assert_eq!(plan.static_streams(2), vec![3, 7]);
        assert!(plan.span_counted(2, Kind::Video));
        assert!(!plan.span_counted(2, Kind::Audio));
        let sent = Sent {
            total: vec![100, 200, 300, 50, 100, 200, 300, 50],
            counted: Vec::new(),
        };
        assert_eq!(plan.expected(3, &sent), 100);
        assert_eq!(layer_kbps(5), [1, 1, 5]);
        let plain = Plan::rooms(1, 2, 2, 1500, true, false, 0x1000);
        assert!(!plain.span_counted(2, Kind::Video));
    }

    #[test]
    fn last_n_topology_talkers_and_attribution() {
        let talk = TalkPlan {
            period_ns: 3 * SEC,
            talkers: 2,
            participants: 5,
            duration_ns: 10 * SEC,
        };
        let plan = Plan::last_n(5, 100, 4, 2, 0x1000, talk);
        assert_eq!(plan.streams.len(), 10);
        assert!(
            plan.peers
                .iter()
                .all(|p| p.role == Role::Both
                    && p.receives == Receives::Slots { video: 4, audio: 2 })
        );
        assert!(
            plan.streams
                .iter()
                .all(|s| s.vp8 == (s.kind == Kind::Video)
                    && s.audio_level == (s.kind == Kind::Audio))
        );
        assert!(plan.span_counted(0, Kind::Audio) && plan.span_counted(0, Kind::Video));
        assert_eq!(
            plan.expected(
                0,
                &Sent {
                    total: vec![9; 10],
                    counted: Vec::new()
                }
            ),
            0
        );
        assert_eq!(plan.subscription(0, 0), None);
        // Periods 0..=3 start in 10 s; 1 and 2 are measured (3 ends at 12 s).
        assert_eq!(talk.periods(), 4);
        let measured: Vec<usize> = (0..5).filter(|&k| talk.measured(k)).collect();
        assert_eq!(measured, vec![1, 2]);
        // Period 0 is silent; then 4, 3; then 2, 1; then 0, 4 (wrapping).
        let talkers = |k| (0..3).filter_map(|j| talk.talker(k, j)).collect::<Vec<_>>();
        assert_eq!(talkers(0), Vec::<usize>::new());
        assert_eq!(talkers(1), vec![4, 3]);
        assert_eq!(talkers(2), vec![2, 1]);
        assert_eq!(talkers(3), vec![0, 4]);
        for k in 0..8 {
            for p in 0..6 {
                let j = talk.talker_index(k, p);
                assert_eq!(
                    j.and_then(|j| talk.talker(k, j)),
                    j.map(|_| p),
                    "k={k} p={p}"
                );
                assert_eq!(j.is_some(), talkers(k).contains(&p), "k={k} p={p}");
            }
        }
        assert!(talk.talking(4, 3 * SEC) && !talk.talking(4, 3 * SEC - 1));
        assert!(!talk.talking(2, 5 * SEC) && talk.talking(2, 6 * SEC));
        assert_eq!(TalkPlan::level_byte(false, 9), 70);
        for unit in 0..50 {
            let b = TalkPlan::level_byte(true, unit);
            assert!(b & 0x80 != 0 && (22..=34).contains(&(b & 0x7f)), "{b:#x}");
        }
        let m = |publisher| Marker {
            publisher,
            kind: Kind::Audio,
            layer: 0,
            seq: 0,
            sent_ns: 0,
        };
        assert_eq!(plan.attribute(1, &m(0)), Attribution::Counted);
        assert_eq!(plan.attribute(1, &m(1)), Attribution::Misrouted, "itself");
        assert_eq!(plan.attribute(1, &m(7)), Attribution::Misrouted, "nobody");
    }
}
