//! Control-plane membership over HTTP (`/wk/v1/cluster/...`), for the admin token or
//! another server's peer token:
//!
//! - `GET join` (on the leader): what a server joining the cluster needs: a node id, the
//!   cluster CA (cert and key, so it issues its own serving certificate), the tokens;
//! - `GET members`: every member with its role and Raft progress (asked of each member);
//! - `POST members` `{"id", "url"}`: on the leader, adds the server as a learner, waits
//!   until it has caught up (snapshot and log), then makes it a voter (joint consensus);
//! - `DELETE members/{id}`: removes a voter (a follower hands the request to the leader),
//!   then tells the removed server (`POST leave`), which stops. A server removed while
//!   it was down notices when it comes back (`notice_removal`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use openraft::{BasicNode, ChangeMembers};
use serde_json::{Value, json};

use crate::auth::{Identity, Tokens};
use crate::store::Store;

/// How long a membership request handed to another member may take (adding a learner
/// waits for it to catch up).
pub(crate) const MEMBERSHIP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

#[derive(Clone)]
pub struct ClusterState {
    pub store: Store,
    pub tokens: Arc<Tokens>,
    pub data_dir: PathBuf,
    /// Notified when the cluster has removed this server (`POST leave`): it stops.
    pub removed: Arc<tokio::sync::Notify>,
}

fn allowed(state: &ClusterState, headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(wk_api::auth::bearer)
        .and_then(|t| state.tokens.identify(t))
        .is_some_and(|i| matches!(i, Identity::Admin | Identity::Peer))
}

fn denied() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"message": "the admin or peer token is required"})),
    )
        .into_response()
}

/// Answered by a follower to a request only the leader can serve.
fn not_leader(store: &Store) -> Response {
    (
        StatusCode::MISDIRECTED_REQUEST,
        axum::Json(
            json!({"message": "this server is not the leader", "leader": store.leadership().leader_url}),
        ),
    )
        .into_response()
}

async fn join(State(s): State<ClusterState>, headers: HeaderMap) -> Response {
    if !allowed(&s, &headers) {
        return denied();
    }
    if !s.store.is_leader() {
        return not_leader(&s.store);
    }
    let next_id = match reserve_node_id(&s.store).await {
        Ok(id) => id,
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"message": format!("reserving a node id: {e}")})),
            )
                .into_response();
        }
    };
    let read = |f: &str| std::fs::read_to_string(s.data_dir.join("pki").join(f));
    let (Ok(cert), Ok(key)) = (read("ca.crt"), read("ca.key")) else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the cluster CA is not readable here",
        )
            .into_response();
    };
    axum::Json(json!({
        "nodeId": next_id,
        "caCert": cert,
        "caKey": key,
        "tokens": {"admin": s.tokens.admin, "node": s.tokens.node, "peer": s.tokens.peer},
        "leader": s.store.leadership().leader_url,
    }))
    .into_response()
}

/// Where handed-out node ids are recorded, one key per id.
const NODE_ID_PREFIX: &str = "/registry/wk/servernodeids/";

/// A node id no member has and no earlier join was given: each id is a store key
/// written "must not exist" (as Service addresses are), so joins that overlap, or are
/// served by different leaders, never get the same one. The search starts above the
/// highest id this server knows of, so only a join that overlaps costs a second write.
async fn reserve_node_id(store: &Store) -> Result<u64, crate::store::StoreError> {
    use crate::store::{Op, OpError, Precondition};
    let (_, given, _) = store.read(|sm| sm.list(NODE_ID_PREFIX, None, 0)).await?;
    let highest = given
        .iter()
        .filter_map(|(k, _)| k[NODE_ID_PREFIX.len()..].parse::<u64>().ok())
        .chain(store.members().iter().map(|m| m.id))
        .max()
        .unwrap_or(0);
    let mut id = highest + 1;
    loop {
        let op = Op::Put {
            key: format!("{NODE_ID_PREFIX}{id}"),
            object: json!({"nodeId": id}).to_string(),
            precondition: Precondition::Absent,
        };
        match store.write_one(op).await? {
            Err(OpError::AlreadyExists) => id += 1,
            _ => return Ok(id),
        }
    }
}

async fn members(State(s): State<ClusterState>, headers: HeaderMap) -> Response {
    if !allowed(&s, &headers) {
        return denied();
    }
    let lead = s.store.leadership();
    let asks = s.store.members().into_iter().map(|m| {
        let peers = s.store.peers().clone();
        async move {
            let metrics = peers.metrics(&m.addr).await;
            (m, metrics)
        }
    });
    let mut out = Vec::new();
    for (m, metrics) in futures::future::join_all(asks).await {
        let role = if m.voter { "voter" } else { "learner" };
        let mut member = json!({"id": m.id, "url": m.addr, "role": role});
        match metrics {
            Ok(v) => {
                member["state"] = v["state"].clone();
                member["term"] = v["current_term"].clone();
                member["lastLogIndex"] = v["last_log_index"].clone();
                member["appliedIndex"] = v
                    .pointer("/last_applied/index")
                    .cloned()
                    .unwrap_or(Value::Null);
                member["snapshotIndex"] =
                    v.pointer("/snapshot/index").cloned().unwrap_or(Value::Null);
            }
            Err(e) => member["error"] = json!(e),
        }
        out.push(member);
    }
    axum::Json(json!({"leader": lead.leader, "term": lead.term, "members": out})).into_response()
}

#[derive(serde::Deserialize)]
struct NewMember {
    id: u64,
    url: String,
}

async fn add(
    State(s): State<ClusterState>,
    headers: HeaderMap,
    axum::Json(m): axum::Json<NewMember>,
) -> Response {
    if !allowed(&s, &headers) {
        return denied();
    }
    if !s.store.is_leader() {
        return not_leader(&s.store);
    }
    let raft = &s.store.raft;
    if let Err(e) = raft
        .add_learner(
            m.id,
            BasicNode {
                addr: m.url.clone(),
            },
            true,
        )
        .await
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"message": format!("adding server {} as a learner: {e}", m.id)})),
        )
            .into_response();
    }
    let voters = ChangeMembers::AddVoterIds(BTreeSet::from([m.id]));
    match raft.change_membership(voters, false).await {
        Ok(_) => {
            tracing::info!(id = m.id, url = %m.url, "server joined as a voter");
            axum::Json(json!({"id": m.id, "url": m.url, "role": "voter"})).into_response()
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"message": format!("promoting server {}: {e}", m.id)})),
        )
            .into_response(),
    }
}

async fn remove(
    State(s): State<ClusterState>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Response {
    if !allowed(&s, &headers) {
        return denied();
    }
    if !s.store.is_leader() {
        // Handed to the leader, so `wk delete server` works against any member.
        let Some(leader) = s.store.leadership().leader_url else {
            return not_leader(&s.store);
        };
        let url = format!(
            "{}/wk/v1/cluster/members/{id}",
            leader.trim_end_matches('/')
        );
        return match s
            .store
            .peers()
            .call(reqwest::Method::DELETE, &url, None, MEMBERSHIP_TIMEOUT)
            .await
        {
            Ok((code, body)) => (
                StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY),
                axum::Json(body),
            )
                .into_response(),
            Err(e) => (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"message": format!("the leader: {e}")})),
            )
                .into_response(),
        };
    }
    let Some(crate::store::Member { addr, voter, .. }) =
        s.store.members().into_iter().find(|m| m.id == id)
    else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"message": format!("server {id} is not a member")})),
        )
            .into_response();
    };
    match s
        .store
        .raft
        // A learner (a join that never got promoted) is no voter to remove: drop the node.
        .change_membership(
            if voter {
                ChangeMembers::RemoveVoters(BTreeSet::from([id]))
            } else {
                ChangeMembers::RemoveNodes(BTreeSet::from([id]))
            },
            false,
        )
        .await
    {
        Ok(_) => {
            // Tell it, so it stops instead of running on alone (best effort: it may be
            // down; a removed server that comes back is refused by its peers' lease).
            let told = if id == s.store.node_id {
                leave_cluster(&s);
                true
            } else {
                let url = format!("{}/wk/v1/cluster/leave", addr.trim_end_matches('/'));
                s.store
                    .peers()
                    .call(reqwest::Method::POST, &url, None, MEMBERSHIP_TIMEOUT)
                    .await
                    .is_ok_and(|(code, _)| code == 200)
            };
            axum::Json(json!({"removed": id, "told": told})).into_response()
        }
        Err(e) => (
            StatusCode::CONFLICT,
            axum::Json(json!({"message": format!("removing server {id}: {e}")})),
        )
            .into_response(),
    }
}

/// `POST leave`: the cluster has removed this server; it marks its data directory (a
/// restart with it is refused) and stops.
async fn leave(State(s): State<ClusterState>, headers: HeaderMap) -> Response {
    if !allowed(&s, &headers) {
        return denied();
    }
    leave_cluster(&s);
    axum::Json(json!({"leaving": s.store.node_id})).into_response()
}

/// Marks the data directory as removed (a restart with it is refused) and stops.
fn leave_cluster(s: &ClusterState) {
    let _ = std::fs::write(removed_marker(&s.data_dir), b"");
    tracing::warn!("removed from the cluster; stopping");
    s.removed.notify_one();
}

/// The file that marks a data directory as a removed server's.
pub fn removed_marker(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("removed")
}

/// How long a member may know no leader before it asks its peers whether it is still a
/// member.
const LEADERLESS: std::time::Duration = std::time::Duration::from_secs(2);

/// Notices a removal this server missed: it was down when it was removed, so `POST
/// leave` never reached it, and the leader no longer sends it anything. While it knows
/// no leader, it asks the other members of its last membership for their Raft state; one
/// that follows a leader under a later membership without this server means it was
/// removed, and it leaves as if told.
pub async fn notice_removal(s: ClusterState) {
    let me = s.store.node_id;
    let mut leaderless_since: Option<std::time::Instant> = None;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let (leader, known, others) = {
            let m = s.store.raft.metrics();
            let m = m.borrow();
            let membership = m.membership_config.membership();
            let others: Vec<String> = membership
                .nodes()
                .filter(|(id, _)| **id != me)
                .map(|(_, n)| n.addr.clone())
                .collect();
            let member = membership.get_node(&me).is_some();
            (
                m.current_leader,
                member.then(|| m.membership_config.log_id().map(|l| l.index)),
                others,
            )
        };
        // A server still joining is in no membership yet: nothing to notice.
        let Some(known) = known else {
            leaderless_since = None;
            continue;
        };
        if leader.is_some() {
            leaderless_since = None;
            continue;
        }
        let since = *leaderless_since.get_or_insert_with(std::time::Instant::now);
        if since.elapsed() < LEADERLESS {
            continue;
        }
        for addr in others {
            let Ok(v) = s.store.peers().metrics(&addr).await else {
                continue;
            };
            let Ok(theirs) = serde_json::from_value::<openraft::RaftMetrics<u64, BasicNode>>(v)
            else {
                continue;
            };
            let later = theirs.membership_config.log_id().map(|l| l.index) > known;
            if theirs.current_leader.is_some()
                && later
                && theirs
                    .membership_config
                    .membership()
                    .get_node(&me)
                    .is_none()
            {
                tracing::warn!(peer = %addr, "the cluster removed this server while it was away");
                leave_cluster(&s);
                return;
            }
        }
        leaderless_since = None;
    }
}

/// The `/wk/v1/cluster` routes.
pub fn router(state: ClusterState) -> Router {
    Router::new()
        .route("/wk/v1/cluster/join", get(join))
        .route("/wk/v1/cluster/members", get(members).post(add))
        .route("/wk/v1/cluster/members/{id}", delete(remove))
        .route("/wk/v1/cluster/leave", axum::routing::post(leave))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Op, Precondition, StoreConfig};

    /// Ids come from above the highest one handed out before, and joins that overlap
    /// still get one each.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn node_ids_start_above_those_given_and_never_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig {
            data_dir: dir.path().to_path_buf(),
            node_id: 1,
            advertise_url: "https://127.0.0.1:1".into(),
            peer_token: "t".into(),
            watch_history: 100,
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
        // An earlier join was given 5 and has not become a member (yet, or ever).
        store
            .write_one(Op::Put {
                key: format!("{NODE_ID_PREFIX}5"),
                object: json!({"nodeId": 5}).to_string(),
                precondition: Precondition::Absent,
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reserve_node_id(&store).await.unwrap(), 6);
        let overlapping = futures::future::join_all((0..4).map(|_| reserve_node_id(&store))).await;
        let mut ids: Vec<u64> = overlapping.into_iter().map(Result::unwrap).collect();
        ids.sort();
        assert_eq!(ids, [7, 8, 9, 10]);
        store.shutdown().await;
    }
}
