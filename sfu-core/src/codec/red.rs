//! RTP payload for redundant audio data (RED, RFC 2198), as browsers send
//! it around Opus (`a=rtpmap:<pt> red/48000/2`, `a=fmtp:<pt> <opus>/<opus>`).
//!
//! ```text
//!  0                   1                    2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |1|   block PT  |  timestamp offset         |   block length    |  one per redundant block
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |0|   block PT  |                                                  the primary block's
//! +-+-+-+-+-+-+-+-+                                                  (last) header
//! | redundant block data … | primary block data …                 |
//! ```
//!
//! Headers with F = 1 are four bytes (14-bit timestamp offset, 10-bit
//! length); the last header has F = 0, is one byte, and its block (the
//! primary encoding) runs to the end of the payload (§3). The data of the
//! blocks follows the headers in header order, so the primary's data comes
//! last.
//!
//! [`RedPayload::parse`] checks a payload once; after that no accessor can
//! panic. [`unwrap_primary`] rewrites a packet in place to its primary
//! block (for a receiver that did not negotiate RED) and
//! [`rewrite_block_types`] renumbers the block payload types (for one that
//! did, under its own Opus number). Nothing here allocates or panics: a
//! malformed payload is a [`RedError`]. The number of blocks is not
//! limited (the payload's length bounds the work).

use std::ops::Range;

/// Length of a redundant block's header (F = 1).
const REDUNDANT_HEADER_LEN: usize = 4;

/// Why a RED payload was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RedError {
    /// The payload ends inside a block header, or before the primary
    /// block's header (F = 0).
    #[error("RED payload ends inside its block headers")]
    TruncatedHeader,
    /// The redundant blocks' lengths run past the end of the payload.
    #[error("RED block lengths run past the end of the payload")]
    BlockPastEnd,
}

/// One block of a RED payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedBlock<'a> {
    /// The block's payload type (7 bits).
    pub payload_type: u8,
    /// How much earlier than the packet's timestamp the block's data was
    /// sampled (14 bits); 0 for the primary block.
    pub timestamp_offset: u16,
    /// The block's data.
    pub data: &'a [u8],
    /// Whether this is the primary (last) block.
    pub primary: bool,
}

/// A checked RED payload (RFC 2198 §3): its headers are complete and the
/// redundant blocks fit the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedPayload<'a> {
    payload: &'a [u8],
    /// Number of redundant blocks (F = 1 headers).
    redundant: usize,
    /// Offset of the first block's data (just after the F = 0 header).
    data_start: usize,
    /// Offset of the primary block's data.
    primary_start: usize,
}

impl<'a> RedPayload<'a> {
    /// Checks `payload` (an RTP payload without padding) as RED.
    pub fn parse(payload: &'a [u8]) -> Result<Self, RedError> {
        let mut at = 0usize;
        let mut data_len = 0usize;
        let mut redundant = 0usize;
        loop {
            let first = *payload.get(at).ok_or(RedError::TruncatedHeader)?;
            if first & 0x80 == 0 {
                at += 1;
                break;
            }
            let header = payload
                .get(at..at + REDUNDANT_HEADER_LEN)
                .ok_or(RedError::TruncatedHeader)?;
            data_len += (usize::from(header[2] & 0x03) << 8) | usize::from(header[3]);
            redundant += 1;
            at += REDUNDANT_HEADER_LEN;
        }
        // `at` and `data_len` are at most a few times the payload's length:
        // no overflow.
        let primary_start = at + data_len;
        if primary_start > payload.len() {
            return Err(RedError::BlockPastEnd);
        }
        Ok(Self {
            payload,
            redundant,
            data_start: at,
            primary_start,
        })
    }

    /// Number of blocks, the primary included.
    pub fn block_count(&self) -> usize {
        self.redundant + 1
    }

    /// The primary block's payload type.
    pub fn primary_payload_type(&self) -> u8 {
        self.payload
            .get(self.data_start.wrapping_sub(1))
            .map_or(0, |b| b & 0x7f)
    }

    /// Where the primary block's data lies in the payload.
    pub fn primary_range(&self) -> Range<usize> {
        self.primary_start..self.payload.len()
    }

    /// The primary block.
    pub fn primary(&self) -> RedBlock<'a> {
        RedBlock {
            payload_type: self.primary_payload_type(),
            timestamp_offset: 0,
            data: self.payload.get(self.primary_start..).unwrap_or_default(),
            primary: true,
        }
    }

    /// Every block in payload order: the redundant ones (oldest first, as
    /// senders write them), then the primary.
    pub fn blocks(&self) -> RedBlocks<'a> {
        RedBlocks {
            payload: self.payload,
            header: 0,
            data: self.data_start,
            done: false,
        }
    }
}

/// The blocks of a [`RedPayload`], in payload order.
#[derive(Debug, Clone)]
pub struct RedBlocks<'a> {
    payload: &'a [u8],
    /// Offset of the next header.
    header: usize,
    /// Offset of the next block's data.
    data: usize,
    done: bool,
}

impl<'a> Iterator for RedBlocks<'a> {
    type Item = RedBlock<'a>;

    fn next(&mut self) -> Option<RedBlock<'a>> {
        if self.done {
            return None;
        }
        let first = *self.payload.get(self.header)?;
        if first & 0x80 == 0 {
            self.done = true;
            return Some(RedBlock {
                payload_type: first & 0x7f,
                timestamp_offset: 0,
                data: self.payload.get(self.data..)?,
                primary: true,
            });
        }
        let h = self
            .payload
            .get(self.header..self.header + REDUNDANT_HEADER_LEN)?;
        let len = (usize::from(h[2] & 0x03) << 8) | usize::from(h[3]);
        let block = RedBlock {
            payload_type: first & 0x7f,
            timestamp_offset: (u16::from(h[1]) << 6) | u16::from(h[2] >> 2),
            data: self.payload.get(self.data..self.data + len)?,
            primary: false,
        };
        self.header += REDUNDANT_HEADER_LEN;
        self.data += len;
        Some(block)
    }
}

/// Rewrites the RED payload in `buf[payload]` in place to its primary
/// block: the primary's data moves to `payload.start`. Returns the
/// primary's payload type and data length; the packet then ends at
/// `payload.start + length` (the caller fixes the RTP header: payload
/// type, padding bit). Nothing is changed on error.
pub fn unwrap_primary(buf: &mut [u8], payload: Range<usize>) -> Result<(u8, usize), RedError> {
    let start = payload.start;
    let red = RedPayload::parse(buf.get(payload).ok_or(RedError::TruncatedHeader)?)?;
    let (pt, primary) = (red.primary_payload_type(), red.primary_range());
    let len = primary.len();
    // `primary` lies inside the checked payload, which lies inside `buf`.
    let from = start + primary.start..start + primary.end;
    if from.end <= buf.len() {
        buf.copy_within(from, start);
    }
    Ok((pt, len))
}

/// Renumbers, in place, every block of the RED payload `payload` whose
/// payload type is `from` to `to` (a receiver's own number for the
/// codec). Checks the payload first; nothing is changed on error.
pub fn rewrite_block_types(payload: &mut [u8], from: u8, to: u8) -> Result<(), RedError> {
    let red = RedPayload::parse(payload)?;
    let headers = red.redundant;
    let mut at = 0;
    for _ in 0..=headers {
        if let Some(b) = payload.get_mut(at)
            && *b & 0x7f == from & 0x7f
        {
            *b = (*b & 0x80) | (to & 0x7f);
        }
        at += REDUNDANT_HEADER_LEN;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::testutil::XorShift;

    /// Chrome's RED around Opus 111 with one redundant block: 3 bytes of
    /// redundancy 960 ticks old, then a 5-byte primary.
    const ONE_REDUNDANT: [u8; 13] = [
        0x80 | 111, // F=1, PT 111
        0x0f,       // timestamp offset 960 = 0x3c0: 0x0f << 6 | 0x00
        0x00,       // offset low 6 bits 0, length high 2 bits 0
        0x03,       // length 3
        111,        // F=0, PT 111
        0xa1,
        0xa2,
        0xa3,
        0xb1,
        0xb2,
        0xb3,
        0xb4,
        0xb5,
    ];

    #[test]
    fn parses_blocks() {
        let red = RedPayload::parse(&ONE_REDUNDANT).expect("valid");
        assert_eq!(red.block_count(), 2);
        assert_eq!(red.primary_payload_type(), 111);
        assert_eq!(red.primary_range(), 8..13);
        let blocks: Vec<RedBlock<'_>> = red.blocks().collect();
        assert_eq!(
            blocks,
            [
                RedBlock {
                    payload_type: 111,
                    timestamp_offset: 960,
                    data: &[0xa1, 0xa2, 0xa3],
                    primary: false,
                },
                RedBlock {
                    payload_type: 111,
                    timestamp_offset: 0,
                    data: &[0xb1, 0xb2, 0xb3, 0xb4, 0xb5],
                    primary: true,
                },
            ]
        );
        assert_eq!(red.primary(), blocks[1]);
    }

    #[test]
    fn primary_only_and_long_blocks() {
        // No redundancy: one byte of header.
        let red = RedPayload::parse(&[111, 1, 2]).expect("valid");
        assert_eq!(red.block_count(), 1);
        assert_eq!(red.primary().data, [1, 2]);
        // An empty primary is allowed (RFC 2198 sets no minimum).
        assert_eq!(RedPayload::parse(&[111]).expect("valid").primary().data, []);
        // Block length uses all 10 bits, the offset all 14.
        let mut p = vec![0xff, 0xff, 0xff, 0xff, 0x05];
        p.extend(std::iter::repeat_n(7u8, 1023 + 2));
        let red = RedPayload::parse(&p).expect("valid");
        let b: Vec<RedBlock<'_>> = red.blocks().collect();
        assert_eq!(
            (b[0].payload_type, b[0].timestamp_offset, b[0].data.len()),
            (0x7f, 0x3fff, 1023)
        );
        assert_eq!((b[1].payload_type, b[1].data.len()), (5, 2));
    }

    #[test]
    fn hostile_payloads_are_refused() {
        for (payload, err) in [
            (&[][..], RedError::TruncatedHeader),
            // Only redundant headers, no F=0 header.
            (&[0x80 | 111, 0, 0, 0], RedError::TruncatedHeader),
            // A redundant header cut short.
            (&[0x80 | 111, 0, 0], RedError::TruncatedHeader),
            (&[0x80 | 111, 0, 0, 0, 0x80], RedError::TruncatedHeader),
            // Length 3 but 2 bytes of data.
            (&[0x80 | 111, 0, 0, 3, 111, 1, 2], RedError::BlockPastEnd),
            // Length 1023.
            (&[0x80 | 111, 0, 3, 0xff, 111, 1], RedError::BlockPastEnd),
        ] {
            assert_eq!(RedPayload::parse(payload), Err(err), "{payload:02x?}");
            let mut buf = payload.to_vec();
            let len = buf.len();
            assert_eq!(unwrap_primary(&mut buf, 0..len), Err(err));
            assert_eq!(rewrite_block_types(&mut buf, 111, 100), Err(err));
            assert_eq!(buf, payload, "unchanged on error");
        }
        // A range outside the buffer.
        assert_eq!(
            unwrap_primary(&mut [111, 1], 1..5),
            Err(RedError::TruncatedHeader)
        );
    }

    #[test]
    fn many_blocks() {
        for n in [15usize, 16, 17, 300] {
            // n redundant blocks of one byte each, then a 2-byte primary.
            let mut p = Vec::new();
            for _ in 0..n {
                p.extend([0x80 | 111, 0, 0, 1]);
            }
            p.push(111);
            p.extend(std::iter::repeat_n(9u8, n));
            p.extend([0xee, 0xef]);
            let red = RedPayload::parse(&p).expect("valid");
            assert_eq!(red.block_count(), n + 1);
            assert_eq!(red.blocks().count(), n + 1);
            assert_eq!(red.primary().data, [0xee, 0xef]);
            // One byte short of the blocks: refused.
            let short = &p[..p.len() - 3];
            assert_eq!(RedPayload::parse(short), Err(RedError::BlockPastEnd));
            // Headers only.
            assert_eq!(
                RedPayload::parse(&p[..4 * n]),
                Err(RedError::TruncatedHeader)
            );
        }
    }

    #[test]
    fn unwraps_primary_in_place() {
        // A 12-byte "header" of junk, the RED payload, then junk past the
        // payload's end (padding) that must not matter.
        let mut buf = vec![0xa5; 12];
        buf.extend(ONE_REDUNDANT);
        buf.extend([0xa5; 4]);
        let (pt, len) = unwrap_primary(&mut buf, 12..12 + ONE_REDUNDANT.len()).expect("valid");
        assert_eq!((pt, len), (111, 5));
        assert_eq!(buf[..12], [0xa5; 12], "header untouched");
        assert_eq!(buf[12..17], [0xb1, 0xb2, 0xb3, 0xb4, 0xb5]);
    }

    #[test]
    fn rewrites_block_payload_types() {
        let mut p = ONE_REDUNDANT;
        rewrite_block_types(&mut p, 111, 109).expect("valid");
        let red = RedPayload::parse(&p).expect("still valid");
        assert!(red.blocks().all(|b| b.payload_type == 109));
        assert_eq!(p[0] & 0x80, 0x80, "F bits kept");
        assert_eq!(p[1..4], ONE_REDUNDANT[1..4], "offset and length kept");
        assert_eq!(p[5..], ONE_REDUNDANT[5..], "data untouched");
        // Blocks of another payload type keep it.
        let mut q = [0x80 | 13, 0, 0, 0, 111, 1];
        rewrite_block_types(&mut q, 111, 109).expect("valid");
        assert_eq!((q[0], q[4]), (0x80 | 13, 109));
    }

    #[test]
    fn random_payloads_never_panic() {
        let mut rng = XorShift::new(2198);
        let mut buf = [0u8; 48];
        for _ in 0..50_000 {
            let len = rng.fill(&mut buf).len();
            // Bias towards F=1 headers with small lengths.
            if len > 0 && rng.next().is_multiple_of(2) {
                buf[0] |= 0x80;
            }
            let parsed = RedPayload::parse(&buf[..len]);
            if let Ok(red) = parsed {
                let total: usize = red.blocks().map(|b| b.data.len()).sum();
                assert_eq!(red.blocks().count(), red.block_count());
                assert!(total <= len);
                assert!(red.primary_range().end == len);
            }
            let mut copy = buf;
            let at = (rng.next() % 8) as usize;
            let r = unwrap_primary(&mut copy, at..len.max(at));
            assert_eq!(
                r.is_ok(),
                len >= at && RedPayload::parse(&buf[at..len]).is_ok()
            );
            let _ = rewrite_block_types(&mut copy[..len], 111, 63);
        }
    }
}
