//! Last-N end to end: `sfu-loadgen --scenario last-n` against the
//! in-process node, 20 participants with 4 video and 2 audio slots each,
//! two new talkers every 2.5 s. Every viewer must get every talker's video
//! and audio into its slots in each measured period, within the period,
//! never its own media.

mod common;

use common::Node;

use bench::loadgen::{self, Options, Scenario};

#[test]
fn every_viewer_gets_each_new_talker_and_never_itself() {
    let node = Node::start(1);
    let opts = Options {
        control: node.control_url(),
        scenario: Scenario::LastN,
        participants: 20,
        video_slots: 4,
        audio_slots: 2,
        talkers: 2,
        switch_secs: 2.5,
        duration: 10.0,
        drain_ms: 500,
        ..Options::default()
    };
    let report = loadgen::run(&opts, |_| {}).expect("the load generator runs");
    let summary = serde_json::to_string_pretty(&report).expect("the report serialises");
    eprintln!("{report}");
    let ln = report.last_n.as_ref().expect("a last-N report");

    assert_eq!(report.scenario, "last-n");
    assert_eq!(report.endpoints, 20);
    assert_eq!(report.integrity_errors, 0, "corrupted:\n{summary}");
    assert_eq!(
        ln.self_received, 0,
        "a viewer got its own media:\n{summary}"
    );
    assert_eq!(report.misrouted_packets, 0, "{summary}");
    assert!(report.expected_rx_packets > 0, "{summary}");
    assert!(report.loss_ratio < 0.01, "loss:\n{summary}");
    // Periods 1, 2, 3 (2.5-10 s), 2 talkers each, talkers 19..14: every
    // viewer but the talker itself expects each of them.
    assert_eq!(ln.periods_measured, 3, "{summary}");
    let cases = 3 * 2 * 19;
    for (kind, l) in [("video", &ln.video), ("audio", &ln.audio)] {
        assert_eq!(l.expected, cases, "{kind}:\n{summary}");
        assert_eq!(
            l.missed, 0,
            "{kind}: a talker never reached a viewer:\n{summary}"
        );
        // Talkers come from the end of the join order: never on screen before.
        assert_eq!(l.already_shown, 0, "{kind}:\n{summary}");
        assert_eq!(l.measured, cases, "{kind}:\n{summary}");
        let max = l.max_ms.expect("measured");
        assert!(max < 2500.0, "{kind}: a switch took {max} ms:\n{summary}");
    }
    // A video slot follows who spoke (at least 3 loud 100 ms blocks):
    // never at once.
    let p50 = ln.video.p50_ms.expect("measured");
    assert!(
        p50 > 100.0,
        "video switched in {p50} ms, before speech was detectable:\n{summary}"
    );
    assert!(
        ln.node.get("slot_switches").copied().unwrap_or(0) > 0,
        "{summary}"
    );
    assert!(
        ln.node.get("audio_levels").copied().unwrap_or(0) > 0,
        "{summary}"
    );
    assert_eq!(
        ln.node.get("audio_levels_missing").copied().unwrap_or(0),
        0,
        "{summary}"
    );
}
