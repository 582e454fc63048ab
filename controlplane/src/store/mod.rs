//! The replicated store: openraft over a redb log and a redb state machine.
//!
//! Every mutation is a [`Command`] proposed through Raft; once committed, each replica's
//! state machine applies it and stamps revisions. Reads come from the local state
//! machine, after a read-index round ([`Store::linearize`]) unless a stale read is asked.

pub mod log;
pub mod network;
pub mod sm;
pub mod types;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Config, SnapshotPolicy};

pub use self::log::LogStore;
pub use self::network::HttpNetwork;
pub use self::sm::{Event, EventType, Expired, SmShared, StateMachine};
pub use self::types::*;

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    pub node_id: NodeId,
    /// The URL peers reach this server at (`http://127.0.0.1:6443`).
    pub advertise_url: String,
    /// Shared secret for server-to-server RPCs.
    pub peer_token: String,
    /// Events retained for watch resumption.
    pub watch_history: usize,
    /// Build a snapshot (and purge the log) after this many entries.
    pub snapshot_every: u64,
    /// Start a one-member cluster if the data dir holds none. `false` for a server that
    /// waits to be added to an existing cluster.
    pub initialize: bool,
    /// The cluster CA (PEM) peers' HTTPS certificates are checked against.
    pub peer_ca: Option<Vec<u8>>,
}

tokio::task_local! {
    /// The Raft term a request is fenced to (`x-wk-fence-term`): its writes commit only
    /// through this server as the leader of exactly that term, and are never forwarded.
    /// Controllers set it, so a deposed leader's controller pass cannot land writes.
    pub static FENCE: u64;
}

/// Store failures that are not about one key.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("opening the store at {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("this server is not the leader (leader: {})", leader.as_deref().unwrap_or("unknown"))]
    NotLeader { leader: Option<String> },
    #[error("raft: {0}")]
    Raft(String),
    /// A forwarded write reached the leader, whose answer never came: it may or may not
    /// have been applied (so it is not reported as "not the leader", which reads as safe
    /// to retry).
    #[error("the write's outcome is unknown: {0}")]
    Unknown(String),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error(
        "fenced: these writes belong to the leader of term {fence}, and this server is not it any more (term {term})"
    )]
    Fenced { fence: u64, term: u64 },
}

/// A handle to the replicated store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub raft: Raft,
    pub sm: Arc<SmShared>,
    pub node_id: NodeId,
    proposals: tokio::sync::mpsc::Sender<Proposal>,
    peers: network::Peers,
}

type OpResults = Vec<Result<Applied, OpError>>;

/// Operations waiting to be proposed, and where their results go.
struct Proposal {
    ops: Vec<Op>,
    expected: usize,
    /// See [`FENCE`].
    fence: Option<u64>,
    reply: tokio::sync::oneshot::Sender<Result<OpResults, StoreError>>,
}

/// Most operations merged into one Raft entry.
const MAX_BATCH_OPS: usize = 1024;

/// Group commit above Raft: openraft 0.9 appends (and fsyncs) one client write at a time,
/// so concurrent writers are merged into one entry here. While one entry is in flight,
/// the next batch gathers; a lone writer still gets a one-operation entry at once.
async fn batcher(
    raft: Raft,
    me: NodeId,
    peers: network::Peers,
    mut rx: tokio::sync::mpsc::Receiver<Proposal>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let mut count = batch[0].ops.len();
        while count < MAX_BATCH_OPS {
            match rx.try_recv() {
                Ok(p) => {
                    count += p.ops.len();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        // Fenced proposals go only while this server leads in their term; a batch that
        // holds any is committed here or not at all.
        let lead = leadership(&raft);
        let (term, leads) = (lead.term, lead.leader == Some(me));
        let (fenced_out, kept): (Vec<Proposal>, Vec<Proposal>) = batch
            .into_iter()
            .partition(|p| p.fence.is_some_and(|f| f != term || !leads));
        for p in fenced_out {
            let fence = p.fence.unwrap_or_default();
            let _ = p.reply.send(Err(StoreError::Fenced { fence, term }));
        }
        let mut batch = kept;
        if batch.is_empty() {
            continue;
        }
        // Fenced operations first: the state machine checks them against the term the
        // entry was proposed in, which closes the gap between this check and the
        // proposal (leadership lost and won back in a later term).
        batch.sort_by_key(|p| p.fence.is_none());
        let fenced_ops: usize = batch
            .iter()
            .filter(|p| p.fence.is_some())
            .map(|p| p.ops.len())
            .sum();
        let fence = (fenced_ops > 0).then_some(types::Fence {
            term,
            ops: fenced_ops,
        });
        let ops: Vec<Op> = batch
            .iter_mut()
            .flat_map(|p| std::mem::take(&mut p.ops))
            .collect();
        let forward_to = (fence.is_none() && lead.leader.is_some() && !leads).then_some(lead);
        let result = commit(&raft, &peers, Command { ops, fence }, forward_to).await;
        match result {
            Ok(results) => {
                let mut results = results.into_iter();
                for p in batch {
                    let n = p.expected;
                    let mine: OpResults = results.by_ref().take(n).collect();
                    let _ = p.reply.send(Ok(mine));
                }
            }
            Err(e) => {
                for p in batch {
                    let _ = p.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// One member of the current Raft membership.
#[derive(Debug, Clone)]
pub struct Member {
    pub id: NodeId,
    pub addr: String,
    pub voter: bool,
}

/// Who leads, as this member knows it.
#[derive(Debug, Clone)]
pub struct Leadership {
    pub term: u64,
    pub leader: Option<NodeId>,
    /// The leader's URL (from the membership).
    pub leader_url: Option<String>,
}

fn leadership(raft: &Raft) -> Leadership {
    let metrics = raft.metrics();
    let m = metrics.borrow();
    Leadership {
        term: m.current_term,
        leader: m.current_leader,
        leader_url: m.current_leader.and_then(|l| {
            m.membership_config
                .membership()
                .get_node(&l)
                .map(|n| n.addr.clone())
        }),
    }
}

/// Commits a command: through Raft on the leader; on a follower (`forward_to` another
/// member's leadership), by forwarding it to the leader and then waiting until this
/// member has applied it too (so what a client wrote here, it reads and watches here).
async fn commit(
    raft: &Raft,
    peers: &network::Peers,
    cmd: Command,
    forward_to: Option<Leadership>,
) -> Result<OpResults, StoreError> {
    if let Some(lead) = forward_to {
        let Some(addr) = lead.leader_url else {
            return Err(StoreError::NotLeader { leader: None });
        };
        let (results, index) = peers.forward_write(&addr, &cmd).await?;
        wait_applied(raft, index).await?;
        return Ok(results);
    }
    match raft.client_write(cmd).await {
        Ok(resp) => Ok(resp.data.results),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Err(StoreError::NotLeader {
                leader: f.leader_node.as_ref().map(|n| n.addr.clone()),
            })
        }
        Err(other) => Err(StoreError::Raft(other.to_string())),
    }
}

/// Waits until this member's state machine has applied `index`.
async fn wait_applied(raft: &Raft, index: u64) -> Result<(), StoreError> {
    raft.wait(Some(Duration::from_secs(30)))
        .applied_index_at_least(Some(index), "forwarded")
        .await
        .map(drop)
        .map_err(|e| StoreError::Raft(format!("waiting to apply index {index}: {e}")))
}

impl Store {
    /// Opens the store in `cfg.data_dir`, starting Raft. A fresh single server initialises
    /// itself as a one-member cluster.
    pub async fn open(cfg: &StoreConfig) -> Result<Store, StoreError> {
        let open_err = |path: &Path, e: &dyn std::fmt::Display| StoreError::Open {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| open_err(&cfg.data_dir, &e))?;
        let log_path = cfg.data_dir.join("raft-log.redb");
        let log = LogStore::open(&log_path).map_err(|e| open_err(&log_path, &e))?;
        let sm_path = cfg.data_dir.join("state.redb");
        let sm = StateMachine::open(
            &sm_path,
            cfg.data_dir.join("snapshot.bin"),
            cfg.watch_history,
        )
        .map_err(|e| open_err(&sm_path, &e))?;
        let shared = sm.shared.clone();

        let config = Config {
            cluster_name: "wk".into(),
            // openraft 0.9 starts an election only after the leader lease (the maximum
            // election timeout) plus this node's random election timeout (drawn once)
            // without a heartbeat: a dead leader is replaced 450–600 ms after its last
            // heartbeat. A split or log-rejected first round costs one more timeout; with
            // 300–600 ms that tail reached 2.4 s.
            heartbeat_interval: 50,
            election_timeout_min: 150,
            election_timeout_max: 300,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_every),
            // Keep enough of the log for a slow follower, never more than a snapshot's worth.
            max_in_snapshot_log_to_keep: cfg.snapshot_every.min(1000),
            // Each snapshot chunk (3 MiB), and for the last one the follower's whole
            // install, must finish within this; openraft's 200 ms default made a new or
            // lagging member on a slow link, or with a large state, retry for ever.
            install_snapshot_timeout: 10_000,
            ..Default::default()
        };
        let config = Arc::new(
            config
                .validate()
                .map_err(|e| StoreError::Raft(e.to_string()))?,
        );
        let peers = network::Peers::new(cfg.peer_token.clone(), cfg.peer_ca.as_deref())
            .map_err(StoreError::Raft)?;
        let network = HttpNetwork::new(peers.clone());
        let raft = Raft::new(cfg.node_id, config, network, log, sm)
            .await
            .map_err(|e| StoreError::Raft(e.to_string()))?;
        if cfg.initialize
            && !raft
                .is_initialized()
                .await
                .map_err(|e| StoreError::Raft(e.to_string()))?
        {
            let mut members = BTreeMap::new();
            members.insert(
                cfg.node_id,
                BasicNode {
                    addr: cfg.advertise_url.clone(),
                },
            );
            raft.initialize(members)
                .await
                .map_err(|e| StoreError::Raft(e.to_string()))?;
        }
        let (proposals, rx) = tokio::sync::mpsc::channel(4096);
        tokio::spawn(batcher(raft.clone(), cfg.node_id, peers.clone(), rx));
        Ok(Store {
            raft,
            sm: shared,
            node_id: cfg.node_id,
            proposals,
            peers,
        })
    }

    /// Waits until this server knows a leader, up to `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId, StoreError> {
        let mut rx = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(l) = rx.borrow().current_leader {
                return Ok(l);
            }
            tokio::select! {
                r = rx.changed() => r.map_err(|e| StoreError::Raft(e.to_string()))?,
                _ = tokio::time::sleep_until(deadline) => return Err(StoreError::NotLeader { leader: None }),
            }
        }
    }

    /// Proposes operations and waits until they are committed and applied here. Inside a
    /// [`FENCE`] scope they commit only through this server as that term's leader.
    #[tracing::instrument(level = "debug", skip_all, fields(ops = ops.len()))]
    pub async fn write(&self, ops: Vec<Op>) -> Result<Vec<Result<Applied, OpError>>, StoreError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let expected = ops.len();
        let fence = FENCE.try_with(|t| *t).ok();
        self.proposals
            .send(Proposal {
                ops,
                expected,
                fence,
                reply,
            })
            .await
            .map_err(|_| StoreError::Raft("the store is shut down".into()))?;
        rx.await
            .map_err(|_| StoreError::Raft("the store is shut down".into()))?
    }

    /// Proposes one operation.
    pub async fn write_one(&self, op: Op) -> Result<Result<Applied, OpError>, StoreError> {
        let mut r = self.write(vec![op]).await?;
        Ok(r.pop().unwrap_or(Err(OpError::NotFound)))
    }

    /// Makes the next local read linearizable (read-index: the leader confirms its
    /// leadership, and this member applies up to the leader's commit index; a follower
    /// asks the leader for that index).
    pub async fn linearize(&self) -> Result<(), StoreError> {
        match self.raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                let Some(node) = f.leader_node else {
                    return Err(StoreError::NotLeader { leader: None });
                };
                if let Some(index) = self.peers.read_index(&node.addr).await? {
                    wait_applied(&self.raft, index).await?;
                }
                Ok(())
            }
            Err(e) => Err(StoreError::Raft(e.to_string())),
        }
    }

    /// Runs a blocking read of the state machine off the async workers.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&SmShared) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let sm = self.sm.clone();
        tokio::task::spawn_blocking(move || f(&sm))
            .await
            .map_err(|e| StoreError::Raft(e.to_string()))?
            .map_err(StoreError::from)
    }

    /// How this server reaches its peers.
    pub fn peers(&self) -> &network::Peers {
        &self.peers
    }

    /// Who leads, as this member knows it.
    pub fn leadership(&self) -> Leadership {
        leadership(&self.raft)
    }

    /// The members of the current membership, in id order.
    pub fn members(&self) -> Vec<Member> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        membership
            .nodes()
            .map(|(id, n)| Member {
                id: *id,
                addr: n.addr.clone(),
                voter: membership.voter_ids().any(|v| v == *id),
            })
            .collect()
    }

    /// The current Raft term, if this server leads in it.
    pub fn leader_term(&self) -> Option<u64> {
        let lead = self.leadership();
        (lead.leader == Some(self.node_id)).then_some(lead.term)
    }

    /// Whether this server is the leader now.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.node_id)
    }

    /// Stops Raft and makes the applied state durable (so a clean restart replays
    /// nothing).
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
        let sm = self.sm.clone();
        let _ = tokio::task::spawn_blocking(move || sm.make_durable()).await;
    }
}
