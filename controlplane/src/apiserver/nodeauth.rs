//! The node authorizer: what one node agent's credential may do, as Kubernetes'
//! NodeRestriction and Node authorizer allow a kubelet.
//!
//! - its own Node and its own Lease (in `kube-node-lease`): create, read, write; other
//!   Nodes: read;
//! - pods: read; status updates and deletion only of pods bound to it;
//! - ConfigMaps and Secrets: get by name, and only those a pod bound to it references
//!   (volumes, env, envFrom, imagePullSecrets); no list or watch;
//! - Services, Endpoints, Namespaces: read; Events: create and read.

use axum::body::Body;
use axum::extract::Request;
use axum::http::Method;
use serde_json::Value;

use super::{ApiError, ApiState, Target, handlers};
use wk_api::Status;

fn deny(node: &str, what: String) -> ApiError {
    ApiError(Status::forbidden(format!("node {node:?} may not {what}")))
}

/// Whether `pod` references the ConfigMap or Secret `name` (`kind`: "configmaps" | "secrets").
fn pod_references(pod: &Value, kind: &str, name: &str) -> bool {
    let secret = kind == "secrets";
    let s = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).map(String::from);
    let mut refs: Vec<String> = Vec::new();
    for vol in pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        refs.extend(if secret {
            s(vol, "/secret/secretName")
        } else {
            s(vol, "/configMap/name")
        });
        for src in vol
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            refs.extend(if secret {
                s(src, "/secret/name")
            } else {
                s(src, "/configMap/name")
            });
        }
    }
    for list in ["/spec/containers", "/spec/initContainers"] {
        for c in pod
            .pointer(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
                refs.extend(if secret {
                    s(e, "/valueFrom/secretKeyRef/name")
                } else {
                    s(e, "/valueFrom/configMapKeyRef/name")
                });
            }
            for e in c
                .get("envFrom")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                refs.extend(if secret {
                    s(e, "/secretRef/name")
                } else {
                    s(e, "/configMapRef/name")
                });
            }
        }
    }
    if secret {
        refs.extend(
            pod.pointer("/spec/imagePullSecrets")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|x| s(x, "/name")),
        );
    }
    refs.iter().any(|r| r == name)
}

/// The name in a create's body (the body is read and put back).
async fn body_name(req: Request) -> Result<(String, Request), ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 16 << 20)
        .await
        .map_err(|e| ApiError(Status::bad_request(e.to_string())))?;
    let name = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| {
            v.pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .unwrap_or_default();
    Ok((name, Request::from_parts(parts, Body::from(bytes))))
}

/// Checks a request of node `node`; hands back the request (its body may have been read).
pub(crate) async fn authorize(
    state: &ApiState,
    target: &Target,
    node: &str,
    req: Request,
) -> Result<Request, ApiError> {
    let method = req.method().clone();
    let read = method == Method::GET;
    let verb = method.as_str().to_lowercase();
    let plural = target.rt.plural;
    let name = target.name.as_deref();
    match plural {
        "nodes" | "leases" => {
            if plural == "leases" && target.namespace.as_deref() != Some("kube-node-lease") {
                return Err(deny(node, format!("{verb} leases outside kube-node-lease")));
            }
            if read && (plural == "nodes" || name == Some(node)) {
                return Ok(req);
            }
            if method == Method::POST && name.is_none() {
                let (body, req) = body_name(req).await?;
                return if body == node {
                    Ok(req)
                } else {
                    Err(deny(node, format!("create {plural} {body:?}")))
                };
            }
            if name == Some(node) {
                return Ok(req);
            }
            Err(deny(
                node,
                format!("{verb} {plural} {:?}", name.unwrap_or("")),
            ))
        }
        "pods" => {
            // Reading pods and their status, yes; their logs and exec, which reach into
            // any node's containers (and exec answers a GET too), no.
            if read && matches!(target.subresource.as_deref(), None | Some("status")) {
                return Ok(req);
            }
            let Some(pod_name) = name else {
                return Err(deny(node, format!("{verb} pods")));
            };
            let writable = matches!(
                (&method, target.subresource.as_deref()),
                (&Method::PATCH | &Method::PUT, Some("status")) | (&Method::DELETE, None)
            );
            if !writable {
                return Err(deny(
                    node,
                    format!("{verb} pods {pod_name:?} (only their status and deletion)"),
                ));
            }
            let key = target.rt.key(target.namespace.as_deref(), pod_name);
            let pod = handlers::load(state, &key, true).await?;
            match pod {
                Some(p) if p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node) => {
                    Ok(req)
                }
                // Let the handler answer 404 for a pod that does not exist.
                None => Ok(req),
                Some(_) => Err(deny(
                    node,
                    format!("{verb} pod {pod_name:?}: it is not bound to this node"),
                )),
            }
        }
        "configmaps" | "secrets" => {
            let Some(obj) = name.filter(|_| read && target.subresource.is_none()) else {
                return Err(deny(node, format!("{verb} {plural} (only get, by name)")));
            };
            let ns = target.namespace.clone().unwrap_or_default();
            let prefix = lookup_pods().key_prefix(Some(&ns));
            let node_owned = node.to_string();
            let kind = plural.to_string();
            let obj_owned = obj.to_string();
            let referenced = state
                .store
                .read(move |sm| {
                    let (_, items, _) = sm.list(&prefix, None, 0)?;
                    // Only pods that mention the name can reference it: skip parsing the rest.
                    Ok(items
                        .iter()
                        .filter(|(_, text)| text.contains(obj_owned.as_str()))
                        .any(|(_, text)| {
                            serde_json::from_str::<Value>(text).is_ok_and(|p| {
                                p.pointer("/spec/nodeName").and_then(Value::as_str)
                                    == Some(node_owned.as_str())
                                    && pod_references(&p, &kind, &obj_owned)
                            })
                        }))
                })
                .await?;
            if referenced {
                Ok(req)
            } else {
                Err(deny(
                    node,
                    format!("get {plural} {obj:?}: no pod bound to this node references it"),
                ))
            }
        }
        "services" | "endpoints" | "namespaces" if read => Ok(req),
        "events" if read || method == Method::POST => Ok(req),
        _ => Err(deny(node, format!("{verb} {plural}"))),
    }
}

fn lookup_pods() -> &'static wk_api::ResourceType {
    wk_api::resource::lookup("pods").expect("pods registered")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_from_volumes_env_and_pull_secrets() {
        let pod = json!({"spec": {"volumes": [{"configMap": {"name": "cm-vol"}}, {"secret": {"secretName": "s-vol"}},
                {"projected": {"sources": [{"secret": {"name": "s-proj"}}]}}],
            "imagePullSecrets": [{"name": "pull"}],
            "containers": [{"env": [{"valueFrom": {"configMapKeyRef": {"name": "cm-env"}}}, {"valueFrom": {"secretKeyRef": {"name": "s-env"}}}],
                "envFrom": [{"configMapRef": {"name": "cm-from"}}]}]}});
        for cm in ["cm-vol", "cm-env", "cm-from"] {
            assert!(pod_references(&pod, "configmaps", cm), "{cm}");
            assert!(!pod_references(&pod, "secrets", cm), "{cm}");
        }
        for s in ["s-vol", "s-proj", "s-env", "pull"] {
            assert!(pod_references(&pod, "secrets", s), "{s}");
        }
        assert!(!pod_references(&pod, "secrets", "other"));
    }
}
