//! Scheduler benchmark with hollow nodes (Kubemark's idea): `WK_BENCH_NODES` (default
//! 1000) Node objects that are Ready, advertise the wasm runtime and renew their Leases
//! from this process, but run no agent; then `WK_BENCH_PODS` (default 10000) pods with
//! requests, created by 64 concurrent clients. A watch records when each pod is bound.
//!
//! `cargo bench -p wk --bench scheduler`. Reports bindings committed per second (from
//! the first create to the last binding seen, and over the binding window alone) and
//! create → bound latency, against the goal of 5,000 bindings/s.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;

mod common;

use common::{env_usize, percentile, start_server};

const GOAL: f64 = 5000.0;

fn now_micro() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string()
}

/// Runs `n` jobs, `width` at a time.
async fn fan_out<F, Fut>(n: usize, width: usize, f: F)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..width {
        let (next, f) = (next.clone(), f.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                f(i).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

type Times = Arc<Mutex<HashMap<String, Instant>>>;

/// Records when each pod is first seen bound, from a watch starting at `rv`.
async fn watch_bindings(
    c: &wk_client::Client,
    rv: Option<String>,
) -> (Times, tokio::task::JoinHandle<()>) {
    let pods = wk_api::resource::lookup("pods").unwrap();
    let bound: Times = Arc::default();
    let p = wk_client::ListParams {
        resource_version: rv,
        ..Default::default()
    };
    let mut events = Box::pin(c.watch(pods, None, true, &p, false).await.unwrap());
    let b = bound.clone();
    let task = tokio::spawn(async move {
        while let Some(Ok(ev)) = events.next().await {
            let o = ev.object;
            if o["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty())
            {
                let name = o["metadata"]["name"].as_str().unwrap_or("").to_string();
                b.lock().unwrap().entry(name).or_insert_with(Instant::now);
            }
        }
    });
    (bound, task)
}

/// Creates `n` pods named `{prefix}{i}` with 64 concurrent clients; returns when each
/// create was sent.
async fn create_pods(c: &wk_client::Client, prefix: &str, n: usize) -> Times {
    let pods = wk_api::resource::lookup("pods").unwrap();
    let created: Times = Arc::default();
    let (cc, cr, prefix) = (c.clone(), created.clone(), prefix.to_string());
    fan_out(n, 64, move |i| {
        let (c, created, prefix) = (cc.clone(), cr.clone(), prefix.clone());
        async move {
            let name = format!("{prefix}{i}");
            let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"containers": [{"name": "app", "image": "hello.wasm",
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}});
            created.lock().unwrap().insert(name, Instant::now());
            c.create(pods, None, &pod, &[]).await.unwrap();
        }
    })
    .await;
    created
}

async fn wait_bound(bound: &Times, prefix: &str, n: usize) {
    let start = Instant::now();
    loop {
        let count = bound
            .lock()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with(prefix))
            .count();
        if count >= n {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "pods were not all bound ({count}/{n})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn bound_window(bound: &Times, prefix: &str) -> (Instant, Instant) {
    let b = bound.lock().unwrap();
    let times: Vec<Instant> = b
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, t)| *t)
        .collect();
    (*times.iter().min().unwrap(), *times.iter().max().unwrap())
}

fn main() {
    let nodes_n = env_usize("WK_BENCH_NODES", 1000);
    let pods_n = env_usize("WK_BENCH_PODS", 10000);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("config");
    let data = dir.path().join("server");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    // Phase 1, with the controllers off: the hollow nodes and a backlog of pods.
    let server = start_server(&data, &kubeconfig, &["--no-controllers"]);
    let (backlog_created, backlog_rv) = rt.block_on(async {
        let c = wk_client::Client::from_path(&kubeconfig).unwrap();
        let t = Instant::now();
        let cc = c.clone();
        fan_out(nodes_n, 32, move |i| {
            let c = cc.clone();
            async move {
                let nodes = wk_api::resource::lookup("nodes").unwrap();
                let leases = wk_api::resource::lookup("leases").unwrap();
                let name = format!("hollow-{i:04}");
                let node = json!({"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "zone": format!("z{}", i % 3)},
                                 "annotations": {"wk.dev/runtimes": "wasm"}},
                    "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                               "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                               "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}});
                c.create(nodes, None, &node, &[]).await.unwrap();
                let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": name, "namespace": "kube-node-lease"},
                    "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now_micro()}});
                c.create(leases, Some("kube-node-lease"), &lease, &[]).await.unwrap();
            }
        })
        .await;
        eprintln!("{nodes_n} hollow nodes registered in {:.1} s", t.elapsed().as_secs_f64());
        let t = Instant::now();
        create_pods(&c, "b", pods_n).await;
        let created = t.elapsed();
        let pods = wk_api::resource::lookup("pods").unwrap();
        let lp = wk_client::ListParams { limit: Some(1), ..Default::default() };
        let list = c.list(pods, None, true, &lp).await.unwrap();
        (created, list["metadata"]["resourceVersion"].as_str().map(String::from))
    });
    drop(server);

    // Phase 2: the server restarts with its scheduler, which finds the backlog.
    let _server = start_server(&data, &kubeconfig, &[]);
    rt.block_on(async move {
        let c = wk_client::Client::from_path(&kubeconfig).unwrap();
        let (bound, watcher) = watch_bindings(&c, backlog_rv).await;
        // The hollow kubelets: every lease renewed every 2 s, as agents do.
        let cc = c.clone();
        let renewer = tokio::spawn(async move {
            loop {
                let round = Instant::now();
                let c2 = cc.clone();
                fan_out(nodes_n, 8, move |i| {
                    let c = c2.clone();
                    async move {
                        let leases = wk_api::resource::lookup("leases").unwrap();
                        let patch = json!({"spec": {"renewTime": now_micro()}});
                        let _ = c
                            .patch(leases, Some("kube-node-lease"), &format!("hollow-{i:04}"),
                                "application/merge-patch+json", &patch, &[])
                            .await;
                    }
                })
                .await;
                tokio::time::sleep(Duration::from_secs(2).saturating_sub(round.elapsed())).await;
            }
        });
        wait_bound(&bound, "b", pods_n).await;
        let (first, last) = bound_window(&bound, "b");
        let backlog_secs = last.duration_since(first).as_secs_f64().max(1e-3);
        let backlog_rate = pods_n as f64 / backlog_secs;

        // Phase 3: pods created while the scheduler runs.
        let start = Instant::now();
        let created = create_pods(&c, "s", pods_n).await;
        let all_created = start.elapsed();
        wait_bound(&bound, "s", pods_n).await;
        watcher.abort();
        renewer.abort();
        let (_, last) = bound_window(&bound, "s");
        let mut lat: Vec<Duration> = {
            let created = created.lock().unwrap();
            bound
                .lock()
                .unwrap()
                .iter()
                .filter(|(k, _)| k.starts_with('s'))
                .map(|(k, t)| t.duration_since(created[k]))
                .collect()
        };
        lat.sort();
        let steady_rate = pods_n as f64 / last.duration_since(start).as_secs_f64();
        let pods = wk_api::resource::lookup("pods").unwrap();
        let list = c.list(pods, None, true, &Default::default()).await.unwrap();
        let mut per_node: HashMap<String, usize> = HashMap::new();
        for p in list["items"].as_array().unwrap() {
            *per_node.entry(p["spec"]["nodeName"].as_str().unwrap_or("").to_string()).or_default() += 1;
        }
        let (min, max) = (per_node.values().min().unwrap(), per_node.values().max().unwrap());
        println!("| metric | value |");
        println!("|---|---|");
        println!("| cluster | {nodes_n} hollow nodes (leases renewed every 2 s), pods of 100m / 128Mi, 64 concurrent creators |");
        println!("| backlog: {pods_n} pending pods bound | {:.2} s, first → last binding: **{backlog_rate:.0} bindings/s** ({:.2}× the {GOAL:.0}/s goal) |",
            backlog_secs, backlog_rate / GOAL);
        println!("| backlog created (scheduler off) | {:.2} s ({:.0} creates/s) |", backlog_created.as_secs_f64(), pods_n as f64 / backlog_created.as_secs_f64());
        println!("| steady: {pods_n} pods created while scheduling | created in {:.2} s ({:.0} creates/s), all bound {:.2} s after the first create: {steady_rate:.0} bindings/s |",
            all_created.as_secs_f64(), pods_n as f64 / all_created.as_secs_f64(), last.duration_since(start).as_secs_f64());
        println!("| steady: create → bound latency | p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms |",
            percentile(&lat, 0.5).as_secs_f64() * 1e3, percentile(&lat, 0.99).as_secs_f64() * 1e3, lat.last().unwrap().as_secs_f64() * 1e3);
        println!("| spread of all {} pods | {} nodes used, min {min}, max {max} pods per node |", 2 * pods_n, per_node.len());
    });
}
