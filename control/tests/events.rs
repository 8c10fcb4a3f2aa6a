//! Node events over real HTTP: the `GET /v1/events` stream (order,
//! filter, auth, lag notices, a stream outliving the idle timeout, shutdown)
//! and webhooks delivered to a small HTTP server of the test's own (retry
//! after a 500, signature, order), for API endpoints and for a WHIP session
//! that never connects.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{TEST_SECRET, TestNode, b64, test_config};
use control::auth::Grant;
use control::events::NodeEvent;
use serde_json::{Value, json};

const WHIP_OFFER: &str = include_str!("fixtures/chrome-whip-offer.sdp");

/// What an event stream delivers.
#[derive(Debug)]
enum Frame {
    /// `id: N` and `data: {...}`.
    Event { id: u64, data: Value },
    /// `event: lagged`.
    Lagged { missed: u64 },
    /// A `:` comment.
    Comment,
}

/// An open `GET /v1/events` stream, read by a thread of its own.
struct Stream {
    frames: mpsc::Receiver<Frame>,
    /// Tells a paused reader to start.
    go: Option<mpsc::Sender<()>>,
}

impl Stream {
    /// The next frame, waiting up to `within`.
    fn next(&self, within: Duration) -> Option<Frame> {
        self.frames.recv_timeout(within).ok()
    }

    /// The next event (skipping comments), waiting up to 5 s; panics on a
    /// lag notice or the end of the stream.
    fn event(&self) -> (u64, Value) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(Frame::Event { id, data }) => return (id, data),
                Some(Frame::Comment) => continue,
                other => panic!("expected an event, got {other:?}"),
            }
        }
    }

    /// The next events' `type`s, `n` of them.
    fn types(&self, n: usize) -> Vec<(u64, Value)> {
        (0..n).map(|_| self.event()).collect()
    }

    /// Lets a paused reader read.
    fn resume(&mut self) {
        if let Some(go) = self.go.take() {
            let _ = go.send(());
        }
    }
}

/// Answer to a `GET /v1/events` that was refused.
#[derive(Debug)]
#[allow(dead_code)] // Read through Debug in failure messages.
struct Refused {
    status: u16,
    body: String,
}

/// Opens `GET /v1/events{query}` with `token` (none: no header); reads at
/// once, or after [`Stream::resume`] if `paused`.
fn subscribe(
    node: &TestNode,
    token: Option<&str>,
    query: &str,
    paused: bool,
) -> Result<Stream, Refused> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut request = agent.get(format!("{}/v1/events{query}", node.base));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let mut response = request.call().expect("the HTTP exchange completes");
    let status = response.status().as_u16();
    if status != 200 {
        let body = response.body_mut().read_to_string().unwrap_or_default();
        return Err(Refused { status, body });
    }
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "text/event-stream");
    let (tx, frames) = mpsc::channel();
    let (go, wait) = mpsc::channel::<()>();
    thread::spawn(move || {
        if paused {
            let _ = wait.recv();
        }
        let mut lines = BufReader::new(response.into_body().into_reader()).lines();
        let mut fields: Vec<(String, String)> = Vec::new();
        while let Some(Ok(line)) = lines.next() {
            if !line.is_empty() {
                let (name, value) = line.split_once(':').unwrap_or((&line, ""));
                fields.push((name.to_owned(), value.trim_start().to_owned()));
                continue;
            }
            let field = |name: &str| {
                fields
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
            };
            let frame = if field("").is_some() {
                Frame::Comment
            } else if field("event").as_deref() == Some("lagged") {
                let data: Value =
                    serde_json::from_str(&field("data").expect("data")).expect("JSON data");
                Frame::Lagged {
                    missed: data["missed"].as_u64().expect("missed is a number"),
                }
            } else {
                Frame::Event {
                    id: field("id").expect("an id").parse().expect("a numeric id"),
                    data: serde_json::from_str(&field("data").expect("data")).expect("JSON data"),
                }
            };
            fields.clear();
            if tx.send(frame).is_err() {
                return;
            }
        }
    });
    Ok(Stream {
        frames,
        go: Some(go),
    })
}

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
    // The client does not read: the broadcast buffer (4096) overflows.
    const PUBLISHED: u64 = 20_000;
    for ssrc in 0..PUBLISHED {
        node.state().publish(NodeEvent::KeyframeRequested {
            room: "lag".into(),
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
    while last < PUBLISHED {
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
    assert!(missed_total > 0, "the subscriber never lagged");
    assert!(missed_total < PUBLISHED);
}

/// One request received by [`Hook`].
#[derive(Debug, Clone)]
struct Delivery {
    path: String,
    headers: HashMap<String, String>,
    body: String,
    /// The status answered.
    status: u16,
}

/// A tiny HTTP/1.1 server recording every request; it answers 500 to the
/// first `failures` requests, 200 to the rest.
struct Hook {
    url: String,
    received: mpsc::Receiver<Delivery>,
}

impl Hook {
    fn start(failures: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let url = format!(
            "http://{}/hook",
            listener.local_addr().expect("bound address")
        );
        let (tx, received) = mpsc::channel();
        let answered = Arc::new(Mutex::new(0usize));
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (tx, answered) = (tx.clone(), Arc::clone(&answered));
                thread::spawn(move || serve(stream, &tx, &answered, failures));
            }
        });
        Self { url, received }
    }

    /// The next request, waiting up to `within`.
    fn next(&self, within: Duration) -> Delivery {
        self.received
            .recv_timeout(within)
            .unwrap_or_else(|_| panic!("no webhook request within {within:?}"))
    }

    /// The next request answered 200, its event type and its parsed body;
    /// checks its signature and headers.
    fn delivered(&self, secret: &str) -> Value {
        loop {
            let d = self.next(Duration::from_secs(10));
            verify(&d, secret);
            if d.status == 200 {
                return serde_json::from_str(&d.body).expect("a JSON body");
            }
        }
    }
}

/// Serves keep-alive requests on one connection.
fn serve(stream: TcpStream, tx: &mpsc::Sender<Delivery>, answered: &Mutex<usize>, failures: usize) {
    let mut writer = stream.try_clone().expect("a second handle");
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let mut headers = HashMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let status = {
            let mut answered = answered.lock().expect("not poisoned");
            *answered += 1;
            if *answered <= failures { 500 } else { 200 }
        };
        let reason = if status == 200 {
            "OK"
        } else {
            "Internal Server Error"
        };
        let answer = format!("HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\n\r\n");
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
        let _ = tx.send(Delivery {
            path,
            headers,
            body: String::from_utf8(body).expect("a UTF-8 body"),
            status,
        });
    }
}

/// Checks a webhook request's headers and its signature, computed here
/// with ring over `<X-Sfu-Timestamp>.<body>` as the README tells receivers.
fn verify(d: &Delivery, secret: &str) {
    assert_eq!(d.path, "/hook");
    let header = |name: &str| {
        d.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {d:?}"))
            .as_str()
    };
    assert_eq!(header("content-type"), "application/json");
    let body: Value = serde_json::from_str(&d.body).expect("a JSON body");
    assert_eq!(
        header("x-sfu-event"),
        body["type"].as_str().expect("a type")
    );
    let timestamp: u64 = header("x-sfu-timestamp").parse().expect("Unix seconds");
    let now = control::auth::unix_now();
    assert!(
        now.abs_diff(timestamp) < 60,
        "timestamp {timestamp}, now {now}"
    );
    let signature = header("x-sfu-signature");
    let hex = signature.strip_prefix("sha256=").expect("sha256= prefix");
    assert_eq!(hex.len(), 64);
    assert!(
        hex.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    let mac: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let signed = format!("{timestamp}.{}", d.body);
    assert!(
        ring::hmac::verify(&key, signed.as_bytes(), &mac).is_ok(),
        "bad signature on {d:?}"
    );
    let wrong = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"another secret");
    assert!(ring::hmac::verify(&wrong, signed.as_bytes(), &mac).is_err());
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
