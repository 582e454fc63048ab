//! Helpers over untyped (JSON) objects that several components need alike: Kubernetes
//! timestamps, a pod's resource requests, and Event objects.

use serde_json::{Value, json};

use crate::quantity::Quantity;

/// A timestamp as Kubernetes writes `metav1.Time` (RFC 3339, whole seconds, UTC).
pub fn rfc3339(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Now, as [`rfc3339`].
pub fn now_rfc3339() -> String {
    rfc3339(jiff::Timestamp::now())
}

/// CPU (millicores) and memory (bytes) a pod asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    pub cpu_milli: i64,
    pub memory: i64,
}

fn quantity(v: Option<&Value>) -> Option<Quantity> {
    let v = v?;
    let text = v
        .as_str()
        .map(String::from)
        .or_else(|| v.as_i64().map(|n| n.to_string()))?;
    Quantity::parse(&text).ok()
}

/// A quantity field (`"500m"`, `"64Mi"`, or a bare number) in millis and in units.
pub fn quantity_field(v: Option<&Value>) -> Option<(i64, i64)> {
    quantity(v).map(|q| {
        (
            q.milli_value().clamp(0, i64::MAX as i128) as i64,
            q.value().clamp(0, i64::MAX as i128) as i64,
        )
    })
}

/// What a pod requests: the sum over its containers of `resources.requests`, or of
/// `resources.limits` where a request is not given (Kubernetes defaults requests to
/// limits). Both the scheduler and the node agent's admission count this.
pub fn pod_requests(pod: &Value) -> Requests {
    let mut r = Requests::default();
    for c in pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let get = |res: &str| {
            quantity_field(c.pointer(&format!("/resources/requests/{res}")))
                .or_else(|| quantity_field(c.pointer(&format!("/resources/limits/{res}"))))
        };
        r.cpu_milli += get("cpu").map(|(milli, _)| milli).unwrap_or(0);
        r.memory += get("memory").map(|(_, units)| units).unwrap_or(0);
    }
    r
}

/// A core/v1 Event about `involved` (any object), from `component` (and `host`, for a
/// node agent). The name is unique per nanosecond, as clients name events.
pub fn event(
    involved: &Value,
    kind: &str,
    reason: &str,
    message: &str,
    component: &str,
    host: Option<&str>,
) -> Value {
    let s = |p: &str| involved.pointer(p).and_then(Value::as_str).unwrap_or("");
    let ns = match s("/metadata/namespace") {
        "" => "default",
        n => n,
    };
    let api_version = match s("/apiVersion") {
        "" => "v1",
        v => v,
    };
    let now = jiff::Timestamp::now();
    let mut source = json!({"component": component});
    if let Some(h) = host {
        source["host"] = json!(h);
    }
    json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{}.{:x}", s("/metadata/name"), now.as_nanosecond()), "namespace": ns},
        "involvedObject": {"apiVersion": api_version, "kind": s("/kind"), "name": s("/metadata/name"),
            "namespace": s("/metadata/namespace"), "uid": s("/metadata/uid")},
        "reason": reason, "message": message, "type": kind, "count": 1,
        "source": source, "reportingComponent": component, "reportingInstance": host.unwrap_or(component),
        "firstTimestamp": rfc3339(now), "lastTimestamp": rfc3339(now),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_default_to_limits_and_add_up_over_containers() {
        let pod = json!({"spec": {"containers": [
            {"resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}}},
            {"resources": {"limits": {"cpu": "500m", "memory": "32Mi"}}},
            {"name": "no-resources"}]}});
        assert_eq!(
            pod_requests(&pod),
            Requests {
                cpu_milli: 750,
                memory: 96 << 20
            }
        );
    }

    #[test]
    fn events_name_their_object() {
        let pod =
            json!({"kind": "Pod", "metadata": {"name": "p", "namespace": "team", "uid": "u1"}});
        let e = event(
            &pod,
            "Warning",
            "Unhealthy",
            "probe failed",
            "kubelet",
            Some("node-1"),
        );
        assert_eq!(e["metadata"]["namespace"], "team");
        assert_eq!(
            e["involvedObject"],
            json!({"apiVersion": "v1", "kind": "Pod", "name": "p", "namespace": "team", "uid": "u1"})
        );
        assert_eq!(
            e["source"],
            json!({"component": "kubelet", "host": "node-1"})
        );
        assert!(e["metadata"]["name"].as_str().unwrap().starts_with("p."));
        let node = json!({"kind": "Node", "metadata": {"name": "n1"}});
        assert_eq!(
            event(&node, "Normal", "NodeReady", "", "c", None)["metadata"]["namespace"],
            "default"
        );
    }
}
