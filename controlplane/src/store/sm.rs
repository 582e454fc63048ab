//! The state machine: a revisioned key-value store of JSON objects in redb, plus the watch
//! hub that streams its changes.
//!
//! Applying is deterministic: every replica applies the same entries in the same order and
//! assigns the same revisions. The revision is a cluster-wide counter bumped once per
//! successful operation; it becomes the object's `metadata.resourceVersion`.

use std::collections::VecDeque;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftSnapshotBuilder, Snapshot, StorageIOError};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;

use super::types::*;

const OBJECTS: TableDefinition<&str, &str> = TableDefinition::new("objects");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const LAST_APPLIED: &str = "last_applied";
const MEMBERSHIP: &str = "membership";
const REVISION: &str = "revision";

fn sm_write(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}
fn sm_read(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_state_machine(&e).into()
}
fn snap_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_snapshot(None, &e).into()
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as watches see it. For a delete, `object` is the last state stamped with
/// the deletion's revision.
#[derive(Debug, Clone)]
pub struct Event {
    pub revision: u64,
    pub kind: EventType,
    pub key: String,
    pub object: Arc<Value>,
    /// For a modification, the object before it (as stored: parsed only by watchers
    /// with a selector, which must tell an object leaving their selection).
    pub previous: Option<Arc<str>>,
}

/// Events still in history plus a receiver for everything after them.
pub type Subscription = (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>);

/// A page of a list: the revision read, `(key, JSON)` pairs, and whether more follow.
pub type Page = (u64, Vec<(String, String)>, bool);

/// The objects under several prefixes, read at one revision.
pub type Pages = (u64, Vec<Vec<(String, String)>>);

/// A watch start older than the retained history.
#[derive(Debug, Clone, thiserror::Error)]
#[error("too old resource version: {requested} ({oldest})")]
pub struct Expired {
    pub requested: u64,
    pub oldest: u64,
}

struct HubState {
    history: VecDeque<Arc<Event>>,
    capacity: usize,
    /// Events with a revision ≤ this are no longer available.
    compacted: u64,
    tx: broadcast::Sender<Arc<Event>>,
}

/// Fans applied changes out to watchers and keeps a window of recent events so watches
/// can resume from a resourceVersion, like etcd's history before compaction.
pub struct WatchHub {
    state: Mutex<HubState>,
}

impl WatchHub {
    fn new(capacity: usize, revision: u64) -> Self {
        let (tx, _) = broadcast::channel(8192);
        WatchHub {
            state: Mutex::new(HubState {
                history: VecDeque::new(),
                capacity,
                compacted: revision,
                tx,
            }),
        }
    }

    /// Events after `revision` still in history, and a receiver for all later ones, taken
    /// atomically so that nothing is missed or repeated.
    pub fn subscribe_from(&self, revision: u64) -> Result<Subscription, Expired> {
        let st = self.state.lock().expect("watch hub lock");
        if revision < st.compacted {
            return Err(Expired {
                requested: revision,
                oldest: st.compacted + 1,
            });
        }
        let past = st
            .history
            .iter()
            .filter(|e| e.revision > revision)
            .cloned()
            .collect();
        Ok((past, st.tx.subscribe()))
    }

    /// The oldest revision a watch can start from.
    pub fn compacted(&self) -> u64 {
        self.state.lock().expect("watch hub lock").compacted
    }

    fn publish(&self, events: Vec<Event>) {
        let mut st = self.state.lock().expect("watch hub lock");
        for e in events {
            let e = Arc::new(e);
            st.history.push_back(e.clone());
            while st.history.len() > st.capacity {
                if let Some(old) = st.history.pop_front() {
                    st.compacted = old.revision;
                }
            }
            // No receivers is fine.
            let _ = st.tx.send(e);
        }
    }

    /// After a snapshot install the history no longer connects: end every watch (their
    /// clients re-list) and restart the window at `revision`.
    fn reset(&self, revision: u64) {
        let mut st = self.state.lock().expect("watch hub lock");
        st.history.clear();
        st.compacted = revision;
        let (tx, _) = broadcast::channel(8192);
        st.tx = tx;
    }
}

/// Shared state-machine handle: the database, the hub and the snapshot file.
pub struct SmShared {
    db: Database,
    pub hub: WatchHub,
    snapshot_path: PathBuf,
    snapshot_counter: Mutex<u64>,
}

/// The serialized form of a snapshot.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    revision: u64,
    objects: Vec<(String, String)>,
}

impl SmShared {
    /// The current revision.
    pub fn revision(&self) -> Result<u64, StorageError> {
        let tx = self.db.begin_read().map_err(sm_read)?;
        read_revision(&tx.open_table(META).map_err(sm_read)?)
    }

    /// Reads one object (JSON) by key.
    pub fn get(&self, key: &str) -> Result<Option<String>, StorageError> {
        let tx = self.db.begin_read().map_err(sm_read)?;
        let table = tx.open_table(OBJECTS).map_err(sm_read)?;
        Ok(table
            .get(key)
            .map_err(sm_read)?
            .map(|v| v.value().to_string()))
    }

    /// Reads the objects under `prefix` in key order, starting after `start_after`, at
    /// most `limit` (0 = all) plus whether more remain, with the revision of the read.
    pub fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Page, StorageError> {
        let tx = self.db.begin_read().map_err(sm_read)?;
        let revision = read_revision(&tx.open_table(META).map_err(sm_read)?)?;
        let table = tx.open_table(OBJECTS).map_err(sm_read)?;
        let mut out = Vec::new();
        let mut more = false;
        let range = match start_after {
            Some(k) => {
                table.range::<&str>((std::ops::Bound::Excluded(k), std::ops::Bound::Unbounded))
            }
            None => table.range::<&str>(prefix..),
        }
        .map_err(sm_read)?;
        for item in range {
            let (k, v) = item.map_err(sm_read)?;
            let k = k.value();
            if !k.starts_with(prefix) {
                break;
            }
            if limit > 0 && out.len() == limit {
                more = true;
                break;
            }
            out.push((k.to_string(), v.value().to_string()));
        }
        Ok((revision, out, more))
    }

    /// Reads every object under each of `prefixes` in one read transaction, so all of
    /// them are as of the one revision returned.
    pub fn list_prefixes(&self, prefixes: &[String]) -> Result<Pages, StorageError> {
        let tx = self.db.begin_read().map_err(sm_read)?;
        let revision = read_revision(&tx.open_table(META).map_err(sm_read)?)?;
        let table = tx.open_table(OBJECTS).map_err(sm_read)?;
        let mut out = Vec::with_capacity(prefixes.len());
        for prefix in prefixes {
            let mut items = Vec::new();
            for item in table.range::<&str>(prefix.as_str()..).map_err(sm_read)? {
                let (k, v) = item.map_err(sm_read)?;
                if !k.value().starts_with(prefix.as_str()) {
                    break;
                }
                items.push((k.value().to_string(), v.value().to_string()));
            }
            out.push(items);
        }
        Ok((revision, out))
    }

    fn read_snapshot_file(&self) -> Result<Option<SnapshotFile>, StorageError> {
        match std::fs::read(&self.snapshot_path) {
            Ok(bytes) => Ok(Some(postcard::from_bytes(&bytes).map_err(snap_err)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(snap_err(e)),
        }
    }

    fn write_snapshot_file(&self, file: &SnapshotFile) -> Result<(), StorageError> {
        let bytes = postcard::to_allocvec(file).map_err(snap_err)?;
        let tmp = self.snapshot_path.with_extension("tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(snap_err)?;
            f.write_all(&bytes).map_err(snap_err)?;
            f.sync_all().map_err(snap_err)?;
        }
        std::fs::rename(&tmp, &self.snapshot_path).map_err(snap_err)?;
        // The rename itself is durable only once the directory is.
        let dir = self
            .snapshot_path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(snap_err)?;
        Ok(())
    }
}

fn read_revision(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<u64, StorageError> {
    Ok(match meta.get(REVISION).map_err(sm_read)? {
        Some(v) => postcard::from_bytes(v.value()).map_err(sm_read)?,
        None => 0,
    })
}

/// The last applied log id and membership stored in the metadata table.
fn read_applied(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<(Option<LogId>, StoredMembership), StorageError> {
    let last: Option<LogId> = match meta.get(LAST_APPLIED).map_err(sm_read)? {
        Some(v) => postcard::from_bytes(v.value()).map_err(sm_read)?,
        None => None,
    };
    let membership: StoredMembership = match meta.get(MEMBERSHIP).map_err(sm_read)? {
        Some(v) => postcard::from_bytes(v.value()).map_err(sm_read)?,
        None => StoredMembership::default(),
    };
    Ok((last, membership))
}

/// The redb-backed state machine. Clones share state.
#[derive(Clone)]
pub struct StateMachine {
    pub shared: Arc<SmShared>,
}

impl StateMachine {
    /// Opens (or creates) the state database at `path`; the current snapshot is kept in
    /// `snapshot_path`. `history` is the number of events kept for watch resumption.
    pub fn open(path: &Path, snapshot_path: PathBuf, history: usize) -> Result<Self, StorageError> {
        let db = Database::create(path).map_err(sm_write)?;
        let tx = db.begin_write().map_err(sm_write)?;
        tx.open_table(OBJECTS).map_err(sm_write)?;
        let revision = read_revision(&tx.open_table(META).map_err(sm_write)?)?;
        tx.commit().map_err(sm_write)?;
        Ok(StateMachine {
            shared: Arc::new(SmShared {
                db,
                hub: WatchHub::new(history, revision),
                snapshot_path,
                snapshot_counter: Mutex::new(0),
            }),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&SmShared) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || f(&shared))
            .await
            .map_err(sm_write)?
    }
}

/// Applies one operation inside a write transaction. Returns the result and the event.
fn apply_op(
    objects: &mut redb::Table<&str, &str>,
    revision: &mut u64,
    op: &Op,
) -> Result<(Result<Applied, OpError>, Option<Event>), StorageError> {
    let current = objects
        .get(op.key())
        .map_err(sm_write)?
        .map(|v| v.value().to_string());
    let current_rev = current.as_deref().map(object_revision);
    let precondition = match op {
        Op::Put { precondition, .. } | Op::Delete { precondition, .. } => *precondition,
    };
    let failed = match (precondition, current_rev) {
        (Precondition::Absent, Some(_)) => Some(OpError::AlreadyExists),
        (Precondition::Present | Precondition::Revision(_), None) => Some(OpError::NotFound),
        (Precondition::Revision(want), Some(have)) if want != have => {
            Some(OpError::Conflict { current: have })
        }
        (Precondition::None, None) if matches!(op, Op::Delete { .. }) => Some(OpError::NotFound),
        _ => None,
    };
    if let Some(e) = failed {
        return Ok((Err(e), None));
    }
    match op {
        Op::Put { key, object, .. } => {
            let mut value: Value = match serde_json::from_str(object) {
                Ok(v) => v,
                Err(e) => return Ok((Err(OpError::BadObject(e.to_string())), None)),
            };
            *revision += 1;
            stamp(&mut value, *revision);
            let text = value.to_string();
            objects
                .insert(key.as_str(), text.as_str())
                .map_err(sm_write)?;
            let kind = if current.is_some() {
                EventType::Modified
            } else {
                EventType::Added
            };
            let event = Event {
                revision: *revision,
                kind,
                key: key.clone(),
                object: Arc::new(value),
                previous: current.map(Arc::from),
            };
            Ok((
                Ok(Applied {
                    revision: *revision,
                    object: text,
                }),
                Some(event),
            ))
        }
        Op::Delete { key, .. } => {
            objects.remove(key.as_str()).map_err(sm_write)?;
            *revision += 1;
            let mut value: Value =
                serde_json::from_str(current.as_deref().unwrap_or("{}")).unwrap_or(Value::Null);
            stamp(&mut value, *revision);
            let text = value.to_string();
            let event = Event {
                revision: *revision,
                kind: EventType::Deleted,
                key: key.clone(),
                object: Arc::new(value),
                previous: None,
            };
            Ok((
                Ok(Applied {
                    revision: *revision,
                    object: text,
                }),
                Some(event),
            ))
        }
    }
}

/// The revision stored in an object's `metadata.resourceVersion`.
fn object_revision(json: &str) -> u64 {
    #[derive(Deserialize)]
    struct Meta {
        #[serde(rename = "resourceVersion", default)]
        resource_version: Option<String>,
    }
    #[derive(Deserialize)]
    struct Obj {
        #[serde(default)]
        metadata: Option<Meta>,
    }
    serde_json::from_str::<Obj>(json)
        .ok()
        .and_then(|o| o.metadata?.resource_version?.parse().ok())
        .unwrap_or(0)
}

fn stamp(value: &mut Value, revision: u64) {
    if let Some(obj) = value.as_object_mut() {
        let meta = obj
            .entry("metadata")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(m) = meta.as_object_mut() {
            m.insert(
                "resourceVersion".into(),
                Value::String(revision.to_string()),
            );
        }
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        self.blocking(|sm| {
            let tx = sm.db.begin_read().map_err(sm_read)?;
            read_applied(&tx.open_table(META).map_err(sm_read)?)
        })
        .await
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        self.blocking(move |sm| {
            let mut tx = sm.db.begin_write().map_err(sm_write)?;
            // Applied state need not be durable at once: the entries are durable in the
            // log, which is only purged up to a snapshot, and building a snapshot first
            // makes the state machine durable (see `make_durable`). After a crash the
            // state machine resumes from its last durable commit and openraft re-applies
            // the rest from the log. This saves one fsync per write.
            tx.set_durability(redb::Durability::None)
                .map_err(sm_write)?;
            let mut results = Vec::with_capacity(entries.len());
            let mut events = Vec::new();
            {
                let mut objects = tx.open_table(OBJECTS).map_err(sm_write)?;
                let mut meta = tx.open_table(META).map_err(sm_write)?;
                let mut revision = read_revision(&meta)?;
                let mut last = None;
                for entry in &entries {
                    last = Some(entry.log_id);
                    let mut result = CommandResult::default();
                    match &entry.payload {
                        EntryPayload::Blank => {}
                        EntryPayload::Normal(cmd) => {
                            let term = entry.log_id.leader_id.term;
                            // The first `ops` operations of a command fenced to another
                            // term fail.
                            let fenced = cmd.fence.filter(|f| f.term != term);
                            for (i, op) in cmd.ops.iter().enumerate() {
                                if let Some(f) = fenced.filter(|f| i < f.ops) {
                                    result.results.push(Err(OpError::Fenced {
                                        fence: f.term,
                                        term,
                                    }));
                                    continue;
                                }
                                let (r, ev) = apply_op(&mut objects, &mut revision, op)?;
                                result.results.push(r);
                                events.extend(ev);
                            }
                        }
                        EntryPayload::Membership(m) => {
                            let sm_membership =
                                StoredMembership::new(Some(entry.log_id), m.clone());
                            let bytes = postcard::to_allocvec(&sm_membership).map_err(sm_write)?;
                            meta.insert(MEMBERSHIP, bytes.as_slice())
                                .map_err(sm_write)?;
                        }
                    }
                    results.push(result);
                }
                if let Some(last) = last {
                    let bytes = postcard::to_allocvec(&Some(last)).map_err(sm_write)?;
                    meta.insert(LAST_APPLIED, bytes.as_slice())
                        .map_err(sm_write)?;
                }
                let bytes = postcard::to_allocvec(&revision).map_err(sm_write)?;
                meta.insert(REVISION, bytes.as_slice()).map_err(sm_write)?;
            }
            tx.commit().map_err(sm_write)?;
            tracing::trace!(entries = entries.len(), "state machine applied");
            sm.hub.publish(events);
            Ok(results)
        })
        .await
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let meta = meta.clone();
        let data = snapshot.into_inner();
        self.blocking(move |sm| {
            let body: SnapshotBody = postcard::from_bytes(&data).map_err(snap_err)?;
            let tx = sm.db.begin_write().map_err(sm_write)?;
            {
                let mut objects = tx.open_table(OBJECTS).map_err(sm_write)?;
                objects.retain(|_, _| false).map_err(sm_write)?;
                for (k, v) in &body.objects {
                    objects.insert(k.as_str(), v.as_str()).map_err(sm_write)?;
                }
                let mut m = tx.open_table(META).map_err(sm_write)?;
                let b = postcard::to_allocvec(&body.last_applied).map_err(sm_write)?;
                m.insert(LAST_APPLIED, b.as_slice()).map_err(sm_write)?;
                let b = postcard::to_allocvec(&body.membership).map_err(sm_write)?;
                m.insert(MEMBERSHIP, b.as_slice()).map_err(sm_write)?;
                let b = postcard::to_allocvec(&body.revision).map_err(sm_write)?;
                m.insert(REVISION, b.as_slice()).map_err(sm_write)?;
            }
            tx.commit().map_err(sm_write)?;
            sm.write_snapshot_file(&SnapshotFile { meta, data })?;
            sm.hub.reset(body.revision);
            Ok(())
        })
        .await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        self.blocking(|sm| {
            Ok(sm.read_snapshot_file()?.map(|f| Snapshot {
                meta: f.meta,
                snapshot: Box::new(Cursor::new(f.data)),
            }))
        })
        .await
    }
}

impl SmShared {
    /// Commits with `Immediate` durability, which also persists every earlier
    /// non-durable commit.
    pub fn make_durable(&self) -> Result<(), StorageError> {
        let tx = self.db.begin_write().map_err(sm_write)?;
        {
            let mut meta = tx.open_table(META).map_err(sm_write)?;
            let revision = read_revision(&meta)?;
            let bytes = postcard::to_allocvec(&revision).map_err(sm_write)?;
            meta.insert(REVISION, bytes.as_slice()).map_err(sm_write)?;
        }
        tx.commit().map_err(sm_write)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        self.blocking(|sm| {
            // The log will be purged up to this snapshot: the state must be durable first.
            sm.make_durable()?;
            let tx = sm.db.begin_read().map_err(sm_read)?;
            let meta_t = tx.open_table(META).map_err(sm_read)?;
            let (last_applied, membership) = read_applied(&meta_t)?;
            let revision = read_revision(&meta_t)?;
            let table = tx.open_table(OBJECTS).map_err(sm_read)?;
            let mut objects = Vec::new();
            for item in table.iter().map_err(sm_read)? {
                let (k, v) = item.map_err(sm_read)?;
                objects.push((k.value().to_string(), v.value().to_string()));
            }
            let body = SnapshotBody {
                last_applied,
                membership: membership.clone(),
                revision,
                objects,
            };
            let data = postcard::to_allocvec(&body).map_err(snap_err)?;
            let counter = {
                let mut c = sm.snapshot_counter.lock().expect("snapshot counter");
                *c += 1;
                *c
            };
            let snapshot_id = match last_applied {
                Some(l) => format!("{}-{}-{counter}", l.leader_id, l.index),
                None => format!("--{counter}"),
            };
            let meta = SnapshotMeta {
                last_log_id: last_applied,
                last_membership: membership,
                snapshot_id,
            };
            sm.write_snapshot_file(&SnapshotFile {
                meta: meta.clone(),
                data: data.clone(),
            })?;
            Ok(Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(data)),
            })
        })
        .await
    }
}
