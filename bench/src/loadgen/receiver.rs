//! A receive thread: counts, samples, decrypts and verifies what the node
//! sends to a share of the receiving peers; with repair on, drops a share
//! of the media (simulated downstream loss), NACKs the gaps and fills them
//! from the node's retransmissions (RTX).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context;
use packet_path::io::{GRO_BUFFER_BYTES, RecvMeta, Transmit};
use sfu_core::srtp::{Profile, SrtpConfig, SrtpContext, SrtpError};
use sfu_core::wire::rtcp;
use sfu_core::wire::rtp::{self, RtpPacket};

use super::histogram::AtomicHistogram;
use super::payload;
use super::plan::{Attribution, Plan};
use super::repair::{Gaps, NACK_BATCH, NACK_INTERVAL_NS, SimLoss, unwrap_rtx};
use super::{PeerSetup, PeerSocket, lock, pin};

/// Buffers per `recvmmsg`.
const BATCH: usize = 16;
/// Most `recvmmsg` calls on one socket before moving to the next.
const MAX_CALLS_PER_VISIT: usize = 4;
/// Consumer SSRCs a subscriber may receive beyond those the API announced.
const SPARE_SSRCS: usize = 16;

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
}

impl Counts {
    fn flush(&mut self, s: &Shared) {
        let pairs = [
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
    /// Its retransmissions' SSRC, when RTX was negotiated.
    rtx_ssrc: Option<u32>,
    last_seq: Option<u16>,
    /// Packets to skip before the next decrypted sample.
    until_sample: u32,
    /// Output sequence numbers missing (repair on).
    gaps: Gaps,
}

impl RxConsumer {
    fn new(ssrc: u32, rtx_ssrc: Option<u32>, repair: bool) -> Self {
        Self {
            ssrc,
            rtx_ssrc,
            last_seq: None,
            until_sample: 0,
            gaps: Gaps::new(repair),
        }
    }
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
}

/// Per-thread settings the datagram handler needs.
struct Handler<'a> {
    plan: &'a Plan,
    sample_every: u32,
    attribute_all: bool,
    latency: &'a AtomicHistogram,
}

/// SSRC of a subscriber's RTCP (its NACKs): "LG" and its peer index.
fn rtcp_ssrc(viewer: usize) -> u32 {
    0x4c47_0000 | (viewer as u32 & 0xffff)
}

/// Runs until `stop` is set, then returns (viewer, counted packets) for
/// each of its peers.
pub(super) fn run(cfg: Config<'_>) -> anyhow::Result<Vec<(usize, u64)>> {
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
        consumers.extend(
            setup
                .consumers
                .iter()
                .map(|c| RxConsumer::new(c.ssrc, c.rtx_ssrc, cfg.nack)),
        );
        peers.push(RxPeer {
            viewer,
            socket: &cfg.sockets[viewer],
            ctx,
            rtcp_ctx,
            node: setup.media,
            consumers,
            counted: 0,
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
                        handler.handle(peer, datagram, now_ns, &mut counts);
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
    Ok(peers.iter().map(|p| (p.viewer, p.counted)).collect())
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
    /// One datagram the node sent to `peer`. Never panics on its content.
    fn handle(&self, peer: &mut RxPeer<'_>, d: &mut [u8], now_ns: u64, c: &mut Counts) {
        c.packets += 1;
        c.bytes += d.len() as u64;
        if d.len() < rtp::FIXED_HEADER_LEN || d[0] >> 6 != 2 {
            c.unexpected += 1;
            return;
        }
        // RTCP shares the port (RFC 5761): packet types 192..=223.
        if (192..=223).contains(&d[1]) {
            c.rtcp += 1;
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
                    peer.consumers.push(RxConsumer::new(ssrc, None, repair));
                    c.unannounced += 1;
                    peer.consumers.len() - 1
                } else {
                    c.unexpected += 1;
                    return;
                }
            }
        };
        let consumer = &mut peer.consumers[at];
        match consumer.last_seq {
            None => consumer.last_seq = Some(seq),
            Some(last) => {
                let diff = seq.wrapping_sub(last);
                if diff == 0 || diff >= 0x8000 {
                    // A duplicate, or older than the newest seen.
                    c.out_of_order += 1;
                    if consumer.gaps.fill(seq) {
                        c.late_filled += 1;
                    }
                } else {
                    c.seq_gaps += u64::from(diff - 1);
                    c.untracked += consumer.gaps.open(last, seq, now_ns);
                    consumer.last_seq = Some(seq);
                }
            }
        }
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
        let marker = match payload::check(pkt.payload()) {
            Ok(m) => m,
            Err(_) => {
                c.pattern_errors += 1;
                return;
            }
        };
        self.latency.record(now_ns.saturating_sub(marker.sent_ns));
        self.attribute(peer, &marker, c);
    }

    /// Counts a decrypted, checked packet by its marker (seed meeting).
    fn attribute(&self, peer: &mut RxPeer<'_>, marker: &payload::Marker, c: &mut Counts) {
        match self.plan.attribute(peer.viewer, marker) {
            Attribution::Counted if self.attribute_all => {
                c.counted += 1;
                peer.counted += 1;
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
        let marker = match payload::check(payload) {
            Ok(m) => m,
            Err(_) => {
                c.pattern_errors += 1;
                return;
            }
        };
        if self.attribute_all {
            self.attribute(peer, &marker, c);
        } else {
            c.counted += 1;
            peer.counted += 1;
        }
    }
}
