//! Defaulting and update rules that Kubernetes applies in its registry strategies:
//! the status a new object starts with, defaulted spec fields, and immutable fields.

use serde_json::{Value, json};
use wk_api::Status;
use wk_api::resource::ResourceType;
use wk_api::validation::{FieldError, FieldErrorKind};

use super::ApiError;

fn set_default(obj: &mut Value, pointer: &str, value: Value) {
    if obj.pointer(pointer).is_some_and(|v| !v.is_null()) {
        return;
    }
    let mut cur = obj;
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for (i, p) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        let map = cur.as_object_mut().expect("object");
        if i == parts.len() - 1 {
            map.insert(p.to_string(), value);
            return;
        }
        cur = map.entry(p.to_string()).or_insert_with(|| json!({}));
    }
}

/// Pod template defaults shared by Pods and workload templates.
fn default_pod_spec(spec: &mut Value) {
    set_default(spec, "/restartPolicy", json!("Always"));
    set_default(spec, "/terminationGracePeriodSeconds", json!(30));
    set_default(spec, "/dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "/schedulerName", json!("default-scheduler"));
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(cs)) = spec.get_mut(list) {
            for c in cs {
                set_default(c, "/terminationMessagePath", json!("/dev/termination-log"));
                set_default(c, "/terminationMessagePolicy", json!("File"));
                if let Some(Value::Array(ports)) = c.get_mut("ports") {
                    for p in ports {
                        set_default(p, "/protocol", json!("TCP"));
                    }
                }
            }
        }
    }
}

fn default_workload(obj: &mut Value, replicas: bool) {
    if replicas {
        set_default(obj, "/spec/replicas", json!(1));
    }
    set_default(obj, "/spec/revisionHistoryLimit", json!(10));
    if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
        default_pod_spec(spec);
    }
}

/// Resets status on create as the Kubernetes strategies do, then applies defaults.
pub fn on_create(rt: &ResourceType, obj: &mut Value) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    match rt.kind {
        "Pod" => {
            map.insert(
                "status".into(),
                json!({"phase": "Pending", "qosClass": "BestEffort"}),
            );
        }
        "Namespace" => {
            map.insert("status".into(), json!({"phase": "Active"}));
        }
        "Deployment" | "ReplicaSet" | "DaemonSet" | "Job" | "CronJob" | "Service" => {
            map.remove("status");
        }
        _ => {}
    }
    apply(rt, obj);
}

/// Defaults for unset fields, applied on every write (as Kubernetes defaults on decode).
pub fn apply(rt: &ResourceType, obj: &mut Value) {
    match rt.kind {
        "Pod" => {
            if let Some(spec) = obj.get_mut("spec") {
                default_pod_spec(spec);
            }
        }
        "Namespace" => {
            set_default(obj, "/spec/finalizers", json!(["kubernetes"]));
        }
        "Deployment" => {
            default_workload(obj, true);
            set_default(obj, "/spec/progressDeadlineSeconds", json!(600));
            if obj
                .pointer("/spec/strategy/type")
                .and_then(Value::as_str)
                .unwrap_or("RollingUpdate")
                == "RollingUpdate"
            {
                set_default(obj, "/spec/strategy/type", json!("RollingUpdate"));
                set_default(obj, "/spec/strategy/rollingUpdate/maxSurge", json!("25%"));
                set_default(
                    obj,
                    "/spec/strategy/rollingUpdate/maxUnavailable",
                    json!("25%"),
                );
            }
        }
        "ReplicaSet" => {
            default_workload(obj, true);
            if let Some(s) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                s.remove("revisionHistoryLimit");
            }
        }
        "DaemonSet" => {
            default_workload(obj, false);
            set_default(obj, "/spec/updateStrategy/type", json!("RollingUpdate"));
        }
        "Job" => {
            set_default(obj, "/spec/backoffLimit", json!(6));
            // With parallelism alone, completions stays unset: a work queue (Kubernetes).
            let unset = |p: &str| obj.pointer(p).is_none_or(Value::is_null);
            if unset("/spec/completions") && unset("/spec/parallelism") {
                set_default(obj, "/spec/completions", json!(1));
            }
            set_default(obj, "/spec/parallelism", json!(1));
            if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
                default_pod_spec(spec);
            }
        }
        "CronJob" => {
            set_default(obj, "/spec/concurrencyPolicy", json!("Allow"));
            set_default(obj, "/spec/suspend", json!(false));
            set_default(obj, "/spec/successfulJobsHistoryLimit", json!(3));
            set_default(obj, "/spec/failedJobsHistoryLimit", json!(1));
        }
        "Service" => {
            set_default(obj, "/spec/type", json!("ClusterIP"));
            set_default(obj, "/spec/sessionAffinity", json!("None"));
            if let Some(Value::Array(ports)) = obj.pointer_mut("/spec/ports") {
                for p in ports {
                    set_default(p, "/protocol", json!("TCP"));
                    if p.get("targetPort").is_none() {
                        if let Some(port) = p.get("port").cloned() {
                            p["targetPort"] = port;
                        }
                    }
                }
            }
        }
        "Secret" => {
            set_default(obj, "/type", json!("Opaque"));
            // stringData is write-only: it is folded into data (base64), as Kubernetes does.
            if let Some(Value::Object(sd)) =
                obj.as_object_mut().and_then(|m| m.remove("stringData"))
            {
                use base64::Engine;
                for (k, v) in sd {
                    let text = v.as_str().unwrap_or_default().to_string();
                    let enc = base64::engine::general_purpose::STANDARD.encode(text);
                    set_default(obj, "/data", json!({}));
                    obj["data"][k] = json!(enc);
                }
            }
        }
        _ => {}
    }
}

fn immutable(field: &str) -> FieldError {
    FieldError {
        field: field.into(),
        kind: FieldErrorKind::Invalid,
        value: None,
        detail: "field is immutable".into(),
    }
}

/// Rejects changes to immutable fields and keeps what updates may not touch.
pub fn on_update(rt: &ResourceType, current: &Value, next: &mut Value) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    let changed = |p: &str, next: &Value| current.pointer(p) != next.pointer(p);
    match rt.kind {
        "Deployment" | "ReplicaSet" | "DaemonSet" | "Job" => {
            if changed("/spec/selector", next) {
                errors.push(immutable("spec.selector"));
            }
            if rt.kind == "Job" && changed("/spec/template", next) {
                errors.push(immutable("spec.template"));
            }
        }
        "Service" => {
            // An update that leaves the allocated addresses out keeps them (kubectl
            // replace, PUT of a manifest).
            for field in ["clusterIP", "clusterIPs"] {
                if next.pointer(&format!("/spec/{field}")).is_none()
                    && let Some(v) = current.pointer(&format!("/spec/{field}"))
                {
                    next["spec"][field] = v.clone();
                }
            }
            let old_ports = current
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let node_ports = matches!(
                next.pointer("/spec/type").and_then(Value::as_str),
                Some("NodePort" | "LoadBalancer")
            );
            if let Some(Value::Array(ports)) = next.pointer_mut("/spec/ports") {
                for p in ports.iter_mut() {
                    if !node_ports {
                        // No longer NodePort: its node ports go (and are released).
                        if let Some(m) = p.as_object_mut() {
                            m.remove("nodePort");
                        }
                        continue;
                    }
                    if p.get("nodePort").is_some() {
                        continue;
                    }
                    let same = old_ports.iter().find(|o| {
                        o.get("port") == p.get("port") && o.get("protocol") == p.get("protocol")
                    });
                    if let Some(np) = same.and_then(|o| o.get("nodePort")) {
                        p["nodePort"] = np.clone();
                    }
                }
            }
            if current.pointer("/spec/clusterIP").is_some() && changed("/spec/clusterIP", next) {
                errors.push(immutable("spec.clusterIP"));
            }
        }
        "Pod" => {
            // Only images, activeDeadlineSeconds and added tolerations may change; nodeName
            // only through the binding subresource.
            let mut a = current.get("spec").cloned().unwrap_or_default();
            let mut b = next.get("spec").cloned().unwrap_or_default();
            for spec in [&mut a, &mut b] {
                for list in ["containers", "initContainers"] {
                    if let Some(Value::Array(cs)) = spec.get_mut(list) {
                        for c in cs {
                            if let Some(m) = c.as_object_mut() {
                                m.remove("image");
                            }
                        }
                    }
                }
                if let Some(m) = spec.as_object_mut() {
                    m.remove("activeDeadlineSeconds");
                    m.remove("tolerations");
                }
            }
            if a != b {
                errors.push(FieldError {
                    field: "spec".into(),
                    kind: FieldErrorKind::Forbidden,
                    value: None,
                    detail: "pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds` or `spec.tolerations` (only additions to existing tolerations)".into(),
                });
            }
        }
        "ConfigMap" | "Secret" => {
            if current.get("immutable") == Some(&json!(true))
                && (changed("/data", next) || changed("/binaryData", next))
            {
                errors.push(FieldError {
                    field: "data".into(),
                    kind: FieldErrorKind::Forbidden,
                    value: None,
                    detail: "field is immutable when `immutable` is set".into(),
                });
            }
        }
        _ => {}
    }
    if errors.is_empty() {
        Ok(())
    } else {
        let name = current
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        Err(ApiError(Status::invalid(rt, name, &errors)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wk_api::resource::by_plural;

    #[test]
    fn deployment_defaults() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80}]}]}}}, "status": {"x": 1}});
        on_create(by_plural("apps", "deployments").unwrap(), &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["protocol"],
            "TCP"
        );
        assert!(d.get("status").is_none());
    }

    #[test]
    fn secret_string_data_is_folded() {
        let mut s = json!({"stringData": {"k": "v"}});
        on_create(by_plural("", "secrets").unwrap(), &mut s);
        assert_eq!(s["data"]["k"], "dg==");
        assert!(s.get("stringData").is_none());
        assert_eq!(s["type"], "Opaque");
    }

    #[test]
    fn selector_is_immutable() {
        let cur =
            json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"a": "b"}}}});
        let mut next =
            json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"a": "c"}}}});
        let err =
            on_update(by_plural("apps", "deployments").unwrap(), &cur, &mut next).unwrap_err();
        assert!(
            err.0.message.contains("spec.selector: Invalid value"),
            "{}",
            err.0.message
        );
    }
}
