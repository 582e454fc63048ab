//! DaemonSet: one pod per node that the template may run on (runtime, nodeSelector,
//! required node affinity, taints — `scheduler::placement_allows`), following nodes as they
//! come, change labels and go. A pod already on a node stays unless the node stops
//! matching or gets a NoExecute taint the pod does not tolerate
//! (`scheduler::placement_keeps`): a NoSchedule taint only keeps new pods off, as in
//! Kubernetes. Pods are bound to their node at creation (`spec.nodeName`),
//! and carry Kubernetes' DaemonSet tolerations for not-ready and unreachable nodes, so
//! node lifecycle does not evict them.
//!
//! `updateStrategy: RollingUpdate` replaces pods whose `controller-revision-hash` is not
//! the template's, at most `maxUnavailable` (default 1) unavailable at a time; `OnDelete`
//! waits for the user to delete them. Failed pods are replaced.

use std::collections::HashMap;

use serde_json::{Value, json};
use wk_api::resource::lookup;
use wk_client::Client;

use super::deployment::{scaled, template_hash};
use super::scheduler::{placement_allows, placement_keeps};
use super::{World, controller_uid, event, is_ready, owner_ref, patch_status, s};

const HASH_LABEL: &str = "controller-revision-hash";

/// The tolerations Kubernetes adds to every DaemonSet pod.
fn daemon_tolerations() -> Vec<Value> {
    [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ]
    .iter()
    .map(|k| json!({"key": k, "operator": "Exists", "effect": "NoExecute"}))
    .chain(
        ["node.kubernetes.io/unschedulable"]
            .iter()
            .map(|k| json!({"key": k, "operator": "Exists", "effect": "NoSchedule"})),
    )
    .collect()
}

/// The template as a pod, with the DaemonSet tolerations, for placement checks.
fn template_pod(ds: &Value) -> Value {
    let mut pod = ds.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let mut tolerations = pod
        .pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    tolerations.extend(daemon_tolerations());
    pod["spec"]["tolerations"] = json!(tolerations);
    pod
}

pub(crate) async fn run(client: &Client, w: &World) {
    for ds in &w.daemonsets {
        if ds.pointer("/metadata/deletionTimestamp").is_none() {
            sync(client, w, ds).await;
        }
    }
}

async fn delete_pod(client: &Client, ds: &Value, pod: &Value) {
    let pods_rt = lookup("pods").expect("pods");
    let name = s(pod, "/metadata/name");
    if client
        .delete(
            pods_rt,
            Some(s(pod, "/metadata/namespace")),
            name,
            &json!({}),
        )
        .await
        .is_ok()
    {
        event(
            client,
            ds,
            "Normal",
            "SuccessfulDelete",
            &format!("Deleted pod: {name}"),
        );
    }
}

async fn sync(client: &Client, w: &World, ds: &Value) {
    let pods_rt = lookup("pods").expect("pods");
    let ns = s(ds, "/metadata/namespace");
    let uid = s(ds, "/metadata/uid");
    let template = template_pod(ds);
    let hash = template_hash(ds.pointer("/spec/template").unwrap_or(&Value::Null));
    let wanted: Vec<&str> = w
        .nodes
        .iter()
        .filter(|n| placement_allows(&template, n))
        .map(|n| s(n, "/metadata/name"))
        .collect();
    // Where a pod already placed may stay: a NoSchedule taint added later leaves it.
    let keep: Vec<&str> = w
        .nodes
        .iter()
        .filter(|n| placement_keeps(&template, n))
        .map(|n| s(n, "/metadata/name"))
        .collect();
    let mut by_node: HashMap<&str, Vec<&Value>> = HashMap::new();
    for p in w.pods.iter().filter(|p| {
        controller_uid(p) == Some(uid) && p.pointer("/metadata/deletionTimestamp").is_none()
    }) {
        by_node.entry(s(p, "/spec/nodeName")).or_default().push(p);
    }
    // Pods on nodes that may not keep one, extras, and failed pods go.
    let mut misscheduled = 0;
    for (node, pods) in &by_node {
        if !wanted.contains(node) {
            misscheduled += 1;
        }
        if !keep.contains(node) {
            for p in pods {
                delete_pod(client, ds, p).await;
            }
            continue;
        }
        let (failed, mut running): (Vec<&Value>, Vec<&Value>) = pods
            .iter()
            .partition(|p| matches!(s(p, "/status/phase"), "Failed"));
        for p in failed {
            delete_pod(client, ds, p).await;
        }
        running.sort_by_key(|p| std::cmp::Reverse(is_ready(p)));
        for p in running.iter().skip(1) {
            delete_pod(client, ds, p).await;
        }
    }
    let current = |node: &str| -> Option<&Value> {
        by_node.get(node).and_then(|ps| {
            ps.iter()
                .find(|p| !matches!(s(p, "/status/phase"), "Failed"))
                .copied()
        })
    };
    // Nodes without a pod get one.
    for node in &wanted {
        if current(node).is_some() {
            continue;
        }
        let mut meta = template.get("metadata").cloned().unwrap_or(json!({}));
        meta["generateName"] = json!(format!("{}-", s(ds, "/metadata/name")));
        meta["namespace"] = json!(ns);
        meta["labels"][HASH_LABEL] = json!(hash);
        meta["ownerReferences"] = owner_ref(ds, "apps/v1", "DaemonSet");
        let mut spec = template.get("spec").cloned().unwrap_or_default();
        spec["nodeName"] = json!(node);
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec});
        match client.create(pods_rt, Some(ns), &pod, &[]).await {
            Ok(p) => event(
                client,
                ds,
                "Normal",
                "SuccessfulCreate",
                &format!("Created pod: {}", s(&p, "/metadata/name")),
            ),
            Err(e) => {
                tracing::warn!(daemonset = s(ds, "/metadata/name"), error = %e, "creating a pod failed")
            }
        }
    }
    // Rolling update: old pods go, unready ones first, within maxUnavailable.
    let desired = wanted.len() as i64;
    let placed: Vec<&Value> = wanted.iter().filter_map(|n| current(n)).collect();
    let ready = placed.iter().filter(|p| is_ready(p)).count() as i64;
    let updated: Vec<&&Value> = placed
        .iter()
        .filter(|p| s(p, &format!("/metadata/labels/{HASH_LABEL}")) == hash)
        .collect();
    if s(ds, "/spec/updateStrategy/type") != "OnDelete" {
        let max_unavailable = scaled(
            ds.pointer("/spec/updateStrategy/rollingUpdate/maxUnavailable"),
            desired,
            true,
            "1",
        )
        .max(1);
        let mut budget = max_unavailable - (desired - ready);
        let mut old: Vec<&&Value> = placed
            .iter()
            .filter(|p| s(p, &format!("/metadata/labels/{HASH_LABEL}")) != hash)
            .collect();
        old.sort_by_key(|p| is_ready(p));
        for p in old {
            if is_ready(p) {
                if budget <= 0 {
                    break;
                }
                budget -= 1;
            }
            delete_pod(client, ds, p).await;
        }
    }
    let status = json!({
        "desiredNumberScheduled": desired,
        "currentNumberScheduled": placed.len(),
        "numberMisscheduled": misscheduled,
        "numberReady": ready,
        "numberAvailable": ready,
        "numberUnavailable": desired - ready,
        "updatedNumberScheduled": updated.len(),
        "observedGeneration": ds.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
    });
    let now = ds.get("status").cloned().unwrap_or(json!({}));
    if status
        .as_object()
        .is_some_and(|m| m.iter().any(|(k, v)| now.get(k).unwrap_or(&json!(0)) != v))
    {
        patch_status(client, "daemonsets", ds, status).await;
    }
}
