//! `wk describe`: one object in readable form, followed by its events.

use std::path::Path;
use std::process::ExitCode;

use serde_json::Value;
use wk_api::meta::ObjectMetaExt;
use wk_client::ListParams;

use crate::output::print_rows;

#[derive(clap::Args)]
pub struct Args {
    /// Resource type
    kind: String,
    /// Object name
    name: String,
    #[arg(short, long)]
    namespace: Option<String>,
}

fn map_lines(v: Option<&Value>) -> Vec<String> {
    match v.and_then(Value::as_object) {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(&v.to_string())))
            .collect(),
        _ => vec!["<none>".into()],
    }
}

fn field(label: &str, values: &[String]) {
    let mut first = true;
    for v in values {
        if first {
            println!("{:<19}{v}", format!("{label}:"));
            first = false;
        } else {
            println!("{:<19}{v}", "");
        }
    }
}

fn section(title: &str, v: Option<&Value>) -> anyhow::Result<()> {
    if let Some(v) = v.filter(|v| !v.is_null()) {
        println!("{title}:");
        for line in serde_yaml::to_string(v)?.lines() {
            println!("  {line}");
        }
    }
    Ok(())
}

pub async fn run(args: Args, kubeconfig: &Path) -> anyhow::Result<ExitCode> {
    let rt = super::resource(&args.kind)?;
    let client = super::client(kubeconfig)?;
    let obj = client
        .get(rt, args.namespace.as_deref(), &args.name)
        .await?;
    field("Name", &[obj.name().unwrap_or("").to_string()]);
    if rt.namespaced {
        field("Namespace", &[obj.namespace().unwrap_or("").to_string()]);
    }
    field("Labels", &map_lines(obj.pointer("/metadata/labels")));
    let annotations: Vec<String> = match obj
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        Some(m) if !m.is_empty() => m
            .iter()
            .filter(|(k, _)| k.as_str() != super::apply::LAST_APPLIED)
            .map(|(k, v)| format!("{k}: {}", v.as_str().unwrap_or("")))
            .collect(),
        _ => vec![],
    };
    field(
        "Annotations",
        &if annotations.is_empty() {
            vec!["<none>".into()]
        } else {
            annotations
        },
    );
    field(
        "CreationTimestamp",
        &[obj.meta_str("creationTimestamp").unwrap_or("").to_string()],
    );
    if let Some(d) = obj.deletion_timestamp() {
        field("DeletionTimestamp", &[d.to_string()]);
    }
    for key in ["spec", "data", "status"] {
        let title = format!("{}{}", key[..1].to_uppercase(), &key[1..]);
        section(&title, obj.get(key))?;
    }
    // Events about this object.
    let events_rt = super::resource("events")?;
    let mut selector = format!(
        "involvedObject.name={},involvedObject.kind={}",
        args.name, rt.kind
    );
    if let Some(ns) = obj.namespace() {
        selector.push_str(&format!(",involvedObject.namespace={ns}"));
    }
    let p = ListParams {
        field_selector: Some(selector),
        ..Default::default()
    };
    let events = client.list(events_rt, obj.namespace(), false, &p).await?;
    let items = events
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if items.is_empty() {
        println!("Events:            <none>");
    } else {
        println!("Events:");
        let mut rows = vec![vec![
            "  Type".to_string(),
            "Reason".into(),
            "Age".into(),
            "From".into(),
            "Message".into(),
        ]];
        for e in items {
            let s = |p: &str| {
                e.pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            let when = e
                .get("lastTimestamp")
                .and_then(Value::as_str)
                .or(e
                    .pointer("/metadata/creationTimestamp")
                    .and_then(Value::as_str))
                .map(String::from);
            rows.push(vec![
                format!("  {}", s("/type")),
                s("/reason"),
                age(when.as_deref()),
                s("/source/component"),
                s("/message"),
            ]);
        }
        print_rows(&rows);
    }
    Ok(ExitCode::SUCCESS)
}

fn age(ts: Option<&str>) -> String {
    let Some(t) = ts.and_then(|t| t.parse::<jiff::Timestamp>().ok()) else {
        return "<unknown>".into();
    };
    let s = (jiff::Timestamp::now() - t).get_seconds().max(0);
    if s < 120 {
        format!("{s}s")
    } else if s < 7200 {
        format!("{}m", s / 60)
    } else if s < 172800 {
        format!("{}h", s / 3600)
    } else {
        format!("{}d", s / 86400)
    }
}
