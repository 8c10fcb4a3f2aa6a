//! Bearer tokens for the control API: JSON Web Tokens signed with HS256
//! (RFC 7519, RFC 7515, RFC 7518 §3.2), minted and verified here.
//!
//! # Tokens
//! A token is `base64url(header) . base64url(claims) . base64url(signature)`
//! without padding, the header `{"alg":"HS256","typ":"JWT"}`, the signature
//! HMAC-SHA-256 with the node's API secret over the first two parts. The
//! claims ([`Claims`]):
//!
//! ```json
//! { "room": "lobby", "grants": ["publish", "subscribe"], "exp": 1767225600, "sub": "alice" }
//! ```
//!
//! * `room`: the room the token is for, or `"*"` for every room and the
//!   node-wide routes.
//! * `grants`: any of `publish`, `subscribe`, `admin` ([`Grant`]).
//! * `exp` (required) and `nbf` (optional): seconds since the Unix epoch,
//!   honoured with [`LEEWAY_SECS`] of clock skew.
//! * `sub` (optional): who the token was minted for; only logged.
//!
//! Other claims are ignored. Any other `alg` (including `none`) is refused
//! before the signature is looked at; the signature is compared in constant
//! time (`ring::hmac::verify`).
//!
//! # Secrets
//! The secret must be at least [`MIN_SECRET_BYTES`] long (RFC 7518 §3.2).
//! [`DEV_API_SECRET`] is the fixed, public development secret of the
//! embedded defaults: the node refuses to serve a non-loopback address with
//! it ([`crate::Config::validate`]).
//!
//! # What a request needs
//! [`Claims::authorize`] checks a [`Need`] against a room (or the node);
//! the API decides which [`Need`] each route has ([`crate::api`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::{Deserialize, Serialize};

/// The development API secret used when none is configured. It is public
/// (it is in the source and the docs), so a node using it only serves
/// loopback addresses; `sfu-loadgen` uses it by default too.
pub const DEV_API_SECRET: &str = "sfu-development-secret-not-for-production";

/// Shortest accepted API secret: the HS256 output size (RFC 7518 §3.2).
pub const MIN_SECRET_BYTES: usize = 32;

/// Clock skew allowed on `exp` and `nbf`, seconds.
pub const LEEWAY_SECS: u64 = 30;

/// Longest token accepted, characters; longer ones are refused unread.
pub const MAX_TOKEN_LEN: usize = 4096;

/// The room claim that covers every room and the node-wide routes.
pub const ANY_ROOM: &str = "*";

/// The header every minted token carries.
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// What a token allows in its room.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Grant {
    /// Create endpoints that publish media.
    Publish,
    /// Create endpoints that receive media and change their subscriptions.
    Subscribe,
    /// Everything, including creating and deleting rooms; with room `"*"`
    /// also the node-wide routes (`/v1/rooms` list, `/v1/load`, `/metrics`).
    Admin,
    /// Operator endpoints such as relays between nodes and load
    /// generators: may set an endpoint's `remote` address, which client
    /// endpoints may not (they learn it from authenticated packets or ICE).
    /// Grants nothing else by itself.
    Trunk,
}

impl Grant {
    /// The name used in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Subscribe => "subscribe",
            Self::Admin => "admin",
            Self::Trunk => "trunk",
        }
    }
}

/// The router's participant id for a token identity (`sub`): 64-bit
/// FNV-1a of its UTF-8 bytes, the same on every node and run. A
/// participant's endpoints share it: their audio is one speaker, and
/// last-N slots never show them their own media.
pub fn participant_id(identity: &str) -> u64 {
    identity.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The claims of a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The room, or [`ANY_ROOM`].
    pub room: String,
    /// What the bearer may do there.
    pub grants: Vec<Grant>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not valid before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Who the token was minted for: the participant's identity. Endpoints
    /// created with it carry [`participant_id`] of it (speaker detection,
    /// last-N slots without one's own media); without it each endpoint is a
    /// participant of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
}

impl Claims {
    /// The participant id of the token's identity, if it names one.
    pub fn participant(&self) -> Option<u64> {
        self.sub
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(participant_id)
    }
}

/// What a request needs from a token, besides its room. [`Grant::Admin`]
/// satisfies every need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The admin grant.
    Admin,
    /// Every one of these grants.
    All(&'static [Grant]),
    /// At least one grant, whichever.
    Any,
    /// At least one of these grants.
    OneOf(&'static [Grant]),
}

/// Why a request was not authenticated (401) or not authorized (403).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization: Bearer` header (401).
    #[error("missing bearer token")]
    Missing,
    /// Not three base64url parts of JSON with the expected fields, or too long (401).
    #[error("malformed token")]
    Malformed,
    /// The header names another algorithm than HS256 (401).
    #[error("unsupported token algorithm (only HS256)")]
    Algorithm,
    /// The signature does not match (401).
    #[error("bad token signature")]
    Signature,
    /// `exp` has passed (401).
    #[error("token expired")]
    Expired,
    /// `nbf` has not come yet (401).
    #[error("token not yet valid")]
    NotYetValid,
    /// The token is for another room, or the route is node-wide (403).
    #[error("token is not valid for this room")]
    WrongRoom,
    /// The token lacks a grant the request needs (403).
    #[error("token lacks the grant this request needs")]
    MissingGrant,
    /// The WHEP session belongs to another token identity (`sub`) (403).
    #[error("the session belongs to another identity")]
    WrongIdentity,
}

impl AuthError {
    /// Stable label for metrics (`sfu_auth_failures_total{reason=...}`) and
    /// the `code` of error answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing_token",
            Self::Malformed => "malformed_token",
            Self::Algorithm => "bad_algorithm",
            Self::Signature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongRoom => "wrong_room",
            Self::MissingGrant => "missing_grant",
            Self::WrongIdentity => "wrong_identity",
        }
    }

    /// Every reason, in label order of the metric.
    pub const ALL: [AuthError; 9] = [
        Self::Missing,
        Self::Malformed,
        Self::Algorithm,
        Self::Signature,
        Self::Expired,
        Self::NotYetValid,
        Self::WrongRoom,
        Self::MissingGrant,
        Self::WrongIdentity,
    ];

    /// True for 403 (authenticated but not allowed), false for 401.
    pub fn is_forbidden(self) -> bool {
        matches!(
            self,
            Self::WrongRoom | Self::MissingGrant | Self::WrongIdentity
        )
    }
}

impl Claims {
    /// Claims for `room` with `grants`, valid for `ttl_secs` from `now`.
    pub fn new(room: impl Into<String>, grants: &[Grant], now: u64, ttl_secs: u64) -> Self {
        Self {
            room: room.into(),
            grants: grants.to_vec(),
            exp: now.saturating_add(ttl_secs),
            nbf: None,
            sub: None,
        }
    }

    /// Checks that the token allows `need` in `room` (`None`: a node-wide
    /// route, which only [`ANY_ROOM`] tokens reach).
    pub fn authorize(&self, room: Option<&str>, need: Need) -> Result<(), AuthError> {
        let room_ok = self.room == ANY_ROOM || room.is_some_and(|r| r == self.room);
        if !room_ok {
            return Err(AuthError::WrongRoom);
        }
        if self.grants.contains(&Grant::Admin) {
            return Ok(());
        }
        let granted = match need {
            Need::Admin => false,
            Need::All(grants) => grants.iter().all(|g| self.grants.contains(g)),
            Need::Any => !self.grants.is_empty(),
            Need::OneOf(grants) => grants.iter().any(|g| self.grants.contains(g)),
        };
        if granted {
            Ok(())
        } else {
            Err(AuthError::MissingGrant)
        }
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

/// Verifies tokens signed with one secret.
pub struct Verifier {
    key: hmac::Key,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier { .. }")
    }
}

impl Verifier {
    /// A verifier of tokens signed with `secret`.
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// Checks a token's form, algorithm, signature and validity period at
    /// `now` (seconds since the Unix epoch) and returns its claims.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        let header_part = header;
        let header: Header = decode_json(header_part)?;
        if header.alg != "HS256" {
            return Err(AuthError::Algorithm);
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| AuthError::Malformed)?;
        let signed = &token.as_bytes()[..header_part.len() + 1 + payload.len()];
        hmac::verify(&self.key, signed, &signature).map_err(|_| AuthError::Signature)?;
        let claims: Claims = decode_json(payload)?;
        if now > claims.exp.saturating_add(LEEWAY_SECS) {
            return Err(AuthError::Expired);
        }
        if claims
            .nbf
            .is_some_and(|nbf| now.saturating_add(LEEWAY_SECS) < nbf)
        {
            return Err(AuthError::NotYetValid);
        }
        Ok(claims)
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)
}

/// Mints an HS256 token with `claims`, signed with `secret`.
pub fn mint(secret: &[u8], claims: &Claims) -> String {
    // Serialising plain strings, integers and enums cannot fail.
    let payload = serde_json::to_vec(claims).unwrap_or_default();
    let mut token = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(HEADER),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), token.as_bytes());
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(tag.as_ref()));
    token
}

/// The node's token checker: a [`Verifier`] and the failure counters of
/// `sfu_auth_failures_total`.
#[derive(Debug)]
pub struct Authenticator {
    verifier: Verifier,
    failures: [AtomicU64; AuthError::ALL.len()],
}

impl Authenticator {
    /// Checks tokens signed with `secret`.
    pub fn new(secret: &[u8]) -> Self {
        Self {
            verifier: Verifier::new(secret),
            failures: Default::default(),
        }
    }

    /// The claims of the bearer token in an `Authorization` header value
    /// (`None`: no header), checked at `now`. Does not count failures.
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        now: u64,
    ) -> Result<Claims, AuthError> {
        let header = authorization.ok_or(AuthError::Missing)?;
        let header = std::str::from_utf8(header).map_err(|_| AuthError::Malformed)?;
        let token = bearer(header).ok_or(AuthError::Missing)?;
        self.verifier.verify(token, now)
    }

    /// Counts one refused request.
    pub fn count_failure(&self, reason: AuthError) {
        if let Some(i) = AuthError::ALL.iter().position(|&r| r == reason) {
            self.failures[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Refused requests by reason, every reason listed.
    pub fn failures(&self) -> Vec<(AuthError, u64)> {
        AuthError::ALL
            .iter()
            .zip(&self.failures)
            .map(|(&r, n)| (r, n.load(Ordering::Relaxed)))
            .collect()
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The token of an `Authorization` header value: `Bearer <token>` (scheme
/// case-insensitive, RFC 6750 §2.1).
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_800_000_000;

    fn claims() -> Claims {
        Claims {
            room: "lobby".into(),
            grants: vec![Grant::Publish, Grant::Subscribe],
            exp: NOW + 60,
            nbf: None,
            sub: Some("alice".into()),
        }
    }

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    /// A token with any header and payload, signed correctly with SECRET.
    fn signed(header: &str, payload: &str) -> String {
        let unsigned = format!("{}.{}", b64(header), b64(payload));
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, SECRET),
            unsigned.as_bytes(),
        );
        format!("{unsigned}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// RFC 7515 Appendix A.1: the HS256 example verifies with its key (the
    /// claims there have no `room`, so it verifies and then fails to parse
    /// as our claims: a signature check independent of our minting).
    #[test]
    fn rfc7515_example_signature_verifies() {
        let key = URL_SAFE_NO_PAD
            .decode("AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow")
            .expect("RFC key is base64url");
        let token = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        // Correct key: the signature passes, the claims do not fit.
        assert_eq!(
            Verifier::new(&key).verify(token, 0),
            Err(AuthError::Malformed)
        );
        // Any other key: the signature fails.
        assert_eq!(
            Verifier::new(SECRET).verify(token, 0),
            Err(AuthError::Signature)
        );
    }

    #[test]
    fn minted_tokens_verify_and_round_trip() {
        let token = mint(SECRET, &claims());
        assert_eq!(token.split('.').count(), 3);
        assert!(!token.contains('='), "no padding");
        let header = URL_SAFE_NO_PAD
            .decode(token.split('.').next().expect("3 parts"))
            .expect("base64url");
        assert_eq!(header, HEADER.as_bytes());
        assert_eq!(Verifier::new(SECRET).verify(&token, NOW), Ok(claims()));
    }

    #[test]
    fn bad_tokens_are_refused_with_their_reason() {
        let v = Verifier::new(SECRET);
        let good = mint(SECRET, &claims());
        let payload = serde_json::to_string(&claims()).expect("serialises");
        let mut flipped = good.clone().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).expect("ASCII");
        let (hp, _) = good.rsplit_once('.').expect("3 parts");
        let cases: Vec<(String, AuthError)> = vec![
            (String::new(), AuthError::Malformed),
            ("garbage".into(), AuthError::Malformed),
            ("a.b".into(), AuthError::Malformed),
            (format!("{good}.x"), AuthError::Malformed),
            ("!!.!!.!!".into(), AuthError::Malformed),
            ("x".repeat(MAX_TOKEN_LEN + 1), AuthError::Malformed),
            (format!("{hp}."), AuthError::Signature),
            (format!("{hp}.!!"), AuthError::Malformed),
            (flipped, AuthError::Signature),
            (
                mint(b"another secret of at least 32 bytes", &claims()),
                AuthError::Signature,
            ),
            (
                format!(
                    "{}.{}.",
                    b64(r#"{"alg":"none","typ":"JWT"}"#),
                    b64(&payload)
                ),
                AuthError::Algorithm,
            ),
            (signed(r#"{"alg":"none"}"#, &payload), AuthError::Algorithm),
            (signed(r#"{"alg":"HS512"}"#, &payload), AuthError::Algorithm),
            (signed(r#"{"alg":"hs256"}"#, &payload), AuthError::Algorithm),
            (signed(r#"{"typ":"JWT"}"#, &payload), AuthError::Malformed),
            (signed("not json", &payload), AuthError::Malformed),
            (signed(r#"{"alg":"HS256"}"#, "[]"), AuthError::Malformed),
            (
                signed(r#"{"alg":"HS256"}"#, r#"{"room":"r","grants":[],"exp":-1}"#),
                AuthError::Malformed,
            ),
            (
                signed(r#"{"alg":"HS256"}"#, r#"{"room":"r","grants":[]}"#),
                AuthError::Malformed,
            ),
            (
                signed(
                    r#"{"alg":"HS256"}"#,
                    r#"{"room":"r","grants":["root"],"exp":9999999999}"#,
                ),
                AuthError::Malformed,
            ),
        ];
        for (token, want) in cases {
            assert_eq!(v.verify(&token, NOW), Err(want), "{token:?}");
        }
        // A valid header and payload from other code verifies (extra claims ignored).
        let other = signed(
            r#"{"typ":"JWT","alg":"HS256","kid":"1"}"#,
            &format!(r#"{{"room":"r","grants":["admin"],"exp":{},"iat":1}}"#, NOW),
        );
        assert!(v.verify(&other, NOW).is_ok());
    }

    #[test]
    fn validity_period_has_leeway() {
        let v = Verifier::new(SECRET);
        let token = mint(SECRET, &claims());
        assert!(v.verify(&token, NOW + 60 + LEEWAY_SECS).is_ok());
        assert_eq!(
            v.verify(&token, NOW + 61 + LEEWAY_SECS),
            Err(AuthError::Expired)
        );
        let later = Claims {
            nbf: Some(NOW + 100),
            exp: NOW + 1000,
            ..claims()
        };
        let token = mint(SECRET, &later);
        assert_eq!(
            v.verify(&token, NOW + 69 - LEEWAY_SECS),
            Err(AuthError::NotYetValid)
        );
        assert!(v.verify(&token, NOW + 100 - LEEWAY_SECS).is_ok());
        let forever = Claims {
            exp: u64::MAX,
            ..claims()
        };
        assert!(v.verify(&mint(SECRET, &forever), u64::MAX).is_ok());
    }

    #[test]
    fn authorization_by_room_and_grant() {
        use Grant::{Admin, Publish, Subscribe};
        let c = |room: &str, grants: &[Grant]| Claims::new(room, grants, NOW, 60);
        let ok = Ok(());
        let room = Err(AuthError::WrongRoom);
        let grant = Err(AuthError::MissingGrant);
        type Case = (Claims, Option<&'static str>, Need, Result<(), AuthError>);
        let cases: Vec<Case> = vec![
            (c("a", &[Publish]), Some("a"), Need::All(&[Publish]), ok),
            (c("a", &[Publish]), Some("b"), Need::All(&[Publish]), room),
            (c("a", &[Admin]), Some("b"), Need::Any, room),
            (c("a", &[Admin]), None, Need::Admin, room),
            (c("a", &[Admin]), Some("a"), Need::Admin, ok),
            (
                c("a", &[Admin]),
                Some("a"),
                Need::All(&[Publish, Subscribe]),
                ok,
            ),
            (
                c("a", &[Subscribe]),
                Some("a"),
                Need::All(&[Publish]),
                grant,
            ),
            (
                c("a", &[Subscribe]),
                Some("a"),
                Need::All(&[Publish, Subscribe]),
                grant,
            ),
            (
                c("a", &[Subscribe, Publish]),
                Some("a"),
                Need::All(&[Publish, Subscribe]),
                ok,
            ),
            (c("a", &[Subscribe]), Some("a"), Need::Any, ok),
            (c("a", &[]), Some("a"), Need::Any, grant),
            (c("a", &[Publish, Subscribe]), Some("a"), Need::Admin, grant),
            (c("*", &[Publish]), Some("z"), Need::All(&[Publish]), ok),
            (c("*", &[Publish]), None, Need::Admin, grant),
            (c("*", &[Admin]), None, Need::Admin, ok),
            (c("*", &[Admin]), Some("z"), Need::Admin, ok),
        ];
        for (claims, room, need, want) in cases {
            assert_eq!(
                claims.authorize(room, need),
                want,
                "{claims:?} {room:?} {need:?}"
            );
        }
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer(""), None);
    }
}
