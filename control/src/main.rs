//! The `sfu` binary: loads the configuration, sets up logging, starts the
//! node and serves until drained (`control::drain`: the first SIGTERM or
//! SIGINT drains, the node stops when its last endpoint leaves, after the
//! drain timeout or at a second signal). It exits with status 70 when a
//! worker dies or stalls (see `control::supervise`), so that the service
//! manager restarts it. `sfu token ...` instead prints a bearer token for
//! the control API. SIGHUP reloads the control API's TLS certificate. See
//! the `control` crate docs.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use control::config::{Cli, ClusterAction, Command, Config, LogFormat};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let config = Config::load(&cli, std::env::vars()).context("loading the configuration")?;
    if let Some(Command::Token(args)) = &cli.command {
        let claims = args
            .claims(control::auth::unix_now())
            .map_err(anyhow::Error::msg)
            .context("sfu token")?;
        println!(
            "{}",
            control::auth::mint(config.api_secret.as_bytes(), &claims)
        );
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(Command::Cluster {
        action: ClusterAction::Status { json },
    }) = &cli.command
    {
        return cluster_status(&config, *json);
    }
    init_logging(config.log_format);
    raise_nofile_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sfu-control")
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let drain_timeout = std::time::Duration::from_secs(config.drain_timeout_secs);
    runtime.block_on(async {
        // Before the node reports READY: a SIGHUP from then on (a reload)
        // must find the handler, not the default action that ends the
        // process.
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler")?;
        let running = control::start(config).await.context("starting the node")?;
        let (requests, received) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(forward_signals(requests));
        tokio::spawn(reload_on_hangup(hangup, running.tls().cloned()));
        let drained = control::drain::until_drained(
            std::sync::Arc::clone(running.state()),
            drain_timeout,
            received,
        );
        match running
            .run_until(async move {
                let how = drained.await;
                tracing::info!(?how, "shutting down");
            })
            .await
        {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e) => {
                tracing::error!(error = %e, "the node stopped on a failure");
                Ok(ExitCode::from(e.exit_code()))
            }
        }
    })
}

/// `sfu cluster status`: the registry as a table (or JSON).
fn cluster_status(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let url = config
        .cluster
        .redis
        .as_deref()
        .context("no cluster: set cluster.redis, SFU_REDIS or --redis")?;
    let store = control::cluster::Store::new(url, &config.cluster.name).context("cluster.redis")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let registry = runtime
        .block_on(store.registry())
        .with_context(|| format!("reading the registry at {url}"))?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "nodes": registry.live,
                "dead": registry.dead,
                "unreadable_entries": registry.unreadable,
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    print!(
        "{}",
        control::cluster::status_table(&registry, control::cluster::unix_ms())
    );
    Ok(ExitCode::SUCCESS)
}

/// Logs to stderr in the configured format; the filter comes from
/// `RUST_LOG` (default `info`).
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Raises the open-file soft limit to the hard limit, so that the HTTP
/// connection cap (and the media sockets) fit; logs the result.
fn raise_nofile_limit() {
    let before = rlimit::getrlimit(rlimit::Resource::NOFILE);
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(soft) => tracing::info!(
            before = before.map(|(soft, _)| soft).unwrap_or_default(),
            soft,
            "open-file limit (RLIMIT_NOFILE)"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit (RLIMIT_NOFILE)"),
    }
}

/// Reloads the control API's certificate at every SIGHUP (without TLS,
/// logs that there is nothing to reload: SIGHUP never stops the node).
async fn reload_on_hangup(
    mut hup: tokio::signal::unix::Signal,
    tls: Option<std::sync::Arc<control::tls::ServerTls>>,
) {
    while hup.recv().await.is_some() {
        match &tls {
            None => tracing::info!("SIGHUP: no tls_cert, nothing to reload"),
            Some(tls) => match tls.reload() {
                Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                Err(e) => tracing::error!(
                    error = %e,
                    "SIGHUP: the TLS certificate did not load; the old one keeps serving"
                ),
            },
        }
    }
}

/// Passes every SIGTERM and SIGINT on to `requests` (the drain: the
/// first starts it, the next stops the node at once).
async fn forward_signals(requests: tokio::sync::mpsc::UnboundedSender<&'static str>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the node with SIGKILL");
        return;
    };
    loop {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        if requests.send(name).is_err() {
            return;
        }
    }
}
