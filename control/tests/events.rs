//! Node events over real HTTP: the `GET /v1/events` stream (order,
//! filter, auth, lag notices, a stream outliving the idle timeout, shutdown)
//! and webhooks delivered to a small HTTP server of the test's own (retry
//! after a 500, signature, order), for API endpoints and for a WHIP session
//! that never connects.

mod common;

use std::net::TcpListener;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::events::{Frame, Hook, subscribe, verify};
use common::{TEST_SECRET, TestNode, b64, test_config};
use control::auth::Grant;
use control::events::NodeEvent;
use serde_json::{Value, json};

const WHIP_OFFER: &str = include_str!("fixtures/chrome-whip-offer.sdp");

fn publisher(ssrc: u32) -> Value {
    json!({
        "role": "publish",
        "srtp": { "profile": "AEAD_AES_128_GCM", "key": b64(&[1; 28]) },
        "tracks": [{ "kind": "video", "ssrc": ssrc, "payload_type": 96 }],
    })
}

/// The value of the unlabelled or labelled sample `name` in `/metrics`.
fn metric(node: &TestNode, name: &str) -> Option<u64> {
    let m = node.get("/metrics");
    assert_eq!(m.status, 200, "{}", m.text);
    let prefix = format!("{name} ");
    m.text
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.parse().ok())
}

/// Creates a room, an endpoint in it, deletes the endpoint and the room;
/// returns the endpoint's id.
fn join_and_leave(node: &TestNode, room: &str, ssrc: u32) -> String {
    node.create_room(room);
    let created = node.create_endpoint(room, &publisher(ssrc));
    let id = created["id"].as_str().expect("an id").to_owned();
    let deleted = node.delete(&format!("/v1/rooms/{room}/endpoints/{id}"));
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    let deleted = node.delete(&format!("/v1/rooms/{room}"));
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    id
}

/// Asserts the lifecycle of [`join_and_leave`] in `events`, in order with
/// increasing `seq` (the SSE id equal to the envelope's `seq`).
fn assert_lifecycle(events: &[(u64, Value)], room: &str, endpoint: &str) {
    let want = [
        json!({"type": "room_started", "room": room}),
        json!({"type": "participant_joined", "room": room, "endpoint": endpoint, "session": "api", "role": "publish"}),
        json!({"type": "participant_left", "room": room, "endpoint": endpoint, "reason": "deleted"}),
        json!({"type": "room_ended", "room": room, "reason": "deleted"}),
    ];
    assert_eq!(events.len(), want.len(), "{events:?}");
    let mut last = 0;
    for ((id, data), want) in events.iter().zip(&want) {
        assert_eq!(data["seq"].as_u64(), Some(*id), "{data}");
        assert!(*id > last, "seq {id} after {last}");
        last = *id;
        assert_eq!(data["node"], "test-node", "{data}");
        assert!(data["at"].as_u64().is_some_and(|at| at > 1_700_000_000_000));
        let mut body = data.clone();
        let body = body.as_object_mut().expect("an object");
        for key in ["seq", "node", "at"] {
            body.remove(key);
        }
        assert_eq!(&Value::Object(body.clone()), want);
    }
}

#[test]
fn the_event_stream_is_ordered_filtered_and_admin_only() {
    let mut config = test_config(1, TEST_SECRET);
    // A live stream must outlive the idle timeout of keep-alive connections
    // (which the connection's timer checks when its header or request
    // timeout comes round).
    config.http.idle_timeout_secs = 1;
    config.http.header_timeout_secs = 1;
    config.http.request_timeout_secs = 1;
    let node = TestNode::start_with_config(config);

    let publish_only = node.token("*", &[Grant::Publish, Grant::Subscribe]);
    let refused = subscribe(&node, Some(&publish_only), "", false).err();
    assert_eq!(refused.map(|r| r.status), Some(403));
    let room_admin = node.token("a", &[Grant::Admin]);
    let refused = subscribe(&node, Some(&room_admin), "", false).err();
    assert_eq!(refused.map(|r| r.status), Some(403), "room `*` needed");
    let refused = subscribe(&node, None, "", false).err();
    assert_eq!(refused.map(|r| r.status), Some(401));
    let refused = subscribe(&node, Some(&node.admin), "?room=..", false).err();
    assert_eq!(refused.as_ref().map(|r| r.status), Some(400), "{refused:?}");
    let refused = subscribe(&node, Some(&node.admin), "?rooom=a", false).err();
    assert_eq!(refused.as_ref().map(|r| r.status), Some(400), "{refused:?}");

    let all = subscribe(&node, Some(&node.admin), "", false).expect("admin may listen");
    let only_a = subscribe(&node, Some(&room_admin), "?room=a", false)
        .expect("an admin of room a may listen to room a");
    assert_eq!(metric(&node, "sfu_event_subscribers"), Some(2));

    // Past the idle timeout: the streams are still open.
    thread::sleep(Duration::from_millis(3500));
    let b = join_and_leave(&node, "b", 1);
    let a = join_and_leave(&node, "a", 2);
    assert_lifecycle(&all.types(4), "b", &b);
    assert_lifecycle(&all.types(4), "a", &a);
    // Room b's events never reach the filtered stream: its first is a's.
    assert_lifecycle(&only_a.types(4), "a", &a);
    // Node-wide events pass the filter.
    node.state().publish(NodeEvent::WorkerStalled {
        worker: 0,
        health: "stalled".into(),
    });
    for stream in [&only_a, &all] {
        let (_, stalled) = stream.event();
        assert_eq!(stalled["type"], "worker_stalled");
        assert!(stalled.get("room").is_none(), "{stalled}");
    }
    assert_eq!(
        metric(&node, "sfu_events_total{type=\"room_started\"}"),
        Some(2)
    );
    assert_eq!(
        metric(&node, "sfu_events_total{type=\"participant_left\"}"),
        Some(2)
    );

    // Shutdown ends the streams instead of waiting for them.
    let started = Instant::now();
    node.shutdown();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        started.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match all.frames.recv_timeout(Duration::from_millis(100)) {
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Ok(Frame::Comment) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(other) => panic!("after shutdown: {other:?}"),
        }
        assert!(Instant::now() < deadline, "the stream did not end");
    }
}

#[test]
fn a_subscriber_that_falls_behind_is_told_how_many_it_missed() {
    let node = TestNode::start(1);
    let mut stream = subscribe(&node, Some(&node.admin), "", true).expect("admin may listen");
    // The client does not read. The node's task writes frames into the TCP
    // connection until the kernel's send and receive buffers are full, and
    // only then does the broadcast buffer fill and overflow. So publish more
    // than the buffers could ever hold: each frame carries a room name of
    // the longest kind, over 200 bytes in all.
    let room = "l".repeat(control::state::MAX_ROOM_NAME);
    let buffered = tcp_buffer_max("tcp_rmem") + tcp_buffer_max("tcp_wmem");
    let published = control::events::BROADCAST_CAPACITY as u64 + 64 + buffered / 200 * 11 / 10;
    for ssrc in 0..published {
        node.state().publish(NodeEvent::KeyframeRequested {
            room: room.clone(),
            endpoint: "00000000000000e1".into(),
            ssrc: ssrc as u32,
        });
    }
    stream.resume();
    let mut last = 0;
    let mut missed_total = 0;
    // Missed since the last event: notices may follow each other while the
    // publisher overtakes the subscriber again.
    let mut missed_since = 0;
    while last < published {
        match stream.next(Duration::from_secs(5)) {
            Some(Frame::Event { id, data }) => {
                assert_eq!(data["type"], "keyframe_requested");
                assert_eq!(data["ssrc"].as_u64(), Some(id - 1), "{data}");
                // The next event after a notice is the oldest one still
                // buffered: no gap but the one announced.
                assert_eq!(
                    id,
                    last + missed_since + 1,
                    "after {last}, {missed_since} missed"
                );
                missed_since = 0;
                last = id;
            }
            Some(Frame::Lagged { missed }) => {
                assert!(missed > 0);
                missed_total += missed;
                missed_since += missed;
            }
            Some(Frame::Comment) => {}
            None => panic!("the stream stopped at seq {last}"),
        }
    }
    assert!(
        missed_total > 0,
        "the subscriber never lagged ({published} published, {buffered} bytes of TCP buffers)"
    );
    assert!(missed_total < published);
}

/// The largest buffer the kernel's TCP autotuning may give a socket:
/// the third field of `/proc/sys/net/ipv4/{name}`.
fn tcp_buffer_max(name: &str) -> u64 {
    let path = format!("/proc/sys/net/ipv4/{name}");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("this test needs {path} to size its burst: {e}"));
    text.split_whitespace()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{path} is not three numbers: {text:?}"))
}

#[test]
fn webhooks_are_signed_retried_and_in_order() {
    let hook = Hook::start(1);
    let mut config = test_config(1, TEST_SECRET);
    config.webhook.url = Some(hook.url.clone());
    config.webhook.retries = 3;
    let node = TestNode::start_with_config(config);

    let endpoint = join_and_leave(&node, "hooked", 7);
    // The first attempt is answered 500, then retried with the same body.
    let first = hook.next(Duration::from_secs(5));
    verify(&first, TEST_SECRET);
    assert_eq!(first.status, 500);
    let retried = hook.next(Duration::from_secs(5));
    verify(&retried, TEST_SECRET);
    assert_eq!((retried.status, &retried.body), (200, &first.body));
    let started: Value = serde_json::from_str(&retried.body).expect("JSON");
    let mut events = vec![(started["seq"].as_u64().expect("seq"), started)];
    for _ in 0..3 {
        let e = hook.delivered(TEST_SECRET);
        events.push((e["seq"].as_u64().expect("seq"), e));
    }
    assert_lifecycle(&events, "hooked", &endpoint);

    // Stream-only events are not delivered: the next delivery is the next
    // lifecycle event.
    node.state().publish(NodeEvent::KeyframeRequested {
        room: "hooked".into(),
        endpoint: endpoint.clone(),
        ssrc: 7,
    });
    node.create_room("after");
    let next = hook.delivered(TEST_SECRET);
    assert_eq!(next["type"], "room_started", "{next}");
    assert_eq!(next["room"], "after");

    let deadline = Instant::now() + Duration::from_secs(3);
    while metric(&node, "sfu_webhook_deliveries_total{result=\"ok\"}") != Some(5) {
        assert!(Instant::now() < deadline, "deliveries not counted");
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(metric(&node, "sfu_webhook_retries_total"), Some(1));
    assert_eq!(
        metric(&node, "sfu_webhook_deliveries_total{result=\"failed\"}"),
        Some(0)
    );
}

#[test]
fn an_unreachable_webhook_is_given_up_and_counted() {
    // A port nobody listens on: connections are refused at once.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a loopback port")
        .port();
    let mut config = test_config(1, TEST_SECRET);
    config.webhook.url = Some(format!("http://127.0.0.1:{port}/hook"));
    config.webhook.retries = 2;
    let node = TestNode::start_with_config(config);
    node.create_room("nowhere");
    // 250 ms + 500 ms of backoff.
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&node, "sfu_webhook_deliveries_total{result=\"failed\"}") != Some(1) {
        assert!(Instant::now() < deadline, "the delivery was never given up");
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(metric(&node, "sfu_webhook_retries_total"), Some(2));
    assert_eq!(
        metric(&node, "sfu_webhook_deliveries_total{result=\"ok\"}"),
        Some(0)
    );
}

#[test]
fn a_whip_session_that_never_connects_leaves_with_never_connected() {
    let hook = Hook::start(0);
    let mut config = test_config(1, TEST_SECRET);
    config.limits.pending_session_timeout_secs = 1;
    config.webhook.url = Some(hook.url.clone());
    let node = TestNode::start_with_config(config);
    let stream =
        subscribe(&node, Some(&node.admin), "?room=silent", false).expect("admin may listen");

    let token = node.token("silent", &[Grant::Publish]);
    let (status, text) = node.post_sdp("/whip/silent", &token, WHIP_OFFER);
    assert_eq!(status, 201, "{text}");

    // Created on demand, joined, then removed by the router after 1 s
    // without ICE and reaped within the next second.
    let started = Instant::now();
    let (_, room) = stream.event();
    assert_eq!(room["type"], "room_started", "{room}");
    let (_, joined) = stream.event();
    assert_eq!(joined["type"], "participant_joined", "{joined}");
    assert_eq!(
        (joined["session"].as_str(), joined["role"].as_str()),
        (Some("whip"), Some("publish"))
    );
    let endpoint = joined["endpoint"].as_str().expect("an endpoint").to_owned();
    let (_, left) = stream.event();
    assert_eq!(
        left,
        json!({
            "seq": left["seq"], "node": "test-node", "at": left["at"],
            "type": "participant_left", "room": "silent", "endpoint": endpoint,
            "reason": "never_connected",
        })
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    let hooked: Vec<Value> = (0..3).map(|_| hook.delivered(TEST_SECRET)).collect();
    let types: Vec<&str> = hooked.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        types,
        ["room_started", "participant_joined", "participant_left"]
    );
    assert_eq!(hooked[2], left, "the webhook gets the same envelope");
}

#[test]
fn a_dead_worker_is_announced_to_every_stream() {
    let node = TestNode::start(2);
    let stream = subscribe(&node, Some(&node.admin), "?room=any", false).expect("admin may listen");
    // The test hook's datagram makes worker 1 panic.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("a loopback socket");
    let media = std::net::SocketAddr::from(([127, 0, 0, 1], node.media(1).port()));
    socket
        .send_to(packet_path::test_hooks::PANIC_DATAGRAM, media)
        .expect("send on loopback");
    let (_, event) = stream.event();
    assert_eq!(
        (
            event["type"].as_str(),
            event["worker"].as_u64(),
            event["health"].as_str()
        ),
        (Some("worker_stalled"), Some(1), Some("dead")),
        "{event}"
    );
}
