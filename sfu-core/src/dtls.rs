//! DTLS-SRTP key agreement (RFC 5763, RFC 5764) over OpenSSL, sans-IO.
//!
//! # Design
//! A [`DtlsSession`] is one DTLS 1.2 association, driven like the rest of the
//! crate: the caller feeds received datagrams with
//! [`DtlsSession::handle_datagram`], drains what to send with
//! [`DtlsSession::poll_datagram`] into its own buffer, and drives
//! retransmission with [`DtlsSession::poll_timeout`] /
//! [`DtlsSession::handle_timeout`]. When the handshake completes and the peer's
//! certificate matches the fingerprint signalled in SDP, the SRTP master keys
//! are exported (RFC 5764 §4.2, `EXTRACTOR-dtls_srtp`) and handed out once by
//! [`DtlsSession::take_keys`]. After that, datagrams are still fed to OpenSSL
//! so it can answer a peer that retransmits its last flight; application data
//! (SCTP for data channels) is decrypted and discarded.
//!
//! OpenSSL never sees a socket. Each session owns an in-memory transport
//! (a queue of received datagrams and a queue of datagrams to send) wrapped in
//! an [`openssl::ssl::SslStream`]: OpenSSL reads one datagram per `read` and
//! gets `WouldBlock` when the queue is empty, which it reports as "want read",
//! i.e. "handshake in progress". Records OpenSSL writes between two flushes
//! (one flight) are packed into datagrams of at most [`DTLS_MTU`] bytes
//! (OpenSSL's MTU is set to the same value, so a single record never exceeds
//! it). Records are never packed across a flush: OpenSSL 3.0 as a server
//! ignores the rest of a datagram that starts with a retransmitted
//! ClientHello, which is what a client sends when its timer fired just before
//! the server's flight arrived (measured; see the retransmission tests).
//!
//! The peer certificate is checked against the SDP fingerprint twice: in the
//! verify callback, so a wrong certificate aborts the handshake with an alert
//! before we send Finished, and again once the handshake completed.
//!
//! The certificate ([`DtlsCert`], ECDSA P-256, self-signed) and the `SSL_CTX`
//! built around it are created once per node and shared by every session; the
//! DTLS role (client or server) is chosen per session.
//!
//! # Why OpenSSL and not a pure-Rust DTLS stack
//! The node must complete handshakes with browsers (ECDSA certificates) and
//! with GStreamer's `webrtcbin` (1.22 presents an RSA 2048 certificate). The
//! pure-Rust sans-IO candidate, `dimpl`, lists RSA as a non-goal in its README,
//! so it could not verify those client certificates. OpenSSL 3.0 is already on
//! every machine, speaks DTLS 1.2 with `use_srtp` including
//! `SRTP_AEAD_AES_128_GCM`, and the `openssl` crate drives it through a custom
//! BIO with safe code only. OpenSSL 3.0 has no DTLS 1.3: a peer offering 1.3
//! negotiates 1.2.
//!
//! # Timers
//! OpenSSL's DTLS retransmission timer reads the wall clock itself (it cannot
//! be given the caller's `now` through the safe API). Calling into OpenSSL
//! after its timer expired makes it resend its last flight — measured by
//! `tests/dtls_handshake.rs` (`server_flight_lost_is_retransmitted`) with this
//! memory transport. The session therefore mirrors OpenSSL's timer: a flight
//! sent at `t` is due for retransmission at `t + rto`, `rto` starting at 1 s
//! and doubling per retransmission (OpenSSL 3.0 caps it at 60 s).
//! [`DtlsSession::handle_timeout`] at or after that deadline calls into
//! OpenSSL; if OpenSSL's own clock disagrees and it sends nothing, the session
//! asks to be woken again [`TIMER_RECHECK`] later. A handshake that has not
//! completed [`HANDSHAKE_TIMEOUT`] after it started (client: creation; server:
//! first datagram) fails with [`DtlsError::HandshakeTimeout`].
//!
//! # Clocks
//! Besides OpenSSL's DTLS timer, [`DtlsCert::generate`] reads the wall clock
//! once for the certificate's validity period. Nothing else here does.
//!
//! # Panics, errors and unwraps
//! Nothing here panics on input from the network: a datagram that is not a
//! sequence of well-formed DTLS record headers is refused with
//! [`DtlsError::Malformed`] before OpenSSL sees it; records that fail
//! authentication are silently dropped by OpenSSL (RFC 6347 §4.1.2.7); a
//! fatal alert or handshake error moves the session to [`DtlsState::Failed`].
//! Every error has a stable metric label ([`DtlsError::as_str`]).

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::srtp::SrtpProfileId;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions, SslRef,
    SslSessionCacheMode, SslStream, SslVerifyMode, SslVersion,
};
use openssl::x509::{X509, X509NameBuilder};

use crate::srtp::Profile;

/// Largest datagram a session emits, and the MTU OpenSSL is told to respect.
pub const DTLS_MTU: usize = 1200;

/// Received datagrams longer than this are refused as malformed.
pub const MAX_INCOMING_DATAGRAM: usize = 2048;

/// A handshake not completed this long after it started fails.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long to wait before asking OpenSSL again when its wall-clock timer had
/// not yet expired at the deadline computed from the caller's clock.
pub const TIMER_RECHECK: Duration = Duration::from_millis(50);

/// OpenSSL 3.0's initial DTLS retransmission timeout.
const INITIAL_RTO: Duration = Duration::from_secs(1);
/// OpenSSL 3.0's largest DTLS retransmission timeout.
const MAX_RTO: Duration = Duration::from_secs(60);
/// Received datagrams queued for OpenSSL at most (it drains them on each call).
const MAX_INCOMING_QUEUE: usize = 32;
/// Datagrams queued for sending at most; beyond that they are dropped, as a
/// full socket buffer would, and retransmission recovers.
const MAX_OUTGOING_QUEUE: usize = 64;
/// `SSL_read` calls per received datagram at most.
const MAX_READS_PER_DATAGRAM: usize = 64;
/// RFC 5764 §4.2 exporter label.
const SRTP_EXPORTER_LABEL: &str = "EXTRACTOR-dtls_srtp";
/// DTLS record header: type, version, epoch, sequence number, length.
const RECORD_HEADER_LEN: usize = 13;
/// Certificate lifetime.
const CERT_DAYS: u32 = 30;

const CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
    ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
    ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:\
    ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA";
const GROUPS: &str = "P-256:X25519:P-384";
const SIGALGS: &str = "ECDSA+SHA256:ECDSA+SHA384:ECDSA+SHA512:\
    rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:rsa_pss_rsae_sha512:\
    RSA+SHA256:RSA+SHA384:RSA+SHA512";

/// Why a DTLS operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DtlsError {
    /// The datagram is not a sequence of DTLS records, or is too long. Not fatal.
    #[error("not a DTLS datagram")]
    Malformed,
    /// The handshake failed (fatal alert sent or received). Fatal.
    #[error("DTLS handshake failed: {0}")]
    HandshakeFailed(String),
    /// The peer's certificate does not match the signalled fingerprint. Fatal.
    #[error("peer certificate does not match the signalled fingerprint")]
    FingerprintMismatch,
    /// No SRTP protection profile was negotiated (or none was configured). Fatal.
    #[error("no SRTP protection profile negotiated")]
    NoSrtpProfile,
    /// The handshake did not complete within [`HANDSHAKE_TIMEOUT`]. Fatal.
    #[error("DTLS handshake timed out")]
    HandshakeTimeout,
    /// A fingerprint could not be parsed, or names an unsupported hash.
    #[error("malformed or unsupported certificate fingerprint")]
    BadFingerprint,
    /// Too many received datagrams queued; this one was dropped. Not fatal.
    #[error("DTLS receive queue full")]
    QueueFull,
    /// The session has failed or the peer closed it (`close_notify`); the
    /// datagram was ignored.
    #[error("DTLS session closed")]
    Closed,
    /// OpenSSL refused an operation outside the handshake (certificate or
    /// context creation, key export).
    #[error("OpenSSL: {0}")]
    Openssl(String),
}

impl DtlsError {
    /// A stable, lower-case label for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::HandshakeFailed(_) => "handshake_failed",
            Self::FingerprintMismatch => "fingerprint_mismatch",
            Self::NoSrtpProfile => "no_srtp_profile",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::BadFingerprint => "bad_fingerprint",
            Self::QueueFull => "queue_full",
            Self::Closed => "closed",
            Self::Openssl(_) => "openssl",
        }
    }
}

impl From<openssl::error::ErrorStack> for DtlsError {
    fn from(e: openssl::error::ErrorStack) -> Self {
        Self::Openssl(e.to_string())
    }
}

/// A certificate fingerprint as in SDP `a=fingerprint` (RFC 8122 §5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    /// Hash function name, lower case: `sha-1`, `sha-224`, `sha-256`,
    /// `sha-384` or `sha-512`.
    pub algorithm: String,
    /// The digest of the DER-encoded certificate.
    pub value: Vec<u8>,
}

impl Fingerprint {
    /// Parses the value of an `a=fingerprint` attribute, e.g.
    /// `sha-256 AB:CD:…` (hash name and hex case-insensitive). The number of
    /// bytes must match the hash function.
    pub fn parse(sdp_value: &str) -> Result<Self, DtlsError> {
        let mut parts = sdp_value.split_ascii_whitespace();
        let (Some(algorithm), Some(hex), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(DtlsError::BadFingerprint);
        };
        let algorithm = algorithm.to_ascii_lowercase();
        let (_, len) = digest_for(&algorithm).ok_or(DtlsError::BadFingerprint)?;
        let value = hex
            .split(':')
            .map(|pair| match pair.as_bytes() {
                [hi, lo] => Some((hex_digit(*hi)? << 4) | hex_digit(*lo)?),
                _ => None,
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or(DtlsError::BadFingerprint)?;
        if value.len() != len {
            return Err(DtlsError::BadFingerprint);
        }
        Ok(Self { algorithm, value })
    }

    /// The fingerprint of `cert` with the hash function `algorithm`.
    fn of(cert: &X509, algorithm: &str) -> Result<Self, DtlsError> {
        let (md, _) = digest_for(algorithm).ok_or(DtlsError::BadFingerprint)?;
        Ok(Self {
            algorithm: algorithm.to_owned(),
            value: cert.digest(md)?.to_vec(),
        })
    }
}

impl fmt::Display for Fingerprint {
    /// `sha-256 AB:CD:…`, upper-case hex, as written in SDP.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.algorithm)?;
        for (i, b) in self.value.iter().enumerate() {
            let sep = if i == 0 { ' ' } else { ':' };
            write!(f, "{sep}{b:02X}")?;
        }
        Ok(())
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// The OpenSSL digest and its output length for an SDP hash function name.
fn digest_for(algorithm: &str) -> Option<(MessageDigest, usize)> {
    Some(match algorithm {
        "sha-1" => (MessageDigest::sha1(), 20),
        "sha-224" => (MessageDigest::sha224(), 28),
        "sha-256" => (MessageDigest::sha256(), 32),
        "sha-384" => (MessageDigest::sha384(), 48),
        "sha-512" => (MessageDigest::sha512(), 64),
        _ => return None,
    })
}

/// The node's DTLS certificate and the OpenSSL context built around it.
///
/// Cheap to clone (shared); one per node, handed to every router.
#[derive(Clone)]
pub struct DtlsCert {
    inner: Arc<CertInner>,
}

struct CertInner {
    context: SslContext,
    fingerprint: Fingerprint,
}

impl fmt::Debug for DtlsCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsCert")
            .field("fingerprint", &self.inner.fingerprint.to_string())
            .finish_non_exhaustive()
    }
}

impl DtlsCert {
    /// A fresh self-signed ECDSA P-256 certificate valid for 30 days, random
    /// serial, offering `SRTP_AEAD_AES_128_GCM` then `SRTP_AES128_CM_SHA1_80`.
    pub fn generate() -> Result<Self, DtlsError> {
        Self::generate_with_profiles(&[Profile::AeadAes128Gcm, Profile::Aes128CmHmacSha1_80])
    }

    /// Like [`DtlsCert::generate`], offering only `profiles`, in preference order.
    pub fn generate_with_profiles(profiles: &[Profile]) -> Result<Self, DtlsError> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
        let key = PKey::from_ec_key(EcKey::generate(&group)?)?;
        Self::with_key(key, profiles)
    }

    /// A fresh self-signed RSA 2048 certificate, as GStreamer's `webrtcbin`
    /// presents: for interoperability tests.
    pub fn generate_rsa() -> Result<Self, DtlsError> {
        let key = PKey::from_rsa(Rsa::generate(2048)?)?;
        Self::with_key(key, &[Profile::AeadAes128Gcm, Profile::Aes128CmHmacSha1_80])
    }

    /// The SHA-256 fingerprint of the certificate, for SDP `a=fingerprint`.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.inner.fingerprint
    }

    fn with_key(key: PKey<Private>, profiles: &[Profile]) -> Result<Self, DtlsError> {
        let cert = self_signed(&key)?;
        let fingerprint = Fingerprint::of(&cert, "sha-256")?;
        let context = build_context(&key, &cert, profiles)?;
        Ok(Self {
            inner: Arc::new(CertInner {
                context,
                fingerprint,
            }),
        })
    }
}

fn self_signed(key: &PKey<Private>) -> Result<X509, DtlsError> {
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::COMMONNAME, "sfu")?;
    let name = name.build();

    let mut serial = BigNum::new()?;
    serial.rand(63, MsbOption::MAYBE_ZERO, false)?;
    let serial = Asn1Integer::from_bn(&serial)?;

    // One day back, so a peer whose clock is slightly behind accepts it.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let not_before = Asn1Time::from_unix(i64::try_from(now).unwrap_or(i64::MAX) - 86_400)?;
    let not_after = Asn1Time::days_from_now(CERT_DAYS)?;

    let mut builder = X509::builder()?;
    builder.set_version(2)?;
    builder.set_serial_number(&serial)?;
    builder.set_subject_name(&name)?;
    builder.set_issuer_name(&name)?;
    builder.set_pubkey(key)?;
    builder.set_not_before(&not_before)?;
    builder.set_not_after(&not_after)?;
    builder.sign(key, MessageDigest::sha256())?;
    Ok(builder.build())
}

fn build_context(
    key: &PKey<Private>,
    cert: &X509,
    profiles: &[Profile],
) -> Result<SslContext, DtlsError> {
    if profiles.is_empty() {
        return Err(DtlsError::NoSrtpProfile);
    }
    let srtp = profiles
        .iter()
        .map(|p| srtp_profile_name(*p))
        .collect::<Vec<_>>()
        .join(":");

    let mut b = SslContextBuilder::new(SslMethod::dtls())?;
    b.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
    b.set_private_key(key)?;
    b.set_certificate(cert)?;
    b.check_private_key()?;
    b.set_cipher_list(CIPHERS)?;
    b.set_groups_list(GROUPS)?;
    b.set_sigalgs_list(SIGALGS)?;
    b.set_tlsext_use_srtp(&srtp)?;
    b.set_options(
        SslOptions::NO_QUERY_MTU
            | SslOptions::NO_TICKET
            | SslOptions::NO_RENEGOTIATION
            | SslOptions::CIPHER_SERVER_PREFERENCE,
    );
    b.set_session_cache_mode(SslSessionCacheMode::OFF);
    // Peers present self-signed certificates: any chain is accepted here and
    // the certificate is checked against the SDP fingerprint after the
    // handshake. A certificate is required in both directions.
    b.set_verify_callback(
        SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
        |_preverify, _ctx| true,
    );
    Ok(b.build())
}

fn srtp_profile_name(profile: Profile) -> &'static str {
    match profile {
        Profile::AeadAes128Gcm => "SRTP_AEAD_AES_128_GCM",
        Profile::Aes128CmHmacSha1_80 => "SRTP_AES128_CM_SHA1_80",
    }
}

/// Which side of the DTLS handshake this node takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtlsRole {
    /// We answer the peer's ClientHello: SDP `a=setup:passive` in our answer.
    Server,
    /// We send the ClientHello: SDP `a=setup:active` in our answer.
    Client,
}

/// Where a session stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtlsState {
    /// Handshake not yet completed.
    Handshaking,
    /// Handshake completed and the peer certificate matched; keys available.
    Connected,
    /// The handshake failed, timed out, the fingerprint did not match, or the
    /// peer closed the association. Terminal.
    Failed,
}

/// SRTP master keys exported from a completed handshake (RFC 5764 §4.2).
pub struct SrtpKeys {
    /// The negotiated protection profile.
    pub profile: Profile,
    /// Master key followed by master salt that we protect with.
    pub local_master: Vec<u8>,
    /// Master key followed by master salt the peer protects with.
    pub remote_master: Vec<u8>,
}

impl fmt::Debug for SrtpKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpKeys")
            .field("profile", &self.profile)
            .field("local_master", &"<redacted>")
            .field("remote_master", &"<redacted>")
            .finish()
    }
}

/// One DTLS association.
pub struct DtlsSession {
    stream: SslStream<MemoryTransport>,
    role: DtlsRole,
    remote: Fingerprint,
    state: DtlsState,
    keys: Option<SrtpKeys>,
    /// When OpenSSL's retransmission timer should next have expired.
    next_timeout: Option<Instant>,
    /// Our mirror of OpenSSL's current retransmission timeout.
    rto: Duration,
    /// When the handshake fails for lack of progress.
    give_up_at: Option<Instant>,
    /// Set by the verify callback when the peer certificate did not match.
    mismatch: Arc<AtomicBool>,
}

impl fmt::Debug for DtlsSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsSession")
            .field("role", &self.role)
            .field("state", &self.state)
            .field("remote", &self.remote.to_string())
            .finish_non_exhaustive()
    }
}

impl DtlsSession {
    /// A session with `cert`'s context taking `role`, which will accept only
    /// a peer certificate whose fingerprint is `remote`. A client sends its
    /// ClientHello at once (drain it with [`DtlsSession::poll_datagram`]).
    pub fn new(
        cert: &DtlsCert,
        role: DtlsRole,
        remote: Fingerprint,
        now: Instant,
    ) -> Result<Self, DtlsError> {
        let md = match digest_for(&remote.algorithm) {
            Some((md, len)) if len == remote.value.len() => md,
            _ => return Err(DtlsError::BadFingerprint),
        };
        let mut ssl = Ssl::new(&cert.inner.context)?;
        // Refuse a wrong certificate while it is being verified, before we
        // send Finished, so neither side ever reaches a usable state.
        // `on_handshake_complete` checks again once the handshake is done.
        let mismatch = Arc::new(AtomicBool::new(false));
        let (expected, flag) = (remote.value.clone(), Arc::clone(&mismatch));
        ssl.set_verify_callback(
            SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
            move |_preverify, ctx| {
                if ctx.error_depth() != 0 {
                    return true;
                }
                let matches = ctx
                    .current_cert()
                    .and_then(|c| c.digest(md).ok())
                    .is_some_and(|d| d[..] == expected[..]);
                if !matches {
                    flag.store(true, Ordering::Relaxed);
                }
                matches
            },
        );
        ssl.set_mtu(DTLS_MTU as u32)?;
        match role {
            DtlsRole::Server => ssl.set_accept_state(),
            DtlsRole::Client => ssl.set_connect_state(),
        }
        let stream = SslStream::new(ssl, MemoryTransport::default())?;
        let mut session = Self {
            stream,
            role,
            remote,
            state: DtlsState::Handshaking,
            keys: None,
            next_timeout: None,
            rto: INITIAL_RTO,
            give_up_at: None,
            mismatch,
        };
        if role == DtlsRole::Client {
            session.give_up_at = Some(now + HANDSHAKE_TIMEOUT);
            session.drive(now, false)?;
        }
        Ok(session)
    }

    /// Feed one received DTLS datagram (may hold several records). Errors are
    /// counted by the caller; a fatal one moves the state to
    /// [`DtlsState::Failed`] (see [`DtlsError`]'s variants).
    pub fn handle_datagram(&mut self, datagram: &[u8], now: Instant) -> Result<(), DtlsError> {
        if self.state == DtlsState::Failed {
            return Err(DtlsError::Closed);
        }
        if !looks_like_dtls(datagram) {
            return Err(DtlsError::Malformed);
        }
        let transport = self.stream.get_mut();
        if transport.incoming.len() >= MAX_INCOMING_QUEUE {
            return Err(DtlsError::QueueFull);
        }
        transport.incoming.push_back(datagram.to_vec());
        if self.state == DtlsState::Handshaking && self.give_up_at.is_none() {
            self.give_up_at = Some(now + HANDSHAKE_TIMEOUT);
        }
        self.drive(now, false)
    }

    /// Next datagram to send, written into `out`; returns its length, at most
    /// [`DTLS_MTU`]. `None` when nothing is queued. A datagram longer than
    /// `out` is dropped (give `out` at least [`DTLS_MTU`] bytes).
    pub fn poll_datagram(&mut self, out: &mut [u8]) -> Option<usize> {
        let datagram = self.stream.get_mut().outgoing.pop_front()?;
        let dst = out.get_mut(..datagram.len())?;
        dst.copy_from_slice(&datagram);
        Some(datagram.len())
    }

    /// When [`DtlsSession::handle_timeout`] should next be called; `None`
    /// when connected or failed, and for a server that has not yet heard from
    /// its peer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state != DtlsState::Handshaking {
            return None;
        }
        match (self.next_timeout, self.give_up_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Drives retransmission: at or after [`DtlsSession::poll_timeout`], lets
    /// OpenSSL resend its last flight, and fails the handshake after
    /// [`HANDSHAKE_TIMEOUT`]. Calling it early does nothing.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsError> {
        if self.state != DtlsState::Handshaking {
            return Ok(());
        }
        if self.give_up_at.is_some_and(|t| now >= t) {
            self.state = DtlsState::Failed;
            self.next_timeout = None;
            return Err(DtlsError::HandshakeTimeout);
        }
        if self.next_timeout.is_some_and(|t| now >= t) {
            return self.drive(now, true);
        }
        Ok(())
    }

    /// Ends the session: queues a close_notify alert (for
    /// [`DtlsSession::poll_datagram`]) if connected; the state becomes
    /// [`DtlsState::Failed`], which is terminal.
    pub fn close(&mut self) {
        if self.state == DtlsState::Connected {
            let _ = self.stream.shutdown();
        }
        self.state = DtlsState::Failed;
        self.next_timeout = None;
    }

    /// Where the session stands.
    pub fn state(&self) -> DtlsState {
        self.state
    }

    /// This session's role.
    pub fn role(&self) -> DtlsRole {
        self.role
    }

    /// The SRTP keys, once, after the handshake completed and the peer
    /// certificate matched the expected fingerprint.
    /// Never once the session has failed.
    pub fn take_keys(&mut self) -> Option<SrtpKeys> {
        if self.state != DtlsState::Connected {
            return None;
        }
        self.keys.take()
    }

    /// Lets OpenSSL consume queued datagrams and produce output, then updates
    /// the retransmission timer. `retransmit` is set when called from the timer.
    fn drive(&mut self, now: Instant, retransmit: bool) -> Result<(), DtlsError> {
        let writes_before = self.stream.get_ref().writes;
        let result = match self.state {
            DtlsState::Handshaking => self.step_handshake(),
            DtlsState::Connected => self.read_discard(),
            DtlsState::Failed => Err(DtlsError::Closed),
        };
        // Anything OpenSSL did not read (it reads until the queue is empty
        // unless it failed) is stale now.
        self.stream.get_mut().incoming.clear();
        if self.state != DtlsState::Handshaking {
            self.next_timeout = None;
            return result;
        }
        let wrote = self.stream.get_ref().writes != writes_before;
        if wrote {
            // OpenSSL (re)started its timer: 1 s for a new flight, doubled on
            // each retransmission.
            self.rto = if retransmit {
                (self.rto * 2).min(MAX_RTO)
            } else {
                INITIAL_RTO
            };
            self.next_timeout = Some(now + self.rto);
        } else if retransmit {
            self.next_timeout = Some(now + TIMER_RECHECK);
        }
        result
    }

    fn step_handshake(&mut self) -> Result<(), DtlsError> {
        match self.stream.do_handshake() {
            Ok(()) => {
                self.on_handshake_complete()?;
                self.read_discard()
            }
            Err(e) if e.code() == ErrorCode::WANT_READ || e.code() == ErrorCode::WANT_WRITE => {
                Ok(())
            }
            Err(_) if self.mismatch.load(Ordering::Relaxed) => {
                self.state = DtlsState::Failed;
                Err(DtlsError::FingerprintMismatch)
            }
            Err(e) => {
                self.state = DtlsState::Failed;
                Err(DtlsError::HandshakeFailed(e.to_string()))
            }
        }
    }

    fn on_handshake_complete(&mut self) -> Result<(), DtlsError> {
        let checked = self.check_peer().and_then(|()| {
            export_keys(self.stream.ssl(), self.role).map_err(|e| match e {
                DtlsError::Openssl(_) | DtlsError::NoSrtpProfile => e,
                _ => DtlsError::Openssl(e.to_string()),
            })
        });
        match checked {
            Ok(keys) => {
                self.keys = Some(keys);
                self.state = DtlsState::Connected;
                Ok(())
            }
            Err(e) => {
                self.state = DtlsState::Failed;
                // Tell the peer; the alert is queued for poll_datagram.
                let _ = self.stream.shutdown();
                Err(e)
            }
        }
    }

    fn check_peer(&self) -> Result<(), DtlsError> {
        let cert = self
            .stream
            .ssl()
            .peer_certificate()
            .ok_or(DtlsError::FingerprintMismatch)?;
        let actual = Fingerprint::of(&cert, &self.remote.algorithm)?;
        if actual.value != self.remote.value {
            return Err(DtlsError::FingerprintMismatch);
        }
        Ok(())
    }

    /// Reads and discards application data (SCTP), letting OpenSSL process
    /// handshake retransmissions and alerts.
    fn read_discard(&mut self) -> Result<(), DtlsError> {
        let mut scratch = [0u8; 2048];
        for _ in 0..MAX_READS_PER_DATAGRAM {
            match self.stream.ssl_read(&mut scratch) {
                Ok(_) => continue,
                Err(e) if e.code() == ErrorCode::WANT_READ || e.code() == ErrorCode::WANT_WRITE => {
                    return Ok(());
                }
                Err(e) if e.code() == ErrorCode::ZERO_RETURN => {
                    self.state = DtlsState::Failed;
                    return Err(DtlsError::Closed);
                }
                Err(e) => {
                    self.state = DtlsState::Failed;
                    return Err(DtlsError::HandshakeFailed(e.to_string()));
                }
            }
        }
        Ok(())
    }
}

/// Exports the SRTP master keys: client key | server key | client salt |
/// server salt (RFC 5764 §4.2).
fn export_keys(ssl: &SslRef, role: DtlsRole) -> Result<SrtpKeys, DtlsError> {
    let id = ssl
        .selected_srtp_profile()
        .map(|p| p.id())
        .ok_or(DtlsError::NoSrtpProfile)?;
    let profile = if id == SrtpProfileId::SRTP_AEAD_AES_128_GCM {
        Profile::AeadAes128Gcm
    } else if id == SrtpProfileId::SRTP_AES128_CM_SHA1_80 {
        Profile::Aes128CmHmacSha1_80
    } else {
        return Err(DtlsError::NoSrtpProfile);
    };
    let (k, s) = (profile.key_len(), profile.salt_len());
    let mut material = vec![0u8; 2 * (k + s)];
    ssl.export_keying_material(&mut material, SRTP_EXPORTER_LABEL, None)?;
    let (client_key, rest) = material.split_at(k);
    let (server_key, rest) = rest.split_at(k);
    let (client_salt, server_salt) = rest.split_at(s);
    let client = [client_key, client_salt].concat();
    let server = [server_key, server_salt].concat();
    let (local_master, remote_master) = match role {
        DtlsRole::Client => (client, server),
        DtlsRole::Server => (server, client),
    };
    Ok(SrtpKeys {
        profile,
        local_master,
        remote_master,
    })
}

/// Whether `datagram` is one or more complete DTLS 1.x records with known
/// content types (change_cipher_spec, alert, handshake, application_data).
fn looks_like_dtls(datagram: &[u8]) -> bool {
    if datagram.is_empty() || datagram.len() > MAX_INCOMING_DATAGRAM {
        return false;
    }
    let mut rest = datagram;
    while !rest.is_empty() {
        let Some(header) = rest.get(..RECORD_HEADER_LEN) else {
            return false;
        };
        if !(20..=23).contains(&header[0]) || header[1] != 0xfe {
            return false;
        }
        let len = usize::from(u16::from_be_bytes([header[11], header[12]]));
        let Some(next) = rest.get(RECORD_HEADER_LEN + len..) else {
            return false;
        };
        rest = next;
    }
    true
}

/// The in-memory "socket" OpenSSL reads from and writes to.
#[derive(Debug, Default)]
struct MemoryTransport {
    /// Received datagrams not yet read by OpenSSL.
    incoming: VecDeque<Vec<u8>>,
    /// Datagrams to send, each at most [`DTLS_MTU`] bytes.
    outgoing: VecDeque<Vec<u8>>,
    /// Number of `write` calls, to tell whether OpenSSL sent anything.
    writes: u64,
    /// Whether the last queued datagram may take more records: until OpenSSL
    /// flushes (the end of a flight).
    open: bool,
}

impl Read for MemoryTransport {
    /// One datagram per call; `WouldBlock` when none is queued. A datagram
    /// longer than `buf` is truncated, as `recv` would.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let datagram = self.incoming.pop_front().ok_or(io::ErrorKind::WouldBlock)?;
        let n = datagram.len().min(buf.len());
        buf[..n].copy_from_slice(&datagram[..n]);
        Ok(n)
    }
}

impl Write for MemoryTransport {
    /// Each call is one or more whole records: packed into the last queued
    /// datagram if no flush came in between and it still fits within
    /// [`DTLS_MTU`], else a new one.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writes += 1;
        let queued = self.outgoing.len();
        let open = std::mem::replace(&mut self.open, true);
        match self.outgoing.back_mut() {
            Some(last) if open && last.len() + buf.len() <= DTLS_MTU => {
                last.extend_from_slice(buf);
            }
            _ if queued >= MAX_OUTGOING_QUEUE => {}
            _ => self.outgoing.push_back(buf.to_vec()),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.open = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_round_trip() {
        let text = "sha-256 AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:\
                    AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89";
        let fp = Fingerprint::parse(text).expect("valid fingerprint");
        assert_eq!(fp.algorithm, "sha-256");
        assert_eq!(fp.value.len(), 32);
        assert_eq!(fp.value[..3], [0xab, 0xcd, 0xef]);
        assert_eq!(fp.to_string(), text);
        // Case-insensitive input, upper-case output.
        let lower = Fingerprint::parse(&text.to_ascii_lowercase().replace("sha-256", "SHA-256"))
            .expect("lower-case hex");
        assert_eq!(lower, fp);
        assert_eq!(lower.to_string(), text);
    }

    #[test]
    fn fingerprint_lengths_per_algorithm() {
        for (alg, len) in [
            ("sha-1", 20),
            ("sha-224", 28),
            ("sha-256", 32),
            ("sha-384", 48),
            ("sha-512", 64),
        ] {
            let hex = vec!["0F"; len].join(":");
            let fp = Fingerprint::parse(&format!("{alg} {hex}")).expect(alg);
            assert_eq!(fp.value, vec![0x0f; len]);
            assert_eq!(Fingerprint::parse(&fp.to_string()), Ok(fp.clone()));
            // One byte short or long is refused.
            let short = vec!["0F"; len - 1].join(":");
            assert_eq!(
                Fingerprint::parse(&format!("{alg} {short}")),
                Err(DtlsError::BadFingerprint)
            );
            let long = vec!["0F"; len + 1].join(":");
            assert_eq!(
                Fingerprint::parse(&format!("{alg} {long}")),
                Err(DtlsError::BadFingerprint)
            );
        }
    }

    #[test]
    fn fingerprint_rejects_bad_input() {
        let good = vec!["AA"; 32].join(":");
        for bad in [
            String::new(),
            "sha-256".to_owned(),
            good.clone(),
            format!("md5 {}", vec!["AA"; 16].join(":")),
            format!("sha-256 {good} extra"),
            format!("sha-256 {}", good.replace("AA:AA", "AAAA")),
            format!("sha-256 {}", good.replacen("AA", "A", 1)),
            format!("sha-256 {}", good.replacen("AA", "GG", 1)),
            format!("sha-256 {}", good.replacen("AA", "+A", 1)),
            format!("sha-256 {good}:"),
            format!("sha-256 :{good}"),
            format!("sha-256 {}", good.replacen("AA", "é", 1)),
        ] {
            assert_eq!(
                Fingerprint::parse(&bad),
                Err(DtlsError::BadFingerprint),
                "{bad:?}"
            );
        }
        // Extra whitespace around the two fields is fine (SDP allows it).
        assert!(Fingerprint::parse(&format!("  sha-256\t {good} ")).is_ok());
    }

    #[test]
    fn cert_fingerprint_is_sha256_of_der() {
        let cert = DtlsCert::generate().expect("generate");
        let fp = cert.fingerprint();
        assert_eq!(fp.algorithm, "sha-256");
        assert_eq!(fp.value.len(), 32);
        // Two certificates differ (fresh key, random serial).
        let other = DtlsCert::generate().expect("generate");
        assert_ne!(other.fingerprint(), fp);
        assert!(format!("{cert:?}").contains(&fp.to_string()));
    }

    #[test]
    fn session_rejects_unusable_remote_fingerprint() {
        let cert = DtlsCert::generate().expect("generate");
        let now = Instant::now();
        for remote in [
            Fingerprint {
                algorithm: "md5".into(),
                value: vec![0; 16],
            },
            Fingerprint {
                algorithm: "sha-256".into(),
                value: vec![0; 20],
            },
        ] {
            let err = DtlsSession::new(&cert, DtlsRole::Server, remote, now).unwrap_err();
            assert_eq!(err.as_str(), "bad_fingerprint");
        }
    }

    #[test]
    fn record_walk() {
        let record = |ty: u8, len: u16| {
            let mut r = vec![ty, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1];
            r.extend_from_slice(&len.to_be_bytes());
            r.extend(std::iter::repeat_n(0u8, usize::from(len)));
            r
        };
        assert!(looks_like_dtls(&record(22, 10)));
        assert!(looks_like_dtls(&[record(20, 1), record(22, 40)].concat()));
        assert!(!looks_like_dtls(&[]));
        assert!(!looks_like_dtls(&record(22, 10)[..20]));
        assert!(!looks_like_dtls(&[record(22, 10), vec![22, 0xfe]].concat()));
        assert!(!looks_like_dtls(&record(24, 10)));
        assert!(!looks_like_dtls(&record(19, 10)));
        let mut tls = record(22, 10);
        tls[1] = 0x03;
        assert!(!looks_like_dtls(&tls));
        assert!(!looks_like_dtls(&record(23, 2100)));
    }

    #[test]
    fn client_hello_is_queued_at_creation() {
        let cert = DtlsCert::generate().expect("generate");
        let now = Instant::now();
        let mut client = DtlsSession::new(&cert, DtlsRole::Client, cert.fingerprint().clone(), now)
            .expect("session");
        let mut buf = [0u8; DTLS_MTU];
        let n = client.poll_datagram(&mut buf).expect("ClientHello");
        assert!(looks_like_dtls(&buf[..n]));
        assert_eq!(buf[0], 22, "handshake record");
        assert_eq!(buf[13], 1, "client_hello");
        assert_eq!(client.poll_timeout(), Some(now + INITIAL_RTO));
        assert_eq!(client.state(), DtlsState::Handshaking);
    }

    #[test]
    fn early_timer_asks_again_later_and_gives_up_after_timeout() {
        let cert = DtlsCert::generate().expect("generate");
        let start = Instant::now();
        let mut client =
            DtlsSession::new(&cert, DtlsRole::Client, cert.fingerprint().clone(), start)
                .expect("session");
        let mut buf = [0u8; DTLS_MTU];
        assert!(client.poll_datagram(&mut buf).is_some());
        // Before the deadline: nothing happens.
        client
            .handle_timeout(start + Duration::from_millis(500))
            .expect("early call is a no-op");
        assert_eq!(client.poll_timeout(), Some(start + INITIAL_RTO));
        // Our (virtual) clock is past the deadline but OpenSSL's wall clock is
        // not: nothing is sent and the session asks to be woken again soon.
        let virtual_now = start + Duration::from_secs(2);
        client.handle_timeout(virtual_now).expect("timer");
        assert!(client.poll_datagram(&mut buf).is_none());
        assert_eq!(client.poll_timeout(), Some(virtual_now + TIMER_RECHECK));
        // Past the handshake timeout: failed.
        let err = client
            .handle_timeout(start + HANDSHAKE_TIMEOUT)
            .unwrap_err();
        assert_eq!(err.as_str(), "handshake_timeout");
        assert_eq!(client.state(), DtlsState::Failed);
        assert_eq!(client.poll_timeout(), None);
        assert_eq!(
            client.handle_datagram(&buf[..20], virtual_now),
            Err(DtlsError::Closed)
        );
    }

    /// Runs a handshake between fresh sessions; returns (server, client).
    fn handshake(
        server_cert: &DtlsCert,
        client_cert: &DtlsCert,
        client_expects: Fingerprint,
    ) -> (DtlsSession, DtlsSession) {
        let now = Instant::now();
        let server_expects = client_cert.fingerprint().clone();
        let mut server =
            DtlsSession::new(server_cert, DtlsRole::Server, server_expects, now).expect("server");
        let mut client =
            DtlsSession::new(client_cert, DtlsRole::Client, client_expects, now).expect("client");
        let mut buf = [0u8; DTLS_MTU];
        for _ in 0..20 {
            while let Some(n) = client.poll_datagram(&mut buf) {
                let _ = server.handle_datagram(&buf[..n], now);
            }
            while let Some(n) = server.poll_datagram(&mut buf) {
                let _ = client.handle_datagram(&buf[..n], now);
            }
        }
        (server, client)
    }

    #[test]
    fn remote_fingerprint_is_checked_with_its_own_hash() {
        let (server_cert, client_cert) = (
            DtlsCert::generate().expect("generate"),
            DtlsCert::generate().expect("generate"),
        );
        let der_cert = server_cert
            .inner
            .context
            .certificate()
            .expect("context has a certificate")
            .to_owned();
        let sha1 = Fingerprint::of(&der_cert, "sha-1").expect("sha-1");
        assert_eq!(sha1.value.len(), 20);
        let sha512 = Fingerprint::of(&der_cert, "sha-512").expect("sha-512");
        assert_eq!(
            Fingerprint::of(&der_cert, "sha-256").as_ref(),
            Ok(server_cert.fingerprint())
        );

        for good in [sha1.clone(), sha512] {
            let (server, mut client) = handshake(&server_cert, &client_cert, good);
            assert_eq!(server.state(), DtlsState::Connected);
            assert_eq!(client.state(), DtlsState::Connected);
            assert!(client.take_keys().is_some());
        }
        let mut wrong = sha1;
        wrong.value[0] ^= 0x80;
        let (_, mut client) = handshake(&server_cert, &client_cert, wrong);
        assert_eq!(client.state(), DtlsState::Failed);
        assert!(client.take_keys().is_none());
    }

    #[test]
    fn session_is_send_and_cert_is_send_sync() {
        fn send<T: Send>() {}
        fn send_sync<T: Send + Sync + Clone>() {}
        send::<DtlsSession>();
        send_sync::<DtlsCert>();
    }
}
