//! Garbage collection: objects whose controller owner no longer exists are deleted
//! (background cascading deletion): ReplicaSets of a gone Deployment, pods of a gone
//! ReplicaSet, DaemonSet or Job, Jobs of a gone CronJob; and pods bound to a Node that
//! no longer exists. Orphan and Foreground deletion of owners (`cascading`).

use std::collections::HashSet;

use serde_json::{Value, json};
use wk_api::resource::lookup;
use wk_client::Client;

use super::{World, s};

/// The kinds whose objects the controllers load, so an owner of these kinds that is not
/// in the World is really gone.
const OWNER_KINDS: [&str; 5] = ["Deployment", "ReplicaSet", "DaemonSet", "Job", "CronJob"];

fn gone_owner(v: &Value, uids: &HashSet<&str>) -> bool {
    v.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter().any(|r| {
                r["controller"] == json!(true)
                    && OWNER_KINDS.contains(&s(r, "/kind"))
                    && !uids.contains(s(r, "/uid"))
            })
        })
}

/// How long a pod bound to a node that does not exist is left alone before it is deleted
/// (Kubernetes' pod GC quarantine): a pod may be created for a node about to register.
const ORPHAN_QUARANTINE_SECS: i64 = 40;

/// Pods bound to nodes that no longer exist: no agent will finish their deletion, so
/// they are removed at once (grace period 0), as Kubernetes' pod GC does. Terminating
/// ones go now, others after the quarantine.
async fn orphaned_pods(client: &Client, w: &World) {
    let nodes: HashSet<&str> = w.nodes.iter().map(|n| s(n, "/metadata/name")).collect();
    let now = jiff::Timestamp::now();
    let pods_rt = lookup("pods").expect("pods");
    for p in &w.pods {
        let node = s(p, "/spec/nodeName");
        if node.is_empty() || nodes.contains(node) {
            continue;
        }
        let terminating = p.pointer("/metadata/deletionTimestamp").is_some();
        let age = s(p, "/metadata/creationTimestamp")
            .parse::<jiff::Timestamp>()
            .map(|t| (now - t).get_seconds())
            .unwrap_or(0);
        if terminating || age > ORPHAN_QUARANTINE_SECS {
            tracing::info!(
                pod = s(p, "/metadata/name"),
                node,
                "deleting a pod of a node that is gone"
            );
            let _ = client
                .delete(
                    pods_rt,
                    Some(s(p, "/metadata/namespace")),
                    s(p, "/metadata/name"),
                    &json!({"gracePeriodSeconds": 0}),
                )
                .await;
        }
    }
}

fn finalizers(o: &Value) -> Vec<&str> {
    o.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn owns(dependent: &Value, uid: &str) -> bool {
    dependent
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| refs.iter().any(|r| s(r, "/uid") == uid))
}

/// Owners deleted with `propagationPolicy: Orphan` (finalizer `orphan`) or `Foreground`
/// (`foregroundDeletion`): their dependents lose the owner reference, or are deleted
/// (foreground too) first; then the finalizer goes and the API server removes the owner.
async fn cascading(client: &Client, w: &World) {
    let owners = [
        ("deployments", &w.deployments),
        ("replicasets", &w.replicasets),
        ("daemonsets", &w.daemonsets),
        ("jobs", &w.jobs),
        ("cronjobs", &w.cronjobs),
    ];
    let dependents = [
        ("replicasets", &w.replicasets),
        ("jobs", &w.jobs),
        ("pods", &w.pods),
    ];
    for (kind, objs) in owners {
        for o in objs.iter() {
            if o.pointer("/metadata/deletionTimestamp").is_none() {
                continue;
            }
            let fins = finalizers(o);
            let (orphan, foreground) = (
                fins.contains(&"orphan"),
                fins.contains(&"foregroundDeletion"),
            );
            if !orphan && !foreground {
                continue;
            }
            let uid = s(o, "/metadata/uid");
            let mut remaining = 0;
            for (dep_kind, deps) in dependents {
                let rt = lookup(dep_kind).expect("kind registered");
                for d in deps.iter().filter(|d| owns(d, uid)) {
                    remaining += 1;
                    let (ns, name) = (s(d, "/metadata/namespace"), s(d, "/metadata/name"));
                    if orphan {
                        let refs: Vec<Value> = d
                            .pointer("/metadata/ownerReferences")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter(|r| s(r, "/uid") != uid)
                            .cloned()
                            .collect();
                        let refs = if refs.is_empty() {
                            Value::Null
                        } else {
                            json!(refs)
                        };
                        let _ = client
                            .patch(
                                rt,
                                Some(ns),
                                name,
                                "application/merge-patch+json",
                                &json!({"metadata": {"ownerReferences": refs}}),
                                &[],
                            )
                            .await;
                    } else if d.pointer("/metadata/deletionTimestamp").is_none() {
                        let _ = client
                            .delete(
                                rt,
                                Some(ns),
                                name,
                                &json!({"propagationPolicy": "Foreground"}),
                            )
                            .await;
                    }
                }
            }
            if remaining == 0 {
                let rest: Vec<&str> = fins
                    .into_iter()
                    .filter(|f| *f != "orphan" && *f != "foregroundDeletion")
                    .collect();
                let _ = client
                    .patch(
                        lookup(kind).expect("kind registered"),
                        Some(s(o, "/metadata/namespace")),
                        s(o, "/metadata/name"),
                        "application/merge-patch+json",
                        &json!({"metadata": {"finalizers": rest}}),
                        &[],
                    )
                    .await;
            }
        }
    }
}

pub(crate) async fn run(client: &Client, w: &World) {
    orphaned_pods(client, w).await;
    cascading(client, w).await;
    let uids: HashSet<&str> = w
        .deployments
        .iter()
        .chain(&w.replicasets)
        .chain(&w.daemonsets)
        .chain(&w.jobs)
        .chain(&w.cronjobs)
        .map(|o| s(o, "/metadata/uid"))
        .collect();
    for (kind, objs) in [
        ("replicasets", &w.replicasets),
        ("jobs", &w.jobs),
        ("pods", &w.pods),
    ] {
        let rt = lookup(kind).expect("kind registered");
        for o in objs.iter() {
            if o.pointer("/metadata/deletionTimestamp").is_none() && gone_owner(o, &uids) {
                tracing::debug!(kind, name = s(o, "/metadata/name"), "garbage collecting");
                let _ = client
                    .delete(
                        rt,
                        Some(s(o, "/metadata/namespace")),
                        s(o, "/metadata/name"),
                        &json!({}),
                    )
                    .await;
            }
        }
    }
}
