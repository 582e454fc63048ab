//! A pod's network: its own network namespace joined to the host by a veth pair, with the
//! pod IP on the pod's end (`eth0`) and a /32 route to it on the host's end.
//!
//! Pod addresses are the ones the agent allocates for every pod (see the node agent), so a
//! container is reached exactly like a Wasm pod. With the default loopback pod range
//! (127.x.0.0/16) this needs two kernel settings that make 127/8 routable over the veth
//! (`route_localnet` on both ends) and the route goes into the `local` table, where it
//! beats the host's `127.0.0.0/8` local route; inside the namespace `lo` keeps only
//! 127.0.0.1/32, so every other 127/8 address (Service VIPs, the node's DNS) leaves
//! through `eth0` to the host. The host end answers ARP for everything (`proxy_arp`), so
//! the pod's default route needs no gateway address. With a routable pod range, other
//! hosts reach the container through this one, which must forward between its uplink
//! and the veth: the node agent turns that on when it starts (`hostnet`).

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

/// Names of a pod's namespace and host-side interface (at most 15 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetwork {
    pub namespace: String,
    pub host_veth: String,
    pub ip: Ipv4Addr,
}

/// Runs `ip` (iproute2) with `args`, feeding it `stdin` (for `-batch -`); its error
/// output becomes the error. The node agent routes pod ranges with it too.
pub fn ip(args: &[&str], stdin: Option<&str>) -> Result<(), String> {
    let mut cmd = Command::new("ip");
    cmd.args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("running `ip` (iproute2): {e}"))?;
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        input
            .write_all(text.as_bytes())
            .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn sysctl(path: &str, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("{path}: {e}"))
}

impl PodNetwork {
    /// The names for a pod (from its uid).
    pub fn for_pod(uid: &str, ip: Ipv4Addr) -> PodNetwork {
        let short: String = uid
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(11)
            .collect();
        PodNetwork {
            namespace: format!("wk-{short}"),
            host_veth: format!("wkv{short}"),
            ip,
        }
    }

    /// The path runc joins (`linux.namespaces[].path`).
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.namespace)
    }

    /// Creates the namespace, the veth pair, the address and both routes.
    pub fn create(&self) -> Result<(), String> {
        // What an earlier run of this pod left (the agent clears its own at start).
        if std::path::Path::new(&self.path()).exists() {
            self.delete();
        }
        ip(&["netns", "add", &self.namespace], None)?;
        let r = self.configure();
        if r.is_err() {
            self.delete();
        }
        r
    }

    fn configure(&self) -> Result<(), String> {
        let (ns, veth, addr) = (&self.namespace, &self.host_veth, self.ip);
        let loopback = addr.is_loopback();
        // Inside the namespace, in one `ip` process. `scope global` and `src`: iproute2
        // gives 127/8 addresses host scope, which the kernel never picks as the source of
        // a packet leaving through eth0.
        let mut host = format!("link add {veth} type veth peer name eth0 netns {ns}\n");
        let mut inside = String::from("link set lo up\n");
        if loopback {
            inside.push_str("addr del 127.0.0.1/8 dev lo\naddr add 127.0.0.1/32 dev lo\n");
        }
        inside.push_str(&format!(
            "addr add {addr}/32 dev eth0 scope global\nlink set eth0 up\nroute add default dev eth0 src {addr}\n"
        ));
        host.push_str(&format!("link set {veth} up\n"));
        if loopback {
            host.push_str(&format!("route replace {addr}/32 dev {veth} table local\n"));
        } else {
            host.push_str(&format!("route replace {addr}/32 dev {veth}\n"));
        }
        ip(&["-batch", "-"], Some(&host))?;
        sysctl(&format!("/proc/sys/net/ipv4/conf/{veth}/proxy_arp"), "1")?;
        if loopback {
            sysctl(
                &format!("/proc/sys/net/ipv4/conf/{veth}/route_localnet"),
                "1",
            )?;
            self.inside(|| {
                sysctl("/proc/sys/net/ipv4/conf/all/route_localnet", "1")?;
                sysctl("/proc/sys/net/ipv4/conf/eth0/route_localnet", "1")
            })?;
        }
        ip(&["-n", ns, "-batch", "-"], Some(&inside))
    }

    /// Runs `f` on a thread that has joined the pod's network namespace (per-namespace
    /// sysctls are written from inside it).
    fn inside(&self, f: impl FnOnce() -> Result<(), String> + Send) -> Result<(), String> {
        let path = self.path();
        std::thread::scope(|s| {
            s.spawn(|| {
                let fd = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
                nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("joining {path}: {e}"))?;
                f()
            })
            .join()
            .unwrap_or_else(|_| Err("the namespace thread panicked".into()))
        })
    }

    /// Removes the namespace and the veth pair (and with it the routes); best effort.
    pub fn delete(&self) {
        let _ = ip(&["link", "del", &self.host_veth], None);
        if Path::new(&self.path()).exists() {
            let _ = ip(&["netns", "del", &self.namespace], None);
        }
    }
}

/// Checks that this host can give pods their own network (iproute2 with netns support).
pub fn check() -> Result<(), String> {
    ip(&["netns", "list"], None)
}
