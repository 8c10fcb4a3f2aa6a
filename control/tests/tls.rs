//! The control API over HTTPS, against the `sfu` binary with `--tls-cert`
//! and `--tls-key`, with `curl` as the client (another TLS and HTTP/2
//! implementation than the node's):
//!
//! * ALPN gives HTTP/2 to clients that offer it and HTTP/1.1 to the rest;
//! * a WHIP publisher (over HTTP/2) and a WHEP viewer (over HTTP/1.1) set
//!   up their sessions through https, then media flows over ICE, DTLS and
//!   SRTP;
//! * plain HTTP to the TLS port and an untrusted certificate fail, and are
//!   counted, without harming the node;
//! * SIGHUP reloads the certificate: new handshakes see the new one; a pair
//!   whose key does not match is refused and the old pair keeps serving.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::token_with;
use common::webrtc::*;
use control::auth::Grant;
use control::config::DEV_API_SECRET;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use sfu_core::dtls::DtlsCert;

const WHIP_OFFER: &str = include_str!("fixtures/chrome-whip-offer.sdp");
const PUB_AUDIO_SSRC: u32 = 2_371_388_022;
const PUB_VIDEO_SSRC: u32 = 267_379_645;
const WHIP_UFRAG: &str = "g88K";

/// A directory of certificates, removed at the end.
struct Certs {
    dir: PathBuf,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Certs {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("sfu-tls-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "sfu test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().expect("a CA key");
        let ca = params.self_signed(&ca_key).expect("the CA certificate");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write ca.pem");
        Self { dir, ca, ca_key }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A leaf for localhost and 127.0.0.1 named `cn`, signed by the CA,
    /// written to `name.crt` and `name.key`.
    fn leaf(&self, name: &str, cn: &str) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().expect("a leaf key");
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("the leaf certificate");
        let (c, k) = (
            self.path(&format!("{name}.crt")),
            self.path(&format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).expect("write the certificate");
        std::fs::write(&k, key.serialize_pem()).expect("write the key");
        (c, k)
    }
}

/// Runs curl with `args`; stdout, stderr and the exit code.
fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "10", "-H", "Expect:"])
        .args(args)
        .output()
        .expect("curl runs (the test command installs it: apt-get install curl)")
}

/// An answer curl printed with `-i`: status, header block, body.
struct Reply {
    status: u16,
    version: String,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> String {
        self.head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_owned())
            })
            .unwrap_or_default()
    }
}

/// A request through curl trusting the test CA; `http` is `--http2` or
/// `--http1.1`.
fn request(
    base: &str,
    ca: &Path,
    http: &str,
    method: &str,
    path: &str,
    headers: &[String],
    body: Option<&str>,
) -> Reply {
    let url = format!("{base}{path}");
    let ca = ca.to_str().expect("a UTF-8 path");
    let mut args: Vec<&str> = vec![http, "--cacert", ca, "-i", "-X", method];
    for h in headers {
        args.extend(["-H", h.as_str()]);
    }
    if let Some(b) = body {
        args.extend(["--data-binary", b]);
    }
    args.push(&url);
    let out = curl(&args);
    assert!(
        out.status.success(),
        "curl {method} {url} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an answer head");
    let status_line = head.lines().next().expect("a status line");
    let mut words = status_line.split_whitespace();
    let version = words.next().expect("a version").to_owned();
    let status = words.next().and_then(|s| s.parse().ok()).expect("a status");
    Reply {
        status,
        version,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// The subject curl saw in the server's certificate.
fn served_subject(base: &str, ca: &Path) -> String {
    let out = curl(&[
        "-v",
        "--cacert",
        ca.to_str().expect("a UTF-8 path"),
        "-o",
        "/dev/null",
        &format!("{base}/healthz"),
    ]);
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .find_map(|l| l.split_once("subject: ").map(|(_, s)| s.trim().to_owned()))
        .unwrap_or_else(|| {
            panic!(
                "no subject in curl -v: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// A metric's value from `/metrics` text.
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{series} missing:\n{text}"))
}

struct Sfu(Child);

impl Drop for Sfu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kill(child: &Child, signal: &str) {
    let ok = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill {signal}");
}

#[test]
fn whip_and_whep_over_https_with_http2_and_certificate_reload() {
    assert!(
        Command::new("curl").arg("--version").output().is_ok(),
        "this test needs curl (the test command installs it: apt-get install curl)"
    );
    let certs = Certs::new("reload");
    let (cert, key) = certs.leaf("api", "sfu-api-1");
    let ca = certs.path("ca.pem");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_sfu"))
        .env_clear()
        .env("RUST_LOG", "info")
        .args(["--control-addr", &format!("127.0.0.1:{port}")])
        .args(["--media-port", "0", "--workers", "1", "--cpus", "none"])
        .args([
            "--http-max-connections",
            "8",
            "--http-header-timeout-secs",
            "30",
        ])
        .args(["--tls-cert", cert.to_str().expect("path")])
        .args(["--tls-key", key.to_str().expect("path")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the sfu binary starts");
    let sfu = Sfu(child);
    let base = format!("https://localhost:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !curl(&[
        "--cacert",
        ca.to_str().expect("path"),
        &format!("{base}/healthz"),
    ])
    .status
    .success()
    {
        assert!(Instant::now() < deadline, "the node never answered https");
        std::thread::sleep(Duration::from_millis(50));
    }

    // ALPN: HTTP/2 for clients that offer it, HTTP/1.1 otherwise.
    let h2 = request(&base, &ca, "--http2", "GET", "/healthz", &[], None);
    assert_eq!((h2.status, h2.version.as_str()), (200, "HTTP/2"));
    let h1 = request(&base, &ca, "--http1.1", "GET", "/healthz", &[], None);
    assert_eq!((h1.status, h1.version.as_str()), (200, "HTTP/1.1"));
    assert_eq!(served_subject(&base, &ca), "CN=sfu-api-1");

    // Plain HTTP to the TLS port and a client that does not trust the
    // certificate both fail.
    let plain = curl(&[&format!("http://127.0.0.1:{port}/healthz")]);
    assert!(!plain.status.success(), "plain HTTP was answered");
    let untrusted = curl(&[&format!("{base}/healthz")]);
    assert_eq!(untrusted.status.code(), Some(60), "curl trusted a test CA");

    // WHIP over HTTP/2, WHEP over HTTP/1.1.
    let bearer = |grant: Grant| {
        format!(
            "authorization: Bearer {}",
            token_with(DEV_API_SECRET, "secure", &[grant])
        )
    };
    let sdp = "content-type: application/sdp".to_owned();
    let pub_cert = DtlsCert::generate().expect("a certificate");
    let offer = with_fingerprint(WHIP_OFFER, &pub_cert);
    let whip = request(
        &base,
        &ca,
        "--http2",
        "POST",
        "/whip/secure",
        &[bearer(Grant::Publish), sdp.clone()],
        Some(&offer),
    );
    assert_eq!(
        (whip.status, whip.version.as_str()),
        (201, "HTTP/2"),
        "{}",
        whip.body
    );
    let whip_location = whip.header("location");
    assert!(whip_location.starts_with("/whip/secure/"), "{}", whip.head);
    let sub_cert = DtlsCert::generate().expect("a certificate");
    let offer = with_fingerprint(WHEP_OFFER, &sub_cert);
    let whep = request(
        &base,
        &ca,
        "--http1.1",
        "POST",
        "/whep/secure",
        &[bearer(Grant::Subscribe), sdp],
        Some(&offer),
    );
    assert_eq!(
        (whep.status, whep.version.as_str()),
        (201, "HTTP/1.1"),
        "{}",
        whep.body
    );
    let secs = sections(&whep.body);
    let (audio_ssrc, video_ssrc) = (
        section_ssrc(&secs[0]).expect("an audio SSRC"),
        section_ssrc(&secs[1]).expect("a video SSRC"),
    );
    let mut publisher = connect(&read_answer(&whip.body), WHIP_UFRAG, &pub_cert);
    let mut subscriber = connect(&read_answer(&whep.body), WHEP_UFRAG, &sub_cert);
    let (mut got_video, mut got_audio) = (false, false);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seq = 1u16;
    while !(got_video && got_audio) {
        assert!(Instant::now() < deadline, "media did not arrive");
        publisher.send_rtp(seq, PUB_VIDEO_SSRC, 96, b"video-payload");
        publisher.send_rtp(seq, PUB_AUDIO_SSRC, 111, b"audio-payload");
        seq += 1;
        while let Some((_, ssrc, payload)) = subscriber.recv_rtp() {
            if ssrc == video_ssrc {
                assert_eq!(payload, b"video-payload");
                got_video = true;
            } else if ssrc == audio_ssrc {
                assert_eq!(payload, b"audio-payload");
                got_audio = true;
            }
        }
    }
    let gone = request(
        &base,
        &ca,
        "--http2",
        "DELETE",
        &whip_location,
        &[bearer(Grant::Publish)],
        None,
    );
    assert_eq!(gone.status, 200, "{}", gone.body);

    // The failed handshakes were counted.
    let admin = format!(
        "authorization: Bearer {}",
        token_with(DEV_API_SECRET, "*", &[Grant::Admin])
    );
    let metrics = request(
        &base,
        &ca,
        "--http2",
        "GET",
        "/metrics",
        std::slice::from_ref(&admin),
        None,
    );
    assert_eq!(metrics.status, 200, "{}", metrics.body);
    assert_eq!(metric(&metrics.body, "sfu_tls_enabled"), 1);
    assert!(metric(&metrics.body, "sfu_tls_handshakes_total{result=\"ok\"}") >= 6);
    assert!(metric(&metrics.body, "sfu_tls_handshakes_total{result=\"failed\"}") >= 2);

    // Connections that never start their handshake are idle: past the cap
    // of 8 each new one evicts the idlest, which closes at once instead of
    // holding its descriptor until the 30 s header timeout.
    let stalled: Vec<std::net::TcpStream> = (0..40)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let m = request(
        &base,
        &ca,
        "--http1.1",
        "GET",
        "/metrics",
        std::slice::from_ref(&admin),
        None,
    );
    let open = metric(&m.body, "sfu_http_connections_open");
    assert!(open <= 9, "{open} connections open with a cap of 8");
    assert!(metric(&m.body, "sfu_http_connections_evicted_total") >= 32);
    drop(stalled);

    // SIGHUP with a renewed pair: new handshakes get it.
    let (next_cert, next_key) = certs.leaf("next", "sfu-api-2");
    std::fs::rename(&next_key, &key).expect("swap the key");
    std::fs::rename(&next_cert, &cert).expect("swap the certificate");
    kill(&sfu.0, "-HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while served_subject(&base, &ca) != "CN=sfu-api-2" {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload the certificate"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A half-renewed pair (the key of another certificate) is refused and
    // the current pair keeps serving.
    let (_, other_key) = certs.leaf("other", "sfu-api-3");
    std::fs::rename(&other_key, &key).expect("swap the key");
    kill(&sfu.0, "-HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = request(
            &base,
            &ca,
            "--http1.1",
            "GET",
            "/metrics",
            std::slice::from_ref(&admin),
            None,
        );
        if metric(&m.body, "sfu_tls_reloads_total{result=\"failed\"}") == 1 {
            assert_eq!(metric(&m.body, "sfu_tls_reloads_total{result=\"ok\"}"), 1);
            break;
        }
        assert!(Instant::now() < deadline, "the bad reload was not counted");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(served_subject(&base, &ca), "CN=sfu-api-2");
    publisher.close();
    subscriber.close();
    drop(sfu);
}

#[test]
fn a_certificate_without_its_key_or_a_bad_pair_stops_the_start() {
    let certs = Certs::new("bad");
    let (cert, _) = certs.leaf("a", "a");
    let (_, other_key) = certs.leaf("b", "b");
    for args in [
        vec!["--tls-cert", cert.to_str().expect("path")],
        vec![
            "--tls-cert",
            cert.to_str().expect("path"),
            "--tls-key",
            other_key.to_str().expect("path"),
        ],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_sfu"))
            .env_clear()
            .args(["--control-addr", "127.0.0.1:0", "--media-port", "0"])
            .args(["--workers", "1", "--cpus", "none"])
            .args(&args)
            .output()
            .expect("the sfu binary runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(err.contains("tls"), "{args:?}: {err}");
    }
}
