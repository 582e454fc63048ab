//! The Raft log persisted in redb.
//!
//! Entries live in a `u64 → postcard bytes` table; the vote, the committed log id and the
//! last purged log id in a small metadata table.
//!
//! All writes go through one writer thread, in order. Appends return at once and their
//! callbacks fire after the commit that holds them (redb `Immediate`: durable when
//! `commit` returns), so an acknowledged entry survives `kill -9`. Appends queued while a
//! commit runs are grouped into the next transaction: one fsync for many entries (group
//! commit). Entries not yet committed are served to readers from a pending map.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{Entry, LogState, RaftLogReader, StorageIOError, Vote};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::types::{LogId, NodeId, StorageError, TypeConfig};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";

fn io_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_logs(&e).into()
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_logs(&e).into()
}

type SyncOp = Box<dyn FnOnce(&Database) -> Result<(), StorageError> + Send>;

enum Job {
    /// Entries (log id, encoding) and whom to tell once they are durable.
    Append(Vec<(LogId, Vec<u8>)>, LogFlushed<TypeConfig>),
    /// A metadata write nobody waits for (the committed log id): it rides along with the
    /// next group commit.
    Meta(&'static str, Vec<u8>),
    Sync(
        SyncOp,
        tokio::sync::oneshot::Sender<Result<(), StorageError>>,
    ),
}

/// The redb-backed Raft log. Cheap to clone: clones share the database and the writer.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    pending: Arc<Mutex<BTreeMap<u64, Entry<TypeConfig>>>>,
    writer: Arc<Writer>,
}

/// The writer thread; dropping the last handle stops and joins it, releasing the file.
struct Writer {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn send(&self, job: Job) -> Result<(), StorageError> {
        self.tx
            .as_ref()
            .and_then(|tx| tx.send(job).ok())
            .ok_or_else(|| {
                StorageError::from(StorageIOError::write_logs(&std::io::Error::other(
                    "log writer stopped",
                )))
            })
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Upper bound of appends grouped into one transaction.
const MAX_GROUP: usize = 4096;

/// Fault injection for tests: with `WK_FAILPOINT_LOG_FSYNC=N`, every log commit after the
/// first N fails as a failed fsync would (nothing is written, the caller gets an I/O
/// error), so tests can check that a server whose disk fails stops acknowledging.
fn injected_fsync_failure() -> bool {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static AFTER: OnceLock<Option<u64>> = OnceLock::new();
    static COMMITS: AtomicU64 = AtomicU64::new(0);
    let after = *AFTER.get_or_init(|| {
        std::env::var("WK_FAILPOINT_LOG_FSYNC")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    after.is_some_and(|n| COMMITS.fetch_add(1, Ordering::Relaxed) >= n)
}

fn writer_loop(
    db: Arc<Database>,
    pending: Arc<Mutex<BTreeMap<u64, Entry<TypeConfig>>>>,
    rx: mpsc::Receiver<Job>,
) {
    let mut next: Option<Job> = None;
    loop {
        let job = match next.take() {
            Some(j) => j,
            None => match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            },
        };
        match job {
            Job::Sync(op, reply) => {
                let _ = reply.send(op(&db));
            }
            first @ (Job::Append(..) | Job::Meta(..)) => {
                let mut batch = Vec::new();
                let mut metas = Vec::new();
                match first {
                    Job::Append(e, cb) => batch.push((e, cb)),
                    Job::Meta(k, v) => metas.push((k, v)),
                    Job::Sync(..) => unreachable!("matched above"),
                }
                while batch.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(Job::Append(e, cb)) => batch.push((e, cb)),
                        Ok(Job::Meta(k, v)) => metas.push((k, v)),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let start = std::time::Instant::now();
                let result = (|| -> Result<(), StorageError> {
                    let tx = db.begin_write().map_err(io_err)?;
                    {
                        let mut meta = tx.open_table(META).map_err(io_err)?;
                        for (k, v) in &metas {
                            meta.insert(*k, v.as_slice()).map_err(io_err)?;
                        }
                        let mut table = tx.open_table(LOG).map_err(io_err)?;
                        for (entries, _) in &batch {
                            for (log_id, bytes) in entries {
                                table
                                    .insert(log_id.index, bytes.as_slice())
                                    .map_err(io_err)?;
                            }
                        }
                    }
                    if injected_fsync_failure() {
                        drop(tx);
                        return Err(io_err(std::io::Error::other(
                            "fsync failed (injected by WK_FAILPOINT_LOG_FSYNC)",
                        )));
                    }
                    tx.commit().map_err(io_err)
                })();
                tracing::trace!(
                    appends = batch.len(),
                    elapsed_us = start.elapsed().as_micros() as u64,
                    "log group commit"
                );
                if result.is_ok() {
                    // Durable now: readers find them in the database. An index appended
                    // again meanwhile (after a truncate) keeps its newer, pending entry.
                    let mut p = pending.lock().expect("pending lock");
                    for (entries, _) in &batch {
                        for (log_id, _) in entries {
                            if p.get(&log_id.index).is_some_and(|e| e.log_id == *log_id) {
                                p.remove(&log_id.index);
                            }
                        }
                    }
                }
                // Acknowledge only once the commit (and its fsync) has returned.
                for (_, cb) in batch {
                    match &result {
                        Ok(()) => cb.log_io_completed(Ok(())),
                        Err(e) => cb.log_io_completed(Err(std::io::Error::other(e.to_string()))),
                    }
                }
            }
        }
    }
}

impl LogStore {
    /// Opens (or creates) the log database at `path`.
    pub fn open(path: &Path) -> Result<Self, redb::DatabaseError> {
        let db = Database::create(path)?;
        // Create the tables up front so readers never see them missing.
        let init = || -> Result<(), redb::Error> {
            let tx = db.begin_write()?;
            tx.open_table(LOG)?;
            tx.open_table(META)?;
            tx.commit()?;
            Ok(())
        };
        init().map_err(|e| {
            redb::DatabaseError::Storage(redb::StorageError::Io(std::io::Error::other(
                e.to_string(),
            )))
        })?;
        let db = Arc::new(db);
        let pending = Arc::new(Mutex::new(BTreeMap::new()));
        let (tx, rx) = mpsc::channel();
        let (d, p) = (db.clone(), pending.clone());
        let thread = std::thread::Builder::new()
            .name("wk-raft-log".into())
            .spawn(move || writer_loop(d, p, rx))
            .map_err(|e| redb::DatabaseError::Storage(redb::StorageError::Io(e)))?;
        let writer = Arc::new(Writer {
            tx: Some(tx),
            thread: Some(thread),
        });
        Ok(LogStore {
            db,
            pending,
            writer,
        })
    }

    /// Runs a write on the writer thread, after every write queued before it.
    async fn write_sync(
        &self,
        op: impl FnOnce(&Database) -> Result<(), StorageError> + Send + 'static,
    ) -> Result<(), StorageError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.writer.send(Job::Sync(Box::new(op), tx))?;
        rx.await.map_err(|_| {
            StorageError::from(StorageIOError::write_logs(&std::io::Error::other(
                "log writer stopped",
            )))
        })?
    }

    /// Runs a blocking closure against the database on the blocking pool.
    async fn blocking<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StorageError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StorageError::from(StorageIOError::write_logs(&e)))?
    }

    fn get_meta<T: DeserializeOwned>(db: &Database, key: &str) -> Result<Option<T>, StorageError> {
        let tx = db.begin_read().map_err(read_err)?;
        let table = tx.open_table(META).map_err(read_err)?;
        match table.get(key).map_err(read_err)? {
            Some(v) => Ok(Some(postcard::from_bytes(v.value()).map_err(read_err)?)),
            None => Ok(None),
        }
    }

    fn put_meta<T: Serialize>(db: &Database, key: &str, value: &T) -> Result<(), StorageError> {
        let bytes = postcard::to_allocvec(value).map_err(io_err)?;
        let tx = db.begin_write().map_err(io_err)?;
        {
            let mut table = tx.open_table(META).map_err(io_err)?;
            table.insert(key, bytes.as_slice()).map_err(io_err)?;
        }
        tx.commit().map_err(io_err)
    }
}

fn read_range(
    db: &Database,
    start: Bound<u64>,
    end: Bound<u64>,
) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
    let tx = db.begin_read().map_err(read_err)?;
    let table = tx.open_table(LOG).map_err(read_err)?;
    let mut out = Vec::new();
    for item in table.range::<u64>((start, end)).map_err(read_err)? {
        let (_, v) = item.map_err(read_err)?;
        out.push(postcard::from_bytes(v.value()).map_err(read_err)?);
    }
    Ok(out)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let start = range.start_bound().cloned();
        let end = range.end_bound().cloned();
        // Entries appended but not yet durable come from the pending map (and win over
        // stored ones, which a truncate is about to replace). The map is read first: an
        // entry leaves it only once its commit is durable, so whatever leaves it after
        // this point is in the database read next. (Read the other way round, an entry
        // committed in between would be in neither.)
        let pending: Vec<Entry<TypeConfig>> = self
            .pending
            .lock()
            .expect("pending lock")
            .range((start, end))
            .map(|(_, e)| e.clone())
            .collect();
        let stored = self.blocking(move |db| read_range(db, start, end)).await?;
        if pending.is_empty() {
            return Ok(stored);
        }
        let mut all: BTreeMap<u64, Entry<TypeConfig>> =
            stored.into_iter().map(|e| (e.log_id.index, e)).collect();
        for e in pending {
            all.insert(e.log_id.index, e);
        }
        Ok(all.into_values().collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        self.blocking(|db| {
            let last_purged_log_id: Option<LogId> =
                LogStore::get_meta::<Option<LogId>>(db, LAST_PURGED)?.flatten();
            let tx = db.begin_read().map_err(read_err)?;
            let table = tx.open_table(LOG).map_err(read_err)?;
            let last = match table.last().map_err(read_err)? {
                Some((_, v)) => {
                    let e: Entry<TypeConfig> = postcard::from_bytes(v.value()).map_err(read_err)?;
                    Some(e.log_id)
                }
                None => last_purged_log_id,
            };
            Ok(LogState {
                last_purged_log_id,
                last_log_id: last,
            })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let vote = *vote;
        self.write_sync(move |db| {
            LogStore::put_meta(db, VOTE, &vote)
                .map_err(|_| StorageIOError::write_vote(&std::io::Error::other("vote")).into())
        })
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.blocking(|db| LogStore::get_meta(db, VOTE)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Only an optimisation for restarts (re-apply without waiting for a leader), so it
        // need not be durable before returning: it is written with the next group commit.
        let bytes = postcard::to_allocvec(&committed).map_err(io_err)?;
        self.writer.send(Job::Meta(COMMITTED, bytes))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.blocking(|db| Ok(LogStore::get_meta::<Option<LogId>>(db, COMMITTED)?.flatten()))
            .await
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        // Serialise here (cheap); the writer thread commits and then calls back.
        let mut encoded = Vec::new();
        {
            let mut pending = self.pending.lock().expect("pending lock");
            for e in entries {
                encoded.push((e.log_id, postcard::to_allocvec(&e).map_err(io_err)?));
                pending.insert(e.log_id.index, e);
            }
        }
        self.writer.send(Job::Append(encoded, callback))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.pending
            .lock()
            .expect("pending lock")
            .retain(|i, _| *i < log_id.index);
        self.write_sync(move |db| {
            let tx = db.begin_write().map_err(io_err)?;
            {
                let mut table = tx.open_table(LOG).map_err(io_err)?;
                table
                    .retain_in(log_id.index.., |_, _| false)
                    .map_err(io_err)?;
            }
            tx.commit().map_err(io_err)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.write_sync(move |db| {
            let bytes = postcard::to_allocvec(&Some(log_id)).map_err(io_err)?;
            let tx = db.begin_write().map_err(io_err)?;
            {
                let mut meta = tx.open_table(META).map_err(io_err)?;
                meta.insert(LAST_PURGED, bytes.as_slice()).map_err(io_err)?;
                let mut table = tx.open_table(LOG).map_err(io_err)?;
                table
                    .retain_in(..=log_id.index, |_, _| false)
                    .map_err(io_err)?;
            }
            tx.commit().map_err(io_err)
        })
        .await
    }
}
