//! The body of `zero_alloc_worker.rs` and `zero_alloc_worker_uring.rs`:
//! one backend per test binary, so that each measured phase runs alone in
//! its process (the allocation counter is global).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::common::{
    PAYLOAD, PROFILE, PT, Publisher, SSRC, SUBSCRIBERS, TAG, add, context, payload_byte,
    socket_opts, spawn_receiver, subscriber_sockets_at, wait_for,
};
use packet_path::io::BatchSocket;
use packet_path::{IoBackend, Node, NodeConfig, PathCounter, PathGauge};
use sfu_core::router::{
    Command, Counter, EndpointConfig, EndpointId, MediaKind, Outcome, Role, RoomId, Subscription,
    TrackConfig,
};
use sfu_core::wire::rtp::RtpPacket;

const PACKETS: u64 = 1_000_000;
const WARMUP: u64 = 20_000;
/// RTP header + payload + GCM tag: every datagram of a train has this size.
const SRTP_LEN: usize = 12 + PAYLOAD + TAG;

fn master(seed: u8) -> Vec<u8> {
    (0..PROFILE.key_len() + PROFILE.salt_len())
        .map(|i| seed.wrapping_mul(37).wrapping_add(i as u8))
        .collect()
}

fn endpoint(id: u64, role: Role, remote: SocketAddr, seed: u8) -> Command {
    let tracks = if role == Role::Publish {
        vec![TrackConfig {
            kind: MediaKind::Video,
            ssrc: SSRC,
            payload_type: PT,
            rtx: None,
            codec: sfu_core::codec::Codec::Vp8,
            layer_of: None,
            red_payload_type: None,
            source: sfu_core::router::TrackSource::Camera,
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
        red_payload_type: None,
        rtx_payload_types: Default::default(),
        twcc_send_extension: None,
        participant: None,
        audio_level_extension: None,
    }))
}

/// The measured run over the backend `io`; asserts that the worker runs
/// it (`expect_backend`, e.g. `"io_uring"`: no silent fallback).
pub(crate) fn forward_a_million(io: IoBackend, expect_backend: &str) {
    let started = Instant::now();
    // AF_XDP: the node on the host end of a veth pair, the clients in the
    // namespace at its other end.
    let veth = (io == IoBackend::Xdp).then(|| crate::common::netns::VethPair::new(1));
    let (bind, base_port, client_ip) = match &veth {
        Some(v) => (IpAddr::V4(v.host_ip), 7882, IpAddr::V4(v.peer_ip)),
        None => {
            let lo = IpAddr::from([127, 0, 0, 1]);
            (lo, 0, lo)
        }
    };
    let node = Node::start(NodeConfig {
        workers: 1,
        bind,
        base_port,
        io,
        ..NodeConfig::default()
    })
    .expect("node starts");
    let worker = node.workers()[0].clone();
    assert_eq!(worker.io_backend(), (expect_backend, None));
    let media = worker.local_addr();
    assert_ne!(media.port(), 0);

    let make = || {
        let tx = BatchSocket::bind(SocketAddr::new(client_ip, 0), 8, &socket_opts()).unwrap();
        (tx, subscriber_sockets_at(client_ip))
    };
    let (mut tx, subscribers) = match &veth {
        Some(v) => v.in_peer(make),
        None => make(),
    };
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

    // The first datagram of each subscriber, whatever it is.
    let (received, rx_thread) = spawn_receiver(subscribers, |_| true);

    let mut publisher = Publisher::new(context(&master(1)), media, SRTP_LEN, None);

    // Warm-up: the router's tables, the SRTP contexts and the sockets see
    // their first packets; the receiver thread has allocated everything.
    let deadline = Instant::now() + Duration::from_secs(45);
    publisher.send(&mut tx, (0, WARMUP), &received, deadline);
    let subs = SUBSCRIBERS as u64;
    wait_for(&received, WARMUP * subs, Duration::from_secs(10));
    // The worker publishes its counters after it has sent a batch, so the
    // subscribers can have the last copies before the counters show them:
    // wait for the counters too, or the measured phase would count them.
    let published = Instant::now() + Duration::from_secs(10);
    while worker.stats().get(Counter::TxPackets) < WARMUP * subs {
        assert!(
            Instant::now() < published,
            "the worker never published its warm-up: {:?}, {} received",
            worker.stats(),
            received.datagrams.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let crate::common::Measured {
        before: before_stats,
        stats,
        arrived,
        buffers,
        allocations,
        elapsed,
        first,
    } = crate::common::measure(
        &worker,
        &received,
        rx_thread,
        (PACKETS, PACKETS * subs),
        || {
            publisher.send(&mut tx, (WARMUP, WARMUP + PACKETS), &received, deadline);
        },
    );
    node.shutdown();

    let forwarded = stats.get(Counter::TxPackets) - before_stats.get(Counter::TxPackets);
    let expected = PACKETS * subs;
    let train = arrived as f64 / buffers.max(1) as f64;
    eprintln!(
        "{expect_backend}: {PACKETS} packets in, {forwarded} forwarded ({:.2} %), {arrived} received, \
         {allocations} allocations, measured phase {elapsed:.2?} ({:.0} packets/s out), \
         worker CPU {:.2} s, {train:.1} datagrams per GRO buffer at the subscribers, GRO {} GSO {} fallbacks {}, pool exhausted {}, send errors {}, recv errors {}, drops {:?}, \
         total {:.2?}",
        forwarded as f64 * 100.0 / expected as f64,
        forwarded as f64 / elapsed.as_secs_f64(),
        stats.cpu_seconds,
        (stats.gauge(PathGauge::GroEnabled) != 0),
        (stats.gauge(PathGauge::GsoEnabled) != 0),
        stats.path(PathCounter::GsoFallbacks),
        stats.path(PathCounter::PoolExhausted),
        stats.path(PathCounter::SendErrors),
        stats.path(PathCounter::RecvErrors),
        stats
            .drops
            .iter()
            .filter(|(_, n)| *n > 0)
            .collect::<Vec<_>>(),
        started.elapsed(),
    );
    assert_eq!(
        stats.gauge(PathGauge::IoUring) != 0,
        expect_backend == "io_uring"
    );
    assert_eq!(
        stats.gauge(PathGauge::IoAfXdp) != 0,
        expect_backend == "af_xdp"
    );
    if expect_backend == "af_xdp" {
        eprintln!("{}", crate::common::xdp_summary(&stats));
        assert!(
            stats.path(PathCounter::XdpTxFrames) >= expected,
            "the copies went through the AF_XDP ring"
        );
    }
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
        stats.get(Counter::RxPackets) - before_stats.get(Counter::RxPackets),
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
