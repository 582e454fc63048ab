//! wk-runtime-oci: containers through runc, from a local image store.
//!
//! [`OciRuntime`] implements the runtime contract of `wk_api::runtime` for Linux
//! containers:
//! - images come from the node's [`store::ImageStore`] (pulled from a registry with
//!   oci-client, or imported from an archive with `wk image import`);
//! - a container's root is an overlayfs of the image's unpacked layers with its own upper
//!   directory, or, where overlayfs cannot be mounted, a private copy of the layers;
//! - its `config.json` is built with oci-spec (`spec.rs`) and `runc run --detach` runs
//!   it (`runc.rs`);
//! - the containers of a pod share one network namespace holding the pod IP (`netns.rs`);
//! - stdout/stderr go through pipes into the same log files Wasm pods write;
//! - the agent is the child subreaper of its containers, so it reaps their init processes
//!   and reports real exit codes (and `OOMKilled` from the memory cgroup's OOM count).
//!
//! Containers do not outlive their agent: a starting runtime deletes what a previous
//! agent left in its runc root, as Wasm pods restart with the agent.

pub mod archive;
pub mod netns;
pub mod runc;
pub mod spec;
pub mod store;
pub mod unpack;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::{oneshot, watch};
use wk_api::logfile::ContainerLog;
use wk_api::runtime::{
    ContainerConfig, ContainerState, ExecOutput, PreparedImage, PullOptions, PullPolicy, Runtime,
    RuntimeError,
};

use crate::netns::PodNetwork;
use crate::runc::Runc;
use crate::store::{ImageKind, ImageStore, StoreError};

pub use oci_client::Reference;
pub use oci_client::secrets::RegistryAuth;

/// Settings of the OCI runtime.
#[derive(Debug, Clone)]
pub struct OciRuntimeConfig {
    /// Bundles, runc state and pod network records.
    pub data_dir: PathBuf,
    /// The image store (shared with `wk image`).
    pub store_dir: PathBuf,
    pub runc: PathBuf,
    /// Registries (`host:port`) reached over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Container roots on overlayfs (the default); `false`, or a failed mount, copies the
    /// layers into each container's root instead.
    pub overlay: bool,
}

impl OciRuntimeConfig {
    pub fn new(data_dir: PathBuf) -> OciRuntimeConfig {
        OciRuntimeConfig {
            store_dir: data_dir.join("images"),
            data_dir,
            runc: "runc".into(),
            insecure_registries: Vec::new(),
            overlay: true,
        }
    }
}

/// How long connecting to a registry or image server may take.
pub const FETCH_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a download may stall (no bytes at all) before it fails and is retried with
/// the pod's back-off: a server that accepts and then hangs must not hold a pod in
/// ContainerCreating forever.
pub const FETCH_STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// An oci-client client for a set of insecure registries.
pub fn registry_client(insecure_registries: Vec<String>) -> oci_client::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    oci_client::Client::new(oci_client::client::ClientConfig {
        protocol: oci_client::client::ClientProtocol::HttpsExcept(insecure_registries),
        connect_timeout: Some(FETCH_CONNECT_TIMEOUT),
        read_timeout: Some(FETCH_STALL_TIMEOUT),
        ..Default::default()
    })
}

/// Registry clients, one per set of credentials: oci-client remembers the first
/// credentials it used for a registry, so a pull with a pod's secret must not share a
/// client with an earlier anonymous pull.
pub struct RegistryClients {
    insecure: Vec<String>,
    clients: Mutex<HashMap<String, oci_client::Client>>,
}

impl RegistryClients {
    pub fn new(insecure_registries: Vec<String>) -> RegistryClients {
        RegistryClients {
            insecure: insecure_registries,
            clients: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, auth: &oci_client::secrets::RegistryAuth) -> oci_client::Client {
        let key = match auth {
            oci_client::secrets::RegistryAuth::Basic(u, p) => format!("basic\0{u}\0{p}"),
            oci_client::secrets::RegistryAuth::Bearer(t) => format!("bearer\0{t}"),
            _ => String::new(),
        };
        self.clients
            .lock()
            .expect("clients lock")
            .entry(key)
            .or_insert_with(|| registry_client(self.insecure.clone()))
            .clone()
    }
}

/// The credentials for the registry of `reference`, if any are given for it.
pub fn auth_for(reference: &str, pull: &PullOptions) -> oci_client::secrets::RegistryAuth {
    let registry = reference
        .parse::<oci_client::Reference>()
        .map(|r| r.resolve_registry().to_string())
        .unwrap_or_default();
    let matches = |r: &str| {
        let r = r
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        r == registry
            || (registry == "index.docker.io"
                && matches!(
                    r,
                    "docker.io" | "index.docker.io/v1" | "registry-1.docker.io"
                ))
    };
    pull.credentials
        .iter()
        .find(|c| matches(&c.registry))
        .map(|c| oci_client::secrets::RegistryAuth::Basic(c.username.clone(), c.password.clone()))
        .unwrap_or(oci_client::secrets::RegistryAuth::Anonymous)
}

/// Waits for the init processes of containers (the agent is their child subreaper).
struct Reaper {
    waiting: Mutex<HashMap<i32, oneshot::Sender<i32>>>,
}

impl Reaper {
    fn start() -> Arc<Reaper> {
        let r = Arc::new(Reaper {
            waiting: Mutex::new(HashMap::new()),
        });
        let me = r.clone();
        tokio::spawn(async move {
            let mut sig =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).ok();
            loop {
                match sig.as_mut() {
                    Some(s) => {
                        let _ = tokio::time::timeout(Duration::from_secs(1), s.recv()).await;
                    }
                    None => tokio::time::sleep(Duration::from_millis(200)).await,
                }
                me.reap();
            }
        });
        r
    }

    fn watch(&self, pid: i32) -> oneshot::Receiver<i32> {
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().expect("reaper lock").insert(pid, tx);
        self.reap();
        rx
    }

    /// Collects exits of the watched processes only: other children belong to tokio and
    /// std, which wait for their own.
    fn reap(&self) {
        use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
        let mut waiting = self.waiting.lock().expect("reaper lock");
        let pids: Vec<i32> = waiting.keys().copied().collect();
        for pid in pids {
            let code = match waitpid(nix::unistd::Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => code,
                Ok(WaitStatus::Signaled(_, sig, _)) => 128 + sig as i32,
                Ok(_) => continue,
                // Not our child (no subreaper): all we can tell is that it is gone.
                Err(_) if !Path::new(&format!("/proc/{pid}")).exists() => 255,
                Err(_) => continue,
            };
            if let Some(tx) = waiting.remove(&pid) {
                let _ = tx.send(code);
            }
        }
    }
}

struct Container {
    runc_id: String,
    bundle: PathBuf,
    overlay: bool,
    state: watch::Sender<ContainerState>,
}

/// The OCI runtime.
pub struct OciRuntime {
    runc: Runc,
    store: ImageStore,
    clients: RegistryClients,
    dir: PathBuf,
    /// Mount overlayfs roots (cleared the first time a mount fails: copies from then on).
    overlay: Arc<AtomicBool>,
    reaper: Arc<Reaper>,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    pods: Mutex<HashMap<String, PodNetwork>>,
    /// One pod network created at a time (two containers of a pod share theirs).
    creating: tokio::sync::Mutex<()>,
    /// One pull at a time per reference.
    pulling: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn start_err(id: &str, message: impl Into<String>) -> RuntimeError {
    RuntimeError::Start {
        id: id.to_string(),
        message: message.into(),
    }
}

/// A container id runc accepts, from ours (`<pod uid>/<name>/<restart>`).
fn runc_id(id: &str) -> String {
    store::file_safe(id)
}

/// How many times the OOM killer acted in a container's memory cgroup.
fn oom_kills(cgroup: &str) -> u64 {
    let rel = cgroup.trim_start_matches('/');
    for (file, key) in [
        (
            format!("/sys/fs/cgroup/memory/{rel}/memory.oom_control"),
            "oom_kill ",
        ),
        (format!("/sys/fs/cgroup/{rel}/memory.events"), "oom_kill "),
    ] {
        if let Ok(text) = std::fs::read_to_string(&file) {
            if let Some(n) = text
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|n| n.trim().parse().ok())
            {
                return n;
            }
        }
    }
    0
}

/// The longest mount options the kernel takes (one page, with its terminating zero).
const OVERLAY_OPTIONS_MAX: usize = 4095;

/// Makes the container's root: overlayfs over the image's layers, or a copy.
fn make_rootfs(
    store: &ImageStore,
    use_overlay: &AtomicBool,
    image: &store::Image,
    bundle: &Path,
) -> Result<(PathBuf, bool), String> {
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(&rootfs).map_err(|e| format!("{}: {e}", rootfs.display()))?;
    if use_overlay.load(Ordering::Relaxed) {
        let mut lower = Vec::new();
        for l in image.layers.iter().rev() {
            lower.push(store.layer_dir(l).map_err(|e| e.to_string())?);
        }
        let (upper, work) = (bundle.join("upper"), bundle.join("work"));
        let lower: Vec<String> = lower.iter().map(|p| p.display().to_string()).collect();
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            upper.display(),
            work.display()
        );
        if opts.len() >= OVERLAY_OPTIONS_MAX {
            // Options longer than a page (an image of many layers in a deep store): this
            // image is copied, the node keeps overlayfs for the others.
            tracing::warn!(
                layers = image.layers.len(),
                "overlayfs options too long for this image; its roots are copied"
            );
        } else {
            for d in [&upper, &work] {
                std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
            }
            match nix::mount::mount(
                Some("overlay"),
                &rootfs,
                Some("overlay"),
                nix::mount::MsFlags::empty(),
                Some(opts.as_str()),
            ) {
                Ok(()) => return Ok((rootfs, true)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot mount overlayfs; container roots are copied from now on");
                    use_overlay.store(false, Ordering::Relaxed);
                }
            }
        }
    }
    store
        .apply_layers(image, &rootfs)
        .map_err(|e| e.to_string())?;
    Ok((rootfs, false))
}

/// Removes a container: deletes it from runc (`--force` kills what is left of it, its
/// own pid namespace with it), unmounts and removes its bundle, and ends its image lease.
async fn teardown(runc: &Runc, store: &ImageStore, runc_id: &str, bundle: &Path, overlay: bool) {
    let _ = runc.delete(runc_id).await;
    if overlay {
        let _ = nix::mount::umount2(&bundle.join("rootfs"), nix::mount::MntFlags::MNT_DETACH);
    }
    let _ = std::fs::remove_dir_all(bundle);
    store.release(runc_id);
}

async fn copy_lines(pipe: std::io::PipeReader, log: ContainerLog, stream: &'static str) {
    let fd: std::os::fd::OwnedFd = pipe.into();
    let Ok(mut rx) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
        return;
    };
    let mut lines = log.lines(stream);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match rx.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let _ = lines.write(&buf[..n]);
            }
        }
    }
    lines.finish();
}

impl OciRuntime {
    /// Checks runc, becomes the subreaper of containers, and clears what an earlier run
    /// of the agent left behind.
    pub async fn new(cfg: OciRuntimeConfig) -> Result<OciRuntime, String> {
        let runc = Runc {
            binary: cfg.runc.clone(),
            root: cfg.data_dir.join("runc"),
        };
        let version = runc.version().await?;
        netns::check()?;
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|e| format!("cannot become the child subreaper: {e}"))?;
        let store = ImageStore::open(&cfg.store_dir).map_err(|e| e.to_string())?;
        for d in ["containers", "pods"] {
            std::fs::create_dir_all(cfg.data_dir.join(d))
                .map_err(|e| format!("{}: {e}", cfg.data_dir.join(d).display()))?;
        }
        let rt = OciRuntime {
            runc,
            store,
            clients: RegistryClients::new(cfg.insecure_registries),
            dir: cfg.data_dir,
            overlay: Arc::new(AtomicBool::new(cfg.overlay)),
            reaper: Reaper::start(),
            containers: Mutex::new(HashMap::new()),
            pods: Mutex::new(HashMap::new()),
            creating: tokio::sync::Mutex::new(()),
            pulling: Mutex::new(HashMap::new()),
        };
        rt.clear_leftovers().await;
        tracing::info!(%version, "oci runtime ready");
        Ok(rt)
    }

    /// Kills and removes every container and pod network of this runtime (the agent is
    /// stopping: its containers go with it).
    pub async fn shutdown(&self) {
        self.clear_leftovers().await;
    }

    async fn clear_leftovers(&self) {
        for id in self.runc.list().await.unwrap_or_default() {
            let _ = self.runc.delete(&id).await;
        }
        if let Ok(rd) = std::fs::read_dir(self.dir.join("containers")) {
            for e in rd.flatten() {
                let _ =
                    nix::mount::umount2(&e.path().join("rootfs"), nix::mount::MntFlags::MNT_DETACH);
                let _ = std::fs::remove_dir_all(e.path());
                self.store.release(&e.file_name().to_string_lossy());
            }
        }
        if let Ok(rd) = std::fs::read_dir(self.dir.join("pods")) {
            for e in rd.flatten() {
                if let Some(net) = std::fs::read(e.path())
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                {
                    PodNetwork {
                        namespace: net["namespace"].as_str().unwrap_or("").into(),
                        host_veth: net["hostVeth"].as_str().unwrap_or("").into(),
                        ip: Ipv4Addr::UNSPECIFIED,
                    }
                    .delete();
                }
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    pub fn store(&self) -> &ImageStore {
        &self.store
    }

    /// The pod's network, created with its first container (the `ip` commands run on a
    /// blocking thread, not on the runtime's).
    async fn pod_network(&self, uid: &str, ip: Ipv4Addr) -> Result<PodNetwork, String> {
        let _one = self.creating.lock().await;
        if let Some(n) = self.pods.lock().expect("pods lock").get(uid) {
            return Ok(n.clone());
        }
        let net = PodNetwork::for_pod(uid, ip);
        let record = serde_json::json!({"namespace": net.namespace, "hostVeth": net.host_veth});
        let _ = std::fs::write(
            self.dir.join("pods").join(&net.namespace),
            record.to_string(),
        );
        let made = net.clone();
        tokio::task::spawn_blocking(move || made.create())
            .await
            .map_err(|e| format!("creating the pod network: {e}"))??;
        self.pods
            .lock()
            .expect("pods lock")
            .insert(uid.to_string(), net.clone());
        Ok(net)
    }

    fn container(&self, id: &str) -> Result<Arc<Container>, RuntimeError> {
        self.containers
            .lock()
            .expect("containers lock")
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))
    }

    /// Removes images used least recently (and by no container) while the store's file
    /// system is fuller than `high` percent, down to `low` percent: the kubelet's image GC.
    pub fn collect_images(&self, high: u8, low: u8) -> Result<Vec<String>, String> {
        let st = nix::sys::statvfs::statvfs(self.store.root()).map_err(|e| e.to_string())?;
        let block = st.fragment_size();
        let total = st.blocks() * block;
        let used = total.saturating_sub(st.blocks_available() * block);
        if total == 0 || used * 100 <= total * u64::from(high) {
            return Ok(Vec::new());
        }
        let target = total * u64::from(low) / 100;
        self.store
            .evict(used.saturating_sub(target))
            .map_err(|e| e.to_string())
    }
}

/// The image `reference` as its pull policy wants it: the one in `store`, or pulled
/// (with the pod's credentials); and whether it was pulled. Both runtimes' images.
pub async fn ensure_image(
    store: &ImageStore,
    clients: &RegistryClients,
    reference: &str,
    pull: &PullOptions,
) -> Result<(store::Image, bool), RuntimeError> {
    let present = store.get(reference).map_err(|e| store_err(reference, e))?;
    match (pull.policy, present) {
        (PullPolicy::Never, None) => Err(RuntimeError::Pull {
            image: reference.into(),
            message: "the image is not present on the node and its pull policy is Never".into(),
        }),
        (PullPolicy::IfNotPresent | PullPolicy::Never, Some(img)) => Ok((img, false)),
        _ => {
            let auth = auth_for(reference, pull);
            let img = store
                .pull(&clients.get(&auth), reference, &auth, &|_| {})
                .await
                .map_err(|e| store_err(reference, e))?;
            Ok((img, true))
        }
    }
}

fn store_err(image: &str, e: StoreError) -> RuntimeError {
    match e {
        StoreError::Invalid(m) => RuntimeError::InvalidImage {
            image: image.into(),
            message: m,
        },
        other => RuntimeError::Pull {
            image: image.into(),
            message: other.to_string(),
        },
    }
}

impl Runtime for OciRuntime {
    fn name(&self) -> &'static str {
        "oci"
    }

    async fn prepare(
        &self,
        image: &str,
        pull: &PullOptions,
    ) -> Result<PreparedImage, RuntimeError> {
        let gate = self
            .pulling
            .lock()
            .expect("pulling lock")
            .entry(image.to_string())
            .or_default()
            .clone();
        let _one = gate.lock().await;
        let (img, pulled) = ensure_image(&self.store, &self.clients, image, pull).await?;
        if img.kind == ImageKind::Wasm {
            return Err(RuntimeError::InvalidImage {
                image: image.into(),
                message: "this is a Wasm image; run it with runtimeClassName: wasm".into(),
            });
        }
        Ok(PreparedImage {
            digest: img.digest,
            compiled: pulled,
        })
    }

    async fn start(&self, config: ContainerConfig) -> Result<(), RuntimeError> {
        let id = config.id.clone();
        let rid = runc_id(&id);
        let image = match self.store.lease(&rid, &config.image) {
            Ok(i) => i,
            Err(StoreError::NotFound(_)) => {
                return Err(RuntimeError::Pull {
                    image: config.image.clone(),
                    message: "the image is not in the node's store".into(),
                });
            }
            Err(e) => return Err(store_err(&config.image, e)),
        };
        let fail = |m: String| {
            self.store.release(&rid);
            start_err(&id, m)
        };
        let ip: Ipv4Addr = config.pod.pod_ip.parse().map_err(|_| {
            fail(format!(
                "pod IP {:?} is not an IPv4 address",
                config.pod.pod_ip
            ))
        })?;
        let t0 = std::time::Instant::now();
        let net = self
            .pod_network(&config.pod.uid, ip)
            .await
            .map_err(|e| fail(format!("pod network: {e}")))?;
        let bundle = self.dir.join("containers").join(&rid);
        let _ = std::fs::remove_dir_all(&bundle);
        let (rootfs, overlay) = {
            let (store, flag, img, b) = (
                self.store.clone(),
                self.overlay.clone(),
                image.clone(),
                bundle.clone(),
            );
            let made = tokio::task::spawn_blocking(move || make_rootfs(&store, &flag, &img, &b))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r);
            match made {
                Ok(m) => m,
                Err(e) => {
                    // What was made of the root so far (a partial copy) goes too.
                    let _ = std::fs::remove_dir_all(&bundle);
                    return Err(fail(e));
                }
            }
        };
        let t_net_rootfs = t0.elapsed();
        let placement = spec::Placement {
            rootfs: rootfs.clone(),
            netns: net.path(),
            cgroup: format!("/wk/{rid}"),
        };
        let spec = match spec::build(&config, &image.config, &placement) {
            Ok(s) => s,
            Err(e) => {
                teardown(&self.runc, &self.store, &rid, &bundle, overlay).await;
                return Err(start_err(&id, e));
            }
        };
        if let Err(e) = spec.save(bundle.join("config.json")) {
            teardown(&self.runc, &self.store, &rid, &bundle, overlay).await;
            return Err(start_err(&id, e.to_string()));
        }
        let log = ContainerLog::new(config.log.path.clone(), config.log.max_bytes);
        let pipes = std::io::pipe().and_then(|o| std::io::pipe().map(|e| (o, e)));
        let ((out_r, out_w), (err_r, err_w)) = match pipes {
            Ok(p) => p,
            Err(e) => {
                teardown(&self.runc, &self.store, &rid, &bundle, overlay).await;
                return Err(start_err(&id, format!("pipes: {e}")));
            }
        };
        tokio::spawn(copy_lines(out_r, log.clone(), "stdout"));
        tokio::spawn(copy_lines(err_r, log.clone(), "stderr"));
        let pid = match self
            .runc
            .run_detached(&rid, &bundle, out_w.into(), err_w.into())
            .await
        {
            Ok(p) => p,
            Err(e) => {
                teardown(&self.runc, &self.store, &rid, &bundle, overlay).await;
                return Err(start_err(&id, e));
            }
        };
        let t_create = t0.elapsed();
        // Even a process that already exited is still there to reap: the agent is its
        // subreaper.
        let exited = self.reaper.watch(pid);
        tracing::debug!(%id, ?t_net_rootfs, ?t_create, total = ?t0.elapsed(), "container started");
        let started_at = jiff::Timestamp::now();
        let (state, _) = watch::channel(ContainerState::Running { started_at });
        let c = Arc::new(Container {
            runc_id: rid,
            bundle,
            overlay,
            state,
        });
        self.containers
            .lock()
            .expect("containers lock")
            .insert(id, c.clone());
        let cgroup = placement.cgroup;
        tokio::spawn(async move {
            let code = exited.await.unwrap_or(255);
            let oom = oom_kills(&cgroup) > 0;
            let (reason, message) = if oom {
                (
                    "OOMKilled",
                    "the container exceeded its memory limit".to_string(),
                )
            } else if code == 0 {
                ("Completed", String::new())
            } else {
                ("Error", String::new())
            };
            if oom {
                log.note("wk: killed by the kernel's OOM killer (memory limit reached)");
            }
            // `send_replace`: nobody may be subscribed yet (a quick exit), and `send` would
            // then drop the value.
            c.state.send_replace(ContainerState::Terminated {
                exit_code: code,
                reason: reason.into(),
                message,
                started_at,
                finished_at: jiff::Timestamp::now(),
            });
        });
        Ok(())
    }

    fn state(&self, id: &str) -> Result<ContainerState, RuntimeError> {
        Ok(self.container(id)?.state.borrow().clone())
    }

    async fn wait(&self, id: &str) -> Result<ContainerState, RuntimeError> {
        let c = self.container(id)?;
        let mut rx = c.state.subscribe();
        let st = rx
            .wait_for(ContainerState::is_terminated)
            .await
            .map_err(|_| RuntimeError::NotFound(id.to_string()))?
            .clone();
        Ok(st)
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<ContainerState, RuntimeError> {
        let c = self.container(id)?;
        if c.state.borrow().is_terminated() {
            return Ok(c.state.borrow().clone());
        }
        let _ = self.runc.kill(&c.runc_id, "TERM", false).await;
        if let Ok(st) = tokio::time::timeout(grace, self.wait(id)).await {
            return st;
        }
        let _ = self.runc.kill(&c.runc_id, "KILL", true).await;
        match tokio::time::timeout(Duration::from_secs(10), self.wait(id)).await {
            Ok(st) => st,
            Err(_) => Err(start_err(id, "the container did not die after SIGKILL")),
        }
    }

    fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let c = self
            .containers
            .lock()
            .expect("containers lock")
            .remove(id)
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        let runc = self.runc.clone();
        let store = self.store.clone();
        tokio::spawn(async move {
            teardown(&runc, &store, &c.runc_id, &c.bundle, c.overlay).await;
        });
        Ok(())
    }

    async fn exec(
        &self,
        id: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        let c = self.container(id)?;
        self.runc
            .exec(&c.runc_id, command, timeout)
            .await
            .map_err(|e| start_err(id, e))
    }

    async fn release_pod(&self, pod_uid: &str) {
        let Some(net) = self.pods.lock().expect("pods lock").remove(pod_uid) else {
            return;
        };
        let record = self.dir.join("pods").join(&net.namespace);
        // `ip` runs on a blocking thread, as when the network was made.
        let _ = tokio::task::spawn_blocking(move || net.delete()).await;
        let _ = std::fs::remove_file(record);
    }
}
