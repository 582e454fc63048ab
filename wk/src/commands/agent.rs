//! `wk agent`: run a node agent against a control plane.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use wk_client::{Client, ClientConfig};
use wk_nodeagent::{Agent, AgentConfig};

#[derive(clap::Args)]
pub struct Args {
    /// API server URL (https://host:port; several, comma-separated, to fail over between
    /// control-plane servers); without it the client config is used
    #[arg(long)]
    server: Option<String>,
    /// Node join token (printed in <server data dir>/tokens.json as "node")
    #[arg(long, env = "WK_TOKEN")]
    token: Option<String>,
    /// CA certificate of the cluster (PEM), for --server
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Node name [default: the host name]
    #[arg(long)]
    name: Option<String>,
    /// Node labels, key=value (repeatable)
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Where pods' volumes, logs and the compile cache live
    #[arg(long, default_value = "/var/lib/wk-agent")]
    data_dir: PathBuf,
    /// Most pods this node runs at once
    #[arg(long, default_value_t = wk_nodeagent::DEFAULT_MAX_PODS)]
    max_pods: u64,
    /// Where the node's cluster DNS listens (UDP and TCP; port 0 picks one), or "none"
    #[arg(long, default_value = "127.0.0.1:53")]
    dns_listen: String,
    /// The cluster domain the node's DNS serves
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Where the node's DNS forwards other names (ip:port, repeatable) [default: the
    /// host's resolvers]
    #[arg(long)]
    dns_upstream: Vec<std::net::SocketAddr>,
    /// Hand Service connections for this node's own Wasm pods straight to the runtime
    /// (no socket hop)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    proxy_short_circuit: bool,
    /// Most connections the balancer proxies at once per Service port (more are refused)
    #[arg(long, default_value_t = wk_nodeagent::proxy::MAX_CONNECTIONS)]
    proxy_max_connections: usize,
    /// Splice bulk transfers through the balancer (kernel to kernel) instead of copying
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    proxy_splice: bool,
    /// This node's address (InternalIP): where other nodes route its pods and NodePorts
    /// listen
    #[arg(long, default_value = "127.0.0.1")]
    node_ip: std::net::Ipv4Addr,
    /// Pod address range of this node [default: a /16 of 127.0.0.0/8 from the node name,
    /// which needs no setup on one host]; with another range, pod addresses go on the
    /// loopback interface and each node's range is routed via its node IP
    #[arg(long)]
    pod_cidr: Option<wk_api::net::Cidr>,
    /// The runc binary for container pods (runtimeClassName: oci), or "none"; the node
    /// offers containers only when it works
    #[arg(long, default_value = "runc")]
    runc: String,
    /// A registry (host:port) to reach over plain HTTP (repeatable)
    #[arg(long = "insecure-registry")]
    insecure_registries: Vec<String>,
    /// Image GC starts when the image store's disk is fuller than this (percent)
    #[arg(long, default_value_t = 85, value_parser = clap::value_parser!(u8).range(1..=100))]
    image_gc_high_threshold: u8,
    /// ...and removes least recently used images until it is under this (percent)
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u8).range(0..=100))]
    image_gc_low_threshold: u8,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

pub async fn run(args: Args, kubeconfig: &std::path::Path) -> anyhow::Result<ExitCode> {
    let client = match &args.server {
        Some(server) => {
            let ca_pem = match &args.ca_file {
                Some(p) => {
                    Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?)
                }
                None => None,
            };
            // Several servers (comma-separated): the agent falls over to the next one.
            let mut urls = server
                .split(',')
                .map(|s| s.trim().trim_end_matches('/').to_string())
                .filter(|s| !s.is_empty());
            Client::new(ClientConfig {
                server: urls.next().unwrap_or_default(),
                servers: urls.collect(),
                token: args.token.clone(),
                ca_pem,
                insecure: false,
                namespace: "default".into(),
            })?
        }
        None => super::client(kubeconfig)?,
    };
    let name = match args.name {
        Some(n) => n,
        None => std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "node".into()),
    };
    let client = wk_nodeagent::node_client(&client, &name)
        .await
        .context("cannot obtain the node's credential (is the join token right?)")?;
    let mut cfg = AgentConfig::new(name.clone(), args.data_dir);
    cfg.labels = args.labels.into_iter().collect();
    cfg.max_pods = args.max_pods;
    cfg.dns_listen =
        match args.dns_listen.as_str() {
            "none" => None,
            a => Some(a.parse().with_context(|| {
                format!("--dns-listen {a:?} is not an address like 127.0.0.1:53")
            })?),
        };
    cfg.cluster_domain = args.cluster_domain;
    cfg.dns_upstream = args.dns_upstream;
    cfg.proxy_short_circuit = args.proxy_short_circuit;
    cfg.proxy_max_connections = args.proxy_max_connections;
    cfg.proxy_splice = args.proxy_splice;
    cfg.node_ip = args.node_ip;
    if let Some(range) = args.pod_cidr {
        cfg.pod_cidr = range;
    }
    cfg.runc = (args.runc != "none").then(|| PathBuf::from(&args.runc));
    cfg.insecure_registries = args.insecure_registries;
    if args.image_gc_low_threshold > args.image_gc_high_threshold {
        anyhow::bail!("--image-gc-low-threshold must not be above --image-gc-high-threshold");
    }
    cfg.image_gc_high = args.image_gc_high_threshold;
    cfg.image_gc_low = args.image_gc_low_threshold;
    // The API server presents the node token when it proxies logs.
    cfg.log_token = args.token.clone();
    let agent = Agent::new(client, cfg).context("cannot start the agent")?;
    println!("wk agent {name} starting");
    agent.run(shutdown_signal()).await.context("agent failed")?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
