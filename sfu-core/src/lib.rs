//! Sans-IO core of the SFU appliance.
//!
//! # Design
//! `sfu-core` holds every piece of protocol and forwarding logic and none of the I/O.
//! It never opens a socket and never spawns a thread, and its own code never
//! reads a clock: the caller (the `packet-path` worker loop, a test, a bench)
//! hands it datagrams in buffers it owns and the current time as an argument,
//! and gets its output written into buffers it owns. That keeps tests
//! deterministic (the test owns the clock and the network) and keeps the hot
//! path free of heap allocation. One exception sits inside OpenSSL: its DTLS
//! retransmission timer reads the wall clock and cannot be handed ours
//! through the safe API; [`dtls`] decides *when* to call it from the
//! caller's time (see "Timers" there), so with virtual time a flight is
//! resent no earlier than both clocks allow.
//!
//! * [`router`] — the sans-IO state machine of a worker: commands, datagrams
//!   and timeouts in (`handle_command`, `handle_input`, `handle_timeout`);
//!   egress written through a sink, events (`poll_event`) and the next
//!   deadline (`poll_timeout`) out; transport state and routing in separate
//!   modules, counters in one table.
//! * [`codec`] — payload-level pieces of simulcast switching: keyframe
//!   detection for VP8 (RFC 7741), VP9 (RFC 9628) and H.264 (RFC 6184), and
//!   in-place rewriting of VP8 PictureID and TL0PICIDX so a subscriber sees
//!   one continuous stream across layer switches.
//! * [`wire`] — checked zero-copy views over what arrives on a media port:
//!   demultiplexing by first byte (RFC 7983), RTP with header extensions
//!   (RFC 3550, RFC 8285), RTCP compound packets with views and writers of
//!   reports (SR, RR, SDES, BYE; RFC 3550) and feedback (RFC 4585 NACK and PLI,
//!   RFC 5104 FIR, REMB, transport-cc), STUN with MESSAGE-INTEGRITY and
//!   FINGERPRINT (RFC 8489).
//! * [`srtp`] — SRTP and SRTCP transformed in place in the caller's buffer:
//!   AEAD_AES_128_GCM (RFC 7714, `ring`) and AES_CM_128_HMAC_SHA1_80 (RFC 3711,
//!   RustCrypto), key derivation, rollover-counter estimation and replay windows
//!   held in fixed-capacity storage sized when a context is created.
//! * [`dtls`] — DTLS-SRTP key agreement (RFC 5764) over OpenSSL with an
//!   in-memory transport: datagrams in, datagrams out, SRTP master keys once
//!   the peer certificate matches the SDP fingerprint.
//! * [`twcc`] — the receiving side of transport-wide congestion control:
//!   arrival times in a fixed ring, transport-cc feedback every 50 ms.
//! * [`bwe`] — the sending side of transport-wide congestion control: a
//!   per-subscriber bandwidth estimate (GCC as libwebrtc does it: send
//!   history matched against transport-cc feedback, trendline delay
//!   detector, AIMD rate control, loss-based bound, REMB fallback) and the
//!   allocation of that estimate to the subscriber's stream layers.
//! * [`speaker`] — dominant speaker identification (Volfin & Cohen, as
//!   Jitsi runs it) on RFC 6464 audio levels, and last-N ordering: the most
//!   recent speakers for video slots, the loudest for audio slots, slots
//!   that keep their occupant while it stays in the top N.
//! * [`sdp`] — a strict WebRTC SDP offer parser and answer generator for an
//!   ICE-lite, BUNDLE-only, rtcp-mux-only node (WHIP publish, WHEP subscribe).
//!
//! # Run loop
//! The worker that owns a socket calls, per received datagram,
//! [`router::Router::handle_input`], which runs [`wire::classify`], the
//! matching view's `new_checked`, then [`srtp::SrtpContext::unprotect_rtp`]
//! in place; forwarding writes each consumer's copy into a send slot and
//! protects it there. After each batch it calls
//! [`router::Router::handle_timeout`] when [`router::Router::poll_timeout`]
//! is due and drains [`router::Router::poll_event`]. All state is `&mut self`; a context
//! belongs to exactly one worker thread, so there is no locking here.
//!
//! # Allocation
//! Contexts allocate their per-SSRC tables once, at construction. Parsing,
//! `protect`, `unprotect` and the writers never allocate; the test
//! `tests/zero_alloc_srtp.rs` counts allocations over a million round trips.
//!
//! # Panics, errors and unwraps
//! No input from the network can make this crate panic: every view checks
//! lengths in `new_checked` before any accessor runs, and every failure is an
//! error value with a stable metric label ([`wire::WireError::as_str`],
//! [`srtp::SrtpError::as_str`]). `tests/malformed_input.rs` feeds random and
//! mutated datagrams to every view and to `unprotect`. Panics are reserved for
//! programming errors on values the caller controls and are documented on the
//! function that may raise them.
#![forbid(unsafe_code)]

pub mod bwe;
pub mod codec;
pub mod dtls;
pub mod router;
pub mod sdp;
pub mod speaker;
pub mod srtp;
pub mod twcc;
pub mod wire;
