//! A worker that dies is noticed: `/healthz` answers 503 naming it,
//! `sfu_worker_up` drops to 0 for it, placement avoids it, and the `sfu`
//! binary exits with status 70 so that its service manager restarts it.
//! The panic is injected with `packet_path::test_hooks::PANIC_DATAGRAM`
//! (this crate's dev-dependency enables the `test-hooks` feature; release
//! builds of `sfu` do not have it).

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{TestNode, token_with};
use control::auth::{DEV_API_SECRET, Grant};
use packet_path::test_hooks::PANIC_DATAGRAM;
use serde_json::Value;

fn kill_worker(media: SocketAddr) {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind a loopback socket");
    let to = SocketAddr::from(([127, 0, 0, 1], media.port()));
    s.send_to(PANIC_DATAGRAM, to).expect("send on loopback");
}

#[test]
fn a_dead_worker_fails_healthz_and_metrics_and_gets_no_rooms() {
    let node = TestNode::start(2);
    assert_eq!(node.get("/healthz").status, 200);
    assert_eq!(node.worker_metric("sfu_worker_up", 1), 1);

    kill_worker(node.media(1));
    let deadline = Instant::now() + Duration::from_secs(3);
    let health = loop {
        let a = node.get("/healthz");
        if a.status != 200 || Instant::now() > deadline {
            break a;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(health.status, 503, "{}", health.text);
    assert_eq!(health.json["status"], "unhealthy");
    let workers = health.json["workers"]
        .as_array()
        .expect("a list of workers");
    assert_eq!(workers.len(), 1, "{}", health.text);
    assert_eq!(workers[0]["worker"], 1);
    assert_eq!(workers[0]["state"], "dead");
    let reason = workers[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("test hook"), "{reason}");

    assert_eq!(node.worker_metric("sfu_worker_up", 1), 0);
    assert_eq!(node.worker_metric("sfu_worker_up", 0), 1);
    let metrics = node.get("/metrics").text;
    assert!(
        metrics.contains("sfu_worker_heartbeat_age_seconds{worker=\"0\"} 0."),
        "{metrics}"
    );

    // Placement skips the dead worker, even when it has fewer rooms.
    for room in ["a", "b", "c"] {
        assert_eq!(node.create_room(room)["worker"], 0, "room {room}");
    }
    let refused = node.post("/v1/rooms", r#"{"room": "d", "worker": 1}"#);
    assert_eq!(refused.status, 503, "{}", refused.text);
    assert_eq!(refused.json["code"], "worker_stopped");
    node.shutdown();
}

/// A TCP port free on loopback now (for the child's control API).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("bound").port()
}

#[test]
fn the_sfu_binary_exits_non_zero_when_a_worker_dies() {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sfu"))
        .env("SFU_CONTROL_ADDR", format!("127.0.0.1:{port}"))
        .env("SFU_MEDIA_PORT", "0")
        .env("SFU_WORKERS", "2")
        .env("SFU_CPUS", "")
        .env("SFU_NODE_ID", "supervision-test")
        .env("RUST_LOG", "info")
        // The worker's panic is reported at once: symbolising a backtrace
        // in a debug build under CI load took over 2 s, and the supervisor
        // then saw a stalled worker before a dead one.
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the sfu binary starts");
    let stderr = child.stderr.take().expect("stderr is piped");
    let log = Arc::new(Mutex::new(String::new()));
    let reader = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = log
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                log.push_str(&line);
                log.push('\n');
            }
        })
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    let get = |path: &str, token: Option<&str>| -> Option<(u16, Value)> {
        let mut req = agent.get(format!("{base}{path}"));
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let mut r = req.call().ok()?;
        let status = r.status().as_u16();
        let body = r.body_mut().read_to_string().ok()?;
        Some((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
    };
    let fail = |what: &str, child: &mut Child| -> ! {
        let _ = child.kill();
        let _ = child.wait();
        std::thread::sleep(Duration::from_millis(100));
        panic!("{what}\nsfu stderr:\n{}", lock(&log));
    };

    // Up: /healthz 200, then the workers' media ports from /v1/load.
    let deadline = Instant::now() + Duration::from_secs(10);
    while get("/healthz", None).map(|(s, _)| s) != Some(200) {
        if Instant::now() > deadline {
            fail(
                "sfu did not answer /healthz with 200 within 10 s",
                &mut child,
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let admin = token_with(DEV_API_SECRET, "*", &[Grant::Admin]);
    let Some((200, load)) = get("/v1/load", Some(&admin)) else {
        fail("GET /v1/load failed", &mut child);
    };
    let media: SocketAddr = load["workers"][1]["media"]
        .as_str()
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| fail(&format!("no media address in {load}"), &mut child));

    let killed = Instant::now();
    kill_worker(media);
    // During the grace the API is still up and reports the dead worker.
    let mut saw_503 = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if killed.elapsed() < Duration::from_secs(8) => {}
            _ => fail("sfu still runs 8 s after its worker died", &mut child),
        }
        if let Some((503, body)) = get("/healthz", None)
            && body["workers"][0]["worker"] == 1
        {
            saw_503 = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = reader.join();
    let stderr = lock(&log).clone();
    assert_eq!(status.code(), Some(70), "{status}\n{stderr}");
    assert!(
        saw_503,
        "/healthz never answered 503 naming worker 1\n{stderr}"
    );
    assert!(stderr.contains("worker 1 is dead"), "{stderr}");
    eprintln!(
        "sfu exited {status} {:.2?} after the worker panic",
        killed.elapsed()
    );
}

fn lock(log: &Mutex<String>) -> std::sync::MutexGuard<'_, String> {
    log.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
