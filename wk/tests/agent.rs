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
    assert!(ip.starts_with("127.244."), "{ip}");
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
        async move { c.get(pods, None, "pi").await.unwrap()["status"]["phase"] == "Succeeded" }
    })
    .await;
    let done = c.get(pods, None, "pi").await.unwrap();
    assert_eq!(done["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 0);
    assert_eq!(done["status"]["containerStatuses"][0]["state"]["terminated"]["reason"], "Completed");

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
