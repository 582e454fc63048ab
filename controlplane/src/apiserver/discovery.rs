//! Discovery documents (`/api`, `/apis`, `/api/v1`, `/apis/<g>/<v>`), `/version`, a
//! minimal OpenAPI v3 index, and readiness.
//!
//! The OpenAPI v3 documents carry only what `kubectl apply` looks for: one PATCH operation
//! per kind advertising the `fieldValidation` parameter, so kubectl leaves validation to
//! the server (`fieldValidation=Strict`) and builds strategic merge patches from its own
//! built-in types.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use wk_api::Status;
use wk_api::resource::{self, RESOURCES, ResourceType};

use super::{ApiError, ApiState, json_response};

/// The Kubernetes version wk's API corresponds to. kubectl's version dispatcher picks its
/// client version from this, so it must name a real Kubernetes minor version.
pub const KUBE_MAJOR: &str = "1";
pub const KUBE_MINOR: &str = "32";

pub async fn version() -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "major": KUBE_MAJOR,
            "minor": KUBE_MINOR,
            "gitVersion": format!("v{KUBE_MAJOR}.{KUBE_MINOR}.0+wk-{}", env!("CARGO_PKG_VERSION")),
            "gitCommit": "",
            "gitTreeState": "clean",
            "buildDate": "2026-11-22T00:00:00Z",
            "goVersion": "rust",
            "compiler": "rustc",
            "platform": format!("{}/{}", std::env::consts::OS, if std::env::consts::ARCH == "x86_64" { "amd64" } else { std::env::consts::ARCH }),
        }),
    )
}

pub async fn readyz(State(state): State<ApiState>) -> Response {
    if state.store.raft.metrics().borrow().current_leader.is_some() {
        "ok".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no raft leader").into_response()
    }
}

pub async fn api_versions() -> Response {
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIVersions", "apiVersion": "v1", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]}),
    )
}

fn group_entry(group: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/v1"), "version": "v1"});
    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

pub async fn api_groups() -> Response {
    let groups: Vec<Value> = resource::groups().into_iter().map(group_entry).collect();
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
    )
}

pub async fn group(Path(group): Path<String>) -> Result<Response, ApiError> {
    if !resource::groups().contains(&group.as_str()) {
        return Err(Status::not_found_path(&format!("/apis/{group}")).into());
    }
    let mut g = group_entry(&group);
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Ok(json_response(StatusCode::OK, &g))
}

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn resource_list(group: &str, version: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let mut entry = json!({
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
            "kind": r.kind, "verbs": VERBS, "storageVersionHash": "",
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        out.push(entry);
        for sub in r.subresources {
            out.push(subresource_entry(r, sub));
        }
    }
    out
}

fn subresource_entry(r: &ResourceType, sub: &str) -> Value {
    let name = format!("{}/{sub}", r.plural);
    match sub {
        "scale" => {
            json!({"name": name, "singularName": "", "namespaced": r.namespaced, "group": "autoscaling",
                          "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]})
        }
        "log" => {
            json!({"name": name, "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]})
        }
        "exec" => {
            json!({"name": name, "singularName": "", "namespaced": true, "kind": "PodExecOptions", "verbs": ["create", "get"]})
        }
        "binding" => {
            json!({"name": name, "singularName": "", "namespaced": true, "kind": "Binding", "verbs": ["create"]})
        }
        "eviction" => {
            json!({"name": name, "singularName": "", "namespaced": true, "group": "policy", "version": "v1",
                             "kind": "Eviction", "verbs": ["create"]})
        }
        "finalize" => {
            json!({"name": name, "singularName": "", "namespaced": false, "kind": r.kind, "verbs": ["update"]})
        }
        _ => {
            json!({"name": name, "singularName": "", "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]})
        }
    }
}

pub async fn core_resources() -> Response {
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": resource_list("", "v1")}),
    )
}

pub async fn group_resources(
    Path((group, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let resources = resource_list(&group, &version);
    if resources.is_empty() {
        return Err(Status::not_found_path(&format!("/apis/{group}/{version}")).into());
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{group}/{version}"), "resources": resources}),
    ))
}

/// OpenAPI v2 is not served: kubectl only falls back to it when v3 is missing.
pub async fn openapi_v2() -> Response {
    ApiError(Status::not_found_path("/openapi/v2")).into_response()
}

fn gv_path(group: &str) -> String {
    if group.is_empty() {
        "api/v1".into()
    } else {
        format!("apis/{group}/v1")
    }
}

pub async fn openapi_v3() -> Response {
    let mut paths = serde_json::Map::new();
    let mut groups = vec![""];
    groups.extend(resource::groups());
    for g in groups {
        let p = gv_path(g);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}")}),
        );
    }
    json_response(StatusCode::OK, &json!({"paths": paths}))
}

/// `/openapi/v3/api/v1` and `/openapi/v3/apis/<g>/<v>`.
pub async fn openapi_v3_group(uri: axum::http::Uri) -> Result<Response, ApiError> {
    let rest = uri.path().trim_start_matches("/openapi/v3/");
    let (group, version) = match rest.split('/').collect::<Vec<_>>().as_slice() {
        ["api", v] => (String::new(), v.to_string()),
        ["apis", g, v] => (g.to_string(), v.to_string()),
        _ => return Err(Status::not_found_path(uri.path()).into()),
    };
    let mut paths = serde_json::Map::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let path = format!(
            "{}/{{name}}",
            r.collection_path(r.namespaced.then_some("{namespace}"))
        );
        paths.insert(
            path,
            json!({"patch": {
                "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
                "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
            }}),
        );
    }
    if paths.is_empty() {
        return Err(Status::not_found_path(uri.path()).into());
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"openapi": "3.0.0", "info": {"title": "wk", "version": env!("CARGO_PKG_VERSION")}, "paths": paths}),
    ))
}
