//! The WHEP extensions of draft-ietf-wish-whep (§4.4 "Protocol
//! extensions" of draft-ietf-wish-whep-01): per-session server-sent
//! events and video layer selection.
//!
//! A WHEP session's `201` answer carries two `Link` headers, relative to
//! the session's resource:
//!
//! ```text
//! Link: </whep/{room}/{id}/sse>; rel="urn:ietf:params:whep:ext:core:server-sent-events"; events="active,inactive,layers,viewercount,dominantspeaker,activespeakers,slots"
//! Link: </whep/{room}/{id}/layer>; rel="urn:ietf:params:whep:ext:core:layer"
//! ```
//!
//! | method and path | answer |
//! |---|---|
//! | `POST /whep/{room}/{id}/sse` | 201, `Location: /whep/{room}/{id}/sse/{stream}`; body: a JSON array of event names (empty body: all of them) |
//! | `GET /whep/{room}/{id}/sse/{stream}` | 200 `text/event-stream` |
//! | `DELETE /whep/{room}/{id}/sse/{stream}` | 200; the stream's `GET` then answers 404 |
//! | `POST /whep/{room}/{id}/layer` | 200; body `{"mediaId", "encodingId" \| "spatialLayerId" \| "maxSpatialLayerId"}` or `{}` |
//!
//! # Authorization
//! Every request needs the bearer token a WHEP session needs: `subscribe`
//! (or `admin`) for the path's room, and the session must be a WHEP
//! session of that room (else 404), so a token for one room never reaches
//! another room's sessions. A session created with a token identity
//! (`sub`) is reserved to tokens of that identity (or `admin`): another
//! viewer of the same room gets 403. Browsers cannot give `EventSource` an
//! `Authorization` header; a player reads the stream with `fetch()` and
//! its body's reader instead (the stream URL alone, though unguessable, is
//! not enough).
//!
//! # Events
//! Each frame is `event: <name>` and one `data:` line of JSON. A `GET`
//! first gets the current state (`active` per active track, `layers`,
//! `viewercount`, `slots`; never `inactive`), then changes as they
//! happen; events that occur while no `GET` is open are not kept. The
//! draft's four events, as this node fills them:
//!
//! * `active` / `inactive`: a track of the room began or stopped flowing:
//!   it is active while one of its layers had a packet within the last two
//!   seconds, so a publisher that joins, leaves or pauses its track makes
//!   one. Data: `{"endpoint", "participant", "kind", "track",
//!   "mediaIds"}`: the publishing endpoint, its participant (or `null`),
//!   `audio` or `video`, the track's SSRC (its first layer's), and the
//!   m-line indexes of this session that carry it now.
//! * `layers`: per video m-line carrying a track (keyed by its m-line
//!   index, as the draft asks), `active` (`id`, `simulcastIdx`, `bitrate`),
//!   `inactive` (`id`, `simulcastIdx`) and `layers` (`encodingId`,
//!   `simulcastIdx`, `spatialLayerId`, `bitrate`), highest first. `id` and
//!   `encodingId` are the layer's `rid`, or its SSRC in decimal for a layer
//!   declared without one; `simulcastIdx` is its place in the publisher's
//!   declaration (ascending quality); `spatialLayerId` is its rank among
//!   the active layers by measured bitrate (0: lowest), the value the layer
//!   extension takes; `bitrate` (bits per second) is measured over the last
//!   second and missing before. Width and height are not measured: never
//!   sent. Sent when the layers or their order change, and every five
//!   seconds at most while only bitrates change.
//! * `viewercount`: `{"viewercount": N}`, the room's WHEP sessions.
//!
//! This node's own events, for pages that label their tiles:
//!
//! * `dominantspeaker`: `{"endpoint", "participant"}`, the room's dominant
//!   speaker changed (the node event `dominant_speaker`).
//! * `activespeakers`: `{"endpoints": [...]}`, the room's talkers, most
//!   recent first (`active_speakers`).
//! * `slots`: `{"slots": [{"mediaId", "kind", "slot", "endpoint",
//!   "participant"}]}`, which publisher each m-line of this session shows
//!   now (`null`: none): a last-N session's slots follow the speakers.
//!
//! Changes are found by comparing the room's producers and the session's
//! consumers, asked of the room's worker ([`Command::Producers`],
//! [`Command::Consumers`]) after node events that may change them (joins,
//! leaves, bound layers, speaker changes) and once a second
//! ([`REFRESH`]), for the sessions with an open stream only.
//!
//! # Layer selection
//! `mediaId` is a video m-line index as a string (default: the first
//! video m-line carrying a track). `encodingId` picks a layer by the id
//! `layers` gave it, `spatialLayerId` or `maxSpatialLayerId` by rank; `{}`
//! returns to the node's choice. The node caps the m-line's consumer at
//! that layer ([`Command::SetMaxLayer`], as `PUT
//! /v1/rooms/{room}/endpoints/{id}/layers` does): the bandwidth estimate
//! may still choose a lower one, the switch waits for the new layer's
//! keyframe, and an `encodingId` is turned into its rank when asked (if
//! a lower layer stops later, the cap keeps the rank). Temporal layers
//! (`temporalLayerId`, `maxTemporalLayerId`) are refused with 422
//! `unsupported_layer`; a malformed body is 400, an unknown `mediaId` 422
//! `unknown_media`, an unknown or inactive `encodingId` 422
//! `unknown_layer` / `layer_inactive`.
//!
//! # Limits
//! [`MAX_STREAMS_PER_SESSION`] streams per session (503 `too_many` past
//! it, as for the other limits); each open `GET` buffers at most [`STREAM_BUFFER`] frames: a reader
//! that falls that far behind is dropped (its `GET` ends; a new `GET` on
//! the same URL starts again from the current state) and counted in
//! `sfu_whep_event_streams_dropped_total`. A newer `GET` on a stream ends
//! the older one. A `: keepalive` comment every
//! [`KEEPALIVE`] (15 s) keeps proxies from timing out.
//! A session's streams end when it ends (deleted, removed by its worker,
//! its room deleted) and when the node shuts down.
//!
//! # Metrics
//! `sfu_whep_event_streams` (open `GET`s) and
//! `sfu_whep_event_streams_dropped_total` ([`render`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use hyper::body::Frame;
use serde_json::{Value, json};
use sfu_core::router::{Command, ConsumerInfo, EndpointId, MediaKind, Outcome, ProducerInfo};
use tokio::sync::{broadcast, mpsc};

use crate::error::ApiError;
use crate::events::KEEPALIVE;
use crate::state::{AppState, RoomSnapshot};
use crate::whip::WhipError;

/// The `rel` of the server-sent events extension.
pub const SSE_REL: &str = "urn:ietf:params:whep:ext:core:server-sent-events";

/// The `rel` of the video layer selection extension.
pub const LAYER_REL: &str = "urn:ietf:params:whep:ext:core:layer";

/// Event streams one WHEP session may create.
pub const MAX_STREAMS_PER_SESSION: usize = 4;

/// Frames an open stream may hold for a slow reader before it is dropped.
pub const STREAM_BUFFER: usize = 64;

/// How often the sessions with an open stream are compared with their
/// worker's state even without a node event.
pub const REFRESH: Duration = Duration::from_secs(1);

/// How long after a node event the affected room is compared (events of a
/// burst are taken together).
const DEBOUNCE: Duration = Duration::from_millis(50);

/// The shortest time between two `layers` events that differ only in
/// bitrates.
const LAYERS_EVERY: Duration = Duration::from_secs(5);

/// An event a stream may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A track began flowing.
    Active,
    /// A track stopped flowing.
    Inactive,
    /// The video layers a session's m-lines can choose from.
    Layers,
    /// The room's WHEP sessions.
    ViewerCount,
    /// The room's dominant speaker (node-specific).
    DominantSpeaker,
    /// The room's talkers (node-specific).
    ActiveSpeakers,
    /// Who each of the session's m-lines shows (node-specific).
    Slots,
}

/// Every [`Kind`] with its name, in the order the `Link` header lists them.
pub const KINDS: [(Kind, &str); 7] = [
    (Kind::Active, "active"),
    (Kind::Inactive, "inactive"),
    (Kind::Layers, "layers"),
    (Kind::ViewerCount, "viewercount"),
    (Kind::DominantSpeaker, "dominantspeaker"),
    (Kind::ActiveSpeakers, "activespeakers"),
    (Kind::Slots, "slots"),
];

impl Kind {
    fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// Its event name.
    pub fn name(self) -> &'static str {
        KINDS[self as usize].1
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        KINDS.iter().find(|(_, n)| *n == name).map(|&(k, _)| k)
    }
}

/// The `events` attribute of the `Link` header: every event name.
pub fn event_names() -> String {
    KINDS.map(|(_, n)| n).join(",")
}

/// The event mask of a stream-creation body: a JSON array of event names
/// (an empty body: every event). 400 for anything else.
pub fn parse_event_list(body: &[u8]) -> Result<u8, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(u8::MAX);
    }
    let names: Vec<String> = serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!("the body must be a JSON array of event names: {e}"))
    })?;
    names.iter().try_fold(0u8, |mask, name| {
        Kind::parse(name).map(|k| mask | k.bit()).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unknown event {name:?}; this node sends {}",
                event_names()
            ))
        })
    })
}

/// What one m-line of a session carries: its index among the offer's
/// m-lines, its consumer's kind and slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    /// The m-line index (the draft's `mediaId`).
    pub mline: usize,
    /// Audio or video.
    pub kind: MediaKind,
    /// The consumer's slot within its kind.
    pub slot: u16,
}

/// One stream of a session.
#[derive(Debug)]
struct Stream {
    id: String,
    mask: u8,
    /// The open `GET`'s frames, if one is open.
    tx: Option<mpsc::Sender<Bytes>>,
}

impl Stream {
    fn open(&self) -> bool {
        self.tx.as_ref().is_some_and(|tx| !tx.is_closed())
    }
}

/// What a session's streams were last told.
#[derive(Debug, Default, Clone, PartialEq)]
struct View {
    /// Active tracks by (publisher, track SSRC): their `active` data.
    active: BTreeMap<(String, u32), Value>,
    layers: Value,
    viewers: usize,
    slots: Value,
}

#[derive(Debug)]
struct SessionEntry {
    room: String,
    sections: Vec<Section>,
    streams: Vec<Stream>,
    /// What its open streams were last told, and when `layers` was sent.
    last: Option<(View, Instant)>,
}

/// The WHEP sessions' event streams: see the [module documentation](self).
#[derive(Debug, Default)]
pub struct WhepEvents {
    sessions: Mutex<HashMap<String, SessionEntry>>,
    open: Arc<AtomicU64>,
    dropped: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update is a single insert or remove: consistent after a panic.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl WhepEvents {
    /// Records a created WHEP session and what its m-lines carry.
    pub fn register(&self, endpoint: &str, room: &str, sections: Vec<Section>) {
        lock(&self.sessions).insert(
            endpoint.to_owned(),
            SessionEntry {
                room: room.to_owned(),
                sections,
                streams: Vec::new(),
                last: None,
            },
        );
    }

    /// Forgets a session: its streams end.
    pub fn end_session(&self, endpoint: &str) {
        lock(&self.sessions).remove(endpoint);
    }

    /// Ends every stream (the node is shutting down).
    pub fn close_all(&self) {
        lock(&self.sessions).clear();
    }

    /// Open `GET`s.
    pub fn open_streams(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Readers dropped for falling [`STREAM_BUFFER`] frames behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// A new stream of `endpoint` for the events of `mask`; returns its id.
    pub(crate) fn create_stream(&self, endpoint: &str, mask: u8) -> Result<String, ApiError> {
        let mut sessions = lock(&self.sessions);
        let entry = sessions
            .get_mut(endpoint)
            .ok_or_else(|| ApiError::UnknownEndpoint(endpoint.to_owned()))?;
        if entry.streams.len() >= MAX_STREAMS_PER_SESSION {
            return Err(ApiError::TooMany(format!(
                "event streams per WHEP session (at most {MAX_STREAMS_PER_SESSION})"
            )));
        }
        let id = format!("{:032x}", rand::random::<u128>());
        entry.streams.push(Stream {
            id: id.clone(),
            mask,
            tx: None,
        });
        Ok(id)
    }

    /// Deletes a stream (its open `GET` ends).
    pub(crate) fn delete_stream(&self, endpoint: &str, stream: &str) -> Result<(), ApiError> {
        let mut sessions = lock(&self.sessions);
        let entry = sessions
            .get_mut(endpoint)
            .ok_or_else(|| ApiError::UnknownEndpoint(endpoint.to_owned()))?;
        let before = entry.streams.len();
        entry.streams.retain(|s| s.id != stream);
        if entry.streams.len() == before {
            return Err(ApiError::NotFound);
        }
        Ok(())
    }

    /// The m-lines of a registered session.
    fn sections(&self, endpoint: &str) -> Option<Vec<Section>> {
        lock(&self.sessions)
            .get(endpoint)
            .map(|e| e.sections.clone())
    }

    /// The stream's event mask, if it exists.
    fn stream_mask(&self, endpoint: &str, stream: &str) -> Option<u8> {
        lock(&self.sessions)
            .get(endpoint)?
            .streams
            .iter()
            .find(|s| s.id == stream)
            .map(|s| s.mask)
    }

    /// Opens a `GET` on a stream: its body starts with `view` (the
    /// session's state now); an older `GET` of the stream ends.
    fn open_stream(
        &self,
        endpoint: &str,
        stream: &str,
        view: View,
    ) -> Result<axum::body::Body, ApiError> {
        let mut sessions = lock(&self.sessions);
        let entry = sessions
            .get_mut(endpoint)
            .ok_or_else(|| ApiError::UnknownEndpoint(endpoint.to_owned()))?;
        let others_open = entry.streams.iter().any(|s| s.id != stream && s.open());
        let s = entry
            .streams
            .iter_mut()
            .find(|s| s.id == stream)
            .ok_or(ApiError::NotFound)?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        for (kind, data) in initial_frames(&view) {
            if s.mask & kind.bit() != 0 {
                // The buffer holds the initial state of a room of any size
                // only if it is small; the rest is dropped as for a slow
                // reader: the frames are the same on the next GET.
                let _ = tx.try_send(frame(kind, &data));
            }
        }
        s.tx = Some(tx);
        if !others_open || entry.last.is_none() {
            entry.last = Some((view, Instant::now()));
        }
        Ok(axum::body::Body::new(StreamBody {
            rx,
            keepalive: keepalive(),
            _open: crate::events::OpenStream::new(&self.open),
        }))
    }

    /// The rooms with a session that has an open stream.
    fn rooms(&self) -> HashSet<String> {
        lock(&self.sessions)
            .values()
            .filter(|e| e.streams.iter().any(Stream::open))
            .map(|e| e.room.clone())
            .collect()
    }

    /// Whether `room` has a session with an open stream.
    fn watches(&self, room: &str) -> bool {
        lock(&self.sessions)
            .values()
            .any(|e| e.room == room && e.streams.iter().any(Stream::open))
    }

    /// Sends `data` as a `kind` event to every open stream of `room`'s
    /// sessions that asked for it.
    fn send_room(&self, room: &str, kind: Kind, data: &Value) {
        let bytes = frame(kind, data);
        let mut sessions = lock(&self.sessions);
        for entry in sessions.values_mut().filter(|e| e.room == room) {
            self.send(entry, kind, &bytes);
        }
    }

    /// Sends a frame to the session's open streams that asked for `kind`;
    /// drops a reader whose buffer is full.
    fn send(&self, entry: &mut SessionEntry, kind: Kind, bytes: &Bytes) {
        for s in entry
            .streams
            .iter_mut()
            .filter(|s| s.mask & kind.bit() != 0)
        {
            let Some(tx) = &s.tx else {
                continue;
            };
            match tx.try_send(bytes.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(stream = %s.id, "WHEP event stream reader too slow; dropped");
                    s.tx = None;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => s.tx = None,
            }
        }
    }

    /// Sends the differences between a session's last view and `now`.
    fn update(&self, endpoint: &str, now: View, at: Instant) {
        let mut sessions = lock(&self.sessions);
        let Some(entry) = sessions.get_mut(endpoint) else {
            return;
        };
        let Some((last, layers_at)) = entry.last.clone() else {
            entry.last = Some((now, at));
            return;
        };
        let mut out: Vec<(Kind, Value)> = Vec::new();
        for (key, data) in &now.active {
            if !last.active.contains_key(key) {
                out.push((Kind::Active, data.clone()));
            }
        }
        for (key, data) in &last.active {
            if !now.active.contains_key(key) {
                out.push((Kind::Inactive, data.clone()));
            }
        }
        let mut layers_sent = layers_at;
        if now.layers != last.layers
            && (without_bitrates(&now.layers) != without_bitrates(&last.layers)
                || at.saturating_duration_since(layers_at) >= LAYERS_EVERY)
        {
            out.push((Kind::Layers, now.layers.clone()));
            layers_sent = at;
        }
        if now.viewers != last.viewers {
            out.push((Kind::ViewerCount, json!({ "viewercount": now.viewers })));
        }
        if now.slots != last.slots {
            out.push((Kind::Slots, now.slots.clone()));
        }
        // Layers differing only in bitrates and not sent: keep the old
        // ones, so the next comparison still sees the change.
        let mut kept = now;
        if layers_sent != at && kept.layers != last.layers {
            kept.layers = last.layers;
        }
        entry.last = Some((kept, layers_sent));
        for (kind, data) in out {
            self.send(entry, kind, &frame(kind, &data));
        }
    }

    /// Forgets sessions the model no longer has (a removal raced their
    /// registration).
    fn prune(&self, state: &AppState) {
        // The model's lock is never taken under this one: removals end
        // sessions while they hold the model's.
        let known: Vec<(String, String)> = lock(&self.sessions)
            .iter()
            .map(|(name, e)| (name.clone(), e.room.clone()))
            .collect();
        let gone: Vec<String> = known
            .into_iter()
            .filter(|(name, room)| state.whep_session(room, name).is_err())
            .map(|(name, _)| name)
            .collect();
        if gone.is_empty() {
            return;
        }
        let mut sessions = lock(&self.sessions);
        for name in gone {
            sessions.remove(&name);
        }
    }

    /// The open sessions of `room`.
    fn watched_sessions(&self, room: &str) -> Vec<(String, Vec<Section>)> {
        lock(&self.sessions)
            .iter()
            .filter(|(_, e)| e.room == room && e.streams.iter().any(Stream::open))
            .map(|(name, e)| (name.clone(), e.sections.clone()))
            .collect()
    }
}

/// `event: <name>\ndata: <json>\n\n`.
fn frame(kind: Kind, data: &Value) -> Bytes {
    Bytes::from(format!("event: {}\ndata: {data}\n\n", kind.name()))
}

/// The events a new `GET` starts with.
fn initial_frames(view: &View) -> Vec<(Kind, Value)> {
    let mut out: Vec<(Kind, Value)> = view
        .active
        .values()
        .map(|d| (Kind::Active, d.clone()))
        .collect();
    out.push((Kind::Layers, view.layers.clone()));
    out.push((Kind::ViewerCount, json!({ "viewercount": view.viewers })));
    out.push((Kind::Slots, view.slots.clone()));
    out
}

/// `layers` data with every `bitrate` value replaced by `true`: whether a
/// layer is measured is part of its structure, its value is not.
fn without_bitrates(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = if k == "bitrate" {
                        Value::Bool(true)
                    } else {
                        without_bitrates(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_bitrates).collect()),
        other => other.clone(),
    }
}

fn keepalive() -> tokio::time::Interval {
    let mut i = tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    i
}

/// An open `GET`'s body: its frames, and keepalive comments while idle.
struct StreamBody {
    rx: mpsc::Receiver<Bytes>,
    keepalive: tokio::time::Interval,
    _open: crate::events::OpenStream,
}

impl hyper::body::Body for StreamBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(b)) => {
                self.keepalive.reset();
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            // The sender is gone: the stream or its session ended.
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        match self.keepalive.poll_tick(cx) {
            Poll::Ready(_) => Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                b": keepalive\n\n",
            ))))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The `hex` participant id as events show it.
fn participant_hex(p: Option<u64>) -> Value {
    p.map_or(Value::Null, |p| Value::String(format!("{p:016x}")))
}

/// A session's view of its room: active tracks, its layers, the viewer
/// count and its slots.
fn view(
    sections: &[Section],
    consumers: &[ConsumerInfo],
    producers: &[ProducerInfo],
    room: &RoomSnapshot,
) -> View {
    let consumer = |s: &Section| {
        consumers
            .iter()
            .find(|c| c.kind == s.kind && c.slot == s.slot)
            .and_then(|c| c.producer_ssrc)
    };
    let mut active = BTreeMap::new();
    for p in producers.iter().filter(|p| p.layer_rank.is_some()) {
        let Some(publisher) = room.endpoints.get(&p.endpoint) else {
            continue;
        };
        let key = (publisher.name.clone(), p.group);
        if active.contains_key(&key) {
            continue;
        }
        let media_ids: Vec<String> = sections
            .iter()
            .filter(|s| consumer(s) == Some(p.group))
            .map(|s| s.mline.to_string())
            .collect();
        active.insert(
            key,
            json!({
                "endpoint": publisher.name,
                "participant": participant_hex(publisher.participant),
                "kind": p.kind.as_str(),
                "track": p.group,
                "mediaIds": media_ids,
            }),
        );
    }
    let mut layers = serde_json::Map::new();
    let mut slots = Vec::new();
    for s in sections {
        let track = consumer(s);
        let publisher = track
            .and_then(|t| producers.iter().find(|p| p.ssrc == t))
            .and_then(|p| room.endpoints.get(&p.endpoint));
        slots.push(json!({
            "mediaId": s.mline.to_string(),
            "kind": s.kind.as_str(),
            "slot": s.slot,
            "endpoint": publisher.map(|p| p.name.clone()),
            "participant": participant_hex(publisher.and_then(|p| p.participant)),
        }));
        if s.kind != MediaKind::Video {
            continue;
        }
        if let Some(track) = track {
            layers.insert(s.mline.to_string(), track_layers(track, producers, room));
        }
    }
    View {
        active,
        layers: Value::Object(layers),
        viewers: room.viewers,
        slots: json!({ "slots": slots }),
    }
}

/// A layer of a track, for `layers` and layer selection.
#[derive(Debug, Clone)]
struct Layer {
    /// Its `rid`, or its SSRC in decimal.
    id: String,
    simulcast_idx: usize,
    rank: Option<u8>,
    bitrate: Option<u64>,
}

/// The layers of track `track` in declaration order.
fn layers_of(track: u32, producers: &[ProducerInfo], room: &RoomSnapshot) -> Vec<Layer> {
    let mut layers: Vec<(usize, &ProducerInfo)> = producers
        .iter()
        .filter(|p| p.group == track)
        .enumerate()
        .collect();
    let rids = producers
        .iter()
        .find(|p| p.ssrc == track)
        .and_then(|p| room.endpoints.get(&p.endpoint))
        .map(|e| e.rids.as_slice())
        .unwrap_or_default();
    // Layers bound by rid in the publisher's declared order; the others
    // in the order their tracks were declared.
    let order = |(i, p): &(usize, &ProducerInfo)| {
        p.rid
            .as_deref()
            .and_then(|r| rids.iter().position(|d| d == r))
            .unwrap_or(*i)
    };
    layers.sort_by_key(order);
    layers
        .iter()
        .enumerate()
        .map(|(idx, (_, p))| Layer {
            id: p.rid.clone().unwrap_or_else(|| p.ssrc.to_string()),
            simulcast_idx: idx,
            rank: p.layer_rank,
            bitrate: p.bitrate,
        })
        .collect()
}

/// The `layers` entry of one m-line.
fn track_layers(track: u32, producers: &[ProducerInfo], room: &RoomSnapshot) -> Value {
    let layers = layers_of(track, producers, room);
    let with_bitrate = |mut v: Value, bitrate: Option<u64>| {
        if let (Some(b), Some(m)) = (bitrate, v.as_object_mut()) {
            m.insert("bitrate".into(), b.into());
        }
        v
    };
    let mut active: Vec<&Layer> = layers.iter().filter(|l| l.rank.is_some()).collect();
    active.sort_by_key(|l| std::cmp::Reverse(l.rank));
    json!({
        "active": active.iter().map(|l| with_bitrate(
            json!({"id": l.id, "simulcastIdx": l.simulcast_idx}),
            l.bitrate,
        )).collect::<Vec<_>>(),
        "inactive": layers.iter().filter(|l| l.rank.is_none()).map(|l| {
            json!({"id": l.id, "simulcastIdx": l.simulcast_idx})
        }).collect::<Vec<_>>(),
        "layers": active.iter().map(|l| with_bitrate(
            json!({
                "encodingId": l.id,
                "simulcastIdx": l.simulcast_idx,
                "spatialLayerId": l.rank,
            }),
            l.bitrate,
        )).collect::<Vec<_>>(),
    })
}

/// What the room's worker says about a room and one of its sessions.
fn ask_room(state: &AppState, snapshot: &RoomSnapshot) -> Result<Vec<ProducerInfo>, ApiError> {
    match state.request(snapshot.worker, Command::Producers(snapshot.id), None)? {
        Outcome::Producers(p) => Ok(p),
        other => Err(ApiError::Internal(format!(
            "the worker answered a producer listing with {other:?}"
        ))),
    }
}

fn ask_consumers(
    state: &AppState,
    worker: usize,
    id: EndpointId,
) -> Result<Vec<ConsumerInfo>, ApiError> {
    state.worker_consumers(worker, id)
}

/// The session's view now. Blocks on the worker.
fn session_view(
    state: &AppState,
    room: &str,
    endpoint: &str,
    sections: &[Section],
) -> Result<View, ApiError> {
    let snapshot = state
        .room_snapshot(room)
        .ok_or_else(|| ApiError::UnknownRoom(room.to_owned()))?;
    let (id, worker, _) = state.whep_session(room, endpoint)?;
    let producers = ask_room(state, &snapshot)?;
    let consumers = ask_consumers(state, worker, id)?;
    Ok(view(sections, &consumers, &producers, &snapshot))
}

/// Compares the watched sessions of `rooms` with their worker's state and
/// sends what changed. Blocks on the workers.
pub fn refresh(state: &AppState, rooms: &HashSet<String>) {
    let hub = state.whep_events();
    hub.prune(state);
    let at = Instant::now();
    for room in rooms {
        let sessions = hub.watched_sessions(room);
        if sessions.is_empty() {
            continue;
        }
        let Some(snapshot) = state.room_snapshot(room) else {
            continue;
        };
        let Ok(producers) = ask_room(state, &snapshot) else {
            continue;
        };
        for (name, sections) in sessions {
            let Ok((id, worker, _)) = state.whep_session(room, &name) else {
                continue;
            };
            let Ok(consumers) = ask_consumers(state, worker, id) else {
                continue;
            };
            hub.update(
                &name,
                view(&sections, &consumers, &producers, &snapshot),
                at,
            );
        }
    }
}

/// The task that keeps the streams current: forwards the speaker events of
/// watched rooms and compares a room after node events that may change it
/// and every [`REFRESH`]. Runs until the node's event hub is dropped.
pub async fn run(state: Arc<AppState>) {
    let mut events = state.events().subscribe();
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty: HashSet<String> = HashSet::new();
    let mut due: Option<tokio::time::Instant> = None;
    loop {
        let due_at = due;
        let wait = async move {
            match due_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tick.tick() => {
                dirty.extend(state.whep_events().rooms());
                due.get_or_insert_with(tokio::time::Instant::now);
            }
            received = events.recv() => match received {
                Ok(p) => {
                    let Some(room) = p.room.as_deref() else { continue };
                    if !matches!(
                        p.kind,
                        "participant_joined" | "participant_left" | "producer_bound"
                            | "dominant_speaker" | "active_speakers"
                    ) || !state.whep_events().watches(room)
                    {
                        continue;
                    }
                    forward_speakers(state.whep_events(), room, p.kind, &p.json);
                    dirty.insert(room.to_owned());
                    due.get_or_insert_with(|| tokio::time::Instant::now() + DEBOUNCE);
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    dirty.extend(state.whep_events().rooms());
                    due.get_or_insert_with(tokio::time::Instant::now);
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            () = wait => {
                due = None;
                let rooms = std::mem::take(&mut dirty);
                let state = Arc::clone(&state);
                let _ = tokio::task::spawn_blocking(move || refresh(&state, &rooms)).await;
            }
        }
    }
}

/// Sends a `dominant_speaker` or `active_speakers` node event (its
/// envelope as JSON) to the room's streams.
fn forward_speakers(hub: &WhepEvents, room: &str, kind: &str, envelope: &str) {
    let Ok(v) = serde_json::from_str::<Value>(envelope) else {
        return;
    };
    match kind {
        "dominant_speaker" => hub.send_room(
            room,
            Kind::DominantSpeaker,
            &json!({"endpoint": v["endpoint"], "participant": v["participant"]}),
        ),
        "active_speakers" => hub.send_room(
            room,
            Kind::ActiveSpeakers,
            &json!({"endpoints": v["endpoints"]}),
        ),
        _ => {}
    }
}

/// Opens a `GET` on a stream of a session: the current state first.
/// Blocks on the worker.
pub(crate) fn open(
    state: &AppState,
    room: &str,
    endpoint: &str,
    stream: &str,
) -> Result<axum::body::Body, ApiError> {
    let hub = state.whep_events();
    let sections = hub
        .sections(endpoint)
        .ok_or_else(|| ApiError::UnknownEndpoint(endpoint.to_owned()))?;
    if hub.stream_mask(endpoint, stream).is_none() {
        return Err(ApiError::NotFound);
    }
    let view = session_view(state, room, endpoint, &sections)?;
    hub.open_stream(endpoint, stream, view)
}

/// A layer selection request (the draft's JSON object).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct LayerRequest {
    media_id: Option<String>,
    encoding_id: Option<String>,
    spatial_layer_id: Option<u8>,
    max_spatial_layer_id: Option<u8>,
    temporal_layer_id: Option<u8>,
    max_temporal_layer_id: Option<u8>,
}

/// Parses a layer selection body (400 if malformed or contradictory).
pub(crate) fn parse_layer_request(body: &[u8]) -> Result<LayerRequest, ApiError> {
    let r: LayerRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("bad layer selection: {e}")))?;
    let chosen = [
        r.encoding_id.is_some(),
        r.spatial_layer_id.is_some(),
        r.max_spatial_layer_id.is_some(),
    ];
    if chosen.iter().filter(|&&c| c).count() > 1 {
        return Err(ApiError::BadRequest(
            "give at most one of encodingId, spatialLayerId and maxSpatialLayerId".into(),
        ));
    }
    Ok(r)
}

/// 422 with `code`.
fn unprocessable(code: &'static str, message: String) -> WhipError {
    WhipError::Unsupported { code, message }
}

/// Applies a layer selection to a session. Blocks on the worker.
pub(crate) fn select_layer(
    state: &AppState,
    room: &str,
    endpoint: &str,
    request: &LayerRequest,
) -> Result<(), WhipError> {
    if request.temporal_layer_id.is_some() || request.max_temporal_layer_id.is_some() {
        return Err(unprocessable(
            "unsupported_layer",
            "this node selects simulcast layers only, not temporal layers".into(),
        ));
    }
    let (id, worker, _) = state.whep_session(room, endpoint)?;
    let sections = state
        .whep_events()
        .sections(endpoint)
        .ok_or_else(|| ApiError::UnknownEndpoint(endpoint.to_owned()))?;
    let consumers = ask_consumers(state, worker, id)?;
    let carried = |s: &Section| {
        consumers
            .iter()
            .find(|c| c.kind == s.kind && c.slot == s.slot)
            .and_then(|c| c.producer_ssrc)
    };
    let video = sections.iter().filter(|s| s.kind == MediaKind::Video);
    let section = match &request.media_id {
        Some(m) => video
            .clone()
            .find(|s| s.mline.to_string() == *m)
            .ok_or_else(|| unprocessable("unknown_media", format!("no video m-line {m:?}")))?,
        None => video
            .clone()
            .find(|s| carried(s).is_some())
            .or_else(|| video.clone().next())
            .ok_or_else(|| {
                unprocessable("unknown_media", "the session has no video m-line".into())
            })?,
    };
    let max_layer = match (
        &request.encoding_id,
        request.spatial_layer_id,
        request.max_spatial_layer_id,
    ) {
        (Some(encoding), _, _) => {
            let track = carried(section).ok_or_else(|| {
                unprocessable(
                    "unknown_layer",
                    format!("m-line {} carries no track now", section.mline),
                )
            })?;
            let snapshot = state
                .room_snapshot(room)
                .ok_or_else(|| ApiError::UnknownRoom(room.to_owned()))?;
            let producers = ask_room(state, &snapshot)?;
            let layer = layers_of(track, &producers, &snapshot)
                .into_iter()
                .find(|l| l.id == *encoding)
                .ok_or_else(|| {
                    unprocessable(
                        "unknown_layer",
                        format!("the track has no layer {encoding:?}"),
                    )
                })?;
            Some(layer.rank.ok_or_else(|| {
                unprocessable(
                    "layer_inactive",
                    format!("layer {encoding:?} is not flowing now"),
                )
            })?)
        }
        (None, Some(n), _) | (None, None, Some(n)) => Some(n),
        (None, None, None) => None,
    };
    state
        .request(
            worker,
            Command::SetMaxLayer {
                endpoint: id,
                slot: section.slot,
                max_layer,
            },
            None,
        )
        .map_err(|e| match e {
            ApiError::UnknownEndpoint(_) => ApiError::UnknownEndpoint(endpoint.to_owned()),
            e => e,
        })?;
    Ok(())
}

/// Appends the WHEP event stream metrics to `/metrics`.
pub fn render(out: &mut String, hub: &WhepEvents) {
    // Writing to a String cannot fail.
    crate::metrics::header(
        out,
        "sfu_whep_event_streams",
        "Open GETs of WHEP sessions' event streams.",
        "gauge",
    );
    let _ = writeln!(out, "sfu_whep_event_streams {}", hub.open_streams());
    crate::metrics::header(
        out,
        "sfu_whep_event_streams_dropped_total",
        &format!("WHEP event stream readers dropped for falling {STREAM_BUFFER} frames behind."),
        "counter",
    );
    let _ = writeln!(
        out,
        "sfu_whep_event_streams_dropped_total {}",
        hub.dropped()
    );
}
