//! VP9 keyframe detection on RTP payloads (RFC 9628 §4.2).
//!
//! ```text
//!       0 1 2 3 4 5 6 7
//!      +-+-+-+-+-+-+-+-+
//!      |I|P|L|F|B|E|V|Z| (REQUIRED)
//!      +-+-+-+-+-+-+-+-+
//! I:   |M| PICTURE ID  | (7 bits, or 15 bits when M = 1 ...)
//!      +-+-+-+-+-+-+-+-+
//! M:   | EXTENDED PID  | (... with this second byte)
//!      +-+-+-+-+-+-+-+-+
//! L:   | TID |U| SID |D| (layer indices)
//!      +-+-+-+-+-+-+-+-+
//!      |   TL0PICIDX   | (when L = 1 and F = 0, non-flexible mode)
//!      +-+-+-+-+-+-+-+-+
//! P,F: | P_DIFF      |N| (up to 3 times; only when P = 1 and F = 1)
//!      +-+-+-+-+-+-+-+-+
//! V:   | SS            | (scalability structure, when V = 1)
//!      |     ....      |
//!      +-+-+-+-+-+-+-+-+
//! ```
//!
//! The scalability structure is `| N_S |Y|G|-|-|-|`, then when Y = 1
//! `N_S + 1` resolutions of 4 bytes, then when G = 1 a count `N_G` and
//! `N_G` picture-group entries `| TID |U| R |-|-|` each followed by `R`
//! P_DIFF bytes.

/// I: a PictureID is present.
const I: u8 = 0x80;
/// P: the frame is inter-picture predicted.
const P: u8 = 0x40;
/// L: layer indices are present.
const L: u8 = 0x20;
/// F: flexible mode.
const F: u8 = 0x10;
/// B: the packet starts a frame.
const B: u8 = 0x08;
/// V: a scalability structure is present.
const V: u8 = 0x02;

/// Whether `payload` (one VP9 RTP payload) is the first packet of a
/// keyframe: it starts a frame (B = 1), the frame is not inter-picture
/// predicted (P = 0), and it belongs to the lowest spatial layer (SID = 0
/// when layer indices are present). The whole payload descriptor must be
/// present, including any scalability structure; a truncated one is not a
/// keyframe. The VP9 bitstream itself is not inspected.
pub fn vp9_is_keyframe(payload: &[u8]) -> bool {
    keyframe(payload).unwrap_or(false)
}

/// [`vp9_is_keyframe`], with `None` for a truncated descriptor.
fn keyframe(payload: &[u8]) -> Option<bool> {
    let b0 = *payload.first()?;
    if b0 & P != 0 || b0 & B == 0 {
        return Some(false);
    }
    let mut pos = 1;
    if b0 & I != 0 {
        let picture_id = *payload.get(pos)?;
        pos += if picture_id & 0x80 != 0 { 2 } else { 1 };
    }
    let mut sid = 0;
    if b0 & L != 0 {
        let layer = *payload.get(pos)?;
        sid = (layer >> 1) & 0x07;
        pos += if b0 & F == 0 { 2 } else { 1 };
    }
    // P = 0, so there are no reference indices even in flexible mode.
    if b0 & V != 0 {
        pos = skip_scalability_structure(payload, pos)?;
    }
    if pos > payload.len() {
        return None;
    }
    Some(sid == 0)
}

/// The offset just past the scalability structure that starts at `pos`.
/// The offset returned may lie past the end of `payload` when the last
/// fixed-size part is missing; the caller checks it.
fn skip_scalability_structure(payload: &[u8], mut pos: usize) -> Option<usize> {
    let ss = *payload.get(pos)?;
    pos += 1;
    if ss & 0x10 != 0 {
        // WIDTH and HEIGHT, 16 bits each, for each of N_S + 1 layers.
        pos += 4 * (usize::from(ss >> 5) + 1);
    }
    if ss & 0x08 != 0 {
        let groups = *payload.get(pos)?;
        pos += 1;
        for _ in 0..groups {
            let entry = *payload.get(pos)?;
            pos += 1 + usize::from((entry >> 2) & 0x03);
        }
    }
    Some(pos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::testutil::XorShift;
    use bytes::Bytes;
    use rtp::packetizer::Depacketizer;

    /// Some VP9 bitstream bytes after the descriptor.
    const FRAME: [u8; 3] = [0x82, 0x49, 0x83];

    fn vectors() -> Vec<(&'static str, Vec<u8>, bool)> {
        vec![
            ("B, P = 0", vec![B], true),
            ("B, P = 0, frame", [&[B][..], &FRAME].concat(), true),
            ("B, P = 1", vec![B | P, 0x00], false),
            ("continuation", vec![0x00, 0x00], false),
            ("end packet of a keyframe", vec![0x04, 0x00], false),
            ("7-bit PictureID", vec![I | B, 0x05, 0x00], true),
            ("15-bit PictureID", vec![I | B, 0x81, 0x23, 0x00], true),
            (
                "non-flexible, SID 0, TL0PICIDX",
                vec![I | L | B, 0x81, 0x23, 0x00, 0x07, 0x00],
                true,
            ),
            (
                "non-flexible, SID 1",
                vec![I | L | B, 0x05, 0x02, 0x07, 0x00],
                false,
            ),
            (
                "flexible, SID 0",
                vec![I | L | F | B, 0x05, 0x00, 0x00],
                true,
            ),
            (
                "flexible, SID 2",
                vec![I | L | F | B, 0x05, 0x04, 0x00],
                false,
            ),
            (
                // libwebrtc's keyframe: SS with one 640×360 layer and a
                // picture group of one entry with one P_DIFF.
                "SS, Y and G",
                vec![
                    I | L | B | V,
                    0x81,
                    0x23,
                    0x00,
                    0x00, // PictureID, L, TL0PICIDX
                    0x18,
                    0x02,
                    0x80,
                    0x01,
                    0x68, // N_S 0, Y, G, 640×360
                    0x01,
                    0x04,
                    0x01, // N_G 1: TID 0, R 1, P_DIFF 1
                    0x82,
                ],
                true,
            ),
            ("SS, nothing", vec![B | V, 0x00], true),
            ("SS, G with no groups", vec![B | V, 0x08, 0x00], true),
        ]
    }

    #[test]
    fn detects_keyframes() {
        for (name, p, key) in vectors() {
            assert_eq!(vp9_is_keyframe(&p), key, "{name}");
        }
    }

    #[test]
    fn truncated_descriptors_are_not_keyframes() {
        for p in [
            &[][..],
            &[I | B],
            &[I | B, 0x80],
            &[L | B],
            &[L | B, 0x00], // TL0PICIDX missing
            &[B | V],
            &[B | V, 0x10, 0x02, 0x80, 0x01], // one HEIGHT byte short
            &[B | V, 0x08],                   // N_G missing
            &[B | V, 0x08, 0x01],             // group entry missing
            &[B | V, 0x08, 0x01, 0x08],       // P_DIFF missing
        ] {
            assert!(!vp9_is_keyframe(p), "{p:02x?}");
        }
    }

    /// The webrtc-rs depacketizer as an oracle, for descriptors without a
    /// scalability structure (it reads the G bit from the wrong position).
    fn check_against_rtp(p: &[u8]) {
        let Some(&b0) = p.first() else {
            return;
        };
        if b0 & V != 0 {
            return;
        }
        let mut theirs = rtp::codecs::vp9::Vp9Packet::default();
        let parsed = theirs.depacketize(&Bytes::copy_from_slice(p)).is_ok();
        let want = parsed && !theirs.p && theirs.b && (!theirs.l || theirs.sid == 0);
        assert_eq!(vp9_is_keyframe(p), want, "{p:02x?}");
    }

    #[test]
    fn agrees_with_webrtc_rs() {
        for (_, p, _) in vectors() {
            check_against_rtp(&p);
        }
        let mut rng = XorShift::new(9628);
        let mut buf = [0u8; 10];
        for _ in 0..100_000 {
            let p = rng.fill(&mut buf);
            // Mostly keyframe candidates.
            if let Some(b0) = p.first_mut()
                && rng.next() & 3 != 0
            {
                *b0 = (*b0 | B) & !P;
            }
            check_against_rtp(p);
        }
    }

    #[test]
    fn hostile_input_never_panics() {
        for (_, p, _) in vectors() {
            for end in 0..=p.len() {
                let _ = vp9_is_keyframe(&p[..end]);
                let _ = crate::codec::is_keyframe(crate::codec::Codec::Vp9, &p[..end]);
            }
        }
        let mut rng = XorShift::new(0x9);
        let mut buf = [0u8; 40];
        for _ in 0..100_000 {
            let p = rng.fill(&mut buf);
            if let Some(b0) = p.first_mut() {
                *b0 = (*b0 | B | V) & !P;
            }
            let _ = vp9_is_keyframe(p);
        }
    }
}
