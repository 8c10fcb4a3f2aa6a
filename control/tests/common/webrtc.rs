//! A browser-like WebRTC peer for tests over real HTTP and UDP: Chrome's
//! offers (fingerprint replaced by the test's certificate), ICE checks
//! built with `StunWriter`, a DTLS client handshake with `DtlsSession`,
//! SRTP both ways; and the simulcast publisher of the fixture.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use control::auth::Grant;
use serde_json::Value;
use sfu_core::dtls::{DtlsCert, DtlsRole, DtlsSession, DtlsState, Fingerprint};
use sfu_core::srtp::{SrtpConfig, SrtpContext};
use sfu_core::wire::rtp::{RtpHeader, write_header};
use sfu_core::wire::stun::{self, StunClass, StunMessage, StunWriter};
use sfu_core::wire::{DatagramKind, classify};

use super::TestNode;

pub const WHEP_OFFER: &str = include_str!("../fixtures/chrome-whep-offer.sdp");
pub const SIMULCAST_OFFER: &str =
    include_str!("../../../sfu-core/src/sdp/fixtures/chrome_simulcast.sdp");
/// The WHEP fixture's ICE ufrag.
pub const WHEP_UFRAG: &str = "1GiB";

/// An HTTP answer with its headers.
pub struct Reply {
    pub status: u16,
    pub headers: ureq::http::HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// Sends `method` to `path` with an optional bearer token, content type and body.
pub fn send(
    node: &TestNode,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: &str,
) -> Reply {
    send_to(&node.base, method, path, token, content_type, body)
}

/// [`send`] to the node whose API is at `base` (`http://host:port`).
pub fn send_to(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: &str,
) -> Reply {
    send_to_with(base, None, method, path, token, content_type, body)
}

/// [`send_to`] trusting only the CA `ca_pem` for `https://` bases.
pub fn send_to_with(
    base: &str,
    ca_pem: Option<&[u8]>,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: &str,
) -> Reply {
    let url = format!("{base}{path}");
    let agent = match ca_pem {
        None => agent(),
        Some(pem) => {
            let ca = ureq::tls::Certificate::from_pem(pem).expect("a PEM CA");
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .tls_config(
                    ureq::tls::TlsConfig::builder()
                        .root_certs(ureq::tls::RootCerts::new_with_certs(&[ca]))
                        .build(),
                )
                .build()
                .into()
        }
    };
    let mut builder = match method {
        "POST" => ureq::http::Request::post(url),
        "DELETE" => ureq::http::Request::delete(url),
        "PATCH" => ureq::http::Request::patch(url),
        "OPTIONS" => ureq::http::Request::options(url),
        "GET" => ureq::http::Request::get(url),
        "PUT" => ureq::http::Request::put(url),
        other => panic!("test uses unknown method {other}"),
    };
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    if let Some(ct) = content_type {
        builder = builder.header("content-type", ct);
    }
    let request = builder
        .body(body.to_owned())
        .expect("the request is well-formed");
    let mut response = agent.run(request).expect("the HTTP exchange completes");
    Reply {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        text: response
            .body_mut()
            .read_to_string()
            .expect("the body is UTF-8"),
    }
}

pub fn post_offer(node: &TestNode, path: &str, token: &str, offer: &str) -> Reply {
    send(
        node,
        "POST",
        path,
        Some(token),
        Some("application/sdp"),
        offer,
    )
}

/// `offer` with every `a=fingerprint` replaced by `cert`'s.
pub fn with_fingerprint(offer: &str, cert: &DtlsCert) -> String {
    offer
        .lines()
        .map(|l| {
            if l.starts_with("a=fingerprint:") {
                format!("a=fingerprint:{}", cert.fingerprint())
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
        + "\r\n"
}

/// Swaps payload types `a` and `b` in m= lines, rtpmap, rtcp-fb, fmtp and `apt=`.
pub fn swap_pt(sdp: &str, a: u8, b: u8) -> String {
    let swap = |t: &str| match t.parse::<u8>() {
        Ok(n) if n == a => b.to_string(),
        Ok(n) if n == b => a.to_string(),
        _ => t.to_owned(),
    };
    sdp.lines()
        .map(|l| {
            if l.starts_with("m=") {
                let mut parts: Vec<String> = l.split(' ').map(str::to_owned).collect();
                for p in parts.iter_mut().skip(3) {
                    *p = swap(p);
                }
                return parts.join(" ");
            }
            for prefix in ["a=rtpmap:", "a=rtcp-fb:", "a=fmtp:"] {
                if let Some(rest) = l.strip_prefix(prefix) {
                    let (pt, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                    let tail = match tail.strip_prefix("apt=") {
                        Some(apt) => format!("apt={}", swap(apt)),
                        None => tail.to_owned(),
                    };
                    return format!("{prefix}{} {tail}", swap(pt));
                }
            }
            l.to_owned()
        })
        .collect::<Vec<_>>()
        .join("\r\n")
        + "\r\n"
}

/// The first value of attribute `name` (`"a=ice-ufrag:"`) in `sdp`.
pub fn attr<'a>(sdp: &'a str, name: &str) -> &'a str {
    sdp.lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("the answer has {name}:\n{sdp}"))
}

/// The answer's media sections as text, in order.
pub fn sections(sdp: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in sdp.lines() {
        if line.starts_with("m=") {
            out.push(String::new());
        }
        if let Some(s) = out.last_mut() {
            s.push_str(line);
            s.push('\n');
        }
    }
    out
}

/// The SSRC of `a=ssrc:<n> cname:` in one section.
pub fn section_ssrc(section: &str) -> Option<u32> {
    section.lines().find_map(|l| {
        let rest = l.strip_prefix("a=ssrc:")?;
        let (n, attr) = rest.split_once(' ')?;
        attr.starts_with("cname:").then(|| n.parse().ok())?
    })
}

/// What the test needs from an answer.
pub struct Answer {
    pub ufrag: String,
    pub pwd: String,
    pub fingerprint: Fingerprint,
    pub candidate: SocketAddr,
}

pub fn read_answer(sdp: &str) -> Answer {
    let cand: Vec<&str> = attr(sdp, "a=candidate:").split(' ').collect();
    assert_eq!((cand[2], cand[6], cand[7]), ("udp", "typ", "host"), "{sdp}");
    let ip = cand[4].parse().expect("candidate IP");
    let port = cand[5].parse().expect("candidate port");
    Answer {
        ufrag: attr(sdp, "a=ice-ufrag:").to_owned(),
        pwd: attr(sdp, "a=ice-pwd:").to_owned(),
        fingerprint: Fingerprint::parse(attr(sdp, "a=fingerprint:")).expect("fingerprint"),
        candidate: SocketAddr::new(ip, port),
    }
}

/// A binding request from the controlling peer `peer_ufrag` to the node.
pub fn binding_request(node_ufrag: &str, peer_ufrag: &str, key: &str, txid: [u8; 12]) -> Vec<u8> {
    let mut buf = vec![0u8; 512];
    let mut w = StunWriter::new(&mut buf, stun::BINDING_REQUEST, &txid).expect("header");
    w.add_username(format!("{node_ufrag}:{peer_ufrag}").as_bytes())
        .expect("username");
    w.add_priority(0x6e00_1eff).expect("priority");
    w.add_ice_controlling(0x1234_5678_9abc_def0)
        .expect("controlling");
    w.add_use_candidate().expect("use-candidate");
    w.add_message_integrity(key.as_bytes()).expect("integrity");
    w.add_fingerprint().expect("fingerprint");
    let n = w.finish();
    buf.truncate(n);
    buf
}

pub fn socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("a loopback socket");
    s.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    s
}

/// Receives one datagram of `kind` before `deadline`, dropping others.
pub fn recv_kind(sock: &UdpSocket, kind: DatagramKind, deadline: Instant) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 2048];
    while Instant::now() < deadline {
        if let Ok((n, _)) = sock.recv_from(&mut buf)
            && classify(&buf[..n]) == kind
        {
            return Some(buf[..n].to_vec());
        }
    }
    None
}

/// Runs one ICE check with `key`; returns the success response's
/// XOR-MAPPED-ADDRESS, or `None` if the node did not answer within 1 s.
pub fn ice_check(sock: &UdpSocket, a: &Answer, peer_ufrag: &str, key: &str) -> Option<SocketAddr> {
    let txid: [u8; 12] = rand::random();
    let req = binding_request(&a.ufrag, peer_ufrag, key, txid);
    sock.send_to(&req, a.candidate).expect("send check");
    let deadline = Instant::now() + Duration::from_secs(1);
    let resp = recv_kind(sock, DatagramKind::Stun, deadline)?;
    let msg = StunMessage::new_checked(&resp).expect("a well-formed STUN answer");
    assert_eq!(msg.class(), StunClass::SuccessResponse);
    assert_eq!(msg.transaction_id(), &txid);
    msg.verify_integrity(a.pwd.as_bytes())
        .expect("the answer is signed with the node's password");
    msg.verify_fingerprint().expect("the answer's FINGERPRINT");
    msg.xor_mapped_address()
}

/// A browser-like peer after ICE and DTLS: its socket and SRTP contexts.
pub struct Peer {
    pub sock: UdpSocket,
    pub node: SocketAddr,
    pub tx: SrtpContext,
    pub rx: SrtpContext,
    pub dtls: DtlsSession,
}

/// ICE check, then a DTLS client handshake with `cert`; panics unless both
/// succeed within 10 s.
pub fn connect(a: &Answer, peer_ufrag: &str, cert: &DtlsCert) -> Peer {
    let sock = socket();
    let mapped = ice_check(&sock, a, peer_ufrag, &a.pwd).expect("the node answers a valid check");
    assert_eq!(mapped, sock.local_addr().expect("local address"));

    let mut dtls = DtlsSession::new(
        cert,
        DtlsRole::Client,
        a.fingerprint.clone(),
        Instant::now(),
    )
    .expect("a DTLS client session");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = vec![0u8; 2048];
    let mut buf = vec![0u8; 2048];
    while dtls.state() == DtlsState::Handshaking {
        assert!(Instant::now() < deadline, "DTLS handshake timed out");
        while let Some(n) = dtls.poll_datagram(&mut out) {
            sock.send_to(&out[..n], a.candidate).expect("send DTLS");
        }
        if let Ok((n, _)) = sock.recv_from(&mut buf)
            && classify(&buf[..n]) == DatagramKind::Dtls
        {
            let _ = dtls.handle_datagram(&buf[..n], Instant::now());
        }
        if dtls.poll_timeout().is_some_and(|t| Instant::now() >= t) {
            let _ = dtls.handle_timeout(Instant::now());
        }
    }
    // The last flight (the client's Finished is already out; flush anything left).
    while let Some(n) = dtls.poll_datagram(&mut out) {
        sock.send_to(&out[..n], a.candidate).expect("send DTLS");
    }
    assert_eq!(dtls.state(), DtlsState::Connected);
    let keys = dtls.take_keys().expect("keys after the handshake");
    let context = |master: &[u8]| {
        let (key, salt) = master.split_at(keys.profile.key_len());
        SrtpContext::new(keys.profile, key, salt, SrtpConfig::default()).expect("key lengths")
    };
    Peer {
        node: a.candidate,
        tx: context(&keys.local_master),
        rx: context(&keys.remote_master),
        sock,
        dtls,
    }
}

pub fn rtp(seq: u16, ssrc: u32, pt: u8, payload: &[u8]) -> (Vec<u8>, usize) {
    let mut p = vec![0u8; 12 + payload.len() + 64];
    p[0] = 0x80;
    p[1] = pt;
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p[12..12 + payload.len()].copy_from_slice(payload);
    (p, 12 + payload.len())
}

impl Peer {
    /// Closes the DTLS association as a closing tab does (close_notify).
    pub fn close(&mut self) {
        self.dtls.close();
        let mut out = [0u8; 2048];
        while let Some(n) = self.dtls.poll_datagram(&mut out) {
            self.sock.send_to(&out[..n], self.node).expect("send DTLS");
        }
    }

    pub fn send_rtp(&mut self, seq: u16, ssrc: u32, pt: u8, payload: &[u8]) {
        let (mut p, len) = rtp(seq, ssrc, pt, payload);
        let n = self.tx.protect_rtp(&mut p, len).expect("protect");
        self.sock.send_to(&p[..n], self.node).expect("send RTP");
    }

    /// The next decrypted RTP packet (header fields and payload), if any
    /// arrives within 50 ms.
    pub fn recv_rtp(&mut self) -> Option<(u8, u32, Vec<u8>)> {
        let mut buf = vec![0u8; 2048];
        let (n, _) = self.sock.recv_from(&mut buf).ok()?;
        if classify(&buf[..n]) != DatagramKind::Rtp {
            return None;
        }
        let len = self.rx.unprotect_rtp(&mut buf[..n]).ok()?;
        // The node's copies carry its transport-wide sequence number.
        let p = sfu_core::wire::rtp::RtpPacket::new_checked(&buf[..len]).ok()?;
        Some((p.payload_type(), p.ssrc(), p.payload().to_vec()))
    }
}

/// The WHEP fixture with its video section repeated as mids 2 and 3.
pub fn four_section_offer() -> String {
    let secs = sections(WHEP_OFFER);
    let head = WHEP_OFFER
        .split("m=audio")
        .next()
        .expect("a session part")
        .replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0 1 2 3");
    let video = &secs[1];
    format!(
        "{head}{}{}{}{}",
        secs[0],
        video,
        video.replace("a=mid:1", "a=mid:2"),
        video.replace("a=mid:1", "a=mid:3")
    )
}

/// An SRTP packet of `ssrc` carrying `rid` in header extension 10 (the
/// simulcast fixture's `rtp-stream-id`).
pub fn rid_packet(tx: &mut SrtpContext, seq: u16, ssrc: u32, pt: u8, rid: &[u8]) -> Vec<u8> {
    rid_packet_filled(tx, seq, ssrc, pt, rid, 0x5a)
}

/// [`rid_packet`] whose 50 payload bytes are all `fill`.
pub fn rid_packet_filled(
    tx: &mut SrtpContext,
    seq: u16,
    ssrc: u32,
    pt: u8,
    rid: &[u8],
    fill: u8,
) -> Vec<u8> {
    rid_packet_sized(tx, seq, ssrc, pt, rid, fill, 50)
}

/// [`rid_packet`] whose `len` (2 to 1200) payload bytes are all `fill`.
pub fn rid_packet_sized(
    tx: &mut SrtpContext,
    seq: u16,
    ssrc: u32,
    pt: u8,
    rid: &[u8],
    fill: u8,
    len: usize,
) -> Vec<u8> {
    let mut p = vec![0u8; 1400];
    let header = RtpHeader {
        marker: false,
        payload_type: pt,
        sequence_number: seq,
        timestamp: u32::from(seq) * 3000,
        ssrc,
    };
    let n = write_header(&mut p, &header, &[(10, rid)]).expect("header");
    p[n..n + len].fill(fill);
    // A VP8 descriptor starting a keyframe (S=1, PID 0; P bit 0), so a
    // simulcast consumer may switch to this layer at any packet.
    p[n] = 0x10;
    p[n + 1] = 0x00;
    let len = tx.protect_rtp(&mut p, n + len).expect("protect");
    p.truncate(len);
    p
}

/// Publishes the simulcast fixture (rids only) over WHIP and connects the
/// publisher; returns it with the answer's video payload type.
pub fn simulcast_publisher(node: &TestNode, room: &str) -> (Peer, u8) {
    let token = node.token(room, &[Grant::Publish]);
    let cert = DtlsCert::generate().expect("a certificate");
    let r = post_offer(
        node,
        &format!("/whip/{room}"),
        &token,
        &with_fingerprint(SIMULCAST_OFFER, &cert),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let video_pt: u8 = r
        .text
        .lines()
        .find_map(|l| l.strip_prefix("m=video 9 UDP/TLS/RTP/SAVPF "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|pt| pt.parse().ok())
        .expect("a video payload type");
    (connect(&read_answer(&r.text), "Xk4p", &cert), video_pt)
}
