//! Node agent benchmark: pod create → Running and → Ready latency on one agent, and the
//! agent's RSS with 0 and with N hello-http pods.
//!
//! `cargo bench -p wk --bench pods` (after `scripts/build-samples.sh`). Starts the release
//! `wk server --no-controllers` and one `wk agent` as processes; pods are bound directly
//! (`spec.nodeName`) so the figures are the agent's, not the scheduler's. `WK_BENCH_PODS`
//! (default 1000) pods are created by 8 concurrent clients; latencies come from a watch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;

mod common;

use common::{percentile_ms, rss_kib, start_agent, start_server};

fn main() {
    let n = common::env_usize("WK_BENCH_PODS", 1000);
    let image = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../samples/dist/hello-http.wasm");
    assert!(image.exists(), "run scripts/build-samples.sh first");
    let image = image.canonicalize().unwrap().display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("config");
    let _server = start_server(
        &dir.path().join("server"),
        &kubeconfig,
        &["--no-controllers"],
    );
    let agent = start_agent(
        &kubeconfig,
        &dir.path().join("agent"),
        &["--max-pods", &(n + 10).to_string()],
    );
    let agent_pid = agent.0.id();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let c = wk_client::Client::from_path(&kubeconfig).unwrap();
        let nodes = wk_api::resource::lookup("nodes").unwrap();
        while c.get_opt(nodes, None, "bench").await.ok().flatten().is_none() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle = rss_kib(agent_pid);
        let pods = wk_api::resource::lookup("pods").unwrap();
        // Watch transitions.
        let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let running: Arc<Mutex<HashMap<String, Duration>>> = Arc::default();
        let ready: Arc<Mutex<HashMap<String, Duration>>> = Arc::default();
        let list = c.list(pods, None, false, &Default::default()).await.unwrap();
        let rv = list["metadata"]["resourceVersion"].as_str().map(String::from);
        let p = wk_client::ListParams { resource_version: rv, ..Default::default() };
        let mut events = Box::pin(c.watch(pods, None, false, &p, false).await.unwrap());
        let (cr, ru, re) = (created.clone(), running.clone(), ready.clone());
        let watcher = tokio::spawn(async move {
            while let Some(Ok(ev)) = events.next().await {
                let o = ev.object;
                let name = o["metadata"]["name"].as_str().unwrap_or("").to_string();
                let Some(t0) = cr.lock().unwrap().get(&name).copied() else { continue };
                if o["status"]["phase"] == "Running" {
                    ru.lock().unwrap().entry(name.clone()).or_insert_with(|| t0.elapsed());
                }
                let is_ready = o["status"]["conditions"].as_array().is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
                if is_ready {
                    re.lock().unwrap().entry(name).or_insert_with(|| t0.elapsed());
                }
            }
        });
        let start = Instant::now();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (c, next, created, image) = (c.clone(), next.clone(), created.clone(), image.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let name = format!("p{i}");
                    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                        "spec": {"nodeName": "bench", "runtimeClassName": "wasm",
                            "containers": [{"name": "hello", "image": image, "ports": [{"containerPort": 8080}]}]}});
                    created.lock().unwrap().insert(name, Instant::now());
                    c.create(pods, None, &pod, &[]).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        while ready.lock().unwrap().len() < n {
            assert!(start.elapsed() < Duration::from_secs(600), "pods did not all become Ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let all_ready = start.elapsed();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let full = rss_kib(agent_pid);
        watcher.abort();
        let mut run: Vec<Duration> = running.lock().unwrap().values().copied().collect();
        let mut rdy: Vec<Duration> = ready.lock().unwrap().values().copied().collect();
        println!("| metric | value |");
        println!("|---|---|");
        println!("| pods | {n} hello-http pods, 8 concurrent creators, one agent |");
        println!("| create → Running | p50 {:.1} ms, p99 {:.1} ms |", percentile_ms(&mut run, 0.5), percentile_ms(&mut run, 0.99));
        println!("| create → Ready | p50 {:.1} ms, p99 {:.1} ms |", percentile_ms(&mut rdy, 0.5), percentile_ms(&mut rdy, 0.99));
        println!("| all {n} Ready after | {:.2} s ({:.0} pods/s) |", all_ready.as_secs_f64(), n as f64 / all_ready.as_secs_f64());
        println!("| agent RSS, 0 pods | {:.1} MiB |", idle as f64 / 1024.0);
        println!("| agent RSS, {n} pods Ready | {:.1} MiB ({:.1} KiB per pod) |", full as f64 / 1024.0, (full.saturating_sub(idle)) as f64 / n as f64);
    });
    drop(agent);
}
