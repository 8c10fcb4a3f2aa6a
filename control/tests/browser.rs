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

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::TestNode;
use control::auth::Grant;
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
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
    let dir = browser_test_dir();
    preflight(&dir);

    let node = TestNode::start(1);
    node.create_room(ROOM);
    let publish = node.token(ROOM, &[Grant::Publish]);
    let subscribe = node.token(ROOM, &[Grant::Subscribe]);

    let (status, stdout, stderr) = run_browser(&dir, &node.base, &publish, &subscribe);
    let result: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("run.mjs printed no JSON result ({e}); exit {status}\nstdout: {stdout}\nstderr: {stderr}")
    });
    report(&result);
    let errors = result["errors"].as_array().cloned().unwrap_or_default();
    assert!(
        status == 0 && result["ok"] == json!(true) && errors.is_empty(),
        "the browser run failed (exit {status}): {errors:?}\nresult: {result}\nstderr: {stderr}"
    );

    // run.mjs checked these already; check them again from its figures so a
    // bug in its verdict cannot pass the test.
    let per_second: Vec<i64> = result["framesDecodedPerSecond"]
        .as_array()
        .expect("framesDecodedPerSecond is an array")
        .iter()
        .map(|v| v.as_i64().expect("frame counts are integers"))
        .collect();
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

/// `browser-test/` at the repository root.
fn browser_test_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("control/ sits in the repository root")
        .join("browser-test")
}

/// Fails (never skips) when the browser or the node packages are missing.
fn preflight(dir: &Path) {
    let fix = "run `bash .ci/test` from the repository root: it installs Debian's `chromium` \
               and runs `npm ci` in browser-test/";
    assert!(
        dir.join("run.mjs").is_file(),
        "{} is missing",
        dir.join("run.mjs").display()
    );
    assert!(
        Path::new(CHROMIUM).is_file(),
        "no Chromium at {CHROMIUM}: {fix}"
    );
    assert!(
        dir.join("node_modules/playwright-core/package.json")
            .is_file(),
        "playwright-core is not installed in {}: {fix}",
        dir.join("node_modules").display()
    );
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "`node` (>= 20) is not runnable: {node:?}"
    );
}

/// Runs `node run.mjs` against the node; returns its exit status (-1 when
/// killed by a signal), stdout and stderr.
fn run_browser(dir: &Path, base: &str, publish: &str, subscribe: &str) -> (i32, String, String) {
    common::run_with_timeout(
        Command::new("node")
            .arg(dir.join("run.mjs"))
            .args(["--base", base, "--room", ROOM])
            .args(["--publish-token", publish, "--subscribe-token", subscribe])
            .args(["--duration", &DURATION_SECS.to_string()])
            .env("CHROMIUM", CHROMIUM)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
        RUN_TIMEOUT,
    )
}

/// Prints the figures (`cargo test -- --nocapture` shows them).
fn report(r: &Value) {
    println!("browser: Chromium {}", r["browser"]);
    println!(
        "  frames decoded per second: {} (total {}, {} {}, freezes {})",
        r["framesDecodedPerSecond"],
        r["framesDecoded"],
        r["videoCodec"],
        r["frameSize"],
        r["freezeCount"]
    );
    println!(
        "  audio: {} packets, {} samples played ({})",
        r["audioPacketsReceived"], r["audioSamplesReceived"], r["audioCodec"]
    );
    println!(
        "  packets lost: {} (video {}, audio {}); NACKs {}, PLIs {}",
        r["packetsLost"],
        r["videoPacketsLost"],
        r["audioPacketsLost"],
        r["nackCount"],
        r["pliCount"]
    );
    println!(
        "  DTLS {} ({}), SRTP {}; publisher SRTP {}",
        r["dtlsCipher"], r["tlsVersion"], r["srtpCipher"], r["publisher"]["srtpCipher"]
    );
    println!(
        "  connected after {} ms, first frame after {} ms, pair {}",
        r["connectMs"], r["firstFrameMs"], r["candidatePair"]
    );
    println!(
        "  publisher: bandwidth estimate per second (kbit/s) {}, video sent per second (kbit/s) {}, \
         {} target {} bit/s, quality limitation {}",
        r["publisherEstimateKbps"],
        r["publisherKbps"],
        r["publisher"]["frameSize"],
        r["publisher"]["targetBitrate"],
        r["publisher"]["qualityLimitationReason"]
    );
    if let Some(errors) = r["errors"].as_array().filter(|e| !e.is_empty()) {
        println!("  errors: {errors:?}");
    }
}
