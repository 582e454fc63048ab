//! The control plane with 1 and 3 servers against etcd with 1 and 3 members, in one run,
//! and how long writes stop when the wk leader is killed.
//!
//! `cargo bench -p wk --bench ha` (Debian `etcd-server` for the etcd rows). Real
//! processes on loopback, data on the same disk, TLS with the same certificate. The
//! workload is the `writes` bench's: 64 concurrent writers, wk creating ConfigMaps through
//! the API, etcd putting the same JSON through its gRPC gateway, writers spread
//! round-robin over the members (a follower forwards to the leader in both systems).
//! Then 20 (`WK_BENCH_KILLS`) times: under a steady load of 8 writers spread over the
//! members, the wk leader gets SIGKILL; the time from the kill to the acknowledgement of
//! the first write sent after it is recorded; the killed server restarts and catches up.
//! Last, compaction: one server under a steady create/delete churn over 1,024 live
//! objects; after each stage of writes, its files on disk and how long a SIGKILLed
//! restart takes to serve them again. `WK_BENCH_PARTS` (default
//! `writes,failover,compaction`) picks the parts.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::writes::{Stats, Wk, etcd_ready, fmt_ms, run_writers, start_etcd};
use common::{Proc, free_port, percentile, start_server};

/// Starts `n` wk servers (the first, then `n - 1` joining it); returns them and a
/// pinned client of each.
fn start_wk(dir: &Path, n: usize) -> (Vec<(Proc, u16)>, Vec<wk_client::Client>) {
    let kubeconfig = dir.join("config");
    let first_dir = dir.join("wk-0");
    let first = start_server(&first_dir, &kubeconfig, &[]);
    let base = wk_client::Client::from_path(&kubeconfig).unwrap();
    let first_port: u16 = base
        .config
        .server
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let tokens: serde_json::Value =
        serde_json::from_slice(&std::fs::read(first_dir.join("tokens.json")).unwrap()).unwrap();
    let mut procs = vec![(first, first_port)];
    let ca = first_dir.join("pki/ca.crt").display().to_string();
    for i in 1..n {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let flags = [
            "--listen",
            listen.as_str(),
            "--join",
            &base.config.server,
            "--token",
            tokens["peer"].as_str().unwrap(),
            "--ca-file",
            ca.as_str(),
        ];
        let (data, config) = (dir.join(format!("wk-{i}")), dir.join(format!("config-{i}")));
        procs.push((start_server(&data, &config, &flags), port));
    }
    let clients = procs
        .iter()
        .map(|(_, port)| client_of(&base, *port))
        .collect();
    (procs, clients)
}

fn client_of(base: &wk_client::Client, port: u16) -> wk_client::Client {
    wk_client::Client::new(wk_client::ClientConfig {
        server: format!("https://127.0.0.1:{port}"),
        servers: Vec::new(),
        ..base.config.clone()
    })
    .unwrap()
    .pinned()
}

/// Waits until `n` voters have applied the same index.
async fn wait_settled(c: &wk_client::Client, n: usize) {
    for _ in 0..600 {
        let m = c.cluster_members().await.unwrap_or_default();
        let ms = m["members"].as_array().cloned().unwrap_or_default();
        if ms.len() == n
            && ms
                .iter()
                .all(|x| x["role"] == "voter" && x["appliedIndex"].is_u64())
            && ms
                .iter()
                .map(|x| x["appliedIndex"].as_u64())
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                == 1
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the cluster did not settle with {n} voters");
}

fn main() {
    let n = common::env_usize("WK_BENCH_N", 20_000);
    let kills = common::env_usize("WK_BENCH_KILLS", 20);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let parts =
        std::env::var("WK_BENCH_PARTS").unwrap_or_else(|_| "writes,failover,compaction".into());
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        if parts.contains("writes") {
            writes(dir.path(), n).await;
        }
        if parts.contains("failover") {
            failover(dir.path(), kills).await;
        }
        if parts.contains("compaction") {
            compaction(dir.path()).await;
        }
    });
}

/// Write throughput and latency, wk against etcd, with 1 and 3 members.
async fn writes(dir: &Path, n: usize) {
    let mut rows: Vec<(String, Stats, Option<Stats>)> = Vec::new();
    for members_n in [1usize, 3] {
        let sub = dir.join(format!("run-{members_n}"));
        std::fs::create_dir_all(&sub).unwrap();
        let (procs, clients) = start_wk(&sub, members_n);
        wait_settled(&clients[0], members_n).await;
        let wk = Arc::new(Wk {
            clients: clients.clone(),
        });
        run_writers(wk.clone(), 16, 500, 10_000_000).await;
        let w = run_writers(wk.clone(), 64, n, 0).await;
        let pki = sub.join("wk-0/pki");
        drop(procs);
        let e = match start_etcd(&sub, &pki, members_n) {
            Some((eprocs, etcd)) => {
                let etcd = Arc::new(etcd);
                etcd_ready(&etcd).await;
                run_writers(etcd.clone(), 16, 500, 10_000_000).await;
                let e = run_writers(etcd.clone(), 64, n, 0).await;
                drop(eprocs);
                Some(e)
            }
            None => {
                eprintln!("etcd not found on PATH (apt-get install etcd-server): wk figures only");
                None
            }
        };
        rows.push((format!("{members_n} member(s), 64 writers"), w, e));
    }
    println!(
        "| cluster | wk creates/s | wk p50 | wk p99 | etcd puts/s | etcd p50 | etcd p99 | wk/etcd |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, w, e) in &rows {
        match e {
            Some(e) => println!(
                "| {name} | {:.0} | {} | {} | {:.0} | {} | {} | {:.2}× |",
                w.per_sec,
                fmt_ms(w.p50),
                fmt_ms(w.p99),
                e.per_sec,
                fmt_ms(e.p50),
                fmt_ms(e.p99),
                w.per_sec / e.per_sec
            ),
            None => println!(
                "| {name} | {:.0} | {} | {} | – | – | – | – |",
                w.per_sec,
                fmt_ms(w.p50),
                fmt_ms(w.p99)
            ),
        }
    }
}

/// Fail-over: kill the leader under load, `kills` times.
async fn failover(dir: &Path, kills: usize) {
    let sub = dir.join("failover");
    std::fs::create_dir_all(&sub).unwrap();
    let (mut procs, clients) = start_wk(&sub, 3);
    wait_settled(&clients[0], 3).await;
    let mut gaps = Vec::new();
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(50_000_000));
    for k in 0..kills {
        let m = clients[0].cluster_members().await.unwrap_or_default();
        let m = if m["leader"].is_u64() {
            m
        } else {
            clients[1].cluster_members().await.unwrap_or_default()
        };
        let leader_url = m["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == m["leader"])
            .unwrap()["url"]
            .as_str()
            .unwrap()
            .to_string();
        let idx = procs
            .iter()
            .position(|(_, p)| leader_url.ends_with(&format!(":{p}")))
            .unwrap();
        let live: Vec<wk_client::Client> = (0..3)
            .filter(|i| *i != idx)
            .map(|i| clients[i].clone())
            .collect();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // (sent, acknowledged) of every acknowledged write.
        let acks: Arc<std::sync::Mutex<Vec<(Instant, Instant)>>> = Arc::default();
        let mut writers = Vec::new();
        for w in 0..8 {
            let (live, stop, acks, counter) =
                (live.clone(), stop.clone(), acks.clone(), counter.clone());
            writers.push(tokio::spawn(async move {
                let rt = wk_api::resource::lookup("cm").unwrap();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let obj = common::writes::object(i);
                    let sent = Instant::now();
                    if let Ok(Ok(_)) = tokio::time::timeout(
                        Duration::from_secs(5),
                        live[(w + i) % live.len()].create(rt, Some("default"), &obj, &[]),
                    )
                    .await
                    {
                        acks.lock().unwrap().push((sent, Instant::now()));
                    } else {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let killed = Instant::now();
        let _ = procs[idx].0.0.kill();
        let _ = procs[idx].0.0.wait();
        // A write sent after the kill: one the old leader cannot have committed.
        while !acks.lock().unwrap().iter().any(|(sent, _)| *sent > killed) {
            assert!(
                killed.elapsed() < Duration::from_secs(30),
                "no write after kill {k}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let gap = acks
            .lock()
            .unwrap()
            .iter()
            .filter(|(sent, _)| *sent > killed)
            .map(|(_, done)| *done)
            .min()
            .unwrap()
            .duration_since(killed);
        gaps.push(gap);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in writers {
            w.await.unwrap();
        }
        // Restart the killed server; it rejoins with its data.
        let port = procs[idx].1;
        let listen = format!("127.0.0.1:{port}");
        procs[idx].0 = start_server(
            &sub.join(format!("wk-{idx}")),
            &sub.join(format!("config-{idx}")),
            &["--listen", listen.as_str()],
        );
        wait_settled(&live[0], 3).await;
    }
    gaps.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "\nleader killed {kills} times under load: kill → first acknowledged write: min {:.0} ms, p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms",
        ms(gaps[0]),
        ms(percentile(&gaps, 0.5)),
        ms(percentile(&gaps, 0.9)),
        ms(*gaps.last().unwrap())
    );
    println!(
        "all: {:?}",
        gaps.iter()
            .map(|g| format!("{:.0}", ms(*g)))
            .collect::<Vec<_>>()
    );
}

/// Objects alive at once in the compaction run.
const LIVE: usize = 1024;

/// Disk and restart time under churn: 16 writers each create an object and delete the
/// one it created `LIVE` objects before, so the state stays at `LIVE` objects while the
/// history grows; after each stage, the sizes of the server's files and the time from a
/// SIGKILLed server's restart to a list of all `LIVE` objects.
async fn compaction(dir: &Path) {
    let sub = dir.join("compaction");
    let data = sub.join("wk-0");
    let kubeconfig = sub.join("config");
    std::fs::create_dir_all(&sub).unwrap();
    // The same address across restarts: it is the member's address in the membership.
    let listen = format!("127.0.0.1:{}", free_port());
    let flags = ["--listen", listen.as_str()];
    let mut server = start_server(&data, &kubeconfig, &flags);
    let rt = wk_api::resource::lookup("cm").unwrap();
    let mut client = wk_client::Client::from_path(&kubeconfig).unwrap().pinned();
    let mut next = 0usize;
    println!(
        "\n| writes so far | Raft log index | last snapshot index | raft-log.redb | state | snapshot | data dir | restart → serving |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for stage in [50_000usize, 100_000, 200_000, 400_000] {
        let writers = 16;
        let end = stage / 2; // a create and a delete per object
        let mut tasks = Vec::new();
        for w in 0..writers {
            let c = client.clone();
            tasks.push(tokio::spawn(async move {
                let mut i = next + w;
                while i < end {
                    let obj = common::writes::object(i);
                    c.create(rt, Some("default"), &obj, &[]).await.unwrap();
                    if i >= LIVE {
                        let old = common::writes::object(i - LIVE);
                        let name = old["metadata"]["name"].as_str().unwrap();
                        c.delete(rt, Some("default"), name, &serde_json::json!({}))
                            .await
                            .unwrap();
                    }
                    i += writers;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        next = end;
        let m = client.cluster_members().await.unwrap_or_default();
        let me = &m["members"][0];
        let size = |name: &str| {
            std::fs::metadata(data.join(name))
                .map(|m| m.len())
                .unwrap_or(0)
        };
        let total: u64 = walk_size(&data);
        drop(server);
        let started = Instant::now();
        server = start_server(&data, &kubeconfig, &flags);
        client = wk_client::Client::from_path(&kubeconfig).unwrap().pinned();
        loop {
            if let Ok(l) = client
                .list(rt, Some("default"), false, &Default::default())
                .await
            {
                if l["items"].as_array().map(Vec::len) == Some(LIVE) {
                    break;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the server did not come back"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let restart = started.elapsed();
        let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
        // A create per object so far, and a delete for each but the last LIVE.
        let writes = end + end.saturating_sub(LIVE);
        let snapshot = match &me["snapshotIndex"] {
            serde_json::Value::Null => "–".to_string(),
            v => v.to_string(),
        };
        println!(
            "| {writes} | {} | {snapshot} | {} | {} | {} | {} | {:.0} ms |",
            me["lastLogIndex"],
            mib(size("raft-log.redb")),
            mib(size("state.redb")),
            mib(size("snapshot.bin")),
            mib(total),
            restart.as_secs_f64() * 1000.0
        );
    }
}

/// Bytes in the files under `dir`.
fn walk_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => walk_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
