//! Rate limit on session creation: a token bucket per client address and
//! one per bearer token.
//!
//! Every request that creates state a client can keep (`POST /whip/{room}`,
//! `POST /whep/{room}`, `POST /v1/rooms/{room}/endpoints` and
//! `POST /v1/rooms`) takes one token from the bucket of its client address
//! and one from the bucket of its bearer token; when either is empty it is
//! answered 429 with `Retry-After` and `{"code": "rate_limited"}`
//! ([`ApiError::RateLimited`]) and counted in
//! `sfu_http_rate_limited_total{key}`. The check runs after the token was
//! verified, so only valid tokens get a bucket; a token is keyed by the
//! SHA-256 of its text (the tokens carry no `jti`). An IPv6 client is
//! keyed by its /64, which is what one subscriber usually gets.
//!
//! Each table holds at most [`MAX_TRACKED`] keys; a new key evicts the one
//! used least recently. A bucket refills completely within
//! `burst / rate` seconds, so evicting a key that was idle that long
//! forgets nothing; only an attacker cycling through more than
//! [`MAX_TRACKED`] addresses or valid tokens within that time can reset
//! someone's bucket, and then only to the burst.
//!
//! The limiter is sans-IO: [`SessionLimiter::check`] takes the time as an
//! argument, so the unit tests own the clock.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::{Claims, Grant};
use crate::config::HttpConfig;
use crate::error::ApiError;

/// Keys each table of a [`SessionLimiter`] tracks at most.
pub const MAX_TRACKED: usize = 16_384;

/// The route templates of `POST` requests that create a session or a room.
pub const SESSION_ROUTES: [&str; 4] = [
    "/whip/{room}",
    "/whep/{room}",
    "/v1/rooms/{room}/endpoints",
    "/v1/rooms",
];

/// What a request was limited by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKey {
    /// The client address (IPv4, or the /64 of an IPv6 address).
    Ip,
    /// The bearer token.
    Token,
}

impl LimitKey {
    /// The label value in `sfu_http_rate_limited_total{key}`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ip => "ip",
            Self::Token => "token",
        }
    }
}

/// Rate and burst of one kind of bucket; a rate of 0 switches it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_second: u32,
    /// Tokens a full bucket holds.
    pub burst: u32,
}

/// The per-address and per-token buckets of session creation.
#[derive(Debug)]
pub struct SessionLimiter {
    ip_rate: Rate,
    token_rate: Rate,
    tables: Mutex<Tables>,
    limited_ip: AtomicU64,
    limited_token: AtomicU64,
}

#[derive(Debug)]
struct Tables {
    ip: Buckets<IpKey>,
    token: Buckets<[u8; 16]>,
}

/// An IPv4 address, or the first 64 bits of an IPv6 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum IpKey {
    V4(u32),
    V6(u64),
}

impl IpKey {
    fn new(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::V4(u32::from(v4)),
            IpAddr::V6(v6) => Self::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

impl SessionLimiter {
    /// A limiter with the rates of `config`.
    pub fn new(config: &HttpConfig) -> Self {
        Self::with_rates(
            Rate {
                per_second: config.session_rate_per_ip,
                burst: config.session_burst_per_ip,
            },
            Rate {
                per_second: config.session_rate_per_token,
                burst: config.session_burst_per_token,
            },
            MAX_TRACKED,
        )
    }

    /// A limiter with these rates, tracking at most `capacity` keys per table.
    pub fn with_rates(ip_rate: Rate, token_rate: Rate, capacity: usize) -> Self {
        Self {
            ip_rate,
            token_rate,
            tables: Mutex::new(Tables {
                ip: Buckets::new(capacity),
                token: Buckets::new(capacity),
            }),
            limited_ip: AtomicU64::new(0),
            limited_token: AtomicU64::new(0),
        }
    }

    /// Takes a token from the bucket of `ip` and of `token` (either may be
    /// absent) at `now`, or neither if one is empty: then returns what
    /// limited the request and the whole seconds until it may retry.
    pub fn check(
        &self,
        now: Instant,
        ip: Option<IpAddr>,
        token: Option<&[u8]>,
    ) -> Result<(), (LimitKey, u64)> {
        let ip = ip.filter(|_| self.ip_rate.per_second > 0).map(IpKey::new);
        let token = token
            .filter(|_| self.token_rate.per_second > 0)
            .map(token_key);
        let mut tables = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        let Tables {
            ip: ip_table,
            token: token_table,
        } = &mut *tables;
        let ip_bucket = ip.map(|k| ip_table.bucket(k, now, self.ip_rate));
        let token_bucket = token.map(|k| token_table.bucket(k, now, self.token_rate));
        if let Some(wait) = ip_bucket.as_ref().and_then(|b| b.wait(self.ip_rate)) {
            self.limited_ip.fetch_add(1, Ordering::Relaxed);
            return Err((LimitKey::Ip, wait));
        }
        if let Some(wait) = token_bucket.as_ref().and_then(|b| b.wait(self.token_rate)) {
            self.limited_token.fetch_add(1, Ordering::Relaxed);
            return Err((LimitKey::Token, wait));
        }
        for bucket in [ip_bucket, token_bucket].into_iter().flatten() {
            bucket.tokens -= 1.0;
        }
        Ok(())
    }

    /// Requests refused so far, by what limited them.
    pub fn limited(&self) -> [(LimitKey, u64); 2] {
        [
            (LimitKey::Ip, self.limited_ip.load(Ordering::Relaxed)),
            (LimitKey::Token, self.limited_token.load(Ordering::Relaxed)),
        ]
    }

    /// Keys tracked now, by kind.
    pub fn tracked(&self) -> [(LimitKey, usize); 2] {
        let tables = self.tables.lock().unwrap_or_else(PoisonError::into_inner);
        [
            (LimitKey::Ip, tables.ip.map.len()),
            (LimitKey::Token, tables.token.map.len()),
        ]
    }
}

/// The first 16 bytes of the token's SHA-256.
fn token_key(token: &[u8]) -> [u8; 16] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token);
    let mut key = [0; 16];
    key.copy_from_slice(&digest.as_ref()[..16]);
    key
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// Position in [`Buckets::order`].
    stamp: u64,
}

impl Bucket {
    /// Whole seconds until a token is available; `None` if one is.
    fn wait(&self, rate: Rate) -> Option<u64> {
        if self.tokens >= 1.0 {
            return None;
        }
        let seconds = (1.0 - self.tokens) / f64::from(rate.per_second);
        Some((seconds.ceil() as u64).max(1))
    }
}

/// Buckets by key, at most `capacity`, evicting the least recently used.
#[derive(Debug)]
struct Buckets<K> {
    map: HashMap<K, Bucket>,
    /// Use stamp → key, oldest first.
    order: BTreeMap<u64, K>,
    next_stamp: u64,
    capacity: usize,
}

impl<K: Copy + Eq + Hash> Buckets<K> {
    fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: BTreeMap::new(),
            next_stamp: 0,
            capacity: capacity.max(1),
        }
    }

    /// The bucket of `key`, refilled up to `now` and marked as used last;
    /// a new key gets a full bucket, evicting the least recently used key
    /// if the table is full.
    fn bucket(&mut self, key: K, now: Instant, rate: Rate) -> &mut Bucket {
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        if !self.map.contains_key(&key)
            && self.map.len() >= self.capacity
            && let Some((_, oldest)) = self.order.pop_first()
        {
            self.map.remove(&oldest);
        }
        let burst = f64::from(rate.burst);
        let bucket = self.map.entry(key).or_insert(Bucket {
            tokens: burst,
            at: now,
            stamp,
        });
        self.order.remove(&bucket.stamp);
        self.order.insert(stamp, key);
        bucket.stamp = stamp;
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * f64::from(rate.per_second)).min(burst);
        bucket.at = now;
        bucket
    }
}

/// Middleware on the authenticated routes: limits the `POST`s of
/// [`SESSION_ROUTES`] by client address ([`ConnectInfo`], set by
/// [`crate::http`]) and bearer token. Tokens with an operator grant
/// (`admin`, `trunk`) are not limited, nor are requests another node of the
/// cluster passed on ([`crate::cluster::ForwardedVia`]: that node limited
/// them by the client's address).
pub async fn limit_sessions(
    State(limiter): State<Arc<SessionLimiter>>,
    req: Request,
    next: Next,
) -> Response {
    let creates = req.method() == Method::POST
        && req
            .extensions()
            .get::<MatchedPath>()
            .is_some_and(|p| SESSION_ROUTES.contains(&p.as_str()));
    // Operators (admin, trunk: the signaling service, relays, load
    // generators) create sessions for many clients from one address with
    // one token; the limit is for client tokens.
    let operator = req.extensions().get::<Claims>().is_some_and(|c| {
        c.grants
            .iter()
            .any(|g| matches!(g, Grant::Admin | Grant::Trunk))
    });
    let forwarded = req
        .extensions()
        .get::<crate::cluster::ForwardedVia>()
        .is_some();
    if !creates || operator || forwarded {
        return next.run(req).await;
    }
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    match limiter.check(Instant::now(), ip, token) {
        Ok(()) => next.run(req).await,
        Err((key, retry_after)) => ApiError::RateLimited {
            key: key.as_str(),
            retry_after,
        }
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const RATE: Rate = Rate {
        per_second: 2,
        burst: 4,
    };

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().expect("literal address"))
    }

    #[test]
    fn burst_then_refill_at_the_rate() {
        let limiter = SessionLimiter::with_rates(RATE, RATE, 8);
        let t0 = Instant::now();
        for _ in 0..4 {
            assert_eq!(limiter.check(t0, ip("192.0.2.1"), None), Ok(()));
        }
        assert_eq!(
            limiter.check(t0, ip("192.0.2.1"), None),
            Err((LimitKey::Ip, 1))
        );
        // Half a second adds one token at 2/s.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(limiter.check(t1, ip("192.0.2.1"), None), Ok(()));
        assert!(limiter.check(t1, ip("192.0.2.1"), None).is_err());
        // Another address is unaffected.
        assert_eq!(limiter.check(t1, ip("192.0.2.2"), None), Ok(()));
        // A long pause refills to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..4 {
            assert_eq!(limiter.check(t2, ip("192.0.2.1"), None), Ok(()));
        }
        assert!(limiter.check(t2, ip("192.0.2.1"), None).is_err());
        assert_eq!(limiter.limited()[0], (LimitKey::Ip, 3));
    }

    #[test]
    fn token_bucket_limits_across_addresses_and_a_refusal_takes_nothing() {
        let limiter = SessionLimiter::with_rates(RATE, RATE, 8);
        let t0 = Instant::now();
        for i in 0..4 {
            let addr = ip(&format!("192.0.2.{i}"));
            assert_eq!(limiter.check(t0, addr, Some(b"token-a")), Ok(()));
        }
        assert_eq!(
            limiter.check(t0, ip("192.0.2.9"), Some(b"token-a")),
            Err((LimitKey::Token, 1))
        );
        // The refused request took nothing from 192.0.2.9's bucket.
        for _ in 0..4 {
            assert_eq!(limiter.check(t0, ip("192.0.2.9"), Some(b"token-b")), Ok(()));
        }
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let limiter = SessionLimiter::with_rates(RATE, RATE, 8);
        let t0 = Instant::now();
        for i in 0..4 {
            let addr = ip(&format!("2001:db8::{i}"));
            assert_eq!(limiter.check(t0, addr, None), Ok(()));
        }
        assert!(limiter.check(t0, ip("2001:db8::ffff"), None).is_err());
        assert_eq!(limiter.check(t0, ip("2001:db8:0:1::1"), None), Ok(()));
        // IPv4-mapped addresses count as their IPv4 address.
        for _ in 0..4 {
            assert_eq!(limiter.check(t0, ip("::ffff:192.0.2.1"), None), Ok(()));
        }
        assert!(limiter.check(t0, ip("192.0.2.1"), None).is_err());
    }

    #[test]
    fn tables_stay_bounded_and_evict_the_least_recently_used() {
        let limiter = SessionLimiter::with_rates(RATE, RATE, 4);
        let t0 = Instant::now();
        for _ in 0..4 {
            assert!(limiter.check(t0, ip("10.0.0.1"), None).is_ok());
        }
        assert!(limiter.check(t0, ip("10.0.0.1"), None).is_err());
        for i in 2..1000 {
            let _ = limiter.check(t0, ip(&format!("10.0.{}.{}", i / 256, i % 256)), None);
            // 10.0.0.1 stays recently used, so it is never the one evicted.
            assert!(limiter.check(t0, ip("10.0.0.1"), None).is_err());
        }
        assert_eq!(limiter.tracked()[0], (LimitKey::Ip, 4));
        let tables = limiter.tables.lock().expect("not poisoned");
        assert_eq!(tables.ip.order.len(), 4, "order and map agree");
    }

    #[test]
    fn a_zero_rate_switches_the_limit_off() {
        let off = Rate {
            per_second: 0,
            burst: 0,
        };
        let limiter = SessionLimiter::with_rates(off, RATE, 4);
        let t0 = Instant::now();
        for _ in 0..100 {
            assert!(limiter.check(t0, ip("10.0.0.1"), None).is_ok());
        }
        assert_eq!(limiter.tracked()[0], (LimitKey::Ip, 0));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let slow = Rate {
            per_second: 1,
            burst: 1,
        };
        let limiter = SessionLimiter::with_rates(slow, slow, 4);
        let t0 = Instant::now();
        assert!(limiter.check(t0, ip("10.0.0.1"), None).is_ok());
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(
            limiter.check(t1, ip("10.0.0.1"), None),
            Err((LimitKey::Ip, 1))
        );
    }
}
