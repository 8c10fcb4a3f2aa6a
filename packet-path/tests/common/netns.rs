//! A network namespace joined to the test's namespace by a veth pair: the
//! NIC stand-in of the AF_XDP tests (the node binds the host end; clients
//! make their sockets in the namespace with [`VethPair::in_peer`]). Needs
//! root (CI runs as root) and `ip` (iproute2); a test fails with a message
//! saying so rather than skip.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// `ip args...`, panicking with the command and its output on failure.
pub(crate) fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("`ip` (iproute2) is needed for the veth tests: {e}"));
    assert!(
        out.status.success(),
        "ip {}: {} (the AF_XDP tests need root for network namespaces and XDP)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// A namespace `ns` with `peer_if` (`peer_ip`/30), linked to `host_if`
/// (`host_ip`/30) here. Removed on drop.
pub(crate) struct VethPair {
    pub(crate) ns: String,
    pub(crate) host_if: String,
    pub(crate) peer_if: String,
    pub(crate) host_ip: Ipv4Addr,
    pub(crate) peer_ip: Ipv4Addr,
}

impl VethPair {
    /// A fresh pair with `queues` receive and transmit queues per end.
    pub(crate) fn new(queues: u32) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = (std::process::id() % 10_000) * 16 + n;
        let ns = format!("sfuxdp{id}");
        let host_if = format!("sxh{id}");
        let peer_if = format!("sxp{id}");
        // 10.200.0.0/16 in /30s: 16,384 pairs.
        let block = 0x0ac8_0000u32 + (id % 16_384) * 4;
        let host_ip = Ipv4Addr::from(block + 1);
        let peer_ip = Ipv4Addr::from(block + 2);
        let q = queues.to_string();
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        ip(&["netns", "add", &ns]);
        let pair = Self {
            ns: ns.clone(),
            host_if: host_if.clone(),
            peer_if: peer_if.clone(),
            host_ip,
            peer_ip,
        };
        ip(&[
            "link",
            "add",
            &host_if,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            &peer_if,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ]);
        ip(&["link", "set", &peer_if, "netns", &ns]);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        let peer_addr = format!("{peer_ip}/30");
        ip(&["-n", &ns, "addr", "add", &peer_addr, "dev", &peer_if]);
        ip(&["-n", &ns, "link", "set", &peer_if, "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        pair
    }

    /// A further address for the namespace, `10.201.x.y/32` on its end
    /// (routed to it from here): peers on another address than
    /// [`peer_ip`](Self::peer_ip) behind the same link.
    pub(crate) fn add_peer_address(&self) -> Ipv4Addr {
        let block = u32::from(self.peer_ip) - 0x0ac8_0000;
        let extra = Ipv4Addr::from(0x0ac9_0000u32 + block);
        let a = format!("{extra}/32");
        ip(&["-n", &self.ns, "addr", "add", &a, "dev", &self.peer_if]);
        ip(&["route", "add", &a, "dev", &self.host_if]);
        extra
    }

    /// Runs `f` on a thread inside the namespace: sockets it makes live
    /// there (and stay there wherever they are used afterwards).
    pub(crate) fn in_peer<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_namespace(&self.ns, f)
    }
}

/// Runs `f` on a thread inside namespace `ns`: sockets it makes, and
/// threads it starts (a node's workers), live there.
pub(crate) fn in_namespace<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    packet_path::in_network_namespace(ns, f).expect("entering the namespace (needs root)")
}

/// A namespace with only its loopback, up: the embedded defaults' media
/// address (127.0.0.1) on an interface no other test attaches XDP to.
pub(crate) struct LoopbackNs {
    pub(crate) ns: String,
}

impl LoopbackNs {
    pub(crate) fn new() -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let ns = format!("sfulo{}", (std::process::id() % 10_000) * 16 + n);
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        ip(&["netns", "add", &ns]);
        let me = Self { ns };
        ip(&["-n", &me.ns, "link", "set", "lo", "up"]);
        me
    }
}

impl Drop for LoopbackNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}
