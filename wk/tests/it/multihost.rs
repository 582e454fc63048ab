//! Two hosts for real: two network namespaces joined by a veth pair, a server and an
//! agent in one, an agent in the other, each node with a routable pod range. A pod on
//! one node reaches, by name, a Service whose pod runs on the other; pods reach pods
//! across the hosts; the second node's DNS answers for the Service; a container on the
//! second node gets an address from its range and is reached by name from the first.
//! Needs root, iproute2, runc and busybox-static (`scripts/test.sh` installs them).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::common::{Proc, WK, sample, wait_blocking};
use wk_runtime_oci::archive;
use wk_runtime_oci::store::ImageConfig;

/// Two namespaces and the veth between them, removed on drop.
struct Hosts {
    a: String,
    b: String,
}

impl Hosts {
    fn new() -> Hosts {
        let tag = format!("{:x}", std::process::id() & 0xffff);
        let (a, b) = (format!("wka{tag}"), format!("wkb{tag}"));
        let script = format!(
            "set -e
             ip netns add {a}; ip netns add {b}
             ip link add va{tag} type veth peer name vb{tag}
             ip link set va{tag} netns {a}; ip link set vb{tag} netns {b}
             ip -n {a} addr add 10.201.0.1/24 dev va{tag}; ip -n {b} addr add 10.201.0.2/24 dev vb{tag}
             ip -n {a} link set va{tag} up; ip -n {b} link set vb{tag} up
             ip -n {a} link set lo up; ip -n {b} link set lo up"
        );
        let hosts = Hosts { a, b };
        let out = Command::new("bash").args(["-c", &script]).output().unwrap();
        assert!(
            out.status.success(),
            "setting up network namespaces (needs root and iproute2): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        hosts
    }

    /// `program` in namespace `ns`'s network. Not `ip netns exec`: that also mounts a
    /// fresh /sys, which hides the cgroup mount runc needs.
    fn exec(ns: &str, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{ns}"))
            .arg("--")
            .arg(program);
        c
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// The body `curl` gets from `url` in namespace `ns`, if the request succeeded.
fn curl(ns: &str, url: &str) -> Option<String> {
    let mut c = Hosts::exec(ns, "curl");
    c.args(["-sS", "--max-time", "5", url]);
    let out = c.output().unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run(mut c: Command) -> Output {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn wk(ns: &str, kubeconfig: &Path, args: &[&str]) -> Output {
    let mut c = Hosts::exec(ns, WK);
    c.arg("--kubeconfig").arg(kubeconfig).args(args);
    c.output().unwrap()
}

fn get_json(ns: &str, kubeconfig: &Path, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let out = wk(ns, kubeconfig, &all);
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// How agents join: the server URL, join token, CA file and a data directory root.
struct Join<'a> {
    server: &'a str,
    token: &'a str,
    ca: &'a Path,
    dir: &'a Path,
}

/// `wk apply -f -` of `manifest`, from namespace `ns`.
fn apply(ns: &str, kubeconfig: &Path, manifest: &str) {
    let mut apply = Hosts::exec(ns, WK);
    apply
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = apply.spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), manifest.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn agent(ns: &str, join: &Join, name: &str, ip: &str, range: &str) -> Proc {
    let (dir, server, token, ca) = (join.dir, join.server, join.token, join.ca);
    let mut c = Hosts::exec(ns, WK);
    c.args(["agent", "--server", server, "--token", token, "--ca-file"])
        .arg(ca)
        .args([
            "--name",
            name,
            "--node-ip",
            ip,
            "--pod-cidr",
            range,
            "--dns-listen",
            &format!("{ip}:0"),
            "--data-dir",
        ])
        .arg(dir.join(name))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    Proc(c.spawn().unwrap())
}

#[test]
fn a_pod_reaches_a_service_on_another_host_by_name() {
    let hosts = Hosts::new();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("server");
    let kubeconfig: PathBuf = dir.path().join("config");
    let mut server = Hosts::exec(&hosts.a, WK);
    server
        .args(["server", "--data-dir"])
        .arg(&data)
        .args(["--listen", "10.201.0.1:6443", "--kubeconfig"])
        .arg(&kubeconfig)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    let _server = Proc(server.spawn().unwrap());
    wait_blocking("the server", || {
        kubeconfig.exists()
            && wk(&hosts.a, &kubeconfig, &["get", "nodes"])
                .status
                .success()
    });
    let tokens: Value =
        serde_json::from_slice(&std::fs::read(data.join("tokens.json")).unwrap()).unwrap();
    let token = tokens["node"].as_str().unwrap();
    let ca = data.join("pki/ca.crt");
    let url = "https://10.201.0.1:6443";
    let join = Join {
        server: url,
        token,
        ca: &ca,
        dir: dir.path(),
    };
    let _a = agent(&hosts.a, &join, "node-a", "10.201.0.1", "10.244.1.0/24");
    let _b = agent(&hosts.b, &join, "node-b", "10.201.0.2", "10.244.2.0/24");
    wait_blocking("both nodes", || {
        get_json(&hosts.a, &kubeconfig, &["nodes"])["items"]
            .as_array()
            .is_some_and(|n| n.len() == 2)
    });
    let manifest = format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: backend}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: backend}}}}
  template:
    metadata: {{labels: {{app: backend}}}}
    spec:
      runtimeClassName: wasm
      nodeSelector: {{kubernetes.io/hostname: node-b}}
      containers:
        - name: hello
          image: {image}
          ports: [{{name: http, containerPort: 8080}}]
          env: [{{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: backend}}
spec:
  selector: {{app: backend}}
  ports: [{{name: web, port: 80, targetPort: http}}]
---
apiVersion: v1
kind: Pod
metadata:
  name: caller
  annotations: {{wk.dev/allow-outbound: "true"}}
spec:
  runtimeClassName: wasm
  nodeSelector: {{kubernetes.io/hostname: node-a}}
  containers:
    - name: hello
      image: {image}
      ports: [{{containerPort: 8080}}]
"#,
        image = sample("hello-http.wasm")
    );
    apply(&hosts.a, &kubeconfig, &manifest);

    let running = |pods: &Value, prefix: &str| -> Option<String> {
        pods["items"].as_array()?.iter().find_map(|p| {
            let name = p["metadata"]["name"].as_str()?;
            (name.starts_with(prefix) && p["status"]["phase"] == "Running")
                .then(|| p["status"]["podIP"].as_str().map(String::from))
                .flatten()
        })
    };
    let (mut backend_ip, mut caller_ip) = (String::new(), String::new());
    wait_blocking("both pods running", || {
        let pods = get_json(&hosts.a, &kubeconfig, &["pods"]);
        match (running(&pods, "backend-"), running(&pods, "caller")) {
            (Some(b), Some(c)) => {
                (backend_ip, caller_ip) = (b, c);
                true
            }
            _ => false,
        }
    });
    assert!(
        backend_ip.starts_with("10.244.2."),
        "backend on node-b's range: {backend_ip}"
    );
    assert!(
        caller_ip.starts_with("10.244.1."),
        "caller on node-a's range: {caller_ip}"
    );

    // Pod to pod across the hosts, from host A (once node A has routed node B's range,
    // which it does when it sees node B register).
    let mut body = String::new();
    wait_blocking("a pod on host B to answer from host A", || {
        curl(&hosts.a, &format!("http://{backend_ip}:8080/"))
            .map(|b| body = b)
            .is_some()
    });
    assert!(body.starts_with("hello from backend-"), "{body}");

    // The caller on host A fetches http://backend/ : its node's DNS data gives the VIP,
    // node A's balancer forwards to the pod on host B.
    let fetch = |target: &str| {
        curl(
            &hosts.a,
            &format!("http://{caller_ip}:8080/fetch?url={target}"),
        )
    };
    wait_blocking("the caller to reach the backend by name", || {
        fetch("http://backend/").is_some_and(|b| b.starts_with("hello from backend-"))
    });

    // Node B's DNS answers for the Service too.
    let nodes = get_json(&hosts.a, &kubeconfig, &["nodes"]);
    let dns_b = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["metadata"]["name"] == "node-b")
        .and_then(|n| n["metadata"]["annotations"]["wk.dev/dns"].as_str())
        .unwrap()
        .to_string();
    let (host, port) = dns_b.rsplit_once(':').unwrap();
    let svc = get_json(&hosts.a, &kubeconfig, &["svc", "backend"]);
    let vip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    let mut dig = Hosts::exec(&hosts.b, "dig");
    dig.args([
        &format!("@{host}"),
        "-p",
        port,
        "+short",
        "backend.default.svc.cluster.local",
    ]);
    assert_eq!(String::from_utf8_lossy(&run(dig).stdout).trim(), vip);

    // A container (runc) on host B gets an address from node B's routable range, not a
    // loopback one, and the Wasm caller on host A reaches it by its Service's name.
    let image = "wk.test/busybox:1";
    let layer = archive::busybox_layer(Path::new("/bin/busybox"), &["sh", "echo", "httpd"])
        .expect("a static busybox at /bin/busybox (apt-get install busybox-static)");
    let config = ImageConfig {
        cmd: vec!["sh".into()],
        ..Default::default()
    };
    let tar = dir.path().join("busybox.tar");
    archive::write_oci_archive(&tar, image, &config, &[layer]).unwrap();
    let mut import = Command::new(WK);
    import
        .args(["image", "import"])
        .arg(&tar)
        .arg("--data-dir")
        .arg(dir.path().join("node-b"));
    assert!(run(import).status.success());
    let manifest = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: ctr, labels: {{app: ctr}}}}
spec:
  runtimeClassName: oci
  nodeSelector: {{kubernetes.io/hostname: node-b}}
  terminationGracePeriodSeconds: 1
  containers:
    - name: httpd
      image: {image}
      ports: [{{containerPort: 8080}}]
      command: [sh, -c, "echo hello from a container on $HOSTNAME > /www/index.html; exec httpd -f -p 8080 -h /www"]
---
apiVersion: v1
kind: Service
metadata: {{name: ctr}}
spec:
  selector: {{app: ctr}}
  ports: [{{port: 80, targetPort: 8080}}]
"#
    );
    apply(&hosts.a, &kubeconfig, &manifest);
    let ctr_uid = get_json(&hosts.a, &kubeconfig, &["pod", "ctr"])["metadata"]["uid"]
        .as_str()
        .unwrap()
        .replace('-', "");
    let mut ctr_ip = String::new();
    let start = std::time::Instant::now();
    while ctr_ip.is_empty() {
        let pods = get_json(&hosts.a, &kubeconfig, &["pods"]);
        match running(&pods, "ctr") {
            Some(ip) => ctr_ip = ip,
            None => {
                let described = wk(&hosts.a, &kubeconfig, &["describe", "pod", "ctr"]);
                assert!(
                    start.elapsed() < std::time::Duration::from_secs(60),
                    "the container never ran: {}",
                    String::from_utf8_lossy(&described.stdout)
                );
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        }
    }
    assert!(
        ctr_ip.starts_with("10.244.2."),
        "the container on node-b's range: {ctr_ip}"
    );
    wait_blocking("the caller to reach the container by name", || {
        fetch("http://ctr/").is_some_and(|b| b.starts_with("hello from a container on ctr"))
    });

    // Delete the container before the agents go (they are killed, and a killed agent
    // leaves its containers, mounts and namespaces behind).
    assert!(
        wk(&hosts.a, &kubeconfig, &["delete", "pod", "ctr"])
            .status
            .success()
    );
    wait_blocking("the container pod to be gone", || {
        !wk(&hosts.a, &kubeconfig, &["get", "pod", "ctr"])
            .status
            .success()
    });
    wait_blocking("the container's namespace to be gone", || {
        let mut list = Command::new("ip");
        list.args(["netns", "list"]);
        !String::from_utf8_lossy(&run(list).stdout).contains(&format!("wk-{}", &ctr_uid[..11]))
    });
}
