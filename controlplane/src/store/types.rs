//! Raft type configuration and the commands the state machine applies.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// Raft node id.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Raft types of the wk store.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type LogId = openraft::LogId<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;

/// When an operation may apply, compared with the object currently stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Precondition {
    /// Apply whatever is stored.
    None,
    /// The key must not exist (create).
    Absent,
    /// The key must exist (any revision).
    Present,
    /// The key must exist at exactly this revision (optimistic concurrency).
    Revision(u64),
}

/// One mutation of one key. Objects are JSON documents; the state machine stamps
/// `metadata.resourceVersion` with the revision it assigns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Put {
        key: String,
        object: String,
        precondition: Precondition,
    },
    Delete {
        key: String,
        precondition: Precondition,
    },
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key, .. } => key,
        }
    }
}

/// The application data of a Raft entry: one or more independent operations, applied in
/// order. Batching lets busy writers (the scheduler) commit many objects in one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub ops: Vec<Op>,
    /// The first `fence.ops` operations belong to the leader of term `fence.term` (see
    /// `store::FENCE`): applied only if this entry was proposed in that term.
    pub fence: Option<Fence>,
}

/// Fences a command's leading operations to a Raft term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    pub term: u64,
    pub ops: usize,
}

/// Why an operation did not apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum OpError {
    #[error("key not found")]
    NotFound,
    #[error("key already exists")]
    AlreadyExists,
    #[error("revision mismatch: stored revision is {current}")]
    Conflict { current: u64 },
    #[error("object is not valid JSON: {0}")]
    BadObject(String),
    #[error("fenced: written for the leader of term {fence}, but committed in term {term}")]
    Fenced { fence: u64, term: u64 },
}

/// The outcome of one operation: the stored object (for a delete, its last state) with
/// its new resourceVersion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub revision: u64,
    pub object: String,
}

/// Results of a command, one per operation in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    pub results: Vec<Result<Applied, OpError>>,
}
