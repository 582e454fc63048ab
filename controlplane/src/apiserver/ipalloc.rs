//! Service address allocation, as kube-apiserver's IP and port allocators do: a new
//! Service gets a `clusterIP` from the service range (default `127.240.0.0/16`, which on
//! one Linux host is local without any setup) and, for `NodePort`, a node port per port
//! from 30000–32767. Each allocation is a key in the store (`/registry/wk/serviceips/<ip>`,
//! `/registry/wk/servicenodeports/<proto>/<port>`) written with "must not exist", so two
//! API servers can never hand out the same address. Updates reserve the node ports a
//! Service names anew and release those it drops (all of them when it stops being
//! NodePort); deleting the Service releases what it holds. A key is released only by the
//! Service it was reserved for.

use std::net::Ipv4Addr;

use rand::Rng;
use serde_json::{Value, json};
use wk_api::ResourceType;
use wk_api::Status;
use wk_api::validation::FieldError;

use super::{ApiError, ApiState};
use crate::store::types::{Op, OpError, Precondition};

const IP_PREFIX: &str = "/registry/wk/serviceips/";
const PORT_PREFIX: &str = "/registry/wk/servicenodeports/";
const NODE_PORTS: (u16, u16) = (30000, 32767);

/// The service IP range.
pub type ServiceCidr = wk_api::net::Cidr;

/// The default service range: local on one Linux host, outside the pods' 127.64–127.191.
pub fn default_service_cidr() -> ServiceCidr {
    ServiceCidr::new(Ipv4Addr::new(127, 240, 0, 0), 16)
}

fn invalid(rt: &ResourceType, name: &str, field: &str, value: &str, detail: &str) -> ApiError {
    ApiError(Status::invalid(
        rt,
        name,
        &[FieldError::invalid(field, value.to_string(), detail)],
    ))
}

/// Writes an allocation key; `Ok(false)` if it is taken.
async fn reserve_key(state: &ApiState, key: String, owner: &str) -> Result<bool, ApiError> {
    let op = Op::Put {
        key,
        object: json!({"service": owner}).to_string(),
        precondition: Precondition::Absent,
    };
    match state.store.write_one(op).await? {
        Ok(_) => Ok(true),
        Err(OpError::AlreadyExists) => Ok(false),
        Err(e) => Err(ApiError(Status::internal(e.to_string()))),
    }
}

async fn taken(state: &ApiState, prefix: &'static str) -> Result<Vec<String>, ApiError> {
    let (_, items, _) = state.store.read(move |sm| sm.list(prefix, None, 0)).await?;
    Ok(items
        .into_iter()
        .map(|(k, _)| k[prefix.len()..].to_string())
        .collect())
}

/// The allocation keys a Service holds.
fn keys_of(svc: &Value) -> Vec<String> {
    let mut keys = Vec::new();
    if let Some(ip) = svc
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .filter(|ip| ip.parse::<Ipv4Addr>().is_ok())
    {
        keys.push(format!("{IP_PREFIX}{ip}"));
    }
    for p in svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(np) = p.get("nodePort").and_then(Value::as_i64) {
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            keys.push(format!("{PORT_PREFIX}{proto}/{np}"));
        }
    }
    keys
}

/// `<namespace>/<name>`: whom an allocation key says holds it.
fn owner_of(svc: &Value) -> String {
    format!(
        "{}/{}",
        svc.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or(""),
        svc.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
    )
}

/// Releases what a deleted Service held: only the keys reserved for it (a Service may
/// name a port another one holds, e.g. an ExternalName one with a nodePort).
pub async fn release(state: &ApiState, svc: &Value) {
    release_keys(state, &owner_of(svc), keys_of(svc)).await;
}

async fn release_keys(state: &ApiState, owner: &str, keys: Vec<String>) {
    let mut ops = Vec::new();
    for key in keys {
        let k = key.clone();
        let Ok(Some(text)) = state.store.read(move |sm| sm.get(&k)).await else {
            continue;
        };
        let held: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if held.get("service").and_then(Value::as_str) != Some(owner) {
            continue;
        }
        let revision = held
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|r| r.parse().ok());
        ops.push(Op::Delete {
            key,
            precondition: revision.map_or(Precondition::None, Precondition::Revision),
        });
    }
    if !ops.is_empty()
        && let Err(e) = state.store.write(ops).await
    {
        tracing::warn!(error = %e, "releasing service addresses failed");
    }
}

/// Reserves what a Service written over `current` (`Value::Null` when it is created)
/// needs: a Service without a cluster IP (new, or an ExternalName alias that becomes
/// another type) gets the one it names (reserved, or refused if outside the range or
/// taken) or a free one; node ports it names anew are reserved (refused if another
/// Service holds them), ports of a NodePort Service that have none are given one, and a
/// Service that is not NodePort or LoadBalancer keeps none, so every node port a stored
/// Service names is its own. Returns the keys reserved here, to release if the write
/// fails ([`release_reserved`]; on error none stays reserved); [`release_dropped`] frees
/// what the written Service no longer names.
pub async fn reserve_for(
    state: &ApiState,
    rt: &ResourceType,
    current: &Value,
    next: &mut Value,
) -> Result<Vec<String>, ApiError> {
    let kind = next
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    let owner = owner_of(next);
    let name = next
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let had_ip = current
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .is_some_and(|ip| !ip.is_empty());
    let had: std::collections::HashSet<String> = keys_of(current).into_iter().collect();
    let node_ported = matches!(kind.as_str(), "NodePort" | "LoadBalancer");
    if !node_ported && let Some(Value::Array(ports)) = next.pointer_mut("/spec/ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            p.remove("nodePort");
        }
    }
    let mut held = Vec::new();
    let result = async {
        if kind != "ExternalName" && !had_ip {
            cluster_ip(state, rt, (&name, &owner), next, &mut held).await?;
        }
        if node_ported {
            node_ports(state, rt, (&name, &owner), next, &had, &mut held).await?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        release_keys(state, &owner, held).await;
        return Err(e);
    }
    Ok(held)
}

/// After an update was written: releases what `current` held and `written` does not.
pub async fn release_dropped(state: &ApiState, current: &Value, written: &Value) {
    let kept: std::collections::HashSet<String> = keys_of(written).into_iter().collect();
    let dropped = keys_of(current)
        .into_iter()
        .filter(|k| !kept.contains(k))
        .collect();
    release_keys(state, &owner_of(current), dropped).await;
}

/// Releases keys reserved for a write that did not happen.
pub async fn release_reserved(state: &ApiState, svc: &Value, keys: Vec<String>) {
    release_keys(state, &owner_of(svc), keys).await;
}

/// Gives each port of `svc` a node port: its own if it names one (reserved unless the
/// stored Service `had` it, refused if another Service holds it), else a free one.
/// `held` gets the keys reserved here.
async fn node_ports(
    state: &ApiState,
    rt: &ResourceType,
    (name, owner): (&str, &str),
    svc: &mut Value,
    had: &std::collections::HashSet<String>,
    held: &mut Vec<String>,
) -> Result<(), ApiError> {
    let used: std::collections::HashSet<String> =
        taken(state, PORT_PREFIX).await?.into_iter().collect();
    let count = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(Vec::len)
        .unwrap_or(0);
    for i in 0..count {
        let port = &svc["spec"]["ports"][i];
        let proto = port["protocol"].as_str().unwrap_or("TCP").to_string();
        if let Some(np) = port.get("nodePort").and_then(Value::as_i64) {
            let key = format!("{PORT_PREFIX}{proto}/{np}");
            if had.contains(&key) {
                continue;
            }
            if !reserve_key(state, key.clone(), owner).await? {
                return Err(invalid(
                    rt,
                    name,
                    &format!("spec.ports[{i}].nodePort"),
                    &np.to_string(),
                    "provided port is already allocated",
                ));
            }
            held.push(key);
            continue;
        }
        let span = (NODE_PORTS.1 - NODE_PORTS.0 + 1) as u32;
        let start = rand::rng().random_range(0..span);
        let mut found = None;
        for k in 0..span {
            let np = NODE_PORTS.0 as u32 + (start + k) % span;
            if used.contains(&format!("{proto}/{np}")) {
                continue;
            }
            let key = format!("{PORT_PREFIX}{proto}/{np}");
            if reserve_key(state, key.clone(), owner).await? {
                held.push(key);
                found = Some(np);
                break;
            }
        }
        let Some(np) = found else {
            return Err(ApiError(Status::internal(
                "failed to allocate a nodePort: range is full",
            )));
        };
        svc["spec"]["ports"][i]["nodePort"] = json!(np);
    }
    Ok(())
}

/// Gives a Service its cluster IP: `None` (headless), the one it names (refused if
/// outside the range or taken), or a free one. `held` gets the key reserved here.
async fn cluster_ip(
    state: &ApiState,
    rt: &ResourceType,
    (name, owner): (&str, &str),
    svc: &mut Value,
    held: &mut Vec<String>,
) -> Result<(), ApiError> {
    let cidr = state.service_cidr;
    let wanted = svc
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if wanted == "None" {
        svc["spec"]["clusterIPs"] = json!(["None"]);
    } else if !wanted.is_empty() {
        let ip: Ipv4Addr = wanted.parse().map_err(|_| {
            invalid(
                rt,
                name,
                "spec.clusterIP",
                &wanted,
                "must be an IPv4 address",
            )
        })?;
        if !cidr.contains(ip) {
            return Err(invalid(
                rt,
                name,
                "spec.clusterIP",
                &wanted,
                &format!("provided IP is not in the valid range. The range of valid IPs is {cidr}"),
            ));
        }
        let key = format!("{IP_PREFIX}{ip}");
        if !reserve_key(state, key.clone(), owner).await? {
            return Err(invalid(
                rt,
                name,
                "spec.clusterIP",
                &wanted,
                "provided IP is already allocated",
            ));
        }
        held.push(key);
        svc["spec"]["clusterIPs"] = json!([wanted]);
    } else {
        let used: std::collections::HashSet<String> =
            taken(state, IP_PREFIX).await?.into_iter().collect();
        let size = cidr.size();
        let start = rand::rng().random_range(0..size);
        let mut found = None;
        for i in 0..size {
            let ip = cidr.nth((start + i) % size);
            if used.contains(&ip.to_string()) {
                continue;
            }
            let key = format!("{IP_PREFIX}{ip}");
            if reserve_key(state, key.clone(), owner).await? {
                held.push(key);
                found = Some(ip);
                break;
            }
        }
        let Some(ip) = found else {
            return Err(ApiError(Status::internal(format!(
                "failed to allocate a serviceIP: range is full ({cidr})"
            ))));
        };
        svc["spec"]["clusterIP"] = json!(ip.to_string());
        svc["spec"]["clusterIPs"] = json!([ip.to_string()]);
    }
    Ok(())
}
