//! Job: runs pods from its template until `completions` of them succeed, at most
//! `parallelism` at a time. More than `backoffLimit` failures (failed pods, plus container
//! restarts under `restartPolicy: OnFailure`) fail the Job (`BackoffLimitExceeded`), as
//! does running past `activeDeadlineSeconds` (`DeadlineExceeded`); a finished Job with
//! `ttlSecondsAfterFinished` is deleted that long after it finished (its pods go with it).

use serde_json::{Value, json};
use wk_api::resource::lookup;
use wk_client::Client;

use super::{World, controller_uid, event, is_active, owner_ref, patch_status, s};

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

/// A Job's succeeded and failed counts, and the uids of its finished pods counted so far
/// (kept in `status.countedPods` while they exist). A finished pod is counted once, when
/// it is first seen; one deleted later (by a user, or with its node) does not lower the
/// counts, so finished work is not run again and backoffLimit cannot be reset. A Job
/// written before this field existed starts from what its pods and status say.
fn tally<'a>(job: &Value, owned: &[&'a Value]) -> (i64, i64, Vec<&'a str>) {
    let finished: Vec<(&str, bool)> = owned
        .iter()
        .filter_map(|p| match s(p, "/status/phase") {
            "Succeeded" => Some((s(p, "/metadata/uid"), true)),
            "Failed" => Some((s(p, "/metadata/uid"), false)),
            _ => None,
        })
        .collect();
    let (now_s, now_f) = (
        finished.iter().filter(|(_, ok)| *ok).count() as i64,
        finished.iter().filter(|(_, ok)| !*ok).count() as i64,
    );
    let (prior_s, prior_f) = (
        int(job, "/status/succeeded").unwrap_or(0),
        int(job, "/status/failed").unwrap_or(0),
    );
    let counted_now: Vec<&str> = finished.iter().map(|(u, _)| *u).collect();
    let Some(counted) = job.pointer("/status/countedPods").and_then(Value::as_array) else {
        return (prior_s.max(now_s), prior_f.max(now_f), counted_now);
    };
    let counted: Vec<&str> = counted.iter().filter_map(Value::as_str).collect();
    let new = |want: bool| {
        finished
            .iter()
            .filter(|(u, ok)| *ok == want && !counted.contains(u))
            .count() as i64
    };
    (prior_s + new(true), prior_f + new(false), counted_now)
}

pub(crate) async fn run(client: &Client, w: &World) {
    let pods_rt = lookup("pods").expect("pods");
    let jobs_rt = lookup("jobs").expect("jobs");
    let now = jiff::Timestamp::now();
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
        let (succeeded, failed_pods, counted) = tally(job, &owned);
        let failures = failed_pods + owned.iter().map(|p| restarts(p)).sum::<i64>();

        if let Some((_, at)) = finished(job) {
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
        if job.pointer("/spec/suspend") == Some(&json!(true)) {
            for p in &active {
                let _ = client
                    .delete(pods_rt, Some(ns), s(p, "/metadata/name"), &json!({}))
                    .await;
            }
            let suspended = json!({"type": "Suspended", "status": "True", "reason": "JobSuspended",
                "message": "Job suspended", "lastProbeTime": ts(now), "lastTransitionTime": ts(now)});
            let status = json!({"active": 0, "succeeded": succeeded, "failed": failed_pods,
                "ready": 0, "conditions": [suspended], "countedPods": counted});
            let current = job.get("status").cloned().unwrap_or(json!({}));
            let already = current
                .pointer("/conditions")
                .and_then(Value::as_array)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Suspended" && c["status"] == "True")
                });
            if !already || current.get("active").unwrap_or(&json!(0)) != &json!(0) {
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
            "countedPods": counted,
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

    fn pod(uid: &str, phase: &str) -> Value {
        json!({"metadata": {"uid": uid}, "status": {"phase": phase}})
    }

    /// Finished pods count once; one that is deleted afterwards keeps its count; a Job
    /// from before `countedPods` starts from the larger of its status and its pods.
    #[test]
    fn finished_pods_are_counted_once_and_stay_counted() {
        let job = json!({"status": {"succeeded": 2, "failed": 1, "countedPods": ["a", "b", "x"]}});
        // `a` and the failed `x` were deleted; `c` succeeded since; `d` still runs.
        let (b, c, d) = (
            pod("b", "Succeeded"),
            pod("c", "Succeeded"),
            pod("d", "Running"),
        );
        let (s, f, counted) = tally(&job, &[&b, &c, &d]);
        assert_eq!((s, f), (3, 1));
        assert_eq!(counted, ["b", "c"]);
        // The next pass, with nothing new: the same counts.
        let job = json!({"status": {"succeeded": 3, "failed": 1, "countedPods": counted}});
        assert_eq!(tally(&job, &[&b, &c, &d]).0, 3);
        let failed = pod("e", "Failed");
        assert_eq!(tally(&job, &[&b, &c, &failed]).1, 2);
        // Before countedPods: nothing counted twice, nothing lost.
        let legacy = json!({"status": {"succeeded": 2, "failed": 0}});
        let (s, f, counted) = tally(&legacy, &[&b, &c, &d]);
        assert_eq!((s, f, counted.len()), (2, 0, 2));
        let fresh = json!({});
        assert_eq!(
            tally(&fresh, &[&b, &c, &failed]),
            (2, 1, vec!["b", "c", "e"])
        );
    }
}
