//! Junk traffic does not hurt a room: while `sfu-loadgen` (a child process)
//! runs a room on the in-process node, `sfu-junk` (another child process)
//! sends 100,000 junk datagrams per second for 10 s at the same media port
//! — random bytes, RTP/SRTCP lookalikes, SRTP forged with the room's
//! publishers' SSRCs, STUN for unknown users, DTLS ClientHellos from 64
//! ports, and real SRTP packets replayed from other ports — while this test
//! resends real SRTP packets from their publisher's own address (the SRTP
//! replay window's case). Asserted:
//!
//! * the room loses < 0.1 % (`sfu-loadgen`'s JSON report), with no
//!   integrity errors;
//! * the generator reached ≥ 90,000 datagrams/s (else the run proves
//!   nothing and the test fails saying so);
//! * the node counted ≥ 90 % of the junk in `sfu_drops_total` (read from
//!   `/metrics`), no more than was sent, and every replay as `srtp_replayed`;
//! * the node's memory (this process's `VmRSS`: the node is the only thing
//!   in it that handles traffic) grows < 8 MiB from warm-up to the end of
//!   the round, and < 4 MiB over a second 5 s round.

mod common;

use common::Node;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bench::loadgen::Kind;
use bench::loadgen::api::{ControlClient, EndpointRequest, Subscribe, Track};
use bench::loadgen::plan::Role;
use control::auth::{self, Claims, Grant};
use serde_json::Value;
use sfu_core::srtp::{Profile, SrtpConfig, SrtpContext};
use sfu_core::wire::rtp::{RtpHeader, write_header};

const JUNK_PPS: u64 = 100_000;
const MIN_JUNK_PPS: f64 = 90_000.0;
const SSRC_BASE: u32 = 0x51f0_1000;
const REPLAY_SSRC: u32 = 0x7e57_0001;
const REPLAY_PACKETS: usize = 200;
const MIB: i64 = 1 << 20;

/// Ingress drop reasons: what junk can be counted as.
const INGRESS_REASONS: &[&str] = &[
    "malformed",
    "unknown_protocol",
    "stun_unhandled",
    "dtls_unhandled",
    "stun_unknown_user",
    "stun_auth_failed",
    "dtls_failed",
    "not_connected",
    "unknown_source",
    "address_mismatch",
    "srtp_truncated",
    "srtp_auth_failed",
    "srtp_replayed",
    "srtp_too_old",
    "srtp_other",
];

/// `/metrics` with an admin token.
struct Metrics {
    agent: ureq::Agent,
    url: String,
    authorization: String,
}

/// One scrape: `sfu_drops_total` by reason and the worker counters used.
#[derive(Debug, Clone, Default)]
struct Scrape {
    drops: std::collections::BTreeMap<String, u64>,
    rx_packets: u64,
    rtp_in: u64,
}

impl Metrics {
    fn new(base: &str) -> Self {
        let claims = Claims::new(auth::ANY_ROOM, &[Grant::Admin], auth::unix_now(), 3600);
        let token = auth::mint(auth::DEV_API_SECRET.as_bytes(), &claims);
        Self {
            agent: ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(10)))
                .build()
                .into(),
            url: format!("{base}/metrics"),
            authorization: format!("Bearer {token}"),
        }
    }

    fn scrape(&self) -> Scrape {
        let text = self
            .agent
            .get(&self.url)
            .header("authorization", &self.authorization)
            .call()
            .expect("/metrics answers")
            .body_mut()
            .read_to_string()
            .expect("/metrics is text");
        let mut s = Scrape::default();
        for line in text.lines() {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<u64>() else {
                continue;
            };
            if let Some(labels) = name.strip_prefix("sfu_drops_total{") {
                let reason = labels
                    .split("reason=\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .expect("a reason label");
                *s.drops.entry(reason.to_owned()).or_default() += value;
            } else if name.starts_with("sfu_rx_packets_total{") {
                s.rx_packets += value;
            } else if name.starts_with("sfu_rtp_in_total{") {
                s.rtp_in += value;
            }
        }
        assert!(
            !s.drops.is_empty(),
            "no sfu_drops_total in /metrics:\n{text}"
        );
        s
    }
}

impl Scrape {
    fn drop_delta(&self, before: &Scrape, reason: &str) -> u64 {
        let get = |s: &Scrape| s.drops.get(reason).copied().unwrap_or(0);
        get(self).saturating_sub(get(before))
    }

    fn ingress_delta(&self, before: &Scrape) -> u64 {
        INGRESS_REASONS
            .iter()
            .map(|r| self.drop_delta(before, r))
            .sum()
    }

    fn deltas(&self, before: &Scrape) -> String {
        self.drops
            .keys()
            .map(|r| (r, self.drop_delta(before, r)))
            .filter(|&(_, n)| n > 0)
            .map(|(r, n)| format!("{r}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// This process's resident set, bytes.
fn rss_bytes() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: i64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("VmRSS in kB");
    kb * 1024
}

/// A publisher of the test's own, in a room of its own: sends
/// [`REPLAY_PACKETS`] real SRTP packets once (so the node learns its
/// address and accepts them), then resends them on demand.
struct ReplayVictim {
    socket: UdpSocket,
    media: SocketAddr,
    packets: Vec<Vec<u8>>,
}

impl ReplayVictim {
    fn start(client: &ControlClient) -> Self {
        let profile = Profile::AeadAes128Gcm;
        client
            .create_room("junk-replay")
            .expect("replay room is created");
        let master: Vec<u8> = (0..profile.key_len() + profile.salt_len())
            .map(|i| i as u8 ^ 0x5a)
            .collect();
        let tracks = [Track {
            kind: Kind::Video,
            ssrc: REPLAY_SSRC,
            payload_type: 96,
            rtx: None,
            layer_of: None,
        }];
        let endpoint = client
            .create_endpoint(
                "junk-replay",
                &EndpointRequest {
                    role: Role::Publish,
                    profile,
                    master: &master,
                    tracks: &tracks,
                    remote: None,
                    subscribe: Subscribe::Omit,
                    rtx_payload_types: None,
                    identity: None,
                    audio_level_extension: None,
                },
            )
            .expect("replay publisher is created");
        let mut ctx = SrtpContext::new(
            profile,
            &master[..profile.key_len()],
            &master[profile.key_len()..],
            SrtpConfig::default(),
        )
        .expect("key lengths of the profile");
        let packets = (0..REPLAY_PACKETS)
            .map(|i| {
                let mut buf = vec![0u8; 1500];
                let header = RtpHeader {
                    marker: false,
                    payload_type: 96,
                    sequence_number: i as u16,
                    timestamp: i as u32 * 3000,
                    ssrc: REPLAY_SSRC,
                };
                let h = write_header(&mut buf, &header, &[]).expect("RTP header fits");
                buf[h..h + 800].fill(i as u8);
                let n = ctx.protect_rtp(&mut buf, h + 800).expect("protects");
                buf.truncate(n);
                buf
            })
            .collect();
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        Self {
            socket,
            media: endpoint.media,
            packets,
        }
    }

    /// Sends every packet once; returns how many the kernel took.
    fn send_all(&self) -> u64 {
        self.packets
            .iter()
            .filter(|p| self.socket.send_to(p, self.media).is_ok())
            .count() as u64
    }

    fn replay_file(&self) -> Vec<u8> {
        bench::junk::encode_replays(self.packets.iter().map(Vec::as_slice))
    }
}

fn spawn(exe: &str, args: &[String]) -> std::process::Child {
    Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {exe}: {e}"))
}

/// The child's `--json` report; panics with its stderr if it failed.
fn json_report(what: &str, out: Output) -> Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stderr}",
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{what}: no JSON report ({e}):\n{stdout}\n{stderr}"))
}

fn f64_of(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("report without {key}: {v}"))
}

fn u64_of(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("report without {key}: {v}"))
}

/// Runs `sfu-junk` for `secs` while the victim's packets are resent from
/// their own address every 100 ms; returns (junk report, replays sent).
fn junk_round(
    media: SocketAddr,
    secs: f64,
    seed: u64,
    known: &str,
    replay_file: &std::path::Path,
    victim: &ReplayVictim,
) -> (Value, u64) {
    let args: Vec<String> = [
        "--target",
        &media.to_string(),
        "--pps",
        &JUNK_PPS.to_string(),
        "--duration",
        &secs.to_string(),
        "--ports",
        "64",
        "--seed",
        &seed.to_string(),
        "--known-ssrc",
        known,
        "--replay",
        &replay_file.display().to_string(),
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let junk = spawn(env!("CARGO_BIN_EXE_sfu-junk"), &args);
    let stop = AtomicBool::new(false);
    let replayed = AtomicU64::new(0);
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                replayed.fetch_add(victim.send_all(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let out = junk.wait_with_output().expect("sfu-junk runs");
        stop.store(true, Ordering::Relaxed);
        out
    });
    let report = json_report("sfu-junk", out);
    (report, replayed.load(Ordering::Relaxed))
}

/// Checks the node counted one junk round: ≥ 90 % of what was sent, no more
/// than was sent, every replay from the publisher's address as a replay.
fn assert_counted(round: &str, junk: &Value, replayed: u64, before: &Scrape, after: &Scrape) {
    let sent = u64_of(junk, "sent");
    let pps = f64_of(junk, "achieved_pps");
    assert!(
        pps >= MIN_JUNK_PPS,
        "{round}: sfu-junk reached only {pps:.0} datagrams/s (< {MIN_JUNK_PPS}), so this run \
         proves nothing about {JUNK_PPS}/s; the machine is too busy or too slow:\n{junk}"
    );
    let counted = after.ingress_delta(before);
    let replays = after.drop_delta(before, "srtp_replayed");
    eprintln!(
        "{round}: junk sent {sent} at {pps:.0} pps, replays from the publisher's address {replayed}; \
         node drops: {}",
        after.deltas(before)
    );
    assert!(
        replays >= replayed,
        "{round}: {replayed} replays sent from the publisher's address, {replays} counted srtp_replayed"
    );
    let junk_counted = counted - replayed.min(counted);
    assert!(
        junk_counted as f64 >= 0.9 * sent as f64,
        "{round}: the node counted {junk_counted} of {sent} junk datagrams: {}",
        after.deltas(before)
    );
    assert!(
        junk_counted <= sent,
        "{round}: {junk_counted} drops for {sent} junk datagrams: the room's own packets were dropped: {}",
        after.deltas(before)
    );
    for reason in ["pool_exhausted", "subscriber_unreachable", "protect_failed"] {
        assert_eq!(after.drop_delta(before, reason), 0, "{round}: {reason}");
    }
}

#[test]
fn a_room_survives_100k_junk_datagrams_per_second() {
    let node = Node::start(1);
    let url = node.control_url();
    let media = node.running().media_addrs()[0];
    let metrics = Metrics::new(&url);
    let client = ControlClient::new(
        &url,
        auth::DEV_API_SECRET.as_bytes(),
        Duration::from_secs(3600),
    );

    // The replay victim speaks first, so its address is learnt.
    let victim = ReplayVictim::start(&client);
    let before_victim = metrics.scrape();
    assert_eq!(victim.send_all(), REPLAY_PACKETS as u64);
    let deadline = Instant::now() + Duration::from_secs(5);
    while metrics.scrape().rtp_in < before_victim.rtp_in + REPLAY_PACKETS as u64 {
        assert!(
            Instant::now() < deadline,
            "the victim's packets were not accepted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let dir = std::env::temp_dir().join(format!("junk-traffic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let replay_file = dir.join("replay.bin");
    std::fs::write(&replay_file, victim.replay_file()).expect("replay file");

    // The room: 2 publishers (video + audio), 8 subscribers, 12 s.
    let loadgen_args: Vec<String> = [
        "--control",
        &url,
        "--rooms",
        "1",
        "--publishers",
        "2",
        "--subscribers",
        "8",
        "--audio",
        "--duration",
        "12",
        "--drain-ms",
        "1000",
        "--ssrc-base",
        &SSRC_BASE.to_string(),
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Publishers are peers 0 and 1: video base + 2n, audio base + 2n + 1.
    let known = (0..4)
        .map(|i| (SSRC_BASE + i).to_string())
        .collect::<Vec<_>>()
        .join(",");
    let started = metrics.scrape();
    let loadgen = spawn(env!("CARGO_BIN_EXE_sfu-loadgen"), &loadgen_args);

    // Warm-up: media flows (both publishers' addresses learnt), then 0.5 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = metrics.scrape();
        if s.rtp_in >= started.rtp_in + 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the room's media never flowed");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss_warm = rss_bytes();
    let before = metrics.scrape();

    let (junk1, replayed1) = junk_round(media, 10.0, 1, &known, &replay_file, &victim);
    let rss_round1 = rss_bytes();
    let after1 = metrics.scrape();

    let lg = json_report(
        "sfu-loadgen",
        loadgen.wait_with_output().expect("sfu-loadgen runs"),
    );
    let loss = f64_of(&lg, "loss_ratio");
    eprintln!(
        "loadgen: tx {} pps, rx {} pps, loss {:.5} %, worst subscriber {:.5} %, p99 {:?} µs, \
         worker CPU {:?}, rx_unexpected {}",
        f64_of(&lg, "tx_pps").round(),
        f64_of(&lg, "rx_pps").round(),
        loss * 100.0,
        f64_of(&lg, "loss_ratio_worst_subscriber") * 100.0,
        lg["latency_us_p99"],
        lg["node_cpu_utilisation"],
        u64_of(&lg, "rx_unexpected_packets"),
    );

    let before2 = metrics.scrape();
    let (junk2, replayed2) = junk_round(media, 5.0, 2, &known, &replay_file, &victim);
    let rss_round2 = rss_bytes();
    let after2 = metrics.scrape();
    let _ = std::fs::remove_dir_all(&dir);

    eprintln!(
        "RSS: warm {:.1} MiB, after round 1 {:.1} MiB ({:+.2}), after round 2 {:.1} MiB ({:+.2})",
        rss_warm as f64 / MIB as f64,
        rss_round1 as f64 / MIB as f64,
        (rss_round1 - rss_warm) as f64 / MIB as f64,
        rss_round2 as f64 / MIB as f64,
        (rss_round2 - rss_round1) as f64 / MIB as f64,
    );

    // The room.
    assert!(u64_of(&lg, "tx_packets") > 0, "the room sent nothing: {lg}");
    assert!(
        loss < 0.001,
        "the room lost {:.4} % under junk: {lg}",
        loss * 100.0
    );
    assert_eq!(u64_of(&lg, "integrity_errors"), 0, "{lg}");
    assert_eq!(u64_of(&lg, "send_errors"), 0, "{lg}");
    // The junk.
    assert_counted("round 1", &junk1, replayed1, &before, &after1);
    assert_counted("round 2", &junk2, replayed2, &before2, &after2);
    for junk in [&junk1, &junk2] {
        let by_kind = &junk["sent_by_kind"];
        for kind in [
            "random",
            "rtp",
            "forged_rtp",
            "srtcp",
            "stun_unknown_user",
            "stun_bad_integrity",
            "dtls_client_hello",
            "replay",
        ] {
            assert!(
                by_kind[kind].as_u64().is_some_and(|n| n > 0),
                "no {kind} sent: {junk}"
            );
        }
    }
    // Forged SSRCs and replays from other ports are refused by address.
    assert!(after1.drop_delta(&before, "address_mismatch") > 0);
    // The node's memory.
    assert!(
        rss_round1 - rss_warm < 8 * MIB,
        "RSS grew {} bytes over the junk round",
        rss_round1 - rss_warm
    );
    assert!(
        rss_round2 - rss_round1 < 4 * MIB,
        "RSS grew {} bytes over the second junk round",
        rss_round2 - rss_round1
    );
}
