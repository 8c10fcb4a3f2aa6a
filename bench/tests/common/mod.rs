//! The node the bench crate's integration tests drive: started in-process
//! on ephemeral loopback ports with its own runtime, stopped on drop.
#![allow(dead_code, unreachable_pub)] // Not every test binary uses every helper.

use control::config::{ApiSecret, Config, CpuList};

/// A node on ephemeral loopback ports with its own runtime.
pub struct Node {
    rt: tokio::runtime::Runtime,
    running: Option<control::Running>,
}

impl Node {
    /// A node with the embedded default API secret (the development one),
    /// which `sfu-loadgen` uses by default.
    pub fn start(workers: usize) -> Self {
        Self::start_with(workers, ApiSecret::default())
    }

    /// A node with `workers` unpinned workers and `api_secret`.
    pub fn start_with(workers: usize, api_secret: ApiSecret) -> Self {
        Self::start_config(Config {
            api_secret,
            ..config(workers, "bench-test")
        })
    }

    /// A node with `config` (from [`config`], changed as a test needs).
    pub fn start_config(config: Config) -> Self {
        let rt = runtime();
        let running = rt
            .block_on(control::start(config))
            .expect("the node starts on ephemeral loopback ports");
        Self {
            rt,
            running: Some(running),
        }
    }

    /// The running node.
    pub fn running(&self) -> &control::Running {
        self.running.as_ref().expect("running until dropped")
    }

    /// The control API's base URL.
    pub fn control_url(&self) -> String {
        format!("http://{}", self.running().http_addr())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            self.rt.block_on(running.shutdown());
        }
    }
}

/// The tests' node configuration: `workers` unpinned workers, control and
/// media on ephemeral loopback ports, the development API secret.
pub fn config(workers: usize, node_id: &str) -> Config {
    Config {
        control_addr: "127.0.0.1:0".parse().expect("literal address"),
        media_port: 0,
        workers: Some(workers),
        cpus: Some(CpuList(Vec::new())),
        node_id: Some(node_id.into()),
        api_secret: ApiSecret::default(),
        ..Config::default()
    }
}

/// The runtime a test node's control plane runs on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime can be built")
}
