//! A receive thread: counts, samples, decrypts and verifies what the node
//! sends to a share of the receiving peers; with repair on, drops a share
//! of the media (simulated downstream loss), NACKs the gaps and fills them
//! from the node's retransmissions (RTX).
//!
//! With VP8 video it reads the VP8 prefix before the marker ([`super::vp8`]);
//! with simulcast it counts packets per layer and, per consumer, the layer
//! switches, the sequence numbers skipped at a switch, switches that did not
//! start on a keyframe and PictureID discontinuities. In a last-N run it
//! records, per viewer, when each talker's audio and video first arrived
//! after the talker started ([`SwitchSamples`]), and it reads the node's
//! SRTCP to its `both` peers for keyframe requests (PLI, FIR).
//!
//! With `--rejoin`, it takes in a subscriber's new endpoint when its link's
//! generation changes ([`super::rejoin`]): the node's new key, new
//! consumers, the new node's address; datagrams still coming from the node
//! it left are `stale` and not counted, and the first media packet after
//! the rejoin is recorded as the subscriber's media being back.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context;
use packet_path::io::{GRO_BUFFER_BYTES, RecvMeta, Transmit};
use sfu_core::srtp::{Profile, SrtpConfig, SrtpContext, SrtpError};
use sfu_core::wire::rtcp;
use sfu_core::wire::rtp::{self, RtpPacket};

use super::histogram::AtomicHistogram;
use super::payload::{self, Marker};
use super::plan::{Attribution, Plan, Receives, TalkPlan};
use super::rejoin::{Joined, Links, Seen};
use super::repair::{Gaps, NACK_BATCH, NACK_INTERVAL_NS, SimLoss, unwrap_rtx};
use super::sender::KeyframeRequests;
use super::{Kind, PeerSetup, PeerSocket, lock, pin, vp8};

/// Buffers per `recvmmsg`.
const BATCH: usize = 16;
/// Most `recvmmsg` calls on one socket before moving to the next.
const MAX_CALLS_PER_VISIT: usize = 4;
/// Consumer SSRCs a subscriber may receive beyond those the API announced.
const SPARE_SSRCS: usize = 16;
/// A talker whose media reached a viewer less than this before the
/// talker's period started was already in one of its slots: its first
/// packet after the start is no switch.
const SHOWN_WINDOW_NS: u64 = 200_000_000;

pub(super) struct Config<'a> {
    pub plan: &'a Plan,
    pub sockets: &'a [PeerSocket],
    pub setups: &'a [PeerSetup],
    /// The receiving peers this thread owns.
    pub peers: Vec<usize>,
    pub profile: Profile,
    pub origin: Instant,
    /// Decrypt one packet in this many per consumer (1 = all).
    pub sample_every: u32,
    /// Count packets by their decrypted marker (seed meeting) rather than
    /// by their clear header.
    pub attribute_all: bool,
    /// The sockets block in recv (one socket, not shared with a sender).
    pub blocking: bool,
    /// Sleep after a sweep that found nothing (non-blocking sockets).
    pub idle_sleep: Duration,
    /// Shortest time between the starts of two sweeps (non-blocking sockets).
    pub sweep_interval: Duration,
    pub cpu: Option<usize>,
    pub stop: &'a AtomicBool,
    pub shared: &'a Shared,
    /// Simulated downstream loss, percent of the RTP packets received.
    pub loss_percent: f64,
    /// Seed of this thread's loss generator.
    pub loss_seed: u64,
    /// NACK gaps and take RTX.
    pub nack: bool,
    /// Shortest time between two NACKs of one number, ns.
    pub nack_retry_ns: u64,
    /// Where keyframe requests to `both` peers go.
    pub requests: &'a KeyframeRequests,
    /// The peers' current endpoints (`--rejoin`).
    pub links: Option<&'a Links>,
}

/// Counters a receive thread publishes after every sweep.
#[derive(Debug, Default)]
pub(super) struct Shared {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    pub counted: AtomicU64,
    pub rtcp: AtomicU64,
    pub unexpected: AtomicU64,
    pub verified: AtomicU64,
    pub srtp_errors: AtomicU64,
    pub pattern_errors: AtomicU64,
    pub misrouted: AtomicU64,
    pub excluded: AtomicU64,
    pub out_of_order: AtomicU64,
    pub seq_gaps: AtomicU64,
    pub unannounced: AtomicU64,
    pub recv_errors: AtomicU64,
    pub sim_lost: AtomicU64,
    pub rtx: AtomicU64,
    pub rtx_repaired: AtomicU64,
    pub rtx_duplicates: AtomicU64,
    pub late_filled: AtomicU64,
    pub nacks: AtomicU64,
    pub nacked_seqs: AtomicU64,
    pub nack_gave_up: AtomicU64,
    pub untracked: AtomicU64,
    pub span: AtomicU64,
    pub layer_packets: [AtomicU64; 3],
    pub layer_switches: AtomicU64,
    pub switch_seq_gaps: AtomicU64,
    pub switch_not_keyframe: AtomicU64,
    pub picture_id_jumps: AtomicU64,
    pub keyframes: AtomicU64,
    pub self_received: AtomicU64,
    pub rtcp_errors: AtomicU64,
    /// Span steps of span-counted consumers of subscribers that rejoined
    /// (their whole run).
    pub rejoined_span: AtomicU64,
    /// Span steps of every consumer of subscribers that rejoined.
    pub rejoined_all_span: AtomicU64,
    /// Datagrams from a node the subscriber left.
    pub stale: AtomicU64,
    /// Consumers seen after a rejoin beyond those its answer listed.
    pub late_consumers: AtomicU64,
    pub latency: AtomicHistogram,
}

impl Shared {
    pub(super) fn load(&self, counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }
}

/// Local counters, flushed into [`Shared`] after each sweep.
#[derive(Debug, Default)]
struct Counts {
    packets: u64,
    bytes: u64,
    counted: u64,
    rtcp: u64,
    unexpected: u64,
    verified: u64,
    srtp_errors: u64,
    pattern_errors: u64,
    misrouted: u64,
    excluded: u64,
    out_of_order: u64,
    seq_gaps: u64,
    unannounced: u64,
    recv_errors: u64,
    sim_lost: u64,
    rtx: u64,
    rtx_repaired: u64,
    rtx_duplicates: u64,
    late_filled: u64,
    nacks: u64,
    nacked_seqs: u64,
    nack_gave_up: u64,
    untracked: u64,
    span: u64,
    layer_packets: [u64; 3],
    layer_switches: u64,
    switch_seq_gaps: u64,
    switch_not_keyframe: u64,
    picture_id_jumps: u64,
    keyframes: u64,
    self_received: u64,
    rtcp_errors: u64,
    rejoined_span: u64,
    rejoined_all_span: u64,
    stale: u64,
    late_consumers: u64,
}

impl Counts {
    fn flush(&mut self, s: &Shared) {
        let [l0, l1, l2] = &mut self.layer_packets;
        let pairs = [
            (l0, &s.layer_packets[0]),
            (l1, &s.layer_packets[1]),
            (l2, &s.layer_packets[2]),
            (&mut self.span, &s.span),
            (&mut self.layer_switches, &s.layer_switches),
            (&mut self.switch_seq_gaps, &s.switch_seq_gaps),
            (&mut self.switch_not_keyframe, &s.switch_not_keyframe),
            (&mut self.picture_id_jumps, &s.picture_id_jumps),
            (&mut self.keyframes, &s.keyframes),
            (&mut self.self_received, &s.self_received),
            (&mut self.rtcp_errors, &s.rtcp_errors),
            (&mut self.rejoined_span, &s.rejoined_span),
            (&mut self.rejoined_all_span, &s.rejoined_all_span),
            (&mut self.stale, &s.stale),
            (&mut self.late_consumers, &s.late_consumers),
            (&mut self.packets, &s.packets),
            (&mut self.bytes, &s.bytes),
            (&mut self.counted, &s.counted),
            (&mut self.rtcp, &s.rtcp),
            (&mut self.unexpected, &s.unexpected),
            (&mut self.verified, &s.verified),
            (&mut self.srtp_errors, &s.srtp_errors),
            (&mut self.pattern_errors, &s.pattern_errors),
            (&mut self.misrouted, &s.misrouted),
            (&mut self.excluded, &s.excluded),
            (&mut self.out_of_order, &s.out_of_order),
            (&mut self.seq_gaps, &s.seq_gaps),
            (&mut self.unannounced, &s.unannounced),
            (&mut self.recv_errors, &s.recv_errors),
            (&mut self.sim_lost, &s.sim_lost),
            (&mut self.rtx, &s.rtx),
            (&mut self.rtx_repaired, &s.rtx_repaired),
            (&mut self.rtx_duplicates, &s.rtx_duplicates),
            (&mut self.late_filled, &s.late_filled),
            (&mut self.nacks, &s.nacks),
            (&mut self.nacked_seqs, &s.nacked_seqs),
            (&mut self.nack_gave_up, &s.nack_gave_up),
            (&mut self.untracked, &s.untracked),
        ];
        for (local, shared) in pairs {
            if *local != 0 {
                shared.fetch_add(*local, Relaxed);
                *local = 0;
            }
        }
    }
}

/// One consumer of a subscriber, as seen on the wire.
#[derive(Debug)]
struct RxConsumer {
    ssrc: u32,
    /// Its kind, as the API announced it.
    kind: Option<Kind>,
    /// Its retransmissions' SSRC, when RTX was negotiated.
    rtx_ssrc: Option<u32>,
    last_seq: Option<u16>,
    /// Packets to skip before the next decrypted sample.
    until_sample: u32,
    /// Output sequence numbers missing (repair on).
    gaps: Gaps,
    /// Expected by its sequence number span (see [`Plan::span_counted`]).
    span_counted: bool,
    /// Simulcast layer of the newest packet (by marker).
    last_layer: Option<u8>,
    /// PictureID of the newest frame start.
    last_picture_id: Option<u16>,
}

impl RxConsumer {
    fn new(ssrc: u32, kind: Option<Kind>, rtx_ssrc: Option<u32>, repair: bool) -> Self {
        Self {
            ssrc,
            kind,
            rtx_ssrc,
            last_seq: None,
            until_sample: 0,
            gaps: Gaps::new(repair),
            span_counted: false,
            last_layer: None,
            last_picture_id: None,
        }
    }
}

/// One viewer's slot switches in a last-N run: when each talker's media
/// first reached it after the talker started, per kind (0 audio, 1 video).
#[derive(Debug, Default)]
pub(super) struct SwitchSamples {
    /// Latencies of the first packet, ns after the period's start.
    pub latency_ns: [Vec<u64>; 2],
    /// (viewer, talker, period) cases: the talker was not the viewer.
    pub expected: [u64; 2],
    /// Cases where the talker's media was arriving before its start.
    pub already_shown: [u64; 2],
    /// Cases where it never arrived in the period.
    pub missed: [u64; 2],
}

impl SwitchSamples {
    pub(super) fn merge(&mut self, other: Self) {
        for k in 0..2 {
            self.latency_ns[k].extend_from_slice(&other.latency_ns[k]);
            self.expected[k] += other.expected[k];
            self.already_shown[k] += other.already_shown[k];
            self.missed[k] += other.missed[k];
        }
    }
}

/// A last-N viewer's talker bookkeeping, sized at start.
#[derive(Debug)]
struct TalkState {
    /// Per publisher and kind: last receive time, ns since the origin
    /// (0: never).
    last_rx: Vec<[u64; 2]>,
    /// Per (period, talker index): bit 0 audio seen, bit 1 video seen.
    seen: Vec<u8>,
    samples: SwitchSamples,
}

impl TalkState {
    fn new(talk: &TalkPlan) -> Self {
        let cases = talk.periods() * talk.talkers;
        Self {
            last_rx: vec![[0; 2]; talk.participants],
            seen: vec![0; cases],
            samples: SwitchSamples {
                latency_ns: [Vec::with_capacity(cases), Vec::with_capacity(cases)],
                ..SwitchSamples::default()
            },
        }
    }

    /// A counted packet from `m.publisher` reached `viewer` at `now_ns`.
    fn on_packet(&mut self, talk: &TalkPlan, m: &Marker, now_ns: u64) {
        let p = m.publisher as usize;
        let kind = usize::from(m.kind == Kind::Video);
        let Some(last) = self.last_rx.get_mut(p) else {
            return;
        };
        let before = last[kind];
        last[kind] = now_ns.max(1);
        let k = talk.period_of(m.sent_ns);
        if !talk.measured(k) {
            return;
        }
        let Some(j) = talk.talker_index(k, p) else {
            return;
        };
        let Some(flags) = self.seen.get_mut(k * talk.talkers + j) else {
            return;
        };
        let bit = 1 << kind;
        if *flags & bit != 0 {
            return;
        }
        *flags |= bit;
        let start = talk.start_of(k);
        if before != 0 && before.saturating_add(SHOWN_WINDOW_NS) >= start {
            self.samples.already_shown[kind] += 1;
        } else {
            self.samples.latency_ns[kind].push(now_ns.saturating_sub(start));
        }
    }

    /// The samples, with the cases `viewer` expected and missed.
    fn finish(mut self, talk: &TalkPlan, viewer: usize) -> SwitchSamples {
        for k in (0..talk.periods()).filter(|&k| talk.measured(k)) {
            for j in 0..talk.talkers {
                if talk.talker(k, j).is_none_or(|t| t == viewer) {
                    continue;
                }
                let flags = self.seen.get(k * talk.talkers + j).copied().unwrap_or(0);
                for kind in 0..2 {
                    self.samples.expected[kind] += 1;
                    if flags & (1 << kind) == 0 {
                        self.samples.missed[kind] += 1;
                    }
                }
            }
        }
        self.samples
    }
}

/// What one receiving peer counted.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Viewer {
    pub viewer: usize,
    /// Packets counted against its expectation.
    pub counted: u64,
    /// Output sequence numbers spanned by its span-counted consumers.
    pub span: u64,
    /// Output sequence numbers spanned by all its consumers (every
    /// endpoint it had).
    pub all_span: u64,
    /// It took in a rejoin.
    pub rejoined: bool,
}

/// What one receive thread hands back.
#[derive(Debug, Default)]
pub(super) struct Finished {
    /// What each of its peers counted.
    pub viewers: Vec<Viewer>,
    /// Slot switches of its last-N viewers, merged.
    pub switches: SwitchSamples,
}

/// Receive-side state of one subscriber.
struct RxPeer<'a> {
    viewer: usize,
    socket: &'a PeerSocket,
    ctx: SrtpContext,
    /// Protects its NACKs (its own key), when repair is on.
    rtcp_ctx: Option<SrtpContext>,
    /// The node's address for it.
    node: std::net::SocketAddr,
    consumers: Vec<RxConsumer>,
    /// Packets counted against this subscriber's expectation.
    counted: u64,
    /// Output sequence numbers spanned by its span-counted consumers.
    span: u64,
    /// Reads the node's SRTCP to it (its key towards the peer), when it
    /// also publishes VP8 (keyframe requests).
    rtcp_in: Option<SrtpContext>,
    /// Last-N talker bookkeeping.
    talk: Option<TalkState>,
    /// Output sequence numbers spanned by all its consumers.
    all_span: u64,
    /// The generation of its link taken in.
    seen: Seen,
    /// It took in a rejoin.
    rejoined: bool,
    /// No media packet came since the last rejoin.
    awaiting_back: bool,
    /// The address of the node it left.
    prev_node: Option<std::net::SocketAddr>,
}

/// Per-thread settings the datagram handler needs.
struct Handler<'a> {
    plan: &'a Plan,
    sample_every: u32,
    attribute_all: bool,
    latency: &'a AtomicHistogram,
    /// Video carries the VP8 prefix.
    vp8_video: bool,
    /// Video is simulcast: layers, switches and PictureIDs are tracked.
    simulcast: bool,
    requests: &'a KeyframeRequests,
    links: Option<&'a Links>,
}

/// SSRC of a subscriber's RTCP (its NACKs): "LG" and its peer index.
fn rtcp_ssrc(viewer: usize) -> u32 {
    0x4c47_0000 | (viewer as u32 & 0xffff)
}

/// Runs until `stop` is set, then returns what each of its peers counted.
pub(super) fn run(cfg: Config<'_>) -> anyhow::Result<Finished> {
    pin(cfg.cpu);
    let key_len = cfg.profile.key_len();
    let mut peers = Vec::with_capacity(cfg.peers.len());
    for &viewer in &cfg.peers {
        let setup = &cfg.setups[viewer];
        let capacity = setup.consumers.len() + SPARE_SSRCS;
        let ctx = SrtpContext::new(
            cfg.profile,
            &setup.node_master[..key_len],
            &setup.node_master[key_len..],
            SrtpConfig {
                // Media and RTX streams.
                max_ssrcs: 2 * capacity,
                ..SrtpConfig::default()
            },
        )
        .context("the node's SRTP key for a subscriber")?;
        let rtcp_ctx = if cfg.nack {
            Some(
                SrtpContext::new(
                    cfg.profile,
                    &setup.master[..key_len],
                    &setup.master[key_len..],
                    SrtpConfig::default(),
                )
                .context("a subscriber's own SRTP key")?,
            )
        } else {
            None
        };
        let mut consumers = Vec::with_capacity(capacity);
        consumers.extend(setup.consumers.iter().map(|c| RxConsumer {
            span_counted: cfg.plan.span_counted(viewer, c.kind),
            ..RxConsumer::new(c.ssrc, Some(c.kind), c.rtx_ssrc, cfg.nack)
        }));
        let publishes_vp8 = cfg.plan.peers[viewer]
            .publishes
            .iter()
            .any(|&s| cfg.plan.streams[s].vp8);
        let rtcp_in = if publishes_vp8 {
            Some(
                SrtpContext::new(
                    cfg.profile,
                    &setup.node_master[..key_len],
                    &setup.node_master[key_len..],
                    SrtpConfig::default(),
                )
                .context("the node's SRTCP key for a peer")?,
            )
        } else {
            None
        };
        let talk = match (&cfg.plan.talk, &cfg.plan.peers[viewer].receives) {
            (Some(t), Receives::Slots { .. }) => Some(TalkState::new(t)),
            _ => None,
        };
        peers.push(RxPeer {
            viewer,
            socket: &cfg.sockets[viewer],
            ctx,
            rtcp_ctx,
            node: setup.media,
            consumers,
            counted: 0,
            span: 0,
            rtcp_in,
            talk,
            all_span: 0,
            seen: Seen::default(),
            rejoined: false,
            awaiting_back: false,
            prev_node: None,
        });
    }
    let mut loss = SimLoss::new(cfg.loss_percent, cfg.loss_seed);
    let mut nack_buf = vec![0u8; 1500];
    let mut next_nack_ns = 0u64;
    let handler = Handler {
        plan: cfg.plan,
        sample_every: cfg.sample_every.max(1),
        attribute_all: cfg.attribute_all,
        latency: &cfg.shared.latency,
        vp8_video: cfg.plan.streams.iter().any(|s| s.vp8),
        simulcast: cfg.plan.streams.iter().any(|s| s.simulcast),
        requests: cfg.requests,
        links: cfg.links,
    };
    let mut storage = vec![0u8; BATCH * GRO_BUFFER_BYTES];
    let mut chunks = storage.chunks_mut(GRO_BUFFER_BYTES);
    let mut bufs: [&mut [u8]; BATCH] =
        std::array::from_fn(|_| chunks.next().expect("storage holds exactly BATCH buffers"));
    let mut meta = [RecvMeta::default(); BATCH];
    let mut counts = Counts::default();
    loop {
        // Checked before the sweep, so the sweep after the stop request
        // still drains what arrived.
        let stopping = cfg.stop.load(Relaxed);
        let sweep_start = Instant::now();
        let mut got = 0;
        for peer in &mut peers {
            if let Some(joined) = peer.seen.changed(cfg.links, peer.viewer) {
                take_in(&cfg, peer, &joined, &mut counts)?;
            }
            for _ in 0..MAX_CALLS_PER_VISIT {
                let n = match lock(&peer.socket.socket).recv(&mut bufs, &mut meta) {
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock
                                | io::ErrorKind::TimedOut
                                | io::ErrorKind::Interrupted
                        ) =>
                    {
                        break;
                    }
                    Err(_) => {
                        counts.recv_errors += 1;
                        break;
                    }
                };
                let now_ns = cfg.origin.elapsed().as_nanos() as u64;
                for (buf, m) in bufs.iter_mut().zip(&meta).take(n) {
                    let len = m.len.min(buf.len());
                    for datagram in buf[..len].chunks_mut(m.stride.max(1)) {
                        if let Some(loss) = loss.as_mut()
                            && is_rtp(datagram)
                            && loss.drop_next()
                        {
                            counts.sim_lost += 1;
                            continue;
                        }
                        handler.handle(peer, datagram, m.addr, now_ns, &mut counts);
                    }
                }
                got += n;
                if n < BATCH {
                    break;
                }
            }
        }
        if cfg.nack {
            let now_ns = cfg.origin.elapsed().as_nanos() as u64;
            if now_ns >= next_nack_ns {
                next_nack_ns = now_ns + NACK_INTERVAL_NS;
                for peer in &mut peers {
                    send_nacks(peer, now_ns, cfg.nack_retry_ns, &mut nack_buf, &mut counts);
                }
            }
        }
        counts.flush(cfg.shared);
        if stopping {
            break;
        }
        if !cfg.blocking {
            if got == 0 {
                std::thread::sleep(cfg.idle_sleep);
            }
            let spent = sweep_start.elapsed();
            if spent < cfg.sweep_interval {
                std::thread::sleep(cfg.sweep_interval - spent);
            }
        }
    }
    let mut done = Finished::default();
    for p in peers {
        done.viewers.push(Viewer {
            viewer: p.viewer,
            counted: p.counted,
            span: p.span,
            all_span: p.all_span,
            rejoined: p.rejoined,
        });
        if let (Some(state), Some(talk)) = (p.talk, &cfg.plan.talk) {
            done.switches.merge(state.finish(talk, p.viewer));
        }
    }
    Ok(done)
}

/// Takes in `peer`'s new endpoint: the node's new key and address, its
/// consumers (fresh numbering) and, for NACKs, a fresh context of its own
/// key. The first time, moves its counts so far to the rejoined side.
fn take_in(
    cfg: &Config<'_>,
    peer: &mut RxPeer<'_>,
    joined: &Joined,
    c: &mut Counts,
) -> anyhow::Result<()> {
    let key_len = cfg.profile.key_len();
    let capacity = joined.consumers.len() + SPARE_SSRCS;
    let node_key = |max_ssrcs| {
        SrtpContext::new(
            cfg.profile,
            &joined.node_master[..key_len],
            &joined.node_master[key_len..],
            SrtpConfig {
                max_ssrcs,
                ..SrtpConfig::default()
            },
        )
        .context("the new node's SRTP key for a subscriber")
    };
    peer.ctx = node_key(2 * capacity)?;
    if peer.rtcp_in.is_some() {
        peer.rtcp_in = Some(node_key(SrtpConfig::default().max_ssrcs)?);
    }
    if peer.rtcp_ctx.is_some() {
        let master = &cfg.setups[peer.viewer].master;
        peer.rtcp_ctx = Some(
            SrtpContext::new(
                cfg.profile,
                &master[..key_len],
                &master[key_len..],
                SrtpConfig::default(),
            )
            .context("a subscriber's own SRTP key")?,
        );
    }
    if peer.node != joined.media {
        peer.prev_node = Some(peer.node);
    }
    peer.node = joined.media;
    peer.consumers.clear();
    peer.consumers.reserve(capacity);
    peer.consumers
        .extend(joined.consumers.iter().map(|x| RxConsumer {
            span_counted: cfg.plan.span_counted(peer.viewer, x.kind),
            ..RxConsumer::new(x.ssrc, Some(x.kind), x.rtx_ssrc, cfg.nack)
        }));
    peer.awaiting_back = true;
    if !peer.rejoined {
        peer.rejoined = true;
        c.rejoined_span += peer.span;
        c.rejoined_all_span += peer.all_span;
        if let Some(links) = cfg.links {
            links.set_picked_up(peer.viewer);
        }
    }
    Ok(())
}

/// An RTP datagram (not RTCP, RFC 5761 demultiplexing).
fn is_rtp(d: &[u8]) -> bool {
    d.len() >= rtp::FIXED_HEADER_LEN && d[0] >> 6 == 2 && !(192..=223).contains(&d[1])
}

/// Sends `peer` one generic NACK per consumer with missing numbers due
/// (at most [`NACK_BATCH`] numbers each), from its socket to the node.
fn send_nacks(peer: &mut RxPeer<'_>, now_ns: u64, retry_ns: u64, buf: &mut [u8], c: &mut Counts) {
    let Some(ctx) = peer.rtcp_ctx.as_mut() else {
        return;
    };
    let sender = rtcp_ssrc(peer.viewer);
    let mut lost = [0u16; NACK_BATCH];
    for consumer in &mut peer.consumers {
        if consumer.gaps.is_empty() {
            continue;
        }
        let newest = consumer.last_seq.unwrap_or(0);
        let got = consumer.gaps.collect(now_ns, newest, retry_ns, &mut lost);
        c.nack_gave_up += got.gave_up;
        if got.nack == 0 {
            continue;
        }
        let Ok(len) = rtcp::write_nack(buf, sender, consumer.ssrc, &lost[..got.nack]) else {
            continue;
        };
        let Ok(len) = ctx.protect_rtcp(buf, len) else {
            continue;
        };
        let sent = lock(&peer.socket.socket)
            .send(&[Transmit {
                dst: peer.node,
                contents: &buf[..len],
                segment_size: None,
            }])
            .unwrap_or(0);
        if sent == 1 {
            c.nacks += 1;
            c.nacked_seqs += got.nack as u64;
        }
    }
}

impl Handler<'_> {
    /// One datagram the node sent to `peer` from `from`. Never panics on
    /// its content.
    fn handle(
        &self,
        peer: &mut RxPeer<'_>,
        d: &mut [u8],
        from: std::net::SocketAddr,
        now_ns: u64,
        c: &mut Counts,
    ) {
        c.packets += 1;
        c.bytes += d.len() as u64;
        if peer.prev_node == Some(from) && from != peer.node {
            // From the node this subscriber left (it was not dead).
            c.stale += 1;
            return;
        }
        if d.len() < rtp::FIXED_HEADER_LEN || d[0] >> 6 != 2 {
            c.unexpected += 1;
            return;
        }
        // RTCP shares the port (RFC 5761): packet types 192..=223.
        if (192..=223).contains(&d[1]) {
            c.rtcp += 1;
            if let Some(ctx) = peer.rtcp_in.as_mut() {
                match ctx.unprotect_rtcp(d) {
                    Ok(n) => {
                        self.requests
                            .read(self.plan, peer.viewer, d.get(..n).unwrap_or_default())
                    }
                    Err(_) => c.rtcp_errors += 1,
                }
            }
            return;
        }
        if rtp::header_len(d).is_err() {
            c.unexpected += 1;
            return;
        }
        let ssrc = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
        let seq = u16::from_be_bytes([d[2], d[3]]);
        let at = match peer.consumers.iter().position(|x| x.ssrc == ssrc) {
            Some(at) => at,
            None => {
                if let Some(at) = peer.consumers.iter().position(|x| x.rtx_ssrc == Some(ssrc)) {
                    self.handle_rtx(peer, at, d, c);
                    return;
                }
                if peer.consumers.len() < peer.consumers.capacity() {
                    // Within capacity: no reallocation of the list.
                    let repair = peer.rtcp_ctx.is_some();
                    peer.consumers
                        .push(RxConsumer::new(ssrc, None, None, repair));
                    if peer.rejoined {
                        // A publisher that rejoined after this subscriber.
                        c.late_consumers += 1;
                    } else {
                        c.unannounced += 1;
                    }
                    peer.consumers.len() - 1
                } else {
                    c.unexpected += 1;
                    return;
                }
            }
        };
        if peer.awaiting_back {
            peer.awaiting_back = false;
            if let Some(links) = self.links {
                links.back(peer.viewer, now_ns);
            }
        }
        let consumer = &mut peer.consumers[at];
        // Forward step from the newest number seen (1 = in order, 1 for the
        // first packet too); `None` for a duplicate or an older packet.
        let step = match consumer.last_seq {
            None => {
                consumer.last_seq = Some(seq);
                Some(1)
            }
            Some(last) => {
                let diff = seq.wrapping_sub(last);
                if diff == 0 || diff >= 0x8000 {
                    // A duplicate, or older than the newest seen.
                    c.out_of_order += 1;
                    if consumer.gaps.fill(seq) {
                        c.late_filled += 1;
                    }
                    None
                } else {
                    c.seq_gaps += u64::from(diff - 1);
                    c.untracked += consumer.gaps.open(last, seq, now_ns);
                    consumer.last_seq = Some(seq);
                    Some(diff)
                }
            }
        };
        if let Some(step) = step {
            let step = u64::from(step);
            peer.all_span += step;
            if peer.rejoined {
                c.rejoined_all_span += step;
            }
            if consumer.span_counted {
                c.span += step;
                peer.span += step;
                if peer.rejoined {
                    c.rejoined_span += step;
                }
            }
        }
        let vp8 = self.vp8_video && consumer.kind == Some(Kind::Video);
        let decrypt = consumer.until_sample == 0;
        consumer.until_sample = if decrypt {
            self.sample_every - 1
        } else {
            consumer.until_sample - 1
        };
        if !self.attribute_all {
            c.counted += 1;
            peer.counted += 1;
        }
        if !decrypt {
            return;
        }
        c.verified += 1;
        let len = match peer.ctx.unprotect_rtp(d) {
            Ok(len) => len,
            // Duplicates and stragglers: already counted as out of order.
            Err(SrtpError::Replayed | SrtpError::TooOld) => return,
            Err(_) => {
                c.srtp_errors += 1;
                return;
            }
        };
        let Ok(pkt) = RtpPacket::new_checked(&d[..len]) else {
            c.pattern_errors += 1;
            return;
        };
        let mut body = pkt.payload();
        let mut prefix = None;
        if vp8 {
            let Some(p) = vp8::parse(body) else {
                c.pattern_errors += 1;
                return;
            };
            body = body.get(p.len..).unwrap_or_default();
            prefix = Some(p);
            c.keyframes += u64::from(p.keyframe);
        }
        let marker = match payload::check(body) {
            Ok(m) => m,
            Err(_) => {
                c.pattern_errors += 1;
                return;
            }
        };
        if self.simulcast
            && let (Some(prefix), Some(step)) = (prefix, step)
        {
            track_layers(&mut peer.consumers[at], &marker, prefix, step, c);
        }
        self.latency.record(now_ns.saturating_sub(marker.sent_ns));
        self.attribute(peer, &marker, now_ns, c);
    }

    /// Counts a decrypted, checked packet by its marker (seed meeting,
    /// last-N) and feeds a last-N viewer's talker bookkeeping.
    fn attribute(&self, peer: &mut RxPeer<'_>, marker: &Marker, now_ns: u64, c: &mut Counts) {
        if marker.publisher as usize == peer.viewer {
            c.self_received += 1;
        }
        match self.plan.attribute(peer.viewer, marker) {
            Attribution::Counted if self.attribute_all => {
                c.counted += 1;
                peer.counted += 1;
                if let (Some(state), Some(talk)) = (peer.talk.as_mut(), &self.plan.talk) {
                    state.on_packet(talk, marker, now_ns);
                }
            }
            Attribution::Counted => {}
            Attribution::Excluded => c.excluded += 1,
            Attribution::Misrouted => c.misrouted += 1,
        }
    }

    /// A retransmission of consumer `at`: decrypted, unwrapped and checked
    /// always; counted if it fills a gap, else a duplicate. Its latency is
    /// not recorded (it measures the repair, not the path).
    fn handle_rtx(&self, peer: &mut RxPeer<'_>, at: usize, d: &mut [u8], c: &mut Counts) {
        c.rtx += 1;
        let len = match peer.ctx.unprotect_rtp(d) {
            Ok(len) => len,
            Err(SrtpError::Replayed | SrtpError::TooOld) => {
                c.rtx_duplicates += 1;
                return;
            }
            Err(_) => {
                c.srtp_errors += 1;
                return;
            }
        };
        let Ok(packet) = RtpPacket::new_checked(&d[..len]) else {
            c.pattern_errors += 1;
            return;
        };
        let Some((osn, payload)) = unwrap_rtx(packet.payload()) else {
            c.pattern_errors += 1;
            return;
        };
        let Some(consumer) = peer.consumers.get_mut(at) else {
            return;
        };
        if !consumer.gaps.fill(osn) {
            c.rtx_duplicates += 1;
            return;
        }
        c.rtx_repaired += 1;
        c.verified += 1;
        let mut payload = payload;
        if self.vp8_video && consumer.kind == Some(Kind::Video) {
            let Some(p) = vp8::parse(payload) else {
                c.pattern_errors += 1;
                return;
            };
            payload = payload.get(p.len..).unwrap_or_default();
        }
        let marker = match payload::check(payload) {
            Ok(m) => m,
            Err(_) => {
                c.pattern_errors += 1;
                return;
            }
        };
        if self.attribute_all {
            // A repair is no first arrival: its time says nothing of a switch.
            match self.plan.attribute(peer.viewer, &marker) {
                Attribution::Counted => {
                    c.counted += 1;
                    peer.counted += 1;
                }
                Attribution::Excluded => c.excluded += 1,
                Attribution::Misrouted => c.misrouted += 1,
            }
        } else {
            c.counted += 1;
            peer.counted += 1;
        }
    }
}

/// Simulcast bookkeeping of one decrypted video packet of `consumer` that
/// moved its numbering forward by `step`: per-layer count, a layer switch
/// (the marker's layer changed) with the numbers skipped at it and whether
/// it started on a keyframe, and PictureID continuity at frame starts.
fn track_layers(
    consumer: &mut RxConsumer,
    marker: &Marker,
    prefix: vp8::Prefix,
    step: u16,
    c: &mut Counts,
) {
    if marker.kind != Kind::Video {
        return;
    }
    if let Some(n) = c.layer_packets.get_mut(usize::from(marker.layer)) {
        *n += 1;
    }
    if consumer.last_layer.is_some_and(|prev| prev != marker.layer) {
        c.layer_switches += 1;
        c.switch_seq_gaps += u64::from(step.saturating_sub(1));
        if !prefix.keyframe {
            c.switch_not_keyframe += 1;
        }
    }
    consumer.last_layer = Some(marker.layer);
    if prefix.start {
        if let Some(last) = consumer.last_picture_id
            && prefix.picture_id != last.wrapping_add(1) & 0x7fff
        {
            c.picture_id_jumps += 1;
        }
        consumer.last_picture_id = Some(prefix.picture_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn marker(publisher: u32, kind: Kind, layer: u8, sent_ns: u64) -> Marker {
        Marker {
            publisher,
            kind,
            layer,
            seq: 0,
            sent_ns,
        }
    }

    /// 6 participants, 2 talkers, 1 s periods over 4 s: periods 1..=3
    /// measured, talkers 5, 4 then 3, 2 then 1, 0.
    fn talk() -> TalkPlan {
        TalkPlan {
            period_ns: 1000 * MS,
            talkers: 2,
            participants: 6,
            duration_ns: 4000 * MS,
        }
    }

    #[test]
    fn talkers_first_arrivals_become_switch_latencies() {
        let t = talk();
        let mut s = TalkState::new(&t);
        // Viewer 0. Talker 5's video arrives 400 ms into period 1, its
        // audio 150 ms in; later packets do not count again.
        s.on_packet(&t, &marker(5, Kind::Audio, 0, 1100 * MS), 1150 * MS);
        s.on_packet(&t, &marker(5, Kind::Video, 0, 1390 * MS), 1400 * MS);
        s.on_packet(&t, &marker(5, Kind::Video, 0, 1420 * MS), 1430 * MS);
        // Talker 4's video was flowing before period 1: already shown.
        s.on_packet(&t, &marker(4, Kind::Video, 0, 900 * MS), 950 * MS);
        s.on_packet(&t, &marker(4, Kind::Video, 0, 1010 * MS), 1020 * MS);
        // A packet of a non-talker, and one sent before the period, count
        // for nothing.
        s.on_packet(&t, &marker(3, Kind::Video, 0, 1500 * MS), 1510 * MS);
        s.on_packet(&t, &marker(2, Kind::Video, 0, 1990 * MS), 2005 * MS);
        // Hostile publisher index: ignored.
        s.on_packet(&t, &marker(1 << 28, Kind::Video, 0, 1500 * MS), 1510 * MS);
        // Period 3: talker 1's video; viewer 0 is the other talker.
        s.on_packet(&t, &marker(1, Kind::Video, 0, 3200 * MS), 3210 * MS);
        let got = s.finish(&t, 0);
        assert_eq!(got.latency_ns[1], vec![400 * MS, 210 * MS]);
        assert_eq!(got.latency_ns[0], vec![150 * MS]);
        assert_eq!(got.already_shown, [0, 1]);
        // Periods 1..=3 × 2 talkers, less viewer 0 itself in period 3.
        assert_eq!(got.expected, [5, 5]);
        // Audio seen of 5 only; video of 5, 4, 1.
        assert_eq!(got.missed, [4, 2]);
    }

    #[test]
    fn layer_switches_gaps_and_picture_ids() {
        let mut c = RxConsumer::new(1, Some(Kind::Video), None, false);
        let mut n = Counts::default();
        let prefix = |picture_id, start, keyframe| vp8::Prefix {
            picture_id,
            start,
            keyframe,
            len: 4,
        };
        let low = marker(0, Kind::Video, 0, 0);
        let high = marker(0, Kind::Video, 2, 0);
        track_layers(&mut c, &low, prefix(10, true, true), 1, &mut n);
        track_layers(&mut c, &low, prefix(10, false, false), 1, &mut n);
        track_layers(&mut c, &low, prefix(11, true, false), 1, &mut n);
        // A clean switch to layer 2 on a keyframe, next number, next id.
        track_layers(&mut c, &high, prefix(12, true, true), 1, &mut n);
        assert_eq!(
            (n.layer_switches, n.switch_seq_gaps, n.switch_not_keyframe),
            (1, 0, 0)
        );
        assert_eq!(n.picture_id_jumps, 0);
        // A bad switch back: two numbers skipped, no keyframe, id jump.
        track_layers(&mut c, &low, prefix(20, true, false), 3, &mut n);
        assert_eq!(
            (n.layer_switches, n.switch_seq_gaps, n.switch_not_keyframe),
            (2, 2, 1)
        );
        assert_eq!(n.picture_id_jumps, 1);
        // PictureIDs wrap at 2^15.
        track_layers(&mut c, &low, prefix(0x7fff, true, false), 1, &mut n);
        track_layers(&mut c, &low, prefix(0, true, false), 1, &mut n);
        assert_eq!(n.picture_id_jumps, 2);
        assert_eq!(n.layer_packets, [6, 0, 1]);
        // Audio and out-of-range layers are not counted per layer.
        track_layers(
            &mut c,
            &marker(0, Kind::Audio, 0, 0),
            prefix(1, true, false),
            1,
            &mut n,
        );
        assert_eq!(n.layer_packets, [6, 0, 1]);
    }
}
