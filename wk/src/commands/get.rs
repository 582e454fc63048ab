//! `wk get`: list objects or show one, as kubectl-like tables (rendered by the server),
//! YAML, JSON or names; `-w` keeps watching.

use std::path::Path;
use std::process::ExitCode;

use futures::StreamExt;
use serde_json::{Value, json};
use wk_client::ListParams;

use crate::output::{object_ref, print_table};

#[derive(clap::Args)]
pub struct Args {
    /// Resource type (pods, po, deployments, deploy, svc, ns, cm, ...)
    kind: String,
    /// Name of one object
    name: Option<String>,
    /// Namespace
    #[arg(short, long)]
    namespace: Option<String>,
    /// List across all namespaces
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Output format: wide, yaml, json or name
    #[arg(short, long, value_parser = ["wide", "yaml", "json", "name"])]
    output: Option<String>,
    /// Label selector (app=web,tier in (a,b))
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Field selector (metadata.name=x,status.phase=Running)
    #[arg(long)]
    field_selector: Option<String>,
    /// After listing, watch for changes
    #[arg(short, long)]
    watch: bool,
    /// Don't print headers
    #[arg(long)]
    no_headers: bool,
}

/// `wk get servers`: the control plane's members, their roles and Raft progress.
async fn servers(args: &Args, kubeconfig: &Path) -> anyhow::Result<ExitCode> {
    let v = super::client(kubeconfig)?.cluster_members().await?;
    match args.output.as_deref() {
        Some("json") => println!("{}", serde_json::to_string_pretty(&v)?),
        Some("yaml") => print!("{}", serde_yaml::to_string(&v)?),
        _ => {
            let leader = v["leader"].as_u64();
            let cell = |x: &Value| match x {
                Value::Null => "-".to_string(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let header = [
                "ID", "URL", "ROLE", "LEADER", "STATE", "TERM", "LAST LOG", "APPLIED",
            ];
            let mut rows: Vec<Vec<String>> = Vec::new();
            if !args.no_headers {
                rows.push(header.iter().map(|h| h.to_string()).collect());
            }
            rows.extend(v["members"].as_array().into_iter().flatten().map(|m| {
                let id = m["id"].as_u64().unwrap_or(0);
                let state = if m["error"].is_string() {
                    "Unreachable".to_string()
                } else {
                    cell(&m["state"])
                };
                vec![
                    id.to_string(),
                    cell(&m["url"]),
                    cell(&m["role"]),
                    if Some(id) == leader {
                        "yes".into()
                    } else {
                        "".into()
                    },
                    state,
                    cell(&m["term"]),
                    cell(&m["lastLogIndex"]),
                    cell(&m["appliedIndex"]),
                ]
            }));
            crate::output::print_rows(&rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run(args: Args, kubeconfig: &Path) -> anyhow::Result<ExitCode> {
    if matches!(args.kind.as_str(), "servers" | "server") {
        return servers(&args, kubeconfig).await;
    }
    let rt = super::resource(&args.kind)?;
    let client = super::client(kubeconfig)?;
    let ns = args.namespace.as_deref();
    let all = args.all_namespaces && args.name.is_none();
    let mut params = ListParams {
        label_selector: args.selector.clone(),
        field_selector: args.field_selector.clone(),
        ..Default::default()
    };
    let with_ns = all && rt.namespaced;
    match args.output.as_deref() {
        None | Some("wide") => {
            let wide = args.output.is_some();
            let table = client
                .table(rt, ns, all, args.name.as_deref(), &params)
                .await?;
            let n = print_table(&table, wide, with_ns, !args.no_headers);
            if n == 0 && !args.watch {
                let where_ = if rt.namespaced && !all {
                    format!(" in {} namespace", ns.unwrap_or(&client.config.namespace))
                } else {
                    String::new()
                };
                eprintln!("No resources found{where_}.");
            }
            if args.watch {
                params.resource_version = table
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .map(String::from);
                if let Some(name) = &args.name {
                    params.field_selector = Some(format!("metadata.name={name}"));
                }
                let mut events = Box::pin(client.watch(rt, ns, all, &params, true).await?);
                while let Some(ev) = events.next().await {
                    let ev = ev?;
                    if ev.kind == "ERROR" {
                        anyhow::bail!(
                            "watch ended: {}",
                            ev.object
                                .get("message")
                                .and_then(Value::as_str)
                                .unwrap_or("")
                        );
                    }
                    if ev.kind == "BOOKMARK" {
                        continue;
                    }
                    print_table(&ev.object, wide, with_ns, false);
                }
            }
        }
        Some(fmt) => {
            let value = match &args.name {
                Some(name) => client.get(rt, ns, name).await?,
                None => {
                    let list = client.list(rt, ns, all, &params).await?;
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": list.get("items").cloned().unwrap_or(json!([]))})
                }
            };
            match fmt {
                "json" => println!("{}", serde_json::to_string_pretty(&value)?),
                "yaml" => print!("{}", serde_yaml::to_string(&value)?),
                _ => {
                    let items = match value.get("items").and_then(Value::as_array) {
                        Some(items) => items.clone(),
                        None => vec![value.clone()],
                    };
                    for i in items {
                        println!(
                            "{}",
                            object_ref(
                                rt,
                                i.pointer("/metadata/name")
                                    .and_then(Value::as_str)
                                    .unwrap_or("")
                            )
                        );
                    }
                }
            }
            if args.watch {
                let mut events = Box::pin(client.watch(rt, ns, all, &params, false).await?);
                while let Some(ev) = events.next().await {
                    let ev = ev?;
                    if ev.kind == "BOOKMARK" {
                        continue;
                    }
                    match fmt {
                        "json" => println!("{}", serde_json::to_string_pretty(&ev.object)?),
                        "yaml" => print!("---\n{}", serde_yaml::to_string(&ev.object)?),
                        _ => println!(
                            "{}",
                            object_ref(
                                rt,
                                ev.object
                                    .pointer("/metadata/name")
                                    .and_then(Value::as_str)
                                    .unwrap_or("")
                            )
                        ),
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
