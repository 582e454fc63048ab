//! Server-side table printing (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`),
//! with the columns `kubectl get` shows for each kind. `wk get` prints the same tables.

use axum::http::HeaderMap;
use serde_json::{Value, json};
use wk_api::meta::{ObjectMetaExt, string_map};
use wk_api::resource::ResourceType;

use super::handlers::Params;

/// Whether the client asked for a Table.
pub fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

/// Human age like kubectl's: `45s`, `12m`, `5h`, `3d`.
pub fn age(timestamp: Option<&str>) -> String {
    let Some(ts) = timestamp.and_then(|t| t.parse::<jiff::Timestamp>().ok()) else {
        return "<unknown>".into();
    };
    let secs = (jiff::Timestamp::now() - ts).get_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 8 * 3600 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn s(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn n(v: Option<&Value>) -> i64 {
    v.and_then(Value::as_i64).unwrap_or(0)
}

fn or_none(x: String) -> String {
    if x.is_empty() { "<none>".into() } else { x }
}

/// Columns: (name, type, priority).
fn columns(rt: &ResourceType) -> Vec<(&'static str, &'static str, u8)> {
    let mut c = vec![("Name", "string", 0)];
    c.extend(match rt.kind {
        "Pod" => vec![
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Runtime", "string", 1),
        ],
        "Deployment" => vec![
            ("Ready", "string", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "ReplicaSet" => vec![
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Age", "string", 0),
            ("Images", "string", 1),
        ],
        "DaemonSet" => vec![
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Age", "string", 0),
        ],
        "Service" => vec![
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            ("Age", "string", 0),
            ("Selector", "string", 1),
        ],
        "Node" => vec![
            ("Status", "string", 0),
            ("Roles", "string", 0),
            ("Age", "string", 0),
            ("Version", "string", 0),
            ("Internal-IP", "string", 1),
            ("Runtimes", "string", 1),
        ],
        "Namespace" => vec![("Status", "string", 0), ("Age", "string", 0)],
        "Job" => vec![
            ("Status", "string", 0),
            ("Completions", "string", 0),
            ("Duration", "string", 0),
            ("Age", "string", 0),
        ],
        "CronJob" => vec![
            ("Schedule", "string", 0),
            ("Suspend", "boolean", 0),
            ("Active", "integer", 0),
            ("Last Schedule", "string", 0),
            ("Age", "string", 0),
        ],
        "ConfigMap" | "Secret" => {
            let mut v = vec![];
            if rt.kind == "Secret" {
                v.push(("Type", "string", 0));
            }
            v.push(("Data", "integer", 0));
            v.push(("Age", "string", 0));
            v
        }
        "Endpoints" => vec![("Endpoints", "string", 0), ("Age", "string", 0)],
        "Event" => vec![
            ("Last Seen", "string", 0),
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Message", "string", 0),
        ],
        "Lease" => vec![("Holder", "string", 0), ("Age", "string", 0)],
        "ServiceAccount" => vec![("Secrets", "integer", 0), ("Age", "string", 0)],
        _ => vec![("Age", "string", 0)],
    });
    c
}

fn pod_cells(o: &Value) -> Vec<Value> {
    let statuses = o
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let total = o
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let ready = statuses
        .iter()
        .filter(|c| c.get("ready") == Some(&json!(true)))
        .count();
    let restarts: i64 = statuses.iter().map(|c| n(c.get("restartCount"))).sum();
    let mut status = s(o.pointer("/status/reason"));
    if status.is_empty() {
        status = s(o.pointer("/status/phase"));
    }
    for c in &statuses {
        if let Some(r) = c.pointer("/state/waiting/reason").and_then(Value::as_str) {
            status = r.to_string();
        } else if let Some(r) = c
            .pointer("/state/terminated/reason")
            .and_then(Value::as_str)
        {
            status = r.to_string();
        }
    }
    if o.deletion_timestamp().is_some() {
        status = "Terminating".into();
    }
    vec![
        json!(format!("{ready}/{total}")),
        json!(status),
        json!(restarts.to_string()),
        json!(age(o.meta_str("creationTimestamp"))),
        json!(or_none(s(o.pointer("/status/podIP")))),
        json!(or_none(s(o.pointer("/spec/nodeName")))),
        json!(or_none(s(o.pointer("/spec/runtimeClassName")))),
    ]
}

fn join_list(o: &Value, pointer: &str, field: &str) -> String {
    o.pointer(pointer)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|c| s(c.get(field)))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn selector_string(o: &Value, pointer: &str) -> String {
    let labels = string_map(o.pointer(pointer));
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn cells(rt: &ResourceType, o: &Value) -> Vec<Value> {
    let age_cell = json!(age(o.meta_str("creationTimestamp")));
    let mut c = vec![json!(o.name().unwrap_or(""))];
    c.extend(match rt.kind {
        "Pod" => pod_cells(o),
        "Deployment" => vec![
            json!(format!(
                "{}/{}",
                n(o.pointer("/status/readyReplicas")),
                n(o.pointer("/spec/replicas"))
            )),
            json!(n(o.pointer("/status/updatedReplicas"))),
            json!(n(o.pointer("/status/availableReplicas"))),
            age_cell,
            json!(join_list(o, "/spec/template/spec/containers", "name")),
            json!(join_list(o, "/spec/template/spec/containers", "image")),
            json!(selector_string(o, "/spec/selector/matchLabels")),
        ],
        "ReplicaSet" => vec![
            json!(n(o.pointer("/spec/replicas"))),
            json!(n(o.pointer("/status/replicas"))),
            json!(n(o.pointer("/status/readyReplicas"))),
            age_cell,
            json!(join_list(o, "/spec/template/spec/containers", "image")),
        ],
        "DaemonSet" => vec![
            json!(n(o.pointer("/status/desiredNumberScheduled"))),
            json!(n(o.pointer("/status/currentNumberScheduled"))),
            json!(n(o.pointer("/status/numberReady"))),
            json!(n(o.pointer("/status/updatedNumberScheduled"))),
            json!(n(o.pointer("/status/numberAvailable"))),
            age_cell,
        ],
        "Service" => {
            let ports = o
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            let node = p
                                .get("nodePort")
                                .map(|np| format!(":{}", s(Some(np))))
                                .unwrap_or_default();
                            let proto = s(p.get("protocol"));
                            let proto = if proto.is_empty() {
                                "TCP".to_string()
                            } else {
                                proto
                            };
                            format!("{}{node}/{proto}", s(p.get("port")))
                        })
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            vec![
                json!(s(o.pointer("/spec/type"))),
                json!(or_none(s(o.pointer("/spec/clusterIP")))),
                json!("<none>"),
                json!(or_none(ports)),
                age_cell,
                json!(or_none(selector_string(o, "/spec/selector"))),
            ]
        }
        "Node" => {
            let ready = o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c.get("type") == Some(&json!("Ready"))))
                .map(|c| {
                    if c.get("status") == Some(&json!("True")) {
                        "Ready"
                    } else {
                        "NotReady"
                    }
                })
                .unwrap_or("Unknown");
            let mut status = ready.to_string();
            if o.pointer("/spec/unschedulable") == Some(&json!(true)) {
                status.push_str(",SchedulingDisabled");
            }
            let roles: Vec<String> = o
                .labels()
                .keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/").map(String::from))
                .collect();
            let ip = o
                .pointer("/status/addresses")
                .and_then(Value::as_array)
                .and_then(|a| {
                    a.iter()
                        .find(|x| x.get("type") == Some(&json!("InternalIP")))
                })
                .map(|x| s(x.get("address")))
                .unwrap_or_default();
            vec![
                json!(status),
                json!(or_none(roles.join(","))),
                age_cell,
                json!(s(o.pointer("/status/nodeInfo/kubeletVersion"))),
                json!(or_none(ip)),
                json!(or_none(s(
                    o.pointer("/metadata/annotations/wk.dev~1runtimes")
                ))),
            ]
        }
        "Namespace" => vec![json!(s(o.pointer("/status/phase"))), age_cell],
        "Job" => {
            let succeeded = n(o.pointer("/status/succeeded"));
            // As kubectl prints it; a work queue (no completions) needs one success.
            let completions = match o.pointer("/spec/completions").and_then(Value::as_i64) {
                Some(c) => format!("{succeeded}/{c}"),
                None => match n(o.pointer("/spec/parallelism")) {
                    p if p > 1 => format!("{succeeded}/1 of {p}"),
                    _ => format!("{succeeded}/1"),
                },
            };
            let conds = o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let has = |t: &str| {
                conds.iter().any(|c| {
                    c.get("type") == Some(&json!(t)) && c.get("status") == Some(&json!("True"))
                })
            };
            let status = if has("Complete") {
                "Complete"
            } else if has("Failed") {
                "Failed"
            } else {
                "Running"
            };
            vec![json!(status), json!(completions), json!(""), age_cell]
        }
        "CronJob" => vec![
            json!(s(o.pointer("/spec/schedule"))),
            json!(o.pointer("/spec/suspend") == Some(&json!(true))),
            json!(
                o.pointer("/status/active")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)
            ),
            json!(
                o.pointer("/status/lastScheduleTime")
                    .map(|t| age(t.as_str()))
                    .unwrap_or_else(|| "<none>".into())
            ),
            age_cell,
        ],
        "ConfigMap" | "Secret" => {
            let count = o
                .get("data")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len())
                + o.get("binaryData")
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len());
            let mut v = vec![];
            if rt.kind == "Secret" {
                v.push(json!(s(o.get("type"))));
            }
            v.push(json!(count));
            v.push(age_cell);
            v
        }
        "ServiceAccount" => {
            let secrets = o
                .get("secrets")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            vec![json!(secrets), age_cell]
        }
        "Endpoints" => {
            let mut eps = Vec::new();
            for subset in o
                .get("subsets")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
            {
                let ports: Vec<String> = subset
                    .get("ports")
                    .and_then(Value::as_array)
                    .map(|p| p.iter().map(|p| s(p.get("port"))).collect())
                    .unwrap_or_default();
                for a in subset
                    .get("addresses")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
                {
                    for p in &ports {
                        eps.push(format!("{}:{p}", s(a.get("ip"))));
                    }
                }
            }
            vec![json!(or_none(eps.join(","))), age_cell]
        }
        "Event" => {
            let last = o
                .get("lastTimestamp")
                .and_then(Value::as_str)
                .or(o.get("eventTime").and_then(Value::as_str));
            vec![
                json!(age(last.or(o.meta_str("creationTimestamp")))),
                json!(s(o.get("type"))),
                json!(s(o.get("reason"))),
                json!(format!(
                    "{}/{}",
                    s(o.pointer("/involvedObject/kind")).to_lowercase(),
                    s(o.pointer("/involvedObject/name"))
                )),
                json!(s(o.get("message"))),
            ]
        }
        "Lease" => vec![
            json!(or_none(s(o.pointer("/spec/holderIdentity")))),
            age_cell,
        ],
        _ => vec![age_cell],
    });
    c
}

/// Renders objects as a `meta.k8s.io/v1` Table.
pub fn render(
    rt: &ResourceType,
    items: &[Value],
    revision: u64,
    params: &Params,
    cont: Option<String>,
) -> Value {
    let include = params.get("includeObject").unwrap_or("Metadata");
    let defs: Vec<Value> = columns(rt)
        .into_iter()
        .map(|(name, ty, priority)| {
            json!({"name": name, "type": ty, "format": if name == "Name" { "name" } else { "" }, "description": "", "priority": priority})
        })
        .collect();
    let rows: Vec<Value> = items.iter().map(|o| row(rt, o, include)).collect();
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if let Some(c) = cont {
        metadata["continue"] = json!(c);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "columnDefinitions": defs, "rows": rows})
}

/// One row for an object (used by watches too).
pub fn row(rt: &ResourceType, o: &Value, include: &str) -> Value {
    let object = match include {
        "Object" => o.clone(),
        "None" => Value::Null,
        _ => {
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.get("metadata").cloned().unwrap_or_default()})
        }
    };
    json!({"cells": cells(rt, o), "object": object})
}

/// A one-row table for a watch event.
pub fn watch_table(rt: &ResourceType, o: &Value, params: &Params, first: bool) -> Value {
    let mut t = render(
        rt,
        std::slice::from_ref(o),
        o.resource_version(),
        params,
        None,
    );
    if !first {
        t["columnDefinitions"] = json!([]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(age(None), "<unknown>");
        let t =
            (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(3 * 86400 + 5)).to_string();
        assert_eq!(age(Some(&t)), "3d");
        let t = (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(30)).to_string();
        assert!(age(Some(&t)).ends_with('s'));
    }

    #[test]
    fn service_ports_cell() {
        let rt = wk_api::resource::by_plural("", "services").unwrap();
        let o = json!({"metadata": {"name": "a"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30001}]}});
        let c = cells(rt, &o);
        assert_eq!(c[4], json!("80:30001/TCP"));
    }
}
