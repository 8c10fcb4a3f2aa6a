//! The WHEP extensions over real HTTP and UDP: the `Link` headers of a
//! WHEP answer, per-session server-sent events (`active`, `inactive`,
//! `layers`, `viewercount`, and the node's `dominantspeaker`, `slots`), the
//! stream's end with its session, who may use a session's extensions, and
//! layer selection switching the layer a viewer is forwarded.

mod common;

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::TestNode;
use common::webrtc::*;
use control::auth::{self, Claims, Grant};
use serde_json::{Value, json};
use sfu_core::dtls::DtlsCert;
use sfu_core::srtp::{Profile, SrtpConfig, SrtpContext};
use sfu_core::wire::rtp::{RtpHeader, write_header};

const SSE_REL: &str = "urn:ietf:params:whep:ext:core:server-sent-events";
const LAYER_REL: &str = "urn:ietf:params:whep:ext:core:layer";

/// A token for `room` with the subscribe grant and identity `sub`.
fn viewer_token(node: &TestNode, room: &str, sub: Option<&str>) -> String {
    let mut claims = Claims::new(room, &[Grant::Subscribe], auth::unix_now(), 3600);
    claims.sub = sub.map(str::to_owned);
    auth::mint(node.secret.as_bytes(), &claims)
}

/// A WHEP session's id and its extension URLs.
struct Session {
    id: String,
    sse: String,
    layer: String,
    events: String,
    answer: String,
    cert: DtlsCert,
}

/// POSTs a WHEP offer (`offer` with a fresh certificate) to `path`; reads
/// the `Link` headers.
fn whep(node: &TestNode, path: &str, token: &str, offer: &str) -> Session {
    let cert = DtlsCert::generate().expect("a certificate");
    let r = post_offer(node, path, token, &with_fingerprint(offer, &cert));
    assert_eq!(r.status, 201, "{}", r.text);
    let location = r.header("location").to_owned();
    let id = location.rsplit('/').next().expect("an id").to_owned();
    let links: Vec<&str> = r
        .headers
        .get_all("link")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(links.len(), 2, "{links:?}");
    let url = |l: &str| {
        l.strip_prefix('<')
            .and_then(|l| l.split_once('>'))
            .map(|(u, _)| u.to_owned())
            .expect("<url>")
    };
    let sse = links
        .iter()
        .find(|l| l.contains(&format!("rel=\"{SSE_REL}\"")))
        .expect("the server-sent events link");
    let layer = links
        .iter()
        .find(|l| l.contains(&format!("rel=\"{LAYER_REL}\"")))
        .expect("the layer link");
    let events = sse
        .split("events=\"")
        .nth(1)
        .and_then(|e| e.split('"').next())
        .expect("an events attribute")
        .to_owned();
    assert_eq!(url(sse), format!("{location}/sse"));
    assert_eq!(url(layer), format!("{location}/layer"));
    Session {
        id,
        sse: url(sse),
        layer: url(layer),
        events,
        answer: r.text,
        cert,
    }
}

/// POSTs `events` to a session's SSE URL; returns the stream's location.
fn create_stream(node: &TestNode, session: &Session, token: &str, events: &str) -> String {
    let r = send(
        node,
        "POST",
        &session.sse,
        Some(token),
        Some("application/json"),
        events,
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let location = r.header("location").to_owned();
    assert!(
        location.starts_with(&format!("{}/", session.sse)),
        "{location}"
    );
    location
}

/// An open `GET` of an event stream: `(event, data)` per frame, `None` once
/// it ends.
struct Events(mpsc::Receiver<Option<(String, Value)>>);

impl Events {
    fn open(node: &TestNode, path: &str, token: &str) -> Self {
        let response = agent()
            .get(format!("{}{path}", node.base))
            .header("authorization", format!("Bearer {token}"))
            .call()
            .expect("the HTTP exchange completes");
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(
            response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(response.into_body().into_reader()).lines();
            let (mut event, mut data) = (None, None);
            while let Some(Ok(line)) = lines.next() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = Some(e.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str::<Value>(d).expect("one line of JSON"));
                } else if line.is_empty() {
                    if let (Some(e), Some(d)) = (event.take(), data.take())
                        && tx.send(Some((e, d))).is_err()
                    {
                        return;
                    }
                } else {
                    assert!(line.starts_with(':'), "unexpected line {line:?}");
                }
            }
            let _ = tx.send(None);
        });
        Self(rx)
    }

    /// The next frame named `name` whose data passes `check`, within
    /// `within`; panics otherwise.
    fn expect(&self, name: &str, within: Duration, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok(Some((e, d))) if e == name && check(&d) => return d,
                Ok(Some(other)) => seen.push(other),
                Ok(None) => panic!("the stream ended waiting for {name}; saw {seen:?}"),
                Err(_) => panic!("no matching {name} within {within:?}; saw {seen:?}"),
            }
        }
    }

    /// The frames that arrived so far.
    fn drain(&self) -> Vec<(String, Value)> {
        self.0.try_iter().flatten().collect()
    }

    /// Whether the stream ends within `within` (frames before are skipped).
    fn ends(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok(Some(_)) => continue,
                Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => return true,
                Err(mpsc::RecvTimeoutError::Timeout) => return false,
            }
        }
    }
}

/// An API publisher of one Opus track (RFC 6464 levels, extension id 1)
/// and one VP8 track; returns its id and its SRTP context.
fn api_publisher(node: &TestNode, room: &str, ssrc: u32, seed: u8) -> (String, SrtpContext) {
    let master = [seed; 28];
    let created = node.create_endpoint(
        room,
        &json!({
            "role": "publish",
            "srtp": { "profile": "AEAD_AES_128_GCM", "key": common::b64(&master) },
            "tracks": [
                { "kind": "audio", "ssrc": ssrc, "payload_type": 111 },
                { "kind": "video", "ssrc": ssrc + 1, "payload_type": 96 },
            ],
            "audio_level_extension": 1,
        }),
    );
    let (key, salt) = master.split_at(16);
    let tx = SrtpContext::new(Profile::AeadAes128Gcm, key, salt, SrtpConfig::default())
        .expect("key lengths");
    (created["id"].as_str().expect("id").to_owned(), tx)
}

/// One Opus packet of `ssrc` at audio level `level` (-dBov).
fn opus(tx: &mut SrtpContext, ssrc: u32, seq: u16, level: u8) -> Vec<u8> {
    let mut buf = [0u8; 256];
    let header = RtpHeader {
        payload_type: 111,
        sequence_number: seq,
        timestamp: u32::from(seq) * 960,
        ssrc,
        marker: false,
    };
    let n = write_header(&mut buf, &header, &[(1, &[0x80 | level])]).expect("header");
    buf[n..n + 40].fill(0xfc);
    let n = tx.protect_rtp(&mut buf, n + 40).expect("protect");
    buf[..n].to_vec()
}

#[test]
fn a_session_streams_active_inactive_viewers_speakers_and_slots_until_deleted() {
    let node = TestNode::start(1);
    let room = node.create_room("r");
    let worker = room["worker"].as_u64().expect("worker") as usize;
    let token = viewer_token(&node, "r", Some("viewer-1"));
    // No publisher yet: a last-N session (one audio, one video slot).
    let s = whep(&node, "/whep/r", &token, WHEP_OFFER);
    assert_eq!(
        s.events,
        "active,inactive,layers,viewercount,dominantspeaker,activespeakers,slots"
    );
    let stream = create_stream(&node, &s, &token, "");
    let events = Events::open(&node, &stream, &token);
    // The state first: one viewer, empty slots (m-line 0 audio, 1 video).
    events.expect("viewercount", Duration::from_secs(5), |d| {
        d["viewercount"] == 1
    });
    let slots = events.expect("slots", Duration::from_secs(5), |_| true);
    assert_eq!(
        slots["slots"],
        json!([
            {"mediaId": "0", "kind": "audio", "slot": 0, "endpoint": null, "participant": null},
            {"mediaId": "1", "kind": "video", "slot": 0, "endpoint": null, "participant": null},
        ])
    );

    // A publisher joins: its two tracks become active and fill the slots.
    const SSRC: u32 = 0x7150_0000;
    let (publisher, mut tx) = api_publisher(&node, "r", SSRC, 0x42);
    let active = events.expect("active", Duration::from_secs(5), |d| d["kind"] == "video");
    assert_eq!(active["endpoint"], publisher.as_str());
    assert_eq!(active["track"], SSRC + 1);
    assert_eq!(active["mediaIds"], json!(["1"]));
    events.expect("slots", Duration::from_secs(5), |d| {
        d["slots"][0]["endpoint"] == publisher.as_str()
            && d["slots"][1]["endpoint"] == publisher.as_str()
    });

    // It talks: the room's dominant speaker, by name.
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let media = node.media(worker);
    let (done, stop) = mpsc::channel::<()>();
    let talker = std::thread::spawn(move || {
        for seq in 0u16..400 {
            let level = if seq < 50 {
                70
            } else {
                22 + (seq * 7 % 13) as u8
            };
            socket
                .send_to(&opus(&mut tx, SSRC, seq, level), media)
                .expect("send");
            std::thread::sleep(Duration::from_millis(20));
            if stop.try_recv().is_ok() {
                return;
            }
        }
    });
    let dominant = events.expect("dominantspeaker", Duration::from_secs(6), |_| true);
    assert_eq!(dominant["endpoint"], publisher.as_str());
    let _ = done.send(());
    talker.join().expect("the talker thread");

    // Paused: its video never sent a packet, so the video track goes
    // inactive two seconds after it appeared; its audio just stopped too.
    let paused = events.expect("inactive", Duration::from_secs(5), |d| d["kind"] == "video");
    assert_eq!(paused["endpoint"], publisher.as_str());

    // A second viewer.
    let other = whep(
        &node,
        "/whep/r",
        &viewer_token(&node, "r", None),
        WHEP_OFFER,
    );
    events.expect("viewercount", Duration::from_secs(5), |d| {
        d["viewercount"] == 2
    });
    // Another publisher appears, then leaves.
    let (second, _) = api_publisher(&node, "r", 0x7250_0000, 0x43);
    events.expect("active", Duration::from_secs(5), |d| {
        d["endpoint"] == second.as_str() && d["kind"] == "audio"
    });
    let deleted = node.delete(&format!("/v1/rooms/r/endpoints/{second}"));
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    let t = Instant::now();
    events.expect("inactive", Duration::from_secs(3), |d| {
        d["endpoint"] == second.as_str() && d["kind"] == "audio"
    });
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    assert!(
        node.get("/metrics")
            .text
            .contains("sfu_whep_event_streams 1\n")
    );

    // Deleting the session ends its stream; its URLs are gone.
    let r = send(
        &node,
        "DELETE",
        &format!("/whep/r/{}", s.id),
        Some(&token),
        None,
        "",
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(events.ends(Duration::from_secs(3)), "the stream ended");
    let r = send(&node, "GET", &stream, Some(&token), None, "");
    assert_eq!(r.status, 404, "{}", r.text);
    let r = send(&node, "POST", &s.sse, Some(&token), None, "");
    assert_eq!(r.status, 404, "{}", r.text);
    drop(other);
    node.shutdown();
}

#[test]
fn only_the_sessions_room_and_identity_reach_its_extensions() {
    let node = TestNode::start(1);
    node.create_room("a");
    node.create_room("b");
    let alice = viewer_token(&node, "a", Some("alice"));
    let in_a = whep(&node, "/whep/a", &alice, WHEP_OFFER);
    let token_b = viewer_token(&node, "b", None);
    let in_b = whep(&node, "/whep/b", &token_b, WHEP_OFFER);
    let post = |path: &str, token: &str, body: &str| {
        send(
            &node,
            "POST",
            path,
            Some(token),
            Some("application/json"),
            body,
        )
    };

    // Room A's token on room B's session: 403, or 404 through room A's path.
    let r = post(&in_b.sse, &alice, "");
    assert_eq!(
        (r.status, r.code().as_str()),
        (403, "wrong_room"),
        "{}",
        r.text
    );
    let r = post(&format!("/whep/a/{}/sse", in_b.id), &alice, "");
    assert_eq!(r.status, 404, "{}", r.text);
    let r = post(&format!("/whep/a/{}/layer", in_b.id), &alice, "{}");
    assert_eq!(r.status, 404, "{}", r.text);
    let stream_b = create_stream(&node, &in_b, &token_b, r#"["viewercount"]"#);
    let r = send(&node, "GET", &stream_b, Some(&alice), None, "");
    assert_eq!(r.status, 403, "{}", r.text);
    let r = send(&node, "GET", &stream_b, None, None, "");
    assert_eq!(r.status, 401, "{}", r.text);
    // Another identity of room A: 403; an admin may.
    let bob = viewer_token(&node, "a", Some("bob"));
    let r = post(&in_a.sse, &bob, "");
    assert_eq!(
        (r.status, r.code().as_str()),
        (403, "wrong_identity"),
        "{}",
        r.text
    );
    create_stream(&node, &in_a, &node.admin, r#"["layers"]"#);

    // Hostile bodies: 400, never a panic; limits hold.
    for body in ["{", "[1]", r#"["active","nonsense"]"#, r#"{"active":true}"#] {
        let r = post(&in_a.sse, &alice, body);
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "bad_request"),
            "{body}: {}",
            r.text
        );
    }
    for body in [
        "[",
        r#"{"encodingId":1}"#,
        r#"{"mediaId":"1","bogus":2}"#,
        r#"{"encodingId":"h","spatialLayerId":1}"#,
        "null",
    ] {
        let r = post(&in_a.layer, &alice, body);
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "bad_request"),
            "{body}: {}",
            r.text
        );
    }
    let r = post(&in_a.layer, &alice, r#"{"temporalLayerId":1}"#);
    assert_eq!(
        (r.status, r.code().as_str()),
        (422, "unsupported_layer"),
        "{}",
        r.text
    );
    let r = post(&in_a.layer, &alice, r#"{"mediaId":"7"}"#);
    assert_eq!(
        (r.status, r.code().as_str()),
        (422, "unknown_media"),
        "{}",
        r.text
    );
    // The admin's stream is the first; three more fit, the fifth does not.
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(create_stream(&node, &in_a, &alice, r#"["active"]"#));
    }
    let r = post(&in_a.sse, &alice, "");
    assert_eq!(
        (r.status, r.code().as_str()),
        (503, "too_many"),
        "{}",
        r.text
    );
    // A deleted stream is gone, and frees its place.
    let gone = streams.pop().expect("a stream");
    let r = send(&node, "DELETE", &gone, Some(&alice), None, "");
    assert_eq!(r.status, 200, "{}", r.text);
    let r = send(&node, "GET", &gone, Some(&alice), None, "");
    assert_eq!(r.status, 404, "{}", r.text);
    create_stream(&node, &in_a, &alice, "[]");
    node.shutdown();
}

#[test]
fn layers_are_announced_and_a_layer_selection_switches_the_forwarded_layer() {
    const LAYER_Q: u32 = 7000;
    const LAYER_H: u32 = 7001;
    const LAYER_F: u32 = 7002;
    let node = TestNode::start(1);
    node.create_room("r");
    let (mut publisher, video_pt) = simulcast_publisher(&node, "r");
    let mut seq = 1u16;
    // One packet of each layer (each a VP8 keyframe tagged with its
    // layer: q 0xa0, h 0xa1, f 0xa2), sized so that their measured
    // bitrates rise with quality.
    let mut send_layers = |publisher: &mut Peer| {
        for (ssrc, rid, fill, size) in [
            (LAYER_Q, &b"q"[..], 0xa0, 100),
            (LAYER_H, b"h", 0xa1, 300),
            (LAYER_F, b"f", 0xa2, 900),
        ] {
            let p = rid_packet_sized(&mut publisher.tx, seq, ssrc, video_pt, rid, fill, size);
            publisher.sock.send_to(&p, publisher.node).expect("send");
        }
        seq += 1;
    };
    send_layers(&mut publisher);
    node.wait_worker_metric("sfu_simulcast_layers_bound_total", 0, 3);

    let token = viewer_token(&node, "r", None);
    let s = whep(&node, "/whep/r", &token, &four_section_offer());
    let slot0 = section_ssrc(&sections(&s.answer)[1]).expect("video slot 0");
    let mut viewer = connect(&read_answer(&s.answer), WHEP_UFRAG, &s.cert);
    let stream = create_stream(&node, &s, &token, r#"["layers"]"#);
    let events = Events::open(&node, &stream, &token);

    // Keeps every layer flowing; returns the layer tags the viewer got.
    let mut pump = |publisher: &mut Peer, viewer: &mut Peer, millis: u64| {
        let end = Instant::now() + Duration::from_millis(millis);
        let mut got = Vec::new();
        while Instant::now() < end {
            send_layers(publisher);
            std::thread::sleep(Duration::from_millis(10));
            while let Some((_, ssrc, payload)) = viewer.recv_rtp() {
                assert_eq!(ssrc, slot0, "one SSRC for the track");
                got.push(*payload.last().expect("a payload"));
            }
        }
        got
    };
    let got = pump(&mut publisher, &mut viewer, 1500);
    assert_eq!(got.last(), Some(&0xa2), "on the top layer: {got:x?}");
    // Three active layers on video m-line 1, highest first, measured
    // (the layers keep flowing meanwhile).
    let deadline = Instant::now() + Duration::from_secs(10);
    let layers = loop {
        assert!(Instant::now() < deadline, "no measured layers event");
        pump(&mut publisher, &mut viewer, 200);
        let found = events.drain().into_iter().rev().find(|(e, d)| {
            e == "layers"
                && d["1"]["layers"].as_array().is_some_and(|l| {
                    l.len() == 3
                        && l.iter()
                            .all(|l| l["bitrate"].as_u64().is_some_and(|b| b > 0))
                })
        });
        if let Some((_, d)) = found {
            break d;
        }
    };
    let ids: Vec<(&str, u64, u64)> = layers["1"]["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            (
                l["encodingId"].as_str().expect("encodingId"),
                l["spatialLayerId"].as_u64().expect("spatialLayerId"),
                l["simulcastIdx"].as_u64().expect("simulcastIdx"),
            )
        })
        .collect();
    assert_eq!(ids, [("f", 2, 2), ("h", 1, 1), ("q", 0, 0)], "{layers}");
    assert_eq!(layers["1"]["inactive"], json!([]));
    assert_eq!(layers["1"]["active"].as_array().map(Vec::len), Some(3));

    // The viewer asks for "q": only q arrives once it switched.
    let switches = node.worker_metric("sfu_layer_switches_total", 0);
    let r = send(
        &node,
        "POST",
        &s.layer,
        Some(&token),
        Some("application/json"),
        r#"{"mediaId":"1","encodingId":"q"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let got = pump(&mut publisher, &mut viewer, 1000);
    let after: Vec<u8> = got.iter().copied().skip_while(|&t| t != 0xa0).collect();
    assert!(after.len() > 10, "switched to q: {got:x?}");
    assert!(
        after.iter().all(|&t| t == 0xa0),
        "only q after the switch: {got:x?}"
    );
    assert!(node.worker_metric("sfu_layer_switches_total", 0) > switches);
    // The admin's view of the session: its consumer on q, and its
    // bandwidth estimate (it negotiated the transport-wide number), still
    // at the start rate without feedback.
    let state = node.get(&format!("/v1/rooms/r/endpoints/{}", s.id));
    assert_eq!(state.status, 200, "{}", state.text);
    let bw = &state.json["bandwidth"];
    assert_eq!(bw["target_bps"], 300_000, "{}", state.text);
    assert_eq!(bw["loss_bound_bps"], Value::Null, "{}", state.text);
    assert_eq!(bw["paused_videos"], 0, "{}", state.text);
    let consumers = state.json["consumers"].as_array().expect("consumers");
    assert!(
        consumers.iter().any(|c| c["ssrc"] == slot0),
        "{}",
        state.text
    );
    // An unknown layer is refused; `{}` returns to the node's choice.
    let r = send(
        &node,
        "POST",
        &s.layer,
        Some(&token),
        Some("application/json"),
        r#"{"encodingId":"x"}"#,
    );
    assert_eq!(
        (r.status, r.code().as_str()),
        (422, "unknown_layer"),
        "{}",
        r.text
    );
    let r = send(
        &node,
        "POST",
        &s.layer,
        Some(&token),
        Some("application/json"),
        "{}",
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let got = pump(&mut publisher, &mut viewer, 1000);
    assert_eq!(got.last(), Some(&0xa2), "back on the top layer: {got:x?}");
    // By rank: spatialLayerId 1 is "h".
    let r = send(
        &node,
        "POST",
        &s.layer,
        Some(&token),
        Some("application/json"),
        r#"{"spatialLayerId":1}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let got = pump(&mut publisher, &mut viewer, 1000);
    assert_eq!(got.last(), Some(&0xa1), "on the middle layer: {got:x?}");
    node.shutdown();
}
