//! What was sent, by transport-wide sequence number, and the matching of
//! transport-cc feedback against it (libwebrtc's `TransportFeedbackAdapter`).

use std::time::{Duration, Instant};

use crate::wire::rtcp::TransportCc;

/// Sent packets remembered (a power of two). At 20 Mbit/s of 1200-byte
/// packets this is about two seconds, well over any feedback delay.
pub const HISTORY: usize = 4096;

/// Reference time unit of transport-cc feedback, µs.
const REFERENCE_UNIT_US: i64 = 64_000;

/// What a sent packet carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SentKind {
    /// Media of a forwarded stream.
    #[default]
    Media,
    /// A retransmission.
    Rtx,
    /// Padding that is not part of a probe cluster.
    Padding,
    /// Padding or RTX sent as part of bandwidth probe cluster `id`: its
    /// receive rate is measured on its own (see [`super::probe`]).
    Probe(u16),
}

/// The outcome of one sent packet, as one feedback reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketResult {
    /// Transport-wide sequence number, unwrapped.
    pub seq: i64,
    /// Send time, µs after the history's epoch.
    pub send_us: i64,
    /// Arrival time in the receiver's clock (µs, unwrapped across feedback
    /// reference times, arbitrary origin: only differences mean something);
    /// `None` when reported lost.
    pub arrival_us: Option<i64>,
    /// Size in bytes as passed to [`SendHistory::on_sent`].
    pub size: u32,
    /// What the packet carried.
    pub kind: SentKind,
}

/// Counts of one feedback packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FeedbackSummary {
    /// Packets newly reported received (including ones reported lost before).
    pub received: u32,
    /// Packets newly reported lost.
    pub lost: u32,
    /// Statuses ignored: sequence numbers never sent, older than the history,
    /// or already reported (duplicates, repeated losses).
    pub ignored: u32,
    /// Bytes of the packets newly reported received.
    pub received_bytes: u64,
    /// Time from sending the newest packet reported received to this
    /// feedback: an upper bound of the round-trip time (it includes the
    /// receiver's feedback interval).
    pub feedback_rtt: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reported {
    No,
    Lost,
    Received,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Unwrapped sequence number this slot holds; `i64::MIN` when empty.
    seq: i64,
    send_us: i64,
    size: u32,
    kind: SentKind,
    reported: Reported,
}

const EMPTY: Entry = Entry {
    seq: i64::MIN,
    send_us: 0,
    size: 0,
    kind: SentKind::Media,
    reported: Reported::No,
};

/// Send records of one transport in a fixed ring of [`HISTORY`] entries,
/// and a scratch list of [`PacketResult`]s, both sized at construction.
///
/// # Rules
/// * Sequence numbers are unwrapped to 64 bits against the highest sent.
/// * A status for a number not sent (ahead of the highest), older than
///   [`HISTORY`] behind it, or whose slot was reused, is ignored.
/// * A packet is reported received once: later statuses for it are ignored.
///   One reported lost and later received (the receiver re-reports late
///   arrivals) counts as received then.
/// * Reference times (24 bits of 64 ms) are unwrapped against the previous
///   feedback, so reordered or wrapped feedback keeps a consistent arrival
///   clock.
#[derive(Debug)]
pub struct SendHistory {
    epoch: Instant,
    entries: Box<[Entry]>,
    /// Highest unwrapped sequence number sent.
    highest: Option<i64>,
    /// Last reference time as sent (24 bits) and unwrapped.
    reference: Option<(u32, i64)>,
    results: Box<[PacketResult]>,
    results_len: usize,
}

impl SendHistory {
    /// An empty history whose send clock starts at `epoch`.
    pub fn new(epoch: Instant) -> Self {
        let none = PacketResult {
            seq: 0,
            send_us: 0,
            arrival_us: None,
            size: 0,
            kind: SentKind::Media,
        };
        Self {
            epoch,
            entries: vec![EMPTY; HISTORY].into_boxed_slice(),
            highest: None,
            reference: None,
            results: vec![none; HISTORY].into_boxed_slice(),
            results_len: 0,
        }
    }

    /// µs from the epoch to `t` (0 before it).
    pub fn micros(&self, t: Instant) -> i64 {
        i64::try_from(t.saturating_duration_since(self.epoch).as_micros()).unwrap_or(i64::MAX)
    }

    /// Records that the packet numbered `seq`, `size` bytes long, carrying
    /// `kind`, left at `now`. A number more than [`HISTORY`] behind the
    /// highest sent is ignored.
    pub fn on_sent(&mut self, seq: u16, size: usize, kind: SentKind, now: Instant) {
        let ext = match self.highest {
            None => i64::from(seq),
            Some(h) => h + i64::from(seq.wrapping_sub(h as u16) as i16),
        };
        let highest = self.highest.map_or(ext, |h| h.max(ext));
        if highest - ext >= HISTORY as i64 {
            return;
        }
        self.highest = Some(highest);
        self.entries[slot(ext)] = Entry {
            seq: ext,
            send_us: self.micros(now),
            size: u32::try_from(size).unwrap_or(u32::MAX),
            kind,
            reported: Reported::No,
        };
    }

    /// Matches every status of `fb` (received at `now`) against the send
    /// records and fills [`results`](Self::results) with the packets it newly
    /// reports, sorted by arrival time with losses last. Never allocates.
    pub fn on_feedback(&mut self, fb: &TransportCc<'_>, now: Instant) -> FeedbackSummary {
        self.results_len = 0;
        let mut summary = FeedbackSummary::default();
        let Some(highest) = self.highest else {
            summary.ignored = u32::from(fb.packet_status_count());
            return summary;
        };
        let mut arrival = self.unwrap_reference(fb.reference_time()) * REFERENCE_UNIT_US;
        let mut newest_send: Option<i64> = None;
        for (seq, _status, delta) in fb.packets() {
            if let Some(d) = delta {
                arrival = arrival.saturating_add(d);
            }
            let ext = highest + i64::from(seq.wrapping_sub(highest as u16) as i16);
            let entry = &mut self.entries[slot(ext)];
            let stale = ext > highest || highest - ext >= HISTORY as i64 || entry.seq != ext;
            let fresh = match (delta, entry.reported) {
                (_, Reported::Received) | (None, Reported::Lost) => false,
                _ => !stale,
            };
            // Each status is a distinct number, so each matches a distinct
            // entry: the result list (one slot per entry) cannot overflow.
            if !fresh || self.results_len == self.results.len() {
                summary.ignored += 1;
                continue;
            }
            if delta.is_some() {
                entry.reported = Reported::Received;
                summary.received += 1;
                summary.received_bytes += u64::from(entry.size);
                newest_send = newest_send.max(Some(entry.send_us));
            } else {
                entry.reported = Reported::Lost;
                summary.lost += 1;
            }
            self.results[self.results_len] = PacketResult {
                seq: ext,
                send_us: entry.send_us,
                arrival_us: delta.map(|_| arrival),
                size: entry.size,
                kind: entry.kind,
            };
            self.results_len += 1;
        }
        // In-place sort (no allocation): by arrival, then send order; losses last.
        self.results[..self.results_len]
            .sort_unstable_by_key(|r| (r.arrival_us.is_none(), r.arrival_us, r.seq));
        summary.feedback_rtt = newest_send
            .map(|s| Duration::from_micros(u64::try_from(self.micros(now) - s).unwrap_or(0)));
        summary
    }

    /// The packets the last [`on_feedback`](Self::on_feedback) reported.
    pub fn results(&self) -> &[PacketResult] {
        &self.results[..self.results_len]
    }

    /// Unwraps a 24-bit signed reference time against the previous one.
    fn unwrap_reference(&mut self, reference: i32) -> i64 {
        let raw = (reference as u32) & 0xff_ffff;
        let unwrapped = match self.reference {
            None => i64::from(reference),
            Some((last_raw, last)) => {
                // Sign-extend the 24-bit difference.
                let diff = ((raw.wrapping_sub(last_raw) << 8) as i32) >> 8;
                last + i64::from(diff)
            }
        };
        self.reference = Some((raw, unwrapped));
        unwrapped
    }
}

fn slot(ext: i64) -> usize {
    (ext as u64 as usize) & (HISTORY - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::rtcp::write_transport_cc;

    fn feedback(
        buf: &mut [u8],
        base: u16,
        reference: i32,
        packets: &[(u16, Option<i64>)],
    ) -> usize {
        write_transport_cc(buf, 1, 2, base, reference, 0, packets).unwrap()
    }

    #[test]
    fn matches_wraps_and_ignores_duplicates_and_unknowns() {
        let t0 = Instant::now();
        let mut h = SendHistory::new(t0);
        for (i, seq) in [65534u16, 65535, 0, 1].into_iter().enumerate() {
            h.on_sent(
                seq,
                100 + i,
                SentKind::Media,
                t0 + Duration::from_millis(i as u64),
            );
        }
        let mut buf = [0xa5u8; 256];
        // 65535 lost; 2 never sent (ignored).
        let n = feedback(
            &mut buf,
            65534,
            1,
            &[
                (65534, Some(1000)),
                (0, Some(500)),
                (1, Some(0)),
                (2, Some(0)),
            ],
        );
        let fb = TransportCc::new_checked(&buf[..n]).unwrap();
        let s = h.on_feedback(&fb, t0 + Duration::from_millis(50));
        assert_eq!((s.received, s.lost, s.ignored), (3, 1, 1));
        assert_eq!(s.received_bytes, 100 + 102 + 103);
        assert_eq!(s.feedback_rtt, Some(Duration::from_millis(47)));
        let r = h.results();
        assert_eq!(r.len(), 4);
        assert_eq!(r[0].seq, 65534);
        assert_eq!(r[0].arrival_us, Some(64_000 + 1000));
        assert_eq!(r[1].seq, 65536);
        assert_eq!(r[1].arrival_us, Some(64_000 + 1500));
        assert_eq!(r[3].seq, 65535);
        assert_eq!(r[3].arrival_us, None);
        // The same feedback again: all duplicates. A late report of 65535
        // counts it received.
        let s = h.on_feedback(&fb, t0 + Duration::from_millis(60));
        assert_eq!((s.received, s.lost, s.ignored), (0, 0, 5));
        let n = feedback(&mut buf, 65535, 2, &[(65535, Some(0))]);
        let fb = TransportCc::new_checked(&buf[..n]).unwrap();
        let s = h.on_feedback(&fb, t0 + Duration::from_millis(70));
        assert_eq!((s.received, s.lost), (1, 0));
        assert_eq!(h.results()[0].arrival_us, Some(128_000));
    }

    #[test]
    fn reference_time_unwraps_across_24_bits() {
        let t0 = Instant::now();
        let mut h = SendHistory::new(t0);
        h.on_sent(10, 1, SentKind::Media, t0);
        h.on_sent(11, 1, SentKind::Media, t0);
        let mut buf = [0u8; 64];
        // 0x7fffff is the largest positive 24-bit value; the next one wraps
        // to -0x800000 on the wire.
        let n = feedback(&mut buf, 10, 0x7f_ffff, &[(10, Some(0))]);
        let fb = TransportCc::new_checked(&buf[..n]).unwrap();
        h.on_feedback(&fb, t0);
        let first = h.results()[0].arrival_us.unwrap();
        let n = feedback(&mut buf, 11, 0x80_0000, &[(11, Some(0))]);
        let fb = TransportCc::new_checked(&buf[..n]).unwrap();
        h.on_feedback(&fb, t0);
        assert_eq!(h.results()[0].arrival_us.unwrap() - first, 64_000);
    }

    #[test]
    fn too_old_and_future_numbers_are_ignored() {
        let t0 = Instant::now();
        let mut h = SendHistory::new(t0);
        for seq in 0..(HISTORY as u16 + 100) {
            h.on_sent(seq, 1, SentKind::Media, t0);
        }
        let mut buf = [0u8; 64];
        let n = feedback(&mut buf, 5, 0, &[(5, Some(0)), (6, None)]);
        let fb = TransportCc::new_checked(&buf[..n]).unwrap();
        let s = h.on_feedback(&fb, t0);
        assert_eq!((s.received, s.lost, s.ignored), (0, 0, 2));
        let n = feedback(&mut buf, 30_000, 0, &[(30_000, Some(0))]);
        let fb = TransportCc::new_checked(&buf[..n]).unwrap();
        assert_eq!(h.on_feedback(&fb, t0).ignored, 1);
        // A sent number older than the history is not recorded.
        h.on_sent(3, 1, SentKind::Media, t0);
        let n = feedback(&mut buf, 3, 0, &[(3, Some(0))]);
        let fb = TransportCc::new_checked(&buf[..n]).unwrap();
        assert_eq!(h.on_feedback(&fb, t0).ignored, 1);
    }
}
