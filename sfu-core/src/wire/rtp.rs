//! RTP packets (RFC 3550 §5.1) and their header extensions (RFC 8285).
//!
//! [`RtpPacket::new_checked`] validates a plaintext packet once — fixed header,
//! CSRC list, extension block and padding — after which every accessor is
//! infallible. [`header_len`] checks only the header, for SRTP, where the
//! payload (and its padding) is still encrypted. [`RtpPacketMut`] rewrites the
//! fields an SFU changes per consumer in place.

use super::{WireError, be16, be32};

/// Length of the fixed RTP header.
pub const FIXED_HEADER_LEN: usize = 12;
/// "defined by profile" value of a one-byte-header extension block (RFC 8285 §4.2).
pub const ONE_BYTE_PROFILE: u16 = 0xBEDE;
/// "defined by profile" value of a two-byte-header extension block, low 4 bits
/// are "appbits" (RFC 8285 §4.3).
pub const TWO_BYTE_PROFILE: u16 = 0x1000;

/// Checks the fixed header, the CSRC list and the extension block and returns
/// the header length (offset of the payload). Does not look at the payload or
/// its padding, so it works on SRTP packets.
pub fn header_len(buf: &[u8]) -> Result<usize, WireError> {
    if buf.len() < FIXED_HEADER_LEN {
        return Err(WireError::Truncated);
    }
    if buf[0] >> 6 != 2 {
        return Err(WireError::Version);
    }
    let mut len = FIXED_HEADER_LEN + usize::from(buf[0] & 0x0f) * 4;
    if buf.len() < len {
        return Err(WireError::Truncated);
    }
    if buf[0] & 0x10 != 0 {
        if buf.len() < len + 4 {
            return Err(WireError::Truncated);
        }
        let words = usize::from(be16(buf, len + 2));
        len += 4 + words * 4;
        if buf.len() < len {
            return Err(WireError::Truncated);
        }
    }
    Ok(len)
}

/// A checked, read-only view of a plaintext RTP packet.
#[derive(Debug, Clone, Copy)]
pub struct RtpPacket<'a> {
    buf: &'a [u8],
    header_len: usize,
    payload_end: usize,
}

impl<'a> RtpPacket<'a> {
    /// Validates `buf` as a whole plaintext RTP packet, padding included.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        let header_len = header_len(buf)?;
        let mut payload_end = buf.len();
        if buf[0] & 0x20 != 0 {
            let pad = usize::from(buf[buf.len() - 1]);
            if pad == 0 || pad > buf.len() - header_len {
                return Err(WireError::Padding);
            }
            payload_end -= pad;
        }
        if buf[0] & 0x10 != 0 {
            // Walk the elements once so the accessors may assume a sane block.
            for element in ExtensionIter::new(ext_profile(buf), ext_body(buf, header_len)) {
                element?;
            }
        }
        Ok(Self {
            buf,
            header_len,
            payload_end,
        })
    }

    /// The whole packet, as given.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// The padding (P) bit.
    pub fn has_padding(&self) -> bool {
        self.buf[0] & 0x20 != 0
    }

    /// The marker (M) bit.
    pub fn marker(&self) -> bool {
        self.buf[1] & 0x80 != 0
    }

    /// The 7-bit payload type.
    pub fn payload_type(&self) -> u8 {
        self.buf[1] & 0x7f
    }

    /// The 16-bit sequence number.
    pub fn sequence_number(&self) -> u16 {
        be16(self.buf, 2)
    }

    /// The 32-bit media timestamp.
    pub fn timestamp(&self) -> u32 {
        be32(self.buf, 4)
    }

    /// The synchronisation source.
    pub fn ssrc(&self) -> u32 {
        be32(self.buf, 8)
    }

    /// The contributing sources, in order.
    pub fn csrcs(&self) -> impl Iterator<Item = u32> + 'a {
        let n = usize::from(self.buf[0] & 0x0f);
        self.buf[FIXED_HEADER_LEN..FIXED_HEADER_LEN + n * 4]
            .chunks_exact(4)
            .map(|c| be32(c, 0))
    }

    /// Offset of the payload: fixed header, CSRCs and extension block.
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// Copies the packet to the start of `dst` and returns a writable view
    /// of the copy, reusing this view's check: the per-consumer rewrite of a
    /// packet validated once. `None` if `dst` is shorter than the packet.
    pub fn copy_into<'b>(&self, dst: &'b mut [u8]) -> Option<RtpPacketMut<'b>> {
        let buf = dst.get_mut(..self.buf.len())?;
        buf.copy_from_slice(self.buf);
        Some(RtpPacketMut {
            buf,
            header_len: self.header_len,
        })
    }

    /// The payload, without padding.
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[self.header_len..self.payload_end]
    }

    /// Number of padding bytes at the end (0 without the P bit).
    pub fn padding_len(&self) -> usize {
        self.buf.len() - self.payload_end
    }

    /// The extension block's "defined by profile" field, if there is a block.
    pub fn extension_profile(&self) -> Option<u16> {
        (self.buf[0] & 0x10 != 0).then(|| ext_profile(self.buf))
    }

    /// The RFC 8285 elements of the extension block (empty without one, or
    /// when the block uses a profile other than one-byte or two-byte headers).
    pub fn extensions(&self) -> impl Iterator<Item = (u8, &'a [u8])> + 'a {
        let (profile, body) = if self.buf[0] & 0x10 != 0 {
            (ext_profile(self.buf), ext_body(self.buf, self.header_len))
        } else {
            (0, &[][..])
        };
        // new_checked walked the block, so no element is an error.
        ExtensionIter::new(profile, body).map_while(Result::ok)
    }

    /// The value of the extension element with `id`, if present.
    pub fn extension(&self, id: u8) -> Option<&'a [u8]> {
        if id == 0 {
            return None;
        }
        self.extensions().find(|&(i, _)| i == id).map(|(_, v)| v)
    }

    /// The `mid` (RFC 9143 / RFC 8843) under `map`.
    pub fn mid(&self, map: &ExtensionMap) -> Option<&'a [u8]> {
        map.mid
            .and_then(|id| self.extension(id))
            .filter(|v| !v.is_empty())
    }

    /// The `rid` (RFC 8852) under `map`.
    pub fn rid(&self, map: &ExtensionMap) -> Option<&'a [u8]> {
        map.rid
            .and_then(|id| self.extension(id))
            .filter(|v| !v.is_empty())
    }

    /// The `repaired-rid` (RFC 8852) under `map`.
    pub fn repaired_rid(&self, map: &ExtensionMap) -> Option<&'a [u8]> {
        map.repaired_rid
            .and_then(|id| self.extension(id))
            .filter(|v| !v.is_empty())
    }

    /// The 24-bit abs-send-time (6.18 fixed-point seconds) under `map`.
    pub fn abs_send_time(&self, map: &ExtensionMap) -> Option<u32> {
        map.abs_send_time
            .and_then(|id| self.extension(id))
            .and_then(parse_abs_send_time)
    }

    /// The transport-wide sequence number under `map`.
    pub fn transport_cc_seq(&self, map: &ExtensionMap) -> Option<u16> {
        map.transport_cc
            .and_then(|id| self.extension(id))
            .and_then(parse_transport_cc)
    }

    /// The RFC 6464 audio level under `map`.
    pub fn audio_level(&self, map: &ExtensionMap) -> Option<AudioLevel> {
        map.audio_level
            .and_then(|id| self.extension(id))
            .and_then(parse_audio_level)
    }
}

/// The extension ids negotiated for a transport (the SDP `a=extmap` lines).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtensionMap {
    /// `urn:ietf:params:rtp-hdrext:sdes:mid`
    pub mid: Option<u8>,
    /// `urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id`
    pub rid: Option<u8>,
    /// `urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id`
    pub repaired_rid: Option<u8>,
    /// `http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time`
    pub abs_send_time: Option<u8>,
    /// `http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01`
    pub transport_cc: Option<u8>,
    /// `urn:ietf:params:rtp-hdrext:ssrc-audio-level`
    pub audio_level: Option<u8>,
}

/// An RFC 6464 client-to-mixer audio level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioLevel {
    /// The V bit: the sender's voice activity detection saw speech.
    pub voice: bool,
    /// Level in -dBov, 0 (loudest) to 127 (silence).
    pub level: u8,
}

/// Decodes a 3-byte abs-send-time value.
pub fn parse_abs_send_time(v: &[u8]) -> Option<u32> {
    match *v {
        [a, b, c] => Some(u32::from_be_bytes([0, a, b, c])),
        _ => None,
    }
}

/// Decodes a 2-byte transport-wide sequence number.
pub fn parse_transport_cc(v: &[u8]) -> Option<u16> {
    match *v {
        [a, b] => Some(u16::from_be_bytes([a, b])),
        _ => None,
    }
}

/// Decodes an RFC 6464 audio level (one byte; RFC 8285 lets senders pad it).
pub fn parse_audio_level(v: &[u8]) -> Option<AudioLevel> {
    let &b = v.first()?;
    Some(AudioLevel {
        voice: b & 0x80 != 0,
        level: b & 0x7f,
    })
}

fn ext_profile(buf: &[u8]) -> u16 {
    let at = FIXED_HEADER_LEN + usize::from(buf[0] & 0x0f) * 4;
    be16(buf, at)
}

fn ext_body(buf: &[u8], header_len: usize) -> &[u8] {
    let at = FIXED_HEADER_LEN + usize::from(buf[0] & 0x0f) * 4 + 4;
    &buf[at..header_len]
}

/// Iterates the elements of an RFC 8285 extension block.
#[derive(Debug, Clone)]
pub struct ExtensionIter<'a> {
    body: &'a [u8],
    two_byte: bool,
    pos: usize,
}

impl<'a> ExtensionIter<'a> {
    /// Iterates `body` (the block after its 4-byte header) under `profile`.
    /// A profile other than one-byte or two-byte headers yields nothing.
    pub fn new(profile: u16, body: &'a [u8]) -> Self {
        let two_byte = profile & 0xfff0 == TWO_BYTE_PROFILE;
        let known = profile == ONE_BYTE_PROFILE || two_byte;
        Self {
            body,
            two_byte,
            pos: if known { 0 } else { body.len() },
        }
    }
}

impl<'a> Iterator for ExtensionIter<'a> {
    type Item = Result<(u8, &'a [u8]), WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let &b = self.body.get(self.pos)?;
            if b == 0 {
                // Padding byte between elements (both forms).
                self.pos += 1;
                continue;
            }
            let (id, len, value_at) = if self.two_byte {
                let Some(&len) = self.body.get(self.pos + 1) else {
                    self.pos = self.body.len();
                    return Some(Err(WireError::Extension));
                };
                (b, usize::from(len), self.pos + 2)
            } else {
                let id = b >> 4;
                if id == 15 {
                    // RFC 8285 §4.2: stop processing the block.
                    self.pos = self.body.len();
                    return None;
                }
                (id, usize::from(b & 0x0f) + 1, self.pos + 1)
            };
            let Some(value) = self.body.get(value_at..value_at + len) else {
                self.pos = self.body.len();
                return Some(Err(WireError::Extension));
            };
            self.pos = value_at + len;
            return Some(Ok((id, value)));
        }
    }
}

/// A checked, writable view of an RTP packet's header, for the per-consumer
/// rewrite of SSRC, sequence number, timestamp, payload type and extensions.
/// Works on plaintext and on SRTP packets (it never touches the payload).
#[derive(Debug)]
pub struct RtpPacketMut<'a> {
    buf: &'a mut [u8],
    header_len: usize,
}

impl<'a> RtpPacketMut<'a> {
    /// Checks the header of `buf` (see [`header_len`]).
    pub fn new_checked(buf: &'a mut [u8]) -> Result<Self, WireError> {
        let header_len = header_len(buf)?;
        if buf[0] & 0x10 != 0 {
            let body = ext_body(buf, header_len);
            for element in ExtensionIter::new(ext_profile(buf), body) {
                element?;
            }
        }
        Ok(Self { buf, header_len })
    }

    /// Offset of the payload.
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// Sets the sequence number.
    pub fn set_sequence_number(&mut self, seq: u16) {
        self.buf[2..4].copy_from_slice(&seq.to_be_bytes());
    }

    /// Sets the timestamp.
    pub fn set_timestamp(&mut self, ts: u32) {
        self.buf[4..8].copy_from_slice(&ts.to_be_bytes());
    }

    /// Sets the SSRC.
    pub fn set_ssrc(&mut self, ssrc: u32) {
        self.buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
    }

    /// Sets the payload type, keeping the marker bit.
    pub fn set_payload_type(&mut self, pt: u8) {
        self.buf[1] = (self.buf[1] & 0x80) | (pt & 0x7f);
    }

    /// Sets or clears the marker bit.
    pub fn set_marker(&mut self, marker: bool) {
        self.buf[1] = (self.buf[1] & 0x7f) | if marker { 0x80 } else { 0 };
    }

    /// Overwrites the value of extension element `id` with `value`, which must
    /// have the element's current length. Returns `false` (and changes nothing)
    /// when there is no such element or the lengths differ.
    pub fn set_extension(&mut self, id: u8, value: &[u8]) -> bool {
        let Some(range) = self.extension_range(id) else {
            return false;
        };
        if range.len() != value.len() {
            return false;
        }
        self.buf[range].copy_from_slice(value);
        true
    }

    /// Overwrites the transport-wide sequence number under `map`.
    pub fn set_transport_cc_seq(&mut self, map: &ExtensionMap, seq: u16) -> bool {
        match map.transport_cc {
            Some(id) => self.set_extension(id, &seq.to_be_bytes()),
            None => false,
        }
    }

    fn extension_range(&self, id: u8) -> Option<core::ops::Range<usize>> {
        if self.buf[0] & 0x10 == 0 || id == 0 {
            return None;
        }
        let body_at = FIXED_HEADER_LEN + usize::from(self.buf[0] & 0x0f) * 4 + 4;
        let body = &self.buf[body_at..self.header_len];
        let base = body.as_ptr() as usize;
        ExtensionIter::new(ext_profile(self.buf), body)
            .map_while(Result::ok)
            .find(|&(i, _)| i == id)
            .map(|(_, v)| {
                let at = body_at + (v.as_ptr() as usize - base);
                at..at + v.len()
            })
    }
}

/// The fields of an RTP header to write with [`write_header`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtpHeader {
    /// Marker bit.
    pub marker: bool,
    /// 7-bit payload type.
    pub payload_type: u8,
    /// Sequence number.
    pub sequence_number: u16,
    /// Timestamp.
    pub timestamp: u32,
    /// SSRC.
    pub ssrc: u32,
}

/// Writes an RTP header with the given extension elements (no CSRCs) and
/// returns its length. Uses one-byte elements when every id is 1..=14 and
/// every value 1..=16 bytes long, two-byte elements otherwise.
pub fn write_header(
    buf: &mut [u8],
    header: &RtpHeader,
    extensions: &[(u8, &[u8])],
) -> Result<usize, WireError> {
    if header.payload_type > 0x7f {
        return Err(WireError::OutOfRange);
    }
    if buf.len() < FIXED_HEADER_LEN {
        return Err(WireError::BufferTooSmall);
    }
    let one_byte = extensions
        .iter()
        .all(|&(id, v)| (1..=14).contains(&id) && (1..=16).contains(&v.len()));
    let mut len = FIXED_HEADER_LEN;
    buf[0] = 0x80 | if extensions.is_empty() { 0 } else { 0x10 };
    buf[1] = header.payload_type | if header.marker { 0x80 } else { 0 };
    buf[2..4].copy_from_slice(&header.sequence_number.to_be_bytes());
    buf[4..8].copy_from_slice(&header.timestamp.to_be_bytes());
    buf[8..12].copy_from_slice(&header.ssrc.to_be_bytes());
    if extensions.is_empty() {
        return Ok(len);
    }
    let block_at = len;
    len += 4;
    for &(id, v) in extensions {
        if id == 0 || v.len() > 255 {
            return Err(WireError::OutOfRange);
        }
        let head = if one_byte { 1 } else { 2 };
        let out = buf
            .get_mut(len..len + head + v.len())
            .ok_or(WireError::BufferTooSmall)?;
        if one_byte {
            out[0] = (id << 4) | (v.len() as u8 - 1);
        } else {
            out[0] = id;
            out[1] = v.len() as u8;
        }
        out[head..].copy_from_slice(v);
        len += head + v.len();
    }
    let padded = (len + 3) & !3;
    buf.get_mut(len..padded)
        .ok_or(WireError::BufferTooSmall)?
        .fill(0);
    let words = (padded - block_at - 4) / 4;
    let words = u16::try_from(words).map_err(|_| WireError::OutOfRange)?;
    let profile = if one_byte {
        ONE_BYTE_PROFILE
    } else {
        TWO_BYTE_PROFILE
    };
    buf[block_at..block_at + 2].copy_from_slice(&profile.to_be_bytes());
    buf[block_at + 2..block_at + 4].copy_from_slice(&words.to_be_bytes());
    Ok(padded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(buf: &mut [u8; 1500], ext: &[(u8, &[u8])], payload: &[u8]) -> usize {
        buf.fill(0xa5);
        let h = RtpHeader {
            marker: true,
            payload_type: 96,
            sequence_number: 0xfffe,
            timestamp: 0xdead_beef,
            ssrc: 0x1234_5678,
        };
        let n = write_header(buf, &h, ext).unwrap();
        buf[n..n + payload.len()].copy_from_slice(payload);
        n + payload.len()
    }

    #[test]
    fn fixed_header_fields() {
        let mut buf = [0u8; 1500];
        let n = sample(&mut buf, &[], b"hello");
        let p = RtpPacket::new_checked(&buf[..n]).unwrap();
        assert!(p.marker());
        assert_eq!(p.payload_type(), 96);
        assert_eq!(p.sequence_number(), 0xfffe);
        assert_eq!(p.timestamp(), 0xdead_beef);
        assert_eq!(p.ssrc(), 0x1234_5678);
        assert_eq!(p.header_len(), 12);
        assert_eq!(p.payload(), b"hello");
        assert_eq!(p.extension_profile(), None);
        assert_eq!(p.extensions().count(), 0);
    }

    #[test]
    fn matches_webrtc_rs_rtp_on_csrcs_padding_and_extensions() {
        use bytes::Bytes;
        use rtp::packet::Packet;
        use webrtc_util::marshal::Unmarshal;
        // Version 2, P, X, CC=2; PT 111; one-byte extensions; 3 padding bytes.
        let mut raw = vec![0xb2, 0x6f, 0x01, 0x02, 0, 0, 0, 9, 0, 0, 0, 7];
        raw.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]);
        raw.extend_from_slice(&[0xbe, 0xde, 0, 2, 0x10, 0x85, 0x21, 0x01, 0x02, 0, 0, 0]);
        raw.extend_from_slice(b"opus");
        raw.extend_from_slice(&[0, 0, 3]);
        let ours = RtpPacket::new_checked(&raw).unwrap();
        let theirs = Packet::unmarshal(&mut Bytes::from(raw.clone()).as_ref()).unwrap();
        assert_eq!(ours.sequence_number(), theirs.header.sequence_number);
        assert_eq!(ours.ssrc(), theirs.header.ssrc);
        assert_eq!(ours.csrcs().collect::<Vec<_>>(), theirs.header.csrc);
        assert_eq!(ours.payload(), &theirs.payload[..]);
        assert_eq!(ours.padding_len(), 3);
        let map = ExtensionMap {
            audio_level: Some(1),
            transport_cc: Some(2),
            ..Default::default()
        };
        assert_eq!(
            ours.audio_level(&map),
            Some(AudioLevel {
                voice: true,
                level: 5
            })
        );
        assert_eq!(ours.transport_cc_seq(&map), Some(0x0102));
        for e in &theirs.header.extensions {
            assert_eq!(ours.extension(e.id), Some(&e.payload[..]));
        }
    }

    #[test]
    fn one_byte_and_two_byte_extensions_round_trip() {
        let map = ExtensionMap {
            mid: Some(1),
            rid: Some(2),
            repaired_rid: Some(3),
            abs_send_time: Some(4),
            transport_cc: Some(5),
            audio_level: Some(6),
        };
        let mut buf = [0u8; 1500];
        let ext: &[(u8, &[u8])] = &[
            (1, b"0"),
            (2, b"hi"),
            (3, b"lo"),
            (4, &[1, 2, 3]),
            (5, &[0xab, 0xcd]),
            (6, &[0x7f]),
        ];
        let n = sample(&mut buf, ext, b"x");
        let p = RtpPacket::new_checked(&buf[..n]).unwrap();
        assert_eq!(p.extension_profile(), Some(ONE_BYTE_PROFILE));
        assert_eq!(p.mid(&map), Some(&b"0"[..]));
        assert_eq!(p.rid(&map), Some(&b"hi"[..]));
        assert_eq!(p.repaired_rid(&map), Some(&b"lo"[..]));
        assert_eq!(p.abs_send_time(&map), Some(0x010203));
        assert_eq!(p.transport_cc_seq(&map), Some(0xabcd));
        assert_eq!(
            p.audio_level(&map),
            Some(AudioLevel {
                voice: false,
                level: 127
            })
        );
        assert_eq!(p.payload(), b"x");

        // An id of 15 or a 17-byte value forces the two-byte form.
        let long = [7u8; 17];
        let ext: &[(u8, &[u8])] = &[(15, &long), (2, b"r1")];
        let n = sample(&mut buf, ext, b"y");
        let p = RtpPacket::new_checked(&buf[..n]).unwrap();
        assert_eq!(p.extension_profile(), Some(TWO_BYTE_PROFILE));
        assert_eq!(p.extension(15), Some(&long[..]));
        assert_eq!(p.rid(&map), Some(&b"r1"[..]));
        assert_eq!(p.payload(), b"y");
    }

    #[test]
    fn one_byte_id_15_stops_processing() {
        let raw = [
            0x90, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0xbe, 0xde, 0, 1, 0x10, 0xaa, 0xf0, 0x20,
        ];
        let p = RtpPacket::new_checked(&raw).unwrap();
        assert_eq!(p.extensions().collect::<Vec<_>>(), vec![(1, &[0xaa][..])]);
    }

    #[test]
    fn in_place_rewrite() {
        let map = ExtensionMap {
            transport_cc: Some(3),
            ..Default::default()
        };
        let mut buf = [0u8; 1500];
        let n = sample(&mut buf, &[(3, &[0, 0])], b"payload");
        let mut m = RtpPacketMut::new_checked(&mut buf[..n]).unwrap();
        m.set_sequence_number(7);
        m.set_timestamp(8);
        m.set_ssrc(9);
        m.set_payload_type(100);
        m.set_marker(false);
        assert!(m.set_transport_cc_seq(&map, 0x4242));
        assert!(!m.set_extension(3, &[1, 2, 3]), "length change refused");
        assert!(!m.set_extension(4, &[1, 2]), "absent id refused");
        let p = RtpPacket::new_checked(&buf[..n]).unwrap();
        assert_eq!((p.sequence_number(), p.timestamp(), p.ssrc()), (7, 8, 9));
        assert_eq!((p.payload_type(), p.marker()), (100, false));
        assert_eq!(p.transport_cc_seq(&map), Some(0x4242));
        assert_eq!(p.payload(), b"payload");
    }

    #[test]
    fn rejects_malformed() {
        let ok = [0x80u8, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 9];
        assert!(RtpPacket::new_checked(&ok).is_ok());
        assert_eq!(
            RtpPacket::new_checked(&ok[..11]).unwrap_err(),
            WireError::Truncated
        );
        let mut v1 = ok;
        v1[0] = 0x40;
        assert_eq!(RtpPacket::new_checked(&v1).unwrap_err(), WireError::Version);
        let mut cc = ok;
        cc[0] = 0x81;
        assert_eq!(
            RtpPacket::new_checked(&cc).unwrap_err(),
            WireError::Truncated
        );
        let mut pad0 = ok;
        pad0[0] = 0xa0;
        pad0[12] = 0;
        assert_eq!(
            RtpPacket::new_checked(&pad0).unwrap_err(),
            WireError::Padding
        );
        pad0[12] = 2;
        assert_eq!(
            RtpPacket::new_checked(&pad0).unwrap_err(),
            WireError::Padding
        );
        pad0[12] = 1;
        assert_eq!(RtpPacket::new_checked(&pad0).unwrap().payload(), b"");
        // Extension element whose length runs past the block.
        let bad_ext = [
            0x90u8, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0xbe, 0xde, 0, 1, 0x13, 1, 2, 3,
        ];
        assert_eq!(
            RtpPacket::new_checked(&bad_ext).unwrap_err(),
            WireError::Extension
        );
        // Extension length word past the buffer.
        let long_ext = [0x90u8, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0xbe, 0xde, 0, 9];
        assert_eq!(header_len(&long_ext).unwrap_err(), WireError::Truncated);
    }

    #[test]
    fn never_panics_on_truncation_or_bit_flips() {
        let mut buf = [0u8; 1500];
        let ext: &[(u8, &[u8])] = &[(1, b"0"), (5, &[1, 2])];
        let n = sample(&mut buf, ext, b"abcdef");
        let map = ExtensionMap {
            mid: Some(1),
            transport_cc: Some(5),
            audio_level: Some(2),
            ..Default::default()
        };
        for cut in 0..=n {
            let _ = RtpPacket::new_checked(&buf[..cut]);
        }
        for i in 0..n {
            for bit in 0..8 {
                let mut b = buf;
                b[i] ^= 1 << bit;
                if let Ok(p) = RtpPacket::new_checked(&b[..n]) {
                    let _ = (p.payload(), p.csrcs().count(), p.extensions().count());
                    let _ = (p.mid(&map), p.transport_cc_seq(&map), p.audio_level(&map));
                }
                if let Ok(mut m) = RtpPacketMut::new_checked(&mut b[..n]) {
                    m.set_transport_cc_seq(&map, 1);
                }
            }
        }
    }
}
