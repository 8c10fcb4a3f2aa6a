//! RTCP compound packets (RFC 3550 §6) and the feedback this SFU exchanges.
//!
//! # Reading
//! [`RtcpIter`] walks a (decrypted) compound packet and yields one
//! [`RtcpPacket`] per sub-packet. Each sub-packet's common header is checked
//! (version 2, length field within the buffer, padding count non-zero and no
//! larger than the body) and its body is handed, with padding removed, to the
//! typed view for its packet type and feedback message type (FMT):
//!
//! | PT  | FMT | view                                                     | file |
//! |-----|-----|----------------------------------------------------------|------|
//! | 205 | 15  | [`TransportCc`] (draft-holmer-rmcat-transport-wide-cc-extensions-01) | `transport_cc.rs` |
//! | 206 | 1   | [`Pli`] (RFC 4585 §6.3.1)                                | `feedback.rs` |
//! | 206 | 4   | [`Fir`] (RFC 5104 §4.3.1)                                | `feedback.rs` |
//!
//! Everything else (SR, RR, SDES, BYE, APP, XR, NACK, REMB, other feedback)
//! is [`RtcpPacket::Other`]: the router acts on key-frame requests only, and
//! the transport-cc view serves the tests of the feedback it writes. Every
//! view validates its whole body when it is created, so its accessors and
//! iterators cannot fail or panic afterwards. A malformed sub-packet ends the
//! walk: the iterator yields its error once and then stops, because the
//! boundaries of anything after it cannot be trusted. The RFC 3550 rule that a
//! compound packet starts with SR or RR is not enforced (RFC 5506 reduced-size
//! RTCP).
//!
//! # Writing
//! The `write_*` functions emit one RTCP packet each into the caller's buffer
//! and return its length; concatenating their outputs forms a compound packet.
//! They write every byte they report (the buffer need not be zeroed) and fail
//! with [`WireError::BufferTooSmall`] when the buffer is too short, in which case
//! the buffer's contents are unspecified. Nothing here allocates. The SFU
//! writes PLI ([`write_pli`]) and transport-cc ([`write_transport_cc`]) only.
//!
//! # What is not here
//! Views of SR, RR, SDES, BYE, NACK and REMB, and writers of SR/RR reports,
//! NACK, FIR and REMB, had no user and were removed. SR/RR and NACK
//! generation (and the views to test them) come back with the issue that
//! needs them: receiver reports for the producers, NACK for retransmission.
//! Git history has the removed code and its RFC/webrtc-rs test vectors.

use core::iter::FusedIterator;

use super::{WireError, be16};

mod feedback;
mod transport_cc;

pub use feedback::{FMT_FIR, FMT_PLI, Fir, FirEntries, Pli, write_pli};
pub use transport_cc::{FMT_TWCC, PacketStatus, TransportCc, TwccPackets, write_transport_cc};

/// Packet type of a sender report (RFC 3550 §6.4.1).
pub const PT_SR: u8 = 200;
/// Packet type of a receiver report (RFC 3550 §6.4.2).
pub const PT_RR: u8 = 201;
/// Packet type of a source description (RFC 3550 §6.5).
pub const PT_SDES: u8 = 202;
/// Packet type of a goodbye (RFC 3550 §6.6).
pub const PT_BYE: u8 = 203;
/// Packet type of an application-defined packet (RFC 3550 §6.7).
pub const PT_APP: u8 = 204;
/// Packet type of transport-layer feedback (RFC 4585 §6.1).
pub const PT_RTPFB: u8 = 205;
/// Packet type of payload-specific feedback (RFC 4585 §6.1).
pub const PT_PSFB: u8 = 206;

/// Length of the common RTCP header.
const HEADER_LEN: usize = 4;

/// Iterator over the sub-packets of an RTCP compound packet.
///
/// Yields `Ok` for each well-formed sub-packet; on the first malformed one it
/// yields that error once and then `None`. An empty buffer yields nothing.
#[derive(Debug, Clone)]
pub struct RtcpIter<'a> {
    rest: &'a [u8],
}

impl<'a> RtcpIter<'a> {
    /// Starts walking the compound packet in `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { rest: buf }
    }
}

impl<'a> Iterator for RtcpIter<'a> {
    type Item = Result<RtcpPacket<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match RtcpPacket::parse(self.rest) {
            Ok((packet, len)) => {
                self.rest = self.rest.get(len..).unwrap_or_default();
                Some(Ok(packet))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

impl FusedIterator for RtcpIter<'_> {}

/// One checked RTCP packet, dispatched on packet type and FMT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RtcpPacket<'a> {
    /// Picture loss indication (PT 206, FMT 1).
    Pli(Pli),
    /// Full intra request (PT 206, FMT 4).
    Fir(Fir<'a>),
    /// Transport-wide congestion control feedback (PT 205, FMT 15).
    TransportCc(TransportCc<'a>),
    /// Any other packet: SR, RR, SDES, BYE, APP, XR, other feedback
    /// messages, unknown types. Only the common header has been checked.
    Other {
        /// The packet type byte.
        packet_type: u8,
        /// The five-bit count / FMT field.
        fmt: u8,
        /// The body after the 4-byte header, padding removed.
        body: &'a [u8],
    },
}

impl<'a> RtcpPacket<'a> {
    /// Checks and dispatches the first RTCP packet in `buf`; bytes after the
    /// end given by its length field are ignored.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, WireError> {
        Self::parse(buf).map(|(packet, _)| packet)
    }

    /// The packet type byte (200 for SR, 205 for transport feedback, ...).
    pub fn packet_type(&self) -> u8 {
        match self {
            Self::TransportCc(_) => PT_RTPFB,
            Self::Pli(_) | Self::Fir(_) => PT_PSFB,
            Self::Other { packet_type, .. } => *packet_type,
        }
    }

    /// Parses the first packet and returns it with its length on the wire.
    fn parse(buf: &'a [u8]) -> Result<(Self, usize), WireError> {
        let raw = split(buf)?;
        let body = raw.body;
        let packet = match (raw.packet_type, raw.count) {
            (PT_RTPFB, FMT_TWCC) => Self::TransportCc(TransportCc::from_body(body)?),
            (PT_PSFB, FMT_PLI) => Self::Pli(Pli::from_body(body)?),
            (PT_PSFB, FMT_FIR) => Self::Fir(Fir::from_body(body)?),
            (packet_type, fmt) => Self::Other {
                packet_type,
                fmt,
                body,
            },
        };
        Ok((packet, raw.len))
    }
}

/// Writes the common header: version 2, padding bit, count/FMT, type, length.
fn write_header(
    buf: &mut [u8],
    padding: bool,
    count: u8,
    packet_type: u8,
    len: usize,
) -> Result<(), WireError> {
    let words = (len / 4)
        .checked_sub(1)
        .and_then(|w| u16::try_from(w).ok())
        .ok_or(WireError::OutOfRange)?;
    let first = 0x80 | if padding { 0x20 } else { 0 } | (count & 0x1f);
    let mut w = Writer::new(buf, 0);
    w.put(&[first, packet_type])?;
    w.u16(words)
}

/// Writes the sender and media SSRCs of a feedback message at offset 4.
fn write_ssrcs(buf: &mut [u8], sender_ssrc: u32, media_ssrc: u32) -> Result<(), WireError> {
    let mut w = Writer::new(buf, HEADER_LEN);
    w.u32(sender_ssrc)?;
    w.u32(media_ssrc)
}

/// Bounds-checked sequential writes into a caller's buffer.
struct Writer<'b> {
    buf: &'b mut [u8],
    at: usize,
}

impl<'b> Writer<'b> {
    fn new(buf: &'b mut [u8], at: usize) -> Self {
        Self { buf, at }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        let end = self.at + bytes.len();
        self.buf
            .get_mut(self.at..end)
            .ok_or(WireError::BufferTooSmall)?
            .copy_from_slice(bytes);
        self.at = end;
        Ok(())
    }

    fn u16(&mut self, v: u16) -> Result<(), WireError> {
        self.put(&v.to_be_bytes())
    }

    fn u32(&mut self, v: u32) -> Result<(), WireError> {
        self.put(&v.to_be_bytes())
    }
}

/// The common header and body of the first RTCP packet in a buffer.
struct RawPacket<'a> {
    count: u8,
    packet_type: u8,
    /// Bytes after the header, padding removed.
    body: &'a [u8],
    /// Length on the wire, header and padding included.
    len: usize,
}

/// Checks the common header of the first RTCP packet in `buf`.
fn split(buf: &[u8]) -> Result<RawPacket<'_>, WireError> {
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Err(WireError::Truncated);
    };
    if header[0] >> 6 != 2 {
        return Err(WireError::Version);
    }
    let len = (usize::from(be16(header, 2)) + 1) * 4;
    let packet = buf.get(..len).ok_or(WireError::Length)?;
    let mut body = packet.get(HEADER_LEN..).unwrap_or_default();
    if header[0] & 0x20 != 0 {
        let pad = usize::from(body.last().copied().unwrap_or(0));
        if pad == 0 || pad > body.len() {
            return Err(WireError::Padding);
        }
        body = body.get(..body.len() - pad).unwrap_or_default();
    }
    Ok(RawPacket {
        count: header[0] & 0x1f,
        packet_type: header[1],
        body,
        len,
    })
}

/// Checks the first packet's header and its type (and FMT, if given);
/// returns the count/FMT field and the body.
fn expect(packet: &[u8], packet_type: u8, fmt: Option<u8>) -> Result<(u8, &[u8]), WireError> {
    let raw = split(packet)?;
    if raw.packet_type != packet_type || fmt.is_some_and(|f| f != raw.count) {
        return Err(WireError::UnknownType);
    }
    Ok((raw.count, raw.body))
}

#[cfg(test)]
mod tests;
