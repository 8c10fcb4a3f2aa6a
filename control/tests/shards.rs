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
