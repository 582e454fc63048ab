//! `wk up` / `wk down`: a whole local cluster (control plane + one agent) in one process,
//! with its data in a project-local directory, and optional hot redeploy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde_json::json;
use wk_api::resource::lookup;
use wk_controlplane::server::{Server, ServerConfig};
use wk_nodeagent::{Agent, AgentConfig};

#[derive(clap::Args)]
pub struct Args {
    /// Where the cluster keeps its state (resumed by the next `wk up`)
    #[arg(long, default_value = ".wk")]
    data_dir: PathBuf,
    /// API address
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Manifests to apply once the cluster is up (file or directory, repeatable)
    #[arg(short = 'f', long = "apply")]
    apply: Vec<PathBuf>,
    /// Re-apply manifests and restart workloads when files under this path change
    #[arg(long)]
    watch: Option<PathBuf>,
    /// Node name of the built-in agent
    #[arg(long, default_value = "local")]
    node_name: String,
}

#[derive(clap::Args)]
pub struct DownArgs {
    /// The data directory `wk up` used
    #[arg(long, default_value = ".wk")]
    data_dir: PathBuf,
}

pub async fn run(args: Args, kubeconfig: &Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let pidfile = args.data_dir.join("up.pid");
    std::fs::write(&pidfile, std::process::id().to_string()).context("writing the pid file")?;
    let server = Server::start(ServerConfig {
        data_dir: args.data_dir.join("server"),
        listen: args.listen,
        client_config: Some(kubeconfig.to_path_buf()),
        tls_sans: vec![],
        node_id: 1,
        snapshot_every: 10_000,
        watch_history: 10_000,
        controllers: true,
        service_cidr: wk_controlplane::apiserver::ipalloc::default_service_cidr(),
        join: None,
    })
    .await
    .context("cannot start the control plane")?;
    let client = server.admin_client().map_err(|e| anyhow::anyhow!(e))?;
    let url = server.url.clone();
    let node_token = server.tokens.node.clone();
    let serving = tokio::spawn(server.serve(shutdown_signal()));
    let mut agent_cfg = AgentConfig::new(args.node_name.clone(), args.data_dir.join("agent"));
    agent_cfg.log_token = Some(node_token);
    let agent_client = wk_nodeagent::node_client(&client, &args.node_name)
        .await
        .context("cannot obtain the node's credential")?;
    let agent = Agent::new(agent_client, agent_cfg).context("cannot start the agent")?;
    let agent_task = tokio::spawn(agent.run(std::future::pending()));
    println!(
        "wk up: control plane at {url}, node {:?} ready to run pods",
        args.node_name
    );
    println!(
        "client config: {} (wk and kubectl use it)",
        kubeconfig.display()
    );
    if !args.apply.is_empty() {
        apply(&client, &args.apply).await?;
        report_endpoints(&client).await;
    }
    println!(
        "\nWhat now:\n  wk get pods -o wide            # pods and their IPs\n  curl http://<pod IP>:<port>/    # reach a pod\n  wk down (or Ctrl-C)             # stop; the next `wk up` resumes"
    );
    if let Some(path) = args.watch.clone() {
        let c = client.clone();
        tokio::spawn(async move { watch(c, path).await });
    }
    let _ = serving.await;
    agent_task.abort();
    let _ = std::fs::remove_file(&pidfile);
    println!("wk up: stopped");
    Ok(ExitCode::SUCCESS)
}

async fn apply(client: &wk_client::Client, paths: &[PathBuf]) -> anyhow::Result<()> {
    let docs = super::read_manifests(paths)?;
    super::apply::apply_docs(client, docs, None, "Strict", false).await?;
    Ok(())
}

/// Prints where each Deployment's pods serve once they are ready (up to 30 s).
async fn report_endpoints(client: &wk_client::Client) {
    let deploy = lookup("deploy").expect("deploy");
    let pods = lookup("pods").expect("pods");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let Ok(list) = client.list(deploy, None, true, &Default::default()).await else {
            return;
        };
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let ready = items.iter().all(|d| {
            d["status"]["availableReplicas"].as_i64().unwrap_or(0)
                >= d["spec"]["replicas"].as_i64().unwrap_or(1)
        });
        if ready || tokio::time::Instant::now() > deadline {
            let Ok(p) = client.list(pods, None, true, &Default::default()).await else {
                return;
            };
            for pod in p["items"].as_array().cloned().unwrap_or_default() {
                let ip = pod["status"]["podIP"].as_str().unwrap_or("");
                for c in pod["spec"]["containers"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                {
                    for port in c["ports"].as_array().cloned().unwrap_or_default() {
                        if !ip.is_empty() {
                            println!(
                                "  {} serves http://{ip}:{}/",
                                pod["metadata"]["name"].as_str().unwrap_or(""),
                                port["containerPort"]
                            );
                        }
                    }
                }
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn scan(path: &Path, out: &mut HashMap<PathBuf, SystemTime>) {
    if path.is_dir() {
        if let Ok(entries) = std::fs::read_dir(path) {
            for e in entries.flatten() {
                scan(&e.path(), out);
            }
        }
    } else if let Ok(m) = std::fs::metadata(path).and_then(|m| m.modified()) {
        out.insert(path.to_path_buf(), m);
    }
}

/// Hot redeploy: changed manifests are re-applied; a changed `.wasm` restarts the
/// Deployments whose pods use it (a new template annotation, as `rollout restart` does).
async fn watch(client: wk_client::Client, path: PathBuf) {
    let mut seen = HashMap::new();
    scan(&path, &mut seen);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut now = HashMap::new();
        scan(&path, &mut now);
        let changed: Vec<PathBuf> = now
            .iter()
            .filter(|(p, t)| seen.get(*p) != Some(*t))
            .map(|(p, _)| p.clone())
            .collect();
        seen = now;
        for p in changed {
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            if matches!(ext, "yaml" | "yml" | "json") {
                println!("wk up: {} changed, applying", p.display());
                if let Err(e) = apply(&client, std::slice::from_ref(&p)).await {
                    eprintln!("error: {e:#}");
                }
            } else if ext == "wasm" {
                restart_users(&client, &p).await;
            }
        }
    }
}

async fn restart_users(client: &wk_client::Client, wasm: &Path) {
    let deploy = lookup("deploy").expect("deploy");
    let Ok(list) = client.list(deploy, None, true, &Default::default()).await else {
        return;
    };
    let file = wasm.file_name().and_then(|f| f.to_str()).unwrap_or("");
    for d in list["items"].as_array().cloned().unwrap_or_default() {
        let uses = d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["image"].as_str().is_some_and(|i| i.ends_with(file)))
            });
        if uses {
            let name = d["metadata"]["name"].as_str().unwrap_or("");
            let ns = d["metadata"]["namespace"].as_str();
            let now = jiff::Timestamp::now().to_string();
            let patch = json!({"spec": {"template": {"metadata": {"annotations": {"wk.dev/restartedAt": now}}}}});
            match client
                .patch(
                    deploy,
                    ns,
                    name,
                    "application/merge-patch+json",
                    &patch,
                    &[],
                )
                .await
            {
                Ok(_) => println!(
                    "wk up: {} changed, restarting deployment {name}",
                    wasm.display()
                ),
                Err(e) => eprintln!("error: restarting {name}: {e}"),
            }
        }
    }
}

pub async fn down(args: DownArgs) -> anyhow::Result<ExitCode> {
    let pidfile = args.data_dir.join("up.pid");
    let pid = std::fs::read_to_string(&pidfile).with_context(|| {
        format!(
            "no `wk up` is running here ({} not found)",
            pidfile.display()
        )
    })?;
    let pid = pid.trim().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .context("running kill")?;
    if !status.success() {
        let _ = std::fs::remove_file(&pidfile);
        anyhow::bail!("process {pid} is not running (stale pid file removed)");
    }
    for _ in 0..100 {
        // Gone, or a zombie waiting for its parent: either way it has stopped.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next());
        if matches!(state, None | Some('Z') | Some('X')) {
            println!("wk down: stopped");
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("process {pid} did not stop within 10 s")
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
