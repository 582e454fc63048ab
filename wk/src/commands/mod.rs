//! One module per subcommand.

pub mod agent;
pub mod apply;
pub mod delete;
pub mod describe;
pub mod exec;
pub mod get;
pub mod image;
pub mod logs;
pub mod rollout;
pub mod server;
pub mod up;
pub mod version;

use std::path::Path;

use anyhow::Context;
use wk_client::Client;

/// Opens a client from the client config.
pub fn client(kubeconfig: &Path) -> anyhow::Result<Client> {
    Client::from_path(kubeconfig).context("cannot load the client config")
}

/// A container of a pod, as `wk logs` and `wk exec` name it.
#[derive(clap::Args)]
pub struct PodContainer {
    /// Pod name
    pod: String,
    /// Container (defaults to the pod's only container)
    #[arg(short, long)]
    container: Option<String>,
    #[arg(short, long)]
    namespace: Option<String>,
}

impl PodContainer {
    /// The path of the pod's `sub`resource, and the query naming the container.
    pub fn subresource(
        &self,
        client: &Client,
        sub: &str,
    ) -> anyhow::Result<(String, Vec<(&'static str, String)>)> {
        let rt = resource("pods")?;
        let ns = self
            .namespace
            .clone()
            .unwrap_or_else(|| client.config.namespace.clone());
        if let Some(why) = wk_api::resource::ResourceType::invalid_name(&self.pod) {
            anyhow::bail!(why);
        }
        let path = format!("{}/{sub}", rt.object_path(Some(&ns), &self.pod));
        let query = self
            .container
            .iter()
            .map(|c| ("container", c.clone()))
            .collect();
        Ok((path, query))
    }
}

/// Resolves a kind typed by the user.
pub fn resource(kind: &str) -> anyhow::Result<&'static wk_api::ResourceType> {
    wk_api::resource::lookup(kind)
        .ok_or_else(|| anyhow::anyhow!("the server doesn't have a resource type \"{kind}\""))
}

/// Reads manifests from files, directories (`*.yaml`, `*.yml`, `*.json`, sorted) or `-`
/// (stdin), returning each object with where it came from.
pub fn read_manifests(
    paths: &[std::path::PathBuf],
) -> anyhow::Result<Vec<(String, serde_json::Value)>> {
    use std::io::Read;
    let mut out = Vec::new();
    let mut files = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading stdin")?;
            for doc in wk_api::decode::parse_documents(&text).context("stdin")? {
                out.push(("stdin".to_string(), doc));
            }
            continue;
        }
        if p.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(p)
                .with_context(|| format!("reading directory {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.extension()
                        .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
                })
                .collect();
            entries.sort();
            files.extend(entries);
        } else {
            files.push(p.clone());
        }
    }
    for f in files {
        let text = std::fs::read_to_string(&f)
            .with_context(|| format!("the path \"{}\" cannot be read", f.display()))?;
        let docs = wk_api::decode::parse_documents(&text)
            .with_context(|| format!("error parsing {}", f.display()))?;
        for doc in docs {
            out.push((f.display().to_string(), doc));
        }
    }
    Ok(out)
}

/// The resource type of a manifest object, with a message naming its source.
pub fn resource_of(
    source: &str,
    obj: &serde_json::Value,
) -> anyhow::Result<&'static wk_api::ResourceType> {
    wk_api::decode::resource_of(obj).map_err(|e| anyhow::anyhow!("{source}: {e}"))
}
