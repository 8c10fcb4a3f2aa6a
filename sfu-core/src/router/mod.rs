//! Rooms, producers, consumers and the fan-out of SRTP packets (sans-IO).
//!
//! One [`Router`] lives on each worker thread and owns every room placed on
//! that worker. Its inputs are control commands ([`Router::handle_command`])
//! and received datagrams ([`Router::handle_datagram`]); its output is written
//! through the [`Transmit`] trait into send buffers the caller owns.
//!
//! # Forwarding
//! A publisher's SRTP packet is looked up by SSRC, authenticated and decrypted
//! **once**, in place; then, for each consumer of that producer, the plaintext
//! is copied into a fresh send buffer, its SSRC, sequence number, timestamp and
//! payload type are rewritten for that consumer ([`seq::StreamRewriter`]), and
//! it is encrypted with the subscriber's outbound SRTP context. No step
//! allocates: the lookups are hash-map reads and the fan-out lists are built
//! by control commands, off the hot path. The one exception is binding a
//! simulcast layer announced by `rid` to its SSRC (once per layer, see
//! [`webrtc`]), which builds fan-out lists like a command does.
//!
//! # Addresses
//! An endpoint's remote address is either given by the control plane or learnt
//! from the first packet of that endpoint that authenticates ("comedia"),
//! never from an unauthenticated one. A packet whose SSRC belongs to an endpoint
//! with a known address but arrives from another address is dropped.
//!
//! # Keyframes
//! When a consumer is switched to another producer, or a subscriber sends a PLI
//! or FIR for a consumer, the router sends a PLI to the producer's publisher
//! (at most one per producer every [`KEYFRAME_REQUEST_INTERVAL`]), piggy-backed
//! on the next packet received from that producer.

pub mod seq;
pub mod webrtc;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::dtls::{DtlsCert, DtlsState};
use crate::srtp::{KeyLengthError, Profile, SrtpConfig, SrtpContext, SrtpError};
use crate::twcc;
use crate::wire::rtcp::{self, RtcpIter, RtcpPacket};
use crate::wire::rtp::RtpPacket;
use crate::wire::stun::{self, StunClass, StunMessage, StunWriter};
use crate::wire::{self, DatagramKind};
use seq::StreamRewriter;
use webrtc::WebrtcState;
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
    /// The producer currently feeding it, if any.
    pub producer_ssrc: Option<u32>,
    /// Payload type it is sent with.
    pub payload_type: u8,
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
    /// List a room's producers, including simulcast layers bound by `rid`.
    Producers(RoomId),
    /// Hand over the endpoints the router removed by itself since the last
    /// such command, with the reason ([`RemovalReason`]).
    TakeRemoved,
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
}

/// Why the router removed an endpoint by itself. Removal frees everything
/// the endpoint held (slot, SSRCs, ufrag, address), so the same participant
/// can join again at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RemovalReason {
    /// A WebRTC endpoint did not complete ICE + DTLS within
    /// [`RouterConfig::pending_webrtc_timeout`].
    NeverConnected,
    /// A connected WebRTC endpoint had no valid ICE check for
    /// [`CONSENT_TIMEOUT`] (RFC 7675; a closed browser tab).
    ConsentLost,
    /// The DTLS handshake failed (bad fingerprint, fatal alert, timeout).
    DtlsFailed,
    /// The connected DTLS association was closed (close_notify or a fatal
    /// alert from the peer).
    DtlsClosed,
}

impl RemovalReason {
    /// Number of reasons.
    pub const COUNT: usize = 4;
    /// Every reason, in index order.
    pub const ALL: [RemovalReason; Self::COUNT] = [
        Self::NeverConnected,
        Self::ConsentLost,
        Self::DtlsFailed,
        Self::DtlsClosed,
    ];

    /// Stable metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NeverConnected => "never_connected",
            Self::ConsentLost => "consent_lost",
            Self::DtlsFailed => "dtls_failed",
            Self::DtlsClosed => "dtls_closed",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::NeverConnected => 0,
            Self::ConsentLost => 1,
            Self::DtlsFailed => 2,
            Self::DtlsClosed => 3,
        }
    }
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

/// Why a received datagram (or one egress copy of it) was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// RTP/RTCP header malformed.
    Malformed,
    /// First byte matches no protocol on this port.
    UnknownProtocol,
    /// STUN that is not a binding request (responses, indications).
    StunUnhandled,
    /// DTLS from an address that belongs to no WebRTC endpoint.
    DtlsUnhandled,
    /// A binding request whose USERNAME names no endpoint's ufrag.
    StunUnknownUser,
    /// A binding request with a bad FINGERPRINT, MESSAGE-INTEGRITY or
    /// remote ufrag.
    StunAuthFailed,
    /// A DTLS datagram the endpoint's session refused (garbage, alert,
    /// certificate not matching the SDP fingerprint).
    DtlsFailed,
    /// Media to or from a WebRTC endpoint whose DTLS handshake has not
    /// finished (or whose consent expired).
    NotConnected,
    /// No endpoint owns this SSRC or address.
    UnknownSource,
    /// The SSRC's endpoint has another remote address.
    AddressMismatch,
    /// SRTP/SRTCP shorter than its tag.
    SrtpTruncated,
    /// SRTP/SRTCP authentication failed.
    SrtpAuthFailed,
    /// SRTP/SRTCP replay.
    SrtpReplayed,
    /// SRTP/SRTCP older than the replay window.
    SrtpTooOld,
    /// Any other SRTP refusal (table full, index exhausted).
    SrtpOther,
    /// No free send buffer for an egress copy.
    PoolExhausted,
    /// A consumer's subscriber has no known address yet.
    SubscriberUnreachable,
    /// An egress copy could not be protected (too large for a buffer).
    ProtectFailed,
    /// A late packet from before a consumer's source switch.
    StaleAfterSwitch,
}

impl DropReason {
    /// Number of reasons.
    pub const COUNT: usize = 19;
    /// Every reason, in index order.
    pub const ALL: [DropReason; Self::COUNT] = [
        Self::Malformed,
        Self::UnknownProtocol,
        Self::StunUnhandled,
        Self::DtlsUnhandled,
        Self::StunUnknownUser,
        Self::StunAuthFailed,
        Self::DtlsFailed,
        Self::NotConnected,
        Self::UnknownSource,
        Self::AddressMismatch,
        Self::SrtpTruncated,
        Self::SrtpAuthFailed,
        Self::SrtpReplayed,
        Self::SrtpTooOld,
        Self::SrtpOther,
        Self::PoolExhausted,
        Self::SubscriberUnreachable,
        Self::ProtectFailed,
        Self::StaleAfterSwitch,
    ];

    /// Stable metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnknownProtocol => "unknown_protocol",
            Self::StunUnhandled => "stun_unhandled",
            Self::DtlsUnhandled => "dtls_unhandled",
            Self::StunUnknownUser => "stun_unknown_user",
            Self::StunAuthFailed => "stun_auth_failed",
            Self::DtlsFailed => "dtls_failed",
            Self::NotConnected => "not_connected",
            Self::UnknownSource => "unknown_source",
            Self::AddressMismatch => "address_mismatch",
            Self::SrtpTruncated => "srtp_truncated",
            Self::SrtpAuthFailed => "srtp_auth_failed",
            Self::SrtpReplayed => "srtp_replayed",
            Self::SrtpTooOld => "srtp_too_old",
            Self::SrtpOther => "srtp_other",
            Self::PoolExhausted => "pool_exhausted",
            Self::SubscriberUnreachable => "subscriber_unreachable",
            Self::ProtectFailed => "protect_failed",
            Self::StaleAfterSwitch => "stale_after_switch",
        }
    }

    fn index(self) -> usize {
        Self::ALL
            .iter()
            .position(|&r| r == self)
            .expect("ALL lists every variant")
    }

    fn from_srtp(e: SrtpError) -> Self {
        match e {
            SrtpError::Malformed(_) => Self::Malformed,
            SrtpError::Truncated => Self::SrtpTruncated,
            SrtpError::AuthFailed => Self::SrtpAuthFailed,
            SrtpError::Replayed => Self::SrtpReplayed,
            SrtpError::TooOld => Self::SrtpTooOld,
            _ => Self::SrtpOther,
        }
    }
}

/// Counters of one router. Plain integers: the router is single-threaded;
/// the packet path publishes them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Datagrams handled.
    pub rx_packets: u64,
    /// Bytes of datagrams handled.
    pub rx_bytes: u64,
    /// Egress datagrams written (media and RTCP).
    pub tx_packets: u64,
    /// Bytes of egress datagrams.
    pub tx_bytes: u64,
    /// RTP packets authenticated and fanned out.
    pub rtp_forwarded_in: u64,
    /// SRTCP packets authenticated.
    pub rtcp_in: u64,
    /// PLIs sent to publishers.
    pub pli_sent: u64,
    /// Valid ICE checks answered.
    pub ice_checks: u64,
    /// DTLS handshakes completed (SRTP keys installed).
    pub dtls_connected: u64,
    /// Endpoints whose ICE consent expired.
    pub consent_expired: u64,
    /// Simulcast layers bound to an SSRC by an authentic packet (each such
    /// packet is consumed by the bind, not forwarded nor counted as a drop).
    pub simulcast_bound: u64,
    /// Transport-cc feedback packets sent to publishers.
    pub twcc_feedback_sent: u64,
    /// Endpoints the router removed by itself, by [`RemovalReason`] index.
    pub removed: [u64; RemovalReason::COUNT],
    /// Producers an `All` subscriber did not get because it already had
    /// [`RouterConfig::max_consumers_per_endpoint`] consumers (counted
    /// each time its consumers are brought in line with the room).
    pub consumers_over_limit: u64,
    /// Drops by [`DropReason`] index.
    pub drops: [u64; DropReason::COUNT],
}

impl RouterStats {
    /// The count for one drop reason.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }

    fn drop(&mut self, reason: DropReason) {
        self.drops[reason.index()] += 1;
    }
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
    /// (see [`SrtpContext::add_rtp_stream`]), so this also bounds the
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
        if limits.contains(&0) || self.pending_webrtc_timeout.is_zero() {
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

#[derive(Debug)]
struct Room {
    endpoints: Vec<u32>,
}

#[derive(Debug)]
struct Endpoint {
    id: EndpointId,
    room: RoomId,
    role: Role,
    /// SRTP in (from the endpoint) and out (to it); `None` until a WebRTC
    /// endpoint's DTLS handshake completes.
    keys: Option<SrtpPair>,
    /// ICE and DTLS state of a WebRTC endpoint.
    webrtc: Option<Box<WebrtcState>>,
    remote: Option<SocketAddr>,
    /// When the address was learnt from an authentic packet (not given by
    /// the control plane, not set by ICE): the last authentic packet from
    /// it. The address is forgotten [`CONSENT_TIMEOUT`] after that, as ICE
    /// consent is, so a stale or spoofed address is not sent to forever.
    learnt_at: Option<Instant>,
    tracks: Vec<TrackConfig>,
    rtcp_ssrc: Option<u32>,
    subscription: Subscription,
    consumers: Vec<Consumer>,
    ssrc_base: u32,
    /// When it was added.
    created: Instant,
}

impl Endpoint {
    /// A WebRTC endpoint whose ICE + DTLS have not completed yet.
    fn pending(&self) -> bool {
        self.webrtc.as_ref().is_some_and(|w| !w.connected)
    }

    /// Records an authentic packet from `src`: learns the address of an
    /// SDES endpoint that has none ("comedia") and refreshes a learnt
    /// one's consent. A WebRTC endpoint's address comes from ICE only.
    fn authentic_from(&mut self, src: SocketAddr, now: Instant) -> Result<bool, DropReason> {
        match self.remote {
            Some(_) => {
                if self.learnt_at.is_some() {
                    self.learnt_at = Some(now);
                }
                Ok(false)
            }
            None if self.webrtc.is_some() => Err(DropReason::NotConnected),
            None => {
                self.remote = Some(src);
                self.learnt_at = Some(now);
                Ok(true)
            }
        }
    }
}

#[derive(Debug)]
struct SrtpPair {
    rx: SrtpContext,
    tx: SrtpContext,
}

impl SrtpPair {
    /// The contexts for master key || salt in each direction: `remote_master`
    /// opens what the endpoint sends, `local_master` protects what it gets.
    fn new(
        profile: Profile,
        remote_master: &[u8],
        local_master: &[u8],
        config: SrtpConfig,
    ) -> Result<Self, KeyLengthError> {
        let context = |master: &[u8]| {
            let (key, salt) = master.split_at(profile.key_len().min(master.len()));
            SrtpContext::new(profile, key, salt, config)
        };
        Ok(Self {
            rx: context(remote_master)?,
            tx: context(local_master)?,
        })
    }
}

#[derive(Debug)]
struct Consumer {
    kind: MediaKind,
    slot: u16,
    ssrc: u32,
    payload_type: u8,
    /// The producer SSRC this slot wants (explicit) or follows (all).
    source: Option<u32>,
    /// Whether the slot sits in its source's fan-out list.
    attached: bool,
    rewriter: StreamRewriter,
    /// Its stream in the endpoint's outbound SRTP context, once the
    /// endpoint has keys ([`SrtpContext::add_rtp_stream`]).
    tx_stream: Option<usize>,
}

#[derive(Debug)]
struct Producer {
    endpoint: u32,
    kind: MediaKind,
    payload_type: u8,
    fanout: Vec<(u32, u16)>,
    keyframe_wanted: bool,
    last_pli: Option<Instant>,
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
    rtcp_ssrcs: HashMap<u32, u32>,
    /// WebRTC endpoints by local ICE ufrag.
    by_ufrag: HashMap<Box<str>, u32>,
    dtls_cert: Option<DtlsCert>,
    /// Working space of transport-cc feedback, sized once.
    twcc_scratch: Vec<(u16, Option<i64>)>,
    /// Endpoints removed by the router itself, until the control plane
    /// takes them ([`Command::TakeRemoved`]).
    removed: Vec<(EndpointId, RemovalReason)>,
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
            rtcp_ssrcs: HashMap::new(),
            by_ufrag: HashMap::new(),
            dtls_cert: None,
            twcc_scratch: Vec::with_capacity(twcc::MAX_STATUSES),
            removed: Vec::new(),
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

    /// Applies a control command. A refused command changes nothing.
    pub fn handle_command(&mut self, now: Instant, cmd: Command) -> Result<Outcome, RouterError> {
        match cmd {
            Command::CreateRoom(room) => {
                if self.rooms.contains_key(&room) {
                    return Err(RouterError::RoomExists);
                }
                if self.rooms.len() >= self.config.max_rooms {
                    return Err(RouterError::TooMany("rooms per worker"));
                }
                self.rooms.insert(
                    room,
                    Room {
                        endpoints: Vec::new(),
                    },
                );
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
            Command::SetSubscription(id, subscription) => {
                let slot = *self.by_id.get(&id).ok_or(RouterError::UnknownEndpoint)?;
                let ep = self
                    .endpoint_mut(slot)
                    .ok_or(RouterError::UnknownEndpoint)?;
                let role = ep.role;
                self.check_subscription(role, &subscription)?;
                let ep = self
                    .endpoint_mut(slot)
                    .ok_or(RouterError::UnknownEndpoint)?;
                ep.subscription = subscription;
                self.sync_consumers(slot);
                Ok(Outcome::Consumers(self.consumer_infos(slot)))
            }
            Command::TakeRemoved => Ok(Outcome::Removed(std::mem::take(&mut self.removed))),
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
                                .webrtc
                                .as_ref()
                                .and_then(|w| w.rid_of(t.ssrc))
                                .map(str::to_owned),
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
    pub fn handle_datagram<T: Transmit>(
        &mut self,
        now: Instant,
        src: SocketAddr,
        datagram: &mut [u8],
        tx: &mut T,
    ) {
        self.stats.rx_packets += 1;
        self.stats.rx_bytes += datagram.len() as u64;
        let result = match wire::classify(datagram) {
            DatagramKind::Rtp => self.handle_rtp(now, src, datagram, tx),
            DatagramKind::Rtcp => self.handle_rtcp(now, src, datagram),
            DatagramKind::Stun => self.handle_stun(now, src, datagram, tx),
            DatagramKind::Dtls => self.handle_dtls(now, src, datagram, tx),
            DatagramKind::Unknown => Err(DropReason::UnknownProtocol),
        };
        if let Err(reason) = result {
            self.stats.drop(reason);
        }
    }

    fn handle_rtp<T: Transmit>(
        &mut self,
        now: Instant,
        src: SocketAddr,
        buf: &mut [u8],
        tx: &mut T,
    ) -> Result<(), DropReason> {
        if buf.len() < wire::rtp::FIXED_HEADER_LEN {
            return Err(DropReason::Malformed);
        }
        let ssrc = wire::be32(buf, 8);
        let Some(producer) = self.producers.get(&ssrc) else {
            return self.bind_rid(now, src, ssrc, buf);
        };
        let ep_slot = producer.endpoint;
        let Some(Some(publisher)) = self.endpoints.get_mut(ep_slot as usize) else {
            return Err(DropReason::UnknownSource);
        };
        if publisher.remote.is_some_and(|r| r != src) {
            return Err(DropReason::AddressMismatch);
        }
        let keys = publisher.keys.as_mut().ok_or(DropReason::NotConnected)?;
        let len = keys.rx.unprotect_rtp(buf).map_err(DropReason::from_srtp)?;
        // The one check of this packet: every consumer's copy reuses it.
        // SRTP authenticates only the bytes, so an authentic packet may still
        // be malformed (an extension element running past its block, bad
        // padding): it is dropped here, before anything relies on it.
        let packet = buf
            .get(..len)
            .and_then(|plain| RtpPacket::new_checked(plain).ok())
            .ok_or(DropReason::Malformed)?;
        if publisher.authentic_from(src, now)? {
            self.by_addr.insert(src, ep_slot);
        }
        if let Some(w) = publisher.webrtc.as_deref_mut() {
            w.record_arrival(&packet, now);
        }
        self.stats.rtp_forwarded_in += 1;
        let in_seq = packet.sequence_number();
        let in_ts = packet.timestamp();

        let Some(producer) = self.producers.get_mut(&ssrc) else {
            return Ok(());
        };
        for &(sub_slot, c) in &producer.fanout {
            let Some(Some(sub)) = self.endpoints.get_mut(sub_slot as usize) else {
                continue;
            };
            let Some(dst) = sub.remote else {
                self.stats.drop(DropReason::SubscriberUnreachable);
                continue;
            };
            let Some(keys) = sub.keys.as_mut() else {
                self.stats.drop(DropReason::NotConnected);
                continue;
            };
            let Some(consumer) = sub.consumers.get_mut(usize::from(c)) else {
                continue;
            };
            let Some(stream) = consumer.tx_stream else {
                self.stats.drop(DropReason::NotConnected);
                continue;
            };
            let Some((out_seq, out_ts)) = consumer.rewriter.rewrite(in_seq, in_ts, now) else {
                self.stats.drop(DropReason::StaleAfterSwitch);
                continue;
            };
            let Some(out) = tx.buffer() else {
                self.stats.drop(DropReason::PoolExhausted);
                continue;
            };
            let Some(mut p) = packet.copy_into(out) else {
                self.stats.drop(DropReason::ProtectFailed);
                continue;
            };
            p.set_ssrc(consumer.ssrc);
            p.set_sequence_number(out_seq);
            p.set_timestamp(out_ts);
            p.set_payload_type(consumer.payload_type);
            match keys.tx.protect_rtp_stream(stream, out, len) {
                Ok(n) => {
                    tx.send(n, dst);
                    self.stats.tx_packets += 1;
                    self.stats.tx_bytes += n as u64;
                }
                Err(_) => self.stats.drop(DropReason::ProtectFailed),
            }
        }

        if producer.keyframe_wanted
            && producer
                .last_pli
                .is_none_or(|t| now.saturating_duration_since(t) >= KEYFRAME_REQUEST_INTERVAL)
        {
            producer.keyframe_wanted = false;
            producer.last_pli = Some(now);
            let Some(Some(publisher)) = self.endpoints.get_mut(ep_slot as usize) else {
                return Ok(());
            };
            if let Some(out) = tx.buffer() {
                // Sender SSRC 1: the router's own RTCP source.
                let sent = match publisher.keys.as_mut() {
                    Some(keys) => rtcp::write_pli(out, 1, ssrc)
                        .ok()
                        .and_then(|n| keys.tx.protect_rtcp(out, n).ok()),
                    None => None,
                };
                if let Some(n) = sent {
                    tx.send(n, src);
                    self.stats.tx_packets += 1;
                    self.stats.tx_bytes += n as u64;
                    self.stats.pli_sent += 1;
                }
            } else {
                self.stats.drop(DropReason::PoolExhausted);
            }
        }
        Ok(())
    }

    fn handle_rtcp(
        &mut self,
        now: Instant,
        src: SocketAddr,
        buf: &mut [u8],
    ) -> Result<(), DropReason> {
        if buf.len() < 8 {
            return Err(DropReason::Malformed);
        }
        let sender = wire::be32(buf, 4);
        let slot = self
            .by_addr
            .get(&src)
            .or_else(|| self.rtcp_ssrcs.get(&sender))
            .copied()
            .or_else(|| self.producers.get(&sender).map(|p| p.endpoint))
            .ok_or(DropReason::UnknownSource)?;
        let Some(Some(ep)) = self.endpoints.get_mut(slot as usize) else {
            return Err(DropReason::UnknownSource);
        };
        if ep.remote.is_some_and(|r| r != src) {
            return Err(DropReason::AddressMismatch);
        }
        let keys = ep.keys.as_mut().ok_or(DropReason::NotConnected)?;
        let len = keys.rx.unprotect_rtcp(buf).map_err(DropReason::from_srtp)?;
        let compound = buf.get(..len).ok_or(DropReason::Malformed)?;
        if ep.authentic_from(src, now)? {
            self.by_addr.insert(src, slot);
        }
        self.stats.rtcp_in += 1;
        for item in RtcpIter::new(compound) {
            let media_ssrc = match item {
                Ok(RtcpPacket::Pli(p)) => p.media_ssrc(),
                Ok(RtcpPacket::Fir(f)) => match f.entries().next() {
                    Some((ssrc, _)) => ssrc,
                    None => continue,
                },
                Ok(_) => continue,
                Err(_) => {
                    // Authentic but malformed from here on: what came
                    // before was handled; the rest is counted and dropped.
                    self.stats.drop(DropReason::Malformed);
                    break;
                }
            };
            // Only this endpoint's own consumers: the source is a producer
            // of its room (see `apply_consumers`).
            let source = ep
                .consumers
                .iter()
                .find(|c| c.ssrc == media_ssrc && c.attached)
                .and_then(|c| c.source);
            if let Some(p) = source.and_then(|s| self.producers.get_mut(&s)) {
                p.keyframe_wanted = true;
            }
        }
        Ok(())
    }

    /// ICE-lite: answers a valid binding request and lets it set, move or
    /// refresh the endpoint's address (see [`webrtc`]).
    fn handle_stun<T: Transmit>(
        &mut self,
        now: Instant,
        src: SocketAddr,
        buf: &[u8],
        tx: &mut T,
    ) -> Result<(), DropReason> {
        let msg = StunMessage::new_checked(buf).map_err(|_| DropReason::Malformed)?;
        if msg.class() != StunClass::Request || msg.method() != stun::BINDING_REQUEST {
            return Err(DropReason::StunUnhandled);
        }
        let (local, remote) = msg
            .username()
            .and_then(webrtc::split_username)
            .ok_or(DropReason::StunUnknownUser)?;
        let slot = *self
            .by_ufrag
            .get(local)
            .ok_or(DropReason::StunUnknownUser)?;
        let Some(Some(ep)) = self.endpoints.get_mut(slot as usize) else {
            return Err(DropReason::StunUnknownUser);
        };
        let Some(w) = ep.webrtc.as_mut() else {
            return Err(DropReason::StunUnknownUser);
        };
        // RFC 8445 §7.3: FINGERPRINT is mandatory in ICE checks.
        if msg.attribute(stun::FINGERPRINT).is_none()
            || msg.verify_fingerprint().is_err()
            || msg.verify_integrity(w.ice.local_pwd.as_bytes()).is_err()
            || remote != w.ice.remote_ufrag
        {
            return Err(DropReason::StunAuthFailed);
        }
        // A valid check.
        self.stats.ice_checks += 1;
        let moved = match ep.remote {
            None => true,
            Some(current) => current != src && msg.use_candidate(),
        };
        if moved {
            if let Some(old) = ep.remote
                && self.by_addr.get(&old) == Some(&slot)
            {
                self.by_addr.remove(&old);
            }
            if let Some(&other) = self.by_addr.get(&src)
                && other != slot
            {
                // The address is another endpoint's: refuse to alias it.
                return Err(DropReason::AddressMismatch);
            }
            ep.remote = Some(src);
            self.by_addr.insert(src, slot);
        }
        if ep.remote == Some(src) {
            w.last_check = Some(now);
        }
        let transaction = *msg.transaction_id();
        let Some(out) = tx.buffer() else {
            return Err(DropReason::PoolExhausted);
        };
        let written = (|| {
            let mut wr = StunWriter::new(out, stun::BINDING_SUCCESS, &transaction)?;
            wr.add_xor_mapped_address(src)?;
            wr.add_message_integrity(w.ice.local_pwd.as_bytes())?;
            wr.add_fingerprint()?;
            Ok::<usize, crate::wire::WireError>(wr.finish())
        })();
        match written {
            Ok(n) => {
                tx.send(n, src);
                self.stats.tx_packets += 1;
                self.stats.tx_bytes += n as u64;
                Ok(())
            }
            Err(_) => Err(DropReason::ProtectFailed),
        }
    }

    /// DTLS from a WebRTC endpoint's verified address goes to its session.
    fn handle_dtls<T: Transmit>(
        &mut self,
        now: Instant,
        src: SocketAddr,
        buf: &[u8],
        tx: &mut T,
    ) -> Result<(), DropReason> {
        let slot = *self.by_addr.get(&src).ok_or(DropReason::DtlsUnhandled)?;
        let Some(Some(ep)) = self.endpoints.get_mut(slot as usize) else {
            return Err(DropReason::DtlsUnhandled);
        };
        let w = ep.webrtc.as_mut().ok_or(DropReason::DtlsUnhandled)?;
        let result = w.dtls.handle_datagram(buf, now);
        self.drive_dtls(slot, tx);
        self.remove_if_dtls_ended(slot);
        result.map_err(|_| DropReason::DtlsFailed)
    }

    /// Removes the endpoint in `slot` if its DTLS session has failed or
    /// closed (after its last datagrams, an alert say, were sent); returns
    /// whether it did.
    fn remove_if_dtls_ended(&mut self, slot: u32) -> bool {
        let Some(ep) = self.endpoint(slot) else {
            return false;
        };
        let Some(w) = ep.webrtc.as_ref() else {
            return false;
        };
        if w.dtls.state() != DtlsState::Failed {
            return false;
        }
        let reason = if w.connected {
            RemovalReason::DtlsClosed
        } else {
            RemovalReason::DtlsFailed
        };
        let id = ep.id;
        self.remove_by_itself(id, reason);
        true
    }

    /// Removes an endpoint on the router's own decision and keeps it for
    /// [`Command::TakeRemoved`].
    fn remove_by_itself(&mut self, id: EndpointId, reason: RemovalReason) {
        if self.remove_endpoint(id).is_ok() {
            self.removed.push((id, reason));
            self.stats.removed[reason.index()] += 1;
        }
    }

    /// Sends a session's queued DTLS datagrams and installs its keys once
    /// the handshake is done.
    fn drive_dtls<T: Transmit>(&mut self, slot: u32, tx: &mut T) {
        let srtp = self.config.srtp;
        let Some(Some(ep)) = self.endpoints.get_mut(slot as usize) else {
            return;
        };
        let Some(w) = ep.webrtc.as_mut() else {
            return;
        };
        if let Some(dst) = ep.remote {
            loop {
                let Some(out) = tx.buffer() else {
                    self.stats.drop(DropReason::PoolExhausted);
                    break;
                };
                let Some(n) = w.dtls.poll_datagram(out) else {
                    break;
                };
                tx.send(n, dst);
                self.stats.tx_packets += 1;
                self.stats.tx_bytes += n as u64;
            }
        }
        if w.connected {
            return;
        }
        let Some(k) = w.dtls.take_keys() else {
            return;
        };
        match SrtpPair::new(k.profile, &k.remote_master, &k.local_master, srtp) {
            Ok(mut pair) => {
                for c in &mut ep.consumers {
                    c.tx_stream = Some(pair.tx.add_rtp_stream(c.ssrc));
                }
                ep.keys = Some(pair);
                w.connected = true;
                self.stats.dtls_connected += 1;
                // Its decoders need a keyframe from each producer it receives.
                let sources: Vec<u32> = ep
                    .consumers
                    .iter()
                    .filter(|c| c.attached && c.kind == MediaKind::Video)
                    .filter_map(|c| c.source)
                    .collect();
                for s in sources {
                    if let Some(p) = self.producers.get_mut(&s) {
                        p.keyframe_wanted = true;
                    }
                }
            }
            Err(_) => self.stats.drop(DropReason::DtlsFailed),
        }
    }

    /// Runs timers: DTLS retransmissions, ICE consent expiry and the expiry
    /// of addresses learnt from media. Call it every few milliseconds; it
    /// costs one pass over the endpoints.
    pub fn handle_timeout<T: Transmit>(&mut self, now: Instant, tx: &mut T) {
        for slot in 0..self.endpoints.len() as u32 {
            let Some(Some(ep)) = self.endpoints.get_mut(slot as usize) else {
                continue;
            };
            if let (Some(remote), Some(at)) = (ep.remote, ep.learnt_at)
                && now.saturating_duration_since(at) > CONSENT_TIMEOUT
            {
                // No authentic packet for a consent period: stop sending to
                // an address only media vouched for; the next authentic
                // packet teaches it again.
                ep.remote = None;
                ep.learnt_at = None;
                if self.by_addr.get(&remote) == Some(&slot) {
                    self.by_addr.remove(&remote);
                }
                self.stats.consent_expired += 1;
            }
            if ep.pending()
                && now.saturating_duration_since(ep.created) > self.config.pending_webrtc_timeout
            {
                // Abandoned before it connected: gone, and reported.
                let id = ep.id;
                self.remove_by_itself(id, RemovalReason::NeverConnected);
                continue;
            }
            let Some(w) = ep.webrtc.as_mut() else {
                continue;
            };
            if w.connected && w.consent_expired(now) {
                // RFC 7675: consent lost. Without ICE restart the session
                // cannot come back: the endpoint goes (a closed tab).
                let id = ep.id;
                self.stats.consent_expired += 1;
                self.remove_by_itself(id, RemovalReason::ConsentLost);
                continue;
            }
            if let Some(remote) = ep.remote
                && w.consent_expired(now)
            {
                // Not connected yet: stop answering at that address; the
                // next valid check restores it.
                ep.remote = None;
                if self.by_addr.get(&remote) == Some(&slot) {
                    self.by_addr.remove(&remote);
                }
                self.stats.consent_expired += 1;
            }
            let twcc_due = w.twcc.as_ref().is_some_and(|(_, r)| r.due(now));
            if w.dtls.poll_timeout().is_some_and(|t| t <= now) {
                let _ = w.dtls.handle_timeout(now);
                self.drive_dtls(slot, tx);
                if self.remove_if_dtls_ended(slot) {
                    continue;
                }
            }
            if twcc_due {
                self.send_twcc(slot, now, tx);
            }
        }
    }

    /// Sends a round of transport-cc feedback to a connected endpoint (at
    /// most [`TWCC_PACKETS_PER_ROUND`] packets; the rest waits a round).
    fn send_twcc<T: Transmit>(&mut self, slot: u32, now: Instant, tx: &mut T) {
        let Self {
            endpoints,
            twcc_scratch,
            stats,
            ..
        } = self;
        let Some(Some(ep)) = endpoints.get_mut(slot as usize) else {
            return;
        };
        let (Some(dst), Some(keys), Some(w)) =
            (ep.remote, ep.keys.as_mut(), ep.webrtc.as_deref_mut())
        else {
            return;
        };
        let Some((_, receiver)) = w.twcc.as_mut() else {
            return;
        };
        for _ in 0..TWCC_PACKETS_PER_ROUND {
            let Some(out) = tx.buffer() else {
                stats.drop(DropReason::PoolExhausted);
                return;
            };
            // Room for the SRTCP trailer (tag and index) after the packet.
            let room = out.len().saturating_sub(SRTCP_TRAILER_MAX);
            let Some(n) = receiver.write_feedback(now, 1, twcc_scratch, &mut out[..room]) else {
                return;
            };
            match keys.tx.protect_rtcp(out, n) {
                Ok(n) => {
                    tx.send(n, dst);
                    stats.tx_packets += 1;
                    stats.tx_bytes += n as u64;
                    stats.twcc_feedback_sent += 1;
                }
                Err(_) => stats.drop(DropReason::ProtectFailed),
            }
        }
    }

    /// Binds a simulcast layer of the WebRTC endpoint at `src` to `ssrc`
    /// from an authentic packet carrying the layer's `rid`; see
    /// [`webrtc`]'s "Simulcast by `rid`". The packet is consumed.
    fn bind_rid(
        &mut self,
        now: Instant,
        src: SocketAddr,
        ssrc: u32,
        buf: &mut [u8],
    ) -> Result<(), DropReason> {
        let slot = *self.by_addr.get(&src).ok_or(DropReason::UnknownSource)?;
        if self.ssrc_taken(ssrc) {
            return Err(DropReason::UnknownSource);
        }
        let Some(Some(ep)) = self.endpoints.get_mut(slot as usize) else {
            return Err(DropReason::UnknownSource);
        };
        let (Some(w), Some(keys)) = (ep.webrtc.as_deref_mut(), ep.keys.as_mut()) else {
            return Err(DropReason::UnknownSource);
        };
        if !w.has_unbound_rid() {
            return Err(DropReason::UnknownSource);
        }
        let ext = w.rid_extension.ok_or(DropReason::UnknownSource)?;
        // Authentication first: nothing is learnt from a forged packet.
        let len = keys.rx.unprotect_rtp(buf).map_err(DropReason::from_srtp)?;
        let packet = buf
            .get(..len)
            .and_then(|plain| RtpPacket::new_checked(plain).ok())
            .ok_or(DropReason::Malformed)?;
        // Authentic, so it counts for congestion control whatever follows.
        w.record_arrival(&packet, now);
        if ep.tracks.len() >= self.config.max_tracks_per_endpoint {
            return Err(DropReason::UnknownSource);
        }
        let rid = packet.extension(ext).ok_or(DropReason::UnknownSource)?;
        let layer = w
            .unbound_rid(rid, packet.payload_type())
            .ok_or(DropReason::UnknownSource)?;
        layer.ssrc = Some(ssrc);
        let track = TrackConfig {
            kind: layer.track.kind,
            ssrc,
            payload_type: layer.track.payload_type,
        };
        ep.tracks.push(track);
        let room = ep.room;
        self.add_producer(slot, track);
        self.stats.simulcast_bound += 1;
        self.sync_room(room);
        Ok(())
    }

    /// Makes `track` of the endpoint in `slot` a producer (no consumers yet).
    fn add_producer(&mut self, slot: u32, track: TrackConfig) {
        self.producers.insert(
            track.ssrc,
            Producer {
                endpoint: slot,
                kind: track.kind,
                payload_type: track.payload_type,
                fanout: Vec::new(),
                keyframe_wanted: false,
                last_pli: None,
            },
        );
    }

    /// After new producers: every subscriber of the room may want them.
    fn sync_room(&mut self, room: RoomId) {
        let slots = self
            .rooms
            .get(&room)
            .map(|r| r.endpoints.clone())
            .unwrap_or_default();
        for s in slots {
            self.sync_consumers(s);
        }
    }

    fn add_endpoint(
        &mut self,
        cfg: EndpointConfig,
        transport: Option<WebrtcTransport>,
        now: Instant,
    ) -> Result<Outcome, RouterError> {
        let room = self.rooms.get(&cfg.room).ok_or(RouterError::UnknownRoom)?;
        if self.by_id.contains_key(&cfg.id) {
            return Err(RouterError::EndpointExists);
        }
        if self.by_id.len() >= self.config.max_endpoints {
            return Err(RouterError::TooMany("endpoints per worker"));
        }
        if room.endpoints.len() >= self.config.max_endpoints_per_room {
            return Err(RouterError::TooMany("endpoints per room"));
        }
        let rid_layers = transport.as_ref().map_or(0, |t| t.rid_tracks.len());
        if cfg.tracks.len() + rid_layers > self.config.max_tracks_per_endpoint {
            return Err(RouterError::TooMany("tracks per endpoint"));
        }
        if transport.is_some() {
            let pending = |slots: &mut dyn Iterator<Item = u32>| {
                slots
                    .filter(|&s| self.endpoint(s).is_some_and(Endpoint::pending))
                    .count()
            };
            if pending(&mut room.endpoints.iter().copied())
                >= self.config.max_pending_webrtc_per_room
            {
                return Err(RouterError::TooMany("unconnected WebRTC sessions per room"));
            }
            if pending(&mut (0..self.endpoints.len() as u32)) >= self.config.max_pending_webrtc {
                return Err(RouterError::TooMany(
                    "unconnected WebRTC sessions per worker",
                ));
            }
        }
        if !cfg.role.publishes() && !cfg.tracks.is_empty() {
            return Err(RouterError::Invalid(
                "a subscribe-only endpoint publishes no tracks",
            ));
        }
        for (i, t) in cfg.tracks.iter().enumerate() {
            if t.payload_type > 127 {
                return Err(RouterError::Invalid("payload type above 127"));
            }
            let dup_own = cfg.tracks[..i].iter().any(|o| o.ssrc == t.ssrc);
            if dup_own || self.ssrc_taken(t.ssrc) {
                return Err(RouterError::DuplicateSsrc(t.ssrc));
            }
        }
        if let Some(s) = cfg.rtcp_ssrc
            && (self.ssrc_taken(s) || cfg.tracks.iter().any(|t| t.ssrc == s))
        {
            return Err(RouterError::DuplicateSsrc(s));
        }
        if cfg.role.subscribes() {
            self.check_subscription(cfg.role, &cfg.subscription)?;
        }
        if cfg.remote.is_some_and(|a| self.by_addr.contains_key(&a)) {
            return Err(RouterError::Invalid(
                "another endpoint has this remote address",
            ));
        }
        if let Some(t) = &transport {
            if !t.rid_tracks.is_empty() && !cfg.role.publishes() {
                return Err(RouterError::Invalid(
                    "a subscribe-only endpoint publishes no tracks",
                ));
            }
            for (i, r) in t.rid_tracks.iter().enumerate() {
                if r.payload_type > 127 {
                    return Err(RouterError::Invalid("payload type above 127"));
                }
                if r.rid.is_empty() || t.rid_tracks[..i].iter().any(|o| o.rid == r.rid) {
                    return Err(RouterError::Invalid("empty or repeated rid"));
                }
            }
            if cfg.remote.is_some() {
                return Err(RouterError::Invalid(
                    "a WebRTC endpoint's address comes from ICE",
                ));
            }
            let ufrag = &t.ice.local_ufrag;
            if ufrag.is_empty() || ufrag.contains(':') || t.ice.local_pwd.is_empty() {
                return Err(RouterError::Invalid("bad ICE credentials"));
            }
            if self.by_ufrag.contains_key(ufrag.as_str()) {
                return Err(RouterError::Invalid("ICE ufrag in use"));
            }
        }
        let webrtc = match transport {
            Some(t) => {
                let cert = self
                    .dtls_cert
                    .as_ref()
                    .ok_or(RouterError::Invalid("no DTLS certificate on this worker"))?;
                let state = WebrtcState::new(t, cert, now)
                    .map_err(|_| RouterError::Invalid("DTLS session could not be created"))?;
                Some(Box::new(state))
            }
            None => None,
        };
        let keys = match webrtc {
            Some(_) => None,
            None => Some(self.sdes_keys(&cfg)?),
        };

        let ep = Endpoint {
            id: cfg.id,
            room: cfg.room,
            role: cfg.role,
            keys,
            webrtc,
            remote: cfg.remote,
            learnt_at: None,
            tracks: cfg.tracks,
            rtcp_ssrc: cfg.rtcp_ssrc,
            subscription: cfg.subscription,
            consumers: Vec::new(),
            ssrc_base: ssrc_base(cfg.id),
            created: now,
        };
        let ufrag = ep
            .webrtc
            .as_ref()
            .map(|w| Box::<str>::from(w.ice.local_ufrag.as_str()));
        let slot = match self.free.pop() {
            Some(s) => {
                self.endpoints[s as usize] = Some(ep);
                s
            }
            None => {
                self.endpoints.push(Some(ep));
                (self.endpoints.len() - 1) as u32
            }
        };
        if let Some(u) = ufrag {
            self.by_ufrag.insert(u, slot);
        }
        self.finish_add(slot, cfg.id, cfg.remote, cfg.rtcp_ssrc, cfg.room)
    }

    /// SRTP contexts from keys exchanged out of band.
    fn sdes_keys(&self, cfg: &EndpointConfig) -> Result<SrtpPair, RouterError> {
        let pair = SrtpPair::new(
            cfg.profile,
            &cfg.remote_master,
            &cfg.local_master,
            self.config.srtp,
        )?;
        Ok(pair)
    }

    /// Indexes a new endpoint and creates its producers and consumers.
    fn finish_add(
        &mut self,
        slot: u32,
        id: EndpointId,
        remote: Option<SocketAddr>,
        rtcp_ssrc: Option<u32>,
        room: RoomId,
    ) -> Result<Outcome, RouterError> {
        self.by_id.insert(id, slot);
        if let Some(a) = remote {
            self.by_addr.insert(a, slot);
        }
        if let Some(s) = rtcp_ssrc {
            self.rtcp_ssrcs.insert(s, slot);
        }
        if let Some(r) = self.rooms.get_mut(&room) {
            r.endpoints.push(slot);
        }

        // Its tracks become producers; waiting consumers attach to them.
        let tracks = self
            .endpoint(slot)
            .map(|e| e.tracks.clone())
            .unwrap_or_default();
        for &t in &tracks {
            self.add_producer(slot, t);
        }
        if tracks.is_empty() {
            self.sync_consumers(slot);
        } else {
            self.sync_room(room);
        }
        Ok(Outcome::Consumers(self.consumer_infos(slot)))
    }

    fn remove_endpoint(&mut self, id: EndpointId) -> Result<(), RouterError> {
        let slot = self.by_id.remove(&id).ok_or(RouterError::UnknownEndpoint)?;
        let ep = self
            .endpoints
            .get_mut(slot as usize)
            .and_then(Option::take)
            .ok_or(RouterError::UnknownEndpoint)?;
        // Its consumers leave their producers' fan-out lists.
        for c in &ep.consumers {
            if let (true, Some(p)) = (
                c.attached,
                c.source.and_then(|s| self.producers.get_mut(&s)),
            ) {
                p.fanout.retain(|&(s, _)| s != slot);
            }
        }
        // Its producers go; consumers fed by them detach and wait.
        for t in &ep.tracks {
            if let Some(p) = self.producers.remove(&t.ssrc) {
                for (s, c) in p.fanout {
                    if let Some(Some(sub)) = self.endpoints.get_mut(s as usize)
                        && let Some(consumer) = sub.consumers.get_mut(usize::from(c))
                    {
                        consumer.attached = false;
                    }
                }
            }
        }
        if let Some(a) = ep.remote
            && self.by_addr.get(&a) == Some(&slot)
        {
            self.by_addr.remove(&a);
        }
        if let Some(s) = ep.rtcp_ssrc {
            self.rtcp_ssrcs.remove(&s);
        }
        if let Some(w) = &ep.webrtc {
            self.by_ufrag.remove(w.ice.local_ufrag.as_str());
        }
        // Consumers it fed were detached above; an `All` subscriber reuses
        // such a slot for the next producer, an explicit slot waits for its
        // producer to come back.
        if let Some(room) = self.rooms.get_mut(&ep.room) {
            room.endpoints.retain(|&s| s != slot);
        }
        self.free.push(slot);
        Ok(())
    }

    fn check_subscription(&self, role: Role, sub: &Subscription) -> Result<(), RouterError> {
        if !role.subscribes() {
            return Err(RouterError::Invalid(
                "a publish-only endpoint has no subscription",
            ));
        }
        if let Subscription::Explicit { video, audio } = sub {
            if video.len() + audio.len() > self.config.max_consumers_per_endpoint {
                return Err(RouterError::TooMany("consumers per endpoint"));
            }
            if video.len() > usize::from(u16::MAX) || audio.len() > usize::from(u16::MAX) {
                return Err(RouterError::TooMany("slots per kind"));
            }
        }
        Ok(())
    }

    /// Brings an endpoint's consumers in line with its subscription and the
    /// room's producers: creates, re-points and detaches slots, keeping each
    /// slot's SSRC and numbering.
    fn sync_consumers(&mut self, slot: u32) {
        let Some(ep) = self.endpoint(slot) else {
            return;
        };
        if !ep.role.subscribes() {
            return;
        }
        // The wanted (kind, slot) -> producer SSRC assignment.
        let mut wanted: Vec<(MediaKind, Option<u32>)> = Vec::new();
        match &ep.subscription {
            Subscription::Explicit { video, audio } => {
                wanted.extend(video.iter().map(|&s| (MediaKind::Video, Some(s))));
                wanted.extend(audio.iter().map(|&s| (MediaKind::Audio, Some(s))));
            }
            Subscription::All => {
                // Keep existing slots on their producers; fill free slots of
                // the same kind before adding new ones.
                let Some(room) = self.rooms.get(&ep.room) else {
                    return;
                };
                let mut room_producers: Vec<(u32, MediaKind)> = room
                    .endpoints
                    .iter()
                    .filter(|&&s| s != slot)
                    .filter_map(|&s| self.endpoint(s))
                    .flat_map(|e| e.tracks.iter().map(|t| (t.ssrc, t.kind)))
                    .collect();
                room_producers.sort_unstable();
                for c in &ep.consumers {
                    let keep = c
                        .source
                        .filter(|s| room_producers.iter().any(|(p, _)| p == s));
                    wanted.push((c.kind, keep));
                }
                for (ssrc, kind) in room_producers {
                    if wanted.iter().any(|&(_, s)| s == Some(ssrc)) {
                        continue;
                    }
                    match wanted.iter_mut().find(|(k, s)| *k == kind && s.is_none()) {
                        Some(free) => free.1 = Some(ssrc),
                        None => wanted.push((kind, Some(ssrc))),
                    }
                }
            }
        }
        if wanted.len() > self.config.max_consumers_per_endpoint {
            // Only `All` can get here (explicit lists are checked): the
            // subscriber misses the room's newest producers, counted.
            let over = wanted.len() - self.config.max_consumers_per_endpoint;
            self.stats.consumers_over_limit += over as u64;
            wanted.truncate(self.config.max_consumers_per_endpoint);
        }
        self.apply_consumers(slot, &wanted);
    }

    /// Rooms are a security boundary: a slot attaches only to a producer of
    /// its endpoint's room. An SSRC that is unknown, or a producer of another
    /// room, gets the same answer as one not published yet: an unattached
    /// slot (nothing tells the two apart), which attaches if a producer with
    /// that SSRC appears in the endpoint's own room.
    fn apply_consumers(&mut self, slot: u32, wanted: &[(MediaKind, Option<u32>)]) {
        let Self {
            endpoints,
            producers,
            ..
        } = self;
        // The producers of the endpoint's room, as (SSRC, publisher slot)
        // pairs resolved through the publisher's room.
        let Some(room) = endpoints
            .get(slot as usize)
            .and_then(Option::as_ref)
            .map(|e| e.room)
        else {
            return;
        };
        let in_room =
            |producers: &HashMap<u32, Producer>, endpoints: &[Option<Endpoint>], s: u32| {
                producers.get(&s).is_some_and(|p| {
                    endpoints
                        .get(p.endpoint as usize)
                        .and_then(Option::as_ref)
                        .is_some_and(|e| e.room == room)
                })
            };
        let allowed: Vec<Option<u32>> = wanted
            .iter()
            .map(|&(_, s)| s.filter(|&s| in_room(producers, endpoints, s)))
            .collect();
        let Some(Some(ep)) = endpoints.get_mut(slot as usize) else {
            return;
        };
        let (video_pt, audio_pt) = ep.webrtc.as_ref().map_or((None, None), |w| {
            (w.video_payload_type, w.audio_payload_type)
        });
        // Drop surplus slots (and their fan-out entries).
        while ep.consumers.len() > wanted.len() {
            let index = (ep.consumers.len() - 1) as u16;
            let Some(c) = ep.consumers.pop() else {
                break;
            };
            if let (true, Some(p)) = (c.attached, c.source.and_then(|s| producers.get_mut(&s))) {
                p.fanout.retain(|&e| e != (slot, index));
            }
        }
        for (i, (&(kind, source), &available)) in wanted.iter().zip(&allowed).enumerate() {
            let index = i as u16;
            if ep.consumers.get(i).is_none_or(|c| c.kind != kind) {
                // A new slot, or a slot whose kind changed: start afresh.
                if let Some(old) = ep.consumers.get(i)
                    && let (true, Some(p)) =
                        (old.attached, old.source.and_then(|s| producers.get_mut(&s)))
                {
                    p.fanout.retain(|&e| e != (slot, index));
                }
                let per_kind = wanted[..i].iter().filter(|(k, _)| *k == kind).count() as u16;
                // Stable per (kind, slot), whatever the slot's position.
                let ssrc = ep.ssrc_base.wrapping_add(
                    u32::from(per_kind)
                        + if kind == MediaKind::Audio {
                            0x1_0000
                        } else {
                            0
                        },
                );
                // A slot that had this SSRC before continues its numbering,
                // so no packet index (GCM nonce) is used twice under the key.
                let previous = ep.keys.as_ref().and_then(|k| k.tx.rtp_index(ssrc));
                let first_seq =
                    previous.map_or((ep.ssrc_base >> 3) as u16, |h| (h as u16).wrapping_add(1));
                let c = Consumer {
                    kind,
                    slot: per_kind,
                    ssrc,
                    payload_type: 0,
                    source: None,
                    attached: false,
                    rewriter: StreamRewriter::new(
                        kind.clock_rate(),
                        first_seq,
                        ep.ssrc_base.rotate_left(11),
                    ),
                    tx_stream: ep.keys.as_mut().map(|k| k.tx.add_rtp_stream(ssrc)),
                };
                match ep.consumers.get_mut(i) {
                    Some(old) => *old = c,
                    None => ep.consumers.push(c),
                }
            }
            let Some(c) = ep.consumers.get_mut(i) else {
                continue;
            };
            let same = c.attached && c.source == available;
            if same {
                continue;
            }
            if c.attached {
                if let Some(p) = c.source.and_then(|s| producers.get_mut(&s)) {
                    p.fanout.retain(|&e| e != (slot, index));
                }
                c.attached = false;
            }
            c.source = source;
            if let Some(p) = available.and_then(|s| producers.get_mut(&s)) {
                p.fanout.push((slot, index));
                c.attached = true;
                c.payload_type = match p.kind {
                    MediaKind::Video => video_pt,
                    MediaKind::Audio => audio_pt,
                }
                .unwrap_or(p.payload_type);
                c.rewriter.set_clock_rate(p.kind.clock_rate());
                c.rewriter.resync();
                if p.kind == MediaKind::Video {
                    p.keyframe_wanted = true;
                }
            }
        }
    }

    fn consumer_infos(&self, slot: u32) -> Vec<ConsumerInfo> {
        self.endpoint(slot)
            .map(|e| {
                e.consumers
                    .iter()
                    .map(|c| ConsumerInfo {
                        kind: c.kind,
                        slot: c.slot,
                        ssrc: c.ssrc,
                        producer_ssrc: if c.attached { c.source } else { None },
                        payload_type: c.payload_type,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn ssrc_taken(&self, ssrc: u32) -> bool {
        self.producers.contains_key(&ssrc) || self.rtcp_ssrcs.contains_key(&ssrc)
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
mod tests_hostile;
#[cfg(test)]
mod tests_webrtc;
