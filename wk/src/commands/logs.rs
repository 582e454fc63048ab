//! `wk logs`: print (or follow) a pod container's output, through the API server.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use futures::StreamExt;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    target: super::PodContainer,
    /// Keep streaming new output
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines
    #[arg(long)]
    tail: Option<u64>,
    /// Only lines newer than this many seconds
    #[arg(long)]
    since_seconds: Option<u64>,
    /// Prefix lines with their RFC 3339 timestamps
    #[arg(long)]
    timestamps: bool,
    /// The previous instance's output (after a restart)
    #[arg(short, long)]
    previous: bool,
}

pub async fn run(args: Args, kubeconfig: &Path) -> anyhow::Result<ExitCode> {
    let client = super::client(kubeconfig)?;
    let (path, mut q) = args.target.subresource(&client, "log")?;
    if args.follow {
        q.push(("follow", "true".into()));
    }
    if let Some(t) = args.tail {
        q.push(("tailLines", t.to_string()));
    }
    if let Some(s) = args.since_seconds {
        q.push(("sinceSeconds", s.to_string()));
    }
    if args.timestamps {
        q.push(("timestamps", "true".into()));
    }
    if args.previous {
        q.push(("previous", "true".into()));
    }
    let resp = client
        .request(wk_client::Method::GET, &path, &q, None, None)
        .await?;
    let mut body = resp.bytes_stream();
    let mut out = std::io::stdout();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        out.write_all(&chunk)?;
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}
