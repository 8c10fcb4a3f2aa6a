//! A [`Router`] with valid SDES keys, driven by fuzz targets.
//!
//! One room; [`PUBLISHER`] publishes a video and an audio track and learns
//! its address from its first authentic packet; [`SUB_ALL`] subscribes to
//! everything (AES-CM keys, RTCP SSRC [`SUB_ALL_RTCP_SSRC`]); [`SUB_BOTH`]
//! publishes a video track of its own and subscribes explicitly to the
//! publisher's tracks and to an SSRC nobody publishes. The targets build
//! plaintext RTP or RTCP, [`Harness::send`] protects it with the sender's
//! key (so it authenticates) and feeds it to [`Router::handle_input`].
//!
//! Every egress datagram is checked the way its receiver would see it: RTP
//! goes to a subscriber, authenticates with that subscriber's key, carries
//! one of its consumer SSRCs and the sender's payload unchanged; RTCP goes
//! back to the sender and authenticates with its key. A violation panics,
//! which the fuzzer reports as a crash.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sfu_core::router::{
    Command, EndpointConfig, EndpointId, MediaKind, Outcome, Role, RoomId, Router, RouterConfig,
    Subscription, TrackConfig, Transmit,
};
use sfu_core::srtp::{Profile, SrtpConfig, SrtpContext, SrtpError};
use sfu_core::wire::rtcp::{RtcpIter, RtcpPacket};
use sfu_core::wire::{self, DatagramKind};

/// Index of the publisher in [`Harness::peers`].
pub const PUBLISHER: usize = 0;
/// Index of the subscriber with subscription `All`.
pub const SUB_ALL: usize = 1;
/// Index of the endpoint that publishes and subscribes explicitly.
pub const SUB_BOTH: usize = 2;

/// The publisher's video track.
pub const PUB_VIDEO_SSRC: u32 = 0x1111_1111;
/// The publisher's audio track.
pub const PUB_AUDIO_SSRC: u32 = 0x2222_2222;
/// The RTCP SSRC of [`SUB_ALL`].
pub const SUB_ALL_RTCP_SSRC: u32 = 0x3333_3333;
/// The video track of [`SUB_BOTH`].
pub const BOTH_VIDEO_SSRC: u32 = 0x4444_4444;
/// An SSRC [`SUB_BOTH`] subscribes to that nobody publishes.
pub const ABSENT_SSRC: u32 = 0x5555_5555;

/// An address no endpoint has.
pub const STRANGER: SocketAddr = addr(5009);

const SLOTS: usize = 8;
const BUF_LEN: usize = 1500;

const fn addr(port: u16) -> SocketAddr {
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), port)
}

/// One endpoint as its remote side sees it.
#[derive(Debug)]
pub struct Peer {
    /// The address it sends from.
    pub addr: SocketAddr,
    /// Protects what it sends (the router's receive key for it).
    pub tx: SrtpContext,
    /// Opens what the router sends it.
    pub rx: SrtpContext,
    /// The SSRCs of its consumers (the router's output SSRCs to it).
    pub consumer_ssrcs: Vec<u32>,
    /// Its published tracks.
    pub tracks: Vec<u32>,
}

/// How [`Harness::send`] treats the plaintext.
#[derive(Debug, Clone, Copy, Default)]
pub struct SendMode {
    /// Feed the plaintext as it is, without SRTP.
    pub raw: bool,
    /// Flip the low bit of this byte (modulo the length) after protecting.
    pub tamper: Option<usize>,
    /// Send from [`STRANGER`] instead of the peer's address.
    pub from_stranger: bool,
    /// Free send buffers for this datagram (0..=8).
    pub buffers: usize,
}

/// The router under test and the remote side of its endpoints.
#[derive(Debug)]
pub struct Harness {
    /// The router.
    pub router: Router,
    /// The current time.
    pub now: Instant,
    /// Publisher, all-subscriber, publisher-and-subscriber.
    pub peers: [Peer; 3],
    sink: Sink,
}

fn master(seed: u8, profile: Profile) -> Vec<u8> {
    (0..profile.key_len() + profile.salt_len())
        .map(|i| seed.wrapping_mul(31).wrapping_add(i as u8))
        .collect()
}

fn context(profile: Profile, master: &[u8]) -> SrtpContext {
    let (key, salt) = master.split_at(profile.key_len());
    SrtpContext::new(profile, key, salt, SrtpConfig::default())
        .expect("key and salt lengths come from the profile")
}

fn video(ssrc: u32, payload_type: u8) -> TrackConfig {
    TrackConfig {
        kind: MediaKind::Video,
        ssrc,
        payload_type,
        rtx: None,
        codec: sfu_core::codec::Codec::Vp8,
        layer_of: None,
        red_payload_type: None,
        source: sfu_core::router::TrackSource::Camera,
    }
}

impl Harness {
    /// The room with its three endpoints; `profile_choice` picks the
    /// publisher's SRTP profile (the subscribers have one each).
    pub fn new(profile_choice: u8) -> Self {
        let now = Instant::now();
        let mut router = Router::new(RouterConfig::default());
        router
            .handle_command(now, Command::CreateRoom(RoomId(1)))
            .expect("a fresh router has no rooms");
        let pub_profile = if profile_choice & 1 == 0 {
            Profile::AeadAes128Gcm
        } else {
            Profile::Aes128CmHmacSha1_80
        };
        let profiles = [
            pub_profile,
            Profile::Aes128CmHmacSha1_80,
            Profile::AeadAes128Gcm,
        ];
        let configs = [
            EndpointConfig {
                id: EndpointId(1),
                room: RoomId(1),
                role: Role::Publish,
                profile: profiles[0],
                remote_master: master(1, profiles[0]),
                local_master: master(101, profiles[0]),
                tracks: vec![
                    video(PUB_VIDEO_SSRC, 96),
                    TrackConfig {
                        kind: MediaKind::Audio,
                        ssrc: PUB_AUDIO_SSRC,
                        payload_type: 111,
                        rtx: None,
                        codec: sfu_core::codec::Codec::Vp8,
                        layer_of: None,
                        red_payload_type: None,
                        source: sfu_core::router::TrackSource::Camera,
                    },
                ],
                remote: None,
                subscription: Subscription::All,
                rtcp_ssrc: None,
                red_payload_type: None,
                rtx_payload_types: Default::default(),
                twcc_send_extension: None,
                participant: None,
                audio_level_extension: None,
            },
            EndpointConfig {
                id: EndpointId(2),
                room: RoomId(1),
                role: Role::Subscribe,
                profile: profiles[1],
                remote_master: master(2, profiles[1]),
                local_master: master(102, profiles[1]),
                tracks: Vec::new(),
                remote: Some(addr(5002)),
                subscription: Subscription::All,
                rtcp_ssrc: Some(SUB_ALL_RTCP_SSRC),
                red_payload_type: None,
                rtx_payload_types: Default::default(),
                twcc_send_extension: None,
                participant: None,
                audio_level_extension: None,
            },
            EndpointConfig {
                id: EndpointId(3),
                room: RoomId(1),
                role: Role::Both,
                profile: profiles[2],
                remote_master: master(3, profiles[2]),
                local_master: master(103, profiles[2]),
                tracks: vec![video(BOTH_VIDEO_SSRC, 98)],
                remote: Some(addr(5003)),
                subscription: Subscription::Explicit {
                    video: vec![PUB_VIDEO_SSRC, ABSENT_SSRC],
                    audio: vec![PUB_AUDIO_SSRC],
                },
                rtcp_ssrc: None,
                red_payload_type: None,
                rtx_payload_types: Default::default(),
                twcc_send_extension: None,
                participant: None,
                audio_level_extension: None,
            },
        ];
        let peers = configs.map(|cfg| {
            let peer = Peer {
                addr: cfg.remote.unwrap_or(addr(5001)),
                tx: context(cfg.profile, &cfg.remote_master),
                rx: context(cfg.profile, &cfg.local_master),
                consumer_ssrcs: Vec::new(),
                tracks: cfg.tracks.iter().map(|t| t.ssrc).collect(),
            };
            router
                .handle_command(now, Command::AddEndpoint(Box::new(cfg)))
                .expect("the endpoints are valid and distinct");
            peer
        });
        let mut harness = Self {
            router,
            now,
            peers,
            sink: Sink::new(),
        };
        // Consumers change as later endpoints join; read them at the end by
        // re-applying each subscription (which changes nothing).
        for (id, sub) in [
            (2, Subscription::All),
            (
                3,
                Subscription::Explicit {
                    video: vec![PUB_VIDEO_SSRC, ABSENT_SSRC],
                    audio: vec![PUB_AUDIO_SSRC],
                },
            ),
        ] {
            let outcome = harness
                .router
                .handle_command(now, Command::SetSubscription(EndpointId(id), sub))
                .expect("the endpoint exists and subscribes");
            let Outcome::Consumers(c) = outcome else {
                panic!("SetSubscription answers with consumers, got {outcome:?}");
            };
            harness.peers[id as usize - 1].consumer_ssrcs = c.iter().map(|c| c.ssrc).collect();
        }
        harness
    }

    /// Moves the clock forward.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// Protects the plaintext RTP or RTCP packet `plain` with `from`'s key
    /// (as `mode` says), feeds it to the router and checks every datagram
    /// the router writes. Plaintext that cannot be protected (malformed
    /// header, too long) is fed as it is.
    pub fn send(&mut self, from: usize, plain: &[u8], mode: SendMode) {
        let peer = &mut self.peers[from];
        let mut datagram = plain.to_vec();
        let mut protected = false;
        if !mode.raw {
            let mut buf = plain.to_vec();
            buf.resize(plain.len() + 32, 0);
            let result = match wire::classify(plain) {
                DatagramKind::Rtcp => peer.tx.protect_rtcp(&mut buf, plain.len()),
                _ => peer.tx.protect_rtp(&mut buf, plain.len()),
            };
            if let Ok(n) = result {
                buf.truncate(n);
                datagram = buf;
                protected = true;
            }
        }
        let mut tampered = false;
        if let Some(at) = mode.tamper
            && !datagram.is_empty()
        {
            let at = at % datagram.len();
            datagram[at] ^= 1;
            tampered = true;
        }
        let src = if mode.from_stranger {
            STRANGER
        } else {
            peer.addr
        };
        self.sink.reset(mode.buffers.min(SLOTS));
        self.router
            .handle_input(self.now, src, &mut datagram, &mut self.sink);
        // Forwarded RTP must carry the payload that was sent.
        let sent = (protected && !tampered).then_some(plain);
        self.check_egress(from, src, sent);
    }

    fn check_egress(&mut self, from: usize, src: SocketAddr, sent: Option<&[u8]>) {
        for i in 0..self.sink.used {
            let (len, dst) = self.sink.sent[i];
            let mut out = self.sink.bufs[i][..len].to_vec();
            match wire::classify(&out) {
                DatagramKind::Rtp => {
                    let Some(peer) = self.peers[1..].iter_mut().find(|p| p.addr == dst) else {
                        panic!("RTP egress to {dst}, which is no subscriber");
                    };
                    let n = match peer.rx.unprotect_rtp(&mut out) {
                        Ok(n) => n,
                        // A receiver drops these, as it should; not the router's fault
                        // when the publisher repeats or reorders sequence numbers.
                        Err(SrtpError::Replayed | SrtpError::TooOld) => continue,
                        Err(e) => panic!("RTP egress to {dst} does not open: {e:?}"),
                    };
                    let ssrc = u32::from_be_bytes([out[8], out[9], out[10], out[11]]);
                    assert!(
                        peer.consumer_ssrcs.contains(&ssrc),
                        "RTP egress to {dst} with SSRC {ssrc:#x}, not one of its consumers"
                    );
                    let sent = sent.expect("only an authentic packet is forwarded");
                    assert_eq!(n, sent.len(), "forwarded packet changed length");
                    assert_eq!(out[0], sent[0], "forwarded packet changed its first byte");
                    assert_eq!(out[1] & 0x80, sent[1] & 0x80, "marker bit changed");
                    assert!(
                        out[12..n] == sent[12..],
                        "forwarded packet changed after byte 12"
                    );
                }
                DatagramKind::Rtcp => {
                    // The router's own RTCP (PLI and NACK to publishers,
                    // receiver reports and transport-cc feedback to them,
                    // translated sender reports to subscribers): to a peer
                    // of the room, under that peer's keys, every item
                    // well-formed. An endpoint learns its address from its
                    // first authentic packet, so the sender's address (the
                    // stranger's, holding the peer's keys) counts as its.
                    let at = if dst == src {
                        Some(from)
                    } else {
                        self.peers.iter().position(|p| p.addr == dst)
                    };
                    let Some(peer) = at.and_then(|i| self.peers.get_mut(i)) else {
                        panic!("RTCP egress to {dst}, which is no endpoint");
                    };
                    let n = match peer.rx.unprotect_rtcp(&mut out) {
                        Ok(n) => n,
                        Err(e) => panic!("RTCP egress to {dst} does not open: {e:?}"),
                    };
                    for item in RtcpIter::new(&out[..n]) {
                        assert!(
                            matches!(
                                item,
                                Ok(RtcpPacket::Pli(_)
                                    | RtcpPacket::Fir(_)
                                    | RtcpPacket::Nack(_)
                                    | RtcpPacket::ReceiverReport(_)
                                    | RtcpPacket::SenderReport(_)
                                    | RtcpPacket::TransportCc(_)
                                    | RtcpPacket::Remb(_))
                            ),
                            "the router's RTCP to {dst} holds {item:?}"
                        );
                    }
                }
                other => panic!("egress of kind {other:?} to {dst} from an SDES endpoint"),
            }
        }
    }
}

/// A fixed array of send buffers.
#[derive(Debug)]
struct Sink {
    bufs: Box<[[u8; BUF_LEN]; SLOTS]>,
    sent: [(usize, SocketAddr); SLOTS],
    used: usize,
    limit: usize,
}

impl Sink {
    fn new() -> Self {
        Self {
            bufs: Box::new([[0xa5; BUF_LEN]; SLOTS]),
            sent: [(0, STRANGER); SLOTS],
            used: 0,
            limit: SLOTS,
        }
    }

    fn reset(&mut self, limit: usize) {
        self.used = 0;
        self.limit = limit;
    }
}

impl Transmit for Sink {
    fn buffer(&mut self) -> Option<&mut [u8]> {
        if self.used >= self.limit {
            return None;
        }
        let buf = &mut self.bufs[self.used];
        buf.fill(0xa5);
        Some(buf)
    }

    fn send(&mut self, len: usize, dst: SocketAddr) {
        assert!(
            len <= BUF_LEN,
            "send of {len} bytes from a {BUF_LEN}-byte buffer"
        );
        self.sent[self.used] = (len, dst);
        self.used += 1;
    }
}
