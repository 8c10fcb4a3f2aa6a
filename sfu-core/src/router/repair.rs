//! Loss repair: retransmissions to subscribers from the producers' packet
//! caches, NACKs to publishers for gaps in their streams, and publishers'
//! retransmissions unwrapped into their original streams (RFC 4585 generic
//! NACK, RFC 4588 RTX).
//!
//! # Downstream: a subscriber NACKs
//! A subscriber's generic NACK names the consumer's SSRC and output
//! sequence numbers. Each is mapped back through the consumer's rewriter to
//! the producer's number (only numbers sent since the consumer's last source
//! switch map), looked up in the producer's [`PacketCache`] and sent on the
//! consumer's RTX stream: the consumer's RTX SSRC and payload type, the RTX
//! stream's own sequence number, the consumer's timestamp, and the original
//! (output) sequence number in front of the payload. One packet is resent at
//! most [`MAX_RESENDS`] times to one consumer, and not again within
//! min(100 ms, 2 × RTT) (the RTT from the subscriber's receiver reports),
//! so a subscriber that repeats its NACKs cannot multiply the node's
//! egress. A subscriber that negotiated no RTX is never resent to: the
//! original SSRC's packet index would be used twice under its key.
//!
//! # Upstream: the node NACKs a publisher
//! [`NackTracker`] watches each producer's sequence numbers: a forward jump
//! marks the numbers skipped as missing (at most [`MAX_MISSING`] at once; a
//! jump beyond [`MAX_GAP`] is a restart, not loss) and they are NACKed at
//! once, piggy-backed on the packet that revealed the gap, then again with
//! backoff (from [`RETRY_MIN`], doubling, each at least the measured
//! NACK-to-repair time) on later packets of the stream, at most
//! [`MAX_NACKS`] times and for [`MAX_AGE`]. A packet given up on asks the
//! publisher for a keyframe (video): repair first, keyframes when repair
//! failed.
//!
//! # Publishers' retransmissions
//! A publisher's RTX packet (its SSRC announced by `a=ssrc-group:FID`, or
//! bound by `repaired-rid` for simulcast layers) is authenticated with the
//! publisher's keys, then rewritten in place into the packet it repairs
//! (original SSRC, sequence number and payload type; the two-byte original
//! sequence number removed) and forwarded like any other packet of the
//! stream. Padding-only RTX packets (bandwidth probes) are dropped and
//! counted.
//!
//! Nothing here allocates: the tracker's and the resend log's entries are
//! sized when the producer or consumer is created.

use std::time::{Duration, Instant};

use super::Transmit;
use super::cache::PacketCache;
use super::seq::StreamRewriter;
use super::stats::{Counter, DropReason, RouterStats};
use crate::codec::vp8::Vp8Rewriter;
use crate::srtp::SrtpContext;
use crate::wire;
use crate::wire::rtp::RtpPacket;

/// Most times one packet is resent to one consumer.
pub const MAX_RESENDS: u8 = 3;
/// Longest wait between two resends of one packet to one consumer (the
/// wait is min(this, 2 × RTT)).
pub const RESEND_INTERVAL_MAX: Duration = Duration::from_millis(100);
/// Packets of one consumer whose resends are remembered.
const RESEND_LOG: usize = 32;

/// Most missing packets a producer's tracker remembers at once.
pub const MAX_MISSING: usize = 256;
/// A forward jump of more than this many sequence numbers is a restart of
/// the publisher's numbering, not loss.
pub const MAX_GAP: u16 = 1000;
/// Most NACKs for one missing packet.
pub const MAX_NACKS: u8 = 10;
/// How long a missing packet is asked for.
pub const MAX_AGE: Duration = Duration::from_millis(1000);
/// Shortest wait before a missing packet is NACKed again.
pub const RETRY_MIN: Duration = Duration::from_millis(20);
/// Longest wait between two NACKs of one packet.
const RETRY_MAX: Duration = Duration::from_millis(250);
/// Sequence numbers in one NACK packet to a publisher.
pub const NACK_BATCH: usize = 64;

/// How a subscriber receives retransmissions of one consumer.
#[derive(Debug)]
pub(super) struct ConsumerRtx {
    /// The RTX stream's SSRC.
    pub(super) ssrc: u32,
    /// The subscriber's RTX payload type for the consumer's kind.
    pub(super) payload_type: u8,
    /// The RTX stream's next sequence number.
    seq: u16,
    /// Its stream in the subscriber's outbound SRTP context.
    pub(super) tx_stream: Option<usize>,
    /// Recent resends: (output sequence number, times, last time).
    log: [(u16, u8, Option<Instant>); RESEND_LOG],
    next: usize,
}

impl ConsumerRtx {
    pub(super) fn new(ssrc: u32, payload_type: u8, first_seq: u16) -> Self {
        Self {
            ssrc,
            payload_type,
            seq: first_seq,
            tx_stream: None,
            log: [(0, 0, None); RESEND_LOG],
            next: 0,
        }
    }

    /// The RTX stream's next sequence number (a probe's padding packet).
    pub(super) fn next_seq(&mut self) -> u16 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(1);
        s
    }

    /// Whether `seq` may be resent now, and if so records it.
    fn may_resend(&mut self, seq: u16, now: Instant, wait: Duration) -> bool {
        if let Some(e) = self.log.iter_mut().find(|e| e.2.is_some() && e.0 == seq) {
            let recent = e.2.is_some_and(|t| now.saturating_duration_since(t) < wait);
            if e.1 >= MAX_RESENDS || recent {
                return false;
            }
            e.1 += 1;
            e.2 = Some(now);
            return true;
        }
        if let Some(e) = self.log.get_mut(self.next) {
            *e = (seq, 1, Some(now));
        }
        self.next = (self.next + 1) % RESEND_LOG;
        true
    }
}

/// What a subscriber's NACK needs of its consumer and the producer.
pub(super) struct ResendCtx<'a> {
    pub(super) cache: &'a PacketCache,
    pub(super) rewriter: &'a StreamRewriter,
    pub(super) rtx: Option<&'a mut ConsumerRtx>,
    /// The consumer's PictureID rewriting, for a VP8 simulcast track: a
    /// resent packet carries the ids its original was sent with.
    pub(super) vp8: Option<&'a mut Vp8Rewriter>,
    pub(super) keys: &'a mut SrtpContext,
    pub(super) dst: std::net::SocketAddr,
    /// min(100 ms, 2 × RTT).
    pub(super) wait: Duration,
    /// The subscriber's egress numbering, when it negotiated the
    /// transport-wide sequence number: a resend carries the node's number
    /// (and no publisher extension), as every copy does.
    pub(super) egress: Option<&'a mut super::egress::Egress>,
}

/// Answers the sequence numbers `lost` a subscriber NACKed on one consumer.
pub(super) fn resend<T: Transmit>(
    ctx: ResendCtx<'_>,
    lost: impl Iterator<Item = u16>,
    now: Instant,
    stats: &mut RouterStats,
    tx: &mut T,
) {
    let ResendCtx {
        cache,
        rewriter,
        rtx,
        mut vp8,
        keys,
        dst,
        wait,
        mut egress,
    } = ctx;
    let Some(rtx) = rtx else {
        for _ in lost {
            stats.inc(Counter::NackedPackets);
            stats.inc(Counter::RtxUnanswerable);
        }
        return;
    };
    for out_seq in lost {
        stats.inc(Counter::NackedPackets);
        let Some(in_seq) = rewriter.input_seq(out_seq) else {
            if rewriter.forgotten(out_seq) {
                // Older than the cache holds.
                stats.inc(Counter::RtxNotCached);
            } else {
                stats.inc(Counter::RtxUnanswerable);
            }
            continue;
        };
        let Some(original) = cache
            .get(in_seq)
            .and_then(|b| RtpPacket::new_checked(b).ok())
        else {
            stats.inc(Counter::RtxNotCached);
            continue;
        };
        let Some(stream) = rtx.tx_stream else {
            stats.drop(DropReason::NotConnected);
            continue;
        };
        let size =
            super::egress::fixed_and_csrcs(&original) + 8 + 2 + original.payload().len() + 16;
        if let Some(e) = egress.as_deref_mut()
            && !e.rtx_fits(size, now)
        {
            stats.inc(Counter::RtxOverBudget);
            continue;
        }
        if !rtx.may_resend(out_seq, now, wait) {
            stats.inc(Counter::RtxThrottled);
            continue;
        }
        if let Some(e) = egress.as_deref_mut() {
            e.spend_rtx(size);
        }
        let Some(out) = tx.buffer() else {
            stats.drop(DropReason::PoolExhausted);
            continue;
        };
        // With the node's transport-wide number: the fixed header and
        // CSRCs, one 8-byte extension block; otherwise the original header.
        let numbered = egress.as_deref_mut().map(|e| (e.ext, e.number(size, now)));
        let Some((len, header_len)) = write_rtx(
            &original,
            out,
            rtx,
            out_seq,
            rewriter.output_ts(original.timestamp()),
            numbered,
        ) else {
            stats.drop(DropReason::ProtectFailed);
            continue;
        };
        if let Some(v) = vp8.as_deref_mut()
            && let Some(payload) = out.get_mut(header_len + 2..len)
        {
            // An older packet of the current source: mapped, not advanced.
            v.rewrite(payload, false);
        }
        match keys.protect_rtp_stream(stream, out, len) {
            Ok(n) => {
                tx.send(n, dst);
                stats.sent(n);
                stats.inc(Counter::RtxSent);
            }
            Err(_) => stats.drop(DropReason::ProtectFailed),
        }
    }
}

/// Writes the RTX packet (RFC 4588 §4) of `original` for a consumer into
/// `out`: the original header (extensions kept, padding dropped), or with
/// `numbered` = (id, number) its fixed header and CSRCs and one extension
/// block with the transport-wide number, with the RTX SSRC, payload type
/// and sequence number and the consumer's timestamp, then the consumer's
/// sequence number `osn`, then the payload. Returns the length and the
/// header's length.
fn write_rtx(
    original: &RtpPacket<'_>,
    out: &mut [u8],
    rtx: &mut ConsumerRtx,
    osn: u16,
    ts: u32,
    numbered: Option<(u8, u16)>,
) -> Option<(usize, usize)> {
    let bytes = original.as_bytes();
    let payload = original.payload();
    let header_len = match numbered {
        Some(_) => super::egress::fixed_and_csrcs(original) + 8,
        None => original.header_len(),
    };
    let len = header_len + 2 + payload.len();
    // Leave room for the SRTP tag.
    if len + 16 > out.len() {
        return None;
    }
    match numbered {
        Some((id, seq)) => {
            super::egress::write_numbered_header(original, out, id, seq)?;
        }
        None => out
            .get_mut(..header_len)?
            .copy_from_slice(bytes.get(..header_len)?),
    }
    out.get_mut(header_len..header_len + 2)?
        .copy_from_slice(&osn.to_be_bytes());
    out.get_mut(header_len + 2..len)?.copy_from_slice(payload);
    // No padding (P bit cleared), the RTX payload type, marker kept.
    if let Some(b) = out.get_mut(0) {
        *b &= !0x20;
    }
    if let Some(b) = out.get_mut(1) {
        *b = (*b & 0x80) | (rtx.payload_type & 0x7f);
    }
    out.get_mut(2..4)?.copy_from_slice(&rtx.seq.to_be_bytes());
    out.get_mut(4..8)?.copy_from_slice(&ts.to_be_bytes());
    out.get_mut(8..12)?.copy_from_slice(&rtx.ssrc.to_be_bytes());
    rtx.seq = rtx.seq.wrapping_add(1);
    Some((len, header_len))
}

/// Rewrites the authentic, decrypted RTX packet in `buf[..len]` in place
/// into the packet it repairs: `ssrc`, the original sequence number from
/// the payload's first two bytes, `payload_type`; padding removed. Returns
/// the new length, or the reason to drop it.
pub(super) fn unwrap_rtx(
    buf: &mut [u8],
    len: usize,
    ssrc: u32,
    payload_type: u8,
) -> Result<usize, DropReason> {
    let packet = buf
        .get(..len)
        .and_then(|b| RtpPacket::new_checked(b).ok())
        .ok_or(DropReason::Malformed)?;
    let header = packet.header_len();
    let payload_len = packet.payload().len();
    if payload_len < 2 {
        // Padding only: a probe.
        return Err(DropReason::RtxPadding);
    }
    let osn = wire::be16(buf, header);
    let end = header + payload_len;
    buf.copy_within(header + 2..end, header);
    let new_len = end - 2;
    let b0 = buf.first_mut().ok_or(DropReason::Malformed)?;
    *b0 &= !0x20;
    let b1 = buf.get_mut(1).ok_or(DropReason::Malformed)?;
    *b1 = (*b1 & 0x80) | (payload_type & 0x7f);
    buf.get_mut(2..4)
        .ok_or(DropReason::Malformed)?
        .copy_from_slice(&osn.to_be_bytes());
    buf.get_mut(8..12)
        .ok_or(DropReason::Malformed)?
        .copy_from_slice(&ssrc.to_be_bytes());
    Ok(new_len)
}

#[derive(Debug, Clone, Copy)]
struct Missing {
    seq: u16,
    /// When the gap was seen.
    since: Instant,
    /// NACKs sent for it.
    sent: u8,
    /// When it is NACKed next.
    next_at: Instant,
    /// When it was last NACKed.
    last_sent: Option<Instant>,
}

/// Gaps in one producer's stream and the NACKs that ask for them.
#[derive(Debug)]
pub struct NackTracker {
    highest: Option<u16>,
    missing: Box<[Option<Missing>]>,
    /// Smoothed time from a NACK to the repair arriving.
    repair_time: Option<Duration>,
    /// Earliest `next_at` of any entry (a lower bound).
    due: Option<Instant>,
}

/// What [`NackTracker::on_packet`] learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Arrival {
    /// The packet filled a gap the node had NACKed.
    pub repaired: bool,
    /// The packet revealed new missing packets.
    pub gap: bool,
}

impl NackTracker {
    /// A tracker with no history.
    pub fn new() -> Self {
        Self {
            highest: None,
            missing: vec![None; MAX_MISSING].into_boxed_slice(),
            repair_time: None,
            due: None,
        }
    }

    /// Records an arriving packet's sequence number.
    pub fn on_packet(&mut self, seq: u16, now: Instant) -> Arrival {
        let mut arrival = Arrival::default();
        let Some(highest) = self.highest else {
            self.highest = Some(seq);
            return arrival;
        };
        let d = seq.wrapping_sub(highest) as i16;
        if d > 0 {
            let d = d as u16;
            if d > MAX_GAP {
                // A restart: what was missing will not come.
                self.clear();
            } else {
                for i in 1..d {
                    arrival.gap |= self.insert(highest.wrapping_add(i), now);
                }
            }
            self.highest = Some(seq);
        } else if let Some(slot) = self
            .missing
            .iter_mut()
            .find(|m| m.is_some_and(|m| m.seq == seq))
            && let Some(m) = slot.take()
            && let Some(t) = m.last_sent
        {
            // Filled (a late packet or a repair); NACKed before: a repair,
            // which times the NACK-to-repair round trip.
            arrival.repaired = true;
            let sample = now.saturating_duration_since(t);
            self.repair_time = Some(match self.repair_time {
                Some(r) => (r * 7 + sample) / 8,
                None => sample,
            });
        }
        arrival
    }

    fn insert(&mut self, seq: u16, now: Instant) -> bool {
        let entry = Missing {
            seq,
            since: now,
            sent: 0,
            next_at: now,
            last_sent: None,
        };
        let free = match self.missing.iter().position(Option::is_none) {
            Some(i) => i,
            // Full: the oldest gives way.
            None => match self
                .missing
                .iter()
                .enumerate()
                .filter_map(|(i, m)| m.map(|m| (i, m.since)))
                .min_by_key(|&(_, since)| since)
            {
                Some((i, _)) => i,
                None => return false,
            },
        };
        if let Some(slot) = self.missing.get_mut(free) {
            *slot = Some(entry);
        }
        self.due = Some(self.due.map_or(now, |d| d.min(now)));
        true
    }

    /// Whether `seq` is a missing packet the tracker still asks for.
    pub fn is_missing(&self, seq: u16) -> bool {
        self.missing.iter().any(|m| m.is_some_and(|m| m.seq == seq))
    }

    /// Forgets every gap (the stream restarted).
    pub fn clear(&mut self) {
        for m in self.missing.iter_mut() {
            *m = None;
        }
        self.due = None;
    }

    /// Whether some missing packet may be due for a NACK at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.due.is_some_and(|d| d <= now)
    }

    /// Writes the sequence numbers to NACK now into `out` (ascending from
    /// the oldest, wrapping-aware order is the caller's `write_nack`'s),
    /// returns how many, and how many were given up (too old, or NACKed
    /// [`MAX_NACKS`] times).
    pub fn collect(&mut self, now: Instant, out: &mut [u16]) -> (usize, usize) {
        let mut n = 0;
        let mut gave_up = 0;
        let base = self.retry_base();
        let mut due: Option<Instant> = None;
        for slot in self.missing.iter_mut() {
            let Some(m) = slot else {
                continue;
            };
            if m.sent >= MAX_NACKS || now.saturating_duration_since(m.since) > MAX_AGE {
                *slot = None;
                gave_up += 1;
                continue;
            }
            if m.next_at <= now && n < out.len() {
                if let Some(o) = out.get_mut(n) {
                    *o = m.seq;
                }
                n += 1;
                m.sent += 1;
                m.last_sent = Some(now);
                let backoff = base
                    .saturating_mul(1 << u32::from(m.sent.saturating_sub(1)).min(4))
                    .min(RETRY_MAX);
                m.next_at = now + backoff;
            }
            due = Some(due.map_or(m.next_at, |d| d.min(m.next_at)));
        }
        self.due = due;
        // Ascending by distance behind the highest: oldest first.
        if let Some(h) = self.highest {
            out[..n].sort_unstable_by_key(|&s| std::cmp::Reverse(h.wrapping_sub(s)));
        }
        (n, gave_up)
    }

    /// The first retry wait: the measured repair time plus a margin, at
    /// least [`RETRY_MIN`].
    fn retry_base(&self) -> Duration {
        self.repair_time
            .map_or(RETRY_MIN, |r| (r + r / 2).max(RETRY_MIN))
            .min(RETRY_MAX)
    }

    /// Missing packets tracked now.
    pub fn missing(&self) -> usize {
        self.missing.iter().filter(|m| m.is_some()).count()
    }
}

impl Default for NackTracker {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn a_gap_is_nacked_at_once_then_with_backoff_until_repaired() {
        let t0 = Instant::now();
        let mut t = NackTracker::new();
        let mut out = [0u16; NACK_BATCH];
        assert_eq!(t.on_packet(100, t0), Arrival::default());
        let a = t.on_packet(103, t0);
        assert!(a.gap);
        assert!(t.due(t0));
        assert_eq!(t.collect(t0, &mut out), (2, 0));
        assert_eq!(&out[..2], &[101, 102]);
        // Not again before the retry wait.
        assert!(!t.due(ms(t0, 5)));
        assert_eq!(t.collect(ms(t0, 5), &mut out), (0, 0));
        assert!(t.due(ms(t0, 20)));
        assert_eq!(t.collect(ms(t0, 20), &mut out), (2, 0));
        // 101 is repaired 10 ms after the second NACK.
        let a = t.on_packet(101, ms(t0, 30));
        assert!(a.repaired && !a.gap);
        assert_eq!(t.missing(), 1);
        // Third NACK of 102 waits twice the base (>= 20 ms after 20 ms).
        assert_eq!(t.collect(ms(t0, 45), &mut out).0, 0);
        assert_eq!(t.collect(ms(t0, 60), &mut out), (1, 0));
        assert_eq!(out[0], 102);
    }

    #[test]
    fn gives_up_after_max_age_and_across_wrap() {
        let t0 = Instant::now();
        let mut t = NackTracker::new();
        let mut out = [0u16; NACK_BATCH];
        t.on_packet(65534, t0);
        t.on_packet(1, t0);
        assert_eq!(t.collect(t0, &mut out), (2, 0));
        assert_eq!(&out[..2], &[65535, 0]);
        let late = t0 + MAX_AGE + Duration::from_millis(1);
        assert_eq!(t.collect(late, &mut out), (0, 2));
        assert_eq!(t.missing(), 0);
    }

    #[test]
    fn a_huge_jump_is_a_restart_and_reordering_is_not_loss() {
        let t0 = Instant::now();
        let mut t = NackTracker::new();
        t.on_packet(10, t0);
        assert!(!t.on_packet(10 + MAX_GAP + 1, t0).gap);
        assert_eq!(t.missing(), 0);
        // An old packet arriving late changes nothing.
        assert_eq!(t.on_packet(5, t0), Arrival::default());
        // Never more than MAX_MISSING tracked.
        let mut t = NackTracker::new();
        t.on_packet(0, t0);
        t.on_packet(MAX_GAP, t0);
        assert_eq!(t.missing(), MAX_MISSING);
    }

    #[test]
    fn resends_are_limited_per_packet() {
        let t0 = Instant::now();
        let mut r = ConsumerRtx::new(1, 97, 0);
        let wait = Duration::from_millis(100);
        assert!(r.may_resend(7, t0, wait));
        assert!(!r.may_resend(7, ms(t0, 50), wait));
        assert!(r.may_resend(7, ms(t0, 100), wait));
        assert!(r.may_resend(7, ms(t0, 200), wait));
        assert!(!r.may_resend(7, ms(t0, 400), wait), "three resends at most");
        assert!(r.may_resend(8, ms(t0, 400), wait));
    }

    #[test]
    fn rtx_round_trip_restores_the_original() {
        use crate::wire::rtp::{RtpHeader, write_header};
        let mut original = [0u8; 200];
        let h = write_header(
            &mut original,
            &RtpHeader {
                marker: true,
                payload_type: 96,
                sequence_number: 500,
                timestamp: 9000,
                ssrc: 0x1111,
            },
            &[(3, &[1, 2, 3])],
        )
        .unwrap();
        for (i, b) in original[h..100].iter_mut().enumerate() {
            *b = i as u8;
        }
        let packet = RtpPacket::new_checked(&original[..100]).unwrap();
        let mut rtx = ConsumerRtx::new(0x2222, 97, 40);
        let mut out = [0u8; 1500];
        let (n, header) = write_rtx(&packet, &mut out, &mut rtx, 700, 12345, None).unwrap();
        assert_eq!((n, header), (102, h));
        let r = RtpPacket::new_checked(&out[..n]).unwrap();
        assert_eq!(
            (
                r.ssrc(),
                r.payload_type(),
                r.sequence_number(),
                r.timestamp(),
                r.marker()
            ),
            (0x2222, 97, 40, 12345, true)
        );
        assert_eq!(&r.payload()[..2], &700u16.to_be_bytes());
        // Unwrapped as a publisher's RTX would be.
        let back = unwrap_rtx(&mut out, n, 0x3333, 96).unwrap();
        let b = RtpPacket::new_checked(&out[..back]).unwrap();
        assert_eq!(
            (b.ssrc(), b.payload_type(), b.sequence_number()),
            (0x3333, 96, 700)
        );
        assert_eq!(b.payload(), packet.payload());
        // For a subscriber with a transport-wide number: its extension
        // alone (id 5, number 0x1234) instead of the original's.
        let (n, header) =
            write_rtx(&packet, &mut out, &mut rtx, 701, 12345, Some((5, 0x1234))).unwrap();
        assert_eq!(header, 12 + 8);
        let r = RtpPacket::new_checked(&out[..n]).unwrap();
        assert_eq!(r.sequence_number(), 41);
        assert_eq!(r.extension(5), Some(&[0x12, 0x34][..]));
        assert_eq!(&r.payload()[..2], &701u16.to_be_bytes());
        assert_eq!(&r.payload()[2..], packet.payload());
        // Padding only: a probe.
        let mut probe = [0u8; 40];
        let h = write_header(&mut probe, &RtpHeader::default(), &[]).unwrap();
        assert_eq!(
            unwrap_rtx(&mut probe, h, 1, 96),
            Err(DropReason::RtxPadding)
        );
    }
}
