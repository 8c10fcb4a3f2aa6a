//! The body of the DTLS-keyed zero-allocation tests (`zero_alloc_dtls*.rs`,
//! one binary per backend); see `zero_alloc_dtls.rs`.

#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::common::{
    PAYLOAD, PROFILE, PT, Publisher, SSRC, SUBSCRIBERS, TAG, add, context, payload_byte,
    socket_opts, spawn_receiver, subscriber_sockets_at, wait_for,
};
use packet_path::io::{BatchSocket, GRO_BUFFER_BYTES, RecvMeta, Transmit};
use packet_path::{IoBackend, Node, NodeConfig, PathCounter, PathGauge};
use sfu_core::dtls::{DTLS_MTU, DtlsCert, DtlsRole, DtlsSession, DtlsState, Fingerprint, SrtpKeys};
use sfu_core::router::{
    Command, Counter, EndpointConfig, EndpointId, IceCredentials, MediaKind, Outcome, Role, RoomId,
    Subscription, TrackConfig, WebrtcTransport,
};
use sfu_core::wire::rtp::RtpPacket;
use sfu_core::wire::stun::{self, StunClass, StunMessage, StunWriter};
use sfu_core::wire::{DatagramKind, classify};

const PACKETS: u64 = 1_000_000;
const WARMUP: u64 = 20_000;
/// Transport-wide sequence number extension id: every packet is numbered,
/// so the node records arrivals and sends transport-cc feedback meanwhile.
const TWCC_EXT: u8 = 3;
/// RTP header with the one-byte extension block holding the 2-byte number.
const HEADER_LEN: usize = 12 + 4 + 4;
/// RTP header + payload + GCM tag: every datagram of a train has this size.
const SRTP_LEN: usize = HEADER_LEN + PAYLOAD + TAG;
/// RTCP payload-specific feedback (RFC 4585), the packet type of a PLI.
const PT_PSFB: u8 = 206;
const PT_RTPFB: u8 = 205;

/// 64 random bits from the standard library's per-process hash keys.
fn random_u64(salt: u64) -> u64 {
    RandomState::new().hash_one(salt)
}

/// ICE credentials of endpoint `id` as the node's side holds them.
fn ice(id: u64) -> IceCredentials {
    IceCredentials {
        local_ufrag: format!("node{id}"),
        local_pwd: format!("node-password-{id}-0123456789abcdef"),
        remote_ufrag: format!("peer{id}"),
        remote_pwd: format!("peer-password-{id}-0123456789abcdef"),
    }
}

/// Receives whatever arrives within `wait` on `socket` and hands each
/// datagram with its source to `f`. Returns whether anything arrived.
fn recv_some(
    socket: &mut BatchSocket,
    bufs: &mut [&mut [u8]],
    meta: &mut [RecvMeta],
    wait: Duration,
    mut f: impl FnMut(SocketAddr, &[u8]),
) -> bool {
    let start = Instant::now();
    loop {
        match socket.recv(bufs, meta) {
            Ok(n) => {
                for (m, b) in meta[..n].iter().zip(bufs.iter()) {
                    for d in m.datagrams(b) {
                        f(m.addr, d);
                    }
                }
                return true;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if start.elapsed() >= wait {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("recv: {e}"),
        }
    }
}

fn send_one(socket: &mut BatchSocket, dst: SocketAddr, contents: &[u8]) {
    let t = Transmit {
        dst,
        contents,
        segment_size: None,
    };
    assert_eq!(socket.send(&[t]).expect("loopback send"), 1);
}

/// The peer side of a WebRTC endpoint's set-up, over `socket`: one ICE
/// check with USE-CANDIDATE answered by a valid binding success, then a DTLS
/// handshake as client, verified against the node's `node_fingerprint`.
/// Returns the exported keys.
fn connect(
    socket: &mut BatchSocket,
    media: SocketAddr,
    id: u64,
    cert: &DtlsCert,
    node_fingerprint: &Fingerprint,
) -> SrtpKeys {
    let creds = ice(id);
    let local = socket.local_addr().unwrap();
    let mut storage = vec![0u8; 4 * GRO_BUFFER_BYTES];
    let mut bufs: Vec<&mut [u8]> = storage.chunks_mut(GRO_BUFFER_BYTES).collect();
    let mut meta = [RecvMeta::default(); 4];

    // ICE: the node's check answer must carry our address, its integrity
    // (keyed with the node's password) and a fingerprint.
    let mut transaction = [0u8; 12];
    transaction[..8].copy_from_slice(&random_u64(id).to_be_bytes());
    transaction[8..].copy_from_slice(&(random_u64(id + 1) as u32).to_be_bytes());
    let username = format!("{}:{}", creds.local_ufrag, creds.remote_ufrag);
    let mut request = [0u8; 512];
    let len = {
        let mut w = StunWriter::new(&mut request, stun::BINDING_REQUEST, &transaction).unwrap();
        w.add_username(username.as_bytes()).unwrap();
        w.add_priority(0x6e7f_1eff).unwrap();
        w.add_ice_controlling(random_u64(id + 2)).unwrap();
        w.add_use_candidate().unwrap();
        w.add_message_integrity(creds.local_pwd.as_bytes()).unwrap();
        w.add_fingerprint().unwrap();
        w.finish()
    };
    let mut answered = false;
    for _ in 0..20 {
        send_one(socket, media, &request[..len]);
        recv_some(
            socket,
            &mut bufs,
            &mut meta,
            Duration::from_millis(200),
            |src, d| {
                if src != media || classify(d) != DatagramKind::Stun {
                    return;
                }
                let m = StunMessage::new_checked(d).expect("well-formed STUN answer");
                assert_eq!(m.class(), StunClass::SuccessResponse, "check answered");
                assert_eq!(m.message_type(), stun::BINDING_SUCCESS);
                assert_eq!(m.transaction_id(), &transaction);
                m.verify_integrity(creds.local_pwd.as_bytes())
                    .expect("answer's MESSAGE-INTEGRITY");
                m.verify_fingerprint().expect("answer's FINGERPRINT");
                assert_eq!(m.xor_mapped_address(), Some(local));
                answered = true;
            },
        );
        if answered {
            break;
        }
    }
    assert!(answered, "endpoint {id}: no binding success");

    // DTLS as client (the node is the server).
    let start = Instant::now();
    let mut dtls = DtlsSession::new(cert, DtlsRole::Client, node_fingerprint.clone(), start)
        .expect("client session");
    let mut out = vec![0u8; DTLS_MTU];
    while dtls.state() == DtlsState::Handshaking {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "endpoint {id}: DTLS handshake did not complete"
        );
        while let Some(n) = dtls.poll_datagram(&mut out) {
            send_one(socket, media, &out[..n]);
        }
        let mut incoming: Vec<Vec<u8>> = Vec::new();
        recv_some(
            socket,
            &mut bufs,
            &mut meta,
            Duration::from_millis(20),
            |src, d| {
                if src == media && classify(d) == DatagramKind::Dtls {
                    incoming.push(d.to_vec());
                }
            },
        );
        let now = Instant::now();
        for d in incoming {
            dtls.handle_datagram(&d, now)
                .unwrap_or_else(|e| panic!("endpoint {id}: DTLS {}", e.as_str()));
        }
        dtls.handle_timeout(now)
            .unwrap_or_else(|e| panic!("endpoint {id}: DTLS timer {}", e.as_str()));
    }
    assert_eq!(dtls.state(), DtlsState::Connected, "endpoint {id}");
    // Anything the client still has to say (nothing, in DTLS 1.2).
    while let Some(n) = dtls.poll_datagram(&mut out) {
        send_one(socket, media, &out[..n]);
    }
    let keys = dtls.take_keys().expect("keys after the handshake");
    assert_eq!(keys.profile, PROFILE, "negotiated SRTP profile");
    keys
}

/// A WebRTC endpoint: no address and no keys until ICE and DTLS; the node
/// is the DTLS server and expects the peer's certificate `fingerprint`.
fn endpoint(id: u64, role: Role, fingerprint: &Fingerprint) -> Command {
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
    Command::AddWebrtcEndpoint(
        Box::new(EndpointConfig {
            id: EndpointId(id),
            room: RoomId(1),
            role,
            profile: PROFILE,
            remote_master: Vec::new(),
            local_master: Vec::new(),
            tracks,
            remote: None,
            subscription: Subscription::All,
            rtcp_ssrc: None,
            red_payload_type: None,
            rtx_payload_types: Default::default(),
            twcc_send_extension: None,
            participant: None,
            audio_level_extension: None,
        }),
        Box::new(WebrtcTransport {
            ice: ice(id),
            dtls_role: DtlsRole::Server,
            remote_fingerprint: fingerprint.clone(),
            video_payload_type: None,
            audio_payload_type: None,
            rid_tracks: Vec::new(),
            rid_extension: None,
            twcc_extension: Some(TWCC_EXT),
            audio_level_extension: None,
            repaired_rid_extension: None,
            twcc_send_extension: None,
        }),
    )
}

/// The measured run over the backend `io`, which the worker must run
/// (`expect_backend`: no silent fallback). AF_XDP runs over a veth pair
/// into a namespace holding the peers, as in `common/million.rs`.
pub(crate) fn forward_dtls_keyed(io: IoBackend, expect_backend: &str) {
    let started = Instant::now();
    let node_cert = DtlsCert::generate().expect("node certificate");
    let node_fingerprint = node_cert.fingerprint().clone();
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
        dtls_cert: Some(node_cert),
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
    let (mut tx, mut subscribers) = match &veth {
        Some(v) => v.in_peer(make),
        None => make(),
    };

    // Every peer has its own certificate; the node checks its fingerprint.
    let pub_cert = DtlsCert::generate().expect("publisher certificate");
    let sub_certs: Vec<DtlsCert> = (0..SUBSCRIBERS)
        .map(|_| DtlsCert::generate().expect("subscriber certificate"))
        .collect();

    add(&worker, Command::CreateRoom(RoomId(1)));
    add(&worker, endpoint(1, Role::Publish, pub_cert.fingerprint()));
    for (i, cert) in sub_certs.iter().enumerate() {
        match add(
            &worker,
            endpoint(10 + i as u64, Role::Subscribe, cert.fingerprint()),
        ) {
            Outcome::Consumers(c) => assert_eq!(c.len(), 1, "one video consumer"),
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    // ICE + DTLS for the publisher, then for each subscriber.
    let pub_keys = connect(&mut tx, media, 1, &pub_cert, &node_fingerprint);
    let sub_keys: Vec<SrtpKeys> = subscribers
        .iter_mut()
        .zip(&sub_certs)
        .enumerate()
        .map(|(i, (s, cert))| connect(s, media, 10 + i as u64, cert, &node_fingerprint))
        .collect();
    let handshakes = worker.stats();
    assert!(
        handshakes.drops.iter().all(|(_, n)| *n == 0),
        "drops during ICE and DTLS: {:?}",
        handshakes.drops
    );

    // The first RTP-looking datagram of each subscriber.
    let (received, rx_thread) = spawn_receiver(subscribers, |d| classify(d) == DatagramKind::Rtp);

    // The publisher protects with its DTLS-exported key and numbers every
    // packet with the transport-wide sequence number extension.
    let mut publisher = Publisher::new(
        context(&pub_keys.local_master),
        media,
        SRTP_LEN,
        Some(TWCC_EXT),
    );

    // Warm-up: the router's tables, the SRTP contexts and the sockets see
    // their first packets; the receiver thread has allocated everything.
    let deadline = Instant::now() + Duration::from_secs(45);
    publisher.send(&mut tx, (0, WARMUP), &received, deadline);
    let subs = SUBSCRIBERS as u64;
    wait_for(&received, WARMUP * subs, Duration::from_secs(10));

    // The subscribers' handshakes asked the publisher for a keyframe: a PLI
    // the node protected with the publisher's DTLS key arrived.
    let mut pli = false;
    let mut feedback = 0u32;
    {
        let mut storage = vec![0u8; 4 * GRO_BUFFER_BYTES];
        let mut bufs: Vec<&mut [u8]> = storage.chunks_mut(GRO_BUFFER_BYTES).collect();
        let mut meta = [RecvMeta::default(); 4];
        let mut node_to_pub = context(&pub_keys.remote_master);
        let mut wrong = context(&pub_keys.local_master);
        while recv_some(&mut tx, &mut bufs, &mut meta, Duration::ZERO, |src, d| {
            if src != media || classify(d) != DatagramKind::Rtcp {
                return;
            }
            let mut d = d.to_vec();
            assert!(
                wrong.unprotect_rtcp(&mut d.clone()).is_err(),
                "the publisher's own key does not open the node's RTCP"
            );
            let n = node_to_pub
                .unprotect_rtcp(&mut d)
                .expect("the node's RTCP opens with the DTLS key");
            if n >= 12 && d[1] == PT_RTPFB && d[0] & 0x1f == 15 {
                feedback += 1;
                return;
            }
            assert!(n >= 12 && d[1] == PT_PSFB && d[0] & 0x1f == 1, "a PLI");
            pli = true;
        }) {}
    }
    assert!(pli, "the publisher received a PLI");
    assert!(feedback > 0, "the publisher received transport-cc feedback");

    // The worker publishes its counters after each batch: wait until its
    // received count has settled, or the measured phase would count the
    // end of the warm-up.
    let mut settled = worker.stats().get(Counter::RxPackets);
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let now = worker.stats().get(Counter::RxPackets);
        if now == settled {
            break;
        }
        settled = now;
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

    // Egress datagrams are forwarded media plus the publisher's feedback.
    let feedback_sent =
        stats.get(Counter::TwccFeedbackSent) - before_stats.get(Counter::TwccFeedbackSent);
    let forwarded =
        stats.get(Counter::TxPackets) - before_stats.get(Counter::TxPackets) - feedback_sent;
    let expected = PACKETS * subs;
    let train = arrived as f64 / buffers.max(1) as f64;
    eprintln!(
        "DTLS-keyed ({}): {PACKETS} packets in, {forwarded} forwarded ({:.2} %), {arrived} received, \
         {feedback_sent} transport-cc feedback packets, \
         {allocations} allocations, measured phase {elapsed:.2?} ({:.0} packets/s out), \
         worker CPU {:.2} s, {train:.1} datagrams per GRO buffer at the subscribers, GRO {} GSO {} fallbacks {}, pool exhausted {}, drops {:?}, \
         total {:.2?}",
        pub_keys.profile.name(),
        forwarded as f64 * 100.0 / expected as f64,
        forwarded as f64 / elapsed.as_secs_f64(),
        stats.cpu_seconds,
        (stats.gauge(PathGauge::GroEnabled) != 0),
        (stats.gauge(PathGauge::GsoEnabled) != 0),
        stats.path(PathCounter::GsoFallbacks),
        stats.path(PathCounter::PoolExhausted),
        stats
            .drops
            .iter()
            .filter(|(_, n)| *n > 0)
            .collect::<Vec<_>>(),
        started.elapsed(),
    );
    assert_eq!(allocations, 0, "allocations during the measured phase");
    if expect_backend == "af_xdp" {
        let copies = PACKETS * SUBSCRIBERS as u64;
        eprintln!("{}", crate::common::xdp_summary(&stats));
        assert!(
            stats.path(PathCounter::XdpTxFrames) >= copies,
            "the copies went through the AF_XDP ring"
        );
    }
    assert!(
        feedback_sent > 0,
        "transport-cc feedback was sent during the measured phase"
    );
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

    // Each subscriber's first packet decrypts with the key its DTLS
    // handshake exported for the node's direction (and not with its own).
    for (i, (d, keys)) in first.iter().zip(&sub_keys).enumerate() {
        assert!(!d.is_empty(), "subscriber {i} received RTP");
        let mut wrong = context(&keys.local_master);
        assert!(
            wrong.unprotect_rtp(&mut d.clone()).is_err(),
            "subscriber {i}: its own key does not open the node's packets"
        );
        let mut d = d.clone();
        let mut ctx = context(&keys.remote_master);
        let n = ctx
            .unprotect_rtp(&mut d)
            .expect("subscriber decrypts with its DTLS key");
        let p = RtpPacket::new_checked(&d[..n]).expect("valid RTP");
        assert_eq!(p.payload_type(), PT);
        assert_eq!(p.payload().len(), PAYLOAD);
        assert!(
            p.payload()
                .iter()
                .enumerate()
                .all(|(i, &b)| b == payload_byte(i))
        );
    }
}
