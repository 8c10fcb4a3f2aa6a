//! The checks: one function per setting, each reading through [`Ctx`] and
//! returning one [`Check`]. The readers that `apply` shares (sysctls, the
//! NIC's IRQs, RPS masks, governors) are here too.

use crate::parse::{self, Feature, Rings};
use crate::{Check, Host, Status, Target, format_cpu_list};

/// The ids of [`check`]'s results, in its order.
pub const CHECK_IDS: [&str; 20] = [
    "rmem_max",
    "wmem_max",
    "netdev_max_backlog",
    "udp_mem",
    "busy_poll",
    "busy_read",
    "optmem_max",
    "nic_rings",
    "offload_gro",
    "offload_gso",
    "offload_tx_udp_segmentation",
    "offload_rx_udp_gro_forwarding",
    "rss_queues",
    "irq_affinity",
    "rps",
    "cpu_governor",
    "smt_siblings",
    "nofile",
    "memlock",
    "clocksource",
];

const CHECKS: [fn(&Ctx<'_>) -> Check; 20] = [
    rmem_max,
    wmem_max,
    netdev_max_backlog,
    udp_mem,
    busy_poll,
    busy_read,
    optmem_max,
    nic_rings,
    offload_gro,
    offload_gso,
    offload_tx_udp_segmentation,
    offload_rx_udp_gro_forwarding,
    rss_queues,
    irq_affinity,
    rps,
    cpu_governor,
    smt_siblings,
    nofile,
    memlock,
    clocksource,
];

/// Reads `host` and judges each setting against `target`: one [`Check`]
/// per id of [`CHECK_IDS`], in that order.
pub fn check(host: &Host, target: &Target) -> Vec<Check> {
    let cx = Ctx::new(host, target);
    CHECKS.iter().map(|f| f(&cx)).collect()
}

/// What every check reads once: the target's worker CPUs, the online CPUs,
/// the media interface and `ethtool`'s answers.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    pub(crate) host: &'a Host,
    pub(crate) target: &'a Target,
    /// The CPUs workers run on, sorted.
    pub(crate) workers: Vec<usize>,
    pub(crate) online: Result<Vec<usize>, String>,
    /// The media interface, or why there is none.
    pub(crate) iface: Result<String, String>,
    rings: Result<Rings, String>,
    features: Result<Vec<Feature>, String>,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(host: &'a Host, target: &'a Target) -> Self {
        let iface = media_iface(host, target);
        let (rings, features) = match &iface {
            Ok(name) => (
                host.ethtool(&["-g", name])
                    .and_then(|text| parse::parse_rings(&text)),
                host.ethtool(&["-k", name])
                    .map(|text| parse::parse_features(&text)),
            ),
            Err(e) => (Err(e.clone()), Err(e.clone())),
        };
        Self {
            host,
            target,
            workers: target.worker_cpus(),
            online: online_cpus(host),
            iface,
            rings,
            features,
        }
    }

    /// Online CPUs that run no worker (for IRQs and RPS).
    pub(crate) fn spare_cpus(&self) -> Result<Vec<usize>, String> {
        let online = self.online.as_ref().map_err(Clone::clone)?;
        Ok(online
            .iter()
            .copied()
            .filter(|c| !self.workers.contains(c))
            .collect())
    }
}

/// `/sys/devices/system/cpu/online`.
pub(crate) fn online_cpus(host: &Host) -> Result<Vec<usize>, String> {
    let cpus = parse::parse_cpu_list(&host.read("/sys/devices/system/cpu/online")?)
        .map_err(|e| format!("/sys/devices/system/cpu/online: {e}"))?;
    if cpus.is_empty() {
        return Err("/sys/devices/system/cpu/online: empty".to_owned());
    }
    Ok(cpus)
}

/// The target's interface (or the default route's), if it is a plausible
/// name that exists under `/sys/class/net`.
fn media_iface(host: &Host, target: &Target) -> Result<String, String> {
    let name = target
        .iface
        .clone()
        .or_else(|| host.route_iface(None))
        .ok_or_else(|| "no media interface (no --iface and no default route)".to_owned())?;
    if name.is_empty() || name.len() > 15 || name.contains('/') || name == "." || name == ".." {
        return Err(format!("bad interface name {:?}", parse::shorten(&name)));
    }
    if !host.exists(&format!("/sys/class/net/{name}")) {
        return Err(format!("no interface {name} in /sys/class/net"));
    }
    Ok(name)
}

// ---------------------------------------------------------------- sysctls

/// A sysctl the node wants at least some value of.
#[derive(Debug)]
pub(crate) struct Sysctl {
    pub(crate) id: &'static str,
    pub(crate) name: &'static str,
    /// Below the want: fail (else warn).
    fail: bool,
    pub(crate) reason: &'static str,
    /// The least value the node wants; `None`: any value will do, and
    /// `apply` neither sets it nor writes it to the sysctl.d file.
    want: fn(&Target) -> Option<u64>,
}

impl Sysctl {
    pub(crate) fn path(&self) -> String {
        format!("/proc/sys/{}", self.name.replace('.', "/"))
    }

    pub(crate) fn want(&self, target: &Target) -> Option<u64> {
        (self.want)(target)
    }
}

fn buffer_bytes(t: &Target) -> u64 {
    u64::try_from(t.socket_buffer_bytes).unwrap_or(u64::MAX)
}

pub(crate) const RMEM_MAX: Sysctl = Sysctl {
    id: "rmem_max",
    name: "net.core.rmem_max",
    fail: true,
    reason: "Each media socket asks SO_RCVBUF of socket_buffer_bytes; without CAP_NET_ADMIN \
             (SO_RCVBUFFORCE) the kernel clamps it to rmem_max, and a clamped buffer overflows \
             when a burst (key frames, the feedback of a 500-participant fan-out) arrives while \
             the worker is busy sending: drops counted in UdpRcvbufErrors of /proc/net/snmp.",
    want: |t| Some(buffer_bytes(t)),
};

pub(crate) const WMEM_MAX: Sysctl = Sysctl {
    id: "wmem_max",
    name: "net.core.wmem_max",
    fail: true,
    reason: "SO_SNDBUF is clamped to wmem_max the same way; a sendmmsg/GSO batch of a fan-out \
             larger than the send buffer fails with EAGAIN and the worker drops the copies.",
    want: |t| Some(buffer_bytes(t)),
};

pub(crate) const NETDEV_MAX_BACKLOG: Sysctl = Sysctl {
    id: "netdev_max_backlog",
    name: "net.core.netdev_max_backlog",
    fail: false,
    reason: "Packets queued per CPU between the NIC's interrupt and the protocol stack (RPS \
             included); at 10 GbE a burst overflows the default 1000 (drops in the 2nd column \
             of /proc/net/softnet_stat).",
    want: |_| Some(16384),
};

pub(crate) const BUSY_POLL: Sysctl = Sysctl {
    id: "busy_poll",
    name: "net.core.busy_poll",
    fail: false,
    reason: "Microseconds poll/ppoll spin on the NIC queue before sleeping: a worker woken by \
             a packet skips the interrupt and wake-up latency, and pays for it in CPU spent \
             spinning. Measured on the 2 vCPU VM of hardware.md (\"Tuned against untuned\"): \
             busy_poll and busy_read at 50 raised the worker's CPU in the seed meeting from \
             48-49 % to 58-65 %, with no latency gain. Off (0) is fine; `sfu-tune apply \
             --busy-poll USEC` sets it, for hosts with spare CPU on the worker cores.",
    want: |t| t.busy_poll,
};

pub(crate) const BUSY_READ: Sysctl = Sysctl {
    id: "busy_read",
    name: "net.core.busy_read",
    fail: false,
    reason: "Microseconds a blocking socket read (recvmmsg) spins on the NIC queue: the same \
             latency-for-CPU trade as busy_poll. Measured on the 2 vCPU VM of hardware.md \
             (\"Tuned against untuned\"): busy_poll and busy_read at 50 raised the worker's CPU \
             in the seed meeting from 48-49 % to 58-65 %, with no latency gain. Off (0) is \
             fine; `sfu-tune apply --busy-poll USEC` sets it, for hosts with spare CPU on the \
             worker cores.",
    want: |t| t.busy_poll,
};

/// What [`BUSY_POLL`] and [`BUSY_READ`] want without `--busy-poll`.
const BUSY_WANT: &str = "0 (off), or 25-100 µs on hosts with spare worker CPU";

pub(crate) const OPTMEM_MAX: Sysctl = Sysctl {
    id: "optmem_max",
    name: "net.core.optmem_max",
    fail: false,
    reason: "Per-socket ancillary buffer: the GSO segment size and GRO cmsgs of every batch \
             and MSG_ZEROCOPY completions use it; too small, sendmsg with control data fails \
             with ENOBUFS.",
    want: |_| Some(65536),
};

/// The single-number sysctls, in check order.
pub(crate) const SYSCTLS: [&Sysctl; 6] = [
    &RMEM_MAX,
    &WMEM_MAX,
    &NETDEV_MAX_BACKLOG,
    &BUSY_POLL,
    &BUSY_READ,
    &OPTMEM_MAX,
];

pub(crate) const UDP_MEM: &str = "net.ipv4.udp_mem";
pub(crate) const UDP_MEM_PATH: &str = "/proc/sys/net/ipv4/udp_mem";
pub(crate) const UDP_MEM_REASON: &str = "Pages all UDP sockets together may hold (min, pressure, \
     max); above the max every UDP socket drops what it receives, whatever its buffer size. Each \
     worker's socket may fill socket_buffer_bytes of receive and of send buffer.";

/// The current value of a sysctl.
pub(crate) fn read_sysctl(host: &Host, sysctl: &Sysctl) -> Result<u64, String> {
    let path = sysctl.path();
    parse::parse_u64(&host.read(&path)?).map_err(|e| format!("{path}: {e}"))
}

/// The max of udp_mem the target needs: workers × 2 buffers, in pages.
pub(crate) fn udp_mem_want(target: &Target) -> u64 {
    let workers = u64::try_from(target.workers).unwrap_or(u64::MAX);
    workers
        .saturating_mul(2)
        .saturating_mul(buffer_bytes(target))
        .div_ceil(4096)
}

pub(crate) fn read_udp_mem(host: &Host) -> Result<[u64; 3], String> {
    parse::parse_triple(&host.read(UDP_MEM_PATH)?).map_err(|e| format!("{UDP_MEM_PATH}: {e}"))
}

fn sysctl_check(cx: &Ctx<'_>, s: &Sysctl) -> Check {
    let Some(want) = s.want(cx.target) else {
        return busy_check(cx, s);
    };
    let fix = format!(
        "sfu-tune apply, or sysctl -w {}={want} and the same line in /etc/sysctl.d/90-sfu.conf",
        s.name
    );
    match read_sysctl(cx.host, s) {
        Err(e) => unknown(s.id, format!(">= {want}"), s.reason, &e, fix),
        Ok(value) => Check {
            id: s.id,
            status: if value >= want {
                Status::Ok
            } else if s.fail {
                Status::Fail
            } else {
                Status::Warn
            },
            value: value.to_string(),
            want: format!(">= {want}"),
            reason: s.reason.to_owned(),
            fix,
        },
    }
}

/// `busy_poll`, `busy_read`: ok at any value, unless `--busy-poll USEC`
/// asks for at least USEC (below it: warn).
fn busy_check(cx: &Ctx<'_>, s: &Sysctl) -> Check {
    let usec = cx.target.busy_poll;
    let (want, fix) = match usec {
        None => (
            BUSY_WANT.to_owned(),
            format!(
                "none needed. To spin: sfu-tune apply --busy-poll 50 (sets net.core.busy_poll \
                 and net.core.busy_read and writes them to /etc/sysctl.d/90-sfu.conf); to \
                 switch it off: sysctl -w {}=0 and no {} line in /etc/sysctl.d",
                s.name, s.name
            ),
        ),
        Some(usec) => (
            format!(">= {usec} (--busy-poll)"),
            format!(
                "sfu-tune apply --busy-poll {usec}, or sysctl -w {}={usec} and the same line \
                 in /etc/sysctl.d/90-sfu.conf",
                s.name
            ),
        ),
    };
    match read_sysctl(cx.host, s) {
        Err(e) => unknown(s.id, want, s.reason, &e, fix),
        Ok(value) => Check {
            id: s.id,
            status: match usec {
                Some(usec) if value < usec => Status::Warn,
                _ => Status::Ok,
            },
            value: value.to_string(),
            want,
            reason: s.reason.to_owned(),
            fix,
        },
    }
}

fn rmem_max(cx: &Ctx<'_>) -> Check {
    sysctl_check(cx, &RMEM_MAX)
}

fn wmem_max(cx: &Ctx<'_>) -> Check {
    sysctl_check(cx, &WMEM_MAX)
}

fn netdev_max_backlog(cx: &Ctx<'_>) -> Check {
    sysctl_check(cx, &NETDEV_MAX_BACKLOG)
}

fn busy_poll(cx: &Ctx<'_>) -> Check {
    busy_check(cx, &BUSY_POLL)
}

fn busy_read(cx: &Ctx<'_>) -> Check {
    busy_check(cx, &BUSY_READ)
}

fn optmem_max(cx: &Ctx<'_>) -> Check {
    sysctl_check(cx, &OPTMEM_MAX)
}

fn udp_mem(cx: &Ctx<'_>) -> Check {
    let want_max = udp_mem_want(cx.target);
    let want = format!(
        "max >= {want_max} pages ({} workers x 2 x {} bytes)",
        cx.target.workers, cx.target.socket_buffer_bytes
    );
    let fix = format!("sfu-tune apply (raises the max to {want_max}, keeps min and pressure)");
    match read_udp_mem(cx.host) {
        Err(e) => unknown("udp_mem", want, UDP_MEM_REASON, &e, fix),
        Ok(v) => Check {
            id: "udp_mem",
            status: if v[2] >= want_max {
                Status::Ok
            } else {
                Status::Warn
            },
            value: format!("{} {} {}", v[0], v[1], v[2]),
            want,
            reason: UDP_MEM_REASON.to_owned(),
            fix,
        },
    }
}

// ---------------------------------------------------------------- the NIC

const RINGS_REASON: &str = "Descriptors between the NIC and the kernel: a burst larger than \
     the RX ring is dropped by the NIC before the kernel sees it (rx_missed/no-buffer counters \
     of ethtool -S), and a larger TX ring absorbs a fan-out's GSO batches.";

fn nic_rings(cx: &Ctx<'_>) -> Check {
    let id = "nic_rings";
    let iface = cx.iface.as_deref().unwrap_or("IFACE");
    let rings = match &cx.rings {
        Err(e) => {
            let fix = format!("ethtool -g {iface}; ethtool -G {iface} rx MAX tx MAX");
            return unknown(id, "the pre-set maximums".to_owned(), RINGS_REASON, e, fix);
        }
        Ok(r) => *r,
    };
    let show = |v: Option<u64>| v.map_or_else(|| "n/a".to_owned(), |v| v.to_string());
    let low =
        |cur: Option<u64>, max: Option<u64>| matches!((cur, max), (Some(c), Some(m)) if c < m);
    let mut set = String::new();
    if let (true, Some(m)) = (low(rings.rx, rings.rx_max), rings.rx_max) {
        set.push_str(&format!(" rx {m}"));
    }
    if let (true, Some(m)) = (low(rings.tx, rings.tx_max), rings.tx_max) {
        set.push_str(&format!(" tx {m}"));
    }
    Check {
        id,
        status: if set.is_empty() {
            Status::Ok
        } else {
            Status::Warn
        },
        value: format!("rx {} tx {}", show(rings.rx), show(rings.tx)),
        want: format!("rx {} tx {}", show(rings.rx_max), show(rings.tx_max)),
        reason: RINGS_REASON.to_owned(),
        fix: format!(
            "ethtool -G {iface}{} (not kept over a reboot: RxBufferSize=/TxBufferSize= in a \
             systemd .link file or the distribution's network config)",
            if set.is_empty() {
                " rx MAX tx MAX"
            } else {
                &set
            }
        ),
    }
}

/// An `ethtool -k` feature the node wants on (`informational`: reported,
/// always ok when read).
fn offload(
    cx: &Ctx<'_>,
    id: &'static str,
    feature: &str,
    short: &str,
    reason: &'static str,
    informational: bool,
) -> Check {
    let iface = cx.iface.as_deref().unwrap_or("IFACE");
    let fix = format!("ethtool -K {iface} {short} on");
    let want = if informational { "on or off" } else { "on" }.to_owned();
    let features = match &cx.features {
        Err(e) => return unknown(id, want, reason, e, fix),
        Ok(f) => f,
    };
    let Some(f) = features.iter().find(|f| f.name == feature) else {
        let e = format!("ethtool -k {iface} does not list {feature}");
        return unknown(id, want, reason, &e, fix);
    };
    Check {
        id,
        status: if f.on || informational {
            Status::Ok
        } else {
            Status::Warn
        },
        value: format!(
            "{}{}",
            if f.on { "on" } else { "off" },
            if f.fixed { " [fixed]" } else { "" }
        ),
        want,
        reason: reason.to_owned(),
        fix: if f.fixed && !f.on {
            format!("none: the driver of {iface} cannot ({feature} off [fixed])")
        } else {
            format!("{fix} (not kept over a reboot: a systemd .link file or the network config)")
        },
    }
}

fn offload_gro(cx: &Ctx<'_>) -> Check {
    offload(
        cx,
        "offload_gro",
        "generic-receive-offload",
        "gro",
        "GRO merges a flow's consecutive UDP datagrams into one buffer for the node's UDP_GRO \
         sockets, so one recvmmsg slot carries several packets; off, each packet makes its own \
         trip through the stack (GSO/GRO cut the per-packet cost 15-20x on this project's \
         machines).",
        false,
    )
}

fn offload_gso(cx: &Ctx<'_>) -> Check {
    offload(
        cx,
        "offload_gso",
        "generic-segmentation-offload",
        "gso",
        "The node sends the copies of a fan-out to one destination as one UDP_SEGMENT \
         super-packet; with GSO on, the stack splits it as late as possible (in the driver or \
         the NIC), off it splits it before the qdisc and each segment pays the full path.",
        false,
    )
}

fn offload_tx_udp_segmentation(cx: &Ctx<'_>) -> Check {
    offload(
        cx,
        "offload_tx_udp_segmentation",
        "tx-udp-segmentation",
        "tx-udp-segmentation",
        "Hardware UDP segmentation (USO): the NIC splits a GSO super-packet, so the CPU \
         touches one header per batch; off, the kernel segments in software (still one \
         system call per batch).",
        false,
    )
}

fn offload_rx_udp_gro_forwarding(cx: &Ctx<'_>) -> Check {
    offload(
        cx,
        "offload_rx_udp_gro_forwarding",
        "rx-udp-gro-forwarding",
        "rx-udp-gro-forwarding",
        "For information: GRO of UDP that the host forwards (routers, tunnels). The node \
         terminates its UDP, and its UDP_GRO sockets do not need it.",
        true,
    )
}

const RSS_REASON: &str = "Each queue has its own ring and interrupt: with a queue per worker \
     the NIC spreads flows over the queues (RSS) and each worker's sends get a TX queue of \
     their own (XPS) instead of contending for one queue's lock.";

fn rx_queues(cx: &Ctx<'_>) -> Result<Vec<String>, String> {
    let iface = cx.iface.as_ref().map_err(Clone::clone)?;
    let dir = format!("/sys/class/net/{iface}/queues");
    Ok(cx
        .host
        .list(&dir)?
        .into_iter()
        .filter(|n| n.starts_with("rx-"))
        .map(|n| format!("{dir}/{n}"))
        .collect())
}

fn rss_queues(cx: &Ctx<'_>) -> Check {
    let id = "rss_queues";
    let workers = cx.target.workers;
    let iface = cx.iface.as_deref().unwrap_or("IFACE");
    let fix = format!(
        "ethtool -L {iface} combined {workers} (up to the maximum of ethtool -l {iface}; \
         CombinedChannels= in a systemd .link file keeps it)"
    );
    let want = format!(">= {workers} (one per worker)");
    match rx_queues(cx) {
        Err(e) => unknown(id, want, RSS_REASON, &e, fix),
        Ok(queues) => Check {
            id,
            status: if queues.len() >= workers {
                Status::Ok
            } else {
                Status::Warn
            },
            value: format!("{} rx queues", queues.len()),
            want,
            reason: RSS_REASON.to_owned(),
            fix,
        },
    }
}

/// One of the NIC's IRQs and where it may run.
#[derive(Debug)]
pub(crate) struct Irq {
    pub(crate) number: u32,
    pub(crate) affinity: Result<Vec<usize>, String>,
}

impl Irq {
    pub(crate) fn path(&self) -> String {
        format!("/proc/irq/{}/smp_affinity_list", self.number)
    }
}

/// The IRQs of the media NIC: `/proc/interrupts` lines whose name names the
/// interface or its device (`virtio2` for a virtio NIC), and the device's
/// `msi_irqs`.
pub(crate) fn nic_irqs(cx: &Ctx<'_>) -> Result<Vec<Irq>, String> {
    let iface = cx.iface.as_ref().map_err(Clone::clone)?;
    let device = cx.host.link_name(&format!("/sys/class/net/{iface}/device"));
    let mut numbers: Vec<u32> = cx
        .host
        .list(&format!("/sys/class/net/{iface}/device/msi_irqs"))
        .unwrap_or_default()
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    let interrupts = cx.host.read("/proc/interrupts")?;
    for (number, name) in parse::parse_interrupts(&interrupts) {
        if parse::names_device(&name, iface)
            || device
                .as_deref()
                .is_some_and(|d| parse::names_device(&name, d))
        {
            numbers.push(number);
        }
    }
    numbers.sort_unstable();
    numbers.dedup();
    if numbers.is_empty() {
        return Err(format!(
            "no IRQ of {iface}{} in /proc/interrupts",
            device.map(|d| format!(" ({d})")).unwrap_or_default()
        ));
    }
    Ok(numbers
        .into_iter()
        .map(|number| {
            let path = format!("/proc/irq/{number}/smp_affinity_list");
            let affinity =
                cx.host
                    .read(&path)
                    .and_then(|text| match parse::parse_cpu_list(&text) {
                        Ok(cpus) if cpus.is_empty() => Err(format!("{path}: empty")),
                        Ok(cpus) => Ok(cpus),
                        Err(e) => Err(format!("{path}: {e}")),
                    });
            Irq { number, affinity }
        })
        .collect())
}

const IRQ_REASON: &str = "A NIC interrupt runs its softirq (the driver's poll, GRO, the UDP \
     receive path) on the CPU that takes it; on a worker CPU that time is taken from the \
     worker's loop, which then delays or drops packets. The NIC's IRQs belong on CPUs without \
     workers.";

fn irq_affinity(cx: &Ctx<'_>) -> Check {
    let id = "irq_affinity";
    let workers = format_cpu_list(&cx.workers);
    let spare = cx.spare_cpus();
    let want = match &spare {
        Ok(s) if !s.is_empty() => format!("{} (no worker CPU)", format_cpu_list(s)),
        _ => "a CPU without a worker".to_owned(),
    };
    let fix = match &spare {
        Ok(s) if s.is_empty() => format!(
            "every online CPU runs a worker: an operator must leave cores to IRQs (fewer CPUs in \
             cpus = \"{workers}\" of sfu.toml and CPUAffinity= of sfu.service)"
        ),
        _ => format!(
            "sfu-tune apply (writes /proc/irq/N/smp_affinity_list); stop irqbalance or set \
             IRQBALANCE_BANNED_CPULIST={workers} so it does not move them back"
        ),
    };
    let irqs = match nic_irqs(cx) {
        Err(e) => return unknown(id, want, IRQ_REASON, &e, fix),
        Ok(irqs) => irqs,
    };
    let mut parts = Vec::new();
    let mut on_workers = false;
    let mut unreadable = None;
    for irq in &irqs {
        match &irq.affinity {
            Ok(cpus) => {
                on_workers |= cpus.iter().any(|c| cx.workers.contains(c));
                parts.push(format!("{}:{}", irq.number, format_cpu_list(cpus)));
            }
            Err(e) => {
                parts.push(format!("{}:?", irq.number));
                unreadable = Some(e.clone());
            }
        }
    }
    let value = format!("IRQ:CPUs {}", parts.join(" "));
    let status = if on_workers {
        Status::Warn
    } else if let Some(e) = unreadable {
        return unknown(id, want, IRQ_REASON, &e, fix);
    } else {
        Status::Ok
    };
    Check {
        id,
        status,
        value,
        want,
        reason: IRQ_REASON.to_owned(),
        fix,
    }
}

/// One RX queue's RPS mask: its `rps_cpus` path and the CPUs and group count.
pub(crate) type RpsMask = (String, Result<(Vec<usize>, usize), String>);

pub(crate) fn rps_masks(cx: &Ctx<'_>) -> Result<Vec<RpsMask>, String> {
    let queues = rx_queues(cx)?;
    if queues.is_empty() {
        return Err("no rx queue in /sys/class/net".to_owned());
    }
    Ok(queues
        .into_iter()
        .map(|q| {
            let path = format!("{q}/rps_cpus");
            let mask = cx
                .host
                .read(&path)
                .and_then(|t| parse::parse_hex_mask(&t).map_err(|e| format!("{path}: {e}")));
            (path, mask)
        })
        .collect())
}

const RPS_REASON: &str = "RPS hands received packets from the interrupted CPU to the CPUs of \
     rps_cpus for the protocol work; onto a worker CPU that steals the worker's time as an IRQ \
     there would. With the IRQs on spare CPUs, RPS is off (mask 0) or limited to spare CPUs.";

fn rps(cx: &Ctx<'_>) -> Check {
    let id = "rps";
    let iface = cx.iface.as_deref().unwrap_or("IFACE");
    let workers = format_cpu_list(&cx.workers);
    let want = format!("no worker CPU ({workers})");
    let fix = format!(
        "sfu-tune apply (clears the worker CPUs from /sys/class/net/{iface}/queues/rx-*/rps_cpus)"
    );
    let masks = match rps_masks(cx) {
        Err(e) => return unknown(id, want, RPS_REASON, &e, fix),
        Ok(m) => m,
    };
    let mut parts = Vec::new();
    let mut on_workers = false;
    for (path, mask) in &masks {
        let queue = path.rsplit('/').nth(1).unwrap_or("?");
        match mask {
            Ok((cpus, _)) => {
                on_workers |= cpus.iter().any(|c| cx.workers.contains(c));
                let cpus = if cpus.is_empty() {
                    "off".to_owned()
                } else {
                    format_cpu_list(cpus)
                };
                parts.push(format!("{queue}:{cpus}"));
            }
            Err(e) => return unknown(id, want, RPS_REASON, e, fix),
        }
    }
    Check {
        id,
        status: if on_workers { Status::Warn } else { Status::Ok },
        value: parts.join(" "),
        want,
        reason: RPS_REASON.to_owned(),
        fix,
    }
}

// ---------------------------------------------------------------- CPUs

pub(crate) fn governor_path(cpu: usize) -> String {
    format!("/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor")
}

/// Each worker CPU's governor; `None` where the CPU has no cpufreq.
pub(crate) fn governors(cx: &Ctx<'_>) -> Vec<(usize, Option<Result<String, String>>)> {
    cx.workers
        .iter()
        .map(|&cpu| {
            let dir = format!("/sys/devices/system/cpu/cpu{cpu}/cpufreq");
            if !cx.host.exists(&dir) {
                return (cpu, None);
            }
            let governor = cx
                .host
                .read(&governor_path(cpu))
                .map(|t| t.trim().to_owned())
                .and_then(|g| {
                    if g.is_empty() || g.len() > 32 || !g.bytes().all(|b| b.is_ascii_graphic()) {
                        Err(format!("{}: not a governor name", governor_path(cpu)))
                    } else {
                        Ok(g)
                    }
                });
            (cpu, Some(governor))
        })
        .collect()
}

const GOVERNOR_REASON: &str = "Workers alternate between bursts and short sleeps in ppoll; \
     powersave and schedutil clock a core down in the gaps, and the next burst runs slower \
     while it ramps up, adding latency and cutting throughput.";

fn cpu_governor(cx: &Ctx<'_>) -> Check {
    let id = "cpu_governor";
    let want = "performance".to_owned();
    let fix = "sfu-tune apply (writes performance to cpuN/cpufreq/scaling_governor of the \
               worker CPUs), or cpupower frequency-set -g performance"
        .to_owned();
    let mut by_governor: Vec<(String, Vec<usize>)> = Vec::new();
    let mut any = false;
    for (cpu, governor) in governors(cx) {
        match governor {
            None => {}
            Some(Err(e)) => return unknown(id, want, GOVERNOR_REASON, &e, fix),
            Some(Ok(g)) => {
                any = true;
                match by_governor.iter_mut().find(|(name, _)| *name == g) {
                    Some((_, cpus)) => cpus.push(cpu),
                    None => by_governor.push((g, vec![cpu])),
                }
            }
        }
    }
    if !any {
        let e = "no cpufreq for the worker CPUs in /sys/devices/system/cpu (a VM or a \
                 fixed-frequency host: nothing to set)";
        return unknown(id, want, GOVERNOR_REASON, e, fix);
    }
    let ok = by_governor.iter().all(|(g, _)| g == "performance");
    Check {
        id,
        status: if ok { Status::Ok } else { Status::Warn },
        value: by_governor
            .iter()
            .map(|(g, cpus)| format!("{g} on {}", format_cpu_list(cpus)))
            .collect::<Vec<_>>()
            .join(", "),
        want,
        reason: GOVERNOR_REASON.to_owned(),
        fix,
    }
}

const SMT_REASON: &str = "Two SMT threads of one core share its execution units and caches: \
     two workers on siblings each get much less than a core. Pin workers to one thread per \
     core (or switch SMT off) and leave the siblings to the OS and IRQs.";

fn smt_siblings(cx: &Ctx<'_>) -> Check {
    let id = "smt_siblings";
    let want = "no two worker CPUs on one core".to_owned();
    let mut pairs = Vec::new();
    let mut one_per_core: Vec<usize> = Vec::new();
    let mut read_any = false;
    for &cpu in &cx.workers {
        let path = format!("/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list");
        let siblings = match cx.host.read(&path) {
            Err(_) if !cx.host.exists(&path) => vec![cpu],
            Err(e) => return unknown(id, want, SMT_REASON, &e, smt_fix(cx, &cx.workers)),
            Ok(text) => match parse::parse_cpu_list(&text) {
                Ok(s) if s.is_empty() => {
                    let e = format!("{path}: empty");
                    return unknown(id, want, SMT_REASON, &e, smt_fix(cx, &cx.workers));
                }
                Ok(s) => {
                    read_any = true;
                    s
                }
                Err(e) => {
                    let e = format!("{path}: {e}");
                    return unknown(id, want, SMT_REASON, &e, smt_fix(cx, &cx.workers));
                }
            },
        };
        for &s in &siblings {
            if s > cpu && cx.workers.contains(&s) {
                pairs.push(format!("{cpu}+{s}"));
            }
        }
        if !siblings.iter().any(|s| one_per_core.contains(s)) {
            one_per_core.push(cpu);
        }
    }
    if !read_any {
        let e = "no topology/thread_siblings_list for the worker CPUs";
        return unknown(id, want, SMT_REASON, e, smt_fix(cx, &cx.workers));
    }
    Check {
        id,
        status: if pairs.is_empty() {
            Status::Ok
        } else {
            Status::Warn
        },
        value: if pairs.is_empty() {
            "no siblings among the worker CPUs".to_owned()
        } else {
            format!("siblings {}", pairs.join(" "))
        },
        want,
        reason: SMT_REASON.to_owned(),
        fix: smt_fix(cx, &one_per_core),
    }
}

fn smt_fix(cx: &Ctx<'_>, one_per_core: &[usize]) -> String {
    let mut fix = String::new();
    if one_per_core.len() < cx.workers.len() {
        fix = format!(
            "cpus = \"{}\" in sfu.toml (one thread per core) and CPUAffinity= to match, or ",
            format_cpu_list(one_per_core)
        );
    }
    fix.push_str("switch SMT off (firmware setting, or the nosmt kernel parameter)");
    fix
}

// ---------------------------------------------------------------- limits, clock

const LIMITS: &str = "/proc/self/limits";

fn show_limit(l: parse::Limit) -> String {
    l.map_or_else(|| "unlimited".to_owned(), |v| v.to_string())
}

const NOFILE_REASON: &str = "Every media socket, HTTP connection and Redis connection is a \
     descriptor; 1,100 idle HTTP connections locked the API under the default 1,024. Read from \
     /proc/self/limits (the process running sfu-tune); the node's own limit is LimitNOFILE= \
     of its unit, and the node raises its soft limit to the hard one.";

fn nofile(cx: &Ctx<'_>) -> Check {
    let id = "nofile";
    let want = ">= 65536".to_owned();
    let fix = "LimitNOFILE=1048576 in sfu.service (deploy/systemd/sfu.service has it), or \
               nofile in /etc/security/limits.conf for a shell"
        .to_owned();
    let limits = cx.host.read(LIMITS).and_then(|t| {
        parse::parse_limit(&t, "Max open files").map_err(|e| format!("{LIMITS}: {e}"))
    });
    match limits {
        Err(e) => unknown(id, want, NOFILE_REASON, &e, fix),
        Ok((soft, hard)) => Check {
            id,
            status: match soft {
                None => Status::Ok,
                Some(n) if n >= 65536 => Status::Ok,
                Some(n) if n >= 4096 => Status::Warn,
                Some(_) => Status::Fail,
            },
            value: format!("{} (hard {})", show_limit(soft), show_limit(hard)),
            want,
            reason: NOFILE_REASON.to_owned(),
            fix,
        },
    }
}

const MEMLOCK_REASON: &str = "With io = xdp each worker locks 40 MiB of AF_XDP UMEM (frames \
     and rings), charged to the node's locked-memory limit unless it holds CAP_IPC_LOCK. Past \
     the limit the AF_XDP socket set-up fails and the worker falls back to the socket backend.";

/// Bytes of AF_XDP UMEM one worker locks: 20,480 frames of 2 KiB
/// (packet-path's `xdp` module).
const UMEM_BYTES_PER_WORKER: u64 = 40 << 20;

fn memlock(cx: &Ctx<'_>) -> Check {
    let id = "memlock";
    let workers = u64::try_from(cx.target.workers).unwrap_or(u64::MAX);
    let need = workers.saturating_mul(UMEM_BYTES_PER_WORKER);
    let want = format!(
        "unlimited or >= {need} ({} workers x {} MiB, for io = xdp)",
        cx.target.workers,
        UMEM_BYTES_PER_WORKER >> 20
    );
    let fix = "LimitMEMLOCK=infinity in sfu.service (deploy/systemd/sfu.service has it)".to_owned();
    let limits = cx.host.read(LIMITS).and_then(|t| {
        parse::parse_limit(&t, "Max locked memory").map_err(|e| format!("{LIMITS}: {e}"))
    });
    match limits {
        Err(e) => unknown(id, want, MEMLOCK_REASON, &e, fix),
        Ok((soft, hard)) => Check {
            id,
            status: match soft {
                Some(n) if n < need => Status::Warn,
                _ => Status::Ok,
            },
            value: format!("{} (hard {})", show_limit(soft), show_limit(hard)),
            want,
            reason: MEMLOCK_REASON.to_owned(),
            fix,
        },
    }
}

const CLOCK: &str = "/sys/devices/system/clocksource/clocksource0/current_clocksource";
const CLOCK_AVAILABLE: &str = "/sys/devices/system/clocksource/clocksource0/available_clocksource";

fn clocksource(cx: &Ctx<'_>) -> Check {
    let id = "clocksource";
    let want = "tsc (arch_sys_counter on arm64)".to_owned();
    let available = cx
        .host
        .read(CLOCK_AVAILABLE)
        .map(|t| t.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .unwrap_or_default();
    let fix = if available.iter().any(|c| c == "tsc") || available.is_empty() {
        format!(
            "the kernel parameters clocksource=tsc tsc=reliable (when the CPU has an invariant \
             TSC), or at run time: echo tsc > {CLOCK}"
        )
    } else {
        format!(
            "this kernel offers {}: a host or hypervisor with a stable TSC (clocksource=tsc)",
            available.join(", ")
        )
    };
    let reason_base = "The node reads the clock for every batch (timers, pacing, RTCP, \
                       latency figures).";
    let current = cx.host.read(CLOCK).and_then(|t| {
        let t = t.trim().to_owned();
        if t.is_empty() || t.len() > 64 || !t.bytes().all(|b| b.is_ascii_graphic()) {
            Err(format!("{CLOCK}: not a clock source name"))
        } else {
            Ok(t)
        }
    });
    let current = match current {
        Err(e) => return unknown(id, want, reason_base, &e, fix),
        Ok(c) => c,
    };
    let (status, why) = match current.as_str() {
        "tsc" | "arch_sys_counter" => (Status::Ok, "A vDSO read of the CPU's counter: tens of ns."),
        "kvm-clock" | "xen" | "hyperv_clocksource_tsc_page" => (
            Status::Warn,
            "Every timestamp is still a vDSO read, but through the hypervisor's clock page: \
             slower than tsc, and a fall-back to a system call when the host marks it unstable.",
        ),
        "hpet" | "acpi_pm" | "jiffies" | "refined-jiffies" | "pit" => (
            Status::Fail,
            "No vDSO: every clock read is a system call and a device read, microseconds each.",
        ),
        _ => (
            Status::Warn,
            "A clock source this tool does not know the cost of.",
        ),
    };
    Check {
        id,
        status,
        value: current,
        want,
        reason: format!("{reason_base} {why}"),
        fix,
    }
}

/// A check that could not read its setting: `problem` leads the reason.
fn unknown(id: &'static str, want: String, reason: &str, problem: &str, fix: String) -> Check {
    Check {
        id,
        status: Status::Unknown,
        value: String::new(),
        want,
        reason: format!("{problem}. {reason}"),
        fix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_snake_case_and_in_order() {
        let host = Host::new(std::env::temp_dir().join("sfu-tune-no-such-root"));
        let target = Target {
            workers: 2,
            cpus: vec![0, 1],
            socket_buffer_bytes: 1 << 20,
            iface: None,
            busy_poll: Some(50),
        };
        let checks = check(&host, &target);
        let ids: Vec<&str> = checks.iter().map(|c| c.id).collect();
        assert_eq!(ids, CHECK_IDS);
        for id in CHECK_IDS {
            assert!(id.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
            assert_eq!(CHECK_IDS.iter().filter(|&&i| i == id).count(), 1);
        }
        // Nothing exists under that root: all unknown, each saying why.
        for c in &checks {
            assert_eq!(c.status, Status::Unknown, "{c:?}");
            assert!(!c.reason.is_empty() && !c.fix.is_empty());
        }
    }

    #[test]
    fn udp_mem_want_saturates() {
        let t = Target {
            workers: usize::MAX,
            cpus: vec![],
            socket_buffer_bytes: usize::MAX,
            iface: None,
            busy_poll: None,
        };
        assert_eq!(udp_mem_want(&t), u64::MAX.div_ceil(4096));
        let t = Target {
            workers: 6,
            cpus: vec![],
            socket_buffer_bytes: 32 << 20,
            iface: None,
            busy_poll: None,
        };
        assert_eq!(udp_mem_want(&t), 98304);
    }
}
