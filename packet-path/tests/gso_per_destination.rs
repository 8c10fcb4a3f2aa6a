//! A GSO refusal concerns one destination: a subscriber behind a small
//! path MTU gets plain sends, every other destination keeps its GSO
//! trains, and the refused one is probed again after its back-off.
//!
//! The test re-runs itself in a new network namespace (`unshare --net`,
//! needs root) where `127.0.0.2` has a local route with MTU 1000, so the
//! kernel refuses 1200-byte GSO segments to it with `EINVAL`, while
//! `127.0.0.1` keeps loopback's 64 KiB MTU.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use packet_path::io::{BatchSocket, GRO_BUFFER_BYTES, RecvMeta, SocketOptions, Transmit};
use packet_path::pool::SendPool;
use sfu_core::router::Transmit as _;

const IN_NETNS: &str = "PACKET_PATH_GSO_NETNS";
const SMALL_MTU_ROUTE: &str = "local 127.0.0.2 dev lo table local mtu 1000";
const RETRY: Duration = Duration::from_millis(300);
const SEGMENT: usize = 1200;
const SEGMENTS: usize = 10;

fn socket(ip: &str) -> BatchSocket {
    let opts = SocketOptions {
        buffer_bytes: 8 << 20,
        read_timeout: Some(Duration::from_millis(500)),
        ..SocketOptions::default()
    };
    let addr: SocketAddr = format!("{ip}:0").parse().expect("literal address");
    BatchSocket::bind(addr, 64, &opts).expect("bind in the test namespace")
}

fn ip(args: &str) {
    let status = Command::new("ip")
        .args(args.split(' '))
        .status()
        .expect("iproute2 `ip` runs");
    assert!(status.success(), "ip {args}: {status}");
}

/// Receives until `want` datagrams arrived; returns their lengths.
fn receive(rx: &mut BatchSocket, want: usize) -> Vec<usize> {
    let mut storage = vec![0u8; 8 * GRO_BUFFER_BYTES];
    let mut bufs: Vec<&mut [u8]> = storage.chunks_mut(GRO_BUFFER_BYTES).collect();
    let mut meta = [RecvMeta::default(); 8];
    let mut lens = Vec::new();
    while lens.len() < want {
        let n = rx
            .recv(&mut bufs, &mut meta)
            .unwrap_or_else(|e| panic!("{} of {want} datagrams arrived: {e}", lens.len()));
        for (m, b) in meta[..n].iter().zip(&bufs) {
            lens.extend(m.datagrams(b).map(<[u8]>::len));
        }
    }
    lens
}

/// One train of [`SEGMENTS`] datagrams to each destination, through
/// `BatchSocket::send`.
fn send_trains(tx: &mut BatchSocket, dsts: [SocketAddr; 2]) {
    let payload = vec![0xa5u8; SEGMENT * SEGMENTS];
    let trains = dsts.map(|dst| Transmit {
        dst,
        contents: &payload,
        segment_size: Some(SEGMENT),
    });
    assert_eq!(tx.send(&trains).expect("send"), 2);
}

/// The same through the worker's path: [`SEGMENTS`] datagrams to each
/// destination written into a `SendPool`, then one flush.
fn flush_pool(pool: &mut SendPool, tx: &mut BatchSocket, dsts: [SocketAddr; 2]) {
    for _ in 0..SEGMENTS {
        for dst in dsts {
            let buf = pool.buffer().expect("a free buffer");
            buf[..SEGMENT].fill(0x5a);
            pool.send(SEGMENT, dst);
        }
    }
    let f = pool.flush(tx);
    assert_eq!((f.datagrams, f.failed), ((2 * SEGMENTS) as u64, 0));
}

#[test]
fn small_mtu_destination_falls_back_alone_and_is_probed_again() {
    if std::env::var_os(IN_NETNS).is_none() {
        rerun_in_network_namespace();
        return;
    }
    ip("link set lo up");
    ip(&format!("route add {SMALL_MTU_ROUTE}"));

    let mut tx = socket("127.0.0.1");
    tx.set_gso_retry_after(RETRY);
    let mut big = socket("127.0.0.1");
    let mut small = socket("127.0.0.2");
    let dsts = [big.local_addr().unwrap(), small.local_addr().unwrap()];
    assert!(tx.gso_enabled(), "loopback supports GSO");

    // First send: the small-MTU destination is refused once and resent
    // unsegmented; the other one gets its train.
    let started = Instant::now();
    send_trains(&mut tx, dsts);
    assert_eq!(tx.gso_refusals(), 1);
    assert_eq!(tx.gso_fallback_destinations(), 1);
    assert_eq!(tx.gso_sends(), 1, "the loopback destination's train");
    assert!(tx.gso_enabled(), "one destination does not switch GSO off");
    assert_eq!(receive(&mut big, SEGMENTS), [SEGMENT; SEGMENTS]);
    assert_eq!(receive(&mut small, SEGMENTS), [SEGMENT; SEGMENTS]);

    // Within the back-off: no new refusal, plain sends to the small-MTU
    // destination, trains to the other, through the socket and the pool.
    let mut pool = SendPool::new(64);
    send_trains(&mut tx, dsts);
    flush_pool(&mut pool, &mut tx, dsts);
    assert!(started.elapsed() < RETRY, "the test machine is too slow");
    assert_eq!(tx.gso_refusals(), 1);
    assert_eq!(tx.gso_sends(), 3);
    assert_eq!(receive(&mut big, 2 * SEGMENTS), [SEGMENT; 2 * SEGMENTS]);
    assert_eq!(receive(&mut small, 2 * SEGMENTS), [SEGMENT; 2 * SEGMENTS]);

    // After the back-off the destination is probed: refused again (the back-off
    // doubles), nothing lost.
    std::thread::sleep(RETRY);
    let probed = Instant::now();
    flush_pool(&mut pool, &mut tx, dsts);
    assert_eq!(tx.gso_refusals(), 2, "probed again after the back-off");
    assert_eq!(tx.gso_fallback_destinations(), 1);
    assert_eq!(tx.gso_sends(), 4);
    assert_eq!(receive(&mut big, SEGMENTS), [SEGMENT; SEGMENTS]);
    assert_eq!(receive(&mut small, SEGMENTS), [SEGMENT; SEGMENTS]);

    // The path MTU grows back: the next probe, after the doubled back-off,
    // is accepted and the destination leaves the table.
    ip(&format!("route del {SMALL_MTU_ROUTE}"));
    send_trains(&mut tx, dsts);
    assert!(probed.elapsed() < 2 * RETRY, "the test machine is too slow");
    assert_eq!(tx.gso_refusals(), 2, "no probe before the doubled back-off");
    assert_eq!(tx.gso_sends(), 5);
    // `probed` was read just before the refused probe, so its doubled
    // back-off ends a little after `probed + 2 * RETRY`: wait with a margin
    // (a loaded CI machine widened that gap enough to fail once).
    std::thread::sleep((2 * RETRY + RETRY / 2).saturating_sub(probed.elapsed()));
    send_trains(&mut tx, dsts);
    assert_eq!(tx.gso_refusals(), 2);
    assert_eq!(tx.gso_fallback_destinations(), 0);
    assert_eq!(tx.gso_sends(), 7, "both destinations get trains again");
    assert_eq!(receive(&mut big, 2 * SEGMENTS), [SEGMENT; 2 * SEGMENTS]);
    assert_eq!(receive(&mut small, 2 * SEGMENTS), [SEGMENT; 2 * SEGMENTS]);
}

/// Runs the test again inside a new network namespace; fails unless the
/// re-run passes.
fn rerun_in_network_namespace() {
    let exe = std::env::current_exe().expect("the test binary's path");
    let name = "small_mtu_destination_falls_back_alone_and_is_probed_again";
    let status = Command::new("unshare")
        .args(["--net", "--"])
        .arg(&exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(IN_NETNS, "1")
        .status()
        .unwrap_or_else(|e| panic!("cannot run `unshare` (util-linux): {e}"));
    assert!(
        status.success(),
        "{name} inside its own network namespace failed ({status}); see its output \
         above. It needs root (CAP_SYS_ADMIN for `unshare --net`, CAP_NET_ADMIN \
         for `ip route`)."
    );
}
