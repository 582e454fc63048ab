//! CRUD handlers: create, get, list, update, patch, delete, and the binding and scale
//! subresources. Each write is a read of the current object (when needed), a pure
//! transformation, and one store operation guarded by the revision that was read.

use std::collections::HashMap;

use axum::body::to_bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{FromRequestParts, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use rand::Rng;
use serde_json::{Value, json};
use wk_api::Status;
use wk_api::decode;
use wk_api::meta::{ObjectMetaExt, field_str};
use wk_api::resource::{self, ResourceType};
use wk_api::selector::{FieldSelector, LabelSelector};

use super::{ApiError, ApiState, Target, defaults, json_response, patch, table, watch};
use crate::store::{Applied, Op, OpError, Precondition};

/// Bodies larger than this are refused (Kubernetes' limit is 3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;
/// Unconditional updates retry this often on a concurrent write.
const MAX_RETRIES: usize = 16;

pub type Result<T> = std::result::Result<T, ApiError>;

/// Query parameters of a request.
#[derive(Debug, Default)]
pub struct Params(HashMap<String, String>);

impl Params {
    pub fn from_uri(uri: &axum::http::Uri) -> Self {
        let q = uri.query().unwrap_or("");
        Params(url_decode_pairs(q).into_iter().collect())
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }
    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1" | ""))
    }
    pub fn dry_run(&self) -> bool {
        self.get("dryRun") == Some("All")
    }
}

fn url_decode_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                match (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads a JSON or YAML request body.
pub async fn read_body(req: Request) -> Result<(Value, String)> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let bytes = to_bytes(req.into_body(), MAX_BODY).await.map_err(|e| {
        Status::new(
            413,
            "RequestEntityTooLarge",
            format!("request body too large or unreadable: {e}"),
        )
    })?;
    let value: Value = if content_type.contains("yaml") {
        let y: serde_yaml::Value = serde_yaml::from_slice(&bytes)
            .map_err(|e| Status::bad_request(format!("error decoding YAML body: {e}")))?;
        serde_json::to_value(y)
            .map_err(|e| Status::bad_request(format!("error decoding YAML body: {e}")))?
    } else if content_type.is_empty() || content_type.contains("json") {
        serde_json::from_slice(&bytes)
            .map_err(|e| Status::bad_request(format!("error decoding JSON body: {e}")))?
    } else if content_type == "application/vnd.kubernetes.protobuf" {
        // kubectl's generators (`kubectl create deployment …`) send protobuf.
        use super::protobuf::DecodeError;
        let v = super::protobuf::to_json(&bytes).map_err(|e| match e {
            DecodeError::Malformed(m) => {
                Status::bad_request(format!("error decoding protobuf body: {m}"))
            }
            DecodeError::Unsupported(m) => Status::new(415, "UnsupportedMediaType", m),
        })?;
        return Ok((v, "application/json".to_string()));
    } else {
        return Err(Status::unsupported_media_type(&content_type).into());
    };
    Ok((value, content_type))
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn ns_of(target: &Target) -> Option<&str> {
    if target.rt.namespaced {
        target.namespace.as_deref()
    } else {
        None
    }
}

fn key_of(target: &Target, name: &str) -> String {
    target.rt.key(ns_of(target), name)
}

/// Object response with warnings (unknown fields in `Warn` mode).
fn object_response(code: StatusCode, object: &Value, warnings: &[String]) -> Response {
    let mut resp = json_response(code, object);
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('"', "'"));
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

fn parse_json(text: &str) -> Result<Value> {
    serde_json::from_str(text)
        .map_err(|e| ApiError(Status::internal(format!("stored object is corrupt: {e}"))))
}

/// Reads one object, linearizably unless `stale`.
pub async fn load(state: &ApiState, key: &str, stale: bool) -> Result<Option<Value>> {
    if !stale {
        state.store.linearize().await?;
    }
    let key = key.to_string();
    let text = state.store.read(move |sm| sm.get(&key)).await?;
    text.map(|t| parse_json(&t)).transpose()
}

fn not_found(target: &Target, name: &str) -> ApiError {
    ApiError(Status::not_found(target.rt, name))
}

/// Decodes as the kind's type, validates and returns the normalised object and warnings.
fn check(rt: &ResourceType, obj: &Value, params: &Params) -> Result<(Value, Vec<String>)> {
    let name = obj.name().unwrap_or("").to_string();
    let (checked, errors) = decode::check(rt, obj).map_err(|e| {
        Status::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {}",
            rt.kind, rt.version, rt.kind, e
        ))
    })?;
    let mode = params.get("fieldValidation").unwrap_or("Warn");
    let unknown: Vec<String> = checked
        .unknown_fields
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    if !unknown.is_empty() && mode == "Strict" {
        return Err(
            Status::bad_request(format!("strict decoding error: {}", unknown.join(", "))).into(),
        );
    }
    if !errors.is_empty() {
        return Err(Status::invalid(rt, &name, &errors).into());
    }
    let warnings = if mode == "Ignore" {
        Vec::new()
    } else {
        unknown
    };
    Ok((checked.object, warnings))
}

fn store_op_error(target: &Target, name: &str, e: OpError) -> ApiError {
    ApiError(match e {
        OpError::NotFound => Status::not_found(target.rt, name),
        OpError::AlreadyExists => Status::already_exists(target.rt, name),
        OpError::Conflict { .. } => Status::stale(target.rt, name),
        OpError::BadObject(m) => Status::internal(m),
        f @ OpError::Fenced { .. } => Status::conflict(target.rt, name, &f.to_string()),
    })
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Fills server-owned metadata of a new object and checks the names against the path.
fn prepare_create(target: &Target, obj: &mut Value) -> Result<()> {
    let rt = target.rt;
    if !obj.is_object() {
        return Err(Status::bad_request("the request body must be an object").into());
    }
    let map = obj.as_object_mut().expect("checked object");
    let api_version = rt.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v != api_version => {
            return Err(Status::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            ))
            .into())
        }
        _ => {
            map.insert("apiVersion".into(), json!(api_version));
        }
    }
    match map.get("kind").and_then(Value::as_str) {
        Some(k) if k != rt.kind => {
            return Err(Status::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                rt.kind
            ))
            .into());
        }
        _ => {
            map.insert("kind".into(), json!(rt.kind));
        }
    }
    if rt.namespaced {
        let path_ns = target.namespace.as_deref().unwrap_or("default");
        match obj.namespace() {
            Some(ns) if ns != path_ns => {
                return Err(Status::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
                .into())
            }
            _ => obj.set_meta("namespace", path_ns),
        }
    } else {
        obj.remove_meta("namespace");
    }
    if obj.name().is_none() {
        if let Some(prefix) = obj
            .meta_str("generateName")
            .map(String::from)
            .filter(|s| !s.is_empty())
        {
            // At most 58 bytes, cut at a character (validation then names what is wrong).
            let mut prefix = prefix;
            let mut cut = prefix.len().min(58);
            while !prefix.is_char_boundary(cut) {
                cut -= 1;
            }
            prefix.truncate(cut);
            obj.set_meta("name", format!("{prefix}{}", random_suffix()));
        }
    }
    if obj
        .meta_str("resourceVersion")
        .is_some_and(|s| !s.is_empty())
    {
        return Err(Status::bad_request(
            "resourceVersion should not be set on objects to be created",
        )
        .into());
    }
    for f in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
    ] {
        obj.remove_meta(f);
    }
    stamp_new(obj);
    defaults::on_create(rt, obj);
    Ok(())
}

/// The metadata the server gives every new object: uid, creationTimestamp, generation.
pub(crate) fn stamp_new(obj: &mut Value) {
    obj.set_meta("uid", uuid::Uuid::new_v4().to_string());
    obj.set_meta("creationTimestamp", now());
    obj.set_meta("generation", 1);
}

/// `pod` assigned to `node`: `spec.nodeName` set and `PodScheduled=True`.
pub(crate) fn bound_to(pod: &Value, node: &str) -> Value {
    let mut next = pod.clone();
    next["spec"]["nodeName"] = json!(node);
    set_condition(&mut next, "PodScheduled", "True", None);
    next
}

/// Namespaced objects may only be created in namespaces that exist and are not being
/// deleted (Kubernetes' NamespaceLifecycle admission).
async fn check_namespace(state: &ApiState, target: &Target) -> Result<()> {
    if !target.rt.namespaced {
        return Ok(());
    }
    let ns_rt = resource::by_plural("", "namespaces").expect("namespaces registered");
    let ns = target.namespace.as_deref().unwrap_or("default");
    match load(state, &ns_rt.key(None, ns), true).await? {
        None => Err(Status::not_found(ns_rt, ns).into()),
        Some(obj) if obj.deletion_timestamp().is_some() => Err(Status::forbidden(format!(
            "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
            target.rt.plural,
            obj.name().unwrap_or("")
        ))
        .into()),
        Some(_) => Ok(()),
    }
}

pub async fn create(state: ApiState, target: Target, req: Request) -> Result<Response> {
    let params = Params::from_uri(req.uri());
    let (mut obj, _) = read_body(req).await?;
    prepare_create(&target, &mut obj)?;
    let (obj, warnings) = check(target.rt, &obj, &params)?;
    let name = obj.name().unwrap_or("").to_string();
    check_namespace(&state, &target).await?;
    if params.dry_run() {
        return Ok(object_response(StatusCode::CREATED, &obj, &warnings));
    }
    let mut obj = obj;
    let is_service = target.rt.kind == "Service";
    let reserved = if is_service {
        super::ipalloc::reserve_for(&state, target.rt, &Value::Null, &mut obj).await?
    } else {
        Vec::new()
    };
    let op = Op::Put {
        key: key_of(&target, &name),
        object: obj.to_string(),
        precondition: Precondition::Absent,
    };
    let written = state.store.write_one(op).await;
    if is_service && !matches!(written, Ok(Ok(_))) {
        super::ipalloc::release_reserved(&state, &obj, reserved).await;
    }
    match written? {
        Ok(applied) => Ok(object_response(
            StatusCode::CREATED,
            &parse_json(&applied.object)?,
            &warnings,
        )),
        Err(e) => Err(store_op_error(&target, &name, e)),
    }
}

pub async fn get(state: ApiState, target: Target, req: Request) -> Result<Response> {
    let params = Params::from_uri(req.uri());
    let name = target.name.clone().unwrap_or_default();
    let stale = params.get("resourceVersion") == Some("0");
    let obj = load(&state, &key_of(&target, &name), stale)
        .await?
        .ok_or_else(|| not_found(&target, &name))?;
    if table::wants_table(req.headers()) {
        let rv = obj.resource_version();
        return Ok(json_response(
            StatusCode::OK,
            &table::render(target.rt, &[obj], rv, &params, None),
        ));
    }
    Ok(json_response(StatusCode::OK, &obj))
}

/// A compiled list/watch filter.
pub struct Filter {
    pub prefix: String,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn new(target: &Target, params: &Params) -> Result<Filter> {
        let labels = LabelSelector::parse(params.get("labelSelector").unwrap_or(""))
            .map_err(|e| Status::bad_request(format!("unable to parse requirement: {e}")))?;
        let fields = FieldSelector::parse(params.get("fieldSelector").unwrap_or(""))
            .map_err(|e| Status::bad_request(format!("invalid field selector: {e}")))?;
        for r in fields.requirements() {
            if !field_supported(target.rt, &r.field) {
                return Err(Status::bad_request(format!(
                    "\"{}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\"",
                    r.field
                ))
                .into());
            }
        }
        let prefix = target.rt.key_prefix(ns_of(target));
        Ok(Filter {
            prefix,
            labels,
            fields,
        })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        (self.labels.is_empty() || self.labels.matches(&obj.labels()))
            && self
                .fields
                .matches(|f| Some(field_str(obj, f).unwrap_or_default()))
    }
}

fn field_supported(rt: &ResourceType, field: &str) -> bool {
    if matches!(field, "metadata.name" | "metadata.namespace") {
        return true;
    }
    match rt.kind {
        "Pod" => matches!(
            field,
            "spec.nodeName"
                | "spec.restartPolicy"
                | "spec.schedulerName"
                | "spec.serviceAccountName"
                | "spec.hostNetwork"
                | "status.phase"
                | "status.podIP"
                | "status.nominatedNodeName"
        ),
        "Event" => {
            field.starts_with("involvedObject.")
                || matches!(field, "reason" | "type" | "source" | "reportingComponent")
        }
        "Secret" => field == "type",
        "Node" => field == "spec.unschedulable",
        "Job" => field == "status.successful",
        "ReplicaSet" | "Deployment" => field == "status.replicas",
        _ => false,
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    #[serde(rename = "k")]
    key: String,
    #[serde(rename = "rv")]
    revision: u64,
}

pub async fn list_or_watch(state: ApiState, target: Target, req: Request) -> Result<Response> {
    let params = Params::from_uri(req.uri());
    let filter = Filter::new(&target, &params)?;
    if params.flag("watch") && params.get("watch").is_some() {
        return watch::serve(state, target, filter, params, req.headers().clone()).await;
    }
    let stale = params.get("resourceVersion") == Some("0");
    if !stale {
        state.store.linearize().await?;
    }
    let limit: usize = params
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut start_after = match params.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(token)
                .map_err(|_| Status::bad_request("continue key is not valid"))?;
            let tok: ContinueToken = serde_json::from_slice(&bytes)
                .map_err(|_| Status::bad_request("continue key is not valid"))?;
            if !tok.key.starts_with(&filter.prefix) {
                return Err(
                    Status::bad_request("continue key does not belong to this list").into(),
                );
            }
            Some(tok.key)
        }
        None => None,
    };
    // Read pages until `limit` matching items are found (selectors filter after reading).
    let mut items = Vec::new();
    let mut revision;
    let mut next = None;
    loop {
        let prefix = filter.prefix.clone();
        let after = start_after.clone();
        let page = if limit > 0 { limit.max(64) } else { 0 };
        let (rev, batch, more) = state
            .store
            .read(move |sm| sm.list(&prefix, after.as_deref(), page))
            .await?;
        revision = rev;
        let mut last_key = None;
        for (key, text) in batch {
            last_key = Some(key.clone());
            let obj = parse_json(&text)?;
            if filter.matches(&obj) {
                items.push(obj);
                if limit > 0 && items.len() == limit {
                    next = Some(key);
                    break;
                }
            }
        }
        if next.is_some() {
            // Only hand out a continue token if something may follow.
            break;
        }
        if !more {
            break;
        }
        start_after = last_key;
    }
    let cont = next.map(|key| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&ContinueToken { key, revision }).unwrap_or_default())
    });
    if table::wants_table(req.headers()) {
        return Ok(json_response(
            StatusCode::OK,
            &table::render(target.rt, &items, revision, &params, cont),
        ));
    }
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if let Some(c) = cont {
        metadata["continue"] = json!(c);
    }
    let list = json!({
        "apiVersion": target.rt.api_version(),
        "kind": target.rt.list_kind(),
        "metadata": metadata,
        "items": items,
    });
    Ok(json_response(StatusCode::OK, &list))
}

/// Everything but metadata and status: a change here bumps `metadata.generation`.
fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

/// Merges an incoming full object with the stored one according to the subresource.
fn prepare_update(target: &Target, current: &Value, incoming: Value) -> Result<Value> {
    let rt = target.rt;
    let name = current.name().unwrap_or("");
    if let Some(n) = incoming.name() {
        if n != name {
            return Err(Status::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            ))
            .into());
        }
    }
    // A uid in the body is a precondition, as in Kubernetes: it stops a writer that read an
    // object from updating a newer object of the same name.
    if let Some(uid) = incoming.uid().filter(|u| !u.is_empty()) {
        if Some(uid) != current.uid() {
            return Err(Status::conflict(
                rt,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    current.uid().unwrap_or("")
                ),
            )
            .into());
        }
    }
    let mut next = match target.subresource.as_deref() {
        Some("status") => {
            let mut next = current.clone();
            next["status"] = incoming.get("status").cloned().unwrap_or(Value::Null);
            if next["status"].is_null() {
                next.as_object_mut().map(|m| m.remove("status"));
            }
            next
        }
        Some("finalize") => {
            let mut next = current.clone();
            next["spec"]["finalizers"] = incoming
                .pointer("/spec/finalizers")
                .cloned()
                .unwrap_or(json!([]));
            next
        }
        _ => {
            let mut next = incoming;
            if !next.is_object() {
                return Err(Status::bad_request("the request body must be an object").into());
            }
            next["apiVersion"] = json!(rt.api_version());
            next["kind"] = json!(rt.kind);
            if rt.has_status() {
                match current.get("status") {
                    Some(s) => next["status"] = s.clone(),
                    None => {
                        next.as_object_mut().map(|m| m.remove("status"));
                    }
                }
            }
            next
        }
    };
    // Server-owned metadata is kept from the stored object.
    for f in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "namespace",
        "name",
    ] {
        match current.meta().and_then(|m| m.get(f)) {
            Some(v) => next.set_meta(f, v.clone()),
            None => next.remove_meta(f),
        }
    }
    next.remove_meta("managedFields");
    let generation = current
        .meta()
        .and_then(|m| m.get("generation"))
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let bump = spec_part(current) != spec_part(&next);
    next.set_meta("generation", if bump { generation + 1 } else { generation });
    defaults::apply(rt, &mut next);
    defaults::on_update(rt, current, &mut next)?;
    Ok(next)
}

/// Writes `next` over `current` guarded by `current`'s revision. If the object is being
/// deleted with no grace period left to run (a finalizer's wait) and its last finalizer
/// is gone, it is removed instead. A pod in its graceful deletion stays until its node
/// finishes it, whatever is updated meanwhile (Kubernetes' `ShouldDeleteDuringUpdate`).
/// A namespace removed this way loses its contents first.
async fn commit_update(
    state: &ApiState,
    target: &Target,
    current: &Value,
    next: Value,
    params: &Params,
    warnings: &[String],
) -> Result<std::result::Result<Response, OpError>> {
    let name = current.name().unwrap_or("").to_string();
    let key = key_of(target, &name);
    let precondition = Precondition::Revision(current.resource_version());
    if params.dry_run() {
        return Ok(Ok(object_response(StatusCode::OK, &next, warnings)));
    }
    let graceful = next
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
        .is_some_and(|g| g > 0);
    if next.deletion_timestamp().is_some() && next.finalizers().is_empty() && !graceful {
        if target.rt.kind == "Namespace" {
            // A namespace whose deletion was cut short still holds objects: they go
            // first, as its DELETE would have done.
            delete_namespace_contents(state, &name).await?;
        }
        let r = state
            .store
            .write_one(Op::Delete { key, precondition })
            .await?;
        if target.rt.kind == "Service" && r.is_ok() {
            super::ipalloc::release(state, current).await;
        }
        return Ok(r.map(|a| {
            object_response(
                StatusCode::OK,
                &parse_json(&a.object).unwrap_or_default(),
                warnings,
            )
        }));
    }
    // A Service's node ports follow its spec: new ones reserved before the write, the
    // ones it no longer names released after it.
    let service = target.rt.kind == "Service" && target.subresource.is_none();
    let mut next = next;
    let reserved = if service {
        super::ipalloc::reserve_for(state, target.rt, current, &mut next).await?
    } else {
        Vec::new()
    };
    let r = state
        .store
        .write_one(Op::Put {
            key,
            object: next.to_string(),
            precondition,
        })
        .await;
    if service {
        match &r {
            Ok(Ok(_)) => super::ipalloc::release_dropped(state, current, &next).await,
            _ => super::ipalloc::release_reserved(state, &next, reserved).await,
        }
    }
    Ok(match r? {
        Ok(a) => Ok(object_response(
            StatusCode::OK,
            &parse_json(&a.object)?,
            warnings,
        )),
        Err(e) => Err(e),
    })
}

pub async fn update(state: ApiState, target: Target, req: Request) -> Result<Response> {
    let params = Params::from_uri(req.uri());
    let (incoming, _) = read_body(req).await?;
    let wanted_rv = incoming
        .meta_str("resourceVersion")
        .filter(|s| !s.is_empty())
        .map(String::from);
    read_modify_write(
        &state,
        &target,
        &params,
        wanted_rv,
        |_| Ok(incoming.clone()),
    )
    .await
}

pub async fn patch(state: ApiState, target: Target, req: Request) -> Result<Response> {
    let params = Params::from_uri(req.uri());
    let (patch_doc, content_type) = read_body(req).await?;
    let wanted_rv = patch_doc
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .map(String::from);
    read_modify_write(&state, &target, &params, wanted_rv, |current| {
        apply_patch(current, &patch_doc, &content_type)
    })
    .await
}

/// Reads the current object, computes the next one, and writes it guarded by the revision
/// read. Without a `resourceVersion` from the client, a concurrent write means a retry;
/// with one, a mismatch is a 409.
async fn read_modify_write(
    state: &ApiState,
    target: &Target,
    params: &Params,
    wanted_rv: Option<String>,
    next_of: impl Fn(&Value) -> Result<Value>,
) -> Result<Response> {
    let name = target.name.clone().unwrap_or_default();
    for _ in 0..MAX_RETRIES {
        let current = load(state, &key_of(target, &name), false)
            .await?
            .ok_or_else(|| not_found(target, &name))?;
        if let Some(rv) = &wanted_rv {
            if *rv != current.resource_version().to_string() {
                return Err(Status::stale(target.rt, &name).into());
            }
        }
        let next = prepare_update(target, &current, next_of(&current)?)?;
        let (next, warnings) = check(target.rt, &next, params)?;
        match commit_update(state, target, &current, next, params, &warnings).await? {
            Ok(resp) => return Ok(resp),
            Err(OpError::Conflict { .. }) if wanted_rv.is_none() => continue,
            Err(e) => return Err(store_op_error(target, &name, e)),
        }
    }
    Err(Status::stale(target.rt, &name).into())
}

fn apply_patch(current: &Value, patch_doc: &Value, content_type: &str) -> Result<Value> {
    match content_type {
        "application/merge-patch+json" => Ok(patch::json_merge_patch(current, patch_doc)),
        "application/strategic-merge-patch+json" => Ok(patch::strategic_merge_patch(current, patch_doc)),
        "application/json-patch+json" => patch::json_patch(current, patch_doc)
            .map_err(|e| ApiError(Status::new(422, "Invalid", format!("the server rejected our request due to an error in our request: {e}")))),
        "application/apply-patch+yaml" => Err(Status::new(
            415,
            "UnsupportedMediaType",
            "server-side apply is not supported by wk; use client-side apply (kubectl apply without --server-side)",
        )
        .into()),
        other => Err(Status::unsupported_media_type(other).into()),
    }
}

/// Options a DELETE may carry (query or body).
#[derive(Debug, Default)]
struct DeleteOptions {
    /// `dryRun=All`, in the query or in the body (kubectl `--dry-run=server` sends it
    /// in the body): everything is checked and nothing deleted.
    dry_run: bool,
    grace_period: Option<i64>,
    uid: Option<String>,
    resource_version: Option<String>,
    propagation: Option<String>,
}

async fn delete_options(params: &Params, req: Request) -> Result<DeleteOptions> {
    let bytes = to_bytes(req.into_body(), MAX_BODY)
        .await
        .unwrap_or_default();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| Status::bad_request(format!("error decoding DeleteOptions: {e}")))?
    };
    delete_options_from(params, &body)
}

/// DeleteOptions from the query and a decoded body (`Value::Null` when there is none).
fn delete_options_from(params: &Params, body: &Value) -> Result<DeleteOptions> {
    let mut o = DeleteOptions {
        grace_period: params
            .get("gracePeriodSeconds")
            .and_then(|g| g.parse().ok()),
        propagation: params.get("propagationPolicy").map(String::from),
        dry_run: params.dry_run(),
        ..Default::default()
    };
    if !body.is_null() {
        if let Some(g) = body.get("gracePeriodSeconds").and_then(Value::as_i64) {
            o.grace_period = Some(g);
        }
        if let Some(p) = body.get("propagationPolicy").and_then(Value::as_str) {
            o.propagation = Some(p.to_string());
        }
        match body.get("dryRun") {
            None | Some(Value::Null) => {}
            Some(Value::Array(v)) if v.is_empty() => {}
            Some(Value::Array(v)) if v.iter().all(|x| x == "All") => o.dry_run = true,
            Some(other) => {
                return Err(Status::bad_request(format!(
                    "dryRun: Unsupported value: {other}: supported values: \"All\""
                ))
                .into());
            }
        }
        o.uid = body
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(String::from);
        o.resource_version = body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(String::from);
    }
    if let Some(p) = &o.propagation {
        if !matches!(p.as_str(), "Orphan" | "Background" | "Foreground") {
            return Err(Status::bad_request(format!(
                "propagationPolicy: Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
            ))
            .into());
        }
    }
    Ok(o)
}

pub async fn delete(state: ApiState, target: Target, req: Request) -> Result<Response> {
    let params = Params::from_uri(req.uri());
    let opts = delete_options(&params, req).await?;
    delete_with(&state, &target, &opts).await
}

/// `POST pods/{name}/eviction` (policy/v1 Eviction, what `kubectl drain` sends): a
/// graceful delete of the pod with the Eviction's `deleteOptions`. wk has no
/// PodDisruptionBudgets, so no eviction is refused for one.
pub async fn evict(state: ApiState, target: Target, req: Request) -> Result<Response> {
    let params = Params::from_uri(req.uri());
    let (body, _) = read_body(req).await?;
    let name = target.name.clone().unwrap_or_default();
    if body.get("kind").and_then(Value::as_str) != Some("Eviction") {
        return Err(Status::bad_request("the body must be a policy/v1 Eviction").into());
    }
    if body
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .is_some_and(|n| n != name)
    {
        return Err(Status::bad_request(format!(
            "metadata.name: Invalid value: the Eviction's name must be the pod's ({name})"
        ))
        .into());
    }
    let opts = delete_options_from(&params, body.get("deleteOptions").unwrap_or(&Value::Null))?;
    let pod = Target {
        subresource: None,
        ..target
    };
    delete_with(&state, &pod, &opts).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

async fn delete_with(state: &ApiState, target: &Target, opts: &DeleteOptions) -> Result<Response> {
    let name = target.name.clone().unwrap_or_default();
    for _ in 0..MAX_RETRIES {
        let current = load(state, &key_of(target, &name), false)
            .await?
            .ok_or_else(|| not_found(target, &name))?;
        if opts
            .uid
            .as_deref()
            .is_some_and(|u| Some(u) != current.uid())
        {
            return Err(Status::conflict(
                target.rt,
                &name,
                "Precondition failed: UID in precondition does not match the UID of the object",
            )
            .into());
        }
        if opts
            .resource_version
            .as_deref()
            .is_some_and(|rv| rv != current.resource_version().to_string())
        {
            return Err(Status::stale(target.rt, &name).into());
        }
        match delete_one(state, target, current, opts).await? {
            Ok(resp) => return Ok(resp),
            Err(OpError::Conflict { .. }) => continue,
            Err(e) => return Err(store_op_error(target, &name, e)),
        }
    }
    Err(Status::stale(target.rt, &name).into())
}

/// Deletes one object: at once, or by marking it (deletionTimestamp) when finalizers or a
/// graceful pod shutdown must run first.
async fn delete_one(
    state: &ApiState,
    target: &Target,
    current: Value,
    opts: &DeleteOptions,
) -> Result<std::result::Result<Response, OpError>> {
    let dry_run = opts.dry_run;
    let name = current.name().unwrap_or("").to_string();
    let key = key_of(target, &name);
    let namespace = target.rt.kind == "Namespace";
    // A pod's deletion can be cut short to no grace (its node finishing it); one with
    // none left waits for its finalizers like any object, and is not written again.
    let shortened = target.rt.kind == "Pod"
        && opts.grace_period == Some(0)
        && current
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .is_none_or(|g| g > 0);
    if current.deletion_timestamp().is_some() && !shortened && !namespace {
        // Already being deleted: nothing more to do until finalizers or the node finish.
        return Ok(Ok(json_response(StatusCode::ACCEPTED, &current)));
    }
    let mut current = current;
    if namespace && !dry_run {
        // Terminating first, so nothing new lands in it while its contents go (a
        // controller recreating pods, a client); a deletion cut short is taken up again
        // by the next one.
        if current.deletion_timestamp().is_none() {
            let mut marked = current.clone();
            marked.set_meta("deletionTimestamp", now_plus(0));
            marked["status"]["phase"] = json!("Terminating");
            let r = state
                .store
                .write_one(Op::Put {
                    key: key.clone(),
                    object: marked.to_string(),
                    precondition: Precondition::Revision(current.resource_version()),
                })
                .await?;
            match r {
                Ok(a) => current = parse_json(&a.object)?,
                Err(e) => return Ok(Err(e)),
            }
        }
        delete_namespace_contents(state, &name).await?;
    }
    let precondition = Precondition::Revision(current.resource_version());
    let grace = graceful_period(target, &current, opts);
    // Orphan and Foreground deletion of an owner: the garbage collector finishes it
    // (orphaning or deleting the dependents) and then removes the finalizer.
    let cascade_finalizer = match opts.propagation.as_deref() {
        Some("Orphan") => Some("orphan"),
        Some("Foreground") => Some("foregroundDeletion"),
        _ => None,
    }
    .filter(|_| OWNER_KINDS.contains(&target.rt.kind));
    if let Some(f) = cascade_finalizer {
        let mut finalizers = current.finalizers();
        if !finalizers.iter().any(|x| x == f) {
            finalizers.push(f.to_string());
        }
        current.set_meta("finalizers", json!(finalizers));
    }
    let has_finalizers = !current.finalizers().is_empty();
    if has_finalizers || grace > 0 {
        let mut next = current.clone();
        next.set_meta("deletionTimestamp", now_plus(grace));
        next.set_meta("deletionGracePeriodSeconds", grace);
        if target.rt.kind == "Namespace" {
            next["status"]["phase"] = json!("Terminating");
        }
        if dry_run {
            return Ok(Ok(json_response(StatusCode::OK, &next)));
        }
        let r = state
            .store
            .write_one(Op::Put {
                key,
                object: next.to_string(),
                precondition,
            })
            .await?;
        return Ok(
            r.map(|a| json_response(StatusCode::OK, &parse_json(&a.object).unwrap_or_default()))
        );
    }
    if dry_run {
        return Ok(Ok(json_response(StatusCode::OK, &current)));
    }
    let r = state
        .store
        .write_one(Op::Delete { key, precondition })
        .await?;
    if r.is_ok() && target.rt.kind == "Service" {
        super::ipalloc::release(state, &current).await;
    }
    Ok(r.map(|a: Applied| {
        json_response(StatusCode::OK, &parse_json(&a.object).unwrap_or_default())
    }))
}

/// Kinds that own other objects, so a delete may orphan or wait for their dependents.
const OWNER_KINDS: [&str; 5] = ["Deployment", "ReplicaSet", "DaemonSet", "Job", "CronJob"];

/// Pods bound to a node stop gracefully: the node's agent finishes the deletion. Unbound
/// pods and everything else go at once.
fn graceful_period(target: &Target, current: &Value, opts: &DeleteOptions) -> i64 {
    if target.rt.kind != "Pod" {
        return 0;
    }
    let bound = current
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        current.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    if !bound || finished {
        return 0;
    }
    opts.grace_period
        .or_else(|| {
            current
                .pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(30)
        .max(0)
}

fn now_plus(secs: i64) -> String {
    let t = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(secs);
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Removes every namespaced object in namespace `ns`, in batches.
async fn delete_namespace_contents(state: &ApiState, ns: &str) -> Result<()> {
    for rt in resource::RESOURCES.iter().filter(|r| r.namespaced) {
        let prefix = rt.key_prefix(Some(ns));
        loop {
            let p = prefix.clone();
            let (_, batch, _) = state.store.read(move |sm| sm.list(&p, None, 500)).await?;
            if batch.is_empty() {
                break;
            }
            if rt.kind == "Service" {
                for (_, text) in &batch {
                    if let Ok(svc) = parse_json(text) {
                        super::ipalloc::release(state, &svc).await;
                    }
                }
            }
            let ops = batch
                .into_iter()
                .map(|(key, _)| Op::Delete {
                    key,
                    precondition: Precondition::Present,
                })
                .collect();
            state.store.write(ops).await?;
        }
    }
    Ok(())
}

pub async fn delete_collection(state: ApiState, target: Target, req: Request) -> Result<Response> {
    let params = Params::from_uri(req.uri());
    let filter = Filter::new(&target, &params)?;
    let opts = delete_options(&params, req).await?;
    state.store.linearize().await?;
    let prefix = filter.prefix.clone();
    let (revision, batch, _) = state
        .store
        .read(move |sm| sm.list(&prefix, None, 0))
        .await?;
    let mut deleted = Vec::new();
    for (_, text) in batch {
        let obj = parse_json(&text)?;
        if !filter.matches(&obj) {
            continue;
        }
        if let Ok(Ok(_)) = delete_one(&state, &target, obj.clone(), &opts).await {
            deleted.push(obj);
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"apiVersion": target.rt.api_version(), "kind": target.rt.list_kind(),
                "metadata": {"resourceVersion": revision.to_string()}, "items": deleted}),
    ))
}

/// `POST pods/{name}/binding`: assigns a pod to a node once.
pub async fn bind(state: ApiState, target: Target, req: Request) -> Result<Response> {
    let name = target.name.clone().unwrap_or_default();
    let (binding, _) = read_body(req).await?;
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if node.is_empty() {
        return Err(Status::invalid(
            target.rt,
            &name,
            &[wk_api::validation::FieldError {
                field: "target.name".into(),
                kind: wk_api::validation::FieldErrorKind::Required,
                value: None,
                detail: String::new(),
            }],
        )
        .into());
    }
    for _ in 0..MAX_RETRIES {
        let current = load(&state, &key_of(&target, &name), false)
            .await?
            .ok_or_else(|| not_found(&target, &name))?;
        if let Some(existing) = current
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            return Err(Status::conflict(
                target.rt,
                &name,
                &format!("pod {name} is already assigned to node \"{existing}\""),
            )
            .into());
        }
        if current.deletion_timestamp().is_some() {
            return Err(Status::conflict(
                target.rt,
                &name,
                "pod is being deleted, cannot be assigned to a host",
            )
            .into());
        }
        let next = bound_to(&current, &node);
        let op = Op::Put {
            key: key_of(&target, &name),
            object: next.to_string(),
            precondition: Precondition::Revision(current.resource_version()),
        };
        match state.store.write_one(op).await? {
            Ok(_) => {
                return Ok(json_response(
                    StatusCode::CREATED,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                ));
            }
            Err(OpError::Conflict { .. }) => continue,
            Err(e) => return Err(store_op_error(&target, &name, e)),
        }
    }
    Err(Status::stale(target.rt, &name).into())
}

/// Sets a `status.conditions[type=...]` entry.
pub fn set_condition(obj: &mut Value, kind: &str, status: &str, reason: Option<&str>) {
    let conds = &mut obj["status"]["conditions"];
    if !conds.is_array() {
        *conds = json!([]);
    }
    let list = conds.as_array_mut().expect("array");
    let mut entry =
        json!({"type": kind, "status": status, "lastTransitionTime": now(), "lastProbeTime": null});
    if let Some(r) = reason {
        entry["reason"] = json!(r);
    }
    match list
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
    {
        Some(c) => *c = entry,
        None => list.push(entry),
    }
}

fn scale_of(target: &Target, obj: &Value) -> Value {
    let selector = obj
        .pointer("/spec/selector")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .and_then(
            |s: wk_api::k8s::apimachinery::pkg::apis::meta::v1::LabelSelector| {
                LabelSelector::from_k8s(&s).ok()
            },
        )
        .map(|s| s.to_string())
        .unwrap_or_default();
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            "name": obj.name(), "namespace": obj.namespace(), "uid": obj.uid(),
            "resourceVersion": obj.resource_version().to_string(),
            "creationTimestamp": obj.meta_str("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(if target.rt.kind == "Deployment" { 1 } else { 0 }))},
        "status": {"replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)), "selector": selector},
    })
}

pub async fn get_scale(state: ApiState, target: Target, _req: Request) -> Result<Response> {
    let name = target.name.clone().unwrap_or_default();
    let obj = load(&state, &key_of(&target, &name), false)
        .await?
        .ok_or_else(|| not_found(&target, &name))?;
    Ok(json_response(StatusCode::OK, &scale_of(&target, &obj)))
}

pub async fn update_scale(state: ApiState, target: Target, req: Request) -> Result<Response> {
    let params = Params::from_uri(req.uri());
    let is_patch = req.method() == axum::http::Method::PATCH;
    let name = target.name.clone().unwrap_or_default();
    let (body, content_type) = read_body(req).await?;
    // Only a resourceVersion the client sent guards the write (not the one the patch
    // is applied to): `kubectl scale` during a rollout retries instead of failing.
    let wanted_rv = body
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(String::from);
    for _ in 0..MAX_RETRIES {
        let current = load(&state, &key_of(&target, &name), false)
            .await?
            .ok_or_else(|| not_found(&target, &name))?;
        let scale = scale_of(&target, &current);
        let wanted = if is_patch {
            apply_patch(&scale, &body, &content_type)?
        } else {
            body.clone()
        };
        if wanted_rv
            .as_deref()
            .is_some_and(|rv| rv != current.resource_version().to_string())
        {
            return Err(Status::stale(target.rt, &name).into());
        }
        let replicas = wanted
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let mut next = current.clone();
        next["spec"]["replicas"] = json!(replicas);
        let scale_target = Target {
            subresource: None,
            ..target.clone()
        };
        let next = prepare_update(&scale_target, &current, next)?;
        let (next, _) = check(target.rt, &next, &params)?;
        match commit_update(&state, &scale_target, &current, next, &params, &[]).await? {
            Ok(_) => {
                let obj = load(&state, &key_of(&target, &name), false)
                    .await?
                    .ok_or_else(|| not_found(&target, &name))?;
                return Ok(json_response(StatusCode::OK, &scale_of(&target, &obj)));
            }
            Err(OpError::Conflict { .. }) if wanted_rv.is_none() => continue,
            Err(e) => return Err(store_op_error(&target, &name, e)),
        }
    }
    Err(Status::stale(target.rt, &name).into())
}

/// A pod's container (named by `container`, or the only one) and the base URL of the
/// agent of its node (the kubelet endpoint the Node publishes).
async fn pod_agent(state: &ApiState, target: &Target, params: &Params) -> Result<(String, String)> {
    let name = target.name.clone().unwrap_or_default();
    let pod = load(state, &key_of(target, &name), true)
        .await?
        .ok_or_else(|| not_found(target, &name))?;
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if node_name.is_empty() {
        return Err(
            Status::bad_request(format!("pod {name} does not have a host assigned")).into(),
        );
    }
    let containers: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let container = match params.get("container") {
        Some(c) if containers.iter().any(|x| x == c) => c.to_string(),
        Some(c) => {
            return Err(Status::bad_request(format!(
                "container {c} is not valid for pod {name}; choose one of: [{}]",
                containers.join(" ")
            ))
            .into());
        }
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            return Err(Status::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            ))
            .into());
        }
    };
    let nodes = resource::by_plural("", "nodes").expect("nodes registered");
    let node = load(state, &nodes.key(None, &node_name), true)
        .await?
        .ok_or_else(|| Status::not_found(nodes, &node_name))?;
    let ip = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| {
            a.iter()
                .find(|x| x.get("type").and_then(Value::as_str) == Some("InternalIP"))
        })
        .and_then(|x| x.get("address").and_then(Value::as_str))
        .unwrap_or("")
        .to_string();
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    if ip.is_empty() || port == 0 {
        return Err(Status::unavailable(format!("node {node_name} does not serve logs")).into());
    }
    Ok((container, format!("http://{ip}:{port}")))
}

/// The error for a node agent's failed answer: what it says of the request (no such
/// container, a conflict, a bad request) passes through; anything else (its token
/// refused, its own failure) is the node's trouble, not the caller's.
fn agent_failure(code: u16, text: &str) -> ApiError {
    let text = text.trim().to_string();
    ApiError(match code {
        404 => Status::new(404, "NotFound", text),
        409 => Status::new(409, "Conflict", text),
        400 => Status::bad_request(text),
        _ => Status::unavailable(format!("the pod's node agent answered {code}: {text}")),
    })
}

/// `GET pods/{name}/log`: proxied to the agent of the pod's node (its `containerLogs`
/// endpoint), streamed back as text.
pub async fn logs(state: ApiState, target: Target, req: Request) -> Result<Response> {
    let name = target.name.clone().unwrap_or_default();
    let query = req.uri().query().unwrap_or("").to_string();
    let params = Params::from_uri(req.uri());
    let (container, agent) = pod_agent(&state, &target, &params).await?;
    let ns = target.namespace.clone().unwrap_or_default();
    let url = format!("{agent}/containerLogs/{ns}/{name}/{container}?{query}");
    let resp = reqwest::Client::new()
        .get(&url)
        .bearer_auth(&state.tokens.node)
        .send()
        .await
        .map_err(|e| Status::unavailable(format!("cannot reach the pod's node agent: {e}")))?;
    if !resp.status().is_success() {
        let code = resp.status().as_u16();
        return Err(agent_failure(code, &resp.text().await.unwrap_or_default()));
    }
    let body = axum::body::Body::from_stream(resp.bytes_stream());
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(r)
}

/// The WebSocket subprotocols of kubectl's exec this server speaks, preferred first
/// (KEP-3396: v5 adds a close signal, which a server that only writes never needs).
const EXEC_PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// `POST pods/{name}/exec?command=…&container=…`: runs a command in a container, through
/// the agent of the pod's node, and answers `{"exitCode", "stdout", "stderr"}` once it
/// ends (what `wk exec` uses).
///
/// kubectl's `exec` asks for a WebSocket (`v5.channel.k8s.io`/`v4.channel.k8s.io`):
/// the command runs the same way, then its output goes back on channels 1 (stdout) and
/// 2 (stderr) and its outcome as a `Status` on channel 3, as a kubelet's would. The
/// output comes once the command has ended, not as it is written. Standard input and a
/// TTY (`-i`, `-t`) are refused, and so is SPDY.
pub async fn exec(state: ApiState, target: Target, req: Request) -> Result<Response> {
    let (mut parts, _) = req.into_parts();
    let params = Params::from_uri(&parts.uri);
    let websocket = parts
        .headers
        .get(header::UPGRADE)
        .map(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let upgrade = match websocket {
        None => None,
        Some(is_websocket) => {
            // Checked first, so that kubectl's fallback to SPDY is told the same.
            for (flag, what) in [("stdin", "standard input (-i)"), ("tty", "a TTY (-t)")] {
                if params.get(flag) == Some("true") {
                    return Err(Status::bad_request(format!(
                        "{flag}: Unsupported value: exec with {what} is not supported by wk; run the command without it"
                    ))
                    .into());
                }
            }
            if !is_websocket {
                return Err(Status::bad_request(
                    "exec over SPDY is not supported by wk; kubectl 1.30 or later uses WebSockets (or use `wk exec`)",
                )
                .into());
            }
            let ws = WebSocketUpgrade::from_request_parts(&mut parts, &())
                .await
                .map_err(|e| {
                    Status::bad_request(format!("the WebSocket upgrade: {}", e.body_text()))
                })?;
            Some(ws)
        }
    };
    let name = target.name.clone().unwrap_or_default();
    let command: Vec<String> = url_decode_pairs(parts.uri.query().unwrap_or(""))
        .into_iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v)
        .collect();
    if command.is_empty() {
        return Err(Status::bad_request(
            "command: Required value: the command to run (query parameter `command`, once per argument)",
        )
        .into());
    }
    let timeout: u64 = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .unwrap_or(60)
        .clamp(1, 3600);
    let (container, agent) = pod_agent(&state, &target, &params).await?;
    let ns = target.namespace.clone().unwrap_or_default();
    let run = AgentExec {
        url: format!("{agent}/exec/{ns}/{name}/{container}"),
        token: state.tokens.node.clone(),
        body: serde_json::json!({"command": command, "timeoutSeconds": timeout}),
    };
    if let Some(ws) = upgrade {
        // The pod and container were checked above, so those errors are plain HTTP
        // answers; the command runs once the stream is open.
        return Ok(ws
            .protocols(EXEC_PROTOCOLS)
            .on_upgrade(move |socket| exec_stream(socket, run)));
    }
    let mut r = (StatusCode::OK, run.call().await?).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

/// A command for the agent of a pod's node (`POST /exec/...`).
struct AgentExec {
    url: String,
    token: String,
    body: Value,
}

impl AgentExec {
    /// Runs it: the agent's `{"exitCode", "stdout", "stderr"}`.
    async fn call(&self) -> Result<String> {
        let resp = reqwest::Client::new()
            .post(&self.url)
            .bearer_auth(&self.token)
            .json(&self.body)
            .send()
            .await
            .map_err(|e| Status::unavailable(format!("cannot reach the pod's node agent: {e}")))?;
        let code = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        if code != 200 {
            return Err(agent_failure(code, &text));
        }
        Ok(text)
    }
}

/// One message of the channel protocol: the channel's number, then the bytes.
fn channel_message(channel: u8, data: &[u8]) -> Message {
    let mut m = Vec::with_capacity(data.len() + 1);
    m.push(channel);
    m.extend_from_slice(data);
    Message::Binary(m.into())
}

/// kubectl's side of an exec: the output on channels 1 and 2, then on channel 3 the
/// outcome as a kubelet reports it (a non-zero exit is `NonZeroExitCode` with the code
/// as an `ExitCode` cause, which kubectl exits with), then the close.
async fn exec_stream(mut socket: WebSocket, run: AgentExec) {
    let outcome = match run.call().await {
        Ok(text) => {
            let out: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            for (channel, field) in [(1, "stdout"), (2, "stderr")] {
                let data = out[field].as_str().unwrap_or("");
                if !data.is_empty()
                    && socket
                        .send(channel_message(channel, data.as_bytes()))
                        .await
                        .is_err()
                {
                    return;
                }
            }
            match out["exitCode"].as_i64() {
                Some(0) => json!({"metadata": {}, "status": "Success"}),
                code => {
                    let code = code.unwrap_or(-1);
                    json!({"metadata": {}, "status": "Failure",
                        "message": format!("command terminated with non-zero exit code: {code}"),
                        "reason": "NonZeroExitCode",
                        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}})
                }
            }
        }
        Err(ApiError(s)) => {
            json!({"metadata": {}, "status": "Failure", "message": s.message, "reason": s.reason, "code": s.code})
        }
    };
    let _ = socket
        .send(channel_message(3, outcome.to_string().as_bytes()))
        .await;
    // A normal closure (1000): kubectl reads a close without a code as an error.
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code: close_code::NORMAL,
            reason: "".into(),
        })))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let p = url_decode_pairs("labelSelector=app%3Dweb%2Ctier+in+(a)&watch=true&x");
        assert_eq!(p[0], ("labelSelector".into(), "app=web,tier in (a)".into()));
        assert_eq!(p[1], ("watch".into(), "true".into()));
        assert_eq!(p[2], ("x".into(), "".into()));
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
