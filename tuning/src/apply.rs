//! `apply`: the writes that bring the host to what [`check`](crate::check)
//! wants, planned from one reading of the host, then carried out one by one.

use std::fmt;

use crate::checks::{self, Ctx, SYSCTLS, UDP_MEM, UDP_MEM_PATH, UDP_MEM_REASON};
use crate::parse;
use crate::{Host, Status, Target, format_cpu_list};

/// The sysctl.d file `apply` writes (under the host's root).
pub(crate) const SYSCTL_FILE: &str = "/etc/sysctl.d/90-sfu.conf";

/// Checks `apply` brings to ok by itself; the others' fixes are left to an
/// operator.
const APPLIED: [&str; 10] = [
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
];

/// What `apply` would do on a host: its writes, and what is left to an
/// operator (commands to run, unit settings, reboots).
#[derive(Debug, Clone)]
pub struct Plan {
    actions: Vec<Action>,
    operator: Vec<String>,
}

/// One write of a plan. Its `Display` is the line `apply` prints:
/// `set net.core.rmem_max 212992 -> 33554432`, `write /etc/sysctl.d/90-sfu.conf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    kind: Kind,
    /// The host path written (below the root).
    path: String,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// Create or replace a configuration file.
    File,
    /// Change an existing `/proc` or `/sys` attribute: `what` (a sysctl's
    /// name or the path) from its old value.
    Set { what: String, from: String },
}

/// What became of one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The action's line.
    pub action: String,
    /// Why it failed; `None`: done.
    pub error: Option<String>,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::File => write!(f, "write {}", self.path),
            Kind::Set { what, from } => write!(f, "set {what} {from} -> {}", self.text),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.error {
            None => write!(f, "{}", self.action),
            Some(e) => write!(f, "{}: FAILED: {e}", self.action),
        }
    }
}

impl Action {
    /// The host path this action writes (as on the host, without the root).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The text written.
    pub fn text(&self) -> &str {
        &self.text
    }

    fn set(what: impl Into<String>, path: String, from: String, to: String) -> Self {
        Self {
            kind: Kind::Set {
                what: what.into(),
                from,
            },
            path,
            text: to,
        }
    }
}

impl Plan {
    /// The writes, in order.
    pub fn actions(&self) -> &[Action] {
        &self.actions
    }

    /// What an operator must do (commands, unit settings, reboots), one line
    /// each.
    pub fn operator(&self) -> &[String] {
        &self.operator
    }

    /// Carries out every action on `host`. A failed write is reported in its
    /// [`Outcome`] and the others still run.
    pub fn apply(&self, host: &Host) -> Vec<Outcome> {
        self.actions
            .iter()
            .map(|a| {
                let written = match a.kind {
                    Kind::File => host.write_file(&a.path, &a.text),
                    Kind::Set { .. } => host.write_existing(&a.path, &a.text),
                };
                Outcome {
                    action: a.to_string(),
                    error: written.err(),
                }
            })
            .collect()
    }
}

/// The plan for `host` and `target`: the sysctl.d file, each sysctl below
/// its want (raised, never lowered; `net.core.busy_poll` and `busy_read`
/// only when [`Target::busy_poll`] asks for them), the NIC's IRQs onto
/// spare CPUs, the worker CPUs' governor, the worker CPUs out of the RPS
/// masks; then the fixes of the other checks that are not ok, for an
/// operator.
pub fn plan(host: &Host, target: &Target) -> Plan {
    let cx = Ctx::new(host, target);
    let mut actions = vec![sysctl_file(&cx)];
    let mut operator = Vec::new();

    for s in SYSCTLS {
        let Some(want) = s.want(target) else {
            continue;
        };
        if let Ok(current) = checks::read_sysctl(host, s)
            && current < want
        {
            actions.push(Action::set(
                s.name,
                s.path(),
                current.to_string(),
                want.to_string(),
            ));
        }
    }
    if let Ok([min, pressure, max]) = checks::read_udp_mem(host) {
        let want = checks::udp_mem_want(target);
        if max < want {
            actions.push(Action::set(
                UDP_MEM,
                UDP_MEM_PATH.to_owned(),
                format!("{min} {pressure} {max}"),
                format!("{min} {pressure} {want}"),
            ));
        }
    }

    match cx.spare_cpus() {
        Ok(spare) if spare.is_empty() => operator.push(format!(
            "irq_affinity: every online CPU runs a worker: an operator must leave cores to IRQs \
             (fewer CPUs in cpus = \"{}\" of sfu.toml and CPUAffinity= of sfu.service)",
            format_cpu_list(&cx.workers)
        )),
        Ok(spare) => {
            let mut moved = false;
            for irq in checks::nic_irqs(&cx).unwrap_or_default() {
                if let Ok(cpus) = &irq.affinity
                    && cpus.iter().any(|c| cx.workers.contains(c))
                {
                    moved = true;
                    actions.push(Action::set(
                        irq.path(),
                        irq.path(),
                        format_cpu_list(cpus),
                        format_cpu_list(&spare),
                    ));
                }
            }
            if moved {
                operator.push(format!(
                    "irq_affinity: irqbalance moves IRQs back: stop it, or set \
                     IRQBALANCE_BANNED_CPULIST={} in /etc/default/irqbalance",
                    format_cpu_list(&cx.workers)
                ));
            }
        }
        Err(_) => {}
    }

    for (cpu, governor) in checks::governors(&cx) {
        if let Some(Ok(g)) = governor
            && g != "performance"
        {
            let path = checks::governor_path(cpu);
            actions.push(Action::set(path.clone(), path, g, "performance".to_owned()));
        }
    }

    for (path, mask) in checks::rps_masks(&cx).unwrap_or_default() {
        if let Ok((cpus, groups)) = mask
            && cpus.iter().any(|c| cx.workers.contains(c))
        {
            let kept: Vec<usize> = cpus
                .iter()
                .copied()
                .filter(|c| !cx.workers.contains(c))
                .collect();
            actions.push(Action::set(
                path.clone(),
                path,
                parse::format_hex_mask(&cpus, groups),
                parse::format_hex_mask(&kept, groups),
            ));
        }
    }

    for c in checks::check(host, target) {
        if matches!(c.status, Status::Warn | Status::Fail) && !APPLIED.contains(&c.id) {
            operator.push(format!("{}: {}", c.id, c.fix));
        }
    }
    Plan { actions, operator }
}

/// `/etc/sysctl.d/90-sfu.conf`: every sysctl the node wants, at the larger
/// of the want and the current value (so a reboot never lowers one). The
/// busy-poll sysctls are written with [`Target::busy_poll`]; without it,
/// the lines an earlier `apply --busy-poll` wrote are kept (the boot-time
/// apply of `sfu-tune.service` has no `--busy-poll` and must not undo
/// the operator's choice).
fn sysctl_file(cx: &Ctx<'_>) -> Action {
    let existing = cx.host.read(SYSCTL_FILE).unwrap_or_default();
    let mut text = String::from(
        "# Written by sfu-tune apply (deploy/systemd/sfu-tune.service) for the SFU media\n\
         # node: each value is what the node needs or the host's value when that was\n\
         # higher. Change socket_buffer_bytes or workers in sfu.toml and run apply again\n\
         # rather than editing this file.\n",
    );
    for s in SYSCTLS {
        let Some(want) = s.want(cx.target) else {
            if let Some(value) = file_value(&existing, s.name) {
                text.push_str(&format!(
                    "\n{}# (kept: written by an earlier apply --busy-poll)\n{} = {value}\n",
                    comment(s.reason),
                    s.name
                ));
            }
            continue;
        };
        let value = checks::read_sysctl(cx.host, s).map_or(want, |v| v.max(want));
        text.push_str(&format!("\n{}{} = {value}\n", comment(s.reason), s.name));
    }
    let want = checks::udp_mem_want(cx.target);
    text.push('\n');
    text.push_str(&comment(UDP_MEM_REASON));
    match checks::read_udp_mem(cx.host) {
        Ok([min, pressure, max]) => {
            text.push_str(&format!("{UDP_MEM} = {min} {pressure} {}\n", max.max(want)));
        }
        Err(e) => text.push_str(&format!(
            "# {UDP_MEM} not written ({e}); its max should be at least {want} pages.\n"
        )),
    }
    Action {
        kind: Kind::File,
        path: SYSCTL_FILE.to_owned(),
        text,
    }
}

/// The value of `name = value` in a sysctl.d file's `text`, if it is a
/// number (the last such line wins, as for sysctl).
fn file_value(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.trim() == name)
        .filter_map(|(_, v)| v.trim().parse().ok())
        .next_back()
}

/// `text` as `#` comment lines of at most about 78 characters.
fn comment(text: &str) -> String {
    let mut out = String::new();
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() + 1 + word.len() > 78 && line.len() > 1 {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_wrap() {
        let c = comment(&"word ".repeat(40));
        assert!(c.lines().all(|l| l.starts_with("# ") && l.len() <= 80));
        assert_eq!(c.matches("word").count(), 40);
    }

    #[test]
    fn action_lines() {
        let a = Action::set(
            "net.core.rmem_max",
            "/proc/sys/net/core/rmem_max".to_owned(),
            "212992".to_owned(),
            "33554432".to_owned(),
        );
        assert_eq!(a.to_string(), "set net.core.rmem_max 212992 -> 33554432");
        let o = Outcome {
            action: a.to_string(),
            error: Some("Permission denied".to_owned()),
        };
        assert_eq!(
            o.to_string(),
            "set net.core.rmem_max 212992 -> 33554432: FAILED: Permission denied"
        );
    }
}
