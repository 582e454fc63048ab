//! A three-server control plane from real `wk server` processes: servers join with
//! `--join`, any member takes writes (forwarded to the leader) and serves linearizable
//! reads, and killing the leader with SIGKILL under a steady write load loses no
//! acknowledged write.

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wk_api::resource::lookup;
use wk_client::{Client, ClientConfig};

use common::{TestServer, stdout, wait_for};

fn peer_token(s: &TestServer) -> String {
    let v: Value =
        serde_json::from_slice(&std::fs::read(s.data_dir().join("tokens.json")).unwrap()).unwrap();
    v["peer"].as_str().unwrap().to_string()
}

/// A client of one particular server.
fn client_of(first: &TestServer, port: u16) -> Client {
    let base = first.client();
    Client::new(ClientConfig {
        server: format!("https://127.0.0.1:{port}"),
        ..base.config.clone()
    })
    .unwrap()
}

async fn members(c: &Client) -> Value {
    match c
        .request(
            wk_client::Method::GET,
            "/wk/v1/cluster/members",
            &[],
            None,
            None,
        )
        .await
    {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => Value::Null,
    }
}

fn cm(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"v": name}})
}

async fn names(c: &Client) -> BTreeSet<String> {
    let l = c
        .list(
            lookup("cm").unwrap(),
            Some("default"),
            false,
            &Default::default(),
        )
        .await
        .unwrap();
    l["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_join_fail_over_and_lose_no_acknowledged_write() {
    let first = TestServer::start_cluster();
    let token = peer_token(&first);
    let ca = first.ca_path();
    let args = [
        "--join".to_string(),
        first.url.clone(),
        "--token".into(),
        token,
        "--ca-file".into(),
        ca.display().to_string(),
        "--no-client-config".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut servers = vec![first];
    servers.push(TestServer::spawn_with(&args));
    servers.push(TestServer::spawn_with(&args));
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
                let m = members(&c).await;
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

    // A steady write load on all members; the leader is killed with SIGKILL meanwhile.
    let leader_id = members(&clients[0]).await["leader"].as_u64().unwrap();
    let leader_url = members(&clients[0]).await["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"].as_u64() == Some(leader_id))
        .unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    let leader_idx = servers
        .iter()
        .position(|s| leader_url.ends_with(&format!(":{}", s.port)))
        .unwrap();
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
                match tokio::time::timeout(
                    Duration::from_secs(5),
                    c.create(cms, Some("default"), &cm(&name), &[]),
                )
                .await
                {
                    Ok(Ok(_)) => acked.lock().unwrap().push((name, Instant::now())),
                    _ => {
                        *failed.lock().unwrap() += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed_at = Instant::now();
    servers[leader_idx].kill9();
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let before = acked.iter().filter(|(_, t)| *t < killed_at).count();
    let first_after = acked
        .iter()
        .filter(|(_, t)| *t > killed_at)
        .map(|(_, t)| *t - killed_at)
        .min();
    println!(
        "writes acknowledged: {} ({before} before the kill), failed or unknown: {}, first acknowledged write after the kill: {:?}",
        acked.len(),
        failed.lock().unwrap(),
        first_after
    );
    assert!(first_after.is_some(), "the survivors took writes again");
    // No acknowledged write is lost: each survivor lists every one.
    for (i, c) in clients.iter().enumerate() {
        if i == leader_idx {
            continue;
        }
        let have = names(c).await;
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
            async move {
                match back
                    .list(cms, Some("default"), false, &Default::default())
                    .await
                {
                    Ok(l) => {
                        let have: BTreeSet<String> = l["items"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
                            .collect();
                        want.is_subset(&have)
                    }
                    Err(_) => false,
                }
            }
        },
    )
    .await;

    // A member is removed; the other two carry on.
    let now = members(&clients[0]).await;
    let victim = now["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"].as_u64() != now["leader"].as_u64())
        .unwrap()["id"]
        .as_u64()
        .unwrap();
    let path = format!("/wk/v1/cluster/members/{victim}");
    let mut removed = false;
    for c in &clients {
        if let Ok(r) = c
            .request(wk_client::Method::DELETE, &path, &[], None, None)
            .await
        {
            removed = r.status().is_success();
            if removed {
                break;
            }
        }
    }
    assert!(removed, "the leader removed server {victim}");
    // Asked of the leader (a removed server stops hearing about membership).
    let leader = now["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"].as_u64() == now["leader"].as_u64())
        .unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    let leader_client = client_of(
        &servers[0],
        leader.rsplit(':').next().unwrap().parse().unwrap(),
    );
    wait_for("two members", Duration::from_secs(30), || {
        let c = leader_client.clone();
        async move {
            members(&c).await["members"]
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
