//! A node started in-process on ephemeral ports, and a small HTTP client.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;

use control::config::{Config, CpuList};
use serde_json::Value;

/// A running node with its own tokio runtime; the test thread talks to it
/// over real HTTP.
pub struct TestNode {
    rt: tokio::runtime::Runtime,
    running: Option<control::Running>,
    pub base: String,
    pub http: SocketAddr,
    agent: ureq::Agent,
}

/// An answer: status and body parsed as JSON (`Value::Null` if empty or not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub text: String,
    pub json: Value,
}

impl TestNode {
    /// Starts a node with `workers` unpinned workers, HTTP and media on
    /// ephemeral loopback ports.
    pub fn start(workers: usize) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime can be built");
        let config = Config {
            control_addr: "127.0.0.1:0".parse().expect("literal address"),
            media_port: 0,
            workers: Some(workers),
            cpus: Some(CpuList(Vec::new())),
            node_id: Some("test-node".into()),
            pool_buffers: 512,
            socket_buffer_bytes: 1 << 20,
            ..Config::default()
        };
        let running = rt
            .block_on(control::start(config))
            .expect("the node starts on ephemeral ports");
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
        }
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
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = response
            .body_mut()
            .read_to_string()
            .expect("the body is UTF-8");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            content_type,
            text,
            json,
        }
    }

    pub fn get(&self, path: &str) -> Answer {
        Self::answer(self.agent.get(format!("{}{path}", self.base)).call())
    }

    pub fn delete(&self, path: &str) -> Answer {
        Self::answer(self.agent.delete(format!("{}{path}", self.base)).call())
    }

    pub fn post(&self, path: &str, body: &str) -> Answer {
        Self::answer(
            self.agent
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/json")
                .send(body),
        )
    }

    pub fn put(&self, path: &str, body: &str) -> Answer {
        Self::answer(
            self.agent
                .put(format!("{}{path}", self.base))
                .header("content-type", "application/json")
                .send(body),
        )
    }

    /// Sends `body` with `method` (any of GET, POST, PUT, DELETE).
    pub fn request(&self, method: &str, path: &str, body: &str) -> Answer {
        match method {
            "GET" => self.get(path),
            "POST" => self.post(path, body),
            "PUT" => self.put(path, body),
            "DELETE" => self.delete(path),
            other => panic!("test uses unknown method {other}"),
        }
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
