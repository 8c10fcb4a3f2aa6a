//! Node configuration.
//!
//! Layers, later ones winning key by key: the embedded defaults
//! ([`Config::default`]), a TOML file (`--config FILE` or `SFU_CONFIG`), the
//! environment (`SFU_*`), then command-line flags. Every layer is a
//! [`ConfigLayer`] with optional fields; [`Config::load`] folds them. The
//! environment is passed in as an iterator so tests never touch the process
//! environment.
//!
//! # One declaration per setting
//! Each setting is declared once, in a `settings!` invocation: its doc, its
//! type in [`Config`], its default, its `SFU_*` variable (and the parser of
//! that variable, if not `FromStr`) and its flag's clap attributes and help.
//! The macro generates the field of [`Config`] (the resolved settings), of
//! [`ConfigLayer`] (the same key, optional: a TOML file, the environment or
//! the flags), of [`Cli`] (the flag), the defaults, the flags-to-layer
//! conversion, the environment match and the folding of a layer into the
//! config. The `[http]` table ([`HttpConfig`], [`HttpLayer`], [`HttpFlags`])
//! and the `[webhook]` table ([`WebhookConfig`], [`WebhookLayer`],
//! [`WebhookFlags`]) are further invocations of the same macro, each a field
//! of [`Config`], [`ConfigLayer`] and [`Cli`] (flattened), with a
//! `SFU_<TABLE>_` branch in [`ConfigLayer::from_env`] and a line in
//! [`Config::apply`] and [`Cli::layer`]. What does not fit one key with
//! one value (the API secret and its file, `[limits]`, `--config`) is
//! written out by hand next to it.
//!
//! To add a setting, add one entry to the `settings!` block of its table,
//! e.g. in the `WebhookConfig` block:
//!
//! ```text
//! /// Seconds between webhook retries.
//! retry_secs: u64 = 5,
//!     env "SFU_WEBHOOK_RETRY_SECS",
//!     flag [
//!         /// Seconds between webhook retries [default: 5].
//!         #[arg(long = "webhook-retry-secs", value_name = "SECS")]
//!     ];
//! ```
//!
//! The TOML key is the field name (within its table; a table's flags name
//! their `--<table>-` prefix in `long = ".."`). A setting whose config type is
//! `Option<T>` (no default value) is written `name: Option<T> = None`
//! with `layer T`; an environment variable needs ` with parser` when its
//! value is not read with `FromStr` (see `SFU_WORKERS`). Rules across
//! settings go into [`Config::validate`], and `deploy/sfu.toml` documents
//! every key (a test checks it).
//!
//! `deploy/sfu.toml` is an example file with every key, commented.
//!
//! # API secret
//! `api_secret` (`SFU_API_SECRET`, `--api-secret`) signs and verifies the
//! control API's bearer tokens ([`crate::auth`]); `api_secret_file`
//! (`SFU_API_SECRET_FILE`, `--api-secret-file`) reads it from a file instead
//! (trailing line break removed), e.g. a systemd credential. Within one
//! layer only one of the two may be set; a later layer's either one wins
//! over an earlier layer's. The default is [`DEV_API_SECRET`], a fixed,
//! public development secret: [`Config::validate`] refuses it unless the
//! control address, the media address and the advertised address are all
//! loopback.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use crate::auth::DEV_API_SECRET;
use crate::auth::{Claims, Grant, MIN_SECRET_BYTES};
use crate::limits::{Limits, LimitsLayer};

/// Default control API address.
pub const DEFAULT_CONTROL_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7880);
/// Default first media port; worker `i` binds `media_port + i`.
pub const DEFAULT_MEDIA_PORT: u16 = 7882;
/// Default number of send buffers per worker.
pub const DEFAULT_POOL_BUFFERS: usize = 4096;
/// Largest `socket_buffer_bytes`: 1 GiB (the kernel caps a socket buffer
/// at `INT_MAX` after doubling the value asked for).
pub const MAX_SOCKET_BUFFER_BYTES: usize = 1 << 30;
/// Default `SO_RCVBUF`/`SO_SNDBUF` size.
pub const DEFAULT_SOCKET_BUFFER_BYTES: usize = 32 << 20;
/// Seconds an empty room lives before it is closed (0: never).
pub const DEFAULT_EMPTY_ROOM_TIMEOUT_SECS: u64 = 300;
/// Largest CPU number accepted in a CPU list (`CPU_SETSIZE - 1`).
pub const MAX_CPU: usize = 1023;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "unknown log format {other:?} (expected text or json)"
            )),
        }
    }
}

/// The workers' packet I/O backend (`io`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum IoMode {
    /// `recvmmsg`/`sendmmsg` with GRO/GSO.
    #[default]
    Socket,
    /// io_uring (one submit per batch); falls back to `socket`, with the
    /// reason logged, where the host cannot run it.
    Uring,
    /// AF_XDP on the interface holding `media.bind` (worker `i` on receive
    /// queue `i`), beside each worker's kernel socket; falls back to
    /// `socket`, with the reason logged, where the host cannot run it.
    Xdp,
}

impl FromStr for IoMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "socket" => Ok(Self::Socket),
            "uring" | "io_uring" => Ok(Self::Uring),
            "xdp" | "af_xdp" => Ok(Self::Xdp),
            other => Err(format!(
                "unknown io backend {other:?} (expected socket, uring or xdp)"
            )),
        }
    }
}

impl IoMode {
    /// The packet path's backend.
    pub fn backend(self) -> packet_path::IoBackend {
        match self {
            Self::Socket => packet_path::IoBackend::Socket,
            Self::Uring => packet_path::IoBackend::Uring,
            Self::Xdp => packet_path::IoBackend::Xdp,
        }
    }
}

/// Declares a table of settings once and generates its three structs (the
/// resolved values, an optional-valued layer, the clap flags) and the code
/// that fills and folds them; see the module docs.
macro_rules! settings {
    (
        $(#[$cattr:meta])*
        pub struct $Config:ident {
            $(
                $(#[doc = $doc:literal])*
                $field:ident: $ty:ty = $default:expr,
                    $(layer $val:ty,)?
                    env $env:literal $(with $envparse:path)?,
                    flag [$(#[$fmeta:meta])*];
            )*
        }
        extra {
            $(
                $(#[$xmeta:meta])*
                $xfield:ident: $xty:ty = $xdefault:expr;
            )*
        }
        $(#[$lattr:meta])*
        pub struct $Layer:ident { $($lextra:tt)* }
        $(#[$fattr:meta])*
        pub struct $Flags:ident { $($fhead:tt)* } { $($ftail:tt)* }
    ) => {
        $(#[$cattr])*
        pub struct $Config {
            $(
                $(#[doc = $doc])*
                pub $field: $ty,
            )*
            $(
                $(#[$xmeta])*
                pub $xfield: $xty,
            )*
        }

        impl Default for $Config {
            fn default() -> Self {
                Self {
                    $($field: $default,)*
                    $($xfield: $xdefault,)*
                }
            }
        }

        $(#[$lattr])*
        pub struct $Layer {
            $(
                #[doc = concat!("See [`", stringify!($Config), "::", stringify!($field), "`].")]
                pub $field: Option<settings!(@value $ty $(, $val)?)>,
            )*
            $($lextra)*
        }

        $(#[$fattr])*
        pub struct $Flags {
            $($fhead)*
            $(
                $(#[$fmeta])*
                pub $field: Option<settings!(@value $ty $(, $val)?)>,
            )*
            $($ftail)*
        }

        impl $Flags {
            /// The settings of this table the flags set, as a layer; the
            /// layer's other keys are unset.
            // The update is needless for a table without extra keys.
            #[allow(clippy::needless_update)]
            fn flags_layer(&self) -> $Layer {
                $Layer {
                    $($field: Clone::clone(&self.$field),)*
                    ..Default::default()
                }
            }
        }

        impl $Layer {
            /// Sets the key of environment variable `var` from `value`;
            /// `Ok(false)` when `var` is not one of this table's variables.
            fn set_env(&mut self, var: &str, value: &str) -> Result<bool, ConfigError> {
                match var {
                    $(
                        $env => {
                            self.$field = Some(env_value(
                                $env,
                                value,
                                settings!(@parser $($envparse)?),
                            )?);
                        }
                    )*
                    _ => return Ok(false),
                }
                Ok(true)
            }
        }

        impl $Config {
            /// Overrides every key of this table that `layer` sets.
            fn apply_settings(&mut self, layer: &mut $Layer) {
                $(
                    if let Some(v) = layer.$field.take() {
                        Setting::set(&mut self.$field, v);
                    }
                )*
            }
        }
    };
    (@value $ty:ty) => { $ty };
    (@value $ty:ty, $val:ty) => { $val };
    (@parser) => { parse_trimmed };
    (@parser $p:path) => { $p };
}

/// How a layer's value lands in a [`Config`] field: the value itself, or
/// `Some` of it for a setting without a default.
trait Setting<T> {
    fn set(&mut self, value: T);
}

impl<T> Setting<T> for T {
    fn set(&mut self, value: T) {
        *self = value;
    }
}

impl<T> Setting<T> for Option<T> {
    fn set(&mut self, value: T) {
        *self = Some(value);
    }
}

/// The default parser of an environment variable: `FromStr` on the
/// trimmed value.
fn parse_trimmed<T>(value: &str) -> Result<T, String>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    value.trim().parse().map_err(|e: T::Err| e.to_string())
}

/// Parses the value of environment variable `var` with `parse`.
fn env_value<T>(
    var: &'static str,
    value: &str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    parse(value).map_err(|message| ConfigError::Env {
        var,
        value: value.to_owned(),
        message,
    })
}

settings! {
    /// The effective configuration of a node.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
    pub struct Config {
        /// Worker threads; `None` = one per CPU of [`Config::cpus`].
        workers: Option<usize> = None,
            layer usize,
            env "SFU_WORKERS" with parse_positive,
            flag [
                /// Worker threads [default: one per CPU in --cpus].
                #[arg(long, value_name = "N", value_parser = parse_positive)]
            ];
        /// CPUs the workers are pinned to (worker `i` on `cpus[i % len]`); an
        /// empty list pins nothing; `None` = the CPUs this process may run on.
        cpus: Option<CpuList> = None,
            layer CpuList,
            env "SFU_CPUS",
            flag [
                /// CPUs to pin workers to, e.g. `0,2-5`, or `none` [default: the CPUs this process may run on].
                #[arg(long, value_name = "LIST")]
            ];
        /// Address of the load balancer agent (HAProxy's `agent-check`:
        /// each connection gets one line, `up N%` from the node's load or
        /// `drain` while draining); `None`: no agent.
        agent_addr: Option<SocketAddr> = None,
            layer SocketAddr,
            env "SFU_AGENT_ADDR",
            flag [
                /// Load balancer agent address (HAProxy agent-check) [default: none].
                #[arg(long, value_name = "ADDR")]
            ];
        /// Address the HTTP control API listens on.
        control_addr: SocketAddr = DEFAULT_CONTROL_ADDR,
            env "SFU_CONTROL_ADDR",
            flag [
                /// Control API address [default: 127.0.0.1:7880].
                #[arg(long, value_name = "ADDR")]
            ];
        /// Address the media sockets bind to.
        media_ip: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST),
            env "SFU_MEDIA_IP",
            flag [
                /// Media bind address [default: 127.0.0.1].
                #[arg(long, value_name = "IP")]
            ];
        /// First media port: worker `i` binds `media_port + i`; 0 binds ephemeral ports.
        media_port: u16 = DEFAULT_MEDIA_PORT,
            env "SFU_MEDIA_PORT",
            flag [
                /// First media UDP port; worker i uses port+i; 0 = ephemeral [default: 7882].
                #[arg(long, value_name = "PORT")]
            ];
        /// Address written into API answers; `None` = `media_ip`.
        advertised_ip: Option<IpAddr> = None,
            layer IpAddr,
            env "SFU_ADVERTISED_IP",
            flag [
                /// Address put into API answers [default: the media ip].
                #[arg(long, value_name = "IP")]
            ];
        /// Node name in `/v1/load`; `None` = the host name (or a random name).
        node_id: Option<String> = None,
            layer String,
            env "SFU_NODE_ID",
            flag [
                /// Node name reported by /v1/load [default: the host name].
                #[arg(long, value_name = "ID")]
            ];
        /// The workers' packet I/O: `socket` (`recvmmsg`/`sendmmsg`),
        /// `uring` (io_uring) or `xdp` (AF_XDP on the media interface),
        /// the last two falling back to `socket` with the reason logged
        /// where the host cannot run them.
        io: IoMode = IoMode::Socket,
            env "SFU_IO",
            flag [
                /// Packet I/O backend of the workers: socket, uring or xdp [default: socket].
                #[arg(long, value_enum, value_name = "BACKEND")]
            ];
        /// Log output format.
        log_format: LogFormat = LogFormat::Text,
            env "SFU_LOG_FORMAT",
            flag [
                /// Log format [default: text].
                #[arg(long, value_enum, value_name = "FORMAT")]
            ];
        /// Seconds a drain (the first SIGTERM, or `POST /v1/drain`) waits
        /// for the last endpoint to leave before the node stops anyway.
        drain_timeout_secs: u64 = 3600,
            env "SFU_DRAIN_TIMEOUT_SECS",
            flag [
                /// Seconds a drain waits for the last endpoint to leave before stopping [default: 3600].
                #[arg(long, value_name = "SECS")]
            ];
        /// Send buffers per worker, allocated at start.
        pool_buffers: usize = DEFAULT_POOL_BUFFERS,
            env "SFU_POOL_BUFFERS",
            flag [
                /// Send buffers per worker [default: 4096].
                #[arg(long, value_name = "N", value_parser = parse_positive)]
            ];
        /// `SO_RCVBUF`/`SO_SNDBUF` of each media socket.
        socket_buffer_bytes: usize = DEFAULT_SOCKET_BUFFER_BYTES,
            env "SFU_SOCKET_BUFFER_BYTES",
            flag [
                /// SO_RCVBUF/SO_SNDBUF bytes per media socket [default: 33554432].
                #[arg(long, value_name = "BYTES")]
            ];
        /// Whether creating an endpoint or a WHIP/WHEP session in a room that
        /// does not exist creates the room (the token must grant that room).
        rooms_on_demand: bool = true,
            env "SFU_ROOMS_ON_DEMAND",
            flag [
                /// Create a room when a token for it creates its first endpoint or
                /// WHIP/WHEP session [default: true].
                #[arg(long, value_name = "BOOL")]
            ];
        /// Seconds an empty room lives before it is closed; 0 keeps empty rooms.
        empty_room_timeout_secs: u64 = DEFAULT_EMPTY_ROOM_TIMEOUT_SECS,
            env "SFU_EMPTY_ROOM_TIMEOUT_SECS",
            flag [
                /// Seconds an empty room lives before it is closed; 0 = never [default: 300].
                #[arg(long, value_name = "SECS")]
            ];
        /// PEM certificate chain of the control API; with `tls_key` the API
        /// speaks only HTTPS (HTTP/1.1 and HTTP/2). Reloaded on SIGHUP.
        tls_cert: Option<PathBuf> = None,
            layer PathBuf,
            env "SFU_TLS_CERT",
            flag [
                /// PEM certificate chain of the control API (HTTPS; reloaded on SIGHUP).
                #[arg(long, value_name = "FILE")]
            ];
        /// PEM private key of `tls_cert`.
        tls_key: Option<PathBuf> = None,
            layer PathBuf,
            env "SFU_TLS_KEY",
            flag [
                /// PEM private key of --tls-cert.
                #[arg(long, value_name = "FILE")]
            ];
        /// PEM CA certificates that peer nodes' API certificates are
        /// verified against (besides the public web roots) when requests
        /// pass between nodes over HTTPS.
        tls_ca: Option<PathBuf> = None,
            layer PathBuf,
            env "SFU_TLS_CA",
            flag [
                /// PEM CA certificates trusted for peer nodes' HTTPS (besides the web roots).
                #[arg(long, value_name = "FILE")]
            ];
    }
    extra {
        /// Secret the API's HS256 bearer tokens are signed with.
        api_secret: ApiSecret = ApiSecret::default();
        /// Limits on client-created state (`[limits]`, `SFU_LIMITS_*`).
        limits: Limits = Limits::default();
        /// Limits of the HTTP server and of session creation (`[http]`).
        http: HttpConfig = HttpConfig::default();
        /// Where node events are POSTed (`[webhook]`); off without a URL.
        webhook: WebhookConfig = WebhookConfig::default();
        /// The cluster (`[cluster]`): a single node without a Redis URL.
        cluster: ClusterConfig = ClusterConfig::default();
    }
    /// One configuration layer: every key optional. The TOML file has this shape.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ConfigLayer {
        /// See [`Config::api_secret`].
        pub api_secret: Option<ApiSecret>,
        /// A file holding [`Config::api_secret`]; read by [`Config::apply`].
        pub api_secret_file: Option<PathBuf>,
        /// See [`Config::limits`]: the limits this layer sets.
        pub limits: Option<LimitsLayer>,
        /// See [`Config::http`]: the `[http]` table.
        pub http: Option<HttpLayer>,
        /// See [`Config::webhook`]: the `[webhook]` table.
        pub webhook: Option<WebhookLayer>,
        /// See [`Config::cluster`]: the `[cluster]` table.
        pub cluster: Option<ClusterLayer>,
    }
    /// Command-line flags of the `sfu` binary. Every flag overrides the matching
    /// `SFU_*` variable, the config file and the default. Without a subcommand
    /// the binary runs the node.
    #[derive(Debug, Clone, Default, clap::Parser)]
    #[command(name = "sfu", version, about = "Selective forwarding unit media node")]
    pub struct Cli {
        /// What to do instead of running the node.
        #[command(subcommand)]
        pub command: Option<Command>,
        /// TOML config file (env SFU_CONFIG). See deploy/sfu.toml.
        #[arg(long, value_name = "FILE", global = true)]
        pub config: Option<PathBuf>,
        /// Secret of the API's HS256 tokens (env SFU_API_SECRET; prefer it or
        /// --api-secret-file, flags are visible to other users) [default: the
        /// development secret, loopback only].
        #[arg(long, value_name = "SECRET", global = true)]
        pub api_secret: Option<String>,
        /// File holding the API secret (env SFU_API_SECRET_FILE).
        #[arg(long, value_name = "FILE", global = true)]
        pub api_secret_file: Option<PathBuf>,
    } {
        /// The `--http-*` flags.
        #[command(flatten)]
        pub http: HttpFlags,
        /// The `--webhook-*` flags.
        #[command(flatten)]
        pub webhook: WebhookFlags,
        /// `--redis` and the `--cluster-*` flags.
        #[command(flatten)]
        pub cluster: ClusterFlags,
    }
}

/// The secret of the control API's tokens. Its `Debug` and `Serialize`
/// forms never show it (only whether it is [`DEV_API_SECRET`]).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ApiSecret(String);

impl ApiSecret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret's bytes, to sign and verify with.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// True when this is the public [`DEV_API_SECRET`].
    pub fn is_development(&self) -> bool {
        self.0 == DEV_API_SECRET
    }

    fn redacted(&self) -> &'static str {
        if self.is_development() {
            "<development secret>"
        } else {
            "<redacted>"
        }
    }
}

impl Default for ApiSecret {
    /// [`DEV_API_SECRET`].
    fn default() -> Self {
        Self::new(DEV_API_SECRET)
    }
}

impl fmt::Debug for ApiSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiSecret({})", self.redacted())
    }
}

impl Serialize for ApiSecret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.redacted())
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has unknown keys or bad values.
    #[error("bad config file {path}: {source}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: Box<toml::de::Error>,
    },
    /// An `SFU_*` environment variable has a bad value.
    #[error("bad value {value:?} in environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        message: String,
    },
    /// The API secret file could not be read.
    #[error("cannot read API secret file {path}: {source}")]
    SecretFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The folded configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Subcommands of the `sfu` binary.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Print a bearer token for the control API, signed with the configured
    /// API secret (--api-secret, SFU_API_SECRET, the config file, or the
    /// development secret).
    Token(TokenArgs),
    /// Read the cluster's registry in Redis (cluster.redis, SFU_REDIS,
    /// --redis) and print it.
    Cluster {
        /// What to do.
        #[command(subcommand)]
        action: ClusterAction,
    },
}

/// `sfu cluster` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ClusterAction {
    /// Print every registered node (live ones with their state, load and
    /// rooms; dead ones whose rooms are not all taken over yet) as a table.
    Status {
        /// Print the registry as JSON instead.
        #[arg(long)]
        json: bool,
    },
}

/// Flags of `sfu token`.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenArgs {
    /// Room the token is for, or `*` for every room and the node-wide routes.
    #[arg(long, value_name = "ROOM")]
    pub room: String,
    /// A grant; repeat for several.
    #[arg(long = "grant", value_name = "GRANT", value_enum, required = true)]
    pub grants: Vec<Grant>,
    /// Lifetime, seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600, value_parser = parse_ttl)]
    pub ttl: u64,
    /// Who the token is for (the `sub` claim).
    #[arg(long, value_name = "NAME")]
    pub sub: Option<String>,
}

impl TokenArgs {
    /// The claims of the token, valid from `now` (seconds since the Unix
    /// epoch) for [`TokenArgs::ttl`] seconds.
    pub fn claims(&self, now: u64) -> Result<Claims, String> {
        if self.room != crate::auth::ANY_ROOM {
            crate::state::validate_room_name(&self.room).map_err(|e| e.to_string())?;
        }
        let mut grants = self.grants.clone();
        grants.sort_unstable();
        grants.dedup();
        Ok(Claims {
            sub: self.sub.clone(),
            ..Claims::new(self.room.clone(), &grants, now, self.ttl)
        })
    }
}

fn parse_ttl(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

impl Cli {
    /// The flags as a configuration layer.
    pub fn layer(&self) -> ConfigLayer {
        ConfigLayer {
            api_secret: self.api_secret.clone().map(ApiSecret::new),
            api_secret_file: self.api_secret_file.clone(),
            // Limits come from the file and the environment only.
            limits: None,
            http: Some(self.http.flags_layer()),
            webhook: Some(self.webhook.flags_layer()),
            cluster: Some(self.cluster.flags_layer()),
            ..self.flags_layer()
        }
    }
}

impl ConfigLayer {
    /// Parses a TOML document.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Reads and parses a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|source| ConfigError::Toml {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// Reads the `SFU_*` variables out of `vars`; returns the layer and the
    /// config file named by `SFU_CONFIG`. Empty values count as unset;
    /// unknown `SFU_*` names are ignored.
    pub fn from_env<I, K, V>(vars: I) -> Result<(Self, Option<PathBuf>), ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut layer = Self::default();
        let mut file = None;
        for (key, value) in vars {
            let (key, value) = (key.as_ref(), value.as_ref());
            if value.trim().is_empty() || layer.set_env(key, value)? {
                continue;
            }
            match key {
                "SFU_CONFIG" => file = Some(PathBuf::from(value)),
                "SFU_API_SECRET" => layer.api_secret = Some(ApiSecret::new(value)),
                "SFU_API_SECRET_FILE" => layer.api_secret_file = Some(PathBuf::from(value)),
                _ if key.starts_with("SFU_HTTP_") => {
                    layer.http.get_or_insert_default().set_env(key, value)?;
                }
                _ if key.starts_with("SFU_WEBHOOK_") => {
                    layer.webhook.get_or_insert_default().set_env(key, value)?;
                }
                _ if key == "SFU_REDIS" || key.starts_with("SFU_CLUSTER_") => {
                    layer.cluster.get_or_insert_default().set_env(key, value)?;
                }
                _ => {
                    if let Some(name) = key.strip_prefix("SFU_LIMITS_") {
                        let var = "SFU_LIMITS_*";
                        let n: usize = env_value(var, value, parse_trimmed)?;
                        layer
                            .limits
                            .get_or_insert_with(LimitsLayer::default)
                            .set(name, n)
                            .map_err(|message| ConfigError::Env {
                                var,
                                value: format!("{key}={value}"),
                                message,
                            })?;
                    }
                }
            }
        }
        Ok((layer, file))
    }
}

impl Config {
    /// Folds defaults < file < environment < flags. The file is `cli.config`,
    /// else `SFU_CONFIG` from `env`.
    pub fn load<I, K, V>(cli: &Cli, env: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let (env_layer, env_file) = ConfigLayer::from_env(env)?;
        let mut config = Self::default();
        if let Some(path) = cli.config.as_ref().or(env_file.as_ref()) {
            config.apply(ConfigLayer::from_file(path)?)?;
        }
        config.apply(env_layer)?;
        config.apply(cli.layer())?;
        config.validate()?;
        Ok(config)
    }

    /// Overrides every key `layer` sets; reads its `api_secret_file`.
    /// Fails, changing nothing, if the layer sets both `api_secret` and
    /// `api_secret_file` or the file cannot be read.
    pub fn apply(&mut self, mut layer: ConfigLayer) -> Result<(), ConfigError> {
        let api_secret = match (layer.api_secret.take(), layer.api_secret_file.take()) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid(
                    "set api_secret or api_secret_file, not both".into(),
                ));
            }
            (Some(secret), None) => Some(secret),
            (None, Some(path)) => Some(read_secret_file(&path)?),
            (None, None) => None,
        };
        if let Some(v) = api_secret {
            self.api_secret = v;
        }
        if let Some(l) = &layer.limits {
            self.limits.apply(l);
        }
        if let Some(http) = layer.http {
            self.http.apply(http);
        }
        if let Some(webhook) = layer.webhook.take() {
            self.webhook.apply(webhook);
        }
        if let Some(cluster) = layer.cluster.take() {
            self.cluster.apply(cluster);
        }
        self.apply_settings(&mut layer);
        Ok(())
    }

    /// Checks what a single layer cannot: counts at least 1, the port range
    /// of all workers within `u16`, an API secret of at least
    /// [`MIN_SECRET_BYTES`], and the development secret only with loopback
    /// addresses.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::Invalid(
                "tls_cert and tls_key go together: set both (HTTPS) or neither (HTTP)".into(),
            ));
        }
        if self.tls_cert.is_some()
            && let Some(url) = &self.cluster.control_url
            && !url.starts_with("https://")
        {
            return Err(ConfigError::Invalid(format!(
                "cluster.control_url {url:?} must be https:// when the API speaks HTTPS (tls_cert)"
            )));
        }
        if self.api_secret.as_bytes().len() < MIN_SECRET_BYTES {
            return Err(ConfigError::Invalid(format!(
                "api_secret must be at least {MIN_SECRET_BYTES} bytes (RFC 7518 section 3.2)"
            )));
        }
        if self.api_secret.is_development() {
            let addresses = [
                ("control_addr", Some(self.control_addr.ip())),
                ("media_ip", Some(self.media_ip)),
                ("advertised_ip", self.advertised_ip),
            ];
            for (key, ip) in addresses {
                if let Some(ip) = ip.filter(|ip| !ip.to_canonical().is_loopback()) {
                    return Err(ConfigError::Invalid(format!(
                        "{key} {ip} is not a loopback address, and the API secret is the \
                         public development secret: set api_secret (SFU_API_SECRET, \
                         --api-secret) or api_secret_file (SFU_API_SECRET_FILE, \
                         --api-secret-file)"
                    )));
                }
            }
        }
        if self.workers == Some(0) {
            return Err(ConfigError::Invalid("workers must be at least 1".into()));
        }
        self.limits.validate().map_err(ConfigError::Invalid)?;
        if self.pool_buffers == 0 {
            return Err(ConfigError::Invalid(
                "pool_buffers must be at least 1".into(),
            ));
        }
        // The kernel takes an int and doubles it (capped at INT_MAX / 2):
        // a larger value would wrap negative in an unprivileged
        // setsockopt and leave the socket with the smallest buffer.
        if self.socket_buffer_bytes > MAX_SOCKET_BUFFER_BYTES {
            return Err(ConfigError::Invalid(format!(
                "socket_buffer_bytes must be at most {MAX_SOCKET_BUFFER_BYTES} (1 GiB)"
            )));
        }
        if self
            .node_id
            .as_deref()
            .is_some_and(|id| id.trim().is_empty())
        {
            return Err(ConfigError::Invalid("node_id must not be empty".into()));
        }
        self.http.validate()?;
        self.webhook.validate()?;
        self.cluster.validate()?;
        let workers = self.workers.unwrap_or(1);
        if self.media_port != 0
            && usize::from(self.media_port) + workers - 1 > usize::from(u16::MAX)
        {
            return Err(ConfigError::Invalid(format!(
                "media_port {} + {workers} workers exceeds port 65535",
                self.media_port
            )));
        }
        Ok(())
    }

    /// Fills in what the defaults leave open: CPUs from the affinity mask,
    /// workers from the CPUs, advertised address, node id.
    pub fn resolve(&self) -> Resolved {
        let cpus = match &self.cpus {
            Some(list) => list.0.clone(),
            None => allowed_cpus(),
        };
        let workers = self.workers.unwrap_or_else(|| {
            if cpus.is_empty() {
                std::thread::available_parallelism().map_or(1, usize::from)
            } else {
                cpus.len()
            }
        });
        Resolved {
            workers,
            cpus,
            advertised_ip: self.advertised_ip.unwrap_or(self.media_ip),
            node_id: self.node_id.clone().unwrap_or_else(default_node_id),
        }
    }
}

settings! {
    /// Limits of the HTTP control API: the server's timeouts, sizes and
    /// connection cap ([`crate::http`]) and the rate of session creation
    /// ([`crate::ratelimit`]). The `[http]` table of the TOML file; variables
    /// `SFU_HTTP_<KEY>`, flags `--http-<key>`. A rate of 0 switches that limit
    /// off.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
    pub struct HttpConfig {
        /// Seconds a client has to send a whole request head, from the
        /// connection's start or from the first byte of a later request.
        header_timeout_secs: u64 = 10,
            env "SFU_HTTP_HEADER_TIMEOUT_SECS",
            flag [
                /// Seconds to receive a request head [default: 10].
                #[arg(long = "http-header-timeout-secs", value_name = "S")]
            ];
        /// Seconds from a request's head to its answer, body included; else 408.
        request_timeout_secs: u64 = 30,
            env "SFU_HTTP_REQUEST_TIMEOUT_SECS",
            flag [
                /// Seconds from a request head to its answer, body included [default: 30].
                #[arg(long = "http-request-timeout-secs", value_name = "S")]
            ];
        /// Seconds a keep-alive connection may wait for its next request.
        idle_timeout_secs: u64 = 60,
            env "SFU_HTTP_IDLE_TIMEOUT_SECS",
            flag [
                /// Seconds a keep-alive connection may wait for a request [default: 60].
                #[arg(long = "http-idle-timeout-secs", value_name = "S")]
            ];
        /// Open connections at most; when full, the connection idle longest is
        /// closed to admit a new one. Clamped to the descriptor limit at start.
        max_connections: usize = 1024,
            env "SFU_HTTP_MAX_CONNECTIONS",
            flag [
                /// Open HTTP connections at most [default: 1024].
                #[arg(long = "http-max-connections", value_name = "N")]
            ];
        /// Largest request head (request line and headers), bytes; else 431.
        max_header_bytes: usize = 16 * 1024,
            env "SFU_HTTP_MAX_HEADER_BYTES",
            flag [
                /// Largest request head, bytes [default: 16384].
                #[arg(long = "http-max-header-bytes", value_name = "BYTES")]
            ];
        /// Most header fields in a request; else 431.
        max_headers: usize = 64,
            env "SFU_HTTP_MAX_HEADERS",
            flag [
                /// Most header fields per request [default: 64].
                #[arg(long = "http-max-headers", value_name = "N")]
            ];
        /// Sessions and rooms one client address may create per second.
        session_rate_per_ip: u32 = 20,
            env "SFU_HTTP_SESSION_RATE_PER_IP",
            flag [
                /// Sessions per second per client address; 0 = no limit [default: 20].
                #[arg(long = "http-session-rate-per-ip", value_name = "N")]
            ];
        /// Sessions and rooms one client address may create at once.
        session_burst_per_ip: u32 = 40,
            env "SFU_HTTP_SESSION_BURST_PER_IP",
            flag [
                /// Session burst per client address [default: 40].
                #[arg(long = "http-session-burst-per-ip", value_name = "N")]
            ];
        /// Sessions and rooms one bearer token may create per second.
        session_rate_per_token: u32 = 20,
            env "SFU_HTTP_SESSION_RATE_PER_TOKEN",
            flag [
                /// Sessions per second per token; 0 = no limit [default: 20].
                #[arg(long = "http-session-rate-per-token", value_name = "N")]
            ];
        /// Sessions and rooms one bearer token may create at once.
        session_burst_per_token: u32 = 40,
            env "SFU_HTTP_SESSION_BURST_PER_TOKEN",
            flag [
                /// Session burst per token [default: 40].
                #[arg(long = "http-session-burst-per-token", value_name = "N")]
            ];
    }
    extra {}
    /// The `[http]` table of one configuration layer: every key optional.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct HttpLayer {}
    /// The `--http-*` flags (see [`HttpConfig`] for each).
    #[derive(Debug, Clone, Copy, Default, clap::Args)]
    pub struct HttpFlags {} {}
}

impl HttpConfig {
    /// Overrides every key `layer` sets.
    pub fn apply(&mut self, mut layer: HttpLayer) {
        self.apply_settings(&mut layer);
    }

    /// Timeouts and the connection cap at least 1, a request head of at
    /// least 1024 bytes and 8 fields, a burst of at least 1 where a rate is set.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let at_least = |key: &str, value: u64, min: u64| {
            if value < min {
                Err(ConfigError::Invalid(format!(
                    "http.{key} must be at least {min}"
                )))
            } else {
                Ok(())
            }
        };
        at_least("header_timeout_secs", self.header_timeout_secs, 1)?;
        at_least("request_timeout_secs", self.request_timeout_secs, 1)?;
        at_least("idle_timeout_secs", self.idle_timeout_secs, 1)?;
        at_least("max_connections", self.max_connections as u64, 1)?;
        at_least("max_header_bytes", self.max_header_bytes as u64, 1024)?;
        at_least("max_headers", self.max_headers as u64, 8)?;
        if self.session_rate_per_ip > 0 {
            at_least("session_burst_per_ip", self.session_burst_per_ip.into(), 1)?;
        }
        if self.session_rate_per_token > 0 {
            at_least(
                "session_burst_per_token",
                self.session_burst_per_token.into(),
                1,
            )?;
        }
        Ok(())
    }
}

settings! {
    /// Webhooks: node events POSTed to a URL, signed with the API secret
    /// ([`crate::events`]). The `[webhook]` table of the TOML file; variables
    /// `SFU_WEBHOOK_<KEY>`, flags `--webhook-<key>`. Off while `url` is unset.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
    pub struct WebhookConfig {
        /// `http://` or `https://` URL the events are POSTed to; `None`: off.
        url: Option<String> = None,
            layer String,
            env "SFU_WEBHOOK_URL",
            flag [
                /// URL node events are POSTed to (http:// or https://) [default: none, off].
                #[arg(long = "webhook-url", value_name = "URL")]
            ];
        /// Milliseconds one delivery attempt may take, connecting included.
        timeout_ms: u64 = 2000,
            env "SFU_WEBHOOK_TIMEOUT_MS",
            flag [
                /// Milliseconds one webhook delivery attempt may take [default: 2000].
                #[arg(long = "webhook-timeout-ms", value_name = "MS")]
            ];
        /// Attempts after a failed first one, with exponential backoff, before
        /// the event is dropped.
        retries: u32 = 5,
            env "SFU_WEBHOOK_RETRIES",
            flag [
                /// Retries of a failed webhook delivery [default: 5].
                #[arg(long = "webhook-retries", value_name = "N")]
            ];
    }
    extra {}
    /// The `[webhook]` table of one configuration layer: every key optional.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct WebhookLayer {}
    /// The `--webhook-*` flags (see [`WebhookConfig`] for each).
    #[derive(Debug, Clone, Default, clap::Args)]
    pub struct WebhookFlags {} {}
}

impl WebhookConfig {
    /// Overrides every key `layer` sets.
    pub fn apply(&mut self, mut layer: WebhookLayer) {
        self.apply_settings(&mut layer);
    }

    /// A URL, if set, of scheme `http` or `https` with a host; a timeout of
    /// at least 1 ms.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "webhook.timeout_ms must be at least 1".into(),
            ));
        }
        if let Some(url) = &self.url {
            webhook_uri(url).map_err(|why| {
                ConfigError::Invalid(format!("webhook.url {url:?} is not usable: {why}"))
            })?;
        }
        Ok(())
    }

    /// Whether the URL is set and sends in the clear (`http://`) to a host
    /// other than a loopback address or `localhost`.
    pub fn is_unencrypted_remote(&self) -> bool {
        let Some(Ok(uri)) = self.url.as_deref().map(webhook_uri) else {
            return false;
        };
        if uri.scheme_str() != Some("http") {
            return false;
        }
        let host = uri.host().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.to_canonical().is_loopback());
        !loopback
    }
}

/// Parses a webhook URL: `http` or `https` and a host, no user info.
fn webhook_uri(url: &str) -> Result<axum::http::Uri, String> {
    let uri: axum::http::Uri = url.parse().map_err(|e| format!("{e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Err(format!("scheme {other:?} is neither http nor https")),
        None => return Err("no scheme (http:// or https://)".into()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("no host".into());
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err("user info in the URL is not supported".into());
    }
    Ok(uri)
}

settings! {
    /// The cluster: nodes sharing rooms through Redis ([`crate::cluster`]).
    /// The `[cluster]` table of the TOML file; variables `SFU_REDIS` and
    /// `SFU_CLUSTER_<KEY>`, flags `--redis` and `--cluster-<key>`. Without
    /// a Redis URL the node is a cluster of one with nothing shared.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
    pub struct ClusterConfig {
        /// `redis://` (or `rediss://`) URL of the cluster's Redis or Valkey,
        /// or several, comma separated: the seed nodes of a Redis Cluster;
        /// `None`: a single node.
        redis: Option<String> = None,
            layer String,
            env "SFU_REDIS",
            flag [
                /// Redis URL of the cluster, e.g. redis://10.0.0.5:6379 [default: none, a single node].
                #[arg(long = "redis", value_name = "URL", global = true)]
            ];
        /// The cluster's name: the hash tag of its Redis keys
        /// (`{NAME}:...`), so several clusters can share one Redis.
        name: String = "sfu".to_owned(),
            env "SFU_CLUSTER_NAME",
            flag [
                /// Cluster name, the hash tag of its Redis keys [default: sfu].
                #[arg(long = "cluster-name", value_name = "NAME")]
            ];
        /// The URL peers reach this node's control API at; `None`:
        /// `http://<advertised_ip>:<control port>`.
        control_url: Option<String> = None,
            layer String,
            env "SFU_CLUSTER_CONTROL_URL",
            flag [
                /// URL other nodes reach this node's control API at [default: http://ADVERTISED_IP:CONTROL_PORT].
                #[arg(long = "cluster-control-url", value_name = "URL")]
            ];
        /// Milliseconds between two writes of this node's registry entry.
        heartbeat_ms: u64 = 500,
            env "SFU_CLUSTER_HEARTBEAT_MS",
            flag [
                /// Milliseconds between registry heartbeats [default: 500].
                #[arg(long = "cluster-heartbeat-ms", value_name = "MS")]
            ];
        /// Milliseconds a registry entry lives without a heartbeat: a node
        /// whose entry expired is dead and its rooms are taken over.
        node_ttl_ms: u64 = 2000,
            env "SFU_CLUSTER_NODE_TTL_MS",
            flag [
                /// Milliseconds a node's registry entry lives without a heartbeat [default: 2000].
                #[arg(long = "cluster-node-ttl-ms", value_name = "MS")]
            ];
        /// Load (percent of the node's room or endpoint capacity) above
        /// which placement avoids a node while others are below it.
        stress_percent: u32 = 80,
            env "SFU_CLUSTER_STRESS_PERCENT",
            flag [
                /// Load percent above which placement avoids a node [default: 80].
                #[arg(long = "cluster-stress-percent", value_name = "PERCENT")]
            ];
        /// Endpoints a room has on one worker before its new subscribers
        /// go elsewhere: to a shard on another worker of the node, then to
        /// relay nodes that the origin feeds over a cascade trunk; 0:
        /// never (a room stays on its worker).
        relay_after: u32 = 250,
            env "SFU_CLUSTER_RELAY_AFTER",
            flag [
                /// Endpoints of a room on one worker before new subscribers go to other workers, then relay nodes; 0: never [default: 250].
                #[arg(long = "cluster-relay-after", value_name = "N")]
            ];
    }
    extra {}
    /// The `[cluster]` table of one configuration layer: every key optional.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ClusterLayer {}
    /// `--redis` and the `--cluster-*` flags (see [`ClusterConfig`] for each).
    #[derive(Debug, Clone, Default, clap::Args)]
    pub struct ClusterFlags {} {}
}

impl ClusterConfig {
    /// Overrides every key `layer` sets.
    pub fn apply(&mut self, mut layer: ClusterLayer) {
        self.apply_settings(&mut layer);
    }

    /// `redis://`, `rediss://` or `unix://` URLs; a name Redis can tag
    /// keys with; a heartbeat of at least 50 ms and at most a third of the
    /// TTL (two missed heartbeats do not kill a node); a control URL of
    /// scheme `http` or `https`; a stress threshold of 1-100 %.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(urls) = &self.redis {
            for url in urls.split(',').map(str::trim) {
                if !["redis://", "rediss://", "unix://", "redis+unix://"]
                    .iter()
                    .any(|p| url.starts_with(p))
                {
                    return Err(ConfigError::Invalid(format!(
                        "cluster.redis {url:?} is not a redis:// or rediss:// URL"
                    )));
                }
            }
        }
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ConfigError::Invalid(format!(
                "cluster.name {:?} must be 1-64 of A-Z, a-z, 0-9, - and _",
                self.name
            )));
        }
        if self.heartbeat_ms < 50 || self.heartbeat_ms.saturating_mul(3) > self.node_ttl_ms {
            return Err(ConfigError::Invalid(format!(
                "cluster.heartbeat_ms {} must be at least 50 and at most a third of \
                 cluster.node_ttl_ms {}",
                self.heartbeat_ms, self.node_ttl_ms
            )));
        }
        if let Some(url) = &self.control_url {
            webhook_uri(url).map_err(|why| {
                ConfigError::Invalid(format!("cluster.control_url {url:?} is not usable: {why}"))
            })?;
        }
        if !(1..=100).contains(&self.stress_percent) {
            return Err(ConfigError::Invalid(
                "cluster.stress_percent must be 1-100".into(),
            ));
        }
        Ok(())
    }
}

/// What [`Config::resolve`] fills in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Worker threads (at least 1).
    pub workers: usize,
    /// CPUs to pin to; empty = no pinning.
    pub cpus: Vec<usize>,
    /// Address put in API answers.
    pub advertised_ip: IpAddr,
    /// Node name.
    pub node_id: String,
}

/// The CPUs this process may run on (`sched_getaffinity`, so `taskset` and
/// systemd `CPUAffinity=` are honoured), ascending; empty if unknown.
pub fn allowed_cpus() -> Vec<usize> {
    let mut cpus: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    cpus.sort_unstable();
    cpus.dedup();
    cpus
}

/// Reads an API secret file; one trailing line break is not part of the secret.
fn read_secret_file(path: &Path) -> Result<ApiSecret, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
        path: path.to_owned(),
        source,
    })?;
    let secret = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    Ok(ApiSecret::new(secret))
}

/// The host name, or `sfu-` and 8 random hex digits if it cannot be read.
fn default_node_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("sfu-{:08x}", rand::random::<u32>()))
}

/// A list of CPU numbers written like `0,2-5` (order kept, no duplicates),
/// or `none` for the empty list (no pinning).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuList(pub Vec<usize>);

/// Why a CPU list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CpuListError {
    /// The list is empty (use `none` for no pinning).
    #[error("empty CPU list (write `none` for no pinning)")]
    Empty,
    /// An item is neither `N` nor `A-B`.
    #[error("bad CPU list item {0:?} (expected N or A-B)")]
    BadItem(String),
    /// A range runs backwards.
    #[error("CPU range {0}-{1} runs backwards")]
    Backwards(usize, usize),
    /// A CPU number beyond [`MAX_CPU`].
    #[error("CPU {0} out of range (max {MAX_CPU})")]
    OutOfRange(usize),
    /// A CPU appears twice.
    #[error("CPU {0} listed twice")]
    Duplicate(usize),
}

impl FromStr for CpuList {
    type Err = CpuListError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("none") {
            return Ok(Self(Vec::new()));
        }
        if s.is_empty() {
            return Err(CpuListError::Empty);
        }
        let number = |item: &str, part: &str| -> Result<usize, CpuListError> {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(CpuListError::BadItem(item.to_owned()));
            }
            let n: usize = part
                .parse()
                .map_err(|_| CpuListError::OutOfRange(usize::MAX))?;
            if n > MAX_CPU {
                return Err(CpuListError::OutOfRange(n));
            }
            Ok(n)
        };
        let mut cpus = Vec::new();
        for item in s.split(',') {
            let item = item.trim();
            let (first, last) = match item.split_once('-') {
                Some((a, b)) => (number(item, a)?, number(item, b)?),
                None => {
                    let n = number(item, item)?;
                    (n, n)
                }
            };
            if first > last {
                return Err(CpuListError::Backwards(first, last));
            }
            for cpu in first..=last {
                if cpus.contains(&cpu) {
                    return Err(CpuListError::Duplicate(cpu));
                }
                cpus.push(cpu);
            }
        }
        Ok(Self(cpus))
    }
}

impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        let mut i = 0;
        let mut first = true;
        while i < self.0.len() {
            let start = self.0[i];
            let mut end = start;
            while i + 1 < self.0.len() && self.0[i + 1] == end + 1 {
                i += 1;
                end += 1;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
            i += 1;
        }
        Ok(())
    }
}

impl Serialize for CpuList {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CpuList {
    /// Accepts the string form (`"0,2-5"`) or an array of CPU numbers.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            Numbers(Vec<usize>),
        }
        let text = match Repr::deserialize(deserializer)? {
            Repr::Text(text) => text,
            Repr::Numbers(numbers) if numbers.is_empty() => "none".to_owned(),
            Repr::Numbers(numbers) => numbers
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(","),
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("sfu").chain(args.iter().copied()))
            .expect("test arguments are valid")
    }

    const NO_ENV: [(&str, &str); 0] = [];
    const TEST_SECRET: &str = "a test secret that is long enough!";

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sfu-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir is writable");
        dir
    }

    #[test]
    fn cpu_list_parses_items_and_ranges() {
        let cases: &[(&str, &[usize])] = &[
            ("0", &[0]),
            ("0,2-5", &[0, 2, 3, 4, 5]),
            (" 3 , 1 ", &[3, 1]),
            ("7-7", &[7]),
            ("none", &[]),
            ("NONE", &[]),
            ("0-1,4,6-7", &[0, 1, 4, 6, 7]),
            ("1023", &[1023]),
        ];
        for (text, want) in cases {
            let got: CpuList = text.parse().unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(got.0, *want, "{text:?}");
        }
    }

    #[test]
    fn cpu_list_rejects_bad_lists() {
        let cases: &[(&str, CpuListError)] = &[
            ("", CpuListError::Empty),
            ("  ", CpuListError::Empty),
            ("a", CpuListError::BadItem("a".into())),
            ("1,", CpuListError::BadItem(String::new())),
            (",1", CpuListError::BadItem(String::new())),
            ("1-", CpuListError::BadItem("1-".into())),
            ("-1", CpuListError::BadItem("-1".into())),
            ("1-2-3", CpuListError::BadItem("1-2-3".into())),
            ("+1", CpuListError::BadItem("+1".into())),
            ("5-2", CpuListError::Backwards(5, 2)),
            ("1024", CpuListError::OutOfRange(1024)),
            (
                "99999999999999999999999",
                CpuListError::OutOfRange(usize::MAX),
            ),
            ("1,1", CpuListError::Duplicate(1)),
            ("0-3,2", CpuListError::Duplicate(2)),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<CpuList>().as_ref(), Err(want), "{text:?}");
        }
    }

    #[test]
    fn cpu_list_displays_compactly_and_round_trips() {
        for text in ["0", "0,2-5", "3,1", "none", "0-1,4,6-7"] {
            let list: CpuList = text.parse().expect("valid list");
            assert_eq!(list.to_string(), text);
        }
    }

    #[test]
    fn bad_cpus_flag_is_a_clear_error() {
        let err = Cli::try_parse_from(["sfu", "--cpus", "2-1"]).expect_err("backwards range");
        assert!(err.to_string().contains("runs backwards"), "{err}");
        assert!(Cli::try_parse_from(["sfu", "--workers", "0"]).is_err());
    }

    #[test]
    fn no_arguments_give_the_defaults() {
        let config = Config::load(&cli(&[]), NO_ENV).expect("defaults are valid");
        assert_eq!(config, Config::default());
        assert_eq!(config.control_addr.to_string(), "127.0.0.1:7880");
        assert_eq!(config.media_port, 7882);
    }

    #[test]
    fn precedence_is_defaults_file_env_flags() {
        let dir = std::env::temp_dir().join(format!("sfu-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir is writable");
        let path = dir.join("sfu.toml");
        std::fs::write(
            &path,
            r#"
control_addr = "127.0.0.1:9000"
media_port = 10000
workers = 3
cpus = "0-2"
node_id = "from-file"
pool_buffers = 100
"#,
        )
        .expect("temp file is writable");
        let path_str = path.to_str().expect("temp path is UTF-8");

        // File only (named by SFU_CONFIG).
        let config = Config::load(&cli(&[]), [("SFU_CONFIG", path_str)]).expect("valid");
        assert_eq!(config.control_addr.to_string(), "127.0.0.1:9000");
        assert_eq!(config.media_port, 10000);
        assert_eq!(config.workers, Some(3));
        assert_eq!(config.cpus, Some(CpuList(vec![0, 1, 2])));
        assert_eq!(config.node_id.as_deref(), Some("from-file"));
        assert_eq!(config.pool_buffers, 100);
        assert_eq!(
            config.media_ip,
            Config::default().media_ip,
            "untouched key keeps default"
        );

        // Env beats file.
        let env = [
            ("SFU_CONFIG", path_str),
            ("SFU_MEDIA_PORT", "11000"),
            ("SFU_WORKERS", "4"),
            ("SFU_NODE_ID", "from-env"),
            ("SFU_LOG_FORMAT", "json"),
            ("SFU_MEDIA_IP", "0.0.0.0"),
            ("SFU_ADVERTISED_IP", "192.0.2.7"),
            ("SFU_SOCKET_BUFFER_BYTES", "4096"),
            ("SFU_POOL_BUFFERS", ""),
            ("SFU_API_SECRET", TEST_SECRET),
            ("UNRELATED", "x"),
        ];
        let config = Config::load(&cli(&[]), env).expect("valid");
        assert_eq!(config.control_addr.to_string(), "127.0.0.1:9000");
        assert_eq!(config.media_port, 11000);
        assert_eq!(config.workers, Some(4));
        assert_eq!(config.node_id.as_deref(), Some("from-env"));
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.media_ip.to_string(), "0.0.0.0");
        assert_eq!(
            config.advertised_ip.map(|a| a.to_string()).as_deref(),
            Some("192.0.2.7")
        );
        assert_eq!(config.socket_buffer_bytes, 4096);
        assert_eq!(config.pool_buffers, 100, "empty env value counts as unset");
        assert_eq!(config.api_secret, ApiSecret::new(TEST_SECRET));

        // Flags beat env; --config beats SFU_CONFIG.
        let flags = cli(&[
            "--config",
            path_str,
            "--media-port",
            "0",
            "--workers",
            "2",
            "--cpus",
            "none",
            "--control-addr",
            "127.0.0.1:0",
            "--log-format",
            "text",
        ]);
        let config = Config::load(
            &flags,
            [("SFU_CONFIG", "/nonexistent"), ("SFU_WORKERS", "4")],
        )
        .expect("valid");
        assert_eq!(config.media_port, 0);
        assert_eq!(config.workers, Some(2));
        assert_eq!(config.cpus, Some(CpuList(Vec::new())));
        assert_eq!(config.control_addr.to_string(), "127.0.0.1:0");
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!(config.node_id.as_deref(), Some("from-file"));

        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn bad_values_are_errors() {
        let err = Config::load(&cli(&[]), [("SFU_SOCKET_BUFFER_BYTES", "4294967296")])
            .expect_err("more than the kernel takes");
        assert!(err.to_string().contains("socket_buffer_bytes"), "{err}");
        assert!(Config::load(&cli(&[]), [("SFU_SOCKET_BUFFER_BYTES", "1073741824")]).is_ok());
        let err = Config::load(&cli(&[]), [("SFU_CPUS", "3-1")]).expect_err("bad list");
        assert!(err.to_string().contains("SFU_CPUS"), "{err}");
        assert!(Config::load(&cli(&[]), [("SFU_WORKERS", "0")]).is_err());
        assert!(Config::load(&cli(&[]), [("SFU_MEDIA_PORT", "70000")]).is_err());
        assert!(Config::load(&cli(&[]), [("SFU_LOG_FORMAT", "xml")]).is_err());
        assert!(Config::load(&cli(&["--config", "/nonexistent/sfu.toml"]), NO_ENV).is_err());
        assert!(
            ConfigLayer::from_toml("wokers = 3").is_err(),
            "unknown keys are refused"
        );
        assert!(ConfigLayer::from_toml("workers = \"three\"").is_err());
        let err = Config::load(&cli(&["--media-port", "65535", "--workers", "2"]), NO_ENV)
            .expect_err("port range overflows");
        assert!(matches!(err, ConfigError::Invalid(_)));
    }

    #[test]
    fn toml_cpus_accept_string_or_array() {
        let layer = ConfigLayer::from_toml("cpus = [1, 3]").expect("array form");
        assert_eq!(layer.cpus, Some(CpuList(vec![1, 3])));
        let layer = ConfigLayer::from_toml("cpus = \"1,3-4\"").expect("string form");
        assert_eq!(layer.cpus, Some(CpuList(vec![1, 3, 4])));
        assert!(ConfigLayer::from_toml("cpus = \"4-1\"").is_err());
    }

    /// Every key of the shipped example is a real key with a valid value.
    #[test]
    fn example_file_parses_with_every_key_uncommented() {
        let text = include_str!("../../deploy/sfu.toml");
        // Commented keys, under their (uncommented) section headers.
        let uncommented: String = text
            .lines()
            .filter_map(|line| line.strip_prefix("# ").or(line.strip_prefix("#")))
            .filter(|line| {
                let table = line.starts_with('[') && line.ends_with(']');
                table
                    || line.split_once(" = ").is_some_and(|(key, _)| {
                        key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    })
            })
            .map(|line| format!("{line}\n"))
            .collect();
        let layer = ConfigLayer::from_toml(&uncommented).expect("example keys parse");
        let limits = layer.limits.clone().expect("a [limits] section");
        assert_eq!(
            limits.0.len(),
            crate::limits::NAMES.len(),
            "every limit documented"
        );
        let mut documented = Limits::default();
        documented.apply(&limits);
        assert_eq!(
            documented,
            Limits::default(),
            "documented values are the defaults"
        );
        assert!(layer.control_addr.is_some() && layer.media_ip.is_some());
        assert!(layer.media_port.is_some() && layer.workers.is_some());
        assert!(layer.cpus.is_some() && layer.advertised_ip.is_some());
        assert!(layer.node_id.is_some() && layer.log_format.is_some());
        assert!(layer.pool_buffers.is_some() && layer.socket_buffer_bytes.is_some());
        assert!(layer.api_secret.is_some() && layer.api_secret_file.is_some());
        assert!(layer.rooms_on_demand.is_some() && layer.empty_room_timeout_secs.is_some());
        let http = layer.http.expect("the [http] table");
        assert!(http.header_timeout_secs.is_some() && http.request_timeout_secs.is_some());
        assert!(http.idle_timeout_secs.is_some() && http.max_connections.is_some());
        assert!(http.max_header_bytes.is_some() && http.max_headers.is_some());
        assert!(http.session_rate_per_ip.is_some() && http.session_burst_per_ip.is_some());
        assert!(http.session_rate_per_token.is_some() && http.session_burst_per_token.is_some());
        let webhook = layer.webhook.expect("the [webhook] table");
        assert!(webhook.url.is_some());
        let mut documented = WebhookConfig::default();
        documented.apply(WebhookLayer {
            url: None,
            ..webhook
        });
        assert_eq!(
            documented,
            WebhookConfig::default(),
            "documented values are the defaults"
        );
    }

    #[test]
    fn example_file_documents_the_cluster_defaults() {
        let text = include_str!("../../deploy/sfu.toml");
        let cluster: String = text
            .lines()
            .skip_while(|l| *l != "# [cluster]")
            .take_while(|l| !l.starts_with("# Limits of the HTTP"))
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                l.starts_with('[')
                    || l.split_once(" = ").is_some_and(|(k, _)| {
                        k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    })
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let layer = ConfigLayer::from_toml(&cluster).expect("the [cluster] keys parse");
        let c = layer.cluster.expect("a [cluster] table");
        assert!(c.redis.is_some() && c.control_url.is_some());
        let mut documented = ClusterConfig::default();
        documented.apply(ClusterLayer {
            redis: None,
            control_url: None,
            ..c
        });
        assert_eq!(documented, ClusterConfig::default(), "documented defaults");
    }

    #[test]
    fn cluster_keys_come_from_file_env_and_flags_and_are_checked() {
        let (layer, _) = ConfigLayer::from_env([
            ("SFU_REDIS", "redis://127.0.0.1:6379"),
            ("SFU_CLUSTER_NODE_TTL_MS", "3000"),
        ])
        .expect("env");
        let mut config = Config::default();
        config.apply(layer).expect("apply");
        assert_eq!(
            config.cluster.redis.as_deref(),
            Some("redis://127.0.0.1:6379")
        );
        assert_eq!(config.cluster.node_ttl_ms, 3000);
        let config = Config::load(
            &cli(&[
                "--redis",
                "redis://10.0.0.5:6379",
                "--cluster-heartbeat-ms",
                "400",
            ]),
            NO_ENV,
        )
        .expect("flags");
        assert_eq!(
            config.cluster.redis.as_deref(),
            Some("redis://10.0.0.5:6379")
        );
        assert_eq!(config.cluster.heartbeat_ms, 400);
        let bad = |c: ClusterConfig| c.validate().expect_err("refused").to_string();
        let base = ClusterConfig::default();
        assert!(
            bad(ClusterConfig {
                redis: Some("http://x".into()),
                ..base.clone()
            })
            .contains("redis")
        );
        assert!(
            bad(ClusterConfig {
                name: "a b".into(),
                ..base.clone()
            })
            .contains("name")
        );
        assert!(
            bad(ClusterConfig {
                heartbeat_ms: 1000,
                ..base.clone()
            })
            .contains("heartbeat")
        );
        assert!(
            bad(ClusterConfig {
                stress_percent: 0,
                ..base.clone()
            })
            .contains("stress")
        );
        assert!(
            bad(ClusterConfig {
                control_url: Some("ftp://x".into()),
                ..base
            })
            .contains("control_url")
        );
    }

    #[test]
    fn webhook_keys_layer_and_urls_are_checked() {
        let dir = temp_dir("webhook-test");
        let path = dir.join("sfu.toml");
        std::fs::write(
            &path,
            "[webhook]\nurl = \"https://a.example/hook\"\ntimeout_ms = 500\nretries = 1\n",
        )
        .expect("temp file is writable");
        let path_str = path.to_str().expect("temp path is UTF-8");
        let env = [("SFU_CONFIG", path_str), ("SFU_WEBHOOK_RETRIES", "7")];
        let config = Config::load(&cli(&[]), env).expect("valid");
        let want = WebhookConfig {
            url: Some("https://a.example/hook".into()),
            timeout_ms: 500,
            retries: 7,
        };
        assert_eq!(config.webhook, want);
        let flags = cli(&[
            "--webhook-url",
            "http://127.0.0.1:9000/e",
            "--webhook-retries",
            "0",
        ]);
        let config = Config::load(&flags, env).expect("valid");
        assert_eq!(
            config.webhook.url.as_deref(),
            Some("http://127.0.0.1:9000/e")
        );
        assert_eq!(config.webhook.retries, 0);
        assert!(!config.webhook.is_unencrypted_remote(), "loopback");
        assert_eq!(Config::default().webhook.url, None, "off by default");

        for bad in [
            "ftp://a.example/x",
            "a.example/hook",
            "/hook",
            "http://",
            "https://user:pw@a.example/",
            "not a url",
        ] {
            let error = Config::load(&cli(&[]), [("SFU_WEBHOOK_URL", bad)])
                .expect_err(bad)
                .to_string();
            assert!(error.contains("webhook.url"), "{bad}: {error}");
        }
        assert!(Config::load(&cli(&[]), [("SFU_WEBHOOK_TIMEOUT_MS", "0")]).is_err());
        assert!(ConfigLayer::from_toml("[webhook]\nuri = \"http://a\"").is_err());

        let remote = |url: &str| WebhookConfig {
            url: Some(url.into()),
            ..WebhookConfig::default()
        };
        assert!(remote("http://192.0.2.1/e").is_unencrypted_remote());
        assert!(remote("http://hooks.example:8080/e").is_unencrypted_remote());
        assert!(!remote("https://hooks.example/e").is_unencrypted_remote());
        assert!(!remote("http://localhost:8080/e").is_unencrypted_remote());
        assert!(!remote("http://[::1]:8080/e").is_unencrypted_remote());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn http_limits_layer_like_the_other_keys() {
        let dir = temp_dir("http-test");
        let path = dir.join("sfu.toml");
        std::fs::write(
            &path,
            "[http]\nmax_connections = 100\nheader_timeout_secs = 5\nsession_rate_per_ip = 0\n",
        )
        .expect("temp file is writable");
        let path_str = path.to_str().expect("temp path is UTF-8");
        let env = [
            ("SFU_CONFIG", path_str),
            ("SFU_HTTP_MAX_CONNECTIONS", "200"),
            ("SFU_HTTP_IDLE_TIMEOUT_SECS", "7"),
        ];
        let flags = cli(&["--http-idle-timeout-secs", "9", "--http-max-headers", "32"]);
        let config = Config::load(&flags, env).expect("valid");
        let want = HttpConfig {
            max_connections: 200,
            header_timeout_secs: 5,
            session_rate_per_ip: 0,
            idle_timeout_secs: 9,
            max_headers: 32,
            ..HttpConfig::default()
        };
        assert_eq!(config.http, want);
        for (var, value) in [
            ("SFU_HTTP_MAX_CONNECTIONS", "0"),
            ("SFU_HTTP_REQUEST_TIMEOUT_SECS", "0"),
            ("SFU_HTTP_MAX_HEADER_BYTES", "100"),
            ("SFU_HTTP_SESSION_BURST_PER_TOKEN", "0"),
            ("SFU_HTTP_HEADER_TIMEOUT_SECS", "soon"),
        ] {
            assert!(
                Config::load(&cli(&[]), [(var, value)]).is_err(),
                "{var}={value}"
            );
        }
        assert!(ConfigLayer::from_toml("[http]\nmax_conections = 1").is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The public development secret only serves loopback addresses; any
    /// other secret (of a sane length) serves anything.
    #[test]
    fn development_secret_refuses_non_loopback_addresses() {
        let dev = Config::default();
        assert!(dev.api_secret.is_development());
        assert!(dev.validate().is_ok(), "the embedded default is valid");
        let v6_loopback = Config {
            control_addr: "[::1]:7880".parse().expect("literal"),
            media_ip: "::ffff:127.0.0.1".parse().expect("literal"),
            ..Config::default()
        };
        assert!(v6_loopback.validate().is_ok());
        let public: [(&str, Config); 4] = [
            (
                "control_addr",
                Config {
                    control_addr: "0.0.0.0:7880".parse().expect("literal"),
                    ..Config::default()
                },
            ),
            (
                "control_addr",
                Config {
                    control_addr: "192.0.2.1:7880".parse().expect("literal"),
                    ..Config::default()
                },
            ),
            (
                "media_ip",
                Config {
                    media_ip: "::".parse().expect("literal"),
                    ..Config::default()
                },
            ),
            (
                "advertised_ip",
                Config {
                    advertised_ip: Some("198.51.100.1".parse().expect("literal")),
                    ..Config::default()
                },
            ),
        ];
        for (key, config) in public {
            let err = config
                .validate()
                .expect_err("development secret on a public address");
            let text = err.to_string();
            assert!(text.contains(key) && text.contains("development"), "{text}");
            let with_secret = Config {
                api_secret: ApiSecret::new(TEST_SECRET),
                ..config
            };
            assert!(with_secret.validate().is_ok(), "{key} with a real secret");
        }
        // Through the loader too: flags, and the env's secret lifting it.
        let err =
            Config::load(&cli(&["--control-addr", "0.0.0.0:7880"]), NO_ENV).expect_err("refused");
        assert!(err.to_string().contains("SFU_API_SECRET"), "{err}");
        let config = Config::load(
            &cli(&["--control-addr", "0.0.0.0:7880"]),
            [("SFU_API_SECRET", TEST_SECRET)],
        )
        .expect("a real secret may serve any address");
        assert!(!config.api_secret.is_development());
    }

    #[test]
    fn short_secrets_are_refused() {
        let err = Config::load(&cli(&["--api-secret", "short"]), NO_ENV).expect_err("too short");
        assert!(err.to_string().contains("32 bytes"), "{err}");
        let exactly = "x".repeat(MIN_SECRET_BYTES);
        assert!(Config::load(&cli(&["--api-secret", &exactly]), NO_ENV).is_ok());
    }

    #[test]
    fn secret_file_layers() {
        let dir = temp_dir("secret-test");
        let file = dir.join("secret");
        std::fs::write(&file, format!("{TEST_SECRET}\n")).expect("temp file is writable");
        let file_str = file.to_str().expect("temp path is UTF-8");

        let config = Config::load(&cli(&[]), [("SFU_API_SECRET_FILE", file_str)]).expect("valid");
        assert_eq!(
            config.api_secret,
            ApiSecret::new(TEST_SECRET),
            "newline dropped"
        );
        // The flag's secret (later layer) beats the env's file.
        let other = "another secret, also long enough";
        let config = Config::load(
            &cli(&["--api-secret", other]),
            [("SFU_API_SECRET_FILE", file_str)],
        )
        .expect("valid");
        assert_eq!(config.api_secret, ApiSecret::new(other));
        // And the flag's file beats the env's secret.
        let config = Config::load(
            &cli(&["--api-secret-file", file_str]),
            [("SFU_API_SECRET", other)],
        )
        .expect("valid");
        assert_eq!(config.api_secret, ApiSecret::new(TEST_SECRET));
        // Both in one layer, or a missing file: errors.
        let err = Config::load(
            &cli(&[]),
            [("SFU_API_SECRET_FILE", file_str), ("SFU_API_SECRET", other)],
        )
        .expect_err("both in one layer");
        assert!(err.to_string().contains("not both"), "{err}");
        let err = Config::load(&cli(&["--api-secret-file", "/nonexistent/secret"]), NO_ENV)
            .expect_err("missing file");
        assert!(matches!(err, ConfigError::SecretFile { .. }), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn secrets_never_show_in_debug_or_serialized_config() {
        let config = Config {
            api_secret: ApiSecret::new(TEST_SECRET),
            ..Config::default()
        };
        let debug = format!("{config:?}");
        let json = serde_json::to_string(&config).expect("serialises");
        for text in [&debug, &json] {
            assert!(!text.contains(TEST_SECRET), "{text}");
            assert!(text.contains("<redacted>"), "{text}");
        }
        let dev = format!("{:?}", Config::default());
        assert!(
            !dev.contains(DEV_API_SECRET) && dev.contains("development"),
            "{dev}"
        );
    }

    #[test]
    fn token_subcommand_parses_and_no_arguments_run_the_node() {
        assert!(cli(&[]).command.is_none());
        let parsed = cli(&[
            "token",
            "--room",
            "lobby",
            "--grant",
            "publish",
            "--grant",
            "subscribe",
            "--grant",
            "publish",
            "--ttl",
            "60",
            "--sub",
            "alice",
            "--api-secret",
            TEST_SECRET,
        ]);
        assert_eq!(
            parsed.api_secret.as_deref(),
            Some(TEST_SECRET),
            "global flag"
        );
        let Some(Command::Token(args)) = &parsed.command else {
            panic!("token subcommand: {parsed:?}");
        };
        let claims = args.claims(1000).expect("valid room");
        assert_eq!(claims.room, "lobby");
        assert_eq!(claims.grants, vec![Grant::Publish, Grant::Subscribe]);
        assert_eq!(claims.exp, 1060);
        assert_eq!(claims.sub.as_deref(), Some("alice"));
        assert_eq!(
            cli(&["token", "--room", "*", "--grant", "admin"])
                .command
                .and_then(|c| match c {
                    Command::Token(a) => Some(a.ttl),
                    Command::Cluster { .. } => None,
                }),
            Some(3600)
        );

        for bad in [
            &["token", "--room", "r"][..],
            &["token", "--grant", "admin"],
            &["token", "--room", "r", "--grant", "root"],
            &["token", "--room", "r", "--grant", "admin", "--ttl", "0"],
        ] {
            assert!(
                Cli::try_parse_from(std::iter::once("sfu").chain(bad.iter().copied())).is_err(),
                "{bad:?}"
            );
        }
        let Some(Command::Token(args)) =
            cli(&["token", "--room", "a b", "--grant", "admin"]).command
        else {
            panic!("parses");
        };
        assert!(args.claims(0).is_err(), "invalid room name");
    }

    #[test]
    fn resolve_fills_in_defaults() {
        let config = Config {
            cpus: Some(CpuList(vec![2, 3, 5])),
            media_ip: "10.0.0.1".parse().expect("valid ip"),
            node_id: Some("n1".into()),
            ..Config::default()
        };
        let r = config.resolve();
        assert_eq!(r.workers, 3, "one worker per listed CPU");
        assert_eq!(r.cpus, vec![2, 3, 5]);
        assert_eq!(r.advertised_ip.to_string(), "10.0.0.1");
        assert_eq!(r.node_id, "n1");

        let r = Config::default().resolve();
        assert!(r.workers >= 1);
        assert!(!r.node_id.is_empty());
        if !r.cpus.is_empty() {
            assert_eq!(r.workers, r.cpus.len());
        }
    }
}
