//! Job: runs pods from its template until `completions` of them succeed, at most
//! `parallelism` at a time. More than `backoffLimit` failures (failed pods, plus container
//! restarts under `restartPolicy: OnFailure`) fail the Job (`BackoffLimitExceeded`), as
//! does running past `activeDeadlineSeconds` (`DeadlineExceeded`); a finished Job with
//! `ttlSecondsAfterFinished` is deleted that long after it finished (its pods go with it).
//!
//! Every pod counts once, as in Kubernetes: a Job's pods carry the
//! `batch.kubernetes.io/job-tracking` finalizer, so a pod that finished (or is being
//! deleted before it succeeded, a failure) stays until it is counted. A pass adds the
//! newly finished pods to `status.succeeded`/`failed` and their uids to
//! `status.uncountedTerminatedPods` in one status write, then removes their finalizers;
//! a uid leaves that list once its pod has no finalizer left. A pod deleted by a user
//! or with its node is counted all the same, and a counted pod deleted later is not
//! run again.

use serde_json::{Value, json};
use wk_api::resource::lookup;
use wk_client::Client;

use super::{World, controller_ref, controller_uid, event, is_active, owner_ref, patch_status, s};

use wk_api::objects::rfc3339 as ts;

fn int(v: &Value, p: &str) -> Option<i64> {
    v.pointer(p).and_then(Value::as_i64)
}

pub(crate) fn finished(job: &Value) -> Option<(&str, jiff::Timestamp)> {
    job.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| matches!(s(c, "/type"), "Complete" | "Failed") && s(c, "/status") == "True")
        .map(|c| {
            (
                s(c, "/type"),
                s(c, "/lastTransitionTime")
                    .parse()
                    .unwrap_or_else(|_| jiff::Timestamp::now()),
            )
        })
}

/// Restarts of a pod's containers (they count as failures under OnFailure).
fn restarts(pod: &Value) -> i64 {
    pod.pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("restartCount").and_then(Value::as_i64))
                .sum()
        })
        .unwrap_or(0)
}

/// The finalizer that keeps a Job's pod until the Job has counted it.
pub(crate) const TRACKING: &str = "batch.kubernetes.io/job-tracking";

/// Whether `pod`'s controller is a Job (the Job may be gone), or it has none (a Job
/// deleted with `--cascade=orphan` leaves its pods without one).
fn owned_by_a_job(pod: &Value) -> bool {
    controller_ref(pod).is_none_or(|c| c["kind"] == "Job")
}

fn tracked(pod: &Value) -> bool {
    pod.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| f.iter().any(|x| x == TRACKING))
}

/// How a pod ended, for its Job: `Some(true)` succeeded, `Some(false)` failed (a pod
/// deleted before it succeeded failed too), `None` not yet.
fn outcome_of(pod: &Value) -> Option<bool> {
    match s(pod, "/status/phase") {
        "Succeeded" => Some(true),
        "Failed" => Some(false),
        _ if pod.pointer("/metadata/deletionTimestamp").is_some() => Some(false),
        _ => None,
    }
}

fn uid_list(job: &Value, which: &str) -> Vec<String> {
    let mut uids: Vec<String> = job
        .pointer(&format!("/status/uncountedTerminatedPods/{which}"))
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    uids.sort();
    uids
}

/// A Job's counts after this pass, and its next `uncountedTerminatedPods` (sorted): the
/// status counts plus the tracked pods that ended and are not listed yet; listed uids
/// stay while their pods still carry the finalizer. A suspended Job's pods deleted
/// while running were stopped by the suspension: they are no failures.
#[derive(Debug, PartialEq)]
struct Tally {
    succeeded: i64,
    failed: i64,
    uncounted_succeeded: Vec<String>,
    uncounted_failed: Vec<String>,
    /// Whether the uncounted lists differ from the status's (a write is due).
    changed: bool,
}

impl Tally {
    /// Whether `pod` is counted, its finalizer still to go.
    fn lists(&self, pod: &Value) -> bool {
        let uid = s(pod, "/metadata/uid");
        self.uncounted_succeeded
            .iter()
            .chain(&self.uncounted_failed)
            .any(|u| u == uid)
    }
}

fn tally(job: &Value, owned: &[&Value], suspended: bool) -> Tally {
    let (listed_ok, listed_failed) = (uid_list(job, "succeeded"), uid_list(job, "failed"));
    let mut t = Tally {
        succeeded: int(job, "/status/succeeded").unwrap_or(0),
        failed: int(job, "/status/failed").unwrap_or(0),
        uncounted_succeeded: Vec::new(),
        uncounted_failed: Vec::new(),
        changed: false,
    };
    for pod in owned.iter().filter(|p| tracked(p)) {
        let uid = s(pod, "/metadata/uid").to_string();
        if listed_ok.contains(&uid) {
            t.uncounted_succeeded.push(uid);
        } else if listed_failed.contains(&uid) {
            t.uncounted_failed.push(uid);
        } else {
            match outcome_of(pod) {
                Some(false) if suspended && s(pod, "/status/phase") != "Failed" => {}
                Some(true) => {
                    t.succeeded += 1;
                    t.uncounted_succeeded.push(uid);
                }
                Some(false) => {
                    t.failed += 1;
                    t.uncounted_failed.push(uid);
                }
                None => {}
            }
        }
    }
    t.uncounted_succeeded.sort();
    t.uncounted_failed.sort();
    t.changed = (&listed_ok, &listed_failed) != (&t.uncounted_succeeded, &t.uncounted_failed);
    t
}

/// Removes the tracking finalizer from `pod` (guarded by its resourceVersion; a pass
/// that loses the race tries again in the next one).
async fn release(client: &Client, pod: &Value) {
    let finalizers: Vec<&Value> = pod
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter(|x| *x != TRACKING).collect())
        .unwrap_or_default();
    let patch = json!({"metadata": {"finalizers": finalizers,
        "resourceVersion": s(pod, "/metadata/resourceVersion")}});
    if let Err(e) = client
        .patch(
            lookup("pods").expect("pods"),
            Some(s(pod, "/metadata/namespace")),
            s(pod, "/metadata/name"),
            "application/merge-patch+json",
            &patch,
            &[],
        )
        .await
    {
        tracing::debug!(pod = s(pod, "/metadata/name"), error = %e, "removing the job-tracking finalizer failed");
    }
}

pub(crate) async fn run(client: &Client, w: &World) {
    let pods_rt = lookup("pods").expect("pods");
    let jobs_rt = lookup("jobs").expect("jobs");
    let now = jiff::Timestamp::now();
    // Pods whose Job is gone, or going, are not counted any more.
    let counting: std::collections::HashSet<&str> = w
        .jobs
        .iter()
        .filter(|j| j.pointer("/metadata/deletionTimestamp").is_none() && finished(j).is_none())
        .map(|j| s(j, "/metadata/uid"))
        .collect();
    for pod in w.pods.iter().filter(|p| tracked(p) && owned_by_a_job(p)) {
        if !controller_uid(pod).is_some_and(|u| counting.contains(u)) {
            release(client, pod).await;
        }
    }
    for job in &w.jobs {
        if job.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let ns = s(job, "/metadata/namespace");
        let name = s(job, "/metadata/name");
        let uid = s(job, "/metadata/uid");
        let owned: Vec<&Value> = w
            .pods
            .iter()
            .filter(|p| controller_uid(p) == Some(uid))
            .map(|v| v.as_ref())
            .collect();
        let active: Vec<&Value> = owned.iter().copied().filter(|p| is_active(p)).collect();
        let suspended = job.pointer("/spec/suspend") == Some(&json!(true));
        let (mut succeeded, mut failed_pods) = (
            int(job, "/status/succeeded").unwrap_or(0),
            int(job, "/status/failed").unwrap_or(0),
        );
        let ended = finished(job);
        if ended.is_none() {
            let t = tally(job, &owned, suspended);
            if t.changed {
                // The counts are stored before any finalizer goes: a pod leaves only
                // once it is counted. Not stored, nothing more is decided this pass.
                let status = json!({"succeeded": t.succeeded, "failed": t.failed,
                    "uncountedTerminatedPods": {"succeeded": t.uncounted_succeeded, "failed": t.uncounted_failed}});
                if !patch_status(client, "jobs", job, status).await {
                    continue;
                }
            }
            (succeeded, failed_pods) = (t.succeeded, t.failed);
            // Counted pods lose the finalizer (again in later passes, if a removal lost a
            // race with another write of the pod); pods the suspension stopped are let
            // go uncounted.
            for pod in owned
                .iter()
                .filter(|p| tracked(p) && (t.lists(p) || (suspended && outcome_of(p).is_some())))
            {
                release(client, pod).await;
            }
        }
        let failures = failed_pods + owned.iter().map(|p| restarts(p)).sum::<i64>();

        if let Some((_, at)) = ended {
            // A finished Job counts no more: its pods were let go above.
            let listing = |which| {
                job.pointer(&format!("/status/uncountedTerminatedPods/{which}"))
                    .and_then(Value::as_array)
                    .is_some_and(|l| !l.is_empty())
            };
            if listing("succeeded") || listing("failed") {
                let empty = json!({"uncountedTerminatedPods": {"succeeded": [], "failed": []}});
                patch_status(client, "jobs", job, empty).await;
            }
            if let Some(ttl) = int(job, "/spec/ttlSecondsAfterFinished") {
                if now.duration_since(at).as_secs() >= ttl {
                    tracing::info!(job = name, "deleting a finished job after its ttl");
                    let _ = client
                        .delete(
                            jobs_rt,
                            Some(ns),
                            name,
                            &json!({"propagationPolicy": "Background"}),
                        )
                        .await;
                }
            }
            continue;
        }
        // No completions: a work queue, done once a pod has succeeded and none runs.
        let completions = int(job, "/spec/completions").map(|c| c.max(0));
        let parallelism = int(job, "/spec/parallelism").unwrap_or(1).max(0);
        let backoff_limit = int(job, "/spec/backoffLimit").unwrap_or(6).max(0);
        let was_suspended = job
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Suspended" && c["status"] == "True")
            });
        // A resumed Job's activeDeadlineSeconds counts from its resumption.
        let start = job
            .pointer("/status/startTime")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .filter(|_| !was_suspended)
            .unwrap_or(now);
        let over_deadline = int(job, "/spec/activeDeadlineSeconds")
            .is_some_and(|d| now.duration_since(start).as_secs() >= d);

        let complete = match completions {
            Some(c) => succeeded >= c,
            None => succeeded > 0 && active.is_empty(),
        };
        // Suspended (`spec.suspend`): no pods run and the clock of activeDeadlineSeconds
        // stops, as in Kubernetes; resuming starts pods again.
        if suspended {
            for p in &active {
                let _ = client
                    .delete(pods_rt, Some(ns), s(p, "/metadata/name"), &json!({}))
                    .await;
            }
            let suspended = json!({"type": "Suspended", "status": "True", "reason": "JobSuspended",
                "message": "Job suspended", "lastProbeTime": ts(now), "lastTransitionTime": ts(now)});
            let status = json!({"active": 0, "succeeded": succeeded, "failed": failed_pods,
                "ready": 0, "conditions": [suspended]});
            let active_now = job.pointer("/status/active").unwrap_or(&json!(0)) != &json!(0);
            if !was_suspended || active_now {
                patch_status(client, "jobs", job, status).await;
            }
            continue;
        }
        let outcome = if complete {
            Some(("Complete", "", String::new()))
        } else if failures > backoff_limit {
            Some((
                "Failed",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit".to_string(),
            ))
        } else if over_deadline {
            Some((
                "Failed",
                "DeadlineExceeded",
                "Job was active longer than specified deadline".to_string(),
            ))
        } else {
            None
        };
        let mut status = json!({"startTime": ts(start), "active": active.len(), "succeeded": succeeded, "failed": failed_pods,
            "ready": active.iter().filter(|p| super::is_ready(p)).count()});
        if let Some((kind, reason, message)) = outcome {
            // Whatever still runs is stopped.
            for p in &active {
                let _ = client
                    .delete(pods_rt, Some(ns), s(p, "/metadata/name"), &json!({}))
                    .await;
            }
            status["active"] = json!(0);
            let mut cond = json!({"type": kind, "status": "True", "lastProbeTime": ts(now), "lastTransitionTime": ts(now)});
            if !reason.is_empty() {
                cond["reason"] = json!(reason);
                cond["message"] = json!(message);
            }
            status["conditions"] = json!([cond]);
            if kind == "Complete" {
                status["completionTime"] = json!(ts(now));
                event(client, job, "Normal", "Completed", "Job completed");
            } else {
                event(client, job, "Warning", reason, &message);
            }
            patch_status(client, "jobs", job, status).await;
            continue;
        }
        let want = match completions {
            Some(c) => parallelism.min(c - succeeded).max(0),
            // A work queue: once one pod has succeeded, the rest only finish.
            None if succeeded > 0 => 0,
            None => parallelism,
        };
        let template = job.pointer("/spec/template").cloned().unwrap_or_default();
        for _ in active.len() as i64..want {
            let mut meta = template.get("metadata").cloned().unwrap_or(json!({}));
            meta["generateName"] = json!(format!("{name}-"));
            meta["namespace"] = json!(ns);
            meta["ownerReferences"] = owner_ref(job, "batch/v1", "Job");
            meta["labels"]["job-name"] = json!(name);
            meta["labels"]["batch.kubernetes.io/job-name"] = json!(name);
            meta["labels"]["controller-uid"] = json!(uid);
            meta["labels"]["batch.kubernetes.io/controller-uid"] = json!(uid);
            let mut finalizers = meta
                .get("finalizers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            finalizers.push(json!(TRACKING));
            meta["finalizers"] = json!(finalizers);
            let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template.get("spec").cloned().unwrap_or_default()});
            match client.create(pods_rt, Some(ns), &pod, &[]).await {
                Ok(p) => event(
                    client,
                    job,
                    "Normal",
                    "SuccessfulCreate",
                    &format!("Created pod: {}", s(&p, "/metadata/name")),
                ),
                Err(e) => {
                    tracing::warn!(job = name, error = %e, "creating a pod failed");
                    break;
                }
            }
        }
        let current = job.get("status").cloned().unwrap_or(json!({}));
        if was_suspended {
            status["conditions"] = json!([{"type": "Suspended", "status": "False", "reason": "JobResumed",
                "message": "Job resumed", "lastProbeTime": ts(now), "lastTransitionTime": ts(now)}]);
        }
        if was_suspended
            || ["startTime", "active", "succeeded", "failed", "ready"]
                .iter()
                .any(|k| current.get(*k).unwrap_or(&json!(0)) != &status[*k])
        {
            patch_status(client, "jobs", job, status).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, phase: &str, tracking: bool) -> Value {
        let finalizers = if tracking {
            json!([TRACKING])
        } else {
            json!([])
        };
        json!({"metadata": {"uid": uid, "finalizers": finalizers}, "status": {"phase": phase}})
    }

    fn uids(l: &[&str]) -> Vec<String> {
        l.iter().map(|u| u.to_string()).collect()
    }

    /// Each pod counts once: tracked pods that ended are added and listed; listed ones
    /// are not added again; untracked ones (counted earlier) are not seen at all, so
    /// pods deleted after they were counted keep their count.
    #[test]
    fn each_pod_counts_once() {
        let job = json!({"status": {"succeeded": 2, "failed": 1,
            "uncountedTerminatedPods": {"succeeded": ["b"]}}});
        let b = pod("b", "Succeeded", true);
        let c = pod("c", "Succeeded", true);
        let d = pod("d", "Running", true);
        let e = pod("e", "Succeeded", false);
        let f = pod("f", "Failed", true);
        let t = tally(&job, &[&f, &e, &d, &c, &b], false);
        assert_eq!(
            t,
            Tally {
                succeeded: 3,
                failed: 2,
                uncounted_succeeded: uids(&["b", "c"]),
                uncounted_failed: uids(&["f"]),
                changed: true,
            }
        );
        // A listed pod whose finalizer is gone leaves the list, and keeps its count.
        let written = json!({"status": {"succeeded": 3, "failed": 2,
            "uncountedTerminatedPods": {"succeeded": ["b", "c"], "failed": ["f"]}}});
        let b_done = pod("b", "Succeeded", false);
        let t = tally(&written, &[&b_done, &c, &f], false);
        assert_eq!((t.succeeded, t.failed), (3, 2));
        assert!(t.changed);
        // Nothing new: no write is due.
        assert!(!tally(&written, &[&b, &c, &f], false).changed);
        assert_eq!(t.uncounted_succeeded, uids(&["c"]));
        assert!(t.lists(&c) && !t.lists(&b_done));
    }

    /// A pod deleted while running failed, unless the Job's suspension stopped it.
    #[test]
    fn a_deleted_running_pod_failed_unless_suspended() {
        let mut p = pod("p", "Running", true);
        p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let job = json!({"status": {}});
        assert_eq!(tally(&job, &[&p], false).failed, 1);
        assert_eq!(tally(&job, &[&p], true).failed, 0);
        assert!(!tally(&job, &[&p], true).lists(&p));
    }
}
