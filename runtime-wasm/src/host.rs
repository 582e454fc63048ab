//! The per-store host state: WASI (CLI, filesystem, sockets), wasi:http, and limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::uri::Scheme;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};
use wk_api::runtime::ContainerConfig;

use crate::logs::ContainerLog;

/// Memory and table limits of one store; remembers whether it refused a growth, so a
/// trap that follows is reported as `OOMKilled`.
pub struct Limiter {
    pub memory_bytes: usize,
    pub oom: Arc<AtomicBool>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes || maximum.is_some_and(|m| desired > m) {
            self.oom.store(true, Ordering::Relaxed);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000 && maximum.is_none_or(|m| desired <= m))
    }
}

/// Resolves a cluster name (`hello`, `hello.default`, `hello.default.svc.cluster.local`)
/// for a pod of namespace `ns`, as the pod's DNS search path would; `None` for names
/// outside the cluster, which the host resolves.
pub type NameResolver = Arc<dyn Fn(&str, &str) -> Option<std::net::IpAddr> + Send + Sync>;

/// Outbound HTTP policy: without permission every scheme is refused. Plain-HTTP requests
/// to cluster names go to the address the node's DNS gives them (the Host header keeps
/// the name), so components reach Services by name with no configuration.
pub struct Hooks {
    pub allow_outbound: bool,
    pub resolver: Option<NameResolver>,
    pub namespace: String,
}

impl Hooks {
    /// The request's URI with a cluster host replaced by its address.
    fn resolve_cluster_name(&self, uri: &http::Uri) -> Option<http::Uri> {
        let resolver = self.resolver.as_ref()?;
        if uri.scheme() != Some(&Scheme::HTTP) {
            return None;
        }
        let authority = uri.authority()?;
        let host = authority.host();
        if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
            return None;
        }
        let ip = resolver(host, &self.namespace)?;
        let port = authority.port_u16().unwrap_or(80);
        let mut parts = uri.clone().into_parts();
        parts.authority = format!("{ip}:{port}").parse().ok();
        http::Uri::from_parts(parts).ok()
    }
}

impl WasiHttpHooks for Hooks {
    fn is_supported_scheme(&mut self, scheme: &Scheme) -> bool {
        self.allow_outbound && (*scheme == Scheme::HTTP || *scheme == Scheme::HTTPS)
    }

    fn send_request(
        &mut self,
        mut request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                )>,
            > + Send,
    > {
        _ = fut;
        if let Some(uri) = self.resolve_cluster_name(request.uri()) {
            *request.uri_mut() = uri;
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// Store data.
pub struct Host {
    pub table: ResourceTable,
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub hooks: Hooks,
    pub limiter: Limiter,
    /// The container's CPU quota, shared by all its stores.
    pub cpu: Arc<crate::cpu::CpuQuota>,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Default memory limit when a container sets none.
pub const DEFAULT_MEMORY: u64 = 128 << 20;

/// What every store of a container is built from.
pub struct HostTemplate {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub config: ContainerConfig,
    pub log: ContainerLog,
    pub memory_bytes: usize,
    pub cpu: Arc<crate::cpu::CpuQuota>,
    pub resolver: Option<NameResolver>,
}

impl HostTemplate {
    pub fn new(
        config: ContainerConfig,
        log: ContainerLog,
        cpu: Arc<crate::cpu::CpuQuota>,
        resolver: Option<NameResolver>,
    ) -> HostTemplate {
        let program = config
            .command
            .first()
            .cloned()
            .unwrap_or_else(|| config.name.clone());
        let mut argv = vec![program];
        argv.extend(config.command.iter().skip(1).cloned());
        argv.extend(config.args.iter().cloned());
        let mut env = config.env.clone();
        if let Some(wd) = &config.working_dir {
            env.push(("PWD".into(), wd.clone()));
        }
        let memory_bytes = config.limits.memory_bytes.unwrap_or(DEFAULT_MEMORY) as usize;
        HostTemplate {
            argv,
            env,
            config,
            log,
            memory_bytes,
            cpu,
            resolver,
        }
    }

    /// A fresh host for one store.
    pub fn host(&self, oom: Arc<AtomicBool>) -> Result<Host, String> {
        let mut b = WasiCtxBuilder::new();
        b.args(&self.argv).envs(&self.env);
        for m in &self.config.mounts {
            let perms = if m.read_only {
                FsPerms::ReadOnly
            } else {
                FsPerms::ReadWrite
            };
            b.preopened_dir(&m.host_path, &m.container_path, perms)
                .map_err(|e| {
                    format!(
                        "mounting {} at {}: {e}",
                        m.host_path.display(),
                        m.container_path
                    )
                })?;
        }
        b.stdout(crate::logs::stream(&self.log, "stdout"));
        b.stderr(crate::logs::stream(&self.log, "stderr"));
        // wasmtime-wasi turns TCP, UDP and name lookups off unless asked.
        let outbound = self.config.allow_outbound;
        if outbound {
            b.inherit_network();
        }
        b.allow_tcp(outbound)
            .allow_udp(outbound)
            .allow_ip_name_lookup(outbound);
        Ok(Host {
            table: ResourceTable::new(),
            wasi: b.build(),
            http: WasiHttpCtx::new(),
            hooks: Hooks {
                allow_outbound: self.config.allow_outbound,
                resolver: self.resolver.clone(),
                namespace: self.config.pod.namespace.clone(),
            },
            limiter: Limiter {
                memory_bytes: self.memory_bytes,
                oom,
            },
            cpu: self.cpu.clone(),
        })
    }
}
