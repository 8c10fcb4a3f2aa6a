//! The systemd files in `deploy/systemd` as systemd itself reads them:
//! `systemd-analyze verify` on `sfu.service` and `sfu-tune.service` (with
//! `ExecStart` pointing at binaries that exist: the `sfu` just built, and
//! `sfu-tune` beside it when it is built, else `sfu` standing in for it),
//! their exposure by `systemd-analyze security --offline=yes` (the
//! hardening), and `systemd-sysusers --dry-run` on the user the node runs
//! as. Needs the `systemd` package (the README's test command installs
//! it); without it the test fails and says so.

use std::path::Path;
use std::process::Command;

fn deploy(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/systemd")
        .join(file)
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{cmd:?} cannot run ({e}): install the systemd package (apt-get install systemd; the README's test command does)")
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_service_unit_verifies_and_is_hardened() {
    let unit = std::fs::read_to_string(deploy("sfu.service")).expect("deploy/systemd/sfu.service");
    for key in [
        "Type=notify",
        "WatchdogSec=",
        "User=sfu",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=\n",
        "LimitNOFILE=",
        "LimitMEMLOCK=",
        "Restart=on-failure",
        "LoadCredential=api_secret:",
        "SFU_API_SECRET_FILE=%d/api_secret",
    ] {
        assert!(unit.contains(key), "sfu.service lacks {key:?}");
    }
    // A copy whose ExecStart names the binary built for this test (verify
    // checks that it exists and is executable).
    let dir = std::env::temp_dir().join(format!("sfu-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let copy = dir.join("sfu.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/sfu", env!("CARGO_BIN_EXE_sfu")),
    )
    .expect("write the copy");
    // The tuning unit the node's unit wants, beside it (verify loads it
    // from the same directory). Its binary is another package's: the one
    // built beside `sfu` if there is one, else `sfu` stands in.
    let tune_unit = std::fs::read_to_string(deploy("sfu-tune.service"))
        .expect("deploy/systemd/sfu-tune.service");
    let tune_bin = Path::new(env!("CARGO_BIN_EXE_sfu")).with_file_name("sfu-tune");
    let tune_bin = if tune_bin.is_file() {
        tune_bin
    } else {
        Path::new(env!("CARGO_BIN_EXE_sfu")).to_path_buf()
    };
    let tune_copy = dir.join("sfu-tune.service");
    std::fs::write(
        &tune_copy,
        tune_unit.replace(
            "/usr/local/bin/sfu-tune",
            tune_bin.to_str().expect("a UTF-8 path"),
        ),
    )
    .expect("write the copy");

    let (ok, text) = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .arg(&tune_copy));
    assert!(ok, "systemd-analyze verify:\n{text}");
    assert!(
        !text.contains("sfu.service") && !text.contains("sfu-tune.service"),
        "systemd-analyze verify warns about the units:\n{text}"
    );

    let (_, text) = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&copy));
    let exposure: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for sfu.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    println!("DEPLOY sfu.service exposure level {exposure} (0 safest, 10 unprotected)");
    assert!(exposure <= 2.0, "exposure {exposure}:\n{text}");

    // The tuning unit: a root oneshot before the node that must keep
    // /proc/sys and /sys writable, hardened otherwise.
    for key in [
        "Type=oneshot",
        "RemainAfterExit=yes",
        "ExecStart=/usr/local/bin/sfu-tune apply --config /etc/sfu/sfu.toml",
        "Before=sfu.service",
        "After=network-online.target",
        "WantedBy=multi-user.target",
        "NoNewPrivileges=yes",
        "ProtectHome=yes",
        "PrivateTmp=yes",
    ] {
        assert!(tune_unit.contains(key), "sfu-tune.service lacks {key:?}");
    }
    for key in ["ProtectKernelTunables=", "ProcSubset=", "User="] {
        assert!(
            !tune_unit.lines().any(|l| l.starts_with(key)),
            "sfu-tune.service has {key:?}: it must write /proc/sys and /sys as root"
        );
    }
    for key in ["Wants=sfu-tune.service\n", "After=sfu-tune.service\n"] {
        assert!(unit.contains(key), "sfu.service lacks {key:?}");
    }
    let (_, text) = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&tune_copy));
    let exposure: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for sfu-tune.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    println!("DEPLOY sfu-tune.service exposure level {exposure} (0 safest, 10 unprotected)");
    assert!(exposure <= 2.5, "exposure {exposure}:\n{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_service_user_is_a_valid_sysusers_entry() {
    let (ok, text) = run(Command::new("systemd-sysusers")
        .arg("--dry-run")
        .arg(deploy("sfu.sysusers.conf")));
    assert!(ok, "systemd-sysusers --dry-run:\n{text}");
    for bad in ["ignoring", "Failed", "invalid", "Invalid"] {
        assert!(!text.contains(bad), "systemd-sysusers --dry-run:\n{text}");
    }
}
