//! Cascade relays: a room that outgrows its origin node continues on relay
//! nodes, each fed by the origin over one SRTP trunk.
//!
//! # How a subscriber lands on a relay
//! When a room's origin can take no more subscribers on its own workers
//! (each holds [`crate::config::ClusterConfig::relay_after`] of the room's
//! endpoints, see [`crate::state::shard`]), the origin passes each new
//! subscriber's request (`POST /v1/rooms/{room}/endpoints` with role
//! `subscribe`, `POST /whep/{room}`) to a relay node with `?relay=1` in its signed path: a node already
//! relaying the room that serves fewer than `relay_after` of its
//! subscribers (as recorded in Redis), else the less loaded of two random serving nodes below the
//! stress threshold. The relay node opens its relay of the room if it has
//! none ([`Cluster::ensure_relay`]), creates the endpoint in it and records
//! it in Redis (`{NAME}:relayed:ROOM`), so a later request for that
//! endpoint reaching any node is passed to the relay. When the relay cannot
//! serve (no worker free for this origin, the origin refused the trunk),
//! the origin serves the subscriber itself.
//!
//! # The trunk
//! The relay keeps a replica of the room on one of its workers (never
//! claimed: the origin still owns the room; every other request for it is
//! passed to the origin). It generates the key for its direction and asks
//! the origin (`POST /v1/rooms/{room}/endpoints?trunk=1`, signed like any
//! passed request, with a token for the room minted with the API secret)
//! for a subscriber of everything in the room at the relay worker's media
//! address, with RTX; the origin's answer carries its key, its media
//! address and its consumers. The relay adds a publisher to its replica
//! whose tracks are those consumers (SSRC, payload type, codec, RTX). Its
//! own subscribers attach to them as to any publisher's; their PLIs,
//! NACKs the cache cannot answer, and receiver reports go back up the
//! trunk as the router sends them to any publisher, and the origin passes
//! keyframe requests on to the real publishers. Keys travel only between
//! nodes, over the control API, never to clients.
//!
//! Every [`SYNC_INTERVAL`] the relay reads the trunk's consumers from the
//! origin and adds (or replaces) tracks as producers join: the origin keeps
//! a consumer slot's SSRC when its producer leaves and reuses it for the
//! next one, so most changes are a new source behind a known SSRC.
//!
//! # Limits
//! * One trunk per pair of origin worker and relay worker: both routers
//!   tell a trunk's RTCP by its source address, so a relay node relays as
//!   many rooms of one origin worker as it has workers.
//! * At most [`MAX_RELAYS_PER_ROOM`] relays per room, at most
//!   `max_consumers_per_endpoint` tracks per trunk.
//! * A trunk carries one simulcast layer per track (the origin forwards it
//!   as to a subscriber without a bandwidth estimate: the best layer); the
//!   relay's subscribers all get that layer.
//! * A relay's subscribers see the trunk as one participant: dominant
//!   speaker events come from the origin, and last-N slots on a relay fill
//!   from the trunk's tracks in join order.
//! * When the origin is gone (its room moved after a failover), the relay
//!   closes its trunk and opens one to the new owner; its subscribers get
//!   the new trunk's tracks as new producers.
//! * A relay with no subscriber for [`IDLE_CLOSE`] closes: its trunk is
//!   deleted on the origin and its replica removed.
//! * A room deleted on its origin (nobody owns it any more) closes its
//!   relays, with the subscribers they had.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{Method, Request, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use rand::RngCore as _;
use serde_json::{Value, json};
use sfu_core::codec::Codec;
use sfu_core::router::{MediaKind, Role, RtxPayloadTypes, Subscription, TrackConfig};
use sfu_core::srtp::Profile;

use super::{Cluster, NodeEntry, lock};
use crate::auth::{Claims, Grant};
use crate::error::ApiError;
use crate::state::shard::{TRUNK_RTX_PT, trunk_diff, trunk_track};
use crate::state::{NewEndpoint, encode_key, parse_srtp};

/// Relays one room may have.
pub const MAX_RELAYS_PER_ROOM: usize = 16;

/// How often a relay reads its trunk's consumers from the origin.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(250);

/// Every this many syncs a relay forgets the recorded endpoints it no
/// longer has (10 s).
const RECONCILE_TICKS: u32 = 40;

/// A relay without subscribers this long closes.
pub const IDLE_CLOSE: Duration = Duration::from_secs(10);

/// The SRTP profile of trunks.
const TRUNK_PROFILE: Profile = Profile::AeadAes128Gcm;

/// How long a trunk token lives.
const TOKEN_SECS: u64 = 60;

/// The relays of this node, and the origin's record of its trunks.
#[derive(Debug, Default)]
pub struct Relays {
    /// Rooms relayed here, by name.
    rooms: std::sync::Mutex<HashMap<String, Arc<RelayRoom>>>,
    /// One relay opens at a time.
    opening: tokio::sync::Mutex<()>,
    /// (origin media address, local worker) pairs with a trunk.
    pairs: std::sync::Mutex<HashSet<(SocketAddr, usize)>>,
}

/// A room relayed here.
#[derive(Debug)]
struct RelayRoom {
    trunk: tokio::sync::Mutex<Option<Trunk>>,
}

/// A relay's trunk from the origin.
#[derive(Debug)]
struct Trunk {
    origin: NodeEntry,
    origin_media: SocketAddr,
    /// The trunk's endpoint id on the origin (a subscriber there).
    remote_endpoint: String,
    /// Its endpoint id here (a publisher).
    local_endpoint: String,
    worker: usize,
    /// Its tracks by SSRC.
    tracks: HashMap<u32, TrackConfig>,
}

/// One consumer of the origin's trunk endpoint, as its answer lists it.
fn track_of(c: &Value) -> Option<TrackConfig> {
    c.get("producer_ssrc")?.as_u64()?;
    let kind = match c.get("kind")?.as_str()? {
        "audio" => MediaKind::Audio,
        "video" => MediaKind::Video,
        _ => return None,
    };
    let u32_of = |k: &str| {
        c.get(k)
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
    };
    trunk_track(
        kind,
        u32_of("ssrc")?,
        u8::try_from(c.get("payload_type")?.as_u64()?).ok()?,
        c.get("codec").and_then(Value::as_str).map(Codec::from_name),
        u32_of("rtx_ssrc"),
    )
}

impl Cluster {
    /// Whether `room` is relayed here (a replica, owned by another node).
    pub fn is_relay(&self, room: &str) -> bool {
        lock(&self.relays.rooms).contains_key(room)
    }

    /// This node's relay of `room`, if any.
    fn relay(&self, room: &str) -> Option<Arc<RelayRoom>> {
        lock(&self.relays.rooms).get(room).cloned()
    }

    /// A token for `room` with the admin grant, for requests to a peer.
    fn peer_token(&self, room: &str) -> String {
        crate::auth::mint(
            &self.secret,
            &Claims {
                room: room.to_owned(),
                grants: vec![Grant::Admin],
                exp: crate::auth::unix_now() + TOKEN_SECS,
                nbf: None,
                sub: None,
            },
        )
    }

    /// Sends `method path` with a JSON `body` to `peer` as a signed
    /// request of this node for `room`; its status and JSON answer.
    async fn call(
        &self,
        peer: &NodeEntry,
        method: Method,
        path: &str,
        body: Option<Value>,
        room: &str,
    ) -> Result<(StatusCode, Value), String> {
        let request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", self.peer_token(room)),
            )
            .header(header::CONTENT_TYPE, "application/json")
            .body(())
            .map_err(|e| e.to_string())?;
        let (parts, ()) = request.into_parts();
        let signed = self
            .signer
            .sign(&self.me, crate::auth::unix_now(), &method, path);
        let bytes = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let answer = self
            .proxy
            .forward(&peer.control_url, &signed, &peer.id, parts, bytes)
            .await
            .map_err(|e| e.to_string())?;
        let status = answer.status();
        let bytes = axum::body::to_bytes(answer.into_body(), crate::error::MAX_BODY_BYTES * 16)
            .await
            .map_err(|e| e.to_string())?;
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, value))
    }

    /// Opens this node's relay of `room` unless it has one with a trunk.
    pub async fn ensure_relay(self: &Arc<Self>, room: &str) -> Result<(), ApiError> {
        let known = self.relay(room);
        if let Some(r) = known
            && r.trunk.lock().await.is_some()
        {
            return Ok(());
        }
        let _one = self.relays.opening.lock().await;
        let known = self.relay(room);
        let relay = match known {
            Some(r) => r,
            None => {
                if self.state.has_room(room) {
                    return Err(ApiError::RelayUnavailable(format!(
                        "{room} is served here, not relayed"
                    )));
                }
                let relay = Arc::new(RelayRoom {
                    trunk: tokio::sync::Mutex::new(None),
                });
                // Known as a relay before it exists: routing never takes
                // the replica for a room of this node.
                lock(&self.relays.rooms).insert(room.to_owned(), Arc::clone(&relay));
                let cluster = Arc::clone(self);
                let name = room.to_owned();
                tokio::spawn(async move { cluster.run_relay(name).await });
                relay
            }
        };
        self.attach_trunk(room, &relay).await
    }

    /// Gives the relay of `room` a trunk from the room's owner (creating
    /// the replica first if it is not there), unless it has one. The
    /// caller holds `opening`.
    async fn attach_trunk(&self, room: &str, relay: &RelayRoom) -> Result<(), ApiError> {
        let unavailable = ApiError::RelayUnavailable;
        let mut slot = relay.trunk.lock().await;
        if slot.is_some() {
            return Ok(());
        }
        let origin = self.origin_of(room).await.map_err(unavailable)?;
        let (status, info) = self
            .call(
                &origin,
                Method::GET,
                &format!("/v1/rooms/{}", path_segment(room)),
                None,
                room,
            )
            .await
            .map_err(unavailable)?;
        let origin_media: SocketAddr = info
            .get("media")
            .and_then(Value::as_str)
            .and_then(|m| m.parse().ok())
            .ok_or_else(|| unavailable(format!("the origin answered {status} for the room")))?;
        let worker = match self.state.room_worker(room) {
            Some((w, _)) => w,
            None => {
                let worker = self.relay_worker(origin_media).ok_or_else(|| {
                    unavailable(format!(
                        "every worker here has a trunk from {origin_media} already"
                    ))
                })?;
                let state = Arc::clone(&self.state);
                let name = room.to_owned();
                tokio::task::spawn_blocking(move || state.create_room(&name, Some(worker)))
                    .await
                    .map_err(|e| ApiError::Internal(e.to_string()))
                    .and_then(|r| r)
                    .map_err(|e| unavailable(format!("cannot create the replica: {e}")))?;
                worker
            }
        };
        if !lock(&self.relays.pairs).insert((origin_media, worker)) {
            return Err(unavailable(format!(
                "worker {worker} has a trunk from {origin_media} already"
            )));
        }
        match self.open_trunk(room, worker, origin, origin_media).await {
            Ok(trunk) => {
                tracing::info!(room, origin = %trunk.origin.id, tracks = trunk.tracks.len(), "relay trunk open");
                self.counters.trunks_opened.fetch_add(1, Ordering::Relaxed);
                *slot = Some(trunk);
                Ok(())
            }
            Err(e) => {
                lock(&self.relays.pairs).remove(&(origin_media, worker));
                Err(unavailable(e))
            }
        }
    }

    /// The live owner of `room`, not this node.
    async fn origin_of(&self, room: &str) -> Result<NodeEntry, String> {
        let store = self.store.as_ref().ok_or("no cluster")?;
        let owner = store
            .owner(room)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("nobody owns {room}"))?;
        if owner == self.me {
            return Err(format!("{room} is owned here"));
        }
        store
            .node(&owner)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("the owner of {room} is dead"))
    }

    /// A running worker without a trunk from `origin_media`, the least
    /// loaded by rooms then endpoints.
    fn relay_worker(&self, origin_media: SocketAddr) -> Option<usize> {
        let pairs = lock(&self.relays.pairs);
        self.state
            .worker_loads()
            .into_iter()
            .enumerate()
            .filter(|&(w, (_, _, running))| running && !pairs.contains(&(origin_media, w)))
            .min_by_key(|&(_, (rooms, endpoints, _))| (rooms, endpoints))
            .map(|(w, _)| w)
    }

    /// Asks the origin for the trunk's subscriber and adds its publisher
    /// here.
    async fn open_trunk(
        &self,
        room: &str,
        worker: usize,
        origin: NodeEntry,
        origin_media: SocketAddr,
    ) -> Result<Trunk, String> {
        let local_media = self
            .state
            .media_addr(worker)
            .ok_or_else(|| format!("no worker {worker}"))?;
        let mut ours = vec![0u8; TRUNK_PROFILE.key_len() + TRUNK_PROFILE.salt_len()];
        rand::rng().fill_bytes(&mut ours);
        let body = json!({
            "role": "subscribe",
            "srtp": {"profile": TRUNK_PROFILE.name(), "key": encode_key(&ours)},
            "remote": local_media.to_string(),
            "subscribe": "all",
            "rtx_payload_types": {"video": TRUNK_RTX_PT},
        });
        let path = format!("/v1/rooms/{}/endpoints?trunk=1", path_segment(room));
        let (status, answer) = self
            .call(&origin, Method::POST, &path, Some(body), room)
            .await?;
        if status != StatusCode::CREATED {
            return Err(format!("the origin refused the trunk: {status} {answer}"));
        }
        let remote_endpoint = answer
            .get("id")
            .and_then(Value::as_str)
            .ok_or("no id in the origin's answer")?
            .to_owned();
        let theirs = answer
            .get("srtp")
            .and_then(|s| s.get("key"))
            .and_then(Value::as_str)
            .ok_or("no key in the origin's answer")
            .and_then(|k| parse_srtp(TRUNK_PROFILE.name(), k).map_err(|_| "a bad key"));
        let theirs = match theirs {
            Ok((_, k)) => k,
            Err(e) => {
                self.close_remote(&origin, room, &remote_endpoint).await;
                return Err(e.to_owned());
            }
        };
        let tracks: Vec<TrackConfig> = answer
            .get("consumers")
            .and_then(Value::as_array)
            .map(|cs| cs.iter().filter_map(track_of).collect())
            .unwrap_or_default();
        // Its tracks are added once it exists: a trunk may carry more
        // than a client may declare at creation.
        let new = NewEndpoint {
            role: Role::Publish,
            profile: TRUNK_PROFILE,
            remote_master: theirs,
            tracks: Vec::new(),
            // Learnt from the origin's first packet.
            remote: None,
            subscription: Subscription::All,
            rtcp_ssrc: None,
            rtx_payload_types: RtxPayloadTypes::default(),
            participant: None,
            audio_level_extension: None,
            red_payload_type: None,
            local_master: Some(ours),
            main_worker: true,
        };
        let state = Arc::clone(&self.state);
        let name = room.to_owned();
        let initial = tracks.clone();
        let created = tokio::task::spawn_blocking(move || {
            let created = state.create_endpoint(&name, new)?;
            if !initial.is_empty()
                && let Err(e) = state.add_tracks(&name, &created.id, initial)
            {
                let _ = state.delete_endpoint(&name, &created.id);
                return Err(e);
            }
            Ok(created)
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e: ApiError| e.to_string()));
        match created {
            Ok(c) => Ok(Trunk {
                origin,
                origin_media,
                remote_endpoint,
                local_endpoint: c.id,
                worker,
                tracks: tracks.into_iter().map(|t| (t.ssrc, t)).collect(),
            }),
            Err(e) => {
                self.close_remote(&origin, room, &remote_endpoint).await;
                Err(format!("cannot add the trunk here: {e}"))
            }
        }
    }

    /// Deletes the trunk's endpoint on the origin (best effort).
    async fn close_remote(&self, origin: &NodeEntry, room: &str, endpoint: &str) {
        let path = format!("/v1/rooms/{}/endpoints/{endpoint}", path_segment(room));
        if let Err(e) = self.call(origin, Method::DELETE, &path, None, room).await {
            tracing::debug!(room, error = %e, "cannot delete the trunk on the origin");
        }
    }

    /// Closes a trunk here and on its origin.
    async fn close_trunk(&self, room: &str, trunk: Trunk, tell_origin: bool) {
        if tell_origin {
            self.close_remote(&trunk.origin, room, &trunk.remote_endpoint)
                .await;
        }
        let state = Arc::clone(&self.state);
        let (name, endpoint) = (room.to_owned(), trunk.local_endpoint.clone());
        let _ = tokio::task::spawn_blocking(move || state.delete_endpoint(&name, &endpoint)).await;
        lock(&self.relays.pairs).remove(&(trunk.origin_media, trunk.worker));
        self.counters.trunks_closed.fetch_add(1, Ordering::Relaxed);
    }

    /// Deletes the replica of a closed relay and forgets its endpoints.
    async fn close_replica(&self, room: &str) {
        let state = Arc::clone(&self.state);
        let name = room.to_owned();
        let _ = tokio::task::spawn_blocking(move || state.delete_room(&name)).await;
        if let Some(store) = &self.store
            && let Err(e) = store.relayed_forget(room, &self.me, &[]).await
        {
            self.failed("relayed", &e);
        }
    }

    /// Keeps the relay of `room` in step with its origin until it closes.
    async fn run_relay(self: Arc<Self>, room: String) {
        let mut tick = tokio::time::interval(SYNC_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut idle_since: Option<Instant> = None;
        let mut ticks = 0u32;
        loop {
            tick.tick().await;
            ticks = ticks.wrapping_add(1);
            if ticks.is_multiple_of(RECONCILE_TICKS) {
                self.relayed_reconcile(&room).await;
            }
            let Some(relay) = self.relay(&room) else {
                return;
            };
            let mut guard = relay.trunk.lock().await;
            let trunk_here = guard.is_some();
            let endpoints = self.state.room_worker(&room).map_or(0, |(_, n)| n);
            let subscribers = endpoints.saturating_sub(usize::from(trunk_here));
            if subscribers == 0 {
                let since = *idle_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= IDLE_CLOSE || endpoints == 0 && !trunk_here {
                    if let Some(t) = guard.take() {
                        self.close_trunk(&room, t, true).await;
                    }
                    lock(&self.relays.rooms).remove(&room);
                    drop(guard);
                    self.close_replica(&room).await;
                    tracing::info!(room, "relay closed: no subscriber left");
                    return;
                }
            } else {
                idle_since = None;
            }
            let Some(trunk) = guard.as_mut() else {
                drop(guard);
                // The room was closed (nobody owns it): so is its relay,
                // with the subscribers it had here.
                if let Some(store) = &self.store
                    && let Ok(None) = store.owner(&room).await
                {
                    lock(&self.relays.rooms).remove(&room);
                    self.close_replica(&room).await;
                    tracing::info!(room, "relay closed: the room is gone");
                    return;
                }
                // The origin went away: open a trunk to the room's owner now.
                let _one = self.relays.opening.lock().await;
                if subscribers > 0
                    && let Err(e) = self.attach_trunk(&room, &relay).await
                {
                    tracing::debug!(room, error = %e, "relay waits for the room's owner");
                }
                continue;
            };
            let path = format!(
                "/v1/rooms/{}/endpoints/{}",
                path_segment(&room),
                trunk.remote_endpoint
            );
            let answer = self
                .call(&trunk.origin, Method::GET, &path, None, &room)
                .await;
            let consumers = match answer {
                Ok((StatusCode::OK, v)) => v,
                Ok((status, v))
                    if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE =>
                {
                    tracing::debug!(room, %status, answer = %v, "origin trouble; trunk kept");
                    continue;
                }
                other => {
                    tracing::warn!(room, origin = %trunk.origin.id, answer = ?other.map(|a| a.0), "trunk lost: the origin no longer has it");
                    if let Some(t) = guard.take() {
                        self.close_trunk(&room, t, false).await;
                    }
                    continue;
                }
            };
            let want: Vec<TrackConfig> = consumers
                .get("consumers")
                .and_then(Value::as_array)
                .map(|cs| cs.iter().filter_map(track_of).collect())
                .unwrap_or_default();
            let (remove, rtx, add) = trunk_diff(&trunk.tracks, &want);
            if remove.is_empty() && add.is_empty() {
                continue;
            }
            let state = Arc::clone(&self.state);
            let (name, endpoint) = (room.clone(), trunk.local_endpoint.clone());
            let adding = add.clone();
            let removing = remove.clone();
            let applied = tokio::task::spawn_blocking(move || {
                if !removing.is_empty() {
                    state.remove_tracks(&name, &endpoint, &removing, &rtx)?;
                }
                if !adding.is_empty() {
                    state.add_tracks(&name, &endpoint, adding)?;
                }
                Ok::<(), ApiError>(())
            })
            .await;
            for s in &remove {
                trunk.tracks.remove(s);
            }
            match applied {
                Ok(Ok(())) => {
                    for t in add {
                        trunk.tracks.insert(t.ssrc, t);
                    }
                }
                Ok(Err(e)) => tracing::warn!(room, error = %e, "cannot change the trunk's tracks"),
                Err(e) => tracing::warn!(room, error = %e, "trunk task failed"),
            }
        }
    }

    /// As the origin: a relay node for a new subscriber of `room`, if no
    /// worker here can take it (each holds
    /// [`crate::config::ClusterConfig::relay_after`] of the room's
    /// endpoints) and a peer can.
    pub async fn relay_target(&self, room: &str) -> Option<NodeEntry> {
        let after = self.config.relay_after as usize;
        if after == 0 || !self.enabled() || self.is_relay(room) {
            return None;
        }
        // The node's own workers first (shards), then relay nodes.
        if !self.state.has_room(room) || self.state.room_has_space(room) {
            return None;
        }
        let registry = self.registry().await?;
        let stress = f64::from(self.config.stress_percent) / 100.0;
        let peers: Vec<&NodeEntry> = registry
            .live
            .iter()
            .filter(|e| e.id != self.me && e.state == super::NodeState::Serving)
            .collect();
        // The subscribers each relay serves now (Redis: what relays
        // recorded, less what left).
        let sent = match self.store.as_ref()?.relayed_counts(room).await {
            Ok(c) => c,
            Err(e) => {
                self.failed("relayed", &e);
                return None;
            }
        };
        // A relay of the room with room left, the fullest first.
        let existing = peers
            .iter()
            .filter(|e| sent.get(&e.id).is_some_and(|&n| n < after))
            .filter(|e| self.placement_load(e) < stress)
            .max_by_key(|e| sent.get(&e.id).copied().unwrap_or(0))
            .copied();
        let pick = match existing {
            Some(e) => e.clone(),
            None if sent.len() >= MAX_RELAYS_PER_ROOM => return None,
            None => {
                let fresh: Vec<&NodeEntry> = peers
                    .iter()
                    .filter(|e| !sent.contains_key(&e.id) && self.placement_load(e) < stress)
                    .copied()
                    .collect();
                match fresh.len() {
                    0 => return None,
                    1 => fresh[0].clone(),
                    n => {
                        let a = rand::random_range(0..n);
                        let mut b = rand::random_range(0..n - 1);
                        if b >= a {
                            b += 1;
                        }
                        let (x, y) = (fresh[a], fresh[b]);
                        if self.placement_load(y) < self.placement_load(x) {
                            y.clone()
                        } else {
                            x.clone()
                        }
                    }
                }
            }
        };
        Some(pick)
    }

    /// As the origin: a relay took a subscriber.
    pub fn relayed_to(&self) {
        self.counters.relayed.fetch_add(1, Ordering::Relaxed);
    }

    /// As a relay: forgets endpoint `endpoint` of `room` (it left).
    pub(super) async fn relayed_left(&self, room: &str, endpoint: &str) {
        if let Some(store) = &self.store
            && let Err(e) = store
                .relayed_forget(room, &self.me, &[endpoint.to_owned()])
                .await
        {
            self.failed("relayed", &e);
        }
    }

    /// As a relay: forgets the recorded endpoints of `room` that are no
    /// longer here (sessions the router ended by itself).
    async fn relayed_reconcile(&self, room: &str) {
        let Some(store) = &self.store else {
            return;
        };
        let gone: Vec<String> = match store.relayed_of(room, &self.me).await {
            Ok(eps) => eps
                .into_iter()
                .filter(|e| !self.state.has_endpoint(room, e))
                .collect(),
            Err(e) => {
                self.failed("relayed", &e);
                return;
            }
        };
        if !gone.is_empty()
            && let Err(e) = store.relayed_forget(room, &self.me, &gone).await
        {
            self.failed("relayed", &e);
        }
    }

    /// Makes the replica of `room` (relayed here) this node's room, with
    /// its subscribers: its trunk is closed here. Whether it was relayed.
    pub(super) async fn adopt_relay(&self, room: &str) -> bool {
        let removed = lock(&self.relays.rooms).remove(room);
        let Some(relay) = removed else {
            return false;
        };
        if let Some(t) = relay.trunk.lock().await.take() {
            self.close_trunk(room, t, false).await;
        }
        if let Some(store) = &self.store
            && let Err(e) = store.relayed_forget(room, &self.me, &[]).await
        {
            self.failed("relayed", &e);
        }
        tracing::info!(room, "relayed room adopted: this node owns it now");
        true
    }

    /// As a relay: records the endpoint a `201` answer created here for a
    /// subscriber of `room` (its id in the JSON `id`, or WHEP's
    /// `Location`), so requests for it reaching other nodes come here.
    pub(super) async fn record_relayed(&self, room: &str, answer: Response) -> Response {
        if answer.status() != StatusCode::CREATED {
            return answer;
        }
        let located = answer
            .headers()
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| l.rsplit('/').next())
            .map(str::to_owned);
        let (id, answer) = match located {
            Some(id) => (Some(id), answer),
            None => {
                let (parts, body) = answer.into_parts();
                let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
                    return ApiError::Internal("unreadable answer".into()).into_response();
                };
                let id = serde_json::from_slice::<Value>(&bytes)
                    .ok()
                    .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_owned));
                (id, Response::from_parts(parts, Body::from(bytes)))
            }
        };
        if let (Some(store), Some(id)) = (&self.store, id)
            && let Err(e) = store.relayed_set(room, &id, &self.me).await
        {
            self.failed("relayed", &e);
        }
        answer
    }

    /// The live relay node (not this one) serving `endpoint` of `room`.
    pub(super) async fn relay_of(&self, room: &str, endpoint: &str) -> Option<NodeEntry> {
        let store = self.store.as_ref()?;
        let node = match store.relayed_get(room, endpoint).await {
            Ok(n) => n?,
            Err(e) => {
                self.failed("relayed", &e);
                return None;
            }
        };
        if node == self.me {
            return None;
        }
        store.node(&node).await.ok().flatten()
    }

    /// Rooms relayed here.
    pub fn relayed_rooms(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.relays.rooms).keys().cloned().collect();
        v.sort();
        v
    }
}

/// `room` as one path segment (percent-encoded where it must be).
pub(super) fn path_segment(room: &str) -> String {
    let mut out = String::with_capacity(room.len());
    for b in room.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consumer(ssrc: u32, producer: Option<u32>, kind: &str, codec: &str, pt: u8) -> Value {
        json!({"kind": kind, "slot": 0, "ssrc": ssrc, "producer_ssrc": producer,
               "payload_type": pt, "rtx_ssrc": ssrc + 1, "codec": codec})
    }

    #[test]
    fn a_trunks_tracks_are_the_origins_attached_consumers() {
        let v = track_of(&consumer(10, Some(1), "video", "VP8", 96)).unwrap();
        assert_eq!((v.ssrc, v.payload_type, v.codec), (10, 96, Codec::Vp8));
        assert_eq!(
            v.rtx.map(|r| (r.ssrc, r.payload_type)),
            Some((11, TRUNK_RTX_PT))
        );
        let a = track_of(&consumer(20, Some(2), "audio", "opus", 111)).unwrap();
        assert_eq!((a.kind, a.rtx), (MediaKind::Audio, None));
        // Detached, unknown kind, the trunk's RTX payload type: none.
        assert!(track_of(&consumer(30, None, "video", "VP8", 96)).is_none());
        assert!(track_of(&consumer(30, Some(3), "data", "VP8", 96)).is_none());
        assert!(track_of(&consumer(30, Some(3), "video", "VP8", TRUNK_RTX_PT)).is_none());
    }

    #[test]
    fn room_names_become_one_path_segment() {
        assert_eq!(path_segment("r-1_x.y~"), "r-1_x.y~");
        assert_eq!(path_segment("a b/c"), "a%20b%2Fc");
    }
}
