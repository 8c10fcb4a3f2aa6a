//! A room over the workers of one node: with `cluster.relay_after` at 4,
//! a room's main worker keeps 4 of its endpoints and new subscribers go to
//! a shard on the other worker, fed by a trunk from the main worker. Every
//! subscriber gets every publisher, a publisher that joins later too, with
//! no packet lost, and a shard viewer's keyframe request reaches the
//! publisher. No Redis: a single node spreads its own rooms.

mod common;

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use common::plain::{Publisher, Viewer};
use common::{TestNode, test_config};

const SECRET: &str = "a test secret of at least thirty-two bytes";

#[test]
fn a_big_room_spreads_its_subscribers_over_the_nodes_workers() {
    let mut config = test_config(2, SECRET);
    config.cluster.relay_after = 4;
    let node = TestNode::start_with_config(config);
    let base = node.base.clone();
    let admin = node.admin.clone();
    node.create_room("big");
    let mut first = Publisher::start(&base, &admin, "big", 0x6000_0001);
    thread::sleep(Duration::from_millis(200));
    // The main worker keeps 3 viewers (4 endpoints with the publisher),
    // the shard takes 4, the 8th goes back to the main worker.
    let viewers: Vec<Viewer> = (0..8)
        .map(|_| Viewer::join(&base, "n", &admin, "big"))
        .collect();
    let mut by_worker: BTreeMap<String, usize> = BTreeMap::new();
    for v in &viewers {
        *by_worker.entry(v.media.to_string()).or_default() += 1;
    }
    let (main, shard) = (node.media(0).to_string(), node.media(1).to_string());
    let room_worker = if by_worker.get(&main) == Some(&4) {
        0
    } else {
        1
    };
    println!("SHARDS viewers by worker media address: {by_worker:?}");
    assert_eq!(
        (by_worker.get(&main), by_worker.get(&shard)),
        (Some(&4), Some(&4)),
        "{by_worker:?}"
    );
    // A second publisher joins after the shard opened: its trunk track
    // follows within a sync.
    let mut second = Publisher::start(&base, &admin, "big", 0x6000_0002);
    thread::sleep(Duration::from_secs(2));
    // A shard viewer asks for keyframes: the PLIs reach both publishers.
    let before = [&first, &second].map(|p| p.plis.load(std::sync::atomic::Ordering::Relaxed));
    let on_shard = viewers
        .iter()
        .find(|v| v.media.to_string() == shard)
        .expect("a shard viewer");
    on_shard.request_keyframes();
    let deadline = Instant::now() + Duration::from_secs(2);
    while [&first, &second]
        .iter()
        .zip(before)
        .any(|(p, b)| p.plis.load(std::sync::atomic::Ordering::Relaxed) == b)
    {
        assert!(
            Instant::now() < deadline,
            "a shard viewer's PLI did not reach the publishers"
        );
        thread::sleep(Duration::from_millis(20));
    }
    // Per-room series: the big room's egress is summed over both workers
    // (4 viewers on each, 2 publishers of 100 packets/s, and the trunk),
    // and it tops a small room of one viewer.
    node.create_room("small");
    let mut small = Publisher::start(&base, &admin, "small", 0x6000_0003);
    let small_viewer = Viewer::join(&base, "n", &admin, "small");
    thread::sleep(Duration::from_millis(2500));
    let load = node.get("/v1/load");
    let top = load.json["top_rooms"]
        .as_array()
        .expect("top_rooms")
        .clone();
    println!("SHARDS top rooms: {top:?}");
    assert_eq!(top.len(), 2, "{top:?}");
    let rate = |i: usize, k: &str| top[i][k].as_f64().expect("a rate");
    assert_eq!(
        (top[0]["room"].as_str(), top[1]["room"].as_str()),
        (Some("big"), Some("small"))
    );
    // 2 publishers, 8 viewers, the trunk's two ends; a publisher and a viewer.
    assert_eq!(
        (top[0]["endpoints"].as_u64(), top[1]["endpoints"].as_u64()),
        (Some(12), Some(2))
    );
    // 1,800 packets/s out (8 viewers x 200 + 200 over the trunk), 200 in;
    // 100 and 100 in the small room; wide bounds for a loaded machine.
    assert!((1_200.0..2_400.0).contains(&rate(0, "tx_pps")), "{top:?}");
    assert!((130.0..270.0).contains(&rate(0, "rx_pps")), "{top:?}");
    assert!((60.0..140.0).contains(&rate(1, "tx_pps")), "{top:?}");
    assert!(rate(0, "tx_bps") > rate(1, "tx_bps") * 8.0, "{top:?}");
    let metrics = node.get("/metrics").text;
    for series in [
        "sfu_room_egress_bits_per_second{room=\"big\"}",
        "sfu_room_egress_packets_per_second{room=\"small\"}",
        "sfu_room_ingress_bits_per_second{room=\"big\"}",
        "sfu_room_endpoints{room=\"big\"} 12",
    ] {
        assert!(metrics.contains(series), "{series} not in /metrics");
    }
    small.stop();
    drop(small_viewer);
    assert_eq!(node.delete("/v1/rooms/small").status, 204);
    thread::sleep(Duration::from_millis(500));
    first.stop();
    second.stop();
    thread::sleep(Duration::from_millis(300));
    let mut lost = 0;
    for (i, v) in viewers.iter().enumerate() {
        let seen = v.seen.lock().expect("lock").clone();
        assert_eq!(
            seen.len(),
            2,
            "viewer {i} at {} gets both: {seen:?}",
            v.media
        );
        for (ssrc, (packets, gaps, _)) in &seen {
            assert!(*packets > 100, "viewer {i} ssrc {ssrc:#x}: {packets}");
            lost += gaps;
        }
    }
    assert_eq!(lost, 0, "packets lost across the workers");
    // Both workers forwarded: the shard's worker received the trunk.
    let other = 1 - room_worker;
    assert!(node.worker_metric("sfu_rtp_in_total", other) > 0);
    // Deleting the room deletes its shard.
    assert_eq!(node.delete("/v1/rooms/big").status, 204);
    let load = node.get("/v1/load").json;
    for w in load["workers"].as_array().expect("workers") {
        assert_eq!(w["rooms"], 0, "a room left on a worker: {w}");
    }
}
