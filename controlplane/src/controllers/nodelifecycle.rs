//! Node lifecycle: a node whose Lease has not been renewed for `NODE_GRACE` becomes
//! `Ready=Unknown` and gets the `node.kubernetes.io/unreachable:NoExecute` taint; its pods
//! are evicted once their toleration of that taint runs out (`DEFAULT_TOLERATION` for pods
//! that do not say), so their controllers replace them elsewhere. A node whose Lease is
//! renewed again gets its Ready condition back and loses the taint.
//!
//! Kubernetes waits 40 s and then 300 s; wk's defaults are 4 s and 3 s, so pods serve
//! again elsewhere within about 10 s of an agent's death (the agent renews every 2 s).
//!
//! A Lease's `renewTime` is written with the agent's clock, so it is never compared with
//! this server's: a renewal is a `renewTime` that changed, and the silence since is timed
//! here ([`Renewals`], Kubernetes' `probeTimestamp`). A node whose clock is off by
//! minutes is not taken for dead.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wk_api::resource::lookup;
use wk_client::Client;

use super::scheduler::tolerates;
use super::{World, event, is_active, patch_status, s};

/// How long a Lease may go unrenewed before the node is considered unreachable.
pub(crate) const NODE_GRACE: Duration = Duration::from_secs(4);
/// How long pods that do not tolerate the unreachable taint stay on such a node.
pub(crate) const DEFAULT_TOLERATION: Duration = Duration::from_secs(3);

pub(crate) const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

fn ts(t: jiff::Timestamp) -> String {
    wk_api::objects::rfc3339(t)
}

fn parse_time(v: &Value, p: &str) -> Option<jiff::Timestamp> {
    v.pointer(p)
        .and_then(Value::as_str)
        .and_then(|t| t.parse().ok())
}

fn ready_status(node: &Value) -> &str {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c.get("status"))
        .and_then(Value::as_str)
        .unwrap_or("Unknown")
}

fn taints(node: &Value) -> Vec<Value> {
    node.pointer("/spec/taints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// How long `pod` tolerates the NoExecute taint `taint`: `None` = forever.
pub(crate) fn toleration_for(pod: &Value, taint: &Value) -> Option<Duration> {
    let tolerations = pod
        .pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let matching: Vec<&Value> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
    if matching.is_empty() {
        return Some(DEFAULT_TOLERATION);
    }
    // The longest toleration wins; one without tolerationSeconds is forever.
    let mut longest = Duration::ZERO;
    for t in matching {
        match t.get("tolerationSeconds").and_then(Value::as_i64) {
            None => return None,
            Some(n) => longest = longest.max(Duration::from_secs(n.max(0) as u64)),
        }
    }
    Some(longest)
}

/// What this server saw of one node's Lease.
struct Seen {
    renew_time: String,
    /// When `renew_time` was first seen (on this server's clock).
    at: Instant,
    /// Whether the Lease has been renewed since this server first saw it.
    renewed: bool,
}

/// When this server last saw each node's Lease renewed.
#[derive(Default)]
pub(crate) struct Renewals(HashMap<String, Seen>);

impl Renewals {
    /// How long `node`'s Lease has gone unrenewed (zero when its `renew_time` differs
    /// from the one seen before), and whether it has been renewed since this server first
    /// saw it. A new leader knows nothing yet: a node's silence is timed from the first
    /// sight, and only a renewal seen after it counts as the node being back, so a dead
    /// node keeps its taint.
    fn silent(&mut self, node: &str, renew_time: &str, now: Instant) -> (Duration, bool) {
        match self.0.get_mut(node) {
            Some(seen) if seen.renew_time == renew_time => {
                (now.saturating_duration_since(seen.at), seen.renewed)
            }
            Some(seen) => {
                *seen = Seen {
                    renew_time: renew_time.to_string(),
                    at: now,
                    renewed: true,
                };
                (Duration::ZERO, true)
            }
            None => {
                let seen = Seen {
                    renew_time: renew_time.to_string(),
                    at: now,
                    renewed: false,
                };
                self.0.insert(node.to_string(), seen);
                (Duration::ZERO, false)
            }
        }
    }

    /// Forgets the nodes that are gone.
    fn keep(&mut self, nodes: &[&str]) {
        self.0.retain(|n, _| nodes.contains(&n.as_str()));
    }
}

pub(crate) async fn run(client: &Client, w: &World, renewals: &mut Renewals) {
    let nodes_rt = lookup("nodes").expect("nodes");
    let pods_rt = lookup("pods").expect("pods");
    let now = jiff::Timestamp::now();
    let leases: HashMap<&str, &Value> = w
        .leases
        .iter()
        .filter(|l| s(l, "/metadata/namespace") == "kube-node-lease")
        .map(|l| (s(l, "/metadata/name"), l.as_ref()))
        .collect();
    let names: Vec<&str> = w.nodes.iter().map(|n| s(n, "/metadata/name")).collect();
    renewals.keep(&names);
    for node in &w.nodes {
        let name = s(node, "/metadata/name");
        let Some(lease) = leases.get(name) else {
            continue;
        };
        let Some(renewed) = parse_time(lease, "/spec/renewTime") else {
            continue;
        };
        let (silent, back) = renewals.silent(name, s(lease, "/spec/renewTime"), Instant::now());
        let mut node_taints = taints(node);
        let tainted = node_taints
            .iter()
            .find(|t| t["key"] == UNREACHABLE)
            .cloned();
        if silent > NODE_GRACE {
            if ready_status(node) == "True" || tainted.is_none() {
                tracing::info!(
                    node = name,
                    silent_ms = silent.as_millis() as u64,
                    "node stopped renewing its lease: unreachable"
                );
                let cond = json!({"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status.",
                    "lastHeartbeatTime": ts(renewed), "lastTransitionTime": ts(now)});
                patch_status(client, "nodes", node, json!({"conditions": [cond]})).await;
                if tainted.is_none() {
                    node_taints.push(
                        json!({"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": ts(now)}),
                    );
                    let _ = client
                        .patch(
                            nodes_rt,
                            None,
                            name,
                            "application/merge-patch+json",
                            &json!({"spec": {"taints": node_taints}}),
                            &[],
                        )
                        .await;
                }
                event(
                    client,
                    node,
                    "Normal",
                    "NodeNotReady",
                    &format!("Node {name} status is now: NodeNotReady"),
                );
            }
            // Evict pods whose toleration has run out.
            let Some((taint, since)) = tainted
                .as_ref()
                .and_then(|t| Some((t, parse_time(t, "/timeAdded")?)))
            else {
                continue;
            };
            let tainted_for = now.duration_since(since).unsigned_abs();
            for pod in w
                .pods
                .iter()
                .filter(|p| s(p, "/spec/nodeName") == name && is_active(p))
            {
                if toleration_for(pod, taint).is_some_and(|d| tainted_for >= d) {
                    tracing::info!(
                        node = name,
                        pod = s(pod, "/metadata/name"),
                        "evicting a pod from an unreachable node"
                    );
                    event(
                        client,
                        pod,
                        "Normal",
                        "TaintManagerEviction",
                        &format!(
                            "Marking for deletion Pod {}/{}",
                            s(pod, "/metadata/namespace"),
                            s(pod, "/metadata/name")
                        ),
                    );
                    let _ = client
                        .delete(
                            pods_rt,
                            Some(s(pod, "/metadata/namespace")),
                            s(pod, "/metadata/name"),
                            &json!({}),
                        )
                        .await;
                }
            }
        } else if back && (tainted.is_some() || ready_status(node) != "True") {
            tracing::info!(node = name, "node renews its lease again: ready");
            node_taints.retain(|t| t["key"] != UNREACHABLE);
            let _ = client
                .patch(
                    nodes_rt,
                    None,
                    name,
                    "application/merge-patch+json",
                    &json!({"spec": {"taints": node_taints}}),
                    &[],
                )
                .await;
            let cond = json!({"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "wk agent is posting ready status",
                "lastHeartbeatTime": ts(renewed), "lastTransitionTime": ts(now)});
            patch_status(client, "nodes", node, json!({"conditions": [cond]})).await;
            event(
                client,
                node,
                "Normal",
                "NodeReady",
                &format!("Node {name} status is now: NodeReady"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_seen_once_is_no_renewal() {
        let mut r = Renewals::default();
        let t0 = Instant::now();
        let secs = Duration::from_secs;
        assert_eq!(
            r.silent("a", "t1", t0),
            (Duration::ZERO, false),
            "first sight"
        );
        assert_eq!(
            r.silent("a", "t1", t0 + secs(1)),
            (secs(1), false),
            "still not renewed"
        );
        assert_eq!(r.silent("a", "t1", t0 + secs(5)), (secs(5), false));
        assert_eq!(
            r.silent("a", "t2", t0 + secs(5)),
            (Duration::ZERO, true),
            "renewed"
        );
        assert_eq!(r.silent("a", "t2", t0 + secs(6)), (secs(1), true));
        r.keep(&[]);
        assert_eq!(
            r.silent("a", "t2", t0 + secs(6)),
            (Duration::ZERO, false),
            "forgotten"
        );
    }

    #[test]
    fn tolerations_of_the_unreachable_taint() {
        let taint = json!({"key": UNREACHABLE, "effect": "NoExecute"});
        let none = json!({"spec": {}});
        assert_eq!(toleration_for(&none, &taint), Some(DEFAULT_TOLERATION));
        let seconds = json!({"spec": {"tolerations": [{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}]}});
        assert_eq!(
            toleration_for(&seconds, &taint),
            Some(Duration::from_secs(60))
        );
        let forever = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        assert_eq!(toleration_for(&forever, &taint), None);
        let other = json!({"spec": {"tolerations": [{"key": "x", "operator": "Exists"}]}});
        assert_eq!(toleration_for(&other, &taint), Some(DEFAULT_TOLERATION));
        let no_schedule_only = json!({"spec": {"tolerations": [{"key": UNREACHABLE, "operator": "Exists", "effect": "NoSchedule"}]}});
        assert_eq!(
            toleration_for(&no_schedule_only, &taint),
            Some(DEFAULT_TOLERATION),
            "the effect must match"
        );
    }
}
