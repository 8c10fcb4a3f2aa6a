//! SRTP protect/unprotect, in place versus webrtc-srtp 0.17, and RTP parsing,
//! the view versus `rtp::packet::Packet::unmarshal`; 1200-byte payloads.
//!
//! `cargo bench -p bench --bench srtp`

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use sfu_core::srtp::{Profile, SrtpConfig, SrtpContext};
use sfu_core::wire::rtp::{RtpHeader, RtpPacket, write_header};
use webrtc_srtp::context::Context;
use webrtc_srtp::protection_profile::ProtectionProfile;
use webrtc_util::marshal::Unmarshal;

const PAYLOAD: usize = 1200;
const KEY: [u8; 16] = [0x2b; 16];
const SALT: [u8; 14] = [0x7e; 14];

/// A plaintext RTP packet with a one-byte extension block and a 1200-byte payload.
fn plain_rtp(seq: u16) -> Vec<u8> {
    let mut buf = vec![0u8; 1500];
    let header = RtpHeader {
        payload_type: 96,
        sequence_number: seq,
        timestamp: 90_000,
        ssrc: 0x1234_5678,
        marker: false,
    };
    let n = write_header(&mut buf, &header, &[(3, &[0, 1])]).unwrap();
    for (i, b) in buf[n..n + PAYLOAD].iter_mut().enumerate() {
        *b = i as u8;
    }
    buf.truncate(n + PAYLOAD);
    buf
}

fn ours(profile: Profile) -> SrtpContext {
    SrtpContext::new(
        profile,
        &KEY,
        &SALT[..profile.salt_len()],
        SrtpConfig::default(),
    )
    .unwrap()
}

fn theirs(profile: Profile) -> Context {
    let p = match profile {
        Profile::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
        _ => ProtectionProfile::Aes128CmHmacSha1_80,
    };
    Context::new(&KEY, &SALT[..profile.salt_len()], p, None, None).unwrap()
}

fn protect(c: &mut Criterion, group: &str, profile: Profile) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Bytes(PAYLOAD as u64));
    let plain = plain_rtp(0);
    let len = plain.len();

    let mut tx = ours(profile);
    let mut buf = vec![0u8; 1500];
    buf[..len].copy_from_slice(&plain);
    let mut seq = 0u16;
    g.bench_function("inplace", |b| {
        b.iter(|| {
            // Encrypting the previous ciphertext costs the same as plaintext;
            // a new sequence number each time keeps the ROC logic honest.
            seq = seq.wrapping_add(1);
            buf[2..4].copy_from_slice(&seq.to_be_bytes());
            black_box(tx.protect_rtp(black_box(&mut buf), len).unwrap())
        })
    });

    let mut tx = theirs(profile);
    let mut pkt = plain.clone();
    let mut seq = 0u16;
    g.bench_function("webrtc_srtp", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            pkt[2..4].copy_from_slice(&seq.to_be_bytes());
            black_box(tx.encrypt_rtp(black_box(&pkt)).unwrap())
        })
    });
    g.finish();
}

fn unprotect(c: &mut Criterion, group: &str, profile: Profile) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Bytes(PAYLOAD as u64));
    let mut plain = plain_rtp(0);

    // Each iteration needs a packet with a fresh index (our replay window
    // refuses repeats), made by an untimed setup step.
    let mut tx = ours(profile);
    let mut rx = ours(profile);
    let mut seq = 0u16;
    g.bench_function("inplace", |b| {
        b.iter_batched_ref(
            || {
                seq = seq.wrapping_add(1);
                let mut buf = vec![0u8; 1500];
                buf[..plain.len()].copy_from_slice(&plain);
                buf[2..4].copy_from_slice(&seq.to_be_bytes());
                let n = tx.protect_rtp(&mut buf, plain.len()).unwrap();
                buf.truncate(n);
                buf
            },
            |srtp| black_box(rx.unprotect_rtp(black_box(srtp)).unwrap()),
            BatchSize::SmallInput,
        )
    });

    let mut tx = theirs(profile);
    let mut rx = theirs(profile);
    let mut seq = 0u16;
    g.bench_function("webrtc_srtp", |b| {
        b.iter_batched_ref(
            || {
                seq = seq.wrapping_add(1);
                plain[2..4].copy_from_slice(&seq.to_be_bytes());
                tx.encrypt_rtp(&plain).unwrap()
            },
            |srtp| black_box(rx.decrypt_rtp(black_box(srtp)).unwrap()),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn srtp(c: &mut Criterion) {
    protect(c, "srtp_protect_gcm", Profile::AeadAes128Gcm);
    protect(c, "srtp_protect_cm", Profile::Aes128CmHmacSha1_80);
    unprotect(c, "srtp_unprotect_gcm", Profile::AeadAes128Gcm);
    unprotect(c, "srtp_unprotect_cm", Profile::Aes128CmHmacSha1_80);
}

fn rtp_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("rtp_parse");
    g.throughput(Throughput::Bytes(PAYLOAD as u64));
    let raw = plain_rtp(7);
    g.bench_function("view", |b| {
        b.iter(|| {
            let p = RtpPacket::new_checked(black_box(&raw)).unwrap();
            black_box((
                p.sequence_number(),
                p.ssrc(),
                p.extension(3),
                p.payload().len(),
            ))
        })
    });
    g.bench_function("rtp_unmarshal", |b| {
        b.iter(|| {
            let mut buf: &[u8] = black_box(&raw);
            let p = rtp::packet::Packet::unmarshal(&mut buf).unwrap();
            black_box((p.header.sequence_number, p.header.ssrc, p.payload.len()))
        })
    });
    g.finish();
}

criterion_group!(benches, srtp, rtp_parse);
criterion_main!(benches);
