//! Simulated loss and its repair, as browsers do it: the pieces the sender
//! and the receive threads share, free of I/O so they are unit-tested.
//!
//! * [`SimLoss`]: a seeded coin that drops a fixed share of packets.
//! * [`Gaps`]: the output sequence numbers a subscriber misses on one
//!   consumer, looked at every [`NACK_INTERVAL_NS`]: a new one is NACKed at
//!   once, again after a retry interval (default the same 20 ms), at most
//!   [`MAX_NACKS`] times each, given up after [`GIVE_UP_NS`] (libwebrtc's
//!   receiver runs every 20 ms too and retries after an RTT, 100 ms until
//!   it has measured one).
//! * [`PacketRing`]: a publisher's last packets in clear, to answer the
//!   node's NACKs with RTX.
//! * [`write_rtx`]: an RTX packet (RFC 4588 §4) from an original packet.
//! * [`scrape`], [`scrape_named`]: the node's counters from its `/metrics`
//!   text.
//!
//! Everything is sized when created; nothing allocates per packet.

use sfu_core::wire::rtp::RtpPacket;

/// Time between two looks for missing packets to NACK (and the default
/// time between two NACKs of one missing packet), ns.
pub const NACK_INTERVAL_NS: u64 = 20_000_000;
/// Most NACKs for one missing packet.
pub const MAX_NACKS: u8 = 10;
/// How long a missing packet is waited for, ns.
pub const GIVE_UP_NS: u64 = 1_000_000_000;
/// Missing packets tracked per consumer at once.
pub const MAX_MISSING: usize = 128;
/// A forward jump of more than this many numbers is not tracked as loss.
pub const MAX_TRACKED_GAP: u16 = 512;
/// Sequence numbers in one NACK packet.
pub const NACK_BATCH: usize = 64;

/// RTX payload type of the publishers' video retransmissions.
pub const PUBLISHER_RTX_PT: u8 = 98;
/// RTX payload types subscribers receive retransmissions with: (video, audio).
pub const SUBSCRIBER_RTX_PTS: (u8, u8) = (97, 98);

/// The RTX SSRC a publisher declares for its stream `media` (top bit flipped:
/// the load generator's media SSRCs are `base + 2n` with a random base).
pub fn publisher_rtx_ssrc(media: u32) -> u32 {
    media ^ 0x8000_0000
}

/// Drops `percent` % of the packets it is asked about, from a seeded
/// generator (splitmix64): the same seed drops the same packets.
#[derive(Debug, Clone)]
pub struct SimLoss {
    state: u64,
    /// Drop when the next 64-bit draw is below this.
    threshold: u64,
}

impl SimLoss {
    /// A coin that says "drop" with probability `percent` / 100 (clamped
    /// to 0..=100); `None` for 0 %.
    pub fn new(percent: f64, seed: u64) -> Option<Self> {
        if percent <= 0.0 || percent.is_nan() {
            return None;
        }
        let p = (percent / 100.0).min(1.0);
        let threshold = if p >= 1.0 {
            u64::MAX
        } else {
            (p * 18_446_744_073_709_551_616.0) as u64
        };
        Some(Self {
            state: seed,
            threshold,
        })
    }

    /// Whether to drop the next packet.
    pub fn drop_next(&mut self) -> bool {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        z < self.threshold
    }
}

#[derive(Debug, Clone, Copy)]
struct Missing {
    seq: u16,
    since_ns: u64,
    /// 0: never NACKed.
    last_nack_ns: u64,
    nacks: u8,
}

/// What [`Gaps::collect`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Collected {
    /// Numbers written to NACK now.
    pub nack: usize,
    /// Numbers given up on (waited for [`GIVE_UP_NS`]).
    pub gave_up: u64,
}

/// The missing output sequence numbers of one consumer.
#[derive(Debug)]
pub struct Gaps {
    /// Capacity [`MAX_MISSING`] (or 0 when repair is off), never grown.
    missing: Vec<Missing>,
}

impl Gaps {
    /// A tracker of up to [`MAX_MISSING`] numbers; with `enabled` false it
    /// allocates nothing and tracks nothing.
    pub fn new(enabled: bool) -> Self {
        Self {
            missing: Vec::with_capacity(if enabled { MAX_MISSING } else { 0 }),
        }
    }

    /// The numbers strictly between `last` and `seq` (a forward jump) went
    /// missing at `now_ns`. Returns how many could not be tracked (the
    /// tracker was full, or the jump is beyond [`MAX_TRACKED_GAP`]).
    pub fn open(&mut self, last: u16, seq: u16, now_ns: u64) -> u64 {
        let d = seq.wrapping_sub(last);
        if d <= 1 || d >= 0x8000 {
            return 0;
        }
        let skipped = u64::from(d - 1);
        if self.missing.capacity() == 0 || d > MAX_TRACKED_GAP {
            return skipped;
        }
        let mut untracked = 0;
        for i in 1..d {
            if self.missing.len() < self.missing.capacity() {
                self.missing.push(Missing {
                    seq: last.wrapping_add(i),
                    since_ns: now_ns,
                    last_nack_ns: 0,
                    nacks: 0,
                });
            } else {
                untracked += 1;
            }
        }
        untracked
    }

    /// `seq` arrived (late, or repaired): whether it was missing.
    pub fn fill(&mut self, seq: u16) -> bool {
        match self.missing.iter().position(|m| m.seq == seq) {
            Some(at) => {
                self.missing.swap_remove(at);
                true
            }
            None => false,
        }
    }

    /// Numbers tracked now.
    pub fn len(&self) -> usize {
        self.missing.len()
    }

    /// Whether nothing is missing.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty()
    }

    /// Writes into `out` the numbers to NACK at `now_ns` (never NACKed, or
    /// last NACKed `retry_ns` ago, fewer than [`MAX_NACKS`] times), in RTP's
    /// wrapping order behind `newest`, and forgets those waited for
    /// [`GIVE_UP_NS`].
    pub fn collect(
        &mut self,
        now_ns: u64,
        newest: u16,
        retry_ns: u64,
        out: &mut [u16],
    ) -> Collected {
        let mut c = Collected::default();
        let mut i = 0;
        while i < self.missing.len() {
            let m = &mut self.missing[i];
            if now_ns.saturating_sub(m.since_ns) >= GIVE_UP_NS {
                self.missing.swap_remove(i);
                c.gave_up += 1;
                continue;
            }
            let due = m.last_nack_ns == 0 || now_ns.saturating_sub(m.last_nack_ns) >= retry_ns;
            if due && m.nacks < MAX_NACKS && c.nack < out.len() {
                out[c.nack] = m.seq;
                c.nack += 1;
                m.nacks += 1;
                m.last_nack_ns = now_ns.max(1);
            }
            i += 1;
        }
        // Oldest first: by distance behind the newest number, descending.
        out[..c.nack].sort_unstable_by_key(|&s| std::cmp::Reverse(newest.wrapping_sub(s)));
        c
    }
}

/// Bytes of one [`PacketRing`] slot.
pub const RING_SLOT: usize = 1500;
/// Packets a publisher stream keeps (about 2.4 s of 2 Mbit/s video).
pub const RING_PACKETS: usize = 512;

/// A publisher stream's last packets in clear, by sequence number.
#[derive(Debug)]
pub struct PacketRing {
    /// (sequence number, length; 0 = empty) per slot.
    slots: Box<[(u16, u16)]>,
    data: Box<[u8]>,
}

impl PacketRing {
    /// An empty ring of [`RING_PACKETS`] slots.
    pub fn new() -> Self {
        Self {
            slots: vec![(0, 0); RING_PACKETS].into_boxed_slice(),
            data: vec![0; RING_PACKETS * RING_SLOT].into_boxed_slice(),
        }
    }

    /// Keeps `packet` (an RTP packet in clear) under `seq`; a packet longer
    /// than a slot is not kept.
    pub fn store(&mut self, seq: u16, packet: &[u8]) {
        if packet.is_empty() || packet.len() > RING_SLOT {
            return;
        }
        let at = usize::from(seq) % RING_PACKETS;
        self.data[at * RING_SLOT..at * RING_SLOT + packet.len()].copy_from_slice(packet);
        self.slots[at] = (seq, packet.len() as u16);
    }

    /// The packet numbered `seq`, if still kept.
    pub fn get(&self, seq: u16) -> Option<&[u8]> {
        let at = usize::from(seq) % RING_PACKETS;
        let (s, len) = self.slots[at];
        (len > 0 && s == seq).then(|| &self.data[at * RING_SLOT..at * RING_SLOT + usize::from(len)])
    }
}

impl Default for PacketRing {
    fn default() -> Self {
        Self::new()
    }
}

/// Writes the RTX packet (RFC 4588 §4) of the clear RTP packet `original`
/// into `out`: its header with SSRC `ssrc`, payload type `pt` and sequence
/// number `seq` (timestamp and marker kept, padding dropped), then the
/// original sequence number, then the original payload. Returns the length,
/// or `None` if `original` is not RTP or `out` is too short.
pub fn write_rtx(original: &[u8], out: &mut [u8], ssrc: u32, pt: u8, seq: u16) -> Option<usize> {
    let p = RtpPacket::new_checked(original).ok()?;
    let header = p.header_len();
    let payload = p.payload();
    let len = header + 2 + payload.len();
    if out.len() < len {
        return None;
    }
    out[..header].copy_from_slice(&original[..header]);
    out[header..header + 2].copy_from_slice(&p.sequence_number().to_be_bytes());
    out[header + 2..len].copy_from_slice(payload);
    out[0] &= !0x20;
    out[1] = (out[1] & 0x80) | (pt & 0x7f);
    out[2..4].copy_from_slice(&seq.to_be_bytes());
    out[8..12].copy_from_slice(&ssrc.to_be_bytes());
    Some(len)
}

/// The original sequence number and payload of a clear RTX payload, `None`
/// if it is shorter than the two-byte number (padding only).
pub fn unwrap_rtx(payload: &[u8]) -> Option<(u16, &[u8])> {
    let (osn, rest) = payload.split_first_chunk::<2>()?;
    Some((u16::from_be_bytes(*osn), rest))
}

/// The node counters `sfu-loadgen` reports, summed over workers.
pub const NODE_COUNTERS: &[&str] = &[
    "nack_in",
    "nacked_packets",
    "rtx_sent",
    "rtx_throttled",
    "rtx_not_cached",
    "rtx_unanswerable",
    "rtx_in",
    "nack_sent",
    "nack_requested",
    "nack_repaired",
    "nack_gave_up",
    "sr_in",
    "sr_sent",
    "rr_sent",
];

/// Drop reasons of `sfu_drops_total` that belong to repair.
pub const NODE_DROPS: &[&str] = &["rtx_duplicate", "rtx_padding"];

/// The values of `sfu_{name}_total` for each of [`NODE_COUNTERS`] and of
/// `sfu_drops_total{reason=...}` for each of [`NODE_DROPS`] (as
/// `drops_{reason}`), summed over the workers' labels; a family missing
/// from `text` is 0.
pub fn scrape(text: &str) -> Vec<(String, u64)> {
    scrape_named(text, NODE_COUNTERS, NODE_DROPS)
}

/// The values of `sfu_{name}_total` for each of `counters` and of
/// `sfu_drops_total{reason=...}` for each of `drops` (as `drops_{reason}`),
/// summed over the workers' labels; a family missing from `text` is 0.
pub fn scrape_named(text: &str, counters: &[&str], drops: &[&str]) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = counters
        .iter()
        .map(|n| ((*n).to_owned(), 0))
        .chain(drops.iter().map(|r| (format!("drops_{r}"), 0)))
        .collect();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let key = if name == "sfu_drops_total" {
            drops
                .iter()
                .find(|r| labels.contains(&format!("reason=\"{r}\"")))
                .map(|r| format!("drops_{r}"))
        } else {
            name.strip_prefix("sfu_")
                .and_then(|n| n.strip_suffix("_total"))
                .filter(|n| counters.contains(n))
                .map(str::to_owned)
        };
        if let Some(key) = key
            && let Some(entry) = out.iter_mut().find(|(k, _)| *k == key)
        {
            entry.1 += value as u64;
        }
    }
    out
}

/// `after − before`, per name (both from [`scrape`]).
pub fn deltas(before: &[(String, u64)], after: &[(String, u64)]) -> Vec<(String, u64)> {
    after
        .iter()
        .map(|(k, a)| {
            let b = before.iter().find(|(n, _)| n == k).map_or(0, |(_, v)| *v);
            (k.clone(), a.saturating_sub(b))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sfu_core::wire::rtp::{RtpHeader, write_header};

    #[test]
    fn sim_loss_drops_the_asked_share_reproducibly() {
        assert!(SimLoss::new(0.0, 1).is_none());
        let mut a = SimLoss::new(3.0, 42).unwrap();
        let mut b = SimLoss::new(3.0, 42).unwrap();
        let drops: Vec<bool> = (0..100_000).map(|_| a.drop_next()).collect();
        assert!(drops.iter().all(|&d| d == b.drop_next()), "seeded");
        let n = drops.iter().filter(|&&d| d).count();
        assert!((2_800..3_200).contains(&n), "{n} of 100000 dropped");
        let mut all = SimLoss::new(100.0, 1).unwrap();
        assert!((0..1000).all(|_| all.drop_next()));
    }

    #[test]
    fn gaps_are_nacked_every_interval_then_given_up() {
        let mut g = Gaps::new(true);
        let mut out = [0u16; NACK_BATCH];
        assert_eq!(g.open(65533, 2, 1_000), 0);
        assert_eq!(g.len(), 4);
        let c = g.collect(1_000, 2, NACK_INTERVAL_NS, &mut out);
        assert_eq!(
            c,
            Collected {
                nack: 4,
                gave_up: 0
            }
        );
        assert_eq!(&out[..4], &[65534, 65535, 0, 1]);
        // Not again within the interval.
        assert_eq!(
            g.collect(1_000 + NACK_INTERVAL_NS - 1, 2, NACK_INTERVAL_NS, &mut out)
                .nack,
            0
        );
        assert!(g.fill(65535));
        assert!(!g.fill(65535), "filled once");
        assert_eq!(
            g.collect(1_000 + NACK_INTERVAL_NS, 2, NACK_INTERVAL_NS, &mut out)
                .nack,
            3
        );
        // At most MAX_NACKS times, then waited for until GIVE_UP_NS.
        let mut t = 1_000 + NACK_INTERVAL_NS;
        let mut total = 2;
        for _ in 0..20 {
            t += NACK_INTERVAL_NS;
            if g.collect(t, 2, NACK_INTERVAL_NS, &mut out).nack > 0 {
                total += 1;
            }
        }
        assert_eq!(total, usize::from(MAX_NACKS));
        assert_eq!(g.len(), 3);
        assert_eq!(
            g.collect(1_000 + GIVE_UP_NS, 2, NACK_INTERVAL_NS, &mut out),
            Collected {
                nack: 0,
                gave_up: 3
            }
        );
        assert!(g.is_empty());
    }

    #[test]
    fn gaps_bounded_and_off() {
        let mut g = Gaps::new(true);
        assert_eq!(
            g.open(0, MAX_TRACKED_GAP + 1, 0),
            u64::from(MAX_TRACKED_GAP)
        );
        assert!(g.is_empty(), "a jump that large is not tracked");
        assert_eq!(g.open(0, 200, 0), 199 - MAX_MISSING as u64);
        assert_eq!(g.len(), MAX_MISSING);
        // Backward or no jump: nothing.
        assert_eq!(g.open(10, 5, 0), 0);
        let mut off = Gaps::new(false);
        assert_eq!(off.open(0, 5, 0), 4);
        assert!(off.is_empty());
    }

    #[test]
    fn rtx_round_trip_and_ring() {
        let mut original = [0u8; 100];
        let h = write_header(
            &mut original,
            &RtpHeader {
                marker: true,
                payload_type: 96,
                sequence_number: 777,
                timestamp: 9000,
                ssrc: 0x1111,
            },
            &[],
        )
        .unwrap();
        for (i, b) in original[h..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let mut ring = PacketRing::new();
        ring.store(777, &original);
        assert_eq!(ring.get(777), Some(&original[..]));
        assert_eq!(ring.get(777 + RING_PACKETS as u16), None);
        ring.store(777 + RING_PACKETS as u16, &original[..50]);
        assert_eq!(ring.get(777), None, "overwritten");

        let mut out = [0xa5u8; 1500];
        let n = write_rtx(&original, &mut out, 0x2222, 98, 5).unwrap();
        assert_eq!(n, 102);
        let p = RtpPacket::new_checked(&out[..n]).unwrap();
        assert_eq!(
            (
                p.ssrc(),
                p.payload_type(),
                p.sequence_number(),
                p.timestamp(),
                p.marker()
            ),
            (0x2222, 98, 5, 9000, true)
        );
        let (osn, payload) = unwrap_rtx(p.payload()).unwrap();
        assert_eq!(osn, 777);
        assert_eq!(payload, &original[h..]);
        assert!(unwrap_rtx(&[1]).is_none());
        assert!(write_rtx(&original, &mut out[..50], 1, 98, 0).is_none());
    }

    #[test]
    fn scrape_sums_workers_and_reads_drops() {
        let text = "# HELP sfu_rtx_sent_total x\n# TYPE sfu_rtx_sent_total counter\n\
            sfu_rtx_sent_total{worker=\"0\"} 5\nsfu_rtx_sent_total{worker=\"1\"} 7\n\
            sfu_rtx_sent_totally{worker=\"0\"} 100\n\
            sfu_drops_total{worker=\"0\",reason=\"rtx_duplicate\"} 3\n\
            sfu_drops_total{worker=\"0\",reason=\"malformed\"} 9\n";
        let s = scrape(text);
        let get = |k: &str| s.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
        assert_eq!(get("rtx_sent"), Some(12));
        assert_eq!(get("nack_in"), Some(0));
        assert_eq!(get("drops_rtx_duplicate"), Some(3));
        let named = scrape_named(text, &["rtx_sent", "slot_switches"], &["malformed"]);
        assert_eq!(
            named,
            vec![
                ("rtx_sent".to_owned(), 12),
                ("slot_switches".to_owned(), 0),
                ("drops_malformed".to_owned(), 9)
            ]
        );
        let d = deltas(&scrape(""), &s);
        assert_eq!(
            d.iter().find(|(n, _)| n == "rtx_sent").map(|x| x.1),
            Some(12)
        );
    }
}
