//! `Node` and `WorkerHandle`: ports, pinning, commands, counters, errors,
//! shutdown.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use packet_path::{Node, NodeConfig, PathGauge, RequestError, WorkerHandle, WorkerStats};
use sfu_core::router::{Command, Counter, Outcome, RoomId, RouterError};

fn config(workers: usize) -> NodeConfig {
    NodeConfig {
        workers,
        base_port: 0,
        pool_buffers: 64,
        ..NodeConfig::default()
    }
}

/// Polls the worker's counters until `ok` holds (they are published after
/// each loop iteration, at most a few ms after a command's answer).
fn stats_until(w: &WorkerHandle, ok: impl Fn(&WorkerStats) -> bool) -> WorkerStats {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let s = w.stats();
        if ok(&s) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn defaults_match_the_spec() {
    let c = NodeConfig::default();
    assert_eq!(c.bind.to_string(), "127.0.0.1");
    assert_eq!((c.base_port, c.pool_buffers, c.batch), (7882, 4096, 64));
    assert_eq!(c.socket_buffer_bytes, 32 << 20);
    assert!(c.gso && c.gro && c.cpus.is_empty());
}

#[test]
fn workers_get_their_own_ports_cores_and_rooms() {
    let node = Node::start(NodeConfig {
        cpus: vec![0],
        ..config(2)
    })
    .unwrap();
    let w = node.workers();
    assert_eq!(w.len(), 2);
    assert_eq!((w[0].index(), w[1].index()), (0, 1));
    assert_ne!(w[0].local_addr(), w[1].local_addr());
    assert!(w.iter().all(|w| w.local_addr().port() != 0));
    let pinned = stats_until(&w[1], |_| w[1].cpu() == Some(0));
    assert_eq!(w[1].cpu(), Some(0), "pinned to cpus[1 % 1]: {pinned:?}");

    assert_eq!(
        w[0].request(Command::CreateRoom(RoomId(7))),
        Ok(Outcome::Done)
    );
    assert_eq!(
        w[0].request(Command::CreateRoom(RoomId(7))),
        Err(RequestError::Router(RouterError::RoomExists))
    );
    // Rooms are per worker: the other worker does not know it.
    assert_eq!(
        w[1].request(Command::DeleteRoom(RoomId(7))),
        Err(RequestError::Router(RouterError::UnknownRoom))
    );
    let s = stats_until(&w[0], |s| s.gauge(PathGauge::Rooms) == 1);
    assert_eq!(
        (
            s.gauge(PathGauge::Rooms),
            s.gauge(PathGauge::Endpoints),
            s.gauge(PathGauge::PoolCapacity)
        ),
        (1, 0, 64)
    );
    assert!(
        (s.gauge(PathGauge::GroEnabled) != 0) && (s.gauge(PathGauge::GsoEnabled) != 0),
        "loopback has GRO and GSO"
    );
    assert_eq!(s.drops.len(), sfu_core::router::DropReason::COUNT);
    node.shutdown();
}

#[test]
fn junk_is_counted_not_fatal() {
    let node = Node::start(config(1)).unwrap();
    let w = node.workers()[0].clone();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let junk: [&[u8]; 5] = [
        &[],
        &[0xff; 1],
        &[0x80; 12],
        &[0x00, 0x01, 0, 0],
        &[0xa5; 1400],
    ];
    for d in junk {
        peer.send_to(d, w.local_addr()).unwrap();
    }
    let s = stats_until(&w, |s| s.get(Counter::RxPackets) == 5);
    assert_eq!(s.get(Counter::RxPackets), 5);
    assert_eq!(s.get(Counter::TxPackets), 0);
    assert_eq!(
        s.drops.iter().map(|(_, n)| n).sum::<u64>(),
        5,
        "{:?}",
        s.drops
    );
    assert!(s.cpu_seconds >= 0.0);
    // Still serving.
    assert_eq!(w.request(Command::CreateRoom(RoomId(1))), Ok(Outcome::Done));
}

#[test]
fn busy_port_fails_before_any_thread_starts() {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let err = Node::start(NodeConfig {
        base_port: port,
        ..config(1)
    })
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    let err = Node::start(config(0)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn requests_after_shutdown_say_stopped() {
    let node = Node::start(config(1)).unwrap();
    let w = node.workers()[0].clone();
    let t0 = Instant::now();
    node.shutdown();
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "stopping wakes the workers"
    );
    assert_eq!(
        w.request(Command::CreateRoom(RoomId(1))),
        Err(RequestError::Stopped)
    );
}

#[test]
fn dropping_the_node_stops_workers() {
    let node = Node::start(config(1)).unwrap();
    let w = node.workers()[0].clone();
    let addr: SocketAddr = w.local_addr();
    drop(node);
    assert_eq!(
        w.request(Command::DeleteRoom(RoomId(1))),
        Err(RequestError::Stopped)
    );
    // The port is free again.
    UdpSocket::bind(addr).unwrap();
}

#[test]
fn handles_are_clone_send_sync() {
    fn check<T: Clone + Send + Sync + 'static>() {}
    check::<WorkerHandle>();
    fn check_send<T: Send + 'static>() {}
    check_send::<packet_path::io::BatchSocket>();
    check_send::<Node>();
}
