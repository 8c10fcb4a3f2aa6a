//! The sender thread: every publisher's streams on one schedule. With
//! publisher loss on, it withholds a share of the video packets (the node
//! sees them as lost on the way in), keeps every packet in clear, and
//! answers the node's NACKs with RTX on the stream's declared RTX SSRC,
//! polling the publishers' sockets between units.
//!
//! VP8 streams ([`super::vp8`]) start with a keyframe, send one every
//! `--keyframe-secs` and at their next frame after the node asked for one
//! (PLI or FIR, [`KeyframeRequests`]): publish-only peers' requests are read
//! by this thread's socket poll, `both` peers' by the receive thread that
//! owns their socket. Last-N audio carries the RFC 6464 level of the
//! [`super::plan::TalkPlan`].
//!
//! With `--rejoin`, before each unit it compares the publisher's link
//! generation ([`super::rejoin`]) with the one it took in; after a rejoin
//! it sends to the new endpoint's media address with a fresh SRTP context
//! of the same key (the new node starts the rollover counter at 0) and
//! reads the node's RTCP with the new node's key. Sequence numbers carry
//! on.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use std::io;

use anyhow::Context;
use packet_path::io::{RecvMeta, Transmit};
use sfu_core::srtp::{Profile, SrtpConfig, SrtpContext};
use sfu_core::wire::rtcp::{RtcpIter, RtcpPacket};
use sfu_core::wire::rtp::{FIXED_HEADER_LEN, RtpHeader, write_header};

use super::media::{self, AUDIO_CLOCK, AUDIO_PAYLOAD, AUDIO_PPS, FrameLayout, VIDEO_CLOCK};
use super::payload::{self, MARKER_LEN, Marker};
use super::plan::{AUDIO_LEVEL_EXTENSION, Plan, Sent, TalkPlan};
use super::rejoin::{Links, Seen};
use super::repair::{PUBLISHER_RTX_PT, PacketRing, SimLoss, publisher_rtx_ssrc, write_rtx};
use super::vp8;
use super::{Kind, PeerSetup, PeerSocket, lock, pin};

/// Longest single sleep, so a stop request is seen promptly.
const MAX_SLEEP: Duration = Duration::from_millis(10);
/// Time between two polls of the publishers' sockets for NACKs (repair on).
const POLL_INTERVAL: Duration = Duration::from_millis(2);
/// How long NACKs are still answered after the last unit, ns.
const TAIL_NS: u64 = 300_000_000;

pub(super) struct Config<'a> {
    pub plan: &'a Plan,
    pub sockets: &'a [PeerSocket],
    pub setups: &'a [PeerSetup],
    pub profile: Profile,
    pub origin: Instant,
    pub end_ns: u64,
    pub cpu: Option<usize>,
    pub stop: &'a AtomicBool,
    pub shared: &'a Shared,
    /// Publishers answer the node's NACKs with RTX (their video tracks
    /// declared an RTX stream).
    pub repair: bool,
    /// Video packets withheld at first (node-side receive loss), percent.
    pub withhold_percent: f64,
    pub loss_seed: u64,
    /// Poll the publish-only peers' sockets for the node's RTCP (NACKs
    /// when `repair`, keyframe requests for VP8 streams).
    pub poll_publishers: bool,
    /// Time between two periodic keyframes of a VP8 stream, ns (0: only
    /// the first one and those the node asks for).
    pub keyframe_interval_ns: u64,
    /// The node's keyframe requests, per stream.
    pub requests: &'a KeyframeRequests,
    /// The peers' current endpoints (`--rejoin`).
    pub links: Option<&'a Links>,
}

/// Keyframe requests from the node (PLI, FIR) per stream: set by whoever
/// reads the publisher's socket, taken by the sender at the stream's next
/// frame.
pub(super) struct KeyframeRequests {
    wanted: Box<[AtomicBool]>,
    /// PLI and FIR entries that named one of the load generator's VP8
    /// streams.
    pub received: AtomicU64,
}

impl KeyframeRequests {
    pub(super) fn new(plan: &Plan) -> Self {
        Self {
            wanted: plan
                .streams
                .iter()
                .map(|_| AtomicBool::new(false))
                .collect(),
            received: AtomicU64::new(0),
        }
    }

    /// Reads the clear SRTCP compound packet `rtcp` the node sent to `peer`
    /// and flags the VP8 streams of `peer` it asks a keyframe of. Never
    /// panics on its content.
    pub(super) fn read(&self, plan: &Plan, peer: usize, rtcp: &[u8]) {
        let Some(publishes) = plan.peers.get(peer).map(|p| &p.publishes) else {
            return;
        };
        let flag = |ssrc: u32| {
            if let Some(&s) = publishes
                .iter()
                .find(|&&s| plan.streams[s].ssrc == ssrc && plan.streams[s].vp8)
            {
                self.received.fetch_add(1, Relaxed);
                self.wanted[s].store(true, Relaxed);
            }
        };
        for item in RtcpIter::new(rtcp) {
            match item {
                Ok(RtcpPacket::Pli(pli)) => flag(pli.media_ssrc()),
                Ok(RtcpPacket::Fir(fir)) => fir.entries().for_each(|(ssrc, _)| flag(ssrc)),
                _ => {}
            }
        }
    }

    /// Whether stream `s` was asked for a keyframe since the last call.
    fn take(&self, s: usize) -> bool {
        self.wanted
            .get(s)
            .is_some_and(|w| w.load(Relaxed) && w.swap(false, Relaxed))
    }
}

/// Counters the sender publishes as it goes.
pub(super) struct Shared {
    packets: AtomicU64,
    per_stream: Box<[AtomicU64]>,
    /// `[stream * periods + period]`: packets outside switch windows.
    counted: Box<[AtomicU64]>,
    periods: usize,
}

impl Shared {
    pub(super) fn new(plan: &Plan) -> Self {
        let periods = plan.switch.as_ref().map_or(0, |s| s.periods());
        Self {
            packets: AtomicU64::new(0),
            per_stream: plan.streams.iter().map(|_| AtomicU64::new(0)).collect(),
            counted: (0..plan.streams.len() * periods)
                .map(|_| AtomicU64::new(0))
                .collect(),
            periods,
        }
    }

    pub(super) fn packets(&self) -> u64 {
        self.packets.load(Relaxed)
    }

    /// What was sent so far, for the expected-count arithmetic.
    pub(super) fn sent(&self, plan: &Plan) -> Sent {
        Sent {
            total: self.per_stream.iter().map(|a| a.load(Relaxed)).collect(),
            counted: if self.periods == 0 {
                Vec::new()
            } else {
                (0..plan.streams.len())
                    .map(|s| {
                        self.counted[s * self.periods..(s + 1) * self.periods]
                            .iter()
                            .map(|a| a.load(Relaxed))
                            .collect()
                    })
                    .collect()
            },
        }
    }
}

/// The sender's totals.
#[derive(Debug, Default)]
pub(super) struct Summary {
    pub packets: u64,
    pub bytes: u64,
    pub send_errors: u64,
    pub late_ns_max: u64,
    pub duration_s: f64,
    /// Video packets not sent the first time.
    pub withheld: u64,
    /// NACK packets the publishers received from the node.
    pub nacks_in: u64,
    /// Sequence numbers those NACKs asked for.
    pub nacked_seqs: u64,
    /// RTX packets the publishers sent.
    pub rtx_sent: u64,
    /// NACKed numbers no longer (or never) in the publisher's ring.
    pub rtx_not_cached: u64,
    /// SRTCP from the node the publishers could not read.
    pub rtcp_errors: u64,
    /// Keyframes sent (VP8 streams).
    pub keyframes: u64,
    /// Of those, sent because the node asked.
    pub keyframes_requested: u64,
}

struct TxStream {
    index: usize,
    peer: usize,
    kind: Kind,
    ssrc: u32,
    payload_type: u8,
    cadence: media::Cadence,
    kbps: u32,
    seq: u16,
    ts_base: u32,
    unit: u64,
    stream_seq: u32,
    /// Its RTX stream and packet ring, when publishers repair.
    rtx: Option<TxRtx>,
    /// Simulcast layer (marker).
    layer: u8,
    /// VP8 framing state of a VP8 stream.
    vp8: Option<TxVp8>,
    /// Audio with the talk plan's RFC 6464 level.
    audio_level: bool,
}

/// A VP8 stream's picture numbering and keyframe schedule.
struct TxVp8 {
    picture_id: u16,
    /// When the next periodic keyframe is due (0: the first frame).
    next_key_ns: u64,
    width: u16,
    height: u16,
}

/// A publisher stream's retransmission side.
struct TxRtx {
    ssrc: u32,
    seq: u16,
    ring: PacketRing,
}

pub(super) fn run(cfg: Config<'_>) -> anyhow::Result<Summary> {
    pin(cfg.cpu);
    let plan = cfg.plan;
    let overhead = cfg.profile.rtp_overhead();
    let key_len = cfg.profile.key_len();
    let publisher_ctx = |p: usize| {
        let master = &cfg.setups[p].master;
        let srtp = SrtpConfig {
            max_ssrcs: 4,
            ..SrtpConfig::default()
        };
        SrtpContext::new(cfg.profile, &master[..key_len], &master[key_len..], srtp)
            .context("publisher SRTP key")
    };
    let mut contexts: Vec<Option<SrtpContext>> = Vec::with_capacity(plan.peers.len());
    for (p, peer) in plan.peers.iter().enumerate() {
        contexts.push(if peer.publishes.is_empty() {
            None
        } else {
            Some(publisher_ctx(p)?)
        });
    }
    // Where each peer sends, and the link generation taken in.
    let mut dst: Vec<std::net::SocketAddr> = cfg.setups.iter().map(|s| s.media).collect();
    let mut seen = vec![Seen::default(); plan.peers.len()];
    let mut streams: Vec<TxStream> = plan
        .streams
        .iter()
        .enumerate()
        .map(|(index, s)| TxStream {
            index,
            peer: s.peer,
            kind: s.kind,
            ssrc: s.ssrc,
            payload_type: s.payload_type,
            cadence: s.cadence,
            kbps: s.kbps,
            seq: rand::random(),
            ts_base: rand::random(),
            unit: 0,
            stream_seq: 0,
            rtx: (cfg.repair && s.kind == Kind::Video).then(|| TxRtx {
                ssrc: publisher_rtx_ssrc(s.ssrc),
                seq: rand::random(),
                ring: PacketRing::new(),
            }),
            layer: s.layer,
            vp8: (s.vp8 && s.kind == Kind::Video).then(|| TxVp8 {
                picture_id: rand::random::<u16>() & 0x7fff,
                next_key_ns: 0,
                // 320x180, 640x360, 1280x720 by layer.
                width: 320 << s.layer.min(2),
                height: 180 << s.layer.min(2),
            }),
            audio_level: s.audio_level && s.kind == Kind::Audio,
        })
        .collect();
    let mut withhold = SimLoss::new(cfg.withhold_percent, cfg.loss_seed);
    let mut nacks = if cfg.poll_publishers {
        Some(RtcpPoll::new(&cfg)?)
    } else {
        None
    };
    // One datagram slot: header, the largest payload, the tag.
    let stride = FIXED_HEADER_LEN + media::VIDEO_PAYLOAD + overhead;
    let max_packets = streams
        .iter()
        .map(|s| match s.kind {
            Kind::Audio => 1,
            Kind::Video => {
                FrameLayout::new(media::frame_bytes_at(s.kbps, s.cadence.per_second, 0) + 1).packets
            }
        })
        .max()
        .unwrap_or(1);
    let mut buf = vec![0u8; max_packets * stride];
    let mut heap: BinaryHeap<Reverse<(u64, usize)>> = streams
        .iter()
        .map(|s| Reverse((s.cadence.due(0), s.index)))
        .collect();

    let mut sum = Summary::default();
    let max_sleep = if nacks.is_some() {
        POLL_INTERVAL
    } else {
        MAX_SLEEP
    };
    while let Some(&Reverse((due, i))) = heap.peek() {
        if cfg.stop.load(Relaxed) || due >= cfg.end_ns {
            break;
        }
        let now = cfg.origin.elapsed().as_nanos() as u64;
        if let Some(poll) = nacks.as_mut() {
            poll.maybe_poll(&cfg, &mut streams, &mut contexts, &dst, now, &mut sum);
        }
        if due > now {
            std::thread::sleep(Duration::from_nanos(due - now).min(max_sleep));
            continue;
        }
        heap.pop();
        sum.late_ns_max = sum.late_ns_max.max(now - due);
        let peer = streams[i].peer;
        if let Some(joined) = seen[peer].changed(cfg.links, peer) {
            dst[peer] = joined.media;
            contexts[peer] = Some(publisher_ctx(peer)?);
            if let Some(poll) = nacks.as_mut() {
                poll.rekey(&cfg, peer, &joined.node_master)?;
            }
        }
        let stream = &mut streams[i];
        let ctx = contexts[stream.peer]
            .as_mut()
            .expect("only publishers have streams, and every publisher has a context");
        // The last unit of a stream is never withheld: no later packet
        // would reveal the gap to the node.
        let last_unit = stream.cadence.due(stream.unit + 1) >= cfg.end_ns;
        let withhold = withhold.as_mut().filter(|_| !last_unit);
        let keyframe = match stream.vp8.as_mut() {
            Some(v) => {
                let asked = cfg.requests.take(i);
                let due = now >= v.next_key_ns;
                if due || asked {
                    sum.keyframes += 1;
                    sum.keyframes_requested += u64::from(asked && !due);
                    v.next_key_ns = match cfg.keyframe_interval_ns {
                        0 => u64::MAX,
                        n => now.saturating_add(n),
                    };
                }
                due || asked
            }
            None => false,
        };
        let level = match (&plan.talk, stream.audio_level) {
            (Some(talk), true) => Some(TalkPlan::level_byte(
                talk.talking(stream.peer, now),
                stream.unit,
            )),
            _ => None,
        };
        let out = send_unit(
            stream,
            ctx,
            &mut buf,
            stride,
            now,
            &cfg.sockets[stream.peer],
            dst[stream.peer],
            withhold,
            Framing { keyframe, level },
        )?;
        sum.packets += out.sent;
        sum.bytes += out.bytes;
        sum.send_errors += out.failed;
        sum.withheld += out.withheld;
        // Withheld packets are part of the stream: subscribers expect them
        // (after repair).
        let logical = out.sent + out.withheld;
        let shared = cfg.shared;
        shared.packets.fetch_add(out.sent, Relaxed);
        shared.per_stream[i].fetch_add(logical, Relaxed);
        if let Some(sw) = &plan.switch
            && !sw.excluded(now)
        {
            shared.counted[i * shared.periods + sw.period_of(now)].fetch_add(logical, Relaxed);
        }
        stream.unit += 1;
        heap.push(Reverse((stream.cadence.due(stream.unit), i)));
    }
    sum.duration_s = (cfg.origin.elapsed().as_nanos() as u64).min(cfg.end_ns) as f64 / 1e9;
    if let Some(poll) = nacks.as_mut().filter(|_| cfg.repair) {
        // The node NACKs what it missed last a little after it: answer for
        // a while longer.
        let until = cfg.origin.elapsed().as_nanos() as u64 + TAIL_NS;
        loop {
            let now = cfg.origin.elapsed().as_nanos() as u64;
            if now >= until || cfg.stop.load(Relaxed) {
                break;
            }
            poll.maybe_poll(&cfg, &mut streams, &mut contexts, &dst, now, &mut sum);
            std::thread::sleep(POLL_INTERVAL);
        }
    }
    Ok(sum)
}

/// Reads the node's SRTCP on the publish-only peers' sockets: answers
/// NACKs (repair on) and flags keyframe requests.
struct RtcpPoll {
    /// The node's key towards each peer (publishers only).
    node_ctx: Vec<Option<SrtpContext>>,
    storage: Vec<u8>,
    out: Vec<u8>,
    next_ns: u64,
}

/// Datagrams per receive call on a publisher's socket.
const POLL_BATCH: usize = 8;
/// Bytes per receive buffer (no GRO on publishers' sockets).
const POLL_BUF: usize = 2048;

impl RtcpPoll {
    fn new(cfg: &Config<'_>) -> anyhow::Result<Self> {
        let key_len = cfg.profile.key_len();
        let mut node_ctx = Vec::with_capacity(cfg.plan.peers.len());
        for (p, peer) in cfg.plan.peers.iter().enumerate() {
            // A peer that also receives has its socket read by a receive
            // thread.
            let receives = peer.receives != super::plan::Receives::Nothing;
            node_ctx.push(if peer.publishes.is_empty() || receives {
                None
            } else {
                let m = &cfg.setups[p].node_master;
                Some(
                    SrtpContext::new(
                        cfg.profile,
                        &m[..key_len],
                        &m[key_len..],
                        SrtpConfig::default(),
                    )
                    .context("the node's SRTP key for a publisher")?,
                )
            });
        }
        Ok(Self {
            node_ctx,
            storage: vec![0; POLL_BATCH * POLL_BUF],
            out: vec![0; POLL_BUF],
            next_ns: 0,
        })
    }

    /// Reads peer `p`'s RTCP with a new node's key (after a rejoin).
    fn rekey(&mut self, cfg: &Config<'_>, p: usize, node_master: &[u8]) -> anyhow::Result<()> {
        let key_len = cfg.profile.key_len();
        if let Some(ctx) = self.node_ctx.get_mut(p).and_then(Option::as_mut) {
            *ctx = SrtpContext::new(
                cfg.profile,
                &node_master[..key_len],
                &node_master[key_len..],
                SrtpConfig::default(),
            )
            .context("the new node's SRTP key for a publisher")?;
        }
        Ok(())
    }

    /// Polls every publisher's socket if [`POLL_INTERVAL`] has passed.
    fn maybe_poll(
        &mut self,
        cfg: &Config<'_>,
        streams: &mut [TxStream],
        contexts: &mut [Option<SrtpContext>],
        dst: &[std::net::SocketAddr],
        now: u64,
        sum: &mut Summary,
    ) {
        if now < self.next_ns {
            return;
        }
        self.next_ns = now + POLL_INTERVAL.as_nanos() as u64;
        let mut meta = [RecvMeta::default(); POLL_BATCH];
        for (p, (node_ctx, ctx)) in self
            .node_ctx
            .iter_mut()
            .zip(contexts.iter_mut())
            .enumerate()
        {
            let (Some(node_ctx), Some(ctx)) = (node_ctx.as_mut(), ctx.as_mut()) else {
                continue;
            };
            loop {
                let mut chunks = self.storage.chunks_mut(POLL_BUF);
                let mut bufs: [&mut [u8]; POLL_BATCH] = std::array::from_fn(|_| {
                    chunks
                        .next()
                        .expect("storage holds exactly POLL_BATCH buffers")
                });
                let n = match lock(&cfg.sockets[p].socket).recv(&mut bufs, &mut meta) {
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
                    Err(_) => break,
                };
                for (buf, m) in bufs.iter_mut().zip(&meta).take(n) {
                    let len = m.len.min(buf.len());
                    let Ok(clear) = node_ctx.unprotect_rtcp(&mut buf[..len]) else {
                        sum.rtcp_errors += 1;
                        continue;
                    };
                    cfg.requests.read(cfg.plan, p, &buf[..clear]);
                    if !cfg.repair {
                        continue;
                    }
                    for item in RtcpIter::new(&buf[..clear]) {
                        let Ok(RtcpPacket::Nack(nack)) = item else {
                            continue;
                        };
                        sum.nacks_in += 1;
                        let Some(stream) = streams
                            .iter_mut()
                            .find(|s| s.peer == p && s.ssrc == nack.media_ssrc())
                        else {
                            continue;
                        };
                        for seq in nack.lost() {
                            sum.nacked_seqs += 1;
                            resend(stream, seq, ctx, &mut self.out, cfg, dst[p], sum);
                        }
                    }
                }
                if n < POLL_BATCH {
                    break;
                }
            }
        }
    }
}

/// Sends the RTX packet of `stream`'s packet `seq`, if it is still kept.
fn resend(
    stream: &mut TxStream,
    seq: u16,
    ctx: &mut SrtpContext,
    out: &mut [u8],
    cfg: &Config<'_>,
    dst: std::net::SocketAddr,
    sum: &mut Summary,
) {
    let Some(rtx) = stream.rtx.as_mut() else {
        sum.rtx_not_cached += 1;
        return;
    };
    let Some(len) = rtx
        .ring
        .get(seq)
        .and_then(|original| write_rtx(original, out, rtx.ssrc, PUBLISHER_RTX_PT, rtx.seq))
    else {
        sum.rtx_not_cached += 1;
        return;
    };
    rtx.seq = rtx.seq.wrapping_add(1);
    let Ok(n) = ctx.protect_rtp(out, len) else {
        return;
    };
    let sent = lock(&cfg.sockets[stream.peer].socket)
        .send(&[Transmit {
            dst,
            contents: &out[..n],
            segment_size: None,
        }])
        .unwrap_or(0);
    if sent == 1 {
        sum.rtx_sent += 1;
        sum.bytes += n as u64;
    } else {
        sum.send_errors += 1;
    }
}

/// What [`send_unit`] did.
struct UnitSent {
    sent: u64,
    bytes: u64,
    failed: u64,
    withheld: u64,
}

/// How a unit is framed beyond the marker and pattern.
#[derive(Debug, Clone, Copy)]
struct Framing {
    /// A VP8 stream's frame is a keyframe.
    keyframe: bool,
    /// The RFC 6464 byte of an audio packet, if it carries one.
    level: Option<u8>,
}

/// Builds, protects and sends the stream's next unit (a video frame or an
/// audio packet). With `withhold`, each video packet may be kept back (in
/// the stream's ring, like every packet) instead of sent. A VP8 stream's
/// packets start with the VP8 prefix (the marker after it), and its
/// PictureID advances by one per frame.
#[allow(clippy::too_many_arguments)]
fn send_unit(
    s: &mut TxStream,
    ctx: &mut SrtpContext,
    buf: &mut [u8],
    stride: usize,
    now_ns: u64,
    socket: &PeerSocket,
    dst: std::net::SocketAddr,
    mut withhold: Option<&mut SimLoss>,
    framing: Framing,
) -> anyhow::Result<UnitSent> {
    let (layout, timestamp) = match s.kind {
        Kind::Video => (
            FrameLayout::new(media::frame_bytes_at(s.kbps, s.cadence.per_second, s.unit)),
            s.ts_base.wrapping_add((s.unit as u32).wrapping_mul(
                VIDEO_CLOCK / s.cadence.per_second.clamp(1, u64::from(VIDEO_CLOCK)) as u32,
            )),
        ),
        Kind::Audio => (
            FrameLayout {
                packets: 1,
                last_len: AUDIO_PAYLOAD,
            },
            s.ts_base
                .wrapping_add((s.unit as u32).wrapping_mul(AUDIO_CLOCK / AUDIO_PPS as u32)),
        ),
    };
    // Kept packets are written contiguously: full-size ones from the
    // start (one GSO train), a shorter last one right after them.
    let mut full = 0;
    let mut short: Option<usize> = None;
    let mut withheld = 0;
    for i in 0..layout.packets {
        let pkt = &mut buf[full * stride..(full + 1) * stride];
        let header = RtpHeader {
            marker: s.kind == Kind::Video && i + 1 == layout.packets,
            payload_type: s.payload_type,
            sequence_number: s.seq,
            timestamp,
            ssrc: s.ssrc,
        };
        let level = framing.level.map(|b| [b]);
        let extensions: &[(u8, &[u8])] = match &level {
            Some(b) => &[(AUDIO_LEVEL_EXTENSION, b)],
            None => &[],
        };
        let h = write_header(pkt, &header, extensions).context("RTP header")?;
        let mut len = layout.len(i);
        let mut at = h;
        if let Some(v) = &s.vp8 {
            let start = i == 0;
            // A short last packet still holds the prefix and the marker.
            len = len.max(vp8::prefix_len(start, framing.keyframe) + MARKER_LEN);
            at += vp8::write(
                &mut pkt[h..h + len],
                v.picture_id,
                start,
                framing.keyframe,
                v.width,
                v.height,
            )
            .context("VP8 prefix")?;
        }
        payload::fill(
            &mut pkt[at..h + len],
            &Marker {
                publisher: s.peer as u32,
                kind: s.kind,
                layer: s.layer,
                seq: s.stream_seq,
                sent_ns: now_ns,
            },
        );
        if let Some(rtx) = s.rtx.as_mut() {
            rtx.ring.store(s.seq, &pkt[..h + len]);
        }
        s.seq = s.seq.wrapping_add(1);
        s.stream_seq = s.stream_seq.wrapping_add(1);
        if s.kind == Kind::Video
            && let Some(coin) = withhold.as_deref_mut()
            && coin.drop_next()
        {
            withheld += 1;
            continue;
        }
        let n = ctx.protect_rtp(pkt, h + len).context("SRTP protect")?;
        if len == media::VIDEO_PAYLOAD && s.kind == Kind::Video {
            full += 1;
        } else {
            short = Some(n);
        }
    }
    let empty = Transmit {
        dst,
        contents: &[],
        segment_size: None,
    };
    let mut list = [empty; 2];
    let mut packets_in = [0u64; 2];
    let mut bytes_in = [0u64; 2];
    let mut n = 0;
    if full > 0 {
        // Equal segments: one GSO train.
        list[n] = Transmit {
            contents: &buf[..full * stride],
            segment_size: Some(stride),
            ..empty
        };
        packets_in[n] = full as u64;
        bytes_in[n] = (full * stride) as u64;
        n += 1;
    }
    if let Some(short_len) = short {
        // The shorter last packet, as its own datagram in the same sendmmsg.
        let at = full * stride;
        list[n] = Transmit {
            contents: &buf[at..at + short_len],
            ..empty
        };
        packets_in[n] = 1;
        bytes_in[n] = short_len as u64;
        n += 1;
    }
    let done = if n == 0 {
        0
    } else {
        lock(&socket.socket).send(&list[..n]).unwrap_or(0)
    };
    let sent: u64 = packets_in[..done].iter().sum();
    let bytes: u64 = bytes_in[..done].iter().sum();
    if let Some(v) = s.vp8.as_mut() {
        v.picture_id = v.picture_id.wrapping_add(1) & 0x7fff;
    }
    Ok(UnitSent {
        sent,
        bytes,
        failed: layout.packets as u64 - withheld - sent,
        withheld,
    })
}
