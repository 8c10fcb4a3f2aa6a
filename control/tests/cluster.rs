//! Three `sfu` processes sharing rooms through a real `redis-server`
//! (Debian's `redis-server`, which the README's test command installs):
//! placement by load, two nodes racing for one room, WHIP through a node
//! that does not own the room, `kill -9` of a room's owner with every
//! participant back on a survivor (the times printed), a 30 s Redis outage
//! without a lost packet, drain, cascade relays, HAProxy in front, and
//! nodes that pass requests to each other over HTTPS.
//!
//! Each test starts its own Redis on a free loopback port and its own
//! nodes (`CARGO_BIN_EXE_sfu`, one worker each, control and media on
//! loopback ports); their logs go to files named in failure messages.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use common::plain::{Publisher, Viewer};
use common::webrtc::{WHEP_OFFER, connect, read_answer, with_fingerprint};
use common::{TEST_SECRET, b64, token_with};
use control::auth::Grant;
use serde_json::{Value, json};
use sfu_core::dtls::DtlsCert;

const WHIP_OFFER: &str = include_str!("fixtures/chrome-whip-offer.sdp");
const WHIP_UFRAG: &str = "g88K";

/// A free TCP port on loopback (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A log file for a child process of this test run.
fn log_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("sfu-cluster-{}-{name}.log", std::process::id()))
}

/// A `redis-server` on a loopback port, without persistence; with a
/// directory, a Redis Cluster member keeping its cluster config there.
struct Redis {
    port: u16,
    child: Option<Child>,
    cluster_dir: Option<PathBuf>,
}

impl Redis {
    fn start() -> Self {
        Self::start_in(None)
    }

    fn start_in(cluster_dir: Option<PathBuf>) -> Self {
        let mut r = Self {
            port: free_port(),
            child: None,
            cluster_dir,
        };
        r.spawn();
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        command.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        if let Some(dir) = &self.cluster_dir {
            command.current_dir(dir).args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &format!("nodes-{}.conf", self.port),
            ]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "redis-server does not start ({e}): install Debian's redis-server \
                     (the README's test command, .ci/test, does)"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.write_all(b"PING\r\n");
                let mut line = String::new();
                if BufReader::new(&s).read_line(&mut line).is_ok() && line.starts_with("+PONG") {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it (SIGKILL: an outage, not a clean shutdown).
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis Cluster of three masters (no replicas) on loopback ports, made
/// with `redis-cli --cluster create`.
struct RedisCluster {
    servers: Vec<Redis>,
    _dir: PathBuf,
}

impl RedisCluster {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "sfu-redis-cluster-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("a directory");
        let servers: Vec<Redis> = (0..3).map(|_| Redis::start_in(Some(dir.clone()))).collect();
        let addrs: Vec<String> = servers
            .iter()
            .map(|r| format!("127.0.0.1:{}", r.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli runs (Debian's redis-tools)");
        assert!(out.status.success(), "cluster create: {out:?}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let info = Command::new("redis-cli")
                .args(["-p", &servers[0].port.to_string(), "cluster", "info"])
                .output()
                .expect("redis-cli runs");
            if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the Redis Cluster is not ok: {info:?}"
            );
            thread::sleep(Duration::from_millis(100));
        }
        Self { servers, _dir: dir }
    }

    /// The seed URLs, comma separated.
    fn url(&self) -> String {
        self.servers
            .iter()
            .map(Redis::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// One `sfu` process.
struct Node {
    id: String,
    base: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Node {
    /// Starts node `id` of the cluster whose Redis is at `redis_url`.
    fn start(id: &str, redis_url: &str) -> Self {
        Self::start_with(id, redis_url, &[])
    }

    /// [`Node::start`] with `extra` flags.
    fn start_with(id: &str, redis_url: &str, extra: &[&str]) -> Self {
        let port = free_port();
        let log = log_path(id);
        let file = std::fs::File::create(&log).expect("a log file");
        let child = Command::new(env!("CARGO_BIN_EXE_sfu"))
            .env_clear()
            .env("RUST_LOG", "info")
            .args([
                "--control-addr",
                &format!("127.0.0.1:{port}"),
                "--media-port",
                "0",
                "--workers",
                "1",
                "--cpus",
                "none",
                "--node-id",
                id,
                "--pool-buffers",
                "512",
                "--socket-buffer-bytes",
                "1048576",
                "--redis",
                redis_url,
                "--api-secret",
                TEST_SECRET,
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("the sfu binary starts");
        let scheme = if extra.contains(&"--tls-cert") {
            "https"
        } else {
            "http"
        };
        let node = Self {
            id: id.to_owned(),
            base: format!("{scheme}://127.0.0.1:{port}"),
            child: Some(child),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while try_send(&node.base, "GET", "/healthz", "").is_none_or(|r| r.0 != 200) {
            assert!(
                Instant::now() < deadline,
                "node {id} did not come up; log: {}",
                node.log.display()
            );
            thread::sleep(Duration::from_millis(50));
        }
        node
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn get(&self, path: &str) -> (u16, Value, String) {
        send(&self.base, "GET", path, "")
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value, String) {
        send(&self.base, "POST", path, &body.to_string())
    }

    /// The rooms this node holds (`GET /v1/rooms` is answered locally).
    fn local_rooms(&self) -> BTreeSet<String> {
        let (status, json, text) = self.get("/v1/rooms");
        assert_eq!(status, 200, "{text}");
        json["rooms"]
            .as_array()
            .expect("rooms")
            .iter()
            .map(|r| r["room"].as_str().expect("name").to_owned())
            .collect()
    }

    fn metric(&self, name: &str) -> f64 {
        let (status, _, text) = self.get("/metrics");
        assert_eq!(status, 200);
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn admin() -> String {
    token_with(TEST_SECRET, "*", &[Grant::Admin])
}

/// One HTTP exchange with the admin token; `None` if it could not be made
/// (a node that is down).
fn try_send(base: &str, method: &str, path: &str, body: &str) -> Option<(u16, String, String)> {
    let mut config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)));
    if base.starts_with("https://") {
        let ca = ureq::tls::Certificate::from_pem(test_ca().ca_pem.as_bytes()).expect("the CA");
        config = config.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&[ca]))
                .build(),
        );
    }
    let agent: ureq::Agent = config.build().into();
    let url = format!("{base}{path}");
    let builder = match method {
        "GET" => ureq::http::Request::get(url),
        "POST" => ureq::http::Request::post(url),
        "DELETE" => ureq::http::Request::delete(url),
        other => panic!("unknown method {other}"),
    };
    let request = builder
        .header("authorization", format!("Bearer {}", admin()))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .expect("a request");
    let mut response = agent.run(request).ok()?;
    let served_by = response
        .headers()
        .get("x-sfu-served-by")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.body_mut().read_to_string().ok()?;
    Some((response.status().as_u16(), text, served_by))
}

/// [`try_send`] that must reach the node; the answer parsed as JSON.
fn send(base: &str, method: &str, path: &str, body: &str) -> (u16, Value, String) {
    let (status, text, _) = try_send(base, method, path, body)
        .unwrap_or_else(|| panic!("{method} {base}{path}: no answer"));
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    )
}

/// The test CA and a certificate of 127.0.0.1 it signed, as files (in a
/// directory of the test binary's process, left for the OS to clean).
struct TestCa {
    ca_pem: String,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn test_ca() -> &'static TestCa {
    static CA: OnceLock<TestCa> = OnceLock::new();
    CA.get_or_init(|| {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let dir = std::env::temp_dir().join(format!("sfu-cluster-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "sfu cluster test CA");
        let ca_key = KeyPair::generate().expect("a key");
        let ca = params.self_signed(&ca_key).expect("the CA");
        let leaf_key = KeyPair::generate().expect("a key");
        let leaf = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("leaf params")
            .signed_by(&leaf_key, &ca, &ca_key)
            .expect("the leaf");
        let out = TestCa {
            ca_pem: ca.pem(),
            ca: dir.join("ca.pem"),
            cert: dir.join("node.crt"),
            key: dir.join("node.key"),
        };
        std::fs::write(&out.ca, &out.ca_pem).expect("write");
        std::fs::write(&out.cert, leaf.pem()).expect("write");
        std::fs::write(&out.key, leaf_key.serialize_pem()).expect("write");
        out
    })
}

/// Waits until every node's registry view lists `n` live nodes.
fn wait_for_cluster(nodes: &[&Node], n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for node in nodes {
        loop {
            let (_, load, _) = node.get("/v1/load");
            let live = load["cluster"]["nodes"].as_array().map_or(0, Vec::len);
            if live == n {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} sees {live} nodes, not {n}: {load}",
                node.id
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Starts the nodes `ids` on the cluster whose Redis is at `redis_url`
/// and waits until each sees all of them.
fn start_nodes(redis_url: &str, ids: &[&str]) -> Vec<Node> {
    let nodes: Vec<Node> = ids.iter().map(|id| Node::start(id, redis_url)).collect();
    wait_for_cluster(&nodes.iter().collect::<Vec<_>>(), nodes.len());
    nodes
}

/// The owner of `room` as `node` reports it (passing the request on).
fn owner_via(node: &Node, room: &str) -> String {
    let (status, json, text) = node.get(&format!("/v1/rooms/{room}"));
    assert_eq!(status, 200, "GET /v1/rooms/{room} via {}: {text}", node.id);
    json["owner"]["node_id"]
        .as_str()
        .expect("an owner")
        .to_owned()
}

#[test]
fn rooms_spread_by_load_and_racing_nodes_agree_on_one_owner() {
    let redis = Redis::start();
    let nodes = start_nodes(&redis.url(), &["n1", "n2", "n3"]);

    // 30 rooms, asked of the nodes in turn.
    for i in 0..30 {
        let node = &nodes[i % 3];
        let (status, _, text) = node.post("/v1/rooms", &json!({ "room": format!("spread-{i}") }));
        assert_eq!(status, 201, "spread-{i} via {}: {text}", node.id);
    }
    let held: Vec<BTreeSet<String>> = nodes.iter().map(Node::local_rooms).collect();
    let counts: Vec<usize> = held.iter().map(BTreeSet::len).collect();
    println!("CLUSTER_PLACEMENT rooms per node {counts:?}");
    assert_eq!(
        counts.iter().sum::<usize>(),
        30,
        "each room on one node: {held:?}"
    );
    assert!(counts.iter().all(|&n| n >= 5), "spread by load: {counts:?}");
    // Every node names the same owner, the one holding the room.
    for i in [0, 1, 2, 17, 29] {
        let room = format!("spread-{i}");
        let holder = held
            .iter()
            .position(|h| h.contains(&room))
            .expect("held somewhere");
        for node in &nodes {
            assert_eq!(
                owner_via(node, &room),
                nodes[holder].id,
                "{room} via {}",
                node.id
            );
        }
    }

    // Two nodes asked for one new room at the same instant: one creates
    // it, the other answers 409, and one node holds it.
    for i in 0..20 {
        let room = format!("race-{i}");
        let barrier = Arc::new(Barrier::new(2));
        let answers: Vec<(u16, String)> = [&nodes[i % 3].base, &nodes[(i + 1) % 3].base]
            .into_iter()
            .map(|base| {
                let (base, room, barrier) = (base.clone(), room.clone(), Arc::clone(&barrier));
                thread::spawn(move || {
                    barrier.wait();
                    let (status, _, text) = send(
                        &base,
                        "POST",
                        "/v1/rooms",
                        &json!({ "room": room }).to_string(),
                    );
                    (status, text)
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().expect("a client thread"))
            .collect();
        let mut statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
        statuses.sort_unstable();
        assert_eq!(statuses, [201, 409], "{room}: {answers:?}");
        let holders: Vec<&str> = nodes
            .iter()
            .filter(|n| n.local_rooms().contains(&room))
            .map(|n| n.id.as_str())
            .collect();
        assert_eq!(holders.len(), 1, "{room} held by {holders:?}");
        assert_eq!(owner_via(&nodes[(i + 2) % 3], &room), holders[0]);
    }
    // `sfu cluster status` prints the registry.
    let status = Command::new(env!("CARGO_BIN_EXE_sfu"))
        .env_clear()
        .args(["cluster", "status", "--redis", &redis.url()])
        .output()
        .expect("sfu cluster status runs");
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{status:?}");
    println!("{table}");
    for node in &nodes {
        let line = table
            .lines()
            .find(|l| l.starts_with(&node.id))
            .unwrap_or_else(|| panic!("{} in {table}", node.id));
        assert!(
            line.contains("serving") && line.contains(&node.base),
            "{line}"
        );
    }
    // Every node's registry entry, as any node's /metrics shows it.
    // (The view is at most two heartbeats old.)
    thread::sleep(Duration::from_millis(1200));
    for node in &nodes {
        let rooms = nodes[0].metric(&format!(
            "sfu_cluster_node_rooms{{node=\"{}\",state=\"serving\"}}",
            node.id
        ));
        let held = node.local_rooms().len() as f64;
        assert_eq!(rooms, held, "{}'s rooms in the registry", node.id);
    }
    let placed: f64 = nodes
        .iter()
        .map(|n| n.metric("sfu_cluster_placements_total{where=\"peer\"}"))
        .sum();
    assert!(placed > 0.0, "some rooms were placed on peers");
}

#[test]
fn a_whip_post_to_a_node_that_does_not_own_the_room_connects_to_the_owner() {
    let redis = Redis::start();
    let nodes = start_nodes(&redis.url(), &["w1", "w2"]);
    // A room, wherever it lands; then WHIP through the other node.
    let (status, _, text) = nodes[0].post("/v1/rooms", &json!({"room": "live"}));
    assert_eq!(status, 201, "{text}");
    let owner = owner_via(&nodes[0], "live");
    let (owner_node, other) = if owner == nodes[0].id {
        (&nodes[0], &nodes[1])
    } else {
        (&nodes[1], &nodes[0])
    };
    let (_, room, _) = owner_node.get("/v1/rooms/live");
    let owner_media: SocketAddr = room["media"]
        .as_str()
        .expect("media")
        .parse()
        .expect("addr");

    let cert = DtlsCert::generate().expect("a certificate");
    let token = token_with(TEST_SECRET, "live", &[Grant::Publish]);
    let reply = common::webrtc::send_to(
        &other.base,
        "POST",
        "/whip/live",
        Some(&token),
        Some("application/sdp"),
        &with_fingerprint(WHIP_OFFER, &cert),
    );
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(
        reply.header("x-sfu-served-by"),
        owner,
        "answered by the owner"
    );
    let answer = read_answer(&reply.text);
    assert_eq!(answer.candidate, owner_media, "the owner's media address");
    let location = reply.header("location").to_owned();
    assert!(location.starts_with("/whip/live/"), "{location}");
    // ICE and DTLS with the owner, as a browser would.
    let _publisher = connect(&answer, WHIP_UFRAG, &cert);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, room, _) = other.get("/v1/rooms/live");
        if room["endpoints"] == 1 && room["pending"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "not connected: {room}");
        thread::sleep(Duration::from_millis(50));
    }
    // A WHEP viewer through the other node too, and the session's DELETE.
    let sub = DtlsCert::generate().expect("a certificate");
    let viewer = common::webrtc::send_to(
        &other.base,
        "POST",
        "/whep/live",
        Some(&token_with(TEST_SECRET, "live", &[Grant::Subscribe])),
        Some("application/sdp"),
        &with_fingerprint(WHEP_OFFER, &sub),
    );
    assert_eq!(viewer.status, 201, "{}", viewer.text);
    assert_eq!(read_answer(&viewer.text).candidate, owner_media);
    let deleted = common::webrtc::send_to(&other.base, "DELETE", &location, Some(&token), None, "");
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    let (_, room, _) = owner_node.get("/v1/rooms/live");
    assert_eq!(
        room["endpoints"], 1,
        "the publisher left, the viewer stays: {room}"
    );
}

/// A participant of the JSON API: a publisher sends one video packet
/// every 10 ms; a subscriber counts what it receives. Each watches its
/// node's `/healthz` and, once it fails, creates its endpoint again
/// through the other nodes in turn (a load balancer's retries) until one
/// answers 201.
struct Participant {
    received: Arc<AtomicU64>,
    /// Packets missing from the sequence a subscriber received (gaps in
    /// the consumer's sequence numbers; a rejoin starts a new sequence).
    lost: Arc<AtomicU64>,
    /// When the first packet after the kill arrived, ms after the kill.
    back_after: Arc<Mutex<Option<f64>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

const PUB_SSRC_BASE: u32 = 0x5000_0000;

/// Creates the endpoint through `bases` (in turn from `first`) until one
/// answers 201; returns the base that answered and the answer.
fn join(room: &str, body: &Value, bases: &[String], first: usize) -> (String, Value) {
    let mut i = first;
    loop {
        let base = &bases[i % bases.len()];
        if let Some((201, text, _)) = try_send(
            base,
            "POST",
            &format!("/v1/rooms/{room}/endpoints"),
            &body.to_string(),
        ) {
            return (base.clone(), serde_json::from_str(&text).expect("JSON"));
        }
        i += 1;
        thread::sleep(Duration::from_millis(100));
    }
}

impl Participant {
    fn spawn(
        room: &str,
        publisher: Option<u32>,
        bases: Vec<String>,
        killed_at: Arc<Mutex<Option<Instant>>>,
    ) -> Self {
        let received = Arc::new(AtomicU64::new(0));
        let lost = Arc::new(AtomicU64::new(0));
        let back_after = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_millis(10)))
            .expect("timeout");
        let key = b64(&[0x42u8; 28]);
        let body = match publisher {
            Some(ssrc) => json!({
                "role": "publish",
                "srtp": {"profile": "AEAD_AES_128_GCM", "key": key},
                "tracks": [{"kind": "video", "ssrc": ssrc, "payload_type": 96}],
            }),
            None => json!({
                "role": "subscribe",
                "srtp": {"profile": "AEAD_AES_128_GCM", "key": key},
                "remote": socket.local_addr().expect("bound").to_string(),
            }),
        };
        let (mut base, answer) = join(room, &body, &bases, 0);
        let mut media: SocketAddr = answer["media"]
            .as_str()
            .expect("media")
            .parse()
            .expect("addr");
        let l = Arc::clone(&lost);
        let (room, r, b, s) = (
            room.to_owned(),
            Arc::clone(&received),
            Arc::clone(&back_after),
            Arc::clone(&stop),
        );
        let thread = thread::spawn(move || {
            let mut tx = publisher.map(|_| common::plain::gcm(&[0x42u8; 28]));
            let mut seq = 0u16;
            let mut buf = [0u8; 1500];
            let mut last_check = Instant::now();
            let mut rejoined: Option<Instant> = None;
            let mut last_seq: Option<u16> = None;
            while !s.load(Ordering::Relaxed) {
                if let (Some(tx), Some(ssrc)) = (tx.as_mut(), publisher) {
                    common::plain::send_video(tx, &socket, media, seq, ssrc, 200);
                    seq = seq.wrapping_add(1);
                    thread::sleep(Duration::from_millis(10));
                } else if let Ok((n, from)) = socket.recv_from(&mut buf)
                    && from == media
                    && n >= 12
                {
                    r.fetch_add(1, Ordering::Relaxed);
                    let seq = u16::from_be_bytes([buf[2], buf[3]]);
                    if let Some(last) = last_seq {
                        let gap = seq.wrapping_sub(last);
                        if (2..0x8000).contains(&gap) {
                            l.fetch_add(u64::from(gap - 1), Ordering::Relaxed);
                        }
                    }
                    last_seq = Some(seq);
                    // The first packet from a node joined after the kill.
                    let killed = *killed_at.lock().expect("lock");
                    if let (Some(k), Some(j)) = (killed, rejoined)
                        && j >= k
                    {
                        let mut back = b.lock().expect("lock");
                        if back.is_none() {
                            *back = Some(k.elapsed().as_secs_f64() * 1000.0);
                        }
                    }
                }
                if last_check.elapsed() >= Duration::from_millis(100) {
                    last_check = Instant::now();
                    if try_send(&base, "GET", "/healthz", "").is_none() {
                        let first = bases.iter().position(|b| *b != base).unwrap_or(0);
                        let (b2, answer) = join(&room, &body, &bases, first);
                        base = b2;
                        media = answer["media"]
                            .as_str()
                            .expect("media")
                            .parse()
                            .expect("addr");
                        rejoined = Some(Instant::now());
                    }
                }
            }
        });
        Self {
            received,
            lost,
            back_after,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Participant {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[test]
fn a_killed_nodes_rooms_come_back_on_the_survivors() {
    let redis = Redis::start();
    let mut nodes = start_nodes(&redis.url(), &["k1", "k2", "k3"]);
    // Six rooms; the victim is the owner of the first.
    for i in 0..6 {
        let (status, _, text) = nodes[i % 3].post("/v1/rooms", &json!({"room": format!("fo-{i}")}));
        assert_eq!(status, 201, "{text}");
    }
    let victim_id = owner_via(&nodes[0], "fo-0");
    let victim = nodes
        .iter()
        .position(|n| n.id == victim_id)
        .expect("a node");
    let rooms: Vec<String> = nodes[victim].local_rooms().into_iter().collect();
    let victim_base = nodes[victim].base.clone();
    // Clients reach the victim first (it owns their rooms either way),
    // then the survivors.
    let mut bases = vec![victim_base.clone()];
    bases.extend(
        nodes
            .iter()
            .filter(|n| n.id != victim_id)
            .map(|n| n.base.clone()),
    );
    let killed_at = Arc::new(Mutex::new(None));
    let mut participants = Vec::new();
    let mut subscribers = Vec::new();
    for (i, room) in rooms.iter().enumerate() {
        participants.push(Participant::spawn(
            room,
            Some(PUB_SSRC_BASE + i as u32),
            bases.clone(),
            Arc::clone(&killed_at),
        ));
        for _ in 0..2 {
            subscribers.push(Participant::spawn(
                room,
                None,
                bases.clone(),
                Arc::clone(&killed_at),
            ));
        }
    }
    // Media flows before the kill.
    thread::sleep(Duration::from_millis(1000));
    for s in &subscribers {
        assert!(
            s.received.load(Ordering::Relaxed) > 20,
            "media before the kill"
        );
    }
    // The cluster's event channel, as the signaling service would follow it.
    let events_log = log_path("events");
    let mut listener = Command::new("redis-cli")
        .args([
            "-p",
            &redis.port.to_string(),
            "--csv",
            "SUBSCRIBE",
            "{sfu}:events",
        ])
        .stdout(std::fs::File::create(&events_log).expect("a log file"))
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-cli runs");
    thread::sleep(Duration::from_millis(200));
    *killed_at.lock().expect("lock") = Some(Instant::now());
    nodes[victim].kill();
    let deadline = Instant::now() + Duration::from_secs(15);
    while subscribers
        .iter()
        .any(|s| s.back_after.lock().expect("lock").is_none())
    {
        assert!(
            Instant::now() < deadline,
            "not every subscriber got media back within 15 s"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let mut times: Vec<f64> = subscribers
        .iter()
        .map(|s| s.back_after.lock().expect("lock").expect("back"))
        .collect();
    times.sort_by(f64::total_cmp);
    let (p50, p99, max) = (
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times[times.len() - 1],
    );
    println!(
        "CLUSTER_FAILOVER rooms {} subscribers {} kill-to-first-packet ms p50 {p50:.0} p99 {p99:.0} max {max:.0}",
        rooms.len(),
        times.len()
    );
    // Every room is owned by a survivor, and was announced as moved.
    let survivors: Vec<&Node> = nodes.iter().filter(|n| n.id != victim_id).collect();
    for room in &rooms {
        let owner = owner_via(survivors[0], room);
        assert_ne!(owner, victim_id, "{room}");
    }
    let takeovers: f64 = survivors
        .iter()
        .map(|n| n.metric("sfu_cluster_takeovers_total"))
        .sum();
    assert!(takeovers >= rooms.len() as f64, "{takeovers} takeovers");
    // Each move was published on the channel.
    thread::sleep(Duration::from_millis(200));
    let _ = listener.kill();
    let _ = listener.wait();
    let published = std::fs::read_to_string(&events_log).expect("the channel's log");
    for room in &rooms {
        let moved: Vec<&str> = published
            .lines()
            .filter(|l| {
                l.contains("room_moved") && l.contains(&format!("\\\"room\\\":\\\"{room}\\\""))
            })
            .collect();
        assert_eq!(moved.len(), 1, "one room_moved for {room}: {published}");
        assert!(
            published.lines().any(|l| l.contains("room_moved")
                && l.contains(&format!("\\\"room\\\":\\\"{room}\\\""))
                && l.contains(&format!("\\\"from\\\":\\\"{victim_id}\\\""))),
            "room_moved for {room} on the channel: {published}"
        );
    }
    assert!(
        max <= 3000.0,
        "media back within 3 s of kill -9: max {max:.0} ms"
    );
    drop(participants);
    drop(subscribers);
}

#[test]
fn a_redis_outage_loses_no_media_and_rooms_are_reconciled() {
    let mut redis = Redis::start();
    let nodes = start_nodes(&redis.url(), &["o1", "o2"]);
    let (status, _, text) = nodes[0].post("/v1/rooms", &json!({"room": "steady"}));
    assert_eq!(status, 201, "{text}");
    let owner = owner_via(&nodes[1], "steady");
    let owner_base = nodes
        .iter()
        .find(|n| n.id == owner)
        .expect("owner")
        .base
        .clone();
    let killed_at = Arc::new(Mutex::new(None));
    let publisher = Participant::spawn(
        "steady",
        Some(PUB_SSRC_BASE),
        vec![owner_base.clone()],
        Arc::clone(&killed_at),
    );
    let subscriber = Participant::spawn(
        "steady",
        None,
        vec![owner_base.clone()],
        Arc::clone(&killed_at),
    );
    thread::sleep(Duration::from_millis(500));
    let before = subscriber.received.load(Ordering::Relaxed);
    assert!(before > 10, "media flows");

    redis.stop();
    let outage = Instant::now();
    // During the outage: a new room is placed locally, not refused.
    thread::sleep(Duration::from_millis(1500));
    let (status, _, text) = nodes[1].post("/v1/rooms", &json!({"room": "during-outage"}));
    assert_eq!(status, 201, "a room while Redis is down: {text}");
    assert!(nodes[1].local_rooms().contains("during-outage"));
    assert_eq!(nodes[0].metric("sfu_cluster_redis_up"), 0.0);
    while outage.elapsed() < Duration::from_secs(30) {
        thread::sleep(Duration::from_millis(200));
    }
    let during = subscriber.received.load(Ordering::Relaxed);
    redis.spawn();
    // Both nodes come back, and claim their rooms again (Redis restarted
    // empty).
    wait_for_cluster(&[&nodes[0], &nodes[1]], 2);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = try_send(&nodes[0].base, "GET", "/v1/rooms/during-outage", "");
        let b = try_send(&nodes[1].base, "GET", "/v1/rooms/steady", "");
        if a.as_ref().is_some_and(|a| a.0 == 200 && a.2 == nodes[1].id)
            && b.as_ref().is_some_and(|b| b.0 == 200)
        {
            break;
        }
        assert!(Instant::now() < deadline, "not reconciled: {a:?} {b:?}");
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(owner_via(&nodes[0], "steady"), owner);
    assert_eq!(nodes[0].metric("sfu_cluster_redis_up"), 1.0);
    assert!(nodes[0].metric("sfu_cluster_redis_outages_total") >= 1.0);
    drop(publisher);
    thread::sleep(Duration::from_millis(200));
    let total = subscriber.received.load(Ordering::Relaxed);
    // 100 packets/s: 30 s of outage carried about 3,000 of them.
    let in_outage = during - before;
    let lost = subscriber.lost.load(Ordering::Relaxed);
    println!(
        "CLUSTER_OUTAGE packets received during 30 s without Redis: {in_outage}, in all {total}, lost {lost}"
    );
    assert!(in_outage >= 1500, "{in_outage} packets during the outage");
    assert_eq!(lost, 0, "packets lost");
}

#[test]
fn a_draining_node_takes_no_new_room_but_keeps_its_own() {
    let redis = Redis::start();
    let nodes = start_nodes(&redis.url(), &["d1", "d2"]);
    // An entry that is not a node's (another version, junk) is skipped,
    // not taken for an outage.
    for args in [
        &["SET", "{sfu}:node:junk", "not json", "PX", "60000"][..],
        &["SADD", "{sfu}:nodes", "junk"],
    ] {
        let out = Command::new("redis-cli")
            .args(["-p", &redis.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        assert!(out.status.success(), "{out:?}");
    }
    thread::sleep(Duration::from_millis(1200));
    assert_eq!(nodes[0].metric("sfu_cluster_redis_up"), 1.0);
    wait_for_cluster(&[&nodes[0], &nodes[1]], 2);
    // A room on d1 before it drains (a forwarded request claims locally).
    let mut placed_on_d1 = None;
    for i in 0..20 {
        let room = format!("before-{i}");
        let (status, _, _) = nodes[0].post("/v1/rooms", &json!({"room": room}));
        assert_eq!(status, 201);
        if nodes[0].local_rooms().contains(&room) {
            placed_on_d1 = Some(room);
            break;
        }
    }
    let kept = placed_on_d1.expect("some room on d1 in 20 tries");
    // A participant in it: a drained node without endpoints would stop.
    let (status, _, text) = nodes[0].post(
        &format!("/v1/rooms/{kept}/endpoints"),
        &json!({
            "role": "publish",
            "srtp": {"profile": "AEAD_AES_128_GCM", "key": b64(&[6u8; 28])},
            "tracks": [{"kind": "audio", "ssrc": 76, "payload_type": 111}],
        }),
    );
    assert_eq!(status, 201, "{text}");
    let (status, json, _) = nodes[0].post("/v1/drain", &json!({}));
    assert_eq!(status, 200, "{json}");
    assert_eq!(nodes[0].get("/healthz").0, 503);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, load, _) = nodes[1].get("/v1/load");
        let d1 = load["cluster"]["nodes"]
            .as_array()
            .and_then(|n| n.iter().find(|e| e["id"] == "d1").cloned());
        if d1.is_some_and(|e| e["state"] == "draining") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "d1 not draining in the registry: {load}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let before: BTreeMap<&str, usize> = nodes
        .iter()
        .map(|n| (n.id.as_str(), n.local_rooms().len()))
        .collect();
    for i in 0..8 {
        let (status, _, text) =
            nodes[i % 2].post("/v1/rooms", &json!({"room": format!("after-{i}")}));
        assert_eq!(status, 201, "{text}");
    }
    // A client's own forwarding header (unsigned, or signed with another
    // secret) does not make the draining node claim a room.
    for (i, forged) in [
        "lb".to_owned(),
        format!("lb;{};{}", control::auth::unix_now(), "0".repeat(64)),
    ]
    .iter()
    .enumerate()
    {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let request = ureq::http::Request::post(format!("{}/v1/rooms", nodes[0].base))
            .header("authorization", format!("Bearer {}", admin()))
            .header("content-type", "application/json")
            .header("x-sfu-forwarded", forged.as_str())
            .body(json!({"room": format!("forged-{i}")}).to_string())
            .expect("a request");
        let status = agent.run(request).expect("an answer").status().as_u16();
        assert_eq!(status, 201, "{forged}");
    }
    assert_eq!(
        nodes[0].local_rooms().len(),
        before["d1"],
        "no new room on d1"
    );
    assert_eq!(
        nodes[1].local_rooms().len(),
        before["d2"] + 10,
        "{:?}",
        nodes[1].local_rooms()
    );
    // Its own room still takes joins, through either node.
    let (status, _, text) = nodes[1].post(
        &format!("/v1/rooms/{kept}/endpoints"),
        &json!({
            "role": "publish",
            "srtp": {"profile": "AEAD_AES_128_GCM", "key": b64(&[7u8; 28])},
            "tracks": [{"kind": "audio", "ssrc": 77, "payload_type": 111}],
        }),
    );
    assert_eq!(status, 201, "{text}");
}

#[test]
fn a_redis_cluster_holds_the_registry_and_the_owners() {
    let redis = RedisCluster::start();
    let mut nodes = start_nodes(&redis.url(), &["c1", "c2"]);
    for i in 0..10 {
        let (status, _, text) = nodes[i % 2].post("/v1/rooms", &json!({"room": format!("rc-{i}")}));
        assert_eq!(status, 201, "{text}");
    }
    let held: Vec<usize> = nodes.iter().map(|n| n.local_rooms().len()).collect();
    assert_eq!(held.iter().sum::<usize>(), 10, "{held:?}");
    assert!(held.iter().all(|&n| n >= 2), "spread: {held:?}");
    let victim = owner_via(&nodes[0], "rc-0");
    let (dead, alive) = if victim == "c1" { (0, 1) } else { (1, 0) };
    nodes[dead].kill();
    // The survivor takes the room over once the victim's entry expires.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, json, _) = nodes[alive].get("/v1/rooms/rc-0");
        if status == 200 && json["owner"]["node_id"] == nodes[alive].id.as_str() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rc-0 not taken over: {status} {json}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert!(nodes[alive].metric("sfu_cluster_takeovers_total") >= 1.0);
}

#[test]
fn a_room_past_relay_after_spans_nodes_over_trunks_without_loss() {
    // The origin keeps 6 (8 endpoints with the publishers), the first
    // relay takes 8, the second 6 (and then a WHEP viewer).
    const VIEWERS: usize = 20;
    let redis = Redis::start();
    let flags = ["--cluster-relay-after", "8"];
    let nodes: Vec<Node> = ["c1", "c2", "c3"]
        .iter()
        .map(|id| Node::start_with(id, &redis.url(), &flags))
        .collect();
    wait_for_cluster(&nodes.iter().collect::<Vec<_>>(), 3);
    let (status, _, text) = nodes[0].post("/v1/rooms", &json!({"room": "big"}));
    assert_eq!(status, 201, "{text}");
    let owner = owner_via(&nodes[0], "big");
    let origin = nodes.iter().find(|n| n.id == owner).expect("the owner");
    let mut publishers: Vec<Publisher> = [0x7000_0001u32, 0x7000_0002]
        .iter()
        .map(|&ssrc| Publisher::start(&origin.base, &admin(), "big", ssrc))
        .collect();
    thread::sleep(Duration::from_millis(300));
    // Viewers join through the three nodes in turn (a load balancer).
    let viewers: Vec<Viewer> = (0..VIEWERS)
        .map(|i| {
            let node = &nodes[i % nodes.len()];
            Viewer::join(&node.base, &node.id, &admin(), "big")
        })
        .collect();
    let mut by_node: BTreeMap<String, usize> = BTreeMap::new();
    for v in &viewers {
        *by_node.entry(v.served_by.clone()).or_default() += 1;
    }
    println!("CASCADE viewers by serving node (origin {owner}): {by_node:?}");
    let mut shares: Vec<usize> = by_node.values().copied().collect();
    shares.sort_unstable();
    assert_eq!(
        shares,
        [6, 6, 8],
        "the room spans the three nodes: {by_node:?}"
    );
    assert_eq!(by_node[&owner], 6, "the origin's share: {by_node:?}");
    for n in &nodes {
        if n.id != owner {
            assert_eq!(
                n.metric("sfu_cluster_relayed_rooms"),
                1.0,
                "{} relays",
                n.id
            );
        }
    }
    assert_eq!(origin.metric("sfu_cluster_relayed_subscribers_total"), 14.0);
    // Steady media, then every relay viewer asks for keyframes: the PLIs
    // reach the publishers on the origin through the trunks.
    thread::sleep(Duration::from_secs(3));
    let plis_before: Vec<u64> = publishers
        .iter()
        .map(|p| p.plis.load(Ordering::Relaxed))
        .collect();
    let relayed: Vec<&Viewer> = viewers.iter().filter(|v| v.served_by != owner).collect();
    relayed[0].request_keyframes();
    let deadline = Instant::now() + Duration::from_secs(2);
    while publishers
        .iter()
        .zip(&plis_before)
        .any(|(p, b)| p.plis.load(Ordering::Relaxed) == *b)
    {
        assert!(
            Instant::now() < deadline,
            "a relay viewer's PLI did not reach the publishers: {plis_before:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    // A WHEP viewer through the origin lands on the relay with room left,
    // and gets the publishers' video from it.
    let (_, room, _) = origin.get("/v1/rooms/big");
    let origin_media: SocketAddr = room["media"]
        .as_str()
        .expect("media")
        .parse()
        .expect("addr");
    let cert = DtlsCert::generate().expect("a certificate");
    let reply = common::webrtc::send_to(
        &origin.base,
        "POST",
        "/whep/big",
        Some(&token_with(TEST_SECRET, "big", &[Grant::Subscribe])),
        Some("application/sdp"),
        &with_fingerprint(WHEP_OFFER, &cert),
    );
    assert_eq!(reply.status, 201, "{}", reply.text);
    let relay_id = reply.header("x-sfu-served-by").to_owned();
    assert!(
        relay_id != owner && by_node.get(&relay_id) == Some(&6),
        "WHEP served by {relay_id}: {by_node:?}"
    );
    let answer = read_answer(&reply.text);
    assert_ne!(answer.candidate, origin_media, "the relay's media address");
    let mut whep = connect(&answer, "1GiB", &cert);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut video = 0;
    while video < 50 {
        assert!(
            Instant::now() < deadline,
            "the WHEP viewer on relay {relay_id} got {video} video packets"
        );
        if let Some((pt, _, _)) = whep.recv_rtp()
            && pt == 96
        {
            video += 1;
        }
    }
    // A viewer of the full relay leaves through a node that does not
    // serve it; the two relays have 7 viewers each now.
    let full = by_node
        .iter()
        .find(|(n, c)| **n != owner && **c == 8)
        .map(|(n, _)| n.clone())
        .expect("a full relay");
    let leaving = *relayed
        .iter()
        .find(|v| v.served_by == full)
        .expect("a viewer of the full relay");
    let other = nodes
        .iter()
        .find(|n| n.id != leaving.served_by)
        .expect("another node");
    let (status, _, text) = other_delete(other, "big", &leaving.id);
    assert_eq!(
        status, 204,
        "DELETE of a relayed endpoint via {}: {text}",
        other.id
    );
    // Two more viewers: the relays count who is there, not who came, so
    // both land on relays (one each), not on the origin.
    let late: Vec<Viewer> = (0..2)
        .map(|_| Viewer::join(&origin.base, &origin.id, &admin(), "big"))
        .collect();
    let mut late_nodes: Vec<&str> = late.iter().map(|v| v.served_by.as_str()).collect();
    late_nodes.sort_unstable();
    assert!(
        !late_nodes.contains(&owner.as_str()) && late_nodes[0] != late_nodes[1],
        "late viewers on {late_nodes:?} (origin {owner})"
    );
    thread::sleep(Duration::from_secs(1));
    for v in &late {
        assert_eq!(
            v.seen.lock().expect("lock").len(),
            2,
            "a late viewer gets both"
        );
    }
    for p in &mut publishers {
        p.stop();
    }
    thread::sleep(Duration::from_millis(300));
    let sent: Vec<u64> = publishers
        .iter()
        .map(|p| p.sent.load(Ordering::Relaxed))
        .collect();
    let mut lost_total = 0;
    let mut received_total = 0;
    for (i, v) in viewers.iter().enumerate() {
        let seen = v.seen.lock().expect("lock").clone();
        assert_eq!(
            seen.len(),
            2,
            "viewer {i} (via {}) gets both publishers: {seen:?}",
            v.served_by
        );
        for (ssrc, (packets, lost, _)) in &seen {
            assert!(
                *packets > 200,
                "viewer {i} ssrc {ssrc:#x}: {packets} packets"
            );
            lost_total += lost;
            received_total += packets;
        }
    }
    println!(
        "CASCADE {VIEWERS} viewers over 3 nodes: {received_total} packets received, {lost_total} lost; publishers sent {sent:?}"
    );
    assert_eq!(lost_total, 0, "packets lost over the cascade");
}

/// `DELETE /v1/rooms/{room}/endpoints/{id}` through `node`.
fn other_delete(node: &Node, room: &str, id: &str) -> (u16, Value, String) {
    send(
        &node.base,
        "DELETE",
        &format!("/v1/rooms/{room}/endpoints/{id}"),
        "",
    )
}

/// A real `haproxy` (Debian's package, which the README's test command
/// installs) with `deploy/haproxy.cfg`, its frontend and servers set to
/// this test's ports; killed on drop.
struct Haproxy {
    child: Child,
    base: String,
}

impl Haproxy {
    fn start(servers: &[(&Node, u16)]) -> Self {
        let example = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/haproxy.cfg"),
        )
        .expect("deploy/haproxy.cfg");
        let port = free_port();
        let mut config = String::new();
        for line in example.lines() {
            let t = line.trim_start();
            if t.starts_with("bind ") {
                config.push_str(&format!("    bind 127.0.0.1:{port}\n"));
            } else if t.starts_with("maxconn ") {
                // Its descriptors must fit this process's limit.
                config.push_str("    maxconn 2000\n");
            } else if t.starts_with("server ") {
                continue;
            } else {
                config.push_str(line);
                config.push('\n');
            }
        }
        for (node, agent) in servers {
            let addr = node.base.trim_start_matches("http://");
            config.push_str(&format!(
                "    server {} {addr} check agent-addr 127.0.0.1 agent-port {agent}\n",
                node.id
            ));
        }
        let path = log_path("haproxy.cfg");
        std::fs::write(&path, config).expect("write the config");
        let check = Command::new("haproxy")
            .args(["-c", "-f"])
            .arg(&path)
            .output()
            .expect("haproxy must be installed (apt-get install haproxy; the README's test command does)");
        assert!(check.status.success(), "haproxy -c: {check:?}");
        let child = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy starts");
        let lb = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while try_send(&lb.base, "GET", "/healthz", "").is_none_or(|r| r.0 != 200) {
            assert!(Instant::now() < deadline, "haproxy does not answer");
            thread::sleep(Duration::from_millis(50));
        }
        lb
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One line from a node's load balancer agent.
fn agent_line(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("the agent listens");
    let mut line = String::new();
    std::io::Read::read_to_string(&mut s, &mut line).expect("a line");
    line
}

#[test]
fn haproxy_sends_no_new_rooms_to_a_draining_node_while_its_rooms_go_on() {
    let redis = Redis::start();
    let agents = [free_port(), free_port()];
    let nodes: Vec<Node> = ["h1", "h2"]
        .iter()
        .zip(agents)
        .map(|(id, a)| {
            Node::start_with(
                id,
                &redis.url(),
                &["--agent-addr", &format!("127.0.0.1:{a}")],
            )
        })
        .collect();
    wait_for_cluster(&nodes.iter().collect::<Vec<_>>(), 2);
    let line = agent_line(agents[0]);
    assert!(line.starts_with("up ") && line.ends_with("%\n"), "{line:?}");
    let lb = Haproxy::start(&[(&nodes[0], agents[0]), (&nodes[1], agents[1])]);

    // Rooms created through the load balancer land on both nodes.
    for i in 0..8 {
        let (status, _, text) = send(
            &lb.base,
            "POST",
            "/v1/rooms",
            &json!({"room": format!("lb-{i}")}).to_string(),
        );
        assert_eq!(status, 201, "{text}");
    }
    let before: Vec<usize> = nodes.iter().map(|n| n.local_rooms().len()).collect();
    assert!(before.iter().all(|&n| n >= 1), "rooms by node: {before:?}");
    // A participant in one of h1's rooms.
    let kept = nodes[0]
        .local_rooms()
        .into_iter()
        .next()
        .expect("a room on h1");
    let join = |ssrc: u32| {
        try_send(
            &lb.base,
            "POST",
            &format!("/v1/rooms/{kept}/endpoints"),
            &json!({
                "role": "publish",
                "srtp": {"profile": "AEAD_AES_128_GCM", "key": b64(&[5u8; 28])},
                "tracks": [{"kind": "audio", "ssrc": ssrc, "payload_type": 111}],
            })
            .to_string(),
        )
        .expect("an answer")
    };
    assert_eq!(join(501).0, 201);

    // h1 drains: its agent says so and haproxy stops sending it requests.
    let (status, _, _) = nodes[0].post("/v1/drain", &json!({}));
    assert_eq!(status, 200);
    assert_eq!(agent_line(agents[0]), "drain\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut healthy_in_a_row = 0;
    while healthy_in_a_row < 10 {
        assert!(
            Instant::now() < deadline,
            "haproxy still sends to the draining node"
        );
        if try_send(&lb.base, "GET", "/healthz", "").is_some_and(|r| r.0 == 200) {
            healthy_in_a_row += 1;
        } else {
            healthy_in_a_row = 0;
        }
        thread::sleep(Duration::from_millis(50));
    }
    for i in 0..6 {
        let (status, _, text) = send(
            &lb.base,
            "POST",
            "/v1/rooms",
            &json!({"room": format!("lb-after-{i}")}).to_string(),
        );
        assert_eq!(status, 201, "{text}");
    }
    let after: Vec<usize> = nodes.iter().map(|n| n.local_rooms().len()).collect();
    println!("HAPROXY rooms by node before the drain {before:?}, after 6 more {after:?}");
    assert_eq!(after[0], before[0], "no new room on the draining node");
    assert_eq!(after[1], before[1] + 6);
    // Its room still takes joins through the load balancer (h2 passes
    // them to h1).
    let (status, text, served_by) = join(502);
    assert_eq!(status, 201, "{text}");
    assert_eq!(served_by, "h1");
}

#[test]
fn nodes_pass_requests_to_each_other_over_https() {
    let redis = Redis::start();
    let ca = test_ca();
    let tls = [
        "--tls-cert",
        ca.cert.to_str().expect("path"),
        "--tls-key",
        ca.key.to_str().expect("path"),
        "--tls-ca",
        ca.ca.to_str().expect("path"),
    ];
    let nodes = [
        Node::start_with("s1", &redis.url(), &tls),
        Node::start_with("s2", &redis.url(), &tls),
    ];
    wait_for_cluster(&nodes.iter().collect::<Vec<_>>(), 2);
    let (status, _, text) = nodes[0].post("/v1/rooms", &json!({"room": "tls"}));
    assert_eq!(status, 201, "{text}");
    let owner = owner_via(&nodes[0], "tls");
    let (owner_node, other) = if owner == nodes[0].id {
        (&nodes[0], &nodes[1])
    } else {
        (&nodes[1], &nodes[0])
    };
    // The registry advertises https, and a request to the other node is
    // passed to the owner over TLS verified against --tls-ca.
    let (_, room, _) = other.get("/v1/rooms/tls");
    let url = room["owner"]["control_url"]
        .as_str()
        .expect("a control_url");
    assert!(url.starts_with("https://127.0.0.1:"), "{room}");
    let cert = DtlsCert::generate().expect("a certificate");
    let reply = common::webrtc::send_to_with(
        &other.base,
        Some(test_ca().ca_pem.as_bytes()),
        "POST",
        "/whip/tls",
        Some(&token_with(TEST_SECRET, "tls", &[Grant::Publish])),
        Some("application/sdp"),
        &with_fingerprint(WHIP_OFFER, &cert),
    );
    assert_eq!(reply.status, 201, "{}", reply.text);
    assert_eq!(reply.header("x-sfu-served-by"), owner);
    let _publisher = connect(&read_answer(&reply.text), WHIP_UFRAG, &cert);
    let (_, room, _) = owner_node.get("/v1/rooms/tls");
    assert_eq!(
        room["endpoints"].as_u64().unwrap_or(0) + room["pending"].as_u64().unwrap_or(0),
        1,
        "{room}"
    );
    assert_eq!(other.metric("sfu_tls_enabled"), 1.0);
}
