//! Node events for the signaling service: `GET /v1/events` (server-sent
//! events) and signed webhooks.
//!
//! # Events
//! A [`NodeEvent`] says what happened to a room, an endpoint (a
//! participant) or a worker. The control plane publishes the ones it sees
//! itself ([`crate::state::AppState`]): rooms created (by `POST /v1/rooms`
//! or on demand) and closed (deleted, or closed empty by the sampler),
//! endpoints created and deleted through the API or WHIP/WHEP, endpoints
//! the routers removed by themselves (reaped once a second, with the
//! router's reason), and workers the supervisor finds dead or stalled.
//! The router-originated variants ([`NodeEvent::ParticipantConnected`],
//! [`NodeEvent::ProducerBound`], [`NodeEvent::KeyframeRequested`],
//! [`NodeEvent::ConsentLost`]) are published by whoever maps the routers'
//! reports onto them, through [`Events::publish`] (or
//! [`crate::state::AppState::publish`], with
//! [`crate::state::AppState::endpoint_name`] to name the endpoint).
//!
//! Every published event is wrapped in an envelope: `seq` (1, 2, 3, … per
//! node run, never reused), `node` (the node id) and `at` (Unix time, ms):
//!
//! ```json
//! {"seq":7,"node":"media-eu-1","at":1764460000000,"type":"participant_left","room":"r","endpoint":"6b1f0c2d9a8e7f10","reason":"consent_lost"}
//! ```
//!
//! [`NodeEvent::WorkerStalled`] is node-wide and has no `room` key.
//!
//! # Design
//! [`Events`] is the hub. [`Events::publish`] takes a short lock that
//! assigns the sequence number, serialises the envelope once and hands it
//! to both outputs, so every subscriber and the webhook see events in
//! `seq` order; it never waits for a consumer and never queues without a
//! bound, so it may be called from the blocking threads that run the
//! mutations and from async code alike. The mutations publish while they
//! hold their own lock, so `seq` order is the order in which the model
//! changed (a room's `room_started` before its first `participant_joined`).
//!
//! * **Stream subscribers** (`GET /v1/events`) share a
//!   [`tokio::sync::broadcast`] channel of [`BROADCAST_CAPACITY`] events.
//!   Each subscriber has a task that filters by room and writes frames into
//!   a small channel read by the response body. A subscriber that falls
//!   more than [`BROADCAST_CAPACITY`] events behind (a client that does not
//!   read) loses the oldest ones and is told so by an `event: lagged` frame
//!   with the number missed, then continues with the oldest event still
//!   buffered. Subscribers see only events published after they subscribed;
//!   there is no replay.
//! * **Webhooks** (optional, [`crate::config::WebhookConfig`]) get only the
//!   lifecycle events ([`NodeEvent::is_webhook`]): `room_started`,
//!   `room_ended`, `participant_joined`, `participant_connected`,
//!   `participant_left`. They queue (at most [`WEBHOOK_QUEUE`] events; more
//!   are dropped and counted) for one delivery thread, which POSTs them one
//!   at a time in `seq` order. A failed delivery (connection error,
//!   timeout, any status but 2xx; redirects are not followed) is retried
//!   after [`RETRY_BASE`] × 2ⁿ (at most [`RETRY_MAX`]) up to
//!   `webhook.retries` times, then dropped and counted, and the next event
//!   goes out. Events still queued when the process exits are lost. No
//!   proxy is used.
//!
//! # Webhook requests
//! `POST <url>` with the envelope as body and the headers
//! `Content-Type: application/json`, `X-Sfu-Event: <type>`,
//! `X-Sfu-Timestamp: <t>` (Unix seconds at the attempt) and
//! `X-Sfu-Signature: sha256=<hex>`: the lowercase hex HMAC-SHA256, keyed
//! with the node's API secret, of the bytes `<t>.<body>` (the timestamp
//! header's decimal value, a full stop, then the body exactly as received;
//! [`signature`]). A receiver recomputes it, compares in constant time,
//! rejects a timestamp more than a few minutes from its clock (a replay),
//! and may drop an envelope whose `seq` it has already seen from that
//! `node` (a retry whose first answer was lost).
//!
//! # Metrics
//! `sfu_events_total{type}`, `sfu_event_subscribers`,
//! `sfu_webhook_deliveries_total{result}` (`ok`; `failed`: retries used up;
//! `dropped`: the queue was full) and `sfu_webhook_retries_total`
//! ([`render`]).

use std::convert::Infallible;
use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use hyper::body::Frame;
use ring::hmac;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, watch};

/// Events a stream subscriber may fall behind by before it misses some.
pub const BROADCAST_CAPACITY: usize = 4096;

/// Webhook events waiting for delivery at most; more are dropped.
pub const WEBHOOK_QUEUE: usize = 10_000;

/// The first retry of a failed webhook delivery waits this long; each
/// further one twice as long as the one before, at most [`RETRY_MAX`].
pub const RETRY_BASE: Duration = Duration::from_millis(250);

/// The longest wait between two attempts of one webhook delivery.
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// How often an idle event stream gets a `: keepalive` comment.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// Frames a subscriber's task may have written ahead of its client.
const FRAMES_AHEAD: usize = 16;

/// Something that happened on the node. Serialised with its type in a
/// `type` key (`"room_started"`, …) beside its fields; `endpoint` is the
/// endpoint's id string as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum NodeEvent {
    /// A room was created, by `POST /v1/rooms` or on demand.
    RoomStarted {
        /// The room.
        room: String,
    },
    /// A room was closed.
    RoomEnded {
        /// The room.
        room: String,
        /// `deleted` (`DELETE /v1/rooms/{room}`) or `empty` (closed after
        /// `empty_room_timeout_secs` without endpoints).
        reason: RoomEndReason,
    },
    /// An endpoint was created.
    ParticipantJoined {
        /// Its room.
        room: String,
        /// The endpoint.
        endpoint: String,
        /// `whip`, `whep` or `api` (`POST /v1/rooms/{room}/endpoints`).
        session: String,
        /// `publish`, `subscribe` or `both`.
        role: String,
    },
    /// A WebRTC endpoint completed ICE and DTLS: media can flow.
    ParticipantConnected {
        /// Its room.
        room: String,
        /// The endpoint.
        endpoint: String,
        /// The SRTP profile DTLS negotiated, e.g. `AEAD_AES_128_GCM`.
        profile: String,
    },
    /// An endpoint is gone.
    ParticipantLeft {
        /// Its room.
        room: String,
        /// The endpoint.
        endpoint: String,
        /// `deleted` (deleted through the API or its WHIP/WHEP resource),
        /// `room_deleted` (its room was deleted), or the router's reason
        /// ([`sfu_core::router::RemovalReason::as_str`]: `never_connected`,
        /// `consent_lost`, `dtls_failed`, `dtls_closed`).
        reason: String,
    },
    /// A publisher's stream was bound to its SSRC (a simulcast layer
    /// announced by `rid` by its first packet).
    ProducerBound {
        /// Its room.
        room: String,
        /// The publishing endpoint.
        endpoint: String,
        /// The stream's SSRC.
        ssrc: u32,
        /// The simulcast layer's rid, if any.
        rid: Option<String>,
        /// `audio` or `video`.
        kind: String,
    },
    /// The node asked a publisher for a key frame (PLI).
    KeyframeRequested {
        /// Its room.
        room: String,
        /// The publishing endpoint.
        endpoint: String,
        /// The stream's SSRC.
        ssrc: u32,
    },
    /// A room's dominant speaker changed (RFC 6464 audio levels, decided
    /// every 300 ms at most).
    DominantSpeaker {
        /// Its room.
        room: String,
        /// An audio publisher of the dominant participant; absent when it
        /// left and nobody has spoken since.
        endpoint: Option<String>,
        /// The participant's id (the hashed token identity, 16 hex digits),
        /// when its endpoints carry one.
        participant: Option<String>,
    },
    /// The set of a room's participants talking now changed: at most
    /// eight, most recent first, by one audio publisher each.
    ActiveSpeakers {
        /// Its room.
        room: String,
        /// Their audio publishers.
        endpoints: Vec<String>,
    },
    /// A connected WebRTC endpoint stopped answering ICE consent checks
    /// (RFC 7675); its removal follows as `participant_left`.
    ConsentLost {
        /// Its room.
        room: String,
        /// The endpoint.
        endpoint: String,
    },
    /// A room changed owner node: its owner died and this node took it over
    /// (or, after a Redis outage, this node learnt that another node owns
    /// a room it also placed; `from` is then this node). Its participants
    /// rejoin through any node, which sends them to `to`
    /// ([`crate::cluster`]). Also published on the cluster's Redis channel.
    RoomMoved {
        /// The room.
        room: String,
        /// The node that owned it.
        from: String,
        /// The node that owns it now.
        to: String,
    },
    /// A worker was found dead or stalled; the node is about to exit
    /// ([`crate::supervise`]). Node-wide: no room.
    WorkerStalled {
        /// The worker's index.
        worker: usize,
        /// `dead` or `stalled`.
        health: String,
    },
}

/// Why a room was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomEndReason {
    /// `DELETE /v1/rooms/{room}`.
    Deleted,
    /// Closed after `empty_room_timeout_secs` without endpoints.
    Empty,
}

/// The `type` of each [`NodeEvent`] variant, in declaration order (the
/// label values of `sfu_events_total`).
pub const TYPES: [&str; 12] = [
    "room_started",
    "room_ended",
    "participant_joined",
    "participant_connected",
    "participant_left",
    "producer_bound",
    "keyframe_requested",
    "consent_lost",
    "worker_stalled",
    "dominant_speaker",
    "active_speakers",
    "room_moved",
];

impl NodeEvent {
    /// Index into [`TYPES`].
    fn index(&self) -> usize {
        match self {
            Self::RoomStarted { .. } => 0,
            Self::RoomEnded { .. } => 1,
            Self::ParticipantJoined { .. } => 2,
            Self::ParticipantConnected { .. } => 3,
            Self::ParticipantLeft { .. } => 4,
            Self::ProducerBound { .. } => 5,
            Self::KeyframeRequested { .. } => 6,
            Self::ConsentLost { .. } => 7,
            Self::WorkerStalled { .. } => 8,
            Self::DominantSpeaker { .. } => 9,
            Self::ActiveSpeakers { .. } => 10,
            Self::RoomMoved { .. } => 11,
        }
    }

    /// Its `type`, e.g. `"participant_left"`.
    pub fn kind(&self) -> &'static str {
        TYPES[self.index()]
    }

    /// Its room; `None` for node-wide events.
    pub fn room(&self) -> Option<&str> {
        match self {
            Self::RoomStarted { room }
            | Self::RoomEnded { room, .. }
            | Self::ParticipantJoined { room, .. }
            | Self::ParticipantConnected { room, .. }
            | Self::ParticipantLeft { room, .. }
            | Self::ProducerBound { room, .. }
            | Self::KeyframeRequested { room, .. }
            | Self::ConsentLost { room, .. }
            | Self::DominantSpeaker { room, .. }
            | Self::ActiveSpeakers { room, .. }
            | Self::RoomMoved { room, .. } => Some(room),
            Self::WorkerStalled { .. } => None,
        }
    }

    /// Whether webhooks get it: the room and participant lifecycle only.
    pub fn is_webhook(&self) -> bool {
        matches!(
            self,
            Self::RoomStarted { .. }
                | Self::RoomEnded { .. }
                | Self::ParticipantJoined { .. }
                | Self::ParticipantConnected { .. }
                | Self::ParticipantLeft { .. }
                | Self::RoomMoved { .. }
        )
    }
}

/// The wire form: envelope fields, then the event's.
#[derive(Serialize)]
struct Envelope<'a> {
    seq: u64,
    node: &'a str,
    at: u64,
    #[serde(flatten)]
    event: &'a NodeEvent,
}

/// A published event as its consumers get it.
#[derive(Debug)]
pub struct Published {
    /// Its sequence number.
    pub seq: u64,
    /// Its `type`.
    pub kind: &'static str,
    /// Its room (`None`: node-wide).
    pub room: Option<String>,
    /// The envelope as JSON.
    pub json: String,
}

/// Where and how webhooks are delivered.
#[derive(Clone)]
pub struct WebhookTarget {
    /// `http://` or `https://` URL, already validated.
    pub url: String,
    /// The HMAC key: the node's API secret.
    pub secret: Vec<u8>,
    /// Limit of one attempt, connecting included.
    pub timeout: Duration,
    /// Attempts after the first one.
    pub retries: u32,
}

impl std::fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTarget")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .finish()
    }
}

/// Webhook delivery counters.
#[derive(Debug, Default)]
struct WebhookStats {
    ok: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    retries: AtomicU64,
}

/// The node's event hub: see the [module documentation](self).
#[derive(Debug)]
pub struct Events {
    node: String,
    /// The last sequence number; held while an event is handed out.
    seq: Mutex<u64>,
    stream: broadcast::Sender<Arc<Published>>,
    webhook: Option<SyncSender<Arc<Published>>>,
    webhook_stats: Arc<WebhookStats>,
    /// Published events by type, indexed like [`TYPES`].
    published: [AtomicU64; TYPES.len()],
    subscribers: Arc<AtomicU64>,
    /// Set by [`Events::close`]: streams end.
    closed: watch::Sender<bool>,
}

impl Events {
    /// A hub for node `node`; with a `webhook`, starts its delivery thread
    /// (which ends once the hub is dropped and its queue is empty).
    pub fn new(node: String, webhook: Option<WebhookTarget>) -> Self {
        let webhook_stats = Arc::new(WebhookStats::default());
        let webhook = webhook.and_then(|target| {
            let (tx, rx) = std::sync::mpsc::sync_channel(WEBHOOK_QUEUE);
            let stats = Arc::clone(&webhook_stats);
            match std::thread::Builder::new()
                .name("sfu-webhook".into())
                .spawn(move || deliver_all(&rx, &target, &stats))
            {
                Ok(_) => Some(tx),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the webhook thread; webhooks are off");
                    None
                }
            }
        });
        Self {
            node,
            seq: Mutex::new(0),
            stream: broadcast::channel(BROADCAST_CAPACITY).0,
            webhook,
            webhook_stats,
            published: Default::default(),
            subscribers: Arc::new(AtomicU64::new(0)),
            closed: watch::Sender::new(false),
        }
    }

    /// Publishes `event` to the stream subscribers and, if it is a
    /// lifecycle event and webhooks are on, queues it for delivery. Never
    /// waits for a consumer.
    pub fn publish(&self, event: NodeEvent) {
        self.published[event.index()].fetch_add(1, Ordering::Relaxed);
        let mut seq = self.seq.lock().unwrap_or_else(PoisonError::into_inner);
        *seq += 1;
        let envelope = Envelope {
            seq: *seq,
            node: &self.node,
            at: unix_millis(),
            event: &event,
        };
        let json = match serde_json::to_string(&envelope) {
            Ok(json) => json,
            // Strings, integers and options only: cannot fail.
            Err(e) => {
                tracing::error!(error = %e, "cannot serialise an event");
                return;
            }
        };
        let published = Arc::new(Published {
            seq: *seq,
            kind: event.kind(),
            room: event.room().map(str::to_owned),
            json,
        });
        // An error only means that nobody listens.
        let _ = self.stream.send(Arc::clone(&published));
        if let Some(queue) = self.webhook.as_ref().filter(|_| event.is_webhook()) {
            match queue.try_send(published) {
                Ok(()) => {}
                Err(TrySendError::Full(p) | TrySendError::Disconnected(p)) => {
                    self.webhook_stats.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        seq = p.seq,
                        kind = p.kind,
                        "webhook queue full; event dropped"
                    );
                }
            }
        }
    }

    /// Ends every event stream, now and later (the node is shutting down).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Open event streams.
    pub fn subscribers(&self) -> u64 {
        self.subscribers.load(Ordering::Relaxed)
    }

    /// A receiver of every event published from now on (for the WHEP
    /// sessions' streams, [`crate::whep_events::run`]).
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.stream.subscribe()
    }

    /// A new subscriber's response body: the frames of the events published
    /// from now on (of room `room` and node-wide ones only, if given),
    /// keepalive comments and lag notices, until the client goes away or
    /// [`Events::close`]. Must be called within a tokio runtime.
    pub(crate) fn stream_body(&self, room: Option<String>) -> axum::body::Body {
        let (tx, rx) = mpsc::channel(FRAMES_AHEAD);
        let pump = Pump {
            events: self.stream.subscribe(),
            frames: tx,
            room,
            closed: self.closed.subscribe(),
            _subscriber: OpenStream::new(&self.subscribers),
        };
        tokio::spawn(pump.run());
        axum::body::Body::new(FrameBody(rx))
    }
}

/// Unix time in milliseconds.
fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Counts an open stream in a gauge (`sfu_event_subscribers`,
/// `sfu_whep_event_streams`) while it lives.
#[derive(Debug)]
pub(crate) struct OpenStream(Arc<AtomicU64>);

impl OpenStream {
    /// Counts one more open stream in `count` until dropped.
    pub(crate) fn new(count: &Arc<AtomicU64>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(count))
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A subscriber's task: from the broadcast channel to its body's frames.
struct Pump {
    events: broadcast::Receiver<Arc<Published>>,
    frames: mpsc::Sender<Bytes>,
    room: Option<String>,
    closed: watch::Receiver<bool>,
    _subscriber: OpenStream,
}

impl Pump {
    async fn run(mut self) {
        let mut keepalive =
            tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let frame = tokio::select! {
                () = self.frames.closed() => return,
                _ = self.closed.wait_for(|c| *c) => return,
                _ = keepalive.tick() => Bytes::from_static(b": keepalive\n\n"),
                received = self.events.recv() => match received {
                    Ok(event) => {
                        let wanted = match (&self.room, &event.room) {
                            (Some(want), Some(room)) => want == room,
                            _ => true,
                        };
                        if !wanted {
                            continue;
                        }
                        Bytes::from(event_frame(&event))
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        Bytes::from(lagged_frame(missed))
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            // The client reads slowly: wait here, and let the broadcast
            // channel count what this subscriber misses meanwhile.
            if self.frames.send(frame).await.is_err() {
                return;
            }
        }
    }
}

/// `id: <seq>\ndata: <json>\n\n`.
fn event_frame(event: &Published) -> String {
    format!("id: {}\ndata: {}\n\n", event.seq, event.json)
}

/// `event: lagged\ndata: {"missed":N}\n\n`.
fn lagged_frame(missed: u64) -> String {
    format!("event: lagged\ndata: {{\"missed\":{missed}}}\n\n")
}

/// A response body of the frames a [`Pump`] writes.
struct FrameBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for FrameBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|frame| frame.map(|b| Ok(Frame::data(b))))
    }
}

/// `sha256=` and the lowercase hex HMAC-SHA256 of `<timestamp>.<body>`
/// keyed with `secret`: the `X-Sfu-Signature` of a webhook request whose
/// `X-Sfu-Timestamp` is `timestamp`.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    sign(&key, timestamp, body)
}

fn sign(key: &hmac::Key, timestamp: u64, body: &[u8]) -> String {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("sha256={}", hex(ctx.sign().as_ref()))
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The wait before retry `n` (0-based) of a failed delivery.
fn backoff(n: u32) -> Duration {
    RETRY_BASE
        .saturating_mul(2u32.saturating_pow(n.min(16)))
        .min(RETRY_MAX)
}

/// The webhook thread: delivers each queued event in turn until the hub is
/// dropped.
fn deliver_all(queue: &Receiver<Arc<Published>>, target: &WebhookTarget, stats: &WebhookStats) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(target.timeout))
        .max_redirects(0)
        .proxy(None)
        .user_agent(concat!("sfu/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let key = hmac::Key::new(hmac::HMAC_SHA256, &target.secret);
    while let Ok(event) = queue.recv() {
        let mut attempt = 0;
        loop {
            match deliver(&agent, &target.url, &key, &event) {
                Ok(()) => {
                    stats.ok.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(e) if attempt >= target.retries => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        seq = event.seq,
                        kind = event.kind,
                        error = %e,
                        attempts = attempt + 1,
                        "webhook delivery failed; event dropped"
                    );
                    break;
                }
                Err(e) => {
                    tracing::debug!(seq = event.seq, error = %e, attempt, "webhook delivery failed; retrying");
                    stats.retries.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(backoff(attempt));
                    attempt += 1;
                }
            }
        }
    }
}

/// One attempt: `Ok` on a 2xx answer.
fn deliver(
    agent: &ureq::Agent,
    url: &str,
    key: &hmac::Key,
    event: &Published,
) -> Result<(), String> {
    let timestamp = unix_millis() / 1000;
    let mut response = agent
        .post(url)
        .header("content-type", "application/json")
        .header("x-sfu-event", event.kind)
        .header("x-sfu-timestamp", timestamp.to_string())
        .header(
            "x-sfu-signature",
            sign(key, timestamp, event.json.as_bytes()),
        )
        .send(event.json.as_bytes())
        .map_err(|e| e.to_string())?;
    // Read (a little of) the answer so the connection can be reused.
    let _ = response
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_vec();
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}

/// Appends the event and webhook metrics to `/metrics`.
pub fn render(out: &mut String, events: &Events) {
    // Writing to a String cannot fail.
    let header = |out: &mut String, name: &str, help: &str, kind: &str| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
    };
    header(
        out,
        "sfu_events_total",
        "Node events published (GET /v1/events, webhooks), by type.",
        "counter",
    );
    for (kind, n) in TYPES.iter().zip(&events.published) {
        let n = n.load(Ordering::Relaxed);
        let _ = writeln!(out, "sfu_events_total{{type=\"{kind}\"}} {n}");
    }
    header(
        out,
        "sfu_event_subscribers",
        "Open GET /v1/events streams.",
        "gauge",
    );
    let _ = writeln!(out, "sfu_event_subscribers {}", events.subscribers());
    header(
        out,
        "sfu_webhook_deliveries_total",
        "Webhook events by outcome: ok (2xx), failed (retries used up), dropped (queue full).",
        "counter",
    );
    let stats = &events.webhook_stats;
    for (result, n) in [
        ("ok", &stats.ok),
        ("failed", &stats.failed),
        ("dropped", &stats.dropped),
    ] {
        let n = n.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "sfu_webhook_deliveries_total{{result=\"{result}\"}} {n}"
        );
    }
    header(
        out,
        "sfu_webhook_retries_total",
        "Webhook delivery attempts repeated after a failure.",
        "counter",
    );
    let _ = writeln!(
        out,
        "sfu_webhook_retries_total {}",
        stats.retries.load(Ordering::Relaxed)
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn ep(room: &str) -> (String, String) {
        (room.to_owned(), "00000000000000e1".to_owned())
    }

    /// Every variant, with the JSON it must serialise to (without the
    /// envelope).
    fn every_variant() -> Vec<(NodeEvent, Value)> {
        let (room, endpoint) = ep("r");
        vec![
            (
                NodeEvent::RoomStarted { room: room.clone() },
                json!({"type": "room_started", "room": "r"}),
            ),
            (
                NodeEvent::RoomEnded {
                    room: room.clone(),
                    reason: RoomEndReason::Empty,
                },
                json!({"type": "room_ended", "room": "r", "reason": "empty"}),
            ),
            (
                NodeEvent::ParticipantJoined {
                    room: room.clone(),
                    endpoint: endpoint.clone(),
                    session: "whip".into(),
                    role: "publish".into(),
                },
                json!({"type": "participant_joined", "room": "r", "endpoint": endpoint, "session": "whip", "role": "publish"}),
            ),
            (
                NodeEvent::ParticipantConnected {
                    room: room.clone(),
                    endpoint: endpoint.clone(),
                    profile: "AEAD_AES_128_GCM".into(),
                },
                json!({"type": "participant_connected", "room": "r", "endpoint": endpoint, "profile": "AEAD_AES_128_GCM"}),
            ),
            (
                NodeEvent::ParticipantLeft {
                    room: room.clone(),
                    endpoint: endpoint.clone(),
                    reason: "consent_lost".into(),
                },
                json!({"type": "participant_left", "room": "r", "endpoint": endpoint, "reason": "consent_lost"}),
            ),
            (
                NodeEvent::ProducerBound {
                    room: room.clone(),
                    endpoint: endpoint.clone(),
                    ssrc: 1234,
                    rid: Some("h".into()),
                    kind: "video".into(),
                },
                json!({"type": "producer_bound", "room": "r", "endpoint": endpoint, "ssrc": 1234, "rid": "h", "kind": "video"}),
            ),
            (
                NodeEvent::ProducerBound {
                    room: room.clone(),
                    endpoint: endpoint.clone(),
                    ssrc: 5,
                    rid: None,
                    kind: "audio".into(),
                },
                json!({"type": "producer_bound", "room": "r", "endpoint": endpoint, "ssrc": 5, "rid": null, "kind": "audio"}),
            ),
            (
                NodeEvent::DominantSpeaker {
                    room: room.clone(),
                    endpoint: Some(endpoint.clone()),
                    participant: Some("00000000000000aa".into()),
                },
                json!({"type": "dominant_speaker", "room": "r", "endpoint": endpoint, "participant": "00000000000000aa"}),
            ),
            (
                NodeEvent::ActiveSpeakers {
                    room: room.clone(),
                    endpoints: vec![endpoint.clone()],
                },
                json!({"type": "active_speakers", "room": "r", "endpoints": [endpoint]}),
            ),
            (
                NodeEvent::KeyframeRequested {
                    room: room.clone(),
                    endpoint: endpoint.clone(),
                    ssrc: 99,
                },
                json!({"type": "keyframe_requested", "room": "r", "endpoint": endpoint, "ssrc": 99}),
            ),
            (
                NodeEvent::RoomMoved {
                    room: room.clone(),
                    from: "n1".into(),
                    to: "n2".into(),
                },
                json!({"type": "room_moved", "room": "r", "from": "n1", "to": "n2"}),
            ),
            (
                NodeEvent::ConsentLost {
                    room,
                    endpoint: endpoint.clone(),
                },
                json!({"type": "consent_lost", "room": "r", "endpoint": endpoint}),
            ),
            (
                NodeEvent::WorkerStalled {
                    worker: 3,
                    health: "stalled".into(),
                },
                json!({"type": "worker_stalled", "worker": 3, "health": "stalled"}),
            ),
        ]
    }

    #[test]
    fn every_variant_serialises_with_its_type_and_round_trips() {
        for (event, want) in every_variant() {
            let got = serde_json::to_value(&event).expect("serialises");
            assert_eq!(got, want, "{event:?}");
            assert_eq!(got["type"], event.kind());
            assert_eq!(got.get("room").and_then(Value::as_str), event.room());
            let back: NodeEvent = serde_json::from_value(got).expect("deserialises");
            assert_eq!(back, event);
        }
        let kinds: std::collections::BTreeSet<&str> =
            every_variant().iter().map(|(e, _)| e.kind()).collect();
        assert_eq!(kinds.len(), TYPES.len(), "every type covered");
    }

    #[test]
    fn the_envelope_comes_first_and_seq_counts_up() {
        let events = Events::new("n1".into(), None);
        let mut rx = events.stream.subscribe();
        for (event, _) in every_variant() {
            events.publish(event);
        }
        let first = rx.try_recv().expect("published");
        assert!(
            first.json.starts_with(r#"{"seq":1,"node":"n1","at":"#),
            "{}",
            first.json
        );
        assert!(
            first
                .json
                .ends_with(r#","type":"room_started","room":"r"}"#),
            "{}",
            first.json
        );
        let at = serde_json::from_str::<Value>(&first.json).expect("JSON")["at"]
            .as_u64()
            .expect("at is a number");
        assert!(at > 1_700_000_000_000, "unix ms: {at}");
        let mut last = first.seq;
        while let Ok(p) = rx.try_recv() {
            assert_eq!(p.seq, last + 1);
            last = p.seq;
        }
        assert_eq!(last, every_variant().len() as u64);
        let mut text = String::new();
        render(&mut text, &events);
        assert!(
            text.contains("sfu_events_total{type=\"producer_bound\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("sfu_event_subscribers 0\n"), "{text}");
    }

    #[test]
    fn only_lifecycle_events_go_to_webhooks() {
        let webhook: Vec<&str> = every_variant()
            .iter()
            .filter(|(e, _)| e.is_webhook())
            .map(|(e, _)| e.kind())
            .collect();
        assert_eq!(
            webhook,
            [
                "room_started",
                "room_ended",
                "participant_joined",
                "participant_connected",
                "participant_left",
                "room_moved"
            ]
        );
    }

    #[test]
    fn frames_follow_the_event_stream_format() {
        let p = Published {
            seq: 7,
            kind: "room_started",
            room: Some("r".into()),
            json: r#"{"seq":7}"#.into(),
        };
        assert_eq!(event_frame(&p), "id: 7\ndata: {\"seq\":7}\n\n");
        assert_eq!(lagged_frame(12), "event: lagged\ndata: {\"missed\":12}\n\n");
    }

    /// RFC 4231 test case 2 for the HMAC, then the signed string.
    #[test]
    fn signature_is_hmac_sha256_over_timestamp_dot_body() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
        assert_eq!(
            hex(hmac::sign(&key, b"what do ya want for nothing?").as_ref()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let body = br#"{"seq":1}"#;
        let want = hex(hmac::sign(&key, br#"1764460000.{"seq":1}"#).as_ref());
        assert_eq!(
            signature(b"Jefe", 1_764_460_000, body),
            format!("sha256={want}")
        );
        assert_ne!(
            signature(b"Jefe", 1_764_460_001, body),
            format!("sha256={want}")
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(0), Duration::from_millis(250));
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(3), Duration::from_secs(2));
        assert_eq!(backoff(10), RETRY_MAX);
        assert_eq!(backoff(u32::MAX), RETRY_MAX);
    }
}
