//! Decoding manifests: YAML/JSON documents → typed check → normalised JSON.
//!
//! An object is checked by decoding it into its `k8s-openapi` type (type errors name the
//! field path) and serialising it back; fields of the input that do not survive the round
//! trip are unknown. Unknown fields are an error in strict mode and a warning otherwise,
//! as the Kubernetes API server does for `fieldValidation=Strict|Warn`.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::k8s::api::apps::v1 as apps;
use crate::k8s::api::batch::v1 as batch;
use crate::k8s::api::coordination::v1 as coordination;
use crate::k8s::api::core::v1 as core;
use crate::resource::{self, ResourceType};
use crate::validation::{self, FieldError, FieldErrorKind};

/// Why a document could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("invalid YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("document {index}: {message}")]
    Document { index: usize, message: String },
}

/// Splits a multi-document YAML (or JSON) text into objects. Empty documents are skipped
/// and `kind: List` documents are expanded into their items, as kubectl does.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, DecodeError> {
    let mut out = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value: Value = Value::deserialize_yaml(doc)?;
        match value {
            Value::Null => continue,
            Value::Object(ref map) => {
                let is_list = map.get("kind").and_then(Value::as_str).is_some_and(|k| {
                    k == "List" || k.ends_with("List") && map.contains_key("items")
                });
                if let (true, Some(Value::Array(items))) = (is_list, map.get("items")) {
                    out.extend(items.iter().cloned());
                    continue;
                }
                out.push(value);
            }
            _ => {
                return Err(DecodeError::Document {
                    index: index + 1,
                    message: "expected an object with apiVersion and kind".into(),
                });
            }
        }
    }
    Ok(out)
}

trait DeserializeYaml {
    fn deserialize_yaml(doc: serde_yaml::Deserializer<'_>) -> Result<Value, serde_yaml::Error>;
}

impl DeserializeYaml for Value {
    fn deserialize_yaml(doc: serde_yaml::Deserializer<'_>) -> Result<Value, serde_yaml::Error> {
        let yaml: serde_yaml::Value = serde::Deserialize::deserialize(doc)?;
        // Round-trip through serde_yaml::Value so that YAML-only forms (tags, non-string
        // keys) become JSON-compatible values or a clear error.
        serde_json::to_value(yaml).map_err(serde::de::Error::custom)
    }
}

/// The resource type named by an object's `apiVersion` and `kind`.
pub fn resource_of(obj: &Value) -> Result<&'static ResourceType, FieldError> {
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    if api_version.is_empty() {
        return Err(FieldError::required("apiVersion", ""));
    }
    if kind.is_empty() {
        return Err(FieldError::required("kind", ""));
    }
    resource::by_kind(api_version, kind).ok_or_else(|| FieldError {
        field: "kind".into(),
        kind: FieldErrorKind::NotSupported,
        value: Some(format!("\"{kind}\"")),
        detail: format!("no kind \"{kind}\" is registered for version \"{api_version}\""),
    })
}

/// The result of checking one object against its type.
#[derive(Debug)]
pub struct Checked {
    /// The object as its type serialises it (unknown fields dropped, forms normalised).
    pub object: Value,
    /// Paths of fields the type does not know (`spec.replicaz`).
    pub unknown_fields: Vec<String>,
}

fn check_as<T: DeserializeOwned + Serialize>(
    obj: &Value,
    validate: impl Fn(&T) -> Vec<FieldError>,
) -> Result<(Checked, Vec<FieldError>), FieldError> {
    let typed: T = serde_path_to_error::deserialize(obj).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        FieldError {
            field: if path == "." { String::new() } else { path },
            kind: FieldErrorKind::Invalid,
            value: None,
            detail: inner,
        }
    })?;
    let errors = validate(&typed);
    let object = serde_json::to_value(&typed).map_err(|e| FieldError {
        field: String::new(),
        kind: FieldErrorKind::Invalid,
        value: None,
        detail: e.to_string(),
    })?;
    let mut unknown_fields = Vec::new();
    diff_unknown(obj, &object, "", &mut unknown_fields);
    Ok((
        Checked {
            object,
            unknown_fields,
        },
        errors,
    ))
}

/// Decodes `obj` as the type of `rt`, runs the kind's validation and reports unknown
/// fields. A type error (a string where a number belongs) is returned as the only error.
pub fn check(rt: &ResourceType, obj: &Value) -> Result<(Checked, Vec<FieldError>), FieldError> {
    match rt.kind {
        "Namespace" => check_as::<core::Namespace>(obj, validation::validate_namespace),
        "Node" => check_as::<core::Node>(obj, validation::validate_node),
        "Pod" => check_as::<core::Pod>(obj, validation::validate_pod),
        "Service" => check_as::<core::Service>(obj, validation::validate_service),
        "Endpoints" => check_as::<core::Endpoints>(obj, validation::validate_endpoints),
        "ConfigMap" => check_as::<core::ConfigMap>(obj, validation::validate_config_map),
        "Secret" => check_as::<core::Secret>(obj, validation::validate_secret),
        "ServiceAccount" => {
            check_as::<core::ServiceAccount>(obj, validation::validate_service_account)
        }
        "Event" => check_as::<core::Event>(obj, validation::validate_event),
        "Deployment" => check_as::<apps::Deployment>(obj, validation::validate_deployment),
        "ReplicaSet" => check_as::<apps::ReplicaSet>(obj, validation::validate_replica_set),
        "DaemonSet" => check_as::<apps::DaemonSet>(obj, validation::validate_daemon_set),
        "Job" => check_as::<batch::Job>(obj, validation::validate_job),
        "CronJob" => check_as::<batch::CronJob>(obj, validation::validate_cron_job),
        "Lease" => check_as::<coordination::Lease>(obj, validation::validate_lease),
        other => Err(FieldError {
            field: "kind".into(),
            kind: FieldErrorKind::NotSupported,
            value: Some(format!("\"{other}\"")),
            detail: "kind is not served by wk".into(),
        }),
    }
}

/// Collects the paths present (and non-null) in `input` but absent from `typed`.
fn diff_unknown(input: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    Some(t) => diff_unknown(v, t, &p, out),
                    None if v.is_null() => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, t)) in a.iter().zip(b).enumerate() {
                diff_unknown(v, t, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn multi_document_yaml_and_lists() {
        let docs = parse_documents(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Secret, metadata: {name: b}}\n",
        )
        .unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1]["kind"], "Secret");
        assert!(parse_documents("- 1\n- 2\n").is_err());
        assert!(parse_documents("a: [").is_err());
    }

    #[test]
    fn unknown_fields_are_reported_with_paths() {
        let obj = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "colour": "red"},
            "spec": {
                "replicaz": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "x.wasm", "imagePullPolice": "x"}]}
                }
            }
        });
        let rt = resource_of(&obj).unwrap();
        let (checked, errors) = check(rt, &obj).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            checked.unknown_fields,
            vec![
                "metadata.colour",
                "spec.replicaz",
                "spec.template.spec.containers[0].imagePullPolice"
            ]
        );
        assert!(checked.object["spec"].get("replicaz").is_none());
    }

    #[test]
    fn type_errors_name_the_field() {
        let obj = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"}, "spec": {"replicas": "three"}});
        let err = check(resource_of(&obj).unwrap(), &obj).unwrap_err();
        assert_eq!(err.field, "spec.replicas");
    }

    #[test]
    fn unknown_kind_is_not_supported() {
        let err = resource_of(&json!({"apiVersion": "v1", "kind": "Widget"})).unwrap_err();
        assert!(
            err.to_string().contains("no kind \"Widget\" is registered"),
            "{err}"
        );
        let err = resource_of(&json!({"kind": "Pod"})).unwrap_err();
        assert_eq!(err.field, "apiVersion");
    }
}
