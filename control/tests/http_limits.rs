//! Limits of the HTTP server against a real node over TCP: the connection
//! cap evicts idle connections so fresh probes get in, stalled bodies get
//! 408, oversized bodies 413, slow heads and idle keep-alive connections
//! are cut off, session creation is rate limited per address and per
//! token; the metrics count all of it.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{TEST_SECRET, TestNode, test_config, token_with};
use control::auth::Grant;
use serde_json::Value;

/// A node with the test secret and `f` applied to its config.
fn node(f: impl FnOnce(&mut control::config::HttpConfig)) -> TestNode {
    let mut config = test_config(1, TEST_SECRET);
    f(&mut config.http);
    TestNode::start_with_config(config)
}

/// An HTTP answer read off a raw connection.
#[derive(Debug)]
struct Raw {
    status: u16,
    head: String,
    json: Value,
}

impl Raw {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// Reads one answer (head, then `Content-Length` bytes of body) within `timeout`.
fn read_answer(stream: &mut TcpStream, timeout: Duration) -> Raw {
    stream
        .set_read_timeout(Some(timeout))
        .expect("read timeout can be set");
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut buf) {
            Ok(0) => panic!(
                "connection closed before an answer: {:?}",
                String::from_utf8_lossy(&bytes)
            ),
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) => panic!("no answer within {timeout:?}: {e}"),
        }
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    let mut raw = Raw {
        status,
        head,
        json: Value::Null,
    };
    let length: usize = raw
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while bytes.len() < head_end + length {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) => panic!("body not complete within {timeout:?}: {e}"),
        }
    }
    raw.json = serde_json::from_slice(&bytes[head_end..]).unwrap_or(Value::Null);
    raw
}

/// Waits up to `timeout` for the peer to close `stream` (EOF or reset);
/// returns how long that took. Bytes read meanwhile are ignored.
fn wait_closed(stream: &mut TcpStream, timeout: Duration) -> Duration {
    let start = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("read timeout can be set");
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return start.elapsed(),
        }
        assert!(
            start.elapsed() < timeout,
            "connection still open after {timeout:?}"
        );
    }
}

/// A connection to `server` from the loopback address `from`.
fn connect_from(from: &str, server: SocketAddr) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("a runtime can be built");
    let from: IpAddr = from.parse().expect("literal address");
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket
            .bind(SocketAddr::new(from, 0))
            .expect("loopback addresses can be bound");
        socket.connect(server).await.expect("the node accepts")
    });
    let stream = stream.into_std().expect("a std stream");
    stream.set_nonblocking(false).expect("blocking mode");
    stream
}

/// Sends `request` on a new connection from `from` and reads the answer.
fn exchange_from(from: &str, server: SocketAddr, request: &str) -> Raw {
    let mut stream = connect_from(from, server);
    stream.write_all(request.as_bytes()).expect("request sent");
    read_answer(&mut stream, Duration::from_secs(5))
}

/// `GET /metrics` over a fresh connection; the text.
fn metrics(node: &TestNode) -> String {
    let mut stream = TcpStream::connect(node.http).expect("connects");
    let request = format!(
        "GET /metrics HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\nconnection: close\r\n\r\n",
        node.admin
    );
    stream.write_all(request.as_bytes()).expect("request sent");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout can be set");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("metrics answer");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}

/// The value of the sample `name` (with its labels) in `text`.
fn sample(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("sample {name} missing:\n{text}"))
}

fn healthz(stream: &mut TcpStream, timeout: Duration) -> Raw {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .expect("request sent");
    read_answer(stream, timeout)
}

/// 200 idle connections against a cap of 64: the idlest are closed to let
/// new ones in, so six fresh /healthz probes each get their answer in time.
#[test]
fn idle_connections_cannot_lock_out_fresh_clients() {
    let node = node(|h| h.max_connections = 64);
    let mut idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(node.http).expect("the node accepts"))
        .collect();
    for probe in 0..6 {
        let start = Instant::now();
        let mut stream = TcpStream::connect(node.http).expect("the node accepts");
        let answer = healthz(&mut stream, Duration::from_secs(2));
        assert_eq!(answer.status, 200, "probe {probe}: {answer:?}");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "probe {probe} took {:?}",
            start.elapsed()
        );
    }
    // The oldest idle connections were closed by the node.
    let closed_after = wait_closed(&mut idle[0], Duration::from_secs(2));
    assert!(closed_after < Duration::from_secs(2));
    let text = metrics(&node);
    let evicted = sample(&text, "sfu_http_connections_evicted_total");
    // Every idle connection beyond the cap, and one for the first probe
    // (the later ones take the slot the previous probe left).
    assert!(evicted > 200 - 64, "evicted {evicted}\n{text}");
    let open = sample(&text, "sfu_http_connections_open");
    assert!(open <= 64 + 8, "open {open}");
    assert_eq!(sample(&text, "sfu_http_connections_refused_total"), 0);
    drop(idle);
}

/// Headers, then a body that stalls: 408 with a JSON error within the
/// request timeout, and the connection is closed.
#[test]
fn a_stalled_body_gets_408_and_the_connection_is_closed() {
    let node = node(|h| h.request_timeout_secs = 1);
    let mut stream = TcpStream::connect(node.http).expect("the node accepts");
    let start = Instant::now();
    let request = format!(
        "POST /v1/rooms HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"room\"",
        node.admin
    );
    stream.write_all(request.as_bytes()).expect("request sent");
    let answer = read_answer(&mut stream, Duration::from_secs(5));
    let took = start.elapsed();
    assert_eq!(answer.status, 408, "{answer:?}");
    assert_eq!(answer.json["code"], "request_timeout", "{answer:?}");
    assert!(answer.json["error"].is_string(), "{answer:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "answered after {took:?}"
    );
    wait_closed(&mut stream, Duration::from_secs(2));
    let text = metrics(&node);
    assert_eq!(
        sample(&text, "sfu_http_timeouts_total{kind=\"request\"}"),
        1
    );
}

/// A 10 MB `Content-Length` is answered 413 at once, with or without a
/// valid token, and the connection is closed without reading the body.
#[test]
fn an_oversized_body_gets_413_without_being_read() {
    let node = node(|_| {});
    for authorization in [format!("Bearer {}", node.admin), "Bearer nonsense".into()] {
        let mut stream = TcpStream::connect(node.http).expect("the node accepts");
        let start = Instant::now();
        let request = format!(
            "POST /v1/rooms HTTP/1.1\r\nhost: x\r\nauthorization: {authorization}\r\n\
             content-type: application/json\r\ncontent-length: 10485760\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).expect("request sent");
        // A first slice of the body; the rest never comes.
        stream.write_all(&[b' '; 1024]).expect("body start sent");
        let answer = read_answer(&mut stream, Duration::from_secs(2));
        assert_eq!(answer.status, 413, "{authorization}: {answer:?}");
        assert_eq!(answer.json["code"], "payload_too_large", "{answer:?}");
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        wait_closed(&mut stream, Duration::from_secs(1));
    }
    let text = metrics(&node);
    assert_eq!(
        sample(
            &text,
            "sfu_http_requests_total{route=\"POST /v1/rooms\",status=\"413\"}"
        ),
        2
    );
}

/// A slowloris dribbling its request head is cut off at the header
/// timeout, though each byte comes well within it.
#[test]
fn a_slow_request_head_is_cut_off_at_the_header_timeout() {
    let node = node(|h| h.header_timeout_secs = 1);
    let mut stream = TcpStream::connect(node.http).expect("the node accepts");
    let start = Instant::now();
    let head = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut cut_off = None;
    for byte in head {
        if stream.write_all(&[*byte]).is_err() {
            cut_off = Some(start.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        stream
            .set_read_timeout(Some(Duration::from_millis(1)))
            .expect("read timeout can be set");
        let mut buf = [0u8; 64];
        match stream.read(&mut buf) {
            Ok(0) => {
                cut_off = Some(start.elapsed());
                break;
            }
            Ok(n) => panic!("unexpected answer {:?}", String::from_utf8_lossy(&buf[..n])),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                cut_off = Some(start.elapsed());
                break;
            }
        }
    }
    let cut_off = cut_off.expect("the head was cut off before it was complete");
    assert!(
        cut_off >= Duration::from_millis(900) && cut_off < Duration::from_millis(2500),
        "cut off after {cut_off:?}"
    );
    let text = metrics(&node);
    assert_eq!(sample(&text, "sfu_http_timeouts_total{kind=\"header\"}"), 1);
}

/// A connection that never sends a byte is closed at the header timeout;
/// a keep-alive connection that served a request waits for the idle
/// timeout instead.
#[test]
fn silent_and_idle_keep_alive_connections_are_closed() {
    let node = node(|h| {
        h.header_timeout_secs = 1;
        h.idle_timeout_secs = 3;
    });
    let mut silent = TcpStream::connect(node.http).expect("the node accepts");
    let mut kept = TcpStream::connect(node.http).expect("the node accepts");
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .expect("request sent");
    assert_eq!(read_answer(&mut kept, Duration::from_secs(2)).status, 200);
    let start = Instant::now();
    let silent_after = wait_closed(&mut silent, Duration::from_secs(3));
    assert!(
        silent_after < Duration::from_millis(1500),
        "{silent_after:?}"
    );
    wait_closed(&mut kept, Duration::from_secs(5));
    let kept_after = start.elapsed();
    assert!(
        kept_after >= Duration::from_millis(2500) && kept_after < Duration::from_secs(4),
        "keep-alive connection closed after {kept_after:?}"
    );
    let text = metrics(&node);
    assert_eq!(sample(&text, "sfu_http_timeouts_total{kind=\"header\"}"), 1);
    assert_eq!(sample(&text, "sfu_http_timeouts_total{kind=\"idle\"}"), 1);
}

/// Creates a receive-only endpoint in `room` (created first with the
/// admin token, which the limiter does not count) from address `from`.
fn create_endpoint(from: &str, node: &TestNode, token: &str, room: &str) -> Raw {
    let created = node.post("/v1/rooms", &format!("{{\"room\":\"{room}\"}}"));
    assert!(matches!(created.status, 201 | 409), "{}", created.text);
    let body = r#"{"role":"subscribe","srtp":{"profile":"AEAD_AES_128_GCM","key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="}}"#;
    let request = format!(
        "POST /v1/rooms/{room}/endpoints HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    exchange_from(from, node.http, &request)
}

fn assert_limited(answer: &Raw, key: &str) {
    assert_eq!(answer.status, 429, "{answer:?}");
    assert_eq!(answer.json["code"], "rate_limited", "{answer:?}");
    assert!(
        answer.json["error"]
            .as_str()
            .is_some_and(|e| e.contains(key)),
        "{answer:?}"
    );
    let retry: u64 = answer
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After: {answer:?}"));
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
}

/// After its burst a client address gets 429 with Retry-After and JSON;
/// another address is unaffected. Likewise for a token used from several
/// addresses. WHIP offers count too.
#[test]
fn session_creation_is_rate_limited_per_address_and_per_token() {
    let node = node(|h| {
        h.session_rate_per_ip = 1;
        h.session_burst_per_ip = 3;
        h.session_rate_per_token = 1;
        h.session_burst_per_token = 3;
    });
    let token = |room: &str| token_with(TEST_SECRET, room, &[Grant::Subscribe]);

    // Operator tokens (admin, trunk) are never limited.
    for i in 0..5 {
        let admin = token_with(TEST_SECRET, "*", &[Grant::Admin]);
        let answer = create_endpoint("127.0.0.1", &node, &admin, &format!("op-{i}"));
        assert_eq!(answer.status, 201, "{answer:?}");
    }

    // Per address: one token per room, all from 127.0.0.1.
    for i in 0..3 {
        let room = format!("ip-{i}");
        let answer = create_endpoint("127.0.0.1", &node, &token(&room), &room);
        assert_eq!(answer.status, 201, "{answer:?}");
    }
    let answer = create_endpoint("127.0.0.1", &node, &token("ip-3"), "ip-3");
    assert_limited(&answer, "ip");
    // Another address with another token is unaffected.
    let answer = create_endpoint("127.0.0.2", &node, &token("ip-4"), "ip-4");
    assert_eq!(answer.status, 201, "{answer:?}");

    // Per token: one token from three addresses, then a fourth.
    let shared = token_with(TEST_SECRET, "*", &[Grant::Subscribe]);
    for (i, from) in ["127.0.0.3", "127.0.0.4", "127.0.0.5"].iter().enumerate() {
        let answer = create_endpoint(from, &node, &shared, &format!("tok-{i}"));
        assert_eq!(answer.status, 201, "{answer:?}");
    }
    let answer = create_endpoint("127.0.0.6", &node, &shared, "tok-3");
    assert_limited(&answer, "token");
    // That address with another token is unaffected.
    let answer = create_endpoint("127.0.0.6", &node, &token("tok-4"), "tok-4");
    assert_eq!(answer.status, 201, "{answer:?}");

    // WHIP offers take from the same buckets, even bad ones.
    let whip = token_with(TEST_SECRET, "w", &[Grant::Publish]);
    let offer = |from: &str| {
        exchange_from(
            from,
            node.http,
            &format!(
                "POST /whip/w HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {whip}\r\n\
                 content-type: application/sdp\r\ncontent-length: 1\r\nconnection: close\r\n\r\nx"
            ),
        )
    };
    for from in ["127.0.0.7", "127.0.0.8", "127.0.0.9"] {
        assert_ne!(offer(from).status, 429);
    }
    assert_limited(&offer("127.0.0.10"), "token");

    let text = metrics(&node);
    assert_eq!(sample(&text, "sfu_http_rate_limited_total{key=\"ip\"}"), 1);
    assert_eq!(
        sample(&text, "sfu_http_rate_limited_total{key=\"token\"}"),
        2
    );
    assert_eq!(
        sample(
            &text,
            "sfu_http_requests_total{route=\"POST /v1/rooms/{room}/endpoints\",status=\"429\"}"
        ),
        2
    );
}

/// Requests that do not create sessions are not limited, and a session
/// created after a pause gets through again.
#[test]
fn other_requests_are_not_limited_and_buckets_refill() {
    let node = node(|h| {
        h.session_rate_per_ip = 1;
        h.session_burst_per_ip = 1;
    });
    for _ in 0..5 {
        let answer = exchange_from(
            "127.0.0.1",
            node.http,
            &format!(
                "GET /v1/rooms HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\nconnection: close\r\n\r\n",
                node.admin
            ),
        );
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    let token = token_with(TEST_SECRET, "*", &[Grant::Subscribe]);
    assert_eq!(create_endpoint("127.0.0.1", &node, &token, "a").status, 201);
    assert_eq!(create_endpoint("127.0.0.1", &node, &token, "b").status, 429);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(create_endpoint("127.0.0.1", &node, &token, "b").status, 201);
}

/// Shutdown closes idle connections at once and lets a request in flight
/// finish (here: its body stalls, so it ends with its 408).
#[test]
fn shutdown_closes_idle_connections_and_lets_requests_finish() {
    let node = node(|h| h.request_timeout_secs = 2);
    let mut idle = TcpStream::connect(node.http).expect("the node accepts");
    let mut busy = TcpStream::connect(node.http).expect("the node accepts");
    let request = format!(
        "POST /v1/rooms HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
         content-length: 100\r\n\r\n{{",
        node.admin
    );
    busy.write_all(request.as_bytes()).expect("request sent");
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    let stopper = std::thread::spawn(move || node.shutdown());
    let idle_after = wait_closed(&mut idle, Duration::from_secs(1));
    assert!(idle_after < Duration::from_millis(500), "{idle_after:?}");
    let answer = read_answer(&mut busy, Duration::from_secs(4));
    assert_eq!(answer.status, 408, "{answer:?}");
    stopper.join().expect("shutdown does not panic");
    assert!(
        start.elapsed() < control::SHUTDOWN_GRACE,
        "{:?}",
        start.elapsed()
    );
}

/// A request head over `max_header_bytes`, or with more than
/// `max_headers` fields, is answered 431.
#[test]
fn oversized_request_heads_get_431() {
    let node = node(|h| {
        h.max_header_bytes = 4096;
        h.max_headers = 16;
    });
    let big = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(8192)
    );
    let many: String = (0..32).map(|i| format!("x-h{i}: v\r\n")).collect();
    let many = format!("GET /healthz HTTP/1.1\r\nhost: x\r\n{many}\r\n");
    for request in [big, many] {
        let mut stream = TcpStream::connect(node.http).expect("the node accepts");
        stream.write_all(request.as_bytes()).expect("request sent");
        let answer = read_answer(&mut stream, Duration::from_secs(2));
        assert_eq!(answer.status, 431, "{answer:?}");
    }
    let mut stream = TcpStream::connect(node.http).expect("the node accepts");
    assert_eq!(healthz(&mut stream, Duration::from_secs(2)).status, 200);
}
