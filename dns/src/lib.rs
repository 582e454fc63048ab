//! wk cluster DNS: the CoreDNS role, served by every node agent with hickory-server.
//!
//! Names under the cluster domain (default `cluster.local`) come from the Services and
//! Endpoints the agent follows ([`Zone::build`], swapped in whole on every change):
//!
//! - `<svc>.<ns>.svc.<domain>` A → the cluster IP; for a headless Service, the ready
//!   endpoint addresses;
//! - `_<port>._<proto>.<svc>.<ns>.svc.<domain>` SRV → the port, targeting the Service name;
//! - `<a-b-c-d>.<ns>.pod.<domain>` A → `a.b.c.d` (Kubernetes' pod records);
//! - anything else in the domain → NXDOMAIN with the zone's SOA; an existing name asked
//!   for another type (AAAA) → no records, NOERROR.
//!
//! Every other name is forwarded to the host's resolvers (`/etc/resolv.conf`) through
//! hickory-resolver, whose cache answers repeats.
//!
//! UDP is served by a loop of our own: a plain A query for a cluster name is answered from
//! the wire bytes (the zone keeps its addresses by wire-form name), everything else goes
//! through hickory-proto messages in bounded tasks. TCP is hickory-server's.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::{A, CNAME, SOA, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::resolver::TokioResolver;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use serde_json::Value;

/// Seconds clients may cache cluster answers (CoreDNS' kubernetes plugin uses 5).
const TTL: u32 = 5;

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

/// The answers for the cluster domain, by lower-case name.
#[derive(Debug, Default, Clone)]
pub struct Zone {
    /// Addresses by name in wire form, lower-case (`wire_name`), so the UDP fast path can
    /// look a question up without decoding it.
    a: HashMap<Vec<u8>, Vec<Ipv4Addr>>,
    srv: HashMap<String, Vec<(u16, String)>>,
    /// ExternalName Services: their name, lower-case and dotted, to `spec.externalName`.
    cname: HashMap<String, String>,
    /// Namespaces with a Service: `<ns>.svc.<domain>` exists (with no records of its own).
    namespaces: std::collections::HashSet<String>,
}

/// `a.b.` → `\x01a\x01b\x00`.
fn wire_name(dotted: &str) -> Vec<u8> {
    let mut w = Vec::with_capacity(dotted.len() + 1);
    for label in dotted.trim_end_matches('.').split('.') {
        w.push(label.len() as u8);
        w.extend_from_slice(label.as_bytes());
    }
    w.push(0);
    w
}

impl Zone {
    /// Builds the zone for `domain` from Services and Endpoints keyed `<ns>/<name>`.
    pub fn build(
        domain: &str,
        services: &BTreeMap<String, Value>,
        endpoints: &BTreeMap<String, Value>,
    ) -> Zone {
        let mut z = Zone::default();
        for (key, svc) in services {
            let (ns, name) = key.split_once('/').unwrap_or(("", key));
            z.namespaces.insert(ns.to_ascii_lowercase());
            let fqdn = format!("{name}.{ns}.svc.{domain}.").to_ascii_lowercase();
            if s(svc, "/spec/type") == "ExternalName" {
                let target = s(svc, "/spec/externalName").trim_end_matches('.');
                if !target.is_empty() {
                    z.cname.insert(fqdn, format!("{target}."));
                }
                continue;
            }
            let ready: Vec<Ipv4Addr> = endpoints
                .get(key)
                .and_then(|e| e.get("subsets"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .flat_map(|subset| {
                    subset
                        .get("addresses")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|a| s(a, "/ip").parse().ok())
                })
                .collect();
            let ips = match s(svc, "/spec/clusterIP") {
                "None" => {
                    let mut ips = ready;
                    ips.sort();
                    ips.dedup();
                    ips
                }
                ip => ip.parse().map(|ip| vec![ip]).unwrap_or_default(),
            };
            z.a.insert(wire_name(&fqdn), ips);
            for port in svc
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let pname = s(port, "/name");
                let number = port.get("port").and_then(Value::as_u64).unwrap_or(0) as u16;
                if pname.is_empty() || number == 0 {
                    continue;
                }
                let proto = match s(port, "/protocol") {
                    "" => "tcp".to_string(),
                    p => p.to_ascii_lowercase(),
                };
                z.srv
                    .entry(format!("_{pname}._{proto}.{fqdn}").to_ascii_lowercase())
                    .or_default()
                    .push((number, fqdn.clone()));
            }
        }
        z
    }
}

/// Answers DNS requests for the cluster domain and forwards the rest.
pub struct ClusterDns {
    domain: String,
    origin: Name,
    zone: RwLock<Arc<Zone>>,
    upstream: Option<TokioResolver>,
}

impl ClusterDns {
    /// A server for `domain` (e.g. `cluster.local`), forwarding to the host's resolvers
    /// when they can be read.
    pub fn new(domain: &str) -> Arc<ClusterDns> {
        Self::with_upstream(domain, &[])
    }

    /// A server for `domain` forwarding to `upstream` (UDP and TCP), or, when empty, to
    /// the host's resolvers (`/etc/resolv.conf`).
    pub fn with_upstream(domain: &str, upstream: &[SocketAddr]) -> Arc<ClusterDns> {
        use hickory_server::resolver::config::{
            ConnectionConfig, NameServerConfig, ResolverConfig,
        };
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let builder = if upstream.is_empty() {
            TokioResolver::builder_tokio()
        } else {
            let servers = upstream
                .iter()
                .map(|a| {
                    let (mut udp, mut tcp) = (ConnectionConfig::udp(), ConnectionConfig::tcp());
                    (udp.port, tcp.port) = (a.port(), a.port());
                    NameServerConfig::new(a.ip(), true, vec![udp, tcp])
                })
                .collect();
            Ok(TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], servers),
                Default::default(),
            ))
        };
        let upstream = match builder.and_then(|b| b.build()) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "no upstream resolvers: only cluster names resolve");
                None
            }
        };
        Arc::new(ClusterDns {
            origin: Name::from_ascii(format!("{domain}.")).unwrap_or_else(|_| Name::root()),
            domain,
            zone: RwLock::new(Arc::new(Zone::default())),
            upstream,
        })
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Replaces the cluster records.
    pub fn set_zone(&self, zone: Zone) {
        *self.zone.write().expect("zone lock") = Arc::new(zone);
    }

    fn soa(&self) -> Record {
        let ns =
            Name::from_ascii(format!("ns.dns.{}.", self.domain)).unwrap_or_else(|_| Name::root());
        let mbox = Name::from_ascii(format!("hostmaster.{}.", self.domain))
            .unwrap_or_else(|_| Name::root());
        Record::from_rdata(
            self.origin.clone(),
            TTL,
            RData::SOA(SOA::new(ns, mbox, 1, 7200, 1800, 86400, TTL)),
        )
    }

    /// The cluster answer for `name`/`rtype`: `None` if the name does not exist.
    fn cluster_answer(&self, name: &Name, rtype: RecordType) -> Option<Vec<Record>> {
        let key = name.to_lowercase().to_ascii();
        let key = if key.ends_with('.') {
            key
        } else {
            format!("{key}.")
        };
        let zone = self.zone.read().expect("zone lock").clone();
        let a_record = |ip: &Ipv4Addr| Record::from_rdata(name.clone(), TTL, RData::A(A(*ip)));
        if let Some(target) = zone.cname.get(&key) {
            // Whatever the type asked, the answer starts with the alias (RFC 1034).
            return Some(
                Name::from_ascii(target)
                    .map(|t| {
                        vec![Record::from_rdata(
                            name.clone(),
                            TTL,
                            RData::CNAME(CNAME(t)),
                        )]
                    })
                    .unwrap_or_default(),
            );
        }
        if let Some(ips) = zone.a.get(&wire_name(&key)) {
            return Some(match rtype {
                RecordType::A | RecordType::ANY => ips.iter().map(a_record).collect(),
                _ => Vec::new(),
            });
        }
        if let Some(targets) = zone.srv.get(&key) {
            return Some(match rtype {
                RecordType::SRV | RecordType::ANY => targets
                    .iter()
                    .filter_map(|(port, target)| {
                        let t = Name::from_ascii(target).ok()?;
                        Some(Record::from_rdata(
                            name.clone(),
                            TTL,
                            RData::SRV(SRV::new(0, 100, *port, t)),
                        ))
                    })
                    .collect(),
                _ => Vec::new(),
            });
        }
        // Names with nothing of their own but names below them (the apex, `svc.`,
        // `pod.`, a namespace's `<ns>.svc.`) exist: NODATA, not NXDOMAIN, which would
        // tell a caching resolver that everything below is gone too (RFC 8020). The
        // apex has the zone's SOA.
        // (`key` is inside the domain: its labels end with the domain's.)
        let labels: Vec<&str> = key.trim_end_matches('.').split('.').collect();
        let domain_labels = self.domain.split('.').count();
        match labels.len() - domain_labels.min(labels.len()) {
            0 => {
                return Some(match rtype {
                    RecordType::SOA | RecordType::ANY => vec![self.soa()],
                    _ => Vec::new(),
                });
            }
            1 if matches!(labels[0], "svc" | "pod") => return Some(Vec::new()),
            2 if labels[1] == "svc" && zone.namespaces.contains(labels[0]) => {
                return Some(Vec::new());
            }
            _ => {}
        }
        // `<a-b-c-d>.<ns>.pod.<domain>.`
        if labels.len() == 3 + domain_labels && labels[2] == "pod" {
            if let Ok(ip) = labels[0].replace('-', ".").parse::<Ipv4Addr>() {
                return Some(match rtype {
                    RecordType::A | RecordType::ANY => vec![a_record(&ip)],
                    _ => Vec::new(),
                });
            }
        }
        None
    }

    /// The address of a cluster name as a pod of namespace `ns` would resolve it through
    /// the Kubernetes search path (`<ns>.svc.<domain>`, `svc.<domain>`, `<domain>`): the
    /// Service's cluster IP, or for a headless Service its first ready endpoint.
    pub fn resolve(&self, host: &str, ns: &str) -> Option<Ipv4Addr> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let zone = self.zone.read().expect("zone lock").clone();
        let d = &self.domain;
        let candidates = if host.ends_with(&format!(".{d}")) {
            vec![format!("{host}.")]
        } else {
            vec![
                format!("{host}.{ns}.svc.{d}."),
                format!("{host}.svc.{d}."),
                format!("{host}.{d}."),
            ]
        };
        candidates.iter().find_map(|c| {
            zone.a
                .get(&wire_name(c))
                .and_then(|ips| ips.first().copied())
        })
    }

    fn in_domain(&self, name: &Name) -> bool {
        self.origin.zone_of(&name.to_lowercase())
    }
}

/// What to answer for one question.
struct Outcome {
    answers: Vec<Record>,
    soa: Vec<Record>,
    code: ResponseCode,
    authoritative: bool,
}

impl ClusterDns {
    /// The answer to `name`/`rtype`: from the cluster zone, or from the upstream resolvers.
    async fn lookup(&self, name: &Name, rtype: RecordType) -> Outcome {
        let mut out = Outcome {
            answers: Vec::new(),
            soa: Vec::new(),
            code: ResponseCode::NoError,
            authoritative: false,
        };
        if self.in_domain(name) {
            out.authoritative = true;
            match self.cluster_answer(name, rtype) {
                Some(records) => {
                    if records.is_empty() {
                        out.soa.push(self.soa());
                    }
                    out.answers = records;
                    // An ExternalName alias: the records of its target follow, as a
                    // recursive resolver gives them (a stub resolver does not chase it).
                    if let [alias] = &out.answers[..]
                        && let RData::CNAME(target) = &alias.data
                        && rtype != RecordType::CNAME
                    {
                        let target = target.0.clone();
                        // One level only: an alias to another cluster alias (or to
                        // itself) is not followed further, so a loop cannot recurse.
                        let chased = if self.in_domain(&target) {
                            self.cluster_answer(&target, rtype)
                                .unwrap_or_default()
                                .into_iter()
                                .filter(|r| !matches!(r.data, RData::CNAME(_)))
                                .collect()
                        } else {
                            Box::pin(self.lookup(&target, rtype)).await.answers
                        };
                        out.answers.extend(chased);
                    }
                }
                None => {
                    out.code = ResponseCode::NXDomain;
                    out.soa.push(self.soa());
                }
            }
            return out;
        }
        match &self.upstream {
            Some(resolver) => match resolver.lookup(name.clone(), rtype).await {
                Ok(lookup) => out.answers = lookup.answers().to_vec(),
                Err(e) if e.is_nx_domain() => out.code = ResponseCode::NXDomain,
                Err(e) if e.is_no_records_found() => {}
                Err(e) => {
                    tracing::debug!(name = %name, error = %e, "upstream lookup failed");
                    out.code = ResponseCode::ServFail;
                }
            },
            None => out.code = ResponseCode::ServFail,
        }
        out
    }

    /// A UDP query answered from its wire bytes: cluster A records straight from the
    /// zone's address table (no message objects), when the query is a plain one-question
    /// A/IN query without EDNS; `None` sends it down the general path.
    fn fast_answer(&self, q: &[u8], out: &mut Vec<u8>) -> bool {
        if q.len() < 17 || q[2] & 0xf8 != 0 || q[4..12] != [0, 1, 0, 0, 0, 0, 0, 0] {
            return false;
        }
        // The question name, lower-cased, in wire form.
        let mut name = [0u8; 256];
        let (mut i, mut len) = (12, 0);
        loop {
            let Some(&l) = q.get(i) else { return false };
            if l & 0xc0 != 0 || len + l as usize + 1 > name.len() {
                return false;
            }
            name[len] = l;
            len += 1;
            i += 1;
            if l == 0 {
                break;
            }
            let Some(label) = q.get(i..i + l as usize) else {
                return false;
            };
            for (k, c) in label.iter().enumerate() {
                name[len + k] = c.to_ascii_lowercase();
            }
            len += l as usize;
            i += l as usize;
        }
        if q.len() != i + 4 || q[i..i + 4] != [0, 1, 0, 1] {
            return false;
        }
        let zone = self.zone.read().expect("zone lock").clone();
        let Some(ips) = zone.a.get(&name[..len]).filter(|ips| !ips.is_empty()) else {
            return false;
        };
        // Over 512 bytes (a query without EDNS): the general path sets TC.
        if q.len() + ips.len() * 16 > 512 {
            return false;
        }
        out.clear();
        out.extend_from_slice(&q[..2]);
        // QR, AA, RD as asked; RA; NOERROR; one question, the answers.
        out.extend_from_slice(&[0x84 | (q[2] & 0x01), 0x80, 0, 1]);
        out.extend_from_slice(&(ips.len() as u16).to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&q[12..]);
        for ip in ips {
            out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
            out.extend_from_slice(&TTL.to_be_bytes());
            out.extend_from_slice(&[0, 4]);
            out.extend_from_slice(&ip.octets());
        }
        true
    }

    /// Any UDP query, through hickory-proto messages; `None` for what cannot be read.
    async fn respond(&self, q: &[u8]) -> Option<Vec<u8>> {
        let req = match Message::from_vec(q) {
            Ok(m) => m,
            Err(_) if q.len() >= 12 => {
                // Unreadable: FORMERR with the id, as servers do.
                let id = u16::from_be_bytes([q[0], q[1]]);
                return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
                    .to_vec()
                    .ok();
            }
            Err(_) => return None,
        };
        if req.metadata.message_type != MessageType::Query {
            return None;
        }
        let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
        resp.metadata.recursion_desired = req.metadata.recursion_desired;
        resp.metadata.recursion_available = true;
        if req.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(1232);
            resp.set_edns(edns);
        }
        if req.metadata.op_code != OpCode::Query || req.queries.len() != 1 {
            resp.metadata.response_code = ResponseCode::NotImp;
            return resp.to_vec().ok();
        }
        let query = req.queries[0].clone();
        let outcome = self.lookup(query.name(), query.query_type()).await;
        resp.add_query(query);
        resp.metadata.authoritative = outcome.authoritative;
        resp.metadata.response_code = outcome.code;
        resp.add_answers(outcome.answers);
        for r in outcome.soa {
            resp.add_authority(r);
        }
        let bytes = resp.to_vec().ok()?;
        let limit = if req.edns.is_some() { 1232 } else { 512 };
        if bytes.len() > limit {
            // Too big for UDP: the client retries over TCP.
            let mut short = Message::response(req.metadata.id, req.metadata.op_code);
            short.metadata.truncation = true;
            short.metadata.recursion_desired = req.metadata.recursion_desired;
            short.metadata.recursion_available = true;
            short.add_query(req.queries[0].clone());
            return short.to_vec().ok();
        }
        Some(bytes)
    }
}

#[async_trait::async_trait]
impl RequestHandler for ClusterDns {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let builder = MessageResponseBuilder::from_message_request(request);
        let mut meta = Metadata::new(request.metadata.id, MessageType::Response, OpCode::Query);
        meta.recursion_desired = request.metadata.recursion_desired;
        meta.recursion_available = true;
        let queries = request.queries.queries();
        if request.metadata.op_code != OpCode::Query || queries.len() != 1 {
            let r = builder.error_msg(&request.metadata, ResponseCode::NotImp);
            return response_handle
                .send_response(r)
                .await
                .unwrap_or_else(|_| failed(request));
        }
        let query = queries[0].original().clone();
        let outcome = self.lookup(query.name(), query.query_type()).await;
        meta.authoritative = outcome.authoritative;
        meta.response_code = outcome.code;
        let response = builder.build(meta, outcome.answers.iter(), [], outcome.soa.iter(), []);
        response_handle
            .send_response(response)
            .await
            .unwrap_or_else(|_| failed(request))
    }
}

fn failed(request: &Request) -> ResponseInfo {
    let mut meta = Metadata::new(
        request.metadata.id,
        MessageType::Response,
        request.metadata.op_code,
    );
    meta.response_code = ResponseCode::ServFail;
    hickory_server::proto::op::Header {
        metadata: meta,
        counts: Default::default(),
    }
    .into()
}

/// Most UDP queries handled at once off the fast path (forwarded ones wait on upstream
/// servers); beyond that new ones are dropped, and clients retry.
const MAX_SLOW_QUERIES: usize = 1024;

/// Serves `dns` at `addr` (port 0 picks one) until the process ends, and returns the
/// address bound: UDP through `serve_udp`, TCP through hickory-server.
pub async fn serve(dns: Arc<ClusterDns>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    // Port 0: the UDP port picked must be free for TCP too; try a few.
    let mut tries = if addr.port() == 0 { 16 } else { 1 };
    let (udp, tcp, bound) = loop {
        let udp = tokio::net::UdpSocket::bind(addr).await?;
        let bound = udp.local_addr()?;
        match tokio::net::TcpListener::bind(bound).await {
            Ok(tcp) => break (udp, tcp, bound),
            Err(e) if tries > 1 && e.kind() == std::io::ErrorKind::AddrInUse => tries -= 1,
            Err(e) => return Err(e),
        }
    };
    let mut server = hickory_server::Server::new(ArcHandler(dns.clone()));
    server.register_listener(tcp, Duration::from_secs(5), 64);
    tokio::spawn(async move {
        if let Err(e) = server.block_until_done().await {
            tracing::warn!(error = %e, "DNS server stopped");
        }
    });
    tokio::spawn(serve_udp(dns, Arc::new(udp)));
    Ok(bound)
}

/// The UDP loop: cluster A queries answered in place, the rest in bounded tasks.
async fn serve_udp(dns: Arc<ClusterDns>, sock: Arc<tokio::net::UdpSocket>) {
    let slow = Arc::new(tokio::sync::Semaphore::new(MAX_SLOW_QUERIES));
    let mut buf = vec![0u8; 4096];
    let mut out = Vec::with_capacity(512);
    loop {
        let Ok((n, src)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        if dns.fast_answer(&buf[..n], &mut out) {
            let _ = sock.send_to(&out, src).await;
            continue;
        }
        let Ok(permit) = slow.clone().try_acquire_owned() else {
            continue;
        };
        let (dns, sock, q) = (dns.clone(), sock.clone(), buf[..n].to_vec());
        tokio::spawn(async move {
            if let Some(resp) = dns.respond(&q).await {
                let _ = sock.send_to(&resp, src).await;
            }
            drop(permit);
        });
    }
}

/// `RequestHandler` for a shared `ClusterDns`.
struct ArcHandler(Arc<ClusterDns>);

#[async_trait::async_trait]
impl RequestHandler for ArcHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        self.0
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An ExternalName Service's name is an alias (CNAME) of its `externalName`, for any
    /// type asked, and a name inside the cluster domain it points at follows it.
    #[tokio::test]
    async fn external_names_are_aliases() {
        let services = BTreeMap::from([
            (
                "default/ext".to_string(),
                json!({"spec": {"type": "ExternalName", "externalName": "example.test"}}),
            ),
            (
                "default/inner".to_string(),
                json!({"spec": {"type": "ExternalName", "externalName": "web.default.svc.cluster.local"}}),
            ),
            (
                "default/web".to_string(),
                json!({"spec": {"clusterIP": "127.240.0.5"}}),
            ),
        ]);
        let dns = ClusterDns::new("cluster.local");
        dns.set_zone(Zone::build("cluster.local", &services, &BTreeMap::new()));
        for rtype in [RecordType::A, RecordType::AAAA, RecordType::CNAME] {
            let name = Name::from_ascii("ext.default.svc.cluster.local.").unwrap();
            let out = dns.lookup(&name, rtype).await;
            assert_eq!(out.code, ResponseCode::NoError, "{rtype}");
            assert!(
                matches!(&out.answers[0].data, RData::CNAME(t) if t.0.to_ascii() == "example.test."),
                "{rtype}: {:?}",
                out.answers
            );
        }
        let inner = Name::from_ascii("inner.default.svc.cluster.local.").unwrap();
        let out = dns.lookup(&inner, RecordType::A).await;
        assert_eq!(out.answers.len(), 2, "{:?}", out.answers);
        assert!(
            matches!(&out.answers[1].data, RData::A(a) if a.0 == Ipv4Addr::new(127, 240, 0, 5))
        );
    }

    /// The apex, `svc.`, `pod.` and a namespace's `<ns>.svc.` exist without records of
    /// their own (NODATA, the apex with its SOA); an unknown namespace's does not. A UDP
    /// answer over 512 bytes to a query without EDNS says it is truncated.
    #[tokio::test]
    async fn empty_names_exist_and_big_answers_are_truncated() {
        let many: Vec<Value> = (1..=40)
            .map(|i| json!({"ip": format!("127.64.1.{i}")}))
            .collect();
        let services = BTreeMap::from([(
            "default/many".to_string(),
            json!({"spec": {"clusterIP": "None"}}),
        )]);
        let endpoints = BTreeMap::from([(
            "default/many".to_string(),
            json!({"subsets": [{"addresses": many}]}),
        )]);
        let dns = ClusterDns::new("cluster.local");
        dns.set_zone(Zone::build("cluster.local", &services, &endpoints));
        let ask = |name: &str, rtype| {
            let name = Name::from_ascii(name).unwrap();
            let dns = dns.clone();
            async move { dns.lookup(&name, rtype).await }
        };
        let apex = ask("cluster.local.", RecordType::SOA).await;
        assert_eq!(apex.code, ResponseCode::NoError);
        assert!(
            matches!(apex.answers[0].data, RData::SOA(_)),
            "{:?}",
            apex.answers
        );
        for name in [
            "cluster.local.",
            "svc.cluster.local.",
            "pod.cluster.local.",
            "default.svc.cluster.local.",
        ] {
            let out = ask(name, RecordType::A).await;
            assert_eq!(
                (out.code, out.answers.len()),
                (ResponseCode::NoError, 0),
                "{name}"
            );
        }
        assert_eq!(
            ask("nowhere.svc.cluster.local.", RecordType::A).await.code,
            ResponseCode::NXDomain
        );
        let q = query_bytes(7, "many.default.svc.cluster.local", 1);
        let mut fast = Vec::new();
        assert!(
            !dns.fast_answer(&q, &mut fast),
            "the fast path sent {} bytes",
            fast.len()
        );
        let reply = dns.respond(&q).await.unwrap();
        assert!(reply.len() <= 512, "{}", reply.len());
        assert!(Message::from_vec(&reply).unwrap().metadata.truncation);
    }

    #[test]
    fn zone_from_services_and_endpoints() {
        let services = BTreeMap::from([
            (
                "default/web".to_string(),
                json!({"spec": {"clusterIP": "127.240.0.5", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}),
            ),
            (
                "prod/db".to_string(),
                json!({"spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}}),
            ),
        ]);
        let endpoints = BTreeMap::from([(
            "prod/db".to_string(),
            json!({"subsets": [{"addresses": [{"ip": "127.64.0.9"}, {"ip": "127.64.0.3"}], "notReadyAddresses": [{"ip": "127.64.0.4"}]}]}),
        )]);
        let z = Zone::build("cluster.local", &services, &endpoints);
        assert_eq!(
            z.a[&wire_name("web.default.svc.cluster.local.")],
            vec![Ipv4Addr::new(127, 240, 0, 5)]
        );
        assert_eq!(
            z.a[&wire_name("db.prod.svc.cluster.local.")],
            vec![Ipv4Addr::new(127, 64, 0, 3), Ipv4Addr::new(127, 64, 0, 9)]
        );
        assert_eq!(
            z.srv["_http._tcp.web.default.svc.cluster.local."],
            vec![(80, "web.default.svc.cluster.local.".to_string())]
        );
        assert_eq!(z.srv["_pg._tcp.db.prod.svc.cluster.local."][0].0, 5432);
        let dns = ClusterDns::new("cluster.local");
        dns.set_zone(z);
        let web = Some(Ipv4Addr::new(127, 240, 0, 5));
        assert_eq!(dns.resolve("web", "default"), web);
        assert_eq!(dns.resolve("web.default", "prod"), web);
        assert_eq!(dns.resolve("web.default.svc.cluster.local", "x"), web);
        assert_eq!(dns.resolve("WEB.default.svc.cluster.local.", "x"), web);
        assert_eq!(
            dns.resolve("web", "prod"),
            None,
            "another namespace's search path"
        );
        assert_eq!(
            dns.resolve("db", "prod"),
            Some(Ipv4Addr::new(127, 64, 0, 3))
        );
        assert_eq!(dns.resolve("example.com", "default"), None);
    }

    fn query_bytes(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        q.extend_from_slice(&wire_name(name));
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        q
    }

    #[tokio::test]
    async fn udp_fast_and_general_paths_agree() {
        let services = BTreeMap::from([(
            "default/web".to_string(),
            json!({"spec": {"clusterIP": "127.240.0.5", "ports": [{"name": "http", "port": 80}]}}),
        )]);
        let dns = ClusterDns::new("cluster.local");
        dns.set_zone(Zone::build("cluster.local", &services, &BTreeMap::new()));
        // Mixed case, as resolvers using 0x20 randomisation send it.
        let q = query_bytes(0x1234, "Web.DEFAULT.svc.cluster.local.", 1);
        let mut out = Vec::new();
        assert!(dns.fast_answer(&q, &mut out));
        let fast = Message::from_vec(&out).unwrap();
        let general = Message::from_vec(&dns.respond(&q).await.unwrap()).unwrap();
        for m in [&fast, &general] {
            assert_eq!(m.metadata.id, 0x1234);
            assert!(m.metadata.authoritative);
            assert_eq!(
                m.queries[0].name().to_ascii(),
                "Web.DEFAULT.svc.cluster.local."
            );
            assert_eq!(m.answers.len(), 1);
            assert_eq!(
                m.answers[0].data,
                RData::A(A(Ipv4Addr::new(127, 240, 0, 5)))
            );
        }
        // Other types, unknown names and junk take the general path.
        assert!(!dns.fast_answer(
            &query_bytes(1, "web.default.svc.cluster.local.", 28),
            &mut out
        ));
        let nx = query_bytes(2, "nope.default.svc.cluster.local.", 1);
        assert!(!dns.fast_answer(&nx, &mut out));
        let nx = Message::from_vec(&dns.respond(&nx).await.unwrap()).unwrap();
        assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
        assert!(!dns.fast_answer(&[0xff; 40], &mut out));
        let formerr = Message::from_vec(
            &dns.respond(&[
                0xab, 0xcd, 0xff, 0xff, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1,
            ])
            .await
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            (formerr.metadata.id, formerr.metadata.response_code),
            (0xabcd, ResponseCode::FormErr)
        );
        assert!(dns.respond(&[1, 2, 3]).await.is_none());
    }
}
