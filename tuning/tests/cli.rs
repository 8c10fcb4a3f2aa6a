//! The `sfu-tune` binary on fixture hosts: `check --json` output and exit
//! codes, the config file, usage errors.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn sfu_tune(args: &[&str], root: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sfu-tune"))
        .args(args)
        .arg("--root")
        .arg(root)
        .output()
        .expect("run sfu-tune")
}

fn json(out: &Output) -> Vec<Value> {
    let text = String::from_utf8_lossy(&out.stdout);
    let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    value.as_array().expect("an array").clone()
}

fn status_of<'a>(checks: &'a [Value], id: &str) -> &'a str {
    checks
        .iter()
        .find(|c| c["id"] == id)
        .and_then(|c| c["status"].as_str())
        .unwrap_or_else(|| panic!("no {id}"))
}

#[test]
fn check_json_on_an_untuned_host_exits_1() {
    let dir = common::host(false);
    let mut args = vec!["check", "--json"];
    args.extend(common::TARGET_FLAGS);
    let out = sfu_tune(&args, dir.path());
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let checks = json(&out);
    assert_eq!(checks.len(), tuning::CHECK_IDS.len());
    for (c, id) in checks.iter().zip(tuning::CHECK_IDS) {
        assert_eq!(c["id"], id);
        let keys: Vec<&str> = c
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut keys = keys.clone();
        keys.sort_unstable();
        assert_eq!(keys, ["fix", "id", "reason", "status", "value", "want"]);
        assert!(
            ["ok", "warn", "fail", "unknown"].contains(&c["status"].as_str().expect("a string"))
        );
    }
    assert_eq!(status_of(&checks, "rmem_max"), "fail");
    assert_eq!(status_of(&checks, "smt_siblings"), "warn");
    assert_eq!(status_of(&checks, "nic_rings"), "unknown");
}

#[test]
fn check_json_on_a_tuned_host_exits_0() {
    let dir = common::host(true);
    let ethtool = common::fake_ethtool(dir.path());
    let mut args = vec![
        "check",
        "--json",
        "--ethtool",
        ethtool.to_str().expect("utf-8"),
    ];
    args.extend(common::TARGET_FLAGS);
    let out = sfu_tune(&args, dir.path());
    assert_eq!(out.status.code(), Some(0));
    for c in json(&out) {
        assert_eq!(c["status"], "ok", "{c}");
    }
    // Without ethtool the NIC's settings are unknown: still exit 0.
    let mut args = vec!["check", "--json"];
    args.extend(common::TARGET_FLAGS);
    assert_eq!(sfu_tune(&args, dir.path()).status.code(), Some(0));
}

#[test]
fn the_config_file_sets_the_target_and_flags_override_it() {
    let dir = common::host(false);
    let config = dir.path().join("sfu.toml");
    std::fs::write(
        &config,
        "control_addr = \"127.0.0.1:7880\"\nworkers = 6\ncpus = \"2-7\"\n\
         socket_buffer_bytes = 1000000000\nmedia_ip = \"192.0.2.10\"\n\n[limits]\nrooms = 10\n",
    )
    .expect("write config");
    let config = config.to_str().expect("utf-8");
    let out = sfu_tune(&["check", "--json", "--config", config], dir.path());
    let checks = json(&out);
    let rmem = checks
        .iter()
        .find(|c| c["id"] == "rmem_max")
        .expect("present");
    assert_eq!(rmem["want"], ">= 1000000000");
    assert_eq!(status_of(&checks, "smt_siblings"), "warn");
    let irq = checks
        .iter()
        .find(|c| c["id"] == "irq_affinity")
        .expect("present");
    assert!(
        irq["want"].as_str().expect("a string").starts_with("0-1 "),
        "{irq}"
    );

    // Flags win; an array of CPUs works too.
    std::fs::write(dir.path().join("array.toml"), "cpus = [2, 4]\n").expect("write");
    let array = dir.path().join("array.toml");
    let out = sfu_tune(
        &[
            "check",
            "--json",
            "--config",
            array.to_str().expect("utf-8"),
            "--socket-buffer-bytes",
            "4096",
        ],
        dir.path(),
    );
    let checks = json(&out);
    let rmem = checks
        .iter()
        .find(|c| c["id"] == "rmem_max")
        .expect("present");
    assert_eq!(rmem["want"], ">= 4096");
    assert_eq!(status_of(&checks, "rmem_max"), "ok");
    let rss = checks
        .iter()
        .find(|c| c["id"] == "rss_queues")
        .expect("present");
    assert_eq!(rss["want"], ">= 2 (one per worker)");
    // "none": every online CPU.
    let out = sfu_tune(&["check", "--json", "--cpus", "none"], dir.path());
    let checks = json(&out);
    let rss = checks
        .iter()
        .find(|c| c["id"] == "rss_queues")
        .expect("present");
    assert_eq!(rss["want"], ">= 8 (one per worker)");
}

#[test]
fn text_output_is_a_table_with_the_fixes() {
    let dir = common::host(false);
    let mut args = vec!["check"];
    args.extend(common::TARGET_FLAGS);
    let out = sfu_tune(&args, dir.path());
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("iface eth0, 6 workers on CPUs 2-7"), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with("fail    rmem_max"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        row.contains("212992") && row.ends_with(">= 33554432"),
        "{row}"
    );
    assert!(text.contains("4 fail"), "{text}");
    assert!(
        text.contains("  fix: sfu-tune apply, or sysctl -w net.core.rmem_max=33554432"),
        "{text}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let dir = common::host(false);
    for args in [
        &["check", "--cpus", "7-2"][..],
        &["check", "--cpus", "zero"],
        &["check", "--workers", "0"],
        &["check", "--bogus"],
        &["frobnicate"],
        &["check", "--config", "/nonexistent/sfu.toml"],
        &["check", "--busy-poll", "0"],
        &["check", "--busy-poll", "-5"],
        &["check", "--busy-poll", "fast"],
        &["check", "--busy-poll", "2147483648"],
        &["apply", "--dry-run", "--busy-poll", "0"],
        &["apply", "--dry-run", "--busy-poll"],
    ] {
        let out = sfu_tune(args, dir.path());
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_sfu-tune"))
        .args(["apply", "--root", "/nonexistent-sfu-tune-root"])
        .output()
        .expect("run sfu-tune");
    assert_eq!(out.status.code(), Some(2));
    assert!(!Path::new("/nonexistent-sfu-tune-root").exists());
    std::fs::write(dir.path().join("bad.toml"), "workers = \"many\"\n").expect("write");
    let bad = dir.path().join("bad.toml");
    let out = sfu_tune(
        &["check", "--config", bad.to_str().expect("utf-8")],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.toml"));
}
