//! A node started in-process on ephemeral ports, and a small HTTP client.
#![allow(dead_code, unreachable_pub)]

pub mod browser;
pub mod events;
pub mod plain;
pub mod webrtc;

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command};
use std::thread;
use std::time::{Duration, Instant};

use control::auth::{self, Claims, Grant};
use control::config::{ApiSecret, Config, CpuList};
use serde_json::Value;

/// An API secret other than the development one, for
/// [`TestNode::start_with_secret`].
pub const TEST_SECRET: &str = "control-test-secret-0123456789abcdef";

/// A token for `room` with `grants`, valid for an hour, signed with `secret`.
pub fn token_with(secret: &str, room: &str, grants: &[Grant]) -> String {
    auth::mint(
        secret.as_bytes(),
        &Claims::new(room, grants, auth::unix_now(), 3600),
    )
}

/// The tests' node: `workers` unpinned workers, HTTP and media on
/// ephemeral loopback ports, small buffers, API secret `secret`.
pub fn test_config(workers: usize, secret: &str) -> Config {
    Config {
        control_addr: "127.0.0.1:0".parse().expect("literal address"),
        media_port: 0,
        workers: Some(workers),
        cpus: Some(CpuList(Vec::new())),
        node_id: Some("test-node".into()),
        pool_buffers: 512,
        socket_buffer_bytes: 1 << 20,
        api_secret: ApiSecret::new(secret),
        ..Config::default()
    }
}

/// Runs the calling test again (`test_name`, from the same test binary)
/// inside a new network namespace (`unshare --net`) whose interfaces the
/// shell commands `setup` bring up, with `in_netns_var` set so the re-run
/// knows where it is; fails unless the re-run passes. `needs` says what
/// the namespace requires, for the failure message.
pub fn rerun_in_network_namespace(in_netns_var: &str, test_name: &str, setup: &str, needs: &str) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let status = Command::new("unshare")
        .args([
            "--net",
            "--",
            "sh",
            "-c",
            &format!("{setup} && exec \"$0\" \"$@\""),
        ])
        .arg(&exe)
        // `--include-ignored`: the outer run only gets here for a test it
        // runs, ignored ones included when asked; the inner run must not
        // report an ignored test as passed.
        .args([
            "--exact",
            test_name,
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(in_netns_var, "1")
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run `unshare` (util-linux) to create a network namespace: {e}")
        });
    assert!(
        status.success(),
        "{test_name} inside its own network namespace failed ({status}); \
         see its output above. It needs {needs}."
    );
}

/// Spawns `cmd` (its stdout and stderr must be piped) and waits up to
/// `timeout`; returns its exit code (-1 for a signal), stdout and stderr.
/// Panics, with what it printed, when it had to be killed.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> (i32, String, String) {
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?} does not start: {e}"));
    let stdout = drain(child.stdout.take().expect("stdout is piped"));
    let stderr = drain(child.stderr.take().expect("stderr is piped"));
    let status = wait_or_kill(&mut child, timeout);
    let stdout = stdout.join().expect("the stdout reader does not panic");
    let stderr = stderr.join().expect("the stderr reader does not panic");
    let Some(status) = status else {
        panic!(
            "{cmd:?} did not finish within {timeout:?}; killed\nstdout: {stdout}\nstderr: {stderr}"
        );
    };
    (status, stdout, stderr)
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// The exit code (-1 for a signal), or `None` after killing a child that
/// outlived `timeout`.
fn wait_or_kill(child: &mut Child, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status.code().unwrap_or(-1)),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(100)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// A running node with its own tokio runtime; the test thread talks to it
/// over real HTTP.
pub struct TestNode {
    rt: tokio::runtime::Runtime,
    running: Option<control::Running>,
    pub base: String,
    pub http: SocketAddr,
    agent: ureq::Agent,
    /// The node's API secret.
    pub secret: String,
    /// Sent by [`TestNode::get`] and the other shorthands: room `*`, admin.
    pub admin: String,
}

/// An answer: status and body parsed as JSON (`Value::Null` if empty or not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    /// The `WWW-Authenticate` header, empty if none.
    pub www_authenticate: String,
    pub text: String,
    pub json: Value,
}

impl TestNode {
    /// Starts a node with `workers` unpinned workers, HTTP and media on
    /// ephemeral loopback ports, and the development API secret (the
    /// embedded default).
    pub fn start(workers: usize) -> Self {
        Self::start_with_secret(workers, auth::DEV_API_SECRET)
    }

    /// [`TestNode::start`] with rooms created only by `POST /v1/rooms`
    /// (`rooms_on_demand` off), for tests of requests to unknown rooms.
    pub fn start_without_rooms_on_demand(workers: usize) -> Self {
        let mut config = test_config(workers, auth::DEV_API_SECRET);
        config.rooms_on_demand = false;
        Self::start_with_config(config)
    }

    /// [`TestNode::start`] with another API secret.
    pub fn start_with_secret(workers: usize, secret: &str) -> Self {
        Self::start_with_config(test_config(workers, secret))
    }

    /// Starts a node with `config` as given (its `control_addr` should be a
    /// loopback address: the shorthands talk to it over plain HTTP).
    pub fn start_with_config(config: Config) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime can be built");
        let secret = String::from_utf8(config.api_secret.as_bytes().to_vec())
            .expect("test secrets are UTF-8");
        let running = rt
            .block_on(control::start(config))
            .expect("the node starts with the test's config");
        let http = running.http_addr();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            rt,
            running: Some(running),
            base: format!("http://{http}"),
            http,
            agent,
            admin: token_with(&secret, "*", &[Grant::Admin]),
            secret,
        }
    }

    /// A token for `room` with `grants`, valid for an hour, signed with the
    /// node's secret.
    pub fn token(&self, room: &str, grants: &[Grant]) -> String {
        token_with(&self.secret, room, grants)
    }

    /// The node's shared state, to publish events as the routers will.
    pub fn state(&self) -> &std::sync::Arc<control::state::AppState> {
        self.running.as_ref().expect("running").state()
    }

    /// Media address of worker `i` (as bound).
    pub fn media(&self, i: usize) -> SocketAddr {
        self.running.as_ref().expect("running").media_addrs()[i]
    }

    /// Stops the node the way the binary does.
    pub fn shutdown(mut self) {
        if let Some(r) = self.running.take() {
            self.rt.block_on(r.shutdown());
        }
    }

    fn answer(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
        let mut response = result.expect("the HTTP exchange completes");
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let content_type = header("content-type");
        let www_authenticate = header("www-authenticate");
        let text = response
            .body_mut()
            .read_to_string()
            .expect("the body is UTF-8");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            content_type,
            www_authenticate,
            text,
            json,
        }
    }

    pub fn get(&self, path: &str) -> Answer {
        self.request("GET", path, "")
    }

    pub fn delete(&self, path: &str) -> Answer {
        self.request("DELETE", path, "")
    }

    pub fn post(&self, path: &str, body: &str) -> Answer {
        self.request("POST", path, body)
    }

    pub fn put(&self, path: &str, body: &str) -> Answer {
        self.request("PUT", path, body)
    }

    /// Sends `body` with `method` (any of GET, POST, PUT, DELETE) and the
    /// admin token.
    pub fn request(&self, method: &str, path: &str, body: &str) -> Answer {
        let authorization = format!("Bearer {}", self.admin);
        self.request_as(Some(&authorization), method, path, body)
    }

    /// Sends `body` with `method` (any of GET, POST, PUT, DELETE) and this
    /// `Authorization` header value (`None`: no header).
    pub fn request_as(
        &self,
        authorization: Option<&str>,
        method: &str,
        path: &str,
        body: &str,
    ) -> Answer {
        let url = format!("{}{path}", self.base);
        macro_rules! with_auth {
            ($builder:expr) => {{
                let builder = $builder;
                match authorization {
                    Some(value) => builder.header("authorization", value),
                    None => builder,
                }
            }};
        }
        let result = match method {
            "GET" => with_auth!(self.agent.get(url)).call(),
            "DELETE" => with_auth!(self.agent.delete(url)).call(),
            "POST" => with_auth!(self.agent.post(url))
                .header("content-type", "application/json")
                .send(body),
            "PUT" => with_auth!(self.agent.put(url))
                .header("content-type", "application/json")
                .send(body),
            other => panic!("test uses unknown method {other}"),
        };
        Self::answer(result)
    }

    /// A CORS preflight of `method` on `path` from `origin`, without a
    /// token; returns the status and the response headers.
    pub fn preflight(
        &self,
        path: &str,
        origin: &str,
        method: &str,
        headers: &str,
    ) -> (u16, ureq::http::HeaderMap) {
        let response = self
            .agent
            .options(format!("{}{path}", self.base))
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", headers)
            .call()
            .expect("the HTTP exchange completes");
        (response.status().as_u16(), response.headers().clone())
    }

    /// Response headers of a request with the admin token.
    pub fn headers(&self, method: &str, path: &str, origin: &str) -> ureq::http::HeaderMap {
        let url = format!("{}{path}", self.base);
        let authorization = format!("Bearer {}", self.admin);
        let builder = match method {
            "GET" => self.agent.get(url),
            other => panic!("test uses unknown method {other}"),
        };
        builder
            .header("authorization", &authorization)
            .header("origin", origin)
            .call()
            .expect("the HTTP exchange completes")
            .headers()
            .clone()
    }

    /// POSTs an SDP offer (WHIP or WHEP) to `path` with a bearer `token`;
    /// returns the status and the body.
    pub fn post_sdp(&self, path: &str, token: &str, offer: &str) -> (u16, String) {
        let request = ureq::http::Request::post(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/sdp")
            .body(offer.to_owned())
            .expect("the request is well-formed");
        let mut r = self
            .agent
            .run(request)
            .expect("the HTTP exchange completes");
        let status = r.status().as_u16();
        (
            status,
            r.body_mut().read_to_string().expect("the body is UTF-8"),
        )
    }

    /// Creates a room; panics unless 201.
    pub fn create_room(&self, name: &str) -> Value {
        let a = self.post(
            "/v1/rooms",
            &serde_json::json!({ "room": name }).to_string(),
        );
        assert_eq!(a.status, 201, "create room {name}: {}", a.text);
        a.json
    }

    /// Creates an endpoint; panics unless 201.
    pub fn create_endpoint(&self, room: &str, body: &Value) -> Value {
        let a = self.post(&format!("/v1/rooms/{room}/endpoints"), &body.to_string());
        assert_eq!(a.status, 201, "create endpoint in {room}: {}", a.text);
        a.json
    }

    /// The value of the `/metrics` sample `name{worker="i"}`; panics if
    /// the sample is missing or not an integer.
    pub fn worker_metric(&self, name: &str, worker: usize) -> u64 {
        let m = self.get("/metrics");
        assert_eq!(m.status, 200, "{}", m.text);
        let prefix = format!("{name}{{worker=\"{worker}\"}} ");
        m.text
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("sample {prefix} missing:\n{}", m.text))
    }

    /// Every non-zero integer sample of worker `worker` in `/metrics`, by
    /// series: `name` for `name{worker="i"}`, `name{reason="r"}` for
    /// `name{worker="i",reason="r"}`.
    pub fn worker_metrics(&self, worker: usize) -> std::collections::BTreeMap<String, u64> {
        let m = self.get("/metrics");
        assert_eq!(m.status, 200, "{}", m.text);
        let only = format!("{{worker=\"{worker}\"}}");
        let first = format!("{{worker=\"{worker}\",");
        m.text
            .lines()
            .filter_map(|l| l.rsplit_once(' '))
            .filter_map(|(series, v)| {
                let name = if let Some(name) = series.strip_suffix(only.as_str()) {
                    name.to_owned()
                } else {
                    let (name, rest) = series.split_once(first.as_str())?;
                    format!("{name}{{{rest}")
                };
                Some((name, v.parse().ok()?))
            })
            .filter(|&(_, v)| v > 0)
            .collect()
    }

    /// Polls `/metrics` (workers publish after each batch) until the sample
    /// `name{worker="i"}` reaches `at_least`, for up to 3 s; returns it.
    pub fn wait_worker_metric(&self, name: &str, worker: usize, at_least: u64) -> u64 {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            let value = self.worker_metric(name, worker);
            if value >= at_least {
                return value;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name}{{worker=\"{worker}\"}} stayed at {value}, below {at_least}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            self.rt.block_on(r.shutdown());
        }
    }
}

/// Base64 (standard, padded) of `bytes`.
pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes base64 from an API answer.
pub fn unb64(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("the node answers valid base64")
}
