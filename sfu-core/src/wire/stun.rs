//! STUN messages (RFC 5389, RFC 8489) as an ICE-lite agent sees them.
//!
//! [`StunMessage::new_checked`] validates the 20-byte header and walks every
//! attribute once; afterwards no accessor can panic or read out of bounds.
//! [`StunMessage::verify_integrity`] checks MESSAGE-INTEGRITY (HMAC-SHA1,
//! RFC 5389 §15.4) and [`StunMessage::verify_fingerprint`] checks FINGERPRINT
//! (CRC-32, §15.5). [`StunWriter`] builds a message in a caller-owned buffer,
//! writing every byte itself (padding included), so the buffer may hold
//! anything beforehand.
//!
//! Per RFC 5389 §15.4, attributes that follow MESSAGE-INTEGRITY are not covered
//! by it and must be ignored, FINGERPRINT excepted. The view applies that rule
//! everywhere: [`StunMessage::attributes`], [`StunMessage::attribute`] and the
//! typed readers never return an unauthenticated attribute placed after
//! MESSAGE-INTEGRITY.
//!
//! For ICE short-term credentials (RFC 8445 §7.2.2) the integrity key is the
//! password bytes as they are; for long-term credentials it is
//! `MD5(username ":" realm ":" SASLprep(password))`, computed by the caller.
//!
//! Nothing here allocates.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

use super::{WireError, be16, be32};

/// Length of the fixed STUN header.
pub const HEADER_LEN: usize = 20;
/// The magic cookie every RFC 5389 message carries in bytes 4..8.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// The value FINGERPRINT's CRC-32 is XOR-ed with (RFC 5389 §15.5).
pub const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// Message type of a Binding request.
pub const BINDING_REQUEST: u16 = 0x0001;
/// Message type of a Binding indication.
pub const BINDING_INDICATION: u16 = 0x0011;
/// Message type of a Binding success response.
pub const BINDING_SUCCESS: u16 = 0x0101;
/// Message type of a Binding error response.
pub const BINDING_ERROR: u16 = 0x0111;

/// MAPPED-ADDRESS attribute type (RFC 5389 §15.1).
pub const MAPPED_ADDRESS: u16 = 0x0001;
/// USERNAME attribute type (RFC 5389 §15.3).
pub const USERNAME: u16 = 0x0006;
/// MESSAGE-INTEGRITY attribute type (RFC 5389 §15.4).
pub const MESSAGE_INTEGRITY: u16 = 0x0008;
/// ERROR-CODE attribute type (RFC 5389 §15.6).
pub const ERROR_CODE: u16 = 0x0009;
/// UNKNOWN-ATTRIBUTES attribute type (RFC 5389 §15.9).
pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
/// REALM attribute type (RFC 5389 §15.7).
pub const REALM: u16 = 0x0014;
/// NONCE attribute type (RFC 5389 §15.8).
pub const NONCE: u16 = 0x0015;
/// XOR-MAPPED-ADDRESS attribute type (RFC 5389 §15.2).
pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
/// PRIORITY attribute type (RFC 8445 §16.1).
pub const PRIORITY: u16 = 0x0024;
/// USE-CANDIDATE attribute type (RFC 8445 §16.1).
pub const USE_CANDIDATE: u16 = 0x0025;
/// SOFTWARE attribute type (RFC 5389 §15.10).
pub const SOFTWARE: u16 = 0x8022;
/// FINGERPRINT attribute type (RFC 5389 §15.5).
pub const FINGERPRINT: u16 = 0x8028;
/// ICE-CONTROLLED attribute type (RFC 8445 §16.1).
pub const ICE_CONTROLLED: u16 = 0x8029;
/// ICE-CONTROLLING attribute type (RFC 8445 §16.1).
pub const ICE_CONTROLLING: u16 = 0x802A;

/// Length of the MESSAGE-INTEGRITY value (an HMAC-SHA1 digest).
const INTEGRITY_LEN: usize = 20;
/// Length of the FINGERPRINT value.
const FINGERPRINT_LEN: usize = 4;

/// The class of a STUN message, encoded in bits C1 and C0 of its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StunClass {
    /// A request (C1 = 0, C0 = 0).
    Request,
    /// An indication (C1 = 0, C0 = 1).
    Indication,
    /// A success response (C1 = 1, C0 = 0).
    SuccessResponse,
    /// An error response (C1 = 1, C0 = 1).
    ErrorResponse,
}

/// A checked, read-only view of one STUN message.
#[derive(Debug, Clone, Copy)]
pub struct StunMessage<'a> {
    /// The whole message, exactly as long as its header says.
    buf: &'a [u8],
    /// Bytes 8..20 of `buf`.
    transaction_id: &'a [u8; 12],
    /// Offset of the first MESSAGE-INTEGRITY attribute header, if any.
    integrity: Option<usize>,
    /// Offset of the last attribute header, if there is any attribute.
    last: Option<usize>,
}

impl<'a> StunMessage<'a> {
    /// Validates `buf` as one complete STUN message.
    ///
    /// Checks the header (top two bits zero, magic cookie, length a multiple
    /// of 4 and equal to `buf.len() - 20`) and that the attributes, each padded
    /// to 4 bytes, tile the body exactly.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if `buf` is shorter than the header or than
    /// its length field says, [`WireError::UnknownType`] if either of the top
    /// two bits is set, [`WireError::MagicCookie`] without the magic cookie,
    /// [`WireError::Length`] if the length field is not a multiple of 4 or
    /// bytes trail the message, [`WireError::Attribute`] if an attribute
    /// overruns the message.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        let Some((header, body)) = buf.split_first_chunk::<HEADER_LEN>() else {
            return Err(WireError::Truncated);
        };
        if header[0] & 0xC0 != 0 {
            return Err(WireError::UnknownType);
        }
        if be32(header, 4) != MAGIC_COOKIE {
            return Err(WireError::MagicCookie);
        }
        let length = usize::from(be16(header, 2));
        if length % 4 != 0 {
            return Err(WireError::Length);
        }
        if length > body.len() {
            return Err(WireError::Truncated);
        }
        if length < body.len() {
            return Err(WireError::Length);
        }
        let Some((_, transaction_id)) = header.split_last_chunk::<12>() else {
            return Err(WireError::Truncated);
        };

        let mut integrity = None;
        let mut last = None;
        let mut pos = HEADER_LEN;
        while pos < buf.len() {
            let Some(tlv) = buf.get(pos..pos.saturating_add(4)) else {
                return Err(WireError::Attribute);
            };
            let typ = be16(tlv, 0);
            let end = pos
                .saturating_add(4)
                .saturating_add(padded(usize::from(be16(tlv, 2))));
            if end > buf.len() {
                return Err(WireError::Attribute);
            }
            if typ == MESSAGE_INTEGRITY && integrity.is_none() {
                integrity = Some(pos);
            }
            last = Some(pos);
            pos = end;
        }

        Ok(Self {
            buf,
            transaction_id,
            integrity,
            last,
        })
    }

    /// The whole message.
    #[inline]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// The 14-bit message type (method and class interleaved).
    #[inline]
    pub fn message_type(&self) -> u16 {
        self.header_u16(0)
    }

    /// The 12-bit method (1 for Binding).
    #[inline]
    pub fn method(&self) -> u16 {
        let t = self.message_type();
        (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2)
    }

    /// The class (request, indication, success or error response).
    #[inline]
    pub fn class(&self) -> StunClass {
        let t = self.message_type();
        match ((t >> 7) & 0b10) | ((t >> 4) & 0b01) {
            0b00 => StunClass::Request,
            0b01 => StunClass::Indication,
            0b10 => StunClass::SuccessResponse,
            _ => StunClass::ErrorResponse,
        }
    }

    /// The 96-bit transaction ID.
    #[inline]
    pub fn transaction_id(&self) -> &'a [u8; 12] {
        self.transaction_id
    }

    /// Attributes in order as `(type, value)`, the value without padding.
    ///
    /// Attributes after the first MESSAGE-INTEGRITY are skipped, FINGERPRINT
    /// excepted (RFC 5389 §15.4).
    #[inline]
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes {
            buf: self.buf,
            pos: HEADER_LEN,
            integrity: self.integrity,
        }
    }

    /// The value of the first attribute of type `typ`, as
    /// [`attributes`](Self::attributes) sees them.
    pub fn attribute(&self, typ: u16) -> Option<&'a [u8]> {
        self.attributes()
            .find(|&(t, _)| t == typ)
            .map(|(_, value)| value)
    }

    /// The USERNAME value (for ICE, `"remote-ufrag:local-ufrag"`), unvalidated.
    #[inline]
    pub fn username(&self) -> Option<&'a [u8]> {
        self.attribute(USERNAME)
    }

    /// The PRIORITY value, if present and 4 bytes long.
    #[inline]
    pub fn priority(&self) -> Option<u32> {
        let value = self.attribute(PRIORITY)?;
        Some(u32::from_be_bytes(*<&[u8; 4]>::try_from(value).ok()?))
    }

    /// Whether USE-CANDIDATE is present.
    #[inline]
    pub fn use_candidate(&self) -> bool {
        self.attribute(USE_CANDIDATE).is_some()
    }

    /// The ICE-CONTROLLING tie-breaker, if present and 8 bytes long.
    #[inline]
    pub fn ice_controlling(&self) -> Option<u64> {
        self.attribute_u64(ICE_CONTROLLING)
    }

    /// The ICE-CONTROLLED tie-breaker, if present and 8 bytes long.
    #[inline]
    pub fn ice_controlled(&self) -> Option<u64> {
        self.attribute_u64(ICE_CONTROLLED)
    }

    /// The XOR-MAPPED-ADDRESS, de-obfuscated, if present and well formed.
    pub fn xor_mapped_address(&self) -> Option<SocketAddr> {
        let value = self.attribute(XOR_MAPPED_ADDRESS)?;
        let [_, family, p0, p1, addr @ ..] = value else {
            return None;
        };
        let port = u16::from_be_bytes([*p0, *p1]) ^ (MAGIC_COOKIE >> 16) as u16;
        let mask = xor_mask(self.transaction_id);
        let ip = match (*family, addr.len()) {
            (0x01, 4) => {
                let mut octets = [0u8; 4];
                for ((o, a), m) in octets.iter_mut().zip(addr).zip(&mask) {
                    *o = a ^ m;
                }
                IpAddr::V4(Ipv4Addr::from(octets))
            }
            (0x02, 16) => {
                let mut octets = [0u8; 16];
                for ((o, a), m) in octets.iter_mut().zip(addr).zip(&mask) {
                    *o = a ^ m;
                }
                IpAddr::V6(Ipv6Addr::from(octets))
            }
            _ => return None,
        };
        Some(SocketAddr::new(ip, port))
    }

    /// The ERROR-CODE as `(code, reason phrase)`, if present and well formed
    /// (class 3..=6, number 0..=99; the phrase is unvalidated UTF-8).
    pub fn error_code(&self) -> Option<(u16, &'a [u8])> {
        let value = self.attribute(ERROR_CODE)?;
        let [_, _, class, number, reason @ ..] = value else {
            return None;
        };
        let class = class & 0x07;
        if !(3..=6).contains(&class) || *number > 99 {
            return None;
        }
        Some((u16::from(class) * 100 + u16::from(*number), reason))
    }

    /// Checks MESSAGE-INTEGRITY with `key` (RFC 5389 §15.4).
    ///
    /// The HMAC-SHA1 covers the message up to the attribute, with the header
    /// length field counted as if MESSAGE-INTEGRITY were the last attribute.
    /// For ICE short-term credentials `key` is the password.
    ///
    /// # Errors
    /// [`WireError::Integrity`] if the attribute is missing, is not 20 bytes
    /// long, or does not match. The comparison is constant-time.
    pub fn verify_integrity(&self, key: &[u8]) -> Result<(), WireError> {
        let at = self.integrity.ok_or(WireError::Integrity)?;
        let value_at = at + 4;
        let expected = self
            .buf
            .get(value_at..value_at + INTEGRITY_LEN)
            .ok_or(WireError::Integrity)?;
        if usize::from(be16(self.buf, at + 2)) != INTEGRITY_LEN {
            return Err(WireError::Integrity);
        }
        let mac = integrity_mac(self.buf, at, key)?;
        if bool::from(mac.ct_eq(expected)) {
            Ok(())
        } else {
            Err(WireError::Integrity)
        }
    }

    /// Checks FINGERPRINT (RFC 5389 §15.5): it must be the last attribute and
    /// hold the CRC-32 of the message before it, XOR `0x5354554e`.
    ///
    /// # Errors
    /// [`WireError::Fingerprint`] if the attribute is missing, not last, not
    /// 4 bytes long, or does not match.
    pub fn verify_fingerprint(&self) -> Result<(), WireError> {
        let at = self.last.ok_or(WireError::Fingerprint)?;
        let attr = self.buf.get(at..).ok_or(WireError::Fingerprint)?;
        if attr.len() != 4 + FINGERPRINT_LEN
            || be16(attr, 0) != FINGERPRINT
            || usize::from(be16(attr, 2)) != FINGERPRINT_LEN
        {
            return Err(WireError::Fingerprint);
        }
        let covered = self.buf.get(..at).ok_or(WireError::Fingerprint)?;
        if fingerprint(covered) == be32(attr, 4) {
            Ok(())
        } else {
            Err(WireError::Fingerprint)
        }
    }

    /// Reads a header field; the header is 20 bytes by construction.
    #[inline]
    fn header_u16(&self, at: usize) -> u16 {
        match self.buf.get(at..at + 2) {
            Some(&[a, b]) => u16::from_be_bytes([a, b]),
            _ => 0,
        }
    }

    /// The value of attribute `typ` as a big-endian `u64`, if 8 bytes long.
    fn attribute_u64(&self, typ: u16) -> Option<u64> {
        let value = self.attribute(typ)?;
        Some(u64::from_be_bytes(*<&[u8; 8]>::try_from(value).ok()?))
    }
}

/// Iterator over a [`StunMessage`]'s attributes, from
/// [`StunMessage::attributes`].
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    /// The whole message.
    buf: &'a [u8],
    /// Offset of the next attribute header.
    pos: usize,
    /// Offset of the first MESSAGE-INTEGRITY attribute header, if any.
    integrity: Option<usize>,
}

impl<'a> Iterator for Attributes<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let at = self.pos;
            let value_at = at.saturating_add(4);
            let tlv = self.buf.get(at..value_at)?;
            let typ = be16(tlv, 0);
            let len = usize::from(be16(tlv, 2));
            let value = self.buf.get(value_at..value_at.saturating_add(len))?;
            self.pos = value_at.saturating_add(padded(len));
            let after_integrity = self.integrity.is_some_and(|mi| at > mi);
            if !after_integrity || typ == FINGERPRINT {
                return Some((typ, value));
            }
        }
    }
}

/// Builds a STUN message in a caller-owned buffer.
///
/// Every byte of the message is written (padding as zeros), and the header
/// length field is correct after each successful `add_*`. A failed `add_*`
/// leaves the message as it was. MESSAGE-INTEGRITY and then FINGERPRINT, if
/// wanted, must be added last.
#[derive(Debug)]
pub struct StunWriter<'b> {
    /// The output buffer; `buf[..len]` is the message so far.
    buf: &'b mut [u8],
    /// Bytes written so far, header included.
    len: usize,
}

impl<'b> StunWriter<'b> {
    /// Starts a message of type `message_type` (e.g. [`BINDING_SUCCESS`])
    /// by writing its header with a zero length.
    ///
    /// # Errors
    /// [`WireError::BufferTooSmall`] if `buf` is shorter than 20 bytes,
    /// [`WireError::OutOfRange`] if either of the top two bits of
    /// `message_type` is set.
    pub fn new(
        buf: &'b mut [u8],
        message_type: u16,
        transaction_id: &[u8; 12],
    ) -> Result<Self, WireError> {
        if message_type & 0xC000 != 0 {
            return Err(WireError::OutOfRange);
        }
        let Some(header) = buf.first_chunk_mut::<HEADER_LEN>() else {
            return Err(WireError::BufferTooSmall);
        };
        header[0..2].copy_from_slice(&message_type.to_be_bytes());
        header[2..4].copy_from_slice(&0u16.to_be_bytes());
        header[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        header[8..20].copy_from_slice(transaction_id);
        Ok(Self {
            buf,
            len: HEADER_LEN,
        })
    }

    /// Appends an attribute with `value`, padded with zeros to 4 bytes.
    ///
    /// # Errors
    /// [`WireError::BufferTooSmall`] if it does not fit the buffer,
    /// [`WireError::OutOfRange`] if the value or the message would exceed
    /// 65535 bytes.
    pub fn add_attribute(&mut self, typ: u16, value: &[u8]) -> Result<(), WireError> {
        let at = self.reserve(typ, value.len())?;
        self.value_mut(at, value.len())?.copy_from_slice(value);
        Ok(())
    }

    /// Appends USERNAME.
    ///
    /// # Errors
    /// As [`add_attribute`](Self::add_attribute).
    pub fn add_username(&mut self, username: &[u8]) -> Result<(), WireError> {
        self.add_attribute(USERNAME, username)
    }

    /// Appends PRIORITY.
    ///
    /// # Errors
    /// As [`add_attribute`](Self::add_attribute).
    pub fn add_priority(&mut self, priority: u32) -> Result<(), WireError> {
        self.add_attribute(PRIORITY, &priority.to_be_bytes())
    }

    /// Appends an empty USE-CANDIDATE.
    ///
    /// # Errors
    /// As [`add_attribute`](Self::add_attribute).
    pub fn add_use_candidate(&mut self) -> Result<(), WireError> {
        self.add_attribute(USE_CANDIDATE, &[])
    }

    /// Appends ICE-CONTROLLING with `tie_breaker`.
    ///
    /// # Errors
    /// As [`add_attribute`](Self::add_attribute).
    pub fn add_ice_controlling(&mut self, tie_breaker: u64) -> Result<(), WireError> {
        self.add_attribute(ICE_CONTROLLING, &tie_breaker.to_be_bytes())
    }

    /// Appends ICE-CONTROLLED with `tie_breaker`.
    ///
    /// # Errors
    /// As [`add_attribute`](Self::add_attribute).
    pub fn add_ice_controlled(&mut self, tie_breaker: u64) -> Result<(), WireError> {
        self.add_attribute(ICE_CONTROLLED, &tie_breaker.to_be_bytes())
    }

    /// Appends XOR-MAPPED-ADDRESS for `addr`, obfuscated with the magic
    /// cookie and this message's transaction ID. IPv6 flow info and scope
    /// are not carried.
    ///
    /// # Errors
    /// As [`add_attribute`](Self::add_attribute).
    pub fn add_xor_mapped_address(&mut self, addr: SocketAddr) -> Result<(), WireError> {
        let transaction_id = self
            .buf
            .get(8..HEADER_LEN)
            .and_then(|t| <&[u8; 12]>::try_from(t).ok())
            .ok_or(WireError::BufferTooSmall)?;
        let mask = xor_mask(transaction_id);
        let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
        let mut value = [0u8; 20];
        value[2..4].copy_from_slice(&port.to_be_bytes());
        let len = match addr.ip() {
            IpAddr::V4(ip) => {
                value[1] = 0x01;
                for ((v, o), m) in value[4..8].iter_mut().zip(ip.octets()).zip(mask) {
                    *v = o ^ m;
                }
                8
            }
            IpAddr::V6(ip) => {
                value[1] = 0x02;
                for ((v, o), m) in value[4..20].iter_mut().zip(ip.octets()).zip(mask) {
                    *v = o ^ m;
                }
                20
            }
        };
        self.add_attribute(XOR_MAPPED_ADDRESS, &value[..len])
    }

    /// Appends ERROR-CODE with `code` (300..=699) and a reason phrase.
    ///
    /// # Errors
    /// [`WireError::OutOfRange`] if `code` is outside 300..=699, otherwise as
    /// [`add_attribute`](Self::add_attribute).
    pub fn add_error_code(&mut self, code: u16, reason: &[u8]) -> Result<(), WireError> {
        if !(300..=699).contains(&code) {
            return Err(WireError::OutOfRange);
        }
        let len = reason.len().checked_add(4).ok_or(WireError::OutOfRange)?;
        let at = self.reserve(ERROR_CODE, len)?;
        let value = self.value_mut(at, len)?;
        // Both fit a byte: the class is 3..=6 and the number 0..=99.
        let (class, number) = ((code / 100) as u8, (code % 100) as u8);
        value[..4].copy_from_slice(&[0, 0, class, number]);
        value[4..].copy_from_slice(reason);
        Ok(())
    }

    /// Appends MESSAGE-INTEGRITY, the HMAC-SHA1 with `key` of the message so
    /// far (RFC 5389 §15.4). Only FINGERPRINT may follow it.
    ///
    /// # Errors
    /// As [`add_attribute`](Self::add_attribute).
    pub fn add_message_integrity(&mut self, key: &[u8]) -> Result<(), WireError> {
        let at = self.reserve(MESSAGE_INTEGRITY, INTEGRITY_LEN)?;
        let mac = integrity_mac(self.buf, at, key)?;
        self.value_mut(at, INTEGRITY_LEN)?.copy_from_slice(&mac);
        Ok(())
    }

    /// Appends FINGERPRINT, the CRC-32 of the message so far XOR
    /// `0x5354554e` (RFC 5389 §15.5). It must be the last attribute.
    ///
    /// # Errors
    /// As [`add_attribute`](Self::add_attribute).
    pub fn add_fingerprint(&mut self) -> Result<(), WireError> {
        let at = self.reserve(FINGERPRINT, FINGERPRINT_LEN)?;
        let covered = self.buf.get(..at).ok_or(WireError::BufferTooSmall)?;
        let crc = fingerprint(covered);
        self.value_mut(at, FINGERPRINT_LEN)?
            .copy_from_slice(&crc.to_be_bytes());
        Ok(())
    }

    /// Ends the message; returns its total length, header included. The
    /// message is the first that many bytes of the buffer.
    #[inline]
    pub fn finish(self) -> usize {
        self.len
    }

    /// Writes the header of an attribute with a `len`-byte value, zeroes its
    /// padding, updates the header length field and returns the offset of
    /// the attribute. The value bytes are left for the caller to write.
    /// Changes nothing on error.
    fn reserve(&mut self, typ: u16, len: usize) -> Result<usize, WireError> {
        let value_len = u16::try_from(len).map_err(|_| WireError::OutOfRange)?;
        let at = self.len;
        let end = at + 4 + padded(len);
        let body_len = u16::try_from(end - HEADER_LEN).map_err(|_| WireError::OutOfRange)?;
        let attr = self.buf.get_mut(at..end).ok_or(WireError::BufferTooSmall)?;
        attr[0..2].copy_from_slice(&typ.to_be_bytes());
        attr[2..4].copy_from_slice(&value_len.to_be_bytes());
        attr[4 + len..].fill(0);
        self.buf[2..4].copy_from_slice(&body_len.to_be_bytes());
        self.len = end;
        Ok(at)
    }

    /// The `len`-byte value of the attribute whose header is at `at`.
    fn value_mut(&mut self, at: usize, len: usize) -> Result<&mut [u8], WireError> {
        self.buf
            .get_mut(at + 4..at + 4 + len)
            .ok_or(WireError::BufferTooSmall)
    }
}

/// `len` rounded up to a multiple of 4.
#[inline]
fn padded(len: usize) -> usize {
    len.saturating_add(3) & !3
}

/// The 16-byte mask XOR-MAPPED-ADDRESS uses: magic cookie, transaction ID.
fn xor_mask(transaction_id: &[u8; 12]) -> [u8; 16] {
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    mask[4..].copy_from_slice(transaction_id);
    mask
}

/// HMAC-SHA1 with `key` over `msg[..at]`, where `at` is the offset of a
/// MESSAGE-INTEGRITY attribute, with the header length field set to end just
/// after that attribute. `msg` itself is not modified.
fn integrity_mac(msg: &[u8], at: usize, key: &[u8]) -> Result<[u8; 20], WireError> {
    let (Some(header), Some(rest)) = (msg.first_chunk::<HEADER_LEN>(), msg.get(HEADER_LEN..at))
    else {
        return Err(WireError::Integrity);
    };
    let length = (at + 4 + INTEGRITY_LEN)
        .checked_sub(HEADER_LEN)
        .and_then(|l| u16::try_from(l).ok())
        .ok_or(WireError::Integrity)?;
    let mut patched = *header;
    patched[2..4].copy_from_slice(&length.to_be_bytes());
    let mut mac = Hmac::<Sha1>::new_from_slice(key).map_err(|_| WireError::Integrity)?;
    mac.update(&patched);
    mac.update(rest);
    Ok(mac.finalize().into_bytes().into())
}

/// The FINGERPRINT value for the message bytes before the attribute.
#[inline]
fn fingerprint(covered: &[u8]) -> u32 {
    crc32fast::hash(covered) ^ FINGERPRINT_XOR
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes a hex string, ignoring whitespace.
    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        assert_eq!(digits.len() % 2, 0, "odd number of hex digits");
        digits
            .chunks(2)
            .map(|pair| {
                let pair = std::str::from_utf8(pair).expect("ascii");
                u8::from_str_radix(pair, 16).expect("hex digit")
            })
            .collect()
    }

    /// RFC 5769 §2.1: sample request (short-term credentials).
    const SAMPLE_REQUEST: &str = "
        00 01 00 58  21 12 a4 42  b7 e7 a7 01  bc 34 d6 86  fa 87 df ae
        80 22 00 10  53 54 55 4e  20 74 65 73  74 20 63 6c  69 65 6e 74
        00 24 00 04  6e 00 01 ff
        80 29 00 08  93 2f f9 b1  51 26 3b 36
        00 06 00 09  65 76 74 6a  3a 68 36 76  59 20 20 20
        00 08 00 14  9a ea a7 0c  bf d8 cb 56  78 1e f2 b5  b2 d3 f2 49  c1 b5 71 a2
        80 28 00 04  e5 7a 3b cf";

    /// RFC 5769 §2.2: sample IPv4 response.
    const SAMPLE_IPV4_RESPONSE: &str = "
        01 01 00 3c  21 12 a4 42  b7 e7 a7 01  bc 34 d6 86  fa 87 df ae
        80 22 00 0b  74 65 73 74  20 76 65 63  74 6f 72 20
        00 20 00 08  00 01 a1 47  e1 12 a6 43
        00 08 00 14  2b 91 f5 99  fd 9e 90 c3  8c 74 89 f9  2a f9 ba 53  f0 6b e7 d7
        80 28 00 04  c0 7d 4c 96";

    /// RFC 5769 §2.3: sample IPv6 response.
    const SAMPLE_IPV6_RESPONSE: &str = "
        01 01 00 48  21 12 a4 42  b7 e7 a7 01  bc 34 d6 86  fa 87 df ae
        80 22 00 0b  74 65 73 74  20 76 65 63  74 6f 72 20
        00 20 00 14  00 02 a1 47  01 13 a9 fa  a5 d3 f1 79  bc 25 f4 b5  be d2 b9 d9
        00 08 00 14  a3 82 95 4e  4b e6 7b f1  17 84 c9 7c  82 92 c2 75  bf e3 ed 41
        80 28 00 04  c8 fb 0b 4c";

    /// RFC 5769 §2.4: sample request with long-term credentials (no
    /// FINGERPRINT).
    const SAMPLE_LONG_TERM_REQUEST: &str = "
        00 01 00 60  21 12 a4 42  78 ad 34 33  c6 ad 72 c0  29 da 41 2e
        00 06 00 12  e3 83 9e e3  83 88 e3 83  aa e3 83 83  e3 82 af e3  82 b9 00 00
        00 15 00 1c  66 2f 2f 34  39 39 6b 39  35 34 64 36  4f 4c 33 34  6f 4c 39 46
                     53 54 76 79  36 34 73 41
        00 14 00 0b  65 78 61 6d  70 6c 65 2e  6f 72 67 00
        00 08 00 14  f6 70 24 65  6d d6 4a 3e  02 b8 e0 71  2e 85 c9 a2  8c a8 96 66";

    /// Short-term password of RFC 5769 §2.1 to §2.3.
    const PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";

    /// Long-term key of RFC 5769 §2.4: MD5("マトリックス:example.org:TheMatrIX").
    ///
    /// The RFC gives the password as "The<U+00AD>M<U+00AA>trIX"; SASLprep
    /// (RFC 4013) maps the soft hyphen U+00AD to nothing and NFKC turns the
    /// feminine ordinal U+00AA into "a", giving "TheMatrIX". MD5 is not a
    /// dependency, so the key was computed once with
    /// `python3 -c 'import hashlib; print(hashlib.md5("マトリックス:example.org:TheMatrIX".encode()).hexdigest())'`.
    const LONG_TERM_KEY: &str = "e8ca7ad59d5eb0518e312911d2dab2a9";

    const SAMPLE_TRANSACTION_ID: [u8; 12] = [
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    ];

    fn all_vectors() -> Vec<Vec<u8>> {
        [
            SAMPLE_REQUEST,
            SAMPLE_IPV4_RESPONSE,
            SAMPLE_IPV6_RESPONSE,
            SAMPLE_LONG_TERM_REQUEST,
        ]
        .iter()
        .map(|s| hex(s))
        .collect()
    }

    /// Calls every accessor and check; used to prove none of them panics.
    fn exercise(msg: &StunMessage<'_>) {
        let _ = (msg.message_type(), msg.method(), msg.class());
        let _ = (msg.transaction_id(), msg.as_bytes().len());
        for (typ, value) in msg.attributes() {
            let _ = (typ, value.len());
        }
        let _ = (msg.attribute(SOFTWARE), msg.username(), msg.priority());
        let _ = (
            msg.use_candidate(),
            msg.ice_controlling(),
            msg.ice_controlled(),
        );
        let _ = (msg.xor_mapped_address(), msg.error_code());
        let _ = msg.verify_integrity(PASSWORD);
        let _ = msg.verify_integrity(&[]);
        let _ = msg.verify_fingerprint();
    }

    #[test]
    fn rfc5769_sample_request() {
        let buf = hex(SAMPLE_REQUEST);
        let msg = StunMessage::new_checked(&buf).unwrap();
        assert_eq!(msg.message_type(), BINDING_REQUEST);
        assert_eq!(msg.method(), 1);
        assert_eq!(msg.class(), StunClass::Request);
        assert_eq!(msg.transaction_id(), &SAMPLE_TRANSACTION_ID);
        assert_eq!(msg.attribute(SOFTWARE), Some(&b"STUN test client"[..]));
        assert_eq!(msg.username(), Some(&b"evtj:h6vY"[..]));
        assert_eq!(msg.priority(), Some(0x6e00_01ff));
        assert_eq!(msg.ice_controlled(), Some(0x932f_f9b1_5126_3b36));
        assert_eq!(msg.ice_controlling(), None);
        assert!(!msg.use_candidate());
        assert_eq!(msg.xor_mapped_address(), None);
        assert_eq!(msg.error_code(), None);
        let types: Vec<u16> = msg.attributes().map(|(t, _)| t).collect();
        assert_eq!(
            types,
            [
                SOFTWARE,
                PRIORITY,
                ICE_CONTROLLED,
                USERNAME,
                MESSAGE_INTEGRITY,
                FINGERPRINT
            ]
        );
        assert_eq!(msg.verify_integrity(PASSWORD), Ok(()));
        assert_eq!(msg.verify_fingerprint(), Ok(()));
        assert_eq!(
            msg.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBT"),
            Err(WireError::Integrity)
        );
    }

    #[test]
    fn rfc5769_ipv4_response() {
        let buf = hex(SAMPLE_IPV4_RESPONSE);
        let msg = StunMessage::new_checked(&buf).unwrap();
        assert_eq!(msg.message_type(), BINDING_SUCCESS);
        assert_eq!(msg.class(), StunClass::SuccessResponse);
        assert_eq!(msg.method(), 1);
        assert_eq!(msg.transaction_id(), &SAMPLE_TRANSACTION_ID);
        assert_eq!(msg.attribute(SOFTWARE), Some(&b"test vector"[..]));
        assert_eq!(
            msg.xor_mapped_address(),
            Some("192.0.2.1:32853".parse().unwrap())
        );
        assert_eq!(msg.verify_integrity(PASSWORD), Ok(()));
        assert_eq!(msg.verify_fingerprint(), Ok(()));
    }

    #[test]
    fn rfc5769_ipv6_response() {
        let buf = hex(SAMPLE_IPV6_RESPONSE);
        let msg = StunMessage::new_checked(&buf).unwrap();
        assert_eq!(msg.class(), StunClass::SuccessResponse);
        assert_eq!(
            msg.xor_mapped_address(),
            Some(
                "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                    .parse()
                    .unwrap()
            )
        );
        assert_eq!(msg.verify_integrity(PASSWORD), Ok(()));
        assert_eq!(msg.verify_fingerprint(), Ok(()));
    }

    #[test]
    fn rfc5769_long_term_request() {
        let buf = hex(SAMPLE_LONG_TERM_REQUEST);
        let msg = StunMessage::new_checked(&buf).unwrap();
        assert_eq!(msg.class(), StunClass::Request);
        assert_eq!(msg.username(), Some("マトリックス".as_bytes()));
        assert_eq!(
            msg.attribute(NONCE),
            Some(&b"f//499k954d6OL34oL9FSTvy64sA"[..])
        );
        assert_eq!(msg.attribute(REALM), Some(&b"example.org"[..]));
        assert_eq!(msg.verify_integrity(&hex(LONG_TERM_KEY)), Ok(()));
        assert_eq!(msg.verify_integrity(PASSWORD), Err(WireError::Integrity));
        // This vector carries no FINGERPRINT.
        assert_eq!(msg.verify_fingerprint(), Err(WireError::Fingerprint));
    }

    #[test]
    fn writer_reproduces_rfc5769_long_term_request() {
        let expected = hex(SAMPLE_LONG_TERM_REQUEST);
        let transaction_id: [u8; 12] = expected[8..20].try_into().unwrap();
        let mut buf = [0xa5u8; 200];
        let mut w = StunWriter::new(&mut buf, BINDING_REQUEST, &transaction_id).unwrap();
        w.add_username("マトリックス".as_bytes()).unwrap();
        w.add_attribute(NONCE, b"f//499k954d6OL34oL9FSTvy64sA")
            .unwrap();
        w.add_attribute(REALM, b"example.org").unwrap();
        w.add_message_integrity(&hex(LONG_TERM_KEY)).unwrap();
        let n = w.finish();
        assert_eq!(&buf[..n], &expected[..]);
        assert!(buf[n..].iter().all(|&b| b == 0xa5));
    }

    #[test]
    fn method_and_class_decoding() {
        let cases = [
            (0x0001, 0x001, StunClass::Request),
            (0x0011, 0x001, StunClass::Indication),
            (0x0101, 0x001, StunClass::SuccessResponse),
            (0x0111, 0x001, StunClass::ErrorResponse),
            (0x0003, 0x003, StunClass::Request),
            (0x3EEF, 0xFFF, StunClass::Request),
            (0x3FFF, 0xFFF, StunClass::ErrorResponse),
            (0x0020, 0x010, StunClass::Request),
            (0x0200, 0x080, StunClass::Request),
        ];
        for (typ, method, class) in cases {
            let mut buf = [0u8; 20];
            let n = StunWriter::new(&mut buf, typ, &[0; 12]).unwrap().finish();
            let msg = StunMessage::new_checked(&buf[..n]).unwrap();
            assert_eq!(msg.message_type(), typ);
            assert_eq!(msg.method(), method, "type {typ:#06x}");
            assert_eq!(msg.class(), class, "type {typ:#06x}");
        }
    }

    #[test]
    fn header_rejections() {
        let good = hex(SAMPLE_IPV4_RESPONSE);
        assert_eq!(
            StunMessage::new_checked(&good[..19]).unwrap_err(),
            WireError::Truncated
        );
        let mut bad = good.clone();
        bad[0] |= 0x40;
        assert_eq!(
            StunMessage::new_checked(&bad).unwrap_err(),
            WireError::UnknownType
        );
        let mut bad = good.clone();
        bad[5] ^= 1;
        assert_eq!(
            StunMessage::new_checked(&bad).unwrap_err(),
            WireError::MagicCookie
        );
        let mut bad = good.clone();
        bad[3] = 0x3d;
        assert_eq!(
            StunMessage::new_checked(&bad).unwrap_err(),
            WireError::Length
        );
        let mut bad = good.clone();
        bad.extend_from_slice(&[0; 4]);
        assert_eq!(
            StunMessage::new_checked(&bad).unwrap_err(),
            WireError::Length
        );
        assert_eq!(
            StunMessage::new_checked(&good[..good.len() - 4]).unwrap_err(),
            WireError::Truncated
        );
        // An attribute whose length runs past the end of the message.
        let mut bad = good.clone();
        let fp = good.len() - 8;
        bad[fp + 3] = 8;
        assert_eq!(
            StunMessage::new_checked(&bad).unwrap_err(),
            WireError::Attribute
        );
        // A header alone is a valid, empty message.
        let mut empty = good[..20].to_vec();
        empty[2..4].copy_from_slice(&[0, 0]);
        let msg = StunMessage::new_checked(&empty).unwrap();
        assert_eq!(msg.attributes().count(), 0);
        assert_eq!(msg.verify_integrity(PASSWORD), Err(WireError::Integrity));
        assert_eq!(msg.verify_fingerprint(), Err(WireError::Fingerprint));
    }

    #[test]
    fn typed_readers_reject_wrong_lengths() {
        let mut buf = [0u8; 128];
        let mut w = StunWriter::new(&mut buf, BINDING_REQUEST, &[7; 12]).unwrap();
        w.add_attribute(PRIORITY, &[1, 2, 3]).unwrap();
        w.add_attribute(ICE_CONTROLLING, &[1; 7]).unwrap();
        w.add_attribute(XOR_MAPPED_ADDRESS, &[0, 1, 0, 0, 1, 2, 3])
            .unwrap();
        w.add_attribute(ERROR_CODE, &[0, 0, 7, 0]).unwrap();
        let n = w.finish();
        let msg = StunMessage::new_checked(&buf[..n]).unwrap();
        assert_eq!(msg.priority(), None);
        assert_eq!(msg.ice_controlling(), None);
        assert_eq!(msg.xor_mapped_address(), None);
        assert_eq!(msg.error_code(), None);
        assert_eq!(msg.attribute(PRIORITY), Some(&[1, 2, 3][..]));
    }

    #[test]
    fn attributes_after_integrity_are_ignored() {
        let mut buf = [0u8; 128];
        let mut w = StunWriter::new(&mut buf, BINDING_REQUEST, &[1; 12]).unwrap();
        w.add_username(b"a:b").unwrap();
        w.add_message_integrity(PASSWORD).unwrap();
        // Unauthenticated: must not be seen.
        w.add_use_candidate().unwrap();
        w.add_priority(5).unwrap();
        w.add_fingerprint().unwrap();
        let n = w.finish();
        let msg = StunMessage::new_checked(&buf[..n]).unwrap();
        assert!(!msg.use_candidate());
        assert_eq!(msg.priority(), None);
        let types: Vec<u16> = msg.attributes().map(|(t, _)| t).collect();
        assert_eq!(types, [USERNAME, MESSAGE_INTEGRITY, FINGERPRINT]);
        assert_eq!(msg.verify_integrity(PASSWORD), Ok(()));
        assert_eq!(msg.verify_fingerprint(), Ok(()));
    }

    #[test]
    fn fingerprint_must_be_last() {
        let mut buf = [0u8; 64];
        let mut w = StunWriter::new(&mut buf, BINDING_INDICATION, &[2; 12]).unwrap();
        w.add_fingerprint().unwrap();
        w.add_attribute(SOFTWARE, b"x").unwrap();
        let n = w.finish();
        let msg = StunMessage::new_checked(&buf[..n]).unwrap();
        assert_eq!(msg.class(), StunClass::Indication);
        assert_eq!(msg.verify_fingerprint(), Err(WireError::Fingerprint));
    }

    /// Writes a Binding success response for `mapped`, with integrity and
    /// fingerprint, into `buf`; returns its length.
    fn write_success(buf: &mut [u8], mapped: SocketAddr) -> usize {
        let mut w = StunWriter::new(buf, BINDING_SUCCESS, &SAMPLE_TRANSACTION_ID).unwrap();
        w.add_attribute(SOFTWARE, b"sfu").unwrap();
        w.add_xor_mapped_address(mapped).unwrap();
        w.add_message_integrity(PASSWORD).unwrap();
        w.add_fingerprint().unwrap();
        w.finish()
    }

    #[test]
    fn writer_round_trip_and_tamper_detection() {
        for mapped in [
            "192.0.2.1:32853",
            "203.0.113.77:9",
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853",
            "[::1]:65535",
        ] {
            let mapped: SocketAddr = mapped.parse().unwrap();
            let mut buf = [0u8; 128];
            let n = write_success(&mut buf, mapped);
            let wire = &buf[..n];
            let msg = StunMessage::new_checked(wire).unwrap();
            assert_eq!(msg.message_type(), BINDING_SUCCESS);
            assert_eq!(msg.transaction_id(), &SAMPLE_TRANSACTION_ID);
            assert_eq!(msg.attribute(SOFTWARE), Some(&b"sfu"[..]));
            assert_eq!(msg.xor_mapped_address(), Some(mapped));
            assert_eq!(msg.verify_integrity(PASSWORD), Ok(()));
            assert_eq!(msg.verify_fingerprint(), Ok(()));
            assert_eq!(msg.verify_integrity(b"wrong"), Err(WireError::Integrity));

            let integrity_end = n - 8;
            for i in 0..n {
                for mask in [0x01u8, 0x80, 0xff] {
                    let mut tampered = wire.to_vec();
                    tampered[i] ^= mask;
                    let Ok(msg) = StunMessage::new_checked(&tampered) else {
                        continue;
                    };
                    exercise(&msg);
                    assert!(msg.verify_fingerprint().is_err(), "byte {i} mask {mask:#x}");
                    if i < integrity_end {
                        assert!(
                            msg.verify_integrity(PASSWORD).is_err(),
                            "byte {i} mask {mask:#x}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn writer_on_dirty_buffer_matches_clean_buffer() {
        let build = |buf: &mut [u8]| {
            let mut w = StunWriter::new(buf, BINDING_ERROR, &[9; 12]).unwrap();
            w.add_error_code(487, b"Role Conflict").unwrap();
            w.add_username(b"abc").unwrap();
            w.add_attribute(UNKNOWN_ATTRIBUTES, &[0x00, 0x1f]).unwrap();
            w.add_xor_mapped_address("10.1.2.3:4000".parse().unwrap())
                .unwrap();
            w.add_message_integrity(b"key").unwrap();
            w.add_fingerprint().unwrap();
            w.finish()
        };
        let mut dirty = [0xa5u8; 256];
        let mut clean = [0u8; 256];
        let n = build(&mut dirty);
        assert_eq!(build(&mut clean), n);
        assert_eq!(&dirty[..n], &clean[..n]);
        assert!(dirty[n..].iter().all(|&b| b == 0xa5));

        let msg = StunMessage::new_checked(&dirty[..n]).unwrap();
        assert_eq!(msg.class(), StunClass::ErrorResponse);
        assert_eq!(msg.error_code(), Some((487, &b"Role Conflict"[..])));
        assert_eq!(msg.username(), Some(&b"abc"[..]));
        // Padding of "Role Conflict" (13 + 4 bytes, 3 padding) and "abc".
        let error_at = 20;
        assert_eq!(&dirty[error_at + 4 + 17..error_at + 24], &[0, 0, 0]);
        let username_at = error_at + 24;
        assert_eq!(&dirty[username_at + 4..username_at + 8], b"abc\0");
        assert_eq!(msg.verify_integrity(b"key"), Ok(()));
        assert_eq!(msg.verify_fingerprint(), Ok(()));
    }

    #[test]
    fn writer_errors_leave_message_intact() {
        assert_eq!(
            StunWriter::new(&mut [0u8; 19], BINDING_REQUEST, &[0; 12]).unwrap_err(),
            WireError::BufferTooSmall
        );
        assert_eq!(
            StunWriter::new(&mut [0u8; 20], 0x4001, &[0; 12]).unwrap_err(),
            WireError::OutOfRange
        );

        let mut buf = [0xa5u8; 40];
        let mut w = StunWriter::new(&mut buf, BINDING_SUCCESS, &[3; 12]).unwrap();
        w.add_priority(1).unwrap();
        assert_eq!(
            w.add_message_integrity(PASSWORD),
            Err(WireError::BufferTooSmall)
        );
        assert_eq!(w.add_error_code(299, b""), Err(WireError::OutOfRange));
        assert_eq!(w.add_error_code(700, b""), Err(WireError::OutOfRange));
        assert_eq!(
            w.add_attribute(SOFTWARE, &[0; 70_000]),
            Err(WireError::OutOfRange)
        );
        assert_eq!(w.add_username(&[b'u'; 9]), Err(WireError::BufferTooSmall));
        w.add_username(&[b'u'; 8]).unwrap();
        assert_eq!(w.add_fingerprint(), Err(WireError::BufferTooSmall));
        let n = w.finish();
        assert_eq!(n, 40);
        let msg = StunMessage::new_checked(&buf[..n]).unwrap();
        assert_eq!(msg.priority(), Some(1));
        assert_eq!(msg.username(), Some(&[b'u'; 8][..]));
        assert_eq!(msg.attributes().count(), 2);
    }

    #[test]
    fn message_too_long_for_length_field() {
        let mut buf = vec![0u8; 70_000];
        let mut w = StunWriter::new(&mut buf, BINDING_INDICATION, &[0; 12]).unwrap();
        let chunk = [0u8; 65_000];
        w.add_attribute(SOFTWARE, &chunk).unwrap();
        assert_eq!(
            w.add_attribute(SOFTWARE, &chunk[..1_000]),
            Err(WireError::OutOfRange)
        );
        let n = w.finish();
        assert!(StunMessage::new_checked(&buf[..n]).is_ok());
    }

    #[test]
    fn hostile_input_never_panics() {
        for vector in all_vectors() {
            for len in 0..=vector.len() {
                // Plain truncation, and truncation with the length field
                // fixed up so the attribute walk runs over the cut.
                let mut cut = vector[..len].to_vec();
                if let Ok(msg) = StunMessage::new_checked(&cut) {
                    exercise(&msg);
                }
                if len >= 20 {
                    let body = u16::try_from(len - 20).unwrap();
                    cut[2..4].copy_from_slice(&body.to_be_bytes());
                    if let Ok(msg) = StunMessage::new_checked(&cut) {
                        exercise(&msg);
                    }
                }
            }
            for i in 0..vector.len() {
                for mask in [0x01u8, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff] {
                    let mut flipped = vector.clone();
                    flipped[i] ^= mask;
                    if let Ok(msg) = StunMessage::new_checked(&flipped) {
                        exercise(&msg);
                        assert!(
                            msg.verify_integrity(PASSWORD).is_err()
                                || msg.verify_fingerprint().is_err(),
                            "flip at {i} went unnoticed"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn random_bodies_never_panic() {
        // xorshift64: deterministic, no extra dependency.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut buf = [0u8; 128];
        let mut parsed = 0;
        for _ in 0..20_000 {
            let body = (next() % 27) as usize * 4;
            for b in &mut buf[..20 + body] {
                *b = next() as u8;
            }
            buf[0] &= 0x3f;
            buf[2..4].copy_from_slice(&(body as u16).to_be_bytes());
            buf[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            // Small attribute lengths and interesting types make walks succeed.
            let mut pos = 20;
            while pos + 4 <= 20 + body {
                let types = [
                    MESSAGE_INTEGRITY,
                    FINGERPRINT,
                    XOR_MAPPED_ADDRESS,
                    ERROR_CODE,
                    PRIORITY,
                    USERNAME,
                ];
                let r = next();
                let typ = types[(r % 6) as usize];
                let len = ((r >> 8) % 24) as u16;
                buf[pos..pos + 2].copy_from_slice(&typ.to_be_bytes());
                buf[pos + 2..pos + 4].copy_from_slice(&len.to_be_bytes());
                pos += 4 + padded(usize::from(len));
            }
            if let Ok(msg) = StunMessage::new_checked(&buf[..20 + body]) {
                exercise(&msg);
                parsed += 1;
            }
        }
        // A good share of bodies (about a quarter) must parse so the attribute walk runs.
        assert!(parsed > 2_000, "only {parsed} random messages parsed");
    }
}
