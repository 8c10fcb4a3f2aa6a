//! The router's counters: one enum-indexed table, declared once.
//!
//! Every counter is a variant of [`Counter`] (with its metric name and help
//! text next to it); drops count by [`DropReason`] and self-removals by
//! [`RemovalReason`]. [`RouterStats`] holds plain integers indexed by
//! those enums (the router is single-threaded); the packet path copies the
//! three arrays into atomics after each batch, and the control plane writes
//! `/metrics` and `/v1/load` by iterating `ALL` of each enum, so adding a
//! counter is one line here and nothing else.

use crate::srtp::SrtpError;

/// Declares an enum of counters with a stable name and a help text each,
/// plus `COUNT`, `ALL`, `name()`, `help()` and `index()`.
///
/// ```
/// sfu_core::counter_table! {
///     /// Counters of a widget.
///     pub enum WidgetCounter {
///         /// Widgets made.
///         Made => "widgets_made", "Widgets made.";
///     }
/// }
/// assert_eq!(WidgetCounter::Made.name(), "widgets_made");
/// assert_eq!(WidgetCounter::ALL.len(), WidgetCounter::COUNT);
/// ```
#[macro_export]
macro_rules! counter_table {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $label:literal, $help:literal; )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every variant, in index order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// Number of variants.
            pub const COUNT: usize = Self::ALL.len();

            /// Stable name (metric label or metric name stem).
            pub fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $label, )+
                }
            }

            /// One-line description (metric help text).
            pub fn help(self) -> &'static str {
                match self {
                    $( $name::$variant => $help, )+
                }
            }

            /// Position in [`Self::ALL`] (and in counter arrays).
            pub fn index(self) -> usize {
                self as usize
            }
        }
    };
}

counter_table! {
    /// The router's event counters. Each is exported as
    /// `sfu_<name>_total{worker}`.
    pub enum Counter {
        /// Datagrams handled.
        RxPackets => "rx_packets", "Datagrams received by the worker.";
        /// Bytes of datagrams handled.
        RxBytes => "rx_bytes", "Bytes of datagrams received by the worker.";
        /// Egress datagrams written (media, RTCP, STUN, DTLS).
        TxPackets => "tx_packets", "Datagrams sent by the worker.";
        /// Bytes of egress datagrams.
        TxBytes => "tx_bytes", "Bytes of datagrams sent by the worker.";
        /// RTP packets authenticated and fanned out.
        RtpIn => "rtp_in", "RTP packets authenticated and fanned out by the worker.";
        /// SRTCP packets authenticated.
        RtcpIn => "rtcp_in", "SRTCP packets authenticated by the worker.";
        /// PLIs sent to publishers.
        PliSent => "pli_sent", "Picture loss indications (PLI) the worker sent to publishers.";
        /// Valid ICE checks answered.
        IceChecks => "ice_checks", "Valid ICE connectivity checks the worker answered.";
        /// DTLS handshakes completed (SRTP keys installed).
        DtlsHandshakes => "dtls_handshakes", "DTLS handshakes the worker completed (SRTP keys installed).";
        /// Endpoints whose ICE consent (or learnt address) expired.
        ConsentExpired => "ice_consent_expired", "Endpoints of the worker whose ICE consent expired.";
        /// Simulcast layers bound to an SSRC by an authentic packet (each
        /// such packet is consumed by the bind, not forwarded nor dropped).
        SimulcastLayersBound => "simulcast_layers_bound", "Simulcast layers the worker bound to an SSRC from an authentic packet.";
        /// Transport-cc feedback packets sent to publishers.
        TwccFeedbackSent => "twcc_feedback_sent", "Transport-cc feedback packets the worker sent to publishers.";
        /// Producers an `All` subscriber did not get because it already had
        /// `max_consumers_per_endpoint` consumers.
        ConsumersOverLimit => "consumers_over_limit", "Producers an \"all\" subscriber on the worker did not get because it had reached limits.consumers_per_endpoint.";
        /// Events lost because the control plane did not take them in time
        /// (the router's event queue is bounded).
        EventsDropped => "router_events_dropped", "Router events (connected, removed, ...) lost because the event queue was full.";
        /// Audio levels (RFC 6464) fed to rooms' speaker detection.
        AudioLevels => "audio_levels", "Audio levels (RFC 6464) the worker fed to dominant speaker detection.";
        /// Audio packets of an endpoint that declared the audio-level
        /// extension without a readable level (absent, empty), or with a
        /// level older than the speaker's last: forwarded, not scored.
        AudioLevelsMissing => "audio_levels_missing", "Audio packets whose audio level was absent, malformed or late (forwarded, not scored).";
        /// Audio publishers left out of speaker detection (the room's
        /// detector was full).
        SpeakersOverCapacity => "speakers_over_capacity", "Audio publishers left out of dominant speaker detection because the room's detector was full.";
        /// Dominant speaker decisions taken.
        SpeakerDecisions => "speaker_decisions", "Dominant speaker decisions the worker took.";
        /// Changes of a room's dominant speaker.
        DominantSpeakerChanges => "dominant_speaker_changes", "Changes of a room's dominant speaker.";
        /// Changes of the set of participants talking in a room.
        ActiveSpeakerChanges => "active_speaker_changes", "Changes of the set of participants talking in a room.";
        /// Last-N slots re-pointed to another source by a speaker change
        /// or a publisher's join or leave.
        SlotSwitches => "slot_switches", "Last-N slots the worker re-pointed to another source (speaker change, join, leave).";
        /// Generic NACK packets received from subscribers.
        NackIn => "nack_in", "Generic NACK packets the worker received from subscribers.";
        /// Sequence numbers subscribers NACKed.
        NackedPackets => "nacked_packets", "Sequence numbers subscribers NACKed.";
        /// Retransmissions (RTX) sent to subscribers from the packet cache.
        RtxSent => "rtx_sent", "Retransmissions (RTX) the worker sent to subscribers from its packet cache.";
        /// NACKed packets no longer (or never) in the producer's cache.
        RtxNotCached => "rtx_not_cached", "NACKed packets no longer in the producer's packet cache.";
        /// NACKed packets not resent: already resent three times, or
        /// resent less than min(100 ms, 2 RTT) ago.
        RtxThrottled => "rtx_throttled", "NACKed packets not resent (three resends, or resent less than min(100 ms, 2 RTT) ago).";
        /// NACKed packets not resent because the subscriber's retransmission
        /// budget (a share of its bandwidth estimate) was spent.
        RtxOverBudget => "rtx_over_budget", "NACKed packets not resent because the subscriber's retransmission budget (a quarter of its estimate) was spent.";
        /// NACKed packets of a subscriber that negotiated no RTX, or from
        /// before the consumer's last source switch.
        RtxUnanswerable => "rtx_unanswerable", "NACKed packets that cannot be resent (no RTX negotiated, or from before a source switch).";
        /// Packets too long for a cache slot (not kept for retransmission).
        CacheOversize => "cache_oversize", "Packets too long for a packet cache slot.";
        /// Retransmissions (RTX) received from publishers and unwrapped
        /// into their original stream.
        RtxIn => "rtx_in", "Retransmissions (RTX) the worker received from publishers.";
        /// Generic NACK packets sent to publishers for gaps in their streams.
        NackSent => "nack_sent", "Generic NACK packets the worker sent to publishers.";
        /// Sequence numbers asked for in NACKs to publishers (each retry
        /// counts again).
        NackRequested => "nack_requested", "Sequence numbers the worker asked publishers to resend (retries count again).";
        /// Publisher packets the worker NACKed that arrived later.
        NackRepaired => "nack_repaired", "Missing publisher packets that arrived after the worker NACKed them.";
        /// Publisher packets given up on (retries exhausted or too old).
        NackGaveUp => "nack_gave_up", "Missing publisher packets the worker stopped asking for.";
        /// Sender reports received from publishers about their producers.
        SrIn => "sr_in", "Sender reports the worker received from publishers.";
        /// Sender reports sent to subscribers (one per consumer of a
        /// publisher's SR).
        SrSent => "sr_sent", "Sender reports the worker sent to subscribers, translated per consumer.";
        /// Receiver reports sent to publishers.
        RrSent => "rr_sent", "Receiver reports the worker sent to publishers.";
        /// Report blocks subscribers sent about their consumers.
        ReportBlocksIn => "report_blocks_in", "Report blocks subscribers sent about the streams they receive.";
        /// Consumers that switched simulcast layer (at a keyframe of the
        /// new layer).
        LayerSwitches => "layer_switches", "Simulcast layer switches of consumers (each at a keyframe of the new layer).";
        /// Transport-cc feedback packets read from subscribers (egress
        /// bandwidth estimation).
        TwccFeedbackIn => "twcc_feedback_in", "Transport-cc feedback packets the worker read from subscribers.";
        /// Allocations of a subscriber's estimate over its consumers.
        Allocations => "bwe_allocations", "Allocations of subscribers' bandwidth estimates over their streams.";
        /// Video consumers paused because even their lowest layer did not
        /// fit their subscriber's estimate.
        ConsumersPaused => "consumers_paused", "Video consumers paused because their lowest layer did not fit the subscriber's estimate.";
        /// Bandwidth probe clusters started (a subscriber's next layer
        /// needs more than its estimate).
        ProbesStarted => "bwe_probes", "Bandwidth probe clusters started for subscribers.";
        /// Padding packets sent in bandwidth probes.
        ProbePackets => "bwe_probe_packets", "Padding packets sent in bandwidth probes.";
        /// Upgrade trials started: padding up to what an upgrade needs,
        /// before it is made.
        TrialsStarted => "bwe_trials", "Upgrade trials started (padding up to what a subscriber's upgrade needs, before it is made).";
        /// Upgrade trials the path carried: the upgrade was let through.
        TrialsPassed => "bwe_trials_passed", "Upgrade trials the path carried (the upgrade was let through).";
        /// Upgrade trials ended by congestion or short acknowledgement.
        TrialsFailed => "bwe_trials_failed", "Upgrade trials ended by overuse, loss or too little acknowledged (the upgrade was not made).";
        /// Padding packets sent in upgrade trials.
        TrialPackets => "bwe_trial_packets", "Padding packets sent in upgrade trials.";
        /// RTX streams of publishers bound by `repaired-rid`.
        RtxStreamsBound => "rtx_streams_bound", "Publisher RTX streams bound to their layer by repaired-rid.";
    }
}

counter_table! {
    /// Why a received datagram (or one egress copy of it) was dropped.
    /// Exported as `sfu_drops_total{worker,reason}`.
    #[non_exhaustive]
    pub enum DropReason {
        /// RTP/RTCP header malformed.
        Malformed => "malformed", "RTP/RTCP/STUN malformed.";
        /// First byte matches no protocol on this port.
        UnknownProtocol => "unknown_protocol", "First byte matches no protocol on this port.";
        /// STUN that is not a binding request (responses, indications).
        StunUnhandled => "stun_unhandled", "STUN that is not a binding request.";
        /// DTLS from an address that belongs to no WebRTC endpoint.
        DtlsUnhandled => "dtls_unhandled", "DTLS from an address of no WebRTC endpoint.";
        /// A binding request whose USERNAME names no endpoint's ufrag.
        StunUnknownUser => "stun_unknown_user", "Binding request for no endpoint's ufrag.";
        /// A binding request with a bad FINGERPRINT, MESSAGE-INTEGRITY or
        /// remote ufrag.
        StunAuthFailed => "stun_auth_failed", "Binding request with bad integrity, fingerprint or remote ufrag.";
        /// A DTLS datagram the endpoint's session refused (garbage, alert,
        /// certificate not matching the SDP fingerprint).
        DtlsFailed => "dtls_failed", "DTLS datagram the session refused.";
        /// Media to or from a WebRTC endpoint whose DTLS handshake has not
        /// finished (or whose consent expired).
        NotConnected => "not_connected", "Media to or from an endpoint that is not connected.";
        /// No endpoint owns this SSRC or address.
        UnknownSource => "unknown_source", "No endpoint owns this SSRC or address.";
        /// The SSRC's endpoint has another remote address.
        AddressMismatch => "address_mismatch", "The SSRC's endpoint has another address.";
        /// SRTP/SRTCP shorter than its tag.
        SrtpTruncated => "srtp_truncated", "SRTP/SRTCP shorter than its tag.";
        /// SRTP/SRTCP authentication failed.
        SrtpAuthFailed => "srtp_auth_failed", "SRTP/SRTCP authentication failed.";
        /// SRTP/SRTCP replay.
        SrtpReplayed => "srtp_replayed", "SRTP/SRTCP replayed.";
        /// SRTP/SRTCP older than the replay window.
        SrtpTooOld => "srtp_too_old", "SRTP/SRTCP older than the replay window.";
        /// Any other SRTP refusal (table full, index exhausted).
        SrtpOther => "srtp_other", "Other SRTP refusal (table full, index exhausted).";
        /// No free send buffer for an egress copy.
        PoolExhausted => "pool_exhausted", "No free send buffer for an egress copy.";
        /// A consumer's subscriber has no known address yet.
        SubscriberUnreachable => "subscriber_unreachable", "The subscriber has no known address.";
        /// An egress copy could not be protected (too large for a buffer).
        ProtectFailed => "protect_failed", "An egress copy could not be protected.";
        /// A late packet from before a consumer's source switch, or one
        /// its consumer can no longer number (under a dropped padding
        /// packet's number, or older than a forgotten one).
        StaleAfterSwitch => "stale_after_switch", "A late packet from before a source switch (or that can no longer be numbered).";
        /// An RTX packet without an original sequence number: padding only
        /// (a bandwidth probe), nothing to forward.
        RtxPadding => "rtx_padding", "RTX packet without payload (a probe): nothing to forward.";
        /// A publisher's media packet without payload (padding only: a
        /// bandwidth probe, or a keep-alive): not forwarded, and its
        /// consumers number on without it (see [`crate::router::seq`]).
        PaddingOnly => "padding_only", "Media packet without payload (padding only): not forwarded, numbering kept gap-free.";
        /// An RTX packet repairing a packet the node was not missing (a
        /// duplicate, or a publisher's RTX probe).
        RtxDuplicate => "rtx_duplicate", "RTX packet for a packet the node was not missing.";
        /// A RED packet (RFC 2198) whose payload is malformed, or whose
        /// primary block is not the producer's codec: not forwarded to a
        /// consumer that gets RED renumbered or unwrapped.
        RedMalformed => "red_malformed", "RED audio packet with a malformed payload, not forwarded to a consumer.";
    }
}

impl DropReason {
    /// Stable metric label (same as [`DropReason::name`]).
    pub fn as_str(self) -> &'static str {
        self.name()
    }

    pub(crate) fn from_srtp(e: SrtpError) -> Self {
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

counter_table! {
    /// Why the router removed an endpoint by itself. Removal frees
    /// everything the endpoint held (slot, SSRCs, ufrag, address), so the
    /// same participant can join again at once. Exported as
    /// `sfu_endpoints_removed_total{worker,reason}`.
    #[non_exhaustive]
    pub enum RemovalReason {
        /// A WebRTC endpoint did not complete ICE + DTLS within
        /// `RouterConfig::pending_webrtc_timeout`.
        NeverConnected => "never_connected", "ICE + DTLS did not complete in time.";
        /// A connected WebRTC endpoint had no valid ICE check for
        /// `CONSENT_TIMEOUT` (RFC 7675; a closed browser tab).
        ConsentLost => "consent_lost", "ICE consent lost (RFC 7675).";
        /// The DTLS handshake failed (bad fingerprint, fatal alert, timeout).
        DtlsFailed => "dtls_failed", "The DTLS handshake failed.";
        /// The connected DTLS association was closed (close_notify or a
        /// fatal alert from the peer).
        DtlsClosed => "dtls_closed", "The DTLS association was closed.";
    }
}

impl RemovalReason {
    /// Stable metric label (same as [`RemovalReason::name`]).
    pub fn as_str(self) -> &'static str {
        self.name()
    }
}

/// Counters of one router, indexed by [`Counter`], [`DropReason`] and
/// [`RemovalReason`]. Plain integers: the router is single-threaded; the
/// packet path publishes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterStats {
    /// By [`Counter::index`].
    pub counters: [u64; Counter::COUNT],
    /// By [`DropReason::index`].
    pub drops: [u64; DropReason::COUNT],
    /// By [`RemovalReason::index`].
    pub removed: [u64; RemovalReason::COUNT],
}

impl Default for RouterStats {
    // By hand: `Default` is derived for arrays of at most 32 elements.
    fn default() -> Self {
        Self {
            counters: [0; Counter::COUNT],
            drops: [0; DropReason::COUNT],
            removed: [0; RemovalReason::COUNT],
        }
    }
}

impl RouterStats {
    /// One counter.
    pub fn get(&self, counter: Counter) -> u64 {
        self.counters[counter.index()]
    }

    /// The count for one drop reason.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }

    /// Endpoints removed for one reason.
    pub fn removals(&self, reason: RemovalReason) -> u64 {
        self.removed[reason.index()]
    }

    pub(crate) fn inc(&mut self, counter: Counter) {
        self.counters[counter.index()] += 1;
    }

    pub(crate) fn add(&mut self, counter: Counter, n: u64) {
        self.counters[counter.index()] += n;
    }

    /// Counts one egress datagram of `len` bytes.
    pub(crate) fn sent(&mut self, len: usize) {
        self.inc(Counter::TxPackets);
        self.add(Counter::TxBytes, len as u64);
    }

    pub(crate) fn drop(&mut self, reason: DropReason) {
        self.drops[reason.index()] += 1;
    }

    pub(crate) fn removal(&mut self, reason: RemovalReason) {
        self.removed[reason.index()] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_indexed_in_declaration_order_with_unique_names() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let mut names: Vec<&str> = Counter::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Counter::COUNT);
        assert_eq!(DropReason::COUNT, 23);
        assert_eq!(RemovalReason::ConsentLost.as_str(), "consent_lost");
    }
}
