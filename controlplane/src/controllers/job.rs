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

/// A Job's succeeded and failed counts: never lower than its status says, so a
/// finished pod deleted after it was counted (by a user, or with its node) neither
/// reruns its work nor resets backoffLimit. (One deleted before a pass counted it is
/// not counted: the API keeps no field to remember counted pods by.)
fn tally(job: &Value, owned: &[&Value]) -> (i64, i64) {
    let phase = |want: &str| {
        owned
            .iter()
            .filter(|p| s(p, "/status/phase") == want)
            .count() as i64
    };
    (
        int(job, "/status/succeeded")
            .unwrap_or(0)
            .max(phase("Succeeded")),
        int(job, "/status/failed").unwrap_or(0).max(phase("Failed")),
    )
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
        let (succeeded, failed_pods) = tally(job, &owned);
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
                "ready": 0, "conditions": [suspended]});
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

    /// The counts never go below the status: pods deleted after they were counted
    /// keep their count, and new ones raise it.
    #[test]
    fn counts_never_go_below_the_status() {
        let job = json!({"status": {"succeeded": 2, "failed": 1}});
        let (b, d) = (pod("b", "Succeeded"), pod("d", "Running"));
        assert_eq!(tally(&job, &[&b, &d]), (2, 1));
        let (c, e, f) = (
            pod("c", "Succeeded"),
            pod("e", "Succeeded"),
            pod("f", "Failed"),
        );
        assert_eq!(tally(&job, &[&b, &c, &e, &f]), (3, 1));
        assert_eq!(tally(&json!({}), &[&b, &f]), (1, 1));
    }
}
