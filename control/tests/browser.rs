//! A real browser through the node: headless Chromium publishes its fake
//! camera and microphone through WHIP, a second page subscribes through WHEP,
//! and the subscriber's `getStats()` must show video decoded in every second
//! of a 10 s window, audio received and played, and AEAD_AES_128_GCM SRTP.
//! The publisher negotiated transport-wide-cc: the node must have sent it
//! transport-cc feedback, and Chromium's bandwidth estimate, which starts at
//! 300 kbit/s and only rises on feedback that shows a healthy path, must end
//! above [`MIN_ESTIMATE_KBPS`] with its encoder not limited by bandwidth.
//!
//! The browser side is `browser-test/run.mjs` (node + playwright-core +
//! Debian's `chromium`); `bash .ci/test` installs both. Without them this
//! test fails with a message saying so: it never skips.
//!
//! # Network namespace
//! The test re-runs itself inside a fresh network namespace that has only
//! `lo` (`unshare --net`, then `ip link set lo up`), so the node, Chromium
//! and every packet between them stay on 127.0.0.1: Chromium, started with
//! `--allow-loopback-in-peer-connection`, has no other address to gather a
//! candidate on. Creating the namespace needs root (CAP_SYS_ADMIN), as CI has;
//! without it the test fails and says why.

mod common;

use std::time::Duration;

use common::TestNode;
use common::browser::{self, Run};
use control::auth::Grant;
use serde_json::{Value, json};

const ROOM: &str = "browser";
/// Seconds the subscriber is sampled (once a second).
const DURATION_SECS: usize = 10;
/// The whole browser run: Chromium start-up (~6 s), connecting, the first
/// key frame and the sampling window fit well inside.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
const GCM: &str = "AEAD_AES_128_GCM";
/// Chromium's start estimate is 300 kbit/s; twice that needs feedback.
const MIN_ESTIMATE_KBPS: i64 = 600;

/// Set in the re-run inside the namespace.
const IN_NETNS: &str = "SFU_BROWSER_TEST_IN_NETNS";
const TEST_NAME: &str = "chromium_publishes_over_whip_and_another_page_plays_it_over_whep";

#[test]
fn chromium_publishes_over_whip_and_another_page_plays_it_over_whep() {
    if std::env::var_os(IN_NETNS).is_none() {
        common::rerun_in_network_namespace(
            IN_NETNS,
            TEST_NAME,
            "ip link set lo up",
            "root for `unshare --net` and `ip link`",
        );
        return;
    }
    let dir = browser::browser_test_dir();
    browser::preflight(&dir);

    let node = TestNode::start(1);
    node.create_room(ROOM);
    let publish = node.token(ROOM, &[Grant::Publish]);
    let subscribe = node.token(ROOM, &[Grant::Subscribe]);

    let outcome = browser::run_browser(
        &dir,
        &Run {
            base: &node.base,
            room: ROOM,
            publish: &publish,
            subscribe: &subscribe,
            duration_secs: DURATION_SECS,
            extra_args: &[],
            timeout: RUN_TIMEOUT,
        },
    );
    let result = &outcome.result;
    browser::report(result);
    assert!(
        outcome.passed(),
        "the browser run failed (exit {}): {:?}\nresult: {result}\nstderr: {}",
        outcome.status,
        outcome.errors(),
        outcome.stderr
    );

    // run.mjs checked these already; check them again from its figures so a
    // bug in its verdict cannot pass the test.
    let per_second = outcome.frames_per_second();
    assert_eq!(per_second.len(), DURATION_SECS, "one sample per second");
    assert!(
        per_second.iter().all(|&frames| frames > 0),
        "video froze in some second: {per_second:?}"
    );
    // Chromium's own freeze detector (a frame gap over max(3 × mean, mean +
    // 150 ms)) must not have fired either.
    assert_eq!(
        result["freezeCount"],
        json!(0),
        "Chromium counted video freezes: {result}"
    );
    assert!(
        result["audioPacketsReceived"].as_u64().unwrap_or(0) > 0,
        "no audio packets received: {result}"
    );
    assert!(
        result["audioSamplesReceived"].as_u64().unwrap_or(0) > 0,
        "no audio samples played out: {result}"
    );
    // `srtpProfile` is Chromium's `srtpCipher` without its "SRTP_" prefix.
    assert_eq!(result["srtpProfile"], json!(GCM), "subscriber SRTP profile");
    assert_eq!(
        result["publisher"]["srtpProfile"],
        json!(GCM),
        "publisher SRTP profile"
    );
    let feedback = node.worker_metric("sfu_twcc_feedback_sent_total", 0);
    println!("  node: transport-cc feedback packets sent {feedback}");
    assert!(feedback > 0, "the node sent no transport-cc feedback");
    let estimate = result["publisherEstimateKbps"]
        .as_array()
        .and_then(|a| a.last())
        .and_then(Value::as_i64)
        .unwrap_or(0);
    assert!(
        estimate > MIN_ESTIMATE_KBPS,
        "the publisher's bandwidth estimate ended at {estimate} kbit/s: {result}"
    );
    assert_ne!(
        result["publisher"]["qualityLimitationReason"],
        json!("bandwidth"),
        "the publisher's encoder is limited by bandwidth: {result}"
    );

    node.shutdown();
}
