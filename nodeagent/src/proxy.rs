//! The in-agent L4 balancer: kube-proxy's role, in the agent process. It also feeds the
//! node's DNS server (`wk-dns`) from the Services and Endpoints it follows.
//!
//! The agent follows Services and Endpoints (list + watch). For every Service port it
//! listens on `clusterIP:port` and, for NodePort Services, on `node_ip:nodePort`, TCP or
//! UDP, and forwards to the ready endpoints only:
//!
//! - Balancing: the less busy of two candidates taken in turn (power of two choices over
//!   active connections, rotating so equal load goes round-robin); `sessionAffinity:
//!   ClientIP` keeps a client on one endpoint by rendezvous hashing, the same choice on
//!   every agent, for as long as that endpoint is ready (`timeoutSeconds` is not applied).
//! - Passive health: an endpoint that refuses or times out a connection is skipped for
//!   `DOWN_FOR` and the connection is retried on another one, so a client never sees an
//!   endpoint that went away between an Endpoints update and the connect.
//! - Updates swap the endpoint table in place: new connections use it at once,
//!   established ones (to endpoints that stay or go) run to their end — draining.
//! - Bounded: at most `max_connections` (default `MAX_CONNECTIONS`) proxied TCP
//!   connections per Service port and `MAX_UDP_SESSIONS` UDP
//!   flows per listener; beyond that new ones are refused.
//!
//! Listeners use `SO_REUSEPORT`, so several agents on one host (tests, `wk up` with more
//! nodes) all serve the same VIPs and the kernel spreads connections among them. TCP
//! connections are forwarded on the epoll threads of `workers`, UDP flows on the agent's
//! runtime. Bytes move as `forward` describes: copied through a pooled buffer, spliced
//! through a pooled pipe once a transfer is bulk.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;
use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use wk_api::resource::lookup;
use wk_client::{Client, ListParams};

use crate::forward;
use crate::workers::{self, ServicePort};

/// How long an endpoint that refused a connection is skipped.
const DOWN_FOR: Duration = Duration::from_secs(2);
/// Longer than the first SYN retransmission (1 s), so one dropped SYN does not count
/// against a busy endpoint.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);
/// Endpoints tried for one connection before giving up.
pub(crate) const ATTEMPTS: usize = 3;
/// Default bound on proxied TCP connections per Service port.
pub const MAX_CONNECTIONS: usize = 16_384;
const MAX_UDP_SESSIONS: usize = 4_096;
const UDP_IDLE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

/// One endpoint and what the balancer knows about it.
pub struct Backend {
    pub addr: SocketAddr,
    active: AtomicUsize,
    /// Milliseconds since the table's epoch until which it is skipped (0 = healthy).
    pub(crate) down_until: AtomicU64,
}

/// The endpoints behind one listener; swapped in place on updates.
pub struct Table {
    pub(crate) backends: RwLock<Arc<Vec<Arc<Backend>>>>,
    /// `sessionAffinity: ClientIP`.
    client_affinity: std::sync::atomic::AtomicBool,
    turn: AtomicUsize,
    epoch: Instant,
}

impl Table {
    pub fn new() -> Arc<Table> {
        Arc::new(Table {
            backends: RwLock::new(Arc::new(Vec::new())),
            client_affinity: std::sync::atomic::AtomicBool::new(false),
            turn: AtomicUsize::new(0),
            epoch: Instant::now(),
        })
    }

    /// Replaces the endpoint set, keeping the counters of endpoints that stay.
    pub fn update(&self, addrs: &[SocketAddr], client_affinity: bool) {
        let old = self.backends.read().expect("table lock").clone();
        let next: Vec<Arc<Backend>> = addrs
            .iter()
            .map(|a| {
                old.iter()
                    .find(|b| b.addr == *a)
                    .cloned()
                    .unwrap_or_else(|| {
                        Arc::new(Backend {
                            addr: *a,
                            active: AtomicUsize::new(0),
                            down_until: AtomicU64::new(0),
                        })
                    })
            })
            .collect();
        *self.backends.write().expect("table lock") = Arc::new(next);
        self.client_affinity
            .store(client_affinity, Ordering::Relaxed);
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.backends
            .read()
            .expect("table lock")
            .iter()
            .map(|b| b.addr)
            .collect()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub(crate) fn mark_down(&self, b: &Backend) {
        b.down_until.store(
            self.now_ms() + DOWN_FOR.as_millis() as u64,
            Ordering::Relaxed,
        );
    }

    /// Picks an endpoint for a new connection from `client`, not one of `tried`, without
    /// allocating: the less busy of the next two usable endpoints in turn.
    pub fn pick(&self, client: IpAddr, tried: &[SocketAddr]) -> Option<Arc<Backend>> {
        let all = self.backends.read().expect("table lock");
        let n = all.len();
        let now = self.now_ms();
        let usable = |b: &Backend, healthy_only: bool| {
            !tried.contains(&b.addr)
                && (!healthy_only || b.down_until.load(Ordering::Relaxed) <= now)
        };
        // When every endpoint looks down, try them anyway rather than fail.
        let healthy_only = all.iter().any(|b| usable(b, true));
        if !healthy_only && !all.iter().any(|b| usable(b, false)) {
            return None;
        }
        if self.client_affinity.load(Ordering::Relaxed) {
            // Rendezvous hashing: every agent picks the same endpoint for a client from
            // the same endpoint set (agents sharing a VIP on one host included), and a
            // client moves only when its endpoint goes.
            return all
                .iter()
                .filter(|b| usable(b, healthy_only))
                .max_by_key(|b| affinity_hash(client, b.addr))
                .cloned();
        }
        let t = self.turn.fetch_add(1, Ordering::Relaxed);
        let first = (0..n)
            .map(|k| (t + k) % n)
            .find(|&i| usable(&all[i], healthy_only))?;
        let second = (1..n)
            .map(|k| (first + k) % n)
            .find(|&i| usable(&all[i], healthy_only))
            .unwrap_or(first);
        let (a, b) = (&all[first], &all[second]);
        let chosen = if b.active.load(Ordering::Relaxed) < a.active.load(Ordering::Relaxed) {
            b.clone()
        } else {
            a.clone()
        };
        Some(chosen)
    }
}

/// FNV-1a over a client address and an endpoint: the weight of `endpoint` for `client`.
/// (Every agent computes the same weights, so the bytes hashed must not depend on the
/// agent: the addresses' octets and the port.)
fn affinity_hash(client: IpAddr, endpoint: SocketAddr) -> u64 {
    fn octets(ip: &IpAddr) -> ([u8; 16], usize) {
        let mut b = [0u8; 16];
        match ip {
            IpAddr::V4(a) => {
                b[..4].copy_from_slice(&a.octets());
                (b, 4)
            }
            IpAddr::V6(a) => (a.octets(), 16),
        }
    }
    let (c, cn) = octets(&client);
    let (e, en) = octets(&endpoint.ip());
    let port = endpoint.port().to_be_bytes();
    let bytes = c[..cn].iter().chain(&e[..en]).chain(&port);
    bytes.fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Counts a connection as active on a backend while alive.
pub(crate) struct Active(pub Arc<Backend>);

impl Active {
    pub(crate) fn new(b: Arc<Backend>) -> Active {
        b.active.fetch_add(1, Ordering::Relaxed);
        Active(b)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

fn reuse_port_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// Wasi:http services running in this process, by address: connections for them skip the
/// socket hop (see `workers`).
pub type LocalServices =
    Arc<dyn Fn(SocketAddr) -> Option<Arc<wk_runtime_wasm::LocalService>> + Send + Sync>;

/// Forwards UDP datagrams on `socket`: one flow per client address, each with its own
/// upstream socket to the endpoint picked for it; replies go back from the service
/// address. Idle flows end after `UDP_IDLE`.
pub async fn serve_udp(socket: UdpSocket, table: Arc<Table>) {
    let socket = Arc::new(socket);
    let flows: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, client) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(_) => continue,
        };
        let existing = flows.lock().expect("flows lock").get(&client).cloned();
        let upstream = match existing {
            Some(u) => u,
            None => {
                if flows.lock().expect("flows lock").len() >= MAX_UDP_SESSIONS {
                    continue;
                }
                let Some(backend) = table.pick(client.ip(), &[]) else {
                    continue;
                };
                let Ok(u) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await else {
                    continue;
                };
                if u.connect(backend.addr).await.is_err() {
                    continue;
                }
                let u = Arc::new(u);
                flows.lock().expect("flows lock").insert(client, u.clone());
                let (u2, socket, flows) = (u.clone(), socket.clone(), flows.clone());
                tokio::spawn(async move {
                    let _active = Active::new(backend);
                    let mut back = vec![0u8; 65_536];
                    while let Ok(Ok(m)) = tokio::time::timeout(UDP_IDLE, u2.recv(&mut back)).await {
                        let _ = socket.send_to(&back[..m], client).await;
                    }
                    flows.lock().expect("flows lock").remove(&client);
                });
                u
            }
        };
        let _ = upstream.send(&buf[..n]).await;
    }
}

/// Where one Service port is served and what is behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub listen: SocketAddr,
    pub proto: Proto,
    pub endpoints: Vec<SocketAddr>,
    /// `sessionAffinity: ClientIP`.
    pub client_affinity: bool,
}

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

/// The listeners Services and Endpoints call for on a node at `node_ip`.
pub fn routes(
    services: &BTreeMap<String, Value>,
    endpoints: &BTreeMap<String, Value>,
    node_ip: Ipv4Addr,
) -> Vec<Route> {
    let mut out = Vec::new();
    for (key, svc) in services {
        let vip: Option<Ipv4Addr> = s(svc, "/spec/clusterIP").parse().ok();
        let client_affinity = s(svc, "/spec/sessionAffinity") == "ClientIP";
        let ep = endpoints.get(key);
        for port in svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let proto = match s(port, "/protocol") {
                "UDP" => Proto::Udp,
                "TCP" | "" => Proto::Tcp,
                _ => continue,
            };
            let name = s(port, "/name");
            let mut backends = Vec::new();
            for subset in ep
                .and_then(|e| e.get("subsets"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(target) = subset
                    .get("ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .find(|p| {
                        s(p, "/name") == name
                            && matches!(
                                (s(p, "/protocol"), proto),
                                ("" | "TCP", Proto::Tcp) | ("UDP", Proto::Udp)
                            )
                    })
                    .and_then(|p| p.get("port").and_then(Value::as_u64))
                else {
                    continue;
                };
                for a in subset
                    .get("addresses")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Ok(ip) = s(a, "/ip").parse::<IpAddr>() {
                        backends.push(SocketAddr::new(ip, target as u16));
                    }
                }
            }
            backends.sort();
            backends.dedup();
            if let (Some(vip), Some(p)) = (vip, port.get("port").and_then(Value::as_u64)) {
                out.push(Route {
                    listen: SocketAddr::new(IpAddr::V4(vip), p as u16),
                    proto,
                    endpoints: backends.clone(),
                    client_affinity,
                });
            }
            if let Some(np) = port.get("nodePort").and_then(Value::as_u64) {
                out.push(Route {
                    listen: SocketAddr::new(IpAddr::V4(node_ip), np as u16),
                    proto,
                    endpoints: backends,
                    client_affinity,
                });
            }
        }
    }
    out
}

struct Listener {
    table: Arc<Table>,
    /// TCP: the forwarding threads' listeners.
    tcp: Option<workers::Listening>,
    /// UDP: the flow task.
    udp: Option<JoinHandle<()>>,
}

/// Lifts the soft limit on open descriptors to the hard one: every proxied connection
/// holds two, and a bulk one a pipe too (the soft limit is often 1,024).
fn raise_descriptor_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::debug!(error = %e, "cannot raise the descriptor limit");
    }
}

/// TCP forwarding threads, one per core like HAProxy's threads (see `workers`).
fn forwarding_threads() -> Option<workers::Workers> {
    raise_descriptor_limit();
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 16);
    workers::Workers::start(n)
        .inspect_err(|e| tracing::error!(error = %e, "cannot start the forwarding threads; TCP services are not served"))
        .ok()
}

/// The balancer: follows Services and Endpoints and keeps one listener per route.
pub struct Proxy {
    client: Client,
    node_ip: Ipv4Addr,
    services: Mutex<BTreeMap<String, Value>>,
    endpoints: Mutex<BTreeMap<String, Value>>,
    changed: Notify,
    listeners: Mutex<HashMap<(SocketAddr, Proto), Listener>>,
    /// TCP forwarding threads, one per core.
    workers: Option<workers::Workers>,
    local: Option<LocalServices>,
    max_connections: usize,
    splice: forward::Splice,
    /// The node's DNS server, fed from the same Services and Endpoints.
    dns: Option<Arc<wk_dns::ClusterDns>>,
}

impl Proxy {
    /// `local`: the agent's own Wasm services, served without a socket hop (`None` turns
    /// the short-circuit off).
    pub fn new(
        client: Client,
        node_ip: Ipv4Addr,
        dns: Option<Arc<wk_dns::ClusterDns>>,
        local: Option<LocalServices>,
        max_connections: usize,
        splice: forward::Splice,
    ) -> Arc<Proxy> {
        Arc::new(Proxy {
            client,
            node_ip,
            services: Mutex::default(),
            endpoints: Mutex::default(),
            changed: Notify::new(),
            listeners: Mutex::default(),
            workers: forwarding_threads(),
            local,
            max_connections: max_connections.max(1),
            splice,
            dns,
        })
    }

    /// Runs until the process ends.
    pub async fn run(self: Arc<Self>) {
        for kind in ["services", "endpoints"] {
            let me = self.clone();
            tokio::spawn(async move {
                loop {
                    if let Err(e) = me.follow(kind).await {
                        tracing::debug!(kind, error = %e, "proxy watch ended; relisting");
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            });
        }
        loop {
            self.changed.notified().await;
            self.sync();
        }
    }

    fn store(&self, kind: &str) -> &Mutex<BTreeMap<String, Value>> {
        if kind == "services" {
            &self.services
        } else {
            &self.endpoints
        }
    }

    /// Lists one kind into its map, then applies watch events.
    async fn follow(&self, kind: &str) -> Result<(), wk_client::ClientError> {
        let rt = lookup(kind).expect("kind registered");
        let key = |o: &Value| format!("{}/{}", s(o, "/metadata/namespace"), s(o, "/metadata/name"));
        let list = self
            .client
            .list(rt, None, true, &ListParams::default())
            .await?;
        let fresh: BTreeMap<String, Value> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|o| (key(o), o.clone()))
            .collect();
        *self.store(kind).lock().expect("proxy lock") = fresh;
        self.changed.notify_one();
        let p = ListParams {
            resource_version: list["metadata"]["resourceVersion"]
                .as_str()
                .map(String::from),
            allow_bookmarks: true,
            ..Default::default()
        };
        let mut events = Box::pin(self.client.watch(rt, None, true, &p, false).await?);
        while let Some(ev) = events.next().await {
            let ev = ev?;
            let mut map = self.store(kind).lock().expect("proxy lock");
            match ev.kind.as_str() {
                "ADDED" | "MODIFIED" => {
                    map.insert(key(&ev.object), ev.object);
                }
                "DELETED" => {
                    map.remove(&key(&ev.object));
                }
                "ERROR" => return Ok(()),
                _ => continue,
            }
            drop(map);
            self.changed.notify_one();
        }
        Ok(())
    }

    /// Brings the listeners in line with the routes.
    fn sync(&self) {
        let routes = {
            let services = self.services.lock().expect("proxy lock");
            let endpoints = self.endpoints.lock().expect("proxy lock");
            if let Some(dns) = &self.dns {
                dns.set_zone(wk_dns::Zone::build(dns.domain(), &services, &endpoints));
            }
            routes(&services, &endpoints, self.node_ip)
        };
        let mut listeners = self.listeners.lock().expect("proxy lock");
        let wanted: HashSet<(SocketAddr, Proto)> =
            routes.iter().map(|r| (r.listen, r.proto)).collect();
        listeners.retain(|k, l| {
            let keep = wanted.contains(k);
            if !keep {
                // Established connections keep running; only new ones stop.
                if let (Some(w), Some(t)) = (&self.workers, l.tcp.take()) {
                    w.unlisten(t);
                }
                if let Some(t) = &l.udp {
                    t.abort();
                }
                tracing::info!(listen = %k.0, "service listener removed");
            }
            keep
        });
        for r in routes {
            let key = (r.listen, r.proto);
            if let Some(l) = listeners.get(&key) {
                if l.table.addrs() != r.endpoints {
                    tracing::debug!(listen = %r.listen, endpoints = ?r.endpoints, "service endpoints changed");
                }
                l.table.update(&r.endpoints, r.client_affinity);
                continue;
            }
            let table = Table::new();
            table.update(&r.endpoints, r.client_affinity);
            let mut listener = Listener {
                table: table.clone(),
                tcp: None,
                udp: None,
            };
            let bound: std::io::Result<()> = match (r.proto, &self.workers) {
                (Proto::Tcp, Some(w)) => {
                    let port = ServicePort::new(
                        table,
                        self.local.clone(),
                        self.splice,
                        self.max_connections,
                    );
                    w.listen(r.listen, port).map(|l| listener.tcp = Some(l))
                }
                (Proto::Tcp, None) => Err(std::io::Error::other("no forwarding threads")),
                (Proto::Udp, _) => reuse_port_udp(r.listen).map(|u| {
                    listener.udp = Some(tokio::spawn(serve_udp(u, table)));
                }),
            };
            if let Err(e) = bound {
                tracing::warn!(listen = %r.listen, error = %e, "cannot listen for a service");
                continue;
            }
            tracing::info!(listen = %r.listen, proto = ?r.proto, endpoints = r.endpoints.len(), "service listener added");
            listeners.insert(key, listener);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn routes_follow_services_and_ready_endpoints() {
        let services = BTreeMap::from([
            (
                "default/web".to_string(),
                json!({"metadata": {"name": "web", "namespace": "default"},
                "spec": {"type": "NodePort", "clusterIP": "127.240.0.5", "sessionAffinity": "ClientIP",
                    "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080},
                              {"name": "dns", "port": 53, "protocol": "UDP"}]}}),
            ),
            (
                "default/headless".to_string(),
                json!({"metadata": {"name": "headless", "namespace": "default"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}),
            ),
        ]);
        let endpoints = BTreeMap::from([(
            "default/web".to_string(),
            json!({"subsets": [{"addresses": [{"ip": "127.64.0.2"}, {"ip": "127.64.0.3"}],
                "notReadyAddresses": [{"ip": "127.64.0.4"}],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}]}]}),
        )]);
        let r = routes(&services, &endpoints, Ipv4Addr::LOCALHOST);
        assert_eq!(r.len(), 3, "{r:?}");
        let http: Vec<SocketAddr> = vec![
            "127.64.0.2:8080".parse().unwrap(),
            "127.64.0.3:8080".parse().unwrap(),
        ];
        assert_eq!(r[0].listen, "127.240.0.5:80".parse().unwrap());
        assert_eq!(r[0].endpoints, http);
        assert!(r[0].client_affinity);
        assert_eq!(r[1].listen, "127.0.0.1:30080".parse().unwrap());
        assert_eq!(r[2].proto, Proto::Udp);
        assert_eq!(
            r[2].endpoints,
            vec![
                "127.64.0.2:5353".parse::<SocketAddr>().unwrap(),
                "127.64.0.3:5353".parse().unwrap()
            ]
        );
    }

    #[test]
    fn picks_spread_skip_down_endpoints_and_stick_by_client() {
        let t = Table::new();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        t.update(&[a, b], false);
        let client: IpAddr = "127.0.0.9".parse().unwrap();
        let picks: HashSet<SocketAddr> =
            (0..4).map(|_| t.pick(client, &[]).unwrap().addr).collect();
        assert_eq!(picks.len(), 2, "both endpoints get connections");
        // A busy endpoint loses to an idle one.
        let busy = t.pick(client, &[]).unwrap();
        let _held: Vec<Active> = (0..3).map(|_| Active::new(busy.clone())).collect();
        for _ in 0..4 {
            assert_ne!(t.pick(client, &[]).unwrap().addr, busy.addr);
        }
        // A refused endpoint is skipped; a retry excludes what was tried.
        let other = if busy.addr == a { b } else { a };
        let ob = t
            .backends
            .read()
            .unwrap()
            .iter()
            .find(|x| x.addr == other)
            .unwrap()
            .clone();
        t.mark_down(&ob);
        assert_eq!(t.pick(client, &[]).unwrap().addr, busy.addr);
        assert!(t.pick(client, &[a, b]).is_none());
        // Updates keep the counters of endpoints that stay.
        t.update(&[busy.addr], false);
        assert_eq!(
            t.backends.read().unwrap()[0].active.load(Ordering::Relaxed),
            3
        );
        // Client affinity.
        let s = Table::new();
        s.update(&[a, b], true);
        let first = s.pick(client, &[]).unwrap().addr;
        assert!((0..5).all(|_| s.pick(client, &[]).unwrap().addr == first));
    }
}
