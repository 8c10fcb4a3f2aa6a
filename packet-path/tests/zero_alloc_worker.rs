//! The real worker loop forwards a million SRTP packets over loopback —
//! `recvmmsg` + GRO in, decrypt once, fan out to four subscribers, encrypt,
//! GSO trains out — and no thread of the process allocates while it does.
//!
//! A counting `#[global_allocator]` counts every `alloc`/`realloc` of every
//! thread. The test thread (sender) and the receiver thread allocate all
//! they need before the measured phase; the node's worker allocated its
//! buffers at start. This is the only test in this binary, so the harness
//! is idle while it runs.

#![allow(unsafe_code)] // The counting allocator is the one unsafe item here.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use packet_path::io::{BatchSocket, GRO_BUFFER_BYTES, RecvMeta, SocketOptions, Transmit};
use packet_path::{Node, NodeConfig, WorkerHandle};
use sfu_core::router::{
    Command, EndpointConfig, EndpointId, MediaKind, Outcome, Role, RoomId, Subscription,
    TrackConfig,
};
use sfu_core::srtp::{Profile, SrtpConfig, SrtpContext};
use sfu_core::wire::rtp::{RtpHeader, RtpPacket, write_header};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const PROFILE: Profile = Profile::AeadAes128Gcm;
const PACKETS: u64 = 1_000_000;
const WARMUP: u64 = 20_000;
const SUBSCRIBERS: usize = 4;
const SSRC: u32 = 0x1234_5678;
const PT: u8 = 96;
const PAYLOAD: usize = 1000;
/// RTP header + payload + GCM tag: every datagram of a train has this size.
const SRTP_LEN: usize = 12 + PAYLOAD + 16;
const TRAIN: usize = 32;
const TRAINS_PER_SEND: usize = 2;
/// Most packets sent but not yet seen by every subscriber.
const WINDOW: u64 = 8192;

fn master(seed: u8) -> Vec<u8> {
    (0..PROFILE.key_len() + PROFILE.salt_len())
        .map(|i| seed.wrapping_mul(37).wrapping_add(i as u8))
        .collect()
}

fn context(m: &[u8]) -> SrtpContext {
    let (key, salt) = m.split_at(PROFILE.key_len());
    SrtpContext::new(PROFILE, key, salt, SrtpConfig::default()).expect("lengths match the profile")
}

fn payload_byte(i: usize) -> u8 {
    (i * 7 + 3) as u8
}

fn socket_opts() -> SocketOptions {
    SocketOptions {
        buffer_bytes: 32 << 20,
        read_timeout: Some(Duration::from_millis(100)),
        ..SocketOptions::default()
    }
}

/// What the receiver thread shares with the test thread.
struct Received {
    datagrams: AtomicU64,
    /// Receive buffers filled: datagrams / buffers is the GSO train length.
    buffers: AtomicU64,
    stop: AtomicBool,
}

/// Drains the subscribers' sockets (non-blocking, GRO) until told to stop;
/// keeps the first datagram of each to decrypt after the run.
fn receive(mut sockets: Vec<BatchSocket>, shared: Arc<Received>) -> Vec<Vec<u8>> {
    let mut storage = vec![0u8; 16 * GRO_BUFFER_BYTES];
    let mut bufs: Vec<&mut [u8]> = storage.chunks_mut(GRO_BUFFER_BYTES).collect();
    let mut meta = [RecvMeta::default(); 16];
    let mut first: Vec<Vec<u8>> = vec![Vec::with_capacity(2048); sockets.len()];
    while !shared.stop.load(Ordering::Relaxed) {
        let mut idle = true;
        for (s, first) in sockets.iter_mut().zip(&mut first) {
            match s.recv(&mut bufs, &mut meta) {
                Ok(n) => {
                    idle = false;
                    let mut count = 0;
                    for (m, b) in meta[..n].iter().zip(&bufs) {
                        count += m.segments() as u64;
                        if first.is_empty()
                            && let Some(d) = m.datagrams(b).next()
                        {
                            // Capacity 2048 was reserved: no allocation.
                            first.extend_from_slice(&d[..d.len().min(2048)]);
                        }
                    }
                    shared.datagrams.fetch_add(count, Ordering::Relaxed);
                    shared.buffers.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("receiver: {e}"),
            }
        }
        if idle {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    first
}

/// Sends packets `from..to` of the publisher's stream in GSO trains, never
/// more than `WINDOW` ahead of what the subscribers received, and stops at
/// `deadline`. Allocates nothing: `trains` holds every byte it writes.
fn send(
    tx: &mut BatchSocket,
    srtp: &mut SrtpContext,
    trains: &mut [Vec<u8>],
    dst: SocketAddr,
    range: (u64, u64),
    received: &Received,
    deadline: Instant,
) {
    let (mut next, to) = range;
    // Packets given up as lost: a loss must not stall the pacing forever.
    let mut lost = 0u64;
    while next < to {
        // Pace on the receivers: wait until they are within WINDOW, or for
        // 100 ms, after which whatever is outstanding counts as lost.
        let wait_start = Instant::now();
        loop {
            let seen = received.datagrams.load(Ordering::Relaxed) / SUBSCRIBERS as u64;
            if next <= seen + lost + WINDOW {
                break;
            }
            if wait_start.elapsed() > Duration::from_millis(100) {
                lost = next - seen;
                break;
            }
            std::thread::yield_now();
        }
        if Instant::now() > deadline {
            // Receivers stuck: stop sending and let the assertions report it.
            return;
        }
        let mut lens = [0usize; TRAINS_PER_SEND];
        for (train, len) in trains.iter_mut().zip(&mut lens) {
            let mut k = 0;
            while k < TRAIN && next < to {
                let slot = &mut train[k * SRTP_LEN..(k + 1) * SRTP_LEN];
                let header = RtpHeader {
                    marker: false,
                    payload_type: PT,
                    sequence_number: next as u16,
                    timestamp: (next as u32).wrapping_mul(3000),
                    ssrc: SSRC,
                };
                let h = write_header(slot, &header, &[]).expect("slot holds a header");
                for (i, b) in slot[h..h + PAYLOAD].iter_mut().enumerate() {
                    *b = payload_byte(i);
                }
                let n = srtp
                    .protect_rtp(slot, h + PAYLOAD)
                    .expect("slot has room for the tag");
                assert_eq!(n, SRTP_LEN);
                k += 1;
                next += 1;
            }
            *len = k * SRTP_LEN;
        }
        let transmits: [Transmit<'_>; TRAINS_PER_SEND] = std::array::from_fn(|i| Transmit {
            dst,
            contents: &trains[i][..lens[i]],
            segment_size: Some(SRTP_LEN),
        });
        let used = lens.iter().filter(|&&l| l > 0).count();
        let mut done = 0;
        while done < used {
            done += tx.send(&transmits[done..used]).expect("loopback send");
        }
    }
}

fn add(worker: &WorkerHandle, cmd: Command) -> Outcome {
    worker.request(cmd).expect("the router accepts the command")
}

fn endpoint(id: u64, role: Role, remote: SocketAddr, seed: u8) -> Command {
    let tracks = if role == Role::Publish {
        vec![TrackConfig {
            kind: MediaKind::Video,
            ssrc: SSRC,
            payload_type: PT,
        }]
    } else {
        Vec::new()
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
    }))
}

/// Waits until the receivers saw `want` datagrams, or `limit` passed.
fn wait_for(received: &Received, want: u64, limit: Duration) {
    let start = Instant::now();
    while received.datagrams.load(Ordering::Relaxed) < want && start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn zero_alloc_worker_forwards_a_million_packets() {
    let started = Instant::now();
    let node = Node::start(NodeConfig {
        workers: 1,
        base_port: 0,
        ..NodeConfig::default()
    })
    .expect("node starts on 127.0.0.1 with an ephemeral port");
    let worker = node.workers()[0].clone();
    let media = worker.local_addr();
    assert_ne!(media.port(), 0);

    let lo: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut tx = BatchSocket::bind(lo, 8, &socket_opts()).unwrap();
    let subscribers: Vec<BatchSocket> = (0..SUBSCRIBERS)
        .map(|_| {
            let opts = SocketOptions {
                read_timeout: Some(Duration::ZERO),
                ..socket_opts()
            };
            BatchSocket::bind(lo, 16, &opts).unwrap()
        })
        .collect();
    let sub_addrs: Vec<SocketAddr> = subscribers
        .iter()
        .map(|s| s.local_addr().unwrap())
        .collect();

    add(&worker, Command::CreateRoom(RoomId(1)));
    add(
        &worker,
        endpoint(1, Role::Publish, tx.local_addr().unwrap(), 1),
    );
    for (i, a) in sub_addrs.iter().enumerate() {
        match add(
            &worker,
            endpoint(10 + i as u64, Role::Subscribe, *a, 10 + i as u8),
        ) {
            Outcome::Consumers(c) => assert_eq!(c.len(), 1, "one video consumer"),
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    let received = Arc::new(Received {
        datagrams: AtomicU64::new(0),
        buffers: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let rx_thread = {
        let received = Arc::clone(&received);
        std::thread::spawn(move || receive(subscribers, received))
    };

    let mut srtp = context(&master(1));
    let mut trains: Vec<Vec<u8>> = (0..TRAINS_PER_SEND)
        .map(|_| vec![0xa5u8; TRAIN * SRTP_LEN])
        .collect();

    // Warm-up: the router's tables, the SRTP contexts and the sockets see
    // their first packets; the receiver thread has allocated everything.
    let deadline = Instant::now() + Duration::from_secs(45);
    send(
        &mut tx,
        &mut srtp,
        &mut trains,
        media,
        (0, WARMUP),
        &received,
        deadline,
    );
    let subs = SUBSCRIBERS as u64;
    wait_for(&received, WARMUP * subs, Duration::from_secs(10));
    let before_stats = worker.stats();
    let received_before = received.datagrams.load(Ordering::Relaxed);
    let buffers_before = received.buffers.load(Ordering::Relaxed);

    let allocations_before = ALLOCATIONS.load(Ordering::Relaxed);
    assert!(allocations_before > 0, "the counter is live");
    let phase = Instant::now();
    send(
        &mut tx,
        &mut srtp,
        &mut trains,
        media,
        (WARMUP, WARMUP + PACKETS),
        &received,
        deadline,
    );
    wait_for(
        &received,
        received_before + PACKETS * subs,
        Duration::from_secs(10),
    );
    let elapsed = phase.elapsed();
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - allocations_before;

    received.stop.store(true, Ordering::Relaxed);
    let first = rx_thread.join().expect("receiver thread ends");
    let stats = worker.stats();
    node.shutdown();

    let forwarded = stats.tx_packets - before_stats.tx_packets;
    let arrived = received.datagrams.load(Ordering::Relaxed) - received_before;
    let expected = PACKETS * subs;
    let buffers = received.buffers.load(Ordering::Relaxed) - buffers_before;
    let train = arrived as f64 / buffers.max(1) as f64;
    eprintln!(
        "{PACKETS} packets in, {forwarded} forwarded ({:.2} %), {arrived} received, \
         {allocations} allocations, measured phase {elapsed:.2?} ({:.0} packets/s out), \
         worker CPU {:.2} s, {train:.1} datagrams per GRO buffer at the subscribers, GRO {} GSO {} fallbacks {}, pool exhausted {}, drops {:?}, \
         total {:.2?}",
        forwarded as f64 * 100.0 / expected as f64,
        forwarded as f64 / elapsed.as_secs_f64(),
        stats.cpu_seconds,
        stats.gro_enabled,
        stats.gso_enabled,
        stats.gso_fallbacks,
        stats.pool_exhausted,
        stats
            .drops
            .iter()
            .filter(|(_, n)| *n > 0)
            .collect::<Vec<_>>(),
        started.elapsed(),
    );
    assert_eq!(allocations, 0, "allocations during the measured phase");
    assert!(
        forwarded * 100 >= expected * 99,
        "forwarded {forwarded} of {expected}"
    );
    assert!(
        arrived * 100 >= expected * 99,
        "received {arrived} of {expected}"
    );
    assert_eq!(
        stats.rx_packets - before_stats.rx_packets,
        PACKETS,
        "every packet reached the router"
    );

    // Each subscriber's first packet decrypts with its key to our payload.
    for (i, d) in first.iter().enumerate() {
        let mut d = d.clone();
        let mut ctx = context(&master((10 + i as u8).wrapping_add(100)));
        let n = ctx.unprotect_rtp(&mut d).expect("subscriber can decrypt");
        let p = RtpPacket::new_checked(&d[..n]).expect("valid RTP");
        assert_eq!(p.payload_type(), PT);
        assert!(
            p.payload()
                .iter()
                .enumerate()
                .all(|(i, &b)| b == payload_byte(i))
        );
    }
}
