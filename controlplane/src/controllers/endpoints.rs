//! Endpoints: for every Service with a selector, an Endpoints object of the same name
//! listing the matching pods that have an address: ready ones under `addresses`, the rest
//! under `notReadyAddresses`, with the Service's ports resolved against the pods' container
//! ports (numbers or names). Endpoints the controller made for a Service that is gone are
//! deleted.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Value, json};
use wk_api::resource::lookup;
use wk_client::Client;

use super::{World, is_ready, labels, s};

/// Marks the Endpoints this controller owns.
const MANAGED_BY: &str = "endpoints.wk.dev/managed-by";

/// The port a Service port targets on `pod`: `targetPort` as a number, or the container
/// port with that name; defaults to `port`.
fn target_port(svc_port: &Value, pod: &Value) -> Option<i64> {
    match svc_port.get("targetPort") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(name)) => match name.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => pod
                .pointer("/spec/containers")
                .and_then(Value::as_array)?
                .iter()
                .flat_map(|c| {
                    c.get("ports")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                })
                .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
                .and_then(|p| p.get("containerPort").and_then(Value::as_i64)),
        },
        _ => svc_port.get("port").and_then(Value::as_i64),
    }
}

/// The `subsets` for a Service: pods grouped by the ports they resolve to.
pub(crate) fn subsets(svc: &Value, pods: &[&Value]) -> Value {
    let svc_ports = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // ports (as JSON) → (ready addresses, not-ready addresses)
    let mut groups: BTreeMap<String, (Vec<Value>, Vec<Value>)> = BTreeMap::new();
    for pod in pods {
        let ip = s(pod, "/status/podIP");
        if ip.is_empty() {
            continue;
        }
        let ports: Vec<Value> = svc_ports
            .iter()
            .filter_map(|p| {
                let port = target_port(p, pod)?;
                let mut e = json!({"port": port, "protocol": p.get("protocol").and_then(Value::as_str).unwrap_or("TCP")});
                if let Some(n) = p.get("name").and_then(Value::as_str) {
                    e["name"] = json!(n);
                }
                Some(e)
            })
            .collect();
        if ports.is_empty() {
            continue;
        }
        let addr = json!({"ip": ip, "nodeName": s(pod, "/spec/nodeName"),
            "targetRef": {"kind": "Pod", "namespace": s(pod, "/metadata/namespace"), "name": s(pod, "/metadata/name"), "uid": s(pod, "/metadata/uid")}});
        let g = groups
            .entry(serde_json::to_string(&ports).unwrap_or_default())
            .or_default();
        if is_ready(pod) {
            g.0.push(addr)
        } else {
            g.1.push(addr)
        }
    }
    let mut out = Vec::new();
    for (ports, (mut ready, mut not_ready)) in groups {
        ready.sort_by(|a, b| s(a, "/ip").cmp(s(b, "/ip")));
        not_ready.sort_by(|a, b| s(a, "/ip").cmp(s(b, "/ip")));
        let mut subset =
            json!({"ports": serde_json::from_str::<Value>(&ports).unwrap_or_default()});
        if !ready.is_empty() {
            subset["addresses"] = json!(ready);
        }
        if !not_ready.is_empty() {
            subset["notReadyAddresses"] = json!(not_ready);
        }
        out.push(subset);
    }
    json!(out)
}

pub(crate) async fn run(client: &Client, w: &World) {
    let ep_rt = lookup("endpoints").expect("endpoints");
    let mut wanted = HashSet::new();
    for svc in &w.services {
        let Some(sel) = svc
            .pointer("/spec/selector")
            .and_then(Value::as_object)
            .filter(|m| !m.is_empty())
        else {
            continue;
        };
        let ns = s(svc, "/metadata/namespace");
        let name = s(svc, "/metadata/name");
        wanted.insert((ns, name));
        let matches = |p: &Value| {
            let l = labels(p, "/metadata/labels");
            sel.iter()
                .all(|(k, v)| l.get(k).map(String::as_str) == v.as_str())
        };
        let pods: Vec<&Value> = w
            .pods
            .iter()
            .filter(|p| {
                s(p, "/metadata/namespace") == ns
                    && p.pointer("/metadata/deletionTimestamp").is_none()
            })
            .filter(|p| !matches!(s(p, "/status/phase"), "Succeeded" | "Failed"))
            .filter(|p| matches(p))
            .map(|v| v.as_ref())
            .collect();
        let subsets = subsets(svc, &pods);
        let current = w
            .endpoints
            .iter()
            .find(|e| s(e, "/metadata/namespace") == ns && s(e, "/metadata/name") == name);
        match current {
            Some(cur) if cur.get("subsets").cloned().unwrap_or(json!([])) == subsets => {}
            Some(_) => {
                let patch = json!({"metadata": {"labels": {MANAGED_BY: "endpoints-controller"}}, "subsets": subsets});
                if let Err(e) = client
                    .patch(
                        ep_rt,
                        Some(ns),
                        name,
                        "application/merge-patch+json",
                        &patch,
                        &[],
                    )
                    .await
                {
                    tracing::debug!(service = name, error = %e, "updating endpoints failed");
                }
            }
            None => {
                let ep = json!({"apiVersion": "v1", "kind": "Endpoints",
                    "metadata": {"name": name, "namespace": ns, "labels": {MANAGED_BY: "endpoints-controller"}}, "subsets": subsets});
                if let Err(e) = client.create(ep_rt, Some(ns), &ep, &[]).await {
                    tracing::debug!(service = name, error = %e, "creating endpoints failed");
                }
            }
        }
    }
    for ep in &w.endpoints {
        let key = (s(ep, "/metadata/namespace"), s(ep, "/metadata/name"));
        if !wanted.contains(&key)
            && !s(
                ep,
                &format!("/metadata/labels/{}", MANAGED_BY.replace('/', "~1")),
            )
            .is_empty()
        {
            let _ = client.delete(ep_rt, Some(key.0), key.1, &json!({})).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_and_not_ready_addresses_with_named_ports() {
        let svc = json!({"spec": {"ports": [{"name": "http", "port": 80, "targetPort": "web"}]}});
        let pod = |name: &str, ip: &str, ready: bool| {
            json!({"metadata": {"name": name, "namespace": "default", "uid": name},
                "spec": {"nodeName": "n1", "containers": [{"ports": [{"name": "web", "containerPort": 8080}]}]},
                "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
        };
        let (a, b, c) = (
            pod("a", "10.0.0.2", true),
            pod("b", "10.0.0.1", false),
            pod("c", "", true),
        );
        let subsets = subsets(&svc, &[&a, &b, &c]);
        assert_eq!(subsets.as_array().unwrap().len(), 1);
        assert_eq!(
            subsets[0]["ports"],
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
        );
        assert_eq!(subsets[0]["addresses"][0]["ip"], "10.0.0.2");
        assert_eq!(subsets[0]["notReadyAddresses"][0]["ip"], "10.0.0.1");
        assert_eq!(
            subsets[0]["addresses"].as_array().unwrap().len(),
            1,
            "a pod without an IP is left out"
        );
    }
}
