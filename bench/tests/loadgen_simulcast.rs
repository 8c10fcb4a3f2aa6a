//! Simulcast end to end: `sfu-loadgen --simulcast` against the in-process
//! node, three publishers of three VP8 layers and two subscribers whose
//! caps step through layer 0, layer 1 and no cap every 2 s. Every
//! subscriber must see every layer, switch layers at keyframes only, and
//! keep one continuous sequence number and PictureID space across switches.

mod common;

use common::Node;

use bench::loadgen::{self, Options};

#[test]
fn simulcast_layers_switch_on_keyframes_with_continuous_numbering() {
    let node = Node::start(1);
    let opts = Options {
        control: node.control_url(),
        rooms: 1,
        publishers: 3,
        subscribers: 2,
        audio: true,
        video_kbps: Some(900),
        simulcast: true,
        keyframe_secs: 2.0,
        layer_cap_secs: 2.0,
        duration: 9.0,
        drain_ms: 500,
        ..Options::default()
    };
    let report = loadgen::run(&opts, |_| {}).expect("the load generator runs");
    let summary = serde_json::to_string_pretty(&report).expect("the report serialises");
    eprintln!("{report}");
    let sc = report.simulcast.as_ref().expect("a simulcast report");
    let consumers = 3 * 2;

    assert_eq!(sc.layer_kbps, [90, 300, 900], "{summary}");
    assert_eq!(report.integrity_errors, 0, "corrupted:\n{summary}");
    assert_eq!(report.misrouted_packets, 0, "{summary}");
    assert!(report.expected_rx_packets > 0, "{summary}");
    assert!(report.loss_ratio < 0.01, "loss:\n{summary}");
    // Caps at 2 s (layer 0), 4 s (1), 6 s (none), 8 s (0).
    assert_eq!((sc.cap_steps, sc.cap_errors), (4, 0), "{summary}");
    assert_eq!(sc.cap_requests, 4 * consumers as u64, "{summary}");
    // Every layer reached the subscribers.
    assert!(
        sc.rx_layer_packets.iter().all(|&n| n > 0),
        "a layer never arrived:\n{summary}"
    );
    // Each consumer starts on the top layer (the layers appear together,
    // before its first keyframe) and switches at each of the 4 cap steps:
    // allow one step lost to a slow machine per consumer.
    assert!(
        sc.layer_switches >= 3 * consumers as u64,
        "too few switches:\n{summary}"
    );
    assert!(
        sc.node.get("layer_switches").copied().unwrap_or(0) >= sc.layer_switches,
        "the node switched less than seen:\n{summary}"
    );
    // The node switches at keyframes of the new layer, which the
    // publishers sent when asked.
    assert_eq!(sc.switches_not_on_keyframe, 0, "{summary}");
    assert!(
        sc.keyframe_requests_in > 0,
        "no PLI/FIR reached a publisher:\n{summary}"
    );
    assert!(sc.tx_keyframes_requested > 0, "{summary}");
    // One numbering across every switch.
    assert_eq!(
        sc.switch_seq_gaps, 0,
        "numbers skipped at a switch:\n{summary}"
    );
    assert_eq!(
        sc.picture_id_jumps, 0,
        "PictureID discontinuities:\n{summary}"
    );
}
