//! One pod on this node: admission, volumes, env, containers through the runtime, probes,
//! restarts per `restartPolicy`, status reports, graceful stop.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use wk_api::objects::{Requests, pod_requests, quantity_field, rfc3339};
use wk_api::resource::lookup;
use wk_api::runtime::{
    ContainerConfig, ContainerState, Limits, LogConfig, Mount, PodIdentity, PortBinding,
    PullOptions, PullPolicy, RegistryCredential, Runtime, Security,
};

use crate::Agent;
use crate::probe::{self, ProbeEvent, Probes};
use crate::runtimes::PodRuntime;

/// Tells a pod's task to stop, with the grace period of the deletion when it gives one
/// (`kubectl delete --grace-period`: `metadata.deletionGracePeriodSeconds`), else the
/// pod's own `terminationGracePeriodSeconds`.
#[derive(Default)]
pub(crate) struct StopSignal {
    notify: Notify,
    grace: std::sync::Mutex<Option<Duration>>,
}

impl StopSignal {
    fn stop(&self, grace: Option<Duration>) {
        *self.grace.lock().expect("grace lock") = grace;
        self.notify.notify_one();
    }

    async fn notified(&self) {
        self.notify.notified().await
    }

    /// The grace period to stop with: the deletion's, or `spec`.
    fn grace_or(&self, spec: Duration) -> Duration {
        self.grace.lock().expect("grace lock").unwrap_or(spec)
    }
}

/// What the agent keeps per admitted pod.
pub(crate) struct PodHandle {
    stop: Arc<StopSignal>,
    done: watch::Receiver<bool>,
    /// `namespace/name`, to drop the pod's log directory when it goes.
    key: String,
    /// What the pod requests, counted while it is not done.
    pub(crate) requests: Requests,
}

impl PodHandle {
    pub(crate) fn is_done(&self) -> bool {
        *self.done.borrow()
    }
}

/// Restart back-off: 1 s doubling to 60 s (the kubelet's is 10 s to 5 min; Wasm components
/// start in milliseconds, so wk retries sooner). It resets after 10 min of running, as the
/// kubelet's does.
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
const BACKOFF_RESET: Duration = Duration::from_secs(600);

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

/// The key of a container in the agent's exec table: `namespace/pod/container`.
fn running_key(pod: &Value, container: &str) -> String {
    format!(
        "{}/{}/{container}",
        s(pod, "/metadata/namespace"),
        s(pod, "/metadata/name")
    )
}

/// The pod's host name: `spec.hostname`, or its name.
fn pod_hostname(pod: &Value) -> &str {
    match s(pod, "/spec/hostname") {
        "" => s(pod, "/metadata/name"),
        h => h,
    }
}

fn ts(t: &jiff::Timestamp) -> String {
    rfc3339(*t)
}

fn state_json(st: &ContainerState) -> Value {
    match st {
        ContainerState::Waiting { reason, message } => {
            json!({"waiting": {"reason": reason, "message": message}})
        }
        ContainerState::Running { started_at } => json!({"running": {"startedAt": ts(started_at)}}),
        ContainerState::Terminated {
            exit_code,
            reason,
            message,
            started_at,
            finished_at,
        } => json!({"terminated": {
            "exitCode": exit_code, "reason": reason, "message": message, "startedAt": ts(started_at), "finishedAt": ts(finished_at)}}),
    }
}

struct ContainerSlot {
    name: String,
    image: String,
    config: ContainerConfig,
    probes: Probes,
    state: ContainerState,
    last: Option<ContainerState>,
    restarts: u32,
    id: String,
    /// Started in the runtime and not yet seen to end.
    started: bool,
    done: bool,
    /// Kubernetes' `started`: the startup probe (if any) has passed.
    startup_passed: bool,
    /// Kubernetes' `ready`: the readiness probe (if any) passes.
    ready: bool,
    prober: Option<tokio::task::JoinHandle<()>>,
    /// Why the agent is killing the container (a failed liveness or startup probe).
    killing: Option<String>,
    running_since: Option<Instant>,
    /// The image was prepared and its Pulled event recorded.
    pulled: bool,
    /// Not to be started again before this (its back-off after a failed start or a
    /// restart), while the pod goes on watching its other containers.
    retry_at: Option<Instant>,
    /// `subPath` mounts: the volume's directory and the path mounted from it, checked
    /// before each start (a container may have replaced the path with a symlink).
    sub_paths: Vec<(PathBuf, PathBuf)>,
    /// `imagePullPolicy` and the pod's registry credentials.
    pull: PullOptions,
}

impl ContainerSlot {
    /// A container not started yet, waiting with `reason`.
    fn new(
        name: String,
        image: String,
        config: ContainerConfig,
        probes: Probes,
        reason: &str,
        message: String,
    ) -> ContainerSlot {
        ContainerSlot {
            name,
            image,
            config,
            probes,
            state: ContainerState::Waiting {
                reason: reason.into(),
                message,
            },
            last: None,
            restarts: 0,
            id: String::new(),
            started: false,
            done: false,
            startup_passed: false,
            ready: false,
            pull: PullOptions::default(),
            prober: None,
            killing: None,
            running_since: None,
            pulled: false,
            retry_at: None,
            sub_paths: Vec::new(),
        }
    }

    fn is_ready(&self) -> bool {
        matches!(self.state, ContainerState::Running { .. }) && self.startup_passed && self.ready
    }
}

/// Sends a pod's latest status to the API server, retrying until it is taken: a report
/// made while the control plane is away arrives when it is back. Newer reports replace
/// older unsent ones.
fn spawn_reporter(agent: Arc<Agent>, pod: &Value) -> watch::Sender<Option<Value>> {
    let (tx, mut rx) = watch::channel::<Option<Value>>(None);
    let ns = s(pod, "/metadata/namespace").to_string();
    let name = s(pod, "/metadata/name").to_string();
    let uid = s(pod, "/metadata/uid").to_string();
    tokio::spawn(async move {
        // `changed` still yields a value sent just before the sender was dropped.
        while rx.changed().await.is_ok() {
            let Some(mut status) = rx.borrow_and_update().clone() else {
                continue;
            };
            loop {
                match agent.patch_status(&ns, &name, &uid, &status).await {
                    Ok(()) => break,
                    // The pod is gone, or the name now belongs to a newer pod.
                    Err(e) if matches!(e.code(), Some(404 | 409)) => return,
                    Err(e) => {
                        tracing::debug!(pod = %name, error = %e, "status update failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        if rx.has_changed().unwrap_or(false) {
                            if let Some(newer) = rx.borrow_and_update().clone() {
                                status = newer;
                            }
                        }
                    }
                }
            }
        }
    });
    tx
}

/// Checks, before a container starts, that each of its `subPath` mounts still resolves
/// inside its volume: a container sharing the volume may have replaced the path with a
/// symlink (to `/`, say), which the bind mount would follow onto the host. (A swap in
/// the instant between this check and the mount is not caught.)
fn sub_paths_inside(
    sub_paths: &[(PathBuf, PathBuf)],
    id: &str,
) -> Result<(), wk_api::runtime::RuntimeError> {
    for (volume, path) in sub_paths {
        // A path not there yet resolves as its deepest existing ancestor; a symlink that
        // leads nowhere is refused (its target might be made later, anywhere).
        let dangling = path.canonicalize().is_err() && std::fs::symlink_metadata(path).is_ok();
        let inside = volume
            .canonicalize()
            .is_ok_and(|v| !dangling && wk_runtime_oci::unpack::resolves_inside(&v, path));
        if !inside {
            return Err(wk_api::runtime::RuntimeError::Start {
                id: id.to_string(),
                message: format!(
                    "subPath {} resolves outside its volume",
                    path.strip_prefix(volume).unwrap_or(path).display()
                ),
            });
        }
    }
    Ok(())
}

/// Whether `restartPolicy` runs a container again after it ended with `end`.
fn restarts(policy: &str, end: &ContainerState) -> bool {
    let failed = !matches!(end, ContainerState::Terminated { exit_code: 0, .. });
    policy == "Always" || (policy == "OnFailure" && failed)
}

impl Agent {
    /// Brings one pod towards its desired state.
    pub(crate) async fn reconcile(self: Arc<Self>, pod: Value) {
        let uid = s(&pod, "/metadata/uid").to_string();
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            let handle = self.pods.lock().await.remove(&uid);
            {
                let mut stopping = self.stopping.lock().expect("stopping lock");
                if handle.is_none() && stopping.contains(&uid) {
                    // An event while its containers stop (a status report, a relist): the
                    // deletion finishes once they have.
                    return;
                }
                stopping.insert(uid.clone());
            }
            let grace = pod
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_u64)
                .map(Duration::from_secs);
            let me = self.clone();
            tokio::spawn(async move {
                if let Some(h) = handle {
                    me.stop_pod(&uid, h, grace).await;
                }
                me.finish_deletion(&pod, &uid).await;
                me.stopping.lock().expect("stopping lock").remove(&uid);
            });
            return;
        }
        if matches!(s(&pod, "/status/phase"), "Succeeded" | "Failed") {
            return;
        }
        let mut pods = self.pods.lock().await;
        if pods.contains_key(&uid) {
            return;
        }
        // Admission, as the kubelet does it: the pod must fit what is left of allocatable.
        let requests = pod_requests(&pod);
        let active: Vec<&PodHandle> = pods.values().filter(|h| !h.is_done()).collect();
        let used = active.iter().fold(Requests::default(), |a, h| Requests {
            cpu_milli: a.cpu_milli + h.requests.cpu_milli,
            memory: a.memory + h.requests.memory,
        });
        let alloc = self.allocatable;
        let refusal = if active.len() as i64 + 1 > alloc.pods {
            Some(("pods", 1, active.len() as i64, alloc.pods))
        } else if requests.cpu_milli > 0 && used.cpu_milli + requests.cpu_milli > alloc.cpu_milli {
            Some(("cpu", requests.cpu_milli, used.cpu_milli, alloc.cpu_milli))
        } else if requests.memory > 0 && used.memory + requests.memory > alloc.memory {
            Some(("memory", requests.memory, used.memory, alloc.memory))
        } else {
            None
        };
        if let Some((res, requested, used, capacity)) = refusal {
            drop(pods);
            let message = format!(
                "Pod was rejected: Node didn't have enough resource: {res}, requested: {requested}, used: {used}, capacity: {capacity}"
            );
            self.reject(&pod, &format!("OutOf{res}"), &message);
            return;
        }
        let first_port = pod
            .pointer("/spec/containers/0/ports/0/containerPort")
            .and_then(Value::as_u64)
            .map(|p| p as u16);
        // Wasm pods live in the host's network; container pods get their own namespace.
        let on_host = s(&pod, "/spec/runtimeClassName") != "oci";
        // A pod this node ran before (the agent restarted) keeps its address if it can.
        let previous_ip = s(&pod, "/status/podIP").parse::<Ipv4Addr>().ok();
        let Some(ip) = self.claim_ip(previous_ip, first_port, on_host) else {
            // Every address of the node's pod range is taken: its controller places a
            // replacement elsewhere.
            drop(pods);
            let message = format!(
                "no free address in the node's pod range {}",
                self.cfg.pod_cidr
            );
            self.reject(&pod, "OutOfPodAddresses", &message);
            return;
        };
        let stop = Arc::new(StopSignal::default());
        let (done_tx, done) = watch::channel(false);
        let key = format!(
            "{}/{}",
            s(&pod, "/metadata/namespace"),
            s(&pod, "/metadata/name")
        );
        pods.insert(
            uid,
            PodHandle {
                stop: stop.clone(),
                done,
                key,
                requests,
            },
        );
        drop(pods);
        tokio::spawn(async move {
            self.clone().run_pod(pod, ip, stop).await;
            self.release_ip(ip, on_host);
            let _ = done_tx.send(true);
        });
    }

    /// Fails a pod this node cannot take, saying why (an event and its status).
    fn reject(self: &Arc<Self>, pod: &Value, reason: &str, message: &str) {
        tracing::info!(pod = s(pod, "/metadata/name"), %message, "pod rejected");
        self.event(pod, "Warning", reason, message);
        let tx = spawn_reporter(self.clone(), pod);
        let _ = tx.send(Some(json!({"phase": "Failed", "reason": reason, "message": message, "startTime": ts(&jiff::Timestamp::now())})));
    }

    /// Finishes a graceful deletion once the pod's containers have stopped (only of this
    /// very pod: the uid is a precondition), retrying while the API server cannot be
    /// reached or answers 5xx (a fail-over), for up to a minute.
    async fn finish_deletion(&self, pod: &Value, uid: &str) {
        let rt = lookup("pods").expect("pods registered");
        let opts = json!({"gracePeriodSeconds": 0, "preconditions": {"uid": uid}});
        for attempt in 0..30 {
            let r = self
                .client
                .delete(
                    rt,
                    Some(s(pod, "/metadata/namespace")),
                    s(pod, "/metadata/name"),
                    &opts,
                )
                .await;
            match r {
                // Done, or already gone (404), or another pod of that name now (409).
                Ok(_) => return,
                Err(e) if e.code().is_some_and(|c| c < 500) => return,
                Err(e) => {
                    tracing::debug!(attempt, error = %e, "finishing a pod's deletion; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    }

    /// A pod that is gone (deleted outright, or no longer bound here): stop what runs.
    pub(crate) async fn forget(self: &Arc<Self>, uid: &str) {
        if let Some(h) = self.pods.lock().await.remove(uid) {
            let (me, uid) = (self.clone(), uid.to_string());
            tokio::spawn(async move { me.stop_pod(&uid, h, None).await });
        }
    }

    /// Stops a pod this agent held and, once it has stopped, drops its directory
    /// (volumes, logs) and its entry for the logs endpoint.
    async fn stop_pod(&self, uid: &str, mut h: PodHandle, grace: Option<Duration>) {
        h.stop.stop(grace);
        let _ = h.done.wait_for(|d| *d).await;
        let dir = self.cfg.data_dir.join("pods").join(uid);
        let mut dirs = self.pod_dirs.lock().await;
        // A newer pod of the same name may already have taken the entry.
        if dirs.get(&h.key) == Some(&dir) {
            dirs.remove(&h.key);
        }
        drop(dirs);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The uids of the pods this agent holds.
    pub(crate) async fn pod_uids(&self) -> Vec<String> {
        self.pods.lock().await.keys().cloned().collect()
    }

    /// Merge-patches a pod's status, guarded by its uid.
    async fn patch_status(
        &self,
        ns: &str,
        name: &str,
        uid: &str,
        status: &Value,
    ) -> Result<(), wk_client::ClientError> {
        let rt = lookup("pods").expect("pods registered");
        let patch = json!({"metadata": {"uid": uid}, "status": status});
        self.client
            .patch_subresource(rt, Some(ns), name, "status", &patch)
            .await
            .map(|_| ())
    }

    /// Records an Event about a pod (best effort, in the background).
    pub(crate) fn event(&self, pod: &Value, kind: &str, reason: &str, message: &str) {
        let event =
            wk_api::objects::event(pod, kind, reason, message, "kubelet", Some(&self.cfg.name));
        let ns = s(&event, "/metadata/namespace").to_string();
        let client = self.client.clone();
        tokio::spawn(async move {
            let rt = lookup("events").expect("events registered");
            if let Err(e) = client.create(rt, Some(&ns), &event, &[]).await {
                tracing::debug!(error = %e, "event not recorded");
            }
        });
    }

    async fn lookup_key(
        &self,
        kind: &str,
        ns: &str,
        name: &str,
        key: &str,
    ) -> Result<String, String> {
        let rt = lookup(kind).expect("kind registered");
        let obj = self
            .client
            .get(rt, Some(ns), name)
            .await
            .map_err(|e| e.to_string())?;
        if kind == "secrets" {
            let b64 = obj
                .pointer(&format!("/data/{key}"))
                .and_then(Value::as_str)
                .ok_or(format!("key {key} not found in secret {name}"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| e.to_string())?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        } else {
            obj.pointer(&format!("/data/{key}"))
                .and_then(Value::as_str)
                .map(String::from)
                .ok_or(format!("key {key} not found in configmap {name}"))
        }
    }

    /// Resolves a container's environment (literal, downward API, ConfigMap and Secret keys).
    async fn env_of(
        &self,
        pod: &Value,
        c: &Value,
        ip: Ipv4Addr,
    ) -> Result<Vec<(String, String)>, String> {
        let ns = s(pod, "/metadata/namespace");
        let mut env = Vec::new();
        for from in c
            .get("envFrom")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            let prefix = s(&from, "/prefix").to_string();
            let (kind, name) =
                if let Some(n) = from.pointer("/configMapRef/name").and_then(Value::as_str) {
                    ("configmaps", n)
                } else if let Some(n) = from.pointer("/secretRef/name").and_then(Value::as_str) {
                    ("secrets", n)
                } else {
                    continue;
                };
            let rt = lookup(kind).expect("kind registered");
            let obj = self
                .client
                .get(rt, Some(ns), name)
                .await
                .map_err(|e| e.to_string())?;
            for (k, v) in obj
                .get("data")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
            {
                let value = v.as_str().unwrap_or_default().to_string();
                let value = if kind == "secrets" {
                    String::from_utf8_lossy(
                        &base64::engine::general_purpose::STANDARD
                            .decode(&value)
                            .unwrap_or_default(),
                    )
                    .into_owned()
                } else {
                    value
                };
                env.push((format!("{prefix}{k}"), value));
            }
        }
        for e in c
            .get("env")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            let name = s(&e, "/name").to_string();
            let value = if let Some(v) = e.get("value").and_then(Value::as_str) {
                v.to_string()
            } else if let Some(path) = e
                .pointer("/valueFrom/fieldRef/fieldPath")
                .and_then(Value::as_str)
            {
                match path {
                    "metadata.name" => s(pod, "/metadata/name").to_string(),
                    "metadata.namespace" => ns.to_string(),
                    "metadata.uid" => s(pod, "/metadata/uid").to_string(),
                    "spec.nodeName" => self.cfg.name.clone(),
                    "status.podIP" => ip.to_string(),
                    "status.hostIP" => self.cfg.node_ip.to_string(),
                    p => match p
                        .strip_prefix("metadata.labels['")
                        .and_then(|r| r.strip_suffix("']"))
                    {
                        Some(l) => pod
                            .pointer(&format!("/metadata/labels/{l}"))
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        None => return Err(format!("env {name}: unsupported fieldPath {p}")),
                    },
                }
            } else if let Some((kind, r)) = [
                ("configmaps", "configMapKeyRef"),
                ("secrets", "secretKeyRef"),
            ]
            .into_iter()
            .find_map(|(kind, field)| Some((kind, e.pointer(&format!("/valueFrom/{field}"))?)))
            {
                match self.lookup_key(kind, ns, s(r, "/name"), s(r, "/key")).await {
                    Ok(v) => v,
                    Err(_) if r.get("optional") == Some(&json!(true)) => continue,
                    Err(e) => return Err(format!("env {name}: {e}")),
                }
            } else {
                String::new()
            };
            env.push((name, value));
        }
        Ok(env)
    }

    /// Materialises the pod's volumes as host directories.
    async fn volumes_of(
        &self,
        pod: &Value,
        dir: &std::path::Path,
    ) -> Result<BTreeMap<String, PathBuf>, String> {
        let ns = s(pod, "/metadata/namespace");
        let mut out = BTreeMap::new();
        for v in pod
            .pointer("/spec/volumes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            let name = s(&v, "/name").to_string();
            let path = dir.join("volumes").join(&name);
            if let Some(host) = v.pointer("/hostPath/path").and_then(Value::as_str) {
                out.insert(name, PathBuf::from(host));
                continue;
            }
            std::fs::create_dir_all(&path).map_err(|e| format!("volume {name}: {e}"))?;
            let (kind, obj_name) =
                if let Some(n) = v.pointer("/configMap/name").and_then(Value::as_str) {
                    ("configmaps", Some(n))
                } else if let Some(n) = v.pointer("/secret/secretName").and_then(Value::as_str) {
                    ("secrets", Some(n))
                } else {
                    ("", None) // emptyDir and anything else: an empty directory
                };
            if let Some(obj_name) = obj_name {
                let rt = lookup(kind).expect("kind registered");
                let obj = self
                    .client
                    .get(rt, Some(ns), obj_name)
                    .await
                    .map_err(|e| format!("volume {name}: {e}"))?;
                for (k, val) in obj
                    .get("data")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default()
                {
                    let text = val.as_str().unwrap_or_default();
                    let bytes = if kind == "secrets" {
                        base64::engine::general_purpose::STANDARD
                            .decode(text)
                            .unwrap_or_default()
                    } else {
                        text.as_bytes().to_vec()
                    };
                    std::fs::write(path.join(&k), bytes)
                        .map_err(|e| format!("volume {name}: {e}"))?;
                }
            }
            out.insert(name, path);
        }
        Ok(out)
    }

    /// Registry credentials from the pod's `imagePullSecrets` (Secrets of type
    /// `kubernetes.io/dockerconfigjson` or `kubernetes.io/dockercfg`).
    async fn pull_credentials(&self, pod: &Value) -> Result<Vec<RegistryCredential>, String> {
        let ns = s(pod, "/metadata/namespace");
        let mut out = Vec::new();
        for r in pod
            .pointer("/spec/imagePullSecrets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = s(r, "/name");
            let json = match self
                .lookup_key("secrets", ns, name, ".dockerconfigjson")
                .await
            {
                Ok(j) => j,
                Err(_) => self
                    .lookup_key("secrets", ns, name, ".dockercfg")
                    .await
                    .map_err(|e| format!("imagePullSecrets {name}: {e}"))?,
            };
            let v: Value = serde_json::from_str(&json)
                .map_err(|e| format!("imagePullSecrets {name}: not docker config JSON: {e}"))?;
            let auths = v.get("auths").unwrap_or(&v);
            for (registry, a) in auths.as_object().into_iter().flatten() {
                let (mut username, mut password) =
                    (s(a, "/username").to_string(), s(a, "/password").to_string());
                if let Some(pair) = a
                    .get("auth")
                    .and_then(Value::as_str)
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                {
                    let pair = String::from_utf8_lossy(&pair).into_owned();
                    if let Some((u, p)) = pair.split_once(':') {
                        (username, password) = (u.to_string(), p.to_string());
                    }
                }
                out.push(RegistryCredential {
                    registry: registry.clone(),
                    username,
                    password,
                });
            }
        }
        Ok(out)
    }

    /// `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` for a container pod, written
    /// into the pod's directory and mounted read-only.
    fn etc_files(
        &self,
        pod: &Value,
        ip: Ipv4Addr,
        dir: &std::path::Path,
    ) -> Result<Vec<Mount>, String> {
        let etc = dir.join("etc");
        std::fs::create_dir_all(&etc).map_err(|e| format!("{}: {e}", etc.display()))?;
        let hostname = pod_hostname(pod);
        let domain = &self.cfg.cluster_domain;
        let ns = s(pod, "/metadata/namespace");
        let nameserver = self
            .container_dns
            .get()
            .copied()
            .unwrap_or(self.cfg.pod_cidr.nth(0));
        let files = [
            (
                "hosts",
                format!(
                    "# Kubernetes-managed hosts file (wk).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{hostname}\n"
                ),
            ),
            ("hostname", format!("{hostname}\n")),
            (
                "resolv.conf",
                format!(
                    "nameserver {nameserver}\nsearch {ns}.svc.{domain} svc.{domain} {domain}\noptions ndots:5\n"
                ),
            ),
        ];
        let mut mounts = Vec::new();
        for (f, text) in files {
            let path = etc.join(f);
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            mounts.push(Mount {
                host_path: path,
                container_path: format!("/etc/{f}"),
                read_only: true,
            });
        }
        Ok(mounts)
    }

    async fn container_configs(
        &self,
        pod: &Value,
        ip: Ipv4Addr,
        dir: &std::path::Path,
        oci: bool,
    ) -> Result<Vec<ContainerSlot>, String> {
        let volumes = self.volumes_of(pod, dir).await?;
        let (etc_mounts, credentials) = if oci {
            (
                self.etc_files(pod, ip, dir)?,
                self.pull_credentials(pod).await?,
            )
        } else {
            (Vec::new(), Vec::new())
        };
        let allow_outbound = pod
            .pointer("/metadata/annotations/wk.dev~1allow-outbound")
            .and_then(Value::as_str)
            == Some("true");
        let mut slots = Vec::new();
        for c in pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            let name = s(&c, "/name").to_string();
            let strs = |p: &str| -> Vec<String> {
                c.get(p)
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let mut mounts = Vec::new();
            let mut sub_paths = Vec::new();
            for m in c
                .get("volumeMounts")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
            {
                let vol = volumes.get(s(&m, "/name")).ok_or(format!(
                    "container {name}: volume {} not found",
                    s(&m, "/name")
                ))?;
                let sub = s(&m, "/subPath");
                if !sub.is_empty() {
                    sub_paths.push((vol.clone(), vol.join(sub)));
                }
                mounts.push(Mount {
                    host_path: if sub.is_empty() {
                        vol.clone()
                    } else {
                        vol.join(sub)
                    },
                    container_path: s(&m, "/mountPath").to_string(),
                    read_only: m.get("readOnly") == Some(&json!(true)),
                });
            }
            let ports = c
                .get("ports")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .filter_map(|p| p.get("containerPort").and_then(Value::as_u64))
                        .map(|port| PortBinding {
                            container_port: port as u16,
                            host_ip: IpAddr::V4(ip),
                            host_port: port as u16,
                            protocol: "TCP".into(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            mounts.extend(etc_mounts.iter().cloned());
            let memory_bytes =
                quantity_field(c.pointer("/resources/limits/memory")).map(|(_, b)| b as u64);
            let sc = |p: &str| {
                c.pointer(&format!("/securityContext/{p}"))
                    .or_else(|| pod.pointer(&format!("/spec/securityContext/{p}")))
            };
            let caps = |p: &str| -> Vec<String> {
                c.pointer(&format!("/securityContext/capabilities/{p}"))
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let security = Security {
                run_as_user: sc("runAsUser").and_then(Value::as_u64).map(|u| u as u32),
                run_as_group: sc("runAsGroup").and_then(Value::as_u64).map(|g| g as u32),
                read_only_root_filesystem: c.pointer("/securityContext/readOnlyRootFilesystem")
                    == Some(&json!(true)),
                add_capabilities: caps("add"),
                drop_capabilities: caps("drop"),
                seccomp_unconfined: sc("seccompProfile/type").and_then(Value::as_str)
                    == Some("Unconfined"),
            };
            let cpu_millis =
                quantity_field(c.pointer("/resources/limits/cpu")).map(|(m, _)| m as u64);
            let config = ContainerConfig {
                id: String::new(),
                pod: PodIdentity {
                    name: s(pod, "/metadata/name").into(),
                    hostname: pod_hostname(pod).into(),
                    namespace: s(pod, "/metadata/namespace").into(),
                    uid: s(pod, "/metadata/uid").into(),
                    node_name: self.cfg.name.clone(),
                    pod_ip: ip.to_string(),
                },
                name: name.clone(),
                image: s(&c, "/image").to_string(),
                command: strs("command"),
                args: strs("args"),
                env: self.env_of(pod, &c, ip).await?,
                working_dir: c
                    .get("workingDir")
                    .and_then(Value::as_str)
                    .map(String::from),
                mounts,
                ports,
                limits: Limits {
                    memory_bytes,
                    cpu_millis,
                    request_timeout: None,
                },
                allow_outbound,
                log: LogConfig {
                    path: dir.join("logs").join(format!("{name}.log")),
                    max_bytes: 10 << 20,
                },
                security,
            };
            let probes = Probes::of(&c, ip).map_err(|e| format!("container {name}: {e}"))?;
            if let Some(field) = probes.exec_probe().filter(|_| !oci) {
                return Err(format!(
                    "container {name}: {field}.exec: a wasm container has no processes to exec; use httpGet or tcpSocket"
                ));
            }
            let mut slot = ContainerSlot::new(
                name,
                config.image.clone(),
                config,
                probes,
                "ContainerCreating",
                String::new(),
            );
            slot.sub_paths = sub_paths;
            slot.pull = PullOptions {
                policy: PullPolicy::of(
                    c.get("imagePullPolicy").and_then(Value::as_str),
                    &slot.image,
                ),
                credentials: credentials.clone(),
            };
            slots.push(slot);
        }
        Ok(slots)
    }

    /// Sends the pod's status; `runtime` names the container IDs' scheme (`wasm://…`).
    async fn report(
        &self,
        runtime: &str,
        tx: &watch::Sender<Option<Value>>,
        ip: Ipv4Addr,
        slots: &[ContainerSlot],
        phase: &str,
        started: &str,
    ) {
        let ready = !slots.is_empty() && slots.iter().all(ContainerSlot::is_ready);
        let now = ts(&jiff::Timestamp::now());
        let cond = |t: &str, ok: bool| json!({"type": t, "status": if ok { "True" } else { "False" }, "lastTransitionTime": now, "lastProbeTime": null});
        let statuses: Vec<Value> = slots
            .iter()
            .map(|c| {
                let running = matches!(c.state, ContainerState::Running { .. });
                let mut st = json!({"name": c.name, "image": c.image, "imageID": "", "ready": c.is_ready(),
                    "restartCount": c.restarts, "started": running && c.startup_passed, "state": state_json(&c.state)});
                if !c.id.is_empty() {
                    st["containerID"] = json!(format!("{runtime}://{}", c.id));
                }
                if let Some(l) = &c.last {
                    st["lastState"] = state_json(l);
                }
                st
            })
            .collect();
        let status = json!({
            "phase": phase,
            "hostIP": self.cfg.node_ip.to_string(),
            "hostIPs": [{"ip": self.cfg.node_ip.to_string()}],
            "podIP": ip.to_string(),
            "podIPs": [{"ip": ip.to_string()}],
            "startTime": started,
            "conditions": [cond("PodScheduled", true), cond("Initialized", true), cond("ContainersReady", ready), cond("Ready", ready)],
            "containerStatuses": statuses,
        });
        let _ = tx.send(Some(status));
    }

    /// Runs a pod until it finishes (per restartPolicy) or is stopped.
    async fn run_pod(self: Arc<Self>, pod: Value, ip: Ipv4Addr, stop: Arc<StopSignal>) {
        let uid = s(&pod, "/metadata/uid").to_string();
        let dir = self.cfg.data_dir.join("pods").join(&uid);
        let key = format!(
            "{}/{}",
            s(&pod, "/metadata/namespace"),
            s(&pod, "/metadata/name")
        );
        if let Err(e) = std::fs::create_dir_all(dir.join("logs")) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot create the pod's directory");
        }
        self.pod_dirs.lock().await.insert(key, dir.clone());
        // Logs stay readable until the pod object is gone (see `forget`).
        let reporter = spawn_reporter(self.clone(), &pod);
        let rt = match (s(&pod, "/spec/runtimeClassName"), self.oci.get()) {
            ("oci", Some(oci)) => PodRuntime::Oci(oci.clone()),
            ("oci", None) => {
                let slot = Self::config_error_slot(
                    &pod,
                    "runtime oci is not available on this node (runc missing or not working)"
                        .into(),
                );
                let started = ts(&jiff::Timestamp::now());
                self.report(
                    "oci",
                    &reporter,
                    ip,
                    std::slice::from_ref(&slot),
                    "Pending",
                    &started,
                )
                .await;
                return;
            }
            _ => PodRuntime::Wasm(self.runtime.clone()),
        };
        self.clone()
            .run_pod_inner(&rt, pod, ip, stop, uid.clone(), dir, reporter)
            .await;
        let prefix = format!("{uid}/");
        self.running
            .lock()
            .expect("running lock")
            .retain(|_, (_, id)| !id.starts_with(&prefix));
        rt.release_pod(&uid).await;
    }

    /// A stand-in container that reports why the pod's containers cannot be set up.
    fn config_error_slot(pod: &Value, message: String) -> ContainerSlot {
        ContainerSlot::new(
            s(pod, "/spec/containers/0/name").into(),
            s(pod, "/spec/containers/0/image").into(),
            ContainerConfig::default(),
            Probes::default(),
            "CreateContainerConfigError",
            message,
        )
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_pod_inner(
        self: Arc<Self>,
        rt: &PodRuntime,
        pod: Value,
        ip: Ipv4Addr,
        stop: Arc<StopSignal>,
        uid: String,
        dir: PathBuf,
        tx: watch::Sender<Option<Value>>,
    ) {
        let started = match s(&pod, "/status/startTime") {
            "" => ts(&jiff::Timestamp::now()),
            t => t.to_string(),
        };
        let policy = match s(&pod, "/spec/restartPolicy") {
            "" => "Always",
            p => p,
        }
        .to_string();
        let mut slots = loop {
            match self
                .container_configs(&pod, ip, &dir, matches!(rt, PodRuntime::Oci(_)))
                .await
            {
                Ok(s) => break s,
                Err(message) => {
                    let slot = Self::config_error_slot(&pod, message);
                    self.report(
                        rt.name(),
                        &tx,
                        ip,
                        std::slice::from_ref(&slot),
                        "Pending",
                        &started,
                    )
                    .await;
                    tokio::select! { _ = tokio::time::sleep(Duration::from_secs(2)) => continue, _ = stop.notified() => return }
                }
            }
        };
        // Containers that were running under a previous life of this agent died with it
        // (exit 255, as the kubelet reports a container it lost); restartPolicy decides,
        // as for any end: under Never it stays ended, and so does one that had already
        // ended unless the policy restarts it.
        for c in &mut slots {
            let prev = pod
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .and_then(|cs| {
                    cs.iter()
                        .find(|x| x.get("name").and_then(Value::as_str) == Some(&c.name))
                });
            if let Some(prev) = prev {
                c.restarts = prev
                    .get("restartCount")
                    .and_then(Value::as_u64)
                    .unwrap_or(0) as u32;
                let lost = prev
                    .pointer("/state/running/startedAt")
                    .and_then(Value::as_str)
                    .and_then(|t| t.parse().ok())
                    .map(|since| ContainerState::Terminated {
                        exit_code: 255,
                        reason: "Unknown".into(),
                        message: "the node agent restarted".into(),
                        started_at: since,
                        finished_at: jiff::Timestamp::now(),
                    });
                let ended = prev.pointer("/state/terminated").map(|t| {
                    let time = |k: &str| {
                        t.get(k)
                            .and_then(Value::as_str)
                            .and_then(|v| v.parse().ok())
                            .unwrap_or_else(jiff::Timestamp::now)
                    };
                    ContainerState::Terminated {
                        exit_code: t.get("exitCode").and_then(Value::as_i64).unwrap_or(0) as i32,
                        reason: s(t, "/reason").to_string(),
                        message: s(t, "/message").to_string(),
                        started_at: time("startedAt"),
                        finished_at: time("finishedAt"),
                    }
                });
                match (lost, ended) {
                    (Some(end), _) if restarts(&policy, &end) => {
                        c.restarts += 1;
                        c.last = Some(end);
                    }
                    (Some(end), _) | (None, Some(end)) if !restarts(&policy, &end) => {
                        c.state = end;
                        c.done = true;
                    }
                    _ => {}
                }
            }
        }
        let grace = Duration::from_secs(
            pod.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_u64)
                .unwrap_or(30),
        );
        let mut backoff = vec![BACKOFF_START; slots.len()];
        let http = self.probe_http.clone();
        let (probe_tx, mut probe_rx) = mpsc::unbounded_channel::<(usize, String, ProbeEvent)>();
        // Start every container that is not done; then wait for changes.
        loop {
            let mut pending_retry: Option<Duration> = None;
            // Before the first pulls (which may take a while), the pod shows it is
            // creating its containers.
            if slots.iter().any(|c| !c.done && !c.pulled) && !slots.iter().any(|c| c.started) {
                self.report(rt.name(), &tx, ip, &slots, "Pending", &started)
                    .await;
            }
            let mut stopped = false;
            for (i, c) in slots.iter_mut().enumerate() {
                if c.done || c.started {
                    continue;
                }
                if let Some(wait) = c
                    .retry_at
                    .map(|at| at.saturating_duration_since(Instant::now()))
                    .filter(|w| !w.is_zero())
                {
                    pending_retry = Some(pending_retry.map_or(wait, |p| p.min(wait)));
                    continue;
                }
                c.retry_at = None;
                c.id = format!("{uid}/{}/{}", c.name, c.restarts);
                let mut cfg = c.config.clone();
                cfg.id = c.id.clone();
                if c.restarts > 0 {
                    // The previous instance's log is what `logs --previous` shows.
                    let _ =
                        std::fs::rename(&cfg.log.path, cfg.log.path.with_extension("previous.log"));
                }
                // Pull (once), then start; either failing waits for the back-off. A pull
                // (a slow or stalled download) gives way to a stop.
                let pulled = tokio::select! {
                    r = self.pull(rt, &pod, c) => r,
                    _ = stop.notified() => {
                        stopped = true;
                        break;
                    }
                };
                let result = match pulled.and_then(|()| sub_paths_inside(&c.sub_paths, &c.id)) {
                    Ok(()) => rt.start(cfg).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) => {
                        self.event(
                            &pod,
                            "Normal",
                            "Created",
                            &format!("Created container {}", c.name),
                        );
                        c.started = true;
                        c.killing = None;
                        self.running
                            .lock()
                            .expect("running lock")
                            .insert(running_key(&pod, &c.name), (rt.clone(), c.id.clone()));
                        c.running_since = Some(Instant::now());
                        c.state = rt.state(&c.id).unwrap_or(ContainerState::Waiting {
                            reason: "Unknown".into(),
                            message: String::new(),
                        });
                        // A quick command may already be over; it is handled below like any end.
                        if c.state.is_terminated() {
                            c.state = ContainerState::Running {
                                started_at: jiff::Timestamp::now(),
                            };
                        }
                        c.startup_passed = c.probes.startup.is_none();
                        c.ready = c.probes.readiness.is_none();
                        if !c.probes.is_empty() {
                            let (ptx, id) = (probe_tx.clone(), c.id.clone());
                            // Exec probes run in the container (a Wasm container with one
                            // was refused before it started).
                            let (rt, exec_id) = (rt.clone(), c.id.clone());
                            let exec: probe::Exec = Arc::new(move |cmd: Vec<String>, timeout| {
                                let (rt, id) = (rt.clone(), exec_id.clone());
                                Box::pin(async move {
                                    let out = rt
                                        .exec(&id, &cmd, timeout)
                                        .await
                                        .map_err(|e| e.to_string())?;
                                    let mut text =
                                        String::from_utf8_lossy(&out.stdout).into_owned();
                                    text.push_str(&String::from_utf8_lossy(&out.stderr));
                                    Ok((out.exit_code, text))
                                })
                            });
                            c.prober = Some(tokio::spawn(probe::run(
                                c.probes.clone(),
                                http.clone(),
                                Some(exec),
                                move |ev| {
                                    let _ = ptx.send((i, id.clone(), ev));
                                },
                            )));
                        }
                        self.event(
                            &pod,
                            "Normal",
                            "Started",
                            &format!("Started container {}", c.name),
                        );
                    }
                    Err(e) => {
                        c.state = ContainerState::Waiting {
                            reason: e.reason().into(),
                            message: e.to_string(),
                        };
                        self.event(&pod, "Warning", "Failed", &format!("Error: {e}"));
                        c.retry_at = Some(Instant::now() + backoff[i]);
                        pending_retry =
                            Some(pending_retry.map_or(backoff[i], |p| p.min(backoff[i])));
                        backoff[i] = (backoff[i] * 2).min(BACKOFF_MAX);
                    }
                }
            }
            if stopped {
                self.stop_all(rt, &mut slots, stop.grace_or(grace)).await;
                return;
            }
            let all_done = slots.iter().all(|c| c.done);
            let phase = if all_done {
                if slots
                    .iter()
                    .all(|c| matches!(c.state, ContainerState::Terminated { exit_code: 0, .. }))
                {
                    "Succeeded"
                } else {
                    "Failed"
                }
            } else if slots
                .iter()
                .any(|c| matches!(c.state, ContainerState::Running { .. }))
            {
                "Running"
            } else {
                "Pending"
            };
            self.report(rt.name(), &tx, ip, &slots, phase, &started)
                .await;
            if all_done {
                return;
            }
            // Wait for a container to end, a probe result, a retry to be due, or a stop.
            let running: Vec<(usize, String)> = slots
                .iter()
                .enumerate()
                .filter(|(_, c)| c.started && !c.done)
                .map(|(i, c)| (i, c.id.clone()))
                .collect();
            let wait_any = async {
                let futs = running.iter().map(|(i, id)| {
                    let rt = rt.clone();
                    let id = id.clone();
                    let i = *i;
                    Box::pin(async move { (i, rt.wait(&id).await) })
                });
                if futs.len() == 0 {
                    std::future::pending::<(
                        usize,
                        Result<ContainerState, wk_api::runtime::RuntimeError>,
                    )>()
                    .await
                } else {
                    futures::future::select_all(futs).await.0
                }
            };
            let retry = async {
                match pending_retry {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                (i, result) = wait_any => {
                    let mut end = result.unwrap_or(ContainerState::Terminated { exit_code: 1, reason: "Unknown".into(), message: String::new(),
                        started_at: jiff::Timestamp::now(), finished_at: jiff::Timestamp::now() });
                    let c = &mut slots[i];
                    self.forget_running(&pod, &c.name, &c.id);
                    let _ = rt.remove(&c.id);
                    if let Some(p) = c.prober.take() {
                        p.abort();
                    }
                    // Killed for a failed probe: a failure whatever the component said on its way out.
                    if let (Some(why), ContainerState::Terminated { exit_code, reason, message, .. }) = (c.killing.take(), &mut end) {
                        if *exit_code == 0 {
                            *exit_code = 137;
                        }
                        *reason = "Error".into();
                        *message = why;
                    }
                    if c.running_since.is_some_and(|t| t.elapsed() >= BACKOFF_RESET) {
                        backoff[i] = BACKOFF_START;
                    }
                    let restart = restarts(&policy, &end);
                    c.last = Some(end.clone());
                    c.started = false;
                    c.ready = false;
                    if restart {
                        c.restarts += 1;
                        c.state = ContainerState::Waiting { reason: "CrashLoopBackOff".into(), message: format!("back-off {}s restarting failed container={} pod={}", backoff[i].as_secs(), c.name, s(&pod, "/metadata/name")) };
                        self.event(&pod, "Warning", "BackOff", "Back-off restarting failed container");
                        // Restarted once the back-off is over; meanwhile the other
                        // containers' ends and probes are still handled and reported.
                        c.retry_at = Some(Instant::now() + backoff[i]);
                        backoff[i] = (backoff[i] * 2).min(BACKOFF_MAX);
                    } else {
                        slots[i].state = end;
                        slots[i].done = true;
                    }
                }
                Some((i, id, ev)) = probe_rx.recv() => {
                    let c = &mut slots[i];
                    if c.id != id || !c.started {
                        continue; // about an instance that has already ended
                    }
                    match ev {
                        ProbeEvent::Started => c.startup_passed = true,
                        ProbeEvent::Ready(r) => c.ready = r,
                        ProbeEvent::Unhealthy(message) => self.event(&pod, "Warning", "Unhealthy", &message),
                        ProbeEvent::Kill(message) if c.killing.is_none() => {
                            self.event(&pod, "Normal", "Killing", &message);
                            c.killing = Some(message);
                            c.ready = false;
                            let (rt, id) = (rt.clone(), c.id.clone());
                            tokio::spawn(async move { rt.stop(&id, grace).await });
                        }
                        ProbeEvent::Kill(_) => {}
                    }
                }
                _ = retry => {}
                _ = stop.notified() => {
                    self.stop_all(rt, &mut slots, stop.grace_or(grace)).await;
                    return;
                }
            }
        }
    }

    /// Prepares a container's image once, recording the kubelet's Pulled event.
    async fn pull(
        &self,
        rt: &PodRuntime,
        pod: &Value,
        c: &mut ContainerSlot,
    ) -> Result<(), wk_api::runtime::RuntimeError> {
        if c.pulled {
            return Ok(());
        }
        let began = Instant::now();
        let p = rt.prepare(&c.image, &c.pull).await?;
        c.pulled = true;
        let message = if p.compiled {
            format!(
                "Successfully pulled image \"{}\" in {} ms ({})",
                c.image,
                began.elapsed().as_millis(),
                p.digest
            )
        } else {
            format!("Container image \"{}\" already present on machine", c.image)
        };
        self.event(pod, "Normal", "Pulled", &message);
        Ok(())
    }

    /// Drops a container instance from the exec table (if it is still the current one).
    fn forget_running(&self, pod: &Value, container: &str, id: &str) {
        let key = running_key(pod, container);
        let mut running = self.running.lock().expect("running lock");
        if running.get(&key).is_some_and(|(_, i)| i == id) {
            running.remove(&key);
        }
    }

    async fn stop_all(&self, rt: &PodRuntime, slots: &mut [ContainerSlot], grace: Duration) {
        for c in slots.iter_mut() {
            if let Some(p) = c.prober.take() {
                p.abort();
            }
        }
        let stops = slots.iter().filter(|c| c.started).map(|c| {
            let (rt, id) = (rt.clone(), c.id.clone());
            async move {
                let _ = rt.stop(&id, grace).await;
                let _ = rt.remove(&id);
            }
        });
        futures::future::join_all(stops).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A subPath may be a directory of its volume, not there yet, or a symlink inside the
    /// volume; one that resolves outside it (a container made it, or a directory above
    /// it, a symlink to `/`, or a dangling one) stops the container from starting.
    #[test]
    fn sub_paths_must_resolve_inside_their_volume() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        std::fs::create_dir_all(vol.join("real")).unwrap();
        std::os::unix::fs::symlink("real", vol.join("alias")).unwrap();
        std::os::unix::fs::symlink("/", vol.join("root")).unwrap();
        std::os::unix::fs::symlink("../..", vol.join("up")).unwrap();
        std::os::unix::fs::symlink("/nonexistent/x", vol.join("dangling")).unwrap();
        let check = |sub: &str| sub_paths_inside(&[(vol.clone(), vol.join(sub))], "c");
        for ok in ["real", "alias", "later", "real/deeper"] {
            assert!(check(ok).is_ok(), "{ok}");
        }
        for bad in ["root", "up", "dangling", "root/etc", "root/not-there-yet"] {
            let e = check(bad).unwrap_err();
            assert!(e.to_string().contains("outside its volume"), "{bad}: {e}");
        }
    }
}
