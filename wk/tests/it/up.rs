//! `wk up` as the README runs it: one process, the sample applied, curl reaches it;
//! `wk down` stops it and the next `wk up` resumes the same state.

use crate::common;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::common::WK;

struct Up {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn up(dir: &std::path::Path, port: u16, apply: bool) -> Up {
    let mut cmd = Command::new(WK);
    cmd.current_dir(repo())
        .args(["up", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--kubeconfig"])
        .arg(dir.join("config"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped());
    if apply {
        cmd.args(["-f", "samples/manifests/hello.yaml"]);
    }
    let mut child = cmd.spawn().unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    Up { child, lines }
}

fn wait_line(up: &Up, pred: impl Fn(&str) -> bool) -> String {
    loop {
        let l = up
            .lines
            .recv_timeout(Duration::from_secs(60))
            .expect("wk up output");
        if pred(&l) {
            return l;
        }
    }
}

fn endpoint(line: &str) -> String {
    line.split_whitespace().last().unwrap().to_string()
}

#[tokio::test]
async fn up_serves_the_sample_and_resumes() {
    let sample = repo().join("samples/dist/hello-http.wasm");
    assert!(sample.exists(), "run scripts/build-samples.sh");
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let first = up(dir.path(), port, true);
    let line = wait_line(&first, |l| l.contains(" serves http://"));
    let url = endpoint(&line);
    let body = reqwest::get(&url).await.unwrap().text().await.unwrap();
    assert!(body.starts_with("hello from hello-"), "{body}");
    assert!(body.contains("greeting: hi\n"), "{body}");
    assert!(
        body.contains("content: hello from a mounted volume\n"),
        "{body}"
    );
    wait_line(&first, |l| l.starts_with("What now"));

    // wk get works with the written config.
    let out = Command::new(WK)
        .args(["get", "deploy", "hello", "--kubeconfig"])
        .arg(dir.path().join("config"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hello   2/2"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let out = Command::new(WK)
        .args(["down", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(first);
    assert!(reqwest::get(&url).await.is_err(), "stopped");

    // The next `wk up` resumes: the deployment is still there and serves again.
    let second = up(dir.path(), port, false);
    wait_line(&second, |l| l.starts_with("wk up: control plane"));
    let c = wk_client::Client::from_path(&dir.path().join("config")).unwrap();
    let deploy = wk_api::resource::lookup("deploy").unwrap();
    let pods = wk_api::resource::lookup("pods").unwrap();
    common::wait_for("the sample to serve again", Duration::from_secs(60), || {
        let c = c.clone();
        async move {
            let d = c.get(deploy, None, "hello").await.unwrap();
            if d["status"]["availableReplicas"] != 2 {
                return false;
            }
            let list = c
                .list(pods, None, false, &Default::default())
                .await
                .unwrap();
            for p in list["items"].as_array().unwrap() {
                let Some(ip) = p["status"]["podIP"].as_str() else {
                    return false;
                };
                if reqwest::get(format!("http://{ip}:8080/healthz"))
                    .await
                    .is_err()
                {
                    return false;
                }
            }
            true
        }
    })
    .await;
}
