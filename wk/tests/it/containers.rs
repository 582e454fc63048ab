//! Containers (`runtimeClassName: oci`) run by real runc beside Wasm pods, with real
//! agents: images built from Debian's static busybox, imported with `wk image import` or
//! pulled from a real registry (Debian's docker-registry); Jobs' exit codes, OOM kills,
//! exec probes, graceful stop, Services and DNS across the two runtimes. Needs root,
//! runc and busybox-static (`scripts/test.sh` installs them).

use crate::common;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use wk_api::resource::lookup;
use wk_client::Client;
use wk_runtime_oci::archive;
use wk_runtime_oci::store::ImageConfig;

use crate::common::{TestServer, is_ready, list, sample, start_agent_with, stdout, wait_for};

/// Pod ranges of their own for these tests' agents. The default range comes from a hash
/// of the node name, and agents of tests running in parallel on this host may share one;
/// Wasm pods sharing a range just skip each other's addresses, but a container's address
/// is routed into its namespace and would take it from a Wasm pod of another agent.
const POD_CIDRS: [&str; 4] = [
    "127.200.0.0/16",
    "127.201.0.0/16",
    "127.202.0.0/16",
    "127.203.0.0/16",
];

const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "sleep", "httpd", "head", "tail", "touch", "rm", "test", "wget",
    "hostname", "true", "nslookup", "sed",
];

fn busybox_parts() -> archive::ImageParts {
    let layer = archive::busybox_layer(Path::new("/bin/busybox"), APPLETS)
        .expect("a static busybox at /bin/busybox (apt-get install busybox-static)");
    let config = ImageConfig {
        cmd: vec!["sh".into()],
        ..Default::default()
    };
    archive::image_parts(&config, &[layer]).unwrap()
}

/// Writes the busybox image as an oci-archive and imports it into an agent's store with
/// `wk image import`.
fn import_busybox(server: &TestServer, agent_dir: &Path, reference: &str) {
    let layer = archive::busybox_layer(Path::new("/bin/busybox"), APPLETS).unwrap();
    let config = ImageConfig {
        cmd: vec!["sh".into()],
        ..Default::default()
    };
    let file = agent_dir.join("busybox.tar");
    archive::write_oci_archive(&file, reference, &config, &[layer]).unwrap();
    let out = server.wk(&[
        "image",
        "import",
        file.to_str().unwrap(),
        "--data-dir",
        agent_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ls = server.wk(&["image", "ls", "--data-dir", agent_dir.to_str().unwrap()]);
    assert!(stdout(&ls).contains(reference), "{}", stdout(&ls));
}

fn pod(name: &str, image: &str, script: &str, extra: Value) -> Value {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"runtimeClassName": "oci", "restartPolicy": "Never", "terminationGracePeriodSeconds": 5,
            "containers": [{"name": "main", "image": image, "command": ["sh", "-c", script]}]}});
    if let Some(o) = extra.as_object() {
        for (k, v) in o {
            if k == "container" {
                for (ck, cv) in v.as_object().unwrap() {
                    p["spec"]["containers"][0][ck] = cv.clone();
                }
            } else {
                p["spec"][k] = v.clone();
            }
        }
    }
    p
}

async fn create(c: &Client, obj: &Value) {
    let kind = obj["kind"].as_str().unwrap().to_ascii_lowercase() + "s";
    c.create(lookup(&kind).unwrap(), Some("default"), obj, &[])
        .await
        .unwrap();
}

async fn get_pod(c: &Client, name: &str) -> Value {
    c.get(lookup("pods").unwrap(), Some("default"), name)
        .await
        .unwrap()
}

async fn wait_phase(c: &Client, name: &str, phase: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..1200 {
        last = get_pod(c, name).await;
        if last["status"]["phase"] == phase {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("pod {name} never reached {phase}: {:#}", last["status"]);
}

fn terminated(p: &Value) -> &Value {
    &p["status"]["containerStatuses"][0]["state"]["terminated"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_jobs_oom_exec_probes_and_graceful_stop() {
    let server = TestServer::start_cluster();
    let dir = tempfile::tempdir().unwrap();
    let agent = start_agent_with(&server, "oci-a", dir.path(), &["--pod-cidr", POD_CIDRS[0]]);
    let c = server.client();
    wait_for(
        "the node to offer containers",
        Duration::from_secs(30),
        || {
            let c = c.clone();
            async move {
                c.get(lookup("nodes").unwrap(), None, "oci-a")
                    .await
                    .is_ok_and(|n| n["metadata"]["annotations"]["wk.dev/runtimes"] == "wasm,oci")
            }
        },
    )
    .await;
    import_busybox(&server, dir.path(), "wk.test/busybox:1");
    let image = "wk.test/busybox:1";

    // A Job that exits 0 and one that exits 3.
    for (name, code) in [("ok", 0), ("three", 3)] {
        let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"backoffLimit": 0, "template": {"spec": {"runtimeClassName": "oci", "restartPolicy": "Never",
                "containers": [{"name": "main", "image": image, "command": ["sh", "-c", format!("echo job {name}; exit {code}")]}]}}}});
        create(&c, &job).await;
    }
    let job_done = |name: &'static str, cond: &'static str| {
        let c = c.clone();
        async move {
            c.get(lookup("jobs").unwrap(), Some("default"), name)
                .await
                .is_ok_and(|j| {
                    j["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|x| x["type"] == cond && x["status"] == "True")
                    })
                })
        }
    };
    wait_for("job ok to complete", Duration::from_secs(60), || {
        job_done("ok", "Complete")
    })
    .await;
    for _ in 0..600 {
        if job_done("three", "Failed").await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        job_done("three", "Failed").await,
        "{:#}",
        list(&c, "pods", "job-name=three").await[0]["status"]
    );
    let pods = list(&c, "pods", "job-name=three").await;
    assert_eq!(
        terminated(&pods[0])["exitCode"],
        3,
        "{:#}",
        pods[0]["status"]
    );
    let ok_pod = list(&c, "pods", "job-name=ok").await[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let p = get_pod(&c, &ok_pod).await;
    assert_eq!(terminated(&p)["exitCode"], 0);
    assert!(
        p["status"]["containerStatuses"][0]["containerID"]
            .as_str()
            .unwrap()
            .starts_with("oci://")
    );
    // `wk logs` reads a container's log as it reads a Wasm pod's.
    let logs = server.wk(&["logs", &ok_pod]);
    assert_eq!(
        stdout(&logs).trim(),
        "job ok",
        "{}",
        String::from_utf8_lossy(&logs.stderr)
    );

    // Past its memory limit: OOMKilled.
    create(
        &c,
        &pod(
            "hog",
            image,
            "head -c 300000000 /dev/zero | tail",
            json!({"container": {"resources": {"limits": {"memory": "16Mi"}}}}),
        ),
    )
    .await;
    let p = wait_phase(&c, "hog", "Failed").await;
    assert_eq!(terminated(&p)["reason"], "OOMKilled", "{:#}", p["status"]);

    // Exec probes: ready once a file exists; restarted when another disappears.
    create(&c, &pod("probed", image, "sleep 2; touch /tmp/ready; touch /tmp/alive; sleep 3; rm /tmp/alive; sleep 1000",
        json!({"restartPolicy": "Always", "container": {
            "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1},
            "livenessProbe": {"exec": {"command": ["test", "-f", "/tmp/alive"]}, "initialDelaySeconds": 4, "periodSeconds": 1, "failureThreshold": 1}}}))).await;
    wait_for(
        "the exec readiness probe to pass",
        Duration::from_secs(30),
        || {
            let c = c.clone();
            async move { is_ready(&get_pod(&c, "probed").await) }
        },
    )
    .await;
    wait_for(
        "the exec liveness probe to restart the container",
        Duration::from_secs(60),
        || {
            let c = c.clone();
            async move {
                get_pod(&c, "probed").await["status"]["containerStatuses"][0]["restartCount"]
                    .as_u64()
                    .unwrap_or(0)
                    >= 1
            }
        },
    )
    .await;
    let described = server.wk(&["describe", "pod", "probed"]);
    assert!(
        stdout(&described).contains("Liveness probe failed"),
        "{}",
        stdout(&described)
    );

    // Graceful stop: SIGTERM reaches the container, whose trap writes to a hostPath volume.
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    create(&c, &pod("graceful", image, "trap 'echo term > /out/term; exit 0' TERM; while true; do sleep 0.1; done",
        json!({"terminationGracePeriodSeconds": 30, "volumes": [{"name": "out", "hostPath": {"path": out.to_str().unwrap()}}],
               "container": {"volumeMounts": [{"name": "out", "mountPath": "/out"}]}}))).await;
    wait_phase(&c, "graceful", "Running").await;
    // `wk exec`: output, stderr and the exit code of a command in the running container.
    let ran = server.wk(&[
        "exec",
        "graceful",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    assert_eq!(ran.status.code(), Some(7));
    assert_eq!(stdout(&ran), "out\n");
    assert_eq!(String::from_utf8_lossy(&ran.stderr), "err\n");
    let ran = server.wk(&["exec", "graceful", "--", "cat", "/etc/resolv.conf"]);
    assert!(ran.status.success());
    assert!(
        stdout(&ran).contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{}",
        stdout(&ran)
    );
    // kubectl's exec (a WebSocket, v5.channel.k8s.io): the same output, and kubectl
    // exits with the command's code.
    let k = server.kubectl(&[
        "exec",
        "graceful",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    let k_err = String::from_utf8_lossy(&k.stderr).to_string();
    assert_eq!(k.status.code(), Some(7), "{k_err}");
    assert_eq!(stdout(&k), "out\n");
    assert!(k_err.starts_with("err\n"), "{k_err}");
    let k = server.kubectl(&[
        "exec",
        "graceful",
        "-c",
        "main",
        "--",
        "cat",
        "/etc/resolv.conf",
    ]);
    assert!(k.status.success(), "{}", String::from_utf8_lossy(&k.stderr));
    assert!(
        stdout(&k).contains("search default.svc.cluster.local"),
        "{}",
        stdout(&k)
    );
    // Standard input is refused, naming it.
    let k = server.kubectl(&["exec", "-i", "graceful", "--", "true"]);
    assert!(!k.status.success());
    assert!(
        String::from_utf8_lossy(&k.stderr).contains("stdin"),
        "{}",
        String::from_utf8_lossy(&k.stderr)
    );
    let del = server.kubectl(&["delete", "pod", "graceful", "--wait=true", "--timeout=60s"]);
    assert!(
        del.status.success(),
        "{}",
        String::from_utf8_lossy(&del.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(out.join("term")).unwrap().trim(),
        "term"
    );
    // `kubectl delete --grace-period` overrides the pod's own 30 s: a container that
    // ignores SIGTERM is killed after 1 s, not 30.
    let marker = format!("stubborn-{}", std::process::id());
    create(
        &c,
        &pod(
            "stubborn",
            image,
            &format!("trap '' TERM; while true; do sleep 0.1; done # {marker}"),
            json!({"terminationGracePeriodSeconds": 30}),
        ),
    )
    .await;
    wait_phase(&c, "stubborn", "Running").await;
    let del = server.kubectl(&[
        "delete",
        "pod",
        "stubborn",
        "--grace-period=1",
        "--wait=true",
        "--timeout=20s",
    ]);
    assert!(
        del.status.success(),
        "{}",
        String::from_utf8_lossy(&del.stderr)
    );
    let left = std::process::Command::new("pgrep")
        .args(["-f", &marker])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "the container still runs: {}",
        String::from_utf8_lossy(&left.stdout)
    );
    // While a deleted pod's containers stop, an update to it (here a label) neither
    // deletes it nor makes its node finish the deletion early.
    create(
        &c,
        &pod(
            "slow-stop",
            image,
            "trap '' TERM; while true; do sleep 0.1; done",
            json!({"terminationGracePeriodSeconds": 6}),
        ),
    )
    .await;
    wait_phase(&c, "slow-stop", "Running").await;
    let deleting = std::time::Instant::now();
    let del = server.kubectl(&["delete", "pod", "slow-stop", "--wait=false"]);
    assert!(
        del.status.success(),
        "{}",
        String::from_utf8_lossy(&del.stderr)
    );
    let label = server.kubectl(&["label", "pod", "slow-stop", "seen=yes"]);
    assert!(
        label.status.success(),
        "{}",
        String::from_utf8_lossy(&label.stderr)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        deleting.elapsed() < Duration::from_secs(5)
            && c.get_opt(lookup("pods").unwrap(), None, "slow-stop")
                .await
                .unwrap()
                .is_some(),
        "the pod went before its grace period could have run out"
    );
    let del = server.kubectl(&["wait", "--for=delete", "pod/slow-stop", "--timeout=30s"]);
    assert!(
        del.status.success(),
        "{}",
        String::from_utf8_lossy(&del.stderr)
    );
    assert!(
        deleting.elapsed() >= Duration::from_secs(5),
        "{:?}",
        deleting.elapsed()
    );
    agent.stop();
}

/// Starts Debian's `docker-registry` on a loopback port (with `user:password` basic auth,
/// if given).
fn start_registry(dir: &Path, auth: Option<(&str, &str)>) -> (common::Proc, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join("registry.yml");
    std::fs::write(&config, format!(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
        dir.join("registry-data").display())).unwrap();
    if let Some((user, password)) = auth {
        let htpasswd = dir.join("htpasswd");
        std::fs::write(
            &htpasswd,
            format!("{user}:{}\n", bcrypt::hash(password, 4).unwrap()),
        )
        .unwrap();
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: wk\n    path: {}\n",
            htpasswd.display()
        ));
        std::fs::write(&config, text).unwrap();
    }
    let child = std::process::Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("docker-registry is installed (apt-get install docker-registry)");
    (common::Proc(child), format!("127.0.0.1:{port}"))
}

async fn push_busybox(registry: &str, reference: &str, auth: &wk_runtime_oci::RegistryAuth) {
    let client = wk_runtime_oci::registry_client(vec![registry.to_string()]);
    let parts = busybox_parts();
    let r: wk_runtime_oci::Reference = reference.parse().unwrap();
    let layers: Vec<_> = parts
        .layers
        .iter()
        .map(|l| oci_client::client::ImageLayer::new(l.clone(), archive::LAYER_GZIP.into(), None))
        .collect();
    let config =
        oci_client::client::Config::new(parts.config.clone(), archive::CONFIG.into(), None);
    let mut last = String::new();
    for _ in 0..200 {
        match client.push(&r, &layers, config.clone(), auth, None).await {
            Ok(_) => return,
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("could not push to the registry at {registry}: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_fleet_services_dns_and_registry_pull() {
    let server = TestServer::start_cluster();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (registry, reg) = start_registry(dirs[2].path(), None);
    let image = format!("{reg}/wk/busybox:1");
    push_busybox(&reg, &image, &wk_runtime_oci::RegistryAuth::Anonymous).await;
    let a1 = start_agent_with(
        &server,
        "oci-b",
        dirs[0].path(),
        &["--insecure-registry", &reg, "--pod-cidr", POD_CIDRS[1]],
    );
    // A node without runc: container pods must never land there.
    let _a2 = start_agent_with(
        &server,
        "oci-c",
        dirs[1].path(),
        &["--runc", "none", "--pod-cidr", POD_CIDRS[2]],
    );
    let c = server.client();
    wait_for("both nodes", Duration::from_secs(30), || {
        let c = c.clone();
        async move {
            list(&c, "nodes", "")
                .await
                .iter()
                .filter(|n| n["metadata"]["annotations"]["wk.dev/runtimes"].is_string())
                .count()
                == 2
        }
    })
    .await;

    // A container web server (pulled from the registry) and the Wasm hello sample, each
    // behind a Service.
    let web = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web-ctr"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web-ctr"}},
            "template": {"metadata": {"labels": {"app": "web-ctr"}}, "spec": {"runtimeClassName": "oci", "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "httpd", "image": image, "ports": [{"containerPort": 8080}],
                    "command": ["sh", "-c", "echo ctr $HOSTNAME > /www/index.html; exec httpd -f -p 8080 -h /www"],
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]}}}});
    let hello = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "hello"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "hello"}},
            "template": {"metadata": {"labels": {"app": "hello"}, "annotations": {"wk.dev/allow-outbound": "true"}},
                "spec": {"runtimeClassName": "wasm", "nodeName": "oci-b", "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "hello", "image": sample("hello-http.wasm"), "ports": [{"containerPort": 8080}],
                    "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}}}});
    for (d, svc) in [(web, "web-ctr"), (hello, "hello")] {
        create(&c, &d).await;
        create(
            &c,
            &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": svc},
            "spec": {"selector": {"app": svc}, "ports": [{"port": 80, "targetPort": 8080}]}}),
        )
        .await;
    }
    wait_for(
        "the container replicas to be ready",
        Duration::from_secs(90),
        || {
            let c = c.clone();
            async move {
                list(&c, "pods", "app=web-ctr")
                    .await
                    .iter()
                    .filter(|p| is_ready(p))
                    .count()
                    == 2
            }
        },
    )
    .await;
    for p in list(&c, "pods", "app=web-ctr").await {
        assert_eq!(
            p["spec"]["nodeName"], "oci-b",
            "container pods only on the node with runc"
        );
    }
    // One replica pulled the image; the other found it present (one pull per image).
    let mut described = String::new();
    for p in list(&c, "pods", "app=web-ctr").await {
        described.push_str(&stdout(&server.wk(&[
            "describe",
            "pod",
            p["metadata"]["name"].as_str().unwrap(),
        ])));
    }
    assert_eq!(
        described.matches("Successfully pulled image").count(),
        1,
        "{described}"
    );
    assert!(
        described.contains("already present on machine"),
        "{described}"
    );

    // Through the Service VIP, both replicas answer.
    let vip = c
        .get(lookup("svc").unwrap(), Some("default"), "web-ctr")
        .await
        .unwrap()["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let seen: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    wait_for(
        "both replicas to answer through the VIP",
        Duration::from_secs(30),
        || {
            let (http, seen, url) = (http.clone(), seen.clone(), format!("http://{vip}/"));
            async move {
                if let Ok(r) = http.get(url).send().await {
                    let body = r.text().await.unwrap_or_default();
                    assert!(body.starts_with("ctr web-ctr-"), "{body}");
                    seen.lock().unwrap().insert(body.trim().to_string());
                }
                seen.lock().unwrap().len() == 2
            }
        },
    )
    .await;

    // A container calls the Wasm Service by its short name, resolved by the node's DNS
    // through the resolv.conf search path. (A static glibc busybox cannot resolve names in
    // wget, without the NSS libraries; its nslookup has its own resolver.)
    wait_for("the Wasm pod to be ready", Duration::from_secs(60), || {
        let c = c.clone();
        async move { list(&c, "pods", "app=hello").await.iter().any(is_ready) }
    })
    .await;
    create(&c, &pod("caller", &image, "addr=$(nslookup hello | sed -n 's/^Address: //p' | tail -n 1); wget -q -O - http://$addr/", json!({"nodeName": "oci-b"}))).await;
    wait_for("the caller to finish", Duration::from_secs(60), || {
        let c = c.clone();
        async move { terminated(&get_pod(&c, "caller").await).is_object() }
    })
    .await;
    let logs = stdout(&server.wk(&["logs", "caller"]));
    let p = get_pod(&c, "caller").await;
    assert_eq!(terminated(&p)["exitCode"], 0, "{logs}");
    assert!(logs.contains("hello from hello-"), "{logs}");

    // A Wasm pod has no processes to exec.
    let hello_pod = list(&c, "pods", "app=hello").await[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let out = server.wk(&["exec", &hello_pod, "--", "ls"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no processes to exec"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The Wasm pod calls the container Service by name (outgoing wasi:http).
    let hello_vip = c
        .get(lookup("svc").unwrap(), Some("default"), "hello")
        .await
        .unwrap()["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let body = http
        .get(format!(
            "http://{hello_vip}/fetch?url=http://web-ctr.default.svc.cluster.local/"
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("ctr web-ctr-"), "{body}");
    drop(registry);
    a1.stop();
    let _: Vec<PathBuf> = Vec::new();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_registries_need_image_pull_secrets() {
    let server = TestServer::start_cluster();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (registry, reg) = start_registry(dirs[1].path(), Some(("wk", "s3cret")));
    let image = format!("{reg}/private/busybox:1");
    let basic = wk_runtime_oci::RegistryAuth::Basic("wk".into(), "s3cret".into());
    push_busybox(&reg, &image, &basic).await;
    let agent = start_agent_with(
        &server,
        "oci-d",
        dirs[0].path(),
        &["--insecure-registry", &reg, "--pod-cidr", POD_CIDRS[3]],
    );
    let c = server.client();

    // Without credentials: ErrImagePull, saying why.
    create(
        &c,
        &pod(
            "anonymous",
            &image,
            "echo never",
            json!({"nodeName": "oci-d"}),
        ),
    )
    .await;
    wait_for("the pull to be refused", Duration::from_secs(60), || {
        let c = c.clone();
        async move {
            get_pod(&c, "anonymous").await["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ErrImagePull"
        }
    })
    .await;
    let p = get_pod(&c, "anonymous").await;
    let message = p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.to_ascii_lowercase().contains("authorized") || message.contains("401"),
        "{message}"
    );

    // With a kubernetes.io/dockerconfigjson Secret named in imagePullSecrets.
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let docker_config = json!({"auths": {reg.clone(): {"auth": b64("wk:s3cret")}}}).to_string();
    create(&c, &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "regcred"}, "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": b64(&docker_config)}})).await;
    create(
        &c,
        &pod(
            "authorized",
            &image,
            "echo pulled-with-secret",
            json!({"nodeName": "oci-d", "imagePullSecrets": [{"name": "regcred"}]}),
        ),
    )
    .await;
    let p = wait_phase(&c, "authorized", "Succeeded").await;
    assert_eq!(terminated(&p)["exitCode"], 0);
    assert_eq!(
        stdout(&server.wk(&["logs", "authorized"])).trim(),
        "pulled-with-secret"
    );

    // `wk image pull` by hand, with the password from the environment.
    let store_dir = dirs[2].path().to_str().unwrap();
    let out = std::process::Command::new(common::WK)
        .args([
            "image",
            "pull",
            &image,
            "--insecure",
            "--username",
            "wk",
            "--data-dir",
            store_dir,
        ])
        .env("WK_REGISTRY_PASSWORD", "s3cret")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).contains("pulled"), "{}", stdout(&out));
    let ls = server.wk(&["image", "ls", "--data-dir", store_dir]);
    assert!(
        stdout(&ls).contains(&format!("{reg}/private/busybox:1")),
        "{}",
        stdout(&ls)
    );
    let rm = server.wk(&["image", "rm", &image, "--data-dir", store_dir]);
    assert!(
        rm.status.success(),
        "{}",
        String::from_utf8_lossy(&rm.stderr)
    );
    assert!(
        !stdout(&server.wk(&["image", "ls", "--data-dir", store_dir])).contains("private/busybox")
    );
    let bad = server.wk(&["image", "rm", "nothing/here:1", "--data-dir", store_dir]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("not in the store"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    drop(registry);
    agent.stop();
}
