//! The Kubernetes `Status` object: how every API error is reported.
//!
//! `Status` is both the error type of API operations and its wire form, so the API server
//! returns it as-is and clients (wk, kubectl) print its message.

use serde::{Deserialize, Serialize};

use crate::resource::ResourceType;
use crate::validation::FieldError;

/// A Kubernetes `Status` (always a failure here; success responses carry objects).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    #[serde(default = "status_kind")]
    pub kind: String,
    #[serde(default = "v1")]
    pub api_version: String,
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
    #[serde(default)]
    pub code: u16,
}

fn status_kind() -> String {
    "Status".into()
}
fn v1() -> String {
    "v1".into()
}

/// Which object a failure is about, and the field-level causes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDetails {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u32>,
}

/// One cause of a failure, usually a field error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusCause {
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub field: String,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for Status {}

impl Status {
    /// A failure with a code, reason and message.
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Status {
            kind: status_kind(),
            api_version: v1(),
            metadata: Default::default(),
            status: "Failure".into(),
            message: message.into(),
            reason: reason.into(),
            details: None,
            code,
        }
    }

    fn with_details(mut self, rt: &ResourceType, name: &str) -> Self {
        self.details = Some(StatusDetails {
            name: name.to_string(),
            group: rt.group.to_string(),
            kind: rt.plural.to_string(),
            ..Default::default()
        });
        self
    }

    /// Qualified resource name as Kubernetes prints it (`deployments.apps`).
    fn qualified(rt: &ResourceType) -> String {
        if rt.group.is_empty() {
            rt.plural.to_string()
        } else {
            format!("{}.{}", rt.plural, rt.group)
        }
    }

    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        Status::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", Self::qualified(rt)),
        )
        .with_details(rt, name)
    }

    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        Status::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", Self::qualified(rt)),
        )
        .with_details(rt, name)
    }

    pub fn conflict(rt: &ResourceType, name: &str, why: &str) -> Self {
        Status::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                Self::qualified(rt)
            ),
        )
        .with_details(rt, name)
    }

    /// The standard optimistic-concurrency conflict.
    pub fn stale(rt: &ResourceType, name: &str) -> Self {
        Self::conflict(
            rt,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 Invalid with one cause per field error.
    pub fn invalid(rt: &ResourceType, name: &str, errors: &[FieldError]) -> Self {
        let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        let message = if list.len() == 1 {
            format!("{} \"{name}\" is invalid: {}", rt.kind, list[0])
        } else {
            format!("{} \"{name}\" is invalid: [{}]", rt.kind, list.join(", "))
        };
        let mut s = Status::new(422, "Invalid", message);
        s.details = Some(StatusDetails {
            name: name.to_string(),
            group: rt.group.to_string(),
            kind: rt.kind.to_string(),
            causes: errors
                .iter()
                .map(|e| StatusCause {
                    reason: e.kind.reason().to_string(),
                    message: e.to_string(),
                    field: e.field.clone(),
                })
                .collect(),
            retry_after_seconds: None,
        });
        s
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Status::new(400, "BadRequest", message)
    }

    pub fn unauthorized() -> Self {
        Status::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Status::new(403, "Forbidden", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Status::new(405, "MethodNotAllowed", message)
    }

    /// A watch or list continuation older than the retained history.
    pub fn gone(message: impl Into<String>) -> Self {
        Status::new(410, "Expired", message)
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Status::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/merge-patch+json, application/strategic-merge-patch+json, application/json-patch+json, application/vnd.kubernetes.protobuf (got {content_type:?})"
            ),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Status::new(500, "InternalError", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Status::new(503, "ServiceUnavailable", message)
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        Status::new(504, "Timeout", message)
    }

    pub fn not_found_path(path: &str) -> Self {
        Status::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::by_plural;
    use crate::validation::{FieldError, FieldErrorKind};

    #[test]
    fn not_found_message_and_wire_form() {
        let s = Status::not_found(by_plural("apps", "deployments").unwrap(), "web");
        assert_eq!(s.message, "deployments.apps \"web\" not found");
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["kind"], "Status");
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["code"], 404);
        assert_eq!(v["reason"], "NotFound");
        assert_eq!(v["details"]["kind"], "deployments");
    }

    #[test]
    fn invalid_lists_causes() {
        let errs = vec![FieldError {
            field: "spec.replicas".into(),
            kind: FieldErrorKind::Invalid,
            value: Some("-1".into()),
            detail: "must be greater than or equal to 0".into(),
        }];
        let s = Status::invalid(by_plural("apps", "deployments").unwrap(), "web", &errs);
        assert_eq!(s.code, 422);
        assert_eq!(
            s.message,
            "Deployment \"web\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0"
        );
        let cause = &s.details.unwrap().causes[0];
        assert_eq!(cause.field, "spec.replicas");
        assert_eq!(cause.reason, "FieldValueInvalid");
    }
}
