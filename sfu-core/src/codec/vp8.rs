//! The VP8 RTP payload descriptor (RFC 7741 §4.2), keyframe detection
//! (§4.3) and in-place rewriting of PictureID and TL0PICIDX for simulcast
//! switching.
//!
//! ```text
//!       0 1 2 3 4 5 6 7
//!      +-+-+-+-+-+-+-+-+
//!      |X|R|N|S|R| PID | (REQUIRED)
//!      +-+-+-+-+-+-+-+-+
//! X:   |I|L|T|K| RSV   | (OPTIONAL)
//!      +-+-+-+-+-+-+-+-+
//! I:   |M| PictureID   | (OPTIONAL, 7 bits, or 15 bits when M = 1 ...)
//!      +-+-+-+-+-+-+-+-+
//!      |   PictureID   | (... with this second byte)
//!      +-+-+-+-+-+-+-+-+
//! L:   |   TL0PICIDX   | (OPTIONAL)
//!      +-+-+-+-+-+-+-+-+
//! T/K: |TID|Y| KEYIDX  | (OPTIONAL, one byte when T or K is set)
//!      +-+-+-+-+-+-+-+-+
//! ```
//!
//! The VP8 payload follows the descriptor; the first packet of a frame
//! (S = 1, PID = 0) begins with the VP8 payload header, whose first byte
//! is `|Size0|H| VER |P|` with P the inverse key frame flag (RFC 6386 §9.1).

/// Offset of the PictureID in a descriptor that has one (after the
/// required byte and the extension byte).
const PICTURE_ID_POS: usize = 2;

/// The parsed VP8 payload descriptor of one RTP packet (RFC 7741 §4.2).
///
/// Reserved bits are ignored, as the RFC asks of receivers. The descriptor
/// borrows nothing: methods that need the payload take it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Descriptor {
    /// N: the frame can be discarded without affecting any other frame.
    pub non_reference: bool,
    /// S: the packet starts a VP8 partition.
    pub start_of_partition: bool,
    /// PID: the index of the partition the packet's first byte belongs to (0–7).
    pub partition_index: u8,
    /// The PictureID and whether it is 15 bits wide (M = 1) rather than 7.
    pub picture_id: Option<(u16, bool)>,
    /// TL0PICIDX: the running index of the temporal base layer frames.
    pub tl0picidx: Option<u8>,
    /// TID: the temporal layer index (0–3), when T = 1.
    pub tid: Option<u8>,
    /// Y: the frame depends only on temporal base layer frames (meaningful
    /// only when [`tid`](Self::tid) is present; `false` otherwise).
    pub layer_sync: bool,
    /// KEYIDX: the temporal key frame index (0–31), when K = 1.
    pub keyidx: Option<u8>,
    /// The length of the descriptor in bytes (1 to 6); the VP8 payload
    /// starts at this offset.
    pub header_len: usize,
}

impl Vp8Descriptor {
    /// Parses the descriptor at the start of an RTP payload; `None` when
    /// the payload is empty or ends inside the descriptor. A payload that
    /// ends right after the descriptor is accepted (it carries no VP8 data,
    /// and is never a keyframe).
    pub fn parse(payload: &[u8]) -> Option<Self> {
        let b0 = *payload.first()?;
        let mut d = Self {
            non_reference: b0 & 0x20 != 0,
            start_of_partition: b0 & 0x10 != 0,
            partition_index: b0 & 0x07,
            picture_id: None,
            tl0picidx: None,
            tid: None,
            layer_sync: false,
            keyidx: None,
            header_len: 1,
        };
        if b0 & 0x80 == 0 {
            return Some(d);
        }
        let x = *payload.get(1)?;
        let mut pos = PICTURE_ID_POS;
        if x & 0x80 != 0 {
            let hi = *payload.get(pos)?;
            if hi & 0x80 != 0 {
                let lo = *payload.get(pos + 1)?;
                d.picture_id = Some(((u16::from(hi & 0x7f) << 8) | u16::from(lo), true));
                pos += 2;
            } else {
                d.picture_id = Some((u16::from(hi), false));
                pos += 1;
            }
        }
        if x & 0x40 != 0 {
            d.tl0picidx = Some(*payload.get(pos)?);
            pos += 1;
        }
        // T and K share one byte: |TID|Y| KEYIDX |.
        if x & 0x30 != 0 {
            let tk = *payload.get(pos)?;
            pos += 1;
            if x & 0x20 != 0 {
                d.tid = Some(tk >> 6);
                d.layer_sync = tk & 0x20 != 0;
            }
            if x & 0x10 != 0 {
                d.keyidx = Some(tk & 0x1f);
            }
        }
        d.header_len = pos;
        Some(d)
    }

    /// Whether the packet this descriptor was parsed from (`payload`, the
    /// same bytes) is the first packet of a keyframe: S = 1, PID = 0 and the
    /// VP8 payload header's P bit clear (RFC 7741 §4.3). `false` when no
    /// payload byte follows the descriptor.
    pub fn is_keyframe(&self, payload: &[u8]) -> bool {
        self.start_of_partition
            && self.partition_index == 0
            && payload.get(self.header_len).is_some_and(|&b| b & 0x01 == 0)
    }

    /// Length of the PictureID field: 0, 1 or 2 bytes.
    fn picture_id_len(&self) -> usize {
        match self.picture_id {
            None => 0,
            Some((_, false)) => 1,
            Some((_, true)) => 2,
        }
    }

    /// Overwrites the fields present in this descriptor (parsed from
    /// `payload`) with the values given, keeping each field's width.
    fn write(&self, payload: &mut [u8], picture_id: Option<u16>, tl0picidx: Option<u8>) {
        if let (Some(value), Some((_, wide))) = (picture_id, self.picture_id) {
            if wide {
                if let Some([hi, lo]) = payload.get_mut(PICTURE_ID_POS..PICTURE_ID_POS + 2) {
                    let [h, l] = (value & 0x7fff).to_be_bytes();
                    *hi = 0x80 | h;
                    *lo = l;
                }
            } else if let Some(b) = payload.get_mut(PICTURE_ID_POS) {
                // Low 7 bits: the value mod 128, M = 0.
                *b = value.to_be_bytes()[1] & 0x7f;
            }
        }
        if let (Some(value), Some(_)) = (tl0picidx, self.tl0picidx)
            && let Some(b) = payload.get_mut(PICTURE_ID_POS + self.picture_id_len())
        {
            *b = value;
        }
    }
}

/// Whether `payload` is the first packet of a VP8 keyframe (see
/// [`Vp8Descriptor::is_keyframe`]); `false` when the descriptor is malformed.
pub fn vp8_is_keyframe(payload: &[u8]) -> bool {
    Vp8Descriptor::parse(payload).is_some_and(|d| d.is_keyframe(payload))
}

/// Overwrites, in place, the PictureID and TL0PICIDX of the VP8 payload
/// descriptor at the start of `payload` with the values given, for the
/// fields the descriptor carries; a value for an absent field is ignored,
/// and `None` leaves a field as it is. Each field keeps its width: a 7-bit
/// PictureID receives `picture_id mod 128`, a 15-bit one
/// `picture_id mod 2^15`. Returns `false`, having written nothing, when the
/// descriptor is malformed.
pub fn rewrite_vp8(payload: &mut [u8], picture_id: Option<u16>, tl0picidx: Option<u8>) -> bool {
    let Some(d) = Vp8Descriptor::parse(payload) else {
        return false;
    };
    d.write(payload, picture_id, tl0picidx);
    true
}

/// Per-consumer state that rewrites VP8 PictureID and TL0PICIDX so that a
/// subscriber sees one continuous stream while the router switches it
/// between simulcast sources.
///
/// Each field is mapped as `output = input + offset` (PictureID modulo
/// 2^15, or 2^7 for a source that sends 7-bit ids; TL0PICIDX modulo 256).
/// The offset starts at 0, so the first source passes through unchanged.
/// When [`rewrite`](Self::rewrite) is told of a switch, the next packet
/// that carries the field sets the offset so that its picture gets the
/// highest output value sent so far plus one; later packets of the new
/// source, including the other packets of that same picture, keep that
/// offset, so a picture keeps one id and ids stay consecutive. A packet
/// reordered from before the newest picture maps with the same offset (to
/// an id at or below the highest one) and does not move the highest id.
///
/// The caller switches only at a keyframe of the new source and must not
/// feed packets of the old source after the switch (they would be mapped
/// with the new offset). Packets whose descriptor lacks a field leave that
/// field's state alone; a switch to a source without PictureIDs is carried
/// over to the first packet that has one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Vp8Rewriter {
    picture_id: SerialMap,
    tl0picidx: SerialMap,
}

impl Vp8Rewriter {
    /// A rewriter that has seen no packet.
    pub const fn new() -> Self {
        Self {
            picture_id: SerialMap::new(),
            tl0picidx: SerialMap::new(),
        }
    }

    /// Rewrites the PictureID and TL0PICIDX of one packet of the current
    /// source in place. `switched` marks the first packet forwarded from a
    /// new source (the first packet of its keyframe). Returns `false`,
    /// having written nothing, when the descriptor is malformed; a switch
    /// it marks still applies to the next packets.
    pub fn rewrite(&mut self, payload: &mut [u8], switched: bool) -> bool {
        if switched {
            self.picture_id.rebase = true;
            self.tl0picidx.rebase = true;
        }
        let Some(d) = Vp8Descriptor::parse(payload) else {
            return false;
        };
        let picture_id = d.picture_id.map(|(id, wide)| {
            let modulus = if wide { 1 << 15 } else { 1 << 7 };
            self.picture_id.map(id, modulus)
        });
        let tl0picidx = d.tl0picidx.map(|idx| {
            // The map keeps values below its modulus, 256 here.
            let out = self.tl0picidx.map(u16::from(idx), 1 << 8);
            out.to_be_bytes()[1]
        });
        d.write(payload, picture_id, tl0picidx);
        true
    }

    /// The highest PictureID sent so far (in the width of the last source
    /// that carried one), or `None` before the first.
    pub fn highest_picture_id(&self) -> Option<u16> {
        self.picture_id.started.then_some(self.picture_id.highest)
    }

    /// The highest TL0PICIDX sent so far, or `None` before the first.
    pub fn highest_tl0picidx(&self) -> Option<u8> {
        self.tl0picidx
            .started
            .then_some(self.tl0picidx.highest.to_be_bytes()[1])
    }
}

/// `output = input + offset` modulo a power of two (at most 2^15), with the
/// highest output so far in serial-number order (RFC 1982).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct SerialMap {
    /// Whether a value has been mapped (and `highest` holds one).
    started: bool,
    /// A switch happened and no value has been mapped since.
    rebase: bool,
    /// Added to inputs; only its value modulo the modulus matters.
    offset: u16,
    /// The highest output so far, below the modulus of its packet.
    highest: u16,
}

impl SerialMap {
    const fn new() -> Self {
        Self {
            started: false,
            rebase: false,
            offset: 0,
            highest: 0,
        }
    }

    /// Maps `input` modulo `modulus` (a power of two, 2 to 2^15).
    fn map(&mut self, input: u16, modulus: u16) -> u16 {
        let mask = modulus.wrapping_sub(1);
        if !self.started {
            self.started = true;
            self.rebase = false;
            self.offset = 0;
            self.highest = input & mask;
            return self.highest;
        }
        if self.rebase {
            self.rebase = false;
            // Modulo 2^16, hence modulo any smaller power of two.
            self.offset = self.highest.wrapping_add(1).wrapping_sub(input);
        }
        let out = input.wrapping_add(self.offset) & mask;
        let ahead = out.wrapping_sub(self.highest) & mask;
        if ahead != 0 && ahead < modulus / 2 {
            self.highest = out;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::testutil::XorShift;
    use bytes::Bytes;
    use rtp::packetizer::Depacketizer;

    /// First bytes of a VP8 keyframe: frame tag (P = 0, show_frame), start
    /// code 9d 01 2a, 640×480 (RFC 6386 §9.1).
    const KEY: [u8; 10] = [0xb0, 0x05, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01];
    /// First bytes of an interframe: frame tag with P = 1.
    const DELTA: [u8; 3] = [0x31, 0x0a, 0x00];

    /// Random bytes, mostly with X set and a random extension byte, so
    /// that every optional field is reached.
    fn vp8_like<'a>(rng: &mut XorShift, buf: &'a mut [u8]) -> &'a [u8] {
        let p = rng.fill(buf);
        if let Some(b) = p.first_mut()
            && rng.next() & 3 != 0
        {
            *b |= 0x80;
        }
        p
    }

    fn packet(descriptor: &[u8], payload: &[u8]) -> Vec<u8> {
        [descriptor, payload].concat()
    }

    fn plain(header_len: usize) -> Vp8Descriptor {
        Vp8Descriptor {
            non_reference: false,
            start_of_partition: true,
            partition_index: 0,
            picture_id: None,
            tl0picidx: None,
            tid: None,
            layer_sync: false,
            keyidx: None,
            header_len,
        }
    }

    /// One descriptor of each shape, with what it parses to.
    fn shapes() -> Vec<(&'static str, Vec<u8>, Vp8Descriptor)> {
        vec![
            ("no X", vec![0x10], plain(1)),
            ("X, nothing", vec![0x90, 0x00], plain(2)),
            (
                "I 7-bit",
                vec![0x90, 0x80, 0x05],
                Vp8Descriptor {
                    picture_id: Some((5, false)),
                    ..plain(3)
                },
            ),
            (
                "I 15-bit",
                vec![0x90, 0x80, 0x81, 0x23],
                Vp8Descriptor {
                    picture_id: Some((0x0123, true)),
                    ..plain(4)
                },
            ),
            (
                "L",
                vec![0x90, 0x40, 0x07],
                Vp8Descriptor {
                    tl0picidx: Some(7),
                    ..plain(3)
                },
            ),
            (
                "T",
                vec![0x90, 0x20, 0x60],
                Vp8Descriptor {
                    tid: Some(1),
                    layer_sync: true,
                    ..plain(3)
                },
            ),
            (
                // The TID/Y bits are set but T = 0: ignored.
                "K",
                vec![0x90, 0x10, 0xff],
                Vp8Descriptor {
                    keyidx: Some(31),
                    ..plain(3)
                },
            ),
            (
                "T+K",
                vec![0x90, 0x30, 0x9a],
                Vp8Descriptor {
                    tid: Some(2),
                    keyidx: Some(26),
                    ..plain(3)
                },
            ),
            (
                "I 7-bit, L, T (libwebrtc with temporal layers)",
                vec![0x90, 0xe0, 0x7f, 0xfe, 0x40],
                Vp8Descriptor {
                    picture_id: Some((127, false)),
                    tl0picidx: Some(0xfe),
                    tid: Some(1),
                    ..plain(5)
                },
            ),
            (
                // X, N, S, PID 3; every extension field, 15-bit id.
                "all",
                vec![0xb3, 0xf0, 0xff, 0xff, 0xfe, 0xe5],
                Vp8Descriptor {
                    non_reference: true,
                    partition_index: 3,
                    picture_id: Some((0x7fff, true)),
                    tl0picidx: Some(0xfe),
                    tid: Some(3),
                    layer_sync: true,
                    keyidx: Some(5),
                    ..plain(6)
                },
            ),
            (
                // Reserved bits set everywhere: ignored (RFC 7741 §4.2).
                "reserved bits",
                vec![0xc8 | 0x10, 0x8f, 0x05],
                Vp8Descriptor {
                    picture_id: Some((5, false)),
                    ..plain(3)
                },
            ),
        ]
    }

    #[test]
    fn parses_every_shape() {
        for (name, desc, want) in shapes() {
            for payload in [&KEY[..], &DELTA, &[]] {
                let p = packet(&desc, payload);
                assert_eq!(Vp8Descriptor::parse(&p), Some(want), "{name}");
            }
        }
    }

    #[test]
    fn rejects_truncated_descriptors() {
        for p in [
            &[][..],
            &[0x80],                         // X without the extension byte
            &[0x80, 0x80],                   // I without PictureID
            &[0x80, 0x80, 0x80],             // 15-bit PictureID, one byte
            &[0x80, 0x40],                   // L without TL0PICIDX
            &[0x80, 0xc0, 0x05],             // I and L, L missing
            &[0x80, 0x20],                   // T without its byte
            &[0x80, 0x10],                   // K without its byte
            &[0x80, 0xf0, 0x81, 0x00, 0x00], // everything, T/K missing
        ] {
            assert_eq!(Vp8Descriptor::parse(p), None, "{p:02x?}");
            assert!(!vp8_is_keyframe(p));
            let mut copy = p.to_vec();
            assert!(!rewrite_vp8(&mut copy, Some(1), Some(1)));
            assert_eq!(copy, p);
        }
    }

    #[test]
    fn keyframes_and_delta_frames() {
        for (name, desc, _) in shapes() {
            let key = packet(&desc, &KEY);
            let delta = packet(&desc, &DELTA);
            let d = Vp8Descriptor::parse(&key).expect("valid descriptor");
            // Only PID 0 with S = 1 starts a frame.
            let starts_frame = d.partition_index == 0;
            assert_eq!(vp8_is_keyframe(&key), starts_frame, "{name}");
            assert_eq!(d.is_keyframe(&key), starts_frame, "{name}");
            assert!(!vp8_is_keyframe(&delta), "{name}");
            // Descriptor only: no payload header to read.
            assert!(!vp8_is_keyframe(&desc), "{name}");
            // S = 0: a continuation packet, whatever its first byte.
            let mut cont = key.clone();
            cont[0] &= !0x10;
            assert!(!vp8_is_keyframe(&cont), "{name}");
        }
        // S = 1 but PID = 1: the start of the second partition.
        assert!(!vp8_is_keyframe(&packet(&[0x11], &KEY)));
    }

    /// The webrtc-rs depacketizer as an oracle: every field, and the
    /// descriptor length, agree wherever it accepts the packet.
    fn check_against_rtp(p: &[u8]) {
        let mut theirs = rtp::codecs::vp8::Vp8Packet::default();
        let result = theirs.depacketize(&Bytes::copy_from_slice(p));
        let ours = Vp8Descriptor::parse(p);
        match (result, ours) {
            (Ok(rest), Some(d)) => {
                assert_eq!(rest.len(), p.len() - d.header_len, "{p:02x?}");
                assert_eq!(theirs.n == 1, d.non_reference);
                assert_eq!(theirs.s == 1, d.start_of_partition);
                assert_eq!(theirs.pid, d.partition_index);
                assert_eq!(theirs.i == 1, d.picture_id.is_some());
                if let Some((id, _)) = d.picture_id {
                    assert_eq!(theirs.picture_id, id, "{p:02x?}");
                }
                assert_eq!(theirs.l == 1, d.tl0picidx.is_some());
                assert_eq!(theirs.tl0_pic_idx, d.tl0picidx.unwrap_or(0));
                assert_eq!(theirs.t == 1, d.tid.is_some());
                assert_eq!(theirs.tid, d.tid.unwrap_or(0));
                assert_eq!(theirs.y == 1, d.layer_sync);
                assert_eq!(theirs.k == 1, d.keyidx.is_some());
                assert_eq!(theirs.key_idx, d.keyidx.unwrap_or(0));
            }
            (Ok(_), None) => panic!("rtp accepts what we reject: {p:02x?}"),
            // rtp also wants at least 4 bytes and one byte of VP8 payload.
            (Err(_), Some(d)) => assert!(p.len() < 4 || d.header_len == p.len(), "{p:02x?}"),
            (Err(_), None) => {}
        }
    }

    #[test]
    fn agrees_with_webrtc_rs() {
        for (_, desc, _) in shapes() {
            for payload in [&KEY[..], &DELTA, &[]] {
                check_against_rtp(&packet(&desc, payload));
            }
        }
        let mut rng = XorShift::new(0x7741);
        let mut buf = [0u8; 12];
        for _ in 0..100_000 {
            let p = vp8_like(&mut rng, &mut buf);
            check_against_rtp(p);
        }
    }

    #[test]
    fn rewrite_round_trips_keep_width_and_other_bytes() {
        for (name, desc, before) in shapes() {
            for (pid, tl0) in [
                (Some(0x1234), Some(0x56)),
                (Some(0x7fff), None),
                (None, Some(0xff)),
                (Some(0xffff), Some(0)),
                (None, None),
            ] {
                // Junk after the descriptor must survive untouched.
                let mut p = packet(&desc, &[0xa5; 8]);
                let original = p.clone();
                assert!(rewrite_vp8(&mut p, pid, tl0), "{name}");
                let after = Vp8Descriptor::parse(&p).expect("still valid");
                let want_pid = match (before.picture_id, pid) {
                    (Some((_, true)), Some(v)) => Some((v & 0x7fff, true)),
                    (Some((_, false)), Some(v)) => Some((v % 128, false)),
                    (old, _) => old,
                };
                let want_tl0 = before.tl0picidx.and(tl0).or(before.tl0picidx);
                assert_eq!(
                    after,
                    Vp8Descriptor {
                        picture_id: want_pid,
                        tl0picidx: want_tl0,
                        ..before
                    },
                    "{name} {pid:?} {tl0:?}"
                );
                assert_eq!(p[after.header_len..], original[before.header_len..]);
                // Writing the original values back restores every byte.
                let restore = (before.picture_id.map(|(v, _)| v), before.tl0picidx);
                assert!(rewrite_vp8(&mut p, restore.0, restore.1));
                assert_eq!(p, original, "{name}");
            }
        }
    }

    /// A packet with a 15-bit PictureID and a TL0PICIDX.
    fn wide(picture_id: u16, tl0: u8, key: bool) -> Vec<u8> {
        let [hi, lo] = picture_id.to_be_bytes();
        let payload: &[u8] = if key { &KEY } else { &DELTA };
        packet(&[0x90, 0xe0, 0x80 | hi, lo, tl0, 0x00], payload)
    }

    /// A packet with a 7-bit PictureID and a TL0PICIDX.
    fn narrow(picture_id: u8, tl0: u8) -> Vec<u8> {
        packet(&[0x90, 0xe0, picture_id & 0x7f, tl0, 0x00], &DELTA)
    }

    /// Rewrites `p` and returns the PictureID and TL0PICIDX sent.
    fn send(rw: &mut Vp8Rewriter, mut p: Vec<u8>, switched: bool) -> (u16, u8) {
        assert!(rw.rewrite(&mut p, switched));
        let d = Vp8Descriptor::parse(&p).expect("valid");
        (
            d.picture_id.expect("has PictureID").0,
            d.tl0picidx.expect("has TL0PICIDX"),
        )
    }

    #[test]
    fn rewriter_is_continuous_across_two_switches() {
        let mut rw = Vp8Rewriter::new();
        assert_eq!(rw.highest_picture_id(), None);
        assert_eq!(rw.highest_tl0picidx(), None);
        // Source A passes through: pictures 100..=104, two packets each.
        for (i, id) in (100..=104).enumerate() {
            let tl0 = 50 + i as u8;
            for _ in 0..2 {
                assert_eq!(send(&mut rw, wide(id, tl0, false), false), (id, tl0));
            }
        }
        assert_eq!(rw.highest_picture_id(), Some(104));
        assert_eq!(rw.highest_tl0picidx(), Some(54));

        // Switch to B at its keyframe, picture 20000, TL0PICIDX 200.
        assert_eq!(send(&mut rw, wide(20000, 200, true), true), (105, 55));
        // The rest of the keyframe keeps its id.
        assert_eq!(send(&mut rw, wide(20000, 200, false), false), (105, 55));
        assert_eq!(send(&mut rw, wide(20001, 200, false), false), (106, 55));
        assert_eq!(send(&mut rw, wide(20002, 201, false), false), (107, 56));
        // A reordered packet of an older picture keeps the offset and does
        // not move the highest id.
        assert_eq!(send(&mut rw, wide(20001, 200, false), false), (106, 55));
        assert_eq!(rw.highest_picture_id(), Some(107));
        assert_eq!(send(&mut rw, wide(20003, 201, false), false), (108, 56));

        // Switch to C, whose ids are lower than B's.
        assert_eq!(send(&mut rw, wide(3, 9, true), true), (109, 57));
        assert_eq!(send(&mut rw, wide(4, 10, false), false), (110, 58));
        assert_eq!(rw.highest_picture_id(), Some(110));
        assert_eq!(rw.highest_tl0picidx(), Some(58));
    }

    #[test]
    fn rewriter_wraps_15_bit_ids_and_tl0picidx() {
        let mut rw = Vp8Rewriter::new();
        assert_eq!(send(&mut rw, wide(0x7ffe, 254, true), false), (0x7ffe, 254));
        assert_eq!(
            send(&mut rw, wide(0x7fff, 255, false), false),
            (0x7fff, 255)
        );
        // Switch: the next id after 2^15 - 1 is 0, after TL0PICIDX 255 is 0.
        assert_eq!(send(&mut rw, wide(500, 3, true), true), (0, 0));
        assert_eq!(send(&mut rw, wide(501, 4, false), false), (1, 1));
        // A source wrapping by itself stays continuous through the offset.
        let mut rw = Vp8Rewriter::new();
        assert_eq!(send(&mut rw, wide(10, 0, true), false), (10, 0));
        assert_eq!(send(&mut rw, wide(0x7fff, 100, true), true), (11, 1));
        assert_eq!(send(&mut rw, wide(0, 101, false), false), (12, 2));
        assert_eq!(rw.highest_picture_id(), Some(12));
    }

    #[test]
    fn rewriter_wraps_7_bit_ids() {
        let mut rw = Vp8Rewriter::new();
        for id in 125..=127 {
            assert_eq!(send(&mut rw, narrow(id, 1), false), (u16::from(id), 1));
        }
        // A 7-bit source's own wrap: 127 → 0 is newer.
        assert_eq!(send(&mut rw, narrow(0, 1), false), (0, 1));
        assert_eq!(rw.highest_picture_id(), Some(0));
        assert_eq!(send(&mut rw, narrow(127, 1), false), (127, 1));
        assert_eq!(rw.highest_picture_id(), Some(0));
        // Switch to another 7-bit source near its own wrap.
        assert_eq!(send(&mut rw, narrow(126, 9), true), (1, 2));
        assert_eq!(send(&mut rw, narrow(127, 9), false), (2, 2));
        assert_eq!(send(&mut rw, narrow(0, 10), false), (3, 3));
        // Then to a 15-bit source: it continues from the 7-bit id.
        assert_eq!(send(&mut rw, wide(9000, 77, true), true), (4, 4));
        assert_eq!(send(&mut rw, wide(9001, 77, false), false), (5, 4));
        // And back to 7-bit, written mod 128.
        let mut rw = Vp8Rewriter::new();
        assert_eq!(send(&mut rw, wide(0x1ff, 0, true), false), (0x1ff, 0));
        assert_eq!(send(&mut rw, narrow(40, 0), true), (0x200 % 128, 1));
        assert_eq!(send(&mut rw, narrow(41, 0), false), (1, 1));
    }

    #[test]
    fn rewriter_carries_a_switch_to_the_first_packet_with_the_field() {
        let mut rw = Vp8Rewriter::new();
        assert_eq!(send(&mut rw, wide(7, 7, true), false), (7, 7));
        // The switched packet has no extension at all, then is malformed.
        let mut bare = packet(&[0x10], &KEY);
        assert!(rw.rewrite(&mut bare, true));
        assert_eq!(bare, packet(&[0x10], &KEY));
        let mut broken = vec![0x80];
        assert!(!rw.rewrite(&mut broken, false));
        assert_eq!(broken, [0x80]);
        assert_eq!(send(&mut rw, wide(900, 90, false), false), (8, 8));
        assert_eq!(send(&mut rw, wide(901, 90, false), false), (9, 8));
        // A malformed switched packet still marks the switch.
        let mut broken = vec![0x80, 0x80];
        assert!(!rw.rewrite(&mut broken, true));
        assert_eq!(send(&mut rw, wide(40, 1, false), false), (10, 9));
    }

    #[test]
    fn hostile_input_never_panics() {
        let mut rw = Vp8Rewriter::new();
        let mut exercise = |p: &[u8], switched: bool| {
            let d = Vp8Descriptor::parse(p);
            if let Some(d) = d {
                assert!(d.header_len <= p.len());
                let _ = d.is_keyframe(p);
                // A descriptor is only ever applied to its own packet, but
                // a wrong pairing must not panic either.
                let _ = d.is_keyframe(&p[..p.len() / 2]);
            }
            let _ = vp8_is_keyframe(p);
            let _ = crate::codec::is_keyframe(crate::codec::Codec::Vp8, p);
            let mut copy = p.to_vec();
            assert_eq!(
                rewrite_vp8(&mut copy, Some(0xffff), Some(0xff)),
                d.is_some()
            );
            assert_eq!(copy.len(), p.len());
            let mut copy = p.to_vec();
            assert_eq!(rw.rewrite(&mut copy, switched), d.is_some());
            if let Some(d) = d {
                assert_eq!(copy[d.header_len..], p[d.header_len..]);
            } else {
                assert_eq!(copy, p);
            }
        };
        for (_, desc, _) in shapes() {
            let p = packet(&desc, &KEY);
            for end in 0..=p.len() {
                exercise(&p[..end], end % 3 == 0);
            }
        }
        let mut rng = XorShift::new(6386);
        let mut buf = [0u8; 12];
        for _ in 0..100_000 {
            let switched = rng.next() & 7 == 0;
            exercise(vp8_like(&mut rng, &mut buf), switched);
        }
    }
}
