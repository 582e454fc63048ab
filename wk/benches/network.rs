//! Service networking benchmark: the agent's L4 balancer against HAProxy and a direct
//! connection, and the agent's cluster DNS against dnsmasq, on the same backends, records
//! and load tools, in one run.
//!
//! `cargo bench -p wk --bench network` (needs `wrk`, `haproxy`, `dnsmasq`, `dnsperf`:
//! `apt-get install wrk haproxy dnsmasq-base dnsperf`). `WK_BENCH_SECONDS` (default 5) per
//! wrk run; `WK_BENCH_ROUNDS` (default 5) rounds per L4 point, each starting with the
//! next target; the table gives the medians, the per-round range of wk/HAProxy, and the
//! CPU time (user + system) each proxy process spent per request.
//!
//! - Backends: three minimal HTTP/1.1 servers (keep-alive, a fixed 200 "ok", 256 KiB for
//!   `GET /big`) in this process, on 127.0.1.{1,2,3}. wk reaches them through a
//!   selector-less Service with hand-written Endpoints; HAProxy 2.6 (`mode tcp`, `balance
//!   leastconn`, its default thread count) through the same three, once plain and once
//!   with `option splice-auto`.
//! - Load: `wrk -t2 --latency`, with keep-alive (64 connections), with a new connection
//!   per request (`Connection: close`, 16 connections), and 256 KiB responses (16
//!   keep-alive connections). `WK_BENCH_PROXY_SPLICE=false` makes the balancer copy bulk
//!   transfers too.
//! - DNS: 100 Services; dnsmasq serves the same 100 names as `--host-record`s. `dnsperf`
//!   (16 clients, 2 threads) measures queries/s; a UDP prober here (8 askers in turn)
//!   measures p50/p99.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;

use common::{Proc, free_port, percentile, start_agent, start_server};

fn seconds() -> u64 {
    common::env_usize("WK_BENCH_SECONDS", 5) as u64
}

/// The body of `GET /big`.
static BIG: [u8; 256 * 1024] = [b'x'; 256 * 1024];

/// A minimal keep-alive HTTP/1.1 server: answers `GET /big` with 256 KiB and every
/// other request with "ok".
async fn backend(addr: SocketAddr) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let _ = s.set_nodelay(true);
            let mut buf = vec![0u8; 8192];
            let mut have = 0;
            loop {
                let Ok(n) = s.read(&mut buf[have..]).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                have += n;
                while let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                    let req = &buf[..end];
                    let close = req
                        .windows(17)
                        .any(|w| w.eq_ignore_ascii_case(b"connection: close"));
                    let big = req.starts_with(b"GET /big ");
                    let resp: &[u8] = match (big, close) {
                        (true, _) => b"HTTP/1.1 200 OK\r\ncontent-length: 262144\r\n\r\n",
                        (false, true) => {
                            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n"
                        }
                        (false, false) => b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n",
                    };
                    if s.write_all(resp).await.is_err() || close {
                        return;
                    }
                    if big && s.write_all(&BIG).await.is_err() {
                        return;
                    }
                    buf.copy_within(end + 4..have, 0);
                    have -= end + 4;
                }
                if have == buf.len() {
                    return;
                }
            }
        });
    }
}

/// Rounds per L4 point (`WK_BENCH_ROUNDS`, default 5); the table gives medians.
fn rounds() -> usize {
    common::env_usize("WK_BENCH_ROUNDS", 5).max(1)
}

/// CPU time (user + system, seconds) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are the
    // 12th and 13th of those, in clock ticks.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    // /proc counts in USER_HZ, which Linux fixes at 100 for user space.
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
}

/// One wrk run at one target, and the CPU its proxy used meanwhile.
#[derive(Clone)]
struct Run {
    rps: f64,
    p99: f64,
    cpu: Option<f64>,
}

/// Medians over the rounds, and CPU per request over all of them.
struct Summary {
    rps: f64,
    p99: f64,
    cpu_us: f64,
}

impl Summary {
    fn of(runs: &[Run]) -> Summary {
        let median = |f: &dyn Fn(&Run) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let requests: f64 = runs.iter().map(|r| r.rps * seconds() as f64).sum();
        let cpu: f64 = runs.iter().filter_map(|r| r.cpu).sum();
        Summary {
            rps: median(&|r| r.rps),
            p99: median(&|r| r.p99),
            cpu_us: cpu / requests * 1e6,
        }
    }
}

/// Requests/s and p99 (ms) from one wrk run.
fn wrk(url: &str, conns: u32, close: bool) -> (f64, f64) {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t2",
        &format!("-c{conns}"),
        &format!("-d{}s", seconds()),
        "--latency",
    ]);
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    let out = cmd.arg(url).output().expect("wrk is installed");
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| parse_wrk_time(v.trim()))
        .unwrap_or(f64::NAN);
    let errors = text
        .lines()
        .find(|l| l.contains("Socket errors") || l.contains("Non-2xx"));
    if let Some(e) = errors {
        eprintln!("wrk {url}: {e}");
    }
    (rps, p99)
}

fn parse_wrk_time(v: &str) -> f64 {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_alphabetic()).unwrap_or(v.len()));
    let n: f64 = num.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        _ => f64::NAN,
    }
}

/// A DNS query for `name` type A, with id `id`.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// p50/p99 (ms) of A queries to `server`, 8 askers each asking in turn for `secs`.
async fn dns_latency(server: SocketAddr, names: &[String], secs: u64) -> (f64, f64, usize) {
    let mut tasks = Vec::new();
    for t in 0..8u16 {
        let names = names.to_vec();
        tasks.push(tokio::spawn(async move {
            let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            sock.connect(server).await.unwrap();
            let mut lat = Vec::new();
            let mut failed = 0;
            let end = Instant::now() + Duration::from_secs(secs);
            let mut buf = [0u8; 512];
            let mut i = 0usize;
            while Instant::now() < end {
                let id = (t << 12) | (i as u16 & 0x0fff);
                let q = query(id, &names[i % names.len()]);
                let start = Instant::now();
                sock.send(&q).await.unwrap();
                match tokio::time::timeout(Duration::from_secs(1), sock.recv(&mut buf)).await {
                    Ok(Ok(n)) if n > 12 && buf[..2] == id.to_be_bytes() && buf[7] > 0 => {
                        lat.push(start.elapsed())
                    }
                    _ => failed += 1,
                }
                i += 1;
            }
            (lat, failed)
        }));
    }
    let mut all = Vec::new();
    let mut failed = 0;
    for t in tasks {
        let (l, f) = t.await.unwrap();
        all.extend(l);
        failed += f;
    }
    all.sort();
    (
        percentile(&all, 0.5).as_secs_f64() * 1e3,
        percentile(&all, 0.99).as_secs_f64() * 1e3,
        failed,
    )
}

/// Queries/s and average latency (ms) from dnsperf.
fn dnsperf(server: SocketAddr, datafile: &std::path::Path) -> (f64, f64) {
    let out = Command::new("dnsperf")
        .args([
            "-s",
            &server.ip().to_string(),
            "-p",
            &server.port().to_string(),
            "-d",
        ])
        .arg(datafile)
        .args([
            "-l",
            &seconds().to_string(),
            "-c",
            "16",
            "-T",
            "2",
            "-q",
            "200",
        ])
        .output()
        .expect("dnsperf is installed");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    let lost = text.lines().find(|l| l.contains("Queries lost"));
    if let Some(l) = lost {
        eprintln!("dnsperf {server}: {}", l.trim());
    }
    (
        field("Queries per second:"),
        field("Average Latency (s):") * 1e3,
    )
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("config");
    let _server = start_server(&dir.path().join("server"), &kubeconfig, &[]);
    let dns_port = free_port();
    let dns = format!("127.0.0.1:{dns_port}");
    let agent_with = |extra: &[&str]| {
        let flags: Vec<&str> = ["--dns-listen", dns.as_str()]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        start_agent(&kubeconfig, &dir.path().join("agent"), &flags)
    };
    // `WK_BENCH_PROXY_SPLICE=false`: the balancer copies bulk transfers too.
    let splice = format!(
        "--proxy-splice={}",
        std::env::var("WK_BENCH_PROXY_SPLICE").unwrap_or_else(|_| "true".into())
    );
    let agent = agent_with(&[splice.as_str()]);
    // Backends on their own runtime thread.
    let port = free_port();
    let backends: Vec<SocketAddr> = (1..=3)
        .map(|i| SocketAddr::from((Ipv4Addr::new(127, 0, 1, i), port)))
        .collect();
    {
        let backends = backends.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                for b in backends {
                    tokio::spawn(backend(b));
                }
                std::future::pending::<()>().await
            });
        });
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (vip, names) = rt.block_on(async {
        let c = wk_client::Client::from_path(&kubeconfig).unwrap();
        let svc_rt = wk_api::resource::lookup("svc").unwrap();
        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "bench"},
            "spec": {"ports": [{"name": "http", "port": 80}]}});
        let vip = c.create(svc_rt, None, &svc, &[]).await.unwrap()["spec"]["clusterIP"]
            .as_str()
            .unwrap()
            .to_string();
        let ep = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "bench"},
            "subsets": [{"addresses": backends.iter().map(|b| json!({"ip": b.ip().to_string()})).collect::<Vec<_>>(),
                         "ports": [{"name": "http", "port": port}]}]});
        c.create(wk_api::resource::lookup("endpoints").unwrap(), None, &ep, &[]).await.unwrap();
        let mut names = Vec::new();
        for i in 0..100 {
            let s = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("svc-{i}")},
                "spec": {"ports": [{"name": "http", "port": 80}]}});
            let ip = c.create(svc_rt, None, &s, &[]).await.unwrap()["spec"]["clusterIP"]
                .as_str()
                .unwrap()
                .to_string();
            names.push((format!("svc-{i}.default.svc.cluster.local"), ip));
        }
        // Wait for the balancer and the DNS to have it all.
        let http = reqwest::Client::new();
        let start = Instant::now();
        while !http.get(format!("http://{vip}/")).send().await.is_ok_and(|r| r.status().is_success()) {
            assert!(start.elapsed() < Duration::from_secs(30), "the VIP never answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let last = vec![names[99].0.clone()];
        while dns_latency(SocketAddr::from(([127, 0, 0, 1], dns_port)), &last, 0).await.2 > 0
            || start.elapsed() < Duration::from_secs(1)
        {
            assert!(start.elapsed() < Duration::from_secs(30), "the DNS never answered");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (vip, names)
    });

    // HAProxy in front of the same backends.
    let hap_port = free_port();
    let cfg = dir.path().join("haproxy.cfg");
    let mut f = std::fs::File::create(&cfg).unwrap();
    writeln!(f, "global\n  maxconn 8000\n  maxpipes 1024\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\nfrontend fe\n  bind 127.0.0.1:{hap_port}\n  default_backend be\nbackend be\n  balance leastconn").unwrap();
    for (i, b) in backends.iter().enumerate() {
        writeln!(f, "  server s{i} {b}").unwrap();
    }
    // The same, with HAProxy's own splice (as the balancer splices bulk transfers).
    let hap_splice_port = free_port();
    writeln!(f, "frontend fe_splice\n  bind 127.0.0.1:{hap_splice_port}\n  option splice-auto\n  default_backend be_splice\nbackend be_splice\n  balance leastconn\n  option splice-auto").unwrap();
    for (i, b) in backends.iter().enumerate() {
        writeln!(f, "  server s{i} {b}").unwrap();
    }
    drop(f);
    let mut haproxy = Proc(
        Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("haproxy is installed"),
    );
    std::thread::sleep(Duration::from_millis(500));
    if let Ok(Some(st)) = haproxy.0.try_wait() {
        panic!("haproxy exited ({st}); its messages are above");
    }

    println!(
        "| load | direct req/s | direct p99 | wk req/s | wk p99 | wk CPU/req | HAProxy req/s | HAProxy p99 | HAProxy CPU/req | HAProxy splice-auto req/s | wk/HAProxy (rounds) | wk/HAProxy splice-auto | wk/direct |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let (wk_pid, hap_pid) = (agent.0.id(), haproxy.0.id());
    let mut rounds_of = Vec::new();
    for (label, conns, close, path) in [
        ("keep-alive, 64 connections", 64, false, "/"),
        ("new connection per request, 16 connections", 16, true, "/"),
        (
            "keep-alive, 256 KiB responses, 16 connections",
            16,
            false,
            "/big",
        ),
    ] {
        let targets = [
            (format!("http://{}{path}", backends[0]), None),
            (format!("http://{vip}{path}"), Some(wk_pid)),
            (format!("http://127.0.0.1:{hap_port}{path}"), Some(hap_pid)),
            (
                format!("http://127.0.0.1:{hap_splice_port}{path}"),
                Some(hap_pid),
            ),
        ];
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); targets.len()];
        // Rounds in turn, each starting with a different target, so that a slow
        // moment of the machine does not land on one of them only.
        for round in 0..rounds() {
            for k in 0..targets.len() {
                let t = (round + k) % targets.len();
                let (url, pid) = &targets[t];
                let cpu0 = pid.map(cpu_seconds);
                let (rps, p99) = wrk(url, conns, close);
                let cpu = pid.map(|p| cpu_seconds(p) - cpu0.unwrap_or(0.0));
                runs[t].push(Run { rps, p99, cpu });
            }
        }
        let [direct, wk, hap, hap_splice] = [0, 1, 2, 3].map(|t| Summary::of(&runs[t]));
        let per_round: Vec<f64> = runs[1]
            .iter()
            .zip(&runs[2])
            .map(|(w, h)| w.rps / h.rps)
            .collect();
        let (lo, hi) = per_round
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
        let raw: Vec<String> = (0..runs[1].len())
            .map(|r| format!("{:.0}/{:.0}", runs[1][r].rps, runs[2][r].rps))
            .collect();
        rounds_of.push((label, per_round, raw));
        println!(
            "| {label} | {:.0} | {:.2} ms | {:.0} | {:.2} ms | {:.1} µs | {:.0} | {:.2} ms | {:.1} µs | {:.0} | {:.2}× ({lo:.2}–{hi:.2}×) | {:.2}× | {:.2}× |",
            direct.rps,
            direct.p99,
            wk.rps,
            wk.p99,
            wk.cpu_us,
            hap.rps,
            hap.p99,
            hap.cpu_us,
            hap_splice.rps,
            wk.rps / hap.rps,
            wk.rps / hap_splice.rps,
            wk.rps / direct.rps
        );
    }

    println!();
    for (label, per_round, raw) in &rounds_of {
        let shown: Vec<String> = per_round.iter().map(|r| format!("{r:.2}")).collect();
        let ahead = per_round.iter().filter(|r| **r >= 1.0).count();
        println!(
            "wk/HAProxy by round, {label}: {} ({ahead} of {} at 1.0 or above; req/s {})",
            shown.join(" "),
            per_round.len(),
            raw.join(" ")
        );
    }

    // DNS: dnsmasq with the same names.
    let dm_port = free_port();
    let mut args = vec![
        "--no-daemon".to_string(),
        "--keep-in-foreground".to_string(),
        format!("--port={dm_port}"),
        "--listen-address=127.0.0.1".into(),
        "--bind-interfaces".into(),
        "--no-resolv".into(),
        "--no-hosts".into(),
        "--user=root".into(),
        format!("--pid-file={}", dir.path().join("dnsmasq.pid").display()),
    ];
    for (name, ip) in &names {
        args.push(format!("--host-record={name},{ip}"));
    }
    let _dnsmasq = Proc(
        Command::new("dnsmasq")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq is installed"),
    );
    std::thread::sleep(Duration::from_millis(500));
    let datafile = dir.path().join("queries.txt");
    std::fs::write(
        &datafile,
        names
            .iter()
            .map(|(n, _)| format!("{n} A\n"))
            .collect::<String>(),
    )
    .unwrap();
    let only: Vec<String> = names.iter().map(|(n, _)| n.clone()).collect();
    let wk_dns = SocketAddr::from(([127, 0, 0, 1], dns_port));
    let dm_dns = SocketAddr::from(([127, 0, 0, 1], dm_port));
    let (wk_qps, wk_avg) = dnsperf(wk_dns, &datafile);
    let (dm_qps, dm_avg) = dnsperf(dm_dns, &datafile);
    let (wk_lat, dm_lat) = rt.block_on(async {
        (
            dns_latency(wk_dns, &only, 3).await,
            dns_latency(dm_dns, &only, 3).await,
        )
    });
    println!();
    println!(
        "| DNS (100 service names, A) | queries/s (dnsperf) | avg (dnsperf) | p50 | p99 | unanswered |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| wk agent | {wk_qps:.0} | {wk_avg:.2} ms | {:.3} ms | {:.3} ms | {} |",
        wk_lat.0, wk_lat.1, wk_lat.2
    );
    println!(
        "| dnsmasq 2.90 | {dm_qps:.0} | {dm_avg:.2} ms | {:.3} ms | {:.3} ms | {} |",
        dm_lat.0, dm_lat.1, dm_lat.2
    );
    println!("| wk/dnsmasq | {:.2}× | | | | |", wk_qps / dm_qps);

    // A Wasm endpoint on the balancer's own node: handed to the runtime in process, or
    // reached over a loopback connection like any endpoint (`--proxy-short-circuit=false`).
    let image = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../samples/dist/hello-http.wasm");
    let image = image
        .canonicalize()
        .expect("run scripts/build-samples.sh first")
        .display()
        .to_string();
    let (hello_vip, pod_ip) = rt.block_on(async {
        let c = wk_client::Client::from_path(&kubeconfig).unwrap();
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hello", "labels": {"app": "hello"}},
            "spec": {"runtimeClassName": "wasm", "containers": [{"name": "hello", "image": image, "ports": [{"containerPort": 8080}]}]}});
        c.create(wk_api::resource::lookup("pods").unwrap(), None, &pod, &[]).await.unwrap();
        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hello"},
            "spec": {"selector": {"app": "hello"}, "ports": [{"port": 80, "targetPort": 8080}]}});
        let vip = c.create(wk_api::resource::lookup("svc").unwrap(), None, &svc, &[]).await.unwrap()["spec"]["clusterIP"]
            .as_str()
            .unwrap()
            .to_string();
        let http = reqwest::Client::new();
        let start = Instant::now();
        while !http.get(format!("http://{vip}/")).send().await.is_ok_and(|r| r.status().is_success()) {
            assert!(start.elapsed() < Duration::from_secs(60), "the hello Service never answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let p = c.get(wk_api::resource::lookup("pods").unwrap(), None, "hello").await.unwrap();
        (vip, p["status"]["podIP"].as_str().unwrap().to_string())
    });
    let wasm_points = [
        ("keep-alive, 64 connections", 64, false),
        ("new connection per request, 16 connections", 16, true),
    ];
    let direct: Vec<(f64, f64)> = wasm_points
        .iter()
        .map(|(_, c, close)| wrk(&format!("http://{pod_ip}:8080/"), *c, *close))
        .collect();
    let short: Vec<(f64, f64)> = wasm_points
        .iter()
        .map(|(_, c, close)| wrk(&format!("http://{hello_vip}/"), *c, *close))
        .collect();
    drop(agent);
    let _agent = agent_with(&["--proxy-short-circuit=false"]);
    rt.block_on(async {
        let http = reqwest::Client::new();
        let start = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        while !http
            .get(format!("http://{hello_vip}/"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the hello Service never came back"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let hop: Vec<(f64, f64)> = wasm_points
        .iter()
        .map(|(_, c, close)| wrk(&format!("http://{hello_vip}/"), *c, *close))
        .collect();
    println!();
    println!(
        "| hello-http pod on the balancer's node | pod direct req/s | via VIP, handed to the runtime | via VIP, loopback connection | handed / connection |"
    );
    println!("|---|---|---|---|---|");
    for (i, (label, _, _)) in wasm_points.iter().enumerate() {
        println!(
            "| {label} | {:.0} (p99 {:.2} ms) | {:.0} (p99 {:.2} ms) | {:.0} (p99 {:.2} ms) | {:.2}× |",
            direct[i].0,
            direct[i].1,
            short[i].0,
            short[i].1,
            hop[i].0,
            hop[i].1,
            short[i].0 / hop[i].0
        );
    }
}
