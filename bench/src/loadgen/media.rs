//! What a publisher sends and when: frame sizes, packetisation and the
//! cadence of each stream. All pure arithmetic on integers, so the average
//! rates are exact over any run length and there is no drift.

use super::payload::MARKER_LEN;

/// Video payload bytes per packet (all but possibly the last of a frame).
pub const VIDEO_PAYLOAD: usize = 1200;
/// Video frames per second (the default of `--video-fps`).
pub const VIDEO_FPS: u64 = 30;
/// RTP clock of video.
pub const VIDEO_CLOCK: u32 = 90_000;
/// Video payload type.
pub const VIDEO_PT: u8 = 96;
/// Audio payload bytes per packet: 64 kbit/s Opus at 20 ms.
pub const AUDIO_PAYLOAD: usize = 160;
/// Audio packets per second.
pub const AUDIO_PPS: u64 = 50;
/// RTP clock of audio.
pub const AUDIO_CLOCK: u32 = 48_000;
/// Audio payload type.
pub const AUDIO_PT: u8 = 111;

const NANOS: u64 = 1_000_000_000;

/// Payload bytes of video frame `n` of a stream at `kbps` and 30 frames
/// per second ([`frame_bytes_at`]).
pub fn frame_bytes(kbps: u32, n: u64) -> usize {
    frame_bytes_at(kbps, VIDEO_FPS, n)
}

/// Payload bytes of video frame `n` of a stream at `kbps` and `fps` frames
/// per second: the difference of the cumulative byte counts, each rounded
/// down, so frames differ by at most one byte and `n` frames carry
/// `floor(n * kbps * 1000 / 8 / fps)` bytes.
pub fn frame_bytes_at(kbps: u32, fps: u64, n: u64) -> usize {
    let fps = u128::from(fps.max(1));
    // kbps * 1000 / 8 / fps bytes per frame = kbps * 125 / fps.
    let cumulative = |n: u64| u128::from(n) * u128::from(kbps) * 125 / fps;
    (cumulative(n + 1) - cumulative(n)) as usize
}

/// How one video frame is cut into packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLayout {
    /// Number of packets, at least 1.
    pub packets: usize,
    /// Payload bytes of the last packet (the others carry [`VIDEO_PAYLOAD`]).
    pub last_len: usize,
}

impl FrameLayout {
    /// `ceil(bytes / 1200)` packets of 1200 bytes, the last one shorter; a
    /// packet is never shorter than the payload marker.
    pub fn new(bytes: usize) -> Self {
        let packets = bytes.div_ceil(VIDEO_PAYLOAD).max(1);
        let last_len = (bytes - (packets - 1) * VIDEO_PAYLOAD).max(MARKER_LEN);
        Self { packets, last_len }
    }

    /// Payload length of packet `i` of the frame.
    pub fn len(&self, i: usize) -> usize {
        if i + 1 == self.packets {
            self.last_len
        } else {
            VIDEO_PAYLOAD
        }
    }

    /// Number of leading packets of full size: they go out as one GSO
    /// train with equal segments; a shorter last packet goes separately.
    pub fn full_packets(&self) -> usize {
        if self.last_len == VIDEO_PAYLOAD {
            self.packets
        } else {
            self.packets - 1
        }
    }
}

/// When the units (frames or audio packets) of one stream are due:
/// unit `n` at `offset_ns + n * 1e9 / per_second`, in integer nanoseconds
/// since the run's origin, computed from `n` so errors never accumulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cadence {
    /// Due time of unit 0.
    pub offset_ns: u64,
    /// Units per second.
    pub per_second: u64,
}

impl Cadence {
    /// Stream `index` of `count` streams at `per_second`, their first units
    /// spread evenly over one period (so 500 audio streams do not all fire
    /// in the same millisecond), after `start_ns`.
    pub fn staggered(start_ns: u64, per_second: u64, index: usize, count: usize) -> Self {
        let period = NANOS / per_second;
        let offset = period * index as u64 / count.max(1) as u64;
        Self {
            offset_ns: start_ns + offset,
            per_second,
        }
    }

    /// Due time of unit `n`.
    pub fn due(&self, n: u64) -> u64 {
        self.offset_ns + (u128::from(n) * u128::from(NANOS) / u128::from(self.per_second)) as u64
    }

    /// Number of units due strictly before `t_ns`.
    pub fn units_before(&self, t_ns: u64) -> u64 {
        if t_ns <= self.offset_ns {
            return 0;
        }
        // The smallest n with due(n) >= t is ceil((t - offset) * per_second / 1e9).
        let elapsed = u128::from(t_ns - self.offset_ns);
        (elapsed * u128::from(self.per_second)).div_ceil(u128::from(NANOS)) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_bytes_average_to_the_bitrate() {
        // 2 Mbit/s: 8333.33 bytes per frame.
        assert_eq!(frame_bytes(2000, 0), 8333);
        assert_eq!(frame_bytes(2000, 1), 8333);
        assert_eq!(frame_bytes(2000, 2), 8334);
        for kbps in [1, 64, 500, 2000, 2500, 10_000] {
            let total: usize = (0..30 * 60).map(|n| frame_bytes(kbps, n)).sum();
            // 60 seconds exactly.
            assert_eq!(total as u64, u64::from(kbps) * 1000 / 8 * 60, "{kbps} kbps");
            for fps in [1, 10, 15, 24] {
                let total: usize = (0..fps * 60).map(|n| frame_bytes_at(kbps, fps, n)).sum();
                assert_eq!(
                    total as u64,
                    u64::from(kbps) * 1000 / 8 * 60,
                    "{kbps} kbps {fps} fps"
                );
            }
        }
        assert_eq!(frame_bytes_at(100, 10, 0), 1250);
    }

    #[test]
    fn frames_cut_into_1200_byte_packets() {
        let table = [
            // bytes, packets, last_len, full_packets
            (0, 1, MARKER_LEN, 0),
            (5, 1, MARKER_LEN, 0),
            (1200, 1, 1200, 1),
            (1201, 2, MARKER_LEN, 1),
            (1216, 2, 16, 1),
            (2400, 2, 1200, 2),
            (8333, 7, 1133, 6),
            (8334, 7, 1134, 6),
        ];
        for (bytes, packets, last_len, full) in table {
            let f = FrameLayout::new(bytes);
            assert_eq!(f, FrameLayout { packets, last_len }, "{bytes} bytes");
            assert_eq!(f.full_packets(), full, "{bytes} bytes");
            let sizes: Vec<usize> = (0..f.packets).map(|i| f.len(i)).collect();
            assert!(sizes[..packets - 1].iter().all(|&s| s == VIDEO_PAYLOAD));
            if bytes - (packets - 1) * VIDEO_PAYLOAD >= MARKER_LEN {
                assert_eq!(sizes.iter().sum::<usize>(), bytes, "{bytes} bytes");
            }
        }
    }

    #[test]
    fn cadence_is_exact_and_staggered() {
        let video = Cadence::staggered(1_000, VIDEO_FPS, 0, 3);
        assert_eq!(video.due(0), 1_000);
        assert_eq!(video.due(1), 1_000 + 33_333_333);
        assert_eq!(video.due(3), 1_000 + 100_000_000);
        assert_eq!(video.due(30 * 3600), 1_000 + 3600 * NANOS);
        let third = Cadence::staggered(1_000, VIDEO_FPS, 2, 3);
        assert_eq!(third.due(0), 1_000 + 33_333_333 * 2 / 3);
        let audio = Cadence::staggered(0, AUDIO_PPS, 250, 500);
        assert_eq!(audio.due(0), 10_000_000);
        assert_eq!(audio.due(2), 50_000_000);
    }

    #[test]
    fn units_before_inverts_due() {
        for c in [
            Cadence::staggered(0, VIDEO_FPS, 0, 1),
            Cadence::staggered(7_777, VIDEO_FPS, 5, 7),
            Cadence::staggered(123, AUDIO_PPS, 499, 500),
        ] {
            assert_eq!(c.units_before(0), 0);
            for n in 0..200 {
                let due = c.due(n);
                assert_eq!(c.units_before(due), n, "{c:?} n={n}");
                assert_eq!(c.units_before(due + 1), n + 1, "{c:?} n={n}");
            }
        }
    }
}
