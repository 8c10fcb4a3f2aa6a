//! Payload-level codec inspection for simulcast switching.
//!
//! A router forwards one simulcast layer per subscriber and may switch a
//! subscriber to another layer only where the decoder can start afresh: at a
//! keyframe of the target layer. Sequence numbers and timestamps are
//! rewritten elsewhere; this module supplies the payload-level pieces, with
//! no dependency on the router:
//!
//! * [`is_keyframe`] — whether an RTP payload begins a keyframe, per [`Codec`];
//! * [`vp8`] — the VP8 payload descriptor ([`vp8::Vp8Descriptor`]), in-place
//!   rewriting of its PictureID and TL0PICIDX ([`vp8::rewrite_vp8`]) and the
//!   per-consumer state that keeps both continuous across switches
//!   ([`vp8::Vp8Rewriter`]);
//! * [`h264`] and [`vp9`] — keyframe detection for those payload formats;
//! * [`red`] — redundant audio (RFC 2198): the block parser and the
//!   in-place rewrites a router needs to pass RED on or unwrap its primary
//!   block.
//!
//! Everything here works on `&[u8]` / `&mut [u8]` the caller owns, never
//! allocates and never panics: a malformed or truncated payload is "not a
//! keyframe" (or `None` / `false` from a parser or writer).
//!
//! # What a keyframe is, per codec
//! * **VP8** (RFC 7741 §4.3, RFC 6386 §9.1): the first packet of a frame
//!   (S = 1 and PID = 0 in the payload descriptor) whose VP8 payload header
//!   has the inverse key frame flag P (bit 0 of its first byte) clear.
//! * **VP9** (RFC 9628 §4.2): a packet that starts a frame (B = 1) that is
//!   not inter-picture predicted (P = 0), of the lowest spatial layer
//!   (SID = 0 when the layer index is present). With simulcast every stream
//!   has a single spatial layer, so this is the first packet of a keyframe.
//! * **H.264** (RFC 6184 §5.6–5.8, ITU-T H.264 Table 7-1): a packet
//!   carrying an IDR slice (NAL unit type 5) or a sequence parameter set
//!   (type 7, which encoders send just before an IDR) as a single NAL unit
//!   packet, inside an STAP-A, or as the start fragment of an FU-A.
//!   STAP-B, MTAP and FU-B (interleaved mode, which WebRTC does not use) are
//!   never keyframes here.
//! * **AV1**: not detected, [`is_keyframe`] returns `false`. The RTP payload
//!   format for AV1 (AOMedia, "RTP Payload Format For AV1") sets the
//!   aggregation header's N bit on the first packet of a coded video
//!   sequence; relying on it, or parsing the OBU sequence and frame headers,
//!   is left for when the node forwards AV1.
//! * **Opus** and other codecs: audio has no keyframes and is not simulcast,
//!   so [`is_keyframe`] returns `false`; a router must not wait for one.

pub mod h264;
pub mod red;
pub mod vp8;
pub mod vp9;

/// The codec of an RTP stream, as far as switching layers is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    /// VP8 (RFC 7741).
    Vp8,
    /// VP9 (RFC 9628).
    Vp9,
    /// H.264 (RFC 6184).
    H264,
    /// AV1 (AOMedia RTP payload format).
    Av1,
    /// Opus (RFC 7587).
    Opus,
    /// Any other codec.
    Other,
}

impl Codec {
    /// The codec of an SDP `a=rtpmap` encoding name ("VP8", "VP9", "H264",
    /// "AV1", "opus"), compared ASCII case-insensitively; anything else is
    /// [`Codec::Other`].
    pub fn from_name(name: &str) -> Self {
        const NAMES: [(&str, Codec); 5] = [
            ("VP8", Codec::Vp8),
            ("VP9", Codec::Vp9),
            ("H264", Codec::H264),
            ("AV1", Codec::Av1),
            ("opus", Codec::Opus),
        ];
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or(Codec::Other, |&(_, codec)| codec)
    }

    /// Its SDP encoding name ("VP8", "VP9", "H264", "AV1", "opus"; "other"
    /// for [`Codec::Other`]), which [`Codec::from_name`] reads back.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Vp8 => "VP8",
            Codec::Vp9 => "VP9",
            Codec::H264 => "H264",
            Codec::Av1 => "AV1",
            Codec::Opus => "opus",
            Codec::Other => "other",
        }
    }
}

/// Whether `payload` (an RTP payload, after the RTP header and without
/// padding) is the first packet of a keyframe of `codec`, as defined in the
/// [module documentation](self). Malformed payloads are not keyframes;
/// AV1, Opus and [`Codec::Other`] always return `false`.
pub fn is_keyframe(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        Codec::Vp8 => vp8::vp8_is_keyframe(payload),
        Codec::Vp9 => vp9::vp9_is_keyframe(payload),
        Codec::H264 => h264::h264_is_keyframe(payload),
        Codec::Av1 | Codec::Opus | Codec::Other => false,
    }
}

/// A seeded xorshift64 generator for the hostile-input tests: no
/// dependency, and failures reproduce.
#[cfg(test)]
mod testutil {
    #[derive(Debug)]
    pub(super) struct XorShift(u64);

    impl XorShift {
        pub(super) fn new(seed: u64) -> Self {
            Self(seed | 1)
        }

        pub(super) fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        /// A random prefix of `buf` (0 to its whole length) filled with
        /// random bytes.
        pub(super) fn fill<'a>(&mut self, buf: &'a mut [u8]) -> &'a mut [u8] {
            let len = (self.next() % (buf.len() as u64 + 1)) as usize;
            let p = &mut buf[..len];
            for b in p.iter_mut() {
                *b = self.next().to_be_bytes()[0];
            }
            p
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_name_is_case_insensitive() {
        for (name, codec) in [
            ("VP8", Codec::Vp8),
            ("vp8", Codec::Vp8),
            ("Vp9", Codec::Vp9),
            ("h264", Codec::H264),
            ("H264", Codec::H264),
            ("av1", Codec::Av1),
            ("AV1", Codec::Av1),
            ("opus", Codec::Opus),
            ("OPUS", Codec::Opus),
            ("H265", Codec::Other),
            ("VP8X", Codec::Other),
            ("", Codec::Other),
            ("rtx", Codec::Other),
        ] {
            assert_eq!(Codec::from_name(name), codec, "{name}");
        }
    }

    #[test]
    fn dispatch() {
        // VP8: S=1, PID=0, no extension; VP8 payload header P=0.
        let vp8_key = [0x10, 0x00, 0x00, 0x00];
        // VP9: B=1, P=0.
        let vp9_key = [0x08, 0x00];
        // H.264: single NAL unit, IDR.
        let h264_key = [0x65, 0x88];
        assert!(is_keyframe(Codec::Vp8, &vp8_key));
        assert!(is_keyframe(Codec::Vp9, &vp9_key));
        assert!(is_keyframe(Codec::H264, &h264_key));
        assert!(!is_keyframe(Codec::Vp8, &h264_key));
        assert!(!is_keyframe(Codec::H264, &vp8_key));
        for codec in [Codec::Av1, Codec::Opus, Codec::Other] {
            for p in [&vp8_key[..], &vp9_key, &h264_key, &[0xff; 8], &[]] {
                assert!(!is_keyframe(codec, p));
            }
        }
    }

    #[test]
    fn random_payloads_never_panic() {
        let mut rng = testutil::XorShift::new(1);
        let mut buf = [0u8; 24];
        let codecs = [
            Codec::Vp8,
            Codec::Vp9,
            Codec::H264,
            Codec::Av1,
            Codec::Opus,
            Codec::Other,
        ];
        for _ in 0..50_000 {
            let p = rng.fill(&mut buf);
            for codec in codecs {
                let _ = is_keyframe(codec, p);
            }
        }
    }
}
