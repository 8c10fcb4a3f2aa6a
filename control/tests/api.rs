//! The HTTP control API over real HTTP against an in-process node: bad input,
//! room and endpoint lifecycle, subscriptions, load and metrics, and SRTP
//! media forwarded end to end through a worker.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::{TestNode, b64, unb64};
use control::auth::Grant;
use serde_json::{Value, json};
use sfu_core::router::DropReason;
use sfu_core::srtp::{Profile, SrtpConfig, SrtpContext};

const GCM: &str = "AEAD_AES_128_GCM";

fn gcm_key(seed: u8) -> String {
    b64(&[seed; 28])
}

fn publisher(ssrc: u32) -> Value {
    json!({
        "role": "publish",
        "srtp": { "profile": GCM, "key": gcm_key(1) },
        "tracks": [{ "kind": "video", "ssrc": ssrc, "payload_type": 96 }],
    })
}

fn rooms(node: &TestNode) -> Value {
    let a = node.get("/v1/rooms");
    assert_eq!(a.status, 200, "{}", a.text);
    a.json
}

/// Every refused request answers its status and a JSON error, and changes
/// nothing: the room list, the endpoint totals and the load stay the same.
#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let node = TestNode::start_without_rooms_on_demand(2);
    node.create_room("r1");
    let publ = node.create_endpoint("r1", &publisher(1000));
    let pub_id = publ["id"]
        .as_str()
        .expect("endpoint id is a string")
        .to_owned();
    node.create_endpoint(
        "r1",
        &json!({
            "role": "subscribe",
            "srtp": { "profile": GCM, "key": gcm_key(2) },
            "remote": "127.0.0.1:40000",
        }),
    );

    let valid_endpoint = publisher(2000).to_string();
    let with = |patch: Value| {
        let mut body = publisher(2000);
        for (k, v) in patch.as_object().expect("patch is an object") {
            body[k] = v.clone();
        }
        body.to_string()
    };
    let oversized = format!(r#"{{"room": "{}"}}"#, "x".repeat(100 * 1024));
    let ep_path = format!("/v1/rooms/r1/endpoints/{pub_id}/subscriptions");

    let cases: Vec<(&str, String, String, u16, &str)> = vec![
        (
            "POST",
            "/v1/rooms".into(),
            r#"{"room": "r1"}"#.into(),
            409,
            "room_exists",
        ),
        (
            "POST",
            "/v1/rooms".into(),
            "not json".into(),
            400,
            "bad_request",
        ),
        ("POST", "/v1/rooms".into(), "".into(), 400, "bad_request"),
        ("POST", "/v1/rooms".into(), "{}".into(), 400, "bad_request"),
        (
            "POST",
            "/v1/rooms".into(),
            r#"{"room": ""}"#.into(),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/rooms".into(),
            r#"{"room": "a b"}"#.into(),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/rooms".into(),
            r#"{"room": 5}"#.into(),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/rooms".into(),
            r#"{"room": "x", "extra": 1}"#.into(),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/rooms".into(),
            r#"{"room": "x", "worker": 2}"#.into(),
            400,
            "unknown_worker",
        ),
        (
            "POST",
            "/v1/rooms".into(),
            r#"{"room": "x", "worker": -1}"#.into(),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/rooms".into(),
            oversized,
            413,
            "payload_too_large",
        ),
        (
            "DELETE",
            "/v1/rooms/nope".into(),
            String::new(),
            404,
            "unknown_room",
        ),
        (
            "POST",
            "/v1/rooms/nope/endpoints".into(),
            valid_endpoint,
            404,
            "unknown_room",
        ),
        (
            "POST",
            "/v1/rooms/r1/endpoints".into(),
            with(json!({ "srtp": { "profile": GCM, "key": "not base64!" } })),
            400,
            "bad_key",
        ),
        (
            "POST",
            "/v1/rooms/r1/endpoints".into(),
            with(json!({ "srtp": { "profile": GCM, "key": b64(&[1; 30]) } })),
            400,
            "bad_key",
        ),
        (
            "POST",
            "/v1/rooms/r1/endpoints".into(),
            with(json!({ "srtp": { "profile": "AES_CM_128_HMAC_SHA1_80", "key": gcm_key(1) } })),
            400,
            "bad_key",
        ),
        (
            "POST",
            "/v1/rooms/r1/endpoints".into(),
            with(json!({ "srtp": { "profile": "AEAD_AES_256_GCM", "key": gcm_key(1) } })),
            400,
            "unsupported_profile",
        ),
        (
            "POST",
            "/v1/rooms/r1/endpoints".into(),
            with(json!({ "srtp": { "profile": GCM } })),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/rooms/r1/endpoints".into(),
            publisher(1000).to_string(),
            409,
            "duplicate_ssrc",
        ),
        (
            "POST",
            "/v1/rooms/r1/endpoints".into(),
            with(json!({ "tracks": [
                { "kind": "video", "ssrc": 7, "payload_type": 96 },
                { "kind": "audio", "ssrc": 7, "payload_type": 111 },
            ] })),
            409,
            "duplicate_ssrc",
        ),
        (
            "POST",
            "/v1/rooms/r1/endpoints".into(),
            with(json!({ "rtcp_ssrc": 1000 })),
            409,
            "duplicate_ssrc",
        ),
        (
            "POST",
            "/v1/rooms/r1/endpoints".into(),
            json!({
                "role": "subscribe",
                "srtp": { "profile": GCM, "key": gcm_key(3) },
                "remote": "127.0.0.1:40000",
            })
            .to_string(),
            409,
            "remote_in_use",
        ),
        (
            "POST",
            "/v1/rooms/r1/endpoints".into(),
            with(json!({ "role": "admin" })),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/rooms/r1/endpoints".into(),
            with(json!({ "tracks": [{ "kind": "video", "ssrc": 9, "payload_type": 200 }] })),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/rooms/r1/endpoints".into(),
            with(json!({ "tracks": [{ "kind": "data", "ssrc": 9, "payload_type": 96 }] })),
            400,
            "bad_request",
        ),
        // RED: audio tracks only, a number of its own, at most 127; a
        // publish-only endpoint receives none.
        (
            "POST",
            "/v1/rooms/r1/endpoints".into(),
            with(
                json!({ "tracks": [{ "kind": "video", "ssrc": 9, "payload_type": 96, "red_payload_type": 63 }] }),
            ),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/rooms/r1/endpoints".into(),
            with(
                json!({ "tracks": [{ "kind": "audio", "ssrc": 9, "payload_type": 111, "red_payload_type": 111 }] }),
            ),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/rooms/r1/endpoints".into(),
            with(
                json!({ "tracks": [{ "kind": "audio", "ssrc": 9, "payload_type": 111, "red_payload_type": 128 }] }),
            ),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/rooms/r1/endpoints".into(),
            with(json!({ "red_payload_type": 100 })),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/rooms/r1/endpoints".into(),
            with(json!({ "tracks": [{ "kind": "video", "ssrc": -1, "payload_type": 96 }] })),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/rooms/r1/endpoints".into(),
            with(json!({ "subscribe": "some" })),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/rooms/r1/endpoints".into(),
            with(json!({ "subscribe": { "video": "x" } })),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/rooms/r1/endpoints".into(),
            with(json!({ "role": "subscribe" })),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/rooms/r1/endpoints".into(),
            with(json!({ "remote": "nowhere" })),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/rooms/r1/endpoints".into(),
            with(json!({ "remote": "0.0.0.0:5000" })),
            400,
            "bad_request",
        ),
        (
            "POST",
            "/v1/rooms/r1/endpoints".into(),
            with(json!({ "colour": "red" })),
            400,
            "bad_request",
        ),
        ("PUT", ep_path.clone(), r#""all""#.into(), 400, "invalid"),
        (
            "PUT",
            ep_path.clone(),
            r#""none""#.into(),
            400,
            "bad_request",
        ),
        ("PUT", ep_path, "{".into(), 400, "bad_request"),
        (
            "PUT",
            "/v1/rooms/r1/endpoints/00000000000000ff/subscriptions".into(),
            r#""all""#.into(),
            404,
            "unknown_endpoint",
        ),
        (
            "PUT",
            format!("/v1/rooms/nope/endpoints/{pub_id}/subscriptions"),
            r#""all""#.into(),
            404,
            "unknown_room",
        ),
        (
            "DELETE",
            "/v1/rooms/r1/endpoints/00000000000000ff".into(),
            String::new(),
            404,
            "unknown_endpoint",
        ),
        (
            "DELETE",
            format!("/v1/rooms/nope/endpoints/{pub_id}"),
            String::new(),
            404,
            "unknown_room",
        ),
        ("GET", "/v2/nothing".into(), String::new(), 404, "not_found"),
        (
            "DELETE",
            "/v1/rooms".into(),
            String::new(),
            405,
            "method_not_allowed",
        ),
        (
            "PUT",
            "/v1/rooms/r1".into(),
            String::new(),
            405,
            "method_not_allowed",
        ),
    ];

    let before = rooms(&node);
    let load_before = node.get("/v1/load").json;
    for (method, path, body, status, code) in &cases {
        let a = node.request(method, path, body);
        let what = format!(
            "{method} {path} {}",
            body.chars().take(120).collect::<String>()
        );
        assert_eq!(a.status, *status, "{what}: {}", a.text);
        assert!(
            a.content_type.starts_with("application/json"),
            "{what}: {}",
            a.content_type
        );
        assert_eq!(a.json["code"], *code, "{what}: {}", a.text);
        assert!(
            a.json["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {}",
            a.text
        );
        assert_eq!(rooms(&node), before, "{what} changed the rooms");
    }
    let load_after = node.get("/v1/load").json;
    assert_eq!(load_after["rooms"], load_before["rooms"]);
    assert_eq!(load_after["endpoints"], load_before["endpoints"]);
    for w in 0..2 {
        let (b, a) = (&load_before["workers"][w], &load_after["workers"][w]);
        assert_eq!(a["rooms"], b["rooms"], "worker {w} rooms");
        assert_eq!(a["endpoints"], b["endpoints"], "worker {w} endpoints");
    }
}

#[test]
fn rooms_and_endpoints_lifecycle() {
    let node = TestNode::start(2);
    assert_eq!(node.get("/healthz").json, json!({ "status": "ok" }));
    assert_eq!(rooms(&node), json!({ "rooms": [] }));

    // Placement: least-loaded worker, unless one is asked for.
    let a = node.create_room("alpha");
    assert_eq!(a["room"], "alpha");
    assert_eq!(a["worker"], 0);
    assert_eq!(a["media"], node.media(0).to_string());
    let b = node.create_room("beta");
    assert_eq!(b["worker"], 1);
    assert_eq!(b["media"], node.media(1).to_string());
    let c = node.post("/v1/rooms", r#"{"room": "gamma", "worker": 1}"#);
    assert_eq!(c.status, 201, "{}", c.text);
    assert_eq!(c.json["worker"], 1);

    // Endpoints.
    let p = node.create_endpoint("beta", &publisher(1111));
    let p_id = p["id"].as_str().expect("id").to_owned();
    assert_eq!(p["room"], "beta");
    assert_eq!(p["media"], node.media(1).to_string());
    assert_eq!(p["srtp"]["profile"], GCM);
    let node_key = unb64(p["srtp"]["key"].as_str().expect("key"));
    assert_eq!(node_key.len(), 28, "GCM key || salt");
    assert_ne!(node_key, vec![1; 28], "the node makes its own key");
    assert_eq!(p["consumers"], json!([]));

    let s = node.create_endpoint(
        "beta",
        &json!({
            "role": "both",
            "srtp": { "profile": "AES_CM_128_HMAC_SHA1_80", "key": b64(&[5; 30]) },
            "tracks": [{ "kind": "audio", "ssrc": 2222, "payload_type": 111 }],
            "subscribe": "all",
        }),
    );
    let s_id = s["id"].as_str().expect("id").to_owned();
    assert_ne!(s_id, p_id);
    assert_eq!(
        unb64(s["srtp"]["key"].as_str().expect("key")).len(),
        30,
        "CM key || salt"
    );
    let consumers = s["consumers"].as_array().expect("consumers");
    assert_eq!(consumers.len(), 1, "{s}");
    assert_eq!(consumers[0]["kind"], "video");
    assert_eq!(consumers[0]["producer_ssrc"], 1111);
    assert_eq!(consumers[0]["payload_type"], 96);
    assert!(consumers[0]["ssrc"].as_u64().is_some());
    assert_eq!(consumers[0]["slot"], 0);

    assert_eq!(
        rooms(&node),
        json!({ "rooms": [
            { "room": "alpha", "worker": 0, "endpoints": 0, "pending": 0 },
            { "room": "beta", "worker": 1, "endpoints": 2, "pending": 0 },
            { "room": "gamma", "worker": 1, "endpoints": 0, "pending": 0 },
        ] })
    );

    // Subscriptions.
    let path = format!("/v1/rooms/beta/endpoints/{s_id}/subscriptions");
    let a = node.put(&path, r#"{"video": [], "audio": []}"#);
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json, json!({ "consumers": [] }));
    let a = node.put(&path, r#"{"video": [1111, 4242]}"#);
    assert_eq!(a.status, 200, "{}", a.text);
    let consumers = a.json["consumers"].as_array().expect("consumers");
    assert_eq!(consumers.len(), 2, "{}", a.text);
    assert_eq!(consumers[0]["producer_ssrc"], 1111);
    assert_eq!(
        consumers[1]["producer_ssrc"],
        Value::Null,
        "no such producer yet"
    );
    let a = node.put(&path, r#""all""#);
    assert_eq!(a.status, 200, "{}", a.text);

    // Removal; the SSRC is free again.
    let ep = format!("/v1/rooms/beta/endpoints/{p_id}");
    assert_eq!(node.delete(&ep).status, 204);
    assert_eq!(node.delete(&ep).status, 404);
    assert_eq!(rooms(&node)["rooms"][1]["endpoints"], 1);
    node.create_endpoint("alpha", &publisher(1111));

    assert_eq!(node.delete("/v1/rooms/beta").status, 204);
    assert_eq!(node.delete("/v1/rooms/beta").status, 404);
    let a = node.delete(&format!("/v1/rooms/beta/endpoints/{s_id}"));
    assert_eq!(a.status, 404, "endpoints go with their room");
    // Equal rooms (one each): the worker with fewer endpoints wins.
    assert_eq!(node.create_room("delta")["worker"], 1);
    // 2222 belonged to an endpoint of the deleted room: free again.
    node.create_endpoint(
        "gamma",
        &json!({
            "role": "publish",
            "srtp": { "profile": GCM, "key": gcm_key(9) },
            "tracks": [{ "kind": "audio", "ssrc": 2222, "payload_type": 111 }],
        }),
    );
    assert_eq!(node.create_room("beta")["worker"], 0, "fewer rooms wins");

    let load = node.get("/v1/load").json;
    assert_eq!(load["rooms"], 4);
    assert_eq!(load["endpoints"], 2);
    assert_eq!(load["workers"][0]["rooms"], 2);
    assert_eq!(load["workers"][0]["endpoints"], 1);
    assert_eq!(load["workers"][1]["rooms"], 2);
    assert_eq!(load["workers"][1]["endpoints"], 1);
}

/// The router's event counters, one sample per worker in `/metrics`.
const ROUTER_COUNTERS: [&str; 8] = [
    "sfu_rtp_in_total",
    "sfu_rtcp_in_total",
    "sfu_pli_sent_total",
    "sfu_ice_checks_total",
    "sfu_dtls_handshakes_total",
    "sfu_ice_consent_expired_total",
    "sfu_simulcast_layers_bound_total",
    "sfu_twcc_feedback_sent_total",
];

#[test]
fn load_and_metrics_have_their_shape() {
    let node = TestNode::start(2);
    node.create_room("r");
    let a = node.get("/v1/load");
    assert_eq!(a.status, 200, "{}", a.text);
    let load = a.json;
    assert_eq!(load["node_id"], "test-node");
    assert!(load["uptime_s"].as_f64().is_some_and(|t| t >= 0.0));
    assert_eq!(load["rooms"], 1);
    assert_eq!(load["endpoints"], 0);
    let workers = load["workers"].as_array().expect("workers");
    assert_eq!(workers.len(), 2);
    for (i, w) in workers.iter().enumerate() {
        assert_eq!(w["worker"], i);
        assert_eq!(w["cpu"], Value::Null, "test workers are not pinned");
        assert_eq!(w["media"], node.media(i).to_string());
        for key in ["rx_pps", "tx_pps", "tx_bps", "cpu_seconds"] {
            assert!(w[key].as_f64().is_some(), "{key} in {w}");
        }
        for key in [
            "rx_packets",
            "tx_packets",
            "rooms",
            "endpoints",
            "pool_capacity",
            "pool_in_use",
            "pool_exhausted",
        ] {
            assert!(w[key].as_u64().is_some(), "{key} in {w}");
        }
        assert_eq!(w["pool_capacity"], 512);
        let drops = w["drops"].as_object().expect("drops");
        for reason in DropReason::ALL {
            assert!(drops.contains_key(reason.as_str()), "{reason:?} in {w}");
        }
    }

    // Workers publish their gauges after their own loop turn: the room's
    // worker may answer the command a moment before its gauge shows it.
    node.wait_worker_metric("sfu_rooms", 0, 1);
    let a = node.get("/metrics");
    assert_eq!(a.status, 200);
    assert!(
        a.content_type.starts_with("text/plain"),
        "{}",
        a.content_type
    );
    let text = a.text;
    for name in [
        "sfu_rx_packets_total",
        "sfu_tx_packets_total",
        "sfu_rx_bytes_total",
        "sfu_tx_bytes_total",
        "sfu_drops_total",
        "sfu_pool_in_use",
        "sfu_pool_capacity",
        "sfu_pool_exhausted_total",
        "sfu_gso_fallbacks_total",
        "sfu_worker_cpu_seconds_total",
        "sfu_rooms",
        "sfu_endpoints",
        "sfu_http_requests_total",
        "sfu_auth_failures_total",
    ]
    .into_iter()
    .chain(ROUTER_COUNTERS)
    {
        assert!(text.contains(&format!("# HELP {name} ")), "HELP {name}");
        assert!(text.contains(&format!("# TYPE {name} ")), "TYPE {name}");
    }
    for w in 0..2 {
        assert!(
            text.contains(&format!("sfu_rx_packets_total{{worker=\"{w}\"}} 0\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("sfu_pool_capacity{{worker=\"{w}\"}} 512\n")),
            "{text}"
        );
        for name in ROUTER_COUNTERS {
            let line = format!("{name}{{worker=\"{w}\"}} 0\n");
            assert!(text.contains(&line), "{line} in {text}");
        }
        for reason in DropReason::ALL {
            let line = format!(
                "sfu_drops_total{{worker=\"{w}\",reason=\"{}\"}} ",
                reason.as_str()
            );
            assert!(text.contains(&line), "{line}");
        }
    }
    assert!(text.contains("sfu_rooms{worker=\"0\"} 1\n"), "{text}");
    assert!(text.contains("sfu_http_requests_total{route=\"POST /v1/rooms\",status=\"201\"} 1\n"));
    assert!(text.contains("sfu_http_requests_total{route=\"GET /v1/load\",status=\"200\"} 1\n"));
    // Every sample line is `name{labels} value` with a numeric value.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, value) = line.rsplit_once(' ').expect("sample has a value");
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
    node.get("/nowhere");
    let text = node.get("/metrics").text;
    assert!(text.contains("sfu_http_requests_total{route=\"unmatched\",status=\"404\"} 1\n"));
}

/// Builds an RTP packet (V=2, no CSRC/extension) with room for the tag.
fn rtp(seq: u16, ts: u32, ssrc: u32, pt: u8, payload: &[u8]) -> (Vec<u8>, usize) {
    let mut buf = vec![0xa5u8; 12 + payload.len() + 64];
    buf[0] = 0x80;
    buf[1] = pt;
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&ts.to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
    buf[12..12 + payload.len()].copy_from_slice(payload);
    (buf, 12 + payload.len())
}

fn context(profile: Profile, master: &[u8]) -> SrtpContext {
    let (key, salt) = master.split_at(profile.key_len());
    SrtpContext::new(profile, key, salt, SrtpConfig::default())
        .expect("key lengths from the API fit")
}

fn payload(i: u16) -> Vec<u8> {
    (0..100u16)
        .map(|j| (i.wrapping_mul(7).wrapping_add(j)) as u8)
        .collect()
}

/// One publisher learnt by comedia, two subscribers with given addresses
/// (one added before the publisher, one after): both receive all 200
/// packets, in order, decryptable with the node's keys, with the consumer
/// SSRC from the API and the payload intact.
#[test]
fn media_flows_end_to_end() {
    const PUB_SSRC: u32 = 0x1234_5678;
    const PACKETS: u16 = 200;
    let node = TestNode::start(2);
    let room = node.create_room("media");
    let worker = room["worker"].as_u64().expect("worker") as usize;

    let subscribe = |socket: &UdpSocket| {
        json!({
            "role": "subscribe",
            "srtp": { "profile": GCM, "key": gcm_key(4) },
            "remote": socket.local_addr().expect("bound").to_string(),
        })
    };
    let sub_a = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let sub_b = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let a = node.create_endpoint("media", &subscribe(&sub_a));
    assert_eq!(a["consumers"], json!([]), "no producer yet");

    let pub_master = [0x42u8; 28];
    let p = node.create_endpoint(
        "media",
        &json!({
            "role": "publish",
            "srtp": { "profile": GCM, "key": b64(&pub_master) },
            "tracks": [{ "kind": "video", "ssrc": PUB_SSRC, "payload_type": 96 }],
        }),
    );
    assert_eq!(p["media"], node.media(worker).to_string());
    let b = node.create_endpoint("media", &subscribe(&sub_b));

    // A's consumer appeared when the publisher joined; PUT tells its SSRC.
    let a_id = a["id"].as_str().expect("id");
    let put = node.put(
        &format!("/v1/rooms/media/endpoints/{a_id}/subscriptions"),
        r#""all""#,
    );
    assert_eq!(put.status, 200, "{}", put.text);
    let consumer_ssrc = |consumers: &Value| -> u32 {
        let c = consumers
            .as_array()
            .expect("consumers")
            .iter()
            .find(|c| c["producer_ssrc"] == PUB_SSRC)
            .unwrap_or_else(|| panic!("a consumer of the publisher in {consumers}"));
        assert_eq!(c["payload_type"], 96);
        c["ssrc"].as_u64().expect("ssrc") as u32
    };
    let receivers = [
        (
            &sub_a,
            consumer_ssrc(&put.json["consumers"]),
            unb64(a["srtp"]["key"].as_str().expect("key")),
        ),
        (
            &sub_b,
            consumer_ssrc(&b["consumers"]),
            unb64(b["srtp"]["key"].as_str().expect("key")),
        ),
    ];

    let publisher = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let media = node.media(worker);
    let mut tx = context(Profile::AeadAes128Gcm, &pub_master);
    for i in 0..PACKETS {
        let (mut buf, len) = rtp(
            1000 + i,
            90_000 + u32::from(i) * 3000,
            PUB_SSRC,
            96,
            &payload(i),
        );
        let n = tx.protect_rtp(&mut buf, len).expect("protect");
        publisher.send_to(&buf[..n], media).expect("send");
        if i % 20 == 19 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    for (socket, ssrc, master) in receivers {
        socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        let mut rx = context(Profile::AeadAes128Gcm, &master);
        let mut last_seq: Option<u16> = None;
        let mut buf = [0u8; 2048];
        for i in 0..PACKETS {
            let (n, from) = socket.recv_from(&mut buf).unwrap_or_else(|e| {
                panic!("packet {i} to {}: {e}", socket.local_addr().expect("bound"))
            });
            assert_eq!(from, media, "sent from the room's worker");
            let len = rx
                .unprotect_rtp(&mut buf[..n])
                .expect("authenticates with the node's key");
            let pkt = &buf[..len];
            assert_eq!(
                u32::from_be_bytes(pkt[8..12].try_into().expect("4 bytes")),
                ssrc
            );
            assert_eq!(pkt[1] & 0x7f, 96);
            let seq = u16::from_be_bytes([pkt[2], pkt[3]]);
            if let Some(last) = last_seq {
                assert_eq!(seq, last.wrapping_add(1), "in order, none missing");
            }
            last_seq = Some(seq);
            assert_eq!(&pkt[12..], &payload(i)[..], "payload of packet {i}");
        }
    }

    let load = node.get("/v1/load").json;
    let w = &load["workers"][worker];
    assert!(
        w["rx_packets"]
            .as_u64()
            .is_some_and(|n| n >= u64::from(PACKETS)),
        "{w}"
    );
    assert!(
        w["tx_packets"]
            .as_u64()
            .is_some_and(|n| n >= 2 * u64::from(PACKETS)),
        "{w}"
    );
    // Every packet authenticated and fanned out: counted once, on the
    // room's worker only.
    let rtp_in = node.wait_worker_metric("sfu_rtp_in_total", worker, u64::from(PACKETS));
    assert_eq!(rtp_in, u64::from(PACKETS));
    assert_eq!(node.worker_metric("sfu_rtp_in_total", 1 - worker), 0);
}

/// After shutdown the API no longer answers.
#[test]
fn shutdown_stops_the_api() {
    let node = TestNode::start(1);
    let addr = node.http;
    assert_eq!(node.get("/healthz").status, 200);
    node.shutdown();
    assert!(std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
}

/// A speaker switch in one request: `PUT /v1/rooms/{room}/subscriptions`
/// re-points every listed endpoint and answers each change on its own, in
/// order; an unknown endpoint or a publish-only one is refused alone; the
/// route needs the admin grant; too many changes are refused whole.
#[test]
fn a_room_switches_many_subscriptions_in_one_request() {
    let node = TestNode::start(1);
    node.create_room("talk");
    node.create_endpoint("talk", &publisher(7001));
    let speaker2 = node.create_endpoint("talk", &publisher(7002))["id"]
        .as_str()
        .expect("an id")
        .to_owned();
    let viewer = |n: u8| {
        node.create_endpoint(
            "talk",
            &json!({
                "role": "subscribe",
                "srtp": { "profile": GCM, "key": gcm_key(n) },
                "subscribe": { "video": [7001] },
            }),
        )["id"]
            .as_str()
            .expect("an id")
            .to_owned()
    };
    let viewers: Vec<String> = (10..13).map(viewer).collect();
    let mut changes: Vec<Value> = viewers
        .iter()
        .map(|v| json!({ "endpoint": v, "subscribe": { "video": [7002] } }))
        .collect();
    changes.insert(
        1,
        json!({ "endpoint": "00000000000000ff", "subscribe": "all" }),
    );
    changes.push(json!({ "endpoint": speaker2, "subscribe": "all" }));
    let body = json!({ "changes": changes }).to_string();

    let a = node.put("/v1/rooms/talk/subscriptions", &body);
    assert_eq!(a.status, 200, "{}", a.text);
    let results = a.json["results"].as_array().expect("results");
    assert_eq!(results.len(), 5, "{}", a.text);
    for (i, r) in [0, 2, 3].iter().map(|&i| &results[i]).enumerate() {
        assert_eq!(r["endpoint"], viewers[i].as_str());
        assert_eq!(r["consumers"][0]["producer_ssrc"], 7002, "{r}");
    }
    assert_eq!(results[1]["code"], "unknown_endpoint", "{}", results[1]);
    assert_eq!(results[4]["endpoint"], speaker2.as_str());
    assert!(
        results[4]["error"].as_str().is_some(),
        "a publish-only endpoint has no subscription: {}",
        results[4]
    );

    // Admin only: a subscriber may change only its own subscription.
    let token = node.token("talk", &[Grant::Subscribe]);
    let a = node.request_as(
        Some(&format!("Bearer {token}")),
        "PUT",
        "/v1/rooms/talk/subscriptions",
        &body,
    );
    assert_eq!(a.status, 403, "{}", a.text);
    let a = node.put("/v1/rooms/nope/subscriptions", &body);
    assert_eq!(a.status, 404, "{}", a.text);
    let too_many: Vec<Value> = (0..1001)
        .map(|_| json!({ "endpoint": viewers[0], "subscribe": "all" }))
        .collect();
    let a = node.put(
        "/v1/rooms/talk/subscriptions",
        &json!({ "changes": too_many }).to_string(),
    );
    assert_eq!(a.status, 503, "{}", a.text);
}

/// `PUT /v1/rooms/{room}/endpoints/{id}/layers` caps (or uncaps) the
/// simulcast layer of one of a subscriber's video slots and pins (or
/// unpins) it: 204; an unknown slot is 400, an unknown endpoint 404, a body
/// with neither `max_layer` nor `pinned` 400, a pin of a last-N
/// subscriber's slot 400 (it pins in its subscription), and a token
/// without the admin grant 403. A track's `source` is `camera` or
/// `screen`.
#[test]
fn an_admin_caps_a_subscribers_layer() {
    let node = TestNode::start(1);
    node.create_room("caps");
    node.create_endpoint("caps", &publisher(7101));
    let viewer = node.create_endpoint(
        "caps",
        &json!({
            "role": "subscribe",
            "srtp": { "profile": GCM, "key": gcm_key(20) },
            "subscribe": { "video": [7101] },
        }),
    );
    let id = viewer["id"].as_str().expect("an id");
    let slot = viewer["consumers"][0]["slot"].as_u64().expect("a slot");
    let path = format!("/v1/rooms/caps/endpoints/{id}/layers");

    for cap in [json!(0), json!(2), Value::Null] {
        let a = node.put(
            &path,
            &json!({ "slot": slot, "max_layer": cap }).to_string(),
        );
        assert_eq!(a.status, 204, "max_layer {cap}: {}", a.text);
    }
    let a = node.put(
        &path,
        &json!({ "slot": slot + 5, "max_layer": 0 }).to_string(),
    );
    assert_eq!(a.status, 400, "{}", a.text);
    assert_eq!(a.json["code"], "invalid", "{}", a.text);
    let a = node.put(&path, &json!({ "slot": slot }).to_string());
    assert_eq!(a.status, 400, "neither max_layer nor pinned: {}", a.text);
    for body in [
        json!({ "slot": slot, "pinned": true }),
        json!({ "slot": slot, "pinned": false }),
        json!({ "slot": slot, "max_layer": 1, "pinned": true }),
    ] {
        let a = node.put(&path, &body.to_string());
        assert_eq!(a.status, 204, "{body}: {}", a.text);
    }
    let a = node.put(
        &path,
        &json!({ "slot": slot + 5, "pinned": true }).to_string(),
    );
    assert_eq!(a.status, 400, "{}", a.text);
    let a = node.put(&path, &json!({ "slot": slot, "pinned": "yes" }).to_string());
    assert_eq!(a.status, 400, "{}", a.text);
    let last_n = node.create_endpoint(
        "caps",
        &json!({
            "role": "subscribe",
            "srtp": { "profile": GCM, "key": gcm_key(21) },
            "subscribe": { "slots": { "video": 1, "audio": 0 } },
        }),
    );
    let last_n = last_n["id"].as_str().expect("an id");
    let a = node.put(
        &format!("/v1/rooms/caps/endpoints/{last_n}/layers"),
        &json!({ "slot": 0, "pinned": true }).to_string(),
    );
    assert_eq!(a.status, 400, "{}", a.text);
    assert_eq!(a.json["code"], "invalid", "{}", a.text);
    // A screen share, and a source that is neither.
    let mut screen = publisher(7102);
    screen["tracks"][0]["source"] = json!("screen");
    node.create_endpoint("caps", &screen);
    let mut bad = publisher(7103);
    bad["tracks"][0]["source"] = json!("projector");
    let a = node.post("/v1/rooms/caps/endpoints", &bad.to_string());
    assert_eq!(a.status, 400, "{}", a.text);
    let a = node.put(
        "/v1/rooms/caps/endpoints/00000000000000ff/layers",
        &json!({ "slot": slot, "max_layer": 0 }).to_string(),
    );
    assert_eq!(a.status, 404, "{}", a.text);
    let token = node.token("caps", &[Grant::Subscribe]);
    let a = node.request_as(
        Some(&format!("Bearer {token}")),
        "PUT",
        &path,
        &json!({ "slot": slot, "max_layer": 0 }).to_string(),
    );
    assert_eq!(a.status, 403, "{}", a.text);
}

#[test]
fn an_admin_reads_an_endpoints_consumers_and_bandwidth() {
    let node = TestNode::start(1);
    node.create_room("state");
    node.create_endpoint("state", &publisher(7201));
    let viewer = node.create_endpoint(
        "state",
        &json!({
            "role": "subscribe",
            "srtp": { "profile": GCM, "key": gcm_key(30) },
            "subscribe": { "video": [7201] },
        }),
    );
    let id = viewer["id"].as_str().expect("an id");
    let path = format!("/v1/rooms/state/endpoints/{id}");
    let a = node.get(&path);
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json["id"], id, "{}", a.text);
    // The same consumers the creation answered.
    assert_eq!(a.json["consumers"], viewer["consumers"], "{}", a.text);
    assert_eq!(a.json["consumers"][0]["producer_ssrc"], 7201, "{}", a.text);
    // An API subscriber negotiated no transport-wide number: no estimate.
    assert!(a.json["bandwidth"].is_null(), "{}", a.text);

    let a = node.get("/v1/rooms/state/endpoints/00000000000000ff");
    assert_eq!(a.status, 404, "{}", a.text);
    let a = node.get(&format!("/v1/rooms/other/endpoints/{id}"));
    assert_eq!(a.status, 404, "another room's path: {}", a.text);
    let token = node.token("state", &[Grant::Subscribe]);
    let a = node.request_as(Some(&format!("Bearer {token}")), "GET", &path, "");
    assert_eq!(a.status, 403, "{}", a.text);
}

/// A single node names itself as a room's owner, and once drained refuses
/// new rooms (503 `draining`) while its rooms keep taking endpoints.
#[test]
fn a_single_node_owns_its_rooms_and_drains() {
    let node = TestNode::start(1);
    node.create_room("kept");
    let r = node.get("/v1/rooms/kept");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["owner"]["node_id"], "test-node", "{}", r.text);
    assert_eq!(r.json["endpoints"], 0);
    assert_eq!(node.get("/v1/rooms/none").status, 404);
    assert_eq!(node.get("/healthz").status, 200);

    let d = node.post("/v1/drain", "{}");
    assert_eq!(d.status, 200, "{}", d.text);
    assert_eq!(d.json["status"], "draining");
    assert_eq!(node.get("/healthz").status, 503);
    assert_eq!(node.get("/v1/load").json["draining"], true);
    let refused = node.post("/v1/rooms", r#"{"room": "new"}"#);
    assert_eq!(
        (refused.status, refused.json["code"].as_str()),
        (503, Some("draining")),
        "{}",
        refused.text
    );
    let ep = node.post(
        "/v1/rooms/kept/endpoints",
        &json!({
            "role": "publish",
            "srtp": { "profile": GCM, "key": gcm_key(1) },
            "tracks": [{ "kind": "audio", "ssrc": 5, "payload_type": 111 }],
        })
        .to_string(),
    );
    assert_eq!(ep.status, 201, "{}", ep.text);
    // A token for one room cannot drain the node.
    let token = node.token("kept", &[Grant::Admin]);
    let bearer = format!("Bearer {token}");
    let a = node.request_as(Some(&bearer), "POST", "/v1/drain", "{}");
    assert_eq!(a.status, 403, "{}", a.text);
    node.shutdown();
}
