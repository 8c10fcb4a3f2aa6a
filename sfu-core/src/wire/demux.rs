//! Demultiplexing of one UDP datagram by its first byte (RFC 7983 §7, RFC 5761 §4).

/// What a datagram on a media port carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatagramKind {
    /// STUN (first byte 0..=3).
    Stun,
    /// DTLS record (first byte 20..=63).
    Dtls,
    /// RTP (first byte 128..=191, second byte's payload type outside 64..=95).
    Rtp,
    /// RTCP (first byte 128..=191, packet type 192..=223, RFC 5761).
    Rtcp,
    /// Anything else: empty, ZRTP (16..=19), TURN channel (64..=79) or garbage.
    Unknown,
}

/// Classifies a datagram. Never panics; an empty or one-byte datagram is
/// [`DatagramKind::Unknown`] unless its first byte alone decides.
#[inline]
pub fn classify(datagram: &[u8]) -> DatagramKind {
    let Some(&first) = datagram.first() else {
        return DatagramKind::Unknown;
    };
    match first {
        0..=3 => DatagramKind::Stun,
        20..=63 => DatagramKind::Dtls,
        128..=191 => match datagram.get(1) {
            // RFC 5761 §4: RTCP packet types 192..=223 collide with RTP payload
            // types 64..=95 once the marker bit is masked; those are RTCP.
            Some(&pt) if (192..=223).contains(&pt) => DatagramKind::Rtcp,
            Some(_) => DatagramKind::Rtp,
            None => DatagramKind::Unknown,
        },
        _ => DatagramKind::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_byte_ranges() {
        let table: &[(&[u8], DatagramKind)] = &[
            (&[], DatagramKind::Unknown),
            (&[0x00, 0x01], DatagramKind::Stun),
            (&[0x01, 0x01], DatagramKind::Stun),
            (&[3], DatagramKind::Stun),
            (&[4], DatagramKind::Unknown),
            (&[16], DatagramKind::Unknown),
            (&[20], DatagramKind::Dtls),
            (&[22, 0xfe, 0xfd], DatagramKind::Dtls),
            (&[63], DatagramKind::Dtls),
            (&[64], DatagramKind::Unknown),
            (&[0x80], DatagramKind::Unknown),
            (&[0x80, 96], DatagramKind::Rtp),
            (&[0x80, 0x80 | 96], DatagramKind::Rtp),
            (&[0x80, 200], DatagramKind::Rtcp),
            (&[0x81, 205], DatagramKind::Rtcp),
            (&[0x80, 223], DatagramKind::Rtcp),
            (&[0x80, 224], DatagramKind::Rtp),
            (&[0x80, 191], DatagramKind::Rtp),
            (&[191, 0], DatagramKind::Rtp),
            (&[192, 0], DatagramKind::Unknown),
            (&[255, 0], DatagramKind::Unknown),
        ];
        for (bytes, kind) in table {
            assert_eq!(classify(bytes), *kind, "{bytes:?}");
        }
    }
}
