//! What the router sends a subscriber, numbered and fitted to its
//! bandwidth: transport-wide sequence numbers on every copy, the
//! subscriber's transport-cc feedback (REMB as a fallback) read into a
//! per-subscriber estimate ([`crate::bwe::Estimator`]), and that estimate
//! shared out over the subscriber's consumers ([`crate::bwe::allocate`]).
//!
//! # Numbering
//! A subscriber that negotiated the transport-wide sequence number
//! extension gets copies whose header carries that one element, with the
//! subscriber's id and the next number of its transport, instead of the
//! publisher's extensions (whose ids mean nothing to it): the copy is
//! written as fixed header, CSRCs, one 8-byte extension block, then payload
//! and padding. The number and the copy's size go to the estimator's send
//! history. Nothing allocates.
//!
//! # Allocation
//! Until its first feedback, a subscriber's videos are on their lowest
//! layers (for at most [`FEEDBACK_WAIT`] after its first packet; then on
//! what fits [`START_BPS`]).
//! At most every [`ALLOCATE_INTERVAL`], when feedback arrives, the
//! subscriber's estimate is divided: audio first, then each video track's
//! lowest layer, then upgrades one layer at a time (the allocator's
//! policy), each track's layers in declaration order, costed by measured
//! bitrate. A consumer's layer is then the lower of its cap
//! ([`super::Command::SetMaxLayer`]) and its allocation; a video consumer
//! that does not fit even at its lowest layer keeps that layer while the
//! estimate is at least half of its bitrate (or while the acknowledged
//! bitrate covers it), and below that is paused (nothing forwarded) until a
//! later allocation resumes it at a keyframe; a track of one layer is never
//! paused. At most [`MAX_STREAMS`] consumers of one
//! subscriber take part; the rest keep their caps.
//!
//! # Priorities
//! Each consumer goes to the allocator with a priority
//! ([`crate::bwe::allocate::Priority`]): a screen share's
//! ([`super::TrackSource::Screen`]) first, then a pinned one's (a
//! participant the subscriber pinned in its [`super::Subscription::Slots`],
//! or a consumer pinned by [`super::Command::SetPinned`]), then the others.
//! Within one priority, consumers go in slot order. So on a short estimate
//! a screen share keeps its higher layers while cameras step down, and
//! cameras pause before it does.
//!
//! # Trials before upgrades
//! A probe cluster is 20 packets (about 6 KB): a shaper with a token bucket
//! lets it through at line rate, however low its rate (`tc tbf` with an
//! 8 KB burst; so do many access-network policers). The estimate then jumps
//! above the path, the viewer is moved up, the path overflows and the
//! viewer comes back down: under a 400 kbit/s tbf Chromium's viewer flapped
//! between 320x180 and 640x360 every 3-4 s. So an upgrade that needs more
//! than the subscriber has acknowledged (or than an earlier trial proved)
//! is tried first: for [`TRIAL`] the router pads what the subscriber gets
//! up to what the upgrade needs plus the allocator's upgrade margin, on the
//! RTX stream, while the consumers keep their layers. The upgrade is made
//! only if, over the trial's second half, the subscriber acknowledged at
//! least [`TRIAL_PASS_PERCENT`] % of that with the estimate still above the
//! need; overuse or an estimate below the need ends the trial at once (the
//! padding stops before the bucket's queue overflows), and a failed trial
//! lengthens the wait for the next probe as a failed probe does. A burst
//! hides a cap for a fraction of a second, not for a second of load. A
//! subscriber without an RTX stream cannot be padded and is upgraded
//! without a trial.

use std::time::{Duration, Instant};

use super::routing::Producer;
use super::{MediaKind, Router, TrackSource};
use crate::bwe::allocate::{self as alloc, MediaKind as AllocKind, Priority, StreamRequest};
use crate::bwe::{self, Estimator};
use crate::wire::rtp::RtpPacket;

/// Shortest time between two allocations of one subscriber's estimate.
pub const ALLOCATE_INTERVAL: Duration = Duration::from_millis(500);

/// A subscriber's estimate before its first feedback: libwebrtc's default
/// start bitrate. Probes raise it within seconds on a good path; its first
/// layers are the lowest (see [`FEEDBACK_WAIT`]): starting at the top layer
/// flooded slow paths with a top-layer keyframe first.
pub const START_BPS: u64 = 300_000;

/// How long after the first packet it was sent a subscriber that
/// negotiated transport-cc stays on its tracks' lowest layers while no
/// feedback has come; after that, until feedback comes, its layers are the
/// highest that fit the start estimate ([`START_BPS`]).
pub const FEEDBACK_WAIT: Duration = Duration::from_millis(1000);

/// Most consumers of one subscriber the allocator weighs.
pub const MAX_STREAMS: usize = 128;

/// Most layers of one track the allocator weighs.
const MAX_LAYERS: usize = 4;

/// Padding packets in one probe cluster.
pub const PROBE_PACKETS: u32 = 20;
/// Bytes of padding in one probe packet (the RTP padding count is a byte).
const PROBE_PADDING: usize = 255;
/// Shortest time from the end of one probe to the start of the next; it
/// doubles (up to [`PROBE_GAP_MAX`]) after each probe that did not raise
/// the estimate to what it probed for, so a bottleneck is not probed
/// into congestion every second, except while one of the subscriber's
/// videos is paused.
pub const PROBE_GAP: Duration = Duration::from_millis(1000);
/// Longest time between two probes while an upgrade waits.
pub const PROBE_GAP_MAX: Duration = Duration::from_secs(4);
/// Step between two rounds of a probe's packets.
const PROBE_STEP: Duration = Duration::from_millis(1);
/// How long an upgrade's trial pads (see the module doc).
pub const TRIAL: Duration = Duration::from_millis(1000);
/// What the subscriber must acknowledge of the trial's target (the
/// upgrade's need plus the allocator's upgrade margin,
/// [`alloc::UPGRADE_MARGIN_PERCENT`]) during its second half, percent: a
/// path that carries the upgrade with no room to spare (a queue that fills)
/// fails.
pub const TRIAL_PASS_PERCENT: u64 = 95;
/// A passed trial lets its upgrade through for this long (the switch waits
/// for a keyframe, during which less than the upgrade is acknowledged).
const TRIAL_VALID: Duration = Duration::from_secs(3);

/// One consumer in an allocation: its index and its track's layers.
#[derive(Debug, Clone, Copy, Default)]
struct Stream {
    consumer: usize,
    layers: [(u64, u32); MAX_LAYERS],
    bps: [u64; MAX_LAYERS],
    count: usize,
}

/// A probe cluster being sent: padding on an RTX stream at `bps`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Probe {
    id: u16,
    bps: u64,
    started: Instant,
    bytes: u64,
    sent: u32,
    pub(super) next_at: Instant,
}

/// An upgrade's trial being sent: padding that tops what is sent up to
/// `target_bps` until `ends`, then judged on the feedback taken in its
/// second half.
#[derive(Debug, Clone, Copy)]
pub(super) struct Trial {
    /// What the upgrade needs, bps (the allocation's total).
    need_bps: u64,
    /// What it pads up to: the need plus the upgrade margin.
    target_bps: u64,
    /// [`Egress::numbered_bytes`] when it started: the padding tops up what
    /// is sent besides it (media and RTX, bursty) to the target.
    numbered_at_start: u64,
    started: Instant,
    ends: Instant,
    bytes: u64,
    /// The acknowledged bitrates seen from its second half on: their sum
    /// and count (the mean is what the path carried; the 500 ms window over
    /// bursty arrivals makes the highest sample optimistic).
    acked_sum: u64,
    acked_samples: u32,
    /// Overuse, or an estimate below its need, was seen: it has failed.
    congested: bool,
    /// When its next padding is due; `None` once it has ended (or stopped
    /// at congestion) and waits to be judged.
    pub(super) next_at: Option<Instant>,
}

/// A subscriber's egress numbering and bandwidth estimate.
#[derive(Debug)]
pub(crate) struct Egress {
    /// The subscriber's id for the transport-wide sequence number.
    pub(super) ext: u8,
    seq: u16,
    pub(super) estimator: Estimator,
    next_allocation: Instant,
    /// The probe cluster being sent, if any.
    pub(super) probe: Option<Probe>,
    probes: u16,
    last_probe: Option<Instant>,
    /// Whether an allocation has run: from then on the estimate, not the
    /// layers' bitrates alone, picks the consumers' layers.
    pub(super) allocated: bool,
    /// The current wait between probes, and the rate the last one probed.
    probe_gap: Duration,
    probed_bps: u64,
    /// The upgrade being tried, if any.
    pub(super) trial: Option<Trial>,
    /// Bytes [`Egress::number`] numbered (media and retransmissions, no
    /// padding), which a trial's padding tops up.
    numbered_bytes: u64,
    /// What the last passed trial proved, bps, and until when it counts.
    proven: Option<(u64, Instant)>,
    /// Trials judged, and the last one's target and acknowledged mean.
    pub(super) trials_passed: u32,
    pub(super) trials_failed: u32,
    pub(super) last_trial: Option<(u64, u64)>,
    /// Retransmission budget, bytes, and when it was last refilled.
    rtx_tokens: u64,
    rtx_refilled: Instant,
    /// When the first packet was numbered for it.
    first_sent: Option<Instant>,
}

/// Share of a subscriber's estimate its retransmissions may take, percent:
/// unbounded, RTX under a shaper added to media that already filled it, the
/// loss it caused brought more NACKs, and the viewer starved.
pub const RTX_SHARE_PERCENT: u64 = 25;
/// Longest burst of retransmissions, as time at the budget's rate.
const RTX_BURST: Duration = Duration::from_millis(250);
/// Smallest burst: a few full packets, whatever the estimate.
const RTX_MIN_BURST_BYTES: u64 = 4 * 1500;

impl Egress {
    pub(super) fn new(ext: u8, now: Instant) -> Self {
        Self {
            ext,
            seq: 0,
            estimator: Estimator::new(
                bwe::Config {
                    start_bps: START_BPS,
                    ..bwe::Config::default()
                },
                now,
            ),
            next_allocation: now,
            probe: None,
            probes: 0,
            last_probe: None,
            probe_gap: PROBE_GAP,
            probed_bps: 0,
            trial: None,
            proven: None,
            trials_passed: 0,
            trials_failed: 0,
            last_trial: None,
            numbered_bytes: 0,
            allocated: false,
            rtx_tokens: RTX_MIN_BURST_BYTES,
            rtx_refilled: now,
            first_sent: None,
        }
    }

    /// What a subscriber's layers are chosen within before its first
    /// allocation, bps. Until feedback has come, nothing is known of the
    /// path, and the start estimate guesses from layers that are still
    /// ramping up: Chromium's middle layer sends about half its rate in its
    /// first seconds, so it fitted the 300 kbit/s start and a viewer capped
    /// at 400 kbit/s started on it and froze for 3-4 s before the first
    /// allocations moved it down. So it starts on the lowest layers (a
    /// budget of 0), and the first feedback (a browser's comes within a
    /// few hundred ms) lets the allocator and its trials move it up. A
    /// subscriber whose feedback does not come [`FEEDBACK_WAIT`] after its
    /// first packet gets what fits the start estimate, as one without
    /// transport-cc does.
    pub(super) fn start_budget(&self, now: Instant) -> u64 {
        match self.first_sent {
            Some(t) if now.saturating_duration_since(t) >= FEEDBACK_WAIT => {
                self.estimator.target_bps()
            }
            _ => 0,
        }
    }

    /// Whether a retransmission of `size` bytes fits the budget at `now`
    /// ([`RTX_SHARE_PERCENT`] of the estimate, in bursts of at most
    /// [`RTX_BURST`] of it); [`Egress::spend_rtx`] then takes it.
    pub(super) fn rtx_fits(&mut self, size: usize, now: Instant) -> bool {
        let rate = self.estimator.target_bps() * RTX_SHARE_PERCENT / 100 / 8;
        let elapsed = now.saturating_duration_since(self.rtx_refilled);
        self.rtx_refilled = now;
        let burst = (rate * RTX_BURST.as_millis() as u64 / 1000).max(RTX_MIN_BURST_BYTES);
        let refill = rate.saturating_mul(elapsed.as_micros() as u64) / 1_000_000;
        self.rtx_tokens = self.rtx_tokens.saturating_add(refill).min(burst);
        self.rtx_tokens >= size as u64
    }

    /// Takes `size` bytes of retransmission from the budget.
    pub(super) fn spend_rtx(&mut self, size: usize) {
        self.rtx_tokens = self.rtx_tokens.saturating_sub(size as u64);
    }

    /// The next transport-wide number, recorded as sent with `size` bytes
    /// (media or a retransmission).
    pub(super) fn number(&mut self, size: usize, now: Instant) -> u16 {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        self.estimator.on_sent(seq, size, now);
        self.numbered_bytes = self.numbered_bytes.wrapping_add(size as u64);
        if self.first_sent.is_none() {
            self.first_sent = Some(now);
        }
        seq
    }

    /// What the path has been seen to carry, bps: the acknowledged bitrate
    /// of media and retransmissions (padding and probes pass a shaper's
    /// burst), or what a recent trial proved.
    fn carried_bps(&self, now: Instant) -> u64 {
        let acked = self.estimator.media_acked_bps().unwrap_or(0);
        let proven = self
            .proven
            .filter(|&(_, until)| now < until)
            .map_or(0, |p| p.0);
        acked.max(proven)
    }

    /// Follows the running trial after feedback taken at `now`: the
    /// acknowledged bitrate from its second half on (the first half fills a
    /// shaper's burst), and congestion, which fails it at once.
    pub(super) fn watch_trial(&mut self, now: Instant) {
        let Some(t) = self.trial.as_mut() else {
            return;
        };
        if self.estimator.delay_state() == bwe::delay::BandwidthUsage::Overusing
            || self.estimator.target_bps() < t.need_bps
        {
            t.next_at = None;
            t.congested = true;
            return;
        }
        // Feedback taken within its second half: the acked window then
        // holds trial traffic only (later feedback mixes in what follows).
        if now >= t.started + TRIAL / 2 && now <= t.ends {
            t.acked_sum += self.estimator.acked_bps().unwrap_or(0);
            t.acked_samples += 1;
        }
    }

    /// Judges the running trial at `now`: `Some(true)` when it passed (its
    /// target is then proven for [`TRIAL_VALID`]), `Some(false)` when it
    /// failed, `None` while it runs or when none runs.
    fn judge_trial(&mut self, now: Instant) -> Option<bool> {
        let t = self.trial?;
        if now < t.ends && !t.congested {
            return None;
        }
        self.trial = None;
        let acked = t.acked_sum / u64::from(t.acked_samples.max(1));
        let passed = !t.congested
            && acked.saturating_mul(100) >= t.target_bps.saturating_mul(TRIAL_PASS_PERCENT);
        self.last_trial = Some((t.target_bps, acked));
        if !passed {
            self.trials_failed = self.trials_failed.wrapping_add(1);
        } else {
            self.trials_passed = self.trials_passed.wrapping_add(1);
            // The target, margin included: the layers' costs move from
            // one second to the next, and a need that grew a little since
            // must not take another trial.
            self.proven = Some((t.target_bps, now + TRIAL_VALID));
        }
        Some(passed)
    }

    /// Whether an allocation is due at `now` (and if so, the next one is
    /// scheduled).
    pub(super) fn allocation_due(&mut self, now: Instant) -> bool {
        if now < self.next_allocation {
            return false;
        }
        self.next_allocation = now + ALLOCATE_INTERVAL;
        true
    }
}

/// Bytes of `packet`'s fixed header and CSRCs.
pub(super) fn fixed_and_csrcs(packet: &RtpPacket<'_>) -> usize {
    12 + 4 * usize::from(packet.as_bytes().first().map_or(0, |b| b & 0x0f))
}

/// The one-element header extension block carrying the transport-wide
/// sequence number `seq` under id `ext` (1..=14).
fn twcc_block(ext: u8, seq: u16) -> [u8; 8] {
    let [hi, lo] = seq.to_be_bytes();
    [0xbe, 0xde, 0, 1, (ext << 4) | 1, hi, lo, 0]
}

/// Writes `packet`'s fixed header and CSRCs into `out` with the X bit set,
/// then the block of [`twcc_block`], in place of the packet's own
/// extensions. Returns the header's length; `out` must hold it.
pub(super) fn write_numbered_header(
    packet: &RtpPacket<'_>,
    out: &mut [u8],
    ext: u8,
    seq: u16,
) -> Option<usize> {
    let csrc_end = fixed_and_csrcs(packet);
    let header = csrc_end + 8;
    out.get_mut(..csrc_end)?
        .copy_from_slice(packet.as_bytes().get(..csrc_end)?);
    if let Some(b) = out.first_mut() {
        *b |= 0x10;
    }
    out.get_mut(csrc_end..header)?
        .copy_from_slice(&twcc_block(ext, seq));
    Some(header)
}

/// Copies `packet` into `out` with one header extension element, the
/// transport-wide sequence number `seq` under id `ext` (1..=14), in place
/// of the packet's own extensions. Returns the copy's length and the
/// offset of its payload, or `None` when `out` is too small (room is kept
/// for a 16-byte SRTP tag).
pub(super) fn copy_numbered(
    packet: &RtpPacket<'_>,
    out: &mut [u8],
    ext: u8,
    seq: u16,
) -> Option<(usize, usize)> {
    let rest = packet.as_bytes().get(packet.header_len()..)?;
    let header = fixed_and_csrcs(packet) + 8;
    let len = header + rest.len();
    if len + 16 > out.len() {
        return None;
    }
    write_numbered_header(packet, out, ext, seq)?;
    out.get_mut(header..len)?.copy_from_slice(rest);
    Some((len, header))
}

/// The active layers of track `key` in declaration order (ascending
/// quality), as (cost in bps, at least 1, SSRC); returns how many. See
/// [`super::routing::active_layers`] for the costs.
pub(super) fn ordered_layers(
    producers: &std::collections::HashMap<u32, Producer>,
    key: u32,
    now: Instant,
    out: &mut [(u64, u32); MAX_LAYERS],
) -> usize {
    let mut all = [(0u64, 0usize, 0u32); 16];
    let n = super::routing::active_layers(producers, key, now, &mut all);
    for (o, a) in out.iter_mut().zip(all.iter().take(n)) {
        *o = (a.0.max(1), a.2);
    }
    n.min(MAX_LAYERS)
}

impl Router {
    /// Divides the estimate of the subscriber in `slot` over its consumers
    /// (see the module doc) and re-targets them.
    pub(super) fn allocate(&mut self, slot: u32, now: Instant) {
        let Self {
            endpoints,
            producers,
            stats,
            ..
        } = self;
        let Some(Some(ep)) = endpoints.get_mut(slot as usize) else {
            return;
        };
        let rtt = ep.rtt;
        let Some(egress) = ep.transport.egress.as_deref_mut() else {
            return;
        };
        if let Some(rtt) = rtt {
            egress.estimator.set_rtt(rtt);
        }
        let estimate = egress.estimator.target_bps();
        let acked = egress.estimator.acked_bps().unwrap_or(0);
        // The consumers that take part, with their tracks' layers.
        let mut streams = [Stream::default(); MAX_STREAMS];
        let mut n = 0;
        for (i, c) in ep.consumers.iter().enumerate() {
            let Some(key) = c.source.filter(|_| c.attached) else {
                continue;
            };
            let Some(s) = streams.get_mut(n) else {
                break;
            };
            s.count = ordered_layers(producers, key, now, &mut s.layers);
            if s.count == 0 {
                continue;
            }
            for (b, l) in s.bps.iter_mut().zip(s.layers.iter()) {
                *b = l.0;
            }
            s.consumer = i;
            n += 1;
        }
        let streams = streams.get(..n).unwrap_or_default();
        let empty: &[u64] = &[];
        let mut requests: [StreamRequest<'_>; MAX_STREAMS] =
            std::array::from_fn(|_| StreamRequest {
                kind: AllocKind::Audio,
                priority: Priority::Normal,
                layers_bps: empty,
                max_layer: None,
                current: None,
            });
        for (r, s) in requests.iter_mut().zip(streams) {
            let Some(c) = ep.consumers.get(s.consumer) else {
                continue;
            };
            let layers = s.layers.get(..s.count).unwrap_or_default();
            let screen = c
                .source
                .and_then(|key| producers.get(&key))
                .is_some_and(|p| p.source == TrackSource::Screen);
            *r = StreamRequest {
                kind: match c.kind {
                    MediaKind::Audio => AllocKind::Audio,
                    MediaKind::Video => AllocKind::Video,
                },
                priority: if screen {
                    Priority::Screen
                } else if c.pinned {
                    Priority::Pinned
                } else {
                    Priority::Normal
                },
                layers_bps: s.bps.get(..s.count).unwrap_or_default(),
                // Until its layers' bitrates are measured (costs of 1), a
                // track gets its lowest layer: nothing says what fits.
                max_layer: if s.bps.iter().take(s.count).all(|&b| b <= 1) {
                    Some(0)
                } else {
                    c.max_layer.map(usize::from)
                },
                current: c
                    .layer
                    .and_then(|l| layers.iter().position(|&(_, ssrc)| ssrc == l)),
            };
        }
        let mut out = [None; MAX_STREAMS];
        let (Some(reqs), Some(outs)) = (requests.get(..n), out.get_mut(..n)) else {
            return;
        };
        match egress.judge_trial(now) {
            Some(true) => {
                stats.inc(super::Counter::TrialsPassed);
                // The path had room: look for the next upgrade at once.
                egress.probe_gap = PROBE_GAP;
                egress.last_probe = None;
            }
            Some(false) => {
                stats.inc(super::Counter::TrialsFailed);
                // As a probe that did not find what it looked for.
                egress.probe_gap = (egress.probe_gap * 2).min(PROBE_GAP_MAX);
                egress.last_probe = Some(now);
            }
            None => {}
        }
        let result = alloc::allocate(estimate, reqs, outs);
        egress.allocated = true;
        stats.inc(super::Counter::Allocations);
        // Upgrades: a video above the layer it is heading for, or a paused
        // one resumed. Beyond what the path has carried, they wait for a
        // trial (see the module doc).
        // Per stream: whether it is upgraded, and the layer it heads for.
        let mut upgrades = [(false, None); MAX_STREAMS];
        let mut any_upgrade = false;
        for ((s, &choice), (up, heading)) in streams.iter().zip(out.iter()).zip(upgrades.iter_mut())
        {
            let Some(c) = ep.consumers.get(s.consumer) else {
                continue;
            };
            if c.kind != MediaKind::Video {
                continue;
            }
            let layers = s.layers.get(..s.count).unwrap_or_default();
            *heading = c
                .target
                .and_then(|t| layers.iter().position(|&(_, ssrc)| ssrc == t));
            *up = match (*heading, choice) {
                (Some(h), Some(to)) => to > h,
                (None, Some(_)) => c.paused(),
                _ => false,
            };
            any_upgrade |= *up;
        }
        let can_pad = ep.consumers.iter().any(|c| {
            c.attached
                && c.kind == MediaKind::Video
                && c.rtx.as_deref().is_some_and(|r| r.tx_stream.is_some())
        });
        if any_upgrade && can_pad && result.used_bps > egress.carried_bps(now) {
            if egress.trial.is_none() && egress.probe.is_none() {
                let target = result.used_bps * alloc::UPGRADE_MARGIN_PERCENT / 100;
                egress.trial = Some(Trial {
                    need_bps: result.used_bps,
                    target_bps: target,
                    numbered_at_start: egress.numbered_bytes,
                    started: now,
                    ends: now + TRIAL,
                    bytes: 0,
                    acked_sum: 0,
                    acked_samples: 0,
                    congested: false,
                    next_at: Some(now),
                });
                stats.inc(super::Counter::TrialsStarted);
            }
            // Until it passes, each upgraded video keeps its course.
            for (o, &(up, heading)) in out.iter_mut().zip(upgrades.iter()) {
                if up {
                    *o = heading;
                }
            }
        }
        if estimate >= egress.probed_bps {
            // The last probe found what it looked for (or none was sent).
            egress.probe_gap = PROBE_GAP;
        }
        // No probe while more than the estimate already gets through: the
        // probe would come on top of media that fills the path, and the
        // loss it causes keeps the estimate down.
        if result.wants_probe_bps > 0
            && acked <= estimate
            && egress.probe.is_none()
            && egress.trial.is_none()
            && egress
                .last_probe
                .is_none_or(|t| now.saturating_duration_since(t) >= egress.probe_gap)
        {
            // The next upgrade needs more than the estimate: probe for it.
            egress.probes = egress.probes.wrapping_add(1);
            let bps = (estimate + result.wants_probe_bps).min(estimate * 2);
            // A paused video is probed for at the shortest gap: it is
            // frozen until a probe finds room for its lowest layer.
            let paused = ep.consumers.iter().any(|c| c.paused());
            if egress.last_probe.is_some() && !paused {
                egress.probe_gap = (egress.probe_gap * 2).min(PROBE_GAP_MAX);
            }
            egress.probed_bps = bps;
            egress.probe = Some(Probe {
                id: egress.probes,
                bps,
                started: now,
                bytes: 0,
                sent: 0,
                next_at: now,
            });
            stats.inc(super::Counter::ProbesStarted);
        }
        // Video consumers re-targeted; the layers that need a keyframe.
        let mut wanted = [0u32; MAX_STREAMS];
        let mut n_wanted = 0;
        for (s, &choice) in streams.iter().zip(out.iter()) {
            let Some(c) = ep.consumers.get_mut(s.consumer) else {
                continue;
            };
            if c.kind == MediaKind::Audio {
                continue;
            }
            let layers = s.layers.get(..s.count).unwrap_or_default();
            let mut target = choice.and_then(|at| layers.get(at)).map(|&(_, ssrc)| ssrc);
            // Pause only when the estimate is far below the lowest layer: a
            // video that freezes while the estimate is near its lowest layer
            // cannot raise the estimate again (only what is sent is
            // acknowledged), so it keeps its lowest layer down to half of
            // that layer's bitrate.
            // Nor while what the subscriber acknowledged over the last
            // 500 ms covers it: a burst of loss (a higher layer draining
            // through a shaper) drives the loss-based estimate below what
            // the path still carries (Chromium under a 250 kbit/s tbf:
            // estimate 50 kbit/s, acknowledged 150 kbit/s).
            // A track of one layer is never paused: random loss (not
            // congestion) can drive the loss-based estimate far down, and
            // a paused single-layer video has no cheaper layer to resume at.
            if target.is_none()
                && let Some(&(lowest_bps, lowest)) = layers.first()
                && (s.count == 1 || estimate.saturating_mul(2) >= lowest_bps || acked >= lowest_bps)
            {
                target = Some(lowest);
            }
            if target == c.target {
                continue;
            }
            if target.is_none() {
                // Paused: nothing forwarded until a layer fits again.
                c.layer = None;
                stats.inc(super::Counter::ConsumersPaused);
            }
            c.target = target;
            if let Some(t) = target.filter(|&t| Some(t) != c.layer)
                && let Some(at) = wanted.get_mut(n_wanted)
            {
                *at = t;
                n_wanted += 1;
            }
        }
        for t in wanted.iter().take(n_wanted) {
            if let Some(p) = producers.get_mut(t) {
                p.keyframe_wanted = true;
            }
        }
    }

    /// Sends the due padding of the subscriber in `slot`: its probe
    /// cluster's packets (numbered as probe `id` for the estimator), or else
    /// its upgrade trial's, each paced at its rate, as padding-only packets
    /// on the RTX stream of one of its video consumers. A subscriber without
    /// RTX is not padded (its probe ends at once; it gets no trial).
    pub(super) fn send_probe<T: super::Transmit>(&mut self, slot: u32, now: Instant, tx: &mut T) {
        let Self {
            endpoints, stats, ..
        } = self;
        let Some(Some(ep)) = endpoints.get_mut(slot as usize) else {
            return;
        };
        let (Some(dst), Some(keys), Some(egress)) = (
            ep.transport.remote,
            ep.transport.keys.as_mut(),
            ep.transport.egress.as_deref_mut(),
        ) else {
            return;
        };
        let probe = egress.probe.filter(|p| p.next_at <= now);
        let trial = egress
            .trial
            .filter(|t| egress.probe.is_none() && t.next_at.is_some_and(|at| at <= now));
        if probe.is_none() && trial.is_none() {
            return;
        }
        let rtx = ep
            .consumers
            .iter_mut()
            .filter(|c| c.attached && c.kind == MediaKind::Video)
            .find_map(|c| c.rtx.as_deref_mut().filter(|r| r.tx_stream.is_some()));
        let Some(rtx) = rtx else {
            egress.probe = None;
            egress.trial = None;
            egress.last_probe = Some(now);
            return;
        };
        // Bytes due by now at the rate; the first packet at once. (Forcing
        // a packet every step instead sent every probe at 2.3 Mbit/s or
        // more, whatever its rate: a shaper's burst let such a cluster
        // through at line rate and the estimate jumped to it.)
        let (bps, started, sent_bytes, kind) = match (probe, trial) {
            (Some(p), _) => (p.bps, p.started, p.bytes, bwe::SentKind::Probe(p.id)),
            (None, Some(t)) => (t.target_bps, t.started, t.bytes, bwe::SentKind::Padding),
            (None, None) => return,
        };
        let elapsed = now.saturating_duration_since(started).as_micros() as u64;
        let mut due = (bps * elapsed / 8 / 1_000_000).max(1);
        if let Some(t) = trial {
            // What media and RTX sent since the start counts towards it.
            let others = egress.numbered_bytes.wrapping_sub(t.numbered_at_start);
            due = due.saturating_sub(others);
        }
        let mut bytes = sent_bytes;
        let mut packets = 0u32;
        let budget = probe.map_or(u32::MAX, |p| PROBE_PACKETS.saturating_sub(p.sent));
        // A trial stops padding at the first sign of congestion: it has
        // failed, and its padding would only fill the bottleneck's queue.
        let congested = trial.is_some()
            && egress.estimator.delay_state() == bwe::delay::BandwidthUsage::Overusing;
        while !congested && bytes < due && packets < budget {
            let Some(out) = tx.buffer() else {
                stats.drop(super::DropReason::PoolExhausted);
                break;
            };
            let seq = egress.seq;
            let Some(len) = write_padding(out, rtx, egress.ext, seq) else {
                break;
            };
            let Some(stream) = rtx.tx_stream else {
                break;
            };
            match keys.tx.protect_rtp_stream(stream, out, len) {
                Ok(n) => {
                    egress.seq = egress.seq.wrapping_add(1);
                    egress.estimator.on_sent_as(seq, n, kind, now);
                    tx.send(n, dst);
                    stats.sent(n);
                    stats.inc(if probe.is_some() {
                        super::Counter::ProbePackets
                    } else {
                        super::Counter::TrialPackets
                    });
                    bytes += n as u64;
                    packets += 1;
                }
                Err(_) => {
                    stats.drop(super::DropReason::ProtectFailed);
                    break;
                }
            }
        }
        if let Some(mut p) = probe {
            p.bytes = bytes;
            p.sent += packets;
            if p.sent >= PROBE_PACKETS {
                egress.probe = None;
                egress.last_probe = Some(now);
            } else {
                p.next_at = now + PROBE_STEP;
                egress.probe = Some(p);
            }
        } else if let Some(mut t) = trial {
            t.bytes = bytes;
            // After its end (or congestion) it waits to be judged.
            t.next_at = (!congested && now + PROBE_STEP < t.ends).then_some(now + PROBE_STEP);
            egress.trial = Some(t);
        }
    }
}

/// Writes a padding-only RTX packet (for a probe) into `out`: the RTX
/// stream's SSRC, payload type and next sequence number, the transport-wide
/// number `seq` under `ext`, no payload and [`PROBE_PADDING`] bytes of
/// padding. Returns its length.
fn write_padding(
    out: &mut [u8],
    rtx: &mut super::repair::ConsumerRtx,
    ext: u8,
    seq: u16,
) -> Option<usize> {
    let len = 12 + 8 + PROBE_PADDING;
    if len + 16 > out.len() {
        return None;
    }
    let rtx_seq = rtx.next_seq();
    let header = out.get_mut(..20)?;
    header[0] = 0x80 | 0x20 | 0x10;
    header[1] = rtx.payload_type & 0x7f;
    header[2..4].copy_from_slice(&rtx_seq.to_be_bytes());
    header[4..8].copy_from_slice(&0u32.to_be_bytes());
    header[8..12].copy_from_slice(&rtx.ssrc.to_be_bytes());
    header[12..20].copy_from_slice(&twcc_block(ext, seq));
    let padding = out.get_mut(20..len)?;
    padding.fill(0);
    if let Some(last) = padding.last_mut() {
        *last = PROBE_PADDING as u8;
    }
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retransmissions_take_at_most_a_quarter_of_the_estimate() {
        let t0 = Instant::now();
        let mut e = Egress::new(5, t0);
        // 300 kbit/s start: 9,375 bytes/s for RTX, a burst of 6,000 bytes.
        assert_eq!(e.estimator.target_bps(), START_BPS);
        for _ in 0..4 {
            assert!(e.rtx_fits(1500, t0));
            e.spend_rtx(1500);
        }
        assert!(!e.rtx_fits(1500, t0), "the burst is spent");
        // 1,500 bytes at 9,375 bytes/s: 160 ms.
        assert!(!e.rtx_fits(1500, t0 + Duration::from_millis(150)));
        assert!(e.rtx_fits(1500, t0 + Duration::from_millis(161)));
        e.spend_rtx(1500);
        // Over ten seconds no more than the rate plus the burst.
        let mut sent = 0u64;
        for ms in 0..10_000u64 {
            let now = t0 + Duration::from_millis(161 + ms);
            if e.rtx_fits(1200, now) {
                e.spend_rtx(1200);
                sent += 1200;
            }
        }
        assert!((90_000..=99_750).contains(&sent), "{sent}");
    }
}
