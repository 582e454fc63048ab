//! The write workload the store benchmarks share: wk creates through the API against etcd
//! puts through its gRPC gateway, with the same client library.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::percentile;

#[derive(Clone, Copy)]
pub struct Stats {
    pub per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
}

pub fn stats(mut lat: Vec<Duration>, wall: Duration) -> Stats {
    lat.sort();
    Stats {
        per_sec: lat.len() as f64 / wall.as_secs_f64(),
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
    }
}

pub fn object(i: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": format!("cm-{i}"), "namespace": "default", "labels": {"bench": "writes"}},
           "data": {"payload": "x".repeat(100)}})
}

/// Something that commits writes.
pub trait Target: Send + Sync + 'static {
    fn put(&self, i: usize) -> impl std::future::Future<Output = ()> + Send;
}

/// wk servers: writes go round-robin over their clients.
pub struct Wk {
    pub clients: Vec<wk_client::Client>,
}

impl Target for Wk {
    async fn put(&self, i: usize) {
        let rt = wk_api::resource::lookup("cm").unwrap();
        self.clients[i % self.clients.len()]
            .create(rt, Some("default"), &object(i), &[])
            .await
            .expect("wk create");
    }
}

/// etcd members: puts go round-robin over their client URLs.
pub struct Etcd {
    pub http: reqwest::Client,
    pub urls: Vec<String>,
}

pub fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

impl Target for Etcd {
    async fn put(&self, i: usize) {
        let key = format!("/registry/configmaps/default/cm-{i}");
        let body = json!({"key": b64(&key), "value": b64(&object(i).to_string())});
        let r = self
            .http
            .post(format!("{}/v3/kv/put", self.urls[i % self.urls.len()]))
            .json(&body)
            .send()
            .await
            .expect("etcd put");
        assert!(r.status().is_success(), "etcd put: {}", r.status());
        let _ = r.bytes().await;
    }
}

pub async fn run_writers<T: Target>(
    target: Arc<T>,
    writers: usize,
    total: usize,
    offset: usize,
) -> Stats {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let lat = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let (target, next, lat) = (target.clone(), next.clone(), lat.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let t = Instant::now();
                target.put(offset + i).await;
                mine.push(t.elapsed());
            }
            lat.lock().await.extend(mine);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let wall = start.elapsed();
    let lat = std::mem::take(&mut *lat.lock().await);
    stats(lat, wall)
}

pub fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.exists())
}

pub fn fmt_ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Starts an etcd 3.4 cluster of `n` members on loopback (client TLS with the wk
/// server's certificate), if `etcd` is on PATH.
pub fn start_etcd(dir: &Path, pki: &Path, n: usize) -> Option<(Vec<super::Proc>, Etcd)> {
    let etcd = which("etcd")?;
    let ports: Vec<(u16, u16)> = (0..n)
        .map(|_| (super::free_port(), super::free_port()))
        .collect();
    let cluster: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, p))| format!("m{i}=http://127.0.0.1:{p}"))
        .collect();
    let mut procs = Vec::new();
    let mut urls = Vec::new();
    for (i, (cport, pport)) in ports.iter().enumerate() {
        let url = format!("https://127.0.0.1:{cport}");
        let child = Command::new(&etcd)
            .args(["--name", &format!("m{i}"), "--data-dir"])
            .arg(dir.join(format!("etcd-{n}-{i}")))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{pport}")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{pport}"),
            ])
            .args([
                "--initial-cluster",
                &cluster.join(","),
                "--initial-cluster-state",
                "new",
            ])
            .arg("--cert-file")
            .arg(pki.join("server.crt"))
            .arg("--key-file")
            .arg(pki.join("server.key"))
            .args(["--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        procs.push(super::Proc(child));
        urls.push(url);
    }
    let ca = reqwest::Certificate::from_pem(&std::fs::read(pki.join("ca.crt")).ok()?).ok()?;
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(ca)
        .build()
        .ok()?;
    Some((procs, Etcd { http, urls }))
}

/// Waits until every member reports itself healthy.
pub async fn etcd_ready(etcd: &Etcd) {
    for _ in 0..200 {
        let mut ok = 0;
        for u in &etcd.urls {
            if let Ok(r) = etcd.http.get(format!("{u}/health")).send().await {
                if r.text()
                    .await
                    .unwrap_or_default()
                    .contains("\"health\":\"true\"")
                {
                    ok += 1;
                }
            }
        }
        if ok == etcd.urls.len() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("etcd did not become healthy");
}
