//! Speakers and last-N slots: each room's [`SpeakerDetector`] fed from its
//! publishers' RFC 6464 audio levels, the speaker events, and the
//! [`Subscription::Slots`] subscribers re-pointed as speakers change (see
//! the router's "Speakers and slots").
//!
//! # Cost
//! Per audio packet: one extension lookup, the room's and the speaker's
//! hash lookups, a comparison with the room's decision deadline. Per
//! decision (every ~300 ms of a room's audio): the detector's walk over its
//! speakers and a fixed-size comparison of who is talking; nothing
//! allocates unless something changed. A change re-evaluates the room's
//! `Slots` subscribers: one ranking of the room (two hash maps of at most
//! the largest slot count entries) and, per subscriber, a sorted list of
//! the room's tracks: O(subscribers × tracks log tracks), allocating, at
//! most once per decision.

use std::collections::HashMap;
use std::time::Instant;

use super::stats::Counter;
use super::{Endpoint, EndpointId, Event, MediaKind, RoomId, Router, RouterError, Subscription};
use crate::speaker::{SpeakerDetector, SpeakerError};
use crate::wire::rtp::{RtpPacket, parse_audio_level};

/// Most speakers one [`Event::ActiveSpeakers`] names.
pub const ACTIVE_SPEAKERS: usize = 8;

/// A participant talking, as [`Event::ActiveSpeakers`] names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveSpeaker {
    /// One of its audio publishers (the first to join).
    pub endpoint: EndpointId,
    /// Its participant id, when its endpoints carry one.
    pub participant: Option<u64>,
}

/// Up to [`ACTIVE_SPEAKERS`] speakers, most recent first: a fixed-size
/// list, so an event never allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpeakerList {
    entries: [ActiveSpeaker; ACTIVE_SPEAKERS],
    len: u8,
}

impl Default for SpeakerList {
    fn default() -> Self {
        Self {
            entries: [ActiveSpeaker {
                endpoint: EndpointId(0),
                participant: None,
            }; ACTIVE_SPEAKERS],
            len: 0,
        }
    }
}

impl SpeakerList {
    /// The speakers.
    pub fn as_slice(&self) -> &[ActiveSpeaker] {
        self.entries
            .get(..usize::from(self.len))
            .unwrap_or_default()
    }

    /// Appends one; false when the list is full.
    fn push(&mut self, speaker: ActiveSpeaker) -> bool {
        let Some(at) = self.entries.get_mut(usize::from(self.len)) else {
            return false;
        };
        *at = speaker;
        self.len += 1;
        true
    }
}

/// Speaker detection of one room.
#[derive(Debug)]
pub(super) struct RoomSpeakers {
    detector: SpeakerDetector,
    /// Speaker key to the audio publisher named for it (and its
    /// participant); sized for the detector's capacity.
    owners: HashMap<u64, (EndpointId, Option<u64>)>,
    /// The keys talking at the last decision, sorted.
    talking: [u64; ACTIVE_SPEAKERS],
    talking_len: usize,
}

impl RoomSpeakers {
    fn new(capacity: usize, now: Instant) -> Self {
        Self {
            detector: SpeakerDetector::new(capacity, now),
            owners: HashMap::with_capacity(capacity),
            talking: [0; ACTIVE_SPEAKERS],
            talking_len: 0,
        }
    }
}

/// Where a room's speakers stand, computed once per re-evaluation for all
/// its `Slots` subscribers.
#[derive(Debug, Default)]
pub(super) struct Ranking {
    /// Speaker key to its position by recency (never-spoke last, in join order).
    recent: HashMap<u64, usize>,
    /// Speaker key to its position by loudness (only those heard lately).
    loud: HashMap<u64, usize>,
}

/// The id an endpoint's audio counts under: its participant, or its own.
fn speaker_key(ep: &Endpoint) -> u64 {
    ep.participant.unwrap_or(ep.id.0)
}

/// Exclusion passed to the detector's orderings where everyone is wanted
/// (a participant id of `u64::MAX` would rank as never having spoken).
const NOBODY: u64 = u64::MAX;

impl Router {
    /// Refuses `Slots` subscriptions over the limits.
    pub(super) fn check_slots(&self, sub: &Subscription) -> Result<(), RouterError> {
        if let Subscription::Slots {
            video,
            audio,
            pinned,
            ..
        } = sub
        {
            let max = self.config.max_consumers_per_endpoint;
            if usize::from(*video) + usize::from(*audio) > max {
                return Err(RouterError::TooMany("consumers per endpoint"));
            }
            if pinned.len() > max {
                return Err(RouterError::TooMany("pinned participants"));
            }
        }
        Ok(())
    }

    /// Marks the consumers of the `Slots` subscriber in `slot` that show a
    /// participant its subscription pins as pinned (for the bandwidth
    /// allocator), the others as not; other subscribers' pins are their
    /// own ([`super::Command::SetPinned`]).
    pub(super) fn mark_pins(&mut self, slot: u32) {
        let Some(ep) = self.endpoint(slot) else {
            return;
        };
        let Subscription::Slots { pinned, .. } = &ep.subscription else {
            return;
        };
        let pins: Vec<bool> = ep
            .consumers
            .iter()
            .map(|c| {
                c.attached
                    && c.source
                        .and_then(|s| self.producers.get(&s))
                        .and_then(|p| self.endpoint(p.endpoint))
                        .is_some_and(|e| pinned.contains(&speaker_key(e)))
            })
            .collect();
        if let Some(ep) = self.endpoint_mut(slot) {
            for (c, pin) in ep.consumers.iter_mut().zip(pins) {
                c.pinned = pin;
            }
        }
    }

    /// The endpoint in `slot` got an audio producer: its participant joins
    /// the room's speakers (once, however many of its endpoints publish
    /// audio).
    pub(super) fn speaker_added(&mut self, slot: u32, now: Instant) {
        let Some(ep) = self.endpoint(slot) else {
            return;
        };
        let (room, key, owner) = (ep.room, speaker_key(ep), (ep.id, ep.participant));
        let capacity = self.config.max_endpoints_per_room;
        let rs = self
            .speakers
            .entry(room)
            .or_insert_with(|| RoomSpeakers::new(capacity, now));
        match rs.detector.add(key) {
            Ok(()) => {
                rs.owners.insert(key, owner);
            }
            Err(SpeakerError::Duplicate) => {}
            Err(_) => self.stats.inc(Counter::SpeakersOverCapacity),
        }
    }

    /// `ep` was removed (it is no longer in its room): its participant
    /// leaves the speakers unless another of its endpoints still publishes
    /// audio, a removed dominant speaker is replaced at once, and the
    /// room's slots are re-evaluated.
    pub(super) fn speaker_left(&mut self, ep: &Endpoint) {
        let room = ep.room;
        let now = self.clock;
        if ep.tracks.iter().any(|t| t.kind == MediaKind::Audio) {
            let key = speaker_key(ep);
            let other = self
                .rooms
                .get(&room)
                .into_iter()
                .flat_map(|r| &r.endpoints)
                .filter_map(|&s| self.endpoint(s))
                .find(|e| {
                    speaker_key(e) == key && e.tracks.iter().any(|t| t.kind == MediaKind::Audio)
                })
                .map(|e| (e.id, e.participant));
            if let Some(rs) = self.speakers.get_mut(&room) {
                match other {
                    Some(next) => {
                        if rs.owners.get(&key).is_some_and(|o| o.0 == ep.id) {
                            rs.owners.insert(key, next);
                        }
                    }
                    None => {
                        let _ = rs.detector.remove(key);
                        rs.owners.remove(&key);
                    }
                }
            }
            if let Some(now) = now {
                // A removed dominant speaker makes the decision due now.
                self.speaker_decision(room, now);
            }
            if self
                .speakers
                .get(&room)
                .is_some_and(|rs| rs.detector.is_empty())
            {
                self.speakers.remove(&room);
            }
        }
        if !ep.tracks.is_empty()
            && let Some(now) = now
        {
            self.refresh_slots(room, now);
        }
    }

    /// Feeds the audio level of an authentic packet of the endpoint in
    /// `slot` to its room's detector and runs the room's decision when due.
    /// Allocates nothing unless the decision changes something.
    pub(super) fn record_audio_level(&mut self, slot: u32, packet: &RtpPacket<'_>, now: Instant) {
        let Some(ep) = self.endpoint(slot) else {
            return;
        };
        let Some(ext) = ep.audio_level_extension else {
            return;
        };
        let (room, key) = (ep.room, speaker_key(ep));
        let Some(rs) = self.speakers.get_mut(&room) else {
            return;
        };
        self.clock = Some(self.clock.map_or(now, |c| c.max(now)));
        let level = packet.extension(ext).and_then(parse_audio_level);
        match level.map(|l| rs.detector.record(key, l, now)) {
            Some(Ok(())) => self.stats.inc(Counter::AudioLevels),
            _ => self.stats.inc(Counter::AudioLevelsMissing),
        }
        if now >= rs.detector.poll_timeout() {
            self.speaker_decision(room, now);
        }
    }

    /// Runs the room's decision if due; publishes what changed and
    /// re-evaluates the room's slots when something did.
    fn speaker_decision(&mut self, room: RoomId, now: Instant) {
        let Some(rs) = self.speakers.get_mut(&room) else {
            return;
        };
        if now < rs.detector.poll_timeout() {
            return;
        }
        self.stats.inc(Counter::SpeakerDecisions);
        let change = rs.detector.poll(now);
        let mut talking = [0u64; ACTIVE_SPEAKERS];
        let n = rs.detector.speaking(&mut talking);
        let mut sorted = talking;
        sorted[..n].sort_unstable();
        let talking_changed = sorted[..n] != rs.talking[..rs.talking_len];
        if let Some(c) = change {
            self.stats.inc(Counter::DominantSpeakerChanges);
            let owner = c.dominant.and_then(|k| rs.owners.get(&k).copied());
            self.events.push(
                Event::DominantSpeaker {
                    room,
                    endpoint: owner.map(|o| o.0),
                    participant: owner.and_then(|o| o.1),
                },
                &mut self.stats,
            );
        }
        if talking_changed {
            rs.talking = sorted;
            rs.talking_len = n;
            self.stats.inc(Counter::ActiveSpeakerChanges);
            let mut speakers = SpeakerList::default();
            for k in &talking[..n] {
                if let Some(&(endpoint, participant)) = rs.owners.get(k) {
                    speakers.push(ActiveSpeaker {
                        endpoint,
                        participant,
                    });
                }
            }
            self.events
                .push(Event::ActiveSpeakers { room, speakers }, &mut self.stats);
        }
        if change.is_some() || talking_changed {
            self.refresh_slots(room, now);
        }
    }

    /// Re-evaluates every `Slots` subscriber of `room`.
    pub(super) fn refresh_slots(&mut self, room: RoomId, now: Instant) {
        let Some(r) = self.rooms.get(&room) else {
            return;
        };
        let subs: Vec<u32> = r
            .endpoints
            .iter()
            .copied()
            .filter(|&s| {
                self.endpoint(s)
                    .is_some_and(|e| matches!(e.subscription, Subscription::Slots { .. }))
            })
            .collect();
        if subs.is_empty() {
            return;
        }
        let ranking = self.ranking(room, &subs);
        for s in subs {
            let before = self.attached_sources(s);
            let wanted = self.slots_wanted(s, &ranking);
            self.apply_consumers(s, &wanted, now);
            let after = self.attached_sources(s);
            let switched = after
                .iter()
                .enumerate()
                .filter(|&(i, a)| a.is_some() && before.get(i) != Some(a))
                .count();
            self.stats.add(Counter::SlotSwitches, switched as u64);
        }
    }

    /// The source each consumer of `slot` is attached to.
    fn attached_sources(&self, slot: u32) -> Vec<Option<u32>> {
        self.endpoint(slot).map_or_else(Vec::new, |e| {
            e.consumers
                .iter()
                .map(|c| c.source.filter(|_| c.attached))
                .collect()
        })
    }

    /// The room's speakers by recency and loudness, as deep as the largest
    /// of `subs`' `Slots` subscriptions needs.
    pub(super) fn ranking(&self, room: RoomId, subs: &[u32]) -> Ranking {
        let Some(rs) = self.speakers.get(&room) else {
            return Ranking::default();
        };
        let mut depth = 0;
        for e in subs.iter().filter_map(|&s| self.endpoint(s)) {
            if let Subscription::Slots {
                video,
                audio,
                pinned,
                ..
            } = &e.subscription
            {
                // Room for the subscriber's own and excluded participant,
                // and pinned ones ranked again.
                let need = usize::from(*video).max(usize::from(*audio)) + pinned.len() + 2;
                depth = depth.max(need);
            }
        }
        let mut buf = vec![0u64; depth.min(rs.detector.len())];
        let n = rs.detector.recent(&mut buf, NOBODY);
        let recent = buf[..n].iter().enumerate().map(|(i, &k)| (k, i)).collect();
        let n = rs.detector.loudest(&mut buf, NOBODY);
        let loud = buf[..n].iter().enumerate().map(|(i, &k)| (k, i)).collect();
        Ranking { recent, loud }
    }

    /// The (kind, producer) of each consumer slot of the `Slots` subscriber
    /// in `slot`: video slots by pin, recency, join order; audio slots by
    /// loudness, recency, join order; an occupant still in the top N keeps
    /// its slot.
    pub(super) fn slots_wanted(
        &self,
        slot: u32,
        ranking: &Ranking,
    ) -> Vec<(MediaKind, Option<u32>)> {
        let Some(ep) = self.endpoint(slot) else {
            return Vec::new();
        };
        let Subscription::Slots {
            video,
            audio,
            pinned,
            exclude,
        } = &ep.subscription
        else {
            return Vec::new();
        };
        let own = speaker_key(ep);
        let mut candidates: Vec<((usize, usize, usize), MediaKind, u32)> = Vec::new();
        let members = self.rooms.get(&ep.room).map_or(&[][..], |r| &r.endpoints);
        for (join, &s) in members.iter().enumerate() {
            let Some(e) = self.endpoint(s).filter(|_| s != slot) else {
                continue;
            };
            let key = speaker_key(e);
            if key == own || Some(key) == *exclude {
                continue;
            }
            let pin = pinned.iter().position(|&p| p == key).unwrap_or(usize::MAX);
            let recent = ranking.recent.get(&key).copied().unwrap_or(usize::MAX);
            let loud = ranking.loud.get(&key).copied().unwrap_or(usize::MAX);
            for t in &e.tracks {
                // One slot per track, not per simulcast layer.
                if self
                    .producers
                    .get(&t.ssrc)
                    .is_none_or(|p| p.group != t.ssrc)
                {
                    continue;
                }
                let rank = match t.kind {
                    MediaKind::Video => (pin, recent, join),
                    MediaKind::Audio => (loud, recent, join),
                };
                candidates.push((rank, t.kind, t.ssrc));
            }
        }
        candidates.sort_by_key(|c| c.0);
        let fill = |kind: MediaKind, n: u16| {
            let top: Vec<u32> = candidates
                .iter()
                .filter(|c| c.1 == kind)
                .take(usize::from(n))
                .map(|c| c.2)
                .collect();
            let mut slots: Vec<Option<u32>> = ep
                .consumers
                .iter()
                .filter(|c| c.kind == kind)
                .map(|c| c.source.filter(|s| c.attached && top.contains(s)))
                .chain(std::iter::repeat(None))
                .take(usize::from(n))
                .collect();
            for &s in &top {
                if slots.contains(&Some(s)) {
                    continue;
                }
                if let Some(free) = slots.iter_mut().find(|x| x.is_none()) {
                    *free = Some(s);
                }
            }
            slots.into_iter().map(move |s| (kind, s))
        };
        fill(MediaKind::Video, *video)
            .chain(fill(MediaKind::Audio, *audio))
            .collect()
    }
}
