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
use crate::store::Store;
use crate::store::types::{Op, Precondition};

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
fn term_matches(term: &Value, node: &NodeInfo) -> bool {
    let list = |f: &str| {
        term.get(f)
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    };
    let (exprs, fields) = (list("matchExpressions"), list("matchFields"));
    let name_labels = BTreeMap::from([("metadata.name".to_string(), node.name.to_string())]);
    (!exprs.is_empty() || !fields.is_empty())
        && exprs.iter().all(|r| requirement_matches(r, &node.labels))
        && fields.iter().all(|r| requirement_matches(r, &name_labels))
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

/// What the filters and scores need of a pod, read once per pass.
pub(crate) struct PodInfo<'a> {
    want: Resources,
    runtime: &'a str,
    node_selector: BTreeMap<String, String>,
    required_terms: Option<&'a [Value]>,
    preferred_terms: &'a [Value],
    tolerations: &'a [Value],
    host_ports: Vec<(String, i64)>,
    owner: Option<&'a str>,
}

impl<'a> PodInfo<'a> {
    pub(crate) fn of(pod: &'a Value) -> PodInfo<'a> {
        let array = |p: &str| pod.pointer(p).and_then(Value::as_array).map(Vec::as_slice);
        PodInfo {
            want: requests(pod),
            runtime: match s(pod, "/spec/runtimeClassName") {
                "" => "wasm",
                r => r,
            },
            node_selector: labels(pod, "/spec/nodeSelector"),
            required_terms: array(
                "/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms",
            ),
            preferred_terms: array(
                "/spec/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution",
            )
            .unwrap_or(&[]),
            tolerations: array("/spec/tolerations").unwrap_or(&[]),
            host_ports: host_ports(pod),
            owner: controller_uid(pod),
        }
    }
}

/// What the filters and scores need of a node, read once per pass, and what is already
/// committed on it.
#[derive(Default)]
pub(crate) struct NodeInfo<'a> {
    name: &'a str,
    ready: bool,
    unschedulable: bool,
    runtimes: Vec<&'a str>,
    labels: BTreeMap<String, String>,
    /// NoSchedule and NoExecute taints.
    taints: Vec<&'a Value>,
    alloc: Resources,
    used: Resources,
    ports: HashSet<(String, i64)>,
    /// Active pods per controller owner uid.
    owners: HashMap<String, i64>,
}

impl<'a> NodeInfo<'a> {
    pub(crate) fn of(node: &'a Value) -> NodeInfo<'a> {
        NodeInfo {
            name: s(node, "/metadata/name"),
            ready: node_ready(node),
            unschedulable: node.pointer("/spec/unschedulable") == Some(&json!(true)),
            runtimes: s(node, "/metadata/annotations/wk.dev~1runtimes")
                .split(',')
                .map(str::trim)
                .collect(),
            labels: labels(node, "/metadata/labels"),
            taints: node
                .pointer("/spec/taints")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|t| matches!(s(t, "/effect"), "NoSchedule" | "NoExecute"))
                .collect(),
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

/// nodeSelector and required node affinity (any of the terms).
fn affinity_matches(pod: &PodInfo, node: &NodeInfo) -> bool {
    pod.node_selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v))
        && pod
            .required_terms
            .is_none_or(|terms| terms.iter().any(|t| term_matches(t, node)))
}

/// Why `node` cannot take `pod`, in kube-scheduler's words; `None` if it can.
fn filter(pod: &PodInfo, node: &NodeInfo) -> Option<String> {
    if !node.ready {
        return Some("node(s) were not ready".into());
    }
    if node.unschedulable {
        return Some("node(s) were unschedulable".into());
    }
    if !node.runtimes.contains(&pod.runtime) {
        return Some("node(s) did not offer the pod's runtime".into());
    }
    if !affinity_matches(pod, node) {
        return Some("node(s) didn't match Pod's node affinity/selector".into());
    }
    if let Some(t) = node
        .taints
        .iter()
        .find(|t| !pod.tolerations.iter().any(|tol| tolerates(tol, t)))
    {
        return Some(format!(
            "node(s) had untolerated taint {{{}: {}}}",
            s(t, "/key"),
            s(t, "/value")
        ));
    }
    let (alloc, used, want) = (node.alloc, node.used, pod.want);
    if used.pods + 1 > alloc.pods {
        return Some("Too many pods".into());
    }
    if want.cpu > 0 && used.cpu + want.cpu > alloc.cpu {
        return Some("Insufficient cpu".into());
    }
    if want.memory > 0 && used.memory + want.memory > alloc.memory {
        return Some("Insufficient memory".into());
    }
    if pod.host_ports.iter().any(|p| node.ports.contains(p)) {
        return Some("node(s) didn't have free ports for the requested pod ports".into());
    }
    None
}

/// Whether `pod` may run on `node` at all, leaving readiness and room aside: runtime,
/// node selector and affinity, and NoSchedule/NoExecute taints (the DaemonSet
/// controller's `nodeShouldRunDaemonPod`).
pub(crate) fn placement_allows(pod: &Value, node: &Value) -> bool {
    placement(pod, node, &["NoSchedule", "NoExecute"])
}

/// Whether a pod already on `node` may stay there (a DaemonSet's second test): as
/// [`placement_allows`], except that only the NoExecute taints it does not tolerate
/// count. A NoSchedule taint keeps new pods off a node, not the ones already on it.
pub(crate) fn placement_keeps(pod: &Value, node: &Value) -> bool {
    placement(pod, node, &["NoExecute"])
}

/// Runtime, node selector and affinity, and the taints of `effects` the pod does not
/// tolerate.
fn placement(pod: &Value, node: &Value, effects: &[&str]) -> bool {
    let (pod, node) = (PodInfo::of(pod), NodeInfo::of(node));
    node.runtimes.contains(&pod.runtime)
        && affinity_matches(&pod, &node)
        && node
            .taints
            .iter()
            .filter(|t| effects.contains(&s(t, "/effect")))
            .all(|t| pod.tolerations.iter().any(|tol| tolerates(tol, t)))
}

/// Higher is better: free share of cpu and memory (0–100 each), minus a large penalty per
/// pod of the same owner already there, plus preferred affinity weights.
fn score(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let (alloc, used, want) = (node.alloc, node.used, pod.want);
    let free = |used: i64, want: i64, cap: i64| {
        if cap <= 0 {
            0
        } else {
            ((cap - used - want).max(0) * 100) / cap
        }
    };
    let least_allocated =
        (free(used.cpu, want.cpu, alloc.cpu) + free(used.memory, want.memory, alloc.memory)) / 2;
    let fewest_pods = free(used.pods, 1, alloc.pods);
    let same_owner = pod
        .owner
        .and_then(|u| node.owners.get(u))
        .copied()
        .unwrap_or(0);
    let preferred: i64 = pod
        .preferred_terms
        .iter()
        .filter(|p| p.get("preference").is_some_and(|t| term_matches(t, node)))
        .map(|p| p.get("weight").and_then(Value::as_i64).unwrap_or(0))
        .sum();
    least_allocated + fewest_pods - same_owner * 1000 + preferred * 10
}

/// How many feasible nodes to find before scoring: all of a cluster of up to 100 nodes,
/// else 5% of the nodes but at least 100 (kube-scheduler's `percentageOfNodesToScore`
/// floor; its adaptive default would score 42% of 1,000 nodes). Each pod's search starts
/// where the previous one stopped, so the samples cover every node in turn.
fn nodes_to_find(total: usize) -> usize {
    (total * 5 / 100).max(100).min(total)
}

/// Most bindings (and their Events) committed in one store write.
const BIND_BATCH: usize = 512;

pub(crate) async fn run(store: &Store, client: &Client, w: &World) {
    let mut nodes: Vec<NodeInfo> = w.nodes.iter().map(|n| NodeInfo::of(n)).collect();
    let index: HashMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (n.name, i)).collect();
    for p in w
        .pods
        .iter()
        .filter(|p| is_active(p) && !s(p, "/spec/nodeName").is_empty())
    {
        if let Some(&i) = index.get(s(p, "/spec/nodeName")) {
            nodes[i].add(p);
        }
    }
    let to_find = nodes_to_find(nodes.len());
    let mut next_start = 0;
    let mut bindings: Vec<(&Value, usize)> = Vec::new();
    for pod in w
        .pods
        .iter()
        .filter(|p| s(p, "/spec/nodeName").is_empty() && is_active(p))
    {
        let info = PodInfo::of(pod);
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut best: Option<(i64, usize)> = None;
        let mut found = 0;
        // Start where the last pod stopped, so sampling covers every node in turn.
        for k in 0..nodes.len() {
            let i = (next_start + k) % nodes.len();
            match filter(&info, &nodes[i]) {
                Some(r) => *reasons.entry(r).or_default() += 1,
                None => {
                    let sc = score(&info, &nodes[i]);
                    if best
                        .is_none_or(|(b, bi)| sc > b || (sc == b && nodes[i].name < nodes[bi].name))
                    {
                        best = Some((sc, i));
                    }
                    found += 1;
                    if found >= to_find {
                        next_start = i + 1;
                        break;
                    }
                }
            }
        }
        match best {
            Some((_, i)) => {
                nodes[i].add(pod);
                bindings.push((pod, i));
            }
            None => unschedulable(client, pod, nodes.len(), &reasons).await,
        }
    }
    let pods_rt = lookup("pods").expect("pods");
    let events_rt = lookup("events").expect("events");
    for batch in bindings.chunks(BIND_BATCH) {
        // One store write per batch: the binding (as `POST pods/binding` would store it)
        // and its Scheduled event, committed in one Raft entry.
        let mut ops = Vec::with_capacity(batch.len() * 2);
        for (pod, i) in batch {
            let (ns, name, node) = (
                s(pod, "/metadata/namespace"),
                s(pod, "/metadata/name"),
                nodes[*i].name,
            );
            let rv = s(pod, "/metadata/resourceVersion").parse().unwrap_or(0);
            ops.push(Op::Put {
                key: pods_rt.key(Some(ns), name),
                object: crate::apiserver::bound_to(pod, node).to_string(),
                precondition: Precondition::Revision(rv),
            });
            let mut ev = wk_api::objects::event(
                pod,
                "Normal",
                "Scheduled",
                &format!("Successfully assigned {ns}/{name} to {node}"),
                "wk-scheduler",
                None,
            );
            crate::apiserver::stamp_new(&mut ev);
            ops.push(Op::Put {
                key: events_rt.key(
                    Some(s(&ev, "/metadata/namespace")),
                    s(&ev, "/metadata/name"),
                ),
                object: ev.to_string(),
                precondition: Precondition::Absent,
            });
        }
        match store.write(ops).await {
            Ok(results) => {
                let lost = results.iter().step_by(2).filter(|r| r.is_err()).count();
                if lost > 0 {
                    // Changed since the cache saw them (deleted, or bound by someone
                    // else): the next pass looks again.
                    tracing::debug!(lost, "bindings not applied");
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "bindings not committed");
                return;
            }
        }
    }
}

/// Records why `pod` fits nowhere: `PodScheduled=False` with kube-scheduler's message and
/// a FailedScheduling event, once per distinct message.
async fn unschedulable(
    client: &Client,
    pod: &Value,
    total: usize,
    reasons: &BTreeMap<String, usize>,
) {
    let parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    let message = format!("0/{total} nodes are available: {}.", parts.join(", "));
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

    fn check(pod: &Value, n: &Value) -> Option<String> {
        filter(&PodInfo::of(pod), &NodeInfo::of(n))
    }

    #[test]
    fn filters_explain_in_kubernetes_words() {
        let pod = json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}});
        assert_eq!(
            check(&pod, &node("n", "500m", "8Gi", json!({}))).as_deref(),
            Some("Insufficient cpu")
        );
        assert_eq!(
            check(&pod, &node("n", "2", "512Mi", json!({}))).as_deref(),
            Some("Insufficient memory")
        );
        assert_eq!(check(&pod, &node("n", "2", "2Gi", json!({}))), None);
        let n = node("n", "2", "2Gi", json!({}));
        let mut full = NodeInfo::of(&n);
        full.add(&pod);
        full.add(&pod);
        assert_eq!(
            filter(&PodInfo::of(&pod), &full).as_deref(),
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
        let matches = |pod: &Value| affinity_matches(&PodInfo::of(pod), &NodeInfo::of(&n));
        let pod = |op: &str, values: Value| {
            json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "size", "operator": op, "values": values}]}]}}}}})
        };
        assert!(matches(&pod("In", json!(["4", "8"]))));
        assert!(!matches(&pod("NotIn", json!(["4"]))));
        assert!(matches(&pod("Gt", json!(["2"]))));
        assert!(!matches(&pod("Lt", json!(["2"]))));
        assert!(matches(&pod("Exists", json!([]))));
        let by_name = json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}]}}}}});
        assert!(!matches(&by_name));
        let selector = json!({"spec": {"nodeSelector": {"zone": "b"}}});
        assert!(!matches(&selector));
    }

    #[test]
    fn replicas_of_one_owner_spread_and_host_ports_collide() {
        let owned = json!({"metadata": {"ownerReferences": [{"uid": "rs1", "controller": true}]}, "spec": {"containers": [{"ports": [{"containerPort": 80, "hostPort": 8080, "protocol": "TCP"}]}]}});
        let n = node("n", "2", "2Gi", json!({}));
        let mut busy = NodeInfo::of(&n);
        busy.add(&owned);
        let empty = NodeInfo::of(&n);
        let info = PodInfo::of(&owned);
        assert!(score(&info, &empty) > score(&info, &busy));
        assert_eq!(
            filter(&info, &busy).as_deref(),
            Some("node(s) didn't have free ports for the requested pod ports")
        );
    }

    #[test]
    fn large_clusters_score_a_sample() {
        assert_eq!(nodes_to_find(3), 3);
        assert_eq!(nodes_to_find(100), 100);
        assert_eq!(nodes_to_find(1000), 100);
        assert_eq!(nodes_to_find(5000), 250);
        assert_eq!(nodes_to_find(150), 100);
    }
}
