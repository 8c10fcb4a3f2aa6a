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
//! | 200 |     | [`SenderReport`] (RFC 3550 §6.4.1)                       | `report.rs` |
//! | 201 |     | [`ReceiverReport`] (RFC 3550 §6.4.2)                     | `report.rs` |
//! | 202 |     | [`Sdes`] (RFC 3550 §6.5)                                 | `report.rs` |
//! | 203 |     | [`Bye`] (RFC 3550 §6.6)                                  | `report.rs` |
//! | 205 | 1   | [`Nack`], generic NACK (RFC 4585 §6.2.1)                 | `nack.rs` |
//! | 205 | 15  | [`TransportCc`] (draft-holmer-rmcat-transport-wide-cc-extensions-01) | `transport_cc.rs` |
//! | 206 | 1   | [`Pli`] (RFC 4585 §6.3.1)                                | `feedback.rs` |
//! | 206 | 4   | [`Fir`] (RFC 5104 §4.3.1)                                | `feedback.rs` |
//! | 206 | 15  | [`Remb`] when the FCI starts with `"REMB"` (draft-alvestrand-rmcat-remb) | `remb.rs` |
//!
//! Everything else (APP, XR, other feedback) is [`RtcpPacket::Other`]. Every
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
//! the buffer's contents are unspecified. Nothing here allocates.
//!
//! # Who uses what
//! The router reads SR, RR, NACK, REMB, PLI, FIR and transport-cc, and writes
//! SR ([`write_sender_report`]), RR ([`write_receiver_report`]), SDES
//! ([`write_sdes_cname`]), NACK ([`write_nack`]), PLI ([`write_pli`]) and
//! transport-cc ([`write_transport_cc`]). The SDES and BYE views, and the FIR
//! and REMB writers, serve tests and peers' packets that only need to be
//! checked.

use core::iter::FusedIterator;

use super::{WireError, be16};

mod feedback;
mod nack;
mod remb;
mod report;
mod transport_cc;

pub use feedback::{FMT_FIR, FMT_PLI, Fir, FirEntries, Pli, write_fir, write_pli};
pub use nack::{FMT_NACK, Nack, NackLost, NackPairs, write_nack};
pub use remb::{FMT_AFB, Remb, write_remb};
pub use report::{
    Bye, ReceiverReport, ReportBlock, ReportBlockData, ReportBlocks, SDES_CNAME, SDES_NAME,
    SDES_PRIV, SDES_TOOL, Sdes, SdesChunk, SdesChunks, SdesItems, SenderReport,
    write_receiver_report, write_sdes_cname, write_sender_report,
};
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
    /// Sender report (PT 200).
    SenderReport(SenderReport<'a>),
    /// Receiver report (PT 201).
    ReceiverReport(ReceiverReport<'a>),
    /// Source description (PT 202).
    Sdes(Sdes<'a>),
    /// Goodbye (PT 203).
    Bye(Bye<'a>),
    /// Generic NACK (PT 205, FMT 1).
    Nack(Nack<'a>),
    /// Picture loss indication (PT 206, FMT 1).
    Pli(Pli),
    /// Full intra request (PT 206, FMT 4).
    Fir(Fir<'a>),
    /// Receiver estimated maximum bitrate (PT 206, FMT 15, `"REMB"`).
    Remb(Remb<'a>),
    /// Transport-wide congestion control feedback (PT 205, FMT 15).
    TransportCc(TransportCc<'a>),
    /// Any other packet: APP, XR, other feedback messages, unknown types.
    /// Only the common header has been checked.
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
            Self::SenderReport(_) => PT_SR,
            Self::ReceiverReport(_) => PT_RR,
            Self::Sdes(_) => PT_SDES,
            Self::Bye(_) => PT_BYE,
            Self::Nack(_) | Self::TransportCc(_) => PT_RTPFB,
            Self::Pli(_) | Self::Fir(_) | Self::Remb(_) => PT_PSFB,
            Self::Other { packet_type, .. } => *packet_type,
        }
    }

    /// Parses the first packet and returns it with its length on the wire.
    fn parse(buf: &'a [u8]) -> Result<(Self, usize), WireError> {
        let raw = split(buf)?;
        let body = raw.body;
        let packet = match (raw.packet_type, raw.count) {
            (PT_SR, rc) => Self::SenderReport(SenderReport::from_body(rc, body)?),
            (PT_RR, rc) => Self::ReceiverReport(ReceiverReport::from_body(rc, body)?),
            (PT_SDES, sc) => Self::Sdes(Sdes::from_body(sc, body)?),
            (PT_BYE, sc) => Self::Bye(Bye::from_body(sc, body)?),
            (PT_RTPFB, FMT_NACK) => Self::Nack(Nack::from_body(body)?),
            (PT_RTPFB, FMT_TWCC) => Self::TransportCc(TransportCc::from_body(body)?),
            (PT_PSFB, FMT_PLI) => Self::Pli(Pli::from_body(body)?),
            (PT_PSFB, FMT_FIR) => Self::Fir(Fir::from_body(body)?),
            (PT_PSFB, FMT_AFB) if Remb::has_identifier(body) => Self::Remb(Remb::from_body(body)?),
            (packet_type, fmt) => Self::Other {
                packet_type,
                fmt,
                body,
            },
        };
        Ok((packet, raw.len))
    }
}

/// Iterator over a list of 32-bit SSRCs (of a [`Bye`] or a [`Remb`]).
#[derive(Debug, Clone)]
pub struct Ssrcs<'a> {
    rest: &'a [u8],
}

impl Iterator for Ssrcs<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        let (ssrc, rest) = self.rest.split_first_chunk::<4>()?;
        self.rest = rest;
        Some(u32::from_be_bytes(*ssrc))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.rest.len() / 4;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Ssrcs<'_> {}
impl FusedIterator for Ssrcs<'_> {}

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
