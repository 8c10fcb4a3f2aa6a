//! Redundant audio (RED, RFC 2198) per consumer.
//!
//! A publisher that negotiated RED ([`TrackConfig::red_payload_type`])
//! sends RED packets with that payload type and, when it turns RED off
//! (Chrome does under some conditions), plain Opus with the track's own.
//! Each consumer decides at attach, from its producer's RED payload type
//! and its subscriber's ([`EndpointConfig::red_payload_type`]):
//!
//! | producer | subscriber | a RED packet is sent |
//! |---|---|---|
//! | no RED | any | — (every packet is plain) |
//! | RED | RED | as is, with the subscriber's RED payload type; the blocks' Opus payload type renumbered to the subscriber's |
//! | RED | no RED | as its primary block only, with the subscriber's Opus payload type |
//!
//! Plain packets of a RED producer are forwarded like any other. A RED
//! packet whose payload is malformed, or whose primary block is not the
//! producer's codec, is not forwarded to that consumer
//! ([`DropReason::RedMalformed`]). The rewrite works in the consumer's
//! copy, in place: nothing is allocated.
//!
//! Retransmissions (RTX) of a RED producer's packets are sent as cached
//! (RED): browsers negotiate no RTX for audio.
//!
//! [`TrackConfig::red_payload_type`]: super::TrackConfig::red_payload_type
//! [`EndpointConfig::red_payload_type`]: super::EndpointConfig::red_payload_type

use super::stats::DropReason;
use crate::codec::red;
use crate::wire::rtp::RtpPacket;

/// How one consumer forwards its producer's RED packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum RedMode {
    /// The producer sends no RED: nothing to do.
    #[default]
    Plain,
    /// Both sides negotiated RED: passed on.
    Pass {
        /// The producer's RED payload type.
        from: u8,
        /// The subscriber's RED payload type.
        to: u8,
        /// The producer's codec payload type, named in the blocks.
        primary: u8,
    },
    /// Only the producer did: unwrapped to the primary block.
    Unwrap {
        /// The producer's RED payload type.
        from: u8,
        /// The producer's codec payload type: the primary block must be it.
        primary: u8,
    },
}

impl RedMode {
    /// The mode of a consumer of a producer sending `producer_pt` and RED
    /// with `producer_red`, for a subscriber taking RED with
    /// `subscriber_red`.
    pub(super) fn new(
        producer_pt: u8,
        producer_red: Option<u8>,
        subscriber_red: Option<u8>,
    ) -> Self {
        match (producer_red, subscriber_red) {
            (None, _) => Self::Plain,
            (Some(from), Some(to)) => Self::Pass {
                from,
                to,
                primary: producer_pt,
            },
            (Some(from), None) => Self::Unwrap {
                from,
                primary: producer_pt,
            },
        }
    }

    /// Rewrites the consumer's copy `out[..len]` of `packet`, whose payload
    /// starts at `payload_at` (its header may differ from the original's)
    /// and whose payload type is already the consumer's codec payload type
    /// `out_pt`, if `packet` is RED. Returns the copy's length after.
    pub(super) fn apply(
        self,
        out: &mut [u8],
        len: usize,
        payload_at: usize,
        packet: &RtpPacket<'_>,
        out_pt: u8,
    ) -> Result<usize, DropReason> {
        let (from, primary) = match self {
            Self::Plain => return Ok(len),
            Self::Pass { from, primary, .. } | Self::Unwrap { from, primary } => (from, primary),
        };
        if packet.payload_type() != from {
            return Ok(len);
        }
        let payload = payload_at..len.saturating_sub(packet.padding_len());
        match self {
            Self::Plain => Ok(len),
            Self::Pass { to, .. } => {
                let blocks = out.get_mut(payload).ok_or(DropReason::RedMalformed)?;
                red::rewrite_block_types(blocks, primary, out_pt)
                    .map_err(|_| DropReason::RedMalformed)?;
                set_payload_type(out, to);
                Ok(len)
            }
            Self::Unwrap { .. } => {
                let start = payload.start;
                let (pt, n) =
                    red::unwrap_primary(out, payload).map_err(|_| DropReason::RedMalformed)?;
                if pt != primary {
                    return Err(DropReason::RedMalformed);
                }
                // The padding went with the redundancy: clear P.
                if let Some(b) = out.first_mut() {
                    *b &= !0x20;
                }
                Ok(start + n)
            }
        }
    }
}

/// Sets the payload type of the RTP packet in `out`, keeping the marker.
fn set_payload_type(out: &mut [u8], pt: u8) {
    if let Some(b) = out.get_mut(1) {
        *b = (*b & 0x80) | (pt & 0x7f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RTP packet (12-byte header, marker set, payload type `pt`) with
    /// `payload` and `padding` bytes of padding.
    fn rtp(pt: u8, payload: &[u8], padding: u8) -> Vec<u8> {
        let mut p = vec![0x80, 0x80 | pt, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        p.extend_from_slice(payload);
        if padding > 0 {
            p[0] |= 0x20;
            p.extend(std::iter::repeat_n(0, usize::from(padding) - 1));
            p.push(padding);
        }
        p
    }

    /// One 2-byte redundant block, a 3-byte primary, Opus 111.
    const RED: [u8; 10] = [
        0x80 | 111,
        0x0f,
        0x00,
        0x02,
        111,
        0xa1,
        0xa2,
        0xb1,
        0xb2,
        0xb3,
    ];

    /// `packet` copied into a buffer of junk, its payload type set to
    /// `out_pt` as the fan-out does, then `mode` applied.
    fn apply(mode: RedMode, packet: &[u8], out_pt: u8) -> Result<Vec<u8>, DropReason> {
        let view = RtpPacket::new_checked(packet).expect("valid RTP");
        let mut out = [0xa5u8; 64];
        out[..packet.len()].copy_from_slice(packet);
        set_payload_type(&mut out, out_pt);
        let n = mode.apply(&mut out, packet.len(), view.header_len(), &view, out_pt)?;
        Ok(out[..n].to_vec())
    }

    #[test]
    fn modes() {
        assert_eq!(RedMode::new(111, None, Some(100)), RedMode::Plain);
        assert_eq!(
            RedMode::new(111, Some(63), Some(100)),
            RedMode::Pass {
                from: 63,
                to: 100,
                primary: 111
            }
        );
        assert_eq!(
            RedMode::new(111, Some(63), None),
            RedMode::Unwrap {
                from: 63,
                primary: 111
            }
        );
    }

    #[test]
    fn passes_red_with_the_subscribers_numbers() {
        let mode = RedMode::new(111, Some(63), Some(100));
        let out = apply(mode, &rtp(63, &RED, 0), 109).expect("valid");
        assert_eq!(out[1], 0x80 | 100, "marker kept, RED pt rewritten");
        assert_eq!(out[12], 0x80 | 109);
        assert_eq!(out[16], 109);
        assert_eq!(
            out[12..],
            [&[0x80 | 109][..], &RED[1..4], &[109], &RED[5..]].concat()
        );
        // Same numbers on both sides: unchanged payload.
        let out = apply(mode, &rtp(63, &RED, 0), 111).expect("valid");
        assert_eq!(out[12..], RED);
    }

    #[test]
    fn unwraps_the_primary_block() {
        let mode = RedMode::new(111, Some(63), None);
        for padding in [0, 1, 4] {
            let out = apply(mode, &rtp(63, &RED, padding), 109).expect("valid");
            assert_eq!(out.len(), 15, "padding {padding}");
            assert_eq!(out[0], 0x80, "no padding bit");
            assert_eq!(out[1], 0x80 | 109);
            assert_eq!(out[12..], [0xb1, 0xb2, 0xb3]);
        }
    }

    #[test]
    fn plain_packets_pass_untouched() {
        for mode in [
            RedMode::Plain,
            RedMode::new(111, Some(63), None),
            RedMode::new(111, Some(63), Some(100)),
        ] {
            // Opus (Chrome switched RED off), even with a RED-like payload.
            let packet = rtp(111, &RED, 0);
            let out = apply(mode, &packet, 109).expect("plain");
            assert_eq!(out[12..], packet[12..]);
            assert_eq!(out[1], 0x80 | 109);
        }
    }

    #[test]
    fn malformed_red_is_dropped() {
        for mode in [
            RedMode::new(111, Some(63), None),
            RedMode::new(111, Some(63), Some(100)),
        ] {
            for payload in [
                &[][..],
                &[0x80 | 111, 0, 0],
                &[0x80 | 111, 0, 0, 9, 111, 1, 2],
                &[0x80 | 111, 0, 0, 0],
            ] {
                assert_eq!(
                    apply(mode, &rtp(63, payload, 0), 109),
                    Err(DropReason::RedMalformed),
                    "{mode:?} {payload:02x?}"
                );
            }
        }
        // A primary block that is not the producer's Opus.
        let cn = [0x80 | 111, 0, 0, 1, 13, 0xa1, 0xb1];
        let unwrap = RedMode::new(111, Some(63), None);
        assert_eq!(
            apply(unwrap, &rtp(63, &cn, 0), 109),
            Err(DropReason::RedMalformed)
        );
    }
}
