//! A minimal, strict SDP offer parser and answer generator for WebRTC
//! (WHIP publish, WHEP subscribe).
//!
//! The node is an ICE-lite agent with one host candidate per worker, runs
//! DTLS-SRTP (passive by default) and carries every media section of a peer on
//! one transport. [`parse_offer`] reads a browser's offer into an [`Offer`];
//! [`answer`] decides what the node accepts for an [`Intent`] and renders the
//! answer text together with what was negotiated per section
//! ([`Negotiated`]), which the control plane turns into producers and
//! consumers. The SDP text is hostile input: neither function panics, and every
//! refusal is an [`SdpError`] with a stable label ([`SdpError::as_str`]) and a
//! message meant for the HTTP client (400/422).
//!
//! # Supported
//! * Unified-plan offers as Chrome, Firefox and Safari write them, LF or CRLF
//!   line endings; ICE and DTLS attributes at session or media level (media
//!   level wins; within the BUNDLE group the values of the first bundled
//!   section are used and no other section may contradict them).
//! * Audio: Opus 48000/2, with redundancy (RED, RFC 2198, `red/48000/2`
//!   whose fmtp names Opus for every block) where the offer has it (see
//!   [`SUPPORTED_REDUNDANCY`]). Video: VP8 (preferred), then H.264 with
//!   `packetization-mode=1` and a constrained-baseline or baseline
//!   `profile-level-id` (profile byte `42`, constraint byte `e0` or `00`, any
//!   level; an absent `profile-level-id` means RFC 6184's default baseline).
//!   These codecs, their parameters and the feedback answered for them are
//!   decided in one place, [`SUPPORTED_CODECS`] and [`SUPPORTED_FEEDBACK`]
//!   (`codecs.rs`), which the answer, the control plane's WHEP stream
//!   assignment and its [`assumed_codec`] read.
//! * Header extensions: `sdes:mid`, `abs-send-time`, transport-wide-cc,
//!   `ssrc-audio-level`, `sdes:rtp-stream-id`, `sdes:repaired-rtp-stream-id`
//!   (accepted with the offer's ids, for [`Intent::Publish`] only; the node
//!   answers transport-wide numbers with feedback, [`crate::twcc`]).
//! * RTCP feedback: `nack`, `nack pli`, `ccm fir`, `goog-remb`, when the
//!   offer has them, and `transport-cc` where transport-wide-cc is kept;
//!   subscribe answers leave out generic `nack` (no retransmission yet).
//! * Simulcast (RFC 8853) with `a=rid` (RFC 8851) for publishers: the
//!   offer's `a=simulcast:send` becomes the answer's `a=simulcast:recv`.
//!
//! # Rejected, and why
//! * No `v=0` first line ([`SdpError::NotSdp`]), a line that is not
//!   `<letter>=<value>` or a known attribute with a malformed value
//!   ([`SdpError::Malformed`]), more than [`MAX_SDP_LEN`] bytes,
//!   [`MAX_MEDIA_SECTIONS`] media sections or [`MAX_LINES_PER_SECTION`] lines
//!   in one section: bounds on work and memory for input from the network.
//! * Missing ICE credentials or DTLS fingerprint: no way to authenticate the
//!   peer.
//! * No BUNDLE group, or an audio/video section outside it; no `a=rtcp-mux`;
//!   a protocol other than `UDP/TLS/RTP/SAVPF`: the node has exactly one
//!   ICE/DTLS transport and one port per peer.
//! * No audio or video section; an audio/video section without a supported
//!   codec: nothing could be forwarded.
//! * A publish offer that sends nothing; a subscribe stream whose codec the
//!   offer lacks (the node forwards and does not transcode).
//! * An ICE-lite offer: two ICE-lite agents never connect.
//!
//! Data channels (`m=application`) and other media types are answered with
//! port 0 (rejected) and left out of the answer's BUNDLE group. ULPFEC and
//! video RED are never answered, so peers send no FEC streams; RTX is
//! answered where the offer pairs it with the chosen codec and NACK, and
//! audio RED as above. Trickle candidates of the peer are ignored (the node is ICE-lite
//! and learns the peer's address from its checks).
//!
//! # Limitations
//! * Only the first `a=group:BUNDLE` is used. If the offerer's tagged section
//!   (the first mid of its group) is a data channel, the answer's BUNDLE group
//!   starts with the first accepted audio/video section instead (RFC 8843
//!   would have the answerer keep the tag); browsers put media first.
//! * `a=rid` restrictions (`pt=`, `max-width=` …) are parsed but not applied.
//! * The offer's `a=extmap-allow-mixed` is not echoed, so the peer uses
//!   one-byte header extensions.

mod answer;
mod codecs;
mod parse;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;

use crate::router::MediaKind;

pub use answer::{TRANSPORT_WIDE_CC_URI, answer};
pub use codecs::{
    CodecChoice, CodecSpec, RedundancySpec, SUPPORTED_CODECS, SUPPORTED_FEEDBACK,
    SUPPORTED_REDUNDANCY, assumed_codec,
};
pub use parse::parse_offer;

/// Largest SDP text accepted, in bytes.
pub const MAX_SDP_LEN: usize = 64 * 1024;
/// Most media sections (`m=` lines) accepted in one offer.
pub const MAX_MEDIA_SECTIONS: usize = 64;
/// Most lines accepted in the session part or in one media section.
pub const MAX_LINES_PER_SECTION: usize = 1000;

/// The protocol every audio/video section must use.
pub const WEBRTC_PROTOCOL: &str = "UDP/TLS/RTP/SAVPF";

/// A parsed offer, reduced to what the node needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The `o=` line's session id, as written.
    pub session_id: String,
    /// The peer's ICE username fragment (`a=ice-ufrag`).
    pub ice_ufrag: String,
    /// The peer's ICE password (`a=ice-pwd`).
    pub ice_pwd: String,
    /// The peer's DTLS certificate fingerprint as written in SDP,
    /// e.g. `"sha-256 AB:CD:…"`; parse it with `dtls::Fingerprint::parse`.
    pub fingerprint: String,
    /// The peer's DTLS role (`a=setup`); `Active` when absent (RFC 4145).
    pub setup: Setup,
    /// The mids of the first `a=group:BUNDLE`, in the offer's order.
    pub bundle: Vec<String>,
    /// Whether the peer is ICE-lite too (`a=ice-lite`).
    pub ice_lite: bool,
    /// Every media section, in offer order.
    pub media: Vec<MediaSection>,
}

/// A DTLS role as SDP states it (RFC 4145, RFC 5763).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Setup {
    /// Either role; what offers say.
    Actpass,
    /// DTLS client.
    Active,
    /// DTLS server.
    Passive,
}

impl Setup {
    /// The role the node takes in its answer to an offer saying `offer`:
    /// passive (DTLS server) unless the offerer insists on being passive.
    pub fn answer_for(offer: Setup) -> Setup {
        match offer {
            Setup::Passive => Setup::Active,
            Setup::Actpass | Setup::Active => Setup::Passive,
        }
    }

    /// The attribute value: `actpass`, `active` or `passive`.
    pub fn as_str(self) -> &'static str {
        match self {
            Setup::Actpass => "actpass",
            Setup::Active => "active",
            Setup::Passive => "passive",
        }
    }
}

impl fmt::Display for Setup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The media type of an `m=` line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SectionKind {
    /// `m=audio`.
    Audio,
    /// `m=video`.
    Video,
    /// `m=application` (data channels); always rejected.
    Application,
    /// Anything else, as written; always rejected.
    Other(String),
}

impl SectionKind {
    /// The router's media kind, for audio and video sections.
    pub fn media_kind(&self) -> Option<MediaKind> {
        match self {
            SectionKind::Audio => Some(MediaKind::Audio),
            SectionKind::Video => Some(MediaKind::Video),
            SectionKind::Application | SectionKind::Other(_) => None,
        }
    }

    /// The `m=` line's media token.
    pub fn as_str(&self) -> &str {
        match self {
            SectionKind::Audio => "audio",
            SectionKind::Video => "video",
            SectionKind::Application => "application",
            SectionKind::Other(s) => s,
        }
    }
}

/// One media section (`m=` line and its attributes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSection {
    /// `a=mid`; empty only in a section the offerer disabled (port 0).
    pub mid: String,
    /// The media type.
    pub kind: SectionKind,
    /// The `m=` line's port; 0 with no `a=bundle-only` means disabled.
    pub port: u16,
    /// The `m=` line's protocol, e.g. `UDP/TLS/RTP/SAVPF`.
    pub protocol: String,
    /// The `m=` line's formats as written (payload types for RTP sections).
    pub formats: Vec<String>,
    /// The offerer's direction; `SendRecv` when absent.
    pub direction: Direction,
    /// `a=rtcp-mux` present.
    pub rtcp_mux: bool,
    /// `a=rtcp-rsize` present (reduced-size RTCP, RFC 5506).
    pub rtcp_rsize: bool,
    /// `a=bundle-only` present.
    pub bundle_only: bool,
    /// The codecs with an `a=rtpmap`, in the `m=` line's order.
    pub codecs: Vec<Codec>,
    /// Header extensions (`a=extmap`), in offer order.
    pub extmap: Vec<Extmap>,
    /// `a=ssrc` lines, in offer order.
    pub ssrcs: Vec<SsrcLine>,
    /// `a=ssrc-group` lines, in offer order.
    pub ssrc_groups: Vec<SsrcGroup>,
    /// `a=rid` lines, in offer order.
    pub rids: Vec<Rid>,
    /// `a=simulcast`, if present.
    pub simulcast: Option<Simulcast>,
    /// `a=msid` value (`<stream id> <track id>`), if present.
    pub msid: Option<String>,
    /// `a=content` (RFC 4796) names `slides`: the section carries a
    /// presentation, which a publisher marks its screen share with.
    pub slides: bool,
}

impl MediaSection {
    /// Whether the offerer disabled this section: port 0 without
    /// `a=bundle-only`. Such a section is answered with port 0 too.
    pub fn is_disabled(&self) -> bool {
        self.port == 0 && !self.bundle_only
    }

    /// The publisher's media SSRCs from `a=ssrc` lines, in order of first
    /// appearance, without retransmission/FEC SSRCs (the second SSRC of each
    /// `FID` or `FEC-FR` group).
    pub fn media_ssrcs(&self) -> Vec<u32> {
        let repair: Vec<u32> = self
            .ssrc_groups
            .iter()
            .filter(|g| g.semantics == "FID" || g.semantics == "FEC-FR")
            .filter_map(|g| g.ssrcs.get(1).copied())
            .collect();
        let mut out: Vec<u32> = Vec::new();
        for line in &self.ssrcs {
            if !repair.contains(&line.ssrc) && !out.contains(&line.ssrc) {
                out.push(line.ssrc);
            }
        }
        out
    }

    /// Each `a=ssrc-group:FID` pair as (media SSRC, RTX SSRC), in offer
    /// order (RFC 4588 §8.1: the first SSRC is the original stream's).
    pub fn rtx_ssrcs(&self) -> Vec<(u32, u32)> {
        self.ssrc_groups
            .iter()
            .filter(|g| g.semantics == "FID")
            .filter_map(|g| match g.ssrcs.as_slice() {
                [media, rtx, ..] if media != rtx => Some((*media, *rtx)),
                _ => None,
            })
            .collect()
    }

    /// The offer's RTX payload type for the codec with payload type `apt`:
    /// an `rtx/<clock rate>` codec whose fmtp is `apt=<apt>` (RFC 4588
    /// §8.6).
    pub fn rtx_for(&self, apt: u8) -> Option<&Codec> {
        self.codecs.iter().find(|c| {
            c.name.eq_ignore_ascii_case("rtx")
                && c.fmtp.as_deref().is_some_and(|f| {
                    f.split(';').any(|p| {
                        p.split_once('=').is_some_and(|(k, v)| {
                            k.trim().eq_ignore_ascii_case("apt") && v.trim().parse() == Ok(apt)
                        })
                    })
                })
        })
    }
}

/// A media direction attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// `a=sendrecv`.
    SendRecv,
    /// `a=sendonly`.
    SendOnly,
    /// `a=recvonly`.
    RecvOnly,
    /// `a=inactive`.
    Inactive,
}

impl Direction {
    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// Whether the side that wrote this direction sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the side that wrote this direction receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A payload type with its `a=rtpmap`, `a=fmtp` and `a=rtcp-fb` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codec {
    /// The RTP payload type (0–127).
    pub payload_type: u8,
    /// The encoding name as written, e.g. `opus`, `VP8`, `rtx`.
    pub name: String,
    /// The RTP clock rate in Hz.
    pub clock_rate: u32,
    /// The channel count, when the rtpmap gives one.
    pub channels: Option<u8>,
    /// The `a=fmtp` parameters as written.
    pub fmtp: Option<String>,
    /// The `a=rtcp-fb` values for this payload type (and `*`), whitespace
    /// normalised, e.g. `nack pli`.
    pub rtcp_fb: Vec<String>,
}

/// An `a=extmap` header extension mapping (RFC 8285).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extmap {
    /// The local identifier (1–255).
    pub id: u8,
    /// The extension URI.
    pub uri: String,
    /// The optional direction after the id.
    pub direction: Option<Direction>,
}

/// An `a=ssrc:<ssrc> <attribute>[:<value>]` line (RFC 5576).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsrcLine {
    /// The SSRC.
    pub ssrc: u32,
    /// The attribute name, e.g. `cname`, `msid`.
    pub attribute: String,
    /// The value after the colon; empty when there is none.
    pub value: String,
}

/// An `a=ssrc-group` line (RFC 5576).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsrcGroup {
    /// The semantics, e.g. `FID` (RTX), `SIM`, `FEC-FR`.
    pub semantics: String,
    /// The SSRCs, in order.
    pub ssrcs: Vec<u32>,
}

/// An `a=rid` line (RFC 8851).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rid {
    /// The RTP stream id.
    pub id: String,
    /// Whether the offerer sends or receives this stream.
    pub direction: RidDirection,
    /// Everything after the direction (e.g. `pt=96;max-width=640`), as
    /// written; empty when absent.
    pub restrictions: String,
}

/// The direction of an `a=rid` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RidDirection {
    /// `send`.
    Send,
    /// `recv`.
    Recv,
}

/// An `a=simulcast` attribute (RFC 8853).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Simulcast {
    /// The streams the offerer sends; each stream lists its alternative rids.
    pub send: Vec<Vec<SimulcastRid>>,
    /// The streams the offerer receives.
    pub recv: Vec<Vec<SimulcastRid>>,
}

/// One rid in an `a=simulcast` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulcastRid {
    /// The rid.
    pub id: String,
    /// Written with a `~` prefix: the stream starts paused.
    pub paused: bool,
}

/// The node's side of the answer.
#[derive(Debug, Clone)]
pub struct AnswerParams<'a> {
    /// The node's ICE username fragment for this peer (4–256 ice-chars).
    pub ice_ufrag: &'a str,
    /// The node's ICE password for this peer (22–256 ice-chars).
    pub ice_pwd: &'a str,
    /// The node's certificate fingerprint as SDP writes it,
    /// `"sha-256 AB:CD:…"`.
    pub fingerprint: &'a str,
    /// The node's DTLS role: normally [`Setup::answer_for`] the offer's.
    pub setup: Setup,
    /// The worker's media address: the only (host, UDP) candidate.
    pub candidate: SocketAddr,
    /// The answer's `o=` session id.
    pub session_id: u64,
}

/// What the node will do with the peer's media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// The peer publishes (WHIP): the node receives every section the peer
    /// sends.
    Publish,
    /// The peer subscribes (WHEP). One entry per audio/video section of the
    /// offer, in offer order (sections the offerer disabled included; their
    /// entry is ignored): the stream the node sends in that section, or
    /// `None` to answer it inactive.
    Subscribe(Vec<Option<OutStream>>),
}

/// A stream the node sends to a subscriber in one section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutStream {
    /// The SSRC the node's consumer sends with.
    pub ssrc: u32,
    /// The RTCP CNAME announced for it.
    pub cname: String,
    /// The msid stream id (`MediaStream.id` at the receiver).
    pub stream_id: String,
    /// The msid track id.
    pub track_id: String,
    /// The codec the producer sends; the offer must include it.
    pub codec: CodecChoice,
    /// The SSRC the node retransmits this stream with (RFC 4588), used
    /// when the offer has an `rtx` codec for the stream's codec; the answer
    /// then announces it in an `a=ssrc-group:FID` with `ssrc`.
    pub rtx_ssrc: Option<u32>,
    /// Whether the stream's producer sends RED (RFC 2198) around its
    /// codec: the answer then keeps the offer's RED codec for it, if any
    /// ([`Negotiated::red_payload_type`]), and the node forwards RED
    /// unchanged; otherwise the node sends the primary blocks only.
    pub red: bool,
}

/// A rendered answer and what it agreed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The answer SDP, CRLF line endings.
    pub sdp: String,
    /// One entry per audio/video section the answer keeps (not disabled by
    /// the offerer), in offer order.
    pub sections: Vec<Negotiated>,
}

/// What was agreed for one audio/video section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The section's mid.
    pub mid: String,
    /// Audio or video.
    pub kind: MediaKind,
    /// The direction the answer states (the node's view).
    pub direction: Direction,
    /// Whether media flows: the node receives (publish) or sends (subscribe)
    /// in this section. `false` for sections answered `inactive`.
    pub accepted: bool,
    /// The offer's payload type of the chosen codec.
    pub payload_type: u8,
    /// The chosen codec.
    pub codec: CodecChoice,
    /// Accepted header extensions with the offer's ids (a subscribe answer
    /// negotiates the transport-wide sequence number only).
    pub extmap: Vec<(u8, String)>,
    /// The publisher's media SSRCs from `a=ssrc` lines, RTX/FEC excluded
    /// ([`MediaSection::media_ssrcs`]); empty for simulcast with rids only.
    pub remote_ssrcs: Vec<u32>,
    /// The simulcast rids the publisher will send, in the offer's order.
    pub rids: Vec<String>,
    /// The offer's RTX payload type for the chosen codec, when the answer
    /// accepted retransmission (RFC 4588): a publisher then retransmits
    /// with it, and the node retransmits to a subscriber with it.
    pub rtx_payload_type: Option<u8>,
    /// The publisher's (media SSRC, RTX SSRC) pairs from
    /// `a=ssrc-group:FID` (publish only, when RTX was accepted).
    pub rtx_ssrcs: Vec<(u32, u32)>,
    /// The offer's RED payload type (RFC 2198) around the chosen codec,
    /// when the answer kept it ([`SUPPORTED_REDUNDANCY`]): a publisher
    /// may send RED with it, and the node forwards RED to a subscriber
    /// with it ([`OutStream::red`]).
    pub red_payload_type: Option<u8>,
    /// The offer's section is marked `a=content:slides` (RFC 4796): a
    /// publisher's screen share ([`MediaSection::slides`]).
    pub slides: bool,
}

/// Why an offer was refused or an answer could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdpError {
    /// The text is longer than [`MAX_SDP_LEN`].
    #[error("SDP is larger than {MAX_SDP_LEN} bytes")]
    TooLarge,
    /// More than [`MAX_MEDIA_SECTIONS`] media sections.
    #[error("SDP has more than {MAX_MEDIA_SECTIONS} media sections")]
    TooManySections,
    /// More than [`MAX_LINES_PER_SECTION`] lines in one section.
    #[error("an SDP section has more than {MAX_LINES_PER_SECTION} lines")]
    TooManyLines,
    /// The first line is not `v=0`.
    #[error("not an SDP: the first line must be v=0")]
    NotSdp,
    /// A line is malformed (`line` counts from 1; 0 means the whole text).
    #[error("malformed SDP at line {line}: {reason}")]
    Malformed {
        /// The 1-based line number, or 0 for the whole text.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// `a=ice-ufrag` or `a=ice-pwd` is missing.
    #[error("missing a=ice-ufrag or a=ice-pwd (ICE credentials)")]
    MissingIceCredentials,
    /// `a=fingerprint` is missing at session and media level.
    #[error("missing a=fingerprint (DTLS certificate fingerprint)")]
    MissingFingerprint,
    /// An enabled media section has no `a=mid`.
    #[error("media section {index} has no a=mid")]
    MissingMid {
        /// The 0-based index of the section.
        index: usize,
    },
    /// Two sections share a mid.
    #[error("two media sections have a=mid:{mid}")]
    DuplicateMid {
        /// The repeated mid.
        mid: String,
    },
    /// There is no `a=group:BUNDLE`.
    #[error("no a=group:BUNDLE: this server carries all media on one transport")]
    NoBundle,
    /// An audio/video section is not in the BUNDLE group.
    #[error("media section {mid} is not in the BUNDLE group")]
    NotBundled {
        /// The section's mid.
        mid: String,
    },
    /// Bundled sections disagree on ICE credentials, fingerprint or setup.
    #[error("bundled media sections disagree on ICE credentials, fingerprint or setup")]
    BundleMismatch,
    /// An audio/video section lacks `a=rtcp-mux`.
    #[error("media section {mid} has no a=rtcp-mux: RTP and RTCP must share one port")]
    NoRtcpMux {
        /// The section's mid.
        mid: String,
    },
    /// An audio/video section's protocol is not [`WEBRTC_PROTOCOL`].
    #[error("media section {mid} uses {protocol}; only UDP/TLS/RTP/SAVPF is supported")]
    UnsupportedProtocol {
        /// The section's mid.
        mid: String,
        /// The protocol offered.
        protocol: String,
    },
    /// The offer has no enabled audio or video section.
    #[error("the offer has no audio or video section")]
    NoMedia,
    /// An audio/video section offers no codec the node forwards.
    #[error(
        "media section {mid} offers no supported codec (audio: opus/48000/2; video: VP8, or H264 \
         constrained baseline with packetization-mode=1)"
    )]
    NoSupportedCodec {
        /// The section's mid.
        mid: String,
    },
    /// A subscribe section does not offer the codec of the stream to send.
    #[error("media section {mid} does not offer {codec}, the codec of the stream to send")]
    CodecNotOffered {
        /// The section's mid.
        mid: String,
        /// The producer's codec.
        codec: CodecChoice,
    },
    /// A publish offer in which no section sends media.
    #[error("nothing to publish: every media section is recvonly or inactive")]
    NothingPublished,
    /// The offer is ICE-lite too.
    #[error("the offer is ICE-lite; one side must be a full ICE agent")]
    BothIceLite,
    /// The answer's setup role is not a valid answer to the offer's.
    #[error("a=setup:{answer} is not a valid answer to a=setup:{offer}")]
    SetupConflict {
        /// The offer's role.
        offer: Setup,
        /// The role the caller asked for.
        answer: Setup,
    },
    /// A subscribe intent lists a different number of streams than the
    /// offer has audio/video sections.
    #[error("the offer has {sections} audio/video sections but {given} streams were given")]
    IntentMismatch {
        /// Audio/video sections in the offer.
        sections: usize,
        /// Entries in the intent.
        given: usize,
    },
    /// A parameter of the node's side is not valid in SDP (caller bug).
    #[error("invalid answer parameter: {0}")]
    InvalidParam(&'static str),
}

impl SdpError {
    /// A stable, lower-case label for metrics and API error codes.
    pub fn as_str(&self) -> &'static str {
        match self {
            SdpError::TooLarge => "too_large",
            SdpError::TooManySections => "too_many_sections",
            SdpError::TooManyLines => "too_many_lines",
            SdpError::NotSdp => "not_sdp",
            SdpError::Malformed { .. } => "malformed",
            SdpError::MissingIceCredentials => "missing_ice_credentials",
            SdpError::MissingFingerprint => "missing_fingerprint",
            SdpError::MissingMid { .. } => "missing_mid",
            SdpError::DuplicateMid { .. } => "duplicate_mid",
            SdpError::NoBundle => "no_bundle",
            SdpError::NotBundled { .. } => "not_bundled",
            SdpError::BundleMismatch => "bundle_mismatch",
            SdpError::NoRtcpMux { .. } => "no_rtcp_mux",
            SdpError::UnsupportedProtocol { .. } => "unsupported_protocol",
            SdpError::NoMedia => "no_media",
            SdpError::NoSupportedCodec { .. } => "no_supported_codec",
            SdpError::CodecNotOffered { .. } => "codec_not_offered",
            SdpError::NothingPublished => "nothing_published",
            SdpError::BothIceLite => "both_ice_lite",
            SdpError::SetupConflict { .. } => "setup_conflict",
            SdpError::IntentMismatch { .. } => "intent_mismatch",
            SdpError::InvalidParam(_) => "invalid_param",
        }
    }
}

/// ICE credential characters (RFC 8839 ice-char: ALPHA / DIGIT / "+" / "/").
fn is_ice_chars(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// A valid ICE username fragment (RFC 8839: 4–256 ice-chars).
fn valid_ufrag(s: &str) -> bool {
    (4..=256).contains(&s.len()) && is_ice_chars(s)
}

/// A valid ICE password (RFC 8839: 22–256 ice-chars).
fn valid_pwd(s: &str) -> bool {
    (22..=256).contains(&s.len()) && is_ice_chars(s)
}

/// A plausible `a=fingerprint` value: `<hash-func> <HH:HH:…>`.
fn valid_fingerprint(s: &str) -> bool {
    let Some((alg, hex)) = s.split_once(' ') else {
        return false;
    };
    !alg.is_empty()
        && alg.len() <= 16
        && alg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !hex.is_empty()
        && hex.len() <= 3 * 64
        && hex
            .split(':')
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}
