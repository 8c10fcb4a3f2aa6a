//! The packet cache of one producer stream: the last packets it sent, kept
//! so that subscribers' NACKs can be answered with retransmissions (RTX,
//! RFC 4588) without asking the publisher again.
//!
//! One cache per producer, shared by all its consumers: each copy differs
//! only in the header fields a consumer rewrites (SSRC, sequence number,
//! timestamp, payload type), which the retransmission rewrites the same
//! way. The cache holds the decrypted, validated packet as the publisher
//! numbered it.
//!
//! # Memory
//! A ring of `capacity` slots of [`SLOT_LEN`] bytes, indexed by sequence
//! number modulo the capacity (a power of two), allocated zeroed when the
//! producer is created: the operating system commits the pages as packets
//! fill them, so a quiet stream costs little. Storing copies the packet
//! into its slot; nothing allocates per packet. A packet longer than
//! [`SLOT_LEN`] is not kept (counted by the caller).
//!
//! A slot is overwritten only by a newer packet: a late packet that maps to
//! a slot holding a newer one is not stored, so a reordered packet never
//! evicts what subscribers are more likely to ask for.

/// Bytes of one slot: an Ethernet MTU's worth of RTP.
pub const SLOT_LEN: usize = 1500;

/// Slots of a video producer's cache: about 2 s at 2.5 Mbit/s of
/// 1200-byte packets (~250 packets/s), 5 s at 1 Mbit/s.
pub const VIDEO_PACKETS: usize = 512;

/// Slots of an audio producer's cache: about 1.3 s of 20 ms Opus frames.
pub const AUDIO_PACKETS: usize = 64;

// A NACK for a number the consumer's rewriter can no longer map back (see
// `seq::StreamRewriter::forgotten`) is older than any cache holds.
const _: () = assert!(VIDEO_PACKETS <= super::seq::DROP_WINDOW as usize);
const _: () = assert!(AUDIO_PACKETS <= super::seq::DROP_WINDOW as usize);

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    seq: u16,
    len: u16,
    used: bool,
}

/// The last packets of one stream, by sequence number.
#[derive(Debug)]
pub struct PacketCache {
    slots: Box<[Slot]>,
    data: Box<[u8]>,
    mask: usize,
}

impl PacketCache {
    /// An empty cache of `capacity` packets (rounded up to a power of two,
    /// at least 2).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(2).next_power_of_two();
        Self {
            slots: vec![Slot::default(); capacity].into_boxed_slice(),
            data: vec![0u8; capacity * SLOT_LEN].into_boxed_slice(),
            mask: capacity - 1,
        }
    }

    /// Packets the cache can hold.
    pub fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// Keeps `packet` (a whole plaintext RTP packet with sequence number
    /// `seq`). Returns false when it was not kept: longer than a slot, or
    /// older than the packet already in its slot.
    pub fn store(&mut self, seq: u16, packet: &[u8]) -> bool {
        if packet.len() > SLOT_LEN {
            return false;
        }
        let at = usize::from(seq) & self.mask;
        let Some(slot) = self.slots.get_mut(at) else {
            return false;
        };
        if slot.used && slot.seq != seq && (seq.wrapping_sub(slot.seq) as i16) < 0 {
            return false;
        }
        let Some(dst) = self
            .data
            .get_mut(at * SLOT_LEN..)
            .and_then(|d| d.get_mut(..packet.len()))
        else {
            return false;
        };
        dst.copy_from_slice(packet);
        *slot = Slot {
            seq,
            len: packet.len() as u16,
            used: true,
        };
        true
    }

    /// The packet with sequence number `seq`, if it is still kept.
    pub fn get(&self, seq: u16) -> Option<&[u8]> {
        let at = usize::from(seq) & self.mask;
        let slot = self.slots.get(at)?;
        if !slot.used || slot.seq != seq {
            return None;
        }
        self.data
            .get(at * SLOT_LEN..)
            .and_then(|d| d.get(..usize::from(slot.len)))
    }

    /// Forgets every packet (the producer restarted its numbering).
    pub fn clear(&mut self) {
        for s in self.slots.iter_mut() {
            s.used = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u16, len: usize) -> Vec<u8> {
        let mut p = vec![(seq & 0xff) as u8; len];
        p[0] = 0x80;
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p
    }

    #[test]
    fn keeps_the_last_capacity_packets_across_wrap() {
        let mut c = PacketCache::new(8);
        assert_eq!(c.capacity(), 8);
        let seqs: Vec<u16> = (0..20).map(|i| 65530u16.wrapping_add(i)).collect();
        for &s in &seqs {
            assert!(c.store(s, &packet(s, 100 + usize::from(s & 7))));
        }
        for (i, &s) in seqs.iter().enumerate() {
            let got = c.get(s);
            if i >= seqs.len() - 8 {
                assert_eq!(
                    got,
                    Some(&packet(s, 100 + usize::from(s & 7))[..]),
                    "seq {s}"
                );
            } else {
                assert_eq!(got, None, "seq {s} was overwritten");
            }
        }
    }

    #[test]
    fn a_late_packet_never_evicts_a_newer_one() {
        let mut c = PacketCache::new(4);
        assert!(c.store(10, &packet(10, 50)));
        // 6 maps to the same slot as 10 and is older.
        assert!(!c.store(6, &packet(6, 50)));
        assert_eq!(c.get(10).map(<[u8]>::len), Some(50));
        assert_eq!(c.get(6), None);
        // The same packet again (a duplicate) is fine.
        assert!(c.store(10, &packet(10, 60)));
        assert_eq!(c.get(10).map(<[u8]>::len), Some(60));
    }

    #[test]
    fn oversized_packets_are_not_kept_and_clear_forgets() {
        let mut c = PacketCache::new(3);
        assert_eq!(c.capacity(), 4);
        assert!(!c.store(1, &packet(1, SLOT_LEN + 1)));
        assert!(c.store(2, &packet(2, SLOT_LEN)));
        assert!(c.get(2).is_some());
        c.clear();
        assert_eq!(c.get(2), None);
    }
}
