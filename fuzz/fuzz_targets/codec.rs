//! Codec payload inspection (`sfu_core::codec`): keyframe detection for
//! every codec, the VP8 descriptor parser, the RED (RFC 2198) block parser
//! and in-place rewriters. The whole input is one payload; then it is read as a sequence of packets fed to one
//! `Vp8Rewriter`, as a router feeds a consumer's packets across switches.
//!
//! Layout of one packet record (an exhausted input reads as zeros):
//! `flags len payload…`; `flags` bit 0 marks the packet as the first after
//! a switch.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sfu_core::codec::red::{RedPayload, rewrite_block_types, unwrap_primary};
use sfu_core::codec::vp8::{Vp8Descriptor, Vp8Rewriter, rewrite_vp8};
use sfu_core::codec::{Codec, is_keyframe};
use sfu_fuzz::Reader;

const CODECS: [Codec; 6] = [
    Codec::Vp8,
    Codec::Vp9,
    Codec::H264,
    Codec::Av1,
    Codec::Opus,
    Codec::Other,
];

/// Every read-only entry point on one payload.
fn inspect(payload: &[u8]) -> Option<Vp8Descriptor> {
    for codec in CODECS {
        let _ = is_keyframe(codec, payload);
    }
    let d = Vp8Descriptor::parse(payload)?;
    assert!(d.header_len <= payload.len());
    let _ = d.is_keyframe(payload);
    Some(d)
}

/// The RED parser and both in-place rewrites on one payload.
fn red(data: &[u8]) {
    let parsed = RedPayload::parse(data);
    if let Ok(red) = parsed {
        let blocks: Vec<_> = red.blocks().collect();
        assert_eq!(blocks.len(), red.block_count());
        assert_eq!(blocks.last(), Some(&red.primary()));
        assert!(blocks.iter().map(|b| b.data.len()).sum::<usize>() <= data.len());
        assert_eq!(red.primary_range().end, data.len());
    }
    let mut owned = data.to_vec();
    assert_eq!(
        rewrite_block_types(&mut owned, 111, 63).is_ok(),
        parsed.is_ok()
    );
    assert_eq!(owned.len(), data.len());
    let mut owned = data.to_vec();
    let len = owned.len();
    match unwrap_primary(&mut owned, 0..len) {
        Ok((pt, n)) => {
            let red = parsed.expect("unwrap_primary parses as parse does");
            assert_eq!(
                (pt, n),
                (red.primary_payload_type(), red.primary().data.len())
            );
            assert_eq!(owned[..n], *red.primary().data);
        }
        Err(_) => assert!(parsed.is_err()),
    }
}

fuzz_target!(|data: &[u8]| {
    red(data);
    let parsed = inspect(data);
    let mut owned = data.to_vec();
    assert_eq!(
        rewrite_vp8(&mut owned, Some(0x7fff), Some(0xff)),
        parsed.is_some()
    );
    assert_eq!(owned.len(), data.len());

    let mut r = Reader::new(data);
    let mut rewriter = Vp8Rewriter::new();
    let mut packet = Vec::new();
    while !r.is_empty() {
        let flags = r.u8();
        let len = usize::from(r.u8());
        packet.clear();
        packet.extend_from_slice(r.take(len));
        let parsed = inspect(&packet);
        let before = packet.clone();
        assert_eq!(
            rewriter.rewrite(&mut packet, flags & 1 != 0),
            parsed.is_some()
        );
        // Only the descriptor may change.
        let keep = parsed.map_or(0, |d| d.header_len);
        assert_eq!(packet[keep..], before[keep..]);
        let _ = (rewriter.highest_picture_id(), rewriter.highest_tl0picidx());
    }
});
