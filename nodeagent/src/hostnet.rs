//! Pod addressing across hosts.
//!
//! On one host a node's pods get loopback addresses (all of 127.0.0.0/8 is local on Linux)
//! and nothing is set up. When a node's pod range (`--pod-cidr`) is not loopback, the agent
//! makes it reachable from the other nodes with nothing but the kernel:
//!
//! - each pod address is added (as a /32) to the loopback interface, so the pod's sockets
//!   can bind it and the host accepts traffic for it from any interface (no dummy
//!   interface: that needs a kernel module containers and small devices may lack);
//! - the node publishes its range as `spec.podCIDR`, and every agent routes each other
//!   node's range via that node's InternalIP (`ip route replace <podCIDR> via <nodeIP>`);
//! - with containers (whose addresses sit on their veths, not on `lo`), IPv4 forwarding
//!   is turned on.
//!
//! Service VIPs need nothing: every agent listens on them locally.

use std::net::Ipv4Addr;

use wk_api::net::Cidr;

/// The interface that holds this node's pod addresses.
pub const DEVICE: &str = "lo";

fn ip(args: &[&str]) -> Result<(), String> {
    wk_runtime_oci::netns::ip(args, None)
}

fn exists_ok(r: Result<(), String>) -> Result<(), String> {
    match r {
        Err(e) if e.contains("File exists") => Ok(()),
        other => other,
    }
}

/// Checks that addresses can be managed here (iproute2 present, loopback up).
pub fn check() -> Result<(), String> {
    ip(&["link", "set", DEVICE, "up"])
}

/// Adds a pod address to the loopback interface.
pub fn add_addr(addr: Ipv4Addr) -> Result<(), String> {
    exists_ok(ip(&["addr", "add", &format!("{addr}/32"), "dev", DEVICE]))
}

/// Removes a pod address (best effort).
pub fn del_addr(addr: Ipv4Addr) {
    let _ = ip(&["addr", "del", &format!("{addr}/32"), "dev", DEVICE]);
}

/// Turns on IPv4 forwarding in this network namespace (as Kubernetes' network plugins
/// do): a container's address is on its veth, and traffic for it from other hosts
/// arrives on the uplink.
pub fn enable_forwarding() -> Result<(), String> {
    let path = "/proc/sys/net/ipv4/ip_forward";
    std::fs::write(path, "1").map_err(|e| format!("{path}: {e}"))
}

/// Routes another node's pod range via its address.
pub fn route(range: Cidr, via: Ipv4Addr) -> Result<(), String> {
    ip(&[
        "route",
        "replace",
        &range.to_string(),
        "via",
        &via.to_string(),
    ])
}
