//! Rate control: libwebrtc's `AimdRateControl` with its
//! `LinkCapacityEstimator`, the classic loss-based bound of
//! `SendSideBandwidthEstimation`, and an acknowledged-bitrate window.

use std::time::{Duration, Instant};

use super::delay::BandwidthUsage;

/// Multiplicative decrease on overuse: this fraction of the acked bitrate.
const BETA: f64 = 0.85;
/// Multiplicative increase per second, far from the last congestion point.
const MULTIPLICATIVE_PER_SECOND: f64 = 1.08;
/// Smallest increase a multiplicative step makes, bps.
const MIN_MULTIPLICATIVE_BPS: f64 = 1_000.0;
/// Smallest additive increase rate, bps per second.
const MIN_ADDITIVE_BPS_PER_SECOND: f64 = 4_000.0;
/// The estimate may exceed the acked bitrate by this factor (plus 10 kbit/s)
/// before increases stop: no growing on paper beyond what the link carried.
const THROUGHPUT_HEADROOM: f64 = 1.5;
const THROUGHPUT_HEADROOM_BPS: f64 = 10_000.0;

/// Loss below which the loss-based bound grows.
pub const LOW_LOSS: f64 = 0.02;
/// Loss above which the loss-based bound shrinks.
pub const HIGH_LOSS: f64 = 0.10;
/// Packets a loss fraction is computed over, at least.
const LOSS_MIN_PACKETS: u32 = 20;
/// Time between two loss-based decreases, plus one RTT.
const LOSS_DECREASE_INTERVAL: Duration = Duration::from_millis(300);

/// Minimum and maximum the estimate is held between, bps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Lowest estimate, bps.
    pub min_bps: u64,
    /// Highest estimate, bps.
    pub max_bps: u64,
}

impl Bounds {
    fn clamp(self, bps: f64) -> f64 {
        let max = self.max_bps.max(self.min_bps) as f64;
        bps.clamp(self.min_bps as f64, max)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AimdState {
    Hold,
    Increase,
    Decrease,
}

/// Where the link saturated the last times overuse was detected
/// (`LinkCapacityEstimator`): an average and a normalised variance, kbit/s.
#[derive(Debug, Clone, Copy, Default)]
struct LinkCapacity {
    estimate_kbps: Option<f64>,
    deviation_kbps: f64,
}

impl LinkCapacity {
    fn upper_bound_bps(&self) -> f64 {
        self.estimate_kbps
            .map_or(f64::INFINITY, |e| (e + 3.0 * self.deviation(e)) * 1000.0)
    }

    fn lower_bound_bps(&self) -> f64 {
        self.estimate_kbps
            .map_or(0.0, |e| (e - 3.0 * self.deviation(e)).max(0.0) * 1000.0)
    }

    fn deviation(&self, estimate: f64) -> f64 {
        (self.deviation_kbps * estimate).sqrt()
    }

    fn on_overuse(&mut self, acked_bps: f64) {
        let sample = acked_bps / 1000.0;
        let alpha = 0.05;
        let estimate = self
            .estimate_kbps
            .map_or(sample, |e| (1.0 - alpha) * e + alpha * sample);
        let error = estimate - sample;
        let deviation =
            (1.0 - alpha) * self.deviation_kbps + alpha * error * error / estimate.max(1.0);
        self.deviation_kbps = deviation.clamp(0.4, 2.5);
        self.estimate_kbps = Some(estimate);
    }
}

/// Additive-increase, multiplicative-decrease control of the delay-based
/// estimate (`AimdRateControl`).
///
/// * Normal: increase — multiplicatively (8 %/s) while the acked bitrate is
///   above the last congestion point's upper bound, additively (about one
///   packet per response time, `2 × (RTT + 100 ms)`) near it.
/// * Overusing: decrease to 0.85 × acked bitrate, at most once per
///   `clamp(RTT, 10 ms, 200 ms)` unless the acked bitrate fell below half the
///   estimate; then hold.
/// * Underusing: hold (the queue drains; do not add to it).
#[derive(Debug, Clone)]
pub struct AimdRateControl {
    bounds: Bounds,
    bps: f64,
    state: AimdState,
    link: LinkCapacity,
    last_change: Option<Instant>,
    last_throughput_bps: Option<f64>,
}

impl AimdRateControl {
    /// A controller at `start_bps` (clamped to `bounds`), holding.
    pub fn new(bounds: Bounds, start_bps: u64) -> Self {
        Self {
            bounds,
            bps: bounds.clamp(start_bps as f64),
            state: AimdState::Hold,
            link: LinkCapacity::default(),
            last_change: None,
            last_throughput_bps: None,
        }
    }

    /// The delay-based estimate, bps.
    pub fn bps(&self) -> u64 {
        self.bps as u64
    }

    /// Whether an overuse signal at `now` should lower the estimate again.
    pub fn time_to_reduce_further(&self, now: Instant, rtt: Duration, acked_bps: u64) -> bool {
        let interval = rtt.clamp(Duration::from_millis(10), Duration::from_millis(200));
        self.last_change
            .is_none_or(|t| now.saturating_duration_since(t) >= interval)
            || (acked_bps as f64) < 0.5 * self.bps
    }

    /// Sets the estimate (a probe result), leaving the state as it is.
    pub fn set_estimate(&mut self, bps: u64, now: Instant) {
        self.bps = self.bounds.clamp(bps as f64);
        self.last_change = Some(now);
    }

    /// One update with the detector's `usage`, the acked bitrate when
    /// known, and the RTT.
    pub fn update(
        &mut self,
        usage: BandwidthUsage,
        acked_bps: Option<u64>,
        rtt: Duration,
        now: Instant,
    ) -> u64 {
        if let Some(a) = acked_bps {
            self.last_throughput_bps = Some(a as f64);
        }
        let throughput = self.last_throughput_bps.unwrap_or(self.bps);
        match usage {
            BandwidthUsage::Normal if self.state == AimdState::Hold => {
                self.last_change = Some(now);
                self.state = AimdState::Increase;
            }
            BandwidthUsage::Normal => {}
            BandwidthUsage::Overusing => self.state = AimdState::Decrease,
            BandwidthUsage::Underusing => self.state = AimdState::Hold,
        }
        let since = self
            .last_change
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
            .as_secs_f64();
        match self.state {
            AimdState::Hold => {}
            AimdState::Increase => {
                if throughput > self.link.upper_bound_bps() {
                    self.link = LinkCapacity::default();
                }
                let limit = THROUGHPUT_HEADROOM * throughput + THROUGHPUT_HEADROOM_BPS;
                if self.bps < limit {
                    let increase = if self.link.estimate_kbps.is_some() {
                        self.additive_rate(rtt) * since
                    } else {
                        (self.bps * (MULTIPLICATIVE_PER_SECOND.powf(since.min(1.0)) - 1.0))
                            .max(MIN_MULTIPLICATIVE_BPS)
                    };
                    self.bps = (self.bps + increase).min(limit);
                }
                self.last_change = Some(now);
            }
            AimdState::Decrease => {
                let mut decreased = BETA * throughput;
                if decreased > self.bps
                    && let Some(e) = self.link.estimate_kbps
                {
                    decreased = BETA * e * 1000.0;
                }
                if decreased < self.bps {
                    self.bps = decreased;
                }
                if throughput < self.link.lower_bound_bps() {
                    // Far below the usual back-off: the link changed.
                    self.link = LinkCapacity::default();
                }
                self.link.on_overuse(throughput);
                self.state = AimdState::Hold;
                self.last_change = Some(now);
            }
        }
        self.bps = self.bounds.clamp(self.bps);
        self.bps()
    }

    /// `GetNearMaxIncreaseRateBpsPerSecond`: one average packet of a 30 fps
    /// stream at the current rate per response time.
    fn additive_rate(&self, rtt: Duration) -> f64 {
        let frame_bits = self.bps / 30.0;
        let packets = (frame_bits / (1200.0 * 8.0)).ceil().max(1.0);
        let response = 2.0 * (rtt.as_secs_f64() + 0.1);
        (frame_bits / packets / response).max(MIN_ADDITIVE_BPS_PER_SECOND)
    }
}

/// The classic loss-based bound of libwebrtc's `SendSideBandwidthEstimation`,
/// applied as a cap on the delay-based estimate.
///
/// The loss fraction is computed over at least 20 reported packets. Below
/// 2 % the bound grows 8 %/s and is lifted once it exceeds the delay-based
/// estimate; from 2 to 10 % it holds at the current target; above 10 % it
/// becomes `target × (1 − 0.5 × loss)`, at most once per 300 ms + RTT.
///
/// Two departures from the classic rule, both from libwebrtc's later
/// behaviour: the bound never goes below half the acknowledged bitrate (what
/// got through, [`LOSS_FLOOR_OF_ACKED`]), so a burst of loss while a
/// too-high layer drains through a shaper does not compound down to
/// nothing, and a bound already lower is raised to it (to all of it once
/// loss is low again); and a
/// successful probe lifts the bound to the probed rate
/// ([`LossBasedBound::on_probe`], libwebrtc's `SetSendBitrate` on a probe
/// result), so recovery after a cap is not held to 8 %/s.
#[derive(Debug, Clone)]
pub struct LossBasedBound {
    expected: u32,
    lost: u32,
    fraction: f64,
    bound: Option<f64>,
    last_update: Option<Instant>,
    last_decrease: Option<Instant>,
}

impl Default for LossBasedBound {
    fn default() -> Self {
        Self::new()
    }
}

impl LossBasedBound {
    /// No loss seen, no bound.
    pub fn new() -> Self {
        Self {
            expected: 0,
            lost: 0,
            fraction: 0.0,
            bound: None,
            last_update: None,
            last_decrease: None,
        }
    }

    /// Loss fraction of the last complete interval, 0..=1.
    pub fn fraction(&self) -> f64 {
        self.fraction
    }

    /// The bound, bps; `None` while loss is low.
    pub fn bound_bps(&self) -> Option<u64> {
        self.bound.map(|b| b as u64)
    }

    /// Counts a feedback's received and lost packets; once 20 are counted,
    /// updates the bound from `target_bps` (the current combined target),
    /// `delay_bps` (the delay-based estimate) and `acked_bps` (the
    /// acknowledged bitrate, once measured).
    #[allow(clippy::too_many_arguments)] // One call site, all distinct inputs.
    pub fn on_feedback(
        &mut self,
        received: u32,
        lost: u32,
        target_bps: u64,
        delay_bps: u64,
        acked_bps: Option<u64>,
        rtt: Duration,
        now: Instant,
    ) {
        self.expected = self.expected.saturating_add(received).saturating_add(lost);
        self.lost = self.lost.saturating_add(lost);
        if self.expected < LOSS_MIN_PACKETS {
            return;
        }
        self.fraction = f64::from(self.lost) / f64::from(self.expected);
        self.expected = 0;
        self.lost = 0;
        let since = self
            .last_update
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        self.last_update = Some(now);
        let target = target_bps as f64;
        if self.fraction < LOW_LOSS {
            if let Some(b) = self.bound {
                // At least what got through, now that it all does.
                let grown = (b * MULTIPLICATIVE_PER_SECOND.powf(since.min(1.0)) + 1_000.0 * since)
                    .max(acked_bps.unwrap_or(0) as f64);
                self.bound = (grown < delay_bps as f64).then_some(grown);
            }
        } else {
            let floor = acked_bps.map_or(0.0, |a| a as f64 * LOSS_FLOOR_OF_ACKED);
            let held = if self.fraction <= HIGH_LOSS
                || self.last_decrease.is_some_and(|t| {
                    now.saturating_duration_since(t) < LOSS_DECREASE_INTERVAL + rtt
                }) {
                self.bound.map_or(target, |b| b.min(target))
            } else {
                self.last_decrease = Some(now);
                target * (1.0 - 0.5 * self.fraction)
            };
            // Never below half of what got through, even once the target
            // itself went lower.
            self.bound = Some(held.max(floor));
        }
    }

    /// A probe measured `bps` on the path: the bound (if any) is raised to
    /// it, and lifted at the next low-loss update.
    pub fn on_probe(&mut self, bps: u64) {
        if let Some(b) = self.bound.as_mut() {
            *b = b.max(bps as f64);
        }
    }
}

/// Lowest a loss-based decrease goes, as a fraction of the acknowledged
/// bitrate.
pub const LOSS_FLOOR_OF_ACKED: f64 = 0.5;

/// The receive rate of acknowledged packets over a sliding window of
/// arrival time, in a fixed ring.
#[derive(Debug, Clone)]
pub struct AckedBitrate {
    window_us: i64,
    /// (arrival µs, size) in insertion order.
    ring: Box<[(i64, u32)]>,
    head: usize,
    len: usize,
    bytes: u64,
    latest_us: i64,
}

/// Shortest span of arrivals a rate is computed over, µs.
const ACKED_MIN_SPAN_US: i64 = 100_000;

impl AckedBitrate {
    /// A window of `window` holding at most `capacity` packets (the oldest
    /// are dropped early beyond that).
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            window_us: i64::try_from(window.as_micros()).unwrap_or(i64::MAX),
            ring: vec![(0, 0); capacity.max(2)].into_boxed_slice(),
            head: 0,
            len: 0,
            bytes: 0,
            latest_us: i64::MIN,
        }
    }

    /// Adds a packet that arrived at `arrival_us` (receiver's clock).
    pub fn on_packet(&mut self, arrival_us: i64, size: u32) {
        if self.len == self.ring.len() {
            self.pop();
        }
        let at = (self.head + self.len) % self.ring.len();
        self.ring[at] = (arrival_us, size);
        self.len += 1;
        self.bytes += u64::from(size);
        self.latest_us = self.latest_us.max(arrival_us);
        while self.len > 0 && self.ring[self.head].0 < self.latest_us.saturating_sub(self.window_us)
        {
            self.pop();
        }
    }

    fn pop(&mut self) {
        self.bytes -= u64::from(self.ring[self.head].1);
        self.head = (self.head + 1) % self.ring.len();
        self.len -= 1;
    }

    /// Bits per second over the window; `None` until it spans 100 ms.
    pub fn bps(&self) -> Option<u64> {
        if self.len < 2 {
            return None;
        }
        let (first, first_size) = self.ring[self.head];
        let span = self.latest_us.saturating_sub(first);
        if span < ACKED_MIN_SPAN_US {
            return None;
        }
        let bits = (self.bytes - u64::from(first_size)) as f64 * 8.0;
        Some((bits * 1e6 / span as f64) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: Bounds = Bounds {
        min_bps: 30_000,
        max_bps: 20_000_000,
    };

    #[test]
    fn aimd_increases_eight_percent_per_second_and_backs_off_to_085_acked() {
        let t0 = Instant::now();
        let rtt = Duration::from_millis(100);
        let mut a = AimdRateControl::new(BOUNDS, 1_000_000);
        a.update(BandwidthUsage::Normal, Some(1_000_000), rtt, t0);
        let mut t = t0;
        for _ in 0..20 {
            t += Duration::from_millis(50);
            a.update(BandwidthUsage::Normal, Some(1_000_000), rtt, t);
        }
        assert!((1_075_000..=1_085_000).contains(&a.bps()), "{}", a.bps());
        // Capped at 1.5 × acked + 10 kbit/s.
        for _ in 0..200 {
            t += Duration::from_millis(50);
            a.update(BandwidthUsage::Normal, Some(1_000_000), rtt, t);
        }
        assert_eq!(a.bps(), 1_510_000);
        let b = a.update(BandwidthUsage::Overusing, Some(1_200_000), rtt, t);
        assert_eq!(b, 1_020_000);
        // Held while underusing; additive near the congestion point.
        t += Duration::from_secs(1);
        assert_eq!(
            a.update(BandwidthUsage::Underusing, Some(1_000_000), rtt, t),
            b
        );
        t += Duration::from_millis(50);
        a.update(BandwidthUsage::Normal, Some(1_100_000), rtt, t);
        t += Duration::from_secs(1);
        let after = a.update(BandwidthUsage::Normal, Some(1_100_000), rtt, t);
        assert!(after > b && after < b + 40_000, "{after}");
    }

    #[test]
    fn loss_bound_holds_and_reduces() {
        let t0 = Instant::now();
        let rtt = Duration::from_millis(100);
        let mut l = LossBasedBound::new();
        l.on_feedback(95, 5, 1_000_000, 1_500_000, None, rtt, t0);
        assert_eq!(l.bound_bps(), Some(1_000_000));
        l.on_feedback(
            80,
            20,
            1_000_000,
            1_500_000,
            None,
            rtt,
            t0 + Duration::from_secs(1),
        );
        assert_eq!(l.bound_bps(), Some(900_000));
        // Too soon for another decrease: hold.
        l.on_feedback(
            80,
            20,
            900_000,
            1_500_000,
            None,
            rtt,
            t0 + Duration::from_millis(1100),
        );
        assert_eq!(l.bound_bps(), Some(900_000));
        // Low loss grows it and lifts it past the delay-based estimate.
        let mut t = t0 + Duration::from_secs(2);
        for _ in 0..20 {
            t += Duration::from_secs(1);
            l.on_feedback(100, 0, 900_000, 1_500_000, None, rtt, t);
        }
        assert_eq!(l.bound_bps(), None);
        assert_eq!(l.fraction(), 0.0);
    }

    #[test]
    fn loss_bound_stops_at_half_the_acked_rate_and_a_probe_lifts_it() {
        let t0 = Instant::now();
        let rtt = Duration::from_millis(50);
        let mut l = LossBasedBound::new();
        // 50 % loss, again and again, 400 ms apart: 1 M, 750 k, 562 k, ...
        // but never under half of the 400 kbit/s that got through.
        let mut target = 1_000_000;
        for i in 0..20 {
            let now = t0 + Duration::from_millis(400 * i);
            l.on_feedback(50, 50, target, 2_000_000, Some(400_000), rtt, now);
            target = l.bound_bps().unwrap();
        }
        assert_eq!(target, 200_000);
        // Without an acked rate the classic rule goes on down.
        l.on_feedback(
            50,
            50,
            target,
            2_000_000,
            None,
            rtt,
            t0 + Duration::from_secs(9),
        );
        assert_eq!(l.bound_bps(), Some(150_000));
        // A probe that measured 1.2 Mbit/s raises it; the next clean
        // interval lifts it (the delay-based estimate is the probe's).
        l.on_probe(1_200_000);
        assert_eq!(l.bound_bps(), Some(1_200_000));
        l.on_feedback(
            100,
            0,
            1_200_000,
            1_200_000,
            Some(1_000_000),
            rtt,
            t0 + Duration::from_secs(10),
        );
        assert_eq!(l.bound_bps(), None);
    }

    #[test]
    fn acked_bitrate_over_window() {
        let mut a = AckedBitrate::new(Duration::from_millis(500), 64);
        assert_eq!(a.bps(), None);
        // 1200 bytes every 10 ms: 960 kbit/s; the ring of 64 keeps 630 ms > window.
        for i in 0..200 {
            a.on_packet(i * 10_000, 1200);
        }
        assert_eq!(a.bps(), Some(960_000));
        a.on_packet(i64::MIN, u32::MAX);
        a.on_packet(i64::MAX, u32::MAX);
        a.bps();
    }
}
