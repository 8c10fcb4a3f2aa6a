//! Receiver estimated maximum bitrate (draft-alvestrand-rmcat-remb-03).

use super::{PT_PSFB, Ssrcs, WireError, Writer, expect, write_header, write_ssrcs};
use crate::wire::be32;

/// FMT of application-layer feedback in a [`PT_PSFB`] packet (RFC 4585
/// §6.4), which carries REMB.
pub const FMT_AFB: u8 = 15;

/// Receiver estimated maximum bitrate (draft-alvestrand-rmcat-remb-03).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remb<'a> {
    /// Invariant: at least `16 + 4 * num_ssrc` bytes, `"REMB"` at 8.
    body: &'a [u8],
}

impl<'a> Remb<'a> {
    /// Checks the first RTCP packet in `packet`, which must be a REMB; other
    /// application-layer feedback is [`WireError::UnknownType`].
    pub fn new_checked(packet: &'a [u8]) -> Result<Self, WireError> {
        let (_, body) = expect(packet, PT_PSFB, Some(FMT_AFB))?;
        if !Self::has_identifier(body) {
            return Err(WireError::UnknownType);
        }
        Self::from_body(body)
    }

    pub(super) fn has_identifier(body: &[u8]) -> bool {
        body.get(8..12) == Some(b"REMB".as_slice())
    }

    pub(super) fn from_body(body: &'a [u8]) -> Result<Self, WireError> {
        let Some(fixed) = body.first_chunk::<16>() else {
            return Err(WireError::Truncated);
        };
        if body.len() < 16 + usize::from(fixed[12]) * 4 {
            return Err(WireError::Length);
        }
        Ok(Self { body })
    }

    /// SSRC of the packet's sender.
    pub fn sender_ssrc(&self) -> u32 {
        be32(self.body, 0)
    }

    /// The media source field, which the draft says must be 0.
    pub fn media_ssrc(&self) -> u32 {
        be32(self.body, 4)
    }

    /// The 6-bit exponent of the bitrate.
    pub fn exponent(&self) -> u8 {
        self.body.get(13).map_or(0, |b| b >> 2)
    }

    /// The 18-bit mantissa of the bitrate.
    pub fn mantissa(&self) -> u32 {
        be32(self.body, 12) & 0x3_ffff
    }

    /// The estimate in bits per second, `mantissa << exponent`, saturating at
    /// `u64::MAX` (exponents above 46 can overflow).
    pub fn bitrate_bps(&self) -> u64 {
        let wide = u128::from(self.mantissa()) << self.exponent();
        u64::try_from(wide).unwrap_or(u64::MAX)
    }

    /// The SSRCs the estimate applies to.
    pub fn ssrcs(&self) -> Ssrcs<'a> {
        let n = usize::from(self.body.get(12).copied().unwrap_or(0));
        Ssrcs {
            rest: self.body.get(16..16 + 4 * n).unwrap_or_default(),
        }
    }
}

/// Writes a REMB (draft-alvestrand-rmcat-remb-03) for up to 255 SSRCs.
///
/// The bitrate is encoded with the smallest exponent whose mantissa fits 18
/// bits, rounding down. More than 255 SSRCs is [`WireError::OutOfRange`].
pub fn write_remb(
    buf: &mut [u8],
    sender_ssrc: u32,
    bitrate_bps: u64,
    ssrcs: &[u32],
) -> Result<usize, WireError> {
    let num = u8::try_from(ssrcs.len()).map_err(|_| WireError::OutOfRange)?;
    let exp = (u64::BITS - bitrate_bps.leading_zeros()).saturating_sub(18);
    let mantissa = (bitrate_bps >> exp) as u32;
    let mut w = Writer::new(buf, 12);
    w.put(b"REMB")?;
    w.put(&[num, ((exp as u8) << 2) | (mantissa >> 16) as u8])?;
    w.u16(mantissa as u16)?;
    for &ssrc in ssrcs {
        w.u32(ssrc)?;
    }
    let len = w.at;
    write_header(buf, false, FMT_AFB, PT_PSFB, len)?;
    write_ssrcs(buf, sender_ssrc, 0)?;
    Ok(len)
}
