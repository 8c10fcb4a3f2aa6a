//! Several nodes (`--nodes`), rejoining after a node failure (`--rejoin`)
//! and killing a node at a known instant (`--kill-pid`, `--kill-at`).
//!
//! Each peer's current endpoint is a `Link`: the endpoint as last created
//! (`Joined`: node, media address, the node's key, consumers) behind
//! a mutex, and a generation counter bumped after every swap. The sender
//! and the receive threads keep the generation they last saw (`Seen`) and
//! compare it with one atomic load per unit (sender) or per socket visit
//! (receivers); only when it changed do they lock the link and rebuild
//! their state for the peer (a new destination, new SRTP contexts, new
//! consumers), so the per-packet paths stay allocation- and lock-free.
//!
//! The monitor thread (`lg-health`) asks every node's `/healthz` every
//! 100 ms; a node that cannot be reached is down. When a node goes down,
//! every peer whose endpoint is on it is flagged, and the rejoin threads
//! (`lg-rejoin-N`, each owning a share of the peers) create its endpoint
//! again with the same request (role, tracks and SSRCs, keys, remote
//! address, subscription) through the other nodes in turn, one attempt per
//! peer every 100 ms, until one answers 201; the answer is swapped into
//! the peer's link.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::api::{Consumer, ControlClient, Endpoint, EndpointRequest, Subscribe, Track};
use super::plan::Role;
use sfu_core::srtp::Profile;

/// Time between two health checks of every node, and between two
/// attempts of one peer's rejoin.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Parses `--nodes`: comma-separated control API base URLs (`http://` or
/// `https://`), trailing slashes dropped, at least one, no duplicates.
pub fn parse_nodes(s: &str) -> Result<Vec<String>, String> {
    let mut nodes: Vec<String> = Vec::new();
    for part in s.split(',') {
        let url = part.trim().trim_end_matches('/');
        if url.is_empty() {
            return Err(format!("{s:?}: an empty node URL"));
        }
        let Some(host) = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
        else {
            return Err(format!("{url:?} is not an http:// or https:// URL"));
        };
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        if nodes.iter().any(|n| n == url) {
            return Err(format!("{url:?} is listed twice"));
        }
        nodes.push(url.to_owned());
    }
    Ok(nodes)
}

/// The node a rejoin's attempt number `attempt` of `peer` goes to: the
/// nodes other than `failed` that are not known to be down (all others if
/// every one is), in turn, starting at an offset by peer so that peers
/// spread over the survivors.
pub fn rejoin_target(
    nodes: usize,
    failed: usize,
    down: &[bool],
    peer: usize,
    attempt: usize,
) -> Option<usize> {
    let others: Vec<usize> = (0..nodes).filter(|&n| n != failed).collect();
    let up: Vec<usize> = others
        .iter()
        .copied()
        .filter(|&n| !down.get(n).copied().unwrap_or(false))
        .collect();
    let pool = if up.is_empty() { &others } else { &up };
    if pool.is_empty() {
        return None;
    }
    Some(pool[(peer + attempt) % pool.len()])
}

/// The 50th and 99th percentiles and the largest of `ns`, in ms (the
/// element at `floor(len × q)`); `None` when empty.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median, ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile, ms.
    pub p99_ms: Option<f64>,
    /// Largest, ms.
    pub max_ms: Option<f64>,
}

impl Percentiles {
    /// Of these durations, ns.
    pub fn of(mut ns: Vec<u64>) -> Self {
        ns.sort_unstable();
        let q = |q: f64| {
            (!ns.is_empty()).then(|| {
                let i = ((ns.len() as f64 * q) as usize).min(ns.len() - 1);
                ns[i] as f64 / 1e6
            })
        };
        Self {
            p50_ms: q(0.5),
            p99_ms: q(0.99),
            max_ms: q(1.0),
        }
    }
}

/// What a peer asks for when it creates its endpoint, kept to ask again.
#[derive(Debug, Clone)]
pub(super) struct JoinSpec {
    pub room: String,
    pub role: Role,
    pub master: Vec<u8>,
    pub tracks: Vec<Track>,
    pub remote: Option<SocketAddr>,
    pub subscribe: SubscribeSpec,
    pub rtx_payload_types: Option<(u8, u8)>,
    pub identity: Option<String>,
    pub audio_level_extension: Option<u8>,
}

/// An owned [`Subscribe`].
#[derive(Debug, Clone)]
pub(super) enum SubscribeSpec {
    Omit,
    All,
    Explicit(Vec<u32>, Vec<u32>),
    Slots(u16, u16),
}

impl JoinSpec {
    /// The API request.
    pub(super) fn request(&self, profile: Profile) -> EndpointRequest<'_> {
        EndpointRequest {
            role: self.role,
            profile,
            master: &self.master,
            tracks: &self.tracks,
            remote: self.remote,
            subscribe: match &self.subscribe {
                SubscribeSpec::Omit => Subscribe::Omit,
                SubscribeSpec::All => Subscribe::All,
                SubscribeSpec::Explicit(v, a) => Subscribe::Explicit(v, a),
                SubscribeSpec::Slots(v, a) => Subscribe::Slots(*v, *a),
            },
            rtx_payload_types: self.rtx_payload_types,
            identity: self.identity.as_deref(),
            audio_level_extension: self.audio_level_extension,
        }
    }
}

/// The control APIs of the nodes (`--nodes`, or `--control` alone) and
/// their node ids.
pub(super) struct Nodes {
    pub clients: Vec<ControlClient>,
    /// Each node's `node_id` (`GET /v1/load`), empty if it gave none.
    pub ids: Vec<String>,
    next: AtomicUsize,
}

impl Nodes {
    pub(super) fn new(clients: Vec<ControlClient>, ids: Vec<String>) -> Self {
        Self {
            clients,
            ids,
            next: AtomicUsize::new(0),
        }
    }

    /// The next node in turn (round robin).
    pub(super) fn next(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len()
    }

    /// The node that holds an endpoint created through node `asked`: the
    /// one `X-Sfu-Served-By` names if it is listed, else `asked`.
    pub(super) fn holder(&self, asked: usize, served_by: Option<&str>) -> usize {
        served_by
            .and_then(|id| self.ids.iter().position(|n| !n.is_empty() && n == id))
            .unwrap_or(asked)
    }

    /// Node `n`'s URL.
    pub(super) fn url(&self, n: usize) -> &str {
        self.clients.get(n).map_or("?", ControlClient::base)
    }
}

/// A peer's endpoint as last created.
#[derive(Debug, Clone)]
pub(super) struct Joined {
    /// Index of the node that holds it (in `--nodes`).
    pub node: usize,
    pub media: SocketAddr,
    /// Key || salt the node protects towards the peer with.
    pub node_master: Vec<u8>,
    pub consumers: Vec<Consumer>,
}

impl Joined {
    pub(super) fn new(node: usize, e: Endpoint) -> Self {
        Self {
            node,
            media: e.media,
            node_master: e.node_master,
            consumers: e.consumers,
        }
    }
}

/// One peer's current endpoint and its rejoin bookkeeping.
#[derive(Debug)]
pub(super) struct Link {
    generation: AtomicU64,
    current: Mutex<Joined>,
    /// Its node went down and it has not rejoined yet.
    pending: AtomicBool,
    /// When its node was seen down (ns since the origin; 0: never).
    failed_ns: AtomicU64,
    /// When its last rejoin was answered 201 (0: never).
    rejoined_ns: AtomicU64,
    /// Endpoints created again.
    rejoins: AtomicU32,
    /// First media packet after the last rejoin (receivers; 0: none).
    back_ns: AtomicU64,
    /// The receive thread took the rejoin in (its counts moved to the
    /// rejoined side).
    picked_up: AtomicBool,
}

/// Every peer's [`Link`].
#[derive(Debug)]
pub(super) struct Links {
    links: Box<[Link]>,
}

impl Links {
    pub(super) fn new(joined: Vec<Joined>) -> Self {
        Self {
            links: joined
                .into_iter()
                .map(|j| Link {
                    generation: AtomicU64::new(0),
                    current: Mutex::new(j),
                    pending: AtomicBool::new(false),
                    failed_ns: AtomicU64::new(0),
                    rejoined_ns: AtomicU64::new(0),
                    rejoins: AtomicU32::new(0),
                    back_ns: AtomicU64::new(0),
                    picked_up: AtomicBool::new(false),
                })
                .collect(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.links.len()
    }

    /// Peer `p`'s generation: 0 for the setup's endpoint, +1 per rejoin.
    #[inline]
    pub(super) fn generation(&self, p: usize) -> u64 {
        self.links
            .get(p)
            .map_or(0, |l| l.generation.load(Ordering::Acquire))
    }

    /// Peer `p`'s current endpoint, locked.
    pub(super) fn current(&self, p: usize) -> MutexGuard<'_, Joined> {
        self.links[p]
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces peer `p`'s endpoint with a new one created at `now_ns`.
    pub(super) fn swap(&self, p: usize, joined: Joined, now_ns: u64) {
        let link = &self.links[p];
        *self.current(p) = joined;
        link.back_ns.store(0, Ordering::Relaxed);
        link.rejoined_ns.store(now_ns.max(1), Ordering::Relaxed);
        link.rejoins.fetch_add(1, Ordering::Relaxed);
        link.pending.store(false, Ordering::Relaxed);
        // Release: whoever sees the new generation sees the new endpoint
        // (it also takes the lock).
        link.generation.fetch_add(1, Ordering::Release);
    }

    /// Flags every peer on node `n` for a rejoin; returns how many.
    pub(super) fn node_down(&self, n: usize, now_ns: u64) -> usize {
        let mut flagged = 0;
        for (p, link) in self.links.iter().enumerate() {
            if self.current(p).node == n && !link.pending.swap(true, Ordering::Relaxed) {
                link.failed_ns.store(now_ns.max(1), Ordering::Relaxed);
                flagged += 1;
            }
        }
        flagged
    }

    pub(super) fn pending(&self, p: usize) -> bool {
        self.links[p].pending.load(Ordering::Relaxed)
    }

    /// A receive thread saw the first media packet after peer `p`'s rejoin.
    #[inline]
    pub(super) fn back(&self, p: usize, now_ns: u64) {
        if let Some(l) = self.links.get(p) {
            let _ =
                l.back_ns
                    .compare_exchange(0, now_ns.max(1), Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    pub(super) fn set_picked_up(&self, p: usize) {
        if let Some(l) = self.links.get(p) {
            l.picked_up.store(true, Ordering::Relaxed);
        }
    }

    pub(super) fn picked_up(&self, p: usize) -> bool {
        self.links
            .get(p)
            .is_some_and(|l| l.picked_up.load(Ordering::Relaxed))
    }

    /// Peer `p`'s (failed, rejoined, back) times, ns (0: never), and its
    /// rejoins.
    pub(super) fn times(&self, p: usize) -> (u64, u64, u64, u32) {
        let l = &self.links[p];
        (
            l.failed_ns.load(Ordering::Relaxed),
            l.rejoined_ns.load(Ordering::Relaxed),
            l.back_ns.load(Ordering::Relaxed),
            l.rejoins.load(Ordering::Relaxed),
        )
    }
}

/// A reader's last seen generation of one peer's link.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Seen(u64);

impl Seen {
    /// The peer's endpoint, locked, if it changed since the last call.
    #[inline]
    pub(super) fn changed<'a>(
        &mut self,
        links: Option<&'a Links>,
        p: usize,
    ) -> Option<MutexGuard<'a, Joined>> {
        let links = links?;
        let g = links.generation(p);
        if g == self.0 {
            return None;
        }
        self.0 = g;
        Some(links.current(p))
    }
}

/// Counters of the monitor and the rejoin threads.
#[derive(Debug, Default)]
pub(super) struct Stats {
    pub attempts: AtomicU64,
    pub failures: AtomicU64,
    /// Per node: when it was first seen down, ns since the origin (0:
    /// never).
    pub down_ns: Vec<AtomicU64>,
    /// When the load generator sent SIGKILL, ns since the origin (0: not
    /// yet).
    pub kill_ns: AtomicU64,
    /// How long the `kill -9` command ran, ns.
    pub kill_took_ns: AtomicU64,
    /// Why `kill -9` failed.
    pub kill_error: Mutex<Option<String>>,
}

impl Stats {
    pub(super) fn new(nodes: usize) -> Self {
        Self {
            down_ns: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            ..Self::default()
        }
    }
}

pub(super) struct MonitorConfig<'a> {
    pub nodes: &'a Nodes,
    /// The peers to flag for a rejoin when their node goes down
    /// (`--rejoin`).
    pub links: Option<&'a Links>,
    pub stats: &'a Stats,
    /// Node down/up flags, shared with the rejoin threads.
    pub down: &'a [AtomicBool],
    pub origin: Instant,
    pub stop: &'a AtomicBool,
}

/// Checks every node's `/healthz` every [`CHECK_INTERVAL`] until `stop`.
pub(super) fn run_monitor(cfg: MonitorConfig<'_>) {
    let agent = health_agent();
    let mut next = Instant::now();
    while !cfg.stop.load(Ordering::Relaxed) {
        for (n, client) in cfg.nodes.clients.iter().enumerate() {
            let up = client.healthz(&agent).is_ok();
            let was_down = cfg.down[n].swap(!up, Ordering::Relaxed);
            if !up && !was_down {
                let now = cfg.origin.elapsed().as_nanos() as u64;
                let _ = cfg.stats.down_ns[n].compare_exchange(
                    0,
                    now.max(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                let flagged = cfg.links.map_or(0, |l| l.node_down(n, now));
                eprintln!(
                    "sfu-loadgen: t={:.3}s node {} is down; {flagged} endpoints to rejoin",
                    now as f64 / 1e9,
                    client.base()
                );
            } else if up && was_down {
                eprintln!("sfu-loadgen: node {} answers again", client.base());
            }
        }
        next += CHECK_INTERVAL;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
}

/// An agent for health checks: a node that does not connect within
/// 300 ms, or answer within 1 s, is down.
fn health_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_millis(300)))
        .timeout_global(Some(Duration::from_secs(1)))
        .build()
        .into()
}

pub(super) struct RejoinConfig<'a> {
    pub nodes: &'a Nodes,
    pub links: &'a Links,
    pub specs: &'a [JoinSpec],
    pub profile: Profile,
    pub stats: &'a Stats,
    pub down: &'a [AtomicBool],
    pub origin: Instant,
    pub stop: &'a AtomicBool,
    /// This thread's peers.
    pub peers: Vec<usize>,
}

/// Rejoins this thread's flagged peers until `stop`: one attempt per peer
/// every [`CHECK_INTERVAL`], through the other nodes in turn.
pub(super) fn run_rejoiner(cfg: RejoinConfig<'_>) {
    // Per peer: attempts so far in this rejoin, next attempt time.
    let mut attempts = vec![0usize; cfg.peers.len()];
    let mut due = vec![Instant::now(); cfg.peers.len()];
    while !cfg.stop.load(Ordering::Relaxed) {
        let mut any = false;
        for (i, &p) in cfg.peers.iter().enumerate() {
            if !cfg.links.pending(p) {
                attempts[i] = 0;
                continue;
            }
            any = true;
            if Instant::now() < due[i] {
                continue;
            }
            due[i] = Instant::now() + CHECK_INTERVAL;
            let failed = cfg.links.current(p).node;
            let down: Vec<bool> = cfg.down.iter().map(|d| d.load(Ordering::Relaxed)).collect();
            let Some(n) = rejoin_target(cfg.nodes.clients.len(), failed, &down, p, attempts[i])
            else {
                continue;
            };
            attempts[i] += 1;
            cfg.stats.attempts.fetch_add(1, Ordering::Relaxed);
            let spec = &cfg.specs[p];
            match cfg.nodes.clients[n].create_endpoint(&spec.room, &spec.request(cfg.profile)) {
                Ok(e) => {
                    let holder = cfg.nodes.holder(n, e.served_by.as_deref());
                    let now = cfg.origin.elapsed().as_nanos() as u64;
                    cfg.links.swap(p, Joined::new(holder, e), now);
                }
                Err(e) => {
                    if cfg.stats.failures.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!(
                            "sfu-loadgen: rejoin of peer {p} through {}: {e:#}",
                            cfg.nodes.url(n)
                        );
                    }
                }
            }
        }
        std::thread::sleep(if any {
            Duration::from_millis(5)
        } else {
            Duration::from_millis(20)
        });
    }
}

/// Runs `kill -9 pid` at `at` after `origin` (unless `stop` first) and
/// records the instant just before in `stats` (the signal lands while
/// `kill` runs, about a millisecond later).
pub(super) fn run_killer(
    pid: u32,
    at: Duration,
    origin: Instant,
    stop: &AtomicBool,
    stats: &Stats,
) {
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let now = origin.elapsed();
        if now >= at {
            break;
        }
        std::thread::sleep((at - now).min(Duration::from_millis(20)));
    }
    let before = origin.elapsed().as_nanos() as u64;
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
    let took_ms = (origin.elapsed().as_nanos() as u64).saturating_sub(before) as f64 / 1e6;
    match status {
        Ok(s) if s.success() => {
            stats.kill_ns.store(before.max(1), Ordering::Relaxed);
            stats
                .kill_took_ns
                .store((took_ms * 1e6) as u64, Ordering::Relaxed);
            eprintln!(
                "sfu-loadgen: t={:.3}s kill -9 {pid} (took {took_ms:.1} ms)",
                before as f64 / 1e9
            );
        }
        Ok(s) => {
            *lock(&stats.kill_error) = Some(format!("kill -9 {pid}: {s}"));
            eprintln!("sfu-loadgen: kill -9 {pid} failed: {s}");
        }
        Err(e) => {
            *lock(&stats.kill_error) = Some(format!("kill -9 {pid}: {e}"));
            eprintln!("sfu-loadgen: kill -9 {pid} failed: {e}");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One node that went down during the run.
#[derive(Debug, Clone, Serialize)]
pub struct NodeDown {
    /// Its control API URL.
    pub node: String,
    /// When the monitor first failed to reach it, s after the start.
    pub down_s: f64,
    /// That, ms after the kill (`null` without `--kill-pid`).
    pub after_kill_ms: Option<f64>,
}

/// One rejoined subscriber.
#[derive(Debug, Clone, Serialize)]
pub struct SubscriberFailover {
    /// Peer index.
    pub peer: usize,
    /// Endpoints it created again.
    pub rejoins: u32,
    /// From the reference instant to its last rejoin's 201, ms.
    pub rejoined_ms: f64,
    /// From the reference instant to its first media packet from the new
    /// node, ms (`null`: never).
    pub back_ms: Option<f64>,
}

/// Failover figures (`--rejoin`, `--kill-pid`), `null` without either.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FailoverReport {
    /// The nodes (`--nodes`).
    pub nodes: Vec<String>,
    /// `--kill-pid`.
    pub kill_pid: Option<u32>,
    /// When SIGKILL was sent, s after the start (`null`: not sent): the
    /// instant `kill -9` was started, the reference of the times below.
    pub kill_s: Option<f64>,
    /// How long the `kill -9` command took, ms (the signal lands within
    /// it, so the times below may be up to this much too long).
    pub kill_command_ms: Option<f64>,
    /// Why `kill -9` failed, if it did.
    pub kill_error: Option<String>,
    /// What the times are measured from: `kill` (the SIGKILL instant) or
    /// `down` (when the monitor first saw the peer's node down).
    pub reference: &'static str,
    /// Nodes seen down.
    pub down: Vec<NodeDown>,
    /// Endpoints created again (201).
    pub rejoins: u64,
    /// Rejoin attempts (endpoint creations asked).
    pub rejoin_attempts: u64,
    /// Rejoin attempts not answered 201 (503 while the registry entry
    /// lives, 409 in a placement race, transport errors).
    pub rejoin_failures: u64,
    /// Publishers that rejoined.
    pub publishers_rejoined: usize,
    /// Subscribers that rejoined.
    pub subscribers_rejoined: usize,
    /// Peers flagged whose rejoin never got a 201.
    pub never_rejoined: usize,
    /// From the reference instant to the 201 of each rejoined peer.
    pub rejoin: Percentiles,
    /// From the reference instant to each rejoined subscriber's first
    /// media packet from its new node.
    pub back: Percentiles,
    /// Rejoined subscribers whose media came back.
    pub subscribers_back: usize,
    /// Rejoined subscribers (or flagged ones) that never got media again.
    pub subscribers_never_back: usize,
    /// Per rejoined subscriber.
    pub subscribers: Vec<SubscriberFailover>,
    /// Packets the rejoined subscribers missed in the failover: expected
    /// by what was sent but outside the span of every consumer's sequence
    /// numbers, before the kill and after the rejoin (see the module doc,
    /// "Expected packets"). Not in `loss_ratio`.
    pub missed_packets: u64,
    /// The rejoined subscribers' expectation outside the failover (their
    /// consumers' sequence number spans), included in
    /// `expected_rx_packets`.
    pub expected_outside: u64,
    /// Their counted packets.
    pub counted_outside: u64,
    /// `1 − counted_outside / expected_outside`: their loss outside the
    /// failover.
    pub loss_ratio_outside: f64,
    /// Datagrams from a node a subscriber had left (not counted).
    pub stale_packets: u64,
    /// Consumers that appeared after a rejoin beyond those its answer
    /// listed (publishers that rejoined later); not `unannounced_ssrcs`.
    pub late_consumers: u64,
}

impl FailoverReport {
    /// Peer `peer`'s time to media back, ms, if it is a rejoined
    /// subscriber whose media came back.
    pub fn back_ms_of(&self, peer: usize) -> Option<f64> {
        self.subscribers
            .iter()
            .find(|s| s.peer == peer)
            .and_then(|s| s.back_ms)
    }
}

impl std::fmt::Display for FailoverReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}"));
        let kill = match (self.kill_s, self.kill_pid) {
            (Some(t), Some(pid)) => format!("kill -9 {pid} at {t:.3} s"),
            (None, Some(pid)) => format!("kill -9 {pid} not sent"),
            _ => "no kill".to_owned(),
        };
        let down: Vec<String> = self
            .down
            .iter()
            .map(|d| match d.after_kill_ms {
                Some(ms) => format!("{} down +{ms:.0} ms", d.node),
                None => format!("{} down at {:.3} s", d.node, d.down_s),
            })
            .collect();
        write!(
            f,
            "failover: {kill}; {}; rejoined {} publishers + {} subscribers ({} attempts, {} refused, {} never) in p50 {} max {} ms; \
             media back at {} of {} subscribers from the {}: p50 {} p99 {} max {} ms ({} never); \
             missed {} packets in the failover, loss outside it {:.4}% ({} of {}); {} stale",
            if down.is_empty() {
                "no node down".to_owned()
            } else {
                down.join(", ")
            },
            self.publishers_rejoined,
            self.subscribers_rejoined,
            self.rejoin_attempts,
            self.rejoin_failures,
            self.never_rejoined,
            ms(self.rejoin.p50_ms),
            ms(self.rejoin.max_ms),
            self.subscribers_back,
            self.subscribers_back + self.subscribers_never_back,
            self.reference,
            ms(self.back.p50_ms),
            ms(self.back.p99_ms),
            ms(self.back.max_ms),
            self.subscribers_never_back,
            self.missed_packets,
            self.loss_ratio_outside * 100.0,
            self.expected_outside.saturating_sub(self.counted_outside),
            self.expected_outside,
            self.stale_packets,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_lists_parse() {
        assert_eq!(
            parse_nodes("http://127.0.0.1:7881, http://127.0.0.1:7882/").expect("valid"),
            vec!["http://127.0.0.1:7881", "http://127.0.0.1:7882"]
        );
        assert_eq!(
            parse_nodes("https://a.example").expect("valid"),
            vec!["https://a.example"]
        );
        for bad in [
            "",
            "http://a,,http://b",
            "127.0.0.1:7881",
            "http://",
            "http://a,http://a/",
        ] {
            assert!(parse_nodes(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rejoins_go_to_the_other_nodes_in_turn() {
        let up = [false; 3];
        // Node 0 failed: peer 0 tries 1, 2, 1, ...; peer 1 starts at 2.
        let seq: Vec<_> = (0..4).map(|a| rejoin_target(3, 0, &up, 0, a)).collect();
        assert_eq!(seq, [Some(1), Some(2), Some(1), Some(2)]);
        assert_eq!(rejoin_target(3, 0, &up, 1, 0), Some(2));
        // A node known down is skipped while another is up.
        let down = [true, false, true];
        assert_eq!(rejoin_target(3, 0, &down, 0, 0), Some(1));
        assert_eq!(rejoin_target(3, 0, &down, 0, 1), Some(1));
        // All others down: still tried in turn.
        let all = [true, true, true];
        assert_eq!(rejoin_target(3, 1, &all, 0, 1), Some(2));
        // A single node has nowhere to go.
        assert_eq!(rejoin_target(1, 0, &[true], 0, 0), None);
    }

    #[test]
    fn percentiles_of_durations() {
        let p = Percentiles::of(vec![5_000_000, 1_000_000, 3_000_000, 2_000_000]);
        assert_eq!(p.p50_ms, Some(3.0));
        assert_eq!((p.p99_ms, p.max_ms), (Some(5.0), Some(5.0)));
        let p = Percentiles::of((1..=100).map(|i| i * 1_000_000).collect());
        assert_eq!(
            (p.p50_ms, p.p99_ms, p.max_ms),
            (Some(51.0), Some(100.0), Some(100.0))
        );
        assert_eq!(Percentiles::of(Vec::new()), Percentiles::default());
    }

    fn joined(node: usize, port: u16) -> Joined {
        Joined {
            node,
            media: SocketAddr::from(([127, 0, 0, 1], port)),
            node_master: vec![port as u8; 4],
            consumers: Vec::new(),
        }
    }

    #[test]
    fn a_swap_is_seen_once_by_each_reader() {
        let links = Links::new(vec![joined(0, 1000), joined(1, 2000), joined(0, 3000)]);
        let (mut sender, mut receiver) = (Seen::default(), Seen::default());
        assert!(sender.changed(Some(&links), 0).is_none());
        assert!(sender.changed(None, 0).is_none());
        // Node 0 goes down: peers 0 and 2 are flagged, once.
        assert_eq!(links.node_down(0, 5), 2);
        assert_eq!(links.node_down(0, 6), 0);
        assert!(links.pending(0) && !links.pending(1) && links.pending(2));
        links.swap(0, joined(1, 4000), 9);
        assert!(!links.pending(0));
        assert_eq!(links.generation(0), 1);
        let got = sender.changed(Some(&links), 0).expect("changed");
        assert_eq!((got.node, got.media.port()), (1, 4000));
        drop(got);
        assert!(sender.changed(Some(&links), 0).is_none(), "seen once");
        assert_eq!(
            receiver
                .changed(Some(&links), 0)
                .expect("changed")
                .node_master,
            vec![4000u16 as u8; 4]
        );
        // Back is recorded once per rejoin.
        links.back(0, 20);
        links.back(0, 30);
        assert_eq!(links.times(0), (5, 9, 20, 1));
        links.swap(0, joined(2, 5000), 40);
        assert_eq!(links.times(0), (5, 40, 0, 2));
        assert_eq!(links.times(1), (0, 0, 0, 0));
    }

    #[test]
    fn the_holder_is_the_node_that_served() {
        let client = |port: u16| {
            ControlClient::new(
                &format!("http://127.0.0.1:{port}"),
                b"secret",
                Duration::from_secs(60),
            )
        };
        let nodes = Nodes::new(
            vec![client(1), client(2), client(3)],
            vec!["n1".into(), "n2".into(), String::new()],
        );
        assert_eq!(nodes.holder(0, None), 0);
        assert_eq!(nodes.holder(0, Some("n2")), 1);
        assert_eq!(nodes.holder(2, Some("elsewhere")), 2);
        assert_eq!(nodes.holder(1, Some("")), 1);
        assert_eq!(
            (nodes.next(), nodes.next(), nodes.next(), nodes.next()),
            (0, 1, 2, 0)
        );
        assert_eq!(nodes.url(1), "http://127.0.0.1:2");
    }
}
