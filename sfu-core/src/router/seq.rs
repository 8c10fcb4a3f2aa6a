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

use std::time::Instant;

/// A sequence jump larger than this, either way, is taken as a restart of the
/// source's numbering rather than loss or reordering.
pub const RESTART_JUMP: u16 = 0x2000;

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
                    self.max_in = seq;
                } else {
                    // Reordered or duplicate: keep the offset; refuse it when
                    // it predates the re-base point.
                    let out = seq.wrapping_add(self.seq_offset);
                    if (out.wrapping_sub(self.base_out) as i16) < 0 {
                        return None;
                    }
                }
            }
        }
        let out_seq = seq.wrapping_add(self.seq_offset);
        let out_ts = ts.wrapping_add(self.ts_offset);
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
        Some((out_seq, out_ts))
    }

    /// The input sequence number that was (or would be) sent as `out_seq`
    /// since the last re-base, if any: what a NACK for `out_seq` asks the
    /// source to repeat. `None` for numbers of an earlier source, not yet
    /// sent, or before the first packet.
    pub fn input_seq(&self, out_seq: u16) -> Option<u16> {
        if self.state != State::Synced
            || (out_seq.wrapping_sub(self.base_out) as i16) < 0
            || (self.max_out.wrapping_sub(out_seq) as i16) < 0
        {
            return None;
        }
        Some(out_seq.wrapping_sub(self.seq_offset))
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

    /// The output sequence number of input `seq` under the current offset.
    pub fn output_seq(&self, seq: u16) -> u16 {
        seq.wrapping_add(self.seq_offset)
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
    }
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
}
