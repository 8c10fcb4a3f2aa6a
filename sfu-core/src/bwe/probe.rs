//! The receive rate of probe clusters (libwebrtc's `ProbeBitrateEstimator`).
//!
//! The router sends a probe cluster as a short burst of padding or RTX at a
//! rate above the estimate, each packet sent with
//! [`SentKind::Probe`](super::history::SentKind::Probe) and the cluster's id.
//! When the burst crosses a bottleneck it leaves spread to the bottleneck's
//! rate, so the rate it arrived at measures the link directly, in one round
//! trip instead of seconds of additive growth.

use super::history::PacketResult;

/// Clusters tracked at once; the oldest is replaced.
const CLUSTERS: usize = 4;
/// Received packets a cluster needs before it yields a rate.
pub const MIN_PROBE_PACKETS: u32 = 5;
/// Longest send or receive interval of a valid cluster, µs.
const MAX_PROBE_INTERVAL_US: i64 = 1_000_000;
/// A receive rate above this multiple of the send rate is not credible.
const MAX_VALID_RATIO: f64 = 2.0;
/// Below this ratio of the send rate the link was saturated...
const MIN_RATIO_FOR_UNSATURATED_LINK: f64 = 0.9;
/// ...and the estimate backs off to this fraction of the receive rate.
const TARGET_UTILIZATION: f64 = 0.95;

#[derive(Debug, Clone, Copy)]
struct Cluster {
    id: u16,
    count: u32,
    first_send_us: i64,
    last_send_us: i64,
    last_send_size: u32,
    first_arrival_us: i64,
    first_arrival_size: u32,
    last_arrival_us: i64,
    bytes: u64,
    /// Insertion stamp, for replacement.
    age: u64,
}

/// Aggregates received probe packets per cluster.
#[derive(Debug, Clone, Default)]
pub struct ProbeEstimator {
    clusters: [Option<Cluster>; CLUSTERS],
    stamp: u64,
}

impl ProbeEstimator {
    /// Adds a received packet of cluster `id`; returns the cluster's rate
    /// estimate (bps) once it has [`MIN_PROBE_PACKETS`] and is valid.
    pub fn on_packet(&mut self, id: u16, r: &PacketResult) -> Option<u64> {
        let arrival = r.arrival_us?;
        self.stamp += 1;
        let idx = match self
            .clusters
            .iter()
            .position(|c| c.is_some_and(|c| c.id == id))
        {
            Some(i) => i,
            None => {
                let i = (0..CLUSTERS)
                    .min_by_key(|&i| self.clusters[i].map_or(0, |c| c.age))
                    .unwrap_or(0);
                self.clusters[i] = Some(Cluster {
                    id,
                    count: 0,
                    first_send_us: r.send_us,
                    last_send_us: r.send_us,
                    last_send_size: r.size,
                    first_arrival_us: arrival,
                    first_arrival_size: r.size,
                    last_arrival_us: arrival,
                    bytes: 0,
                    age: self.stamp,
                });
                i
            }
        };
        let c = self.clusters[idx].as_mut()?;
        c.count += 1;
        c.bytes += u64::from(r.size);
        if r.send_us < c.first_send_us {
            c.first_send_us = r.send_us;
        }
        if r.send_us >= c.last_send_us {
            c.last_send_us = r.send_us;
            c.last_send_size = r.size;
        }
        if arrival < c.first_arrival_us {
            c.first_arrival_us = arrival;
            c.first_arrival_size = r.size;
        }
        c.last_arrival_us = c.last_arrival_us.max(arrival);
        if c.count < MIN_PROBE_PACKETS {
            return None;
        }
        let send_interval = c.last_send_us.saturating_sub(c.first_send_us);
        let recv_interval = c.last_arrival_us.saturating_sub(c.first_arrival_us);
        let valid = |i: i64| i > 0 && i <= MAX_PROBE_INTERVAL_US;
        if !valid(send_interval) || !valid(recv_interval) {
            return None;
        }
        let send_bits = c.bytes.saturating_sub(u64::from(c.last_send_size)) as f64 * 8.0;
        let recv_bits = c.bytes.saturating_sub(u64::from(c.first_arrival_size)) as f64 * 8.0;
        let send_bps = send_bits * 1e6 / send_interval as f64;
        let recv_bps = recv_bits * 1e6 / recv_interval as f64;
        if recv_bps > MAX_VALID_RATIO * send_bps {
            return None;
        }
        let mut bps = send_bps.min(recv_bps);
        if recv_bps < MIN_RATIO_FOR_UNSATURATED_LINK * send_bps {
            bps = TARGET_UTILIZATION * recv_bps;
        }
        Some(bps.round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bwe::history::SentKind;

    fn packet(send_us: i64, arrival_us: i64) -> PacketResult {
        PacketResult {
            seq: 0,
            send_us,
            arrival_us: Some(arrival_us),
            size: 1200,
            kind: SentKind::Probe(1),
        }
    }

    #[test]
    fn saturated_probe_measures_the_bottleneck() {
        let mut p = ProbeEstimator::default();
        // Sent at 4.8 Mbit/s (every 2 ms), arriving at 1.92 Mbit/s (every 5 ms).
        let mut out = None;
        for i in 0..10 {
            out = p.on_packet(1, &packet(i * 2_000, 40_000 + i * 5_000));
            if i < 4 {
                assert_eq!(out, None);
            }
        }
        assert_eq!(out, Some(1_824_000));
        // Unsaturated: the send rate.
        for i in 0..10 {
            out = p.on_packet(2, &packet(i * 2_000, 40_000 + i * 2_000));
        }
        assert_eq!(out, Some(4_800_000));
        // Degenerate intervals give nothing.
        for _ in 0..10 {
            out = p.on_packet(3, &packet(7, 7));
        }
        assert_eq!(out, None);
    }
}
