//! Benches of the SFU's hot path, the `sfu-loadgen` load generator
//! ([`loadgen`], binary `sfu-loadgen`) and the `sfu-junk` junk-traffic
//! generator ([`junk`], binary `sfu-junk`).
//!
//! # Design
//! Each criterion bench in `benches/` measures one stage of the packet path
//! with per-byte throughput and per-packet times and, where a
//! library offers the same operation, that library beside it in the same
//! group, so one run gives the ratio:
//!
//! * `srtp` — `srtp_protect_gcm`, `srtp_protect_cm`, `srtp_unprotect_gcm`,
//!   `srtp_unprotect_cm` (functions `inplace` and `webrtc_srtp`) and
//!   `rtp_parse` (functions `view` and `rtp_unmarshal`), 1200-byte payloads.
//!
//! Benches are also compiled and run once as tests by `cargo test --benches`
//! in `.ci/run`, so they cannot rot. Figures belong in a criterion run on an
//! idle machine, never in a timed unit test.
#![forbid(unsafe_code)]

pub mod junk;
pub mod loadgen;
