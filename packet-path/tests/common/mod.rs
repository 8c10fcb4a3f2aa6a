//! Helpers shared by the zero-allocation tests: the counting allocator, and
//! the publisher, subscribers and pacing of `zero_alloc_worker.rs` and
//! `zero_alloc_dtls.rs`. Each test binary compiles this module and uses
//! part of it.

#![allow(dead_code)] // Not every test binary uses every helper.
#![allow(unsafe_code)] // The counting allocator is the one unsafe item here.

pub(crate) mod netns;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use packet_path::io::{BatchSocket, GRO_BUFFER_BYTES, RecvMeta, SocketOptions, Transmit};
use packet_path::{PathCounter, PathGauge, WorkerHandle, WorkerStats};
use sfu_core::router::{Command, Outcome};
use sfu_core::srtp::{Profile, SrtpConfig, SrtpContext};
use sfu_core::wire::rtp::{RtpHeader, write_header};

/// A global allocator that forwards to the system allocator and counts
/// every `alloc`, `alloc_zeroed` and `realloc` of every thread in
/// [`ALLOCATIONS`]. Each test binary declares its own
/// `#[global_allocator] static GLOBAL: common::Counting = common::Counting;`.
pub(crate) struct Counting;

/// Allocations (including zeroed ones and reallocations) so far.
pub(crate) static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

std::thread_local! {
    /// Allocations of the current thread so far, for a test whose work runs
    /// on its own thread only: libtest's main thread allocates while it
    /// waits for the test (its channel's blocking receive), at a moment
    /// that varies from run to run.
    pub(crate) static THREAD_ALLOCATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn count() {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    THREAD_ALLOCATIONS.with(|n| n.set(n.get() + 1));
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// The SRTP profile of every endpoint (in the DTLS test, the profile DTLS
/// must negotiate: the node and the peers prefer it).
pub(crate) const PROFILE: Profile = Profile::AeadAes128Gcm;
pub(crate) const SUBSCRIBERS: usize = 4;
pub(crate) const SSRC: u32 = 0x1234_5678;
pub(crate) const PT: u8 = 96;
pub(crate) const PAYLOAD: usize = 1000;
/// The GCM tag every SRTP packet ends with.
pub(crate) const TAG: usize = 16;
pub(crate) const TRAIN: usize = 32;
pub(crate) const TRAINS_PER_SEND: usize = 2;
/// Most packets sent but not yet seen by every subscriber.
pub(crate) const WINDOW: u64 = 8192;

pub(crate) fn context(m: &[u8]) -> SrtpContext {
    let (key, salt) = m.split_at(PROFILE.key_len());
    SrtpContext::new(PROFILE, key, salt, SrtpConfig::default()).expect("lengths match the profile")
}

pub(crate) fn payload_byte(i: usize) -> u8 {
    (i * 7 + 3) as u8
}

pub(crate) fn socket_opts() -> SocketOptions {
    SocketOptions {
        buffer_bytes: 32 << 20,
        read_timeout: Some(Duration::from_millis(100)),
        ..SocketOptions::default()
    }
}

/// The subscribers' sockets on loopback: non-blocking, 16 receive buffers.
pub(crate) fn subscriber_sockets() -> Vec<BatchSocket> {
    subscriber_sockets_at(std::net::Ipv4Addr::LOCALHOST.into())
}

/// [`subscriber_sockets`] on `ip`.
pub(crate) fn subscriber_sockets_at(ip: std::net::IpAddr) -> Vec<BatchSocket> {
    let lo = SocketAddr::new(ip, 0);
    (0..SUBSCRIBERS)
        .map(|_| {
            let opts = SocketOptions {
                read_timeout: Some(Duration::ZERO),
                ..socket_opts()
            };
            BatchSocket::bind(lo, 16, &opts).unwrap()
        })
        .collect()
}

pub(crate) fn add(worker: &WorkerHandle, cmd: Command) -> Outcome {
    worker.request(cmd).expect("the router accepts the command")
}

/// What the receiver thread shares with the test thread.
pub(crate) struct Received {
    pub(crate) datagrams: AtomicU64,
    /// Receive buffers filled: datagrams / buffers is the GSO train length.
    pub(crate) buffers: AtomicU64,
    pub(crate) stop: AtomicBool,
}

/// Starts the receiver thread on the subscribers' `sockets` (see
/// [`receive`]); it returns the first datagram `keep` accepted per socket.
pub(crate) fn spawn_receiver(
    sockets: Vec<BatchSocket>,
    keep: fn(&[u8]) -> bool,
) -> (Arc<Received>, JoinHandle<Vec<Vec<u8>>>) {
    let received = Arc::new(Received {
        datagrams: AtomicU64::new(0),
        buffers: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let thread = {
        let received = Arc::clone(&received);
        std::thread::spawn(move || receive(sockets, received, keep))
    };
    (received, thread)
}

/// Drains the subscribers' sockets (non-blocking, GRO) until told to stop;
/// keeps the first datagram of each that `keep` accepts, to decrypt after
/// the run.
fn receive(
    mut sockets: Vec<BatchSocket>,
    shared: Arc<Received>,
    keep: fn(&[u8]) -> bool,
) -> Vec<Vec<u8>> {
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
                            && keep(d)
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

/// Waits until the receivers saw `want` datagrams, or `limit` passed.
pub(crate) fn wait_for(received: &Received, want: u64, limit: Duration) {
    let start = Instant::now();
    while received.datagrams.load(Ordering::Relaxed) < want && start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The publisher's stream: its SRTP context and the GSO trains every packet
/// is written into, allocated once by [`Publisher::new`].
pub(crate) struct Publisher {
    srtp: SrtpContext,
    trains: Vec<Vec<u8>>,
    dst: SocketAddr,
    /// Size of every SRTP packet: header + `PAYLOAD` + `TAG`.
    srtp_len: usize,
    /// With `Some(id)`, every packet carries a transport-wide sequence
    /// number (its RTP sequence number) in one-byte header extension `id`.
    twcc: Option<u8>,
}

impl Publisher {
    pub(crate) fn new(
        srtp: SrtpContext,
        dst: SocketAddr,
        srtp_len: usize,
        twcc: Option<u8>,
    ) -> Self {
        let trains = (0..TRAINS_PER_SEND)
            .map(|_| vec![0xa5u8; TRAIN * srtp_len])
            .collect();
        Self {
            srtp,
            trains,
            dst,
            srtp_len,
            twcc,
        }
    }

    /// Sends packets `from..to` of the publisher's stream in GSO trains over
    /// `tx`, never more than `WINDOW` ahead of what the subscribers received,
    /// and stops at `deadline`. Allocates nothing: the trains hold every
    /// byte it writes.
    pub(crate) fn send(
        &mut self,
        tx: &mut BatchSocket,
        range: (u64, u64),
        received: &Received,
        deadline: Instant,
    ) {
        let srtp_len = self.srtp_len;
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
            for (train, len) in self.trains.iter_mut().zip(&mut lens) {
                let mut k = 0;
                while k < TRAIN && next < to {
                    let slot = &mut train[k * srtp_len..(k + 1) * srtp_len];
                    let header = RtpHeader {
                        marker: false,
                        payload_type: PT,
                        sequence_number: next as u16,
                        timestamp: (next as u32).wrapping_mul(3000),
                        ssrc: SSRC,
                    };
                    let twcc = (next as u16).to_be_bytes();
                    let with_twcc;
                    let extensions: &[(u8, &[u8])] = match self.twcc {
                        Some(id) => {
                            with_twcc = [(id, &twcc[..])];
                            &with_twcc
                        }
                        None => &[],
                    };
                    let h = write_header(slot, &header, extensions).expect("slot holds a header");
                    assert_eq!(h + PAYLOAD + TAG, srtp_len, "header length");
                    for (i, b) in slot[h..h + PAYLOAD].iter_mut().enumerate() {
                        *b = payload_byte(i);
                    }
                    let n = self
                        .srtp
                        .protect_rtp(slot, h + PAYLOAD)
                        .expect("slot has room for the tag");
                    assert_eq!(n, srtp_len);
                    k += 1;
                    next += 1;
                }
                *len = k * srtp_len;
            }
            let trains = &self.trains;
            let transmits: [Transmit<'_>; TRAINS_PER_SEND] = std::array::from_fn(|i| Transmit {
                dst: self.dst,
                contents: &trains[i][..lens[i]],
                segment_size: Some(srtp_len),
            });
            let used = lens.iter().filter(|&&l| l > 0).count();
            let mut done = 0;
            while done < used {
                done += tx.send(&transmits[done..used]).expect("loopback send");
            }
        }
    }
}

/// One line of a worker's AF_XDP gauges and counters, for a test's log.
pub(crate) fn xdp_summary(st: &WorkerStats) -> String {
    format!(
        "af_xdp: native {} zero-copy {}, {} frames in, {} out, {} kernel sends, \
         {} kernel receives, {} no frame, {} malformed, {} kernel drops",
        st.gauge(PathGauge::XdpNative),
        st.gauge(PathGauge::XdpZeroCopy),
        st.path(PathCounter::XdpRxFrames),
        st.path(PathCounter::XdpTxFrames),
        st.path(PathCounter::XdpKernelSends),
        st.path(PathCounter::XdpKernelReceives),
        st.path(PathCounter::XdpTxNoFrame),
        st.path(PathCounter::XdpRxMalformed),
        st.path(PathCounter::XdpKernelDropped),
    )
}

/// What a measured phase saw ([`measure`]).
pub(crate) struct Measured {
    /// The worker's counters before the phase.
    pub(crate) before: WorkerStats,
    /// Its counters after it (once every packet was counted).
    pub(crate) stats: WorkerStats,
    /// Datagrams the subscribers received during it.
    pub(crate) arrived: u64,
    /// Receive buffers they filled during it.
    pub(crate) buffers: u64,
    /// Heap allocations in the whole process during it.
    pub(crate) allocations: u64,
    pub(crate) elapsed: Duration,
    /// What the receiver thread returned (it is stopped and joined).
    pub(crate) first: Vec<Vec<u8>>,
}

/// Runs `send` (`packets` to the worker) as the measured phase: counts the
/// process's allocations from before it until the subscribers received
/// `copies` datagrams (10 s at most), then stops the receiver thread and
/// reads the worker's counters once it has counted the `packets`.
pub(crate) fn measure(
    worker: &WorkerHandle,
    received: &Received,
    rx_thread: JoinHandle<Vec<Vec<u8>>>,
    (packets, copies): (u64, u64),
    send: impl FnOnce(),
) -> Measured {
    let before = worker.stats();
    let received_before = received.datagrams.load(Ordering::Relaxed);
    let buffers_before = received.buffers.load(Ordering::Relaxed);
    let allocations_before = ALLOCATIONS.load(Ordering::Relaxed);
    assert!(allocations_before > 0, "the counter is live");
    let phase = Instant::now();
    send();
    wait_for(received, received_before + copies, Duration::from_secs(10));
    let elapsed = phase.elapsed();
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - allocations_before;
    received.stop.store(true, Ordering::Relaxed);
    let first = rx_thread.join().expect("receiver thread ends");
    Measured {
        stats: stats_after(worker, &before, packets),
        before,
        arrived: received.datagrams.load(Ordering::Relaxed) - received_before,
        buffers: received.buffers.load(Ordering::Relaxed) - buffers_before,
        allocations,
        elapsed,
        first,
    }
}

/// The worker's counters once its router has counted `packets` received
/// since `before` (it publishes them after each batch's sends, so a
/// subscriber may hold the last copies before they are counted); gives up
/// after 5 s and returns what it has (the caller's assertions then say
/// what is missing).
pub(crate) fn stats_after(
    worker: &WorkerHandle,
    before: &WorkerStats,
    packets: u64,
) -> WorkerStats {
    let base = before.get(sfu_core::router::Counter::RxPackets);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats = worker.stats();
        let counted = stats.get(sfu_core::router::Counter::RxPackets) - base;
        if counted >= packets || Instant::now() >= deadline {
            return stats;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
