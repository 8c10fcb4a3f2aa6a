//! `sfu-tune`: checks (and sets) the host settings the SFU media node's
//! throughput depends on. See the `tuning` crate's documentation.
//!
//! ```text
//! sfu-tune check [--json] [--root DIR] [--config FILE] [--workers N] [--cpus LIST]
//!                [--socket-buffer-bytes N] [--iface NAME] [--busy-poll USEC]
//! sfu-tune apply [--dry-run] [same flags]
//! ```
//! Exit status: `check` 1 when a setting fails, `apply` 1 when a write
//! failed, 2 on a usage or configuration error, 0 otherwise.

#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use tuning::{Check, Host, Status, Target, format_cpu_list, parse_cpu_list};

#[derive(Debug, Parser)]
#[command(
    name = "sfu-tune",
    version,
    about = "Check and tune a host for the SFU media node"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Report each setting as ok, warn, fail or unknown (exit 1 if any fails).
    Check {
        /// A JSON array of {id, status, value, want, reason, fix}.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Set what can be set: sysctls (and /etc/sysctl.d/90-sfu.conf; busy
    /// polling only with --busy-poll), IRQ affinity, governors, RPS masks;
    /// print what needs an operator.
    Apply {
        /// Print what would be done and write nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        target: TargetArgs,
    },
}

#[derive(Debug, Args)]
struct TargetArgs {
    /// Directory every /proc, /sys and /etc path is read and written under.
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// The node's sfu.toml (workers, cpus, socket_buffer_bytes, media_ip);
    /// flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Worker threads [default: one per CPU of --cpus].
    #[arg(long)]
    workers: Option<usize>,
    /// Worker CPUs, e.g. "2-15" or "0,2-5"; "none" = all online CPUs
    /// [default: all online CPUs].
    #[arg(long)]
    cpus: Option<String>,
    /// SO_RCVBUF/SO_SNDBUF of each media socket [default: 33554432].
    #[arg(long)]
    socket_buffer_bytes: Option<usize>,
    /// The media NIC [default: the interface routing media_ip, else the
    /// default route's].
    #[arg(long)]
    iface: Option<String>,
    /// The ethtool program [default: ethtool from PATH, run only when
    /// --root is /].
    #[arg(long)]
    ethtool: Option<PathBuf>,
    /// Busy polling in microseconds: apply raises net.core.busy_poll and
    /// busy_read to USEC (and writes them to the sysctl.d file), check warns
    /// below it [default: off; apply leaves both alone]. Costs worker CPU.
    #[arg(
        long,
        value_name = "USEC",
        value_parser = clap::value_parser!(u64).range(1..=2_147_483_647)
    )]
    busy_poll: Option<u64>,
}

/// The keys of sfu.toml that matter here; the others are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FileConfig {
    workers: Option<usize>,
    cpus: Option<CpusValue>,
    socket_buffer_bytes: Option<usize>,
    media_ip: Option<IpAddr>,
}

/// `cpus = "0,2-5"`, `cpus = [0, 2, 3]` or `cpus = "none"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum CpusValue {
    Text(String),
    List(Vec<usize>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (Command::Check { target: args, .. } | Command::Apply { target: args, .. }) = &cli.command;
    let (host, target) = match resolve(args) {
        Ok(resolved) => resolved,
        Err(e) => {
            eprintln!("sfu-tune: error: {e:#}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Check { json: true, .. } => check_json(&host, &target),
        Command::Check { json: false, .. } => check_text(&host, &target),
        Command::Apply { dry_run, .. } => apply(&host, &target, dry_run),
    }
}

/// The host and the target from the flags, the config file and the defaults.
fn resolve(args: &TargetArgs) -> anyhow::Result<(Host, Target)> {
    if !args.root.is_dir() {
        bail!("--root {}: not a directory", args.root.display());
    }
    let mut host = Host::new(&args.root);
    if let Some(program) = &args.ethtool {
        host = host.with_ethtool(program);
    }
    let file: FileConfig = match &args.config {
        None => FileConfig::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("{}", path.display()))?
        }
    };
    let defaults = Target::for_host(&host);
    let cpus = match (&args.cpus, file.cpus) {
        (Some(text), _) => cpu_list(text, &defaults)?,
        (None, Some(CpusValue::Text(text))) => cpu_list(&text, &defaults)?,
        (None, Some(CpusValue::List(list))) => {
            let text = list
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(",");
            cpu_list(&text, &defaults)?
        }
        (None, None) => defaults.cpus.clone(),
    };
    let workers = args.workers.or(file.workers).unwrap_or(cpus.len().max(1));
    if workers == 0 {
        bail!("workers must be at least 1");
    }
    let socket_buffer_bytes = args
        .socket_buffer_bytes
        .or(file.socket_buffer_bytes)
        .unwrap_or(defaults.socket_buffer_bytes);
    if socket_buffer_bytes == 0 {
        bail!("socket_buffer_bytes must be at least 1");
    }
    let iface = args.iface.clone().or_else(|| match file.media_ip {
        Some(IpAddr::V4(ip)) => host.route_iface(Some(ip)),
        _ => defaults.iface.clone(),
    });
    let target = Target {
        workers,
        cpus,
        socket_buffer_bytes,
        iface,
        busy_poll: args.busy_poll,
    };
    Ok((host, target))
}

fn cpu_list(text: &str, defaults: &Target) -> anyhow::Result<Vec<usize>> {
    if text.trim().eq_ignore_ascii_case("none") {
        return Ok(defaults.cpus.clone());
    }
    let cpus = parse_cpu_list(text).map_err(|e| anyhow::anyhow!("cpus {text:?}: {e}"))?;
    if cpus.is_empty() {
        bail!("cpus is empty");
    }
    Ok(cpus)
}

fn exit_of_checks(checks: &[Check]) -> ExitCode {
    if checks.iter().any(|c| c.status == Status::Fail) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn check_json(host: &Host, target: &Target) -> ExitCode {
    let checks = tuning::check(host, target);
    match serde_json::to_string_pretty(&checks) {
        Ok(text) => println!("{text}"),
        Err(e) => {
            eprintln!("sfu-tune: error: {e}");
            return ExitCode::from(2);
        }
    }
    exit_of_checks(&checks)
}

fn check_text(host: &Host, target: &Target) -> ExitCode {
    let checks = tuning::check(host, target);
    println!(
        "sfu-tune check: root {}, iface {}, {} workers on CPUs {}, socket buffers {} bytes{}\n",
        host.root().display(),
        target.iface.as_deref().unwrap_or("(none)"),
        target.workers,
        format_cpu_list(&target.worker_cpus()),
        target.socket_buffer_bytes,
        target
            .busy_poll
            .map_or_else(String::new, |usec| format!(", busy poll {usec} µs"))
    );
    let value = |c: &Check| {
        if c.value.is_empty() {
            "-".to_owned()
        } else {
            c.value.clone()
        }
    };
    let id_width = checks.iter().map(|c| c.id.len()).max().unwrap_or(2);
    let value_width = checks
        .iter()
        .map(|c| value(c).chars().count())
        .max()
        .unwrap_or(5)
        .min(40);
    println!(
        "{:<7} {:<id_width$}  {:<value_width$}  WANT",
        "STATUS", "ID", "VALUE"
    );
    for c in &checks {
        println!(
            "{:<7} {:<id_width$}  {:<value_width$}  {}",
            c.status.as_str(),
            c.id,
            value(c),
            c.want
        );
    }
    let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
    println!(
        "\n{} ok, {} warn, {} fail, {} unknown",
        count(Status::Ok),
        count(Status::Warn),
        count(Status::Fail),
        count(Status::Unknown)
    );
    for c in checks.iter().filter(|c| c.status != Status::Ok) {
        println!("\n{} ({}): {}", c.id, c.status, c.reason);
        println!("  fix: {}", c.fix);
    }
    exit_of_checks(&checks)
}

fn apply(host: &Host, target: &Target, dry_run: bool) -> ExitCode {
    let plan = tuning::plan(host, target);
    let mut failed = false;
    if dry_run {
        for action in plan.actions() {
            println!("would {action}");
        }
    } else {
        for outcome in plan.apply(host) {
            failed |= outcome.error.is_some();
            println!("{outcome}");
        }
    }
    if !plan.operator().is_empty() {
        println!("\nLeft to an operator (a command, the unit, or a reboot):");
        for line in plan.operator() {
            println!("  {line}");
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
