//! Per-consumer sequence-number and timestamp rewriting (mediasoup's
//! `SeqManager`, plus the timestamp side).
//!
//! A consumer's output must look like one continuous RTP stream to the
//! subscriber even when its source changes: another producer is switched in
//! (active speaker), the producer is replaced (publisher reconnects with the
//! same SSRC) or restarts its numbering. [`StreamRewriter`] keeps an offset for
//! each field and re-bases it on such a change so that the next output
//! sequence number is one past the highest already sent and the next output
//! timestamp advances by the wall-clock time since the last packet.
//!
//! # Dropped input
//! A packet the router does not forward (a publisher's padding-only
//! packet) is handed to [`StreamRewriter::drop_input`]: later input is
//! numbered as if it had never existed, so the subscriber sees no gap,
//! while input older than it (reordered, or a publisher's retransmission)
//! keeps the number it had before. The rewriter remembers which input
//! numbers it dropped in a fixed bitmap of the last [`DROP_WINDOW`] input
//! numbers (mediasoup's `SeqManager::Drop` keeps such a set): a late packet
//! is numbered by counting the drops after it, and a NACKed output number
//! is mapped back ([`StreamRewriter::input_seq`]) by counting kept input
//! numbers down from the newest. A dropped packet that arrives after later
//! input was already numbered changes nothing: its number stays unused.
//! Late input from before a drop that has left the window is refused, as is
//! input from before a re-base; a NACK for such an old number is
//! [forgotten](StreamRewriter::forgotten), older than any packet cache
//! holds. Nothing allocates; without drops the bitmap is never read.

use std::time::Instant;

/// A sequence jump larger than this, either way, is taken as a restart of the
/// source's numbering rather than loss or reordering.
pub const RESTART_JUMP: u16 = 0x2000;

/// Input sequence numbers (the newest ones) whose drops a rewriter
/// remembers; a power of two that divides 2^16.
pub const DROP_WINDOW: u16 = 1024;
/// Words of the drop bitmap.
const DROP_WORDS: usize = DROP_WINDOW as usize / 64;

/// Rewrites one consumer's sequence numbers and timestamps.
#[derive(Debug, Clone)]
pub struct StreamRewriter {
    clock_rate: u32,
    state: State,
    seq_offset: u16,
    ts_offset: u32,
    /// Highest input sequence number since the last re-base.
    max_in: u16,
    /// Highest output sequence number ever sent.
    max_out: u16,
    /// Output sequence number of the first packet after the last re-base:
    /// older input would land on numbers already used for the old source.
    base_out: u16,
    /// Highest output timestamp ever sent, and when.
    max_ts_out: u32,
    max_ts_at: Option<Instant>,
    /// Input numbers dropped since the last re-base within [`DROP_WINDOW`]
    /// of `max_in`, one bit per number modulo the window.
    dropped: [u64; DROP_WORDS],
    /// Bits set in `dropped` (0: the bitmap is not consulted).
    drops: u16,
    /// The newest dropped number that has left the window: how many drops
    /// follow older input is no longer known, so such input is refused.
    forgotten_drop: Option<u16>,
}

/// Why an output number does not map back to input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unmapped {
    /// Not sent since the last re-base.
    Unknown,
    /// Sent, but before a drop the rewriter no longer remembers.
    Forgotten,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Fresh,
    Resync,
    Synced,
}

impl StreamRewriter {
    /// A rewriter whose first output packet gets `first_seq` and `first_ts`.
    pub fn new(clock_rate: u32, first_seq: u16, first_ts: u32) -> Self {
        Self {
            clock_rate,
            state: State::Fresh,
            seq_offset: 0,
            ts_offset: 0,
            max_in: 0,
            max_out: first_seq.wrapping_sub(1),
            base_out: first_seq,
            max_ts_out: first_ts,
            max_ts_at: None,
            dropped: [0; DROP_WORDS],
            drops: 0,
            forgotten_drop: None,
        }
    }

    /// The source changed (switched, replaced, restarted): the next packet
    /// continues the output after the last one sent.
    pub fn resync(&mut self) {
        if self.state == State::Synced {
            self.state = State::Resync;
        }
    }

    /// Sets the clock rate used to advance the timestamp across a re-base
    /// (a switch between sources of different rates).
    pub fn set_clock_rate(&mut self, clock_rate: u32) {
        self.clock_rate = clock_rate;
    }

    /// The output (sequence number, timestamp) for an input packet, or `None`
    /// for a late packet from before the last re-base, which would collide
    /// with numbers already sent.
    pub fn rewrite(&mut self, seq: u16, ts: u32, now: Instant) -> Option<(u16, u32)> {
        match self.state {
            State::Fresh => {
                self.rebase(seq, ts, self.max_out.wrapping_add(1), self.max_ts_out);
                self.state = State::Synced;
            }
            State::Resync => self.rebase_after_gap(seq, ts, now),
            State::Synced => {
                let d = seq.wrapping_sub(self.max_in) as i16;
                if d.unsigned_abs() > RESTART_JUMP {
                    self.rebase_after_gap(seq, ts, now);
                } else if d > 0 {
                    self.advance(seq);
                } else {
                    // Reordered or duplicate: numbered as it would have been
                    // before the drops that followed it; refused when it
                    // predates the re-base point (or a forgotten drop), or
                    // is itself a dropped number (its number is taken).
                    let out = self.late_output(seq)?;
                    if (out.wrapping_sub(self.base_out) as i16) < 0 {
                        return None;
                    }
                    return Some(self.sent(out, ts.wrapping_add(self.ts_offset), now));
                }
            }
        }
        let out_seq = seq.wrapping_add(self.seq_offset);
        let out_ts = ts.wrapping_add(self.ts_offset);
        Some(self.sent(out_seq, out_ts, now))
    }

    /// Input `seq` is not forwarded (a padding-only packet): later input is
    /// numbered as if it did not exist. Only the newest input shifts the
    /// numbering; a dropped packet older than input already numbered, one
    /// before the first packet since a re-base, or a jump that the next
    /// forwarded packet will take as a restart changes nothing.
    pub fn drop_input(&mut self, seq: u16) {
        if self.state != State::Synced {
            return;
        }
        let d = seq.wrapping_sub(self.max_in) as i16;
        if d <= 0 || d.unsigned_abs() > RESTART_JUMP {
            return;
        }
        self.advance(seq);
        let (word, bit) = drop_bit(seq);
        if let Some(w) = self.dropped.get_mut(word) {
            *w |= bit;
            self.drops += 1;
        }
        self.seq_offset = self.seq_offset.wrapping_sub(1);
    }

    /// Records output `out_seq`/`out_ts` as sent at `now`.
    fn sent(&mut self, out_seq: u16, out_ts: u32, now: Instant) -> (u16, u32) {
        if (out_seq.wrapping_sub(self.max_out) as i16) > 0 {
            self.max_out = out_seq;
            // Keep the re-base point within RESTART_JUMP of the newest
            // number, so the wrapping comparisons with it stay meaningful
            // after half the sequence space: anything further back is a
            // restart (above), never a late packet of this source.
            if self.max_out.wrapping_sub(self.base_out) > RESTART_JUMP {
                self.base_out = self.max_out.wrapping_sub(RESTART_JUMP);
            }
        }
        if self.max_ts_at.is_none() || (out_ts.wrapping_sub(self.max_ts_out) as i32) > 0 {
            self.max_ts_out = out_ts;
            self.max_ts_at = Some(now);
        }
        (out_seq, out_ts)
    }

    /// The output number of late input `seq` (at or before `max_in`): its
    /// offset plus the drops after it; `None` for a dropped number or one
    /// before a forgotten drop.
    fn late_output(&self, seq: u16) -> Option<u16> {
        if self.drops == 0 && self.forgotten_drop.is_none() {
            return Some(seq.wrapping_add(self.seq_offset));
        }
        let behind = self.max_in.wrapping_sub(seq);
        if behind < DROP_WINDOW {
            let (word, bit) = drop_bit(seq);
            if self.dropped.get(word).is_some_and(|w| w & bit != 0) {
                return None;
            }
        } else if self
            .forgotten_drop
            .is_some_and(|f| (f.wrapping_sub(seq) as i16) >= 0)
        {
            return None;
        }
        let after = self.drops_after(seq);
        Some(seq.wrapping_add(self.seq_offset).wrapping_add(after))
    }

    /// Drops recorded after input `seq` up to `max_in` (all of them when
    /// `seq` is older than the window).
    fn drops_after(&self, seq: u16) -> u16 {
        let behind = self.max_in.wrapping_sub(seq);
        if self.drops == 0 || behind == 0 {
            return 0;
        }
        if behind >= DROP_WINDOW {
            return self.drops;
        }
        // Positions seq+1 ..= max_in, word by word.
        let mut at = seq.wrapping_add(1);
        let mut left = behind;
        let mut count = 0u32;
        while left > 0 {
            let bit = at % 64;
            let n = (64 - bit).min(left);
            let mask = low_bits(n) << bit;
            let (word, _) = drop_bit(at);
            count += self
                .dropped
                .get(word)
                .map_or(0, |w| (w & mask).count_ones());
            at = at.wrapping_add(n);
            left -= n;
        }
        count as u16
    }

    /// `max_in` moves forward to `seq`: the numbers it passes leave the
    /// window (a drop among them is forgotten).
    fn advance(&mut self, seq: u16) {
        let from = self.max_in;
        self.max_in = seq;
        if let Some(f) = self.forgotten_drop
            && seq.wrapping_sub(f) > RESTART_JUMP
        {
            // Anything that old is taken as a restart, never mapped.
            self.forgotten_drop = None;
        }
        if self.drops == 0 {
            return;
        }
        let d = seq.wrapping_sub(from);
        if d >= DROP_WINDOW {
            // Every recorded drop leaves (the newest is at most `from`).
            self.dropped = [0; DROP_WORDS];
            self.drops = 0;
            self.forgotten_drop = Some(from);
            return;
        }
        for i in 1..=d {
            // Number `from + i` takes the bit of `from + i - DROP_WINDOW`.
            let at = from.wrapping_add(i);
            let (word, bit) = drop_bit(at);
            if let Some(w) = self.dropped.get_mut(word)
                && *w & bit != 0
            {
                *w &= !bit;
                self.drops = self.drops.saturating_sub(1);
                self.forgotten_drop = Some(at.wrapping_sub(DROP_WINDOW));
                if self.drops == 0 {
                    return;
                }
            }
        }
    }

    /// The input number `k` kept (not dropped) numbers below the newest
    /// input (`k` = 0: the newest kept one).
    fn kept_below(&self, k: u16) -> u16 {
        let mut k = u32::from(k);
        let mut at = self.max_in;
        let mut left = DROP_WINDOW;
        while left > 0 {
            // Positions at, at-1, ..., at-n+1: the rest of this word.
            let bit = at % 64;
            let n = (bit + 1).min(left);
            let (word, _) = drop_bit(at);
            let w = self.dropped.get(word).copied().unwrap_or(0);
            let mask = low_bits(n) << (bit + 1 - n);
            let kept = u32::from(n) - (w & mask).count_ones();
            if k < kept {
                for i in 0..n {
                    if w & (1u64 << (bit - i)) == 0 {
                        if k == 0 {
                            return at.wrapping_sub(i);
                        }
                        k -= 1;
                    }
                }
            }
            k = k.saturating_sub(kept);
            at = at.wrapping_sub(n);
            left -= n;
        }
        // Below the window no drop is recorded.
        at.wrapping_sub(k as u16)
    }

    /// The input sequence number that was (or would be) sent as `out_seq`
    /// since the last re-base, if any: what a NACK for `out_seq` asks the
    /// source to repeat. `None` for numbers of an earlier source, not yet
    /// sent, before the first packet, or [forgotten](Self::forgotten).
    pub fn input_seq(&self, out_seq: u16) -> Option<u16> {
        self.map_back(out_seq).ok()
    }

    /// Whether `out_seq` was sent since the last re-base but lies before a
    /// dropped number that has left the window ([`DROP_WINDOW`] input
    /// numbers), so it no longer maps back: older than any packet cache
    /// holds (the caches keep at most [`DROP_WINDOW`] packets).
    pub fn forgotten(&self, out_seq: u16) -> bool {
        self.map_back(out_seq) == Err(Unmapped::Forgotten)
    }

    fn map_back(&self, out_seq: u16) -> Result<u16, Unmapped> {
        if self.state != State::Synced
            || (out_seq.wrapping_sub(self.base_out) as i16) < 0
            || (self.max_out.wrapping_sub(out_seq) as i16) < 0
        {
            return Err(Unmapped::Unknown);
        }
        if self.drops == 0 && self.forgotten_drop.is_none() {
            return Ok(out_seq.wrapping_sub(self.seq_offset));
        }
        // The newest input's number, then one less per kept input below it.
        let head = self.max_in.wrapping_add(self.seq_offset);
        let k = head.wrapping_sub(out_seq);
        if (k as i16) < 0 {
            return Err(Unmapped::Unknown);
        }
        let seq = self.kept_below(k);
        // Checked the other way: a number before a forgotten drop is not
        // known.
        match self.late_output(seq) {
            Some(out) if out == out_seq => Ok(seq),
            Some(_) => Err(Unmapped::Unknown),
            None => Err(Unmapped::Forgotten),
        }
    }

    /// Whether a packet was sent since the last re-base, so the offsets
    /// are the current source's.
    pub fn synced(&self) -> bool {
        self.state == State::Synced
    }

    /// The output timestamp of input timestamp `ts` under the current
    /// offset (a retransmission carries the timestamp the original had).
    pub fn output_ts(&self, ts: u32) -> u32 {
        ts.wrapping_add(self.ts_offset)
    }

    /// The output sequence number of input `seq` under the current offset
    /// (and the drops after it, for input at or before the newest); `None`
    /// for a dropped number or one whose drops are forgotten.
    pub fn output_seq(&self, seq: u16) -> Option<u16> {
        if (seq.wrapping_sub(self.max_in) as i16) > 0 {
            return Some(seq.wrapping_add(self.seq_offset));
        }
        self.late_output(seq)
    }

    fn rebase_after_gap(&mut self, seq: u16, ts: u32, now: Instant) {
        let elapsed = self
            .max_ts_at
            .map_or(0, |at| now.saturating_duration_since(at).as_micros());
        let ticks = (elapsed * u128::from(self.clock_rate) / 1_000_000).max(1);
        let next_ts = self.max_ts_out.wrapping_add(ticks as u32);
        self.rebase(seq, ts, self.max_out.wrapping_add(1), next_ts);
        self.state = State::Synced;
    }

    fn rebase(&mut self, seq: u16, ts: u32, out_seq: u16, out_ts: u32) {
        self.seq_offset = out_seq.wrapping_sub(seq);
        self.ts_offset = out_ts.wrapping_sub(ts);
        self.max_in = seq;
        self.base_out = out_seq;
        if self.drops > 0 || self.forgotten_drop.is_some() {
            self.dropped = [0; DROP_WORDS];
            self.drops = 0;
            self.forgotten_drop = None;
        }
    }
}

/// The word and bit of input number `seq` in the drop bitmap.
fn drop_bit(seq: u16) -> (usize, u64) {
    let at = seq % DROP_WINDOW;
    (usize::from(at / 64), 1u64 << (at % 64))
}

/// A mask of the `n` (1..=64) lowest bits.
fn low_bits(n: u16) -> u64 {
    if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// (input seq, input ts, ms since start, resync before this packet,
    /// expected output).
    type Step = (u16, u32, u64, bool, Option<(u16, u32)>);

    fn run(first_seq: u16, first_ts: u32, steps: &[Step]) {
        let t0 = Instant::now();
        let mut r = StreamRewriter::new(90_000, first_seq, first_ts);
        for (i, &(seq, ts, ms, resync, want)) in steps.iter().enumerate() {
            if resync {
                r.resync();
            }
            let got = r.rewrite(seq, ts, t0 + Duration::from_millis(ms));
            assert_eq!(got, want, "step {i}: in ({seq}, {ts})");
        }
    }

    #[test]
    fn continuous_across_16_and_32_bit_wrap() {
        run(
            65_534,
            u32::MAX - 3000,
            &[
                (10, 1000, 0, false, Some((65_534, u32::MAX - 3000))),
                (11, 4000, 33, false, Some((65_535, u32::MAX))),
                (12, 7000, 66, false, Some((0, 2999))),
                (13, 10_000, 100, false, Some((1, 5999))),
            ],
        );
        // Input wraps while the output does not.
        run(
            100,
            0,
            &[
                (65_535, u32::MAX, 0, false, Some((100, 0))),
                (0, 2999, 33, false, Some((101, 3000))),
                (1, 5999, 66, false, Some((102, 6000))),
            ],
        );
    }

    #[test]
    fn loss_and_reordering_keep_the_offset() {
        run(
            1000,
            0,
            &[
                (50, 0, 0, false, Some((1000, 0))),
                (53, 9000, 100, false, Some((1003, 9000))), // 51, 52 lost so far
                (51, 3000, 101, false, Some((1001, 3000))), // late, still forwarded
                (53, 9000, 102, false, Some((1003, 9000))), // duplicate
                (54, 12_000, 133, false, Some((1004, 12_000))),
            ],
        );
    }

    #[test]
    fn switching_source_continues_numbering_and_time() {
        run(
            0,
            0,
            &[
                (500, 90_000, 0, false, Some((0, 0))),
                (501, 93_000, 33, false, Some((1, 3000))),
                // New source with unrelated numbering, 100 ms after the last
                // packet: seq continues at 2, ts advances by 100 ms of 90 kHz.
                (40_000, 7, 133, true, Some((2, 3000 + 9000))),
                (40_001, 3007, 166, false, Some((3, 3000 + 9000 + 3000))),
                // A late packet of the new source from before the switch point
                // would reuse output number 1: refused.
                (39_999, 0, 167, false, None),
                // A late packet of the old source: far away, taken as restart.
                (502, 96_000, 170, false, Some((4, 15_000 + 360))),
            ],
        );
    }

    #[test]
    fn restart_of_the_same_source_is_detected_by_the_jump() {
        run(
            7,
            0,
            &[
                (1000, 0, 0, false, Some((7, 0))),
                (1001, 3000, 33, false, Some((8, 3000))),
                // The publisher restarted its encoder: random new seq and ts.
                (30_000, 123_456, 1033, false, Some((9, 3000 + 90_000))),
                (
                    30_001,
                    126_456,
                    1066,
                    false,
                    Some((10, 3000 + 90_000 + 3000)),
                ),
            ],
        );
    }

    #[test]
    fn resync_before_first_packet_is_a_plain_start() {
        run(
            5,
            77,
            &[
                (9, 1, 0, true, Some((5, 77))),
                (10, 2, 1, false, Some((6, 78))),
            ],
        );
    }

    #[test]
    fn output_wraps_across_a_switch() {
        run(
            65_535,
            u32::MAX,
            &[
                (1, 10, 0, false, Some((65_535, u32::MAX))),
                (9000, 0, 20, true, Some((0, 1799))),
                (9001, 90, 21, false, Some((1, 1889))),
            ],
        );
    }

    /// Reordered packets and NACKs still map once the output has moved more
    /// than half the sequence space past the last re-base (about 2.6 min of
    /// 2 Mbit/s video): the re-base point must not be compared across the
    /// wrap.
    #[test]
    fn late_packets_map_long_after_the_rebase() {
        let t0 = Instant::now();
        let mut r = StreamRewriter::new(90_000, 1000, 0);
        for i in 0..40_000u16 {
            if i == 39_995 {
                // Lost on the way in, repaired below.
                continue;
            }
            assert!(r.rewrite(i, u32::from(i) * 3000, t0).is_some(), "seq {i}");
        }
        let out = 1000u16.wrapping_add(39_995);
        assert_eq!(
            r.rewrite(39_995, 39_995 * 3000, t0),
            Some((out, 39_995 * 3000))
        );
        assert_eq!(r.input_seq(out), Some(39_995));
        // Still refused: what predates a re-base.
        r.resync();
        assert!(r.rewrite(50_000, 0, t0).is_some());
        assert_eq!(r.rewrite(49_999, 0, t0), None);
        assert_eq!(r.input_seq(out), None);
    }

    /// (input seq, padding-only, expected output: `None` for not sent).
    type PadStep = (u16, bool, Option<u16>);

    /// Runs `steps` through one rewriter (padding dropped, media
    /// rewritten); returns it for NACK checks.
    fn run_padding(first_seq: u16, steps: &[PadStep]) -> StreamRewriter {
        let t0 = Instant::now();
        let mut r = StreamRewriter::new(90_000, first_seq, 0);
        for (i, &(seq, padding, want)) in steps.iter().enumerate() {
            let got = if padding {
                r.drop_input(seq);
                None
            } else {
                r.rewrite(seq, u32::from(seq) * 3000, t0).map(|(s, _)| s)
            };
            assert_eq!(got, want, "step {i}: in {seq} (padding {padding})");
        }
        r
    }

    #[test]
    fn dropped_padding_leaves_no_gap() {
        let r = run_padding(
            100,
            &[
                (10, false, Some(100)),
                (11, true, None),
                (12, true, None),
                (13, false, Some(101)),
                (14, false, Some(102)),
                (15, true, None),
                (16, false, Some(103)),
            ],
        );
        // NACKs map back to the media packets, never to padding.
        for (out, input) in [(100, 10), (101, 13), (102, 14), (103, 16)] {
            assert_eq!(r.input_seq(out), Some(input), "out {out}");
            assert_eq!(r.output_seq(input), Some(out), "in {input}");
        }
        assert_eq!(r.input_seq(104), None, "not sent yet");
        assert_eq!(r.output_seq(11), None, "dropped");
    }

    #[test]
    fn reordering_around_dropped_padding() {
        let r = run_padding(
            100,
            &[
                (10, false, Some(100)),
                // 11 and 12 are late; 13 is padding.
                (13, true, None),
                (14, false, Some(103)),
                (12, false, Some(102)),
                (11, false, Some(101)),
                // Padding after later media was numbered: its number (104)
                // stays unused, nothing after it moves.
                (16, false, Some(105)),
                (15, true, None),
                (17, false, Some(106)),
                // A late duplicate keeps its number; media under a dropped
                // number is refused (its number belongs to another).
                (14, false, Some(103)),
                (13, false, None),
                // Older than the first packet sent: refused, as before.
                (9, false, None),
            ],
        );
        for (out, input) in [
            (101, 11),
            (102, 12),
            (103, 14),
            (104, 15),
            (105, 16),
            (106, 17),
        ] {
            assert_eq!(r.input_seq(out), Some(input), "out {out}");
        }
    }

    #[test]
    fn padding_across_the_sequence_wrap() {
        let r = run_padding(
            65_534,
            &[
                (65_533, false, Some(65_534)),
                (65_534, true, None),
                (65_535, false, Some(65_535)),
                (0, true, None),
                (1, true, None),
                (2, false, Some(0)),
                (65_534, false, None), // the dropped number, late
                (3, false, Some(1)),
            ],
        );
        assert_eq!(r.input_seq(65_535), Some(65_535));
        assert_eq!(r.input_seq(0), Some(2));
        assert_eq!(r.input_seq(1), Some(3));
        assert_eq!(r.input_seq(65_534), Some(65_533));
    }

    #[test]
    fn padding_before_the_first_packet_or_a_rebase_reserves_nothing() {
        let t0 = Instant::now();
        let mut r = StreamRewriter::new(90_000, 50, 0);
        r.drop_input(7);
        assert_eq!(r.rewrite(8, 0, t0), Some((50, 0)));
        r.drop_input(9);
        // Switched to another source: its numbering continues after 50.
        r.resync();
        r.drop_input(10);
        assert_eq!(r.rewrite(5000, 0, t0).map(|o| o.0), Some(51));
        r.drop_input(5001);
        assert_eq!(r.rewrite(5002, 0, t0).map(|o| o.0), Some(52));
        // The old source's drop is gone; the new one's counts.
        assert_eq!(r.input_seq(51), Some(5000));
        assert_eq!(r.input_seq(52), Some(5002));
        assert_eq!(r.input_seq(50), None, "before the re-base");
        assert_eq!(r.rewrite(4999, 0, t0), None, "before the re-base");
    }

    /// A drop that leaves the window makes older input unmappable; input
    /// after it still maps.
    #[test]
    fn drops_older_than_the_window_are_forgotten_safely() {
        let t0 = Instant::now();
        let mut r = StreamRewriter::new(90_000, 0, 0);
        assert_eq!(r.rewrite(0, 0, t0).map(|o| o.0), Some(0));
        // 1 is late; 2 and 1100 are padding.
        r.drop_input(2);
        let mut out = 2u16;
        for seq in 3..=1500u16 {
            if seq == 1100 {
                r.drop_input(seq);
                continue;
            }
            assert_eq!(r.rewrite(seq, 0, t0).map(|o| o.0), Some(out), "seq {seq}");
            out += 1;
        }
        // 1 is more than the window behind and before the forgotten drop.
        assert_eq!(r.rewrite(1, 0, t0), None);
        assert_eq!(r.output_seq(1), None);
        assert_eq!(r.input_seq(1), None);
        assert!(r.forgotten(1), "sent long ago");
        assert!(!r.forgotten(2) && !r.forgotten(1499), "mapped, not sent");
        // After it but beyond the window: only the drop of 1100 follows.
        assert_eq!(r.input_seq(2), Some(3));
        assert_eq!(r.output_seq(400), Some(400 - 2 + 1));
        assert_eq!(r.input_seq(399), Some(400));
        // Within the window, around the second drop.
        assert_eq!(r.input_seq(1098), Some(1099));
        assert_eq!(r.input_seq(1099), Some(1101));
        assert_eq!(r.input_seq(1498), Some(1500));
    }

    proptest::proptest! {
        /// Any mix of padding, loss and reordering (within 5 places):
        /// forwarded packets keep their order, never share a number, and
        /// every number maps back to its packet; in order and without
        /// loss, the numbers are consecutive.
        #[test]
        fn padding_loss_and_reordering_keep_numbers_unique_and_mapped(
            start in proptest::prelude::any::<u16>(),
            kinds in proptest::collection::vec(0u8..10, 1..3000),
            swaps in proptest::collection::vec((0usize..3000, 1usize..5), 0..200),
        ) {
            let t0 = Instant::now();
            let mut r = StreamRewriter::new(90_000, 7, 0);
            // 0: padding, 1: lost, else media.
            let mut order: Vec<usize> = (0..kinds.len()).collect();
            for &(at, by) in &swaps {
                if at + by < order.len() {
                    order.swap(at, at + by);
                }
            }
            let mut sent: Vec<(u16, u16)> = Vec::new();
            for &i in &order {
                let seq = start.wrapping_add(i as u16);
                match kinds[i] {
                    0 => r.drop_input(seq),
                    1 => {}
                    _ => {
                        if let Some((out, _)) = r.rewrite(seq, 0, t0) {
                            sent.push((i as u16, out));
                        }
                    }
                }
            }
            // Unique and in input order (relative to the first output).
            let first = sent.first().map_or(0, |s| s.1);
            let mut by_input: Vec<(u16, u16)> = sent
                .iter()
                .map(|&(i, o)| (i, o.wrapping_sub(first).wrapping_add(0x8000)))
                .collect();
            by_input.sort_unstable();
            by_input.dedup();
            for w in by_input.windows(2) {
                proptest::prop_assert!(w[0].1 < w[1].1, "{:?}", w);
            }
            // The newest sent numbers map back (older ones may have left
            // the window after a drop).
            for &(i, out) in by_input.iter().rev().take(500) {
                let out = out.wrapping_sub(0x8000).wrapping_add(first);
                proptest::prop_assert_eq!(r.input_seq(out), Some(start.wrapping_add(i)));
            }
            if swaps.is_empty() && !kinds.contains(&1) {
                for w in by_input.windows(2) {
                    proptest::prop_assert_eq!(w[1].1 - w[0].1, 1);
                }
            }
        }
    }
}
