//! The OCI runtime with real runc, real overlayfs and a real network namespace: images are
//! built from Debian's static busybox, imported into a store, and run. Needs root, runc
//! and `/bin/busybox` (busybox-static); `scripts/test.sh` installs them.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use wk_api::runtime::{
    ContainerConfig, ContainerState, LogConfig, PullOptions, PullPolicy, Runtime,
};
use wk_runtime_oci::store::ImageConfig;
use wk_runtime_oci::{OciRuntime, OciRuntimeConfig, archive};

const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "sleep", "httpd", "dd", "head", "trap", "kill", "true", "false", "ls",
    "id", "hostname", "wget", "nc", "tail", "unshare",
];

fn busybox_archive(dir: &Path, reference: &str) -> std::path::PathBuf {
    let layer = archive::busybox_layer(Path::new("/bin/busybox"), APPLETS)
        .expect("a static busybox at /bin/busybox (apt-get install busybox-static)");
    let path = dir.join("busybox.tar");
    let config = ImageConfig {
        cmd: vec!["sh".into()],
        env: vec!["FROM_IMAGE=yes".into()],
        ..Default::default()
    };
    archive::write_oci_archive(&path, reference, &config, &[layer]).unwrap();
    path
}

struct Env {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    rt: OciRuntime,
    uid: String,
}

async fn env(octet: u8) -> Env {
    env_with(octet, true).await
}

async fn env_with(octet: u8, overlay: bool) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let mut cfg = OciRuntimeConfig::new(path.join("oci"));
    cfg.overlay = overlay;
    let rt = OciRuntime::new(cfg)
        .await
        .expect("runc works here (root, apt-get install runc)");
    let archive = busybox_archive(&path, "wk.test/busybox:1");
    let imported = rt.store().import(&archive, None).unwrap();
    assert_eq!(imported[0].reference, "wk.test/busybox:1");
    Env {
        _dir: dir,
        dir: path,
        rt,
        uid: format!("pod-{}-{octet}", std::process::id()),
    }
}

fn config(env: &Env, name: &str, ip: Ipv4Addr, command: &[&str]) -> ContainerConfig {
    let mut c = ContainerConfig {
        id: format!("{}/{name}/0", env.uid),
        name: name.into(),
        image: "wk.test/busybox:1".into(),
        command: command.iter().map(|s| s.to_string()).collect(),
        log: LogConfig {
            path: env.dir.join(format!("{name}.log")),
            max_bytes: 1 << 20,
        },
        ..Default::default()
    };
    c.pod.uid = env.uid.clone();
    c.pod.name = "box".into();
    c.pod.pod_ip = ip.to_string();
    c
}

fn log_text(env: &Env, name: &str) -> String {
    std::fs::read_to_string(env.dir.join(format!("{name}.log"))).unwrap_or_default()
}

async fn wait_log(env: &Env, name: &str, needle: &str) -> String {
    for _ in 0..100 {
        let t = log_text(env, name);
        if t.contains(needle) {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{needle:?} never appeared in the log of {name}: {}",
        log_text(env, name)
    );
}

fn exit_code(st: &ContainerState) -> (i32, String) {
    match st {
        ContainerState::Terminated {
            exit_code, reason, ..
        } => (*exit_code, reason.clone()),
        other => panic!("not terminated: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_logs_env_and_oom() {
    let env = env(1).await;
    let ip = Ipv4Addr::new(127, 231, 1, 2);
    let prepared = env
        .rt
        .prepare(
            "wk.test/busybox:1",
            &PullOptions {
                policy: PullPolicy::IfNotPresent,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(!prepared.compiled, "served from the store, not pulled");
    assert!(
        env.rt
            .prepare(
                "wk.test/absent:1",
                &PullOptions {
                    policy: PullPolicy::Never,
                    ..Default::default()
                }
            )
            .await
            .is_err()
    );

    // Exit 0, stdout and stderr lines, the image's env merged with the container's.
    let mut c = config(
        &env,
        "ok",
        ip,
        &[
            "sh",
            "-c",
            "echo out $FROM_IMAGE $MINE; echo err >&2; hostname",
        ],
    );
    c.env.push(("MINE".into(), "set".into()));
    env.rt.start(c.clone()).await.unwrap();
    let st = env.rt.wait(&c.id).await.unwrap();
    assert_eq!(exit_code(&st), (0, "Completed".into()));
    wait_log(&env, "ok", " stderr err").await;
    let log = wait_log(&env, "ok", " stdout box").await;
    assert!(log.contains(" stdout out yes set"), "{log}");
    env.rt.remove(&c.id).unwrap();

    // Exit 3.
    let c = config(&env, "three", ip, &["sh", "-c", "exit 3"]);
    env.rt.start(c.clone()).await.unwrap();
    assert_eq!(
        exit_code(&env.rt.wait(&c.id).await.unwrap()),
        (3, "Error".into())
    );
    env.rt.remove(&c.id).unwrap();

    // Over its memory limit: OOMKilled.
    let mut c = config(
        &env,
        "hog",
        ip,
        &[
            "sh",
            "-c",
            "dd if=/dev/zero bs=64M count=4 | cat > /dev/null; head -c 200000000 /dev/zero | tail",
        ],
    );
    c.limits.memory_bytes = Some(16 << 20);
    env.rt.start(c.clone()).await.unwrap();
    let (code, reason) = exit_code(&env.rt.wait(&c.id).await.unwrap());
    assert_eq!(
        reason,
        "OOMKilled",
        "exit {code}: {}",
        log_text(&env, "hog")
    );
    env.rt.remove(&c.id).unwrap();

    // A command that does not exist: a start error naming it, not a hang.
    let c = config(&env, "missing", ip, &["/no/such/binary"]);
    let err = env.rt.start(c).await.unwrap_err();
    assert!(err.to_string().contains("/no/such/binary"), "{err}");
    env.rt.release_pod(&env.uid).await;
    env.rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_on_the_pod_ip_exec_and_graceful_stop() {
    let env = env(2).await;
    let ip = Ipv4Addr::new(127, 231, 2, 2);
    // A server on the pod IP; SIGTERM is trapped and logged before exiting 0.
    let c = config(
        &env,
        "web",
        ip,
        &[
            "sh",
            "-c",
            "echo hello-from-container > /www/index.html; httpd -f -p 8080 -h /www & pid=$!; trap 'echo got-term; kill $pid; exit 0' TERM; while true; do sleep 0.1; done",
        ],
    );
    env.rt.start(c.clone()).await.unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut body = String::new();
    for _ in 0..100 {
        if let Ok(r) = client.get(format!("http://{ip}:8080/")).send().await {
            body = r.text().await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(body.trim(), "hello-from-container");

    // exec: output and exit codes of commands inside the container.
    let out = env
        .rt
        .exec(
            &c.id,
            &["cat".into(), "/www/index.html".into()],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(
        (out.exit_code, String::from_utf8_lossy(&out.stdout).trim()),
        (0, "hello-from-container")
    );
    let out = env
        .rt
        .exec(
            &c.id,
            &["sh".into(), "-c".into(), "exit 4".into()],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, 4);
    // Output beyond the cap is read and dropped: 6 MiB of zeros ends normally with 4 MiB.
    let out = env
        .rt
        .exec(
            &c.id,
            &["sh".into(), "-c".into(), "head -c 6291456 /dev/zero".into()],
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0);
    assert_eq!(out.stdout.len(), wk_runtime_oci::runc::EXEC_OUTPUT_MAX);
    // A command that outlives its timeout is killed, not left running in the container.
    let err = env
        .rt
        .exec(
            &c.id,
            &["sleep".into(), "731".into()],
            Duration::from_millis(500),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");
    let still = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .any(|cmd| cmd == b"sleep\x00731\x00");
    assert!(!still, "the timed-out command still runs");

    // A second container of the same pod shares its network: it reaches the server on
    // localhost.
    let peer = config(
        &env,
        "peer",
        ip,
        &["wget", "-q", "-O", "-", "http://127.0.0.1:8080/"],
    );
    env.rt.start(peer.clone()).await.unwrap();
    assert_eq!(exit_code(&env.rt.wait(&peer.id).await.unwrap()).0, 0);
    wait_log(&env, "peer", "hello-from-container").await;
    env.rt.remove(&peer.id).unwrap();

    // The pod reaches addresses on the host (the node's DNS and Service VIPs live there),
    // from its own address.
    let host = tokio::net::TcpListener::bind("127.231.2.1:0")
        .await
        .unwrap();
    let port = host.local_addr().unwrap().port();
    let accept = tokio::spawn(async move { host.accept().await.unwrap().1 });
    let dial = config(
        &env,
        "dial",
        ip,
        &["sh", "-c", &format!("echo hi | nc 127.231.2.1 {port}")],
    );
    env.rt.start(dial.clone()).await.unwrap();
    let peer = tokio::time::timeout(Duration::from_secs(10), accept)
        .await
        .expect("the container connected to the host")
        .unwrap();
    assert_eq!(peer.ip(), std::net::IpAddr::V4(ip));
    env.rt.wait(&dial.id).await.unwrap();
    env.rt.remove(&dial.id).unwrap();

    let st = env.rt.stop(&c.id, Duration::from_secs(10)).await.unwrap();
    assert_eq!(exit_code(&st).0, 0, "the TERM trap ran and exited 0");
    wait_log(&env, "web", "got-term").await;
    env.rt.remove(&c.id).unwrap();
    env.rt.release_pod(&env.uid).await;
    // The pod's network is gone with it: namespace, host veth and route.
    let net = wk_runtime_oci::netns::PodNetwork::for_pod(&env.uid, ip);
    assert!(
        !std::path::Path::new(&net.path()).exists(),
        "{}",
        net.path()
    );
    let links = std::process::Command::new("ip")
        .args(["-o", "link"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&links.stdout).contains(&net.host_veth));
    let routes = std::process::Command::new("ip")
        .args(["route", "show", "table", "all"])
        .arg(ip.to_string())
        .output()
        .unwrap();
    assert!(
        routes.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&routes.stdout)
    );
    env.rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_exits_are_always_seen() {
    let env = env(3).await;
    let ip = Ipv4Addr::new(127, 231, 3, 2);
    let mut ids = Vec::new();
    for i in 0..30 {
        let c = config(
            &env,
            &format!("q{i}"),
            ip,
            &["sh", "-c", &format!("exit {}", i % 5)],
        );
        env.rt.start(c.clone()).await.unwrap();
        ids.push((c.id, i % 5));
    }
    for (id, code) in ids {
        let st = tokio::time::timeout(Duration::from_secs(10), env.rt.wait(&id))
            .await
            .unwrap_or_else(|_| panic!("the exit of {id} was never seen"))
            .unwrap();
        assert_eq!(exit_code(&st).0, code);
        env.rt.remove(&id).unwrap();
    }
    env.rt.release_pod(&env.uid).await;
    env.rt.shutdown().await;
}

/// Each container writes to its own root, on overlayfs and on the copy fallback alike;
/// with a read-only root it cannot write at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roots_are_private_with_and_without_overlayfs() {
    for (octet, overlay) in [(4, true), (5, false)] {
        let env = env_with(octet, overlay).await;
        let ip = Ipv4Addr::new(127, 231, octet, 2);
        let w = config(
            &env,
            "writer",
            ip,
            &["sh", "-c", "echo mine > /etc/marker && cat /etc/marker"],
        );
        env.rt.start(w.clone()).await.unwrap();
        assert_eq!(exit_code(&env.rt.wait(&w.id).await.unwrap()).0, 0);
        wait_log(&env, "writer", "stdout mine").await;
        let r = config(&env, "reader", ip, &["sh", "-c", "test ! -e /etc/marker"]);
        env.rt.start(r.clone()).await.unwrap();
        assert_eq!(
            exit_code(&env.rt.wait(&r.id).await.unwrap()).0,
            0,
            "overlay={overlay}: the writer's file leaked"
        );
        let mut ro = config(&env, "ro", ip, &["sh", "-c", "echo x > /etc/marker"]);
        ro.security.read_only_root_filesystem = true;
        env.rt.start(ro.clone()).await.unwrap();
        assert_ne!(
            exit_code(&env.rt.wait(&ro.id).await.unwrap()).0,
            0,
            "a read-only root refused the write"
        );
        let mounted = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(&format!("{}/oci/containers", env.dir.display()));
        assert_eq!(mounted, overlay, "overlay mounts only when asked for");
        for id in [&w.id, &r.id, &ro.id] {
            env.rt.remove(id).unwrap();
        }
        env.rt.release_pod(&env.uid).await;
        env.rt.shutdown().await;
    }
}

/// The default syscall filter refuses what Docker's refuses (here: creating a user
/// namespace, which needs no capability); `Unconfined` lifts it, and so does adding the
/// capability that would allow the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_seccomp_filter() {
    let env = env(6).await;
    let ip = Ipv4Addr::new(127, 231, 6, 2);
    let unconfined = wk_api::runtime::Security {
        seccomp_unconfined: true,
        ..Default::default()
    };
    let sysadmin = wk_api::runtime::Security {
        add_capabilities: vec!["SYS_ADMIN".into()],
        ..Default::default()
    };
    let cases = [
        ("filtered", Default::default(), false),
        ("unconfined", unconfined, true),
        ("sysadmin", sysadmin, true),
    ];
    for (name, security, ok) in cases {
        let mut c = config(&env, name, ip, &["unshare", "-U", "true"]);
        c.security = security;
        env.rt.start(c.clone()).await.unwrap();
        let (code, _) = exit_code(&env.rt.wait(&c.id).await.unwrap());
        assert_eq!(
            code == 0,
            ok,
            "{name}: exit {code}: {}",
            log_text(&env, name)
        );
        env.rt.remove(&c.id).unwrap();
    }
    env.rt.release_pod(&env.uid).await;
    env.rt.shutdown().await;
}

/// Image GC by disk threshold: above the high mark, images no container uses go (least
/// recently used first) until under the low mark; a leased image stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_gc_spares_images_in_use() {
    let env = env(7).await;
    let other = busybox_archive(&env.dir, "wk.test/other:1");
    env.rt.store().import(&other, None).unwrap();
    env.rt.store().lease("keeper", "wk.test/busybox:1").unwrap();
    // Below a 100 % mark nothing happens.
    assert!(env.rt.collect_images(100, 100).unwrap().is_empty());
    // Any disk is fuller than 1 %: everything not in use goes.
    let removed = env.rt.collect_images(1, 0).unwrap();
    assert_eq!(removed, ["wk.test/other:1"]);
    let left: Vec<String> = env
        .rt
        .store()
        .list()
        .unwrap()
        .into_iter()
        .map(|i| i.reference)
        .collect();
    assert_eq!(left, ["wk.test/busybox:1"]);
    env.rt.store().release("keeper");
    env.rt.shutdown().await;
}
