//! wk-nodeagent: the kubelet role of wk.
//!
//! An [`Agent`] registers its Node (capacity, addresses, the runtimes it offers), renews
//! its Lease, watches the pods bound to it (`spec.nodeName`), runs their containers with
//! the Wasm runtime and reports pod status the way Kubernetes does. Each pod gets its own
//! loopback address (all of 127/8 is local on Linux, so no host setup): its containers
//! listen on their `containerPort`s there, and that is the pod IP. A node's pods share a
//! /16 picked from its name (`127.64.0.0`–`127.191.255.255`), so agents on one host do not
//! collide and a restarted agent keeps its range.
//!
//! Each container gets its probes (startup, liveness, readiness; `probe.rs`); a pod is
//! admitted only if its requests fit the node's allocatable. Status reports are retried
//! until the API server takes them, so pods keep running and their state catches up when
//! the control plane is away for a while. Wasm pods live inside the agent process: when
//! the agent restarts they restart with it (same pod IP, `restartCount` + 1), and nothing
//! is left running behind it.

mod forward;
mod hostnet;
mod logs;
mod pod;
mod probe;
pub mod proxy;
mod runtimes;
mod workers;

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use wk_api::resource::lookup;
use wk_client::{Client, ClientError, ListParams};
use wk_runtime_wasm::{WasmRuntime, WasmRuntimeConfig};

/// Agent failures.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("starting the wasm runtime: {0}")]
    Runtime(String),
}

/// Agent settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub name: String,
    pub data_dir: PathBuf,
    pub labels: BTreeMap<String, String>,
    /// How often the Lease is renewed.
    pub lease_interval: Duration,
    /// The node's address (where NodePorts and the node's own services listen).
    pub node_ip: Ipv4Addr,
    /// Where pod addresses come from. The default, a /16 of 127.0.0.0/8 picked from the
    /// node name, needs no setup on one host; any other range is routed between nodes
    /// (`hostnet`).
    pub pod_cidr: wk_api::net::Cidr,
    /// Port of the agent's HTTP endpoint (logs) on `node_ip`; 0 picks a free one.
    pub log_port: u16,
    /// The token the API server presents to the agent's endpoint (the node join token).
    pub log_token: Option<String>,
    /// Most pods the node runs at once (the kubelet's `--max-pods`).
    pub max_pods: u64,
    /// Where the node's DNS server listens (UDP and TCP; port 0 picks one); `None` runs
    /// none. The address is published in the Node annotation `wk.dev/dns`.
    pub dns_listen: Option<std::net::SocketAddr>,
    /// The cluster domain served by the node's DNS.
    pub cluster_domain: String,
    /// Where the node's DNS forwards other names; empty: the host's resolvers.
    pub dns_upstream: Vec<std::net::SocketAddr>,
    /// The balancer hands connections for this node's own Wasm services straight to the
    /// runtime instead of connecting to them.
    pub proxy_short_circuit: bool,
    /// Most connections the balancer proxies at once per Service port; more are refused.
    pub proxy_max_connections: usize,
    /// Bulk transfers through the balancer are spliced (kernel to kernel) rather than
    /// copied.
    pub proxy_splice: bool,
    /// The runc binary for container pods (`runtimeClassName: oci`); `None`, or a runc
    /// that does not work here, leaves the node offering Wasm only.
    pub runc: Option<PathBuf>,
    /// Registries (`host:port`) reached over plain HTTP, for both runtimes.
    pub insecure_registries: Vec<String>,
    /// Image GC: when the image store's file system is fuller than `high` percent, the
    /// least recently used images no container uses are removed until it is under `low`
    /// (the kubelet's `imageGCHighThresholdPercent`/`imageGCLowThresholdPercent`).
    pub image_gc_high: u8,
    pub image_gc_low: u8,
}

impl AgentConfig {
    pub fn new(name: String, data_dir: PathBuf) -> AgentConfig {
        AgentConfig {
            data_dir,
            labels: BTreeMap::new(),
            lease_interval: Duration::from_secs(2),
            node_ip: Ipv4Addr::LOCALHOST,
            pod_cidr: wk_api::net::Cidr::new(Ipv4Addr::new(127, pod_octet(&name), 0, 0), 16),
            log_port: 0,
            log_token: None,
            max_pods: DEFAULT_MAX_PODS,
            dns_listen: Some(std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, 53))),
            cluster_domain: "cluster.local".into(),
            dns_upstream: Vec::new(),
            proxy_short_circuit: true,
            proxy_max_connections: proxy::MAX_CONNECTIONS,
            proxy_splice: true,
            runc: Some("runc".into()),
            insecure_registries: Vec::new(),
            image_gc_high: 85,
            image_gc_low: 80,
            name,
        }
    }
}

/// Default `max_pods`. The kubelet's is 110, sized for containers; an idle Wasm pod costs
/// the agent kilobytes (BENCHMARKS.md), so wk allows more.
pub const DEFAULT_MAX_PODS: u64 = 1000;

/// The Node annotation carrying the address of the node's DNS server.
pub const DNS_ANNOTATION: &str = "wk.dev/dns";

/// What the node offers pods (read from the host once, at start).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Allocatable {
    pub cpu_milli: i64,
    pub memory: i64,
    pub pods: i64,
}

/// A running node agent.
pub struct Agent {
    pub(crate) client: Client,
    pub(crate) cfg: AgentConfig,
    pub(crate) runtime: Arc<WasmRuntime>,
    /// The container runtime, once `run` found runc working.
    pub(crate) oci: std::sync::OnceLock<Arc<wk_runtime_oci::OciRuntime>>,
    /// Where containers' resolv.conf points: the node's DNS on port 53 of the pod range's
    /// first address (set by `run` when it serves there).
    pub(crate) container_dns: std::sync::OnceLock<Ipv4Addr>,
    pub(crate) pods: Mutex<HashMap<String, pod::PodHandle>>,
    /// Uids of deleted pods whose containers are being stopped: later events about them
    /// wait for that instead of finishing the deletion early.
    pub(crate) stopping: std::sync::Mutex<std::collections::HashSet<String>>,
    /// `namespace/pod/container` → the runtime and id of its running instance (for exec).
    pub(crate) running: std::sync::Mutex<HashMap<String, (runtimes::PodRuntime, String)>>,
    /// `namespace/name` → the pod's directory (logs, volumes), while it is on this node.
    pub(crate) pod_dirs: Mutex<HashMap<String, PathBuf>>,
    /// The client probes use (no proxy; HTTPS probes skip verification, as the kubelet's).
    pub(crate) probe_http: reqwest::Client,
    pub(crate) allocatable: Allocatable,
    /// Where the agent's endpoint listens (set by `run`).
    endpoint_port: std::sync::atomic::AtomicU16,
    /// Pod addresses: held by a running pod, or `reserved` for a pod of the last list
    /// that had one before (an agent restart) and has not been started again yet.
    pod_ips: std::sync::Mutex<PodIps>,
}

/// How long the pod watch may go without an event or a bookmark before it is redone.
const WATCH_SILENCE: Duration = Duration::from_secs(30);

#[derive(Default)]
struct PodIps {
    held: std::collections::HashSet<Ipv4Addr>,
    reserved: std::collections::HashSet<Ipv4Addr>,
    /// Where the search for a free address goes on from.
    next: u32,
}

impl PodIps {
    /// `previous` if it is in `range` and not held, else the next address of `range`
    /// that is neither held nor reserved; either only if `usable` says so too. The
    /// range's first address is the node's own (its gateway, by convention).
    fn claim(
        &mut self,
        range: wk_api::net::Cidr,
        previous: Option<Ipv4Addr>,
        usable: impl Fn(Ipv4Addr) -> bool,
    ) -> Option<Ipv4Addr> {
        if let Some(ip) = previous
            && range.contains(ip)
            && ip != range.nth(0)
            && !self.held.contains(&ip)
            && usable(ip)
        {
            self.reserved.remove(&ip);
            self.held.insert(ip);
            return Some(ip);
        }
        let hosts = range.size().saturating_sub(1).max(1);
        for _ in 0..hosts {
            let ip = range.nth(self.next % hosts + 1);
            self.next = self.next.wrapping_add(1);
            if !self.held.contains(&ip) && !self.reserved.contains(&ip) && usable(ip) {
                self.held.insert(ip);
                return Some(ip);
            }
        }
        None
    }
}

/// The second octet of a node's pod range, from its name (FNV-1a): 64..=191.
pub fn pod_octet(name: &str) -> u8 {
    let mut h: u32 = 0x811c9dc5;
    for b in name.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x01000193);
    }
    64 + (h % 128) as u8
}

fn memory_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")
                    .map(|v| v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0))
            })
        })
        .unwrap_or(0)
}

impl Agent {
    pub fn new(client: Client, cfg: AgentConfig) -> Result<Arc<Agent>, AgentError> {
        let mut wasm_cfg = WasmRuntimeConfig::new(cfg.data_dir.join("wasm-cache"));
        wasm_cfg.insecure_registries = cfg.insecure_registries.clone();
        // One image store per node for both runtimes.
        wasm_cfg.image_store = cfg.data_dir.join("oci/images");
        let runtime =
            WasmRuntime::new(wasm_cfg).map_err(|e| AgentError::Runtime(format!("{e:#}")))?;
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1) as i64;
        let allocatable = Allocatable {
            cpu_milli: cpus * 1000,
            memory: memory_kib() as i64 * 1024,
            pods: cfg.max_pods as i64,
        };
        Ok(Arc::new(Agent {
            client,
            allocatable,
            cfg,
            runtime: Arc::new(runtime),
            oci: std::sync::OnceLock::new(),
            container_dns: std::sync::OnceLock::new(),
            pods: Mutex::new(HashMap::new()),
            stopping: std::sync::Mutex::default(),
            pod_dirs: Mutex::new(HashMap::new()),
            running: std::sync::Mutex::new(HashMap::new()),
            probe_http: reqwest::Client::builder()
                .no_proxy()
                .danger_accept_invalid_certs(true)
                .pool_max_idle_per_host(0)
                .build()
                .map_err(|e| AgentError::Runtime(format!("probe client: {e}")))?,
            endpoint_port: std::sync::atomic::AtomicU16::new(0),
            // Addresses from the range's fourth (as before this was tracked).
            pod_ips: std::sync::Mutex::new(PodIps {
                next: 2,
                ..Default::default()
            }),
        }))
    }

    /// A pod's address: `previous` (the one it had before an agent restart) if it is in
    /// the range and free, else the next free one. Free means held by no other pod of
    /// this agent, not kept for a listed pod that had it, and, when a port is given,
    /// bindable. Off loopback, an address for a pod in the host's network (`on_host`: a
    /// Wasm pod) is added to the host's loopback interface first; a container pod's goes
    /// into its own network namespace instead.
    pub(crate) fn claim_ip(
        &self,
        previous: Option<Ipv4Addr>,
        port: Option<u16>,
        on_host: bool,
    ) -> Option<Ipv4Addr> {
        let range = self.cfg.pod_cidr;
        self.pod_ips
            .lock()
            .expect("pod ips lock")
            .claim(range, previous, |ip| self.try_ip(ip, port, on_host))
    }

    /// Keeps for the listed pods the addresses they had (after an agent restart, a new pod
    /// started first must not take the address of a running one not started again yet).
    /// Pods that have finished keep none.
    fn reserve_listed_ips(&self, pods: &[Value]) {
        let range = self.cfg.pod_cidr;
        let mut ips = self.pod_ips.lock().expect("pod ips lock");
        ips.reserved = pods
            .iter()
            .filter(|p| {
                let phase = p.pointer("/status/phase").and_then(Value::as_str);
                !matches!(phase, Some("Succeeded" | "Failed"))
                    && p.pointer("/metadata/deletionTimestamp").is_none()
            })
            .filter_map(|p| p.pointer("/status/podIP").and_then(Value::as_str))
            .filter_map(|ip| ip.parse::<Ipv4Addr>().ok())
            .filter(|ip| range.contains(*ip) && !ips.held.contains(ip))
            .collect();
    }

    /// Whether a pod can have `ip` (and its first `port`): off loopback a Wasm pod's
    /// address is added to the host first; the port is tried by binding it where the
    /// address is the host's (a loopback range, or a Wasm pod's address), since a
    /// container's address off loopback lives only in its own namespace, where nothing
    /// holds it yet.
    fn try_ip(&self, ip: Ipv4Addr, port: Option<u16>, on_host: bool) -> bool {
        let loopback = self.cfg.pod_cidr.is_loopback();
        if !loopback
            && on_host
            && let Err(e) = hostnet::add_addr(ip)
        {
            tracing::warn!(%ip, error = %e, "cannot add a pod address");
            return false;
        }
        let free = port
            .is_none_or(|p| !(on_host || loopback) || std::net::TcpListener::bind((ip, p)).is_ok());
        if !free && !loopback && on_host {
            hostnet::del_addr(ip);
        }
        free
    }

    /// Gives back a pod's address (off loopback: removes it from the interface).
    pub(crate) fn release_ip(&self, ip: Ipv4Addr, on_host: bool) {
        // The address leaves the host before it is free to claim again, so a new pod
        // given it never has it removed under it.
        if on_host && !self.cfg.pod_cidr.is_loopback() && self.cfg.pod_cidr.contains(ip) {
            hostnet::del_addr(ip);
        }
        self.pod_ips.lock().expect("pod ips lock").held.remove(&ip);
    }

    /// Routes every other node's pod range via its InternalIP, when pod ranges are not
    /// loopback: lists the Nodes, then follows their watch, so a node that joins (or
    /// changes address) is routed as soon as it registers.
    async fn route_pod_ranges(self: Arc<Self>) {
        let nodes = lookup("nodes").expect("nodes registered");
        let mut routed: HashMap<String, Ipv4Addr> = HashMap::new();
        loop {
            if let Ok(list) = self
                .client
                .list(nodes, None, false, &ListParams::default())
                .await
            {
                for n in list["items"].as_array().into_iter().flatten() {
                    self.route_node(n, &mut routed);
                }
                let p = ListParams {
                    resource_version: list["metadata"]["resourceVersion"]
                        .as_str()
                        .map(String::from),
                    ..Default::default()
                };
                if let Ok(events) = self.client.watch(nodes, None, false, &p, false).await {
                    let mut events = Box::pin(events);
                    while let Some(Ok(ev)) = events.next().await {
                        if matches!(ev.kind.as_str(), "ADDED" | "MODIFIED") {
                            self.route_node(&ev.object, &mut routed);
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Routes one other node's pod range (once per range and next hop).
    fn route_node(&self, n: &Value, routed: &mut HashMap<String, Ipv4Addr>) {
        if n.pointer("/metadata/name").and_then(Value::as_str) == Some(self.cfg.name.as_str()) {
            return;
        }
        let range = n
            .pointer("/spec/podCIDR")
            .and_then(Value::as_str)
            .unwrap_or("");
        let Ok(range) = range.parse::<wk_api::net::Cidr>() else {
            return;
        };
        let via = n
            .pointer("/status/addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|a| a["type"] == "InternalIP")
            .and_then(|a| a["address"].as_str())
            .and_then(|a| a.parse::<Ipv4Addr>().ok());
        let Some(via) = via else { return };
        if range.is_loopback()
            || via == self.cfg.node_ip
            || routed.get(&range.to_string()) == Some(&via)
        {
            return;
        }
        match hostnet::route(range, via) {
            Ok(()) => {
                tracing::info!(%range, %via, "routing another node's pods");
                routed.insert(range.to_string(), via);
            }
            Err(e) => {
                tracing::warn!(%range, %via, error = %e, "cannot route another node's pods")
            }
        }
    }

    fn node_object(&self) -> Value {
        let alloc = self.allocatable;
        let mut labels = json!({
            "kubernetes.io/hostname": self.cfg.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": if std::env::consts::ARCH == "x86_64" { "amd64" } else { std::env::consts::ARCH },
        });
        for (k, v) in &self.cfg.labels {
            labels[k] = json!(v);
        }
        let now = wk_api::objects::now_rfc3339();
        let runtimes = if self.oci.get().is_some() {
            "wasm,oci"
        } else {
            "wasm"
        };
        let resources = json!({"cpu": (alloc.cpu_milli / 1000).to_string(), "memory": format!("{}Ki", alloc.memory / 1024), "pods": alloc.pods.to_string()});
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": self.cfg.name, "labels": labels, "annotations": {"wk.dev/runtimes": runtimes}},
            "spec": {"podCIDR": self.cfg.pod_cidr.to_string(), "podCIDRs": [self.cfg.pod_cidr.to_string()]},
            "status": {
                "capacity": resources, "allocatable": resources,
                "daemonEndpoints": {"kubeletEndpoint": {"Port": self.endpoint_port.load(std::sync::atomic::Ordering::Relaxed)}},
                "addresses": [{"type": "InternalIP", "address": self.cfg.node_ip.to_string()}, {"type": "Hostname", "address": self.cfg.name}],
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "wk agent is posting ready status",
                                "lastHeartbeatTime": now, "lastTransitionTime": now}],
                "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "", "containerRuntimeVersion": "wasmtime://48.0.8",
                             "kubeletVersion": format!("v1.32.0+wk-{}", env!("CARGO_PKG_VERSION")), "kubeProxyVersion": "", "operatingSystem": "linux",
                             "architecture": if std::env::consts::ARCH == "x86_64" { "amd64" } else { std::env::consts::ARCH }},
            },
        })
    }

    /// Creates the Node, or refreshes its status if it exists.
    pub async fn register(&self) -> Result<(), AgentError> {
        let rt = lookup("nodes").expect("nodes registered");
        let node = self.node_object();
        match self.client.create(rt, None, &node, &[]).await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(409) => {
                // The pod range may have changed with the agent's flags.
                self.client
                    .patch(
                        rt,
                        None,
                        &self.cfg.name,
                        "application/merge-patch+json",
                        &json!({"spec": node["spec"], "metadata": {"annotations": node["metadata"]["annotations"]}}),
                        &[],
                    )
                    .await?;
                self.client
                    .patch_subresource(
                        rt,
                        None,
                        &self.cfg.name,
                        "status",
                        &json!({"status": node["status"]}),
                    )
                    .await?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Starts the node's DNS server and publishes its address on the Node. A port that
    /// cannot be bound is reported, not fatal: pods still run, without cluster names.
    async fn start_dns(&self, addr: std::net::SocketAddr) -> Option<Arc<wk_dns::ClusterDns>> {
        let dns =
            wk_dns::ClusterDns::with_upstream(&self.cfg.cluster_domain, &self.cfg.dns_upstream);
        let bound = match wk_dns::serve(dns.clone(), addr).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(%addr, error = %e, "cannot serve DNS; cluster names will not resolve here");
                return None;
            }
        };
        tracing::info!(%bound, domain = %self.cfg.cluster_domain, "cluster DNS listening");
        let names = dns.clone();
        self.runtime
            .set_resolver(Arc::new(move |host: &str, ns: &str| {
                names.resolve(host, ns).map(std::net::IpAddr::V4)
            }));
        let patch = json!({"metadata": {"annotations": {DNS_ANNOTATION: bound.to_string()}}});
        if let Err(e) = self
            .client
            .patch(
                lookup("nodes").expect("nodes registered"),
                None,
                &self.cfg.name,
                "application/merge-patch+json",
                &patch,
                &[],
            )
            .await
        {
            tracing::warn!(error = %e, "cannot publish the DNS address on the node");
        }
        Some(dns)
    }

    /// Starts the container runtime if runc works here; otherwise the node offers Wasm only.
    async fn start_oci(&self) {
        let Some(runc) = &self.cfg.runc else { return };
        let mut cfg = wk_runtime_oci::OciRuntimeConfig::new(self.cfg.data_dir.join("oci"));
        cfg.runc = runc.clone();
        cfg.insecure_registries = self.cfg.insecure_registries.clone();
        match wk_runtime_oci::OciRuntime::new(cfg).await {
            Ok(rt) => {
                let _ = self.oci.set(Arc::new(rt));
            }
            Err(e) => {
                tracing::warn!(error = %e, "no container runtime on this node (runtimeClassName oci); Wasm only")
            }
        }
    }

    /// Serves the node's DNS on port 53 of the pod range's first address, where
    /// containers' resolv.conf points (a resolver takes no port).
    async fn serve_container_dns(&self, dns: Arc<wk_dns::ClusterDns>) {
        let gw = self.cfg.pod_cidr.nth(0);
        if !self.cfg.pod_cidr.is_loopback()
            && let Err(e) = hostnet::add_addr(gw)
        {
            tracing::warn!(%gw, error = %e, "cannot add the containers' DNS address");
            return;
        }
        match wk_dns::serve(dns, std::net::SocketAddr::from((gw, 53))).await {
            Ok(a) => {
                tracing::info!(%a, "cluster DNS for containers listening");
                let _ = self.container_dns.set(gw);
            }
            Err(e) => tracing::warn!(%gw, error = %e, "cannot serve DNS to containers"),
        }
    }

    /// Renews (or creates) the node's Lease in `kube-node-lease`.
    pub async fn renew_lease(&self) -> Result<(), AgentError> {
        let rt = lookup("leases").expect("leases registered");
        let now = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string();
        let patch = json!({"spec": {"holderIdentity": self.cfg.name, "leaseDurationSeconds": 40, "renewTime": now}});
        match self
            .client
            .patch(
                rt,
                Some("kube-node-lease"),
                &self.cfg.name,
                "application/merge-patch+json",
                &patch,
                &[],
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(404) => {
                let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.cfg.name, "namespace": "kube-node-lease"}, "spec": patch["spec"]});
                self.client
                    .create(rt, Some("kube-node-lease"), &lease, &[])
                    .await?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Runs until `shutdown` resolves: registration, lease renewal, pod reconciliation.
    pub async fn run(
        self: Arc<Self>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), AgentError> {
        let listener = tokio::net::TcpListener::bind((self.cfg.node_ip, self.cfg.log_port))
            .await
            .map_err(|e| {
                AgentError::Runtime(format!(
                    "cannot listen on {}:{}: {e}",
                    self.cfg.node_ip, self.cfg.log_port
                ))
            })?;
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        self.endpoint_port
            .store(port, std::sync::atomic::Ordering::Relaxed);
        let app = logs::router(self.clone());
        let endpoint = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        self.start_oci().await;
        self.register().await?;
        if let Err(e) = self.renew_lease().await {
            // Registered, so the control plane was there a moment ago: the lease loop
            // retries, as after any failed renewal.
            tracing::warn!(error = %e, "first lease renewal failed");
        }
        let routes = if self.cfg.pod_cidr.is_loopback() {
            None
        } else {
            hostnet::check().map_err(AgentError::Runtime)?;
            if self.oci.get().is_some()
                && let Err(e) = hostnet::enable_forwarding()
            {
                tracing::warn!(error = %e, "cannot turn on IPv4 forwarding; other hosts will not reach this node's containers");
            }
            Some(tokio::spawn(self.clone().route_pod_ranges()))
        };
        let dns = match self.cfg.dns_listen {
            Some(addr) => self.start_dns(addr).await,
            None => None,
        };
        if let (Some(dns), Some(_)) = (&dns, self.oci.get()) {
            self.serve_container_dns(dns.clone()).await;
        }
        let image_gc = self.oci.get().cloned().map(|oci| {
            let (high, low) = (self.cfg.image_gc_high, self.cfg.image_gc_low);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(300)).await;
                    // File system work under the store's lock: off the async threads.
                    let oci = oci.clone();
                    match tokio::task::spawn_blocking(move || oci.collect_images(high, low)).await {
                        Ok(Ok(removed)) if !removed.is_empty() => {
                            tracing::info!(?removed, "image GC removed images")
                        }
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => tracing::warn!(error = %e, "image GC failed"),
                        Err(e) => tracing::warn!(error = %e, "image GC panicked"),
                    }
                }
            })
        });
        let local: Option<proxy::LocalServices> = self.cfg.proxy_short_circuit.then(|| {
            let rt = self.runtime.clone();
            Arc::new(move |addr| rt.local_service(addr)) as proxy::LocalServices
        });
        let proxy = tokio::spawn(
            proxy::Proxy::new(
                self.client.clone(),
                self.cfg.node_ip,
                dns,
                local,
                self.cfg.proxy_max_connections,
                if self.cfg.proxy_splice {
                    forward::Splice::Auto
                } else {
                    forward::Splice::Off
                },
            )
            .run(),
        );
        let me = self.clone();
        let lease_task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(me.cfg.lease_interval).await;
                if let Err(e) = me.renew_lease().await {
                    // The control plane may be away: pods keep running; retry next tick.
                    tracing::warn!(error = %e, "lease renewal failed");
                }
            }
        });
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                r = self.clone().watch_pods() => {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "pod watch ended; resyncing");
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                _ = &mut shutdown => break,
            }
        }
        lease_task.abort();
        endpoint.abort();
        if let Some(oci) = self.oci.get() {
            oci.shutdown().await;
        }
        if let Some(t) = image_gc {
            t.abort();
        }
        proxy.abort();
        if let Some(r) = routes {
            r.abort();
        }
        Ok(())
    }

    /// Lists the node's pods, reconciles them, then follows the watch.
    async fn watch_pods(self: Arc<Self>) -> Result<(), AgentError> {
        let rt = lookup("pods").expect("pods registered");
        let selector = format!("spec.nodeName={}", self.cfg.name);
        let list = self
            .client
            .list(
                rt,
                None,
                true,
                &ListParams {
                    field_selector: Some(selector.clone()),
                    ..Default::default()
                },
            )
            .await?;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        // Pods deleted (or rebound) while the watch was down are stopped; the rest keep
        // running untouched.
        let listed: std::collections::HashSet<&str> = items
            .iter()
            .filter_map(|p| p.pointer("/metadata/uid").and_then(Value::as_str))
            .collect();
        for uid in self.pod_uids().await {
            if !listed.contains(uid.as_str()) {
                self.forget(&uid).await;
            }
        }
        self.remove_stale_pod_dirs(&listed);
        self.reserve_listed_ips(&items);
        for p in items.iter().cloned() {
            self.clone().reconcile(p).await;
        }
        let rv = list["metadata"]["resourceVersion"]
            .as_str()
            .map(String::from);
        let p = ListParams {
            field_selector: Some(selector),
            resource_version: rv,
            allow_bookmarks: true,
            ..Default::default()
        };
        let mut events = Box::pin(self.client.watch(rt, None, true, &p, false).await?);
        // The server sends a bookmark every 10 s: a watch silent for three of those is on
        // a server that went away without closing it (powered off, partitioned), and
        // the agent lists again (through another server, if there are several).
        while let Ok(Some(ev)) = tokio::time::timeout(WATCH_SILENCE, events.next()).await {
            let ev = ev?;
            match ev.kind.as_str() {
                "ADDED" | "MODIFIED" => self.clone().reconcile(ev.object).await,
                "DELETED" => {
                    self.forget(
                        ev.object
                            .pointer("/metadata/uid")
                            .and_then(Value::as_str)
                            .unwrap_or_default(),
                    )
                    .await
                }
                "ERROR" => return Ok(()),
                _ => {}
            }
        }
        Ok(())
    }
}

impl Agent {
    /// Removes the directories (volumes, logs) of pods that are no longer bound here, left
    /// by an earlier run of the agent.
    fn remove_stale_pod_dirs(&self, listed: &std::collections::HashSet<&str>) {
        let Ok(entries) = std::fs::read_dir(self.cfg.data_dir.join("pods")) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !listed.contains(name.as_str()) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Exchanges the join token (or an admin token) `client` carries for node `name`'s own
/// credential, and returns a client that uses it: the API server then limits the agent to
/// its own Node, Lease and pods and what those pods reference.
pub async fn node_client(client: &Client, name: &str) -> Result<Client, AgentError> {
    let path = format!("/wk/v1/nodecredentials/{name}");
    let resp = client
        .request(wk_client::Method::POST, &path, &[], None, None)
        .await?;
    let body: Value = resp
        .json()
        .await
        .map_err(|e| AgentError::Runtime(format!("reading the node credential: {e}")))?;
    let token = body
        .get("token")
        .and_then(Value::as_str)
        .ok_or_else(|| AgentError::Runtime("the server sent no node credential".into()))?;
    let mut cfg = client.config.clone();
    cfg.token = Some(token.to_string());
    Ok(Client::new(cfg)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An address is never handed out twice while held, nor while kept for a listed pod
    /// that had it before a restart; a pod gets its old address back; a released one is
    /// handed out again once the search comes round; a full range says so.
    #[test]
    fn pod_addresses_are_never_handed_out_twice() {
        let range = wk_api::net::Cidr::new(Ipv4Addr::new(10, 9, 0, 0), 29); // .1 to .6
        let mut ips = PodIps::default();
        let all = |_| true;
        // The agent restarted: a listed pod had .3, and is started after a new one.
        ips.reserved.insert(Ipv4Addr::new(10, 9, 0, 3));
        let new = ips.claim(range, None, all).unwrap();
        assert_eq!(new, Ipv4Addr::new(10, 9, 0, 2));
        let again = ips
            .claim(range, Some(Ipv4Addr::new(10, 9, 0, 3)), all)
            .unwrap();
        assert_eq!(again, Ipv4Addr::new(10, 9, 0, 3), "the old address back");
        // A pod that says it had an address another pod holds gets another one.
        let other = ips.claim(range, Some(new), all).unwrap();
        assert!(![new, again].contains(&other), "{other}");
        let mut held = vec![new, again, other];
        while let Some(ip) = ips.claim(range, None, all) {
            assert!(!held.contains(&ip), "{ip} handed out twice");
            held.push(ip);
        }
        // .1 is the node's own: .2 to .6 are the pods'.
        assert_eq!(held.len(), 5, "{held:?}");
        ips.held.remove(&Ipv4Addr::new(10, 9, 0, 5));
        assert_eq!(
            ips.claim(range, None, all),
            Some(Ipv4Addr::new(10, 9, 0, 5))
        );
        // What `usable` refuses (a port already bound there) is skipped.
        ips.held.clear();
        let busy = Ipv4Addr::new(10, 9, 0, 6);
        for _ in 0..10 {
            let ip = ips.claim(range, None, |ip| ip != busy).unwrap();
            assert_ne!(ip, busy);
            ips.held.remove(&ip);
        }
    }
}
