//! Rooms over several workers of one node: a room whose main worker holds
//! [`ClusterConfig::relay_after`](crate::config::ClusterConfig::relay_after)
//! of its endpoints places new subscribers (of the JSON API) on a shard:
//! a replica of the room on another worker, fed by a trunk from the main
//! worker, the same mechanism that feeds relay nodes
//! ([`crate::cluster::relay`]) without leaving the node.
//!
//! A trunk is two internal endpoints: on the main worker a subscriber of
//! everything in the room (with RTX), whose address is the shard worker's
//! media socket; on the shard's worker a publisher whose tracks are that
//! subscriber's consumers. Both keys are made here and never leave the
//! process. The shard's subscribers attach to the trunk's tracks; their
//! keyframe requests, NACKs and receiver reports go up the trunk to the
//! main worker as to any publisher. [`AppState::sync_shards`] (every
//! [`SHARD_SYNC`]) adds tracks as producers join the room.
//!
//! Trunk endpoints are not the room's endpoints: they are not listed,
//! counted or reachable through the API, and close with the room. A
//! worker holds one trunk per other worker's socket (routers tell a
//! trunk's RTCP by its source address), so a main worker feeds one shard
//! per room per other worker — one sharded room per pair of workers;
//! when no worker can take a shard the subscriber stays on the main
//! worker. WHEP sessions always join the main worker.

use std::time::Duration;

use super::*;
use sfu_core::codec::Codec;
use sfu_core::router::RtxStream;

/// How often shards' trunk tracks follow the main worker's producers.
pub const SHARD_SYNC: Duration = Duration::from_millis(250);

/// The payload type of RTX on a trunk (video; audio has none).
pub const TRUNK_RTX_PT: u8 = 127;

/// A room's replica on another worker of the node.
#[derive(Debug)]
pub(super) struct Shard {
    pub(super) worker: usize,
    pub(super) id: RoomId,
    /// The trunk's subscriber on the main worker.
    feed: EndpointId,
    /// The trunk's publisher on the shard's worker.
    trunk: EndpointId,
    tracks: HashMap<u32, TrackConfig>,
}

/// The trunk track for a consumer of the origin (`kind`, its `ssrc`,
/// `payload_type`, the `codec` of its producer and its RTX SSRC): `None`
/// while it has no producer or when its payload type is the trunk's RTX.
pub fn trunk_track(
    kind: MediaKind,
    ssrc: u32,
    payload_type: u8,
    codec: Option<Codec>,
    rtx_ssrc: Option<u32>,
) -> Option<TrackConfig> {
    let codec = codec?;
    if payload_type > 127 || payload_type == TRUNK_RTX_PT {
        return None;
    }
    Some(TrackConfig {
        kind,
        ssrc,
        payload_type,
        codec,
        rtx: rtx_ssrc
            .filter(|_| kind == MediaKind::Video)
            .map(|ssrc| RtxStream {
                ssrc,
                payload_type: TRUNK_RTX_PT,
            }),
        layer_of: None,
        red_payload_type: None,
        source: sfu_core::router::TrackSource::Camera,
    })
}

/// What changes a trunk's tracks from `have` to `want`: SSRCs to remove
/// (a track whose SSRC now carries another codec or payload type), their
/// RTX SSRCs, then tracks to add. Tracks not in `want` stay (their
/// consumer waits for its next producer).
pub fn trunk_diff(
    have: &HashMap<u32, TrackConfig>,
    want: &[TrackConfig],
) -> (Vec<u32>, Vec<u32>, Vec<TrackConfig>) {
    let mut remove = Vec::new();
    let mut rtx = Vec::new();
    let mut add = Vec::new();
    for t in want {
        match have.get(&t.ssrc) {
            Some(h) if h == t => {}
            Some(h) => {
                remove.push(h.ssrc);
                rtx.extend(h.rtx.map(|r| r.ssrc));
                add.push(*t);
            }
            None => add.push(*t),
        }
    }
    (remove, rtx, add)
}

fn consumer_track(c: &ConsumerInfo) -> Option<TrackConfig> {
    c.producer_ssrc?;
    trunk_track(c.kind, c.ssrc, c.payload_type, c.codec, c.rtx_ssrc)
}

impl AppState {
    /// New subscribers of a room go to other workers once its main worker
    /// holds `after` of its endpoints (0: never).
    pub fn set_spread_after(&self, after: usize) {
        self.spread_after.store(after, Ordering::Relaxed);
    }

    /// The room's endpoints on each worker.
    fn room_counts(model: &Model, room: &RoomEntry) -> Vec<usize> {
        let mut counts = vec![0; model.load.len()];
        for e in &room.endpoints {
            if let Some(c) = model
                .endpoints
                .get(e)
                .and_then(|e| counts.get_mut(e.worker))
            {
                *c += 1;
            }
        }
        counts
    }

    /// Whether a new subscriber of `room` can stay on this node: its main
    /// worker or a shard has room, or a worker can take a new shard.
    pub fn room_has_space(&self, room: &str) -> bool {
        let after = self.spread_after.load(Ordering::Relaxed);
        let model = self.model();
        let Some(entry) = model.rooms.get(room) else {
            return false;
        };
        if after == 0 {
            return true;
        }
        let counts = Self::room_counts(&model, entry);
        counts.get(entry.worker).is_some_and(|&n| n < after)
            || entry
                .shards
                .iter()
                .any(|s| counts.get(s.worker).is_some_and(|&n| n < after))
            || self.shard_worker(&model, entry).is_some()
    }

    /// A running worker that can take a new shard of `room`: not its main
    /// worker, without a shard of it, below its endpoint limit; the least
    /// loaded.
    fn shard_worker(&self, model: &Model, room: &RoomEntry) -> Option<usize> {
        (0..model.load.len())
            .filter(|&w| w != room.worker && !room.shards.iter().any(|s| s.worker == w))
            .filter(|&w| self.workers.get(w).is_some_and(|h| h.health().is_running()))
            .filter(|&w| model.load[w].1 < model.limits.endpoints_per_worker)
            .min_by_key(|&w| (model.load[w].1, model.load[w].0))
    }

    /// Where a new subscriber of `room` goes: (router room, worker). The
    /// caller holds the room's lock. Opens a shard when the room's workers
    /// are full; if that fails, the main worker.
    pub(super) fn subscriber_home(&self, room: &str) -> Result<(RoomId, usize), ApiError> {
        let after = self.spread_after.load(Ordering::Relaxed);
        let (main, candidate) = {
            let model = self.model();
            let entry = model
                .rooms
                .get(room)
                .ok_or_else(|| ApiError::UnknownRoom(room.to_owned()))?;
            let main = (entry.id, entry.worker);
            if after == 0 {
                return Ok(main);
            }
            let counts = Self::room_counts(&model, entry);
            if counts.get(entry.worker).is_some_and(|&n| n < after) {
                return Ok(main);
            }
            if let Some(s) = entry
                .shards
                .iter()
                .find(|s| counts.get(s.worker).is_some_and(|&n| n < after))
            {
                return Ok((s.id, s.worker));
            }
            (main, self.shard_worker(&model, entry))
        };
        let Some(worker) = candidate else {
            return Ok(main);
        };
        match self.open_shard(room, main, worker) {
            Ok(home) => Ok(home),
            Err(e) => {
                tracing::warn!(room, worker, error = %e, "cannot open a shard: the subscriber stays on the main worker");
                Ok(main)
            }
        }
    }

    /// Creates a shard of `room` (main worker room `main`) on `worker`
    /// with its trunk.
    fn open_shard(
        &self,
        room: &str,
        main: (RoomId, usize),
        worker: usize,
    ) -> Result<(RoomId, usize), ApiError> {
        let (main_id, main_worker) = main;
        let (Some(main_media), Some(shard_media)) =
            (self.media_addr(main_worker), self.media_addr(worker))
        else {
            return Err(ApiError::Internal("no media address".into()));
        };
        let (id, feed, trunk) = {
            let mut model = self.model_mut();
            model.next_room += 1;
            let id = RoomId(model.next_room);
            (id, model.fresh_endpoint_id().0, model.fresh_endpoint_id().0)
        };
        self.request(
            worker,
            Command::CreateRoom(id),
            Some(Command::DeleteRoom(id)),
        )?;
        let key = |profile: Profile| {
            let mut m = vec![0u8; profile.key_len() + profile.salt_len()];
            rand::rng().fill_bytes(&mut m);
            m
        };
        let profile = Profile::AeadAes128Gcm;
        let (up, down) = (key(profile), key(profile));
        let internal = |id, room, role, remote_master, local_master, remote| EndpointConfig {
            id,
            room,
            role,
            profile,
            remote_master,
            local_master,
            tracks: Vec::new(),
            remote: Some(remote),
            subscription: Subscription::All,
            rtcp_ssrc: None,
            rtx_payload_types: RtxPayloadTypes {
                video: (role == Role::Subscribe).then_some(TRUNK_RTX_PT),
                audio: None,
            },
            twcc_send_extension: None,
            participant: None,
            audio_level_extension: None,
            red_payload_type: None,
        };
        let undo_room = || {
            let _ = self.request(worker, Command::DeleteRoom(id), None);
        };
        let feed_config = internal(
            feed,
            main_id,
            Role::Subscribe,
            up.clone(),
            down.clone(),
            shard_media,
        );
        let consumers = match self.request(
            main_worker,
            Command::AddEndpoint(Box::new(feed_config)),
            Some(Command::RemoveEndpoint(feed)),
        ) {
            Ok(Outcome::Consumers(c)) => c,
            Ok(_) => Vec::new(),
            Err(e) => {
                undo_room();
                return Err(e);
            }
        };
        let trunk_config = internal(trunk, id, Role::Publish, down, up, main_media);
        let added = self
            .request(
                worker,
                Command::AddEndpoint(Box::new(trunk_config)),
                Some(Command::RemoveEndpoint(trunk)),
            )
            .and_then(|_| {
                let tracks: Vec<TrackConfig> =
                    consumers.iter().filter_map(consumer_track).collect();
                if !tracks.is_empty() {
                    self.request(
                        worker,
                        Command::AddTracks {
                            endpoint: trunk,
                            tracks: tracks.clone(),
                        },
                        None,
                    )?;
                }
                Ok(tracks)
            });
        let tracks = match added {
            Ok(t) => t,
            Err(e) => {
                let _ = self.request(main_worker, Command::RemoveEndpoint(feed), None);
                undo_room();
                return Err(e);
            }
        };
        let mut model = self.model_mut();
        let Some(entry) = model.rooms.get_mut(room) else {
            drop(model);
            let _ = self.request(main_worker, Command::RemoveEndpoint(feed), None);
            undo_room();
            return Err(ApiError::UnknownRoom(room.to_owned()));
        };
        entry.shards.push(Shard {
            worker,
            id,
            feed,
            trunk,
            tracks: tracks.into_iter().map(|t| (t.ssrc, t)).collect(),
        });
        model.load[worker].0 += 1;
        tracing::info!(room, worker, "room spread to another worker");
        Ok((id, worker))
    }

    /// Brings every shard's trunk tracks in step with the producers of its
    /// room (the consumers of its feed). Blocks on the workers.
    pub fn sync_shards(&self) {
        // (room, main worker, its trunks as (feed, shard worker, trunk)).
        type Trunks = Vec<(EndpointId, usize, EndpointId)>;
        let sharded: Vec<(String, usize, Trunks)> = self
            .model()
            .rooms
            .iter()
            .filter(|(_, r)| !r.shards.is_empty())
            .map(|(n, r)| {
                (
                    n.clone(),
                    r.worker,
                    r.shards
                        .iter()
                        .map(|s| (s.feed, s.worker, s.trunk))
                        .collect(),
                )
            })
            .collect();
        for (room, main, shards) in sharded {
            let _serial = self.serial(&room);
            for (feed, worker, trunk) in shards {
                let Ok(consumers) = self.worker_consumers(main, feed) else {
                    continue;
                };
                let want: Vec<TrackConfig> = consumers.iter().filter_map(consumer_track).collect();
                let (remove, _rtx, add) = {
                    let model = self.model();
                    let Some(s) = model
                        .rooms
                        .get(&room)
                        .and_then(|r| r.shards.iter().find(|s| s.trunk == trunk))
                    else {
                        continue;
                    };
                    trunk_diff(&s.tracks, &want)
                };
                if remove.is_empty() && add.is_empty() {
                    continue;
                }
                let removed = remove.is_empty()
                    || self
                        .request(
                            worker,
                            Command::RemoveTracks {
                                endpoint: trunk,
                                ssrcs: remove.clone(),
                            },
                            None,
                        )
                        .is_ok();
                let added = removed
                    && self
                        .request(
                            worker,
                            Command::AddTracks {
                                endpoint: trunk,
                                tracks: add.clone(),
                            },
                            None,
                        )
                        .map_err(
                            |e| tracing::warn!(room, worker, error = %e, "cannot add trunk tracks"),
                        )
                        .is_ok();
                let mut model = self.model_mut();
                if let Some(s) = model
                    .rooms
                    .get_mut(&room)
                    .and_then(|r| r.shards.iter_mut().find(|s| s.trunk == trunk))
                {
                    if removed {
                        for ssrc in &remove {
                            s.tracks.remove(ssrc);
                        }
                    }
                    if added {
                        s.tracks.extend(add.into_iter().map(|t| (t.ssrc, t)));
                    }
                }
            }
        }
    }

    /// The room's shards as (worker, router room), for deleting them.
    pub(super) fn shards_of(entry: &RoomEntry) -> Vec<(usize, RoomId)> {
        entry.shards.iter().map(|s| (s.worker, s.id)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trunk_tracks_follow_the_consumers() {
        let v = trunk_track(MediaKind::Video, 10, 96, Some(Codec::Vp8), Some(11)).unwrap();
        assert_eq!(
            v.rtx.map(|r| (r.ssrc, r.payload_type)),
            Some((11, TRUNK_RTX_PT))
        );
        let a = trunk_track(MediaKind::Audio, 20, 111, Some(Codec::Opus), Some(21)).unwrap();
        assert_eq!(a.rtx, None, "audio has no RTX on a trunk");
        assert!(trunk_track(MediaKind::Video, 30, 96, None, None).is_none());
        assert!(trunk_track(MediaKind::Video, 30, TRUNK_RTX_PT, Some(Codec::Vp8), None).is_none());
        let have: HashMap<u32, TrackConfig> = [(10, v)].into();
        assert_eq!(trunk_diff(&have, &[v]), (vec![], vec![], vec![]));
        let mut h264 = v;
        h264.codec = Codec::H264;
        assert_eq!(
            trunk_diff(&have, &[h264, a]),
            (vec![10], vec![11], vec![h264, a])
        );
    }
}
