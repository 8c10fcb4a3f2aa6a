//! The two ends of node events for tests: a `GET /v1/events` client
//! ([`subscribe`]) and a webhook receiver ([`Hook`]) that checks each
//! delivery's signature.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::TestNode;

/// What an event stream delivers.
#[derive(Debug)]
pub enum Frame {
    /// `id: N` and `data: {...}`.
    Event { id: u64, data: Value },
    /// `event: lagged`.
    Lagged { missed: u64 },
    /// A `:` comment.
    Comment,
}

/// An open `GET /v1/events` stream, read by a thread of its own.
pub struct Stream {
    pub frames: mpsc::Receiver<Frame>,
    /// Tells a paused reader to start.
    go: Option<mpsc::Sender<()>>,
}

impl Stream {
    /// The next frame, waiting up to `within`.
    pub fn next(&self, within: Duration) -> Option<Frame> {
        self.frames.recv_timeout(within).ok()
    }

    /// The next event (skipping comments), waiting up to 5 s; panics on a
    /// lag notice or the end of the stream.
    pub fn event(&self) -> (u64, Value) {
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
    pub fn types(&self, n: usize) -> Vec<(u64, Value)> {
        (0..n).map(|_| self.event()).collect()
    }

    /// Lets a paused reader read.
    pub fn resume(&mut self) {
        if let Some(go) = self.go.take() {
            let _ = go.send(());
        }
    }
}

/// Answer to a `GET /v1/events` that was refused.
#[derive(Debug)]
#[allow(dead_code)] // Read through Debug in failure messages.
pub struct Refused {
    pub status: u16,
    pub body: String,
}

/// Opens `GET /v1/events{query}` with `token` (none: no header); reads at
/// once, or after [`Stream::resume`] if `paused`.
pub fn subscribe(
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

/// One request received by [`Hook`].
#[derive(Debug, Clone)]
pub struct Delivery {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: String,
    /// The status answered.
    pub status: u16,
}

/// A tiny HTTP/1.1 server recording every request; it answers 500 to the
/// first `failures` requests, 200 to the rest.
pub struct Hook {
    pub url: String,
    received: mpsc::Receiver<Delivery>,
}

impl Hook {
    pub fn start(failures: usize) -> Self {
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
    pub fn next(&self, within: Duration) -> Delivery {
        self.received
            .recv_timeout(within)
            .unwrap_or_else(|_| panic!("no webhook request within {within:?}"))
    }

    /// The next request answered 200, its event type and its parsed body;
    /// checks its signature and headers.
    pub fn delivered(&self, secret: &str) -> Value {
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
pub fn serve(
    stream: TcpStream,
    tx: &mpsc::Sender<Delivery>,
    answered: &Mutex<usize>,
    failures: usize,
) {
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
pub fn verify(d: &Delivery, secret: &str) {
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
