//! The payload every load-generator packet carries: a 16-byte marker that
//! says who sent it and when, then a deterministic pattern the receiver
//! checks byte for byte after decryption.
//!
//! Marker layout (big-endian):
//!
//! | bytes  | field                                                        |
//! |--------|--------------------------------------------------------------|
//! | 0..4   | publisher index (bits 0..=28), simulcast layer (bits 29..=30, 0 = lowest or the only layer) and the audio flag (bit 31) |
//! | 4..8   | stream sequence number: per stream, from 0, never wrapping   |
//! | 8..16  | send time, nanoseconds since the run's shared `Instant` origin |
//!
//! The pattern after the marker is a window into `PATTERN`, a fixed table
//! with a prime period, starting at an offset derived from the publisher and
//! the stream sequence number: filling and checking are one `memcpy` /
//! `memcmp` each, and a payload delivered to the wrong place, truncated,
//! shifted or corrupted does not match.

use super::Kind;

/// Length of the marker at the start of every payload.
pub const MARKER_LEN: usize = 16;

/// Longest payload [`fill`] and [`check`] handle.
pub const MAX_PAYLOAD: usize = 1500;

/// Period of the pattern (a prime, so that offsets and lengths never line up
/// by accident).
const PERIOD: usize = 251;

const AUDIO_FLAG: u32 = 1 << 31;
/// Bits of the publisher index in the marker's first word.
const PUBLISHER_MASK: u32 = (1 << 29) - 1;
/// Shift of the two-bit simulcast layer in the marker's first word.
const LAYER_SHIFT: u32 = 29;

/// The pattern table: `PERIOD` distinct-looking bytes, repeated so that any
/// window of up to [`MAX_PAYLOAD`] bytes starting below `PERIOD` is a slice.
static PATTERN: [u8; PERIOD + MAX_PAYLOAD] = pattern_table();

const fn pattern_table() -> [u8; PERIOD + MAX_PAYLOAD] {
    let mut t = [0u8; PERIOD + MAX_PAYLOAD];
    let mut i = 0;
    while i < t.len() {
        let k = i % PERIOD;
        // An affine map mod 256 xored with a rotation: no short cycles.
        t[i] = ((k * 73 + 19) % 256) as u8 ^ (k as u8).rotate_left(3);
        i += 1;
    }
    t
}

/// The decoded marker of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// Index of the publishing peer (`< 2^29`; higher bits are dropped).
    pub publisher: u32,
    /// Audio or video stream of that publisher.
    pub kind: Kind,
    /// Simulcast layer of a video stream (0 = lowest, at most 3; 0 for a
    /// stream of one layer and for audio).
    pub layer: u8,
    /// The stream's own sequence number (not the RTP one).
    pub seq: u32,
    /// Send time in nanoseconds since the run's origin.
    pub sent_ns: u64,
}

impl Marker {
    /// Writes the marker into `out[..MARKER_LEN]`.
    ///
    /// # Panics
    /// If `out` is shorter than [`MARKER_LEN`] (the caller sizes payloads).
    pub fn write(&self, out: &mut [u8]) {
        let tag = (self.publisher & PUBLISHER_MASK)
            | (u32::from(self.layer & 3) << LAYER_SHIFT)
            | match self.kind {
                Kind::Audio => AUDIO_FLAG,
                Kind::Video => 0,
            };
        out[0..4].copy_from_slice(&tag.to_be_bytes());
        out[4..8].copy_from_slice(&self.seq.to_be_bytes());
        out[8..16].copy_from_slice(&self.sent_ns.to_be_bytes());
    }

    /// Reads a marker from the start of `buf`; `None` if `buf` is too short.
    pub fn read(buf: &[u8]) -> Option<Self> {
        let m = buf.get(..MARKER_LEN)?;
        let tag = u32::from_be_bytes([m[0], m[1], m[2], m[3]]);
        let seq = u32::from_be_bytes([m[4], m[5], m[6], m[7]]);
        let mut ns = [0u8; 8];
        ns.copy_from_slice(&m[8..16]);
        Some(Self {
            publisher: tag & PUBLISHER_MASK,
            layer: ((tag >> LAYER_SHIFT) & 3) as u8,
            kind: if tag & AUDIO_FLAG != 0 {
                Kind::Audio
            } else {
                Kind::Video
            },
            seq,
            sent_ns: u64::from_be_bytes(ns),
        })
    }

    fn pattern_offset(&self) -> usize {
        let tag = (u64::from(self.publisher) * 4 + u64::from(self.layer)) * 2
            + u64::from(self.kind == Kind::Audio);
        ((tag * 31 + u64::from(self.seq) * 7) % PERIOD as u64) as usize
    }
}

/// Why a payload failed [`check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadError {
    /// Shorter than the marker or longer than [`MAX_PAYLOAD`].
    Length,
    /// The bytes after the marker are not the expected pattern.
    Pattern,
}

/// Writes `marker` and the pattern into the whole of `payload`.
///
/// # Panics
/// If `payload` is shorter than [`MARKER_LEN`] or longer than
/// [`MAX_PAYLOAD`]: payload sizes are the load generator's own constants.
pub fn fill(payload: &mut [u8], marker: &Marker) {
    assert!(
        (MARKER_LEN..=MAX_PAYLOAD).contains(&payload.len()),
        "payload length out of range"
    );
    marker.write(payload);
    let rest = payload.len() - MARKER_LEN;
    let at = marker.pattern_offset();
    payload[MARKER_LEN..].copy_from_slice(&PATTERN[at..at + rest]);
}

/// Decodes the marker of `payload` and checks the pattern after it.
pub fn check(payload: &[u8]) -> Result<Marker, PayloadError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(PayloadError::Length);
    }
    let marker = Marker::read(payload).ok_or(PayloadError::Length)?;
    let rest = payload.len() - MARKER_LEN;
    let at = marker.pattern_offset();
    if payload[MARKER_LEN..] != PATTERN[at..at + rest] {
        return Err(PayloadError::Pattern);
    }
    Ok(marker)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker() -> Marker {
        Marker {
            publisher: 0x1234_5678,
            kind: Kind::Audio,
            layer: 0,
            seq: 0xdead_beef,
            sent_ns: 0x0102_0304_0506_0708,
        }
    }

    #[test]
    fn marker_round_trip_and_layout() {
        let mut buf = [0xa5u8; 20];
        marker().write(&mut buf);
        assert_eq!(
            buf[..16],
            [
                0x92, 0x34, 0x56, 0x78, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8
            ]
        );
        assert_eq!(buf[16..], [0xa5; 4], "writes nothing past the marker");
        assert_eq!(Marker::read(&buf), Some(marker()));
        let video = Marker {
            kind: Kind::Video,
            ..marker()
        };
        video.write(&mut buf);
        assert_eq!(buf[0], 0x12);
        assert_eq!(Marker::read(&buf), Some(video));
        assert_eq!(Marker::read(&buf[..15]), None);
        let layered = Marker { layer: 2, ..video };
        layered.write(&mut buf);
        assert_eq!(buf[0], 0x52, "layer 2 in bits 29..=30");
        assert_eq!(Marker::read(&buf), Some(layered));
    }

    #[test]
    fn fill_then_check_for_every_length() {
        for len in MARKER_LEN..=MAX_PAYLOAD {
            let mut buf = vec![0xa5u8; len];
            let m = Marker {
                seq: len as u32,
                ..marker()
            };
            fill(&mut buf, &m);
            assert_eq!(check(&buf), Ok(m), "length {len}");
        }
    }

    #[test]
    fn check_catches_corruption_truncation_and_mixups() {
        let mut buf = vec![0u8; 1200];
        let m = marker();
        fill(&mut buf, &m);
        for at in [16, 17, 600, 1199] {
            let mut bad = buf.clone();
            bad[at] ^= 0x01;
            assert_eq!(check(&bad), Err(PayloadError::Pattern), "flip at {at}");
        }
        // Another packet's marker over this packet's pattern.
        let mut swapped = buf.clone();
        Marker {
            seq: m.seq + 1,
            ..m
        }
        .write(&mut swapped);
        assert_eq!(check(&swapped), Err(PayloadError::Pattern));
        Marker {
            publisher: m.publisher + 1,
            ..m
        }
        .write(&mut swapped);
        assert_eq!(check(&swapped), Err(PayloadError::Pattern));
        // Another layer of the same publisher and stream position.
        let mut other_layer = buf.clone();
        Marker { layer: 1, ..m }.write(&mut other_layer);
        assert_eq!(check(&other_layer), Err(PayloadError::Pattern));
        assert_eq!(check(&buf[..15]), Err(PayloadError::Length));
        assert_eq!(
            check(&vec![0u8; MAX_PAYLOAD + 1]),
            Err(PayloadError::Length)
        );
        // A shorter prefix of a good payload is still a good payload.
        assert_eq!(check(&buf[..100]), Ok(m));
    }
}
