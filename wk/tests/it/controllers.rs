//! The scheduler and controllers with a real server and three real agents on loopback:
//! spreading, Endpoints, a node dying and its pods coming back elsewhere, Jobs, and an
//! unschedulable pod explained.

use crate::common;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wk_api::resource::lookup;
use wk_client::Client;

use crate::common::{TestServer, cluster, is_ready, list, sample, start_agent, wait_for};

/// Three replicas spread over three nodes, listed in Endpoints; one agent is killed and
/// its pod is replaced on another node.
#[tokio::test]
async fn replicas_spread_and_come_back_when_a_node_dies() {
    let (server, mut agents, _dirs) = cluster(3).await;
    let c = server.client();
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "hello"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "hello"}},
            "template": {"metadata": {"labels": {"app": "hello"}}, "spec": {"runtimeClassName": "wasm", "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "hello", "image": sample("hello-http.wasm"), "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1},
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}});
    c.create(lookup("deploy").unwrap(), None, &d, &[])
        .await
        .unwrap();
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hello"},
        "spec": {"selector": {"app": "hello"}, "ports": [{"name": "web", "port": 80, "targetPort": "http"}]}});
    c.create(lookup("svc").unwrap(), None, &svc, &[])
        .await
        .unwrap();
    wait_for("3 ready replicas", Duration::from_secs(60), || {
        let c = c.clone();
        async move {
            list(&c, "pods", "app=hello")
                .await
                .iter()
                .filter(|p| is_ready(p))
                .count()
                == 3
        }
    })
    .await;
    let pods = list(&c, "pods", "app=hello").await;
    let mut nodes: Vec<&str> = pods
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap())
        .collect();
    nodes.sort();
    assert_eq!(
        nodes,
        ["node-1", "node-2", "node-3"],
        "one replica per node"
    );
    // Endpoints list the three ready pods on the target port.
    wait_for(
        "endpoints with 3 addresses",
        Duration::from_secs(20),
        || {
            let c = c.clone();
            async move {
                let ep = c
                    .get_opt(lookup("endpoints").unwrap(), None, "hello")
                    .await
                    .unwrap();
                ep.is_some_and(|e| {
                    e["subsets"][0]["addresses"]
                        .as_array()
                        .is_some_and(|a| a.len() == 3)
                        && e["subsets"][0]["ports"][0]["port"] == 8080
                })
            }
        },
    )
    .await;
    // Scheduled events were recorded.
    let events = list(&c, "events", "").await;
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "Scheduled"
                && e["message"].as_str().unwrap().contains("to node-")),
        "{events:?}"
    );

    // node-2's agent dies.
    let victim = pods
        .iter()
        .find(|p| p["spec"]["nodeName"] == "node-2")
        .unwrap();
    let victim_ip = victim["status"]["podIP"].as_str().unwrap().to_string();
    let killed = Instant::now();
    agents.retain(|(n, _)| n != "node-2");
    wait_for(
        "a replacement serving on another node",
        Duration::from_secs(60),
        || {
            let c = c.clone();
            async move {
                let ps = list(&c, "pods", "app=hello").await;
                ps.iter()
                    .filter(|p| {
                        is_ready(p)
                            && p["metadata"]["deletionTimestamp"].is_null()
                            && p["spec"]["nodeName"] != "node-2"
                    })
                    .count()
                    == 3
            }
        },
    )
    .await;
    println!(
        "pods serving again {:.1} s after the agent was killed",
        killed.elapsed().as_secs_f64()
    );
    let node = c
        .get(lookup("nodes").unwrap(), None, "node-2")
        .await
        .unwrap();
    let ready = node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["status"], "Unknown", "{node}");
    assert!(
        node["spec"]["taints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoExecute")
    );
    wait_for(
        "the dead pod to leave the endpoints",
        Duration::from_secs(20),
        || {
            let c = c.clone();
            let victim_ip = victim_ip.clone();
            async move {
                let e = c
                    .get(lookup("endpoints").unwrap(), None, "hello")
                    .await
                    .unwrap();
                let ips: Vec<&str> = e["subsets"][0]["addresses"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|x| x["ip"].as_str()).collect())
                    .unwrap_or_default();
                ips.len() == 3 && !ips.contains(&victim_ip.as_str())
            }
        },
    )
    .await;
    for p in list(&c, "pods", "app=hello")
        .await
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
    {
        let ip = p["status"]["podIP"].as_str().unwrap();
        assert_eq!(
            reqwest::get(format!("http://{ip}:8080/healthz"))
                .await
                .unwrap()
                .status(),
            200
        );
    }
}

/// Jobs: completions with parallelism, a failing Job stopped by backoffLimit, a finished
/// Job removed by its TTL together with its pods; and a pod that fits nowhere explained.
#[tokio::test]
async fn jobs_complete_fail_and_expire() {
    let (server, _agents, _dirs) = cluster(2).await;
    let c = server.client();
    let jobs = lookup("jobs").unwrap();
    let job = |name: &str, arg: &str, extra: Value| {
        let mut j = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"template": {"spec": {"runtimeClassName": "wasm", "restartPolicy": "Never",
                "containers": [{"name": "pi", "image": sample("pi.wasm"), "args": [arg]}]}}}});
        for (k, v) in extra.as_object().unwrap() {
            j["spec"][k] = v.clone();
        }
        j
    };
    c.create(
        jobs,
        None,
        &job("digits", "50", json!({"completions": 3, "parallelism": 2})),
        &[],
    )
    .await
    .unwrap();
    c.create(
        jobs,
        None,
        &job("bad", "nope", json!({"backoffLimit": 1})),
        &[],
    )
    .await
    .unwrap();
    c.create(
        jobs,
        None,
        &job("short-lived", "5", json!({"ttlSecondsAfterFinished": 0})),
        &[],
    )
    .await
    .unwrap();
    // A work queue: parallelism without completions runs that many pods, and is
    // complete once one has succeeded and none runs.
    let queue = c
        .create(
            jobs,
            None,
            &job("queue", "20", json!({"parallelism": 2})),
            &[],
        )
        .await
        .unwrap();
    assert!(queue["spec"]["completions"].is_null(), "{queue}");
    // A suspended Job runs nothing until it is resumed.
    c.create(
        jobs,
        None,
        &job("held", "10", json!({"suspend": true})),
        &[],
    )
    .await
    .unwrap();
    let condition = |j: &Value| {
        j["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["status"] == "True"))
            .cloned()
    };
    // The sample Job, applied from its manifest.
    let out = server.wk(&[
        "apply",
        "-f",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../samples/manifests/pi-job.yaml"
        ),
    ]);
    assert_eq!(
        common::stdout(&out),
        "job.batch/pi created\n",
        "{}",
        common::stderr(&out)
    );
    for name in ["digits", "pi"] {
        wait_for("the jobs to complete", Duration::from_secs(60), || {
            let c = c.clone();
            async move {
                condition(&c.get(jobs, None, name).await.unwrap())
                    .is_some_and(|c| c["type"] == "Complete")
            }
        })
        .await;
    }
    let sample_pod = list(&c, "pods", "job-name=pi").await;
    let out = server.wk(&["logs", sample_pod[0]["metadata"]["name"].as_str().unwrap()]);
    const PI: &str = "3.14159265358979323846264338327950288419716939937510582097494459230781640628620899862803482534211706798214808651";
    let digits = common::stdout(&out).trim().to_string();
    assert!(
        digits.len() == 101 && PI.starts_with(&digits),
        "the sample's 100 places of pi: {digits}"
    );
    wait_for(
        "the held Job to say it is suspended",
        Duration::from_secs(30),
        || {
            let c = c.clone();
            async move {
                condition(&c.get(jobs, None, "held").await.unwrap())
                    .is_some_and(|c| c["type"] == "Suspended")
            }
        },
    )
    .await;
    assert!(list(&c, "pods", "job-name=held").await.is_empty());
    c.patch(
        jobs,
        None,
        "held",
        "application/merge-patch+json",
        &json!({"spec": {"suspend": false}}),
        &[],
    )
    .await
    .unwrap();
    wait_for(
        "the resumed Job to complete",
        Duration::from_secs(60),
        || {
            let c = c.clone();
            async move {
                condition(&c.get(jobs, None, "held").await.unwrap())
                    .is_some_and(|c| c["type"] == "Complete")
            }
        },
    )
    .await;
    wait_for(
        "the work queue to complete",
        Duration::from_secs(60),
        || {
            let c = c.clone();
            async move {
                condition(&c.get(jobs, None, "queue").await.unwrap())
                    .is_some_and(|c| c["type"] == "Complete")
            }
        },
    )
    .await;
    assert_eq!(list(&c, "pods", "job-name=queue").await.len(), 2);
    let table = server.kubectl(&["get", "job", "queue", "--no-headers"]);
    assert!(
        common::stdout(&table).contains(" 2/1 of 2 "),
        "{}",
        common::stdout(&table)
    );
    let pi = c.get(jobs, None, "digits").await.unwrap();
    assert_eq!(pi["status"]["succeeded"], 3);
    assert!(pi["status"]["completionTime"].is_string());
    let pi_pods = list(&c, "pods", "job-name=digits").await;
    assert_eq!(pi_pods.len(), 3);
    let out = server.wk(&["logs", pi_pods[0]["metadata"]["name"].as_str().unwrap()]);
    assert!(
        common::stdout(&out).starts_with("3.14159265358979"),
        "{}",
        common::stdout(&out)
    );

    wait_for("bad to fail", Duration::from_secs(60), || {
        let c = c.clone();
        async move {
            condition(&c.get(jobs, None, "bad").await.unwrap())
                .is_some_and(|c| c["type"] == "Failed")
        }
    })
    .await;
    let bad = c.get(jobs, None, "bad").await.unwrap();
    assert_eq!(condition(&bad).unwrap()["reason"], "BackoffLimitExceeded");
    assert_eq!(
        bad["status"]["failed"], 2,
        "backoffLimit 1 allows one retry"
    );

    // A running pod deleted is a failure, counted even though the pod is gone: with
    // backoffLimit 0 the Job fails instead of starting another.
    let mut victim = job("victim", "", json!({"backoffLimit": 0}));
    let victim_containers = json!([{"name": "web",
        "image": sample("hello-http.wasm"), "ports": [{"containerPort": 8080}]}]);
    victim["spec"]["template"]["spec"]["containers"] = victim_containers.clone();
    // Waits for a pod of Job `name` to run.
    let job_pod_runs = |name: &'static str| {
        let c = c.clone();
        async move {
            wait_for("the Job's pod to run", Duration::from_secs(30), || {
                let c = c.clone();
                async move {
                    list(&c, "pods", &format!("job-name={name}"))
                        .await
                        .iter()
                        .any(|p| p["status"]["phase"] == "Running")
                }
            })
            .await
        }
    };
    c.create(jobs, None, &victim, &[]).await.unwrap();
    job_pod_runs("victim").await;
    let running = list(&c, "pods", "job-name=victim").await;
    assert_eq!(
        running[0]["metadata"]["finalizers"],
        json!(["batch.kubernetes.io/job-tracking"])
    );
    let pods = lookup("pods").unwrap();
    let victim_pod = running[0]["metadata"]["name"].as_str().unwrap();
    c.delete(pods, None, victim_pod, &json!({})).await.unwrap();
    wait_for(
        "the victim Job to fail and its pod to go",
        Duration::from_secs(30),
        || {
            let c = c.clone();
            async move {
                condition(&c.get(jobs, None, "victim").await.unwrap())
                    .is_some_and(|c| c["type"] == "Failed")
                    && list(&c, "pods", "job-name=victim").await.is_empty()
            }
        },
    )
    .await;
    let victim = c.get(jobs, None, "victim").await.unwrap();
    assert_eq!(
        condition(&victim).unwrap()["reason"],
        "BackoffLimitExceeded"
    );
    assert_eq!(victim["status"]["failed"], 1, "{victim}");
    assert_eq!(victim["status"]["succeeded"], 0, "{victim}");

    // A Job deleted with --cascade=orphan leaves its running pod, which loses the
    // tracking finalizer, so deleting it later is not held up.
    let mut orphan = job("orphan", "", json!({}));
    orphan["spec"]["template"]["spec"]["containers"] = victim_containers.clone();
    c.create(jobs, None, &orphan, &[]).await.unwrap();
    job_pod_runs("orphan").await;
    c.delete(
        jobs,
        None,
        "orphan",
        &json!({"propagationPolicy": "Orphan"}),
    )
    .await
    .unwrap();
    wait_for(
        "the orphaned pod to lose its owner and finalizer",
        Duration::from_secs(30),
        || {
            let c = c.clone();
            async move {
                list(&c, "pods", "job-name=orphan").await.iter().all(|p| {
                    p["metadata"]["ownerReferences"]
                        .as_array()
                        .is_none_or(Vec::is_empty)
                        && p["metadata"]["finalizers"]
                            .as_array()
                            .is_none_or(Vec::is_empty)
                })
            }
        },
    )
    .await;
    let orphaned = list(&c, "pods", "job-name=orphan").await;
    assert_eq!(orphaned.len(), 1);
    let orphaned = orphaned[0]["metadata"]["name"].as_str().unwrap();
    c.delete(pods, None, orphaned, &json!({})).await.unwrap();
    wait_for("the orphaned pod to go", Duration::from_secs(30), || {
        let c = c.clone();
        async move { list(&c, "pods", "job-name=orphan").await.is_empty() }
    })
    .await;

    wait_for(
        "the ttl job and its pods to be deleted",
        Duration::from_secs(60),
        || {
            let c = c.clone();
            async move {
                c.get_opt(jobs, None, "short-lived")
                    .await
                    .unwrap()
                    .is_none()
                    && list(&c, "pods", "job-name=short-lived").await.is_empty()
            }
        },
    )
    .await;

    // A pod that fits no node is explained in Kubernetes' words.
    let big = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "big"},
        "spec": {"runtimeClassName": "wasm", "containers": [{"name": "c", "image": sample("hello-http.wasm"), "resources": {"requests": {"memory": "64Ti"}}}]}});
    c.create(pods, None, &big, &[]).await.unwrap();
    wait_for(
        "an Unschedulable condition",
        Duration::from_secs(30),
        || {
            let c = c.clone();
            async move {
                let p = c.get(pods, None, "big").await.unwrap();
                p["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c["reason"] == "Unschedulable"
                            && c["message"] == "0/2 nodes are available: 2 Insufficient memory."
                    })
                })
            }
        },
    )
    .await;
    let events = list(&c, "events", "").await;
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "FailedScheduling" && e["involvedObject"]["name"] == "big")
    );
}

/// What a poller saw of a Deployment's pods during a rollout.
#[derive(Default, Debug)]
struct Watched {
    samples: usize,
    min_ready: usize,
    max_pods: usize,
    mixed: usize,
}

/// Polls the pods of `app` every 50 ms until `stop`: the fewest ready and the most
/// existing (not terminating) pods seen, and how often two templates were live at once.
fn poll_rollout(
    c: Client,
    app: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Watched> {
    tokio::spawn(async move {
        let mut w = Watched {
            min_ready: usize::MAX,
            ..Default::default()
        };
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let pods = list(&c, "pods", &format!("app={app}")).await;
            let live: Vec<&Value> = pods
                .iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .collect();
            let hashes: std::collections::BTreeSet<&str> = live
                .iter()
                .filter_map(|p| p["metadata"]["labels"]["pod-template-hash"].as_str())
                .collect();
            w.samples += 1;
            w.min_ready = w.min_ready.min(live.iter().filter(|p| is_ready(p)).count());
            w.max_pods = w.max_pods.max(live.len());
            w.mixed += usize::from(hashes.len() > 1);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        w
    })
}

/// The GREETING each ready pod of `app` answers with.
async fn greetings(c: &Client, app: &str) -> Vec<String> {
    let http = reqwest::Client::new();
    let mut out = Vec::new();
    for p in list(c, "pods", &format!("app={app}")).await {
        if !is_ready(&p) || !p["metadata"]["deletionTimestamp"].is_null() {
            continue;
        }
        let ip = p["status"]["podIP"].as_str().unwrap();
        let body = http
            .get(format!("http://{ip}:8080/"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        out.push(body);
    }
    out
}

/// Sets the greeting of workload `name` (labelled `app=name`) to v2, waits for kubectl
/// to see the rollout finish, then for all `count` pods to answer with v2.
async fn roll_to_v2(
    server: &TestServer,
    c: &Client,
    (plural, kind, name): (&str, &str, &'static str),
    count: usize,
) {
    common::set_greeting(c, plural, name, "v2").await;
    let target = format!("{kind}/{name}");
    let out = run_cli(
        server,
        &["kubectl", "rollout", "status", &target, "--timeout=90s"],
    )
    .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    wait_for("v2 everywhere", Duration::from_secs(30), || {
        let c = c.clone();
        async move {
            let g = greetings(&c, name).await;
            g.len() == count && g.iter().all(|g| g.contains("v2"))
        }
    })
    .await;
}

async fn run_cli(server: &TestServer, args: &[&str]) -> String {
    let (bin, args): (&str, Vec<String>) =
        (args[0], args[1..].iter().map(|s| s.to_string()).collect());
    let out = if bin == "kubectl" {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        server.kubectl(&a)
    } else {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        server.wk(&a)
    };
    assert!(
        out.status.success(),
        "{bin} {args:?}: {}{}",
        common::stdout(&out),
        common::stderr(&out)
    );
    common::stdout(&out)
}

/// A rolling update v1 → v2 with maxSurge 1 / maxUnavailable 0 watched by a poller, then
/// history, rollback with kubectl, scaling with kubectl and wk, pause/resume, restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_rollback_scale_pause() {
    let (server, _agents, _dirs) = cluster(3).await;
    let c = server.client();
    let deploy = lookup("deploy").unwrap();
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "annotations": {"kubernetes.io/change-cause": "greeting v1"}},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"runtimeClassName": "wasm", "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "hello", "image": sample("hello-http.wasm"), "ports": [{"name": "http", "containerPort": 8080}],
                    "env": [{"name": "GREETING", "value": "v1"}],
                    "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 1}}]}}}});
    c.create(deploy, None, &d, &[]).await.unwrap();
    let out = run_cli(
        &server,
        &[
            "wk",
            "rollout",
            "status",
            "deployment/web",
            "--timeout",
            "90s",
        ],
    )
    .await;
    assert!(
        out.trim_end()
            .ends_with("deployment \"web\" successfully rolled out"),
        "{out}"
    );
    assert!(greetings(&c, "web").await.iter().all(|g| g.contains("v1")));
    // A pod's story, as `describe` tells it.
    let pod = list(&c, "pods", "app=web").await[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let out = run_cli(&server, &["wk", "describe", "pod", &pod]).await;
    for reason in ["Scheduled", "Pulled", "Created", "Started"] {
        assert!(out.contains(reason), "{reason} missing: {out}");
    }

    // v2, watched throughout.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = poll_rollout(c.clone(), "web", stop.clone());
    let patch = json!([
        {"op": "replace", "path": "/spec/template/spec/containers/0/env/0/value", "value": "v2"},
        {"op": "replace", "path": "/metadata/annotations/kubernetes.io~1change-cause", "value": "greeting v2"}]);
    c.patch(
        deploy,
        None,
        "web",
        "application/json-patch+json",
        &patch,
        &[],
    )
    .await
    .unwrap();
    let out = run_cli(
        &server,
        &[
            "kubectl",
            "rollout",
            "status",
            "deployment/web",
            "--timeout=90s",
        ],
    )
    .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = poller.await.unwrap();
    println!("rollout v1 → v2 as polled: {seen:?}");
    assert!(
        seen.mixed > 0,
        "the poller saw the rollout in progress: {seen:?}"
    );
    assert!(
        seen.min_ready >= 3,
        "maxUnavailable 0 kept 3 ready pods: {seen:?}"
    );
    assert!(
        seen.max_pods <= 4,
        "maxSurge 1 allowed at most 4 pods: {seen:?}"
    );
    let g = greetings(&c, "web").await;
    assert!(g.len() == 3 && g.iter().all(|g| g.contains("v2")), "{g:?}");
    let hist = run_cli(&server, &["wk", "rollout", "history", "deployment/web"]).await;
    assert!(
        hist.contains("1         greeting v1") && hist.contains("2         greeting v2"),
        "{hist}"
    );
    let d = c.get(deploy, None, "web").await.unwrap();
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );

    // Rollback with kubectl: revision 1's ReplicaSet comes back as revision 3.
    let out = run_cli(&server, &["kubectl", "rollout", "undo", "deployment/web"]).await;
    assert!(out.contains("rolled back"), "{out}");
    run_cli(
        &server,
        &[
            "wk",
            "rollout",
            "status",
            "deployment/web",
            "--timeout",
            "90s",
        ],
    )
    .await;
    let g = greetings(&c, "web").await;
    assert!(g.len() == 3 && g.iter().all(|g| g.contains("v1")), "{g:?}");
    let hist = run_cli(
        &server,
        &["kubectl", "rollout", "history", "deployment/web"],
    )
    .await;
    assert!(
        hist.contains("2         greeting v2") && hist.contains("3         greeting v1"),
        "{hist}"
    );
    let sets = list(&c, "replicasets", "app=web").await;
    assert_eq!(
        sets.len(),
        2,
        "the old ReplicaSet was reused: {:#?}",
        sets.iter()
            .map(|r| &r["spec"]["template"])
            .collect::<Vec<_>>()
    );

    // Scale with kubectl, then with wk.
    run_cli(
        &server,
        &["kubectl", "scale", "deployment/web", "--replicas=5"],
    )
    .await;
    run_cli(
        &server,
        &[
            "wk",
            "rollout",
            "status",
            "deployment/web",
            "--timeout",
            "90s",
        ],
    )
    .await;
    assert_eq!(greetings(&c, "web").await.len(), 5);
    let out = run_cli(
        &server,
        &["wk", "scale", "deployment", "web", "--replicas", "2"],
    )
    .await;
    assert_eq!(out.trim(), "deployment.apps/web scaled");
    wait_for("2 pods", Duration::from_secs(30), || {
        let c = c.clone();
        async move {
            list(&c, "pods", "app=web")
                .await
                .iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .count()
                == 2
        }
    })
    .await;

    // Paused: a template change waits for resume.
    run_cli(&server, &["wk", "rollout", "pause", "deployment/web"]).await;
    common::set_greeting(&c, "deploy", "web", "v3").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        list(&c, "replicasets", "app=web").await.len(),
        2,
        "no rollout while paused"
    );
    let out = run_cli(
        &server,
        &["wk", "rollout", "status", "deployment/web", "--watch=false"],
    )
    .await;
    assert!(
        out.contains("0 out of 2 new replicas have been updated"),
        "{out}"
    );
    run_cli(&server, &["kubectl", "rollout", "resume", "deployment/web"]).await;
    run_cli(
        &server,
        &[
            "wk",
            "rollout",
            "status",
            "deployment/web",
            "--timeout",
            "90s",
        ],
    )
    .await;
    let g = greetings(&c, "web").await;
    assert!(g.len() == 2 && g.iter().all(|g| g.contains("v3")), "{g:?}");

    // Restart replaces every pod.
    let before: Vec<String> = list(&c, "pods", "app=web")
        .await
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    let out = run_cli(&server, &["wk", "rollout", "restart", "deployment/web"]).await;
    assert_eq!(out.trim(), "deployment.apps/web restarted");
    run_cli(
        &server,
        &[
            "wk",
            "rollout",
            "status",
            "deployment/web",
            "--timeout",
            "90s",
        ],
    )
    .await;
    wait_for("the old pods to go", Duration::from_secs(30), || {
        let c = c.clone();
        let before = before.clone();
        async move {
            let now = list(&c, "pods", "app=web").await;
            now.len() == 2
                && now
                    .iter()
                    .all(|p| !before.contains(&p["metadata"]["name"].as_str().unwrap().to_string()))
        }
    })
    .await;
    // Events tell the story.
    let out = run_cli(&server, &["wk", "describe", "deployment", "web"]).await;
    assert!(
        out.contains("ScalingReplicaSet") && out.contains("DeploymentRollback"),
        "{out}"
    );
    let out = run_cli(&server, &["wk", "get", "events"]).await;
    assert!(out.contains("Scaled up replica set web-"), "{out}");
}

fn names(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn job_done(j: &Value) -> bool {
    j["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Complete" && c["status"] == "True")
    })
}

/// A CronJob fires on schedule, one Job at a time (Forbid), keeps two finished Jobs, and
/// stops while suspended.
#[tokio::test]
async fn cronjob_fires_keeps_history_and_suspends() {
    let (server, _agents, _dirs) = cluster(1).await;
    let c = server.client();
    let cj = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "tick"},
        "spec": {"schedule": "@every 2s", "concurrencyPolicy": "Forbid", "successfulJobsHistoryLimit": 2,
            "jobTemplate": {"metadata": {"labels": {"app": "tick"}}, "spec": {"backoffLimit": 1, "template": {"spec": {
                "runtimeClassName": "wasm", "restartPolicy": "Never",
                "containers": [{"name": "pi", "image": sample("pi.wasm"), "args": ["20"]}]}}}}}});
    c.create(lookup("cronjobs").unwrap(), None, &cj, &[])
        .await
        .unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let s2 = seen.clone();
    wait_for(
        "four runs, with history trimmed to two",
        Duration::from_secs(60),
        || {
            let (c, seen) = (c.clone(), s2.clone());
            async move {
                let jobs = list(&c, "jobs", "app=tick").await;
                seen.lock().unwrap().extend(names(&jobs));
                let done = jobs.iter().filter(|j| job_done(j)).count();
                let active = jobs.iter().filter(|j| !job_done(j)).count();
                assert!(active <= 1, "Forbid: one Job at a time: {:?}", names(&jobs));
                seen.lock().unwrap().len() >= 4 && (1..=2).contains(&done)
            }
        },
    )
    .await;
    let cj = c
        .get(lookup("cronjobs").unwrap(), None, "tick")
        .await
        .unwrap();
    assert!(cj["status"]["lastScheduleTime"].is_string(), "{cj}");
    assert!(cj["status"]["lastSuccessfulTime"].is_string(), "{cj}");
    let out = run_cli(&server, &["wk", "describe", "cronjob", "tick"]).await;
    assert!(
        out.contains("SuccessfulCreate") && out.contains("Created job tick-"),
        "{out}"
    );

    // Suspended: no new Jobs.
    c.patch(
        lookup("cronjobs").unwrap(),
        None,
        "tick",
        "application/merge-patch+json",
        &json!({"spec": {"suspend": true}}),
        &[],
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = names(&list(&c, "jobs", "app=tick").await);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = names(&list(&c, "jobs", "app=tick").await);
    assert!(
        after.iter().all(|n| before.contains(n)),
        "{before:?} → {after:?}"
    );

    // Deleting the CronJob removes its Jobs.
    c.delete(lookup("cronjobs").unwrap(), None, "tick", &json!({}))
        .await
        .unwrap();
    wait_for("the jobs to be collected", Duration::from_secs(30), || {
        let c = c.clone();
        async move { list(&c, "jobs", "app=tick").await.is_empty() }
    })
    .await;
}

/// A DaemonSet runs one pod per eligible node, follows a new node, a tainted node and a
/// deleted node, and rolls a template change out node by node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_follows_nodes_and_rolls() {
    let (server, mut agents, mut dirs) = cluster(2).await;
    let c = server.client();
    let ds = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "edge"},
        "spec": {"selector": {"matchLabels": {"app": "edge"}},
            "template": {"metadata": {"labels": {"app": "edge"}}, "spec": {"runtimeClassName": "wasm", "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "hello", "image": sample("hello-http.wasm"), "ports": [{"name": "http", "containerPort": 8080}],
                    "env": [{"name": "GREETING", "value": "v1"}],
                    "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 1}}]}}}});
    let ds_rt = lookup("daemonsets").unwrap();
    c.create(ds_rt, None, &ds, &[]).await.unwrap();
    let on_nodes = |c: Client| async move {
        let mut n: Vec<String> = list(&c, "pods", "app=edge")
            .await
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null() && is_ready(p))
            .map(|p| p["spec"]["nodeName"].as_str().unwrap().to_string())
            .collect();
        n.sort();
        n
    };
    let wait_nodes = |want: Vec<&'static str>| {
        let c = c.clone();
        async move {
            wait_for(
                &format!("daemon pods on {want:?}"),
                Duration::from_secs(60),
                || {
                    let (c, want) = (c.clone(), want.clone());
                    async move { on_nodes(c).await == want }
                },
            )
            .await
        }
    };
    wait_nodes(vec!["node-1", "node-2"]).await;
    let out = run_cli(
        &server,
        &["wk", "rollout", "status", "ds/edge", "--timeout", "60s"],
    )
    .await;
    assert!(
        out.contains("daemon set \"edge\" successfully rolled out"),
        "{out}"
    );

    // A new node gets a pod.
    let d = tempfile::tempdir().unwrap();
    agents.push(("node-3".into(), start_agent(&server, "node-3", d.path())));
    dirs.push(d);
    wait_nodes(vec!["node-1", "node-2", "node-3"]).await;

    // A NoSchedule taint the template does not tolerate leaves the pod already there
    // (counted as misscheduled); a NoExecute one removes it.
    let taint = |effect: &'static str| {
        let c = c.clone();
        async move {
            c.patch(
                lookup("nodes").unwrap(),
                None,
                "node-2",
                "application/merge-patch+json",
                &json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": effect}]}}),
                &[],
            )
            .await
            .unwrap();
        }
    };
    taint("NoSchedule").await;
    wait_for("the taint to be counted", Duration::from_secs(30), || {
        let c = c.clone();
        async move {
            c.get(ds_rt, None, "edge").await.unwrap()["status"]["numberMisscheduled"] == 1
        }
    })
    .await;
    assert_eq!(on_nodes(c.clone()).await, ["node-1", "node-2", "node-3"]);
    taint("NoExecute").await;
    wait_nodes(vec!["node-1", "node-3"]).await;

    // A template change rolls out; kubectl sees it finish.
    roll_to_v2(&server, &c, ("daemonsets", "daemonset", "edge"), 2).await;

    // node-3 leaves the cluster: its agent stops and its Node is deleted.
    agents.retain(|(n, _)| n != "node-3");
    c.delete(lookup("nodes").unwrap(), None, "node-3", &json!({}))
        .await
        .unwrap();
    wait_for("only node-1's pod left", Duration::from_secs(60), || {
        let c = c.clone();
        async move {
            let pods = list(&c, "pods", "app=edge").await;
            pods.len() == 1 && pods[0]["spec"]["nodeName"] == "node-1"
        }
    })
    .await;
    let status = c.get(ds_rt, None, "edge").await.unwrap()["status"].clone();
    assert_eq!(status["desiredNumberScheduled"], 1, "{status}");
    assert_eq!(status["updatedNumberScheduled"], 1, "{status}");
}

/// `kubectl delete --cascade=orphan` leaves the pods, ownerless; `--cascade=foreground`
/// removes the pods before their ReplicaSet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_and_foreground_deletion() {
    let (server, _agents, _dirs) = cluster(1).await;
    let c = server.client();
    let rs_rt = lookup("replicasets").unwrap();
    let rs = |name: &str| {
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"set": name}},
                "template": {"metadata": {"labels": {"set": name}}, "spec": {"runtimeClassName": "wasm", "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "hello", "image": sample("hello-http.wasm"), "ports": [{"containerPort": 8080}]}]}}}})
    };
    for name in ["keep", "fg"] {
        c.create(rs_rt, None, &rs(name), &[]).await.unwrap();
        wait_for("2 running pods", Duration::from_secs(30), || {
            let c = c.clone();
            async move {
                list(&c, "pods", &format!("set={name}"))
                    .await
                    .iter()
                    .filter(|p| p["status"]["phase"] == "Running")
                    .count()
                    == 2
            }
        })
        .await;
    }
    // Orphan.
    run_cli(
        &server,
        &["kubectl", "delete", "rs", "keep", "--cascade=orphan"],
    )
    .await;
    assert!(c.get_opt(rs_rt, None, "keep").await.unwrap().is_none());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pods = list(&c, "pods", "set=keep").await;
    assert_eq!(pods.len(), 2, "orphaned pods stay");
    assert!(
        pods.iter()
            .all(|p| p["metadata"]["ownerReferences"].is_null()
                && p["metadata"]["deletionTimestamp"].is_null()),
        "{pods:?}"
    );
    // The same ReplicaSet applied again adopts them instead of starting two more.
    let again = c.create(rs_rt, None, &rs("keep"), &[]).await.unwrap();
    let new_uid = again["metadata"]["uid"].as_str().unwrap().to_string();
    wait_for("the orphans adopted", Duration::from_secs(30), || {
        let (c, new_uid) = (c.clone(), new_uid.clone());
        async move {
            list(&c, "pods", "set=keep").await.iter().all(|p| {
                p["metadata"]["ownerReferences"][0]["uid"] == new_uid.as_str()
                    && p["metadata"]["ownerReferences"][0]["controller"] == true
            })
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kept = list(&c, "pods", "set=keep").await;
    assert_eq!(
        kept.iter()
            .map(|p| p["metadata"]["name"].clone())
            .collect::<Vec<_>>(),
        pods.iter()
            .map(|p| p["metadata"]["name"].clone())
            .collect::<Vec<_>>(),
        "the same two pods, no new ones"
    );
    // Foreground: the ReplicaSet outlives its pods.
    run_cli(
        &server,
        &[
            "kubectl",
            "delete",
            "rs",
            "fg",
            "--cascade=foreground",
            "--wait=false",
        ],
    )
    .await;
    let start = Instant::now();
    let mut saw_waiting = false;
    loop {
        let set = c.get_opt(rs_rt, None, "fg").await.unwrap();
        let pods = list(&c, "pods", "set=fg").await.len();
        match set {
            Some(r) => {
                assert!(r["metadata"]["deletionTimestamp"].is_string(), "{r}");
                saw_waiting |= pods > 0
                    && r["metadata"]["finalizers"]
                        .as_array()
                        .is_some_and(|f| f.contains(&json!("foregroundDeletion")));
            }
            None => {
                assert_eq!(pods, 0, "the ReplicaSet went before its pods");
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "foreground deletion did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        saw_waiting,
        "the ReplicaSet waited with its finalizer while pods existed"
    );
}

/// `strategy: Recreate`: the new template's pods are created only once every old pod is
/// gone, those still stopping included. Checked on the store's own order of events (a
/// watch), so an overlap cannot slip between two polls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_starts_new_pods_only_once_the_old_are_gone() {
    use futures::StreamExt;
    let (server, _agents, _dirs) = cluster(1).await;
    let c = server.client();
    // A 4 s grace period: each old pod takes about 2 s to stop (its drain).
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "rc"},
        "spec": {"replicas": 2, "strategy": {"type": "Recreate"}, "selector": {"matchLabels": {"app": "rc"}},
            "template": {"metadata": {"labels": {"app": "rc"}}, "spec": {"runtimeClassName": "wasm", "terminationGracePeriodSeconds": 4,
                "containers": [{"name": "hello", "image": sample("hello-http.wasm"), "ports": [{"containerPort": 8080}],
                    "env": [{"name": "GREETING", "value": "v1"}]}]}}}});
    c.create(lookup("deployments").unwrap(), None, &d, &[])
        .await
        .unwrap();
    let running = |c: Client| async move {
        list(&c, "pods", "app=rc")
            .await
            .into_iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .count()
    };
    wait_for("2 running pods", Duration::from_secs(60), || {
        let c = c.clone();
        async move { running(c).await == 2 }
    })
    .await;
    let hash = |p: &Value| p["metadata"]["labels"]["pod-template-hash"].to_string();
    let old: std::collections::HashSet<String> =
        list(&c, "pods", "app=rc").await.iter().map(hash).collect();
    let p = wk_client::ListParams {
        label_selector: Some("app=rc".into()),
        ..Default::default()
    };
    let mut events = Box::pin(
        c.watch(lookup("pods").unwrap(), None, false, &p, false)
            .await
            .unwrap(),
    );
    common::set_greeting(&c, "deployments", "rc", "v2").await;
    // name -> (template hash, phase) of every pod that exists.
    let mut live: std::collections::HashMap<String, (String, String)> = Default::default();
    let mut new_pods = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = live.len() == 2
            && live
                .values()
                .all(|(h, phase)| !old.contains(h) && phase == "Running");
        if done {
            break;
        }
        let e = tokio::time::timeout_at(deadline.into(), events.next())
            .await
            .expect("the rollout to finish")
            .expect("the watch to go on")
            .unwrap();
        let name = e.object["metadata"]["name"].as_str().unwrap().to_string();
        let h = hash(&e.object);
        if e.kind == "DELETED" {
            live.remove(&name);
            continue;
        }
        if e.kind == "ADDED" && !old.contains(&h) {
            new_pods += 1;
            let still: Vec<&String> = live
                .iter()
                .filter(|(_, (h, _))| old.contains(h))
                .map(|(n, _)| n)
                .collect();
            assert!(
                still.is_empty(),
                "{name} was created while {still:?} still existed"
            );
        }
        let phase = e.object["status"]["phase"]
            .as_str()
            .unwrap_or("")
            .to_string();
        live.insert(name, (h, phase));
    }
    assert_eq!(new_pods, 2);
}

/// A node whose clock runs two minutes ahead keeps renewing its Lease: it stays Ready
/// (a renewal is a `renewTime` that changed, timed on the server's clock); once it stops
/// renewing, it becomes unreachable as any silent node does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_skewed_clock_is_not_taken_for_dead() {
    let (server, _agents, _dirs) = cluster(0).await;
    let c = server.client();
    let (nodes, leases) = (lookup("nodes").unwrap(), lookup("leases").unwrap());
    let ahead =
        || wk_api::objects::rfc3339(jiff::Timestamp::now() + jiff::SignedDuration::from_secs(120));
    c.create(
        nodes,
        None,
        &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "skewed"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        &[],
    )
    .await
    .unwrap();
    c.create(
        leases,
        Some("kube-node-lease"),
        &json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "skewed", "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": "skewed", "leaseDurationSeconds": 40, "renewTime": ahead()}}),
        &[],
    )
    .await
    .unwrap();
    let renewing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let renewer = {
        let (c, renewing) = (c.clone(), renewing.clone());
        tokio::spawn(async move {
            while renewing.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = c
                    .patch(
                        leases,
                        Some("kube-node-lease"),
                        "skewed",
                        "application/merge-patch+json",
                        &json!({"spec": {"renewTime": ahead()}}),
                        &[],
                    )
                    .await;
            }
        })
    };
    let unreachable = |c: Client| async move {
        let node = c
            .get(lookup("nodes").unwrap(), None, "skewed")
            .await
            .unwrap();
        let tainted = node["spec"]["taints"].as_array().is_some_and(|ts| {
            ts.iter()
                .any(|t| t["key"] == "node.kubernetes.io/unreachable")
        });
        let ready = node["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .map(|c| c["status"].clone());
        tainted || ready != Some(json!("True"))
    };
    // Twice the 4 s grace, sampled every 200 ms.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(8) {
        assert!(
            !unreachable(c.clone()).await,
            "a renewing node was taken for dead"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    renewing.store(false, std::sync::atomic::Ordering::Relaxed);
    renewer.await.unwrap();
    wait_for(
        "the silent node to be unreachable",
        Duration::from_secs(20),
        || unreachable(c.clone()),
    )
    .await;
}

/// A Deployment deleted with `--cascade=orphan` and applied again takes its ReplicaSet
/// back (same template, same name) instead of failing to create it, and rolls out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_applied_again_adopts_its_orphaned_replicaset() {
    let (server, _agents, _dirs) = cluster(1).await;
    let c = server.client();
    let deploys = lookup("deployments").unwrap();
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "again"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "again"}},
            "template": {"metadata": {"labels": {"app": "again"}}, "spec": {"runtimeClassName": "wasm", "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "hello", "image": sample("hello-http.wasm"), "ports": [{"containerPort": 8080}],
                    "env": [{"name": "GREETING", "value": "v1"}]}]}}}});
    c.create(deploys, None, &d, &[]).await.unwrap();
    wait_for("2 v1 pods", Duration::from_secs(60), || {
        let c = c.clone();
        async move { greetings(&c, "again").await.len() == 2 }
    })
    .await;
    run_cli(
        &server,
        &["kubectl", "delete", "deploy", "again", "--cascade=orphan"],
    )
    .await;
    let pods: Vec<Value> = list(&c, "pods", "app=again").await;
    let uid = c.create(deploys, None, &d, &[]).await.unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for("the ReplicaSet adopted", Duration::from_secs(30), || {
        let (c, uid) = (c.clone(), uid.clone());
        async move {
            let sets = list(&c, "replicasets", "app=again").await;
            sets.len() == 1 && sets[0]["metadata"]["ownerReferences"][0]["uid"] == uid.as_str()
        }
    })
    .await;
    assert_eq!(list(&c, "pods", "app=again").await.len(), pods.len());
    roll_to_v2(&server, &c, ("deployments", "deploy", "again"), 2).await;
}

/// `minReadySeconds`: a pod counts as available only once it has been Ready that long,
/// so a ReplicaSet's availableReplicas trails its readyReplicas by about that much.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_ready_seconds_delays_availability() {
    let (server, _agents, _dirs) = cluster(1).await;
    let c = server.client();
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "patient"},
        "spec": {"replicas": 2, "minReadySeconds": 3, "selector": {"matchLabels": {"app": "patient"}},
            "template": {"metadata": {"labels": {"app": "patient"}}, "spec": {"runtimeClassName": "wasm", "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "hello", "image": sample("hello-http.wasm"), "ports": [{"containerPort": 8080}]}]}}}});
    c.create(lookup("deployments").unwrap(), None, &d, &[])
        .await
        .unwrap();
    let counts = |c: Client| async move {
        let sets = list(&c, "replicasets", "app=patient").await;
        sets.first().map_or((0, 0), |r| {
            (
                r["status"]["readyReplicas"].as_i64().unwrap_or(0),
                r["status"]["availableReplicas"].as_i64().unwrap_or(0),
            )
        })
    };
    let start = Instant::now();
    let (mut ready_at, mut available_at) = (None, None);
    while available_at.is_none() {
        assert!(start.elapsed() < Duration::from_secs(60), "never available");
        let (ready, available) = counts(c.clone()).await;
        if ready == 2 && ready_at.is_none() {
            ready_at = Some(Instant::now());
        }
        if available == 2 {
            available_at = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready_at = ready_at.expect("ready before available");
    let gap = available_at.unwrap() - ready_at;
    assert!(
        gap >= Duration::from_secs(2),
        "available {gap:?} after ready"
    );
    // A new minReadySeconds reaches the current ReplicaSet (the template is the same).
    c.patch(
        lookup("deployments").unwrap(),
        None,
        "patient",
        "application/merge-patch+json",
        &json!({"spec": {"minReadySeconds": 7}}),
        &[],
    )
    .await
    .unwrap();
    wait_for(
        "the ReplicaSet to take minReadySeconds 7",
        Duration::from_secs(10),
        || {
            let c = c.clone();
            async move {
                let sets = list(&c, "replicasets", "app=patient").await;
                sets.len() == 1 && sets[0]["spec"]["minReadySeconds"] == 7
            }
        },
    )
    .await;
}

/// `kubectl drain` (cordon, then an Eviction per pod): the node's pods end, their
/// replacements run on the other node, and the drained node takes no new pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drain_moves_pods_off_a_node() {
    let (server, _agents, _dirs) = cluster(2).await;
    let c = server.client();
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "drained"},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "drained"}},
            "template": {"metadata": {"labels": {"app": "drained"}}, "spec": {"runtimeClassName": "wasm", "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "hello", "image": sample("hello-http.wasm"), "ports": [{"containerPort": 8080}]}]}}}});
    c.create(lookup("deployments").unwrap(), None, &d, &[])
        .await
        .unwrap();
    let on = |c: Client, node: &'static str| async move {
        list(&c, "pods", "app=drained")
            .await
            .iter()
            .filter(|p| p["spec"]["nodeName"] == node && is_ready(p))
            .count()
    };
    wait_for("pods on both nodes", Duration::from_secs(60), || {
        let c = c.clone();
        async move { on(c.clone(), "node-1").await > 0 && on(c, "node-2").await > 0 }
    })
    .await;
    let out = run_cli(
        &server,
        &[
            "kubectl",
            "drain",
            "node-1",
            "--ignore-daemonsets",
            "--timeout=60s",
        ],
    )
    .await;
    assert!(out.contains("node/node-1 drained"), "{out}");
    let node = c
        .get(lookup("nodes").unwrap(), None, "node-1")
        .await
        .unwrap();
    assert_eq!(node["spec"]["unschedulable"], true, "{node}");
    wait_for("all four on node-2", Duration::from_secs(60), || {
        let c = c.clone();
        async move { on(c.clone(), "node-2").await == 4 && on(c, "node-1").await == 0 }
    })
    .await;
}

/// Deleting a namespace with a running Deployment leaves nothing behind: the namespace
/// is Terminating before its contents go, so controllers recreating pods (and their
/// Events) are refused, and the same name made again starts empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_namespace_leaves_nothing_behind() {
    let (server, _agents, _dirs) = cluster(1).await;
    let c = server.client();
    let ns_rt = lookup("namespaces").unwrap();
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "doomed"}});
    c.create(ns_rt, None, &ns, &[]).await.unwrap();
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "busy", "namespace": "doomed"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "busy"}},
            "template": {"metadata": {"labels": {"app": "busy"}}, "spec": {"runtimeClassName": "wasm", "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "hello", "image": sample("hello-http.wasm"), "ports": [{"containerPort": 8080}]}]}}}});
    c.create(lookup("deployments").unwrap(), Some("doomed"), &d, &[])
        .await
        .unwrap();
    wait_for("3 pods", Duration::from_secs(60), || {
        let c = c.clone();
        async move {
            let pods = c
                .list(
                    lookup("pods").unwrap(),
                    Some("doomed"),
                    false,
                    &Default::default(),
                )
                .await
                .unwrap();
            let running = |p: &&Value| p["status"]["phase"] == "Running";
            pods["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(running)
                .count()
                == 3
        }
    })
    .await;
    c.delete(ns_rt, None, "doomed", &json!({})).await.unwrap();
    // Let the controllers and agent react to what went.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(c.get_opt(ns_rt, None, "doomed").await.unwrap().is_none());
    c.create(ns_rt, None, &ns, &[]).await.unwrap();
    for kind in ["pods", "replicasets", "deployments", "events"] {
        let left = c
            .list(
                lookup(kind).unwrap(),
                Some("doomed"),
                false,
                &Default::default(),
            )
            .await
            .unwrap();
        assert_eq!(
            left["items"].as_array().map_or(0, Vec::len),
            0,
            "{kind}: {left}"
        );
    }
}
