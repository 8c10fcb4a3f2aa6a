//! `sfu-loadgen` through a drain: the node gets its stop request (what the
//! `sfu` binary passes on for SIGTERM) 1.5 s into a 4 s run. It answers
//! 503 on `/healthz` and refuses new rooms from then on, keeps forwarding
//! every packet of the rooms it has, and stops by itself once the load
//! generator has deleted its rooms (no endpoint left).

mod common;

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bench::loadgen::{self, Options};
use control::drain::{Drained, until_drained};

#[test]
fn sfu_loadgen_runs_through_a_drain_and_the_node_then_stops_by_itself() {
    let rt = common::runtime();
    let config = common::config(1, "drain-test");
    let running = rt
        .block_on(control::start(config))
        .expect("the node starts");
    let url = format!("http://{}", running.http_addr());
    let state = Arc::clone(running.state());
    let (requests, received) = tokio::sync::mpsc::unbounded_channel();
    let how: Arc<Mutex<Option<(Drained, Instant)>>> = Arc::new(Mutex::new(None));
    let h = Arc::clone(&how);
    let node = rt.spawn(async move {
        running
            .run_until(async move {
                let end = until_drained(state, Duration::from_secs(60), received).await;
                *h.lock().expect("lock") = Some((end, Instant::now()));
            })
            .await
    });
    // The stop request mid-run, and what the node says then.
    let base = url.clone();
    let probe = thread::spawn(move || {
        thread::sleep(Duration::from_millis(1500));
        requests.send("SIGTERM").expect("the node listens");
        thread::sleep(Duration::from_millis(300));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let health = agent
            .get(format!("{base}/healthz"))
            .call()
            .expect("an answer")
            .status()
            .as_u16();
        (health, requests)
    });
    let opts = Options {
        control: url,
        rooms: 2,
        publishers: 2,
        subscribers: 8,
        audio: true,
        duration: 4.0,
        ..Options::default()
    };
    let report = loadgen::run(&opts, |_| {}).expect("the load generator runs");
    let done = Instant::now();
    let (health, _requests) = probe.join().expect("the probe");
    let summary = serde_json::to_string_pretty(&report).expect("the report serialises");
    assert_eq!(health, 503, "/healthz while draining");
    // The node stops by itself once the rooms are gone.
    let stopped = rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), node).await });
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "the node did not stop by itself: {stopped:?}"
    );
    let (end, at) = how.lock().expect("lock").expect("the drain ended");
    println!(
        "DRAIN {end:?} {:?} after the load generator finished; expected {} received {} loss {}",
        at.saturating_duration_since(done),
        report.expected_rx_packets,
        report.rx_counted_packets,
        report.loss_ratio
    );
    assert_eq!(end, Drained::Empty);
    assert!(report.expected_rx_packets > 0, "{summary}");
    assert_eq!(
        report.rx_counted_packets, report.expected_rx_packets,
        "every packet through the drain:\n{summary}"
    );
}
