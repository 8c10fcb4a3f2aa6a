//! The sender thread: every publisher's streams on one schedule.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context;
use packet_path::io::Transmit;
use sfu_core::srtp::{Profile, SrtpConfig, SrtpContext};
use sfu_core::wire::rtp::{FIXED_HEADER_LEN, RtpHeader, write_header};

use super::media::{
    self, AUDIO_CLOCK, AUDIO_PAYLOAD, AUDIO_PPS, FrameLayout, VIDEO_CLOCK, VIDEO_FPS,
};
use super::payload::{self, Marker};
use super::plan::{Plan, Sent};
use super::{Kind, PeerSetup, PeerSocket, lock, pin};

/// Longest single sleep, so a stop request is seen promptly.
const MAX_SLEEP: Duration = Duration::from_millis(10);

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
}

pub(super) fn run(cfg: Config<'_>) -> anyhow::Result<Summary> {
    pin(cfg.cpu);
    let plan = cfg.plan;
    let overhead = cfg.profile.rtp_overhead();
    let key_len = cfg.profile.key_len();
    let mut contexts: Vec<Option<SrtpContext>> = Vec::with_capacity(plan.peers.len());
    for (p, peer) in plan.peers.iter().enumerate() {
        contexts.push(if peer.publishes.is_empty() {
            None
        } else {
            let master = &cfg.setups[p].master;
            let srtp = SrtpConfig {
                max_ssrcs: 4,
                ..SrtpConfig::default()
            };
            Some(
                SrtpContext::new(cfg.profile, &master[..key_len], &master[key_len..], srtp)
                    .context("publisher SRTP key")?,
            )
        });
    }
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
        })
        .collect();
    // One datagram slot: header, the largest payload, the tag.
    let stride = FIXED_HEADER_LEN + media::VIDEO_PAYLOAD + overhead;
    let max_packets = streams
        .iter()
        .map(|s| match s.kind {
            Kind::Audio => 1,
            Kind::Video => FrameLayout::new(media::frame_bytes(s.kbps, 0) + 1).packets,
        })
        .max()
        .unwrap_or(1);
    let mut buf = vec![0u8; max_packets * stride];
    let mut heap: BinaryHeap<Reverse<(u64, usize)>> = streams
        .iter()
        .map(|s| Reverse((s.cadence.due(0), s.index)))
        .collect();

    let mut sum = Summary::default();
    while let Some(&Reverse((due, i))) = heap.peek() {
        if cfg.stop.load(Relaxed) || due >= cfg.end_ns {
            break;
        }
        let now = cfg.origin.elapsed().as_nanos() as u64;
        if due > now {
            std::thread::sleep(Duration::from_nanos(due - now).min(MAX_SLEEP));
            continue;
        }
        heap.pop();
        sum.late_ns_max = sum.late_ns_max.max(now - due);
        let stream = &mut streams[i];
        let ctx = contexts[stream.peer]
            .as_mut()
            .expect("only publishers have streams, and every publisher has a context");
        let (sent, bytes, failed) = send_unit(
            stream,
            ctx,
            &mut buf,
            stride,
            now,
            &cfg.sockets[stream.peer],
            &cfg.setups[stream.peer],
        )?;
        sum.packets += sent;
        sum.bytes += bytes;
        sum.send_errors += failed;
        let shared = cfg.shared;
        shared.packets.fetch_add(sent, Relaxed);
        shared.per_stream[i].fetch_add(sent, Relaxed);
        if let Some(sw) = &plan.switch
            && !sw.excluded(now)
        {
            shared.counted[i * shared.periods + sw.period_of(now)].fetch_add(sent, Relaxed);
        }
        stream.unit += 1;
        heap.push(Reverse((stream.cadence.due(stream.unit), i)));
    }
    sum.duration_s = (cfg.origin.elapsed().as_nanos() as u64).min(cfg.end_ns) as f64 / 1e9;
    Ok(sum)
}

/// Builds, protects and sends the stream's next unit (a video frame or an
/// audio packet); returns (packets sent, bytes sent, packets not sent).
fn send_unit(
    s: &mut TxStream,
    ctx: &mut SrtpContext,
    buf: &mut [u8],
    stride: usize,
    now_ns: u64,
    socket: &PeerSocket,
    setup: &PeerSetup,
) -> anyhow::Result<(u64, u64, u64)> {
    let (layout, timestamp) = match s.kind {
        Kind::Video => (
            FrameLayout::new(media::frame_bytes(s.kbps, s.unit)),
            s.ts_base
                .wrapping_add((s.unit as u32).wrapping_mul(VIDEO_CLOCK / VIDEO_FPS as u32)),
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
    let mut last_srtp_len = 0;
    for i in 0..layout.packets {
        let pkt = &mut buf[i * stride..(i + 1) * stride];
        let header = RtpHeader {
            marker: s.kind == Kind::Video && i + 1 == layout.packets,
            payload_type: s.payload_type,
            sequence_number: s.seq,
            timestamp,
            ssrc: s.ssrc,
        };
        let h = write_header(pkt, &header, &[]).context("RTP header")?;
        let len = layout.len(i);
        payload::fill(
            &mut pkt[h..h + len],
            &Marker {
                publisher: s.peer as u32,
                kind: s.kind,
                seq: s.stream_seq,
                sent_ns: now_ns,
            },
        );
        last_srtp_len = ctx.protect_rtp(pkt, h + len).context("SRTP protect")?;
        s.seq = s.seq.wrapping_add(1);
        s.stream_seq = s.stream_seq.wrapping_add(1);
    }
    let full = layout.full_packets();
    let empty = Transmit {
        dst: setup.media,
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
    if full < layout.packets {
        // The shorter last packet, as its own datagram in the same sendmmsg.
        let at = (layout.packets - 1) * stride;
        list[n] = Transmit {
            contents: &buf[at..at + last_srtp_len],
            ..empty
        };
        packets_in[n] = 1;
        bytes_in[n] = last_srtp_len as u64;
        n += 1;
    }
    let done = lock(&socket.socket).send(&list[..n]).unwrap_or(0);
    let sent: u64 = packets_in[..done].iter().sum();
    let bytes: u64 = bytes_in[..done].iter().sum();
    Ok((sent, bytes, layout.packets as u64 - sent))
}
