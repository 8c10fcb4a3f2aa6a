//! The zero-allocation guarantee of `zero_alloc_worker.rs`, with loss
//! repair and RTCP reports running in the measured phase:
//!
//! * the publisher declares an RTX stream and leaves a gap in its video
//!   every 50 packets: the worker NACKs it (piggy-backed on the packet that
//!   reveals the gap) and the publisher's RTX packet arrives after it; the
//!   worker unwraps it and forwards it to the four subscribers;
//! * the publisher sends a sender report every 5,000 packets: the worker
//!   translates it per consumer;
//! * the subscribers negotiated RTX, and two of the four the transport-wide
//!   number (numbered copies; their resends held to a quarter of their
//!   estimate); every 32nd packet each sends a compound
//!   of a receiver report about its consumer and a generic NACK for two
//!   recent packets, one it NACKed 32 packets earlier (resent at most
//!   once per min(100 ms, 2 RTT): throttled) and one 600 packets back,
//!   older than the cache: the worker answers from its packet cache with
//!   RTX, and counts the last as not cached;
//! * the phase lasts at least 3 s, so the worker's 1 s receiver-report
//!   timer fires for the publisher;
//! * every 25th packet is padding only (a probe on the media SSRC), sent in
//!   order as a datagram of its own: the worker drops it and each consumer
//!   numbers on without it (the gaps' late RTX packets map around the
//!   dropped numbers). The subscribers check that their numbering has no
//!   gap and that no padding reached them.
//!
//! A counting `#[global_allocator]` (`common::Counting`) counts every
//! allocation of every thread; none may happen after the warm-up, which
//! runs the same traffic. This is the only test in this binary.

mod common;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{
    ALLOCATIONS, PAYLOAD, PROFILE, PT, SSRC, SUBSCRIBERS, TAG, add, context, socket_opts,
};
use packet_path::io::{BatchSocket, GRO_BUFFER_BYTES, RecvMeta, Transmit};
use packet_path::{Node, NodeConfig};
use sfu_core::router::{
    Command, Counter, DropReason, EndpointConfig, EndpointId, MediaKind, Outcome, Role, RoomId,
    RtxPayloadTypes, RtxStream, Subscription, TrackConfig,
};
use sfu_core::srtp::SrtpContext;
use sfu_core::wire::rtcp::{
    ReportBlockData, write_nack, write_receiver_report, write_sender_report,
};
use sfu_core::wire::rtp::{RtpHeader, write_header};

#[global_allocator]
static GLOBAL: common::Counting = common::Counting;

const PACKETS: u64 = 300_000;
const WARMUP: u64 = 20_000;
/// The measured phase lasts at least this long (the RR timer is 1 s).
const MIN_PHASE: Duration = Duration::from_secs(3);
/// RTP header + payload + GCM tag.
const SRTP_LEN: usize = 12 + PAYLOAD + TAG;
/// The publisher's RTX stream.
const PUB_RTX_SSRC: u32 = 0x1234_9999;
const PUB_RTX_PT: u8 = 97;
/// The subscribers' RTX payload type.
const SUB_RTX_PT: u8 = 98;
/// A gap every this many packets: packet `n` with `n % GAP_EVERY == 13`.
const GAP_EVERY: u64 = 50;
/// Padding only every this many packets: packet `n` with `n % PAD_EVERY == 7`.
const PAD_EVERY: u64 = 25;
/// Bytes of padding in a padding-only packet (its count is one byte).
const PADDING: usize = 255;
/// A publisher SR every this many packets.
const SR_EVERY: u64 = 5_000;
/// A subscriber NACKs at every output sequence number divisible by this.
const NACK_EVERY: u16 = 32;
/// And, each time, one number this far back: older than the video packet
/// cache holds (512), so the worker answers it with nothing and counts it as
/// not cached, whatever the timing.
const NOT_CACHED_AGO: u16 = 600;
const TRAIN: usize = 32;
const TRAINS_PER_SEND: usize = 2;
/// Most packets sent but not yet seen by every subscriber.
const WINDOW: u64 = 8192;
/// Most retransmissions the publisher has pending.
const MAX_PENDING: usize = 16;

fn master(seed: u8) -> Vec<u8> {
    (0..PROFILE.key_len() + PROFILE.salt_len())
        .map(|i| seed.wrapping_mul(37).wrapping_add(i as u8))
        .collect()
}

fn endpoint(id: u64, role: Role, remote: SocketAddr, seed: u8) -> Command {
    let (tracks, rtx_payload_types) = if role == Role::Publish {
        let track = TrackConfig {
            kind: MediaKind::Video,
            ssrc: SSRC,
            payload_type: PT,
            rtx: Some(RtxStream {
                ssrc: PUB_RTX_SSRC,
                payload_type: PUB_RTX_PT,
            }),
            codec: sfu_core::codec::Codec::Vp8,
            layer_of: None,
            red_payload_type: None,
            source: sfu_core::router::TrackSource::Camera,
        };
        (vec![track], RtxPayloadTypes::default())
    } else {
        let rtx = RtxPayloadTypes {
            video: Some(SUB_RTX_PT),
            audio: None,
        };
        (Vec::new(), rtx)
    };
    Command::AddEndpoint(Box::new(EndpointConfig {
        id: EndpointId(id),
        room: RoomId(1),
        role,
        profile: PROFILE,
        remote_master: master(seed),
        local_master: master(seed.wrapping_add(100)),
        tracks,
        remote: Some(remote),
        subscription: Subscription::All,
        rtcp_ssrc: None,
        red_payload_type: None,
        // Half the subscribers get numbered copies (the egress estimate's
        // send history runs on every copy, and their retransmissions are
        // held to a quarter of their estimate, which these subscribers never
        // raise: `rtx_over_budget`); the other half are answered in full.
        twcc_send_extension: (role != Role::Publish && id.is_multiple_of(2)).then_some(5),
        participant: None,
        audio_level_extension: None,
        rtx_payload_types,
    }))
}

fn is_padding(n: u64) -> bool {
    n % PAD_EVERY == 7
}

/// The media packets (not padding) among packets `from..to`.
fn media_in(from: u64, to: u64) -> u64 {
    (from..to).filter(|&n| !is_padding(n)).count() as u64
}

/// What the subscribers' thread counts.
#[derive(Default)]
struct Seen {
    /// Datagrams on a consumer's media SSRC.
    media: AtomicU64,
    /// Datagrams on a consumer's RTX SSRC.
    rtx: AtomicU64,
    /// SRTCP datagrams (the translated SRs).
    rtcp: AtomicU64,
    /// Compound RR + NACK packets sent.
    nacks: AtomicU64,
    /// Datagrams on a consumer's media SSRC too short to carry a media
    /// payload (forwarded padding).
    short: AtomicU64,
    stop: AtomicBool,
}

/// One subscriber: its socket, its consumer's SSRCs, the context its RTCP
/// is protected with, and the last output numbers it NACKed.
struct Sub {
    socket: BatchSocket,
    ssrc: u32,
    rtx_ssrc: u32,
    srtcp: SrtpContext,
    /// The first and the highest media sequence number, extended past
    /// the wrap, and the media datagrams: without gaps in the numbering,
    /// `highest - first + 1 == media`.
    first: Option<u64>,
    highest: u64,
    media: u64,
}

/// Drains the subscribers' sockets; every [`NACK_EVERY`]th media packet a
/// subscriber sends an RR + NACK compound to the worker at `node`. Returns
/// the subscribers when told to stop.
fn subscribers(mut subs: Vec<Sub>, node: SocketAddr, seen: Arc<Seen>) -> Vec<Sub> {
    let mut storage = vec![0u8; 16 * GRO_BUFFER_BYTES];
    let mut bufs: Vec<&mut [u8]> = storage.chunks_mut(GRO_BUFFER_BYTES).collect();
    let mut meta = [RecvMeta::default(); 16];
    let mut out = vec![0u8; 1500];
    while !seen.stop.load(Ordering::Relaxed) {
        let mut idle = true;
        for sub in &mut subs {
            let n = match sub.socket.recv(&mut bufs, &mut meta) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("subscriber: {e}"),
            };
            idle = false;
            let (mut media, mut rtx, mut rtcp) = (0, 0, 0);
            let mut nack_at: Option<u16> = None;
            for (m, b) in meta[..n].iter().zip(&bufs) {
                for d in m.datagrams(b) {
                    if d.len() < 12 {
                        continue;
                    }
                    if (192..=223).contains(&d[1]) {
                        rtcp += 1;
                        continue;
                    }
                    let ssrc = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
                    let seq = u16::from_be_bytes([d[2], d[3]]);
                    if ssrc == sub.ssrc {
                        media += 1;
                        sub.media += 1;
                        if d.len() < 12 + PAYLOAD {
                            seen.short.fetch_add(1, Ordering::Relaxed);
                        }
                        match sub.first {
                            None => {
                                sub.first = Some(1 << 32 | u64::from(seq));
                                sub.highest = 1 << 32 | u64::from(seq);
                            }
                            Some(_) => {
                                let d = seq.wrapping_sub(sub.highest as u16) as i16;
                                if d > 0 {
                                    sub.highest += d as u64;
                                }
                            }
                        }
                        if seq % NACK_EVERY == 0 {
                            nack_at = Some(seq);
                        }
                    } else if ssrc == sub.rtx_ssrc {
                        rtx += 1;
                    }
                }
            }
            seen.media.fetch_add(media, Ordering::Relaxed);
            seen.rtx.fetch_add(rtx, Ordering::Relaxed);
            seen.rtcp.fetch_add(rtcp, Ordering::Relaxed);
            if let Some(s) = nack_at {
                let block = ReportBlockData {
                    ssrc: sub.ssrc,
                    highest_seq: u32::from(s),
                    ..ReportBlockData::default()
                };
                let rr = write_receiver_report(&mut out, 0x5eed, &[block]).expect("room for an RR");
                let lost = [
                    s.wrapping_sub(NACK_EVERY + 3),
                    s.wrapping_sub(4),
                    s.wrapping_sub(3),
                    s.wrapping_sub(NOT_CACHED_AGO),
                ];
                let nack = write_nack(&mut out[rr..], 0x5eed, sub.ssrc, &lost).expect("room");
                let len = sub
                    .srtcp
                    .protect_rtcp(&mut out, rr + nack)
                    .expect("room for the trailer");
                let t = Transmit {
                    dst: node,
                    contents: &out[..len],
                    segment_size: None,
                };
                if sub.socket.send(&[t]).expect("loopback send") == 1 {
                    seen.nacks.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if idle {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    subs
}

/// The publisher: GSO trains with a gap every [`GAP_EVERY`] packets, the
/// gaps' RTX packets once a later packet has gone, and an SR every
/// [`SR_EVERY`] packets. Everything it writes lives in buffers allocated
/// by [`Publisher::new`].
struct Publisher {
    srtp: SrtpContext,
    trains: Vec<Vec<u8>>,
    /// A padding-only packet after each train.
    pads: Vec<Vec<u8>>,
    /// Padding-only packets sent.
    padded: u64,
    rtx: Vec<u8>,
    sr: Vec<u8>,
    dst: SocketAddr,
    pending: [u64; MAX_PENDING],
    n_pending: usize,
    rtx_seq: u16,
}

fn header(n: u64) -> RtpHeader {
    RtpHeader {
        marker: false,
        payload_type: PT,
        sequence_number: n as u16,
        timestamp: (n as u32).wrapping_mul(3000),
        ssrc: SSRC,
    }
}

fn payload(n: u64, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        *b = (i as u64 * 7 + n) as u8;
    }
}

impl Publisher {
    fn new(srtp: SrtpContext, dst: SocketAddr) -> Self {
        Self {
            srtp,
            trains: (0..TRAINS_PER_SEND)
                .map(|_| vec![0xa5u8; TRAIN * SRTP_LEN])
                .collect(),
            pads: (0..TRAINS_PER_SEND)
                .map(|_| vec![0xa5u8; 12 + PADDING + TAG])
                .collect(),
            padded: 0,
            rtx: vec![0xa5u8; MAX_PENDING * (SRTP_LEN + 2)],
            sr: vec![0xa5u8; 256],
            dst,
            pending: [0; MAX_PENDING],
            n_pending: 0,
            rtx_seq: 7,
        }
    }

    /// Sends packets `from..to`, paced on what the subscribers saw and, if
    /// `min_time` is given, spread over at least that long.
    fn send(
        &mut self,
        tx: &mut BatchSocket,
        (from, to): (u64, u64),
        seen: &Seen,
        min_time: Option<Duration>,
        deadline: Instant,
    ) {
        let start = Instant::now();
        let per_packet = min_time.map_or(Duration::ZERO, |t| t / (to - from) as u32);
        let mut next = from;
        let mut lost = 0u64;
        while next < to {
            let wait_start = Instant::now();
            loop {
                let got = seen.media.load(Ordering::Relaxed) / SUBSCRIBERS as u64;
                if next <= got + lost + self.padded + WINDOW {
                    break;
                }
                if wait_start.elapsed() > Duration::from_millis(100) {
                    lost = next - got;
                    break;
                }
                std::thread::yield_now();
            }
            let due = start + per_packet * (next - from) as u32;
            if let Some(early) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(early);
            }
            if Instant::now() > deadline {
                return;
            }
            let mut lens = [0usize; TRAINS_PER_SEND];
            let mut pad_lens = [0usize; TRAINS_PER_SEND];
            let mut srs = 0;
            for ((train, len), (pad, pad_len)) in self
                .trains
                .iter_mut()
                .zip(&mut lens)
                .zip(self.pads.iter_mut().zip(&mut pad_lens))
            {
                let mut k = 0;
                while k < TRAIN && next < to {
                    let n = next;
                    next += 1;
                    if n % SR_EVERY == 0 {
                        srs += 1;
                    }
                    if is_padding(n) {
                        // Ends the train: sent right after it, in order.
                        let h = write_header(pad, &header(n), &[]).expect("room for a header");
                        pad[0] |= 0x20;
                        pad[h..h + PADDING].fill(0);
                        pad[h + PADDING - 1] = PADDING as u8;
                        *pad_len = self
                            .srtp
                            .protect_rtp(pad, h + PADDING)
                            .expect("room for the tag");
                        self.padded += 1;
                        break;
                    }
                    if n % GAP_EVERY == 13 && self.n_pending < MAX_PENDING {
                        // Left out: sent as RTX once a later packet went.
                        self.pending[self.n_pending] = n;
                        self.n_pending += 1;
                        continue;
                    }
                    let slot = &mut train[k * SRTP_LEN..(k + 1) * SRTP_LEN];
                    let h = write_header(slot, &header(n), &[]).expect("slot holds a header");
                    payload(n, &mut slot[h..h + PAYLOAD]);
                    let len = self.srtp.protect_rtp(slot, h + PAYLOAD).expect("room");
                    assert_eq!(len, SRTP_LEN);
                    k += 1;
                }
                *len = k * SRTP_LEN;
            }
            // Each train, then its padding packet, skipping what is empty.
            let (trains, pads) = (&self.trains, &self.pads);
            let all: [Transmit<'_>; 2 * TRAINS_PER_SEND] = std::array::from_fn(|i| Transmit {
                dst: self.dst,
                contents: if i % 2 == 0 {
                    &trains[i / 2][..lens[i / 2]]
                } else {
                    &pads[i / 2][..pad_lens[i / 2]]
                },
                segment_size: (i % 2 == 0).then_some(SRTP_LEN),
            });
            let mut transmits = all;
            let mut count = 0;
            for t in all.into_iter().filter(|t| !t.contents.is_empty()) {
                transmits[count] = t;
                count += 1;
            }
            let mut done = 0;
            while done < count {
                done += tx.send(&transmits[done..count]).expect("loopback send");
            }
            self.send_rtx(tx, next);
            if srs > 0 {
                self.send_sr(tx, next);
            }
        }
    }

    /// Sends the RTX packets of the pending gaps below `next - 1` (a later
    /// packet has gone, so the worker knows they are missing).
    fn send_rtx(&mut self, tx: &mut BatchSocket, next: u64) {
        let stride = SRTP_LEN + 2;
        let mut lens = [0usize; MAX_PENDING];
        let mut ready = 0;
        let mut kept = 0;
        for i in 0..self.n_pending {
            let n = self.pending[i];
            if n + 1 >= next {
                self.pending[kept] = n;
                kept += 1;
                continue;
            }
            let slot = &mut self.rtx[ready * stride..(ready + 1) * stride];
            let rtx_header = RtpHeader {
                payload_type: PUB_RTX_PT,
                sequence_number: self.rtx_seq,
                ssrc: PUB_RTX_SSRC,
                ..header(n)
            };
            self.rtx_seq = self.rtx_seq.wrapping_add(1);
            let h = write_header(slot, &rtx_header, &[]).expect("slot holds a header");
            slot[h..h + 2].copy_from_slice(&(n as u16).to_be_bytes());
            payload(n, &mut slot[h + 2..h + 2 + PAYLOAD]);
            lens[ready] = self
                .srtp
                .protect_rtp(slot, h + 2 + PAYLOAD)
                .expect("room for the tag");
            ready += 1;
        }
        self.n_pending = kept;
        let rtx = &self.rtx;
        let transmits: [Transmit<'_>; MAX_PENDING] = std::array::from_fn(|i| Transmit {
            dst: self.dst,
            contents: &rtx[i * stride..i * stride + lens[i]],
            segment_size: None,
        });
        let mut done = 0;
        while done < ready {
            done += tx.send(&transmits[done..ready]).expect("loopback send");
        }
    }

    /// Sends a sender report about the stream up to packet `next`.
    fn send_sr(&mut self, tx: &mut BatchSocket, next: u64) {
        let ntp = (3_900_000_000u64 << 32) + next * 1_000_000;
        let n = write_sender_report(
            &mut self.sr,
            SSRC,
            ntp,
            (next as u32).wrapping_mul(3000),
            next as u32,
            (next * PAYLOAD as u64) as u32,
            &[],
        )
        .expect("room for an SR");
        let len = self.srtp.protect_rtcp(&mut self.sr, n).expect("room");
        let t = Transmit {
            dst: self.dst,
            contents: &self.sr[..len],
            segment_size: None,
        };
        tx.send(&[t]).expect("loopback send");
    }
}

/// Counters that must rise in the measured phase.
const COUNTERS: [Counter; 12] = [
    Counter::NackIn,
    Counter::NackedPackets,
    Counter::RtxSent,
    Counter::RtxThrottled,
    Counter::RtxOverBudget,
    Counter::RtxNotCached,
    Counter::RtxIn,
    Counter::NackSent,
    Counter::NackRepaired,
    Counter::SrIn,
    Counter::SrSent,
    Counter::RrSent,
];

#[test]
fn zero_alloc_worker_with_nack_rtx_and_reports() {
    let node = Node::start(NodeConfig {
        workers: 1,
        base_port: 0,
        ..NodeConfig::default()
    })
    .expect("node starts on 127.0.0.1 with an ephemeral port");
    let worker = node.workers()[0].clone();
    let media = worker.local_addr();

    let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut tx = BatchSocket::bind(lo, 8, &socket_opts()).unwrap();
    add(&worker, Command::CreateRoom(RoomId(1)));
    add(
        &worker,
        endpoint(1, Role::Publish, tx.local_addr().unwrap(), 1),
    );
    let mut subs = Vec::with_capacity(SUBSCRIBERS);
    for i in 0..SUBSCRIBERS {
        let opts = packet_path::io::SocketOptions {
            read_timeout: Some(Duration::ZERO),
            ..socket_opts()
        };
        let socket = BatchSocket::bind(lo, 16, &opts).unwrap();
        let seed = 10 + i as u8;
        let consumers = match add(
            &worker,
            endpoint(
                10 + i as u64,
                Role::Subscribe,
                socket.local_addr().unwrap(),
                seed,
            ),
        ) {
            Outcome::Consumers(c) => c,
            other => panic!("unexpected outcome {other:?}"),
        };
        assert_eq!(consumers.len(), 1, "one video consumer");
        subs.push(Sub {
            socket,
            ssrc: consumers[0].ssrc,
            rtx_ssrc: consumers[0]
                .rtx_ssrc
                .expect("the subscriber negotiated RTX"),
            srtcp: context(&master(seed)),
            first: None,
            highest: 0,
            media: 0,
        });
    }
    let seen = Arc::new(Seen::default());
    let rx_thread = {
        let seen = Arc::clone(&seen);
        std::thread::spawn(move || subscribers(subs, media, seen))
    };
    let mut publisher = Publisher::new(context(&master(1)), media);
    let subs = SUBSCRIBERS as u64;
    let (warmup_media, phase_media) = (media_in(0, WARMUP), media_in(WARMUP, WARMUP + PACKETS));

    // Warm-up: the same traffic, so every table and context has seen its
    // streams (the RTX SSRCs included) and every path has run once.
    let deadline = Instant::now() + Duration::from_secs(60);
    publisher.send(&mut tx, (0, WARMUP), &seen, None, deadline);
    let wait = |want: u64| {
        let start = Instant::now();
        while seen.media.load(Ordering::Relaxed) < want && start.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    wait(warmup_media * subs);
    std::thread::sleep(Duration::from_millis(200));
    let before = worker.stats();
    let media_before = seen.media.load(Ordering::Relaxed);
    let rtx_before = seen.rtx.load(Ordering::Relaxed);
    let rtcp_before = seen.rtcp.load(Ordering::Relaxed);
    let nacks_before = seen.nacks.load(Ordering::Relaxed);

    let allocations_before = ALLOCATIONS.load(Ordering::Relaxed);
    let phase = Instant::now();
    publisher.send(
        &mut tx,
        (WARMUP, WARMUP + PACKETS),
        &seen,
        Some(MIN_PHASE),
        deadline,
    );
    wait(media_before + phase_media * subs);
    // The last RTX answers and the RR timer's last round.
    std::thread::sleep(Duration::from_millis(100));
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - allocations_before;
    let elapsed = phase.elapsed();

    seen.stop.store(true, Ordering::Relaxed);
    let subs_after = rx_thread.join().expect("subscriber thread ends");
    let after = worker.stats();
    node.shutdown();

    let delta = |c: Counter| after.get(c) - before.get(c);
    let media_rx = seen.media.load(Ordering::Relaxed) - media_before;
    let rtx_rx = seen.rtx.load(Ordering::Relaxed) - rtx_before;
    let rtcp_rx = seen.rtcp.load(Ordering::Relaxed) - rtcp_before;
    let nacks = seen.nacks.load(Ordering::Relaxed) - nacks_before;
    let counters: Vec<String> = COUNTERS
        .iter()
        .chain(&[Counter::RtxUnanswerable, Counter::NackGaveUp])
        .map(|&c| format!("{} {}", c.name(), delta(c)))
        .collect();
    eprintln!(
        "{PACKETS} packets in {elapsed:.2?}: subscribers got {media_rx} media, {rtx_rx} RTX, \
         {rtcp_rx} SRTCP, sent {nacks} RR+NACK; worker: {}; drops {:?}; {allocations} allocations",
        counters.join(", "),
        after
            .drops
            .iter()
            .filter(|(_, n)| *n > 0)
            .collect::<Vec<_>>(),
    );
    assert_eq!(allocations, 0, "allocations during the measured phase");
    assert!(
        media_rx * 100 >= phase_media * subs * 99,
        "media {media_rx} of {}",
        phase_media * subs
    );
    // Padding was dropped, and each subscriber's numbering has no gap but
    // a datagram lost on loopback: numbered gap-free, the span of its
    // numbers is what it got; had the padding kept its numbers, the span
    // would be 4 % longer.
    assert_eq!(seen.short.load(Ordering::Relaxed), 0, "padding forwarded");
    assert!(delta(Counter::RtpIn) > 0);
    let padded = (WARMUP..WARMUP + PACKETS)
        .filter(|&n| is_padding(n))
        .count() as u64;
    let padding_drops = |s: &packet_path::WorkerStats| {
        s.drops
            .iter()
            .find(|d| d.0 == DropReason::PaddingOnly.as_str())
            .map_or(0, |d| d.1)
    };
    let dropped = padding_drops(&after) - padding_drops(&before);
    assert!(
        dropped >= padded * 99 / 100 && dropped <= padded,
        "padding dropped: {dropped} of {padded}"
    );
    for (i, sub) in subs_after.iter().enumerate() {
        let span = sub.highest - sub.first.expect("media arrived") + 1;
        eprintln!(
            "subscriber {i}: {} media datagrams, numbers span {span}",
            sub.media
        );
        assert!(span >= sub.media, "subscriber {i}: duplicates");
        assert!(
            (span - sub.media) * 100 <= span,
            "subscriber {i}: {} numbers missing of {span}",
            span - sub.media
        );
    }
    for c in COUNTERS {
        assert!(
            delta(c) > 0,
            "{} did not rise in the measured phase",
            c.name()
        );
    }
    assert!(rtx_rx > 0 && rtcp_rx > 0 && nacks > 0);
    // NACKed packets map back to the publisher's numbers: only a NACK the
    // subscribers' thread sends long after the fact (more than
    // RESTART_JUMP numbers behind, when it lags on a loaded machine) is
    // unanswerable. (One more than DROP_WINDOW numbers behind a dropped
    // padding packet no longer maps either, and counts as not cached.)
    assert!(
        delta(Counter::RtxUnanswerable) * 100 <= delta(Counter::NackedPackets),
        "unanswerable NACKs: {} of {}",
        delta(Counter::RtxUnanswerable),
        delta(Counter::NackedPackets)
    );
    // Every gap the publisher left was NACKed and repaired.
    let gaps = PACKETS / GAP_EVERY;
    assert!(delta(Counter::RtxIn) >= gaps * 99 / 100, "RTX in");
    assert!(delta(Counter::NackRepaired) >= gaps * 99 / 100, "repaired");
}
