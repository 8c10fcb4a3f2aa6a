//! Many nodes, one service: the node registry, room placement, request
//! forwarding to a room's owner, failover and Redis outages.
//!
//! # Design
//! With no Redis URL ([`crate::config::ClusterConfig::redis`]) the node is
//! a cluster of one: every room is local and nothing here talks to
//! anything. With one, the cluster's state lives in Redis ([`store`]):
//!
//! * **Registry.** Every [`ClusterConfig::heartbeat_ms`] the node writes its
//!   [`NodeEntry`] (id, `serving`/`draining`, control URL, media addresses,
//!   per-worker rooms and endpoints, capacity, load) with a TTL of
//!   [`ClusterConfig::node_ttl_ms`]. A node whose entry expired is dead; a
//!   peer's liveness is read from Redis when it matters (before passing a
//!   request to it), never from a copy older than one heartbeat.
//! * **Owners.** A room is owned by one node, recorded as `room:NAME` →
//!   node id. Every change is a compare-and-set in a Lua script: a claim
//!   succeeds only if nobody owns the room, a takeover only if the owner
//!   is the dead node named and its entry is gone. Two nodes racing for a
//!   room both run the script; Redis runs one after the other and the
//!   second sees the first's owner.
//! * **Routing** ([`route_requests`], a middleware after the token check).
//!   A request naming a room (`/v1/rooms/{room}...`, `/whip/{room}...`,
//!   `/whep/{room}...`, and `POST /v1/rooms` by its body) is served here
//!   when this node has the room or owns it; passed to the owner when a
//!   live peer owns it ([`proxy`]: its answer comes back as it is, its SDP
//!   naming the owner's media address, so a browser behind a load balancer
//!   never follows a redirect); and when nobody (alive) owns it and the
//!   request creates the room, placed: two random choices among serving
//!   nodes below [`ClusterConfig::stress_percent`] of their capacity, the
//!   rooms this node placed recently counted on top of what the registry
//!   shows (a burst does not pile onto one node); this node claims it for
//!   itself, or passes the request to the chosen node, which claims it. A
//!   passed request carries [`proxy::FORWARDED`], signed with the API
//!   secret ([`verify_forwarded`] checks it before the session rate limit);
//!   it is passed on at most once more, to the owner when another node
//!   claimed the room meanwhile.
//! * **Failover.** Each heartbeat the node reads the registry. For each
//!   dead node it reads the rooms that node owned; the survivor that
//!   rendezvous hashing picks for a room (or any survivor, once the room
//!   has been orphaned for [`TAKEOVER_GRACE`]) takes it over, creates it
//!   locally and publishes `room_moved` (its event stream and the Redis
//!   channel `{NAME}:events`). Participants that lost media re-POST to any
//!   node and land on the new owner; a re-POST that arrives before the
//!   survivors moved places the room itself.
//! * **Relays** ([`relay`]). A room whose origin can take no more
//!   subscribers on its own workers ([`crate::state::shard`]) continues on
//!   relay nodes: the origin passes a new subscriber's request to a relay
//!   node, which keeps a replica of the room fed over an SRTP trunk from
//!   the origin. A request for an endpoint a relay serves is passed to the
//!   relay from any node.
//! * **Drain.** A draining node ([`AppState::draining`]) registers as
//!   `draining`; placement skips it and a request creating a room there is
//!   passed to another node (503 `draining` when none is left). Its rooms
//!   keep serving and accepting joins.
//! * **Redis outage.** A failed or slow (over [`store::COMMAND_TIMEOUT`])
//!   command marks Redis down (`sfu_cluster_redis_up 0`,
//!   `sfu_cluster_redis_errors_total`): requests are then served here,
//!   new rooms placed locally; media never waits on Redis (the workers do
//!   not know it exists). When Redis answers again, every local room is
//!   claimed again; one that another node claimed meanwhile is a conflict
//!   (`sfu_cluster_conflicts_total`, a `room_moved` event from this node to
//!   the owner so the signaling service can move its participants).
//!
//! # Threads and panics
//! One tokio task ([`Cluster::run`]) does the heartbeat, the registry read,
//! the reconciliation of owned rooms and failover; the middleware runs on
//! the request's task. Room creation for a takeover runs on the blocking
//! pool, like every mutation. Nothing here panics on what Redis or a peer
//! answers: an unreadable registry entry is skipped, counted and logged; a
//! failed command is an outage; a peer that does not answer is a 503
//! `owner_unreachable` with `Retry-After: 1`.

pub mod proxy;
pub mod relay;
pub mod store;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::hash::{Hash as _, Hasher as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::config::ClusterConfig;
use crate::error::{ApiError, MAX_BODY_BYTES};
use crate::events::NodeEvent;
use crate::handler::ApiState;
use crate::metrics::header;
use crate::state::AppState;
pub use store::{NodeEntry, NodeState, Registry, Store};

/// A room orphaned by a dead node this long is taken over by any survivor,
/// not only by the one rendezvous hashing picked (which may be dead too).
pub const TAKEOVER_GRACE: Duration = Duration::from_secs(1);

/// How many nodes may pass one request on: the node it reached, and the
/// node that node placed the room on when another claimed it meanwhile
/// (two nodes that placed one room on each other at once each pass their
/// request to the other, and the one that lost its claim passes it back).
const MAX_HOPS: usize = 2;

/// A claim this recent is not released for want of a local room: the
/// request that claimed it is still creating the room.
const CLAIM_GRACE: Duration = Duration::from_secs(5);

/// A counter family for `/metrics`: name, help, (labels, value) samples.
type CounterFamily<'a> = (&'a str, &'a str, &'a [(&'a str, &'a AtomicU64)]);

/// A per-node gauge for `/metrics`: name, help, value of an entry.
type NodeFamily = (&'static str, &'static str, fn(&NodeEntry) -> String);

/// Where a request for a room is served.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// Here.
    Local,
    /// By this peer (passed on with [`proxy::Proxy::forward`]).
    Peer(Box<NodeEntry>),
}

/// The cluster as this node takes part in it.
#[derive(Debug)]
pub struct Cluster {
    me: String,
    control_url: String,
    state: Arc<AppState>,
    config: ClusterConfig,
    store: Option<Store>,
    proxy: proxy::Proxy,
    signer: proxy::Signer,
    /// The last registry read, and when.
    view: RwLock<(Registry, Option<Instant>)>,
    /// Rooms this node placed on each node lately (not yet in its entry).
    recent: Mutex<HashMap<String, VecDeque<Instant>>>,
    /// Rooms whose ownership by this node Redis confirmed, with when the
    /// claim was made.
    owned: Mutex<HashMap<String, Instant>>,
    /// Rooms found owned by another node after an outage (reported once).
    conflicts: Mutex<HashSet<String>>,
    /// When each dead node was first seen dead.
    dead_since: Mutex<HashMap<String, Instant>>,
    redis_up: AtomicBool,
    /// Rooms relayed here, and as an origin the relays of its rooms.
    relays: relay::Relays,
    /// The API secret: tokens for requests to peers (trunks).
    secret: Vec<u8>,
    /// Whether the owned rooms must be claimed again (start, after an
    /// outage).
    resync: AtomicBool,
    counters: Counters,
}

/// What `/metrics` counts for the cluster.
#[derive(Debug, Default)]
struct Counters {
    redis_errors: AtomicU64,
    outages: AtomicU64,
    placed_local: AtomicU64,
    placed_remote: AtomicU64,
    forwarded_ok: AtomicU64,
    forwarded_failed: AtomicU64,
    takeovers: AtomicU64,
    conflicts: AtomicU64,
    heartbeats: AtomicU64,
    trunks_opened: AtomicU64,
    trunks_closed: AtomicU64,
    relayed: AtomicU64,
    relay_fallbacks: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Cluster {
    /// This node's part in the cluster `config` (a cluster of one without
    /// a Redis URL); `control_url` is where peers reach its API,
    /// `peer_tls` verifies peers reached over `https://`, and with
    /// `https_only` (a node serving TLS) `http://` peers are refused.
    pub fn new(
        state: Arc<AppState>,
        config: ClusterConfig,
        control_url: String,
        secret: &[u8],
        peer_tls: rustls::ClientConfig,
        https_only: bool,
    ) -> Result<Self, store::StoreError> {
        let store = match &config.redis {
            Some(url) => Some(Store::new(url, &config.name)?),
            None => None,
        };
        Ok(Self {
            me: state.node_id().to_owned(),
            control_url,
            state,
            config,
            store,
            proxy: proxy::Proxy::new(peer_tls, https_only),
            signer: proxy::Signer::new(secret),
            view: RwLock::new((Registry::default(), None)),
            recent: Mutex::new(HashMap::new()),
            owned: Mutex::new(HashMap::new()),
            conflicts: Mutex::new(HashSet::new()),
            dead_since: Mutex::new(HashMap::new()),
            redis_up: AtomicBool::new(false),
            relays: relay::Relays::default(),
            secret: secret.to_vec(),
            resync: AtomicBool::new(true),
            counters: Counters::default(),
        })
    }

    /// Whether nodes share rooms through Redis.
    pub fn enabled(&self) -> bool {
        self.store.is_some()
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.me
    }

    fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.config.heartbeat_ms)
    }

    /// This node's registry entry now.
    pub fn entry(&self) -> NodeEntry {
        let (rooms, endpoints) = self.state.totals();
        let limits = self.state.limits();
        let workers = self.state.worker_loads();
        let capacity_rooms = limits
            .rooms
            .min(limits.rooms_per_worker.saturating_mul(workers.len()));
        let capacity_endpoints = limits.endpoints_per_worker.saturating_mul(workers.len());
        let share = |n: usize, cap: usize| if cap == 0 { 1.0 } else { n as f64 / cap as f64 };
        NodeEntry {
            id: self.me.clone(),
            state: if self.state.draining() {
                NodeState::Draining
            } else {
                NodeState::Serving
            },
            control_url: self.control_url.clone(),
            media: (0..workers.len())
                .filter_map(|i| self.state.media_addr(i))
                .map(|a| a.to_string())
                .collect(),
            rooms,
            endpoints,
            capacity_rooms,
            capacity_endpoints,
            workers,
            load: share(rooms, capacity_rooms).max(share(endpoints, capacity_endpoints)),
            at_ms: unix_ms(),
        }
    }

    /// Counts a failed Redis command and marks Redis down.
    fn failed(&self, what: &str, e: &store::StoreError) {
        self.counters.redis_errors.fetch_add(1, Ordering::Relaxed);
        if self.redis_up.swap(false, Ordering::Relaxed) {
            self.counters.outages.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, what, "redis is unreachable: serving alone until it returns");
        }
        self.resync.store(true, Ordering::Relaxed);
    }

    /// Marks Redis up after a command that succeeded.
    fn answered(&self) {
        if !self.redis_up.swap(true, Ordering::Relaxed) {
            tracing::info!("redis answers: cluster state shared again");
        }
    }

    /// The registry, read now if the last read is older than a heartbeat.
    async fn registry(&self) -> Option<Registry> {
        {
            let view = self.view.read().unwrap_or_else(PoisonError::into_inner);
            if view.1.is_some_and(|at| at.elapsed() < self.heartbeat()) {
                return Some(view.0.clone());
            }
        }
        self.read_registry().await
    }

    async fn read_registry(&self) -> Option<Registry> {
        let store = self.store.as_ref()?;
        match store.registry().await {
            Ok(r) => {
                self.answered();
                *self.view.write().unwrap_or_else(PoisonError::into_inner) =
                    (r.clone(), Some(Instant::now()));
                Some(r)
            }
            Err(e) => {
                self.failed("registry", &e);
                None
            }
        }
    }

    /// Rooms placed on `node` lately by this node.
    fn recent_count(&self, node: &str) -> usize {
        let window = self.heartbeat() * 3;
        let mut recent = lock(&self.recent);
        let Some(q) = recent.get_mut(node) else {
            return 0;
        };
        while q.front().is_some_and(|t| t.elapsed() > window) {
            q.pop_front();
        }
        q.len()
    }

    /// A node's load for placement: its entry's, with the rooms this node
    /// placed on it lately added.
    fn placement_load(&self, e: &NodeEntry) -> f64 {
        let recent = self.recent_count(&e.id);
        let rooms = if e.capacity_rooms == 0 {
            1.0
        } else {
            (e.rooms + recent) as f64 / e.capacity_rooms as f64
        };
        rooms.max(e.load)
    }

    /// The node a new room goes to: two random choices among the serving
    /// nodes under the stress threshold (all serving nodes if none is),
    /// the less loaded one; `None` if no node serves.
    fn choose(&self, registry: &Registry) -> Option<NodeEntry> {
        let draining_me = self.state.draining();
        let serving: Vec<(&NodeEntry, f64)> = registry
            .live
            .iter()
            .filter(|e| e.state == NodeState::Serving && !(draining_me && e.id == self.me))
            .map(|e| (e, self.placement_load(e)))
            .collect();
        let stress = f64::from(self.config.stress_percent) / 100.0;
        let calm: Vec<(&NodeEntry, f64)> = serving
            .iter()
            .copied()
            .filter(|(_, load)| *load < stress)
            .collect();
        let pool = if calm.is_empty() { serving } else { calm };
        let pick = match pool.len() {
            0 => return None,
            1 => pool[0],
            n => {
                let a = rand::random_range(0..n);
                let mut b = rand::random_range(0..n - 1);
                if b >= a {
                    b += 1;
                }
                let (x, y) = (pool[a], pool[b]);
                if y.1 < x.1 { y } else { x }
            }
        };
        lock(&self.recent)
            .entry(pick.0.id.clone())
            .or_default()
            .push_back(Instant::now());
        Some(pick.0.clone())
    }

    /// Records a room this node owns now; whether it was not recorded yet
    /// (a takeover script answers "yours" to every caller once the room is
    /// this node's: only the first announces the move).
    fn own(&self, room: &str) -> bool {
        lock(&self.owned)
            .insert(room.to_owned(), Instant::now())
            .is_none()
    }

    /// Where a request for `room` is served; `create`: the request creates
    /// the room if it does not exist; `via`: the nodes that passed it here,
    /// in order (a new room is then claimed here, where the first chose
    /// to place it; the request is passed on at most once more: to the
    /// owner, when another node claimed the room meanwhile, even the node
    /// that passed it here).
    pub async fn route(&self, room: &str, create: bool, via: &[String]) -> Result<Route, ApiError> {
        let forwarded = !via.is_empty();
        // A relay's replica is not the room: its owner serves requests.
        if self.state.has_room(room) && !self.is_relay(room) {
            return Ok(Route::Local);
        }
        let Some(store) = &self.store else {
            if create && self.state.draining() {
                return Err(ApiError::Draining);
            }
            return Ok(Route::Local);
        };
        for _ in 0..3 {
            let owner = match store.owner(room).await {
                Ok(o) => o,
                Err(e) => {
                    self.failed("owner", &e);
                    return self.alone(create);
                }
            };
            if let Some(o) = &owner {
                if *o == self.me {
                    self.own(room);
                    return Ok(Route::Local);
                }
                match store.node(o).await {
                    Ok(Some(entry)) => {
                        self.answered();
                        if via.len() >= MAX_HOPS {
                            return Err(ApiError::RoomMoved(room.to_owned()));
                        }
                        return Ok(Route::Peer(Box::new(entry)));
                    }
                    // Its owner is dead.
                    Ok(None) => {}
                    Err(e) => {
                        self.failed("node", &e);
                        return self.alone(create);
                    }
                }
            }
            // Nobody alive owns it: a request that creates it places it,
            // here by a claim (or a takeover from the dead owner), or on
            // the peer chosen.
            if !create {
                return Ok(Route::Local);
            }
            if let Some(peer) = self.place(room, forwarded).await? {
                return Ok(Route::Peer(Box::new(peer)));
            }
            let result = match &owner {
                Some(dead) => store.take_over(room, &self.me, dead).await,
                None => store.claim(room, &self.me).await.map(Some),
            };
            match result {
                Ok(Some(now)) if now == self.me => {
                    self.adopt_relay(room).await;
                    if self.own(room)
                        && let Some(dead) = &owner
                    {
                        self.counters.takeovers.fetch_add(1, Ordering::Relaxed);
                        self.moved(room, dead).await;
                    }
                    return Ok(Route::Local);
                }
                // Another node was faster: look again.
                Ok(_) => {}
                Err(e) => {
                    self.failed("claim", &e);
                    return self.alone(create);
                }
            }
        }
        Err(ApiError::RoomMoved(room.to_owned()))
    }

    /// Where a new room goes: `None` for here, else the peer chosen.
    async fn place(&self, room: &str, forwarded: bool) -> Result<Option<NodeEntry>, ApiError> {
        if forwarded {
            // The peer that passed it chose this node.
            self.counters.placed_local.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        let Some(registry) = self.registry().await else {
            return self.alone(true).map(|_| None);
        };
        match self.choose(&registry) {
            Some(e) if e.id == self.me => {
                self.counters.placed_local.fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
            Some(e) => {
                tracing::debug!(room, node = %e.id, "room placed on a peer");
                self.counters.placed_remote.fetch_add(1, Ordering::Relaxed);
                Ok(Some(e))
            }
            // Not even this node (its entry may not be written yet).
            None if !self.state.draining() => Ok(None),
            None => Err(ApiError::Draining),
        }
    }

    /// Redis cannot tell: serve here (a new room is claimed when Redis
    /// returns), unless draining refuses a new room.
    fn alone(&self, create: bool) -> Result<Route, ApiError> {
        if create && self.state.draining() {
            return Err(ApiError::Draining);
        }
        Ok(Route::Local)
    }

    /// Publishes that `room` moved from `from` to this node.
    async fn moved(&self, room: &str, from: &str) {
        self.publish_moved(room, from, &self.me).await;
    }

    async fn publish_moved(&self, room: &str, from: &str, to: &str) {
        tracing::info!(room, from, to, "room moved");
        self.state.publish(NodeEvent::RoomMoved {
            room: room.to_owned(),
            from: from.to_owned(),
            to: to.to_owned(),
        });
        if let Some(store) = &self.store {
            let json = json!({"type": "room_moved", "room": room, "from": from, "to": to});
            if let Err(e) = store.publish(json.to_string()).await {
                self.failed("publish", &e);
            }
        }
    }

    /// Heartbeats, reads the registry, reconciles owned rooms and takes
    /// dead nodes' rooms over, every heartbeat, until dropped.
    pub async fn run(self: Arc<Self>) {
        if self.store.is_none() {
            return;
        }
        let mut tick = tokio::time::interval(self.heartbeat());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.tick().await;
        }
    }

    /// One round of [`Cluster::run`].
    pub async fn tick(&self) {
        let Some(store) = &self.store else {
            return;
        };
        let ttl = Duration::from_millis(self.config.node_ttl_ms);
        if let Err(e) = store.register(&self.entry(), ttl).await {
            self.failed("heartbeat", &e);
            return;
        }
        self.answered();
        self.counters.heartbeats.fetch_add(1, Ordering::Relaxed);
        let Some(registry) = self.read_registry().await else {
            return;
        };
        self.reconcile(store).await;
        self.fail_over(store, &registry).await;
    }

    /// Claims the local rooms not known to be owned, releases owned rooms
    /// no longer here; after an outage (or at start) checks every one.
    async fn reconcile(&self, store: &Store) {
        let local: HashSet<String> = self
            .state
            .rooms()
            .into_iter()
            .map(|r| r.room)
            .filter(|r| !self.is_relay(r))
            .collect();
        if self.resync.swap(false, Ordering::Relaxed) {
            // Rooms an earlier run of this node (same id) owned, or rooms
            // claimed during the outage by requests that failed.
            match store.rooms_of(&self.me).await {
                Ok(rooms) => {
                    let owned = lock(&self.owned).clone();
                    for r in rooms {
                        let fresh = owned.get(&r).is_some_and(|t| t.elapsed() < CLAIM_GRACE);
                        if !local.contains(&r)
                            && !fresh
                            && let Err(e) = store.release(&r, &self.me).await
                        {
                            self.failed("release", &e);
                            return;
                        }
                    }
                }
                Err(e) => {
                    self.failed("rooms", &e);
                    return;
                }
            }
            lock(&self.owned).retain(|_, t| t.elapsed() < CLAIM_GRACE);
        }
        let (unclaimed, gone): (Vec<String>, Vec<String>) = {
            let owned = lock(&self.owned);
            let conflicts = lock(&self.conflicts);
            (
                local
                    .iter()
                    .filter(|r| !owned.contains_key(*r) && !conflicts.contains(*r))
                    .cloned()
                    .collect(),
                owned
                    .iter()
                    .filter(|(r, t)| !local.contains(*r) && t.elapsed() >= CLAIM_GRACE)
                    .map(|(r, _)| r.clone())
                    .collect(),
            )
        };
        for room in unclaimed {
            match store.claim(&room, &self.me).await {
                Ok(owner) if owner == self.me => {
                    self.own(&room);
                }
                Ok(owner) => {
                    // Placed here during an outage while another node
                    // placed it too: the older claim wins.
                    self.counters.conflicts.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        room,
                        owner,
                        "room owned by another node: its participants here should move"
                    );
                    lock(&self.conflicts).insert(room.clone());
                    self.publish_moved(&room, &self.me, &owner).await;
                }
                Err(e) => {
                    self.failed("claim", &e);
                    return;
                }
            }
        }
        for room in gone {
            if let Err(e) = store.release(&room, &self.me).await {
                self.failed("release", &e);
                return;
            }
            lock(&self.owned).remove(&room);
        }
        lock(&self.conflicts).retain(|r| local.contains(r));
    }

    /// Takes over the rooms of dead nodes this node should take.
    async fn fail_over(&self, store: &Store, registry: &Registry) {
        let now = Instant::now();
        let since: HashMap<String, Instant> = {
            let mut dead = lock(&self.dead_since);
            dead.retain(|id, _| registry.dead.contains(id));
            for id in &registry.dead {
                dead.entry(id.clone()).or_insert(now);
            }
            dead.clone()
        };
        if self.state.draining() {
            return;
        }
        let serving: Vec<&str> = registry
            .live
            .iter()
            .filter(|e| e.state == NodeState::Serving)
            .map(|e| e.id.as_str())
            .collect();
        for dead in &registry.dead {
            let rooms = match store.rooms_of(dead).await {
                Ok(r) => r,
                Err(e) => {
                    self.failed("rooms", &e);
                    return;
                }
            };
            let late = since
                .get(dead)
                .is_some_and(|t| now.saturating_duration_since(*t) >= TAKEOVER_GRACE);
            for room in rooms {
                if !late && rendezvous(&room, &serving) != Some(self.me.as_str()) {
                    continue;
                }
                match store.take_over(&room, &self.me, dead).await {
                    // A client's request may have taken it over first.
                    Ok(Some(owner)) if owner == self.me && self.own(&room) => {
                        self.counters.takeovers.fetch_add(1, Ordering::Relaxed);
                        self.recreate(&room).await;
                        self.moved(&room, dead).await;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        self.failed("take over", &e);
                        return;
                    }
                }
            }
            if let Err(e) = store.forget(dead).await {
                self.failed("forget", &e);
                return;
            }
        }
    }

    /// Creates a room taken over (empty: its participants rejoin); a
    /// room relayed here becomes this node's with its subscribers.
    async fn recreate(&self, room: &str) {
        if self.adopt_relay(room).await {
            return;
        }
        let state = Arc::clone(&self.state);
        let name = room.to_owned();
        let created = tokio::task::spawn_blocking(move || state.create_room(&name, None)).await;
        match created {
            Ok(Ok(_) | Err(ApiError::RoomExists(_))) => {}
            Ok(Err(e)) => tracing::warn!(room, error = %e, "cannot create a room taken over"),
            Err(e) => tracing::warn!(room, error = %e, "room creation task failed"),
        }
    }

    /// Removes this node's entry (a clean stop): its rooms are taken over
    /// at the survivors' next heartbeat instead of after the TTL.
    pub async fn leave(&self) {
        if let Some(store) = &self.store
            && let Err(e) = store.deregister(&self.me).await
        {
            tracing::warn!(error = %e, "cannot remove the registry entry");
        }
    }

    /// Passes the request `parts` with `body` to `peer`.
    async fn forward(
        &self,
        peer: &NodeEntry,
        parts: axum::http::request::Parts,
        body: axum::body::Bytes,
        room: &str,
        via: &[String],
    ) -> Response {
        let mut chain = via.to_vec();
        chain.push(self.me.clone());
        let path = parts.uri.path_and_query().map_or("", |p| p.as_str());
        let forwarded = self.signer.sign(
            &chain.join(","),
            crate::auth::unix_now(),
            &parts.method,
            path,
        );
        match self
            .proxy
            .forward(&peer.control_url, &forwarded, &peer.id, parts, body)
            .await
        {
            Ok(answer) => {
                self.counters.forwarded_ok.fetch_add(1, Ordering::Relaxed);
                answer
            }
            Err(e) => {
                self.counters
                    .forwarded_failed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(node = %peer.id, error = %e, "cannot pass a request to the room's owner");
                ApiError::OwnerUnreachable {
                    room: room.to_owned(),
                    owner: peer.id.clone(),
                    why: e.to_string(),
                }
                .into_response()
            }
        }
    }

    /// `/v1/load`'s `cluster` object: this node's view.
    pub fn status(&self) -> Value {
        let (registry, read) = self
            .view
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let owned: Vec<String> = {
            let mut v: Vec<String> = lock(&self.owned).keys().cloned().collect();
            v.sort();
            v
        };
        json!({
            "enabled": self.enabled(),
            "node_id": self.me,
            "control_url": self.control_url,
            "redis_up": self.enabled() && self.redis_up.load(Ordering::Relaxed),
            "registry_age_ms": read.map(|t| t.elapsed().as_millis() as u64),
            "nodes": registry.live,
            "dead": registry.dead,
            "unreadable_entries": registry.unreadable,
            "owned_rooms": owned,
            "relayed_rooms": self.relayed_rooms(),
        })
    }

    /// Appends the `sfu_cluster_*` families.
    pub fn render(&self, out: &mut String) {
        let (registry, _) = self
            .view
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let c = &self.counters;
        let up = u64::from(self.enabled() && self.redis_up.load(Ordering::Relaxed));
        let mut gauge = |name: &str, help: &str, value: String| {
            header(out, name, help, "gauge");
            let _ = writeln!(out, "{name} {value}");
        };
        gauge(
            "sfu_cluster_enabled",
            "1 when the node shares rooms through Redis.",
            u64::from(self.enabled()).to_string(),
        );
        gauge(
            "sfu_cluster_redis_up",
            "1 while the cluster's Redis answers.",
            up.to_string(),
        );
        gauge(
            "sfu_cluster_owned_rooms",
            "Rooms this node owns in the cluster.",
            lock(&self.owned).len().to_string(),
        );
        gauge(
            "sfu_cluster_relayed_rooms",
            "Rooms this node relays for their origin (a replica fed by a cascade trunk).",
            self.relayed_rooms().len().to_string(),
        );
        header(
            out,
            "sfu_cluster_nodes",
            "Nodes in the registry, by state (dead: expired, rooms not all taken over).",
            "gauge",
        );
        let mut by_state: BTreeMap<&str, usize> = [
            ("serving", 0),
            ("draining", 0),
            ("dead", registry.dead.len()),
        ]
        .into();
        for e in &registry.live {
            *by_state.entry(e.state.as_str()).or_default() += 1;
        }
        for (state, n) in by_state {
            let _ = writeln!(out, "sfu_cluster_nodes{{state=\"{state}\"}} {n}");
        }
        // Per node of the registry (a handful: node ids are the label).
        let per_node: [NodeFamily; 3] = [
            (
                "sfu_cluster_node_rooms",
                "Rooms of each live node, as its registry entry says.",
                |e| e.rooms.to_string(),
            ),
            (
                "sfu_cluster_node_endpoints",
                "Endpoints of each live node, as its registry entry says.",
                |e| e.endpoints.to_string(),
            ),
            (
                "sfu_cluster_node_load_ratio",
                "Load of each live node (the larger of its room and endpoint share of its capacity), as placement sees it.",
                |e| format!("{:.4}", e.load),
            ),
        ];
        for (name, help, value) in per_node {
            header(out, name, help, "gauge");
            for e in &registry.live {
                let _ = writeln!(
                    out,
                    "{name}{{node=\"{}\",state=\"{}\"}} {}",
                    crate::metrics::escape(&e.id),
                    e.state.as_str(),
                    value(e)
                );
            }
        }
        let counters: [CounterFamily<'_>; 10] = [
            (
                "sfu_cluster_redis_errors_total",
                "Redis commands that failed or timed out.",
                &[("", &c.redis_errors)],
            ),
            (
                "sfu_cluster_redis_outages_total",
                "Times Redis became unreachable.",
                &[("", &c.outages)],
            ),
            (
                "sfu_cluster_placements_total",
                "New rooms this node placed, by where.",
                &[
                    ("where=\"local\"", &c.placed_local),
                    ("where=\"peer\"", &c.placed_remote),
                ],
            ),
            (
                "sfu_cluster_forwarded_requests_total",
                "Requests passed to a room's owner, by result.",
                &[
                    ("result=\"ok\"", &c.forwarded_ok),
                    ("result=\"failed\"", &c.forwarded_failed),
                ],
            ),
            (
                "sfu_cluster_takeovers_total",
                "Rooms of dead nodes this node took over.",
                &[("", &c.takeovers)],
            ),
            (
                "sfu_cluster_conflicts_total",
                "Rooms placed here during a Redis outage that another node owned.",
                &[("", &c.conflicts)],
            ),
            (
                "sfu_cluster_heartbeats_total",
                "Registry entries written.",
                &[("", &c.heartbeats)],
            ),
            (
                "sfu_cluster_relay_trunks_total",
                "Cascade trunks this node opened and closed as a relay.",
                &[
                    ("event=\"opened\"", &c.trunks_opened),
                    ("event=\"closed\"", &c.trunks_closed),
                ],
            ),
            (
                "sfu_cluster_relayed_subscribers_total",
                "New subscribers this node, as a room's origin, passed to relay nodes.",
                &[("", &c.relayed)],
            ),
            (
                "sfu_cluster_relay_fallbacks_total",
                "New subscribers a relay node refused, served by this node (the origin) instead.",
                &[("", &c.relay_fallbacks)],
            ),
        ];
        for (name, help, samples) in counters {
            header(out, name, help, "counter");
            for (labels, v) in samples {
                let v = v.load(Ordering::Relaxed);
                if labels.is_empty() {
                    let _ = writeln!(out, "{name} {v}");
                } else {
                    let _ = writeln!(out, "{name}{{{labels}}} {v}");
                }
            }
        }
    }
}

/// The registry as a table: one line per node (id, state, age of its
/// entry, rooms, endpoints, load, control URL, media), dead nodes last.
pub fn status_table(registry: &Registry, now_ms: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:<9} {:>7} {:>6} {:>9} {:>6}  {:<28} MEDIA",
        "NODE", "STATE", "AGE_MS", "ROOMS", "ENDPOINTS", "LOAD%", "CONTROL"
    );
    for e in &registry.live {
        let _ = writeln!(
            out,
            "{:<20} {:<9} {:>7} {:>6} {:>9} {:>6.1}  {:<28} {}",
            e.id,
            e.state.as_str(),
            now_ms.saturating_sub(e.at_ms),
            e.rooms,
            e.endpoints,
            e.load * 100.0,
            e.control_url,
            e.media.join(",")
        );
    }
    for id in &registry.dead {
        let _ = writeln!(out, "{id:<20} {:<9}", "dead");
    }
    if registry.unreadable > 0 {
        let _ = writeln!(out, "({} unreadable entries skipped)", registry.unreadable);
    }
    out
}

/// The serving node rendezvous hashing picks for `room` (highest hash of
/// room and node id): every survivor computes the same one.
fn rendezvous<'a>(room: &str, nodes: &[&'a str]) -> Option<&'a str> {
    nodes.iter().copied().max_by_key(|node| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        room.hash(&mut h);
        node.hash(&mut h);
        h.finish()
    })
}

/// The room a request names, and whether it may create it: `POST` of an
/// endpoint or a WHIP/WHEP session (with rooms on demand). `None` for
/// node-wide routes.
fn room_of(method: &Method, path: &str) -> Option<(String, bool)> {
    let rest = path
        .strip_prefix("/v1/rooms/")
        .map(|r| (r, "endpoints"))
        .or_else(|| path.strip_prefix("/whip/").map(|r| (r, "")))
        .or_else(|| path.strip_prefix("/whep/").map(|r| (r, "")));
    let (rest, create_tail) = rest?;
    let (room, tail) = rest.split_once('/').unwrap_or((rest, ""));
    if room.is_empty() {
        return None;
    }
    let room = percent_decode(room)?;
    let create = *method == Method::POST && tail == create_tail;
    Some((room, create))
}

/// `%XX`-decodes a path segment (room names are what axum's `Path` gives
/// handlers); `None` if it is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(v) = u8::from_str_radix(hex, 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The nodes that passed a request here, from a verified
/// [`proxy::FORWARDED`] header ([`verify_forwarded`]).
#[derive(Debug, Clone)]
pub struct ForwardedVia(pub Vec<String>);

/// Middleware (after the token check, before the session rate limit):
/// marks a request whose [`proxy::FORWARDED`] header verifies with
/// [`ForwardedVia`]. Only a header signed by a node counts, so a client
/// cannot choose where its room goes; a forwarded request was rate limited
/// by the node it reached, and is not limited again here (where it would
/// count against that node's address).
pub async fn verify_forwarded(
    State(api): State<ApiState>,
    mut request: Request,
    next: Next,
) -> Response {
    let via = request
        .headers()
        .get(proxy::FORWARDED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let path = request.uri().path_and_query().map_or("", |p| p.as_str());
            api.cluster
                .signer
                .verify(v, crate::auth::unix_now(), request.method(), path)
        });
    if let Some(via) = via {
        request.extensions_mut().insert(ForwardedVia(via));
    }
    next.run(request).await
}

/// Middleware (after the token check): serves a request for a room here,
/// or passes it to the room's owner, or places a new room (see the module
/// doc). `POST /v1/rooms` is routed by the `room` of its JSON body. A
/// request for an endpoint a relay serves is passed to that relay; a new
/// subscriber of a room with [`ClusterConfig::relay_after`] endpoints here
/// is passed to a relay node ([`relay`]).
pub async fn route_requests(State(api): State<ApiState>, request: Request, next: Next) -> Response {
    let cluster = Arc::clone(&api.cluster);
    // A cluster of one serves everything here; only a draining node looks
    // closer (it refuses new rooms).
    if !cluster.enabled() && !api.node.draining() {
        return next.run(request).await;
    }
    let via = request
        .extensions()
        .get::<ForwardedVia>()
        .map(|v| v.0.clone())
        .unwrap_or_default();
    let path = request.uri().path().to_owned();
    // Marks only a node can set: its signature covers the query.
    let query = request.uri().query().unwrap_or("").to_owned();
    let flag = |f: &str| !via.is_empty() && query.split('&').any(|q| q == f);
    let (trunk, relay_here) = (flag("trunk=1"), flag("relay=1"));
    let mut request = request;
    if trunk {
        request.extensions_mut().insert(TrunkRequest);
    }
    let (request, body, room, create) = if path == "/v1/rooms" && request.method() == Method::POST {
        let (parts, body) = request.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
            return ApiError::PayloadTooLarge.into_response();
        };
        let room = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v.get("room").and_then(Value::as_str).map(str::to_owned));
        let request = Request::from_parts(parts, Body::from(bytes.clone()));
        match room.filter(|r| crate::state::validate_room_name(r).is_ok()) {
            Some(room) => (request, Some(bytes), room, true),
            // The handler answers what is wrong with the body.
            None => return next.run(request).await,
        }
    } else {
        match room_of(request.method(), &path)
            .filter(|(room, _)| crate::state::validate_room_name(room).is_ok())
        {
            Some((room, create)) => {
                let create = create && api.node.rooms_on_demand();
                (request, None, room, create)
            }
            None => return next.run(request).await,
        }
    };
    let subscriber_post = *request.method() == Method::POST && subscriber_create(&path);
    if relay_here && subscriber_post {
        // The origin passed a new subscriber here.
        if let Err(e) = cluster.ensure_relay(&room).await {
            tracing::info!(room, error = %e, "cannot relay");
            return e.into_response();
        }
        let answer = next.run(request).await;
        return cluster.record_relayed(&room, answer).await;
    }
    // An endpoint here is served here (a relay's too); one served by a
    // relay is passed there, wherever the request arrived.
    let endpoint = endpoint_of(&path);
    if let Some(e) = &endpoint
        && api.node.has_endpoint(&room, e)
    {
        let leaving = *request.method() == Method::DELETE && cluster.is_relay(&room);
        let answer = next.run(request).await;
        if leaving && answer.status().is_success() && !api.node.has_endpoint(&room, e) {
            cluster.relayed_left(&room, e).await;
        }
        return answer;
    }
    if let Some(endpoint) = endpoint
        && let Some(peer) = cluster.relay_of(&room, &endpoint).await
    {
        let (parts, rest) = request.into_parts();
        let Ok(body) = axum::body::to_bytes(rest, MAX_BODY_BYTES).await else {
            return ApiError::PayloadTooLarge.into_response();
        };
        return cluster.forward(&peer, parts, body, &room, &via).await;
    }
    match cluster.route(&room, create, &via).await {
        Ok(Route::Local) if subscriber_post && !trunk => {
            let Some(peer) = cluster.relay_target(&room).await else {
                return next.run(request).await;
            };
            let (parts, rest) = request.into_parts();
            let Ok(bytes) = axum::body::to_bytes(rest, MAX_BODY_BYTES).await else {
                return ApiError::PayloadTooLarge.into_response();
            };
            if !is_subscriber_body(&path, &bytes) {
                return next
                    .run(Request::from_parts(parts, Body::from(bytes)))
                    .await;
            }
            let Some(relayed) = with_relay_mark(&parts) else {
                return next
                    .run(Request::from_parts(parts, Body::from(bytes)))
                    .await;
            };
            let answer = cluster
                .forward(&peer, relayed, bytes.clone(), &room, &via)
                .await;
            if answer.status().is_success() {
                cluster.relayed_to();
                return answer;
            }
            // The relay could not take it: served here after all.
            cluster
                .counters
                .relay_fallbacks
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(room, node = %peer.id, status = %answer.status(), "relay refused a subscriber; served here");
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Route::Local) => next.run(request).await,
        Ok(Route::Peer(peer)) => {
            let (parts, rest) = request.into_parts();
            // `POST /v1/rooms` was read already, to find its room.
            let body = match body {
                Some(b) => b,
                None => match axum::body::to_bytes(rest, MAX_BODY_BYTES).await {
                    Ok(b) => b,
                    Err(_) => return ApiError::PayloadTooLarge.into_response(),
                },
            };
            cluster.forward(&peer, parts, body, &room, &via).await
        }
        Err(e) => e.into_response(),
    }
}

/// Marks a request of a relay node for its trunk (`?trunk=1` in a path a
/// node signed): the trunk joins the room's main worker.
#[derive(Debug, Clone, Copy)]
pub struct TrunkRequest;

/// Whether `path` creates a subscriber when POSTed: WHEP, or an endpoint
/// of the JSON API (whose body says its role, [`is_subscriber_body`]).
fn subscriber_create(path: &str) -> bool {
    let tail = |p: &str| p.split_once('/').map(|(_, t)| t.to_owned());
    match path.strip_prefix("/v1/rooms/").and_then(tail) {
        Some(t) => t == "endpoints",
        None => path
            .strip_prefix("/whep/")
            .is_some_and(|r| !r.is_empty() && !r.contains('/')),
    }
}

/// Whether a subscriber-creating request's body asks for a subscriber
/// only (WHEP always does).
fn is_subscriber_body(path: &str, body: &[u8]) -> bool {
    if path.starts_with("/whep/") {
        return true;
    }
    serde_json::from_slice::<Value>(body)
        .ok()
        .is_some_and(|v| v.get("role").and_then(Value::as_str) == Some("subscribe"))
}

/// The endpoint a path names: `/v1/rooms/{room}/endpoints/{id}...` or
/// `/whep/{room}/{id}...`.
fn endpoint_of(path: &str) -> Option<String> {
    let id = if let Some(rest) = path.strip_prefix("/v1/rooms/") {
        let (_, rest) = rest.split_once('/')?;
        rest.strip_prefix("endpoints/")?.split('/').next()?
    } else {
        let rest = path.strip_prefix("/whep/")?;
        rest.split_once('/')?.1.split('/').next()?
    };
    (!id.is_empty()).then(|| id.to_owned())
}

/// `parts` for a relay: their path with `relay=1` in the query.
fn with_relay_mark(parts: &axum::http::request::Parts) -> Option<axum::http::request::Parts> {
    let path = parts.uri.path();
    let uri = match parts.uri.query() {
        Some(q) => format!("{path}?{q}&relay=1"),
        None => format!("{path}?relay=1"),
    };
    let mut request = Request::builder()
        .method(parts.method.clone())
        .uri(uri)
        .version(parts.version)
        .body(())
        .ok()?;
    *request.headers_mut() = parts.headers.clone();
    Some(request.into_parts().0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_name_their_room_and_whether_they_create_it() {
        let post = Method::POST;
        let get = Method::GET;
        assert_eq!(room_of(&post, "/whip/r1"), Some(("r1".into(), true)));
        assert_eq!(room_of(&post, "/whep/r1"), Some(("r1".into(), true)));
        assert_eq!(
            room_of(&Method::DELETE, "/whip/r1/abc"),
            Some(("r1".into(), false))
        );
        assert_eq!(
            room_of(&post, "/whep/r1/abc/layer"),
            Some(("r1".into(), false))
        );
        assert_eq!(
            room_of(&post, "/v1/rooms/r%20x/endpoints"),
            Some(("r x".into(), true))
        );
        assert_eq!(room_of(&get, "/v1/rooms/r1"), Some(("r1".into(), false)));
        assert_eq!(
            room_of(&Method::PUT, "/v1/rooms/r1/endpoints/e/layers"),
            Some(("r1".into(), false))
        );
        assert_eq!(room_of(&get, "/v1/rooms"), None);
        assert_eq!(room_of(&get, "/v1/load"), None);
        assert_eq!(room_of(&get, "/whip/"), None);
    }

    #[test]
    fn rendezvous_is_the_same_on_every_node_and_spreads_rooms() {
        let nodes = ["a", "b", "c"];
        let mut count: HashMap<&str, usize> = HashMap::new();
        for i in 0..300 {
            let room = format!("room-{i}");
            let pick = rendezvous(&room, &nodes).expect("a node");
            let mut reversed = nodes;
            reversed.reverse();
            assert_eq!(rendezvous(&room, &reversed), Some(pick), "order-free");
            *count.entry(pick).or_default() += 1;
        }
        for n in nodes {
            assert!(count[n] > 60, "{count:?}");
        }
        assert_eq!(rendezvous("r", &[]), None);
    }
}
