//! `wk version`.

use std::path::Path;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Only print the client version
    #[arg(long)]
    client: bool,
}

pub async fn run(args: Args, kubeconfig: &Path) -> anyhow::Result<ExitCode> {
    println!("Client Version: wk {}", env!("CARGO_PKG_VERSION"));
    if args.client {
        return Ok(ExitCode::SUCCESS);
    }
    let v = super::client(kubeconfig)?.server_version().await?;
    println!(
        "Server Version: {} (Kubernetes API {}.{})",
        v.get("gitVersion").and_then(|x| x.as_str()).unwrap_or("?"),
        v.get("major").and_then(|x| x.as_str()).unwrap_or("?"),
        v.get("minor").and_then(|x| x.as_str()).unwrap_or("?"),
    );
    Ok(ExitCode::SUCCESS)
}
