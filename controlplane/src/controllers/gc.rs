//! Garbage collection: objects whose controller owner no longer exists are deleted
//! (background cascading deletion).

use std::collections::HashSet;

use serde_json::json;
use wk_api::resource::lookup;
use wk_client::Client;

use super::{controller_uid, s, World};

pub(crate) async fn run(client: &Client, w: &World) {
    let rs_uids: HashSet<&str> = w.replicasets.iter().map(|r| s(r, "/metadata/uid")).collect();
    let deploy_uids: HashSet<&str> = w.deployments.iter().map(|d| s(d, "/metadata/uid")).collect();
    let owned_by = |v: &serde_json::Value, kind: &str| {
        v.pointer("/metadata/ownerReferences")
            .and_then(|o| o.as_array())
            .is_some_and(|o| o.iter().any(|r| r["kind"] == kind && r["controller"] == json!(true)))
    };
    for rs in &w.replicasets {
        if owned_by(rs, "Deployment") && controller_uid(rs).is_some_and(|u| !deploy_uids.contains(u)) {
            let _ = client.delete(lookup("rs").expect("rs"), Some(s(rs, "/metadata/namespace")), s(rs, "/metadata/name"), &json!({})).await;
        }
    }
    for pod in &w.pods {
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        if owned_by(pod, "ReplicaSet") && controller_uid(pod).is_some_and(|u| !rs_uids.contains(u)) {
            let _ = client.delete(lookup("pods").expect("pods"), Some(s(pod, "/metadata/namespace")), s(pod, "/metadata/name"), &json!({})).await;
        }
    }
}
