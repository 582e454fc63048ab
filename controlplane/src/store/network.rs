//! Raft RPCs between control-plane servers over HTTP.
//!
//! Each RPC is a `POST` of a postcard-encoded request to `/raft/{append,vote,snapshot}` on
//! the peer's API address, answered with the postcard-encoded `Result` of the peer's Raft
//! call. The same code serves one server or many; with one server it is simply unused.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StoreError;
use super::types::{Applied, Command, CommandResult, NodeId, OpError, Raft, TypeConfig};

/// How this server reaches its peers: an HTTP client trusting the cluster CA, and the
/// peer token it authenticates with. Carries the Raft RPCs, and the writes and read-index
/// requests a follower forwards to the leader.
#[derive(Clone)]
pub struct Peers {
    client: reqwest::Client,
    token: String,
}

impl Peers {
    pub fn new(token: String, ca_pem: Option<&[u8]>) -> Result<Peers, String> {
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .pool_idle_timeout(std::time::Duration::from_secs(30));
        if let Some(pem) = ca_pem {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let cert =
                reqwest::Certificate::from_pem(pem).map_err(|e| format!("the cluster CA: {e}"))?;
            b = b.add_root_certificate(cert);
        }
        Ok(Peers {
            client: b.build().map_err(|e| format!("peer client: {e}"))?,
            token,
        })
    }

    /// POSTs postcard bytes to `/raft/{path}` on the member at `addr`; its answer's bytes.
    async fn post_raw(
        &self,
        addr: &str,
        path: &str,
        body: Vec<u8>,
        timeout: std::time::Duration,
    ) -> Result<Bytes, PostError> {
        let resp = self
            .client
            .post(format!("{}/raft/{path}", addr.trim_end_matches('/')))
            .bearer_auth(&self.token)
            .timeout(timeout)
            .body(body)
            .send()
            .await
            .map_err(PostError::Send)?;
        if !resp.status().is_success() {
            return Err(PostError::Status(resp.status()));
        }
        resp.bytes().await.map_err(PostError::Read)
    }

    /// A forwarded request to the leader at `addr`, and its decoded answer.
    async fn forward<T: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<T, StoreError> {
        let bytes = self
            .post_raw(addr, path, body, std::time::Duration::from_secs(30))
            .await
            .map_err(|e| match e {
                // Nothing reached the leader: safe to try again.
                PostError::Send(e) if e.is_connect() => StoreError::NotLeader {
                    leader: Some(format!("{addr} (unreachable: {e})")),
                },
                PostError::Send(e) => {
                    StoreError::Unknown(format!("the leader at {addr} did not answer: {e}"))
                }
                PostError::Status(code) => StoreError::Raft(format!("the leader answered {code}")),
                PostError::Read(e) => StoreError::Raft(format!("reading the leader's answer: {e}")),
            })?;
        let r: Result<T, ForwardError> = postcard::from_bytes(&bytes)
            .map_err(|e| StoreError::Raft(format!("the leader's answer: {e}")))?;
        r.map_err(|e| match e {
            ForwardError::NotLeader(leader) => StoreError::NotLeader { leader },
            ForwardError::Raft(m) => StoreError::Raft(m),
        })
    }

    /// Has the leader at `addr` commit `cmd`; returns the results and the entry's index.
    pub async fn forward_write(
        &self,
        addr: &str,
        cmd: &Command,
    ) -> Result<(Vec<Result<Applied, OpError>>, u64), StoreError> {
        let body = postcard::to_allocvec(cmd).map_err(|e| StoreError::Raft(e.to_string()))?;
        let (res, index): (CommandResult, u64) = self.forward(addr, "write", body).await?;
        Ok((res.results, index))
    }

    /// Sends a cluster-management request to another member (with the peer token):
    /// its status code and JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&serde_json::Value>,
        timeout: std::time::Duration,
    ) -> Result<(u16, serde_json::Value), String> {
        let mut req = self
            .client
            .request(method, url)
            .bearer_auth(&self.token)
            .timeout(timeout);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| format!("unreachable: {e}"))?;
        let code = resp.status().as_u16();
        Ok((code, resp.json().await.unwrap_or_default()))
    }

    /// A member's Raft metrics (`GET /raft/metrics`), as JSON.
    pub async fn metrics(&self, addr: &str) -> Result<serde_json::Value, String> {
        let url = format!("{}/raft/metrics", addr.trim_end_matches('/'));
        match self
            .call(
                reqwest::Method::GET,
                &url,
                None,
                std::time::Duration::from_secs(2),
            )
            .await?
        {
            (200, v) => Ok(v),
            (code, _) => Err(format!("answered {code}")),
        }
    }

    /// The leader's read index (it has confirmed its leadership with a quorum).
    pub async fn read_index(&self, addr: &str) -> Result<Option<u64>, StoreError> {
        self.forward(addr, "read-index", Vec::new()).await
    }
}

/// Why a POST to a peer failed.
enum PostError {
    Send(reqwest::Error),
    Status(reqwest::StatusCode),
    Read(reqwest::Error),
}

/// Why the leader did not take a forwarded request.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum ForwardError {
    /// It is no longer the leader (the new one, if known).
    NotLeader(Option<String>),
    Raft(String),
}

/// Creates Raft RPC clients to peers.
#[derive(Clone)]
pub struct HttpNetwork {
    peers: Peers,
}

impl HttpNetwork {
    pub fn new(peers: Peers) -> Self {
        HttpNetwork { peers }
    }
}

/// A connection to one peer.
pub struct PeerClient {
    target: NodeId,
    addr: String,
    peers: Peers,
}

impl RaftNetworkFactory<TypeConfig> for HttpNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            target,
            addr: node.addr.clone(),
            peers: self.peers.clone(),
        }
    }
}

impl PeerClient {
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body =
            postcard::to_allocvec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let bytes = self
            .peers
            .post_raw(&self.addr, path, body, option.hard_ttl())
            .await
            .map_err(|e| match e {
                PostError::Send(e) if e.is_connect() => RPCError::Unreachable(Unreachable::new(&e)),
                PostError::Send(e) | PostError::Read(e) => RPCError::Network(NetworkError::new(&e)),
                PostError::Status(code) => RPCError::Network(NetworkError::new(
                    &std::io::Error::other(format!("peer answered {code}")),
                )),
            })?;
        let result: Result<Resp, RaftError<NodeId, E>> =
            postcard::from_bytes(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call("snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("vote", &rpc, &option).await
    }
}

/// State for the RPC handlers.
#[derive(Clone)]
pub struct RaftRpcState {
    pub raft: Raft,
    pub token: String,
}

fn authorized(state: &RaftRpcState, headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(wk_api::auth::bearer)
        .is_some_and(|t| wk_api::auth::constant_time_eq(t.as_bytes(), state.token.as_bytes()))
}

fn reply<T: Serialize>(value: &T) -> axum::response::Response {
    match postcard::to_allocvec(value) {
        Ok(bytes) => (StatusCode::OK, bytes).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Decodes a request, runs the Raft call, encodes its result.
async fn rpc<Req, Resp, Fut>(
    s: &RaftRpcState,
    headers: &HeaderMap,
    body: &[u8],
    call: impl FnOnce(Raft, Req) -> Fut,
) -> axum::response::Response
where
    Req: DeserializeOwned,
    Resp: Serialize,
    Fut: std::future::Future<Output = Resp>,
{
    if !authorized(s, headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match postcard::from_bytes::<Req>(body) {
        Ok(req) => reply(&call(s.raft.clone(), req).await),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn append(
    State(s): State<RaftRpcState>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    rpc(
        &s,
        &headers,
        &body,
        |raft, req: AppendEntriesRequest<TypeConfig>| async move { raft.append_entries(req).await },
    )
    .await
}

async fn vote(
    State(s): State<RaftRpcState>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    rpc(
        &s,
        &headers,
        &body,
        |raft, req: VoteRequest<NodeId>| async move { raft.vote(req).await },
    )
    .await
}

async fn snapshot(
    State(s): State<RaftRpcState>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    rpc(&s, &headers, &body, |raft, req: InstallSnapshotRequest<TypeConfig>| async move { raft.install_snapshot(req).await }).await
}

/// `POST /raft/write`: a follower's forwarded command, committed here if this member is
/// the leader; answers the results and the entry's log index.
async fn write(
    State(s): State<RaftRpcState>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    rpc(&s, &headers, &body, |raft, cmd: Command| async move {
        match raft.client_write(cmd).await {
            Ok(resp) => Ok((resp.data, resp.log_id.index)),
            Err(RaftError::APIError(openraft::error::ClientWriteError::ForwardToLeader(f))) => {
                Err(ForwardError::NotLeader(f.leader_node.map(|n| n.addr)))
            }
            Err(e) => Err(ForwardError::Raft(e.to_string())),
        }
    })
    .await
}

/// `POST /raft/read-index`: confirms leadership with a quorum and answers the index a
/// linearizable read must wait for.
async fn read_index(State(s): State<RaftRpcState>, headers: HeaderMap) -> axum::response::Response {
    if !authorized(&s, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let r: Result<Option<u64>, ForwardError> = match s.raft.ensure_linearizable().await {
        Ok(id) => Ok(id.map(|l| l.index)),
        Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
            Err(ForwardError::NotLeader(f.leader_node.map(|n| n.addr)))
        }
        Err(e) => Err(ForwardError::Raft(e.to_string())),
    };
    reply(&r)
}

/// `GET /raft/metrics`: this member's Raft metrics as JSON (state, term, leader, log
/// indexes, last snapshot, purged index, membership), for operators and tests.
async fn metrics(State(s): State<RaftRpcState>, headers: HeaderMap) -> axum::response::Response {
    if !authorized(&s, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let m = s.raft.metrics().borrow().clone();
    axum::Json(m).into_response()
}

/// Largest Raft RPC body accepted: appends carry up to `max_payload_entries` entries of
/// up to 1,024 operations each, and snapshots come in chunks (axum's default limit is
/// 2 MiB, which a busy cluster's append or a snapshot chunk exceeds).
const MAX_RPC_BODY: usize = 512 << 20;

/// The `/raft/*` routes.
pub fn router(state: RaftRpcState) -> Router {
    Router::new()
        .route("/raft/metrics", axum::routing::get(metrics))
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .route("/raft/write", post(write))
        .route("/raft/read-index", post(read_index))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_RPC_BODY))
        .with_state(state)
}
