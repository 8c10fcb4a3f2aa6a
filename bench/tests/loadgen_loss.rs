//! Loss and repair end to end: `sfu-loadgen` against the in-process node
//! with 3 % simulated loss on the way out (subscribers drop packets, NACK
//! the gaps and take the node's RTX) and 3 % on the way in (publishers
//! withhold packets until the node NACKs them). Almost everything must
//! arrive, and the node's repair counters must show both paths worked.

mod common;

use common::Node;

use bench::loadgen::{self, Options};

#[test]
fn three_percent_loss_both_ways_is_repaired() {
    let node = Node::start(1);
    let opts = Options {
        control: node.control_url(),
        rooms: 1,
        publishers: 2,
        subscribers: 4,
        duration: 5.0,
        drain_ms: 1000,
        loss_percent: 3.0,
        publisher_loss_percent: 3.0,
        ..Options::default()
    };
    assert!(opts.repair(), "loss turns NACK on by default");
    let report = loadgen::run(&opts, |_| {}).expect("the load generator runs");
    let summary = serde_json::to_string_pretty(&report).expect("the report serialises");
    let r = &report.repair;
    let node_counter = |k: &str| r.node.get(k).copied().unwrap_or(0);
    eprintln!("{report}");

    assert!(
        report.expected_rx_packets > 0,
        "nothing expected:\n{summary}"
    );
    assert_eq!(report.integrity_errors, 0, "corrupted:\n{summary}");
    assert_eq!(report.misrouted_packets, 0, "misrouted:\n{summary}");
    // Both losses happened at about the asked rate.
    let lost_share = r.sim_lost_packets as f64 / report.expected_rx_packets as f64;
    assert!(
        (0.015..0.05).contains(&lost_share),
        "subscribers dropped {lost_share}:\n{summary}"
    );
    assert!(r.publisher_withheld > 0, "nothing withheld:\n{summary}");
    // At least 90 % of it repaired.
    assert!(
        report.loss_ratio < 0.003,
        "residual loss {:.4} %:\n{summary}",
        report.loss_ratio * 100.0
    );
    assert!(r.repaired_by_rtx > 0 && r.subscriber_nacks > 0, "{summary}");
    // Downstream: the node answered the subscribers' NACKs with RTX.
    assert!(node_counter("nack_in") > 0, "{summary}");
    assert!(node_counter("rtx_sent") > 0, "{summary}");
    // Upstream: the node NACKed the publishers and their RTX came in.
    assert!(node_counter("nack_sent") > 0, "{summary}");
    assert!(node_counter("rtx_in") > 0, "{summary}");
    assert!(node_counter("nack_repaired") > 0, "{summary}");
    assert!(r.publisher_rtx_sent > 0, "{summary}");
}
