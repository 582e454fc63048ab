//! hello-http through wk's Wasm runtime and through `wasmtime serve`, same component, same
//! machine, same load tool (wrk), in one run; plus compile time, start from cache, and
//! memory per idle service.
//!
//! `cargo bench -p wk-runtime-wasm --bench serve` after `scripts/build-samples.sh`, with
//! `wrk` (Debian) and `wasmtime` 48.0.8 (`cargo install wasmtime-cli --version 48.0.8`) on
//! PATH. Set `WK_BENCH_SECONDS` (default 10) per load point.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wk_api::runtime::{ContainerConfig, Limits, LogConfig, PodIdentity, PortBinding, Runtime};
use wk_runtime_wasm::{WasmRuntime, WasmRuntimeConfig};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn which(bin: &str) -> Option<PathBuf> {
    let home = std::env::var("HOME").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(PathBuf::from)
        .collect();
    dirs.push(PathBuf::from(home).join(".cargo/bin"));
    dirs.into_iter().map(|d| d.join(bin)).find(|p| p.exists())
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

struct WrkResult {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn parse_ms(s: &str) -> f64 {
    let s = s.trim();
    if let Some(v) = s.strip_suffix("us") {
        v.parse::<f64>().unwrap_or(0.0) / 1000.0
    } else if let Some(v) = s.strip_suffix("ms") {
        v.parse().unwrap_or(0.0)
    } else if let Some(v) = s.strip_suffix('s') {
        v.parse::<f64>().unwrap_or(0.0) * 1000.0
    } else {
        0.0
    }
}

fn wrk(url: &str, conns: u32, secs: u64) -> WrkResult {
    let threads = conns.min(2).to_string();
    let out = Command::new("wrk")
        .args([
            "-t",
            &threads,
            "-c",
            &conns.to_string(),
            "-d",
            &format!("{secs}s"),
            "--latency",
            url,
        ])
        .output()
        .expect("wrk on PATH (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut r = WrkResult {
        rps: 0.0,
        p50_ms: 0.0,
        p99_ms: 0.0,
    };
    for line in text.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = t.strip_prefix("50%") {
            r.p50_ms = parse_ms(v);
        } else if let Some(v) = t.strip_prefix("99%") {
            r.p99_ms = parse_ms(v);
        }
        if t.contains("Non-2xx") || t.contains("Socket errors") {
            eprintln!("wrk {url}: {t}");
        }
    }
    r
}

fn config(id: &str, image: &str, port: u16, dir: &std::path::Path) -> ContainerConfig {
    ContainerConfig {
        id: id.into(),
        pod: PodIdentity {
            name: id.into(),
            namespace: "default".into(),
            ..Default::default()
        },
        name: "hello".into(),
        image: image.into(),
        command: vec![],
        args: vec![],
        env: vec![
            ("POD_NAME".into(), id.into()),
            ("GREETING".into(), "bench".into()),
        ],
        working_dir: None,
        mounts: vec![],
        ports: vec![PortBinding {
            container_port: 8080,
            host_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            host_port: port,
            protocol: "TCP".into(),
        }],
        limits: Limits {
            memory_bytes: Some(64 << 20),
            ..Default::default()
        },
        allow_outbound: false,
        log: LogConfig {
            path: dir.join(format!("{id}.log")),
            max_bytes: 1 << 20,
        },
        security: Default::default(),
    }
}

async fn wait_http(url: &str) {
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client.get(url).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} did not come up");
}

fn main() {
    let secs: u64 = std::env::var("WK_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let image = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../samples/dist/hello-http.wasm");
    assert!(image.exists(), "run scripts/build-samples.sh first");
    let image = image.canonicalize().unwrap().display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Compile time (cold cache) and start from cache (new runtime, same cache).
        let t = Instant::now();
        let wasm = WasmRuntime::new(WasmRuntimeConfig::new(dir.path().join("cache"))).unwrap();
        wasm.prepare(&image, &Default::default()).await.unwrap();
        let compile = t.elapsed();
        drop(wasm);
        let t = Instant::now();
        let wasm = WasmRuntime::new(WasmRuntimeConfig::new(dir.path().join("cache"))).unwrap();
        let p = wasm.prepare(&image, &Default::default()).await.unwrap();
        assert!(!p.compiled);
        let port = free_port();
        wasm.start(config("svc-0", &image, port, dir.path())).await.unwrap();
        let url = format!("http://127.0.0.1:{port}/");
        wait_http(&url).await;
        let start_cached = t.elapsed();
        println!("pooling allocator: {}", wasm.pooling());
        println!("compile (cold cache): {:.1} ms; new runtime + start from cache + first response: {:.1} ms", compile.as_secs_f64() * 1000.0, start_cached.as_secs_f64() * 1000.0);

        // Load: wk runtime vs wasmtime serve.
        let wasmtime = which("wasmtime");
        let wt_port = free_port();
        let mut child = wasmtime.as_ref().map(|w| {
            Command::new(w)
                .args(["serve", "-Scli", "--addr", &format!("127.0.0.1:{wt_port}")])
                .arg(&image)
                .env("POD_NAME", "svc-0")
                .env("GREETING", "bench")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start wasmtime serve")
        });
        let wt_url = format!("http://127.0.0.1:{wt_port}/");
        if child.is_some() {
            wait_http(&wt_url).await;
        } else {
            eprintln!("wasmtime not found: wk figures only");
        }
        println!("\n| concurrency | wk req/s | wk p50 | wk p99 | wasmtime serve req/s | wasmtime p50 | wasmtime p99 | wk/wasmtime |");
        println!("|---|---|---|---|---|---|---|---|");
        for c in [1u32, 16, 64] {
            let u = url.clone();
            let ours = tokio::task::spawn_blocking(move || wrk(&u, c, secs)).await.unwrap();
            let theirs = if child.is_some() {
                let u = wt_url.clone();
                Some(tokio::task::spawn_blocking(move || wrk(&u, c, secs)).await.unwrap())
            } else {
                None
            };
            match theirs {
                Some(t) => println!(
                    "| {c} | {:.0} | {:.2} ms | {:.2} ms | {:.0} | {:.2} ms | {:.2} ms | {:.2}× |",
                    ours.rps, ours.p50_ms, ours.p99_ms, t.rps, t.p50_ms, t.p99_ms, ours.rps / t.rps
                ),
                None => println!("| {c} | {:.0} | {:.2} ms | {:.2} ms | – | – | – | – |", ours.rps, ours.p50_ms, ours.p99_ms),
            }
        }
        if let Some(c) = child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }

        // Per-request instantiation (fresh store + instance), measured directly.
        let mut inst = wasm.bench_instantiate(&image, 5000).await.unwrap();
        inst.sort();
        let pct = |p: f64| inst[((inst.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6;
        println!("\ninstantiation per request: p50 {:.1} µs, p99 {:.1} µs (5000 instances)", pct(0.5), pct(0.99));

        // Memory per in-flight request: 64 requests each holding an instance for 300 ms.
        let idle = rss_kib();
        let mut load = Vec::new();
        let busy = format!("{url}busy?ms=300");
        for _ in 0..64 {
            let u = busy.clone();
            load.push(tokio::spawn(async move { reqwest::get(&u).await.map(|r| r.status().as_u16()).unwrap_or(0) }));
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        let peak = rss_kib();
        for l in load {
            assert_eq!(l.await.unwrap(), 200);
        }
        println!(
            "in-flight: RSS {idle} KiB idle → {peak} KiB with 64 requests in flight: {:.0} KiB per in-flight request",
            peak.saturating_sub(idle) as f64 / 64.0
        );

        // Memory per idle service, and how many one runtime holds: start N more.
        let n = 1000;
        let t = Instant::now();
        let before = rss_kib();
        for i in 1..=n {
            wasm.start(config(&format!("svc-{i}"), &image, free_port(), dir.path())).await.unwrap();
        }
        let started = t.elapsed();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = rss_kib();
        println!(
            "idle services: {n} more started in {:.0} ms; RSS {before} KiB → {after} KiB: {:.1} KiB per idle hello-http service",
            started.as_secs_f64() * 1000.0,
            (after.saturating_sub(before)) as f64 / n as f64
        );
    });
}
