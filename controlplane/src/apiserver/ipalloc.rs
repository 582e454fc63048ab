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
async fn reserve(state: &ApiState, key: String, owner: &str) -> Result<bool, ApiError> {
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

/// Who holds an allocation key, if anyone.
async fn holder(state: &ApiState, key: &str) -> Result<Option<String>, ApiError> {
    let k = key.to_string();
    let text = state.store.read(move |sm| sm.get(&k)).await?;
    Ok(text.and_then(|t| {
        let held: Value = serde_json::from_str(&t).ok()?;
        Some(held.get("service")?.as_str()?.to_string())
    }))
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

/// An update of a Service: an ExternalName alias that becomes another type gets a
/// cluster IP, as on create; node ports it names anew are reserved (a port another
/// Service holds is refused), ports of a NodePort Service that have none are given one,
/// and a Service that is no longer NodePort or LoadBalancer gives its up. Returns the
/// keys reserved here (to release if the write fails); [`release_dropped`] frees what
/// the written Service no longer names.
pub async fn reserve_update(
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
    let mut held = Vec::new();
    // Only an ExternalName alias has no cluster IP: one that becomes another type gets
    // the one it names (reserved, or refused if taken), or a free one.
    let had_ip = current
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .is_some_and(|ip| !ip.is_empty());
    let had: std::collections::HashSet<String> = keys_of(current).into_iter().collect();
    let mut result = Ok(());
    if kind != "ExternalName" && !had_ip {
        let cidr = state.service_cidr;
        result = cluster_ip(state, rt, cidr, (&name, &owner), next, &mut held).await;
    }
    if matches!(kind.as_str(), "NodePort" | "LoadBalancer") {
        if result.is_ok() {
            result = node_ports(state, rt, (&name, &owner), next, &had, &mut held).await;
        }
    } else if let Some(Value::Array(ports)) = next.pointer_mut("/spec/ports") {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            p.remove("nodePort");
        }
    }
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

/// Releases keys reserved for an update that was not written.
pub async fn release_reserved(state: &ApiState, svc: &Value, keys: Vec<String>) {
    release_keys(state, &owner_of(svc), keys).await;
}

/// Gives each port of `svc` a node port: its own if it names one (reserved unless it is
/// among the keys the stored Service `had` and reserved for it, refused if another
/// Service holds it), else a free one. `held` gets the keys reserved here.
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
            if had.contains(&key) && holder(state, &key).await?.as_deref() == Some(owner) {
                continue;
            }
            if !reserve(state, key.clone(), owner).await? {
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
            if reserve(state, key.clone(), owner).await? {
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
    cidr: ServiceCidr,
    (name, owner): (&str, &str),
    svc: &mut Value,
    held: &mut Vec<String>,
) -> Result<(), ApiError> {
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
        if !reserve(state, key.clone(), owner).await? {
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
            if reserve(state, key.clone(), owner).await? {
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

/// Fills `spec.clusterIP`/`clusterIPs` and node ports of a new Service and reserves them.
/// On error nothing stays reserved.
pub async fn allocate(
    state: &ApiState,
    rt: &ResourceType,
    cidr: ServiceCidr,
    svc: &mut Value,
) -> Result<(), ApiError> {
    let name = svc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let owner = format!(
        "{}/{name}",
        svc.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
    );
    let kind = svc
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    let mut held: Vec<String> = Vec::new();
    let result = async {
        if kind != "ExternalName" {
            cluster_ip(state, rt, cidr, (&name, &owner), svc, &mut held).await?;
        }
        if matches!(kind.as_str(), "NodePort" | "LoadBalancer") {
            let none = std::collections::HashSet::new();
            node_ports(state, rt, (&name, &owner), svc, &none, &mut held).await?;
        }
        Ok(())
    }
    .await;
    if result.is_err() && !held.is_empty() {
        let ops = held
            .into_iter()
            .map(|key| Op::Delete {
                key,
                precondition: Precondition::None,
            })
            .collect();
        let _ = state.store.write(ops).await;
    }
    result
}
