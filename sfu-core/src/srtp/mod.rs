//! SRTP and SRTCP transformed in place (RFC 3711, RFC 7714).
//!
//! An [`SrtpContext`] holds the session keys derived from one master key and
//! salt, and the per-SSRC state of one direction: use one context to
//! unprotect what a peer sends and another to protect what is sent to it.
//!
//! * `protect_*` encrypts the packet in the caller's buffer and appends the
//!   tag (and for SRTCP the E-bit + index word) into spare capacity after
//!   `len`; it returns the new length.
//! * `unprotect_*` checks the replay window, then authenticates, then decrypts
//!   in place, and only then updates the rollover counter and the replay
//!   window. It returns the plaintext length. A packet that fails any step
//!   leaves the context's state untouched and yields a distinct
//!   [`SrtpError`]: [`SrtpError::Truncated`], [`SrtpError::AuthFailed`],
//!   [`SrtpError::Replayed`], [`SrtpError::TooOld`] and so on.
//!
//! Per-SSRC state (rollover counter, highest sequence number, replay bitmap of
//! up to [`MAX_REPLAY_WINDOW`] packets) lives in tables whose capacity is fixed
//! when the context is created ([`SrtpConfig::max_ssrcs`]); nothing on the
//! per-packet path allocates. A stream beyond that capacity is refused with
//! [`SrtpError::TooManySsrcs`] rather than growing the table on the hot path.
//! The one way to grow a table is [`SrtpContext::add_rtp_stream`], which the
//! router calls when it creates a consumer (a control command, bounded by
//! its per-endpoint consumer limit); the fan-out then protects each copy
//! with [`SrtpContext::protect_rtp_stream`] at the position it returned,
//! without searching the table.

mod cipher;
mod kdf;
mod replay;

pub use kdf::derive;
pub use replay::{MAX_REPLAY_WINDOW, ReplayWindow};

use crate::wire::{self, WireError};
use cipher::Cipher;

/// An SRTP protection profile (RFC 5764 §4.1.2, RFC 7714 §14.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Profile {
    /// `AEAD_AES_128_GCM`: AES-128-GCM, 16-byte tag, 12-byte salt. Preferred.
    AeadAes128Gcm,
    /// `AES_CM_128_HMAC_SHA1_80`: AES-128 counter mode, HMAC-SHA1 truncated to
    /// 80 bits, 14-byte salt. Mandatory to implement.
    Aes128CmHmacSha1_80,
}

impl Profile {
    /// Master key length in bytes.
    pub const fn key_len(self) -> usize {
        16
    }

    /// Master salt length in bytes.
    pub const fn salt_len(self) -> usize {
        match self {
            Self::AeadAes128Gcm => 12,
            Self::Aes128CmHmacSha1_80 => 14,
        }
    }

    /// Bytes `protect_rtp` appends to an RTP packet.
    pub const fn rtp_overhead(self) -> usize {
        match self {
            Self::AeadAes128Gcm => 16,
            Self::Aes128CmHmacSha1_80 => 10,
        }
    }

    /// Bytes `protect_rtcp` appends to an RTCP packet (tag and SRTCP index).
    pub const fn rtcp_overhead(self) -> usize {
        self.rtp_overhead() + 4
    }

    /// The profile's name as in SDP and RFC 5764 (`AEAD_AES_128_GCM`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::AeadAes128Gcm => "AEAD_AES_128_GCM",
            Self::Aes128CmHmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
        }
    }

    /// Parses a profile name as written by [`Profile::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::AeadAes128Gcm, Self::Aes128CmHmacSha1_80]
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }

    /// The DTLS-SRTP protection profile identifier (RFC 5764, RFC 7714).
    pub const fn dtls_id(self) -> u16 {
        match self {
            Self::AeadAes128Gcm => 0x0007,
            Self::Aes128CmHmacSha1_80 => 0x0001,
        }
    }
}

/// Why an SRTP or SRTCP packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum SrtpError {
    /// The RTP or RTCP header is malformed.
    #[error("malformed header: {0}")]
    Malformed(WireError),
    /// The packet is shorter than its header plus the authentication tag.
    #[error("packet too short for its tag")]
    Truncated,
    /// The authentication tag does not match: forged, corrupted or wrong key.
    #[error("authentication failed")]
    AuthFailed,
    /// This packet index was already accepted.
    #[error("replayed packet")]
    Replayed,
    /// The packet index is older than the replay window reaches.
    #[error("packet older than the replay window")]
    TooOld,
    /// The context's fixed SSRC table is full.
    #[error("too many SSRCs for this context")]
    TooManySsrcs,
    /// The stream given to [`SrtpContext::protect_rtp_stream`] is not the
    /// packet's SSRC.
    #[error("no such send stream for this SSRC")]
    UnknownStream,
    /// The buffer has no room after `len` for the tag.
    #[error("no room in the buffer for the tag")]
    BufferTooSmall,
    /// The rollover counter or SRTCP index would wrap: the keys must change.
    #[error("packet index exhausted; rekey")]
    IndexExhausted,
}

impl SrtpError {
    /// A stable, lower-case label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::Truncated => "truncated",
            Self::AuthFailed => "auth_failed",
            Self::Replayed => "replayed",
            Self::TooOld => "too_old",
            Self::TooManySsrcs => "too_many_ssrcs",
            Self::UnknownStream => "unknown_stream",
            Self::BufferTooSmall => "buffer_too_small",
            Self::IndexExhausted => "index_exhausted",
        }
    }
}

impl From<WireError> for SrtpError {
    fn from(e: WireError) -> Self {
        Self::Malformed(e)
    }
}

/// The master key or salt has the wrong length for the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{profile:?} needs a {key}-byte key and a {salt}-byte salt", key = profile.key_len(), salt = profile.salt_len())]
pub struct KeyLengthError {
    /// The profile the key material was meant for.
    pub profile: Profile,
}

/// Sizes of a context's fixed tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrtpConfig {
    /// Most SSRCs (RTP streams, and separately RTCP senders) one context
    /// tracks. Default 32: audio, three simulcast layers and their RTX, with room.
    pub max_ssrcs: usize,
    /// SRTP replay window in packets, 64..=[`MAX_REPLAY_WINDOW`]. Default 1024
    /// (a video keyframe burst reordered by the network still fits).
    pub rtp_replay_window: u32,
    /// SRTCP replay window in packets, 64..=[`MAX_REPLAY_WINDOW`]. Default 128.
    pub rtcp_replay_window: u32,
}

impl Default for SrtpConfig {
    fn default() -> Self {
        Self {
            max_ssrcs: 32,
            rtp_replay_window: 1024,
            rtcp_replay_window: 128,
        }
    }
}

/// The largest SRTCP index (31 bits).
pub const MAX_SRTCP_INDEX: u32 = 0x7fff_ffff;

/// One direction of an SRTP/SRTCP session.
#[derive(Debug)]
pub struct SrtpContext {
    profile: Profile,
    cipher: Cipher,
    rtp: SsrcTable<RtpStream>,
    rtcp: SsrcTable<RtcpStream>,
    rtp_window: u32,
    rtcp_window: u32,
}

impl SrtpContext {
    /// Derives the session keys (RFC 3711 §4.3, key derivation rate 0) and
    /// allocates the SSRC tables. This is the only allocation a context makes.
    pub fn new(
        profile: Profile,
        master_key: &[u8],
        master_salt: &[u8],
        config: SrtpConfig,
    ) -> Result<Self, KeyLengthError> {
        if master_key.len() != profile.key_len() || master_salt.len() != profile.salt_len() {
            return Err(KeyLengthError { profile });
        }
        let clamp = |w: u32| w.clamp(64, MAX_REPLAY_WINDOW);
        Ok(Self {
            profile,
            cipher: Cipher::new(profile, master_key, master_salt),
            rtp: SsrcTable::with_capacity(config.max_ssrcs),
            rtcp: SsrcTable::with_capacity(config.max_ssrcs),
            rtp_window: clamp(config.rtp_replay_window),
            rtcp_window: clamp(config.rtcp_replay_window),
        })
    }

    /// The context's profile.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// Encrypts the RTP packet `buf[..len]` in place and appends its tag;
    /// returns the SRTP length (`len + profile.rtp_overhead()`).
    ///
    /// The rollover counter follows the sequence numbers this context has
    /// protected for the packet's SSRC (RFC 3711 §3.3.1).
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let window = self.rtp_window;
        self.seal_rtp(buf, len, |table, ssrc| {
            table.entry(ssrc, || RtpStream::new(window))
        })
    }

    /// Registers `ssrc` as an RTP stream this context protects and returns
    /// its position for [`SrtpContext::protect_rtp_stream`]. Grows the table
    /// beyond [`SrtpConfig::max_ssrcs`] when full, so it may allocate: call it
    /// when a consumer is created, never per packet; the caller bounds how
    /// many SSRCs it registers. An SSRC registered again keeps its state, so
    /// its packet index keeps rising: a recreated consumer never reuses an
    /// index (a nonce, for GCM) under this key.
    pub fn add_rtp_stream(&mut self, ssrc: u32) -> usize {
        if let Some(at) = self.rtp.position(ssrc) {
            return at;
        }
        self.rtp
            .entries
            .push((ssrc, RtpStream::new(self.rtp_window)));
        self.rtp.entries.len() - 1
    }

    /// [`SrtpContext::protect_rtp`] for the stream at `stream` (from
    /// [`SrtpContext::add_rtp_stream`]): no table search. Refuses with
    /// [`SrtpError::UnknownStream`] a packet whose SSRC is not that stream's.
    pub fn protect_rtp_stream(
        &mut self,
        stream: usize,
        buf: &mut [u8],
        len: usize,
    ) -> Result<usize, SrtpError> {
        self.seal_rtp(buf, len, |table, ssrc| {
            match table.entries.get_mut(stream) {
                Some((s, state)) if *s == ssrc => Ok(state),
                _ => Err(SrtpError::UnknownStream),
            }
        })
    }

    fn seal_rtp(
        &mut self,
        buf: &mut [u8],
        len: usize,
        stream: impl FnOnce(&mut SsrcTable<RtpStream>, u32) -> Result<&mut RtpStream, SrtpError>,
    ) -> Result<usize, SrtpError> {
        let pkt = buf.get(..len).ok_or(SrtpError::Truncated)?;
        let header_len = wire::rtp::header_len(pkt)?;
        let out_len = len + self.profile.rtp_overhead();
        if buf.len() < out_len {
            return Err(SrtpError::BufferTooSmall);
        }
        let ssrc = wire::be32(pkt, 8);
        let seq = wire::be16(pkt, 2);
        let stream = stream(&mut self.rtp, ssrc)?;
        let index = stream.estimate(seq);
        if index >> 16 > u64::from(u32::MAX) {
            return Err(SrtpError::IndexExhausted);
        }
        self.cipher
            .seal_rtp(&mut buf[..out_len], header_len, len, ssrc, index);
        stream.advance(index);
        Ok(out_len)
    }

    /// Authenticates and decrypts the SRTP packet `buf` in place; returns the
    /// length of the plaintext RTP packet at the start of `buf`.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let header_len = wire::rtp::header_len(buf)?;
        let tag_len = self.profile.rtp_overhead();
        if buf.len() < header_len + tag_len {
            return Err(SrtpError::Truncated);
        }
        let ssrc = wire::be32(buf, 8);
        let seq = wire::be16(buf, 2);
        // A stream is only added once a packet of it authenticates, so forged
        // packets with made-up SSRCs cannot fill the table.
        let known = self.rtp.position(ssrc);
        let index = match known {
            Some(at) => {
                let stream = self.rtp.at(at);
                let index = stream.estimate(seq);
                stream.replay.check(index)?;
                index
            }
            None => u64::from(seq),
        };
        let len = self.cipher.open_rtp(buf, header_len, ssrc, index)?;
        let window = self.rtp_window;
        let stream = match known {
            Some(at) => self.rtp.at(at),
            None => self.rtp.insert(ssrc, RtpStream::new(window))?,
        };
        stream.advance(index);
        stream.replay.accept(index);
        Ok(len)
    }

    /// Encrypts the RTCP compound packet `buf[..len]` in place (E bit set),
    /// appends the SRTCP index and tag, and returns the SRTCP length.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let pkt = buf.get(..len).ok_or(SrtpError::Truncated)?;
        rtcp_header_check(pkt)?;
        let out_len = len + self.profile.rtcp_overhead();
        if buf.len() < out_len {
            return Err(SrtpError::BufferTooSmall);
        }
        let ssrc = wire::be32(pkt, 4);
        let window = self.rtcp_window;
        let stream = self.rtcp.entry(ssrc, || RtcpStream::new(window))?;
        // Like libsrtp and webrtc-srtp, the first packet carries index 1.
        let index = if stream.sent >= MAX_SRTCP_INDEX {
            return Err(SrtpError::IndexExhausted);
        } else {
            stream.sent + 1
        };
        self.cipher
            .seal_rtcp(&mut buf[..out_len], len, ssrc, index, true);
        stream.sent = index;
        Ok(out_len)
    }

    /// Authenticates and, if its E bit is set, decrypts the SRTCP packet
    /// `buf` in place; returns the length of the RTCP compound packet.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        rtcp_header_check(buf)?;
        let trailer = self.profile.rtcp_overhead();
        if buf.len() < 8 + trailer {
            return Err(SrtpError::Truncated);
        }
        let ssrc = wire::be32(buf, 4);
        let word_at = match self.profile {
            // RFC 7714 §9.1: ciphertext, tag, then the E + index word.
            Profile::AeadAes128Gcm => buf.len() - 4,
            // RFC 3711 §3.4: ciphertext, E + index word, then the tag.
            Profile::Aes128CmHmacSha1_80 => buf.len() - trailer,
        };
        let word = wire::be32(buf, word_at);
        let encrypted = word & 0x8000_0000 != 0;
        let index = word & MAX_SRTCP_INDEX;
        let known = self.rtcp.position(ssrc);
        if let Some(at) = known {
            self.rtcp.at(at).replay.check(u64::from(index))?;
        }
        let len = self.cipher.open_rtcp(buf, ssrc, index, encrypted)?;
        let window = self.rtcp_window;
        let stream = match known {
            Some(at) => self.rtcp.at(at),
            None => self.rtcp.insert(ssrc, RtcpStream::new(window))?,
        };
        stream.replay.accept(u64::from(index));
        Ok(len)
    }

    /// The rollover counter and highest sequence number this context has seen
    /// for `ssrc`, if any.
    pub fn rtp_index(&self, ssrc: u32) -> Option<u64> {
        self.rtp.find(ssrc).and_then(|s| s.highest)
    }

    /// Sets the rollover counter for `ssrc` before its first packet, as
    /// signalled out of band (RFC 3711 §3.3.1), e.g. when a sender joins a
    /// stream that has already wrapped.
    pub fn set_roc(&mut self, ssrc: u32, roc: u32) -> Result<(), SrtpError> {
        let window = self.rtp_window;
        let stream = self.rtp.entry(ssrc, || RtpStream::new(window))?;
        stream.highest = None;
        stream.initial_roc = roc;
        Ok(())
    }
}

fn rtcp_header_check(pkt: &[u8]) -> Result<(), SrtpError> {
    if pkt.len() < 8 {
        return Err(SrtpError::Malformed(WireError::Truncated));
    }
    if pkt[0] >> 6 != 2 {
        return Err(SrtpError::Malformed(WireError::Version));
    }
    Ok(())
}

/// Receive- or send-side state of one SRTP stream.
#[derive(Debug)]
struct RtpStream {
    /// Highest packet index (ROC << 16 | SEQ) processed, once there is one.
    highest: Option<u64>,
    /// ROC assumed for the first packet.
    initial_roc: u32,
    replay: ReplayWindow,
}

impl RtpStream {
    fn new(window: u32) -> Self {
        Self {
            highest: None,
            initial_roc: 0,
            replay: ReplayWindow::new(window),
        }
    }

    /// The packet index for `seq` (RFC 3711 §3.3.1 and Appendix A): the ROC
    /// guess that puts `seq` closest to the highest sequence number seen.
    /// A guess below ROC 0 is taken as ROC 0, as libsrtp and webrtc-srtp do.
    fn estimate(&self, seq: u16) -> u64 {
        let Some(highest) = self.highest else {
            return u64::from(self.initial_roc) << 16 | u64::from(seq);
        };
        let roc = highest >> 16;
        let s_l = highest as u16;
        let v = if s_l < 0x8000 {
            if seq > s_l && seq - s_l > 0x8000 && roc > 0 {
                roc - 1
            } else {
                roc
            }
        } else if s_l - 0x8000 > seq {
            roc + 1
        } else {
            roc
        };
        v << 16 | u64::from(seq)
    }

    fn advance(&mut self, index: u64) {
        if self.highest.is_none_or(|h| index > h) {
            self.highest = Some(index);
        }
    }
}

/// State of one SRTCP sender SSRC.
#[derive(Debug)]
struct RtcpStream {
    /// Last SRTCP index this context sent.
    sent: u32,
    replay: ReplayWindow,
}

impl RtcpStream {
    fn new(window: u32) -> Self {
        Self {
            sent: 0,
            replay: ReplayWindow::new(window),
        }
    }
}

/// SSRC → state in storage whose capacity is fixed at construction. A linear
/// scan: an endpoint has a handful of SSRCs, and a scan of a few cache lines
/// beats hashing at that size.
#[derive(Debug)]
struct SsrcTable<T> {
    entries: Vec<(u32, T)>,
}

impl<T> SsrcTable<T> {
    fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: Vec::with_capacity(capacity.max(1)),
        }
    }

    fn find(&self, ssrc: u32) -> Option<&T> {
        self.entries
            .iter()
            .find(|(s, _)| *s == ssrc)
            .map(|(_, t)| t)
    }

    fn position(&self, ssrc: u32) -> Option<usize> {
        self.entries.iter().position(|(s, _)| *s == ssrc)
    }

    fn at(&mut self, at: usize) -> &mut T {
        &mut self.entries[at].1
    }

    fn insert(&mut self, ssrc: u32, value: T) -> Result<&mut T, SrtpError> {
        if self.entries.len() == self.entries.capacity() {
            return Err(SrtpError::TooManySsrcs);
        }
        // Within capacity: no reallocation.
        self.entries.push((ssrc, value));
        let last = self.entries.len() - 1;
        Ok(&mut self.entries[last].1)
    }

    fn entry(&mut self, ssrc: u32, new: impl FnOnce() -> T) -> Result<&mut T, SrtpError> {
        match self.position(ssrc) {
            Some(at) => Ok(self.at(at)),
            None => self.insert(ssrc, new()),
        }
    }
}

#[cfg(test)]
mod tests;
