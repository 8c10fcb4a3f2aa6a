//! The SDP offer parser, and on a parsed offer the answer builder for a
//! publisher and for a subscriber receiving one stream per section.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sfu_core::router::MediaKind;
use sfu_core::sdp::{AnswerParams, CodecChoice, Intent, OutStream, Setup, answer, parse_offer};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(offer) = parse_offer(text) else {
        return;
    };
    let params = AnswerParams {
        ice_ufrag: "sfuU",
        ice_pwd: "abcdefghijklmnopqrstuvwx",
        fingerprint: "sha-256 27:A0:AE:B3:FE:E9:23:2F:8A:F2:21:1F:9E:E4:91:C5:B1:0B:EC:B5:56:3B:FC:1E:6F:93:42:7E:CB:C8:FE:29",
        setup: Setup::answer_for(offer.setup),
        candidate: "203.0.113.7:40000".parse().expect("literal address"),
        session_id: 42,
    };
    let _ = answer(&offer, &params, &Intent::Publish);
    // One stream per audio/video section; video codec by the input's length.
    let video = if data.len().is_multiple_of(2) {
        CodecChoice::Vp8
    } else {
        CodecChoice::H264
    };
    let streams = offer
        .media
        .iter()
        .filter_map(|s| s.kind.media_kind())
        .enumerate()
        .map(|(i, kind)| {
            (i % 3 != 2).then(|| OutStream {
                ssrc: 1000 + i as u32,
                cname: "sfu".to_owned(),
                stream_id: "room".to_owned(),
                track_id: format!("track-{i}"),
                codec: match kind {
                    MediaKind::Audio => CodecChoice::Opus,
                    MediaKind::Video => video,
                },
                // Every other stream offers an RTX SSRC.
                rtx_ssrc: (i % 2 == 0).then_some(5000 + i as u32),
                red: i % 4 < 2,
            })
        })
        .collect();
    let _ = answer(&offer, &params, &Intent::Subscribe(streams));
});
