//! A worker that panics is reported dead (with its panic message) while the
//! others keep running; a worker whose loop stops coming round is reported
//! stalled, and running again once it resumes. Faults are injected with the
//! `test-hooks` datagrams (this crate's dev-dependency on itself enables the
//! feature).

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use packet_path::test_hooks::{PANIC_DATAGRAM, STALL_DATAGRAM, STALL_FOR};
use packet_path::{Node, NodeConfig, RequestError, WorkerHandle, WorkerHealth};
use sfu_core::router::{Command, Outcome, RoomId};

fn config(workers: usize) -> NodeConfig {
    NodeConfig {
        workers,
        base_port: 0,
        pool_buffers: 64,
        ..NodeConfig::default()
    }
}

fn send(to: SocketAddr, datagram: &[u8]) {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind a loopback socket");
    s.send_to(datagram, to).expect("send on loopback");
}

/// Polls `w.health()` until `ok` holds or `within` has passed; returns the
/// last answer.
fn health_until(
    w: &WorkerHandle,
    within: Duration,
    ok: impl Fn(&WorkerHealth) -> bool,
) -> WorkerHealth {
    let deadline = Instant::now() + within;
    loop {
        let h = w.health();
        if ok(&h) || Instant::now() > deadline {
            return h;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_panicking_worker_is_dead_and_the_others_run_on() {
    let node = Node::start(config(3)).unwrap();
    let w = node.workers();
    assert!(w.iter().all(|w| w.health() == WorkerHealth::Running));
    assert!(w[0].heartbeat_age() < Duration::from_secs(1));

    send(w[1].local_addr(), PANIC_DATAGRAM);
    let h = health_until(&w[1], Duration::from_secs(2), |h| !h.is_running());
    match &h {
        WorkerHealth::Dead { reason } => assert!(
            reason.contains("panicked") && reason.contains("test hook"),
            "{reason}"
        ),
        other => panic!("worker 1 should be dead, is {other:?}"),
    }
    assert_eq!(
        w[1].request(Command::CreateRoom(RoomId(1))),
        Err(RequestError::Stopped)
    );
    // The others still answer and stay healthy.
    std::thread::sleep(Duration::from_millis(50));
    for i in [0, 2] {
        assert_eq!(w[i].health(), WorkerHealth::Running, "worker {i}");
        assert_eq!(
            w[i].request(Command::CreateRoom(RoomId(10 + i as u64))),
            Ok(Outcome::Done)
        );
    }
    // A dead worker stays dead.
    assert!(matches!(w[1].health(), WorkerHealth::Dead { .. }));
    let started = Instant::now();
    node.shutdown();
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn a_stalled_worker_is_reported_and_recovers() {
    let stall_after = Duration::from_millis(300);
    let node = Node::start(NodeConfig {
        stall_after,
        ..config(2)
    })
    .unwrap();
    let w = node.workers();
    let sent = Instant::now();
    send(w[0].local_addr(), STALL_DATAGRAM);
    let h = health_until(&w[0], Duration::from_secs(2), |h| !h.is_running());
    let WorkerHealth::Stalled { since } = h else {
        panic!("worker 0 should be stalled, is {h:?}");
    };
    assert!(since > stall_after, "{since:?}");
    assert!(
        sent.elapsed() < STALL_FOR,
        "detected before the stall ended"
    );
    assert_eq!(w[1].health(), WorkerHealth::Running);
    // After the stall the loop comes round again.
    let h = health_until(
        &w[0],
        STALL_FOR + Duration::from_secs(2),
        WorkerHealth::is_running,
    );
    assert_eq!(h, WorkerHealth::Running);
    assert!(w[0].heartbeat_age() < stall_after);
}

#[test]
fn shutdown_does_not_wait_for_a_stalled_worker_forever() {
    let node = Node::start(config(1)).unwrap();
    let w = node.workers()[0].clone();
    send(w.local_addr(), STALL_DATAGRAM);
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    node.shutdown();
    let took = started.elapsed();
    assert!(
        took >= packet_path::JOIN_TIMEOUT && took < STALL_FOR,
        "shutdown took {took:?}"
    );
}
