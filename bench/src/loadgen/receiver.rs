//! A receive thread: counts, samples, decrypts and verifies what the node
//! sends to a share of the receiving peers.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context;
use packet_path::io::{GRO_BUFFER_BYTES, RecvMeta};
use sfu_core::srtp::{Profile, SrtpConfig, SrtpContext, SrtpError};
use sfu_core::wire::rtp::{self, RtpPacket};

use super::histogram::AtomicHistogram;
use super::payload;
use super::plan::{Attribution, Plan};
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
    last_seq: Option<u16>,
    /// Packets to skip before the next decrypted sample.
    until_sample: u32,
}

/// Receive-side state of one subscriber.
struct RxPeer<'a> {
    viewer: usize,
    socket: &'a PeerSocket,
    ctx: SrtpContext,
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
                max_ssrcs: capacity,
                ..SrtpConfig::default()
            },
        )
        .context("the node's SRTP key for a subscriber")?;
        let mut consumers = Vec::with_capacity(capacity);
        consumers.extend(setup.consumers.iter().map(|c| RxConsumer {
            ssrc: c.ssrc,
            last_seq: None,
            until_sample: 0,
        }));
        peers.push(RxPeer {
            viewer,
            socket: &cfg.sockets[viewer],
            ctx,
            consumers,
            counted: 0,
        });
    }
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
                        handler.handle(peer, datagram, now_ns, &mut counts);
                    }
                }
                got += n;
                if n < BATCH {
                    break;
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
            None if peer.consumers.len() < peer.consumers.capacity() => {
                // Within capacity: no reallocation.
                peer.consumers.push(RxConsumer {
                    ssrc,
                    last_seq: None,
                    until_sample: 0,
                });
                c.unannounced += 1;
                peer.consumers.len() - 1
            }
            None => {
                c.unexpected += 1;
                return;
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
                } else {
                    c.seq_gaps += u64::from(diff - 1);
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
        match self.plan.attribute(peer.viewer, &marker) {
            Attribution::Counted if self.attribute_all => {
                c.counted += 1;
                peer.counted += 1;
            }
            Attribution::Counted => {}
            Attribution::Excluded => c.excluded += 1,
            Attribution::Misrouted => c.misrouted += 1,
        }
    }
}
