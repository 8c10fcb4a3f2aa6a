//! The receiving side of transport-wide congestion control
//! (draft-holmer-rmcat-transport-wide-cc-extensions-01).
//!
//! A sender that negotiated the transport-wide sequence number header
//! extension numbers every RTP packet of the transport; its bandwidth
//! estimator (Chrome's GCC, libwebrtc's `SendSideBandwidthEstimation`) learns
//! the path from the receiver's feedback: which numbers arrived, and when.
//! Without that feedback a browser that negotiated the extension treats the
//! path as congested and throttles its encoder, so the node must answer it.
//!
//! [`TwccReceiver`] records `(sequence number, arrival time)` of each
//! authentic packet into a fixed ring of [`HISTORY`] entries and, every
//! [`FEEDBACK_INTERVAL`], writes the range received since the last feedback
//! as RTCP transport-cc packets ([`rtcp::write_transport_cc`]). Nothing here
//! allocates after construction: the ring and the scratch list the writer
//! reads are sized once.
//!
//! # Rules (as libwebrtc's `RemoteEstimatorProxy` behaves)
//! * Sequence numbers are unwrapped to 64 bits against the highest seen.
//! * Each feedback covers `[first unreported, highest]`; numbers in between
//!   that did not arrive are reported lost.
//! * A packet that arrives after its range was reported (reordering) moves
//!   the start back so the next feedback reports it received; duplicates
//!   keep their first arrival time.
//! * More than [`HISTORY`] numbers ahead of the start, the oldest unreported
//!   ones are given up (the sender counts them lost); a packet more than
//!   [`HISTORY`] behind the highest is ignored.
//! * One feedback packet describes at most [`MAX_STATUSES`] packets, so it
//!   fits a 1500-byte datagram with SRTCP's trailer even if every delta needs
//!   two bytes; a longer range is split over several packets. A packet also
//!   ends before a receive delta the format cannot carry (±8.19 s).
//!
//! Arrival times are those the caller passes: the worker stamps a whole
//! receive batch with one clock reading, which under load quantises arrivals
//! to a batch (tens to hundreds of µs, below the format's 250 µs unit).

use std::time::{Duration, Instant};

use crate::wire::rtcp;

/// Sequence numbers remembered (a power of two).
pub const HISTORY: usize = 1024;
/// Most packet statuses in one feedback packet.
pub const MAX_STATUSES: usize = 400;
/// Time between two feedback rounds of one transport. libwebrtc's receiver
/// adapts between 50 and 250 ms (100 ms by default); the node uses the
/// short end so the sender's estimate reacts quickly.
pub const FEEDBACK_INTERVAL: Duration = Duration::from_millis(50);
/// Largest receive delta the format carries, in µs (i16 × 250 µs).
const MAX_DELTA_US: i64 = i16::MAX as i64 * 250;
/// Reference time unit, µs.
const REFERENCE_UNIT_US: i64 = 64_000;

/// Transport-cc state of one transport (one WebRTC endpoint).
#[derive(Debug)]
pub struct TwccReceiver {
    epoch: Instant,
    /// Arrival time (µs after `epoch`) by extended sequence number modulo
    /// [`HISTORY`]; `None` when not received.
    arrivals: Box<[Option<i64>]>,
    /// First extended number not reported yet; `None` before any packet.
    start: Option<i64>,
    /// Highest extended number seen, plus one.
    end: i64,
    /// Counts feedback packets (wraps, as the format's 8-bit field does).
    fb_count: u8,
    last_feedback: Option<Instant>,
    /// An SSRC of the sender's media, for the feedback's media source field.
    media_ssrc: u32,
}

impl TwccReceiver {
    /// A receiver whose clock starts at `epoch`.
    pub fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            arrivals: vec![None; HISTORY].into_boxed_slice(),
            start: None,
            end: 0,
            fb_count: 0,
            last_feedback: None,
            media_ssrc: 0,
        }
    }

    /// Records that the packet with transport-wide number `seq` and SSRC
    /// `ssrc` arrived at `now`. Returns `false` when it was ignored
    /// (a duplicate, or older than the history).
    pub fn record(&mut self, seq: u16, ssrc: u32, now: Instant) -> bool {
        let t = i64::try_from(now.saturating_duration_since(self.epoch).as_micros())
            .unwrap_or(i64::MAX);
        let history = HISTORY as i64;
        let Some(start) = self.start else {
            let ext = i64::from(seq);
            self.start = Some(ext);
            self.end = ext + 1;
            self.arrivals.fill(None);
            self.arrivals[slot(ext)] = Some(t);
            self.media_ssrc = ssrc;
            return true;
        };
        let highest = self.end - 1;
        let ext = highest + i64::from(seq.wrapping_sub(highest as u16) as i16);
        if ext >= self.end {
            if ext - self.end >= history {
                // A jump past the whole history: start over from here.
                self.arrivals.fill(None);
                self.start = Some(ext);
            } else {
                for e in self.end..ext {
                    self.arrivals[slot(e)] = None;
                }
                if ext + 1 - start > history {
                    self.start = Some(ext + 1 - history);
                }
            }
            self.arrivals[slot(ext)] = None;
            self.end = ext + 1;
        } else if self.end - ext > history {
            return false;
        } else if ext < start {
            // Late for its feedback: report it (and the range after it) again.
            self.start = Some(ext);
        }
        let entry = &mut self.arrivals[slot(ext)];
        if entry.is_some() {
            return false;
        }
        *entry = Some(t);
        self.media_ssrc = ssrc;
        true
    }

    /// Whether a feedback round is due at `now`: something unreported and
    /// [`FEEDBACK_INTERVAL`] since the last round.
    pub fn due(&self, now: Instant) -> bool {
        self.start.is_some_and(|s| s < self.end)
            && self
                .last_feedback
                .is_none_or(|t| now.saturating_duration_since(t) >= FEEDBACK_INTERVAL)
    }

    /// When the next feedback round is due: `None` while everything is
    /// reported; the epoch when nothing was sent yet (due at once).
    pub fn due_at(&self) -> Option<Instant> {
        if self.start.is_none_or(|s| s >= self.end) {
            return None;
        }
        Some(
            self.last_feedback
                .map_or(self.epoch, |t| t + FEEDBACK_INTERVAL),
        )
    }

    /// Writes the next feedback packet of this round into `buf` (sender SSRC
    /// `sender_ssrc`) and returns its length, or `None` when everything was
    /// reported or `buf` is too small. `scratch` is working space; give it a
    /// capacity of [`MAX_STATUSES`] and nothing allocates. Call until `None`,
    /// or until the caller's per-round budget is spent.
    pub fn write_feedback(
        &mut self,
        now: Instant,
        sender_ssrc: u32,
        scratch: &mut Vec<(u16, Option<i64>)>,
        buf: &mut [u8],
    ) -> Option<usize> {
        let start = self.start?;
        if start >= self.end {
            return None;
        }
        self.last_feedback = Some(now);
        // Skip numbers nobody received at the head of the range: the first
        // received one anchors the reference time.
        let Some(first_time) = (start..self.end).find_map(|e| self.arrivals[slot(e)]) else {
            // Only losses left: nothing to anchor a packet on.
            self.start = Some(self.end);
            return None;
        };
        let reference = first_time.div_euclid(REFERENCE_UNIT_US);
        scratch.clear();
        let mut previous = reference * REFERENCE_UNIT_US;
        let mut stop = start;
        for e in start..self.end {
            if scratch.len() == MAX_STATUSES {
                break;
            }
            let arrival = self.arrivals[slot(e)];
            let delta = arrival.map(|a| a - previous);
            if delta.is_some_and(|d| d.abs() > MAX_DELTA_US) {
                break;
            }
            if let Some(a) = arrival {
                previous = a;
            }
            scratch.push((e as u16, delta));
            stop = e + 1;
        }
        let written = rtcp::write_transport_cc(
            buf,
            sender_ssrc,
            self.media_ssrc,
            start as u16,
            // The field holds 24 bits; the writer sends the low ones.
            (reference & 0xff_ffff) as i32,
            self.fb_count,
            scratch,
        )
        .ok()?;
        self.fb_count = self.fb_count.wrapping_add(1);
        self.start = Some(stop);
        Some(written)
    }
}

fn slot(ext: i64) -> usize {
    (ext as u64 as usize) & (HISTORY - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::rtcp::{RtcpPacket, TransportCc};

    fn scratch() -> Vec<(u16, Option<i64>)> {
        Vec::with_capacity(MAX_STATUSES)
    }

    /// `(seq, arrival µs)` per status of one feedback packet.
    type Statuses = Vec<(u16, Option<i64>)>;

    /// Every feedback packet of one round, parsed: its base and statuses.
    fn round(r: &mut TwccReceiver, now: Instant) -> Vec<(u16, Statuses)> {
        let mut s = scratch();
        let mut out = Vec::new();
        let mut buf = [0u8; 1500];
        while let Some(n) = r.write_feedback(now, 1, &mut s, &mut buf) {
            let RtcpPacket::TransportCc(fb) = RtcpPacket::new_checked(&buf[..n]).unwrap() else {
                panic!("not transport-cc");
            };
            out.push((fb.base_seq(), absolute(&fb)));
        }
        out
    }

    /// (seq, arrival µs since the reference-time origin) per status.
    fn absolute(fb: &TransportCc<'_>) -> Statuses {
        let mut t = fb.reference_time_us();
        fb.packets()
            .map(|p| {
                let (seq, _status, delta) = p;
                let at = delta.map(|d| {
                    t += d;
                    t
                });
                (seq, at)
            })
            .collect()
    }

    #[test]
    fn reports_arrivals_and_losses_in_order() {
        let t0 = Instant::now();
        let mut r = TwccReceiver::new(t0);
        assert!(!r.due(t0));
        for (seq, ms) in [(10u16, 1u64), (11, 2), (13, 5), (14, 5)] {
            assert!(r.record(seq, 42, t0 + Duration::from_millis(ms)));
        }
        assert!(r.due(t0));
        let fbs = round(&mut r, t0 + Duration::from_millis(10));
        assert_eq!(fbs.len(), 1);
        let (base, statuses) = &fbs[0];
        assert_eq!(*base, 10);
        let got: Vec<(u16, Option<i64>)> = statuses.clone();
        assert_eq!(
            got,
            [
                (10, Some(1000)),
                (11, Some(2000)),
                (12, None),
                (13, Some(5000)),
                (14, Some(5000))
            ]
        );
        // Reported: nothing due until new packets arrive.
        assert!(!r.due(t0 + Duration::from_millis(100)));
        assert!(r.record(15, 42, t0 + Duration::from_millis(70)));
        assert!(!r.due(t0 + Duration::from_millis(20)), "interval not over");
        assert!(r.due(t0 + Duration::from_millis(60)));
        let fbs = round(&mut r, t0 + Duration::from_millis(60));
        assert_eq!(fbs[0].0, 15);
        assert_eq!(fbs[0].1, [(15, Some(70_000))]);
    }

    #[test]
    fn unwraps_and_rereports_late_packets() {
        let t0 = Instant::now();
        let mut r = TwccReceiver::new(t0);
        r.record(65534, 1, t0);
        r.record(0, 1, t0 + Duration::from_millis(1));
        let fbs = round(&mut r, t0);
        assert_eq!(fbs[0].0, 65534);
        assert_eq!(
            fbs[0].1.iter().map(|p| p.0).collect::<Vec<_>>(),
            [65534, 65535, 0]
        );
        assert_eq!(fbs[0].1[1].1, None);
        // 65535 arrives late: the next round reports it, received.
        assert!(r.record(65535, 1, t0 + Duration::from_millis(3)));
        assert!(
            !r.record(65535, 1, t0 + Duration::from_millis(4)),
            "duplicate"
        );
        let fbs = round(&mut r, t0 + Duration::from_millis(100));
        assert_eq!(fbs[0].0, 65535);
        assert!(fbs[0].1[0].1.is_some());
        // Far older than the history: ignored, and the start stays.
        for s in 1..=(HISTORY as u16 + 10) {
            r.record(s, 1, t0 + Duration::from_millis(5));
        }
        round(&mut r, t0 + Duration::from_millis(200));
        assert!(!r.record(65000, 1, t0 + Duration::from_millis(6)));
        assert!(!r.due(t0 + Duration::from_millis(400)));
    }

    #[test]
    fn long_ranges_split_over_packets_that_fit_a_datagram() {
        let t0 = Instant::now();
        let mut r = TwccReceiver::new(t0);
        // Alternate received/lost with large, varying deltas: the worst case.
        for i in 0..1000u16 {
            if i % 2 == 0 {
                let back = if i % 4 == 0 { 0 } else { 30 };
                r.record(i, 7, t0 + Duration::from_millis(u64::from(i) * 40 - back));
            }
        }
        let mut s = scratch();
        let mut buf = [0u8; 1500];
        let mut next = 0u16;
        let mut packets = 0;
        while let Some(n) = r.write_feedback(t0, 1, &mut s, &mut buf) {
            assert!(n <= 1500 - 20, "{n} bytes leaves no room for SRTCP");
            let RtcpPacket::TransportCc(fb) = RtcpPacket::new_checked(&buf[..n]).unwrap() else {
                panic!()
            };
            assert_eq!(fb.base_seq(), next);
            next = next.wrapping_add(fb.packet_status_count());
            packets += 1;
        }
        assert_eq!(next, 999);
        assert!(packets >= 3);
    }

    #[test]
    fn never_panics_on_any_sequence() {
        let t0 = Instant::now();
        let mut r = TwccReceiver::new(t0);
        let mut s = scratch();
        let mut buf = [0u8; 1500];
        let capacity = s.capacity();
        let mut x: u32 = 12345;
        for i in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let seq = if x.is_multiple_of(3) {
                x as u16
            } else {
                (i as u16).wrapping_add((x % 7) as u16)
            };
            r.record(
                seq,
                x,
                t0 + Duration::from_micros(i * 97 + u64::from(x % 20_000)),
            );
            if i % 50 == 0 {
                while r.write_feedback(t0, 1, &mut s, &mut buf).is_some() {}
            }
        }
        assert_eq!(s.capacity(), capacity, "the scratch list never grew");
    }
}
