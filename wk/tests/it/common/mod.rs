//! Starts the real `wk server` binary on a loopback port with a temp data dir.

#![allow(dead_code)]

pub mod linearizable;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use wk_client::Client;

pub const WK: &str = env!("CARGO_BIN_EXE_wk");

pub struct TestServer {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub url: String,
    pub kubeconfig: PathBuf,
    pub extra_args: Vec<String>,
    /// Environment of the server process (fault injection).
    pub envs: Vec<(String, String)>,
    pub port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl TestServer {
    /// The API server alone (no scheduler or controllers acting on what tests create).
    pub fn start() -> TestServer {
        Self::start_with(&[])
    }

    pub fn start_with(args: &[&str]) -> TestServer {
        let mut all = vec!["--no-controllers"];
        all.extend_from_slice(args);
        Self::spawn_with(&all)
    }

    /// The server with its scheduler and controllers.
    pub fn start_cluster() -> TestServer {
        Self::spawn_with(&[])
    }

    pub fn spawn_with(args: &[&str]) -> TestServer {
        Self::spawn_in(tempfile::tempdir().unwrap(), args)
    }

    /// A server started with extra environment variables (fault injection).
    pub fn spawn_with_env(args: &[&str], envs: &[(&str, &str)]) -> TestServer {
        Self::spawn_inner(tempfile::tempdir().unwrap(), args, envs)
    }

    /// A server whose data lives in `dir/data` (prepared by the caller, e.g. a mount).
    pub fn spawn_in(dir: tempfile::TempDir, args: &[&str]) -> TestServer {
        Self::spawn_inner(dir, args, &[])
    }

    fn spawn_inner(dir: tempfile::TempDir, args: &[&str], envs: &[(&str, &str)]) -> TestServer {
        let kubeconfig = dir.path().join("config");
        let mut s = TestServer {
            child: None,
            url: String::new(),
            kubeconfig,
            dir,
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            port: free_port(),
        };
        s.spawn();
        s
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn spawn(&mut self) {
        let mut child = Command::new(WK)
            .args(["server", "--data-dir"])
            .arg(self.data_dir())
            .args([
                "--listen",
                &format!("127.0.0.1:{}", self.port),
                "--kubeconfig",
            ])
            .arg(&self.kubeconfig)
            .args(&self.extra_args)
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn wk server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("wk server listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server did not report it was listening");
        self.url = url;
        self.child = Some(child);
    }

    /// SIGKILL, no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn client(&self) -> Client {
        Client::from_path(&self.kubeconfig).unwrap()
    }

    /// Runs the wk CLI against this server.
    pub fn wk(&self, args: &[&str]) -> Output {
        self.wk_stdin(args, None)
    }

    pub fn wk_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(WK);
        cmd.args(args)
            .env("WK_CONFIG", &self.kubeconfig)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        if let Some(text) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        } else {
            drop(child.stdin.take());
        }
        child.wait_with_output().unwrap()
    }

    /// Runs kubectl against this server, with the config wk wrote.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.data_dir().join("kube-cache"))
            .args(args)
            .output()
            .unwrap()
    }

    /// The admin token.
    pub fn token(&self) -> String {
        self.token_of("admin")
    }

    /// One of the server's tokens (`admin`, `node`, `peer`).
    pub fn token_of(&self, kind: &str) -> String {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.data_dir().join("tokens.json")).unwrap())
                .unwrap();
        v[kind].as_str().unwrap().to_string()
    }

    pub fn ca_path(&self) -> PathBuf {
        self.data_dir().join("pki").join("ca.crt")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The body of a GET that must answer.
pub async fn get_text(http: &reqwest::Client, url: &str) -> String {
    http.get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Waits (blocking the thread) for a condition, up to 60 s.
pub fn wait_blocking(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits for a condition with a bounded timeout.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A child process (an agent, a registry, a server in a namespace), killed (SIGKILL)
/// when dropped: for an agent, to the cluster, the node dies.
pub struct Proc(pub Child);

impl Proc {
    /// Stops the process the way an operator would (SIGTERM): an agent removes its
    /// containers (runc processes, mounts, network namespaces); SIGKILL after 10 s.
    pub fn stop(mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.0.id().to_string()])
                .status();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The server's node join token.
/// The entries of a `cluster_members` answer (`wk get servers -o json`).
pub fn entries(m: &serde_json::Value) -> impl Iterator<Item = &serde_json::Value> {
    m["members"].as_array().into_iter().flatten()
}

/// The leader's entry in a `cluster_members` answer.
pub fn leader_of(m: &serde_json::Value) -> &serde_json::Value {
    entries(m)
        .find(|x| x["id"] == m["leader"])
        .unwrap_or_else(|| panic!("no leader in {m}"))
}

pub fn node_token(server: &TestServer) -> String {
    server.token_of("node")
}

/// The path of a sample component built by `scripts/build-samples.sh`.
pub fn sample(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../samples/dist")
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/build-samples.sh",
        p.display()
    );
    p.canonicalize().unwrap().display().to_string()
}

/// Starts `wk agent` joined to `server` with the join token, extra flags appended. It runs
/// in the repository root, where the sample manifests' relative image paths point.
pub fn start_agent_with(server: &TestServer, name: &str, dir: &Path, extra: &[&str]) -> Proc {
    start_agent_at(server, &server.url, name, dir, extra)
}

/// [`start_agent_with`], reaching `server` at `url` (through a relay, say).
pub fn start_agent_at(
    server: &TestServer,
    url: &str,
    name: &str,
    dir: &Path,
    extra: &[&str],
) -> Proc {
    Proc(
        Command::new(WK)
            .args([
                "agent",
                "--server",
                url,
                "--token",
                &node_token(server),
                "--ca-file",
            ])
            .arg(server.ca_path())
            .args(["--name", name, "--data-dir"])
            .arg(dir)
            // Each test agent gets its own DNS port (published on its Node).
            .args(if extra.contains(&"--dns-listen") {
                &[][..]
            } else {
                &["--dns-listen", "127.0.0.1:0"][..]
            })
            .args(extra)
            .env("RUST_LOG", "warn")
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

pub fn start_agent(server: &TestServer, name: &str, dir: &Path) -> Proc {
    start_agent_with(server, name, dir, &[])
}

/// The items of a list of `kind` in the default namespace matching a label selector.
pub async fn list(c: &Client, kind: &str, selector: &str) -> Vec<serde_json::Value> {
    let p = wk_client::ListParams {
        label_selector: Some(selector.to_string()).filter(|s| !s.is_empty()),
        ..Default::default()
    };
    c.list(wk_api::resource::lookup(kind).unwrap(), None, false, &p)
        .await
        .unwrap()["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

pub fn is_ready(p: &serde_json::Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// A server with `n` agents (`node-1`…), once their Nodes are registered.
pub async fn cluster(n: usize) -> (TestServer, Vec<(String, Proc)>, Vec<tempfile::TempDir>) {
    let server = TestServer::start_cluster();
    let mut agents = Vec::new();
    let mut dirs = Vec::new();
    for i in 1..=n {
        let d = tempfile::tempdir().unwrap();
        let name = format!("node-{i}");
        agents.push((name.clone(), start_agent(&server, &name, d.path())));
        dirs.push(d);
    }
    let c = server.client();
    wait_for("the nodes to register", Duration::from_secs(30), || {
        let c = c.clone();
        async move { list(&c, "nodes", "").await.len() == n }
    })
    .await;
    (server, agents, dirs)
}

/// Sets the value of the first env var of the first container of a workload's pod
/// template (the tests' GREETING), which rolls the workload out.
pub async fn set_greeting(c: &Client, kind: &str, name: &str, value: &str) {
    let patch = serde_json::json!([{"op": "replace", "path": "/spec/template/spec/containers/0/env/0/value", "value": value}]);
    c.patch(
        wk_api::resource::lookup(kind).unwrap(),
        None,
        name,
        "application/json-patch+json",
        &patch,
        &[],
    )
    .await
    .unwrap();
}
