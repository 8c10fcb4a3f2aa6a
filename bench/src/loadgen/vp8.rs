//! The VP8 framing of the load generator's video when the node should see
//! real VP8 (simulcast, last-N): an RFC 7741 payload descriptor on every
//! packet and a VP8 payload header (RFC 6386 §9.1) on the first packet of
//! each frame, then the usual [`super::payload`] marker and pattern.
//!
//! ```text
//! every packet:   0x80 | S << 4   X, S (start of frame), PID 0
//!                 0x80            I: a PictureID follows
//!                 0x80 | id >> 8  M = 1: 15-bit PictureID, one per frame
//!                 id & 0xff
//! first packet:   keyframe: 10 bytes, P = 0, the start code 9d 01 2a,
//!                 then width and height (14 bits each, no scaling)
//!                 interframe: 3 bytes, P = 1
//! ```
//!
//! The node's keyframe detection (`sfu_core::codec::vp8`) reads exactly
//! these bits, and its simulcast switching rewrites the PictureID, which the
//! receive side reads back to check continuity. [`parse`] never panics: a
//! payload the node mangled is `None`.

use sfu_core::codec::vp8::Vp8Descriptor;

/// Length of the payload descriptor (X, I and a 15-bit PictureID).
pub const DESCRIPTOR_LEN: usize = 4;
/// Length of a keyframe's VP8 payload header.
pub const KEY_HEADER_LEN: usize = 10;
/// Length of an interframe's VP8 payload header.
pub const INTER_HEADER_LEN: usize = 3;
/// Most bytes [`write()`] puts before the marker.
pub const MAX_PREFIX: usize = DESCRIPTOR_LEN + KEY_HEADER_LEN;

/// What one packet's VP8 prefix says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    /// The 15-bit PictureID.
    pub picture_id: u16,
    /// The packet starts a frame (S = 1, PID = 0).
    pub start: bool,
    /// The packet starts a keyframe.
    pub keyframe: bool,
    /// Bytes before the marker.
    pub len: usize,
}

/// Bytes [`write()`] puts before the marker of a packet.
pub fn prefix_len(start: bool, keyframe: bool) -> usize {
    DESCRIPTOR_LEN
        + match (start, keyframe) {
            (false, _) => 0,
            (true, true) => KEY_HEADER_LEN,
            (true, false) => INTER_HEADER_LEN,
        }
}

/// Writes the prefix of a packet of picture `picture_id` into the start of
/// `out` and returns its length; `width` and `height` go into a keyframe's
/// header. `None` (nothing written) if `out` is too short.
pub fn write(
    out: &mut [u8],
    picture_id: u16,
    start: bool,
    keyframe: bool,
    width: u16,
    height: u16,
) -> Option<usize> {
    let len = prefix_len(start, keyframe);
    let out = out.get_mut(..len)?;
    let [hi, lo] = (picture_id & 0x7fff).to_be_bytes();
    out[..DESCRIPTOR_LEN].copy_from_slice(&[0x80 | (u8::from(start) << 4), 0x80, 0x80 | hi, lo]);
    if !start {
        return Some(len);
    }
    // |Size0(3)|show_frame(1)|version(3)|P(1)|, then the rest of the first
    // partition's size; the sizes are not used by anyone here.
    let p = u8::from(!keyframe);
    out[DESCRIPTOR_LEN..DESCRIPTOR_LEN + 3].copy_from_slice(&[0x10 | p, 0, 0]);
    if keyframe {
        let [w_hi, w_lo] = (width & 0x3fff).to_le_bytes();
        let [h_hi, h_lo] = (height & 0x3fff).to_le_bytes();
        out[DESCRIPTOR_LEN + 3..].copy_from_slice(&[0x9d, 0x01, 0x2a, w_hi, w_lo, h_hi, h_lo]);
    }
    Some(len)
}

/// Reads the prefix at the start of `payload` (as [`write()`] lays it out and
/// the node may have rewritten it): `None` if the descriptor is malformed,
/// carries no PictureID, or the payload ends inside the prefix.
pub fn parse(payload: &[u8]) -> Option<Prefix> {
    let d = Vp8Descriptor::parse(payload)?;
    let (picture_id, _) = d.picture_id?;
    let start = d.start_of_partition && d.partition_index == 0;
    let keyframe = d.is_keyframe(payload);
    let len = d.header_len
        + match (start, keyframe) {
            (false, _) => 0,
            (true, true) => KEY_HEADER_LEN,
            (true, false) => INTER_HEADER_LEN,
        };
    if payload.len() < len {
        return None;
    }
    Some(Prefix {
        picture_id,
        start,
        keyframe,
        len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sfu_core::codec::vp8::vp8_is_keyframe;

    #[test]
    fn prefixes_round_trip_and_the_node_sees_the_keyframes() {
        for (start, keyframe) in [(true, true), (true, false), (false, false)] {
            for id in [0u16, 1, 127, 128, 0x7fff] {
                let mut buf = [0xa5u8; 32];
                let n = write(&mut buf, id, start, keyframe, 1280, 720).expect("room");
                assert_eq!(n, prefix_len(start, keyframe));
                assert_eq!(buf[n..], [0xa5; 32][n..], "nothing written past the prefix");
                let p = parse(&buf).expect("parses");
                assert_eq!(
                    p,
                    Prefix {
                        picture_id: id,
                        start,
                        keyframe: start && keyframe,
                        len: n,
                    }
                );
                assert_eq!(vp8_is_keyframe(&buf[..n + 1]), start && keyframe);
            }
        }
        let mut key = [0u8; 14];
        write(&mut key, 5, true, true, 640, 360).expect("room");
        assert_eq!(key[7..10], [0x9d, 0x01, 0x2a], "the start code");
        assert_eq!(u16::from_le_bytes([key[10], key[11]]), 640);
        assert_eq!(u16::from_le_bytes([key[12], key[13]]), 360);
    }

    #[test]
    fn short_or_foreign_payloads_are_refused() {
        assert!(write(&mut [0u8; 13], 1, true, true, 1, 1).is_none());
        assert!(write(&mut [0u8; 3], 1, false, false, 1, 1).is_none());
        let mut buf = [0u8; 14];
        write(&mut buf, 9, true, true, 320, 180).expect("room");
        for cut in 0..14 {
            assert_eq!(parse(&buf[..cut]), None, "cut at {cut}");
        }
        // No X bit: no PictureID.
        assert_eq!(parse(&[0x10, 0x00, 0x00, 0x00]), None);
        assert_eq!(parse(&[]), None);
        // Junk never panics.
        for b0 in 0..=255u8 {
            for b1 in [0u8, 0x80, 0xff] {
                let _ = parse(&[b0, b1, 0xff, 0xff, 0x00]);
            }
        }
    }
}
