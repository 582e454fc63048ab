//! What the benchmarks share: the `wk` binary as a process, ports, percentiles.

#![allow(dead_code)]

pub mod writes;

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const WK: &str = env!("CARGO_BIN_EXE_wk");

/// A number from the environment (`WK_BENCH_*`), or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// A child process, killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the release `wk agent` named `bench` against `kubeconfig`, its data in
/// `data_dir`, with `extra` flags. Its log level is `WK_BENCH_AGENT_LOG` (default
/// `error`).
pub fn start_agent(kubeconfig: &Path, data_dir: &Path, extra: &[&str]) -> Proc {
    Proc(
        Command::new(WK)
            .args(["agent", "--name", "bench", "--kubeconfig"])
            .arg(kubeconfig)
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("WK_BENCH_AGENT_LOG").unwrap_or_else(|_| "error".into()),
            )
            .stdout(Stdio::null())
            .spawn()
            .expect("start wk agent"),
    )
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `p` quantile (0–1) of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

/// The `p` quantile of durations in milliseconds (sorts them first).
pub fn percentile_ms(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    percentile(v, p).as_secs_f64() * 1000.0
}

/// A process's resident memory (`VmRSS`), in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Starts the release `wk server` on a free loopback port (unless `extra` has
/// `--listen`), with `extra` flags, and waits until it listens. Its log level is
/// `WK_BENCH_SERVER_LOG` (default `error`).
pub fn start_server(data_dir: &Path, kubeconfig: &Path, extra: &[&str]) -> Proc {
    let listen = format!("127.0.0.1:{}", free_port());
    let listen: &[&str] = if extra.contains(&"--listen") {
        &[]
    } else {
        &["--listen", &listen]
    };
    let child = Command::new(WK)
        .arg("server")
        .args(extra)
        .args(listen)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .env(
            "RUST_LOG",
            std::env::var("WK_BENCH_SERVER_LOG").unwrap_or_else(|_| "error".into()),
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("start wk server");
    let mut child = Proc(child);
    let stdout = child.0.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        if line.unwrap().starts_with("wk server listening") {
            break;
        }
    }
    // Keep reading: a server printing into a closed pipe dies of it.
    std::thread::spawn(move || lines.for_each(drop));
    child
}
