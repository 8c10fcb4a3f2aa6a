//! systemd's service notification protocol (`sd_notify(3)`), written
//! without libsystemd: one datagram per state change to the Unix socket
//! named by `NOTIFY_SOCKET` (a path, or an abstract name starting with
//! `@`). Without the variable (not started by systemd with `Type=notify`)
//! every call does nothing.
//!
//! * `READY=1` once the API listens and the workers run ([`ready`]);
//! * `STATUS=...` with the node's rooms and endpoints, and during a drain
//!   what is left;
//! * `STOPPING=1` when a drain starts ([`stopping`]);
//! * `WATCHDOG=1` every half `WATCHDOG_USEC` from [`watchdog`], but only
//!   while every worker loop comes round (its heartbeat): a dead or stalled
//!   worker stops the pings, so systemd's `WatchdogSec=` restarts the node
//!   even if the process as a whole still runs.
//!
//! # Threads and panics
//! Sends are non-blocking datagrams from whichever task calls; the
//! watchdog is one task. A failed send is logged once and otherwise
//! ignored; nothing here panics.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::state::AppState;

/// Where notifications go, read from the environment once.
fn target() -> Option<&'static std::os::unix::net::SocketAddr> {
    static TARGET: OnceLock<Option<std::os::unix::net::SocketAddr>> = OnceLock::new();
    TARGET
        .get_or_init(|| {
            let path = std::env::var_os("NOTIFY_SOCKET")?;
            let path = path.to_str()?;
            address(path)
                .map_err(|e| tracing::warn!(path, error = %e, "NOTIFY_SOCKET is not usable"))
                .ok()
        })
        .as_ref()
}

/// The socket address of a `NOTIFY_SOCKET` value.
fn address(path: &str) -> std::io::Result<std::os::unix::net::SocketAddr> {
    match path.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt as _;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        }
        None => std::os::unix::net::SocketAddr::from_pathname(path),
    }
}

/// Sends `message` (newline-separated `KEY=VALUE` lines); whether it was
/// sent (false without `NOTIFY_SOCKET`).
pub fn send(message: &str) -> bool {
    static WARNED: AtomicBool = AtomicBool::new(false);
    let Some(to) = target() else {
        return false;
    };
    let sent = UnixDatagram::unbound().and_then(|s| s.send_to_addr(message.as_bytes(), to));
    match sent {
        Ok(_) => true,
        Err(e) => {
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %e, "cannot notify the service manager");
            }
            false
        }
    }
}

/// `READY=1` with the node's status.
pub fn ready(state: &AppState) {
    let (rooms, endpoints) = state.totals();
    send(&format!(
        "READY=1\nSTATUS=serving: {rooms} rooms, {endpoints} endpoints\nMAINPID={}",
        std::process::id()
    ));
}

/// `STOPPING=1`: a drain started.
pub fn stopping(state: &AppState) {
    let (_, endpoints) = state.totals();
    send(&format!(
        "STOPPING=1\nSTATUS=draining: {endpoints} endpoints left"
    ));
}

/// `STATUS=...`.
pub fn status(text: &str) {
    send(&format!("STATUS={text}"));
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`, for this
/// process when `WATCHDOG_PID` is set), if any.
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID")
        && pid.to_str().and_then(|p| p.parse::<u32>().ok()) != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Pings the watchdog every half `interval` while every worker runs (its
/// loop's heartbeat is fresh); stops pinging, once and for good, when one
/// is dead or stalled. Also refreshes `STATUS` with the node's load.
pub async fn watchdog(state: Arc<AppState>, interval: Duration) {
    let mut tick = tokio::time::interval(interval / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let failed = crate::supervise::unhealthy(state.workers());
        if let Some(f) = failed.first() {
            tracing::error!(worker = f.worker, health = ?f.health, "worker not running: watchdog pings stop");
            status(&format!("{f}"));
            return;
        }
        let (rooms, endpoints) = state.totals();
        let line = if state.draining() {
            format!("WATCHDOG=1\nSTATUS=draining: {endpoints} endpoints left")
        } else {
            format!("WATCHDOG=1\nSTATUS=serving: {rooms} rooms, {endpoints} endpoints")
        };
        send(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_socket_values_are_paths_or_abstract_names() {
        use std::os::linux::net::SocketAddrExt as _;
        let a = address("@sfu-test").expect("abstract");
        assert_eq!(a.as_abstract_name(), Some(&b"sfu-test"[..]));
        let p = address("/run/systemd/notify").expect("a path");
        assert_eq!(
            p.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
    }
}
