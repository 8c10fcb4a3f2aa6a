//! Payload-specific feedback the router acts on: key-frame requests (PLI, FIR).

use core::iter::FusedIterator;

use super::{PT_PSFB, WireError, Writer, expect, write_header, write_ssrcs};
use crate::wire::be32;

/// FMT of a picture loss indication in a [`PT_PSFB`] packet (RFC 4585 §6.3.1).
pub const FMT_PLI: u8 = 1;
/// FMT of a full intra request in a [`PT_PSFB`] packet (RFC 5104 §4.3.1).
pub const FMT_FIR: u8 = 4;

/// Picture loss indication (RFC 4585 §6.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pli {
    sender_ssrc: u32,
    media_ssrc: u32,
}

impl Pli {
    /// Checks the first RTCP packet in `packet`, which must be a PLI.
    pub fn new_checked(packet: &[u8]) -> Result<Self, WireError> {
        let (_, body) = expect(packet, PT_PSFB, Some(FMT_PLI))?;
        Self::from_body(body)
    }

    pub(super) fn from_body(body: &[u8]) -> Result<Self, WireError> {
        let ids = body.first_chunk::<8>().ok_or(WireError::Truncated)?;
        Ok(Self {
            sender_ssrc: be32(ids, 0),
            media_ssrc: be32(ids, 4),
        })
    }

    /// SSRC of the packet's sender.
    pub fn sender_ssrc(&self) -> u32 {
        self.sender_ssrc
    }

    /// SSRC of the media source that should send a key frame.
    pub fn media_ssrc(&self) -> u32 {
        self.media_ssrc
    }
}

/// Full intra request (RFC 5104 §4.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fir<'a> {
    /// Invariant: at least 8 bytes, then a multiple of 8.
    body: &'a [u8],
}

impl<'a> Fir<'a> {
    /// Checks the first RTCP packet in `packet`, which must be a FIR.
    pub fn new_checked(packet: &'a [u8]) -> Result<Self, WireError> {
        let (_, body) = expect(packet, PT_PSFB, Some(FMT_FIR))?;
        Self::from_body(body)
    }

    pub(super) fn from_body(body: &'a [u8]) -> Result<Self, WireError> {
        if body.len() < 8 {
            return Err(WireError::Truncated);
        }
        if !(body.len() - 8).is_multiple_of(8) {
            return Err(WireError::Length);
        }
        Ok(Self { body })
    }

    /// SSRC of the packet's sender.
    pub fn sender_ssrc(&self) -> u32 {
        be32(self.body, 0)
    }

    /// The media source field, which RFC 5104 says must be 0.
    pub fn media_ssrc(&self) -> u32 {
        be32(self.body, 4)
    }

    /// The `(ssrc, command sequence number)` entries.
    pub fn entries(&self) -> FirEntries<'a> {
        FirEntries {
            rest: self.body.get(8..).unwrap_or_default(),
        }
    }
}

/// Iterator over the `(ssrc, seq_nr)` entries of a FIR.
#[derive(Debug, Clone)]
pub struct FirEntries<'a> {
    rest: &'a [u8],
}

impl Iterator for FirEntries<'_> {
    type Item = (u32, u8);

    fn next(&mut self) -> Option<(u32, u8)> {
        let (entry, rest) = self.rest.split_first_chunk::<8>()?;
        self.rest = rest;
        Some((be32(entry, 0), entry[4]))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.rest.len() / 8;
        (n, Some(n))
    }
}

impl ExactSizeIterator for FirEntries<'_> {}
impl FusedIterator for FirEntries<'_> {}

/// Writes a picture loss indication (RFC 4585 §6.3.1); always 12 bytes.
pub fn write_pli(buf: &mut [u8], sender_ssrc: u32, media_ssrc: u32) -> Result<usize, WireError> {
    let len = 12;
    if buf.len() < len {
        return Err(WireError::BufferTooSmall);
    }
    write_header(buf, false, FMT_PLI, PT_PSFB, len)?;
    write_ssrcs(buf, sender_ssrc, media_ssrc)?;
    Ok(len)
}

/// Writes a full intra request (RFC 5104 §4.3.1) with one entry per
/// `(ssrc, command sequence number)`; the media source field is 0.
///
/// An empty `entries` is [`WireError::OutOfRange`].
pub fn write_fir(
    buf: &mut [u8],
    sender_ssrc: u32,
    entries: &[(u32, u8)],
) -> Result<usize, WireError> {
    if entries.is_empty() {
        return Err(WireError::OutOfRange);
    }
    let mut w = Writer::new(buf, 12);
    for &(ssrc, seq) in entries {
        w.u32(ssrc)?;
        w.put(&[seq, 0, 0, 0])?;
    }
    let len = w.at;
    write_header(buf, false, FMT_FIR, PT_PSFB, len)?;
    write_ssrcs(buf, sender_ssrc, 0)?;
    Ok(len)
}
