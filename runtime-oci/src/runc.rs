//! Driving the `runc` binary: run --detach (with `--pid-file`), kill, delete, exec.
//!
//! Every call passes `--root` (this agent's state directory, so agents sharing a host
//! never see each other's containers) and, for the calls that can fail in interesting
//! ways, `--log <bundle>/runc.log --log-format json`: the last error in that log is what
//! a failure reports, not runc's exit status.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use wk_api::runtime::ExecOutput;

#[derive(Debug, Clone)]
pub struct Runc {
    pub binary: PathBuf,
    pub root: PathBuf,
}

/// The last error runc logged (its JSON log), or the text it printed.
fn failure(log: Option<&Path>, stderr: &[u8]) -> String {
    let logged = log
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|text| {
            text.lines()
                .rev()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| v["level"] == "error" || v["level"] == "fatal")
                .and_then(|v| v["msg"].as_str().map(String::from))
        });
    logged.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(stderr).trim().to_string();
        if text.is_empty() {
            "runc failed without a message".into()
        } else {
            text
        }
    })
}

impl Runc {
    fn command(&self, log: Option<&Path>) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("--root").arg(&self.root);
        if let Some(l) = log {
            c.arg("--log").arg(l).arg("--log-format").arg("json");
        }
        c.stdin(Stdio::null()).kill_on_drop(true);
        c
    }

    async fn run(&self, log: Option<&Path>, args: &[&str]) -> Result<Vec<u8>, String> {
        let out = self
            .command(log)
            .args(args)
            .output()
            .await
            .map_err(|e| format!("running {}: {e}", self.binary.display()))?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(failure(log, &out.stderr))
        }
    }

    /// `runc --version`: whether runc works here.
    pub async fn version(&self) -> Result<String, String> {
        let out = self.run(None, &["--version"]).await?;
        Ok(String::from_utf8_lossy(&out)
            .lines()
            .next()
            .unwrap_or("")
            .to_string())
    }

    /// Creates and starts a container from `bundle` (`runc run --detach`: one runc
    /// process instead of `create` + `start`) whose stdout/stderr are the given pipe ends;
    /// returns its init process id.
    pub async fn run_detached(
        &self,
        id: &str,
        bundle: &Path,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> Result<i32, String> {
        let log = bundle.join("runc.log");
        let pid_file = bundle.join("init.pid");
        let mut c = self.command(Some(&log));
        c.arg("run")
            .arg("--detach")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(id)
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr));
        let status = c
            .status()
            .await
            .map_err(|e| format!("running {}: {e}", self.binary.display()))?;
        // The pipes' write ends now belong to the container alone.
        drop(c);
        if !status.success() {
            return Err(failure(Some(&log), b""));
        }
        let pid = std::fs::read_to_string(&pid_file)
            .map_err(|e| format!("{}: {e}", pid_file.display()))?;
        pid.trim()
            .parse()
            .map_err(|_| format!("{}: not a pid: {pid:?}", pid_file.display()))
    }

    /// Sends a signal to the container's init process (`all`: to every process in it).
    pub async fn kill(&self, id: &str, signal: &str, all: bool) -> Result<(), String> {
        let mut args = vec!["kill"];
        if all {
            args.push("--all");
        }
        args.extend([id, signal]);
        self.run(None, &args).await.map(drop)
    }

    pub async fn delete(&self, id: &str) -> Result<(), String> {
        self.run(None, &["delete", "--force", id]).await.map(drop)
    }

    /// The ids of the containers in this root.
    pub async fn list(&self) -> Result<Vec<String>, String> {
        let out = self.run(None, &["list", "--format", "json"]).await?;
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or(serde_json::Value::Null);
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["id"].as_str().map(String::from))
            .collect())
    }

    /// Runs a command in the container, killed after `timeout`. At most
    /// `EXEC_OUTPUT_MAX` bytes of each of its stdout and stderr are kept (the rest is
    /// read and dropped, so the command is not held up).
    pub async fn exec(
        &self,
        id: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, String> {
        static EXECS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = EXECS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid_file = self.root.join(format!("exec-{n}.pid"));
        let mut c = self.command(None);
        c.arg("exec")
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(id)
            .args(command)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c
            .spawn()
            .map_err(|e| format!("running {}: {e}", self.binary.display()))?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let done = async {
            let (stdout, stderr, status) =
                tokio::join!(read_capped(stdout), read_capped(stderr), child.wait());
            status.map(|status| std::process::Output {
                status,
                stdout,
                stderr,
            })
        };
        tokio::pin!(done);
        let result = match tokio::time::timeout(timeout, &mut done).await {
            Ok(r) => r,
            Err(_) => {
                // runc cannot pass on a SIGKILL of its own: the command would run on, its
                // runc orphaned. Kill the command; runc then reaps it and exits.
                if let Some(pid) = std::fs::read_to_string(&pid_file)
                    .ok()
                    .and_then(|p| p.trim().parse::<i32>().ok())
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = tokio::time::timeout(Duration::from_secs(5), &mut done).await;
                let _ = std::fs::remove_file(&pid_file);
                return Err(format!("command timed out after {timeout:?}"));
            }
        };
        let _ = std::fs::remove_file(&pid_file);
        match result {
            Ok(out) => {
                let exit_code = out.status.code().unwrap_or(137);
                // runc's own failures (no such container, no such binary) exit 255 with a
                // message and are errors, not the command's result.
                if exit_code == 255 && out.stdout.is_empty() && !out.stderr.is_empty() {
                    let msg = String::from_utf8_lossy(&out.stderr);
                    if msg.contains("level=error") || msg.contains("exec failed") {
                        return Err(msg.trim().to_string());
                    }
                }
                Ok(ExecOutput {
                    exit_code,
                    stdout: out.stdout,
                    stderr: out.stderr,
                })
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

/// How much of an exec's stdout, and of its stderr, is kept.
pub const EXEC_OUTPUT_MAX: usize = 4 << 20;

/// Reads a pipe to its end, keeping the first `EXEC_OUTPUT_MAX` bytes.
async fn read_capped(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut kept = Vec::new();
    let Some(mut pipe) = pipe else {
        return kept;
    };
    let _ = (&mut pipe)
        .take(EXEC_OUTPUT_MAX as u64)
        .read_to_end(&mut kept)
        .await;
    // The rest is read and dropped, so the command is not blocked writing it.
    let _ = tokio::io::copy(&mut pipe, &mut tokio::io::sink()).await;
    kept
}
