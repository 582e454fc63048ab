//! Scheduler: binds each pending pod to a ready node that offers its runtime and matches
//! its nodeSelector, preferring the node with the fewest pods; explains when none fits.

use std::collections::HashMap;

use serde_json::{json, Value};
use wk_api::resource::lookup;
use wk_client::Client;

use super::{is_active, labels, patch_status, s, World};

fn node_ready(n: &Value) -> bool {
    n.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
        && n.pointer("/spec/unschedulable") != Some(&json!(true))
}

pub(crate) async fn run(client: &Client, w: &World) {
    let pods_rt = lookup("pods").expect("pods");
    let mut load: HashMap<&str, usize> = HashMap::new();
    for p in w.pods.iter().filter(|p| is_active(p)) {
        *load.entry(s(p, "/spec/nodeName")).or_default() += 1;
    }
    for pod in w.pods.iter().filter(|p| s(p, "/spec/nodeName").is_empty() && is_active(p)) {
        let runtime = match s(pod, "/spec/runtimeClassName") {
            "" => "wasm",
            r => r,
        };
        let selector = labels(pod, "/spec/nodeSelector");
        let mut reasons: HashMap<&str, usize> = HashMap::new();
        let mut best: Option<&Value> = None;
        for n in &w.nodes {
            let why = if !node_ready(n) {
                Some("node(s) were not ready")
            } else if !s(n, "/metadata/annotations/wk.dev~1runtimes").split(',').any(|r| r.trim() == runtime) {
                Some("node(s) did not offer the pod's runtime")
            } else if !selector.iter().all(|(k, v)| labels(n, "/metadata/labels").get(k) == Some(v)) {
                Some("node(s) didn't match Pod's node affinity/selector")
            } else {
                None
            };
            match why {
                Some(r) => *reasons.entry(r).or_default() += 1,
                None => {
                    let l = load.get(s(n, "/metadata/name")).copied().unwrap_or(0);
                    if best.is_none_or(|b| l < load.get(s(b, "/metadata/name")).copied().unwrap_or(0)) {
                        best = Some(n);
                    }
                }
            }
        }
        let ns = s(pod, "/metadata/namespace");
        let name = s(pod, "/metadata/name");
        match best {
            Some(node) => {
                let node_name = s(node, "/metadata/name");
                let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name}, "target": {"kind": "Node", "name": node_name}});
                let path = format!("{}/binding", pods_rt.object_path(Some(ns), name));
                let body = serde_json::to_vec(&binding).unwrap_or_default();
                if client.request(wk_client::Method::POST, &path, &[], Some(("application/json", body)), None).await.is_ok() {
                    *load.entry(node_name).or_default() += 1;
                }
            }
            None => {
                let mut parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
                parts.sort();
                let message = format!("0/{} nodes are available: {}.", w.nodes.len(), parts.join(", "));
                let current = pod
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .and_then(|cs| cs.iter().find(|c| c["type"] == "PodScheduled"))
                    .and_then(|c| c.get("message"))
                    .and_then(Value::as_str);
                if current != Some(message.as_str()) {
                    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
                    let status = json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                        "message": message, "lastTransitionTime": now, "lastProbeTime": null}]});
                    patch_status(client, "pods", pod, status).await;
                }
            }
        }
    }
}
