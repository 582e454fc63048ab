//! A network partition for real: three servers, each in its own network namespace, joined
//! through a router namespace by veth pairs. The leader is cut off from the other two:
//! it stops acknowledging writes, the majority elects a new leader and carries on, and
//! after the partition heals every server converges on the majority's history (the write
//! the cut-off leader took but could not commit is gone). Needs root and iproute2.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::common::{Proc, WK, leader_of, wait_blocking};

/// A router namespace and three server namespaces, each linked to the router.
struct Net {
    router: String,
    hosts: Vec<String>,
    tag: String,
}

impl Net {
    fn new() -> Net {
        let tag = format!("{:x}", std::process::id() & 0xffff);
        let router = format!("wkr{tag}");
        let hosts: Vec<String> = (1..=3).map(|i| format!("wkp{i}{tag}")).collect();
        let mut script = format!("set -e\nip netns add {router}\nip -n {router} link set lo up\n");
        script.push_str(&format!(
            "ip netns exec {router} sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'\n"
        ));
        for (i, h) in hosts.iter().enumerate() {
            let n = i + 1;
            script.push_str(&format!(
                "ip netns add {h}
                 ip -n {h} link set lo up
                 ip link add r{n}{tag} type veth peer name h{n}{tag}
                 ip link set r{n}{tag} netns {router}; ip link set h{n}{tag} netns {h}
                 ip -n {router} addr add 10.9.{n}.1/24 dev r{n}{tag}; ip -n {h} addr add 10.9.{n}.2/24 dev h{n}{tag}
                 ip -n {router} link set r{n}{tag} up; ip -n {h} link set h{n}{tag} up
                 ip -n {h} route add default via 10.9.{n}.1\n"
            ));
        }
        let net = Net { router, hosts, tag };
        let out = Command::new("bash").args(["-c", &script]).output().unwrap();
        assert!(
            out.status.success(),
            "setting up namespaces (needs root and iproute2): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        net
    }

    fn exec(&self, host: usize, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.hosts[host], program]);
        c
    }

    /// Cuts host `i` off (its link to the router goes down), or heals it.
    fn link(&self, i: usize, up: bool) {
        let out = Command::new("ip")
            .args([
                "-n",
                &self.router,
                "link",
                "set",
                &format!("r{}{}", i + 1, self.tag),
                if up { "up" } else { "down" },
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain(std::iter::once(&self.router)) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn ip_of(i: usize) -> String {
    format!("10.9.{}.2", i + 1)
}

/// `wk` inside host `i`, against its own server, killed after `secs`.
fn wk(net: &Net, i: usize, config: &Path, secs: u64, args: &[&str]) -> Output {
    let mut c = net.exec(i, "timeout");
    c.arg(secs.to_string())
        .arg(WK)
        .arg("--kubeconfig")
        .arg(config)
        .args(args);
    c.output().unwrap()
}

fn servers(net: &Net, config: &Path) -> Value {
    let out = wk(net, 0, config, 5, &["get", "servers", "-o", "json"]);
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn create(net: &Net, i: usize, config: &Path, name: &str, secs: u64) -> bool {
    let manifest = format!(
        "{{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":\"{name}\"}}}}"
    );
    let mut c = net.exec(i, "timeout");
    c.arg(secs.to_string())
        .arg(WK)
        .arg("--kubeconfig")
        .arg(config)
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), manifest.as_bytes()).unwrap();
    child.wait_with_output().unwrap().status.success()
}

/// A create POSTed straight to host `i`'s server (curl, no read first: `wk apply` reads
/// before it writes, and a cut-off leader cannot serve that linearizable read, so the
/// write would never reach its log). Whether it was acknowledged within `secs`.
fn post(net: &Net, i: usize, token: &str, ca: &Path, name: &str, secs: u64) -> bool {
    let body = format!(
        "{{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":\"{name}\"}}}}"
    );
    let out = net
        .exec(i, "curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time"])
        .arg(secs.to_string())
        .arg("--cacert")
        .arg(ca)
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["-H", "Content-Type: application/json", "-d", &body])
        .arg(format!(
            "https://{}:6443/api/v1/namespaces/default/configmaps",
            ip_of(i)
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout) == "201"
}

/// The last log index of host `i`'s server (its `/raft/metrics`, with the peer token).
fn last_log_index(net: &Net, i: usize, token: &str, ca: &Path) -> Option<u64> {
    let out = net
        .exec(i, "curl")
        .args(["-s", "--max-time", "5", "--cacert"])
        .arg(ca)
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg(format!("https://{}:6443/raft/metrics", ip_of(i)))
        .output()
        .unwrap();
    serde_json::from_slice::<Value>(&out.stdout).ok()?["last_log_index"].as_u64()
}

fn names(net: &Net, i: usize, config: &Path) -> Option<Vec<String>> {
    let out = wk(net, i, config, 5, &["get", "cm", "-o", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(
        v["items"]
            .as_array()?
            .iter()
            .filter_map(|x| x["metadata"]["name"].as_str().map(String::from))
            .collect(),
    )
}

#[test]
fn a_partitioned_leader_stops_and_the_majority_carries_on() {
    let net = Net::new();
    let dir = tempfile::tempdir().unwrap();
    let data = |i: usize| dir.path().join(format!("s{i}"));
    let configs: Vec<PathBuf> = (0..3)
        .map(|i| dir.path().join(format!("config{i}")))
        .collect();
    let mut procs = Vec::new();
    let mut first = net.exec(0, WK);
    first
        .args(["server", "--data-dir"])
        .arg(data(0))
        .args(["--listen", &format!("{}:6443", ip_of(0)), "--kubeconfig"])
        .arg(&configs[0])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null());
    procs.push(Proc(first.spawn().unwrap()));
    wait_blocking("the first server", || {
        configs[0].exists() && wk(&net, 0, &configs[0], 5, &["get", "ns"]).status.success()
    });
    let tokens: Value =
        serde_json::from_slice(&std::fs::read(data(0).join("tokens.json")).unwrap()).unwrap();
    let ca = data(0).join("pki/ca.crt");
    for i in 1..3 {
        let mut s = net.exec(i, WK);
        s.args(["server", "--data-dir"])
            .arg(data(i))
            .args([
                "--listen",
                &format!("{}:6443", ip_of(i)),
                "--no-client-config",
                "--join",
                &format!("https://{}:6443", ip_of(0)),
            ])
            .args(["--token", tokens["peer"].as_str().unwrap(), "--ca-file"])
            .arg(&ca)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null());
        procs.push(Proc(s.spawn().unwrap()));
        let text = std::fs::read_to_string(&configs[0])
            .unwrap()
            .replace(&ip_of(0), &ip_of(i));
        std::fs::write(&configs[i], text).unwrap();
    }
    wait_blocking("three voters", || {
        servers(&net, &configs[0])["members"]
            .as_array()
            .is_some_and(|m| {
                m.len() == 3
                    && m.iter()
                        .all(|x| x["role"] == "voter" && x["appliedIndex"].is_u64())
            })
    });
    for (i, config) in configs.iter().enumerate() {
        assert!(
            create(&net, i, config, &format!("before-{i}"), 10),
            "write through server {i}"
        );
    }
    let m = servers(&net, &configs[0]);
    let leader_url = leader_of(&m)["url"].as_str().unwrap().to_string();
    let l = (0..3).find(|i| leader_url.contains(&ip_of(*i))).unwrap();
    let majority: Vec<usize> = (0..3).filter(|i| *i != l).collect();

    // A direct POST to the leader works while it leads a quorum...
    let admin = tokens["admin"].as_str().unwrap();
    assert!(post(&net, l, admin, &ca, "direct", 10), "a direct POST");
    // ...then the leader is cut off: the write it takes into its log is never
    // acknowledged, and healing must drop it.
    net.link(l, false);
    let peer = tokens["peer"].as_str().unwrap();
    let before = last_log_index(&net, l, peer, &ca).expect("the leader's metrics");
    assert!(
        !post(&net, l, admin, &ca, "minority", 5),
        "the minority acknowledged a write"
    );
    let after = last_log_index(&net, l, peer, &ca).expect("the leader's metrics");
    assert!(
        after > before,
        "the write reached the cut-off leader's log ({before} → {after})"
    );
    // The majority elects a leader among themselves and takes writes.
    wait_blocking("the majority to take writes", || {
        create(&net, majority[0], &configs[majority[0]], "majority-0", 5)
    });
    assert!(create(
        &net,
        majority[1],
        &configs[majority[1]],
        "majority-1",
        10
    ));

    // Heal: everyone converges on the majority's history.
    net.link(l, true);
    let want: Vec<String> = [
        "before-0",
        "before-1",
        "before-2",
        "direct",
        "majority-0",
        "majority-1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (i, config) in configs.iter().enumerate() {
        wait_blocking(&format!("server {i} to converge"), || {
            names(&net, i, config).is_some_and(|have| {
                want.iter().all(|w| have.contains(w)) && !have.contains(&"minority".to_string())
            })
        });
    }
    // And the healed server takes writes again (forwarded to the new leader).
    assert!(create(&net, l, &configs[l], "after-heal", 10));
    drop(procs);
}
