//! Garbage collection: objects whose controller owner no longer exists are deleted
//! (background cascading deletion): ReplicaSets of a gone Deployment, pods of a gone
//! ReplicaSet or Job, Jobs of a gone CronJob.

use std::collections::HashSet;

use serde_json::{Value, json};
use wk_api::resource::lookup;
use wk_client::Client;

use super::{World, s};

/// The kinds whose objects the controllers load, so an owner of these kinds that is not
/// in the World is really gone.
const OWNER_KINDS: [&str; 4] = ["Deployment", "ReplicaSet", "Job", "CronJob"];

fn gone_owner(v: &Value, uids: &HashSet<&str>) -> bool {
    v.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter().any(|r| {
                r["controller"] == json!(true)
                    && OWNER_KINDS.contains(&s(r, "/kind"))
                    && !uids.contains(s(r, "/uid"))
            })
        })
}

pub(crate) async fn run(client: &Client, w: &World) {
    let uids: HashSet<&str> = w
        .deployments
        .iter()
        .chain(&w.replicasets)
        .chain(&w.jobs)
        .chain(&w.cronjobs)
        .map(|o| s(o, "/metadata/uid"))
        .collect();
    for (kind, objs) in [
        ("replicasets", &w.replicasets),
        ("jobs", &w.jobs),
        ("pods", &w.pods),
    ] {
        let rt = lookup(kind).expect("kind registered");
        for o in objs.iter() {
            if o.pointer("/metadata/deletionTimestamp").is_none() && gone_owner(o, &uids) {
                tracing::debug!(kind, name = s(o, "/metadata/name"), "garbage collecting");
                let _ = client
                    .delete(
                        rt,
                        Some(s(o, "/metadata/namespace")),
                        s(o, "/metadata/name"),
                        &json!({}),
                    )
                    .await;
            }
        }
    }
}
