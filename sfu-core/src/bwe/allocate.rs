//! Splitting a subscriber's estimate between its streams: which layer of
//! each stream to forward, or none.
//!
//! # Policy
//! 1. Audio first: every audio stream its (single) layer, in priority order,
//!    while it fits.
//! 2. Then every video stream its lowest layer, in priority order; a stream
//!    whose lowest layer does not fit what is left is paused. Lower priority
//!    streams therefore pause first; a cheaper lower-priority stream may
//!    still fit after a dearer higher-priority one did not.
//! 3. Then rounds of upgrades: in each round every video stream, in priority
//!    order ([`Priority::Screen`], then [`Priority::Pinned`], then
//!    [`Priority::Normal`]; slice order within a priority), moves up one
//!    layer if the budget allows, never above its cap; rounds repeat until
//!    none moves.
//!
//! # Hysteresis
//! Taking a layer above the one a stream has now ([`StreamRequest::current`])
//! needs the budget available to the stream — what is left plus what it
//! already holds — to reach [`UPGRADE_MARGIN_PERCENT`] % of the new layer's
//! bitrate; resuming a paused stream likewise. Keeping the current layer (or
//! going back to one below it) needs 100 %. So an estimate hovering around
//! a layer's bitrate does not switch layers on every update.
//!
//! # Probing
//! [`Allocation::wants_probe_bps`] is what the next upgrade (the first one, in
//! the order above, that did not fit) lacks. The router can send that much
//! padding or RTX as a probe cluster
//! ([`SentKind::Probe`](super::SentKind::Probe)) and upgrade once the
//! estimate has risen, rather than upgrade blindly and congest the path.

/// An upgrade needs the budget to reach this percentage of the new layer's
/// bitrate.
pub const UPGRADE_MARGIN_PERCENT: u64 = 110;

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// One layer, allocated before any video.
    Audio,
    /// One to three layers (simulcast or SVC), lowest first.
    Video,
}

/// How much a stream matters to the subscriber; ordered, highest last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Any other participant.
    Normal,
    /// A participant the subscriber pinned (or the active speaker).
    Pinned,
    /// A screen share.
    Screen,
}

/// Priorities from highest to lowest.
const ORDER: [Priority; 3] = [Priority::Screen, Priority::Pinned, Priority::Normal];

/// One stream the subscriber receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamRequest<'a> {
    /// Audio or video.
    pub kind: MediaKind,
    /// Its priority.
    pub priority: Priority,
    /// Bitrate of each available layer, bps, ascending. Audio uses the
    /// first only; an empty slice means nothing to forward.
    pub layers_bps: &'a [u64],
    /// Highest layer index allowed (the subscriber's preference, the size of
    /// its video element); `None` for no cap.
    pub max_layer: Option<usize>,
    /// The layer forwarded now, `None` when paused or new: the reference for
    /// hysteresis.
    pub current: Option<usize>,
}

impl StreamRequest<'_> {
    /// Highest layer index this stream may get, if any.
    fn top(&self) -> Option<usize> {
        let last = match self.kind {
            MediaKind::Audio => 0,
            MediaKind::Video => self.layers_bps.len().checked_sub(1)?,
        };
        let cap = self.max_layer.unwrap_or(usize::MAX);
        (!self.layers_bps.is_empty()).then_some(last.min(cap))
    }

    /// Budget needed to forward `layer`: its bitrate, plus the upgrade
    /// margin above the current layer.
    fn need(&self, layer: usize) -> u64 {
        let bps = self.layers_bps.get(layer).copied().unwrap_or(u64::MAX);
        if self.current.is_some_and(|c| layer <= c) {
            return bps;
        }
        let with_margin = u128::from(bps) * u128::from(UPGRADE_MARGIN_PERCENT) / 100;
        u64::try_from(with_margin).unwrap_or(u64::MAX)
    }
}

/// The outcome of [`allocate`] beside the per-stream layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Allocation {
    /// Sum of the chosen layers' bitrates, bps.
    pub used_bps: u64,
    /// Streams paused (`None`) though they had something to forward.
    pub paused: usize,
    /// How much more budget the next upgrade (or resume) needs, bps; 0 when
    /// every stream is at its cap.
    pub wants_probe_bps: u64,
}

/// Chooses a layer per stream within `estimate_bps` (see the module doc for
/// the policy) and writes it to `out[i]` for `streams[i]`: `Some(layer
/// index)`, or `None` for paused. Never allocates.
///
/// # Panics
/// If `out` and `streams` differ in length (a caller's programming error).
pub fn allocate(
    estimate_bps: u64,
    streams: &[StreamRequest<'_>],
    out: &mut [Option<usize>],
) -> Allocation {
    assert_eq!(streams.len(), out.len(), "one output per stream");
    out.fill(None);
    let mut left = estimate_bps;
    // 1 and 2: audio, then each video's lowest layer, by priority.
    for kind in [MediaKind::Audio, MediaKind::Video] {
        for priority in ORDER {
            for (s, o) in streams.iter().zip(out.iter_mut()) {
                if s.kind != kind || s.priority != priority || s.top().is_none() {
                    continue;
                }
                let need = s.need(0);
                if need <= left {
                    left -= s.layers_bps[0];
                    *o = Some(0);
                }
            }
        }
    }
    // 3: one step per stream per round.
    loop {
        let mut moved = false;
        for priority in ORDER {
            for (s, o) in streams.iter().zip(out.iter_mut()) {
                if s.kind != MediaKind::Video || s.priority != priority {
                    continue;
                }
                let (Some(layer), Some(top)) = (*o, s.top()) else {
                    continue;
                };
                if layer >= top {
                    continue;
                }
                let held = s.layers_bps[layer];
                if s.need(layer + 1) <= left.saturating_add(held) {
                    left = left.saturating_add(held) - s.layers_bps[layer + 1];
                    *o = Some(layer + 1);
                    moved = true;
                }
            }
        }
        if !moved {
            break;
        }
    }
    let mut result = Allocation {
        used_bps: estimate_bps.saturating_sub(left),
        ..Allocation::default()
    };
    // What the next step lacks: resuming paused streams comes first (audio,
    // then video, by priority), then upgrades, by priority.
    for kind in [MediaKind::Audio, MediaKind::Video] {
        for priority in ORDER {
            for (s, o) in streams.iter().zip(out.iter()) {
                if s.kind == kind && s.priority == priority && o.is_none() && s.top().is_some() {
                    result.paused += 1;
                    if result.wants_probe_bps == 0 {
                        result.wants_probe_bps = s.need(0).saturating_sub(left);
                    }
                }
            }
        }
    }
    for priority in ORDER {
        for (s, o) in streams.iter().zip(out.iter()) {
            if result.wants_probe_bps != 0 || s.kind != MediaKind::Video || s.priority != priority {
                continue;
            }
            if let (Some(layer), Some(top)) = (*o, s.top())
                && layer < top
            {
                let held = s.layers_bps[layer];
                result.wants_probe_bps =
                    s.need(layer + 1).saturating_sub(left.saturating_add(held));
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUDIO: &[u64] = &[40_000];
    const SIMULCAST: &[u64] = &[150_000, 500_000, 1_500_000];

    fn video(priority: Priority) -> StreamRequest<'static> {
        StreamRequest {
            kind: MediaKind::Video,
            priority,
            layers_bps: SIMULCAST,
            max_layer: None,
            current: None,
        }
    }

    fn audio() -> StreamRequest<'static> {
        StreamRequest {
            kind: MediaKind::Audio,
            priority: Priority::Normal,
            layers_bps: AUDIO,
            max_layer: None,
            current: None,
        }
    }

    fn run(estimate: u64, streams: &[StreamRequest<'_>]) -> (Vec<Option<usize>>, Allocation) {
        let mut out = vec![Some(7); streams.len()];
        let a = allocate(estimate, streams, &mut out);
        (out, a)
    }

    #[test]
    fn audio_first_then_lowest_layers() {
        let streams = [video(Priority::Normal), audio(), video(Priority::Normal)];
        // Audio fits, one lowest layer fits (with hysteresis: 165 kbit/s).
        let (out, a) = run(40_000 + 170_000, &streams);
        assert_eq!(out, [Some(0), Some(0), None]);
        assert_eq!(a.used_bps, 190_000);
        assert_eq!(a.paused, 1);
        assert_eq!(a.wants_probe_bps, 165_000 - 20_000);
        // Not even audio.
        let (out, a) = run(30_000, &streams);
        assert_eq!(out, [None, None, None]);
        assert_eq!(a.paused, 3);
        assert_eq!(a.wants_probe_bps, 44_000 - 30_000);
        // Both lowest layers before any upgrade.
        let (out, _) = run(40_000 + 2 * 165_000 + 100_000, &streams);
        assert_eq!(out, [Some(0), Some(0), Some(0)]);
    }

    #[test]
    fn priority_order_and_caps() {
        let mut pinned = video(Priority::Pinned);
        pinned.max_layer = Some(1);
        let streams = [video(Priority::Normal), pinned, video(Priority::Screen)];
        // Lowest layers: 450 k. One round of upgrades costs 350 k each (at
        // 110 %: 400 k of headroom each).
        let (out, a) = run(450_000 + 800_000, &streams);
        assert_eq!(out, [Some(0), Some(1), Some(1)]);
        assert_eq!(a.used_bps, 150_000 + 1_000_000);
        // Plenty: the screen share reaches the top, pinned stops at its cap.
        let (out, a) = run(10_000_000, &streams);
        assert_eq!(out, [Some(2), Some(1), Some(2)]);
        assert_eq!(a.wants_probe_bps, 0);
        // Little: only the screen share's lowest layer, then pinned's.
        let (out, _) = run(200_000, &streams);
        assert_eq!(out, [None, None, Some(0)]);
        let (out, _) = run(340_000, &streams);
        assert_eq!(out, [None, Some(0), Some(0)]);
    }

    #[test]
    fn hysteresis_keeps_current_layers() {
        let mut v = video(Priority::Normal);
        // 520 k: not 110 % of 500 k, so no upgrade from layer 0...
        let (out, a) = run(520_000, &[v]);
        assert_eq!(out, [Some(0)]);
        assert_eq!(a.wants_probe_bps, 550_000 - 520_000);
        // ...but enough to keep layer 1.
        v.current = Some(1);
        let (out, _) = run(520_000, &[v]);
        assert_eq!(out, [Some(1)]);
        // A paused stream resumes at 110 % only.
        v.current = None;
        assert_eq!(run(160_000, &[v]).0, [None]);
        v.current = Some(0);
        assert_eq!(run(160_000, &[v]).0, [Some(0)]);
    }

    #[test]
    fn odd_input_does_not_panic() {
        let empty: &[u64] = &[];
        let weird = [u64::MAX, 0, 5];
        let streams = [
            StreamRequest {
                layers_bps: empty,
                ..video(Priority::Screen)
            },
            StreamRequest {
                layers_bps: &weird,
                current: Some(9),
                max_layer: Some(0),
                ..video(Priority::Normal)
            },
            StreamRequest {
                layers_bps: empty,
                ..audio()
            },
        ];
        for estimate in [0, 1, u64::MAX] {
            run(estimate, &streams);
        }
    }
}
