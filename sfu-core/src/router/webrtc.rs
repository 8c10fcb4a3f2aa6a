//! ICE-lite and DTLS-SRTP for WebRTC endpoints (the router's slow path).
//!
//! A WebRTC endpoint starts without SRTP keys and without an address. Its
//! peer (the ICE controlling agent) sends STUN binding requests to the
//! worker's port; a request whose USERNAME starts with the endpoint's local
//! ufrag, whose FINGERPRINT is right and whose MESSAGE-INTEGRITY verifies with
//! the endpoint's local password is answered with a binding success
//! (XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY, FINGERPRINT). Only such a *valid
//! check* may set or move the endpoint's address:
//!
//! * the first valid check sets it (so the DTLS handshake that follows the
//!   first successful check finds its endpoint);
//! * a valid check carrying USE-CANDIDATE (nomination) moves it to the
//!   check's source;
//! * a valid check from the current address refreshes consent (RFC 7675);
//!   after [`CONSENT_TIMEOUT`] without one, a connected endpoint is removed
//!   (there is no ICE restart to bring it back: a closed tab), and a not yet
//!   connected one forgets the address until the next valid check.
//!
//! # Lifecycle
//! The router removes a WebRTC endpoint by itself when it has not connected
//! within [`RouterConfig::pending_webrtc_timeout`](super::RouterConfig::pending_webrtc_timeout),
//! when its consent is lost, and at once when its DTLS handshake fails or its
//! association is closed (close_notify, fatal alert). Each removal frees the
//! endpoint's slot, SSRCs and ufrag and is kept, with its
//! [`RemovalReason`](super::RemovalReason), until the control plane takes it
//! with [`Command::TakeRemoved`](super::Command::TakeRemoved).
//!
//! Nothing from an unverified address is ever used: media, RTCP and DTLS are
//! looked up by the endpoint's current address or SSRC and checked against
//! it; WebRTC endpoints never learn their address from media ("comedia").
//!
//! DTLS datagrams from an endpoint's address go to its [`DtlsSession`]; its
//! output is sent back to that address, its retransmission timer runs from
//! [`Router::handle_timeout`](super::Router::handle_timeout). When the handshake completes and the
//! peer's certificate matches the fingerprint from its SDP, the exported keys
//! become the endpoint's SRTP contexts, and the producers of its consumers are
//! asked for a keyframe so its decoders can start.
//!
//! # Transport-wide congestion control
//! When the answer negotiated the transport-wide sequence number extension
//! (and `transport-cc` feedback), every authentic RTP packet's number and
//! arrival time go to the endpoint's [`TwccReceiver`] — after SRTP
//! authentication, so a forged packet cannot fake the path's health — and
//! [`Router::handle_timeout`](super::Router::handle_timeout) sends the
//! feedback every [`FEEDBACK_INTERVAL`](crate::twcc::FEEDBACK_INTERVAL) as
//! SRTCP to the endpoint's address. The sender's estimator (Chrome's GCC)
//! drives its encoder from it. Recording costs one extension lookup per
//! packet and no allocation.
//!
//! # Simulcast by `rid`
//! A publisher may announce layers by `a=rid` only ([`RidTrack`]), as
//! browsers do. A packet from the endpoint's current address whose SSRC is no
//! producer's is then unprotected with the endpoint's keys; only if it
//! authenticates, carries the `rtp-stream-id` extension naming an unbound
//! layer and has that layer's payload type (so RTX with `repaired-rid` never
//! binds), its SSRC becomes a new producer of the layer's kind and the room's
//! subscribers are synchronised. That packet is consumed by the bind
//! (counted in `simulcast_bound`); later ones are forwarded. Binding builds
//! fan-out lists, so it allocates, once per layer.

use std::time::{Duration, Instant};

use super::MediaKind;
use crate::dtls::{DtlsError, DtlsRole, DtlsSession, Fingerprint};
use crate::twcc::TwccReceiver;
use crate::wire::rtp::{RtpPacket, parse_transport_cc};

/// Time without a valid ICE check after which the router stops sending to
/// an endpoint (RFC 7675 consent freshness).
pub const CONSENT_TIMEOUT: Duration = Duration::from_secs(30);

/// ICE credentials of a WebRTC endpoint (from the SDP offer and answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceCredentials {
    /// The node's ufrag for this endpoint (unique on the worker, no `:`).
    pub local_ufrag: String,
    /// The node's password: keys MESSAGE-INTEGRITY of checks and answers.
    pub local_pwd: String,
    /// The peer's ufrag (second half of a check's USERNAME).
    pub remote_ufrag: String,
    /// The peer's password (unused by a lite agent, which sends no checks).
    pub remote_pwd: String,
}

/// How a WebRTC endpoint is keyed: ICE-lite credentials and DTLS-SRTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebrtcTransport {
    /// ICE credentials.
    pub ice: IceCredentials,
    /// The node's DTLS role (server when the answer says `a=setup:passive`).
    pub dtls_role: DtlsRole,
    /// The peer's certificate fingerprint from its SDP.
    pub remote_fingerprint: Fingerprint,
    /// Payload type the peer expects for forwarded video (its SDP's number
    /// for the producer's codec); `None` keeps the producer's.
    pub video_payload_type: Option<u8>,
    /// Payload type for forwarded audio, as `video_payload_type`.
    pub audio_payload_type: Option<u8>,
    /// Simulcast layers the peer announced by `rid` only (no SSRCs): each
    /// becomes a producer once an authentic packet tells its SSRC.
    pub rid_tracks: Vec<RidTrack>,
    /// The peer's extension id for `urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id`;
    /// without it no `rid_tracks` entry is ever bound.
    pub rid_extension: Option<u8>,
    /// The extension id the peer (a subscriber) negotiated for the
    /// transport-wide sequence number on what the node sends it: the router
    /// numbers its egress to the peer with it, reads the peer's
    /// transport-cc feedback and estimates its bandwidth ([`crate::bwe`]).
    pub twcc_send_extension: Option<u8>,
    /// The peer's extension id for
    /// `urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id`: an RTX
    /// packet naming a bound layer with it binds that layer's RTX stream.
    pub repaired_rid_extension: Option<u8>,
    /// The peer's extension id for transport-wide sequence numbers
    /// (`draft-holmer-rmcat-transport-wide-cc-extensions-01`), when the
    /// answer negotiated it: the router then records each authentic
    /// packet's arrival and sends transport-cc feedback.
    pub twcc_extension: Option<u8>,
    /// The peer's extension id for `urn:ietf:params:rtp-hdrext:ssrc-audio-level`
    /// (RFC 6464) in its audio, when the answer negotiated it: the levels
    /// feed the room's dominant speaker detection.
    pub audio_level_extension: Option<u8>,
}

/// A simulcast layer announced by `a=rid` without an SSRC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RidTrack {
    /// The layer's RTP stream id (`a=rid`), as carried in the
    /// `rtp-stream-id` header extension.
    pub rid: String,
    /// Audio or video.
    pub kind: MediaKind,
    /// The payload type the layer is sent with; a packet with another one
    /// (RTX, FEC) never binds the layer.
    pub payload_type: u8,
    /// The layer's codec.
    pub codec: crate::codec::Codec,
    /// Which simulcast track of the endpoint it belongs to (the index of
    /// its media section among the endpoint's simulcast sections): layers
    /// of one group are one track to subscribers. Within a group, layers
    /// are listed in ascending quality.
    pub group: u16,
    /// The payload type of the layer's retransmissions, when RTX was
    /// negotiated: an authentic packet with it whose `repaired-rid` names
    /// the bound layer binds the layer's RTX stream.
    pub rtx_payload_type: Option<u8>,
    /// What its track shows (`a=content:slides` on its media section: a
    /// screen share).
    pub source: super::TrackSource,
}

/// A [`RidTrack`] and whether its SSRC was learnt.
#[derive(Debug)]
pub(super) struct RidSlot {
    pub(super) track: RidTrack,
    /// The SSRC an authentic packet bound it to.
    pub(super) ssrc: Option<u32>,
    /// The SSRC of its RTX stream, once bound.
    pub(super) rtx_ssrc: Option<u32>,
}

/// The state a WebRTC endpoint adds to an endpoint.
#[derive(Debug)]
pub(super) struct WebrtcState {
    pub(super) ice: IceCredentials,
    pub(super) dtls: DtlsSession,
    /// Last valid check from the current address.
    pub(super) last_check: Option<Instant>,
    pub(super) video_payload_type: Option<u8>,
    pub(super) audio_payload_type: Option<u8>,
    /// Whether the keys were installed.
    pub(super) connected: bool,
    /// Simulcast layers waiting for (or bound to) an SSRC.
    pub(super) rid_tracks: Vec<RidSlot>,
    pub(super) rid_extension: Option<u8>,
    pub(super) repaired_rid_extension: Option<u8>,
    /// The transport-wide sequence number extension id and the arrivals it
    /// numbered, when transport-cc was negotiated.
    pub(super) twcc: Option<(u8, TwccReceiver)>,
}

impl WebrtcState {
    pub(super) fn new(
        t: WebrtcTransport,
        cert: &crate::dtls::DtlsCert,
        now: Instant,
    ) -> Result<Self, DtlsError> {
        let dtls = DtlsSession::new(cert, t.dtls_role, t.remote_fingerprint, now)?;
        Ok(Self {
            ice: t.ice,
            dtls,
            last_check: None,
            video_payload_type: t.video_payload_type,
            audio_payload_type: t.audio_payload_type,
            connected: false,
            rid_tracks: t
                .rid_tracks
                .into_iter()
                .map(|track| RidSlot {
                    track,
                    ssrc: None,
                    rtx_ssrc: None,
                })
                .collect(),
            rid_extension: t.rid_extension,
            repaired_rid_extension: t.repaired_rid_extension.filter(|&id| id != 0),
            twcc: t
                .twcc_extension
                .filter(|&id| id != 0)
                .map(|id| (id, TwccReceiver::new(now))),
        })
    }

    /// The unbound layer named `rid` sent with `payload_type`, if any.
    pub(super) fn unbound_rid(&mut self, rid: &[u8], payload_type: u8) -> Option<&mut RidSlot> {
        self.rid_tracks.iter_mut().find(|r| {
            r.ssrc.is_none()
                && r.track.rid.as_bytes() == rid
                && r.track.payload_type == payload_type
        })
    }

    /// The bound layer named `rid` whose RTX stream is unbound and sent
    /// with `payload_type`, if any.
    pub(super) fn unbound_rtx(&mut self, rid: &[u8], payload_type: u8) -> Option<&mut RidSlot> {
        self.rid_tracks.iter_mut().find(|r| {
            r.ssrc.is_some()
                && r.rtx_ssrc.is_none()
                && r.track.rid.as_bytes() == rid
                && r.track.rtx_payload_type == Some(payload_type)
        })
    }

    /// Whether some bound layer's RTX stream could still be bound.
    pub(super) fn has_unbound_rtx(&self) -> bool {
        self.repaired_rid_extension.is_some()
            && self.rid_tracks.iter().any(|r| {
                r.ssrc.is_some() && r.rtx_ssrc.is_none() && r.track.rtx_payload_type.is_some()
            })
    }

    /// Whether some layer still waits for its SSRC.
    pub(super) fn has_unbound_rid(&self) -> bool {
        self.rid_extension.is_some() && self.rid_tracks.iter().any(|r| r.ssrc.is_none())
    }

    /// Records an authentic packet's transport-wide sequence number, if
    /// transport-cc was negotiated and the packet carries one.
    pub(super) fn record_arrival(&mut self, packet: &RtpPacket<'_>, now: Instant) {
        if let Some((id, receiver)) = &mut self.twcc
            && let Some(seq) = packet.extension(*id).and_then(parse_transport_cc)
        {
            receiver.record(seq, packet.ssrc(), now);
        }
    }

    /// The rid of the layer bound to `ssrc`, if it is one.
    pub(super) fn rid_of(&self, ssrc: u32) -> Option<&str> {
        self.rid_tracks
            .iter()
            .find(|r| r.ssrc == Some(ssrc))
            .map(|r| r.track.rid.as_str())
    }

    /// Whether consent to send has expired at `now`, `timeout` after the
    /// last valid check.
    pub(super) fn consent_expired(&self, now: Instant, timeout: Duration) -> bool {
        self.last_check
            .is_none_or(|t| now.saturating_duration_since(t) > timeout)
    }
}

/// Splits a check's USERNAME `local:remote` into its halves.
pub(super) fn split_username(username: &[u8]) -> Option<(&str, &str)> {
    let text = std::str::from_utf8(username).ok()?;
    text.split_once(':')
}
