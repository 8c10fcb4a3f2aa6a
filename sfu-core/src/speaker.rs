//! Audio levels, dominant speaker identification and last-N ordering for
//! one room.
//!
//! Input is the RFC 6464 client-to-mixer audio level each publisher puts in
//! its audio packets ([`AudioLevel`], read by
//! [`RtpPacket::audio_level`](crate::wire::rtp::RtpPacket::audio_level)).
//! Output is who dominates the room ([`SpeakerDetector::poll`]), who spoke
//! most recently ([`SpeakerDetector::recent`], for video slots) and who is
//! loudest right now ([`SpeakerDetector::loudest`], for audio slots), with
//! [`LastN`] keeping one viewer's slots stable.
//!
//! # Dominant speaker identification
//! The algorithm is Volfin & Cohen, "Dominant Speaker Identification for
//! Multipoint Videoconferencing" (2012), in the form Jitsi Videobridge runs
//! it on RFC 6464 levels (`DominantSpeakerIdentification.java`, ported to
//! mediasoup as `ActiveSpeakerObserver`), with the constants of those
//! implementations:
//! * Each audio packet (one ~20 ms frame) contributes a *loudness*
//!   `127 - dBov` (0 is silence) to a ring of the speaker's last
//!   `N2 × N3 = 50` frames, about one second.
//! * **Noise floor.** A per-speaker minimum level is tracked: any lower
//!   level lowers it at once; it rises only after a 15 s window (750 frames)
//!   of higher levels, to the geometric mean of the old minimum and the
//!   window's minimum. Frames below `minimum + 10` count as silence, so a
//!   constant background (fan, hum, an open microphone in a café) never
//!   looks like speech, whatever its voice-activity bit (which this module
//!   ignores, as Jitsi and mediasoup do) says. The flip side: a speaker whose
//!   background sits more than one sub-band above the lowest level it ever
//!   sent (say a -70 dBov pause, then a -55 dBov room) keeps scoring on the
//!   immediate scale while "quiet", and as dominant speaker is hard to
//!   displace until the floor creeps up.
//! * **Immediate** scale: each frame maps to one of `N1 = 13` sub-bands of
//!   10 levels. **Medium** scale: a block of `N2 = 5` frames (~100 ms) is
//!   the number of its frames above sub-band `MEDIUM_THRESHOLD = 7` (-47
//!   dBov or louder). **Long** scale: the number of the last `N3 = 10` blocks
//!   (~1 s) with more than `LONG_THRESHOLD = 4` such frames.
//! * Each scale's newest value `v` out of `n` gets the speech activity score
//!   `ln C(n, v) + v ln p + (n - v) ln (1 - p) - ln λ + λ v` with `p = 0.5`
//!   and `λ` = 0.78, 24 and 47 for the immediate, medium and long scale,
//!   floored at `1e-10`.
//! * Every [`DECISION_INTERVAL`] (300 ms) each other speaker is compared
//!   with the dominant one by the log ratios of the three scores; it takes
//!   over when they exceed `C1 = 3`, `C2 = 2` and `C3 = 0`. Several
//!   candidates compete on the medium-scale ratio. In practice a switch
//!   needs the dominant speaker quiet for ~100 ms and the candidate's last
//!   second to hold more speech than the dominant speaker's, so a cough does
//!   not switch and a hand-over takes 0.5–0.8 s.
//! * A speaker whose packets stop (muted, DTX, lost) is fed silence: at a
//!   decision, every 20 ms frame missing for more than 40 ms since its last
//!   level counts as a silent frame, so levels older than ~1 s are gone.
//!
//! Two deliberate differences from Jitsi: with no dominant speaker (a new
//! room, or the dominant one was removed) Jitsi nominates an arbitrary
//! speaker, here candidates compete against silence, so the first dominant
//! speaker is someone who spoke and a silent room has none; and the score
//! ratio is `candidate / dominant` as in Jitsi (the mediasoup port read for
//! this module divides the other way round).
//!
//! # Last-N
//! At each decision a speaker who is dominant, or who spoke in at least
//! [`RECENT_MIN_BLOCKS`] of the last ten ~100 ms blocks, gets a fresh
//! recency stamp; the dominant speaker's is the newest. [`SpeakerDetector::recent`]
//! orders speakers by stamp (speakers who never spoke last, by join order),
//! so a viewer's N video slots show the N most recent speakers;
//! [`SpeakerDetector::loudest`] orders speakers heard in the last
//! [`ENERGY_EXPIRY`] by their smoothed noise-gated loudness (ties by
//! recency), for M audio slots. Both skip the viewer's own id. [`LastN`]
//! turns either list into slots that keep their occupant while it stays in
//! the top N: only evicted slots are refilled, so a layout never reshuffles
//! because two on-screen speakers traded places.
//!
//! # Cost
//! [`SpeakerDetector::record`] is one hash lookup and a few byte stores;
//! a decision walks each speaker's 50 frames. Nothing allocates after
//! [`SpeakerDetector::new`] except [`SpeakerDetector::add`] (within the
//! capacity given at construction) and [`LastN::new`];
//! `tests/zero_alloc_speaker.rs` counts.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::wire::rtp::AudioLevel;

/// Time between two dominant speaker decisions.
pub const DECISION_INTERVAL: Duration = Duration::from_millis(300);
/// A speaker silent for longer than this is fed silent frames.
pub const LEVEL_IDLE_TIMEOUT: Duration = Duration::from_millis(40);
/// Audio frame duration one level stands for.
pub const FRAME: Duration = Duration::from_millis(20);
/// A speaker not heard for longer than this is left out of
/// [`SpeakerDetector::loudest`].
pub const ENERGY_EXPIRY: Duration = Duration::from_millis(150);
/// Loud ~100 ms blocks in the last second that count as having spoken for
/// [`SpeakerDetector::recent`]: three, so a cough of 200 ms or less does
/// not reorder the last-N list.
pub const RECENT_MIN_BLOCKS: u8 = 3;

/// Threshold of the immediate-scale log ratio.
const C1: f64 = 3.0;
/// Threshold of the medium-scale log ratio.
const C2: f64 = 2.0;
/// Threshold of the long-scale log ratio.
const C3: f64 = 0.0;
/// Sub-bands of the immediate scale.
const N1: u8 = 13;
/// Frames in a medium-scale block.
const N2: u8 = 5;
/// Medium blocks in the long scale.
const N3: u8 = 10;
/// A frame counts towards a medium block above this sub-band.
const MEDIUM_THRESHOLD: u8 = 7;
/// A block counts towards the long scale with more loud frames than this.
const LONG_THRESHOLD: u8 = 4;
/// Loudness of silence.
const MIN_LEVEL: u8 = 0;
/// Loudness of a full-scale signal (0 dBov).
const MAX_LEVEL: u8 = 127;
/// Levels per immediate sub-band (10).
const SUBUNIT_LENGTH_N1: u8 = (MAX_LEVEL - MIN_LEVEL).div_ceil(N1);
/// Frames remembered per speaker.
const LEVELS: usize = N2 as usize * N3 as usize;
/// Frames (15 s) watched before the noise floor may rise.
const MIN_LEVEL_WINDOW: u16 = 15_000 / 20;
/// Floor of a speech activity score (scores are divided and logged).
const MIN_ACTIVITY_SCORE: f64 = 1e-10;
/// Prior probability of an active sub-band, frame or block.
const P: f64 = 0.5;
/// λ of the immediate, medium and long scale.
const LAMBDA: [f64; 3] = [0.78, 24.0, 47.0];
/// Total of the immediate, medium and long scale.
const SCALE_N: [u8; 3] = [N1, N2, N3];

/// Why a speaker operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum SpeakerError {
    /// The room already holds as many speakers as its capacity.
    #[error("speaker capacity reached")]
    Full,
    /// A speaker with this id is already in the room.
    #[error("speaker already added")]
    Duplicate,
    /// No speaker with this id is in the room.
    #[error("unknown speaker")]
    Unknown,
    /// The level is older than the speaker's last one; it is dropped.
    #[error("level older than the speaker's last")]
    Late,
}

impl SpeakerError {
    /// A stable, lower-case label for metrics (`reason="late"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Duplicate => "duplicate",
            Self::Unknown => "unknown",
            Self::Late => "late",
        }
    }
}

/// The dominant speaker changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpeakerChange {
    /// The dominant speaker reported before, if any.
    pub previous: Option<u64>,
    /// The dominant speaker now; `None` once the dominant speaker was
    /// removed and nobody has spoken since.
    pub dominant: Option<u64>,
}

/// Dominant speaker detection and speaker ordering for one room.
#[derive(Debug)]
pub struct SpeakerDetector {
    speakers: Vec<Speaker>,
    /// Speaker id to index in `speakers`; sized for the capacity at
    /// construction.
    index: HashMap<u64, usize>,
    capacity: usize,
    dominant: Option<u64>,
    /// The dominant speaker as last returned by [`Self::poll`].
    reported: Option<u64>,
    last_decision: Instant,
    /// Run the next decision at the next [`Self::poll`], not on schedule.
    decide_now: bool,
    /// Decisions made; recency stamps derive from it.
    decisions: u64,
    /// Speakers added so far; orders speakers who never spoke.
    joins: u64,
    /// The latest time handed in.
    now: Instant,
}

impl SpeakerDetector {
    /// An empty room for at most `capacity` speakers; its first decision
    /// is due [`DECISION_INTERVAL`] after `now`.
    pub fn new(capacity: usize, now: Instant) -> Self {
        Self {
            speakers: Vec::with_capacity(capacity),
            index: HashMap::with_capacity(capacity),
            capacity,
            dominant: None,
            reported: None,
            last_decision: now,
            decide_now: false,
            decisions: 0,
            joins: 0,
            now,
        }
    }

    /// Adds a speaker (an audio publisher) to the room.
    pub fn add(&mut self, id: u64) -> Result<(), SpeakerError> {
        if self.index.contains_key(&id) {
            return Err(SpeakerError::Duplicate);
        }
        if self.speakers.len() >= self.capacity {
            return Err(SpeakerError::Full);
        }
        self.joins += 1;
        self.index.insert(id, self.speakers.len());
        self.speakers.push(Speaker::new(id, self.joins, self.now));
        Ok(())
    }

    /// Removes a speaker. Removing the dominant speaker clears it, and the
    /// next [`Self::poll`] decides at once (reporting the change even if
    /// nobody takes over).
    pub fn remove(&mut self, id: u64) -> Result<(), SpeakerError> {
        let at = self.index.remove(&id).ok_or(SpeakerError::Unknown)?;
        self.speakers.swap_remove(at);
        if let Some(moved) = self.speakers.get(at) {
            self.index.insert(moved.id, at);
        }
        if self.dominant == Some(id) {
            self.dominant = None;
            self.decide_now = true;
        }
        Ok(())
    }

    /// Speakers in the room.
    pub fn len(&self) -> usize {
        self.speakers.len()
    }

    /// Whether the room has no speakers.
    pub fn is_empty(&self) -> bool {
        self.speakers.is_empty()
    }

    /// Records the audio level of one audio packet from speaker `id`,
    /// received at `now`. Levels above 127 are clamped; a level older than
    /// the speaker's previous one is dropped ([`SpeakerError::Late`]).
    pub fn record(&mut self, id: u64, level: AudioLevel, now: Instant) -> Result<(), SpeakerError> {
        let &at = self.index.get(&id).ok_or(SpeakerError::Unknown)?;
        self.now = self.now.max(now);
        let speaker = &mut self.speakers[at];
        if now < speaker.last_level {
            return Err(SpeakerError::Late);
        }
        speaker.last_level = now;
        speaker.filled = 0;
        speaker.push_level(MAX_LEVEL - level.level.min(MAX_LEVEL));
        Ok(())
    }

    /// When [`Self::poll`] next has a decision to make.
    pub fn poll_timeout(&self) -> Instant {
        if self.decide_now {
            self.last_decision
        } else {
            self.last_decision + DECISION_INTERVAL
        }
    }

    /// Runs a decision if one is due (see [`Self::poll_timeout`]) and
    /// returns the change of dominant speaker since the last one returned.
    pub fn poll(&mut self, now: Instant) -> Option<SpeakerChange> {
        self.now = self.now.max(now);
        if !self.decide_now && now < self.last_decision + DECISION_INTERVAL {
            return None;
        }
        self.decide_now = false;
        self.last_decision = now;
        self.decide(now);
        if self.dominant == self.reported {
            return None;
        }
        let change = SpeakerChange {
            previous: self.reported,
            dominant: self.dominant,
        };
        self.reported = self.dominant;
        Some(change)
    }

    /// The dominant speaker, if anyone has spoken.
    pub fn dominant(&self) -> Option<u64> {
        self.dominant
    }

    /// Writes the speakers who have spoken (been dominant, or spoken in at
    /// least [`RECENT_MIN_BLOCKS`] blocks at a decision), most recent first,
    /// into `out`; returns how many it wrote.
    pub fn active(&self, out: &mut [u64]) -> usize {
        self.select(out, None, |s| (s.stamp > 0).then_some(s.recency()))
    }

    /// Writes the speakers talking at the latest decision (the dominant
    /// speaker, and those who spoke in at least [`RECENT_MIN_BLOCKS`] of
    /// the last ten blocks), most recent first, into `out`; returns how
    /// many it wrote.
    pub fn speaking(&self, out: &mut [u64]) -> usize {
        let latest = self.decisions;
        self.select(out, None, |s| {
            (s.stamp > 0 && s.stamp / 16 == latest).then_some(s.recency())
        })
    }

    /// Writes every speaker but `exclude`, most recent speaker first and
    /// those who never spoke last in join order, into `out` (the viewer's
    /// video slots); returns how many it wrote.
    pub fn recent(&self, out: &mut [u64], exclude: u64) -> usize {
        self.select(out, Some(exclude), |s| Some(s.recency()))
    }

    /// Writes the speakers but `exclude` heard within [`ENERGY_EXPIRY`] of
    /// the latest time handed in and above their noise floor, loudest
    /// (smoothed over ~40 ms) first, ties by recency, into `out` (the
    /// viewer's audio slots); returns how many it wrote.
    pub fn loudest(&self, out: &mut [u64], exclude: u64) -> usize {
        let now = self.now;
        self.select(out, Some(exclude), |s| {
            let fresh = now.saturating_duration_since(s.last_level) <= ENERGY_EXPIRY;
            (fresh && s.energy > 0).then_some((s.energy, s.recency()))
        })
    }

    /// Writes the ids of the speakers with a key into `out`, highest key
    /// first (an insertion sort over `out`, no allocation).
    fn select<K: Ord>(
        &self,
        out: &mut [u64],
        exclude: Option<u64>,
        key: impl Fn(&Speaker) -> Option<K>,
    ) -> usize {
        let key_of = |id: u64| self.index.get(&id).and_then(|&at| key(&self.speakers[at]));
        let mut len = 0;
        for s in &self.speakers {
            if Some(s.id) == exclude {
                continue;
            }
            let Some(k) = key(s) else { continue };
            // First position whose occupant ranks below `s`.
            let mut pos = len;
            while pos > 0 && key_of(out[pos - 1]).is_none_or(|o| o < k) {
                pos -= 1;
            }
            if pos >= out.len() {
                continue;
            }
            let end = (len + 1).min(out.len());
            out.copy_within(pos..end - 1, pos + 1);
            out[pos] = s.id;
            len = end;
        }
        len
    }

    /// One decision: feed idle speakers silence, score everyone, let the
    /// others challenge the dominant speaker, stamp recency.
    fn decide(&mut self, now: Instant) {
        for s in &mut self.speakers {
            s.fill_idle(now);
            s.evaluate();
        }
        let dominant_at = self.dominant.and_then(|id| self.index.get(&id).copied());
        let baseline = dominant_at.map_or([MIN_ACTIVITY_SCORE; 3], |at| self.speakers[at].scores);
        let mut best: Option<(usize, f64)> = None;
        for (at, s) in self.speakers.iter().enumerate() {
            if Some(at) == dominant_at {
                continue;
            }
            let c1 = (s.scores[0] / baseline[0]).ln();
            let c2 = (s.scores[1] / baseline[1]).ln();
            let c3 = (s.scores[2] / baseline[2]).ln();
            if c1 > C1 && c2 > C2 && c3 > C3 && c2 > best.map_or(C2, |(_, c)| c) {
                best = Some((at, c2));
            }
        }
        let new_dominant = best.map(|(at, _)| at).or(dominant_at);
        self.dominant = new_dominant.map(|at| self.speakers[at].id);

        self.decisions += 1;
        let base = self.decisions * 16;
        for (at, s) in self.speakers.iter_mut().enumerate() {
            if Some(at) == new_dominant {
                s.stamp = base + 15;
            } else if s.long >= RECENT_MIN_BLOCKS {
                s.stamp = base + u64::from(s.long);
            }
        }
    }
}

/// One speaker's level history and scores.
#[derive(Debug)]
struct Speaker {
    id: u64,
    /// Loudness (`127 - dBov`) of the last [`LEVELS`] frames, a ring.
    levels: [u8; LEVELS],
    /// Index of the newest frame in `levels`.
    head: usize,
    /// Noise floor; [`MIN_LEVEL`] until the first non-silent frame.
    min_level: u8,
    /// Lowest level of the current window; [`MIN_LEVEL`] when none.
    next_min_level: u8,
    /// Frames in the current window.
    next_min_window: u16,
    /// When the last level was recorded.
    last_level: Instant,
    /// Silent frames fed since `last_level` (at most [`LEVELS`]).
    filled: u32,
    /// Noise-gated loudness, exponentially smoothed (α = ½ per frame).
    energy: u8,
    /// Immediate, medium and long speech activity score.
    scores: [f64; 3],
    /// Loud blocks in the last second, at the last decision.
    long: u8,
    /// Recency stamp; 0 when the speaker never spoke.
    stamp: u64,
    /// Join order.
    joined: u64,
}

impl Speaker {
    fn new(id: u64, joined: u64, now: Instant) -> Self {
        Self {
            id,
            levels: [MIN_LEVEL; LEVELS],
            head: 0,
            min_level: MIN_LEVEL,
            next_min_level: MIN_LEVEL,
            next_min_window: 0,
            last_level: now,
            filled: 0,
            energy: 0,
            scores: [MIN_ACTIVITY_SCORE; 3],
            long: 0,
            stamp: 0,
            joined,
        }
    }

    fn recency(&self) -> (u64, Reverse<u64>) {
        (self.stamp, Reverse(self.joined))
    }

    fn push_level(&mut self, level: u8) {
        self.head = (self.head + 1) % LEVELS;
        self.levels[self.head] = level;
        self.update_min_level(level);
        let (gated, energy) = (self.gate(level), self.energy);
        // The mean, rounded towards the new level so that silence reaches
        // 0 and a steady level reaches itself.
        let rounding = u16::from(gated > energy);
        // Both operands are at most 127, so the mean fits a u8.
        self.energy = ((u16::from(energy) + u16::from(gated) + rounding) / 2) as u8;
    }

    /// `level`, or silence when within one sub-band of the noise floor.
    fn gate(&self, level: u8) -> u8 {
        if u16::from(level) < u16::from(self.min_level) + u16::from(SUBUNIT_LENGTH_N1) {
            MIN_LEVEL
        } else {
            level
        }
    }

    fn update_min_level(&mut self, level: u8) {
        if level == MIN_LEVEL {
            return;
        }
        if self.min_level == MIN_LEVEL || level < self.min_level {
            self.min_level = level;
            self.next_min_level = MIN_LEVEL;
            self.next_min_window = 0;
            return;
        }
        if self.next_min_level == MIN_LEVEL || level < self.next_min_level {
            self.next_min_level = level;
        }
        self.next_min_window += 1;
        if self.next_min_window >= MIN_LEVEL_WINDOW {
            // The geometric mean rises slower than the arithmetic one: a
            // floor should creep up, not jump.
            let mean = (f64::from(self.min_level) * f64::from(self.next_min_level)).sqrt();
            // Between two levels of 1..=127, so the cast keeps it exact
            // enough and in range.
            self.min_level = mean.clamp(1.0, f64::from(MAX_LEVEL)) as u8;
            self.next_min_level = MIN_LEVEL;
            self.next_min_window = 0;
        }
    }

    /// Feeds a silent frame for each 20 ms frame missing since the last
    /// level once it is more than [`LEVEL_IDLE_TIMEOUT`] old (the frame
    /// that may still be in flight excepted).
    fn fill_idle(&mut self, now: Instant) {
        let idle = now.saturating_duration_since(self.last_level);
        if idle <= LEVEL_IDLE_TIMEOUT {
            return;
        }
        let frames = (idle.as_nanos() / FRAME.as_nanos()).saturating_sub(1);
        // At most LEVELS, so the cast is lossless.
        let due = frames.min(LEVELS as u128) as u32;
        while self.filled < due {
            self.push_level(MIN_LEVEL);
            self.filled += 1;
        }
    }

    /// Recomputes the three scale values from the frames and scores them.
    fn evaluate(&mut self) {
        let threshold = u16::from(self.min_level) + u16::from(SUBUNIT_LENGTH_N1);
        let mut immediate = 0;
        let mut medium = 0;
        let mut loud_in_block = 0;
        let mut long = 0;
        for i in 0..LEVELS {
            let level = self.levels[(self.head + LEVELS - i) % LEVELS];
            let band = if u16::from(level) < threshold {
                0
            } else {
                level / SUBUNIT_LENGTH_N1
            };
            if i == 0 {
                immediate = band;
            }
            if band > MEDIUM_THRESHOLD {
                loud_in_block += 1;
            }
            if (i + 1) % usize::from(N2) == 0 {
                if i + 1 == usize::from(N2) {
                    medium = loud_in_block;
                }
                if loud_in_block > LONG_THRESHOLD {
                    long += 1;
                }
                loud_in_block = 0;
            }
        }
        self.long = long;
        for (scale, v) in [immediate, medium, long].into_iter().enumerate() {
            self.scores[scale] = activity_score(v, SCALE_N[scale], LAMBDA[scale]);
        }
    }
}

/// The speech activity score of `v` active units out of `n`:
/// `ln C(n, v) + v ln p + (n - v) ln (1 - p) - ln λ + λ v`, at least
/// [`MIN_ACTIVITY_SCORE`].
fn activity_score(v: u8, n: u8, lambda: f64) -> f64 {
    let (vf, nf) = (f64::from(v), f64::from(n));
    let score = (binomial(n, v) as f64).ln() + vf * P.ln() + (nf - vf) * (1.0 - P).ln()
        - lambda.ln()
        + lambda * vf;
    // NaN cannot occur (ln 0 is -inf), but `max` would discard it anyway.
    score.max(MIN_ACTIVITY_SCORE)
}

/// `C(n, r)`; 0 when `r > n`. Exact for the `n <= 13` used here.
fn binomial(n: u8, r: u8) -> u64 {
    if r > n {
        return 0;
    }
    let r = u64::from(r.min(n - r));
    let n = u64::from(n);
    // Each intermediate product is C(n, i) * (n - i) < 2^64 for n <= 13.
    (0..r).fold(1, |t, i| t * (n - i) / (i + 1))
}

/// One viewer's N slots (video or audio), filled from
/// [`SpeakerDetector::recent`] or [`SpeakerDetector::loudest`].
///
/// Policy: a speaker keeps its slot as long as it stays among the viewer's
/// top N; a slot is emptied only when its speaker drops out, and empty
/// slots are refilled with the newcomers in rank order. The viewer's tiles
/// (or audio tracks) therefore change only when the set changes, never
/// because two speakers already shown swapped ranks.
#[derive(Debug, Clone)]
pub struct LastN {
    slots: Box<[Option<u64>]>,
    scratch: Box<[u64]>,
}

impl LastN {
    /// `n` empty slots.
    pub fn new(n: usize) -> Self {
        Self {
            slots: vec![None; n].into_boxed_slice(),
            scratch: vec![0; n].into_boxed_slice(),
        }
    }

    /// The slots, each with its speaker, if any.
    pub fn slots(&self) -> &[Option<u64>] {
        &self.slots
    }

    /// Refills the slots from the `n` most recent speakers but `exclude`;
    /// returns whether any slot changed.
    pub fn update_recent(&mut self, detector: &SpeakerDetector, exclude: u64) -> bool {
        let len = detector.recent(&mut self.scratch, exclude);
        self.apply(len)
    }

    /// Refills the slots from the `n` loudest speakers but `exclude`;
    /// returns whether any slot changed.
    pub fn update_loudest(&mut self, detector: &SpeakerDetector, exclude: u64) -> bool {
        let len = detector.loudest(&mut self.scratch, exclude);
        self.apply(len)
    }

    fn apply(&mut self, len: usize) -> bool {
        let top = &self.scratch[..len];
        let mut changed = false;
        for slot in self.slots.iter_mut() {
            if slot.is_some_and(|id| !top.contains(&id)) {
                *slot = None;
                changed = true;
            }
        }
        for &id in top {
            if self.slots.contains(&Some(id)) {
                continue;
            }
            if let Some(free) = self.slots.iter_mut().find(|s| s.is_none()) {
                *free = Some(id);
                changed = true;
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everyone's noise floor when not talking, in -dBov.
    const FLOOR: u8 = 70;

    fn level(dbov: u8) -> AudioLevel {
        AudioLevel {
            voice: dbov < 60,
            level: dbov,
        }
    }

    /// Speech between -22 and -34 dBov, pausing 80 ms (at the floor) every
    /// second as people do between phrases.
    fn speech(frame: u64) -> u8 {
        speech_over(FLOOR, frame)
    }

    /// [`speech`] by someone whose noise floor is `floor`.
    fn speech_over(floor: u8, frame: u64) -> u8 {
        if frame % 50 < 4 {
            floor
        } else {
            22 + (frame * 7 % 13) as u8
        }
    }

    /// A room on a virtual clock, one frame (20 ms) per step.
    struct Sim {
        d: SpeakerDetector,
        ids: Vec<u64>,
        t0: Instant,
        frame: u64,
        changes: Vec<(Duration, SpeakerChange)>,
    }

    impl Sim {
        fn new(ids: &[u64]) -> Self {
            let t0 = Instant::now();
            let mut d = SpeakerDetector::new(ids.len() + 4, t0);
            for &id in ids {
                d.add(id).unwrap();
            }
            Self {
                d,
                ids: ids.to_vec(),
                t0,
                frame: 0,
                changes: Vec::new(),
            }
        }

        fn elapsed(&self) -> Duration {
            FRAME * self.frame as u32
        }

        /// Runs `ms` of virtual time; `dbov(id, frame)` is the level each
        /// speaker sends (`None`: no packet).
        fn run(&mut self, ms: u64, dbov: impl Fn(u64, u64) -> Option<u8>) {
            for _ in 0..ms / 20 {
                self.frame += 1;
                let now = self.t0 + self.elapsed();
                for &id in &self.ids {
                    if let Some(l) = dbov(id, self.frame) {
                        self.d.record(id, level(l), now).unwrap();
                    }
                }
                if let Some(c) = self.d.poll(now) {
                    self.changes.push((self.elapsed(), c));
                }
            }
        }

        /// Runs `ms` with `talker` speaking and everyone else at the floor.
        fn talk(&mut self, ms: u64, talker: u64) {
            self.run(ms, |id, f| {
                Some(if id == talker { speech(f) } else { FLOOR })
            });
        }

        fn dominants(&self) -> Vec<Option<u64>> {
            self.changes.iter().map(|(_, c)| c.dominant).collect()
        }

        /// When the first change to `id` happened after `start`.
        fn switch_latency(&self, id: u64, start: Duration) -> Duration {
            let (at, _) = self
                .changes
                .iter()
                .find(|(at, c)| *at >= start && c.dominant == Some(id))
                .expect("switched");
            *at - start
        }
    }

    #[test]
    fn scores_follow_the_formula() {
        assert_eq!(binomial(13, 0), 1);
        assert_eq!(binomial(13, 10), 286);
        assert_eq!(binomial(10, 5), 252);
        assert_eq!(binomial(5, 6), 0);
        assert_eq!(SUBUNIT_LENGTH_N1, 10);
        // ln C(5,5) + 5 ln ½ - ln 24 + 24 × 5
        let expected = 5.0 * 0.5f64.ln() - 24f64.ln() + 120.0;
        assert!((activity_score(5, N2, 24.0) - expected).abs() < 1e-9);
        // Silence and near-silence floor at the minimum.
        assert_eq!(activity_score(0, N1, 0.78), MIN_ACTIVITY_SCORE);
        assert_eq!(activity_score(3, N1, 0.78), MIN_ACTIVITY_SCORE);
        assert!(activity_score(4, N1, 0.78) > MIN_ACTIVITY_SCORE);
        assert_eq!(activity_score(0, N3, 47.0), MIN_ACTIVITY_SCORE);
        assert!(activity_score(1, N3, 47.0) > 30.0);
    }

    #[test]
    fn single_talker_becomes_dominant_within_a_second() {
        let mut sim = Sim::new(&[1, 2, 3]);
        sim.talk(1000, 0);
        assert_eq!(sim.d.dominant(), None, "nobody spoke yet");
        let start = sim.elapsed();
        sim.talk(2000, 2);
        assert_eq!(sim.dominants(), [Some(2)]);
        let latency = sim.switch_latency(2, start);
        eprintln!("single talker dominant after {latency:?}");
        assert!(latency <= Duration::from_secs(1), "{latency:?}");
        assert_eq!(sim.changes[0].1.previous, None);
    }

    #[test]
    fn hand_over_without_flapping_on_coughs() {
        let (a, b, c) = (1, 2, 3);
        let mut sim = Sim::new(&[a, b, c]);
        sim.talk(1000, 0);
        // A talks 3 s, B talks 3 s; C coughs (200 ms at -15 dBov) in the
        // middle of each.
        let cough = |id: u64, f: u64, from: u64| id == c && (from..from + 10).contains(&f);
        let a_start = sim.elapsed();
        sim.run(3000, |id, f| {
            Some(if cough(id, f, 125) {
                15
            } else if id == a {
                speech(f)
            } else {
                FLOOR
            })
        });
        let b_start = sim.elapsed();
        sim.run(3000, |id, f| {
            Some(if cough(id, f, 275) {
                15
            } else if id == b {
                speech(f)
            } else {
                FLOOR
            })
        });
        assert_eq!(sim.dominants(), [Some(a), Some(b)], "{:?}", sim.changes);
        let to_a = sim.switch_latency(a, a_start);
        let to_b = sim.switch_latency(b, b_start);
        eprintln!("A dominant after {to_a:?}, A -> B after {to_b:?}");
        assert!(to_a <= Duration::from_secs(1), "{to_a:?}");
        assert!(to_b <= Duration::from_secs(1), "{to_b:?}");
        assert_eq!(sim.changes[1].1.previous, Some(a));
    }

    #[test]
    fn constant_background_noise_does_not_win() {
        let (hum, fan, talker) = (1, 2, 3);
        let mut sim = Sim::new(&[hum, fan, talker]);
        // A -50 dBov hum flagged as voice and a louder -40 dBov fan flagged
        // as not voice, for the whole run.
        let noise = |id: u64| match id {
            1 => Some(50),
            2 => Some(40),
            _ => None,
        };
        sim.run(3000, |id, _| noise(id).or(Some(FLOOR)));
        assert_eq!(sim.d.dominant(), None, "noise alone is nobody");
        sim.run(2000, |id, f| noise(id).or(Some(speech(f))));
        sim.run(5000, |id, _| noise(id).or(Some(FLOOR)));
        assert_eq!(sim.dominants(), [Some(talker)]);
        let mut out = [0; 4];
        assert_eq!(sim.d.loudest(&mut out, 0), 0, "noise is gated");
    }

    #[test]
    fn silence_keeps_the_last_dominant() {
        let mut sim = Sim::new(&[1, 2]);
        sim.talk(2000, 1);
        assert_eq!(sim.d.dominant(), Some(1));
        // Everyone at the floor, then no packets at all (muted, DTX).
        sim.talk(3000, 0);
        sim.run(5000, |_, _| None);
        assert_eq!(sim.dominants(), [Some(1)]);
        // Digital silence (127) is silence too.
        sim.run(2000, |_, _| Some(127));
        assert_eq!(sim.d.dominant(), Some(1));
    }

    #[test]
    fn removing_the_dominant_speaker_clears_or_changes_it() {
        let mut sim = Sim::new(&[1, 2, 3]);
        sim.talk(2000, 1);
        assert_eq!(sim.d.dominant(), Some(1));
        sim.talk(1000, 0);
        sim.d.remove(1).unwrap();
        sim.ids.retain(|&id| id != 1);
        assert_eq!(sim.d.dominant(), None);
        // The next poll decides at once and reports the loss.
        let now = sim.t0 + sim.elapsed();
        assert_eq!(sim.d.poll_timeout(), sim.d.last_decision);
        assert_eq!(
            sim.d.poll(now),
            Some(SpeakerChange {
                previous: Some(1),
                dominant: None
            })
        );
        sim.talk(2000, 3);
        assert_eq!(sim.d.dominant(), Some(3));

        // Removed while another talks: the forced decision hands over.
        sim.run(1100, |_, f| Some(speech(f)));
        assert_eq!(sim.d.dominant(), Some(3), "3 still holds it");
        sim.d.remove(3).unwrap();
        sim.ids.retain(|&id| id != 3);
        let now = sim.t0 + sim.elapsed();
        assert_eq!(
            sim.d.poll(now),
            Some(SpeakerChange {
                previous: Some(3),
                dominant: Some(2)
            })
        );
    }

    #[test]
    fn recent_and_loudest_order_and_exclude() {
        let mut sim = Sim::new(&[1, 2, 3, 4]);
        for talker in [1, 2, 3] {
            sim.talk(2000, talker);
            assert_eq!(sim.d.dominant(), Some(talker));
        }
        let mut out = [0; 8];
        let n = sim.d.recent(&mut out, 0);
        assert_eq!(out[..n], [3, 2, 1, 4], "4 never spoke: last");
        let n = sim.d.recent(&mut out, 3);
        assert_eq!(out[..n], [2, 1, 4]);
        let mut two = [0; 2];
        assert_eq!(sim.d.recent(&mut two, 2), 2);
        assert_eq!(two, [3, 1]);
        let n = sim.d.active(&mut out);
        assert_eq!(out[..n], [3, 2, 1]);
        let n = sim.d.speaking(&mut out);
        assert_eq!(out[..n], [3], "only the one talking now");

        // 1 loud, 2 quieter, 3 and 4 at their floor.
        sim.run(400, |id, _| {
            Some(match id {
                1 => 10,
                2 => 30,
                _ => FLOOR,
            })
        });
        let n = sim.d.loudest(&mut out, 0);
        assert_eq!(out[..n], [1, 2]);
        let n = sim.d.loudest(&mut out, 1);
        assert_eq!(out[..n], [2]);
        let mut one = [0; 1];
        assert_eq!(sim.d.loudest(&mut one, 4), 1);
        assert_eq!(one, [1]);
        // Not heard for longer than ENERGY_EXPIRY: gone from loudest.
        sim.run(200, |id, _| match id {
            1 => None,
            2 => Some(30),
            _ => Some(FLOOR),
        });
        let n = sim.d.loudest(&mut out, 0);
        assert_eq!(out[..n], [2]);
        assert_eq!(sim.d.loudest(&mut [], 0), 0);
    }

    #[test]
    fn last_n_keeps_slots_stable() {
        let viewer = 9;
        let mut sim = Sim::new(&[1, 2, 3, viewer]);
        let mut video = LastN::new(2);
        sim.talk(2000, 1);
        sim.talk(2000, 2);
        assert!(video.update_recent(&sim.d, viewer));
        assert_eq!(video.slots(), [Some(2), Some(1)]);
        // 1 speaks again: the set is the same, nothing moves.
        sim.talk(2000, 1);
        let mut out = [0; 2];
        sim.d.recent(&mut out, viewer);
        assert_eq!(out, [1, 2]);
        assert!(!video.update_recent(&sim.d, viewer));
        assert_eq!(video.slots(), [Some(2), Some(1)]);
        // 3 speaks: 2 (least recent) leaves, 3 takes its slot.
        sim.talk(2000, 3);
        assert!(video.update_recent(&sim.d, viewer));
        assert_eq!(video.slots(), [Some(3), Some(1)]);
        // The viewer speaking never lands in its own slots.
        sim.talk(2000, viewer);
        assert!(!video.update_recent(&sim.d, viewer));
        assert_eq!(video.slots(), [Some(3), Some(1)]);

        let mut audio = LastN::new(3);
        sim.run(200, |id, _| Some(if id == 2 { 20 } else { FLOOR }));
        assert!(audio.update_loudest(&sim.d, viewer));
        assert_eq!(audio.slots(), [Some(2), None, None]);
        sim.run(200, |_, _| None);
        assert!(audio.update_loudest(&sim.d, viewer));
        assert_eq!(audio.slots(), [None, None, None]);
    }

    #[test]
    fn capacity_and_errors() {
        let t0 = Instant::now();
        let mut d = SpeakerDetector::new(2, t0);
        assert!(d.is_empty());
        d.add(1).unwrap();
        d.add(2).unwrap();
        assert_eq!(d.add(3), Err(SpeakerError::Full));
        assert_eq!(d.add(1), Err(SpeakerError::Duplicate));
        assert_eq!(d.len(), 2);
        d.remove(1).unwrap();
        assert_eq!(d.remove(1), Err(SpeakerError::Unknown));
        d.add(3).unwrap();
        assert_eq!(d.add(4).map_err(SpeakerError::as_str), Err("full"));
        let l = level(30);
        assert_eq!(d.record(1, l, t0), Err(SpeakerError::Unknown));
        let t1 = t0 + Duration::from_millis(40);
        d.record(3, l, t1).unwrap();
        d.record(3, l, t1).unwrap();
        assert_eq!(d.record(3, l, t0), Err(SpeakerError::Late));
        // Out-of-range levels (the struct's fields are public) clamp.
        d.record(
            3,
            AudioLevel {
                voice: true,
                level: 255,
            },
            t1,
        )
        .unwrap();
        assert_eq!(d.poll(t0), None, "time going backwards is harmless");
        assert_eq!(d.poll(t1), None, "not due yet");
    }

    #[test]
    fn an_hour_of_fifty_speakers() {
        let ids: Vec<u64> = (100..150).collect();
        let mut sim = Sim::new(&ids);
        // A new talker every 5 s (a fixed LCG picks who), a cough by
        // someone else as each starts, speakers sending nothing for a
        // minute at a time, noise floors between -50 and -72 dBov.
        let pick = |slot: u64| {
            let x = slot
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            100 + (x >> 33) % 50
        };
        let floor = |id: u64, f: u64| FLOOR - (id % 20) as u8 + (f % 3) as u8;
        sim.run(3_600_000, |id, f| {
            if id == pick(f / 250) {
                Some(speech_over(floor(id, f), f))
            } else if id == pick(f / 250 + 7) && f % 250 < 10 {
                Some(12)
            } else if (id + f / 3000) % 9 == 0 {
                None
            } else {
                Some(floor(id, f))
            }
        });
        // Every change hands over to the slot's talker within a second of
        // its start: no cough or noise ever takes over.
        let mut slowest = Duration::ZERO;
        for (at, c) in &sim.changes {
            let slot = at.as_millis() as u64 / 5000;
            assert_eq!(c.dominant, Some(pick(slot)), "at {at:?}");
            slowest = slowest.max(*at - Duration::from_secs(5 * slot));
        }
        assert!(slowest <= Duration::from_secs(1), "{slowest:?}");
        // Who was dominant at the end of each 5 s slot.
        let mut held = 0;
        for slot in 0..720u64 {
            let end = Duration::from_secs(5 * slot + 5);
            let last = sim.changes.iter().rev().find(|(at, _)| *at < end);
            if last.is_some_and(|(_, c)| c.dominant == Some(pick(slot))) {
                held += 1;
            }
        }
        eprintln!(
            "an hour: {} changes, the talker dominant at the end of {held} of 720 slots, \
             slowest hand-over {slowest:?}",
            sim.changes.len()
        );
        assert_eq!(held, 720);
        let mut out = [0; 64];
        assert_eq!(sim.d.recent(&mut out, 100), 49);
    }
}
