//! Controllers and the scheduler: API clients that run on the Raft leader, list what they
//! manage, decide, and write back through the API (like kube-controller-manager and
//! kube-scheduler). Each pass is triggered by a watch event on the resources involved or
//! by a periodic resync.
//!
//! Built so far (the controllers issue grows these): the scheduler (filters and scores,
//! `scheduler.rs`), node lifecycle (unreachable nodes tainted, their pods evicted), the
//! ReplicaSet, Deployment, Job and Endpoints controllers, and garbage collection of
//! objects whose controller owner is gone.

mod cache;
mod cronjob;
mod daemonset;
mod deployment;
mod endpoints;
mod gc;
mod job;
mod nodelifecycle;
mod replicaset;
mod scheduler;
mod serviceaccount;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use wk_api::resource::lookup;
use wk_client::Client;

use crate::store::Store;

/// Everything the controllers look at in one pass.
pub(crate) struct World {
    pub nodes: Vec<Arc<Value>>,
    pub pods: Vec<Arc<Value>>,
    pub replicasets: Vec<Arc<Value>>,
    pub deployments: Vec<Arc<Value>>,
    pub daemonsets: Vec<Arc<Value>>,
    pub jobs: Vec<Arc<Value>>,
    pub cronjobs: Vec<Arc<Value>>,
    pub services: Vec<Arc<Value>>,
    pub endpoints: Vec<Arc<Value>>,
    pub leases: Vec<Arc<Value>>,
    pub namespaces: Vec<Arc<Value>>,
    pub serviceaccounts: Vec<Arc<Value>>,
}

pub(crate) fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn labels(v: &Value, p: &str) -> BTreeMap<String, String> {
    wk_api::meta::string_map(v.pointer(p))
}

/// The objects of `candidates` that `owner` (of `kind`) adopts, as Kubernetes' controllers
/// do: in its namespace, with no controller owner, not being deleted, and matching its
/// `spec.selector`. A ReplicaSet left by `kubectl delete --cascade=orphan` comes back
/// under the Deployment applied again, and its pods under the ReplicaSet, instead of
/// being duplicated. Each is claimed with a patch that adds the owner reference, guarded
/// by the object's resourceVersion and uid; those claimed are returned.
pub(crate) async fn adopt<'a>(
    client: &Client,
    rt: &wk_api::resource::ResourceType,
    owner: &Value,
    (api_version, kind): (&str, &str),
    candidates: impl Iterator<Item = &'a Arc<Value>>,
) -> Vec<&'a Value> {
    let ns = s(owner, "/metadata/namespace");
    // Orphans are rare: the selector is only parsed when there are any.
    let orphans: Vec<&Arc<Value>> = candidates
        .filter(|c| {
            s(c, "/metadata/namespace") == ns
                && controller_uid(c).is_none()
                && c.pointer("/metadata/deletionTimestamp").is_none()
        })
        .collect();
    if orphans.is_empty() {
        return Vec::new();
    }
    let Some(selector) = owner
        .pointer("/spec/selector")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .and_then(|sel| wk_api::selector::LabelSelector::from_k8s(&sel).ok())
    else {
        return Vec::new();
    };
    if selector.is_empty() {
        return Vec::new(); // an empty selector would take everything: never adopt with it
    }
    let mut adopted = Vec::new();
    for c in orphans {
        if !selector.matches(&labels(c, "/metadata/labels")) {
            continue;
        }
        let mut refs = c
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        refs.push(owner_ref(owner, api_version, kind)[0].clone());
        let patch = json!({"metadata": {"ownerReferences": refs,
            "resourceVersion": s(c, "/metadata/resourceVersion"), "uid": s(c, "/metadata/uid")}});
        let name = s(c, "/metadata/name");
        match client
            .patch(
                rt,
                Some(ns),
                name,
                "application/merge-patch+json",
                &patch,
                &[],
            )
            .await
        {
            Ok(_) => {
                tracing::info!(
                    kind,
                    owner = s(owner, "/metadata/name"),
                    adopted = name,
                    "adopted an orphan"
                );
                adopted.push(c.as_ref());
            }
            Err(e) => tracing::debug!(adopted = name, error = %e, "adoption failed; next pass"),
        }
    }
    adopted
}

/// The uid of an object's controller owner, if any.
/// The owner reference marked `controller`, if any.
pub(crate) fn controller_ref(v: &Value) -> Option<&Value> {
    v.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|o| o.get("controller") == Some(&json!(true)))
}

pub(crate) fn controller_uid(v: &Value) -> Option<&str> {
    controller_ref(v)?.get("uid").and_then(Value::as_str)
}

pub(crate) fn owner_ref(owner: &Value, api_version: &str, kind: &str) -> Value {
    json!([{"apiVersion": api_version, "kind": kind, "name": s(owner, "/metadata/name"), "uid": s(owner, "/metadata/uid"),
            "controller": true, "blockOwnerDeletion": true}])
}

pub(crate) fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Kubernetes' available: Ready for at least `min_ready_seconds` (by its Ready
/// condition's `lastTransitionTime`).
pub(crate) fn is_available(pod: &Value, min_ready_seconds: i64, now: jiff::Timestamp) -> bool {
    if !is_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c.get("lastTransitionTime"))
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .is_some_and(|since| now.duration_since(since).as_secs() >= min_ready_seconds)
}

pub(crate) fn is_active(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_none()
        && !matches!(s(pod, "/status/phase"), "Succeeded" | "Failed")
}

/// Patches an object's `/status` with a merge patch; whether it was written.
pub(crate) async fn patch_status(client: &Client, kind: &str, obj: &Value, status: Value) -> bool {
    let rt = lookup(kind).expect("kind registered");
    let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str);
    if let Err(e) = client
        .patch_subresource(
            rt,
            ns,
            s(obj, "/metadata/name"),
            "status",
            &json!({"status": status}),
        )
        .await
    {
        tracing::debug!(error = %e, kind, "status patch failed");
        return false;
    }
    true
}

/// Records an Event about `obj` (best effort).
pub(crate) fn event(client: &Client, obj: &Value, kind: &str, reason: &str, message: &str) {
    let ev = wk_api::objects::event(obj, kind, reason, message, "wk-controller-manager", None);
    let ns = s(&ev, "/metadata/namespace").to_string();
    let client = client.clone();
    tokio::spawn(async move {
        if let Err(e) = client
            .create(lookup("events").expect("events"), Some(&ns), &ev, &[])
            .await
        {
            tracing::debug!(error = %e, "event not recorded");
        }
    });
}

/// Runs the controllers while this server leads, until the process ends. A pass runs
/// when the cache sees a change, and at least every second (node leases age without
/// events); before each pass the cache catches up with the store, so a pass sees the
/// writes of the one before.
pub async fn run(store: Store, client: Client) {
    let cache = cache::Cache::new();
    tokio::spawn(cache.clone().run(store.clone()));
    let mut seen = 0;
    let mut renewals = nodelifecycle::Renewals::default();
    loop {
        let _ = cache.wait_for(seen + 1, Duration::from_secs(1)).await;
        // Coalesce bursts of events.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let Some(term) = store.leader_term() else {
            continue;
        };
        let Ok(now) = store.read(|sm| sm.revision()).await else {
            continue;
        };
        if !cache.wait_for(now, Duration::from_secs(2)).await {
            tracing::debug!(revision = now, "controllers: cache behind the store");
            continue;
        }
        let world = cache.world();
        let started = std::time::Instant::now();
        // Every write of the pass is fenced to the term this server leads in: if it is
        // deposed meanwhile, they fail instead of landing beside the new leader's.
        let client = client.with_header(crate::apiserver::FENCE_HEADER, &term.to_string());
        let scheduled = crate::store::FENCE
            .scope(term, async {
                // Endpoints first: balancers must stop sending to terminating pods before
                // they stop serving (see runtime-wasm's deregistration drain).
                endpoints::run(&client, &world).await;
                gc::run(&client, &world).await;
                nodelifecycle::run(&client, &world, &mut renewals).await;
                deployment::run(&client, &world).await;
                replicaset::run(&client, &world).await;
                job::run(&client, &world).await;
                cronjob::run(&client, &world).await;
                serviceaccount::run(&client, &world).await;
                daemonset::run(&client, &world).await;
                let scheduling = std::time::Instant::now();
                scheduler::run(&store, &client, &world).await;
                scheduling.elapsed()
            })
            .await;
        tracing::debug!(
            revision = now,
            pods = world.pods.len(),
            pass_ms = started.elapsed().as_millis() as u64,
            scheduler_ms = scheduled.as_millis() as u64,
            "controller pass"
        );
        // The next pass runs on any change after what this one saw, including this
        // pass's own writes (a pod deleted here leaves the Endpoints in the next pass).
        seen = now;
    }
}
