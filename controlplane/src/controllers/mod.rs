//! Controllers and the scheduler: API clients that run on the Raft leader, list what they
//! manage, decide, and write back through the API (like kube-controller-manager and
//! kube-scheduler). Each pass is triggered by a watch event on the resources involved or
//! by a periodic resync.
//!
//! Built so far (the controllers issue grows these): the scheduler (filters and scores,
//! `scheduler.rs`), node lifecycle (unreachable nodes tainted, their pods evicted), the
//! ReplicaSet, Deployment, Job and Endpoints controllers, and garbage collection of
//! objects whose controller owner is gone.

mod deployment;
mod endpoints;
mod gc;
mod job;
mod nodelifecycle;
mod replicaset;
mod scheduler;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use wk_api::resource::lookup;
use wk_client::{Client, ListParams};

use crate::store::Store;

/// Everything the controllers look at in one pass.
pub(crate) struct World {
    pub nodes: Vec<Value>,
    pub pods: Vec<Value>,
    pub replicasets: Vec<Value>,
    pub deployments: Vec<Value>,
    pub jobs: Vec<Value>,
    pub cronjobs: Vec<Value>,
    pub services: Vec<Value>,
    pub endpoints: Vec<Value>,
    pub leases: Vec<Value>,
}

pub(crate) fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn labels(v: &Value, p: &str) -> BTreeMap<String, String> {
    wk_api::meta::string_map(v.pointer(p))
}

/// The uid of an object's controller owner, if any.
pub(crate) fn controller_uid(v: &Value) -> Option<&str> {
    v.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|o| o.get("controller") == Some(&json!(true)))
        .and_then(|o| o.get("uid"))
        .and_then(Value::as_str)
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

pub(crate) fn is_active(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_none()
        && !matches!(s(pod, "/status/phase"), "Succeeded" | "Failed")
}

async fn list_all(client: &Client, kind: &str) -> Result<Vec<Value>, wk_client::ClientError> {
    let rt = lookup(kind).expect("kind registered");
    let v = client.list(rt, None, true, &ListParams::default()).await?;
    Ok(v["items"].as_array().cloned().unwrap_or_default())
}

impl World {
    async fn load(client: &Client) -> Result<World, wk_client::ClientError> {
        Ok(World {
            nodes: list_all(client, "nodes").await?,
            pods: list_all(client, "pods").await?,
            replicasets: list_all(client, "replicasets").await?,
            deployments: list_all(client, "deployments").await?,
            jobs: list_all(client, "jobs").await?,
            cronjobs: list_all(client, "cronjobs").await?,
            services: list_all(client, "services").await?,
            endpoints: list_all(client, "endpoints").await?,
            leases: list_all(client, "leases").await?,
        })
    }
}

/// Patches an object's `/status` with a merge patch.
pub(crate) async fn patch_status(client: &Client, kind: &str, obj: &Value, status: Value) {
    let rt = lookup(kind).expect("kind registered");
    let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str);
    let path = format!("{}/status", rt.object_path(ns, s(obj, "/metadata/name")));
    let body = serde_json::to_vec(&json!({"status": status})).unwrap_or_default();
    if let Err(e) = client
        .request(
            wk_client::Method::PATCH,
            &path,
            &[],
            Some(("application/merge-patch+json", body)),
            None,
        )
        .await
    {
        tracing::debug!(error = %e, kind, "status patch failed");
    }
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

/// Runs the controllers while this server leads, until the process ends.
pub async fn run(store: Store, client: Client) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    for kind in [
        "pods",
        "replicasets",
        "deployments",
        "nodes",
        "jobs",
        "services",
    ] {
        let (client, tx) = (client.clone(), tx.clone());
        tokio::spawn(async move {
            let rt = lookup(kind).expect("kind registered");
            loop {
                let p = ListParams {
                    resource_version: Some("0".into()),
                    ..Default::default()
                };
                // Any change to a watched kind triggers a pass.
                if let Ok(stream) = client.watch(rt, None, true, &p, false).await {
                    let mut stream = Box::pin(stream);
                    while let Some(Ok(_)) = stream.next().await {
                        let _ = tx.try_send(());
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }
    loop {
        // Coalesce bursts of events; resync at least every second (node leases are read on
        // resync, not watched).
        let _ = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        while rx.try_recv().is_ok() {}
        if !store.is_leader() {
            continue;
        }
        let world = match World::load(&client).await {
            Ok(w) => w,
            Err(e) => {
                tracing::debug!(error = %e, "controllers: cannot list");
                continue;
            }
        };
        gc::run(&client, &world).await;
        nodelifecycle::run(&client, &world).await;
        deployment::run(&client, &world).await;
        replicaset::run(&client, &world).await;
        job::run(&client, &world).await;
        scheduler::run(&client, &world).await;
        endpoints::run(&client, &world).await;
    }
}
