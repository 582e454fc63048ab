//! The `wk` CLI and `kubectl` against a real `wk server` process.

use crate::common;
use crate::common::{TestServer, stderr, stdout, write};

const MANIFEST: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-content
data:
  index.html: "<h1>hi</h1>"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      runtimeClassName: wasm
      containers:
      - name: web
        image: file:///srv/web.wasm
        ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"#;

#[test]
fn apply_get_describe_delete() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "app.yaml", MANIFEST);
    let f = file.to_str().unwrap();

    let out = server.wk(&["apply", "-f", f]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "configmap/web-content created\ndeployment.apps/web created\nservice/web created\n"
    );

    // Applying again changes nothing; a changed manifest is "configured".
    let out = server.wk(&["apply", "-f", f]);
    assert_eq!(
        stdout(&out),
        "configmap/web-content unchanged\ndeployment.apps/web unchanged\nservice/web unchanged\n"
    );
    let changed = MANIFEST.replace("replicas: 2", "replicas: 3").replace(
        "  labels: {app: web}\nspec:\n  replicas",
        "spec:\n  replicas",
    );
    let file2 = write(dir.path(), "app2.yaml", &changed);
    let out = server.wk(&["apply", "-f", file2.to_str().unwrap()]);
    assert!(
        stdout(&out).contains("deployment.apps/web configured"),
        "{}",
        stdout(&out)
    );
    let out = server.wk(&["get", "deploy", "web", "-o", "json"]);
    let dep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(dep["spec"]["replicas"], 3);
    assert!(
        dep["metadata"].get("labels").is_none(),
        "a label dropped from the manifest is removed"
    );

    let out = server.wk(&["get", "deployments"]);
    let text = stdout(&out);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], ["web", "0/3", "0", "0"]);

    let out = server.wk(&["get", "svc", "-o", "wide"]);
    assert!(stdout(&out).contains("SELECTOR"), "{}", stdout(&out));
    assert!(stdout(&out).contains("app=web"));

    let out = server.wk(&["get", "cm", "web-content", "-o", "yaml"]);
    let cm: serde_json::Value = serde_yaml::from_slice(&out.stdout).unwrap();
    assert_eq!(cm["data"]["index.html"], "<h1>hi</h1>");

    let out = server.wk(&["get", "ns", "-o", "name"]);
    assert!(
        stdout(&out).lines().any(|l| l == "namespace/kube-system"),
        "{}",
        stdout(&out)
    );

    let out = server.wk(&["get", "pods"]);
    assert!(out.status.success());
    assert_eq!(
        stderr(&out).trim(),
        "No resources found in default namespace."
    );

    let out = server.wk(&["describe", "deployment", "web"]);
    let text = stdout(&out);
    assert!(
        text.starts_with("Name:              web\nNamespace:         default\n"),
        "{text}"
    );
    assert!(text.contains("Events:            <none>"), "{text}");

    let out = server.wk(&["delete", "-f", f]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "configmap \"web-content\" deleted\ndeployment.apps \"web\" deleted\nservice \"web\" deleted\n"
    );
    let out = server.wk(&["get", "deploy", "web"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "Error from server (NotFound): deployments.apps \"web\" not found"
    );
}

#[test]
fn user_mistakes_get_one_clear_line() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();

    let out = server.wk(&["get", "widgets"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "error: the server doesn't have a resource type \"widgets\""
    );

    let bad = write(
        dir.path(),
        "bad.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  replicas: -2\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec: {containers: [{name: c, image: x}]}\n",
    );
    let out = server.wk(&["apply", "-f", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("The Deployment \"d\" is invalid: spec.replicas: Invalid value: -2"),
        "{err}"
    );

    let typo = write(
        dir.path(),
        "typo.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: t}\ndatta: {a: b}\n",
    );
    let out = server.wk(&["apply", "-f", typo.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("unknown field \"datta\""),
        "{}",
        stderr(&out)
    );

    // In warn mode the same typo is applied, with a warning.
    let out = server.wk(&["apply", "--validate=warn", "-f", typo.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "configmap/t created\n");
    assert_eq!(stderr(&out).trim(), "Warning: unknown field 'datta'");

    let broken = write(dir.path(), "broken.yaml", "kind: [\n");
    let out = server.wk(&["apply", "-f", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error: error parsing"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("panicked"));

    let out = server.wk(&["apply", "-f", "/nonexistent.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot be read"), "{}", stderr(&out));

    // A name that is no name is refused before anything is sent: an empty one would
    // address every ConfigMap, `..` the namespace itself.
    let out = server.wk(&["apply", "--validate=warn", "-f", typo.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    for name in ["", "..", "."] {
        let out = server.wk(&["delete", "cm", name]);
        assert_eq!(out.status.code(), Some(1), "{name:?}");
        assert!(
            stderr(&out).contains("resource name may not be"),
            "{name:?}: {}",
            stderr(&out)
        );
    }
    let nameless = write(
        dir.path(),
        "nameless.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {generateName: n-}\n",
    );
    let out = server.wk(&["delete", "-f", nameless.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let out = server.wk(&["get", "cm", "t", "-o", "name"]);
    assert_eq!(stdout(&out), "configmap/t\n", "{}", stderr(&out));
    let out = server.wk(&["get", "ns", "default", "-o", "name"]);
    assert_eq!(stdout(&out), "namespace/default\n", "{}", stderr(&out));

    // A manifest's namespace and -n must agree (kubectl's rule).
    let elsewhere = write(
        dir.path(),
        "elsewhere.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: e, namespace: other}\n",
    );
    let out = server.wk(&["apply", "-n", "default", "-f", elsewhere.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("does not match the namespace \"default\""),
        "{}",
        stderr(&out)
    );
    // Output into a pipe nobody reads any more ends quietly (as `wk get | head`).
    let mut child = std::process::Command::new(common::WK)
        .args(["get", "cm", "-o", "json"])
        .env("WK_CONFIG", &server.kubeconfig)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    assert_ne!(out.status.code(), Some(101));

    let out = server.wk(&["delete", "cm", "ghost"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "Error from server (NotFound): configmaps \"ghost\" not found"
    );

    // No server: a clear connection error.
    let out = std::process::Command::new(common::WK)
        .args(["get", "pods", "--kubeconfig", "/nonexistent/config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot load the client config"),
        "{}",
        stderr(&out)
    );

    // stdin works too.
    let out = server.wk_stdin(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: from-stdin}\n"),
    );
    assert_eq!(
        stdout(&out),
        "configmap/from-stdin created\n",
        "{}",
        stderr(&out)
    );

    let out = server.wk(&["version"]);
    assert!(
        stdout(&out).contains("Server Version: v1.32.0+wk-"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn get_watch_streams_changes() {
    use std::io::{BufRead, BufReader};
    let server = TestServer::start();
    let mut child = std::process::Command::new(common::WK)
        .args(["get", "cm", "-w"])
        .env("WK_CONFIG", &server.kubeconfig)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Nothing exists yet: a header only appears with rows, so create something.
    let out = server.wk_stdin(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: watched}\ndata: {a: b}\n"),
    );
    assert!(out.status.success());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        while let Some(Ok(l)) = lines.next() {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let line = loop {
        let l = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("a watch row");
        if !l.starts_with("NAME") {
            break l;
        }
    };
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&cells[..2], ["watched", "1"], "{line}");
    child.kill().unwrap();
    let _ = child.wait();
}

/// kubectl, a real Kubernetes client, against our server with the config wk wrote.
#[test]
fn kubectl_get_apply_delete() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "app.yaml", MANIFEST);
    let cache = dir.path().join("kube-cache");
    let kubectl = |args: &[&str]| {
        std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&server.kubeconfig)
            .arg("--cache-dir")
            .arg(&cache)
            .args(args)
            .output()
            .expect("kubectl is installed on these machines")
    };
    let out = kubectl(&["apply", "-f", file.to_str().unwrap()]);
    assert!(out.status.success(), "kubectl apply: {}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "configmap/web-content created\ndeployment.apps/web created\nservice/web created\n"
    );

    let out = kubectl(&["get", "deploy"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with(
            "NAME   READY   UP-TO-DATE   AVAILABLE   AGE\nweb    0/2     0            0"
        ),
        "{}",
        stdout(&out)
    );

    let out = kubectl(&["get", "ns", "kube-system", "-o", "jsonpath={.status.phase}"]);
    assert_eq!(stdout(&out), "Active", "{}", stderr(&out));

    // Update through kubectl's strategic-merge-patch path.
    let changed = write(
        dir.path(),
        "app2.yaml",
        &MANIFEST.replace("replicas: 2", "replicas: 4"),
    );
    let out = kubectl(&["apply", "-f", changed.to_str().unwrap()]);
    assert!(
        stdout(&out).contains("deployment.apps/web configured"),
        "{} {}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("configmap/web-content unchanged"));
    let out = kubectl(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]);
    assert_eq!(stdout(&out), "4");

    let out = kubectl(&["scale", "deployment/web", "--replicas=1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = server.wk(&["get", "deploy", "web", "-o", "json"]);
    let dep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(dep["spec"]["replicas"], 1);

    let out = kubectl(&["get", "pod", "missing"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "Error from server (NotFound): pods \"missing\" not found"
    );

    let out = kubectl(&["delete", "-f", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = kubectl(&["get", "deploy,svc,cm", "-o", "name"]);
    assert!(!stdout(&out).contains("web"), "{}", stdout(&out));
}

/// Namespaces (`-n`, `-A`), label selectors (`-l`), short names, a directory for `-f`,
/// and `--help` on every command.
#[test]
fn namespaces_selectors_directories_and_help() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "0-ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n",
    );
    write(
        dir.path(),
        "1-cms.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  namespace: team\n  labels: {tier: web}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n  namespace: team\n  labels: {tier: db}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  labels: {tier: web}\n",
    );
    write(dir.path(), "notes.txt", "not a manifest: skipped\n");
    let out = server.wk(&["apply", "-f", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "namespace/team created\nconfigmap/a created\nconfigmap/b created\nconfigmap/c created\n"
    );

    let names = |out: &std::process::Output| -> Vec<String> {
        stdout(out)
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
            .collect()
    };
    let out = server.wk(&["get", "cm", "-n", "team"]);
    assert_eq!(names(&out), ["a", "b"], "{}", stdout(&out));
    let out = server.wk(&["get", "configmaps", "-n", "team", "-l", "tier=web"]);
    assert_eq!(names(&out), ["a"]);
    let out = server.wk(&["get", "cm", "-A", "-l", "tier in (web)"]);
    let text = stdout(&out);
    assert!(
        text.lines().next().unwrap().starts_with("NAMESPACE"),
        "{text}"
    );
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().take(2).collect())
        .collect();
    assert_eq!(rows, [vec!["default", "c"], vec!["team", "a"]]);
    let out = server.wk(&["get", "ns"]);
    assert!(names(&out).contains(&"team".to_string()));
    let out = server.wk(&["get", "po"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).trim(),
        "No resources found in default namespace."
    );

    for cmd in [
        "server", "agent", "up", "down", "apply", "get", "describe", "delete", "logs", "version",
    ] {
        let out = server.wk(&[cmd, "--help"]);
        assert!(out.status.success(), "wk {cmd} --help: {}", stderr(&out));
        assert!(
            stdout(&out).contains("Usage: wk"),
            "wk {cmd} --help: {}",
            stdout(&out)
        );
    }
}
