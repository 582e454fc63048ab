//! Patch formats: JSON merge patch (RFC 7386), Kubernetes strategic merge patch for the
//! common built-in fields, and JSON patch (RFC 6902).

use serde_json::{Map, Value};

/// RFC 7386: objects merge recursively, `null` deletes, everything else replaces.
pub fn json_merge_patch(target: &Value, patch: &Value) -> Value {
    match patch {
        Value::Object(p) => {
            let mut out = match target {
                Value::Object(t) => t.clone(),
                _ => Map::new(),
            };
            for (k, v) in p {
                if v.is_null() {
                    out.remove(k);
                } else {
                    let merged = json_merge_patch(out.get(k).unwrap_or(&Value::Null), v);
                    out.insert(k.clone(), merged);
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// The merge key of a list field, by field name and its parent's path, following the
/// `patchMergeKey` tags of the Kubernetes API types.
fn merge_key(path: &str, field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "readinessGates"
        | "resourceClaims" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "hostAliases" => "ip",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "topologySpreadConstraints" => "topologyKey",
        // Service ports merge by port; container ports by containerPort.
        "ports" if path.ends_with("containers[]") || path.ends_with("initContainers[]") => {
            "containerPort"
        }
        "ports" => "port",
        _ => return None,
    })
}

/// Primitive lists whose patch strategy is `merge` (union) rather than replace.
fn merges_primitives(field: &str) -> bool {
    matches!(field, "finalizers")
}

/// Strategic merge patch: like a merge patch, but lists of objects with a merge key are
/// merged element by element, and the `$patch`, `$setElementOrder/`, `$retainKeys` and
/// `$deleteFromPrimitiveList/` directives are honoured.
pub fn strategic_merge_patch(target: &Value, patch: &Value) -> Value {
    smp(target, patch, "")
}

fn smp(target: &Value, patch: &Value, path: &str) -> Value {
    let Value::Object(p) = patch else {
        return patch.clone();
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut m = p.clone();
            m.remove("$patch");
            return Value::Object(m);
        }
        Some("delete") => return Value::Null,
        _ => {}
    }
    let mut out = match target {
        Value::Object(t) => t.clone(),
        _ => Map::new(),
    };
    if let Some(Value::Array(keep)) = p.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        out.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (k, v) in p {
        if k.starts_with("$setElementOrder/") || k == "$retainKeys" || k == "$patch" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(del)) = (out.get_mut(field), v) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        if v.is_null() {
            out.remove(k);
            continue;
        }
        let child_path = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        let merged = match (out.get(k), v) {
            (Some(Value::Array(cur)), Value::Array(new)) => {
                merge_list(cur, new, path, k, &child_path)
            }
            (Some(cur), Value::Object(_)) => smp(cur, v, &child_path),
            (None, Value::Object(_)) => smp(&Value::Null, v, &child_path),
            (None, Value::Array(new)) => merge_list(&[], new, path, k, &child_path),
            _ => v.clone(),
        };
        out.insert(k.clone(), merged);
    }
    Value::Object(out)
}

fn merge_list(cur: &[Value], new: &[Value], parent: &str, field: &str, path: &str) -> Value {
    if merges_primitives(field) {
        let mut out = cur.to_vec();
        for v in new {
            if !out.contains(v) {
                out.push(v.clone());
            }
        }
        return Value::Array(out);
    }
    let Some(key) = merge_key(parent, field) else {
        // No merge key: the list is replaced, minus directive-only elements.
        return Value::Array(
            new.iter()
                .filter(|v| v.get("$patch").is_none())
                .cloned()
                .collect(),
        );
    };
    if new.iter().any(|v| {
        v.get("$patch").and_then(Value::as_str) == Some("replace")
            && v.as_object().is_some_and(|m| m.len() == 1)
    }) {
        return Value::Array(
            new.iter()
                .filter(|v| v.get("$patch").is_none())
                .cloned()
                .collect(),
        );
    }
    let elem_path = format!("{path}[]");
    let mut out: Vec<Value> = cur.to_vec();
    for item in new {
        let id = item.get(key);
        let pos = id.and_then(|id| out.iter().position(|c| c.get(key) == Some(id)));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                out.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => out[i] = smp(&out[i], item, &elem_path),
            (None, false) => out.push(smp(&Value::Null, item, &elem_path)),
        }
    }
    Value::Array(out)
}

/// RFC 6902 JSON patch (add, remove, replace, move, copy, test).
pub fn json_patch(target: &Value, patch: &Value) -> Result<Value, String> {
    let ops = patch
        .as_array()
        .ok_or("a JSON patch must be an array of operations")?;
    let mut doc = target.clone();
    for (i, op) in ops.iter().enumerate() {
        let kind = op
            .get("op")
            .and_then(Value::as_str)
            .ok_or(format!("operation {i}: missing \"op\""))?;
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or(format!("operation {i}: missing \"path\""))?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or(format!("operation {i}: missing \"value\""))
        };
        match kind {
            "add" => add(&mut doc, path, value()?)?,
            "remove" => {
                remove(&mut doc, path)?;
            }
            "replace" => {
                remove(&mut doc, path)?;
                add(&mut doc, path, value()?)?;
            }
            "move" | "copy" => {
                let from = op
                    .get("from")
                    .and_then(Value::as_str)
                    .ok_or(format!("operation {i}: missing \"from\""))?;
                let v = if kind == "move" {
                    remove(&mut doc, from)?
                } else {
                    doc.pointer(from)
                        .cloned()
                        .ok_or(format!("operation {i}: path {from} not found"))?
                };
                add(&mut doc, path, v)?;
            }
            "test" => {
                if doc.pointer(path) != Some(&value()?) {
                    return Err(format!("operation {i}: test failed at {path}"));
                }
            }
            other => return Err(format!("operation {i}: unknown op {other:?}")),
        }
    }
    Ok(doc)
}

fn split(path: &str) -> Result<(String, String), String> {
    let idx = path.rfind('/').ok_or(format!("invalid path {path:?}"))?;
    let last = path[idx + 1..].replace("~1", "/").replace("~0", "~");
    Ok((path[..idx].to_string(), last))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = split(path)?;
    match doc
        .pointer_mut(&parent)
        .ok_or(format!("path {parent:?} not found"))?
    {
        Value::Object(m) => {
            m.insert(last, value);
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
            } else {
                let i: usize = last
                    .parse()
                    .map_err(|_| format!("invalid index {last:?}"))?;
                if i > a.len() {
                    return Err(format!("index {i} out of range"));
                }
                a.insert(i, value);
            }
        }
        _ => return Err(format!("path {parent:?} is not a container")),
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split(path)?;
    match doc
        .pointer_mut(&parent)
        .ok_or(format!("path {parent:?} not found"))?
    {
        Value::Object(m) => m.remove(&last).ok_or(format!("path {path:?} not found")),
        Value::Array(a) => {
            let i: usize = last
                .parse()
                .map_err(|_| format!("invalid index {last:?}"))?;
            if i >= a.len() {
                return Err(format!("index {i} out of range"));
            }
            Ok(a.remove(i))
        }
        _ => Err(format!("path {parent:?} is not a container")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch() {
        let t = json!({"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2]});
        let p = json!({"a": null, "b": {"c": 5}, "l": [3]});
        assert_eq!(
            json_merge_patch(&t, &p),
            json!({"b": {"c": 5, "d": 3}, "l": [3]})
        );
    }

    #[test]
    fn strategic_merges_containers_by_name() {
        let t = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "a:1", "ports": [{"containerPort": 80, "name": "http"}]},
            {"name": "b", "image": "b:1"}
        ]}}}});
        let p = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
        "containers": [
            {"name": "a", "image": "a:2", "ports": [{"containerPort": 81}]},
            {"name": "b", "$patch": "delete"}
        ]}}}});
        let out = strategic_merge_patch(&t, &p);
        let cs = out
            .pointer("/spec/template/spec/containers")
            .unwrap()
            .as_array()
            .unwrap();
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0]["image"], "a:2");
        assert_eq!(
            cs[0]["ports"].as_array().unwrap().len(),
            2,
            "ports merge by containerPort"
        );
    }

    #[test]
    fn strategic_service_ports_and_finalizers() {
        let t = json!({"metadata": {"finalizers": ["a"]}, "spec": {"ports": [{"port": 80, "targetPort": 8080}], "selector": {"x": "y"}}});
        let p = json!({"metadata": {"finalizers": ["b"], "$deleteFromPrimitiveList/finalizers": ["a"]},
                       "spec": {"ports": [{"port": 80, "targetPort": 9090}], "selector": {"$patch": "replace", "z": "w"}}});
        let out = strategic_merge_patch(&t, &p);
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "targetPort": 9090}])
        );
        assert_eq!(out["spec"]["selector"], json!({"z": "w"}));
    }

    #[test]
    fn json_patch_ops() {
        let t = json!({"spec": {"replicas": 1, "l": [1, 2]}});
        let p = json!([
            {"op": "replace", "path": "/spec/replicas", "value": 3},
            {"op": "add", "path": "/spec/l/-", "value": 3},
            {"op": "remove", "path": "/spec/l/0"},
            {"op": "test", "path": "/spec/replicas", "value": 3}
        ]);
        assert_eq!(
            json_patch(&t, &p).unwrap(),
            json!({"spec": {"replicas": 3, "l": [2, 3]}})
        );
        assert!(json_patch(&t, &json!([{"op": "remove", "path": "/nope"}])).is_err());
        assert!(json_patch(&t, &json!({"op": "add"})).is_err());
    }
}
