//! Host tuning of the SFU media node: the settings its throughput depends on,
//! read from the host, judged, and set where a program can set them.
//!
//! The node is a UDP packet router: pinned worker threads (one per CPU of
//! `cpus` in sfu.toml) each own a socket and move SRTP packets in batches
//! with `recvmmsg`/`sendmmsg`, GRO and GSO. Its throughput depends on the
//! kernel and the NIC as much as on its own code: socket buffers large
//! enough for a fan-out burst, NIC interrupts kept off the worker CPUs, the
//! CPUs at full clock, a cheap clock source, enough file descriptors.
//!
//! # Design
//!
//! - [`check`] reads the host and returns one [`Check`] per setting, in a
//!   fixed order with stable ids ([`CHECK_IDS`]): status (ok, warn, fail, or
//!   unknown when the setting cannot be read), current value, wanted value,
//!   why it matters and how to fix it.
//! - **What it reads**, always below [`Host::root`] (`/` for this machine, a
//!   fixture tree in tests): `/proc/sys/net/core/*` and
//!   `/proc/sys/net/ipv4/udp_mem`; `/proc/net/route` (the media interface);
//!   `/proc/interrupts` and `/proc/irq/N/smp_affinity_list` (the NIC's
//!   IRQs); `/sys/class/net/IFACE/queues/*` (RSS queues, RPS masks);
//!   `/sys/devices/system/cpu/*` (online CPUs, cpufreq governor, SMT
//!   siblings, clock source); `/proc/self/limits` (open files, locked
//!   memory). The NIC's ring sizes and offloads come from `ethtool -g` and
//!   `ethtool -k`, run only when the root is `/` (or
//!   [`Host::with_ethtool`] names a program).
//! - [`plan`] turns the checks into the [`Action`]s `sfu-tune apply` takes
//!   and the steps left to an operator (ring sizes, offloads, SMT, unit
//!   limits, clock source: commands or reboots). [`Plan::apply`] carries
//!   them out:
//!   - writes `/etc/sysctl.d/90-sfu.conf` with every sysctl it wants, each
//!     with its reason (so the values survive a reboot);
//!   - busy polling (`net.core.busy_poll`, `busy_read`) only when asked
//!     ([`Target::busy_poll`], `--busy-poll USEC`): measured here it cost
//!     worker CPU for no latency gain, so `check` is ok whatever its value
//!     and `apply` leaves it (and the file) alone by default;
//!   - writes those sysctls to `/proc/sys`;
//!   - writes the non-worker CPUs into `smp_affinity_list` of the NIC's IRQs;
//!   - sets the cpufreq governor of the worker CPUs to `performance`;
//!   - clears the worker CPUs from each RX queue's `rps_cpus`.
//!
//!   IRQ affinity, governors and RPS masks do not survive a reboot: the
//!   `sfu-tune.service` unit runs `apply` at every boot, before the node.
//! - **It never lowers a value**: a sysctl already above what the node needs
//!   is left as it is, in `/proc/sys` and in the sysctl.d file alike.
//! - A failed write (`EACCES`, a read-only `/proc/sys` in a container) is
//!   reported in its [`Outcome`] and does not stop the others.
//!
//! # Panics
//!
//! None, whatever the files contain: every parse is fallible (empty,
//! non-numeric, out-of-range or binary content ends in [`Status::Unknown`]
//! with the reason), CPU numbers are capped at the kernel's 8192, and
//! products of sizes saturate.

#![forbid(unsafe_code)]

mod apply;
mod checks;
mod host;
mod parse;

pub use apply::{Action, Outcome, Plan, plan};
pub use checks::{CHECK_IDS, check};
pub use host::Host;
pub use parse::{format_cpu_list, parse_cpu_list};

use serde::Serialize;

/// The node's buffers default: `socket_buffer_bytes` of sfu.toml, 32 MiB.
pub const DEFAULT_SOCKET_BUFFER_BYTES: usize = 32 << 20;

/// What the node will run: the settings are judged against it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Worker threads.
    pub workers: usize,
    /// CPUs the workers are pinned to, worker `i` on `cpus[i % len]`.
    pub cpus: Vec<usize>,
    /// `SO_RCVBUF`/`SO_SNDBUF` each media socket asks for.
    pub socket_buffer_bytes: usize,
    /// The media NIC; `None`: the interface of the default route.
    pub iface: Option<String>,
    /// Microseconds of busy polling (`net.core.busy_poll` and `busy_read`)
    /// the operator opted into (`--busy-poll USEC`): `apply` raises both to
    /// it and writes them to the sysctl.d file, `check` warns below it.
    /// `None` (the default): any value is ok and `apply` leaves both alone,
    /// since spinning costs worker CPU (48-49 % to 58-65 % in the seed
    /// meeting on a 2 vCPU VM, no latency gain; hardware.md).
    pub busy_poll: Option<u64>,
}

impl Target {
    /// The node's defaults on `host`: a worker on each online CPU, 32 MiB
    /// socket buffers, the default route's interface, no busy polling.
    pub fn for_host(host: &Host) -> Self {
        let cpus = checks::online_cpus(host).unwrap_or_else(|_| {
            let n = std::thread::available_parallelism().map_or(1, usize::from);
            (0..n).collect()
        });
        Self {
            workers: cpus.len().max(1),
            cpus,
            socket_buffer_bytes: DEFAULT_SOCKET_BUFFER_BYTES,
            iface: host.route_iface(None),
            busy_poll: None,
        }
    }

    /// The CPUs workers actually run on: the first `workers` of `cpus`.
    pub fn worker_cpus(&self) -> Vec<usize> {
        let mut used: Vec<usize> = self.cpus.iter().copied().take(self.workers).collect();
        used.sort_unstable();
        used.dedup();
        used
    }
}

/// How a setting compares with what the node wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// As wanted.
    Ok,
    /// Costs throughput or latency; the node works.
    Warn,
    /// Drops packets or connections under load.
    Fail,
    /// Could not be read (the reason says why).
    Unknown,
}

impl Status {
    /// `ok`, `warn`, `fail`, `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "fail",
            Self::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One setting: what it is, what the node wants, why and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable snake_case name, one of [`CHECK_IDS`].
    pub id: &'static str,
    /// How the value compares with `want`.
    pub status: Status,
    /// The current value as read (empty when unknown).
    pub value: String,
    /// The wanted value.
    pub want: String,
    /// Why it matters to the node (and, when unknown, why it was not read).
    pub reason: String,
    /// What sets it.
    pub fix: String,
}
