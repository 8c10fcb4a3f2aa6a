//! WHIP and WHEP over real HTTP against an in-process node, with the test
//! playing the browser: Chrome's offers (fingerprint replaced by the test's
//! own certificate), ICE checks built with `StunWriter`, a DTLS client
//! handshake with `DtlsSession`, then SRTP media from the WHIP publisher to
//! the WHEP subscriber. Also the refusals (each changes nothing), the
//! resource methods, and the ICE/DTLS drop counters.

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::TestNode;
use common::events::{Hook, subscribe, verify};
use common::webrtc::*;
use control::auth::Grant;
use serde_json::Value;
use sfu_core::dtls::DtlsCert;
use sfu_core::srtp::{SrtpConfig, SrtpContext};

const WHIP_OFFER: &str = include_str!("fixtures/chrome-whip-offer.sdp");

/// The SSRCs of the WHIP fixture.
const PUB_AUDIO_SSRC: u32 = 2_371_388_022;
const PUB_VIDEO_SSRC: u32 = 267_379_645;
/// The ICE ufrags of the fixtures.
const WHIP_UFRAG: &str = "g88K";

/// A drop counter of worker 0 from `/v1/load`.
fn drops(node: &TestNode, reason: &str) -> u64 {
    let load = node.get("/v1/load");
    assert_eq!(load.status, 200, "{}", load.text);
    load.json["workers"][0]["drops"][reason]
        .as_u64()
        .unwrap_or(0)
}

/// `sfu_webrtc_sessions_total` for `protocol` and `event`.
fn sessions_metric(node: &TestNode, protocol: &str, event: &str) -> u64 {
    let m = node.get("/metrics");
    assert_eq!(m.status, 200);
    let prefix = format!("sfu_webrtc_sessions_total{{protocol=\"{protocol}\",event=\"{event}\"}} ");
    m.text
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {prefix} missing:\n{}", m.text))
}

/// Endpoints per room, from `/v1/rooms`.
fn endpoints(node: &TestNode) -> Value {
    let a = node.get("/v1/rooms");
    assert_eq!(a.status, 200);
    a.json
}

#[test]
fn whip_to_whep_media_flows_over_ice_and_dtls() {
    whip_to_whep(TestNode::start(1));
}

/// The same over the io_uring backend (`io = "uring"`): ICE, DTLS and SRTP
/// through linked RecvMsg/SendMsg operations, and `/v1/load` says so.
#[test]
fn whip_to_whep_media_flows_over_io_uring() {
    let mut config = common::test_config(1, common::TEST_SECRET);
    config.io = control::config::IoMode::Uring;
    let node = TestNode::start_with_config(config);
    let load = node.get("/v1/load");
    assert_eq!(
        load.json["workers"][0]["io"],
        "io_uring",
        "the io_uring backend did not run (kernel.io_uring_disabled = {:?})",
        std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
    );
    assert_eq!(node.worker_metric("sfu_io_uring", 0), 1);
    whip_to_whep(node);
}

/// Set in the re-run of the AF_XDP test inside its network namespace.
const XDP_IN_NETNS: &str = "SFU_WHIP_XDP_TEST_IN_NETNS";

/// The same over the AF_XDP backend (`io = "xdp"`) on the embedded
/// defaults' loopback media address, in a network namespace of its own
/// (its loopback gets the XDP program, in generic mode: loopback has no
/// driver XDP): ICE, DTLS and SRTP received through the AF_XDP ring, sent
/// through the kernel socket (loopback destinations always are).
#[test]
fn whip_to_whep_media_flows_over_af_xdp() {
    if std::env::var_os(XDP_IN_NETNS).is_none() {
        common::rerun_in_network_namespace(
            XDP_IN_NETNS,
            "whip_to_whep_media_flows_over_af_xdp",
            "ip link set lo up",
            "root for `unshare --net`, `ip link` and XDP",
        );
        return;
    }
    let mut config = common::test_config(1, common::TEST_SECRET);
    config.io = control::config::IoMode::Xdp;
    // AF_XDP steers fixed ports (worker i on base + i).
    config.media_port = 7882;
    let node = TestNode::start_with_config(config);
    let load = node.get("/v1/load");
    assert_eq!(load.json["workers"][0]["io"], "af_xdp", "{}", load.text);
    assert_eq!(node.worker_metric("sfu_io_af_xdp", 0), 1);
    assert_eq!(node.worker_metric("sfu_af_xdp_native", 0), 0);
    whip_to_whep_on(&node);
    let rx = node.worker_metric("sfu_af_xdp_rx_frames_total", 0);
    // Loopback destinations: through the kernel socket (see packet-path's
    // xdp module); the veth tests of packet-path send through the ring.
    let tx = node.worker_metric("sfu_af_xdp_kernel_sends_total", 0);
    let all = node.worker_metric("sfu_rx_packets_total", 0);
    let kernel = node.worker_metric("sfu_af_xdp_kernel_receives_total", 0);
    eprintln!(
        "af_xdp: {rx} of {all} datagrams in through the ring, {kernel} through the kernel, {tx} sends through the kernel"
    );
    assert!(rx > 0 && tx > 0);
    assert_eq!(
        (rx, kernel),
        (all, 0),
        "every datagram came in through the ring"
    );
    node.shutdown();
}

fn whip_to_whep(node: TestNode) {
    whip_to_whep_on(&node);
    node.shutdown();
}

/// The WHIP publisher to WHEP viewer exchange on `node`.
fn whip_to_whep_on(node: &TestNode) {
    node.create_room("live");
    let pub_token = node.token("live", &[Grant::Publish]);
    let sub_token = node.token("live", &[Grant::Subscribe]);

    // WHIP: publish audio and video.
    let pub_cert = DtlsCert::generate().expect("a certificate");
    let offer = with_fingerprint(WHIP_OFFER, &pub_cert);
    let r = post_offer(node, "/whip/live", &pub_token, &offer);
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.header("content-type"), "application/sdp");
    let location = r.header("location").to_owned();
    assert!(location.starts_with("/whip/live/"), "{location}");
    let sdp = r.text.clone();
    assert!(sdp.contains("a=ice-lite"), "{sdp}");
    assert!(sdp.contains("a=setup:passive"), "{sdp}");
    assert!(sdp.contains("a=recvonly"), "{sdp}");
    assert!(!sdp.contains("a=sendonly"), "{sdp}");
    let whip = read_answer(&sdp);
    // The DTLS handshake below checks the node's certificate against it.
    assert_eq!(whip.fingerprint.algorithm, "sha-256");
    assert_eq!(whip.candidate, node.media(0));
    assert!(whip.ufrag.len() >= 8 && whip.pwd.len() >= 24);
    assert_eq!(sessions_metric(node, "whip", "created"), 1);

    // WHEP: a Chrome offer whose VP8 is payload type 100 and Opus 110,
    // unlike the publisher's 96 and 111.
    let sub_cert = DtlsCert::generate().expect("a certificate");
    let offer = swap_pt(&swap_pt(WHEP_OFFER, 96, 100), 111, 110);
    let offer = with_fingerprint(&offer, &sub_cert);
    let r = post_offer(node, "/whep/live", &sub_token, &offer);
    assert_eq!(r.status, 201, "{}", r.text);
    let whep_location = r.header("location").to_owned();
    assert!(whep_location.starts_with("/whep/live/"), "{whep_location}");
    let sdp = r.text.clone();
    let secs = sections(&sdp);
    assert_eq!(secs.len(), 2, "{sdp}");
    assert!(secs[0].contains("a=sendonly"), "{}", secs[0]);
    assert!(secs[0].contains("a=rtpmap:110 opus/48000/2"), "{}", secs[0]);
    assert!(secs[1].contains("a=sendonly"), "{}", secs[1]);
    assert!(secs[1].contains("a=rtpmap:100 VP8/90000"), "{}", secs[1]);
    // The publisher's audio and video share one msid stream (lip sync):
    // `sfu-{room}-{publisher id}`.
    let (audio_stream, audio_track) = msid(&secs[0]);
    let (video_stream, video_track) = msid(&secs[1]);
    assert_eq!(audio_stream, video_stream, "{sdp}");
    assert!(audio_stream.starts_with("sfu-live-"), "{audio_stream}");
    assert_eq!(
        (audio_track.as_str(), video_track.as_str()),
        ("audio0", "video0")
    );
    let audio_ssrc = section_ssrc(&secs[0]).expect("an audio SSRC");
    let video_ssrc = section_ssrc(&secs[1]).expect("a video SSRC");
    assert_ne!(audio_ssrc, PUB_AUDIO_SSRC);
    assert_ne!(video_ssrc, PUB_VIDEO_SSRC);
    let whep = read_answer(&sdp);
    assert_ne!(whep.ufrag, whip.ufrag);
    assert_eq!(whep.fingerprint, whip.fingerprint);
    assert_eq!(whep.candidate, whip.candidate);

    // Both run ICE and DTLS like a browser.
    let mut publisher = connect(&whip, WHIP_UFRAG, &pub_cert);
    let mut subscriber = connect(&whep, WHEP_UFRAG, &sub_cert);

    // Media: the subscriber decrypts what the publisher sent, rewritten to
    // its own SSRCs and payload types.
    let (mut got_video, mut got_audio) = (false, false);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seq = 1u16;
    while !(got_video && got_audio) {
        assert!(
            Instant::now() < deadline,
            "media did not arrive (video {got_video}, audio {got_audio})"
        );
        publisher.send_rtp(seq, PUB_VIDEO_SSRC, 96, b"video-payload");
        publisher.send_rtp(seq, PUB_AUDIO_SSRC, 111, b"audio-payload");
        seq += 1;
        while let Some((pt, ssrc, payload)) = subscriber.recv_rtp() {
            if ssrc == video_ssrc {
                assert_eq!((pt, payload.as_slice()), (100, &b"video-payload"[..]));
                got_video = true;
            } else if ssrc == audio_ssrc {
                assert_eq!((pt, payload.as_slice()), (110, &b"audio-payload"[..]));
                got_audio = true;
            } else {
                panic!("unexpected SSRC {ssrc}");
            }
        }
    }

    // The router's event counters saw both peers' ICE and DTLS, and media.
    node.wait_worker_metric("sfu_ice_checks_total", 0, 2);
    node.wait_worker_metric("sfu_dtls_handshakes_total", 0, 2);
    node.wait_worker_metric("sfu_rtp_in_total", 0, 2);

    // Sessions are endpoints of the room, deleted through their resource.
    assert_eq!(endpoints(node)["rooms"][0]["endpoints"], 2);
    let wrong_kind = location.replace("/whip/", "/whep/");
    let r = send(node, "DELETE", &wrong_kind, Some(&sub_token), None, "");
    assert_eq!((r.status, r.code().as_str()), (404, "unknown_endpoint"));
    let r = send(node, "DELETE", &whep_location, Some(&sub_token), None, "");
    assert_eq!(r.status, 200, "{}", r.text);
    let r = send(node, "DELETE", &location, Some(&pub_token), None, "");
    assert_eq!(r.status, 200, "{}", r.text);
    let r = send(node, "DELETE", &location, Some(&pub_token), None, "");
    assert_eq!((r.status, r.code().as_str()), (404, "unknown_endpoint"));
    assert_eq!(endpoints(node)["rooms"][0]["endpoints"], 0);
    assert_eq!(sessions_metric(node, "whip", "ended"), 1);
    assert_eq!(sessions_metric(node, "whep", "created"), 1);
    assert_eq!(sessions_metric(node, "whep", "ended"), 1);
}

#[test]
fn red_audio_reaches_red_viewers_as_sent_and_others_as_opus() {
    let node = TestNode::start(1);
    node.create_room("red");
    let pub_token = node.token("red", &[Grant::Publish]);
    let sub_token = node.token("red", &[Grant::Subscribe]);

    // WHIP: Chrome offers RED 63 around Opus 111; the answer keeps it,
    // listed first so that Chrome sends it.
    let pub_cert = DtlsCert::generate().expect("a certificate");
    let r = post_offer(
        &node,
        "/whip/red",
        &pub_token,
        &with_fingerprint(WHIP_OFFER, &pub_cert),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let audio = &sections(&r.text)[0];
    for line in [
        "m=audio 9 UDP/TLS/RTP/SAVPF 63 111",
        "a=rtpmap:63 red/48000/2",
        "a=fmtp:63 111/111",
    ] {
        assert!(audio.contains(line), "{line} missing:\n{audio}");
    }
    let whip = read_answer(&r.text);

    // A viewer that offers RED (as 100 around its Opus 110), and one that
    // does not.
    let red_offer = swap_pt(&swap_pt(WHEP_OFFER, 111, 110), 63, 100)
        .replace("a=fmtp:100 111/111", "a=fmtp:100 110/110");
    let plain_offer: String = WHEP_OFFER
        .lines()
        .filter(|l| !l.starts_with("a=rtpmap:63 ") && !l.starts_with("a=fmtp:63 "))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let mut viewers = Vec::new();
    for (offer, red) in [(red_offer, true), (plain_offer, false)] {
        let cert = DtlsCert::generate().expect("a certificate");
        let r = post_offer(
            &node,
            "/whep/red",
            &sub_token,
            &with_fingerprint(&offer, &cert),
        );
        assert_eq!(r.status, 201, "{}", r.text);
        let audio = sections(&r.text)[0].clone();
        assert_eq!(audio.contains("a=rtpmap:100 red/48000/2"), red, "{audio}");
        assert_eq!(audio.contains("a=fmtp:100 110/110"), red, "{audio}");
        assert_eq!(audio.contains("red/"), red, "{audio}");
        let ssrc = section_ssrc(&audio).expect("an audio SSRC");
        viewers.push((read_answer(&r.text), cert, ssrc));
    }

    let mut publisher = connect(&whip, WHIP_UFRAG, &pub_cert);
    let mut peers: Vec<(Peer, u32)> = viewers
        .iter()
        .map(|(a, cert, ssrc)| (connect(a, WHEP_UFRAG, cert), *ssrc))
        .collect();

    // One redundant block (2 bytes) and the primary (3 bytes), Opus 111.
    let red_payload = [
        0x80 | 111,
        0x0f,
        0x00,
        0x02,
        111,
        0xa1,
        0xa2,
        0xb1,
        0xb2,
        0xb3,
    ];
    let mut got = [false, false];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seq = 1u16;
    while got != [true, true] {
        assert!(Instant::now() < deadline, "RED did not arrive: {got:?}");
        publisher.send_rtp(seq, PUB_AUDIO_SSRC, 63, &red_payload);
        seq += 1;
        for (k, (peer, ssrc)) in peers.iter_mut().enumerate() {
            while let Some((pt, from, payload)) = peer.recv_rtp() {
                if from != *ssrc {
                    continue;
                }
                let want: (u8, &[u8]) = match k {
                    // Its own numbers, in the header and in the blocks.
                    0 => (
                        100,
                        &[
                            0x80 | 110,
                            0x0f,
                            0x00,
                            0x02,
                            110,
                            0xa1,
                            0xa2,
                            0xb1,
                            0xb2,
                            0xb3,
                        ],
                    ),
                    _ => (111, &[0xb1, 0xb2, 0xb3]),
                };
                assert_eq!((pt, payload.as_slice()), want, "viewer {k}");
                got[k] = true;
            }
        }
    }
    assert_eq!(drops(&node, "red_malformed"), 0);
    node.shutdown();
}

#[test]
fn whep_assigns_producers_in_order_and_answers_the_rest_inactive() {
    let node = TestNode::start(1);
    node.create_room("r");
    // Two video producers through the JSON API (assumed VP8), no audio.
    let producers = [(5000u32, 1u8), (6000, 2)];
    let mut publishers = Vec::new();
    for (ssrc, seed) in producers {
        let created = node.create_endpoint(
            "r",
            &serde_json::json!({
                "role": "publish",
                "srtp": { "profile": "AEAD_AES_128_GCM", "key": common::b64(&[seed; 28]) },
                "tracks": [{ "kind": "video", "ssrc": ssrc, "payload_type": 96 }],
            }),
        );
        publishers.push(created["id"].as_str().expect("an id").to_owned());
    }
    let token = node.token("r", &[Grant::Subscribe]);
    let cert = DtlsCert::generate().expect("a certificate");
    let offer = with_fingerprint(&four_section_offer(), &cert);
    let r = post_offer(&node, "/whep/r", &token, &offer);
    assert_eq!(r.status, 201, "{}", r.text);
    let secs = sections(&r.text);
    assert_eq!(secs.len(), 4, "{}", r.text);
    // No audio producer; two video producers for three video sections.
    assert!(secs[0].contains("a=inactive"), "{}", secs[0]);
    assert!(secs[3].contains("a=inactive"), "{}", secs[3]);
    assert_eq!(
        (section_ssrc(&secs[0]), section_ssrc(&secs[3])),
        (None, None)
    );
    let slot0 = section_ssrc(&secs[1]).expect("video slot 0");
    let slot1 = section_ssrc(&secs[2]).expect("video slot 1");
    assert_ne!(slot0, slot1);
    // One msid stream (and CNAME) per publisher: a participant's tracks
    // are synchronised together, different participants' are not.
    for (sec, (publisher, slot)) in secs[1..3].iter().zip(publishers.iter().zip(0..)) {
        assert!(
            sec.contains(&format!("a=msid:sfu-r-{publisher} video{slot}")),
            "{sec}"
        );
        assert!(sec.contains(&format!("cname:sfu-{publisher}")), "{sec}");
    }

    // The first producer feeds the first section, the second the second.
    let mut sub = connect(&read_answer(&r.text), WHEP_UFRAG, &cert);
    let senders: Vec<(UdpSocket, SrtpContext, u32)> = producers
        .iter()
        .map(|&(ssrc, seed)| {
            let master = [seed; 28];
            let (key, salt) = master.split_at(16);
            let ctx = SrtpContext::new(
                sfu_core::srtp::Profile::AeadAes128Gcm,
                key,
                salt,
                SrtpConfig::default(),
            )
            .expect("key lengths");
            (socket(), ctx, ssrc)
        })
        .collect();
    let mut senders = senders;
    let (mut seen0, mut seen1) = (false, false);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seq = 1u16;
    while !(seen0 && seen1) {
        assert!(
            Instant::now() < deadline,
            "media did not arrive ({seen0}, {seen1})"
        );
        for (sock, ctx, ssrc) in &mut senders {
            let (mut p, len) = rtp(seq, *ssrc, 96, &ssrc.to_be_bytes());
            let n = ctx.protect_rtp(&mut p, len).expect("protect");
            sock.send_to(&p[..n], node.media(0)).expect("send");
        }
        seq += 1;
        while let Some((pt, ssrc, payload)) = sub.recv_rtp() {
            assert_eq!(pt, 96);
            let from = u32::from_be_bytes(payload[..4].try_into().expect("4 bytes"));
            if ssrc == slot0 {
                assert_eq!(from, 5000);
                seen0 = true;
            } else if ssrc == slot1 {
                assert_eq!(from, 6000);
                seen1 = true;
            } else {
                panic!("unexpected SSRC {ssrc}");
            }
        }
    }
    node.shutdown();
}

#[test]
fn refusals_change_nothing() {
    let node = TestNode::start_without_rooms_on_demand(1);
    node.create_room("r");
    let token = node.token("r", &[Grant::Publish]);
    let cert = DtlsCert::generate().expect("a certificate");
    let offer = with_fingerprint(WHIP_OFFER, &cert);
    let before = endpoints(&node);

    let check = |r: Reply, status: u16, code: &str| {
        assert_eq!((r.status, r.code().as_str()), (status, code), "{}", r.text);
        assert!(r.header("content-type").starts_with("application/json"));
    };
    // Not SDP, no fingerprint, wrong content type, unknown room, too large.
    check(
        post_offer(&node, "/whip/r", &token, "hello"),
        400,
        "not_sdp",
    );
    let no_fp: String = offer
        .lines()
        .filter(|l| !l.starts_with("a=fingerprint"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    check(
        post_offer(&node, "/whip/r", &token, &no_fp),
        400,
        "missing_fingerprint",
    );
    check(
        send(
            &node,
            "POST",
            "/whip/r",
            Some(&token),
            Some("application/json"),
            &offer,
        ),
        415,
        "unsupported_media_type",
    );
    check(
        send(&node, "POST", "/whip/r", Some(&token), None, &offer),
        415,
        "unsupported_media_type",
    );
    let admin = node.admin.clone();
    check(
        post_offer(&node, "/whip/nope", &admin, &offer),
        404,
        "unknown_room",
    );
    check(
        post_offer(&node, "/whip/r", &token, &"a".repeat(70 * 1024)),
        413,
        "payload_too_large",
    );
    // Simulcast with rids only but without the rtp-stream-id extension.
    let no_rid_ext: String = with_fingerprint(SIMULCAST_OFFER, &cert)
        .lines()
        .filter(|l| !l.ends_with("sdes:rtp-stream-id"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let r = post_offer(&node, "/whip/r", &token, &no_rid_ext);
    assert!(r.text.contains("rtp-stream-id"), "{}", r.text);
    check(r, 422, "missing_ssrc");
    // A section with neither a=ssrc nor a=rid.
    let no_ssrc: String = offer
        .lines()
        .filter(|l| !l.starts_with("a=ssrc:") && !l.starts_with("a=ssrc-group:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    check(
        post_offer(&node, "/whip/r", &token, &no_ssrc),
        422,
        "missing_ssrc",
    );
    // Tokens: none, another room, the wrong grant.
    check(
        send(
            &node,
            "POST",
            "/whip/r",
            None,
            Some("application/sdp"),
            &offer,
        ),
        401,
        "missing_token",
    );
    let other_room = node.token("other", &[Grant::Publish, Grant::Subscribe]);
    check(
        post_offer(&node, "/whip/r", &other_room, &offer),
        403,
        "wrong_room",
    );
    check(
        post_offer(&node, "/whep/r", &other_room, &offer),
        403,
        "wrong_room",
    );
    let subscriber = node.token("r", &[Grant::Subscribe]);
    check(
        post_offer(&node, "/whip/r", &subscriber, &offer),
        403,
        "missing_grant",
    );
    check(
        post_offer(&node, "/whep/r", &token, &offer),
        403,
        "missing_grant",
    );
    // An SSRC already published on the node.
    node.create_endpoint(
        "r",
        &serde_json::json!({
            "role": "publish",
            "srtp": { "profile": "AEAD_AES_128_GCM", "key": common::b64(&[3; 28]) },
            "tracks": [{ "kind": "video", "ssrc": PUB_VIDEO_SSRC, "payload_type": 96 }],
        }),
    );
    let with_one = endpoints(&node);
    check(
        post_offer(&node, "/whip/r", &token, &offer),
        409,
        "duplicate_ssrc",
    );
    assert_eq!(endpoints(&node), with_one);
    assert_eq!(with_one["rooms"][0]["endpoints"], 1);
    assert_eq!(before["rooms"][0]["endpoints"], 0);
    assert_eq!(sessions_metric(&node, "whip", "created"), 0);
    assert_eq!(sessions_metric(&node, "whep", "created"), 0);
    node.shutdown();
}

/// Waits until the worker's `unknown_source` drops reach `want`, then checks
/// that they stay there.
fn expect_unknown_source(node: &TestNode, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while drops(node, "unknown_source") < want {
        assert!(Instant::now() < deadline, "unknown_source not counted");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(drops(node, "unknown_source"), want);
}

#[test]
fn simulcast_with_rids_only_binds_layers_from_packets() {
    let node = TestNode::start(1);
    node.create_room("r");
    let token = node.token("r", &[Grant::Publish]);
    let cert = DtlsCert::generate().expect("a certificate");
    let r = post_offer(
        &node,
        "/whip/r",
        &token,
        &with_fingerprint(SIMULCAST_OFFER, &cert),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.text.contains("a=simulcast:recv q;h;f\r\n"), "{}", r.text);
    assert!(
        r.text
            .contains("a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n"),
        "{}",
        r.text
    );
    let video_pt: u8 = r
        .text
        .lines()
        .find_map(|l| l.strip_prefix("m=video 9 UDP/TLS/RTP/SAVPF "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|pt| pt.parse().ok())
        .expect("a video payload type");
    let a = read_answer(&r.text);
    let mut publisher = connect(&a, "Xk4p", &cert);
    let base = drops(&node, "unknown_source");

    // A rid the offer did not announce binds nothing.
    let p = rid_packet(&mut publisher.tx, 1, 7000, video_pt, b"x");
    publisher.sock.send_to(&p, publisher.node).expect("send");
    expect_unknown_source(&node, base + 1);
    // Layer "h" binds from its first packet (consumed, not a drop); its
    // next packet is forwarded (no drop either); another SSRC claiming "h"
    // is unknown.
    for (seq, ssrc, rid) in [(1, 7001, b"h"), (2, 7001, b"h"), (1, 7002, b"h")] {
        let p = rid_packet(&mut publisher.tx, seq, ssrc, video_pt, rid);
        publisher.sock.send_to(&p, publisher.node).expect("send");
    }
    expect_unknown_source(&node, base + 2);
    // Only layer "h" bound (once).
    assert_eq!(
        node.wait_worker_metric("sfu_simulcast_layers_bound_total", 0, 1),
        1
    );
    node.shutdown();
}

#[test]
fn whep_is_offered_simulcast_layers_bound_before_its_offer() {
    const LAYER_H: u32 = 7001;
    const LAYER_Q: u32 = 7000;
    const LAYER_F: u32 = 7002;
    let node = TestNode::start(1);
    node.create_room("r");
    let (mut publisher, video_pt) = simulcast_publisher(&node, "r");

    // Bind "h", then "q" (two packets each; the first binds).
    let mut layer = |seq: u16, ssrc: u32, rid: &[u8], fill: u8| {
        let p = rid_packet_filled(&mut publisher.tx, seq, ssrc, video_pt, rid, fill);
        publisher.sock.send_to(&p, publisher.node).expect("send");
    };
    for seq in 1..=2 {
        layer(seq, LAYER_H, b"h", 0xa1);
    }
    node.wait_worker_metric("sfu_simulcast_layers_bound_total", 0, 1);
    for seq in 1..=2 {
        layer(seq, LAYER_Q, b"q", 0xa0);
    }
    assert_eq!(
        node.wait_worker_metric("sfu_simulcast_layers_bound_total", 0, 2),
        2
    );

    // WHEP with audio and three video sections: the publisher's audio
    // track, then its one video track (both bound layers are one track,
    // whose layer the node picks per viewer); the other two are inactive.
    let token = node.token("r", &[Grant::Subscribe]);
    let cert = DtlsCert::generate().expect("a certificate");
    let offer = with_fingerprint(&four_section_offer(), &cert);
    let r = post_offer(&node, "/whep/r", &token, &offer);
    assert_eq!(r.status, 201, "{}", r.text);
    let secs = sections(&r.text);
    assert_eq!(secs.len(), 4, "{}", r.text);
    assert!(secs[0].contains("a=sendonly"), "{}", secs[0]);
    assert!(secs[1].contains("a=sendonly"), "{}", secs[1]);
    assert!(secs[1].contains("a=rtpmap:96 VP8/90000"), "{}", secs[1]);
    let (stream, track) = msid(&secs[1]);
    assert!(stream.starts_with("sfu-r-"), "{}", secs[1]);
    assert_eq!(track, "video0", "{}", secs[1]);
    // Audio and video of one publisher: one msid stream.
    assert_eq!(msid(&secs[0]).0, stream, "{}", r.text);
    for sec in &secs[2..] {
        assert!(sec.contains("a=inactive"), "{sec}");
        assert_eq!(section_ssrc(sec), None);
    }
    let slot0 = section_ssrc(&secs[1]).expect("video slot 0");
    let mut sub = connect(&read_answer(&r.text), WHEP_UFRAG, &cert);

    // A layer bound after the offer joins the track: the viewer, on no cap
    // and no estimate yet, moves to the highest declared layer ("f") at
    // its keyframe (every test packet starts a VP8 keyframe), and gets one
    // layer at a time on its one SSRC.
    layer(1, LAYER_F, b"f", 0xa2);
    assert_eq!(
        node.wait_worker_metric("sfu_simulcast_layers_bound_total", 0, 3),
        3
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seq = 3u16;
    let mut on_f = 0;
    while on_f < 5 {
        assert!(Instant::now() < deadline, "layer f did not arrive");
        layer(seq, LAYER_H, b"h", 0xa1);
        layer(seq, LAYER_Q, b"q", 0xa0);
        layer(seq, LAYER_F, b"f", 0xa2);
        seq += 1;
        std::thread::sleep(Duration::from_millis(5));
        while let Some((pt, ssrc, payload)) = sub.recv_rtp() {
            assert_eq!(pt, 96);
            assert_eq!(ssrc, slot0, "one SSRC for the track");
            let fill = *payload.last().expect("a payload");
            if fill == 0xa2 {
                on_f += 1;
            } else {
                assert_eq!(on_f, 0, "no other layer after the switch to f ({fill:#x})");
            }
        }
    }
    node.shutdown();
}

#[test]
fn resource_methods_options_and_patch() {
    let node = TestNode::start(1);
    node.create_room("r");
    let token = node.token("r", &[Grant::Publish]);
    let cert = DtlsCert::generate().expect("a certificate");

    // OPTIONS needs no token.
    for path in ["/whip/r", "/whep/r"] {
        let r = send(&node, "OPTIONS", path, None, None, "");
        assert_eq!(r.status, 204, "{path}: {}", r.text);
        assert_eq!(r.header("accept-post"), "application/sdp");
    }
    let (status, headers) = node.preflight(
        "/whip/r",
        "https://player.example",
        "POST",
        "authorization,content-type",
    );
    assert!((200..300).contains(&status), "{status}");
    assert!(headers.get("access-control-allow-origin").is_some());

    let r = post_offer(
        &node,
        "/whip/r",
        &token,
        &with_fingerprint(WHIP_OFFER, &cert),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let location = r.header("location").to_owned();
    // No trickle ICE or ICE restarts: PATCH is not allowed on the session.
    let r = send(
        &node,
        "PATCH",
        &location,
        Some(&token),
        Some("application/trickle-ice-sdpfrag"),
        "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n",
    );
    assert_eq!(r.status, 405, "{}", r.text);
    assert!(r.header("allow").contains("DELETE"), "{:?}", r.headers);
    // GET on the endpoint URL is reserved (RFC 9725 §4.1).
    let r = send(&node, "GET", "/whip/r", Some(&token), None, "");
    assert_eq!(r.status, 405, "{}", r.text);
    // DELETE needs the grant too.
    let r = send(&node, "DELETE", &location, None, None, "");
    assert_eq!(r.status, 401);
    let other = node.token("other", &[Grant::Publish]);
    let r = send(&node, "DELETE", &location, Some(&other), None, "");
    assert_eq!(r.status, 403);
    let r = send(&node, "DELETE", &location, Some(&token), None, "");
    assert_eq!(r.status, 200);
    node.shutdown();
}

#[test]
fn bad_ice_checks_and_dtls_garbage_are_counted_not_answered() {
    let node = TestNode::start(1);
    node.create_room("r");
    let token = node.token("r", &[Grant::Publish]);
    let cert = DtlsCert::generate().expect("a certificate");
    let r = post_offer(
        &node,
        "/whip/r",
        &token,
        &with_fingerprint(WHIP_OFFER, &cert),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let a = read_answer(&r.text);

    // A check signed with the wrong password: no answer, counted.
    let sock = socket();
    let before = drops(&node, "stun_auth_failed");
    let wrong = "x".repeat(a.pwd.len());
    assert_eq!(ice_check(&sock, &a, WHIP_UFRAG, &wrong), None);
    let deadline = Instant::now() + Duration::from_secs(5);
    while drops(&node, "stun_auth_failed") <= before {
        assert!(Instant::now() < deadline, "stun_auth_failed not counted");
        std::thread::sleep(Duration::from_millis(20));
    }

    // A valid check verifies the address; DTLS garbage from it is counted.
    let mapped = ice_check(&sock, &a, WHIP_UFRAG, &a.pwd).expect("a valid check is answered");
    assert_eq!(mapped, sock.local_addr().expect("local address"));
    let before = drops(&node, "dtls_failed");
    let mut garbage = vec![22u8, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1, 0, 40];
    garbage.extend(std::iter::repeat_n(0xa5u8, 40));
    sock.send_to(&garbage, a.candidate).expect("send garbage");
    // Only the valid check counts as one.
    assert_eq!(node.wait_worker_metric("sfu_ice_checks_total", 0, 1), 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while drops(&node, "dtls_failed") <= before {
        assert!(Instant::now() < deadline, "dtls_failed not counted");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The node still serves. The garbage failed the handshake, which
    // removes the session at once (`dtls_failed`), so the same SSRCs
    // publish again.
    assert_eq!(node.get("/healthz").status, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    while endpoints(&node)["rooms"][0]["endpoints"] != 0 {
        assert!(
            Instant::now() < deadline,
            "the failed session was not removed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = post_offer(
        &node,
        "/whip/r",
        &token,
        &with_fingerprint(WHIP_OFFER, &DtlsCert::generate().expect("cert")),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    node.shutdown();
}

/// A publisher that closes its DTLS association (a tab closed with
/// close_notify) is removed by its worker and forgotten by the control
/// plane within about a second: the room is empty, the session counted as
/// ended, and the same offer (same SSRCs, 409 while it lived) publishes
/// again at once.
///
/// The event stream tells the signaling service as it happens: joined,
/// connected (with the DTLS-negotiated profile), then left with the
/// router's reason `dtls_closed`.
#[test]
fn a_closed_session_is_removed_and_the_same_peer_rejoins() {
    let node = TestNode::start(1);
    node.create_room("live");
    let events =
        subscribe(&node, Some(&node.admin), "?room=live", false).expect("an admin may listen");
    let token = node.token("live", &[Grant::Publish]);
    let cert = DtlsCert::generate().expect("a certificate");
    let offer = with_fingerprint(WHIP_OFFER, &cert);
    let r = post_offer(&node, "/whip/live", &token, &offer);
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        endpoints(&node)["rooms"][0]["pending"],
        1,
        "not connected yet"
    );
    let mut peer = connect(&read_answer(&r.text), WHIP_UFRAG, &cert);
    let next = || events.event().1;
    let joined = next();
    assert_eq!(joined["type"], "participant_joined", "{joined}");
    let endpoint = joined["endpoint"].clone();
    let connected = next();
    assert_eq!(connected["type"], "participant_connected", "{connected}");
    assert_eq!(connected["endpoint"], endpoint);
    assert_eq!(connected["profile"], "AEAD_AES_128_GCM");
    // The model follows the router's event.
    assert_eq!(endpoints(&node)["rooms"][0]["pending"], 0, "connected");
    assert_eq!(post_offer(&node, "/whip/live", &token, &offer).status, 409);
    peer.close();
    let left = next();
    assert_eq!(
        (&left["type"], &left["endpoint"], &left["reason"]),
        (
            &Value::from("participant_left"),
            &endpoint,
            &Value::from("dtls_closed")
        ),
        "{left}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while endpoints(&node)["rooms"][0]["endpoints"] != 0 {
        assert!(
            Instant::now() < deadline,
            "the closed session was not removed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(sessions_metric(&node, "whip", "ended"), 1);
    let m = node.get("/metrics");
    assert!(
        m.text
            .contains("sfu_endpoints_removed_total{worker=\"0\",reason=\"dtls_closed\"} 1"),
        "{}",
        m.text
    );
    let r = post_offer(&node, "/whip/live", &token, &offer);
    assert_eq!(r.status, 201, "rejoin: {}", r.text);
    connect(&read_answer(&r.text), WHIP_UFRAG, &cert);
}

/// A tab closed mid-call without DELETE and without close_notify: its ICE
/// checks stop. With a 1 s consent timeout the worker removes it about a
/// second later; the event stream says `consent_lost` then
/// `participant_left` (reason `consent_lost`), the webhook gets the same
/// `participant_left`, and the room is empty again.
#[test]
fn a_tab_closed_mid_call_is_removed_at_the_consent_deadline() {
    let hook = Hook::start(0);
    let mut config = common::test_config(1, common::TEST_SECRET);
    config.limits.consent_timeout_secs = 1;
    config.webhook.url = Some(hook.url.clone());
    let node = TestNode::start_with_config(config);
    node.create_room("live");
    let events =
        subscribe(&node, Some(&node.admin), "?room=live", false).expect("an admin may listen");
    let token = node.token("live", &[Grant::Publish]);
    let cert = DtlsCert::generate().expect("a certificate");
    let offer = with_fingerprint(WHIP_OFFER, &cert);
    let r = post_offer(&node, "/whip/live", &token, &offer);
    assert_eq!(r.status, 201, "{}", r.text);
    let _tab = connect(&read_answer(&r.text), WHIP_UFRAG, &cert);
    let connected_at = Instant::now();
    let next = || events.event().1;
    let types: Vec<Value> = (0..4).map(|_| next()).collect();
    let kinds: Vec<&str> = types.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "participant_joined",
            "participant_connected",
            "consent_lost",
            "participant_left"
        ]
    );
    let elapsed = connected_at.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(4),
        "removed {elapsed:?} after connecting, consent timeout 1 s"
    );
    assert_eq!(types[3]["reason"], "consent_lost");
    assert_eq!(types[3]["endpoint"], types[0]["endpoint"]);
    assert_eq!(endpoints(&node)["rooms"][0]["endpoints"], 0);
    // The webhook: started, joined, connected, left (stream-only events
    // such as consent_lost are not sent).
    let delivered: Vec<Value> = (0..4)
        .map(|_| {
            let d = hook.next(Duration::from_secs(5));
            verify(&d, common::TEST_SECRET);
            serde_json::from_str(&d.body).expect("a JSON body")
        })
        .collect();
    let kinds: Vec<&str> = delivered
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "room_started",
            "participant_joined",
            "participant_connected",
            "participant_left"
        ]
    );
    assert_eq!(delivered[3], types[3], "the webhook carries the same event");
}

/// The `a=msid:` stream and track ids of an answer's media section.
fn msid(section: &str) -> (String, String) {
    section
        .lines()
        .find_map(|l| l.strip_prefix("a=msid:"))
        .and_then(|m| m.split_once(' '))
        .map(|(stream, track)| (stream.to_owned(), track.to_owned()))
        .expect("an a=msid line")
}
