//! `wk server`: opens the store, bootstraps the cluster's built-in objects, writes the
//! client config and serves the API (and the Raft RPCs) over HTTPS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use wk_api::resource;

use crate::apiserver::{self, ApiState};
use crate::auth::{self, Tokens};
use crate::pki::{Pki, PkiError};
use crate::store::{Op, Precondition, Store, StoreConfig, StoreError, network};

/// Settings of `wk server`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Where to write the admin client config (kubeconfig format); `None` skips it.
    pub client_config: Option<PathBuf>,
    /// Extra names/addresses for the serving certificate.
    pub tls_sans: Vec<String>,
    pub node_id: u64,
    pub snapshot_every: u64,
    pub watch_history: usize,
    /// Run the scheduler and controllers (on the Raft leader).
    pub controllers: bool,
    /// The range Service cluster IPs are allocated from.
    pub service_cidr: crate::apiserver::ipalloc::ServiceCidr,
    /// Join an existing cluster instead of starting one (ignored once this data
    /// directory belongs to a cluster).
    pub join: Option<Join>,
}

/// How to join a cluster: any member's URL, the admin or peer token, and the cluster CA.
#[derive(Debug, Clone)]
pub struct Join {
    pub url: String,
    pub token: String,
    pub ca_pem: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("writing client config {path}: {source}")]
    ClientConfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("joining the cluster at {url}: {message}")]
    Join { url: String, message: String },
    #[error(
        "{path} belongs to a server removed from its cluster; start with a fresh data directory (and --join) to take part again"
    )]
    Removed { path: PathBuf },
}

/// A started server.
pub struct Server {
    pub store: Store,
    pub tokens: Arc<Tokens>,
    pub addr: SocketAddr,
    pub url: String,
    pub pki: Pki,
    controllers: bool,
    service_cidr: crate::apiserver::ipalloc::ServiceCidr,
    listener: TcpListener,
    acceptor: TlsAcceptor,
    data_dir: PathBuf,
    /// Set when this server still has to ask the leader to add it.
    /// Set while this server is not yet in its cluster's membership: it asks to be added.
    joining: Option<Join>,
}

/// What a joining server is given by the cluster.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct JoinInfo {
    node_id: u64,
    ca_cert: String,
    ca_key: String,
    tokens: Tokens,
}

/// Sends a membership request to the cluster's leader: to `start` first, then wherever a
/// follower points (421 with `leader`). The status code and JSON body.
async fn to_leader(
    peers: &network::Peers,
    start: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<(u16, serde_json::Value), String> {
    let mut target = start.trim_end_matches('/').to_string();
    for _ in 0..5 {
        let (code, v) = peers
            .call(
                method.clone(),
                &format!("{target}{path}"),
                body,
                crate::cluster::MEMBERSHIP_TIMEOUT,
            )
            .await
            .map_err(|e| format!("{target}: {e}"))?;
        if code != 421 {
            return Ok((code, v));
        }
        match v["leader"].as_str() {
            Some(l) => target = l.trim_end_matches('/').to_string(),
            None => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    Err("no leader answered".into())
}

/// Fetches the cluster's CA, tokens and a node id, and writes them into `data_dir`.
async fn fetch_join_info(join: &Join, data_dir: &std::path::Path) -> Result<u64, ServerError> {
    let err = |message: String| ServerError::Join {
        url: join.url.clone(),
        message,
    };
    let peers = network::Peers::new(join.token.clone(), Some(&join.ca_pem)).map_err(err)?;
    let (code, body) = to_leader(
        &peers,
        &join.url,
        reqwest::Method::GET,
        "/wk/v1/cluster/join",
        None,
    )
    .await
    .map_err(err)?;
    if code != 200 {
        return Err(err(format!(
            "it answered {code} (is the token the cluster's admin or peer token?)"
        )));
    }
    let info: JoinInfo =
        serde_json::from_value(body).map_err(|e| err(format!("its answer: {e}")))?;
    let dd = |source| ServerError::DataDir {
        path: data_dir.to_path_buf(),
        source,
    };
    let pki = data_dir.join("pki");
    std::fs::create_dir_all(&pki).map_err(dd)?;
    auth::write_private(&pki.join("ca.crt"), info.ca_cert.as_bytes()).map_err(dd)?;
    auth::write_private(&pki.join("ca.key"), info.ca_key.as_bytes()).map_err(dd)?;
    auth::write_private(
        &data_dir.join("tokens.json"),
        &serde_json::to_vec_pretty(&info.tokens).expect("tokens serialise"),
    )
    .map_err(dd)?;
    Ok(info.node_id)
}

/// Asks the leader (found through `join.url`) to add this server, until it has; if the
/// cluster never does, notifies `stop` (a server outside its cluster serves nothing).
async fn request_membership(
    join: Join,
    id: u64,
    url: String,
    peer_token: String,
    stop: Arc<tokio::sync::Notify>,
) {
    let Ok(peers) = network::Peers::new(peer_token, Some(&join.ca_pem)) else {
        stop.notify_one();
        return;
    };
    let body = json!({"id": id, "url": url});
    for attempt in 0..120 {
        let path = "/wk/v1/cluster/members";
        match to_leader(&peers, &join.url, reqwest::Method::POST, path, Some(&body)).await {
            Ok((200, _)) => {
                tracing::info!(id, "joined the cluster as a voter");
                return;
            }
            Ok((code, answer)) => {
                tracing::warn!(attempt, code, %answer, "the cluster did not add this server yet")
            }
            Err(e) => tracing::warn!(attempt, error = %e, "cannot reach the cluster to join"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tracing::error!(id, "gave up joining the cluster; stopping");
    stop.notify_one();
}

/// Namespaces every cluster has.
const BUILTIN_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

impl Server {
    /// Opens everything and binds the listener; [`Server::serve`] then runs it.
    pub async fn start(cfg: ServerConfig) -> Result<Server, ServerError> {
        let dd = |source| ServerError::DataDir {
            path: cfg.data_dir.clone(),
            source,
        };
        std::fs::create_dir_all(&cfg.data_dir).map_err(dd)?;
        if crate::cluster::removed_marker(&cfg.data_dir).exists() {
            return Err(ServerError::Removed {
                path: cfg.data_dir.clone(),
            });
        }
        // The node id is chosen once (given, or assigned by the cluster when joining) and
        // kept with the data.
        let id_path = cfg.data_dir.join("node-id");
        let member = cfg.data_dir.join("raft-log.redb").exists();
        let saved_id = std::fs::read_to_string(&id_path)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok());
        let node_id = match (&cfg.join, saved_id, member) {
            (Some(j), None, false) => fetch_join_info(j, &cfg.data_dir).await?,
            (_, Some(id), _) => id,
            _ => cfg.node_id,
        };
        std::fs::write(&id_path, node_id.to_string()).map_err(dd)?;
        let tokens = Arc::new(Tokens::load_or_create(&cfg.data_dir).map_err(dd)?);
        let listener =
            TcpListener::bind(cfg.listen)
                .await
                .map_err(|source| ServerError::Listen {
                    addr: cfg.listen,
                    source,
                })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ServerError::Listen {
                addr: cfg.listen,
                source,
            })?;
        let mut sans = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        if !addr.ip().is_unspecified() {
            sans.push(addr.ip().to_string());
        }
        sans.extend(cfg.tls_sans.iter().cloned());
        let pki = Pki::load_or_create(&cfg.data_dir.join("pki"), &sans)?;
        let acceptor = TlsAcceptor::from(pki.server_config()?);
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            addr.ip().to_string()
        };
        let url = if addr.is_ipv6() {
            format!("https://[{host}]:{}", addr.port())
        } else {
            format!("https://{host}:{}", addr.port())
        };

        let store = Store::open(&StoreConfig {
            data_dir: cfg.data_dir.clone(),
            node_id,
            advertise_url: url.clone(),
            peer_token: tokens.peer.clone(),
            watch_history: cfg.watch_history,
            snapshot_every: cfg.snapshot_every,
            initialize: cfg.join.is_none() && !member,
            peer_ca: Some(pki.ca_pem()?.into_bytes()),
        })
        .await?;
        // A joining server has no leader until the cluster adds it (after it serves); a
        // restarted member of a cluster finds one once a quorum is up.
        if cfg.join.is_none() && !member {
            store.wait_for_leader(Duration::from_secs(10)).await?;
        }
        if store.is_leader() {
            bootstrap(&store).await?;
        }
        // Decided from the membership, not from the first start: a server that stopped
        // before the cluster added it asks again when it comes back.
        // (Raft's own state: its metrics start out empty until the core first reports.)
        let member_now = store
            .raft
            .with_raft_state(move |st| {
                st.membership_state
                    .effective()
                    .membership()
                    .get_node(&node_id)
                    .is_some()
            })
            .await
            .map_err(|e| StoreError::Raft(e.to_string()))?;
        let joining = cfg.join.clone().filter(|_| !member_now);
        if let Some(path) = &cfg.client_config {
            auth::write_client_config(path, &url, &tokens.admin, &pki.ca_pem()?).map_err(
                |source| ServerError::ClientConfig {
                    path: path.clone(),
                    source,
                },
            )?;
        }
        Ok(Server {
            store,
            tokens,
            addr,
            url,
            pki,
            controllers: cfg.controllers,
            service_cidr: cfg.service_cidr,
            listener,
            acceptor,
            data_dir: cfg.data_dir.clone(),
            joining,
        })
    }

    /// Serves until `shutdown` resolves, then stops Raft.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>) {
        let state = ApiState {
            store: self.store.clone(),
            tokens: self.tokens.clone(),
            service_cidr: self.service_cidr,
        };
        let rpc = network::RaftRpcState {
            raft: self.store.raft.clone(),
            token: self.tokens.peer.clone(),
        };
        // Stops the server: it was removed from its cluster, or its join was never accepted.
        let stop = Arc::new(tokio::sync::Notify::new());
        let cluster = crate::cluster::ClusterState {
            store: self.store.clone(),
            tokens: self.tokens.clone(),
            data_dir: self.data_dir.clone(),
            removed: stop.clone(),
        };
        tokio::spawn(crate::cluster::notice_removal(cluster.clone()));
        // Clients learn the members from API responses; Raft and membership traffic
        // between servers does not need the header.
        let app = apiserver::router(state)
            .layer(axum::middleware::map_response_with_state(
                self.store.clone(),
                list_servers,
            ))
            .merge(network::router(rpc))
            .merge(crate::cluster::router(cluster));
        if let Some(join) = self.joining.clone() {
            tokio::spawn(request_membership(
                join,
                self.store.node_id,
                self.url.clone(),
                self.tokens.peer.clone(),
                stop.clone(),
            ));
        }
        if self.controllers {
            match self.admin_client() {
                Ok(client) => {
                    tokio::spawn(crate::controllers::run(self.store.clone(), client));
                }
                Err(e) => tracing::error!(error = %e, "controllers not started"),
            }
        }
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                r = self.listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = &mut shutdown => break,
                _ = stop.notified() => break,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = self.acceptor.clone();
            let app = app.clone();
            // The TLS handshake runs in the connection's task so a slow client cannot
            // stall the accept loop.
            tokio::spawn(async move {
                let tls = match acceptor.accept(tcp).await {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "tls handshake failed");
                        return;
                    }
                };
                let service = TowerToHyperService::new(app);
                if let Err(e) = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tls), service)
                    .await
                {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
        self.store.shutdown().await;
    }
}

impl Server {
    /// An API client of this server with admin rights (for the in-process controllers).
    pub fn admin_client(&self) -> Result<wk_client::Client, String> {
        let ca = self.pki.ca_pem().map_err(|e| e.to_string())?;
        wk_client::Client::new(wk_client::ClientConfig {
            server: self.url.clone(),
            servers: Vec::new(),
            token: Some(self.tokens.admin.clone()),
            ca_pem: Some(ca.into_bytes()),
            insecure: false,
            namespace: "default".into(),
        })
        .map_err(|e| e.to_string())
    }
}

/// Every response names the control plane's members (`x-wk-servers`), so long-lived
/// clients (agents, controllers elsewhere) can fail over to another server.
async fn list_servers(
    axum::extract::State(store): axum::extract::State<Store>,
    mut resp: axum::response::Response,
) -> axum::response::Response {
    let urls: Vec<String> = store.members().into_iter().map(|m| m.addr).collect();
    if let Ok(v) = axum::http::HeaderValue::from_str(&urls.join(",")) {
        resp.headers_mut().insert(wk_client::SERVERS_HEADER, v);
    }
    resp
}

/// Creates the built-in namespaces if they are missing.
async fn bootstrap(store: &Store) -> Result<(), StoreError> {
    let rt = resource::by_plural("", "namespaces").expect("namespaces registered");
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let mut ops = Vec::new();
    for ns in BUILTIN_NAMESPACES {
        let key = rt.key(None, ns);
        let k = key.clone();
        if store.read(move |sm| sm.get(&k)).await?.is_some() {
            continue;
        }
        let obj = json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now,
                         "labels": {"kubernetes.io/metadata.name": ns}},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        });
        ops.push(Op::Put {
            key,
            object: obj.to_string(),
            precondition: Precondition::Absent,
        });
    }
    if !ops.is_empty() {
        store.write(ops).await?;
    }
    Ok(())
}
