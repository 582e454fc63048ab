//! `wk delete`: delete objects by kind and name, by selector, or from manifests.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};
use wk_api::meta::ObjectMetaExt;
use wk_client::{ClientError, ListParams};

#[derive(clap::Args)]
pub struct Args {
    /// Resource type, then names (or use -f)
    #[arg(required_unless_present = "files")]
    kind: Option<String>,
    names: Vec<String>,
    /// Manifest file, directory or - for stdin
    #[arg(short = 'f', long = "filename")]
    files: Vec<PathBuf>,
    #[arg(short, long)]
    namespace: Option<String>,
    /// Delete the objects matching this label selector
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Seconds to let pods stop (0 deletes at once)
    #[arg(long)]
    grace_period: Option<i64>,
    /// Treat "not found" as success
    #[arg(long)]
    ignore_not_found: bool,
    /// Wait until the objects are gone (default true)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    wait: bool,
}

/// `wk delete server ID…`: removes control-plane members (on the leader, through joint
/// consensus; `wk get servers` shows the ids).
async fn servers(args: &Args, kubeconfig: &Path) -> anyhow::Result<ExitCode> {
    let client = super::client(kubeconfig)?;
    if args.names.is_empty() {
        anyhow::bail!("name the servers to remove by id (see `wk get servers`)");
    }
    let mut code = ExitCode::SUCCESS;
    for id in &args.names {
        let id: u64 = id
            .parse()
            .map_err(|_| anyhow::anyhow!("{id:?} is not a server id (see `wk get servers`)"))?;
        let path = format!("/wk/v1/cluster/members/{id}");
        match client
            .request(wk_client::Method::DELETE, &path, &[], None, None)
            .await
        {
            Ok(_) => println!("server {id} removed"),
            Err(e) => {
                eprintln!("error: removing server {id}: {e}");
                code = ExitCode::FAILURE;
            }
        }
    }
    Ok(code)
}

pub async fn run(args: Args, kubeconfig: &Path) -> anyhow::Result<ExitCode> {
    if matches!(args.kind.as_deref(), Some("server" | "servers")) {
        return servers(&args, kubeconfig).await;
    }
    let client = super::client(kubeconfig)?;
    let mut targets: Vec<(&'static wk_api::ResourceType, Option<String>, String)> = Vec::new();
    if !args.files.is_empty() {
        for (source, doc) in super::read_manifests(&args.files)? {
            let rt = super::resource_of(&source, &doc)?;
            let name = doc.name().unwrap_or_default().to_string();
            targets.push((
                rt,
                doc.namespace().map(String::from).or(args.namespace.clone()),
                name,
            ));
        }
    } else if let Some(kind) = &args.kind {
        let rt = super::resource(kind)?;
        if let Some(sel) = &args.selector {
            let p = ListParams {
                label_selector: Some(sel.clone()),
                ..Default::default()
            };
            let list = client
                .list(rt, args.namespace.as_deref(), false, &p)
                .await?;
            for i in list
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
            {
                targets.push((
                    rt,
                    args.namespace.clone(),
                    i.name().unwrap_or_default().to_string(),
                ));
            }
            if targets.is_empty() {
                eprintln!("No resources found");
            }
        } else if args.names.is_empty() {
            anyhow::bail!("resource(s) were provided, but no name was specified");
        } else {
            for n in &args.names {
                targets.push((rt, args.namespace.clone(), n.clone()));
            }
        }
    }
    let mut options = json!({"propagationPolicy": "Background"});
    if let Some(g) = args.grace_period {
        options["gracePeriodSeconds"] = json!(g);
    }
    let mut failed = false;
    for (rt, ns, name) in targets {
        match client.delete(rt, ns.as_deref(), &name, &options).await {
            Ok(_) => {
                if args.wait {
                    wait_gone(&client, rt, ns.as_deref(), &name).await?;
                }
                println!(
                    "{} \"{name}\" deleted",
                    if rt.group.is_empty() {
                        rt.singular.to_string()
                    } else {
                        format!("{}.{}", rt.singular, rt.group)
                    }
                );
            }
            Err(e) if wk_client::is_not_found(&e) && args.ignore_not_found => {}
            Err(ClientError::Api(s)) => {
                eprintln!("{}", crate::output::api_error_line(&s));
                failed = true;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Polls until the object is gone (objects with finalizers or stopping pods linger).
async fn wait_gone(
    client: &wk_client::Client,
    rt: &wk_api::ResourceType,
    ns: Option<&str>,
    name: &str,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while client.get_opt(rt, ns, name).await?.is_some() {
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "timed out waiting for {} \"{name}\" to be deleted",
                rt.singular
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
