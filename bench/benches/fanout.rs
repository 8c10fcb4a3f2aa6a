//! The in-process forwarding path: one received 1200-byte AEAD_AES_128_GCM
//! SRTP packet fanned out to 1, 10 and 100 consumers — authenticate and
//! decrypt once, then per consumer copy, rewrite SSRC/seq/timestamp and
//! encrypt into a send slot. Throughput is in egress packets, so criterion's
//! time per element is the cost per egress packet.
//!
//! `cargo bench -p bench --bench fanout`

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sfu_core::router::{
    Command, Counter, EndpointConfig, EndpointId, MediaKind, Role, RoomId, Router, RouterConfig,
    Subscription, TrackConfig, Transmit,
};
use sfu_core::srtp::{Profile, SrtpConfig, SrtpContext};
use sfu_core::wire::rtp::{RtpHeader, write_header};

const PAYLOAD: usize = 1200;
const PROFILE: Profile = Profile::AeadAes128Gcm;

/// Send slots allocated once; `send` only records, as the packet path's
/// queue does before its `sendmmsg`.
struct Slots {
    bufs: Vec<[u8; 1500]>,
    next: usize,
    queued: usize,
}

impl Transmit for Slots {
    fn buffer(&mut self) -> Option<&mut [u8]> {
        let b = self.bufs.get_mut(self.next)?;
        Some(&mut b[..])
    }
    fn send(&mut self, len: usize, dst: SocketAddr) {
        black_box((len, dst));
        self.next += 1;
        self.queued += 1;
    }
}

fn master(seed: u8) -> Vec<u8> {
    (0..28).map(|i| seed ^ i).collect()
}

fn router_with(consumers: u16) -> Router {
    let now = Instant::now();
    let mut r = Router::new(RouterConfig::default());
    r.handle_command(now, Command::CreateRoom(RoomId(1)))
        .unwrap();
    let add = |id: u64, role, tracks: Vec<TrackConfig>, remote, seed| {
        Command::AddEndpoint(Box::new(EndpointConfig {
            id: EndpointId(id),
            room: RoomId(1),
            role,
            profile: PROFILE,
            remote_master: master(seed),
            local_master: master(seed.wrapping_add(1)),
            tracks,
            remote,
            subscription: Subscription::All,
            rtcp_ssrc: None,
            red_payload_type: None,
            rtx_payload_types: Default::default(),
            twcc_send_extension: None,
            participant: None,
            audio_level_extension: None,
        }))
    };
    let track = TrackConfig {
        kind: MediaKind::Video,
        ssrc: 0x1111,
        payload_type: 96,
        rtx: None,
        codec: sfu_core::codec::Codec::Vp8,
        layer_of: None,
        red_payload_type: None,
        source: sfu_core::router::TrackSource::Camera,
    };
    r.handle_command(
        now,
        add(1, Role::Publish, vec![track], Some(publisher()), 0),
    )
    .unwrap();
    for i in 0..consumers {
        let remote = SocketAddr::from(([127, 0, 0, 1], 20_000 + i));
        r.handle_command(
            now,
            add(100 + u64::from(i), Role::Subscribe, vec![], Some(remote), 7),
        )
        .unwrap();
    }
    r
}

fn publisher() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 10_000))
}

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    for consumers in [1u16, 10, 100] {
        g.throughput(Throughput::Elements(u64::from(consumers)));
        let mut router = router_with(consumers);
        let m = master(0);
        let mut tx = SrtpContext::new(PROFILE, &m[..16], &m[16..], SrtpConfig::default()).unwrap();
        let mut slots = Slots {
            bufs: vec![[0u8; 1500]; usize::from(consumers) + 1],
            next: 0,
            queued: 0,
        };
        let mut seq = 0u16;
        let now = Instant::now();
        g.bench_with_input(
            BenchmarkId::new("gcm_1200B", consumers),
            &consumers,
            |b, _| {
                b.iter_batched_ref(
                    || {
                        // Untimed: the publisher's next packet, with a fresh index.
                        seq = seq.wrapping_add(1);
                        let mut buf = vec![0u8; 1500];
                        let h = RtpHeader {
                            payload_type: 96,
                            sequence_number: seq,
                            timestamp: u32::from(seq) * 3000,
                            ssrc: 0x1111,
                            marker: false,
                        };
                        let n = write_header(&mut buf, &h, &[]).unwrap() + PAYLOAD;
                        let n = tx.protect_rtp(&mut buf, n).unwrap();
                        buf.truncate(n);
                        buf
                    },
                    |pkt| {
                        slots.next = 0;
                        router.handle_input(now, publisher(), pkt, &mut slots);
                    },
                    BatchSize::SmallInput,
                )
            },
        );
        let forwarded = router.stats().get(Counter::TxPackets);
        let drops: u64 = router.stats().drops.iter().sum();
        assert!(
            forwarded > 0 && drops == 0,
            "fan-out forwarded {forwarded}, dropped {drops}"
        );
    }
    g.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
