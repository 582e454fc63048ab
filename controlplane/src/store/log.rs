//! The Raft log persisted in redb.
//!
//! Entries live in a `u64 → postcard bytes` table; the vote, the committed log id and the
//! last purged log id in a small metadata table. Every write commits with redb's default
//! `Immediate` durability (one fsync), and the append callback fires only after that
//! commit returns, so an acknowledged entry survives `kill -9`. Writes run on the
//! blocking thread pool, never on a tokio worker.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{Entry, LogState, RaftLogReader, StorageIOError, Vote};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

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

/// The redb-backed Raft log. Cheap to clone: clones share the database.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
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
        init().map_err(|e| redb::DatabaseError::Storage(redb::StorageError::Io(std::io::Error::other(e.to_string()))))?;
        Ok(LogStore { db: Arc::new(db) })
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

fn read_range(db: &Database, start: Bound<u64>, end: Bound<u64>) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
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
        self.blocking(move |db| read_range(db, start, end)).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        self.blocking(|db| {
            let last_purged_log_id: Option<LogId> = LogStore::get_meta::<Option<LogId>>(db, LAST_PURGED)?.flatten();
            let tx = db.begin_read().map_err(read_err)?;
            let table = tx.open_table(LOG).map_err(read_err)?;
            let last = match table.last().map_err(read_err)? {
                Some((_, v)) => {
                    let e: Entry<TypeConfig> = postcard::from_bytes(v.value()).map_err(read_err)?;
                    Some(e.log_id)
                }
                None => last_purged_log_id,
            };
            Ok(LogState { last_purged_log_id, last_log_id: last })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let vote = *vote;
        self.blocking(move |db| {
            LogStore::put_meta(db, VOTE, &vote).map_err(|_| StorageIOError::write_vote(&std::io::Error::other("vote")).into())
        })
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.blocking(|db| LogStore::get_meta(db, VOTE)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.blocking(move |db| LogStore::put_meta(db, COMMITTED, &committed)).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.blocking(|db| Ok(LogStore::get_meta::<Option<LogId>>(db, COMMITTED)?.flatten())).await
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        // Serialise on the calling task (cheap), write + fsync on the blocking pool.
        let mut encoded = Vec::new();
        for e in entries {
            encoded.push((e.log_id.index, postcard::to_allocvec(&e).map_err(io_err)?));
        }
        let res = self
            .blocking(move |db| {
                let tx = db.begin_write().map_err(io_err)?;
                {
                    let mut table = tx.open_table(LOG).map_err(io_err)?;
                    for (index, bytes) in &encoded {
                        table.insert(*index, bytes.as_slice()).map_err(io_err)?;
                    }
                }
                tx.commit().map_err(io_err)
            })
            .await;
        // Acknowledge only once the commit (and its fsync) has returned.
        match &res {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        res
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(io_err)?;
            {
                let mut table = tx.open_table(LOG).map_err(io_err)?;
                table.retain_in(log_id.index.., |_, _| false).map_err(io_err)?;
            }
            tx.commit().map_err(io_err)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.blocking(move |db| {
            let bytes = postcard::to_allocvec(&Some(log_id)).map_err(io_err)?;
            let tx = db.begin_write().map_err(io_err)?;
            {
                let mut meta = tx.open_table(META).map_err(io_err)?;
                meta.insert(LAST_PURGED, bytes.as_slice()).map_err(io_err)?;
                let mut table = tx.open_table(LOG).map_err(io_err)?;
                table.retain_in(..=log_id.index, |_, _| false).map_err(io_err)?;
            }
            tx.commit().map_err(io_err)
        })
        .await
    }
}
