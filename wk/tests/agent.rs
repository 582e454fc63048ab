//! The node agent as a real process: registration, lease, running Wasm pods bound to it,
//! status, serving on the pod IP, completion, deletion. (No scheduler yet: pods are bound
//! by setting spec.nodeName.)

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use wk_api::resource::lookup;

use common::{wait_for, TestServer, WK};

struct AgentProc(Child);
impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn node_token(server: &TestServer) -> String {
    let v: Value = serde_json::from_slice(&std::fs::read(server.data_dir().join("tokens.json")).unwrap()).unwrap();
    v["node"].as_str().unwrap().to_string()
}

fn sample(name: &str) -> String {
    let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../samples/dist").join(name);
    assert!(p.exists(), "{} is missing: run scripts/build-samples.sh", p.display());
    p.canonicalize().unwrap().display().to_string()
}

#[tokio::test]
async fn agent_runs_wasm_pods_bound_to_it() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let agent = AgentProc(
        Command::new(WK)
            .args(["agent", "--server", &server.url, "--token", &node_token(&server), "--ca-file"])
            .arg(server.ca_path())
            .args(["--name", "node-a", "--label", "zone=test", "--data-dir"])
            .arg(dir.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let c = server.client();
    let nodes = lookup("nodes").unwrap();
    wait_for("the node to register", Duration::from_secs(30), || {
        let c = c.clone();
        async move { c.get_opt(nodes, None, "node-a").await.unwrap().is_some() }
    })
    .await;
    let node = c.get(nodes, None, "node-a").await.unwrap();
    assert_eq!(node["metadata"]["labels"]["zone"], "test");
    assert_eq!(node["status"]["conditions"][0]["type"], "Ready");
    assert!(node["status"]["capacity"]["cpu"].as_str().is_some());
    let leases = lookup("leases").unwrap();
    let first = c.get(leases, Some("kube-node-lease"), "node-a").await.unwrap();
    let renew0 = first["spec"]["renewTime"].as_str().unwrap().to_string();
    wait_for("the lease to be renewed", Duration::from_secs(10), || {
        let c = c.clone();
        let renew0 = renew0.clone();
        async move { c.get(leases, Some("kube-node-lease"), "node-a").await.unwrap()["spec"]["renewTime"].as_str() != Some(&renew0) }
    })
    .await;

    // A service pod with env from the downward API and a ConfigMap volume.
    let cm = lookup("cm").unwrap();
    c.create(cm, None, &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "content"}, "data": {"greeting.txt": "from a configmap"}}), &[])
        .await
        .unwrap();
    let pods = lookup("pods").unwrap();
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hello"},
        "spec": {"nodeName": "node-a", "runtimeClassName": "wasm", "terminationGracePeriodSeconds": 5,
            "containers": [{"name": "hello", "image": sample("hello-http.wasm"), "ports": [{"containerPort": 8080}],
                "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}, {"name": "GREETING", "value": "hey"}],
                "volumeMounts": [{"name": "content", "mountPath": "/content", "readOnly": true}]}],
            "volumes": [{"name": "content", "configMap": {"name": "content"}}]}});
    c.create(pods, None, &pod, &[]).await.unwrap();
    wait_for("the pod to run", Duration::from_secs(30), || {
        let c = c.clone();
        async move { c.get(pods, None, "hello").await.unwrap()["status"]["phase"] == "Running" }
    })
    .await;
    let running = c.get(pods, None, "hello").await.unwrap();
    let ip = running["status"]["podIP"].as_str().unwrap().to_string();
    assert!(ip.starts_with(&format!("127.{}.", wk_nodeagent::pod_octet("node-a"))), "{ip}");
    let ready = running["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap();
    assert_eq!(ready["status"], "True");
    assert!(running["status"]["containerStatuses"][0]["state"]["running"]["startedAt"].is_string());
    let body = reqwest::get(format!("http://{ip}:8080/")).await.unwrap().text().await.unwrap();
    assert_eq!(body, "hello from hello\ngreeting: hey\ncontent: from a configmap\n");

    // A command pod runs to completion.
    let job = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pi"},
        "spec": {"nodeName": "node-a", "runtimeClassName": "wasm", "restartPolicy": "Never",
            "containers": [{"name": "pi", "image": sample("pi.wasm"), "args": ["10"]}]}});
    c.create(pods, None, &job, &[]).await.unwrap();
    wait_for("the pi pod to succeed", Duration::from_secs(30), || {
        let c = c.clone();
        async move {
            c.get(pods, None, "pi").await.unwrap()["status"]["phase"] == "Succeeded"
        }
    })
    .await;
    let done = c.get(pods, None, "pi").await.unwrap();
    assert_eq!(done["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 0);
    assert_eq!(done["status"]["containerStatuses"][0]["state"]["terminated"]["reason"], "Completed");

    // Logs through the API server, from wk and from kubectl.
    let out = server.wk(&["logs", "pi"]);
    assert_eq!(common::stdout(&out), "3.141592653\n", "{}", common::stderr(&out));
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&server.kubeconfig)
        .arg("--cache-dir")
        .arg(dir.path().join("kube-cache"))
        .args(["logs", "pi", "--timestamps"])
        .output()
        .unwrap();
    let text = common::stdout(&out);
    let (ts, line) = text.trim_end().split_once(' ').unwrap_or_default();
    assert!(ts.parse::<jiff::Timestamp>().is_ok(), "{text} {}", common::stderr(&out));
    assert_eq!(line, "3.141592653");
    // Follow: each request to hello-http logs a line.
    let mut follow = Command::new(WK)
        .args(["logs", "-f", "hello"])
        .env("WK_CONFIG", &server.kubeconfig)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    reqwest::get(format!("http://{ip}:8080/followed")).await.unwrap();
    let mut seen = false;
    for _ in 0..50 {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) if l == "GET /followed" => {
                seen = true;
                break;
            }
            _ => {}
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(seen, "wk logs -f shows the new line");

    // A failing command with restartPolicy OnFailure is restarted with back-off.
    let failing = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad"},
        "spec": {"nodeName": "node-a", "runtimeClassName": "wasm", "restartPolicy": "OnFailure",
            "containers": [{"name": "pi", "image": sample("pi.wasm"), "args": ["nope"]}]}});
    c.create(pods, None, &failing, &[]).await.unwrap();
    wait_for("restarts", Duration::from_secs(30), || {
        let c = c.clone();
        async move { c.get(pods, None, "bad").await.unwrap()["status"]["containerStatuses"][0]["restartCount"].as_u64().unwrap_or(0) >= 2 }
    })
    .await;
    let bad = c.get(pods, None, "bad").await.unwrap();
    assert_eq!(bad["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"], 1);

    // Deleting the service pod stops it gracefully and the agent finishes the deletion.
    c.delete(pods, None, "hello", &json!({})).await.unwrap();
    wait_for("the pod to be gone", Duration::from_secs(30), || {
        let c = c.clone();
        async move { c.get_opt(pods, None, "hello").await.unwrap().is_none() }
    })
    .await;
    assert!(reqwest::get(format!("http://{ip}:8080/")).await.is_err(), "nothing serves on the pod IP any more");
    drop(agent);
}

#[tokio::test]
async fn node_credentials_are_limited() {
    let server = TestServer::start();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(server.ca_path()).unwrap()).unwrap();
    let http = reqwest::Client::builder().use_rustls_tls().add_root_certificate(ca).build().unwrap();
    let token = node_token(&server);
    let ok = http.get(format!("{}/api/v1/namespaces/default/pods", server.url)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let denied = http.get(format!("{}/apis/apps/v1/deployments", server.url)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(denied.status(), 403);
    let body: Value = denied.json().await.unwrap();
    assert_eq!(body["reason"], "Forbidden");
    let write_secret = http
        .post(format!("{}/api/v1/namespaces/default/secrets", server.url))
        .bearer_auth(&token)
        .json(&json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(write_secret.status(), 403);
}

fn start_agent(server: &TestServer, name: &str, dir: &std::path::Path) -> AgentProc {
    AgentProc(
        Command::new(WK)
            .args(["agent", "--server", &server.url, "--token", &node_token(server), "--ca-file"])
            .arg(server.ca_path())
            .args(["--name", name, "--data-dir"])
            .arg(dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Deployment → ReplicaSet → pods → scheduled onto two agents → served; scale; delete.
#[tokio::test]
async fn deployments_are_scheduled_across_agents_and_serve() {
    let server = TestServer::start_cluster();
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let _a1 = start_agent(&server, "node-1", d1.path());
    let _a2 = start_agent(&server, "node-2", d2.path());
    let c = server.client();
    let nodes = lookup("nodes").unwrap();
    wait_for("two nodes", Duration::from_secs(30), || {
        let c = c.clone();
        async move { c.list(nodes, None, false, &Default::default()).await.unwrap()["items"].as_array().unwrap().len() == 2 }
    })
    .await;
    let deploy = lookup("deploy").unwrap();
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "hello"},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "hello"}},
            "template": {"metadata": {"labels": {"app": "hello"}}, "spec": {"runtimeClassName": "wasm",
                "containers": [{"name": "hello", "image": sample("hello-http.wasm"), "ports": [{"containerPort": 8080}],
                    "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}}}});
    c.create(deploy, None, &d, &[]).await.unwrap();
    wait_for("4 available replicas", Duration::from_secs(60), || {
        let c = c.clone();
        async move { c.get(deploy, None, "hello").await.unwrap()["status"]["availableReplicas"] == 4 }
    })
    .await;
    let pods = lookup("pods").unwrap();
    let list = c.list(pods, None, false, &wk_client::ListParams { label_selector: Some("app=hello".into()), ..Default::default() }).await.unwrap();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    let on = |n: &str| items.iter().filter(|p| p["spec"]["nodeName"] == n).count();
    assert_eq!((on("node-1"), on("node-2")), (2, 2), "spread across both nodes");
    for p in items {
        let ip = p["status"]["podIP"].as_str().unwrap();
        let body = reqwest::get(format!("http://{ip}:8080/")).await.unwrap().text().await.unwrap();
        assert!(body.starts_with(&format!("hello from {}", p["metadata"]["name"].as_str().unwrap())), "{body}");
    }
    // Scale down to 1.
    c.patch(deploy, None, "hello", "application/merge-patch+json", &json!({"spec": {"replicas": 1}}), &[]).await.unwrap();
    wait_for("one pod left", Duration::from_secs(60), || {
        let c = c.clone();
        async move {
            let l = c.list(pods, None, false, &wk_client::ListParams { label_selector: Some("app=hello".into()), ..Default::default() }).await.unwrap();
            l["items"].as_array().unwrap().len() == 1
        }
    })
    .await;
    // A pod no node can run is explained.
    let oci = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "container"},
        "spec": {"runtimeClassName": "oci", "containers": [{"name": "c", "image": "busybox"}]}});
    c.create(pods, None, &oci, &[]).await.unwrap();
    wait_for("an Unschedulable condition", Duration::from_secs(30), || {
        let c = c.clone();
        async move {
            let p = c.get(pods, None, "container").await.unwrap();
            p["status"]["conditions"].as_array().is_some_and(|cs| cs.iter().any(|c| c["reason"] == "Unschedulable"
                && c["message"] == "0/2 nodes are available: 2 node(s) did not offer the pod's runtime."))
        }
    })
    .await;
    // Deleting the deployment removes its ReplicaSet and pods.
    c.delete(deploy, None, "hello", &json!({})).await.unwrap();
    wait_for("pods to be gone", Duration::from_secs(60), || {
        let c = c.clone();
        async move {
            let l = c.list(pods, None, false, &wk_client::ListParams { label_selector: Some("app=hello".into()), ..Default::default() }).await.unwrap();
            l["items"].as_array().unwrap().is_empty()
        }
    })
    .await;
}
