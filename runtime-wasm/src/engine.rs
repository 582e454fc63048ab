//! The one `Engine` per agent, its epoch ticker, and the on-disk compile cache.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How instances get their memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Try the pooling allocator, fall back to on-demand if its reservation fails
    /// (small edge hosts).
    Auto,
    On,
    Off,
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub pooling: Pooling,
    /// Instances the pool holds at once (when pooling).
    pub pool_instances: u32,
    /// Largest linear memory a pooled instance may have.
    pub pool_max_memory: u64,
    /// Epoch tick: the granularity of CPU time slicing and request deadlines.
    pub epoch_tick: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            pooling: Pooling::Auto,
            pool_instances: 1000,
            pool_max_memory: 256 << 20,
            epoch_tick: Duration::from_millis(10),
        }
    }
}

fn base_config() -> Config {
    let mut c = Config::new();
    c.wasm_component_model(true);
    c.epoch_interruption(true);
    c.memory_init_cow(true);
    c
}

/// Builds the engine: pooling allocator when it can reserve its address space.
pub fn build(opts: &EngineOptions) -> Result<(Engine, bool), wasmtime::Error> {
    if opts.pooling != Pooling::Off {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(opts.pool_instances);
        pool.total_core_instances(opts.pool_instances * 2);
        pool.total_memories(opts.pool_instances * 2);
        pool.total_tables(opts.pool_instances * 2);
        pool.max_memory_size(opts.pool_max_memory as usize);
        let mut c = base_config();
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        match Engine::new(&c) {
            Ok(e) => return Ok((e, true)),
            Err(e) if opts.pooling == Pooling::Auto => {
                tracing::warn!(error = %e, "pooling allocator unavailable; using on-demand allocation");
            }
            Err(e) => return Err(e),
        }
    }
    Ok((Engine::new(&base_config())?, false))
}

/// Increments the engine's epoch every tick until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: Engine, tick: Duration) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("wk-wasm-epoch".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            })
            .ok();
        EpochTicker { stop, thread }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Compiled components on disk, keyed by content digest and engine configuration, so a
/// restart or a second replica never recompiles.
pub struct CompileCache {
    dir: PathBuf,
    engine: Engine,
    fingerprint: String,
    /// How many compilations happened (observable: a cache hit does not count).
    pub compilations: AtomicU64,
}

impl CompileCache {
    pub fn new(dir: PathBuf, engine: Engine) -> CompileCache {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let fingerprint = format!("{:016x}", h.finish());
        CompileCache {
            dir,
            engine,
            fingerprint,
            compilations: AtomicU64::new(0),
        }
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!(
            "{}-{}.cwasm",
            digest.trim_start_matches("sha256:"),
            self.fingerprint
        ))
    }

    /// Loads a compiled component, compiling (and caching) it on a miss. Returns whether
    /// it compiled.
    pub fn load(&self, digest: &str, bytes: &[u8]) -> Result<(Component, bool), wasmtime::Error> {
        let path = self.path(digest);
        if path.exists() {
            // SAFETY: the file was written by `precompile_component` of an engine with the
            // same compatibility hash (it is in the file name), into a directory only this
            // runtime writes; wasmtime still checks the header and version.
            #[allow(unsafe_code)]
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(c) => return Ok((c, false)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring unusable compile cache entry")
                }
            }
        }
        let compiled = self.engine.precompile_component(bytes)?;
        self.compilations.fetch_add(1, Ordering::Relaxed);
        // The cache is only a cache: a full or read-only disk costs the next start a
        // compile, not this one its component. Two loads of the same digest at once (by
        // tag and by digest) each write their own temporary file.
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let n = WRITES.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
        let stored = std::fs::create_dir_all(&self.dir)
            .and_then(|()| std::fs::write(&tmp, &compiled))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = stored {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(path = %path.display(), error = %e, "cannot write the compile cache");
        }
        // SAFETY: as above; these bytes come from `precompile_component` just now.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(&self.engine, &compiled)? };
        Ok((component, true))
    }
}
