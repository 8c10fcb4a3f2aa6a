//! The codecs the node forwards, and everything the node decides about
//! them: the one table the answerer ([`super::answer`]), the WHEP
//! producer assignment and the JSON API's [`assumed_codec`] consult.
//!
//! | codec | kind | rtpmap | fmtp the node requires | fmtp in the answer |
//! |---|---|---|---|---|
//! | [`CodecChoice::Opus`] | audio | `opus/48000/2` | none | the offer's |
//! | [`CodecChoice::Vp8`] | video | `VP8/90000` | none | none |
//! | [`CodecChoice::H264`] | video | `H264/90000` | `packetization-mode=1`, baseline or constrained-baseline `profile-level-id` | the offer's |
//! | RED around Opus ([`SUPPORTED_REDUNDANCY`]) | audio | `red/48000/2` | `<opus pt>/<opus pt>` (every block Opus) | the offer's |
//!
//! Per kind the first codec of [`SUPPORTED_CODECS`] the offer has wins
//! (VP8 before H.264). The payload type is always the offer's: the node
//! has no numbers of its own.
//!
//! RED (RFC 2198) is no codec of its own but a wrapper around the chosen
//! one: a publish answer keeps it wherever the offer has it for the chosen
//! codec, a subscribe answer only where the stream's producer sends it
//! ([`super::OutStream::red`]). The answer lists it before the codec it
//! wraps, since libwebrtc sends RED only when it is negotiated first. RTCP feedback is answered from
//! [`SUPPORTED_FEEDBACK`] (see [`super::answer()`] for which the
//! subscribe answers leave out).

use std::fmt;

use super::Codec;
use crate::router::MediaKind;

/// A codec the node can forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodecChoice {
    /// Opus 48000/2.
    Opus,
    /// VP8.
    Vp8,
    /// H.264 constrained baseline / baseline, packetization-mode 1.
    H264,
}

/// What the node requires of, and answers for, one codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecSpec {
    /// The codec.
    pub choice: CodecChoice,
    /// The media kind it belongs to.
    pub kind: MediaKind,
    /// The encoding name, compared ignoring ASCII case.
    pub name: &'static str,
    /// The RTP clock rate in Hz.
    pub clock_rate: u32,
    /// The channel count the rtpmap must give; `None`: not checked.
    pub channels: Option<u8>,
    /// Whether the answer repeats the offer's `a=fmtp` line.
    pub answer_fmtp: bool,
}

/// The supported codecs, in order of preference within each kind.
pub const SUPPORTED_CODECS: [CodecSpec; 3] = [
    CodecSpec {
        choice: CodecChoice::Opus,
        kind: MediaKind::Audio,
        name: "opus",
        clock_rate: 48_000,
        channels: Some(2),
        answer_fmtp: true,
    },
    CodecSpec {
        choice: CodecChoice::Vp8,
        kind: MediaKind::Video,
        name: "VP8",
        clock_rate: 90_000,
        channels: None,
        answer_fmtp: false,
    },
    CodecSpec {
        choice: CodecChoice::H264,
        kind: MediaKind::Video,
        name: "H264",
        clock_rate: 90_000,
        channels: None,
        answer_fmtp: true,
    },
];

/// A redundancy format the node forwards around a codec (RFC 2198).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedundancySpec {
    /// The codec it wraps: the one its fmtp must name for every block.
    pub primary: CodecChoice,
    /// The encoding name, compared ignoring ASCII case.
    pub name: &'static str,
    /// The RTP clock rate in Hz.
    pub clock_rate: u32,
    /// The channel count the rtpmap must give; `None`: not checked.
    pub channels: Option<u8>,
}

/// The redundancy formats the node forwards: RED around Opus, as Chrome
/// offers it (`a=rtpmap:63 red/48000/2`, `a=fmtp:63 111/111`).
pub const SUPPORTED_REDUNDANCY: [RedundancySpec; 1] = [RedundancySpec {
    primary: CodecChoice::Opus,
    name: "red",
    clock_rate: 48_000,
    channels: Some(2),
}];

/// The offer's RED codec for the chosen `primary` codec (offered with
/// payload type `primary_pt`): a row of [`SUPPORTED_REDUNDANCY`] for it,
/// whose fmtp names `primary_pt` for every block (`111/111`), with a
/// payload type of its own.
pub(super) fn red_for(codecs: &[Codec], primary: CodecChoice, primary_pt: u8) -> Option<&Codec> {
    let spec = SUPPORTED_REDUNDANCY.iter().find(|s| s.primary == primary)?;
    codecs.iter().find(|c| {
        c.name.eq_ignore_ascii_case(spec.name)
            && c.clock_rate == spec.clock_rate
            && spec.channels.is_none_or(|n| c.channels == Some(n))
            && c.payload_type != primary_pt
            && c.fmtp.as_deref().is_some_and(|f| {
                !f.trim().is_empty() && f.split('/').all(|b| b.trim().parse() == Ok(primary_pt))
            })
    })
}

/// RTCP feedback an answer keeps when the offer has it. `transport-cc` is
/// kept only where the answer also keeps the transport-wide-cc extension
/// (publish sections): feedback without numbered packets means nothing.
pub const SUPPORTED_FEEDBACK: [&str; 5] =
    ["nack", "nack pli", "ccm fir", "goog-remb", "transport-cc"];

/// The codec assumed for a track of the JSON API, which declares none: the
/// first supported codec of its kind.
pub fn assumed_codec(kind: MediaKind) -> CodecChoice {
    match kind {
        MediaKind::Video => CodecChoice::Vp8,
        MediaKind::Audio => CodecChoice::Opus,
    }
}

/// The supported codecs of `kind`, most preferred first.
pub(super) fn preferences(kind: MediaKind) -> impl Iterator<Item = CodecChoice> {
    SUPPORTED_CODECS
        .iter()
        .filter(move |s| s.kind == kind)
        .map(|s| s.choice)
}

impl CodecChoice {
    /// This codec's row of [`SUPPORTED_CODECS`].
    pub fn spec(self) -> &'static CodecSpec {
        let at = match self {
            CodecChoice::Opus => 0,
            CodecChoice::Vp8 => 1,
            CodecChoice::H264 => 2,
        };
        &SUPPORTED_CODECS[at]
    }

    /// The encoding name: `opus`, `VP8` or `H264`.
    pub fn as_str(self) -> &'static str {
        self.spec().name
    }

    /// The media kind this codec belongs to.
    pub fn kind(self) -> MediaKind {
        self.spec().kind
    }

    /// Whether an offered codec is this one, as the answer requires it:
    /// name, clock rate, channels, and for H.264 the packetization mode and
    /// profile (`packetization-mode=1`, profile-level-id `42e0xx` or
    /// `4200xx`, absent meaning `42000a`).
    pub fn matches(self, codec: &Codec) -> bool {
        self.same_rtpmap(codec)
            && match self {
                CodecChoice::Opus | CodecChoice::Vp8 => true,
                CodecChoice::H264 => h264_supported(codec.fmtp.as_deref().unwrap_or("")),
            }
    }

    /// A looser [`matches`](Self::matches) for picking which stream goes to
    /// which section before the answer is built: H.264 needs only
    /// `packetization-mode=1` in its fmtp, the profile is left to the
    /// answer (which then refuses the section with the stream's codec).
    pub fn roughly_matches(self, codec: &Codec) -> bool {
        self.same_rtpmap(codec)
            && match self {
                CodecChoice::Opus | CodecChoice::Vp8 => true,
                CodecChoice::H264 => codec
                    .fmtp
                    .as_deref()
                    .is_some_and(|f| f.replace(' ', "").contains("packetization-mode=1")),
            }
    }

    /// Name (ignoring ASCII case), clock rate and, where the table gives
    /// one, channel count.
    fn same_rtpmap(self, codec: &Codec) -> bool {
        let spec = self.spec();
        codec.name.eq_ignore_ascii_case(spec.name)
            && codec.clock_rate == spec.clock_rate
            && spec.channels.is_none_or(|n| codec.channels == Some(n))
    }
}

impl fmt::Display for CodecChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `packetization-mode=1` and a baseline / constrained-baseline
/// `profile-level-id` (`42 e0 xx` or `42 00 xx`; absent means `42000a`).
fn h264_supported(fmtp: &str) -> bool {
    let mut mode1 = false;
    let mut profile = "42000a";
    for param in fmtp.split(';') {
        let Some((key, value)) = param.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.eq_ignore_ascii_case("packetization-mode") {
            mode1 = value.trim() == "1";
        } else if key.eq_ignore_ascii_case("profile-level-id") {
            profile = value.trim();
        }
    }
    let profile = profile.to_ascii_lowercase();
    mode1
        && profile.len() == 6
        && profile.bytes().all(|b| b.is_ascii_hexdigit())
        && (profile.starts_with("42e0") || profile.starts_with("4200"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_rows_are_in_choice_order_and_assumed_codecs_are_preferred() {
        for choice in [CodecChoice::Opus, CodecChoice::Vp8, CodecChoice::H264] {
            assert_eq!(choice.spec().choice, choice);
        }
        for kind in [MediaKind::Audio, MediaKind::Video] {
            assert_eq!(preferences(kind).next(), Some(assumed_codec(kind)));
            assert!(preferences(kind).all(|c| c.kind() == kind));
        }
        for red in SUPPORTED_REDUNDANCY {
            assert_eq!(red.primary.kind(), MediaKind::Audio);
            assert_eq!(Some(red.clock_rate), Some(red.primary.spec().clock_rate));
        }
    }

    #[test]
    fn red_needs_its_primary_in_every_block() {
        let codec = |pt, name: &str, channels, fmtp: Option<&str>| Codec {
            payload_type: pt,
            name: name.to_owned(),
            clock_rate: 48_000,
            channels,
            fmtp: fmtp.map(str::to_owned),
            rtcp_fb: Vec::new(),
        };
        let opus = codec(111, "opus", Some(2), None);
        for (red, found) in [
            (codec(63, "red", Some(2), Some("111/111")), true),
            (codec(63, "RED", Some(2), Some("111")), true),
            (codec(63, "red", Some(2), Some(" 111 / 111 ")), true),
            (codec(63, "red", Some(2), Some("111/109")), false),
            (codec(63, "red", Some(2), Some("")), false),
            (codec(63, "red", Some(2), None), false),
            (codec(63, "red", Some(1), Some("111/111")), false),
            (codec(63, "red", None, Some("111/111")), false),
            (codec(111, "red", Some(2), Some("111/111")), false),
            (codec(63, "rtx", Some(2), Some("111/111")), false),
        ] {
            let codecs = [opus.clone(), red.clone()];
            let got = red_for(&codecs, CodecChoice::Opus, 111).map(|c| c.payload_type);
            assert_eq!(got.is_some(), found, "{red:?}");
        }
        let video = [codec(116, "red", Some(2), Some("96/96"))];
        assert!(
            red_for(&video, CodecChoice::Vp8, 96).is_none(),
            "audio only"
        );
    }
}
