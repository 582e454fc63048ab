//! `wk apply -f`: create or update objects from manifests, kubectl-style.
//!
//! Updates are three-way: the manifest last applied is kept in the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation (so `wk apply` and
//! `kubectl apply` interoperate), and fields dropped from the manifest are removed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{Map, Value, json};
use wk_api::meta::ObjectMetaExt;
use wk_controlplane::apiserver::json_merge_patch;

use crate::output::object_ref;

pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

#[derive(clap::Args)]
pub struct Args {
    /// Manifest file, directory or - for stdin (repeatable)
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// Namespace for objects that do not name one
    #[arg(short, long)]
    namespace: Option<String>,
    /// Unknown fields: strict (error), warn, or ignore
    #[arg(long, default_value = "strict", value_parser = ["strict", "warn", "ignore"])]
    validate: String,
    /// Only show what would happen
    #[arg(long)]
    dry_run: bool,
}

/// A JSON merge patch turning the last applied manifest `old` into `new`: everything in
/// `new`, plus `null` for fields that `old` had and `new` dropped.
pub fn three_way(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut out = Map::new();
            for (k, v) in n {
                out.insert(k.clone(), three_way(o.get(k).unwrap_or(&Value::Null), v));
            }
            for k in o.keys() {
                if !n.contains_key(k) {
                    out.insert(k.clone(), Value::Null);
                }
            }
            Value::Object(out)
        }
        (_, n) => n.clone(),
    }
}

pub async fn run(args: Args, kubeconfig: &Path) -> anyhow::Result<ExitCode> {
    let docs = super::read_manifests(&args.files)?;
    if docs.is_empty() {
        anyhow::bail!("no objects passed to apply");
    }
    let client = super::client(kubeconfig)?;
    let validation = match args.validate.as_str() {
        "strict" => "Strict",
        "warn" => "Warn",
        _ => "Ignore",
    };
    let ok = apply_docs(
        &client,
        docs,
        args.namespace.as_deref(),
        validation,
        args.dry_run,
    )
    .await?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Applies objects, printing one line each; returns whether all succeeded.
pub async fn apply_docs(
    client: &wk_client::Client,
    docs: Vec<(String, Value)>,
    namespace: Option<&str>,
    validation: &str,
    dry_run: bool,
) -> anyhow::Result<bool> {
    let mut query = vec![
        ("fieldManager", "wk-apply".to_string()),
        ("fieldValidation", validation.to_string()),
    ];
    if dry_run {
        query.push(("dryRun", "All".into()));
    }
    let suffix = if dry_run { " (dry run)" } else { "" };
    let mut failed = false;
    for (source, mut doc) in docs {
        let rt = super::resource_of(&source, &doc)?;
        let Some(name) = doc.name().map(String::from) else {
            eprintln!(
                "error: {source}: {} has no metadata.name (apply needs a name)",
                rt.kind
            );
            failed = true;
            continue;
        };
        if let (Some(theirs), Some(asked)) = (doc.namespace(), namespace)
            && rt.namespaced
            && theirs != asked
        {
            // kubectl's rule: a manifest's namespace and -n must agree.
            eprintln!(
                "error: {source}: the namespace from the provided object \"{theirs}\" does not match the namespace \"{asked}\". You must pass '--namespace={theirs}' to perform this operation."
            );
            failed = true;
            continue;
        }
        let ns = doc
            .namespace()
            .map(String::from)
            .or(namespace.map(String::from));
        if rt.namespaced {
            if let Some(n) = &ns {
                doc.set_meta("namespace", n.clone());
            }
        }
        // The annotation holds the manifest itself (without the annotation).
        let mut manifest = doc.clone();
        if let Some(a) = manifest
            .meta_mut()
            .get_mut("annotations")
            .and_then(Value::as_object_mut)
        {
            a.remove(LAST_APPLIED);
        }
        let last = format!("{}\n", manifest);
        doc.meta_mut()
            .entry("annotations")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .map(|a| a.insert(LAST_APPLIED.into(), json!(last)));
        let result = match client.get_opt(rt, ns.as_deref(), &name).await? {
            None => client
                .create(rt, ns.as_deref(), &doc, &query)
                .await
                .map(|_| "created"),
            Some(current) => {
                let old: Value = current
                    .pointer(&format!(
                        "/metadata/annotations/{}",
                        LAST_APPLIED.replace('/', "~1")
                    ))
                    .and_then(Value::as_str)
                    .and_then(|s| serde_json::from_str(s).ok())
                    .unwrap_or(json!({}));
                let patch = three_way(&old, &doc);
                // Unchanged: the same manifest as last time, and the live object already
                // agrees with it.
                let same_manifest = old == manifest;
                if same_manifest || json_merge_patch(&current, &patch) == current {
                    Ok("unchanged")
                } else {
                    client
                        .patch(
                            rt,
                            ns.as_deref(),
                            &name,
                            "application/merge-patch+json",
                            &patch,
                            &query,
                        )
                        .await
                        .map(|_| "configured")
                }
            }
        };
        for w in client.take_warnings() {
            eprintln!("Warning: {w}");
        }
        match result {
            Ok(what) => println!("{} {what}{suffix}", object_ref(rt, &name)),
            Err(wk_client::ClientError::Api(s)) => {
                eprintln!("{}", crate::output::api_error_line(&s));
                failed = true;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(!failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_way_removes_dropped_fields() {
        let old =
            json!({"spec": {"replicas": 2, "paused": true}, "metadata": {"labels": {"a": "b"}}});
        let new = json!({"spec": {"replicas": 3}, "metadata": {}});
        let p = three_way(&old, &new);
        assert_eq!(
            p,
            json!({"spec": {"replicas": 3, "paused": null}, "metadata": {"labels": null}})
        );
        let live = json!({"spec": {"replicas": 2, "paused": true, "x": 1}, "metadata": {"labels": {"a": "b"}, "uid": "u"}});
        assert_eq!(
            json_merge_patch(&live, &p),
            json!({"spec": {"replicas": 3, "x": 1}, "metadata": {"uid": "u"}})
        );
    }
}
