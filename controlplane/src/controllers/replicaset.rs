//! ReplicaSet controller: keeps `replicas` active pods matching the selector, owned by the
//! ReplicaSet; reports counts in status.

use serde_json::{Value, json};
use wk_api::resource::lookup;
use wk_client::Client;

use super::{
    World, adopt, controller_uid, is_active, is_available, is_ready, owner_ref, patch_status, s,
};

pub(crate) async fn run(client: &Client, w: &World) {
    let pods_rt = lookup("pods").expect("pods");
    for rs in &w.replicasets {
        if rs.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let uid = s(rs, "/metadata/uid");
        let ns = s(rs, "/metadata/namespace");
        let want = rs
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1)
            .max(0) as usize;
        let mut owned: Vec<&Value> = w
            .pods
            .iter()
            .filter(|p| controller_uid(p) == Some(uid) && is_active(p))
            .map(|v| v.as_ref())
            .collect();
        let orphans = w.pods.iter().filter(|p| is_active(p));
        owned.extend(adopt(client, pods_rt, rs, ("apps/v1", "ReplicaSet"), orphans).await);
        if owned.len() < want {
            let template = rs.pointer("/spec/template").cloned().unwrap_or_default();
            for _ in owned.len()..want {
                let mut meta = template.get("metadata").cloned().unwrap_or(json!({}));
                meta["generateName"] = json!(format!("{}-", s(rs, "/metadata/name")));
                meta["namespace"] = json!(ns);
                meta["ownerReferences"] = owner_ref(rs, "apps/v1", "ReplicaSet");
                let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template.get("spec").cloned().unwrap_or_default()});
                if let Err(e) = client.create(pods_rt, Some(ns), &pod, &[]).await {
                    tracing::warn!(rs = s(rs, "/metadata/name"), error = %e, "creating a pod failed");
                    break;
                }
            }
        } else if owned.len() > want {
            // Prefer removing pods that are not ready, then unscheduled ones.
            owned.sort_by_key(|p| (is_ready(p), !s(p, "/spec/nodeName").is_empty()));
            for p in &owned[..owned.len() - want] {
                let _ = client
                    .delete(pods_rt, Some(ns), s(p, "/metadata/name"), &json!({}))
                    .await;
            }
            owned.drain(..owned.len() - want);
        }
        let ready = owned.iter().filter(|p| is_ready(p)).count();
        // Available: Ready for minReadySeconds (the 1 s resync moves it on).
        let min_ready = rs
            .pointer("/spec/minReadySeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let now = jiff::Timestamp::now();
        let available = owned
            .iter()
            .filter(|p| is_available(p, min_ready, now))
            .count();
        let status = json!({"replicas": owned.len(), "fullyLabeledReplicas": owned.len(), "readyReplicas": ready,
                            "availableReplicas": available, "observedGeneration": rs.pointer("/metadata/generation").cloned().unwrap_or(json!(1))});
        let current = rs.get("status").cloned().unwrap_or(json!({}));
        if [
            "replicas",
            "readyReplicas",
            "availableReplicas",
            "observedGeneration",
        ]
        .iter()
        .any(|k| current.get(*k).unwrap_or(&json!(0)) != &status[*k])
        {
            patch_status(client, "replicasets", rs, status).await;
        }
    }
}
