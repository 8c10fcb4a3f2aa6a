//! Speakers and last-N over real HTTP and UDP: a WHEP session in slots
//! mode is answered with one sending section per slot, and an API
//! publisher's audio-level-tagged SRTP makes a `dominant_speaker` event
//! on `GET /v1/events`.

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::events::{Frame, subscribe};
use common::{TestNode, b64};
use control::auth::{self, Claims, Grant};
use serde_json::json;
use sfu_core::dtls::DtlsCert;
use sfu_core::srtp::{Profile, SrtpConfig, SrtpContext};
use sfu_core::wire::rtp::{RtpHeader, write_header};

const WHEP_OFFER: &str = include_str!("fixtures/chrome-whep-offer.sdp");

/// The WHEP fixture (audio mid 0, video mid 1) with its video section
/// repeated as mids 2 and 3: three video and one audio transceiver.
fn four_section_offer(cert: &DtlsCert) -> String {
    let mut secs: Vec<String> = Vec::new();
    let mut head = String::new();
    for line in WHEP_OFFER.lines() {
        let line = if line.starts_with("a=fingerprint:") {
            format!("a=fingerprint:{}", cert.fingerprint())
        } else {
            line.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0 1 2 3")
        };
        if line.starts_with("m=") {
            secs.push(String::new());
        }
        match secs.last_mut() {
            Some(s) => s.push_str(&format!("{line}\r\n")),
            None => head.push_str(&format!("{line}\r\n")),
        }
    }
    let video = secs[1].clone();
    format!(
        "{head}{}{video}{}{}",
        secs[0],
        video.replace("a=mid:1", "a=mid:2"),
        video.replace("a=mid:1", "a=mid:3")
    )
}

fn sections(sdp: &str) -> Vec<&str> {
    sdp.split("m=").skip(1).collect()
}

#[test]
fn whep_slots_are_answered_sendonly_and_a_talker_becomes_dominant() {
    let node = TestNode::start(1);
    let room = node.create_room("talk");
    let worker = room["worker"].as_u64().expect("worker") as usize;
    let events = subscribe(&node, Some(&node.admin), "?room=talk", false).expect("admin listens");

    // A viewer with an identity, before anyone publishes, asking for slots.
    let mut claims = Claims::new("talk", &[Grant::Subscribe], auth::unix_now(), 3600);
    claims.sub = Some("viewer-1".into());
    let token = auth::mint(node.secret.as_bytes(), &claims);
    let cert = DtlsCert::generate().expect("a certificate");
    let (status, answer) =
        node.post_sdp("/whep/talk?mode=slots", &token, &four_section_offer(&cert));
    assert_eq!(status, 201, "{answer}");
    let secs = sections(&answer);
    assert_eq!(secs.len(), 4, "{answer}");
    let kinds: Vec<&str> = secs.iter().map(|s| &s[..5]).collect();
    assert_eq!(kinds, ["audio", "video", "video", "video"]);
    for (s, msid) in secs.iter().zip(["slota0", "slotv0", "slotv1", "slotv2"]) {
        assert!(s.contains("a=sendonly"), "{s}");
        assert!(s.contains(&format!("a=msid:sfu-talk-{msid} ")), "{s}");
        assert!(s.contains("a=ssrc:"), "{s}");
    }

    // An API publisher sending Opus with RFC 6464 levels (extension id 1).
    let master = [0x42u8; 28];
    const SSRC: u32 = 0x5150_0001;
    let created = node.create_endpoint(
        "talk",
        &json!({
            "role": "publish",
            "srtp": { "profile": "AEAD_AES_128_GCM", "key": b64(&master) },
            "tracks": [{ "kind": "audio", "ssrc": SSRC, "payload_type": 111 }],
            "audio_level_extension": 1,
        }),
    );
    let publisher_id = created["id"].as_str().expect("id").to_owned();
    let (key, salt) = master.split_at(16);
    let mut tx = SrtpContext::new(Profile::AeadAes128Gcm, key, salt, SrtpConfig::default())
        .expect("key lengths");
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let media = node.media(worker);
    let start = Instant::now();
    let mut dominant = None;
    // A second of room noise at -70 dBov (the noise floor), then speech at
    // -22 to -34 dBov, in 20 ms frames until the event comes.
    'talk: for frame in 0u16..200 {
        let level = if frame < 50 {
            70
        } else {
            22 + (frame * 7 % 13) as u8
        };
        let mut buf = [0u8; 256];
        let header = RtpHeader {
            payload_type: 111,
            sequence_number: frame,
            timestamp: u32::from(frame) * 960,
            ssrc: SSRC,
            marker: false,
        };
        let n = write_header(&mut buf, &header, &[(1, &[0x80 | level])]).expect("header");
        buf[n..n + 40].fill(0xfc);
        let n = tx.protect_rtp(&mut buf, n + 40).expect("protect");
        socket.send_to(&buf[..n], media).expect("send");
        std::thread::sleep(Duration::from_millis(20));
        while let Some(f) = events.next(Duration::ZERO) {
            if let Frame::Event { data, .. } = f
                && data["type"] == "dominant_speaker"
            {
                dominant = Some((start.elapsed(), data));
                break 'talk;
            }
        }
    }
    let (after, event) = dominant.expect("a dominant_speaker event within 4 s");
    let after = after.saturating_sub(Duration::from_secs(1));
    eprintln!("dominant_speaker on the event stream {after:?} after speech began: {event}");
    assert_eq!(event["room"], "talk");
    assert_eq!(event["endpoint"], publisher_id.as_str());
    assert!(after < Duration::from_secs(2), "{after:?}");
    assert!(node.worker_metric("sfu_dominant_speaker_changes_total", worker) >= 1);
    node.shutdown();
}
