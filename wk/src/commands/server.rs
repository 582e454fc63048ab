//! `wk server`: run a control-plane server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use wk_controlplane::server::{Server, ServerConfig};

#[derive(clap::Args)]
pub struct Args {
    /// Where the Raft log, state and keys live
    #[arg(long, default_value = "/var/lib/wk")]
    data_dir: PathBuf,
    /// Address to serve the API on (HTTPS)
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Extra DNS names or IPs for the serving certificate
    #[arg(long = "tls-san")]
    tls_sans: Vec<String>,
    /// Raft node id of this server
    #[arg(long, default_value_t = 1)]
    node_id: u64,
    /// Build a snapshot and compact the log after this many entries
    #[arg(long, default_value_t = 10_000)]
    snapshot_every: u64,
    /// Events kept for watch resumption (older resourceVersions get 410 Gone)
    #[arg(long, default_value_t = 10_000)]
    watch_history: usize,
    /// Do not write the admin client config
    #[arg(long)]
    no_client_config: bool,
    /// Do not run the scheduler and controllers
    #[arg(long)]
    no_controllers: bool,
    /// Range Service cluster IPs are allocated from (the default is local on one host)
    #[arg(long, default_value = "127.240.0.0/16")]
    service_cidr: wk_controlplane::apiserver::ipalloc::ServiceCidr,
    /// Join the cluster of this server (any member's URL) instead of starting one
    #[arg(long, requires_all = ["token", "ca_file"])]
    join: Option<String>,
    /// With --join: the cluster's admin or peer token (tokens.json of a member)
    #[arg(long, env = "WK_TOKEN")]
    token: Option<String>,
    /// With --join: the cluster CA certificate (pki/ca.crt of a member)
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

pub async fn run(args: Args, kubeconfig: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let client_config = if args.no_client_config {
        None
    } else {
        Some(kubeconfig.unwrap_or_else(wk_client::default_config_path))
    };
    let join = match &args.join {
        Some(url) => {
            let ca = args
                .ca_file
                .as_ref()
                .expect("clap requires --ca-file with --join");
            Some(wk_controlplane::server::Join {
                url: url.clone(),
                token: args.token.clone().unwrap_or_default(),
                ca_pem: std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?,
            })
        }
        None => None,
    };
    let server = Server::start(ServerConfig {
        data_dir: args.data_dir.clone(),
        listen: args.listen,
        client_config: client_config.clone(),
        tls_sans: args.tls_sans,
        node_id: args.node_id,
        snapshot_every: args.snapshot_every,
        watch_history: args.watch_history,
        controllers: !args.no_controllers,
        service_cidr: args.service_cidr,
        join,
    })
    .await
    .context("cannot start the server")?;
    tracing::info!(url = %server.url, data_dir = %args.data_dir.display(), "wk server ready");
    // One line on stdout that scripts and tests can wait for.
    println!("wk server listening on {}", server.url);
    if let Some(p) = client_config {
        println!("client config written to {}", p.display());
    }
    server.serve(shutdown_signal()).await;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
