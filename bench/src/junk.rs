//! `sfu-junk`: floods a node's media port with datagrams it must count and
//! drop — random bytes, RTP and SRTCP lookalikes, STUN binding requests
//! nobody can answer, DTLS ClientHellos, forged and replayed SRTP — from
//! many source ports at a paced rate, and reports what it sent.
//!
//! # Traffic
//! Each datagram's [`JunkKind`] is drawn from the seeded generator with the
//! weights of [`JunkKind::weight`]; kinds that need an input the run lacks
//! (`forged_rtp` without `--known-ssrc`, `replay` without `--replay`) are
//! left out and the others' shares grow to fill their place:
//!
//! | kind | what | the node should count it as |
//! |---|---|---|
//! | `random` | 1..=1500 random bytes | `unknown_protocol`, `malformed`, … (by its first byte) |
//! | `rtp` | V=2, random PT (outside 64..=95), seq, timestamp, SSRC, 20..=1200-byte payload, 16-byte fake tag | `unknown_source` |
//! | `forged_rtp` | as `rtp` with a `--known-ssrc` | `address_mismatch` (publisher's address known) or `srtp_auth_failed` |
//! | `srtcp` | SR/RR/PLI/… header, random sender SSRC (a known one in 1 of 4), random body, E-bit index, fake tag | `unknown_source` / `address_mismatch` |
//! | `stun_unknown_user` | binding request, USERNAME `random:random`, MESSAGE-INTEGRITY with a random key, FINGERPRINT | `stun_unknown_user` |
//! | `stun_bad_integrity` | the same with `--ice-ufrag`'s ufrag as local part when given | `stun_auth_failed` (else `stun_unknown_user`) |
//! | `dtls_client_hello` | record type 22, version 0xfefd, handshake type 1, cipher suites, `use_srtp` | `dtls_unhandled` |
//! | `replay` | the datagrams of `--replay FILE`, in turn | `address_mismatch` (another source port) |
//!
//! Payload bytes are slices of a 1 MiB random pool taken at random offsets;
//! headers, lengths, SSRCs and sequence numbers are drawn per datagram.
//!
//! # Replay file
//! `--replay FILE` holds datagrams as a 16-bit big-endian length followed
//! by that many bytes, repeated ([`encode_replays`], [`parse_replays`]).
//! Real SRTP packets captured from a publisher are refused when resent from
//! another address; resending them from the publisher's own address
//! (which this tool cannot do) exercises the SRTP replay window instead.
//!
//! # Pacing
//! `--ports` sockets ([`packet_path::io::BatchSocket`], GSO/GRO off) are
//! bound to `--bind`:0. Every 1 ms tick the sender works out how many
//! datagrams are due since the start (`pps × elapsed`), builds them into a
//! buffer allocated once, and sends them in `sendmmsg` batches of up to 64,
//! each batch from the next socket in turn. A tick that falls behind is
//! caught up by the next ones; nothing is sent after `--duration`. The
//! report gives the rate achieved (datagrams sent ÷ seconds elapsed) and the
//! worst backlog, so a run that could not reach `--pps` says so.
//!
//! # Safety of the target
//! The target must be a loopback address unless `--allow-non-loopback` is
//! given (meant for an address inside a network namespace the caller owns).
//!
//! # Panics
//! Nothing the network answers is read. The replay file is parsed with
//! checked lengths; a truncated one is an error.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use packet_path::io::{BatchSocket, SocketOptions, Transmit};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde::Serialize;
use sfu_core::wire::stun::{self, StunWriter};

use crate::loadgen::parse_u32;

/// Largest datagram the generator builds.
pub const MAX_DATAGRAM: usize = 1500;
/// Datagrams per `sendmmsg`.
pub const BATCH: usize = 64;
/// Length of the random pool payloads are cut from.
const POOL_BYTES: usize = 1 << 20;
/// Fake SRTP/SRTCP authentication tag length (AES-GCM's).
const TAG_LEN: usize = 16;
/// Pacing tick.
const TICK: Duration = Duration::from_millis(1);

/// Command-line options of `sfu-junk`, also the library's input.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "sfu-junk",
    about = "Junk-datagram flood against an SFU node's media port (loopback only by default)"
)]
pub struct Options {
    /// The node's media address (a worker's UDP port).
    #[arg(long)]
    pub target: SocketAddr,
    /// Datagrams per second.
    #[arg(long, default_value_t = 100_000)]
    pub pps: u64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Source sockets (ports) to spread the datagrams over.
    #[arg(long, default_value_t = 64)]
    pub ports: usize,
    /// Seed of the generator (same seed, same datagrams in the same order).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// SSRCs of real publishers, for forged RTP/SRTCP (comma-separated,
    /// decimal or 0x hex).
    #[arg(long, value_delimiter = ',', value_parser = parse_u32)]
    pub known_ssrc: Vec<u32>,
    /// Local ICE ufrags of real WebRTC endpoints, for binding requests with
    /// a bad MESSAGE-INTEGRITY (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub ice_ufrag: Vec<String>,
    /// File of datagrams to replay (16-bit big-endian length, then the bytes).
    #[arg(long)]
    pub replay: Option<PathBuf>,
    /// Local address of every socket.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub bind: IpAddr,
    /// Allow a target outside loopback (only inside a network namespace you own).
    #[arg(long)]
    pub allow_non_loopback: bool,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// What a junk datagram imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum JunkKind {
    /// Random bytes of random length.
    Random,
    /// RTP-looking, random SSRC.
    Rtp,
    /// RTP-looking with a real publisher's SSRC and a fake tag.
    ForgedRtp,
    /// SRTCP-looking.
    Srtcp,
    /// STUN binding request naming nobody.
    StunUnknownUser,
    /// STUN binding request with a bad MESSAGE-INTEGRITY.
    StunBadIntegrity,
    /// DTLS ClientHello.
    DtlsClientHello,
    /// A datagram of the replay file.
    Replay,
}

impl JunkKind {
    /// Every kind.
    pub const ALL: [JunkKind; 8] = [
        Self::Random,
        Self::Rtp,
        Self::ForgedRtp,
        Self::Srtcp,
        Self::StunUnknownUser,
        Self::StunBadIntegrity,
        Self::DtlsClientHello,
        Self::Replay,
    ];

    /// Stable name (report key).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Random => "random",
            Self::Rtp => "rtp",
            Self::ForgedRtp => "forged_rtp",
            Self::Srtcp => "srtcp",
            Self::StunUnknownUser => "stun_unknown_user",
            Self::StunBadIntegrity => "stun_bad_integrity",
            Self::DtlsClientHello => "dtls_client_hello",
            Self::Replay => "replay",
        }
    }

    /// Relative share of the traffic (percent when every kind is enabled).
    pub fn weight(self) -> u32 {
        match self {
            Self::Random => 20,
            Self::Rtp => 20,
            Self::ForgedRtp => 10,
            Self::Srtcp => 10,
            Self::StunUnknownUser => 10,
            Self::StunBadIntegrity => 5,
            Self::DtlsClientHello => 15,
            Self::Replay => 10,
        }
    }
}

/// The seeded datagram generator.
#[derive(Debug)]
pub struct Generator {
    rng: StdRng,
    pool: Vec<u8>,
    known_ssrcs: Vec<u32>,
    ice_ufrags: Vec<String>,
    replays: Vec<Vec<u8>>,
    replay_next: usize,
    /// Enabled kinds with cumulative weights.
    table: Vec<(JunkKind, u32)>,
}

impl Generator {
    /// A generator; kinds lacking their input are disabled.
    pub fn new(
        seed: u64,
        known_ssrcs: Vec<u32>,
        ice_ufrags: Vec<String>,
        replays: Vec<Vec<u8>>,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut pool = vec![0u8; POOL_BYTES];
        rng.fill_bytes(&mut pool);
        let mut table = Vec::new();
        let mut sum = 0;
        for kind in JunkKind::ALL {
            let enabled = match kind {
                JunkKind::ForgedRtp => !known_ssrcs.is_empty(),
                JunkKind::Replay => !replays.is_empty(),
                _ => true,
            };
            if enabled {
                sum += kind.weight();
                table.push((kind, sum));
            }
        }
        Self {
            rng,
            pool,
            known_ssrcs,
            ice_ufrags,
            replays,
            replay_next: 0,
            table,
        }
    }

    /// The kinds this generator draws from.
    pub fn kinds(&self) -> impl Iterator<Item = JunkKind> + '_ {
        self.table.iter().map(|&(k, _)| k)
    }

    /// Writes the next datagram at the start of `buf` (at least
    /// [`MAX_DATAGRAM`] bytes); returns its kind and length.
    pub fn next_datagram(&mut self, buf: &mut [u8]) -> (JunkKind, usize) {
        let total = self.table.last().map_or(1, |&(_, w)| w);
        let pick = self.rng.random_range(0..total);
        let kind = self
            .table
            .iter()
            .find(|&&(_, w)| pick < w)
            .map_or(JunkKind::Random, |&(k, _)| k);
        let len = self.build(kind, buf);
        (kind, len)
    }

    /// Writes one datagram of `kind`; returns its length.
    pub fn build(&mut self, kind: JunkKind, buf: &mut [u8]) -> usize {
        let buf = &mut buf[..MAX_DATAGRAM];
        match kind {
            JunkKind::Random => {
                let len = self.rng.random_range(1..=MAX_DATAGRAM);
                self.fill(&mut buf[..len]);
                len
            }
            JunkKind::Rtp => {
                let ssrc = self.rng.random();
                self.rtp(buf, ssrc)
            }
            JunkKind::ForgedRtp => {
                let ssrc = self.known_ssrc().unwrap_or_else(|| self.rng.random());
                self.rtp(buf, ssrc)
            }
            JunkKind::Srtcp => self.srtcp(buf),
            JunkKind::StunUnknownUser => {
                let local = self.ascii::<8>();
                self.stun(buf, &local)
            }
            JunkKind::StunBadIntegrity => {
                let local = match self.ice_ufrags.len() {
                    0 => self.ascii::<8>().to_vec(),
                    n => self.ice_ufrags[self.rng.random_range(0..n)]
                        .as_bytes()
                        .to_vec(),
                };
                self.stun(buf, &local)
            }
            JunkKind::DtlsClientHello => self.client_hello(buf),
            JunkKind::Replay => {
                if self.replays.is_empty() {
                    return self.build(JunkKind::Random, buf);
                }
                let d = &self.replays[self.replay_next % self.replays.len()];
                self.replay_next = self.replay_next.wrapping_add(1);
                let len = d.len().min(MAX_DATAGRAM);
                buf[..len].copy_from_slice(&d[..len]);
                len
            }
        }
    }

    fn known_ssrc(&mut self) -> Option<u32> {
        match self.known_ssrcs.len() {
            0 => None,
            n => Some(self.known_ssrcs[self.rng.random_range(0..n)]),
        }
    }

    /// Fills `out` from the random pool at a random offset.
    fn fill(&mut self, out: &mut [u8]) {
        let at = self.rng.random_range(0..=POOL_BYTES - out.len());
        out.copy_from_slice(&self.pool[at..at + out.len()]);
    }

    fn ascii<const N: usize>(&mut self) -> [u8; N] {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/";
        std::array::from_fn(|_| ALPHABET[self.rng.random_range(0..ALPHABET.len())])
    }

    /// V=2 RTP header with `ssrc`, random payload and a fake tag.
    fn rtp(&mut self, buf: &mut [u8], ssrc: u32) -> usize {
        let mut pt: u8 = self.rng.random_range(0..96);
        if pt >= 64 {
            // Skip 64..=95, which a demux reads as RTCP.
            pt += 32;
        }
        let marker = if self.rng.random() { 0x80 } else { 0 };
        buf[0] = 0x80;
        buf[1] = marker | pt;
        buf[2..4].copy_from_slice(&self.rng.random::<u16>().to_be_bytes());
        buf[4..8].copy_from_slice(&self.rng.random::<u32>().to_be_bytes());
        buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
        let payload = self.rng.random_range(20..=1200);
        let len = 12 + payload + TAG_LEN;
        self.fill(&mut buf[12..len]);
        len
    }

    /// An SRTCP-looking compound head: a known or random sender SSRC, a
    /// random body, the E bit and index, a fake tag.
    fn srtcp(&mut self, buf: &mut [u8]) -> usize {
        const TYPES: [u8; 5] = [200, 201, 202, 205, 206];
        let pt = TYPES[self.rng.random_range(0..TYPES.len())];
        let words: usize = self.rng.random_range(1..=60);
        let count: u8 = self.rng.random_range(0..=1);
        buf[0] = 0x80 | count;
        buf[1] = pt;
        buf[2..4].copy_from_slice(&(words as u16).to_be_bytes());
        let sender = match self.rng.random_range(0..4) {
            0 => self.known_ssrc().unwrap_or_else(|| self.rng.random()),
            _ => self.rng.random(),
        };
        buf[4..8].copy_from_slice(&sender.to_be_bytes());
        let body_end = 4 + words * 4;
        self.fill(&mut buf[8..body_end]);
        let index = self.rng.random::<u32>() | 0x8000_0000;
        buf[body_end..body_end + 4].copy_from_slice(&index.to_be_bytes());
        let len = body_end + 4 + TAG_LEN;
        self.fill(&mut buf[body_end + 4..len]);
        len
    }

    /// A well-formed ICE binding request `local:random` signed with a
    /// random key.
    fn stun(&mut self, buf: &mut [u8], local: &[u8]) -> usize {
        let mut username = Vec::with_capacity(local.len() + 9);
        username.extend_from_slice(local);
        username.push(b':');
        username.extend_from_slice(&self.ascii::<8>());
        let transaction: [u8; 12] = self.rng.random();
        let key = self.ascii::<22>();
        let tie_breaker = self.rng.random();
        let priority = self.rng.random();
        let built = (|| {
            let mut w = StunWriter::new(buf, stun::BINDING_REQUEST, &transaction)?;
            w.add_username(&username)?;
            w.add_priority(priority)?;
            w.add_ice_controlling(tie_breaker)?;
            w.add_message_integrity(&key)?;
            w.add_fingerprint()?;
            Ok::<_, sfu_core::wire::WireError>(w.finish())
        })();
        // The message is < 200 bytes in a 1500-byte buffer; a failure is a
        // bug of this generator, sent as random bytes rather than a panic.
        built.unwrap_or_else(|_| self.build(JunkKind::Random, buf))
    }

    /// A DTLS 1.2 ClientHello in one record.
    fn client_hello(&mut self, buf: &mut [u8]) -> usize {
        let mut body = Vec::with_capacity(128);
        body.extend_from_slice(&[0xfe, 0xfd]); // client_version
        body.extend_from_slice(&self.rng.random::<[u8; 32]>()); // random
        body.push(0); // session_id
        body.push(0); // cookie
        let suites: [u16; 4] = [0xc02b, 0xc02f, 0xc00a, 0xc014];
        body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
        for s in suites {
            body.extend_from_slice(&s.to_be_bytes());
        }
        body.extend_from_slice(&[1, 0]); // compression: null
        let extensions: &[u8] = &[
            0x00, 0x0e, 0x00, 0x07, 0x00, 0x04, 0x00, 0x07, 0x00, 0x01, 0x00, // use_srtp
            0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x17, // supported_groups: P-256
            0x00, 0x17, 0x00, 0x00, // extended_master_secret
        ];
        body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
        body.extend_from_slice(extensions);
        let blen = body.len();
        let hs_len = 12 + blen;
        let len = 13 + hs_len;
        let seq: u64 = self.rng.random_range(0..1 << 16);
        buf[0] = 22; // handshake
        buf[1..3].copy_from_slice(&[0xfe, 0xfd]);
        buf[3..5].copy_from_slice(&[0, 0]); // epoch
        buf[5..11].copy_from_slice(&seq.to_be_bytes()[2..]);
        buf[11..13].copy_from_slice(&(hs_len as u16).to_be_bytes());
        let hs = &mut buf[13..len];
        hs[0] = 1; // client_hello
        hs[1..4].copy_from_slice(&(blen as u32).to_be_bytes()[1..]);
        hs[4..6].copy_from_slice(&[0, 0]); // message_seq
        hs[6..9].copy_from_slice(&[0, 0, 0]); // fragment_offset
        hs[9..12].copy_from_slice(&(blen as u32).to_be_bytes()[1..]);
        hs[12..].copy_from_slice(&body);
        len
    }
}

/// Encodes datagrams in the replay file format.
pub fn encode_replays<'a>(datagrams: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for d in datagrams {
        let d = &d[..d.len().min(MAX_DATAGRAM)];
        out.extend_from_slice(&(d.len() as u16).to_be_bytes());
        out.extend_from_slice(d);
    }
    out
}

/// Parses the replay file format; a truncated record or one longer than
/// [`MAX_DATAGRAM`] is an error.
pub fn parse_replays(mut bytes: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let Some((head, rest)) = bytes.split_first_chunk::<2>() else {
            bail!("replay record {}: truncated length", out.len());
        };
        let len = usize::from(u16::from_be_bytes(*head));
        if len > MAX_DATAGRAM {
            bail!("replay record {}: {len} bytes > {MAX_DATAGRAM}", out.len());
        }
        let Some((d, rest)) = rest.split_at_checked(len) else {
            bail!(
                "replay record {}: truncated ({len} bytes announced)",
                out.len()
            );
        };
        out.push(d.to_vec());
        bytes = rest;
    }
    Ok(out)
}

/// What a run sent.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The target address.
    pub target: String,
    /// Source sockets.
    pub ports: usize,
    /// Generator seed.
    pub seed: u64,
    /// Datagrams per second asked for.
    pub target_pps: u64,
    /// Seconds of sending (measured).
    pub duration_s: f64,
    /// Datagrams sent.
    pub sent: u64,
    /// Datagrams sent by [`JunkKind::as_str`].
    pub sent_by_kind: BTreeMap<&'static str, u64>,
    /// Bytes sent (UDP payload).
    pub bytes: u64,
    /// Datagrams a send call refused (not in `sent`).
    pub send_errors: u64,
    /// `sent / duration_s`.
    pub achieved_pps: f64,
    /// Largest number of due datagrams not yet sent at a tick.
    pub backlog_max: u64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "sfu-junk → {}: {} datagrams in {:.2} s = {:.0} pps (asked {}), {} send errors, {} ports, worst backlog {}",
            self.target,
            self.sent,
            self.duration_s,
            self.achieved_pps,
            self.target_pps,
            self.send_errors,
            self.ports,
            self.backlog_max,
        )?;
        for (kind, n) in &self.sent_by_kind {
            writeln!(f, "  {kind:<20} {n}")?;
        }
        Ok(())
    }
}

/// Refuses options that make no sense or aim outside loopback.
pub fn validate(opts: &Options) -> anyhow::Result<()> {
    if !opts.target.ip().is_loopback() && !opts.allow_non_loopback {
        bail!(
            "--target {} is not a loopback address (add --allow-non-loopback only inside a network namespace you own)",
            opts.target
        );
    }
    if opts.target.ip().is_unspecified() || opts.target.ip().is_multicast() {
        bail!("--target {} cannot be a destination", opts.target);
    }
    if opts.target.is_ipv4() != opts.bind.is_ipv4() {
        bail!(
            "--bind {} and --target {} differ in family",
            opts.bind,
            opts.target
        );
    }
    if opts.pps == 0 || opts.pps > 10_000_000 {
        bail!("--pps must be in 1..=10000000");
    }
    if !(opts.duration > 0.0 && opts.duration <= 3600.0) {
        bail!("--duration must be in (0, 3600] s");
    }
    if opts.ports == 0 || opts.ports > 4096 {
        bail!("--ports must be in 1..=4096");
    }
    Ok(())
}

/// Sends junk at `opts.target` for `opts.duration`.
pub fn run(opts: &Options) -> anyhow::Result<Report> {
    validate(opts)?;
    let replays = match &opts.replay {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            parse_replays(&bytes).with_context(|| format!("parsing {}", path.display()))?
        }
        None => Vec::new(),
    };
    let sock_opts = SocketOptions {
        buffer_bytes: 1 << 20,
        gro: false,
        gso: false,
        ..SocketOptions::default()
    };
    let mut sockets = (0..opts.ports)
        .map(|_| BatchSocket::bind(SocketAddr::new(opts.bind, 0), BATCH, &sock_opts))
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("binding {} sockets on {}", opts.ports, opts.bind))?;
    let mut generator = Generator::new(
        opts.seed,
        opts.known_ssrc.clone(),
        opts.ice_ufrag.clone(),
        replays,
    );
    let mut sent_by_kind: BTreeMap<&'static str, u64> =
        generator.kinds().map(|k| (k.as_str(), 0)).collect();
    let mut arena = vec![0u8; BATCH * MAX_DATAGRAM];
    let mut built = [(JunkKind::Random, 0usize); BATCH];
    let duration = Duration::from_secs_f64(opts.duration);
    let total = (opts.pps as f64 * opts.duration) as u64;
    let (mut attempted, mut sent, mut bytes, mut errors, mut backlog_max) = (0u64, 0, 0, 0, 0);
    let mut next_socket = 0;
    let start = Instant::now();
    loop {
        let elapsed = start.elapsed();
        if elapsed >= duration || attempted >= total {
            break;
        }
        let due = ((elapsed.as_secs_f64() * opts.pps as f64) as u64).min(total);
        if due <= attempted {
            // Sleep to the next tick boundary.
            let into_tick = Duration::from_nanos((elapsed.as_nanos() % TICK.as_nanos()) as u64);
            std::thread::sleep(TICK - into_tick);
            continue;
        }
        backlog_max = backlog_max.max(due - attempted);
        let n = (due - attempted).min(BATCH as u64) as usize;
        for (slot, b) in arena.chunks_exact_mut(MAX_DATAGRAM).zip(&mut built[..n]) {
            *b = generator.next_datagram(slot);
        }
        let empty = Transmit {
            dst: opts.target,
            contents: &[],
            segment_size: None,
        };
        let mut transmits = [empty; BATCH];
        for ((t, slot), &(_, len)) in transmits
            .iter_mut()
            .zip(arena.chunks_exact(MAX_DATAGRAM))
            .zip(&built[..n])
        {
            t.contents = &slot[..len];
        }
        let done = sockets[next_socket]
            .send(&transmits[..n])
            .unwrap_or(0)
            .min(n);
        for &(kind, len) in &built[..done] {
            *sent_by_kind.entry(kind.as_str()).or_default() += 1;
            bytes += len as u64;
        }
        sent += done as u64;
        errors += (n - done) as u64;
        attempted += n as u64;
        next_socket = (next_socket + 1) % sockets.len();
    }
    let duration_s = start.elapsed().as_secs_f64().max(1e-9);
    Ok(Report {
        target: opts.target.to_string(),
        ports: opts.ports,
        seed: opts.seed,
        target_pps: opts.pps,
        duration_s,
        sent,
        sent_by_kind,
        bytes,
        send_errors: errors,
        achieved_pps: sent as f64 / duration_s,
        backlog_max,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use sfu_core::wire::{DatagramKind, classify};

    fn generator() -> Generator {
        Generator::new(
            7,
            vec![0xdead_1000],
            vec!["knownufrag".into()],
            vec![vec![
                0x80, 96, 0, 1, 0, 0, 0, 0, 0xde, 0xad, 0x10, 0, 1, 2, 3,
            ]],
        )
    }

    #[test]
    fn every_kind_looks_like_what_it_imitates() {
        let mut g = generator();
        let mut buf = vec![0xa5u8; MAX_DATAGRAM];
        for _ in 0..200 {
            for kind in JunkKind::ALL {
                let len = g.build(kind, &mut buf);
                assert!((1..=MAX_DATAGRAM).contains(&len), "{kind:?}: {len}");
                let d = &buf[..len];
                match kind {
                    JunkKind::Random => {}
                    JunkKind::Rtp | JunkKind::Replay => {
                        assert_eq!(classify(d), DatagramKind::Rtp, "{kind:?}");
                    }
                    JunkKind::ForgedRtp => {
                        assert_eq!(classify(d), DatagramKind::Rtp);
                        assert_eq!(d[8..12], 0xdead_1000u32.to_be_bytes());
                    }
                    JunkKind::Srtcp => {
                        assert_eq!(classify(d), DatagramKind::Rtcp);
                        let words = usize::from(u16::from_be_bytes([d[2], d[3]]));
                        assert_eq!(len, 4 + words * 4 + 4 + TAG_LEN);
                    }
                    JunkKind::StunUnknownUser | JunkKind::StunBadIntegrity => {
                        assert_eq!(classify(d), DatagramKind::Stun);
                        let msg = stun::StunMessage::new_checked(d).expect("well-formed STUN");
                        assert_eq!(msg.method(), stun::BINDING_REQUEST);
                        assert!(msg.verify_fingerprint().is_ok());
                        let user = msg.username().expect("USERNAME");
                        if kind == JunkKind::StunBadIntegrity {
                            assert!(user.starts_with(b"knownufrag:"));
                        }
                    }
                    JunkKind::DtlsClientHello => {
                        assert_eq!(classify(d), DatagramKind::Dtls);
                        assert_eq!(&d[..3], &[22, 0xfe, 0xfd]);
                        assert_eq!(usize::from(u16::from_be_bytes([d[11], d[12]])), len - 13);
                        assert_eq!(d[13], 1, "handshake type client_hello");
                    }
                }
            }
        }
    }

    #[test]
    fn shares_follow_the_weights_and_skip_disabled_kinds() {
        let mut g = Generator::new(3, Vec::new(), Vec::new(), Vec::new());
        assert!(
            !g.kinds()
                .any(|k| k == JunkKind::ForgedRtp || k == JunkKind::Replay)
        );
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut counts = BTreeMap::new();
        let n = 80_000;
        for _ in 0..n {
            *counts.entry(g.next_datagram(&mut buf).0).or_insert(0u32) += 1;
        }
        let enabled: u32 = g.kinds().map(JunkKind::weight).sum();
        for kind in g.kinds() {
            let want = f64::from(kind.weight()) / f64::from(enabled);
            let got = f64::from(counts[&kind]) / f64::from(n);
            assert!((got - want).abs() < 0.01, "{kind:?}: {got} vs {want}");
        }
        assert_eq!(counts.len(), 6);
    }

    #[test]
    fn same_seed_same_datagrams() {
        let (mut a, mut b) = (generator(), generator());
        let (mut x, mut y) = (vec![0u8; MAX_DATAGRAM], vec![1u8; MAX_DATAGRAM]);
        for _ in 0..1000 {
            let (ka, la) = a.next_datagram(&mut x);
            let (kb, lb) = b.next_datagram(&mut y);
            assert_eq!((ka, &x[..la]), (kb, &y[..lb]));
        }
    }

    #[test]
    fn replay_file_round_trip_and_truncation() {
        let d: [&[u8]; 3] = [&[1, 2, 3], &[], &[0x80; 1200]];
        let bytes = encode_replays(d);
        let parsed = parse_replays(&bytes).expect("round trip");
        assert_eq!(parsed.iter().map(Vec::as_slice).collect::<Vec<_>>(), d);
        assert!(parse_replays(&bytes[..bytes.len() - 1]).is_err());
        assert!(parse_replays(&[0]).is_err());
        assert!(parse_replays(&[0x06, 0x00]).is_err(), "1536 > MAX_DATAGRAM");
        assert!(parse_replays(&[]).expect("empty").is_empty());
    }

    #[test]
    fn refuses_non_loopback_targets_and_bad_figures() {
        let ok = Options::try_parse_from(["sfu-junk", "--target", "127.0.0.1:7882"])
            .expect("valid flags");
        assert_eq!((ok.pps, ok.ports), (100_000, 64));
        assert!(validate(&ok).is_ok());
        let far =
            Options::try_parse_from(["sfu-junk", "--target", "192.0.2.1:7882"]).expect("parses");
        assert!(validate(&far).is_err());
        assert!(
            validate(&Options {
                allow_non_loopback: true,
                ..far
            })
            .is_ok()
        );
        assert!(
            validate(&Options {
                pps: 0,
                ..ok.clone()
            })
            .is_err()
        );
        assert!(
            validate(&Options {
                ports: 0,
                ..ok.clone()
            })
            .is_err()
        );
        let ssrcs = Options::try_parse_from([
            "sfu-junk",
            "--target",
            "127.0.0.1:1",
            "--known-ssrc",
            "0x10001000,42",
        ])
        .expect("SSRC list");
        assert_eq!(ssrcs.known_ssrc, vec![0x1000_1000, 42]);
    }

    #[test]
    fn sends_to_a_loopback_socket() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let opts = Options {
            target: rx.local_addr().expect("addr"),
            pps: 2000,
            duration: 0.2,
            ports: 4,
            ..Options::try_parse_from(["sfu-junk", "--target", "127.0.0.1:1"]).expect("flags")
        };
        let report = run(&opts).expect("runs");
        assert_eq!(report.send_errors, 0);
        assert!(report.sent >= 300, "{report}");
        assert_eq!(report.sent_by_kind.values().sum::<u64>(), report.sent);
        rx.set_nonblocking(true).expect("nonblocking");
        let mut buf = [0u8; 2048];
        let mut got = 0;
        while rx.recv_from(&mut buf).is_ok() {
            got += 1;
        }
        assert!(got > 0);
    }
}
