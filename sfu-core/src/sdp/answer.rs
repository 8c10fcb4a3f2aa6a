//! Answer generation: per section, decide codec and direction for the
//! intent, then render the answer text.

use std::fmt::Write as _;

use super::codecs::{SUPPORTED_FEEDBACK, preferences, red_for};
use super::{
    Answer, AnswerParams, Codec, CodecChoice, Direction, Intent, MediaSection, Negotiated, Offer,
    OutStream, RidDirection, SdpError, Setup, SimulcastRid, WEBRTC_PROTOCOL, valid_fingerprint,
    valid_pwd, valid_ufrag,
};
use crate::router::MediaKind;

/// Header extensions a publish answer accepts (with the offer's ids).
pub(super) const SUPPORTED_EXTENSIONS: [&str; 6] = [
    "urn:ietf:params:rtp-hdrext:sdes:mid",
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    TRANSPORT_WIDE_CC_URI,
    "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
];

/// The transport-wide sequence number extension: the node answers it with
/// transport-cc feedback ([`crate::twcc`]).
pub const TRANSPORT_WIDE_CC_URI: &str =
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";

/// Builds the node's answer to `offer` for `intent`.
///
/// Every audio/video section gets one supported codec (the offer's payload
/// type is kept), `a=rtcp-mux`, the node's ICE credentials and fingerprint,
/// and a direction: for [`Intent::Publish`] `recvonly` where the offer sends
/// and `inactive` elsewhere; for [`Intent::Subscribe`] `sendonly` where a
/// stream is given and the offer can receive, `inactive` elsewhere.
/// Data-channel and other sections, and sections the offerer disabled, are
/// answered with port 0 and left out of BUNDLE. The first bundled section
/// carries the node's single host candidate and `a=end-of-candidates`.
///
/// A subscribe answer negotiates one header extension at most: the
/// transport-wide sequence number, with the offer's id, together with
/// `transport-cc` feedback, when offered on a sending section. The node then
/// numbers every packet it sends the subscriber and estimates the
/// subscriber's bandwidth from the feedback ([`crate::bwe`]); the forwarded
/// copies carry only that element (the publisher's extensions, whose ids
/// mean nothing to the subscriber, are not copied). Without it, copies keep
/// the publisher's extensions, which a receiver that negotiated none
/// ignores.
///
/// Retransmission (RFC 4588): where the offer has an `rtx` codec whose
/// `apt` is the chosen codec, the answer keeps it (`a=rtpmap` and
/// `a=fmtp:<rtx> apt=<pt>`, with the offer's numbers) together with
/// generic `nack`: a publisher retransmits what the node NACKs, and the
/// node answers a subscriber's NACKs from its packet cache on the stream's
/// RTX SSRC ([`OutStream::rtx_ssrc`]). Without RTX a subscribe answer
/// leaves generic `nack` out (the node never resends on the original SSRC,
/// which would reuse an SRTP packet index), so the subscriber asks for a
/// keyframe instead of waiting for a repair that cannot come.
///
/// Redundancy (RED, RFC 2198, [`super::SUPPORTED_REDUNDANCY`]): where the
/// offer has a RED codec whose blocks are all the chosen codec, a publish
/// answer keeps it (`a=rtpmap` and the offer's `a=fmtp`, with the offer's
/// numbers) and a subscribe answer keeps it when the stream's producer
/// sends RED ([`OutStream::red`]). It is listed first on the `m=` line:
/// libwebrtc sends RED only when it precedes the codec it wraps.
///
/// Fails when a section has no supported codec, a subscribe section lacks
/// the stream's codec, a publish offer sends nothing, the offer is ICE-lite,
/// `params.setup` does not answer the offer's setup, the subscribe intent's
/// length differs from the number of audio/video sections, or a parameter is
/// not valid in SDP.
pub fn answer(
    offer: &Offer,
    params: &AnswerParams<'_>,
    intent: &Intent,
) -> Result<Answer, SdpError> {
    check_params(offer, params)?;
    if offer.ice_lite {
        return Err(SdpError::BothIceLite);
    }
    if let Intent::Subscribe(streams) = intent {
        let sections = offer
            .media
            .iter()
            .filter(|s| s.kind.media_kind().is_some())
            .count();
        if streams.len() != sections {
            return Err(SdpError::IntentMismatch {
                sections,
                given: streams.len(),
            });
        }
        streams.iter().flatten().try_for_each(check_stream)?;
    }

    let mut plans: Vec<Option<Plan<'_>>> = Vec::with_capacity(offer.media.len());
    let mut av_index = 0usize;
    for section in &offer.media {
        let Some(kind) = section.kind.media_kind() else {
            plans.push(None);
            continue;
        };
        let stream = match intent {
            Intent::Publish => None,
            Intent::Subscribe(streams) => streams.get(av_index).and_then(Option::as_ref),
        };
        av_index += 1;
        if section.is_disabled() {
            plans.push(None);
            continue;
        }
        plans.push(Some(plan(section, kind, intent, stream)?));
    }
    if matches!(intent, Intent::Publish) && !plans.iter().flatten().any(|p| p.negotiated.accepted) {
        return Err(SdpError::NothingPublished);
    }

    let sdp = render(offer, params, &plans);
    let sections = plans.into_iter().flatten().map(|p| p.negotiated).collect();
    Ok(Answer { sdp, sections })
}

/// What the answer says in one kept audio/video section.
struct Plan<'o> {
    section: &'o MediaSection,
    codec: &'o Codec,
    rtx: Option<&'o Codec>,
    red: Option<&'o Codec>,
    feedback: Vec<&'o str>,
    stream: Option<&'o OutStream>,
    simulcast: Vec<Vec<&'o SimulcastRid>>,
    negotiated: Negotiated,
}

fn plan<'o>(
    section: &'o MediaSection,
    kind: MediaKind,
    intent: &Intent,
    stream: Option<&'o OutStream>,
) -> Result<Plan<'o>, SdpError> {
    let publish = matches!(intent, Intent::Publish);
    let preferred = || {
        preferences(kind)
            .find_map(|choice| find_codec(section, choice).map(|c| (choice, c)))
            .ok_or_else(|| SdpError::NoSupportedCodec {
                mid: section.mid.clone(),
            })
    };
    let (direction, (choice, codec), stream) = if publish {
        let direction = if section.direction.sends() {
            Direction::RecvOnly
        } else {
            Direction::Inactive
        };
        (direction, preferred()?, None)
    } else {
        match stream {
            Some(stream) if section.direction.receives() => {
                let codec =
                    find_codec(section, stream.codec).ok_or_else(|| SdpError::CodecNotOffered {
                        mid: section.mid.clone(),
                        codec: stream.codec,
                    })?;
                (Direction::SendOnly, (stream.codec, codec), Some(stream))
            }
            _ => (Direction::Inactive, preferred()?, None),
        }
    };

    let mut extmap: Vec<(u8, String)> = Vec::new();
    for ext in &section.extmap {
        let wanted = if publish {
            SUPPORTED_EXTENSIONS.contains(&ext.uri.as_str())
        } else {
            // The node's egress numbering, where the node sends.
            stream.is_some() && ext.uri == TRANSPORT_WIDE_CC_URI && (1..=14).contains(&ext.id)
        };
        if wanted
            && ext.direction != Some(Direction::Inactive)
            && !extmap.iter().any(|(id, _)| *id == ext.id)
        {
            extmap.push((ext.id, ext.uri.clone()));
        }
    }
    let twcc = extmap.iter().any(|(_, uri)| uri == TRANSPORT_WIDE_CC_URI);
    let offers_nack = codec.rtcp_fb.iter().any(|fb| fb == "nack");
    // RTX needs generic NACK to mean anything, and a subscriber needs the
    // node's RTX SSRC to receive it.
    let rtx = section
        .rtx_for(codec.payload_type)
        .filter(|_| offers_nack && (publish || stream.is_some_and(|s| s.rtx_ssrc.is_some())));
    // A subscriber gets RED only from a producer that sends it.
    let red = red_for(&section.codecs, choice, codec.payload_type)
        .filter(|_| publish || stream.is_some_and(|s| s.red));
    let feedback: Vec<&str> = codec
        .rtcp_fb
        .iter()
        .map(String::as_str)
        .filter(|fb| SUPPORTED_FEEDBACK.contains(fb))
        .filter(|&fb| fb != "transport-cc" || twcc)
        // A subscriber that negotiated generic NACK waits for
        // retransmissions before asking for a keyframe: offered only where
        // the node can retransmit (RTX). A publisher is NACKed either way.
        .filter(|&fb| fb != "nack" || publish || rtx.is_some())
        .collect();

    // Simulcast: the offer's send streams whose rids are declared `send`.
    let mut simulcast: Vec<Vec<&SimulcastRid>> = Vec::new();
    if publish
        && direction == Direction::RecvOnly
        && let Some(offered) = &section.simulcast
    {
        for stream in &offered.send {
            let kept: Vec<&SimulcastRid> = stream
                .iter()
                .filter(|alt| {
                    section
                        .rids
                        .iter()
                        .any(|r| r.id == alt.id && r.direction == RidDirection::Send)
                })
                .filter(|alt| !simulcast.iter().flatten().any(|k| k.id == alt.id))
                .collect();
            if !kept.is_empty() {
                simulcast.push(kept);
            }
        }
    }
    let rids = simulcast.iter().flatten().map(|r| r.id.clone()).collect();

    let rtx_ssrcs = match rtx {
        Some(_) if publish => section.rtx_ssrcs(),
        _ => Vec::new(),
    };
    Ok(Plan {
        section,
        codec,
        rtx,
        red,
        feedback,
        stream,
        simulcast,
        negotiated: Negotiated {
            mid: section.mid.clone(),
            kind,
            direction,
            accepted: direction != Direction::Inactive,
            payload_type: codec.payload_type,
            codec: choice,
            extmap,
            remote_ssrcs: section.media_ssrcs(),
            rids,
            rtx_payload_type: rtx.map(|c| c.payload_type),
            rtx_ssrcs,
            red_payload_type: red.map(|c| c.payload_type),
            slides: section.slides,
        },
    })
}

/// The first codec of the section (offer order) that is `choice`.
fn find_codec(section: &MediaSection, choice: CodecChoice) -> Option<&Codec> {
    section.codecs.iter().find(|c| choice.matches(c))
}

fn check_params(offer: &Offer, params: &AnswerParams<'_>) -> Result<(), SdpError> {
    if !valid_ufrag(params.ice_ufrag) {
        return Err(SdpError::InvalidParam("ice_ufrag"));
    }
    if !valid_pwd(params.ice_pwd) {
        return Err(SdpError::InvalidParam("ice_pwd"));
    }
    if !valid_fingerprint(params.fingerprint) {
        return Err(SdpError::InvalidParam("fingerprint"));
    }
    let compatible = matches!(
        (offer.setup, params.setup),
        (Setup::Actpass, Setup::Active | Setup::Passive)
            | (Setup::Active, Setup::Passive)
            | (Setup::Passive, Setup::Active)
    );
    if !compatible {
        return Err(SdpError::SetupConflict {
            offer: offer.setup,
            answer: params.setup,
        });
    }
    Ok(())
}

fn check_stream(stream: &OutStream) -> Result<(), SdpError> {
    let visible = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_graphic())
    };
    if !visible(&stream.cname, 255) {
        return Err(SdpError::InvalidParam("cname"));
    }
    if !visible(&stream.stream_id, 64) {
        return Err(SdpError::InvalidParam("stream_id"));
    }
    if !visible(&stream.track_id, 64) {
        return Err(SdpError::InvalidParam("track_id"));
    }
    Ok(())
}

/// Appends one line and CRLF. Writing into a `String` cannot fail.
macro_rules! sdp_line {
    ($out:expr, $($arg:tt)*) => {{
        let _ = write!($out, $($arg)*);
        $out.push_str("\r\n");
    }};
}

fn render(offer: &Offer, params: &AnswerParams<'_>, plans: &[Option<Plan<'_>>]) -> String {
    let mut out = String::with_capacity(1024 + 768 * plans.len());
    sdp_line!(out, "v=0");
    sdp_line!(out, "o=- {} 2 IN IP4 127.0.0.1", params.session_id);
    sdp_line!(out, "s=-");
    sdp_line!(out, "t=0 0");
    sdp_line!(out, "a=ice-lite");
    out.push_str("a=group:BUNDLE");
    for plan in plans.iter().flatten() {
        out.push(' ');
        out.push_str(&plan.section.mid);
    }
    out.push_str("\r\n");
    sdp_line!(out, "a=msid-semantic: WMS *");

    let mut first_bundled = true;
    for (section, plan) in offer.media.iter().zip(plans) {
        let Some(plan) = plan else {
            let format = section.formats.first().map_or("0", String::as_str);
            sdp_line!(
                out,
                "m={} 0 {} {}",
                section.kind.as_str(),
                section.protocol,
                format
            );
            sdp_line!(out, "c=IN IP4 0.0.0.0");
            if !section.mid.is_empty() {
                sdp_line!(out, "a=mid:{}", section.mid);
            }
            continue;
        };
        let codec = plan.codec;
        let pt = codec.payload_type;
        let _ = write!(out, "m={} 9 {}", section.kind.as_str(), WEBRTC_PROTOCOL);
        // RED before the codec it wraps (see `answer`), RTX last.
        for format in [plan.red, Some(codec), plan.rtx].into_iter().flatten() {
            let _ = write!(out, " {}", format.payload_type);
        }
        out.push_str("\r\n");
        sdp_line!(out, "c=IN IP4 0.0.0.0");
        sdp_line!(out, "a=mid:{}", section.mid);
        sdp_line!(out, "a=ice-ufrag:{}", params.ice_ufrag);
        sdp_line!(out, "a=ice-pwd:{}", params.ice_pwd);
        sdp_line!(out, "a=fingerprint:{}", params.fingerprint);
        sdp_line!(out, "a=setup:{}", params.setup);
        sdp_line!(out, "a=rtcp-mux");
        if section.rtcp_rsize {
            sdp_line!(out, "a=rtcp-rsize");
        }
        sdp_line!(out, "a={}", plan.negotiated.direction);
        match codec.channels {
            Some(channels) => sdp_line!(
                out,
                "a=rtpmap:{pt} {}/{}/{channels}",
                codec.name,
                codec.clock_rate
            ),
            None => sdp_line!(out, "a=rtpmap:{pt} {}/{}", codec.name, codec.clock_rate),
        }
        if plan.negotiated.codec.spec().answer_fmtp
            && let Some(fmtp) = codec.fmtp.as_deref().filter(|f| !f.is_empty())
        {
            sdp_line!(out, "a=fmtp:{pt} {fmtp}");
        }
        for fb in &plan.feedback {
            sdp_line!(out, "a=rtcp-fb:{pt} {fb}");
        }
        if let Some(rtx) = plan.rtx {
            let rtx_pt = rtx.payload_type;
            sdp_line!(out, "a=rtpmap:{rtx_pt} rtx/{}", rtx.clock_rate);
            sdp_line!(out, "a=fmtp:{rtx_pt} apt={pt}");
        }
        if let Some(red) = plan.red {
            let red_pt = red.payload_type;
            let blocks = red.fmtp.as_deref().unwrap_or_default().trim();
            match red.channels {
                Some(n) => sdp_line!(out, "a=rtpmap:{red_pt} {}/{}/{n}", red.name, red.clock_rate),
                None => sdp_line!(out, "a=rtpmap:{red_pt} {}/{}", red.name, red.clock_rate),
            }
            sdp_line!(out, "a=fmtp:{red_pt} {blocks}");
        }
        for (id, uri) in &plan.negotiated.extmap {
            sdp_line!(out, "a=extmap:{id} {uri}");
        }
        if let Some(stream) = plan.stream {
            let (ssrc, sid, tid) = (stream.ssrc, &stream.stream_id, &stream.track_id);
            sdp_line!(out, "a=msid:{sid} {tid}");
            let rtx_ssrc = stream.rtx_ssrc.filter(|_| plan.rtx.is_some());
            if let Some(rtx_ssrc) = rtx_ssrc {
                sdp_line!(out, "a=ssrc-group:FID {ssrc} {rtx_ssrc}");
            }
            sdp_line!(out, "a=ssrc:{ssrc} cname:{}", stream.cname);
            sdp_line!(out, "a=ssrc:{ssrc} msid:{sid} {tid}");
            if let Some(rtx_ssrc) = rtx_ssrc {
                sdp_line!(out, "a=ssrc:{rtx_ssrc} cname:{}", stream.cname);
                sdp_line!(out, "a=ssrc:{rtx_ssrc} msid:{sid} {tid}");
            }
        }
        if !plan.simulcast.is_empty() {
            for rid in plan.simulcast.iter().flatten() {
                sdp_line!(out, "a=rid:{} recv", rid.id);
            }
            out.push_str("a=simulcast:recv ");
            for (i, stream) in plan.simulcast.iter().enumerate() {
                if i > 0 {
                    out.push(';');
                }
                for (j, rid) in stream.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    if rid.paused {
                        out.push('~');
                    }
                    out.push_str(&rid.id);
                }
            }
            out.push_str("\r\n");
        }
        if first_bundled {
            first_bundled = false;
            let (ip, port) = (params.candidate.ip(), params.candidate.port());
            sdp_line!(out, "a=candidate:1 1 udp 2130706431 {ip} {port} typ host");
            sdp_line!(out, "a=end-of-candidates");
        }
    }
    out
}
