//! Generic NACK (RFC 4585 §6.2.1): the retransmission requests of RTX/NACK.

use core::iter::FusedIterator;

use super::{PT_RTPFB, WireError, Writer, expect, write_header, write_ssrcs};
use crate::wire::{be16, be32};

/// FMT of a generic NACK in a [`PT_RTPFB`] packet (RFC 4585 §6.2.1).
pub const FMT_NACK: u8 = 1;

/// Generic NACK (RFC 4585 §6.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nack<'a> {
    /// Invariant: at least 8 bytes, then a multiple of 4.
    body: &'a [u8],
}

impl<'a> Nack<'a> {
    /// Checks the first RTCP packet in `packet`, which must be a generic NACK.
    pub fn new_checked(packet: &'a [u8]) -> Result<Self, WireError> {
        let (_, body) = expect(packet, PT_RTPFB, Some(FMT_NACK))?;
        Self::from_body(body)
    }

    pub(super) fn from_body(body: &'a [u8]) -> Result<Self, WireError> {
        if body.len() < 8 {
            return Err(WireError::Truncated);
        }
        if !(body.len() - 8).is_multiple_of(4) {
            return Err(WireError::Length);
        }
        Ok(Self { body })
    }

    /// SSRC of the packet's sender.
    pub fn sender_ssrc(&self) -> u32 {
        be32(self.body, 0)
    }

    /// SSRC of the media source the NACK is about.
    pub fn media_ssrc(&self) -> u32 {
        be32(self.body, 4)
    }

    /// The raw `(pid, blp)` pairs: a lost packet id and a bitmask of the
    /// following 16 sequence numbers (bit `i` set: `pid + i + 1` lost).
    pub fn pairs(&self) -> NackPairs<'a> {
        NackPairs {
            rest: self.body.get(8..).unwrap_or_default(),
        }
    }

    /// Every sequence number reported lost, pair by pair, in wire order.
    pub fn lost(&self) -> NackLost<'a> {
        NackLost {
            pairs: self.pairs(),
            pid: 0,
            bits: 0,
        }
    }
}

/// Iterator over the `(pid, blp)` pairs of a generic NACK.
#[derive(Debug, Clone)]
pub struct NackPairs<'a> {
    rest: &'a [u8],
}

impl Iterator for NackPairs<'_> {
    type Item = (u16, u16);

    fn next(&mut self) -> Option<(u16, u16)> {
        let (pair, rest) = self.rest.split_first_chunk::<4>()?;
        self.rest = rest;
        Some((be16(pair, 0), be16(pair, 2)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.rest.len() / 4;
        (n, Some(n))
    }
}

impl ExactSizeIterator for NackPairs<'_> {}
impl FusedIterator for NackPairs<'_> {}

/// Iterator over every sequence number a generic NACK reports lost.
#[derive(Debug, Clone)]
pub struct NackLost<'a> {
    pairs: NackPairs<'a>,
    pid: u16,
    /// Bit 0 is `pid` itself, bit `i + 1` is bit `i` of the BLP.
    bits: u32,
}

impl Iterator for NackLost<'_> {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        if self.bits == 0 {
            let (pid, blp) = self.pairs.next()?;
            self.pid = pid;
            self.bits = 1 | (u32::from(blp) << 1);
        }
        let i = self.bits.trailing_zeros();
        self.bits &= self.bits - 1;
        Some(self.pid.wrapping_add(i as u16))
    }
}

impl FusedIterator for NackLost<'_> {}

/// Writes a generic NACK (RFC 4585 §6.2.1) for the sequence numbers in `lost`.
///
/// `lost` should be ascending in RTP's wrapping order (65535 is followed by
/// 0); a number 1 to 16 after the current pair's PID goes into that pair's
/// BLP, anything else starts a new pair, and duplicates are skipped.
/// Unordered input is still encoded correctly (every number is reported) but
/// packs less tightly. An empty `lost` is [`WireError::OutOfRange`]: RFC 4585
/// requires at least one pair.
pub fn write_nack(
    buf: &mut [u8],
    sender_ssrc: u32,
    media_ssrc: u32,
    lost: &[u16],
) -> Result<usize, WireError> {
    let mut w = Writer::new(buf, 12);
    let mut pair: Option<(u16, u16)> = None;
    for &seq in lost {
        match pair {
            None => pair = Some((seq, 0)),
            Some((pid, blp)) => match seq.wrapping_sub(pid) {
                0 => {}
                d @ 1..=16 => pair = Some((pid, blp | (1 << (d - 1)))),
                _ => {
                    w.u16(pid)?;
                    w.u16(blp)?;
                    pair = Some((seq, 0));
                }
            },
        }
    }
    let (pid, blp) = pair.ok_or(WireError::OutOfRange)?;
    w.u16(pid)?;
    w.u16(blp)?;
    let len = w.at;
    write_header(buf, false, FMT_NACK, PT_RTPFB, len)?;
    write_ssrcs(buf, sender_ssrc, media_ssrc)?;
    Ok(len)
}
