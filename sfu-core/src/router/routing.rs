//! Rooms, producers, consumers and the fan-out: the router's routing half
//! (mediasoup's `Router`), on top of each endpoint's [`Transport`].
//!
//! # Forwarding
//! A publisher's SRTP packet is looked up by SSRC, authenticated and
//! decrypted **once**, in place, and validated once; then, for each
//! consumer of that producer, the plaintext is copied into a fresh send
//! buffer, its SSRC, sequence number, timestamp and payload type are
//! rewritten for that consumer ([`StreamRewriter`]), and it is encrypted
//! with the subscriber's outbound stream. No step allocates: the lookups are
//! hash-map reads and the fan-out lists are built by commands, off the hot
//! path (and once per simulcast layer bound by `rid`).
//!
//! Redundant audio (RED, RFC 2198) is passed on with the subscriber's
//! numbers, or cut to its primary block, in each consumer's copy (`red`).
//!
//! A packet without payload (padding only: Chrome's bandwidth probes on the
//! media SSRC when it has no RTX, or a keep-alive) is not forwarded
//! ([`DropReason::PaddingOnly`]). It still counts as received (NACK
//! tracking, receiver reports) and is kept in the packet cache, but not in
//! the layer's measured bitrate; each consumer forwarding its layer drops
//! its number ([`StreamRewriter::drop_input`]), so the subscriber's
//! numbering stays gap-free, and its NACKs still map to the right packets.
//!
//! # Joins
//! A new endpoint's consumers are computed from its subscription (`All`:
//! the room's producers, O(P log P)); its new producers are then offered to
//! each other member, which attaches them to its own waiting or free slots
//! ([`Router::producers_added`]): a join costs O(members), plus, for `All`
//! subscribers, a scan of their own slots. Nothing re-synchronises the
//! whole room.
//!
//! # Rooms are a security boundary
//! A consumer attaches only to a producer of its endpoint's room: an
//! unknown SSRC and a producer of another room get the same answer (an
//! unattached slot), and feedback (PLI/FIR) reaches only the producers the
//! sender consumes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use super::cache::{self, PacketCache};
use super::egress;
use super::event::Event;
use super::red::RedMode;
use super::repair::{self, ConsumerRtx, NACK_BATCH, NackTracker, ResendCtx};
use super::reports::{self, ConsumerReports, ReceptionStats, SenderInfo};
use super::seq::StreamRewriter;
use super::stats::{Counter, DropReason, RouterStats};
use super::transport::{SrtpPair, Transport};
use super::webrtc::{WebrtcState, WebrtcTransport};
use super::{
    ConsumerInfo, Endpoint, EndpointConfig, EndpointId, KEYFRAME_REQUEST_INTERVAL, MediaKind,
    Outcome, Role, RoomId, Router, RouterError, SRTCP_TRAILER_MAX, Subscription, TrackConfig,
    TrackSource, Transmit, ssrc_base,
};
use crate::codec::Codec;
use crate::codec::vp8::Vp8Rewriter;
use crate::twcc;
use crate::wire::rtcp::{self, ReportBlockData, ReportBlocks, RtcpIter, RtcpPacket};
use crate::wire::rtp::{RtpPacket, RtpPacketMut};
use crate::wire::{self};

/// A room: the slots of its endpoints, in join order, and its media
/// traffic.
#[derive(Debug, Default)]
pub(super) struct Room {
    pub(super) endpoints: Vec<u32>,
    pub(super) traffic: super::RoomTraffic,
}

/// One forwarded stream of a subscriber.
#[derive(Debug)]
pub(super) struct Consumer {
    pub(super) kind: MediaKind,
    slot: u16,
    pub(super) ssrc: u32,
    payload_type: u8,
    /// The producer SSRC this slot wants (explicit) or follows (all).
    pub(super) source: Option<u32>,
    /// Whether the slot sits in its source's fan-out list.
    pub(super) attached: bool,
    pub(super) rewriter: StreamRewriter,
    /// Its stream in the endpoint's outbound SRTP context, once the
    /// endpoint has keys ([`SrtpContext::add_rtp_stream`]).
    pub(super) tx_stream: Option<usize>,
    /// Its retransmission stream, when the subscriber negotiated RTX for
    /// its kind.
    pub(super) rtx: Option<Box<ConsumerRtx>>,
    /// Its side of sender and receiver reports.
    pub(super) reports: ConsumerReports,
    /// The layer (SSRC) of its track it forwards now; `None` until the
    /// first keyframe of its target layer.
    pub(super) layer: Option<u32>,
    /// The layer it should forward: switched to at that layer's keyframe.
    pub(super) target: Option<u32>,
    /// The highest layer (0 = lowest by bitrate) it may get.
    pub(super) max_layer: Option<u8>,
    /// PictureID/TL0PICIDX continuity across layer switches (VP8).
    vp8: Vp8Rewriter,
    /// The next VP8 packet is the first after a switch.
    vp8_switch: bool,
    /// The subscriber's RED payload type for this consumer's kind (audio).
    red_payload_type: Option<u8>,
    /// What it does with its producer's RED packets (set at attach).
    red: RedMode,
    /// Pinned by its subscriber ([`super::Command::SetPinned`], or a
    /// pinned participant of its `Slots` subscription): allocated before
    /// other cameras.
    pub(super) pinned: bool,
}

impl Consumer {
    /// Its slot index within its kind.
    pub(super) fn slot(&self) -> u16 {
        self.slot
    }

    /// A video consumer with a producer but no layer to forward: the
    /// allocation paused it ([`super::egress`]).
    pub(super) fn paused(&self) -> bool {
        self.attached
            && self.kind == MediaKind::Video
            && self.source.is_some()
            && self.target.is_none()
    }
}

/// A layer's bitrate over the last second, measured from its packets, and
/// the mean of its last [`COST_WINDOWS`] seconds: what allocation costs it
/// at. An encoder's bitrate follows the picture (Chromium's 640x360 layer
/// of one camera: 300 to 480 kbit/s from one second to the next) and jumps
/// in the second of a keyframe; costed at one second, a layer that was just
/// switched to (on a keyframe) looked a third dearer and was dropped again
/// at the next allocation. (The highest of the last seconds did the same.)
#[derive(Debug, Clone, Copy)]
pub(super) struct LayerRate {
    bytes: u64,
    since: Instant,
    /// Bits per second over the last full window.
    pub(super) bps: u64,
    /// The last full windows' rates, newest at `recent_at`.
    recent: [u64; COST_WINDOWS],
    recent_at: usize,
    /// Full windows measured so far (`bps` is measured once there is one).
    windows: u32,
    last: Instant,
}

/// Window of [`LayerRate`].
const RATE_WINDOW: std::time::Duration = std::time::Duration::from_millis(1000);
/// Windows [`LayerRate::cost_bps`] averages.
const COST_WINDOWS: usize = 4;
/// A layer without a packet for this long is inactive (paused by its
/// publisher, or gone).
const LAYER_IDLE: std::time::Duration = std::time::Duration::from_millis(2000);

impl LayerRate {
    fn new(now: Instant) -> Self {
        Self {
            bytes: 0,
            since: now,
            bps: 0,
            recent: [0; COST_WINDOWS],
            recent_at: 0,
            windows: 0,
            last: now,
        }
    }

    /// Counts a packet; true when a window closed (the rate changed).
    fn on_packet(&mut self, len: usize, now: Instant) -> bool {
        self.bytes += len as u64;
        self.last = now;
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed < RATE_WINDOW {
            return false;
        }
        self.bps = self.bytes * 8 * 1_000_000 / (elapsed.as_micros().max(1) as u64);
        self.recent_at = (self.recent_at + 1) % COST_WINDOWS;
        self.windows = self.windows.saturating_add(1);
        if let Some(r) = self.recent.get_mut(self.recent_at) {
            *r = self.bps;
        }
        self.bytes = 0;
        self.since = now;
        true
    }

    fn active(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last) < LAYER_IDLE
    }

    /// Whether a full window has passed.
    fn measured(&self) -> bool {
        self.windows > 0
    }

    /// The measured rate, once a full window has passed.
    pub(super) fn measured_bps(&self) -> Option<u64> {
        self.measured().then_some(self.bps)
    }

    /// The mean rate of the last [`COST_WINDOWS`] full windows (of those
    /// measured, while fewer).
    pub(super) fn cost_bps(&self) -> u64 {
        let n = (self.windows as usize).clamp(1, COST_WINDOWS);
        // The newest `n` windows are the `n` ending at `recent_at`.
        let sum: u64 = (0..n)
            .filter_map(|k| {
                self.recent
                    .get((self.recent_at + COST_WINDOWS - k) % COST_WINDOWS)
            })
            .sum();
        sum / n as u64
    }
}

/// One published stream and its fan-out list.
#[derive(Debug)]
pub(super) struct Producer {
    pub(super) endpoint: u32,
    kind: MediaKind,
    payload_type: u8,
    codec: Codec,
    /// The payload type of its RED packets (RFC 2198), if it sends RED.
    red_payload_type: Option<u8>,
    /// The track it is a layer of: the SSRC of the track's first layer,
    /// which holds the track's layers and fan-out (its own SSRC for a
    /// track's first or only layer).
    pub(super) group: u32,
    /// The track's layers in ascending quality (declaration order, which
    /// measured bitrates override); on the track's first bound layer only.
    layers: Vec<u32>,
    /// The track's consumers (on the first layer only): every layer's
    /// packets walk it, and each consumer takes the layer it forwards.
    fanout: Vec<(u32, u16)>,
    /// Its bitrate, which orders the track's layers.
    rate: LayerRate,
    pub(super) keyframe_wanted: bool,
    last_pli: Option<Instant>,
    /// Its last packets, for subscribers' NACKs.
    pub(super) cache: PacketCache,
    /// Gaps in its numbering, NACKed to the publisher.
    pub(super) nack: NackTracker,
    /// The publisher's RTX stream for it, once known.
    pub(super) rtx_ssrc: Option<u32>,
    /// What its receiver reports say.
    pub(super) reception: ReceptionStats,
    /// What it shows (a screen share is allocated first).
    pub(super) source: TrackSource,
}

impl Router {
    pub(super) fn handle_rtp<T: Transmit>(
        &mut self,
        now: Instant,
        src: SocketAddr,
        buf: &mut [u8],
        tx: &mut T,
    ) -> Result<(), DropReason> {
        if buf.len() < wire::rtp::FIXED_HEADER_LEN {
            return Err(DropReason::Malformed);
        }
        let wire_ssrc = wire::be32(buf, 8);
        // A producer's own stream, or its publisher's RTX stream.
        let (ssrc, is_rtx) = if self.producers.contains_key(&wire_ssrc) {
            (wire_ssrc, false)
        } else if let Some(&media) = self.rtx_ssrcs.get(&wire_ssrc) {
            (media, true)
        } else {
            return self.bind_rid(now, src, wire_ssrc, buf);
        };
        let Some(producer) = self.producers.get(&ssrc) else {
            return Err(DropReason::UnknownSource);
        };
        let (ep_slot, media_pt) = (producer.endpoint, producer.payload_type);
        let audio = producer.kind == MediaKind::Audio;
        let Some(Some(publisher)) = self.endpoints.get_mut(ep_slot as usize) else {
            return Err(DropReason::UnknownSource);
        };
        let room = publisher.room;
        if publisher.transport.remote.is_some_and(|r| r != src) {
            return Err(DropReason::AddressMismatch);
        }
        let keys = publisher
            .transport
            .keys
            .as_mut()
            .ok_or(DropReason::NotConnected)?;
        let mut len = keys.rx.unprotect_rtp(buf).map_err(DropReason::from_srtp)?;
        // Transport-cc acknowledges every authentic arrival, RTX included:
        // a publisher probes its uplink with padding on its RTX stream,
        // which is dropped just below, and a probe reported lost holds the
        // publisher's estimate (and so its simulcast layers) down.
        let mut twcc = false;
        if let Some(w) = publisher.transport.webrtc.as_deref_mut() {
            if let Some(arrived) = buf.get(..len).and_then(|b| RtpPacket::new_checked(b).ok()) {
                w.record_arrival(&arrived, now);
            }
            twcc = w.twcc.is_some();
        }
        if is_rtx {
            // Authentic: unwrapped into the packet it repairs, which then
            // goes the way of any packet of the stream.
            len = repair::unwrap_rtx(buf, len, ssrc, media_pt)?;
            self.stats.inc(Counter::RtxIn);
        }
        // The one check of this packet: every consumer's copy reuses it.
        // SRTP authenticates only the bytes, so an authentic packet may still
        // be malformed (an extension element running past its block, bad
        // padding): it is dropped here, before anything relies on it.
        let packet = buf
            .get(..len)
            .and_then(|plain| RtpPacket::new_checked(plain).ok())
            .ok_or(DropReason::Malformed)?;
        let learnt = publisher.transport.authentic_from(src, now)?;
        if learnt {
            self.by_addr.insert(src, ep_slot);
        }
        // A deadline appeared (learnt address) or may be due sooner than
        // armed (transport-cc feedback): rarely true in a steady stream.
        let rearm = learnt
            || (twcc
                && publisher
                    .transport
                    .armed
                    .is_none_or(|a| a > now + twcc::FEEDBACK_INTERVAL));
        self.stats.inc(Counter::RtpIn);
        if rearm {
            self.schedule(ep_slot, now);
        }
        if audio && !is_rtx {
            // Its level for speaker detection; may re-point slots (before
            // the fan-out below, which then follows the new lists).
            self.record_audio_level(ep_slot, &packet, now);
        }
        let in_seq = packet.sequence_number();
        let in_ts = packet.timestamp();

        let Some(producer) = self.producers.get_mut(&ssrc) else {
            return Ok(());
        };
        // A retransmission is forwarded only if the node missed (and NACKed)
        // that packet: anything else is a duplicate (or a publisher's RTX
        // probe), and a second, different packet under one output number
        // would reuse an SRTP nonce.
        if is_rtx && !producer.nack.is_missing(in_seq) {
            return Err(DropReason::RtxDuplicate);
        }
        // Gaps are tracked (and NACKed) in video only: browsers negotiate
        // no NACK for Opus, whose own concealment covers a lost frame.
        let arrival = match producer.kind {
            MediaKind::Video => producer.nack.on_packet(in_seq, now),
            MediaKind::Audio => repair::Arrival::default(),
        };
        if arrival.repaired {
            self.stats.inc(Counter::NackRepaired);
        }
        if !producer.cache.store(in_seq, packet.as_bytes()) && len > cache::SLOT_LEN {
            self.stats.inc(Counter::CacheOversize);
        }
        if !is_rtx {
            // Loss and jitter of the publisher's path, for its RRs.
            producer.reception.on_packet(in_seq, in_ts, now);
        }
        let payload_len = packet.payload().len() as u32;
        // Padding only (a publisher's bandwidth probe on its media SSRC):
        // kept in the cache and seen by the NACK tracker like any packet of
        // the stream, but neither measured as the layer's media nor sent.
        let padding_only = payload_len == 0;
        let rolled = !padding_only && producer.rate.on_packet(len, now);
        let (group_key, codec) = (producer.group, producer.codec);
        let Some(group) = self.producers.get(&group_key) else {
            return Ok(());
        };
        let layered = group.layers.len() > 1;
        if rolled && layered {
            self.choose_layers(group_key, now);
        }
        let Some(group) = self.producers.get(&group_key) else {
            return Ok(());
        };
        if padding_only {
            // Each consumer forwarding this layer numbers on without it.
            for &(sub_slot, c) in &group.fanout {
                if let Some(Some(sub)) = self.endpoints.get_mut(sub_slot as usize)
                    && let Some(consumer) = sub.consumers.get_mut(usize::from(c))
                    && consumer.layer == Some(ssrc)
                {
                    consumer.rewriter.drop_input(in_seq);
                }
            }
            self.stats.drop(DropReason::PaddingOnly);
        }
        // A layer switch waits for the target layer's keyframe.
        let keyframe = layered && crate::codec::is_keyframe(codec, packet.payload());
        // Padding goes to nobody.
        let fanout = if padding_only {
            &[][..]
        } else {
            &group.fanout[..]
        };
        let (mut copies, mut copy_bytes) = (0u64, 0u64);
        for &(sub_slot, c) in fanout {
            let Some(Some(sub)) = self.endpoints.get_mut(sub_slot as usize) else {
                continue;
            };
            let Some(dst) = sub.transport.remote else {
                self.stats.drop(DropReason::SubscriberUnreachable);
                continue;
            };
            let Some(keys) = sub.transport.keys.as_mut() else {
                self.stats.drop(DropReason::NotConnected);
                continue;
            };
            let Some(consumer) = sub.consumers.get_mut(usize::from(c)) else {
                continue;
            };
            if consumer.layer != Some(ssrc) {
                // Another layer of the track: forwarded only from the
                // target layer's keyframe on, which makes it the current one.
                if !(keyframe && consumer.target == Some(ssrc)) {
                    continue;
                }
                consumer.layer = Some(ssrc);
                consumer.rewriter.resync();
                consumer.vp8_switch = true;
                self.stats.inc(Counter::LayerSwitches);
            }
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
            // Numbered for the subscriber's estimate, or as published.
            let egress = sub.transport.egress.as_deref_mut();
            let (out_len, payload_at) = match egress {
                Some(e) => {
                    let size = len + 16;
                    match egress::copy_numbered(&packet, out, e.ext, e.number(size, now)) {
                        Some(copied) => copied,
                        None => {
                            self.stats.drop(DropReason::ProtectFailed);
                            continue;
                        }
                    }
                }
                None => {
                    if packet.copy_into(out).is_none() {
                        self.stats.drop(DropReason::ProtectFailed);
                        continue;
                    }
                    (len, packet.header_len())
                }
            };
            let Some(Ok(mut p)) = out.get_mut(..out_len).map(RtpPacketMut::new_checked) else {
                self.stats.drop(DropReason::ProtectFailed);
                continue;
            };
            p.set_ssrc(consumer.ssrc);
            p.set_sequence_number(out_seq);
            p.set_timestamp(out_ts);
            p.set_payload_type(consumer.payload_type);
            if layered && codec == Codec::Vp8 {
                // One continuous PictureID/TL0PICIDX across layer switches.
                let switched = std::mem::take(&mut consumer.vp8_switch);
                if let Some(payload) = out.get_mut(payload_at..out_len - packet.padding_len()) {
                    consumer.vp8.rewrite(payload, switched);
                }
            }
            let red = consumer.red;
            let Ok(out_len) = red.apply(out, out_len, payload_at, &packet, consumer.payload_type)
            else {
                self.stats.drop(DropReason::RedMalformed);
                continue;
            };
            match keys.tx.protect_rtp_stream(stream, out, out_len) {
                Ok(n) => {
                    tx.send(n, dst);
                    self.stats.sent(n);
                    copies += 1;
                    copy_bytes += n as u64;
                    let r = &mut consumer.reports;
                    r.packets = r.packets.wrapping_add(1);
                    r.octets = r.octets.wrapping_add(payload_len);
                }
                Err(_) => self.stats.drop(DropReason::ProtectFailed),
            }
        }
        if let Some(r) = self.rooms.get_mut(&room) {
            let t = &mut r.traffic;
            t.rx_packets += 1;
            t.rx_bytes += len as u64;
            t.tx_packets += copies;
            t.tx_bytes += copy_bytes;
        }

        let Some(producer) = self.producers.get_mut(&ssrc) else {
            return Ok(());
        };
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
                let sent = match publisher.transport.keys.as_mut() {
                    Some(keys) => rtcp::write_pli(out, 1, ssrc)
                        .ok()
                        .and_then(|n| keys.tx.protect_rtcp(out, n).ok()),
                    None => None,
                };
                if let Some(n) = sent {
                    tx.send(n, src);
                    self.stats.sent(n);
                    self.stats.inc(Counter::PliSent);
                    let endpoint = publisher.id;
                    self.events
                        .push(Event::KeyframeRequested { endpoint, ssrc }, &mut self.stats);
                }
            } else {
                self.stats.drop(DropReason::PoolExhausted);
            }
        }
        self.send_nacks(ssrc, src, now, tx);
        Ok(())
    }

    /// The rank of producer `ssrc` among its track's active layers, as
    /// [`target_layer`] orders them (the `max_layer` that selects it);
    /// `None` while it is inactive or unknown.
    pub(super) fn layer_rank(&self, ssrc: u32, now: Instant) -> Option<u8> {
        let key = self.producers.get(&ssrc)?.group;
        let mut active = [(0u64, 0usize, 0u32); 16];
        let n = active_layers(&self.producers, key, now, &mut active);
        let at = active.get(..n)?.iter().position(|&(_, _, l)| l == ssrc)?;
        u8::try_from(at).ok()
    }

    /// Producer `ssrc`'s measured bitrate, once a full second was measured.
    pub(super) fn layer_bitrate(&self, ssrc: u32) -> Option<u64> {
        self.producers.get(&ssrc)?.rate.measured_bps()
    }

    /// Re-chooses the target layer of every consumer of track `key` (a
    /// layer's bitrate changed, a layer appeared or a cap changed); a
    /// consumer whose target moves asks the new layer for a keyframe.
    pub(super) fn choose_layers(&mut self, key: u32, now: Instant) {
        let Self {
            producers,
            endpoints,
            ..
        } = self;
        let Some(group) = producers.get(&key) else {
            return;
        };
        // Layers that need a keyframe, by index in the track.
        let mut wanted = 0u32;
        for &(sub_slot, c) in &group.fanout {
            let Some(sub) = endpoints
                .get_mut(sub_slot as usize)
                .and_then(Option::as_mut)
            else {
                continue;
            };
            let budget = match sub.transport.egress.as_deref() {
                // Its estimate chooses its layers ([`super::egress`]).
                Some(e) if e.allocated => continue,
                // Until its first allocation, its lowest layers while its
                // first feedback is awaited, then what fits its start
                // estimate ([`super::egress::Egress::start_budget`]).
                Some(e) => Some(e.start_budget(now)),
                None => None,
            };
            let Some(consumer) = sub.consumers.get_mut(usize::from(c)) else {
                continue;
            };
            let target = target_layer(producers, key, consumer.max_layer, budget, now);
            if target == consumer.target {
                continue;
            }
            consumer.target = target;
            if target != consumer.layer
                && let Some(i) = group.layers.iter().position(|&l| Some(l) == target)
            {
                wanted |= 1 << (i & 31);
            }
        }
        if group.kind != MediaKind::Video || wanted == 0 {
            return;
        }
        let layers: [Option<u32>; 32] = std::array::from_fn(|i| {
            group
                .layers
                .get(i)
                .copied()
                .filter(|_| wanted & (1 << i) != 0)
        });
        for l in layers.into_iter().flatten() {
            if let Some(p) = producers.get_mut(&l) {
                p.keyframe_wanted = true;
            }
        }
    }

    /// NACKs the missing packets of producer `ssrc` that are due, to its
    /// publisher at `dst`; asks for a keyframe (video) when some were given
    /// up on.
    fn send_nacks<T: Transmit>(&mut self, ssrc: u32, dst: SocketAddr, now: Instant, tx: &mut T) {
        let Some(producer) = self.producers.get_mut(&ssrc) else {
            return;
        };
        if !producer.nack.due(now) {
            return;
        }
        let mut lost = [0u16; NACK_BATCH];
        let (n, gave_up) = producer.nack.collect(now, &mut lost);
        if gave_up > 0 {
            self.stats.add(Counter::NackGaveUp, gave_up as u64);
            if producer.kind == MediaKind::Video {
                producer.keyframe_wanted = true;
            }
        }
        if n == 0 {
            return;
        }
        let slot = producer.endpoint;
        let Some(Some(publisher)) = self.endpoints.get_mut(slot as usize) else {
            return;
        };
        let Some(keys) = publisher.transport.keys.as_mut() else {
            return;
        };
        let Some(out) = tx.buffer() else {
            self.stats.drop(DropReason::PoolExhausted);
            return;
        };
        let room = out.len().saturating_sub(SRTCP_TRAILER_MAX);
        // Sender SSRC 1: the router's own RTCP source.
        let sent = rtcp::write_nack(&mut out[..room], 1, ssrc, &lost[..n])
            .ok()
            .and_then(|len| keys.tx.protect_rtcp(out, len).ok());
        match sent {
            Some(len) => {
                tx.send(len, dst);
                self.stats.sent(len);
                self.stats.inc(Counter::NackSent);
                self.stats.add(Counter::NackRequested, n as u64);
            }
            None => self.stats.drop(DropReason::ProtectFailed),
        }
    }

    pub(super) fn handle_rtcp<T: Transmit>(
        &mut self,
        now: Instant,
        src: SocketAddr,
        buf: &mut [u8],
        tx: &mut T,
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
        if ep.transport.remote.is_some_and(|r| r != src) {
            return Err(DropReason::AddressMismatch);
        }
        let keys = ep.transport.keys.as_mut().ok_or(DropReason::NotConnected)?;
        let len = keys.rx.unprotect_rtcp(buf).map_err(DropReason::from_srtp)?;
        let compound = buf.get(..len).ok_or(DropReason::Malformed)?;
        let learnt = ep.transport.authentic_from(src, now)?;
        self.stats.inc(Counter::RtcpIn);
        // min(100 ms, 2 RTT) between two resends of one packet.
        let wait = ep.rtt.map_or(repair::RESEND_INTERVAL_MAX, |rtt| {
            (rtt * 2).min(repair::RESEND_INTERVAL_MAX)
        });
        // Whether the subscriber's estimate is to be shared out anew.
        let mut allocate = false;
        // Publishers' SRs, forwarded per consumer after the walk.
        let mut srs = [(0u32, SenderInfo { ntp: 0, rtp: 0 }); 4];
        let mut n_srs = 0;
        for item in RtcpIter::new(compound) {
            let media_ssrc = match item {
                Ok(RtcpPacket::SenderReport(sr)) => {
                    read_blocks(ep, sr.report_blocks(), now, &mut self.stats);
                    let info = SenderInfo {
                        ntp: sr.ntp_time(),
                        rtp: sr.rtp_time(),
                    };
                    if ep.tracks.iter().any(|t| t.ssrc == sr.ssrc())
                        && let Some(at) = srs.get_mut(n_srs)
                    {
                        *at = (sr.ssrc(), info);
                        n_srs += 1;
                    }
                    continue;
                }
                Ok(RtcpPacket::ReceiverReport(rr)) => {
                    read_blocks(ep, rr.report_blocks(), now, &mut self.stats);
                    continue;
                }
                Ok(RtcpPacket::TransportCc(fb)) => {
                    if let Some(e) = ep.transport.egress.as_deref_mut() {
                        e.estimator.on_feedback(&fb, now);
                        e.watch_trial(now);
                        self.stats.inc(Counter::TwccFeedbackIn);
                        allocate |= e.allocation_due(now);
                    }
                    continue;
                }
                Ok(RtcpPacket::Remb(remb)) => {
                    if let Some(e) = ep.transport.egress.as_deref_mut() {
                        e.estimator.on_remb(remb.bitrate_bps(), now);
                        allocate |= e.allocation_due(now);
                    }
                    continue;
                }
                Ok(RtcpPacket::Nack(nack)) => {
                    self.stats.inc(Counter::NackIn);
                    // Only this endpoint's own consumers, as for PLI.
                    let Some(c) = ep
                        .consumers
                        .iter_mut()
                        .find(|c| c.ssrc == nack.media_ssrc() && c.attached)
                    else {
                        continue;
                    };
                    let (Some(p), Some(keys), Some(dst)) = (
                        c.layer.and_then(|s| self.producers.get(&s)),
                        ep.transport.keys.as_mut(),
                        ep.transport.remote,
                    ) else {
                        continue;
                    };
                    // Rewritten as forwarding rewrote it: the PictureIDs of
                    // every layer of a layered VP8 track, the first layer's
                    // included (a resend with its raw PictureID broke the
                    // frame it repaired).
                    let layered = c
                        .source
                        .and_then(|k| self.producers.get(&k))
                        .is_some_and(|g| g.layers.len() > 1);
                    let ctx = ResendCtx {
                        cache: &p.cache,
                        rewriter: &c.rewriter,
                        rtx: c.rtx.as_deref_mut(),
                        vp8: (p.codec == Codec::Vp8 && layered).then_some(&mut c.vp8),
                        keys: &mut keys.tx,
                        dst,
                        wait,
                        egress: ep.transport.egress.as_deref_mut(),
                    };
                    repair::resend(ctx, nack.lost(), now, &mut self.stats, tx);
                    continue;
                }
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
                .and_then(|c| c.target.or(c.layer).or(c.source));
            if let Some(p) = source.and_then(|s| self.producers.get_mut(&s)) {
                p.keyframe_wanted = true;
            }
        }
        if allocate {
            self.allocate(slot, now);
            // A probe may have started.
            self.schedule(slot, now);
        }
        for &(ssrc, info) in srs.get(..n_srs).unwrap_or_default() {
            self.stats.inc(Counter::SrIn);
            if let Some(p) = self.producers.get_mut(&ssrc) {
                p.reception.on_sender_report(info.ntp, now);
            }
            self.forward_sender_report(ssrc, info, now, tx);
        }
        if learnt {
            self.by_addr.insert(src, slot);
            self.schedule(slot, now);
        }
        Ok(())
    }

    /// Sends each consumer of producer `ssrc` its translation of the
    /// producer's SR (see [`reports`](super::reports)).
    fn forward_sender_report<T: Transmit>(
        &mut self,
        ssrc: u32,
        info: SenderInfo,
        now: Instant,
        tx: &mut T,
    ) {
        let Self {
            producers,
            endpoints,
            stats,
            ..
        } = self;
        let Some(key) = producers.get(&ssrc).map(|p| p.group) else {
            return;
        };
        let Some(p) = producers.get(&key) else {
            return;
        };
        for &(sub_slot, c) in &p.fanout {
            let Some(Some(sub)) = endpoints.get_mut(sub_slot as usize) else {
                continue;
            };
            // Only consumers forwarding this layer: a report of a layer a
            // consumer does not receive would map the wrong timestamps.
            if sub
                .consumers
                .get(usize::from(c))
                .is_none_or(|c| c.layer != Some(ssrc))
            {
                continue;
            }
            let (Some(dst), Some(keys), Some(consumer)) = (
                sub.transport.remote,
                sub.transport.keys.as_mut(),
                sub.consumers.get_mut(usize::from(c)),
            ) else {
                continue;
            };
            // Before its first packet a consumer's timestamps mean nothing.
            if !consumer.rewriter.synced() {
                continue;
            }
            let Some(out) = tx.buffer() else {
                stats.drop(DropReason::PoolExhausted);
                return;
            };
            let room = out.len().saturating_sub(SRTCP_TRAILER_MAX);
            let r = &mut consumer.reports;
            let written = rtcp::write_sender_report(
                &mut out[..room],
                consumer.ssrc,
                info.ntp,
                consumer.rewriter.output_ts(info.rtp),
                r.packets,
                r.octets,
                &[],
            );
            match written.ok().and_then(|n| keys.tx.protect_rtcp(out, n).ok()) {
                Some(n) => {
                    tx.send(n, dst);
                    stats.sent(n);
                    stats.inc(Counter::SrSent);
                    r.last_sr = Some(((info.ntp >> 16) as u32, now));
                }
                None => stats.drop(DropReason::ProtectFailed),
            }
        }
    }

    /// Sends a publishing endpoint one RR about its producers.
    pub(super) fn send_receiver_report<T: Transmit>(
        &mut self,
        slot: u32,
        now: Instant,
        tx: &mut T,
    ) {
        let Self {
            producers,
            endpoints,
            stats,
            ..
        } = self;
        let Some(Some(ep)) = endpoints.get_mut(slot as usize) else {
            return;
        };
        let (Some(dst), Some(keys)) = (ep.transport.remote, ep.transport.keys.as_mut()) else {
            return;
        };
        let mut blocks = [ReportBlockData::default(); reports::MAX_BLOCKS];
        let mut n = 0;
        for t in &ep.tracks {
            let Some(b) = producers
                .get_mut(&t.ssrc)
                .and_then(|p| p.reception.block(t.ssrc, now))
            else {
                continue;
            };
            if let Some(at) = blocks.get_mut(n) {
                *at = b;
                n += 1;
            }
        }
        if n == 0 {
            return;
        }
        let Some(out) = tx.buffer() else {
            stats.drop(DropReason::PoolExhausted);
            return;
        };
        let room = out.len().saturating_sub(SRTCP_TRAILER_MAX);
        // Sender SSRC 1: the router's own RTCP source.
        let written = rtcp::write_receiver_report(&mut out[..room], 1, &blocks[..n]);
        match written
            .ok()
            .and_then(|len| keys.tx.protect_rtcp(out, len).ok())
        {
            Some(len) => {
                tx.send(len, dst);
                stats.sent(len);
                stats.inc(Counter::RrSent);
            }
            None => stats.drop(DropReason::ProtectFailed),
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
        let (Some(w), Some(keys)) = (
            ep.transport.webrtc.as_deref_mut(),
            ep.transport.keys.as_mut(),
        ) else {
            return Err(DropReason::UnknownSource);
        };
        let rtx_unbound = w.has_unbound_rtx();
        if !w.has_unbound_rid() && !rtx_unbound {
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
        // A layer's RTX stream names the layer with `repaired-rid`.
        if rtx_unbound
            && let Some(repaired) = w.repaired_rid_extension.and_then(|id| packet.extension(id))
        {
            let layer = w
                .unbound_rtx(repaired, packet.payload_type())
                .ok_or(DropReason::UnknownSource)?;
            let media = layer.ssrc.ok_or(DropReason::UnknownSource)?;
            let producer = self
                .producers
                .get_mut(&media)
                .filter(|p| p.rtx_ssrc.is_none())
                .ok_or(DropReason::UnknownSource)?;
            layer.rtx_ssrc = Some(ssrc);
            producer.rtx_ssrc = Some(ssrc);
            self.rtx_ssrcs.insert(ssrc, media);
            self.stats.inc(Counter::RtxStreamsBound);
            return Ok(());
        }
        if ep.tracks.len() >= self.config.max_tracks_per_endpoint {
            return Err(DropReason::UnknownSource);
        }
        let rid = packet.extension(ext).ok_or(DropReason::UnknownSource)?;
        let layer = w
            .unbound_rid(rid, packet.payload_type())
            .ok_or(DropReason::UnknownSource)?;
        layer.ssrc = Some(ssrc);
        let group = layer.track.group;
        let codec = layer.track.codec;
        let (kind, payload_type) = (layer.track.kind, layer.track.payload_type);
        let rid_name: Box<str> = layer.track.rid.as_str().into();
        let source = layer.track.source;
        // The track's first bound layer holds the track.
        let layer_of = w
            .rid_tracks
            .iter()
            .filter(|r| r.track.group == group && r.ssrc != Some(ssrc))
            .find_map(|r| r.ssrc.and_then(|s| self.producers.get(&s)).map(|p| p.group));
        let track = TrackConfig {
            kind,
            ssrc,
            payload_type,
            codec,
            layer_of,
            // Its RTX stream binds by `repaired-rid` later.
            rtx: None,
            red_payload_type: None,
            source,
        };
        ep.tracks.push(track);
        let room = ep.room;
        let event = Event::ProducerBound {
            endpoint: ep.id,
            ssrc,
            rid: rid_name,
            kind: track.kind,
        };
        self.add_producer(slot, track, now);
        if let Some(first) = layer_of {
            self.order_rid_layers(slot, first);
        }
        self.stats.inc(Counter::SimulcastLayersBound);
        self.events.push(event, &mut self.stats);
        self.producers_added(slot, room, &[track], now);
        self.schedule(slot, now);
        Ok(())
    }

    /// Puts the bound layers of the rid track whose first bound layer is
    /// `key` in the order the endpoint declared its rids (ascending
    /// quality, as browsers list them), whatever order they bound in.
    fn order_rid_layers(&mut self, slot: u32, key: u32) {
        let Some(Some(ep)) = self.endpoints.get(slot as usize) else {
            return;
        };
        let Some(w) = ep.transport.webrtc.as_deref() else {
            return;
        };
        let Some(g) = self.producers.get_mut(&key) else {
            return;
        };
        let rank = |ssrc: u32| {
            w.rid_tracks
                .iter()
                .position(|r| r.ssrc == Some(ssrc))
                .unwrap_or(usize::MAX)
        };
        g.layers.sort_by_key(|&l| rank(l));
    }

    /// Makes `track` of the endpoint in `slot` a producer (no consumers
    /// yet), with its packet cache, and indexes its RTX stream.
    fn add_producer(&mut self, slot: u32, track: TrackConfig, now: Instant) {
        let packets = match track.kind {
            MediaKind::Video => cache::VIDEO_PACKETS,
            MediaKind::Audio => cache::AUDIO_PACKETS,
        };
        if let Some(rtx) = track.rtx {
            self.rtx_ssrcs.insert(rtx.ssrc, track.ssrc);
        }
        // A layer of a track of the same endpoint and kind joins it (at
        // most `max_tracks_per_endpoint` layers, the endpoint's tracks).
        let group = track
            .layer_of
            .and_then(|g| self.producers.get_mut(&g))
            .filter(|g| g.endpoint == slot && g.kind == track.kind && !g.layers.is_empty())
            .map(|g| {
                g.layers.push(track.ssrc);
                g.group
            })
            .unwrap_or(track.ssrc);
        self.producers.insert(
            track.ssrc,
            Producer {
                endpoint: slot,
                kind: track.kind,
                payload_type: track.payload_type,
                codec: track.codec,
                red_payload_type: track.red_payload_type,
                group,
                layers: if group == track.ssrc {
                    vec![track.ssrc]
                } else {
                    Vec::new()
                },
                rate: LayerRate::new(now),
                fanout: Vec::new(),
                keyframe_wanted: false,
                last_pli: None,
                cache: PacketCache::new(packets),
                nack: NackTracker::new(),
                rtx_ssrc: track.rtx.map(|r| r.ssrc),
                reception: ReceptionStats::new(track.kind.clock_rate(), now),
                source: track.source,
            },
        );
        if track.kind == MediaKind::Audio && group == track.ssrc {
            self.speaker_added(slot, now);
        }
    }

    /// New producers `tracks` of the endpoint in `publisher`: each other
    /// subscriber of the room that wants them attaches them, touching only
    /// that subscriber's own consumers (no re-sync of the room): an
    /// explicit slot waiting for one of these SSRCs attaches, an `All`
    /// subscriber reuses a detached slot of the kind or gets a new one.
    fn producers_added(
        &mut self,
        publisher: u32,
        room: RoomId,
        tracks: &[TrackConfig],
        now: Instant,
    ) {
        // Only new tracks: a further layer of a track is no new producer
        // to subscribers (the track's consumers may switch to it).
        let mut new_tracks = [None; 32];
        let mut n = 0;
        for t in tracks {
            if self
                .producers
                .get(&t.ssrc)
                .is_some_and(|p| p.group == t.ssrc)
                && let Some(at) = new_tracks.get_mut(n)
            {
                *at = Some(*t);
                n += 1;
            }
        }
        if n < tracks.len() {
            // Layers joined tracks: their consumers may move to them.
            for t in tracks {
                if let Some(g) = self.producers.get(&t.ssrc).map(|p| p.group)
                    && g != t.ssrc
                {
                    self.choose_layers(g, now);
                }
            }
        }
        let tracks: Vec<TrackConfig> = new_tracks.iter().flatten().copied().collect();
        if tracks.is_empty() {
            return;
        }
        let tracks = &tracks[..];
        let members = self.rooms.get(&room).map_or(0, |r| r.endpoints.len());
        for i in 0..members {
            let Some(&slot) = self.rooms.get(&room).and_then(|r| r.endpoints.get(i)) else {
                break;
            };
            if slot != publisher {
                self.offer_producers(slot, tracks, now);
            }
        }
        self.refresh_slots(room, now);
    }

    /// Attaches what the subscriber in `slot` wants of `tracks` (new
    /// producers of its room).
    fn offer_producers(&mut self, slot: u32, tracks: &[TrackConfig], now: Instant) {
        let max = self.config.max_consumers_per_endpoint;
        let Self {
            endpoints,
            producers,
            stats,
            ..
        } = self;
        let Some(Some(ep)) = endpoints.get_mut(slot as usize) else {
            return;
        };
        if !ep.role.subscribes() {
            return;
        }
        let pts = ep.transport.webrtc.as_ref().map_or((None, None), |w| {
            (w.video_payload_type, w.audio_payload_type)
        });
        let all = matches!(ep.subscription, Subscription::All);
        for t in tracks {
            // An explicit slot waiting for this SSRC (in `All` mode a slot's
            // old source coming back is reused the same way).
            let waiting = ep
                .consumers
                .iter()
                .position(|c| !c.attached && c.source == Some(t.ssrc));
            let index = match waiting {
                Some(i) => i,
                None if !all => continue,
                None => {
                    // A detached slot of the kind whose source is gone.
                    let free = ep.consumers.iter().position(|c| {
                        c.kind == t.kind
                            && !c.attached
                            && c.source.is_none_or(|s| !producers.contains_key(&s))
                    });
                    match free {
                        Some(i) => i,
                        None if ep.consumers.len() >= max => {
                            stats.inc(Counter::ConsumersOverLimit);
                            continue;
                        }
                        None => {
                            let per_kind =
                                ep.consumers.iter().filter(|c| c.kind == t.kind).count() as u16;
                            let c = new_consumer(ep, t.kind, per_kind);
                            ep.consumers.push(c);
                            ep.consumers.len() - 1
                        }
                    }
                }
            };
            let budget = layer_budget(ep, now);
            if let Some(c) = ep.consumers.get_mut(index) {
                attach(producers, slot, index as u16, c, t.ssrc, pts, budget, now);
            }
        }
    }

    pub(super) fn add_endpoint(
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
                    .filter(|&s| self.endpoint(s).is_some_and(|e| e.transport.pending()))
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
        let received = [
            cfg.rtx_payload_types.video,
            cfg.rtx_payload_types.audio,
            cfg.red_payload_type,
        ];
        if received.into_iter().flatten().any(|pt| pt > 127) {
            return Err(RouterError::Invalid("payload type above 127"));
        }
        check_track_payloads(&cfg.tracks)?;
        // Every SSRC the endpoint sends from (media, RTX, RTCP) is its own
        // and new on the worker.
        self.check_new_ssrcs(&cfg.tracks, cfg.rtcp_ssrc)?;
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
        let twcc_send = transport
            .as_ref()
            .map_or(cfg.twcc_send_extension, |t| t.twcc_send_extension);
        let audio_level_extension = cfg
            .audio_level_extension
            .or(transport.as_ref().and_then(|t| t.audio_level_extension));
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

        self.next_generation = self.next_generation.wrapping_add(1);
        let ep = Endpoint {
            id: cfg.id,
            room: cfg.room,
            role: cfg.role,
            transport: Transport {
                keys,
                webrtc,
                remote: cfg.remote,
                learnt_at: None,
                created: now,
                armed: None,
                // Publishers get receiver reports about their streams.
                rtcp_at: cfg.role.publishes().then_some(now + reports::RTCP_INTERVAL),
                egress: twcc_send
                    .filter(|id| (1..=14).contains(id) && cfg.role.subscribes())
                    .map(|id| Box::new(egress::Egress::new(id, now))),
            },
            tracks: cfg.tracks,
            rtcp_ssrc: cfg.rtcp_ssrc,
            rtx_payload_types: cfg.rtx_payload_types,
            participant: cfg.participant,
            audio_level_extension,
            red_payload_type: cfg.red_payload_type,
            rtt: None,
            subscription: cfg.subscription,
            consumers: Vec::new(),
            ssrc_base: ssrc_base(cfg.id),
            generation: self.next_generation,
        };
        let ufrag = ep
            .transport
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
        self.finish_add(slot, cfg.id, cfg.remote, cfg.rtcp_ssrc, cfg.room, now)
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
        now: Instant,
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
            self.add_producer(slot, t, now);
        }
        self.sync_consumers(slot, now);
        if !tracks.is_empty() {
            self.producers_added(slot, room, &tracks, now);
        }
        self.schedule(slot, now);
        Ok(Outcome::Consumers(self.consumer_infos(slot)))
    }

    /// [`super::Command::AddTracks`]: checks everything first, so a
    /// refused command changes nothing.
    pub(super) fn add_tracks(
        &mut self,
        id: EndpointId,
        tracks: Vec<TrackConfig>,
        now: Instant,
    ) -> Result<(), RouterError> {
        let slot = *self.by_id.get(&id).ok_or(RouterError::UnknownEndpoint)?;
        let ep = self.endpoint(slot).ok_or(RouterError::UnknownEndpoint)?;
        if !ep.role.publishes() {
            return Err(RouterError::Invalid(
                "a subscribe-only endpoint publishes no tracks",
            ));
        }
        // A trunk publishes what one subscriber of the origin receives.
        if ep.tracks.len() + tracks.len() > self.config.max_consumers_per_endpoint {
            return Err(RouterError::TooMany("tracks per endpoint"));
        }
        let room = ep.room;
        if tracks.iter().any(|t| t.layer_of.is_some()) {
            return Err(RouterError::Invalid(
                "tracks are added whole, without layers",
            ));
        }
        check_track_payloads(&tracks)?;
        self.check_new_ssrcs(&tracks, None)?;
        if let Some(Some(ep)) = self.endpoints.get_mut(slot as usize) {
            ep.tracks.extend(tracks.iter().copied());
        }
        for &t in &tracks {
            self.add_producer(slot, t, now);
        }
        // `producers_added` takes at most 32 new tracks at a time.
        for chunk in tracks.chunks(32) {
            self.producers_added(slot, room, chunk, now);
        }
        Ok(())
    }

    /// [`super::Command::RemoveTracks`]: checks every SSRC first, so a
    /// refused command changes nothing. The endpoint stays a speaker of
    /// its room until it leaves (a trunk keeps its audio tracks' slot).
    pub(super) fn remove_tracks(
        &mut self,
        id: EndpointId,
        ssrcs: &[u32],
        now: Instant,
    ) -> Result<(), RouterError> {
        let slot = *self.by_id.get(&id).ok_or(RouterError::UnknownEndpoint)?;
        let ep = self.endpoint(slot).ok_or(RouterError::UnknownEndpoint)?;
        let room = ep.room;
        for &ssrc in ssrcs {
            let single = ep
                .tracks
                .iter()
                .any(|t| t.ssrc == ssrc && t.layer_of.is_none())
                && !ep.tracks.iter().any(|t| t.layer_of == Some(ssrc))
                && self
                    .producers
                    .get(&ssrc)
                    .is_some_and(|p| p.layers.len() <= 1);
            if !single {
                return Err(RouterError::Invalid(
                    "not a single-layer track of this endpoint",
                ));
            }
        }
        for &ssrc in ssrcs {
            self.drop_producer(ssrc);
        }
        if let Some(Some(ep)) = self.endpoints.get_mut(slot as usize) {
            ep.tracks.retain(|t| !ssrcs.contains(&t.ssrc));
        }
        self.refresh_slots(room, now);
        Ok(())
    }

    /// Removes producer `ssrc` and its RTX index; the consumers it fed
    /// detach and wait for their next producer.
    fn drop_producer(&mut self, ssrc: u32) {
        let Some(p) = self.producers.remove(&ssrc) else {
            return;
        };
        if let Some(rtx) = p.rtx_ssrc {
            self.rtx_ssrcs.remove(&rtx);
        }
        for (s, c) in p.fanout {
            if let Some(Some(sub)) = self.endpoints.get_mut(s as usize)
                && let Some(consumer) = sub.consumers.get_mut(usize::from(c))
            {
                consumer.attached = false;
            }
        }
    }

    pub(super) fn remove_endpoint(&mut self, id: EndpointId) -> Result<(), RouterError> {
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
            self.drop_producer(t.ssrc);
        }
        if let Some(a) = ep.transport.remote
            && self.by_addr.get(&a) == Some(&slot)
        {
            self.by_addr.remove(&a);
        }
        if let Some(s) = ep.rtcp_ssrc {
            self.rtcp_ssrcs.remove(&s);
        }
        if let Some(w) = &ep.transport.webrtc {
            self.by_ufrag.remove(w.ice.local_ufrag.as_str());
        }
        // Consumers it fed were detached above; an `All` subscriber reuses
        // such a slot for the next producer, an explicit slot waits for its
        // producer to come back.
        if let Some(room) = self.rooms.get_mut(&ep.room) {
            room.endpoints.retain(|&s| s != slot);
        }
        self.free.push(slot);
        self.speaker_left(&ep);
        Ok(())
    }

    pub(super) fn check_subscription(
        &self,
        role: Role,
        sub: &Subscription,
    ) -> Result<(), RouterError> {
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
        self.check_slots(sub)
    }

    /// Brings an endpoint's consumers in line with its subscription and the
    /// room's producers: creates, re-points and detaches slots, keeping each
    /// slot's SSRC and numbering.
    pub(super) fn sync_consumers(&mut self, slot: u32, now: Instant) {
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
                    // One consumer per track, not per simulcast layer.
                    .filter(|(ssrc, _)| self.producers.get(ssrc).is_some_and(|p| p.group == *ssrc))
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
            Subscription::Slots { .. } => {
                let ranking = self.ranking(ep.room, std::slice::from_ref(&slot));
                wanted = self.slots_wanted(slot, &ranking);
            }
        }
        if wanted.len() > self.config.max_consumers_per_endpoint {
            // Only `All` can get here (explicit lists are checked): the
            // subscriber misses the room's newest producers, counted.
            let over = wanted.len() - self.config.max_consumers_per_endpoint;
            self.stats.add(Counter::ConsumersOverLimit, over as u64);
            wanted.truncate(self.config.max_consumers_per_endpoint);
        }
        self.apply_consumers(slot, &wanted, now);
    }

    /// Rooms are a security boundary: a slot attaches only to a producer of
    /// its endpoint's room. An SSRC that is unknown, or a producer of another
    /// room, gets the same answer as one not published yet: an unattached
    /// slot (nothing tells the two apart), which attaches if a producer with
    /// that SSRC appears in the endpoint's own room.
    pub(super) fn apply_consumers(
        &mut self,
        slot: u32,
        wanted: &[(MediaKind, Option<u32>)],
        now: Instant,
    ) {
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
        let (video_pt, audio_pt) = ep.transport.webrtc.as_ref().map_or((None, None), |w| {
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
                let c = new_consumer(ep, kind, per_kind);
                match ep.consumers.get_mut(i) {
                    Some(old) => *old = c,
                    None => ep.consumers.push(c),
                }
            }
            let budget = layer_budget(ep, now);
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
            if c.source != source {
                c.pinned = false;
            }
            c.source = source;
            if let Some(s) = available {
                attach(
                    producers,
                    slot,
                    index,
                    c,
                    s,
                    (video_pt, audio_pt),
                    budget,
                    now,
                );
            }
        }
        self.mark_pins(slot);
    }

    pub(super) fn consumer_infos(&self, slot: u32) -> Vec<ConsumerInfo> {
        self.endpoint(slot)
            .map(|e| {
                e.consumers
                    .iter()
                    .map(|c| ConsumerInfo {
                        kind: c.kind,
                        slot: c.slot,
                        ssrc: c.ssrc,
                        producer_ssrc: if c.attached { c.source } else { None },
                        codec: c
                            .source
                            .filter(|_| c.attached)
                            .and_then(|p| self.producers.get(&p))
                            .map(|p| p.codec),
                        payload_type: c.payload_type,
                        rtx_ssrc: c.rtx.as_ref().map(|r| r.ssrc),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Checks that every SSRC `tracks` (media and RTX) and `rtcp_ssrc`
    /// send from appears once and is new on the worker.
    fn check_new_ssrcs(
        &self,
        tracks: &[TrackConfig],
        rtcp_ssrc: Option<u32>,
    ) -> Result<(), RouterError> {
        let own: Vec<u32> = tracks
            .iter()
            .flat_map(|t| [Some(t.ssrc), t.rtx.map(|r| r.ssrc)])
            .chain([rtcp_ssrc])
            .flatten()
            .collect();
        for (i, &ssrc) in own.iter().enumerate() {
            if own[..i].contains(&ssrc) || self.ssrc_taken(ssrc) {
                return Err(RouterError::DuplicateSsrc(ssrc));
            }
        }
        Ok(())
    }

    fn ssrc_taken(&self, ssrc: u32) -> bool {
        self.producers.contains_key(&ssrc)
            || self.rtcp_ssrcs.contains_key(&ssrc)
            || self.rtx_ssrcs.contains_key(&ssrc)
    }
}

/// Checks the payload types of `tracks`: at most 127, and a RED payload
/// type only on audio, differing from the track's other payload types.
fn check_track_payloads(tracks: &[TrackConfig]) -> Result<(), RouterError> {
    for t in tracks {
        let pts = [
            Some(t.payload_type),
            t.rtx.map(|r| r.payload_type),
            t.red_payload_type,
        ];
        if pts.into_iter().flatten().any(|pt| pt > 127) {
            return Err(RouterError::Invalid("payload type above 127"));
        }
        if t.red_payload_type.is_some_and(|red| {
            t.kind != MediaKind::Audio
                || red == t.payload_type
                || t.rtx.is_some_and(|r| r.payload_type == red)
        }) {
            return Err(RouterError::Invalid(
                "a RED payload type needs an audio track and a number of its own",
            ));
        }
    }
    Ok(())
}

/// A new, unattached consumer slot `per_kind` of `kind` for `ep`: its SSRC
/// is stable per (kind, slot), and a slot that had this SSRC before
/// continues its numbering, so no packet index (GCM nonce) is used twice
/// under the endpoint's key.
fn new_consumer(ep: &mut Endpoint, kind: MediaKind, per_kind: u16) -> Consumer {
    let ssrc = ep.ssrc_base.wrapping_add(
        u32::from(per_kind)
            + if kind == MediaKind::Audio {
                0x1_0000
            } else {
                0
            },
    );
    let previous = ep
        .transport
        .keys
        .as_ref()
        .and_then(|k| k.tx.rtp_index(ssrc));
    let first_seq = previous.map_or((ep.ssrc_base >> 3) as u16, |h| (h as u16).wrapping_add(1));
    // Its RTX stream: SSRC two blocks above the media ones, numbering
    // continued like the media stream's.
    let rtx = ep.rtx_payload_types.get(kind).map(|pt| {
        let rtx_ssrc = ssrc.wrapping_add(0x2_0000);
        let keys = ep.transport.keys.as_mut();
        let previous = keys.as_ref().and_then(|k| k.tx.rtp_index(rtx_ssrc));
        let first = previous.map_or((ep.ssrc_base >> 5) as u16, |h| (h as u16).wrapping_add(1));
        let mut r = ConsumerRtx::new(rtx_ssrc, pt, first);
        r.tx_stream = keys.map(|k| k.tx.add_rtp_stream(rtx_ssrc));
        Box::new(r)
    });
    Consumer {
        kind,
        slot: per_kind,
        ssrc,
        payload_type: 0,
        source: None,
        attached: false,
        rewriter: StreamRewriter::new(kind.clock_rate(), first_seq, ep.ssrc_base.rotate_left(11)),
        reports: ConsumerReports::default(),
        layer: None,
        target: None,
        max_layer: None,
        vp8: Vp8Rewriter::new(),
        vp8_switch: false,
        red_payload_type: match kind {
            MediaKind::Audio => ep.red_payload_type,
            MediaKind::Video => None,
        },
        red: RedMode::Plain,
        pinned: false,
        tx_stream: ep
            .transport
            .keys
            .as_mut()
            .map(|k| k.tx.add_rtp_stream(ssrc)),
        rtx,
    }
}

/// The bitrate a new consumer of the endpoint `ep` chooses its first layer
/// within at `now`: when its bandwidth is estimated, its current estimate
/// once allocations run (the next one re-targets it) and before that its
/// start budget ([`super::egress::Egress::start_budget`]); no limit
/// otherwise.
fn layer_budget(ep: &Endpoint, now: Instant) -> Option<u64> {
    ep.transport.egress.as_deref().map(|e| {
        if e.allocated {
            e.estimator.target_bps()
        } else {
            e.start_budget(now)
        }
    })
}

/// Attaches consumer `c` (slot `index` of the endpoint in `slot`) to the
/// producer `ssrc`, if it exists: joins its fan-out, takes its payload
/// type (or the subscriber's number for the kind, `pts` = video, audio)
/// and what to do with its RED packets, resynchronises the rewriter and
/// asks for a keyframe for video. `budget`: see [`layer_budget`].
#[allow(clippy::too_many_arguments)] // Disjoint borrows of the router.
fn attach(
    producers: &mut HashMap<u32, Producer>,
    slot: u32,
    index: u16,
    c: &mut Consumer,
    ssrc: u32,
    pts: (Option<u8>, Option<u8>),
    budget: Option<u64>,
    now: Instant,
) {
    // A subscription may name any layer: the consumer gets the track.
    let Some(key) = producers.get(&ssrc).map(|p| p.group) else {
        return;
    };
    let target = target_layer(producers, key, c.max_layer, budget, now);
    let Some(p) = producers.get_mut(&key) else {
        return;
    };
    p.fanout.push((slot, index));
    if c.source != Some(key) {
        // A pin is for a producer (a `Slots` subscriber's pins are set
        // again after its slots are applied).
        c.pinned = false;
    }
    c.source = Some(key);
    c.attached = true;
    c.target = target;
    // A track of one layer forwards at once (its decoder waits for the
    // keyframe asked for below); a simulcast track from the target
    // layer's first keyframe.
    c.layer = if p.layers.len() > 1 { None } else { Some(key) };
    c.vp8 = Vp8Rewriter::new();
    c.vp8_switch = false;
    let kind = p.kind;
    if kind == MediaKind::Video
        && let Some(t) = target.and_then(|t| producers.get_mut(&t))
    {
        t.keyframe_wanted = true;
    }
    let Some(p) = producers.get_mut(&key) else {
        return;
    };
    c.payload_type = match p.kind {
        MediaKind::Video => pts.0,
        MediaKind::Audio => pts.1,
    }
    .unwrap_or(p.payload_type);
    c.red = RedMode::new(p.payload_type, p.red_payload_type, c.red_payload_type);
    c.rewriter.set_clock_rate(p.kind.clock_rate());
    c.rewriter.resync();
}

/// The layer a consumer of track `key` should forward: of the track's
/// active layers in declaration order (ascending quality), the highest at
/// or below `max_layer` and within `budget` bps when one is given (the
/// lowest layer when none fits, or while the layers' bitrates are not
/// measured); the track's first layer when none is active.
pub(super) fn target_layer(
    producers: &HashMap<u32, Producer>,
    key: u32,
    max_layer: Option<u8>,
    budget: Option<u64>,
    now: Instant,
) -> Option<u32> {
    let mut active = [(0u64, 0usize, 0u32); 16];
    let n = active_layers(producers, key, now, &mut active);
    if n == 0 {
        return producers.contains_key(&key).then_some(key);
    }
    let top = n - 1;
    let mut at = max_layer.map_or(top, |m| usize::from(m).min(top));
    if let Some(budget) = budget {
        let fits = active
            .iter()
            .take(at + 1)
            .rposition(|&(bps, _, _)| bps > 0 && bps <= budget);
        at = fits.unwrap_or(0);
    }
    active.get(at).map(|&(_, _, l)| l)
}

/// The active layers of track `key` into `out` as (cost in bps, declaration
/// index, SSRC), in declaration order (ascending quality: rids as the
/// endpoint lists them, API layers as `layer_of` lists them); returns how
/// many.
///
/// A layer's cost is its mean bitrate over the last few seconds
/// ([`LayerRate::cost_bps`]). A layer that sends less (over the last
/// second) than the active layer under it is left out: the publisher has just started it
/// (Chromium ramps its top layer up over several seconds), and it is
/// neither better nor cheaper to forward. Ordering by measured bitrate
/// instead moved a capped viewer onto a top layer that had just appeared
/// at 140 kbit/s, which then ramped up to 500 kbit/s and froze the viewer.
/// Until every active layer has a measured rate, every cost is 0.
pub(super) fn active_layers(
    producers: &HashMap<u32, Producer>,
    key: u32,
    now: Instant,
    out: &mut [(u64, usize, u32); 16],
) -> usize {
    let Some(g) = producers.get(&key) else {
        return 0;
    };
    let mut n = 0;
    let mut measured = true;
    let mut below = 0;
    for (i, &l) in g.layers.iter().enumerate() {
        let Some(p) = producers.get(&l).filter(|p| p.rate.active(now)) else {
            continue;
        };
        if p.rate.measured() && p.rate.bps < below {
            // Sends less than the layer under it: not ready (starting).
            continue;
        }
        let Some(at) = out.get_mut(n) else {
            break;
        };
        *at = (p.rate.cost_bps(), i, l);
        if p.rate.measured() {
            below = p.rate.bps;
        }
        measured &= p.rate.measured();
        n += 1;
    }
    let Some(active) = out.get_mut(..n) else {
        return 0;
    };
    if !measured {
        for a in active.iter_mut() {
            a.0 = 0;
        }
    }
    n
}

/// Reads a subscriber's report blocks about its consumers: loss and jitter
/// per consumer, the round-trip time (LSR/DLSR of the SR the consumer was
/// sent) smoothed on the endpoint.
fn read_blocks(ep: &mut Endpoint, blocks: ReportBlocks<'_>, now: Instant, stats: &mut RouterStats) {
    for b in blocks {
        let Some(c) = ep.consumers.iter_mut().find(|c| c.ssrc == b.ssrc()) else {
            continue;
        };
        stats.inc(Counter::ReportBlocksIn);
        c.reports.fraction_lost = b.fraction_lost();
        c.reports.jitter = b.jitter();
        let Some((lsr, sent_at)) = c.reports.last_sr else {
            continue;
        };
        if b.last_sr() != lsr {
            continue;
        }
        if let Some(sample) = reports::rtt(sent_at, b.delay_since_last_sr(), now) {
            ep.rtt = Some(match ep.rtt {
                Some(rtt) => (rtt * 7 + sample) / 8,
                None => sample,
            });
        }
    }
}
