//! CronJob: creates a Job from `jobTemplate` at each scheduled time (standard cron syntax,
//! in `timeZone` or UTC), as Kubernetes' CronJob controller does:
//!
//! - only the most recent missed time is run; more than 100 missed times are reported;
//!   a time older than `startingDeadlineSeconds` is skipped (`MissSchedule`);
//! - `concurrencyPolicy`: `Allow` runs Jobs side by side, `Forbid` waits while one is
//!   active, `Replace` deletes the active ones first;
//! - Jobs are named `<cronjob>-<minutes since the epoch>` (seconds for `@every` under a
//!   minute), so a time runs at most once;
//! - finished Jobs beyond `successfulJobsHistoryLimit` (3) / `failedJobsHistoryLimit` (1)
//!   are deleted, oldest first; `suspend: true` stops new runs.

use serde_json::{Value, json};
use wk_api::resource::lookup;
use wk_api::validation::CronSchedule;
use wk_client::Client;

use super::job::finished;
use super::{World, controller_uid, event, owner_ref, patch_status, s};

fn parse_time(v: &Value, p: &str) -> Option<jiff::Timestamp> {
    v.pointer(p)
        .and_then(Value::as_str)
        .and_then(|t| t.parse().ok())
}

fn zone(cj: &Value) -> Result<jiff::tz::TimeZone, String> {
    match s(cj, "/spec/timeZone") {
        "" | "UTC" | "Etc/UTC" => Ok(jiff::tz::TimeZone::UTC),
        name => jiff::tz::TimeZone::get(name).map_err(|e| format!("unknown time zone {name}: {e}")),
    }
}

/// The scheduled times in `(after, now]`: the latest one and how many there were (at most
/// 101 are counted).
fn missed(
    schedule: &CronSchedule,
    after: jiff::Zoned,
    now: jiff::Timestamp,
) -> (Option<jiff::Zoned>, usize) {
    let mut latest = None;
    let mut count = 0;
    let mut t = after;
    while let Some(next) = schedule.next_after(t) {
        if next.timestamp() > now {
            break;
        }
        count += 1;
        latest = Some(next.clone());
        t = next;
        if count > 100 {
            // Jump ahead: only the latest matters from here.
            let recent = now - jiff::SignedDuration::from_mins(2);
            if t.timestamp() < recent {
                t = recent.to_zoned(t.time_zone().clone());
            }
        }
    }
    (latest, count)
}

/// Deletes one of `cj`'s Jobs (its pods with it) and records it.
async fn delete_job(client: &Client, cj: &Value, job: &Value) {
    let name = s(job, "/metadata/name");
    let deleted = client
        .delete(
            lookup("jobs").expect("jobs"),
            Some(s(job, "/metadata/namespace")),
            name,
            &json!({"propagationPolicy": "Background"}),
        )
        .await;
    if deleted.is_ok() {
        event(
            client,
            cj,
            "Normal",
            "SuccessfulDelete",
            &format!("Deleted job {name}"),
        );
    }
}

pub(crate) async fn run(client: &Client, w: &World) {
    let now = jiff::Timestamp::now();
    for cj in &w.cronjobs {
        if cj.pointer("/metadata/deletionTimestamp").is_none() {
            sync(client, w, cj, now).await;
        }
    }
}

async fn sync(client: &Client, w: &World, cj: &Value, now: jiff::Timestamp) {
    let jobs_rt = lookup("jobs").expect("jobs");
    let ns = s(cj, "/metadata/namespace");
    let name = s(cj, "/metadata/name");
    let uid = s(cj, "/metadata/uid");
    let mut owned: Vec<&Value> = w
        .jobs
        .iter()
        .filter(|j| controller_uid(j) == Some(uid))
        .map(|j| j.as_ref())
        .collect();
    owned.sort_by_key(|j| s(j, "/metadata/creationTimestamp").to_string());
    let active: Vec<&Value> = owned
        .iter()
        .filter(|j| finished(j).is_none() && j.pointer("/metadata/deletionTimestamp").is_none())
        .copied()
        .collect();

    // History limits.
    for (kind, field, default) in [
        ("Complete", "/spec/successfulJobsHistoryLimit", 3),
        ("Failed", "/spec/failedJobsHistoryLimit", 1),
    ] {
        let limit = cj
            .pointer(field)
            .and_then(Value::as_i64)
            .unwrap_or(default)
            .max(0) as usize;
        let done: Vec<&&Value> = owned
            .iter()
            .filter(|j| {
                finished(j).is_some_and(|(k, _)| k == kind)
                    && j.pointer("/metadata/deletionTimestamp").is_none()
            })
            .collect();
        for j in done.iter().take(done.len().saturating_sub(limit)) {
            delete_job(client, cj, j).await;
        }
    }

    let last_success = owned
        .iter()
        .filter_map(|j| {
            finished(j)
                .filter(|(k, _)| *k == "Complete")
                .map(|(_, t)| t)
        })
        .max();
    let mut status = json!({
        "active": active.iter().map(|j| json!({"apiVersion": "batch/v1", "kind": "Job", "name": s(j, "/metadata/name"),
            "namespace": ns, "uid": s(j, "/metadata/uid"), "resourceVersion": s(j, "/metadata/resourceVersion")})).collect::<Vec<_>>(),
    });
    if let Some(t) = last_success {
        status["lastSuccessfulTime"] = json!(wk_api::objects::rfc3339(t));
    }
    if let Some(t) = cj.pointer("/status/lastScheduleTime") {
        status["lastScheduleTime"] = t.clone();
    }

    let suspended = cj.pointer("/spec/suspend") == Some(&json!(true));
    let schedule = CronSchedule::parse(s(cj, "/spec/schedule"));
    let tz = zone(cj);
    let (schedule, tz) = match (schedule, tz) {
        (Ok(sc), Ok(tz)) => (sc, tz),
        (Err(e), _) | (_, Err(e)) => {
            if cj.pointer("/status/lastScheduleTime").is_none() && owned.is_empty() {
                event(
                    client,
                    cj,
                    "Warning",
                    "InvalidSchedule",
                    &format!("invalid schedule: {e}"),
                );
            }
            return;
        }
    };
    let since = parse_time(cj, "/status/lastScheduleTime")
        .or_else(|| parse_time(cj, "/metadata/creationTimestamp"))
        .unwrap_or(now);
    let (latest, count) = missed(&schedule, since.to_zoned(tz), now);
    if !suspended && let Some(when) = latest {
        if count > 100 {
            event(
                client,
                cj,
                "Warning",
                "TooManyMissedTimes",
                "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew",
            );
        }
        let late = (now - when.timestamp()).get_seconds();
        let deadline = cj
            .pointer("/spec/startingDeadlineSeconds")
            .and_then(Value::as_i64);
        let policy = s(cj, "/spec/concurrencyPolicy");
        if deadline.is_some_and(|d| late > d) {
            event(
                client,
                cj,
                "Warning",
                "MissSchedule",
                &format!(
                    "Missed scheduled time to start a job: {}",
                    wk_api::objects::rfc3339(when.timestamp())
                ),
            );
            status["lastScheduleTime"] = json!(wk_api::objects::rfc3339(when.timestamp()));
        } else if policy == "Forbid" && !active.is_empty() {
            // Wait for the active Job; this time runs later if still within the deadline.
        } else {
            if policy == "Replace" {
                for j in &active {
                    delete_job(client, cj, j).await;
                }
                status["active"] = json!([]);
            }
            // Kubernetes names Jobs by the minute; sub-minute `@every` schedules need
            // the second.
            let stamp = match schedule {
                CronSchedule::Every(secs) if secs < 60 => when.timestamp().as_second(),
                _ => when.timestamp().as_second() / 60,
            };
            let job_name = format!("{name}-{stamp}");
            let template = cj.pointer("/spec/jobTemplate").cloned().unwrap_or_default();
            let mut meta = template.get("metadata").cloned().unwrap_or(json!({}));
            meta["name"] = json!(job_name);
            meta["namespace"] = json!(ns);
            meta["ownerReferences"] = owner_ref(cj, "batch/v1", "CronJob");
            meta["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"] =
                json!(wk_api::objects::rfc3339(when.timestamp()));
            let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
                             "spec": template.get("spec").cloned().unwrap_or_default()});
            match client.create(jobs_rt, Some(ns), &job, &[]).await {
                Ok(created) => {
                    event(
                        client,
                        cj,
                        "Normal",
                        "SuccessfulCreate",
                        &format!("Created job {job_name}"),
                    );
                    if let Some(a) = status["active"].as_array_mut() {
                        a.push(json!({"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "namespace": ns,
                            "uid": s(&created, "/metadata/uid")}));
                    }
                    status["lastScheduleTime"] = json!(wk_api::objects::rfc3339(when.timestamp()));
                }
                Err(e) if wk_client::is_already_exists(&e) => {
                    status["lastScheduleTime"] = json!(wk_api::objects::rfc3339(when.timestamp()));
                }
                Err(e) => tracing::warn!(cronjob = name, error = %e, "creating a job failed"),
            }
        }
    }
    let current = cj.get("status").cloned().unwrap_or(json!({}));
    let names = |v: &Value| -> Vec<String> {
        v.get("active")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|r| s(r, "/name").to_string())
            .collect()
    };
    if names(&current) != names(&status)
        || current.get("lastScheduleTime") != status.get("lastScheduleTime")
        || current.get("lastSuccessfulTime") != status.get("lastSuccessfulTime")
    {
        patch_status(client, "cronjobs", cj, status).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_latest_missed_time_runs() {
        let sc = CronSchedule::parse("*/5 * * * *").unwrap();
        let after: jiff::Zoned = "2026-11-22T10:00:00[UTC]".parse().unwrap();
        let now: jiff::Timestamp = "2026-11-22T10:17:00Z".parse().unwrap();
        let (latest, count) = missed(&sc, after, now);
        assert_eq!(count, 3);
        assert_eq!(
            latest.unwrap().timestamp(),
            "2026-11-22T10:15:00Z".parse::<jiff::Timestamp>().unwrap()
        );
        let long_ago: jiff::Zoned = "2025-11-22T10:00:00[UTC]".parse().unwrap();
        let (latest, count) = missed(&CronSchedule::parse("* * * * *").unwrap(), long_ago, now);
        assert!(count > 100);
        assert_eq!(
            latest.unwrap().timestamp(),
            "2026-11-22T10:17:00Z".parse::<jiff::Timestamp>().unwrap()
        );
        let (none, _) = missed(&sc, "2026-11-22T10:15:00[UTC]".parse().unwrap(), now);
        assert!(none.is_none());
    }
}
