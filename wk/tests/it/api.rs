//! End-to-end tests of the API server: the real `wk server` process on loopback, driven
//! over HTTPS with the project's client (reqwest + rustls, trusting the cluster CA).

use crate::common;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use wk_api::resource::{ResourceType, by_plural, lookup};
use wk_client::{ClientError, ListParams};

use crate::common::TestServer;

fn rt(name: &str) -> &'static ResourceType {
    lookup(name).unwrap()
}

fn api_err(e: ClientError) -> wk_api::Status {
    match e {
        ClientError::Api(s) => s,
        other => panic!("expected an API error, got {other}"),
    }
}

/// A valid object of every kind wk serves.
fn fixtures() -> Vec<Value> {
    let pod_spec = json!({"runtimeClassName": "wasm", "containers": [{"name": "app", "image": "file:///srv/app.wasm",
        "ports": [{"containerPort": 8080, "name": "http"}], "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}}}]});
    let template = json!({"metadata": {"labels": {"app": "web"}}, "spec": pod_spec});
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}),
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1", "labels": {"zone": "a"}},
               "status": {"capacity": {"cpu": "2", "memory": "4Gi", "pods": "110"}}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-0", "labels": {"app": "web"}}, "spec": pod_spec}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
        json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web"},
               "subsets": [{"addresses": [{"ip": "127.0.0.10"}], "ports": [{"name": "http", "port": 8080}]}]}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a.txt": "hello"}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sec"}, "stringData": {"token": "s3cret"}}),
        json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "web-0.1"},
               "involvedObject": {"kind": "Pod", "name": "web-0", "namespace": "default"},
               "reason": "Scheduled", "message": "assigned", "type": "Normal"}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": template}}),
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web-1"},
               "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": template}}),
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agentd"},
               "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template}}),
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "pi"},
               "spec": {"template": {"spec": {"restartPolicy": "Never", "runtimeClassName": "wasm",
                        "containers": [{"name": "pi", "image": "file:///srv/pi.wasm", "args": ["100"]}]}}}}),
        json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
               "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure",
                        "containers": [{"name": "pi", "image": "file:///srv/pi.wasm"}]}}}}}}),
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "node-1"},
               "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 40}}),
    ]
}

#[tokio::test]
async fn crud_for_every_kind() {
    let server = TestServer::start();
    let c = server.client();
    for obj in fixtures() {
        let r = wk_api::decode::resource_of(&obj).unwrap();
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        let created = c
            .create(r, None, &obj, &[("fieldValidation", "Strict".into())])
            .await
            .unwrap_or_else(|e| panic!("create {}: {e}", r.kind));
        assert_eq!(created["kind"], r.kind);
        assert!(
            created["metadata"]["uid"]
                .as_str()
                .is_some_and(|u| u.len() == 36)
        );
        assert!(created["metadata"]["creationTimestamp"].is_string());
        let rv1: u64 = created["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(rv1 > 0);
        if r.namespaced {
            assert_eq!(created["metadata"]["namespace"], "default");
        }

        let got = c.get(r, None, &name).await.unwrap();
        assert_eq!(got, created, "{}: get returns what create returned", r.kind);

        let list = c
            .list(r, None, false, &ListParams::default())
            .await
            .unwrap();
        assert_eq!(list["kind"], format!("{}List", r.kind));
        assert!(
            list["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["metadata"]["name"] == name.as_str())
        );

        // PUT with the current resourceVersion: a label change.
        let mut upd = got.clone();
        upd["metadata"]["labels"]["touched"] = json!("yes");
        let updated = c
            .replace(r, None, &name, &upd)
            .await
            .unwrap_or_else(|e| panic!("update {}: {e}", r.kind));
        let rv2: u64 = updated["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(rv2 > rv1);
        assert_eq!(updated["metadata"]["labels"]["touched"], "yes");

        // Merge patch.
        let patched = c
            .patch(
                r,
                None,
                &name,
                "application/merge-patch+json",
                &json!({"metadata": {"annotations": {"x": "1"}}}),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(patched["metadata"]["annotations"]["x"], "1");
        assert_eq!(patched["metadata"]["labels"]["touched"], "yes");

        c.delete(r, None, &name, &json!({}))
            .await
            .unwrap_or_else(|e| panic!("delete {}: {e}", r.kind));
        let err = api_err(c.get(r, None, &name).await.unwrap_err());
        assert_eq!(err.code, 404, "{}", r.kind);
        assert_eq!(err.reason, "NotFound");
    }
}

#[tokio::test]
async fn conflicts_and_already_exists() {
    let server = TestServer::start();
    let c = server.client();
    let cm = rt("cm");
    let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "1"}});
    let first = c.create(cm, None, &obj, &[]).await.unwrap();
    let err = api_err(c.create(cm, None, &obj, &[]).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(err.message, "configmaps \"c\" already exists");

    let mut a = first.clone();
    a["data"]["k"] = json!("2");
    c.replace(cm, None, "c", &a).await.unwrap();
    // `first` carries the old resourceVersion now: stale.
    let mut b = first.clone();
    b["data"]["k"] = json!("3");
    let err = api_err(c.replace(cm, None, "c", &b).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(
        err.message.contains("the object has been modified"),
        "{}",
        err.message
    );
    assert_eq!(
        c.get(cm, None, "c").await.unwrap()["data"]["k"],
        "2",
        "the stale write lost nothing"
    );

    // Without a resourceVersion an update is unconditional.
    let mut d = first.clone();
    d["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    d["data"]["k"] = json!("4");
    c.replace(cm, None, "c", &d).await.unwrap();

    // A stale precondition on delete.
    let err = api_err(
        c.delete(
            cm,
            None,
            "c",
            &json!({"preconditions": {"resourceVersion": first["metadata"]["resourceVersion"]}}),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 409);
}

#[tokio::test]
async fn validation_errors_name_the_field() {
    let server = TestServer::start();
    let c = server.client();
    let deploy = rt("deploy");
    let bad = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": -1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "a", "image": "x"}]}}}});
    let err = api_err(c.create(deploy, None, &bad, &[]).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert!(
        err.message
            .contains("spec.replicas: Invalid value: -1: must be greater than or equal to 0"),
        "{}",
        err.message
    );
    let causes = err.details.unwrap().causes;
    assert_eq!(causes[0].field, "spec.replicas");

    let mut mismatch = bad.clone();
    mismatch["spec"]["replicas"] = json!(1);
    mismatch["spec"]["template"]["metadata"]["labels"]["app"] = json!("other");
    let err = api_err(c.create(deploy, None, &mismatch, &[]).await.unwrap_err());
    assert!(
        err.message.contains("spec.template.metadata.labels"),
        "{}",
        err.message
    );

    let bad_name =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Not_A_Name"}});
    let err = api_err(c.create(rt("cm"), None, &bad_name, &[]).await.unwrap_err());
    assert_eq!(err.code, 422);
    assert!(
        err.message
            .contains("metadata.name: Invalid value: \"Not_A_Name\""),
        "{}",
        err.message
    );

    let bad_port = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
        "spec": {"ports": [{"port": 70000}]}});
    let err = api_err(c.create(rt("svc"), None, &bad_port, &[]).await.unwrap_err());
    assert!(
        err.message
            .contains("spec.ports[0].port: Invalid value: 70000"),
        "{}",
        err.message
    );

    let bad_quantity = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "a", "image": "x", "resources": {"limits": {"memory": "lots"}}}]}});
    let err = api_err(
        c.create(rt("po"), None, &bad_quantity, &[])
            .await
            .unwrap_err(),
    );
    assert!(
        err.message
            .contains("spec.containers[0].resources.limits[memory]")
            || err.message.contains("resources.limits"),
        "{}",
        err.message
    );

    // Unknown fields: an error in strict mode, accepted (and dropped) otherwise.
    let unknown = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "u"}, "data": {}, "dataa": {}});
    let err = api_err(
        c.create(
            rt("cm"),
            None,
            &unknown,
            &[("fieldValidation", "Strict".into())],
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 400);
    assert!(
        err.message.contains("unknown field \"dataa\""),
        "{}",
        err.message
    );
    let ok = c.create(rt("cm"), None, &unknown, &[]).await.unwrap();
    assert!(ok.get("dataa").is_none());

    // A type error.
    let wrong = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "w"}, "spec": {"replicas": "three"}});
    let err = api_err(c.create(deploy, None, &wrong, &[]).await.unwrap_err());
    assert_eq!(err.code, 400);
    assert!(err.message.contains("spec.replicas"), "{}", err.message);

    // Nothing invalid was stored.
    let list = c
        .list(deploy, None, false, &ListParams::default())
        .await
        .unwrap();
    assert!(list["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn authentication_is_required() {
    let server = TestServer::start();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(server.ca_path()).unwrap()).unwrap();
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let url = format!("{}/api/v1/namespaces", server.url);
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "Unauthorized");
    let r = http
        .get(&url)
        .bearer_auth("wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(&url)
        .bearer_auth(server.token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let list: Value = r.json().await.unwrap();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"default") && names.contains(&"kube-system"),
        "{names:?}"
    );
    // Health and version are public, as in Kubernetes.
    for path in ["/healthz", "/readyz", "/livez"] {
        let r = http
            .get(format!("{}{path}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.text().await.unwrap(), "ok", "{path}");
    }
    let v: Value = http
        .get(format!("{}/version", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["major"], "1");
}

#[tokio::test]
async fn selectors_paging_and_namespaces() {
    let server = TestServer::start();
    let c = server.client();
    let cm = rt("cm");
    let ns = rt("ns");
    c.create(
        ns,
        None,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}}),
        &[],
    )
    .await
    .unwrap();
    for i in 0..7 {
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("c{i}"), "labels": {"tier": if i % 2 == 0 { "even" } else { "odd" }}}});
        c.create(cm, None, &obj, &[]).await.unwrap();
    }
    c.create(
        cm,
        Some("other"),
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}),
        &[],
    )
    .await
    .unwrap();
    let names = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let p = ListParams {
        label_selector: Some("tier in (even)".into()),
        ..Default::default()
    };
    assert_eq!(
        names(&c.list(cm, None, false, &p).await.unwrap()),
        ["c0", "c2", "c4", "c6"]
    );
    let p = ListParams {
        label_selector: Some("tier!=even".into()),
        ..Default::default()
    };
    assert_eq!(
        names(&c.list(cm, None, false, &p).await.unwrap()),
        ["c1", "c3", "c5"]
    );
    let p = ListParams {
        field_selector: Some("metadata.name=c3".into()),
        ..Default::default()
    };
    assert_eq!(names(&c.list(cm, None, false, &p).await.unwrap()), ["c3"]);
    let all = c
        .list(cm, None, true, &ListParams::default())
        .await
        .unwrap();
    assert_eq!(names(&all).len(), 8);
    // Paging with limit/continue visits everything once.
    let mut seen = Vec::new();
    let mut p = ListParams {
        limit: Some(3),
        ..Default::default()
    };
    loop {
        let page = c.list(cm, None, false, &p).await.unwrap();
        let n = names(&page);
        assert!(n.len() <= 3);
        seen.extend(n);
        match page["metadata"]["continue"].as_str() {
            Some(t) => p.continue_token = Some(t.into()),
            None => break,
        }
    }
    assert_eq!(seen, ["c0", "c1", "c2", "c3", "c4", "c5", "c6"]);
    // A bad selector is a 400.
    let p = ListParams {
        label_selector: Some("a in (".into()),
        ..Default::default()
    };
    assert_eq!(
        api_err(c.list(cm, None, false, &p).await.unwrap_err()).code,
        400
    );
    // Creating in a missing namespace is refused.
    let err = api_err(
        c.create(
            cm,
            Some("nope"),
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "y"}}),
            &[],
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 404);
    assert_eq!(err.message, "namespaces \"nope\" not found");
    // Deleting a namespace removes what is in it.
    c.delete(ns, None, "other", &json!({})).await.unwrap();
    assert!(c.get_opt(ns, None, "other").await.unwrap().is_none());
    assert!(c.get_opt(cm, Some("other"), "x").await.unwrap().is_none());
}

#[tokio::test]
async fn watch_streams_resumes_and_expires() {
    let server = TestServer::start_with(&["--watch-history", "20"]);
    let c = server.client();
    let cm = rt("cm");
    let created = c
        .create(
            cm,
            None,
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "w0"}}),
            &[],
        )
        .await
        .unwrap();
    let rv0 = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();

    // Watch from rv0, then make changes.
    let p = ListParams {
        resource_version: Some(rv0.clone()),
        ..Default::default()
    };
    let mut events = Box::pin(c.watch(cm, None, false, &p, false).await.unwrap());
    c.create(
        cm,
        None,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "w1"}}),
        &[],
    )
    .await
    .unwrap();
    c.patch(
        cm,
        None,
        "w1",
        "application/merge-patch+json",
        &json!({"data": {"a": "b"}}),
        &[],
    )
    .await
    .unwrap();
    c.delete(cm, None, "w0", &json!({})).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        let ev = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("event in time")
            .unwrap()
            .unwrap();
        got.push((
            ev.kind.clone(),
            ev.object["metadata"]["name"].as_str().unwrap().to_string(),
        ));
    }
    assert_eq!(
        got,
        [
            ("ADDED".into(), "w1".into()),
            ("MODIFIED".into(), "w1".into()),
            ("DELETED".into(), "w0".into())
        ]
    );

    // Resuming from rv0 replays the same three events from history.
    let mut again = Box::pin(c.watch(cm, None, false, &p, false).await.unwrap());
    let mut replay = Vec::new();
    while replay.len() < 3 {
        let ev = tokio::time::timeout(Duration::from_secs(10), again.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        replay.push(ev.kind);
    }
    assert_eq!(replay, ["ADDED", "MODIFIED", "DELETED"]);

    // With a field selector from rv0, the deletion of w0 (which existed before the
    // watch's start) still arrives: kubectl's `delete --wait` depends on it.
    let by_name = ListParams {
        resource_version: Some(rv0.clone()),
        field_selector: Some("metadata.name=w0".into()),
        ..Default::default()
    };
    let mut named = Box::pin(c.watch(cm, None, false, &by_name, false).await.unwrap());
    let ev = tokio::time::timeout(Duration::from_secs(10), named.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (ev.kind.as_str(), &ev.object["metadata"]["name"]),
        ("DELETED", &json!("w0"))
    );

    // Push rv0 out of the 20-event window: resuming from it is 410 Expired.
    for i in 0..30 {
        c.create(cm, None, &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("f{i}")}}), &[]).await.unwrap();
    }
    let mut expired = Box::pin(c.watch(cm, None, false, &p, false).await.unwrap());
    let ev = tokio::time::timeout(Duration::from_secs(10), expired.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ev.kind, "ERROR");
    assert_eq!(ev.object["code"], 410);
    assert_eq!(ev.object["reason"], "Expired");

    // A watch without a version starts with the current state as ADDED events; a label
    // selector narrows it.
    let p = ListParams {
        label_selector: Some("pick=me".into()),
        ..Default::default()
    };
    let mut sel = Box::pin(c.watch(cm, None, false, &p, false).await.unwrap());
    c.patch(
        cm,
        None,
        "f3",
        "application/merge-patch+json",
        &json!({"metadata": {"labels": {"pick": "me"}}}),
        &[],
    )
    .await
    .unwrap();
    c.patch(
        cm,
        None,
        "f3",
        "application/merge-patch+json",
        &json!({"metadata": {"labels": {"pick": "no"}}}),
        &[],
    )
    .await
    .unwrap();
    let a = tokio::time::timeout(Duration::from_secs(10), sel.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let b = tokio::time::timeout(Duration::from_secs(10), sel.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (a.kind.as_str(), b.kind.as_str()),
        ("ADDED", "DELETED"),
        "entering and leaving the selector"
    );
}

#[tokio::test]
async fn watch_initial_events_end_with_a_bookmark() {
    let server = TestServer::start();
    let c = server.client();
    let cm = rt("cm");
    for i in 0..3 {
        c.create(cm, None, &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("b{i}")}}), &[]).await.unwrap();
    }
    // The watch-list protocol: sendInitialEvents + bookmarks.
    let q = vec![
        ("watch", "true".to_string()),
        ("sendInitialEvents", "true".to_string()),
        ("resourceVersionMatch", "NotOlderThan".to_string()),
        ("allowWatchBookmarks", "true".to_string()),
    ];
    let resp = c
        .request(
            reqwest::Method::GET,
            &cm.collection_path(Some("default")),
            &q,
            None,
            None,
        )
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    while text.matches('\n').count() < 4 {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ADDED", "ADDED", "ADDED", "BOOKMARK"]);
    assert_eq!(
        events[3]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    let rv: u64 = events[3]["object"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv >= 3);
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let mut server = TestServer::start();
    let c = server.client();
    let cm = rt("cm");
    // 64 concurrent writers; every create that returned 201 must survive.
    let mut tasks = Vec::new();
    for w in 0..64 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = Vec::new();
            for i in 0..10 {
                let name = format!("w{w}-{i}");
                let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"i": i.to_string()}});
                if c.create(cm, None, &obj, &[]).await.is_ok() {
                    ok.push(name);
                }
            }
            ok
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert_eq!(acked.len(), 640);
    let before = c
        .list(cm, None, false, &ListParams::default())
        .await
        .unwrap();
    let rv_before: u64 = before["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    server.restart(); // SIGKILL, then start on the same data dir
    let c = server.client();
    let after = c
        .list(cm, None, false, &ListParams::default())
        .await
        .unwrap();
    let names: std::collections::HashSet<String> = after["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    for n in &acked {
        assert!(names.contains(n), "acknowledged {n} lost");
    }
    let rv_after: u64 = after["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv_after >= rv_before);
    // And the server keeps working after the restart.
    c.create(
        cm,
        None,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "after"}}),
        &[],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn snapshots_compact_the_log_and_restore() {
    let mut server = TestServer::start_with(&["--snapshot-every", "100"]);
    let c = server.client();
    let cm = rt("cm");
    for i in 0..350 {
        c.create(cm, None, &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("s{i}")}}), &[]).await.unwrap();
    }
    let snap = server.data_dir().join("snapshot.bin");
    common::wait_for("a snapshot", Duration::from_secs(20), || {
        let snap = snap.clone();
        async move { snap.exists() }
    })
    .await;
    // The log was purged up to a snapshot: it does not grow forever.
    let tokens: Value =
        serde_json::from_slice(&std::fs::read(server.data_dir().join("tokens.json")).unwrap())
            .unwrap();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(server.ca_path()).unwrap()).unwrap();
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let metrics = || async {
        http.get(format!("{}/raft/metrics", server.url))
            .bearer_auth(tokens["peer"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    common::wait_for("the log to be purged", Duration::from_secs(20), || async {
        metrics().await["purged"]["index"].as_u64().unwrap_or(0) >= 100
    })
    .await;
    let m = metrics().await;
    let last_log = m["last_log_index"].as_u64().unwrap();
    let purged = m["purged"]["index"].as_u64().unwrap();
    assert!(
        last_log - purged <= 200,
        "at most a snapshot interval and the kept tail remain: {m}"
    );
    assert!(m["snapshot"]["index"].as_u64().unwrap() >= purged, "{m}");
    let unauth = http
        .get(format!("{}/raft/metrics", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(unauth.status(), 401);
    server.restart();
    let c = server.client();
    let list = c
        .list(cm, None, false, &ListParams::default())
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 350);
}

#[tokio::test]
async fn finalizers_graceful_pods_binding_and_scale() {
    let server = TestServer::start();
    let c = server.client();
    let cm = rt("cm");
    c.create(cm, None, &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "f", "finalizers": ["wk.dev/hold"]}}), &[])
        .await
        .unwrap();
    c.delete(cm, None, "f", &json!({})).await.unwrap();
    let held = c.get(cm, None, "f").await.unwrap();
    assert!(
        held["metadata"]["deletionTimestamp"].is_string(),
        "a finalizer holds the object"
    );
    c.patch(
        cm,
        None,
        "f",
        "application/merge-patch+json",
        &json!({"metadata": {"finalizers": null}}),
        &[],
    )
    .await
    .unwrap();
    assert!(
        c.get_opt(cm, None, "f").await.unwrap().is_none(),
        "gone once the last finalizer is removed"
    );

    // Binding assigns a node once; a bound pod is deleted gracefully.
    let po = rt("po");
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "x.wasm"}]}});
    let created = c.create(po, None, &pod, &[]).await.unwrap();
    assert_eq!(created["status"]["phase"], "Pending");
    let bind = |node: &str| json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": node}});
    let path = format!("{}/binding", po.object_path(Some("default"), "p"));
    let body = serde_json::to_vec(&bind("n1")).unwrap();
    c.request(
        reqwest::Method::POST,
        &path,
        &[],
        Some(("application/json", body)),
        None,
    )
    .await
    .unwrap();
    let bound = c.get(po, None, "p").await.unwrap();
    assert_eq!(bound["spec"]["nodeName"], "n1");
    let body = serde_json::to_vec(&bind("n2")).unwrap();
    let err = api_err(
        c.request(
            reqwest::Method::POST,
            &path,
            &[],
            Some(("application/json", body)),
            None,
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 409);
    // Changing nodeName by update is forbidden.
    let mut moved = bound.clone();
    moved["spec"]["nodeName"] = json!("n2");
    assert_eq!(
        api_err(c.replace(po, None, "p", &moved).await.unwrap_err()).code,
        422
    );
    c.delete(po, None, "p", &json!({"gracePeriodSeconds": 30}))
        .await
        .unwrap();
    let terminating = c.get(po, None, "p").await.unwrap();
    assert_eq!(terminating["metadata"]["deletionGracePeriodSeconds"], 30);
    // Updates while it terminates (a label, its node's status reports) keep it: only
    // its node ends a graceful deletion.
    c.patch(
        po,
        None,
        "p",
        "application/merge-patch+json",
        &json!({"metadata": {"labels": {"seen": "yes"}}}),
        &[],
    )
    .await
    .unwrap();
    let labelled = c.get(po, None, "p").await.unwrap();
    assert_eq!(labelled["metadata"]["labels"]["seen"], "yes");
    assert!(labelled["metadata"]["deletionTimestamp"].is_string());
    c.delete(po, None, "p", &json!({"gracePeriodSeconds": 0}))
        .await
        .unwrap();
    assert!(
        c.get_opt(po, None, "p").await.unwrap().is_none(),
        "grace 0 deletes at once"
    );

    // Scale subresource and generation.
    let d = rt("deploy");
    let dep = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "a", "image": "x"}]}}}});
    let created = c.create(d, None, &dep, &[]).await.unwrap();
    assert_eq!(created["metadata"]["generation"], 1);
    let scale_path = format!("{}/scale", d.object_path(Some("default"), "web"));
    let body = serde_json::to_vec(&json!({"spec": {"replicas": 5}})).unwrap();
    let scale: Value = c
        .request(
            reqwest::Method::PATCH,
            &scale_path,
            &[],
            Some(("application/merge-patch+json", body)),
            None,
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 5);
    assert_eq!(scale["status"]["selector"], "app=web");
    let after = c.get(d, None, "web").await.unwrap();
    assert_eq!(after["spec"]["replicas"], 5);
    assert_eq!(
        after["metadata"]["generation"], 2,
        "a spec change bumps generation"
    );
    // Status updates go through /status only.
    let mut with_status = after.clone();
    with_status["status"] = json!({"replicas": 5, "observedGeneration": 2});
    let ignored = c.replace(d, None, "web", &with_status).await.unwrap();
    assert!(ignored.get("status").is_none() || ignored["status"].get("replicas").is_none());
    let status_path = format!("{}/status", d.object_path(Some("default"), "web"));
    let body =
        serde_json::to_vec(&json!({"status": {"replicas": 5, "observedGeneration": 2}})).unwrap();
    c.request(
        reqwest::Method::PATCH,
        &status_path,
        &[],
        Some(("application/merge-patch+json", body)),
        None,
    )
    .await
    .unwrap();
    let s = c.get(d, None, "web").await.unwrap();
    assert_eq!(s["status"]["replicas"], 5);
    assert_eq!(
        s["metadata"]["generation"], 2,
        "status changes do not bump generation"
    );

    // Strategic merge patch merges containers by name.
    let smp =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "y"}]}}}});
    let out = c
        .patch(
            d,
            None,
            "web",
            "application/strategic-merge-patch+json",
            &smp,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"][0]["image"],
        "y"
    );
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"],
        "/dev/termination-log"
    );
}

#[tokio::test]
async fn discovery_and_tables() {
    let server = TestServer::start();
    let c = server.client();
    let body = |r: reqwest::Response| async move { r.json::<Value>().await.unwrap() };
    let api = body(
        c.request(reqwest::Method::GET, "/api", &[], None, None)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(api["versions"], json!(["v1"]));
    let groups = body(
        c.request(reqwest::Method::GET, "/apis", &[], None, None)
            .await
            .unwrap(),
    )
    .await;
    let names: Vec<&str> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["apps", "batch", "coordination.k8s.io"]);
    let core = body(
        c.request(reqwest::Method::GET, "/api/v1", &[], None, None)
            .await
            .unwrap(),
    )
    .await;
    let pods = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "pods")
        .unwrap();
    assert_eq!(pods["shortNames"], json!(["po"]));
    assert!(pods["verbs"].as_array().unwrap().contains(&json!("watch")));
    let apps = body(
        c.request(reqwest::Method::GET, "/apis/apps/v1", &[], None, None)
            .await
            .unwrap(),
    )
    .await;
    let scale = apps["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "deployments/scale")
        .unwrap();
    assert_eq!(scale["group"], "autoscaling");
    assert_eq!(
        c.request(reqwest::Method::GET, "/apis/nope/v1", &[], None, None)
            .await
            .unwrap_err()
            .code(),
        Some(404)
    );

    let t = c
        .table(
            by_plural("", "namespaces").unwrap(),
            None,
            false,
            None,
            &ListParams::default(),
        )
        .await
        .unwrap();
    assert_eq!(t["kind"], "Table");
    let cols: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, ["Name", "Status", "Age"]);
    let row = t["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["cells"][0] == "default")
        .unwrap();
    assert_eq!(row["cells"][1], "Active");
    assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
}

/// Services get a cluster IP from the service range and node ports from 30000–32767,
/// each at most once; deleting a Service frees what it held.
#[tokio::test]
async fn service_addresses_are_allocated_once() {
    let server = TestServer::start_with(&["--service-cidr", "127.241.0.0/29"]);
    let c = server.client();
    let svc = rt("svc");
    let make = |name: &str, spec: Value| {
        let mut s = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80}]}});
        if let Some(m) = spec.as_object() {
            for (k, v) in m {
                s["spec"][k] = v.clone();
            }
        }
        s
    };
    // A /29 has six usable addresses.
    let mut ips = std::collections::BTreeSet::new();
    for i in 0..6 {
        let s = c
            .create(svc, None, &make(&format!("s{i}"), json!({})), &[])
            .await
            .unwrap();
        let ip: std::net::Ipv4Addr = s["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
        assert_eq!(s["spec"]["clusterIPs"], json!([ip.to_string()]));
        assert!(
            ip.octets()[..3] == [127, 241, 0] && (1..=6).contains(&ip.octets()[3]),
            "{ip}"
        );
        ips.insert(ip);
    }
    assert_eq!(ips.len(), 6, "all distinct");
    let full = c
        .create(svc, None, &make("s6", json!({})), &[])
        .await
        .unwrap_err();
    assert!(full.to_string().contains("range is full"), "{full}");
    // Deleting one frees its address for the next.
    let freed = c.get(svc, None, "s2").await.unwrap()["spec"]["clusterIP"].clone();
    c.delete(svc, None, "s2", &json!({})).await.unwrap();
    let s = c
        .create(svc, None, &make("s6", json!({})), &[])
        .await
        .unwrap();
    assert_eq!(s["spec"]["clusterIP"], freed);
    // A requested address must be free and in range.
    c.delete(svc, None, "s6", &json!({})).await.unwrap();
    let taken = c.get(svc, None, "s0").await.unwrap()["spec"]["clusterIP"].clone();
    let e = c
        .create(svc, None, &make("dup", json!({"clusterIP": taken})), &[])
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("spec.clusterIP")
            && e.to_string().contains("provided IP is already allocated"),
        "{e}"
    );
    assert_eq!(e.code(), Some(422));
    let e = c
        .create(
            svc,
            None,
            &make("out", json!({"clusterIP": "10.0.0.1"})),
            &[],
        )
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains(
            "provided IP is not in the valid range. The range of valid IPs is 127.241.0.0/29"
        ),
        "{e}"
    );
    let own = c
        .create(svc, None, &make("own", json!({"clusterIP": freed})), &[])
        .await
        .unwrap();
    assert_eq!(own["spec"]["clusterIP"], freed);
    // Headless services get none; a failed create holds nothing.
    let h = c
        .create(
            svc,
            None,
            &make("headless", json!({"clusterIP": "None"})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(h["spec"]["clusterIPs"], json!(["None"]));
    // NodePort: allocated in range, or as requested once.
    let np = c
        .create(
            svc,
            None,
            &make("np", json!({"type": "NodePort", "clusterIP": "None"})),
            &[],
        )
        .await;
    assert!(np.is_err(), "NodePort cannot be headless");
    c.delete(svc, None, "s5", &json!({})).await.unwrap();
    let np = c
        .create(svc, None, &make("np", json!({"type": "NodePort"})), &[])
        .await
        .unwrap();
    let port = np["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert!((30000..=32767).contains(&port), "{np}");
    c.delete(svc, None, "s4", &json!({})).await.unwrap();
    let e = c
        .create(
            svc,
            None,
            &make(
                "np2",
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": port}]}),
            ),
            &[],
        )
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("provided port is already allocated"),
        "{e}"
    );
    // The failed np2 released the IP it had taken: s4's address is free again.
    let again = c
        .create(svc, None, &make("s4b", json!({})), &[])
        .await
        .unwrap();
    assert!(again["spec"]["clusterIP"].is_string());
    // A replace without the addresses keeps them.
    let mut cur = c.get(svc, None, "np").await.unwrap();
    cur["spec"].as_object_mut().unwrap().remove("clusterIP");
    cur["spec"].as_object_mut().unwrap().remove("clusterIPs");
    cur["spec"]["ports"][0]
        .as_object_mut()
        .unwrap()
        .remove("nodePort");
    let replaced = c.replace(svc, None, "np", &cur).await.unwrap();
    assert_eq!(replaced["spec"]["clusterIP"], np["spec"]["clusterIP"]);
    assert_eq!(replaced["spec"]["ports"][0]["nodePort"], port);

    // Updates: a node port another Service holds is refused; moving to a free one
    // frees the old; leaving NodePort frees them all. (Room in the /29 first.)
    for name in ["s0", "s1", "s3"] {
        c.delete(svc, None, name, &json!({})).await.unwrap();
    }
    let other = c
        .create(
            svc,
            None,
            &make("np3", json!({"type": "NodePort", "ports": [{"port": 80}]})),
            &[],
        )
        .await
        .unwrap();
    let other_port = other["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    let moved = |to: i64| json!({"spec": {"ports": [{"port": 80, "nodePort": to}]}});
    let merge = "application/merge-patch+json";
    let e = api_err(
        c.patch(svc, None, "np3", merge, &moved(port), &[])
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422, "{e:?}");
    assert!(e.message.contains("already allocated"), "{}", e.message);
    let free = if other_port == 31999 { 31998 } else { 31999 };
    c.patch(svc, None, "np3", merge, &moved(free), &[])
        .await
        .unwrap();
    // Its old port is free again: a new Service may name it.
    c.create(
        svc,
        None,
        &make(
            "np4",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": other_port}]}),
        ),
        &[],
    )
    .await
    .unwrap();
    let plain = c
        .patch(
            svc,
            None,
            "np3",
            merge,
            &json!({"spec": {"type": "ClusterIP"}}),
            &[],
        )
        .await
        .unwrap();
    assert!(plain["spec"]["ports"][0]["nodePort"].is_null(), "{plain}");
    c.create(
        svc,
        None,
        &make(
            "np5",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": free}]}),
        ),
        &[],
    )
    .await
    .unwrap();
    // An ExternalName Service keeps no node port (it is dropped, as on an update to
    // ClusterIP); once it is NodePort, the port it names is its own, and it gets a
    // cluster IP. (Room in the /29 first.)
    for name in ["np4", "np5"] {
        c.delete(svc, None, name, &json!({})).await.unwrap();
    }
    let named = [31997, 31996, 31995]
        .into_iter()
        .find(|p| ![port, other_port].contains(p))
        .unwrap();
    let ports = json!([{"port": 80, "nodePort": named}]);
    let alias = c
        .create(
            svc,
            None,
            &make(
                "alias",
                json!({"type": "ExternalName", "externalName": "example.com", "ports": ports}),
            ),
            &[],
        )
        .await
        .unwrap();
    assert!(alias["spec"]["ports"][0]["nodePort"].is_null(), "{alias}");
    let alias = c
        .patch(
            svc,
            None,
            "alias",
            merge,
            &json!({"spec": {"type": "NodePort", "externalName": null, "ports": ports}}),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(alias["spec"]["ports"][0]["nodePort"], named, "{alias}");
    let ip = alias["spec"]["clusterIP"].as_str().unwrap_or_default();
    assert!(ip.starts_with("127.241.0."), "{alias}");
    assert_eq!(alias["spec"]["clusterIPs"], json!([ip]));
    let e = api_err(
        c.create(
            svc,
            None,
            &make("np6", json!({"type": "NodePort", "ports": ports})),
            &[],
        )
        .await
        .unwrap_err(),
    );
    assert!(e.message.contains("already allocated"), "{}", e.message);
    // An alias turned ClusterIP naming an address another Service holds is refused.
    c.create(
        svc,
        None,
        &make(
            "alias2",
            json!({"type": "ExternalName", "externalName": "example.com"}),
        ),
        &[],
    )
    .await
    .unwrap();
    let e = api_err(
        c.patch(
            svc,
            None,
            "alias2",
            merge,
            &json!({"spec": {"type": "ClusterIP", "clusterIP": ip, "externalName": null}}),
            &[],
        )
        .await
        .unwrap_err(),
    );
    assert!(e.message.contains("already allocated"), "{}", e.message);
}

/// A server-side dry-run delete deletes nothing (kubectl puts `dryRun` in the body), a
/// namespace's dry-run delete leaves its contents, and a generateName cut inside a
/// character is a validation error, not a dropped connection.
#[tokio::test]
async fn dry_run_deletes_nothing_and_long_generated_names_are_refused() {
    let server = TestServer::start();
    let c = server.client();
    let (cm, ns) = (rt("cm"), rt("ns"));
    c.create(
        ns,
        None,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "keep"}}),
        &[],
    )
    .await
    .unwrap();
    c.create(
        cm,
        Some("keep"),
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}),
        &[],
    )
    .await
    .unwrap();
    let out = server.kubectl(&["delete", "cm", "x", "-n", "keep", "--dry-run=server"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = server.kubectl(&["delete", "ns", "keep", "--dry-run=server"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        c.get_opt(cm, Some("keep"), "x").await.unwrap().is_some(),
        "the dry run deleted"
    );
    let kept = c.get(ns, None, "keep").await.unwrap();
    assert!(kept["metadata"]["deletionTimestamp"].is_null(), "{kept}");
    let err = api_err(
        c.delete(cm, Some("keep"), "x", &json!({"dryRun": ["Sometimes"]}))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 400, "{err:?}");
    assert!(err.message.contains("dryRun"), "{}", err.message);

    let long = format!("a{}", "é".repeat(29));
    let err = api_err(
        c.create(
            cm,
            None,
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": long}}),
            &[],
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 422, "{err:?}");
    // The server is still there.
    c.get(ns, None, "keep").await.unwrap();
}

/// A watch with a label selector, resumed from a list's resourceVersion (what informers
/// and `kubectl get -w -l` do): an object already listed that changes is MODIFIED, one
/// relabelled out of the selection is DELETED, and one relabelled into it is ADDED.
#[tokio::test]
async fn selector_watches_see_objects_leave_and_join() {
    let server = TestServer::start();
    let c = server.client();
    let cm = rt("cm");
    let obj = |name: &str, app: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"app": app}}});
    c.create(cm, None, &obj("a", "web"), &[]).await.unwrap();
    c.create(cm, None, &obj("b", "db"), &[]).await.unwrap();
    let list = c
        .list(
            cm,
            None,
            false,
            &ListParams {
                label_selector: Some("app=web".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let p = ListParams {
        label_selector: Some("app=web".into()),
        resource_version: list["metadata"]["resourceVersion"]
            .as_str()
            .map(String::from),
        ..Default::default()
    };
    let mut events = Box::pin(c.watch(cm, None, false, &p, false).await.unwrap());
    let relabel = |name: &'static str, app: &'static str| {
        let c = c.clone();
        async move {
            c.patch(
                cm,
                None,
                name,
                "application/merge-patch+json",
                &json!({"metadata": {"labels": {"app": app}}}),
                &[],
            )
            .await
            .unwrap();
        }
    };
    c.patch(
        cm,
        None,
        "a",
        "application/merge-patch+json",
        &json!({"data": {"k": "v"}}),
        &[],
    )
    .await
    .unwrap();
    relabel("a", "db").await;
    relabel("b", "web").await;
    let mut got = Vec::new();
    while got.len() < 3 {
        let ev = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("event in time")
            .unwrap()
            .unwrap();
        got.push(format!(
            "{} {}",
            ev.kind,
            ev.object["metadata"]["name"].as_str().unwrap()
        ));
    }
    assert_eq!(got, ["MODIFIED a", "DELETED a", "ADDED b"]);
}

/// kubectl's generators send protobuf bodies (and never fall back to JSON): each one
/// creates what it says, zero-valued pointer fields included (`--replicas=0`). (What the
/// decoder refuses is unit-tested in `apiserver::protobuf`.)
#[tokio::test]
async fn kubectl_create_generators_speak_protobuf() {
    let server = TestServer::start_cluster();
    let c = server.client();
    let ok = |args: &[&str]| {
        let out = server.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(&["create", "namespace", "tools"]);
    ok(&[
        "create",
        "deployment",
        "web",
        "-n",
        "tools",
        "--image=busybox",
        "--port=80",
        "--replicas=0",
    ]);
    ok(&[
        "create",
        "configmap",
        "conf",
        "-n",
        "tools",
        "--from-literal=a=b",
        "--from-literal=empty=",
    ]);
    ok(&[
        "create",
        "secret",
        "generic",
        "pw",
        "-n",
        "tools",
        "--from-literal=k=v",
    ]);
    ok(&[
        "create",
        "service",
        "nodeport",
        "web",
        "-n",
        "tools",
        "--tcp=81:http",
    ]);
    ok(&[
        "create",
        "cronjob",
        "tick",
        "-n",
        "tools",
        "--image=busybox",
        "--schedule=*/5 * * * *",
        "--",
        "echo",
        "hi",
    ]);
    ok(&[
        "create",
        "job",
        "once",
        "-n",
        "tools",
        "--from=cronjob/tick",
    ]);
    ok(&["create", "serviceaccount", "builder", "-n", "tools"]);

    let get = |plural: &'static str, name: &'static str| {
        let c = c.clone();
        async move {
            c.get(lookup(plural).unwrap(), Some("tools"), name)
                .await
                .unwrap()
        }
    };
    let d = get("deployments", "web").await;
    assert_eq!(d["spec"]["replicas"], 0, "{d}");
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "web");
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "busybox");
    assert_eq!(container["ports"][0]["containerPort"], 80);
    let cm = get("configmaps", "conf").await;
    assert_eq!(cm["data"], json!({"a": "b", "empty": ""}));
    let secret = get("secrets", "pw").await;
    assert_eq!(secret["data"], json!({"k": "dg=="}));
    let svc = get("services", "web").await;
    assert_eq!(svc["spec"]["type"], "NodePort");
    assert_eq!(svc["spec"]["ports"][0]["port"], 81);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "http");
    assert!(svc["spec"]["ports"][0]["nodePort"].is_i64(), "{svc}");
    let job = get("jobs", "once").await;
    assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["command"],
        json!(["echo", "hi"])
    );
    // ServiceAccounts are stored; every namespace gets its `default` one.
    common::wait_for(
        "the default service account",
        Duration::from_secs(10),
        || async {
            let out = server.kubectl(&["get", "sa", "-n", "tools", "-o", "name"]);
            String::from_utf8_lossy(&out.stdout)
                == "serviceaccount/builder\nserviceaccount/default\n"
        },
    )
    .await;
}

/// `kubectl auth can-i` and `whoami` (whose bodies kubectl sends as protobuf): the admin
/// may do anything; another credential is told no, with the reason.
#[tokio::test]
async fn kubectl_auth_can_i_and_whoami() {
    let server = TestServer::start();
    let out = server.kubectl(&["auth", "can-i", "delete", "nodes"]);
    assert_eq!(common::stdout(&out), "yes\n", "{}", common::stderr(&out));
    let out = server.kubectl(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(common::stdout(&out), "wk-admin", "{}", common::stderr(&out));
    let out = server.kubectl(&["auth", "can-i", "--list"]);
    assert!(
        common::stdout(&out).contains("*.*"),
        "{}",
        common::stdout(&out)
    );

    let mut config = server.client().config.clone();
    config.token = Some(common::node_token(&server));
    let join = wk_client::Client::new(config).unwrap();
    let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}}});
    let resp = join
        .request(
            wk_client::Method::POST,
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            &[],
            Some(("application/json", review.to_string().into_bytes())),
            None,
        )
        .await
        .unwrap();
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["status"]["allowed"], false, "{answer}");
    assert!(answer["status"]["reason"].is_string(), "{answer}");
}
