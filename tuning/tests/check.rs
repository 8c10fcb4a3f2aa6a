//! `check` against fixture hosts: an untuned host gets the expected fails
//! and warnings, a tuned one is all ok; busy polling is ok at any value
//! unless `--busy-poll` asks for some.

mod common;

use tuning::{CHECK_IDS, Host, Status, check};

#[test]
fn an_untuned_host_fails_and_warns_where_expected() {
    let dir = common::host(false);
    let checks = check(&Host::new(dir.path()), &common::target());
    let ids: Vec<&str> = checks.iter().map(|c| c.id).collect();
    assert_eq!(ids, CHECK_IDS);
    let got = common::statuses(&checks);
    let expect = |ids: &[&str], status: Status| {
        for id in ids {
            assert_eq!(
                got[id],
                status,
                "{id}: {:?}",
                checks.iter().find(|c| c.id == *id)
            );
        }
    };
    expect(
        &["rmem_max", "wmem_max", "nofile", "clocksource"],
        Status::Fail,
    );
    expect(
        &[
            "netdev_max_backlog",
            "udp_mem",
            "optmem_max",
            "rss_queues",
            "irq_affinity",
            "rps",
            "cpu_governor",
            "smt_siblings",
            "memlock",
        ],
        Status::Warn,
    );
    // Busy polling off is fine: ok, not a warning.
    expect(&["busy_poll", "busy_read"], Status::Ok);
    // ethtool asks the running kernel, not the tree: not run under --root.
    for id in [
        "nic_rings",
        "offload_gro",
        "offload_gso",
        "offload_tx_udp_segmentation",
        "offload_rx_udp_gro_forwarding",
    ] {
        let c = checks.iter().find(|c| c.id == id).expect("present");
        assert_eq!(c.status, Status::Unknown, "{c:?}");
        assert!(c.reason.starts_with("not read under --root"), "{c:?}");
    }
    assert_eq!(got.len(), 20);
    let memlock = checks.iter().find(|c| c.id == "memlock").expect("present");
    assert!(
        memlock
            .want
            .starts_with("unlimited or >= 251658240 (6 workers x 40 MiB"),
        "{memlock:?}"
    );

    let by_id = |id: &str| checks.iter().find(|c| c.id == id).expect("present");
    assert_eq!(by_id("rmem_max").value, "212992");
    assert_eq!(by_id("rmem_max").want, ">= 33554432");
    assert_eq!(by_id("nofile").value, "1024 (hard 524288)");
    assert_eq!(by_id("clocksource").value, "hpet");
    // Only the NIC's IRQs (virtio2's), not virtio3's or virtio20's.
    assert_eq!(by_id("irq_affinity").value, "IRQ:CPUs 37:0-7 38:0-7 39:0-7");
    assert!(by_id("irq_affinity").want.starts_with("0-1"));
    assert_eq!(by_id("smt_siblings").value, "siblings 2+6 3+7");
    assert!(
        by_id("smt_siblings").fix.contains("cpus = \"2-5\""),
        "{:?}",
        by_id("smt_siblings")
    );
    assert_eq!(by_id("cpu_governor").value, "powersave on 2-7");
    assert_eq!(by_id("rps").value, "rx-0:0-7");
    assert!(by_id("udp_mem").want.starts_with("max >= 98304 pages"));
    for c in &checks {
        assert!(
            !c.reason.is_empty() && !c.fix.is_empty() && !c.want.is_empty(),
            "{c:?}"
        );
    }
}

#[test]
fn a_tuned_host_is_all_ok() {
    let dir = common::host(true);
    let ethtool = common::fake_ethtool(dir.path());
    let host = Host::new(dir.path()).with_ethtool(ethtool);
    let checks = check(&host, &common::target());
    for c in &checks {
        assert_eq!(c.status, Status::Ok, "{c:?}");
    }
    let rings = checks
        .iter()
        .find(|c| c.id == "nic_rings")
        .expect("present");
    assert_eq!(rings.value, "rx 4096 tx 4096");
}

#[test]
fn a_tuned_host_without_ethtool_has_only_the_nic_settings_unknown() {
    let dir = common::host(true);
    let checks = check(&Host::new(dir.path()), &common::target());
    for c in &checks {
        let nic = c.id == "nic_rings" || c.id.starts_with("offload_");
        let want = if nic { Status::Unknown } else { Status::Ok };
        assert_eq!(c.status, want, "{c:?}");
    }
}

#[test]
fn a_lower_ring_or_an_offload_off_warns_with_the_command() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = common::host(true);
    let ethtool = dir.path().join("ethtool-low");
    std::fs::write(
        &ethtool,
        "#!/bin/sh\ncase \"$1\" in\n\
         -g) printf 'Pre-set maximums:\\nRX: 4096\\nTX: 4096\\nCurrent hardware settings:\\nRX: 256\\nTX: 4096\\n' ;;\n\
         -k) printf 'generic-receive-offload: off\\ngeneric-segmentation-offload: on\\ntx-udp-segmentation: off [fixed]\\n' ;;\n\
         esac\n",
    )
    .expect("write");
    std::fs::set_permissions(&ethtool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let checks = check(
        &Host::new(dir.path()).with_ethtool(&ethtool),
        &common::target(),
    );
    let by_id = |id: &str| checks.iter().find(|c| c.id == id).expect("present");
    assert_eq!(by_id("nic_rings").status, Status::Warn);
    assert!(
        by_id("nic_rings")
            .fix
            .starts_with("ethtool -G eth0 rx 4096 ("),
        "{:?}",
        by_id("nic_rings")
    );
    assert_eq!(by_id("offload_gro").status, Status::Warn);
    assert!(
        by_id("offload_gro")
            .fix
            .starts_with("ethtool -K eth0 gro on")
    );
    assert_eq!(by_id("offload_gso").status, Status::Ok);
    assert_eq!(by_id("offload_tx_udp_segmentation").status, Status::Warn);
    assert_eq!(by_id("offload_tx_udp_segmentation").value, "off [fixed]");
    // Not listed by this ethtool: unknown, saying so.
    let fwd = by_id("offload_rx_udp_gro_forwarding");
    assert_eq!(fwd.status, Status::Unknown);
    assert!(fwd.reason.contains("does not list rx-udp-gro-forwarding"));
}

#[test]
fn no_spare_cpu_means_an_operator_must_leave_one() {
    let dir = common::host(true);
    let mut target = common::target();
    target.cpus = (0..8).collect();
    target.workers = 8;
    let checks = check(&Host::new(dir.path()), &target);
    let irq = checks
        .iter()
        .find(|c| c.id == "irq_affinity")
        .expect("present");
    assert_eq!(irq.status, Status::Warn);
    assert!(
        irq.fix.contains("an operator must leave cores to IRQs"),
        "{irq:?}"
    );
    let plan = tuning::plan(&Host::new(dir.path()), &target);
    assert!(
        plan.actions()
            .iter()
            .all(|a| !a.path().starts_with("/proc/irq"))
    );
    assert!(
        plan.operator()
            .iter()
            .any(|l| l.contains("leave cores to IRQs"))
    );
}

#[test]
fn the_media_ip_picks_its_interface() {
    let dir = common::host(true);
    // A second NIC holding 198.51.100.0/24.
    let route = common::read(dir.path(), "/proc/net/route")
        + "eth1\t006433C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
    common::write(dir.path(), "/proc/net/route", route);
    let host = Host::new(dir.path());
    if cfg!(target_endian = "little") {
        assert_eq!(
            host.route_iface(Some("198.51.100.7".parse().expect("ip")))
                .as_deref(),
            Some("eth1")
        );
    }
    assert_eq!(
        host.route_iface(Some("203.0.113.1".parse().expect("ip")))
            .as_deref(),
        Some("eth0")
    );
    assert_eq!(host.route_iface(None).as_deref(), Some("eth0"));
    assert_eq!(
        host.route_iface(Some("127.0.0.1".parse().expect("ip")))
            .as_deref(),
        Some("eth0")
    );
}

#[test]
fn busy_polling_is_ok_off_or_on_without_the_flag() {
    let dir = common::host(false);
    let host = Host::new(dir.path());
    let target = common::target();
    assert_eq!(target.busy_poll, None);
    for value in ["0", "25", "50", "1000"] {
        for name in ["busy_poll", "busy_read"] {
            common::write(
                dir.path(),
                &format!("/proc/sys/net/core/{name}"),
                format!("{value}\n"),
            );
        }
        let checks = check(&host, &target);
        for id in ["busy_poll", "busy_read"] {
            let c = checks.iter().find(|c| c.id == id).expect("present");
            assert_eq!(c.status, Status::Ok, "{c:?}");
            assert_eq!(c.value, value, "{c:?}");
            assert_eq!(
                c.want, "0 (off), or 25-100 µs on hosts with spare worker CPU",
                "{c:?}"
            );
            // The trade and what it measured here.
            assert!(c.reason.contains("48-49 % to 58-65 %"), "{c:?}");
            assert!(c.reason.contains("seed meeting"), "{c:?}");
            assert!(c.reason.contains("no latency gain"), "{c:?}");
            assert!(c.reason.contains("2 vCPU"), "{c:?}");
            assert!(c.fix.contains("--busy-poll 50"), "{c:?}");
        }
    }
}

#[test]
fn the_busy_poll_flag_warns_below_it() {
    let dir = common::host(false);
    let host = Host::new(dir.path());
    let target = tuning::Target {
        busy_poll: Some(50),
        ..common::target()
    };
    for (poll, read, poll_status, read_status) in [
        ("0", "0", Status::Warn, Status::Warn),
        ("49", "50", Status::Warn, Status::Ok),
        ("50", "10", Status::Ok, Status::Warn),
        ("50", "50", Status::Ok, Status::Ok),
        ("100", "200", Status::Ok, Status::Ok),
    ] {
        common::write(
            dir.path(),
            "/proc/sys/net/core/busy_poll",
            format!("{poll}\n"),
        );
        common::write(
            dir.path(),
            "/proc/sys/net/core/busy_read",
            format!("{read}\n"),
        );
        let checks = check(&host, &target);
        let by_id = |id: &str| checks.iter().find(|c| c.id == id).expect("present");
        for (id, value, status) in [
            ("busy_poll", poll, poll_status),
            ("busy_read", read, read_status),
        ] {
            let c = by_id(id);
            assert_eq!(c.status, status, "{c:?}");
            assert_eq!(c.value, value);
            assert_eq!(c.want, ">= 50 (--busy-poll)");
            assert!(
                c.fix
                    .starts_with("sfu-tune apply --busy-poll 50, or sysctl -w net.core."),
                "{c:?}"
            );
        }
        // Never a failure: the node works without it.
        assert!(
            checks
                .iter()
                .all(|c| !(c.id.starts_with("busy_") && c.status == Status::Fail))
        );
    }
}
