//! Container pods against Wasm pods on one agent: pod create → Running and → serving its
//! first HTTP response (p50/p99), and memory per idle pod, for the same trivial HTTP
//! service: the hello-http Wasm component, and busybox `httpd` in a container.
//!
//! `cargo bench -p wk --bench containers` (root, runc, busybox-static, samples built).
//! Starts the release `wk server --no-controllers` and one `wk agent`; pods are bound
//! directly (`spec.nodeName`). After one warm-up pod per runtime (compilation, layer
//! unpacking), 20 pods per runtime are created one at a time (each once the previous
//! serves: single-pod latency), then a burst of `WK_BENCH_PODS` (default 50) by 4
//! concurrent clients. Running comes from a watch, serving from polling the pod IP every
//! 2 ms. Memory: the agent's RSS growth per pod, plus, for containers, what their
//! memory cgroups are charged (processes, page cache, kernel memory) per pod.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

mod common;

use common::{Proc, WK, percentile_ms, rss_kib, start_agent, start_server};

/// Bytes charged to the memory cgroups of the agent's containers (`/wk/<id>`).
fn container_cgroups_bytes() -> u64 {
    let mut total = 0;
    for base in ["/sys/fs/cgroup/memory/wk", "/sys/fs/cgroup/wk"] {
        let Ok(rd) = std::fs::read_dir(base) else {
            continue;
        };
        for e in rd.flatten() {
            for f in ["memory.usage_in_bytes", "memory.current"] {
                if let Ok(t) = std::fs::read_to_string(e.path().join(f)) {
                    total += t.trim().parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    total
}

/// A `wk agent`, stopped with SIGTERM (so it removes its containers) when dropped.
struct Agent(Proc);

impl Drop for Agent {
    fn drop(&mut self) {
        let child = &mut self.0.0;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        for _ in 0..500 {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

struct Batch {
    running: Vec<Duration>,
    serving: Vec<Duration>,
    agent_kib_per_pod: f64,
    cgroup_kib_per_pod: f64,
}

/// Creates `n` pods with `creators` concurrent clients; with one creator, each pod is
/// created once the previous one serves (single-pod latency).
async fn batch(
    c: &wk_client::Client,
    agent_pid: u32,
    runtime: &str,
    n: usize,
    creators: usize,
    pod: Arc<dyn Fn(&str) -> Value + Send + Sync>,
) -> Batch {
    let pods = wk_api::resource::lookup("pods").unwrap();
    let rss0 = rss_kib(agent_pid);
    let cg0 = container_cgroups_bytes();
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let running: Arc<Mutex<HashMap<String, Duration>>> = Arc::default();
    let serving: Arc<Mutex<HashMap<String, Duration>>> = Arc::default();
    let list = c
        .list(pods, None, false, &Default::default())
        .await
        .unwrap();
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .map(String::from);
    let p = wk_client::ListParams {
        resource_version: rv,
        ..Default::default()
    };
    let mut events = Box::pin(c.watch(pods, None, false, &p, false).await.unwrap());
    let (cr, ru, se) = (created.clone(), running.clone(), serving.clone());
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let watcher = tokio::spawn(async move {
        while let Some(Ok(ev)) = events.next().await {
            let o = ev.object;
            let name = o["metadata"]["name"].as_str().unwrap_or("").to_string();
            let Some(t0) = cr.lock().unwrap().get(&name).copied() else {
                continue;
            };
            if o["status"]["phase"] != "Running" || ru.lock().unwrap().contains_key(&name) {
                continue;
            }
            ru.lock().unwrap().insert(name.clone(), t0.elapsed());
            let ip = o["status"]["podIP"].as_str().unwrap_or("").to_string();
            let (se, http) = (se.clone(), http.clone());
            tokio::spawn(async move {
                let url = format!("http://{ip}:8080/");
                loop {
                    if let Ok(r) = http.get(&url).send().await {
                        if r.status().is_success() {
                            se.lock().unwrap().insert(name, t0.elapsed());
                            return;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            });
        }
    });
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..creators {
        let (c, next, created, pod) = (c.clone(), next.clone(), created.clone(), pod.clone());
        let serving = serving.clone();
        let runtime = runtime.to_string();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let name = format!("{runtime}-{i}");
                created.lock().unwrap().insert(name.clone(), Instant::now());
                c.create(pods, None, &pod(&name), &[]).await.unwrap();
                while creators == 1 && !serving.lock().unwrap().contains_key(&name) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let start = Instant::now();
    while serving.lock().unwrap().len() < n {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "{runtime} pods did not all serve"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watcher.abort();
    // Idle: let start-up garbage settle before measuring.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss1 = rss_kib(agent_pid);
    let cg1 = container_cgroups_bytes();
    let out = Batch {
        running: running.lock().unwrap().values().copied().collect(),
        serving: serving.lock().unwrap().values().copied().collect(),
        agent_kib_per_pod: rss1.saturating_sub(rss0) as f64 / n as f64,
        cgroup_kib_per_pod: cg1.saturating_sub(cg0) as f64 / 1024.0 / n as f64,
    };
    // Remove the batch before the next one.
    for i in 0..n {
        let _ = c
            .delete(
                pods,
                None,
                &format!("{runtime}-{i}"),
                &json!({"gracePeriodSeconds": 0}),
            )
            .await;
    }
    while c
        .list(pods, None, false, &Default::default())
        .await
        .unwrap()["items"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    out
}

fn main() {
    let n = common::env_usize("WK_BENCH_PODS", 50);
    let wasm = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../samples/dist/hello-http.wasm");
    assert!(wasm.exists(), "run scripts/build-samples.sh first");
    let wasm = wasm.canonicalize().unwrap().display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("config");
    let _server = start_server(
        &dir.path().join("server"),
        &kubeconfig,
        &["--no-controllers"],
    );
    // The busybox image, imported into the agent's store.
    let agent_dir = dir.path().join("agent");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let layer =
        wk_runtime_oci::archive::busybox_layer(Path::new("/bin/busybox"), &["sh", "echo", "httpd"])
            .expect("busybox-static installed");
    let config = wk_runtime_oci::store::ImageConfig {
        cmd: vec!["sh".into()],
        ..Default::default()
    };
    let archive = dir.path().join("busybox.tar");
    wk_runtime_oci::archive::write_oci_archive(&archive, "wk.bench/busybox:1", &config, &[layer])
        .unwrap();
    let st = Command::new(WK)
        .args(["image", "import"])
        .arg(&archive)
        .arg("--data-dir")
        .arg(&agent_dir)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let agent = Agent(start_agent(
        &kubeconfig,
        &agent_dir,
        &[
            "--dns-listen",
            "127.0.0.1:0",
            "--max-pods",
            &(n + 10).to_string(),
        ],
    ));
    let pid = agent.0.0.id();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let c = wk_client::Client::from_path(&kubeconfig).unwrap();
        let nodes = wk_api::resource::lookup("nodes").unwrap();
        loop {
            if let Ok(Some(node)) = c.get_opt(nodes, None, "bench").await {
                assert_eq!(node["metadata"]["annotations"]["wk.dev/runtimes"], "wasm,oci", "runc must work here");
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let w = wasm.clone();
        let wasm_pod: Arc<dyn Fn(&str) -> Value + Send + Sync> = Arc::new(move |name| json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": "bench", "runtimeClassName": "wasm", "containers": [{"name": "hello", "image": w, "ports": [{"containerPort": 8080}]}]}}));
        let oci_pod: Arc<dyn Fn(&str) -> Value + Send + Sync> = Arc::new(|name| json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": "bench", "runtimeClassName": "oci", "containers": [{"name": "httpd", "image": "wk.bench/busybox:1", "ports": [{"containerPort": 8080}],
                "command": ["sh", "-c", "echo hello > /www/index.html; exec httpd -f -p 8080 -h /www"]}]}}));
        // Warm-up: the component's compilation and the layer's unpacking happen once.
        batch(&c, pid, "wasm", 1, 1, wasm_pod.clone()).await;
        batch(&c, pid, "oci", 1, 1, oci_pod.clone()).await;
        let seq = 20.min(n);
        let mut ws = batch(&c, pid, "wasm", seq, 1, wasm_pod.clone()).await;
        let mut cs = batch(&c, pid, "oci", seq, 1, oci_pod.clone()).await;
        let mut wb = batch(&c, pid, "wasm", n, 4, wasm_pod).await;
        let mut cb = batch(&c, pid, "oci", n, 4, oci_pod).await;
        println!("| runtime | one at a time ({seq} pods): create → Running p50 / p99 | one at a time: create → serving p50 / p99 | burst of {n}, 4 creators: create → serving p50 / p99 | memory per idle pod ({n} pods) |");
        println!("|---|---|---|---|---|");
        println!("| Wasm (hello-http) | {:.1} / {:.1} ms | {:.1} / {:.1} ms | {:.1} / {:.1} ms | {:.1} KiB (agent RSS) |",
            percentile_ms(&mut ws.running, 0.5), percentile_ms(&mut ws.running, 0.99), percentile_ms(&mut ws.serving, 0.5), percentile_ms(&mut ws.serving, 0.99),
            percentile_ms(&mut wb.serving, 0.5), percentile_ms(&mut wb.serving, 0.99), wb.agent_kib_per_pod);
        println!("| container (busybox httpd, runc) | {:.1} / {:.1} ms | {:.1} / {:.1} ms | {:.1} / {:.1} ms | {:.1} KiB ({:.1} KiB cgroup + {:.1} KiB agent RSS) |",
            percentile_ms(&mut cs.running, 0.5), percentile_ms(&mut cs.running, 0.99), percentile_ms(&mut cs.serving, 0.5), percentile_ms(&mut cs.serving, 0.99),
            percentile_ms(&mut cb.serving, 0.5), percentile_ms(&mut cb.serving, 0.99),
            cb.cgroup_kib_per_pod + cb.agent_kib_per_pod, cb.cgroup_kib_per_pod, cb.agent_kib_per_pod);
        println!("| container / Wasm | {:.1}× | {:.1}× | {:.1}× | {:.1}× |",
            percentile_ms(&mut cs.running, 0.5) / percentile_ms(&mut ws.running, 0.5), percentile_ms(&mut cs.serving, 0.5) / percentile_ms(&mut ws.serving, 0.5),
            percentile_ms(&mut cb.serving, 0.5) / percentile_ms(&mut wb.serving, 0.5),
            (cb.cgroup_kib_per_pod + cb.agent_kib_per_pod) / wb.agent_kib_per_pod.max(0.1));
    });
    drop(agent);
}
