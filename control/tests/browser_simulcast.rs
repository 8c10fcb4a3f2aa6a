//! Simulcast per subscriber with real Chromium (issue 10): the publisher
//! page sends its fake camera (1280x720 in the capped run, 640x480 in the
//! pinned one; see [`camera`]) as three simulcast layers over WHIP
//! (`run.mjs --simulcast`: rids `q`, `h`, `f` at 1/4, 1/2 and full
//! resolution, at most 150, 500 and 1500 kbit/s), a second page plays it
//! over WHEP, and the node picks the viewer's layer from its own bandwidth
//! estimate (the viewer's transport-cc feedback).
//!
//! - **Capped viewer**: for [`CAP_SECS`] after the viewer's first frame the
//!   node→browsers direction is shaped to 400 kbit/s (`SFU_SIMULCAST_CAP_KBIT`
//!   sets another rate), below the middle layer with audio. From
//!   [`SETTLE_SECS`] after the cap starts until it is lifted the viewer
//!   must decode the low layer in every second (`q`'s width as
//!   the publisher sends it, per its outbound-rtp stats), and in no second
//!   of the run fewer than [`MIN_FPS`] frames;
//!   once lifted it must reach the top layer (`f`'s width) within
//!   [`UP_WITHIN_SECS`].
//! - **Pinned viewer**: the viewer's video slot is capped at layer 2 (the
//!   top of three, `PUT /v1/rooms/{room}/endpoints/{id}/layers`) on an
//!   unshaped path: it must decode the top layer within [`UP_WITHIN_SECS`]
//!   of its first frame and keep it, without a frozen second, to the end.
//!
//! Each run prints one line `SIMULCAST_REPORT {json}`: the viewer's width,
//! frames and kbit/s per second, what the publisher sent per rid, the cap's
//! times, the shaper's counters and the node's simulcast/BWE counters.
//!
//! # Shaping
//! The test re-runs itself in a fresh network namespace with only `lo`
//! (as `browser.rs` does). This kernel has no `netem` and no `prio` qdisc,
//! and a `tbf` at the root of `lo` would shape the publisher too, so `lo`
//! gets an `htb` root whose two classes do not limit (10 Gbit/s): 1:20, the
//! default, and 1:10 with a `tbf` (the cap, 8 kB burst, 200 ms queue)
//! below it. An nftables output rule `udp sport <node media port> meta
//! priority set 1:10` steers what the node sends (media, RTCP, STUN, DTLS
//! to both browsers; the publisher receives little but RTCP) into the tbf;
//! deleting that rule (by handle) lifts the cap.
//!
//! Needs root, `tc` (iproute2), `nft`, Chromium and browser-test/'s
//! playwright-core (`bash .ci/test` installs them); fails, never skips,
//! without them.

mod common;

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::TestNode;
use common::browser::{self, Outcome, Run};
use control::auth::Grant;
use serde_json::{Value, json};

const ROOM: &str = "simulcast";
/// The capped run's window.
const DURATION_SECS: usize = 42;
/// The pinned run's window.
const PINNED_DURATION_SECS: usize = 20;
/// The cap lasts this long from the viewer's first frame.
const CAP_SECS: u64 = 25;
/// From this long after the cap (which starts at the viewer's first frame)
/// every second must show the low layer. A viewer with transport-cc starts
/// on the lowest layer until its feedback comes, and upgrades only after a
/// padding trial, which the capped path fails; a trial taken in the first
/// second, before the tbf's queue has filled, may pass and show the middle
/// layer for a second (measured: 640x360 in s2 of one run of three, 16
/// frames in that second). Before the viewer started on the lowest layer,
/// it started on the middle one in 2 of 6 runs (Chromium's 640x360 layer,
/// ramping up, measured below the 300 kbit/s start estimate) and decoded
/// 0-1 frames/s for 3-4 s.
const SETTLE_SECS: u64 = 4;
/// A second with fewer decoded frames than this (of the publisher's 20) is
/// a freeze, in any second of the run from the viewer's first frame.
const MIN_FPS: i64 = 10;
/// Up to the top layer within this long (after the lift, or after the
/// pinned viewer's first frame).
const UP_WITHIN_SECS: u64 = 10;
/// Chromium start-up, connecting, first frame, the window and the DELETEs.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// The cap in kbit/s: the 400 unless `SFU_SIMULCAST_CAP_KBIT` says
/// otherwise. On loopback the tbf counts 42 bytes of Ethernet, IP and UDP
/// headers per packet besides SRTP, so what must fit under it is a layer's
/// bitrate plus audio (~40 kbit/s) plus ~25-35 kbit/s of headers.
fn cap_kbit() -> u32 {
    std::env::var("SFU_SIMULCAST_CAP_KBIT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400)
}

/// The capped run's camera: 1280x720 unless `SFU_SIMULCAST_CAMERA` says
/// otherwise. Chromium puts few bits into its fake camera's simple picture:
/// at 640x480 it sends the middle layer (320x240) at 220-290 kbit/s, which
/// fits under 400 kbit/s with audio and headers, and the low one at ~140
/// kbit/s, which fills 250 kbit/s of wire to within 5 % (measured: 400 ms
/// of queue and 10 % of drops in the tbf, frozen seconds whatever the node
/// does). At 1280x720 the middle layer (640x360) needs more than the cap
/// and the low one (320x180) fits with room to spare: the scenario.
fn camera() -> String {
    std::env::var("SFU_SIMULCAST_CAMERA").unwrap_or_else(|_| "1280x720".into())
}
/// The counters of the report, from the node's `/metrics` (worker 0).
const COUNTERS: [&str; 8] = [
    "sfu_layer_switches_total",
    "sfu_bwe_allocations_total",
    "sfu_bwe_probes_total",
    "sfu_bwe_trials_total",
    "sfu_bwe_trials_passed_total",
    "sfu_bwe_trials_failed_total",
    "sfu_twcc_feedback_in_total",
    "sfu_consumers_paused_total",
];

/// Set in the re-run inside the namespace.
const IN_NETNS: &str = "SFU_BROWSER_SIMULCAST_IN_NETNS";

#[test]
fn a_capped_viewer_gets_the_low_layer_and_moves_up_when_the_cap_is_lifted() {
    let test_name = "a_capped_viewer_gets_the_low_layer_and_moves_up_when_the_cap_is_lifted";
    if !enter_namespace(test_name) {
        return;
    }
    let dir = browser::browser_test_dir();
    browser::preflight(&dir);
    let node = TestNode::start(1);
    node.create_room(ROOM);
    let publish = node.token(ROOM, &[Grant::Publish]);
    let subscribe = node.token(ROOM, &[Grant::Subscribe]);
    let port = node.media(0).port();
    prepare_shaper();

    let load_before = loadavg();
    let mut cap_at: Option<u64> = None;
    let mut lift_at: Option<u64> = None;
    let mut handle: Option<String> = None;
    // The viewer's endpoint, from the harness's "subscribed <url>" line, and
    // its bandwidth estimate polled once a second (`GET .../endpoints/{id}`).
    let mut viewer: Option<String> = None;
    let mut bandwidth: Vec<Value> = Vec::new();
    let mut polled_at = 0;
    let outcome = browser::run_browser_live(
        &dir,
        &Run {
            base: &node.base,
            room: ROOM,
            publish: &publish,
            subscribe: &subscribe,
            duration_secs: DURATION_SECS,
            extra_args: &["--allow-freeze", "--simulcast", "--camera", &camera()],
            timeout: RUN_TIMEOUT,
        },
        |line| {
            if let Some(url) = line.and_then(|l| l.strip_prefix("run.mjs: subscribed ")) {
                viewer = url.trim().rsplit('/').next().map(str::to_owned);
            }
            if let Some(id) = viewer.as_deref()
                && now_ms() >= polled_at + 1000
            {
                polled_at = now_ms();
                let a = node.get(&format!("/v1/rooms/{ROOM}/endpoints/{id}"));
                bandwidth.push(json!({ "atMs": polled_at, "bandwidth": a.json["bandwidth"] }));
            }
            if line.is_some_and(|l| l.starts_with("run.mjs: first-frame ")) && cap_at.is_none() {
                handle = Some(cap(port));
                cap_at = Some(now_ms());
            }
            if let (Some(at), None) = (cap_at, lift_at)
                && now_ms() >= at + CAP_SECS * 1000
            {
                lift(handle.as_deref().expect("the cap's rule handle"));
                lift_at = Some(now_ms());
            }
        },
    );
    let load_after = loadavg();
    let r = &outcome.result;
    browser::report(r);
    let seconds = per_second(&outcome);
    let report = json!({
        "scenario": test_name,
        "loadavgBefore": load_before,
        "loadavgAfter": load_after,
        "capKbit": cap_kbit(),
        "camera": camera(),
        "capAtMs": cap_at,
        "liftAtMs": lift_at,
        "seconds": seconds.iter().map(|s| s.json(cap_at, lift_at)).collect::<Vec<_>>(),
        "counters": counters(&node),
        "viewerBandwidth": bandwidth,
        "shaper": shaper_stats(),
        "publisherLayers": r["publisher"]["layers"],
        "harnessExit": outcome.status,
        "result": r,
    });
    println!("SIMULCAST_REPORT {report}");

    let mut failures = common_failures(&outcome, &seconds, DURATION_SECS);
    match (cap_at, lift_at) {
        (Some(cap_at), Some(lift_at)) => {
            let capped: Vec<&Second> = seconds
                .iter()
                .filter(|s| s.at >= cap_at + SETTLE_SECS * 1000 && s.at <= lift_at)
                .collect();
            if capped.len() < (CAP_SECS - SETTLE_SECS - 1) as usize {
                failures.push(format!(
                    "only {} samples while capped (from {SETTLE_SECS} s after the cap)",
                    capped.len()
                ));
            }
            for s in seconds.iter().filter(|s| s.at >= cap_at + 1000) {
                if s.frames < MIN_FPS {
                    failures.push(format!(
                        "second {}: {} frames decoded, a freeze",
                        s.index, s.frames
                    ));
                }
            }
            for s in &capped {
                if !s.is_layer("q") {
                    failures.push(format!(
                        "capped second {}: the viewer decodes {}, not the low layer (q: {:?})",
                        s.index,
                        s.size(),
                        s.layer_sizes("q")
                    ));
                }
            }
            let up = seconds
                .iter()
                .filter(|s| s.at > lift_at && s.at <= lift_at + UP_WITHIN_SECS * 1000)
                .any(|s| s.is_layer("f"));
            if !up {
                failures.push(format!(
                    "the viewer did not reach the top layer (f) within {UP_WITHIN_SECS} s \
                     of the lift"
                ));
            }
        }
        _ => failures.push("no first frame: the cap was never applied".into()),
    }
    assert!(
        failures.is_empty(),
        "capped viewer:\n  {}\nreport: {report}",
        failures.join("\n  ")
    );
    node.shutdown();
}

#[test]
fn a_viewer_pinned_to_the_high_layer_gets_it() {
    let test_name = "a_viewer_pinned_to_the_high_layer_gets_it";
    if !enter_namespace(test_name) {
        return;
    }
    let dir = browser::browser_test_dir();
    browser::preflight(&dir);
    let node = TestNode::start(1);
    node.create_room(ROOM);
    let publish = node.token(ROOM, &[Grant::Publish]);
    let subscribe = node.token(ROOM, &[Grant::Subscribe]);

    let load_before = loadavg();
    let mut pinned: Option<u16> = None;
    let mut first_at: Option<u64> = None;
    let outcome = browser::run_browser_live(
        &dir,
        &Run {
            base: &node.base,
            room: ROOM,
            publish: &publish,
            subscribe: &subscribe,
            duration_secs: PINNED_DURATION_SECS,
            extra_args: &["--allow-freeze", "--simulcast"],
            timeout: RUN_TIMEOUT,
        },
        |line| {
            let Some(line) = line else { return };
            if let Some(url) = line.strip_prefix("run.mjs: subscribed ") {
                let id = url.rsplit('/').next().expect("a resource URL");
                let a = node.put(
                    &format!("/v1/rooms/{ROOM}/endpoints/{id}/layers"),
                    &json!({ "slot": 0, "max_layer": 2 }).to_string(),
                );
                pinned = Some(a.status);
            }
            if line.starts_with("run.mjs: first-frame ") {
                first_at = Some(now_ms());
            }
        },
    );
    let load_after = loadavg();
    let r = &outcome.result;
    browser::report(r);
    let seconds = per_second(&outcome);
    let report = json!({
        "scenario": test_name,
        "loadavgBefore": load_before,
        "loadavgAfter": load_after,
        "pinStatus": pinned,
        "seconds": seconds.iter().map(|s| s.json(None, None)).collect::<Vec<_>>(),
        "counters": counters(&node),
        "publisherLayers": r["publisher"]["layers"],
        "harnessExit": outcome.status,
        "result": r,
    });
    println!("SIMULCAST_REPORT {report}");

    let mut failures = common_failures(&outcome, &seconds, PINNED_DURATION_SECS);
    if pinned != Some(204) {
        failures.push(format!("PUT .../layers answered {pinned:?}, expected 204"));
    }
    // The node offers a layer once it sends more than the one below it
    // (Chromium may start its top layer seconds late and ramp it up): the
    // clock starts at the viewer's first frame or then, whichever is later.
    let f_ready = seconds
        .iter()
        .find(|s| s.layer_kbps("f") > s.layer_kbps("h"))
        .map(|s| s.at);
    match (first_at, f_ready) {
        (None, _) => failures.push("no first frame".into()),
        (Some(_), None) => failures.push(
            "the publisher never sent its top layer (f) above its middle one (h): \
             the harness's Chromium did not ramp up"
                .into(),
        ),
        (Some(first_at), Some(ready)) => {
            let within = first_at.max(ready) + UP_WITHIN_SECS * 1000;
            match seconds.iter().find(|s| s.is_layer("f")) {
                Some(s) if s.at <= within => {
                    for later in seconds.iter().filter(|l| l.at > within) {
                        if later.frames <= 0 || !later.is_layer("f") {
                            failures.push(format!(
                                "second {}: {} frames of {}, not the top layer (f: {:?})",
                                later.index,
                                later.frames,
                                later.size(),
                                later.layer_sizes("f")
                            ));
                        }
                    }
                }
                found => failures.push(format!(
                    "the viewer did not reach the top layer (f) within {UP_WITHIN_SECS} s \
                     of its first frame or of the publisher's top layer being ready \
                     (first at second {:?})",
                    found.map(|s| s.index)
                )),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "pinned viewer:\n  {}\nreport: {report}",
        failures.join("\n  ")
    );
    node.shutdown();
}

/// Re-runs `test_name` in its own namespace; true inside it.
fn enter_namespace(test_name: &str) -> bool {
    for tool in ["nft", "tc"] {
        let out = Command::new(tool).arg("-V").output();
        assert!(
            out.as_ref().is_ok_and(|o| o.status.success()),
            "`{tool}` is not runnable ({out:?}): install Debian's nftables and iproute2"
        );
    }
    if std::env::var_os(IN_NETNS).is_some() {
        return true;
    }
    // One browser run at a time: two Chromiums, publishers and nodes at
    // once on a 2-core machine starve each other, and the capped viewer's
    // bandwidth estimate then sees bursts no network made (a CI run saw it
    // move to the middle layer under the 400 kbit/s cap for 4 s).
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    common::rerun_in_network_namespace(
        IN_NETNS,
        test_name,
        "ip link set lo up",
        "root for `unshare --net`, `ip link`, `tc` and `nft`",
    );
    false
}

/// Serialises the tests' browser runs (see [`enter_namespace`]).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `program args`; panics unless it succeeds; returns its stdout.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} does not start: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The htb root with its two unlimited classes, the tbf below 1:10, and
/// the empty `inet shape` output chain the cap's rule goes into.
fn prepare_shaper() {
    let tc = |args: &str| run("tc", &args.split_whitespace().collect::<Vec<_>>());
    tc("qdisc add dev lo root handle 1: htb default 20 r2q 1000");
    tc("class add dev lo parent 1: classid 1:20 htb rate 10gbit quantum 60000");
    tc("class add dev lo parent 1: classid 1:10 htb rate 10gbit quantum 60000");
    tc(&format!(
        "qdisc add dev lo parent 1:10 handle 10: tbf rate {}kbit burst 8kb latency 200ms",
        cap_kbit()
    ));
    run("nft", &["add", "table", "inet", "shape"]);
    run(
        "nft",
        &[
            "add",
            "chain",
            "inet",
            "shape",
            "output",
            "{ type filter hook output priority 0; policy accept; }",
        ],
    );
}

/// Steers what the node sends from `port` into the tbf; returns the
/// rule's handle.
fn cap(port: u16) -> String {
    let echoed = run(
        "nft",
        &[
            "--echo",
            "--handle",
            "add",
            "rule",
            "inet",
            "shape",
            "output",
            "udp",
            "sport",
            &port.to_string(),
            "counter",
            "meta",
            "priority",
            "set",
            "1:10",
        ],
    );
    echoed
        .lines()
        .find_map(|l| l.split("# handle ").nth(1))
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|| panic!("nft echoed no handle: {echoed}"))
}

fn lift(handle: &str) {
    run(
        "nft",
        &[
            "delete", "rule", "inet", "shape", "output", "handle", handle,
        ],
    );
}

/// `tc -s qdisc show dev lo`, as text.
fn shaper_stats() -> String {
    run("tc", &["-s", "qdisc", "show", "dev", "lo"])
}

fn counters(node: &TestNode) -> Value {
    let all = node.worker_metrics(0);
    COUNTERS
        .iter()
        .map(|&name| (name.to_owned(), json!(all.get(name).copied().unwrap_or(0))))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    u64::try_from(since.as_millis()).expect("milliseconds fit")
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// One sample of the window.
struct Second {
    /// 1-based: the second of the window the sample ends.
    index: usize,
    at: u64,
    frames: i64,
    width: Option<u64>,
    height: Option<u64>,
    kbps: i64,
    /// What the publisher sent, per rid ("WxH kbit/s"), at this sample and
    /// the one before (the decoded frame may be up to a second old).
    layers: Value,
    layers_before: Value,
}

impl Second {
    fn size(&self) -> String {
        format!("{}x{}", self.width.unwrap_or(0), self.height.unwrap_or(0))
    }

    /// The publisher's frame sizes of `rid` at this sample and the one
    /// before.
    fn layer_sizes(&self, rid: &str) -> Vec<String> {
        [&self.layers, &self.layers_before]
            .iter()
            .filter_map(|l| l[rid].as_str())
            .filter_map(|l| l.split(' ').next())
            .map(str::to_owned)
            .collect()
    }

    /// What the publisher sent of `rid` in this second, kbit/s.
    fn layer_kbps(&self, rid: &str) -> i64 {
        self.layers[rid]
            .as_str()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|k| k.parse().ok())
            .unwrap_or(0)
    }

    /// The viewer decodes `rid`'s frame size (as the publisher sent it
    /// then or a second before).
    fn is_layer(&self, rid: &str) -> bool {
        self.width.is_some() && self.layer_sizes(rid).contains(&self.size())
    }

    fn json(&self, cap_at: Option<u64>, lift_at: Option<u64>) -> Value {
        let phase = match (cap_at, lift_at) {
            (Some(c), _) if self.at < c => "before",
            (Some(_), Some(l)) if self.at > l => "lifted",
            (Some(_), _) => "capped",
            _ => "",
        };
        json!({
            "s": self.index,
            "phase": phase,
            "size": self.size(),
            "frames": self.frames,
            "kbps": self.kbps,
            "publisher": self.layers,
        })
    }
}

fn per_second(outcome: &Outcome) -> Vec<Second> {
    let r = &outcome.result;
    let list = |key: &str| r[key].as_array().cloned().unwrap_or_default();
    let (at, frames, widths, heights, kbps, layers) = (
        list("sampleAtMs"),
        list("framesDecodedPerSecond"),
        list("frameWidthPerSecond"),
        list("frameHeightPerSecond"),
        list("videoKbpsPerSecond"),
        list("publisherLayersPerSecond"),
    );
    (0..at.len())
        .map(|i| Second {
            index: i + 1,
            at: at[i].as_u64().unwrap_or(0),
            frames: frames.get(i).and_then(Value::as_i64).unwrap_or(0),
            width: widths.get(i).and_then(Value::as_u64),
            height: heights.get(i).and_then(Value::as_u64),
            kbps: kbps.get(i).and_then(Value::as_i64).unwrap_or(0),
            layers: layers.get(i).cloned().unwrap_or(Value::Null),
            layers_before: i
                .checked_sub(1)
                .and_then(|j| layers.get(j).cloned())
                .unwrap_or(Value::Null),
        })
        .collect()
}

/// run.mjs's own checks (audio, SRTP, DELETEs), a sample per second, and
/// three simulcast layers of distinct sizes from the publisher.
fn common_failures(outcome: &Outcome, seconds: &[Second], duration: usize) -> Vec<String> {
    let mut failures = Vec::new();
    if !outcome.passed() {
        failures.push(format!(
            "the browser run failed (exit {}): {:?}\nstderr: {}",
            outcome.status,
            outcome.errors(),
            outcome.stderr
        ));
    }
    if seconds.len() != duration {
        failures.push(format!(
            "{} samples, expected one per second of {duration}",
            seconds.len()
        ));
    }
    let layers = outcome.result["publisher"]["layers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let rids: Vec<&str> = layers.iter().filter_map(|l| l["rid"].as_str()).collect();
    if rids.len() != 3 {
        failures.push(format!(
            "the publisher sent {} video streams (rids {rids:?}), expected q, h and f",
            rids.len()
        ));
    }
    failures
}
