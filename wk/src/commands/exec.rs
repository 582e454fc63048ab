//! `wk exec`: run a command in a pod's container (containers of `runtimeClassName: oci`;
//! Wasm components have no processes), print its output and exit with its exit code.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    target: super::PodContainer,
    /// Kill the command after this many seconds
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// The command and its arguments (after `--`)
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub async fn run(args: Args, kubeconfig: &Path) -> anyhow::Result<ExitCode> {
    let client = super::client(kubeconfig)?;
    let (path, mut q) = args.target.subresource(&client, "exec")?;
    q.extend(args.command.iter().map(|c| ("command", c.clone())));
    q.push(("timeoutSeconds", args.timeout.to_string()));
    let resp = client
        .request(wk_client::Method::POST, &path, &q, None, None)
        .await?;
    let out: serde_json::Value = resp.json().await?;
    std::io::stdout().write_all(out["stdout"].as_str().unwrap_or("").as_bytes())?;
    std::io::stderr().write_all(out["stderr"].as_str().unwrap_or("").as_bytes())?;
    let code = out["exitCode"].as_i64().unwrap_or(1);
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}
