//! Participants of the JSON API with plain SRTP keys: a publisher of one
//! video track that counts the keyframe requests it gets, and a viewer of
//! everything that counts packets and sequence gaps per stream.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use super::b64;
use super::webrtc::send_to;

/// An AES-128-GCM SRTP context from a 28-byte master.
pub fn gcm(master: &[u8]) -> sfu_core::srtp::SrtpContext {
    let (k, salt) = master.split_at(16);
    sfu_core::srtp::SrtpContext::new(
        sfu_core::srtp::Profile::AeadAes128Gcm,
        k,
        salt,
        sfu_core::srtp::SrtpConfig::default(),
    )
    .expect("a context")
}

/// `POST /v1/rooms/{room}/endpoints` of `body` to the node at `base`.
fn create(base: &str, token: &str, room: &str, body: &serde_json::Value) -> super::webrtc::Reply {
    send_to(
        base,
        "POST",
        &format!("/v1/rooms/{room}/endpoints"),
        Some(token),
        Some("application/json"),
        &body.to_string(),
    )
}

/// Sends video packet `seq` of `ssrc` (payload type 96, `payload` zero
/// bytes, timestamp 3000 per packet) protected with `tx` to `media`.
pub fn send_video(
    tx: &mut sfu_core::srtp::SrtpContext,
    socket: &UdpSocket,
    media: SocketAddr,
    seq: u16,
    ssrc: u32,
    payload: usize,
) {
    let mut pkt = [0u8; 1500];
    pkt[0] = 0x80;
    pkt[1] = 96;
    pkt[2..4].copy_from_slice(&seq.to_be_bytes());
    pkt[4..8].copy_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    pkt[8..12].copy_from_slice(&ssrc.to_be_bytes());
    let len = tx.protect_rtp(&mut pkt, 12 + payload).expect("protect");
    let _ = socket.send_to(&pkt[..len], media);
}

/// A publisher of one video track (100 packets/s) that counts the PLIs
/// the node sends it.
pub struct Publisher {
    pub plis: Arc<AtomicU64>,
    pub sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Publisher {
    /// Joins `room` through the node at `base` with an admin `token`.
    pub fn start(base: &str, token: &str, room: &str, ssrc: u32) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_millis(5)))
            .expect("timeout");
        let master = [0x42u8; 28];
        let body = json!({
            "role": "publish",
            "srtp": {"profile": "AEAD_AES_128_GCM", "key": b64(&master)},
            "tracks": [{"kind": "video", "ssrc": ssrc, "payload_type": 96}],
        });
        let reply = create(base, token, room, &body);
        assert_eq!(reply.status, 201, "publisher: {}", reply.text);
        let answer = reply.json();
        let media: SocketAddr = answer["media"]
            .as_str()
            .expect("media")
            .parse()
            .expect("addr");
        let node_key = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(answer["srtp"]["key"].as_str().expect("key"))
                .expect("base64")
        };
        let (plis, sent, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (p, n, s) = (Arc::clone(&plis), Arc::clone(&sent), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            let mut tx = gcm(&master);
            let mut rx = gcm(&node_key);
            let mut seq = 0u16;
            let mut next = Instant::now();
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::Relaxed) {
                if Instant::now() >= next {
                    next += Duration::from_millis(10);
                    send_video(&mut tx, &socket, media, seq, ssrc, 300);
                    seq = seq.wrapping_add(1);
                    n.fetch_add(1, Ordering::Relaxed);
                }
                if let Ok((len, from)) = socket.recv_from(&mut buf)
                    && from == media
                    && let Ok(plain) = rx.unprotect_rtcp(&mut buf[..len])
                {
                    let mut o = 0;
                    while o + 4 <= plain {
                        let (fmt, pt) = (buf[o] & 0x1f, buf[o + 1]);
                        if pt == 206 && fmt == 1 {
                            p.fetch_add(1, Ordering::Relaxed);
                        }
                        o += (usize::from(u16::from_be_bytes([buf[o + 2], buf[o + 3]])) + 1) * 4;
                    }
                }
            }
        });
        Self {
            plis,
            sent,
            stop,
            thread: Some(thread),
        }
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Per SSRC: (packets, lost, last sequence number).
pub type Streams = BTreeMap<u32, (u64, u64, u16)>;

/// A subscriber of everything in a room: packets and sequence gaps per
/// SSRC, from the node that answered its POST.
pub struct Viewer {
    pub id: String,
    pub served_by: String,
    pub media: SocketAddr,
    socket: Arc<UdpSocket>,
    pub seen: Arc<Mutex<Streams>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Viewer {
    /// Joins `room` through the node `node_id` at `base` with an admin
    /// `token`.
    pub fn join(base: &str, node_id: &str, token: &str, room: &str) -> Self {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("bind"));
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        let body = json!({
            "role": "subscribe",
            "srtp": {"profile": "AEAD_AES_128_GCM", "key": b64(&[0x43u8; 28])},
            "remote": socket.local_addr().expect("bound").to_string(),
        });
        let reply = create(base, token, room, &body);
        assert_eq!(reply.status, 201, "viewer via {base}: {}", reply.text);
        let served_by = reply.header("x-sfu-served-by").to_owned();
        let answer = reply.json();
        let media: SocketAddr = answer["media"]
            .as_str()
            .expect("media")
            .parse()
            .expect("addr");
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (sock, map, s) = (Arc::clone(&socket), Arc::clone(&seen), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                // RTP only (RTCP payload types 200-207 after the marker).
                if from != media || n < 12 || (192..=207).contains(&buf[1]) {
                    continue;
                }
                let ssrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
                let seq = u16::from_be_bytes([buf[2], buf[3]]);
                let mut map = map.lock().expect("lock");
                let e = map.entry(ssrc).or_insert((0, 0, seq.wrapping_sub(1)));
                let gap = seq.wrapping_sub(e.2);
                if (2..0x8000).contains(&gap) {
                    e.1 += u64::from(gap - 1);
                }
                if gap < 0x8000 {
                    e.2 = seq;
                }
                e.0 += 1;
            }
        });
        Self {
            id: answer["id"].as_str().expect("id").to_owned(),
            // Empty: served by the node asked.
            served_by: if served_by.is_empty() {
                node_id.to_owned()
            } else {
                served_by
            },
            media,
            socket,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Asks for a keyframe of every stream it receives (SRTCP PLIs).
    pub fn request_keyframes(&self) {
        let mut ctx = gcm(&[0x43u8; 28]);
        let ssrcs: Vec<u32> = self.seen.lock().expect("lock").keys().copied().collect();
        for media_ssrc in ssrcs {
            let mut pkt = [0u8; 64];
            pkt[..4].copy_from_slice(&[0x81, 206, 0, 2]);
            pkt[4..8].copy_from_slice(&0x0bad_cafeu32.to_be_bytes());
            pkt[8..12].copy_from_slice(&media_ssrc.to_be_bytes());
            let n = ctx.protect_rtcp(&mut pkt, 12).expect("protect");
            self.socket.send_to(&pkt[..n], self.media).expect("send");
        }
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
