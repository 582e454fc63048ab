//! The Kubernetes-shaped REST API over the store.
//!
//! Paths follow Kubernetes: `/api/v1/...` for the core group, `/apis/<group>/<version>/...`
//! for the others, with `namespaces/<ns>/` for namespaced resources and `/<sub>` for
//! subresources. Every write becomes a store command; reads are linearizable unless the
//! client asks for `resourceVersion=0`.

mod defaults;
mod discovery;
mod handlers;
pub mod ipalloc;
pub(crate) use handlers::{bound_to, stamp_new};
mod nodeauth;
mod patch;
mod protobuf;
mod table;
mod watch;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use wk_api::Status;
use wk_api::resource::{self, ResourceType};

use crate::auth::{Identity, Tokens};
use crate::store::{Store, StoreError};

pub use patch::{json_merge_patch, strategic_merge_patch};

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    pub tokens: Arc<Tokens>,
    /// Where Service cluster IPs come from.
    pub service_cidr: ipalloc::ServiceCidr,
}

/// An error response: a Kubernetes `Status` with its HTTP code.
pub struct ApiError(pub Status);

impl From<Status> for ApiError {
    fn from(s: Status) -> Self {
        ApiError(s)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotLeader { .. } => ApiError(Status::unavailable(e.to_string())),
            StoreError::Unknown(_) => ApiError(Status::timeout(e.to_string())),
            StoreError::Fenced { .. } => ApiError(Status::new(409, "Conflict", e.to_string())),
            other => ApiError(Status::internal(other.to_string())),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.0.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json_response(code, &serde_json::to_value(&self.0).unwrap_or_default())
    }
}

pub(crate) fn json_response(code: StatusCode, value: &serde_json::Value) -> Response {
    let mut resp = (code, value.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// What a resource path names.
#[derive(Debug, Clone)]
pub struct Target {
    pub rt: &'static ResourceType,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// Parses the part of a path after `/api/v1/` or `/apis/<g>/<v>/`.
fn parse_target(group: &str, version: &str, rest: &[&str]) -> Option<Target> {
    let lookup = |plural: &str| resource::by_plural(group, plural).filter(|r| r.version == version);
    let (ns, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..] if lookup(plural).is_some_and(|r| r.namespaced) => {
            (Some(ns.to_string()), [&[*plural][..], tail].concat())
        }
        _ => (None, rest.to_vec()),
    };
    let rt = lookup(rest.first()?)?;
    if ns.is_none() && rt.namespaced && rest.len() > 1 {
        return None;
    }
    let name = rest.get(1).map(|s| s.to_string());
    let sub = rest.get(2).map(|s| s.to_string());
    if rest.len() > 3 {
        return None;
    }
    if let Some(s) = &sub {
        if !rt.subresources.contains(&s.as_str()) {
            return None;
        }
    }
    Some(Target {
        rt,
        namespace: ns,
        name,
        subresource: sub,
    })
}

async fn authenticate(State(state): State<ApiState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let public = matches!(path, "/healthz" | "/livez" | "/readyz" | "/version")
        || path.starts_with("/raft/");
    if !public {
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(wk_api::auth::bearer);
        match token.and_then(|t| state.tokens.identify(t)) {
            Some(id) => {
                req.extensions_mut().insert(id);
            }
            None => return ApiError(Status::unauthorized()).into_response(),
        }
    }
    next.run(req).await
}

/// Routes a resource request by method and target.
async fn dispatch(State(state): State<ApiState>, req: Request) -> Response {
    let Some(identity) = req.extensions().get::<Identity>().cloned() else {
        return ApiError(Status::unauthorized()).into_response();
    };
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let target = match segments.as_slice() {
        ["api", "v1", rest @ ..] if !rest.is_empty() => parse_target("", "v1", rest),
        ["apis", group, version, rest @ ..] if !rest.is_empty() => {
            parse_target(group, version, rest)
        }
        _ => None,
    };
    let Some(target) = target else {
        return ApiError(Status::not_found_path(&path)).into_response();
    };
    let req = match &identity {
        Identity::Admin => req,
        Identity::Join => {
            return ApiError(Status::forbidden(
                "the node join token only obtains a node credential (POST /wk/v1/nodecredentials/<node name>)",
            ))
            .into_response()
        }
        Identity::Peer => {
            return ApiError(Status::forbidden(
                "the peer token is for server-to-server calls (/raft, /wk/v1/cluster)",
            ))
            .into_response()
        }
        Identity::Node(node) => match nodeauth::authorize(&state, &target, node, req).await {
            Ok(req) => req,
            Err(e) => return e.into_response(),
        },
    };
    let method = req.method().clone();
    let result = match (
        &method,
        target.name.is_some(),
        target.subresource.as_deref(),
    ) {
        (&Method::GET, false, _) => handlers::list_or_watch(state, target, req).await,
        (&Method::POST, false, _) => handlers::create(state, target, req).await,
        (&Method::DELETE, false, _) => handlers::delete_collection(state, target, req).await,
        (&Method::GET, true, None | Some("status")) => handlers::get(state, target, req).await,
        (&Method::GET, true, Some("scale")) => handlers::get_scale(state, target, req).await,
        (&Method::PUT, true, Some("scale")) | (&Method::PATCH, true, Some("scale")) => {
            handlers::update_scale(state, target, req).await
        }
        (&Method::PUT, true, None | Some("status") | Some("finalize")) => {
            handlers::update(state, target, req).await
        }
        (&Method::PATCH, true, None | Some("status")) => handlers::patch(state, target, req).await,
        (&Method::DELETE, true, None) => handlers::delete(state, target, req).await,
        (&Method::POST, true, Some("binding")) => handlers::bind(state, target, req).await,
        (&Method::POST, true, Some("eviction")) if target.rt.kind == "Pod" => {
            handlers::evict(state, target, req).await
        }
        (&Method::GET, true, Some("log")) => handlers::logs(state, target, req).await,
        (&Method::POST | &Method::GET, true, Some("exec")) => {
            handlers::exec(state, target, req).await
        }
        _ => Err(ApiError(Status::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method} {path})"
        )))),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Who a caller is, in Kubernetes' terms.
fn user_info(identity: &Identity) -> serde_json::Value {
    let (name, group) = match identity {
        Identity::Admin => ("wk-admin".to_string(), "system:masters"),
        Identity::Node(node) => (format!("system:node:{node}"), "system:nodes"),
        Identity::Join => ("wk-node-join".to_string(), "system:bootstrappers"),
        Identity::Peer => ("wk-peer".to_string(), "wk:servers"),
    };
    serde_json::json!({"username": name, "groups": [group, "system:authenticated"]})
}

/// `kubectl auth can-i`: the admin may do anything; every other credential is limited to
/// its own purpose (a node's to what its agent needs, checked per request), so a review
/// answers no for it, saying why.
async fn self_subject_access_review(req: Request) -> Response {
    review(req, "SelfSubjectAccessReview", |admin| {
        if admin {
            serde_json::json!({"allowed": true, "reason": "the admin credential may do anything"})
        } else {
            serde_json::json!({"allowed": false, "reason": "only the admin credential is reviewed; node credentials are limited to what their agent needs"})
        }
    })
    .await
}

/// `kubectl auth can-i --list`: everything for the admin; nothing listed for other
/// credentials (their limits are checked per request).
async fn self_subject_rules_review(req: Request) -> Response {
    review(req, "SelfSubjectRulesReview", |admin| {
        if admin {
            serde_json::json!({"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}], "incomplete": false})
        } else {
            serde_json::json!({"resourceRules": [], "nonResourceRules": [], "incomplete": true,
                "evaluationError": "only the admin credential is reviewed"})
        }
    })
    .await
}

/// An authorization review of kind `kind`: the request's object back, with the `status`
/// `answer` gives for whether the caller is the admin.
async fn review(
    req: Request,
    kind: &str,
    answer: impl FnOnce(bool) -> serde_json::Value,
) -> Response {
    let admin = matches!(req.extensions().get::<Identity>(), Some(Identity::Admin));
    let (mut review, _) = match handlers::read_body(req).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    review["status"] = answer(admin);
    review["apiVersion"] = "authorization.k8s.io/v1".into();
    review["kind"] = kind.into();
    json_response(StatusCode::CREATED, &review)
}

/// `kubectl auth whoami`.
async fn self_subject_review(req: Request) -> Response {
    let Some(identity) = req.extensions().get::<Identity>().cloned() else {
        return ApiError(Status::unauthorized()).into_response();
    };
    let body = serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
        "metadata": {}, "status": {"userInfo": user_info(&identity)}});
    json_response(StatusCode::CREATED, &body)
}

/// `POST /wk/v1/nodecredentials/{name}`: exchanges the node join token (or the admin
/// token) for the credential of node `name`.
async fn node_credentials(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    match req.extensions().get::<Identity>() {
        Some(Identity::Join | Identity::Admin) => {}
        _ => {
            return ApiError(Status::forbidden(
                "node credentials are issued for the node join token",
            ))
            .into_response();
        }
    }
    let errors = wk_api::validation::dns1123_subdomain_errors(&name);
    if !errors.is_empty() {
        return ApiError(Status::bad_request(format!(
            "invalid node name {name:?}: {}",
            errors.join("; ")
        )))
        .into_response();
    }
    let body = serde_json::json!({"kind": "NodeCredential", "apiVersion": "wk.dev/v1", "nodeName": name, "token": state.tokens.node_credential(&name)});
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn health() -> &'static str {
    "ok"
}

/// The header fencing a request's writes to a Raft term (see `store::FENCE`).
pub const FENCE_HEADER: &str = "x-wk-fence-term";

/// Runs the request in a fence scope when it carries `x-wk-fence-term`.
async fn fence(req: Request, next: middleware::Next) -> Response {
    let term = req
        .headers()
        .get(FENCE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match term {
        Some(t) => crate::store::FENCE.scope(t, next.run(req)).await,
        None => next.run(req).await,
    }
}

/// The API router (without the Raft RPC routes).
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/livez", get(health))
        .route("/readyz", get(discovery::readyz))
        .route("/version", get(discovery::version))
        .route("/api", get(discovery::api_versions))
        .route("/apis", get(discovery::api_groups))
        .route("/api/v1", get(discovery::core_resources))
        .route("/apis/{group}", get(discovery::group))
        .route("/apis/{group}/{version}", get(discovery::group_resources))
        .route("/openapi/v2", get(discovery::openapi_v2))
        .route("/openapi/v3", get(discovery::openapi_v3))
        .route("/openapi/v3/{*rest}", get(discovery::openapi_v3_group))
        .route(
            "/wk/v1/nodecredentials/{name}",
            axum::routing::post(node_credentials),
        )
        .route(
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            axum::routing::post(self_subject_access_review),
        )
        .route(
            "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
            axum::routing::post(self_subject_rules_review),
        )
        .route(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            axum::routing::post(self_subject_review),
        )
        .fallback(dispatch)
        .layer(middleware::from_fn(fence))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = parse_target(
            "",
            "v1",
            &["namespaces", "default", "pods", "web", "status"],
        )
        .unwrap();
        assert_eq!(
            (t.rt.kind, t.namespace.as_deref(), t.name.as_deref()),
            ("Pod", Some("default"), Some("web"))
        );
        assert_eq!(t.subresource.as_deref(), Some("status"));
        let t = parse_target("", "v1", &["namespaces", "default"]).unwrap();
        assert_eq!(
            (t.rt.kind, t.name.as_deref(), t.namespace),
            ("Namespace", Some("default"), None)
        );
        let t = parse_target("", "v1", &["namespaces", "x", "status"]).unwrap();
        assert_eq!(
            (t.rt.kind, t.subresource.as_deref()),
            ("Namespace", Some("status"))
        );
        let t = parse_target("", "v1", &["pods"]).unwrap();
        assert!(t.namespace.is_none() && t.name.is_none());
        assert!(parse_target("", "v1", &["pods", "x"]).is_none());
        assert!(
            parse_target(
                "apps",
                "v1",
                &["namespaces", "a", "deployments", "b", "nope"]
            )
            .is_none()
        );
        assert!(parse_target("apps", "v2", &["deployments"]).is_none());
        let t = parse_target(
            "apps",
            "v1",
            &["namespaces", "a", "deployments", "b", "scale"],
        )
        .unwrap();
        assert_eq!(t.subresource.as_deref(), Some("scale"));
    }
}
