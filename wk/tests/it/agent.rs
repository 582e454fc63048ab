//! The node agent as a real process: registration, lease, running Wasm pods bound to it,
//! status, serving on the pod IP, completion, deletion, probes, admission, outages.
//! Most tests bind pods by setting spec.nodeName, so they exercise the agent alone.

use crate::common;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use wk_api::resource::lookup;

use crate::common::{TestServer, WK, node_token, sample, start_agent, start_agent_with, wait_for};

#[tokio::test]
async fn agent_runs_wasm_pods_bound_to_it() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent_with(&server, "node-a", dir.path(), &["--label", "zone=test"]);
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
    let first = c
        .get(leases, Some("kube-node-lease"), "node-a")
        .await
        .unwrap();
    let renew0 = first["spec"]["renewTime"].as_str().unwrap().to_string();
    wait_for("the lease to be renewed", Duration::from_secs(10), || {
        let c = c.clone();
        let renew0 = renew0.clone();
        async move {
            c.get(leases, Some("kube-node-lease"), "node-a")
                .await
                .unwrap()["spec"]["renewTime"]
                .as_str()
                != Some(&renew0)
        }
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
    assert!(
        ip.starts_with(&format!("127.{}.", wk_nodeagent::pod_octet("node-a"))),
        "{ip}"
    );
    let ready = running["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready["status"], "True");
    assert!(running["status"]["containerStatuses"][0]["state"]["running"]["startedAt"].is_string());
    let body = reqwest::get(format!("http://{ip}:8080/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        body,
        "hello from hello\ngreeting: hey\ncontent: from a configmap\n"
    );

    // Env from Secret and ConfigMap keys (envFrom too) and a Secret volume.
    let secrets = lookup("secrets").unwrap();
    c.create(
        secrets,
        None,
        &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
        "data": {"greeting": "ZnJvbSBhIHNlY3JldA==", "greeting.txt": "c2VjcmV0IGZpbGU="}}),
        &[],
    )
    .await
    .unwrap();
    c.create(cm, None, &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "names"}, "data": {"NAME": "from-envfrom"}}), &[])
        .await
        .unwrap();
    let pod2 = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hello2"},
        "spec": {"nodeName": "node-a", "runtimeClassName": "wasm", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "hello", "image": sample("hello-http.wasm"), "ports": [{"containerPort": 8080}],
                "envFrom": [{"configMapRef": {"name": "names"}, "prefix": "POD_"}],
                "env": [{"name": "GREETING", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "greeting"}}}],
                "volumeMounts": [{"name": "s", "mountPath": "/content", "readOnly": true}, {"name": "scratch", "mountPath": "/tmp"}]}],
            "volumes": [{"name": "s", "secret": {"secretName": "creds"}}, {"name": "scratch", "emptyDir": {}}]}});
    c.create(pods, None, &pod2, &[]).await.unwrap();
    wait_for("hello2 to run", Duration::from_secs(30), || {
        let c = c.clone();
        async move { c.get(pods, None, "hello2").await.unwrap()["status"]["phase"] == "Running" }
    })
    .await;
    let ip2 = c.get(pods, None, "hello2").await.unwrap()["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_string();
    let body = reqwest::get(format!("http://{ip2}:8080/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        body,
        "hello from from-envfrom\ngreeting: from a secret\ncontent: secret file\n"
    );
    // A missing key is a config error the pod reports.
    let broken = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "broken-env"},
        "spec": {"nodeName": "node-a", "runtimeClassName": "wasm",
            "containers": [{"name": "hello", "image": sample("hello-http.wasm"),
                "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "names", "key": "missing"}}}]}]}});
    c.create(pods, None, &broken, &[]).await.unwrap();
    wait_for("a CreateContainerConfigError", Duration::from_secs(30), || {
        let c = c.clone();
        async move {
            let w = &c.get(pods, None, "broken-env").await.unwrap()["status"]["containerStatuses"][0]["state"]["waiting"];
            w["reason"] == "CreateContainerConfigError" && w["message"] == "env X: key missing not found in configmap names"
        }
    })
    .await;

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
    assert_eq!(
        done["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        0
    );
    assert_eq!(
        done["status"]["containerStatuses"][0]["state"]["terminated"]["reason"],
        "Completed"
    );

    // Logs through the API server, from wk and from kubectl.
    let out = server.wk(&["logs", "pi"]);
    assert_eq!(
        common::stdout(&out),
        "3.141592653\n",
        "{}",
        common::stderr(&out)
    );
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
    assert!(
        ts.parse::<jiff::Timestamp>().is_ok(),
        "{text} {}",
        common::stderr(&out)
    );
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
    reqwest::get(format!("http://{ip}:8080/followed"))
        .await
        .unwrap();
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
    assert_eq!(
        bad["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
        1
    );

    // Deleting the service pod stops it gracefully and the agent finishes the deletion.
    c.delete(pods, None, "hello", &json!({})).await.unwrap();
    wait_for("the pod to be gone", Duration::from_secs(30), || {
        let c = c.clone();
        async move { c.get_opt(pods, None, "hello").await.unwrap().is_none() }
    })
    .await;
    assert!(
        reqwest::get(format!("http://{ip}:8080/")).await.is_err(),
        "nothing serves on the pod IP any more"
    );
    drop(agent);
}

/// The join token only obtains a node credential; a node credential reaches only its own
/// Node, Lease and pods and what those pods reference.
#[tokio::test]
async fn node_credentials_are_limited() {
    let server = TestServer::start();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(server.ca_path()).unwrap()).unwrap();
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let join = node_token(&server);
    let url = |p: &str| format!("{}{p}", server.url);
    let denied = http
        .get(url("/api/v1/namespaces/default/pods"))
        .bearer_auth(&join)
        .send()
        .await
        .unwrap();
    assert_eq!(
        denied.status(),
        403,
        "the join token is not a node credential"
    );
    let bad = http
        .post(url("/wk/v1/nodecredentials/n1"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let cred: Value = http
        .post(url("/wk/v1/nodecredentials/n1"))
        .bearer_auth(&join)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let n1 = cred["token"].as_str().unwrap().to_string();
    let send = |m: reqwest::Method, p: &str, body: Option<Value>, ct: &str| {
        let mut r = http
            .request(m, url(p))
            .bearer_auth(&n1)
            .header("content-type", ct);
        if let Some(b) = body {
            r = r.body(serde_json::to_vec(&b).unwrap());
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    let json_ct = "application/json";
    let merge = "application/merge-patch+json";
    use reqwest::Method;
    assert_eq!(
        send(
            Method::GET,
            "/api/v1/namespaces/default/pods",
            None,
            json_ct
        )
        .await,
        200
    );
    assert_eq!(
        send(Method::GET, "/apis/apps/v1/deployments", None, json_ct).await,
        403
    );
    let node = |n: &str| json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n}});
    assert_eq!(
        send(Method::POST, "/api/v1/nodes", Some(node("n2")), json_ct).await,
        403,
        "not its name"
    );
    assert_eq!(
        send(Method::POST, "/api/v1/nodes", Some(node("n1")), json_ct).await,
        201
    );
    let lease = |n: &str| json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": n, "namespace": "kube-node-lease"}});
    assert_eq!(
        send(
            Method::POST,
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
            Some(lease("n2")),
            json_ct
        )
        .await,
        403
    );
    assert_eq!(
        send(
            Method::POST,
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
            Some(lease("n1")),
            json_ct
        )
        .await,
        201
    );
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}});
    assert_eq!(
        send(
            Method::POST,
            "/api/v1/namespaces/default/secrets",
            Some(secret),
            json_ct
        )
        .await,
        403
    );

    // Secrets: only those a pod bound to the node references, by name.
    let c = server.client();
    let secrets = lookup("secrets").unwrap();
    for name in ["mine", "theirs"] {
        c.create(secrets, None, &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": {"k": "dg=="}}), &[]).await.unwrap();
    }
    let pods = lookup("pods").unwrap();
    let pod = |name: &str, node: &str, secret: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x.wasm"}], "volumes": [{"name": "s", "secret": {"secretName": secret}}]}})
    };
    c.create(pods, None, &pod("p1", "n1", "mine"), &[])
        .await
        .unwrap();
    c.create(pods, None, &pod("p2", "n2", "theirs"), &[])
        .await
        .unwrap();
    assert_eq!(
        send(
            Method::GET,
            "/api/v1/namespaces/default/secrets/mine",
            None,
            json_ct
        )
        .await,
        200
    );
    assert_eq!(
        send(
            Method::GET,
            "/api/v1/namespaces/default/secrets/theirs",
            None,
            json_ct
        )
        .await,
        403
    );
    assert_eq!(
        send(
            Method::GET,
            "/api/v1/namespaces/default/secrets",
            None,
            json_ct
        )
        .await,
        403,
        "no listing"
    );
    // Pods: readable, but not their logs or exec (which reach into any node's containers).
    assert_eq!(
        send(
            Method::GET,
            "/api/v1/namespaces/default/pods/p2",
            None,
            json_ct
        )
        .await,
        200
    );
    for sub in ["log", "exec?command=true"] {
        assert_eq!(
            send(
                Method::GET,
                &format!("/api/v1/namespaces/default/pods/p2/{sub}"),
                None,
                json_ct
            )
            .await,
            403,
            "{sub}"
        );
    }
    // Pods: status and deletion of its own pods only.
    let status = json!({"status": {"phase": "Running"}});
    assert_eq!(
        send(
            Method::PATCH,
            "/api/v1/namespaces/default/pods/p1/status",
            Some(status.clone()),
            merge
        )
        .await,
        200
    );
    assert_eq!(
        send(
            Method::PATCH,
            "/api/v1/namespaces/default/pods/p2/status",
            Some(status),
            merge
        )
        .await,
        403
    );
    assert_eq!(
        send(
            Method::PATCH,
            "/api/v1/namespaces/default/pods/p1",
            Some(json!({"metadata": {"labels": {"a": "b"}}})),
            merge
        )
        .await,
        403
    );
    assert_eq!(
        send(
            Method::DELETE,
            "/api/v1/namespaces/default/pods/p2",
            None,
            json_ct
        )
        .await,
        403
    );
    assert_eq!(
        send(
            Method::DELETE,
            "/api/v1/namespaces/default/pods/p1",
            None,
            json_ct
        )
        .await,
        200
    );
}

/// Deployment → ReplicaSet → pods → scheduled onto two agents → served; scale; delete.
#[tokio::test]
async fn deployments_are_scheduled_across_agents_and_serve() {
    let server = TestServer::start_cluster();
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    // Nodes without a container runtime (so a container pod fits nowhere below).
    let _a1 = start_agent_with(&server, "node-1", d1.path(), &["--runc", "none"]);
    let _a2 = start_agent_with(&server, "node-2", d2.path(), &["--runc", "none"]);
    let c = server.client();
    let nodes = lookup("nodes").unwrap();
    wait_for("two nodes", Duration::from_secs(30), || {
        let c = c.clone();
        async move {
            c.list(nodes, None, false, &Default::default())
                .await
                .unwrap()["items"]
                .as_array()
                .unwrap()
                .len()
                == 2
        }
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
    let list = c
        .list(
            pods,
            None,
            false,
            &wk_client::ListParams {
                label_selector: Some("app=hello".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    let on = |n: &str| items.iter().filter(|p| p["spec"]["nodeName"] == n).count();
    assert_eq!(
        (on("node-1"), on("node-2")),
        (2, 2),
        "spread across both nodes"
    );
    for p in items {
        let ip = p["status"]["podIP"].as_str().unwrap();
        let body = reqwest::get(format!("http://{ip}:8080/"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            body.starts_with(&format!(
                "hello from {}",
                p["metadata"]["name"].as_str().unwrap()
            )),
            "{body}"
        );
    }
    // Scale down to 1.
    c.patch(
        deploy,
        None,
        "hello",
        "application/merge-patch+json",
        &json!({"spec": {"replicas": 1}}),
        &[],
    )
    .await
    .unwrap();
    wait_for("one pod left", Duration::from_secs(60), || {
        let c = c.clone();
        async move {
            let l = c
                .list(
                    pods,
                    None,
                    false,
                    &wk_client::ListParams {
                        label_selector: Some("app=hello".into()),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
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
            let l = c
                .list(
                    pods,
                    None,
                    false,
                    &wk_client::ListParams {
                        label_selector: Some("app=hello".into()),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            l["items"].as_array().unwrap().is_empty()
        }
    })
    .await;
}

async fn pod_status(c: &wk_client::Client, name: &str) -> Value {
    c.get(lookup("pods").unwrap(), None, name).await.unwrap()["status"].clone()
}

fn condition(status: &Value, kind: &str) -> String {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .map(|c| c["status"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

async fn wait_node(c: &wk_client::Client, name: &str) {
    let nodes = lookup("nodes").unwrap();
    wait_for("the node to register", Duration::from_secs(30), || {
        let c = c.clone();
        let name = name.to_string();
        async move { c.get_opt(nodes, None, &name).await.unwrap().is_some() }
    })
    .await;
}

/// Readiness flips Ready without restarts; liveness failures restart the container (with
/// its previous log kept); a startup probe gates both; a dead tcpSocket probe restarts.
#[tokio::test]
async fn probes_drive_readiness_and_restarts() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let _agent = start_agent(&server, "node-p", dir.path());
    let c = server.client();
    wait_node(&c, "node-p").await;
    let flags = tempfile::tempdir().unwrap();
    std::fs::write(flags.path().join("not-ready"), "").unwrap();
    let pods = lookup("pods").unwrap();
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probed"},
        "spec": {"nodeName": "node-p", "runtimeClassName": "wasm", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "hello", "image": sample("hello-http.wasm"), "ports": [{"name": "http", "containerPort": 8080}],
                "startupProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 1},
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 1, "failureThreshold": 1},
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1, "failureThreshold": 2},
                "volumeMounts": [{"name": "flags", "mountPath": "/content", "readOnly": true}]}],
            "volumes": [{"name": "flags", "hostPath": {"path": flags.path().display().to_string()}}]}});
    c.create(pods, None, &pod, &[]).await.unwrap();
    wait_for(
        "the pod to run and pass its startup probe",
        Duration::from_secs(30),
        || {
            let c = c.clone();
            async move { pod_status(&c, "probed").await["containerStatuses"][0]["started"] == true }
        },
    )
    .await;
    // Running, but its readiness probe fails: not Ready.
    let st = pod_status(&c, "probed").await;
    assert_eq!(st["phase"], "Running");
    assert_eq!(condition(&st, "Ready"), "False", "{st}");
    assert_eq!(st["containerStatuses"][0]["ready"], false);
    std::fs::remove_file(flags.path().join("not-ready")).unwrap();
    wait_for(
        "Ready once the readiness probe passes",
        Duration::from_secs(20),
        || {
            let c = c.clone();
            async move { condition(&pod_status(&c, "probed").await, "Ready") == "True" }
        },
    )
    .await;
    std::fs::write(flags.path().join("not-ready"), "").unwrap();
    wait_for("NotReady again", Duration::from_secs(20), || {
        let c = c.clone();
        async move { condition(&pod_status(&c, "probed").await, "Ready") == "False" }
    })
    .await;
    let st = pod_status(&c, "probed").await;
    assert_eq!(
        st["containerStatuses"][0]["restartCount"], 0,
        "readiness never restarts"
    );
    let ip = st["podIP"].as_str().unwrap().to_string();
    assert_eq!(
        reqwest::get(format!("http://{ip}:8080/"))
            .await
            .unwrap()
            .status(),
        200,
        "a NotReady pod still runs"
    );
    std::fs::remove_file(flags.path().join("not-ready")).unwrap();

    // Liveness fails twice in a row: the container is killed and restarted.
    std::fs::write(flags.path().join("unhealthy"), "").unwrap();
    wait_for(
        "a restart after the liveness probe fails",
        Duration::from_secs(30),
        || {
            let c = c.clone();
            async move {
                pod_status(&c, "probed").await["containerStatuses"][0]["restartCount"]
                    .as_u64()
                    .unwrap_or(0)
                    >= 1
            }
        },
    )
    .await;
    std::fs::remove_file(flags.path().join("unhealthy")).unwrap();
    let st = pod_status(&c, "probed").await;
    let last = &st["containerStatuses"][0]["lastState"]["terminated"];
    assert_eq!(last["exitCode"], 137, "{st}");
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .contains("failed liveness probe"),
        "{last}"
    );
    let restarts = st["containerStatuses"][0]["restartCount"].as_u64().unwrap();
    wait_for(
        "Ready again after the restart",
        Duration::from_secs(30),
        || {
            let c = c.clone();
            async move { condition(&pod_status(&c, "probed").await, "Ready") == "True" }
        },
    )
    .await;
    assert_eq!(
        pod_status(&c, "probed").await["containerStatuses"][0]["restartCount"]
            .as_u64()
            .unwrap(),
        restarts,
        "healthy again: no more restarts"
    );
    // Events explain it.
    let events = c
        .list(
            lookup("events").unwrap(),
            Some("default"),
            false,
            &Default::default(),
        )
        .await
        .unwrap();
    let reasons: Vec<(String, String)> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["involvedObject"]["name"] == "probed")
        .map(|e| {
            (
                e["reason"].as_str().unwrap().to_string(),
                e["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        reasons.iter().any(|(r, m)| r == "Unhealthy"
            && m == "Liveness probe failed: HTTP probe failed with statuscode: 503"),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|(r, _)| r == "Killing"), "{reasons:?}");
    // The killed instance's log is the previous log.
    let out = server.wk(&["logs", "probed", "--previous"]);
    assert!(
        common::stdout(&out).contains("GET /healthz"),
        "{} {}",
        common::stdout(&out),
        common::stderr(&out)
    );

    // Exec probes need processes: a Wasm container with one is not started, and says why.
    let exec = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "exec-probe"},
        "spec": {"nodeName": "node-p", "runtimeClassName": "wasm",
            "containers": [{"name": "hello", "image": sample("hello-http.wasm"),
                "livenessProbe": {"exec": {"command": ["cat", "/tmp/healthy"]}}}]}});
    c.create(pods, None, &exec, &[]).await.unwrap();
    wait_for(
        "the exec probe to be refused",
        Duration::from_secs(30),
        || {
            let c = c.clone();
            async move {
                let w =
                    &pod_status(&c, "exec-probe").await["containerStatuses"][0]["state"]["waiting"];
                w["reason"] == "CreateContainerConfigError"
                    && w["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("livenessProbe.exec"))
            }
        },
    )
    .await;

    // A liveness probe on a port nothing listens on restarts the container.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "dead-port"},
        "spec": {"nodeName": "node-p", "runtimeClassName": "wasm", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "hello", "image": sample("hello-http.wasm"), "ports": [{"containerPort": 8080}],
                "livenessProbe": {"tcpSocket": {"host": "127.0.0.1", "port": closed}, "periodSeconds": 1, "failureThreshold": 1}}]}});
    c.create(pods, None, &dead, &[]).await.unwrap();
    wait_for(
        "the dead-port pod to restart",
        Duration::from_secs(30),
        || {
            let c = c.clone();
            async move {
                pod_status(&c, "dead-port").await["containerStatuses"][0]["restartCount"]
                    .as_u64()
                    .unwrap_or(0)
                    >= 1
            }
        },
    )
    .await;
}

/// The agent admits only what fits its allocatable, and says why it refused, as the
/// kubelet does.
#[tokio::test]
async fn pods_that_do_not_fit_are_rejected() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let _agent = start_agent_with(&server, "small", dir.path(), &["--max-pods", "2"]);
    let c = server.client();
    wait_node(&c, "small").await;
    let node = c
        .get(lookup("nodes").unwrap(), None, "small")
        .await
        .unwrap();
    assert_eq!(node["status"]["allocatable"]["pods"], "2");
    let pods = lookup("pods").unwrap();
    let pod = |name: &str, cpu: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": "small", "runtimeClassName": "wasm",
                "containers": [{"name": "hello", "image": sample("hello-http.wasm"), "ports": [{"containerPort": 8080}],
                    "resources": {"requests": {"cpu": cpu}}}]}})
    };
    c.create(pods, None, &pod("fits", "100m"), &[])
        .await
        .unwrap();
    wait_for("the first pod to run", Duration::from_secs(30), || {
        let c = c.clone();
        async move { pod_status(&c, "fits").await["phase"] == "Running" }
    })
    .await;
    c.create(pods, None, &pod("too-big", "1000"), &[])
        .await
        .unwrap();
    wait_for(
        "the big pod to be rejected",
        Duration::from_secs(30),
        || {
            let c = c.clone();
            async move { pod_status(&c, "too-big").await["phase"] == "Failed" }
        },
    )
    .await;
    let st = pod_status(&c, "too-big").await;
    assert_eq!(st["reason"], "OutOfcpu");
    let cpus = std::thread::available_parallelism().unwrap().get() * 1000;
    assert_eq!(
        st["message"],
        format!(
            "Pod was rejected: Node didn't have enough resource: cpu, requested: 1000000, used: 100, capacity: {cpus}"
        )
    );
    c.create(pods, None, &pod("second", "100m"), &[])
        .await
        .unwrap();
    c.create(pods, None, &pod("third", "100m"), &[])
        .await
        .unwrap();
    wait_for(
        "the third pod to be rejected for the pod count",
        Duration::from_secs(30),
        || {
            let c = c.clone();
            async move { pod_status(&c, "third").await["reason"] == "OutOfpods" }
        },
    )
    .await;
    assert_eq!(pod_status(&c, "second").await["phase"], "Running");
}

/// With the control plane gone for 10 s pods keep serving; the agent resyncs after it
/// returns without restarting them. A restarted agent restarts its Wasm pods on the same
/// addresses and removes what was deleted while it was down.
#[tokio::test]
async fn pods_survive_control_plane_outage_and_agent_restart() {
    let mut server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent(&server, "node-r", dir.path());
    let c = server.client();
    wait_node(&c, "node-r").await;
    let pods = lookup("pods").unwrap();
    let pod = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": "node-r", "runtimeClassName": "wasm", "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "hello", "image": sample("hello-http.wasm"), "ports": [{"containerPort": 8080}],
                    "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}})
    };
    for name in ["steady", "doomed"] {
        c.create(pods, None, &pod(name), &[]).await.unwrap();
    }
    // restartPolicy Never: what dies with the agent is not run a second time.
    let mut once = pod("once");
    once["spec"]["restartPolicy"] = json!("Never");
    c.create(pods, None, &once, &[]).await.unwrap();
    for name in ["steady", "doomed", "once"] {
        wait_for("the pods to run", Duration::from_secs(30), || {
            let c = c.clone();
            async move { pod_status(&c, name).await["phase"] == "Running" }
        })
        .await;
    }
    let before = pod_status(&c, "steady").await;
    let ip = before["podIP"].as_str().unwrap().to_string();
    let started_at = before["containerStatuses"][0]["state"]["running"]["startedAt"].clone();

    // The control plane goes away for 10 s; the pod keeps answering throughout.
    server.kill9();
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let mut answered = 0;
    while std::time::Instant::now() < until {
        let body = reqwest::get(format!("http://{ip}:8080/"))
            .await
            .expect("the pod answers while the control plane is down")
            .text()
            .await
            .unwrap();
        assert!(body.starts_with("hello from steady"), "{body}");
        answered += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(answered >= 30);
    server.restart();
    let c = server.client();
    // The agent resyncs: a pod created now runs, and the old one was not restarted.
    c.create(pods, None, &pod("after"), &[]).await.unwrap();
    wait_for(
        "a new pod to run after the outage",
        Duration::from_secs(30),
        || {
            let c = c.clone();
            async move { pod_status(&c, "after").await["phase"] == "Running" }
        },
    )
    .await;
    let st = pod_status(&c, "steady").await;
    assert_eq!(st["containerStatuses"][0]["restartCount"], 0);
    assert_eq!(
        st["containerStatuses"][0]["state"]["running"]["startedAt"],
        started_at
    );
    assert_eq!(st["podIP"], ip.as_str());

    // The agent is killed; meanwhile one of its pods is force-deleted.
    let doomed_uid = c.get(pods, None, "doomed").await.unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(dir.path().join("pods").join(&doomed_uid).exists());
    drop(agent);
    assert!(
        reqwest::get(format!("http://{ip}:8080/")).await.is_err(),
        "wasm pods end with their agent"
    );
    c.delete(pods, None, "doomed", &json!({"gracePeriodSeconds": 0}))
        .await
        .unwrap();
    let _agent = start_agent(&server, "node-r", dir.path());
    wait_for(
        "the pod to be restarted by the new agent",
        Duration::from_secs(30),
        || {
            let c = c.clone();
            async move {
                let st = pod_status(&c, "steady").await;
                st["containerStatuses"][0]["restartCount"] == 1
                    && st["containerStatuses"][0]["state"]["running"].is_object()
            }
        },
    )
    .await;
    let st = pod_status(&c, "steady").await;
    assert_eq!(
        st["podIP"],
        ip.as_str(),
        "same address after the agent restart"
    );
    wait_for("the Never pod to fail", Duration::from_secs(30), || {
        let c = c.clone();
        async move { pod_status(&c, "once").await["phase"] == "Failed" }
    })
    .await;
    let once = pod_status(&c, "once").await;
    let cs = &once["containerStatuses"][0];
    assert_eq!(cs["restartCount"], 0, "{once}");
    assert_eq!(cs["state"]["terminated"]["exitCode"], 255, "{once}");
    assert_eq!(cs["state"]["terminated"]["reason"], "Unknown", "{once}");
    assert_eq!(
        st["containerStatuses"][0]["lastState"]["terminated"]["reason"],
        "Unknown"
    );
    let body = reqwest::get(format!("http://{ip}:8080/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.starts_with("hello from steady"), "{body}");
    assert!(
        !dir.path().join("pods").join(&doomed_uid).exists(),
        "the deleted pod's directory is cleaned up"
    );
}

/// A TCP relay to `upstream` whose open connections can be frozen: their bytes stop
/// flowing both ways but the sockets stay open, as when a server is powered off or cut
/// off without a reset. Connections made after a freeze flow.
async fn freezable_relay(
    upstream: std::net::SocketAddr,
) -> (std::net::SocketAddr, tokio::sync::watch::Sender<u32>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (freeze, frozen) = tokio::sync::watch::channel(0u32);
    tokio::spawn(async move {
        loop {
            let Ok((mut down, _)) = listener.accept().await else {
                continue;
            };
            let mut frozen = frozen.clone();
            let born = *frozen.borrow();
            tokio::spawn(async move {
                let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut down, &mut up) => return,
                    _ = frozen.wait_for(|f| *f > born) => {}
                }
                // Frozen: hold both sockets open, silent, until the test ends.
                std::future::pending::<()>().await;
                drop((down, up));
            });
        }
    });
    (addr, freeze)
}

/// The agent's connections to its server go silent without being closed: it notices
/// (HTTP/2 pings, and its pod watch's bookmarks), reconnects and lists again, so a pod
/// bound to it meanwhile runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_notices_a_server_gone_silent() {
    let server = TestServer::start();
    let upstream: std::net::SocketAddr = server.url.trim_start_matches("https://").parse().unwrap();
    let (relay, freeze) = freezable_relay(upstream).await;
    let dir = tempfile::tempdir().unwrap();
    let _agent = common::start_agent_at(
        &server,
        &format!("https://{relay}"),
        "node-s",
        dir.path(),
        &[],
    );
    let c = server.client();
    wait_node(&c, "node-s").await;
    wait_for("the node's lease", Duration::from_secs(30), || {
        let c = c.clone();
        async move {
            c.get_opt(lookup("leases").unwrap(), Some("kube-node-lease"), "node-s")
                .await
                .unwrap()
                .is_some()
        }
    })
    .await;
    freeze.send_replace(1);
    let pods = lookup("pods").unwrap();
    c.create(pods, None, &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "later"},
        "spec": {"nodeName": "node-s", "runtimeClassName": "wasm",
            "containers": [{"name": "hello", "image": sample("hello-http.wasm"), "ports": [{"containerPort": 8080}]}]}}), &[])
        .await
        .unwrap();
    wait_for(
        "the pod bound after the freeze to run",
        Duration::from_secs(60),
        || {
            let c = c.clone();
            async move { pod_status(&c, "later").await["phase"] == "Running" }
        },
    )
    .await;
}

/// A pod whose image server accepts and then never answers waits in ContainerCreating,
/// and deleting it does not wait for the download: the pull gives way to the stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_stuck_pulling_is_deleted_at_once() {
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let image = format!("http://{}/app.wasm", hung.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hung.accept().await {
            held.push(s); // read nothing, answer nothing
        }
    });
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let _agent = start_agent(&server, "node-h", dir.path());
    let c = server.client();
    wait_node(&c, "node-h").await;
    let pods = lookup("pods").unwrap();
    c.create(pods, None, &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "stuck"},
        "spec": {"nodeName": "node-h", "runtimeClassName": "wasm", "terminationGracePeriodSeconds": 30,
            "containers": [{"name": "app", "image": image}]}}), &[])
        .await
        .unwrap();
    wait_for("the pod to be pulling", Duration::from_secs(30), || {
        let c = c.clone();
        async move {
            pod_status(&c, "stuck").await["containerStatuses"][0]["state"]["waiting"]["reason"]
                == "ContainerCreating"
        }
    })
    .await;
    c.delete(pods, None, "stuck", &json!({})).await.unwrap();
    wait_for("the pod to be gone", Duration::from_secs(10), || {
        let c = c.clone();
        async move { c.get_opt(pods, None, "stuck").await.unwrap().is_none() }
    })
    .await;
}

/// A container in its crash back-off does not hold up the rest of the pod: while the
/// crasher waits out a 16 s back-off, its neighbour's failing readiness probe makes the
/// pod NotReady within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_does_not_freeze_the_pod() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let _agent = start_agent(&server, "node-b", dir.path());
    let c = server.client();
    wait_node(&c, "node-b").await;
    let flags = tempfile::tempdir().unwrap();
    let pods = lookup("pods").unwrap();
    c.create(pods, None, &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "mixed"},
        "spec": {"nodeName": "node-b", "runtimeClassName": "wasm", "terminationGracePeriodSeconds": 1,
            "containers": [
                {"name": "web", "image": sample("hello-http.wasm"), "ports": [{"name": "http", "containerPort": 8080}],
                 "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 1, "failureThreshold": 1},
                 "volumeMounts": [{"name": "flags", "mountPath": "/content", "readOnly": true}]},
                {"name": "crasher", "image": sample("pi.wasm"), "args": ["nope"]}],
            "volumes": [{"name": "flags", "hostPath": {"path": flags.path().display().to_string()}}]}}), &[])
        .await
        .unwrap();
    let restarts = |st: &Value| {
        st["containerStatuses"]
            .as_array()
            .and_then(|cs| cs.iter().find(|x| x["name"] == "crasher"))
            .and_then(|x| x["restartCount"].as_u64())
            .unwrap_or(0)
    };
    // Back-offs of 1, 2, 4 and 8 s: after the fifth end the crasher waits 16 s.
    wait_for("five crashes", Duration::from_secs(60), || {
        let c = c.clone();
        async move { restarts(&pod_status(&c, "mixed").await) >= 5 }
    })
    .await;
    std::fs::write(flags.path().join("not-ready"), "").unwrap();
    let flipped = std::time::Instant::now();
    wait_for(
        "NotReady while the crasher backs off",
        Duration::from_secs(5),
        || {
            let c = c.clone();
            async move {
                let st = pod_status(&c, "mixed").await;
                st["containerStatuses"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|x| x["name"] == "web"))
                    .is_some_and(|x| x["ready"] == false)
            }
        },
    )
    .await;
    assert_eq!(
        restarts(&pod_status(&c, "mixed").await),
        5,
        "{:?}",
        flipped.elapsed()
    );
}

/// A node whose pod range is used up fails the next pod with a reason (instead of
/// giving it the range's own first address, which its end would have removed).
#[tokio::test]
async fn a_full_pod_range_fails_the_pod_with_a_reason() {
    let server = TestServer::start_cluster();
    let dir = tempfile::tempdir().unwrap();
    // A /29: six usable addresses, the first one the node's own, five for pods.
    let _agent = start_agent_with(
        &server,
        "tiny",
        dir.path(),
        &["--runc", "none", "--pod-cidr", "127.99.7.0/29"],
    );
    let c = server.client();
    let pods = lookup("pods").unwrap();
    for i in 0..6 {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("p{i}"), "labels": {"app": "tiny"}},
            "spec": {"runtimeClassName": "wasm", "nodeName": "tiny",
                "containers": [{"name": "hello", "image": sample("hello-http.wasm"), "ports": [{"containerPort": 8080}]}]}});
        c.create(pods, None, &pod, &[]).await.unwrap();
    }
    wait_for(
        "five pods running and one failed",
        Duration::from_secs(30),
        || {
            let c = c.clone();
            async move {
                let all = common::list(&c, "pods", "app=tiny").await;
                let phase = |p: &str| all.iter().filter(|x| x["status"]["phase"] == p).count();
                phase("Running") == 5 && phase("Failed") == 1
            }
        },
    )
    .await;
    let all = common::list(&c, "pods", "app=tiny").await;
    let failed = all
        .iter()
        .find(|p| p["status"]["phase"] == "Failed")
        .unwrap();
    assert_eq!(failed["status"]["reason"], "OutOfPodAddresses", "{failed}");
    let ips: std::collections::BTreeSet<&str> = all
        .iter()
        .filter_map(|p| p["status"]["podIP"].as_str())
        .collect();
    assert_eq!(
        ips,
        [
            "127.99.7.2",
            "127.99.7.3",
            "127.99.7.4",
            "127.99.7.5",
            "127.99.7.6"
        ]
        .into(),
        "{all:?}"
    );
}
