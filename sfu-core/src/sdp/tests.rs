//! Offers as Chrome and Firefox write them, answers, every rejection, and
//! random mutations that must never panic.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

const CHROME: &str = include_str!("fixtures/chrome_publish.sdp");
const CHROME_SIMULCAST: &str = include_str!("fixtures/chrome_simulcast.sdp");
const FIREFOX: &str = include_str!("fixtures/firefox_publish.sdp");

const OUR_FINGERPRINT: &str = "sha-256 27:A0:AE:B3:FE:E9:23:2F:8A:F2:21:1F:9E:E4:91:C5:B1:0B:EC:B5:56:3B:FC:1E:6F:93:42:7E:CB:C8:FE:29";

const CHROME_VIDEO_M_LINE: &str = "m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 104 105 106 107 108 109 127 125 39 40 45 46 98 99 100 101 112 113 116 117 118";

fn params() -> AnswerParams<'static> {
    AnswerParams {
        ice_ufrag: "sfuU",
        ice_pwd: "abcdefghijklmnopqrstuvwx",
        fingerprint: OUR_FINGERPRINT,
        setup: Setup::Passive,
        candidate: "203.0.113.7:40000".parse().expect("literal address"),
        session_id: 42,
    }
}

fn crlf(text: &str) -> String {
    text.replace('\n', "\r\n")
}

/// `text` without the lines starting with `prefix`.
fn without(text: &str, prefix: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with(prefix))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The lines of the answer's media section with `a=mid:<mid>`.
fn section<'a>(sdp: &'a str, mid: &str) -> Vec<&'a str> {
    let mut sections: Vec<Vec<&str>> = Vec::new();
    for line in sdp.split("\r\n") {
        if line.starts_with("m=") {
            sections.push(Vec::new());
        }
        if let Some(current) = sections.last_mut() {
            current.push(line);
        }
    }
    let wanted = format!("a=mid:{mid}");
    sections
        .into_iter()
        .find(|s| s.contains(&wanted.as_str()))
        .unwrap_or_default()
}

fn stream(ssrc: u32, codec: CodecChoice) -> OutStream {
    OutStream {
        ssrc,
        cname: "sfu-node".to_owned(),
        stream_id: "room-7".to_owned(),
        track_id: format!("track-{ssrc}"),
        codec,
        rtx_ssrc: None,
        red: false,
    }
}

/// A WHEP offer: Chrome with recvonly transceivers (no SSRCs).
fn chrome_whep() -> String {
    without(CHROME, "a=ssrc").replace("a=sendonly", "a=recvonly")
}

fn label<T: std::fmt::Debug>(result: Result<T, SdpError>) -> &'static str {
    match result {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.as_str(),
    }
}

#[test]
fn parses_chrome_offer() {
    let offer = parse_offer(&crlf(CHROME)).expect("chrome offer parses");
    assert_eq!(offer.session_id, "4611731400430051336");
    assert_eq!(offer.ice_ufrag, "Xk4p");
    assert_eq!(offer.ice_pwd, "9bG0uK2fQ7sH1nL5mR3tV8wY");
    assert!(offer.fingerprint.starts_with("sha-256 A5:4D:CA:18"));
    assert_eq!(offer.setup, Setup::Actpass);
    assert_eq!(offer.bundle, ["0", "1"]);
    assert!(!offer.ice_lite);
    assert_eq!(offer.media.len(), 2);

    let audio = &offer.media[0];
    assert_eq!(
        (audio.mid.as_str(), &audio.kind),
        ("0", &SectionKind::Audio)
    );
    assert_eq!(audio.direction, Direction::SendOnly);
    assert!(audio.rtcp_mux && audio.rtcp_rsize);
    assert_eq!(audio.codecs.len(), 8);
    assert_eq!(
        audio.codecs[0],
        Codec {
            payload_type: 111,
            name: "opus".to_owned(),
            clock_rate: 48_000,
            channels: Some(2),
            fmtp: Some("minptime=10;useinbandfec=1".to_owned()),
            rtcp_fb: vec!["transport-cc".to_owned()],
        }
    );
    assert_eq!(audio.extmap.len(), 4);
    assert_eq!(audio.media_ssrcs(), [1_001_234_567]);
    assert_eq!(
        audio.msid.as_deref(),
        Some("3f5c1c8e-7a47-4d3a-9b1e-2a6f8b0e9c11 8a1b6c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d")
    );

    let video = &offer.media[1];
    assert_eq!(video.kind, SectionKind::Video);
    assert_eq!(video.codecs.len(), 25);
    let pts: Vec<u8> = video
        .codecs
        .iter()
        .take(4)
        .map(|c| c.payload_type)
        .collect();
    assert_eq!(pts, [96, 97, 102, 103]);
    assert_eq!(
        video.codecs[0].rtcp_fb,
        ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"]
    );
    assert_eq!(video.extmap.len(), 11);
    assert_eq!(
        video.ssrc_groups,
        [SsrcGroup {
            semantics: "FID".to_owned(),
            ssrcs: vec![2_233_445_566, 3_344_556_677]
        }]
    );
    assert_eq!(video.ssrcs.len(), 4);
    assert_eq!(video.ssrcs[0].attribute, "cname");
    assert_eq!(video.ssrcs[0].value, "yV4sV+q2pG1Vn3Xh");
    assert_eq!(video.media_ssrcs(), [2_233_445_566]);
}

#[test]
fn lf_and_crlf_parse_the_same() {
    assert_eq!(parse_offer(CHROME), parse_offer(&crlf(CHROME)));
    assert!(parse_offer(CHROME).is_ok());
}

#[test]
fn parses_firefox_offer_with_session_level_fingerprint() {
    let offer = parse_offer(FIREFOX).expect("firefox offer parses");
    assert_eq!(offer.session_id, "5017395946587355585");
    assert!(offer.fingerprint.starts_with("sha-256 34:60:BE"));
    assert_eq!(offer.ice_ufrag, "7e3f1a2b");
    assert_eq!(offer.ice_pwd, "a3c2f8f4e5d6b7a8c9d0e1f2a3b4c5d6");
    let audio = &offer.media[0];
    assert_eq!(audio.extmap[1].direction, Some(Direction::RecvOnly));
    assert_eq!(audio.codecs[0].payload_type, 109);
    assert_eq!(audio.codecs[4].channels, Some(1));
    // The FID group comes after the ssrc lines: RTX still excluded.
    assert_eq!(offer.media[1].media_ssrcs(), [1_690_360_370]);
    assert_eq!(offer.media[1].codecs[0].rtcp_fb.len(), 5);
}

#[test]
fn publish_answer_to_chrome() {
    let offer = parse_offer(&crlf(CHROME)).expect("chrome offer parses");
    let answer = answer(&offer, &params(), &Intent::Publish).expect("answer");
    let [audio, video] = answer.sections.as_slice() else {
        panic!("two sections expected: {:?}", answer.sections);
    };
    assert_eq!((audio.mid.as_str(), audio.kind), ("0", MediaKind::Audio));
    assert_eq!((audio.payload_type, audio.codec), (111, CodecChoice::Opus));
    assert!(audio.accepted);
    assert_eq!(audio.direction, Direction::RecvOnly);
    assert_eq!(audio.remote_ssrcs, [1_001_234_567]);
    let ids: Vec<u8> = audio.extmap.iter().map(|e| e.0).collect();
    // Id 3 is transport-wide-cc, answered with feedback.
    assert_eq!(ids, [1, 2, 3, 4]);

    assert_eq!((video.payload_type, video.codec), (96, CodecChoice::Vp8));
    assert_eq!(video.remote_ssrcs, [2_233_445_566], "RTX SSRC excluded");
    assert!(video.rids.is_empty());
    // RTX for VP8 (apt=96) accepted, with the publisher's FID pair.
    assert_eq!(video.rtx_payload_type, Some(97));
    assert_eq!(video.rtx_ssrcs, [(2_233_445_566, 3_344_556_677)]);
    assert_eq!(audio.rtx_payload_type, None);
    // Chrome's RED around Opus (63, fmtp 111/111) is kept; video RED not.
    assert_eq!(audio.red_payload_type, Some(63));
    assert_eq!(video.red_payload_type, None);
    let ids: Vec<u8> = video.extmap.iter().map(|e| e.0).collect();
    assert_eq!(ids, [2, 3, 4, 10, 11]);

    let sdp = &answer.sdp;
    assert!(sdp.starts_with("v=0\r\no=- 42 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=ice-lite\r\n"));
    assert!(sdp.ends_with("\r\n"));
    assert!(!sdp.replace("\r\n", "").contains(['\r', '\n']), "CRLF only");
    assert!(sdp.contains("\r\na=group:BUNDLE 0 1\r\n"));
    for unwanted in [
        "red/90000",
        "ulpfec",
        "VP9",
        "AV1",
        "H264",
        "toffset",
        "playout-delay",
    ] {
        assert!(!sdp.contains(unwanted), "{unwanted} in answer:\n{sdp}");
    }
    assert_eq!(sdp.matches("a=candidate:").count(), 1);

    let audio_lines = section(sdp, "0");
    for expected in [
        // RED first: libwebrtc sends RED only when it precedes Opus.
        "m=audio 9 UDP/TLS/RTP/SAVPF 63 111",
        "c=IN IP4 0.0.0.0",
        "a=ice-ufrag:sfuU",
        "a=ice-pwd:abcdefghijklmnopqrstuvwx",
        &format!("a=fingerprint:{OUR_FINGERPRINT}"),
        "a=setup:passive",
        "a=rtcp-mux",
        "a=rtcp-rsize",
        "a=recvonly",
        "a=rtpmap:111 opus/48000/2",
        "a=fmtp:111 minptime=10;useinbandfec=1",
        "a=rtpmap:63 red/48000/2",
        "a=fmtp:63 111/111",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
        "a=rtcp-fb:111 transport-cc",
        "a=candidate:1 1 udp 2130706431 203.0.113.7 40000 typ host",
        "a=end-of-candidates",
    ] {
        assert!(
            audio_lines.contains(&expected),
            "{expected} missing in {audio_lines:?}"
        );
    }
    let video_lines = section(sdp, "1");
    for expected in [
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97",
        "a=recvonly",
        "a=rtpmap:96 VP8/90000",
        "a=rtpmap:97 rtx/90000",
        "a=fmtp:97 apt=96",
        "a=rtcp-fb:96 goog-remb",
        "a=rtcp-fb:96 transport-cc",
        "a=rtcp-fb:96 ccm fir",
        "a=rtcp-fb:96 nack",
        "a=rtcp-fb:96 nack pli",
        "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    ] {
        assert!(
            video_lines.contains(&expected),
            "{expected} missing in {video_lines:?}"
        );
    }
    assert_eq!(
        video_lines
            .iter()
            .filter(|l| l.starts_with("a=fmtp"))
            .count(),
        1,
        "only the RTX fmtp"
    );
    assert_eq!(sdp.matches("rtx/").count(), 1, "one RTX codec: VP8's");
    assert!(!video_lines.iter().any(|l| l.starts_with("a=candidate")));

    // The answer is itself a well-formed WebRTC description.
    let parsed = parse_offer(sdp).expect("answer parses");
    assert_eq!(parsed.ice_ufrag, "sfuU");
    assert_eq!(parsed.fingerprint, OUR_FINGERPRINT);
    assert_eq!(parsed.setup, Setup::Passive);
    assert!(parsed.ice_lite);
    assert_eq!(parsed.bundle, ["0", "1"]);
    assert_eq!(parsed.media[1].direction, Direction::RecvOnly);
    assert_eq!(parsed.media[1].codecs.len(), 2);
    assert_eq!(
        parsed.media[1].rtx_for(96).map(|c| c.payload_type),
        Some(97)
    );
    assert_eq!(
        parsed.media[1].codecs[0].rtcp_fb.len(),
        5,
        "nack, nack pli, ccm fir, goog-remb, transport-cc"
    );
}

#[test]
fn h264_chosen_when_vp8_absent() {
    let text = CHROME.replace(
        CHROME_VIDEO_M_LINE,
        &CHROME_VIDEO_M_LINE.replace(" 96 97", ""),
    );
    let offer = parse_offer(&text).expect("parses");
    let answer = answer(&offer, &params(), &Intent::Publish).expect("answer");
    assert_eq!(answer.sections[1].payload_type, 102);
    assert_eq!(answer.sections[1].codec, CodecChoice::H264);
    let video = section(&answer.sdp, "1");
    assert!(video.contains(&"a=rtpmap:102 H264/90000"));
    assert!(video.contains(
        &"a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f"
    ));
}

#[test]
fn h264_constrained_baseline_needs_packetization_mode_1() {
    let line = "m=video 9 UDP/TLS/RTP/SAVPF 108 106";
    let offer = parse_offer(&CHROME.replace(CHROME_VIDEO_M_LINE, line)).expect("parses");
    let answer = answer(&offer, &params(), &Intent::Publish).expect("answer");
    assert_eq!(
        answer.sections[1].payload_type, 106,
        "108 is packetization-mode=0"
    );
}

#[test]
fn video_without_supported_codec_is_refused() {
    // VP9, AV1, H264 high profile, H264 packetization-mode=0, RTX, RED.
    let line = "m=video 9 UDP/TLS/RTP/SAVPF 98 45 112 104 97 116";
    let offer = parse_offer(&CHROME.replace(CHROME_VIDEO_M_LINE, line)).expect("parses");
    let err = answer(&offer, &params(), &Intent::Publish).expect_err("no codec");
    assert_eq!(
        err,
        SdpError::NoSupportedCodec {
            mid: "1".to_owned()
        }
    );
    assert!(err.to_string().contains("no supported codec"));
}

#[test]
fn simulcast_publish() {
    let offer = parse_offer(CHROME_SIMULCAST).expect("parses");
    let video = &offer.media[1];
    assert_eq!(video.rids.len(), 3);
    assert_eq!(video.rids[0].direction, RidDirection::Send);
    let sim = video.simulcast.as_ref().expect("simulcast");
    assert_eq!(sim.send.len(), 3);
    assert!(sim.recv.is_empty());
    assert!(video.ssrcs.is_empty());

    let answer = answer(&offer, &params(), &Intent::Publish).expect("answer");
    assert_eq!(answer.sections[1].rids, ["q", "h", "f"]);
    assert!(answer.sections[1].remote_ssrcs.is_empty());
    assert!(answer.sections[0].rids.is_empty());
    let lines = section(&answer.sdp, "1");
    let rid_lines: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("a=rid:"))
        .collect();
    assert_eq!(rid_lines, ["a=rid:q recv", "a=rid:h recv", "a=rid:f recv"]);
    assert!(lines.contains(&"a=simulcast:recv q;h;f"));

    let parsed = parse_offer(&answer.sdp).expect("answer parses");
    let sim = parsed.media[1]
        .simulcast
        .as_ref()
        .expect("simulcast in answer");
    assert_eq!(sim.recv.len(), 3);
    assert!(
        parsed.media[1]
            .rids
            .iter()
            .all(|r| r.direction == RidDirection::Recv)
    );
}

#[test]
fn simulcast_keeps_only_declared_send_rids() {
    let text = CHROME_SIMULCAST
        .replace("a=simulcast:send q;h;f", "a=simulcast:send q;h,~x;f")
        .replace("a=rid:f send", "a=rid:f recv\na=rid:x send");
    let offer = parse_offer(&text).expect("parses");
    let answer = answer(&offer, &params(), &Intent::Publish).expect("answer");
    assert_eq!(answer.sections[1].rids, ["q", "h", "x"]);
    assert!(section(&answer.sdp, "1").contains(&"a=simulcast:recv q;h,~x"));
}

#[test]
fn publish_answer_to_firefox() {
    let offer = parse_offer(&crlf(FIREFOX)).expect("parses");
    let answer = answer(&offer, &params(), &Intent::Publish).expect("answer");
    assert_eq!(answer.sections[0].payload_type, 109);
    assert_eq!(answer.sections[0].remote_ssrcs, [2_655_508_255]);
    let audio_ext: Vec<u8> = answer.sections[0].extmap.iter().map(|e| e.0).collect();
    assert_eq!(audio_ext, [1, 3], "csrc-audio-level is not supported");
    assert_eq!(answer.sections[1].payload_type, 120);
    assert_eq!(answer.sections[1].remote_ssrcs, [1_690_360_370]);
    let audio = section(&answer.sdp, "0");
    assert!(audio.contains(&"a=fmtp:109 maxplaybackrate=48000;stereo=1;useinbandfec=1"));
    assert!(
        !audio.contains(&"a=rtcp-rsize"),
        "Firefox audio has no rtcp-rsize"
    );
    assert!(section(&answer.sdp, "1").contains(&"a=rtcp-rsize"));
    parse_offer(&answer.sdp).expect("answer parses");
}

#[test]
fn subscribe_answer() {
    let offer = parse_offer(&chrome_whep()).expect("parses");
    let intent = Intent::Subscribe(vec![
        Some(stream(1111, CodecChoice::Opus)),
        Some(stream(2222, CodecChoice::Vp8)),
    ]);
    let answer = answer(&offer, &params(), &intent).expect("answer");
    for (n, pt) in answer.sections.iter().zip([111, 96]) {
        assert_eq!(n.direction, Direction::SendOnly);
        assert!(n.accepted);
        assert_eq!(n.payload_type, pt);
        // Only the transport-wide sequence number (Chrome's id 3).
        assert_eq!(
            n.extmap,
            [(3, crate::sdp::TRANSPORT_WIDE_CC_URI.to_owned())]
        );
        assert!(n.remote_ssrcs.is_empty());
    }
    let sdp = &answer.sdp;
    assert_eq!(
        sdp.matches("a=extmap").count(),
        2,
        "one extension per section: the node's egress numbering"
    );
    assert!(sdp.contains("a=rtcp-fb:96 transport-cc"));
    assert!(
        !sdp.contains("a=rtcp-fb:96 nack\r\n"),
        "no generic NACK without retransmission"
    );
    let video = section(sdp, "1");
    for expected in [
        "a=sendonly",
        "a=rtcp-fb:96 nack pli",
        "a=rtcp-fb:96 goog-remb",
        "a=msid:room-7 track-2222",
        "a=ssrc:2222 cname:sfu-node",
        "a=ssrc:2222 msid:room-7 track-2222",
    ] {
        assert!(video.contains(&expected), "{expected} missing in {video:?}");
    }
    let parsed = parse_offer(sdp).expect("answer parses");
    assert_eq!(parsed.media[1].media_ssrcs(), [2222]);
    assert_eq!(parsed.media[1].msid.as_deref(), Some("room-7 track-2222"));
}

#[test]
fn subscribe_answer_with_rtx() {
    let offer = parse_offer(&chrome_whep()).expect("parses");
    let with_rtx = |ssrc, codec, rtx| OutStream {
        rtx_ssrc: Some(rtx),
        ..stream(ssrc, codec)
    };
    let intent = Intent::Subscribe(vec![
        Some(with_rtx(1111, CodecChoice::Opus, 1112)),
        Some(with_rtx(2222, CodecChoice::Vp8, 2223)),
    ]);
    let answer = answer(&offer, &params(), &intent).expect("answer");
    // Chrome offers no RTX for Opus: audio gets none, video gets VP8's.
    assert_eq!(answer.sections[0].rtx_payload_type, None);
    assert_eq!(answer.sections[1].rtx_payload_type, Some(97));
    assert!(answer.sections[1].rtx_ssrcs.is_empty(), "publish only");
    let sdp = &answer.sdp;
    let video = section(sdp, "1");
    for expected in [
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97",
        "a=rtpmap:97 rtx/90000",
        "a=fmtp:97 apt=96",
        "a=rtcp-fb:96 nack",
        "a=rtcp-fb:96 nack pli",
        "a=ssrc-group:FID 2222 2223",
        "a=ssrc:2222 cname:sfu-node",
        "a=ssrc:2223 cname:sfu-node",
        "a=ssrc:2223 msid:room-7 track-2222",
    ] {
        assert!(video.contains(&expected), "{expected} missing in {video:?}");
    }
    let audio = section(sdp, "0");
    assert!(!audio.iter().any(|l| l.contains("1112")), "{audio:?}");
    assert!(!audio.iter().any(|l| l.ends_with(" nack")), "{audio:?}");
    let parsed = parse_offer(sdp).expect("answer parses");
    assert_eq!(parsed.media[1].media_ssrcs(), [2222]);
    assert_eq!(parsed.media[1].rtx_ssrcs(), [(2222, 2223)]);
}

#[test]
fn publish_answer_without_usable_red() {
    // RED whose blocks are not the chosen Opus, or no RED at all: Opus only.
    for text in [
        CHROME.replace("a=fmtp:63 111/111", "a=fmtp:63 111/0"),
        without(CHROME, "a=fmtp:63"),
        without(CHROME, "a=rtpmap:63"),
    ] {
        let offer = parse_offer(&crlf(&text)).expect("parses");
        let answer = answer(&offer, &params(), &Intent::Publish).expect("answer");
        assert_eq!(answer.sections[0].red_payload_type, None);
        let audio = section(&answer.sdp, "0");
        assert!(
            audio.contains(&"m=audio 9 UDP/TLS/RTP/SAVPF 111"),
            "{audio:?}"
        );
        assert!(!answer.sdp.contains("red/"), "{}", answer.sdp);
    }
}

#[test]
fn subscribe_answer_keeps_red_only_when_the_producer_sends_it() {
    // The viewer numbers RED 100 around its Opus 109.
    let text = chrome_whep()
        .replace("SAVPF 111 63 ", "SAVPF 109 100 ")
        .replace("a=rtpmap:111 ", "a=rtpmap:109 ")
        .replace("a=rtcp-fb:111 ", "a=rtcp-fb:109 ")
        .replace("a=fmtp:111 ", "a=fmtp:109 ")
        .replace("a=rtpmap:63 ", "a=rtpmap:100 ")
        .replace("a=fmtp:63 111/111", "a=fmtp:100 109/109");
    let offer = parse_offer(&text).expect("parses");
    let red = |red| {
        let intent = Intent::Subscribe(vec![
            Some(OutStream {
                red,
                ..stream(1111, CodecChoice::Opus)
            }),
            Some(OutStream {
                red,
                ..stream(2222, CodecChoice::Vp8)
            }),
        ]);
        answer(&offer, &params(), &intent).expect("answer")
    };

    let with = red(true);
    assert_eq!(with.sections[0].payload_type, 109);
    assert_eq!(with.sections[0].red_payload_type, Some(100));
    assert_eq!(with.sections[1].red_payload_type, None, "no video RED");
    let audio = section(&with.sdp, "0");
    for expected in [
        "m=audio 9 UDP/TLS/RTP/SAVPF 100 109",
        "a=rtpmap:109 opus/48000/2",
        "a=rtpmap:100 red/48000/2",
        "a=fmtp:100 109/109",
        "a=sendonly",
    ] {
        assert!(audio.contains(&expected), "{expected} missing in {audio:?}");
    }
    assert!(!with.sdp.contains("red/90000"));
    let parsed = parse_offer(&with.sdp).expect("answer parses");
    assert_eq!(parsed.media[0].codecs.len(), 2);

    let plain = red(false);
    assert_eq!(plain.sections[0].red_payload_type, None);
    assert!(section(&plain.sdp, "0").contains(&"m=audio 9 UDP/TLS/RTP/SAVPF 109"));
    assert!(!plain.sdp.contains("red/"), "{}", plain.sdp);

    // A viewer that did not offer RED gets none, whatever the producer.
    let offer = parse_offer(&without(&chrome_whep(), "a=rtpmap:63")).expect("parses");
    let intent = Intent::Subscribe(vec![
        Some(OutStream {
            red: true,
            ..stream(1111, CodecChoice::Opus)
        }),
        None,
    ]);
    let answer = answer(&offer, &params(), &intent).expect("answer");
    assert_eq!(answer.sections[0].red_payload_type, None);
    assert!(!answer.sdp.contains("red/"), "{}", answer.sdp);
}

#[test]
fn subscribe_to_h264_picks_the_offered_h264() {
    let offer = parse_offer(&chrome_whep()).expect("parses");
    let intent = Intent::Subscribe(vec![None, Some(stream(5, CodecChoice::H264))]);
    let answer = answer(&offer, &params(), &intent).expect("answer");
    assert_eq!(answer.sections[1].payload_type, 102);
    assert_eq!(answer.sections[0].direction, Direction::Inactive);
    assert!(!answer.sections[0].accepted);
}

#[test]
fn subscribe_codec_not_offered() {
    let text = chrome_whep().replace(CHROME_VIDEO_M_LINE, "m=video 9 UDP/TLS/RTP/SAVPF 102 103");
    let offer = parse_offer(&text).expect("parses");
    let intent = Intent::Subscribe(vec![None, Some(stream(5, CodecChoice::Vp8))]);
    let err = answer(&offer, &params(), &intent).expect_err("VP8 absent");
    assert_eq!(err.as_str(), "codec_not_offered");
    assert_eq!(
        err.to_string(),
        "media section 1 does not offer VP8, the codec of the stream to send"
    );
    // An audio codec in a video section is not offered either.
    let intent = Intent::Subscribe(vec![None, Some(stream(5, CodecChoice::Opus))]);
    assert_eq!(
        label(answer(&offer, &params(), &intent)),
        "codec_not_offered"
    );
}

#[test]
fn subscribe_sections_that_cannot_receive_are_inactive() {
    // Chrome's publish offer is sendonly: nothing can be sent to it.
    let offer = parse_offer(CHROME).expect("parses");
    let intent = Intent::Subscribe(vec![Some(stream(1, CodecChoice::Opus)), None]);
    let answer = answer(&offer, &params(), &intent).expect("answer");
    assert!(
        answer
            .sections
            .iter()
            .all(|n| n.direction == Direction::Inactive && !n.accepted)
    );
    assert_eq!(answer.sdp.matches("a=inactive").count(), 2);
    assert!(!answer.sdp.contains("a=msid:"));
    assert!(!answer.sdp.contains("a=ssrc:"));
}

#[test]
fn publish_sections_that_do_not_send_are_inactive() {
    let text = CHROME.replacen("a=sendonly", "a=recvonly", 1);
    let offer = parse_offer(&text).expect("parses");
    let answer = answer(&offer, &params(), &Intent::Publish).expect("answer");
    assert_eq!(answer.sections[0].direction, Direction::Inactive);
    assert!(!answer.sections[0].accepted);
    assert_eq!(answer.sections[1].direction, Direction::RecvOnly);
    assert!(section(&answer.sdp, "0").contains(&"a=inactive"));
    assert!(answer.sdp.contains("a=group:BUNDLE 0 1"));

    let text = CHROME.replace("a=sendonly", "a=inactive");
    let offer = parse_offer(&text).expect("parses");
    let err = answer_err(&offer, &Intent::Publish);
    assert_eq!(err, SdpError::NothingPublished);
}

fn answer_err(offer: &Offer, intent: &Intent) -> SdpError {
    answer(offer, &params(), intent).expect_err("answer must fail")
}

#[test]
fn data_channel_is_rejected_and_left_out_of_bundle() {
    let text = format!(
        "{}m=application 9 UDP/DTLS/SCTP webrtc-datachannel\nc=IN IP4 0.0.0.0\na=mid:2\na=sctp-port:5000\n",
        CHROME.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0 1 2")
    );
    let offer = parse_offer(&text).expect("parses");
    assert_eq!(offer.media[2].kind, SectionKind::Application);
    let answer = answer(&offer, &params(), &Intent::Publish).expect("answer");
    assert_eq!(answer.sections.len(), 2);
    assert!(answer.sdp.contains("a=group:BUNDLE 0 1\r\n"));
    assert_eq!(
        section(&answer.sdp, "2"),
        [
            "m=application 0 UDP/DTLS/SCTP webrtc-datachannel",
            "c=IN IP4 0.0.0.0",
            "a=mid:2",
            ""
        ]
    );
    parse_offer(&answer.sdp).expect("answer parses");
}

#[test]
fn disabled_section_is_answered_with_port_0() {
    let text = format!(
        "{}m=video 0 UDP/TLS/RTP/SAVPF 96\nc=IN IP4 0.0.0.0\na=rtpmap:96 VP8/90000\na=mid:2\n",
        chrome_whep()
    );
    let offer = parse_offer(&text).expect("parses");
    assert!(offer.media[2].is_disabled());
    // The disabled section still takes a slot in the subscribe intent.
    let short = Intent::Subscribe(vec![None, Some(stream(9, CodecChoice::Vp8))]);
    assert_eq!(
        answer_err(&offer, &short),
        SdpError::IntentMismatch {
            sections: 3,
            given: 2
        }
    );
    let intent = Intent::Subscribe(vec![None, Some(stream(9, CodecChoice::Vp8)), None]);
    let answer = answer(&offer, &params(), &intent).expect("answer");
    assert_eq!(answer.sections.len(), 2);
    assert!(answer.sdp.contains("a=group:BUNDLE 0 1\r\n"));
    assert_eq!(
        section(&answer.sdp, "2")[0],
        "m=video 0 UDP/TLS/RTP/SAVPF 96"
    );
}

#[test]
fn transport_attributes_resolve_over_bundle() {
    // Session-level credentials apply to every section.
    let session_level = without(&without(CHROME, "a=ice-ufrag"), "a=ice-pwd").replace(
        "a=group:BUNDLE 0 1",
        "a=group:BUNDLE 0 1\na=ice-ufrag:Sess\na=ice-pwd:0123456789abcdefghijkl",
    );
    let offer = parse_offer(&session_level).expect("parses");
    assert_eq!(
        (offer.ice_ufrag.as_str(), offer.ice_pwd.as_str()),
        ("Sess", "0123456789abcdefghijkl")
    );
    // Media level wins over session level.
    let both = CHROME.replace(
        "a=group:BUNDLE 0 1",
        "a=group:BUNDLE 0 1\na=ice-ufrag:Sess\na=ice-pwd:0123456789abcdefghijkl",
    );
    assert_eq!(parse_offer(&both).expect("parses").ice_ufrag, "Xk4p");
    // The first bundled section decides; setup defaults to active when absent.
    let no_setup = without(CHROME, "a=setup");
    assert_eq!(parse_offer(&no_setup).expect("parses").setup, Setup::Active);
}

#[test]
fn setup_answer_roles() {
    assert_eq!(Setup::answer_for(Setup::Actpass), Setup::Passive);
    assert_eq!(Setup::answer_for(Setup::Active), Setup::Passive);
    assert_eq!(Setup::answer_for(Setup::Passive), Setup::Active);
    let offer = parse_offer(&CHROME.replace("a=setup:actpass", "a=setup:passive")).expect("parses");
    assert_eq!(offer.setup, Setup::Passive);
    let p = AnswerParams {
        setup: Setup::answer_for(offer.setup),
        ..params()
    };
    let a = answer(&offer, &p, &Intent::Publish).expect("active answer");
    assert!(a.sdp.contains("a=setup:active"));
    assert_eq!(
        answer_err(&offer, &Intent::Publish),
        SdpError::SetupConflict {
            offer: Setup::Passive,
            answer: Setup::Passive
        }
    );
}

#[test]
fn parse_rejections_have_the_right_label() {
    let video_only_bundle = CHROME.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0");
    let second_ufrag = {
        let i = CHROME.rfind("a=ice-ufrag:Xk4p").expect("second ufrag");
        format!(
            "{}a=ice-ufrag:Other{}",
            &CHROME[..i],
            &CHROME[i + "a=ice-ufrag:Xk4p".len()..]
        )
    };
    let many_sections = {
        let mut t = CHROME.to_owned();
        for i in 0..62 {
            t.push_str(&format!(
                "m=application 0 UDP/DTLS/SCTP webrtc-datachannel\na=mid:x{i}\n"
            ));
        }
        t
    };
    parse_offer(&many_sections).expect("64 sections are accepted");
    let many_lines = format!("{}{}", CHROME, "a=unknown-attribute\n".repeat(1000));
    let application_only = "v=0\no=- 1 2 IN IP4 127.0.0.1\ns=-\nt=0 0\na=group:BUNDLE 0\n\
        m=application 9 UDP/DTLS/SCTP webrtc-datachannel\na=mid:0\na=ice-ufrag:Xk4p\n\
        a=ice-pwd:9bG0uK2fQ7sH1nL5mR3tV8wY\n";
    let cases: Vec<(&str, String, &str)> = vec![
        ("empty", String::new(), "not_sdp"),
        ("http body", "{\"sdp\": \"v=0\"}".to_owned(), "not_sdp"),
        ("v=1", CHROME.replacen("v=0", "v=1", 1), "not_sdp"),
        (
            "too large",
            format!("{CHROME}{}", "a=x\n".repeat(20_000)),
            "too_large",
        ),
        (
            "65 sections",
            format!("{many_sections}m=audio 0 RTP/AVP 0\n"),
            "too_many_sections",
        ),
        ("1001 lines", many_lines, "too_many_lines"),
        ("bad line", CHROME.replacen("s=-", "s-", 1), "malformed"),
        (
            "bad port",
            CHROME.replacen("m=audio 9 ", "m=audio 99999 ", 1),
            "malformed",
        ),
        (
            "bad pt",
            CHROME.replacen(" 111 63", " 300 63", 1),
            "malformed",
        ),
        (
            "bad rtpmap",
            CHROME.replacen("a=rtpmap:111 opus/48000/2", "a=rtpmap:111 opus", 1),
            "malformed",
        ),
        (
            "bad ufrag",
            CHROME.replace("a=ice-ufrag:Xk4p", "a=ice-ufrag:X"),
            "malformed",
        ),
        (
            "bad fingerprint",
            CHROME.replace("a=fingerprint:sha-256 A5:", "a=fingerprint:sha-256 Z5:"),
            "malformed",
        ),
        (
            "bad setup",
            CHROME.replace("a=setup:actpass", "a=setup:holdconn"),
            "malformed",
        ),
        (
            "cr in line",
            CHROME.replacen("a=mid:0", "a=mid:0\rb", 1),
            "malformed",
        ),
        ("no o=", without(CHROME, "o="), "malformed"),
        (
            "no ice-ufrag",
            without(CHROME, "a=ice-ufrag"),
            "missing_ice_credentials",
        ),
        (
            "no ice-pwd",
            without(CHROME, "a=ice-pwd"),
            "missing_ice_credentials",
        ),
        (
            "no fingerprint",
            without(CHROME, "a=fingerprint"),
            "missing_fingerprint",
        ),
        (
            "firefox no fingerprint",
            without(FIREFOX, "a=fingerprint"),
            "missing_fingerprint",
        ),
        ("no mid", without(CHROME, "a=mid:1"), "missing_mid"),
        (
            "duplicate mid",
            CHROME.replace("a=mid:1", "a=mid:0"),
            "duplicate_mid",
        ),
        ("no bundle", without(CHROME, "a=group"), "no_bundle"),
        ("video not bundled", video_only_bundle, "not_bundled"),
        ("bundle mismatch", second_ufrag, "bundle_mismatch"),
        ("no rtcp-mux", without(CHROME, "a=rtcp-mux"), "no_rtcp_mux"),
        (
            "plain RTP",
            CHROME.replace("UDP/TLS/RTP/SAVPF", "RTP/AVP"),
            "unsupported_protocol",
        ),
        (
            "SDES",
            CHROME.replace("UDP/TLS/RTP/SAVPF", "RTP/SAVPF"),
            "unsupported_protocol",
        ),
        ("no media", application_only.to_owned(), "no_media"),
    ];
    for (name, text, expected) in cases {
        let got = label(parse_offer(&text));
        assert_eq!(got, expected, "{name}");
    }
}

#[test]
fn answer_rejections_have_the_right_label() {
    let offer = parse_offer(CHROME).expect("parses");
    let lite = parse_offer(&CHROME.replace("a=group:BUNDLE 0 1", "a=ice-lite\na=group:BUNDLE 0 1"))
        .expect("parses");
    assert!(lite.ice_lite);
    assert_eq!(
        answer_err(&lite, &Intent::Publish).as_str(),
        "both_ice_lite"
    );
    let bad = |p: AnswerParams<'static>| label(answer(&offer, &p, &Intent::Publish));
    assert_eq!(
        bad(AnswerParams {
            ice_ufrag: "a b",
            ..params()
        }),
        "invalid_param"
    );
    assert_eq!(
        bad(AnswerParams {
            ice_pwd: "short",
            ..params()
        }),
        "invalid_param"
    );
    assert_eq!(
        bad(AnswerParams {
            fingerprint: "sha-256",
            ..params()
        }),
        "invalid_param"
    );
    assert_eq!(
        bad(AnswerParams {
            setup: Setup::Actpass,
            ..params()
        }),
        "setup_conflict"
    );
    assert_eq!(
        label(answer(&offer, &params(), &Intent::Subscribe(vec![None]))),
        "intent_mismatch"
    );
    let whep = parse_offer(&chrome_whep()).expect("parses");
    let mut s = stream(1, CodecChoice::Opus);
    s.cname = "two words".to_owned();
    assert_eq!(
        label(answer(
            &whep,
            &params(),
            &Intent::Subscribe(vec![Some(s), None])
        )),
        "invalid_param"
    );
}

#[test]
fn error_labels_and_messages_are_distinct() {
    let errors = [
        SdpError::TooLarge,
        SdpError::TooManySections,
        SdpError::TooManyLines,
        SdpError::NotSdp,
        SdpError::Malformed {
            line: 3,
            reason: "x",
        },
        SdpError::MissingIceCredentials,
        SdpError::MissingFingerprint,
        SdpError::MissingMid { index: 0 },
        SdpError::DuplicateMid { mid: "0".into() },
        SdpError::NoBundle,
        SdpError::NotBundled { mid: "1".into() },
        SdpError::BundleMismatch,
        SdpError::NoRtcpMux { mid: "1".into() },
        SdpError::UnsupportedProtocol {
            mid: "1".into(),
            protocol: "RTP/AVP".into(),
        },
        SdpError::NoMedia,
        SdpError::NoSupportedCodec { mid: "1".into() },
        SdpError::CodecNotOffered {
            mid: "1".into(),
            codec: CodecChoice::H264,
        },
        SdpError::NothingPublished,
        SdpError::BothIceLite,
        SdpError::SetupConflict {
            offer: Setup::Active,
            answer: Setup::Active,
        },
        SdpError::IntentMismatch {
            sections: 2,
            given: 1,
        },
        SdpError::InvalidParam("cname"),
    ];
    let mut labels: Vec<&str> = errors.iter().map(SdpError::as_str).collect();
    let mut messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    labels.sort_unstable();
    labels.dedup();
    messages.sort_unstable();
    messages.dedup();
    assert_eq!(labels.len(), errors.len());
    assert_eq!(messages.len(), errors.len());
    assert_eq!(
        SdpError::Malformed {
            line: 3,
            reason: "x"
        }
        .to_string(),
        "malformed SDP at line 3: x"
    );
}

/// One random edit of an SDP text.
fn mutate(rng: &mut StdRng, bytes: &mut Vec<u8>) {
    const INTERESTING: &[u8] = b" :/=;,~*\r\n0123456789-aAzZmv";
    let mut lines: Vec<Vec<u8>> = bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    let n = lines.len();
    match rng.random_range(0..8) {
        0 => bytes.truncate(rng.random_range(0..=bytes.len())),
        1 if !bytes.is_empty() => {
            let i = rng.random_range(0..bytes.len());
            bytes[i] = rng.random();
        }
        2 if !bytes.is_empty() => {
            let i = rng.random_range(0..bytes.len());
            bytes[i] = INTERESTING[rng.random_range(0..INTERESTING.len())];
        }
        3 if !bytes.is_empty() => {
            let i = rng.random_range(0..bytes.len());
            let len = rng.random_range(0..=16.min(bytes.len() - i));
            bytes.drain(i..i + len);
        }
        4 => {
            lines.remove(rng.random_range(0..n));
            *bytes = lines.join(&b'\n');
        }
        5 => {
            let line = lines[rng.random_range(0..n)].clone();
            lines.insert(rng.random_range(0..=n), line);
            *bytes = lines.join(&b'\n');
        }
        6 => {
            lines.swap(rng.random_range(0..n), rng.random_range(0..n));
            *bytes = lines.join(&b'\n');
        }
        _ => {
            let i = rng.random_range(0..=bytes.len());
            let junks: [&[u8]; 6] = [b"4294967296", b"\na=", b"/", b" ", b"m=video 0 x 1\n", b"~"];
            let junk = junks[rng.random_range(0..junks.len())];
            bytes.splice(i..i, junk.iter().copied());
        }
    }
}

#[test]
fn random_mutations_never_panic() {
    let mut rng = StdRng::seed_from_u64(0x5d9_2024);
    let fixtures = [CHROME, CHROME_SIMULCAST, FIREFOX];
    let (mut parsed, mut refused, mut answered) = (0, 0, 0);
    for i in 0..10_000 {
        let mut bytes = fixtures[i % fixtures.len()].as_bytes().to_vec();
        for _ in 0..rng.random_range(1..=3) {
            mutate(&mut rng, &mut bytes);
        }
        let text = String::from_utf8_lossy(&bytes);
        let offer = match parse_offer(&text) {
            Ok(offer) => offer,
            Err(e) => {
                refused += 1;
                assert!(!e.as_str().is_empty() && !e.to_string().is_empty());
                continue;
            }
        };
        parsed += 1;
        let streams = offer
            .media
            .iter()
            .filter_map(|s| s.kind.media_kind())
            .map(|k| match k {
                MediaKind::Audio => Some(stream(1, CodecChoice::Opus)),
                MediaKind::Video => Some(stream(2, CodecChoice::Vp8)),
            })
            .collect();
        for intent in [Intent::Publish, Intent::Subscribe(streams)] {
            if let Ok(a) = answer(&offer, &params(), &intent) {
                answered += 1;
                if let Err(e) = parse_offer(&a.sdp) {
                    panic!("answer does not parse ({e}):\n{}\noffer:\n{text}", a.sdp);
                }
            }
        }
    }
    // Both outcomes occur often: the mutations neither always break nor
    // never touch the offer.
    assert!(parsed > 1000, "parsed {parsed}");
    assert!(refused > 1000, "refused {refused}");
    assert!(answered > 1000, "answered {answered}");
}

/// RFC 4796 `a=content`: `slides` (alone or in a list, any case) marks a
/// section as a presentation (a screen share); other values do not; an
/// empty or malformed value is refused like any malformed attribute.
#[test]
fn content_slides_marks_a_screen_share() {
    let with = |value: &str| CHROME.replace("a=mid:1\n", &format!("a=mid:1\na=content:{value}\n"));
    for (value, slides) in [
        ("slides", true),
        ("main,SLIDES", true),
        ("main", false),
        ("speaker,alt", false),
    ] {
        let offer = parse_offer(&crlf(&with(value))).expect("offer");
        assert!(!offer.media[0].slides, "{value}: the audio section");
        assert_eq!(offer.media[1].slides, slides, "{value}");
        let answer = answer(&offer, &params(), &Intent::Publish).expect("answer");
        assert_eq!(answer.sections[1].slides, slides, "{value}");
        assert!(!answer.sections[0].slides);
    }
    let plain = parse_offer(&crlf(CHROME)).expect("offer");
    assert!(plain.media.iter().all(|m| !m.slides));
    for bad in ["", "slides;x", "main,,slides"] {
        assert!(
            matches!(
                parse_offer(&crlf(&with(bad))),
                Err(SdpError::Malformed { .. })
            ),
            "a=content:{bad}"
        );
    }
}
