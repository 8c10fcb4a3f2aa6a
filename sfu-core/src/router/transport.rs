//! Per-endpoint transport state: addresses, ICE-lite consent, DTLS, SRTP
//! contexts and transport-cc, with the timers that drive them.
//!
//! This is the router's transport half (mediasoup's `Transport`): what an
//! endpoint needs to send and receive packets at all. Rooms, producers,
//! consumers and the fan-out live in [`super::routing`].
//!
//! # Timers
//! Each endpoint has at most one armed deadline ([`Transport::deadline`]:
//! the earliest of its DTLS retransmission, pending-session, consent,
//! learnt-address and transport-cc times) in a min-heap shared by the
//! router. [`Router::handle_timeout`] pops only what is due, runs that
//! endpoint's timers and re-arms it; [`Router::poll_timeout`] is the heap's
//! head. A deadline that moves later (a fresh ICE check) leaves its entry in
//! place, which then fires early and re-arms; one that moves earlier (a
//! DTLS flight, a packet to report in transport-cc feedback) pushes a new
//! entry. The heap is sized once for every endpoint and compacted in place
//! when full, so arming never allocates.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::event::Event;
use super::stats::{Counter, DropReason, RemovalReason};
use super::webrtc::{self, WebrtcState};
use super::{MediaKind, Router, SRTCP_TRAILER_MAX, TWCC_PACKETS_PER_ROUND, Transmit, reports};
use crate::dtls::DtlsState;
use crate::srtp::{KeyLengthError, Profile, SrtpConfig, SrtpContext};
use crate::wire::stun::{self, StunClass, StunMessage, StunWriter};

/// Shortest wait before an endpoint's timers run again.
const MIN_TIMER_STEP: Duration = Duration::from_millis(1);

/// The transport state of one endpoint.
#[derive(Debug)]
pub(super) struct Transport {
    /// SRTP in (from the endpoint) and out (to it); `None` until a WebRTC
    /// endpoint's DTLS handshake completes.
    pub(super) keys: Option<SrtpPair>,
    /// ICE and DTLS state of a WebRTC endpoint.
    pub(super) webrtc: Option<Box<WebrtcState>>,
    pub(super) remote: Option<SocketAddr>,
    /// When the address was learnt from an authentic packet (not given by
    /// the control plane, not set by ICE): the last authentic packet from
    /// it. The address is forgotten `consent_timeout` after that, as ICE
    /// consent is, so a stale or spoofed address is not sent to forever.
    pub(super) learnt_at: Option<Instant>,
    /// When the endpoint was added.
    pub(super) created: Instant,
    /// The earliest deadline the timer heap holds for this endpoint.
    pub(super) armed: Option<Instant>,
    /// When the next receiver report to this (publishing) endpoint is due.
    pub(super) rtcp_at: Option<Instant>,
    /// Egress numbering and bandwidth estimation, for a subscriber that
    /// negotiated the transport-wide sequence number ([`super::egress`]).
    pub(super) egress: Option<Box<super::egress::Egress>>,
}

impl Transport {
    /// A WebRTC endpoint whose ICE + DTLS have not completed yet.
    pub(super) fn pending(&self) -> bool {
        self.webrtc.as_ref().is_some_and(|w| !w.connected)
    }

    /// Records an authentic packet from `src`: learns the address of an
    /// SDES endpoint that has none ("comedia") and refreshes a learnt
    /// one's consent. A WebRTC endpoint's address comes from ICE only.
    pub(super) fn authentic_from(
        &mut self,
        src: SocketAddr,
        now: Instant,
    ) -> Result<bool, DropReason> {
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

/// SRTP in (from the endpoint) and out (to it).
#[derive(Debug)]
pub(super) struct SrtpPair {
    pub(super) rx: SrtpContext,
    pub(super) tx: SrtpContext,
}

impl SrtpPair {
    /// The contexts for master key || salt in each direction: `remote_master`
    /// opens what the endpoint sends, `local_master` protects what it gets.
    pub(super) fn new(
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

impl Router {
    /// ICE-lite: answers a valid binding request and lets it set, move or
    /// refresh the endpoint's address (see [`webrtc`]). `Ok(true)` when
    /// `src` is the endpoint's address after it (a check from another
    /// address that does not nominate it is answered, but proves nothing of
    /// `src`).
    pub(super) fn handle_stun<T: Transmit>(
        &mut self,
        now: Instant,
        src: SocketAddr,
        buf: &[u8],
        tx: &mut T,
    ) -> Result<bool, DropReason> {
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
        let Some(w) = ep.transport.webrtc.as_mut() else {
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
        self.stats.inc(Counter::IceChecks);
        let moved = match ep.transport.remote {
            None => true,
            Some(current) => current != src && msg.use_candidate(),
        };
        if moved {
            if let Some(old) = ep.transport.remote
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
            ep.transport.remote = Some(src);
            self.by_addr.insert(src, slot);
        }
        let confirmed = ep.transport.remote == Some(src);
        if confirmed {
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
        if moved {
            // A consent deadline now exists (or starts afresh).
            self.schedule(slot, now);
        }
        match written {
            Ok(n) => {
                tx.send(n, src);
                self.stats.sent(n);
                Ok(confirmed)
            }
            Err(_) => Err(DropReason::ProtectFailed),
        }
    }

    /// DTLS from a WebRTC endpoint's verified address goes to its session.
    pub(super) fn handle_dtls<T: Transmit>(
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
        let w = ep
            .transport
            .webrtc
            .as_mut()
            .ok_or(DropReason::DtlsUnhandled)?;
        let result = w.dtls.handle_datagram(buf, now);
        self.drive_dtls(slot, tx);
        if !self.remove_if_dtls_ended(slot) {
            self.schedule(slot, now);
        }
        result.map_err(|_| DropReason::DtlsFailed)
    }

    /// Removes the endpoint in `slot` if its DTLS session has failed or
    /// closed (after its last datagrams, an alert say, were sent); returns
    /// whether it did.
    fn remove_if_dtls_ended(&mut self, slot: u32) -> bool {
        let Some(ep) = self.endpoint(slot) else {
            return false;
        };
        let Some(w) = ep.transport.webrtc.as_ref() else {
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

    /// Sends a session's queued DTLS datagrams and installs its keys once
    /// the handshake is done.
    fn drive_dtls<T: Transmit>(&mut self, slot: u32, tx: &mut T) {
        let srtp = self.config.srtp;
        let Some(Some(ep)) = self.endpoints.get_mut(slot as usize) else {
            return;
        };
        let Some(w) = ep.transport.webrtc.as_mut() else {
            return;
        };
        if let Some(dst) = ep.transport.remote {
            loop {
                let Some(out) = tx.buffer() else {
                    self.stats.drop(DropReason::PoolExhausted);
                    break;
                };
                let Some(n) = w.dtls.poll_datagram(out) else {
                    break;
                };
                tx.send(n, dst);
                self.stats.sent(n);
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
                    if let Some(r) = c.rtx.as_deref_mut() {
                        r.tx_stream = Some(pair.tx.add_rtp_stream(r.ssrc));
                    }
                }
                ep.transport.keys = Some(pair);
                w.connected = true;
                self.stats.inc(Counter::DtlsHandshakes);
                self.events.push(
                    Event::Connected {
                        endpoint: ep.id,
                        profile: k.profile,
                    },
                    &mut self.stats,
                );
                // Its decoders need a keyframe from each producer it receives.
                let sources: Vec<u32> = ep
                    .consumers
                    .iter()
                    .filter(|c| c.attached && c.kind == MediaKind::Video)
                    .filter_map(|c| c.target.or(c.layer).or(c.source))
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

    /// Runs the timers due at `now`: DTLS retransmission and handshake
    /// timeout, ICE consent, the deadline of a session that never connects,
    /// the expiry of addresses learnt from media, and transport-cc feedback.
    /// Only endpoints with a deadline at or before `now` are visited (the
    /// earliest is [`Router::poll_timeout`]); calling it early is harmless.
    pub fn handle_timeout<T: Transmit>(&mut self, now: Instant, tx: &mut T) {
        while let Some((slot, generation)) = self.timers.pop_due(now) {
            let Some(Some(ep)) = self.endpoints.get_mut(slot as usize) else {
                continue;
            };
            if ep.generation != generation {
                // The slot was freed (and maybe reused) since.
                continue;
            }
            ep.transport.armed = None;
            if self.endpoint_timers(slot, now, tx) {
                // Whatever is due again waits at least a millisecond, so a
                // deadline that stays in the past cannot spin this loop.
                self.schedule(slot, now + MIN_TIMER_STEP);
            }
        }
    }

    /// The earliest time [`Router::handle_timeout`] has work, if any. May
    /// be early (a deadline that moved later since); never late.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// (Re)arms the timer of the endpoint in `slot` for its next deadline,
    /// not before `at_least`. Cheap when an earlier or equal deadline is
    /// already armed.
    pub(super) fn schedule(&mut self, slot: u32, at_least: Instant) {
        let (pending, consent) = (
            self.config.pending_webrtc_timeout,
            self.config.consent_timeout,
        );
        let Some(Some(ep)) = self.endpoints.get_mut(slot as usize) else {
            return;
        };
        let Some(at) = ep.transport.deadline(pending, consent) else {
            return;
        };
        let at = at.max(at_least);
        if ep.transport.armed.is_some_and(|armed| armed <= at) {
            return;
        }
        ep.transport.armed = Some(at);
        let generation = ep.generation;
        if self.timers.is_full() {
            // Drop entries superseded by an earlier one of the same
            // endpoint, or of an endpoint that is gone: never allocates.
            let endpoints = &self.endpoints;
            self.timers.retain(|at, slot, generation| {
                endpoints
                    .get(slot as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|e| e.generation == generation && e.transport.armed == Some(at))
            });
        }
        self.timers.push(at, slot, generation);
    }

    /// One endpoint's due timers; false if it was removed.
    fn endpoint_timers<T: Transmit>(&mut self, slot: u32, now: Instant, tx: &mut T) -> bool {
        let Some(Some(ep)) = self.endpoints.get_mut(slot as usize) else {
            return false;
        };
        let id = ep.id;
        if let (Some(remote), Some(at)) = (ep.transport.remote, ep.transport.learnt_at)
            && now.saturating_duration_since(at) > self.config.consent_timeout
        {
            // No authentic packet for a consent period: stop sending to
            // an address only media vouched for; the next authentic
            // packet teaches it again.
            ep.transport.remote = None;
            ep.transport.learnt_at = None;
            if self.by_addr.get(&remote) == Some(&slot) {
                self.by_addr.remove(&remote);
            }
            self.stats.inc(Counter::ConsentExpired);
            self.events
                .push(Event::ConsentLost { endpoint: id }, &mut self.stats);
        }
        if ep.transport.pending()
            && now.saturating_duration_since(ep.transport.created)
                > self.config.pending_webrtc_timeout
        {
            // Abandoned before it connected: gone, and reported.
            self.remove_by_itself(id, RemovalReason::NeverConnected);
            return false;
        }
        let Some(w) = ep.transport.webrtc.as_mut() else {
            self.report_if_due(slot, now, tx);
            return true;
        };
        let consent = self.config.consent_timeout;
        if w.connected && w.consent_expired(now, consent) {
            // RFC 7675: consent lost. Without ICE restart the session
            // cannot come back: the endpoint goes (a closed tab).
            self.stats.inc(Counter::ConsentExpired);
            self.events
                .push(Event::ConsentLost { endpoint: id }, &mut self.stats);
            self.remove_by_itself(id, RemovalReason::ConsentLost);
            return false;
        }
        if let Some(remote) = ep.transport.remote
            && w.consent_expired(now, consent)
        {
            // Not connected yet: stop answering at that address; the
            // next valid check restores it.
            ep.transport.remote = None;
            if self.by_addr.get(&remote) == Some(&slot) {
                self.by_addr.remove(&remote);
            }
            self.stats.inc(Counter::ConsentExpired);
        }
        let twcc_due = w.twcc.as_ref().is_some_and(|(_, r)| r.due(now));
        if w.dtls.poll_timeout().is_some_and(|t| t <= now) {
            let _ = w.dtls.handle_timeout(now);
            self.drive_dtls(slot, tx);
            if self.remove_if_dtls_ended(slot) {
                return false;
            }
        }
        if twcc_due {
            self.send_twcc(slot, now, tx);
        }
        self.report_if_due(slot, now, tx);
        true
    }

    /// Sends a publishing endpoint its receiver report when one is due,
    /// and a subscriber the due packets of its bandwidth probe.
    fn report_if_due<T: Transmit>(&mut self, slot: u32, now: Instant, tx: &mut T) {
        self.send_probe(slot, now, tx);
        let Some(Some(ep)) = self.endpoints.get_mut(slot as usize) else {
            return;
        };
        if ep.transport.rtcp_at.is_some_and(|at| at <= now) {
            ep.transport.rtcp_at = Some(now + reports::RTCP_INTERVAL);
            self.send_receiver_report(slot, now, tx);
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
        let (Some(dst), Some(keys), Some(w)) = (
            ep.transport.remote,
            ep.transport.keys.as_mut(),
            ep.transport.webrtc.as_deref_mut(),
        ) else {
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
                    stats.sent(n);
                    stats.inc(Counter::TwccFeedbackSent);
                }
                Err(_) => stats.drop(DropReason::ProtectFailed),
            }
        }
    }
}

impl Transport {
    /// When this endpoint's timers next have work, if ever.
    pub(super) fn deadline(
        &self,
        pending_timeout: Duration,
        consent_timeout: Duration,
    ) -> Option<Instant> {
        let mut at: Option<Instant> = None;
        let mut earliest = |t: Option<Instant>| {
            if let Some(t) = t {
                at = Some(at.map_or(t, |a| a.min(t)));
            }
        };
        if self.remote.is_some() {
            earliest(self.learnt_at.map(|t| t + consent_timeout));
            if self.keys.is_some() {
                earliest(self.rtcp_at);
                earliest(
                    self.egress
                        .as_ref()
                        .and_then(|e| e.probe)
                        .map(|p| p.next_at),
                );
                earliest(
                    self.egress
                        .as_ref()
                        .and_then(|e| e.trial)
                        .and_then(|t| t.next_at),
                );
            }
        }
        if let Some(w) = &self.webrtc {
            if !w.connected {
                earliest(Some(self.created + pending_timeout));
            }
            if self.remote.is_some() {
                earliest(w.last_check.map(|t| t + consent_timeout));
            }
            earliest(w.dtls.poll_timeout());
            if self.keys.is_some() && self.remote.is_some() {
                earliest(w.twcc.as_ref().and_then(|(_, r)| r.due_at()));
            }
        }
        at
    }
}

/// The router's timer heap: (deadline, slot, slot generation), earliest
/// first, with a capacity fixed at creation.
#[derive(Debug)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u32, u32)>>,
}

impl Timers {
    /// A heap for `entries` entries (a few per endpoint).
    pub(super) fn new(entries: usize) -> Self {
        Self {
            heap: BinaryHeap::with_capacity(entries),
        }
    }

    pub(super) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The next entry due at `now`, removed.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(u32, u32)> {
        if self.next()? > now {
            return None;
        }
        self.heap
            .pop()
            .map(|Reverse((_, slot, generation))| (slot, generation))
    }

    pub(super) fn is_full(&self) -> bool {
        self.heap.len() + 1 >= self.heap.capacity()
    }

    pub(super) fn retain(&mut self, mut keep: impl FnMut(Instant, u32, u32) -> bool) {
        self.heap
            .retain(|&Reverse((at, slot, generation))| keep(at, slot, generation));
    }

    pub(super) fn push(&mut self, at: Instant, slot: u32, generation: u32) {
        self.heap.push(Reverse((at, slot, generation)));
    }
}
