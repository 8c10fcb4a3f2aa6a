//! The delay-based detector: libwebrtc's `InterArrivalDelta` (packet groups),
//! `TrendlineEstimator` (slope of the accumulated one-way delay variation)
//! and its adaptive threshold, with libwebrtc's constants.

/// Packets sent within this long of a group's first packet form one group.
const SEND_GROUP_US: i64 = 5_000;
/// A packet arriving within this long of the previous one, with a negative
/// propagation delta, joins the group (a burst the network bunched up).
const BURST_DELTA_US: i64 = 5_000;
/// Longest a burst may last.
const MAX_BURST_US: i64 = 100_000;
/// An arrival delta exceeding the send delta by this much resets the
/// detector (the receiver's clock jumped, or hostile feedback).
const ARRIVAL_OFFSET_THRESHOLD_US: i64 = 3_000_000;
/// Consecutive out-of-order groups that reset the detector.
const REORDERED_RESET: u32 = 3;
/// No packet for this long (in arrival time) resets the detector.
const STREAM_TIMEOUT_US: i64 = 2_000_000;

/// Points in the trendline's linear regression.
pub const TRENDLINE_WINDOW: usize = 20;
/// Smoothing of the accumulated delay.
const SMOOTHING: f64 = 0.9;
/// Gain applied to the trend before comparing it with the threshold.
const THRESHOLD_GAIN: f64 = 4.0;
/// Most deltas counted in the trend's gain.
const MIN_NUM_DELTAS: u32 = 60;
const DELTA_COUNTER_MAX: u32 = 1000;
/// Time the trend must stay over the threshold before overuse is declared.
const OVERUSING_TIME_MS: f64 = 10.0;
/// Threshold adaptation: up when the trend is above it, down when below.
const K_UP: f64 = 0.0087;
const K_DOWN: f64 = 0.039;
const INITIAL_THRESHOLD_MS: f64 = 12.5;
const MIN_THRESHOLD_MS: f64 = 6.0;
const MAX_THRESHOLD_MS: f64 = 600.0;
/// A trend this far above the threshold does not move it (a spike).
const MAX_ADAPT_OFFSET_MS: f64 = 15.0;
const MAX_THRESHOLD_STEP_MS: f64 = 100.0;

/// What the delay trend says about the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BandwidthUsage {
    /// Delay is stable.
    #[default]
    Normal,
    /// Delay grows: a queue builds at the bottleneck.
    Overusing,
    /// Delay shrinks: a queue drains.
    Underusing,
}

#[derive(Debug, Clone, Copy)]
struct Group {
    first_send_us: i64,
    /// Latest send time in the group.
    send_us: i64,
    first_arrival_us: i64,
    /// Arrival of the group's last packet.
    complete_us: i64,
    size: u64,
}

/// Groups packets into 5 ms send bursts and detects over- and underuse from
/// the trend of the delay variation between groups.
#[derive(Debug, Clone)]
pub struct DelayDetector {
    current: Option<Group>,
    prev: Option<Group>,
    reordered: u32,
    // Trendline.
    num_deltas: u32,
    first_arrival_ms: Option<f64>,
    accumulated_ms: f64,
    smoothed_ms: f64,
    /// (arrival ms since the first, smoothed delay ms), a ring.
    window: [(f64, f64); TRENDLINE_WINDOW],
    window_len: usize,
    window_next: usize,
    prev_trend: f64,
    // Overuse detector.
    threshold_ms: f64,
    last_threshold_update_ms: Option<f64>,
    time_over_using_ms: Option<f64>,
    overuse_count: u32,
    state: BandwidthUsage,
}

impl Default for DelayDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl DelayDetector {
    /// A detector with no history, in [`BandwidthUsage::Normal`].
    pub fn new() -> Self {
        Self {
            current: None,
            prev: None,
            reordered: 0,
            num_deltas: 0,
            first_arrival_ms: None,
            accumulated_ms: 0.0,
            smoothed_ms: 0.0,
            window: [(0.0, 0.0); TRENDLINE_WINDOW],
            window_len: 0,
            window_next: 0,
            prev_trend: 0.0,
            threshold_ms: INITIAL_THRESHOLD_MS,
            last_threshold_update_ms: None,
            time_over_using_ms: None,
            overuse_count: 0,
            state: BandwidthUsage::Normal,
        }
    }

    /// The current hypothesis.
    pub fn state(&self) -> BandwidthUsage {
        self.state
    }

    /// The adaptive threshold, ms.
    pub fn threshold_ms(&self) -> f64 {
        self.threshold_ms
    }

    /// Feeds one received packet: send time (sender's clock), arrival time
    /// (receiver's clock), both µs, and size. Packets should come in arrival
    /// order (the feedback's results are sorted so).
    pub fn on_packet(&mut self, send_us: i64, arrival_us: i64, size: u32) -> BandwidthUsage {
        if self
            .current
            .is_some_and(|c| arrival_us.saturating_sub(c.complete_us) > STREAM_TIMEOUT_US)
        {
            *self = Self::new();
        }
        if let Some((send_delta_us, arrival_delta_us)) = self.group(send_us, arrival_us, size) {
            self.update_trendline(
                send_delta_us as f64 / 1000.0,
                arrival_delta_us as f64 / 1000.0,
                arrival_us as f64 / 1000.0,
            );
        }
        self.state
    }

    /// `InterArrivalDelta::ComputeDeltas`: the (send, arrival) deltas between
    /// the last two complete groups, when `send_us` starts a new group.
    fn group(&mut self, send_us: i64, arrival_us: i64, size: u32) -> Option<(i64, i64)> {
        let size = u64::from(size);
        let Some(cur) = self.current.as_mut() else {
            self.current = Some(Group {
                first_send_us: send_us,
                send_us,
                first_arrival_us: arrival_us,
                complete_us: arrival_us,
                size,
            });
            return None;
        };
        if send_us < cur.first_send_us {
            // Sent before the current group started: reordered, skip.
            return None;
        }
        let arrival_delta = arrival_us.saturating_sub(cur.complete_us);
        let send_delta = send_us.saturating_sub(cur.send_us);
        let burst = send_delta == 0
            || (arrival_delta.saturating_sub(send_delta) < 0
                && arrival_delta <= BURST_DELTA_US
                && arrival_us.saturating_sub(cur.first_arrival_us) < MAX_BURST_US);
        if burst || send_us.saturating_sub(cur.first_send_us) <= SEND_GROUP_US {
            cur.send_us = cur.send_us.max(send_us);
            cur.size = cur.size.saturating_add(size);
            cur.complete_us = arrival_us;
            return None;
        }
        let cur = *cur;
        let mut deltas = None;
        if let Some(prev) = self.prev {
            let send_delta = cur.send_us.saturating_sub(prev.send_us);
            let arrival_delta = cur.complete_us.saturating_sub(prev.complete_us);
            if arrival_delta.saturating_sub(send_delta) >= ARRIVAL_OFFSET_THRESHOLD_US {
                *self = Self::new();
                return None;
            }
            if arrival_delta < 0 {
                self.reordered += 1;
                if self.reordered >= REORDERED_RESET {
                    *self = Self::new();
                }
                return None;
            }
            self.reordered = 0;
            deltas = Some((send_delta, arrival_delta));
        }
        self.prev = Some(cur);
        self.current = Some(Group {
            first_send_us: send_us,
            send_us,
            first_arrival_us: arrival_us,
            complete_us: arrival_us,
            size,
        });
        deltas
    }

    /// `TrendlineEstimator::UpdateTrendline`.
    fn update_trendline(&mut self, send_delta_ms: f64, arrival_delta_ms: f64, arrival_ms: f64) {
        self.num_deltas = (self.num_deltas + 1).min(DELTA_COUNTER_MAX);
        let first = *self.first_arrival_ms.get_or_insert(arrival_ms);
        self.accumulated_ms += arrival_delta_ms - send_delta_ms;
        self.smoothed_ms = SMOOTHING * self.smoothed_ms + (1.0 - SMOOTHING) * self.accumulated_ms;
        self.window[self.window_next] = (arrival_ms - first, self.smoothed_ms);
        self.window_next = (self.window_next + 1) % TRENDLINE_WINDOW;
        self.window_len = (self.window_len + 1).min(TRENDLINE_WINDOW);
        let mut trend = self.prev_trend;
        if self.window_len == TRENDLINE_WINDOW {
            trend = linear_fit_slope(&self.window).unwrap_or(trend);
        }
        self.detect(trend, send_delta_ms, arrival_ms);
    }

    /// `TrendlineEstimator::Detect`.
    fn detect(&mut self, trend: f64, send_delta_ms: f64, now_ms: f64) {
        if self.num_deltas < 2 {
            self.state = BandwidthUsage::Normal;
            return;
        }
        let modified = f64::from(self.num_deltas.min(MIN_NUM_DELTAS)) * trend * THRESHOLD_GAIN;
        if modified > self.threshold_ms {
            let over = match self.time_over_using_ms {
                None => send_delta_ms / 2.0,
                Some(t) => t + send_delta_ms,
            };
            self.time_over_using_ms = Some(over);
            self.overuse_count += 1;
            if over > OVERUSING_TIME_MS && self.overuse_count > 1 && trend >= self.prev_trend {
                self.time_over_using_ms = Some(0.0);
                self.overuse_count = 0;
                self.state = BandwidthUsage::Overusing;
            }
        } else if modified < -self.threshold_ms {
            self.time_over_using_ms = None;
            self.overuse_count = 0;
            self.state = BandwidthUsage::Underusing;
        } else {
            self.time_over_using_ms = None;
            self.overuse_count = 0;
            self.state = BandwidthUsage::Normal;
        }
        self.prev_trend = trend;
        self.update_threshold(modified, now_ms);
    }

    /// `TrendlineEstimator::UpdateThreshold`.
    fn update_threshold(&mut self, modified: f64, now_ms: f64) {
        let last = *self.last_threshold_update_ms.get_or_insert(now_ms);
        if modified.abs() > self.threshold_ms + MAX_ADAPT_OFFSET_MS {
            self.last_threshold_update_ms = Some(now_ms);
            return;
        }
        let k = if modified.abs() < self.threshold_ms {
            K_DOWN
        } else {
            K_UP
        };
        let dt = (now_ms - last).clamp(0.0, MAX_THRESHOLD_STEP_MS);
        self.threshold_ms += k * (modified.abs() - self.threshold_ms) * dt;
        self.threshold_ms = self.threshold_ms.clamp(MIN_THRESHOLD_MS, MAX_THRESHOLD_MS);
        self.last_threshold_update_ms = Some(now_ms);
    }
}

/// Least-squares slope of `points`; `None` when it is undefined.
fn linear_fit_slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    let x_avg = points.iter().map(|p| p.0).sum::<f64>() / n;
    let y_avg = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for &(x, y) in points {
        num += (x - x_avg) * (y - y_avg);
        den += (x - x_avg) * (x - x_avg);
    }
    let slope = num / den;
    (den != 0.0 && slope.is_finite()).then_some(slope)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Groups every 10 ms, `extra_us` more queuing delay per group.
    fn run(d: &mut DelayDetector, groups: i64, extra_us: i64, t0: i64) -> BandwidthUsage {
        let mut state = BandwidthUsage::Normal;
        for g in 0..groups {
            let send = t0 + g * 10_000;
            let arrival = send + 40_000 + g * extra_us;
            state = d.on_packet(send, arrival, 1200);
        }
        state
    }

    #[test]
    fn steady_delay_is_normal_growing_is_overuse_shrinking_is_underuse() {
        let mut d = DelayDetector::new();
        assert_eq!(run(&mut d, 100, 0, 0), BandwidthUsage::Normal);
        let mut d = DelayDetector::new();
        assert_eq!(run(&mut d, 100, 2_000, 0), BandwidthUsage::Overusing);
        let mut d = DelayDetector::new();
        // Build a queue, then drain it.
        run(&mut d, 50, 2_000, 0);
        let base = 50 * 10_000;
        let mut state = BandwidthUsage::Normal;
        for g in 0..40 {
            let send = base + g * 10_000;
            state = d.on_packet(send, send + 140_000 - g * 3_000, 1200);
        }
        assert_eq!(state, BandwidthUsage::Underusing);
    }

    #[test]
    fn threshold_stays_clamped_and_jumps_reset() {
        let mut d = DelayDetector::new();
        for g in 0..1000i64 {
            let jitter = if g % 2 == 0 { 30_000 } else { 0 };
            d.on_packet(g * 10_000, g * 10_000 + jitter, 1200);
            assert!((MIN_THRESHOLD_MS..=MAX_THRESHOLD_MS).contains(&d.threshold_ms()));
        }
        // A receiver clock jump of an hour resets instead of overusing.
        run(&mut d, 30, 3_600_000_000, 20_000_000);
        assert_ne!(d.state(), BandwidthUsage::Overusing);
        for v in [i64::MIN, i64::MAX, 0, -1, i64::MIN / 2] {
            d.on_packet(v, v, u32::MAX);
            d.on_packet(0, v, 0);
        }
    }
}
