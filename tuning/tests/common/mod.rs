//! Fixture hosts: a root directory with the `/proc` and `/sys` files the
//! checks read, untuned (a distribution's defaults) or tuned for the node.
//! Both have 8 CPUs, eth0 (a virtio NIC, `virtio2`) on the default route,
//! and the target is 6 workers on CPUs 2-7 with 32 MiB socket buffers and
//! no busy polling asked for. Busy polling is 0 on the untuned host and 50
//! on the tuned one (both ok without `--busy-poll`).

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tuning::Target;

pub const MIB32: &str = "33554432";

/// The target the fixtures are judged against.
pub fn target() -> Target {
    Target {
        workers: 6,
        cpus: (2..8).collect(),
        socket_buffer_bytes: 32 << 20,
        iface: None,
        busy_poll: None,
    }
}

/// The same target as `sfu-tune` flags.
pub const TARGET_FLAGS: [&str; 4] = ["--workers", "6", "--cpus", "2-7"];

pub fn write(root: &Path, path: &str, text: impl AsRef<[u8]>) {
    let path = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    std::fs::write(&path, text).expect("write fixture file");
}

pub fn read(root: &Path, path: &str) -> String {
    std::fs::read_to_string(root.join(path.trim_start_matches('/'))).expect("read fixture file")
}

fn limits(nofile: &str, nofile_hard: &str, memlock: &str) -> String {
    format!(
        "Limit                     Soft Limit           Hard Limit           Units     \n\
         Max cpu time              unlimited            unlimited            seconds   \n\
         Max open files            {nofile:<20} {nofile_hard:<20} files     \n\
         Max locked memory         {memlock:<20} {memlock:<20} bytes     \n\
         Max realtime timeout      unlimited            unlimited            us        \n"
    )
}

fn interrupts() -> String {
    let mut text = String::from("    ");
    for cpu in 0..8 {
        text.push_str(&format!("       CPU{cpu}"));
    }
    text.push('\n');
    let counts = "          5 ".repeat(8);
    for (irq, chip, name) in [
        (26, "IO-APIC   4-edge", "ttyS0"),
        (37, "PCI-MSIX-0000:00:03.0   0-edge", "virtio2-config"),
        (38, "PCI-MSIX-0000:00:03.0   1-edge", "virtio2-input.0"),
        (39, "PCI-MSIX-0000:00:03.0   2-edge", "virtio2-output.0"),
        (40, "PCI-MSIX-0000:00:04.0   1-edge", "virtio3-rx"),
        (41, "PCI-MSIX-0000:00:06.0   1-edge", "virtio20-input.0"),
    ] {
        text.push_str(&format!(" {irq}: {counts} {chip}      {name}\n"));
    }
    text.push_str(" NMI:          0          0   Non-maskable interrupts\n ERR:          0\n");
    text
}

/// The IRQs of the fixture's NIC (eth0 = virtio2) and of other devices.
pub const NIC_IRQS: [u32; 3] = [37, 38, 39];
pub const OTHER_IRQS: [u32; 3] = [26, 40, 41];

/// Builds a host under a new temp dir. `tuned`: every setting as the node
/// wants it; else a stock host with SMT siblings among the worker CPUs.
pub fn host(tuned: bool) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("sfu-tune-fixture-")
        .tempdir()
        .expect("a temp dir");
    let root = dir.path();
    let core = |name: &str, untuned: &str, tuned_value: &str| {
        let v = if tuned { tuned_value } else { untuned };
        write(
            root,
            &format!("/proc/sys/net/core/{name}"),
            format!("{v}\n"),
        );
    };
    core("rmem_max", "212992", MIB32);
    core("wmem_max", "212992", MIB32);
    core("netdev_max_backlog", "1000", "16384");
    core("busy_poll", "0", "50");
    core("busy_read", "0", "50");
    core("optmem_max", "20480", "65536");
    write(
        root,
        "/proc/sys/net/ipv4/udp_mem",
        if tuned {
            "18951\t25269\t98304\n"
        } else {
            "18951\t25269\t37902\n"
        },
    );
    write(
        root,
        "/proc/net/route",
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
         lo\t00000000\t00000000\t0001\t0\t0\t0\t00000000\t0\t0\t0\n\
         eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
         eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n",
    );
    let net = root.join("sys/class/net");
    std::fs::create_dir_all(net.join("lo/queues/rx-0")).expect("mkdir");
    write(root, "/sys/class/net/lo/queues/rx-0/rps_cpus", "ff\n");
    std::fs::create_dir_all(net.join("eth0")).expect("mkdir");
    std::os::unix::fs::symlink(
        "../../../devices/pci0000:00/0000:00:03.0/virtio2",
        net.join("eth0/device"),
    )
    .expect("symlink");
    let queues = if tuned { 6 } else { 1 };
    for q in 0..queues {
        let mask = if tuned { "00\n" } else { "ff\n" };
        write(
            root,
            &format!("/sys/class/net/eth0/queues/rx-{q}/rps_cpus"),
            mask,
        );
        write(
            root,
            &format!("/sys/class/net/eth0/queues/tx-{q}/xps_cpus"),
            "00\n",
        );
    }
    write(root, "/sys/devices/system/cpu/online", "0-7\n");
    for cpu in 0..8 {
        let dir = format!("/sys/devices/system/cpu/cpu{cpu}");
        let governor = if tuned { "performance" } else { "powersave" };
        write(
            root,
            &format!("{dir}/cpufreq/scaling_governor"),
            format!("{governor}\n"),
        );
        let siblings = match (tuned, cpu) {
            (true, _) => cpu.to_string(),
            (false, 0..4) => format!("{cpu},{}", cpu + 4),
            (false, _) => format!("{},{cpu}", cpu - 4),
        };
        write(
            root,
            &format!("{dir}/topology/thread_siblings_list"),
            siblings + "\n",
        );
    }
    write(root, "/proc/interrupts", interrupts());
    for irq in NIC_IRQS.iter().chain(&OTHER_IRQS) {
        let nic = NIC_IRQS.contains(irq);
        let cpus = if tuned && nic { "0-1\n" } else { "0-7\n" };
        write(root, &format!("/proc/irq/{irq}/smp_affinity_list"), cpus);
    }
    write(
        root,
        "/proc/self/limits",
        if tuned {
            limits("1048576", "1048576", "unlimited")
        } else {
            limits("1024", "524288", "8388608")
        },
    );
    let clock = "/sys/devices/system/clocksource/clocksource0";
    write(
        root,
        &format!("{clock}/current_clocksource"),
        if tuned { "tsc\n" } else { "hpet\n" },
    );
    write(
        root,
        &format!("{clock}/available_clocksource"),
        "tsc hpet acpi_pm \n",
    );
    dir
}

/// A stand-in for `ethtool` printing a tuned NIC's rings and features.
pub fn fake_ethtool(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("fake-ethtool");
    std::fs::write(
        &path,
        "#!/bin/sh\n\
         case \"$1\" in\n\
         -g) printf 'Ring parameters for %s:\\nPre-set maximums:\\nRX:\\t\\t\\t4096\\nRX Mini:\\t\\tn/a\\nTX:\\t\\t\\t4096\\nCurrent hardware settings:\\nRX:\\t\\t\\t4096\\nRX Mini:\\t\\tn/a\\nTX:\\t\\t\\t4096\\n' \"$2\" ;;\n\
         -k) printf 'Features for %s:\\nrx-checksumming: on\\ngeneric-segmentation-offload: on\\ngeneric-receive-offload: on\\ntx-udp-segmentation: on\\nrx-udp-gro-forwarding: off\\n' \"$2\" ;;\n\
         *) exit 1 ;;\n\
         esac\n",
    )
    .expect("write the fake ethtool");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// Every regular file under `root` with its bytes (and every symlink's
/// target), to compare a tree before and after.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).expect("read_link");
                files.insert(path, target.into_os_string().into_encoded_bytes());
            } else if meta.is_dir() {
                files.insert(path.clone(), b"<dir>".to_vec());
                dirs.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).expect("read"));
            }
        }
    }
    files
}

/// Every regular file under `root` (for the garbage test).
pub fn files(root: &Path) -> Vec<PathBuf> {
    snapshot(root)
        .into_keys()
        .filter(|p| {
            std::fs::symlink_metadata(p)
                .map(|m| m.is_file())
                .unwrap_or(false)
        })
        .collect()
}

/// Status of each check by id.
pub fn statuses(checks: &[tuning::Check]) -> BTreeMap<&'static str, tuning::Status> {
    checks.iter().map(|c| (c.id, c.status)).collect()
}
