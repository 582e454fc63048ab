//! Scheduler: binds each pending pod to a node, in two phases as kube-scheduler does.
//!
//! Filter: the node is Ready and schedulable, offers the pod's runtime (`wasm` / `oci`),
//! matches its nodeSelector and required node affinity, has no NoSchedule/NoExecute taint
//! the pod does not tolerate, has room for its requests (cpu, memory, pod count against
//! allocatable) and its host ports are free. Score: least-allocated resources, spreading
//! pods of the same owner across nodes, and preferred node affinity. When no node passes,
//! the pod gets `PodScheduled=False` and an Event that say why, in Kubernetes' words:
//! `0/3 nodes are available: 2 Insufficient memory, 1 node(s) had untolerated taint {…}.`
//!
//! Bindings of one pass are sent concurrently, so the store's group commit turns them into
//! few Raft entries.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Value, json};
use wk_api::objects::{pod_requests, quantity_field};
use wk_api::resource::lookup;
use wk_client::Client;

use super::{World, controller_uid, event, is_active, labels, patch_status, s};

/// CPU (millicores), memory (bytes) and pod count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Resources {
    pub cpu: i64,
    pub memory: i64,
    pub pods: i64,
}

/// A pod's requests (`wk_api::objects::pod_requests`) and the one pod slot it takes.
pub(crate) fn requests(pod: &Value) -> Resources {
    let r = pod_requests(pod);
    Resources {
        cpu: r.cpu_milli,
        memory: r.memory,
        pods: 1,
    }
}

fn allocatable(node: &Value) -> Resources {
    let field = |res: &str| quantity_field(node.pointer(&format!("/status/allocatable/{res}")));
    Resources {
        cpu: field("cpu").map(|(milli, _)| milli).unwrap_or(0),
        memory: field("memory").map(|(_, units)| units).unwrap_or(0),
        pods: field("pods").map(|(_, units)| units).unwrap_or(110),
    }
}

fn node_ready(n: &Value) -> bool {
    n.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Whether `toleration` tolerates `taint` (Kubernetes' rules).
pub(crate) fn tolerates(toleration: &Value, taint: &Value) -> bool {
    let effect_ok =
        s(toleration, "/effect").is_empty() || s(toleration, "/effect") == s(taint, "/effect");
    let key_ok = match s(toleration, "/operator") {
        "Exists" => s(toleration, "/key").is_empty() || s(toleration, "/key") == s(taint, "/key"),
        _ => {
            s(toleration, "/key") == s(taint, "/key")
                && s(toleration, "/value") == s(taint, "/value")
        }
    };
    effect_ok && key_ok
}

/// The first NoSchedule/NoExecute taint of `node` that `pod` does not tolerate.
fn untolerated_taint<'a>(pod: &Value, node: &'a Value) -> Option<&'a Value> {
    let tolerations = pod
        .pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    node.pointer("/spec/taints")
        .and_then(Value::as_array)?
        .iter()
        .filter(|t| matches!(s(t, "/effect"), "NoSchedule" | "NoExecute"))
        .find(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
}

/// One node selector requirement (`matchExpressions` item) against a node's labels.
fn requirement_matches(req: &Value, node_labels: &BTreeMap<String, String>) -> bool {
    let key = s(req, "/key");
    let values: Vec<&str> = req
        .get("values")
        .and_then(Value::as_array)
        .map(|v| v.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let have = node_labels.get(key);
    let num = |v: Option<&str>| v.and_then(|x| x.parse::<i64>().ok());
    match s(req, "/operator") {
        "In" => have.is_some_and(|h| values.contains(&h.as_str())),
        "NotIn" => !have.is_some_and(|h| values.contains(&h.as_str())),
        "Exists" => have.is_some(),
        "DoesNotExist" => have.is_none(),
        "Gt" => {
            matches!((num(have.map(String::as_str)), num(values.first().copied())), (Some(h), Some(v)) if h > v)
        }
        "Lt" => {
            matches!((num(have.map(String::as_str)), num(values.first().copied())), (Some(h), Some(v)) if h < v)
        }
        _ => false,
    }
}

/// A `nodeSelectorTerm`: all its expressions and fields hold.
fn term_matches(term: &Value, node: &Value) -> bool {
    let node_labels = labels(node, "/metadata/labels");
    let exprs = term
        .get("matchExpressions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let fields = term
        .get("matchFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut name_labels = BTreeMap::new();
    name_labels.insert(
        "metadata.name".to_string(),
        s(node, "/metadata/name").to_string(),
    );
    (!exprs.is_empty() || !fields.is_empty())
        && exprs.iter().all(|r| requirement_matches(r, &node_labels))
        && fields.iter().all(|r| requirement_matches(r, &name_labels))
}

/// nodeSelector and required node affinity (any of the terms).
fn affinity_matches(pod: &Value, node: &Value) -> bool {
    let node_labels = labels(node, "/metadata/labels");
    if !labels(pod, "/spec/nodeSelector")
        .iter()
        .all(|(k, v)| node_labels.get(k) == Some(v))
    {
        return false;
    }
    match pod
        .pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array)
    {
        Some(terms) => terms.iter().any(|t| term_matches(t, node)),
        None => true,
    }
}

/// Sum of the weights of the preferred node affinity terms the node matches.
fn preferred_affinity_score(pod: &Value, node: &Value) -> i64 {
    pod.pointer("/spec/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution")
        .and_then(Value::as_array)
        .map(|prefs| {
            prefs
                .iter()
                .filter(|p| p.get("preference").is_some_and(|t| term_matches(t, node)))
                .map(|p| p.get("weight").and_then(Value::as_i64).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

fn host_ports(pod: &Value) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for c in pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for p in c
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(hp) = p.get("hostPort").and_then(Value::as_i64).filter(|p| *p > 0) {
                out.push((s(p, "/protocol").to_string(), hp));
            }
        }
    }
    out
}

/// One node's allocatable (parsed once per pass) and what is already committed on it.
#[derive(Default)]
struct NodeUse {
    alloc: Resources,
    used: Resources,
    ports: HashSet<(String, i64)>,
    /// Active pods per controller owner uid.
    owners: HashMap<String, i64>,
}

impl NodeUse {
    fn of(node: &Value) -> NodeUse {
        NodeUse {
            alloc: allocatable(node),
            ..Default::default()
        }
    }

    fn add(&mut self, pod: &Value) {
        let r = requests(pod);
        self.used.cpu += r.cpu;
        self.used.memory += r.memory;
        self.used.pods += 1;
        self.ports.extend(host_ports(pod));
        if let Some(uid) = controller_uid(pod) {
            *self.owners.entry(uid.to_string()).or_default() += 1;
        }
    }
}

fn runtime_of(pod: &Value) -> &str {
    match s(pod, "/spec/runtimeClassName") {
        "" => "wasm",
        r => r,
    }
}

/// Why `node` cannot take `pod`, in kube-scheduler's words; `None` if it can.
fn filter(pod: &Value, want: &Resources, node: &Value, usage: &NodeUse) -> Option<String> {
    if !node_ready(node) {
        return Some("node(s) were not ready".into());
    }
    if node.pointer("/spec/unschedulable") == Some(&json!(true)) {
        return Some("node(s) were unschedulable".into());
    }
    if !s(node, "/metadata/annotations/wk.dev~1runtimes")
        .split(',')
        .any(|r| r.trim() == runtime_of(pod))
    {
        return Some("node(s) did not offer the pod's runtime".into());
    }
    if !affinity_matches(pod, node) {
        return Some("node(s) didn't match Pod's node affinity/selector".into());
    }
    if let Some(t) = untolerated_taint(pod, node) {
        return Some(format!(
            "node(s) had untolerated taint {{{}: {}}}",
            s(t, "/key"),
            s(t, "/value")
        ));
    }
    let alloc = usage.alloc;
    if usage.used.pods + 1 > alloc.pods {
        return Some("Too many pods".into());
    }
    if want.cpu > 0 && usage.used.cpu + want.cpu > alloc.cpu {
        return Some("Insufficient cpu".into());
    }
    if want.memory > 0 && usage.used.memory + want.memory > alloc.memory {
        return Some("Insufficient memory".into());
    }
    if host_ports(pod).iter().any(|p| usage.ports.contains(p)) {
        return Some("node(s) didn't have free ports for the requested pod ports".into());
    }
    None
}

/// Higher is better: free share of cpu and memory (0–100 each), minus a large penalty per
/// pod of the same owner already there, plus preferred affinity weights.
fn score(pod: &Value, want: &Resources, node: &Value, usage: &NodeUse) -> i64 {
    let alloc = usage.alloc;
    let free = |used: i64, want: i64, cap: i64| {
        if cap <= 0 {
            0
        } else {
            ((cap - used - want).max(0) * 100) / cap
        }
    };
    let least_allocated = (free(usage.used.cpu, want.cpu, alloc.cpu)
        + free(usage.used.memory, want.memory, alloc.memory))
        / 2;
    let fewest_pods = free(usage.used.pods, 1, alloc.pods);
    let same_owner = controller_uid(pod)
        .and_then(|u| usage.owners.get(u))
        .copied()
        .unwrap_or(0);
    least_allocated + fewest_pods - same_owner * 1000 + preferred_affinity_score(pod, node) * 10
}

pub(crate) async fn run(client: &Client, w: &World) {
    let pods_rt = lookup("pods").expect("pods");
    let mut usage: HashMap<&str, NodeUse> = w
        .nodes
        .iter()
        .map(|n| (s(n, "/metadata/name"), NodeUse::of(n)))
        .collect();
    for p in w
        .pods
        .iter()
        .filter(|p| is_active(p) && !s(p, "/spec/nodeName").is_empty())
    {
        if let Some(u) = usage.get_mut(s(p, "/spec/nodeName")) {
            u.add(p);
        }
    }
    let mut bindings = Vec::new();
    for pod in w
        .pods
        .iter()
        .filter(|p| s(p, "/spec/nodeName").is_empty() && is_active(p))
    {
        let want = requests(pod);
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut best: Option<(i64, &str)> = None;
        for n in &w.nodes {
            let name = s(n, "/metadata/name");
            let u = &usage[name];
            match filter(pod, &want, n, u) {
                Some(r) => *reasons.entry(r).or_default() += 1,
                None => {
                    let sc = score(pod, &want, n, u);
                    if best.is_none_or(|(b, bn)| sc > b || (sc == b && name < bn)) {
                        best = Some((sc, name));
                    }
                }
            }
        }
        match best {
            Some((_, node)) => {
                if let Some(u) = usage.get_mut(node) {
                    u.add(pod);
                }
                bindings.push((pod, node.to_string()));
            }
            None => {
                let parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
                let message = format!(
                    "0/{} nodes are available: {}.",
                    w.nodes.len(),
                    parts.join(", ")
                );
                let current = pod
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .and_then(|cs| cs.iter().find(|c| c["type"] == "PodScheduled"))
                    .and_then(|c| c.get("message"))
                    .and_then(Value::as_str);
                if current != Some(message.as_str()) {
                    let now = wk_api::objects::now_rfc3339();
                    let status = json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                        "message": message, "lastTransitionTime": now, "lastProbeTime": null}]});
                    patch_status(client, "pods", pod, status).await;
                    event(client, pod, "Warning", "FailedScheduling", &message);
                }
            }
        }
    }
    // Bind concurrently (64 in flight): the store commits concurrent writes together.
    let mut pending = bindings.into_iter();
    loop {
        let batch: Vec<_> = pending.by_ref().take(64).collect();
        if batch.is_empty() {
            break;
        }
        futures::future::join_all(batch.into_iter().map(|(pod, node)| async move {
            let ns = s(pod, "/metadata/namespace");
            let name = s(pod, "/metadata/name");
            let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name}, "target": {"kind": "Node", "name": node}});
            let path = format!("{}/binding", pods_rt.object_path(Some(ns), name));
            let body = serde_json::to_vec(&binding).unwrap_or_default();
            match client.request(wk_client::Method::POST, &path, &[], Some(("application/json", body)), None).await {
                Ok(_) => event(client, pod, "Normal", "Scheduled", &format!("Successfully assigned {ns}/{name} to {node}")),
                Err(e) => tracing::debug!(pod = name, error = %e, "binding failed"),
            }
        }))
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cpu: &str, mem: &str, extra: Value) -> Value {
        let mut n = json!({"metadata": {"name": name, "labels": {"zone": "a", "size": "4"}, "annotations": {"wk.dev/runtimes": "wasm"}},
            "spec": {}, "status": {"allocatable": {"cpu": cpu, "memory": mem, "pods": "110"}, "conditions": [{"type": "Ready", "status": "True"}]}});
        if let Some(o) = extra.as_object() {
            for (k, v) in o {
                n["spec"][k] = v.clone();
            }
        }
        n
    }

    #[test]
    fn filters_explain_in_kubernetes_words() {
        let pod = json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}});
        let want = requests(&pod);
        let check = |pod: &Value, n: &Value| filter(pod, &requests(pod), n, &NodeUse::of(n));
        assert_eq!(
            check(&pod, &node("n", "500m", "8Gi", json!({}))).as_deref(),
            Some("Insufficient cpu")
        );
        assert_eq!(
            check(&pod, &node("n", "2", "512Mi", json!({}))).as_deref(),
            Some("Insufficient memory")
        );
        assert_eq!(check(&pod, &node("n", "2", "2Gi", json!({}))), None);
        let mut full = NodeUse::of(&node("n", "2", "2Gi", json!({})));
        full.add(&pod);
        full.add(&pod);
        assert_eq!(
            filter(&pod, &want, &node("n", "2", "2Gi", json!({})), &full).as_deref(),
            Some("Insufficient cpu"),
            "two pods use both cores"
        );
        let tainted = node(
            "n",
            "2",
            "2Gi",
            json!({"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}),
        );
        assert_eq!(
            check(&pod, &tainted).as_deref(),
            Some("node(s) had untolerated taint {dedicated: gpu}")
        );
        let tolerant = json!({"spec": {"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}});
        assert_eq!(check(&tolerant, &tainted), None);
        let oci = json!({"spec": {"runtimeClassName": "oci"}});
        assert_eq!(
            check(&oci, &node("n", "2", "2Gi", json!({}))).as_deref(),
            Some("node(s) did not offer the pod's runtime")
        );
    }

    #[test]
    fn node_affinity_terms() {
        let n = node("n1", "2", "2Gi", json!({}));
        let pod = |op: &str, values: Value| {
            json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "size", "operator": op, "values": values}]}]}}}}})
        };
        assert!(affinity_matches(&pod("In", json!(["4", "8"])), &n));
        assert!(!affinity_matches(&pod("NotIn", json!(["4"])), &n));
        assert!(affinity_matches(&pod("Gt", json!(["2"])), &n));
        assert!(!affinity_matches(&pod("Lt", json!(["2"])), &n));
        assert!(affinity_matches(&pod("Exists", json!([])), &n));
        let by_name = json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}]}}}}});
        assert!(!affinity_matches(&by_name, &n));
        let selector = json!({"spec": {"nodeSelector": {"zone": "b"}}});
        assert!(!affinity_matches(&selector, &n));
    }

    #[test]
    fn replicas_of_one_owner_spread_and_host_ports_collide() {
        let owned = json!({"metadata": {"ownerReferences": [{"uid": "rs1", "controller": true}]}, "spec": {"containers": [{"ports": [{"containerPort": 80, "hostPort": 8080, "protocol": "TCP"}]}]}});
        let n = node("n", "2", "2Gi", json!({}));
        let mut busy = NodeUse::of(&n);
        busy.add(&owned);
        let empty = NodeUse::of(&n);
        let want = requests(&owned);
        assert!(score(&owned, &want, &n, &empty) > score(&owned, &want, &n, &busy));
        assert_eq!(
            filter(&owned, &want, &n, &busy).as_deref(),
            Some("node(s) didn't have free ports for the requested pod ports")
        );
    }
}
