//! The router: rooms, endpoints and the fan-out of SRTP packets, as a
//! sans-IO state machine (in the manner of str0m's `Rtc` and quinn-proto's
//! `Connection`).
//!
//! One [`Router`] lives on each worker thread and owns every room placed on
//! that worker. Nothing here reads a clock, opens a socket or spawns: time
//! comes in as an argument and output leaves through the caller.
//!
//! ```text
//! inputs                                   outputs
//!   handle_command(now, Command)  ──►        Outcome (the command's answer)
//!   handle_input(now, src, datagram, tx) ──► egress datagrams written into tx
//!   handle_timeout(now, tx)       ──►        egress datagrams written into tx
//!                                            poll_event()   -> Event
//!                                            poll_timeout() -> next deadline
//! ```
//!
//! Egress goes through the [`Transmit`] sink rather than a `poll_transmit`
//! queue: one input fans out to hundreds of copies, and writing each straight
//! into the caller's send buffer (which the packet path hands to
//! `sendmmsg`) saves a copy per consumer. The caller drains
//! [`Router::poll_event`] after each batch and sleeps no longer than
//! [`Router::poll_timeout`].
//!
//! # Modules
//! * `transport` — per-endpoint transport state: remote address, ICE-lite
//!   consent, DTLS ([`webrtc`]), SRTP contexts, transport-cc, and the
//!   timer heap that drives them (mediasoup's `Transport`).
//! * `routing` — rooms, producers, consumers, joins and subscriptions, the
//!   fan-out and keyframe relay (mediasoup's `Router`).
//! * [`stats`] — the counter table ([`Counter`], [`DropReason`],
//!   [`RemovalReason`]), declared once for the whole node.
//! * [`event`] — [`Event`]s for the control plane.
//! * [`seq`] — sequence number and timestamp rewriting.
//! * [`cache`] — the packet cache of each producer stream (about 2 s of
//!   video, 1 s of audio), shared by its consumers.
//! * `red` — redundant audio (RFC 2198) per consumer: passed on, or
//!   unwrapped to its primary block.
//! * [`repair`] — loss repair: subscribers' NACKs answered with RTX from
//!   the cache, gaps in publishers' streams NACKed, publishers' RTX
//!   unwrapped into the stream it repairs.
//! * [`reports`] — sender reports translated per consumer, receiver
//!   reports to publishers, subscribers' receiver reports (loss, jitter,
//!   RTT).
//! * `speakers` — audio levels, dominant speaker events and last-N slots
//!   ([`Subscription::Slots`]); see "Speakers and slots" below.
//!
//! # Addresses
//! An endpoint's remote address is either given by the control plane, set
//! by a valid ICE check (WebRTC), or learnt from the first packet of that
//! endpoint that authenticates ("comedia"), never from an unauthenticated
//! one. A packet whose SSRC belongs to an endpoint with a known address but
//! arrives from another address is dropped.
//!
//! # Keyframes
//! When a consumer is switched to another producer, or a subscriber sends a PLI
//! or FIR for a consumer, the router sends a PLI to the producer's publisher
//! (at most one per producer every [`KEYFRAME_REQUEST_INTERVAL`]: requests
//! of all consumers in that time are aggregated into one), piggy-backed on
//! the next packet received from that producer. Loss is repaired before it
//! costs a keyframe: subscribers that negotiated RTX get retransmissions
//! and wait for them instead of asking for a keyframe, and a gap in a
//! publisher's stream asks for a keyframe only when its NACKs have failed
//! ([`repair`]).
//!
//! # Speakers and slots
//! Each room with an audio publisher runs a
//! [`SpeakerDetector`](crate::speaker::SpeakerDetector) (capacity
//! [`RouterConfig::max_endpoints_per_room`], created with the room's first
//! audio producer, dropped with its last), one speaker per participant
//! ([`EndpointConfig::participant`], or the endpoint id without one). An
//! authentic audio packet of an endpoint that declared the RFC 6464
//! extension ([`EndpointConfig::audio_level_extension`],
//! [`WebrtcTransport::audio_level_extension`]) feeds its level to the
//! detector before the fan-out: one extension lookup, two hash lookups, no
//! allocation. A packet without a readable level is forwarded as usual and
//! counted ([`Counter::AudioLevelsMissing`]).
//!
//! Decisions are taken on input, not on a timer: the same audio packet
//! runs the room's decision when it is due (every
//! [`DECISION_INTERVAL`](crate::speaker::DECISION_INTERVAL)). A room whose
//! audio has stopped needs no decision (nobody can take over), so
//! [`Router::poll_timeout`] and [`Router::handle_timeout`] know nothing of
//! speakers. A decision that changes the dominant speaker or the set of
//! speakers talking publishes [`Event::DominantSpeaker`] /
//! [`Event::ActiveSpeakers`] (bounded, fixed-size, on change only) and
//! re-evaluates the room's [`Subscription::Slots`] subscribers: that
//! re-pointing builds per-subscriber lists, so it allocates (O(publishers)
//! per `Slots` subscriber), at most once per decision interval per room;
//! decisions without a change allocate nothing.
//!
//! A `Slots` subscriber's video slots hold its pinned participants, then
//! the most recent speakers, then the other video publishers in join
//! order; its audio slots the loudest speakers, then the most recent, then
//! the others. A slot keeps its occupant while it stays in the
//! subscriber's top N (only evicted slots are refilled, as
//! [`LastN`](crate::speaker::LastN) does), its SSRC and numbering never
//! change, and a video slot that changes source asks the new publisher for
//! a keyframe. Slots are re-evaluated on every decision that changed
//! something, on every join or leave of a publisher and on the command;
//! the subscriber's own participant (and
//! [`Subscription::Slots::exclude`]) never fills them.
//!
//! # Session lifecycle
//! A WebRTC endpoint that does not complete ICE + DTLS within
//! [`RouterConfig::pending_webrtc_timeout`], that loses ICE consent for
//! [`RouterConfig::consent_timeout`] after connecting, or whose DTLS fails or is closed,
//! is removed by the router itself ([`Event::Removed`], also kept for
//! [`Command::TakeRemoved`]); its slot, SSRCs and ufrag are free at once.
//!
//! # Panics
//! None on any input: every malformed, unauthenticated or unexpected
//! datagram is counted by [`DropReason`] and dropped.

pub mod cache;
pub mod egress;
pub mod event;
mod red;
pub mod repair;
pub mod reports;
mod routing;
pub mod seq;
mod speakers;
pub mod stats;
mod transport;
pub mod webrtc;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::codec::Codec;
use crate::dtls::DtlsCert;
use crate::srtp::{KeyLengthError, Profile, SrtpConfig};
use crate::twcc;
use crate::wire::{self, DatagramKind};
use event::EventQueue;
pub use event::{EVENT_QUEUE, Event};
use routing::{Consumer, Producer, Room};
use speakers::RoomSpeakers;
pub use speakers::{ACTIVE_SPEAKERS, ActiveSpeaker, SpeakerList};
pub use stats::{Counter, DropReason, RemovalReason, RouterStats};
use transport::{Timers, Transport};
pub use webrtc::{CONSENT_TIMEOUT, IceCredentials, RidTrack, WebrtcTransport};

/// Shortest time between two PLIs the router sends for one producer.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// Most transport-cc feedback packets one endpoint gets per timer round.
pub const TWCC_PACKETS_PER_ROUND: usize = 4;

/// Bytes SRTCP appends to a packet at most (16-byte GCM tag, 4-byte index).
const SRTCP_TRAILER_MAX: usize = 20;

/// Identifies an endpoint across the node (assigned by the control plane).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointId(pub u64);

/// Identifies a room across the node (assigned by the control plane).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(pub u64);

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MediaKind {
    /// Audio, RTP clock 48 kHz.
    Audio,
    /// Video, RTP clock 90 kHz.
    Video,
}

impl MediaKind {
    /// The RTP clock rate the router assumes for this kind.
    pub fn clock_rate(self) -> u32 {
        match self {
            Self::Audio => 48_000,
            Self::Video => 90_000,
        }
    }

    /// `"audio"` or `"video"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Audio => "audio",
            Self::Video => "video",
        }
    }
}

/// What an endpoint does in its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Sends media only.
    Publish,
    /// Receives media only.
    Subscribe,
    /// Both.
    Both,
}

impl Role {
    fn publishes(self) -> bool {
        matches!(self, Self::Publish | Self::Both)
    }

    fn subscribes(self) -> bool {
        matches!(self, Self::Subscribe | Self::Both)
    }
}

/// A track an endpoint publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackConfig {
    /// Audio or video.
    pub kind: MediaKind,
    /// The SSRC the endpoint sends it with; unique on the worker.
    pub ssrc: u32,
    /// RTP payload type.
    pub payload_type: u8,
    /// Its codec: where a keyframe starts, for simulcast layer switches.
    pub codec: Codec,
    /// The stream the endpoint retransmits this track on (RFC 4588), if it
    /// negotiated RTX: the router NACKs gaps and unwraps what comes back.
    pub rtx: Option<RtxStream>,
    /// For a simulcast layer: the SSRC of the first layer of its track,
    /// declared earlier by the same endpoint (layers in ascending quality).
    /// `None` for a track's first (or only) layer.
    pub layer_of: Option<u32>,
    /// For an audio track: the payload type the endpoint sends redundant
    /// audio (RED, RFC 2198) with, around `payload_type`; packets with
    /// `payload_type` itself stay plain. Each consumer gets RED as sent or
    /// unwrapped to its primary block ([`crate::codec::red`]).
    pub red_payload_type: Option<u8>,
    /// What it shows: a screen share's layers are allocated before any
    /// camera's when a subscriber's bandwidth is short (see "Bandwidth
    /// priorities" in the module doc).
    pub source: TrackSource,
}

/// What a track shows, for the bandwidth allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TrackSource {
    /// A camera, or anything not marked otherwise.
    #[default]
    Camera,
    /// A screen share (the API's `"source": "screen"`, or `a=content:slides`
    /// (RFC 4796) on a WHIP publisher's media section).
    Screen,
}

/// A publisher's retransmission stream (RFC 4588 §4, SSRC multiplexing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtxStream {
    /// Its SSRC (`a=ssrc-group:FID <media> <this>`); unique on the worker.
    pub ssrc: u32,
    /// Its payload type (`a=fmtp:<this> apt=<media payload type>`).
    pub payload_type: u8,
}

/// The RTX payload types a subscriber negotiated, per kind: the router
/// answers its NACKs with retransmissions of that kind on an RTX stream per
/// consumer ([`ConsumerInfo::rtx_ssrc`]); `None` leaves its NACKs
/// unanswered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RtxPayloadTypes {
    /// For video consumers.
    pub video: Option<u8>,
    /// For audio consumers.
    pub audio: Option<u8>,
}

impl RtxPayloadTypes {
    /// The payload type for `kind`.
    pub fn get(self, kind: MediaKind) -> Option<u8> {
        match kind {
            MediaKind::Video => self.video,
            MediaKind::Audio => self.audio,
        }
    }
}

/// Which producers a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Subscription {
    /// Every producer of the room but its own, including later ones.
    #[default]
    All,
    /// One consumer slot per listed producer SSRC, per kind. Slot `i` keeps
    /// its output SSRC and continuous numbering when its producer changes.
    Explicit {
        /// Producer SSRCs for the video slots.
        video: Vec<u32>,
        /// Producer SSRCs for the audio slots.
        audio: Vec<u32>,
    },
    /// Last-N: `video` video slots and `audio` audio slots filled by the
    /// room's speakers (see the module's "Speakers and slots"), re-pointed
    /// as they change; slot `i` of a kind keeps its output SSRC and
    /// continuous numbering. `video + audio` and `pinned.len()` are at most
    /// [`RouterConfig::max_consumers_per_endpoint`]. Consumers are video
    /// slots `0..video`, then audio slots.
    Slots {
        /// Video slots.
        video: u16,
        /// Audio slots.
        audio: u16,
        /// Participants (ids as in [`EndpointConfig::participant`], or
        /// endpoint ids of endpoints without one) whose video comes first.
        pinned: Vec<u64>,
        /// A participant never shown, besides the subscriber's own.
        exclude: Option<u64>,
    },
}

/// An endpoint to add to a room.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Its id.
    pub id: EndpointId,
    /// The room it joins (must exist on this worker).
    pub room: RoomId,
    /// Publish, subscribe or both.
    pub role: Role,
    /// SRTP profile for both directions.
    pub profile: Profile,
    /// Master key || salt the endpoint protects its packets with.
    pub remote_master: Vec<u8>,
    /// Master key || salt the router protects packets to the endpoint with.
    pub local_master: Vec<u8>,
    /// Tracks it publishes (publish and both roles only).
    pub tracks: Vec<TrackConfig>,
    /// Its address, if known; otherwise learnt from its first authentic packet.
    pub remote: Option<SocketAddr>,
    /// What it receives (subscribe and both roles).
    pub subscription: Subscription,
    /// SSRC a receive-only endpoint sends RTCP from, so its address can be
    /// learnt from an authentic SRTCP packet.
    pub rtcp_ssrc: Option<u32>,
    /// RTX payload types it receives retransmissions with (subscribe and
    /// both roles).
    pub rtx_payload_types: RtxPayloadTypes,
    /// The id (1..=14) it negotiated for the transport-wide sequence
    /// number on what it receives: the router numbers its copies, reads its
    /// transport-cc feedback and fits its layers to the estimate
    /// ([`egress`]). For a WebRTC endpoint its transport's
    /// `twcc_send_extension` is used instead.
    pub twcc_send_extension: Option<u8>,
    /// The participant it belongs to (the control plane hashes the token's
    /// identity): its audio is one speaker with the participant's other
    /// endpoints, and [`Subscription::Slots`] never shows it its own media.
    /// `None`: the endpoint is a participant of its own, keyed by its id.
    pub participant: Option<u64>,
    /// The id of the RFC 6464 `ssrc-audio-level` extension in its audio
    /// packets, for dominant speaker detection. WebRTC endpoints take it
    /// from [`WebrtcTransport::audio_level_extension`] when this is `None`.
    pub audio_level_extension: Option<u8>,
    /// The payload type it receives redundant audio (RED, RFC 2198) with,
    /// if it negotiated RED (subscribe and both roles): RED of a producer
    /// that sends it is forwarded as is; without it, only each packet's
    /// primary block ([`crate::codec::red`]).
    pub red_payload_type: Option<u8>,
}

/// A room's media traffic since it was created: RTP packets its publishers
/// sent that the worker authenticated and fanned out, and the SRTP copies
/// it sent the room's subscribers (retransmissions, RTCP, ICE and DTLS not
/// counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoomTraffic {
    /// RTP packets received from the room's publishers.
    pub rx_packets: u64,
    /// Their bytes (decrypted length).
    pub rx_bytes: u64,
    /// SRTP packets sent to the room's subscribers.
    pub tx_packets: u64,
    /// Their bytes (as sent).
    pub tx_bytes: u64,
}

/// A consumer as the control plane reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerInfo {
    /// Audio or video.
    pub kind: MediaKind,
    /// Slot index within its kind.
    pub slot: u16,
    /// The SSRC the subscriber receives it with.
    pub ssrc: u32,
    /// The codec of the producer feeding it, if any.
    pub codec: Option<Codec>,
    /// The producer currently feeding it, if any.
    pub producer_ssrc: Option<u32>,
    /// Payload type it is sent with.
    pub payload_type: u8,
    /// The SSRC its retransmissions are sent with, when the subscriber
    /// negotiated RTX for its kind.
    pub rtx_ssrc: Option<u32>,
}

/// A control-plane command for a worker's router.
#[derive(Debug, Clone)]
pub enum Command {
    /// Create an empty room.
    CreateRoom(RoomId),
    /// Delete a room and every endpoint in it.
    DeleteRoom(RoomId),
    /// Add an endpoint to a room.
    AddEndpoint(Box<EndpointConfig>),
    /// Add a WebRTC endpoint: keyed by DTLS-SRTP, addressed by ICE-lite. The
    /// config's profile and keys are ignored (DTLS negotiates them) and its
    /// `remote` must be `None`.
    AddWebrtcEndpoint(Box<EndpointConfig>, Box<WebrtcTransport>),
    /// Remove an endpoint.
    RemoveEndpoint(EndpointId),
    /// Replace an endpoint's subscription.
    SetSubscription(EndpointId, Subscription),
    /// Replaces the subscriptions of several endpoints at once (a speaker
    /// switch of a whole room in one round trip): each applies as
    /// [`Command::SetSubscription`] would, in order, and answers on its own
    /// ([`Outcome::Subscriptions`]).
    SetSubscriptions(Vec<(EndpointId, Subscription)>),
    /// Pins or unpins one of an endpoint's consumers (by kind and slot):
    /// a pinned consumer's layers are allocated before other cameras'
    /// (after screen shares). A pin lasts while the consumer keeps its
    /// producer. Refused for a [`Subscription::Slots`] subscriber, whose
    /// pins are the participants its subscription names.
    SetPinned {
        /// The subscriber.
        endpoint: EndpointId,
        /// The consumer's kind.
        kind: MediaKind,
        /// Its slot within the kind.
        slot: u16,
        /// Pinned or not.
        pinned: bool,
    },
    /// Caps the simulcast layer of one of an endpoint's video consumers
    /// (by slot): `Some(0)` is the track's lowest layer by bitrate, `None`
    /// lifts the cap (the highest layer). The consumer moves at the next
    /// keyframe of its new layer, which is asked for.
    SetMaxLayer {
        /// The subscriber.
        endpoint: EndpointId,
        /// The video slot.
        slot: u16,
        /// The highest layer it may get.
        max_layer: Option<u8>,
    },
    /// Adds tracks to a publishing endpoint already in its room (a
    /// cascade trunk, whose tracks are the origin's consumers as they
    /// appear): each becomes a producer that the room's subscribers attach
    /// as they would a new publisher's. Whole tracks only (no `layer_of`);
    /// their SSRCs must be new on the worker, and the endpoint's tracks stay
    /// within [`RouterConfig::max_consumers_per_endpoint`] (a trunk
    /// publishes what one subscriber of the origin receives; only the
    /// control plane adds tracks, clients declare theirs at creation within
    /// [`RouterConfig::max_tracks_per_endpoint`]).
    AddTracks {
        /// The publisher.
        endpoint: EndpointId,
        /// Its new tracks.
        tracks: Vec<TrackConfig>,
    },
    /// Removes tracks (by SSRC) that a publishing endpoint added alone
    /// (no simulcast layers): their consumers detach as when a publisher
    /// leaves. Every SSRC must be one of the endpoint's single-layer tracks.
    RemoveTracks {
        /// The publisher.
        endpoint: EndpointId,
        /// Its tracks' SSRCs.
        ssrcs: Vec<u32>,
    },
    /// List a room's producers, including simulcast layers bound by `rid`.
    Producers(RoomId),
    /// An endpoint's consumers as they are now (a last-N slot's producer
    /// changes with the room's speakers); changes nothing.
    Consumers(EndpointId),
    /// An endpoint's bandwidth estimate as it is now; changes nothing.
    Bandwidth(EndpointId),
    /// Hand over the endpoints the router removed by itself since the last
    /// such command, with the reason ([`RemovalReason`]).
    TakeRemoved,
    /// Every room's endpoint count and media traffic so far
    /// ([`Outcome::Traffic`]); changes nothing.
    Traffic,
}

/// What a command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to report.
    Done,
    /// The endpoint's consumers after the command.
    Consumers(Vec<ConsumerInfo>),
    /// A room's producers: by endpoint in the order they joined the room,
    /// then in the order their tracks became producers.
    Producers(Vec<ProducerInfo>),
    /// Endpoints the router removed by itself ([`Command::TakeRemoved`]).
    Removed(Vec<(EndpointId, RemovalReason)>),
    /// Each room of the worker ([`Command::Traffic`]), in no order.
    Traffic(Vec<(RoomId, usize, RoomTraffic)>),
    /// Each change of [`Command::SetSubscriptions`], in order: the
    /// endpoint's consumers after it, or why it was refused (a refused
    /// change leaves that endpoint as it was).
    Subscriptions(Vec<Result<Vec<ConsumerInfo>, RouterError>>),
    /// The endpoint's bandwidth estimate ([`Command::Bandwidth`]); `None`
    /// for an endpoint whose egress is not estimated (no transport-wide
    /// sequence number negotiated).
    Bandwidth(Option<BandwidthInfo>),
}

/// A subscriber's bandwidth estimate as the control plane reports it (see
/// [`crate::bwe::Estimator`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BandwidthInfo {
    /// What the node sends it, bps: the lowest of the parts below.
    pub target_bps: u64,
    /// The delay-based estimate, bps.
    pub delay_based_bps: u64,
    /// The loss-based bound, bps, while loss holds the estimate down.
    pub loss_bound_bps: Option<u64>,
    /// The latest REMB, bps.
    pub remb_bps: Option<u64>,
    /// What the subscriber acknowledged receiving, bps, once measured.
    pub acked_bps: Option<u64>,
    /// Loss over the last interval of at least 20 reported packets, ‰.
    pub loss_permille: u16,
    /// What the delay trend says.
    pub delay_state: crate::bwe::delay::BandwidthUsage,
    /// The round-trip time in use, ms.
    pub rtt_ms: u32,
    /// Video consumers paused because their lowest layer does not fit.
    pub paused: u16,
    /// Upgrade trials passed and failed so far ([`egress`]'s "Trials
    /// before upgrades").
    pub trials_passed: u32,
    /// See `trials_passed`.
    pub trials_failed: u32,
    /// The last judged trial: what it padded up to and the mean bitrate the
    /// subscriber acknowledged in its second half, bps.
    pub last_trial: Option<(u64, u64)>,
}

/// A producer as the control plane reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerInfo {
    /// The endpoint publishing it.
    pub endpoint: EndpointId,
    /// Audio or video.
    pub kind: MediaKind,
    /// The SSRC it is published with.
    pub ssrc: u32,
    /// Its payload type.
    pub payload_type: u8,
    /// The simulcast layer's `rid`, for a producer bound by `rid`.
    pub rid: Option<String>,
    /// The track it is a layer of: the SSRC of the track's first layer
    /// (its own SSRC for a track's first or only layer). Subscriptions
    /// name tracks by this SSRC; the router picks the layer per consumer.
    pub group: u32,
    /// Its bitrate in bits per second over the last measured second;
    /// `None` before a full second of packets.
    pub bitrate: Option<u64>,
    /// Its rank among its track's active layers as
    /// [`Command::SetMaxLayer`] counts them (0: the lowest by bitrate;
    /// 0 for a track's only layer); `None` while it is inactive (no packet
    /// for two seconds: paused by its publisher).
    pub layer_rank: Option<u8>,
}

/// Why a command was refused. A refused command changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouterError {
    /// No such room on this worker.
    #[error("unknown room")]
    UnknownRoom,
    /// The room already exists.
    #[error("room exists")]
    RoomExists,
    /// No such endpoint on this worker.
    #[error("unknown endpoint")]
    UnknownEndpoint,
    /// The endpoint id is taken.
    #[error("endpoint exists")]
    EndpointExists,
    /// The SSRC is already used on this worker.
    #[error("duplicate SSRC {0}")]
    DuplicateSsrc(u32),
    /// A master key or salt has the wrong length for the profile.
    #[error("bad SRTP key: {0}")]
    BadKey(#[from] KeyLengthError),
    /// A configured limit would be exceeded.
    #[error("limit reached: {0}")]
    TooMany(&'static str),
    /// The request contradicts itself.
    #[error("invalid: {0}")]
    Invalid(&'static str),
}

/// Limits of one router. Every piece of state a client can create is
/// bounded by one of them; a command that would exceed one is refused with
/// [`RouterError::TooMany`] naming it ([`RouterConfig::check`] keeps them
/// consistent with each other).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouterConfig {
    /// SRTP table sizes and replay windows of every context.
    pub srtp: SrtpConfig,
    /// Rooms on this worker.
    pub max_rooms: usize,
    /// Endpoints on this worker.
    pub max_endpoints: usize,
    /// Endpoints in one room.
    pub max_endpoints_per_room: usize,
    /// Tracks one endpoint publishes: declared ones plus simulcast layers
    /// announced by `rid`. At most `srtp.max_ssrcs`, so every track's
    /// stream fits the endpoint's inbound SRTP context.
    pub max_tracks_per_endpoint: usize,
    /// Consumers of one endpoint. Each gets its own outbound SRTP stream
    /// (see [`SrtpContext::add_rtp_stream`](crate::srtp::SrtpContext::add_rtp_stream)), so this also bounds the
    /// endpoint's outbound SRTP state.
    pub max_consumers_per_endpoint: usize,
    /// WebRTC endpoints on this worker whose ICE + DTLS have not completed.
    pub max_pending_webrtc: usize,
    /// WebRTC endpoints of one room whose ICE + DTLS have not completed.
    pub max_pending_webrtc_per_room: usize,
    /// How long a WebRTC endpoint may take to complete ICE + DTLS; one that
    /// has not by then is removed (see [`Command::TakeRemoved`]), so
    /// abandoned sessions do not hold the pending limits forever.
    pub pending_webrtc_timeout: Duration,
    /// How long an endpoint keeps its address without a valid ICE check
    /// (WebRTC) or an authentic packet (an address learnt from media):
    /// RFC 7675 consent freshness, [`CONSENT_TIMEOUT`] by default. A
    /// connected WebRTC endpoint that loses consent is removed.
    pub consent_timeout: Duration,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            srtp: SrtpConfig::default(),
            max_rooms: 1024,
            max_endpoints: 8192,
            max_endpoints_per_room: 1000,
            max_tracks_per_endpoint: 16,
            max_consumers_per_endpoint: 1024,
            max_pending_webrtc: 512,
            max_pending_webrtc_per_room: 64,
            pending_webrtc_timeout: Duration::from_secs(30),
            consent_timeout: CONSENT_TIMEOUT,
        }
    }
}

impl RouterConfig {
    /// Refuses limits that contradict each other or are zero.
    pub fn check(&self) -> Result<(), &'static str> {
        let limits = [
            self.max_rooms,
            self.max_endpoints,
            self.max_endpoints_per_room,
            self.max_tracks_per_endpoint,
            self.max_consumers_per_endpoint,
            self.max_pending_webrtc,
            self.max_pending_webrtc_per_room,
        ];
        if limits.contains(&0)
            || self.pending_webrtc_timeout.is_zero()
            || self.consent_timeout.is_zero()
        {
            return Err("every router limit must be at least 1");
        }
        if self.max_tracks_per_endpoint > self.srtp.max_ssrcs {
            return Err("tracks per endpoint must not exceed the SRTP context's SSRCs");
        }
        if self.max_consumers_per_endpoint > usize::from(u16::MAX) {
            return Err("consumers per endpoint must fit a 16-bit slot index");
        }
        Ok(())
    }
}

/// Where the router writes egress datagrams.
pub trait Transmit {
    /// A buffer of at least 1500 bytes for the next datagram, or `None` when
    /// none is free.
    fn buffer(&mut self) -> Option<&mut [u8]>;
    /// Queues the first `len` bytes of the buffer the last [`Transmit::buffer`]
    /// call returned, for `dst`.
    fn send(&mut self, len: usize, dst: SocketAddr);
}

/// An endpoint: its transport and what it publishes and receives.
#[derive(Debug)]
struct Endpoint {
    id: EndpointId,
    room: RoomId,
    role: Role,
    transport: Transport,
    tracks: Vec<TrackConfig>,
    rtcp_ssrc: Option<u32>,
    rtx_payload_types: RtxPayloadTypes,
    /// Its participant (see [`EndpointConfig::participant`]).
    participant: Option<u64>,
    /// Its audio-level extension id.
    audio_level_extension: Option<u8>,
    red_payload_type: Option<u8>,
    /// Round-trip time from the endpoint's receiver reports.
    rtt: Option<Duration>,
    subscription: Subscription,
    consumers: Vec<Consumer>,
    ssrc_base: u32,
    /// Distinguishes this endpoint from earlier ones of the same slot in
    /// the timer heap.
    generation: u32,
}

/// Rooms, endpoints and the forwarding tables of one worker.
#[derive(Debug)]
pub struct Router {
    config: RouterConfig,
    rooms: HashMap<RoomId, Room>,
    endpoints: Vec<Option<Endpoint>>,
    free: Vec<u32>,
    by_id: HashMap<EndpointId, u32>,
    by_addr: HashMap<SocketAddr, u32>,
    producers: HashMap<u32, Producer>,
    /// Publishers' RTX SSRCs, to the SSRC of the stream they repair.
    rtx_ssrcs: HashMap<u32, u32>,
    rtcp_ssrcs: HashMap<u32, u32>,
    /// WebRTC endpoints by local ICE ufrag.
    by_ufrag: HashMap<Box<str>, u32>,
    dtls_cert: Option<DtlsCert>,
    /// Working space of transport-cc feedback, sized once.
    twcc_scratch: Vec<(u16, Option<i64>)>,
    /// Endpoints removed by the router itself, until the control plane
    /// takes them ([`Command::TakeRemoved`]).
    removed: Vec<(EndpointId, RemovalReason)>,
    events: EventQueue,
    /// Speaker detection of the rooms with audio publishers.
    speakers: HashMap<RoomId, RoomSpeakers>,
    /// The latest time handed in by a command or an audio packet, for
    /// re-pointing slots after a removal (which takes no time).
    clock: Option<Instant>,
    timers: Timers,
    next_generation: u32,
    stats: RouterStats,
}

impl Router {
    /// An empty router.
    pub fn new(config: RouterConfig) -> Self {
        Self {
            config,
            rooms: HashMap::new(),
            endpoints: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            by_addr: HashMap::new(),
            producers: HashMap::new(),
            rtx_ssrcs: HashMap::new(),
            rtcp_ssrcs: HashMap::new(),
            by_ufrag: HashMap::new(),
            dtls_cert: None,
            twcc_scratch: Vec::with_capacity(twcc::MAX_STATUSES),
            removed: Vec::new(),
            events: EventQueue::new(),
            speakers: HashMap::new(),
            clock: None,
            // One armed entry per endpoint plus superseded ones, compacted
            // in place when full.
            timers: Timers::new(config.max_endpoints.saturating_mul(4).saturating_add(64)),
            next_generation: 0,
            stats: RouterStats::default(),
        }
    }

    /// Sets the node's DTLS certificate; WebRTC endpoints need one.
    pub fn set_dtls_cert(&mut self, cert: DtlsCert) {
        self.dtls_cert = Some(cert);
    }

    /// Counters since start.
    pub fn stats(&self) -> &RouterStats {
        &self.stats
    }

    /// Rooms on this router.
    pub fn rooms(&self) -> usize {
        self.rooms.len()
    }

    /// Endpoints on this router.
    pub fn endpoints(&self) -> usize {
        self.by_id.len()
    }

    /// An endpoint's round-trip time, smoothed from its receiver reports
    /// about the sender reports it was sent; `None` before the first.
    pub fn rtt(&self, id: EndpointId) -> Option<Duration> {
        let slot = *self.by_id.get(&id)?;
        self.endpoint(slot)?.rtt
    }

    /// Applies a control command. A refused command changes nothing.
    pub fn handle_command(&mut self, now: Instant, cmd: Command) -> Result<Outcome, RouterError> {
        self.clock = Some(self.clock.map_or(now, |c| c.max(now)));
        match cmd {
            Command::CreateRoom(room) => {
                if self.rooms.contains_key(&room) {
                    return Err(RouterError::RoomExists);
                }
                if self.rooms.len() >= self.config.max_rooms {
                    return Err(RouterError::TooMany("rooms per worker"));
                }
                self.rooms.insert(room, Room::default());
                Ok(Outcome::Done)
            }
            Command::DeleteRoom(room) => {
                let r = self.rooms.remove(&room).ok_or(RouterError::UnknownRoom)?;
                for s in r.endpoints {
                    if let Some(id) = self.endpoint(s).map(|e| e.id) {
                        self.remove_endpoint(id)?;
                    }
                }
                Ok(Outcome::Done)
            }
            Command::AddEndpoint(config) => self.add_endpoint(*config, None, now),
            Command::AddWebrtcEndpoint(config, transport) => {
                self.add_endpoint(*config, Some(*transport), now)
            }
            Command::RemoveEndpoint(id) => {
                self.remove_endpoint(id)?;
                Ok(Outcome::Done)
            }
            Command::AddTracks { endpoint, tracks } => {
                self.add_tracks(endpoint, tracks, now)?;
                Ok(Outcome::Done)
            }
            Command::RemoveTracks { endpoint, ssrcs } => {
                self.remove_tracks(endpoint, &ssrcs, now)?;
                Ok(Outcome::Done)
            }
            Command::SetSubscriptions(changes) => Ok(Outcome::Subscriptions(
                changes
                    .into_iter()
                    .map(|(id, subscription)| self.set_subscription(id, subscription, now))
                    .collect(),
            )),
            Command::SetSubscription(id, subscription) => Ok(Outcome::Consumers(
                self.set_subscription(id, subscription, now)?,
            )),
            Command::TakeRemoved => Ok(Outcome::Removed(std::mem::take(&mut self.removed))),
            Command::Traffic => Ok(Outcome::Traffic(
                self.rooms
                    .iter()
                    .map(|(&id, r)| (id, r.endpoints.len(), r.traffic))
                    .collect(),
            )),
            Command::SetMaxLayer {
                endpoint,
                slot,
                max_layer,
            } => {
                let at = *self
                    .by_id
                    .get(&endpoint)
                    .ok_or(RouterError::UnknownEndpoint)?;
                let ep = self.endpoint_mut(at).ok_or(RouterError::UnknownEndpoint)?;
                let c = ep
                    .consumers
                    .iter_mut()
                    .find(|c| c.kind == MediaKind::Video && c.slot() == slot)
                    .ok_or(RouterError::Invalid("no such video slot"))?;
                c.max_layer = max_layer;
                if let Some(key) = c.source.filter(|_| c.attached) {
                    self.choose_layers(key, now);
                }
                Ok(Outcome::Done)
            }
            Command::Consumers(id) => {
                let at = *self.by_id.get(&id).ok_or(RouterError::UnknownEndpoint)?;
                Ok(Outcome::Consumers(self.consumer_infos(at)))
            }
            Command::Bandwidth(id) => {
                let at = *self.by_id.get(&id).ok_or(RouterError::UnknownEndpoint)?;
                let ep = self.endpoint(at).ok_or(RouterError::UnknownEndpoint)?;
                Ok(Outcome::Bandwidth(ep.transport.egress.as_deref().map(
                    |e| {
                        let est = &e.estimator;
                        BandwidthInfo {
                            target_bps: est.target_bps(),
                            delay_based_bps: est.delay_based_bps(),
                            loss_bound_bps: est.loss_bound_bps(),
                            remb_bps: est.remb_bps(),
                            acked_bps: est.acked_bps(),
                            loss_permille: (est.loss_fraction() * 1000.0).round() as u16,
                            delay_state: est.delay_state(),
                            rtt_ms: u32::try_from(est.rtt().as_millis()).unwrap_or(u32::MAX),
                            paused: ep.consumers.iter().filter(|c| c.paused()).count() as u16,
                            trials_passed: e.trials_passed,
                            trials_failed: e.trials_failed,
                            last_trial: e.last_trial,
                        }
                    },
                )))
            }
            Command::SetPinned {
                endpoint,
                kind,
                slot,
                pinned,
            } => {
                let at = *self
                    .by_id
                    .get(&endpoint)
                    .ok_or(RouterError::UnknownEndpoint)?;
                let ep = self.endpoint_mut(at).ok_or(RouterError::UnknownEndpoint)?;
                if matches!(ep.subscription, Subscription::Slots { .. }) {
                    return Err(RouterError::Invalid(
                        "a slots subscriber pins participants in its subscription",
                    ));
                }
                let c = ep
                    .consumers
                    .iter_mut()
                    .find(|c| c.kind == kind && c.slot() == slot)
                    .ok_or(RouterError::Invalid("no such slot"))?;
                c.pinned = pinned;
                if ep.transport.egress.as_ref().is_some_and(|e| e.allocated) {
                    // Its estimate is shared out anew at once.
                    self.allocate(at, now);
                    self.schedule(at, now);
                }
                Ok(Outcome::Done)
            }
            Command::Producers(room) => {
                let r = self.rooms.get(&room).ok_or(RouterError::UnknownRoom)?;
                let list = r
                    .endpoints
                    .iter()
                    .filter_map(|&s| self.endpoint(s))
                    .flat_map(|e| {
                        e.tracks.iter().map(|t| ProducerInfo {
                            endpoint: e.id,
                            kind: t.kind,
                            ssrc: t.ssrc,
                            payload_type: t.payload_type,
                            rid: e
                                .transport
                                .webrtc
                                .as_ref()
                                .and_then(|w| w.rid_of(t.ssrc))
                                .map(str::to_owned),
                            group: self.producers.get(&t.ssrc).map_or(t.ssrc, |p| p.group),
                            bitrate: self.layer_bitrate(t.ssrc),
                            layer_rank: self.layer_rank(t.ssrc, now),
                        })
                    })
                    .collect();
                Ok(Outcome::Producers(list))
            }
        }
    }

    /// Handles one received datagram: authenticates and decrypts it in place
    /// and writes every egress copy through `tx`. Never panics and never
    /// allocates (except once per simulcast layer, when its SSRC is bound);
    /// every drop is counted in [`Router::stats`].
    ///
    /// Returns whether the datagram was accepted as coming from `src`:
    /// SRTP/SRTCP that verified with the keys of the endpoint at `src` and
    /// was not a replay, or an ICE check with its MESSAGE-INTEGRITY after
    /// which `src` is its endpoint's address. A dropped datagram returns
    /// `false`, and so does DTLS (OpenSSL discards a forged record
    /// silently, so a record from an endpoint's address proves nothing) and
    /// a valid check from another address than its endpoint's. The I/O
    /// layer may trust what it saw below the datagram (an AF_XDP frame's
    /// source MAC) only when this is `true`.
    pub fn handle_input<T: Transmit>(
        &mut self,
        now: Instant,
        src: SocketAddr,
        datagram: &mut [u8],
        tx: &mut T,
    ) -> bool {
        self.stats.inc(Counter::RxPackets);
        self.stats.add(Counter::RxBytes, datagram.len() as u64);
        let result = match wire::classify(datagram) {
            DatagramKind::Rtp => self.handle_rtp(now, src, datagram, tx).map(|()| true),
            DatagramKind::Rtcp => self.handle_rtcp(now, src, datagram, tx).map(|()| true),
            DatagramKind::Stun => self.handle_stun(now, src, datagram, tx),
            DatagramKind::Dtls => self.handle_dtls(now, src, datagram, tx).map(|()| false),
            DatagramKind::Unknown => Err(DropReason::UnknownProtocol),
        };
        match result {
            Ok(accepted) => accepted,
            Err(reason) => {
                self.stats.drop(reason);
                false
            }
        }
    }

    /// Replaces an endpoint's subscription; returns its consumers after.
    fn set_subscription(
        &mut self,
        id: EndpointId,
        subscription: Subscription,
        now: Instant,
    ) -> Result<Vec<ConsumerInfo>, RouterError> {
        let slot = *self.by_id.get(&id).ok_or(RouterError::UnknownEndpoint)?;
        let role = self
            .endpoint(slot)
            .ok_or(RouterError::UnknownEndpoint)?
            .role;
        self.check_subscription(role, &subscription)?;
        let ep = self
            .endpoint_mut(slot)
            .ok_or(RouterError::UnknownEndpoint)?;
        ep.subscription = subscription;
        self.sync_consumers(slot, now);
        Ok(self.consumer_infos(slot))
    }

    /// Removes an endpoint on the router's own decision and keeps it for
    /// [`Command::TakeRemoved`].
    fn remove_by_itself(&mut self, id: EndpointId, reason: RemovalReason) {
        if self.remove_endpoint(id).is_ok() {
            self.removed.push((id, reason));
            self.stats.removal(reason);
            self.events.push(
                Event::Removed {
                    endpoint: id,
                    reason,
                },
                &mut self.stats,
            );
        }
    }

    /// The next event for the control plane, if any. Drain it after every
    /// batch of inputs: the queue holds [`EVENT_QUEUE`] events.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop()
    }

    fn endpoint(&self, slot: u32) -> Option<&Endpoint> {
        self.endpoints.get(slot as usize).and_then(Option::as_ref)
    }

    fn endpoint_mut(&mut self, slot: u32) -> Option<&mut Endpoint> {
        self.endpoints
            .get_mut(slot as usize)
            .and_then(Option::as_mut)
    }
}

/// A per-endpoint base for consumer SSRCs (splitmix64 of the id), never 0.
fn ssrc_base(id: EndpointId) -> u32 {
    let mut z = id.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((z ^ (z >> 31)) as u32) | 0x10
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_egress;
#[cfg(test)]
mod tests_hostile;
#[cfg(test)]
mod tests_padding;
#[cfg(test)]
mod tests_red;
#[cfg(test)]
mod tests_repair;
#[cfg(test)]
mod tests_simulcast;
#[cfg(test)]
mod tests_speakers;
#[cfg(test)]
mod tests_trunk;
#[cfg(test)]
mod tests_webrtc;
