//! The Chromium harness (`browser-test/run.mjs`) as the browser tests run
//! it: where it lives, what it needs, one run, and its figures.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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
    let (status, stdout, stderr) = super::run_with_timeout(&mut command(dir, run), run.timeout);
    outcome(status, &stdout, stderr)
}

/// `node run.mjs` for `run`, stdout and stderr piped.
fn command(dir: &Path, run: &Run<'_>) -> Command {
    let mut cmd = Command::new("node");
    cmd.arg(dir.join("run.mjs"))
        .args(["--base", run.base, "--room", run.room])
        .args(["--publish-token", run.publish])
        .args(["--subscribe-token", run.subscribe])
        .args(["--duration", &run.duration_secs.to_string()])
        .args(run.extra_args)
        .env("CHROMIUM", CHROMIUM)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn outcome(status: i32, stdout: &str, stderr: String) -> Outcome {
    let result: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("run.mjs printed no JSON result ({e}); exit {status}\nstdout: {stdout}\nstderr: {stderr}")
    });
    Outcome {
        status,
        result,
        stderr,
    }
}

/// [`run_browser`] for a caller that acts during the run: `on_event` gets
/// each line run.mjs writes to stderr (`Some`, e.g. `run.mjs: first-frame
/// <ms>`) as it comes, and `None` at least every 100 ms in between.
pub fn run_browser_live(
    dir: &Path,
    run: &Run<'_>,
    mut on_event: impl FnMut(Option<&str>),
) -> Outcome {
    let mut cmd = command(dir, run);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?} does not start: {e}"));
    let mut stdout_pipe = child.stdout.take().expect("stdout is piped");
    let stdout = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout_pipe.read_to_string(&mut text);
        text
    });
    let (tx, lines) = mpsc::channel();
    let stderr_pipe = child.stderr.take().expect("stderr is piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + run.timeout;
    let mut stderr = String::new();
    let status = loop {
        match lines.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                on_event(Some(&line));
                stderr.push_str(&line);
                stderr.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Timeout) => on_event(None),
            Err(mpsc::RecvTimeoutError::Disconnected) => {}
        }
        if let Some(status) = child.try_wait().expect("waiting for run.mjs") {
            // What is left of stderr.
            while let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
                on_event(Some(&line));
                stderr.push_str(&line);
                stderr.push('\n');
            }
            break status.code().unwrap_or(-1);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "run.mjs did not finish within {:?}; killed\nstderr: {stderr}",
                run.timeout
            );
        }
    };
    let stdout = stdout.join().expect("the stdout reader does not panic");
    outcome(status, &stdout, stderr)
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
