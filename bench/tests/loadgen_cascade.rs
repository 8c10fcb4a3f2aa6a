//! A 1,000-subscriber room over three nodes of one cluster: `sfu-loadgen`
//! joins two publishers and 1,000 subscribers through the three nodes in
//! turn (a load balancer's stand-in); the room's origin keeps
//! `relay_after` endpoints and places the other subscribers on the two
//! other nodes, which it feeds over cascade trunks. Every packet must
//! reach every subscriber.
//!
//! Needs `redis-server` (Debian's package, which the README's test command
//! installs); without it the test fails and says so.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use bench::loadgen::{self, NodeList, Options};
use common::Node;

/// A `redis-server` on a free loopback port, killed on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed for the cluster tests (apt-get install redis-server; the README's test command does it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            thread::sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Cluster node `id` in this process, with its own runtime.
fn cluster_node(id: &str, redis: &Redis, relay_after: u32) -> Node {
    let mut config = common::config(1, id);
    config.cluster.redis = Some(format!("redis://127.0.0.1:{}", redis.port));
    config.cluster.relay_after = relay_after;
    Node::start_config(config)
}

#[test]
fn a_thousand_subscribers_span_three_nodes_without_loss() {
    const SUBSCRIBERS: usize = 1000;
    const RELAY_AFTER: u32 = 340;
    let redis = Redis::start();
    let nodes: Vec<Node> = ["k1", "k2", "k3"]
        .iter()
        .map(|id| cluster_node(id, &redis, RELAY_AFTER))
        .collect();
    let urls: Vec<String> = nodes.iter().map(Node::control_url).collect();
    // Every node sees the three (heartbeats every 500 ms).
    thread::sleep(Duration::from_millis(1500));
    let opts = Options {
        nodes: Some(NodeList(urls.clone())),
        rooms: 1,
        publishers: 2,
        subscribers: SUBSCRIBERS,
        audio: true,
        video_kbps: Some(300),
        duration: 5.0,
        ..Options::default()
    };
    let report = loadgen::run(&opts, |_| {}).expect("the load generator runs");
    let summary = serde_json::to_string_pretty(&report).expect("the report serialises");
    let endpoints: Vec<u64> = urls
        .iter()
        .map(|u| report.node_load[u]["endpoints"].as_u64().unwrap_or(0))
        .collect();
    println!(
        "CASCADE_1000 endpoints by node {endpoints:?}: expected {} received {} loss {} p50 {:?} us p99 {:?} us rx {:.0} pps",
        report.expected_rx_packets,
        report.rx_counted_packets,
        report.loss_ratio,
        report.latency_us_p50,
        report.latency_us_p99,
        report.rx_pps,
    );
    // The origin holds 340 endpoints (2 publishers, 336 subscribers and
    // the two trunks); the relays 340 or fewer subscribers and a trunk.
    for (u, n) in urls.iter().zip(&endpoints) {
        assert!(
            (300..=345).contains(n),
            "{u} holds {n} endpoints: {endpoints:?}\n{summary}"
        );
    }
    assert_eq!(
        endpoints.iter().sum::<u64>(),
        (SUBSCRIBERS + 2 + 2 * 2) as u64,
        "every subscriber, two publishers, two trunks at each end"
    );
    assert!(report.expected_rx_packets > 0, "{summary}");
    assert_eq!(report.integrity_errors, 0, "{summary}");
    assert_eq!(report.misrouted_packets, 0, "{summary}");
    assert_eq!(
        report.rx_counted_packets, report.expected_rx_packets,
        "every packet reached every subscriber:\n{summary}"
    );
}
