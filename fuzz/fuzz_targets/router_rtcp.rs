//! Compound RTCP through a router with valid keys: the input is a sequence of
//! datagrams, each a compound packet of SR, RR, SDES, BYE, APP, PLI, FIR,
//! NACK, REMB, transport-cc and junk packets with fuzzer-controlled fields,
//! protected with SRTCP by the sender's key (publisher or either subscriber)
//! and fed to `Router::handle_input`; between them, authentic RTP from the
//! publisher lets the router send the PLIs that the RTCP asked for. The
//! harness checks every egress datagram (`sfu_fuzz::router`).
//!
//! Layout of one record (an exhausted input reads as zeros):
//! `op dt`, then for RTCP `count` packets of `kind fields…`, for RTP
//! `ssrc_choice seq_step`.
#![no_main]
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use sfu_fuzz::Reader;
use sfu_fuzz::router::{
    ABSENT_SSRC, BOTH_VIDEO_SSRC, Harness, PUB_AUDIO_SSRC, PUB_VIDEO_SSRC, PUBLISHER, SUB_ALL,
    SUB_ALL_RTCP_SSRC, SUB_BOTH, SendMode,
};

/// Most datagrams per input.
const MAX_DATAGRAMS: usize = 64;

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let mut h = Harness::new(r.u8());
    let mut seq: u16 = 1000;
    let mut datagrams = 0;
    while !r.is_empty() && datagrams < MAX_DATAGRAMS {
        datagrams += 1;
        let op = r.u8();
        let dt = r.u8();
        h.advance(Duration::from_millis(u64::from(dt) * 10));
        if op & 0x0f == 0x0f {
            // Authentic RTP from the publisher, which carries pending PLIs.
            let ssrc = if r.u8() & 1 == 0 {
                PUB_VIDEO_SSRC
            } else {
                PUB_AUDIO_SSRC
            };
            seq = seq.wrapping_add(u16::from(r.u8()));
            let mut p = vec![0x80, 96];
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
            p.extend_from_slice(&ssrc.to_be_bytes());
            p.extend_from_slice(b"payload");
            h.send(
                PUBLISHER,
                &p,
                SendMode {
                    buffers: 8,
                    ..SendMode::default()
                },
            );
            continue;
        }
        let from = match op & 3 {
            0 => PUBLISHER,
            1 | 3 => SUB_ALL,
            _ => SUB_BOTH,
        };
        let mode = SendMode {
            raw: op & 0x10 != 0 && op & 0x20 != 0,
            tamper: (op & 0x40 != 0 && op & 0x20 != 0).then(|| usize::from(r.u8())),
            from_stranger: op & 0x80 != 0 && op & 0x08 != 0,
            buffers: 8,
        };
        let compound = compound(&mut r, &h);
        h.send(from, &compound, mode);
    }
});

/// The SSRCs worth naming: tracks, consumers, the RTCP SSRC, or any.
fn ssrc(r: &mut Reader<'_>, h: &Harness) -> u32 {
    let choice = r.u8();
    let consumer = |peer: usize| {
        let list = &h.peers[peer].consumer_ssrcs;
        list.get(usize::from(choice >> 4) % list.len().max(1))
            .copied()
            .unwrap_or(0)
    };
    match choice & 0x0f {
        0 => PUB_VIDEO_SSRC,
        1 => PUB_AUDIO_SSRC,
        2 => BOTH_VIDEO_SSRC,
        3 => SUB_ALL_RTCP_SSRC,
        4 => ABSENT_SSRC,
        5..=7 => consumer(SUB_ALL),
        8..=10 => consumer(SUB_BOTH),
        11 => 0,
        _ => r.u32(),
    }
}

fn compound(r: &mut Reader<'_>, h: &Harness) -> Vec<u8> {
    let mut out = Vec::with_capacity(1500);
    let count = r.u8() % 6 + 1;
    for _ in 0..count {
        let kind = r.u8();
        let mut body = Vec::new();
        let (count_or_fmt, pt) = match kind % 11 {
            0 | 1 => {
                // SR (with sender info) or RR, then report blocks.
                let blocks = r.u8() % 4;
                body.extend_from_slice(&ssrc(r, h).to_be_bytes());
                if kind.is_multiple_of(11) {
                    r.take_filled(20, 0, &mut body);
                }
                for _ in 0..blocks {
                    body.extend_from_slice(&ssrc(r, h).to_be_bytes());
                    r.take_filled(20, 0, &mut body);
                }
                (blocks, 200 + kind % 11)
            }
            2 => {
                // SDES: one chunk, a CNAME, then the end item.
                body.extend_from_slice(&ssrc(r, h).to_be_bytes());
                let len = r.u8() % 32;
                body.extend_from_slice(&[1, len]);
                r.take_filled(usize::from(len), b'c', &mut body);
                body.push(0);
                (1, 202)
            }
            3 => {
                // BYE: SSRCs and maybe a reason.
                let n = r.u8() % 4;
                for _ in 0..n {
                    body.extend_from_slice(&ssrc(r, h).to_be_bytes());
                }
                let reason = r.u8() % 16;
                if reason > 0 {
                    body.push(reason);
                    r.take_filled(usize::from(reason), b'r', &mut body);
                }
                (n, 203)
            }
            4 => {
                // APP: subtype, SSRC, name, data.
                let subtype = r.u8() & 0x1f;
                body.extend_from_slice(&ssrc(r, h).to_be_bytes());
                r.take_filled(4, b'a', &mut body);
                let words = usize::from(r.u8() % 8);
                r.take_filled(words * 4, 0, &mut body);
                (subtype, 204)
            }
            5 => {
                // PLI.
                body.extend_from_slice(&ssrc(r, h).to_be_bytes());
                body.extend_from_slice(&ssrc(r, h).to_be_bytes());
                (1, 206)
            }
            6 => {
                // FIR: entries of SSRC, sequence number, reserved.
                body.extend_from_slice(&ssrc(r, h).to_be_bytes());
                body.extend_from_slice(&r.u32().to_be_bytes());
                for _ in 0..r.u8() % 4 {
                    body.extend_from_slice(&ssrc(r, h).to_be_bytes());
                    body.extend_from_slice(&[r.u8(), 0, 0, 0]);
                }
                (4, 206)
            }
            7 => {
                // Generic NACK: PID and BLP pairs.
                body.extend_from_slice(&ssrc(r, h).to_be_bytes());
                body.extend_from_slice(&ssrc(r, h).to_be_bytes());
                for _ in 0..r.u8() % 4 + 1 {
                    body.extend_from_slice(&r.u32().to_be_bytes());
                }
                (1, 205)
            }
            8 => {
                // REMB: "REMB", SSRC count, exponent and mantissa, SSRCs.
                body.extend_from_slice(&ssrc(r, h).to_be_bytes());
                body.extend_from_slice(&0u32.to_be_bytes());
                body.extend_from_slice(b"REMB");
                let n = r.u8() % 4;
                body.push(n);
                r.take_filled(3, 0, &mut body);
                for _ in 0..n {
                    body.extend_from_slice(&ssrc(r, h).to_be_bytes());
                }
                (15, 206)
            }
            9 => {
                // Transport-cc: base, status count, reference time, count,
                // then chunks and deltas as given.
                body.extend_from_slice(&ssrc(r, h).to_be_bytes());
                body.extend_from_slice(&ssrc(r, h).to_be_bytes());
                r.take_filled(8, 0, &mut body);
                let words = usize::from(r.u8() % 16);
                r.take_filled(words * 4, 0, &mut body);
                (15, 205)
            }
            _ => {
                // Junk: any first byte, type and length word, any body.
                let first = r.u8();
                let pt = r.u8();
                let length = r.u16();
                out.extend_from_slice(&[first, pt]);
                out.extend_from_slice(&length.to_be_bytes());
                let words = usize::from(r.u8() % 16);
                r.take_filled(words * 4, 0, &mut out);
                continue;
            }
        };
        body.resize(body.len().div_ceil(4) * 4, 0);
        out.push(0x80 | (count_or_fmt & 0x1f));
        out.push(pt);
        out.extend_from_slice(&((body.len() / 4) as u16).to_be_bytes());
        out.extend_from_slice(&body);
    }
    out
}
