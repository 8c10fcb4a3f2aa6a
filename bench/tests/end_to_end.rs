//! The node started in-process on loopback, driven by `sfu-loadgen`'s
//! library: every packet every publisher sends must reach every subscriber
//! of its room, decrypt with the key the node handed out, carry the bytes the
//! publisher wrote, and arrive in order without gaps.

mod common;

use common::Node;
use control::config::ApiSecret;

use bench::loadgen::{self, Options, Report, Scenario};
use sfu_core::srtp::Profile;

fn options(node: &Node) -> Options {
    Options {
        control: node.control_url(),
        rooms: 2,
        publishers: 2,
        subscribers: 3,
        video_kbps: Some(600),
        audio: true,
        duration: 3.0,
        verify_all: true,
        drain_ms: 1000,
        ..Options::default()
    }
}

/// Everything sent arrived, intact, in order, exactly once.
fn assert_perfect(report: &Report) {
    let summary = serde_json::to_string_pretty(report).expect("the report serialises");
    assert!(report.tx_packets > 0, "nothing was sent:\n{summary}");
    assert_eq!(report.send_errors, 0, "send errors:\n{summary}");
    assert!(
        report.expected_rx_packets > 0,
        "no packet was expected:\n{summary}"
    );
    assert_eq!(
        report.rx_counted_packets, report.expected_rx_packets,
        "received != expected:\n{summary}"
    );
    assert_eq!(report.rx_unexpected_packets, 0, "unexpected:\n{summary}");
    assert_eq!(report.integrity_errors, 0, "corrupted payloads:\n{summary}");
    assert_eq!(report.srtp_errors, 0, "SRTP failures:\n{summary}");
    assert_eq!(report.misrouted_packets, 0, "misrouted:\n{summary}");
    assert_eq!(report.out_of_order, 0, "reordered:\n{summary}");
    assert_eq!(report.seq_gaps, 0, "sequence gaps:\n{summary}");
    assert_eq!(report.unannounced_ssrcs, 0, "unknown SSRCs:\n{summary}");
    // --verify-all: every RTP datagram was decrypted and its pattern checked.
    assert_eq!(
        report.verified_packets,
        report.rx_packets - report.rx_rtcp_packets,
        "not every packet was verified:\n{summary}"
    );
}

#[test]
fn every_packet_arrives_intact_and_in_order_gcm() {
    let node = Node::start(1);
    let report = loadgen::run(&options(&node), |_| {}).expect("the load generator runs");
    assert_eq!(report.profile, "AEAD_AES_128_GCM");
    // 2 rooms × 2 publishers × (video + audio), each to 3 subscribers.
    assert_eq!(report.endpoints, 10);
    assert!(report.tx_video_packets > 0 && report.tx_audio_packets > 0);
    assert_perfect(&report);
}

#[test]
fn every_packet_arrives_intact_and_in_order_cm_two_workers() {
    let node = Node::start(2);
    let opts = Options {
        profile: Profile::Aes128CmHmacSha1_80,
        ..options(&node)
    };
    let report = loadgen::run(&opts, |_| {}).expect("the load generator runs");
    assert_eq!(report.profile, "AES_CM_128_HMAC_SHA1_80");
    assert_perfect(&report);
}

#[test]
fn seed_meeting_in_miniature_switches_speakers_without_loss() {
    let node = Node::start(1);
    let opts = Options {
        control: node.control_url(),
        scenario: Scenario::SeedMeeting,
        participants: 12,
        speakers: 3,
        switch_secs: 1.0,
        switch_budget_ms: 300,
        switch_grace_ms: 100,
        duration: 4.0,
        drain_ms: 1000,
        ..Options::default()
    };
    let report = loadgen::run(&opts, |_| {}).expect("the load generator runs");
    assert!(
        report.switches >= 2,
        "speakers did not rotate: {}",
        report.switches
    );
    assert_eq!(report.switch_errors, 0);
    assert_perfect(&report);
}

/// Against a node with its own API secret the default (development) secret
/// is refused before anything is set up, and `--api-secret` with the node's
/// secret works.
#[test]
fn api_secret_must_match_the_node() {
    use clap::Parser as _;
    const SECRET: &str = "end-to-end secret, at least 32 bytes";
    let node = Node::start_with(1, ApiSecret::new(SECRET));
    let small = Options {
        rooms: 1,
        publishers: 1,
        subscribers: 1,
        audio: false,
        duration: 1.0,
        drain_ms: 500,
        ..options(&node)
    };
    let err = loadgen::run(&small, |_| {}).expect_err("the development secret is refused");
    let text = format!("{err:#}");
    assert!(
        text.contains("401") && text.contains("bad_signature"),
        "{text}"
    );

    let parsed = Options::try_parse_from(["sfu-loadgen", "--api-secret", SECRET])
        .expect("--api-secret parses");
    let opts = Options {
        api_secret: parsed.api_secret,
        ..small
    };
    let report = loadgen::run(&opts, |_| {}).expect("the node's secret is accepted");
    assert_eq!(report.endpoints, 2);
    assert_perfect(&report);
}
