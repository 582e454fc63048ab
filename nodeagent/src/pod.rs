//! One pod on this node: volumes, env, containers through the runtime, restarts per
//! `restartPolicy`, status reports, graceful stop.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use tokio::sync::Notify;
use wk_api::quantity::Quantity;
use wk_api::resource::lookup;
use wk_api::runtime::{ContainerConfig, ContainerState, Limits, LogConfig, Mount, PodIdentity, PortBinding, Runtime};

use crate::Agent;

/// What the agent keeps per running pod.
pub(crate) struct PodHandle {
    stop: Arc<Notify>,
    done: tokio::sync::watch::Receiver<bool>,
}

/// Restart back-off: 1 s doubling to 60 s.
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

fn ts(t: &jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn state_json(st: &ContainerState) -> Value {
    match st {
        ContainerState::Waiting { reason, message } => json!({"waiting": {"reason": reason, "message": message}}),
        ContainerState::Running { started_at } => json!({"running": {"startedAt": ts(started_at)}}),
        ContainerState::Terminated { exit_code, reason, message, started_at, finished_at } => json!({"terminated": {
            "exitCode": exit_code, "reason": reason, "message": message, "startedAt": ts(started_at), "finishedAt": ts(finished_at)}}),
    }
}

struct ContainerSlot {
    name: String,
    image: String,
    config: ContainerConfig,
    state: ContainerState,
    last: Option<ContainerState>,
    restarts: u32,
    id: String,
    /// Started in the runtime and not yet seen to end.
    started: bool,
    done: bool,
}

impl Agent {
    /// Brings one pod towards its desired state.
    pub(crate) async fn reconcile(self: Arc<Self>, pod: Value) {
        let uid = s(&pod, "/metadata/uid").to_string();
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            let handle = self.pods.lock().await.remove(&uid);
            let me = self.clone();
            tokio::spawn(async move {
                if let Some(mut h) = handle {
                    h.stop.notify_one();
                    let _ = h.done.wait_for(|d| *d).await;
                }
                // Finish the graceful deletion.
                let rt = lookup("pods").expect("pods registered");
                let _ = me
                    .client
                    .delete(rt, Some(s(&pod, "/metadata/namespace")), s(&pod, "/metadata/name"), &json!({"gracePeriodSeconds": 0}))
                    .await;
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
        let stop = Arc::new(Notify::new());
        let (done_tx, done) = tokio::sync::watch::channel(false);
        pods.insert(uid, PodHandle { stop: stop.clone(), done });
        drop(pods);
        let first_port = pod
            .pointer("/spec/containers/0/ports/0/containerPort")
            .and_then(Value::as_u64)
            .map(|p| p as u16);
        let ip = self.allocate_ip(first_port);
        tokio::spawn(async move {
            self.run_pod(pod, ip, stop).await;
            let _ = done_tx.send(true);
        });
    }

    /// A pod deleted outright (without graceful deletion): stop what runs.
    pub(crate) async fn forget(&self, pod: &Value) {
        let key = format!("{}/{}", s(pod, "/metadata/namespace"), s(pod, "/metadata/name"));
        self.pod_dirs.lock().await.remove(&key);
        if let Some(h) = self.pods.lock().await.remove(s(pod, "/metadata/uid")) {
            h.stop.notify_one();
        }
    }

    async fn patch_status(&self, pod: &Value, status: Value) {
        let rt = lookup("pods").expect("pods registered");
        let path = format!("{}/status", rt.object_path(Some(s(pod, "/metadata/namespace")), s(pod, "/metadata/name")));
        let body = serde_json::to_vec(&json!({"status": status})).unwrap_or_default();
        if let Err(e) = self
            .client
            .request(wk_client::Method::PATCH, &path, &[], Some(("application/merge-patch+json", body)), None)
            .await
        {
            tracing::warn!(pod = s(pod, "/metadata/name"), error = %e, "status update failed");
        }
    }

    async fn lookup_key(&self, kind: &str, ns: &str, name: &str, key: &str) -> Result<String, String> {
        let rt = lookup(kind).expect("kind registered");
        let obj = self.client.get(rt, Some(ns), name).await.map_err(|e| e.to_string())?;
        if kind == "secrets" {
            let b64 = obj.pointer(&format!("/data/{key}")).and_then(Value::as_str).ok_or(format!("key {key} not found in secret {name}"))?;
            let bytes = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|e| e.to_string())?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        } else {
            obj.pointer(&format!("/data/{key}")).and_then(Value::as_str).map(String::from).ok_or(format!("key {key} not found in configmap {name}"))
        }
    }

    /// Resolves a container's environment (literal, downward API, ConfigMap and Secret keys).
    async fn env_of(&self, pod: &Value, c: &Value, ip: Ipv4Addr) -> Result<Vec<(String, String)>, String> {
        let ns = s(pod, "/metadata/namespace");
        let mut env = Vec::new();
        for from in c.get("envFrom").and_then(Value::as_array).cloned().unwrap_or_default() {
            let prefix = s(&from, "/prefix").to_string();
            let (kind, name) = if let Some(n) = from.pointer("/configMapRef/name").and_then(Value::as_str) {
                ("configmaps", n)
            } else if let Some(n) = from.pointer("/secretRef/name").and_then(Value::as_str) {
                ("secrets", n)
            } else {
                continue;
            };
            let rt = lookup(kind).expect("kind registered");
            let obj = self.client.get(rt, Some(ns), name).await.map_err(|e| e.to_string())?;
            for (k, v) in obj.get("data").and_then(Value::as_object).cloned().unwrap_or_default() {
                let value = v.as_str().unwrap_or_default().to_string();
                let value = if kind == "secrets" {
                    String::from_utf8_lossy(&base64::engine::general_purpose::STANDARD.decode(&value).unwrap_or_default()).into_owned()
                } else {
                    value
                };
                env.push((format!("{prefix}{k}"), value));
            }
        }
        for e in c.get("env").and_then(Value::as_array).cloned().unwrap_or_default() {
            let name = s(&e, "/name").to_string();
            let value = if let Some(v) = e.get("value").and_then(Value::as_str) {
                v.to_string()
            } else if let Some(path) = e.pointer("/valueFrom/fieldRef/fieldPath").and_then(Value::as_str) {
                match path {
                    "metadata.name" => s(pod, "/metadata/name").to_string(),
                    "metadata.namespace" => ns.to_string(),
                    "metadata.uid" => s(pod, "/metadata/uid").to_string(),
                    "spec.nodeName" => self.cfg.name.clone(),
                    "status.podIP" => ip.to_string(),
                    "status.hostIP" => self.cfg.node_ip.to_string(),
                    p => match p.strip_prefix("metadata.labels['").and_then(|r| r.strip_suffix("']")) {
                        Some(l) => pod.pointer(&format!("/metadata/labels/{l}")).and_then(Value::as_str).unwrap_or("").to_string(),
                        None => return Err(format!("env {name}: unsupported fieldPath {p}")),
                    },
                }
            } else if let Some(r) = e.pointer("/valueFrom/configMapKeyRef") {
                match self.lookup_key("configmaps", ns, s(r, "/name"), s(r, "/key")).await {
                    Ok(v) => v,
                    Err(_) if r.get("optional") == Some(&json!(true)) => continue,
                    Err(e) => return Err(format!("env {name}: {e}")),
                }
            } else if let Some(r) = e.pointer("/valueFrom/secretKeyRef") {
                match self.lookup_key("secrets", ns, s(r, "/name"), s(r, "/key")).await {
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
    async fn volumes_of(&self, pod: &Value, dir: &std::path::Path) -> Result<BTreeMap<String, PathBuf>, String> {
        let ns = s(pod, "/metadata/namespace");
        let mut out = BTreeMap::new();
        for v in pod.pointer("/spec/volumes").and_then(Value::as_array).cloned().unwrap_or_default() {
            let name = s(&v, "/name").to_string();
            let path = dir.join("volumes").join(&name);
            if let Some(host) = v.pointer("/hostPath/path").and_then(Value::as_str) {
                out.insert(name, PathBuf::from(host));
                continue;
            }
            std::fs::create_dir_all(&path).map_err(|e| format!("volume {name}: {e}"))?;
            let (kind, obj_name) = if let Some(n) = v.pointer("/configMap/name").and_then(Value::as_str) {
                ("configmaps", Some(n))
            } else if let Some(n) = v.pointer("/secret/secretName").and_then(Value::as_str) {
                ("secrets", Some(n))
            } else {
                ("", None) // emptyDir and anything else: an empty directory
            };
            if let Some(obj_name) = obj_name {
                let rt = lookup(kind).expect("kind registered");
                let obj = self.client.get(rt, Some(ns), obj_name).await.map_err(|e| format!("volume {name}: {e}"))?;
                for (k, val) in obj.get("data").and_then(Value::as_object).cloned().unwrap_or_default() {
                    let text = val.as_str().unwrap_or_default();
                    let bytes = if kind == "secrets" {
                        base64::engine::general_purpose::STANDARD.decode(text).unwrap_or_default()
                    } else {
                        text.as_bytes().to_vec()
                    };
                    std::fs::write(path.join(&k), bytes).map_err(|e| format!("volume {name}: {e}"))?;
                }
            }
            out.insert(name, path);
        }
        Ok(out)
    }

    async fn container_configs(&self, pod: &Value, ip: Ipv4Addr, dir: &std::path::Path) -> Result<Vec<ContainerSlot>, String> {
        let volumes = self.volumes_of(pod, dir).await?;
        let allow_outbound = pod.pointer("/metadata/annotations/wk.dev~1allow-outbound").and_then(Value::as_str) == Some("true");
        let mut slots = Vec::new();
        for c in pod.pointer("/spec/containers").and_then(Value::as_array).cloned().unwrap_or_default() {
            let name = s(&c, "/name").to_string();
            let strs = |p: &str| -> Vec<String> {
                c.get(p).and_then(Value::as_array).map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect()).unwrap_or_default()
            };
            let mut mounts = Vec::new();
            for m in c.get("volumeMounts").and_then(Value::as_array).cloned().unwrap_or_default() {
                let vol = volumes.get(s(&m, "/name")).ok_or(format!("container {name}: volume {} not found", s(&m, "/name")))?;
                let sub = s(&m, "/subPath");
                mounts.push(Mount {
                    host_path: if sub.is_empty() { vol.clone() } else { vol.join(sub) },
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
                        .map(|port| PortBinding { container_port: port as u16, host_ip: IpAddr::V4(ip), host_port: port as u16, protocol: "TCP".into() })
                        .collect()
                })
                .unwrap_or_default();
            let memory_bytes = c
                .pointer("/resources/limits/memory")
                .and_then(|v| v.as_str().map(String::from).or_else(|| v.as_i64().map(|n| n.to_string())))
                .and_then(|q| Quantity::parse(&q).ok())
                .map(|q| q.value().max(0) as u64);
            let cpu_millis = c
                .pointer("/resources/limits/cpu")
                .and_then(|v| v.as_str().map(String::from).or_else(|| v.as_i64().map(|n| n.to_string())))
                .and_then(|q| Quantity::parse(&q).ok())
                .map(|q| q.milli_value().max(0) as u64);
            let config = ContainerConfig {
                id: String::new(),
                pod: PodIdentity {
                    name: s(pod, "/metadata/name").into(),
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
                working_dir: c.get("workingDir").and_then(Value::as_str).map(String::from),
                mounts,
                ports,
                limits: Limits { memory_bytes, cpu_millis, request_timeout: None },
                allow_outbound,
                log: LogConfig { path: dir.join("logs").join(format!("{name}.log")), max_bytes: 10 << 20 },
            };
            slots.push(ContainerSlot {
                image: config.image.clone(),
                name,
                config,
                state: ContainerState::Waiting { reason: "ContainerCreating".into(), message: String::new() },
                last: None,
                restarts: 0,
                id: String::new(),
                started: false,
                done: false,
            });
        }
        Ok(slots)
    }

    async fn report(&self, pod: &Value, ip: Ipv4Addr, slots: &[ContainerSlot], phase: &str, started: &str) {
        let ready = !slots.is_empty() && slots.iter().all(|c| matches!(c.state, ContainerState::Running { .. }));
        let now = ts(&jiff::Timestamp::now());
        let cond = |t: &str, ok: bool| json!({"type": t, "status": if ok { "True" } else { "False" }, "lastTransitionTime": now, "lastProbeTime": null});
        let statuses: Vec<Value> = slots
            .iter()
            .map(|c| {
                let mut st = json!({"name": c.name, "image": c.image, "imageID": "", "ready": matches!(c.state, ContainerState::Running { .. }),
                    "restartCount": c.restarts, "started": matches!(c.state, ContainerState::Running { .. }), "state": state_json(&c.state)});
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
        self.patch_status(pod, status).await;
    }

    /// Runs a pod until it finishes (per restartPolicy) or is stopped.
    async fn run_pod(self: Arc<Self>, pod: Value, ip: Ipv4Addr, stop: Arc<Notify>) {
        let uid = s(&pod, "/metadata/uid").to_string();
        let dir = self.cfg.data_dir.join("pods").join(&uid);
        let key = format!("{}/{}", s(&pod, "/metadata/namespace"), s(&pod, "/metadata/name"));
        self.pod_dirs.lock().await.insert(key.clone(), dir.clone());
        self.clone().run_pod_inner(pod, ip, stop, uid, dir).await;
        // Logs stay readable until the pod object is gone (see `forget`).
        let _ = key;
    }

    async fn run_pod_inner(self: Arc<Self>, pod: Value, ip: Ipv4Addr, stop: Arc<Notify>, uid: String, dir: PathBuf) {
        let started = ts(&jiff::Timestamp::now());
        let policy = match s(&pod, "/spec/restartPolicy") {
            "" => "Always",
            p => p,
        }
        .to_string();
        if s(&pod, "/spec/runtimeClassName") == "oci" {
            let slot_state = ContainerState::Waiting { reason: "CreateContainerConfigError".into(), message: "runtime oci is not available on this node".into() };
            let mut slots = self.container_configs(&pod, ip, &dir).await.unwrap_or_default();
            for c in &mut slots {
                c.state = slot_state.clone();
            }
            self.report(&pod, ip, &slots, "Pending", &started).await;
            return;
        }
        let mut slots = loop {
            match self.container_configs(&pod, ip, &dir).await {
                Ok(s) => break s,
                Err(message) => {
                    let slot = ContainerSlot {
                        name: s(&pod, "/spec/containers/0/name").into(),
                        image: s(&pod, "/spec/containers/0/image").into(),
                        config: ContainerConfig {
                            id: String::new(), pod: PodIdentity::default(), name: String::new(), image: String::new(), command: vec![], args: vec![],
                            env: vec![], working_dir: None, mounts: vec![], ports: vec![], limits: Limits::default(), allow_outbound: false,
                            log: LogConfig { path: dir.join("x.log"), max_bytes: 0 },
                        },
                        state: ContainerState::Waiting { reason: "CreateContainerConfigError".into(), message },
                        last: None, restarts: 0, id: String::new(), started: false, done: false,
                    };
                    self.report(&pod, ip, std::slice::from_ref(&slot), "Pending", &started).await;
                    tokio::select! { _ = tokio::time::sleep(Duration::from_secs(2)) => continue, _ = stop.notified() => return }
                }
            }
        };
        let grace = Duration::from_secs(pod.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_u64).unwrap_or(30));
        let mut backoff = vec![BACKOFF_START; slots.len()];
        // Start every container that is not done; then wait for changes.
        loop {
            let mut pending_retry = None;
            for (i, c) in slots.iter_mut().enumerate() {
                if c.done || c.started {
                    continue;
                }
                c.id = format!("{uid}/{}/{}", c.name, c.restarts);
                let mut cfg = c.config.clone();
                cfg.id = c.id.clone();
                match self.runtime.start(cfg).await {
                    Ok(()) => {
                        c.started = true;
                        c.state = self.runtime.state(&c.id).unwrap_or(ContainerState::Waiting { reason: "Unknown".into(), message: String::new() });
                        // A quick command may already be over; it is handled below like any end.
                        if c.state.is_terminated() {
                            c.state = ContainerState::Running { started_at: jiff::Timestamp::now() };
                        }
                    }
                    Err(e) => {
                        c.state = ContainerState::Waiting { reason: e.reason().into(), message: e.to_string() };
                        pending_retry = Some(backoff[i]);
                        backoff[i] = (backoff[i] * 2).min(BACKOFF_MAX);
                    }
                }
            }
            let all_done = slots.iter().all(|c| c.done);
            let phase = if all_done {
                if slots.iter().all(|c| matches!(c.last, Some(ContainerState::Terminated { exit_code: 0, .. }))) { "Succeeded" } else { "Failed" }
            } else if slots.iter().any(|c| matches!(c.state, ContainerState::Running { .. })) {
                "Running"
            } else {
                "Pending"
            };
            self.report(&pod, ip, &slots, phase, &started).await;
            if all_done {
                return;
            }
            // Wait for a container to end, a retry to be due, or a stop.
            let running: Vec<(usize, String)> = slots.iter().enumerate().filter(|(_, c)| c.started && !c.done).map(|(i, c)| (i, c.id.clone())).collect();
            let rt = self.runtime.clone();
            let wait_any = async {
                let futs = running.iter().map(|(i, id)| {
                    let rt = rt.clone();
                    let id = id.clone();
                    let i = *i;
                    Box::pin(async move { (i, rt.wait(&id).await) })
                });
                if futs.len() == 0 {
                    std::future::pending::<(usize, Result<ContainerState, wk_api::runtime::RuntimeError>)>().await
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
                    let end = result.unwrap_or(ContainerState::Terminated { exit_code: 1, reason: "Unknown".into(), message: String::new(),
                        started_at: jiff::Timestamp::now(), finished_at: jiff::Timestamp::now() });
                    let _ = self.runtime.remove(&slots[i].id);
                    let failed = !matches!(end, ContainerState::Terminated { exit_code: 0, .. });
                    let restart = policy == "Always" || (policy == "OnFailure" && failed);
                    let c = &mut slots[i];
                    c.last = Some(end.clone());
                    c.started = false;
                    if restart {
                        c.restarts += 1;
                        c.state = ContainerState::Waiting { reason: "CrashLoopBackOff".into(), message: format!("back-off {}s restarting failed container", backoff[i].as_secs()) };
                        self.report(&pod, ip, &slots, "Running", &started).await;
                        tokio::select! { _ = tokio::time::sleep(backoff[i]) => {}, _ = stop.notified() => { self.stop_all(&slots, grace).await; return; } }
                        backoff[i] = (backoff[i] * 2).min(BACKOFF_MAX);
                    } else {
                        slots[i].state = end;
                        slots[i].done = true;
                    }
                }
                _ = retry => {}
                _ = stop.notified() => {
                    self.stop_all(&slots, grace).await;
                    return;
                }
            }
        }
    }

    async fn stop_all(&self, slots: &[ContainerSlot], grace: Duration) {
        for c in slots {
            if matches!(c.state, ContainerState::Running { .. }) {
                let _ = self.runtime.stop(&c.id, grace).await;
                let _ = self.runtime.remove(&c.id);
            }
        }
    }
}
