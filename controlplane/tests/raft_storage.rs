//! openraft's storage conformance suite against the redb log and state machine, plus
//! checks of what the suite does not cover: revisions, preconditions, snapshots and
//! persistence across reopen.

use std::io::Cursor;

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftSnapshotBuilder};
use wk_controlplane::store::{
    Command, Fence, LogStore, NodeId, Op, OpError, Precondition, StateMachine, StorageError,
    TypeConfig,
};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = LogStore::open(&dir.path().join("log.redb")).expect("open log");
        let sm = StateMachine::open(
            &dir.path().join("sm.redb"),
            dir.path().join("snap.bin"),
            100,
        )?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_conformance_suite() -> Result<(), StorageError> {
    Suite::test_all(Builder)
}

fn entry(index: u64, ops: Vec<Op>) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::<NodeId>::new(1, 0), index),
        payload: EntryPayload::Normal(Command { ops, fence: None }),
    }
}

fn put(key: &str, json: &str, p: Precondition) -> Op {
    Op::Put {
        key: key.into(),
        object: json.into(),
        precondition: p,
    }
}

#[tokio::test]
async fn revisions_preconditions_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        StateMachine::open(
            &dir.path().join("sm.redb"),
            dir.path().join("snap.bin"),
            100,
        )
        .unwrap()
    };
    let mut sm = open();
    let (past, mut rx) = sm.shared.hub.subscribe_from(0).unwrap();
    assert!(past.is_empty());
    let out = sm
        .apply(vec![
            entry(
                1,
                vec![put(
                    "/a",
                    r#"{"metadata":{"name":"a"}}"#,
                    Precondition::Absent,
                )],
            ),
            entry(
                2,
                vec![
                    put("/a", r#"{"metadata":{"name":"a"}}"#, Precondition::Absent),
                    put(
                        "/a",
                        r#"{"metadata":{"name":"a"},"x":1}"#,
                        Precondition::Revision(7),
                    ),
                    put(
                        "/a",
                        r#"{"metadata":{"name":"a"},"x":2}"#,
                        Precondition::Revision(1),
                    ),
                    Op::Delete {
                        key: "/missing".into(),
                        precondition: Precondition::None,
                    },
                ],
            ),
        ])
        .await
        .unwrap();
    assert_eq!(out[0].results[0].as_ref().unwrap().revision, 1);
    assert_eq!(out[1].results[0], Err(OpError::AlreadyExists));
    assert_eq!(out[1].results[1], Err(OpError::Conflict { current: 1 }));
    let applied = out[1].results[2].as_ref().unwrap();
    assert_eq!(applied.revision, 2);
    assert!(
        applied.object.contains(r#""resourceVersion":"2""#),
        "{}",
        applied.object
    );
    assert_eq!(out[1].results[3], Err(OpError::NotFound));
    let first = rx.recv().await.unwrap();
    assert_eq!((first.revision, first.key.as_str()), (1, "/a"));
    assert_eq!(rx.recv().await.unwrap().revision, 2);

    let snap = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(snap.meta.last_log_id.unwrap().index, 2);
    drop(sm);

    // Reopen: state, revision and the snapshot file are all still there.
    let mut sm = open();
    assert_eq!(sm.shared.revision().unwrap(), 2);
    assert!(sm.shared.get("/a").unwrap().unwrap().contains(r#""x":2"#));
    let (last, _) = sm.applied_state().await.unwrap();
    assert_eq!(last.unwrap().index, 2);
    let cur = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(cur.meta.snapshot_id, snap.meta.snapshot_id);
    // History does not survive a restart: resuming from before it is Expired (410).
    assert!(sm.shared.hub.subscribe_from(1).is_err());
    assert!(sm.shared.hub.subscribe_from(2).is_ok());

    // Installing the snapshot into a fresh machine reproduces the state.
    let dir2 = tempfile::tempdir().unwrap();
    let mut sm2 = StateMachine::open(
        &dir2.path().join("sm.redb"),
        dir2.path().join("snap.bin"),
        100,
    )
    .unwrap();
    let data = cur.snapshot.into_inner();
    sm2.install_snapshot(&cur.meta, Box::new(Cursor::new(data)))
        .await
        .unwrap();
    assert_eq!(sm2.shared.revision().unwrap(), 2);
    let (_, items, more) = sm2.shared.list("/", None, 0).unwrap();
    assert_eq!(items.len(), 1);
    assert!(!more);
}

#[tokio::test]
async fn log_survives_reopen_and_purges() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    {
        let mut log = LogStore::open(&path).unwrap();
        let vote = openraft::Vote::new(3, 1);
        log.save_vote(&vote).await.unwrap();
    }
    let mut log = LogStore::open(&path).unwrap();
    assert_eq!(
        log.read_vote().await.unwrap(),
        Some(openraft::Vote::new(3, 1))
    );
    let state = log.get_log_state().await.unwrap();
    assert!(state.last_log_id.is_none());
}

/// Fenced operations apply only in an entry proposed in their term; the unfenced rest of
/// the entry applies either way.
#[tokio::test]
async fn fenced_operations_apply_only_in_their_term() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::open(
        &dir.path().join("sm.redb"),
        dir.path().join("snap.bin"),
        100,
    )
    .unwrap();
    let fenced = |index: u64, term: u64, fence: u64, key: &str| Entry {
        log_id: LogId::new(CommittedLeaderId::<NodeId>::new(term, 0), index),
        payload: EntryPayload::Normal(Command {
            ops: vec![
                put(key, r#"{"metadata":{"name":"f"}}"#, Precondition::None),
                put(
                    &format!("{key}-free"),
                    r#"{"metadata":{"name":"u"}}"#,
                    Precondition::None,
                ),
            ],
            fence: Some(Fence {
                term: fence,
                ops: 1,
            }),
        }),
    };
    // Proposed in term 5 for a pass fenced to term 3: a leader that lost term 3 and
    // won term 5 must not commit the old pass's write.
    let out = sm
        .apply(vec![fenced(1, 5, 3, "/stale"), fenced(2, 5, 5, "/current")])
        .await
        .unwrap();
    assert_eq!(
        out[0].results[0],
        Err(OpError::Fenced { fence: 3, term: 5 })
    );
    assert!(out[0].results[1].is_ok(), "{:?}", out[0].results[1]);
    assert!(out[1].results.iter().all(Result::is_ok), "{:?}", out[1]);
    let state = sm.shared.clone();
    assert!(state.get("/stale").unwrap().is_none());
    assert!(state.get("/stale-free").unwrap().is_some());
    assert!(state.get("/current").unwrap().is_some());
}
