//! RTCP reports: sender reports translated per consumer, receiver reports
//! to publishers, and subscribers' receiver reports read (RFC 3550 §6.4).
//!
//! # Sender reports, per consumer
//! A publisher's SR maps its RTP clock to its NTP clock; a subscriber needs
//! that mapping per stream to play one participant's audio and video in
//! sync. When an authentic SR of a producer arrives, each consumer the
//! producer feeds gets its own copy at once: the consumer's SSRC, the RTP
//! timestamp moved by the consumer's offset (what the subscriber sees in
//! the packets), the NTP time kept, and the packet and octet counts the
//! consumer sent. A consumer fed by another producer (a simulcast layer or
//! speaker it does not receive) gets nothing, so reports of inactive layers
//! never reach it. The NTP time's middle 32 bits and the send time are kept
//! per consumer to compute the round-trip time from the subscriber's
//! receiver reports (LSR/DLSR).
//!
//! # Receiver reports, to publishers
//! Each producer keeps reception statistics (RFC 3550 A.3 and A.8:
//! extended highest sequence number, cumulative and interval loss,
//! interarrival jitter, LSR/DLSR of its last SR), updated per packet with a
//! few integer operations. Every [`RTCP_INTERVAL`] a publishing endpoint gets
//! one RR with a block per producer (at most 31), so a browser publisher
//! learns its loss and round-trip time.
//!
//! # Subscribers' receiver reports
//! Blocks about a consumer's SSRC give its fraction lost and jitter (kept
//! on the consumer) and, through LSR/DLSR, the subscriber's round-trip time
//! (smoothed on the endpoint), which paces retransmissions.

use std::time::{Duration, Instant};

use crate::wire::rtcp::ReportBlockData;

/// Time between two receiver reports to one publisher.
pub const RTCP_INTERVAL: Duration = Duration::from_millis(1000);

/// Most report blocks in one RR (a 5-bit count).
pub const MAX_BLOCKS: usize = 31;

/// A producer's reception statistics (RFC 3550 A.3, A.8).
#[derive(Debug, Clone)]
pub struct ReceptionStats {
    clock_rate: u32,
    epoch: Instant,
    started: bool,
    max_seq: u16,
    cycles: u32,
    base_seq: u32,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
    /// Interarrival jitter in RTP units, scaled by 16 (A.8).
    jitter_q4: u32,
    transit: Option<u32>,
    /// Middle 32 bits of the last SR's NTP time, and when it arrived.
    last_sr: Option<(u32, Instant)>,
}

impl ReceptionStats {
    /// Statistics of a stream with RTP clock `clock_rate`; arrival times
    /// count from `epoch`.
    pub fn new(clock_rate: u32, epoch: Instant) -> Self {
        Self {
            clock_rate: clock_rate.max(1),
            epoch,
            started: false,
            max_seq: 0,
            cycles: 0,
            base_seq: 0,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            jitter_q4: 0,
            transit: None,
            last_sr: None,
        }
    }

    /// Records a packet (sequence number, RTP timestamp) arriving at `now`.
    pub fn on_packet(&mut self, seq: u16, ts: u32, now: Instant) {
        if !self.started {
            self.started = true;
            self.max_seq = seq;
            self.base_seq = u32::from(seq);
        } else {
            let d = seq.wrapping_sub(self.max_seq);
            if d != 0 && d < 0x8000 {
                if seq < self.max_seq {
                    self.cycles = self.cycles.wrapping_add(1 << 16);
                }
                self.max_seq = seq;
            }
        }
        self.received = self.received.wrapping_add(1);
        // Jitter: the arrival in RTP units against the timestamp.
        let micros = now.saturating_duration_since(self.epoch).as_micros();
        let arrival = (micros * u128::from(self.clock_rate) / 1_000_000) as u32;
        let transit = arrival.wrapping_sub(ts);
        if let Some(prev) = self.transit {
            let d = (transit.wrapping_sub(prev) as i32).unsigned_abs();
            // J += (|D| - J) / 16, in Q4: J16 += |D| - J16 / 16.
            self.jitter_q4 = self
                .jitter_q4
                .wrapping_add(d.min(1 << 24))
                .wrapping_sub((self.jitter_q4 + 8) >> 4);
        }
        self.transit = Some(transit);
    }

    /// Records the publisher's SR with NTP time `ntp`, arriving at `now`.
    pub fn on_sender_report(&mut self, ntp: u64, now: Instant) {
        self.last_sr = Some(((ntp >> 16) as u32, now));
    }

    /// The report block about this stream (`ssrc`) at `now`; starts the
    /// next interval. `None` before the first packet.
    pub fn block(&mut self, ssrc: u32, now: Instant) -> Option<ReportBlockData> {
        if !self.started {
            return None;
        }
        let extended = self.cycles | u32::from(self.max_seq);
        let expected = extended.wrapping_sub(self.base_seq).wrapping_add(1);
        let lost = i64::from(expected) - i64::from(self.received);
        let expected_interval = expected.wrapping_sub(self.expected_prior);
        let received_interval = self.received.wrapping_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = i64::from(expected_interval) - i64::from(received_interval);
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / i64::from(expected_interval)).min(255) as u8
        };
        let (last_sr, delay_since_last_sr) = match self.last_sr {
            Some((lsr, at)) => (lsr, to_q16(now.saturating_duration_since(at))),
            None => (0, 0),
        };
        Some(ReportBlockData {
            ssrc,
            fraction_lost,
            cumulative_lost: lost.clamp(-(1 << 23), (1 << 23) - 1) as i32,
            highest_seq: extended,
            jitter: self.jitter_q4 >> 4,
            last_sr,
            delay_since_last_sr,
        })
    }
}

/// A duration in units of 1/65536 s (DLSR), saturating.
pub fn to_q16(d: Duration) -> u32 {
    let units = d.as_micros() * 65_536 / 1_000_000;
    u32::try_from(units).unwrap_or(u32::MAX)
}

/// The round-trip time a receiver report block gives for an SR whose
/// middle NTP bits were `lsr`, sent at `sent_at`, with the block's `dlsr`,
/// received at `now` (RFC 3550 §6.4.1, computed on the node's own clock).
pub fn rtt(sent_at: Instant, dlsr: u32, now: Instant) -> Option<Duration> {
    let held = Duration::from_micros(u64::from(dlsr) * 1_000_000 / 65_536);
    now.saturating_duration_since(sent_at).checked_sub(held)
}

/// What the router keeps of a producer's last SR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    /// NTP time.
    pub ntp: u64,
    /// RTP timestamp at that NTP time.
    pub rtp: u32,
}

/// A consumer's sending side, for the SRs it gets and the RTT they give.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConsumerReports {
    /// Packets sent (SR sender's packet count).
    pub packets: u32,
    /// Payload octets sent (SR sender's octet count).
    pub octets: u32,
    /// Middle NTP bits of the last SR sent, and when.
    pub last_sr: Option<(u32, Instant)>,
    /// The subscriber's last fraction lost (1/256 units).
    pub fraction_lost: u8,
    /// The subscriber's last jitter (RTP units).
    pub jitter: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_and_extended_sequence_across_wrap() {
        let t0 = Instant::now();
        let mut s = ReceptionStats::new(90_000, t0);
        assert!(s.block(1, t0).is_none());
        // 65530..=65535 and 0..=9 except 2 and 3: 14 of 16.
        for seq in (65530u16..=65535)
            .chain(0..10)
            .filter(|s| *s != 2 && *s != 3)
        {
            s.on_packet(seq, 0, t0);
        }
        let b = s.block(7, t0).unwrap();
        assert_eq!(b.ssrc, 7);
        assert_eq!(b.highest_seq, (1 << 16) | 9);
        assert_eq!(b.cumulative_lost, 2);
        assert_eq!(b.fraction_lost, (2 * 256 / 16) as u8);
        // Next interval: no loss.
        for seq in 10..20 {
            s.on_packet(seq, 0, t0);
        }
        let b = s.block(7, t0).unwrap();
        assert_eq!((b.fraction_lost, b.cumulative_lost), (0, 2));
        // A duplicate makes loss negative in the interval: reported as 0.
        s.on_packet(19, 0, t0);
        assert_eq!(s.block(7, t0).unwrap().fraction_lost, 0);
    }

    #[test]
    fn jitter_follows_arrival_spread_and_lsr_dlsr() {
        let t0 = Instant::now();
        let mut s = ReceptionStats::new(90_000, t0);
        // 20 ms apart in timestamps, arriving alternately 0 and 10 ms late.
        for i in 0..200u32 {
            let late = if i % 2 == 0 { 0 } else { 10 };
            let at = t0 + Duration::from_millis(u64::from(i) * 20 + late);
            s.on_packet(i as u16, i * 1800, at);
        }
        let j = s.block(1, t0 + Duration::from_secs(4)).unwrap().jitter;
        // |D| is 900 ticks every packet: J converges to 900.
        assert!((850..=950).contains(&j), "jitter {j}");
        let sr_at = t0 + Duration::from_secs(5);
        s.on_sender_report(0x1234_5678_9abc_def0, sr_at);
        let b = s.block(1, sr_at + Duration::from_millis(500)).unwrap();
        assert_eq!(b.last_sr, 0x5678_9abc);
        assert_eq!(b.delay_since_last_sr, 32_768);
        // The publisher computes RTT from it; we check our own formula.
        let sent = t0;
        let rtt = rtt(sent, 32_768, t0 + Duration::from_millis(540)).unwrap();
        assert_eq!(rtt.as_millis(), 40);
    }
}
