//! Accessors for `metadata` on untyped (JSON) objects, used where code handles every kind
//! alike: the API server, the store and the CLI.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Read and write helpers over an object's `metadata`.
pub trait ObjectMetaExt {
    fn meta(&self) -> Option<&Map<String, Value>>;
    fn meta_mut(&mut self) -> &mut Map<String, Value>;

    fn meta_str(&self, field: &str) -> Option<&str> {
        self.meta()?.get(field)?.as_str()
    }
    fn name(&self) -> Option<&str> {
        self.meta_str("name").filter(|s| !s.is_empty())
    }
    fn namespace(&self) -> Option<&str> {
        self.meta_str("namespace").filter(|s| !s.is_empty())
    }
    fn uid(&self) -> Option<&str> {
        self.meta_str("uid")
    }
    /// The resourceVersion as a revision number (0 when absent or not a number).
    fn resource_version(&self) -> u64 {
        self.meta_str("resourceVersion")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
    fn labels(&self) -> BTreeMap<String, String> {
        string_map(self.meta().and_then(|m| m.get("labels")))
    }
    fn finalizers(&self) -> Vec<String> {
        self.meta()
            .and_then(|m| m.get("finalizers"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }
    fn deletion_timestamp(&self) -> Option<&str> {
        self.meta_str("deletionTimestamp")
    }
    fn set_meta(&mut self, field: &str, value: impl Into<Value>) {
        self.meta_mut().insert(field.to_string(), value.into());
    }
    fn remove_meta(&mut self, field: &str) {
        self.meta_mut().remove(field);
    }
}

impl ObjectMetaExt for Value {
    fn meta(&self) -> Option<&Map<String, Value>> {
        self.get("metadata")?.as_object()
    }
    fn meta_mut(&mut self) -> &mut Map<String, Value> {
        if !self.is_object() {
            *self = Value::Object(Map::new());
        }
        let obj = self.as_object_mut().expect("just made an object");
        let meta = obj
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if !meta.is_object() {
            *meta = Value::Object(Map::new());
        }
        meta.as_object_mut().expect("just made an object")
    }
}

/// A JSON object of strings as a map (non-string values are skipped).
pub fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Looks up a dotted field path (`spec.nodeName`) as a string, for field selectors and
/// table columns. Numbers and booleans are rendered; objects are not.
pub fn field_str(obj: &Value, path: &str) -> Option<String> {
    let mut cur = obj;
    for part in path.split('.') {
        cur = cur.get(part)?;
    }
    match cur {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accessors() {
        let mut v =
            json!({"metadata": {"name": "a", "resourceVersion": "42", "labels": {"x": "y"}}});
        assert_eq!(v.name(), Some("a"));
        assert_eq!(v.resource_version(), 42);
        assert_eq!(v.labels().get("x").map(String::as_str), Some("y"));
        v.set_meta("namespace", "ns");
        assert_eq!(v.namespace(), Some("ns"));
        let mut empty = json!(null);
        empty.set_meta("name", "b");
        assert_eq!(empty.name(), Some("b"));
        assert_eq!(
            field_str(&json!({"spec": {"replicas": 3}}), "spec.replicas").as_deref(),
            Some("3")
        );
    }
}
