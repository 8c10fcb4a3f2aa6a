//! `apply` on fixture hosts: it brings the sysctls, IRQs, governors and RPS
//! masks to what `check` wants, writes the sysctl.d file, never lowers a
//! value, leaves busy polling alone unless `--busy-poll` asks for it (and
//! keeps the lines an earlier `--busy-poll` wrote), and
//! `--dry-run` writes nothing.

mod common;

use std::process::Command;

use tuning::{Host, Status, check, plan};

#[test]
fn apply_then_check_shows_the_applied_items_ok() {
    let dir = common::host(false);
    let host = Host::new(dir.path());
    let target = common::target();
    let plan = plan(&host, &target);
    let outcomes = plan.apply(&host);
    for o in &outcomes {
        assert_eq!(o.error, None, "{o}");
    }
    let lines: Vec<String> = outcomes.iter().map(|o| o.action.clone()).collect();
    for line in [
        "write /etc/sysctl.d/90-sfu.conf",
        "set net.core.rmem_max 212992 -> 33554432",
        "set net.core.wmem_max 212992 -> 33554432",
        "set net.core.netdev_max_backlog 1000 -> 16384",
        "set net.core.optmem_max 20480 -> 65536",
        "set net.ipv4.udp_mem 18951 25269 37902 -> 18951 25269 98304",
        "set /proc/irq/38/smp_affinity_list 0-7 -> 0-1",
        "set /sys/devices/system/cpu/cpu2/cpufreq/scaling_governor powersave -> performance",
        "set /sys/class/net/eth0/queues/rx-0/rps_cpus 000000ff -> 00000003",
    ] {
        assert!(lines.iter().any(|l| l == line), "no {line:?} in {lines:#?}");
    }
    // Busy polling is not asked for: not set.
    assert!(
        lines.iter().all(|l| !l.contains("busy")),
        "sets busy polling: {lines:#?}"
    );

    let after = common::statuses(&check(&host, &target));
    for id in [
        "rmem_max",
        "wmem_max",
        "netdev_max_backlog",
        "udp_mem",
        "busy_poll",
        "busy_read",
        "optmem_max",
        "irq_affinity",
        "rps",
        "cpu_governor",
    ] {
        assert_eq!(after[id], Status::Ok, "{id} after apply");
    }
    // What needs an operator stays as it was, and the plan says how.
    assert_eq!(after["smt_siblings"], Status::Warn);
    assert_eq!(after["nofile"], Status::Fail);
    assert_eq!(after["clocksource"], Status::Fail);
    let operator = plan.operator().join("\n");
    for needle in [
        "smt_siblings:",
        "nosmt",
        "LimitNOFILE=",
        "LimitMEMLOCK=",
        "clocksource=tsc",
        "ethtool -L eth0",
        "IRQBALANCE_BANNED_CPULIST=2-7",
    ] {
        assert!(operator.contains(needle), "no {needle:?} in:\n{operator}");
    }

    // The files as written.
    let root = dir.path();
    for irq in common::NIC_IRQS {
        assert_eq!(
            common::read(root, &format!("/proc/irq/{irq}/smp_affinity_list")),
            "0-1"
        );
    }
    for irq in common::OTHER_IRQS {
        assert_eq!(
            common::read(root, &format!("/proc/irq/{irq}/smp_affinity_list")),
            "0-7\n"
        );
    }
    for cpu in 0..8 {
        let g = common::read(
            root,
            &format!("/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"),
        );
        assert_eq!(
            g.trim(),
            if cpu < 2 { "powersave" } else { "performance" },
            "cpu{cpu}"
        );
    }
    assert_eq!(
        common::read(root, "/sys/class/net/lo/queues/rx-0/rps_cpus"),
        "ff\n"
    );
    assert_eq!(
        common::read(root, "/proc/sys/net/ipv4/udp_mem"),
        "18951 25269 98304"
    );
    for name in ["busy_poll", "busy_read"] {
        assert_eq!(
            common::read(root, &format!("/proc/sys/net/core/{name}")),
            "0\n"
        );
    }

    let conf = common::read(root, "/etc/sysctl.d/90-sfu.conf");
    let settings: Vec<&str> = conf
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert_eq!(
        settings,
        [
            "net.core.rmem_max = 33554432",
            "net.core.wmem_max = 33554432",
            "net.core.netdev_max_backlog = 16384",
            "net.core.optmem_max = 65536",
            "net.ipv4.udp_mem = 18951 25269 98304",
        ]
    );
    assert!(!conf.contains("busy_poll"), "{conf}");
    assert!(!conf.contains("busy_read"), "{conf}");
    // Each setting follows its reason.
    let lines: Vec<&str> = conf.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if !l.starts_with('#') && !l.is_empty() {
            assert!(lines[i - 1].starts_with("# "), "no comment above {l:?}");
        }
    }
    assert!(conf.contains("SO_RCVBUFFORCE"));

    // A second apply has nothing left to set but the file.
    let again = tuning::plan(&host, &target);
    let lines: Vec<String> = again.actions().iter().map(ToString::to_string).collect();
    assert_eq!(lines, ["write /etc/sysctl.d/90-sfu.conf"]);
}

#[test]
fn apply_never_lowers_a_value_already_higher() {
    let dir = common::host(false);
    let root = dir.path();
    common::write(root, "/proc/sys/net/core/rmem_max", "1073741824\n");
    common::write(root, "/proc/sys/net/core/netdev_max_backlog", "250000\n");
    common::write(root, "/proc/sys/net/core/busy_poll", "100\n");
    common::write(root, "/proc/sys/net/ipv4/udp_mem", "1 2 9999999\n");
    let host = Host::new(root);
    let plan = plan(&host, &common::target());
    for a in plan.actions() {
        for sysctl in ["rmem_max", "netdev_max_backlog", "busy_poll", "udp_mem"] {
            assert!(!a.path().ends_with(sysctl), "plans to change {sysctl}: {a}");
        }
    }
    for o in plan.apply(&host) {
        assert_eq!(o.error, None, "{o}");
    }
    assert_eq!(
        common::read(root, "/proc/sys/net/core/rmem_max"),
        "1073741824\n"
    );
    assert_eq!(
        common::read(root, "/proc/sys/net/core/netdev_max_backlog"),
        "250000\n"
    );
    assert_eq!(common::read(root, "/proc/sys/net/core/busy_poll"), "100\n");
    assert_eq!(
        common::read(root, "/proc/sys/net/ipv4/udp_mem"),
        "1 2 9999999\n"
    );
    assert_eq!(
        common::read(root, "/proc/sys/net/core/wmem_max"),
        "33554432"
    );
    let conf = common::read(root, "/etc/sysctl.d/90-sfu.conf");
    for line in [
        "net.core.rmem_max = 1073741824\n",
        "net.core.netdev_max_backlog = 250000\n",
        "net.ipv4.udp_mem = 1 2 9999999\n",
        "net.core.wmem_max = 33554432\n",
    ] {
        assert!(conf.contains(line), "no {line:?} in:\n{conf}");
    }
    // Without --busy-poll the busy sysctls are neither set nor written.
    assert!(!conf.contains("busy_"), "{conf}");
    assert_eq!(common::read(root, "/proc/sys/net/core/busy_read"), "0\n");

    // With --busy-poll 50: busy_read is raised, busy_poll (100) is not
    // lowered, and the file keeps the higher value.
    let busy = tuning::Target {
        busy_poll: Some(50),
        ..common::target()
    };
    let plan = tuning::plan(&host, &busy);
    let lines: Vec<String> = plan.actions().iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "write /etc/sysctl.d/90-sfu.conf",
            "set net.core.busy_read 0 -> 50"
        ],
        "{lines:#?}"
    );
    for o in plan.apply(&host) {
        assert_eq!(o.error, None, "{o}");
    }
    assert_eq!(common::read(root, "/proc/sys/net/core/busy_poll"), "100\n");
    assert_eq!(common::read(root, "/proc/sys/net/core/busy_read"), "50");
    let conf = common::read(root, "/etc/sysctl.d/90-sfu.conf");
    for line in [
        "net.core.busy_poll = 100\n",
        "net.core.busy_read = 50\n",
        "net.core.rmem_max = 1073741824\n",
    ] {
        assert!(conf.contains(line), "no {line:?} in:\n{conf}");
    }
}

#[test]
fn dry_run_writes_nothing_and_prints_what_apply_would() {
    let dir = common::host(false);
    let before = common::snapshot(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_sfu-tune"))
        .args(["apply", "--dry-run", "--root"])
        .arg(dir.path())
        .args(common::TARGET_FLAGS)
        .output()
        .expect("run sfu-tune");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        common::snapshot(dir.path()),
        before,
        "--dry-run changed the tree"
    );
    let actions: Vec<&str> = text.lines().take_while(|l| !l.is_empty()).collect();
    assert!(actions.len() >= 11, "{text}");
    assert!(actions.iter().all(|l| l.starts_with("would ")), "{text}");
    assert!(
        text.contains("would set net.core.rmem_max 212992 -> 33554432\n"),
        "{text}"
    );
    assert!(
        text.contains("would write /etc/sysctl.d/90-sfu.conf\n"),
        "{text}"
    );
    assert!(text.contains("Left to an operator"), "{text}");
    assert!(!text.contains("busy"), "{text}");

    // The same plan carried out by the binary, then checked by it.
    let out = Command::new(env!("CARGO_BIN_EXE_sfu-tune"))
        .args(["apply", "--root"])
        .arg(dir.path())
        .args(common::TARGET_FLAGS)
        .output()
        .expect("run sfu-tune");
    let applied = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{applied}");
    for line in actions {
        let line = line.strip_prefix("would ").expect("prefixed");
        assert!(
            applied.lines().any(|l| l == line),
            "{line:?} not in:\n{applied}"
        );
    }
    assert_ne!(common::snapshot(dir.path()), before);
}

#[test]
fn a_failed_write_is_reported_and_the_rest_goes_on() {
    let dir = common::host(false);
    let root = dir.path();
    let host = Host::new(root);
    let plan = plan(&host, &common::target());
    // The attribute disappears between plan and apply (a write that fails,
    // whoever runs the test: root ignores permission bits).
    std::fs::remove_file(root.join("proc/sys/net/core/rmem_max")).expect("rm");
    let outcomes = plan.apply(&host);
    let failed: Vec<_> = outcomes.iter().filter(|o| o.error.is_some()).collect();
    assert_eq!(failed.len(), 1, "{outcomes:#?}");
    assert!(failed[0].action.contains("net.core.rmem_max"));
    assert!(failed[0].to_string().contains("FAILED"));
    assert!(
        !root.join("proc/sys/net/core/rmem_max").exists(),
        "apply created a /proc/sys file"
    );
    assert_eq!(
        common::read(root, "/proc/sys/net/core/wmem_max"),
        "33554432"
    );

    // The binary exits 1 then (a directory where the sysctl.d file goes).
    let dir = common::host(false);
    std::fs::create_dir_all(dir.path().join("etc/sysctl.d/90-sfu.conf")).expect("mkdir");
    let out = Command::new(env!("CARGO_BIN_EXE_sfu-tune"))
        .args(["apply", "--root"])
        .arg(dir.path())
        .args(common::TARGET_FLAGS)
        .output()
        .expect("run sfu-tune");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("write /etc/sysctl.d/90-sfu.conf: FAILED"),
        "{text}"
    );
    assert!(
        text.contains("set net.core.rmem_max 212992 -> 33554432\n"),
        "{text}"
    );
    assert_eq!(
        common::read(dir.path(), "/proc/sys/net/core/rmem_max"),
        "33554432"
    );
}

fn sfu_tune(args: &[&str], root: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sfu-tune"))
        .args(args)
        .arg("--root")
        .arg(root)
        .args(common::TARGET_FLAGS)
        .output()
        .expect("run sfu-tune")
}

fn busy_statuses(out: &std::process::Output) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(&out.stdout);
    let value: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    value
        .as_array()
        .expect("an array")
        .iter()
        .filter(|c| c["id"] == "busy_poll" || c["id"] == "busy_read")
        .map(|c| {
            (
                c["id"].as_str().expect("an id").to_owned(),
                c["status"].as_str().expect("a status").to_owned(),
            )
        })
        .collect()
}

#[test]
fn busy_poll_50_makes_apply_set_both_and_check_judge_against_it() {
    let dir = common::host(false);
    let root = dir.path();
    let out = sfu_tune(&["apply", "--busy-poll", "50"], root);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for line in [
        "set net.core.busy_poll 0 -> 50",
        "set net.core.busy_read 0 -> 50",
        "set net.core.rmem_max 212992 -> 33554432",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }
    assert_eq!(common::read(root, "/proc/sys/net/core/busy_poll"), "50");
    assert_eq!(common::read(root, "/proc/sys/net/core/busy_read"), "50");
    let conf = common::read(root, "/etc/sysctl.d/90-sfu.conf");
    let settings: Vec<&str> = conf
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert_eq!(
        settings,
        [
            "net.core.rmem_max = 33554432",
            "net.core.wmem_max = 33554432",
            "net.core.netdev_max_backlog = 16384",
            "net.core.busy_poll = 50",
            "net.core.busy_read = 50",
            "net.core.optmem_max = 65536",
            "net.ipv4.udp_mem = 18951 25269 98304",
        ]
    );
    assert!(conf.contains("58-65 %"), "the reason is not above:\n{conf}");

    // check --busy-poll 50: both ok now.
    let ok = [
        ("busy_poll".to_owned(), "ok".to_owned()),
        ("busy_read".to_owned(), "ok".to_owned()),
    ];
    let out = sfu_tune(&["check", "--json", "--busy-poll", "50"], root);
    assert_eq!(busy_statuses(&out), ok);

    // A value below the flag warns (with the flag only).
    common::write(root, "/proc/sys/net/core/busy_read", "20\n");
    let out = sfu_tune(&["check", "--json", "--busy-poll", "50"], root);
    assert_eq!(
        busy_statuses(&out),
        [
            ("busy_poll".to_owned(), "ok".to_owned()),
            ("busy_read".to_owned(), "warn".to_owned()),
        ]
    );
    let out = sfu_tune(&["check", "--json", "--busy-poll", "10"], root);
    assert_eq!(busy_statuses(&out), ok);
    let out = sfu_tune(&["check", "--json"], root);
    assert_eq!(busy_statuses(&out), ok);
    let out = sfu_tune(&["check", "--busy-poll", "50"], root);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(", busy poll 50 µs"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("warn    busy_read") && l.ends_with(">= 50 (--busy-poll)")),
        "{text}"
    );

    // A second apply with the flag raises busy_read again and nothing else
    // of the sysctls; without it (the boot-time apply of sfu-tune.service),
    // busy polling is left as it is and the file keeps the operator's lines.
    let out = sfu_tune(&["apply", "--dry-run", "--busy-poll", "50"], root);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l == "would set net.core.busy_read 20 -> 50"),
        "{text}"
    );
    assert!(!text.contains("busy_poll"), "{text}");
    let out = sfu_tune(&["apply"], root);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("busy"), "{text}");
    assert_eq!(common::read(root, "/proc/sys/net/core/busy_poll"), "50");
    assert_eq!(common::read(root, "/proc/sys/net/core/busy_read"), "20\n");
    let conf = common::read(root, "/etc/sysctl.d/90-sfu.conf");
    for line in ["net.core.busy_poll = 50", "net.core.busy_read = 50"] {
        assert!(conf.lines().any(|l| l == line), "no {line:?} in:\n{conf}");
    }
    assert!(
        conf.contains("# (kept: written by an earlier apply --busy-poll)"),
        "{conf}"
    );
}

/// The sysctl.d file is replaced whole through a new file and a rename:
/// a symlink in its place is replaced, not written through, and no
/// temporary file is left behind.
#[test]
fn apply_replaces_the_sysctl_file_and_never_writes_through_a_symlink() {
    let dir = common::host(false);
    let root = dir.path();
    common::write(root, "/etc/elsewhere", "untouched\n");
    std::fs::create_dir_all(root.join("etc/sysctl.d")).expect("mkdir");
    std::os::unix::fs::symlink(
        root.join("etc/elsewhere"),
        root.join("etc/sysctl.d/90-sfu.conf"),
    )
    .expect("symlink");
    let host = Host::new(root);
    for o in plan(&host, &common::target()).apply(&host) {
        assert_eq!(o.error, None, "{o}");
    }
    assert_eq!(common::read(root, "/etc/elsewhere"), "untouched\n");
    let conf = root.join("etc/sysctl.d/90-sfu.conf");
    let meta = std::fs::symlink_metadata(&conf).expect("written");
    assert!(meta.is_file(), "the symlink was replaced by a file");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(meta.permissions().mode() & 0o777, 0o644);
    assert!(common::read(root, "/etc/sysctl.d/90-sfu.conf").contains("net.core.rmem_max"));
    let names: Vec<String> = std::fs::read_dir(root.join("etc/sysctl.d"))
        .expect("listed")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["90-sfu.conf"]);
}
