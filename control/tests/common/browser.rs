//! The Chromium harness (`browser-test/run.mjs`) as the browser tests run
//! it: where it lives, what it needs, one run, and its figures.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// Debian's Chromium; `bash .ci/test` installs it.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// `browser-test/` at the repository root.
pub fn browser_test_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("control/ sits in the repository root")
        .join("browser-test")
}

/// Fails (never skips) when the browser or the node packages are missing.
pub fn preflight(dir: &Path) {
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

/// One harness run: the room, the two tokens, the window and any further
/// `run.mjs` options.
pub struct Run<'a> {
    pub base: &'a str,
    pub room: &'a str,
    pub publish: &'a str,
    pub subscribe: &'a str,
    pub duration_secs: usize,
    pub extra_args: &'a [&'a str],
    pub timeout: Duration,
}

/// What `run.mjs` did: its exit status (-1 when killed by a signal), its
/// JSON result, and its stderr.
pub struct Outcome {
    pub status: i32,
    pub result: Value,
    pub stderr: String,
}

impl Outcome {
    /// run.mjs's own verdict: exit 0, `ok`, no errors.
    pub fn passed(&self) -> bool {
        self.status == 0 && self.result["ok"] == Value::Bool(true) && self.errors().is_empty()
    }

    pub fn errors(&self) -> Vec<Value> {
        self.result["errors"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Frames the subscriber decoded in each second of the window.
    pub fn frames_per_second(&self) -> Vec<i64> {
        self.result["framesDecodedPerSecond"]
            .as_array()
            .expect("framesDecodedPerSecond is an array")
            .iter()
            .map(|v| v.as_i64().expect("frame counts are integers"))
            .collect()
    }
}

/// Runs `node run.mjs` against the node in `dir`; panics when it prints no
/// JSON result or outlives `run.timeout`.
pub fn run_browser(dir: &Path, run: &Run<'_>) -> Outcome {
    let (status, stdout, stderr) = super::run_with_timeout(
        Command::new("node")
            .arg(dir.join("run.mjs"))
            .args(["--base", run.base, "--room", run.room])
            .args(["--publish-token", run.publish])
            .args(["--subscribe-token", run.subscribe])
            .args(["--duration", &run.duration_secs.to_string()])
            .args(run.extra_args)
            .env("CHROMIUM", CHROMIUM)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
        run.timeout,
    );
    let result: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("run.mjs printed no JSON result ({e}); exit {status}\nstdout: {stdout}\nstderr: {stderr}")
    });
    Outcome {
        status,
        result,
        stderr,
    }
}

/// Prints the figures (`cargo test -- --nocapture` shows them).
pub fn report(r: &Value) {
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
        "  window: {} fps mean, {} s without a decoded frame, Chromium's freezes {} ({} s); \
         FIRs {}, retransmissions received {}, audio concealed {} %",
        r["fpsMean"],
        r["frozenSeconds"],
        r["freezeCount"],
        r["totalFreezesDuration"],
        r["firCount"],
        r["retransmittedPacketsReceived"],
        r["audioConcealedPercent"]
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
    println!(
        "  publisher feedback received: NACKs {}, PLIs {}, FIRs {}; retransmissions sent {}, \
         key frames encoded {}",
        r["publisher"]["nackCount"],
        r["publisher"]["pliCount"],
        r["publisher"]["firCount"],
        r["publisher"]["retransmittedPacketsSent"],
        r["publisher"]["keyFramesEncoded"]
    );
    if let Some(errors) = r["errors"].as_array().filter(|e| !e.is_empty()) {
        println!("  errors: {errors:?}");
    }
}
