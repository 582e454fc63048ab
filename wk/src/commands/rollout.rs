//! `wk rollout status|history|undo|restart|pause|resume` and `wk scale`, with kubectl's
//! wording and semantics (rollback copies an older ReplicaSet's template back into the
//! Deployment; restart stamps `kubectl.kubernetes.io/restartedAt` on the template).

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use wk_api::ResourceType;
use wk_api::meta::ObjectMetaExt;
use wk_client::{Client, ListParams};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

/// `deployment/NAME` or `deployment NAME`, and the namespace.
#[derive(clap::Args)]
pub struct Target {
    /// `KIND/NAME` or `KIND`
    target: String,
    /// Object name, when the first argument is only the kind
    name: Option<String>,
    #[arg(short, long)]
    namespace: Option<String>,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Wait until a rollout finishes
    Status {
        #[command(flatten)]
        target: Target,
        /// Give up after this long (e.g. 90s, 5m); 0 waits forever
        #[arg(long, default_value = "0s")]
        timeout: String,
        /// Print the status once instead of waiting
        #[arg(short, long, default_value_t = true, action = clap::ArgAction::Set)]
        watch: bool,
    },
    /// List revisions (or show one with --revision)
    History {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        revision: Option<i64>,
    },
    /// Roll back to the previous revision (or --to-revision)
    Undo {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 0)]
        to_revision: i64,
    },
    /// Restart every pod through a rolling update
    Restart {
        #[command(flatten)]
        target: Target,
    },
    /// Stop rolling out template changes
    Pause {
        #[command(flatten)]
        target: Target,
    },
    /// Resume a paused rollout
    Resume {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(clap::Args)]
pub struct ScaleArgs {
    #[command(flatten)]
    target: Target,
    /// The new number of replicas
    #[arg(long)]
    replicas: i64,
}

impl Target {
    fn resolve(&self) -> anyhow::Result<(&'static ResourceType, String)> {
        let (kind, name) = match (self.target.split_once('/'), &self.name) {
            (Some((k, n)), None) => (k.to_string(), n.to_string()),
            (None, Some(n)) => (self.target.clone(), n.clone()),
            (Some(_), Some(_)) => bail!(
                "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form"
            ),
            (None, None) => {
                bail!("required resource name not specified: use KIND/NAME or KIND NAME")
            }
        };
        let rt = super::resource(&kind)?;
        if name.is_empty() {
            bail!("required resource name not specified");
        }
        Ok((rt, name))
    }
}

fn label(rt: &ResourceType, name: &str) -> String {
    if rt.group.is_empty() {
        format!("{}/{name}", rt.singular)
    } else {
        format!("{}.{}/{name}", rt.singular, rt.group)
    }
}

fn int(v: &Value, p: &str) -> i64 {
    v.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .with_context(|| format!("invalid duration {s:?} (use e.g. 90s, 5m)"))?;
    Ok(Duration::from_secs(match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => bail!("invalid duration {s:?} (use e.g. 90s, 5m)"),
    }))
}

/// kubectl's rollout status message for a Deployment or DaemonSet: `(message, done)`.
pub fn status_message(kind: &str, obj: &Value) -> anyhow::Result<(String, bool)> {
    let name = obj.name().unwrap_or("");
    if int(obj, "/metadata/generation") > int(obj, "/status/observedGeneration") {
        return Ok((
            "Waiting for deployment spec update to be observed...".into(),
            false,
        ));
    }
    match kind {
        "Deployment" => {
            let progressing = obj
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Progressing"));
            if progressing.is_some_and(|c| c["reason"] == "ProgressDeadlineExceeded") {
                bail!("deployment {name:?} exceeded its progress deadline");
            }
            let want = obj
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let updated = int(obj, "/status/updatedReplicas");
            let replicas = int(obj, "/status/replicas");
            let available = int(obj, "/status/availableReplicas");
            Ok(if updated < want {
                (
                    format!(
                        "Waiting for deployment {name:?} rollout to finish: {updated} out of {want} new replicas have been updated..."
                    ),
                    false,
                )
            } else if replicas > updated {
                (
                    format!(
                        "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
                        replicas - updated
                    ),
                    false,
                )
            } else if available < updated {
                (
                    format!(
                        "Waiting for deployment {name:?} rollout to finish: {available} of {updated} updated replicas are available..."
                    ),
                    false,
                )
            } else {
                (format!("deployment {name:?} successfully rolled out"), true)
            })
        }
        "DaemonSet" => {
            let desired = int(obj, "/status/desiredNumberScheduled");
            let updated = int(obj, "/status/updatedNumberScheduled");
            let available = int(obj, "/status/numberAvailable");
            Ok(if updated < desired {
                (
                    format!(
                        "Waiting for daemon set {name:?} rollout to finish: {updated} out of {desired} new pods have been updated..."
                    ),
                    false,
                )
            } else if available < desired {
                (
                    format!(
                        "Waiting for daemon set {name:?} rollout to finish: {available} of {desired} updated pods are available..."
                    ),
                    false,
                )
            } else {
                (format!("daemon set {name:?} successfully rolled out"), true)
            })
        }
        other => bail!("no status viewer has been implemented for {other}"),
    }
}

/// The ReplicaSets a Deployment owns, sorted by revision.
async fn revisions(client: &Client, d: &Value) -> anyhow::Result<Vec<(i64, Value)>> {
    let rs_rt = super::resource("replicasets")?;
    let list = client
        .list(rs_rt, d.namespace(), false, &ListParams::default())
        .await?;
    let uid = d.uid().unwrap_or("");
    let mut out: Vec<(i64, Value)> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| {
            r.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|o| o.iter().any(|o| o["uid"] == uid))
        })
        .map(|r| {
            let rev = r
                .pointer("/metadata/annotations/deployment.kubernetes.io~1revision")
                .and_then(Value::as_str)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            (rev, r.clone())
        })
        .collect();
    out.sort_by_key(|(r, _)| *r);
    Ok(out)
}

fn template_of(rs: &Value) -> Value {
    let mut t = rs.pointer("/spec/template").cloned().unwrap_or_default();
    if let Some(l) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        l.remove("pod-template-hash");
    }
    t
}

fn require_deployment(rt: &ResourceType, verb: &str) -> anyhow::Result<()> {
    if rt.kind != "Deployment" {
        bail!(
            "{verb} is not supported for {}: only deployments",
            rt.plural
        );
    }
    Ok(())
}

pub async fn run(args: Args, kubeconfig: &Path) -> anyhow::Result<ExitCode> {
    let client = super::client(kubeconfig)?;
    match args.action {
        Action::Status {
            target,
            timeout,
            watch,
        } => {
            let (rt, name) = target.resolve()?;
            if !matches!(rt.kind, "Deployment" | "DaemonSet") {
                bail!("no status viewer has been implemented for {}", rt.kind);
            }
            let timeout = parse_duration(&timeout)?;
            let start = Instant::now();
            let mut last = String::new();
            loop {
                let obj = client.get(rt, target.namespace.as_deref(), &name).await?;
                let (msg, done) = status_message(rt.kind, &obj)?;
                if msg != last {
                    println!("{msg}");
                    last = msg;
                }
                if done || !watch {
                    return Ok(ExitCode::SUCCESS);
                }
                if !timeout.is_zero() && start.elapsed() >= timeout {
                    bail!("timed out waiting for the condition");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Action::History { target, revision } => {
            let (rt, name) = target.resolve()?;
            require_deployment(rt, "rollout history")?;
            let d = client.get(rt, target.namespace.as_deref(), &name).await?;
            let revs = revisions(&client, &d).await?;
            if let Some(want) = revision {
                let Some((_, rs)) = revs.iter().find(|(r, _)| *r == want) else {
                    bail!("unable to find the specified revision");
                };
                println!("{} with revision #{want}", label(rt, &name));
                println!("Pod Template:");
                for line in serde_yaml::to_string(&template_of(rs))?.lines() {
                    println!("  {line}");
                }
                return Ok(ExitCode::SUCCESS);
            }
            println!("{}", label(rt, &name));
            println!("REVISION  CHANGE-CAUSE");
            for (rev, rs) in &revs {
                let cause = rs
                    .pointer("/metadata/annotations/kubernetes.io~1change-cause")
                    .and_then(Value::as_str)
                    .unwrap_or("<none>");
                println!("{rev:<10}{cause}");
            }
            println!();
            Ok(ExitCode::SUCCESS)
        }
        Action::Undo {
            target,
            to_revision,
        } => {
            let (rt, name) = target.resolve()?;
            require_deployment(rt, "rollout undo")?;
            let d = client.get(rt, target.namespace.as_deref(), &name).await?;
            if d.pointer("/spec/paused") == Some(&json!(true)) {
                bail!(
                    "you cannot rollback a paused deployment; resume it first with 'wk rollout resume {}' and try again",
                    label(rt, &name)
                );
            }
            let revs = revisions(&client, &d).await?;
            let chosen = if to_revision > 0 {
                revs.iter().find(|(r, _)| *r == to_revision)
            } else {
                // The previous revision: the newest one below the current.
                revs.iter().rev().nth(1)
            };
            let Some((rev, rs)) = chosen else {
                if to_revision > 0 {
                    bail!("unable to find specified revision {to_revision} in history");
                }
                bail!("no rollout history found for {}", label(rt, &name));
            };
            let template = template_of(rs);
            if d.pointer("/spec/template") == Some(&template) {
                println!(
                    "{} skipped rollback (current template already matches revision {rev})",
                    label(rt, &name)
                );
                return Ok(ExitCode::SUCCESS);
            }
            let patch = json!([{"op": "replace", "path": "/spec/template", "value": template}]);
            client
                .patch(
                    rt,
                    target.namespace.as_deref(),
                    &name,
                    "application/json-patch+json",
                    &patch,
                    &[],
                )
                .await?;
            println!("{} rolled back", label(rt, &name));
            Ok(ExitCode::SUCCESS)
        }
        Action::Restart { target } => {
            let (rt, name) = target.resolve()?;
            if !matches!(rt.kind, "Deployment" | "DaemonSet") {
                bail!("restarting is not supported for {}", rt.plural);
            }
            let now = wk_api::objects::now_rfc3339();
            let patch = json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": now}}}}});
            client
                .patch(
                    rt,
                    target.namespace.as_deref(),
                    &name,
                    "application/merge-patch+json",
                    &patch,
                    &[],
                )
                .await?;
            println!("{} restarted", label(rt, &name));
            Ok(ExitCode::SUCCESS)
        }
        Action::Pause { target } => set_paused(&client, &target, true).await,
        Action::Resume { target } => set_paused(&client, &target, false).await,
    }
}

async fn set_paused(client: &Client, target: &Target, paused: bool) -> anyhow::Result<ExitCode> {
    let (rt, name) = target.resolve()?;
    require_deployment(
        rt,
        if paused {
            "rollout pause"
        } else {
            "rollout resume"
        },
    )?;
    let d = client.get(rt, target.namespace.as_deref(), &name).await?;
    let word = if paused { "paused" } else { "resumed" };
    if (d.pointer("/spec/paused") == Some(&json!(true))) == paused {
        bail!(
            "{} is not {}",
            label(rt, &name),
            if paused { "resumed" } else { "paused" }
        );
    }
    client
        .patch(
            rt,
            target.namespace.as_deref(),
            &name,
            "application/merge-patch+json",
            &json!({"spec": {"paused": paused}}),
            &[],
        )
        .await?;
    println!("{} {word}", label(rt, &name));
    Ok(ExitCode::SUCCESS)
}

/// `wk scale`: sets `spec.replicas` through the scale subresource.
pub async fn scale(args: ScaleArgs, kubeconfig: &Path) -> anyhow::Result<ExitCode> {
    let client = super::client(kubeconfig)?;
    let (rt, name) = args.target.resolve()?;
    if !rt.subresources.contains(&"scale") {
        bail!("the server does not allow scaling {}", rt.plural);
    }
    if args.replicas < 0 {
        bail!(
            "The --replicas=COUNT flag is required, and COUNT must be greater than or equal to 0"
        );
    }
    let patch = json!({"spec": {"replicas": args.replicas}});
    client
        .patch_subresource(rt, args.target.namespace.as_deref(), &name, "scale", &patch)
        .await?;
    println!("{} scaled", label(rt, &name));
    Ok(ExitCode::SUCCESS)
}
