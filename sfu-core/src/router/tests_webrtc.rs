//! ICE-lite and DTLS-SRTP through the router: checks answered only when
//! authentic, addresses set only by valid checks, keys from the handshake,
//! consent expiry.

use super::*;
use crate::dtls::{DtlsRole, DtlsSession, DtlsState};
use crate::srtp::SrtpConfig;
use crate::srtp::SrtpContext;
use crate::wire::rtcp::{RtcpIter, RtcpPacket};
use crate::wire::rtp::{RtpHeader, write_header};
use crate::wire::stun::{self, StunMessage, StunWriter};

/// Collects egress datagrams.
#[derive(Default)]
struct Sink {
    buf: Vec<u8>,
    sent: Vec<(Vec<u8>, SocketAddr)>,
}

impl Transmit for Sink {
    fn buffer(&mut self) -> Option<&mut [u8]> {
        self.buf.clear();
        self.buf.resize(2048, 0);
        Some(&mut self.buf)
    }
    fn send(&mut self, len: usize, dst: SocketAddr) {
        self.sent.push((self.buf[..len].to_vec(), dst));
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

const LOCAL_UFRAG: &str = "nodeufrag";
const LOCAL_PWD: &str = "node-password-0123456789ab";
const REMOTE_UFRAG: &str = "peer";

/// A browser-like peer: its certificate and DTLS client.
struct Browser {
    dtls: DtlsSession,
    keys: Option<crate::dtls::SrtpKeys>,
}

fn webrtc_endpoint(id: u64, role: Role, tracks: Vec<TrackConfig>, peer_cert: &DtlsCert) -> Command {
    simulcast_endpoint(id, role, tracks, Vec::new(), None, peer_cert)
}

fn simulcast_endpoint(
    id: u64,
    role: Role,
    tracks: Vec<TrackConfig>,
    rid_tracks: Vec<RidTrack>,
    rid_extension: Option<u8>,
    peer_cert: &DtlsCert,
) -> Command {
    Command::AddWebrtcEndpoint(
        Box::new(EndpointConfig {
            id: EndpointId(id),
            room: RoomId(1),
            role,
            profile: Profile::AeadAes128Gcm,
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
            ice: IceCredentials {
                local_ufrag: format!("{LOCAL_UFRAG}{id}"),
                local_pwd: LOCAL_PWD.into(),
                remote_ufrag: REMOTE_UFRAG.into(),
                remote_pwd: "peer-password-0123456789".into(),
            },
            dtls_role: DtlsRole::Server,
            remote_fingerprint: peer_cert.fingerprint().clone(),
            video_payload_type: Some(102),
            audio_payload_type: None,
            rid_tracks,
            rid_extension,
            twcc_extension: None,
            audio_level_extension: None,
            repaired_rid_extension: None,
            twcc_send_extension: None,
        }),
    )
}

fn binding_request(id: u64, pwd: &str, use_candidate: bool, tid: u8) -> Vec<u8> {
    let mut buf = vec![0u8; 512];
    let mut w = StunWriter::new(&mut buf, stun::BINDING_REQUEST, &[tid; 12]).unwrap();
    w.add_username(format!("{LOCAL_UFRAG}{id}:{REMOTE_UFRAG}").as_bytes())
        .unwrap();
    w.add_priority(0x6e00_1eff).unwrap();
    w.add_ice_controlling(42).unwrap();
    if use_candidate {
        w.add_use_candidate().unwrap();
    }
    w.add_message_integrity(pwd.as_bytes()).unwrap();
    w.add_fingerprint().unwrap();
    let n = w.finish();
    buf.truncate(n);
    buf
}

struct Fixture {
    router: Router,
    now: Instant,
}

fn fixture() -> Fixture {
    let now = Instant::now();
    let mut router = Router::new(RouterConfig::default());
    router.set_dtls_cert(DtlsCert::generate().unwrap());
    router
        .handle_command(now, Command::CreateRoom(RoomId(1)))
        .unwrap();
    Fixture { router, now }
}

impl Fixture {
    fn feed(&mut self, src: SocketAddr, datagram: &[u8]) -> Vec<(Vec<u8>, SocketAddr)> {
        self.input(src, datagram).1
    }

    /// Whether the router accepted `datagram` as coming from `src`.
    fn accepted(&mut self, src: SocketAddr, datagram: &[u8]) -> bool {
        self.input(src, datagram).0
    }

    /// `handle_input` of a copy of `datagram`: whether it was accepted,
    /// and what the router sent.
    fn input(&mut self, src: SocketAddr, datagram: &[u8]) -> (bool, Vec<(Vec<u8>, SocketAddr)>) {
        let mut sink = Sink::default();
        let mut d = datagram.to_vec();
        let accepted = self.router.handle_input(self.now, src, &mut d, &mut sink);
        (accepted, sink.sent)
    }

    /// Runs ICE and DTLS for endpoint `id` from `src` with the browser.
    fn connect(&mut self, id: u64, src: SocketAddr, browser: &mut Browser) {
        let out = self.feed(src, &binding_request(id, LOCAL_PWD, true, id as u8));
        assert_eq!(out.len(), 1, "a valid check is answered");
        let mut to_node: Vec<Vec<u8>> = Vec::new();
        let mut buf = [0u8; 2048];
        for _ in 0..50 {
            while let Some(n) = browser.dtls.poll_datagram(&mut buf) {
                to_node.push(buf[..n].to_vec());
            }
            for d in to_node.drain(..) {
                for (reply, dst) in self.feed(src, &d) {
                    assert_eq!(dst, src);
                    browser.dtls.handle_datagram(&reply, self.now).unwrap();
                }
            }
            if browser.dtls.state() == DtlsState::Connected {
                break;
            }
        }
        assert_eq!(browser.dtls.state(), DtlsState::Connected);
        browser.keys = browser.dtls.take_keys();
        assert!(browser.keys.is_some());
    }
}

fn browser(cert: &DtlsCert, node: &Fixture) -> Browser {
    let node_fp = node
        .router
        .dtls_cert
        .as_ref()
        .unwrap()
        .fingerprint()
        .clone();
    Browser {
        dtls: DtlsSession::new(cert, DtlsRole::Client, node_fp, node.now).unwrap(),
        keys: None,
    }
}

fn ctx(profile: Profile, master: &[u8]) -> SrtpContext {
    let (k, s) = master.split_at(profile.key_len());
    SrtpContext::new(profile, k, s, SrtpConfig::default()).unwrap()
}

#[test]
fn valid_check_is_answered_and_sets_the_address() {
    let mut f = fixture();
    let peer = DtlsCert::generate().unwrap();
    f.router
        .handle_command(f.now, webrtc_endpoint(1, Role::Publish, vec![], &peer))
        .unwrap();
    let out = f.feed(addr(5000), &binding_request(1, LOCAL_PWD, false, 1));
    assert_eq!(out.len(), 1);
    let (reply, dst) = &out[0];
    assert_eq!(*dst, addr(5000));
    let msg = StunMessage::new_checked(reply).unwrap();
    assert_eq!(msg.message_type(), stun::BINDING_SUCCESS);
    assert_eq!(msg.transaction_id(), &[1; 12]);
    assert_eq!(msg.xor_mapped_address(), Some(addr(5000)));
    msg.verify_integrity(LOCAL_PWD.as_bytes()).unwrap();
    msg.verify_fingerprint().unwrap();
    assert_eq!(f.router.by_addr.get(&addr(5000)), Some(&0));
    assert_eq!(f.router.stats().get(Counter::IceChecks), 1);

    // Another address without USE-CANDIDATE is answered but does not move it.
    assert_eq!(
        f.feed(addr(5001), &binding_request(1, LOCAL_PWD, false, 2))
            .len(),
        1
    );
    assert_eq!(f.router.by_addr.get(&addr(5000)), Some(&0));
    assert!(!f.router.by_addr.contains_key(&addr(5001)));
    // Nomination from it does.
    f.feed(addr(5001), &binding_request(1, LOCAL_PWD, true, 3));
    assert_eq!(f.router.by_addr.get(&addr(5001)), Some(&0));
    assert!(!f.router.by_addr.contains_key(&addr(5000)));
}

#[test]
fn bad_checks_are_dropped_unanswered() {
    let mut f = fixture();
    let peer = DtlsCert::generate().unwrap();
    f.router
        .handle_command(f.now, webrtc_endpoint(1, Role::Publish, vec![], &peer))
        .unwrap();
    // Wrong MESSAGE-INTEGRITY key.
    assert!(
        f.feed(addr(5000), &binding_request(1, "wrong-password", true, 1))
            .is_empty()
    );
    assert_eq!(f.router.stats().dropped(DropReason::StunAuthFailed), 1);
    // Unknown ufrag.
    assert!(
        f.feed(addr(5000), &binding_request(9, LOCAL_PWD, true, 1))
            .is_empty()
    );
    assert_eq!(f.router.stats().dropped(DropReason::StunUnknownUser), 1);
    // A flipped bit breaks the FINGERPRINT.
    let mut bad = binding_request(1, LOCAL_PWD, true, 1);
    bad[46] ^= 1; // inside PRIORITY: integrity and fingerprint break
    assert!(f.feed(addr(5000), &bad).is_empty());
    assert_eq!(f.router.stats().dropped(DropReason::StunAuthFailed), 2);
    // Not a request.
    let mut resp = vec![0u8; 64];
    let n = StunWriter::new(&mut resp, stun::BINDING_SUCCESS, &[3; 12])
        .unwrap()
        .finish();
    assert!(f.feed(addr(5000), &resp[..n]).is_empty());
    assert_eq!(f.router.stats().dropped(DropReason::StunUnhandled), 1);
    // DTLS from an unverified address goes nowhere.
    assert!(f.feed(addr(5000), &[22, 254, 253, 0, 0]).is_empty());
    assert_eq!(f.router.stats().dropped(DropReason::DtlsUnhandled), 1);
    assert!(f.router.by_addr.is_empty(), "no address was learnt");
}

#[test]
fn dtls_keys_forward_media_between_browsers() {
    let mut f = fixture();
    let pub_cert = DtlsCert::generate().unwrap();
    let sub_cert = DtlsCert::generate().unwrap();
    let track = TrackConfig {
        kind: MediaKind::Video,
        ssrc: 4242,
        payload_type: 96,
        rtx: None,
        codec: crate::codec::Codec::Vp8,
        layer_of: None,
        red_payload_type: None,
        source: TrackSource::Camera,
    };
    f.router
        .handle_command(
            f.now,
            webrtc_endpoint(1, Role::Publish, vec![track], &pub_cert),
        )
        .unwrap();
    let c = match f
        .router
        .handle_command(
            f.now,
            webrtc_endpoint(2, Role::Subscribe, vec![], &sub_cert),
        )
        .unwrap()
    {
        Outcome::Consumers(c) => c,
        other => panic!("consumers expected, got {other:?}"),
    };
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].payload_type, 102, "the subscriber's payload type");

    // Media before the handshake is refused.
    let mut early = [0u8; 64];
    let n = write_header(
        &mut early,
        &RtpHeader {
            payload_type: 96,
            sequence_number: 1,
            timestamp: 1,
            ssrc: 4242,
            marker: false,
        },
        &[],
    )
    .unwrap();
    assert!(f.feed(addr(7000), &early[..n + 20]).is_empty());
    assert_eq!(f.router.stats().dropped(DropReason::NotConnected), 1);

    let mut publisher = browser(&pub_cert, &f);
    let mut subscriber = browser(&sub_cert, &f);
    f.connect(1, addr(7000), &mut publisher);
    f.connect(2, addr(7001), &mut subscriber);
    assert_eq!(f.router.stats().get(Counter::DtlsHandshakes), 2);

    let pk = publisher.keys.take().unwrap();
    let sk = subscriber.keys.take().unwrap();
    assert_eq!(pk.profile, Profile::AeadAes128Gcm);
    let mut pub_tx = ctx(pk.profile, &pk.local_master);
    let mut sub_rx = ctx(sk.profile, &sk.remote_master);

    let mut buf = vec![0u8; 1500];
    let n = write_header(
        &mut buf,
        &RtpHeader {
            payload_type: 96,
            sequence_number: 77,
            timestamp: 9000,
            ssrc: 4242,
            marker: true,
        },
        &[],
    )
    .unwrap();
    buf[n..n + 100].fill(0x5a);
    let len = pub_tx.protect_rtp(&mut buf, n + 100).unwrap();
    let out = f.feed(addr(7000), &buf[..len]);
    // The subscriber's copy (and a PLI to the publisher for its decoder).
    let to_sub: Vec<_> = out.iter().filter(|(_, d)| *d == addr(7001)).collect();
    assert_eq!(to_sub.len(), 1);
    let mut copy = to_sub[0].0.clone();
    let plain = sub_rx.unprotect_rtp(&mut copy).unwrap();
    assert_eq!(copy[1] & 0x7f, 102);
    assert_eq!(wire::be32(&copy, 8), c[0].ssrc);
    assert!(copy[12..plain].iter().all(|&b| b == 0x5a));
    assert!(
        out.iter().any(|(_, d)| *d == addr(7000)),
        "a keyframe request went to the publisher"
    );

    // A media packet from the subscriber's address claiming the publisher's
    // SSRC is refused.
    assert!(f.feed(addr(7001), &buf[..len]).is_empty());
    assert_eq!(f.router.stats().dropped(DropReason::AddressMismatch), 1);

    // Consent: 31 s without a check ends both sessions (RFC 7675; there is
    // no ICE restart): removed, reported, and a late check is not answered.
    let later = f.now + CONSENT_TIMEOUT + Duration::from_secs(1);
    f.router.handle_timeout(later, &mut Sink::default());
    assert_eq!(f.router.stats().get(Counter::ConsentExpired), 2);
    assert_eq!(f.router.endpoints(), 0);
    match f.router.handle_command(later, Command::TakeRemoved) {
        Ok(Outcome::Removed(removed)) => {
            assert_eq!(removed.len(), 2);
            assert!(
                removed
                    .iter()
                    .all(|(_, r)| *r == RemovalReason::ConsentLost)
            );
        }
        other => panic!("{other:?}"),
    }
    f.now = later;
    assert!(
        f.feed(addr(7000), &binding_request(1, LOCAL_PWD, true, 9))
            .is_empty()
    );
    assert_eq!(f.router.by_addr.get(&addr(7000)), None);
}

/// An SRTP packet of `ssrc` with header extensions and a 0x5a payload.
fn srtp_packet(
    tx: &mut SrtpContext,
    ssrc: u32,
    seq: u16,
    payload_type: u8,
    extensions: &[(u8, &[u8])],
) -> Vec<u8> {
    let mut buf = vec![0u8; 1500];
    let n = write_header(
        &mut buf,
        &RtpHeader {
            payload_type,
            sequence_number: seq,
            timestamp: 3000 * u32::from(seq),
            ssrc,
            marker: true,
        },
        extensions,
    )
    .unwrap();
    buf[n..n + 100].fill(0x5a);
    let len = tx.protect_rtp(&mut buf, n + 100).unwrap();
    buf.truncate(len);
    buf
}

#[test]
fn simulcast_layers_bind_by_rid_from_authentic_packets() {
    const RID_EXT: u8 = 10;
    let mut f = fixture();
    let pub_cert = DtlsCert::generate().unwrap();
    let sub_cert = DtlsCert::generate().unwrap();
    let layer = |rid: &str| RidTrack {
        rid: rid.into(),
        kind: MediaKind::Video,
        payload_type: 96,
        rtx_payload_type: None,
        codec: crate::codec::Codec::Vp8,
        group: 0,
        source: TrackSource::Camera,
    };
    f.router
        .handle_command(
            f.now,
            simulcast_endpoint(
                1,
                Role::Publish,
                vec![],
                vec![layer("h"), layer("l")],
                Some(RID_EXT),
                &pub_cert,
            ),
        )
        .unwrap();
    let c = match f
        .router
        .handle_command(
            f.now,
            webrtc_endpoint(2, Role::Subscribe, vec![], &sub_cert),
        )
        .unwrap()
    {
        Outcome::Consumers(c) => c,
        other => panic!("consumers expected, got {other:?}"),
    };
    assert!(c.is_empty(), "no layer is bound yet");

    let mut publisher = browser(&pub_cert, &f);
    let mut subscriber = browser(&sub_cert, &f);
    f.connect(1, addr(7000), &mut publisher);
    f.connect(2, addr(7001), &mut subscriber);
    let pk = publisher.keys.take().unwrap();
    let sk = subscriber.keys.take().unwrap();
    let mut pub_tx = ctx(pk.profile, &pk.local_master);
    let mut sub_rx = ctx(sk.profile, &sk.remote_master);
    let unknown_before = f.router.stats().dropped(DropReason::UnknownSource);

    // An authentic packet naming no announced rid binds nothing.
    let p = srtp_packet(&mut pub_tx, 6000, 1, 96, &[(RID_EXT, b"x")]);
    assert!(f.feed(addr(7000), &p).is_empty());
    // A forged one (bad tag) naming a real rid binds nothing either.
    let mut forged = srtp_packet(&mut pub_tx, 5000, 1, 96, &[(RID_EXT, b"h")]);
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert!(f.feed(addr(7000), &forged).is_empty());
    assert_eq!(f.router.stats().dropped(DropReason::SrtpAuthFailed), 1);
    // RTX: a repaired-rid (another extension id) and another payload type.
    let rtx = srtp_packet(&mut pub_tx, 5100, 1, 97, &[(11, b"h")]);
    assert!(f.feed(addr(7000), &rtx).is_empty());
    // The right rid with the wrong payload type does not bind either.
    let wrong_pt = srtp_packet(&mut pub_tx, 5200, 1, 97, &[(RID_EXT, b"h")]);
    assert!(f.feed(addr(7000), &wrong_pt).is_empty());
    // Nor does an authentic packet from another address.
    let elsewhere = srtp_packet(&mut pub_tx, 5300, 1, 96, &[(RID_EXT, b"h")]);
    assert!(f.feed(addr(7999), &elsewhere).is_empty());
    assert_eq!(f.router.stats().get(Counter::SimulcastLayersBound), 0);
    assert_eq!(
        f.router.stats().dropped(DropReason::UnknownSource),
        unknown_before + 4
    );
    for ssrc in [6000, 5000, 5100, 5200, 5300] {
        assert!(!f.router.producers.contains_key(&ssrc), "{ssrc}");
    }

    // The first authentic packet of layer "h" binds it and is consumed.
    let drops_before: u64 = f.router.stats().drops.iter().sum();
    let first = srtp_packet(&mut pub_tx, 5000, 2, 96, &[(RID_EXT, b"h")]);
    let out = f.feed(addr(7000), &first);
    assert!(
        out.iter().all(|(_, d)| *d != addr(7001)),
        "nothing forwarded"
    );
    assert_eq!(f.router.stats().get(Counter::SimulcastLayersBound), 1);
    assert_eq!(f.router.stats().get(Counter::RtpIn), 0);
    assert_eq!(f.router.stats().drops.iter().sum::<u64>(), drops_before);
    assert!(f.router.producers.contains_key(&5000));
    let sub_slot = f.router.by_id[&EndpointId(2)];
    let consumers = f.router.consumer_infos(sub_slot);
    assert_eq!(consumers.len(), 1);
    assert_eq!(consumers[0].producer_ssrc, Some(5000));

    // The next one is forwarded and decrypts at the subscriber.
    let second = srtp_packet(&mut pub_tx, 5000, 3, 96, &[(RID_EXT, b"h")]);
    let out = f.feed(addr(7000), &second);
    let to_sub: Vec<_> = out.iter().filter(|(_, d)| *d == addr(7001)).collect();
    assert_eq!(to_sub.len(), 1);
    let mut copy = to_sub[0].0.clone();
    let plain = sub_rx.unprotect_rtp(&mut copy).unwrap();
    assert_eq!(copy[1] & 0x7f, 102);
    assert_eq!(wire::be32(&copy, 8), consumers[0].ssrc);
    assert!(copy[plain - 100..plain].iter().all(|&b| b == 0x5a));
    assert_eq!(f.router.stats().get(Counter::RtpIn), 1);

    // "h" is bound: another SSRC claiming it binds nothing; "l" still can.
    let again = srtp_packet(&mut pub_tx, 5001, 1, 96, &[(RID_EXT, b"h")]);
    assert!(f.feed(addr(7000), &again).is_empty());
    assert!(!f.router.producers.contains_key(&5001));
    let low = srtp_packet(&mut pub_tx, 5002, 1, 96, &[(RID_EXT, b"l")]);
    f.feed(addr(7000), &low);
    assert_eq!(f.router.stats().get(Counter::SimulcastLayersBound), 2);
    // Both layers are one track: still one consumer, on the track.
    let consumers = f.router.consumer_infos(sub_slot);
    assert_eq!(consumers.len(), 1);
    assert_eq!(consumers[0].producer_ssrc, Some(5000));

    // The control plane sees the learnt layers, with their rids.
    let listed = match f
        .router
        .handle_command(f.now, Command::Producers(RoomId(1)))
        .unwrap()
    {
        Outcome::Producers(p) => p,
        other => panic!("producers expected, got {other:?}"),
    };
    let seen: Vec<(u64, u32, Option<&str>, u32)> = listed
        .iter()
        .map(|p| (p.endpoint.0, p.ssrc, p.rid.as_deref(), p.group))
        .collect();
    assert_eq!(
        seen,
        [(1, 5000, Some("h"), 5000), (1, 5002, Some("l"), 5000)]
    );
    assert!(
        listed
            .iter()
            .all(|p| p.kind == MediaKind::Video && p.payload_type == 96)
    );
    assert_eq!(
        f.router
            .handle_command(f.now, Command::Producers(RoomId(9))),
        Err(RouterError::UnknownRoom)
    );

    // Removing the publisher removes the learnt producers too.
    f.router
        .handle_command(f.now, Command::RemoveEndpoint(EndpointId(1)))
        .unwrap();
    assert!(f.router.producers.is_empty());
}

#[test]
fn rid_tracks_are_checked() {
    let mut f = fixture();
    let peer = DtlsCert::generate().unwrap();
    let layer = |rid: &str, payload_type: u8| RidTrack {
        rid: rid.into(),
        kind: MediaKind::Video,
        payload_type,
        rtx_payload_type: None,
        codec: crate::codec::Codec::Vp8,
        group: 0,
        source: TrackSource::Camera,
    };
    for (role, rids) in [
        (Role::Subscribe, vec![layer("h", 96)]),
        (Role::Publish, vec![layer("h", 96), layer("h", 96)]),
        (Role::Publish, vec![layer("", 96)]),
        (Role::Publish, vec![layer("h", 200)]),
    ] {
        let e = f
            .router
            .handle_command(
                f.now,
                simulcast_endpoint(1, role, vec![], rids.clone(), Some(10), &peer),
            )
            .unwrap_err();
        assert!(matches!(e, RouterError::Invalid(_)), "{rids:?}: {e:?}");
    }
    assert_eq!(f.router.endpoints(), 0);
}

/// `handle_input` says a datagram was accepted (what AF_XDP learns a
/// next-hop MAC from) only when it proves its source: a valid check that
/// leaves `src` the endpoint's address, SRTP with the endpoint's keys.
/// Never DTLS (OpenSSL drops a forged record silently), never a valid
/// check from an address that is not the endpoint's, nothing dropped.
#[test]
fn only_datagrams_that_prove_their_source_are_accepted() {
    let mut f = fixture();
    let peer = DtlsCert::generate().unwrap();
    f.router
        .handle_command(f.now, webrtc_endpoint(1, Role::Publish, vec![], &peer))
        .unwrap();
    assert!(!f.accepted(addr(5000), &binding_request(1, "wrong-password", true, 1)));
    assert!(f.accepted(addr(5000), &binding_request(1, LOCAL_PWD, true, 2)));
    // Answered (ICE needs it) but not its endpoint's address.
    assert!(!f.accepted(addr(5001), &binding_request(1, LOCAL_PWD, false, 3)));
    assert_eq!(f.router.by_addr.get(&addr(5000)), Some(&0));
    // A ClientHello-shaped record from the verified address: handled, not
    // accepted (and so is garbage).
    let mut browser = browser(&peer, &f);
    let mut hello = [0u8; 2048];
    let n = browser
        .dtls
        .poll_datagram(&mut hello)
        .expect("a ClientHello");
    assert!(!f.accepted(addr(5000), &hello[..n]));
    assert!(!f.accepted(addr(5000), &[22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
    assert!(!f.accepted(addr(5000), &[0xff; 40]));
}

#[test]
fn garbage_dtls_from_a_verified_address_is_counted() {
    let mut f = fixture();
    let peer = DtlsCert::generate().unwrap();
    f.router
        .handle_command(f.now, webrtc_endpoint(1, Role::Publish, vec![], &peer))
        .unwrap();
    f.feed(addr(5000), &binding_request(1, LOCAL_PWD, true, 1));
    let mut seed = 0x1234_5678u32;
    for _ in 0..2000 {
        let len = (seed % 200) as usize + 13;
        let mut d: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as u8
            })
            .collect();
        d[0] = 20 + (d[0] % 44); // 20..=63: classified as DTLS
        f.feed(addr(5000), &d);
    }
    let s = f.router.stats();
    assert!(s.dropped(DropReason::DtlsFailed) > 0);
    assert_eq!(s.get(Counter::DtlsHandshakes), 0);
}

/// The transport-wide sequence number extension id of the TWCC tests.
const TWCC_EXT: u8 = 5;

/// Endpoint 1 publishing video SSRC 4000 from `addr(7000)`, connected over
/// ICE and DTLS, with transport-cc negotiated on `twcc_extension`; returns
/// its SRTP contexts (protect what it sends, open what the node sends it).
fn twcc_publisher(f: &mut Fixture, twcc_extension: Option<u8>) -> (SrtpContext, SrtpContext) {
    let pub_cert = DtlsCert::generate().unwrap();
    let track = TrackConfig {
        kind: MediaKind::Video,
        ssrc: 4000,
        payload_type: 96,
        rtx: Some(RtxStream {
            ssrc: 4001,
            payload_type: 97,
        }),
        codec: crate::codec::Codec::Vp8,
        layer_of: None,
        red_payload_type: None,
        source: TrackSource::Camera,
    };
    let mut cmd = webrtc_endpoint(1, Role::Publish, vec![track], &pub_cert);
    if let Command::AddWebrtcEndpoint(_, t) = &mut cmd {
        t.twcc_extension = twcc_extension;
    }
    f.router.handle_command(f.now, cmd).unwrap();
    let mut publisher = browser(&pub_cert, f);
    f.connect(1, addr(7000), &mut publisher);
    let keys = publisher.keys.take().unwrap();
    (
        ctx(keys.profile, &keys.local_master),
        ctx(keys.profile, &keys.remote_master),
    )
}

#[test]
fn transport_cc_feedback_reports_authentic_arrivals() {
    let mut f = fixture();
    let (mut pub_tx, mut pub_rx) = twcc_publisher(&mut f, Some(TWCC_EXT));

    // Transport-wide numbers 100, 101, (102 lost), 103, 104 over 4 ms; a
    // forged packet claiming 102 does not count.
    let t0 = f.now;
    for (i, tw) in [100u16, 101, 103, 104].into_iter().enumerate() {
        f.now = t0 + Duration::from_millis(i as u64);
        let p = srtp_packet(
            &mut pub_tx,
            4000,
            i as u16,
            96,
            &[(TWCC_EXT, &tw.to_be_bytes())],
        );
        f.feed(addr(7000), &p);
        if i == 1 {
            let mut forged = srtp_packet(
                &mut pub_tx,
                4000,
                50,
                96,
                &[(TWCC_EXT, &102u16.to_be_bytes())],
            );
            let last = forged.len() - 1;
            forged[last] ^= 1;
            f.feed(addr(7000), &forged);
        }
    }
    assert_eq!(f.router.stats().get(Counter::RtpIn), 4);

    let mut sink = Sink::default();
    f.router
        .handle_timeout(t0 + Duration::from_millis(60), &mut sink);
    assert_eq!(sink.sent.len(), 1, "one feedback packet");
    assert_eq!(f.router.stats().get(Counter::TwccFeedbackSent), 1);
    let (mut packet, dst) = sink.sent.remove(0);
    assert_eq!(dst, addr(7000));
    let n = pub_rx.unprotect_rtcp(&mut packet).unwrap();
    let Some(Ok(RtcpPacket::TransportCc(fb))) = RtcpIter::new(&packet[..n]).next() else {
        panic!("transport-cc expected");
    };
    assert_eq!(fb.media_ssrc(), 4000);
    assert_eq!(fb.base_seq(), 100);
    let statuses: Vec<(u16, bool)> = fb.packets().map(|(s, _, d)| (s, d.is_some())).collect();
    assert_eq!(
        statuses,
        [
            (100, true),
            (101, true),
            (102, false),
            (103, true),
            (104, true)
        ]
    );
    let deltas: Vec<i64> = fb.packets().filter_map(|(_, _, d)| d).skip(1).collect();
    assert_eq!(deltas, [1000, 1000, 1000], "1 ms apart");

    // Nothing new: no feedback in the next round; then only the new number.
    let mut sink = Sink::default();
    f.router
        .handle_timeout(t0 + Duration::from_millis(200), &mut sink);
    assert!(sink.sent.is_empty());
    f.now = t0 + Duration::from_millis(210);
    let p = srtp_packet(
        &mut pub_tx,
        4000,
        9,
        96,
        &[(TWCC_EXT, &105u16.to_be_bytes())],
    );
    f.feed(addr(7000), &p);
    f.router
        .handle_timeout(t0 + Duration::from_millis(260), &mut sink);
    assert_eq!(sink.sent.len(), 1);
    let (mut packet, _) = sink.sent.remove(0);
    let n = pub_rx.unprotect_rtcp(&mut packet).unwrap();
    let Some(Ok(RtcpPacket::TransportCc(fb))) = RtcpIter::new(&packet[..n]).next() else {
        panic!("transport-cc expected");
    };
    assert_eq!((fb.base_seq(), fb.packet_status_count()), (105, 1));
    assert_eq!(fb.fb_pkt_count(), 1);
}

/// A publisher probes its uplink with padding on its RTX stream: the node
/// drops the padding but acknowledges its arrival, or the publisher's
/// estimate (and its simulcast layers) would be held down by "lost" probes.
#[test]
fn transport_cc_feedback_acknowledges_rtx_padding_probes() {
    let mut f = fixture();
    let (mut pub_tx, mut pub_rx) = twcc_publisher(&mut f, Some(TWCC_EXT));
    let t0 = f.now;
    let media = srtp_packet(
        &mut pub_tx,
        4000,
        1,
        96,
        &[(TWCC_EXT, &300u16.to_be_bytes())],
    );
    f.feed(addr(7000), &media);
    for (i, tw) in [301u16, 302].into_iter().enumerate() {
        f.now = t0 + Duration::from_millis(1 + i as u64);
        let mut buf = vec![0u8; 1500];
        let n = write_header(
            &mut buf,
            &RtpHeader {
                payload_type: 97,
                sequence_number: 10 + i as u16,
                timestamp: 0,
                ssrc: 4001,
                marker: false,
            },
            &[(TWCC_EXT, &tw.to_be_bytes())],
        )
        .unwrap();
        // Padding only: the P bit, 200 bytes of padding.
        buf[0] |= 0x20;
        buf[n + 199] = 200;
        let len = pub_tx.protect_rtp(&mut buf, n + 200).unwrap();
        buf.truncate(len);
        f.feed(addr(7000), &buf);
    }
    assert_eq!(f.router.stats().dropped(DropReason::RtxPadding), 2);
    let mut sink = Sink::default();
    f.router
        .handle_timeout(t0 + Duration::from_millis(60), &mut sink);
    let (mut packet, _) = sink.sent.pop().expect("feedback");
    let n = pub_rx.unprotect_rtcp(&mut packet).unwrap();
    let Some(Ok(RtcpPacket::TransportCc(fb))) = RtcpIter::new(&packet[..n]).next() else {
        panic!("transport-cc expected");
    };
    let statuses: Vec<(u16, bool)> = fb.packets().map(|(s, _, d)| (s, d.is_some())).collect();
    assert_eq!(statuses, [(300, true), (301, true), (302, true)]);
}

#[test]
fn no_transport_cc_feedback_unless_negotiated() {
    let mut f = fixture();
    let (mut pub_tx, _) = twcc_publisher(&mut f, None);
    let p = srtp_packet(&mut pub_tx, 4000, 1, 96, &[(TWCC_EXT, &7u16.to_be_bytes())]);
    f.feed(addr(7000), &p);
    let mut sink = Sink::default();
    f.router
        .handle_timeout(f.now + Duration::from_millis(100), &mut sink);
    assert!(sink.sent.is_empty());
    assert_eq!(f.router.stats().get(Counter::TwccFeedbackSent), 0);
}

/// A WebRTC endpoint that has not connected within the pending timeout is
/// removed and handed to the control plane once; a connected one stays;
/// pending sessions count against their limit only while they live.
#[test]
fn unconnected_sessions_expire_and_are_reported_once() {
    let mut f = fixture();
    let cert = DtlsCert::generate().unwrap();
    let mut connected = browser(&cert, &f);
    f.router
        .handle_command(f.now, webrtc_endpoint(1, Role::Publish, vec![], &cert))
        .unwrap();
    f.connect(1, addr(5001), &mut connected);
    f.router
        .handle_command(f.now, webrtc_endpoint(2, Role::Subscribe, vec![], &cert))
        .unwrap();
    assert_eq!(f.router.endpoints(), 2);
    let start = f.now;
    // The connected one keeps its consent with a check 20 s in.
    f.now = start + Duration::from_secs(20);
    assert_eq!(
        f.feed(addr(5001), &binding_request(1, LOCAL_PWD, false, 9))
            .len(),
        1
    );
    f.now = start;
    let mut sink = Sink::default();
    let timeout = RouterConfig::default().pending_webrtc_timeout;
    f.router.handle_timeout(f.now + timeout, &mut sink);
    assert_eq!(f.router.endpoints(), 2, "not before the timeout");
    f.router
        .handle_timeout(f.now + timeout + Duration::from_millis(1), &mut sink);
    assert_eq!(f.router.endpoints(), 1);
    assert_eq!(f.router.stats().removed, [1, 0, 0, 0]);
    assert_eq!(
        f.router.handle_command(f.now, Command::TakeRemoved),
        Ok(Outcome::Removed(vec![(
            EndpointId(2),
            RemovalReason::NeverConnected
        )]))
    );
    assert_eq!(
        f.router.handle_command(f.now, Command::TakeRemoved),
        Ok(Outcome::Removed(vec![])),
        "reported once"
    );
}

/// A closed tab: no more ICE checks. Consent is lost after
/// [`CONSENT_TIMEOUT`] and the endpoint is removed and reported; its SSRC,
/// ufrag and slot are free, so the participant rejoins at once.
#[test]
fn lost_consent_removes_the_endpoint_and_it_can_rejoin() {
    let mut f = fixture();
    let cert = DtlsCert::generate().unwrap();
    let mut tab = browser(&cert, &f);
    let track = || {
        vec![TrackConfig {
            kind: MediaKind::Video,
            ssrc: 4000,
            payload_type: 96,
            rtx: None,
            codec: crate::codec::Codec::Vp8,
            layer_of: None,
            red_payload_type: None,
            source: TrackSource::Camera,
        }]
    };
    f.router
        .handle_command(f.now, webrtc_endpoint(1, Role::Publish, track(), &cert))
        .unwrap();
    f.connect(1, addr(5001), &mut tab);
    let mut sink = Sink::default();
    f.router.handle_timeout(f.now + CONSENT_TIMEOUT, &mut sink);
    assert_eq!(f.router.endpoints(), 1, "not before the consent timeout");
    let later = f.now + CONSENT_TIMEOUT + Duration::from_millis(1);
    f.router.handle_timeout(later, &mut sink);
    assert_eq!(f.router.endpoints(), 0);
    assert_eq!(
        f.router.handle_command(later, Command::TakeRemoved),
        Ok(Outcome::Removed(vec![(
            EndpointId(1),
            RemovalReason::ConsentLost
        )]))
    );
    // The same peer (same SSRC, same ufrag) joins again and connects.
    f.now = later;
    let mut again = browser(&cert, &f);
    f.router
        .handle_command(later, webrtc_endpoint(1, Role::Publish, track(), &cert))
        .unwrap();
    f.connect(1, addr(5002), &mut again);
    assert_eq!(f.router.stats().get(Counter::DtlsHandshakes), 2);
}

/// A DTLS close_notify from the peer removes its endpoint at once.
#[test]
fn dtls_close_notify_removes_the_endpoint_at_once() {
    let mut f = fixture();
    let cert = DtlsCert::generate().unwrap();
    let mut tab = browser(&cert, &f);
    f.router
        .handle_command(f.now, webrtc_endpoint(1, Role::Subscribe, vec![], &cert))
        .unwrap();
    f.connect(1, addr(5001), &mut tab);
    tab.dtls.close();
    let mut buf = [0u8; 2048];
    let n = tab
        .dtls
        .poll_datagram(&mut buf)
        .expect("a close_notify alert");
    f.feed(addr(5001), &buf[..n]);
    assert_eq!(f.router.endpoints(), 0);
    assert_eq!(f.router.stats().removed, [0, 0, 0, 1]);
    assert_eq!(
        f.router.handle_command(f.now, Command::TakeRemoved),
        Ok(Outcome::Removed(vec![(
            EndpointId(1),
            RemovalReason::DtlsClosed
        )]))
    );
}

/// A handshake that fails (the peer's certificate is not the one in its
/// offer) removes the pending endpoint at once.
#[test]
fn a_failed_handshake_removes_the_endpoint() {
    let mut f = fixture();
    let offered = DtlsCert::generate().unwrap();
    let actual = DtlsCert::generate().unwrap();
    let mut impostor = browser(&actual, &f);
    f.router
        .handle_command(f.now, webrtc_endpoint(1, Role::Subscribe, vec![], &offered))
        .unwrap();
    assert_eq!(
        f.feed(addr(5001), &binding_request(1, LOCAL_PWD, true, 1))
            .len(),
        1
    );
    let mut buf = [0u8; 2048];
    for _ in 0..10 {
        let mut to_node = Vec::new();
        while let Some(n) = impostor.dtls.poll_datagram(&mut buf) {
            to_node.push(buf[..n].to_vec());
        }
        for d in to_node {
            for (reply, _) in f.feed(addr(5001), &d) {
                let _ = impostor.dtls.handle_datagram(&reply, f.now);
            }
        }
        if f.router.endpoints() == 0 {
            break;
        }
    }
    assert_eq!(f.router.endpoints(), 0);
    assert_eq!(f.router.stats().removed, [0, 0, 1, 0]);
}

fn events(router: &mut Router) -> Vec<Event> {
    std::iter::from_fn(|| router.poll_event()).collect()
}

/// The lifecycle leaves the router as events: connected (with the
/// negotiated profile), then consent lost and removed, in that order.
#[test]
fn lifecycle_events_connected_consent_lost_removed() {
    let mut f = fixture();
    let cert = DtlsCert::generate().unwrap();
    let mut tab = browser(&cert, &f);
    f.router
        .handle_command(f.now, webrtc_endpoint(1, Role::Subscribe, vec![], &cert))
        .unwrap();
    assert_eq!(
        events(&mut f.router),
        vec![],
        "adding is the caller's own act"
    );
    f.connect(1, addr(5001), &mut tab);
    let profile = tab.keys.as_ref().unwrap().profile;
    assert_eq!(
        events(&mut f.router),
        vec![Event::Connected {
            endpoint: EndpointId(1),
            profile
        }]
    );
    let mut sink = Sink::default();
    f.router.handle_timeout(
        f.now + CONSENT_TIMEOUT + Duration::from_millis(1),
        &mut sink,
    );
    assert_eq!(
        events(&mut f.router),
        vec![
            Event::ConsentLost {
                endpoint: EndpointId(1)
            },
            Event::Removed {
                endpoint: EndpointId(1),
                reason: RemovalReason::ConsentLost
            }
        ]
    );
    assert_eq!(f.router.poll_event(), None);
}

/// `poll_timeout` names the next deadline: none on an idle router, the
/// pending-session deadline for an unconnected endpoint, then (once
/// connected) the consent deadline from its last check. `handle_timeout`
/// before it changes nothing.
#[test]
fn poll_timeout_tracks_the_earliest_deadline() {
    let mut f = fixture();
    assert_eq!(f.router.poll_timeout(), None, "an idle router sleeps");
    let cert = DtlsCert::generate().unwrap();
    let mut tab = browser(&cert, &f);
    f.router
        .handle_command(f.now, webrtc_endpoint(1, Role::Subscribe, vec![], &cert))
        .unwrap();
    let pending = RouterConfig::default().pending_webrtc_timeout;
    let first = f.router.poll_timeout().expect("a pending deadline");
    assert!(first <= f.now + pending, "{:?}", first - f.now);
    f.connect(1, addr(5001), &mut tab);
    // Connected: DTLS and the pending deadline are gone; a stale entry may
    // fire early, after which only the consent deadline remains.
    let mut sink = Sink::default();
    for _ in 0..4 {
        let at = f.router.poll_timeout().expect("a deadline");
        if at >= f.now + CONSENT_TIMEOUT {
            break;
        }
        f.router.handle_timeout(at, &mut sink);
    }
    let at = f.router.poll_timeout().expect("the consent deadline");
    assert!(
        at >= f.now + CONSENT_TIMEOUT && at <= f.now + CONSENT_TIMEOUT + Duration::from_millis(2),
        "{:?}",
        at - f.now
    );
    assert_eq!(f.router.endpoints(), 1);
}

/// Producers joining a room attach to every `All` subscriber and to the
/// explicit slots waiting for them, without re-synchronising the room:
/// the consumers reported for each subscriber are those a full re-sync
/// would give.
#[test]
fn joins_attach_new_producers_to_waiting_and_all_subscribers() {
    let mut f = fixture();
    let video = |ssrc| TrackConfig {
        kind: MediaKind::Video,
        ssrc,
        payload_type: 96,
        rtx: None,
        codec: crate::codec::Codec::Vp8,
        layer_of: None,
        red_payload_type: None,
        source: TrackSource::Camera,
    };
    let sdes = |id: u64, role, tracks: Vec<TrackConfig>, subscription| {
        Command::AddEndpoint(Box::new(EndpointConfig {
            id: EndpointId(id),
            room: RoomId(1),
            role,
            profile: Profile::AeadAes128Gcm,
            remote_master: vec![1; 28],
            local_master: vec![2; 28],
            tracks,
            remote: Some(addr(6000 + id as u16)),
            subscription,
            rtcp_ssrc: None,
            red_payload_type: None,
            rtx_payload_types: Default::default(),
            twcc_send_extension: None,
            participant: None,
            audio_level_extension: None,
        }))
    };
    let all = f
        .router
        .handle_command(f.now, sdes(1, Role::Subscribe, vec![], Subscription::All))
        .unwrap();
    assert_eq!(all, Outcome::Consumers(vec![]));
    let explicit = Subscription::Explicit {
        video: vec![7002, 7001],
        audio: vec![],
    };
    f.router
        .handle_command(f.now, sdes(2, Role::Subscribe, vec![], explicit))
        .unwrap();
    for (id, ssrc) in [(3, 7001), (4, 7002), (5, 7003)] {
        f.router
            .handle_command(
                f.now,
                sdes(id, Role::Publish, vec![video(ssrc)], Subscription::All),
            )
            .unwrap();
    }
    // What the joins left (incremental), before any re-sync.
    let incremental = |r: &Router, id| {
        let slot = r.by_id[&EndpointId(id)];
        r.consumer_infos(slot)
    };
    let before = (incremental(&f.router, 1), incremental(&f.router, 2));
    let producers = |r: &mut Router, id| match r.handle_command(
        f.now,
        Command::SetSubscription(
            EndpointId(id),
            match id {
                1 => Subscription::All,
                _ => Subscription::Explicit {
                    video: vec![7002, 7001],
                    audio: vec![],
                },
            },
        ),
    ) {
        Ok(Outcome::Consumers(c)) => c.iter().map(|c| c.producer_ssrc).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    // Setting the same subscription again re-syncs fully; nothing moves.
    assert_eq!(
        producers(&mut f.router, 1),
        vec![Some(7001), Some(7002), Some(7003)]
    );
    assert_eq!(producers(&mut f.router, 2), vec![Some(7002), Some(7001)]);
    assert_eq!(
        before,
        (incremental(&f.router, 1), incremental(&f.router, 2)),
        "the joins gave what a full re-sync gives"
    );
}
