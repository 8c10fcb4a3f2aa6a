//! The RTCP packets of RFC 3550: sender and receiver reports (§6.4), source
//! description (§6.5) and goodbye (§6.6).

use core::iter::FusedIterator;

use super::{
    HEADER_LEN, PT_BYE, PT_RR, PT_SDES, PT_SR, Ssrcs, WireError, Writer, expect, write_header,
};
use crate::wire::be32;

/// SDES item type of the canonical name (RFC 3550 §6.5.1).
pub const SDES_CNAME: u8 = 1;
/// SDES item type of the user name (RFC 3550 §6.5.2).
pub const SDES_NAME: u8 = 2;
/// SDES item type of the tool name (RFC 3550 §6.5.6).
pub const SDES_TOOL: u8 = 6;
/// SDES item type of a private extension (RFC 3550 §6.5.8).
pub const SDES_PRIV: u8 = 8;

/// Length of a reception report block.
const REPORT_BLOCK_LEN: usize = 24;
/// Most report blocks one SR or RR holds (the five-bit RC field).
const MAX_REPORT_BLOCKS: usize = 31;

/// Sender report (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderReport<'a> {
    /// Invariant: at least `24 + 24 * rc` bytes.
    body: &'a [u8],
    rc: u8,
}

impl<'a> SenderReport<'a> {
    /// Checks the first RTCP packet in `packet`, which must be a sender report.
    pub fn new_checked(packet: &'a [u8]) -> Result<Self, WireError> {
        let (rc, body) = expect(packet, PT_SR, None)?;
        Self::from_body(rc, body)
    }

    pub(super) fn from_body(rc: u8, body: &'a [u8]) -> Result<Self, WireError> {
        if body.len() < 24 {
            return Err(WireError::Truncated);
        }
        if body.len() < 24 + usize::from(rc) * REPORT_BLOCK_LEN {
            return Err(WireError::Length);
        }
        Ok(Self { body, rc })
    }

    /// SSRC of the sender.
    pub fn ssrc(&self) -> u32 {
        be32(self.body, 0)
    }

    /// 64-bit NTP timestamp (32.32 fixed point seconds since 1900).
    pub fn ntp_time(&self) -> u64 {
        (u64::from(be32(self.body, 4)) << 32) | u64::from(be32(self.body, 8))
    }

    /// RTP timestamp corresponding to [`ntp_time`](Self::ntp_time).
    pub fn rtp_time(&self) -> u32 {
        be32(self.body, 12)
    }

    /// Sender's packet count.
    pub fn packet_count(&self) -> u32 {
        be32(self.body, 16)
    }

    /// Sender's octet count.
    pub fn octet_count(&self) -> u32 {
        be32(self.body, 20)
    }

    /// Number of report blocks (the RC field).
    pub fn report_count(&self) -> u8 {
        self.rc
    }

    /// The reception report blocks.
    pub fn report_blocks(&self) -> ReportBlocks<'a> {
        ReportBlocks::new(self.body.get(24..).unwrap_or_default(), self.rc)
    }

    /// Profile-specific extension bytes after the report blocks.
    pub fn extension(&self) -> &'a [u8] {
        self.body
            .get(24 + usize::from(self.rc) * REPORT_BLOCK_LEN..)
            .unwrap_or_default()
    }
}

/// Receiver report (RFC 3550 §6.4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiverReport<'a> {
    /// Invariant: at least `4 + 24 * rc` bytes.
    body: &'a [u8],
    rc: u8,
}

impl<'a> ReceiverReport<'a> {
    /// Checks the first RTCP packet in `packet`, which must be a receiver report.
    pub fn new_checked(packet: &'a [u8]) -> Result<Self, WireError> {
        let (rc, body) = expect(packet, PT_RR, None)?;
        Self::from_body(rc, body)
    }

    pub(super) fn from_body(rc: u8, body: &'a [u8]) -> Result<Self, WireError> {
        if body.len() < 4 {
            return Err(WireError::Truncated);
        }
        if body.len() < 4 + usize::from(rc) * REPORT_BLOCK_LEN {
            return Err(WireError::Length);
        }
        Ok(Self { body, rc })
    }

    /// SSRC of the packet's sender.
    pub fn ssrc(&self) -> u32 {
        be32(self.body, 0)
    }

    /// Number of report blocks (the RC field).
    pub fn report_count(&self) -> u8 {
        self.rc
    }

    /// The reception report blocks.
    pub fn report_blocks(&self) -> ReportBlocks<'a> {
        ReportBlocks::new(self.body.get(4..).unwrap_or_default(), self.rc)
    }

    /// Profile-specific extension bytes after the report blocks.
    pub fn extension(&self) -> &'a [u8] {
        self.body
            .get(4 + usize::from(self.rc) * REPORT_BLOCK_LEN..)
            .unwrap_or_default()
    }
}

/// Iterator over the report blocks of a sender or receiver report.
#[derive(Debug, Clone)]
pub struct ReportBlocks<'a> {
    rest: &'a [u8],
    remaining: u8,
}

impl<'a> ReportBlocks<'a> {
    fn new(rest: &'a [u8], remaining: u8) -> Self {
        Self { rest, remaining }
    }
}

impl<'a> Iterator for ReportBlocks<'a> {
    type Item = ReportBlock<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        self.remaining = self.remaining.checked_sub(1)?;
        let Some((block, rest)) = self.rest.split_first_chunk::<REPORT_BLOCK_LEN>() else {
            self.remaining = 0;
            return None;
        };
        self.rest = rest;
        Some(ReportBlock { raw: block })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(usize::from(self.remaining)))
    }
}

impl FusedIterator for ReportBlocks<'_> {}

/// One reception report block (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock<'a> {
    raw: &'a [u8; REPORT_BLOCK_LEN],
}

impl ReportBlock<'_> {
    /// SSRC of the source this block reports on.
    pub fn ssrc(&self) -> u32 {
        be32(self.raw, 0)
    }

    /// Fraction of packets lost since the previous report, in 1/256 units.
    pub fn fraction_lost(&self) -> u8 {
        self.raw[4]
    }

    /// Cumulative number of packets lost (24-bit signed; negative with duplicates).
    pub fn cumulative_lost(&self) -> i32 {
        ((be32(self.raw, 4) << 8) as i32) >> 8
    }

    /// Extended highest sequence number received.
    pub fn highest_seq(&self) -> u32 {
        be32(self.raw, 8)
    }

    /// Interarrival jitter in RTP timestamp units.
    pub fn jitter(&self) -> u32 {
        be32(self.raw, 12)
    }

    /// Middle 32 bits of the NTP timestamp of the last SR received (LSR).
    pub fn last_sr(&self) -> u32 {
        be32(self.raw, 16)
    }

    /// Delay since the last SR in 1/65536 seconds (DLSR).
    pub fn delay_since_last_sr(&self) -> u32 {
        be32(self.raw, 20)
    }

    /// Copies the block's fields out.
    pub fn to_data(&self) -> ReportBlockData {
        ReportBlockData {
            ssrc: self.ssrc(),
            fraction_lost: self.fraction_lost(),
            cumulative_lost: self.cumulative_lost(),
            highest_seq: self.highest_seq(),
            jitter: self.jitter(),
            last_sr: self.last_sr(),
            delay_since_last_sr: self.delay_since_last_sr(),
        }
    }
}

/// Source description (RFC 3550 §6.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sdes<'a> {
    /// Invariant: holds `sc` well-formed chunks.
    body: &'a [u8],
    sc: u8,
}

impl<'a> Sdes<'a> {
    /// Checks the first RTCP packet in `packet`, which must be an SDES packet.
    pub fn new_checked(packet: &'a [u8]) -> Result<Self, WireError> {
        let (sc, body) = expect(packet, PT_SDES, None)?;
        Self::from_body(sc, body)
    }

    pub(super) fn from_body(sc: u8, body: &'a [u8]) -> Result<Self, WireError> {
        let mut at = 0;
        for _ in 0..sc {
            let (_, next) = sdes_chunk(body, at)?;
            at = next;
        }
        Ok(Self { body, sc })
    }

    /// Number of chunks (the SC field).
    pub fn chunk_count(&self) -> u8 {
        self.sc
    }

    /// The chunks, one per source.
    pub fn chunks(&self) -> SdesChunks<'a> {
        SdesChunks {
            body: self.body,
            at: 0,
            remaining: self.sc,
        }
    }
}

/// Parses the SDES chunk starting at `at`; returns it and where the next starts.
fn sdes_chunk(body: &[u8], at: usize) -> Result<(SdesChunk<'_>, usize), WireError> {
    let chunk = body.get(at..).unwrap_or_default();
    let Some((ssrc, items)) = chunk.split_first_chunk::<4>() else {
        return Err(WireError::Length);
    };
    let mut pos = 0usize;
    loop {
        match items.get(pos) {
            None => return Err(WireError::Attribute),
            Some(0) => break,
            Some(_) => {
                let len = usize::from(*items.get(pos + 1).ok_or(WireError::Attribute)?);
                pos += 2 + len;
                if pos > items.len() {
                    return Err(WireError::Attribute);
                }
            }
        }
    }
    // The END item is followed by null octets up to the next 32-bit boundary,
    // counted from the chunk start; a stripped padding tail may cut it short.
    let used = 4 + pos + 1;
    let next = at + used.next_multiple_of(4);
    let view = SdesChunk {
        ssrc: u32::from_be_bytes(*ssrc),
        items: items.get(..pos).unwrap_or_default(),
    };
    Ok((view, next.min(body.len())))
}

/// Iterator over the chunks of an SDES packet.
#[derive(Debug, Clone)]
pub struct SdesChunks<'a> {
    body: &'a [u8],
    at: usize,
    remaining: u8,
}

impl<'a> Iterator for SdesChunks<'a> {
    type Item = SdesChunk<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        self.remaining = self.remaining.checked_sub(1)?;
        match sdes_chunk(self.body, self.at) {
            Ok((chunk, next)) => {
                self.at = next;
                Some(chunk)
            }
            Err(_) => {
                self.remaining = 0;
                None
            }
        }
    }
}

impl FusedIterator for SdesChunks<'_> {}

/// One SDES chunk: a source and its items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdesChunk<'a> {
    ssrc: u32,
    /// Invariant: a sequence of whole non-END items.
    items: &'a [u8],
}

impl<'a> SdesChunk<'a> {
    /// SSRC or CSRC the items describe.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// The items as `(type, value)` pairs, END excluded.
    pub fn items(&self) -> SdesItems<'a> {
        SdesItems { rest: self.items }
    }
}

/// Iterator over the `(type, value)` items of an SDES chunk.
#[derive(Debug, Clone)]
pub struct SdesItems<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for SdesItems<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let item = match self.rest {
            [kind, len, rest @ ..] => rest
                .split_at_checked(usize::from(*len))
                .map(|(value, rest)| (*kind, value, rest)),
            _ => None,
        };
        let Some((kind, value, rest)) = item else {
            self.rest = &[];
            return None;
        };
        self.rest = rest;
        Some((kind, value))
    }
}

impl FusedIterator for SdesItems<'_> {}

/// Goodbye (RFC 3550 §6.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bye<'a> {
    ssrcs: &'a [u8],
    reason: Option<&'a [u8]>,
}

impl<'a> Bye<'a> {
    /// Checks the first RTCP packet in `packet`, which must be a BYE.
    pub fn new_checked(packet: &'a [u8]) -> Result<Self, WireError> {
        let (sc, body) = expect(packet, PT_BYE, None)?;
        Self::from_body(sc, body)
    }

    pub(super) fn from_body(sc: u8, body: &'a [u8]) -> Result<Self, WireError> {
        let (ssrcs, rest) = body
            .split_at_checked(usize::from(sc) * 4)
            .ok_or(WireError::Length)?;
        let reason = match rest.split_first() {
            None => None,
            Some((len, text)) => {
                let text = text.get(..usize::from(*len)).ok_or(WireError::Length)?;
                (!text.is_empty()).then_some(text)
            }
        };
        Ok(Self { ssrcs, reason })
    }

    /// The SSRC/CSRC identifiers that are leaving.
    pub fn ssrcs(&self) -> Ssrcs<'a> {
        Ssrcs { rest: self.ssrcs }
    }

    /// The reason for leaving, if present and non-empty (nominally UTF-8).
    pub fn reason(&self) -> Option<&'a [u8]> {
        self.reason
    }
}

/// The fields of one reception report block, for [`write_sender_report`] and
/// [`write_receiver_report`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ReportBlockData {
    /// SSRC of the source reported on.
    pub ssrc: u32,
    /// Fraction lost since the previous report, in 1/256 units.
    pub fraction_lost: u8,
    /// Cumulative packets lost; clamped to the 24-bit signed range on write.
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub highest_seq: u32,
    /// Interarrival jitter in RTP timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the last SR's NTP timestamp (LSR).
    pub last_sr: u32,
    /// Delay since the last SR in 1/65536 seconds (DLSR).
    pub delay_since_last_sr: u32,
}

/// Writes a sender report (RFC 3550 §6.4.1) with up to 31 report blocks.
///
/// `ntp` is the 64-bit NTP timestamp (32.32 fixed point seconds since 1900)
/// and `rtp_ts` the RTP timestamp of the same instant. Returns the packet
/// length, `28 + 24 * blocks.len()`. More than 31 blocks is
/// [`WireError::OutOfRange`]; put the rest in receiver reports.
pub fn write_sender_report(
    buf: &mut [u8],
    ssrc: u32,
    ntp: u64,
    rtp_ts: u32,
    packet_count: u32,
    octet_count: u32,
    blocks: &[ReportBlockData],
) -> Result<usize, WireError> {
    let count = report_count(blocks)?;
    let mut w = Writer::new(buf, HEADER_LEN);
    w.u32(ssrc)?;
    w.u32((ntp >> 32) as u32)?;
    w.u32(ntp as u32)?;
    w.u32(rtp_ts)?;
    w.u32(packet_count)?;
    w.u32(octet_count)?;
    write_blocks(&mut w, blocks)?;
    let len = w.at;
    write_header(buf, false, count, PT_SR, len)?;
    Ok(len)
}

/// Writes a receiver report (RFC 3550 §6.4.2) with up to 31 report blocks.
///
/// Returns the packet length, `8 + 24 * blocks.len()`. More than 31 blocks is
/// [`WireError::OutOfRange`]; split them over several reports.
pub fn write_receiver_report(
    buf: &mut [u8],
    sender_ssrc: u32,
    blocks: &[ReportBlockData],
) -> Result<usize, WireError> {
    let count = report_count(blocks)?;
    let mut w = Writer::new(buf, HEADER_LEN);
    w.u32(sender_ssrc)?;
    write_blocks(&mut w, blocks)?;
    let len = w.at;
    write_header(buf, false, count, PT_RR, len)?;
    Ok(len)
}

/// The RC field for `blocks`, or [`WireError::OutOfRange`] above 31.
fn report_count(blocks: &[ReportBlockData]) -> Result<u8, WireError> {
    if blocks.len() > MAX_REPORT_BLOCKS {
        return Err(WireError::OutOfRange);
    }
    u8::try_from(blocks.len()).map_err(|_| WireError::OutOfRange)
}

/// Writes report blocks one after another.
fn write_blocks(w: &mut Writer<'_>, blocks: &[ReportBlockData]) -> Result<(), WireError> {
    for b in blocks {
        let lost = b.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32 & 0xff_ffff;
        w.u32(b.ssrc)?;
        w.u32((u32::from(b.fraction_lost) << 24) | lost)?;
        w.u32(b.highest_seq)?;
        w.u32(b.jitter)?;
        w.u32(b.last_sr)?;
        w.u32(b.delay_since_last_sr)?;
    }
    Ok(())
}

/// Writes a source description (RFC 3550 §6.5) of one chunk: `ssrc` and its
/// CNAME item.
///
/// The item list is ended by null octets up to the next 32-bit boundary, at
/// least one (RFC 3550 §6.5), so the packet needs no RTCP padding. Returns the
/// packet length, `8 + (3 + cname.len()).next_multiple_of(4)`. A CNAME longer
/// than 255 bytes is [`WireError::OutOfRange`].
pub fn write_sdes_cname(buf: &mut [u8], ssrc: u32, cname: &[u8]) -> Result<usize, WireError> {
    let cname_len = u8::try_from(cname.len()).map_err(|_| WireError::OutOfRange)?;
    let mut w = Writer::new(buf, HEADER_LEN);
    w.u32(ssrc)?;
    w.put(&[SDES_CNAME, cname_len])?;
    w.put(cname)?;
    // The END item and the null octets after it.
    let len = (w.at + 1).next_multiple_of(4);
    let nulls = [0u8; 4];
    w.put(nulls.get(..len - w.at).unwrap_or_default())?;
    write_header(buf, false, 1, PT_SDES, len)?;
    Ok(len)
}
