//! wk-runtime-wasm: pods of WASI Preview 2 components on wasmtime.
//!
//! One [`WasmRuntime`] per agent holds the one `Engine` (pooling allocator when it can,
//! epoch interruption for time slicing), the compile cache and the containers. A
//! container is one component of one of two worlds:
//!
//! - `wasi:cli/command`: run to completion in its own store; exit code and reason are
//!   reported, stdout/stderr go to the log file.
//! - `wasi:http/proxy`: a service. The runtime listens on the container's ports (HTTP/1.1)
//!   and handles every request with a fresh instance from a pre-instantiated component,
//!   as `wasmtime serve` does (it uses the same `wasmtime_wasi_http::handler`).
//!
//! Limits: linear memory via a store limiter (a component that cannot grow and then traps
//! is `OOMKilled`); CPU via epoch interruption: every store yields to the scheduler each
//! tick, so a busy loop cannot starve its neighbours, a request past its deadline is
//! interrupted, and `limits.cpu` caps a container's share per 100 ms period (`cpu.rs`). Outbound network (sockets, outgoing HTTP) only when the container allows it.

pub mod cpu;
pub mod engine;
pub mod host;
pub mod image;
pub mod logs;
mod names;
mod service;
pub use service::LocalService;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store, UpdateDeadline};
use wk_api::runtime::{
    ContainerConfig, ContainerState, PreparedImage, PullOptions, Runtime, RuntimeError,
};

use crate::engine::{CompileCache, EngineOptions, EpochTicker};
use crate::host::{Host, HostTemplate};
use crate::logs::ContainerLog;

/// Settings of the Wasm runtime.
#[derive(Debug, Clone)]
pub struct WasmRuntimeConfig {
    /// Where compiled components are cached.
    pub cache_dir: PathBuf,
    pub engine: EngineOptions,
    /// Default wall-clock limit of one HTTP request.
    pub request_timeout: Duration,
    /// OCI registries (`host:port`) reached over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// The node's image store, where OCI references are pulled to (shared with the
    /// container runtime).
    pub image_store: PathBuf,
}

impl WasmRuntimeConfig {
    pub fn new(cache_dir: PathBuf) -> Self {
        WasmRuntimeConfig {
            engine: EngineOptions::default(),
            request_timeout: Duration::from_secs(30),
            insecure_registries: Vec::new(),
            image_store: cache_dir.join("images"),
            cache_dir,
        }
    }
}

/// The world a component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    Command,
    Proxy,
}

struct Prepared {
    component: Component,
    world: World,
    digest: String,
}

/// Longest a stopping service keeps accepting connections before it closes its listeners
/// (half the grace period, at most this): the Endpoints change that removes it reaches
/// the balancers within a controller pass or two, and a connection they open meanwhile is
/// served (what a `preStop` sleep does for containers in Kubernetes).
const SERVICE_DEREGISTRATION: Duration = Duration::from_secs(2);

struct Container {
    cpu: Arc<cpu::CpuQuota>,
    state: watch::Sender<ContainerState>,
    stop: Arc<tokio::sync::Notify>,
    /// How long a stopping service keeps accepting before it closes its listeners, so
    /// balancers learn it is going before it stops answering (milliseconds).
    drain_ms: Arc<std::sync::atomic::AtomicU64>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A tokio runtime of its own for commands, so CPU-bound guests share the CPU with the
/// agent's I/O (HTTP serving, API traffic) through the OS scheduler instead of queueing
/// behind them on the same workers.
struct CommandPool(Option<tokio::runtime::Runtime>);

impl CommandPool {
    fn new() -> std::io::Result<CommandPool> {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("wk-wasm-cmd")
            .enable_all()
            .build()?;
        Ok(CommandPool(Some(rt)))
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("pool present until drop").handle()
    }
}

impl Drop for CommandPool {
    fn drop(&mut self) {
        // May be dropped inside another runtime: do not block.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// The Wasm runtime.
pub struct WasmRuntime {
    commands: CommandPool,
    engine: Engine,
    pooling: bool,
    linker: Linker<Host>,
    cache: CompileCache,
    fetcher: image::Fetcher,
    request_timeout: Duration,
    epoch_tick: Duration,
    images: Mutex<HashMap<String, Arc<Prepared>>>,
    /// One load at a time per image reference: a burst of pods of a new image compiles
    /// it once, not once per pod.
    loading: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Cluster names for outgoing wasi:http requests (set by the node agent).
    resolver: std::sync::RwLock<Option<host::NameResolver>>,
    /// Running wasi:http services by listening address, for the node's balancer.
    local: Arc<std::sync::RwLock<HashMap<std::net::SocketAddr, Arc<LocalService>>>>,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    _ticker: EpochTicker,
}

fn invalid(image: &str, message: impl Into<String>) -> RuntimeError {
    RuntimeError::InvalidImage {
        image: image.to_string(),
        message: message.into(),
    }
}

/// Component text format (used for test fixtures).
fn is_text_component(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok_and(|t| t.contains("(component"))
}

/// Reads the 8-byte preamble: core module, component, or neither.
fn classify_binary(image: &str, bytes: &[u8]) -> Result<(), RuntimeError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        // Text format is accepted (fixtures); anything else is not Wasm.
        if is_text_component(bytes) {
            return Ok(());
        }
        return Err(invalid(
            image,
            "not a WebAssembly binary (bad magic number)",
        ));
    }
    match bytes[4..8] {
        [1, 0, 0, 0] => Err(invalid(
            image,
            "this is a core WebAssembly module, not a component; build for wasm32-wasip2 (or adapt a wasip1 module with `wasm-tools component new --adapt`)",
        )),
        _ => Ok(()),
    }
}

impl WasmRuntime {
    /// The wasi:http service listening on `addr` in this process, if any: the node's
    /// balancer hands it connections directly instead of connecting to it.
    pub fn local_service(&self, addr: std::net::SocketAddr) -> Option<Arc<LocalService>> {
        self.local
            .read()
            .expect("local lock")
            .get(&addr)
            .filter(|s| s.is_open())
            .cloned()
    }

    /// Lets outgoing wasi:http requests of containers started from now on reach cluster
    /// names (see `host::Hooks`).
    pub fn set_resolver(&self, resolver: host::NameResolver) {
        *self.resolver.write().expect("resolver lock") = Some(resolver);
    }

    /// CPU usage and throttling of a container (like its cgroup's `cpu.stat`).
    pub fn cpu_stats(&self, id: &str) -> Result<cpu::CpuStats, RuntimeError> {
        Ok(self.container(id)?.cpu.stats())
    }

    /// Creates the runtime (engine, linker with WASI + wasi:http, epoch ticker).
    pub fn new(cfg: WasmRuntimeConfig) -> Result<WasmRuntime, wasmtime::Error> {
        let (engine, pooling) = engine::build(&cfg.engine)?;
        let mut linker: Linker<Host> = Linker::new(&engine);
        // Commands and services both get all of WASI CLI (Rust std imports it even in a
        // proxy), plus wasi:http.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        // Cluster names for raw sockets too (wasmtime-wasi asks only the host's resolver).
        names::add_to_linker(&mut linker)?;
        let ticker = EpochTicker::start(engine.clone(), cfg.engine.epoch_tick);
        Ok(WasmRuntime {
            commands: CommandPool::new()?,
            cache: CompileCache::new(cfg.cache_dir, engine.clone()),
            engine,
            pooling,
            linker,
            fetcher: image::Fetcher::new(
                cfg.insecure_registries,
                wk_runtime_oci::store::ImageStore::open(&cfg.image_store)
                    .map_err(|e| wasmtime::format_err!("{e}"))?,
            ),
            request_timeout: cfg.request_timeout,
            epoch_tick: cfg.engine.epoch_tick,
            images: Mutex::new(HashMap::new()),
            loading: Mutex::new(HashMap::new()),
            resolver: std::sync::RwLock::new(None),
            local: Arc::default(),
            containers: Mutex::new(HashMap::new()),
            _ticker: ticker,
        })
    }

    /// Whether the pooling allocator is in use.
    pub fn pooling(&self) -> bool {
        self.pooling
    }

    /// Compilations done so far (cache hits do not count).
    pub fn compilations(&self) -> u64 {
        self.cache.compilations.load(Ordering::Relaxed)
    }

    /// Loads (fetch, verify, compile or hit the cache) and classifies an image. Local
    /// files are re-read every time (cheap), so a rebuilt `.wasm` at the same path is
    /// picked up; remote images are fetched once per runtime.
    async fn load(
        &self,
        image: &str,
        pull: &PullOptions,
    ) -> Result<(Arc<Prepared>, bool), RuntimeError> {
        let gate = self
            .loading
            .lock()
            .expect("loading lock")
            .entry(image.to_string())
            .or_default()
            .clone();
        let _one_at_a_time = gate.lock().await;
        let local = matches!(
            image::ImageRef::parse(image)?.source,
            image::ImageSource::File(_)
        );
        // By reference from memory, unless the policy asks to resolve the reference again
        // (`Always`: a re-pushed tag); the by-digest entry below still spares compiling.
        if !local && pull.policy != wk_api::runtime::PullPolicy::Always {
            if let Some(p) = self.images.lock().expect("images lock").get(image) {
                return Ok((p.clone(), false));
            }
        }
        let (fetched, digest) = image::fetch(image, &self.fetcher, pull).await?;
        if let Some(p) = self.images.lock().expect("images lock").get(&digest) {
            return Ok((p.clone(), false));
        }
        let bytes = fetched.read(image).await?;
        classify_binary(image, &bytes)?;
        let cache = &self.cache;
        let (component, compiled) = tokio::task::block_in_place(|| {
            if is_text_component(&bytes) {
                // Text fixtures are compiled directly.
                Component::new(&self.engine, &bytes).map(|c| (c, true))
            } else {
                cache.load(&digest, &bytes)
            }
        })
        .map_err(|e| invalid(image, format!("cannot compile: {e:#}")))?;
        let world = world_of(image, &self.engine, &component)?;
        // Every import must be one the runtime provides.
        self.linker
            .instantiate_pre(&component)
            .map_err(|e| invalid(image, format!("{e:#}")))?;
        let p = Arc::new(Prepared {
            component,
            world,
            digest: digest.clone(),
        });
        let mut images = self.images.lock().expect("images lock");
        images.insert(digest, p.clone());
        if !local {
            images.insert(image.to_string(), p.clone());
        }
        Ok((p, compiled))
    }

    fn container(&self, id: &str) -> Result<Arc<Container>, RuntimeError> {
        self.containers
            .lock()
            .expect("containers lock")
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))
    }

    /// Instantiates a service image `n` times the way a request does (fresh store +
    /// instance from the pre-instantiated component) and returns each duration. For the
    /// benchmark.
    #[doc(hidden)]
    pub async fn bench_instantiate(
        &self,
        image: &str,
        n: usize,
    ) -> Result<Vec<Duration>, RuntimeError> {
        let (prepared, _) = self.load(image, &PullOptions::default()).await?;
        let err = |e: wasmtime::Error| RuntimeError::Start {
            id: image.to_string(),
            message: format!("{e:#}"),
        };
        let pre = self
            .linker
            .instantiate_pre(&prepared.component)
            .map_err(err)?;
        let pre = wasmtime_wasi_http::p2::bindings::ProxyPre::new(pre).map_err(err)?;
        let dir = std::env::temp_dir().join(format!("wk-bench-{}", std::process::id()));
        let mut config = ContainerConfig {
            id: "bench".into(),
            pod: Default::default(),
            name: "bench".into(),
            image: image.into(),
            command: vec![],
            args: vec![],
            env: vec![],
            working_dir: None,
            mounts: vec![],
            ports: vec![],
            limits: Default::default(),
            allow_outbound: false,
            log: wk_api::runtime::LogConfig {
                path: dir.join("bench.log"),
                max_bytes: 1 << 20,
            },
            security: Default::default(),
        };
        config.env.push(("POD_NAME".into(), "bench".into()));
        let template = HostTemplate::new(
            config,
            ContainerLog::new(dir.join("bench.log"), 1 << 20),
            Arc::new(cpu::CpuQuota::new(None, self.epoch_tick)),
            None,
        );
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let t = std::time::Instant::now();
            let host = template
                .host(Arc::new(AtomicBool::new(false)))
                .map_err(|m| RuntimeError::Start {
                    id: image.into(),
                    message: m,
                })?;
            let mut store = new_store(&self.engine, host, Some(self.request_timeout));
            let _proxy = pre.instantiate_async(&mut store).await.map_err(err)?;
            drop(store);
            out.push(t.elapsed());
        }
        Ok(out)
    }

    /// The world of a prepared image.
    pub async fn world(&self, image: &str) -> Result<World, RuntimeError> {
        Ok(self.load(image, &PullOptions::default()).await?.0.world)
    }
}

fn world_of(image: &str, engine: &Engine, component: &Component) -> Result<World, RuntimeError> {
    let ty = component.component_type();
    let mut world = None;
    for (name, _) in ty.exports(engine) {
        if name.starts_with("wasi:http/incoming-handler@0.2") {
            world = Some(World::Proxy);
        } else if name.starts_with("wasi:cli/run@0.2") && world.is_none() {
            world = Some(World::Command);
        }
    }
    world.ok_or_else(|| {
        invalid(image, "the component exports neither wasi:cli/run (a command) nor wasi:http/incoming-handler (a service)")
    })
}

/// Sets up a store: limiter, and an epoch callback that yields every tick and interrupts
/// after `deadline` (if any).
fn new_store(engine: &Engine, host: Host, deadline: Option<Duration>) -> Store<Host> {
    let cpu = host.cpu.clone();
    let mut store = Store::new(engine, host);
    store.limiter(|h| &mut h.limiter);
    store.set_epoch_deadline(1);
    let start = std::time::Instant::now();
    let mut last = start;
    store.epoch_deadline_callback(move |_| {
        let now = std::time::Instant::now();
        if deadline.is_some_and(|d| now.duration_since(start) > d) {
            return Ok(UpdateDeadline::Interrupt);
        }
        // The store ran since the previous callback, at most one tick (it may have been
        // suspended in between).
        let ran = now.duration_since(last);
        last = now;
        match cpu.charge(ran) {
            Some(wait) => Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(tokio::time::sleep(wait)),
            )),
            None => Ok(UpdateDeadline::Yield(1)),
        }
    });
    store
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

/// Turns the end of a command into a terminated state.
fn command_outcome(
    result: wasmtime::Result<Result<(), ()>>,
    oom: bool,
    started_at: jiff::Timestamp,
) -> ContainerState {
    let finished_at = now();
    let (exit_code, reason, message) = match result {
        Ok(Ok(())) => (0, "Completed", String::new()),
        // The guest reported failure itself (and usually said why on stderr).
        Ok(Err(())) => (1, "Error", String::new()),
        Err(e) => {
            if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                (
                    exit.0,
                    if exit.0 == 0 { "Completed" } else { "Error" },
                    String::new(),
                )
            } else if oom {
                (137, "OOMKilled", format!("memory limit exceeded: {e}"))
            } else if e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
                (
                    137,
                    "DeadlineExceeded",
                    "interrupted: time limit exceeded".into(),
                )
            } else {
                (134, "Error", format!("trap: {e:#}"))
            }
        }
    };
    ContainerState::Terminated {
        exit_code,
        reason: reason.into(),
        message,
        started_at,
        finished_at,
    }
}

impl Runtime for WasmRuntime {
    fn name(&self) -> &'static str {
        "wasm"
    }

    async fn prepare(
        &self,
        image: &str,
        pull: &PullOptions,
    ) -> Result<PreparedImage, RuntimeError> {
        let (p, compiled) = self.load(image, pull).await?;
        Ok(PreparedImage {
            digest: p.digest.clone(),
            compiled,
        })
    }

    async fn start(&self, config: ContainerConfig) -> Result<(), RuntimeError> {
        let id = config.id.clone();
        if self
            .containers
            .lock()
            .expect("containers lock")
            .contains_key(&id)
        {
            return Err(RuntimeError::Start {
                id,
                message: "a container with this id exists".into(),
            });
        }
        let (prepared, _) = self.load(&config.image, &PullOptions::default()).await?;
        let log = ContainerLog::new(config.log.path.clone(), config.log.max_bytes);
        let cpu = Arc::new(cpu::CpuQuota::new(
            config.limits.cpu_millis,
            self.epoch_tick,
        ));
        let resolver = self.resolver.read().expect("resolver lock").clone();
        let template = Arc::new(HostTemplate::new(config, log, cpu.clone(), resolver));
        let started_at = now();
        let (state_tx, _) = watch::channel(ContainerState::Running { started_at });
        let container = Arc::new(Container {
            cpu,
            state: state_tx,
            stop: Arc::new(tokio::sync::Notify::new()),
            drain_ms: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            task: Mutex::new(None),
        });
        let task = match prepared.world {
            World::Command => {
                let pre = self
                    .linker
                    .instantiate_pre(&prepared.component)
                    .and_then(wasmtime_wasi::p2::bindings::CommandPre::new)
                    .map_err(|e| RuntimeError::Start {
                        id: id.clone(),
                        message: format!("{e:#}"),
                    })?;
                let oom = Arc::new(AtomicBool::new(false));
                let host = template
                    .host(oom.clone())
                    .map_err(|message| RuntimeError::Start {
                        id: id.clone(),
                        message,
                    })?;
                let engine = self.engine.clone();
                let c = container.clone();
                let log = template.log.clone();
                self.commands.handle().spawn(async move {
                    let mut store = new_store(&engine, host, None);
                    let result = async {
                        let cmd = pre.instantiate_async(&mut store).await?;
                        cmd.wasi_cli_run().call_run(&mut store).await
                    }
                    .await;
                    let state = command_outcome(result, oom.load(Ordering::Relaxed), started_at);
                    if let ContainerState::Terminated {
                        reason, message, ..
                    } = &state
                    {
                        if !message.is_empty() {
                            log.note(&format!("{reason}: {message}"));
                        }
                    }
                    c.state.send_replace(state);
                })
            }
            World::Proxy => service::start(
                self,
                &prepared.component,
                template,
                container.clone(),
                self.request_timeout,
            )
            .await
            .map_err(|message| RuntimeError::Start {
                id: id.clone(),
                message,
            })?,
        };
        *container.task.lock().expect("task lock") = Some(task);
        self.containers
            .lock()
            .expect("containers lock")
            .insert(id, container);
        Ok(())
    }

    fn state(&self, id: &str) -> Result<ContainerState, RuntimeError> {
        Ok(self.container(id)?.state.borrow().clone())
    }

    async fn wait(&self, id: &str) -> Result<ContainerState, RuntimeError> {
        let c = self.container(id)?;
        let mut rx = c.state.subscribe();
        let state = rx
            .wait_for(ContainerState::is_terminated)
            .await
            .map_err(|_| RuntimeError::NotFound(id.to_string()))?;
        Ok(state.clone())
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<ContainerState, RuntimeError> {
        let c = self.container(id)?;
        if c.state.borrow().is_terminated() {
            return Ok(c.state.borrow().clone());
        }
        // Services drain in-flight requests when asked; commands cannot be signalled.
        c.drain_ms.store(
            (grace / 2).min(SERVICE_DEREGISTRATION).as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        c.stop.notify_waiters();
        c.stop.notify_one();
        let mut rx = c.state.subscribe();
        let drained = tokio::time::timeout(grace, rx.wait_for(ContainerState::is_terminated))
            .await
            .is_ok();
        if !drained {
            let task = c.task.lock().expect("task lock").take();
            if let Some(task) = task {
                task.abort();
                // Once it has been dropped, what it held (a service's ports) is free.
                let _ = task.await;
            }
            let started_at = match &*c.state.borrow() {
                ContainerState::Running { started_at } => *started_at,
                _ => now(),
            };
            c.state.send_if_modified(|s| {
                if s.is_terminated() {
                    return false;
                }
                *s = ContainerState::Terminated {
                    exit_code: 137,
                    reason: "Error".into(),
                    message: "killed after the grace period".into(),
                    started_at,
                    finished_at: now(),
                };
                true
            });
        }
        let state = c.state.borrow().clone();
        Ok(state)
    }

    fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let c = self.container(id)?;
        if !c.state.borrow().is_terminated() {
            return Err(RuntimeError::Start {
                id: id.to_string(),
                message: "container is still running; stop it first".into(),
            });
        }
        self.containers.lock().expect("containers lock").remove(id);
        Ok(())
    }
}
