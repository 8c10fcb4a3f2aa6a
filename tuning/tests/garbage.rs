//! No file content makes `check` or `plan` panic: empty, non-numeric, huge
//! or binary content ends in `unknown` with the reason.

mod common;

use tuning::{Host, Status, check, plan};

const GARBAGE: [&[u8]; 8] = [
    b"",
    b"\n\n",
    b"not a number\n",
    b"99999999999999999999999999999999\n",
    b"-1\n",
    b"0-4294967295\n",
    b"\xff\xfe\x00\x01\x80binary",
    b"1 2 3 4 5 6 7 8 9 ffffffffffffffffffffffffffffffffffffffffffffffffff,,,:\n",
];

/// Checks that read numbers: unknown on any garbage.
const NUMERIC: [&str; 9] = [
    "rmem_max",
    "wmem_max",
    "netdev_max_backlog",
    "udp_mem",
    "busy_poll",
    "busy_read",
    "optmem_max",
    "nofile",
    "memlock",
];

#[test]
fn garbage_in_every_file_is_unknown_not_a_panic() {
    for garbage in GARBAGE {
        let dir = common::host(false);
        for file in common::files(dir.path()) {
            std::fs::write(&file, garbage).expect("write garbage");
        }
        let host = Host::new(dir.path());
        let checks = check(&host, &common::target());
        let _ = plan(&host, &common::target());
        assert_eq!(checks.len(), 20);
        let busy = tuning::Target {
            busy_poll: Some(50),
            ..common::target()
        };
        let with_flag = check(&host, &busy);
        let _ = plan(&host, &busy);
        for id in ["busy_poll", "busy_read"] {
            let c = with_flag.iter().find(|c| c.id == id).expect("present");
            assert_eq!(c.status, Status::Unknown, "{c:?}");
        }
        let shown = String::from_utf8_lossy(garbage);
        for c in &checks {
            if NUMERIC.contains(&c.id) {
                assert_eq!(c.status, Status::Unknown, "{shown:?}: {c:?}");
            }
            // No route: no interface, so every NIC check is unknown.
            if matches!(c.id, "nic_rings" | "rss_queues" | "irq_affinity" | "rps")
                || c.id.starts_with("offload_")
            {
                assert_eq!(c.status, Status::Unknown, "{shown:?}: {c:?}");
                assert!(c.reason.starts_with("no media interface"), "{c:?}");
            }
            if c.status == Status::Unknown {
                assert!(c.value.is_empty() && !c.reason.is_empty(), "{c:?}");
            }
        }
        // Empty and binary files read as nothing at all.
        if garbage.is_empty() || garbage.starts_with(b"\xff") || garbage == b"\n\n" {
            for c in &checks {
                assert_eq!(c.status, Status::Unknown, "{shown:?}: {c:?}");
            }
        }
    }
}

#[test]
fn garbage_in_any_one_file_is_no_panic_and_that_check_is_not_ok() {
    let files = common::files(common::host(false).path()).len();
    for index in 0..files {
        for garbage in [GARBAGE[0], GARBAGE[3], GARBAGE[6]] {
            let dir = common::host(false);
            let file = common::files(dir.path())[index].clone();
            std::fs::write(&file, garbage).expect("write garbage");
            let host = Host::new(dir.path());
            let checks = check(&host, &common::target());
            assert_eq!(checks.len(), 20);
            // apply on the damaged tree does not panic either.
            let _ = plan(&host, &common::target()).apply(&host);
        }
    }
    // One damaged sysctl: that check alone turns unknown.
    let dir = common::host(true);
    common::write(dir.path(), "/proc/sys/net/core/rmem_max", "12ab\n");
    let checks = check(&Host::new(dir.path()), &common::target());
    let rmem = checks.iter().find(|c| c.id == "rmem_max").expect("present");
    assert_eq!(rmem.status, Status::Unknown);
    assert!(
        rmem.reason
            .starts_with("/proc/sys/net/core/rmem_max: not a number: \"12ab\""),
        "{rmem:?}"
    );
    // ... and apply leaves it alone (it cannot know it would be raising).
    let p = plan(&Host::new(dir.path()), &common::target());
    assert!(
        p.actions()
            .iter()
            .all(|a| a.path() != "/proc/sys/net/core/rmem_max")
    );
    assert!(
        p.actions()[0]
            .text()
            .contains("net.core.rmem_max = 33554432\n")
    );
}

#[test]
fn absurd_targets_do_not_panic() {
    let dir = common::host(false);
    let host = Host::new(dir.path());
    for target in [
        tuning::Target {
            workers: usize::MAX,
            cpus: vec![0],
            socket_buffer_bytes: usize::MAX,
            iface: None,
            busy_poll: Some(u64::MAX),
        },
        tuning::Target {
            workers: 0,
            cpus: vec![],
            socket_buffer_bytes: 0,
            iface: Some("../../etc".to_owned()),
            busy_poll: Some(0),
        },
        tuning::Target {
            workers: 1,
            cpus: vec![8191],
            socket_buffer_bytes: 1,
            iface: Some(String::new()),
            busy_poll: None,
        },
    ] {
        let checks = check(&host, &target);
        assert_eq!(checks.len(), 20);
        let _ = plan(&host, &target);
    }
}
