//! Checked zero-copy views over the datagrams an SFU handles.
//!
//! Every view follows the smoltcp pattern: `Xxx::new_checked(buf)` validates all
//! lengths once, after which no accessor can panic or read out of bounds. Views
//! borrow the caller's buffer (`&[u8]` or `&mut [u8]`) and never allocate.
//! Writers take a caller-owned `&mut [u8]` and return the number of bytes written.

pub mod demux;
pub mod rtcp;
pub mod rtp;
pub mod stun;

pub use demux::{DatagramKind, classify};

/// Why a buffer was rejected by a view or a writer.
///
/// Each variant maps to a stable metric label through [`WireError::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The buffer ends before a header or a length field says it should.
    #[error("buffer too short")]
    Truncated,
    /// The version field is not the one this parser understands.
    #[error("unsupported version")]
    Version,
    /// A length field disagrees with the buffer or with another length field.
    #[error("length field inconsistent with buffer")]
    Length,
    /// The padding count is zero or larger than the payload.
    #[error("invalid padding")]
    Padding,
    /// A header extension block or element is malformed.
    #[error("malformed header extension")]
    Extension,
    /// A STUN attribute or RTCP item is malformed.
    #[error("malformed attribute")]
    Attribute,
    /// The packet type is not one this view handles.
    #[error("unknown or unsupported packet type")]
    UnknownType,
    /// The STUN magic cookie is missing.
    #[error("missing magic cookie")]
    MagicCookie,
    /// A STUN MESSAGE-INTEGRITY check failed.
    #[error("message integrity check failed")]
    Integrity,
    /// A STUN FINGERPRINT check failed.
    #[error("fingerprint mismatch")]
    Fingerprint,
    /// The output buffer given to a writer is too small.
    #[error("output buffer too small")]
    BufferTooSmall,
    /// A value does not fit the field it must be written to.
    #[error("value out of range for its field")]
    OutOfRange,
}

impl WireError {
    /// A stable, lower-case label for metrics (`reason="truncated"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::Version => "version",
            Self::Length => "length",
            Self::Padding => "padding",
            Self::Extension => "extension",
            Self::Attribute => "attribute",
            Self::UnknownType => "unknown_type",
            Self::MagicCookie => "magic_cookie",
            Self::Integrity => "integrity",
            Self::Fingerprint => "fingerprint",
            Self::BufferTooSmall => "buffer_too_small",
            Self::OutOfRange => "out_of_range",
        }
    }
}

/// Reads a big-endian `u16` at `at`; the caller has checked the bounds.
#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Reads a big-endian `u32` at `at`; the caller has checked the bounds.
#[inline]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
