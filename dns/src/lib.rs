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

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::{A, SOA, SRV};
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
    a: HashMap<String, Vec<Ipv4Addr>>,
    srv: HashMap<String, Vec<(u16, String)>>,
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
            let fqdn = format!("{name}.{ns}.svc.{domain}.").to_ascii_lowercase();
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
            z.a.insert(fqdn.clone(), ips);
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
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let upstream = match TokioResolver::builder_tokio().and_then(|b| b.build()) {
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
        if let Some(ips) = zone.a.get(&key) {
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
        // `<a-b-c-d>.<ns>.pod.<domain>.`
        let labels: Vec<&str> = key.trim_end_matches('.').split('.').collect();
        let domain_labels = self.domain.split('.').count();
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
        candidates
            .iter()
            .find_map(|c| zone.a.get(c).and_then(|ips| ips.first().copied()))
    }

    fn in_domain(&self, name: &Name) -> bool {
        self.origin.zone_of(&name.to_lowercase())
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
        let name = query.name().clone();
        let rtype = query.query_type();
        let mut answers = Vec::new();
        let mut soa = Vec::new();
        if self.in_domain(&name) {
            meta.authoritative = true;
            match self.cluster_answer(&name, rtype) {
                Some(records) => {
                    if records.is_empty() {
                        soa.push(self.soa());
                    }
                    answers = records;
                }
                None => {
                    meta.response_code = ResponseCode::NXDomain;
                    soa.push(self.soa());
                }
            }
        } else {
            match &self.upstream {
                Some(resolver) => match resolver.lookup(name.clone(), rtype).await {
                    Ok(lookup) => answers = lookup.answers().to_vec(),
                    Err(e) if e.is_nx_domain() => meta.response_code = ResponseCode::NXDomain,
                    Err(e) if e.is_no_records_found() => {}
                    Err(e) => {
                        tracing::debug!(name = %name, error = %e, "upstream lookup failed");
                        meta.response_code = ResponseCode::ServFail;
                    }
                },
                None => meta.response_code = ResponseCode::ServFail,
            }
        }
        let response = builder.build(meta, answers.iter(), [], soa.iter(), []);
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

/// Serves `dns` on UDP and TCP at `addr` (port 0 picks one) until the process ends;
/// returns the address bound.
pub async fn serve(dns: Arc<ClusterDns>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let udp = tokio::net::UdpSocket::bind(addr).await?;
    let bound = udp.local_addr()?;
    let tcp = tokio::net::TcpListener::bind(bound).await?;
    let mut server = hickory_server::Server::new(ArcHandler(dns));
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5), 64);
    tokio::spawn(async move {
        if let Err(e) = server.block_until_done().await {
            tracing::warn!(error = %e, "DNS server stopped");
        }
    });
    Ok(bound)
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
            z.a["web.default.svc.cluster.local."],
            vec![Ipv4Addr::new(127, 240, 0, 5)]
        );
        assert_eq!(
            z.a["db.prod.svc.cluster.local."],
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
}
