//! `sfu-tune check --json` against this machine (root `/`): read only,
//! `apply` is never run here.

use std::process::Command;

use serde_json::Value;

#[test]
fn check_reads_this_host() {
    let out = Command::new(env!("CARGO_BIN_EXE_sfu-tune"))
        .args(["check", "--json"])
        .output()
        .expect("run sfu-tune");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let checks = value.as_array().expect("an array");
    for id in tuning::CHECK_IDS {
        assert_eq!(checks.iter().filter(|c| c["id"] == id).count(), 1, "{id}");
    }
    assert_eq!(checks.len(), tuning::CHECK_IDS.len());
    let mut any_fail = false;
    for c in checks {
        let status = c["status"].as_str().expect("a status");
        assert!(["ok", "warn", "fail", "unknown"].contains(&status), "{c}");
        any_fail |= status == "fail";
    }
    assert_eq!(out.status.code(), Some(i32::from(any_fail)));

    let rmem = checks
        .iter()
        .find(|c| c["id"] == "rmem_max")
        .expect("present");
    match std::fs::read_to_string("/proc/sys/net/core/rmem_max") {
        Ok(direct) => assert_eq!(rmem["value"], direct.trim()),
        Err(_) => assert_eq!(rmem["status"], "unknown"),
    }
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    if limits.contains("Max open files") {
        assert_ne!(
            checks
                .iter()
                .find(|c| c["id"] == "nofile")
                .expect("present")["status"],
            "unknown"
        );
    }
}
