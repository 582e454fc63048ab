//! The Wasm runtime with real wasmtime and the project's real sample components
//! (built by scripts/build-samples.sh) plus tiny WAT fixtures.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use wk_api::runtime::{
    ContainerConfig, ContainerState, Limits, LogConfig, Mount, PodIdentity, PortBinding, Runtime,
    RuntimeError,
};
use wk_runtime_wasm::{WasmRuntime, WasmRuntimeConfig};

fn sample(name: &str) -> String {
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

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

fn runtime(dir: &std::path::Path) -> WasmRuntime {
    WasmRuntime::new(WasmRuntimeConfig::new(dir.join("cache"))).unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(dir: &std::path::Path, id: &str, image: String) -> ContainerConfig {
    ContainerConfig {
        id: id.into(),
        pod: PodIdentity {
            name: format!("{id}-pod"),
            namespace: "default".into(),
            ..Default::default()
        },
        name: id.into(),
        image,
        command: vec![],
        args: vec![],
        env: vec![],
        working_dir: None,
        mounts: vec![],
        ports: vec![],
        limits: Limits::default(),
        allow_outbound: false,
        log: LogConfig {
            path: dir.join(format!("{id}.log")),
            max_bytes: 1 << 20,
        },
        security: Default::default(),
    }
}

fn log_lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            l.split_once(' ')
                .map(|(_, rest)| rest.to_string())
                .unwrap_or_default()
        })
        .collect()
}

fn terminated(s: &ContainerState) -> (i32, String, String) {
    match s {
        ContainerState::Terminated {
            exit_code,
            reason,
            message,
            ..
        } => (*exit_code, reason.clone(), message.clone()),
        other => panic!("not terminated: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_sample_computes_pi_and_reports_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let mut ok = config(dir.path(), "pi-ok", sample("pi.wasm"));
    ok.args = vec!["30".into()];
    rt.start(ok.clone()).await.unwrap();
    let (code, reason, _) = terminated(&rt.wait("pi-ok").await.unwrap());
    assert_eq!((code, reason.as_str()), (0, "Completed"));
    assert_eq!(
        log_lines(&ok.log.path),
        ["stdout 3.14159265358979323846264338327"]
    );

    let mut bad = config(dir.path(), "pi-bad", sample("pi.wasm"));
    bad.args = vec!["lots".into()];
    rt.start(bad.clone()).await.unwrap();
    let (code, reason, _) = terminated(&rt.wait("pi-bad").await.unwrap());
    // WASI 0.2's exit carries success or failure only: every failure is exit code 1.
    assert_eq!((code, reason.as_str()), (1, "Error"));
    assert_eq!(
        log_lines(&bad.log.path),
        ["stderr pi: expected a number of digits between 1 and 10000, got \"lots\""]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_http_serves_env_volume_and_healthz() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let content = dir.path().join("content");
    std::fs::create_dir_all(&content).unwrap();
    std::fs::write(content.join("greeting.txt"), "from the volume\n").unwrap();
    let port = free_port();
    let mut c = config(dir.path(), "hello", sample("hello-http.wasm"));
    c.env = vec![
        ("POD_NAME".into(), "hello-7d9".into()),
        ("GREETING".into(), "hi there".into()),
    ];
    c.mounts = vec![Mount {
        host_path: content,
        container_path: "/content".into(),
        read_only: true,
    }];
    c.ports = vec![PortBinding {
        container_port: 8080,
        host_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        host_port: port,
        protocol: "TCP".into(),
    }];
    rt.start(c).await.unwrap();
    assert!(matches!(
        rt.state("hello").unwrap(),
        ContainerState::Running { .. }
    ));
    let http = reqwest::Client::new();
    let body = http
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        body,
        "hello from hello-7d9\ngreeting: hi there\ncontent: from the volume\n"
    );
    let r = http
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok\n");
    // Many requests, each on a fresh instance, concurrently.
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let http = http.clone();
        tasks.push(tokio::spawn(async move {
            http.get(format!("http://127.0.0.1:{port}/x"))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    // A client that gives up on a slow request leaves nothing in flight: the stop below
    // drains and does not wait out its grace period.
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(b"GET /busy?ms=1500 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Stop drains and reports Completed; the port is released.
    let (code, reason, _) = terminated(&rt.stop("hello", Duration::from_secs(5)).await.unwrap());
    assert_eq!((code, reason.as_str()), (0, "Completed"));
    assert!(
        http.get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .is_err()
    );
    rt.remove("hello").unwrap();
    assert!(matches!(rt.state("hello"), Err(RuntimeError::NotFound(_))));
    // A stop with no grace period left cuts the drain short and still closes the port:
    // the next service binds it at once.
    for name in ["again", "and-again"] {
        let mut c = config(dir.path(), name, sample("hello-http.wasm"));
        c.ports = vec![PortBinding {
            container_port: 8080,
            host_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            host_port: port,
            protocol: "TCP".into(),
        }];
        rt.start(c).await.unwrap();
        let r = http
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        rt.stop(name, Duration::ZERO).await.unwrap();
        assert!(
            http.get(format!("http://127.0.0.1:{port}/"))
                .send()
                .await
                .is_err(),
            "{name} still answers after its stop"
        );
        rt.remove(name).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_stop_misbehaving_components_and_neighbours_keep_answering() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    // A well-behaved neighbour.
    let port = free_port();
    let mut hello = config(dir.path(), "hello", sample("hello-http.wasm"));
    hello.ports = vec![PortBinding {
        container_port: 8080,
        host_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        host_port: port,
        protocol: "TCP".into(),
    }];
    rt.start(hello).await.unwrap();

    // Memory grower with a 16 MiB limit: stopped as OOMKilled.
    let mut grower = config(dir.path(), "grower", fixture("memory-grower.wat"));
    grower.limits.memory_bytes = Some(16 << 20);
    rt.start(grower.clone()).await.unwrap();
    let (code, reason, _) = terminated(&rt.wait("grower").await.unwrap());
    assert_eq!((code, reason.as_str()), (137, "OOMKilled"));
    assert!(
        log_lines(&grower.log.path)
            .iter()
            .any(|l| l.contains("OOMKilled"))
    );

    // A trap is an Error with the trap in the message.
    rt.start(config(dir.path(), "trap", fixture("trap.wat")))
        .await
        .unwrap();
    let (code, reason, message) = terminated(&rt.wait("trap").await.unwrap());
    assert_eq!((code, reason.as_str()), (134, "Error"));
    assert!(message.contains("unreachable"), "{message}");

    // Two busy loops (more than the worker threads) run; the neighbour still answers.
    rt.start(config(dir.path(), "busy1", fixture("busy-loop.wat")))
        .await
        .unwrap();
    rt.start(config(dir.path(), "busy2", fixture("busy-loop.wat")))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let http = reqwest::Client::new();
    for _ in 0..20 {
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            http.get(format!("http://127.0.0.1:{port}/healthz")).send(),
        )
        .await
        .expect("the neighbour answers while busy loops run")
        .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert!(matches!(
        rt.state("busy1").unwrap(),
        ContainerState::Running { .. }
    ));
    rt.stop("hello", Duration::from_secs(1)).await.unwrap();

    // A request past its deadline is cut off with 504 while others are served.
    let port = free_port();
    let mut timed = config(dir.path(), "timed", sample("hello-http.wasm"));
    timed.limits.request_timeout = Some(Duration::from_millis(300));
    timed.ports = vec![PortBinding {
        container_port: 8080,
        host_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        host_port: port,
        protocol: "TCP".into(),
    }];
    rt.start(timed).await.unwrap();
    let started = std::time::Instant::now();
    let r = http
        .get(format!("http://127.0.0.1:{port}/busy?ms=10000"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut off near its deadline, not after 10 s"
    );
    let r = http
        .get(format!("http://127.0.0.1:{port}/busy?ms=10"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    rt.stop("timed", Duration::from_secs(1)).await.unwrap();
    // A busy loop cannot be asked to stop: it is killed after the grace period.
    let (code, _, message) =
        terminated(&rt.stop("busy1", Duration::from_millis(100)).await.unwrap());
    assert_eq!(code, 137);
    assert_eq!(message, "killed after the grace period");
    rt.stop("busy2", Duration::ZERO).await.unwrap();
}

/// `limits.cpu` is a CFS-style quota: a busy loop limited to 100m runs about 10 ms of
/// every 100 ms period and is counted as throttled; an unlimited one is never throttled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_limits_throttle_busy_loops() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let mut limited = config(dir.path(), "limited", fixture("busy-loop.wat"));
    limited.limits.cpu_millis = Some(100);
    rt.start(limited).await.unwrap();
    rt.start(config(dir.path(), "free", fixture("busy-loop.wat")))
        .await
        .unwrap();
    let t0 = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let l = rt.cpu_stats("limited").unwrap();
    let f = rt.cpu_stats("free").unwrap();
    let periods = (t0.elapsed().as_millis() / 100 + 1) as u32;
    assert!(l.nr_throttled >= 5, "the limited loop hit its quota: {l:?}");
    // At most its quota plus one tick of overrun per period.
    assert!(
        l.usage <= Duration::from_millis(20) * periods,
        "{l:?} over {periods} periods"
    );
    assert!(l.usage > Duration::ZERO, "{l:?}");
    assert_eq!(f.nr_throttled, 0, "{f:?}");
    assert!(f.usage > Duration::ZERO, "{f:?}");
    assert!(
        matches!(rt.state("limited").unwrap(), ContainerState::Running { .. }),
        "throttled, not killed"
    );
    rt.stop("limited", Duration::ZERO).await.unwrap();
    rt.stop("free", Duration::ZERO).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_components_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let random = dir.path().join("random.wasm");
    std::fs::write(
        &random,
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, [0u8, 0x61, 0x73, 0x6d, 1, 0, 0, 0]).unwrap();
    let truncated = dir.path().join("truncated.wasm");
    let bytes = std::fs::read(sample("pi.wasm")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let cases = [
        (random.display().to_string(), "not a WebAssembly binary"),
        (
            core.display().to_string(),
            "core WebAssembly module, not a component",
        ),
        (truncated.display().to_string(), "cannot compile"),
        (fixture("wrong-world.wat"), "exports neither wasi:cli/run"),
        (fixture("unknown-import.wat"), "wk:nowhere/thing@1.0.0"),
        ("/nonexistent/app.wasm".to_string(), "No such file"),
        // An OCI reference to a registry that is not there (loopback, closed port).
        (format!("127.0.0.1:{}/app:1", free_port()), "pulling image"),
    ];
    for (image, expected) in cases {
        let err = rt.prepare(&image, &Default::default()).await.unwrap_err();
        assert!(err.to_string().contains(expected), "{image}: {err}");
        // And start fails the same way, without a panic.
        let err = rt
            .start(config(dir.path(), "bad", image.clone()))
            .await
            .unwrap_err();
        assert!(err.to_string().contains(expected), "{image}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_components_are_cached_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let image = sample("hello-http.wasm");
    let first = runtime(dir.path());
    let p = first.prepare(&image, &Default::default()).await.unwrap();
    assert!(p.compiled);
    assert_eq!(first.compilations(), 1);
    assert!(p.digest.starts_with("sha256:"));
    // Same runtime: in-memory hit.
    assert!(
        !first
            .prepare(&image, &Default::default())
            .await
            .unwrap()
            .compiled
    );
    drop(first);
    // A restarted runtime (same cache dir) compiles nothing.
    let second = runtime(dir.path());
    let p2 = second.prepare(&image, &Default::default()).await.unwrap();
    assert!(!p2.compiled);
    assert_eq!(second.compilations(), 0);
    assert_eq!(p2.digest, p.digest);
    // A pinned digest that does not match is refused.
    let wrong = format!("{image}@sha256:{}", "0".repeat(64));
    assert!(matches!(
        second.prepare(&wrong, &Default::default()).await,
        Err(RuntimeError::InvalidImage { .. })
    ));
    let right = format!("{image}@{}", p.digest);
    assert!(second.prepare(&right, &Default::default()).await.is_ok());
}

/// Starts Debian's `docker-registry` on a loopback port with its storage in `dir`.
fn start_registry(dir: &std::path::Path) -> (std::process::Child, u16) {
    let port = free_port();
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("registry-data").display()
        ),
    )
    .unwrap();
    let child = std::process::Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("docker-registry is installed (apt-get install docker-registry)");
    (child, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_wasm_artifacts_from_an_oci_registry() {
    let dir = tempfile::tempdir().unwrap();
    let (mut registry, reg_port) = start_registry(dir.path());
    let registry_addr = format!("127.0.0.1:{reg_port}");
    // Push hello-http as a Wasm OCI artifact (wasm config + wasm layer media types).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pusher = oci_client::Client::new(oci_client::client::ClientConfig {
        protocol: oci_client::client::ClientProtocol::HttpsExcept(vec![registry_addr.clone()]),
        ..Default::default()
    });
    let wasm = std::fs::read(sample("hello-http.wasm")).unwrap();
    let reference: oci_client::Reference = format!("{registry_addr}/samples/hello-http:1.0")
        .parse()
        .unwrap();
    let layer = oci_client::client::ImageLayer::new(
        wasm.clone(),
        oci_client::manifest::WASM_LAYER_MEDIA_TYPE.to_string(),
        None,
    );
    let config = oci_client::client::Config::new(
        b"{}".to_vec(),
        oci_client::manifest::WASM_CONFIG_MEDIA_TYPE.to_string(),
        None,
    );
    let mut pushed = None;
    for _ in 0..100 {
        match pusher
            .push(
                &reference,
                std::slice::from_ref(&layer),
                config.clone(),
                &oci_client::secrets::RegistryAuth::Anonymous,
                None,
            )
            .await
        {
            Ok(r) => {
                pushed = Some(r);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(pushed.is_some(), "push to the local registry");

    let mut cfg = WasmRuntimeConfig::new(dir.path().join("cache"));
    cfg.insecure_registries = vec![registry_addr.clone()];
    let rt = WasmRuntime::new(cfg).unwrap();
    let image = reference.to_string();
    let p = rt.prepare(&image, &Default::default()).await.unwrap();
    assert_eq!(
        p.digest,
        wk_runtime_wasm::image::digest(&wasm),
        "the layer's bytes"
    );
    // The artifact landed in the node's image store (shared with the container runtime),
    // as a Wasm image; a second runtime on the same store never pulls it again.
    let store = wk_runtime_oci::store::ImageStore::open(dir.path().join("cache/images")).unwrap();
    let stored = store.get(&image).unwrap().expect("in the store");
    assert_eq!(stored.kind, wk_runtime_oci::store::ImageKind::Wasm);
    let offline = WasmRuntime::new(WasmRuntimeConfig::new(dir.path().join("cache"))).unwrap();
    let never = wk_api::runtime::PullOptions {
        policy: wk_api::runtime::PullPolicy::Never,
        ..Default::default()
    };
    assert_eq!(
        offline.prepare(&image, &never).await.unwrap().digest,
        p.digest
    );
    let port = free_port();
    let mut c = config_for(dir.path(), "oci-hello", image.clone());
    c.env = vec![("POD_NAME".into(), "from-oci".into())];
    c.ports = vec![PortBinding {
        container_port: 8080,
        host_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        host_port: port,
        protocol: "TCP".into(),
    }];
    rt.start(c).await.unwrap();
    let body = reqwest::get(format!("http://127.0.0.1:{port}/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.starts_with("hello from from-oci\n"), "{body}");
    // A tag that does not exist is a pull error.
    let missing = format!("{registry_addr}/samples/hello-http:nope");
    assert!(matches!(
        rt.prepare(&missing, &Default::default()).await,
        Err(RuntimeError::Pull { .. })
    ));
    // The tag is pushed again with another component: `IfNotPresent` keeps what this
    // node has, `Always` resolves the tag again.
    let pi = std::fs::read(sample("pi.wasm")).unwrap();
    let layer = oci_client::client::ImageLayer::new(
        pi.clone(),
        oci_client::manifest::WASM_LAYER_MEDIA_TYPE.to_string(),
        None,
    );
    pusher
        .push(
            &reference,
            &[layer],
            config,
            &oci_client::secrets::RegistryAuth::Anonymous,
            None,
        )
        .await
        .unwrap();
    let again = rt.prepare(&image, &Default::default()).await.unwrap();
    assert_eq!(
        again.digest, p.digest,
        "IfNotPresent: the image already here"
    );
    let always = wk_api::runtime::PullOptions {
        policy: wk_api::runtime::PullPolicy::Always,
        ..Default::default()
    };
    let again = rt.prepare(&image, &always).await.unwrap();
    assert_eq!(
        again.digest,
        wk_runtime_wasm::image::digest(&pi),
        "Always: the new push"
    );
    rt.stop("oci-hello", Duration::from_secs(1)).await.unwrap();
    let _ = registry.kill();
    let _ = registry.wait();
}

fn config_for(dir: &std::path::Path, id: &str, image: String) -> ContainerConfig {
    config(dir, id, image)
}

/// A one-route HTTP server on loopback answering every request with `body`.
async fn serve_bytes(body: Vec<u8>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&body).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_requests_only_where_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    rt.set_resolver(std::sync::Arc::new(|name: &str, _ns: &str| {
        (name == "upstream").then_some(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }));
    let upstream = serve_bytes(b"upstream says hi".to_vec()).await;
    let http = reqwest::Client::new();
    for (id, allow) in [("closed", false), ("open", true)] {
        let port = free_port();
        let mut c = config(dir.path(), id, sample("hello-http.wasm"));
        c.allow_outbound = allow;
        c.ports = vec![PortBinding {
            container_port: 8080,
            host_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            host_port: port,
            protocol: "TCP".into(),
        }];
        rt.start(c).await.unwrap();
        let r = http
            .get(format!(
                "http://127.0.0.1:{port}/fetch?url=http://127.0.0.1:{upstream}/x"
            ))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        if allow {
            assert_eq!((status.as_u16(), text.as_str()), (200, "upstream says hi"));
            // Raw TCP by address, by a host name (the host's resolver) and by a cluster
            // name (the runtime's resolver shadows wasi:sockets ip-name-lookup).
            for host in ["127.0.0.1", "localhost", "upstream"] {
                let r = http
                    .get(format!(
                        "http://127.0.0.1:{port}/tcp?addr={host}:{upstream}"
                    ))
                    .send()
                    .await
                    .unwrap();
                let text = r.text().await.unwrap();
                assert!(
                    text.starts_with("HTTP/1.1 200 OK") && text.ends_with("upstream says hi"),
                    "{host}: {text}"
                );
            }
        } else {
            assert_eq!(status, 502, "{text}");
            assert!(text.starts_with("outbound request failed"), "{text}");
            let r = http
                .get(format!(
                    "http://127.0.0.1:{port}/tcp?addr=127.0.0.1:{upstream}"
                ))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 502, "raw sockets are closed too");
        }
        rt.stop(id, Duration::from_secs(1)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_over_http_are_fetched_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let bytes = std::fs::read(sample("pi.wasm")).unwrap();
    let digest = wk_runtime_wasm::image::digest(&bytes);
    let port = serve_bytes(bytes).await;
    let url = format!("http://127.0.0.1:{port}/pi.wasm");
    let p = rt
        .prepare(&format!("{url}@{digest}"), &Default::default())
        .await
        .unwrap();
    assert_eq!(p.digest, digest);
    let mut c = config(dir.path(), "pi-http", url.clone());
    c.args = vec!["5".into()];
    rt.start(c.clone()).await.unwrap();
    let (code, _, _) = terminated(&rt.wait("pi-http").await.unwrap());
    assert_eq!(code, 0);
    assert_eq!(log_lines(&c.log.path), ["stdout 3.1415"]);
    let wrong = format!("{url}@sha256:{}", "1".repeat(64));
    let err = rt.prepare(&wrong, &Default::default()).await.unwrap_err();
    assert!(err.to_string().contains("digest mismatch"), "{err}");
}
