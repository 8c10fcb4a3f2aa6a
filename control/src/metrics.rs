//! `GET /metrics` (Prometheus text format 0.0.4, written by hand) and
//! `GET /v1/load`.
//!
//! Counters are read fresh from each worker's published stats on every
//! scrape. The rates in `/v1/load` come from the sampler task, which takes
//! a snapshot of every worker once a second ([`crate::RATE_INTERVAL`]) and
//! divides the difference to the previous snapshot by the time between
//! them ([`AppState::sample_rates`]); so every client sees the same rates
//! however often it polls, and they are zero until the second sample.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use serde_json::{Map, Value, json};

use crate::http::HttpStats;
use crate::ratelimit::SessionLimiter;
use crate::state::AppState;
use packet_path::{PathCounter, PathGauge, WorkerStats};
use sfu_core::router::Counter;

/// The `/v1/load` answer.
pub fn load(state: &AppState) -> Value {
    let (rooms, endpoints) = state.totals();
    let workers: Vec<Value> = state
        .workers()
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let s = w.stats();
            let r = state.rates(i);
            let counters: Map<String, Value> = Counter::ALL
                .iter()
                .map(|&c| (c.name().to_owned(), Value::from(s.get(c))))
                .collect();
            let drops: Map<String, Value> = s
                .drops
                .iter()
                .map(|&(reason, n)| (reason.to_owned(), Value::from(n)))
                .collect();
            json!({
                "worker": i,
                "cpu": w.cpu(),
                "media": state.media_addr(i).map(|a| a.to_string()),
                "rx_pps": r.rx_pps,
                "tx_pps": r.tx_pps,
                "rx_bps": r.rx_bps,
                "tx_bps": r.tx_bps,
                "rx_packets": s.get(Counter::RxPackets),
                "tx_packets": s.get(Counter::TxPackets),
                "rx_bytes": s.get(Counter::RxBytes),
                "tx_bytes": s.get(Counter::TxBytes),
                "counters": counters,
                "cpu_seconds": s.cpu_seconds,
                "rooms": s.gauge(PathGauge::Rooms),
                "endpoints": s.gauge(PathGauge::Endpoints),
                "pool_capacity": s.gauge(PathGauge::PoolCapacity),
                "pool_in_use": s.gauge(PathGauge::PoolInUse),
                "pool_exhausted": s.path(PathCounter::PoolExhausted),
                "gso": s.gauge(PathGauge::GsoEnabled) != 0,
                "gso_fallback_destinations": s.gauge(PathGauge::GsoFallbackDestinations),
                "up": w.health().is_running(),
                "gro": s.gauge(PathGauge::GroEnabled) != 0,
                "io": w.io_backend().0,
                "drops": drops,
            })
        })
        .collect();
    json!({
        "node_id": state.node_id(),
        "uptime_s": state.uptime().as_secs_f64(),
        "rooms": rooms,
        "endpoints": endpoints,
        "workers": workers,
        "top_rooms": state.top_rooms(TOP_ROOMS),
    })
}

/// Rooms with per-room series in `/metrics` (and `top_rooms` in
/// `/v1/load`): the ones with the most egress, so the series stay few
/// however many rooms the node has.
pub const TOP_ROOMS: usize = 10;

/// Appends the per-room series of the [`TOP_ROOMS`] rooms with the most
/// egress over the last second. A room that leaves the top loses its
/// series (Prometheus marks them stale).
pub fn render_top_rooms(out: &mut String, state: &AppState) {
    let top = state.top_rooms(TOP_ROOMS);
    type Read = fn(&crate::state::RoomRates) -> f64;
    let families: [(&str, &str, Read); 5] = [
        (
            "sfu_room_egress_bits_per_second",
            "Media bits per second the node sent a room's subscribers, the trunks feeding its shards on other workers included (the top rooms by it).",
            |r| r.tx_bps,
        ),
        (
            "sfu_room_egress_packets_per_second",
            "Media packets per second the node sent a room's subscribers, shard trunks included (the top rooms by egress).",
            |r| r.tx_pps,
        ),
        (
            "sfu_room_ingress_bits_per_second",
            "Media bits per second a room's publishers sent the node (the top rooms by egress).",
            |r| r.rx_bps,
        ),
        (
            "sfu_room_ingress_packets_per_second",
            "Media packets per second a room's publishers sent the node (the top rooms by egress).",
            |r| r.rx_pps,
        ),
        (
            "sfu_room_endpoints",
            "Endpoints of a room on the node (the top rooms by egress).",
            |r| r.endpoints as f64,
        ),
    ];
    for (name, help, value) in families {
        header(out, name, help, "gauge");
        for r in &top {
            let _ = writeln!(out, "{name}{{room=\"{}\"}} {}", r.room, value(r));
        }
    }
}

/// One metric family: name, help, type and how to read a worker's value.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    value: fn(&WorkerStats) -> String,
}

const WORKER_FAMILIES: &[Family] = &[Family {
    name: "sfu_worker_cpu_seconds_total",
    help: "CPU time (user and system) of the worker thread.",
    kind: "counter",
    value: |s| s.cpu_seconds.to_string(),
}];

/// The `# HELP` and `# TYPE` lines of one family.
pub(crate) fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value (backslash, double quote, newline).
pub fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One family with one sample per worker: `name{worker="i"} value`.
fn per_worker(
    out: &mut String,
    name: &str,
    help: &str,
    kind: &str,
    stats: &[WorkerStats],
    value: impl Fn(&WorkerStats) -> String,
) {
    header(out, name, help, kind);
    for (i, s) in stats.iter().enumerate() {
        let _ = writeln!(out, "{name}{{worker=\"{i}\"}} {}", value(s));
    }
}

/// The `/metrics` answer.
pub fn render(state: &AppState) -> String {
    let stats: Vec<WorkerStats> = state.workers().iter().map(|w| w.stats()).collect();
    let mut out = String::with_capacity(4096);
    // The router's counter table: one family per counter, declared once in
    // `sfu_core::router::Counter`.
    for &counter in Counter::ALL {
        let name = format!("sfu_{}_total", counter.name());
        per_worker(&mut out, &name, counter.help(), "counter", &stats, |s| {
            s.get(counter).to_string()
        });
    }
    // The packet path's tables, declared once in `packet_path::PathCounter`
    // and `PathGauge`.
    for &counter in PathCounter::ALL {
        let name = format!("sfu_{}_total", counter.name());
        per_worker(&mut out, &name, counter.help(), "counter", &stats, |s| {
            s.path(counter).to_string()
        });
    }
    for &gauge in PathGauge::ALL {
        let name = format!("sfu_{}", gauge.name());
        per_worker(&mut out, &name, gauge.help(), "gauge", &stats, |s| {
            s.gauge(gauge).to_string()
        });
    }
    for family in WORKER_FAMILIES {
        per_worker(
            &mut out,
            family.name,
            family.help,
            family.kind,
            &stats,
            family.value,
        );
    }

    header(
        &mut out,
        "sfu_worker_up",
        "1 if the worker thread is running, 0 if it is dead or stalled.",
        "gauge",
    );
    let health: Vec<_> = state.workers().iter().map(|w| w.health()).collect();
    for (i, h) in health.iter().enumerate() {
        let _ = writeln!(
            out,
            "sfu_worker_up{{worker=\"{i}\"}} {}",
            u8::from(h.is_running())
        );
    }
    header(
        &mut out,
        "sfu_worker_heartbeat_age_seconds",
        "Seconds since the worker's loop last came round (about 0.005 at most while idle and healthy).",
        "gauge",
    );
    for (i, w) in state.workers().iter().enumerate() {
        let age = w.heartbeat_age().as_secs_f64();
        let _ = writeln!(
            out,
            "sfu_worker_heartbeat_age_seconds{{worker=\"{i}\"}} {age}"
        );
    }

    header(
        &mut out,
        "sfu_drops_total",
        "Datagrams or egress copies the worker dropped, by reason.",
        "counter",
    );
    for (i, s) in stats.iter().enumerate() {
        for (reason, n) in &s.drops {
            let reason = escape(reason);
            let _ = writeln!(
                out,
                "sfu_drops_total{{worker=\"{i}\",reason=\"{reason}\"}} {n}"
            );
        }
    }

    header(
        &mut out,
        "sfu_endpoints_removed_total",
        "Endpoints the worker removed by itself, by reason (never_connected, consent_lost, dtls_failed, dtls_closed).",
        "counter",
    );
    for (i, s) in stats.iter().enumerate() {
        for (reason, n) in &s.removed {
            let _ = writeln!(
                out,
                "sfu_endpoints_removed_total{{worker=\"{i}\",reason=\"{reason}\"}} {n}"
            );
        }
    }

    header(
        &mut out,
        "sfu_uptime_seconds",
        "Seconds since the control plane started.",
        "gauge",
    );
    let _ = writeln!(out, "sfu_uptime_seconds {}", state.uptime().as_secs_f64());
    header(
        &mut out,
        "sfu_draining",
        "1 while the node drains (no new rooms; it stops when its last endpoint leaves).",
        "gauge",
    );
    let _ = writeln!(out, "sfu_draining {}", u8::from(state.draining()));

    header(
        &mut out,
        "sfu_http_requests_total",
        "HTTP requests answered, by route (method and path template) and status.",
        "counter",
    );
    for ((route, status), n) in state.http_requests() {
        let route = escape(&route);
        let _ = writeln!(
            out,
            "sfu_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
        );
    }

    header(
        &mut out,
        "sfu_limit_refusals_total",
        "Requests refused because a limit was reached, by limit.",
        "counter",
    );
    for (limit, n) in state.limit_refusals() {
        let limit = escape(&limit);
        let _ = writeln!(out, "sfu_limit_refusals_total{{limit=\"{limit}\"}} {n}");
    }

    header(
        &mut out,
        "sfu_webrtc_sessions_total",
        "WHIP and WHEP sessions created and ended, by protocol and event.",
        "counter",
    );
    let s = state.session_counts();
    for (protocol, event, n) in [
        ("whip", "created", s.whip_created),
        ("whip", "ended", s.whip_ended),
        ("whep", "created", s.whep_created),
        ("whep", "ended", s.whep_ended),
    ] {
        let _ = writeln!(
            out,
            "sfu_webrtc_sessions_total{{protocol=\"{protocol}\",event=\"{event}\"}} {n}"
        );
    }
    out
}

/// Appends the TLS server's counters ([`crate::tls`]); `sfu_tls_enabled`
/// is 0 and the counters absent when the API speaks plain HTTP.
pub fn render_tls(out: &mut String, tls: Option<&crate::tls::ServerTls>) {
    header(
        out,
        "sfu_tls_enabled",
        "1 when the control API speaks HTTPS (tls_cert), 0 for plain HTTP.",
        "gauge",
    );
    let _ = writeln!(out, "sfu_tls_enabled {}", u8::from(tls.is_some()));
    let Some(tls) = tls else { return };
    let read = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    header(
        out,
        "sfu_tls_handshakes_total",
        "TLS handshakes of the control API that completed (ok) or failed (failed: not TLS, \
         no common parameters, or not within the header timeout).",
        "counter",
    );
    for (result, n) in [
        ("ok", read(&tls.stats.handshakes)),
        ("failed", read(&tls.stats.handshake_failures)),
    ] {
        let _ = writeln!(out, "sfu_tls_handshakes_total{{result=\"{result}\"}} {n}");
    }
    header(
        out,
        "sfu_tls_reloads_total",
        "Certificate reloads (SIGHUP): ok swapped the certificate, failed kept the old one.",
        "counter",
    );
    for (result, n) in [
        ("ok", read(&tls.stats.reloads_ok)),
        ("failed", read(&tls.stats.reloads_failed)),
    ] {
        let _ = writeln!(out, "sfu_tls_reloads_total{{result=\"{result}\"}} {n}");
    }
}

/// Appends the HTTP server's counters ([`crate::http`]) and the session
/// rate limiter's ([`crate::ratelimit`]).
pub fn render_http(out: &mut String, http: &HttpStats, sessions: &SessionLimiter) {
    let c = http.counts();
    for (name, help, kind, value) in [
        (
            "sfu_http_connections_open",
            "Open HTTP connections.",
            "gauge",
            c.open,
        ),
        (
            "sfu_http_connections_accepted_total",
            "HTTP connections accepted.",
            "counter",
            c.accepted,
        ),
        (
            "sfu_http_connections_evicted_total",
            "Idle HTTP connections closed to admit a new one at the connection cap.",
            "counter",
            c.evicted,
        ),
        (
            "sfu_http_connections_refused_total",
            "HTTP connections refused at the connection cap (every one had a request in flight).",
            "counter",
            c.refused,
        ),
        (
            "sfu_http_accept_errors_total",
            "Failed accept calls of the HTTP listener (e.g. out of file descriptors).",
            "counter",
            c.accept_errors,
        ),
    ] {
        header(out, name, help, kind);
        let _ = writeln!(out, "{name} {value}");
    }
    header(
        out,
        "sfu_http_timeouts_total",
        "HTTP connections closed for a request head not received in time (header), \
         waiting too long for a request (idle), and requests answered 408 (request).",
        "counter",
    );
    for (kind, n) in [
        ("header", c.header_timeouts),
        ("idle", c.idle_timeouts),
        ("request", c.request_timeouts),
    ] {
        let _ = writeln!(out, "sfu_http_timeouts_total{{kind=\"{kind}\"}} {n}");
    }
    header(
        out,
        "sfu_http_rate_limited_total",
        "Session and room creations refused with 429, by the bucket that was empty.",
        "counter",
    );
    for (key, n) in sessions.limited() {
        let _ = writeln!(
            out,
            "sfu_http_rate_limited_total{{key=\"{}\"}} {n}",
            key.as_str()
        );
    }
    header(
        out,
        "sfu_http_rate_limit_keys",
        "Client addresses and tokens the session rate limiter tracks.",
        "gauge",
    );
    for (key, n) in sessions.tracked() {
        let _ = writeln!(
            out,
            "sfu_http_rate_limit_keys{{key=\"{}\"}} {n}",
            key.as_str()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("x\ny"), "x\\ny");
    }
}
