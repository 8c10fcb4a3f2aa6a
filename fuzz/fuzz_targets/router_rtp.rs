//! RTP through a router with valid keys: the input is a sequence of RTP
//! packets, each built from fuzzer-controlled fields (header, CSRCs, RFC 8285
//! extension block, payload, padding), protected with the sender's SRTP key
//! so it authenticates, and fed to `Router::handle_input`. The harness
//! checks every egress datagram (`sfu_fuzz::router`).
//!
//! Layout of one packet record (an exhausted input reads as zeros):
//! `flags sender_and_ssrc pt seq:2 ts:4 dt buffers`, then CSRCs, then the
//! extension block, then `payload_len:2 payload`, then the padding.
#![no_main]
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use sfu_fuzz::Reader;
use sfu_fuzz::router::{
    BOTH_VIDEO_SSRC, Harness, PUB_AUDIO_SSRC, PUB_VIDEO_SSRC, PUBLISHER, SUB_ALL,
    SUB_ALL_RTCP_SSRC, SUB_BOTH, SendMode,
};

/// Most packets per input: enough for replay windows and keyframe timers.
const MAX_PACKETS: usize = 64;

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let mut h = Harness::new(r.u8());
    let mut packets = 0;
    while !r.is_empty() && packets < MAX_PACKETS {
        packets += 1;
        let (from, plain, mode) = packet(&mut r);
        h.send(from, &plain, mode);
        let dt = r.u8();
        h.advance(Duration::from_millis(u64::from(dt) * 10));
    }
});

fn packet(r: &mut Reader<'_>) -> (usize, Vec<u8>, SendMode) {
    let flags = r.u8();
    let select = r.u8();
    let from = match select & 3 {
        0 | 1 => PUBLISHER,
        2 => SUB_BOTH,
        _ => SUB_ALL,
    };
    let ssrc = match (select >> 2) & 7 {
        0 | 1 => PUB_VIDEO_SSRC,
        2 => PUB_AUDIO_SSRC,
        3 => BOTH_VIDEO_SSRC,
        4 => SUB_ALL_RTCP_SSRC,
        _ => r.u32(),
    };
    let mode = SendMode {
        raw: flags & 0x40 != 0 && select & 0x80 != 0,
        tamper: (flags & 0x20 != 0).then(|| usize::from(r.u8())),
        from_stranger: flags & 0x80 != 0 && select & 0x40 != 0,
        buffers: 8 - usize::from(select >> 5),
    };
    let marker = flags & 0x01 != 0;
    let padding = flags & 0x02 != 0;
    let extension = flags & 0x04 != 0;
    let csrc_count = if flags & 0x08 != 0 { r.u8() & 0x0f } else { 0 };
    let pt = r.u8() & 0x7f;
    let seq = r.u16();
    let ts = r.u32();

    let mut p = Vec::with_capacity(1500);
    p.push(0x80 | u8::from(padding) << 5 | u8::from(extension) << 4 | csrc_count);
    p.push(u8::from(marker) << 7 | pt);
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    for _ in 0..csrc_count {
        let csrc = r.u32();
        p.extend_from_slice(&csrc.to_be_bytes());
    }
    if extension {
        extension_block(r, &mut p);
    }
    let payload_len = usize::from(r.u16() % 1400);
    r.take_filled(payload_len, 0x5a, &mut p);
    if padding {
        // Filler, then the count byte, which need not match.
        let filler = usize::from(r.u8() % 8);
        p.resize(p.len() + filler, 0);
        p.push(r.u8());
    }
    (from, p, mode)
}

/// An RFC 8285 block: a profile (one-byte, two-byte with app bits, or any),
/// then either raw words or elements whose headers the fuzzer writes, with
/// the block's word count exact or short by up to three words.
fn extension_block(r: &mut Reader<'_>, p: &mut Vec<u8>) {
    let choice = r.u8();
    let profile = match choice & 3 {
        0 | 3 => 0xBEDE,
        1 => 0x1000 | u16::from(choice >> 4),
        _ => r.u16(),
    };
    let two_byte = profile & 0xfff0 == 0x1000;
    let mut body = Vec::new();
    let mode = r.u8();
    let words = if mode & 0x80 != 0 {
        let words = usize::from(mode & 0x3f);
        r.take_filled(words * 4, 0, &mut body);
        words
    } else {
        for _ in 0..(mode & 0x0f) {
            let id = r.u8();
            body.push(id);
            let len = if two_byte {
                let len = r.u8();
                body.push(len);
                usize::from(len)
            } else {
                usize::from(id & 0x0f) + 1
            };
            r.take_filled(len, 0xee, &mut body);
            if mode & 0x40 != 0 {
                body.push(0);
            }
        }
        body.resize(body.len().div_ceil(4) * 4, 0);
        (body.len() / 4).saturating_sub(usize::from((mode >> 4) & 3))
    };
    p.extend_from_slice(&profile.to_be_bytes());
    p.extend_from_slice(&(words.min(0xffff) as u16).to_be_bytes());
    p.extend_from_slice(&body);
}
