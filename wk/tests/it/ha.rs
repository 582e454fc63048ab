//! A three-server control plane from real `wk server` processes: servers join with
//! `--join`, any member takes writes (forwarded to the leader) and serves linearizable
//! reads, and killing the leader with SIGKILL under a steady write load loses no
//! acknowledged write.

use crate::common;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wk_api::resource::lookup;
use wk_client::{Client, ClientConfig};

use crate::common::linearizable::{self, Op};
use crate::common::{TestServer, entries, leader_of, stdout, wait_for};

/// A client of one particular server.
fn client_of(first: &TestServer, port: u16) -> Client {
    let base = first.client();
    Client::new(ClientConfig {
        server: format!("https://127.0.0.1:{port}"),
        servers: Vec::new(),
        ..base.config.clone()
    })
    .unwrap()
    .pinned()
}

/// Which of `servers` runs the member `entry` (of a `cluster_members` answer).
fn server_index(servers: &[TestServer], entry: &Value) -> usize {
    let url = entry["url"].as_str().unwrap_or_default();
    servers
        .iter()
        .position(|s| url.ends_with(&format!(":{}", s.port)))
        .unwrap_or_else(|| panic!("no server runs {entry}"))
}

/// Waits until the server's process has exited on its own.
async fn wait_exited(server: &mut TestServer, what: &str) {
    wait_for(what, Duration::from_secs(30), || {
        let exited = server
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
        async move { exited }
    })
    .await;
}

fn cm(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"v": name}})
}

/// A first server and two that join it, all with the `extra` flags (the third started
/// by `third`, which may inject a fault), and pinned clients of each, once all three are
/// voters that have applied the same log.
async fn three_servers(
    extra: &[&str],
    third: impl FnOnce(&[&str]) -> TestServer,
) -> (Vec<TestServer>, Vec<Client>) {
    let first = TestServer::spawn_with(extra);
    let (url, token, ca) = (
        first.url.clone(),
        first.token_of("peer"),
        first.ca_path().display().to_string(),
    );
    let mut args = vec![
        "--join",
        url.as_str(),
        "--token",
        token.as_str(),
        "--ca-file",
        ca.as_str(),
        "--no-client-config",
    ];
    args.extend_from_slice(extra);
    let mut servers = vec![first];
    servers.push(TestServer::spawn_with(&args));
    servers.push(third(&args));
    let clients: Vec<Client> = servers
        .iter()
        .map(|s| client_of(&servers[0], s.port))
        .collect();
    wait_for(
        "three voters that have applied the same log",
        Duration::from_secs(60),
        || {
            let c = clients[0].clone();
            async move {
                let m = c.cluster_members().await.unwrap_or_default();
                let ms = m["members"].as_array().cloned().unwrap_or_default();
                ms.len() == 3
                    && ms
                        .iter()
                        .all(|x| x["role"] == "voter" && x["appliedIndex"].is_u64())
                    && ms
                        .iter()
                        .map(|x| x["appliedIndex"].as_u64())
                        .collect::<BTreeSet<_>>()
                        .len()
                        == 1
            }
        },
    )
    .await;
    (servers, clients)
}

/// The ConfigMaps a server lists, or `None` if it does not answer.
async fn names(c: &Client) -> Option<BTreeSet<String>> {
    let l = c
        .list(
            lookup("cm").unwrap(),
            Some("default"),
            false,
            &Default::default(),
        )
        .await
        .ok()?;
    Some(
        l["items"]
            .as_array()?
            .iter()
            .filter_map(|i| i["metadata"]["name"].as_str().map(String::from))
            .collect(),
    )
}

/// How many of `names` start with `prefix`.
fn count_prefixed(names: &BTreeSet<String>, prefix: &str) -> usize {
    names.iter().filter(|n| n.starts_with(prefix)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_join_fail_over_and_lose_no_acknowledged_write() {
    let (mut servers, clients) = three_servers(&[], TestServer::spawn_with).await;
    // `wk get servers` shows them, with one leader.
    let table = stdout(&servers[0].wk(&["get", "servers"]));
    assert_eq!(table.lines().count(), 4, "{table}");
    assert_eq!(
        table.lines().filter(|l| l.contains(" yes ")).count(),
        1,
        "{table}"
    );

    // Writes through any member; a read from another member right after sees them
    // (read-index), and so does kubectl against a follower.
    let cms = lookup("cm").unwrap();
    for i in 0..30 {
        let name = format!("rw-{i}");
        clients[i % 3]
            .create(cms, Some("default"), &cm(&name), &[])
            .await
            .unwrap();
        let got = clients[(i + 1) % 3].get(cms, Some("default"), &name).await;
        assert!(
            got.is_ok(),
            "{name} written via server {} not read via server {}",
            i % 3,
            (i + 1) % 3
        );
    }

    // Fencing: writes carrying the leader's term (as the controllers' do) commit only
    // through the leader of exactly that term; a follower does not forward them, and a
    // stale term is refused.
    let fenced = |i: usize, t: u64| clients[i].with_header("x-wk-fence-term", &t.to_string());
    // The leader and its term, read again if an election slips in between (a loaded
    // machine can miss heartbeats).
    let mut fence = None;
    for attempt in 0..5 {
        let now = clients[0].cluster_members().await.unwrap_or_default();
        let (Some(term), Some(leader)) = (
            now["term"].as_u64(),
            entries(&now).find(|m| m["id"] == now["leader"]),
        ) else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let li = server_index(&servers, leader);
        match fenced(li, term)
            .create(
                cms,
                Some("default"),
                &cm(&format!("fenced-ok-{attempt}")),
                &[],
            )
            .await
        {
            Ok(_) => {
                fence = Some((li, term));
                break;
            }
            Err(e) => {
                println!("fenced write in term {term} refused ({e}); reading the leader again")
            }
        }
    }
    let (li, term) = fence.expect("a fenced write through the leader of its term");
    let fi = (li + 1) % 3;
    for (i, t, why) in [(fi, term, "a follower"), (li, term - 1, "a stale term")] {
        let err = fenced(i, t)
            .create(cms, Some("default"), &cm("fenced-no"), &[])
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(409), "{why}: {err}");
        assert!(err.to_string().contains("fenced"), "{why}: {err}");
    }
    assert!(
        clients[0]
            .get(cms, Some("default"), "fenced-no")
            .await
            .is_err()
    );

    // A steady write load on all members; the leader is killed with SIGKILL meanwhile.
    let m = clients[0].cluster_members().await.unwrap_or_default();
    let leader_idx = server_index(&servers, leader_of(&m));
    let acked: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let failed = Arc::new(Mutex::new(0usize));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..6 {
        let (clients, acked, failed, stop) =
            (clients.clone(), acked.clone(), failed.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let name = format!("load-{w}-{i}");
                let c = &clients[(w + i) % 3];
                let sent = Instant::now();
                match tokio::time::timeout(
                    Duration::from_secs(5),
                    c.create(cms, Some("default"), &cm(&name), &[]),
                )
                .await
                {
                    Ok(Ok(_)) => acked.lock().unwrap().push((name, sent)),
                    _ => {
                        *failed.lock().unwrap() += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                i += 1;
            }
        }));
    }
    let acked_after = |since: Instant, n: usize| {
        let acked = acked.clone();
        move || {
            let done = acked
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, t)| *t > since)
                .count()
                >= n;
            async move { done }
        }
    };
    let started = Instant::now();
    wait_for(
        "writes before the kill",
        Duration::from_secs(60),
        acked_after(started, 300),
    )
    .await;
    let killed_at = Instant::now();
    servers[leader_idx].kill9();
    // Load goes on until the survivors have taken a good number of writes sent after
    // the kill (bounded; how fast is the benchmark's question, not this test's).
    wait_for(
        "writes sent after the kill to be acknowledged",
        Duration::from_secs(60),
        acked_after(killed_at, 300),
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    // `acked` holds when each acknowledged write was sent: one sent after the kill cannot
    // have been committed by the old leader.
    let sent_after = acked.iter().filter(|(_, t)| *t > killed_at).count();
    println!(
        "writes acknowledged: {} ({sent_after} sent after the kill), failed or unknown: {}",
        acked.len(),
        failed.lock().unwrap(),
    );
    // No acknowledged write is lost: each survivor lists every one.
    for (i, c) in clients.iter().enumerate() {
        if i == leader_idx {
            continue;
        }
        let have = names(c).await.expect("a healthy server answers");
        let missing: Vec<&String> = acked
            .iter()
            .map(|(n, _)| n)
            .filter(|n| !have.contains(*n))
            .collect();
        assert!(
            missing.is_empty(),
            "server {i} lost acknowledged writes: {missing:?}"
        );
    }
    // The killed server comes back, catches up, and has them all too.
    servers[leader_idx].restart();
    let back = clients[leader_idx].clone();
    let want: BTreeSet<String> = acked.iter().map(|(n, _)| n.clone()).collect();
    wait_for(
        "the restarted server to catch up",
        Duration::from_secs(60),
        || {
            let (back, want) = (back.clone(), want.clone());
            async move { names(&back).await.is_some_and(|have| want.is_subset(&have)) }
        },
    )
    .await;

    // A member is removed; the other two carry on.
    let now = clients[0].cluster_members().await.unwrap_or_default();
    let follower = entries(&now).find(|x| x["id"] != now["leader"]).unwrap();
    let victim = follower["id"].as_u64().unwrap();
    // `wk delete server` through the first server, which hands it to the leader if it
    // is not the leader itself.
    let out = servers[0].wk(&["delete", "server", &victim.to_string()]);
    assert!(
        out.status.success(),
        "removing server {victim}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The removed server was told, and stopped; its data directory is not reused.
    let vi = server_index(&servers, follower);
    wait_exited(&mut servers[vi], "the removed server to stop").await;
    let again = std::process::Command::new(common::WK)
        .args([
            "server",
            "--no-client-config",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(servers[vi].data_dir())
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("removed from its cluster"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // Asked of the leader (a removed server stops hearing about membership).
    let leader_client = clients[server_index(&servers, leader_of(&now))].clone();
    wait_for("two members", Duration::from_secs(30), || {
        let c = leader_client.clone();
        async move {
            c.cluster_members().await.unwrap_or_default()["members"]
                .as_array()
                .is_some_and(|m| m.len() == 2)
        }
    })
    .await;
    leader_client
        .create(cms, Some("default"), &cm("after-removal"), &[])
        .await
        .unwrap();
}

/// A server removed while it was down (nobody could tell it) notices when it comes back
/// and stops, without disturbing the two that remain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_removed_while_down_stops_when_it_comes_back() {
    let (mut servers, clients) = three_servers(&[], TestServer::spawn_with).await;
    let cms = lookup("cm").unwrap();
    let m = clients[0].cluster_members().await.unwrap_or_default();
    // A follower other than the first server (whose client config `wk` uses).
    let follower = entries(&m)
        .find(|x| x["id"] != m["leader"] && server_index(&servers, x) != 0)
        .unwrap();
    let victim = follower["id"].as_u64().unwrap();
    let vi = server_index(&servers, follower);
    // The first server stays, and is the one `wk` talks to.
    let other = 0;
    servers[vi].kill9();
    let out = servers[other].wk(&["delete", "server", &victim.to_string()]);
    assert!(
        out.status.success(),
        "removing server {victim}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    clients[other]
        .create(cms, Some("default"), &cm("while-away"), &[])
        .await
        .unwrap();

    let before = clients[other].cluster_members().await.unwrap_or_default();
    servers[vi].restart();
    wait_exited(&mut servers[vi], "the server removed while away to stop").await;
    assert!(servers[vi].data_dir().join("removed").exists());
    // It forced no election on the two that remain: same leader, same term.
    let after = clients[other].cluster_members().await.unwrap_or_default();
    assert_eq!(
        (&after["leader"], &after["term"]),
        (&before["leader"], &before["term"]),
        "{before} -> {after}"
    );
    // The remaining two still form a cluster of two that takes writes.
    clients[other]
        .create(cms, Some("default"), &cm("after-it-left"), &[])
        .await
        .unwrap();
    let left = clients[other].cluster_members().await.unwrap_or_default();
    assert_eq!(left["members"].as_array().map(Vec::len), Some(2), "{left}");
}

/// A follower that misses thousands of writes, while the leader compacts its log, comes
/// back through a snapshot; then all three servers are killed at once and restarted, and
/// every write is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_catches_up_from_a_snapshot_and_a_full_restart_keeps_everything() {
    let (mut servers, clients) =
        three_servers(&["--snapshot-every", "100"], TestServer::spawn_with).await;
    // Stop a follower.
    let m = clients[0].cluster_members().await.unwrap_or_default();
    let follower = entries(&m)
        .find(|x| x["id"] != m["leader"])
        .unwrap()
        .clone();
    let idx = server_index(&servers, &follower);
    let before = follower["appliedIndex"].as_u64().unwrap();
    servers[idx].kill9();
    let live: Vec<Client> = (0..3)
        .filter(|i| *i != idx)
        .map(|i| clients[i].clone())
        .collect();
    let cms = lookup("cm").unwrap();
    let writes = 10_000;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..16 {
        let (live, next) = (live.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= writes {
                    return;
                }
                live[(w + i) % live.len()]
                    .create(cms, Some("default"), &cm(&format!("bulk-{i}")), &[])
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // The leader has compacted its log (it keeps 100 entries before its snapshot) past
    // what the follower has.
    let leader_metrics = live[0].cluster_members().await.unwrap_or_default();
    let leader_snapshot = leader_of(&leader_metrics)["snapshotIndex"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        leader_snapshot > before + 200,
        "the leader compacted its log (snapshot at {leader_snapshot}, follower at {before})"
    );
    servers[idx].restart();
    let back = clients[idx].clone();
    wait_for(
        "the follower to hold all writes again",
        Duration::from_secs(120),
        || {
            let back = back.clone();
            async move {
                names(&back)
                    .await
                    .is_some_and(|have| count_prefixed(&have, "bulk-") == writes)
            }
        },
    )
    .await;
    let after = live[0].cluster_members().await.unwrap_or_default();
    let me = entries(&after)
        .find(|x| x["id"] == follower["id"])
        .unwrap()
        .clone();
    assert!(
        me["snapshotIndex"].as_u64().unwrap_or(0) > before,
        "it was sent a snapshot: {me}"
    );

    // All three killed at once and restarted: the whole state comes back on each.
    for srv in servers.iter_mut() {
        srv.kill9();
    }
    for srv in servers.iter_mut() {
        srv.restart();
    }
    for (i, c) in clients.iter().enumerate() {
        wait_for(
            &format!("server {i} to serve every write after a full restart"),
            Duration::from_secs(60),
            || {
                let c = c.clone();
                async move {
                    names(&c)
                        .await
                        .is_some_and(|have| count_prefixed(&have, "bulk-") == writes)
                }
            },
        )
        .await;
    }
}

/// Clients and agents learn every server from the responses (`x-wk-servers`) and move to
/// another one when theirs dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_and_agents_fail_over_to_another_server() {
    let (mut servers, pinned) = three_servers(&[], TestServer::spawn_with).await;
    // An agent and a client that know only the first server.
    let agent_dir = tempfile::tempdir().unwrap();
    let _agent = common::start_agent_with(
        &servers[0],
        "ha-node",
        agent_dir.path(),
        &["--runc", "none"],
    );
    let roaming = servers[0].client();
    let leases = lookup("leases").unwrap();
    wait_for("the agent's lease", Duration::from_secs(30), || {
        let c = roaming.clone();
        async move {
            c.get(leases, Some("kube-node-lease"), "ha-node")
                .await
                .is_ok()
        }
    })
    .await;
    let renewed = |c: Client| async move {
        c.get(leases, Some("kube-node-lease"), "ha-node")
            .await
            .ok()
            .and_then(|l| l["spec"]["renewTime"].as_str().map(String::from))
    };
    servers[0].kill9();
    let dead = format!("https://127.0.0.1:{}", servers[0].port);
    // The client's next request goes to a live server.
    let cms = lookup("cm").unwrap();
    let mut created = false;
    for _ in 0..100 {
        if roaming
            .create(cms, Some("default"), &cm("after-failover"), &[])
            .await
            .is_ok()
        {
            created = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(created, "the client wrote through another server");
    assert_ne!(roaming.server(), dead);
    // The agent keeps renewing its lease through another server.
    let live = pinned[1].clone();
    // The renewal time as a live server reads it now (once it can: an election may be
    // running), then a later one.
    let seen: Arc<Mutex<Option<String>>> = Arc::default();
    wait_for(
        "the lease to be readable after the kill",
        Duration::from_secs(30),
        || {
            let (live, seen) = (live.clone(), seen.clone());
            async move {
                let t = renewed(live).await;
                let found = t.is_some();
                *seen.lock().unwrap() = t;
                found
            }
        },
    )
    .await;
    let before = seen.lock().unwrap().clone();
    wait_for(
        "the agent to renew its lease after its server died",
        Duration::from_secs(30),
        || {
            let (live, before) = (live.clone(), before.clone());
            async move { renewed(live).await.is_some_and(|t| Some(t) != before) }
        },
    )
    .await;
}

/// A server whose disk fills up stops acknowledging writes rather than lying; the other
/// two carry on and hold every acknowledged write. (Its data directory is a small tmpfs;
/// needs root.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_a_full_disk_stops_acknowledging() {
    // The third server's data directory: a 6 MiB file system.
    let small = tempfile::tempdir().unwrap();
    let data = small.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mount = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        mount.status.success(),
        "mounting a tmpfs (needs root): {}",
        String::from_utf8_lossy(&mount.stderr)
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .output();
        }
    }
    let _unmount = Unmount(data.clone());
    let (mut servers, clients) =
        three_servers(&[], move |args| TestServer::spawn_in(small, args)).await;
    faulty_third_server_stops_acknowledging(&mut servers, &clients).await;
}

/// A server whose log fsync fails (injected with `WK_FAILPOINT_LOG_FSYNC`) stops
/// acknowledging rather than lying; the other two hold every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_fsync_fails_stops_acknowledging() {
    // Its log commits start failing after 200.
    let (mut servers, clients) = three_servers(&[], |args| {
        TestServer::spawn_with_env(args, &[("WK_FAILPOINT_LOG_FSYNC", "200")])
    })
    .await;
    faulty_third_server_stops_acknowledging(&mut servers, &clients).await;
}

/// Writes through all three servers until the third (whose storage fails) has refused
/// 20; then the other two must take writes and hold every acknowledged one.
async fn faulty_third_server_stops_acknowledging(servers: &mut [TestServer], clients: &[Client]) {
    // 8 writers with ~1 KiB objects through every server, until the faulty one has
    // refused writes for a while.
    let cms = lookup("cm").unwrap();
    let big = "x".repeat(1024);
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let refused_by_faulty = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (clients, acked, refused, next, big) = (
            clients.to_vec(),
            acked.clone(),
            refused_by_faulty.clone(),
            next.clone(),
            big.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            while refused.load(std::sync::atomic::Ordering::Relaxed) < 20 && started.elapsed() < Duration::from_secs(60) {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let name = format!("fill-{i}");
                let target = (w + i) % 3;
                let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"big": big}});
                match tokio::time::timeout(Duration::from_secs(5), clients[target].create(cms, Some("default"), &obj, &[])).await {
                    Ok(Ok(_)) => acked.lock().unwrap().push(name),
                    _ if target == 2 => {
                        refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        refused_by_faulty.load(std::sync::atomic::Ordering::Relaxed) >= 20,
        "the server with failing storage kept acknowledging"
    );
    // The two healthy servers still take writes and hold every acknowledged one.
    clients[0]
        .create(cms, Some("default"), &cm("after-full"), &[])
        .await
        .unwrap();
    let acked = acked.lock().unwrap().clone();
    for c in &clients[..2] {
        let have = names(c).await.expect("a healthy server answers");
        let missing: Vec<&String> = acked.iter().filter(|n| !have.contains(*n)).collect();
        assert!(
            missing.is_empty(),
            "acknowledged writes missing: {missing:?}"
        );
    }
    servers[2].kill9();
}

/// The checker itself: it accepts linearizable histories and rejects the others.
#[test]
fn the_linearizability_checker_tells_histories_apart() {
    let t0 = Instant::now();
    let cas = |from, to| Op::Cas { from, to };
    let ok = |ops: &[(Op, u64, i64)]| linearizable::check(&linearizable::history(t0, ops), 0);
    // Overlapping: the read may come after the CAS.
    assert!(ok(&[(cas(0, 1), 0, 10), (Op::Read(1), 5, 15)]));
    // A read of a value before anyone wrote it.
    assert!(!ok(&[(Op::Read(1), 0, 1), (cas(0, 1), 2, 3)]));
    // A stale read after the write completed.
    assert!(!ok(&[(cas(0, 1), 0, 1), (Op::Read(0), 2, 3)]));
    // Two CAS from the same value cannot both succeed.
    assert!(!ok(&[(cas(0, 1), 0, 5), (cas(0, 2), 0, 5)]));
    // An unknown CAS may have happened...
    assert!(ok(&[(cas(0, 1), 0, -1), (Op::Read(1), 5, 6)]));
    // ...or not, but not both ways round.
    assert!(ok(&[
        (cas(0, 1), 0, -1),
        (Op::Read(0), 5, 6),
        (Op::Read(1), 7, 8)
    ]));
    assert!(!ok(&[
        (cas(0, 1), 0, -1),
        (Op::Read(1), 5, 6),
        (Op::Read(0), 7, 8)
    ]));
}

/// Clients read and compare-and-set one register (a ConfigMap, CAS by resourceVersion)
/// through all three servers while the leader is killed; the recorded history must be
/// linearizable (operations whose outcome is unknown may or may not have happened).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cas_register_stays_linearizable_through_a_leader_kill() {
    let (mut servers, clients) = three_servers(&[], TestServer::spawn_with).await;
    let cms = lookup("cm").unwrap();
    let register = |v: i64| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "register"}, "data": {"v": v.to_string()}});
    clients[0]
        .create(cms, Some("default"), &register(0), &[])
        .await
        .unwrap();
    let value = |o: &Value| o["data"]["v"].as_str().and_then(|v| v.parse::<i64>().ok());

    let history: Arc<Mutex<Vec<linearizable::Entry>>> = Arc::default();
    let dead = Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4usize {
        let (clients, history, dead, stop) =
            (clients.clone(), history.clone(), dead.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut k = 0i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                k += 1;
                let mut target = (w + k as usize) % 3;
                if target == dead.load(std::sync::atomic::Ordering::Relaxed) {
                    target = (target + 1) % 3;
                }
                let c = &clients[target];
                let call = Instant::now();
                let got = tokio::time::timeout(
                    Duration::from_secs(3),
                    c.get(cms, Some("default"), "register"),
                )
                .await;
                let Ok(Ok(obj)) = got else { continue }; // a failed read changes nothing
                let Some(current) = value(&obj) else { continue };
                if k % 2 == 0 {
                    history.lock().unwrap().push(linearizable::Entry {
                        op: Op::Read(current),
                        call,
                        ret: Some(Instant::now()),
                    });
                    continue;
                }
                let new = (w as i64 + 1) * 1_000_000 + k;
                // The CAS is its own operation, from when it is sent.
                let call = Instant::now();
                let mut next = register(new);
                next["metadata"]["resourceVersion"] = obj["metadata"]["resourceVersion"].clone();
                let op = Op::Cas {
                    from: current,
                    to: new,
                };
                match tokio::time::timeout(
                    Duration::from_secs(3),
                    c.replace(cms, Some("default"), "register", &next),
                )
                .await
                {
                    Ok(Ok(_)) => history.lock().unwrap().push(linearizable::Entry {
                        op,
                        call,
                        ret: Some(Instant::now()),
                    }),
                    // The register changed in between: the CAS did not apply.
                    Ok(Err(e)) if e.code() == Some(409) => {}
                    // No answer, or an error after which it may have applied.
                    _ => history.lock().unwrap().push(linearizable::Entry {
                        op,
                        call,
                        ret: None,
                    }),
                }
            }
        }));
    }
    let cas_done_after = |since: Instant| {
        let history = history.clone();
        move || {
            let n = history
                .lock()
                .unwrap()
                .iter()
                .filter(|e| matches!(e.op, Op::Cas { .. }) && e.ret.is_some() && e.call > since)
                .count();
            async move { n >= 200 }
        }
    };
    let started = Instant::now();
    wait_for(
        "CAS operations before the kill",
        Duration::from_secs(60),
        cas_done_after(started),
    )
    .await;
    let m = clients[0].cluster_members().await.unwrap_or_default();
    let l = server_index(&servers, leader_of(&m));
    dead.store(l, std::sync::atomic::Ordering::Relaxed);
    let killed = Instant::now();
    servers[l].kill9();
    // The survivors serve again: CAS operations sent after the kill succeed.
    wait_for(
        "CAS operations after the kill",
        Duration::from_secs(60),
        cas_done_after(killed),
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let history = history.lock().unwrap().clone();
    let cas_ok = history
        .iter()
        .filter(|e| matches!(e.op, Op::Cas { .. }) && e.ret.is_some())
        .count();
    let unknown = history.iter().filter(|e| e.ret.is_none()).count();
    println!(
        "{} operations: {} reads, {cas_ok} successful CAS, {unknown} of unknown outcome",
        history.len(),
        history
            .iter()
            .filter(|e| matches!(e.op, Op::Read(_)))
            .count()
    );
    assert!(
        linearizable::check(&history, 0),
        "the history is not linearizable"
    );
}
