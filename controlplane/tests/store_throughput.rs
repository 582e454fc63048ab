//! Diagnostic (ignored by default): raw Store::write throughput with concurrent writers,
//! without HTTP. Run with `cargo test --release -p wk-controlplane --test store_throughput -- --ignored --nocapture`.

use std::time::Instant;

use wk_controlplane::store::{Op, Precondition, Store, StoreConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn concurrent_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&StoreConfig {
        data_dir: dir.path().to_path_buf(),
        node_id: 1,
        advertise_url: "https://127.0.0.1:1".into(),
        peer_token: "t".into(),
        watch_history: 1000,
        snapshot_every: 100_000,
        initialize: true,
        peer_ca: None,
    })
    .await
    .unwrap();
    store
        .wait_for_leader(std::time::Duration::from_secs(5))
        .await
        .unwrap();
    for writers in [1usize, 64] {
        let n = 6400;
        let start = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..writers {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..n / writers {
                    let key = format!("/k/{writers}/{w}/{i}");
                    s.write_one(Op::Put {
                        key,
                        object: r#"{"metadata":{}}"#.into(),
                        precondition: Precondition::Absent,
                    })
                    .await
                    .unwrap()
                    .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        println!(
            "{writers} writers: {:.0} writes/s",
            n as f64 / start.elapsed().as_secs_f64()
        );
    }
}
