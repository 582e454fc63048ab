//! Deployment controller: one ReplicaSet per pod template (named by the template's hash,
//! labelled `pod-template-hash`); the new one is scaled to `replicas`, older ones to zero
//! once the new one is fully ready; history beyond `revisionHistoryLimit` is deleted.

use std::hash::{Hash, Hasher};

use serde_json::{Value, json};
use wk_api::resource::lookup;
use wk_client::Client;

use super::{World, controller_uid, owner_ref, patch_status, s};

fn template_hash(template: &Value) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    template.to_string().hash(&mut h);
    let n = h.finish();
    // Kubernetes uses a short alphanumeric hash.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..10)
        .map(|i| ALPHABET[((n >> (i * 6)) % ALPHABET.len() as u64) as usize] as char)
        .collect()
}

pub(crate) async fn run(client: &Client, w: &World) {
    let rs_rt = lookup("rs").expect("rs");
    for d in &w.deployments {
        if d.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let uid = s(d, "/metadata/uid");
        let ns = s(d, "/metadata/namespace");
        let name = s(d, "/metadata/name");
        let want = d
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1)
            .max(0);
        let template = d.pointer("/spec/template").cloned().unwrap_or_default();
        let hash = template_hash(&template);
        let owned: Vec<&Value> = w
            .replicasets
            .iter()
            .filter(|r| controller_uid(r) == Some(uid))
            .map(|v| v.as_ref())
            .collect();
        let new_rs = owned
            .iter()
            .find(|r| s(r, "/metadata/labels/pod-template-hash") == hash)
            .copied();
        let revision = owned
            .iter()
            .filter_map(|r| {
                s(
                    r,
                    "/metadata/annotations/deployment.kubernetes.io~1revision",
                )
                .parse::<i64>()
                .ok()
            })
            .max()
            .unwrap_or(0);
        match new_rs {
            None => {
                let mut tmpl = template.clone();
                tmpl["metadata"]["labels"]["pod-template-hash"] = json!(hash);
                let mut selector = d.pointer("/spec/selector").cloned().unwrap_or(json!({}));
                selector["matchLabels"]["pod-template-hash"] = json!(hash);
                let mut labels = tmpl["metadata"]["labels"].clone();
                labels["pod-template-hash"] = json!(hash);
                let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "metadata": {"name": format!("{name}-{hash}"), "namespace": ns, "labels": labels,
                                 "annotations": {"deployment.kubernetes.io/revision": (revision + 1).to_string()},
                                 "ownerReferences": owner_ref(d, "apps/v1", "Deployment")},
                    "spec": {"replicas": want, "selector": selector, "template": tmpl}});
                if let Err(e) = client.create(rs_rt, Some(ns), &rs, &[]).await {
                    tracing::warn!(deployment = name, error = %e, "creating a replicaset failed");
                }
                continue;
            }
            Some(new) => {
                if new.pointer("/spec/replicas").and_then(Value::as_i64) != Some(want) {
                    let _ = client
                        .patch(
                            rs_rt,
                            Some(ns),
                            s(new, "/metadata/name"),
                            "application/merge-patch+json",
                            &json!({"spec": {"replicas": want}}),
                            &[],
                        )
                        .await;
                }
                let new_ready = new
                    .pointer("/status/readyReplicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                let mut old: Vec<&&Value> = owned
                    .iter()
                    .filter(|r| s(r, "/metadata/uid") != s(new, "/metadata/uid"))
                    .collect();
                if new_ready >= want {
                    for r in &old {
                        if r.pointer("/spec/replicas")
                            .and_then(Value::as_i64)
                            .unwrap_or(0)
                            != 0
                        {
                            let _ = client
                                .patch(
                                    rs_rt,
                                    Some(ns),
                                    s(r, "/metadata/name"),
                                    "application/merge-patch+json",
                                    &json!({"spec": {"replicas": 0}}),
                                    &[],
                                )
                                .await;
                        }
                    }
                }
                // History: keep the newest `revisionHistoryLimit` scaled-down ReplicaSets.
                let limit = d
                    .pointer("/spec/revisionHistoryLimit")
                    .and_then(Value::as_i64)
                    .unwrap_or(10)
                    .max(0) as usize;
                old.retain(|r| {
                    r.pointer("/status/replicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(0)
                        == 0
                        && r.pointer("/spec/replicas")
                            .and_then(Value::as_i64)
                            .unwrap_or(0)
                            == 0
                });
                old.sort_by_key(|r| {
                    std::cmp::Reverse(
                        s(
                            r,
                            "/metadata/annotations/deployment.kubernetes.io~1revision",
                        )
                        .parse::<i64>()
                        .unwrap_or(0),
                    )
                });
                for r in old.iter().skip(limit) {
                    let _ = client
                        .delete(rs_rt, Some(ns), s(r, "/metadata/name"), &json!({}))
                        .await;
                }
                let sum = |p: &str| {
                    owned
                        .iter()
                        .map(|r| r.pointer(p).and_then(Value::as_i64).unwrap_or(0))
                        .sum::<i64>()
                };
                let updated = new
                    .pointer("/status/replicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                let available = sum("/status/availableReplicas");
                let now = jiff::Timestamp::now()
                    .strftime("%Y-%m-%dT%H:%M:%SZ")
                    .to_string();
                let cond = |t: &str, ok: bool, reason: &str| {
                    json!({"type": t, "status": if ok { "True" } else { "False" }, "reason": reason,
                    "lastUpdateTime": now, "lastTransitionTime": now, "message": ""})
                };
                let status = json!({
                    "observedGeneration": d.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
                    "replicas": sum("/status/replicas"), "updatedReplicas": updated, "readyReplicas": sum("/status/readyReplicas"),
                    "availableReplicas": available, "unavailableReplicas": (want - available).max(0),
                    "conditions": [cond("Available", available >= want, if available >= want { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" }),
                                   cond("Progressing", true, if updated >= want && new_ready >= want { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" })],
                });
                let current = d.get("status").cloned().unwrap_or(json!({}));
                let changed = [
                    "observedGeneration",
                    "replicas",
                    "updatedReplicas",
                    "readyReplicas",
                    "availableReplicas",
                ]
                .iter()
                .any(|k| current.get(*k).unwrap_or(&json!(0)) != &status[*k]);
                if changed {
                    patch_status(client, "deployments", d, status).await;
                }
            }
        }
    }
}
