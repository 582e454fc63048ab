//! wk-client: an HTTP client for the wk API server (and any Kubernetes-shaped API).
//!
//! It reads the kubeconfig-format client config that `wk server` writes, trusts the
//! cluster CA from it, authenticates with the bearer token and turns `Status` replies into
//! [`ClientError::Api`].

use std::path::{Path, PathBuf};

use base64::Engine;
use futures::{Stream, StreamExt};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::Value;
use wk_api::Status;
use wk_api::resource::ResourceType;

pub use reqwest::Method;

/// Client failures.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a `Status`.
    #[error("{0}")]
    Api(Status),
    /// A request that cannot be sent as asked (a name that is no name).
    #[error("{0}")]
    Invalid(String),
    #[error("cannot reach the API server at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("client config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("unexpected reply from the server: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The HTTP code of an API error.
    pub fn code(&self) -> Option<u16> {
        match self {
            ClientError::Api(s) => Some(s.code),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// Where the API server is and how to authenticate.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub server: String,
    /// Other control-plane servers to fall back to (the kubeconfig cluster extension
    /// `wk.dev/servers`).
    pub servers: Vec<String>,
    pub token: Option<String>,
    pub ca_pem: Option<Vec<u8>>,
    pub insecure: bool,
    /// The context's default namespace.
    pub namespace: String,
}

/// The default client config path: `$WK_CONFIG`, else `~/.wk/config`.
pub fn default_config_path() -> PathBuf {
    if let Ok(p) = std::env::var("WK_CONFIG") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
    Path::new(&home).join(".wk").join("config")
}

impl ClientConfig {
    /// Loads the current context of a kubeconfig file.
    pub fn load(path: &Path) -> Result<ClientConfig> {
        let err = |message: String| ClientError::Config {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            err(if e.kind() == std::io::ErrorKind::NotFound {
                "not found; start a server with `wk server` (or `wk up`), or pass --kubeconfig"
                    .into()
            } else {
                e.to_string()
            })
        })?;
        let doc: Value =
            serde_yaml::from_str(&text).map_err(|e| err(format!("invalid YAML: {e}")))?;
        let current = doc
            .get("current-context")
            .and_then(Value::as_str)
            .unwrap_or("");
        let find = |list: &str, name: &str| -> Option<Value> {
            doc.get(list)?
                .as_array()?
                .iter()
                .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
                .cloned()
        };
        let ctx = find("contexts", current)
            .or_else(|| doc.get("contexts")?.as_array()?.first().cloned())
            .ok_or_else(|| err("no context".into()))?;
        let ctx = ctx.get("context").cloned().unwrap_or_default();
        let cluster_name = ctx.get("cluster").and_then(Value::as_str).unwrap_or("");
        let user_name = ctx.get("user").and_then(Value::as_str).unwrap_or("");
        let cluster = find("clusters", cluster_name)
            .and_then(|c| c.get("cluster").cloned())
            .ok_or_else(|| err(format!("cluster {cluster_name:?} not found")))?;
        let user = find("users", user_name)
            .and_then(|u| u.get("user").cloned())
            .unwrap_or_default();
        let server = cluster
            .get("server")
            .and_then(Value::as_str)
            .ok_or_else(|| err("cluster has no server".into()))?
            .trim_end_matches('/')
            .to_string();
        let ca_pem = match cluster
            .get("certificate-authority-data")
            .and_then(Value::as_str)
        {
            Some(b64) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|e| err(format!("certificate-authority-data: {e}")))?,
            ),
            None => match cluster.get("certificate-authority").and_then(Value::as_str) {
                Some(file) => Some(std::fs::read(file).map_err(|e| err(format!("{file}: {e}")))?),
                None => None,
            },
        };
        let servers = cluster
            .get("extensions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|e| e.get("name").and_then(Value::as_str) == Some("wk.dev/servers"))
            .filter_map(|e| e.pointer("/extension/servers")?.as_array().cloned())
            .flatten()
            .filter_map(|v| v.as_str().map(|s| s.trim_end_matches('/').to_string()))
            .collect();
        Ok(ClientConfig {
            server,
            servers,
            token: user.get("token").and_then(Value::as_str).map(String::from),
            ca_pem,
            insecure: cluster
                .get("insecure-skip-tls-verify")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            namespace: ctx
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_string(),
        })
    }
}

/// An API client. Cheap to clone (clones share the warnings list).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    pub config: ClientConfig,
    warnings: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Every control-plane server known (the configured ones, and those the servers list
    /// in `x-wk-servers`), and the one in use: a request that cannot connect moves on to
    /// the next server.
    servers: std::sync::Arc<std::sync::Mutex<Servers>>,
    /// Headers sent with every request (see [`Client::with_header`]).
    headers: Vec<(String, String)>,
}

/// The servers a client can use.
#[derive(Debug, Default)]
struct Servers {
    all: Vec<String>,
    current: usize,
    /// Always the configured server (tests of one particular member).
    pinned: bool,
}

/// The response header in which a server lists every member of the control plane.
pub const SERVERS_HEADER: &str = "x-wk-servers";

/// One event of a watch stream.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    pub kind: String,
    pub object: Value,
}

/// Parameters of a list or watch.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub limit: Option<u64>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub timeout_seconds: Option<u64>,
    pub allow_bookmarks: bool,
}

impl ListParams {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(s) = &self.label_selector {
            q.push(("labelSelector", s.clone()));
        }
        if let Some(s) = &self.field_selector {
            q.push(("fieldSelector", s.clone()));
        }
        if let Some(l) = self.limit {
            q.push(("limit", l.to_string()));
        }
        if let Some(c) = &self.continue_token {
            q.push(("continue", c.clone()));
        }
        if let Some(rv) = &self.resource_version {
            q.push(("resourceVersion", rv.clone()));
        }
        if let Some(t) = self.timeout_seconds {
            q.push(("timeoutSeconds", t.to_string()));
        }
        if self.allow_bookmarks {
            q.push(("allowWatchBookmarks", "true".into()));
        }
        q
    }
}

/// The path of one object, once its name is known to be one path segment: an empty
/// name would reach the whole collection (a DELETE there deletes every object of the
/// kind), and `..` a different resource.
fn object_path(rt: &ResourceType, ns: Option<&str>, name: &str) -> Result<String> {
    match ResourceType::invalid_name(name) {
        Some(why) => Err(ClientError::Invalid(why)),
        None => Ok(rt.object_path(ns, name)),
    }
}

/// How long a connection attempt to a server may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);
/// How often an open connection is checked (HTTP/2 ping, TCP keepalive probe).
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a ping may go unanswered (and a TCP connection idle before its probes).
const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The Accept header asking for server-side tables.
pub const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";

impl Client {
    pub fn new(config: ClientConfig) -> Result<Client> {
        // A server that drops connection attempts (partitioned, host down) counts as
        // unreachable after this, so the request moves to another server instead of
        // waiting out the kernel's connect timeout (about two minutes).
        //
        // A server that vanishes without closing its connections (powered off,
        // partitioned) is noticed on them too: HTTP/2 pings every 5 s must be answered
        // within 10 s, else the connection and every request on it, watches included,
        // fail and are retried on a new one; TCP keepalive does the same for HTTP/1.1.
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .http2_keep_alive_while_idle(true)
            .tcp_keepalive(KEEPALIVE_TIMEOUT)
            .tcp_keepalive_interval(KEEPALIVE_INTERVAL)
            .tcp_keepalive_retries(2u32);
        if let Some(pem) = &config.ca_pem {
            let cert = reqwest::Certificate::from_pem(pem).map_err(|e| ClientError::Config {
                path: PathBuf::new(),
                message: format!("CA certificate: {e}"),
            })?;
            b = b.add_root_certificate(cert).tls_built_in_root_certs(false);
        }
        if config.insecure {
            b = b.danger_accept_invalid_certs(true);
        }
        let http = b.build().map_err(|e| ClientError::Config {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        let mut all = vec![config.server.clone()];
        for s in &config.servers {
            if !all.contains(s) {
                all.push(s.clone());
            }
        }
        Ok(Client {
            http,
            config,
            warnings: Default::default(),
            servers: std::sync::Arc::new(std::sync::Mutex::new(Servers {
                all,
                current: 0,
                pinned: false,
            })),
            headers: Vec::new(),
        })
    }

    /// Loads a client from a kubeconfig file.
    pub fn from_path(path: &Path) -> Result<Client> {
        Client::new(ClientConfig::load(path)?)
    }

    /// A copy of this client that sends `name: value` with every request.
    pub fn with_header(&self, name: &str, value: &str) -> Client {
        let mut c = self.clone();
        c.headers.retain(|(n, _)| n != name);
        c.headers.push((name.to_string(), value.to_string()));
        c
    }

    /// A client that only ever talks to its configured server (no fail-over).
    pub fn pinned(self) -> Client {
        self.servers.lock().expect("servers lock").pinned = true;
        self
    }

    /// The server requests go to now.
    pub fn server(&self) -> String {
        let s = self.servers.lock().expect("servers lock");
        s.all[s.current].clone()
    }

    /// Moves on from `failed` to the next known server; false if there is no other.
    fn fail_over(&self, failed: &str) -> bool {
        let mut s = self.servers.lock().expect("servers lock");
        if s.all.len() < 2 || s.pinned {
            return false;
        }
        if s.all[s.current] == failed {
            s.current = (s.current + 1) % s.all.len();
        }
        true
    }

    /// Learns the members a server listed.
    fn learn_servers(&self, header: &str) {
        let mut s = self.servers.lock().expect("servers lock");
        if s.pinned {
            return;
        }
        for url in header.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            let url = url.trim_end_matches('/').to_string();
            if !s.all.contains(&url) {
                s.all.push(url);
            }
        }
    }

    fn connect_err(&self, e: reqwest::Error) -> ClientError {
        let mut message = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            message = format!("{message}: {s}");
            src = s.source();
        }
        ClientError::Connect {
            url: self.server(),
            message,
        }
    }

    /// Sends a request and returns the response if it succeeded.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<(&str, Vec<u8>)>,
        accept: Option<&str>,
    ) -> Result<reqwest::Response> {
        let attempts = self.servers.lock().expect("servers lock").all.len();
        let mut attempt = 0;
        // Shared, not copied, by each attempt.
        let body = body.map(|(ct, b)| (ct, bytes::Bytes::from(b)));
        let resp = loop {
            let server = self.server();
            let mut req = self
                .http
                .request(method.clone(), format!("{server}{path}"))
                .query(query);
            if let Some(t) = &self.config.token {
                req = req.bearer_auth(t);
            }
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            for (n, v) in &self.headers {
                req = req.header(n.as_str(), v.as_str());
            }
            if let Some((ct, bytes)) = &body {
                req = req.header(CONTENT_TYPE, *ct).body(bytes.clone());
            }
            match req.send().await {
                Ok(r) => break r,
                // Nothing reached that server: another one may take the request.
                Err(e) if e.is_connect() && attempt + 1 < attempts && self.fail_over(&server) => {
                    attempt += 1;
                }
                Err(e) => return Err(self.connect_err(e)),
            }
        };
        if let Some(h) = resp
            .headers()
            .get(SERVERS_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            self.learn_servers(h);
        }
        for w in resp.headers().get_all(reqwest::header::WARNING) {
            if let Ok(text) = w.to_str() {
                // `299 - "message"`: keep the message.
                let msg = text
                    .splitn(3, ' ')
                    .nth(2)
                    .unwrap_or(text)
                    .trim_matches('"')
                    .to_string();
                self.warnings.lock().expect("warnings lock").push(msg);
            }
        }
        if resp.status().is_success() {
            return Ok(resp);
        }
        let code = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.connect_err(e))?;
        Err(ClientError::Api(
            match serde_json::from_slice::<Status>(&bytes) {
                Ok(s) if !s.message.is_empty() || !s.reason.is_empty() => s,
                _ => Status::new(
                    code.as_u16(),
                    code.canonical_reason().unwrap_or(""),
                    String::from_utf8_lossy(&bytes).trim().to_string(),
                ),
            },
        ))
    }

    async fn json(&self, resp: reqwest::Response) -> Result<Value> {
        let bytes = resp.bytes().await.map_err(|e| self.connect_err(e))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    fn ns<'a>(&'a self, rt: &ResourceType, ns: Option<&'a str>) -> Option<&'a str> {
        if rt.namespaced {
            Some(ns.unwrap_or(&self.config.namespace))
        } else {
            None
        }
    }

    pub async fn get(&self, rt: &ResourceType, ns: Option<&str>, name: &str) -> Result<Value> {
        let resp = self
            .request(
                Method::GET,
                &object_path(rt, self.ns(rt, ns), name)?,
                &[],
                None,
                None,
            )
            .await?;
        self.json(resp).await
    }

    /// Like [`Client::get`] but `None` when not found.
    pub async fn get_opt(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>> {
        match self.get(rt, ns, name).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.code() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Lists a resource; `ns = None` with a namespaced resource lists all namespaces only
    /// if `all_namespaces`.
    pub async fn list(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        all_namespaces: bool,
        p: &ListParams,
    ) -> Result<Value> {
        let ns = if all_namespaces {
            None
        } else {
            self.ns(rt, ns)
        };
        let resp = self
            .request(Method::GET, &rt.collection_path(ns), &p.query(), None, None)
            .await?;
        self.json(resp).await
    }

    /// The control plane's members (`GET /wk/v1/cluster/members`): the leader, its term,
    /// and each member's role and Raft progress.
    pub async fn cluster_members(&self) -> Result<Value> {
        let resp = self
            .request(Method::GET, "/wk/v1/cluster/members", &[], None, None)
            .await?;
        self.json(resp).await
    }

    /// Server-side table of a list or one object.
    pub async fn table(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        all_namespaces: bool,
        name: Option<&str>,
        p: &ListParams,
    ) -> Result<Value> {
        let ns = if all_namespaces {
            None
        } else {
            self.ns(rt, ns)
        };
        let path = match name {
            Some(n) => object_path(rt, ns, n)?,
            None => rt.collection_path(ns),
        };
        let resp = self
            .request(Method::GET, &path, &p.query(), None, Some(TABLE_ACCEPT))
            .await?;
        self.json(resp).await
    }

    pub async fn create(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        obj: &Value,
        query: &[(&str, String)],
    ) -> Result<Value> {
        let body = serde_json::to_vec(obj).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let resp = self
            .request(
                Method::POST,
                &rt.collection_path(self.ns(rt, ns)),
                query,
                Some(("application/json", body)),
                None,
            )
            .await?;
        self.json(resp).await
    }

    pub async fn replace(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        obj: &Value,
    ) -> Result<Value> {
        let body = serde_json::to_vec(obj).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let resp = self
            .request(
                Method::PUT,
                &object_path(rt, self.ns(rt, ns), name)?,
                &[],
                Some(("application/json", body)),
                None,
            )
            .await?;
        self.json(resp).await
    }

    /// PATCH with a content type (`application/merge-patch+json`, …).
    pub async fn patch(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        content_type: &str,
        patch: &Value,
        query: &[(&str, String)],
    ) -> Result<Value> {
        let body = serde_json::to_vec(patch).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let resp = self
            .request(
                Method::PATCH,
                &object_path(rt, self.ns(rt, ns), name)?,
                query,
                Some((content_type, body)),
                None,
            )
            .await?;
        self.json(resp).await
    }

    /// PATCH a subresource (`status`, `scale`) of an object with a merge patch.
    pub async fn patch_subresource(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        subresource: &str,
        patch: &Value,
    ) -> Result<Value> {
        let body = serde_json::to_vec(patch).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let path = format!("{}/{subresource}", object_path(rt, self.ns(rt, ns), name)?);
        let resp = self
            .request(
                Method::PATCH,
                &path,
                &[],
                Some(("application/merge-patch+json", body)),
                None,
            )
            .await?;
        self.json(resp).await
    }

    pub async fn delete(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        options: &Value,
    ) -> Result<Value> {
        let body = serde_json::to_vec(options).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let resp = self
            .request(
                Method::DELETE,
                &object_path(rt, self.ns(rt, ns), name)?,
                &[],
                Some(("application/json", body)),
                None,
            )
            .await?;
        self.json(resp).await
    }

    /// Opens a watch; events arrive as parsed lines. `table` asks for one-row tables.
    pub async fn watch(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        all_namespaces: bool,
        p: &ListParams,
        table: bool,
    ) -> Result<impl Stream<Item = Result<WatchEvent>> + use<>> {
        let ns = if all_namespaces {
            None
        } else {
            self.ns(rt, ns)
        };
        let mut q = p.query();
        q.push(("watch", "true".into()));
        let accept = if table { Some(TABLE_ACCEPT) } else { None };
        let resp = self
            .request(Method::GET, &rt.collection_path(ns), &q, None, accept)
            .await?;
        let server = self.server();
        let mut buf = Vec::new();
        let bytes = resp.bytes_stream();
        Ok(bytes
            .map(move |chunk| {
                let chunk = chunk.map_err(|e| ClientError::Connect {
                    url: server.clone(),
                    message: e.to_string(),
                })?;
                buf.extend_from_slice(&chunk);
                let mut events = Vec::new();
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let v: Value = serde_json::from_slice(&line)
                        .map_err(|e| ClientError::Protocol(e.to_string()))?;
                    events.push(Ok(WatchEvent {
                        kind: v
                            .get("type")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        object: v.get("object").cloned().unwrap_or_default(),
                    }));
                }
                Ok(futures::stream::iter(events))
            })
            .flat_map(|r: Result<_>| match r {
                Ok(s) => s.left_stream(),
                Err(e) => futures::stream::iter(vec![Err(e)]).right_stream(),
            }))
    }

    /// Warnings the server sent (`Warning` headers) since the last call.
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().expect("warnings lock"))
    }

    /// The server's `/version`.
    pub async fn server_version(&self) -> Result<Value> {
        let resp = self
            .request(Method::GET, "/version", &[], None, None)
            .await?;
        self.json(resp).await
    }
}

/// True if an error is "not found".
pub fn is_not_found(e: &ClientError) -> bool {
    e.code() == Some(StatusCode::NOT_FOUND.as_u16())
}

/// True if an error is "already exists" (409 with reason `AlreadyExists`).
pub fn is_already_exists(e: &ClientError) -> bool {
    matches!(e, ClientError::Api(s) if s.code == 409 && s.reason == "AlreadyExists")
}
