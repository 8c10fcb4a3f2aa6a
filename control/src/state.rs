//! What the control plane knows about the node, and the operations that
//! change it.
//!
//! [`AppState`] mirrors the routers' rooms and endpoints in a [`Model`] so
//! that every request is validated before a command reaches a worker, and
//! so that listing never has to ask the workers. A mutation runs on a
//! blocking thread (it waits for the worker's answer; an idle worker
//! answers in microseconds) and is serialised **per room**: it holds its
//! room's lock (one of [`ROOM_LOCKS`] stripes, chosen by hashing the room
//! name) from validation to the model update, so the changes of one room
//! apply in order while other rooms go on in parallel. What several rooms
//! share is reserved atomically under the model's write lock before the
//! worker is asked, and released if it refuses: an endpoint's SSRCs and
//! remote address. Room creation also takes a node-wide lock (room count
//! and placement), held only across the worker's `CreateRoom`. The model
//! itself sits behind a separate `RwLock` taken only for short reads and
//! writes, so `GET` requests never wait for a worker.
//!
//! WebRTC endpoints (WHIP publishers, WHEP subscribers; see [`crate::whip`])
//! are created by [`AppState::create_webrtc_endpoint`], which also hands the
//! caller the room's producers with their codecs ([`Producer`]). Endpoints
//! created through the JSON API do not declare codecs: their video tracks
//! are assumed to be VP8 and their audio tracks Opus.
//!
//! Simulcast layers a WHIP publisher announced by `a=rid` only become
//! producers on the worker when their first packet binds them to an SSRC;
//! the model does not follow those bindings. It records each such
//! endpoint's rids with their negotiated codecs instead, and
//! [`AppState::create_webrtc_endpoint`], when the room has such an
//! endpoint, asks the room's worker for its producers
//! ([`Command::Producers`]) to add the layers bound so far.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::RngCore as _;
use sfu_core::dtls::DtlsCert;
use sfu_core::router::{
    BandwidthInfo, Command, ConsumerInfo, Counter, EndpointConfig, EndpointId, MediaKind, Outcome,
    ProducerInfo, RemovalReason, Role, RoomId, RoomTraffic, RtxPayloadTypes, Subscription,
    TrackConfig, WebrtcTransport,
};
use sfu_core::sdp::CodecChoice;
pub use sfu_core::sdp::assumed_codec;
use sfu_core::srtp::Profile;

pub mod shard;

use crate::error::ApiError;
use crate::events::{Events, NodeEvent, RoomEndReason};
use crate::limits::Limits;
use crate::whep_events::WhepEvents;
use packet_path::{RequestError, WorkerHandle, WorkerStats};

/// The answer to one subscription change of a batch
/// ([`AppState::set_subscriptions`]): the endpoint's consumers, or why not.
pub type ChangeResult = Result<Vec<ConsumerInfo>, ApiError>;

/// Lock stripes serialising room mutations: rooms hashing to the same
/// stripe wait for each other, others run in parallel.
pub const ROOM_LOCKS: usize = 64;

/// Longest room name accepted.
pub const MAX_ROOM_NAME: usize = 128;

/// Shared state of the HTTP API.
#[derive(Debug)]
pub struct AppState {
    node_id: String,
    started: Instant,
    advertised_ip: IpAddr,
    workers: Vec<WorkerHandle>,
    /// The node's DTLS certificate (its fingerprint goes into SDP answers).
    dtls_cert: DtlsCert,
    /// Serialise the mutations of one room (by hash of its name) from
    /// validation to model update.
    room_locks: Box<[Mutex<()>]>,
    /// Serialises room creation (room count and placement).
    placement: Mutex<()>,
    model: RwLock<Model>,
    rates: RwLock<Rates>,
    /// Rooms' media traffic, sampled with the rates.
    room_traffic: Mutex<RoomTrafficSample>,
    http_requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// Requests refused by a limit, by the limit's name.
    limit_refusals: Mutex<BTreeMap<String, u64>>,
    /// How rooms come and go.
    rooms_policy: RoomPolicy,
    /// Empty rooms and since when they have been empty, as the sampler
    /// last saw them ([`AppState::close_empty_rooms`]).
    empty_since: Mutex<HashMap<String, Instant>>,
    draining: AtomicBool,
    /// A room's endpoints on its main worker before new subscribers go to
    /// shards on other workers ([`shard`]); 0: never.
    spread_after: AtomicUsize,
    /// Node events for `GET /v1/events` and webhooks.
    events: Events,
    /// The WHEP sessions' event streams ([`crate::whep_events`]).
    whep_events: WhepEvents,
}

/// How rooms are created and closed besides `POST`/`DELETE /v1/rooms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomPolicy {
    /// Creating an endpoint or a WHIP/WHEP session in a room that does not
    /// exist creates it (the caller has checked that the token grants it).
    pub on_demand: bool,
    /// An empty room is closed after this long; `None` keeps empty rooms.
    pub empty_timeout: Option<Duration>,
}

/// The control plane's view of rooms and endpoints.
#[derive(Debug, Default)]
pub struct Model {
    rooms: BTreeMap<String, RoomEntry>,
    endpoints: HashMap<String, EndpointEntry>,
    /// Endpoint names by (worker, router id): names a router's event.
    names: HashMap<(usize, EndpointId), String>,
    /// Track and RTCP SSRCs of every endpoint on the node.
    ssrcs: HashSet<u32>,
    /// Remote addresses given in the API, per worker.
    remotes: HashSet<(usize, SocketAddr)>,
    /// (rooms, endpoints) per worker.
    load: Vec<(usize, usize)>,
    /// The node's limits (placement skips full workers).
    limits: Limits,
    next_room: u64,
    /// Creation counter of endpoints: orders a room's producers.
    next_seq: u64,
    /// WHIP/WHEP sessions created and ended.
    sessions: SessionCounts,
}

/// How an endpoint was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Session {
    /// `POST /v1/rooms/{room}/endpoints` (SDES-like keys in JSON).
    Api,
    /// `POST /whip/{room}`: a WebRTC publisher.
    Whip,
    /// `POST /whep/{room}`: a WebRTC subscriber.
    Whep,
}

impl Session {
    /// `"api"`, `"whip"` or `"whep"`, as in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Whip => "whip",
            Self::Whep => "whep",
        }
    }
}

/// `"publish"`, `"subscribe"` or `"both"`, as in events.
fn role_str(role: Role) -> &'static str {
    match role {
        Role::Publish => "publish",
        Role::Subscribe => "subscribe",
        Role::Both => "both",
    }
}

/// WHIP and WHEP sessions created and ended (deleted by their resource URL,
/// the endpoint API or with their room) since start-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionCounts {
    /// WHIP sessions created.
    pub whip_created: u64,
    /// WHIP sessions ended.
    pub whip_ended: u64,
    /// WHEP sessions created.
    pub whep_created: u64,
    /// WHEP sessions ended.
    pub whep_ended: u64,
}

/// A published track as WHEP sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Producer {
    /// The endpoint publishing it (its public id is this number in 16 hex
    /// digits): WHEP groups a publisher's audio and video in one `msid`
    /// stream so the browser syncs them.
    pub publisher: EndpointId,
    /// Audio or video.
    pub kind: MediaKind,
    /// The SSRC it is published with.
    pub ssrc: u32,
    /// Its codec: negotiated for WHIP publishers, assumed (VP8 for video,
    /// Opus for audio) for endpoints of the JSON API.
    pub codec: CodecChoice,
    /// Whether it sends redundant audio (RED, RFC 2198): negotiated by
    /// WHIP, declared by `red_payload_type` in the JSON API. WHEP then
    /// offers RED to viewers that ask for it.
    pub red: bool,
}

/// What [`AppState::create_webrtc_endpoint`] tells its planner about the room.
#[derive(Debug, Clone)]
pub struct RoomContext {
    /// The room's worker media address as advertised: the SDP candidate.
    pub media: SocketAddr,
    /// The room's producers, by endpoint creation order, then track order:
    /// an endpoint's declared tracks, then its simulcast layers bound by
    /// `rid` so far, in the order they were bound.
    pub producers: Vec<Producer>,
}

/// A WebRTC endpoint to create.
#[derive(Debug, Clone)]
pub struct NewWebrtcEndpoint {
    /// [`Session::Whip`] or [`Session::Whep`].
    pub session: Session,
    /// Publish (WHIP) or subscribe (WHEP).
    pub role: Role,
    /// Published tracks with their codecs.
    pub tracks: Vec<(TrackConfig, CodecChoice)>,
    /// The codec negotiated for each simulcast layer announced by `a=rid`
    /// only (the transport's `rid_tracks`), by rid.
    pub rid_codecs: Vec<(String, CodecChoice)>,
    /// What it receives (ignored for publish-only endpoints).
    pub subscription: Subscription,
    /// The RTX payload types it receives retransmissions with.
    pub rtx_payload_types: RtxPayloadTypes,
    /// Its participant ([`crate::auth::participant_id`] of the token's `sub`).
    pub participant: Option<u64>,
    /// The payload type it receives RED audio with, if it negotiated RED.
    pub red_payload_type: Option<u8>,
    /// ICE credentials, DTLS role and fingerprint, payload type overrides.
    pub transport: WebrtcTransport,
}

#[derive(Debug)]
struct RoomEntry {
    id: RoomId,
    worker: usize,
    endpoints: BTreeSet<String>,
    /// Its replicas on other workers ([`shard`]).
    shards: Vec<shard::Shard>,
}

#[derive(Debug)]
struct EndpointEntry {
    id: EndpointId,
    room: String,
    worker: usize,
    ssrcs: Vec<u32>,
    remote: Option<SocketAddr>,
    /// Creation order within the node.
    seq: u64,
    session: Session,
    /// Its participant (the hashed token identity), if any.
    participant: Option<u64>,
    /// Published tracks with their codecs.
    tracks: Vec<Producer>,
    /// Codecs of the simulcast layers it announced by `a=rid` only, by rid;
    /// the worker reports the layers once bound.
    rid_codecs: Vec<(String, CodecChoice)>,
    /// Whether media can flow: always for an API endpoint (keys given);
    /// for a WHIP/WHEP session, once its router reported ICE + DTLS done.
    connected: bool,
}

/// A room as listed by `GET /v1/rooms`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoomSummary {
    /// Its name.
    pub room: String,
    /// The worker it lives on.
    pub worker: usize,
    /// How many endpoints it has.
    pub endpoints: usize,
    /// Of those, WHIP/WHEP sessions whose ICE + DTLS have not completed
    /// (as the router's events tell).
    pub pending: usize,
}

/// A validated `POST /v1/rooms/{room}/endpoints` request.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    /// Publish, subscribe or both.
    pub role: Role,
    /// SRTP profile of both directions.
    pub profile: Profile,
    /// Key || salt the endpoint protects with.
    pub remote_master: Vec<u8>,
    /// Published tracks.
    pub tracks: Vec<TrackConfig>,
    /// Its address, if given.
    pub remote: Option<SocketAddr>,
    /// What it receives.
    pub subscription: Subscription,
    /// SSRC it sends RTCP from, for comedia of receive-only endpoints.
    pub rtcp_ssrc: Option<u32>,
    /// RTX payload types it receives retransmissions with.
    pub rtx_payload_types: RtxPayloadTypes,
    /// Its participant ([`crate::auth::participant_id`] of the token's `sub`).
    pub participant: Option<u64>,
    /// Id of the RFC 6464 audio-level extension in its audio packets.
    pub audio_level_extension: Option<u8>,
    /// Payload type it receives RED audio with (RFC 2198), if any.
    pub red_payload_type: Option<u8>,
    /// The node's key || salt towards it, when the node chose it already
    /// (a cascade trunk's, sent to the origin first); `None`: generated.
    pub local_master: Option<Vec<u8>>,
    /// Whether it must join the room's main worker, never a shard (a
    /// relay node's trunk).
    pub main_worker: bool,
}

/// What `POST /v1/rooms/{room}/endpoints` answers.
#[derive(Debug, Clone)]
pub struct EndpointCreated {
    /// The endpoint's id string.
    pub id: String,
    /// Media address of its worker.
    pub media: SocketAddr,
    /// Profile of both directions.
    pub profile: Profile,
    /// Key || salt the node protects towards the endpoint with.
    pub local_master: Vec<u8>,
    /// Its consumers.
    pub consumers: Vec<ConsumerInfo>,
}

/// Packet and byte rates of one worker, sampled by [`AppState::sample_rates`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WorkerRates {
    /// Received packets per second.
    pub rx_pps: f64,
    /// Sent packets per second.
    pub tx_pps: f64,
    /// Received bits per second.
    pub rx_bps: f64,
    /// Sent bits per second.
    pub tx_bps: f64,
}

#[derive(Debug, Default)]
struct Rates {
    last: Option<(Instant, Vec<WorkerStats>)>,
    rates: Vec<WorkerRates>,
}

/// A room's media rates over the last sampling interval
/// ([`AppState::sample_room_traffic`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RoomRates {
    /// The room.
    pub room: String,
    /// Its endpoints on every worker of the node (trunks included).
    pub endpoints: usize,
    /// RTP packets per second from its publishers (on its main worker).
    pub rx_pps: f64,
    /// Their bits per second.
    pub rx_bps: f64,
    /// SRTP media packets per second to its subscribers (every worker).
    pub tx_pps: f64,
    /// Their bits per second.
    pub tx_bps: f64,
}

/// Each worker's rooms' traffic totals, by (worker, router room id).
type TrafficTotals = HashMap<(usize, RoomId), RoomTraffic>;

/// The last sample of the routers' room traffic and the rates from it.
#[derive(Debug, Default)]
struct RoomTrafficSample {
    last: Option<(Instant, TrafficTotals)>,
    /// Every room, by egress bits per second, highest first.
    rates: Vec<RoomRates>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; if something did, the data is
    // still consistent (every update is a single insert/remove sequence).
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl AppState {
    /// State for a node whose workers are `workers` and whose DTLS
    /// certificate is `dtls_cert` (the one the workers' routers use).
    pub fn new(
        node_id: String,
        advertised_ip: IpAddr,
        workers: Vec<WorkerHandle>,
        dtls_cert: DtlsCert,
        limits: Limits,
        rooms_policy: RoomPolicy,
    ) -> Self {
        let model = Model {
            load: vec![(0, 0); workers.len()],
            limits,
            ..Model::default()
        };
        Self {
            events: Events::new(node_id.clone(), None),
            whep_events: WhepEvents::default(),
            node_id,
            started: Instant::now(),
            advertised_ip,
            workers,
            dtls_cert,
            room_locks: (0..ROOM_LOCKS).map(|_| Mutex::new(())).collect(),
            placement: Mutex::new(()),
            model: RwLock::new(model),
            rates: RwLock::new(Rates::default()),
            room_traffic: Mutex::new(RoomTrafficSample::default()),
            http_requests: Mutex::new(BTreeMap::new()),
            limit_refusals: Mutex::new(BTreeMap::new()),
            rooms_policy,
            empty_since: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            spread_after: AtomicUsize::new(0),
        }
    }

    /// The lock serialising mutations of `room`.
    fn serial(&self, room: &str) -> MutexGuard<'_, ()> {
        use std::hash::{BuildHasher as _, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(room);
        lock(&self.room_locks[(hash % ROOM_LOCKS as u64) as usize])
    }

    /// This state with `events` as its event hub (the one
    /// [`AppState::new`] makes has no webhook).
    pub fn with_events(mut self, events: Events) -> Self {
        self.events = events;
        self
    }

    /// The node's event hub.
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// The WHEP sessions' event streams.
    pub fn whep_events(&self) -> &WhepEvents {
        &self.whep_events
    }

    /// Publishes `participant_left` and ends the endpoint's WHEP event
    /// streams, if it had any.
    fn left(&self, room: &str, endpoint: &str, reason: &str) {
        self.whep_events.end_session(endpoint);
        self.events.publish(NodeEvent::ParticipantLeft {
            room: room.to_owned(),
            endpoint: endpoint.to_owned(),
            reason: reason.into(),
        });
    }

    /// Publishes a node event ([`Events::publish`]): for events the control
    /// plane does not see by itself, such as the routers' reports. Never
    /// blocks on a consumer.
    pub fn publish(&self, event: NodeEvent) {
        self.events.publish(event);
    }

    /// The name of room `id` of `worker`, if the control plane knows it.
    pub fn room_name(&self, worker: usize, id: RoomId) -> Option<String> {
        let model = self.model();
        model
            .rooms
            .iter()
            .find(|(_, r)| r.worker == worker && r.id == id)
            .map(|(name, _)| name.clone())
    }

    /// The room name and the endpoint id string (as the API and events
    /// show them) of the endpoint `id` of worker `worker`, if the control
    /// plane knows it: to name a router's endpoint in a [`NodeEvent`].
    pub fn endpoint_name(&self, worker: usize, id: EndpointId) -> Option<(String, String)> {
        let model = self.model();
        let name = model.names.get(&(worker, id))?;
        let e = model.endpoints.get(name)?;
        Some((e.room.clone(), name.clone()))
    }

    /// Records that the router connected endpoint `id` of `worker` (ICE +
    /// DTLS done); returns its room and name as [`AppState::endpoint_name`].
    pub fn mark_connected(&self, worker: usize, id: EndpointId) -> Option<(String, String)> {
        let mut model = self.model_mut();
        let name = model.names.get(&(worker, id))?.clone();
        let e = model.endpoints.get_mut(&name)?;
        e.connected = true;
        Some((e.room.clone(), name))
    }

    /// The node's name.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Time since the state was created.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The workers.
    pub fn workers(&self) -> &[WorkerHandle] {
        &self.workers
    }

    /// The node's DTLS certificate.
    pub fn dtls_cert(&self) -> &DtlsCert {
        &self.dtls_cert
    }

    /// WHIP/WHEP sessions created and ended so far.
    pub fn session_counts(&self) -> SessionCounts {
        self.model().sessions
    }

    /// Media address of worker `index` as put into API answers.
    pub fn media_addr(&self, index: usize) -> Option<SocketAddr> {
        let local = self.workers.get(index)?.local_addr();
        Some(SocketAddr::new(self.advertised_ip, local.port()))
    }

    /// Marks the node as shutting down: `/healthz` answers 503.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether the node is shutting down.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    fn model(&self) -> std::sync::RwLockReadGuard<'_, Model> {
        self.model.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn model_mut(&self) -> std::sync::RwLockWriteGuard<'_, Model> {
        self.model.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Rooms by name.
    pub fn rooms(&self) -> Vec<RoomSummary> {
        let model = self.model();
        model
            .rooms
            .iter()
            .map(|(name, r)| RoomSummary {
                room: name.clone(),
                worker: r.worker,
                endpoints: r.endpoints.len(),
                pending: r
                    .endpoints
                    .iter()
                    .filter(|e| model.endpoints.get(*e).is_some_and(|e| !e.connected))
                    .count(),
            })
            .collect()
    }

    /// Whether the room is on this node.
    pub fn has_room(&self, name: &str) -> bool {
        self.model().rooms.contains_key(name)
    }

    /// The node's limits.
    pub fn limits(&self) -> Limits {
        self.model().limits
    }

    /// Per worker: rooms, endpoints, and whether it runs.
    pub fn worker_loads(&self) -> Vec<(usize, usize, bool)> {
        let load = self.model().load.clone();
        load.into_iter()
            .zip(&self.workers)
            .map(|((rooms, endpoints), w)| (rooms, endpoints, w.health().is_running()))
            .collect()
    }

    /// Whether a request for a missing room creates it.
    pub fn rooms_on_demand(&self) -> bool {
        self.rooms_policy.on_demand
    }

    /// Total rooms and endpoints known to the control plane.
    pub fn totals(&self) -> (usize, usize) {
        let model = self.model();
        (model.rooms.len(), model.endpoints.len())
    }

    /// Counts one answered HTTP request.
    pub fn count_request(&self, route: String, status: u16) {
        *lock(&self.http_requests)
            .entry((route, status))
            .or_default() += 1;
    }

    /// Counts a request refused by the limit called `limit`.
    pub fn count_limit_refusal(&self, limit: &str) {
        *lock(&self.limit_refusals)
            .entry(limit.to_owned())
            .or_default() += 1;
    }

    /// Requests refused by each limit since start, by limit name.
    pub fn limit_refusals(&self) -> Vec<(String, u64)> {
        lock(&self.limit_refusals)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Answers by (route, status) since start.
    pub fn http_requests(&self) -> Vec<((String, u16), u64)> {
        lock(&self.http_requests)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Takes a stats snapshot of every worker and updates the rates from the
    /// difference to the previous snapshot. Called once a second by the
    /// sampler task.
    pub fn sample_rates(&self) {
        let now = Instant::now();
        let snapshot: Vec<WorkerStats> = self.workers.iter().map(WorkerHandle::stats).collect();
        let mut rates = self.rates.write().unwrap_or_else(PoisonError::into_inner);
        if let Some((then, previous)) = &rates.last {
            let secs = now.duration_since(*then).as_secs_f64();
            if secs > 0.0 {
                let per_s = |new: u64, old: u64| new.saturating_sub(old) as f64 / secs;
                rates.rates = snapshot
                    .iter()
                    .zip(previous)
                    .map(|(new, old)| WorkerRates {
                        rx_pps: per_s(new.get(Counter::RxPackets), old.get(Counter::RxPackets)),
                        tx_pps: per_s(new.get(Counter::TxPackets), old.get(Counter::TxPackets)),
                        rx_bps: 8.0 * per_s(new.get(Counter::RxBytes), old.get(Counter::RxBytes)),
                        tx_bps: 8.0 * per_s(new.get(Counter::TxBytes), old.get(Counter::TxBytes)),
                    })
                    .collect();
            }
        }
        rates.last = Some((now, snapshot));
    }

    /// Asks every worker for its rooms' traffic ([`Command::Traffic`]) and
    /// turns the change since the last call into each room's rates
    /// ([`AppState::top_rooms`]); called once a second by the sampler task.
    /// Blocks on each worker in turn.
    pub fn sample_room_traffic(&self) {
        let now = Instant::now();
        let mut totals = HashMap::new();
        let mut endpoints = HashMap::new();
        for worker in 0..self.workers.len() {
            if let Ok(Outcome::Traffic(rooms)) = self.request(worker, Command::Traffic, None) {
                for (id, n, traffic) in rooms {
                    totals.insert((worker, id), traffic);
                    endpoints.insert((worker, id), n);
                }
            }
        }
        // Each room's parts: its main worker's room, then its shards.
        let parts: Vec<(String, Vec<(usize, RoomId)>)> = {
            let model = self.model.read().unwrap_or_else(PoisonError::into_inner);
            model
                .rooms
                .iter()
                .map(|(name, r)| {
                    let keys = std::iter::once((r.worker, r.id))
                        .chain(r.shards.iter().map(|s| (s.worker, s.id)))
                        .collect();
                    (name.clone(), keys)
                })
                .collect()
        };
        let mut sample = lock(&self.room_traffic);
        if let Some((then, previous)) = &sample.last {
            let secs = now.duration_since(*then).as_secs_f64();
            if secs > 0.0 {
                let mut rates: Vec<RoomRates> = parts
                    .into_iter()
                    .map(|(room, keys)| {
                        let mut r = RoomRates {
                            room,
                            endpoints: 0,
                            rx_pps: 0.0,
                            rx_bps: 0.0,
                            tx_pps: 0.0,
                            tx_bps: 0.0,
                        };
                        for (i, key) in keys.iter().enumerate() {
                            r.endpoints += endpoints.get(key).copied().unwrap_or(0);
                            // A part not in both samples is new (or gone):
                            // it has no rate yet.
                            let (Some(new), Some(old)) = (totals.get(key), previous.get(key))
                            else {
                                continue;
                            };
                            let per_s = |n: u64, o: u64| n.saturating_sub(o) as f64 / secs;
                            r.tx_pps += per_s(new.tx_packets, old.tx_packets);
                            r.tx_bps += 8.0 * per_s(new.tx_bytes, old.tx_bytes);
                            if i == 0 {
                                // Shards receive the main worker's copies.
                                r.rx_pps = per_s(new.rx_packets, old.rx_packets);
                                r.rx_bps = 8.0 * per_s(new.rx_bytes, old.rx_bytes);
                            }
                        }
                        r
                    })
                    .collect();
                rates.sort_by(|a, b| b.tx_bps.total_cmp(&a.tx_bps).then(a.room.cmp(&b.room)));
                sample.rates = rates;
            }
        }
        sample.last = Some((now, totals));
    }

    /// The `n` rooms with the most egress over the last sampling interval,
    /// highest first (empty before the second sample).
    pub fn top_rooms(&self, n: usize) -> Vec<RoomRates> {
        lock(&self.room_traffic)
            .rates
            .iter()
            .take(n)
            .cloned()
            .collect()
    }

    /// The rates of worker `index` over the last sampling interval (zero
    /// before the second sample).
    pub fn rates(&self, index: usize) -> WorkerRates {
        let rates = self.rates.read().unwrap_or_else(PoisonError::into_inner);
        rates.rates.get(index).copied().unwrap_or_default()
    }

    /// Sends `cmd` to worker `worker` and waits for its answer (blocking, up
    /// to the worker's 2 s timeout). On a timeout the worker may still apply
    /// the command later, so `undo` is queued behind it without waiting.
    pub(crate) fn request(
        &self,
        worker: usize,
        cmd: Command,
        undo: Option<Command>,
    ) -> Result<Outcome, ApiError> {
        let handle = self
            .workers
            .get(worker)
            .ok_or_else(|| ApiError::Internal(format!("no worker {worker}")))?;
        match handle.request(cmd) {
            Ok(outcome) => Ok(outcome),
            Err(RequestError::Timeout) => {
                if let Some(undo) = undo {
                    let handle = handle.clone();
                    tracing::warn!(worker, ?undo, "worker timed out; queueing the undo");
                    std::thread::spawn(move || {
                        if let Err(e) = handle.request(undo) {
                            tracing::warn!(worker, error = %e, "undo after timeout failed");
                        }
                    });
                }
                Err(ApiError::WorkerTimeout)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// `POST /v1/rooms`: places the room (on `worker` if given, else on the
    /// least-loaded worker by rooms, then endpoints) and creates it there.
    /// Blocks on the worker.
    pub fn create_room(
        &self,
        name: &str,
        worker: Option<usize>,
    ) -> Result<(usize, SocketAddr), ApiError> {
        validate_room_name(name)?;
        let _serial = self.serial(name);
        let _placement = lock(&self.placement);
        // A dead or stalled worker gets no new room.
        let healthy: Vec<bool> = self
            .workers
            .iter()
            .map(|w| w.health().is_running())
            .collect();
        let (id, worker) = {
            let mut model = self.model_mut();
            if model.rooms.contains_key(name) {
                return Err(ApiError::RoomExists(name.to_owned()));
            }
            if model.rooms.len() >= model.limits.rooms {
                return Err(ApiError::TooMany("rooms per node".into()));
            }
            let worker = model.place(worker, &healthy)?;
            model.next_room += 1;
            (RoomId(model.next_room), worker)
        };
        let media = self
            .media_addr(worker)
            .ok_or_else(|| ApiError::Internal(format!("no worker {worker}")))?;
        self.request(
            worker,
            Command::CreateRoom(id),
            Some(Command::DeleteRoom(id)),
        )
        .map_err(|e| match e {
            ApiError::RoomExists(_) => ApiError::RoomExists(name.to_owned()),
            e => e,
        })?;
        let mut model = self.model_mut();
        model.rooms.insert(
            name.to_owned(),
            RoomEntry {
                id,
                worker,
                endpoints: BTreeSet::new(),
                shards: Vec::new(),
            },
        );
        model.load[worker].0 += 1;
        drop(model);
        self.events.publish(NodeEvent::RoomStarted {
            room: name.to_owned(),
        });
        Ok((worker, media))
    }

    /// Creates `room` if it does not exist and rooms are created on demand
    /// ([`RoomPolicy::on_demand`]); the caller has checked that the
    /// request's token grants that room. Blocks on the worker.
    fn ensure_room(&self, room: &str) -> Result<(), ApiError> {
        if !self.rooms_policy.on_demand || self.model().rooms.contains_key(room) {
            return Ok(());
        }
        match self.create_room(room, None) {
            Ok((worker, _)) => {
                tracing::info!(room, worker, "room created on demand");
                Ok(())
            }
            Err(ApiError::RoomExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Closes the rooms that have had no endpoint for
    /// [`RoomPolicy::empty_timeout`], as seen at successive calls (the
    /// sampler task calls it once a second); returns how many it closed.
    pub fn close_empty_rooms(&self, now: Instant) -> usize {
        let Some(timeout) = self.rooms_policy.empty_timeout else {
            return 0;
        };
        let empty: Vec<String> = self
            .model()
            .rooms
            .iter()
            .filter(|(_, r)| r.endpoints.is_empty())
            .map(|(name, _)| name.clone())
            .collect();
        let expired: Vec<String> = {
            let mut since = lock(&self.empty_since);
            since.retain(|name, _| empty.contains(name));
            empty
                .into_iter()
                .filter(|name| {
                    let first = *since.entry(name.clone()).or_insert(now);
                    now.saturating_duration_since(first) >= timeout
                })
                .collect()
        };
        let mut closed = 0;
        for name in expired {
            // Someone may have joined since: `delete_room_if_empty` checks
            // again under the room's lock and keeps a room that is not.
            if self.delete_room_if_empty(&name).is_ok() {
                lock(&self.empty_since).remove(&name);
                tracing::info!(room = %name, "empty room closed");
                closed += 1;
            }
        }
        closed
    }

    /// `DELETE /v1/rooms/{room}`: deletes the room and its endpoints.
    /// Blocks on the worker.
    pub fn delete_room(&self, name: &str) -> Result<(), ApiError> {
        self.delete_room_of(name, false)
    }

    /// Deletes the room only if it has no endpoint (checked under the
    /// room's lock, so no endpoint joins in between). Blocks on the worker.
    fn delete_room_if_empty(&self, name: &str) -> Result<(), ApiError> {
        self.delete_room_of(name, true)
    }

    fn delete_room_of(&self, name: &str, only_if_empty: bool) -> Result<(), ApiError> {
        let _serial = self.serial(name);
        let (id, worker) = {
            let model = self.model();
            let room = model
                .rooms
                .get(name)
                .ok_or_else(|| ApiError::UnknownRoom(name.to_owned()))?;
            if only_if_empty && !room.endpoints.is_empty() {
                return Err(ApiError::Invalid("the room is not empty".into()));
            }
            (room.id, room.worker)
        };
        match self.request(worker, Command::DeleteRoom(id), None) {
            // Already gone on the worker: the model catches up.
            Ok(_) | Err(ApiError::UnknownRoom(_)) => {}
            Err(e) => return Err(e),
        }
        let shards = self
            .model()
            .rooms
            .get(name)
            .map(Self::shards_of)
            .unwrap_or_default();
        for &(w, shard) in &shards {
            if let Err(e) = self.request(w, Command::DeleteRoom(shard), None) {
                tracing::warn!(room = name, worker = w, error = %e, "cannot delete a shard");
            }
        }
        let mut model = self.model_mut();
        let Some(room) = model.rooms.remove(name) else {
            return Ok(());
        };
        model.load[worker].0 -= 1;
        for (w, _) in shards {
            model.load[w].0 = model.load[w].0.saturating_sub(1);
        }
        for ep in &room.endpoints {
            model.forget_endpoint(ep);
        }
        drop(model);
        for endpoint in room.endpoints {
            self.left(name, &endpoint, "room_deleted");
        }
        self.events.publish(NodeEvent::RoomEnded {
            room: name.to_owned(),
            reason: if only_if_empty {
                RoomEndReason::Empty
            } else {
                RoomEndReason::Deleted
            },
        });
        Ok(())
    }

    /// `POST /v1/rooms/{room}/endpoints`: generates the node's key for the
    /// direction towards the endpoint and adds it to the room's worker.
    /// Blocks on the worker.
    pub fn create_endpoint(
        &self,
        room: &str,
        new: NewEndpoint,
    ) -> Result<EndpointCreated, ApiError> {
        self.ensure_room(room)?;
        let _serial = self.serial(room);
        let ssrcs = endpoint_ssrcs(&new)?;
        let declared = new.tracks.clone();
        let producers = |publisher: EndpointId| -> Vec<Producer> {
            declared
                .iter()
                // Simulcast layers are their first layer's track.
                .filter(|t| t.layer_of.is_none())
                .map(|t| Producer {
                    publisher,
                    kind: t.kind,
                    ssrc: t.ssrc,
                    codec: assumed_codec(t.kind),
                    red: t.red_payload_type.is_some(),
                })
                .collect()
        };
        // A subscriber may go to a shard of a big room.
        let home = if new.role == Role::Subscribe && !new.main_worker {
            Some(self.subscriber_home(room)?)
        } else {
            None
        };
        // Check and reserve what other rooms share, atomically.
        let (room_id, worker, id, id_str) = {
            let mut model = self.model_mut();
            let entry = model
                .rooms
                .get(room)
                .ok_or_else(|| ApiError::UnknownRoom(room.to_owned()))?;
            let (room_id, worker) = home.unwrap_or((entry.id, entry.worker));
            if let Some(&taken) = ssrcs.iter().find(|s| model.ssrcs.contains(s)) {
                return Err(ApiError::DuplicateSsrc(taken));
            }
            if let Some(remote) = new.remote
                && model.remotes.contains(&(worker, remote))
            {
                return Err(ApiError::RemoteInUse(remote));
            }
            model.ssrcs.extend(ssrcs.iter().copied());
            if let Some(remote) = new.remote {
                model.remotes.insert((worker, remote));
            }
            let (id, id_str) = model.fresh_endpoint_id();
            (room_id, worker, id, id_str)
        };
        let release = || self.model_mut().release(worker, &ssrcs, new.remote);
        let Some(media) = self.media_addr(worker) else {
            release();
            return Err(ApiError::Internal(format!("no worker {worker}")));
        };
        let key_len = new.profile.key_len() + new.profile.salt_len();
        let local_master = match new.local_master {
            Some(m) if m.len() == key_len => m,
            Some(_) => {
                release();
                return Err(ApiError::BadKey(
                    "the node's key has the wrong length".into(),
                ));
            }
            None => {
                let mut m = vec![0u8; key_len];
                rand::rng().fill_bytes(&mut m);
                m
            }
        };
        let config = EndpointConfig {
            id,
            room: room_id,
            role: new.role,
            profile: new.profile,
            remote_master: new.remote_master,
            local_master: local_master.clone(),
            tracks: new.tracks,
            remote: new.remote,
            subscription: new.subscription,
            rtcp_ssrc: new.rtcp_ssrc,
            rtx_payload_types: new.rtx_payload_types,
            twcc_send_extension: None,
            participant: new.participant,
            audio_level_extension: new.audio_level_extension,
            red_payload_type: new.red_payload_type,
        };
        let outcome = self
            .request(
                worker,
                Command::AddEndpoint(Box::new(config)),
                Some(Command::RemoveEndpoint(id)),
            )
            .map_err(|e| {
                release();
                match e {
                    ApiError::UnknownRoom(_) => ApiError::UnknownRoom(room.to_owned()),
                    e => e,
                }
            })?;
        let consumers = match outcome {
            Outcome::Consumers(c) => c,
            _ => Vec::new(),
        };
        // The SSRCs and remote address were reserved above.
        let mut model = self.model_mut();
        if let Some(entry) = model.rooms.get_mut(room) {
            entry.endpoints.insert(id_str.clone());
        }
        let seq = model.take_seq();
        model.names.insert((worker, id), id_str.clone());
        model.endpoints.insert(
            id_str.clone(),
            EndpointEntry {
                id,
                room: room.to_owned(),
                worker,
                ssrcs,
                remote: new.remote,
                seq,
                session: Session::Api,
                participant: new.participant,
                tracks: producers(id),
                rid_codecs: Vec::new(),
                connected: true,
            },
        );
        model.load[worker].1 += 1;
        drop(model);
        self.events.publish(NodeEvent::ParticipantJoined {
            room: room.to_owned(),
            endpoint: id_str.clone(),
            session: Session::Api.as_str().into(),
            role: role_str(new.role).into(),
        });
        Ok(EndpointCreated {
            id: id_str,
            media,
            profile: new.profile,
            local_master,
            consumers,
        })
    }

    /// Creates a WebRTC endpoint (WHIP or WHEP) in `room`. Blocks on the
    /// worker.
    ///
    /// Holding the room's lock throughout, it looks the room up (404),
    /// asks the room's worker which simulcast layers are bound when an
    /// endpoint of the room announced layers by `rid` (an error of that
    /// request is returned), hands `plan` the room's media address
    /// and producers (see [`RoomContext::producers`]), checks the
    /// SSRCs `plan` asks for (409), adds the endpoint to the worker, then
    /// hands `finish` what `plan` prepared and the endpoint's consumers. If
    /// `finish` fails, the endpoint is removed again and its error returned:
    /// a refused request leaves nothing behind. Returns the endpoint's id
    /// and what `finish` returned.
    pub fn create_webrtc_endpoint<P, T, E, Plan, Finish>(
        &self,
        room: &str,
        plan: Plan,
        finish: Finish,
    ) -> Result<(String, T), E>
    where
        E: From<ApiError>,
        Plan: FnOnce(&RoomContext) -> Result<(NewWebrtcEndpoint, P), E>,
        Finish: FnOnce(P, &[ConsumerInfo]) -> Result<T, E>,
    {
        self.ensure_room(room)?;
        let _serial = self.serial(room);
        let (room_id, worker, rid_layers) = {
            let model = self.model();
            let entry = model
                .rooms
                .get(room)
                .ok_or_else(|| ApiError::UnknownRoom(room.to_owned()))?;
            let rid_layers = entry
                .endpoints
                .iter()
                .filter_map(|id| model.endpoints.get(id))
                .any(|e| !e.rid_codecs.is_empty());
            (entry.id, entry.worker, rid_layers)
        };
        let unknown_room = |e| match e {
            ApiError::UnknownRoom(_) => ApiError::UnknownRoom(room.to_owned()),
            e => e,
        };
        // Only layers announced by rid are learnt by the worker alone;
        // without them the model already knows every producer.
        let reported = if rid_layers {
            match self
                .request(worker, Command::Producers(room_id), None)
                .map_err(unknown_room)?
            {
                Outcome::Producers(p) => p,
                other => {
                    return Err(ApiError::Internal(format!(
                        "the worker answered a producer listing with {other:?}"
                    ))
                    .into());
                }
            }
        } else {
            Vec::new()
        };
        let producers = {
            let model = self.model();
            let entry = model
                .rooms
                .get(room)
                .ok_or_else(|| ApiError::UnknownRoom(room.to_owned()))?;
            model.producers(entry, &reported)
        };
        let media = self
            .media_addr(worker)
            .ok_or_else(|| ApiError::Internal(format!("no worker {worker}")))?;
        let (new, prepared) = plan(&RoomContext { media, producers })?;
        let mut ssrcs: Vec<u32> = Vec::with_capacity(new.tracks.len());
        // Check and reserve the SSRCs (other rooms share them), atomically.
        let (id, id_str) = {
            let mut model = self.model_mut();
            let sent = new
                .tracks
                .iter()
                .flat_map(|(t, _)| [Some(t.ssrc), t.rtx.map(|r| r.ssrc)])
                .flatten();
            for ssrc in sent {
                if ssrcs.contains(&ssrc) || model.ssrcs.contains(&ssrc) {
                    return Err(ApiError::DuplicateSsrc(ssrc).into());
                }
                ssrcs.push(ssrc);
            }
            model.ssrcs.extend(ssrcs.iter().copied());
            model.fresh_endpoint_id()
        };
        let release = |ssrcs: &[u32]| self.model_mut().release(worker, ssrcs, None);
        let config = EndpointConfig {
            id,
            room: room_id,
            role: new.role,
            // DTLS-SRTP negotiates the profile and keys.
            profile: Profile::AeadAes128Gcm,
            remote_master: Vec::new(),
            local_master: Vec::new(),
            tracks: new.tracks.iter().map(|(t, _)| *t).collect(),
            remote: None,
            subscription: new.subscription,
            rtcp_ssrc: None,
            rtx_payload_types: new.rtx_payload_types,
            twcc_send_extension: None,
            participant: new.participant,
            audio_level_extension: None,
            red_payload_type: new.red_payload_type,
        };
        let outcome = self
            .request(
                worker,
                Command::AddWebrtcEndpoint(Box::new(config), Box::new(new.transport)),
                Some(Command::RemoveEndpoint(id)),
            )
            .map_err(|e| {
                release(&ssrcs);
                unknown_room(e)
            })?;
        let consumers = match outcome {
            Outcome::Consumers(c) => c,
            _ => Vec::new(),
        };
        let done = match finish(prepared, &consumers) {
            Ok(done) => done,
            Err(e) => {
                match self.request(worker, Command::RemoveEndpoint(id), None) {
                    Ok(_) | Err(ApiError::UnknownEndpoint(_)) => {}
                    Err(undo) => {
                        tracing::warn!(worker, error = %undo, "removing a refused WebRTC endpoint failed");
                    }
                }
                release(&ssrcs);
                return Err(e);
            }
        };
        // The SSRCs were reserved above.
        let mut model = self.model_mut();
        if let Some(entry) = model.rooms.get_mut(room) {
            entry.endpoints.insert(id_str.clone());
        }
        match new.session {
            Session::Api => {}
            Session::Whip => model.sessions.whip_created += 1,
            Session::Whep => model.sessions.whep_created += 1,
        }
        let seq = model.take_seq();
        model.names.insert((worker, id), id_str.clone());
        model.endpoints.insert(
            id_str.clone(),
            EndpointEntry {
                id,
                room: room.to_owned(),
                worker,
                ssrcs,
                remote: None,
                seq,
                session: new.session,
                participant: new.participant,
                tracks: new
                    .tracks
                    .iter()
                    .map(|(t, codec)| Producer {
                        publisher: id,
                        kind: t.kind,
                        ssrc: t.ssrc,
                        codec: *codec,
                        red: t.red_payload_type.is_some(),
                    })
                    .collect(),
                rid_codecs: new.rid_codecs,
                connected: false,
            },
        );
        model.load[worker].1 += 1;
        drop(model);
        self.events.publish(NodeEvent::ParticipantJoined {
            room: room.to_owned(),
            endpoint: id_str.clone(),
            session: new.session.as_str().into(),
            role: role_str(new.role).into(),
        });
        Ok((id_str, done))
    }

    /// Adds whole tracks to a publishing endpoint ([`Command::AddTracks`]):
    /// a cascade trunk's, as the origin's consumers appear. Their SSRCs are
    /// reserved on the node like a new endpoint's; WHEP offers them with
    /// their codec (VP8, H.264, Opus; others are forwarded but not offered).
    /// Blocks on the worker.
    pub fn add_tracks(
        &self,
        room: &str,
        endpoint: &str,
        tracks: Vec<TrackConfig>,
    ) -> Result<(), ApiError> {
        let _serial = self.serial(room);
        let ssrcs: Vec<u32> = tracks
            .iter()
            .flat_map(|t| [Some(t.ssrc), t.rtx.map(|r| r.ssrc)])
            .flatten()
            .collect();
        let (id, worker) = {
            let mut model = self.model_mut();
            let (id, worker) = model.find_endpoint(room, endpoint)?;
            for (i, s) in ssrcs.iter().enumerate() {
                if ssrcs[..i].contains(s) || model.ssrcs.contains(s) {
                    return Err(ApiError::DuplicateSsrc(*s));
                }
            }
            model.ssrcs.extend(ssrcs.iter().copied());
            (id, worker)
        };
        let producers: Vec<Producer> = tracks
            .iter()
            .filter_map(|t| {
                let codec = match t.codec {
                    sfu_core::codec::Codec::Opus => CodecChoice::Opus,
                    sfu_core::codec::Codec::Vp8 => CodecChoice::Vp8,
                    sfu_core::codec::Codec::H264 => CodecChoice::H264,
                    _ => return None,
                };
                Some(Producer {
                    publisher: id,
                    kind: t.kind,
                    ssrc: t.ssrc,
                    codec,
                    red: t.red_payload_type.is_some(),
                })
            })
            .collect();
        if let Err(e) = self.request(
            worker,
            Command::AddTracks {
                endpoint: id,
                tracks,
            },
            None,
        ) {
            self.model_mut().release(worker, &ssrcs, None);
            return Err(named(endpoint)(e));
        }
        let mut model = self.model_mut();
        if let Some(e) = model.endpoints.get_mut(endpoint) {
            e.ssrcs.extend(ssrcs.iter().copied());
            e.tracks.extend(producers);
        }
        Ok(())
    }

    /// Removes tracks a publishing endpoint added whole
    /// ([`Command::RemoveTracks`]) and frees their SSRCs and those of their
    /// RTX streams (`rtx`). Blocks on the worker.
    pub fn remove_tracks(
        &self,
        room: &str,
        endpoint: &str,
        ssrcs: &[u32],
        rtx: &[u32],
    ) -> Result<(), ApiError> {
        let _serial = self.serial(room);
        let (id, worker) = self.model().find_endpoint(room, endpoint)?;
        self.request(
            worker,
            Command::RemoveTracks {
                endpoint: id,
                ssrcs: ssrcs.to_vec(),
            },
            None,
        )
        .map_err(named(endpoint))?;
        let mut model = self.model_mut();
        let mut freed: Vec<u32> = Vec::new();
        if let Some(e) = model.endpoints.get_mut(endpoint) {
            e.tracks.retain(|p| !ssrcs.contains(&p.ssrc));
            let gone = |s: &u32| ssrcs.contains(s) || rtx.contains(s);
            freed.extend(e.ssrcs.iter().copied().filter(gone));
            e.ssrcs.retain(|s| !gone(s));
        }
        model.release(worker, &freed, None);
        Ok(())
    }

    /// Whether `room` has endpoint `endpoint` here.
    pub fn has_endpoint(&self, room: &str, endpoint: &str) -> bool {
        self.model().find_endpoint(room, endpoint).is_ok()
    }

    /// The worker a room lives on, and its endpoints' count.
    pub fn room_worker(&self, room: &str) -> Option<(usize, usize)> {
        self.model()
            .rooms
            .get(room)
            .map(|r| (r.worker, r.endpoints.len()))
    }

    /// `PUT /v1/rooms/{room}/endpoints/{id}/subscriptions`. Blocks on the worker.
    pub fn set_subscription(
        &self,
        room: &str,
        endpoint: &str,
        subscription: Subscription,
    ) -> Result<Vec<ConsumerInfo>, ApiError> {
        // No room lock: the model does not change, and the worker applies
        // a room's commands one at a time in the order they arrive (a
        // subscription change racing a DELETE gets 404 or lands first), so
        // a room's subscriptions change in parallel.
        let (id, worker) = self.model().find_endpoint(room, endpoint)?;
        let outcome = self
            .request(worker, Command::SetSubscription(id, subscription), None)
            .map_err(named(endpoint))?;
        Ok(match outcome {
            Outcome::Consumers(c) => c,
            _ => Vec::new(),
        })
    }

    /// `PUT /v1/rooms/{room}/endpoints/{id}/layers`: caps the simulcast
    /// layer of the endpoint's video consumer in `slot` (`None` lifts the
    /// cap). Blocks on the worker.
    pub fn set_max_layer(
        &self,
        room: &str,
        endpoint: &str,
        slot: u16,
        max_layer: Option<u8>,
    ) -> Result<(), ApiError> {
        let (id, worker) = self.model().find_endpoint(room, endpoint)?;
        self.request(
            worker,
            Command::SetMaxLayer {
                endpoint: id,
                slot,
                max_layer,
            },
            None,
        )
        .map_err(named(endpoint))?;
        Ok(())
    }

    /// Endpoint `id`'s consumers as worker `worker` has them now
    /// ([`Command::Consumers`]). Blocks on the worker.
    pub fn worker_consumers(
        &self,
        worker: usize,
        id: EndpointId,
    ) -> Result<Vec<ConsumerInfo>, ApiError> {
        match self.request(worker, Command::Consumers(id), None)? {
            Outcome::Consumers(c) => Ok(c),
            other => Err(ApiError::Internal(format!(
                "the worker answered a consumer listing with {other:?}"
            ))),
        }
    }

    /// `GET .../endpoints/{id}`: the endpoint's consumers and bandwidth
    /// estimate as its worker has them now. Blocks on the worker.
    pub fn endpoint_state(
        &self,
        room: &str,
        endpoint: &str,
    ) -> Result<(Vec<ConsumerInfo>, Option<BandwidthInfo>), ApiError> {
        let (id, worker) = self.model().find_endpoint(room, endpoint)?;
        let consumers = self.worker_consumers(worker, id).map_err(named(endpoint))?;
        let bandwidth = match self
            .request(worker, Command::Bandwidth(id), None)
            .map_err(named(endpoint))?
        {
            Outcome::Bandwidth(b) => b,
            other => {
                return Err(ApiError::Internal(format!(
                    "the worker answered a bandwidth query with {other:?}"
                )));
            }
        };
        Ok((consumers, bandwidth))
    }

    /// `PUT .../layers` with `pinned`: pins or unpins the endpoint's video
    /// consumer in `slot` ([`Command::SetPinned`]). Blocks on the worker.
    pub fn set_pinned(
        &self,
        room: &str,
        endpoint: &str,
        slot: u16,
        pinned: bool,
    ) -> Result<(), ApiError> {
        let (id, worker) = self.model().find_endpoint(room, endpoint)?;
        self.request(
            worker,
            Command::SetPinned {
                endpoint: id,
                kind: MediaKind::Video,
                slot,
                pinned,
            },
            None,
        )
        .map_err(named(endpoint))?;
        Ok(())
    }

    /// `PUT /v1/rooms/{room}/subscriptions`: replaces the subscriptions of
    /// several endpoints of `room` in one worker round trip (a speaker
    /// switch). Answers each change on its own, in order: the endpoint's
    /// consumers, or why it was refused (unknown endpoint, a publish-only
    /// endpoint, a limit). At most `limits.endpoints_per_room` changes.
    /// Blocks on the worker.
    pub fn set_subscriptions(
        &self,
        room: &str,
        changes: Vec<(String, Subscription)>,
    ) -> Result<Vec<(String, ChangeResult)>, ApiError> {
        let max = self.model().limits.endpoints_per_room;
        if changes.len() > max {
            return Err(ApiError::TooMany(format!(
                "{} subscription changes in one request (at most limits.endpoints_per_room = {max})",
                changes.len()
            )));
        }
        // Look every endpoint up; the known ones go to the room's worker
        // in one command, in order.
        let mut results: Vec<(String, Option<ChangeResult>)> = Vec::with_capacity(changes.len());
        let mut batch = Vec::with_capacity(changes.len());
        let mut worker = None;
        {
            let model = self.model();
            if !model.rooms.contains_key(room) {
                return Err(ApiError::UnknownRoom(room.to_owned()));
            }
            for (name, subscription) in changes {
                match model.find_endpoint(room, &name) {
                    Ok((id, w)) => {
                        worker = Some(w);
                        batch.push((id, subscription));
                        results.push((name, None));
                    }
                    Err(e) => results.push((name, Some(Err(e)))),
                }
            }
        }
        let answers = match worker {
            None => Vec::new(),
            Some(worker) => match self.request(worker, Command::SetSubscriptions(batch), None)? {
                Outcome::Subscriptions(answers) => answers,
                other => {
                    return Err(ApiError::Internal(format!(
                        "the worker answered a subscription batch with {other:?}"
                    )));
                }
            },
        };
        let mut answers = answers.into_iter();
        Ok(results
            .into_iter()
            .map(|(name, result)| {
                let result = result.unwrap_or_else(|| match answers.next() {
                    Some(Ok(consumers)) => Ok(consumers),
                    Some(Err(e)) => Err(match ApiError::from(e) {
                        ApiError::UnknownEndpoint(_) => ApiError::UnknownEndpoint(name.clone()),
                        e => e,
                    }),
                    None => Err(ApiError::Internal("no answer for this change".into())),
                });
                (name, result)
            })
            .collect())
    }

    /// Forgets the endpoints the workers removed by themselves
    /// ([`Command::TakeRemoved`]: WebRTC sessions that never connected,
    /// lost ICE consent, or whose DTLS failed or closed), so their rooms'
    /// counts, SSRCs and session counters follow; called once a second by
    /// the sampler task. Blocks on each worker in turn; returns how many it
    /// forgot.
    pub fn reap_removed(&self) -> usize {
        let mut reaped = 0;
        for worker in 0..self.workers.len() {
            let removed = match self.request(worker, Command::TakeRemoved, None) {
                Ok(Outcome::Removed(removed)) => removed,
                Ok(_) | Err(_) => continue,
            };
            for (id, reason) in removed {
                if self.forget_removed(worker, id, reason).is_some() {
                    reaped += 1;
                }
            }
        }
        reaped
    }

    /// Forgets an endpoint the worker removed by itself (under its room's
    /// lock); returns its name and room, or `None` if the model had already
    /// forgotten it (a removal is reported both as an event and through
    /// [`Command::TakeRemoved`]).
    pub fn forget_removed(
        &self,
        worker: usize,
        id: EndpointId,
        reason: RemovalReason,
    ) -> Option<(String, String)> {
        let find = || {
            self.endpoint_name(worker, id)
                .map(|(room, name)| (name, room))
        };
        let (_, room) = find()?;
        let _serial = self.serial(&room);
        // Again under the lock: a DELETE may have come first.
        let (name, room) = find()?;
        let mut model = self.model_mut();
        if let Some(entry) = model.rooms.get_mut(&room) {
            entry.endpoints.remove(&name);
        }
        model.forget_endpoint(&name);
        tracing::info!(
            worker,
            endpoint = %name,
            room = %room,
            reason = reason.as_str(),
            "the worker removed an endpoint"
        );
        self.left(&room, &name, reason.as_str());
        Some((name, room))
    }

    /// `DELETE /v1/rooms/{room}/endpoints/{id}`. Blocks on the worker.
    pub fn delete_endpoint(&self, room: &str, endpoint: &str) -> Result<(), ApiError> {
        self.delete_endpoint_of(room, endpoint, None)
    }

    /// `DELETE /whip/{room}/{id}` and `DELETE /whep/{room}/{id}`: deletes
    /// the endpoint if it is a session of that kind (else 404). Blocks on
    /// the worker.
    pub fn delete_session(
        &self,
        room: &str,
        endpoint: &str,
        session: Session,
    ) -> Result<(), ApiError> {
        self.delete_endpoint_of(room, endpoint, Some(session))
    }

    fn delete_endpoint_of(
        &self,
        room: &str,
        endpoint: &str,
        session: Option<Session>,
    ) -> Result<(), ApiError> {
        let _serial = self.serial(room);
        let (id, worker) = {
            let model = self.model();
            let found = model.find_endpoint(room, endpoint)?;
            if let Some(session) = session
                && model.endpoints.get(endpoint).map(|e| e.session) != Some(session)
            {
                return Err(ApiError::UnknownEndpoint(endpoint.to_owned()));
            }
            found
        };
        match self.request(worker, Command::RemoveEndpoint(id), None) {
            Ok(_) | Err(ApiError::UnknownEndpoint(_)) => {}
            Err(e) => return Err(e),
        }
        let mut model = self.model_mut();
        if let Some(entry) = model.rooms.get_mut(room) {
            entry.endpoints.remove(endpoint);
        }
        model.forget_endpoint(endpoint);
        drop(model);
        self.left(room, endpoint, "deleted");
        Ok(())
    }
}

/// A room as the WHEP event streams see it ([`AppState::room_snapshot`]).
#[derive(Debug, Clone)]
pub(crate) struct RoomSnapshot {
    /// The room on its worker.
    pub(crate) id: RoomId,
    /// Its worker.
    pub(crate) worker: usize,
    /// Its WHEP sessions.
    pub(crate) viewers: usize,
    /// Its endpoints by router id.
    pub(crate) endpoints: HashMap<EndpointId, EndpointName>,
}

/// How events name an endpoint.
#[derive(Debug, Clone)]
pub(crate) struct EndpointName {
    /// Its id string.
    pub(crate) name: String,
    /// Its participant, if any.
    pub(crate) participant: Option<u64>,
    /// The rids it announced, in its offer's order (ascending quality).
    pub(crate) rids: Vec<String>,
}

impl AppState {
    /// `room`'s worker, WHEP session count and endpoint names, if the
    /// model knows the room.
    pub(crate) fn room_snapshot(&self, room: &str) -> Option<RoomSnapshot> {
        let model = self.model();
        let entry = model.rooms.get(room)?;
        let mut viewers = 0;
        let mut endpoints = HashMap::new();
        for name in &entry.endpoints {
            let Some(e) = model.endpoints.get(name) else {
                continue;
            };
            if e.session == Session::Whep {
                viewers += 1;
            }
            endpoints.insert(
                e.id,
                EndpointName {
                    name: name.clone(),
                    participant: e.participant,
                    rids: e.rid_codecs.iter().map(|(r, _)| r.clone()).collect(),
                },
            );
        }
        Some(RoomSnapshot {
            id: entry.id,
            worker: entry.worker,
            viewers,
            endpoints,
        })
    }

    /// The WHEP session `endpoint` of `room`: its router id, worker and
    /// participant (404 for an unknown room, an unknown endpoint, one of
    /// another room, or one that is not a WHEP session).
    pub(crate) fn whep_session(
        &self,
        room: &str,
        endpoint: &str,
    ) -> Result<(EndpointId, usize, Option<u64>), ApiError> {
        let model = self.model();
        let (id, worker) = model.find_endpoint(room, endpoint)?;
        match model.endpoints.get(endpoint) {
            Some(e) if e.session == Session::Whep => Ok((id, worker, e.participant)),
            _ => Err(ApiError::UnknownEndpoint(endpoint.to_owned())),
        }
    }
}

impl Model {
    /// The next endpoint creation number.
    fn take_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// The producers of `room`, by endpoint creation order: each
    /// endpoint's recorded tracks, then the simulcast layers the worker
    /// reports bound by `rid` for it (in `reported`'s order, with the codec
    /// negotiated for the rid). Reported producers of endpoints the model
    /// does not know, or of rids it has no codec for, are skipped.
    fn producers(&self, room: &RoomEntry, reported: &[ProducerInfo]) -> Vec<Producer> {
        let mut endpoints: Vec<&EndpointEntry> = room
            .endpoints
            .iter()
            .filter_map(|id| self.endpoints.get(id))
            .collect();
        endpoints.sort_by_key(|e| e.seq);
        let mut out = Vec::new();
        for e in endpoints {
            out.extend(e.tracks.iter().copied());
            if e.rid_codecs.is_empty() {
                continue;
            }
            out.extend(
                reported
                    .iter()
                    .filter(|p| p.endpoint == e.id)
                    // One entry per track: its first layer stands for it.
                    .filter(|p| p.group == p.ssrc)
                    .filter_map(|p| {
                        let rid = p.rid.as_deref()?;
                        let &(_, codec) = e.rid_codecs.iter().find(|(r, _)| r == rid)?;
                        Some(Producer {
                            publisher: e.id,
                            kind: p.kind,
                            ssrc: p.ssrc,
                            codec,
                            red: false,
                        })
                    }),
            );
        }
        out
    }

    /// The worker for a new room: `requested` if valid, else the one with
    /// the fewest rooms, then the fewest endpoints, then the lowest index,
    /// among the workers whose `healthy` entry is true and that are not full
    /// (rooms or endpoints at their per-worker limit). 503 `worker_stopped`
    /// if the requested one, or every one, is unhealthy; 503 `too_many` if
    /// the requested one, or every healthy one, is full.
    fn place(&self, requested: Option<usize>, healthy: &[bool]) -> Result<usize, ApiError> {
        let workers = self.load.len();
        let healthy = |w: usize| healthy.get(w).copied().unwrap_or(false);
        let full = |w: usize| {
            self.load.get(w).is_none_or(|&(rooms, endpoints)| {
                rooms >= self.limits.rooms_per_worker
                    || endpoints >= self.limits.endpoints_per_worker
            })
        };
        let full_error = || ApiError::TooMany("rooms or endpoints per worker".into());
        match requested {
            Some(w) if w >= workers => Err(ApiError::UnknownWorker(w, workers)),
            Some(w) if !healthy(w) => Err(ApiError::WorkerStopped),
            Some(w) if full(w) => Err(full_error()),
            Some(w) => Ok(w),
            None if workers == 0 => Err(ApiError::Internal("the node has no workers".into())),
            None if !(0..workers).any(healthy) => Err(ApiError::WorkerStopped),
            None => (0..workers)
                .filter(|&w| healthy(w) && !full(w))
                .min_by_key(|&w| (self.load.get(w), w))
                .ok_or_else(full_error),
        }
    }

    /// A random endpoint id not in use, and its string form (16 hex digits).
    fn fresh_endpoint_id(&self) -> (EndpointId, String) {
        loop {
            let n = rand::rng().next_u64();
            let s = format!("{n:016x}");
            if !self.endpoints.contains_key(&s) {
                return (EndpointId(n), s);
            }
        }
    }

    fn find_endpoint(&self, room: &str, endpoint: &str) -> Result<(EndpointId, usize), ApiError> {
        if !self.rooms.contains_key(room) {
            return Err(ApiError::UnknownRoom(room.to_owned()));
        }
        match self.endpoints.get(endpoint) {
            Some(e) if e.room == room => Ok((e.id, e.worker)),
            _ => Err(ApiError::UnknownEndpoint(endpoint.to_owned())),
        }
    }

    /// Frees SSRCs and a remote address of `worker`, reserved for an
    /// endpoint being created or held by one being forgotten.
    fn release(&mut self, worker: usize, ssrcs: &[u32], remote: Option<SocketAddr>) {
        for s in ssrcs {
            self.ssrcs.remove(s);
        }
        if let Some(remote) = remote {
            self.remotes.remove(&(worker, remote));
        }
    }

    /// Drops an endpoint and what it holds (SSRCs, remote, load) from the
    /// model; the caller updates its room's endpoint set.
    fn forget_endpoint(&mut self, endpoint: &str) {
        let Some(e) = self.endpoints.remove(endpoint) else {
            return;
        };
        self.names.remove(&(e.worker, e.id));
        self.release(e.worker, &e.ssrcs, e.remote);
        if let Some(load) = self.load.get_mut(e.worker) {
            load.1 -= 1;
        }
        match e.session {
            Session::Api => {}
            Session::Whip => self.sessions.whip_ended += 1,
            Session::Whep => self.sessions.whep_ended += 1,
        }
    }
}

/// Room names are 1 to [`MAX_ROOM_NAME`] characters of `A-Z a-z 0-9 - _ . ~`
/// (URL-safe without escaping), beginning with a letter or digit: never `.`,
/// `..` or anything else a path or a key prefix could read specially.
pub fn validate_room_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > MAX_ROOM_NAME {
        return Err(ApiError::BadRequest(format!(
            "room name must be 1 to {MAX_ROOM_NAME} characters"
        )));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(ApiError::BadRequest(
            "room name must begin with A-Z, a-z or 0-9".into(),
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
    {
        return Err(ApiError::BadRequest(
            "room name may only contain A-Z a-z 0-9 - _ . ~".into(),
        ));
    }
    Ok(())
}

/// The SSRCs an endpoint claims (tracks and RTCP sender), refusing repeats
/// within the request as the router does.
fn endpoint_ssrcs(new: &NewEndpoint) -> Result<Vec<u32>, ApiError> {
    let mut ssrcs = Vec::with_capacity(new.tracks.len() + 1);
    let sent = new
        .tracks
        .iter()
        .flat_map(|t| [Some(t.ssrc), t.rtx.map(|r| r.ssrc)]);
    for s in sent.flatten().chain(new.rtcp_ssrc) {
        if ssrcs.contains(&s) {
            return Err(ApiError::DuplicateSsrc(s));
        }
        ssrcs.push(s);
    }
    Ok(ssrcs)
}

/// Parses an SRTP profile name and a base64 key || salt, checking the length.
pub fn parse_srtp(profile: &str, key: &str) -> Result<(Profile, Vec<u8>), ApiError> {
    let profile = Profile::from_name(profile)
        .ok_or_else(|| ApiError::UnsupportedProfile(profile.to_owned()))?;
    let master = BASE64
        .decode(key.trim())
        .map_err(|e| ApiError::BadKey(format!("SRTP key is not valid base64: {e}")))?;
    let want = profile.key_len() + profile.salt_len();
    if master.len() != want {
        return Err(ApiError::BadKey(format!(
            "{} needs {want} bytes of key || salt, got {}",
            profile.name(),
            master.len()
        )));
    }
    Ok((profile, master))
}

/// Encodes key material for an answer (standard alphabet, padded).
pub fn encode_key(master: &[u8]) -> String {
    BASE64.encode(master)
}

/// A worker's "unknown endpoint" named as the API request named it.
fn named(endpoint: &str) -> impl FnOnce(ApiError) -> ApiError + '_ {
    move |e| match e {
        ApiError::UnknownEndpoint(_) => ApiError::UnknownEndpoint(endpoint.to_owned()),
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_prefers_fewest_rooms_then_endpoints() {
        let mut model = Model {
            load: vec![(0, 0); 3],
            ..Model::default()
        };
        let all = [true; 3];
        assert_eq!(model.place(None, &all), Ok(0));
        model.load = vec![(1, 0), (0, 5), (0, 2)];
        assert_eq!(model.place(None, &all), Ok(2));
        model.load = vec![(1, 0), (1, 5), (1, 2)];
        assert_eq!(model.place(None, &all), Ok(0));
        assert_eq!(model.place(Some(1), &all), Ok(1));
        assert_eq!(
            model.place(Some(3), &all),
            Err(ApiError::UnknownWorker(3, 3))
        );
    }

    #[test]
    fn placement_skips_unhealthy_workers() {
        let model = Model {
            load: vec![(0, 0), (3, 0), (1, 0)],
            ..Model::default()
        };
        assert_eq!(model.place(None, &[false, true, true]), Ok(2));
        assert_eq!(model.place(None, &[false, true, false]), Ok(1));
        assert_eq!(model.place(None, &[false; 3]), Err(ApiError::WorkerStopped));
        assert_eq!(
            model.place(Some(0), &[false, true, true]),
            Err(ApiError::WorkerStopped)
        );
    }

    #[test]
    fn producers_add_bound_rid_layers_after_each_endpoints_tracks() {
        let mut model = Model::default();
        let endpoint = |id: u64, seq: u64, tracks: Vec<Producer>, rids: &[(&str, CodecChoice)]| {
            EndpointEntry {
                id: EndpointId(id),
                room: "r".into(),
                worker: 0,
                ssrcs: tracks.iter().map(|t| t.ssrc).collect(),
                remote: None,
                seq,
                session: Session::Whip,
                participant: None,
                tracks,
                rid_codecs: rids.iter().map(|&(r, c)| (r.to_owned(), c)).collect(),
                connected: false,
            }
        };
        let audio = Producer {
            publisher: EndpointId(10),
            kind: MediaKind::Audio,
            ssrc: 1,
            codec: CodecChoice::Opus,
            red: true,
        };
        let video = Producer {
            publisher: EndpointId(10),
            kind: MediaKind::Video,
            ssrc: 2,
            codec: CodecChoice::Vp8,
            red: false,
        };
        // "b" was created first, "a" second: creation order, not name order.
        model.endpoints.insert(
            "a".into(),
            endpoint(
                10,
                2,
                vec![audio],
                &[("h", CodecChoice::H264), ("q", CodecChoice::H264)],
            ),
        );
        model
            .endpoints
            .insert("b".into(), endpoint(20, 1, vec![video], &[]));
        let room = RoomEntry {
            id: RoomId(1),
            worker: 0,
            endpoints: ["a".to_owned(), "b".to_owned()].into(),
            shards: Vec::new(),
        };
        let info = |endpoint: u64, kind: MediaKind, ssrc: u32, rid: Option<&str>| ProducerInfo {
            endpoint: EndpointId(endpoint),
            kind,
            ssrc,
            payload_type: 96,
            rid: rid.map(str::to_owned),
            group: ssrc,
            bitrate: None,
            layer_rank: None,
        };
        let reported = [
            info(20, MediaKind::Video, 2, None),
            info(10, MediaKind::Audio, 1, None),
            // Bound "q" before "h".
            info(10, MediaKind::Video, 700, Some("q")),
            info(10, MediaKind::Video, 701, Some("h")),
            // A rid without a recorded codec, and an endpoint control no
            // longer knows: skipped.
            info(10, MediaKind::Video, 702, Some("x")),
            info(30, MediaKind::Video, 703, Some("q")),
        ];
        let layer = |ssrc| Producer {
            publisher: EndpointId(10),
            kind: MediaKind::Video,
            ssrc,
            codec: CodecChoice::H264,
            red: false,
        };
        assert_eq!(
            model.producers(&room, &reported),
            vec![video, audio, layer(700), layer(701)]
        );
        // Without reports, only the recorded tracks.
        assert_eq!(model.producers(&room, &[]), vec![video, audio]);
    }

    #[test]
    fn room_names() {
        for ok in ["a", "room-1", "A.b_c~d", &"x".repeat(MAX_ROOM_NAME)] {
            assert!(validate_room_name(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", "a/b", "a b", "é", "a?b", &"x".repeat(MAX_ROOM_NAME + 1)] {
            assert!(validate_room_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn srtp_parameters() {
        let gcm = BASE64.encode([7u8; 28]);
        let cm = BASE64.encode([7u8; 30]);
        assert_eq!(
            parse_srtp("AEAD_AES_128_GCM", &gcm).map(|(p, k)| (p, k.len())),
            Ok((Profile::AeadAes128Gcm, 28))
        );
        assert_eq!(
            parse_srtp("AES_CM_128_HMAC_SHA1_80", &cm).map(|(p, k)| (p, k.len())),
            Ok((Profile::Aes128CmHmacSha1_80, 30))
        );
        assert_eq!(
            parse_srtp("AEAD_AES_128_GCM", &cm)
                .map(|_| ())
                .map_err(|e| e.code()),
            Err("bad_key")
        );
        assert_eq!(
            parse_srtp("AEAD_AES_128_GCM", "!!")
                .map(|_| ())
                .map_err(|e| e.code()),
            Err("bad_key")
        );
        assert_eq!(
            parse_srtp("AEAD_AES_256_GCM", &gcm)
                .map(|_| ())
                .map_err(|e| e.code()),
            Err("unsupported_profile")
        );
    }
}
