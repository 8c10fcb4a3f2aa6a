//! Harnesses shared by the fuzz targets in `fuzz_targets/`.
//!
//! [`Reader`] turns the fuzzer's bytes into fields (never failing: an
//! exhausted input reads as zeros), and [`router::Harness`] is a [`Router`]
//! with one room, one publisher and two subscribers keyed by SDES, whose
//! egress is checked: every datagram the router writes must authenticate at
//! its receiver.
//!
//! [`Router`]: sfu_core::router::Router

pub mod router;

/// Reads fields from the fuzz input; past its end every read yields zeros
/// (or an empty slice), so every input is a valid program.
#[derive(Debug)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// The next byte, 0 past the end.
    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    /// The next two bytes, big-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    /// The next four bytes, big-endian.
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = start.saturating_add(n).min(self.data.len());
        self.pos = self.pos.saturating_add(n);
        &self.data[start..end]
    }

    /// Exactly `n` bytes: the input's, then `fill` past its end.
    pub fn take_filled(&mut self, n: usize, fill: u8, out: &mut Vec<u8>) {
        let got = self.take(n);
        out.extend_from_slice(got);
        out.resize(out.len() + (n - got.len()), fill);
    }
}
