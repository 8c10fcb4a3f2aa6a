//! GStreamer interop: `webrtcbin` from GStreamer 1.22 publishes a VP8 test
//! pattern and an Opus tone to the node over WHIP, and the node must
//! complete the DTLS handshake with it and authenticate its SRTP.
//!
//! Browsers present ECDSA DTLS certificates; GStreamer 1.22's DTLS agent
//! generates a self-signed **RSA 2048** certificate (gst-plugins-bad
//! `ext/dtls/gstdtlscertificate.c`, `init_generated`, with
//! `RSA_generate_key_ex`). The node's DTLS
//! (`sfu_core::dtls`, OpenSSL) had only been tested against RSA from
//! OpenSSL itself; this test is the real peer. It does not take the key type
//! on trust: `gst-test/whip_publish.py` reads webrtcbin's own certificate
//! back from its DTLS transport (the `certificate` property), decodes the
//! key type and size, and checks that its SHA-256 fingerprint is the one in
//! the offer, which the node verifies the handshake's certificate against.
//! The test asserts RSA with at least 2048 bits and that match.
//!
//! Verified once by hand on the wire as well (tcpdump inside the same kind
//! of namespace, DTLS records decoded): webrtcbin, the DTLS client, sent a
//! 683-byte certificate with an RSA 2048 key, the same SHA-256 fingerprint
//! the script reported, and signed its CertificateVerify with
//! rsa_pss_rsae_sha256 (256-byte signature); the node answered DTLS 1.2 with
//! ECDHE-ECDSA-AES128-GCM-SHA256 and its ECDSA P-256 certificate. webrtcbin
//! fragments its ClientHello, Certificate and CertificateVerify (about 230
//! bytes per fragment), so reassembly in the node's OpenSSL is exercised
//! too. The SRTP profile negotiated is AES128_CM_SHA1_80 (GStreamer 1.22
//! offers no AEAD GCM profile).
//!
//! What is asserted: the script exits 0 (POST answered 201, ICE
//! connected, DTLS connected, webrtcbin's `get-stats` shows packets sent,
//! DELETE answered 200, video and audio both sent), and the node's
//! `/metrics` show at least one DTLS handshake, at least [`MIN_RTP_IN`]
//! authenticated RTP packets and no fewer than webrtcbin counted as sent,
//! at least one authenticated SRTCP packet, no `dtls_failed` and no
//! `srtp_auth_failed` drops.
//!
//! The publisher side is `gst-test/whip_publish.py` (python3-gi and
//! Debian's GStreamer 1.22 packages; `bash .ci/test` installs them).
//! Without them this test fails with a message saying so: it never skips.
//!
//! # Network namespace
//! The test re-runs itself inside a fresh network namespace (`unshare
//! --net`), so no packet reaches a real network. libnice, webrtcbin's ICE
//! agent, never gathers loopback candidates, so a namespace with only `lo`
//! would leave it without a candidate: the namespace also gets a veth pair
//! `sfu0`/`sfu1` (both ends inside it), with [`MEDIA_IP`] (10.203.0.1/24)
//! on `sfu0`. A `dummy` interface would do as well, but the `dummy` link
//! type is not available everywhere (e.g. containers without that kernel
//! module), `veth` is. The node's media socket binds to and advertises that
//! address; libnice gathers its host candidate on it, and the kernel
//! delivers the traffic between the two locally (the address is local, so
//! nothing crosses the veth link). The HTTP API stays on 127.0.0.1.
//! Because the media address is not loopback, the node runs with a real API
//! secret ([`TEST_SECRET`]), as the development secret is refused there.
//! Creating the namespace and the interfaces needs root (CAP_SYS_ADMIN,
//! CAP_NET_ADMIN), as CI has; without it the test fails and says why.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{TEST_SECRET, TestNode};
use control::auth::Grant;
use control::config::Config;
use serde_json::{Value, json};

/// Debian's interpreter: python3-gi and python3-gst-1.0 install there.
const PYTHON: &str = "/usr/bin/python3";
const ROOM: &str = "gstreamer";
/// Seconds webrtcbin sends media after DTLS connected.
const DURATION_SECS: u64 = 6;
/// The whole publisher run: start-up, connecting, the media window, the
/// DELETE; well inside.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Authenticated RTP packets the node must have received: 6 s of Opus alone
/// are 300 packets, VP8 at 15 frames/s adds at least 90.
const MIN_RTP_IN: u64 = 100;
/// Packets of each kind webrtcbin must have sent (VP8 at 15 frames/s
/// is at least 90 in 6 s, Opus 300).
const MIN_PACKETS_PER_KIND: u64 = 50;
/// The address of the namespace's `sfu0`.
const MEDIA_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 203, 0, 1));
/// Shell commands that bring up the namespace's interfaces.
const NETNS_SETUP: &str = "ip link set lo up \
     && ip link add sfu0 type veth peer name sfu1 \
     && ip addr add 10.203.0.1/24 dev sfu0 \
     && ip link set sfu1 up \
     && ip link set sfu0 up";

/// Set in the re-run inside the namespace.
const IN_NETNS: &str = "SFU_GSTREAMER_TEST_IN_NETNS";
const TEST_NAME: &str = "gstreamer_webrtcbin_publishes_over_whip_with_an_rsa_certificate";

#[test]
fn gstreamer_webrtcbin_publishes_over_whip_with_an_rsa_certificate() {
    if std::env::var_os(IN_NETNS).is_none() {
        common::rerun_in_network_namespace(
            IN_NETNS,
            TEST_NAME,
            NETNS_SETUP,
            "root for `unshare --net` and `ip link` (iproute2, with the `veth` link type)",
        );
        return;
    }
    let script = script_path();
    preflight(&script);

    let node = TestNode::start_with_config(Config {
        media_ip: MEDIA_IP,
        node_id: Some("gstreamer-test-node".into()),
        ..common::test_config(1, TEST_SECRET)
    });
    assert_eq!(node.media(0).ip(), MEDIA_IP, "media bound to sfu0");
    node.create_room(ROOM);
    let publish = node.token(ROOM, &[Grant::Publish]);

    let (status, stdout, stderr) = run_publisher(&script, &node.base, &publish);
    let result: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "whip_publish.py printed no JSON result ({e}); exit {status}\n\
             stdout: {stdout}\nstderr: {stderr}"
        )
    });
    let handshakes = node.worker_metric("sfu_dtls_handshakes_total", 0);
    let rtp_in = node.worker_metric("sfu_rtp_in_total", 0);
    let rtcp_in = node.worker_metric("sfu_rtcp_in_total", 0);
    let drops = drops(&node);
    report(&result, handshakes, rtp_in, rtcp_in, &drops);

    assert!(
        status == 0 && result["ok"] == json!(true),
        "the GStreamer publisher failed (exit {status}): {}\nresult: {result}\nstderr: {stderr}",
        result["errors"]
    );
    // whip_publish.py checked these already; check them again from its
    // figures so a bug in its verdict cannot pass the test.
    assert_eq!(result["post_status"], json!(201), "WHIP POST: {result}");
    assert_eq!(result["delete_status"], json!(200), "WHIP DELETE: {result}");
    assert!(
        matches!(
            result["ice_connection_state"].as_str(),
            Some("connected" | "completed")
        ),
        "ICE: {}",
        result["ice_connection_state"]
    );
    assert_eq!(result["dtls_state"], json!("connected"), "DTLS state");
    assert_eq!(
        result["dtls_client"],
        json!(true),
        "webrtcbin offered actpass, so the node (passive) is the DTLS server"
    );
    assert!(
        result["packets_sent"].as_u64().unwrap_or(0) >= MIN_RTP_IN,
        "webrtcbin sent too few packets: {}",
        result["outbound"]
    );
    for kind in ["video", "audio"] {
        let sent: u64 = result["outbound"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|o| o["kind"] == json!(kind))
            .filter_map(|o| o["packets_sent"].as_u64())
            .sum();
        assert!(
            sent >= MIN_PACKETS_PER_KIND,
            "webrtcbin sent {sent} {kind} packets: {}",
            result["outbound"]
        );
    }

    // The certificate webrtcbin presented: RSA, at least 2048 bits, and the
    // one its offer's fingerprint names (which the node verified).
    let cert = &result["certificate"];
    assert_eq!(
        cert["key_type"],
        json!("RSA"),
        "webrtcbin's certificate: {cert}"
    );
    assert!(
        cert["key_bits"].as_u64().unwrap_or(0) >= 2048,
        "webrtcbin's RSA key size: {cert}"
    );
    assert_eq!(
        cert["matches_offer"],
        json!(true),
        "the certificate read back is not the offer's fingerprint: {cert} vs {}",
        result["offer_fingerprint"]
    );
    // And webrtcbin got the node's certificate (ECDSA P-256) in the handshake.
    assert_eq!(
        result["remote_certificate"]["key_type"],
        json!("ECDSA"),
        "the node's certificate as webrtcbin received it: {}",
        result["remote_certificate"]
    );

    // The node's side.
    assert!(handshakes >= 1, "the node completed no DTLS handshake");
    assert!(
        rtp_in >= MIN_RTP_IN,
        "the node authenticated only {rtp_in} RTP packets (want at least {MIN_RTP_IN})"
    );
    // Loopback loses nothing: what webrtcbin counted as sent (read before
    // it stopped) reached the node and passed SRTP authentication.
    // (`wait_worker_metric` panics if the count stays below `sent` for 3 s.)
    let sent = result["packets_sent"].as_u64().unwrap_or(0);
    node.wait_worker_metric("sfu_rtp_in_total", 0, sent);
    assert!(rtcp_in >= 1, "the node authenticated no SRTCP packet");
    for reason in ["dtls_failed", "srtp_auth_failed"] {
        let n = drops
            .iter()
            .find(|(r, _)| r == reason)
            .map(|&(_, n)| n)
            .unwrap_or_else(|| panic!("no sfu_drops_total sample for {reason}"));
        assert_eq!(n, 0, "the node dropped {n} datagrams as {reason}");
    }

    node.shutdown();
}

/// `gst-test/whip_publish.py` at the repository root.
fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("control/ sits in the repository root")
        .join("gst-test/whip_publish.py")
}

/// Fails (never skips) when Python, the bindings or an element is missing.
fn preflight(script: &Path) {
    let fix = "run `bash .ci/test` from the repository root: it installs python3-gst-1.0, \
               gir1.2-gst-plugins-bad-1.0 and GStreamer's base, good, bad and nice plugins";
    assert!(script.is_file(), "{} is missing", script.display());
    assert!(Path::new(PYTHON).is_file(), "no Python at {PYTHON}: {fix}");
    let check = Command::new(PYTHON)
        .arg(script)
        .arg("--check")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {PYTHON}: {e}"));
    assert!(
        check.status.success(),
        "GStreamer is not usable ({}): {}\n{fix}",
        check.status,
        String::from_utf8_lossy(&check.stderr).trim()
    );
    println!(
        "gstreamer: {}",
        String::from_utf8_lossy(&check.stdout).trim()
    );
}

/// Every `sfu_drops_total{worker="0",reason="…"}` sample.
fn drops(node: &TestNode) -> Vec<(String, u64)> {
    let metrics = node.get("/metrics");
    assert_eq!(metrics.status, 200, "{}", metrics.text);
    metrics
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("sfu_drops_total{worker=\"0\",reason=\""))
        .filter_map(|l| {
            let (reason, value) = l.split_once("\"} ")?;
            Some((reason.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Runs the publisher against the node; returns its exit status (-1 when
/// killed by a signal), stdout and stderr.
fn run_publisher(script: &Path, base: &str, token: &str) -> (i32, String, String) {
    common::run_with_timeout(
        Command::new(PYTHON)
            .arg(script)
            .args(["--base", base, "--room", ROOM, "--token", token])
            .args(["--duration", &DURATION_SECS.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
        RUN_TIMEOUT,
    )
}

/// Prints the figures (`cargo test -- --nocapture` shows them).
fn report(r: &Value, handshakes: u64, rtp_in: u64, rtcp_in: u64, drops: &[(String, u64)]) {
    println!(
        "  WHIP: POST {}, DELETE {}; offer sections with a=ssrc: {}",
        r["post_status"],
        r["delete_status"],
        r["offer"].as_str().map_or(0, |o| o
            .lines()
            .filter(|l| l.starts_with("a=ssrc:"))
            .count())
    );
    println!(
        "  ICE {} {}, peer connection {} {}, DTLS {} {} (webrtcbin client: {})",
        r["ice_connection_state"],
        r["ice_connection_state_history"],
        r["connection_state"],
        r["connection_state_history"],
        r["dtls_state"],
        r["dtls_state_history"],
        r["dtls_client"]
    );
    println!("  webrtcbin certificate: {}", r["certificate"]);
    println!(
        "  node certificate as received: {}",
        r["remote_certificate"]
    );
    println!("  webrtcbin SRTP (cipher/auth per srtpenc): {}", r["srtp"]);
    println!(
        "  webrtcbin sent {} packets: {}",
        r["packets_sent"], r["outbound"]
    );
    let nonzero: Vec<_> = drops.iter().filter(|(_, n)| *n > 0).collect();
    println!(
        "  node: DTLS handshakes {handshakes}, RTP authenticated {rtp_in}, \
         SRTCP authenticated {rtcp_in}, non-zero drops {nonzero:?}"
    );
    if let Some(errors) = r["errors"].as_array().filter(|e| !e.is_empty()) {
        println!("  errors: {errors:?}");
    }
    if let Some(warnings) = r["warnings"].as_array() {
        println!("  GStreamer warnings: {warnings:?}");
    }
}
