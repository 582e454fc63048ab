//! `wk`: one binary for the wk server and its command-line client.
//!
//! This file only parses arguments and dispatches to `commands/<cmd>.rs`.

mod commands;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// wk: a WebAssembly-native micro-orchestrator with a Kubernetes-shaped API.
#[derive(Parser)]
#[command(name = "wk", version, about, propagate_version = true)]
struct Cli {
    /// Client config (kubeconfig format) to use [default: $WK_CONFIG or ~/.wk/config]
    #[arg(long, global = true, env = "WK_CONFIG")]
    kubeconfig: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a control-plane server (API server + Raft-replicated store)
    Server(commands::server::Args),
    /// Run a node agent: register a node and run the pods bound to it
    Agent(commands::agent::Args),
    /// Create or update objects from manifests
    Apply(commands::apply::Args),
    /// List objects or show one
    Get(commands::get::Args),
    /// Show an object in detail, with its events
    Describe(commands::describe::Args),
    /// Print or follow a pod's logs
    Logs(commands::logs::Args),
    /// Run a command in a pod's container and print its output
    Exec(commands::exec::Args),
    /// Delete objects by name or from manifests
    Delete(commands::delete::Args),
    /// Manage the rollout of a Deployment (status, history, undo, restart, pause, resume)
    Rollout(commands::rollout::Args),
    /// Set the number of replicas of a Deployment or ReplicaSet
    Scale(commands::rollout::ScaleArgs),
    /// Manage the node's container image store (import, pull, ls, rm)
    Image(commands::image::Args),
    /// Run a local cluster (control plane + agent) in one process
    Up(commands::up::Args),
    /// Stop the cluster `wk up` started
    Down(commands::up::DownArgs),
    /// Print the client and server versions
    Version(commands::version::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let is_server = matches!(
        cli.command,
        Command::Server(_) | Command::Agent(_) | Command::Up(_)
    );
    if !is_server {
        // Like kubectl (and `ls`): output piped into `head` that stops reading ends the
        // command quietly, instead of a panic on the next println.
        // SAFETY: no other thread exists yet, and SIG_DFL installs no handler code.
        #[allow(unsafe_code)]
        unsafe {
            let _ = nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            );
        }
    }
    let default_level = if is_server {
        "info,openraft=warn"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let kubeconfig = cli
        .kubeconfig
        .clone()
        .unwrap_or_else(wk_client::default_config_path);
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Server(a) => commands::server::run(a, cli.kubeconfig).await,
            Command::Agent(a) => commands::agent::run(a, &kubeconfig).await,
            Command::Apply(a) => commands::apply::run(a, &kubeconfig).await,
            Command::Get(a) => commands::get::run(a, &kubeconfig).await,
            Command::Describe(a) => commands::describe::run(a, &kubeconfig).await,
            Command::Delete(a) => commands::delete::run(a, &kubeconfig).await,
            Command::Rollout(a) => commands::rollout::run(a, &kubeconfig).await,
            Command::Scale(a) => commands::rollout::scale(a, &kubeconfig).await,
            Command::Logs(a) => commands::logs::run(a, &kubeconfig).await,
            Command::Exec(a) => commands::exec::run(a, &kubeconfig).await,
            Command::Image(a) => commands::image::run(a).await,
            Command::Up(a) => commands::up::run(a, &kubeconfig).await,
            Command::Down(a) => commands::up::down(a).await,
            Command::Version(a) => commands::version::run(a, &kubeconfig).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            output::print_error(&e);
            ExitCode::FAILURE
        }
    }
}
