//! Deployment controller: one ReplicaSet per pod template (named and labelled by the
//! template's hash, `pod-template-hash`), rolled like Kubernetes does.
//!
//! - RollingUpdate: the new ReplicaSet grows while the total stays within
//!   `replicas + maxSurge`; old ones shrink while the available pods stay at or above
//!   `replicas - maxUnavailable` (unavailable old pods go first). Defaults 25% / 25%.
//! - Recreate: old ReplicaSets go to zero, and the new one grows once their pods are gone.
//! - Revisions: each ReplicaSet carries `deployment.kubernetes.io/revision`; a template that
//!   matches an older ReplicaSet (a rollback, e.g. `kubectl rollout undo`) reuses it under
//!   the next revision number. Scaled-down ReplicaSets beyond `revisionHistoryLimit` are
//!   deleted. `kubernetes.io/change-cause` is copied to the ReplicaSet, for
//!   `rollout history`.
//! - Paused deployments are not rolled (a changed template, or a rollout in flight,
//!   waits for resume); with no rollout in flight they still scale.
//! - Status carries the counts and the Available / Progressing conditions that
//!   `kubectl rollout status` reads; Progressing turns False with
//!   `ProgressDeadlineExceeded` after `progressDeadlineSeconds` without progress.

use std::hash::{Hash, Hasher};

use serde_json::{Value, json};
use wk_api::resource::lookup;
use wk_client::Client;

use super::{World, adopt, controller_uid, event, owner_ref, patch_status, s};

const REVISION: &str = "deployment.kubernetes.io/revision";
const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";

pub(crate) fn template_hash(template: &Value) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    template.to_string().hash(&mut h);
    let n = h.finish();
    // Kubernetes uses a short alphanumeric hash.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..10)
        .map(|i| ALPHABET[((n >> (i * 6)) % ALPHABET.len() as u64) as usize] as char)
        .collect()
}

/// The annotations a ReplicaSet of `revision` carries.
fn revision_annotations(revision: i64, change_cause: Option<&Value>) -> Value {
    let mut a = json!({REVISION: revision.to_string()});
    if let Some(c) = change_cause {
        a[CHANGE_CAUSE] = c.clone();
    }
    a
}

fn int(v: &Value, p: &str) -> i64 {
    v.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

fn revision_of(rs: &Value) -> i64 {
    rs.pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// `v` without nulls, empty objects and empty arrays: how Go clients (kubectl) and JSON
/// clients may spell the same template (`resources: {}`, `creationTimestamp: null`).
fn semantic(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), semantic(v)))
                .filter(|(_, v)| !is_empty(v))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(semantic).collect()),
        other => other.clone(),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// A ReplicaSet's pod template without the label the controller adds, in semantic form.
fn template_of(rs: &Value) -> Value {
    let mut t = rs.pointer("/spec/template").cloned().unwrap_or_default();
    if let Some(labels) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove("pod-template-hash");
    }
    semantic(&t)
}

/// An int-or-percent of `total` (`maxSurge` rounds up, `maxUnavailable` down).
pub(crate) fn scaled(v: Option<&Value>, total: i64, round_up: bool, default: &str) -> i64 {
    let v = v.cloned().unwrap_or_else(|| json!(default));
    if let Some(n) = v.as_i64() {
        return n.max(0);
    }
    let pct: i64 = v
        .as_str()
        .and_then(|p| p.strip_suffix('%'))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let x = total * pct;
    if round_up { (x + 99) / 100 } else { x / 100 }.max(0)
}

struct Scaler<'a> {
    client: &'a Client,
    deployment: &'a Value,
}

impl Scaler<'_> {
    async fn scale(&self, rs: &Value, to: i64) {
        let from = int(rs, "/spec/replicas");
        if from == to {
            return;
        }
        let ns = s(rs, "/metadata/namespace");
        let name = s(rs, "/metadata/name");
        let r = self
            .client
            .patch(
                lookup("rs").expect("rs"),
                Some(ns),
                name,
                "application/merge-patch+json",
                &json!({"spec": {"replicas": to}}),
                &[],
            )
            .await;
        match r {
            Ok(_) => {
                let verb = if to > from { "up" } else { "down" };
                event(
                    self.client,
                    self.deployment,
                    "Normal",
                    "ScalingReplicaSet",
                    &format!("Scaled {verb} replica set {name} from {from} to {to}"),
                );
            }
            Err(e) => tracing::debug!(rs = name, error = %e, "scaling a replicaset failed"),
        }
    }
}

pub(crate) async fn run(client: &Client, w: &World) {
    for d in &w.deployments {
        if d.pointer("/metadata/deletionTimestamp").is_none() {
            sync(client, w, d).await;
        }
    }
}

async fn sync(client: &Client, w: &World, d: &Value) {
    let rs_rt = lookup("rs").expect("rs");
    let uid = s(d, "/metadata/uid");
    let ns = s(d, "/metadata/namespace");
    let name = s(d, "/metadata/name");
    let want = d
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .max(0);
    let paused = d.pointer("/spec/paused") == Some(&json!(true));
    let template = d.pointer("/spec/template").cloned().unwrap_or_default();
    let mut owned: Vec<&Value> = w
        .replicasets
        .iter()
        .filter(|r| {
            controller_uid(r) == Some(uid) && r.pointer("/metadata/deletionTimestamp").is_none()
        })
        .map(|v| v.as_ref())
        .collect();
    owned.extend(
        adopt(
            client,
            rs_rt,
            d,
            ("apps/v1", "Deployment"),
            w.replicasets.iter(),
        )
        .await,
    );
    let max_revision = owned.iter().map(|r| revision_of(r)).max().unwrap_or(0);
    let change_cause = d
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(CHANGE_CAUSE))
        .cloned();
    let wanted = semantic(&template);
    let min_ready = d
        .pointer("/spec/minReadySeconds")
        .cloned()
        .unwrap_or(json!(0));
    let new_rs = owned.iter().find(|r| template_of(r) == wanted).copied();
    let scaler = Scaler {
        client,
        deployment: d,
    };
    let strategy = s(d, "/spec/strategy/type");
    let recreate = strategy == "Recreate";
    let max_surge = if recreate {
        0
    } else {
        scaled(
            d.pointer("/spec/strategy/rollingUpdate/maxSurge"),
            want,
            true,
            "25%",
        )
    };
    let mut max_unavailable = if recreate {
        want
    } else {
        scaled(
            d.pointer("/spec/strategy/rollingUpdate/maxUnavailable"),
            want,
            false,
            "25%",
        )
    };
    if max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    // The pods of these ReplicaSets that have not finished, those being deleted
    // included: Recreate starts new pods only once there are none.
    let live_pods = |sets: &[&Value]| -> usize {
        let uids: Vec<&str> = sets.iter().map(|r| s(r, "/metadata/uid")).collect();
        w.pods
            .iter()
            .filter(|p| controller_uid(p).is_some_and(|u| uids.contains(&u)))
            .filter(|p| !matches!(s(p, "/status/phase"), "Succeeded" | "Failed"))
            .count()
    };
    let Some(new) = new_rs else {
        if paused {
            update_status(client, d, &owned, None, want).await;
            return;
        }
        // A new template: its ReplicaSet starts at what the surge allows (all of it when
        // there is nothing old).
        let total: i64 = owned.iter().map(|r| int(r, "/spec/replicas")).sum();
        let start = if recreate {
            if total > 0 || live_pods(&owned) > 0 {
                0
            } else {
                want
            }
        } else {
            (want + max_surge - total).clamp(0, want)
        };
        let hash = template_hash(&template);
        let mut tmpl = template.clone();
        tmpl["metadata"]["labels"]["pod-template-hash"] = json!(hash);
        let mut selector = d.pointer("/spec/selector").cloned().unwrap_or(json!({}));
        selector["matchLabels"]["pod-template-hash"] = json!(hash);
        let labels = tmpl["metadata"]["labels"].clone();
        let annotations = revision_annotations(max_revision + 1, change_cause.as_ref());
        let rs_name = format!("{name}-{hash}");
        let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": rs_name, "namespace": ns, "labels": labels,
                         "annotations": annotations,
                         "ownerReferences": owner_ref(d, "apps/v1", "Deployment")},
            "spec": {"replicas": start, "selector": selector, "template": tmpl,
                     "minReadySeconds": min_ready}});
        match client.create(rs_rt, Some(ns), &rs, &[]).await {
            Ok(_) => event(
                client,
                d,
                "Normal",
                "ScalingReplicaSet",
                &format!("Scaled up replica set {rs_name} from 0 to {start}"),
            ),
            Err(e) => tracing::warn!(deployment = name, error = %e, "creating a replicaset failed"),
        }
        set_revision(client, d, max_revision + 1).await;
        return;
    };
    // A rollback to an older template: that ReplicaSet becomes the newest revision.
    let mut revision = revision_of(new);
    // One patch of the current ReplicaSet: the newest revision after a rollback, and
    // minReadySeconds, which follows the Deployment into it as in Kubernetes.
    let mut rs_patch = json!({});
    if new.pointer("/spec/minReadySeconds").unwrap_or(&json!(0)) != &min_ready {
        rs_patch["spec"]["minReadySeconds"] = min_ready;
    }
    if revision < max_revision {
        revision = max_revision + 1;
        rs_patch["metadata"]["annotations"] = revision_annotations(revision, change_cause.as_ref());
        event(
            client,
            d,
            "Normal",
            "DeploymentRollback",
            &format!("Rolled back deployment \"{name}\" to revision {revision}"),
        );
    }
    if s(
        d,
        "/metadata/annotations/deployment.kubernetes.io~1revision",
    ) != revision.to_string()
    {
        set_revision(client, d, revision).await;
    }
    if rs_patch != json!({}) {
        let _ = client
            .patch(
                rs_rt,
                Some(ns),
                s(new, "/metadata/name"),
                "application/merge-patch+json",
                &rs_patch,
                &[],
            )
            .await;
    }
    let new_uid = s(new, "/metadata/uid");
    let mut old: Vec<&Value> = owned
        .iter()
        .filter(|r| s(r, "/metadata/uid") != new_uid)
        .copied()
        .collect();
    // Oldest first.
    old.sort_by_key(|r| revision_of(r));
    let new_replicas = int(new, "/spec/replicas");
    let old_total: i64 = old.iter().map(|r| int(r, "/spec/replicas")).sum();
    if old_total == 0 && !(recreate && live_pods(&old) > 0) {
        // Nothing to roll (Recreate: the old pods are gone): the current ReplicaSet
        // takes the wanted size.
        scaler.scale(new, want).await;
    } else if paused {
        // A rollout in flight waits for resume.
    } else if recreate {
        for r in &old {
            scaler.scale(r, 0).await;
        }
    } else {
        // Scale up the new ReplicaSet within the surge.
        let total = new_replicas + old_total;
        let max_total = want + max_surge;
        if new_replicas > want {
            scaler.scale(new, want).await;
        } else if total < max_total && new_replicas < want {
            scaler
                .scale(
                    new,
                    new_replicas + (max_total - total).min(want - new_replicas),
                )
                .await;
        }
        // Scale down old ReplicaSets while enough pods stay available: first their
        // unavailable pods, then available ones down to `replicas - maxUnavailable`.
        let min_available = want - max_unavailable;
        let new_unavailable = (new_replicas - int(new, "/status/availableReplicas")).max(0);
        let max_scaled_down = total - min_available - new_unavailable;
        if max_scaled_down > 0 {
            let mut targets: Vec<i64> = old.iter().map(|r| int(r, "/spec/replicas")).collect();
            let mut cleaned = 0;
            for (i, r) in old.iter().enumerate() {
                let unhealthy = (targets[i] - int(r, "/status/availableReplicas")).max(0);
                let n = unhealthy.min(max_scaled_down - cleaned);
                targets[i] -= n;
                cleaned += n;
            }
            // A ReplicaSet just scaled down still reports the pods it is deleting as
            // available until its next pass: count no more than it is to keep.
            let available: i64 = owned
                .iter()
                .map(|r| int(r, "/status/availableReplicas").min(int(r, "/spec/replicas")))
                .sum();
            let mut remaining = available - min_available;
            for t in targets.iter_mut() {
                let n = (*t).min(remaining.max(0));
                *t -= n;
                remaining -= n;
            }
            for (r, t) in old.iter().zip(targets) {
                scaler.scale(r, t).await;
            }
        }
    }
    prune_history(client, d, &old).await;
    update_status(client, d, &owned, Some(new), want).await;
}

async fn set_revision(client: &Client, d: &Value, revision: i64) {
    let _ = client
        .patch(
            lookup("deployments").expect("deployments"),
            Some(s(d, "/metadata/namespace")),
            s(d, "/metadata/name"),
            "application/merge-patch+json",
            &json!({"metadata": {"annotations": {REVISION: revision.to_string()}}}),
            &[],
        )
        .await;
}

/// Keeps the newest `revisionHistoryLimit` scaled-down old ReplicaSets.
async fn prune_history(client: &Client, d: &Value, old: &[&Value]) {
    let limit = d
        .pointer("/spec/revisionHistoryLimit")
        .and_then(Value::as_i64)
        .unwrap_or(10)
        .max(0) as usize;
    let mut idle: Vec<&&Value> = old
        .iter()
        .filter(|r| int(r, "/status/replicas") == 0 && int(r, "/spec/replicas") == 0)
        .collect();
    idle.sort_by_key(|r| std::cmp::Reverse(revision_of(r)));
    for r in idle.iter().skip(limit) {
        let _ = client
            .delete(
                lookup("rs").expect("rs"),
                Some(s(r, "/metadata/namespace")),
                s(r, "/metadata/name"),
                &json!({}),
            )
            .await;
    }
}

/// What the Progressing condition is based on.
struct Progress {
    paused: bool,
    complete: bool,
    /// replicas, updatedReplicas or availableReplicas moved since the last status.
    counts_changed: bool,
    exceeded_before: bool,
    /// The Progressing condition's lastUpdateTime (the last progress seen).
    last_progress: Option<jiff::Timestamp>,
    deadline_secs: i64,
}

/// The Progressing condition's status, reason and message, as Kubernetes sets them: a
/// rollout with no progress for `progressDeadlineSeconds` is `ProgressDeadlineExceeded`
/// until it progresses again.
fn progress(p: Progress, new_rs: &str) -> (&'static str, &'static str, String) {
    if p.paused {
        return ("Unknown", "DeploymentPaused", "Deployment is paused".into());
    }
    if p.complete {
        return (
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_rs}\" has successfully progressed."),
        );
    }
    let stalled = !p.counts_changed
        && (p.exceeded_before
            || p.last_progress
                .is_some_and(|t| (jiff::Timestamp::now() - t).get_seconds() > p.deadline_secs));
    if stalled {
        (
            "False",
            "ProgressDeadlineExceeded",
            "ReplicaSet has timed out progressing.".into(),
        )
    } else {
        (
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{new_rs}\" is progressing."),
        )
    }
}

async fn update_status(
    client: &Client,
    d: &Value,
    owned: &[&Value],
    new: Option<&Value>,
    want: i64,
) {
    let sum = |p: &str| owned.iter().map(|r| int(r, p)).sum::<i64>();
    let updated = new.map(|n| int(n, "/status/replicas")).unwrap_or(0);
    let new_available = new
        .map(|n| int(n, "/status/availableReplicas"))
        .unwrap_or(0);
    let replicas = sum("/status/replicas");
    let available = sum("/status/availableReplicas");
    let max_unavailable = scaled(
        d.pointer("/spec/strategy/rollingUpdate/maxUnavailable"),
        want,
        false,
        "25%",
    );
    let now = wk_api::objects::now_rfc3339();
    let complete = updated == want && replicas == want && new_available >= want && new.is_some();
    let paused = d.pointer("/spec/paused") == Some(&json!(true));
    let old = d
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let old_cond = |t: &str| old.iter().find(|c| c["type"] == t).cloned();
    // Progress: any change of the counts moves lastUpdateTime.
    let counts_changed = ["replicas", "updatedReplicas", "availableReplicas"]
        .iter()
        .zip([replicas, updated, available])
        .any(|(k, v)| {
            d.pointer(&format!("/status/{k}"))
                .and_then(Value::as_i64)
                .unwrap_or(0)
                != v
        });
    let deadline = d
        .pointer("/spec/progressDeadlineSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(600);
    let last_progress = old_cond("Progressing").and_then(|c| {
        c.get("lastUpdateTime")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    });
    let exceeded_before =
        old_cond("Progressing").is_some_and(|c| c["reason"] == "ProgressDeadlineExceeded");
    let (progress_status, progress_reason, progress_message) = progress(
        Progress {
            paused,
            complete,
            counts_changed,
            exceeded_before,
            last_progress,
            deadline_secs: deadline,
        },
        new.map(|n| s(n, "/metadata/name")).unwrap_or(""),
    );
    let cond = |t: &str, status: &str, reason: &str, message: &str, touch: bool| {
        let prev = old_cond(t);
        let same = prev
            .as_ref()
            .is_some_and(|c| c["status"] == status && c["reason"] == reason);
        let keep = |k: &str| {
            prev.as_ref()
                .and_then(|c| c.get(k).cloned())
                .unwrap_or(json!(now))
        };
        json!({"type": t, "status": status, "reason": reason, "message": message,
               "lastUpdateTime": if same && !touch { keep("lastUpdateTime") } else { json!(now) },
               "lastTransitionTime": if prev.as_ref().is_some_and(|c| c["status"] == status) { keep("lastTransitionTime") } else { json!(now) }})
    };
    let is_available = available >= want - max_unavailable;
    let status = json!({
        "observedGeneration": d.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
        "replicas": replicas, "updatedReplicas": updated, "readyReplicas": sum("/status/readyReplicas"),
        "availableReplicas": available, "unavailableReplicas": (want - available).max(0),
        "conditions": [
            cond("Available", if is_available { "True" } else { "False" },
                 if is_available { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
                 if is_available { "Deployment has minimum availability." } else { "Deployment does not have minimum availability." }, false),
            cond("Progressing", progress_status, progress_reason, &progress_message, counts_changed),
        ],
    });
    let current = d.get("status").cloned().unwrap_or(json!({}));
    let changed = [
        "observedGeneration",
        "replicas",
        "updatedReplicas",
        "readyReplicas",
        "availableReplicas",
        "unavailableReplicas",
    ]
    .iter()
    .any(|k| current.get(*k).unwrap_or(&json!(0)) != &status[*k])
        || ["Available", "Progressing"].iter().any(|t| {
            let a = old_cond(t);
            let b = status["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == *t));
            a.as_ref().map(|c| (&c["status"], &c["reason"]))
                != b.map(|c| (&c["status"], &c["reason"]))
        });
    if changed {
        patch_status(client, "deployments", d, status).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surge_rounds_up_and_unavailable_down() {
        assert_eq!(scaled(None, 10, true, "25%"), 3);
        assert_eq!(scaled(None, 10, false, "25%"), 2);
        assert_eq!(scaled(Some(&json!(1)), 10, true, "25%"), 1);
        assert_eq!(scaled(Some(&json!("50%")), 3, false, "25%"), 1);
        assert_eq!(scaled(None, 1, false, "25%"), 0);
        assert_eq!(scaled(None, 1, true, "25%"), 1);
    }

    #[test]
    fn progress_deadline_is_reached_and_left() {
        let p = |counts_changed, exceeded_before, ago: i64| Progress {
            paused: false,
            complete: false,
            counts_changed,
            exceeded_before,
            last_progress: Some(jiff::Timestamp::now() - jiff::SignedDuration::from_secs(ago)),
            deadline_secs: 600,
        };
        assert_eq!(progress(p(false, false, 10), "rs").1, "ReplicaSetUpdated");
        assert_eq!(
            progress(p(false, false, 700), "rs").1,
            "ProgressDeadlineExceeded"
        );
        assert_eq!(
            progress(p(false, true, 10), "rs").1,
            "ProgressDeadlineExceeded",
            "sticks while stalled"
        );
        assert_eq!(
            progress(p(true, true, 700), "rs").1,
            "ReplicaSetUpdated",
            "progress clears it"
        );
        let done = Progress {
            complete: true,
            ..p(false, true, 700)
        };
        assert_eq!(progress(done, "rs").1, "NewReplicaSetAvailable");
        let paused = Progress {
            paused: true,
            ..p(false, false, 700)
        };
        assert_eq!(progress(paused, "rs").0, "Unknown");
    }

    #[test]
    fn templates_compare_without_the_hash_label() {
        let rs = json!({"spec": {"template": {"metadata": {"labels": {"app": "a", "pod-template-hash": "x"}}, "spec": {"containers": []}}}});
        assert_eq!(
            template_of(&rs),
            json!({"metadata": {"labels": {"app": "a"}}})
        );
        let go_client = json!({"metadata": {"creationTimestamp": null, "labels": {"app": "a"}},
            "spec": {"containers": [{"name": "c", "resources": {}}]}});
        let plain =
            json!({"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c"}]}});
        assert_eq!(semantic(&go_client), semantic(&plain));
    }
}
