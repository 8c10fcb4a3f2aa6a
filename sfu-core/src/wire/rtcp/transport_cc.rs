//! Transport-wide congestion control feedback
//! (draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1): the view and
//! the writer [`crate::twcc`] uses.

use core::iter::FusedIterator;

use super::{PT_RTPFB, WireError, Writer, expect, write_header, write_ssrcs};
use crate::wire::{be16, be32};

/// FMT of transport-wide congestion control feedback in an [`PT_RTPFB`] packet.
pub const FMT_TWCC: u8 = 15;

/// Receive deltas in transport-cc feedback count multiples of this many µs.
const TWCC_DELTA_UNIT_US: i64 = 250;
/// Largest run a transport-cc run-length chunk can describe (13 bits).
const TWCC_MAX_RUN: u16 = 0x1fff;

/// Status of one packet in transport-cc feedback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketStatus {
    /// Not received (symbol 0).
    NotReceived,
    /// Received, with a one-byte delta of 0..=255 × 250 µs (symbol 1).
    ReceivedSmallDelta,
    /// Received, with a two-byte signed delta × 250 µs (symbol 2).
    ReceivedLargeDelta,
}

impl PacketStatus {
    /// Decodes a 2-bit symbol; the reserved symbol 3 is rejected, as libwebrtc does.
    fn from_symbol(symbol: u16) -> Option<Self> {
        match symbol {
            0 => Some(Self::NotReceived),
            1 => Some(Self::ReceivedSmallDelta),
            2 => Some(Self::ReceivedLargeDelta),
            _ => None,
        }
    }

    fn symbol(self) -> u16 {
        match self {
            Self::NotReceived => 0,
            Self::ReceivedSmallDelta => 1,
            Self::ReceivedLargeDelta => 2,
        }
    }

    /// Bytes of receive delta this status carries.
    fn delta_len(self) -> usize {
        match self {
            Self::NotReceived => 0,
            Self::ReceivedSmallDelta => 1,
            Self::ReceivedLargeDelta => 2,
        }
    }
}

/// Number of symbols a transport-cc packet status chunk describes.
fn twcc_chunk_len(chunk: u16) -> u16 {
    match chunk >> 14 {
        0 | 1 => chunk & TWCC_MAX_RUN,
        2 => 14,
        _ => 7,
    }
}

/// Symbol `i` (`i` below [`twcc_chunk_len`]) of a packet status chunk.
fn twcc_chunk_symbol(chunk: u16, i: u16) -> u16 {
    match chunk >> 14 {
        0 | 1 => (chunk >> 13) & 0b11,
        2 => (chunk >> 13_u16.saturating_sub(i)) & 1,
        _ => (chunk >> 12_u16.saturating_sub(2 * i)) & 0b11,
    }
}

/// Transport-wide congestion control feedback
/// (draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportCc<'a> {
    /// Invariant: at least 16 bytes; status chunks from 16 to `deltas_at`
    /// cover the status count and the deltas they call for fit after them.
    body: &'a [u8],
    deltas_at: usize,
}

impl<'a> TransportCc<'a> {
    /// Checks the first RTCP packet in `packet`, which must be transport-cc
    /// feedback. The status chunks and every receive delta are checked here;
    /// bytes after the last delta (zero padding) are ignored.
    pub fn new_checked(packet: &'a [u8]) -> Result<Self, WireError> {
        let (_, body) = expect(packet, PT_RTPFB, Some(FMT_TWCC))?;
        Self::from_body(body)
    }

    pub(super) fn from_body(body: &'a [u8]) -> Result<Self, WireError> {
        if body.len() < 16 {
            return Err(WireError::Truncated);
        }
        let count = be16(body, 10);
        let mut covered = 0u16;
        let mut at = 16usize;
        let mut delta_bytes = 0usize;
        while covered < count {
            let chunk = body
                .get(at..at + 2)
                .map(|c| be16(c, 0))
                .ok_or(WireError::Truncated)?;
            at += 2;
            let n = twcc_chunk_len(chunk).min(count - covered);
            if chunk >> 14 == 0 {
                let status = PacketStatus::from_symbol(twcc_chunk_symbol(chunk, 0));
                if n > 0 {
                    let status = status.ok_or(WireError::Attribute)?;
                    delta_bytes += usize::from(n) * status.delta_len();
                }
            } else {
                for i in 0..n {
                    let status = PacketStatus::from_symbol(twcc_chunk_symbol(chunk, i))
                        .ok_or(WireError::Attribute)?;
                    delta_bytes += status.delta_len();
                }
            }
            covered += n;
        }
        if body.len() < at + delta_bytes {
            return Err(WireError::Truncated);
        }
        Ok(Self {
            body,
            deltas_at: at,
        })
    }

    /// SSRC of the packet's sender.
    pub fn sender_ssrc(&self) -> u32 {
        be32(self.body, 0)
    }

    /// SSRC of the media source (unused by transport-wide feedback, often 0 or
    /// the first media SSRC).
    pub fn media_ssrc(&self) -> u32 {
        be32(self.body, 4)
    }

    /// Transport-wide sequence number of the first packet described.
    pub fn base_seq(&self) -> u16 {
        be16(self.body, 8)
    }

    /// Number of packets described, starting at [`base_seq`](Self::base_seq).
    pub fn packet_status_count(&self) -> u16 {
        be16(self.body, 10)
    }

    /// Reference time in multiples of 64 ms (24-bit signed).
    pub fn reference_time(&self) -> i32 {
        (be32(self.body, 12) as i32) >> 8
    }

    /// Reference time in microseconds.
    pub fn reference_time_us(&self) -> i64 {
        i64::from(self.reference_time()) * 64_000
    }

    /// Feedback packet count, incremented per feedback sent.
    pub fn fb_pkt_count(&self) -> u8 {
        self.body.get(15).copied().unwrap_or(0)
    }

    /// Every described packet as `(seq, status, delta_us)`, in sequence order.
    ///
    /// `delta_us` is `None` for packets not received; otherwise it is the
    /// arrival time relative to the previous received packet (the first one:
    /// relative to the reference time), in microseconds.
    pub fn packets(&self) -> TwccPackets<'a> {
        TwccPackets {
            body: self.body,
            chunk_at: 16,
            delta_at: self.deltas_at,
            chunk: 0,
            chunk_pos: 0,
            chunk_len: 0,
            seq: self.base_seq(),
            remaining: self.packet_status_count(),
        }
    }
}

/// Iterator over the packets described by transport-cc feedback.
#[derive(Debug, Clone)]
pub struct TwccPackets<'a> {
    body: &'a [u8],
    chunk_at: usize,
    delta_at: usize,
    chunk: u16,
    chunk_pos: u16,
    chunk_len: u16,
    seq: u16,
    remaining: u16,
}

impl TwccPackets<'_> {
    fn step(&mut self) -> Option<(u16, PacketStatus, Option<i64>)> {
        while self.chunk_pos >= self.chunk_len {
            let raw = self.body.get(self.chunk_at..self.chunk_at + 2)?;
            self.chunk = be16(raw, 0);
            self.chunk_at += 2;
            self.chunk_pos = 0;
            self.chunk_len = twcc_chunk_len(self.chunk);
        }
        let status = PacketStatus::from_symbol(twcc_chunk_symbol(self.chunk, self.chunk_pos))?;
        self.chunk_pos += 1;
        let delta = match status {
            PacketStatus::NotReceived => None,
            PacketStatus::ReceivedSmallDelta => {
                let d = *self.body.get(self.delta_at)?;
                Some(i64::from(d))
            }
            PacketStatus::ReceivedLargeDelta => {
                let d = self.body.get(self.delta_at..self.delta_at + 2)?;
                Some(i64::from(be16(d, 0) as i16))
            }
        };
        self.delta_at += status.delta_len();
        let seq = self.seq;
        self.seq = seq.wrapping_add(1);
        Some((seq, status, delta.map(|d| d * TWCC_DELTA_UNIT_US)))
    }
}

impl Iterator for TwccPackets<'_> {
    type Item = (u16, PacketStatus, Option<i64>);

    fn next(&mut self) -> Option<Self::Item> {
        self.remaining = self.remaining.checked_sub(1)?;
        let item = self.step();
        if item.is_none() {
            // Unreachable after `new_checked`; stop rather than guess.
            self.remaining = 0;
        }
        item
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(usize::from(self.remaining)))
    }
}

impl FusedIterator for TwccPackets<'_> {}

/// Writes transport-wide congestion control feedback
/// (draft-holmer-rmcat-transport-wide-cc-extensions-01).
///
/// `packets` lists `(seq, recv_delta_us)` in strictly ascending wrapping
/// order from `base_seq`; sequence numbers skipped between entries, and
/// entries with `None`, are reported not received. The status count runs
/// from `base_seq` to the last entry. A delta is the arrival time relative to
/// the previous received packet (the first: relative to the reference time),
/// the same convention [`TransportCc::packets`] yields. Arrival times are
/// accumulated and rounded down to 250 µs units, so rounding does not drift;
/// each packet gets a one-byte delta when it fits 0..=255 units and a two-byte
/// one otherwise. Runs of 14 or more equal statuses use run-length chunks,
/// the rest status vector chunks (1-bit when no large delta is among them).
/// Only the low 24 bits of `reference_time_64ms` are sent. The packet is
/// padded to 32 bits with RTCP padding (padding bit set), as libwebrtc does.
///
/// [`WireError::OutOfRange`] if `packets` is empty, not strictly ascending,
/// spans 65535 or more sequence numbers, or a rounded delta exceeds the
/// signed 16-bit range of 250 µs units (±8.19 s).
pub fn write_transport_cc(
    buf: &mut [u8],
    sender_ssrc: u32,
    media_ssrc: u32,
    base_seq: u16,
    reference_time_64ms: i32,
    fb_pkt_count: u8,
    packets: &[(u16, Option<i64>)],
) -> Result<usize, WireError> {
    let mut last: Option<u16> = None;
    for &(seq, _) in packets {
        let off = seq.wrapping_sub(base_seq);
        if last.is_some_and(|prev| off <= prev) {
            return Err(WireError::OutOfRange);
        }
        last = Some(off);
    }
    let count = last
        .and_then(|off| off.checked_add(1))
        .ok_or(WireError::OutOfRange)?;
    let symbols = TwccSymbols::new(packets, base_seq, count);
    // Reject unencodable deltas before writing anything.
    for symbol in symbols {
        symbol?;
    }

    let mut w = Writer::new(buf, 20);
    let mut cur = symbols;
    let mut remaining = count;
    while remaining > 0 {
        let mut ahead = cur;
        let first = ahead.status()?;
        let mut run = 1u16;
        while run < remaining.min(TWCC_MAX_RUN) && ahead.status()? == first {
            run += 1;
        }
        let n14 = remaining.min(14);
        let mut ahead = cur;
        let mut one_bit = true;
        for _ in 0..n14 {
            one_bit &= ahead.status()? != PacketStatus::ReceivedLargeDelta;
        }
        let taken = if run >= 14 || run == remaining || (run >= 7 && !one_bit) {
            w.u16((first.symbol() << 13) | run)?;
            for _ in 0..run {
                cur.status()?;
            }
            run
        } else if one_bit {
            let mut chunk = 0x8000u16;
            for i in 0..n14 {
                if cur.status()? != PacketStatus::NotReceived {
                    chunk |= 1 << (13 - i);
                }
            }
            w.u16(chunk)?;
            n14
        } else {
            let n7 = remaining.min(7);
            let mut chunk = 0xc000u16;
            for i in 0..n7 {
                chunk |= cur.status()?.symbol() << (12 - 2 * i);
            }
            w.u16(chunk)?;
            n7
        };
        remaining -= taken;
    }
    for symbol in symbols {
        let (status, units) = symbol?;
        match status {
            PacketStatus::NotReceived => {}
            PacketStatus::ReceivedSmallDelta => w.put(&[units as u8])?,
            PacketStatus::ReceivedLargeDelta => w.u16(units as i16 as u16)?,
        }
    }
    let pad = w.at.next_multiple_of(4) - w.at;
    if pad > 0 {
        for _ in 1..pad {
            w.put(&[0])?;
        }
        w.put(&[pad as u8])?;
    }
    let len = w.at;
    write_header(buf, pad > 0, FMT_TWCC, PT_RTPFB, len)?;
    write_ssrcs(buf, sender_ssrc, media_ssrc)?;
    let mut w = Writer::new(buf, 12);
    w.u16(base_seq)?;
    w.u16(count)?;
    w.u32(((reference_time_64ms as u32) << 8) | u32::from(fb_pkt_count))?;
    Ok(len)
}

/// The status and delta (in 250 µs units) of each packet a transport-cc
/// writer describes, derived from its input in sequence order.
#[derive(Debug, Clone, Copy)]
struct TwccSymbols<'p> {
    packets: &'p [(u16, Option<i64>)],
    base_seq: u16,
    /// Offset from `base_seq` of the next symbol.
    off: u16,
    count: u16,
    /// Exact arrival time so far, µs after the reference time.
    time_us: i64,
    /// Arrival time so far as encoded, in 250 µs units.
    time_units: i64,
}

impl<'p> TwccSymbols<'p> {
    fn new(packets: &'p [(u16, Option<i64>)], base_seq: u16, count: u16) -> Self {
        Self {
            packets,
            base_seq,
            off: 0,
            count,
            time_us: 0,
            time_units: 0,
        }
    }

    /// The next symbol's status; errors like `next`, and past the end.
    fn status(&mut self) -> Result<PacketStatus, WireError> {
        match self.next() {
            Some(Ok((status, _))) => Ok(status),
            Some(Err(e)) => Err(e),
            None => Err(WireError::OutOfRange),
        }
    }
}

impl Iterator for TwccSymbols<'_> {
    type Item = Result<(PacketStatus, i64), WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.off >= self.count {
            return None;
        }
        let off = self.off;
        self.off += 1;
        let delta_us = match self.packets.split_first() {
            Some((&(seq, delta), rest)) if seq.wrapping_sub(self.base_seq) == off => {
                self.packets = rest;
                delta
            }
            _ => None,
        };
        let Some(delta_us) = delta_us else {
            return Some(Ok((PacketStatus::NotReceived, 0)));
        };
        let Some(time_us) = self.time_us.checked_add(delta_us) else {
            return Some(Err(WireError::OutOfRange));
        };
        let time_units = time_us.div_euclid(TWCC_DELTA_UNIT_US);
        let units = time_units - self.time_units;
        self.time_us = time_us;
        self.time_units = time_units;
        Some(match units {
            0..=255 => Ok((PacketStatus::ReceivedSmallDelta, units)),
            -32768..=32767 => Ok((PacketStatus::ReceivedLargeDelta, units)),
            _ => Err(WireError::OutOfRange),
        })
    }
}
