//! H.264 keyframe detection on RTP payloads (RFC 6184).
//!
//! Every payload starts with a NAL unit header, `|F|NRI| Type |`, whose
//! 5-bit type says what follows (RFC 6184 §5.2, Table 1):
//!
//! * 1–23: a single NAL unit packet (§5.6), the type is the NAL unit's own;
//! * 24, STAP-A (§5.7.1): NAL units aggregated as `size: u16` then the unit;
//! * 28, FU-A (§5.8): a fragment; the second byte, the FU header
//!   `|S|E|R| Type |`, carries the start bit and the original type.
//!
//! STAP-B (25), MTAP16/24 (26, 27) and FU-B (29) belong to the interleaved
//! packetization mode, which WebRTC does not negotiate; they are never
//! keyframes here.

/// NAL unit type of a coded slice of an IDR picture.
const NAL_IDR: u8 = 5;
/// NAL unit type of a sequence parameter set.
const NAL_SPS: u8 = 7;
/// Single-time aggregation packet.
const STAP_A: u8 = 24;
/// Fragmentation unit without DON.
const FU_A: u8 = 28;

/// Whether `payload` (one H.264 RTP payload) carries the start of a
/// keyframe: an IDR slice (NAL unit type 5) or a sequence parameter set
/// (type 7) as a single NAL unit packet, as any unit of an STAP-A, or as
/// the original type of an FU-A start fragment (S = 1).
///
/// An STAP-A counts only if it is well formed: every unit has a non-zero
/// size that fits, and the units end exactly where the payload ends.
/// Truncated or malformed payloads are not keyframes; this never panics.
pub fn h264_is_keyframe(payload: &[u8]) -> bool {
    let Some((&header, rest)) = payload.split_first() else {
        return false;
    };
    match header & 0x1f {
        STAP_A => stap_a_is_keyframe(rest),
        FU_A => rest
            .first()
            .is_some_and(|&fu| fu & 0x80 != 0 && is_key_type(fu & 0x1f)),
        single => is_key_type(single),
    }
}

/// Whether a NAL unit type starts a keyframe.
fn is_key_type(nal_type: u8) -> bool {
    nal_type == NAL_IDR || nal_type == NAL_SPS
}

/// Walks the aggregation units of an STAP-A (after its header byte).
fn stap_a_is_keyframe(mut units: &[u8]) -> bool {
    let mut key = false;
    while !units.is_empty() {
        let Some((size, rest)) = units.split_first_chunk::<2>() else {
            return false;
        };
        let size = usize::from(u16::from_be_bytes(*size));
        let Some((nal, next)) = rest.split_at_checked(size) else {
            return false;
        };
        let Some(&nal_header) = nal.first() else {
            return false;
        };
        key |= is_key_type(nal_header & 0x1f);
        units = next;
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::testutil::XorShift;

    // NAL unit headers with NRI = 3: SPS, PPS, IDR, SEI, non-IDR slice.
    const SPS: [u8; 4] = [0x67, 0x42, 0xc0, 0x1f];
    const PPS: [u8; 3] = [0x68, 0xce, 0x3c];
    const IDR: [u8; 4] = [0x65, 0x88, 0x84, 0x00];
    const SEI: [u8; 3] = [0x06, 0x05, 0x01];
    const SLICE: [u8; 3] = [0x41, 0x9a, 0x02];

    /// An STAP-A (NRI 3) of the given units.
    fn stap_a(units: &[&[u8]]) -> Vec<u8> {
        let mut p = vec![0x78];
        for u in units {
            let len = u16::try_from(u.len()).expect("test units are short");
            p.extend_from_slice(&len.to_be_bytes());
            p.extend_from_slice(u);
        }
        p
    }

    /// An FU-A fragment of a unit with header `nal`: start and end bits,
    /// then the fragment's bytes.
    fn fu_a(nal: u8, start: bool, end: bool) -> Vec<u8> {
        let indicator = (nal & 0xe0) | FU_A;
        let fu = (u8::from(start) << 7) | (u8::from(end) << 6) | (nal & 0x1f);
        vec![indicator, fu, 0x88, 0x84]
    }

    fn vectors() -> Vec<(&'static str, Vec<u8>, bool)> {
        vec![
            ("single IDR", IDR.to_vec(), true),
            ("single SPS", SPS.to_vec(), true),
            ("single PPS", PPS.to_vec(), false),
            ("single SEI", SEI.to_vec(), false),
            ("single non-IDR slice", SLICE.to_vec(), false),
            ("IDR header alone", vec![0x65], true),
            ("STAP-A SPS PPS IDR", stap_a(&[&SPS, &PPS, &IDR]), true),
            ("STAP-A SPS PPS", stap_a(&[&SPS, &PPS]), true),
            ("STAP-A SEI IDR", stap_a(&[&SEI, &IDR]), true),
            ("STAP-A SEI slice", stap_a(&[&SEI, &SLICE]), false),
            ("STAP-A PPS only", stap_a(&[&PPS]), false),
            ("FU-A IDR start", fu_a(0x65, true, false), true),
            ("FU-A IDR middle", fu_a(0x65, false, false), false),
            ("FU-A IDR end", fu_a(0x65, false, true), false),
            // S and E together are invalid (§5.8) but harmless: accepted.
            ("FU-A IDR start+end", fu_a(0x65, true, true), true),
            ("FU-A SPS start", fu_a(0x67, true, false), true),
            ("FU-A slice start", fu_a(0x41, true, false), false),
            // Interleaved-mode packets, even around an IDR.
            (
                "STAP-B",
                [&[0x79, 0x00, 0x01][..], &stap_a(&[&IDR])[1..]].concat(),
                false,
            ),
            (
                "MTAP16",
                vec![0x7a, 0x00, 0x01, 0x00, 0x04, 0x00, 0x00, 0x01, 0x65],
                false,
            ),
            ("FU-B IDR start", vec![0x7d, 0x85, 0x00, 0x01, 0x88], false),
            ("reserved type 30", vec![0x7e, 0x65], false),
        ]
    }

    #[test]
    fn detects_keyframes() {
        for (name, p, key) in vectors() {
            assert_eq!(h264_is_keyframe(&p), key, "{name}");
        }
    }

    #[test]
    fn malformed_stap_a_is_not_a_keyframe() {
        let good = stap_a(&[&SPS, &PPS, &IDR]);
        // Truncated anywhere inside the units: the last size overruns.
        for end in 1..good.len() {
            let cut = &good[..end];
            // The cut falls between two units only after a complete unit.
            let between = [1, 1 + 2 + SPS.len(), 1 + 4 + SPS.len() + PPS.len()];
            let want = between.contains(&end) && end > 1;
            assert_eq!(h264_is_keyframe(cut), want, "cut at {end}");
        }
        // Size zero, a size larger than the rest, a dangling size byte.
        let mut zero = stap_a(&[&IDR]);
        zero.extend_from_slice(&[0x00, 0x00]);
        assert!(!h264_is_keyframe(&zero));
        let mut over = stap_a(&[&IDR]);
        over[2] = 0xff;
        assert!(!h264_is_keyframe(&over));
        let mut dangling = stap_a(&[&IDR]);
        dangling.push(0x00);
        assert!(!h264_is_keyframe(&dangling));
        assert!(!h264_is_keyframe(&[0x78]));
        assert!(!h264_is_keyframe(&[0x7c]));
        assert!(!h264_is_keyframe(&[]));
    }

    #[test]
    fn hostile_input_never_panics() {
        for (_, p, _) in vectors() {
            for end in 0..=p.len() {
                let _ = h264_is_keyframe(&p[..end]);
                let _ = crate::codec::is_keyframe(crate::codec::Codec::H264, &p[..end]);
            }
        }
        let mut rng = XorShift::new(6184);
        let mut buf = [0u8; 16];
        for _ in 0..100_000 {
            let p = rng.fill(&mut buf);
            // Mostly STAP-A and FU-A headers, with short unit sizes.
            let kind = rng.next();
            if let [header, b1, b2, ..] = p {
                match kind % 4 {
                    0 => *header = (*header & 0xe0) | STAP_A,
                    1 => *header = (*header & 0xe0) | FU_A,
                    2 => {
                        *header = (*header & 0xe0) | STAP_A;
                        *b1 = 0;
                        *b2 %= 8;
                    }
                    _ => {}
                }
            }
            let _ = h264_is_keyframe(p);
        }
    }
}
