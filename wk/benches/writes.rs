//! Write benchmark of the control plane against etcd, in one run.
//!
//! `cargo bench -p wk --bench writes` starts the real `wk server` (release build) and, if
//! `etcd` is on PATH (Debian `etcd-server`), an etcd 3.4 configured the same way: one
//! member, data on the same disk, TLS with the same certificate. Both get the same
//! workload over HTTPS from the same client library (reqwest, keep-alive):
//!
//! - committed creates/s with 1 writer and with 64 concurrent writers, p50/p99 latency;
//! - watch event latency: a create is sent, and its event reaches a watcher.
//!
//! wk's create is a full Kubernetes create (decode, validate, Raft commit, apply,
//! response); etcd's is a `/v3/kv/put` of the same JSON bytes through its gRPC gateway.
//! Set `WK_BENCH_N` to change the number of writes (default 3000 for 1 writer, 20000
//! for 64 writers).

use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use serde_json::{Value, json};

mod common;

use common::writes::{
    Etcd, Stats, Target, Wk, b64, etcd_ready, fmt_ms, object, run_writers, start_etcd, stats,
};
use common::{Proc, start_server};

/// Watch latency on wk: create → ADDED event received.
async fn wk_watch_latency(client: &wk_client::Client, n: usize, offset: usize) -> Stats {
    let rt = wk_api::resource::lookup("cm").unwrap();
    let list = client
        .list(
            rt,
            Some("default"),
            false,
            &wk_client::ListParams {
                limit: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let p = wk_client::ListParams {
        resource_version: Some(rv),
        ..Default::default()
    };
    let mut events = Box::pin(
        client
            .watch(rt, Some("default"), false, &p, false)
            .await
            .unwrap(),
    );
    let mut lat = Vec::new();
    let start = Instant::now();
    for i in 0..n {
        let name = format!("cm-{}", offset + i);
        let t = Instant::now();
        let c = client.clone();
        let create = tokio::spawn(async move {
            c.create(rt, Some("default"), &object(offset + i), &[])
                .await
                .unwrap()
        });
        loop {
            let ev = events.next().await.unwrap().unwrap();
            if ev.object["metadata"]["name"] == name.as_str() {
                lat.push(t.elapsed());
                break;
            }
        }
        create.await.unwrap();
    }
    stats(lat, start.elapsed())
}

/// Watch latency on etcd via the gateway's streaming `/v3/watch`.
async fn etcd_watch_latency(etcd: &Etcd, n: usize, offset: usize) -> Stats {
    let prefix = "/registry/configmaps/default/";
    let end = "/registry/configmaps/default0";
    let req = json!({"create_request": {"key": b64(prefix), "range_end": b64(end)}});
    let resp = etcd
        .http
        .post(format!("{}/v3/watch", etcd.urls[0]))
        .json(&req)
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream();
    let mut buf = Vec::new();
    // The first message confirms the watch was created.
    let mut pending_lines: std::collections::VecDeque<Value> = Default::default();
    async fn next_msg(
        stream: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
        buf: &mut Vec<u8>,
        pending: &mut std::collections::VecDeque<Value>,
    ) -> Value {
        loop {
            if let Some(v) = pending.pop_front() {
                return v;
            }
            let chunk = stream.next().await.unwrap().unwrap();
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                    pending.push_back(v);
                }
            }
        }
    }
    let _created = next_msg(&mut stream, &mut buf, &mut pending_lines).await;
    let mut lat = Vec::new();
    let start = Instant::now();
    for i in 0..n {
        let key = b64(&format!("{prefix}cm-{}", offset + i));
        let t = Instant::now();
        etcd.put(offset + i).await;
        'wait: loop {
            let msg = next_msg(&mut stream, &mut buf, &mut pending_lines).await;
            for ev in msg
                .pointer("/result/events")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
            {
                if ev.pointer("/kv/key").and_then(Value::as_str) == Some(key.as_str()) {
                    lat.push(t.elapsed());
                    break 'wait;
                }
            }
        }
    }
    stats(lat, start.elapsed())
}

fn start_wk(dir: &Path) -> (Proc, wk_client::Client, PathBuf) {
    let kubeconfig = dir.join("config");
    let child = start_server(&dir.join("wk"), &kubeconfig, &[]);
    let client = wk_client::Client::from_path(&kubeconfig).unwrap();
    (child, client, dir.join("wk").join("pki"))
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let n1 = common::env_usize("WK_BENCH_N", 3000);
    let n64 = n1 * 20 / 3;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let (_wk_proc, client, pki) = start_wk(dir.path());
        let wk = Arc::new(Wk {
            clients: vec![client.clone()],
        });
        run_writers(wk.clone(), 16, 500, 10_000_000).await; // warm-up
        let wk1 = run_writers(wk.clone(), 1, n1, 0).await;
        let wk64 = run_writers(wk.clone(), 64, n64, 1_000_000).await;
        let wkw = wk_watch_latency(&client, 500, 2_000_000).await;

        let etcd = start_etcd(dir.path(), &pki, 1);
        let mut rows = vec![
            ("creates/s, 1 writer", wk1, None::<Stats>),
            ("creates/s, 64 writers", wk64, None),
            ("watch event latency (create → event)", wkw, None),
        ];
        if let Some((_etcd_procs, etcd)) = etcd {
            let etcd = Arc::new(etcd);
            etcd_ready(&etcd).await;
            run_writers(etcd.clone(), 16, 500, 10_000_000).await;
            rows[0].2 = Some(run_writers(etcd.clone(), 1, n1, 0).await);
            rows[1].2 = Some(run_writers(etcd.clone(), 64, n64, 1_000_000).await);
            rows[2].2 = Some(etcd_watch_latency(&etcd, 500, 2_000_000).await);
        } else {
            eprintln!("etcd not found on PATH (apt-get install etcd-server): wk figures only");
        }
        println!("| workload | wk ops/s | wk p50 | wk p99 | etcd ops/s | etcd p50 | etcd p99 | wk/etcd ops/s |");
        println!("|---|---|---|---|---|---|---|---|");
        for (name, w, e) in rows {
            match e {
                Some(e) => println!(
                    "| {name} | {:.0} | {} | {} | {:.0} | {} | {} | {:.2}× |",
                    w.per_sec, fmt_ms(w.p50), fmt_ms(w.p99), e.per_sec, fmt_ms(e.p50), fmt_ms(e.p99), w.per_sec / e.per_sec
                ),
                None => println!("| {name} | {:.0} | {} | {} | – | – | – | – |", w.per_sec, fmt_ms(w.p50), fmt_ms(w.p99)),
            }
        }
        println!("\n(1 writer: {n1} creates; 64 writers: {n64} creates; watch: 500 sequential creates)");
    });
}
