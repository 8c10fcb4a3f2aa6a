//! The `sfu` binary as a systemd service: the notify protocol against a
//! `NOTIFY_SOCKET` this test owns (`READY`, `STATUS`, `WATCHDOG`,
//! `STOPPING`), the watchdog stopping when a worker dies, and the graceful
//! drain: the first SIGTERM drains (`/healthz` 503, new rooms refused,
//! existing rooms keep taking joins) and the node exits 0 when the last
//! endpoint leaves; a second SIGTERM, or the drain timeout, stops it with
//! endpoints left. Also the host checks (`sfu-tune`'s) it logs at start.

mod common;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{b64, token_with};
use control::auth::{DEV_API_SECRET, Grant};
use packet_path::test_hooks::PANIC_DATAGRAM;
use serde_json::{Value, json};

/// Notifications received, with when.
type Notes = Arc<Mutex<Vec<(Instant, String)>>>;

/// A running `sfu` with a notify socket of its own.
struct Sfu {
    child: Child,
    base: String,
    notes: Notes,
    socket_path: std::path::PathBuf,
}

impl Sfu {
    fn start(args: &[&str]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let socket_path =
            std::env::temp_dir().join(format!("sfu-notify-{}-{port}.sock", std::process::id()));
        let _ = std::fs::remove_file(&socket_path);
        let socket = UnixDatagram::bind(&socket_path).expect("a notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let notes: Notes = Arc::new(Mutex::new(Vec::new()));
        let n = Arc::clone(&notes);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends when the test drops the path and the socket errors.
            loop {
                match socket.recv(&mut buf) {
                    Ok(len) => n.lock().expect("lock").push((
                        Instant::now(),
                        String::from_utf8_lossy(&buf[..len]).into_owned(),
                    )),
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut =>
                    {
                        if Arc::strong_count(&n) == 1 {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        });
        let child = Command::new(env!("CARGO_BIN_EXE_sfu"))
            .env_clear()
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "200000")
            .env("RUST_LOG", "info")
            .env("RUST_BACKTRACE", "0")
            .args([
                "--control-addr",
                &format!("127.0.0.1:{port}"),
                "--media-port",
                "0",
                "--workers",
                "2",
                "--cpus",
                "none",
                "--node-id",
                "service-test",
            ])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the sfu binary starts");
        let sfu = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            notes,
            socket_path,
        };
        sfu.wait_note("READY=1", Duration::from_secs(20));
        sfu
    }

    /// Waits for a notification containing `what`; when it came.
    fn wait_note(&self, what: &str, within: Duration) -> Instant {
        let deadline = Instant::now() + within;
        loop {
            if let Some((at, _)) = self
                .notes
                .lock()
                .expect("lock")
                .iter()
                .find(|(_, n)| n.contains(what))
            {
                return *at;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} notification: {:?}",
                self.notes.lock().expect("lock")
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{name}");
    }

    fn send(&self, method: &str, path: &str, body: &Value) -> (u16, Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(3)))
            .build()
            .into();
        let token = token_with(DEV_API_SECRET, "*", &[Grant::Admin]);
        let url = format!("{}{path}", self.base);
        let builder = match method {
            "GET" => ureq::http::Request::get(url),
            "POST" => ureq::http::Request::post(url),
            "DELETE" => ureq::http::Request::delete(url),
            other => panic!("method {other}"),
        };
        let request = builder
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .expect("a request");
        let mut r = agent.run(request).expect("the node answers");
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A publisher endpoint in `room`; its id.
    fn join(&self, room: &str, ssrc: u32) -> String {
        let (status, answer) = self.send(
            "POST",
            &format!("/v1/rooms/{room}/endpoints"),
            &json!({
                "role": "publish",
                "srtp": {"profile": "AEAD_AES_128_GCM", "key": b64(&[9u8; 28])},
                "tracks": [{"kind": "audio", "ssrc": ssrc, "payload_type": 111}],
            }),
        );
        assert_eq!(status, 201, "{answer}");
        answer["id"].as_str().expect("an id").to_owned()
    }

    /// Waits for the process to exit; its status and when.
    fn wait_exit(&mut self, within: Duration) -> (ExitStatus, Instant) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return (s, Instant::now());
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("sfu still runs after {within:?}");
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Sfu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket_path);
    }
}

#[test]
fn a_drain_keeps_rooms_until_the_last_endpoint_leaves_then_exits_cleanly() {
    let mut sfu = Sfu::start(&[]);
    assert_eq!(
        sfu.send("POST", "/v1/rooms", &json!({"room": "call"})).0,
        201
    );
    let first = sfu.join("call", 1);
    // Pings come every 100 ms while the workers run.
    thread::sleep(Duration::from_millis(500));
    let pings = sfu
        .notes
        .lock()
        .expect("lock")
        .iter()
        .filter(|(_, n)| n.contains("WATCHDOG=1"))
        .count();
    assert!(pings >= 3, "{pings} watchdog pings in 500 ms");

    sfu.signal("TERM");
    sfu.wait_note("STOPPING=1", Duration::from_secs(2));
    assert_eq!(sfu.send("GET", "/healthz", &json!({})).0, 503);
    let (status, refused) = sfu.send("POST", "/v1/rooms", &json!({"room": "new"}));
    assert_eq!((status, refused["code"].as_str()), (503, Some("draining")));
    // The room still takes joins.
    let second = sfu.join("call", 2);
    thread::sleep(Duration::from_secs(1));
    assert!(
        sfu.running(),
        "a draining node with endpoints keeps running"
    );
    sfu.wait_note("STATUS=draining: 2 endpoints left", Duration::from_secs(2));

    assert_eq!(
        sfu.send(
            "DELETE",
            &format!("/v1/rooms/call/endpoints/{first}"),
            &json!({})
        )
        .0,
        204
    );
    assert!(sfu.running());
    let left = Instant::now();
    assert_eq!(
        sfu.send(
            "DELETE",
            &format!("/v1/rooms/call/endpoints/{second}"),
            &json!({})
        )
        .0,
        204
    );
    let (status, at) = sfu.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{status}");
    println!(
        "SERVICE drained: exit {status} {:?} after the last endpoint left",
        at - left
    );
}

#[test]
fn a_second_sigterm_or_the_drain_timeout_stops_a_node_with_endpoints() {
    let mut sfu = Sfu::start(&[]);
    sfu.join("a", 1);
    sfu.signal("TERM");
    sfu.wait_note("STOPPING=1", Duration::from_secs(2));
    thread::sleep(Duration::from_millis(300));
    assert!(sfu.running());
    let second = Instant::now();
    sfu.signal("TERM");
    let (status, at) = sfu.wait_exit(Duration::from_secs(3));
    assert!(status.success(), "{status}");
    println!("SERVICE second SIGTERM: exit after {:?}", at - second);

    let mut sfu = Sfu::start(&["--drain-timeout-secs", "1"]);
    sfu.join("b", 1);
    let term = Instant::now();
    sfu.signal("TERM");
    let (status, at) = sfu.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{status}");
    let took = at - term;
    println!("SERVICE drain timeout 1 s: exit after {took:?}");
    assert!(took >= Duration::from_millis(900), "{took:?}");
}

#[test]
fn the_watchdog_stops_when_a_worker_dies() {
    let mut sfu = Sfu::start(&[]);
    let (_, load) = sfu.send("GET", "/v1/load", &json!({}));
    let media: SocketAddr = load["workers"][1]["media"]
        .as_str()
        .and_then(|m| m.parse().ok())
        .expect("worker 1's media address");
    sfu.wait_note("WATCHDOG=1", Duration::from_secs(2));
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.send_to(
        PANIC_DATAGRAM,
        SocketAddr::from(([127, 0, 0, 1], media.port())),
    )
    .expect("send");
    let died = Instant::now();
    let (status, exited) = sfu.wait_exit(Duration::from_secs(8));
    assert_eq!(status.code(), Some(70), "{status}");
    let last_ping = sfu
        .notes
        .lock()
        .expect("lock")
        .iter()
        .filter(|(_, n)| n.contains("WATCHDOG=1"))
        .map(|(at, _)| *at)
        .max()
        .expect("pings");
    println!(
        "SERVICE worker died: last watchdog ping {:?} after, exit 70 {:?} after",
        last_ping.saturating_duration_since(died),
        exited - died
    );
    // The supervisor keeps the node up for a grace second; the pings
    // stopped long before it exited.
    assert!(
        last_ping < died + Duration::from_millis(400),
        "pings went on {:?} after the worker died",
        last_ping - died
    );
    assert!(exited > last_ping + Duration::from_millis(500));
}

#[test]
fn the_node_warns_at_start_about_a_host_check_that_fails() {
    // Socket buffers above this host's rmem_max: the rmem_max check fails
    // whatever the host's value.
    let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .expect("/proc/sys/net/core/rmem_max")
        .trim()
        .parse()
        .expect("a number");
    let wanted = (rmem_max * 2).to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sfu"))
        .env_clear()
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .args(["--control-addr", "127.0.0.1:0", "--media-port", "0"])
        .args(["--workers", "1", "--cpus", "none"])
        .args(["--socket-buffer-bytes", &wanted])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the sfu binary starts");
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let found = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let hit = line.contains("host check failed") && line.contains("rmem_max");
                seen.push(line);
                if hit {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(found, "no rmem_max warning in:\n{}", seen.join("\n"));
    let line = seen.last().expect("a line");
    assert!(line.contains(&format!("want=>= {wanted}")), "{line}");
    assert!(line.contains("sfu-tune apply"), "{line}");
}
