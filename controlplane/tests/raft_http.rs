//! Two stores replicating over the HTTP Raft transport (`/raft/*` on real loopback
//! sockets): a second member is added as a learner, caught up, promoted to voter, and
//! receives every committed write; its watch hub sees them too. (Joining through `wk
//! server --join` and failover are the HA issue; this is the transport they use.)

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::BasicNode;
use wk_controlplane::store::network::{RaftRpcState, router};
use wk_controlplane::store::{Op, Precondition, Store, StoreConfig};

async fn serve(store: &Store, listener: tokio::net::TcpListener) {
    let app = router(RaftRpcState {
        raft: store.raft.clone(),
        token: "peer-secret".into(),
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
}

async fn open(dir: &std::path::Path, id: u64, url: &str, initialize: bool) -> Store {
    Store::open(&StoreConfig {
        data_dir: dir.to_path_buf(),
        node_id: id,
        advertise_url: url.to_string(),
        peer_token: "peer-secret".into(),
        watch_history: 1000,
        snapshot_every: 50,
        initialize,
        peer_ca: None,
    })
    .await
    .unwrap()
}

fn put(i: usize) -> Op {
    Op::Put {
        key: format!("/configmaps/default/c{i}"),
        object: format!(r#"{{"metadata":{{"name":"c{i}"}}}}"#),
        precondition: Precondition::Absent,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_member_catches_up_and_replicates_over_http() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let l1 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let l2 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (u1, u2) = (
        format!("http://{}", l1.local_addr().unwrap()),
        format!("http://{}", l2.local_addr().unwrap()),
    );
    let a = open(d1.path(), 1, &u1, true).await;
    serve(&a, l1).await;
    a.wait_for_leader(Duration::from_secs(10)).await.unwrap();
    // Writes before the second member exists: it gets them from a snapshot (every 50
    // entries, the log purged behind it) and the log.
    for i in 0..120 {
        a.write_one(put(i)).await.unwrap().unwrap();
    }
    let b = open(d2.path(), 2, &u2, false).await;
    serve(&b, l2).await;
    a.raft
        .add_learner(2, BasicNode { addr: u2.clone() }, true)
        .await
        .unwrap();
    a.raft
        .change_membership(BTreeSet::from([1, 2]), false)
        .await
        .unwrap();
    for i in 120..200 {
        a.write_one(put(i)).await.unwrap().unwrap();
    }
    let last = a.sm.revision().unwrap();
    // The follower applies everything the leader committed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while b.sm.revision().unwrap() < last {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the follower did not catch up: {} < {last}",
            b.sm.revision().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in [0, 119, 120, 199] {
        let key = format!("/configmaps/default/c{i}");
        assert_eq!(a.sm.get(&key).unwrap(), b.sm.get(&key).unwrap(), "{key}");
        assert!(b.sm.get(&key).unwrap().is_some(), "{key}");
    }
    let m = b.raft.metrics().borrow().clone();
    assert_eq!(m.current_leader, Some(1));
    assert!(
        m.membership_config.membership().voter_ids().any(|v| v == 2),
        "promoted to voter"
    );
    // Both members now form the quorum: with the follower gone, writes cannot commit.
    b.shutdown().await;
    let stalled = tokio::time::timeout(Duration::from_secs(2), a.write_one(put(999))).await;
    assert!(stalled.is_err(), "a write needs a majority of two");
}
